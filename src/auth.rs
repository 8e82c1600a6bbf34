//! API keys, tenants, scopes and per-key rate limits.
//!
//! - **Keys** are made by `ocr-server keys create` and stored in the job store (SQLite or
//!   PostgreSQL, the same `--data-dir` / `--database-url` as `serve`), so every replica sees them.
//!   Only the key's SHA-256 is stored; the key is printed once. A key is 256 random bits, so a
//!   plain hash is enough (no password stretching), and lookups go by hash, so no comparison
//!   of secrets leaks timing.
//! - **Modes** (`serve --auth`): `required`, `off`, or `auto` (the default): required as soon as
//!   the store has ever had a key (checked every [`CACHE_TTL`] until then). Auth never opens by
//!   itself: revoking every key (the first step of rotating a leaked one) locks the server
//!   instead of opening it, and the log says so; only an explicit `--auth off` serves without
//!   keys once one was made. A request without a key while keys are not required is the
//!   anonymous caller, which is not a tenant and sees every job; a request that does present a
//!   key is always checked.
//! - **Startup** ([`check_exposure`], [`bootstrap_key`]): `serve` on a non-loopback address
//!   with `--auth auto` and no key in the store refuses to start; a bootstrap key from the
//!   environment or a secret file (`OCR_BOOTSTRAP_KEY`, `--bootstrap-key-file`) is stored
//!   (hashed, `admin` scope) before the listener opens, so a container can start locked.
//! - **Scopes** ([`need`]): `ocr` (`POST /v1/ocr`, `GET /v1/queue`; `/v1/ocr` with `followup=`
//!   or `Prefer: respond-async` creates a job and needs `jobs` too), `jobs` (create, read,
//!   cancel and retry jobs, resend webhooks), `review` (read jobs, the review queue
//!   `/v1/review/queue`, page images, and review jobs), `admin` (everything, every tenant's
//!   jobs, `/v1/admin/*`, `/metrics` unless `--metrics-open`). `/health/*`, `/openapi.json` and
//!   the review desk's page `/review` (it holds no data) are open.
//! - **Tenants**: a key belongs to a tenant (its name by default); a job belongs to the tenant
//!   that created it, and other tenants get 404 for it (see [`Caller::can_see`]).
//! - **Rate limits**: per key, two GCRA token buckets (`governor`), one for requests and one for
//!   pages, in this process; 429 `rate_limited` with `Retry-After`, `RateLimit-Policy` and
//!   `RateLimit`. With N replicas a key gets up to N times its rate (each replica keeps its own
//!   buckets); the queued-page quota, which is what bounds a tenant's share of the machines, is
//!   counted in the shared store and holds across replicas.
//! - Keys are cached by hash for [`CACHE_TTL`]: a revocation takes effect on every replica
//!   within that time.
//! - **Failed authentications are rate-limited per client address** ([`Auth::failure_gate`]):
//!   every unknown token costs a store query (random tokens always miss the cache), so a client
//!   that presents [`FAILURE_BURST`] bad keys is refused with 429 before any lookup until its
//!   bucket refills at [`FAILURES_PER_S`]; the store's queue writes never wait behind a flood.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::jobs::model::ApiKey;
use crate::jobs::store::{JobStore, KeyCounts};

/// How long a key lookup (and, in `auto` mode, the number of keys) is cached.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Bad keys one client address may present in a burst before it is refused without a lookup
/// (a client retrying a mistyped key a few times is not one).
pub const FAILURE_BURST: u32 = 20;
/// How fast that allowance refills: one store lookup per second per address at most, under a
/// flood.
pub const FAILURES_PER_S: f64 = 1.0;

/// Client addresses tracked for failed authentications at most (past it, the entries whose
/// block has ended are dropped; a flood from more addresses than this still costs at most one
/// lookup per request).
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// `serve --auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum AuthMode {
    /// Required as soon as the store has ever had a key (revoking them all locks, never opens).
    #[default]
    Auto,
    Required,
    Off,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Ocr,
    Jobs,
    Review,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ocr, Scope::Jobs, Scope::Review, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ocr => "ocr",
            Scope::Jobs => "jobs",
            Scope::Review => "review",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Scope> {
        Scope::ALL
            .into_iter()
            .find(|c| c.as_str() == s.trim())
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown scope {s:?}: use ocr, jobs, review or admin"
                ))
            })
    }
}

/// SHA-256 of a key, lowercase hex: what the store keeps.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key: `ocr_` and 256 bits (from the OS's generator, through UUID v4s) in hex.
pub fn new_key() -> String {
    let mut k = String::from("ocr_");
    for _ in 0..2 {
        let u = uuid::Uuid::new_v4();
        k.push_str(&u.simple().to_string());
    }
    k
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
}

/// The address failed authentications are counted under: an IPv4 address, or an IPv6
/// address's /64 (one host usually holds a whole /64 and could rotate through it).
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A name of a key or tenant: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        // "." and ".." would be path segments of their own in the document store.
        || name.bytes().all(|b| b == b'.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(Error::InvalidOption(format!(
            "{what} {name:?}: use 1 to 64 of A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(())
}

/// A token bucket and the policy it enforces.
pub struct Bucket {
    limiter: DefaultDirectRateLimiter,
    unit: &'static str,
    burst: u32,
    window_s: u64,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bucket({} {} per {} s)",
            self.burst, self.unit, self.window_s
        )
    }
}

impl Bucket {
    /// `rate` tokens per second, holding at most `burst` (default: one second's worth).
    fn new(unit: &'static str, rate: f64, burst: Option<u32>) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let burst = burst.unwrap_or(rate.ceil() as u32).max(1);
        let period = Duration::from_secs_f64((1.0 / rate).max(1e-6));
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
        Some(Self {
            limiter: RateLimiter::direct(quota),
            unit,
            burst,
            window_s: ((burst as f64 / rate).ceil() as u64).max(1),
        })
    }

    /// Takes `n` tokens (at most the bucket's size: a larger job takes a full bucket).
    fn take(&self, key: &str, n: u32) -> Result<()> {
        let n = NonZeroU32::new(n.clamp(1, self.burst)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("ocr_rate_limited_total", "unit" => self.unit).increment(1);
                Err(Error::RateLimited {
                    key: key.to_string(),
                    unit: self.unit,
                    limit: self.burst,
                    window_s: self.window_s,
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
            Err(_) => Ok(()),
        }
    }
}

/// Who is calling: a key of a tenant, or the anonymous caller of a server without keys.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name (the actor in audit events); None for the anonymous caller.
    pub key: Option<String>,
    /// The tenant whose jobs this caller sees; None sees every job (anonymous, admin).
    pub tenant: Option<String>,
    /// The tenant new jobs are created for ("" for none).
    pub owner: String,
    pub scopes: Vec<Scope>,
    pub max_queued_pages: Option<u64>,
    pages: Option<Arc<Bucket>>,
}

impl Caller {
    /// The caller of a server that requires no key: every scope, every job, no limits.
    pub fn anonymous() -> Self {
        Self {
            key: None,
            tenant: None,
            owner: String::new(),
            scopes: Scope::ALL.to_vec(),
            max_queued_pages: None,
            pages: None,
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Whether a job of `tenant` is visible to this caller (others get 404, as if it did not
    /// exist).
    pub fn can_see(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// Takes `pages` from the key's page bucket (429 `rate_limited` when empty).
    pub fn take_pages(&self, pages: usize) -> Result<()> {
        match (&self.pages, &self.key) {
            (Some(b), Some(k)) => b.take(k, pages.min(u32::MAX as usize) as u32),
            _ => Ok(()),
        }
    }
}

struct Limits {
    requests: Option<Arc<Bucket>>,
    pages: Option<Arc<Bucket>>,
    /// The settings they were made from (a changed key gets new buckets).
    of: (Option<f64>, Option<u32>, Option<f64>, Option<u32>),
}

/// The authenticator: mode, the store of keys, caches and buckets.
pub struct Auth {
    mode: AuthMode,
    store: Option<Arc<dyn JobStore>>,
    metrics_open: bool,
    keys: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
    /// The store's key counts and when they were read (`auto` mode).
    counts: Mutex<Option<(KeyCounts, Instant)>>,
    /// Set for good once the store has had a key (`auto` mode): keys are required from then on.
    locked: AtomicBool,
    limits: Mutex<HashMap<String, Limits>>,
    /// Failed authentications per client address, and until when each address is refused.
    failures: Mutex<HashMap<std::net::IpAddr, (Bucket, Option<Instant>)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("metrics_open", &self.metrics_open)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(mode: AuthMode, store: Option<Arc<dyn JobStore>>, metrics_open: bool) -> Self {
        Self {
            mode,
            store,
            metrics_open,
            keys: Mutex::new(HashMap::new()),
            counts: Mutex::new(None),
            locked: AtomicBool::new(false),
            limits: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses (429) a client address that presented too many bad keys, before its key is
    /// looked up. `None` (no address: an in-process caller) is never refused, and neither is a
    /// request whose key this process has seen valid (clients behind one proxy or NAT share an
    /// address: one of them sending bad keys must not lock the others out).
    pub fn failure_gate(
        &self,
        client: Option<std::net::IpAddr>,
        authorization: Option<&str>,
    ) -> Result<()> {
        let Some(ip) = client.map(client_key) else {
            return Ok(());
        };
        if let Some(key) = authorization.and_then(bearer)
            && self.known_valid(&hash_key(key))
        {
            return Ok(());
        }
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((bucket, Some(until))) = failures.get(&ip) {
            let now = Instant::now();
            if *until > now {
                metrics::counter!("ocr_auth_failures_refused_total").increment(1);
                return Err(Error::RateLimited {
                    key: ip.to_string(),
                    unit: bucket.unit,
                    limit: bucket.burst,
                    window_s: bucket.window_s,
                    retry_after_s: (*until - now).as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        Ok(())
    }

    /// Counts a bad key presented by `client`; once its allowance is spent, the address is
    /// refused by [`Auth::failure_gate`] until the bucket has room again.
    pub fn note_failure(&self, client: Option<std::net::IpAddr>) {
        let Some(ip) = client.map(client_key) else {
            return;
        };
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED_CLIENTS {
            let now = Instant::now();
            failures.retain(|_, (_, until)| until.is_some_and(|u| u > now));
        }
        let entry = failures.entry(ip).or_insert_with(|| {
            (
                Bucket::new(
                    "failed authentications",
                    FAILURES_PER_S,
                    Some(FAILURE_BURST),
                )
                .expect(
                    "the failure bucket's rate and burst are positive constants. This is a bug.",
                ),
                None,
            )
        });
        if let Err(Error::RateLimited { retry_after_s, .. }) = entry.0.take(&ip.to_string(), 1) {
            entry.1 = Some(Instant::now() + Duration::from_secs(retry_after_s));
        }
    }

    /// No keys, no checks (a server without a store, and tests of other things).
    pub fn off() -> Self {
        Self::new(AuthMode::Off, None, true)
    }

    pub fn metrics_open(&self) -> bool {
        self.metrics_open
    }

    /// Whether a request without a key is refused now. In `auto` mode that is once the store
    /// has ever had a key, for good: the answer never goes from true back to false.
    async fn required(&self) -> Result<bool> {
        match (self.mode, &self.store) {
            (AuthMode::Off, _) | (AuthMode::Auto, None) => Ok(false),
            (AuthMode::Required, _) => Ok(true),
            (AuthMode::Auto, Some(_)) if self.locked.load(Ordering::Acquire) => Ok(true),
            (AuthMode::Auto, Some(store)) => {
                if let Some((c, at)) = *self.counts.lock().unwrap_or_else(|p| p.into_inner())
                    && at.elapsed() < CACHE_TTL
                {
                    return Ok(c.total > 0);
                }
                let c = store.key_counts().await?;
                *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = Some((c, Instant::now()));
                if c.total > 0 && !self.locked.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        keys = c.total,
                        "API keys exist: every request needs a key from now on"
                    );
                }
                Ok(c.total > 0)
            }
        }
    }

    /// Whether the key with this hash was valid when last looked up (however long ago: the
    /// lookup that follows checks it again).
    fn known_valid(&self, hash: &str) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .is_some_and(|(k, _)| {
                k.as_ref()
                    .is_some_and(|k| k.is_valid_at(crate::jobs::now_ms()))
            })
    }

    /// Says in the log when no key can open the server any more (every key revoked): the
    /// server stays locked, it never falls back to anonymous access. Called after a refusal,
    /// at most once per [`CACHE_TTL`].
    async fn note_locked(&self) {
        let Some(store) = &self.store else { return };
        let stale = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|(_, at)| at.elapsed() >= CACHE_TTL);
        if !stale {
            return;
        }
        // Marked fresh before the query, so a burst of refusals makes one query, not one each.
        let was = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let was = *counts;
            *counts = Some((
                was.map_or_else(KeyCounts::default, |(c, _)| c),
                Instant::now(),
            ));
            was
        };
        if let Ok(c) = store.key_counts().await {
            *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = Some((c, Instant::now()));
            let was_active = was.map_or(u64::MAX, |(w, _)| w.active);
            if c.active == 0 && was_active != 0 {
                tracing::error!(
                    keys = c.total,
                    "every API key is revoked: the server is locked (every request gets 401) \
                     until a key is created with `ocr-server keys create`"
                );
            }
        }
    }

    async fn lookup(&self, hash: &str) -> Result<Option<ApiKey>> {
        if let Some((k, at)) = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(k.clone());
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let key = store.key_by_hash(hash).await?;
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        cache.insert(hash.to_string(), (key.clone(), Instant::now()));
        Ok(key)
    }

    fn limits_of(&self, key: &ApiKey) -> (Option<Arc<Bucket>>, Option<Arc<Bucket>>) {
        let of = (key.rate_per_s, key.burst, key.pages_per_s, key.page_burst);
        let mut all = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let l = all.entry(key.name.clone()).or_insert_with(|| Limits {
            requests: None,
            pages: None,
            of: (None, None, None, None),
        });
        if l.of != of || (l.requests.is_none() && l.pages.is_none()) {
            l.requests = key
                .rate_per_s
                .and_then(|r| Bucket::new("requests", r, key.burst))
                .map(Arc::new);
            l.pages = key
                .pages_per_s
                .and_then(|r| Bucket::new("pages", r, key.page_burst))
                .map(Arc::new);
            l.of = of;
        }
        (l.requests.clone(), l.pages.clone())
    }

    /// The caller of a request from its `Authorization` header: 401 when a key is required and
    /// missing, or presented and unknown or revoked. Takes a token from the key's request
    /// bucket (429 when empty).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller> {
        let presented = authorization.map(bearer);
        let key = match presented {
            None if !self.required().await? => return Ok(Caller::anonymous()),
            None => {
                self.note_locked().await;
                return Err(Error::Unauthorized(
                    "this server requires an API key: send `Authorization: Bearer KEY`".into(),
                ));
            }
            Some(None) => {
                return Err(Error::Unauthorized(
                    "the Authorization header must be `Bearer KEY`".into(),
                ));
            }
            Some(Some(k)) => k,
        };
        if self.mode == AuthMode::Off {
            return Ok(Caller::anonymous());
        }
        let record = self.lookup(&hash_key(key)).await?;
        // Expiry is judged on the store's clock (see `jobs::clock`), like every other time.
        let Some(record) = record.filter(|k| k.is_valid_at(crate::jobs::now_ms())) else {
            metrics::counter!("ocr_auth_failures_total").increment(1);
            return Err(Error::Unauthorized(
                "unknown, revoked or expired API key".into(),
            ));
        };
        let scopes: Vec<Scope> = record
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s).ok())
            .collect();
        let (requests, pages) = self.limits_of(&record);
        if let Some(b) = requests {
            b.take(&record.name, 1)?;
        }
        let admin = scopes.contains(&Scope::Admin);
        Ok(Caller {
            key: Some(record.name.clone()),
            tenant: (!admin).then(|| record.tenant.clone()),
            owner: record.tenant.clone(),
            scopes,
            max_queued_pages: record.max_queued_pages,
            pages,
        })
    }
}

/// Whether `host` (a `serve --host` value) only listens on loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses to serve an address other machines reach with no key to require: `--auth auto` on
/// a non-loopback host while the store has never had a key (anyone who reaches the port could
/// do everything). `--auth off` says that is meant; `--auth required` with no key is locked,
/// which is safe.
pub fn check_exposure(mode: AuthMode, host: &str, counts: KeyCounts) -> Result<()> {
    if mode == AuthMode::Auto && counts.total == 0 && !is_loopback_host(host) {
        return Err(Error::InvalidOption(format!(
            "refusing to serve on {host} with no API key: anyone who reaches the port could read \
             and change every job. Create a key first (`ocr-server keys create --name NAME \
             --scopes admin`), give a bootstrap key (OCR_BOOTSTRAP_KEY or --bootstrap-key-file), \
             bind to 127.0.0.1, or pass --auth off if the network itself is trusted"
        )));
    }
    Ok(())
}

/// Shortest bootstrap key accepted (a key is a bearer secret: 32 characters of a random
/// string are at least 128 bits for hex, more for base64).
pub const MIN_BOOTSTRAP_KEY_CHARS: usize = 32;

/// Stores the operator's bootstrap key (`admin` scope, tenant `bootstrap`) unless a key with
/// its hash exists already, revoked or not (a revoked bootstrap key stays revoked across
/// restarts). Returns the name of the key it created, if any.
pub async fn bootstrap_key(store: &dyn JobStore, key: &str, now_ms: i64) -> Result<Option<String>> {
    let key = key.trim();
    if key.chars().count() < MIN_BOOTSTRAP_KEY_CHARS || key.chars().any(char::is_whitespace) {
        return Err(Error::InvalidOption(format!(
            "a bootstrap key needs at least {MIN_BOOTSTRAP_KEY_CHARS} characters and no spaces \
             (make one with `openssl rand -hex 32`)"
        )));
    }
    let hash = hash_key(key);
    if store.key_by_hash(&hash).await?.is_some() {
        return Ok(None);
    }
    let taken: Vec<String> = store.keys().await?.into_iter().map(|k| k.name).collect();
    let name = if taken.iter().any(|n| n == "bootstrap") {
        format!("bootstrap-{}", &hash[..8])
    } else {
        "bootstrap".to_string()
    };
    let record = ApiKey::new(
        &name,
        "bootstrap",
        hash.clone(),
        &[Scope::Admin.as_str()],
        now_ms,
    );
    match store.create_key(&record).await {
        Ok(()) => Ok(Some(name)),
        // Another replica starting at the same time stored it first.
        Err(_) if store.key_by_hash(&hash).await?.is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The scope a route needs; None: any authenticated caller; `Open`: no key at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Open,
    Any,
    One(Scope),
    Either(Scope, Scope),
}

/// The route table's scopes (`path` is the matched route pattern).
pub fn need(method: &axum::http::Method, path: &str, metrics_open: bool) -> Need {
    use axum::http::Method;
    match (path, method) {
        // The review desk's page holds no data: what it shows comes from the API with the
        // reviewer's key.
        ("/health/live" | "/health/ready" | "/openapi.json" | "/review", _) => Need::Open,
        ("/v1/review/queue", _) => Need::One(Scope::Review),
        ("/metrics", _) if metrics_open => Need::Open,
        ("/metrics", _) => Need::One(Scope::Admin),
        ("/v1/ocr" | "/v1/queue", _) => Need::One(Scope::Ocr),
        (p, _) if p.starts_with("/v1/admin/") => Need::One(Scope::Admin),
        ("/v1/jobs/{id}/review", _) => Need::One(Scope::Review),
        (p, &Method::GET) if p.starts_with("/v1/jobs") => Need::Either(Scope::Jobs, Scope::Review),
        (p, _) if p.starts_with("/v1/jobs") => Need::One(Scope::Jobs),
        _ => Need::Any,
    }
}

/// Whether `caller` may use a route that needs `need` (403 naming the scope otherwise).
pub fn allow(caller: &Caller, need: Need) -> Result<()> {
    let ok = match need {
        Need::Open | Need::Any => true,
        Need::One(s) => caller.has(s),
        Need::Either(a, b) => caller.has(a) || caller.has(b),
    };
    if ok {
        return Ok(());
    }
    let scope = match need {
        Need::One(s) | Need::Either(s, _) => s.as_str(),
        _ => "admin",
    };
    Err(Error::Forbidden { scope })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_and_names() {
        let k = new_key();
        assert!(k.starts_with("ocr_") && k.len() == 68, "{k}");
        assert_ne!(new_key(), k);
        assert_eq!(hash_key("abc").len(), 64);
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(check_name("key", "ingest-1.prod_A").is_ok());
        for bad in ["", "a b", "x/y", ".", "..", &"a".repeat(65)] {
            assert_eq!(check_name("key", bad).unwrap_err().code(), "invalid_option");
        }
    }

    #[test]
    fn scopes_of_routes() {
        use axum::http::Method;
        let mut c = Caller::anonymous();
        c.scopes = vec![Scope::Jobs];
        assert!(allow(&c, need(&Method::POST, "/v1/jobs", false)).is_ok());
        assert!(allow(&c, need(&Method::GET, "/v1/jobs/{id}", false)).is_ok());
        let e = allow(&c, need(&Method::POST, "/v1/ocr", false)).unwrap_err();
        assert_eq!((e.code(), e.meta().status), ("forbidden", 403));
        assert!(allow(&c, need(&Method::POST, "/v1/jobs/{id}/review", false)).is_err());
        assert!(allow(&c, need(&Method::GET, "/metrics", false)).is_err());
        assert_eq!(need(&Method::GET, "/metrics", true), Need::Open);
        assert_eq!(need(&Method::GET, "/health/ready", false), Need::Open);
        c.scopes = vec![Scope::Review];
        assert!(allow(&c, need(&Method::GET, "/v1/jobs", false)).is_ok());
        assert!(allow(&c, need(&Method::DELETE, "/v1/jobs/{id}", false)).is_err());
        c.scopes = vec![Scope::Admin];
        assert!(allow(&c, need(&Method::POST, "/v1/admin/pause", false)).is_ok());
        assert!(allow(&c, need(&Method::POST, "/v1/ocr", false)).is_ok());
    }

    #[test]
    fn exposure_needs_a_key_off_loopback() {
        let none = KeyCounts::default();
        let one = KeyCounts {
            total: 1,
            active: 0,
        };
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(check_exposure(AuthMode::Auto, host, none).is_ok(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.1.2.3", "example.org"] {
            let e = check_exposure(AuthMode::Auto, host, none).unwrap_err();
            assert!(e.to_string().contains("--auth off"), "{e}");
            assert!(check_exposure(AuthMode::Auto, host, one).is_ok());
            assert!(check_exposure(AuthMode::Off, host, none).is_ok());
            assert!(check_exposure(AuthMode::Required, host, none).is_ok());
        }
    }

    #[test]
    fn a_client_presenting_bad_keys_is_refused_before_any_lookup() {
        let auth = Auth::off();
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..FAILURE_BURST {
            assert!(auth.failure_gate(Some(ip), None).is_ok());
            auth.note_failure(Some(ip));
        }
        assert!(
            auth.failure_gate(Some(ip), None).is_ok(),
            "the burst is allowed"
        );
        auth.note_failure(Some(ip));
        let e = auth
            .failure_gate(Some(ip), Some("Bearer ocr_nope"))
            .unwrap_err();
        assert_eq!((e.code(), e.meta().status), ("rate_limited", 429));
        assert!(auth.failure_gate(Some(other), None).is_ok(), "per address");
        assert!(auth.failure_gate(None, None).is_ok());
        // A key seen valid passes from the same address (clients behind one NAT).
        let good = "ocr_good";
        auth.keys.lock().unwrap().insert(
            hash_key(good),
            (
                Some(ApiKey::new("g", "g", hash_key(good), &["ocr"], 0)),
                Instant::now(),
            ),
        );
        assert!(auth.failure_gate(Some(ip), Some("Bearer ocr_good")).is_ok());
        // IPv6 is counted by /64.
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..=FAILURE_BURST {
            auth.note_failure(Some(a));
        }
        assert!(auth.failure_gate(Some(b), None).is_err(), "same /64");
    }

    #[test]
    fn buckets_refuse_when_empty_and_say_when() {
        let b = Bucket::new("requests", 1.0, Some(2)).unwrap();
        assert!(b.take("k", 1).is_ok());
        assert!(b.take("k", 1).is_ok());
        let e = b.take("k", 1).unwrap_err();
        match e {
            Error::RateLimited {
                limit,
                window_s,
                retry_after_s,
                ..
            } => assert_eq!((limit, window_s, retry_after_s), (2, 2, 1)),
            e => panic!("{e:?}"),
        }
        // A request for more than the bucket holds takes the whole bucket.
        let p = Bucket::new("pages", 10.0, Some(5)).unwrap();
        assert!(p.take("k", 50).is_ok());
        assert!(p.take("k", 1).is_err());
    }
}

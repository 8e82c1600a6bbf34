//! Webhooks per Standard Webhooks v1: a thin JSON event, headers `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, one signature per secret (rotation: receivers accept any).
//! Secrets are `whsec_<base64>` (the Standard Webhooks form) or raw text.
//!
//! **Each tenant signs with its own secret** ([`signing_secrets`]): a tenant with API keys has
//! a secret of its own (`ocr-server keys create` generates it with the tenant's first key and
//! shows it once; `keys webhook-secret` rotates it, the replaced one signing beside it), so no
//! tenant holds a secret that verifies another tenant's events. The server's
//! `--webhook-secret`s sign only the events of the anonymous tenant (a server without keys). A
//! keyed tenant without a secret cannot name a `webhook_url`, and a delivery for one (a job
//! made before secrets were per tenant) waits, retried, until the tenant has one.
//!
//! Deliveries are rows in the job store, so they survive restarts, show on the job, and are
//! re-sendable; the deliverer retries with exponential backoff and full jitter up to
//! `max_attempts`, then marks the delivery `failed` (kept). Targets are checked when a job is
//! created and again at send time on the resolved addresses, and the connection goes to the
//! checked addresses: loopback, private, link-local, unique-local, unspecified and broadcast
//! addresses are refused unless the host is on the allow-list.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::model::{Delivery, DeliveryAttempt};
use super::now_ms;
use super::store::JobStore;
use crate::error::{Error, Result};

/// `Debug` shows how many secrets there are, never their bytes.
#[derive(Clone, PartialEq, Default)]
pub struct WebhookConfig {
    /// Signing secrets (bytes); the first is current, the others still accepted by receivers.
    pub secrets: Vec<Vec<u8>>,
    /// Hosts (names or IP literals) allowed even when they resolve to private addresses.
    pub allow: Vec<String>,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub timeout: Duration,
    /// Deliveries in flight at once (per replica).
    pub concurrency: usize,
}

impl WebhookConfig {
    pub fn new(secrets: Vec<Vec<u8>>, allow: Vec<String>) -> Self {
        Self {
            secrets,
            allow,
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("allow", &self.allow)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// A secret as configured: `whsec_<base64>` or raw text.
pub fn parse_secret(s: &str) -> Result<Vec<u8>> {
    match s.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                Error::InvalidOption(format!("webhook secret is not whsec_<base64>: {e}"))
            }),
        None if s.is_empty() => Err(Error::InvalidOption("empty webhook secret".into())),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// The secrets that sign `tenant`'s events: its own, or `server`'s for the anonymous tenant
/// (see the module docs). None is an error naming what to do.
pub async fn signing_secrets(
    store: &dyn JobStore,
    server: &[Vec<u8>],
    tenant: &str,
) -> Result<Vec<Vec<u8>>> {
    if tenant.is_empty() {
        if server.is_empty() {
            return Err(Error::InvalidOption(
                "webhook_url given but the server has no --webhook-secret".into(),
            ));
        }
        return Ok(server.to_vec());
    }
    let own = store.tenant_webhook_secrets(tenant).await?;
    if own.is_empty() {
        return Err(Error::InvalidOption(format!(
            "tenant {tenant:?} has no webhook secret: `ocr-server keys webhook-secret --tenant \
             {tenant}` makes one"
        )));
    }
    own.iter().map(|s| parse_secret(s)).collect()
}

/// A new secret in the Standard Webhooks form: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `webhook-signature` header value: `v1,<sig>` per secret, space-separated.
pub fn sign(secrets: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key)
                .expect("HMAC takes keys of any length. This is a bug.");
            mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            format!("v1,{sig}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `ip` is anything but a globally routable unicast address: webhooks are never sent
/// there unless the host is allowed (`--webhook-allow`). IPv4: this network (0/8), private,
/// carrier-grade NAT, loopback, link-local, IETF protocol assignments (192.0.0/24),
/// documentation, benchmarking (198.18/15), multicast (224/4) and reserved (240/4, broadcast).
/// IPv6: unspecified, loopback, multicast, unique and link-local, site-local, documentation,
/// discard, Teredo, and every form that carries an IPv4 address (mapped, IPv4-compatible, NAT64
/// `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`), judged by the address it carries.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            a == 0
                || v4.is_private()
                || (a == 100 && (b & 0xc0) == 64)
                || a == 127
                || v4.is_link_local()
                || (a == 192 && b == 0 && c == 0)
                || v4.is_documentation()
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 224
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            // ::/96, IPv4-compatible (deprecated); :: and ::1 fall in it too.
            if seg[..6].iter().all(|&s| s == 0) {
                return true;
            }
            // NAT64, well-known prefix: the IPv4 address it reaches.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private(IpAddr::V4(embedded(seg[6], seg[7])));
            }
            // 6to4: the IPv4 address of its relay.
            if seg[0] == 0x2002 {
                return is_private(IpAddr::V4(embedded(seg[1], seg[2])));
            }
            v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo
        }
    }
}

/// Looks up a host's addresses (the seam that tests replace to play DNS rebinding).
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver.
pub fn system_resolver() -> Resolver {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    })
}

/// A checked webhook target: its host and the addresses the connection must go to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// Checks a webhook target: http(s), and every address it resolves to is public unless its host
/// is allowed. The answer names the checked addresses, so the request can be sent to exactly
/// those (no second lookup that a rebinding DNS server could answer differently).
pub async fn check_target(url: &str, allow: &[String], resolve: &Resolver) -> Result<Target> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::InvalidOption(format!("webhook_url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidOption(
            "webhook_url must be http or https".into(),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::InvalidOption("webhook_url has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        // A lookup failure may be temporary: the deliverer retries it, job creation refuses it.
        Err(_) => resolve(host.clone(), port).await.map_err(|e| Error::Io {
            path: format!("webhook_url host {host}"),
            source: e,
        })?,
    };
    if addrs.is_empty() {
        return Err(Error::InvalidOption(format!(
            "webhook_url host {host} has no address"
        )));
    }
    let allowed = allow.iter().any(|a| a.eq_ignore_ascii_case(&host));
    if !allowed && let Some(ip) = addrs.iter().find(|ip| is_private(**ip)) {
        return Err(Error::InvalidOption(format!(
            "webhook_url {host} resolves to {ip}, a loopback, private or link-local address; \
             add the host to --webhook-allow to permit it"
        )));
    }
    Ok(Target {
        host,
        addrs: addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
    })
}

/// Sends the outbox: claims due deliveries with a lease (so two replicas never send the same
/// attempt), sends up to `concurrency` at once (a slow receiver holds one slot, not the
/// queue), checks each target again at send time and connects to the checked addresses only.
pub struct Deliverer {
    store: Arc<dyn JobStore>,
    cfg: WebhookConfig,
    owner: String,
    wake: Notify,
    permits: Arc<Semaphore>,
    resolve: Resolver,
}

impl Deliverer {
    pub fn new(store: Arc<dyn JobStore>, cfg: WebhookConfig, owner: String) -> Arc<Self> {
        Self::with_resolver(store, cfg, owner, system_resolver())
    }

    pub fn with_resolver(
        store: Arc<dyn JobStore>,
        cfg: WebhookConfig,
        owner: String,
        resolve: Resolver,
    ) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            store,
            cfg,
            owner,
            wake: Notify::new(),
            resolve,
        })
    }

    /// A delivery may be due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims and sends due deliveries forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            let free = self.permits.available_permits();
            if free > 0 {
                let now = now_ms();
                let lease = now + (self.cfg.timeout + Duration::from_secs(30)).as_millis() as i64;
                match self
                    .store
                    .claim_deliveries(&self.owner, free, now, lease)
                    .await
                {
                    Ok(due) => {
                        for d in due {
                            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                                return;
                            };
                            let me = self.clone();
                            tokio::spawn(async move {
                                me.deliver(d).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "store: claim deliveries"),
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// One attempt of one delivery, recorded under the claim.
    pub async fn deliver(&self, d: Delivery) {
        let sent = match check_target(&d.url, &self.cfg.allow, &self.resolve).await {
            Ok(target) => self.post(&d, &target).await,
            // DNS failed: maybe for a moment; retried like a failed request.
            Err(e @ Error::Io { .. }) => Err((None, e.to_string(), true)),
            Err(e) => Err((None, format!("refused at send time: {e}"), false)),
        };
        let attempts = d.attempts + 1;
        let attempt = match sent {
            Ok(status) => DeliveryAttempt {
                delivered: true,
                status: Some(status),
                error: None,
                retry_at_ms: None,
            },
            Err((status, error, retryable)) => {
                tracing::warn!(job = %d.job_id, attempts, ?status, %error, "webhook delivery failed");
                DeliveryAttempt {
                    delivered: false,
                    status,
                    error: Some(error),
                    retry_at_ms: (retryable && attempts < self.cfg.max_attempts)
                        .then(|| now_ms() + self.backoff(attempts)),
                }
            }
        };
        metrics::counter!("ocr_webhook_attempts_total",
            "outcome" => if attempt.delivered { "delivered" } else if attempt.retry_at_ms.is_some() { "retry" } else { "failed" })
        .increment(1);
        match self
            .store
            .record_delivery(&d.id, &self.owner, &attempt, now_ms())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(id = %d.id, "delivery claim lost before its attempt was recorded")
            }
            Err(e) => tracing::error!(error = %e, "store: record_delivery"),
        }
    }

    /// Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^(k−1))].
    fn backoff(&self, attempts: u32) -> i64 {
        let cap = self
            .cfg
            .backoff_base
            .saturating_mul(1 << (attempts.saturating_sub(1)).min(20))
            .min(self.cfg.backoff_cap);
        let r = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        (cap.as_millis() as f64 * r) as i64
    }

    /// POSTs the stored body with Standard Webhooks headers to the checked addresses. 2xx is
    /// success; else `(status, error, retryable)`.
    async fn post(
        &self,
        d: &Delivery,
        target: &Target,
    ) -> std::result::Result<u16, (Option<u16>, String, bool)> {
        let client = reqwest::Client::builder()
            .timeout(self.cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // The addresses were checked; a proxy from HTTP(S)_PROXY would connect wherever
            // the name resolves for it, so none is used.
            .no_proxy()
            .resolve_to_addrs(&target.host, &target.addrs)
            .build()
            .map_err(|e| (None, format!("HTTP client: {e}"), true))?;
        let tenant = self
            .store
            .job_tenant(&d.job_id)
            .await
            .map_err(|e| (None, e.to_string(), true))?
            .unwrap_or_default();
        let secrets = signing_secrets(self.store.as_ref(), &self.cfg.secrets, &tenant)
            .await
            .map_err(|e| (None, e.to_string(), true))?;
        let ts = now_ms() / 1000;
        let sig = sign(&secrets, &d.id, ts, &d.payload);
        let sent = client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(d.payload.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err((
                Some(r.status().as_u16()),
                format!("HTTP {}", r.status()),
                true,
            )),
            Err(e) => Err((None, e.to_string(), true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cases = [
            ("http://127.0.0.1:9/x", false),
            ("http://10.1.2.3/x", false),
            ("http://192.168.0.1/x", false),
            ("http://169.254.169.254/latest", false),
            ("http://[::1]:80/", false),
            ("http://[fd00::1]/", false),
            ("http://100.64.0.1/", false),
            ("ftp://8.8.8.8/", false),
            // The ranges issue 26 found missing.
            ("http://0.1.2.3/", false),
            ("http://198.18.0.1/", false),
            ("http://198.19.255.254/", false),
            ("http://240.0.0.1/", false),
            ("http://255.255.255.255/", false),
            ("http://224.0.0.1/", false),
            ("http://239.1.2.3/", false),
            ("http://192.0.0.8/", false),
            ("http://[ff02::1]/", false),
            ("http://[::ffff:10.0.0.1]/", false),
            ("http://[::127.0.0.1]/", false),
            ("http://[64:ff9b::7f00:1]/", false),
            ("http://[64:ff9b:1::1]/", false),
            ("http://[2002:7f00:1::1]/", false),
            ("http://[2002:a00:1::]/", false),
            ("http://[2001:db8::1]/", false),
            ("http://[2001:0:4136:e378::1]/", false),
            ("http://[fec0::1]/", false),
            ("http://[64:ff9b::808:808]/", true),
            ("http://[2002:808:808::1]/", true),
            ("http://198.20.0.1/hook", true),
            ("http://8.8.8.8/hook", true),
            ("https://[2001:4860:4860::8888]/hook", true),
        ];
        let dns = system_resolver();
        for (url, ok) in cases {
            assert_eq!(
                rt.block_on(check_target(url, &[], &dns)).is_ok(),
                ok,
                "{url}"
            );
        }
        assert!(
            rt.block_on(check_target(
                "http://127.0.0.1:9/x",
                &["127.0.0.1".into()],
                &dns
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_name_that_resolves_to_loopback_is_refused_and_a_public_one_is_pinned() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A rebinding resolver: the same name answers a public address, then loopback.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let rebinding: Resolver = Arc::new(move |_host, _port| {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                Ok(vec![if n == 0 {
                    "93.184.215.14".parse().unwrap()
                } else {
                    "127.0.0.1".parse().unwrap()
                }])
            })
        });
        let first = rt
            .block_on(check_target("https://hooks.example/x", &[], &rebinding))
            .unwrap();
        assert_eq!(first.host, "hooks.example");
        assert_eq!(first.addrs, vec!["93.184.215.14:443".parse().unwrap()]);
        let err = rt
            .block_on(check_target("https://hooks.example/x", &[], &rebinding))
            .unwrap_err();
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }
}

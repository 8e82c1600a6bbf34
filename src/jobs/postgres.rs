//! The PostgreSQL job store (`--database-url postgres://…`): one database shared by many
//! replicas. The same contract as SQLite ([`super::store`]), with PostgreSQL's tools for it:
//! - claims select runnable pages `FOR UPDATE SKIP LOCKED` inside the `UPDATE` that leases
//!   them, so concurrent claimers never wait on or take each other's pages;
//! - every page change locks its job's row before counting the job's pages, so two replicas
//!   finishing the last two pages of a job at once cannot both miss the final state (locks are
//!   always taken page rows first, then the job row);
//! - new work is announced with `NOTIFY ocr_jobs` in the creating transaction (delivered at
//!   commit); idle replicas `LISTEN` and fall back to polling if the listener drops;
//! - migrations run under a transaction-scoped advisory lock, so replicas starting together
//!   migrate once;
//! - **the queue's writes never wait behind reads**: claim, renew, complete, fail and release
//!   run on a pool of their own ([`QUEUE_CONNECTIONS`]), everything else (the API's reads, job
//!   creation, webhooks, keys) on the other ([`API_CONNECTIONS`]), so a flood of listings or
//!   key lookups cannot make a lease renewal wait for a connection. Every connection has a
//!   `statement_timeout` and a `lock_timeout`; only the statement timeout differs between the
//!   pools (shorter on the queue's): a stuck statement fails and is retried instead of holding a
//!   lease's renewal past its expiry. Migrations lift both for their own transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;

use super::events::{JobEvent, StateDetail, page_failure};
use super::model::{
    ApiKey, Backlog, Claim, ClaimedPage, Created, Delivery, DeliveryAttempt, DeliveryState,
    DocumentRecord, Event, JobClass, JobOptions, JobRecord, JobState, JobSummary, NewJob,
    PageCounts, PageLease, PageRecord, PageRef, PageState, Review, derive_state, min_confidence,
    webhook_event,
};
use super::store::{JobStore, KeyCounts};
use crate::error::{Error, Result};
use crate::pipeline::Page;

fn db_err(e: sqlx::Error) -> Error {
    Error::Store(e.to_string())
}

/// Connections reserved for the queue's writes (claim, renew, complete, fail, release): the
/// runner has a claim loop, a heartbeat and a few pages finishing at once.
pub const QUEUE_CONNECTIONS: u32 = 4;
/// Connections for everything else.
pub const API_CONNECTIONS: u32 = 12;
/// A queue write that takes longer than this fails (and is retried) rather than letting a
/// lease expire behind it: the heartbeat renews well inside the lease (at a third of it).
const QUEUE_STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// Any other statement (a large listing, a sweep) gets longer, but not for ever.
const API_STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Waiting for a row lock: a claim skips locked rows; others wait at most this.
const LOCK_TIMEOUT_MS: u64 = 2_000;

/// The channel idle replicas listen on.
const CHANNEL: &str = "ocr_jobs";
/// Any fixed number: the advisory lock that serialises migrations between replicas.
const MIGRATION_LOCK: i64 = 0x6f63_7273_7276;

const MIGRATIONS: [&str; 8] = [
    "
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    options TEXT NOT NULL,
    tag TEXT,
    webhook_url TEXT,
    priority BIGINT NOT NULL,
    review_threshold DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    class BIGINT NOT NULL
);
CREATE INDEX jobs_state ON jobs(state, created_at);
CREATE INDEX jobs_created ON jobs(created_at DESC, id DESC);
CREATE TABLE documents (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    owned BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE pages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    doc BIGINT NOT NULL,
    page BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    min_confidence DOUBLE PRECISION,
    updated_at BIGINT NOT NULL,
    src_index BIGINT NOT NULL,
    class BIGINT NOT NULL,
    priority BIGINT NOT NULL,
    tag TEXT,
    queued_at BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_token TEXT,
    lease_until BIGINT,
    PRIMARY KEY (job_id, doc, page)
);
CREATE INDEX pages_claim ON pages(class, priority DESC, queued_at, job_id, doc, page)
    WHERE state = 'queued';
CREATE INDEX pages_lease ON pages(lease_until) WHERE state = 'processing';
CREATE INDEX pages_token ON pages(lease_token) WHERE lease_token IS NOT NULL;
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    payload_hash TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_job ON events(job_id, seq);
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_status BIGINT,
    last_error TEXT,
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX deliveries_due ON deliveries(next_at) WHERE state = 'pending';
CREATE INDEX deliveries_job ON deliveries(job_id, created_at);
CREATE TABLE pauses (scope TEXT PRIMARY KEY, at BIGINT NOT NULL);
",
    // 2: tenants, the round-robin turns between them, and API keys (hashed).
    "
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE pages ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX pages_tenant_claim ON pages(class, tenant, priority DESC, queued_at, job_id, doc, page)
    WHERE state = 'queued';
CREATE INDEX pages_tenant_backlog ON pages(tenant) WHERE state IN ('queued', 'processing');
CREATE INDEX jobs_tenant ON jobs(tenant, created_at DESC, id DESC);
CREATE TABLE tenant_turns (tenant TEXT PRIMARY KEY, served BIGINT NOT NULL);
INSERT INTO tenant_turns (tenant, served) VALUES ('', 0);
CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    rate_per_s DOUBLE PRECISION,
    burst BIGINT,
    pages_per_s DOUBLE PRECISION,
    page_burst BIGINT,
    max_queued_pages BIGINT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
",
    // 3: why a completed page needs review whatever its confidence (a field's failed check).
    "
ALTER TABLE pages ADD COLUMN review_reason TEXT;
",
    // 4: the profile a page's job is pinned to (`NAME/MODEL`; NULL before: any replica).
    "
ALTER TABLE pages ADD COLUMN profile TEXT;
",
    // 5: whether a claimed page has started running (a lost worker charges only those), and
    // whether a worker was lost while running it (it then runs alone).
    "
ALTER TABLE pages ADD COLUMN started BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE pages ADD COLUMN suspect BOOLEAN NOT NULL DEFAULT FALSE;
",
    // 6: each tenant's webhook signing secret (and the one it replaced, during rotation).
    "
CREATE TABLE tenant_webhook_secrets (
    tenant TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    previous TEXT,
    updated_at BIGINT NOT NULL
);
",
    // 7: a stored document's size (a tenant's storage quota counts it).
    "
ALTER TABLE documents ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
",
    // 8: a key's expiry.
    "
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
",
];

/// The PostgreSQL store: a connection pool and a listener that wakes idle claimers.
pub struct PgStore {
    /// The API's reads and every write that is not the queue's.
    pool: PgPool,
    /// The queue's writes only.
    queue: PgPool,
    work: Arc<Notify>,
}

type Tx<'a> = Transaction<'a, Postgres>;

impl PgStore {
    /// Connects, migrates, and starts listening for new work.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = |statement_ms: u64| -> Result<PgConnectOptions> {
            Ok(PgConnectOptions::from_str(url).map_err(db_err)?.options([
                ("statement_timeout", statement_ms.to_string()),
                ("lock_timeout", LOCK_TIMEOUT_MS.to_string()),
            ]))
        };
        let pool = PgPoolOptions::new()
            .max_connections(API_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options(API_STATEMENT_TIMEOUT_MS)?)
            .await
            .map_err(db_err)?;
        migrate(&pool).await?;
        let queue = PgPoolOptions::new()
            .max_connections(QUEUE_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options(QUEUE_STATEMENT_TIMEOUT_MS)?)
            .await
            .map_err(db_err)?;
        let work = Arc::new(Notify::new());
        tokio::spawn(listen_forever(pool.clone(), work.clone()));
        Ok(Self { pool, queue, work })
    }

    async fn begin(&self) -> Result<Tx<'static>> {
        self.pool.begin().await.map_err(db_err)
    }

    /// A transaction on the queue's own connections.
    async fn begin_queue(&self) -> Result<Tx<'static>> {
        self.queue.begin().await.map_err(db_err)
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // The pool's timeouts are for serving: a replica waiting for another's migration (the
    // advisory lock), or a long migration, must not fail its start.
    sqlx::query("SET LOCAL lock_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
        )
        .bind(version)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        if done {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::jobs::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

/// `LISTEN ocr_jobs` forever; each notification wakes the claimers. Reconnects after errors
/// (claimers poll meanwhile).
async fn listen_forever(pool: PgPool, work: Arc<Notify>) {
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(CHANNEL).await?;
            loop {
                l.recv().await?;
                work.notify_waiters();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = listener.await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "postgres LISTEN dropped; reconnecting (claimers poll meanwhile)");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Records `event` of job `id`: every event of either kind goes through here.
async fn event(tx: &mut Tx<'_>, id: &str, event: &JobEvent, now: i64) -> Result<()> {
    let (kind, detail) = event.row();
    sqlx::query("INSERT INTO events (job_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(now)
        .bind(kind)
        .bind(detail)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Locks a job's row for the rest of the transaction; its state then. Taken before any event row is inserted:
/// an event's foreign key takes a share lock on the job row, and two transactions that each
/// hold that share lock and then ask for the row lock deadlock.
async fn lock_job(tx: &mut Tx<'_>, id: &str) -> Result<Option<JobState>> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
    Ok(state.and_then(|s| JobState::parse(&s)))
}

async fn notify_work(tx: &mut Tx<'_>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn counts(tx: &mut Tx<'_>, id: &str, threshold: Option<f64>) -> Result<PageCounts> {
    let r = sqlx::query(
        "SELECT
            COUNT(*) FILTER (WHERE state = 'queued'),
            COUNT(*) FILTER (WHERE state = 'processing'),
            COUNT(*) FILTER (WHERE state = 'completed'),
            COUNT(*) FILTER (WHERE state = 'failed'),
            COUNT(*) FILTER (WHERE state = 'completed' AND (review_reason IS NOT NULL
                             OR (min_confidence IS NOT NULL
                                 AND $2::DOUBLE PRECISION IS NOT NULL AND min_confidence < $2))),
            COUNT(*) FILTER (WHERE state = 'cancelled')
         FROM pages WHERE job_id = $1",
    )
    .bind(id)
    .bind(threshold)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_err)?;
    let n = |i: usize| r.try_get::<i64, _>(i).map(|v| v as usize).map_err(db_err);
    Ok(PageCounts {
        queued: n(0)?,
        processing: n(1)?,
        completed: n(2)?,
        failed: n(3)?,
        low_confidence: n(4)?,
        cancelled: n(5)?,
    })
}

/// Moves a job to `next`; writes the `state` event and, for final states with a webhook URL,
/// the outbox row (see the SQLite twin).
async fn transition(
    tx: &mut Tx<'_>,
    id: &str,
    from: JobState,
    next: JobState,
    review: Option<&Review>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE jobs SET state = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(next.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    if next == from {
        return Ok(());
    }
    let ev = JobEvent::State {
        from,
        to: next,
        detail: review.map(|r| StateDetail { review: r.clone() }),
    };
    event(tx, id, &ev, now).await?;
    let r = sqlx::query("SELECT webhook_url, tag, review_threshold FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
    let url: Option<String> = r.try_get(0).map_err(db_err)?;
    let tag: Option<String> = r.try_get(1).map_err(db_err)?;
    let threshold: Option<f64> = r.try_get(2).map_err(db_err)?;
    let Some(url) = url else { return Ok(()) };
    let c = counts(tx, id, threshold).await?;
    if let Some((event_name, payload)) = webhook_event(
        id,
        tag.as_deref(),
        (from, next),
        c,
        ev.review().and_then(|r| r.reviewer.as_deref()),
        now,
    ) {
        let did = format!("msg_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO deliveries (id, job_id, url, event, payload, state, attempts, next_at,
                                     created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
        )
        .bind(&did)
        .bind(id)
        .bind(url)
        .bind(&event_name)
        .bind(payload)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        event(
            tx,
            id,
            &JobEvent::WebhookQueued {
                id: did,
                event: event_name.to_string(),
            },
            now,
        )
        .await?;
    }
    Ok(())
}

/// Locks the job row, recounts its pages and applies the derived state (unless cancelled).
async fn refresh_state(tx: &mut Tx<'_>, id: &str, now: i64) -> Result<JobState> {
    let r = sqlx::query("SELECT state, review_threshold FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
    let current =
        JobState::parse(&r.try_get::<String, _>(0).map_err(db_err)?).unwrap_or(JobState::Queued);
    if current == JobState::Cancelled {
        return Ok(current);
    }
    let threshold: Option<f64> = r.try_get(1).map_err(db_err)?;
    let next = derive_state(counts(tx, id, threshold).await?);
    transition(tx, id, current, next, None, now).await?;
    Ok(next)
}

async fn load_job(conn: &mut sqlx::PgConnection, id: &str) -> Result<Option<JobRecord>> {
    let Some(mut job) = load_head(conn, id).await? else {
        return Ok(None);
    };
    let pages = sqlx::query(
        "SELECT doc, page, state, attempts, error, min_confidence, updated_at, src_index
         FROM pages WHERE job_id = $1 ORDER BY doc, page",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    for p in pages {
        let doc = p.try_get::<i64, _>(0).map_err(db_err)? as usize;
        let rec = PageRecord {
            page: p.try_get::<i64, _>(1).map_err(db_err)? as usize,
            state: PageState::parse(&p.try_get::<String, _>(2).map_err(db_err)?)
                .unwrap_or(PageState::Queued),
            attempts: p.try_get::<i64, _>(3).map_err(db_err)? as u32,
            error: p.try_get(4).map_err(db_err)?,
            min_confidence: p
                .try_get::<Option<f64>, _>(5)
                .map_err(db_err)?
                .map(|v| v as f32),
            updated_at_ms: p.try_get(6).map_err(db_err)?,
            source_index: p.try_get::<i64, _>(7).map_err(db_err)? as usize,
        };
        if let Some(d) = job.documents.get_mut(doc) {
            d.pages.push(rec);
        }
    }
    Ok(Some(job))
}

/// A job's summary: its head and documents, and its pages counted (no page rows).
async fn load_summary(conn: &mut sqlx::PgConnection, id: &str) -> Result<Option<JobSummary>> {
    let Some(job) = load_head(conn, id).await? else {
        return Ok(None);
    };
    let mut s = JobSummary::new(job);
    let rows = sqlx::query(
        "SELECT doc, state, COUNT(*), MIN(min_confidence) FROM pages
         WHERE job_id = $1 GROUP BY doc, state",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    for r in rows {
        let doc = r.try_get::<i64, _>(0).map_err(db_err)? as usize;
        let state = PageState::parse(&r.try_get::<String, _>(1).map_err(db_err)?)
            .unwrap_or(PageState::Queued);
        let n = r.try_get::<i64, _>(2).map_err(db_err)? as usize;
        let min = r.try_get::<Option<f64>, _>(3).map_err(db_err)?;
        s.add(doc, state, n, min.map(|v| v as f32));
    }
    Ok(Some(s))
}

/// A job's row and its documents (with no page rows).
async fn load_head(conn: &mut sqlx::PgConnection, id: &str) -> Result<Option<JobRecord>> {
    let Some(r) = sqlx::query(
        "SELECT id, state, tag, priority, review_threshold, webhook_url, options, created_at,
                updated_at, class, tenant FROM jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    else {
        return Ok(None);
    };
    let mut job = JobRecord {
        id: r.try_get(0).map_err(db_err)?,
        state: JobState::parse(&r.try_get::<String, _>(1).map_err(db_err)?)
            .unwrap_or(JobState::Queued),
        tag: r.try_get(2).map_err(db_err)?,
        priority: r.try_get::<i64, _>(3).map_err(db_err)? as i32,
        review_threshold: r
            .try_get::<Option<f64>, _>(4)
            .map_err(db_err)?
            .map(|v| v as f32),
        webhook_url: r.try_get(5).map_err(db_err)?,
        options: serde_json::from_str(&r.try_get::<String, _>(6).map_err(db_err)?)
            .unwrap_or_default(),
        created_at_ms: r.try_get(7).map_err(db_err)?,
        updated_at_ms: r.try_get(8).map_err(db_err)?,
        class: JobClass::from_rank(r.try_get(9).map_err(db_err)?),
        documents: Vec::new(),
        tenant: r.try_get(10).map_err(db_err)?,
    };
    let docs =
        sqlx::query("SELECT idx, name, path, sha256 FROM documents WHERE job_id = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    for d in docs {
        job.documents.push(DocumentRecord {
            index: d.try_get::<i64, _>(0).map_err(db_err)? as usize,
            name: d.try_get(1).map_err(db_err)?,
            location: d.try_get(2).map_err(db_err)?,
            sha256: d.try_get(3).map_err(db_err)?,
            pages: Vec::new(),
        });
    }
    Ok(Some(job))
}

async fn rescue_expired(tx: &mut Tx<'_>, now: i64, max_attempts: u32) -> Result<()> {
    let expired = sqlx::query(
        "SELECT job_id, doc, page, attempts, started FROM pages
         WHERE state = 'processing' AND lease_until < $1
         ORDER BY job_id, doc, page LIMIT 256 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    let mut jobs = std::collections::BTreeSet::new();
    for r in expired {
        let job: String = r.try_get(0).map_err(db_err)?;
        let doc: i64 = r.try_get(1).map_err(db_err)?;
        let page: i64 = r.try_get(2).map_err(db_err)?;
        let attempts: i64 = r.try_get(3).map_err(db_err)?;
        let started: bool = r.try_get(4).map_err(db_err)?;
        let rescue = super::store::Rescue::of(attempts, started, max_attempts);
        sqlx::query(
            "UPDATE pages SET state = $4, error = $5, attempts = $6, suspect = suspect OR $7,
                    lease_owner = NULL, lease_token = NULL, lease_until = NULL, run_at = $8,
                    updated_at = $8
             WHERE job_id = $1 AND doc = $2 AND page = $3",
        )
        .bind(&job)
        .bind(doc)
        .bind(page)
        .bind(rescue.state)
        .bind(&rescue.reason)
        .bind(rescue.attempts)
        .bind(started)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        lock_job(tx, &job).await?;
        event(tx, &job, &rescue.event(doc as usize, page as usize), now).await?;
        jobs.insert(job);
    }
    for job in jobs {
        refresh_state(tx, &job, now).await?;
    }
    Ok(())
}

const DELIVERY_COLS: &str = "id, job_id, url, event, payload, state, attempts, last_status, last_error, next_at, updated_at";

fn delivery_row(r: &sqlx::postgres::PgRow) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get(0).map_err(db_err)?,
        job_id: r.try_get(1).map_err(db_err)?,
        url: r.try_get(2).map_err(db_err)?,
        event: r.try_get(3).map_err(db_err)?,
        payload: r.try_get(4).map_err(db_err)?,
        state: DeliveryState::parse(&r.try_get::<String, _>(5).map_err(db_err)?)
            .unwrap_or(DeliveryState::Pending),
        attempts: r.try_get::<i64, _>(6).map_err(db_err)? as u32,
        last_status: r
            .try_get::<Option<i64>, _>(7)
            .map_err(db_err)?
            .map(|s| s as u16),
        last_error: r.try_get(8).map_err(db_err)?,
        next_at_ms: r.try_get(9).map_err(db_err)?,
        updated_at_ms: r.try_get(10).map_err(db_err)?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Runtime(format!("serialising: {e}")))
}

#[async_trait]
impl JobStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.work.notified()).await;
    }

    async fn create_job(&self, job: NewJob, now: i64, key_ttl_ms: i64) -> Result<Created> {
        let options = to_json(&job.options)?;
        let mut tx = self.begin().await?;
        if job.idempotency.is_some() {
            sqlx::query("DELETE FROM idempotency WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(
            "INSERT INTO jobs (id, state, options, tag, webhook_url, priority, review_threshold,
                               created_at, updated_at, class, tenant)
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $7, $8, $9)",
        )
        .bind(&job.id)
        .bind(&options)
        .bind(&job.tag)
        .bind(&job.webhook_url)
        .bind(i64::from(job.priority))
        .bind(job.review_threshold.map(f64::from))
        .bind(now)
        .bind(job.class.rank())
        .bind(&job.tenant)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO tenant_turns (tenant, served) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&job.tenant)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        for (i, d) in job.documents.iter().enumerate() {
            sqlx::query(
                "INSERT INTO documents (job_id, idx, name, path, sha256, owned, bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&job.id)
            .bind(i as i64)
            .bind(&d.name)
            .bind(&d.location)
            .bind(&d.sha256)
            .bind(d.owned)
            .bind(d.bytes.min(i64::MAX as u64) as i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let pages: Vec<i64> = (0..d.source_pages.len() as i64).collect();
            let srcs: Vec<i64> = d.source_pages.iter().map(|&s| s as i64).collect();
            sqlx::query(
                "INSERT INTO pages (job_id, doc, page, state, updated_at, src_index, class,
                                    priority, tag, queued_at, run_at, tenant, profile)
                 SELECT $1, $2, p, 'queued', $3, s, $4, $5, $6, $3, 0, $9, $10
                 FROM UNNEST($7::BIGINT[], $8::BIGINT[]) AS t(p, s)",
            )
            .bind(&job.id)
            .bind(i as i64)
            .bind(now)
            .bind(job.class.rank())
            .bind(i64::from(job.priority))
            .bind(&job.tag)
            .bind(&pages)
            .bind(&srcs)
            .bind(&job.tenant)
            .bind(job.options.profile_key())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        event(
            &mut tx,
            &job.id,
            &JobEvent::Created {
                documents: job.documents.len(),
                pages: job.page_count(),
                class: job.class,
                actor: job.actor.clone(),
            },
            now,
        )
        .await?;
        if let Some((key, hash)) = &job.idempotency {
            // Two replicas racing on one key: the second insert waits for the first's commit,
            // then inserts nothing; it rolls its job back and answers with the first one's.
            let inserted = sqlx::query(
                "INSERT INTO idempotency (key, payload_hash, job_id, expires_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(hash)
            .bind(&job.id)
            .bind(now + key_ttl_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await.map_err(db_err)?;
                let r = sqlx::query("SELECT payload_hash, job_id FROM idempotency WHERE key = $1")
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
                let seen_hash: String = r.try_get(0).map_err(db_err)?;
                let job_id: String = r.try_get(1).map_err(db_err)?;
                if &seen_hash != hash {
                    return Err(Error::IdempotencyConflict(key.clone()));
                }
                let mut conn = self.pool.acquire().await.map_err(db_err)?;
                let existing = load_job(&mut conn, &job_id)
                    .await?
                    .ok_or_else(|| Error::Store(format!("job {job_id} vanished")))?;
                return Ok(Created::Existing(existing));
            }
        }
        notify_work(&mut tx).await?;
        let record = load_job(&mut tx, &job.id)
            .await?
            .ok_or_else(|| Error::Store(format!("job {} vanished", job.id)))?;
        tx.commit().await.map_err(db_err)?;
        Ok(Created::New(record))
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        load_job(&mut conn, id).await
    }

    async fn job_summary(&self, id: &str) -> Result<Option<JobSummary>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        load_summary(&mut conn, id).await
    }

    async fn list_jobs(
        &self,
        tenant: Option<&str>,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let cursor = match after {
            Some(a) => Some(
                sqlx::query(
                    "SELECT created_at, id FROM jobs WHERE id = $1 AND ($2::TEXT IS NULL OR tenant = $2)",
                )
                .bind(a)
                .bind(tenant)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?
                .map(|r| -> Result<(i64, String)> {
                    Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?))
                })
                .transpose()?
                .ok_or_else(|| super::store::unknown_cursor(a))?,
            ),
            None => None,
        };
        let (c_at, c_id) = cursor.unwrap_or((i64::MAX, String::new()));
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs
             WHERE ($1::TEXT IS NULL OR state = $1)
               AND (created_at < $2 OR (created_at = $2 AND id < $3) OR $4)
               AND ($6::TEXT IS NULL OR tenant = $6)
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(state.map(JobState::as_str))
        .bind(c_at)
        .bind(c_id)
        .bind(after.is_none())
        .bind(limit as i64)
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(j) = load_summary(&mut conn, &id).await? {
                out.push(j);
            }
        }
        Ok(out)
    }

    async fn claim(&self, c: &Claim) -> Result<Vec<ClaimedPage>> {
        let mut tx = self.begin_queue().await?;
        rescue_expired(&mut tx, c.now_ms, c.max_attempts).await?;
        // Fair share (`store::fair_share`): the runnable pages of each tenant (an index seek each), least recently
        // served tenant first, one page of each per round until the claim is full; then the
        // chosen pages are locked (SKIP LOCKED: one another replica holds is left to it).
        let tenants: Vec<String> =
            sqlx::query_scalar("SELECT tenant FROM tenant_turns ORDER BY served, tenant")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        let mut queues: Vec<std::collections::VecDeque<(String, i64, i64)>> = Vec::new();
        for t in &tenants {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT p.job_id, p.doc, p.page FROM pages p
                 WHERE p.state = 'queued' AND p.class = $1 AND p.tenant = $4 AND p.run_at <= $2
                   AND (p.profile IS NULL OR p.profile = ANY($5))
                   AND (p.class = 0 OR NOT EXISTS (
                        SELECT 1 FROM pauses
                        WHERE scope = '*' OR scope = p.tag
                           OR scope = p.tenant || chr(31) || '*'
                           OR scope = p.tenant || chr(31) || p.tag))
                 ORDER BY p.priority DESC, p.queued_at, p.job_id, p.doc, p.page
                 LIMIT $3",
            )
            .bind(c.class.rank())
            .bind(c.now_ms)
            .bind(c.limit as i64)
            .bind(t)
            .bind(&c.profiles)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            queues.push(rows.into());
        }
        let (taken, served) = super::store::fair_share(queues, c.limit);
        let (mut ids, mut docs, mut pages) = (Vec::new(), Vec::new(), Vec::new());
        for (j, d, p) in taken {
            ids.push(j);
            docs.push(d);
            pages.push(p);
        }
        for t in served.into_iter().map(|i| &tenants[i]) {
            sqlx::query(
                "UPDATE tenant_turns SET served = (SELECT MAX(served) FROM tenant_turns) + 1
                 WHERE tenant = $1",
            )
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let rows = sqlx::query(
            "WITH picked AS (
                SELECT p.job_id, p.doc, p.page FROM pages p
                JOIN UNNEST($3::TEXT[], $6::BIGINT[], $7::BIGINT[]) AS k(j, d, pg)
                  ON p.job_id = k.j AND p.doc = k.d AND p.page = k.pg
                WHERE p.state = 'queued' AND p.class = $1
                FOR UPDATE OF p SKIP LOCKED)
             UPDATE pages p SET state = 'processing', attempts = p.attempts + 1, started = FALSE,
                    lease_owner = $4, lease_token = replace(gen_random_uuid()::TEXT, '-', ''),
                    lease_until = $5, updated_at = $2
             FROM picked
             WHERE p.job_id = picked.job_id AND p.doc = picked.doc AND p.page = picked.page
             RETURNING p.job_id, p.doc, p.page, p.src_index, p.attempts, p.tag, p.queued_at,
                       p.lease_token,
                       (SELECT path FROM documents d WHERE d.job_id = p.job_id AND d.idx = p.doc),
                       (SELECT options FROM jobs j WHERE j.id = p.job_id), p.priority,
                       (SELECT review_threshold FROM jobs j WHERE j.id = p.job_id), p.suspect",
        )
        .bind(c.class.rank())
        .bind(c.now_ms)
        .bind(&ids)
        .bind(&c.owner)
        .bind(c.lease_until_ms)
        .bind(&docs)
        .bind(&pages)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let options: String = r.try_get(9).map_err(db_err)?;
            let priority: i64 = r.try_get(10).map_err(db_err)?;
            out.push((
                priority,
                ClaimedPage {
                    lease: PageLease {
                        page: PageRef {
                            job_id: r.try_get(0).map_err(db_err)?,
                            doc: r.try_get::<i64, _>(1).map_err(db_err)? as usize,
                            page: r.try_get::<i64, _>(2).map_err(db_err)? as usize,
                        },
                        token: r.try_get(7).map_err(db_err)?,
                    },
                    source_index: r.try_get::<i64, _>(3).map_err(db_err)? as usize,
                    attempts: r.try_get::<i64, _>(4).map_err(db_err)? as u32,
                    tag: r.try_get(5).map_err(db_err)?,
                    queued_at_ms: r.try_get(6).map_err(db_err)?,
                    location: r.try_get(8).map_err(db_err)?,
                    options: serde_json::from_str::<JobOptions>(&options).unwrap_or_default(),
                    class: c.class,
                    review_threshold: r
                        .try_get::<Option<f64>, _>(11)
                        .map_err(db_err)?
                        .map(|t| t as f32),
                    suspect: r.try_get(12).map_err(db_err)?,
                },
            ));
        }
        // Claim order (the SQL above) is not RETURNING order: restore it for the caller.
        out.sort_by(|(pa, a), (pb, b)| {
            (
                -pa,
                a.queued_at_ms,
                &a.lease.page.job_id,
                a.lease.page.doc,
                a.lease.page.page,
            )
                .cmp(&(
                    -pb,
                    b.queued_at_ms,
                    &b.lease.page.job_id,
                    b.lease.page.doc,
                    b.lease.page.page,
                ))
        });
        let out: Vec<ClaimedPage> = out.into_iter().map(|(_, p)| p).collect();
        let jobs: Vec<String> = {
            let mut j: Vec<String> = out.iter().map(|p| p.lease.page.job_id.clone()).collect();
            j.sort();
            j.dedup();
            j
        };
        if !jobs.is_empty() {
            let started: Vec<String> = sqlx::query_scalar(
                // Job rows are locked in id order: two claims never wait on each other in a
                // cycle.
                "UPDATE jobs SET state = 'processing', updated_at = $2
                 WHERE id IN (SELECT id FROM jobs WHERE id = ANY($1) AND state = 'queued'
                              ORDER BY id FOR UPDATE)
                 RETURNING id",
            )
            .bind(&jobs)
            .bind(c.now_ms)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            for id in started {
                event(
                    &mut tx,
                    &id,
                    &JobEvent::State {
                        from: JobState::Queued,
                        to: JobState::Processing,
                        detail: None,
                    },
                    c.now_ms,
                )
                .await?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn renew(&self, owner: &str, tokens: &[String], until: i64) -> Result<Vec<String>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "UPDATE pages SET lease_until = $3
             WHERE lease_token = ANY($1) AND lease_owner = $2 AND state = 'processing'
             RETURNING lease_token",
        )
        .bind(tokens)
        .bind(owner)
        .bind(until)
        .fetch_all(&self.queue)
        .await
        .map_err(db_err)
    }

    async fn complete_page(
        &self,
        l: &PageLease,
        result: &Page,
        review: Option<&str>,
        now: i64,
    ) -> Result<Option<JobState>> {
        let json = to_json(result)?;
        let min_conf = min_confidence(result).map(f64::from);
        let mut tx = self.begin_queue().await?;
        let owner: Option<Option<String>> = sqlx::query_scalar(
            "WITH old AS (
                SELECT job_id, doc, page, lease_owner FROM pages
                WHERE job_id = $1 AND doc = $2 AND page = $3 AND lease_token = $4
                  AND state = 'processing' FOR UPDATE)
             UPDATE pages p SET state = 'completed', result = $5, min_confidence = $6,
                    error = NULL, lease_owner = NULL, lease_token = NULL, lease_until = NULL,
                    updated_at = $7, review_reason = $8
             FROM old WHERE p.job_id = old.job_id AND p.doc = old.doc AND p.page = old.page
             RETURNING old.lease_owner",
        )
        .bind(&l.page.job_id)
        .bind(l.page.doc as i64)
        .bind(l.page.page as i64)
        .bind(&l.token)
        .bind(json)
        .bind(min_conf)
        .bind(now)
        .bind(review)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(owner) = owner else { return Ok(None) };
        lock_job(&mut tx, &l.page.job_id).await?;
        event(
            &mut tx,
            &l.page.job_id,
            &JobEvent::PageCompleted {
                document: l.page.doc,
                page: l.page.page,
                worker: owner,
                review: review.map(str::to_string),
            },
            now,
        )
        .await?;
        let state = refresh_state(&mut tx, &l.page.job_id, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(state))
    }

    async fn fail_page(
        &self,
        l: &PageLease,
        reason: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<Option<JobState>> {
        let mut tx = self.begin_queue().await?;
        let n = sqlx::query(
            "UPDATE pages SET state = $5, error = $6, run_at = $7, lease_owner = NULL,
                    lease_token = NULL, lease_until = NULL, updated_at = $8
             WHERE job_id = $1 AND doc = $2 AND page = $3 AND lease_token = $4
               AND state = 'processing'",
        )
        .bind(&l.page.job_id)
        .bind(l.page.doc as i64)
        .bind(l.page.page as i64)
        .bind(&l.token)
        .bind(if retry_at.is_some() {
            "queued"
        } else {
            "failed"
        })
        .bind(reason)
        .bind(retry_at.unwrap_or(now))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        lock_job(&mut tx, &l.page.job_id).await?;
        event(
            &mut tx,
            &l.page.job_id,
            &page_failure(l.page.doc, l.page.page, reason.to_string(), retry_at),
            now,
        )
        .await?;
        let state = refresh_state(&mut tx, &l.page.job_id, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(state))
    }

    async fn start_page(&self, l: &PageLease) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE pages SET started = TRUE
             WHERE job_id = $1 AND doc = $2 AND page = $3 AND lease_token = $4
               AND state = 'processing'",
        )
        .bind(&l.page.job_id)
        .bind(l.page.doc as i64)
        .bind(l.page.page as i64)
        .bind(&l.token)
        .execute(&self.queue)
        .await
        .map_err(db_err)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn release_page(&self, l: &PageLease, run_at: i64, now: i64) -> Result<bool> {
        let mut tx = self.begin_queue().await?;
        let n = sqlx::query(
            "UPDATE pages SET state = 'queued', attempts = GREATEST(attempts - 1, 0), run_at = $5,
                    lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $6
             WHERE job_id = $1 AND doc = $2 AND page = $3 AND lease_token = $4
               AND state = 'processing'",
        )
        .bind(&l.page.job_id)
        .bind(l.page.doc as i64)
        .bind(l.page.page as i64)
        .bind(&l.token)
        .bind(run_at)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if n == 1 {
            notify_work(&mut tx).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn page_results(
        &self,
        job_id: &str,
        doc: usize,
        from: usize,
        limit: usize,
    ) -> Result<Vec<Option<Page>>> {
        let rows = sqlx::query(
            "SELECT state, result FROM pages WHERE job_id = $1 AND doc = $2 AND page >= $3
             ORDER BY page LIMIT $4",
        )
        .bind(job_id)
        .bind(doc as i64)
        .bind(from as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(0).map_err(db_err)?;
                let result: Option<String> = r.try_get(1).map_err(db_err)?;
                Ok((state == "completed")
                    .then_some(result)
                    .flatten()
                    .and_then(|s| serde_json::from_str::<Page>(&s).ok()))
            })
            .collect()
    }

    async fn cancel_job(&self, id: &str, now: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Page rows first, then the job row: the lock order of every other writer.
        sqlx::query(
            "SELECT 1 FROM pages WHERE job_id = $1 AND state IN ('queued', 'processing')
             FOR UPDATE",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT state FROM jobs WHERE id = $1 AND state IN ('queued', 'processing') FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(current) = current.and_then(|s| JobState::parse(&s)) else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE pages SET state = 'cancelled', lease_owner = NULL, lease_token = NULL,
                    lease_until = NULL, updated_at = $2
             WHERE job_id = $1 AND state IN ('queued', 'processing')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        event(&mut tx, id, &JobEvent::Cancelled {}, now).await?;
        transition(&mut tx, id, current, JobState::Cancelled, None, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn retry_failed(&self, id: &str, now: i64) -> Result<usize> {
        let mut tx = self.begin().await?;
        // The job row first: a cancel that commits meanwhile is seen here (its page locks are
        // on queued and processing pages, never on the failed ones this updates).
        let state = lock_job(&mut tx, id).await?;
        if state.is_none_or(|s| s == JobState::Cancelled) {
            return Ok(0);
        }
        let n = sqlx::query(
            "UPDATE pages SET state = 'queued', run_at = $2, updated_at = $2
             WHERE job_id = $1 AND state = 'failed'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected() as usize;
        if n > 0 {
            event(&mut tx, id, &JobEvent::Retry { pages: n }, now).await?;
            refresh_state(&mut tx, id, now).await?;
            notify_work(&mut tx).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }

    async fn complete_review(&self, id: &str, review: &Review, now: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        if lock_job(&mut tx, id).await? != Some(JobState::NeedsReview) {
            return Ok(false);
        }
        transition(
            &mut tx,
            id,
            JobState::NeedsReview,
            JobState::Completed,
            Some(review),
            now,
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn add_event(&self, id: &str, ev: &JobEvent, now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        event(&mut tx, id, ev, now).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn events(&self, id: &str) -> Result<Vec<Event>> {
        let rows =
            sqlx::query("SELECT seq, at, kind, detail FROM events WHERE job_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    seq: r.try_get(0).map_err(db_err)?,
                    at_ms: r.try_get(1).map_err(db_err)?,
                    kind: r.try_get(2).map_err(db_err)?,
                    detail: serde_json::from_str(&r.try_get::<String, _>(3).map_err(db_err)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    async fn sweep(
        &self,
        before: i64,
        review_before: i64,
        limit: usize,
    ) -> Result<(usize, Vec<String>)> {
        let mut tx = self.begin().await?;
        // Another replica sweeping at once takes other rows (SKIP LOCKED).
        let rows = sqlx::query(
            "WITH gone AS (
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs
                    WHERE (state IN ('completed', 'partially_completed', 'failed', 'cancelled')
                           AND updated_at < $1)
                       OR (state = 'needs_review' AND updated_at < $2)
                    LIMIT $3 FOR UPDATE SKIP LOCKED)
                RETURNING id)
             SELECT gone.id, d.path FROM gone
             LEFT JOIN documents d ON d.job_id = gone.id AND d.owned",
        )
        .bind(before)
        .bind(review_before)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let mut jobs = std::collections::HashSet::new();
        let mut paths = Vec::new();
        for r in rows {
            jobs.insert(r.try_get::<String, _>(0).map_err(db_err)?);
            if let Some(p) = r.try_get::<Option<String>, _>(1).map_err(db_err)? {
                paths.push(p);
            }
        }
        Ok((jobs.len(), paths))
    }

    async fn set_paused(&self, tag: Option<&str>, paused: bool, now: i64) -> Result<()> {
        let scope = tag.unwrap_or("*");
        let mut tx = self.begin().await?;
        if paused {
            sqlx::query("INSERT INTO pauses (scope, at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(scope)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        } else {
            sqlx::query("DELETE FROM pauses WHERE scope = $1")
                .bind(scope)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            notify_work(&mut tx).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn paused(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT scope FROM pauses ORDER BY scope")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn backlog(&self, class: JobClass) -> Result<Backlog> {
        let r = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE state = 'queued'),
                    COUNT(*) FILTER (WHERE state = 'processing'),
                    MIN(queued_at) FILTER (WHERE state = 'queued')
             FROM pages WHERE class = $1 AND state IN ('queued', 'processing')",
        )
        .bind(class.rank())
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(Backlog {
            queued: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
            processing: r.try_get::<i64, _>(1).map_err(db_err)? as u64,
            oldest_queued_ms: r.try_get(2).map_err(db_err)?,
        })
    }

    async fn pages_by_state_and_tag(&self) -> Result<Vec<(PageState, Option<String>, u64)>> {
        let rows = sqlx::query("SELECT state, tag, COUNT(*) FROM pages GROUP BY state, tag")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    PageState::parse(&r.try_get::<String, _>(0).map_err(db_err)?)
                        .unwrap_or(PageState::Queued),
                    r.try_get(1).map_err(db_err)?,
                    r.try_get::<i64, _>(2).map_err(db_err)? as u64,
                ))
            })
            .collect()
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "UPDATE deliveries SET lease_owner = $3, lease_until = $4
             WHERE id IN (SELECT id FROM deliveries
                          WHERE state = 'pending' AND next_at <= $1
                            AND (lease_until IS NULL OR lease_until < $1)
                          ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING {DELIVERY_COLS}"
        ))
        .bind(now)
        .bind(limit as i64)
        .bind(owner)
        .bind(lease_until)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let mut out = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|d| d.next_at_ms);
        Ok(out)
    }

    async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        a: &DeliveryAttempt,
        now: i64,
    ) -> Result<bool> {
        let state = match (a.delivered, a.retry_at_ms) {
            (true, _) => DeliveryState::Delivered,
            (false, Some(_)) => DeliveryState::Pending,
            (false, None) => DeliveryState::Failed,
        };
        let mut tx = self.begin().await?;
        let job: Option<String> = sqlx::query_scalar(
            "UPDATE deliveries SET state = $3, attempts = attempts + 1, last_status = $4,
                    last_error = $5, next_at = $6, updated_at = $7, lease_owner = NULL,
                    lease_until = NULL
             WHERE id = $1 AND lease_owner = $2 RETURNING job_id",
        )
        .bind(id)
        .bind(owner)
        .bind(state.as_str())
        .bind(a.status.map(i64::from))
        .bind(&a.error)
        .bind(a.retry_at_ms.unwrap_or(now))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(job) = job else { return Ok(false) };
        event(
            &mut tx,
            &job,
            &JobEvent::WebhookAttempt {
                id: id.to_string(),
                state,
                status: a.status,
                error: a.error.clone(),
            },
            now,
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries WHERE job_id = $1 ORDER BY created_at, id"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(delivery_row).collect()
    }

    async fn resend_deliveries(&self, job_id: &str, now: i64) -> Result<usize> {
        Ok(sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_at = $2, updated_at = $2,
                    lease_owner = NULL, lease_until = NULL
             WHERE job_id = $1 AND state = 'failed'",
        )
        .bind(job_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected() as usize)
    }

    async fn create_key(&self, k: &ApiKey) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO api_keys (name, tenant, hash, scopes, rate_per_s, burst, pages_per_s,
                                   page_burst, max_queued_pages, created_at, revoked_at,
                                   expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&k.name)
        .bind(&k.tenant)
        .bind(&k.hash)
        .bind(k.scopes.join(","))
        .bind(k.rate_per_s)
        .bind(k.burst.map(i64::from))
        .bind(k.pages_per_s)
        .bind(k.page_burst.map(i64::from))
        .bind(k.max_queued_pages.map(|v| v.min(i64::MAX as u64) as i64))
        .bind(k.created_ms)
        .bind(k.revoked_ms)
        .bind(k.expires_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::InvalidOption(format!(
                "a key named {:?} exists (names are never reused)",
                k.name
            )));
        }
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<ApiKey>> {
        sqlx::query(&format!("{KEY_COLUMNS} ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(key_row)
            .collect()
    }

    async fn revoke_key(&self, name: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected()
            == 1)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        sqlx::query(&format!("{KEY_COLUMNS} WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(key_row)
            .transpose()
    }

    async fn key_counts(&self) -> Result<KeyCounts> {
        let (total, active): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE revoked_at IS NULL) FROM api_keys",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(KeyCounts {
            total: total as u64,
            active: active as u64,
        })
    }

    async fn clock_ms(&self) -> Result<Option<i64>> {
        // clock_timestamp(), not now(): now() is the transaction's start.
        let ms: i64 =
            sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT")
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(Some(ms))
    }

    async fn tenant_webhook_secrets(&self, tenant: &str) -> Result<Vec<String>> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT secret, previous FROM tenant_webhook_secrets WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(row.map_or_else(Vec::new, |(s, p)| std::iter::once(s).chain(p).collect()))
    }

    async fn set_tenant_webhook_secret(&self, tenant: &str, secret: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_webhook_secrets (tenant, secret, previous, updated_at)
             VALUES ($1, $2, NULL, $3)
             ON CONFLICT (tenant) DO UPDATE
             SET previous = tenant_webhook_secrets.secret, secret = $2, updated_at = $3",
        )
        .bind(tenant)
        .bind(secret)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn tenant_usage(&self, tenant: &str) -> Result<(u64, u64)> {
        let (jobs, bytes): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE tenant = $1),
                    (SELECT COALESCE(SUM(d.bytes), 0)::BIGINT FROM documents d
                     JOIN jobs j ON j.id = d.job_id WHERE j.tenant = $1 AND d.owned)",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok((jobs as u64, bytes as u64))
    }

    async fn job_state(&self, id: &str) -> Result<Option<JobState>> {
        let s: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(s.map(|s| JobState::parse(&s).unwrap_or(JobState::Queued)))
    }

    async fn job_tenant(&self, id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT tenant FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn tenant_backlog(&self, tenant: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pages WHERE tenant = $1 AND state IN ('queued', 'processing')",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(n as u64)
    }
}

const KEY_COLUMNS: &str = "SELECT name, tenant, hash, scopes, rate_per_s, burst, pages_per_s, \
                           page_burst, max_queued_pages, created_at, revoked_at, expires_at \
                           FROM api_keys";

fn key_row(r: &sqlx::postgres::PgRow) -> Result<ApiKey> {
    let scopes: String = r.try_get(3).map_err(db_err)?;
    Ok(ApiKey {
        name: r.try_get(0).map_err(db_err)?,
        tenant: r.try_get(1).map_err(db_err)?,
        hash: r.try_get(2).map_err(db_err)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        rate_per_s: r.try_get(4).map_err(db_err)?,
        burst: r
            .try_get::<Option<i64>, _>(5)
            .map_err(db_err)?
            .map(|v| v.clamp(0, u32::MAX as i64) as u32),
        pages_per_s: r.try_get(6).map_err(db_err)?,
        page_burst: r
            .try_get::<Option<i64>, _>(7)
            .map_err(db_err)?
            .map(|v| v.clamp(0, u32::MAX as i64) as u32),
        max_queued_pages: r
            .try_get::<Option<i64>, _>(8)
            .map_err(db_err)?
            .map(|v| v.max(0) as u64),
        created_ms: r.try_get(9).map_err(db_err)?,
        revoked_ms: r.try_get(10).map_err(db_err)?,
        expires_ms: r.try_get(11).map_err(db_err)?,
    })
}

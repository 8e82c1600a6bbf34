//! The embedded SQLite job store (the default: `sqlite://<data-dir>/jobs.db`). WAL,
//! `synchronous = FULL`; every write is one short `IMMEDIATE` transaction run on tokio's
//! blocking pool, so claims from several tasks (or several processes on one file) are
//! serialised by SQLite's write lock and never hand out a page twice.
//!
//! Three connections, each behind its own mutex, so **the queue's writes never wait behind
//! reads**: one for the queue's writes (claim, renew, complete, fail, release), one for every
//! other write, and a read-only one for reads (WAL lets readers run beside a writer). A flood of
//! listings or key lookups queues on the reader's mutex, never on the queue's. (An in-memory
//! database, for tests, is one connection shared by all three: each `:memory:` connection
//! would be a database of its own.)
//!
//! Schema changes are numbered migrations ([`MIGRATIONS`]), recorded in `schema_migrations`;
//! version 1 is the schema of the first release, so existing data directories are upgraded in
//! place.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::events::{JobEvent, StateDetail, page_failure};
use super::model::{
    ApiKey, Backlog, Claim, ClaimedPage, Created, Delivery, DeliveryAttempt, DeliveryState,
    DocumentRecord, Event, JobClass, JobOptions, JobRecord, JobState, JobSummary, NewJob,
    PageCounts, PageLease, PageRecord, PageState, Review, derive_state, min_confidence,
    webhook_event,
};
use super::store::{JobStore, KeyCounts, unknown_cursor};
use crate::error::{Error, Result};
use crate::pipeline::Page;

fn db_err(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

/// Numbered schema migrations; each runs once, in order, in its own transaction.
const MIGRATIONS: [&str; 9] = [
    // 1: the first release's schema.
    "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    options TEXT NOT NULL,
    tag TEXT,
    webhook_url TEXT,
    priority INTEGER NOT NULL,
    review_threshold REAL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
CREATE TABLE IF NOT EXISTS documents (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS pages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    doc INTEGER NOT NULL,
    page INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    min_confidence REAL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, doc, page)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    payload_hash TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    next_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_at);
",
    // 2: the store is the queue (leases, classes, run-at times, pauses, source page indices,
    // delivery leases). Pages that were `processing` under the old in-process runner had no
    // lease: they go back to `queued` (what the old start-up recovery did). `src_index` and
    // `class` of existing rows are filled by `fill_v2` from each job's options.
    "
ALTER TABLE jobs ADD COLUMN class INTEGER NOT NULL DEFAULT 1;
ALTER TABLE pages ADD COLUMN src_index INTEGER;
ALTER TABLE pages ADD COLUMN class INTEGER NOT NULL DEFAULT 1;
ALTER TABLE pages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pages ADD COLUMN tag TEXT;
ALTER TABLE pages ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pages ADD COLUMN run_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pages ADD COLUMN lease_owner TEXT;
ALTER TABLE pages ADD COLUMN lease_token TEXT;
ALTER TABLE pages ADD COLUMN lease_until INTEGER;
UPDATE pages SET priority = (SELECT priority FROM jobs WHERE id = pages.job_id),
                 tag = (SELECT tag FROM jobs WHERE id = pages.job_id),
                 queued_at = (SELECT created_at FROM jobs WHERE id = pages.job_id);
UPDATE pages SET state = 'queued' WHERE state = 'processing';
CREATE INDEX pages_claim ON pages(state, class, priority DESC, queued_at);
CREATE INDEX pages_lease ON pages(state, lease_until);
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;
CREATE TABLE pauses (scope TEXT PRIMARY KEY, at INTEGER NOT NULL);
ALTER TABLE documents ADD COLUMN owned INTEGER NOT NULL DEFAULT 1;
",
    // 3: tenants (jobs and, for the claim, pages), the round-robin turns between tenants, and
    // API keys (hashed).
    "
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE pages ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX pages_tenant_claim ON pages(state, class, tenant, priority DESC, queued_at);
CREATE INDEX jobs_tenant ON jobs(tenant, created_at);
CREATE TABLE tenant_turns (tenant TEXT PRIMARY KEY, served INTEGER NOT NULL);
INSERT INTO tenant_turns (tenant, served) VALUES ('', 0);
CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    rate_per_s REAL,
    burst INTEGER,
    pages_per_s REAL,
    page_burst INTEGER,
    max_queued_pages INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
",
    // 4: why a completed page needs review whatever its confidence (a field's failed check).
    "
ALTER TABLE pages ADD COLUMN review_reason TEXT;
",
    // 5: the profile a page's job is pinned to (`NAME/MODEL`; NULL before: any replica).
    "
ALTER TABLE pages ADD COLUMN profile TEXT;
",
    // 6: whether a claimed page has started running (a lost worker charges only those), and
    // whether a worker was lost while running it (it then runs alone).
    "
ALTER TABLE pages ADD COLUMN started INTEGER NOT NULL DEFAULT 1;
ALTER TABLE pages ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0;
",
    // 7: each tenant's webhook signing secret (and the one it replaced, during rotation).
    "
CREATE TABLE tenant_webhook_secrets (
    tenant TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    previous TEXT,
    updated_at INTEGER NOT NULL
);
",
    // 8: a stored document's size (a tenant's storage quota counts it).
    "
ALTER TABLE documents ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
",
    // 9: a key's expiry.
    "
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
",
];

/// Migration 2's data step: the class and source page index of pages created before it.
fn fill_v2(tx: &Transaction) -> Result<()> {
    let jobs: Vec<(String, String)> = tx
        .prepare("SELECT DISTINCT j.id, j.options FROM jobs j JOIN pages p ON p.job_id = j.id WHERE p.src_index IS NULL")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    for (id, options) in jobs {
        let v: serde_json::Value = serde_json::from_str(&options).unwrap_or_default();
        let class = if v["interactive"] == serde_json::Value::Bool(true) {
            JobClass::Interactive
        } else {
            JobClass::Bulk
        };
        let spec = v["pages"].as_str().map(str::to_string);
        let pages: Vec<(i64, i64)> = tx
            .prepare("SELECT doc, page FROM pages WHERE job_id = ?1")
            .and_then(|mut s| {
                s.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_err)?;
        // The k-th job page is the k-th selected source page; an open range (`5-`) selects the
        // same first pages whatever the document's length, so a generous length is exact.
        let count = pages.iter().map(|p| p.1 as usize + 1).max().unwrap_or(0);
        let selected = match &spec {
            Some(s) => crate::document::select_pages(Some(s), count.max(1) * 64 + 4096, usize::MAX)
                .unwrap_or_else(|_| (0..count).collect()),
            None => (0..count).collect(),
        };
        for (doc, page) in pages {
            let src = selected
                .get(page as usize)
                .copied()
                .unwrap_or(page as usize);
            tx.execute(
                "UPDATE pages SET src_index = ?4, class = ?5 WHERE job_id = ?1 AND doc = ?2 AND page = ?3",
                params![id, doc, page, src as i64, class.rank()],
            )
            .map_err(db_err)?;
        }
        tx.execute(
            "UPDATE jobs SET class = ?2 WHERE id = ?1",
            params![id, class.rank()],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if done {
            continue;
        }
        tx.execute_batch(sql).map_err(db_err)?;
        if version == 2 {
            fill_v2(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, crate::jobs::now_ms()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}

/// The embedded SQLite store.
pub struct SqliteStore {
    /// Writes that are not the queue's.
    conn: Arc<Mutex<Connection>>,
    /// The queue's writes.
    queue: Arc<Mutex<Connection>>,
    /// Reads (read-only).
    reader: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it. Blocking.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Self::init(Connection::open(path).map_err(db_err)?)?;
        let more = |query_only: bool| -> Result<Arc<Mutex<Connection>>> {
            let c = Connection::open(path).map_err(db_err)?;
            Self::configure(&c)?;
            if query_only {
                c.execute_batch("PRAGMA query_only = ON;").map_err(db_err)?;
            }
            Ok(Arc::new(Mutex::new(c)))
        };
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            queue: more(false)?,
            reader: more(true)?,
        })
    }

    /// A private in-memory database (tests): one connection for everything.
    pub fn in_memory() -> Result<Self> {
        let conn = Arc::new(Mutex::new(Self::init(
            Connection::open_in_memory().map_err(db_err)?,
        )?));
        Ok(Self {
            queue: conn.clone(),
            reader: conn.clone(),
            conn,
        })
    }

    fn configure(conn: &Connection) -> Result<()> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 10000;",
        )
        .map_err(db_err)
    }

    fn init(mut conn: Connection) -> Result<Connection> {
        Self::configure(&conn)?;
        migrate(&mut conn)?;
        Ok(conn)
    }

    /// Runs `f` in one IMMEDIATE transaction on the blocking pool.
    async fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::tx_on(self.conn.clone(), f).await
    }

    /// [`SqliteStore::tx`] on the queue's own connection.
    async fn tx_queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::tx_on(self.queue.clone(), f).await
    }

    async fn tx_on<T: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Runtime(format!("store task: {e}")))?
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            // One snapshot for all of a read's statements (a job and its pages agree), now that
            // writers run beside the reader.
            let tx = conn.unchecked_transaction().map_err(db_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Runtime(format!("store task: {e}")))?
    }
}

/// Records `event` of job `id`: every event of either kind goes through here.
fn event(tx: &Connection, id: &str, event: &JobEvent, now: i64) -> Result<()> {
    let (kind, detail) = event.row();
    tx.execute(
        "INSERT INTO events (job_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![id, now, kind, detail],
    )
    .map_err(db_err)?;
    Ok(())
}

fn counts(tx: &Connection, id: &str, threshold: Option<f64>) -> Result<PageCounts> {
    tx.query_row(
        "SELECT
            COALESCE(SUM(state = 'queued'), 0),
            COALESCE(SUM(state = 'processing'), 0),
            COALESCE(SUM(state = 'completed'), 0),
            COALESCE(SUM(state = 'failed'), 0),
            COALESCE(SUM(state = 'completed' AND (review_reason IS NOT NULL
                         OR (min_confidence IS NOT NULL AND ?2 IS NOT NULL
                             AND min_confidence < ?2))), 0),
            COALESCE(SUM(state = 'cancelled'), 0)
         FROM pages WHERE job_id = ?1",
        params![id, threshold],
        |r| {
            Ok(PageCounts {
                queued: r.get::<_, i64>(0)? as usize,
                processing: r.get::<_, i64>(1)? as usize,
                completed: r.get::<_, i64>(2)? as usize,
                failed: r.get::<_, i64>(3)? as usize,
                low_confidence: r.get::<_, i64>(4)? as usize,
                cancelled: r.get::<_, i64>(5)? as usize,
            })
        },
    )
    .map_err(db_err)
}

/// Moves a job to `next` (recording the `state` event) and, when `next` is final and the job
/// has a webhook URL, writes the outbox row in the same transaction.
fn transition(
    tx: &Connection,
    id: &str,
    from: JobState,
    next: JobState,
    review: Option<&Review>,
    now: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE jobs SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, next.as_str(), now],
    )
    .map_err(db_err)?;
    if next == from {
        return Ok(());
    }
    let ev = JobEvent::State {
        from,
        to: next,
        detail: review.map(|r| StateDetail { review: r.clone() }),
    };
    event(tx, id, &ev, now)?;
    let (url, tag, threshold): (Option<String>, Option<String>, Option<f64>) = tx
        .query_row(
            "SELECT webhook_url, tag, review_threshold FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(db_err)?;
    let Some(url) = url else { return Ok(()) };
    let c = counts(tx, id, threshold)?;
    if let Some((event_name, payload)) = webhook_event(
        id,
        tag.as_deref(),
        (from, next),
        c,
        ev.review().and_then(|r| r.reviewer.as_deref()),
        now,
    ) {
        let did = format!("msg_{}", uuid::Uuid::new_v4().simple());
        tx.execute(
            "INSERT INTO deliveries (id, job_id, url, event, payload, state, attempts,
                                     next_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)",
            params![did, id, url, event_name, payload, now],
        )
        .map_err(db_err)?;
        event(
            tx,
            id,
            &JobEvent::WebhookQueued {
                id: did,
                event: event_name.to_string(),
            },
            now,
        )?;
    }
    Ok(())
}

/// Recomputes a job's state from its pages (unless cancelled) and applies it.
fn refresh_state(tx: &Connection, id: &str, now: i64) -> Result<JobState> {
    let (current, threshold): (String, Option<f64>) = tx
        .query_row(
            "SELECT state, review_threshold FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err)?;
    let current = JobState::parse(&current).unwrap_or(JobState::Queued);
    if current == JobState::Cancelled {
        return Ok(current);
    }
    let next = derive_state(counts(tx, id, threshold)?);
    transition(tx, id, current, next, None, now)?;
    Ok(next)
}

fn load_job(conn: &Connection, id: &str) -> Result<Option<JobRecord>> {
    let Some(mut job) = load_head(conn, id)? else {
        return Ok(None);
    };
    let mut pages = conn
        .prepare_cached(
            "SELECT doc, page, state, attempts, error, min_confidence, updated_at,
                    COALESCE(src_index, page)
             FROM pages WHERE job_id = ?1 ORDER BY doc, page",
        )
        .map_err(db_err)?;
    let rows = pages
        .query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                PageRecord {
                    page: r.get::<_, i64>(1)? as usize,
                    state: PageState::parse(&r.get::<_, String>(2)?).unwrap_or(PageState::Queued),
                    attempts: r.get::<_, i64>(3)? as u32,
                    error: r.get(4)?,
                    min_confidence: r.get::<_, Option<f64>>(5)?.map(|v| v as f32),
                    updated_at_ms: r.get(6)?,
                    source_index: r.get::<_, i64>(7)? as usize,
                },
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (doc, page) = row.map_err(db_err)?;
        if let Some(d) = job.documents.get_mut(doc) {
            d.pages.push(page);
        }
    }
    Ok(Some(job))
}

/// A job's summary: its head and documents, and its pages counted (no page rows).
fn load_summary(conn: &Connection, id: &str) -> Result<Option<JobSummary>> {
    let Some(job) = load_head(conn, id)? else {
        return Ok(None);
    };
    let mut s = JobSummary::new(job);
    let mut counts = conn
        .prepare_cached(
            "SELECT doc, state, COUNT(*), MIN(min_confidence) FROM pages
             WHERE job_id = ?1 GROUP BY doc, state",
        )
        .map_err(db_err)?;
    let rows = counts
        .query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as usize,
                r.get::<_, Option<f64>>(3)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (doc, state, n, min) = row.map_err(db_err)?;
        let state = PageState::parse(&state).unwrap_or(PageState::Queued);
        s.add(doc, state, n, min.map(|v| v as f32));
    }
    Ok(Some(s))
}

/// A job's row and its documents (with no page rows).
fn load_head(conn: &Connection, id: &str) -> Result<Option<JobRecord>> {
    let row = conn
        .query_row(
            "SELECT id, state, tag, priority, review_threshold, webhook_url, options, created_at,
                    updated_at, class, tenant FROM jobs WHERE id = ?1",
            [id],
            |r| {
                Ok(JobRecord {
                    id: r.get(0)?,
                    state: JobState::parse(&r.get::<_, String>(1)?).unwrap_or(JobState::Queued),
                    tag: r.get(2)?,
                    priority: r.get(3)?,
                    review_threshold: r.get::<_, Option<f64>>(4)?.map(|v| v as f32),
                    webhook_url: r.get(5)?,
                    options: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    created_at_ms: r.get(7)?,
                    updated_at_ms: r.get(8)?,
                    class: JobClass::from_rank(r.get(9)?),
                    documents: Vec::new(),
                    tenant: r.get(10)?,
                })
            },
        )
        .optional()
        .map_err(db_err)?;
    let Some(mut job) = row else { return Ok(None) };
    let mut docs = conn
        .prepare_cached(
            "SELECT idx, name, path, sha256 FROM documents WHERE job_id = ?1 ORDER BY idx",
        )
        .map_err(db_err)?;
    job.documents = docs
        .query_map([id], |r| {
            Ok(DocumentRecord {
                index: r.get::<_, i64>(0)? as usize,
                name: r.get(1)?,
                location: r.get(2)?,
                sha256: r.get(3)?,
                pages: Vec::new(),
            })
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    Ok(Some(job))
}

/// Rescues pages whose lease expired: requeued, or failed once their attempts are spent.
fn rescue_expired(tx: &Connection, now: i64, max_attempts: u32) -> Result<()> {
    let expired: Vec<(String, i64, i64, i64, bool)> = tx
        .prepare_cached(
            "SELECT job_id, doc, page, attempts, started FROM pages
             WHERE state = 'processing' AND lease_until < ?1",
        )
        .and_then(|mut s| {
            s.query_map([now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    let mut jobs = std::collections::BTreeSet::new();
    for (job, doc, page, attempts, started) in expired {
        let rescue = super::store::Rescue::of(attempts, started, max_attempts);
        tx.execute(
            "UPDATE pages SET state = ?4, error = ?5, attempts = ?6, suspect = suspect OR ?7,
                    lease_owner = NULL, lease_token = NULL, lease_until = NULL, run_at = ?8,
                    updated_at = ?8
             WHERE job_id = ?1 AND doc = ?2 AND page = ?3",
            params![
                job,
                doc,
                page,
                rescue.state,
                rescue.reason,
                rescue.attempts,
                started,
                now
            ],
        )
        .map_err(db_err)?;
        event(tx, &job, &rescue.event(doc as usize, page as usize), now)?;
        jobs.insert(job);
    }
    for job in jobs {
        refresh_state(tx, &job, now)?;
    }
    Ok(())
}

const DELIVERY_COLS: &str = "id, job_id, url, event, payload, state, attempts, last_status, last_error, next_at, updated_at";

fn delivery_row(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        job_id: r.get(1)?,
        url: r.get(2)?,
        event: r.get(3)?,
        payload: r.get(4)?,
        state: DeliveryState::parse(&r.get::<_, String>(5)?).unwrap_or(DeliveryState::Pending),
        attempts: r.get::<_, i64>(6)? as u32,
        last_status: r.get::<_, Option<i64>>(7)?.map(|s| s as u16),
        last_error: r.get(8)?,
        next_at_ms: r.get(9)?,
        updated_at_ms: r.get(10)?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Runtime(format!("serialising: {e}")))
}

#[async_trait]
impl JobStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_job(&self, job: NewJob, now: i64, key_ttl_ms: i64) -> Result<Created> {
        let options = to_json(&job.options)?;
        self.tx(move |tx| {
            if let Some((key, hash)) = &job.idempotency {
                tx.execute("DELETE FROM idempotency WHERE expires_at <= ?1", [now])
                    .map_err(db_err)?;
                let seen: Option<(String, String)> = tx
                    .query_row(
                        "SELECT payload_hash, job_id FROM idempotency WHERE key = ?1",
                        [key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                if let Some((seen_hash, job_id)) = seen {
                    if &seen_hash != hash {
                        return Err(Error::IdempotencyConflict(key.clone()));
                    }
                    let existing = load_job(tx, &job_id)?
                        .ok_or_else(|| Error::Store(format!("job {job_id} vanished")))?;
                    return Ok(Created::Existing(existing));
                }
            }
            tx.execute(
                "INSERT INTO jobs (id, state, options, tag, webhook_url, priority,
                                   review_threshold, created_at, updated_at, class, tenant)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
                params![
                    job.id,
                    options,
                    job.tag,
                    job.webhook_url,
                    job.priority,
                    job.review_threshold.map(f64::from),
                    now,
                    job.class.rank(),
                    job.tenant
                ],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO tenant_turns (tenant, served) VALUES (?1, 0) ON CONFLICT DO NOTHING",
                [&job.tenant],
            )
            .map_err(db_err)?;
            let mut page_stmt = tx
                .prepare_cached(
                    "INSERT INTO pages (job_id, doc, page, state, updated_at, src_index, class,
                                        priority, tag, queued_at, run_at, tenant, profile)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?4, 0, ?9, ?10)",
                )
                .map_err(db_err)?;
            let profile = job.options.profile_key();
            for (i, d) in job.documents.iter().enumerate() {
                tx.execute(
                    "INSERT INTO documents (job_id, idx, name, path, sha256, owned, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        job.id,
                        i as i64,
                        d.name,
                        d.location,
                        d.sha256,
                        d.owned,
                        d.bytes.min(i64::MAX as u64) as i64
                    ],
                )
                .map_err(db_err)?;
                for (p, src) in d.source_pages.iter().enumerate() {
                    page_stmt
                        .execute(params![
                            job.id,
                            i as i64,
                            p as i64,
                            now,
                            *src as i64,
                            job.class.rank(),
                            job.priority,
                            job.tag,
                            job.tenant,
                            profile
                        ])
                        .map_err(db_err)?;
                }
            }
            if let Some((key, hash)) = &job.idempotency {
                tx.execute(
                    "INSERT INTO idempotency (key, payload_hash, job_id, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![key, hash, job.id, now + key_ttl_ms],
                )
                .map_err(db_err)?;
            }
            event(
                tx,
                &job.id,
                &JobEvent::Created {
                    documents: job.documents.len(),
                    pages: job.page_count(),
                    class: job.class,
                    actor: job.actor.clone(),
                },
                now,
            )?;
            let record = load_job(tx, &job.id)?
                .ok_or_else(|| Error::Store(format!("job {} vanished", job.id)))?;
            Ok(Created::New(record))
        })
        .await
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_string();
        self.read(move |c| load_job(c, &id)).await
    }

    async fn job_summary(&self, id: &str) -> Result<Option<JobSummary>> {
        let id = id.to_string();
        self.read(move |c| load_summary(c, &id)).await
    }

    async fn list_jobs(
        &self,
        tenant: Option<&str>,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>> {
        let after = after.map(str::to_string);
        let tenant = tenant.map(str::to_string);
        self.read(move |conn| {
            let cursor: Option<(i64, String)> = match &after {
                Some(a) => Some(
                    conn.query_row(
                        "SELECT created_at, id FROM jobs WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
                        params![a, tenant],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?
                    .ok_or_else(|| unknown_cursor(a))?,
                ),
                None => None,
            };
            let (c_at, c_id) = cursor.unwrap_or((i64::MAX, String::new()));
            let ids = conn
                .prepare(
                    "SELECT id FROM jobs
                     WHERE (?1 IS NULL OR state = ?1)
                       AND (created_at < ?2 OR (created_at = ?2 AND id < ?3) OR ?4)
                       AND (?6 IS NULL OR tenant = ?6)
                     ORDER BY created_at DESC, id DESC LIMIT ?5",
                )
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            state.map(JobState::as_str),
                            c_at,
                            c_id,
                            after.is_none(),
                            limit as i64,
                            tenant
                        ],
                        |r| r.get::<_, String>(0),
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(j) = load_summary(conn, &id)? {
                    out.push(j);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn claim(&self, claim: &Claim) -> Result<Vec<ClaimedPage>> {
        let c = claim.clone();
        self.tx_queue(move |tx| {
            rescue_expired(tx, c.now_ms, c.max_attempts)?;
            type Row = (
                String,
                i64,
                i64,
                i64,
                i64,
                Option<String>,
                i64,
                String,
                String,
                Option<f64>,
                bool,
            );
            // Only pages of profiles this replica serves (a JSON array for `json_each`).
            let profiles = serde_json::to_string(&c.profiles).unwrap_or_else(|_| "[]".into());
            // Fair share (`store::fair_share`): tenants least recently served first, one page
            // each per round.
            let tenants: Vec<String> = tx
                .prepare_cached("SELECT tenant FROM tenant_turns ORDER BY served, tenant")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            let mut per_tenant: Vec<std::collections::VecDeque<Row>> = Vec::new();
            for t in &tenants {
                let rows: Vec<Row> = tx
                    .prepare_cached(
                        "SELECT p.job_id, p.doc, p.page, COALESCE(p.src_index, p.page), p.attempts,
                                p.tag, p.queued_at, d.path, j.options, j.review_threshold,
                                p.suspect
                         FROM pages p
                         JOIN jobs j ON j.id = p.job_id
                         JOIN documents d ON d.job_id = p.job_id AND d.idx = p.doc
                         WHERE p.state = 'queued' AND p.class = ?1 AND p.tenant = ?4
                           AND p.run_at <= ?2
                           AND (p.profile IS NULL
                                OR p.profile IN (SELECT value FROM json_each(?5)))
                           AND (p.class = 0 OR NOT EXISTS (
                                SELECT 1 FROM pauses
                                WHERE scope = '*' OR scope = p.tag
                                   OR scope = p.tenant || char(31) || '*'
                                   OR scope = p.tenant || char(31) || p.tag))
                         ORDER BY p.priority DESC, p.queued_at, p.job_id, p.doc, p.page
                         LIMIT ?3",
                    )
                    .and_then(|mut s| {
                        s.query_map(
                            params![c.class.rank(), c.now_ms, c.limit as i64, t, profiles],
                            |r| {
                                Ok((
                                    r.get(0)?,
                                    r.get(1)?,
                                    r.get(2)?,
                                    r.get(3)?,
                                    r.get(4)?,
                                    r.get(5)?,
                                    r.get(6)?,
                                    r.get(7)?,
                                    r.get(8)?,
                                    r.get(9)?,
                                    r.get(10)?,
                                ))
                            },
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                per_tenant.push(rows.into());
            }
            let (rows, served) = super::store::fair_share(per_tenant, c.limit);
            for t in served.into_iter().map(|i| &tenants[i]) {
                tx.execute(
                    "UPDATE tenant_turns SET served = (SELECT MAX(served) FROM tenant_turns) + 1
                     WHERE tenant = ?1",
                    [t],
                )
                .map_err(db_err)?;
            }
            let mut out = Vec::with_capacity(rows.len());
            for (
                job,
                doc,
                page,
                src,
                attempts,
                tag,
                queued_at,
                location,
                options,
                threshold,
                suspect,
            ) in rows
            {
                let token = uuid::Uuid::new_v4().simple().to_string();
                tx.execute(
                    "UPDATE pages SET state = 'processing', attempts = attempts + 1, started = 0,
                            lease_owner = ?4, lease_token = ?5, lease_until = ?6, updated_at = ?7
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3",
                    params![job, doc, page, c.owner, token, c.lease_until_ms, c.now_ms],
                )
                .map_err(db_err)?;
                let started = tx
                    .execute(
                        "UPDATE jobs SET state = 'processing', updated_at = ?2
                         WHERE id = ?1 AND state = 'queued'",
                        params![job, c.now_ms],
                    )
                    .map_err(db_err)?;
                if started == 1 {
                    event(
                        tx,
                        &job,
                        &JobEvent::State {
                            from: JobState::Queued,
                            to: JobState::Processing,
                            detail: None,
                        },
                        c.now_ms,
                    )?;
                }
                out.push(ClaimedPage {
                    lease: PageLease {
                        page: super::model::PageRef {
                            job_id: job,
                            doc: doc as usize,
                            page: page as usize,
                        },
                        token,
                    },
                    attempts: attempts as u32 + 1,
                    source_index: src as usize,
                    location,
                    options: serde_json::from_str::<JobOptions>(&options).unwrap_or_default(),
                    class: c.class,
                    tag,
                    queued_at_ms: queued_at,
                    review_threshold: threshold.map(|t| t as f32),
                    suspect,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn renew(&self, owner: &str, tokens: &[String], until: i64) -> Result<Vec<String>> {
        let (owner, tokens) = (owner.to_string(), tokens.to_vec());
        self.tx_queue(move |tx| {
            let mut held = Vec::new();
            for t in tokens {
                let n = tx
                    .execute(
                        "UPDATE pages SET lease_until = ?3
                         WHERE lease_token = ?1 AND lease_owner = ?2 AND state = 'processing'",
                        params![t, owner, until],
                    )
                    .map_err(db_err)?;
                if n == 1 {
                    held.push(t);
                }
            }
            Ok(held)
        })
        .await
    }

    async fn complete_page(
        &self,
        lease: &PageLease,
        result: &Page,
        review: Option<&str>,
        now: i64,
    ) -> Result<Option<JobState>> {
        let json = to_json(result)?;
        let min_conf = min_confidence(result).map(f64::from);
        let l = lease.clone();
        let review = review.map(str::to_string);
        self.tx_queue(move |tx| {
            let owner: Option<String> = tx
                .query_row(
                    "SELECT lease_owner FROM pages
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND lease_token = ?4
                       AND state = 'processing'",
                    params![
                        l.page.job_id,
                        l.page.doc as i64,
                        l.page.page as i64,
                        l.token
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?
                .flatten();
            let n = tx
                .execute(
                    "UPDATE pages SET state = 'completed', result = ?5, min_confidence = ?6,
                            error = NULL, lease_owner = NULL, lease_token = NULL,
                            lease_until = NULL, updated_at = ?7, review_reason = ?8
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND lease_token = ?4
                       AND state = 'processing'",
                    params![
                        l.page.job_id,
                        l.page.doc as i64,
                        l.page.page as i64,
                        l.token,
                        json,
                        min_conf,
                        now,
                        review
                    ],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Ok(None);
            }
            event(
                tx,
                &l.page.job_id,
                &JobEvent::PageCompleted {
                    document: l.page.doc,
                    page: l.page.page,
                    worker: owner,
                    review,
                },
                now,
            )?;
            refresh_state(tx, &l.page.job_id, now).map(Some)
        })
        .await
    }

    async fn fail_page(
        &self,
        lease: &PageLease,
        reason: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<Option<JobState>> {
        let (l, reason) = (lease.clone(), reason.to_string());
        self.tx_queue(move |tx| {
            let n = tx
                .execute(
                    "UPDATE pages SET state = ?5, error = ?6, run_at = ?7, lease_owner = NULL,
                            lease_token = NULL, lease_until = NULL, updated_at = ?8
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND lease_token = ?4
                       AND state = 'processing'",
                    params![
                        l.page.job_id,
                        l.page.doc as i64,
                        l.page.page as i64,
                        l.token,
                        if retry_at.is_some() {
                            "queued"
                        } else {
                            "failed"
                        },
                        reason,
                        retry_at.unwrap_or(now),
                        now
                    ],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Ok(None);
            }
            event(
                tx,
                &l.page.job_id,
                &page_failure(l.page.doc, l.page.page, reason, retry_at),
                now,
            )?;
            refresh_state(tx, &l.page.job_id, now).map(Some)
        })
        .await
    }

    async fn start_page(&self, lease: &PageLease) -> Result<bool> {
        let l = lease.clone();
        self.tx_queue(move |tx| {
            let n = tx
                .execute(
                    "UPDATE pages SET started = 1
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND lease_token = ?4
                       AND state = 'processing'",
                    params![
                        l.page.job_id,
                        l.page.doc as i64,
                        l.page.page as i64,
                        l.token
                    ],
                )
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_page(&self, lease: &PageLease, run_at: i64, now: i64) -> Result<bool> {
        let l = lease.clone();
        self.tx_queue(move |tx| {
            let n = tx
                .execute(
                    "UPDATE pages SET state = 'queued', attempts = MAX(attempts - 1, 0),
                            run_at = ?5, lease_owner = NULL, lease_token = NULL,
                            lease_until = NULL, updated_at = ?6
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND lease_token = ?4
                       AND state = 'processing'",
                    params![
                        l.page.job_id,
                        l.page.doc as i64,
                        l.page.page as i64,
                        l.token,
                        run_at,
                        now
                    ],
                )
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn page_results(
        &self,
        job_id: &str,
        doc: usize,
        from: usize,
        limit: usize,
    ) -> Result<Vec<Option<Page>>> {
        let job_id = job_id.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT state, result FROM pages WHERE job_id = ?1 AND doc = ?2 AND page >= ?3
                 ORDER BY page LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![job_id, doc as i64, from as i64, limit as i64],
                    |r| {
                        let state: String = r.get(0)?;
                        let result: Option<String> = r.get(1)?;
                        Ok((state == "completed")
                            .then_some(result)
                            .flatten()
                            .and_then(|s| serde_json::from_str::<Page>(&s).ok()))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_err)
        })
        .await
    }

    async fn cancel_job(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_string();
        self.tx(move |tx| {
            let current: Option<String> = tx
                .query_row(
                    "SELECT state FROM jobs WHERE id = ?1 AND state IN ('queued', 'processing')",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            let Some(current) = current.and_then(|s| JobState::parse(&s)) else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE pages SET state = 'cancelled', lease_owner = NULL, lease_token = NULL,
                        lease_until = NULL, updated_at = ?2
                 WHERE job_id = ?1 AND state IN ('queued', 'processing')",
                params![id, now],
            )
            .map_err(db_err)?;
            event(tx, &id, &JobEvent::Cancelled {}, now)?;
            transition(tx, &id, current, JobState::Cancelled, None, now)?;
            Ok(true)
        })
        .await
    }

    async fn retry_failed(&self, id: &str, now: i64) -> Result<usize> {
        let id = id.to_string();
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "UPDATE pages SET state = 'queued', run_at = ?2, updated_at = ?2
                     WHERE job_id = ?1 AND state = 'failed'
                       AND (SELECT state FROM jobs WHERE id = ?1) != 'cancelled'",
                    params![id, now],
                )
                .map_err(db_err)?;
            if n > 0 {
                event(tx, &id, &JobEvent::Retry { pages: n }, now)?;
                refresh_state(tx, &id, now)?;
            }
            Ok(n)
        })
        .await
    }

    async fn complete_review(&self, id: &str, review: &Review, now: i64) -> Result<bool> {
        let (id, review) = (id.to_string(), review.clone());
        self.tx(move |tx| {
            let current: Option<String> = tx
                .query_row("SELECT state FROM jobs WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if current.as_deref() != Some(JobState::NeedsReview.as_str()) {
                return Ok(false);
            }
            transition(
                tx,
                &id,
                JobState::NeedsReview,
                JobState::Completed,
                Some(&review),
                now,
            )?;
            Ok(true)
        })
        .await
    }

    async fn add_event(&self, id: &str, ev: &JobEvent, now: i64) -> Result<()> {
        let (id, ev) = (id.to_string(), ev.clone());
        self.tx(move |tx| event(tx, &id, &ev, now)).await
    }

    async fn events(&self, id: &str) -> Result<Vec<Event>> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT seq, at, kind, detail FROM events WHERE job_id = ?1 ORDER BY seq",
            )
            .and_then(|mut s| {
                s.query_map([id], |r| {
                    Ok(Event {
                        seq: r.get(0)?,
                        at_ms: r.get(1)?,
                        kind: r.get(2)?,
                        detail: serde_json::from_str(&r.get::<_, String>(3)?)
                            .unwrap_or(serde_json::Value::Null),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_err)
        })
        .await
    }

    async fn sweep(
        &self,
        before: i64,
        review_before: i64,
        limit: usize,
    ) -> Result<(usize, Vec<String>)> {
        self.tx(move |tx| {
            let ids = tx
                .prepare(
                    "SELECT id FROM jobs
                     WHERE (state IN ('completed', 'partially_completed', 'failed', 'cancelled')
                            AND updated_at < ?1)
                        OR (state = 'needs_review' AND updated_at < ?2)
                     LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(params![before, review_before, limit as i64], |r| {
                        r.get::<_, String>(0)
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            let mut paths = Vec::new();
            for id in &ids {
                let mut docs = tx
                    .prepare_cached("SELECT path FROM documents WHERE job_id = ?1 AND owned")
                    .map_err(db_err)?;
                for p in docs
                    .query_map([id], |r| r.get::<_, String>(0))
                    .map_err(db_err)?
                {
                    paths.push(p.map_err(db_err)?);
                }
                tx.execute("DELETE FROM jobs WHERE id = ?1", [id])
                    .map_err(db_err)?;
            }
            Ok((ids.len(), paths))
        })
        .await
    }

    async fn set_paused(&self, tag: Option<&str>, paused: bool, now: i64) -> Result<()> {
        let scope = tag.unwrap_or("*").to_string();
        self.tx(move |tx| {
            if paused {
                tx.execute(
                    "INSERT OR IGNORE INTO pauses (scope, at) VALUES (?1, ?2)",
                    params![scope, now],
                )
            } else {
                tx.execute("DELETE FROM pauses WHERE scope = ?1", [scope])
            }
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.read(|c| {
            c.prepare("SELECT scope FROM pauses ORDER BY scope")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(db_err)
        })
        .await
    }

    async fn backlog(&self, class: JobClass) -> Result<Backlog> {
        self.read(move |c| {
            c.query_row(
                "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'processing'), 0),
                        MIN(CASE WHEN state = 'queued' THEN queued_at END)
                 FROM pages WHERE class = ?1 AND state IN ('queued', 'processing')",
                [class.rank()],
                |r| {
                    Ok(Backlog {
                        queued: r.get::<_, i64>(0)? as u64,
                        processing: r.get::<_, i64>(1)? as u64,
                        oldest_queued_ms: r.get(2)?,
                    })
                },
            )
            .map_err(db_err)
        })
        .await
    }

    async fn pages_by_state_and_tag(&self) -> Result<Vec<(PageState, Option<String>, u64)>> {
        self.read(|c| {
            c.prepare("SELECT state, tag, COUNT(*) FROM pages GROUP BY state, tag")
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok((
                            PageState::parse(&r.get::<_, String>(0)?).unwrap_or(PageState::Queued),
                            r.get(1)?,
                            r.get::<_, i64>(2)? as u64,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Delivery>> {
        let owner = owner.to_string();
        self.tx(move |tx| {
            let due = tx
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLS} FROM deliveries
                     WHERE state = 'pending' AND next_at <= ?1
                       AND (lease_until IS NULL OR lease_until < ?1)
                     ORDER BY next_at LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![now, limit as i64], delivery_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            for d in &due {
                tx.execute(
                    "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
                    params![d.id, owner, lease_until],
                )
                .map_err(db_err)?;
            }
            Ok(due)
        })
        .await
    }

    async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        a: &DeliveryAttempt,
        now: i64,
    ) -> Result<bool> {
        let (id, owner, a) = (id.to_string(), owner.to_string(), a.clone());
        let state = match (a.delivered, a.retry_at_ms) {
            (true, _) => DeliveryState::Delivered,
            (false, Some(_)) => DeliveryState::Pending,
            (false, None) => DeliveryState::Failed,
        };
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "UPDATE deliveries SET state = ?3, attempts = attempts + 1, last_status = ?4,
                            last_error = ?5, next_at = ?6, updated_at = ?7, lease_owner = NULL,
                            lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2",
                    params![
                        id,
                        owner,
                        state.as_str(),
                        a.status.map(i64::from),
                        a.error,
                        a.retry_at_ms.unwrap_or(now),
                        now
                    ],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Ok(false);
            }
            let job: String = tx
                .query_row("SELECT job_id FROM deliveries WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .map_err(db_err)?;
            event(
                tx,
                &job,
                &JobEvent::WebhookAttempt {
                    id,
                    state,
                    status: a.status,
                    error: a.error,
                },
                now,
            )?;
            Ok(true)
        })
        .await
    }

    async fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>> {
        let job_id = job_id.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE job_id = ?1 ORDER BY created_at, id"
            ))
            .and_then(|mut s| {
                s.query_map([job_id], delivery_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_err)
        })
        .await
    }

    async fn resend_deliveries(&self, job_id: &str, now: i64) -> Result<usize> {
        let job_id = job_id.to_string();
        self.tx(move |tx| {
            tx.execute(
                "UPDATE deliveries SET state = 'pending', next_at = ?2, updated_at = ?2,
                        lease_owner = NULL, lease_until = NULL
                 WHERE job_id = ?1 AND state = 'failed'",
                params![job_id, now],
            )
            .map_err(db_err)
        })
        .await
    }

    async fn create_key(&self, key: &ApiKey) -> Result<()> {
        let k = key.clone();
        self.tx(move |tx| {
            let taken: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM api_keys WHERE name = ?1)",
                    [&k.name],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if taken {
                return Err(Error::InvalidOption(format!(
                    "a key named {:?} exists (names are never reused)",
                    k.name
                )));
            }
            tx.execute(
                "INSERT INTO api_keys (name, tenant, hash, scopes, rate_per_s, burst, pages_per_s,
                                       page_burst, max_queued_pages, created_at, revoked_at,
                                       expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    k.name,
                    k.tenant,
                    k.hash,
                    k.scopes.join(","),
                    k.rate_per_s,
                    k.burst,
                    k.pages_per_s,
                    k.page_burst,
                    k.max_queued_pages.map(|v| v.min(i64::MAX as u64) as i64),
                    k.created_ms,
                    k.revoked_ms,
                    k.expires_ms
                ],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>> {
        self.read(|c| {
            c.prepare(&format!("{KEY_COLUMNS} ORDER BY name"))
                .and_then(|mut s| {
                    s.query_map([], key_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)
        })
        .await
    }

    async fn revoke_key(&self, name: &str, now: i64) -> Result<bool> {
        let name = name.to_string();
        self.tx(move |tx| {
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, now],
            )
            .map(|n| n == 1)
            .map_err(db_err)
        })
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let hash = hash.to_string();
        self.read(move |c| {
            c.query_row(&format!("{KEY_COLUMNS} WHERE hash = ?1"), [hash], key_row)
                .optional()
                .map_err(db_err)
        })
        .await
    }

    async fn key_counts(&self) -> Result<KeyCounts> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN revoked_at IS NULL THEN 1 ELSE 0 END), 0)
                 FROM api_keys",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map(|(total, active)| KeyCounts {
                total: total as u64,
                active: active as u64,
            })
            .map_err(db_err)
        })
        .await
    }

    async fn tenant_webhook_secrets(&self, tenant: &str) -> Result<Vec<String>> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            let row: Option<(String, Option<String>)> = c
                .query_row(
                    "SELECT secret, previous FROM tenant_webhook_secrets WHERE tenant = ?1",
                    [tenant],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            Ok(row.map_or_else(Vec::new, |(s, p)| std::iter::once(s).chain(p).collect()))
        })
        .await
    }

    async fn set_tenant_webhook_secret(&self, tenant: &str, secret: &str, now: i64) -> Result<()> {
        let (tenant, secret) = (tenant.to_string(), secret.to_string());
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO tenant_webhook_secrets (tenant, secret, previous, updated_at)
                 VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT (tenant) DO UPDATE SET previous = secret, secret = ?2,
                                                    updated_at = ?3",
                params![tenant, secret, now],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn tenant_usage(&self, tenant: &str) -> Result<(u64, u64)> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM jobs WHERE tenant = ?1),
                        (SELECT COALESCE(SUM(d.bytes), 0) FROM documents d
                         JOIN jobs j ON j.id = d.job_id WHERE j.tenant = ?1 AND d.owned)",
                [tenant],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(db_err)
        })
        .await
    }

    async fn job_state(&self, id: &str) -> Result<Option<JobState>> {
        let id = id.to_string();
        self.read(move |c| {
            let s: Option<String> = c
                .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            Ok(s.map(|s| JobState::parse(&s).unwrap_or(JobState::Queued)))
        })
        .await
    }

    async fn job_tenant(&self, id: &str) -> Result<Option<String>> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row("SELECT tenant FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(db_err)
        })
        .await
    }

    async fn tenant_backlog(&self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM pages WHERE tenant = ?1 AND state IN ('queued', 'processing')",
                [tenant],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }
}

const KEY_COLUMNS: &str = "SELECT name, tenant, hash, scopes, rate_per_s, burst, pages_per_s, \
                           page_burst, max_queued_pages, created_at, revoked_at, expires_at \
                           FROM api_keys";

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        name: r.get(0)?,
        tenant: r.get(1)?,
        hash: r.get(2)?,
        scopes: r
            .get::<_, String>(3)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        rate_per_s: r.get(4)?,
        burst: r.get(5)?,
        pages_per_s: r.get(6)?,
        page_burst: r.get(7)?,
        max_queued_pages: r.get::<_, Option<i64>>(8)?.map(|v| v.max(0) as u64),
        created_ms: r.get(9)?,
        revoked_ms: r.get(10)?,
        expires_ms: r.get(11)?,
    })
}

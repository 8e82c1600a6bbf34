//! The durable job store: jobs, their documents and pages, idempotency keys and the audit trail
//! of events, behind the [`JobStore`] trait (so a PostgreSQL implementation can follow), with
//! the embedded SQLite implementation [`SqliteStore`] as the default.
//!
//! Durability rules:
//! - every write is one transaction; a job, its documents, pages and first event are created
//!   together, so an acknowledged job is complete on disk (WAL, `synchronous = FULL`);
//! - page results are stored with the page's state change, so a page is either done with its
//!   result or still to do; after a crash, [`JobStore::recover`] turns `processing` pages back to
//!   `queued` and they are computed again, finished pages are kept;
//! - the job's state is derived from its pages in the same transaction as every page change
//!   ([`derive_state`]), so it never disagrees with them.
//!
//! Times are Unix milliseconds passed in by the caller (tests use explicit clocks).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Processing,
    Completed,
    PartiallyCompleted,
    Failed,
    NeedsReview,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Processing,
        JobState::Completed,
        JobState::PartiallyCompleted,
        JobState::Failed,
        JobState::NeedsReview,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Completed => "completed",
            JobState::PartiallyCompleted => "partially_completed",
            JobState::Failed => "failed",
            JobState::NeedsReview => "needs_review",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// No more work will run for the job (review may still complete a `needs_review` job).
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Processing)
    }
}

/// State of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PageState {
    Queued,
    Processing,
    Completed,
    /// Failed for good (retries exhausted or a permanent error): dead-lettered, retryable by
    /// hand.
    Failed,
}

impl PageState {
    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Queued => "queued",
            PageState::Processing => "processing",
            PageState::Completed => "completed",
            PageState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            PageState::Queued,
            PageState::Processing,
            PageState::Completed,
            PageState::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A document of a new job: where its bytes are and how many pages it has.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub pages: usize,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: String,
    /// The request options as JSON (opaque to the store).
    pub options: String,
    pub tag: Option<String>,
    pub webhook_url: Option<String>,
    pub priority: i32,
    pub review_threshold: Option<f32>,
    /// `(Idempotency-Key, hash of the payload)`.
    pub idempotency: Option<(String, String)>,
    pub documents: Vec<NewDocument>,
}

/// Page identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct PageRef {
    pub job_id: String,
    pub doc: usize,
    pub page: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PageRecord {
    pub page: usize,
    pub state: PageState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Lowest line confidence on the page (null until completed or without lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DocumentRecord {
    pub index: usize,
    pub name: String,
    #[serde(skip)]
    pub path: String,
    pub sha256: String,
    pub pages: Vec<PageRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_threshold: Option<f32>,
    #[serde(skip)]
    pub webhook_url: Option<String>,
    #[serde(skip)]
    pub options: String,
    pub pages_total: usize,
    pub pages_done: usize,
    pub pages_failed: usize,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub documents: Vec<DocumentRecord>,
}

/// One transition or action on a job.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// One webhook event for one job and its delivery attempts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The `webhook-id` (stable across retries, so receivers can deduplicate).
    pub id: String,
    #[serde(skip)]
    pub job_id: String,
    #[serde(skip)]
    pub url: String,
    pub event: String,
    #[serde(skip)]
    pub payload: String,
    /// `pending`, `delivered` or `failed` (kept; re-sendable).
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What `create_job` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(JobRecord),
    /// The idempotency key was seen with the same payload: the earlier job.
    Existing(JobRecord),
}

/// Storage of jobs. Implementations are safe to share between threads.
pub trait JobStore: Send + Sync {
    /// Creates a job with its documents and queued pages, or returns the job an unexpired
    /// idempotency key already names. The same key with another payload is
    /// [`Error::IdempotencyConflict`].
    fn create_job(&self, job: &NewJob, now_ms: i64, key_ttl_ms: i64) -> Result<Created>;
    fn get_job(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Jobs, newest first, optionally of one state, after a cursor (the last id of a page).
    fn list_jobs(
        &self,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>>;
    /// Marks a page processing and counts the attempt. False if the page is not queued or its
    /// job is cancelled (nothing to do).
    fn start_page(&self, p: &PageRef, now_ms: i64) -> Result<bool>;
    /// Stores a page's result; returns the job's state after it.
    fn complete_page(
        &self,
        p: &PageRef,
        result_json: &str,
        min_confidence: Option<f32>,
        now_ms: i64,
    ) -> Result<JobState>;
    /// Records a failed attempt: back to `queued` for a retry, or `failed` for good. Returns the
    /// job's state after it.
    fn fail_page(&self, p: &PageRef, reason: &str, retry: bool, now_ms: i64) -> Result<JobState>;
    /// The stored result of a page.
    fn page_result(&self, p: &PageRef) -> Result<Option<String>>;
    /// Cancels a job that is not final; returns whether it did.
    fn cancel_job(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// Turns failed pages of a job back to queued (attempts kept); returns them.
    fn retry_failed(&self, id: &str, now_ms: i64) -> Result<Vec<PageRef>>;
    /// Sets a job's state by hand (review); records an event.
    fn set_job_state(
        &self,
        id: &str,
        state: JobState,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Result<()>;
    fn add_event(&self, id: &str, kind: &str, detail: serde_json::Value, now_ms: i64)
    -> Result<()>;
    fn events(&self, id: &str) -> Result<Vec<Event>>;
    /// After a restart: `processing` pages of live jobs go back to `queued`; returns every
    /// queued page of every live job, oldest job first.
    fn recover(&self, now_ms: i64) -> Result<Vec<PageRef>>;
    /// Deletes final jobs last updated before `before_ms`; returns their document paths.
    fn sweep(&self, before_ms: i64) -> Result<Vec<String>>;
    /// Queues a webhook event for delivery now.
    fn add_delivery(&self, d: &Delivery, now_ms: i64) -> Result<()>;
    /// Pending deliveries due at `now_ms`.
    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>>;
    /// Records an attempt: delivered, retry at `next_at_ms`, or failed for good (`None`).
    fn record_delivery(
        &self,
        id: &str,
        delivered: bool,
        status: Option<u16>,
        error: Option<&str>,
        next_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<()>;
    fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>>;
    /// Makes a job's failed deliveries pending again; returns how many.
    fn resend_deliveries(&self, job_id: &str, now_ms: i64) -> Result<usize>;
}

/// The embedded SQLite store (WAL, one connection behind a mutex; SQLite serialises writers
/// anyway and every operation is a short transaction).
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

const SCHEMA: &str = "
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
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(db_err)?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with_tx<T>(&self, f: impl FnOnce(&rusqlite::Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let out = f(&tx)?;
        tx.commit().map_err(db_err)?;
        Ok(out)
    }
}

fn event(
    tx: &Connection,
    id: &str,
    kind: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (job_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![id, now, kind, detail.to_string()],
    )
    .map_err(db_err)?;
    Ok(())
}

/// A job's state from its pages: all completed → completed (needs_review when a page's lowest
/// line confidence is under the threshold); nothing pending and some failed → partially
/// completed (failed if none completed); anything started → processing; else queued.
/// `(queued, processing, completed, failed, below_threshold)` counts.
pub fn derive_state(counts: (usize, usize, usize, usize, usize)) -> JobState {
    let (queued, processing, completed, failed, low) = counts;
    if queued + processing > 0 {
        if processing + completed + failed > 0 {
            JobState::Processing
        } else {
            JobState::Queued
        }
    } else if failed > 0 {
        if completed > 0 {
            JobState::PartiallyCompleted
        } else {
            JobState::Failed
        }
    } else if low > 0 {
        JobState::NeedsReview
    } else {
        JobState::Completed
    }
}

/// Recomputes and stores a job's state (unless cancelled); records a `state` event on change.
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
    let counts = tx
        .query_row(
            "SELECT
                COALESCE(SUM(state = 'queued'), 0),
                COALESCE(SUM(state = 'processing'), 0),
                COALESCE(SUM(state = 'completed'), 0),
                COALESCE(SUM(state = 'failed'), 0),
                COALESCE(SUM(state = 'completed' AND min_confidence IS NOT NULL
                             AND ?2 IS NOT NULL AND min_confidence < ?2), 0)
             FROM pages WHERE job_id = ?1",
            params![id, threshold],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    r.get::<_, i64>(1)? as usize,
                    r.get::<_, i64>(2)? as usize,
                    r.get::<_, i64>(3)? as usize,
                    r.get::<_, i64>(4)? as usize,
                ))
            },
        )
        .map_err(db_err)?;
    let next = derive_state(counts);
    tx.execute(
        "UPDATE jobs SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, next.as_str(), now],
    )
    .map_err(db_err)?;
    if next != current {
        event(
            tx,
            id,
            "state",
            &serde_json::json!({"from": current.as_str(), "to": next.as_str()}),
            now,
        )?;
    }
    Ok(next)
}

fn load_job(conn: &Connection, id: &str) -> Result<Option<JobRecord>> {
    let row = conn
        .query_row(
            "SELECT id, state, tag, priority, review_threshold, webhook_url, options, created_at,
                    updated_at FROM jobs WHERE id = ?1",
            [id],
            |r| {
                Ok(JobRecord {
                    id: r.get(0)?,
                    state: JobState::parse(&r.get::<_, String>(1)?).unwrap_or(JobState::Queued),
                    tag: r.get(2)?,
                    priority: r.get(3)?,
                    review_threshold: r.get::<_, Option<f64>>(4)?.map(|v| v as f32),
                    webhook_url: r.get(5)?,
                    options: r.get(6)?,
                    created_at_ms: r.get(7)?,
                    updated_at_ms: r.get(8)?,
                    pages_total: 0,
                    pages_done: 0,
                    pages_failed: 0,
                    documents: Vec::new(),
                })
            },
        )
        .optional()
        .map_err(db_err)?;
    let Some(mut job) = row else { return Ok(None) };
    let mut docs = conn
        .prepare("SELECT idx, name, path, sha256 FROM documents WHERE job_id = ?1 ORDER BY idx")
        .map_err(db_err)?;
    job.documents = docs
        .query_map([id], |r| {
            Ok(DocumentRecord {
                index: r.get::<_, i64>(0)? as usize,
                name: r.get(1)?,
                path: r.get(2)?,
                sha256: r.get(3)?,
                pages: Vec::new(),
            })
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let mut pages = conn
        .prepare(
            "SELECT doc, page, state, attempts, error, min_confidence, updated_at FROM pages
             WHERE job_id = ?1 ORDER BY doc, page",
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
                },
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (doc, page) = row.map_err(db_err)?;
        job.pages_total += 1;
        job.pages_done += usize::from(page.state == PageState::Completed);
        job.pages_failed += usize::from(page.state == PageState::Failed);
        if let Some(d) = job.documents.get_mut(doc) {
            d.pages.push(page);
        }
    }
    Ok(Some(job))
}

impl JobStore for SqliteStore {
    fn create_job(&self, job: &NewJob, now: i64, key_ttl_ms: i64) -> Result<Created> {
        let (created, id) = self.with_tx(|tx| {
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
                    return Ok((false, job_id));
                }
            }
            tx.execute(
                "INSERT INTO jobs (id, state, options, tag, webhook_url, priority,
                                   review_threshold, created_at, updated_at)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    job.id,
                    job.options,
                    job.tag,
                    job.webhook_url,
                    job.priority,
                    job.review_threshold.map(f64::from),
                    now
                ],
            )
            .map_err(db_err)?;
            for (i, d) in job.documents.iter().enumerate() {
                tx.execute(
                    "INSERT INTO documents (job_id, idx, name, path, sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![job.id, i as i64, d.name, d.path, d.sha256],
                )
                .map_err(db_err)?;
                for p in 0..d.pages {
                    tx.execute(
                        "INSERT INTO pages (job_id, doc, page, state, updated_at)
                         VALUES (?1, ?2, ?3, 'queued', ?4)",
                        params![job.id, i as i64, p as i64, now],
                    )
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
            let pages: usize = job.documents.iter().map(|d| d.pages).sum();
            event(
                tx,
                &job.id,
                "created",
                &serde_json::json!({"documents": job.documents.len(), "pages": pages}),
                now,
            )?;
            Ok((true, job.id.clone()))
        })?;
        let record = self
            .get_job(&id)?
            .ok_or_else(|| Error::Store(format!("job {id} vanished after creation")))?;
        Ok(if created {
            Created::New(record)
        } else {
            Created::Existing(record)
        })
    }

    fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        load_job(&conn, id)
    }

    fn list_jobs(
        &self,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let cursor: Option<(i64, String)> = match after {
            Some(a) => conn
                .query_row("SELECT created_at, id FROM jobs WHERE id = ?1", [a], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(db_err)?,
            None => None,
        };
        let (c_at, c_id) = cursor.unwrap_or((i64::MAX, String::new()));
        let mut stmt = conn
            .prepare(
                "SELECT id FROM jobs
                 WHERE (?1 IS NULL OR state = ?1)
                   AND (created_at < ?2 OR (created_at = ?2 AND id < ?3) OR ?4)
                 ORDER BY created_at DESC, id DESC LIMIT ?5",
            )
            .map_err(db_err)?;
        let ids = stmt
            .query_map(
                params![
                    state.map(JobState::as_str),
                    c_at,
                    c_id,
                    after.is_none(),
                    limit as i64
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(j) = load_job(&conn, &id)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    fn start_page(&self, p: &PageRef, now: i64) -> Result<bool> {
        self.with_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE pages SET state = 'processing', attempts = attempts + 1,
                            updated_at = ?4
                     WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND state = 'queued'
                       AND (SELECT state FROM jobs WHERE id = ?1) != 'cancelled'",
                    params![p.job_id, p.doc as i64, p.page as i64, now],
                )
                .map_err(db_err)?;
            if n == 1 {
                refresh_state(tx, &p.job_id, now)?;
            }
            Ok(n == 1)
        })
    }

    fn complete_page(
        &self,
        p: &PageRef,
        result_json: &str,
        min_confidence: Option<f32>,
        now: i64,
    ) -> Result<JobState> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE pages SET state = 'completed', result = ?4, min_confidence = ?5,
                        error = NULL, updated_at = ?6
                 WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND state != 'completed'",
                params![
                    p.job_id,
                    p.doc as i64,
                    p.page as i64,
                    result_json,
                    min_confidence.map(f64::from),
                    now
                ],
            )
            .map_err(db_err)?;
            refresh_state(tx, &p.job_id, now)
        })
    }

    fn fail_page(&self, p: &PageRef, reason: &str, retry: bool, now: i64) -> Result<JobState> {
        self.with_tx(|tx| {
            let next = if retry { "queued" } else { "failed" };
            tx.execute(
                "UPDATE pages SET state = ?4, error = ?5, updated_at = ?6
                 WHERE job_id = ?1 AND doc = ?2 AND page = ?3 AND state != 'completed'",
                params![p.job_id, p.doc as i64, p.page as i64, next, reason, now],
            )
            .map_err(db_err)?;
            event(
                tx,
                &p.job_id,
                if retry { "page_retry" } else { "page_failed" },
                &serde_json::json!({"document": p.doc, "page": p.page, "reason": reason}),
                now,
            )?;
            refresh_state(tx, &p.job_id, now)
        })
    }

    fn page_result(&self, p: &PageRef) -> Result<Option<String>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            "SELECT result FROM pages WHERE job_id = ?1 AND doc = ?2 AND page = ?3",
            params![p.job_id, p.doc as i64, p.page as i64],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(db_err)
    }

    fn cancel_job(&self, id: &str, now: i64) -> Result<bool> {
        self.with_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE jobs SET state = 'cancelled', updated_at = ?2
                     WHERE id = ?1 AND state IN ('queued', 'processing')",
                    params![id, now],
                )
                .map_err(db_err)?;
            if n == 1 {
                event(tx, id, "cancelled", &serde_json::json!({}), now)?;
            }
            Ok(n == 1)
        })
    }

    fn retry_failed(&self, id: &str, now: i64) -> Result<Vec<PageRef>> {
        self.with_tx(|tx| {
            let mut stmt = tx
                .prepare("SELECT doc, page FROM pages WHERE job_id = ?1 AND state = 'failed'")
                .map_err(db_err)?;
            let pages = stmt
                .query_map([id], |r| {
                    Ok(PageRef {
                        job_id: id.to_string(),
                        doc: r.get::<_, i64>(0)? as usize,
                        page: r.get::<_, i64>(1)? as usize,
                    })
                })
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            drop(stmt);
            if !pages.is_empty() {
                tx.execute(
                    "UPDATE pages SET state = 'queued', updated_at = ?2
                     WHERE job_id = ?1 AND state = 'failed'",
                    params![id, now],
                )
                .map_err(db_err)?;
                event(
                    tx,
                    id,
                    "retry",
                    &serde_json::json!({"pages": pages.len()}),
                    now,
                )?;
                refresh_state(tx, id, now)?;
            }
            Ok(pages)
        })
    }

    fn set_job_state(
        &self,
        id: &str,
        state: JobState,
        detail: serde_json::Value,
        now: i64,
    ) -> Result<()> {
        self.with_tx(|tx| {
            let current: Option<String> = tx
                .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            let Some(current) = current else {
                return Err(Error::Store(format!("no job {id}")));
            };
            tx.execute(
                "UPDATE jobs SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), now],
            )
            .map_err(db_err)?;
            event(
                tx,
                id,
                "state",
                &serde_json::json!({"from": current, "to": state.as_str(), "detail": detail}),
                now,
            )
        })
    }

    fn add_event(&self, id: &str, kind: &str, detail: serde_json::Value, now: i64) -> Result<()> {
        self.with_tx(|tx| event(tx, id, kind, &detail, now))
    }

    fn events(&self, id: &str) -> Result<Vec<Event>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare("SELECT seq, at, kind, detail FROM events WHERE job_id = ?1 ORDER BY seq")
            .map_err(db_err)?;
        stmt.query_map([id], |r| {
            Ok(Event {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                kind: r.get(2)?,
                detail: serde_json::from_str(&r.get::<_, String>(3)?)
                    .unwrap_or(serde_json::Value::Null),
            })
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)
    }

    fn recover(&self, now: i64) -> Result<Vec<PageRef>> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE pages SET state = 'queued', updated_at = ?1
                 WHERE state = 'processing'
                   AND job_id IN (SELECT id FROM jobs WHERE state IN ('queued', 'processing'))",
                [now],
            )
            .map_err(db_err)?;
            let mut stmt = tx
                .prepare(
                    "SELECT p.job_id, p.doc, p.page FROM pages p JOIN jobs j ON j.id = p.job_id
                     WHERE p.state = 'queued' AND j.state IN ('queued', 'processing')
                     ORDER BY j.created_at, j.id, p.doc, p.page",
                )
                .map_err(db_err)?;
            stmt.query_map([], |r| {
                Ok(PageRef {
                    job_id: r.get(0)?,
                    doc: r.get::<_, i64>(1)? as usize,
                    page: r.get::<_, i64>(2)? as usize,
                })
            })
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)
        })
    }

    fn add_delivery(&self, d: &Delivery, now: i64) -> Result<()> {
        self.add_delivery_impl(d, now)
    }

    fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<Delivery>> {
        self.query_deliveries(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE state = 'pending' AND next_at <= ?1
                 ORDER BY next_at LIMIT ?2"
            ),
            params![now, limit as i64],
        )
    }

    fn record_delivery(
        &self,
        id: &str,
        delivered: bool,
        status: Option<u16>,
        error: Option<&str>,
        next_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let state = match (delivered, next_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE deliveries SET state = ?2, attempts = attempts + 1, last_status = ?3,
                        last_error = ?4, next_at = ?5, updated_at = ?6 WHERE id = ?1",
                params![
                    id,
                    state,
                    status.map(i64::from),
                    error,
                    next_at.unwrap_or(now),
                    now
                ],
            )
            .map_err(db_err)?;
            let job: String = tx
                .query_row("SELECT job_id FROM deliveries WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .map_err(db_err)?;
            event(
                tx,
                &job,
                "webhook_attempt",
                &serde_json::json!({"id": id, "state": state, "status": status, "error": error}),
                now,
            )
        })
    }

    fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>> {
        self.query_deliveries(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE job_id = ?1 ORDER BY created_at"
            ),
            [job_id],
        )
    }

    fn resend_deliveries(&self, job_id: &str, now: i64) -> Result<usize> {
        self.with_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE deliveries SET state = 'pending', next_at = ?2, updated_at = ?2
                     WHERE job_id = ?1 AND state = 'failed'",
                    params![job_id, now],
                )
                .map_err(db_err)?;
            Ok(n)
        })
    }

    fn sweep(&self, before: i64) -> Result<Vec<String>> {
        self.with_tx(|tx| {
            let mut stmt = tx
                .prepare(
                    "SELECT d.path FROM documents d JOIN jobs j ON j.id = d.job_id
                     WHERE j.state NOT IN ('queued', 'processing') AND j.updated_at < ?1",
                )
                .map_err(db_err)?;
            let paths = stmt
                .query_map([before], |r| r.get::<_, String>(0))
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            drop(stmt);
            tx.execute(
                "DELETE FROM jobs WHERE state NOT IN ('queued', 'processing') AND updated_at < ?1",
                [before],
            )
            .map_err(db_err)?;
            Ok(paths)
        })
    }
}

fn delivery_row(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        job_id: r.get(1)?,
        url: r.get(2)?,
        event: r.get(3)?,
        payload: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get::<_, i64>(6)? as u32,
        last_status: r.get::<_, Option<i64>>(7)?.map(|s| s as u16),
        last_error: r.get(8)?,
        next_at_ms: r.get(9)?,
        updated_at_ms: r.get(10)?,
    })
}

const DELIVERY_COLS: &str = "id, job_id, url, event, payload, state, attempts, last_status, last_error, next_at, updated_at";

impl SqliteStore {
    fn query_deliveries(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Delivery>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(sql).map_err(db_err)?;
        stmt.query_map(p, delivery_row)
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)
    }
}

/// The webhook half of [`JobStore`] for SQLite (kept apart for readability).
impl SqliteStore {
    fn add_delivery_impl(&self, d: &Delivery, now: i64) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO deliveries (id, job_id, url, event, payload, state, attempts,
                                         next_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)",
                params![d.id, d.job_id, d.url, d.event, d.payload, now],
            )
            .map_err(db_err)?;
            event(
                tx,
                &d.job_id,
                "webhook_queued",
                &serde_json::json!({"id": d.id, "event": d.event}),
                now,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(id: &str, pages: &[usize], key: Option<(&str, &str)>) -> NewJob {
        NewJob {
            id: id.into(),
            options: "{}".into(),
            tag: Some("t".into()),
            webhook_url: None,
            priority: 0,
            review_threshold: Some(0.8),
            idempotency: key.map(|(k, h)| (k.into(), h.into())),
            documents: pages
                .iter()
                .enumerate()
                .map(|(i, &n)| NewDocument {
                    name: format!("d{i}.png"),
                    path: format!("/tmp/{id}-{i}"),
                    sha256: "00".into(),
                    pages: n,
                })
                .collect(),
        }
    }

    fn pref(job: &str, doc: usize, page: usize) -> PageRef {
        PageRef {
            job_id: job.into(),
            doc,
            page,
        }
    }

    #[test]
    fn derive_state_table() {
        use JobState::*;
        let cases = [
            ((2, 0, 0, 0, 0), Queued),
            ((1, 1, 0, 0, 0), Processing),
            ((1, 0, 1, 0, 0), Processing),
            ((0, 0, 2, 0, 0), Completed),
            ((0, 0, 2, 0, 1), NeedsReview),
            ((0, 0, 1, 1, 0), PartiallyCompleted),
            ((0, 0, 0, 2, 0), Failed),
        ];
        for (counts, want) in cases {
            assert_eq!(derive_state(counts), want, "{counts:?}");
        }
    }

    #[test]
    fn lifecycle_with_retry_review_and_events() {
        let s = SqliteStore::in_memory().unwrap();
        let Created::New(job) = s
            .create_job(&new_job("j1", &[2, 1], None), 10, 1000)
            .unwrap()
        else {
            panic!("new job expected")
        };
        assert_eq!(
            (job.state, job.pages_total, job.documents.len()),
            (JobState::Queued, 3, 2)
        );
        assert!(s.start_page(&pref("j1", 0, 0), 11).unwrap());
        assert!(
            !s.start_page(&pref("j1", 0, 0), 11).unwrap(),
            "already processing"
        );
        assert_eq!(
            s.complete_page(&pref("j1", 0, 0), "{\"a\":1}", Some(0.95), 12)
                .unwrap(),
            JobState::Processing
        );
        assert!(s.start_page(&pref("j1", 0, 1), 13).unwrap());
        assert_eq!(
            s.fail_page(&pref("j1", 0, 1), "boom", true, 14).unwrap(),
            JobState::Processing
        );
        assert!(s.start_page(&pref("j1", 0, 1), 15).unwrap());
        s.complete_page(&pref("j1", 0, 1), "{}", Some(0.5), 16)
            .unwrap();
        assert!(s.start_page(&pref("j1", 1, 0), 17).unwrap());
        // The 0.5 page is under the 0.8 review threshold.
        assert_eq!(
            s.complete_page(&pref("j1", 1, 0), "{}", None, 18).unwrap(),
            JobState::NeedsReview
        );
        let job = s.get_job("j1").unwrap().unwrap();
        assert_eq!((job.pages_done, job.documents[0].pages[1].attempts), (3, 2));
        assert_eq!(
            s.page_result(&pref("j1", 0, 0)).unwrap().unwrap(),
            "{\"a\":1}"
        );
        s.set_job_state(
            "j1",
            JobState::Completed,
            serde_json::json!({"approved": true}),
            20,
        )
        .unwrap();
        let kinds: Vec<String> = s
            .events("j1")
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds.first().map(String::as_str), Some("created"));
        assert!(kinds.iter().any(|k| k == "page_retry"));
        assert_eq!(
            kinds.iter().filter(|k| *k == "state").count(),
            3,
            "{kinds:?}"
        );
    }

    #[test]
    fn idempotency_same_different_and_expired() {
        let s = SqliteStore::in_memory().unwrap();
        let a = s
            .create_job(&new_job("a", &[1], Some(("k", "h1"))), 0, 100)
            .unwrap();
        assert!(matches!(a, Created::New(_)));
        let again = s
            .create_job(&new_job("b", &[1], Some(("k", "h1"))), 50, 100)
            .unwrap();
        assert!(matches!(&again, Created::Existing(j) if j.id == "a"));
        assert!(matches!(
            s.create_job(&new_job("c", &[1], Some(("k", "h2"))), 60, 100),
            Err(Error::IdempotencyConflict(_))
        ));
        // After the key expires it names a new job.
        let later = s
            .create_job(&new_job("d", &[1], Some(("k", "h2"))), 200, 100)
            .unwrap();
        assert!(matches!(&later, Created::New(j) if j.id == "d"));
        assert!(s.get_job("b").unwrap().is_none() && s.get_job("c").unwrap().is_none());
    }

    #[test]
    fn recovery_requeues_unfinished_and_keeps_finished() {
        let dir = std::env::temp_dir().join(format!("ocr-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("jobs.db");
        {
            let s = SqliteStore::open(&db).unwrap();
            s.create_job(&new_job("j", &[3], None), 0, 10).unwrap();
            s.create_job(&new_job("x", &[1], None), 1, 10).unwrap();
            s.start_page(&pref("j", 0, 0), 2).unwrap();
            s.complete_page(&pref("j", 0, 0), "done", None, 3).unwrap();
            s.start_page(&pref("j", 0, 1), 4).unwrap();
            s.cancel_job("x", 5).unwrap();
            // "Crash": the store is dropped with page 1 processing.
        }
        let s = SqliteStore::open(&db).unwrap();
        let pages = s.recover(10).unwrap();
        assert_eq!(pages, vec![pref("j", 0, 1), pref("j", 0, 2)]);
        assert_eq!(
            s.page_result(&pref("j", 0, 0)).unwrap().as_deref(),
            Some("done")
        );
        assert!(
            !s.start_page(&pref("x", 0, 0), 11).unwrap(),
            "cancelled jobs do not run"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn list_pages_with_a_cursor_and_sweep_final_jobs() {
        let s = SqliteStore::in_memory().unwrap();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            s.create_job(&new_job(id, &[1], None), i as i64, 10)
                .unwrap();
        }
        s.cancel_job("b", 10).unwrap();
        let first: Vec<String> = s
            .list_jobs(None, None, 2)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(first, ["d", "c"]);
        let next: Vec<String> = s
            .list_jobs(None, Some("c"), 2)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(next, ["b", "a"]);
        let cancelled = s.list_jobs(Some(JobState::Cancelled), None, 10).unwrap();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(
            s.sweep(5).unwrap(),
            Vec::<String>::new(),
            "b was updated at 10"
        );
        assert_eq!(s.sweep(11).unwrap(), vec!["/tmp/b-0".to_string()]);
        assert!(s.get_job("b").unwrap().is_none());
        assert!(
            s.get_job("a").unwrap().is_some(),
            "unfinished jobs are never swept"
        );
        assert!(s.events("b").unwrap().is_empty(), "events go with the job");
    }
}

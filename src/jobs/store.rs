//! The job store is the queue: jobs, their documents and pages, idempotency keys, the audit
//! trail, pauses and the webhook outbox, behind one async trait ([`JobStore`]) with two
//! backends: embedded SQLite ([`super::sqlite::SqliteStore`], the default) and PostgreSQL
//! ([`super::postgres::PgStore`]) for many replicas. [`open`] picks one from a URL.
//!
//! The contract every backend keeps (one test suite, `tests/store_contract.rs`, runs against
//! both):
//! - every write is one transaction; a job, its documents, pages and first event are created
//!   together, so an acknowledged job is complete in the store;
//! - **claims are leases**: [`JobStore::claim`] hands out runnable pages (interactive class
//!   first, then priority, then age) with an owner, a fresh token and an expiry; two claimers
//!   never get the same page. A worker renews its leases ([`JobStore::renew`]) while pages run;
//!   completing, failing or releasing a page checks its token, so a worker whose lease expired
//!   and was claimed again cannot overwrite the result (the write is fenced out and reported).
//!   Expired leases are rescued by the next claim of any replica: requeued, or failed once the
//!   attempts are spent (a page that kills its worker every time ends up dead-lettered);
//! - the job's state is derived from its pages in the same transaction as every page change
//!   ([`super::model::derive_state`]);
//! - **the outbox**: when a job reaches a final state (or review completes it, or it is
//!   cancelled), the webhook delivery row is written in that same transaction, so no event can be
//!   lost between the state change and its delivery; deliverers claim due rows with leases;
//! - paused bulk work (all, or one tag) stays queued and is not claimed; interactive work is
//!   never paused;
//! - **fair share between tenants**: within a class, a claim serves tenants round robin, least
//!   recently served first (`tenant_turns` remembers the order): one page of each tenant that
//!   has runnable work, then again, until the claim is full. Each tenant's pages come from an
//!   index seek (`pages(state, class, tenant, priority, queued_at)`), so a claim costs one seek
//!   per tenant, not a scan of the queue; within a tenant the order is priority, then age. One
//!   tenant's 10,000 queued pages delay another tenant's 10 by about 10 of its own;
//! - API keys are stored by SHA-256 hash (never the key) with their tenant, scopes and limits.
//!
//! Times are Unix milliseconds passed in by the caller (tests use explicit clocks).

use std::sync::Arc;

use async_trait::async_trait;

use super::events::JobEvent;
use super::model::{
    ApiKey, Backlog, Claim, ClaimedPage, Created, Delivery, DeliveryAttempt, Event, JobClass,
    JobRecord, JobState, JobSummary, NewJob, PageLease, PageState, Review,
};
use crate::error::{Error, Result};
use crate::pipeline::Page;

/// Storage of jobs and the page queue. Implementations are shared between tasks and replicas;
/// every method is async (SQLite runs its statements on tokio's blocking pool).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// The backend's name (`sqlite`, `postgres`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Waits until new work may be claimable (another replica announced some) or `max_wait`
    /// passes. Backends without notifications just wait.
    async fn wait_for_work(&self, max_wait: std::time::Duration) {
        tokio::time::sleep(max_wait).await;
    }

    /// Creates a job with its documents and queued pages, or returns the job an unexpired
    /// idempotency key already names. The same key with another payload is
    /// [`Error::IdempotencyConflict`].
    async fn create_job(&self, job: NewJob, now_ms: i64, key_ttl_ms: i64) -> Result<Created>;
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>>;
    /// A job without its page rows (its pages counted by state): what a caller that does not
    /// need every page reads, so a 100,000-page job costs a few rows.
    async fn job_summary(&self, id: &str) -> Result<Option<JobSummary>>;
    /// Summaries of jobs, newest first, of one tenant (None: every tenant), optionally of one
    /// state, after a cursor (the last id of a page); a cursor that is not a job of that
    /// tenant is [`unknown_cursor`].
    async fn list_jobs(
        &self,
        tenant: Option<&str>,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>>;

    /// Claims up to `claim.limit` runnable pages (see the module docs).
    async fn claim(&self, claim: &Claim) -> Result<Vec<ClaimedPage>>;
    /// Extends the leases of `owner` named by `tokens` to `until_ms`; returns the tokens it
    /// still holds (a token missing from the answer was lost: cancelled, or expired and
    /// claimed elsewhere).
    async fn renew(&self, owner: &str, tokens: &[String], until_ms: i64) -> Result<Vec<String>>;
    /// Stores a page's result with its `completed` state. `review` names why the page needs a
    /// person whatever its confidence (an extracted field failed its check or is under the
    /// job's threshold): the job then ends in `needs_review`. `None` when the lease was lost
    /// (the write is fenced out); else the job's state after it.
    async fn complete_page(
        &self,
        lease: &PageLease,
        result: &Page,
        review: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<JobState>>;
    /// Records a failed attempt: back to `queued` at `retry_at_ms`, or `failed` for good when
    /// None. `None` when the lease was lost; else the job's state after it.
    async fn fail_page(
        &self,
        lease: &PageLease,
        reason: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Option<JobState>>;
    /// Gives a claimed page back without counting the attempt (back-pressure, shutdown): it is
    /// runnable again at `run_at_ms`. False when the lease was lost.
    async fn release_page(&self, lease: &PageLease, run_at_ms: i64, now_ms: i64) -> Result<bool>;
    /// Records that a claimed page starts running (decode and model): from now on a lost
    /// worker charges it the attempt ([`Rescue`]). False when the lease was lost.
    async fn start_page(&self, lease: &PageLease) -> Result<bool>;

    /// The stored results of at most `limit` of a document's pages from page `from`, in
    /// job-page order (None: not completed). Callers read a large document in such slices.
    async fn page_results(
        &self,
        job_id: &str,
        doc: usize,
        from: usize,
        limit: usize,
    ) -> Result<Vec<Option<Page>>>;
    /// Cancels a job that is not final (its unfinished pages are dropped and their leases
    /// revoked); returns whether it did.
    async fn cancel_job(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// Turns failed pages of a job back to queued (attempts kept); returns how many.
    async fn retry_failed(&self, id: &str, now_ms: i64) -> Result<usize>;
    /// Completes a `needs_review` job with a review (recorded in the events, webhook queued);
    /// false when the job is not in review.
    async fn complete_review(&self, id: &str, review: &Review, now_ms: i64) -> Result<bool>;
    async fn add_event(&self, id: &str, event: &JobEvent, now_ms: i64) -> Result<()>;
    async fn events(&self, id: &str) -> Result<Vec<Event>>;
    /// Deletes at most `limit` of the final jobs last updated before `before_ms` and the
    /// `needs_review` jobs (which wait for a reviewer, but not for ever) last updated before
    /// `review_before_ms`; returns how many it deleted and their owned document locations.
    /// Callers sweep in such batches until one comes back short, so no transaction holds the
    /// store for a whole backlog of expired jobs.
    async fn sweep(
        &self,
        before_ms: i64,
        review_before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<String>)>;

    /// Pauses (or resumes) bulk work: `None` is everything, `Some(tag)` one tag.
    async fn set_paused(&self, tag: Option<&str>, paused: bool, now_ms: i64) -> Result<()>;
    /// The paused scopes: `*` for everything, else tags.
    async fn paused(&self) -> Result<Vec<String>>;
    /// Queued and processing pages of a class.
    async fn backlog(&self, class: JobClass) -> Result<Backlog>;
    /// Pages of stored jobs by state and tag (for metrics).
    async fn pages_by_state_and_tag(&self) -> Result<Vec<(PageState, Option<String>, u64)>>;

    /// Claims due pending deliveries for `owner` until `lease_until_ms`.
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: usize,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<Delivery>>;
    /// Records an attempt of a delivery `owner` claimed; false when the claim was lost.
    async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        attempt: &DeliveryAttempt,
        now_ms: i64,
    ) -> Result<bool>;
    async fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>>;
    /// Makes a job's failed deliveries pending again; returns how many.
    async fn resend_deliveries(&self, job_id: &str, now_ms: i64) -> Result<usize>;

    /// Stores a new key; a name already used (even by a revoked key) is `InvalidOption`.
    async fn create_key(&self, key: &ApiKey) -> Result<()>;
    /// Every key (revoked ones too), by name.
    async fn keys(&self) -> Result<Vec<ApiKey>>;
    /// Revokes the active key `name`; false when there is none.
    async fn revoke_key(&self, name: &str, now_ms: i64) -> Result<bool>;
    /// The key with this hash (revoked or not: the caller checks).
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// How many keys the store has ever had (revoked ones too) and how many are not revoked.
    /// Rows of keys are never deleted, so `total` never goes down: once it is above zero,
    /// `--auth auto` requires a key for good.
    async fn key_counts(&self) -> Result<KeyCounts>;
    /// Queued and processing pages of the tenant's jobs (both classes).
    async fn tenant_backlog(&self, tenant: &str) -> Result<u64>;
    /// A tenant's webhook signing secrets (`whsec_…` or raw text): the current one first, then
    /// the one it replaced (receivers accept either while they rotate); empty when the tenant
    /// has none. Kept in plain text: signing needs them.
    async fn tenant_webhook_secrets(&self, tenant: &str) -> Result<Vec<String>>;
    /// Sets a tenant's webhook secret; the one it replaces keeps signing beside it.
    async fn set_tenant_webhook_secret(
        &self,
        tenant: &str,
        secret: &str,
        now_ms: i64,
    ) -> Result<()>;
    /// A tenant's stored jobs (any state) and the bytes of the documents stored for them
    /// (owned ones; documents stored before sizes were recorded count 0): its storage quota.
    async fn tenant_usage(&self, tenant: &str) -> Result<(u64, u64)>;
    /// A job's state alone (None: no such job): what a waiting caller polls.
    async fn job_state(&self, id: &str) -> Result<Option<JobState>>;
    /// The tenant of a job (None: no such job).
    async fn job_tenant(&self, id: &str) -> Result<Option<String>>;
    /// The store's own wall clock in Unix milliseconds, for a store that replicas on other
    /// machines share (PostgreSQL); None when the processes using it share this machine's
    /// clock (SQLite). See [`super::clock`].
    async fn clock_ms(&self) -> Result<Option<i64>> {
        Ok(None)
    }
}

/// What rescuing an expired lease does to its page, in both backends. A lost worker (a crash,
/// a kill, a lost machine) charges the attempt only to a page it had started running
/// ([`JobStore::start_page`]): that page may be what killed it, so it is also marked suspect
/// and runs alone from then on; a page that was only claimed, waiting its turn in the lost
/// process, gets its attempt back. So a poison page dead-letters itself after
/// `max_attempts` crashes, and the pages claimed beside it are not spent with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescue {
    pub state: &'static str,
    pub attempts: i64,
    pub reason: String,
    /// The attempts are spent: the page fails for good (`page_failed`, else `lease_expired`).
    pub spent: bool,
    /// Whether the attempt was counted (the page had started).
    pub charged: bool,
}

impl Rescue {
    pub fn of(attempts: i64, started: bool, max_attempts: u32) -> Self {
        if !started {
            return Self {
                state: "queued",
                attempts: (attempts - 1).max(0),
                reason: "lease expired before the page started (worker lost); the attempt is \
                         not counted"
                    .into(),
                spent: false,
                charged: false,
            };
        }
        let spent = attempts >= i64::from(max_attempts);
        Self {
            state: if spent { "failed" } else { "queued" },
            attempts,
            reason: format!(
                "lease expired while the page ran (worker lost) after attempt {attempts}"
            ),
            spent,
            charged: true,
        }
    }

    /// The job event it writes for page `page` of document `document`.
    pub fn event(&self, document: usize, page: usize) -> crate::jobs::events::JobEvent {
        use crate::jobs::events::JobEvent;
        let reason = self.reason.clone();
        if self.spent {
            JobEvent::PageFailed {
                document,
                page,
                reason,
                charged: Some(self.charged),
            }
        } else {
            JobEvent::LeaseExpired {
                document,
                page,
                reason,
                charged: self.charged,
            }
        }
    }
}

/// Fair share between tenants, the one rule both stores' claims follow: `queues` are the
/// runnable pages of each tenant, tenants least recently served first, each queue in its own
/// claim order (priority, then age). One page of each tenant per round until `limit` pages are
/// taken or every queue is empty. Returns the pages in the order taken and the indices of the
/// tenants served, in the order they were first served (the store moves them to the back of
/// the turns in that order).
pub fn fair_share<T>(
    mut queues: Vec<std::collections::VecDeque<T>>,
    limit: usize,
) -> (Vec<T>, Vec<usize>) {
    let mut taken = Vec::with_capacity(limit.min(queues.iter().map(|q| q.len()).sum()));
    let mut served = Vec::new();
    while taken.len() < limit && queues.iter().any(|q| !q.is_empty()) {
        for (i, q) in queues.iter_mut().enumerate() {
            if taken.len() >= limit {
                break;
            }
            if let Some(page) = q.pop_front() {
                taken.push(page);
                if !served.contains(&i) {
                    served.push(i);
                }
            }
        }
    }
    (taken, served)
}

/// The answer to a listing cursor that names no job the caller can see (it never silently
/// restarts from the newest job).
pub fn unknown_cursor(cursor: &str) -> Error {
    Error::InvalidOption(format!(
        "unknown cursor {cursor:?}: pass the next_cursor of a listing, or none to start over"
    ))
}

/// What [`JobStore::key_counts`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCounts {
    pub total: u64,
    pub active: u64,
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing) or `postgres://…` /
/// `postgresql://…`. Migrations run on open.
pub async fn open(url: &str) -> Result<Arc<dyn JobStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = std::path::PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        let store = tokio::task::spawn_blocking(move || super::sqlite::SqliteStore::open(&path))
            .await
            .map_err(|e| Error::Runtime(format!("store open task: {e}")))??;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(super::postgres::PgStore::connect(url).await?));
    }
    Err(Error::InvalidOption(format!(
        "--database-url must be sqlite://PATH or postgres://..., got {:?}",
        url.split(':').next().unwrap_or("")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Each row: the tenants' queues (in turn order), the limit, the pages taken and the
    /// tenants served.
    #[test]
    fn fair_share_takes_one_page_per_tenant_per_round() {
        type Case = (
            &'static [&'static [&'static str]],
            usize,
            &'static [&'static str],
            &'static [usize],
        );
        let cases: &[Case] = &[
            // Nothing runnable.
            (&[], 5, &[], &[]),
            (&[&[], &[]], 5, &[], &[]),
            // One tenant takes what it has, up to the limit.
            (&[&["a1", "a2", "a3"]], 2, &["a1", "a2"], &[0]),
            // Rounds: one of each, in turn order, until the limit.
            (
                &[&["a1", "a2", "a3"], &["b1"]],
                3,
                &["a1", "b1", "a2"],
                &[0, 1],
            ),
            (
                &[&["a1", "a2"], &["b1", "b2"], &["c1"]],
                4,
                &["a1", "b1", "c1", "a2"],
                &[0, 1, 2],
            ),
            // A big tenant behind a small one still gets the rest once the small one is empty.
            (
                &[&["b1"], &["a1", "a2", "a3", "a4"]],
                10,
                &["b1", "a1", "a2", "a3", "a4"],
                &[0, 1],
            ),
            // An empty queue is skipped and not counted as served.
            (
                &[&[], &["b1", "b2"], &["c1"]],
                3,
                &["b1", "c1", "b2"],
                &[1, 2],
            ),
            // The limit can stop a round part way: the last tenant waits its turn.
            (&[&["a1"], &["b1"], &["c1"]], 2, &["a1", "b1"], &[0, 1]),
            // A limit of 0 takes nothing.
            (&[&["a1"]], 0, &[], &[]),
        ];
        for (queues, limit, pages, served) in cases {
            let q: Vec<VecDeque<&str>> =
                queues.iter().map(|q| q.iter().copied().collect()).collect();
            let (got, who) = fair_share(q, *limit);
            assert_eq!(
                (got.as_slice(), who.as_slice()),
                (*pages, *served),
                "{queues:?} limit {limit}"
            );
        }
    }
}

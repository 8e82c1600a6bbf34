//! The job store's typed records: what crosses the [`super::store::JobStore`] boundary. These
//! are storage records, not API response types (`api/dto.rs` maps one to the other), and they
//! hold no JSON strings: options, page results and delivery outcomes are typed here and
//! serialised only inside a store implementation.
//!
//! Pure rules shared by every backend also live here: [`derive_state`] (a job's state from its
//! page counts) and [`webhook_event`] (the outbox payload of a job state change), so SQLite and
//! PostgreSQL cannot disagree on them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::OcrOptions;
use crate::pipeline::Page;

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
    /// Claimed by a worker under a lease.
    Processing,
    Completed,
    /// Failed for good (retries exhausted or a permanent error): dead-lettered, retryable by
    /// hand.
    Failed,
    /// Its job was cancelled before the page finished.
    Cancelled,
}

impl PageState {
    pub const ALL: [PageState; 5] = [
        PageState::Queued,
        PageState::Processing,
        PageState::Completed,
        PageState::Failed,
        PageState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Queued => "queued",
            PageState::Processing => "processing",
            PageState::Completed => "completed",
            PageState::Failed => "failed",
            PageState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Which scheduler class a job's pages run in, and the order in which pages are claimed:
/// interactive (hybrid `/v1/ocr`, a caller may be waiting) before bulk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobClass {
    Interactive,
    Bulk,
}

impl JobClass {
    pub const ALL: [JobClass; 2] = [JobClass::Interactive, JobClass::Bulk];

    /// The value stored (and sorted on): interactive first.
    pub fn rank(self) -> i64 {
        match self {
            JobClass::Interactive => 0,
            JobClass::Bulk => 1,
        }
    }

    pub fn from_rank(r: i64) -> Self {
        if r == 0 {
            JobClass::Interactive
        } else {
            JobClass::Bulk
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobClass::Interactive => "interactive",
            JobClass::Bulk => "bulk",
        }
    }
}

/// The key of profile `name` serving `model`: what a job is pinned to and a replica offers.
pub fn profile_key(name: &str, model: crate::engine::ModelKind) -> String {
    format!("{name}/{}", model.name())
}

/// What a job's pages run with: the overrides of the server's options that the job asked for,
/// and the job's own. Stored as one flat JSON object (the overrides' fields first, under the
/// names they always had).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// The pipeline options, page selection and extraction the job asked for, and its profile
    /// and model set, resolved when the job is created (the creating replica's default profile
    /// when the request named none; `None` only in jobs stored before profiles travelled with
    /// jobs): every page of the job runs on that model set, on a replica whose profile of that
    /// name serves it (see [`JobOptions::profile_key`]).
    #[serde(flatten)]
    pub overrides: crate::overrides::Overrides,
    /// A two-pass job: what the first (synchronous) pass answered, so the result can say which
    /// fields this pass changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_pass: Option<FirstPass>,
    /// The fraction of completed pages sent to review whatever their confidence (random
    /// sampling as a review trigger; which pages is a hash of the job id and the page, so a
    /// page retried or claimed by another replica is sampled the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_sample_rate: Option<f32>,
}

/// The first pass of a two-pass request, kept with its follow-up job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstPass {
    /// The profile that answered synchronously.
    pub profile: String,
    pub extractions: Vec<crate::extract::Extraction>,
}

impl JobOptions {
    /// What a replica must serve to run the job's pages: `NAME/MODEL` (the profile's name and
    /// model set), the key stored with each page and matched by the claim
    /// ([`Claim::profiles`]). None for a job stored before profiles travelled with jobs: any
    /// replica may claim it.
    pub fn profile_key(&self) -> Option<String> {
        let name = self.overrides.profile.as_deref()?;
        Some(match self.overrides.model {
            Some(m) => profile_key(name, m),
            None => name.to_string(),
        })
    }

    pub fn apply(&self, base: &OcrOptions) -> OcrOptions {
        self.overrides.apply(base)
    }
}

/// A document of a new job: where its bytes are and which of its pages the job runs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    pub name: String,
    /// Where the bytes are (a path or an object-store location; opaque to the store).
    pub location: String,
    pub sha256: String,
    /// The 0-based source page index of each job page, in order.
    pub source_pages: Vec<usize>,
    /// Stored for this job (deleted with it), as opposed to a referenced document the job
    /// only reads.
    pub owned: bool,
    /// Its size: what an owned document counts against its tenant's storage quota.
    pub bytes: u64,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: String,
    pub options: JobOptions,
    pub class: JobClass,
    pub tag: Option<String>,
    pub webhook_url: Option<String>,
    pub priority: i32,
    pub review_threshold: Option<f32>,
    /// `(Idempotency-Key, hash of the payload)` (the service scopes the key to the tenant).
    pub idempotency: Option<(String, String)>,
    pub documents: Vec<NewDocument>,
    /// The tenant the job belongs to ("" on a server without keys).
    pub tenant: String,
    /// The key that created it (the `actor` of its `created` event).
    pub actor: Option<String>,
}

impl NewJob {
    pub fn page_count(&self) -> usize {
        self.documents.iter().map(|d| d.source_pages.len()).sum()
    }
}

/// Page identity: job page `page` of document `doc`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageRef {
    pub job_id: String,
    pub doc: usize,
    pub page: usize,
}

/// A claimed page and the token that fences its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLease {
    pub page: PageRef,
    pub token: String,
}

/// What [`super::store::JobStore::claim`] hands a worker: the lease and everything needed to
/// compute the page, so the hot path never loads the whole job.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedPage {
    pub lease: PageLease,
    /// Attempts including this one.
    pub attempts: u32,
    pub source_index: usize,
    pub location: String,
    pub options: JobOptions,
    pub class: JobClass,
    pub tag: Option<String>,
    /// When the page was queued (its job's creation), Unix ms.
    pub queued_at_ms: i64,
    /// The job's review threshold (a page under it is a low-confidence page).
    pub review_threshold: Option<f32>,
    /// A worker was lost while it ran this page before (a crash, a kill, a lost machine): the
    /// page may be what killed it, so it runs alone ([`super::runner`]).
    pub suspect: bool,
}

/// A claim request: up to `limit` runnable pages of `class` for `owner`, leased until
/// `lease_until_ms`. Pages whose lease expired are rescued first (requeued, or failed once
/// `max_attempts` were spent).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub owner: String,
    /// The profile keys this replica serves ([`profile_key`]): only pages of jobs pinned to one
    /// of them (or to none) are claimed, so a replica never takes a page it cannot run.
    pub profiles: Vec<String>,
    pub class: JobClass,
    pub limit: usize,
    pub now_ms: i64,
    pub lease_until_ms: i64,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PageRecord {
    pub page: usize,
    pub source_index: usize,
    pub state: PageState,
    pub attempts: u32,
    pub error: Option<String>,
    /// Lowest line confidence on the page (None until completed or without lines).
    pub min_confidence: Option<f32>,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    pub index: usize,
    pub name: String,
    pub location: String,
    pub sha256: String,
    pub pages: Vec<PageRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub class: JobClass,
    pub tag: Option<String>,
    pub priority: i32,
    pub review_threshold: Option<f32>,
    pub webhook_url: Option<String>,
    pub options: JobOptions,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub documents: Vec<DocumentRecord>,
    /// The tenant the job belongs to ("" for none).
    pub tenant: String,
}

/// A job without its page rows: the head, each document's page count, and the pages counted by
/// state. What listings and the streamed result read, so neither holds a 100,000-page job's
/// page rows (`job.documents[_].pages` is empty here; `doc_pages` has the counts).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job: JobRecord,
    /// Pages of each document, by document index.
    pub doc_pages: Vec<usize>,
    /// Pages by state (`low_confidence` is not counted here).
    pub counts: PageCounts,
    /// The lowest line confidence over the job's pages.
    pub min_confidence: Option<f32>,
}

impl JobSummary {
    /// A summary of `job` (whose documents' page rows are ignored) with no pages counted yet.
    pub fn new(job: JobRecord) -> Self {
        JobSummary {
            doc_pages: vec![0; job.documents.len()],
            job,
            counts: PageCounts::default(),
            min_confidence: None,
        }
    }

    /// Counts `n` pages of document `doc` in `state`, whose lowest confidence is `min`.
    pub fn add(&mut self, doc: usize, state: PageState, n: usize, min: Option<f32>) {
        if let Some(c) = self.doc_pages.get_mut(doc) {
            *c += n;
        }
        let c = &mut self.counts;
        match state {
            PageState::Queued => c.queued += n,
            PageState::Processing => c.processing += n,
            PageState::Completed => c.completed += n,
            PageState::Failed => c.failed += n,
            PageState::Cancelled => c.cancelled += n,
        }
        self.min_confidence = match (self.min_confidence, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn pages_total(&self) -> usize {
        self.doc_pages.iter().sum()
    }
}

impl JobRecord {
    pub fn pages(&self) -> impl Iterator<Item = &PageRecord> {
        self.documents.iter().flat_map(|d| d.pages.iter())
    }
    pub fn pages_total(&self) -> usize {
        self.pages().count()
    }
    pub fn pages_in(&self, state: PageState) -> usize {
        self.pages().filter(|p| p.state == state).count()
    }
}

/// One transition or action on a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Attempts exhausted; kept and re-sendable.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One webhook event for one job and its delivery attempts (an outbox row).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The `webhook-id` (stable across retries, so receivers can deduplicate).
    pub id: String,
    pub job_id: String,
    pub url: String,
    pub event: String,
    /// The exact body sent on every attempt (so one id never has two bodies).
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// When to try again; None with `delivered == false` fails the delivery for good.
    pub retry_at_ms: Option<i64>,
}

/// What `create_job` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(JobRecord),
    /// The idempotency key was seen with the same payload: the earlier job.
    Existing(JobRecord),
}

/// Queued and running pages of one class (the backlog), for admission and `/v1/queue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Backlog {
    pub queued: u64,
    pub processing: u64,
    /// Unix ms of the oldest queued page, if any.
    pub oldest_queued_ms: Option<i64>,
}

/// Page counts of one job by state, and how many completed pages are under its review
/// threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub queued: usize,
    pub processing: usize,
    pub completed: usize,
    pub failed: usize,
    pub low_confidence: usize,
    pub cancelled: usize,
}

/// A job's state from its pages: all completed → completed (needs_review when a page's lowest
/// line confidence is under the threshold); nothing pending and some failed → partially
/// completed (failed if none completed); anything started → processing; else queued.
pub fn derive_state(c: PageCounts) -> JobState {
    if c.queued + c.processing > 0 {
        if c.processing + c.completed + c.failed > 0 {
            JobState::Processing
        } else {
            JobState::Queued
        }
    } else if c.failed > 0 {
        if c.completed > 0 {
            JobState::PartiallyCompleted
        } else {
            JobState::Failed
        }
    } else if c.low_confidence > 0 {
        JobState::NeedsReview
    } else {
        JobState::Completed
    }
}

/// Why a completed page needs a person whatever its lines' confidence: its extraction's failed
/// checks and its fields under `threshold`, each naming the field (`mrz date_of_birth: check
/// digit`, `receipt total: confidence 0.41 under 0.80`). None when nothing is wrong or the job
/// extracts nothing.
pub fn review_reason(
    extract: Option<crate::extract::Extract>,
    page: &Page,
    threshold: Option<f32>,
) -> Option<String> {
    let e = crate::extract::extract_page(extract?, page, 1)?;
    let kind = e.kind.as_str();
    let mut reasons: Vec<String> = e.problems.iter().map(|p| format!("{kind} {p}")).collect();
    if let Some(t) = threshold {
        for name in e.fields_under(t) {
            let c = e.fields.get(&name).map_or(0.0, |f| f.confidence);
            reasons.push(format!("{kind} {name}: confidence {c:.2} under {t:.2}"));
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Whether random sampling at `rate` sends this page to review: a hash of the job id, document
/// and page mapped to [0, 1) (stable across retries and replicas) under `rate`.
pub fn sampled_for_review(rate: Option<f32>, job_id: &str, doc: usize, page: usize) -> bool {
    let Some(rate) = rate.filter(|r| *r > 0.0) else {
        return false;
    };
    let mut h = Sha256::new();
    h.update(job_id.as_bytes());
    h.update(doc.to_le_bytes());
    h.update(page.to_le_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().unwrap_or_default());
    ((x >> 11) as f64 / (1u64 << 53) as f64) < f64::from(rate)
}

/// The lowest line confidence of a page (None without lines).
pub fn min_confidence(page: &Page) -> Option<f32> {
    page.lines
        .iter()
        .map(|l| l.confidence)
        .min_by(|a, b| a.total_cmp(b))
}

/// The webhook event (`job.<state>`, or `job.reviewed` when a review completes a job in
/// `needs_review`) and its body for a job that went from `from` to `state`, or None for states
/// that send nothing. The body is built once, stored in the outbox row and sent as is on every
/// attempt; a review's names its reviewer.
pub fn webhook_event(
    job_id: &str,
    tag: Option<&str>,
    (from, state): (JobState, JobState),
    counts: PageCounts,
    reviewer: Option<&str>,
    now_ms: i64,
) -> Option<(String, String)> {
    if !state.is_final() {
        return None;
    }
    let reviewed = from == JobState::NeedsReview && state == JobState::Completed;
    let event = if reviewed {
        "job.reviewed".to_string()
    } else {
        format!("job.{}", state.as_str())
    };
    let total =
        counts.queued + counts.processing + counts.completed + counts.failed + counts.cancelled;
    let body = serde_json::json!({
        "type": event,
        "timestamp": now_ms / 1000,
        "data": {"id": job_id, "state": state.as_str(), "tag": tag,
                 "pages_total": total, "pages_done": counts.completed,
                 "pages_failed": counts.failed},
    });
    let mut body = body;
    if reviewed {
        body["data"]["reviewer"] = serde_json::Value::from(reviewer);
    }
    Some((event, body.to_string()))
}

/// An API key as stored: only its SHA-256 hash, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Unique (also after revocation).
    pub name: String,
    /// Jobs belong to the tenant; keys of one tenant share jobs.
    pub tenant: String,
    /// Lowercase hex SHA-256 of the key.
    pub hash: String,
    /// Of "ocr", "jobs", "review", "admin".
    pub scopes: Vec<String>,
    /// Request token bucket: refill rate per second and capacity.
    pub rate_per_s: Option<f64>,
    pub burst: Option<u32>,
    /// Page token bucket.
    pub pages_per_s: Option<f64>,
    pub page_burst: Option<u32>,
    /// Quota of queued and processing pages of the tenant.
    pub max_queued_pages: Option<u64>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// When the key stops working (Unix ms, the store's clock); None: never.
    pub expires_ms: Option<i64>,
}

impl ApiKey {
    /// An active key with these scopes and no rate limits or quota.
    pub fn new(name: &str, tenant: &str, hash: String, scopes: &[&str], created_ms: i64) -> Self {
        Self {
            name: name.to_string(),
            tenant: tenant.to_string(),
            hash,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            rate_per_s: None,
            burst: None,
            pages_per_s: None,
            page_burst: None,
            max_queued_pages: None,
            created_ms,
            revoked_ms: None,
            expires_ms: None,
        }
    }

    /// Whether the key opens the server at `now_ms`: not revoked, not expired.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A correction made in review: of one line (its box and words stay attached, so the JSON
/// result, hOCR and the searchable PDF carry it), or of a page's whole text (the text outputs
/// only).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    pub document: usize,
    pub page: usize,
    /// The line (0-based, in the page's `lines`); absent: the page's whole text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub text: String,
    /// The text before the correction, recorded by the server (what a client sends here is
    /// ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// A review: approve as is, or correct pages' text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Review {
    pub approve: bool,
    pub corrections: Vec<Correction>,
    pub reviewer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's options are stored as the flat object they always were (the shape written by
    /// every job stored before the overrides became one type, key order included: the
    /// idempotency payload hash is taken over these bytes), and read back whole.
    #[test]
    fn stored_job_options_keep_their_json_shape() {
        let stored = r#"{"det_limit_side":960,"classify":true,"min_confidence":0.5,"pages":"1-3","extract":"auto","profile":"fast","model":"v6","first_pass":{"profile":"fast","extractions":[]},"review_sample_rate":0.25}"#;
        let o: JobOptions = serde_json::from_str(stored).unwrap();
        assert_eq!(o.overrides.det_limit_side, Some(960));
        assert_eq!(o.overrides.model, Some(crate::engine::ModelKind::V6));
        assert_eq!(o.overrides.extract, Some(crate::extract::Extract::Auto));
        assert_eq!(o.review_sample_rate, Some(0.25));
        assert_eq!(o.first_pass.as_ref().unwrap().profile, "fast");
        assert_eq!(serde_json::to_string(&o).unwrap(), stored);
        assert_eq!(serde_json::to_string(&JobOptions::default()).unwrap(), "{}");
        let old: JobOptions = serde_json::from_str(r#"{"classify":false}"#).unwrap();
        assert_eq!(old.overrides.classify, Some(false));
        assert_eq!(old.profile_key(), None);
    }

    #[test]
    fn derive_state_table() {
        use JobState::*;
        let c = |queued, processing, completed, failed, low_confidence| PageCounts {
            queued,
            processing,
            completed,
            failed,
            low_confidence,
            cancelled: 0,
        };
        let cases = [
            (c(2, 0, 0, 0, 0), Queued),
            (c(1, 1, 0, 0, 0), Processing),
            (c(1, 0, 1, 0, 0), Processing),
            (c(0, 0, 2, 0, 0), Completed),
            (c(0, 0, 2, 0, 1), NeedsReview),
            (c(0, 0, 1, 1, 0), PartiallyCompleted),
            (c(0, 0, 0, 2, 0), Failed),
        ];
        for (counts, want) in cases {
            assert_eq!(derive_state(counts), want, "{counts:?}");
        }
    }

    #[test]
    fn webhook_events_only_for_final_states() {
        let counts = PageCounts {
            completed: 2,
            failed: 1,
            ..PageCounts::default()
        };
        assert!(
            webhook_event(
                "j",
                None,
                (JobState::Queued, JobState::Processing),
                counts,
                None,
                5000
            )
            .is_none()
        );
        let (event, body) = webhook_event(
            "j",
            Some("t"),
            (JobState::Processing, JobState::PartiallyCompleted),
            counts,
            None,
            5000,
        )
        .unwrap();
        assert_eq!(event, "job.partially_completed");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["pages_total"], 3);
        assert_eq!(v["data"]["tag"], "t");
        assert_eq!(v["timestamp"], 5);
        // A review completing a job is its own event, naming the reviewer.
        let (event, body) = webhook_event(
            "j",
            None,
            (JobState::NeedsReview, JobState::Completed),
            counts,
            Some("ada"),
            5000,
        )
        .unwrap();
        assert_eq!(event, "job.reviewed");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["data"]["state"].as_str(), v["data"]["reviewer"].as_str()),
            (Some("completed"), Some("ada"))
        );
        let (event, _) = webhook_event(
            "j",
            None,
            (JobState::Processing, JobState::Completed),
            counts,
            None,
            5000,
        )
        .unwrap();
        assert_eq!(event, "job.completed");
    }

    #[test]
    fn review_sampling_takes_about_its_rate_and_the_same_pages_every_time() {
        let hits = |rate: f32| {
            (0..2000)
                .filter(|p| sampled_for_review(Some(rate), "job-1", 0, *p))
                .count()
        };
        assert_eq!(hits(0.0), 0);
        assert_eq!(hits(1.0), 2000);
        let tenth = hits(0.1);
        assert!((150..=250).contains(&tenth), "{tenth} of 2000 at 0.1");
        assert!(!sampled_for_review(None, "job-1", 0, 0));
        let again: Vec<bool> = (0..50)
            .map(|p| sampled_for_review(Some(0.5), "job-2", 1, p))
            .collect();
        let once_more: Vec<bool> = (0..50)
            .map(|p| sampled_for_review(Some(0.5), "job-2", 1, p))
            .collect();
        assert_eq!(again, once_more);
    }
}

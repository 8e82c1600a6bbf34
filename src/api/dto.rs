//! Response types of the jobs API, mapped from the store's records (which are not API types:
//! a storage column can change without changing the API, and internal fields such as document
//! locations or webhook URLs never leak).

use serde::Serialize;

use crate::jobs::model::{
    Delivery, DeliveryState, DocumentRecord, Event, JobClass, JobRecord, JobState, JobSummary,
    PageRecord, PageState,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageView {
    pub page: usize,
    /// The page of the source document (1-based), after the job's page selection.
    pub source_page: usize,
    pub state: PageState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Lowest line confidence on the page (absent until completed or without lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
    pub updated_at_ms: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub index: usize,
    pub name: String,
    pub sha256: String,
    pub pages: Vec<PageView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` (stable across retries, so receivers can deduplicate).
    pub id: String,
    pub event: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub state: JobState,
    /// `interactive` (hybrid `/v1/ocr`) or `bulk`.
    pub class: JobClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_threshold: Option<f32>,
    pub pages_total: usize,
    pub pages_done: usize,
    pub pages_failed: usize,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub documents: Vec<DocumentView>,
    /// Pages finished (completed or failed for good) over pages in all.
    pub progress: f64,
    /// Seconds until the job is likely finished (null when final).
    pub eta_s: Option<u64>,
    /// Webhook events of the job and their delivery attempts.
    pub webhook_deliveries: Vec<DeliveryView>,
}

fn page_view(p: &PageRecord) -> PageView {
    PageView {
        page: p.page,
        source_page: p.source_index + 1,
        state: p.state,
        attempts: p.attempts,
        error: p.error.clone(),
        min_confidence: p.min_confidence,
        updated_at_ms: p.updated_at_ms,
    }
}

fn document_view(d: &DocumentRecord) -> DocumentView {
    DocumentView {
        index: d.index,
        name: d.name.clone(),
        sha256: d.sha256.clone(),
        pages: d.pages.iter().map(page_view).collect(),
    }
}

/// Pages finished (completed or failed for good) over pages in all; 1 for a job of none.
fn progress(total: usize, done: usize, failed: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        (done + failed) as f64 / total as f64
    }
}

fn delivery_view(d: &Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id.clone(),
        event: d.event.clone(),
        state: d.state,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error.clone(),
        next_at_ms: d.next_at_ms,
        updated_at_ms: d.updated_at_ms,
    }
}

impl JobView {
    pub fn new(job: &JobRecord, eta_s: Option<u64>, deliveries: &[Delivery]) -> Self {
        let total = job.pages_total();
        let done = job.pages_in(PageState::Completed);
        let failed = job.pages_in(PageState::Failed);
        JobView {
            id: job.id.clone(),
            state: job.state,
            class: job.class,
            tag: job.tag.clone(),
            priority: job.priority,
            review_threshold: job.review_threshold,
            pages_total: total,
            pages_done: done,
            pages_failed: failed,
            created_at_ms: job.created_at_ms,
            updated_at_ms: job.updated_at_ms,
            documents: job.documents.iter().map(document_view).collect(),
            progress: progress(total, done, failed),
            eta_s,
            webhook_deliveries: deliveries.iter().map(delivery_view).collect(),
        }
    }
}

/// A job in a listing: its counts, not its pages (`GET /v1/jobs/{id}` shows those), so a
/// listing of 500 jobs of 100,000 pages each costs 500 rows of counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobListEntry {
    pub id: String,
    pub state: JobState,
    /// `interactive` (hybrid `/v1/ocr`) or `bulk`.
    pub class: JobClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_threshold: Option<f32>,
    pub pages_total: usize,
    pub pages_done: usize,
    pub pages_failed: usize,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub documents: Vec<DocumentEntry>,
    /// Pages finished (completed or failed for good) over pages in all.
    pub progress: f64,
    /// Seconds until the job is likely finished (null when final).
    pub eta_s: Option<u64>,
}

/// A document in a listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentEntry {
    pub index: usize,
    pub name: String,
    pub sha256: String,
    /// How many pages of it the job runs.
    pub pages: usize,
}

impl JobListEntry {
    pub fn new(s: &JobSummary, eta_s: Option<u64>) -> Self {
        let job = &s.job;
        let total = s.pages_total();
        let (done, failed) = (s.counts.completed, s.counts.failed);
        JobListEntry {
            id: job.id.clone(),
            state: job.state,
            class: job.class,
            tag: job.tag.clone(),
            priority: job.priority,
            review_threshold: job.review_threshold,
            pages_total: total,
            pages_done: done,
            pages_failed: failed,
            created_at_ms: job.created_at_ms,
            updated_at_ms: job.updated_at_ms,
            documents: job
                .documents
                .iter()
                .map(|d| DocumentEntry {
                    index: d.index,
                    name: d.name.clone(),
                    sha256: d.sha256.clone(),
                    pages: s.doc_pages.get(d.index).copied().unwrap_or(0),
                })
                .collect(),
            progress: progress(total, done, failed),
            eta_s,
        }
    }
}

/// One transition or action on a job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub detail: serde_json::Value,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            seq: e.seq,
            at_ms: e.at_ms,
            kind: e.kind,
            detail: e.detail,
        }
    }
}

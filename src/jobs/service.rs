//! The job service: every transition a client asks for (create, cancel, retry, review,
//! pause/resume) and the assembly of results and of the review queue, between the HTTP handlers
//! (which only extract, call and map) and the store (which only stores).
//!
//! Creating a job: admission first, before any body is read ([`JobService::admit`]: the
//! caller's quota, the class's backlog, the store's free disk, the documents per job); then
//! the documents are opened once, one at a time, to count and select their pages (bad input
//! is a 4xx before anything is stored). Counting is bounded like decoding: at most
//! `max_concurrent_creations` jobs count at once, and a document read from the store (a
//! streamed upload or a reference) reserves its size from the memory budget while it is held
//! and is dropped before the next is read; bytes that came in the request body are already
//! bounded by the body limit and are not copied. Admission is checked again with the counted
//! pages, the documents still only in memory are written durably, then the job is committed
//! with its pages in one transaction; only then is it acknowledged and the claim loop woken.
//! A failed commit deletes the documents it wrote.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::documents::{DocumentStore, Stored};
use super::events::JobEvent;
pub use super::model::{Correction, Review};
use super::model::{
    Created, Event, JobClass, JobOptions, JobRecord, JobState, JobSummary, NewDocument, NewJob,
    PageState,
};
use super::now_ms;
use super::runner::Runner;
use super::store::JobStore;
use crate::auth::Caller;
use crate::document::{Document, select_pages};
use crate::error::{Error, Result};
use crate::pipeline::decode::DecodeLimits;
use crate::pipeline::{Page, document_text};

/// Between a tenant and a tag in a stored pause scope (never in a tenant name).
const PAUSE_SEP: char = '\u{1f}';

/// Limits of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub decode: DecodeLimits,
    /// How long an `Idempotency-Key` names its job.
    pub idempotency_ttl: Duration,
    /// `POST /v1/jobs` answers 429 when the queued bulk pages would exceed this.
    pub max_queued_pages: u64,
    /// `POST /v1/jobs` answers 507 when a `file://` document store has less free disk.
    pub min_free_disk_bytes: u64,
    /// Documents one job may name (`--max-documents-per-job`; 422 `too_many_documents`).
    pub max_documents_per_job: usize,
    /// Job creations that read and count documents at once; others wait for a turn up to the
    /// memory budget's wait, then get 429.
    pub max_concurrent_creations: usize,
    /// Jobs one tenant may have stored, in any state (`--tenant-max-jobs`).
    pub tenant_max_jobs: u64,
    /// Bytes of documents one tenant may have stored (`--tenant-max-stored-mb`).
    pub tenant_max_stored_bytes: u64,
    /// How often the per-tag page gauges (`ocr_job_pages`, a scan of the stored pages) are
    /// counted, however often `/metrics` and `/v1/queue` are read (5 s).
    pub page_gauges_every: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            decode: DecodeLimits::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_queued_pages: 100_000,
            min_free_disk_bytes: 1 << 30,
            max_documents_per_job: 1_000,
            max_concurrent_creations: 4,
            tenant_max_jobs: 100_000,
            tenant_max_stored_bytes: 100 << 30,
            page_gauges_every: Duration::from_secs(5),
        }
    }
}

/// Where a new job's document comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Bytes held in memory (multipart and JSON bodies, bounded by the body limit).
    Bytes(bytes::Bytes),
    /// Already streamed to the document store under this job's id ([`DocumentStore::upload`]).
    Stored(Stored),
    /// A document already in the configured bucket, by URL (not copied, never deleted).
    Url(String),
}

/// Why one page of a job waits for review.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueReason {
    pub document: usize,
    /// The page within the document, 0-based (as in corrections and the image route).
    pub page: usize,
    pub reason: String,
}

/// A document of a new job.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub source: Source,
}

/// What a new job asks for (validated OCR options included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    pub options: JobOptions,
    pub class: Option<JobClass>,
    pub tag: Option<String>,
    pub priority: i32,
    pub review_threshold: Option<f32>,
    pub webhook_url: Option<String>,
}

/// The job backlog of all replicas (every tenant's pages: a load figure, no tenant's data).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobsQueue {
    pub interactive: super::model::Backlog,
    pub bulk: super::model::Backlog,
    /// Paused scopes the caller may see: `*` for all bulk work, a tag (every tenant's), or
    /// `TENANT:TAG` / `TENANT:*`; a tenant's key sees `*` and its own tenant's only.
    pub paused: Vec<String>,
    /// Seconds until every queued and running job page is likely done, at this replica's
    /// measured rate (not capped).
    pub eta_s: u64,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
}

/// Applies a review's line corrections to a document's pages (`doc`): the line's text is the
/// reviewer's, its confidence 1, its words the corrected text's words on the old words' boxes
/// when their number agrees, else one word over the line's box. Page-wide corrections change
/// no line.
/// `pages` are a document's pages from page `from` on.
pub fn apply_line_corrections(
    doc: usize,
    from: usize,
    pages: &mut [Option<Page>],
    corrections: &[Correction],
) {
    for c in corrections.iter().filter(|c| c.document == doc) {
        let Some(line) = c.line.and_then(|l| {
            pages
                .get_mut(c.page.checked_sub(from)?)
                .and_then(Option::as_mut)
                .and_then(|p| p.lines.get_mut(l))
        }) else {
            continue;
        };
        let words: Vec<&str> = c.text.split_whitespace().collect();
        if words.len() == line.words.len() {
            for (w, t) in line.words.iter_mut().zip(&words) {
                w.text = (*t).to_string();
                w.confidence = 1.0;
            }
        } else {
            line.words = vec![crate::pipeline::Word {
                text: c.text.trim().to_string(),
                confidence: 1.0,
                bbox: line.bbox,
            }];
        }
        line.text = c.text.clone();
        line.confidence = 1.0;
        line.char_confidences.clear();
    }
}

/// The text of page `page` of document `doc`: a review's whole-page correction, else the
/// result's lines (line corrections already applied), else empty (not completed).
pub fn page_text(
    doc: usize,
    page: usize,
    result: Option<&Page>,
    corrections: &[Correction],
) -> String {
    corrections
        .iter()
        .find(|c| c.document == doc && c.page == page && c.line.is_none())
        .map(|c| c.text.clone())
        .or_else(|| result.map(|p| document_text(std::slice::from_ref(p))))
        .unwrap_or_default()
}

/// Pages read from the store at a time by [`ResultPages`].
pub const RESULT_SLICE: usize = 16;

/// A document's page results read a slice at a time, review line corrections applied: what
/// the streamed `GET /result` walks, so a 100,000-page job is never held whole. A document of
/// one slice is read once however often it is walked ([`ResultPages::rewind`]).
pub struct ResultPages {
    store: Arc<dyn JobStore>,
    job_id: String,
    doc: usize,
    count: usize,
    corrections: Arc<Vec<Correction>>,
    /// The page the next call returns.
    next: usize,
    /// Pages `slice_from..slice_from + slice.len()`.
    slice_from: usize,
    slice: Vec<Option<Page>>,
}

impl ResultPages {
    pub fn new(
        store: Arc<dyn JobStore>,
        job_id: &str,
        doc: usize,
        count: usize,
        corrections: Arc<Vec<Correction>>,
    ) -> Self {
        Self {
            store,
            job_id: job_id.to_string(),
            doc,
            count,
            corrections,
            next: 0,
            slice_from: 0,
            slice: Vec::new(),
        }
    }

    /// Starts again from the first page.
    pub fn rewind(&mut self) {
        self.next = 0;
    }

    /// The next page's index and result (None: not completed); None after the last page.
    /// The result is lent from the slice read, never copied.
    pub async fn next(&mut self) -> Result<Option<(usize, Option<&Page>)>> {
        if self.next >= self.count {
            return Ok(None);
        }
        let i = self.next;
        if !(self.slice_from..self.slice_from + self.slice.len()).contains(&i) {
            let mut slice = self
                .store
                .page_results(&self.job_id, self.doc, i, RESULT_SLICE)
                .await?;
            apply_line_corrections(self.doc, i, &mut slice, &self.corrections);
            if slice.is_empty() {
                // Fewer page rows than counted (the job was swept meanwhile): end here.
                self.next = self.count;
                return Ok(None);
            }
            self.slice_from = i;
            self.slice = slice;
        }
        self.next += 1;
        Ok(Some((i, self.slice[i - self.slice_from].as_ref())))
    }
}

pub struct JobService {
    store: Arc<dyn JobStore>,
    runner: Arc<Runner>,
    /// Turns of job creation (reading and counting documents).
    creations: tokio::sync::Semaphore,
    /// When the per-tag page gauges were last counted (Unix ms): a scan of every stored page,
    /// so at most once per [`ServiceConfig::page_gauges_every`], however often `/metrics` and
    /// `/v1/queue` are read.
    tag_gauges_at: std::sync::atomic::AtomicI64,
    cfg: ServiceConfig,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl JobService {
    pub fn new(runner: Arc<Runner>, cfg: ServiceConfig) -> Arc<Self> {
        Arc::new(Self {
            store: runner.store().clone(),
            runner,
            creations: tokio::sync::Semaphore::new(cfg.max_concurrent_creations.max(1)),
            tag_gauges_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            cfg,
        })
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }

    pub fn documents(&self) -> &Arc<DocumentStore> {
        self.runner.documents()
    }

    /// A fresh job id (documents can be streamed under it before the job is created).
    pub fn new_job_id() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    /// Validates, stores and announces a job `id`; `(job, replayed)`. Documents streamed
    /// under `id` before the call are deleted again when the job is refused or replayed. A
    /// store error is ambiguous (PostgreSQL may have committed a transaction whose answer was
    /// lost): the job is looked up, and returned when it exists; its documents are deleted
    /// only when it surely does not.
    pub async fn create(
        &self,
        caller: &Caller,
        id: String,
        docs: Vec<Upload>,
        spec: JobSpec,
        key: Option<String>,
    ) -> Result<(JobRecord, bool)> {
        let streamed: Vec<String> = docs
            .iter()
            .filter_map(|d| match &d.source {
                Source::Stored(s) => Some(s.location.clone()),
                _ => None,
            })
            .collect();
        let mut written = streamed.clone();
        let out = self
            .create_inner(caller, &id, docs, spec, key, &mut written)
            .await;
        match out {
            Ok((_, false)) => out,
            // The key named an earlier job: nothing of this request is kept.
            Ok((_, true)) => {
                self.documents().delete(written).await;
                out
            }
            // A store error may come after the job's commit (the connection dropped before
            // PostgreSQL's answer came back): whether the job exists decides, not the error.
            Err(e @ Error::Store(_)) => match self.committed(&id).await {
                Some(Some(job)) => {
                    tracing::warn!(job = %id, error = %e,
                        "the store answered job creation with an error, but the job was committed: kept");
                    metrics::counter!("ocr_job_commits_recovered_total").increment(1);
                    self.runner.announce(job.class);
                    Ok((job, false))
                }
                Some(None) => {
                    self.documents().delete(written).await;
                    Err(e)
                }
                None => {
                    tracing::error!(job = %id, error = %e, documents = written.len(),
                        "job creation failed and whether it was committed is unknown: its documents are kept");
                    Err(e)
                }
            },
            // Refused: nothing of this request is kept.
            Err(e) => {
                self.documents().delete(written).await;
                Err(e)
            }
        }
    }

    /// Whether a job whose creation ended in a store error exists: `Some(Some(job))` it was
    /// committed, `Some(None)` it was not, `None` the store could not say (three tries). The
    /// first look waits a second: a `COMMIT` that reached PostgreSQL as the connection dropped
    /// may still be running, and must be seen before its documents are judged unowned.
    async fn committed(&self, id: &str) -> Option<Option<JobRecord>> {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(job) = self.store.get_job(id).await {
                return Some(job);
            }
        }
        None
    }

    async fn create_inner(
        &self,
        caller: &Caller,
        id: &str,
        docs: Vec<Upload>,
        spec: JobSpec,
        key: Option<String>,
        written: &mut Vec<String>,
    ) -> Result<(JobRecord, bool)> {
        if docs.is_empty() {
            return Err(Error::EmptyInput);
        }
        if let Some(t) = spec.review_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(Error::InvalidOption(format!(
                "review_threshold must be in 0..=1, got {t}"
            )));
        }
        if let Some(r) = spec.options.review_sample_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(Error::InvalidOption(format!(
                "review_sample_rate must be in 0..=1, got {r}"
            )));
        }
        if let Some(url) = &spec.webhook_url {
            let hooks = self.runner.webhooks();
            super::webhook::signing_secrets(self.store.as_ref(), &hooks.secrets, &caller.owner)
                .await?;
            super::webhook::check_target(url, &hooks.allow, &super::webhook::system_resolver())
                .await
                .map_err(|e| match e {
                    Error::Io { path, source } => {
                        Error::InvalidOption(format!("{path} does not resolve: {source}"))
                    }
                    other => other,
                })?;
        }
        let class = spec.class.unwrap_or(JobClass::Bulk);
        // Each document has at least one page: what can be refused before reading one is.
        self.admit(caller, class, docs.len()).await?;

        let _turn = tokio::time::timeout(self.cfg.decode.memory.wait(), self.creations.acquire())
            .await
            .map_err(|_| {
                metrics::counter!("ocr_jobs_refused_total", "reason" => "creations").increment(1);
                Error::Overloaded {
                    depth: self.cfg.max_concurrent_creations,
                    retry_after_s: 2,
                }
            })?
            .map_err(|_| Error::ShuttingDown)?;

        // Open every document once, one at a time, to count and select its pages (bad input
        // is a 4xx before the job exists). What is read from the store is reserved while held
        // and dropped after counting; body bytes are kept to be stored below.
        let mut counted = Vec::with_capacity(docs.len());
        for (i, d) in docs.into_iter().enumerate() {
            let name = if d.name.is_empty() {
                format!("document-{i}")
            } else {
                d.name
            };
            let (bytes, stored, owned, reservation) = match d.source {
                Source::Bytes(b) => (Vec::from(b), None, true, None),
                Source::Stored(s) => {
                    let r = self.reserve(s.bytes).await?;
                    (
                        self.documents().get(&s.location).await?,
                        Some(s),
                        true,
                        Some(r),
                    )
                }
                Source::Url(url) => {
                    let s = self.documents().reference(&caller.owner, &url).await?;
                    let r = self.reserve(s.bytes).await?;
                    (
                        self.documents().get(&s.location).await?,
                        Some(s),
                        false,
                        Some(r),
                    )
                }
            };
            let limits = self.cfg.decode.clone();
            let selection = spec.options.overrides.pages.clone();
            let label = name.clone();
            let (pages, bytes, stored) = tokio::task::spawn_blocking(move || {
                let named = |e: Error| match e {
                    Error::CorruptImage(m) => Error::CorruptImage(format!("{label}: {m}")),
                    Error::CorruptDocument(m) => Error::CorruptDocument(format!("{label}: {m}")),
                    other => other,
                };
                // A referenced document is hashed from the one read that counted it.
                let stored = stored.map(|mut s: Stored| {
                    if s.sha256.is_empty() {
                        s.sha256 = super::documents::sha256_hex(&bytes);
                    }
                    s
                });
                let bytes = Arc::new(bytes);
                let doc = Document::open(bytes.clone(), &limits).map_err(named)?;
                let pages = select_pages(selection.as_deref(), doc.page_count(), limits.max_pages)
                    .map_err(named)?;
                drop(doc);
                Ok::<_, Error>((pages, bytes, stored))
            })
            .await
            .map_err(|e| Error::Runtime(format!("decode task: {e}")))??;
            // Bytes read back from the store are not kept: the stored copy is the job's.
            let bytes = if stored.is_some() {
                drop(bytes);
                None
            } else {
                Some(bytes)
            };
            drop(reservation);
            // What the job stores (a reference is the tenant's own object, not stored again).
            let size = match (&stored, &bytes) {
                (Some(s), _) if owned => s.bytes,
                (None, Some(b)) => b.len() as u64,
                _ => 0,
            };
            counted.push((name, pages, stored, owned, bytes, size));
        }

        let new_pages: u64 = counted.iter().map(|(_, p, ..)| p.len() as u64).sum();
        let new_bytes: u64 = counted.iter().map(|c| c.5).sum();
        self.admit_storage(caller, new_bytes).await?;
        self.admit_pages(caller, class, new_pages).await?;
        caller.take_pages(new_pages as usize)?;

        // Store what is still only in memory.
        let mut documents = Vec::with_capacity(counted.len());
        for (i, (name, pages, stored, owned, bytes, size)) in counted.into_iter().enumerate() {
            let stored = match (stored, bytes) {
                (Some(s), _) => s,
                (None, Some(bytes)) => {
                    let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|b| (*b).clone());
                    let s = self
                        .documents()
                        .put(&caller.owner, id, i, bytes.into())
                        .await?;
                    written.push(s.location.clone());
                    s
                }
                (None, None) => unreachable!("a document is either stored or held"),
            };
            documents.push(NewDocument {
                name,
                location: stored.location,
                sha256: stored.sha256,
                source_pages: pages,
                owned,
                bytes: size,
            });
        }

        let payload_hash = {
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&spec.options).unwrap_or_default());
            h.update(
                serde_json::to_vec(&(
                    &spec.tag,
                    spec.priority,
                    spec.review_threshold,
                    &spec.webhook_url,
                    class.as_str(),
                ))
                .unwrap_or_default(),
            );
            for d in &documents {
                h.update(d.name.as_bytes());
                h.update(d.sha256.as_bytes());
            }
            hex(&h.finalize())
        };
        let new = NewJob {
            id: id.to_string(),
            options: spec.options,
            class,
            tag: spec.tag,
            webhook_url: spec.webhook_url,
            priority: spec.priority,
            review_threshold: spec.review_threshold,
            // Idempotency keys are per tenant.
            idempotency: key.map(|k| {
                let k = if caller.owner.is_empty() {
                    k
                } else {
                    format!("{}\u{1f}{k}", caller.owner)
                };
                (k, payload_hash)
            }),
            documents,
            tenant: caller.owner.clone(),
            actor: caller.key.clone(),
        };
        let ttl = self.cfg.idempotency_ttl.as_millis() as i64;
        Ok(match self.store.create_job(new, now_ms(), ttl).await? {
            Created::New(job) => {
                metrics::counter!("ocr_jobs_created_total", "class" => class.as_str()).increment(1);
                metrics::counter!("ocr_job_pages_created_total", "class" => class.as_str())
                    .increment(new_pages);
                self.runner.announce(class);
                (job, false)
            }
            Created::Existing(job) => (job, true),
        })
    }

    /// What can be refused before a job's body is read: more documents than a job may have,
    /// and [`JobService::admit_pages`] for one page per document (the least they can hold).
    /// The handlers call it before reading a body; creation calls it again with the count.
    pub async fn admit(&self, caller: &Caller, class: JobClass, documents: usize) -> Result<()> {
        if documents > self.cfg.max_documents_per_job {
            metrics::counter!("ocr_jobs_refused_total", "reason" => "documents").increment(1);
            return Err(Error::TooManyDocuments {
                count: documents,
                limit: self.cfg.max_documents_per_job,
            });
        }
        self.admit_storage(caller, 0).await?;
        self.admit_pages(caller, class, documents.max(1) as u64)
            .await
    }

    /// The tenant's storage quota: one more job, and `new_bytes` more of stored documents.
    async fn admit_storage(&self, caller: &Caller, new_bytes: u64) -> Result<()> {
        let (jobs, bytes) = self.store.tenant_usage(&caller.owner).await?;
        let over = if jobs + 1 > self.cfg.tenant_max_jobs {
            Some(("jobs", jobs, 1, self.cfg.tenant_max_jobs))
        } else if bytes + new_bytes > self.cfg.tenant_max_stored_bytes
            || (new_bytes == 0 && bytes >= self.cfg.tenant_max_stored_bytes)
        {
            Some(("bytes", bytes, new_bytes, self.cfg.tenant_max_stored_bytes))
        } else {
            None
        };
        match over {
            Some((unit, stored, adding, limit)) => {
                metrics::counter!("ocr_jobs_refused_total", "reason" => "storage").increment(1);
                Err(Error::StorageQuotaExceeded {
                    tenant: caller.owner.clone(),
                    unit,
                    stored,
                    adding,
                    limit,
                })
            }
            None => Ok(()),
        }
    }

    /// Admission of `new_pages` more pages of `class`: the key's quota (its tenant's pages on
    /// every replica), the class's backlog (both classes: an interactive job made by
    /// `Prefer: respond-async` is stored work like any other), and the store's free disk.
    async fn admit_pages(&self, caller: &Caller, class: JobClass, new_pages: u64) -> Result<()> {
        if let (Some(limit), Some(name)) = (caller.max_queued_pages, &caller.key) {
            let queued = self.store.tenant_backlog(&caller.owner).await?;
            if queued + new_pages > limit {
                metrics::counter!("ocr_jobs_refused_total", "reason" => "quota").increment(1);
                return Err(Error::QuotaExceeded {
                    key: name.clone(),
                    queued,
                    adding: new_pages,
                    limit,
                });
            }
        }
        let backlog = self.store.backlog(class).await?;
        if backlog.queued + new_pages > self.cfg.max_queued_pages {
            metrics::counter!("ocr_jobs_refused_total", "reason" => "backlog").increment(1);
            return Err(Error::Overloaded {
                depth: backlog.queued as usize,
                retry_after_s: self.runner.scheduler().retry_after(backlog.queued as usize),
            });
        }
        if let Some(free) = self.documents().free_bytes()
            && free < self.cfg.min_free_disk_bytes
        {
            metrics::counter!("ocr_jobs_refused_total", "reason" => "disk").increment(1);
            return Err(Error::InsufficientStorage {
                free_mb: free >> 20,
                floor_mb: self.cfg.min_free_disk_bytes >> 20,
            });
        }
        Ok(())
    }

    /// Reserves `bytes` from the memory budget (on a blocking thread: it may wait).
    async fn reserve(&self, bytes: u64) -> Result<crate::memory::Reservation> {
        let budget = self.cfg.decode.memory.clone();
        tokio::task::spawn_blocking(move || budget.reserve(bytes))
            .await
            .map_err(|e| Error::Runtime(format!("reserve task: {e}")))?
    }

    /// The job, if the caller may see it: another tenant's job is 404, as if it did not exist.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<JobRecord> {
        self.store
            .get_job(id)
            .await?
            .filter(|j| caller.can_see(&j.tenant))
            .ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// A job's summary (no page rows), if the caller may see it.
    pub async fn summary(&self, caller: &Caller, id: &str) -> Result<JobSummary> {
        self.store
            .job_summary(id)
            .await?
            .filter(|j| caller.can_see(&j.job.tenant))
            .ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// The caller's jobs (every tenant's for the anonymous caller and admin keys), summarised.
    pub async fn list(
        &self,
        caller: &Caller,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>> {
        self.store
            .list_jobs(caller.tenant.as_deref(), state, cursor, limit)
            .await
    }

    /// The review queue: the caller's `needs_review` jobs (at most `max_jobs`), by priority
    /// (higher first), then lowest line confidence, each with why its pages wait (at most
    /// `max_reasons`, by page): the reason a page was completed with (a field's check,
    /// sampling), and a line under the job's threshold (read from the page rows only for a job
    /// whose lowest confidence is under it, one job at a time).
    pub async fn review_queue(
        &self,
        caller: &Caller,
        max_jobs: usize,
        max_reasons: usize,
    ) -> Result<Vec<(JobSummary, Vec<QueueReason>)>> {
        const PAGE: usize = 200;
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .list(caller, Some(JobState::NeedsReview), cursor.as_deref(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            cursor = page.last().map(|j| j.job.id.clone());
            jobs.extend(page);
            if !full || jobs.len() >= max_jobs {
                break;
            }
        }
        jobs.truncate(max_jobs);
        let mut out = Vec::with_capacity(jobs.len());
        for summary in jobs {
            let job = &summary.job;
            let mut reasons: Vec<QueueReason> = self
                .store
                .events(&job.id)
                .await?
                .iter()
                .filter_map(|e| match e.typed()? {
                    JobEvent::PageCompleted {
                        document,
                        page,
                        review: Some(reason),
                        ..
                    } => Some(QueueReason {
                        document,
                        page,
                        reason,
                    }),
                    _ => None,
                })
                .collect();
            if let Some(t) = job.review_threshold
                && summary.min_confidence.is_some_and(|c| c < t)
                && let Some(full) = self.store.get_job(&job.id).await?
            {
                for d in &full.documents {
                    for p in &d.pages {
                        if let Some(c) = p.min_confidence.filter(|c| *c < t) {
                            reasons.push(QueueReason {
                                document: d.index,
                                page: p.page,
                                reason: format!("a line's confidence {c:.2} under {t}"),
                            });
                        }
                    }
                }
            }
            reasons.sort_by_key(|r| (r.document, r.page));
            reasons.truncate(max_reasons);
            out.push((summary, reasons));
        }
        out.sort_by(|(a, _), (b, _)| {
            b.job.priority.cmp(&a.job.priority).then(
                a.min_confidence
                    .unwrap_or(1.0)
                    .total_cmp(&b.min_confidence.unwrap_or(1.0)),
            )
        });
        Ok(out)
    }

    /// Records who asked for an action on a job (the key's name), before the action's own
    /// events.
    async fn record_actor(&self, caller: &Caller, id: &str, action: &str) -> Result<()> {
        if let Some(key) = &caller.key {
            self.store
                .add_event(
                    id,
                    &JobEvent::Requested {
                        action: action.to_string(),
                        actor: key.clone(),
                    },
                    now_ms(),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn events(&self, caller: &Caller, id: &str) -> Result<Vec<Event>> {
        self.summary(caller, id).await?;
        self.store.events(id).await
    }

    /// Cancels a job: the store first (its unfinished pages are dropped and leases revoked, on
    /// every replica), then this process's running pages of it.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<JobRecord> {
        self.get(caller, id).await?;
        self.record_actor(caller, id, "cancel").await?;
        if !self.store.cancel_job(id, now_ms()).await? {
            return Err(Error::JobFinished(id.to_string()));
        }
        self.runner.abandon_job(id);
        self.runner.announce_delivery();
        self.get(caller, id).await
    }

    /// Requeues the job's failed pages.
    pub async fn retry(&self, caller: &Caller, id: &str) -> Result<JobRecord> {
        let job = self.get(caller, id).await?;
        self.record_actor(caller, id, "retry").await?;
        if self.store.retry_failed(id, now_ms()).await? > 0 {
            self.runner.announce(job.class);
        }
        self.get(caller, id).await
    }

    /// Approves or corrects a `needs_review` job and completes it.
    /// The reviewer is the key's name when the caller has a key, else the name given.
    pub async fn review(&self, caller: &Caller, id: &str, mut review: Review) -> Result<JobRecord> {
        let job = self.get(caller, id).await?;
        if let Some(key) = &caller.key {
            review.reviewer = Some(key.clone());
        }
        if job.state != JobState::NeedsReview {
            return Err(Error::NotInReview {
                id: id.to_string(),
                state: job.state.as_str(),
            });
        }
        if !review.approve && review.corrections.is_empty() {
            return Err(Error::InvalidOption(
                "send `approve: true` or `corrections`".into(),
            ));
        }
        for c in &mut review.corrections {
            let ok = job
                .documents
                .get(c.document)
                .is_some_and(|d| d.pages.iter().any(|p| p.page == c.page));
            if !ok {
                return Err(Error::InvalidOption(format!(
                    "no page {} in document {}",
                    c.page, c.document
                )));
            }
            let result = self
                .store
                .page_results(id, c.document, c.page, 1)
                .await?
                .pop()
                .flatten();
            let page = result.as_ref();
            c.original = match (c.line, page) {
                (Some(l), Some(p)) => Some(
                    p.lines
                        .get(l)
                        .ok_or_else(|| {
                            Error::InvalidOption(format!(
                                "no line {l} on page {} of document {} ({} lines)",
                                c.page,
                                c.document,
                                p.lines.len()
                            ))
                        })?
                        .text
                        .clone(),
                ),
                (Some(l), None) => {
                    return Err(Error::InvalidOption(format!(
                        "no line {l}: page {} of document {} has no result",
                        c.page, c.document
                    )));
                }
                (None, p) => p.map(|p| document_text(std::slice::from_ref(p))),
            };
        }
        if !self.store.complete_review(id, &review, now_ms()).await? {
            // Reviewed meanwhile (by another reviewer or replica).
            let now = self.get(caller, id).await?;
            return Err(Error::NotInReview {
                id: id.to_string(),
                state: now.state.as_str(),
            });
        }
        let outcome = if review.corrections.is_empty() {
            "approved"
        } else {
            "corrected"
        };
        metrics::counter!("ocr_job_reviews_total", "outcome" => outcome).increment(1);
        metrics::counter!("ocr_job_review_corrections_total")
            .increment(review.corrections.len() as u64);
        tracing::info!(
            job = id,
            reviewer = review.reviewer.as_deref().unwrap_or(""),
            corrections = review.corrections.len(),
            outcome,
            "job reviewed"
        );
        self.runner.announce_delivery();
        self.get(caller, id).await
    }

    pub async fn resend_webhooks(&self, caller: &Caller, id: &str) -> Result<JobRecord> {
        let job = self.get(caller, id).await?;
        self.store.resend_deliveries(id, now_ms()).await?;
        self.runner.announce_delivery();
        Ok(job)
    }

    /// Pauses or resumes bulk work: everything, one tag (every tenant's jobs with it), one
    /// tenant's, or one tenant's tag. Stored as the scope `*`, `TAG`, `TENANT\u{1f}*` or
    /// `TENANT\u{1f}TAG`, which the claim matches against each page's tenant and tag.
    pub async fn set_paused(
        &self,
        tenant: Option<&str>,
        tag: Option<&str>,
        paused: bool,
    ) -> Result<Vec<String>> {
        let scope = match tenant {
            None => tag.map(str::to_string),
            Some(t) => {
                crate::auth::check_name("tenant", t)?;
                Some(format!("{t}{PAUSE_SEP}{}", tag.unwrap_or("*")))
            }
        };
        if scope.as_deref().is_some_and(|s| s.is_empty()) {
            return Err(Error::InvalidOption(
                "an empty tag names nothing to pause".into(),
            ));
        }
        self.store
            .set_paused(scope.as_deref(), paused, now_ms())
            .await?;
        if !paused {
            self.runner.announce(JobClass::Bulk);
        }
        self.paused(&Caller::anonymous()).await
    }

    /// The pauses a caller may see, as `*`, `TAG` or `TENANT:TAG`: a tenant's key sees
    /// everything paused and its own tenant's pauses, never another tenant's tags.
    pub async fn paused(&self, caller: &Caller) -> Result<Vec<String>> {
        Ok(self
            .store
            .paused()
            .await?
            .into_iter()
            .filter_map(
                |scope| match (scope.split_once(PAUSE_SEP), &caller.tenant) {
                    (None, None) => Some(scope),
                    (None, Some(_)) => (scope == "*").then_some(scope),
                    (Some((t, tag)), mine) => mine
                        .as_deref()
                        .is_none_or(|m| m == t)
                        .then(|| format!("{t}:{tag}")),
                },
            )
            .collect())
    }

    /// The corrections of the job's last review.
    async fn corrections(&self, id: &str) -> Result<Vec<Correction>> {
        Ok(self
            .store
            .events(id)
            .await?
            .into_iter()
            .rev()
            .find_map(|e| Some(e.typed()?.review()?.corrections.clone()))
            .unwrap_or_default())
    }

    /// What the streamed result reads: the job's summary and its last review's corrections.
    pub async fn result_source(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(JobSummary, Arc<Vec<Correction>>)> {
        let job = self.summary(caller, id).await?;
        let corrections = Arc::new(self.corrections(id).await?);
        Ok((job, corrections))
    }

    /// A job document's source, its selected source page indices and its pages: the
    /// completed results, and a page with error `not_completed` for the others (for hOCR and
    /// searchable-PDF output).
    pub async fn document_pages(
        &self,
        job: &JobRecord,
        index: usize,
    ) -> Result<(Arc<Document>, Vec<usize>, Vec<Page>)> {
        let d = job
            .documents
            .get(index)
            .ok_or_else(|| Error::InvalidOption(format!("the job has no document {index}")))?;
        let doc = self.runner.open_document(&d.location).await?;
        let selected = d.pages.iter().map(|p| p.source_index).collect();
        let mut pages = self
            .store
            .page_results(&job.id, index, 0, d.pages.len())
            .await?;
        // Corrections exist only on a job a review completed: other states read no events.
        if job.state == JobState::Completed {
            apply_line_corrections(index, 0, &mut pages, &self.corrections(&job.id).await?);
        }
        let pages = pages
            .into_iter()
            .zip(&d.pages)
            .map(|(page, p)| {
                page.unwrap_or_else(|| Page::failed(&Error::NotCompleted(p.state.as_str())))
            })
            .collect();
        Ok((doc, selected, pages))
    }

    /// A stored document, opened (shared with the runner's cache of open documents).
    pub async fn open_document(&self, location: &str) -> Result<Arc<Document>> {
        self.runner.open_document(location).await
    }

    /// Waits until the job is final or `wait` passes.
    pub async fn wait_final(&self, id: &str, wait: Duration) -> Result<JobRecord> {
        self.runner
            .wait_final(id, wait)
            .await?
            .ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// The job backlog for `/v1/queue` (every replica's), and the job gauges refreshed from
    /// the store: `ocr_job_backlog_pages{class,state}`, `ocr_job_pages{state,tag}`.
    pub async fn queue_report(&self, caller: &Caller) -> Result<JobsQueue> {
        let interactive = self.store.backlog(JobClass::Interactive).await?;
        let bulk = self.store.backlog(JobClass::Bulk).await?;
        let paused = self.paused(caller).await?;
        let now = now_ms();
        for (class, b) in [
            (JobClass::Interactive, &interactive),
            (JobClass::Bulk, &bulk),
        ] {
            metrics::gauge!("ocr_job_backlog_pages", "class" => class.as_str(), "state" => "queued")
                .set(b.queued as f64);
            metrics::gauge!("ocr_job_backlog_pages", "class" => class.as_str(), "state" => "processing")
                .set(b.processing as f64);
            metrics::gauge!("ocr_job_oldest_queued_seconds", "class" => class.as_str()).set(
                b.oldest_queued_ms
                    .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
            );
        }
        let last = self
            .tag_gauges_at
            .load(std::sync::atomic::Ordering::Acquire);
        let due = now.saturating_sub(last) >= self.cfg.page_gauges_every.as_millis() as i64
            && self
                .tag_gauges_at
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                )
                .is_ok();
        let counted = if due {
            self.store.pages_by_state_and_tag().await?
        } else {
            Vec::new()
        };
        let mut by_tag: std::collections::BTreeMap<(&'static str, String), u64> =
            Default::default();
        for (state, tag, n) in counted {
            let label = super::runner::tag_label(&self.runner.config().metric_tags, tag.as_deref());
            *by_tag.entry((state.as_str(), label)).or_default() += n;
        }
        for state in PageState::ALL.iter().filter(|_| due) {
            // States with no pages read 0 rather than keeping a stale value.
            metrics::gauge!("ocr_job_pages", "state" => state.as_str(), "tag" => "").set(0.0);
        }
        for ((state, tag), n) in by_tag {
            metrics::gauge!("ocr_job_pages", "state" => state, "tag" => tag).set(n as f64);
        }
        let rate = self.runner.scheduler().pages_per_second();
        Ok(JobsQueue {
            eta_s: ((interactive.queued + interactive.processing + bulk.queued + bulk.processing)
                as f64
                / rate)
                .ceil() as u64,
            interactive,
            bulk,
            paused,
            store: self.store.backend(),
        })
    }

    /// Seconds until a job with these unfinished pages is likely done, behind the class's
    /// queued pages (not capped: a long backlog says so).
    pub async fn eta_s(&self, job: &JobRecord) -> Result<Option<u64>> {
        if job.state.is_final() {
            return Ok(None);
        }
        let unfinished = job
            .pages()
            .filter(|p| matches!(p.state, PageState::Queued | PageState::Processing))
            .count();
        let ahead = self.store.backlog(job.class).await?.queued;
        Ok(Some(self.eta_from(unfinished, ahead)))
    }

    /// Seconds until `unfinished` pages are done behind `ahead` queued pages of their class,
    /// at the scheduler's measured rate.
    pub fn eta_from(&self, unfinished: usize, ahead: u64) -> u64 {
        let rate = self.runner.scheduler().pages_per_second();
        (unfinished.max(ahead as usize) as f64 / rate).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Line, Word};

    fn word(t: &str, x: f32) -> Word {
        Word {
            text: t.into(),
            confidence: 0.5,
            bbox: [[x, 0.0], [x + 10.0, 0.0], [x + 10.0, 5.0], [x, 5.0]],
        }
    }

    fn page() -> Page {
        Page {
            width: 100,
            height: 50,
            lines: vec![Line {
                text: "T0TAL 12.5O".into(),
                confidence: 0.4,
                bbox: [[0.0, 0.0], [40.0, 0.0], [40.0, 5.0], [0.0, 5.0]],
                words: vec![word("T0TAL", 0.0), word("12.5O", 20.0)],
                char_confidences: vec![0.5; 11],
            }],
            error: None,
        }
    }

    fn fix(line: Option<usize>, doc: usize, text: &str) -> Correction {
        Correction {
            document: doc,
            page: 0,
            line,
            text: text.into(),
            original: None,
        }
    }

    #[test]
    fn a_line_correction_keeps_the_box_and_the_words_boxes_when_they_agree() {
        let mut pages = vec![Some(page())];
        apply_line_corrections(0, 0, &mut pages, &[fix(Some(0), 0, "TOTAL 12.50")]);
        let l = &pages[0].as_ref().unwrap().lines[0];
        assert_eq!(l.text, "TOTAL 12.50");
        assert_eq!(l.bbox, page().lines[0].bbox);
        assert_eq!(l.confidence, 1.0);
        assert!(l.char_confidences.is_empty());
        let words: Vec<(&str, f32)> = l
            .words
            .iter()
            .map(|w| (w.text.as_str(), w.bbox[0][0]))
            .collect();
        assert_eq!(words, [("TOTAL", 0.0), ("12.50", 20.0)]);

        // Another number of words: one word over the line's box.
        let mut pages = vec![Some(page())];
        apply_line_corrections(0, 0, &mut pages, &[fix(Some(0), 0, "TOTAL DUE 12.50")]);
        let l = &pages[0].as_ref().unwrap().lines[0];
        assert_eq!(l.words.len(), 1);
        assert_eq!(
            (l.words[0].text.as_str(), l.words[0].bbox),
            ("TOTAL DUE 12.50", l.bbox)
        );

        // Another document's correction, a page-wide one, a missing line or page: nothing.
        let mut pages = vec![Some(page()), None];
        apply_line_corrections(
            0,
            0,
            &mut pages,
            &[
                fix(Some(0), 1, "x"),
                fix(None, 0, "x"),
                fix(Some(7), 0, "x"),
                Correction {
                    page: 1,
                    ..fix(Some(0), 0, "x")
                },
            ],
        );
        assert_eq!(pages[0], Some(page()));
        assert_eq!(pages[1], None);
    }
}

//! The job runner: feeds job pages into the scheduler's **bulk** class and records every outcome
//! in the store.
//!
//! - Pages wait in an in-memory queue ordered by job priority (higher first), then arrival.
//!   The queue is rebuilt from the store at start ([`JobStore::recover`]), so it holds nothing
//!   that is not on disk.
//! - At most `max_in_flight` job pages are in the scheduler at once, so bulk work never fills
//!   the detection queue that interactive callers need.
//! - A page is marked `processing` (attempt counted) before it is decoded; its result is stored
//!   with its `completed` state in one transaction.
//! - Failures: client errors (the document cannot be decoded) fail the page for good; others
//!   (overload, runtime) are retried with exponential backoff up to `max_attempts`, then the
//!   page is failed (dead-lettered, visible with its reason, retryable by hand). Completed pages
//!   are never redone.
//! - Cancelling a job drops the receivers of its in-flight pages, so the scheduler drops their
//!   queued work before any model sees it; queued pages of a cancelled job are skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore, watch};

use crate::document::{Document, select_pages};
use crate::engine::OcrOptions;
use crate::error::{Error, Result};
use crate::pipeline::decode::DecodeLimits;
use crate::scheduler::{Class, Scheduler};

use super::store::{Delivery, JobState, JobStore, PageRef};
use super::webhook::{WebhookConfig, sign};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    /// Job pages in the scheduler at once.
    pub max_in_flight: usize,
    /// Attempts per page before it is failed for good.
    pub max_attempts: u32,
    /// Backoff before retry k (1-based): `base · 2^(k−1)`, at most `cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub decode: DecodeLimits,
    pub webhooks: WebhookConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            decode: DecodeLimits::default(),
            webhooks: WebhookConfig::new(Vec::new(), Vec::new()),
        }
    }
}

/// What a job's pages run with: the scheduler's options with the job's overrides applied, as
/// stored in the job's `options` JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobOptions {
    pub det_limit_side: Option<u32>,
    pub classify: Option<bool>,
    pub min_confidence: Option<f32>,
    /// Run in the interactive class (a hybrid `/v1/ocr` request whose caller may be waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// The page selection (`1-3,7`) applied to each document; job page k is the k-th selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<String>,
}

impl JobOptions {
    pub fn apply(&self, base: &OcrOptions) -> OcrOptions {
        let mut o = base.clone();
        if let Some(s) = self.det_limit_side {
            o.det_resize.limit_side_px = s;
        }
        if let Some(c) = self.classify {
            o.classify = c;
        }
        if let Some(m) = self.min_confidence {
            o.min_confidence = m;
        }
        o
    }
}

/// Ordered pending pages: (−priority, sequence) → page.
#[derive(Default)]
struct Pending {
    queue: BTreeMap<(i64, u64), PageRef>,
    seq: u64,
}

pub struct Runner {
    store: Arc<dyn JobStore>,
    scheduler: Arc<Scheduler>,
    cfg: RunnerConfig,
    pending: Mutex<Pending>,
    wake: Notify,
    permits: Arc<Semaphore>,
    /// Pages between `start_page` and their outcome.
    in_flight: AtomicUsize,
    /// Bumped whenever a job reaches a final state; waiters re-read the store.
    finished: watch::Sender<u64>,
    /// Wakes the webhook deliverer.
    deliver: Notify,
    http: reqwest::Client,
    /// Per job with pages in flight: a cancel signal.
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Where job documents are stored (`<docs_dir>/<job id>/<index>.bin`).
    docs_dir: PathBuf,
    /// The last few documents opened, by path: the pages of one PDF are rendered one by one
    /// without re-parsing it for each (a parsed PDF holds its cross-reference table, not pages).
    open_docs: Mutex<Vec<(String, Arc<Document>)>>,
}

/// Documents kept open by [`Runner::open_document`].
const OPEN_DOCUMENTS: usize = 4;

impl Runner {
    pub fn new(
        store: Arc<dyn JobStore>,
        scheduler: Arc<Scheduler>,
        cfg: RunnerConfig,
        docs_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            scheduler,
            permits: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            cancels: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            finished: watch::channel(0).0,
            deliver: Notify::new(),
            http: reqwest::Client::builder()
                .timeout(cfg.webhooks.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            docs_dir,
            open_docs: Mutex::new(Vec::new()),
            cfg,
        })
    }

    /// Opens a stored document (or finds it open) and applies a page selection: the document and
    /// the 0-based source index of each job page.
    pub async fn open_document(
        &self,
        path: &str,
        pages: Option<&str>,
    ) -> Result<(Arc<Document>, Vec<usize>)> {
        let cached = {
            let docs = self.open_docs.lock().expect("open_docs lock");
            docs.iter().find(|(p, _)| p == path).map(|(_, d)| d.clone())
        };
        let doc = match cached {
            Some(d) => d,
            None => {
                let (p, limits) = (PathBuf::from(path), self.cfg.decode.clone());
                let doc = tokio::task::spawn_blocking(move || {
                    let bytes = std::fs::read(&p).map_err(|e| Error::Io {
                        path: p.display().to_string(),
                        source: e,
                    })?;
                    Document::open(Arc::new(bytes), &limits)
                })
                .await
                .map_err(|e| Error::Runtime(format!("open task: {e}")))??;
                let doc = Arc::new(doc);
                let mut docs = self.open_docs.lock().expect("open_docs lock");
                docs.retain(|(p, _)| p != path);
                docs.insert(0, (path.to_string(), doc.clone()));
                docs.truncate(OPEN_DOCUMENTS);
                doc
            }
        };
        let selected = select_pages(pages, doc.page_count(), usize::MAX)?;
        Ok((doc, selected))
    }

    pub fn webhooks(&self) -> &WebhookConfig {
        &self.cfg.webhooks
    }

    /// Queues a webhook event for a job that has a webhook URL.
    pub fn notify_job(&self, job_id: &str, state: JobState) {
        let Ok(Some(job)) = self.store.get_job(job_id) else {
            return;
        };
        let Some(url) = job.webhook_url.clone() else {
            return;
        };
        let now = now_ms();
        let event = format!("job.{}", state.as_str());
        let payload = serde_json::json!({
            "type": event,
            "timestamp": now / 1000,
            "data": {"id": job.id, "state": state.as_str(), "tag": job.tag,
                     "pages_total": job.pages_total, "pages_done": job.pages_done,
                     "pages_failed": job.pages_failed},
        })
        .to_string();
        let d = Delivery {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            job_id: job.id,
            url,
            event,
            payload,
            state: "pending".into(),
            attempts: 0,
            last_status: None,
            last_error: None,
            next_at_ms: now,
            updated_at_ms: now,
        };
        match self.store.add_delivery(&d, now) {
            Ok(()) => self.deliver.notify_one(),
            Err(e) => tracing::error!(error = %e, job = %job_id, "store: add_delivery"),
        }
    }

    /// Makes failed deliveries of a job pending again.
    pub fn resend(&self, job_id: &str) -> Result<usize> {
        let n = self.store.resend_deliveries(job_id, now_ms())?;
        self.deliver.notify_one();
        Ok(n)
    }

    /// Delivers due webhook events forever: POST with Standard Webhooks headers; 2xx is
    /// delivered, anything else is retried with exponential backoff and full jitter.
    async fn deliver_forever(self: Arc<Self>) {
        loop {
            let due = {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.due_deliveries(now_ms(), 32))
                    .await
                    .unwrap_or_else(|e| Err(Error::Runtime(e.to_string())))
            };
            let due = due.unwrap_or_else(|e| {
                tracing::error!(error = %e, "store: due_deliveries");
                Vec::new()
            });
            for d in due {
                self.deliver_once(d).await;
            }
            tokio::select! {
                _ = self.deliver.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    async fn deliver_once(&self, d: Delivery) {
        let cfg = &self.cfg.webhooks;
        let ts = now_ms() / 1000;
        let sig = sign(&cfg.secrets, &d.id, ts, &d.payload);
        let sent = self
            .http
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(d.payload.clone())
            .send()
            .await;
        let (ok, status, error) = match sent {
            Ok(r) if r.status().is_success() => (true, Some(r.status().as_u16()), None),
            Ok(r) => (
                false,
                Some(r.status().as_u16()),
                Some(format!("HTTP {}", r.status())),
            ),
            Err(e) => (false, None, Some(e.to_string())),
        };
        let attempts = d.attempts + 1;
        let next = (!ok && attempts < cfg.max_attempts).then(|| {
            let cap = cfg
                .backoff_base
                .saturating_mul(1 << (attempts - 1).min(20))
                .min(cfg.backoff_cap);
            // Full jitter: uniform in [0, cap], from the random bits of a v4 UUID.
            let r = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
            now_ms() + (cap.as_millis() as f64 * r) as i64
        });
        if let Err(e) =
            self.store
                .record_delivery(&d.id, ok, status, error.as_deref(), next, now_ms())
        {
            tracing::error!(error = %e, "store: record_delivery");
        }
        if !ok {
            tracing::warn!(job = %d.job_id, attempts, ?status, error = ?error, "webhook delivery failed");
        }
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn docs_dir(&self) -> &PathBuf {
        &self.docs_dir
    }

    /// Queues pages to run.
    pub fn enqueue(&self, pages: impl IntoIterator<Item = PageRef>, priority: i32) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for page in pages {
            p.seq += 1;
            let key = (-(priority as i64), p.seq);
            p.queue.insert(key, page);
        }
        drop(p);
        self.wake.notify_one();
    }

    /// Pages waiting in the runner (not yet in the scheduler).
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queue
            .len()
    }

    /// Waits until the job is final or `timeout` passes; the job as it is then.
    pub async fn wait_final(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<super::store::JobRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.finished.subscribe();
        loop {
            let job = self.store.get_job(id)?;
            if job.as_ref().is_none_or(|j| j.state.is_final()) {
                return Ok(job);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.store.get_job(id);
            }
        }
    }

    /// Pages running now (started and not yet recorded or abandoned).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Cancels a job: the store first (no new page starts), then the in-flight pages.
    pub fn cancel(&self, id: &str) -> Result<bool> {
        let done = self.store.cancel_job(id, now_ms())?;
        if done {
            self.notify_job(id, JobState::Cancelled);
        }
        if let Some(tx) = self
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            let _ = tx.send(true);
        }
        Ok(done)
    }

    /// Requeues what the store says is unfinished (after a restart), starts the webhook
    /// deliverer, then runs pages forever.
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().deliver_forever());
        match self.store.recover(now_ms()) {
            Ok(pages) => {
                if !pages.is_empty() {
                    tracing::info!(pages = pages.len(), "requeued unfinished job pages");
                }
                for p in pages {
                    let prio = self
                        .store
                        .get_job(&p.job_id)
                        .ok()
                        .flatten()
                        .map_or(0, |j| j.priority);
                    self.enqueue([p], prio);
                }
            }
            Err(e) => tracing::error!(error = %e, "could not recover job pages"),
        }
        loop {
            let permit = match self.permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let next = loop {
                let popped = {
                    let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    p.queue.pop_first().map(|(_, v)| v)
                };
                match popped {
                    Some(page) => break page,
                    None => self.wake.notified().await,
                }
            };
            let me = self.clone();
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                me.run_page(next).await;
                me.in_flight.fetch_sub(1, Ordering::AcqRel);
                drop(permit);
            });
        }
    }

    fn cancel_signal(&self, job: &str) -> watch::Receiver<bool> {
        let mut c = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        c.entry(job.to_string())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    async fn run_page(self: &Arc<Self>, page: PageRef) {
        let store = self.store.clone();
        let started = match store.start_page(&page, now_ms()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, job = %page.job_id, "store: start_page");
                return;
            }
        };
        if !started {
            return; // Cancelled, or already done.
        }
        let mut cancel = self.cancel_signal(&page.job_id);
        let outcome = tokio::select! {
            r = self.compute(&page) => Some(r),
            _ = cancel.wait_for(|c| *c) => None,
        };
        let Some(outcome) = outcome else {
            tracing::debug!(job = %page.job_id, "page cancelled in flight");
            return;
        };
        let now = now_ms();
        let state = match outcome {
            Ok((json, min_conf)) => store.complete_page(&page, &json, min_conf, now),
            Err(e) => {
                let attempts = store
                    .get_job(&page.job_id)
                    .ok()
                    .flatten()
                    .and_then(|j| {
                        j.documents
                            .get(page.doc)
                            .and_then(|d| d.pages.get(page.page))
                            .map(|p| p.attempts)
                    })
                    .unwrap_or(u32::MAX);
                let retry = !e.is_client_error() && attempts < self.cfg.max_attempts;
                tracing::warn!(job = %page.job_id, doc = page.doc, page = page.page, attempts,
                               retry, error = %e, "job page failed");
                let r = store.fail_page(&page, &e.to_string(), retry, now);
                if retry {
                    let delay = self
                        .cfg
                        .backoff_base
                        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
                        .min(self.cfg.backoff_cap);
                    let me = self.clone();
                    let again = page.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let prio = me
                            .store
                            .get_job(&again.job_id)
                            .ok()
                            .flatten()
                            .map_or(0, |j| j.priority);
                        me.enqueue([again], prio);
                    });
                }
                r
            }
        };
        match state {
            Ok(s) if s.is_final() => {
                self.finished.send_modify(|n| *n += 1);
                self.notify_job(&page.job_id, s);
                self.cancels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&page.job_id);
                tracing::info!(job = %page.job_id, state = s.as_str(), "job finished");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, job = %page.job_id, "store: page outcome"),
        }
    }

    /// Decodes the page from its document and runs it through the scheduler (bulk class):
    /// the page JSON and its lowest line confidence.
    async fn compute(&self, page: &PageRef) -> Result<(String, Option<f32>)> {
        let job = self
            .store
            .get_job(&page.job_id)?
            .ok_or_else(|| Error::Store(format!("no job {}", page.job_id)))?;
        if job.state == JobState::Cancelled {
            return Err(Error::Store("job cancelled".into()));
        }
        let doc = job
            .documents
            .get(page.doc)
            .ok_or_else(|| Error::Store(format!("no document {} in job {}", page.doc, job.id)))?;
        let opts: JobOptions = serde_json::from_str(&job.options)
            .map_err(|e| Error::Store(format!("job options: {e}")))?;
        let (source, selected) = self.open_document(&doc.path, opts.pages.as_deref()).await?;
        let index = *selected.get(page.page).ok_or_else(|| {
            Error::Store(format!(
                "job page {} is beyond the document's {} selected pages",
                page.page,
                selected.len()
            ))
        })?;
        let image = tokio::task::spawn_blocking(move || source.page(index))
            .await
            .map_err(|e| Error::Runtime(format!("decode task: {e}")))??;
        let class = if opts.interactive == Some(true) {
            Class::Interactive
        } else {
            Class::Bulk
        };
        let ticket = self.scheduler.submit(
            vec![image],
            opts.apply(self.scheduler.base_options()),
            class,
            None,
        )?;
        let outcome = ticket.rx.await.map_err(|_| Error::ShuttingDown)??;
        let page = outcome
            .pages
            .into_iter()
            .next()
            .ok_or_else(|| Error::ModelOutput("the scheduler returned no page".into()))?;
        let min_conf = page
            .lines
            .iter()
            .map(|l| l.confidence)
            .min_by(|a, b| a.total_cmp(b));
        let json = serde_json::to_string(&page)
            .map_err(|e| Error::Runtime(format!("serialising a page: {e}")))?;
        Ok((json, min_conf))
    }
}

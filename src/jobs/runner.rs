//! The job runner: claims pages from the store ([`JobStore::claim`], the store is the queue),
//! runs them through the scheduler, and records each outcome under the page's lease.
//!
//! Tasks (all on the tokio runtime; models run on the scheduler's threads):
//! - two **claim loops**, one per class: interactive pages (hybrid `/v1/ocr`, a caller may be
//!   waiting) have their own `interactive_in_flight` slots and enter the scheduler's interactive
//!   class, so they never wait behind the bulk backlog; bulk pages run at most `max_in_flight`
//!   at once, so bulk work never fills the detection queue interactive callers need. A loop
//!   that finds nothing waits for a local announcement, a store notification (PostgreSQL
//!   `LISTEN`) or the poll interval;
//! - the **heartbeat** renews the leases of running pages every third of the lease; a page
//!   whose lease was lost (its job cancelled on any replica, or the lease expired and another
//!   replica took it) is abandoned at once, and its late result would be fenced out anyway;
//! - the **deliverer** claims due webhook deliveries (leases, so replicas never send the same
//!   attempt) and sends them concurrently (see [`super::webhook`]).
//!
//! Failures follow the error table's retry rule ([`Error::retry`]): scheduler overload is
//! back-pressure (the page keeps its lease and waits, no attempt is counted, it is never
//! dead-lettered for it); permanent errors (the document cannot be decoded) fail the page;
//! others are retried with exponential backoff up to `max_attempts`, then the page is failed
//! (dead-lettered, visible with its reason, retryable by hand). On shutdown, running pages are
//! released to the queue without counting the attempt.
//!
//! **A hung page ends.** Decoding a page and its run through the scheduler each have a
//! wall-clock limit (`page_timeout`, `--job-page-timeout-s`); waiting for memory, for room in
//! the scheduler or in its queue is back-pressure and does not count (the run's limit starts
//! when a model first has the page, seen at the end of a period: between one and two limits),
//! up to four limits in the queue (a wedged worker). A page over it fails with
//! `page_timed_out` and follows the retry rule (backoff, then dead letter), so a page that never
//! finishes can no longer hold its lease for ever. The thread of a decode that never returns
//! cannot be stopped from outside; its page is failed and its lease given up all the same.
//!
//! **A crash charges the page that caused it.** A claimed page waits for its turn, then is
//! recorded as started ([`JobStore::start_page`]) before it is decoded. When a replica is lost
//! (a crash, a kill) its leases expire: a page it had started is charged the attempt and
//! becomes *suspect*; one it had only claimed gets the attempt back ([`super::store::Rescue`]).
//! A suspect page runs alone: it waits until no other page of this replica runs, and none
//! starts beside it. So a page that kills its worker dead-letters itself after `max_attempts`
//! crashes, and the pages claimed with it (another tenant's) are charged at most for the first
//! crash, when nothing could yet tell them apart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, watch};
use tracing::Instrument;

use super::documents::DocumentStore;
use super::model::{Claim, ClaimedPage, JobClass, JobOptions, JobRecord, JobState};
use super::now_ms;
use super::store::JobStore;
use super::webhook::{Deliverer, WebhookConfig};
use crate::document::Document;
use crate::error::{Error, Result, Retry};
use crate::pipeline::Page;
use crate::pipeline::decode::DecodeLimits;
use crate::scheduler::{Class, Profiles, Scheduler};

#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    /// Bulk job pages in the scheduler at once.
    pub max_in_flight: usize,
    /// Interactive (hybrid) job pages in the scheduler at once.
    pub interactive_in_flight: usize,
    /// Attempts per page before it is failed for good.
    pub max_attempts: u32,
    /// Backoff before retry k (1-based): `base · 2^(k−1)`, at most `cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long a claim holds a page without a heartbeat. A replica that dies holds its pages
    /// this long at most; the heartbeat renews every third of it.
    pub lease: Duration,
    /// How often an idle claim loop looks for work without a notification.
    pub poll: Duration,
    pub decode: DecodeLimits,
    pub webhooks: WebhookConfig,
    /// Tags that get their own label in metrics; every other tag is `other` (bounded
    /// cardinality), no tag is the empty label.
    pub metric_tags: Vec<String>,
    /// Longest a page's decode, and separately its run through the scheduler, may take.
    pub page_timeout: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            interactive_in_flight: 4,
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            decode: DecodeLimits::default(),
            webhooks: WebhookConfig::new(Vec::new(), Vec::new()),
            metric_tags: Vec::new(),
            page_timeout: Duration::from_secs(600),
        }
    }
}

/// The metric label of a job tag: itself when listed, `other` when not, empty without a tag.
pub fn tag_label(listed: &[String], tag: Option<&str>) -> String {
    match tag {
        None => String::new(),
        Some(t) if listed.iter().any(|l| l == t) => t.to_string(),
        Some(_) => "other".to_string(),
    }
}

/// A page running here: its job and the switch that abandons it.
struct Running {
    job_id: String,
    cancel: watch::Sender<bool>,
}

pub struct Runner {
    store: Arc<dyn JobStore>,
    /// The default profile's scheduler (rates and retry-after).
    scheduler: Arc<Scheduler>,
    /// Every served profile: a page runs on its job's.
    profiles: Arc<Profiles>,
    documents: Arc<DocumentStore>,
    cfg: RunnerConfig,
    /// This replica's lease owner name.
    owner: String,
    /// Per class: work was announced in this process.
    wake: [Notify; 2],
    /// Bumped whenever a job reaches a final state here; waiters re-read the store.
    finished: watch::Sender<u64>,
    /// Running pages by lease token.
    running: Mutex<HashMap<String, Running>>,
    /// Turns to run: pages share it, a suspect page takes it alone (see the module docs).
    turns: Arc<tokio::sync::RwLock<()>>,
    stopping: AtomicBool,
    deliverer: Arc<Deliverer>,
    /// The last few documents opened, by location: the pages of one PDF are rendered one by
    /// one without re-parsing it for each (a parsed PDF holds its cross-reference table, not
    /// pages).
    open_docs: Mutex<Vec<(String, Arc<Document>)>>,
}

/// Removes a page from the running set when its outcome is recorded (or its task ends).
struct Deregister<'a>(&'a Runner, &'a str);

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.1);
    }
}

/// Documents kept open by [`Runner::open_document`].
const OPEN_DOCUMENTS: usize = 4;

/// A page's turn to run (held while it runs).
enum Turn {
    Shared(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>),
    Alone(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>),
}

/// How long a page released for a profile this replica does not serve stays out of its claims.
const NOT_SERVED_DELAY: Duration = Duration::from_secs(30);

fn class_index(c: JobClass) -> usize {
    c.rank() as usize
}

impl Runner {
    pub fn new(
        store: Arc<dyn JobStore>,
        scheduler: Arc<Scheduler>,
        documents: Arc<DocumentStore>,
        cfg: RunnerConfig,
    ) -> Arc<Self> {
        Self::with_profiles(store, Arc::new(Profiles::single(scheduler)), documents, cfg)
    }

    /// A runner whose pages run on their job's profile.
    pub fn with_profiles(
        store: Arc<dyn JobStore>,
        profiles: Arc<Profiles>,
        documents: Arc<DocumentStore>,
        cfg: RunnerConfig,
    ) -> Arc<Self> {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let deliverer = Deliverer::new(store.clone(), cfg.webhooks.clone(), owner.clone());
        Arc::new(Self {
            store,
            scheduler: profiles.default_scheduler().clone(),
            profiles,
            documents,
            owner,
            wake: [Notify::new(), Notify::new()],
            finished: watch::channel(0).0,
            running: Mutex::new(HashMap::new()),
            turns: Arc::new(tokio::sync::RwLock::new(())),
            stopping: AtomicBool::new(false),
            deliverer,
            open_docs: Mutex::new(Vec::new()),
            cfg,
        })
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn documents(&self) -> &Arc<DocumentStore> {
        &self.documents
    }

    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    pub fn webhooks(&self) -> &WebhookConfig {
        &self.cfg.webhooks
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.cfg
    }

    /// This replica's name as a lease owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Work of `class` was stored in this process: wake its claim loop now.
    pub fn announce(&self, class: JobClass) {
        self.wake[class_index(class)].notify_one();
    }

    /// A webhook delivery may be due: wake the deliverer.
    pub fn announce_delivery(&self) {
        self.deliverer.wake();
    }

    /// Pages running here now.
    pub fn in_flight(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Abandons this process's running pages of a job (after the store cancelled it).
    pub fn abandon_job(&self, job_id: &str) {
        for r in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| r.job_id == job_id)
        {
            let _ = r.cancel.send(true);
        }
    }

    /// Waits until the job is final or `timeout` passes; the job as it is then. Wakes on jobs
    /// finishing here and polls the store for jobs finishing on other replicas.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Result<Option<JobRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.finished.subscribe();
        loop {
            // The state alone while it waits; the whole job once, at the end.
            let state = self.store.job_state(id).await?;
            if state.is_none_or(JobState::is_final) {
                return self.store.get_job(id).await;
            }
            let tick = (tokio::time::Instant::now() + self.cfg.poll).min(deadline);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(tick) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.store.get_job(id).await;
            }
        }
    }

    /// Opens a stored document (or finds it open).
    pub async fn open_document(&self, location: &str) -> Result<Arc<Document>> {
        let cached = {
            let docs = self.open_docs.lock().unwrap_or_else(|p| p.into_inner());
            docs.iter()
                .find(|(l, _)| l == location)
                .map(|(_, d)| d.clone())
        };
        if let Some(d) = cached {
            return Ok(d);
        }
        let bytes = self.documents.get(location).await?;
        let limits = self.cfg.decode.clone();
        let doc = tokio::task::spawn_blocking(move || Document::open(Arc::new(bytes), &limits))
            .await
            .map_err(|e| Error::Runtime(format!("open task: {e}")))??;
        let doc = Arc::new(doc);
        let mut docs = self.open_docs.lock().unwrap_or_else(|p| p.into_inner());
        docs.retain(|(l, _)| l != location);
        docs.insert(0, (location.to_string(), doc.clone()));
        docs.truncate(OPEN_DOCUMENTS);
        Ok(doc)
    }

    /// Starts the claim loops, the heartbeat and the webhook deliverer; returns at once.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(self.deliverer.clone().run());
        tokio::spawn(self.clone().heartbeat_forever());
        for (class, slots) in [
            (JobClass::Interactive, self.cfg.interactive_in_flight),
            (JobClass::Bulk, self.cfg.max_in_flight),
        ] {
            tokio::spawn(self.clone().claim_forever(class, slots.max(1)));
        }
        tracing::info!(owner = %self.owner, backend = self.store.backend(), "job runner started");
    }

    /// Stops claiming new pages; running pages finish.
    pub fn stop_claiming(&self) {
        self.stopping.store(true, Ordering::Release);
        for w in &self.wake {
            w.notify_one();
        }
    }

    /// Stops claiming and gives this replica's running pages back to the queue (no attempt
    /// counted), so another replica or the next start runs them at once; waits (up to 10 s)
    /// until they are released.
    pub async fn shutdown(&self) {
        self.stop_claiming();
        let n = {
            let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
            for x in r.values() {
                let _ = x.cancel.send(true);
            }
            r.len()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if n > 0 {
            tracing::info!(pages = n, "released running job pages for shutdown");
        }
    }

    async fn claim_forever(self: Arc<Self>, class: JobClass, slots: usize) {
        let permits = Arc::new(Semaphore::new(slots));
        loop {
            let Ok(first) = permits.clone().acquire_owned().await else {
                return;
            };
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let mut held = vec![first];
            while let Ok(p) = permits.clone().try_acquire_owned() {
                held.push(p);
            }
            let now = now_ms();
            let claim = Claim {
                owner: self.owner.clone(),
                profiles: self.profiles.keys(),
                class,
                limit: held.len(),
                now_ms: now,
                lease_until_ms: now + self.cfg.lease.as_millis() as i64,
                max_attempts: self.cfg.max_attempts,
            };
            let started = Instant::now();
            let claimed = self.store.claim(&claim).await;
            metrics::histogram!("ocr_job_claim_seconds", "class" => class.as_str())
                .record(started.elapsed().as_secs_f64());
            let pages = match claimed {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "store: claim");
                    drop(held);
                    tokio::time::sleep(self.cfg.poll).await;
                    continue;
                }
            };
            let idle = pages.is_empty();
            for page in pages {
                let permit = held
                    .pop()
                    .expect("claimed more pages than asked. This is a bug.");
                metrics::histogram!("ocr_job_queue_wait_seconds", "class" => class.as_str())
                    .record((now - page.queued_at_ms).max(0) as f64 / 1000.0);
                let me = self.clone();
                tokio::spawn(async move {
                    me.run_page(page).await;
                    drop(permit);
                });
            }
            drop(held);
            if idle {
                tokio::select! {
                    _ = self.wake[class_index(class)].notified() => {}
                    _ = self.store.wait_for_work(self.cfg.poll) => {}
                }
            }
        }
    }

    async fn heartbeat_forever(self: Arc<Self>) {
        let every = (self.cfg.lease / 3).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(every).await;
            let tokens: Vec<String> = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            if tokens.is_empty() {
                continue;
            }
            let until = now_ms() + self.cfg.lease.as_millis() as i64;
            match self.store.renew(&self.owner, &tokens, until).await {
                Ok(held) => {
                    let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                    for t in tokens.iter().filter(|t| !held.contains(t)) {
                        if let Some(r) = running.get(t) {
                            tracing::info!(job = %r.job_id, "lease lost (job cancelled or page taken over): abandoning the page");
                            let _ = r.cancel.send(true);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "store: renew leases"),
            }
        }
    }

    /// A turn to run a page: shared with other pages, or, for a suspect page, alone (it waits
    /// for the running pages to finish, and later pages wait for it).
    async fn turn(&self, suspect: bool) -> Turn {
        if suspect {
            metrics::counter!("ocr_job_pages_suspect_total").increment(1);
            tracing::warn!("a worker was lost while running this page before: it runs alone");
            Turn::Alone(self.turns.clone().write_owned().await)
        } else {
            Turn::Shared(self.turns.clone().read_owned().await)
        }
    }

    /// Whether this replica runs pages with these options: their profile is served here with
    /// the model set the job was created with.
    fn serves(&self, options: &JobOptions) -> bool {
        match self.profiles.get(options.overrides.profile.as_deref()) {
            Ok(s) => options.overrides.model.is_none_or(|m| m == s.kind()),
            Err(_) => false,
        }
    }

    async fn run_page(self: &Arc<Self>, claimed: ClaimedPage) {
        let span = tracing::info_span!("job_page", job = %claimed.lease.page.job_id,
                                       doc = claimed.lease.page.doc, page = claimed.lease.page.page);
        self.run_page_in_span(claimed).instrument(span).await;
    }

    async fn run_page_in_span(self: &Arc<Self>, claimed: ClaimedPage) {
        let lease = claimed.lease.clone();
        let (tx, mut cancel) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                lease.token.clone(),
                Running {
                    job_id: lease.page.job_id.clone(),
                    cancel: tx,
                },
            );
        // Deregistered however this task ends (a panic included), so the heartbeat never
        // renews a page nobody runs.
        let done = Deregister(self, &lease.token);
        let store = &self.store;
        if self.stopping.load(Ordering::Acquire) {
            // Claimed while shutdown began: give it straight back.
            let _ = store.release_page(&lease, now_ms(), now_ms()).await;
            return;
        }
        if !self.serves(&claimed.options) {
            // A job stored before profiles were pinned, on a profile this replica lacks (or
            // whose name here serves another model set): back to the queue for a replica that
            // serves it, the attempt not counted, later than now so this one does not spin.
            tracing::warn!(profile = ?claimed.options.overrides.profile, model = ?claimed.options.overrides.model,
                           served = ?self.profiles.keys(), "job page on a profile not served here: released");
            metrics::counter!("ocr_job_pages_released_total", "reason" => "profile").increment(1);
            let now = now_ms();
            let _ = store
                .release_page(&lease, now + NOT_SERVED_DELAY.as_millis() as i64, now)
                .await;
            return;
        }
        // Its turn: shared, or alone for a suspect page. A cancel or a lost lease while it
        // waits ends it like one while it runs.
        let turn = tokio::select! {
            t = self.turn(claimed.suspect) => Some(t),
            _ = cancel.wait_for(|c| *c) => None,
        };
        let Some(_turn) = turn else {
            if self.stopping.load(Ordering::Acquire) {
                let _ = store.release_page(&lease, now_ms(), now_ms()).await;
            }
            return;
        };
        match store.start_page(&lease).await {
            Ok(true) => {}
            Ok(false) => return, // cancelled or taken over meanwhile
            Err(e) => {
                // Unrecorded, a crash would not be charged to it: do not run it now.
                tracing::error!(error = %e, "store: start page; the page goes back to the queue");
                let now = now_ms();
                let _ = store.release_page(&lease, now + 1_000, now).await;
                return;
            }
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            r = self.compute(&claimed) => Some(r),
            _ = cancel.wait_for(|c| *c) => None,
        };
        let now = now_ms();
        let recorded = match outcome {
            None if self.stopping.load(Ordering::Acquire) => {
                let _ = store.release_page(&lease, now, now).await;
                return;
            }
            None => return, // cancelled or lease lost: nothing of ours to write.
            Some(Ok(page)) => {
                let tag = tag_label(&self.cfg.metric_tags, claimed.tag.as_deref());
                metrics::histogram!("ocr_job_page_seconds", "class" => claimed.class.as_str())
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("ocr_job_pages_completed_total", "tag" => tag.clone())
                    .increment(1);
                let low = claimed
                    .review_threshold
                    .is_some_and(|t| super::model::min_confidence(&page).is_some_and(|c| c < t));
                if low {
                    metrics::counter!("ocr_job_pages_low_confidence_total", "tag" => tag.clone())
                        .increment(1);
                }
                let mut review = super::model::review_reason(
                    claimed.options.overrides.extract,
                    &page,
                    claimed.review_threshold,
                );
                let lease_page = &claimed.lease.page;
                if super::model::sampled_for_review(
                    claimed.options.review_sample_rate,
                    &lease_page.job_id,
                    lease_page.doc,
                    lease_page.page,
                ) {
                    let rate = claimed.options.review_sample_rate.unwrap_or_default();
                    let why = format!("sampled for review (review_sample_rate {rate})");
                    review = Some(match review {
                        Some(r) => format!("{r}; {why}"),
                        None => why,
                    });
                }
                if let Some(why) = &review {
                    tracing::info!(review = %why, "page sent to review by its fields or sampling");
                    metrics::counter!("ocr_job_pages_field_review_total", "tag" => tag)
                        .increment(1);
                }
                store
                    .complete_page(&lease, &page, review.as_deref(), now)
                    .await
            }
            Some(Err(e)) => match e.retry() {
                Retry::After(_) if self.stopping.load(Ordering::Acquire) => {
                    // Shutting down: back to the queue, attempt not counted.
                    let _ = store.release_page(&lease, now, now).await;
                    return;
                }
                rule => {
                    // Overload waits inside `compute`; any other "retry after" outside shutdown
                    // is retried with backoff and counted, so it cannot loop for ever.
                    let retry = rule != Retry::Never && claimed.attempts < self.cfg.max_attempts;
                    let retry_at = retry.then(|| {
                        let delay = self
                            .cfg
                            .backoff_base
                            .saturating_mul(1 << claimed.attempts.saturating_sub(1).min(16))
                            .min(self.cfg.backoff_cap);
                        now + delay.as_millis() as i64
                    });
                    tracing::warn!(attempts = claimed.attempts, retry, error = %e, "job page failed");
                    metrics::counter!("ocr_job_page_failures_total", "code" => e.code(),
                                      "final" => if retry { "false" } else { "true" },
                                      "tag" => tag_label(&self.cfg.metric_tags, claimed.tag.as_deref()))
                    .increment(1);
                    store.fail_page(&lease, &e.to_string(), retry_at, now).await
                }
            },
        };
        match recorded {
            Ok(Some(state)) if state.is_final() => {
                self.finished.send_modify(|n| *n += 1);
                self.deliverer.wake();
                tracing::info!(state = state.as_str(), "job finished");
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                metrics::counter!("ocr_job_fenced_writes_total").increment(1);
                tracing::warn!("page outcome fenced out: the lease was lost before it was written");
            }
            Err(e) => tracing::error!(error = %e, "store: page outcome"),
        }
        drop(done);
    }

    fn timed_out(&self, stage: &'static str) -> Error {
        metrics::counter!("ocr_job_page_timeouts_total", "stage" => stage).increment(1);
        Error::PageTimedOut {
            stage,
            seconds: self.cfg.page_timeout.as_secs_f64().ceil() as u64,
        }
    }

    /// Decodes the page from its document and runs it through the scheduler in its class.
    /// Overload is back-pressure: wait (backing off to 5 s) and submit again, however long it
    /// takes; the lease is renewed meanwhile.
    async fn compute(&self, claimed: &ClaimedPage) -> Result<Page> {
        let source = self.open_document(&claimed.location).await?;
        let index = claimed.source_index;
        // The page's worst case is reserved from the memory budget before it is decoded and
        // held until its result is out; no room is back-pressure like overload (the page waits
        // with its lease, no attempt counted).
        let (image, _reservation) = loop {
            let source = source.clone();
            let decoded = tokio::time::timeout(
                self.cfg.page_timeout,
                tokio::task::spawn_blocking(move || source.decode_one(index)),
            )
            .await
            .map_err(|_| self.timed_out("decode"))?
            .map_err(|e| Error::Runtime(format!("decode task: {e}")))?;
            match decoded {
                Err(e @ Error::MemoryExhausted { .. }) => {
                    metrics::counter!("ocr_job_backpressure_waits_total", "class" => claimed.class.as_str())
                        .increment(1);
                    tracing::debug!(error = %e, "memory budget full: the page waits");
                }
                other => break other?,
            }
        };
        let class = match claimed.class {
            JobClass::Interactive => Class::Interactive,
            JobClass::Bulk => Class::Bulk,
        };
        let scheduler = self
            .profiles
            .get(claimed.options.overrides.profile.as_deref())?;
        let opts = claimed.options.apply(scheduler.base_options());
        let mut wait = Duration::from_millis(250);
        let ticket = loop {
            match scheduler.submit(vec![image.clone()], opts.clone(), class, None) {
                Err(e @ Error::Overloaded { .. }) | Err(e @ Error::NotReady) => {
                    metrics::counter!("ocr_job_backpressure_waits_total", "class" => claimed.class.as_str())
                        .increment(1);
                    tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "scheduler busy: the page waits");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                other => break other?,
            }
        };
        // A dropped reply means a worker failed with the page (a panic), not a shutdown. The
        // limit counts once a model has the page: waiting in the scheduler's queue is
        // back-pressure, up to QUEUE_PERIODS limits (a wedged worker must not hold every later
        // page's lease for ever either). Each period ends with a look: started during it, one
        // more period; started before it, the page has had a whole period and more. Past the
        // limit the ticket is dropped: what is still queued of the page is not run.
        const QUEUE_PERIODS: u32 = 4;
        let started = ticket.started.clone();
        let mut rx = ticket.rx;
        let (mut seen_started, mut queued_periods) = (false, 0);
        let outcome = loop {
            match tokio::time::timeout(self.cfg.page_timeout, &mut rx).await {
                Ok(r) => break r,
                Err(_) if !started.load(Ordering::Acquire) => {
                    queued_periods += 1;
                    if queued_periods >= QUEUE_PERIODS {
                        return Err(self.timed_out("start"));
                    }
                }
                Err(_) if !seen_started => seen_started = true,
                Err(_) => return Err(self.timed_out("recognise")),
            }
        }
        .map_err(|_| Error::Runtime("the scheduler dropped the page without an answer".into()))??;
        outcome
            .pages
            .into_iter()
            .next()
            .ok_or_else(|| Error::ModelOutput("the scheduler returned no page".into()))
    }
}

//! The running scheduler: three stages (detection, orientation, recognition), each a bounded
//! [`Stage`] queue drained by its own named worker threads (`ocr-det-N`, `ocr-cls-N`,
//! `ocr-rec-N`). Every worker loads and owns its model session on its own thread; no session is
//! shared or locked, and no model runs on the async runtime. The three worker loops are one
//! generic loop ([`stage_loop`]) over what differs between stages (a [`Step`]: the model call
//! and the hand-off), so dropping, core slots, metrics and failure handling are written once.
//!
//! The flow of one request:
//! 1. [`Scheduler::submit`] admits all its pages into the detection queue at once or refuses
//!    ([`Error::Overloaded`] with a retry-after from queue depth and measured throughput).
//!    Page items are keyed by detector input shape (of the first pass:
//!    [`crate::engine::det_first_size`]), so one detection batch is one `[N,3,H,W]` run over
//!    pages of the same shape, up to a pixel budget; a page whose options take the detector's
//!    scale from its text size gets its second pass alone, in the same worker
//!    ([`crate::engine::detect_scaled`]).
//! 2. A detection worker runs the batch, post-processes each page with its own options, crops
//!    its lines and hands each line to the orientation queue (if the request asked for it) or
//!    the recognition queue, waiting for room if that queue is full.
//! 3. Recognition items are keyed by **pad width** ([`OcrOptions::rec_pad_width`]: on ONNX
//!    Runtime's CPU the next multiple of 8 px, on CUDA and OpenVINO, or with `--rec-buckets`,
//!    the smallest bucket width that holds the line at height 48) and cost their padded pixels.
//!    One recognition batch takes lines of one pad width from **every in-flight page of every
//!    request**, interactive first; every line is padded to its own pad width, so its
//!    input, and so its text, does not depend on the lines it shares a batch with.
//! 4. The worker that writes a page's last line assembles the page; the one that finishes a
//!    request's last page sends the reply on its oneshot channel.
//!
//! A request whose receiver was dropped (the HTTP caller went away) or whose deadline passed has
//! its queued items dropped before any model sees them, counted by stage and reason.
//!
//! **Deadline-aware admission.** A request with a deadline whose estimated start (the pages
//! ahead of it in its class, at the measured busy rate: [`Throughput`]) is past that deadline is
//! refused at once with [`Error::Overloaded`] and a `Retry-After` from the queue, instead of
//! being admitted and abandoned; and one that still reaches its deadline before any of its
//! pages reached a model is answered the same way (the server did none of its work: that is
//! overload, 429), never [`Error::DeadlineExceeded`], which is kept for work that started. A model
//! error fails every request with an item in that batch; the other requests are untouched.
//!
//! Every request carries a tracing span (`ocr_request{request, pages}`, a child of the caller's
//! span at submit: a job page's `job_page{job, page}`); a worker logs a batch failure or a
//! dropped item once per request it touches, with that span as parent, so the line names the
//! request and its job.
//!
//! Model runs pass the [`CoreGate`] first (on CPU): at most one run per core across all stages,
//! interactive batches before bulk ones; the slot is held only while the model runs.
//!
//! Time accounting per request (the API's `x-*-time` headers): `queue` is, per page, the wait in
//! the detection queue plus the longest wait of its lines in the later queues, summed over
//! pages; `detect`, `classify` and `recognize` are the wall times of the batches that held the
//! request's items, each batch counted once per request.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::oneshot;

use crate::engine::{
    Candidate, Model, ModelFactory, ModelKind, OcrOptions, RecBatch, Role, candidates,
    classify_batch, det_first_size, detect_batch, detect_scaled, finish_page, recognize_batch,
};
use crate::error::{Error, Result};
use crate::pipeline::ctc::Charset;
use crate::pipeline::geometry::Quad;
use crate::pipeline::preprocess::det_input_size;
use crate::pipeline::{Line, Page};

use super::batcher::{BatchPolicy, Class, DropReason, Queued};
use super::gate::{CoreGate, Slot};
use super::stage::{Admit, ClassDepth, Stage};

/// Recognition input height: every crop is resized to it.
const REC_HEIGHT: u64 = 48;

/// One stage's worker count and batch policy.
#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    pub workers: usize,
    pub policy: BatchPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub det: StageConfig,
    /// Used only when the factory has a classifier; 0 workers disables orientation.
    pub cls: StageConfig,
    pub rec: StageConfig,
    /// The server's pipeline options, the recognition padding (`rec_pad`) among them;
    /// requests change only what `RequestOptions` allows.
    pub base: OcrOptions,
    /// Warm up on every recognition width bucket (batch of one and a full batch) and the detector
    /// shapes of common page sizes, not just one of each: on CUDA each new input shape costs a
    /// cuDNN algorithm choice and allocations on first use.
    pub warm_all_shapes: bool,
    /// Most model runs at once across all stages, interactive batches first ([`CoreGate`]);
    /// `None` runs every worker freely (GPU). Default: the number of cores, since every CPU
    /// session is single-threaded.
    pub core_slots: Option<usize>,
}

impl SchedulerConfig {
    /// CPU defaults for a model set: one detection and one orientation worker, one recognition
    /// worker per core (recognition is most of the model time), and batches of one page and one
    /// line: single-threaded CPU sessions are fastest at batch 1 (bench --raw, NOTES.md rows 15
    /// and 18) and a batch of one is also bit-for-bit independent of load, since ONNX Runtime's
    /// kernels round differently with the batch size (a confidence's last digits moved when a
    /// line shared a batch of 32). Batching across requests is still what feeds a GPU:
    /// [`SchedulerConfig::for_cuda`].
    pub fn for_model(kind: ModelKind) -> Self {
        let stage = |workers, max_items, max_cost, delay_ms, capacity| StageConfig {
            workers,
            policy: BatchPolicy {
                max_items,
                max_cost,
                max_delay: Duration::from_millis(delay_ms),
                bulk_aging: Duration::from_secs(5),
                capacity,
            },
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            det: stage(1, 1, 4_000_000, 2, 64),
            cls: stage(1, 32, u64::MAX, 2, 4096),
            rec: stage(cores, 1, REC_HEIGHT * 4096, 5, 4096),
            base: OcrOptions::for_model(kind),
            warm_all_shapes: false,
            core_slots: Some(cores),
        }
    }

    /// These settings for one GPU: detection batches of up to 4 pages and recognition batches
    /// of up to 16 lines of one pad width from any requests, every shape warmed up (the
    /// options' `rec_pad` should be buckets: [`crate::engine::RecPad::for_session`]), two
    /// recognition sessions (more only add memory arenas on one device) and no core gate.
    /// Confidences can then differ from a batch of one by the runtime's rounding.
    pub fn for_cuda(mut self) -> Self {
        self.det.policy.max_items = 4;
        self.rec.policy.max_items = 16;
        self.rec.workers = 2;
        self.warm_all_shapes = true;
        self.core_slots = None;
        self
    }
}

/// Time a request spent, in milliseconds (see the module docs for what each counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Timings {
    pub queue_ms: f64,
    pub detect_ms: f64,
    pub classify_ms: f64,
    pub recognize_ms: f64,
}

/// A finished request.
#[derive(Debug)]
pub struct Outcome {
    pub pages: Vec<Page>,
    pub timings: Timings,
    /// Completion order across the scheduler (1, 2, ...), for tests and logs.
    pub seq: u64,
}

/// What a caller holds while its request runs. Dropping it tells the scheduler the caller has
/// gone: its queued items are dropped instead of computed.
#[derive(Debug)]
pub struct Ticket {
    pub id: u64,
    pub rx: oneshot::Receiver<Result<Outcome>>,
    /// Set when the first of the request's pages enters a model run.
    pub(crate) started: Arc<AtomicBool>,
}

/// Counters since start, for `/v1/queue`, tests and the closing measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub requests: u64,
    pub pages_done: u64,
    pub det_batches: u64,
    pub det_pages: u64,
    pub cls_batches: u64,
    pub cls_lines: u64,
    pub rec_batches: u64,
    pub rec_lines: u64,
    /// Recognition batches that held lines of two or more requests.
    pub rec_mixed_batches: u64,
    /// Pixels of recognition input (batch × 48 × padded width) and of those, real line pixels.
    pub rec_padded_px: u64,
    pub rec_content_px: u64,
    pub dropped_gone: u64,
    pub dropped_expired: u64,
    pub failed_batches: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    pages_done: AtomicU64,
    det_batches: AtomicU64,
    det_pages: AtomicU64,
    cls_batches: AtomicU64,
    cls_lines: AtomicU64,
    rec_batches: AtomicU64,
    rec_lines: AtomicU64,
    rec_mixed_batches: AtomicU64,
    rec_padded_px: AtomicU64,
    rec_content_px: AtomicU64,
    dropped_gone: AtomicU64,
    dropped_expired: AtomicU64,
    failed_batches: AtomicU64,
    seq: AtomicU64,
}

fn add(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// One request in flight.
struct Request {
    id: u64,
    /// `ocr_request{request, pages}`, a child of the caller's span at submit (a job page's
    /// `job_page{job, page}`, for instance): workers log what happens to this request's items
    /// with it as parent, so a batch failure names every request and job it hit.
    span: tracing::Span,
    opts: OcrOptions,
    reply: Mutex<Option<oneshot::Sender<Result<Outcome>>>>,
    pages: Mutex<Vec<Option<Page>>>,
    pages_left: AtomicUsize,
    /// When it was admitted (the busy-rate estimate of [`Throughput`]).
    admitted: Instant,
    /// Set by the detection worker that first runs one of its pages.
    started: Arc<AtomicBool>,
    /// Its class's count of pages in flight ([`Shared::in_flight`]).
    in_flight: Arc<AtomicUsize>,
    queue_us: AtomicU64,
    detect_us: AtomicU64,
    classify_us: AtomicU64,
    recognize_us: AtomicU64,
}

impl Drop for Request {
    /// The pages that did not complete (failed, dropped, or never run) leave the in-flight
    /// count with the request.
    fn drop(&mut self) {
        let left = self.pages_left.load(Ordering::Acquire);
        self.in_flight.fetch_sub(left, Ordering::AcqRel);
    }
}

impl Request {
    /// The caller dropped its ticket, or the request already ended (failed).
    fn is_gone(&self) -> bool {
        let reply = self.reply.lock().unwrap_or_else(|p| p.into_inner());
        reply.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn fail(&self, e: Error) {
        let tx = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(Err(e));
        }
    }

    fn page_done(&self, idx: usize, page: Page, counters: &Counters) {
        add(&counters.pages_done, 1);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.pages.lock().unwrap_or_else(|p| p.into_inner())[idx] = Some(page);
        if self.pages_left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let pages = std::mem::take(&mut *self.pages.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|p| p.expect("all pages are done when the count reaches 0. This is a bug."))
            .collect();
        let ms = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1000.0;
        let outcome = Outcome {
            pages,
            timings: Timings {
                queue_ms: ms(&self.queue_us),
                detect_ms: ms(&self.detect_us),
                classify_ms: ms(&self.classify_us),
                recognize_ms: ms(&self.recognize_us),
            },
            seq: counters.seq.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let tx = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(Ok(outcome));
        }
    }
}

/// A page waiting for detection.
struct PageItem {
    req: Arc<Request>,
    idx: usize,
    image: RgbImage,
    size: (u32, u32),
}

/// A detected page whose lines are in the later stages.
struct PageWork {
    req: Arc<Request>,
    idx: usize,
    dims: (u32, u32),
    quads: Vec<Quad>,
    lines: Mutex<Vec<Option<Line>>>,
    left: AtomicUsize,
    det_wait_us: u64,
    /// Longest wait of any of its lines in the orientation and recognition queues.
    line_wait_us: AtomicU64,
}

impl PageWork {
    /// Stores a recognised line; the call that stores the last one finishes the page and
    /// returns true.
    fn line_done(&self, idx: usize, line: Line, counters: &Counters) -> bool {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())[idx] = Some(line);
        if self.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|l| l.expect("all lines are done when the count reaches 0. This is a bug."))
            .collect();
        let page = finish_page(self.dims, &self.quads, lines, self.req.opts.min_confidence);
        add(
            &self.req.queue_us,
            self.det_wait_us + self.line_wait_us.load(Ordering::Relaxed),
        );
        self.req.page_done(self.idx, page, counters);
        true
    }
}

/// A line crop on its way through orientation and recognition.
struct LineItem {
    page: Arc<PageWork>,
    idx: usize,
    cand: Candidate,
}

/// Page completions, for the throughput estimate behind Retry-After, ETAs and deadline-aware
/// admission. The rate is a **busy** rate: each completion counts the time since the one
/// before it, but never more than its own request has been in the scheduler, so an idle hour
/// before a burst does not make the server look slow.
struct Throughput {
    /// (completed at, busy seconds it accounts for), the last [`Throughput::WINDOW`].
    recent: Mutex<VecDeque<(Instant, f64)>>,
}

impl Throughput {
    const WINDOW: usize = 64;
    /// Completions needed before the rate is trusted to refuse a request.
    const MIN_FOR_ADMISSION: usize = 8;

    fn record(&self, admitted: Instant) {
        let now = Instant::now();
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let since_last = r.back().map_or(f64::INFINITY, |(t, _)| {
            now.saturating_duration_since(*t).as_secs_f64()
        });
        let in_scheduler = now.saturating_duration_since(admitted).as_secs_f64();
        if r.len() == Self::WINDOW {
            r.pop_front();
        }
        r.push_back((now, since_last.min(in_scheduler)));
    }

    /// Pages per second while busy, over the last completions, if at least `min` are known.
    fn rate_from(&self, min: usize) -> Option<f64> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() < min.max(2) {
            return None;
        }
        // The first completion's interval reaches back before the window: leave it out.
        let busy: f64 = r.iter().skip(1).map(|(_, b)| b).sum();
        (busy > 0.0).then(|| (r.len() - 1) as f64 / busy)
    }

    fn rate(&self) -> Option<f64> {
        self.rate_from(2)
    }
}

struct Readiness {
    /// Workers still loading or warming.
    pending: Mutex<(usize, Option<String>)>,
    cv: Condvar,
}

/// State shared by the handle and the workers.
struct Shared {
    cfg: SchedulerConfig,
    kind: ModelKind,
    charset: Arc<Charset>,
    det: Stage<PageItem>,
    cls: Option<Stage<LineItem>>,
    rec: Stage<LineItem>,
    counters: Counters,
    throughput: Throughput,
    readiness: Readiness,
    next_id: AtomicU64,
    /// Shared with the other profiles' schedulers ([`super::profiles`]).
    gate: Option<Arc<CoreGate>>,
    /// Pages admitted and not yet done (completed, failed or dropped), interactive and bulk:
    /// the work ahead of a new request, wherever it is in the pipeline ([`Request`] keeps it
    /// exact: a page done counts off one, the request's end what is left).
    in_flight: [Arc<AtomicUsize>; 2],
}

/// Queue state of the whole scheduler, for `/v1/queue`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueReport {
    /// Pages waiting for detection, per class, with an estimated time to drain them (interactive
    /// work drains first, so the bulk ETA includes the interactive pages).
    pub interactive: ClassEta,
    pub bulk: ClassEta,
    /// Per stage (`det`, `cls`, `rec`): queued items by class.
    pub stages: Vec<StageReport>,
    /// Pages per second over the last completions; null until two pages have completed.
    pub throughput_pages_per_s: Option<f64>,
    pub stats: Stats,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ClassEta {
    pub depth: usize,
    pub oldest_age_s: f64,
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StageReport {
    pub stage: &'static str,
    pub interactive: ClassDepth,
    pub bulk: ClassDepth,
}

/// The handle: submit work, read queue state, shut down. Dropping it shuts down.
pub struct Scheduler {
    shared: Arc<Shared>,
    workers: Mutex<Vec<(Role, JoinHandle<()>)>>,
    closed: AtomicBool,
}

fn class_index(c: Class) -> usize {
    match c {
        Class::Interactive => 0,
        Class::Bulk => 1,
    }
}

fn class_label(c: Class) -> &'static str {
    match c {
        Class::Interactive => "interactive",
        Class::Bulk => "bulk",
    }
}

impl Scheduler {
    /// Starts the worker threads; each loads and warms its model. Returns at once: use
    /// [`Scheduler::wait_ready`] before relying on it (work submitted earlier just waits).
    pub fn start(cfg: SchedulerConfig, factory: Arc<dyn ModelFactory>) -> Result<Self> {
        let gate = cfg.core_slots.map(|n| Arc::new(CoreGate::new(n)));
        Self::start_with_gate(cfg, factory, gate)
    }

    /// [`Scheduler::start`] with the core gate given (shared between profiles) instead of one
    /// of its own from `cfg.core_slots`.
    pub fn start_with_gate(
        cfg: SchedulerConfig,
        factory: Arc<dyn ModelFactory>,
        gate: Option<Arc<CoreGate>>,
    ) -> Result<Self> {
        if cfg.det.workers == 0 || cfg.rec.workers == 0 {
            return Err(Error::InvalidOption(
                "detection and recognition need at least one worker each".into(),
            ));
        }
        cfg.base.validate()?;
        let with_cls = factory.has_classifier() && cfg.cls.workers > 0;
        let total = cfg.det.workers + cfg.rec.workers + if with_cls { cfg.cls.workers } else { 0 };
        let shared = Arc::new(Shared {
            kind: factory.kind(),
            charset: factory.charset(),
            det: Stage::new("det", cfg.det.policy.clone()),
            cls: with_cls.then(|| Stage::new("cls", cfg.cls.policy.clone())),
            rec: Stage::new("rec", cfg.rec.policy.clone()),
            counters: Counters::default(),
            throughput: Throughput {
                recent: Mutex::new(VecDeque::new()),
            },
            readiness: Readiness {
                pending: Mutex::new((total, None)),
                cv: Condvar::new(),
            },
            next_id: AtomicU64::new(1),
            gate,
            in_flight: [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))],
            cfg,
        });
        // Zero-valued series, so dashboards and alerts see them before the first event.
        for stage in ["det", "cls", "rec"] {
            for reason in ["caller_gone", "expired"] {
                metrics::counter!("ocr_dropped_items_total", "stage" => stage, "reason" => reason)
                    .increment(0);
            }
        }
        let mut workers = Vec::new();
        let mut spawn = |role: Role, n: usize| -> Result<()> {
            for i in 0..n {
                let (shared, factory) = (shared.clone(), factory.clone());
                let name = match role {
                    Role::Detector => format!("ocr-det-{i}"),
                    Role::Classifier => format!("ocr-cls-{i}"),
                    Role::Recognizer => format!("ocr-rec-{i}"),
                };
                let h = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || worker_main(shared, factory, role))
                    .map_err(|e| Error::Runtime(format!("spawning a worker thread: {e}")))?;
                workers.push((role, h));
            }
            Ok(())
        };
        spawn(Role::Detector, shared.cfg.det.workers)?;
        if with_cls {
            spawn(Role::Classifier, shared.cfg.cls.workers)?;
        }
        spawn(Role::Recognizer, shared.cfg.rec.workers)?;
        Ok(Self {
            shared,
            workers: Mutex::new(workers),
            closed: AtomicBool::new(false),
        })
    }

    /// Blocks until every worker has loaded and warmed its model, or one failed to (its error).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let r = &self.shared.readiness;
        let deadline = Instant::now() + timeout;
        let mut p = r.pending.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = &p.1 {
                return Err(Error::Runtime(e.clone()));
            }
            if p.0 == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NotReady);
            }
            p =
                r.cv.wait_timeout(p, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
        }
    }

    /// Whether every worker is loaded and warmed.
    pub fn is_ready(&self) -> bool {
        let p = self
            .shared
            .readiness
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        p.0 == 0 && p.1.is_none()
    }

    pub fn kind(&self) -> ModelKind {
        self.shared.kind
    }

    pub fn has_classifier(&self) -> bool {
        self.shared.cls.is_some()
    }

    /// The server's pipeline options, which requests start from.
    pub fn base_options(&self) -> &OcrOptions {
        &self.shared.cfg.base
    }

    /// Admits a request's pages (all or none). `opts` must be the base options with request
    /// overrides applied. Errors: [`Error::Overloaded`] when the detection queue has no room
    /// for all pages, [`Error::ShuttingDown`] after shutdown began, [`Error::InvalidOption`]
    /// for orientation without a classifier.
    pub fn submit(
        &self,
        pages: Vec<RgbImage>,
        opts: OcrOptions,
        class: Class,
        deadline: Option<Instant>,
    ) -> Result<Ticket> {
        self.submit_within(pages, opts, class, deadline, Duration::ZERO)
    }

    /// [`Scheduler::submit`], but waiting up to `patience` for room in the detection queue
    /// before [`Error::Overloaded`]: the back-pressure of in-process callers
    /// ([`crate::ocr::document::ocr_document`]), which would rather wait than retry.
    pub fn submit_within(
        &self,
        pages: Vec<RgbImage>,
        opts: OcrOptions,
        class: Class,
        deadline: Option<Instant>,
        patience: Duration,
    ) -> Result<Ticket> {
        if pages.is_empty() {
            return Err(Error::EmptyInput);
        }
        if opts.classify && self.shared.cls.is_none() {
            return Err(Error::InvalidOption(
                "orientation classification is not enabled on this server".into(),
            ));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let n = pages.len();
        let req = Arc::new(Request {
            id,
            span: tracing::info_span!("ocr_request", request = id, pages = n),
            opts,
            reply: Mutex::new(Some(tx)),
            pages: Mutex::new(vec![None; n]),
            pages_left: AtomicUsize::new(n),
            queue_us: AtomicU64::new(0),
            detect_us: AtomicU64::new(0),
            classify_us: AtomicU64::new(0),
            recognize_us: AtomicU64::new(0),
            admitted: Instant::now(),
            started: Arc::new(AtomicBool::new(false)),
            // Counted now; the request's drop gives back whatever does not complete.
            in_flight: {
                let c = self.shared.in_flight[class_index(class)].clone();
                c.fetch_add(n, Ordering::AcqRel);
                c
            },
        });
        let now = Instant::now();
        if let Some(deadline) = deadline
            && let Some(e) = self.late_start(class, n, now, deadline)
        {
            return Err(e);
        }
        let started = req.started.clone();
        let items = pages
            .into_iter()
            .enumerate()
            .map(|(idx, image)| {
                let size = det_first_size(image.width(), image.height(), &req.opts);
                Queued {
                    cost: size.0 as u64 * size.1 as u64,
                    key: ((size.0 as u64) << 32) | size.1 as u64,
                    item: PageItem {
                        req: req.clone(),
                        idx,
                        image,
                        size,
                    },
                    class,
                    enqueued: now,
                    deadline,
                }
            })
            .collect();
        match self.shared.det.admit_within(items, patience) {
            Ok(()) => {
                add(&self.shared.counters.requests, 1);
                metrics::counter!("ocr_pages_admitted_total", "class" => class_label(class))
                    .increment(n as u64);
                Ok(Ticket { id, rx, started })
            }
            Err(Admit::Closed) => Err(Error::ShuttingDown),
            Err(Admit::Full { depth }) => Err(Error::Overloaded {
                depth,
                retry_after_s: self.retry_after(depth + n),
            }),
        }
    }

    /// The refusal of a request of `pages` pages in `class` that cannot be done by `deadline`:
    /// the pages in flight ahead of it (its class's; interactive pages are ahead of bulk ones)
    /// and its own, at the measured busy rate. In flight, not only queued for detection: the
    /// lines of every admitted page share the recognition stage, so admitted work finishes
    /// together, at about the rate. None when it fits, when nothing is ahead, or while too few
    /// pages have completed to know the rate.
    fn late_start(
        &self,
        class: Class,
        pages: usize,
        now: Instant,
        deadline: Instant,
    ) -> Option<Error> {
        let rate = self
            .shared
            .throughput
            .rate_from(Throughput::MIN_FOR_ADMISSION)?;
        let load = |c: Class| self.shared.in_flight[class_index(c)].load(Ordering::Acquire);
        // This request's own pages were counted in already.
        let ahead = match class {
            Class::Interactive => load(Class::Interactive),
            Class::Bulk => load(Class::Interactive) + load(Class::Bulk),
        }
        .saturating_sub(pages);
        let done_at = now + Duration::from_secs_f64((ahead + pages) as f64 / rate);
        if ahead == 0 || done_at <= deadline {
            return None;
        }
        metrics::counter!("ocr_admission_refused_total", "reason" => "deadline", "class" => class_label(class))
            .increment(1);
        Some(Error::Overloaded {
            depth: ahead,
            retry_after_s: self.retry_after(ahead + pages),
        })
    }

    /// The answer to a request whose deadline passed before any of its pages reached a model:
    /// overload (429 with `Retry-After` from the queue), not a deadline error.
    pub fn overloaded(&self) -> Error {
        overloaded(&self.shared)
    }

    /// Seconds until `pages` queued pages are likely done, from measured throughput (one page
    /// per second per detection worker until two pages have completed); at least 1.
    pub fn retry_after(&self, pages: usize) -> u64 {
        ((pages as f64 / self.pages_per_second()).ceil() as u64).clamp(1, 600)
    }

    /// Measured pages per second (one per detection worker until two pages have completed).
    pub fn pages_per_second(&self) -> f64 {
        self.shared
            .throughput
            .rate()
            .unwrap_or(self.shared.cfg.det.workers as f64)
            .max(1e-3)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests: l(&c.requests),
            pages_done: l(&c.pages_done),
            det_batches: l(&c.det_batches),
            det_pages: l(&c.det_pages),
            cls_batches: l(&c.cls_batches),
            cls_lines: l(&c.cls_lines),
            rec_batches: l(&c.rec_batches),
            rec_lines: l(&c.rec_lines),
            rec_mixed_batches: l(&c.rec_mixed_batches),
            rec_padded_px: l(&c.rec_padded_px),
            rec_content_px: l(&c.rec_content_px),
            dropped_gone: l(&c.dropped_gone),
            dropped_expired: l(&c.dropped_expired),
            failed_batches: l(&c.failed_batches),
        }
    }

    /// Queue depths, ages and ETAs; also publishes them as gauges.
    pub fn queue_report(&self) -> QueueReport {
        let s = &self.shared;
        let mut stages = Vec::new();
        let mut push = |name: &'static str, d: [(Class, ClassDepth); 2]| {
            for (c, cd) in d {
                metrics::gauge!("ocr_queue_depth", "stage" => name, "class" => class_label(c))
                    .set(cd.depth as f64);
                metrics::gauge!("ocr_queue_oldest_age_seconds", "stage" => name, "class" => class_label(c))
                    .set(cd.oldest_age_s);
            }
            stages.push(StageReport {
                stage: name,
                interactive: d[0].1,
                bulk: d[1].1,
            });
        };
        let det = s.det.depths();
        push("det", det);
        if let Some(cls) = &s.cls {
            push("cls", cls.depths());
        }
        push("rec", s.rec.depths());
        let rate = s.throughput.rate();
        let eta = |pages: usize| rate.map(|r| pages as f64 / r);
        let (i, b) = (det[0].1, det[1].1);
        QueueReport {
            interactive: ClassEta {
                depth: i.depth,
                oldest_age_s: i.oldest_age_s,
                eta_s: eta(i.depth),
            },
            bulk: ClassEta {
                depth: b.depth,
                oldest_age_s: b.oldest_age_s,
                eta_s: eta(i.depth + b.depth),
            },
            stages,
            throughput_pages_per_s: rate,
            stats: self.stats(),
        }
    }

    /// Stops admission, lets every admitted item finish, and joins the workers (stage by
    /// stage, so hand-offs always find their downstream open). Idempotent.
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        let mut join = |role: Role| {
            for (_, h) in workers.extract_if(.., |(r, _)| *r == role) {
                if h.join().is_err() {
                    tracing::error!(?role, "a worker thread panicked");
                }
            }
        };
        self.shared.det.close();
        join(Role::Detector);
        if let Some(cls) = &self.shared.cls {
            cls.close();
        }
        join(Role::Classifier);
        self.shared.rec.close();
        join(Role::Recognizer);
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker_main(shared: Arc<Shared>, factory: Arc<dyn ModelFactory>, role: Role) {
    let loaded = factory.load(role).and_then(|mut m| {
        warm_up(&shared, role, m.as_mut())?;
        Ok(m)
    });
    {
        let mut p = shared
            .readiness
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &loaded {
            Ok(_) => p.0 = p.0.saturating_sub(1),
            Err(e) => {
                p.1.get_or_insert_with(|| format!("{role:?} worker: {e}"));
            }
        }
        shared.readiness.cv.notify_all();
    }
    let mut model = match loaded {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(?role, error = %e, "worker could not load its model");
            // Fail whatever arrives so no caller waits forever.
            match role {
                Role::Detector => drain_failing::<Detect>(&shared, &e),
                Role::Classifier => drain_failing::<Classify>(&shared, &e),
                Role::Recognizer => drain_failing::<Recognize>(&shared, &e),
            }
            return;
        }
    };
    match role {
        Role::Detector => stage_loop::<Detect>(&shared, model.as_mut()),
        Role::Classifier => stage_loop::<Classify>(&shared, model.as_mut()),
        Role::Recognizer => stage_loop::<Recognize>(&shared, model.as_mut()),
    }
}

/// Runs each model once on the shapes a first request would bring (an A4 page at 150 dpi, a
/// line of a few words), so the first caller does not pay for allocation and kernel selection.
fn warm_up(shared: &Shared, role: Role, model: &mut dyn Model) -> Result<()> {
    let opts = &shared.cfg.base;
    let all = shared.cfg.warm_all_shapes;
    match role {
        Role::Detector => {
            // A4 at 150 dpi; with `warm_all_shapes` also A4 landscape, US Letter and A4 at 300 dpi.
            let pages: &[(u32, u32)] = if all {
                &[(1240, 1754), (1754, 1240), (1275, 1650), (2480, 3508)]
            } else {
                &[(1240, 1754)]
            };
            let mut seen = Vec::new();
            for &(w, h) in pages {
                let size = det_input_size(w, h, &opts.det_resize);
                if seen.contains(&size) {
                    continue;
                }
                seen.push(size);
                let page = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
                detect_batch(model, &[(&page, opts)], size)?;
            }
        }
        Role::Classifier => {
            let crop = RgbImage::from_pixel(320, 48, image::Rgb([255, 255, 255]));
            classify_batch(model, &[&crop])?;
        }
        Role::Recognizer => {
            let widths = if all {
                opts.rec_pad.warm_widths()
            } else {
                vec![opts.rec_pad_width(320)]
            };
            for w in widths {
                let page = RgbImage::from_pixel(w, 48, image::Rgb([255, 255, 255]));
                let quad = [(0.0, 0.0), (w as f32, 0.0), (w as f32, 48.0), (0.0, 48.0)]
                    .map(|(x, y)| crate::pipeline::geometry::Point::new(x, y));
                let cands = candidates(&page, &[quad], opts);
                let full = if all {
                    let by_cost = shared.cfg.rec.policy.max_cost / (REC_HEIGHT * w as u64).max(1);
                    (shared.cfg.rec.policy.max_items as u64).min(by_cost).max(1) as usize
                } else {
                    1
                };
                let one: Vec<&Candidate> = cands.iter().collect();
                recognize_batch(model, &shared.charset, &one, opts)?;
                if full > 1 {
                    let batch: Vec<&Candidate> = std::iter::repeat_n(&cands[0], full).collect();
                    recognize_batch(model, &shared.charset, &batch, opts)?;
                }
            }
        }
    }
    Ok(())
}

/// 429 `overloaded` with the detection queue's depth and the time to drain it.
fn overloaded(shared: &Shared) -> Error {
    let depth = shared.det.len();
    let rate = shared
        .throughput
        .rate()
        .unwrap_or(shared.cfg.det.workers as f64)
        .max(1e-3);
    Error::Overloaded {
        depth,
        retry_after_s: ((depth.max(1) as f64 / rate).ceil() as u64).clamp(1, 600),
    }
}

/// Counts dropped items and fails expired requests: overload when none of the request's pages
/// reached a model, else a deadline error.
fn record_dropped<T>(
    shared: &Shared,
    stage: &'static str,
    dropped: Vec<(Queued<T>, DropReason)>,
    req: impl Fn(&T) -> &Request,
) {
    for (q, reason) in dropped {
        tracing::debug!(parent: &req(&q.item).span, stage, ?reason, "queued item dropped");
        let label = match reason {
            DropReason::CallerGone => {
                add(&shared.counters.dropped_gone, 1);
                "caller_gone"
            }
            DropReason::Expired => {
                add(&shared.counters.dropped_expired, 1);
                let r = req(&q.item);
                r.fail(if r.started.load(Ordering::Acquire) {
                    Error::DeadlineExceeded
                } else {
                    overloaded(shared)
                });
                "expired"
            }
        };
        metrics::counter!("ocr_dropped_items_total", "stage" => stage, "reason" => label)
            .increment(1);
    }
}

/// Batch metrics common to all stages.
fn observe_batch<T>(
    stage: &'static str,
    policy: &BatchPolicy,
    batch: &[Queued<T>],
    started: Instant,
    model_time: Duration,
    requests: usize,
) {
    let n = batch.len();
    let cost: u64 = batch.iter().map(|q| q.cost).sum();
    let fill = (n as f64 / policy.max_items as f64).max(cost as f64 / policy.max_cost as f64);
    metrics::histogram!("ocr_batch_size", "stage" => stage).record(n as f64);
    metrics::histogram!("ocr_batch_fill_ratio", "stage" => stage).record(fill.min(1.0));
    metrics::histogram!("ocr_batch_requests", "stage" => stage).record(requests as f64);
    metrics::histogram!("ocr_model_seconds", "stage" => stage).record(model_time.as_secs_f64());
    for q in batch {
        metrics::histogram!("ocr_queue_wait_seconds", "stage" => stage, "class" => class_label(q.class))
            .record(started.saturating_duration_since(q.enqueued).as_secs_f64());
    }
}

/// The distinct requests among items, by identity.
fn distinct<'a>(reqs: impl Iterator<Item = &'a Arc<Request>>) -> Vec<&'a Arc<Request>> {
    let mut seen = HashSet::new();
    reqs.filter(|r| seen.insert(r.id)).collect()
}

impl Shared {
    /// Waits for a core slot for a batch (interactive when it holds any interactive item);
    /// `None` when the gate is off. Held while the batch's model runs.
    fn slot<T>(&self, batch: &[Queued<T>]) -> Option<Slot<'_>> {
        let class = if batch.iter().any(|q| q.class == Class::Interactive) {
            Class::Interactive
        } else {
            Class::Bulk
        };
        self.gate.as_ref().map(|g| g.acquire(class))
    }
}

/// What one stage does with a batch; [`stage_loop`] is the skeleton every stage's workers share:
/// take a batch (dropping items whose caller has gone or whose deadline passed), wait for a
/// core slot, run the model, free the slot, record the batch's metrics, then either fail every
/// request in the batch (a model error) or hand each item on ([`Step::hand_off`]).
trait Step {
    type Item;
    /// The model's output for a whole batch.
    type Out;
    /// The stage's label in metrics and logs.
    const NAME: &'static str;
    /// What a failure log line calls it ("detection batch failed").
    const WHAT: &'static str;
    fn stage(shared: &Shared) -> Option<&Stage<Self::Item>>;
    fn request(item: &Self::Item) -> &Arc<Request>;
    fn run(
        shared: &Shared,
        model: &mut dyn Model,
        batch: &[Queued<Self::Item>],
    ) -> Result<Self::Out>;
    /// Counts the batch and passes each item on, after the core slot is freed (a hand-off may
    /// wait for room downstream).
    fn hand_off(
        shared: &Shared,
        batch: Vec<Queued<Self::Item>>,
        out: Self::Out,
        started: Instant,
        model_time: Duration,
        reqs: &[Arc<Request>],
    );
}

fn stage_loop<S: Step>(shared: &Shared, model: &mut dyn Model) {
    let Some(stage) = S::stage(shared) else {
        return;
    };
    while let Some(taken) = stage.next_batch(|i| S::request(i).is_gone()) {
        record_dropped(shared, S::NAME, taken.dropped, |i| S::request(i).as_ref());
        let batch = taken.batch;
        if batch.is_empty() {
            continue;
        }
        let slot = shared.slot(&batch);
        let started = Instant::now();
        let result = S::run(shared, model, &batch);
        let model_time = started.elapsed();
        // Freed before any hand-off that may wait for room downstream: a worker waiting on a
        // full queue must not hold a core slot the downstream workers need to drain it.
        drop(slot);
        let reqs: Vec<Arc<Request>> = distinct(batch.iter().map(|q| S::request(&q.item)))
            .into_iter()
            .cloned()
            .collect();
        observe_batch(
            S::NAME,
            &stage.policy(),
            &batch,
            started,
            model_time,
            reqs.len(),
        );
        match result {
            Ok(out) => S::hand_off(shared, batch, out, started, model_time, &reqs),
            Err(e) => {
                add(&shared.counters.failed_batches, 1);
                for r in reqs {
                    tracing::error!(parent: &r.span, error = %e, items = batch.len(), "{} batch failed", S::WHAT);
                    r.fail(Error::Runtime(e.to_string()));
                }
            }
        }
    }
}

/// A worker without a model fails every item it takes.
fn drain_failing<S: Step>(shared: &Shared, e: &Error) {
    let Some(stage) = S::stage(shared) else {
        return;
    };
    let msg = e.to_string();
    while let Some(t) = stage.next_batch(|i| S::request(i).is_gone()) {
        for q in t.batch {
            S::request(&q.item).fail(Error::Runtime(msg.clone()));
        }
    }
}

/// Detection: one `[N,3,H,W]` run over pages of one input shape; each page's lines are cropped
/// and queued for orientation (when its request asked) or recognition.
struct Detect;

impl Step for Detect {
    type Item = PageItem;
    type Out = Vec<Vec<Quad>>;
    const NAME: &'static str = "det";
    const WHAT: &'static str = "detection";

    fn stage(shared: &Shared) -> Option<&Stage<PageItem>> {
        Some(&shared.det)
    }

    fn request(item: &PageItem) -> &Arc<Request> {
        &item.req
    }

    fn run(_: &Shared, model: &mut dyn Model, batch: &[Queued<PageItem>]) -> Result<Self::Out> {
        for q in batch {
            q.item.req.started.store(true, Ordering::Release);
        }
        let pages: Vec<(&RgbImage, &OcrOptions)> = batch
            .iter()
            .map(|q| (&q.item.image, &q.item.req.opts))
            .collect();
        detect_scaled(model, &pages, batch[0].item.size)
    }

    fn hand_off(
        shared: &Shared,
        batch: Vec<Queued<PageItem>>,
        quads: Self::Out,
        started: Instant,
        _: Duration,
        _: &[Arc<Request>],
    ) {
        add(&shared.counters.det_batches, 1);
        add(&shared.counters.det_pages, batch.len() as u64);
        for (q, quads) in batch.into_iter().zip(quads) {
            let det_wait_us = micros(started.saturating_duration_since(q.enqueued));
            let PageItem {
                req, idx, image, ..
            } = q.item;
            let cands = candidates(&image, &quads, &req.opts);
            let work = Arc::new(PageWork {
                idx,
                dims: image.dimensions(),
                lines: Mutex::new(vec![None; quads.len()]),
                left: AtomicUsize::new(quads.len()),
                quads,
                det_wait_us,
                line_wait_us: AtomicU64::new(0),
                req: req.clone(),
            });
            // Detection time as this request saw it: the batch's wall time, crops included.
            add(&req.detect_us, micros(started.elapsed()));
            if cands.is_empty() {
                add(&req.queue_us, det_wait_us);
                let page = finish_page(work.dims, &[], Vec::new(), req.opts.min_confidence);
                req.page_done(idx, page, &shared.counters);
                shared.throughput.record(req.admitted);
                continue;
            }
            let now = Instant::now();
            for (i, cand) in cands.into_iter().enumerate() {
                let q = line_item(shared, &work, i, cand, q.class, q.deadline, now);
                match (&shared.cls, req.opts.classify) {
                    (Some(cls), true) => cls.push_wait(q),
                    _ => shared.rec.push_wait(q),
                }
            }
        }
    }
}

/// Orientation: lines classified 0° or 180°, turned when upside down, then queued for
/// recognition.
struct Classify;

impl Step for Classify {
    type Item = LineItem;
    type Out = Vec<[f32; 2]>;
    const NAME: &'static str = "cls";
    const WHAT: &'static str = "orientation";

    fn stage(shared: &Shared) -> Option<&Stage<LineItem>> {
        shared.cls.as_ref()
    }

    fn request(item: &LineItem) -> &Arc<Request> {
        &item.page.req
    }

    fn run(_: &Shared, model: &mut dyn Model, batch: &[Queued<LineItem>]) -> Result<Self::Out> {
        let crops: Vec<&RgbImage> = batch.iter().map(|q| &q.item.cand.crop).collect();
        classify_batch(model, &crops)
    }

    fn hand_off(
        shared: &Shared,
        batch: Vec<Queued<LineItem>>,
        probs: Self::Out,
        started: Instant,
        model_time: Duration,
        reqs: &[Arc<Request>],
    ) {
        add(&shared.counters.cls_batches, 1);
        add(&shared.counters.cls_lines, batch.len() as u64);
        for r in reqs {
            add(&r.classify_us, micros(model_time));
        }
        let now = Instant::now();
        for (q, p) in batch.into_iter().zip(probs) {
            let wait = micros(started.saturating_duration_since(q.enqueued));
            q.item.page.line_wait_us.fetch_max(wait, Ordering::Relaxed);
            let LineItem {
                page,
                idx,
                mut cand,
            } = q.item;
            let thresh = page.req.opts.cls_thresh;
            cand.flip_if_upside_down(p, thresh);
            let next = line_item(shared, &page, idx, cand, q.class, q.deadline, now);
            shared.rec.push_wait(next);
        }
    }
}

/// Recognition: lines of one pad width from any requests; the worker that writes a page's
/// last line finishes the page.
struct Recognize;

impl Step for Recognize {
    type Item = LineItem;
    type Out = RecBatch;
    const NAME: &'static str = "rec";
    const WHAT: &'static str = "recognition";

    fn stage(shared: &Shared) -> Option<&Stage<LineItem>> {
        Some(&shared.rec)
    }

    fn request(item: &LineItem) -> &Arc<Request> {
        &item.page.req
    }

    fn run(shared: &Shared, model: &mut dyn Model, batch: &[Queued<LineItem>]) -> Result<RecBatch> {
        let cands: Vec<&Candidate> = batch.iter().map(|q| &q.item.cand).collect();
        recognize_batch(model, &shared.charset, &cands, &shared.cfg.base)
    }

    fn hand_off(
        shared: &Shared,
        batch: Vec<Queued<LineItem>>,
        rec: RecBatch,
        started: Instant,
        model_time: Duration,
        reqs: &[Arc<Request>],
    ) {
        let c = &shared.counters;
        let max_width = shared.cfg.base.rec_max_width;
        add(&c.rec_batches, 1);
        add(&c.rec_lines, batch.len() as u64);
        if reqs.len() >= 2 {
            add(&c.rec_mixed_batches, 1);
        }
        let padded = batch.len() as u64 * REC_HEIGHT * rec.padded_width as u64;
        let content: u64 = batch
            .iter()
            .map(|q| REC_HEIGHT * q.item.cand.rec_width(max_width).min(rec.padded_width) as u64)
            .sum();
        add(&c.rec_padded_px, padded);
        add(&c.rec_content_px, content);
        if padded > 0 {
            metrics::histogram!("ocr_rec_padding_waste_ratio")
                .record(1.0 - content as f64 / padded as f64);
        }
        for r in reqs {
            add(&r.recognize_us, micros(model_time));
        }
        for (q, line) in batch.into_iter().zip(rec.lines) {
            let wait = micros(started.saturating_duration_since(q.enqueued));
            let page = &q.item.page;
            page.line_wait_us.fetch_max(wait, Ordering::Relaxed);
            if page.line_done(q.item.idx, line, c) {
                shared.throughput.record(page.req.admitted);
            }
        }
    }
}

/// Queues a line with its recognition pad width as key and its padded pixels as cost.
fn line_item(
    shared: &Shared,
    page: &Arc<PageWork>,
    idx: usize,
    cand: Candidate,
    class: Class,
    deadline: Option<Instant>,
    now: Instant,
) -> Queued<LineItem> {
    let opts = &shared.cfg.base;
    let width = opts.rec_pad_width(cand.rec_width(opts.rec_max_width));
    Queued {
        item: LineItem {
            page: page.clone(),
            idx,
            cand,
        },
        class,
        enqueued: now,
        deadline,
        cost: REC_HEIGHT * width as u64,
        key: width as u64,
    }
}

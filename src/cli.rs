//! The command line: `ocr-server ocr [--model v4|v5|v6] [--format text|json|jsonl] FILE...` and
//! `ocr-server serve [--host H] [--port P] ...` (the HTTP server, [`crate::api`], with jobs).
//!
//! `--format jsonl` prints one object per input file on its own line:
//! `{"file": <path as given>, "text": <lines joined by \n, pages by \n\n>, "pages": [...]}`, or
//! `{"file": ..., "error": {"code": ..., "message": ...}}` for a file that could not be read. That
//! shape is a contract: extend it, never break it. The exit status is 1 when any file failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use std::sync::Arc;
use std::time::Duration;

use crate::api::{Api, ApiConfig};
use crate::document::{Document, select_pages};
use crate::engine::openvino::{BackendChoice, Precision, resolve_backend, resolve_openvino_lib};
use crate::engine::ort::{
    Device, EngineConfig, OrtFactory, SessionConfig, resolve_models_dir, resolve_ort_lib,
};
use crate::engine::{ModelKind, OcrEngine, OcrOptions, RecPad};
use crate::error::{Error, Result};
use crate::jobs::documents::DocumentStore;
use crate::jobs::now_ms;
use crate::jobs::runner::{Runner, RunnerConfig};
use crate::jobs::service::{JobService, ServiceConfig};
use crate::jobs::store::JobStore;
use crate::jobs::webhook::{WebhookConfig, parse_secret};
use crate::output;
use crate::pipeline::decode::DecodeLimits;
use crate::pipeline::preprocess::{LimitType, Normalize};
use crate::pipeline::{Page, document_text};
use crate::scheduler::{Scheduler, SchedulerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "ocr-server",
    version,
    about = "OCR with PP-OCR models on ONNX Runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// OCR image files (PNG, JPEG, TIFF incl. multi-page, WebP, BMP) and print the result.
    Ocr(Box<OcrArgs>),
    /// Run the HTTP server (POST /v1/ocr, /v1/jobs..., /v1/queue, /health/*, /metrics, /openapi.json).
    Serve(Box<ServeArgs>),
    /// Submit files or directories to a server as jobs, wait, and write each result
    /// (idempotent: a rerun resumes instead of duplicating).
    Submit(Box<crate::client::SubmitArgs>),
    /// Benchmark a server: sync sweep, bulk jobs, mixed load (CSV, plots), and the raw-model
    /// limit (`--raw`).
    Bench(Box<crate::bench::BenchArgs>),
    /// Manage API keys in the job store (`create` prints the new key once, as its last line).
    Keys(Box<KeysArgs>),
}

/// A secret from the command line or environment (a webhook secret, a database URL with a
/// password): its `Debug` output never shows it, so a logged configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A URL keeps its scheme and host; anything that could be a credential is hidden.
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                write!(f, "\"{scheme}://***@{host}\"")
            }
            None => f.write_str("\"***\""),
        }
    }
}

/// `ocr-server keys`: API keys, stored hashed in the job store that `serve` uses.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    /// The data directory of the default SQLite store (as `serve --data-dir`).
    #[arg(long, env = "OCR_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// The job store (as `serve --database-url`).
    #[arg(long, env = "OCR_DATABASE_URL", global = true)]
    pub database_url: Option<Secret>,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it once (the last line of standard output).
    Create(KeyCreateArgs),
    /// List the keys (never the keys themselves).
    List,
    /// Revoke a key: it is refused (401) on every replica within seconds.
    Revoke {
        /// The key's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A unique name: the actor in audit events.
    #[arg(long)]
    pub name: String,
    /// The tenant whose jobs the key creates and sees (default: the key's name); keys of one
    /// tenant share its jobs.
    #[arg(long)]
    pub tenant: Option<String>,
    /// What the key may do: ocr, jobs, review, admin (admin: everything, every tenant).
    #[arg(long, value_delimiter = ',', default_value = "ocr,jobs")]
    pub scopes: Vec<String>,
    /// Requests per second (token bucket refill); unlimited without it.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Requests the bucket holds (default: one second's worth).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Pages per second (OCR and job pages); unlimited without it.
    #[arg(long)]
    pub page_rate: Option<f64>,
    /// Pages the page bucket holds (default: one second's worth).
    #[arg(long)]
    pub page_burst: Option<u32>,
    /// Most queued and processing job pages of the key's tenant (429 `quota_exceeded` past it).
    #[arg(long)]
    pub max_queued_pages: Option<u64>,
}

/// Runs `ocr-server keys`.
pub fn run_keys(args: &KeysArgs) -> Result<bool> {
    let url = args.database_url.as_ref().map_or_else(
        || format!("sqlite://{}", args.data_dir.join("jobs.db").display()),
        |s| s.0.clone(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("starting the async runtime: {e}")))?;
    rt.block_on(async {
        let store = crate::jobs::store::open(&url).await?;
        let mut out = std::io::stdout().lock();
        let io = |e: std::io::Error| Error::Io {
            path: "stdout".into(),
            source: e,
        };
        match &args.action {
            KeysAction::Create(c) => {
                crate::auth::check_name("key name", &c.name)?;
                let tenant = c.tenant.clone().unwrap_or_else(|| c.name.clone());
                crate::auth::check_name("tenant", &tenant)?;
                let mut scopes = Vec::new();
                for s in &c.scopes {
                    let s = crate::auth::Scope::parse(s)?;
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                for (what, rate) in [("--rate-limit", c.rate_limit), ("--page-rate", c.page_rate)] {
                    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                        return Err(Error::InvalidOption(format!("{what} must be above 0")));
                    }
                }
                let key = crate::auth::new_key();
                let record = crate::jobs::model::ApiKey {
                    name: c.name.clone(),
                    tenant: tenant.clone(),
                    hash: crate::auth::hash_key(&key),
                    scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
                    rate_per_s: c.rate_limit,
                    burst: c.burst,
                    pages_per_s: c.page_rate,
                    page_burst: c.page_burst,
                    max_queued_pages: c.max_queued_pages,
                    created_ms: now_ms(),
                    revoked_ms: None,
                };
                store.create_key(&record).await?;
                writeln!(
                    out,
                    "created key {} (tenant {tenant}, scopes {}); it is shown only once:",
                    c.name,
                    record.scopes.join(",")
                )
                .map_err(io)?;
                writeln!(out, "{key}").map_err(io)?;
            }
            KeysAction::List => {
                writeln!(
                    out,
                    "{:<24} {:<24} {:<22} {:>10} {:>10} {:>12} state",
                    "name", "tenant", "scopes", "req/s", "pages/s", "max_queued"
                )
                .map_err(io)?;
                let num = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v}"));
                for k in store.keys().await? {
                    writeln!(
                        out,
                        "{:<24} {:<24} {:<22} {:>10} {:>10} {:>12} {}",
                        k.name,
                        k.tenant,
                        k.scopes.join(","),
                        num(k.rate_per_s),
                        num(k.pages_per_s),
                        k.max_queued_pages
                            .map_or_else(|| "-".into(), |v| v.to_string()),
                        if k.revoked_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    )
                    .map_err(io)?;
                }
            }
            KeysAction::Revoke { name } => {
                if !store.revoke_key(name, now_ms()).await? {
                    return Err(Error::InvalidOption(format!(
                        "no active key named {name:?}"
                    )));
                }
                writeln!(out, "revoked key {name}").map_err(io)?;
            }
        }
        Ok(true)
    })
}

/// `ocr-server serve`: every flag also reads an `OCR_*` environment variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "OCR_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "OCR_PORT", default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Detection worker threads (each owns a detector session).
    #[arg(long, env = "OCR_DET_WORKERS", default_value_t = 1)]
    pub det_workers: usize,
    /// Recognition worker threads, each owning a recogniser session (0 = one per core).
    /// Recognition is about three quarters of the model time on the dev pages, so it gets the
    /// most workers (README, "Server speed").
    #[arg(long, env = "OCR_REC_WORKERS", default_value_t = 0)]
    pub rec_workers: usize,
    /// Orientation worker threads; 0 does not load the classifier (requests asking for
    /// `classify` then get 422).
    #[arg(long, env = "OCR_CLS_WORKERS", default_value_t = 1)]
    pub cls_workers: usize,
    /// Most model runs at once across all stages, interactive batches first (0 = one per core).
    /// Every CPU session is single-threaded and the stages have more workers than cores, so
    /// without this bound a sync caller's batch time-shares a core with bulk batches. Not used
    /// with `--device cuda`.
    #[arg(long, env = "OCR_CORE_SLOTS", default_value_t = 0)]
    pub core_slots: usize,
    /// Most pages in one detection batch (pages batch only with pages of the same input shape).
    /// Default: 1 on CPU (fastest there, and bit-for-bit independent of load), 4 with CUDA.
    #[arg(long, env = "OCR_DET_MAX_BATCH")]
    pub det_max_batch: Option<usize>,
    /// Most detector input pixels in one detection batch.
    #[arg(long, env = "OCR_DET_MAX_PIXELS", default_value_t = 4_000_000)]
    pub det_max_pixels: u64,
    /// Most lines in one recognition batch (lines batch only with lines of the same pad width).
    /// Default: 1 on CPU (fastest there, and bit-for-bit independent of load), 16 with CUDA.
    #[arg(long, env = "OCR_REC_MAX_BATCH")]
    pub rec_max_batch: Option<usize>,
    /// Most padded input pixels (lines × 48 × pad width) in one recognition batch.
    #[arg(long, env = "OCR_REC_MAX_PIXELS", default_value_t = 48 * 4096)]
    pub rec_max_pixels: u64,
    /// A detection batch closes when its oldest page has waited this long (ms).
    #[arg(long, env = "OCR_DET_MAX_DELAY_MS", default_value_t = 2)]
    pub det_max_delay_ms: u64,
    /// An orientation or recognition batch closes when its oldest line has waited this long (ms).
    #[arg(long, env = "OCR_MAX_DELAY_MS", default_value_t = 5)]
    pub max_delay_ms: u64,
    /// Starvation guard (ms): when a stage has served no bulk item for this long while bulk
    /// waited, its bulk items that have waited this long go before interactive ones.
    #[arg(long, env = "OCR_BULK_AGING_MS", default_value_t = 5000)]
    pub bulk_aging_ms: u64,
    /// Pages the detection queue holds; a request that does not fit gets 429.
    #[arg(long, env = "OCR_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Lines the orientation and recognition queues hold (detection waits when they are full).
    #[arg(long, env = "OCR_LINE_QUEUE_CAPACITY", default_value_t = 4096)]
    pub line_queue_capacity: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "OCR_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
    /// Most pixels of one decoded page (422 above).
    #[arg(long, env = "OCR_MAX_PIXELS", default_value_t = 64_000_000)]
    pub max_pixels: u64,
    /// Longest side of one decoded page in pixels (422 above).
    #[arg(long, env = "OCR_MAX_SIDE", default_value_t = 16_384)]
    pub max_side: u32,
    /// Most pages in one document (422 above).
    #[arg(long, env = "OCR_MAX_PAGES", default_value_t = 200)]
    pub max_pages: usize,
    /// Most pages one synchronous `/v1/ocr` request may OCR (413 above: larger documents go to
    /// /v1/jobs or `Prefer: respond-async`).
    #[arg(long, env = "OCR_SYNC_MAX_PAGES", default_value_t = 10)]
    pub sync_max_pages: usize,
    /// Deadline of a request without X-Request-Timeout, in ms (504 after it).
    #[arg(long, env = "OCR_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// Where jobs live by default: `jobs.db` (SQLite, WAL) and `documents/`. Created if missing.
    #[arg(long, env = "OCR_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The job store: `sqlite://PATH` (default `sqlite://<data-dir>/jobs.db`) or
    /// `postgres://USER@HOST:PORT/DB` (one database shared by many replicas).
    #[arg(long, env = "OCR_DATABASE_URL")]
    pub database_url: Option<Secret>,
    /// Where job documents are stored: `file:///PATH` (default `<data-dir>/documents`) or
    /// `s3://BUCKET/PREFIX` with the standard `AWS_*` variables (endpoint, keys, region,
    /// allow-http); replicas share it.
    #[arg(long, env = "OCR_OBJECT_STORE_URL")]
    pub object_store_url: Option<String>,
    /// Largest job document in bytes (413 above); raw uploads are streamed to the store.
    #[arg(long, env = "OCR_MAX_DOCUMENT_BYTES", default_value_t = 512 << 20)]
    pub max_document_bytes: u64,
    /// `POST /v1/jobs` answers 429 when the queued bulk pages (all replicas) would exceed this.
    #[arg(long, env = "OCR_MAX_QUEUED_PAGES", default_value_t = 100_000)]
    pub max_queued_pages: u64,
    /// How long a replica holds a claimed page without renewing its lease (a replica that dies
    /// delays its pages this long at most), in ms.
    #[arg(long, env = "OCR_JOB_LEASE_MS", default_value_t = 30_000)]
    pub job_lease_ms: u64,
    /// `POST /v1/jobs` answers 507 when the disk of a `file://` document store has less free
    /// space than this (MiB).
    #[arg(long, env = "OCR_MIN_FREE_DISK_MB", default_value_t = 1024)]
    pub min_free_disk_mb: u64,
    /// Job tags that get their own label in the job metrics (comma-separated in the env var);
    /// other tags are counted as `other`, so cardinality stays bounded.
    #[arg(long = "metrics-tag", env = "OCR_METRICS_TAGS", value_delimiter = ',')]
    pub metrics_tags: Vec<String>,
    /// Interactive (hybrid) job pages in the scheduler at once, beside the bulk ones.
    #[arg(long, env = "OCR_INTERACTIVE_JOB_CONCURRENCY", default_value_t = 4)]
    pub interactive_job_concurrency: usize,
    /// Job pages in the scheduler at once (bulk class); the rest wait in the job runner so
    /// interactive requests always find room.
    #[arg(long, env = "OCR_JOB_CONCURRENCY", default_value_t = 8)]
    pub job_concurrency: usize,
    /// API keys: `auto` (required as soon as one key exists in the store), `required`, or
    /// `off` (anyone who reaches the port may do anything). Keys: `ocr-server keys create`.
    #[arg(long, env = "OCR_AUTH", value_enum, default_value_t = crate::auth::AuthMode::Auto)]
    pub auth: crate::auth::AuthMode,
    /// Serve /metrics without a key (else it needs the `admin` scope while keys are required).
    #[arg(long, env = "OCR_METRICS_OPEN")]
    pub metrics_open: bool,
    /// Most open HTTP connections; past it the listener stops accepting until one closes.
    #[arg(long, env = "OCR_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// A connection must send a request's headers within this (ms); it is also how long an
    /// idle keep-alive connection is kept.
    #[arg(long, env = "OCR_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Longest pause while a request body is read (ms); the body is cut off after it.
    #[arg(long, env = "OCR_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Attempts per job page before it is failed for good (dead-lettered).
    #[arg(long, env = "OCR_JOB_MAX_ATTEMPTS", default_value_t = 3)]
    pub job_max_attempts: u32,
    /// Finished jobs (results, documents, events) are deleted this long after they finished.
    #[arg(long, env = "OCR_RETENTION_S", default_value_t = 7 * 24 * 3600)]
    pub retention_s: u64,
    /// How long an Idempotency-Key names its job.
    #[arg(long, env = "OCR_IDEMPOTENCY_TTL_S", default_value_t = 24 * 3600)]
    pub idempotency_ttl_s: u64,
    /// Webhook signing secrets, `whsec_<base64>` or raw text; the first signs, all sign during
    /// rotation (comma-separated in the env var). Without one, jobs with `webhook_url` get 422.
    #[arg(
        long = "webhook-secret",
        env = "OCR_WEBHOOK_SECRETS",
        value_delimiter = ','
    )]
    pub webhook_secrets: Vec<Secret>,
    /// Webhook hosts allowed even though they resolve to loopback, private or link-local
    /// addresses (comma-separated in the env var).
    #[arg(
        long = "webhook-allow",
        env = "OCR_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    pub webhook_allow: Vec<String>,
    /// Delivery attempts per webhook event before it is kept as failed (re-sendable).
    #[arg(long, env = "OCR_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,
}

impl ServeArgs {
    /// The scheduler configuration these flags describe, for models loaded with `session`.
    pub fn scheduler_config(&self, session: &SessionConfig) -> SchedulerConfig {
        let mut c = SchedulerConfig::for_model(self.pipeline.model);
        c.base = self.pipeline.options(session);
        if self.runtime.device == Device::Cuda {
            c = c.for_cuda();
        }
        c.det.workers = self.det_workers;
        if let Some(n) = self.det_max_batch {
            c.det.policy.max_items = n.max(1);
        }
        c.det.policy.max_cost = self.det_max_pixels.max(1);
        c.det.policy.max_delay = Duration::from_millis(self.det_max_delay_ms);
        c.det.policy.capacity = self.queue_capacity.max(1);
        c.cls.workers = self.cls_workers;
        if self.rec_workers > 0 {
            c.rec.workers = self.rec_workers;
        }
        if self.runtime.device == Device::Cpu && self.core_slots > 0 {
            c.core_slots = Some(self.core_slots);
        }
        if let Some(n) = self.rec_max_batch {
            c.rec.policy.max_items = n.max(1);
        }
        c.rec.policy.max_cost = self.rec_max_pixels.max(1);
        for p in [&mut c.cls.policy, &mut c.rec.policy] {
            p.max_delay = Duration::from_millis(self.max_delay_ms);
            p.capacity = self.line_queue_capacity.max(1);
        }
        for p in [&mut c.det.policy, &mut c.cls.policy, &mut c.rec.policy] {
            p.bulk_aging = Duration::from_millis(self.bulk_aging_ms);
        }
        c
    }

    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            max_body_bytes: self.max_body_bytes,
            decode: DecodeLimits {
                max_side_px: self.max_side,
                max_pixels: self.max_pixels,
                max_pages: self.max_pages,
                ..self.pipeline.decode_limits()
            },
            default_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_s.max(1)),
            sync_max_pages: self.sync_max_pages.max(1),
            ..ApiConfig::default()
        }
    }
}

/// Runs the server until SIGINT/SIGTERM, then shuts down gracefully: stop admitting, let every
/// admitted request finish, join the workers.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    let engine = args
        .runtime
        .engine_config(args.pipeline.model, args.cls_workers > 0)?;
    let sched = args.scheduler_config(&engine.session);
    let factory = OrtFactory::new(engine)?;
    let scheduler = Arc::new(Scheduler::start(sched, Arc::new(factory))?);
    let object_store_url = match &args.object_store_url {
        Some(u) => u.clone(),
        None => {
            let dir = args.data_dir.join("documents");
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
            let abs = dir.canonicalize().map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
            format!("file://{}", abs.display())
        }
    };
    let documents = Arc::new(DocumentStore::open(
        &object_store_url,
        args.max_document_bytes.max(1),
    )?);
    let database_url = args.database_url.as_ref().map_or_else(
        || format!("sqlite://{}", args.data_dir.join("jobs.db").display()),
        |s| s.0.clone(),
    );
    let mut webhooks = WebhookConfig::new(
        args.webhook_secrets
            .iter()
            .map(|s| parse_secret(&s.0))
            .collect::<Result<Vec<_>>>()?,
        args.webhook_allow.clone(),
    );
    webhooks.max_attempts = args.webhook_max_attempts.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ocr-http")
        .build()
        .map_err(|e| Error::Runtime(format!("starting the async runtime: {e}")))?;
    let store: Arc<dyn JobStore> = rt.block_on(crate::jobs::store::open(&database_url))?;
    // One API configuration, so the sync API, the job service and the runner share one memory
    // budget.
    let api_cfg = args.api_config();
    let runner = Runner::new(
        store.clone(),
        scheduler.clone(),
        documents.clone(),
        RunnerConfig {
            max_in_flight: args.job_concurrency.max(1),
            interactive_in_flight: args.interactive_job_concurrency.max(1),
            max_attempts: args.job_max_attempts.max(1),
            lease: Duration::from_millis(args.job_lease_ms.max(300)),
            decode: api_cfg.decode.clone(),
            webhooks,
            metric_tags: args.metrics_tags.clone(),
            ..RunnerConfig::default()
        },
    );
    let jobs = JobService::new(
        runner.clone(),
        ServiceConfig {
            decode: api_cfg.decode.clone(),
            idempotency_ttl: Duration::from_secs(args.idempotency_ttl_s.max(1)),
            max_queued_pages: args.max_queued_pages,
            min_free_disk_bytes: args.min_free_disk_mb << 20,
        },
    );
    let auth = crate::auth::Auth::new(args.auth, Some(store.clone()), args.metrics_open);
    let api = Api::with_jobs_and_auth(scheduler.clone(), api_cfg, jobs, auth);
    let http = crate::api::serve::HttpLimits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
        ..Default::default()
    };
    let addr = format!("{}:{}", args.host, args.port);
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Io {
                path: addr.clone(),
                source: e,
            })?;
        let bound = listener
            .local_addr()
            .map_or_else(|_| addr.clone(), |a| a.to_string());
        tracing::info!(addr = %bound, model = args.pipeline.model.name(), "listening");
        eprintln!(
            "ocr-server: listening on http://{bound} (model {})",
            args.pipeline.model.name()
        );
        runner.start();
        tokio::spawn(sweep_forever(
            store.clone(),
            documents.clone(),
            Duration::from_secs(args.retention_s),
        ));
        let warm = scheduler.clone();
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<Error>();
        tokio::task::spawn_blocking(move || match warm.wait_ready(Duration::from_secs(600)) {
            Ok(()) => {
                tracing::info!("models loaded and warmed: ready");
                eprintln!("ocr-server: ready");
            }
            Err(e) => {
                let _ = fail_tx.send(e);
            }
        });
        let stop_api = api.clone();
        let stop_runner = runner.clone();
        let startup_error = Arc::new(std::sync::Mutex::new(None));
        let startup_error2 = startup_error.clone();
        crate::api::serve::serve(listener, api.router(), http, async move {
            tokio::select! {
                _ = shutdown_signal() => {
                    eprintln!("ocr-server: shutting down: finishing admitted requests");
                }
                Ok(e) = fail_rx => {
                    *startup_error2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            stop_api.begin_shutdown();
            stop_runner.stop_claiming();
        })
        .await
        .map_err(|e| Error::Io {
            path: addr.clone(),
            source: e,
        })?;
        runner.shutdown().await;
        if let Some(e) = startup_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        Ok::<(), Error>(())
    })?;
    scheduler.shutdown();
    eprintln!("ocr-server: stopped");
    Ok(())
}

/// Deletes finished jobs older than `retention`, with their documents, once a minute
/// (`needs_review` jobs wait for their reviewer whatever their age).
async fn sweep_forever(
    store: Arc<dyn JobStore>,
    documents: Arc<DocumentStore>,
    retention: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let cutoff = now_ms() - retention.as_millis() as i64;
        match store.sweep(cutoff).await {
            Ok(locations) if !locations.is_empty() => {
                tracing::info!(documents = locations.len(), "swept expired jobs");
                documents.delete(locations).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "sweep failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Where the runtime and models are.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// ONNX Runtime shared library. Default: $ORT_DYLIB_PATH, else .runtime/libonnxruntime.so.1.31.1
    /// in the current directory or the checkout (installed by scripts/setup.sh).
    #[arg(long, global = true)]
    pub ort_lib: Option<PathBuf>,
    /// Directory holding the model sets (v4/, v5/, v6/). Default: ./models, else the checkout's.
    #[arg(long, env = "OCR_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per session (0 = ONNX Runtime's default: one per core).
    /// On CPU, one single-threaded session per core beats one session using every core.
    #[arg(long, env = "OCR_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Where the models run. `cuda` needs a binary built with `--features cuda` and the
    /// onnxruntime-gpu wheel's library; without either it falls back to CPU with an error in the
    /// log (never silently). On CUDA the workers warm up on every recognition width bucket and the
    /// common page shapes, and recognition defaults to 2 workers.
    #[arg(long, value_enum, env = "OCR_DEVICE", default_value_t = Device::Cpu, global = true)]
    pub device: Device,
    /// The runtime the models run on. `auto`: OpenVINO in bf16 on a CPU with bf16 instructions
    /// (`avx512_bf16`, `amx_bf16`) when scripts/setup.sh installed it (about 1.8× faster per
    /// model run there, NOTES.md), else ONNX Runtime. The log and `/metrics` (`ocr_backend`)
    /// say which runs.
    #[arg(long, value_enum, env = "OCR_BACKEND", default_value_t = BackendChoice::Auto, global = true)]
    pub backend: BackendChoice,
    /// OpenVINO's inference precision. Default: bf16 where the CPU has it, else f32.
    #[arg(long, value_enum, env = "OCR_PRECISION", global = true)]
    pub precision: Option<Precision>,
    /// OpenVINO's C library. Default: $OCR_OPENVINO_LIB, else .runtime/openvino/libopenvino_c.so.2640
    /// in the current directory or the checkout (installed by scripts/setup.sh).
    #[arg(long, global = true)]
    pub openvino_lib: Option<PathBuf>,
}

impl RuntimeArgs {
    /// Where and how to load `kind`: paths resolved, the backend decided (and logged).
    pub fn engine_config(&self, kind: ModelKind, with_classifier: bool) -> Result<EngineConfig> {
        let lib = resolve_openvino_lib(self.openvino_lib.as_deref());
        Ok(EngineConfig {
            kind,
            models_dir: resolve_models_dir(self.models_dir.as_deref()),
            ort_lib: resolve_ort_lib(self.ort_lib.as_deref()),
            session: SessionConfig {
                intra_threads: self.threads,
                device: self.device,
                backend: resolve_backend(
                    self.backend,
                    self.precision,
                    self.device == Device::Cuda,
                    &lib,
                )?,
            },
            with_classifier,
        })
    }
}

/// Options of the OCR pipeline; the defaults are the measured best (README).
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Model set.
    #[arg(long, value_enum, default_value_t = ModelKind::V6, env = "OCR_MODEL")]
    pub model: ModelKind,
    /// Detector input sizing rule: `min` upscales so the short side reaches --det-limit-side,
    /// `max` downscales so the long side stays under it. Default: the model set's (v4, v6: min;
    /// v5: max).
    #[arg(long, value_enum)]
    pub det_limit_type: Option<DetLimit>,
    /// Side length for --det-limit-type, in pixels. Default: the model set's (736; v5: 960).
    #[arg(long)]
    pub det_limit_side: Option<u32>,
    /// Detector input normalisation. Default: the model set's (v4, v6: half; v5: imagenet).
    #[arg(long, value_enum)]
    pub det_norm: Option<DetNorm>,
    /// Minimum mean probability inside a detected box.
    #[arg(long, default_value_t = 0.5)]
    pub box_thresh: f32,
    /// How far detected boxes are grown (area · ratio / perimeter).
    #[arg(long, default_value_t = 1.6)]
    pub unclip_ratio: f32,
    /// Dilate the detector's binary map (true|false). Default: the model set's (v5: false).
    #[arg(long)]
    pub dilation: Option<bool>,
    /// Run the 180° line orientation classifier.
    #[arg(long)]
    pub classify: bool,
    /// Drop lines whose confidence is below this.
    #[arg(long, default_value_t = 0.5)]
    pub min_confidence: f32,
    /// Pad recognition inputs to at least this width (PaddleOCR pads to 320; measured: no
    /// accuracy change without it, 1.19× faster).
    #[arg(long, default_value_t = 48)]
    pub rec_min_width: u32,
    /// Lines per recognition batch (`ocr`; the server batches by --rec-max-batch). 1, as the
    /// server on CPU: the fastest there, and the same results as the server's.
    #[arg(long, default_value_t = 1)]
    pub rec_batch: usize,
    /// Recognition pad widths (ascending, comma-separated): every line is padded to the first
    /// that holds it, whatever it is batched with, and batches hold one width each. Default:
    /// the next multiple of 8 px with ONNX Runtime on CPU, `engine::REC_BUCKETS` with CUDA or
    /// OpenVINO (16 px steps to 160, then about 1/8 of the width, up to 2400).
    #[arg(long, env = "OCR_REC_BUCKETS", value_delimiter = ',')]
    pub rec_buckets: Vec<u32>,
    /// Resolution PDF pages are rendered at (lowered for pages that would exceed the pixel
    /// limits).
    #[arg(long, env = "OCR_PDF_DPI", default_value_t = crate::pipeline::decode::DEFAULT_PDF_DPI)]
    pub pdf_dpi: f32,
    /// Most bytes the streams of one PDF page may decode to; a page over it fails alone with
    /// `decompressed_too_large` (422 for a one-page request) before anything inflates it.
    #[arg(long, env = "OCR_MAX_DECOMPRESSED_BYTES_PER_PAGE", default_value_t = crate::pipeline::decode::DEFAULT_MAX_DECOMPRESSED_BYTES_PER_PAGE)]
    pub max_decompressed_bytes_per_page: u64,
    /// Memory (MiB) that decoded and rendered pages may hold at once, server-wide: every decode
    /// reserves its worst case first (default: half the machine's or the cgroup's memory).
    #[arg(long, env = "OCR_MEMORY_BUDGET_MB")]
    pub memory_budget_mb: Option<u64>,
    /// How long a decode waits for room in the memory budget before 503 `memory_exhausted`.
    #[arg(long, env = "OCR_MEMORY_WAIT_MS", default_value_t = 10_000)]
    pub memory_wait_ms: u64,
}

impl PipelineArgs {
    /// The decode limits these options give, with a new memory budget (build it once per
    /// process and clone it).
    pub fn decode_limits(&self) -> DecodeLimits {
        let budget = self
            .memory_budget_mb
            .map_or_else(crate::memory::default_budget_bytes, |mb| mb.max(1) << 20);
        DecodeLimits {
            pdf_dpi: self.pdf_dpi,
            max_decompressed_bytes_per_page: self.max_decompressed_bytes_per_page.max(1),
            memory: crate::memory::MemoryBudget::new(
                budget,
                Duration::from_millis(self.memory_wait_ms),
            ),
            ..DecodeLimits::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetLimit {
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetNorm {
    /// (x/255 − 0.5)/0.5, as RapidOCR.
    Half,
    /// ImageNet mean/std, as PaddleOCR.
    Imagenet,
}

impl PipelineArgs {
    /// The pipeline options for models loaded with `session` (the recognition padding's
    /// default depends on the runtime: [`RecPad::for_session`]).
    pub fn options(&self, session: &SessionConfig) -> OcrOptions {
        let mut o = OcrOptions::for_model(self.model);
        if let Some(t) = self.det_limit_type {
            o.det_resize.limit_type = match t {
                DetLimit::Min => LimitType::Min,
                DetLimit::Max => LimitType::Max,
            };
        }
        if let Some(side) = self.det_limit_side {
            o.det_resize.limit_side_px = side;
        }
        if let Some(n) = self.det_norm {
            o.det_norm = match n {
                DetNorm::Half => Normalize::HALF,
                DetNorm::Imagenet => Normalize::IMAGENET_BGR,
            };
        }
        if let Some(d) = self.dilation {
            o.db.use_dilation = d;
        }
        o.db.box_thresh = self.box_thresh;
        o.db.unclip_ratio = self.unclip_ratio;
        o.classify = self.classify;
        o.min_confidence = self.min_confidence;
        o.rec_min_width = self.rec_min_width;
        o.rec_batch = self.rec_batch.max(1);
        o.rec_pad = if self.rec_buckets.is_empty() {
            RecPad::for_session(session)
        } else {
            RecPad::Buckets(self.rec_buckets.as_slice().into())
        };
        o
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Plain text; with several files, each is headed by `==> FILE <==`.
    Text,
    /// One JSON array of per-file objects.
    Json,
    /// One JSON object per file per line.
    Jsonl,
    /// hOCR 1.2 (one FILE).
    Hocr,
    /// A searchable PDF (one FILE): the page images, or the original PDF's own pages, under an
    /// invisible text layer.
    Pdf,
}

#[derive(Debug, Args)]
pub struct OcrArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Files OCRed in parallel, each worker with its own sessions (0 = cores / --threads).
    #[arg(long, env = "OCR_JOBS", default_value_t = 0)]
    pub jobs: usize,
    /// Print pages, seconds and pages/s to standard error at the end.
    #[arg(long)]
    pub stats: bool,
    /// Pages of each document to OCR, 1-based: `1-3,7`, `5-` (default: all).
    #[arg(long)]
    pub pages: Option<String>,
    /// Write the output to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Documents: PDF, PNG, JPEG, TIFF (every page), WebP, BMP.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// What one file produced: its pages (failed pages carry their error) and, for `hocr` and
/// `pdf`, the rendered output.
#[derive(Debug)]
pub struct FileOutput {
    pub pages: Vec<Page>,
    pub rendered: Option<Vec<u8>>,
}

/// The per-file output object of `--format json|jsonl`.
#[derive(Debug, Serialize)]
pub struct FileResult {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<Page>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FileError>,
}

#[derive(Debug, Serialize)]
pub struct FileError {
    pub code: &'static str,
    pub message: String,
}

/// OCR of one document's bytes: every page, one decoded page in memory at a time.
pub fn ocr_bytes(
    engine: &mut OcrEngine,
    bytes: &[u8],
    opts: &OcrOptions,
    limits: &DecodeLimits,
) -> Result<Vec<Page>> {
    let doc = Document::open(Arc::new(bytes.to_vec()), limits)?;
    let selected = select_pages(None, doc.page_count(), limits.max_pages)?;
    ocr_document(engine, &doc, &selected, opts)
}

/// OCR of the `selected` pages of a document. A page that cannot be decoded or rendered becomes
/// a [`Page::failed`] (when every page fails, the first page's error is the result, as for
/// `/v1/ocr`); a model failure fails the whole call.
pub fn ocr_document(
    engine: &mut OcrEngine,
    doc: &Document,
    selected: &[usize],
    opts: &OcrOptions,
) -> Result<Vec<Page>> {
    let mut pages = Vec::with_capacity(selected.len());
    let mut first_error = None;
    for &i in selected {
        // Reserved from the memory budget before decoding, released with the page.
        let decoded = doc.reserve(&[i]).and_then(|(mut checks, reservation)| {
            checks.pop().unwrap_or(Ok(()))?;
            Ok((doc.page(i)?, reservation))
        });
        match decoded {
            Ok((img, _reservation)) => pages.push(engine.ocr_page(&img, opts)?),
            Err(e) => {
                pages.push(Page::failed(&e));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if pages.iter().all(|p| p.error.is_some()) => Err(e),
        _ => Ok(pages),
    }
}

/// Reads one file and OCRs the selected pages of it; renders `hocr`/`pdf` output.
fn ocr_file(
    engine: &mut OcrEngine,
    path: &std::path::Path,
    opts: &OcrOptions,
    limits: &DecodeLimits,
    args: &OcrArgs,
) -> Result<FileOutput> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let doc = Document::open(Arc::new(bytes), limits)?;
    let selected = select_pages(args.pages.as_deref(), doc.page_count(), limits.max_pages)?;
    let pages = ocr_document(engine, &doc, &selected, opts)?;
    let format = match args.format {
        OutputFormat::Hocr => Some(output::Format::Hocr),
        OutputFormat::Pdf => Some(output::Format::Pdf),
        _ => None,
    };
    let rendered = format
        .map(|f| {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            );
            output::render(f, &doc, &name, &selected, &pages)
        })
        .transpose()?;
    Ok(FileOutput { pages, rendered })
}

/// Number of parallel workers: `--jobs`, or cores / threads per session; never more than files.
fn worker_count(args: &OcrArgs) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // threads = 0 lets one session take every core: then one worker.
    let jobs = if args.jobs > 0 {
        args.jobs
    } else {
        cores.checked_div(args.runtime.threads).unwrap_or(1).max(1)
    };
    jobs.clamp(1, args.files.len().max(1))
}

/// Runs `ocr-server ocr`. Returns whether every file succeeded.
///
/// Files are OCRed by `worker_count` named threads (`ocr-cli-N`), each owning its own engine and
/// taking the next file index from a shared counter; this thread writes results in input order.
/// A worker needs a permit to take a file and a permit comes back only when that file's result
/// is written, so at most [`WINDOW_PER_WORKER`] × workers results exist at once (bounded memory
/// however slow one file is), and no worker idles while files remain.
pub fn run_ocr(args: &OcrArgs, out: &mut dyn Write) -> Result<bool> {
    if matches!(args.format, OutputFormat::Hocr | OutputFormat::Pdf) && args.files.len() != 1 {
        return Err(Error::InvalidOption(
            "--format hocr and --format pdf take exactly one FILE".into(),
        ));
    }
    if let Some(path) = &args.output {
        let file = std::fs::File::create(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut w = std::io::BufWriter::new(file);
        let ok = run_ocr_to(args, &mut w)?;
        w.flush().map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        return Ok(ok);
    }
    run_ocr_to(args, out)
}

fn run_ocr_to(args: &OcrArgs, out: &mut dyn Write) -> Result<bool> {
    let jobs = worker_count(args);
    let cfg = args
        .runtime
        .engine_config(args.pipeline.model, args.pipeline.classify)?;
    let opts = args.pipeline.options(&cfg.session);
    let factory = OrtFactory::new(cfg)?;
    let engines = (0..jobs)
        .map(|_| factory.engine())
        .collect::<Result<Vec<_>>>()?;
    let limits = args.pipeline.decode_limits();
    let started = Instant::now();
    let mut report = Report {
        format: args.format,
        multi: args.files.len() > 1,
        pages: 0,
        all_ok: true,
        json_items: Vec::new(),
    };
    let window = jobs * WINDOW_PER_WORKER;
    let (permit_tx, permit_rx) = crossbeam_channel::bounded::<()>(window);
    for _ in 0..window {
        permit_tx
            .send(())
            .expect("the permit channel has room for the window. This is a bug.");
    }
    let (result_tx, result_rx) = crossbeam_channel::bounded::<(usize, Result<FileOutput>)>(window);
    let next = AtomicUsize::new(0);
    let files = &args.files;
    std::thread::scope(|s| -> Result<()> {
        // Owned by this closure: on any return they are dropped before the scope joins the
        // workers, which wakes a worker blocked on a permit or on a full result channel.
        let (permit_tx, result_rx) = (permit_tx, result_rx);
        for (i, mut engine) in engines.into_iter().enumerate() {
            let (next, permit_rx, result_tx, opts, limits) =
                (&next, permit_rx.clone(), result_tx.clone(), &opts, &limits);
            std::thread::Builder::new()
                .name(format!("ocr-cli-{i}"))
                .spawn_scoped(s, move || {
                    while permit_rx.recv().is_ok() {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(k) else { break };
                        if result_tx
                            .send((k, ocr_file(&mut engine, path, opts, limits, args)))
                            .is_err()
                        {
                            break;
                        }
                    }
                })
                .expect("spawning a CLI worker thread");
        }
        drop(result_tx);
        let mut pending: BTreeMap<usize, Result<FileOutput>> = BTreeMap::new();
        let mut written = 0;
        for (k, r) in result_rx.iter() {
            pending.insert(k, r);
            while let Some(r) = pending.remove(&written) {
                let emitted = report.emit(&files[written].display().to_string(), r, out);
                written += 1;
                // Releases a worker even when writing failed, so the scope can end.
                let _ = permit_tx.send(());
                emitted?;
            }
            if written == files.len() {
                break;
            }
        }
        Ok(())
    })?;
    report.finish(out)?;
    if args.stats {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "ocr-server: {} files, {} pages in {secs:.2} s ({:.3} pages/s, model {}, {jobs} workers × {} threads)",
            args.files.len(),
            report.pages,
            report.pages as f64 / secs,
            args.pipeline.model.name(),
            args.runtime.threads
        );
    }
    Ok(report.all_ok)
}

/// Files in flight per worker: enough to keep workers busy when file sizes differ.
const WINDOW_PER_WORKER: usize = 4;

/// Writes results in the chosen format as they come, in input order.
struct Report {
    format: OutputFormat,
    multi: bool,
    pages: usize,
    all_ok: bool,
    json_items: Vec<FileResult>,
}

fn stdout_error(e: impl Into<std::io::Error>) -> Error {
    Error::Io {
        path: "<stdout>".into(),
        source: e.into(),
    }
}

impl Report {
    fn emit(&mut self, shown: &str, result: Result<FileOutput>, out: &mut dyn Write) -> Result<()> {
        let mut rendered = None;
        let item = match result {
            Ok(FileOutput { pages, rendered: r }) => {
                self.pages += pages.len();
                rendered = r;
                for (i, p) in pages.iter().enumerate() {
                    if let Some(e) = &p.error {
                        self.all_ok = false;
                        eprintln!(
                            "ocr-server: {shown}: page {} of the selection: {}",
                            i + 1,
                            e.message
                        );
                    }
                }
                FileResult {
                    file: shown.to_string(),
                    text: Some(document_text(&pages)),
                    pages: Some(pages),
                    error: None,
                }
            }
            Err(e) => {
                self.all_ok = false;
                eprintln!("ocr-server: {shown}: {e}");
                FileResult {
                    file: shown.to_string(),
                    text: None,
                    pages: None,
                    error: Some(FileError {
                        code: e.code(),
                        message: e.to_string(),
                    }),
                }
            }
        };
        match self.format {
            OutputFormat::Jsonl => {
                serde_json::to_writer(&mut *out, &item).map_err(stdout_error)?;
                writeln!(out).map_err(stdout_error)?;
            }
            OutputFormat::Json => self.json_items.push(item),
            OutputFormat::Text => {
                if let Some(pages) = &item.pages {
                    if self.multi {
                        writeln!(out, "==> {shown} <==").map_err(stdout_error)?;
                    }
                    writeln!(out, "{}", output::text(pages)).map_err(stdout_error)?;
                }
            }
            OutputFormat::Hocr | OutputFormat::Pdf => {
                if let Some(bytes) = rendered {
                    out.write_all(&bytes).map_err(stdout_error)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> Result<()> {
        if self.format == OutputFormat::Json {
            serde_json::to_writer_pretty(&mut *out, &self.json_items).map_err(stdout_error)?;
            writeln!(out).map_err(stdout_error)?;
        }
        Ok(())
    }
}

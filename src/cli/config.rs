//! The flags that configure the runtime, the pipeline and the server, and what they build.
//! Every `serve` flag also reads an `OCR_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::Secret;
use crate::api::ApiConfig;
use crate::engine::openvino::{Precision, resolve_openvino_lib};
use crate::engine::ort::{Device, IoBindingChoice, resolve_ort_lib};
use crate::engine::runtime::{BackendChoice, resolve_backend};
use crate::engine::runtime::{EngineConfig, SessionConfig, resolve_models_dir};
use crate::engine::{DetScale, ModelKind, OcrOptions, RecPad};
use crate::error::Result;
use crate::pipeline::decode::DecodeLimits;
use crate::pipeline::preprocess::{LimitType, Normalize};
use crate::scheduler::SchedulerConfig;

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
    /// Model profiles served by this process, the first the default for requests without
    /// `profile=`: `NAME[:KEY=VALUE,...]`, keys `model`, `models-dir`, `det-limit-type`,
    /// `det-limit-side`, `det-scale`; a key not given takes this server's own flag. Each profile
    /// has its own workers and batches; all share the core gate. Default: `accurate` (the
    /// server's flags) and `fast` (PP-OCRv4 mobile, detection at most 640 px on the long side:
    /// 0.48× the sync p50 of `accurate` on the dev pages, docs/api.md, "Model profiles and the two-pass hybrid").
    #[arg(
        long = "profile",
        env = "OCR_PROFILES",
        value_delimiter = ';',
        default_values = ["accurate", "fast:model=v4,det-limit-type=max,det-limit-side=640"]
    )]
    pub profiles: Vec<ProfileArg>,
    /// Detection worker threads (each owns a detector session).
    #[arg(long, env = "OCR_DET_WORKERS", default_value_t = 1)]
    pub det_workers: usize,
    /// Recognition worker threads, each owning a recogniser session (0 = one per core).
    /// Recognition is about three quarters of the model time on the dev pages, so it gets the
    /// most workers (docs/performance-history.md, "Server speed").
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
    /// Documents one job may name (422 `too_many_documents` above).
    #[arg(long, env = "OCR_MAX_DOCUMENTS_PER_JOB", default_value_t = 1_000)]
    pub max_documents_per_job: usize,
    /// Jobs one tenant may have stored, in any state (429 `storage_quota_exceeded` past it;
    /// finished jobs are swept after --retention-s).
    #[arg(long, env = "OCR_TENANT_MAX_JOBS", default_value_t = 100_000)]
    pub tenant_max_jobs: u64,
    /// MiB of documents one tenant may have stored (429 `storage_quota_exceeded` past it).
    #[arg(long, env = "OCR_TENANT_MAX_STORED_MB", default_value_t = 100 * 1024)]
    pub tenant_max_stored_mb: u64,
    /// Job creations that read and count their documents at once (each document read from the
    /// store is reserved from the memory budget while it is counted); others wait their turn.
    #[arg(long, env = "OCR_MAX_CONCURRENT_CREATIONS", default_value_t = 4)]
    pub max_concurrent_creations: usize,
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
    /// API keys: `auto` (required as soon as the store has ever had a key; revoking them all
    /// locks the server), `required`, or `off` (anyone who reaches the port may do anything).
    /// With `auto`, a non-loopback --host and no key, `serve` refuses to start. Keys:
    /// `ocr-server keys create`.
    #[arg(long, env = "OCR_AUTH", value_enum, default_value_t = crate::auth::AuthMode::Auto)]
    pub auth: crate::auth::AuthMode,
    /// A bootstrap key (at least 32 characters), stored hashed with the `admin` scope before the
    /// server listens, unless a key with that hash exists (revoked or not). Prefer the file.
    #[arg(long, env = "OCR_BOOTSTRAP_KEY", hide_env_values = true)]
    pub bootstrap_key: Option<Secret>,
    /// Host names the server answers to besides loopback and the bound address (`*`: any);
    /// other `Host` headers get 403 (DNS rebinding). Bound to 0.0.0.0 with none given, any
    /// Host is answered (keys are required there).
    #[arg(
        long = "allowed-host",
        env = "OCR_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// A file holding the bootstrap key (a mounted secret), read at startup.
    #[arg(long, env = "OCR_BOOTSTRAP_KEY_FILE")]
    pub bootstrap_key_file: Option<PathBuf>,
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
    /// Slowest average request-body rate (bytes/s) accepted once --body-timeout-ms has passed
    /// since the request began; a slower body is cut off (0: no minimum).
    #[arg(long, env = "OCR_BODY_MIN_RATE", default_value_t = 16 << 10)]
    pub body_min_rate: u64,
    /// Longest a job page's decode, and separately its recognition, may take (s); past it the
    /// page fails with page_timed_out and is retried with backoff, then dead-lettered.
    #[arg(long, env = "OCR_JOB_PAGE_TIMEOUT_S", default_value_t = 600)]
    pub job_page_timeout_s: u64,
    /// Attempts per job page before it is failed for good (dead-lettered).
    #[arg(long, env = "OCR_JOB_MAX_ATTEMPTS", default_value_t = 3)]
    pub job_max_attempts: u32,
    /// Finished jobs (results, documents, events) are deleted this long after they finished.
    #[arg(long, env = "OCR_RETENTION_S", default_value_t = 7 * 24 * 3600)]
    pub retention_s: u64,
    /// Jobs waiting for review (`needs_review`) untouched this long are deleted too (never
    /// shorter than --retention-s).
    #[arg(long, env = "OCR_REVIEW_RETENTION_S", default_value_t = 30 * 24 * 3600)]
    pub review_retention_s: u64,
    /// A replica whose clock differs from the store's (PostgreSQL) by more than this refuses
    /// to sweep (it still uses the store's time for leases and expiries), in ms.
    #[arg(long, env = "OCR_MAX_CLOCK_SKEW_MS", default_value_t = 2_000)]
    pub max_clock_skew_ms: u64,
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

/// One model profile (`--profile NAME[:KEY=VALUE,...]`): the server's flags with these
/// overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileArg {
    pub name: String,
    pub model: Option<ModelKind>,
    pub models_dir: Option<PathBuf>,
    pub det_limit_type: Option<DetLimit>,
    pub det_limit_side: Option<u32>,
    pub det_scale: Option<DetScaleArg>,
}

impl std::str::FromStr for ProfileArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "profile name `{name}`: letters, digits, - and _ only"
            ));
        }
        let mut p = ProfileArg {
            name: name.to_string(),
            model: None,
            models_dir: None,
            det_limit_type: None,
            det_limit_side: None,
            det_scale: None,
        };
        for kv in rest.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("profile {name}: `{kv}` is not KEY=VALUE"))?;
            let bad = |e: String| format!("profile {name}: {k}: {e}");
            match k {
                "model" => p.model = Some(ModelKind::from_str(v, true).map_err(bad)?),
                "models-dir" => p.models_dir = Some(PathBuf::from(v)),
                "det-limit-type" => {
                    p.det_limit_type = Some(DetLimit::from_str(v, true).map_err(bad)?)
                }
                "det-limit-side" => {
                    p.det_limit_side = Some(v.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "det-scale" => p.det_scale = Some(DetScaleArg::from_str(v, true).map_err(bad)?),
                _ => {
                    return Err(format!(
                        "profile {name}: unknown key `{k}` (model, models-dir, det-limit-type, \
                         det-limit-side, det-scale)"
                    ));
                }
            }
        }
        Ok(p)
    }
}

impl ServeArgs {
    /// Every profile's name, scheduler settings and models (see `--profile`).
    pub fn profile_specs(&self) -> Result<Vec<crate::scheduler::ProfileSpec>> {
        self.profiles
            .iter()
            .map(|p| {
                let (mut pipeline, mut runtime) = (self.pipeline.clone(), self.runtime.clone());
                if let Some(m) = p.model {
                    pipeline.model = m;
                }
                if let Some(d) = &p.models_dir {
                    runtime.models_dir = Some(d.clone());
                }
                if p.det_limit_type.is_some() {
                    pipeline.det_limit_type = p.det_limit_type;
                }
                if p.det_limit_side.is_some() {
                    pipeline.det_limit_side = p.det_limit_side;
                }
                if let Some(s) = p.det_scale {
                    pipeline.det_scale = s;
                }
                let engine = runtime.engine_config(pipeline.model, self.cls_workers > 0)?;
                let cfg = self.scheduler_config_with(&pipeline, &engine.session);
                Ok(crate::scheduler::ProfileSpec {
                    name: p.name.clone(),
                    cfg,
                    factory: std::sync::Arc::new(crate::engine::runtime::OrtFactory::new(engine)?),
                })
            })
            .collect()
    }

    /// The scheduler configuration these flags describe, for models loaded with `session`.
    pub fn scheduler_config(&self, session: &SessionConfig) -> SchedulerConfig {
        self.scheduler_config_with(&self.pipeline, session)
    }

    /// The same with another profile's pipeline flags.
    fn scheduler_config_with(
        &self,
        pipeline: &PipelineArgs,
        session: &SessionConfig,
    ) -> SchedulerConfig {
        let mut c = SchedulerConfig::for_model(pipeline.model);
        c.base = pipeline.options(session);
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
            allowed_hosts: self.allowed_hosts(),
            ..ApiConfig::default()
        }
    }

    /// The `Host` names to answer ([`crate::api::browser`]): from `--host` and
    /// `--allowed-host`.
    fn allowed_hosts(&self) -> crate::api::browser::AllowedHosts {
        use crate::api::browser::AllowedHosts;
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let keyed = self.auth != crate::auth::AuthMode::Off;
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => AllowedHosts::for_bind(ip, &self.allowed_hosts, keyed),
            // A name (`localhost`, a machine's name): loopback and the name itself.
            Err(_) => {
                let mut extra = self.allowed_hosts.clone();
                extra.push(host.to_string());
                AllowedHosts::for_bind(std::net::Ipv4Addr::LOCALHOST.into(), &extra, keyed)
            }
        }
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
    /// ONNX Runtime I/O binding: the input staged in memory the execution provider reads
    /// directly and the output read in place (page-locked host memory on CUDA). `auto`: on where
    /// the CUDA execution provider registered, off on CPU, where it saves nothing.
    #[arg(long, value_enum, env = "OCR_IO_BINDING", default_value_t = IoBindingChoice::Auto, global = true)]
    pub io_binding: IoBindingChoice,
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
                io_binding: self.io_binding,
            },
            with_classifier,
        })
    }
}

/// Options of the OCR pipeline; the defaults are the measured best (docs/models.md, docs/performance.md).
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
    /// Detector scale: `fixed` (the limit rule for every page) or `text` (a probe pass at long
    /// side --det-probe-side measures the median line height, then the detector runs at the
    /// scale that makes it --det-text-height px, never above the fixed rule's; pages whose
    /// fixed input is small skip the probe).
    #[arg(long, value_enum, env = "OCR_DET_SCALE", default_value_t = DetScaleArg::Fixed)]
    pub det_scale: DetScaleArg,
    /// Line height (px) the detector should see with `--det-scale text`.
    #[arg(long, default_value_t = 24.0)]
    pub det_text_height: f32,
    /// Long side (px) of the probe pass of `--det-scale text`.
    #[arg(long, default_value_t = 960)]
    pub det_probe_side: u32,
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
    /// Emit a space between two recognised characters where the recogniser's space class
    /// peaks at this probability or more between them, though the blank beat it (tight print
    /// loses word gaps: `SANYU STATIONERY` read as `SANYUSTATIONERY`); never inside a number.
    /// 1 is plain greedy decoding. Default 0.2 (measured, NOTES.md).
    #[arg(long, env = "OCR_REC_SPACE_MIN", value_parser = space_min)]
    pub rec_space_min: Option<f32>,
    /// Pad recognition inputs to at least this width (PaddleOCR pads to 320; measured: no
    /// accuracy change without it, 1.19× faster).
    #[arg(long, default_value_t = 48)]
    pub rec_min_width: u32,
    /// Most lines per recognition batch for `ocr` (the server's flag is --rec-max-batch).
    /// Default: as the server: 1 on CPU (the fastest there), 16 with CUDA.
    #[arg(long)]
    pub rec_batch: Option<usize>,
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

/// `--rec-space-min`: a probability over 0 (at 0 every pair of characters would get a space).
fn space_min(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("expected a number in (0, 1], got {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetLimit {
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetScaleArg {
    Fixed,
    Text,
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
        o.det_scale = match self.det_scale {
            DetScaleArg::Fixed => DetScale::Fixed,
            DetScaleArg::Text => DetScale::TextHeight {
                probe_side_px: self.det_probe_side.max(32),
                target_px: self.det_text_height.max(1.0),
            },
        };
        if let Some(d) = self.dilation {
            o.db.use_dilation = d;
        }
        o.db.box_thresh = self.box_thresh;
        o.db.unclip_ratio = self.unclip_ratio;
        o.classify = self.classify;
        o.min_confidence = self.min_confidence;
        o.rec_min_width = self.rec_min_width;
        if let Some(v) = self.rec_space_min {
            o.rec_space_min = v;
        }
        if let Some(n) = self.rec_batch {
            o.rec_batch = n.max(1);
        }
        o.rec_pad = if self.rec_buckets.is_empty() {
            RecPad::for_session(session)
        } else {
            RecPad::Buckets(self.rec_buckets.as_slice().into())
        };
        o
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_space_threshold_is_a_probability_over_zero() {
        assert_eq!(super::space_min("0.2"), Ok(0.2));
        assert_eq!(super::space_min("1"), Ok(1.0));
        for bad in ["0", "-0.1", "1.01", "NaN", "x", ""] {
            assert!(super::space_min(bad).is_err(), "{bad:?}");
        }
    }
}

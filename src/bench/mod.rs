//! `ocr-server bench`: the benchmark harness.
//!
//! Modes (any combination, in this order):
//! - **raw** (`--raw`): the raw-model limit, the runtime `--backend` resolves to (ONNX Runtime
//!   or OpenVINO) alone on the pages' prepared tensors ([`raw`]); run first, while the server is
//!   idle.
//! - **sync**: a sweep over `--concurrency` levels (closed loop) or `--rates` (open loop). Each
//!   step warms up, then measures windows of at least `--window-s` seconds and
//!   `--window-requests` answers until the last three agree within `--stability` percent
//!   (perf_analyzer's rule) or `--max-windows` ran; the three are merged into the step's result:
//!   pages/s, client latency p50/p90/p95/p99, and the server's own split (queue / detect /
//!   recognise, from the `x-*-time` response headers).
//! - **bulk**: `--bulk-pages` pages submitted at once as one-page jobs; pages/s from the first
//!   submission to the last job final. With `--raw`, efficiency = bulk pages/s ÷ raw limit.
//! - **mixed**: a sync client at `--sync-rate` for `--mixed-requests` requests on the idle
//!   server, then again while `--bulk-inflight` job feeders keep it saturated; the p99 ratio
//!   shows whether interactive callers are protected from bulk load.
//!
//! Without `--server` the harness starts `ocr-server serve` from its own binary on a free port
//! with a scratch data directory (extra flags with `--serve-arg`) and stops it at the end.
//! Output in `--out`: `summary.json` (everything), `sync.csv`, `mixed.csv`, `raw.csv`,
//! `latency_throughput.png` and `latency_cdf.png`; a Markdown table on stdout; a progress bar
//! on stderr. `--max-duration-s` bounds the sweep.

pub mod load;
pub mod plot;
pub mod raw;
pub mod stats;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::RuntimeArgs;
use crate::engine::ModelKind;
use crate::engine::runtime::{EngineConfig, SessionConfig};
use crate::error::{Error, Result};
use load::{BulkResult, MixedResult, Offered, StepResult, Target, WindowRule};
use raw::RawResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Sync,
    Bulk,
    Mixed,
}

/// `ocr-server bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure (repeatable): sync (a sweep), bulk (jobs to completion), mixed (sync
    /// latency under bulk load). Default: sync, unless only --raw is given.
    #[arg(long = "mode", value_enum)]
    pub modes: Vec<Mode>,
    /// Also measure the raw-model limit: the sessions of the runtime `--backend` resolves to
    /// (ONNX Runtime or OpenVINO) alone over the pages' prepared inputs, one single-threaded
    /// detector and recogniser per worker, batches at their fullest.
    #[arg(long)]
    pub raw: bool,
    /// Server to load. Without it, one is started from this binary on a free port.
    #[arg(long)]
    pub server: Option<String>,
    /// Extra flag for the started server (repeatable), e.g. `--serve-arg=--rec-workers=1`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// Page images: a directory (its png, jpg, jpeg, tif, tiff, webp, bmp files) or files.
    /// Default: ../shared/eval/dev.
    #[arg(long = "pages", num_args = 1..)]
    pub pages: Vec<PathBuf>,
    /// Directory for summary.json, CSVs and plots.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Model set (sent with each request, and loaded by a started server).
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Model profile sent with each request (`profile=`; then `model` is not sent, since the
    /// profile names its own set).
    #[arg(long)]
    pub profile: Option<String>,
    /// Sync sweep: concurrency levels (closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub concurrency: Vec<usize>,
    /// Sync sweep: request rates per second (open loop) instead of concurrency levels.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Shortest measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub window_s: f64,
    /// Fewest answers in a window (default: the number of pages, so a window sees the whole
    /// set once and windows are comparable).
    #[arg(long)]
    pub window_requests: Option<usize>,
    /// Windows agree when throughput and p50 are within this percentage of their mean.
    #[arg(long, default_value_t = 10.0)]
    pub stability: f64,
    /// Most windows per sweep step (the last three are reported, flagged unstable).
    #[arg(long, default_value_t = 6)]
    pub max_windows: usize,
    /// Bound on the whole sweep, seconds (steps not reached are skipped).
    #[arg(long, default_value_t = 3600)]
    pub max_duration_s: u64,
    /// Bulk: pages submitted (cycling through the set). Default: twice the set.
    #[arg(long)]
    pub bulk_pages: Option<usize>,
    /// Mixed: the sync client's request rate, per second.
    #[arg(long, default_value_t = 0.2)]
    pub sync_rate: f64,
    /// Mixed: sync requests per phase (idle, then under bulk load). Default: the set.
    #[arg(long)]
    pub mixed_requests: Option<usize>,
    /// Mixed: one-page jobs kept outstanding to saturate the server.
    #[arg(long, default_value_t = 16)]
    pub bulk_inflight: usize,
    /// Raw: worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub raw_workers: usize,
    /// Raw: most lines per recognition batch; several values are each measured.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub raw_rec_batch: Vec<usize>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One page of the set, in memory.
#[derive(Debug, Clone)]
pub struct BenchPage {
    pub name: String,
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp"];

/// The page set: files given, or the images of a directory, sorted by name.
pub fn load_pages(paths: &[PathBuf]) -> Result<Vec<BenchPage>> {
    let default = [default_pages_dir()];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| io(p, e))?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(Error::BadRequest(format!(
            "no page images in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    files
        .iter()
        .map(|f| {
            Ok(BenchPage {
                name: f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: std::fs::read(f).map_err(|e| io(f, e))?.into(),
                content_type: crate::client::content_type(f),
            })
        })
        .collect()
}

/// `../shared/eval/dev` from the current directory, else beside the checkout.
fn default_pages_dir() -> PathBuf {
    let local = PathBuf::from("../shared/eval/dev");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/dev")
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        source: e,
    }
}

/// Where and when a run happened.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    /// The CPU's flags that decide which kernels run: `avx512_vnni`, `avx_vnni` (INT8),
    /// `avx512_bf16`, `amx_bf16` (bf16, the OpenVINO backend), `avx512f`, `avx2`.
    pub cpu_flags: Vec<String>,
    pub os: String,
    /// Each NVIDIA GPU `nvidia-smi` lists (`name, driver, memory`), empty without one.
    /// Utilisation during a run is sampled by `scripts/gpu_bench.sh`.
    pub gpus: Vec<String>,
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let cpu_flags = [
        "avx2",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_bf16",
    ]
    .into_iter()
    .filter(|f| flags.contains(f))
    .map(String::from)
    .collect();
    Machine {
        date: httpdate::fmt_http_date(std::time::SystemTime::now()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        cpu_flags,
        os: std::env::consts::OS.into(),
        gpus: nvidia_gpus(),
    }
}

/// `nvidia-smi --query-gpu=name,driver_version,memory.total`, one line per GPU; empty when the
/// tool is missing or fails (no GPU here).
fn nvidia_gpus() -> Vec<String> {
    Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything a run measured (`summary.json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub machine: Machine,
    pub server: String,
    pub model: Option<ModelKind>,
    /// The inference runtime of the raw limit and of a started server (`onnxruntime`,
    /// `openvino-bf16`, `openvino-f32`), as `--backend` resolved on this machine.
    pub backend: String,
    pub pages: usize,
    pub command: Vec<String>,
    pub raw: Vec<RawResult>,
    pub sync: Vec<StepResult>,
    pub bulk: Option<BulkResult>,
    pub mixed: Option<MixedResult>,
    /// bulk pages/s ÷ the best raw pages/s, when both ran.
    pub efficiency: Option<f64>,
}

/// A server this harness started; stopped (SIGTERM, then kill) when dropped.
struct Spawned {
    child: Child,
    _data: TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SAFETY-free SIGTERM through the `kill` command keeps this crate free of libc.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_server(args: &BenchArgs) -> Result<(Spawned, String)> {
    let data = std::env::temp_dir().join(format!("ocr-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data).map_err(|e| io(&data, e))?;
    let exe = std::env::current_exe().map_err(|e| io(Path::new("ocr-server"), e))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(&data);
    if let Some(m) = args.model {
        cmd.args(["--model", m.name()]);
    }
    if let Some(p) = &args.runtime.ort_lib {
        cmd.arg("--ort-lib").arg(p);
    }
    if let Some(p) = &args.runtime.models_dir {
        cmd.arg("--models-dir").arg(p);
    }
    // The same runtime as the raw limit measures.
    let name = |v: &dyn Fn() -> Option<clap::builder::PossibleValue>| {
        v().map(|p| p.get_name().to_string())
    };
    if let Some(b) = name(&|| args.runtime.backend.to_possible_value()) {
        cmd.args(["--backend", &b]);
    }
    if let Some(p) = args
        .runtime
        .precision
        .and_then(|p| name(&|| p.to_possible_value()))
    {
        cmd.args(["--precision", &p]);
    }
    if let Some(p) = &args.runtime.openvino_lib {
        cmd.arg("--openvino-lib").arg(p);
    }
    if let Some(d) = name(&|| args.runtime.device.to_possible_value()) {
        cmd.args(["--device", &d]);
    }
    cmd.args(["--threads", &args.runtime.threads.to_string()]);
    cmd.args(&args.serve_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| io(Path::new("ocr-server serve"), e))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let spawned = Spawned {
        child,
        _data: TempDir(data),
    };
    let mut lines = BufReader::new(stderr);
    let mut line = String::new();
    let mut log = String::new();
    let addr = loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return Err(Error::Runtime(format!(
                "the started server exited before listening:\n{log}"
            )));
        }
        log.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("ocr-server: listening on http://") {
            break rest.split(' ').next().unwrap_or_default().to_string();
        }
    };
    // The server's log so far and from now on goes to this process's standard error, prefixed
    // (a CUDA fallback or a failed batch must be visible in the bench's output); draining it also
    // keeps the server from blocking on a full pipe.
    for l in log.lines().filter(|l| !l.contains("listening on")) {
        eprintln!("server: {l}");
    }
    std::thread::spawn(move || {
        let mut l = String::new();
        while lines.read_line(&mut l).unwrap_or(0) > 0 {
            eprint!("server: {l}");
            l.clear();
        }
    });
    Ok((spawned, addr))
}

async fn wait_ready(http: &reqwest::Client, base: &str, timeout: Duration) -> Result<()> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Runtime(format!(
        "{base} not ready after {} s",
        timeout.as_secs()
    )))
}

fn bar(quiet: bool, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
    }
    bar
}

/// Runs `ocr-server bench`. Returns false when a step had errors or did not stabilise.
pub fn run_bench(args: &BenchArgs) -> Result<bool> {
    let pages = Arc::new(load_pages(&args.pages)?);
    let mut modes = args.modes.clone();
    if modes.is_empty() && !args.raw {
        modes.push(Mode::Sync);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
    let engine = args
        .runtime
        .engine_config(args.model.unwrap_or(ModelKind::V6), false)?;
    let mut summary = Summary {
        machine: machine(),
        server: args.server.clone().unwrap_or_else(|| "started".into()),
        model: args.model,
        backend: engine.session.backend.name(),
        pages: pages.len(),
        command: std::env::args().collect(),
        raw: Vec::new(),
        sync: Vec::new(),
        bulk: None,
        mixed: None,
        efficiency: None,
    };
    let mut healthy = true;
    if args.raw {
        let b = bar(args.quiet, 0);
        b.set_message("raw-model limit: preparing inputs and running the sessions");
        let workers = if args.raw_workers == 0 {
            summary.machine.cpus
        } else {
            args.raw_workers
        };
        summary.raw = raw::raw(
            &pages,
            EngineConfig {
                session: SessionConfig {
                    intra_threads: 1,
                    ..engine.session.clone()
                },
                ..engine.clone()
            },
            workers,
            &args.raw_rec_batch,
        )?;
        b.finish_and_clear();
    }
    if !modes.is_empty() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("tokio: {e}")))?;
        let (spawned, base) = match &args.server {
            Some(s) => (None, s.trim_end_matches('/').to_string()),
            None => {
                let (s, addr) = spawn_server(args)?;
                (Some(s), format!("http://{addr}"))
            }
        };
        summary.server = base.clone();
        let target = Target {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .map_err(|e| Error::Runtime(format!("HTTP client: {e}")))?,
            base,
            pages: pages.clone(),
            query: match (&args.profile, args.model) {
                (Some(p), _) => vec![("profile", p.clone())],
                (None, Some(m)) => vec![("model", m.name().to_string())],
                (None, None) => Vec::new(),
            },
        };
        rt.block_on(async {
            // A started server loads and warms its models; a given one should already be up.
            let timeout = Duration::from_secs(if spawned.is_some() { 300 } else { 10 });
            wait_ready(&target.http, &target.base, timeout).await?;
            run_modes(args, &modes, &target, &mut summary, &mut healthy).await
        })?;
        drop(spawned);
    }
    if let (Some(b), Some(best)) = (
        &summary.bulk,
        summary.raw.iter().map(|r| r.pages_per_s).reduce(f64::max),
    ) {
        summary.efficiency = Some(b.pages_per_s / best);
    }
    write_outputs(args, &summary)?;
    print_tables(&summary, &mut std::io::stdout().lock())
        .map_err(|e| io(Path::new("stdout"), e))?;
    Ok(healthy)
}

async fn run_modes(
    args: &BenchArgs,
    modes: &[Mode],
    target: &Target,
    summary: &mut Summary,
    healthy: &mut bool,
) -> Result<()> {
    let n = target.pages.len();
    if modes.contains(&Mode::Sync) {
        let steps: Vec<Offered> = if args.rates.is_empty() {
            args.concurrency
                .iter()
                .map(|&c| Offered::Concurrency(c))
                .collect()
        } else {
            args.rates.iter().map(|&r| Offered::Rate(r)).collect()
        };
        let b = bar(args.quiet, steps.len() as u64);
        let deadline = Instant::now() + Duration::from_secs(args.max_duration_s);
        for o in steps {
            if Instant::now() >= deadline {
                tracing::warn!(?o, "--max-duration-s reached: step skipped");
                *healthy = false;
                continue;
            }
            let rule = WindowRule {
                min_seconds: args.window_s,
                min_requests: args.window_requests.unwrap_or(n).max(1),
                stability_pct: args.stability,
                max_windows: args.max_windows,
                deadline,
            };
            let r = load::sweep_step(target, o, &rule, &b).await;
            *healthy &= r.stable && r.stats.errors == 0 && r.stats.requests > 0;
            summary.sync.push(r);
        }
        b.finish_and_clear();
    }
    if modes.contains(&Mode::Bulk) {
        let count = args.bulk_pages.unwrap_or(2 * n).max(1);
        let b = bar(args.quiet, count as u64);
        b.set_message("bulk jobs");
        let r = load::bulk(target, count, &b)
            .await
            .map_err(Error::Runtime)?;
        *healthy &= r.failed_jobs == 0;
        summary.bulk = Some(r);
        b.finish_and_clear();
    }
    if modes.contains(&Mode::Mixed) {
        let b = bar(args.quiet, 2);
        let r = load::mixed(
            target,
            args.sync_rate,
            args.mixed_requests.unwrap_or(n).max(1),
            args.bulk_inflight,
            &b,
        )
        .await
        .map_err(Error::Runtime)?;
        *healthy &= r.idle.errors == 0 && r.mixed.errors == 0;
        summary.mixed = Some(r);
        b.finish_and_clear();
    }
    Ok(())
}

fn write_outputs(args: &BenchArgs, s: &Summary) -> Result<()> {
    let out = &args.out;
    let write = |name: &str, text: String| {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| io(&p, e))
    };
    write(
        "summary.json",
        serde_json::to_string_pretty(s).expect("the summary serialises"),
    )?;
    const HEAD: &str = "pages_per_s,p50_ms,p90_ms,p95_ms,p99_ms,mean_ms,queue_ms,detect_ms,recognize_ms,server_total_ms,requests,errors,seconds";
    let row = |w: &stats::WindowStats| {
        format!(
            "{:.4},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{:.2}",
            w.throughput,
            w.p50_ms,
            w.p90_ms,
            w.p95_ms,
            w.p99_ms,
            w.mean_ms,
            w.queue_ms,
            w.detect_ms,
            w.recognize_ms,
            w.server_total_ms,
            w.requests,
            w.errors,
            w.seconds
        )
    };
    if !s.sync.is_empty() {
        let mut csv = format!("concurrency,rate,windows,stable,{HEAD}\n");
        for r in &s.sync {
            csv += &format!(
                "{},{},{},{},{}\n",
                r.concurrency.map(|c| c.to_string()).unwrap_or_default(),
                r.rate.map(|c| c.to_string()).unwrap_or_default(),
                r.windows,
                r.stable,
                row(&r.stats)
            );
        }
        write("sync.csv", csv)?;
        let pick = |f: fn(&stats::WindowStats) -> f64| {
            s.sync
                .iter()
                .map(|r| (r.stats.throughput, f(&r.stats)))
                .collect::<Vec<_>>()
        };
        plot::line_chart(
            &out.join("latency_throughput.png"),
            "Sync latency vs throughput (one point per sweep step)",
            "throughput (pages/s)",
            "client latency (ms)",
            &[
                plot::Series {
                    label: "p50".into(),
                    points: pick(|w| w.p50_ms),
                },
                plot::Series {
                    label: "p90".into(),
                    points: pick(|w| w.p90_ms),
                },
                plot::Series {
                    label: "p99".into(),
                    points: pick(|w| w.p99_ms),
                },
            ],
        )?;
    }
    let mut cdfs: Vec<plot::Series> = s
        .sync
        .iter()
        .map(|r| plot::Series {
            label: match (r.concurrency, r.rate) {
                (Some(c), _) => format!("sync c={c}"),
                (_, Some(x)) => format!("sync {x}/s"),
                _ => "sync".into(),
            },
            points: stats::cdf(&r.latencies, 200),
        })
        .collect();
    if let Some(m) = &s.mixed {
        write(
            "mixed.csv",
            format!(
                "phase,sync_rate,{HEAD}\nidle,{},{}\nmixed,{},{}\n",
                m.sync_rate,
                row(&m.idle),
                m.sync_rate,
                row(&m.mixed)
            ),
        )?;
        cdfs.push(plot::Series {
            label: format!("idle {}/s", m.sync_rate),
            points: stats::cdf(&m.idle_latencies, 200),
        });
        cdfs.push(plot::Series {
            label: format!("under bulk {}/s", m.sync_rate),
            points: stats::cdf(&m.mixed_latencies, 200),
        });
    }
    if !cdfs.is_empty() {
        plot::line_chart(
            &out.join("latency_cdf.png"),
            "Sync latency CDF",
            "client latency (ms)",
            "fraction of requests",
            &cdfs,
        )?;
    }
    if !s.raw.is_empty() {
        let mut csv = String::from(
            "workers,rec_max_batch,pages,det_runs,rec_batches,rec_lines,seconds,pages_per_s,det_model_s,rec_model_s\n",
        );
        for r in &s.raw {
            csv += &format!(
                "{},{},{},{},{},{},{:.3},{:.4},{:.3},{:.3}\n",
                r.workers,
                r.rec_max_batch,
                r.pages,
                r.det_runs,
                r.rec_batches,
                r.rec_lines,
                r.seconds,
                r.pages_per_s,
                r.det_model_s,
                r.rec_model_s
            );
        }
        write("raw.csv", csv)?;
    }
    Ok(())
}

/// Markdown tables of a run.
pub fn print_tables(s: &Summary, w: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        w,
        "{} pages, server {}, {} × {}, {}\n",
        s.pages, s.server, s.machine.cpus, s.machine.cpu_model, s.machine.date
    )?;
    if !s.raw.is_empty() {
        writeln!(
            w,
            "| raw: workers | rec batch ≤ | rec batches | pages/s | det model s | rec model s |"
        )?;
        writeln!(w, "|---|---|---|---|---|---|")?;
        for r in &s.raw {
            writeln!(
                w,
                "| {} | {} | {} | {:.3} | {:.1} | {:.1} |",
                r.workers,
                r.rec_max_batch,
                r.rec_batches,
                r.pages_per_s,
                r.det_model_s,
                r.rec_model_s
            )?;
        }
        writeln!(w)?;
    }
    if !s.sync.is_empty() {
        writeln!(
            w,
            "| load | windows | stable | pages/s | p50 ms | p90 ms | p95 ms | p99 ms | queue ms | detect ms | recognize ms | errors |"
        )?;
        writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        for r in &s.sync {
            let load = match (r.concurrency, r.rate) {
                (Some(c), _) => format!("c={c}"),
                (_, Some(x)) => format!("{x}/s"),
                _ => String::new(),
            };
            let x = &r.stats;
            writeln!(
                w,
                "| {load} | {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                r.windows,
                r.stable,
                x.throughput,
                x.p50_ms,
                x.p90_ms,
                x.p95_ms,
                x.p99_ms,
                x.queue_ms,
                x.detect_ms,
                x.recognize_ms,
                x.errors
            )?;
        }
        writeln!(w)?;
    }
    if let Some(b) = &s.bulk {
        writeln!(
            w,
            "bulk: {} pages in {} jobs ({} not completed) in {:.1} s: {:.3} pages/s",
            b.pages, b.jobs, b.failed_jobs, b.seconds, b.pages_per_s
        )?;
        if let Some(e) = s.efficiency {
            writeln!(w, "efficiency (bulk ÷ raw-model limit): {e:.2}")?;
        }
        writeln!(w)?;
    }
    if let Some(m) = &s.mixed {
        writeln!(
            w,
            "| mixed: sync at {}/s | p50 ms | p90 ms | p99 ms | errors |",
            m.sync_rate
        )?;
        writeln!(w, "|---|---|---|---|---|")?;
        for (name, x) in [("idle", &m.idle), ("under bulk load", &m.mixed)] {
            writeln!(
                w,
                "| {name} | {:.0} | {:.0} | {:.0} | {} |",
                x.p50_ms, x.p90_ms, x.p99_ms, x.errors
            )?;
        }
        writeln!(
            w,
            "\np99 under bulk ÷ idle p99: {:.2} (p50: {:.2}); bulk meanwhile {:.3} pages/s",
            m.p99_ratio, m.p50_ratio, m.bulk_pages_per_s
        )?;
    }
    Ok(())
}

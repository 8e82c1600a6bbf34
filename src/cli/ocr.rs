//! `ocr-server ocr`: documents in, text/JSON/hOCR/PDF out, on an in-process [`Scheduler`]
//! configured as the server's ([`OcrArgs::scheduler_config`]), so the CLI prints what the
//! server would answer.
//!
//! `--format jsonl` prints one object per input file on its own line:
//! `{"file": <path as given>, "text": <lines joined by \n, pages by \n\n>, "pages": [...]}`, or
//! `{"file": ..., "error": {"code": ..., "message": ...}}` for a file that could not be read. That
//! shape is a contract: extend it, never break it. The exit status is 1 when any file failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{PipelineArgs, RuntimeArgs};
use crate::document::{Document, select_pages};
use crate::engine::OcrOptions;
use crate::engine::ort::Device;
use crate::engine::runtime::{OrtFactory, SessionConfig};
use crate::error::{Error, Result};
use crate::extract::{Extract, Extraction};
use crate::ocr::document::{DEFAULT_WINDOW, ocr_document};
use crate::output;
use crate::pipeline::decode::DecodeLimits;
use crate::pipeline::{Page, document_text};
use crate::scheduler::{Scheduler, SchedulerConfig};

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
    /// Files read and submitted in parallel (0 = twice cores / --threads); the model workers
    /// are the server's: one detection worker and one recognition worker per core / --threads.
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
    /// Fields to extract from each page into the JSON output's `extractions` (`json`,
    /// `jsonl`): `receipt`, `mrz`, `kv` or `auto`, as `extract=` on `/v1/ocr`.
    #[arg(long, value_enum)]
    pub extract: Option<Extract>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extractions: Vec<Extraction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FileError>,
}

#[derive(Debug, Serialize)]
pub struct FileError {
    pub code: &'static str,
    pub message: String,
}

/// Reads one file and OCRs the selected pages of it; renders `hocr`/`pdf` output.
fn ocr_file(
    scheduler: &Scheduler,
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
    let pages = ocr_document(scheduler, &doc, &selected, opts, DEFAULT_WINDOW)?;
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

/// Files OCRed at once: `--jobs`, or twice the model workers (so one file's reading and
/// decoding overlaps another's OCR); never more than files.
fn worker_count(args: &OcrArgs) -> usize {
    let jobs = if args.jobs > 0 {
        args.jobs
    } else {
        2 * model_workers(args.runtime.threads)
    };
    jobs.clamp(1, args.files.len().max(1))
}

/// Cores / intra-op threads per session (threads = 0 lets one session take every core).
fn model_workers(threads: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.checked_div(threads).unwrap_or(1).max(1)
}

impl OcrArgs {
    /// The server's scheduler configuration for these models ([`SchedulerConfig::for_model`],
    /// [`SchedulerConfig::for_cuda`] on CUDA) with this command's pipeline options: one
    /// recognition worker per core / `--threads`, `--rec-batch` lines per recognition batch
    /// when given, and room in the detection queue for every file worker's window.
    pub fn scheduler_config(&self, session: &SessionConfig) -> SchedulerConfig {
        let mut c = SchedulerConfig::for_model(self.pipeline.model);
        c.base = self.pipeline.options(session);
        if self.runtime.device == Device::Cuda {
            c = c.for_cuda();
        } else {
            let workers = model_workers(self.runtime.threads);
            c.rec.workers = workers;
            c.core_slots = Some(workers);
        }
        if let Some(n) = self.pipeline.rec_batch {
            c.rec.policy.max_items = n.max(1);
        }
        c.cls.workers = usize::from(self.pipeline.classify);
        c.det.policy.capacity = c
            .det
            .policy
            .capacity
            .max(worker_count(self) * DEFAULT_WINDOW);
        c
    }
}

/// Runs `ocr-server ocr`. Returns whether every file succeeded.
///
/// Files are read and decoded by `worker_count` named threads (`ocr-cli-N`), each taking the next
/// file index from a shared counter and submitting its pages to the one scheduler (up to
/// [`DEFAULT_WINDOW`] pages each at a time); this thread writes results in input order.
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
    let sched = args.scheduler_config(&cfg.session);
    let opts: OcrOptions = sched.base.clone();
    let rec_workers = sched.rec.workers;
    let scheduler = Scheduler::start(sched, Arc::new(OrtFactory::new(cfg)?))?;
    let limits = args.pipeline.decode_limits();
    let started = Instant::now();
    let mut report = Report {
        format: args.format,
        multi: args.files.len() > 1,
        pages: 0,
        all_ok: true,
        json_items: Vec::new(),
        extract: args.extract,
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
        for i in 0..jobs {
            let (next, permit_rx, result_tx, opts, limits, scheduler) = (
                &next,
                permit_rx.clone(),
                result_tx.clone(),
                &opts,
                &limits,
                &scheduler,
            );
            std::thread::Builder::new()
                .name(format!("ocr-cli-{i}"))
                .spawn_scoped(s, move || {
                    while permit_rx.recv().is_ok() {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(k) else { break };
                        if result_tx
                            .send((k, ocr_file(scheduler, path, opts, limits, args)))
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
    scheduler.shutdown();
    report.finish(out)?;
    if args.stats {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "ocr-server: {} files, {} pages in {secs:.2} s ({:.3} pages/s, model {}, {jobs} files at once, {rec_workers} recognition workers × {} threads)",
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
    extract: Option<Extract>,
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
                    extractions: self
                        .extract
                        .map(|e| crate::extract::extract(e, &pages))
                        .unwrap_or_default(),
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
                    extractions: Vec::new(),
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

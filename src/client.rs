//! `ocr-server submit DIR_OR_FILES --server URL --out DIR`: the batch-ingestion client.
//!
//! Design, in one mechanism: every input file becomes one job (`POST /v1/jobs`, raw body) whose
//! `Idempotency-Key` is `submit-` + the SHA-256 of the file's bytes, its name and the job options
//! as query pairs ([`Overrides::query_pairs`](crate::overrides::Overrides::query_pairs), then
//! `review_threshold`, `priority`, `tag`). A rerun after an interruption (client crash, network
//! loss, Ctrl-C) therefore finds the jobs it already created instead of duplicating them, and
//! simply waits for them and writes their results (a rerun with other options makes new jobs);
//! the key lives on the server for `--idempotency-ttl-s` (24 h by default).
//!
//! At most `--concurrency` files are in flight at once (read, submitted, polled, written), so the
//! client's memory is bounded whatever the number of files. Every request (submission, polls)
//! goes through `send_with_retries`: `429`/`503` are retried after the server's `Retry-After`
//! (1 s without one, at most 60 s), connection errors with exponential backoff, up to `--tries`;
//! any other non-2xx answer is final for that file (its problem `detail` is reported). A job is
//! polled every `--poll-ms` (at least 50 ms) until it is final.
//!
//! Each result is written to `OUT/<name as given>.json` (or `.txt` with `--format text`), where
//! the name of a file found in a directory argument is its path relative to that directory. It is
//! written to a temporary file and renamed, so a result file is never half-written. A job that ends
//! `completed` or `needs_review` counts as done (the review state is reported); `failed`,
//! `partially_completed`, `cancelled` and files the server refused count as failed. A summary
//! goes to standard error and the exit status is 1 when any file failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Extensions picked up when a directory is given (files named explicitly are always sent).
pub const DOCUMENT_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp", "pdf"];

/// `ocr-server submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Files, or directories searched recursively for documents
    /// (png, jpg, jpeg, tif, tiff, webp, bmp, pdf).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Base URL of the server.
    #[arg(long, env = "OCR_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Directory the results are written to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Result format: `json` (the job result) or `text`.
    #[arg(long, value_enum, default_value_t = SubmitFormat::Json)]
    pub format: SubmitFormat,
    /// Files in flight at once (submitted and not yet written).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Longest wait between two polls of one job, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Give up on a job that is not finished after this many seconds (0 = wait for ever).
    #[arg(long, default_value_t = 0)]
    pub timeout_s: u64,
    /// The job's options (each the server's default when absent).
    #[command(flatten)]
    pub overrides: crate::overrides::Overrides,
    /// Pages whose lowest line confidence is under this put the job in `needs_review`.
    #[arg(long)]
    pub review_threshold: Option<f32>,
    /// Order within the bulk class (higher first).
    #[arg(long)]
    pub priority: Option<i32>,
    /// Tag echoed back on every job.
    #[arg(long)]
    pub tag: Option<String>,
    /// Tries per HTTP request before the file counts as failed (429/503 and connection errors are
    /// retried; other errors are final).
    #[arg(long, default_value_t = 8)]
    pub tries: u32,
    /// No progress bar (it is also hidden when standard error is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// The API key sent as `Authorization: Bearer KEY` (for servers that require keys).
    #[arg(long, env = "OCR_API_KEY")]
    pub api_key: Option<crate::cli::Secret>,
}

/// `Authorization: Bearer KEY`, marked sensitive (never shown by reqwest's Debug output).
fn auth_headers(key: Option<&crate::cli::Secret>) -> Result<reqwest::header::HeaderMap> {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        let mut v =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", k.0)).map_err(|_| {
                Error::InvalidOption("--api-key has characters a header cannot hold".into())
            })?;
        v.set_sensitive(true);
        h.insert(reqwest::header::AUTHORIZATION, v);
    }
    Ok(h)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubmitFormat {
    Json,
    Text,
}

/// One input: where it is read from and the name it is sent and written under.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub path: PathBuf,
    pub name: String,
}

/// How one file ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job ended in this state and its result was written to this path.
    Written { state: String, path: PathBuf },
    /// The file failed: the reason.
    Failed(String),
}

/// Expands the arguments into inputs: files as given (named by their file name), directories
/// walked recursively in name order (named by their path relative to the directory).
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::Io {
            path: p.display().to_string(),
            source: e,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            for f in found {
                let rel = f.strip_prefix(p).unwrap_or(&f);
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(Input { path: f, name });
            }
        } else {
            let name = p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
            out.push(Input {
                path: p.clone(),
                name,
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |e| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| DOCUMENT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

impl SubmitArgs {
    /// The job options as query pairs, in a fixed order (they are part of the idempotency key).
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = self.overrides.query_pairs();
        if let Some(v) = self.review_threshold {
            q.push(("review_threshold", v.to_string()));
        }
        if let Some(v) = self.priority {
            q.push(("priority", v.to_string()));
        }
        if let Some(v) = &self.tag {
            q.push(("tag", v.clone()));
        }
        q
    }
}

/// The idempotency key of one file: the same bytes, name and options give the same key.
pub fn idempotency_key(bytes: &[u8], name: &str, options: &[(&str, String)]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.update([0]);
    h.update(name.as_bytes());
    for (k, v) in options {
        h.update([0]);
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    let d = h.finalize();
    format!(
        "submit-{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The content type a file is sent with, from its extension.
pub fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("tif" | "tiff") => "image/tiff",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// The result path of an input.
pub fn result_path(out: &Path, name: &str, format: SubmitFormat) -> PathBuf {
    let ext = match format {
        SubmitFormat::Json => "json",
        SubmitFormat::Text => "txt",
    };
    out.join(format!("{name}.{ext}"))
}

const FINAL: &[&str] = &[
    "completed",
    "partially_completed",
    "failed",
    "needs_review",
    "cancelled",
];

struct Ctx {
    http: reqwest::Client,
    base: String,
    args: SubmitArgsOwned,
    bar: ProgressBar,
}

/// The parts of the arguments the workers need (owned, shared).
struct SubmitArgsOwned {
    out: PathBuf,
    format: SubmitFormat,
    poll: Duration,
    timeout: Option<Duration>,
    query: Vec<(&'static str, String)>,
    tries: u32,
}

/// Runs the client; `Ok(true)` when every file ended done.
pub fn run_submit(args: &SubmitArgs) -> Result<bool> {
    let inputs = collect_inputs(&args.paths)?;
    if inputs.is_empty() {
        return Err(Error::InvalidOption(
            "no documents found in the given paths".into(),
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::Io {
        path: args.out.display().to_string(),
        source: e,
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: "tokio runtime".into(),
            source: e,
        })?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} pages  {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b
    };
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::builder()
            .default_headers(auth_headers(args.api_key.as_ref())?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::InvalidOption(format!("HTTP client: {e}")))?,
        base: args.server.trim_end_matches('/').to_string(),
        args: SubmitArgsOwned {
            out: args.out.clone(),
            format: args.format,
            poll: Duration::from_millis(args.poll_ms.max(50)),
            timeout: (args.timeout_s > 0).then(|| Duration::from_secs(args.timeout_s)),
            query: args.query(),
            tries: args.tries.max(1),
        },
        bar: bar.clone(),
    });
    let concurrency = args.concurrency.max(1);
    let outcomes: Vec<(Input, Outcome)> = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::new();
        for input in inputs {
            let permit = sem.clone().acquire_owned().await.expect("never closed");
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = one(&ctx, &input).await;
                drop(permit);
                (input, outcome)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("submit task panicked"));
        }
        out
    });
    bar.finish_and_clear();
    Ok(summarise(&outcomes, &mut std::io::stderr()))
}

/// Prints the summary; `true` when no file failed.
pub fn summarise(outcomes: &[(Input, Outcome)], w: &mut impl std::io::Write) -> bool {
    let mut by_state: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut failed = Vec::new();
    for (input, o) in outcomes {
        match o {
            Outcome::Written { state, .. } => {
                *by_state.entry(state.as_str()).or_default() += 1;
                if state != "completed" && state != "needs_review" {
                    failed.push((input, format!("job ended {state}")));
                }
            }
            Outcome::Failed(why) => {
                *by_state.entry("not submitted or lost").or_default() += 1;
                failed.push((input, why.clone()));
            }
        }
    }
    let counts = by_state
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(w, "submit: {} files: {counts}", outcomes.len());
    for (input, why) in &failed {
        let _ = writeln!(w, "submit: FAILED {}: {why}", input.path.display());
    }
    for (input, o) in outcomes {
        if let Outcome::Written { state, .. } = o
            && state == "needs_review"
        {
            let _ = writeln!(w, "submit: needs review {}", input.path.display());
        }
    }
    failed.is_empty()
}

async fn one(ctx: &Ctx, input: &Input) -> Outcome {
    match run_one(ctx, input).await {
        Ok(o) => o,
        Err(why) => Outcome::Failed(why),
    }
}

async fn run_one(ctx: &Ctx, input: &Input) -> std::result::Result<Outcome, String> {
    let bytes = tokio::fs::read(&input.path)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let key = idempotency_key(&bytes, &input.name, &ctx.args.query);
    let mut query = ctx.args.query.clone();
    query.push(("name", input.name.clone()));
    let url = format!("{}/v1/jobs", ctx.base);
    let job = send_with_retries(ctx, || {
        ctx.http
            .post(&url)
            .query(&query)
            .header("content-type", content_type(&input.path))
            .header("idempotency-key", &key)
            .body(bytes.clone())
    })
    .await?;
    drop(bytes);
    let id = job["id"]
        .as_str()
        .ok_or("the server's answer has no job id")?
        .to_string();
    let total = job["pages_total"].as_u64().unwrap_or(0);
    ctx.bar.inc_length(total);
    let mut counted = 0;
    let started = std::time::Instant::now();
    let job_url = format!("{}/v1/jobs/{id}", ctx.base);
    let mut job = job;
    let mut wait = Duration::from_millis(0);
    loop {
        let finished =
            job["pages_done"].as_u64().unwrap_or(0) + job["pages_failed"].as_u64().unwrap_or(0);
        if finished > counted {
            ctx.bar.inc(finished - counted);
            counted = finished;
        }
        let state = job["state"].as_str().unwrap_or("").to_string();
        if FINAL.contains(&state.as_str()) {
            let path = write_result(ctx, &id, &input.name).await?;
            if state != "completed" {
                ctx.bar.set_message(format!("{}: {state}", input.name));
            }
            return Ok(Outcome::Written { state, path });
        }
        if let Some(t) = ctx.args.timeout
            && started.elapsed() > t
        {
            return Err(format!("job {id} not finished after {} s", t.as_secs()));
        }
        tokio::time::sleep(wait).await;
        job = send_with_retries(ctx, || ctx.http.get(&job_url)).await?;
        wait = ctx.args.poll;
    }
}

/// Sends a request, retrying 429/503 (after `Retry-After`) and connection errors (backoff), up to
/// `--tries`; other non-2xx answers are final, reported with their problem detail.
async fn send_with_retries(
    ctx: &Ctx,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> std::result::Result<Value, String> {
    let mut backoff = Duration::from_millis(250);
    let mut last = String::new();
    for _ in 0..ctx.args.tries {
        match make().send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| format!("read answer: {e}"))?;
                if status.is_success() {
                    return serde_json::from_slice(&body)
                        .map_err(|e| format!("the server's answer is not JSON: {e}"));
                }
                let detail = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        Some(format!(
                            "{} ({})",
                            v["detail"].as_str()?,
                            v["code"].as_str().unwrap_or("")
                        ))
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                last = format!("HTTP {}: {detail}", status.as_u16());
                if status.as_u16() == 429 || status.as_u16() == 503 {
                    let s = retry_after.unwrap_or(1).clamp(1, 60);
                    tokio::time::sleep(Duration::from_secs(s)).await;
                    continue;
                }
                return Err(last);
            }
            Err(e) => {
                last = format!("HTTP: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
    }
    Err(format!("gave up after {} tries: {last}", ctx.args.tries))
}

async fn write_result(ctx: &Ctx, id: &str, name: &str) -> std::result::Result<PathBuf, String> {
    let mut url = format!("{}/v1/jobs/{id}/result", ctx.base);
    if ctx.args.format == SubmitFormat::Text {
        url.push_str("?format=text");
    }
    let resp = ctx
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("result: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("result: HTTP {}", resp.status().as_u16()));
    }
    let body = resp.bytes().await.map_err(|e| format!("result: {e}"))?;
    let path = result_path(&ctx.args.out, name, ctx.args.format);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("part");
    tokio::fs::write(&tmp, &body)
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_bytes_name_and_options() {
        let o = vec![("model", "v6".to_string())];
        let k = idempotency_key(b"abc", "a.png", &o);
        assert!(k.starts_with("submit-") && k.len() == 7 + 64);
        assert_eq!(k, idempotency_key(b"abc", "a.png", &o));
        assert_ne!(k, idempotency_key(b"abd", "a.png", &o));
        assert_ne!(k, idempotency_key(b"abc", "b.png", &o));
        assert_ne!(k, idempotency_key(b"abc", "a.png", &[]));
    }

    #[test]
    fn inputs_walk_directories_by_relative_name() {
        let dir = std::env::temp_dir().join(format!("submit-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["b.png", "a.JPG", "notes.txt", "sub/c.pdf"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let explicit = dir.join("notes.txt");
        let got = collect_inputs(&[dir.clone(), explicit]).unwrap();
        let names: Vec<_> = got.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a.JPG", "b.png", "sub/c.pdf", "notes.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_fails_on_any_failure_but_not_on_review() {
        let i = |n: &str| Input {
            path: n.into(),
            name: n.into(),
        };
        let w = |s: &str| Outcome::Written {
            state: s.into(),
            path: "x".into(),
        };
        let mut buf = Vec::new();
        assert!(summarise(
            &[(i("a"), w("completed")), (i("b"), w("needs_review"))],
            &mut buf
        ));
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("1 completed, 1 needs_review"), "{text}");
        assert!(text.contains("needs review b"), "{text}");
        let mut buf = Vec::new();
        assert!(!summarise(
            &[
                (i("a"), w("completed")),
                (i("b"), w("partially_completed")),
                (i("c"), Outcome::Failed("HTTP 415: nope".into()))
            ],
            &mut buf
        ));
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains("FAILED b: job ended partially_completed"),
            "{text}"
        );
        assert!(text.contains("FAILED c: HTTP 415: nope"), "{text}");
    }
}

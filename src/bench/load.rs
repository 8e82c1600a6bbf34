//! HTTP load against `/v1/ocr` and `/v1/jobs`: the sync sweep (closed loop at a concurrency, or
//! open loop at a request rate) measured in windows until three agree, bulk jobs to completion,
//! and the mixed run (a fixed-rate sync client while jobs keep the server saturated).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::Value;

use super::BenchPage;
use super::stats::{Sample, WindowStats, stable, summarise, window};

/// The shared HTTP side of a run.
#[derive(Clone)]
pub struct Target {
    pub http: reqwest::Client,
    pub base: String,
    pub pages: Arc<Vec<BenchPage>>,
    /// `?model=` for every request, when given.
    pub query: Vec<(&'static str, String)>,
}

/// How a sync step offers load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Offered {
    /// Closed loop: this many clients, each with one request in flight.
    Concurrency(usize),
    /// Open loop: requests start at this rate (per second) whatever the answers do.
    Rate(f64),
}

/// The windows rule of a sweep step.
#[derive(Debug, Clone)]
pub struct WindowRule {
    pub min_seconds: f64,
    pub min_requests: usize,
    pub stability_pct: f64,
    pub max_windows: usize,
    /// The step ends here whatever the windows say.
    pub deadline: Instant,
}

/// A sweep step's result: the merged last three windows (or fewer when the step ran out).
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub windows: usize,
    pub stable: bool,
    #[serde(flatten)]
    pub stats: WindowStats,
    /// Latencies (ms, ascending) of the merged windows, for the CDF plot.
    #[serde(skip)]
    pub latencies: Vec<f64>,
}

/// Load that runs until stopped, recording every answer.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    t0: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Open-loop arrivals stop after `max_arrivals` (closed loops ignore it).
    fn start(target: &Target, offered: Offered, max_inflight: usize, max_arrivals: usize) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        match offered {
            Offered::Concurrency(c) => {
                for _ in 0..c.max(1) {
                    let (target, samples, stop, next) =
                        (target.clone(), samples.clone(), stop.clone(), next.clone());
                    tasks.push(tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let s = ocr_once(&target, i, t0).await;
                            if s.status == 429 || s.status == 503 {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            samples.lock().unwrap().push(s);
                        }
                    }));
                }
            }
            Offered::Rate(r) => {
                let (target, samples, stop) = (target.clone(), samples.clone(), stop.clone());
                let inflight = Arc::new(AtomicUsize::new(0));
                tasks.push(tokio::spawn(async move {
                    let period = Duration::from_secs_f64(1.0 / r.max(1e-6));
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) && i < max_arrivals {
                        tick.tick().await;
                        if inflight.load(Ordering::Relaxed) >= max_inflight {
                            // The client's own bound: count the arrival as refused.
                            let now = t0.elapsed().as_secs_f64();
                            samples.lock().unwrap().push(Sample {
                                start: now,
                                end: now,
                                ..Sample::default()
                            });
                            i += 1;
                            continue;
                        }
                        inflight.fetch_add(1, Ordering::Relaxed);
                        let (target, samples, inflight) =
                            (target.clone(), samples.clone(), inflight.clone());
                        tokio::spawn(async move {
                            let s = ocr_once(&target, i, t0).await;
                            samples.lock().unwrap().push(s);
                            inflight.fetch_sub(1, Ordering::Relaxed);
                        });
                        i += 1;
                    }
                }));
            }
        }
        Self {
            samples,
            stop,
            t0,
            tasks,
        }
    }

    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn completed(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops offering load and waits for the requests in flight of closed-loop clients (so the
    /// next step starts on an idle server).
    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.samples.lock().unwrap().clone()
    }
}

/// One `POST /v1/ocr` of page `i mod n`.
async fn ocr_once(target: &Target, i: usize, t0: Instant) -> Sample {
    let page = &target.pages[i % target.pages.len()];
    let start = t0.elapsed().as_secs_f64();
    let resp = target
        .http
        .post(format!("{}/v1/ocr", target.base))
        .query(&target.query)
        .header("content-type", page.content_type)
        .body(page.bytes.clone())
        .send()
        .await;
    let mut s = Sample {
        start,
        ..Sample::default()
    };
    if let Ok(resp) = resp {
        s.status = resp.status().as_u16();
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
        };
        s.queue_ms = h(crate::api::X_QUEUE_TIME);
        s.detect_ms = h(crate::api::X_DETECT_TIME);
        s.recognize_ms = h(crate::api::X_RECOGNIZE_TIME);
        s.total_ms = h(crate::api::X_TOTAL_TIME);
        let body = resp.bytes().await.unwrap_or_default();
        if s.ok() {
            s.pages = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["pages"].as_array().map(|p| p.len() as u32))
                .unwrap_or(0);
        }
    }
    s.end = t0.elapsed().as_secs_f64();
    s
}

/// One sweep step: warm-up (as many answers as clients, untimed), then windows of at least
/// `min_seconds` and `min_requests` answers until the last three are stable, `max_windows` ran,
/// or the deadline passed.
pub async fn sweep_step(
    target: &Target,
    offered: Offered,
    rule: &WindowRule,
    bar: &ProgressBar,
) -> StepResult {
    let load = Load::start(target, offered, 256, usize::MAX);
    let warm = match offered {
        Offered::Concurrency(c) => c.max(1),
        Offered::Rate(_) => 1,
    };
    while load.completed() < warm && Instant::now() < rule.deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut from = load.now();
    let mut windows: Vec<WindowStats> = Vec::new();
    let mut bounds: Vec<(f64, f64)> = Vec::new();
    while windows.len() < rule.max_windows.max(1) && Instant::now() < rule.deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = load.now();
        let done = {
            let s = load.samples.lock().unwrap();
            s.iter().filter(|x| x.end >= from).count()
        };
        bar.set_message(format!(
            "{} window {}: {done} answers",
            label(offered),
            windows.len() + 1
        ));
        if now - from < rule.min_seconds || done < rule.min_requests {
            continue;
        }
        windows.push(window(&load.snapshot(), from, now));
        bounds.push((from, now));
        from = now;
        if stable(&windows, rule.stability_pct) {
            break;
        }
    }
    let is_stable = stable(&windows, rule.stability_pct);
    let samples = load.stop().await;
    let keep = bounds.len().saturating_sub(3);
    let merged: Vec<&Sample> = match (bounds.get(keep), bounds.last()) {
        (Some(&(a, _)), Some(&(_, b))) => {
            samples.iter().filter(|s| s.end >= a && s.end < b).collect()
        }
        _ => Vec::new(),
    };
    let span: f64 = bounds[keep..].iter().map(|(a, b)| b - a).sum();
    let stats = summarise(&merged, span);
    let mut latencies: Vec<f64> = merged
        .iter()
        .filter(|s| s.ok())
        .map(|s| s.latency_ms())
        .collect();
    latencies.sort_by(f64::total_cmp);
    bar.inc(1);
    StepResult {
        concurrency: match offered {
            Offered::Concurrency(c) => Some(c),
            Offered::Rate(_) => None,
        },
        rate: match offered {
            Offered::Rate(r) => Some(r),
            Offered::Concurrency(_) => None,
        },
        windows: windows.len(),
        stable: is_stable,
        stats,
        latencies,
    }
}

fn label(o: Offered) -> String {
    match o {
        Offered::Concurrency(c) => format!("concurrency {c}"),
        Offered::Rate(r) => format!("rate {r}/s"),
    }
}

/// What bulk mode measured: `pages` submitted as one-page jobs at once, until the last finished.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkResult {
    pub pages: u64,
    pub jobs: usize,
    pub failed_jobs: usize,
    pub seconds: f64,
    pub pages_per_s: f64,
}

/// Submits `count` pages (cycling through the set) as one-page jobs, all at once, and polls
/// them until every one is final. Throughput is pages done over first submission → last final.
pub async fn bulk(target: &Target, count: usize, bar: &ProgressBar) -> Result<BulkResult, String> {
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(count);
    // Submission is cheap next to OCR; a few at a time keeps the server's accept path honest.
    let mut pending =
        futures_util::stream::iter((0..count).map(|i| submit_job(target, i))).buffer_unordered(8);
    use futures_util::StreamExt;
    while let Some(r) = pending.next().await {
        ids.push(r?);
    }
    bar.set_length(count as u64);
    let mut open: Vec<String> = ids.clone();
    let mut pages = 0u64;
    let mut failed = 0usize;
    let mut last_final = t0.elapsed();
    // Jobs of one priority finish roughly in submission order, so each round polls open jobs
    // oldest first and stops after `LOOKAHEAD` that are still running: the client's polling then
    // costs the server a handful of requests per round, not one per open job (with 64 open
    // jobs every 250 ms that was 256 status requests a second, on the cores being measured).
    const LOOKAHEAD: usize = 4;
    while !open.is_empty() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut still = Vec::new();
        let mut running = 0;
        for id in open {
            if running >= LOOKAHEAD {
                still.push(id);
                continue;
            }
            let job = get_json(target, &format!("/v1/jobs/{id}")).await?;
            let state = job["state"].as_str().unwrap_or("");
            if FINAL.contains(&state) {
                pages += job["pages_done"].as_u64().unwrap_or(0);
                failed += usize::from(state != "completed" && state != "needs_review");
                last_final = t0.elapsed();
                bar.inc(1);
            } else {
                running += 1;
                still.push(id);
            }
        }
        open = still;
    }
    let seconds = last_final.as_secs_f64();
    Ok(BulkResult {
        pages,
        jobs: ids.len(),
        failed_jobs: failed,
        seconds,
        pages_per_s: pages as f64 / seconds.max(1e-9),
    })
}

const FINAL: [&str; 5] = [
    "completed",
    "partially_completed",
    "failed",
    "needs_review",
    "cancelled",
];

/// `POST /v1/jobs` of page `i mod n`; retries 429/503 after a pause. Returns the job id.
async fn submit_job(target: &Target, i: usize) -> Result<String, String> {
    let page = &target.pages[i % target.pages.len()];
    for _ in 0..60 {
        let resp = target
            .http
            .post(format!("{}/v1/jobs", target.base))
            .query(&target.query)
            .query(&[("name", page.name.as_str())])
            .header("content-type", page.content_type)
            .body(page.bytes.clone())
            .send()
            .await
            .map_err(|e| format!("POST /v1/jobs: {e}"))?;
        let status = resp.status().as_u16();
        if status == 429 || status == 503 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("POST /v1/jobs answer: {e}"))?;
        let body: Value =
            serde_json::from_slice(&body).map_err(|e| format!("POST /v1/jobs answer: {e}"))?;
        return match body["id"].as_str() {
            Some(id) if status < 300 => Ok(id.to_string()),
            _ => Err(format!("POST /v1/jobs: HTTP {status}: {body}")),
        };
    }
    Err("POST /v1/jobs: still refused after 60 tries".into())
}

async fn get_json(target: &Target, path: &str) -> Result<Value, String> {
    let resp = target
        .http
        .get(format!("{}{path}", target.base))
        .send()
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {path} answer: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("GET {path} answer: {e}"))
}

/// What mixed mode measured: the same fixed-rate sync client on the idle server, then while
/// bulk jobs keep it saturated.
#[derive(Debug, Clone, Serialize)]
pub struct MixedResult {
    pub sync_rate: f64,
    pub idle: WindowStats,
    pub mixed: WindowStats,
    /// mixed p99 / idle p99 (target ≤ 1.5).
    pub p99_ratio: f64,
    pub p50_ratio: f64,
    /// Job pages finished per second during the mixed phase.
    pub bulk_pages_per_s: f64,
    #[serde(skip)]
    pub idle_latencies: Vec<f64>,
    #[serde(skip)]
    pub mixed_latencies: Vec<f64>,
}

/// Idle phase: `requests` sync requests at `rate`. Mixed phase: `inflight` job feeders (each
/// submits a one-page job, waits for it, repeats) saturate the server; after a settling time
/// the same sync client runs again. The feeders' remaining jobs are cancelled at the end.
pub async fn mixed(
    target: &Target,
    rate: f64,
    requests: usize,
    inflight: usize,
    bar: &ProgressBar,
) -> Result<MixedResult, String> {
    bar.set_message("mixed: idle sync client");
    let (idle, idle_lat) = fixed_count(target, rate, requests).await;
    bar.inc(1);
    bar.set_message("mixed: saturating with jobs");
    let stop = Arc::new(AtomicBool::new(false));
    let done_pages = Arc::new(AtomicU64::new(0));
    let mut feeders = Vec::new();
    for k in 0..inflight.max(1) {
        let (target, stop, done_pages) = (target.clone(), stop.clone(), done_pages.clone());
        feeders.push(tokio::spawn(async move {
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                let Ok(id) = submit_job(&target, i).await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                i += inflight.max(1);
                loop {
                    // Once a second: a job page takes many seconds under this load, and the
                    // server always holds more outstanding pages than it runs at once, so it
                    // stays saturated while the status requests stay few.
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    let Ok(job) = get_json(&target, &format!("/v1/jobs/{id}")).await else {
                        continue;
                    };
                    if FINAL.contains(&job["state"].as_str().unwrap_or("")) {
                        done_pages
                            .fetch_add(job["pages_done"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        let _ = target
                            .http
                            .delete(format!("{}/v1/jobs/{id}", target.base))
                            .send()
                            .await;
                        break;
                    }
                }
            }
        }));
    }
    // Let the job queue fill and the first job pages reach the models.
    tokio::time::sleep(Duration::from_secs(10)).await;
    bar.set_message("mixed: sync client under bulk load");
    let before = done_pages.load(Ordering::Relaxed);
    let t = Instant::now();
    let (mixed, mixed_lat) = fixed_count(target, rate, requests).await;
    let bulk_pages_per_s =
        (done_pages.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in feeders {
        let _ = f.await;
    }
    bar.inc(1);
    Ok(MixedResult {
        sync_rate: rate,
        p99_ratio: mixed.p99_ms / idle.p99_ms,
        p50_ratio: mixed.p50_ms / idle.p50_ms,
        idle,
        mixed,
        bulk_pages_per_s,
        idle_latencies: idle_lat,
        mixed_latencies: mixed_lat,
    })
}

/// `count` sync requests started at `rate` per second; waits for all of them.
async fn fixed_count(target: &Target, rate: f64, count: usize) -> (WindowStats, Vec<f64>) {
    let load = Load::start(target, Offered::Rate(rate), 256, count);
    while load.completed() < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let span = load.now();
    let samples = load.stop().await;
    let first: Vec<&Sample> = samples.iter().collect();
    let stats = summarise(&first, span);
    let mut lat: Vec<f64> = first
        .iter()
        .filter(|s| s.ok())
        .map(|s| s.latency_ms())
        .collect();
    lat.sort_by(f64::total_cmp);
    (stats, lat)
}

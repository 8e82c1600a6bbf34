//! `ocr-server bench --raw`: the raw-model limit, what the inference runtime alone does with the
//! cores, on the backend `--backend` resolves to on this machine (ONNX Runtime or OpenVINO, the
//! one a started server would run; [`crate::engine::runtime::resolve_backend`]).
//!
//! The pages are decoded, their detector inputs built and the detector run once (untimed) to
//! find the text lines; the lines of **all** pages are then grouped into recognition batches the
//! way the server's scheduler groups them at its best (same pad widths, full batches up to its
//! item and pixel limits, across pages). What is timed is only the models' `run` over those
//! prepared tensors: one worker thread per core (each with its own single-threaded detector and
//! recogniser sessions, as the server runs them) takes the units largest first from one queue.
//! Pages divided by that wall time is the limit no scheduling can beat on this machine; the
//! server's pages/s divided by it is its efficiency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchPage;
use crate::engine::runtime::{EngineConfig, OrtFactory};
use crate::engine::{Candidate, Model, ModelFactory, Role, candidates, detect_batch};
use crate::error::Result;
use crate::pipeline::Tensor;
use crate::pipeline::decode::{DecodeLimits, decode_pages};
use crate::pipeline::preprocess::{det_input_size, det_tensor, rec_tensor};
use crate::scheduler::SchedulerConfig;

#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    pub pages: usize,
    pub workers: usize,
    /// Most lines per recognition batch used for this result.
    pub rec_max_batch: usize,
    pub det_runs: usize,
    pub rec_batches: usize,
    pub rec_lines: usize,
    pub seconds: f64,
    pub pages_per_s: f64,
    /// Thread-seconds inside each model's `run`.
    pub det_model_s: f64,
    pub rec_model_s: f64,
}

enum Unit {
    Det(Tensor),
    Rec(Tensor),
}

impl Unit {
    fn size(&self) -> usize {
        match self {
            Unit::Det(t) | Unit::Rec(t) => t.data.len(),
        }
    }
}

/// Measures the raw-model limit once per recognition batch limit in `rec_max_batches`.
pub fn raw(
    pages: &[BenchPage],
    cfg: EngineConfig,
    workers: usize,
    rec_max_batches: &[usize],
) -> Result<Vec<RawResult>> {
    let sched = SchedulerConfig::for_model(cfg.kind);
    // Padded as the server pads for this runtime.
    let mut opts = sched.base.clone();
    opts.rec_pad = crate::engine::RecPad::for_session(&cfg.session);
    let factory = Arc::new(OrtFactory::new(cfg)?);
    let mut det = factory.load(Role::Detector)?;
    let mut det_inputs = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
    let limits = DecodeLimits::default();
    for p in pages {
        for img in decode_pages(&p.bytes, &limits)? {
            let size = det_input_size(img.width(), img.height(), &opts.det_resize);
            let quads = detect_batch(det.as_mut(), &[(&img, &opts)], size)?;
            let t = det_tensor(&img, size, &opts.det_norm);
            det_inputs.push(Tensor {
                shape: vec![1, 3, size.1 as usize, size.0 as usize],
                data: t.data,
            });
            cands.extend(candidates(&img, &quads[0], &opts));
        }
    }
    drop(det);
    let page_count = det_inputs.len();
    // Lines by pad width, narrowest first inside one, as the scheduler keys them.
    let mut keyed: Vec<(u32, u32, usize)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let w = c.rec_width(opts.rec_max_width);
            (opts.rec_pad_width(w), w, i)
        })
        .collect();
    keyed.sort();
    let mut results = Vec::new();
    for &max_batch in rec_max_batches {
        let mut units: Vec<Unit> = det_inputs.iter().map(|t| Unit::Det(t.clone())).collect();
        let mut rec_batches = 0;
        let mut start = 0;
        while start < keyed.len() {
            let pad = keyed[start].0;
            let bucket_w = pad as u64;
            let mut end = start;
            while end < keyed.len()
                && keyed[end].0 == pad
                && end - start < max_batch.max(1)
                && ((end - start + 1) as u64) * 48 * bucket_w
                    <= sched.rec.policy.max_cost.max(48 * bucket_w)
            {
                end += 1;
            }
            let crops: Vec<&image::RgbImage> =
                keyed[start..end].iter().map(|k| &cands[k.2].crop).collect();
            units.push(Unit::Rec(rec_tensor(&crops, pad).0));
            rec_batches += 1;
            start = end;
        }
        units.sort_by_key(|u| std::cmp::Reverse(u.size()));
        let (seconds, det_s, rec_s) = run_units(&factory, units, workers.max(1))?;
        results.push(RawResult {
            pages: page_count,
            workers: workers.max(1),
            rec_max_batch: max_batch,
            det_runs: page_count,
            rec_batches,
            rec_lines: keyed.len(),
            seconds,
            pages_per_s: page_count as f64 / seconds.max(1e-9),
            det_model_s: det_s,
            rec_model_s: rec_s,
        });
    }
    Ok(results)
}

/// Runs every unit once on `workers` threads; returns (wall s, det thread-s, rec thread-s).
fn run_units(
    factory: &Arc<OrtFactory>,
    units: Vec<Unit>,
    workers: usize,
) -> Result<(f64, f64, f64)> {
    let units = Arc::new(units);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(workers + 1));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (factory, units, next, barrier) = (
            factory.clone(),
            units.clone(),
            next.clone(),
            barrier.clone(),
        );
        handles.push(std::thread::spawn(
            move || -> Result<(Duration, Duration)> {
                let loaded = (|| {
                    let mut det = factory.load(Role::Detector)?;
                    let mut rec = factory.load(Role::Recognizer)?;
                    // Warm each session on the smallest unit of its kind (untimed).
                    for u in units.iter().rev() {
                        if let Unit::Rec(t) = u {
                            rec.run(t)?;
                            break;
                        }
                    }
                    for u in units.iter().rev() {
                        if let Unit::Det(t) = u {
                            det.run(t)?;
                            break;
                        }
                    }
                    Ok::<_, crate::error::Error>((det, rec))
                })();
                barrier.wait();
                let (mut det, mut rec): (Box<dyn Model>, Box<dyn Model>) = loaded?;
                let (mut det_t, mut rec_t) = (Duration::ZERO, Duration::ZERO);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(u) = units.get(i) else { break };
                    let t = Instant::now();
                    match u {
                        Unit::Det(x) => {
                            det.run(x)?;
                            det_t += t.elapsed();
                        }
                        Unit::Rec(x) => {
                            rec.run(x)?;
                            rec_t += t.elapsed();
                        }
                    }
                }
                Ok((det_t, rec_t))
            },
        ));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut det_s = 0.0;
    let mut rec_s = 0.0;
    for h in handles {
        let (d, r) = h.join().expect("raw bench worker panicked")?;
        det_s += d.as_secs_f64();
        rec_s += r.as_secs_f64();
    }
    Ok((t0.elapsed().as_secs_f64(), det_s, rec_s))
}

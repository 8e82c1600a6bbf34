//! The server with the real PP-OCRv6 models on real dev pages: concurrent requests through the
//! router each get their own text even though their pages and lines shared batches; a
//! recognition batch provably held lines of several requests; an interactive request overtakes
//! a flood of bulk work; a page's JSON is the same alone, among concurrent pages and through the
//! CLI's one-page engine (batch invariance); and the binary serves over TCP and shuts down
//! gracefully on SIGTERM.
//! Needs `scripts/setup.sh`; fails, never skips, without it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use ocr_server::api::{Api, ApiConfig};
use ocr_server::engine::ModelKind;
use ocr_server::engine::ort::resolve_ort_lib;
use ocr_server::engine::runtime::{
    EngineConfig, OrtFactory, SessionConfig, load_engine, resolve_models_dir,
};
use ocr_server::pipeline::decode::{DecodeLimits, decode_pages};
use ocr_server::scheduler::{Class, Scheduler, SchedulerConfig};
use tower::ServiceExt;

fn engine_config() -> EngineConfig {
    EngineConfig {
        kind: ModelKind::V6,
        models_dir: resolve_models_dir(None),
        ort_lib: resolve_ort_lib(None),
        session: SessionConfig::cpu(1),
        with_classifier: false,
    }
}

/// The same on OpenVINO, at the precision `--backend auto` takes on this CPU.
fn openvino_config() -> EngineConfig {
    use ocr_server::engine::openvino::{Precision, cpu_has_bf16, resolve_openvino_lib};
    use ocr_server::engine::runtime::Backend;
    let precision = if cpu_has_bf16() {
        Precision::Bf16
    } else {
        Precision::F32
    };
    EngineConfig {
        session: SessionConfig {
            backend: Backend::OpenVino {
                lib: resolve_openvino_lib(None),
                precision,
            },
            ..SessionConfig::cpu(1)
        },
        ..engine_config()
    }
}

fn dev(name: &str) -> PathBuf {
    common::eval_dir().join("dev").join(name)
}

/// The reference: the same page through the one-page engine (the CLI's path).
fn reference_text(path: &PathBuf) -> String {
    let mut engine = load_engine(&engine_config()).unwrap();
    let page = &decode_pages(&std::fs::read(path).unwrap(), &DecodeLimits::default()).unwrap()[0];
    engine
        .ocr_page(page, &SchedulerConfig::for_model(ModelKind::V6).base)
        .unwrap()
        .text()
}

/// Levenshtein distance over chars, normalised by the longer length.
fn distance(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] as f64 / a.len().max(b.len()).max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_batches_and_each_gets_its_own_text() {
    // Four form pages of one size: their detector inputs share a shape, so they can share a
    // detection batch, and their lines meet in the recognition queue.
    let files: Vec<PathBuf> = [
        "funsd_82573104.png",
        "funsd_83443897.png",
        "funsd_85201976.png",
        "funsd_87528321.png",
    ]
    .iter()
    .map(|f| dev(f))
    .collect();
    let mut cfg = SchedulerConfig::for_model(ModelKind::V6);
    // Batches as on a GPU, and generous delays so the four requests, decoded in parallel, meet
    // in the queues.
    cfg.det.policy.max_items = 4;
    cfg.det.policy.max_delay = Duration::from_millis(500);
    cfg.rec.policy.max_delay = Duration::from_millis(100);
    cfg.rec.policy.max_items = 32;
    let factory = Arc::new(OrtFactory::new(engine_config()).unwrap());
    let scheduler = Arc::new(Scheduler::start(cfg, factory).unwrap());
    scheduler.wait_ready(Duration::from_secs(120)).unwrap();
    let router = Api::new(scheduler.clone(), ApiConfig::default()).router();

    let calls = files.iter().map(|f| {
        let router = router.clone();
        let bytes = std::fs::read(f).unwrap();
        tokio::spawn(async move {
            let (status, body) = post_ocr(router, "/v1/ocr?output=text", "image/png", bytes).await;
            (status, String::from_utf8(body).unwrap())
        })
    });
    let mut texts = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let (status, text) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
        texts.push(text);
    }
    let refs: Vec<String> = tokio::task::spawn_blocking({
        let files = files.clone();
        move || files.iter().map(reference_text).collect()
    })
    .await
    .unwrap();
    for (i, text) in texts.iter().enumerate() {
        let own = distance(text, &refs[i]);
        assert!(
            own < 0.03,
            "{}: differs from its one-page result by {own:.3}",
            files[i].display()
        );
        for (j, other) in refs.iter().enumerate() {
            if j != i {
                assert!(
                    distance(text, other) > own + 0.2,
                    "{} reads like {}",
                    files[i].display(),
                    files[j].display()
                );
            }
        }
    }
    let st = scheduler.stats();
    assert_eq!(st.pages_done, 4);
    assert!(
        st.rec_mixed_batches >= 1,
        "no recognition batch held lines of two requests: {st:?}"
    );
    assert!(
        st.det_batches < st.det_pages,
        "no detection batch held two pages: {st:?}"
    );
}

/// One POST of `bytes` to `uri` through the router: (status, body).
async fn post_ocr(
    router: axum::Router,
    uri: &str,
    ctype: &str,
    bytes: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, ctype)
        .body(Body::from(bytes))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

/// One `POST /v1/ocr` through the router: the response's `pages` (text, boxes, confidences of
/// every line and word), as JSON.
async fn ocr_pages(router: axum::Router, bytes: Vec<u8>) -> serde_json::Value {
    let (status, body) = post_ocr(router, "/v1/ocr", "application/octet-stream", bytes).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["pages"].take()
}

/// Where two `pages` values first differ, for the failure message: a line's index and both
/// versions of it, or the line counts.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (la, lb) = (
        a[0]["lines"].as_array().cloned().unwrap_or_default(),
        b[0]["lines"].as_array().cloned().unwrap_or_default(),
    );
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        if x != y {
            return format!("line {i}:\n  {x}\n  {y}");
        }
    }
    format!("{} lines vs {} lines", la.len(), lb.len())
}

/// Compares two JSON values: equal, except numbers under a `confidence` key, which may differ
/// by `tol`. Returns the path of the first difference.
fn same_within(
    a: &serde_json::Value,
    b: &serde_json::Value,
    tol: f64,
    path: &str,
) -> Result<(), String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: {} vs {} items", x.len(), y.len()));
            }
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same_within(p, q, tol, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: keys differ"));
            }
            for (k, p) in x {
                let q = y.get(k).ok_or_else(|| format!("{path}.{k}: missing"))?;
                if k == "confidence" && tol > 0.0 {
                    let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
                    if (p - q).abs() > tol {
                        return Err(format!("{path}.{k}: {p} vs {q}"));
                    }
                } else {
                    same_within(p, q, tol, &format!("{path}.{k}"))?;
                }
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}

/// Sends `targets` alone, one after the other, then all of them twice among `noise` pages at
/// once; returns (alone, loaded copies) and the scheduler's stats before and after the load.
async fn alone_and_loaded(
    engine: EngineConfig,
    cfg: SchedulerConfig,
    targets: &[&str],
    noise: &[&str],
) -> (Vec<serde_json::Value>, Vec<[serde_json::Value; 2]>, u64) {
    let read = |f: &str| std::fs::read(dev(f)).unwrap();
    let factory = Arc::new(OrtFactory::new(engine).unwrap());
    let scheduler = Arc::new(Scheduler::start(cfg, factory).unwrap());
    scheduler.wait_ready(Duration::from_secs(120)).unwrap();
    let router = Api::new(scheduler.clone(), ApiConfig::default()).router();
    let mut alone = Vec::new();
    for t in targets {
        alone.push(ocr_pages(router.clone(), read(t)).await);
    }
    let mixed_before = scheduler.stats().rec_mixed_batches;
    let calls: Vec<_> = targets
        .iter()
        .chain(noise.iter())
        .chain(targets.iter())
        .map(|f| tokio::spawn(ocr_pages(router.clone(), read(f))))
        .collect();
    let mut loaded = Vec::new();
    for c in calls {
        loaded.push(c.await.unwrap());
    }
    let n = targets.len();
    let copies = (0..n)
        .map(|i| [loaded[i].clone(), loaded[n + noise.len() + i].clone()])
        .collect();
    (
        alone,
        copies,
        scheduler.stats().rec_mixed_batches - mixed_before,
    )
}

// Pages with many lines of many widths (receipts and forms), sent alone and then among other
// pages at once; the form pages share one detector input shape with the noise forms.
const TARGETS: [&str; 3] = ["sroie_041.jpg", "funsd_82573104.png", "sroie_151.jpg"];
const NOISE: [&str; 4] = [
    "funsd_83443897.png",
    "sroie_122.jpg",
    "funsd_85201976.png",
    "sroie_152.jpg",
];

/// The CPU defaults for `engine`'s runtime (every line padded by its own width alone, batches
/// of one): the same JSON alone, under load and through the one-page engine (the CLI's path).
async fn same_json_alone_under_load_and_through_the_engine(engine: EngineConfig) {
    let mut cfg = SchedulerConfig::for_model(ModelKind::V6);
    cfg.base.rec_pad = ocr_server::engine::RecPad::for_session(&engine.session);
    let base = cfg.base.clone();
    let name = engine.session.backend.name();
    let (alone, loaded, _) = alone_and_loaded(engine.clone(), cfg, &TARGETS, &NOISE).await;
    for (i, t) in TARGETS.iter().enumerate() {
        let lines = alone[i][0]["lines"].as_array().unwrap().len();
        assert!(lines >= 10, "{t}: only {lines} lines");
        for (k, got) in loaded[i].iter().enumerate() {
            assert!(
                *got == alone[i],
                "{name}, {t}: under load (copy {k}) the result differs from the one alone at {}",
                first_difference(&alone[i], got)
            );
        }
    }
    let engine_pages: Vec<serde_json::Value> = tokio::task::spawn_blocking(move || {
        let mut engine = load_engine(&engine).unwrap();
        TARGETS
            .iter()
            .map(|t| {
                let page = &decode_pages(&std::fs::read(dev(t)).unwrap(), &DecodeLimits::default())
                    .unwrap()[0];
                // Through text, as the API sends it (f32 written shortest, read back as f64).
                let json = serde_json::to_string(&[engine.ocr_page(page, &base).unwrap()]);
                serde_json::from_str(&json.unwrap()).unwrap()
            })
            .collect()
    })
    .await
    .unwrap();
    for (i, t) in TARGETS.iter().enumerate() {
        assert!(
            engine_pages[i] == alone[i],
            "{name}, {t}: the engine's result differs from the server's at {}",
            first_difference(&alone[i], &engine_pages[i])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_gives_the_same_json_alone_under_load_and_through_the_engine() {
    same_json_alone_under_load_and_through_the_engine(engine_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_openvino_too_a_page_gives_the_same_json_alone_and_under_load() {
    same_json_alone_under_load_and_through_the_engine(openvino_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_across_requests_a_page_keeps_its_text_and_boxes() {
    // Batches as on a GPU (lines of one pad width from any request, pages of one shape), held
    // open long enough for concurrent pages to meet: each line's input is still its own, so
    // texts and boxes are the same as alone; the runtime's kernels round differently with the
    // batch size, so confidences may move in their last digits.
    let mut cfg = SchedulerConfig::for_model(ModelKind::V6);
    cfg.det.policy.max_items = 4;
    cfg.det.policy.max_delay = Duration::from_millis(300);
    cfg.rec.policy.max_items = 32;
    cfg.rec.policy.max_delay = Duration::from_millis(100);
    cfg.base.rec_pad = ocr_server::engine::RecPad::buckets();
    let (alone, loaded, mixed) = alone_and_loaded(engine_config(), cfg, &TARGETS, &NOISE).await;
    assert!(
        mixed > 0,
        "no recognition batch held lines of two requests under load"
    );
    for (i, t) in TARGETS.iter().enumerate() {
        for (k, got) in loaded[i].iter().enumerate() {
            if let Err(e) = same_within(&alone[i], got, 1e-4, "pages") {
                panic!("{t}: batched under load (copy {k}) differs from alone at {e}");
            }
        }
    }
}

/// The I/O binding path (on by default on CUDA; here forced on over ONNX Runtime's CPU
/// allocator, so a machine without a GPU runs the same staging, binding and in-place read):
/// the same pages, in batches of one and of 16 lines of one bucket, give the same JSON as plain
/// `Session::run`, and the staged input survives shape changes (every page and line width).
#[test]
fn through_an_io_binding_pages_give_the_same_json_as_plain_runs() {
    use ocr_server::engine::Model;
    use ocr_server::engine::ort::{IoBindingChoice, OrtModel, init_runtime};
    let bound_cfg = EngineConfig {
        session: SessionConfig {
            io_binding: IoBindingChoice::On,
            ..SessionConfig::cpu(1)
        },
        ..engine_config()
    };
    // The binding is really there: a bound session reports it, a plain CPU one does not, and a
    // bound run equals a plain run on the same input, twice (the staged buffer is reused).
    let env = init_runtime(&bound_cfg.ort_lib).unwrap();
    let rec = ModelKind::V6.dir(&bound_cfg.models_dir).join("rec.onnx");
    let mut bound = OrtModel::load(env, &rec, &bound_cfg.session.ort()).unwrap();
    let mut plain = OrtModel::load(env, &rec, &SessionConfig::cpu(1).ort()).unwrap();
    assert!(bound.is_bound() && !plain.is_bound());
    for width in [320usize, 320, 96, 800] {
        let n = 3 * 48 * width;
        let input = ocr_server::pipeline::Tensor {
            shape: vec![1, 3, 48, width],
            data: (0..n)
                .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
                .collect(),
        };
        let (a, b) = (bound.run(&input).unwrap(), plain.run(&input).unwrap());
        assert_eq!(a.shape, b.shape, "width {width}");
        assert!(a.data == b.data, "width {width}: bound output differs");
    }
    for rec_batch in [1usize, 16] {
        let mut opts = ocr_server::engine::OcrOptions::for_model(ModelKind::V6);
        opts.rec_batch = rec_batch;
        opts.rec_pad = ocr_server::engine::RecPad::buckets();
        let mut bound = load_engine(&bound_cfg).unwrap();
        let mut plain = load_engine(&engine_config()).unwrap();
        for t in TARGETS {
            let page = &decode_pages(&std::fs::read(dev(t)).unwrap(), &DecodeLimits::default())
                .unwrap()[0];
            let a = serde_json::to_value(bound.ocr_page(page, &opts).unwrap()).unwrap();
            let b = serde_json::to_value(plain.ocr_page(page, &opts).unwrap()).unwrap();
            assert!(
                a["lines"].as_array().is_some_and(|l| l.len() >= 10),
                "{t}: too few lines"
            );
            assert!(
                a == b,
                "{t}, batches of {rec_batch}: through the binding the result differs at {}",
                first_difference(&b, &a)
            );
        }
    }
}

#[test]
fn an_interactive_request_overtakes_a_bulk_flood() {
    // One page per detection batch, so the interactive page is the second one detected.
    let mut cfg = SchedulerConfig::for_model(ModelKind::V6);
    cfg.det.policy.max_items = 1;
    let scheduler =
        Scheduler::start(cfg, Arc::new(OrtFactory::new(engine_config()).unwrap())).unwrap();
    scheduler.wait_ready(Duration::from_secs(120)).unwrap();
    let load = |name: &str| {
        decode_pages(&std::fs::read(dev(name)).unwrap(), &DecodeLimits::default()).unwrap()
    };
    let opts = scheduler.base_options().clone();
    let bulk: Vec<_> = [
        "sroie_041.jpg",
        "sroie_122.jpg",
        "sroie_151.jpg",
        "sroie_152.jpg",
        "sroie_264.jpg",
        "sroie_313.jpg",
    ]
    .iter()
    .map(|f| {
        scheduler
            .submit(load(f), opts.clone(), Class::Bulk, None)
            .unwrap()
    })
    .collect();
    let interactive = scheduler
        .submit(load("tess_phototest.png"), opts, Class::Interactive, None)
        .unwrap();
    let i = interactive.rx.blocking_recv().unwrap().unwrap();
    assert!(
        i.pages[0].text().contains("quick brown"),
        "{}",
        i.pages[0].text()
    );
    let bulk_seqs: Vec<u64> = bulk
        .into_iter()
        .map(|t| t.rx.blocking_recv().unwrap().unwrap().seq)
        .collect();
    let before = bulk_seqs.iter().filter(|&&s| s < i.seq).count();
    assert!(
        before <= 2,
        "{before} of 6 bulk requests submitted earlier finished before the interactive one \
         (bulk {bulk_seqs:?}, interactive {})",
        i.seq
    );
}

/// One HTTP/1.1 exchange over a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn the_binary_serves_over_tcp_and_stops_gracefully_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocr-server"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--cls-workers",
            "0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("ocr-server: listening on http://") {
            addr = rest.split(' ').next().map(str::to_string);
            break;
        }
        line.clear();
    }
    let addr = addr.expect("the server announces its address");
    let mut ready = false;
    for _ in 0..600 {
        if http(&addr, "GET", "/health/ready", "text/plain", b"").0 == 200 {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "never ready");
    let img = std::fs::read(dev("tess_phototest.png")).unwrap();
    let (status, body) = http(&addr, "POST", "/v1/ocr?output=text", "image/png", &img);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("quick brown"), "{body}");
    // A request in flight when SIGTERM arrives still gets its answer.
    let in_flight = std::thread::spawn({
        let addr = addr.clone();
        let img = img.clone();
        move || http(&addr, "POST", "/v1/ocr?output=text", "image/png", &img)
    });
    // SIGTERM once the server has admitted it (the second OCR request it counts).
    let mut admitted = false;
    for _ in 0..600 {
        let (_, q) = http(&addr, "GET", "/v1/queue", "text/plain", b"");
        let q: serde_json::Value = serde_json::from_str(&q).unwrap();
        if q["stats"]["requests"].as_u64() == Some(2) {
            admitted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(admitted, "the second request was never admitted");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("quick brown"), "{body}");
    let exit = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(exit.success(), "exit {exit:?}: {rest}");
    assert!(rest.contains("ocr-server: stopped"), "{rest}");
}

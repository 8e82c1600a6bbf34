//! The jobs API through the router over the real scheduler, a real SQLite file and the job
//! runner: with fake models for idempotency, cancel, retries and dead letters; with the real
//! PP-OCRv6 models for the lifecycle through review.

mod common;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use image::{Rgb, RgbImage};
use ocr_server::api::{Api, ApiConfig};
use ocr_server::engine::ModelKind;
use ocr_server::engine::fake::{FakeFactory, Gate};
use ocr_server::engine::ort::resolve_ort_lib;
use ocr_server::engine::runtime::{EngineConfig, OrtFactory, SessionConfig, resolve_models_dir};
use ocr_server::jobs::documents::DocumentStore;
use ocr_server::jobs::runner::{Runner, RunnerConfig};
use ocr_server::jobs::service::{JobService, ServiceConfig};
use ocr_server::jobs::sqlite::SqliteStore;
use ocr_server::scheduler::{ModelFactory, Scheduler, SchedulerConfig};
use serde_json::Value;
use tower::ServiceExt;

fn png(bars: u32) -> Vec<u8> {
    let mut img = RgbImage::from_pixel(320, 40 + 40 * bars, Rgb([255, 255, 255]));
    for b in 0..bars {
        for y in 30 + 40 * b..50 + 40 * b {
            for x in 20..300 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
    }
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

struct Fixture {
    router: Router,
    runner: Arc<Runner>,
    scheduler: Arc<Scheduler>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(factory: Arc<dyn ModelFactory>, sc: SchedulerConfig, gate: Option<&Gate>) -> Fixture {
    fixture_with(factory, sc, gate, RunnerConfig::default())
}

fn fixture_with(
    factory: Arc<dyn ModelFactory>,
    sc: SchedulerConfig,
    gate: Option<&Gate>,
    rc: RunnerConfig,
) -> Fixture {
    fixture_full(factory, sc, gate, rc, ServiceConfig::default())
}

fn fixture_full(
    factory: Arc<dyn ModelFactory>,
    sc: SchedulerConfig,
    gate: Option<&Gate>,
    rc: RunnerConfig,
    svc: ServiceConfig,
) -> Fixture {
    let dir = std::env::temp_dir().join(format!("ocr-jobs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let scheduler = Arc::new(Scheduler::start(sc, factory).unwrap());
    if let Some(g) = gate {
        g.permits.send(()).unwrap();
        g.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    scheduler.wait_ready(Duration::from_secs(120)).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.join("jobs.db")).unwrap());
    let documents = Arc::new(
        DocumentStore::open(&format!("file://{}/documents", dir.display()), 64 << 20).unwrap(),
    );
    let runner = Runner::new(
        store,
        scheduler.clone(),
        documents,
        RunnerConfig {
            max_attempts: 2,
            backoff_base: Duration::from_millis(10),
            poll: Duration::from_millis(50),
            ..rc
        },
    );
    runner.start();
    let jobs = JobService::new(runner.clone(), svc);
    let router = Api::with_jobs(scheduler.clone(), ApiConfig::default(), jobs).router();
    Fixture {
        router,
        runner,
        scheduler,
        _dir: TempDir(dir),
    }
}

/// The real PP-OCRv6 models on ONNX Runtime's CPU, with the scheduler's defaults.
fn real_fixture() -> Fixture {
    let factory = OrtFactory::new(EngineConfig {
        kind: ModelKind::V6,
        models_dir: resolve_models_dir(None),
        ort_lib: resolve_ort_lib(None),
        session: SessionConfig::cpu(1),
        with_classifier: false,
    })
    .unwrap();
    fixture(
        Arc::new(factory),
        SchedulerConfig::for_model(ModelKind::V6),
        None,
    )
}

fn fake_config() -> SchedulerConfig {
    let mut c = SchedulerConfig::for_model(ModelKind::V6);
    c.base.det_resize.limit_side_px = 32;
    c
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, headers, v)
}

fn post(uri: &str, ctype: &str, key: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut r = Request::post(uri).header(header::CONTENT_TYPE, ctype);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    r.body(Body::from(body)).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// Multipart with one `file` part per document, plus text fields.
fn multipart(files: &[(&str, Vec<u8>)], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let b = "jobBoundary7";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

/// Polls a job until its state is one of `states`.
async fn wait_state(router: &Router, id: &str, states: &[&str]) -> Value {
    for _ in 0..3000 {
        let (s, _, job) = send(router, get(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{job}");
        if states.contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never reached {states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_idempotency_and_listing_with_fakes() {
    let f = fixture(Arc::new(FakeFactory::default()), fake_config(), None);
    let (ctype, body) = multipart(
        &[("a.png", png(2)), ("b.png", png(1))],
        &[("tag", "batch-7")],
    );
    let (s, h, job) = send(
        &f.router,
        post("/v1/jobs", &ctype, Some("k1"), body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(h[header::LOCATION], format!("/v1/jobs/{id}"));
    assert_eq!(job["tag"], "batch-7");
    assert_eq!(job["pages_total"], 2);
    // Same key, same payload: the same job. Same key, another payload: 422.
    let (s, h, again) = send(
        &f.router,
        post("/v1/jobs", &ctype, Some("k1"), body.clone()),
    )
    .await;
    assert_eq!(
        (s, again["id"].as_str()),
        (StatusCode::ACCEPTED, Some(id.as_str()))
    );
    assert_eq!(h["idempotent-replayed"], "true");
    let (ctype2, other) = multipart(&[("a.png", png(3))], &[]);
    let (s, _, p) = send(&f.router, post("/v1/jobs", &ctype2, Some("k1"), other)).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (422, Some("idempotency_conflict"))
    );
    // Concurrent first uses of one key make one job.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let r = f.router.clone();
            let (c, b) = (ctype.clone(), body.clone());
            tokio::spawn(async move { send(&r, post("/v1/jobs", &c, Some("k2"), b)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for c in calls {
        let (s, _, j) = c.await.unwrap();
        assert_eq!(s, StatusCode::ACCEPTED, "{j}");
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let done = wait_state(&f.router, &id, &["completed"]).await;
    assert_eq!(
        (done["pages_done"].as_u64(), done["progress"].as_f64()),
        (Some(2), Some(1.0))
    );
    let (s, _, result) = send(&f.router, get(&format!("/v1/jobs/{id}/result"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(result["documents"][0]["name"], "a.png");
    assert_eq!(result["documents"][0]["text"], "#\n#");
    assert_eq!(result["documents"][1]["text"], "#");
    let (_, _, text) = send(&f.router, get(&format!("/v1/jobs/{id}/result?format=text"))).await;
    // Pages (and documents) are separated by a form feed in the text format.
    assert_eq!(text, Value::String("#\n#\n\u{c}#".into()));
    let (_, _, events) = send(&f.router, get(&format!("/v1/jobs/{id}/events"))).await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"created"));
    let states: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state")
        .map(|e| e["detail"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["processing", "completed"]);
    let (_, _, list) = send(&f.router, get("/v1/jobs?state=completed&limit=1")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert!(list["next_cursor"].is_string());
    let (s, _, p) = send(&f.router, get("/v1/jobs/nope")).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (404, Some("job_not_found"))
    );
    // Bad documents are refused before anything is stored.
    let (s, _, p) = send(
        &f.router,
        post("/v1/jobs", "image/png", None, b"nope".to_vec()),
    )
    .await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (415, Some("unsupported_format"))
    );
    assert_eq!(f.scheduler.stats().failed_batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_queued_pages_before_the_model() {
    let gate = Gate::new();
    let mut sc = fake_config();
    sc.det.policy.max_items = 1;
    let factory = FakeFactory {
        gate: Some(gate.clone()),
        ..FakeFactory::default()
    };
    let f = fixture(Arc::new(factory), sc, Some(&gate));
    let docs: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("p{i}.png"), png(1))).collect();
    let refs: Vec<(&str, Vec<u8>)> = docs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (ctype, body) = multipart(&refs, &[]);
    let (s, _, job) = send(&f.router, post("/v1/jobs", &ctype, None, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();
    // The first page is in the detector; the others wait in the scheduler.
    tokio::task::spawn_blocking({
        let g = gate.clone();
        move || g.entered.recv_timeout(Duration::from_secs(30)).unwrap()
    })
    .await
    .unwrap();
    let (s, _, cancelled) = send(
        &f.router,
        Request::delete(format!("/v1/jobs/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, cancelled["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    // Every page's runner task has let go of its reply channel before the detector goes on.
    for _ in 0..500 {
        if f.runner.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.runner.in_flight(), 0);
    gate.open();
    for _ in 0..500 {
        let st = f.scheduler.stats();
        if f.scheduler.queue_report().bulk.depth == 0 && st.det_batches >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = f.scheduler.stats();
    assert!(
        st.det_pages <= 1,
        "only the page already in the detector ran: {st:?}"
    );
    assert!(st.dropped_gone >= 1, "{st:?}");
    let (_, _, job) = send(&f.router, get(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(job["state"], "cancelled");
    let (s, _, p) = send(
        &f.router,
        Request::delete(format!("/v1/jobs/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (409, Some("job_finished"))
    );
}

/// A page that never finishes (issue 26, item 3): the detector holds it for ever; past the page
/// limit it fails with `page_timed_out`, is retried once with backoff, and is dead-lettered,
/// instead of keeping its lease (renewed by the heartbeat) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_never_finishes_is_failed_at_its_limit() {
    let gate = Gate::new();
    let mut sc = fake_config();
    sc.det.policy.max_items = 1;
    let factory = FakeFactory {
        gate: Some(gate.clone()),
        ..FakeFactory::default()
    };
    let f = fixture_full(
        Arc::new(factory),
        sc,
        Some(&gate),
        RunnerConfig {
            page_timeout: Duration::from_millis(400),
            ..RunnerConfig::default()
        },
        ServiceConfig::default(),
    );
    let (s, _, job) = send(&f.router, post("/v1/jobs", "image/png", None, png(1))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();
    let failed = wait_state(&f.router, &id, &["failed"]).await;
    gate.open();
    let page = &failed["documents"][0]["pages"][0];
    assert_eq!(
        (page["state"].as_str(), page["attempts"].as_u64()),
        (Some("failed"), Some(2)),
        "{failed}"
    );
    // The first attempt hung in the detector (`recognise`); the second waited behind it in
    // the queue for four limits (`start`).
    let error = page["error"].as_str().unwrap();
    assert!(
        error.contains("longer than 1 s to start")
            || error.contains("longer than 1 s to recognise"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_then_dead_letter_and_can_be_retried() {
    let factory = FakeFactory {
        failing_rec: true,
        ..FakeFactory::default()
    };
    let f = fixture(Arc::new(factory), fake_config(), None);
    let (s, _, job) = send(&f.router, post("/v1/jobs", "image/png", None, png(1))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();
    let failed = wait_state(&f.router, &id, &["failed"]).await;
    let page = &failed["documents"][0]["pages"][0];
    assert_eq!(
        (page["state"].as_str(), page["attempts"].as_u64()),
        (Some("failed"), Some(2))
    );
    assert!(page["error"].as_str().unwrap().contains("injected failure"));
    let (_, _, events) = send(&f.router, get(&format!("/v1/jobs/{id}/events"))).await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"page_retry") && kinds.contains(&"page_failed"),
        "{kinds:?}"
    );
    // A manual retry runs it again (and it fails again: attempts keep counting).
    let (s, _, _) = send(
        &f.router,
        post(
            &format!("/v1/jobs/{id}/retry"),
            "application/json",
            None,
            vec![],
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    for _ in 0..1000 {
        let (_, _, j) = send(&f.router, get(&format!("/v1/jobs/{id}"))).await;
        if j["documents"][0]["pages"][0]["attempts"].as_u64() == Some(3) && j["state"] == "failed" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the retried page never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_models_job_lifecycle_through_review() {
    let f = real_fixture();
    let dev = common::eval_dir().join("dev");
    let a = std::fs::read(dev.join("tess_phototest.png")).unwrap();
    let b = std::fs::read(dev.join("ic15_img_1.jpg")).unwrap();
    let (ctype, body) = multipart(
        &[("phototest.png", a), ("scene.jpg", b)],
        &[("review_threshold", "0.999")],
    );
    let (s, _, job) = send(&f.router, post("/v1/jobs", &ctype, None, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = wait_state(&f.router, &id, &["needs_review", "completed"]).await;
    assert_eq!(
        job["state"], "needs_review",
        "real lines are below 0.999 confidence"
    );
    let (_, _, queue) = send(&f.router, get("/v1/jobs?state=needs_review")).await;
    assert!(
        queue["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    let (_, _, result) = send(&f.router, get(&format!("/v1/jobs/{id}/result"))).await;
    let text = result["documents"][0]["text"].as_str().unwrap();
    assert!(text.contains("quick brown dog"), "{text}");
    let review = serde_json::json!({"corrections": [{"document": 1, "page": 0, "text": "corrected"}], "reviewer": "t"});
    let (s, _, done) = send(
        &f.router,
        post(
            &format!("/v1/jobs/{id}/review"),
            "application/json",
            None,
            review.to_string().into_bytes(),
        ),
    )
    .await;
    assert_eq!(
        (s, done["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{done}"
    );
    let (_, _, result) = send(&f.router, get(&format!("/v1/jobs/{id}/result"))).await;
    assert_eq!(result["documents"][1]["text"], "corrected");
    assert!(
        result["documents"][1]["pages"][0]["lines"].is_array(),
        "the machine result is kept"
    );
    let (s, _, p) = send(
        &f.router,
        post(
            &format!("/v1/jobs/{id}/review"),
            "application/json",
            None,
            br#"{"approve":true}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (409, Some("not_in_review"))
    );
}

/// An unknown option is 422 `invalid_option` on every route and in every place options travel
/// (query string, JSON body, multipart field), naming the unknown name, and the names the
/// answer lists as known are the one list: the shared overrides' and the route's own. A shared
/// option is accepted everywhere the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_option_is_refused_on_every_route_through_the_one_list() {
    use base64::Engine as _;
    use ocr_server::api::OcrFields;
    use ocr_server::api::jobs::JobFields;
    use ocr_server::api::options::Fields;
    use ocr_server::overrides::Overrides;
    let f = fixture(Arc::new(FakeFactory::default()), fake_config(), None);
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(1));
    let ocr_json = |extra: &str| format!(r#"{{"image": "{b64}"{extra}}}"#);
    let job_json = |extra: &str| format!(r#"{{"documents": [{{"data": "{b64}"}}]{extra}}}"#);
    // (route, query, content type, body, the route's own option names)
    type Case = (
        &'static str,
        String,
        String,
        Vec<u8>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "/v1/ocr",
            "?bogus_opt=1".into(),
            "image/png".into(),
            png(1),
            OcrFields::FIELDS,
        ),
        (
            "/v1/ocr",
            "".into(),
            "application/json".into(),
            ocr_json(r#", "bogus_opt": 1"#).into_bytes(),
            OcrFields::FIELDS,
        ),
        (
            "/v1/jobs",
            "?bogus_opt=1".into(),
            "image/png".into(),
            png(1),
            JobFields::FIELDS,
        ),
        (
            "/v1/jobs",
            "".into(),
            "application/json".into(),
            job_json(r#", "bogus_opt": 1"#).into_bytes(),
            JobFields::FIELDS,
        ),
    ];
    let mut cases = cases;
    let (ct, body) = multipart(&[("a.png", png(1))], &[("bogus_opt", "1")]);
    cases.push((
        "/v1/ocr",
        "".into(),
        ct.clone(),
        body.clone(),
        OcrFields::FIELDS,
    ));
    cases.push(("/v1/jobs", "".into(), ct, body, JobFields::FIELDS));
    for (route, query, ctype, body, own) in cases {
        let (s, _, p) = send(
            &f.router,
            post(&format!("{route}{query}"), &ctype, None, body),
        )
        .await;
        assert_eq!(
            (s.as_u16(), p["code"].as_str()),
            (422, Some("invalid_option")),
            "{route}{query} {ctype}: {p}"
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains("`bogus_opt`"), "{detail}");
        let known = &detail[detail.find("known:").expect(detail)..];
        for name in Overrides::FIELDS.iter().chain(own) {
            assert!(
                known.contains(&format!("`{name}`")),
                "{route} {ctype}: {name} not in {known}"
            );
        }
        // A JSON body also names its own field (`image`, `documents`).
        let body_field = ["`image`", "`documents`"]
            .iter()
            .filter(|f| known.contains(*f))
            .count();
        assert_eq!(
            body_field,
            usize::from(ctype == "application/json"),
            "{known}"
        );
        let listed = known.matches('`').count() / 2;
        assert_eq!(
            listed,
            Overrides::FIELDS.len() + own.len() + body_field,
            "{route} {ctype}: {known}"
        );
    }
    // Every shared option, accepted in each place on both routes.
    let shared =
        "det_limit_side=64&classify=false&min_confidence=0.1&rec_space_min=0.5&pages=1&model=v6";
    for route in ["/v1/ocr", "/v1/jobs"] {
        let (s, _, v) = send(
            &f.router,
            post(&format!("{route}?{shared}"), "image/png", None, png(1)),
        )
        .await;
        assert!(s.is_success(), "{route}?{shared}: {v}");
    }
    let fields = r#", "det_limit_side": 64, "rec_space_min": 0.5, "pages": "1", "model": "v6""#;
    let (s, _, v) = send(
        &f.router,
        post(
            "/v1/ocr",
            "application/json",
            None,
            ocr_json(fields).into_bytes(),
        ),
    )
    .await;
    assert!(s.is_success(), "{v}");
    let (s, _, v) = send(
        &f.router,
        post(
            "/v1/jobs",
            "application/json",
            None,
            job_json(fields).into_bytes(),
        ),
    )
    .await;
    assert!(s.is_success(), "{v}");
    // The listing and result routes have their own lists, checked the same way.
    for uri in ["/v1/jobs?bogus_opt=1", "/v1/jobs/x/result?bogus_opt=1"] {
        let (s, _, p) = send(&f.router, get(uri)).await;
        assert_eq!(
            (s.as_u16(), p["code"].as_str()),
            (422, Some("invalid_option")),
            "{uri}: {p}"
        );
    }
}

/// The two ways in give the same answer: for dev pages of each kind (forms, receipts, a scene,
/// a printed page), the pages and extractions of `POST /v1/ocr?extract=auto` are exactly those
/// of a job made from the same bytes with the same options (one orchestration behind both:
/// `OcrService` for the sync path, the runner for the job, the same reserve-then-decode and
/// scheduler). `scripts/dev_json.sh` runs the same comparison over the whole dev set, and
/// compares two binaries' answers byte for byte for a refactor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_job_answers_agree_on_dev_pages() {
    let f = real_fixture();
    let dev = common::eval_dir().join("dev");
    for name in [
        "funsd_83443897.png",
        "sroie_122.jpg",
        "ic15_img_1.jpg",
        "tess_phototest.png",
    ] {
        let bytes = std::fs::read(dev.join(name)).unwrap();
        let ctype = if name.ends_with(".jpg") {
            "image/jpeg"
        } else {
            "image/png"
        };
        let (s, _, sync) = send(
            &f.router,
            post("/v1/ocr?extract=auto", ctype, None, bytes.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{name}: {sync}");
        let (s, _, job) = send(&f.router, post("/v1/jobs?extract=auto", ctype, None, bytes)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{name}: {job}");
        let id = job["id"].as_str().unwrap().to_string();
        wait_state(&f.router, &id, &["completed", "needs_review"]).await;
        let (_, _, result) = send(&f.router, get(&format!("/v1/jobs/{id}/result"))).await;
        let doc = &result["documents"][0];
        assert!(
            !sync["pages"][0]["lines"].as_array().unwrap().is_empty(),
            "{name}: no lines"
        );
        assert!(
            doc["pages"] == sync["pages"],
            "{name}: the job's pages differ from /v1/ocr's"
        );
        assert!(
            doc["extractions"] == sync["extractions"],
            "{name}: the job's extractions differ from /v1/ocr's"
        );
    }
}

/// `rec_space_min` is a per-request option like the others (it went through the one options
/// type): on `/v1/ocr` a lower threshold writes more of the spaces the recogniser's arg-max
/// missed, 1 writes none of them, 0 is refused; a job given it stores it and its pages come
/// out as the sync request's with the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rec_space_min_is_a_per_request_option_on_every_route() {
    use base64::Engine as _;
    let f = real_fixture();
    // A form page: many short fields, some of whose spaces the arg-max misses.
    let page = std::fs::read(common::eval_dir().join("dev/funsd_82573104.png")).unwrap();
    let mut spaces = Vec::new();
    let mut pages = Vec::new();
    for q in ["", "rec_space_min=1", "rec_space_min=0.01"] {
        let (s, _, v) = send(
            &f.router,
            post(&format!("/v1/ocr?{q}"), "image/png", None, page.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{q}: {v}");
        spaces.push(v["text"].as_str().unwrap().matches(' ').count());
        pages.push(v["pages"].clone());
    }
    let (default, off, low) = (spaces[0], spaces[1], spaces[2]);
    assert!(
        off <= default && default <= low && off < low,
        "spaces: default {default}, rec_space_min=1 {off}, rec_space_min=0.01 {low}"
    );
    let (s, _, p) = send(
        &f.router,
        post("/v1/ocr?rec_space_min=0", "image/png", None, page.clone()),
    )
    .await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (422, Some("invalid_option"))
    );
    let body = serde_json::json!({
        "documents": [{"name": "form", "data": base64::engine::general_purpose::STANDARD.encode(&page)}],
        "rec_space_min": 0.01,
    });
    let (s, _, job) = send(
        &f.router,
        post(
            "/v1/jobs",
            "application/json",
            None,
            body.to_string().into_bytes(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    wait_state(&f.router, &id, &["completed"]).await;
    let (_, _, result) = send(&f.router, get(&format!("/v1/jobs/{id}/result"))).await;
    assert!(
        result["documents"][0]["pages"] == pages[2],
        "the job's pages differ from the sync answer with the same rec_space_min"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_answers_sync_when_fast_and_async_when_not_and_runs_once() {
    let f = fixture(Arc::new(FakeFactory::default()), fake_config(), None);
    let hybrid = |prefer: &str| {
        Request::post("/v1/ocr?output=text")
            .header(header::CONTENT_TYPE, "image/png")
            .header("prefer", prefer)
            .body(Body::from(png(2)))
            .unwrap()
    };
    // Done within the wait: the sync answer, with the job it ran as.
    let (s, h, body) = send(&f.router, hybrid("respond-async, wait=30")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, Value::String("#\n#".into()));
    assert_eq!(h[header::VARY], "Prefer");
    assert!(
        h[header::CONTENT_LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/v1/jobs/")
    );
    // wait=0: 202 and the job's Location; the same work finishes as the job, once.
    let before = f.scheduler.stats().pages_done;
    let (s, h, job) = send(&f.router, hybrid("respond-async, wait=0")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(h["preference-applied"], "respond-async");
    assert_eq!(h[header::VARY], "Prefer");
    let location = h[header::LOCATION].to_str().unwrap().to_string();
    let id = location.trim_start_matches("/v1/jobs/").to_string();
    wait_state(&f.router, &id, &["completed"]).await;
    let (_, _, text) = send(&f.router, get(&format!("{location}/result?format=text"))).await;
    assert_eq!(text, Value::String("#\n#".into()));
    assert_eq!(
        f.scheduler.stats().pages_done,
        before + 1,
        "the page ran exactly once"
    );
    // Without Prefer the endpoint stays synchronous and says the answer varies with Prefer.
    let (s, h, _) = send(&f.router, post("/v1/ocr", "image/png", None, png(1))).await;
    assert_eq!(
        (s, &h[header::VARY]),
        (
            StatusCode::OK,
            &"Prefer".parse::<axum::http::HeaderValue>().unwrap()
        )
    );
    assert!(h.get(header::CONTENT_LOCATION).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_private_targets_refused() {
    use hmac::Mac;
    use std::sync::Mutex;
    let secret = b"test-secret-0123456789".to_vec();
    // The receiver: verifies the signature independently, answers 500 twice, then 200.
    let seen: Arc<Mutex<Vec<(bool, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            let secret = secret.clone();
            move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                let secret = secret.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
                    mac.update(
                        format!("{}.{}.{}", h("webhook-id"), h("webhook-timestamp"), body)
                            .as_bytes(),
                    );
                    use base64::Engine as _;
                    let want = format!(
                        "v1,{}",
                        base64::engine::general_purpose::STANDARD
                            .encode(mac.finalize().into_bytes())
                    );
                    let valid = h("webhook-signature").split(' ').any(|s| s == want);
                    let mut seen = seen.lock().unwrap();
                    seen.push((valid, body));
                    if seen.len() <= 2 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut hooks = ocr_server::jobs::webhook::WebhookConfig::new(
        vec![secret.clone()],
        vec!["127.0.0.1".into()],
    );
    hooks.backoff_base = Duration::from_millis(20);
    hooks.backoff_cap = Duration::from_millis(100);
    let f = fixture_with(
        Arc::new(FakeFactory::default()),
        fake_config(),
        None,
        RunnerConfig {
            webhooks: hooks,
            ..RunnerConfig::default()
        },
    );
    let url = format!("http://127.0.0.1:{port}/hook");
    let (s, _, job) = send(
        &f.router,
        post(
            &format!("/v1/jobs?webhook_url={url}&tag=w"),
            "image/png",
            None,
            png(1),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    wait_state(&f.router, &id, &["completed"]).await;
    let mut job = Value::Null;
    for _ in 0..500 {
        let (_, j) = {
            let (a, _, c) = send(&f.router, get(&format!("/v1/jobs/{id}"))).await;
            (a, c)
        };
        if j["webhook_deliveries"][0]["state"] == "delivered" {
            job = j;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = &job["webhook_deliveries"][0];
    assert_eq!(
        (
            d["state"].as_str(),
            d["attempts"].as_u64(),
            d["last_status"].as_u64()
        ),
        (Some("delivered"), Some(3), Some(200)),
        "{job}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|(valid, _)| *valid),
        "every attempt carries a valid signature"
    );
    let event: Value = serde_json::from_str(&seen[2].1).unwrap();
    assert_eq!(
        (
            event["type"].as_str(),
            event["data"]["id"].as_str(),
            event["data"]["tag"].as_str()
        ),
        (Some("job.completed"), Some(id.as_str()), Some("w"))
    );

    // A private target that is not allowed is refused when the job is created.
    for target in [
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest",
        "http://[::1]:9/x",
    ] {
        let (s, _, p) = send(
            &f.router,
            post(
                &format!("/v1/jobs?webhook_url={target}"),
                "image/png",
                None,
                png(1),
            ),
        )
        .await;
        assert_eq!(
            (s.as_u16(), p["code"].as_str()),
            (422, Some("invalid_option")),
            "{target}: {p}"
        );
    }
}

fn gated(gate: &Gate) -> Arc<FakeFactory> {
    Arc::new(FakeFactory {
        gate: Some(gate.clone()),
        ..FakeFactory::default()
    })
}

async fn job_field(router: &Router, id: &str) -> Value {
    send(router, get(&format!("/v1/jobs/{id}"))).await.2
}

/// Scheduler overload is back-pressure for jobs: a sync flood fills the detection queue (429s
/// for sync callers), the job's pages wait without spending attempts, and every page completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_makes_job_pages_wait_never_fail() {
    let gate = Gate::new();
    let mut sc = fake_config();
    sc.det.policy.max_items = 1;
    sc.det.policy.capacity = 3;
    let f = fixture(gated(&gate), sc, Some(&gate));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let router = f.router.clone();
        flood.push(tokio::spawn(async move {
            send(&router, post("/v1/ocr", "image/png", None, png(1)))
                .await
                .0
        }));
    }
    // The flood holds the queue (and some callers were refused).
    let mut refused = 0;
    let waiting = flood;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let docs: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("p{i}.png"), png(1))).collect();
    let refs: Vec<(&str, Vec<u8>)> = docs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (ctype, body) = multipart(&refs, &[]);
    let (s, _, job) = send(&f.router, post("/v1/jobs", &ctype, None, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // The runner meets a full queue and keeps waiting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, _, metrics) = send(&f.router, get("/metrics")).await;
    let waits = metrics
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("ocr_job_backpressure_waits_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .unwrap_or(0.0);
    assert!(waits >= 1.0, "the job pages never met the full queue");
    assert_eq!(job_field(&f.router, &id).await["pages_failed"], 0);
    gate.open();
    for t in waiting {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        refused += usize::from(status == 429);
    }
    assert!(refused >= 1, "the sync flood was never refused");
    let done = wait_state(&f.router, &id, &["completed"]).await;
    for p in done["documents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["pages"].as_array().unwrap())
    {
        assert_eq!(
            (p["state"].as_str(), p["attempts"].as_u64()),
            (Some("completed"), Some(1)),
            "{done}"
        );
    }
}

/// A hybrid request is claimed before the bulk backlog and runs in the interactive class: with
/// 60 bulk pages queued it answers 200 while most of them still wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_jumps_a_bulk_backlog() {
    let gate = Gate::new();
    let mut sc = fake_config();
    sc.det.policy.max_items = 1;
    let f = fixture(gated(&gate), sc, Some(&gate));
    let docs: Vec<(String, Vec<u8>)> = (0..60).map(|i| (format!("p{i}.png"), png(1))).collect();
    let refs: Vec<(&str, Vec<u8>)> = docs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (ctype, body) = multipart(&refs, &[]);
    let (s, _, bulk) = send(&f.router, post("/v1/jobs", &ctype, None, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let bulk_id = bulk["id"].as_str().unwrap().to_string();
    let router = f.router.clone();
    let hybrid = tokio::spawn(async move {
        let req = Request::post("/v1/ocr?output=text")
            .header(header::CONTENT_TYPE, "image/png")
            .header("prefer", "respond-async, wait=60")
            .body(Body::from(png(2)))
            .unwrap();
        send(&router, req).await
    });
    // Let the detector run one page at a time until the hybrid answers.
    let mut permits = 0;
    while !hybrid.is_finished() {
        tokio::time::sleep(Duration::from_millis(30)).await;
        gate.permits.send(()).unwrap();
        permits += 1;
        assert!(permits < 200, "the hybrid request never finished");
    }
    let (s, _, text) = hybrid.await.unwrap();
    assert_eq!((s, text), (StatusCode::OK, Value::String("#\n#".into())));
    let queued = job_field(&f.router, &bulk_id).await["documents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["pages"].as_array().unwrap().clone())
        .filter(|p| p["state"] == "queued")
        .count();
    assert!(
        queued >= 50,
        "the hybrid waited for the backlog: {queued} bulk pages left"
    );
    gate.open();
    wait_state(&f.router, &bulk_id, &["completed"]).await;
}

/// Pause and resume bulk work (all, or one tag), admission by backlog, and the job backlog in
/// /v1/queue and /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_admission_and_backlog_reports() {
    let f = fixture_full(
        Arc::new(FakeFactory::default()),
        fake_config(),
        None,
        RunnerConfig {
            metric_tags: vec!["alpha".into()],
            ..RunnerConfig::default()
        },
        ServiceConfig {
            max_queued_pages: 5,
            // Counted once in this test: a later count would show in the gauges.
            page_gauges_every: Duration::from_secs(3600),
            ..ServiceConfig::default()
        },
    );
    let json = |tag: Option<&str>| {
        let body = match tag {
            Some(t) => serde_json::json!({"tag": t}).to_string(),
            None => String::new(),
        };
        (body, tag.is_some())
    };
    let admin = |path: &str, (body, is_json): (String, bool)| {
        let mut r = Request::post(path);
        if is_json {
            r = r.header(header::CONTENT_TYPE, "application/json");
        }
        r.body(Body::from(body)).unwrap()
    };
    let (s, _, p) = send(&f.router, admin("/v1/admin/pause", json(Some("alpha")))).await;
    assert_eq!(
        (s, p["paused"].clone()),
        (StatusCode::OK, serde_json::json!(["alpha"]))
    );
    let submit = |tag: &str, pages: usize| {
        let docs: Vec<(String, Vec<u8>)> =
            (0..pages).map(|i| (format!("p{i}.png"), png(1))).collect();
        let refs: Vec<(&str, Vec<u8>)> =
            docs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        let (ctype, body) = multipart(&refs, &[("tag", tag)]);
        post("/v1/jobs", &ctype, None, body)
    };
    let (_, _, a) = send(&f.router, submit("alpha", 2)).await;
    let (_, _, b) = send(&f.router, submit("beta", 1)).await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    wait_state(&f.router, &b, &["completed"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        job_field(&f.router, &a).await["state"],
        "queued",
        "alpha is paused"
    );
    // Admission: 2 queued + 4 new > 5.
    let (s, h, p) = send(&f.router, submit("gamma", 4)).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("overloaded")),
        "{p}"
    );
    assert!(h.contains_key(header::RETRY_AFTER));
    let (_, _, q) = send(&f.router, get("/v1/queue")).await;
    assert_eq!(q["jobs"]["bulk"]["queued"], 2, "{q}");
    assert_eq!(q["jobs"]["paused"], serde_json::json!(["alpha"]));
    let (_, _, metrics) = send(&f.router, get("/metrics")).await;
    let metrics = metrics.as_str().unwrap().to_string();
    for name in [
        "ocr_job_backlog_pages{class=\"bulk\",state=\"queued\"} 2",
        "ocr_job_pages{state=\"queued\",tag=\"alpha\"} 2",
        "ocr_job_pages{state=\"completed\",tag=\"other\"} 1",
        "ocr_job_pages_completed_total{tag=\"other\"}",
        "ocr_job_claim_seconds",
        "ocr_job_queue_wait_seconds",
        "ocr_job_page_seconds",
        "ocr_jobs_created_total",
        "ocr_jobs_refused_total{reason=\"backlog\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The per-tag gauges scan the stored pages: however often they are scraped, they are
    // counted once per period (the backlog gauges are live).
    let (_, _, more) = send(&f.router, submit("alpha", 1)).await;
    for _ in 0..3 {
        send(&f.router, get("/v1/queue")).await;
        let (_, _, metrics) = send(&f.router, get("/metrics")).await;
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(
            metrics.contains("ocr_job_backlog_pages{class=\"bulk\",state=\"queued\"} 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains("ocr_job_pages{state=\"queued\",tag=\"alpha\"} 2"),
            "counted again within the period: {metrics}"
        );
    }
    let more = more["id"].as_str().unwrap().to_string();
    // Pausing everything holds other tags too; resuming everything leaves the tag paused.
    send(&f.router, admin("/v1/admin/pause", json(None))).await;
    let (_, _, c) = send(&f.router, submit("beta", 1)).await;
    let c = c["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job_field(&f.router, &c).await["state"], "queued");
    let (_, _, p) = send(&f.router, admin("/v1/admin/resume", json(None))).await;
    assert_eq!(p["paused"], serde_json::json!(["alpha"]));
    wait_state(&f.router, &c, &["completed"]).await;
    assert_eq!(job_field(&f.router, &a).await["state"], "queued");
    send(&f.router, admin("/v1/admin/resume", json(Some("alpha")))).await;
    wait_state(&f.router, &a, &["completed"]).await;
    wait_state(&f.router, &more, &["completed"]).await;
}

/// Deliveries run concurrently: a receiver that takes 5 s to answer does not hold up another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_receiver_does_not_delay_another() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let slow_answered = Arc::new(AtomicBool::new(false));
    let fast_saw_slow_answered = Arc::new(std::sync::Mutex::new(None::<bool>));
    let (flag, seen) = (slow_answered.clone(), fast_saw_slow_answered.clone());
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::post(move || {
                let flag = flag.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    flag.store(true, Ordering::SeqCst);
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/fast",
            axum::routing::post({
                let flag = slow_answered.clone();
                move || {
                    let (flag, seen) = (flag.clone(), seen.clone());
                    async move {
                        *seen.lock().unwrap() = Some(flag.load(Ordering::SeqCst));
                        StatusCode::OK
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hooks = ocr_server::jobs::webhook::WebhookConfig::new(
        vec![b"secret".to_vec()],
        vec!["127.0.0.1".into()],
    );
    let f = fixture_with(
        Arc::new(FakeFactory::default()),
        fake_config(),
        None,
        RunnerConfig {
            webhooks: hooks,
            ..RunnerConfig::default()
        },
    );
    let mut ids = Vec::new();
    for path in ["slow", "fast"] {
        let url = format!("http://127.0.0.1:{port}/{path}");
        let (s, _, job) = send(
            &f.router,
            post(
                &format!("/v1/jobs?webhook_url={url}"),
                "image/png",
                None,
                png(1),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        wait_state(&f.router, &id, &["completed"]).await;
        ids.push(id);
    }
    for _ in 0..400 {
        if fast_saw_slow_answered.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        *fast_saw_slow_answered.lock().unwrap(),
        Some(false),
        "the fast receiver was called only after the slow one answered"
    );
}

/// The OpenAPI document lists every route the router serves, with its methods, and nothing
/// else: the router's `.route(...)` table is read from the source and compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let f = fixture(Arc::new(FakeFactory::default()), fake_config(), None);
    let (_, _, doc) = send(&f.router, get("/openapi.json")).await;
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_ascii_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // rustfmt may break `.route(` before its path: read past the whitespace.
    let src = {
        let (mut out, mut rest) = (String::new(), include_str!("../src/api/mod.rs"));
        while let Some(i) = rest.find(".route(") {
            out.push_str(&rest[..i + 7]);
            rest = rest[i + 7..].trim_start();
        }
        out.push_str(rest);
        out
    };
    let mut routed: Vec<(String, String)> = Vec::new();
    for chunk in src.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').unwrap();
        let handlers = &rest[..rest.find("))").unwrap_or(rest.len())];
        for (method, marker) in [
            ("GET", "get("),
            ("POST", "post("),
            ("DELETE", "delete("),
            ("PUT", "put("),
            ("PATCH", "patch("),
        ] {
            if handlers.contains(marker) {
                routed.push((method.to_string(), path.to_string()));
            }
        }
    }
    documented.sort();
    routed.sort();
    assert!(
        routed.len() >= 15,
        "the route table was not read: {routed:?}"
    );
    assert_eq!(documented, routed);
}

/// A document disk under its floor refuses new jobs with 507 and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507() {
    let f = fixture_full(
        Arc::new(FakeFactory::default()),
        fake_config(),
        None,
        RunnerConfig::default(),
        ServiceConfig {
            min_free_disk_bytes: u64::MAX,
            ..ServiceConfig::default()
        },
    );
    let (s, h, p) = send(&f.router, post("/v1/jobs", "image/png", None, png(1))).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (
            StatusCode::INSUFFICIENT_STORAGE,
            Some("insufficient_storage")
        ),
        "{p}"
    );
    assert!(h.contains_key(header::RETRY_AFTER));
    let (_, _, list) = send(&f.router, get("/v1/jobs")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    // Files, at any depth (the tenant's directory under uploads/ stays, empty).
    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { files(&p) } else { 1 })
                .sum()
        })
    }
    assert_eq!(
        files(&f._dir.0.join("documents")),
        0,
        "the streamed upload was deleted again"
    );
}

//! The HTTP API through the router (`oneshot`, no socket) over the real scheduler with fake
//! models: every content type, every error code and its problem body, 413/415/422/429/503/504,
//! the time-split headers, health, metrics series and the OpenAPI document.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt;
use image::{Rgb, RgbImage};
use ocr_server::api::{Api, ApiConfig};
use ocr_server::engine::fake::{FakeFactory, Gate};
use ocr_server::pipeline::decode::DecodeLimits;
use ocr_server::scheduler::{Scheduler, SchedulerConfig};
use serde_json::Value;
use tower::ServiceExt;

/// A white page with black bars (x0, y0, x1, y1); the fake models read each bar as `#`.
fn page(w: u32, h: u32, bars: &[(u32, u32, u32, u32)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for &(x0, y0, x1, y1) in bars {
        for y in y0..y1 {
            for x in x0..x1 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
    }
    img
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// Two bars, one above the other: the text is `#\n#`.
fn two_line_png() -> Vec<u8> {
    png(&page(320, 160, &[(20, 30, 300, 50), (20, 100, 200, 120)]))
}

fn sched_config() -> SchedulerConfig {
    let mut c = SchedulerConfig::for_model(ocr_server::engine::ModelKind::V6);
    // The synthetic pages are small; do not upscale them to 736.
    c.base.det_resize.limit_side_px = 32;
    c
}

struct Fixture {
    api: Api,
    router: Router,
    scheduler: Arc<Scheduler>,
}

fn fixture_with(factory: FakeFactory, sc: SchedulerConfig, ac: ApiConfig) -> Fixture {
    let gate = factory.gate.clone();
    let scheduler = Arc::new(Scheduler::start(sc, Arc::new(factory)).unwrap());
    if let Some(g) = gate {
        // Let the detector's warm-up run through the gate.
        g.permits.send(()).unwrap();
        g.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    scheduler.wait_ready(Duration::from_secs(30)).unwrap();
    let api = Api::new(scheduler.clone(), ac);
    Fixture {
        router: api.router(),
        api,
        scheduler,
    }
}

fn fixture() -> Fixture {
    fixture_with(FakeFactory::default(), sched_config(), ApiConfig::default())
}

fn post(uri: &str, ctype: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, ctype)
        .body(Body::from(body))
        .unwrap()
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// Asserts a problem+json body with this status and code; returns it.
fn problem(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    want: (u16, &str),
) -> Value {
    assert_eq!(status.as_u16(), want.0, "{}", String::from_utf8_lossy(body));
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{}",
        want.1
    );
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["code"], want.1);
    assert_eq!(v["status"], want.0);
    assert_eq!(v["type"], format!("/problems/{}", want.1));
    assert!(!v["title"].as_str().unwrap().is_empty());
    assert!(!v["detail"].as_str().unwrap().is_empty());
    v
}

#[tokio::test]
async fn the_three_body_kinds_give_the_same_result() {
    let f = fixture();
    let img = two_line_png();

    let (s, h, body) = send(&f.router, post("/v1/ocr", "image/png", img.clone())).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    let raw: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(raw["text"], "#\n#");
    assert_eq!(raw["model"], "v6");
    assert_eq!(raw["pages"][0]["width"], 320);
    assert_eq!(raw["pages"][0]["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        raw["pages"][0]["lines"][0]["box"].as_array().unwrap().len(),
        4
    );
    for name in [
        "x-queue-time",
        "x-detect-time",
        "x-classify-time",
        "x-recognize-time",
        "x-total-time",
    ] {
        let ms: f64 = h[name].to_str().unwrap().parse().unwrap();
        assert!(ms >= 0.0, "{name}");
    }
    let total: f64 = h["x-total-time"].to_str().unwrap().parse().unwrap();
    let detect: f64 = h["x-detect-time"].to_str().unwrap().parse().unwrap();
    assert!(total >= detect, "total {total} < detect {detect}");

    let b64 = base64::engine::general_purpose::STANDARD.encode(&img);
    let json =
        serde_json::to_vec(&serde_json::json!({"image": b64, "min_confidence": 0.1})).unwrap();
    let (s, _, body) = send(&f.router, post("/v1/ocr", "application/json", json)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let via_json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(via_json["pages"], raw["pages"]);

    let boundary = "XyZboundary";
    let mut mp = Vec::new();
    mp.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"output\"\r\n\r\ntext\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    mp.extend_from_slice(&img);
    mp.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (s, h, body) = send(
        &f.router,
        post(
            "/v1/ocr",
            &format!("multipart/form-data; boundary={boundary}"),
            mp,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(String::from_utf8(body).unwrap(), "#\n#");
}

#[tokio::test]
async fn options_apply_and_invalid_ones_are_422() {
    let f = fixture();
    let img = two_line_png();
    // Orientation runs through the classifier stage.
    let (s, _, body) = send(
        &f.router,
        post(
            "/v1/ocr?classify=true&output=text",
            "image/png",
            img.clone(),
        ),
    )
    .await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"#\n#".as_slice()));
    assert_eq!(f.scheduler.stats().cls_lines, 2);
    // A threshold above every line's confidence leaves no text.
    let (s, _, body) = send(
        &f.router,
        post(
            "/v1/ocr?min_confidence=1&output=text",
            "image/png",
            img.clone(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.len() <= 3, "{text:?}");

    for (query, why) in [
        ("model=v4", "another model"),
        ("det_limit_side=5", "side below 32"),
        ("min_confidence=2", "confidence above 1"),
        ("classify=banana", "not a bool"),
        ("output=xml", "unknown output"),
    ] {
        let (s, h, body) = send(
            &f.router,
            post(&format!("/v1/ocr?{query}"), "image/png", img.clone()),
        )
        .await;
        let v = problem(s, &h, &body, (422, "invalid_option"));
        assert!(!v["detail"].as_str().unwrap().is_empty(), "{why}");
    }
    let (s, h, body) = send(
        &f.router,
        Request::post("/v1/ocr")
            .header(header::CONTENT_TYPE, "image/png")
            .header("x-request-timeout", "soon")
            .body(Body::from(img))
            .unwrap(),
    )
    .await;
    problem(s, &h, &body, (422, "invalid_option"));
}

#[tokio::test]
async fn bad_input_gets_its_code() {
    let sc = sched_config();
    let ac = ApiConfig {
        max_body_bytes: 64 * 1024,
        decode: DecodeLimits {
            max_side_px: 2000,
            max_pixels: 1_000_000,
            max_pages: 2,
            pdf_dpi: 200.0,
            ..DecodeLimits::default()
        },
        ..ApiConfig::default()
    };
    let f = fixture_with(FakeFactory::default(), sc, ac);
    let img = two_line_png();
    // A PNG header claiming 3000 × 10 pixels (over the side limit), nothing else.
    let mut wide = png(&RgbImage::new(3000, 10));
    wide.truncate(33);
    let tiff3 = {
        let mut buf = Cursor::new(Vec::new());
        let mut enc = tiff::encoder::TiffEncoder::new(&mut buf).unwrap();
        for _ in 0..3 {
            enc.write_image::<tiff::encoder::colortype::RGB8>(4, 3, &[200u8; 36])
                .unwrap();
        }
        buf.into_inner()
    };
    let mut no_file = Vec::new();
    no_file.extend_from_slice(
        b"--b\r\nContent-Disposition: form-data; name=\"output\"\r\n\r\ntext\r\n--b--\r\n",
    );
    /// (case, content type, body, expected status and code)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, (u16, &'a str));
    let cases: Vec<Case> = vec![
        ("empty body", "image/png", vec![], (400, "empty_input")),
        (
            "text as png",
            "image/png",
            b"hello".to_vec(),
            (415, "unsupported_format"),
        ),
        (
            "truncated png",
            "image/png",
            img[..img.len() / 2].to_vec(),
            (422, "corrupt_image"),
        ),
        (
            "over the side limit",
            "image/png",
            wide,
            (422, "image_too_large"),
        ),
        (
            "too many pages",
            "image/tiff",
            tiff3,
            (422, "too_many_pages"),
        ),
        (
            "over the body limit",
            "image/png",
            vec![0u8; 70 * 1024],
            (413, "payload_too_large"),
        ),
        (
            "plain text",
            "text/plain",
            img.clone(),
            (415, "unsupported_media_type"),
        ),
        (
            "no content type",
            "",
            img.clone(),
            (415, "unsupported_media_type"),
        ),
        (
            "bad json",
            "application/json",
            b"{".to_vec(),
            (400, "bad_request"),
        ),
        (
            "bad base64",
            "application/json",
            br#"{"image":"***"}"#.to_vec(),
            (400, "bad_request"),
        ),
        (
            "multipart without file",
            "multipart/form-data; boundary=b",
            no_file,
            (400, "bad_request"),
        ),
    ];
    for (name, ctype, body, want) in cases {
        let mut req = Request::post("/v1/ocr");
        if !ctype.is_empty() {
            req = req.header(header::CONTENT_TYPE, ctype);
        }
        let (s, h, b) = send(&f.router, req.body(Body::from(body)).unwrap()).await;
        assert_eq!(
            s.as_u16(),
            want.0,
            "{name}: {}",
            String::from_utf8_lossy(&b)
        );
        problem(s, &h, &b, want);
    }
    // Chunked (no Content-Length) bodies are cut at the limit too.
    let chunks = futures_util::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 8 * 1024]))),
    );
    let req = Request::post("/v1/ocr")
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from_stream(chunks))
        .unwrap();
    let (s, h, b) = send(&f.router, req).await;
    problem(s, &h, &b, (413, "payload_too_large"));
    // Unknown routes and methods are problems too.
    let (s, h, b) = send(
        &f.router,
        Request::get("/v2/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    problem(s, &h, &b, (404, "not_found"));
    let (s, h, b) = send(
        &f.router,
        Request::get("/v1/ocr").body(Body::empty()).unwrap(),
    )
    .await;
    problem(s, &h, &b, (405, "method_not_allowed"));
    // And the server still works.
    let (s, _, _) = send(&f.router, post("/v1/ocr", "image/png", img)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn full_queue_is_429_with_retry_after_and_deadline_is_504() {
    let gate = Gate::new();
    let mut sc = sched_config();
    sc.det.policy.capacity = 1;
    sc.det.policy.max_items = 1;
    let factory = FakeFactory {
        gate: Some(gate.clone()),
        ..FakeFactory::default()
    };
    let f = fixture_with(factory, sc, ApiConfig::default());
    let img = two_line_png();
    let with_timeout = |ms: &str| {
        Request::post("/v1/ocr")
            .header(header::CONTENT_TYPE, "image/png")
            .header("x-request-timeout", ms)
            .body(Body::from(two_line_png()))
            .unwrap()
    };

    // Request A holds the only detector in its model run, and gives up after 300 ms: its work
    // started, so that is 504.
    let a = tokio::spawn({
        let r = f.router.clone();
        let req = with_timeout("300");
        async move { send(&r, req).await }
    });
    tokio::task::spawn_blocking({
        let g = gate.clone();
        move || g.entered.recv_timeout(Duration::from_secs(30)).unwrap()
    })
    .await
    .unwrap();
    // Request B fills the queue (capacity 1) and gives up after 300 ms before any model saw
    // it: the server was too busy to start it, 429 with Retry-After (issue 26), not 504.
    let b = tokio::spawn({
        let r = f.router.clone();
        let req = with_timeout("300");
        async move { send(&r, req).await }
    });
    // Wait until B is queued, then C finds the queue full: 429 with Retry-After.
    let mut queued = false;
    for _ in 0..300 {
        if f.scheduler.queue_report().interactive.depth == 1 {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(queued, "B never reached the queue");
    let (s, h, body) = send(&f.router, post("/v1/ocr", "image/png", img.clone())).await;
    let v = problem(s, &h, &body, (429, "overloaded"));
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(v["retry_after_s"], retry);

    let (sa, ha, body_a) = a.await.unwrap();
    let (sb, hb, body_b) = b.await.unwrap();
    // Release the detector before asserting, so a failure does not leave it blocked.
    gate.open();
    problem(sa, &ha, &body_a, (504, "deadline_exceeded"));
    let v = problem(sb, &hb, &body_b, (429, "overloaded"));
    assert!(v["retry_after_s"].as_u64().unwrap() >= 1, "{v}");
    // B's page is dropped before any model sees it (gone or expired, whichever the worker sees
    // first), and so are A's two lines, whose caller has gone, before recognition.
    let mut dropped = 0;
    for _ in 0..300 {
        let st = f.scheduler.stats();
        dropped = st.dropped_expired + st.dropped_gone;
        if dropped >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped, 3);
    assert_eq!(
        f.scheduler.stats().det_pages,
        1,
        "A was detected; B was dropped"
    );
}

#[tokio::test]
async fn health_metrics_queue_openapi_and_shutdown() {
    let f = fixture();
    let (s, _, body) = send(
        &f.router,
        Request::get("/health/live").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "live"
    );
    let (s, _, body) = send(
        &f.router,
        Request::get("/health/ready").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (s, _, _) = send(&f.router, post("/v1/ocr", "image/png", two_line_png())).await;
    assert_eq!(s, StatusCode::OK);

    let (s, _, body) = send(
        &f.router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    for series in [
        "ocr_queue_depth{",
        "ocr_queue_oldest_age_seconds{",
        "ocr_batch_size_bucket{",
        "ocr_batch_fill_ratio_bucket{",
        "ocr_batch_requests_bucket{",
        "ocr_rec_padding_waste_ratio_bucket",
        "ocr_queue_wait_seconds_bucket{",
        "ocr_model_seconds_bucket{",
        "ocr_http_requests_total{",
        "ocr_dropped_items_total{",
        "ocr_pages_admitted_total{",
    ] {
        assert!(text.contains(series), "metrics lack {series}:\n{text}");
    }
    assert!(text.contains(r#"route="/v1/ocr""#) && text.contains(r#"status="200""#));

    let (s, _, body) = send(
        &f.router,
        Request::get("/v1/queue").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let q: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(q["interactive"]["depth"], 0);
    assert!(q["stats"]["rec_lines"].as_u64().unwrap() >= 2);
    assert_eq!(q["stages"].as_array().unwrap().len(), 3);

    let (s, _, body) = send(
        &f.router,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/ocr",
        "/v1/queue",
        "/health/live",
        "/health/ready",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["schemas"]["OcrResponse"].is_object());

    f.api.begin_shutdown();
    let (s, h, body) = send(
        &f.router,
        Request::get("/health/ready").body(Body::empty()).unwrap(),
    )
    .await;
    problem(s, &h, &body, (503, "shutting_down"));
    let (s, h, body) = send(&f.router, post("/v1/ocr", "image/png", two_line_png())).await;
    problem(s, &h, &body, (503, "shutting_down"));
}

#[tokio::test]
async fn model_failure_is_500_and_the_server_stays_up() {
    let f = fixture_with(
        FakeFactory {
            failing_rec: true,
            ..FakeFactory::default()
        },
        sched_config(),
        ApiConfig::default(),
    );
    for _ in 0..2 {
        let (s, h, body) = send(&f.router, post("/v1/ocr", "image/png", two_line_png())).await;
        let v = problem(s, &h, &body, (500, "runtime_error"));
        // The runtime's own message stays in the log; the body names the request id.
        assert!(
            !v["detail"].as_str().unwrap().contains("injected failure"),
            "{v}"
        );
        let id = v["request_id"].as_str().unwrap();
        assert_eq!(h["x-request-id"], id);
    }
    // A page without lines never reaches the recogniser and still succeeds.
    let blank = png(&page(64, 64, &[]));
    let (s, _, body) = send(&f.router, post("/v1/ocr?output=text", "image/png", blank)).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 0));
    assert!(f.scheduler.stats().failed_batches >= 2);
}

#[tokio::test]
async fn a_model_that_cannot_load_means_not_ready_and_failed_requests() {
    let factory = FakeFactory {
        det_load_error: true,
        ..FakeFactory::default()
    };
    let scheduler = Arc::new(Scheduler::start(sched_config(), Arc::new(factory)).unwrap());
    let err = scheduler.wait_ready(Duration::from_secs(30)).unwrap_err();
    assert!(err.to_string().contains("fake/det.onnx"), "{err}");
    let router = Api::new(scheduler.clone(), ApiConfig::default()).router();
    let (s, h, body) = send(
        &router,
        Request::get("/health/ready").body(Body::empty()).unwrap(),
    )
    .await;
    problem(s, &h, &body, (503, "not_ready"));
    // Admitted work fails instead of waiting forever.
    let (s, h, body) = send(&router, post("/v1/ocr", "image/png", two_line_png())).await;
    problem(s, &h, &body, (500, "runtime_error"));
}

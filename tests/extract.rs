//! Field extraction end to end with the real PP-OCRv6 models, through the router:
//! - MRZ: synthetic TD3 passports and TD1 ID cards (random names, numbers and dates with correct
//!   check digits from the `mrz` crate's emitter; DejaVu Sans Mono; some rotated a few degrees,
//!   some with noise) come back parsed with every check verified; one wrong check digit comes back
//!   `valid: false` naming the field;
//! - receipts: the 48 SROIE receipts of `../shared/eval` (36 in `receipts/`, 12 in `dev/`) go
//!   through `/v1/ocr?extract=receipt`, and `score_keys.py` scores the fields the SROIE way.
//!
//! Needs `scripts/setup.sh`; fails, never skips, without it.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use image::{GrayImage, Luma};
use ocr_server::api::{Api, ApiConfig};
use ocr_server::engine::ModelKind;
use ocr_server::engine::ort::resolve_ort_lib;
use ocr_server::engine::runtime::{EngineConfig, OrtFactory, SessionConfig, resolve_models_dir};
use ocr_server::scheduler::{Scheduler, SchedulerConfig};
use tower::ServiceExt;

fn scheduler() -> Arc<Scheduler> {
    let engine = EngineConfig {
        kind: ModelKind::V6,
        models_dir: resolve_models_dir(None),
        ort_lib: resolve_ort_lib(None),
        session: SessionConfig::cpu(1),
        with_classifier: false,
    };
    let factory = Arc::new(OrtFactory::new(engine).unwrap());
    let cfg = SchedulerConfig::for_model(ModelKind::V6);
    let scheduler = Arc::new(Scheduler::start(cfg, factory).unwrap());
    scheduler.wait_ready(Duration::from_secs(120)).unwrap();
    scheduler
}

fn api_config() -> ApiConfig {
    ApiConfig {
        default_timeout: Duration::from_secs(300),
        ..ApiConfig::default()
    }
}

fn router() -> axum::Router {
    Api::new(scheduler(), api_config()).router()
}

/// The two default profiles of `serve`: `accurate` (PP-OCRv6 small, the default rules) and
/// `fast` (PP-OCRv4 mobile, detection at most 640 px), over one core gate.
fn two_profiles() -> Arc<ocr_server::scheduler::Profiles> {
    use ocr_server::pipeline::preprocess::LimitType;
    use ocr_server::scheduler::{ProfileSpec, Profiles};
    let spec = |name: &str, kind: ModelKind| {
        let engine = EngineConfig {
            kind,
            models_dir: resolve_models_dir(None),
            ort_lib: resolve_ort_lib(None),
            session: SessionConfig::cpu(1),
            with_classifier: false,
        };
        let mut cfg = SchedulerConfig::for_model(kind);
        if name == "fast" {
            cfg.base.det_resize.limit_type = LimitType::Max;
            cfg.base.det_resize.limit_side_px = 640;
        }
        ProfileSpec {
            name: name.into(),
            cfg,
            factory: Arc::new(OrtFactory::new(engine).unwrap()),
        }
    };
    let core_slots = SchedulerConfig::for_model(ModelKind::V6).core_slots;
    let p = Profiles::start(
        vec![spec("accurate", ModelKind::V6), spec("fast", ModelKind::V4)],
        core_slots,
    )
    .unwrap();
    p.wait_ready(Duration::from_secs(180)).unwrap();
    Arc::new(p)
}

/// The API with jobs: a SQLite store and file documents in a fresh folder, the job runner.
fn jobs_router(dir: &std::path::Path) -> axum::Router {
    let profiles = Arc::new(ocr_server::scheduler::Profiles::single(scheduler()));
    jobs_router_over(dir, profiles)
}

fn jobs_router_over(
    dir: &std::path::Path,
    profiles: Arc<ocr_server::scheduler::Profiles>,
) -> axum::Router {
    use ocr_server::jobs::documents::DocumentStore;
    use ocr_server::jobs::runner::{Runner, RunnerConfig};
    use ocr_server::jobs::service::{JobService, ServiceConfig};
    use ocr_server::jobs::sqlite::SqliteStore;
    std::fs::create_dir_all(dir).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.join("jobs.db")).unwrap());
    let documents = Arc::new(
        DocumentStore::open(&format!("file://{}/documents", dir.display()), 64 << 20).unwrap(),
    );
    let runner = Runner::with_profiles(
        store,
        profiles.clone(),
        documents,
        RunnerConfig {
            poll: Duration::from_millis(50),
            ..RunnerConfig::default()
        },
    );
    runner.start();
    let jobs = JobService::new(runner, ServiceConfig::default());
    Api::with_profiles(
        profiles,
        api_config(),
        Some(jobs),
        ocr_server::auth::Auth::off(),
    )
    .router()
}

async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

async fn ocr(router: &axum::Router, query: &str, ctype: &str, bytes: Vec<u8>) -> serde_json::Value {
    let resp = router
        .clone()
        .oneshot(
            Request::post(format!("/v1/ocr?{query}"))
                .header(header::CONTENT_TYPE, ctype)
                .body(Body::from(bytes))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A small deterministic generator (xorshift), so a failure names a reproducible document.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| (b'A' + self.below(26) as u8) as char)
            .collect()
    }
    /// `min` to `min + 5` letters.
    fn name(&mut self, min: usize) -> String {
        let n = min + self.below(6) as usize;
        self.letters(n)
    }
    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
        (0..n)
            .map(|_| A[self.below(A.len() as u64) as usize] as char)
            .collect()
    }
    fn date(&mut self, y0: u32, span: u32) -> mrz::MrzDate {
        let y = y0 + self.below(span as u64) as u32;
        format!("{y:04}-{:02}-{:02}", 1 + self.below(12), 1 + self.below(28))
            .parse()
            .unwrap()
    }
    fn sex(&mut self) -> mrz::Sex {
        if self.below(2) == 0 {
            mrz::Sex::Female
        } else {
            mrz::Sex::Male
        }
    }
}

/// Draws `lines` in DejaVu Sans Mono, `px` high, on a white page with a margin.
fn render(lines: &[String], px: f32) -> GrayImage {
    let font = FontRef::try_from_slice(dejavu::sans_mono::regular()).unwrap();
    let scaled = font.as_scaled(PxScale::from(px));
    let advance = scaled.h_advance(font.glyph_id('M'));
    let cols = lines.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f32;
    let (w, lh) = ((cols * advance + 4.0 * px) as u32, px * 1.6);
    let h = (lines.len() as f32 * lh + 3.0 * px) as u32;
    let mut img = GrayImage::from_pixel(w, h, Luma([255]));
    for (row, text) in lines.iter().enumerate() {
        let baseline = 1.5 * px + row as f32 * lh + scaled.ascent();
        for (col, c) in text.chars().enumerate() {
            let glyph = font.glyph_id(c).with_scale_and_position(
                PxScale::from(px),
                ab_glyph::point(2.0 * px + col as f32 * advance, baseline),
            );
            if let Some(o) = font.outline_glyph(glyph) {
                let b = o.px_bounds();
                o.draw(|x, y, cov| {
                    let (x, y) = (x as i64 + b.min.x as i64, y as i64 + b.min.y as i64);
                    if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                        let p = img.get_pixel_mut(x as u32, y as u32);
                        p.0[0] = p.0[0].min((255.0 * (1.0 - cov)) as u8);
                    }
                });
            }
        }
    }
    img
}

/// Rotated by `deg` about the centre (bilinear, white outside).
fn rotate(img: &GrayImage, deg: f32) -> GrayImage {
    let (w, h) = img.dimensions();
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let (sx, sy) = (c * dx + s * dy + cx, -s * dx + c * dy + cy);
        if sx < 0.0 || sy < 0.0 || sx >= (w - 1) as f32 || sy >= (h - 1) as f32 {
            return Luma([255]);
        }
        let (x0, y0) = (sx as u32, sy as u32);
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let p = |x, y| img.get_pixel(x, y).0[0] as f32;
        let v = p(x0, y0) * (1.0 - fx) * (1.0 - fy)
            + p(x0 + 1, y0) * fx * (1.0 - fy)
            + p(x0, y0 + 1) * (1.0 - fx) * fy
            + p(x0 + 1, y0 + 1) * fx * fy;
        Luma([v as u8])
    })
}

/// Gaussian-ish noise of about ±`amp` grey levels.
fn noisy(mut img: GrayImage, rng: &mut Rng, amp: i32) -> GrayImage {
    for p in img.pixels_mut() {
        let n: i32 = (0..3)
            .map(|_| rng.below(2 * amp as u64 + 1) as i32 - amp)
            .sum::<i32>()
            / 3;
        p.0[0] = (p.0[0] as i32 + n).clamp(0, 255) as u8;
    }
    img
}

fn png(img: &GrayImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Synthetic {
    name: String,
    format: &'static str,
    zone: Vec<String>,
    document_number: String,
    surname: String,
    valid: bool,
    /// The check the corruption breaks.
    broken: Option<&'static str>,
}

fn td3(rng: &mut Rng) -> Synthetic {
    let (surname, given) = (rng.name(4), rng.name(3));
    let number = rng.alnum(9);
    let fields = mrz::Td3Fields {
        document_code: "P".into(),
        issuing_country: "UTO".into(),
        surname: surname.clone(),
        given_names: given.clone(),
        document_number: number.clone(),
        nationality: "UTO".into(),
        date_of_birth: rng.date(1950, 50),
        sex: rng.sex(),
        date_of_expiry: rng.date(2027, 10),
        personal_number: Some(rng.alnum(8)),
    };
    let zone: Vec<String> = mrz::format_td3(&fields)
        .lines()
        .map(str::to_string)
        .collect();
    Synthetic {
        name: format!("TD3 {surname}"),
        format: "TD3",
        zone,
        document_number: number,
        surname,
        valid: true,
        broken: None,
    }
}

fn td1(rng: &mut Rng) -> Synthetic {
    let (surname, given) = (rng.name(4), rng.name(3));
    let number = rng.alnum(9);
    let fields = mrz::Td1Fields {
        document_code: "ID".into(),
        issuing_country: "UTO".into(),
        document_number: number.clone(),
        optional_data_1: None,
        date_of_birth: rng.date(1950, 50),
        sex: rng.sex(),
        date_of_expiry: rng.date(2027, 10),
        nationality: "UTO".into(),
        optional_data_2: None,
        surname: surname.clone(),
        given_names: given.clone(),
    };
    let zone: Vec<String> = mrz::format_td1(&fields)
        .lines()
        .map(str::to_string)
        .collect();
    Synthetic {
        name: format!("TD1 {surname}"),
        format: "TD1",
        zone,
        document_number: number,
        surname,
        valid: true,
        broken: None,
    }
}

/// The same document with its date-of-birth check digit changed.
fn corrupted(mut s: Synthetic) -> Synthetic {
    let (line, at) = if s.format == "TD1" { (1, 6) } else { (1, 19) };
    let mut chars: Vec<char> = s.zone[line].chars().collect();
    let d = chars[at].to_digit(10).unwrap();
    chars[at] = char::from_digit((d + 3) % 10, 10).unwrap();
    s.zone[line] = chars.into_iter().collect();
    s.valid = false;
    s.broken = Some("date_of_birth");
    s.name += " (date of birth check digit wrong)";
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_passports_and_id_cards_parse_with_every_check_and_a_wrong_digit_is_flagged() {
    let router = router();
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut docs = Vec::new();
    for _ in 0..3 {
        docs.push(td3(&mut rng));
        docs.push(td1(&mut rng));
    }
    docs.push(corrupted(td3(&mut rng)));
    docs.push(corrupted(td1(&mut rng)));
    for (i, d) in docs.iter().enumerate() {
        // Every third document is turned a few degrees, every other one gets noise.
        let turn = match (i % 3, i % 2) {
            (1, 0) => 2.5,
            (1, _) => -2.0,
            _ => 0.0,
        };
        let bytes = document_png(d, &mut rng, turn, i % 2 == 1);
        let json = ocr(&router, "extract=mrz", "image/png", bytes).await;
        let text = json["text"].as_str().unwrap_or_default();
        let ex = json["extractions"].as_array().cloned().unwrap_or_default();
        assert_eq!(ex.len(), 1, "{}: no MRZ found; OCR read:\n{text}", d.name);
        let e = &ex[0];
        assert_eq!(e["type"], "mrz", "{}", d.name);
        assert_eq!(e["fields"]["format"]["value"], d.format, "{}", d.name);
        assert_eq!(
            e["valid"], d.valid,
            "{}: validity; checks {} OCR read:\n{text}",
            d.name, e["checks"]
        );
        let checks = e["checks"].as_object().unwrap();
        let want_checks = if d.format == "TD3" { 5 } else { 4 };
        assert_eq!(checks.len(), want_checks, "{}: {checks:?}", d.name);
        match d.broken {
            None => {
                assert!(checks.values().all(|v| v == true), "{}: {checks:?}", d.name);
                assert_eq!(
                    e["fields"]["document_number"]["value"], d.document_number,
                    "{}",
                    d.name
                );
                assert_eq!(e["fields"]["surname"]["value"], d.surname, "{}", d.name);
            }
            Some(field) => {
                assert_eq!(checks[field], false, "{}: {checks:?}", d.name);
                assert_eq!(e["fields"][field]["valid"], false, "{}", d.name);
                let problems = e["problems"].as_array().unwrap();
                assert!(
                    problems
                        .iter()
                        .any(|p| p.as_str().unwrap().starts_with(field)),
                    "{}: problems {problems:?}",
                    d.name
                );
            }
        }
        assert!(e["fields"]["surname"]["box"].is_array(), "{}", d.name);
    }
}

/// One synthetic document as a page image: a title, a name line and the zone.
fn document_png(d: &Synthetic, rng: &mut Rng, turn: f32, noise: bool) -> Vec<u8> {
    let mut lines = vec![
        if d.format == "TD3" {
            "PASSPORT"
        } else {
            "IDENTITY CARD"
        }
        .to_string(),
        format!("Surname / Nom: {}", d.surname),
        String::new(),
    ];
    lines.extend(d.zone.iter().cloned());
    let mut img = render(&lines, 26.0);
    if turn != 0.0 {
        img = rotate(&img, turn);
    }
    if noise {
        img = noisy(img, rng, 40);
    }
    png(&img)
}

/// Validation drives review: a job extracting MRZ fields from a good passport and one whose
/// date-of-birth check digit is wrong ends in `needs_review` with no confidence threshold at
/// all; the page's event names the field; the result carries both documents' extractions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_digit_sends_the_job_to_review_naming_the_field() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extract-jobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let router = jobs_router(&dir);
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let good = td3(&mut rng);
    let bad = corrupted(td3(&mut rng));
    let files = [
        ("good.png", document_png(&good, &mut rng, 0.0, false)),
        ("bad.png", document_png(&bad, &mut rng, 0.0, false)),
    ];
    let b = "extractBoundary";
    let mut body =
        format!("--{b}\r\nContent-Disposition: form-data; name=\"extract\"\r\n\r\nmrz\r\n")
            .into_bytes();
    for (name, bytes) in &files {
        body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    let (s, job) = call(
        &router,
        Request::post("/v1/jobs")
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={b}"),
            )
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let mut state = String::new();
    for _ in 0..3000 {
        let (_, j) = call(
            &router,
            Request::get(format!("/v1/jobs/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        state = j["state"].as_str().unwrap_or_default().to_string();
        if ["needs_review", "completed", "failed", "partially_completed"].contains(&state.as_str())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "needs_review");
    let (_, events) = call(
        &router,
        Request::get(format!("/v1/jobs/{id}/events"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let reviews: Vec<(u64, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "page_completed")
        .filter_map(|e| {
            Some((
                e["detail"]["document"].as_u64()?,
                e["detail"]["review"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(
        reviews.len(),
        1,
        "only the bad document is flagged: {events}"
    );
    assert_eq!(reviews[0].0, 1, "the second document: {events}");
    assert!(
        reviews[0].1.contains("date_of_birth"),
        "the reason names the field: {}",
        reviews[0].1
    );
    let (_, result) = call(
        &router,
        Request::get(format!("/v1/jobs/{id}/result"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let docs = result["documents"].as_array().unwrap();
    assert_eq!(docs[0]["extractions"][0]["valid"], true, "{result}");
    assert_eq!(
        docs[0]["extractions"][0]["fields"]["surname"]["value"], good.surname,
        "{result}"
    );
    assert_eq!(docs[1]["extractions"][0]["valid"], false, "{result}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Model profiles and the two-pass hybrid: both profiles are listed and served; an unknown one
/// is 422; `profile=fast&followup=accurate` answers with the fast pass at once, links a job
/// that runs `accurate` on the same upload (stored once), whose pages are exactly what
/// `profile=accurate` answers, and whose `changes` are the fields that differ between the two
/// passes' extractions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pass_hybrid_answers_fast_and_follows_up_with_accurate_on_one_stored_upload() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extract-two-pass-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let router = jobs_router_over(&dir, two_profiles());
    let get = |uri: String| Request::get(uri).body(Body::empty()).unwrap();
    let (s, health) = call(&router, get("/health/ready".into())).await;
    assert_eq!(s, StatusCode::OK, "{health}");
    let names: Vec<&str> = health["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["accurate", "fast"]);
    assert_eq!(health["profiles"][1]["model"], "v4");

    let receipt = std::fs::read(common::eval_dir().join("dev").join("sroie_041.jpg")).unwrap();
    let post = |q: &str, bytes: Vec<u8>| {
        Request::post(format!("/v1/ocr?{q}"))
            .header(header::CONTENT_TYPE, "image/jpeg")
            .body(Body::from(bytes))
            .unwrap()
    };
    let (s, p) = call(&router, post("profile=nope", receipt.clone())).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (422, Some("invalid_option")),
        "{p}"
    );
    let (s, p) = call(&router, post("tag=x", receipt.clone())).await;
    assert_eq!(s.as_u16(), 422, "job options without followup: {p}");
    let (s, p) = call(
        &router,
        post("followup=accurate&review_threshold=2", receipt.clone()),
    )
    .await;
    assert_eq!(
        s.as_u16(),
        422,
        "a bad job option is refused before the first pass: {p}"
    );
    let mut req = post("followup=accurate", receipt.clone());
    req.headers_mut()
        .insert("prefer", "respond-async, wait=0".parse().unwrap());
    let (s, p) = call(&router, req).await;
    assert_eq!(s.as_u16(), 422, "followup answers synchronously: {p}");

    let (s, accurate) = call(
        &router,
        post("profile=accurate&extract=receipt", receipt.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{accurate}");
    assert_eq!(accurate["model"], "v6");
    let resp = router
        .clone()
        .oneshot(post(
            "profile=fast&followup=accurate&extract=receipt&tag=two-pass",
            receipt.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let link = resp.headers()[header::LINK].to_str().unwrap().to_string();
    let fast: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(fast["model"], "v4", "the first pass is the fast profile's");
    let id = fast["followup"]["job"].as_str().unwrap().to_string();
    assert_eq!(fast["followup"]["location"], format!("/v1/jobs/{id}"));
    assert_eq!(link, format!("</v1/jobs/{id}>; rel=\"followup\""));
    let mut job = serde_json::Value::Null;
    for _ in 0..3000 {
        job = call(&router, get(format!("/v1/jobs/{id}"))).await.1;
        if ["completed", "needs_review", "failed"].contains(&job["state"].as_str().unwrap_or("")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ["completed", "needs_review"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    assert_eq!(job["tag"], "two-pass");
    let (_, result) = call(&router, get(format!("/v1/jobs/{id}/result"))).await;
    // The job ran the accurate profile: its page is what profile=accurate answers.
    assert_eq!(
        result["documents"][0]["pages"][0]["lines"], accurate["pages"][0]["lines"],
        "the follow-up job's page differs from the accurate profile's answer"
    );
    // Its changes are the fields that differ between the two passes.
    let fields = |v: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
        v["fields"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, f)| {
                        (
                            k.clone(),
                            f["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (
        fields(&fast["extractions"][0]),
        fields(&result["documents"][0]["extractions"][0]),
    );
    let mut want: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    want.sort();
    want.dedup();
    let mut got: Vec<String> = result["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {result}"))
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, want, "{}", result["changes"]);
    // One stored copy of the upload: the job's document, and nothing else.
    let stored: Vec<_> = walk(&dir.join("documents"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), receipt);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn receipts() -> Vec<PathBuf> {
    let eval = common::eval_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(eval.join("receipts"))
        .unwrap()
        .chain(std::fs::read_dir(eval.join("dev")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("sroie_") && n.ends_with(".jpg")
        })
        .collect();
    files.sort();
    files
}

/// The lowest overall field F1 this rule set must keep on the 48 receipts (naive rules: 0.495).
/// The target is 0.90 and is not reached: the rules measured 0.832 here when last
/// changed (company 0.771, date 0.968, address 0.611, total 0.979; 0.822 before the decoder kept
/// the spaces the blank outvoted; NOTES.md), and most misses left are the recogniser's (a letter
/// misread, a space the model gave no weight), which SROIE's exact match counts whole. The bar is
/// that figure less a margin for OCR noise between CPUs.
const RECEIPT_F1_BAR: f64 = 0.80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sroie_receipts_fields_score_above_the_bar() {
    let files = receipts();
    assert_eq!(
        files.len(),
        48,
        "the 36 + 12 SROIE receipts of ../shared/eval"
    );
    let router = router();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("extract");
    std::fs::create_dir_all(&out).unwrap();
    let mut preds = String::new();
    for f in &files {
        let json = ocr(
            &router,
            "extract=receipt",
            "image/jpeg",
            std::fs::read(f).unwrap(),
        )
        .await;
        let fields = &json["extractions"][0]["fields"];
        let v = |k: &str| fields[k]["value"].clone();
        let line = serde_json::json!({
            "file": f.file_name().unwrap().to_string_lossy(),
            "fields": {"company": v("company"), "date": v("date"), "address": v("address"),
                       "total": v("total")},
        });
        preds.push_str(&line.to_string());
        preds.push('\n');
    }
    let pred_path = out.join("receipts_pred.jsonl");
    std::fs::write(&pred_path, preds).unwrap();
    let truth = common::eval_dir().join("receipts").join("keys.jsonl");
    let scores_path = out.join("receipts_scores.json");
    let run = std::process::Command::new(common::score_python())
        .arg(common::eval_dir().join("score_keys.py"))
        .args([
            "--truth",
            truth.to_str().unwrap(),
            "--pred",
            pred_path.to_str().unwrap(),
        ])
        .args(["--out", scores_path.to_str().unwrap(), "--show-misses"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout);
    eprintln!("{printed}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "score_keys.py failed");
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&scores_path).unwrap()).unwrap();
    let f1 = scores["overall"]["f1"]
        .as_f64()
        .or_else(|| scores["f1"].as_f64())
        .unwrap_or_else(|| panic!("no overall F1 in {scores}"));
    assert!(
        f1 >= RECEIPT_F1_BAR,
        "receipt field F1 {f1:.3} under the bar {RECEIPT_F1_BAR} ({scores})"
    );
}

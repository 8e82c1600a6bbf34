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
use ocr_server::engine::ort::{
    EngineConfig, OrtFactory, SessionConfig, resolve_models_dir, resolve_ort_lib,
};
use ocr_server::scheduler::{Scheduler, SchedulerConfig};
use tower::ServiceExt;

fn router() -> axum::Router {
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
    let api = ApiConfig {
        default_timeout: Duration::from_secs(300),
        ..ApiConfig::default()
    };
    Api::new(scheduler, api).router()
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
        // Every third document is turned a few degrees, every other one gets noise.
        if i % 3 == 1 {
            img = rotate(&img, if i % 2 == 0 { 2.5 } else { -2.0 });
        }
        if i % 2 == 1 {
            img = noisy(img, &mut rng, 40);
        }
        let json = ocr(&router, "extract=mrz", "image/png", png(&img)).await;
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
/// The target is 0.90 and is not reached: the rules measured 0.767 here when written
/// (company 0.771, date 0.957, address 0.442, total 0.903; NOTES.md), and most misses left are
/// the recogniser's (a comma read as a full stop, a space lost), which SROIE's exact match
/// counts whole. The bar is that figure less a margin for OCR noise between CPUs.
const RECEIPT_F1_BAR: f64 = 0.74;

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

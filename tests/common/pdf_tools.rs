//! Helpers of the output-writer tests (tests/output_*.rs): synthetic OCR pages and wrappers
//! around poppler-utils (pdftotext, pdftoppm, pdfimages, pdffonts) and qpdf.

use std::path::{Path, PathBuf};
use std::process::Command;

use ocr_server::pipeline::{Line, Word};

/// A file of the dev eval set.
pub fn dev(name: &str) -> PathBuf {
    let p = super::eval_dir().join("dev").join(name);
    assert!(
        p.exists(),
        "{} is missing: the dev eval set is at ../shared/eval beside the checkout, or set OCR_EVAL_DIR",
        p.display()
    );
    p
}

/// A FUNSD form scan (PNG, grayscale content).
pub fn funsd_png() -> PathBuf {
    dev("funsd_82573104.png")
}

/// An SROIE receipt (baseline RGB JPEG).
pub fn sroie_jpg() -> PathBuf {
    dev("sroie_379.jpg")
}

/// A 4-page pdfLaTeX document with its own text.
pub fn latex_pdf() -> PathBuf {
    dev("pdf_pdflatex-4-pages.pdf")
}

/// A fresh output directory for one test (kept after the run for inspection).
pub fn out_dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("output-writers")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A line of words laid out along a baseline from `origin` (the first word's bottom-left, in
/// pixels), rising at `angle_deg` (counter-clockwise as seen), `h` px high, `cw` px per char,
/// words separated by `0.6 h`.
pub fn line(origin: [f32; 2], h: f32, angle_deg: f32, cw: f32, words: &[&str]) -> Line {
    let a = angle_deg.to_radians();
    let d = [a.cos(), -a.sin()];
    let up = [-a.sin(), -a.cos()];
    let mut off = 0.0;
    let mut out = Vec::new();
    for w in words {
        let width = w.chars().count() as f32 * cw;
        let bl = [origin[0] + d[0] * off, origin[1] + d[1] * off];
        let br = [bl[0] + d[0] * width, bl[1] + d[1] * width];
        let tr = [br[0] + up[0] * h, br[1] + up[1] * h];
        let tl = [bl[0] + up[0] * h, bl[1] + up[1] * h];
        out.push(Word {
            text: w.to_string(),
            confidence: 0.9,
            bbox: [tl, tr, br, bl],
        });
        off += width + 0.6 * h;
    }
    let first = out[0].bbox;
    let last = out[out.len() - 1].bbox;
    Line {
        text: words.join(" "),
        confidence: 0.9,
        bbox: [first[0], last[1], last[2], first[3]],
        words: out,
        char_confidences: Vec::new(),
    }
}

/// Axis-aligned bounds of a quad.
pub fn bounds(q: &[[f32; 2]; 4]) -> [f32; 4] {
    let xs = q.map(|p| p[0]);
    let ys = q.map(|p| p[1]);
    let min = |v: [f32; 4]| v.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = |v: [f32; 4]| v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    [min(xs), min(ys), max(xs), max(ys)]
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd}: {e} (install poppler-utils and qpdf; scripts/test.sh does)")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed: {stderr}");
    // poppler reports font / syntax problems on stderr while still exiting 0.
    assert!(
        !stderr.contains("Error") && !stderr.contains("Warning"),
        "{cmd} {args:?} complained: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `qpdf --check` must pass without warnings.
pub fn qpdf_check(pdf: &Path) {
    let out = Command::new("qpdf")
        .arg("--check")
        .arg(pdf)
        .output()
        .unwrap_or_else(|e| panic!("qpdf: {e} (install qpdf; scripts/test.sh does)"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qpdf --check failed: {text}");
    assert!(
        text.contains("No syntax or stream encoding errors"),
        "qpdf: {text}"
    );
    assert!(
        !text.to_lowercase().contains("warning"),
        "qpdf warnings: {text}"
    );
}

#[derive(Debug, Clone)]
pub struct BoxWord {
    pub text: String,
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone)]
pub struct BoxPage {
    pub width: f32,
    pub height: f32,
    pub words: Vec<BoxWord>,
}

fn attr(tag: &str, name: &str) -> f32 {
    let key = format!("{name}=\"");
    let start = tag.find(&key).unwrap_or_else(|| panic!("{name} in {tag}")) + key.len();
    let end = start + tag[start..].find('"').unwrap();
    tag[start..end].parse().unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `pdftotext -bbox` (plus `extra` args): every page's size and word boxes, in points, origin
/// top-left of the page as displayed.
pub fn pdftotext_bbox(pdf: &Path, extra: &[&str]) -> Vec<BoxPage> {
    let out = pdf.with_extension("bbox.html");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-bbox", pdf.to_str().unwrap(), out.to_str().unwrap()]);
    run("pdftotext", &args);
    let html = std::fs::read_to_string(&out).unwrap();
    let mut pages = Vec::new();
    for l in html.lines() {
        let l = l.trim();
        if l.starts_with("<page ") {
            pages.push(BoxPage {
                width: attr(l, "width"),
                height: attr(l, "height"),
                words: Vec::new(),
            });
        } else if l.starts_with("<word ") {
            let gt = l.find('>').unwrap();
            let end = l.rfind("</word>").unwrap();
            let bbox = [
                attr(l, "xMin"),
                attr(l, "yMin"),
                attr(l, "xMax"),
                attr(l, "yMax"),
            ];
            pages.last_mut().unwrap().words.push(BoxWord {
                text: unescape(&l[gt + 1..end]),
                bbox,
            });
        }
    }
    pages
}

/// Plain `pdftotext` of one page (1-based).
pub fn pdftotext_plain(pdf: &Path, page: u32) -> String {
    let p = page.to_string();
    run(
        "pdftotext",
        &[
            "-f",
            &p,
            "-l",
            &p,
            "-enc",
            "UTF-8",
            pdf.to_str().unwrap(),
            "-",
        ],
    )
}

/// Renders page `page` (1-based) at `dpi` with pdftoppm; returns the decoded image.
pub fn render(pdf: &Path, page: u32, dpi: f32, gray: bool) -> image::DynamicImage {
    let prefix = pdf.with_extension(format!("p{page}-r{dpi}{}", if gray { "g" } else { "" }));
    let p = page.to_string();
    let r = dpi.to_string();
    let mut args = vec!["-f", &p, "-l", &p, "-r", &r, "-singlefile", "-png"];
    if gray {
        args.push("-gray");
    }
    args.extend([pdf.to_str().unwrap(), prefix.to_str().unwrap()]);
    run("pdftoppm", &args);
    image::open(prefix.with_extension(format!(
        "{}.png",
        prefix.extension().unwrap().to_str().unwrap()
    )))
    .unwrap()
}

/// Asserts that a word with `text` is on the page with its box within `tol` points of `want`
/// on every side; returns the box found.
pub fn assert_word_at(page: &BoxPage, text: &str, want: [f32; 4], tol: f32) -> [f32; 4] {
    let found: Vec<&BoxWord> = page.words.iter().filter(|w| w.text == text).collect();
    assert!(
        !found.is_empty(),
        "word {text:?} not extracted; words: {:?}",
        page.words
    );
    let best = found
        .iter()
        .map(|w| {
            (
                w.bbox,
                (0..4)
                    .map(|i| (w.bbox[i] - want[i]).abs())
                    .fold(0f32, f32::max),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(
        best.1 <= tol,
        "word {text:?}: box {:?} vs expected {want:?} (off by {} pt > {tol})",
        best.0,
        best.1
    );
    best.0
}

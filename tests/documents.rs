//! Documents end to end with the real models: the dev PDF through the CLI scored against its
//! ground truth; an image → searchable PDF → `pdftotext -bbox` round trip (text and word boxes)
//! and `pdftoppm` page size; hOCR parsed and checked structurally; broken PDFs and TIFFs give
//! clear per-document or per-page errors; a PDF over the sync page limit is 413 over HTTP.
//! Needs poppler-utils and qpdf (scripts/test.sh installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{http, start_server};
use ocr_server::document::Document;
use ocr_server::pipeline::decode::DecodeLimits;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ocr-server"))
}

fn dev(name: &str) -> PathBuf {
    common::eval_dir().join("dev").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docs-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn tool(name: &str) -> Command {
    let probe = Command::new(name).arg("-v").output();
    assert!(
        probe.is_ok(),
        "{name} is missing: install poppler-utils and qpdf (scripts/test.sh does)"
    );
    Command::new(name)
}

/// Whitespace-collapsed text.
fn norm(s: &str) -> Vec<char> {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect()
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
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
    prev[b.len()]
}

fn cer(pred: &str, truth: &str) -> f64 {
    let (p, t) = (norm(pred), norm(truth));
    edit_distance(&p, &t) as f64 / t.len().max(1) as f64
}

#[test]
fn the_dev_pdf_through_the_cli_reads_like_its_text_layer() {
    let manifest = std::fs::read_to_string(dev("manifest.jsonl")).unwrap();
    let truth: Value = manifest
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["file"] == "pdf_pdflatex-4-pages.pdf")
        .unwrap();
    let o = bin()
        .args(["ocr", "--format", "jsonl", "--pages", "1,3-4"])
        .arg(dev("pdf_pdflatex-4-pages.pdf"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pages = row["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3, "pages 1, 3 and 4 were asked");
    for (page, number) in pages.iter().zip([1, 3, 4]) {
        // 200 dpi A4.
        assert_eq!(
            (page["width"].as_u64(), page["height"].as_u64()),
            (Some(1654), Some(2339))
        );
        let text: Vec<&str> = page["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap())
            .collect();
        let gt = truth["pages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["page"] == number)
            .unwrap()["text"]
            .as_str()
            .unwrap();
        let c = cer(&text.join("\n"), gt);
        eprintln!("dev PDF page {number}: CER {c:.4}");
        assert!(c < 0.02, "page {number}: CER {c:.4}");
    }
}

/// XHTML with a DOCTYPE (hOCR, pdftotext -bbox) is fine to parse.
fn xml_options<'a>() -> roxmltree::ParsingOptions<'a> {
    roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    }
}

/// `pdftotext -bbox` words: (text, xmin, ymin, xmax, ymax) in points.
fn pdf_words(pdf: &Path) -> Vec<(String, f64, f64, f64, f64)> {
    let o = tool("pdftotext")
        .arg("-bbox")
        .arg(pdf)
        .arg("-")
        .output()
        .unwrap();
    assert!(o.status.success());
    let html = String::from_utf8(o.stdout).unwrap();
    let doc = roxmltree::Document::parse_with_options(&html, xml_options()).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("word"))
        .map(|n| {
            let f = |k: &str| n.attribute(k).unwrap().parse::<f64>().unwrap();
            (
                n.text().unwrap_or("").to_string(),
                f("xMin"),
                f("yMin"),
                f("xMax"),
                f("yMax"),
            )
        })
        .collect()
}

#[test]
fn searchable_pdf_round_trip_puts_every_word_on_its_box() {
    let image = dev("tess_phototest.png");
    let o = bin()
        .args(["ocr", "--format", "json"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success());
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let page = &json[0]["pages"][0];
    let pdf = tmp("phototest.pdf");
    let o = bin()
        .args(["ocr", "--format", "pdf", "--output"])
        .arg(&pdf)
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    let check = tool("qpdf").arg("--check").arg(&pdf).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Images are placed at 300 dpi: a pixel is 72/300 pt.
    let k = 72.0 / 300.0;
    let extracted = pdf_words(&pdf);
    let mut expected = 0;
    for line in page["lines"].as_array().unwrap() {
        for w in line["words"].as_array().unwrap() {
            expected += 1;
            let text = w["text"].as_str().unwrap();
            let pts: Vec<(f64, f64)> = w["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap() * k, p[1].as_f64().unwrap() * k))
                .collect();
            let (x0, x1) = (
                pts.iter().map(|p| p.0).fold(f64::MAX, f64::min),
                pts.iter().map(|p| p.0).fold(f64::MIN, f64::max),
            );
            let (y0, y1) = (
                pts.iter().map(|p| p.1).fold(f64::MAX, f64::min),
                pts.iter().map(|p| p.1).fold(f64::MIN, f64::max),
            );
            let found = extracted.iter().find(|e| {
                e.0 == text
                    && (e.1 - x0).abs() < 2.0
                    && (e.3 - x1).abs() < 2.0
                    && (e.2 - y0).abs() < 2.0
                    && (e.4 - y1).abs() < 2.0
            });
            assert!(
                found.is_some(),
                "word {text:?} at ({x0:.1},{y0:.1})-({x1:.1},{y1:.1}) pt not in the PDF's text layer"
            );
        }
    }
    assert!(expected > 40, "the page has {expected} words");
    assert_eq!(
        extracted.len(),
        expected,
        "no extra words in the text layer"
    );

    // Plain extraction gives the OCR text, line by line.
    let o = tool("pdftotext")
        .arg("-layout")
        .arg(&pdf)
        .arg("-")
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("The quick brown dog jumped over the"),
        "{text}"
    );

    // The page renders at 300 dpi to the input's own size.
    let png = tmp("phototest-render");
    let r = tool("pdftoppm")
        .args(["-r", "300", "-png", "-singlefile"])
        .arg(&pdf)
        .arg(&png)
        .status()
        .unwrap();
    assert!(r.success());
    let rendered = image::open(png.with_extension("png")).unwrap();
    let input = image::open(&image).unwrap();
    let (dw, dh) = (
        rendered.width().abs_diff(input.width()),
        rendered.height().abs_diff(input.height()),
    );
    assert!(
        dw <= 1 && dh <= 1,
        "rendered {}x{}",
        rendered.width(),
        rendered.height()
    );
}

#[test]
fn hocr_is_well_formed_with_every_word_inside_its_line() {
    let o = bin()
        .args(["ocr", "--format", "hocr"])
        .arg(dev("sroie_379.jpg"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let html = String::from_utf8(o.stdout).unwrap();
    let doc = roxmltree::Document::parse_with_options(&html, xml_options())
        .expect("hOCR must be well-formed XML");
    let bbox = |n: roxmltree::Node| -> [i64; 4] {
        let title = n.attribute("title").unwrap();
        let b = title
            .split(';')
            .find_map(|p| p.trim().strip_prefix("bbox "))
            .unwrap_or_else(|| panic!("no bbox in {title:?}"));
        let v: Vec<i64> = b.split_whitespace().map(|x| x.parse().unwrap()).collect();
        [v[0], v[1], v[2], v[3]]
    };
    let class = |n: &roxmltree::Node, c: &str| n.attribute("class") == Some(c);
    let pages: Vec<_> = doc.descendants().filter(|n| class(n, "ocr_page")).collect();
    assert_eq!(pages.len(), 1);
    let pb = bbox(pages[0]);
    let (mut lines, mut words) = (0, 0);
    for line in pages[0].descendants().filter(|n| class(n, "ocr_line")) {
        lines += 1;
        let lb = bbox(line);
        assert!(lb[0] >= pb[0] && lb[1] >= pb[1] && lb[2] <= pb[2] && lb[3] <= pb[3]);
        for w in line.descendants().filter(|n| class(n, "ocrx_word")) {
            words += 1;
            let wb = bbox(w);
            assert!(
                wb[0] >= lb[0] && wb[1] >= lb[1] && wb[2] <= lb[2] && wb[3] <= lb[3],
                "word {wb:?} outside line {lb:?}"
            );
            let conf = w.attribute("title").unwrap();
            let c: i64 = conf
                .split(';')
                .find_map(|p| p.trim().strip_prefix("x_wconf "))
                .unwrap()
                .parse()
                .unwrap();
            assert!((0..=100).contains(&c));
            assert!(!w.text().unwrap_or("").is_empty());
        }
    }
    assert!(lines > 20 && words > 60, "{lines} lines, {words} words");
    assert!(html.contains(">Total<"), "the receipt's words are there");
}

/// A one-page PDF with a correct xref; `page_extra` goes into the page dictionary and `count`
/// is what `/Pages` claims.
fn tiny_pdf(page_extra: &str, count: usize) -> Vec<u8> {
    let content = "BT /F1 24 Tf 72 720 Td (Hello) Tj ET";
    let objs = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Count {count} /Kids [3 0 R] >>"),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] {page_extra} /Contents 4 0 R \
             /Resources << /Font << /F1 5 0 R >> >> >>"
        ),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offs = vec![];
    for (i, o) in objs.iter().enumerate() {
        offs.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).bytes());
    for o in offs {
        out.extend(format!("{o:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objs.len() + 1
        )
        .bytes(),
    );
    out
}

/// A little-endian TIFF header whose first IFD offset points past the end of the file.
fn tiff_bad_ifd() -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend(1_000_000u32.to_le_bytes());
    t.extend([0u8; 32]);
    t
}

fn open(bytes: Vec<u8>) -> ocr_server::Result<Document> {
    Document::open(Arc::new(bytes), &DecodeLimits::default())
}

#[test]
fn broken_documents_give_clear_errors_without_panics() {
    let pdf = std::fs::read(dev("pdf_pdflatex-4-pages.pdf")).unwrap();

    // Truncated: a document error.
    let e = open(pdf[..pdf.len() / 2].to_vec()).err().unwrap();
    assert_eq!(e.code(), "corrupt_document", "{e}");

    let src = tmp("plain.pdf");
    let enc = tmp("encrypted.pdf");
    std::fs::write(&src, &pdf).unwrap();
    encrypt(&src, &enc, "secret");
    // Encrypted with a user password: one page (the page tree is encrypted too), which is an
    // error that says so.
    let doc = open(std::fs::read(&enc).unwrap()).unwrap();
    assert_eq!(doc.page_count(), 1);
    let e = doc.page(0).unwrap_err();
    assert_eq!(e.code(), "encrypted_document", "{e}");
    let user_pw = tmp("user-password.pdf");
    std::fs::copy(&enc, &user_pw).unwrap();
    // Owner password only (an empty user password): it opens and renders.
    encrypt(&src, &enc, "");
    let doc = open(std::fs::read(&enc).unwrap()).unwrap();
    assert_eq!(doc.page_count(), 4);
    assert_eq!(doc.page(0).unwrap().dimensions(), (1654, 2339));

    // A page tree claiming 100,000 pages with one kid: the real count.
    let doc = open(tiny_pdf("", 100_000)).unwrap();
    assert_eq!(doc.page_count(), 1);
    assert!(doc.page(0).is_ok());

    // An absurd MediaBox: the document opens, the page is a clear page error, nothing is
    // allocated for it.
    let doc = open(tiny_pdf("/MediaBox [0 0 14400000 14400000]", 1)).unwrap();
    let e = doc.page(0).unwrap_err();
    assert_eq!(e.code(), "image_too_large", "{e}");
    assert!(e.to_string().contains("page 1"), "{e}");
    // A large but sane page is rendered at a lower resolution that fits the limits.
    let doc = open(tiny_pdf("/MediaBox [0 0 4000 4000]", 1)).unwrap();
    let img = doc.page(0).unwrap();
    assert!(u64::from(img.width()) * u64::from(img.height()) <= 64_000_000);
    assert!(doc.page_dpi(0).unwrap() < 200.0);

    // A TIFF whose IFD is out of the file.
    let e = open(tiff_bad_ifd()).err().unwrap();
    assert_eq!(e.code(), "corrupt_image", "{e}");

    // Through the CLI: per-file errors in JSONL, exit status 1, no panic.
    let bad = tmp("absurd.pdf");
    std::fs::write(&bad, tiny_pdf("/MediaBox [0 0 14400000 14400000]", 1)).unwrap();
    let trunc = tmp("truncated.pdf");
    std::fs::write(&trunc, &pdf[..pdf.len() / 2]).unwrap();
    let o = bin()
        .args(["ocr", "--format", "jsonl"])
        .args([&bad, &trunc, &enc, &user_pw])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let rows: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["error"]["code"], "image_too_large");
    assert_eq!(rows[1]["error"]["code"], "corrupt_document");
    assert!(rows[2]["error"].is_null() && rows[2]["pages"].as_array().unwrap().len() == 4);
    assert_eq!(rows[3]["error"]["code"], "encrypted_document");
}

#[test]
fn over_http_pdfs_have_a_sync_page_limit_and_every_format() {
    let data = tmp("http-data");
    let (mut server, addr) = start_server(&data, &["--sync-max-pages", "2"]);
    let pdf = std::fs::read(dev("pdf_pdflatex-4-pages.pdf")).unwrap();
    let ct = [("content-type", "application/pdf")];
    let (s, body) = http(&addr, "POST", "/v1/ocr", &ct, &pdf);
    assert_eq!(s, 413, "{body}");
    assert_eq!(body["code"], "too_many_pages_for_sync");
    assert!(
        body["detail"].as_str().unwrap().contains("/v1/jobs"),
        "{body}"
    );

    let (s, body) = http(&addr, "POST", "/v1/ocr?pages=2", &ct, &pdf);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["pages"].as_array().unwrap().len(), 1);
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Hello, here is some text"),
        "{body}"
    );

    // The same document as a job: all 4 pages, and its searchable PDF keeps the original pages.
    let (s, job) = http(&addr, "POST", "/v1/jobs?pages=1-2", &ct, &pdf);
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["pages_total"], 2);
    let id = job["id"].as_str().unwrap().to_string();
    let j = wait_final(&addr, &id);
    assert_eq!(j["state"], "completed", "{j}");
    let out = tmp("job.pdf");
    let raw = raw_get(&addr, &format!("/v1/jobs/{id}/result?format=pdf"));
    assert!(raw.starts_with(b"%PDF-"));
    std::fs::write(&out, &raw).unwrap();
    let info = tool("pdfinfo").arg(&out).output().unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("Pages:           4"));

    // A job with an encrypted PDF beside an image: the image is read, the PDF fails alone.
    let src = tmp("plain-for-job.pdf");
    let enc = tmp("encrypted-for-job.pdf");
    std::fs::write(&src, &pdf).unwrap();
    encrypt(&src, &enc, "secret");
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let body = serde_json::json!({"documents": [
        {"name": "photo.png", "data": b64(&std::fs::read(dev("tess_phototest.png")).unwrap())},
        {"name": "locked.pdf", "data": b64(&std::fs::read(&enc).unwrap())},
    ]});
    let (s, job) = http(
        &addr,
        "POST",
        "/v1/jobs",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let j = wait_final(&addr, &id);
    assert_eq!(j["state"], "partially_completed", "{j}");
    assert_eq!(
        (j["pages_done"].as_u64(), j["pages_failed"].as_u64()),
        (Some(1), Some(1))
    );
    let reason = j["documents"][1]["pages"][0].to_string();
    assert!(reason.contains("encrypted"), "{reason}");

    // An image with Accept: text/vnd.hocr+html gets hOCR.
    let png = std::fs::read(dev("tess_phototest.png")).unwrap();
    let (s, body) = http(
        &addr,
        "POST",
        "/v1/ocr",
        &[
            ("content-type", "image/png"),
            ("accept", "text/vnd.hocr+html"),
        ],
        &png,
    );
    assert_eq!(s, 200);
    assert!(body.as_str().unwrap().contains("ocrx_word"), "{body}");

    server.kill().unwrap();
    server.wait().unwrap();
}

/// Encrypts `src` into `dst` with qpdf (AES-256): user password `user` (empty: anyone may open
/// it), owner password `owner`.
fn encrypt(src: &Path, dst: &Path, user: &str) {
    let s = tool("qpdf")
        .args(["--encrypt", user, "owner", "256", "--"])
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(s.success());
}

/// Polls a job until it leaves `queued`/`processing` (at most 2 minutes); the last view.
fn wait_final(addr: &str, id: &str) -> Value {
    let mut j = Value::Null;
    for _ in 0..600 {
        j = http(addr, "GET", &format!("/v1/jobs/{id}"), &[], b"").1;
        if j["state"] != "queued" && j["state"] != "processing" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    j
}

/// The raw body of a GET (binary-safe).
fn raw_get(addr: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&resp[..at]).to_lowercase();
    assert!(head.contains("content-type: application/pdf"), "{head}");
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    resp[at..].to_vec()
}

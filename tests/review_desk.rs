//! The review desk end to end: the real server binary with the real PP-OCRv6 models, a real
//! job that lands in `needs_review`, and the desk at `/review` driven in Debian's Chromium by
//! `playwright-core` (`tests/review/desk.mjs`): the job is in the queue, a line is selected by
//! its box, corrected, accepted with Enter, and the job approved. Then, through the API: the
//! job is `completed`, its JSON result, text and hOCR carry the correction on the line's box,
//! its events name the reviewer with the original and corrected text, and a `job.reviewed`
//! webhook naming the reviewer was delivered. Also: the page-image route (JPEG, bounded size,
//! 404 for a page or document that does not exist), line corrections refused for a line that
//! does not exist, per-character confidences in results, and `review_sample_rate`. Last, a
//! hostile page in the same Chromium (`tests/review/hostile.mjs`): framing, simple cross-origin
//! requests and DNS rebinding are all refused.
//!
//! Needs `scripts/setup.sh`, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and
//! `tests/review/node_modules` (`npm ci --prefix tests/review`): `scripts/test.sh` installs
//! them. Fails, never skips, without them. Writes the desk's screenshot to
//! `target/review-desk/review.png`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{http, http_full, start_server};
use serde_json::Value;

/// A webhook receiver on a free port: answers 200 to everything and keeps the bodies.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                sink.lock().unwrap().push(v);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, seen)
}

fn wait_state(addr: &str, id: &str, states: &[&str]) -> Value {
    for _ in 0..1200 {
        let (s, job) = http(addr, "GET", &format!("/v1/jobs/{id}"), &[], b"");
        assert_eq!(s, 200, "{job}");
        if states.contains(&job["state"].as_str().unwrap_or("")) {
            return job;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {id} never reached {states:?}");
}

fn submit(addr: &str, query: &str, image: &[u8]) -> String {
    let (s, job) = http(
        addr,
        "POST",
        &format!("/v1/jobs?{query}"),
        &[("Content-Type", "image/jpeg")],
        image,
    );
    assert_eq!(s, 202, "{job}");
    job["id"].as_str().unwrap().to_string()
}

fn receipt() -> Vec<u8> {
    std::fs::read(common::pdf_tools::sroie_jpg()).unwrap()
}

#[test]
fn a_reviewer_corrects_a_line_in_the_browser_and_approves_the_job() {
    let node_modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/review/node_modules");
    assert!(
        node_modules.join("playwright-core").exists(),
        "playwright-core is missing: npm ci --prefix tests/review (scripts/test.sh does it)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: apt-get install chromium (scripts/test.sh does it)"
    );
    let (hook, seen) = receiver();
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("review-desk");
    let _ = std::fs::remove_dir_all(&data);
    let (mut server, addr) = start_server(
        &data,
        &[
            "--profile",
            "accurate",
            "--webhook-secret",
            "review-desk-test-secret",
            "--webhook-allow",
            "127.0.0.1",
        ],
    );

    // A real job under a threshold no page meets: it waits for review.
    let id = submit(
        &addr,
        &format!("review_threshold=0.999&extract=receipt&webhook_url=http://{hook}/hook"),
        &receipt(),
    );
    let job = wait_state(&addr, &id, &["needs_review", "completed", "failed"]);
    assert_eq!(job["state"], "needs_review", "{job}");

    // The queue names it and why.
    let (s, queue) = http(&addr, "GET", "/v1/review/queue", &[], b"");
    assert_eq!(s, 200, "{queue}");
    let entry = queue["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in the queue: {queue}"))
        .clone();
    assert_eq!(entry["documents"][0], "document", "{entry}");
    assert!(
        entry["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("under 0.999")),
        "{entry}"
    );

    // The result carries per-character confidences, one per character.
    let (_, result) = http(&addr, "GET", &format!("/v1/jobs/{id}/result"), &[], b"");
    let page = &result["documents"][0]["pages"][0];
    let lines = page["lines"].as_array().unwrap();
    assert!(lines.len() > 10, "{page}");
    for l in lines {
        let n = l["text"].as_str().unwrap().chars().count();
        assert_eq!(
            l["char_confidences"].as_array().map(Vec::len),
            Some(n),
            "{l}"
        );
    }
    // The line to correct: the least confident one.
    let (line, original) = lines
        .iter()
        .enumerate()
        .min_by(|a, b| {
            a.1["confidence"]
                .as_f64()
                .unwrap()
                .total_cmp(&b.1["confidence"].as_f64().unwrap())
        })
        .map(|(i, l)| (i, l["text"].as_str().unwrap().to_string()))
        .unwrap();
    let correction = format!("REVIEWED {line} OK");

    // The page image: a JPEG no larger than 1600 pixels a side.
    let (s, h, _) = http_full(
        &addr,
        "GET",
        &format!("/v1/jobs/{id}/documents/0/pages/0/image"),
        &[],
        b"",
    );
    assert_eq!(s, 200);
    assert!(
        h.iter()
            .any(|(k, v)| k == "content-type" && v == "image/jpeg"),
        "{h:?}"
    );
    let bytes = image_bytes(&addr, &id);
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert!(decoded.width().max(decoded.height()) <= 1600);
    eprintln!(
        "page image: {} bytes, {}x{} (page {}x{})",
        bytes.len(),
        decoded.width(),
        decoded.height(),
        page["width"],
        page["height"]
    );
    for path in [
        format!("/v1/jobs/{id}/documents/0/pages/1/image"),
        format!("/v1/jobs/{id}/documents/3/pages/0/image"),
        format!("/v1/jobs/{id}/documents/0/pages/x/image"),
    ] {
        let (s, p) = http(&addr, "GET", &path, &[], b"");
        assert_eq!(
            (s, p["code"].as_str()),
            (404, Some("page_not_found")),
            "{path}: {p}"
        );
    }
    let (s, p) = http(
        &addr,
        "GET",
        "/v1/jobs/nope/documents/0/pages/0/image",
        &[],
        b"",
    );
    assert_eq!((s, p["code"].as_str()), (404, Some("job_not_found")), "{p}");
    // A correction of a line that does not exist is refused; the job still waits.
    let bad = serde_json::json!({"approve": true, "corrections": [
        {"document": 0, "page": 0, "line": lines.len(), "text": "x"}]});
    let (s, p) = http(
        &addr,
        "POST",
        &format!("/v1/jobs/{id}/review"),
        &[("Content-Type", "application/json")],
        bad.to_string().as_bytes(),
    );
    assert!((400..500).contains(&s), "{s} {p}");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("no line"),
        "{p}"
    );

    // The desk, in Chromium.
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/review-desk");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("review.png");
    let run = std::process::Command::new("node")
        .arg("tests/review/desk.mjs")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BASE_URL", format!("http://{addr}"))
        .env("JOB_ID", &id)
        .env("LINE", line.to_string())
        .env("CORRECTION", &correction)
        .env("REVIEWER", "Ada Reviewer")
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout).to_string();
    eprintln!("desk.mjs: {said}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the desk run failed: {said}");
    let desk: Value = serde_json::from_str(said.trim().lines().last().unwrap()).unwrap();
    assert_eq!(
        desk["errors"],
        serde_json::json!([]),
        "console errors: {desk}"
    );
    assert_eq!(desk["boxes"].as_u64(), Some(lines.len() as u64), "{desk}");
    assert_eq!(
        desk["after_enter"].as_str(),
        Some(format!("Line {}", (line + 1).min(lines.len() - 1) + 1).as_str()),
        "Enter moves to the next line: {desk}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);

    // The job, after the desk.
    let job = wait_state(&addr, &id, &["completed"]);
    assert_eq!(job["state"], "completed");
    let (_, result) = http(&addr, "GET", &format!("/v1/jobs/{id}/result"), &[], b"");
    let l = &result["documents"][0]["pages"][0]["lines"][line];
    assert_eq!(l["text"], correction.as_str(), "{l}");
    assert_eq!(l["box"], lines[line]["box"], "the box stays attached");
    assert!(
        result["documents"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&correction)
    );
    let (_, text) = http(
        &addr,
        "GET",
        &format!("/v1/jobs/{id}/result?format=text"),
        &[],
        b"",
    );
    assert!(text.as_str().unwrap().contains(&correction), "{text}");
    let (_, hocr) = http(
        &addr,
        "GET",
        &format!("/v1/jobs/{id}/result?format=hocr"),
        &[],
        b"",
    );
    for word in correction.split(' ') {
        assert!(hocr.as_str().unwrap().contains(word), "hOCR lacks {word}");
    }
    let (_, events) = http(&addr, "GET", &format!("/v1/jobs/{id}/events"), &[], b"");
    let review = events
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["detail"]["detail"]["review"].as_object().cloned())
        .unwrap_or_else(|| panic!("no review event: {events}"));
    assert_eq!(review["reviewer"], "Ada Reviewer", "{review:?}");
    let c = &review["corrections"][0];
    assert_eq!(
        (
            c["line"].as_u64(),
            c["text"].as_str(),
            c["original"].as_str()
        ),
        (
            Some(line as u64),
            Some(correction.as_str()),
            Some(original.as_str())
        ),
        "{review:?}"
    );
    let mut reviewed = None;
    for _ in 0..300 {
        reviewed = seen
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["type"] == "job.reviewed")
            .cloned();
        if reviewed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = http(&addr, "GET", "/metrics", &[], b"");
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ocr_job_reviews_total{outcome=\"corrected\"} 1"),
        "{metrics}"
    );
    let reviewed = reviewed.expect("no job.reviewed webhook arrived");
    assert_eq!(reviewed["data"]["id"], id.as_str());
    assert_eq!(reviewed["data"]["reviewer"], "Ada Reviewer");

    // Random sampling: every page at rate 1, none at rate 0; out of range refused.
    let sampled = submit(&addr, "review_sample_rate=1", &receipt());
    let job = wait_state(&addr, &sampled, &["needs_review", "completed", "failed"]);
    assert_eq!(job["state"], "needs_review", "{job}");
    let (_, events) = http(
        &addr,
        "GET",
        &format!("/v1/jobs/{sampled}/events"),
        &[],
        b"",
    );
    assert!(
        events
            .to_string()
            .contains("sampled for review (review_sample_rate 1)"),
        "{events}"
    );
    let unsampled = submit(&addr, "review_sample_rate=0", &receipt());
    assert_eq!(
        wait_state(&addr, &unsampled, &["needs_review", "completed"])["state"],
        "completed"
    );
    let (s, p) = http(
        &addr,
        "POST",
        "/v1/jobs?review_sample_rate=1.5",
        &[("Content-Type", "image/jpeg")],
        &receipt(),
    );
    assert_eq!(
        (s, p["code"].as_str()),
        (422, Some("invalid_option")),
        "{p}"
    );

    // A hostile page against this keyless loopback server (issue 26): it cannot frame the desk,
    // pause the queue or create a job with "simple" cross-origin requests, or read through DNS
    // rebinding.
    let (_, before) = http(&addr, "GET", "/v1/jobs?limit=100", &[], b"");
    let run = std::process::Command::new("node")
        .arg("tests/review/hostile.mjs")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BASE_URL", format!("http://{addr}"))
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout).to_string();
    eprintln!(
        "hostile.mjs: {said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "the hostile page's run failed: {said}"
    );
    let hostile: Value = serde_json::from_str(said.trim().lines().last().unwrap()).unwrap();
    assert_eq!(
        hostile["statuses"]["POST /v1/admin/pause"], 403,
        "{hostile}"
    );
    assert_eq!(hostile["statuses"]["POST /v1/jobs"], 403, "{hostile}");
    assert_eq!(hostile["statuses"]["GET /review"], 200, "{hostile}");
    assert_eq!(
        hostile["frame_shows_desk"], false,
        "the desk was framed: {hostile}"
    );
    assert_eq!(hostile["rebind_status"], 403, "{hostile}");
    assert!(
        !hostile["rebind_body"]
            .as_str()
            .unwrap_or("")
            .contains("\"jobs\""),
        "{hostile}"
    );
    let (_, pauses) = http(&addr, "GET", "/v1/admin/pauses", &[], b"");
    assert_eq!(
        pauses["paused"].as_array().map(Vec::len),
        Some(0),
        "{pauses}"
    );
    let (_, after) = http(&addr, "GET", "/v1/jobs?limit=100", &[], b"");
    assert_eq!(
        before["jobs"].as_array().map(Vec::len),
        after["jobs"].as_array().map(Vec::len),
        "no job was created"
    );

    server.kill().unwrap();
    server.wait().unwrap();
}

/// The page image's bytes (the raw helper reads bodies as text).
fn image_bytes(addr: &str, id: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/jobs/{id}/documents/0/pages/0/image HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    resp[at..].to_vec()
}

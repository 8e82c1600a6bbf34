//! `ocr-server submit` against the real server process with the real models: results are written
//! next to their names, a refused file makes the exit status 1 with a summary, and a rerun resumes
//! the same jobs (content-hash idempotency keys) instead of duplicating them.

mod common;

use std::path::Path;
use std::process::Command;

use common::{http, start_server};
use serde_json::Value;

fn ground_truth(file: &str) -> String {
    let manifest = std::fs::read_to_string(common::eval_dir().join("dev/manifest.jsonl")).unwrap();
    manifest
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in the manifest"))["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
}

/// Share of the ground truth's words found in `text` (case-insensitive).
fn word_recall(text: &str, truth: &str) -> f64 {
    let text = text.to_lowercase();
    let words: Vec<&str> = truth.split_whitespace().collect();
    let found = words.iter().filter(|w| text.contains(*w)).count();
    found as f64 / words.len() as f64
}

fn submit(addr: &str, input: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ocr-server"))
        .arg("submit")
        .arg(input)
        .args([
            "--server",
            &format!("http://{addr}"),
            "--quiet",
            "--poll-ms",
            "200",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn job_count(addr: &str) -> usize {
    let (s, list) = http(addr, "GET", "/v1/jobs?limit=500", &[], b"");
    assert_eq!(s, 200, "{list}");
    list["jobs"].as_array().unwrap().len()
}

#[test]
fn submit_writes_results_reports_failures_and_resumes_without_duplicates() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("submit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let input = tmp.join("in");
    std::fs::create_dir_all(input.join("receipts")).unwrap();
    let dev = common::eval_dir().join("dev");
    let good = [
        ("tess_phototest.png", "tess_phototest.png"),
        ("sroie_122.jpg", "sroie_122.jpg"),
        ("sroie_379.jpg", "receipts/sroie_379.jpg"),
    ];
    for (src, name) in good {
        std::fs::copy(dev.join(src), input.join(name)).unwrap();
    }
    std::fs::write(input.join("broken.png"), b"this is not a PNG").unwrap();
    std::fs::write(input.join("readme.txt"), b"not a document, skipped").unwrap();
    let (mut server, addr) = start_server(&tmp.join("data"), &[]);

    // First run: the broken file fails, so the exit status is 1 and the summary names it.
    let out = tmp.join("out");
    let (ok, log) = submit(&addr, &input, &out, &[]);
    assert!(!ok, "a refused file must fail the run: {log}");
    assert!(log.contains("submit: 4 files"), "{log}");
    assert!(log.contains("3 completed"), "{log}");
    assert!(
        log.contains("FAILED") && log.contains("broken.png") && log.contains("HTTP 4"),
        "{log}"
    );
    assert!(!out.join("broken.png.json").exists());
    assert!(!out.join("readme.txt.json").exists());
    let mut first_ids = Vec::new();
    for (src, name) in good {
        let path = out.join(format!("{name}.json"));
        let result: Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap();
        assert_eq!(result["state"], "completed", "{result}");
        assert_eq!(result["documents"][0]["name"], name);
        let text = result["documents"][0]["text"].as_str().unwrap();
        let recall = word_recall(text, &ground_truth(src));
        assert!(recall > 0.6, "{name}: word recall {recall:.2}: {text}");
        first_ids.push(result["id"].as_str().unwrap().to_string());
    }
    let jobs_after_first = job_count(&addr);
    assert_eq!(jobs_after_first, 3, "one job per accepted file");

    // Second run, good files only, text format: the same jobs (no new ones), results rewritten.
    std::fs::remove_file(input.join("broken.png")).unwrap();
    let (ok, log) = submit(&addr, &input, &out, &["--format", "text"]);
    assert!(ok, "{log}");
    assert!(log.contains("submit: 3 files: 3 completed"), "{log}");
    assert_eq!(
        job_count(&addr),
        jobs_after_first,
        "a rerun must not duplicate jobs"
    );
    for (src, name) in good {
        let text = std::fs::read_to_string(out.join(format!("{name}.txt"))).unwrap();
        assert!(
            word_recall(&text, &ground_truth(src)) > 0.6,
            "{name}: {text}"
        );
    }
    // Different options are a different key, so a different job.
    let one = tmp.join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::copy(dev.join("tess_phototest.png"), one.join("p.png")).unwrap();
    let (ok, log) = submit(
        &addr,
        &one.join("p.png"),
        &out,
        &["--min-confidence", "0.3"],
    );
    assert!(ok, "{log}");
    assert_eq!(job_count(&addr), jobs_after_first + 1);
    let p: Value = serde_json::from_slice(&std::fs::read(out.join("p.png.json")).unwrap()).unwrap();
    assert!(!first_ids.contains(&p["id"].as_str().unwrap().to_string()));

    // An unreachable server is a failure with a reason, not a hang.
    let o = Command::new(env!("CARGO_BIN_EXE_ocr-server"))
        .args([
            "submit",
            "--quiet",
            "--tries",
            "2",
            "--server",
            "http://127.0.0.1:9",
        ])
        .arg("--out")
        .arg(&out)
        .arg(one.join("p.png"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("FAILED") && log.contains("gave up after"),
        "{log}"
    );

    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
}

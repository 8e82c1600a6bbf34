//! The `ocr-server ocr` command line as a user runs it: real binary, real models, real files.

mod common;

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ocr-server"))
}

#[test]
fn jsonl_gives_one_object_per_file_and_errors_per_file() {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-inputs");
    std::fs::create_dir_all(&tmp).unwrap();
    let good = common::eval_dir().join("dev/tess_phototest.png");
    let truncated = tmp.join("truncated.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let empty = tmp.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = tmp.join("notes.txt");
    std::fs::write(&text, "not an image at all").unwrap();
    let missing = tmp.join("does-not-exist.png");
    let out = bin()
        .args(["ocr", "--format", "jsonl", "--threads", "1"])
        .args([&good, &truncated, &empty, &text, &missing])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "some files failed: exit 1. stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["file"], good.display().to_string());
    let text0 = rows[0]["text"].as_str().unwrap();
    assert!(text0.contains("quick brown dog"), "{text0}");
    let page = &rows[0]["pages"][0];
    assert!(page["width"].as_u64().unwrap() > 0 && page["height"].as_u64().unwrap() > 0);
    let line = &page["lines"][0];
    assert!(line["text"].is_string() && line["confidence"].is_f64() && line["words"].is_array());
    assert_eq!(line["box"].as_array().unwrap().len(), 4);
    let joined: Vec<&str> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined.join("\n"), text0);
    let codes: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "corrupt_image",
            "empty_input",
            "unsupported_format",
            "io_error"
        ]
    );
}

#[test]
fn text_format_prints_the_text() {
    let good = common::eval_dir().join("dev/tess_phototest.png");
    let out = bin()
        .args(["ocr", "--model", "v4", "--threads", "1"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("This is a lot of 12 point text"), "{text}");
}

#[test]
fn missing_runtime_says_which_script_installs_it() {
    let good = common::eval_dir().join("dev/tess_phototest.png");
    let out = bin()
        .args(["ocr", "--ort-lib", "/nonexistent/libonnxruntime.so"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scripts/setup.sh") && err.contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
}

/// `--device cuda` where CUDA cannot run (this binary without the `cuda` feature, or the CPU
/// runtime library) still answers, on CPU, and says so loudly on standard error: never a silent
/// fallback.
#[test]
fn cuda_unavailable_falls_back_to_cpu_loudly() {
    let good = common::eval_dir().join("dev/tess_phototest.png");
    let out = bin()
        .args(["ocr", "--device", "cuda", "--threads", "1"])
        .arg(&good)
        .env_remove("OCR_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--device cuda requested but CUDA is unavailable")
            && err.contains("RUNNING ON CPU"),
        "the fallback must be logged: {err}"
    );
    assert_eq!(
        err.matches("RUNNING ON CPU").count(),
        1,
        "said once per process, not once per session: {err}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("quick brown dog"), "{text}");
}

/// `ocr` drives the server's scheduler in-process, so it prints exactly what `serve` answers:
/// the same pages (text, boxes, confidences of every line and word) for a form, a receipt and a
/// two-page PDF, the CLI's file workers running them side by side.
#[test]
fn ocr_prints_what_the_server_answers() {
    let dev = common::eval_dir().join("dev");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dev)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let pick = |prefix: &str, ext: &str| {
        files
            .iter()
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(prefix) && n.ends_with(ext)
            })
            .unwrap_or_else(|| panic!("no {prefix}*{ext} in {}", dev.display()))
            .clone()
    };
    let chosen = [
        pick("funsd_", ".png"),
        pick("sroie_", ".jpg"),
        pick("", ".pdf"),
    ];
    // The two images in one run (side by side), the PDF's first two pages in another.
    let run = |pages: Option<&str>, files: &[std::path::PathBuf]| -> Vec<serde_json::Value> {
        let mut cmd = bin();
        cmd.args(["ocr", "--format", "json"]);
        if let Some(p) = pages {
            cmd.args(["--pages", p]);
        }
        let out = cmd.args(files).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut cli = run(None, &chosen[..2]);
    cli.extend(run(Some("1-2"), &chosen[2..]));
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-vs-server");
    let _ = std::fs::remove_dir_all(&data);
    let (mut server, addr) = common::start_server(&data, &[]);
    for (i, path) in chosen.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let uri = if i == 2 {
            "/v1/ocr?pages=1-2"
        } else {
            "/v1/ocr"
        };
        let headers = [("Content-Type", "application/octet-stream")];
        let (status, body) = common::http(&addr, "POST", uri, &headers, &bytes);
        assert_eq!(status, 200, "{}: {body}", path.display());
        let served = &body["pages"];
        let printed = &cli[i]["pages"];
        assert!(
            served.as_array().is_some_and(|p| !p.is_empty()),
            "{}: {body}",
            path.display()
        );
        assert_eq!(
            printed,
            served,
            "{}: the CLI and the server differ",
            path.display()
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// `ocr --extract receipt` adds what `/v1/ocr?extract=receipt` adds: a receipt's fields, each
/// with its value, confidence and box, and none for a file that failed.
#[test]
fn extract_adds_the_fields_to_the_json_output() {
    let receipt = common::eval_dir().join("dev/sroie_041.jpg");
    let out = bin()
        .args([
            "ocr",
            "--format",
            "jsonl",
            "--extract",
            "receipt",
            "--backend",
            "ort",
        ])
        .arg(&receipt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let e = &row["extractions"][0];
    assert_eq!(e["type"], "receipt", "{row}");
    assert_eq!(e["page"], 1);
    let total = &e["fields"]["total"];
    assert!(total["value"].is_string(), "no total: {e}");
    assert!(
        total["confidence"]
            .as_f64()
            .is_some_and(|c| c > 0.0 && c <= 1.0),
        "{total}"
    );
    assert_eq!(total["box"].as_array().map(Vec::len), Some(4), "{total}");
    let bad = bin()
        .args(["ocr", "--format", "jsonl", "--extract", "invoice"])
        .arg(&receipt)
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown extraction is a usage error"
    );
}

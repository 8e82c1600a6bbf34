//! `ocr-server bench` end to end: it starts the real server binary with the real models, runs a
//! short sync sweep, bulk jobs, the mixed run and the raw-model limit over three dev images, and
//! must write a coherent summary, CSVs and two non-blank PNG plots. Nothing here asserts a speed:
//! only that every number that must exist does, agrees with the others and is plausible.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Three small dev images (a scene photo, a receipt, a printed test page), linked into a
/// directory of their own.
fn pages(dir: &Path) -> PathBuf {
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    for name in ["ic15_img_1.jpg", "sroie_041.jpg", "tess_phototest.png"] {
        let src = common::eval_dir().join("dev").join(name);
        std::fs::copy(&src, pages.join(name)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    // Not a page image: must be ignored.
    std::fs::write(pages.join("notes.txt"), "not an image").unwrap();
    pages
}

fn bench(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ocr-server"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing or not a number in {v}"))
}

/// A PNG of the expected size with a real drawing on it (not blank, not a single colour).
fn assert_plot(path: &Path) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (1000, 640), "{}", path.display());
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let coloured = img
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            r.abs_diff(g) > 40 || g.abs_diff(b) > 40
        })
        .count();
    assert!(
        inked > 5_000,
        "{}: only {inked} inked pixels",
        path.display()
    );
    assert!(
        coloured > 200,
        "{}: no coloured series ({coloured} px)",
        path.display()
    );
}

#[test]
fn bench_runs_every_mode_against_a_started_server_and_writes_coherent_outputs() {
    let dir = common::pdf_tools::out_dir("bench-all");
    let pages = pages(&dir);
    let out = dir.join("out");
    let (code, stdout, stderr) = bench(&[
        "--pages",
        pages.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--raw",
        "--mode",
        "sync",
        "--mode",
        "bulk",
        "--mode",
        "mixed",
        "--concurrency",
        "1,2",
        "--window-s",
        "0.5",
        "--window-requests",
        "3",
        "--stability",
        "100",
        "--max-windows",
        "5",
        "--bulk-pages",
        "4",
        "--sync-rate",
        "2",
        "--mixed-requests",
        "3",
        "--bulk-inflight",
        "2",
        "--serve-arg=--cls-workers=0",
        "--quiet",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["pages"], 3, "notes.txt is not a page");
    assert!(s["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(
        s["server"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );

    // Sync: one result per level, percentiles ordered, the server's split present and inside the
    // client's latency.
    let sync = s["sync"].as_array().unwrap();
    assert_eq!(sync.len(), 2);
    for (step, c) in sync.iter().zip([1, 2]) {
        assert_eq!(step["concurrency"], c);
        assert_eq!(step["errors"], 0, "{step}");
        assert!(
            step["stable"].as_bool().unwrap(),
            "100% stability always holds: {step}"
        );
        assert!(step["windows"].as_u64().unwrap() >= 3, "{step}");
        assert!(f(step, "throughput") > 0.0);
        let (p50, p90, p99) = (f(step, "p50_ms"), f(step, "p90_ms"), f(step, "p99_ms"));
        assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99, "{step}");
        let server = f(step, "server_total_ms");
        assert!(server > 0.0 && server <= f(step, "mean_ms") + 1.0, "{step}");
        assert!(f(step, "detect_ms") > 0.0 && f(step, "recognize_ms") > 0.0);
        // Pages counted from the answers: every ok request here is one page.
        assert_eq!(
            step["pages"].as_u64().unwrap(),
            step["requests"].as_u64().unwrap()
        );
    }
    let csv = std::fs::read_to_string(out.join("sync.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("concurrency,rate,windows,stable,pages_per_s,p50_ms"));
    assert!(lines[1].starts_with("1,,"));

    // Bulk: every page done as a job.
    let bulk = &s["bulk"];
    assert_eq!(bulk["pages"], 4);
    assert_eq!(bulk["jobs"], 4);
    assert_eq!(bulk["failed_jobs"], 0);
    assert!(f(bulk, "pages_per_s") > 0.0);

    // Raw: the limit over the same three pages, and the efficiency derived from it.
    let raw = &s["raw"][0];
    assert_eq!(raw["pages"], 3);
    assert!(raw["rec_lines"].as_u64().unwrap() > 10, "{raw}");
    assert!(raw["rec_batches"].as_u64().unwrap() <= raw["rec_lines"].as_u64().unwrap());
    assert!(f(raw, "pages_per_s") > 0.0 && f(raw, "det_model_s") > 0.0);
    let eff = f(&s, "efficiency");
    assert!(
        (eff - f(bulk, "pages_per_s") / f(raw, "pages_per_s")).abs() < 1e-9,
        "efficiency = bulk / raw"
    );

    // Mixed: both phases measured all their requests.
    let m = &s["mixed"];
    for phase in ["idle", "mixed"] {
        assert_eq!(m[phase]["requests"], 3, "{m}");
        assert_eq!(m[phase]["errors"], 0, "{m}");
    }
    assert!((f(m, "p99_ratio") - f(&m["mixed"], "p99_ms") / f(&m["idle"], "p99_ms")).abs() < 1e-9);
    assert_eq!(
        std::fs::read_to_string(out.join("mixed.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    assert_plot(&out.join("latency_throughput.png"));
    assert_plot(&out.join("latency_cdf.png"));
    assert!(
        stdout.contains("| c=1 |") && stdout.contains("efficiency"),
        "{stdout}"
    );
}

#[test]
fn bench_refuses_an_empty_page_set_and_an_unreachable_server() {
    let dir = common::pdf_tools::out_dir("bench-errors");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, stderr) = bench(&["--pages", empty.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no page images"), "{stderr}");

    let pages = pages(&dir);
    let (code, _, stderr) = bench(&[
        "--pages",
        pages.to_str().unwrap(),
        "--server",
        "http://127.0.0.1:9",
        "--out",
        dir.join("out").to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not ready"), "{stderr}");
}

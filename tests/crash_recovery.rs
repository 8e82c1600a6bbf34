//! Crash recovery: the real server as a process, jobs submitted, `kill -9` mid-work, a restart
//! on the same data directory, and every acknowledged job finishes with its full result; none is
//! lost, none is duplicated (a resubmission with the same Idempotency-Key names the same job).

mod common;

use std::time::{Duration, Instant};

use common::{http, start_server};

use std::process::Command;

#[test]
fn kill_9_mid_work_loses_nothing_and_duplicates_nothing() {
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let dev = common::eval_dir().join("dev");
    let files = [
        "sroie_041.jpg",
        "sroie_122.jpg",
        "sroie_151.jpg",
        "sroie_152.jpg",
        "sroie_264.jpg",
        "sroie_313.jpg",
    ];
    let (mut server, addr) = start_server(&data, &["--job-lease-ms", "2000"]);
    let mut ids = Vec::new();
    for f in &files {
        let bytes = std::fs::read(dev.join(f)).unwrap();
        let key = format!("crash-test-{f}");
        let (s, job) = http(
            &addr,
            "POST",
            &format!("/v1/jobs?name={f}"),
            &[("Content-Type", "image/jpeg"), ("Idempotency-Key", &key)],
            &bytes,
        );
        assert_eq!(s, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // Kill as soon as some work is done and some is not.
    let t0 = Instant::now();
    let done_at_kill = loop {
        let (_, list) = http(&addr, "GET", "/v1/jobs?state=completed", &[], b"");
        let done = list["jobs"].as_array().map_or(0, |j| j.len());
        if done >= 1 {
            assert!(
                done < files.len(),
                "everything finished before the kill; nothing was tested"
            );
            break done;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no job completed");
        std::thread::sleep(Duration::from_millis(50));
    };
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    let (mut server, addr) = start_server(&data, &["--job-lease-ms", "2000"]);
    let t0 = Instant::now();
    let mut completed = 0;
    for id in &ids {
        loop {
            let (s, job) = http(&addr, "GET", &format!("/v1/jobs/{id}"), &[], b"");
            assert_eq!(s, 200, "job {id} lost after the restart: {job}");
            let state = job["state"].as_str().unwrap().to_string();
            if state == "completed" {
                completed += 1;
                break;
            }
            assert!(
                !["failed", "partially_completed", "cancelled"].contains(&state.as_str()),
                "{job}"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "job {id} never finished: {job}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, result) = http(&addr, "GET", &format!("/v1/jobs/{id}/result"), &[], b"");
        let text = result["documents"][0]["text"].as_str().unwrap_or("");
        assert!(text.len() > 20, "job {id} has no full result: {result}");
    }
    // No duplicates: exactly the submitted jobs exist, and resubmitting names the same ones.
    let (_, list) = http(&addr, "GET", "/v1/jobs?limit=100", &[], b"");
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        files.len(),
        "{list}"
    );
    for (f, id) in files.iter().zip(&ids) {
        let bytes = std::fs::read(dev.join(f)).unwrap();
        let key = format!("crash-test-{f}");
        let (s, job) = http(
            &addr,
            "POST",
            &format!("/v1/jobs?name={f}"),
            &[("Content-Type", "image/jpeg"), ("Idempotency-Key", &key)],
            &bytes,
        );
        assert_eq!((s, job["id"].as_str()), (202, Some(id.as_str())));
    }
    eprintln!(
        "crash test: {} jobs submitted, {done_at_kill} completed before kill -9, {completed} \
         completed after the restart, {} lost",
        ids.len(),
        ids.len() - completed
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

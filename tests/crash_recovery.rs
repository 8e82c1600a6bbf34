//! Crash recovery: the real server as a process, jobs submitted, `kill -9` mid-work, a restart
//! on the same data directory, and every acknowledged job finishes with its full result; none is
//! lost, none is duplicated (a resubmission with the same Idempotency-Key names the same job).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

/// Starts the server on a free port over `data`; returns it and its address once ready. The
/// caller waits for the child; a panic here ends the test process anyway.
#[allow(clippy::zombie_processes)]
fn start(data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocr-server"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--cls-workers",
            "0",
        ])
        .args(["--job-concurrency", "2", "--data-dir"])
        .arg(data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "server exited early");
        if let Some(rest) = line.trim().strip_prefix("ocr-server: listening on http://") {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    for _ in 0..600 {
        if http(&addr, "GET", "/health/ready", &[], b"").0 == 200 {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server never ready");
}

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
    let (mut server, addr) = start(&data);
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

    let (mut server, addr) = start(&data);
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

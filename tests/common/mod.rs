//! Shared helpers of the integration tests: where the eval set, models and runtime are.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub mod pdf_tools;
pub mod router;

/// The shared eval set (`../shared/eval` beside the checkout, or `OCR_EVAL_DIR`).
pub fn eval_dir() -> PathBuf {
    std::env::var_os("OCR_EVAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval"))
}

/// Dev-set page images (PNG and JPEG; the PDF's pages are there as rendered PNGs), sorted.
pub fn dev_images() -> Vec<PathBuf> {
    let dir = eval_dir().join("dev");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the dev set is missing at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    files.sort();
    files
}

/// Python that runs score.py: `OCR_SCORE_PYTHON`, else the test venv made by scripts/test.sh
/// (it has rapidfuzz, which makes scoring fast), else `python3`.
pub fn score_python() -> PathBuf {
    if let Some(p) = std::env::var_os("OCR_SCORE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-eval/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// One raw HTTP/1.1 request (Connection: close); the status and the body as JSON (or a JSON
/// string when it is not JSON).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// [`http`], with the response headers (names lowercased).
pub fn http_full(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Value) {
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
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let raw = resp.get(split + 4..).unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked")
    {
        String::from_utf8_lossy(&dechunk(raw)).to_string()
    } else {
        String::from_utf8_lossy(raw).to_string()
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(&body).unwrap_or(Value::String(body.clone())),
    )
}

/// A chunked body's content (`SIZE\r\nDATA\r\n` … `0\r\n\r\n`); what does not parse ends it.
pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]).to_string();
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Starts the server on a free port over `data`; returns it and its address once ready. The
/// caller waits for the child; a panic here ends the test process anyway.
#[allow(clippy::zombie_processes)]
pub fn start_server(data: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let (child, addr, _) = start_server_logged(data, extra, &[]);
    (child, addr)
}

/// [`start_server`] with extra environment variables; the third value collects everything the
/// server writes to stderr (its logs).
#[allow(clippy::zombie_processes)]
pub fn start_server_logged(
    data: &std::path::Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Child, String, std::sync::Arc<std::sync::Mutex<String>>) {
    start_server_via(&[], data, extra, envs)
}

/// [`start_server_logged`] run through a wrapper command (`["faketime", "-f", "+8d"]`): the
/// wrapper's program, then its arguments, then the server binary and its own.
#[allow(clippy::zombie_processes)]
pub fn start_server_via(
    wrapper: &[&str],
    data: &std::path::Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Child, String, std::sync::Arc<std::sync::Mutex<String>>) {
    let bin = env!("CARGO_BIN_EXE_ocr-server");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .envs(envs.iter().copied())
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
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut startup = String::new();
    let addr = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "server exited early: {startup}"
        );
        startup.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("ocr-server: listening on http://") {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe; keep what it says.
    let log = std::sync::Arc::new(std::sync::Mutex::new(startup));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while err.read_line(&mut line).is_ok_and(|n| n > 0) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    for _ in 0..600 {
        if http(&addr, "GET", "/health/ready", &[], b"").0 == 200 {
            return (child, addr, log);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server never ready");
}

/// A fresh, empty PostgreSQL database in the test cluster that `scripts/test.sh` starts
/// (`OCR_TEST_DATABASE_URL`, see `scripts/services.sh`); its URL. Without the variable this
/// fails loudly, unless `OCR_TEST_SKIP_SERVICES=1` says on purpose that the PostgreSQL tests
/// are not wanted (then None, and the caller returns).
#[allow(dead_code)]
pub async fn test_database_url() -> Option<String> {
    let Ok(base) = std::env::var("OCR_TEST_DATABASE_URL") else {
        if std::env::var("OCR_TEST_SKIP_SERVICES").as_deref() == Ok("1") {
            eprintln!("OCR_TEST_SKIP_SERVICES=1: PostgreSQL test not run");
            return None;
        }
        panic!(
            "OCR_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh, which \
             starts PostgreSQL and S3 (scripts/services.sh), or set OCR_TEST_SKIP_SERVICES=1"
        );
    };
    use sqlx::Connection;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (head, _) = base
        .rsplit_once('/')
        .expect("a database URL ends with /DBNAME");
    Some(format!("{head}/{name}"))
}

/// The S3 bucket URL of the test S3 server (`OCR_TEST_S3_URL`, with the `AWS_*` variables that
/// reach it), under a fresh prefix. Fails loudly without it, like [`test_database_url`].
#[allow(dead_code)]
pub fn test_s3_url(prefix: &str) -> Option<String> {
    let Ok(base) = std::env::var("OCR_TEST_S3_URL") else {
        if std::env::var("OCR_TEST_SKIP_SERVICES").as_deref() == Ok("1") {
            eprintln!("OCR_TEST_SKIP_SERVICES=1: S3 test not run");
            return None;
        }
        panic!(
            "OCR_TEST_S3_URL is not set: run the tests through scripts/test.sh, which starts \
             PostgreSQL and S3 (scripts/services.sh), or set OCR_TEST_SKIP_SERVICES=1"
        );
    };
    Some(format!(
        "{}/{prefix}-{}",
        base.trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    ))
}

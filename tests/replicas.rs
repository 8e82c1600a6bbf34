//! Two replicas, one store: two `serve` processes with the real models share one PostgreSQL
//! database and one S3 bucket (the SeaweedFS that `scripts/test.sh` starts). Jobs are submitted alternately to both; one replica
//! is killed with SIGKILL mid-work; the other finishes every job; every page's result is written
//! exactly once (the killed worker's leases expire and its pages are claimed again, never
//! completed twice); every webhook event reaches the receiver with one body; the killed replica
//! restarts and takes work again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http, start_server};
use serde_json::Value;

/// Every (webhook-id, body) a receiver was sent.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver on loopback.
fn receiver() -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let (mut id, mut len) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "webhook-id" => id = v.trim().to_string(),
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok() {
                    seen.lock()
                        .unwrap()
                        .push((id, String::from_utf8_lossy(&body).into()));
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (addr, got)
}

fn job_state(addr: &str, id: &str) -> Value {
    let (s, job) = http(addr, "GET", &format!("/v1/jobs/{id}"), &[], b"");
    assert_eq!(s, 200, "job {id}: {job}");
    job
}

/// Waits until every job is final on `addr`; panics on a job that did not complete.
fn wait_completed(addr: &str, ids: &[String], limit: Duration) {
    let t0 = Instant::now();
    for id in ids {
        loop {
            let job = job_state(addr, id);
            match job["state"].as_str().unwrap() {
                "completed" => break,
                "queued" | "processing" => {}
                other => panic!("job {id} ended {other}: {job}"),
            }
            assert!(t0.elapsed() < limit, "job {id} never finished: {job}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `page_completed` events per (job, document, page), with the worker that wrote each.
fn completions(addr: &str, ids: &[String]) -> BTreeMap<(String, u64, u64), Vec<String>> {
    let mut out: BTreeMap<(String, u64, u64), Vec<String>> = BTreeMap::new();
    for id in ids {
        let (_, events) = http(addr, "GET", &format!("/v1/jobs/{id}/events"), &[], b"");
        for e in events.as_array().unwrap() {
            if e["kind"] == "page_completed" {
                let d = &e["detail"];
                out.entry((
                    id.clone(),
                    d["document"].as_u64().unwrap(),
                    d["page"].as_u64().unwrap(),
                ))
                .or_default()
                .push(d["worker"].as_str().unwrap_or("").to_string());
            }
        }
    }
    out
}

fn submit(addr: &str, hook: &str, n: usize, bytes: &[u8]) -> String {
    let key = format!("replicas-{}-{n}", std::process::id());
    let (s, job) = http(
        addr,
        "POST",
        &format!("/v1/jobs?name=page-{n}.png&webhook_url=http://{hook}/hook"),
        &[("Content-Type", "image/png"), ("Idempotency-Key", &key)],
        bytes,
    );
    assert_eq!(s, 202, "{job}");
    job["id"].as_str().unwrap().to_string()
}

#[test]
fn two_replicas_share_one_queue_and_survive_a_kill() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(common::test_database_url()) else {
        return;
    };
    let Some(bucket) = common::test_s3_url("replicas") else {
        return;
    };
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("replicas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (hook, received) = receiver();
    let flags = [
        "--database-url",
        db.as_str(),
        "--object-store-url",
        bucket.as_str(),
        "--job-lease-ms",
        "2000",
        "--webhook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "--webhook-allow",
        "127.0.0.1",
    ];
    let (mut a, addr_a) = start_server(&data, &flags);
    let (mut b, addr_b) = start_server(&data, &flags);
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/phototest.png"
    ))
    .unwrap();

    const JOBS: usize = 40;
    let ids: Vec<String> = (0..JOBS)
        .map(|n| submit(if n % 2 == 0 { &addr_a } else { &addr_b }, &hook, n, &bytes))
        .collect();

    // Kill B once it has completed pages and work remains.
    let b_worker = format!("{}-", b.id());
    let t0 = Instant::now();
    let done_at_kill = loop {
        let done: Vec<&String> = ids
            .iter()
            .filter(|id| job_state(&addr_a, id)["state"] == "completed")
            .collect();
        let by_b = completions(&addr_a, &ids)
            .values()
            .flatten()
            .filter(|w| w.starts_with(&b_worker))
            .count();
        if by_b >= 2 && done.len() >= 4 {
            assert!(done.len() < JOBS, "everything finished before the kill");
            break done.len();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "B completed nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    b.kill().unwrap(); // SIGKILL, leases held
    b.wait().unwrap();

    wait_completed(&addr_a, &ids, Duration::from_secs(600));
    let writes = completions(&addr_a, &ids);
    let twice = writes.values().filter(|w| w.len() > 1).count();
    assert_eq!(writes.len(), JOBS, "one completed page per job");
    assert_eq!(twice, 0, "pages written more than once: {writes:?}");
    let lost = ids
        .iter()
        .filter(|id| job_state(&addr_a, id)["state"] != "completed")
        .count();

    // Every job's webhook event reached the receiver, and no id came with two bodies.
    let t0 = Instant::now();
    let expected: BTreeSet<String> = loop {
        let ids_sent: BTreeSet<String> = ids
            .iter()
            .flat_map(|id| {
                job_state(&addr_a, id)["webhook_deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["state"] == "delivered")
                    .map(|d| d["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        if ids_sent.len() == JOBS {
            break ids_sent;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "webhooks not all delivered"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let got = received.lock().unwrap().clone();
    let mut bodies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, body) in &got {
        bodies.entry(id.clone()).or_default().insert(body.clone());
    }
    for id in &expected {
        assert_eq!(
            bodies.get(id).map(BTreeSet::len),
            Some(1),
            "webhook {id}: {bodies:?}"
        );
    }

    // B restarts and takes work again (A stops first, so the work can only be B's).
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status();
    let _ = a.wait();
    let (mut b2, addr_b2) = start_server(&data, &flags);
    let more: Vec<String> = (JOBS..JOBS + 4)
        .map(|n| submit(&addr_b2, &hook, n, &bytes))
        .collect();
    // A document already in the bucket, by reference: no upload. It lies in the caller's own
    // area (`tenants/<tenant>/`, `_` for the anonymous caller of a server without keys).
    let key = format!(
        "{}/tenants/_/inbox/phototest.png",
        bucket
            .trim_start_matches("s3://")
            .split_once('/')
            .unwrap()
            .1
    );
    let bucket_name = bucket
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    rt.block_on(async {
        use object_store::ObjectStore;
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket_name)
            .build()
            .unwrap();
        s3.put(
            &object_store::path::Path::from(key.as_str()),
            bytes.clone().into(),
        )
        .await
        .unwrap();
    });
    let body = serde_json::json!({"documents": [
        {"name": "by-reference.png", "url": format!("{bucket}/tenants/_/inbox/phototest.png")}]});
    let (s, job) = http(
        &addr_b2,
        "POST",
        "/v1/jobs",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 202, "{job}");
    let by_ref = job["id"].as_str().unwrap().to_string();
    for url in [
        "s3://another-bucket/x.png".to_string(),
        format!("{bucket}/../x.png"),
        "http://127.0.0.1:1/x.png".to_string(),
        // outside any tenant's area
        format!("{bucket}/inbox/phototest.png"),
    ] {
        let body = serde_json::json!({"documents": [{"url": url}]});
        let (s, p) = http(
            &addr_b2,
            "POST",
            "/v1/jobs",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(
            (s, p["code"].as_str()),
            (422, Some("invalid_option")),
            "{url}: {p}"
        );
    }
    let more: Vec<String> = more.into_iter().chain([by_ref]).collect();
    wait_completed(&addr_b2, &more, Duration::from_secs(300));
    let (_, result) = http(
        &addr_b2,
        "GET",
        &format!("/v1/jobs/{}/result", more[4]),
        &[],
        b"",
    );
    assert!(
        result["documents"][0]["text"].as_str().unwrap().len() > 20,
        "{result}"
    );
    let b2_worker = format!("{}-", b2.id());
    assert!(
        completions(&addr_b2, &more)
            .values()
            .flatten()
            .all(|w| w.starts_with(&b2_worker))
    );
    eprintln!(
        "replicas: {JOBS} jobs submitted, {done_at_kill} completed before B's kill -9, \
         {} completed, {lost} lost, {twice} pages written twice, {} webhook events delivered \
         ({} requests received)",
        JOBS - lost,
        expected.len(),
        got.len()
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &b2.id().to_string()])
        .status();
    let _ = b2.wait();
    let _ = std::fs::remove_dir_all(&data);
}

/// Issue 26, item 7, on both stores: a rolling change of a profile's model set. Replica A serves
/// `x` on PP-OCRv4, replica B (the new release) `x` on PP-OCRv6; jobs are created on both while
/// the queue is paused, then it resumes. Every job completes, and each on the model set it was
/// created with: its pages are run only by the replica that serves its pinned profile (before,
/// either replica took any page, so jobs ran on whichever model set claimed them, and a replica
/// without the profile failed the page for good).
#[test]
fn replicas_with_different_profiles_finish_every_page() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/phototest.png"
    ))
    .unwrap();
    let postgres = match (
        rt.block_on(common::test_database_url()),
        common::test_s3_url("profiles"),
    ) {
        (Some(db), Some(s3)) => Some(vec![
            "--database-url".to_string(),
            db,
            "--object-store-url".to_string(),
            s3,
        ]),
        _ => None,
    };
    for flags in [Some(Vec::new()), postgres].into_iter().flatten() {
        let store = if flags.is_empty() {
            "sqlite"
        } else {
            "postgres"
        };
        let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("profiles-{store}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let with = |profile: &'static str| {
            let mut f: Vec<&str> = flags.iter().map(String::as_str).collect();
            f.extend(["--profile", profile]);
            f
        };
        let (mut a, addr_a) = start_server(&data, &with("x:model=v4"));
        let json = [("Content-Type", "application/json")];
        let (s, v) = http(&addr_a, "POST", "/v1/admin/pause", &json, b"{}");
        assert_eq!(s, 200, "{v}");
        let (mut b, addr_b) = start_server(&data, &with("x:model=v6"));
        let post = |addr: &str| {
            let (s, job) = http(
                addr,
                "POST",
                "/v1/jobs",
                &[("Content-Type", "image/png")],
                &bytes,
            );
            assert_eq!(s, 202, "{job}");
            job["id"].as_str().unwrap().to_string()
        };
        let on_a: Vec<String> = (0..3).map(|_| post(&addr_a)).collect();
        let on_b: Vec<String> = (0..3).map(|_| post(&addr_b)).collect();
        let (s, v) = http(&addr_b, "POST", "/v1/admin/resume", &json, b"{}");
        assert_eq!(s, 200, "{v}");
        let all: Vec<String> = on_a.iter().chain(&on_b).cloned().collect();
        wait_completed(&addr_a, &all, Duration::from_secs(300));
        let writes = completions(&addr_a, &all);
        let (wa, wb) = (format!("{}-", a.id()), format!("{}-", b.id()));
        for ((job, ..), workers) in &writes {
            let want = if on_a.contains(job) { &wa } else { &wb };
            assert!(
                workers.len() == 1 && workers[0].starts_with(want.as_str()),
                "{store}: job {job} (created on {}) completed by {workers:?}",
                if on_a.contains(job) { "A, v4" } else { "B, v6" }
            );
        }
        assert_eq!(writes.len(), all.len(), "{store}: {writes:?}");
        eprintln!("{store}: 6 jobs, each completed by the replica serving its profile");
        for c in [&mut a, &mut b] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&data);
    }
}

/// Issue 26, item 5: a second replica whose clock runs 8 days ahead (started under libfaketime,
/// Debian's `faketime`) joins a PostgreSQL store holding a job that finished minutes ago. It
/// measures its clock against the store's, says they disagree, runs on the store's time and
/// refuses to sweep: the job is still there (before, its first sweep deleted every job
/// finished "more than 7 days ago" by its clock, which was all of them).
#[test]
fn a_replica_with_a_clock_8_days_ahead_deletes_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(common::test_database_url()) else {
        return;
    };
    let Some(bucket) = common::test_s3_url("clock") else {
        return;
    };
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("clock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let flags = [
        "--database-url",
        db.as_str(),
        "--object-store-url",
        bucket.as_str(),
    ];
    let (mut a, addr_a) = start_server(&data, &flags);
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/phototest.png"
    ))
    .unwrap();
    let (s, job) = http(
        &addr_a,
        "POST",
        "/v1/jobs",
        &[("Content-Type", "image/png")],
        &bytes,
    );
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    wait_completed(&addr_a, std::slice::from_ref(&id), Duration::from_secs(120));

    let (mut b, addr_b, log) =
        common::start_server_via(&["faketime", "-f", "+8d"], &data, &flags, &[]);
    // Its first sweep runs as it starts listening; wait for its verdict.
    let t0 = Instant::now();
    while !log.lock().unwrap().contains("refused to sweep") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no sweep verdict from the skewed replica: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = log.lock().unwrap().clone();
    let why = said
        .lines()
        .find(|l| l.contains("disagrees with the store's") && l.contains("offset_ms"))
        .unwrap_or_else(|| panic!("the skewed replica does not say why: {said}"));
    eprintln!("skewed replica: {why}");
    // Its measured offset is about minus 8 days.
    let offset: i64 = why
        .split("offset_ms=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !(c == '-' || c.is_ascii_digit())).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {why}"));
    assert!(
        (offset + 8 * 86_400_000).abs() < 60_000,
        "offset {offset} ms, not -8 days"
    );
    // The job and its result are still there, seen from either replica.
    for addr in [&addr_a, &addr_b] {
        let (s, v) = http(addr, "GET", &format!("/v1/jobs/{id}/result"), &[], b"");
        assert_eq!(s, 200, "{v}");
    }
    // The skewed replica runs on the store's time: a job it takes completes normally.
    let (s, job) = http(
        &addr_b,
        "POST",
        "/v1/jobs",
        &[("Content-Type", "image/png")],
        &bytes,
    );
    assert_eq!(s, 202, "{job}");
    let second = job["id"].as_str().unwrap().to_string();
    wait_completed(
        &addr_b,
        std::slice::from_ref(&second),
        Duration::from_secs(120),
    );
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&data);
}

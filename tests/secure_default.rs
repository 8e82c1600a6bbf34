//! Secure by default (issue 26): the regressions of what a careful operator found on day one,
//! each reproducing its trigger. Through the router over the real scheduler (fake models: these
//! test admission, keys and tenancy, not OCR), the job runner, and each real store: SQLite and
//! PostgreSQL for the jobs and keys, a local directory and S3 (SeaweedFS) for the documents.
//! The real binary's startup refusal and bootstrap key are in `startup_*` below.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use common::router::{TempDir, get, png, req, send};
use ocr_server::api::{Api, ApiConfig};
use ocr_server::auth::{Auth, AuthMode, hash_key};
use ocr_server::engine::ModelKind;
use ocr_server::engine::fake::FakeFactory;
use ocr_server::jobs::documents::DocumentStore;
use ocr_server::jobs::model::ApiKey;
use ocr_server::jobs::runner::{Runner, RunnerConfig};
use ocr_server::jobs::service::{JobService, ServiceConfig};
use ocr_server::jobs::store::JobStore;
use ocr_server::scheduler::{Scheduler, SchedulerConfig};
use serde_json::Value;

struct Fixture {
    router: Router,
    store: Arc<dyn JobStore>,
    documents: Arc<DocumentStore>,
    scheduler: Arc<Scheduler>,
    runner: Arc<Runner>,
    dir: TempDir,
}

/// Which job store and document store a fixture runs on.
#[derive(Debug, Clone, Copy)]
enum Stores {
    SqliteFiles,
    PostgresS3,
}

/// A server over `stores` with `--auth auto`; None when the services are skipped on purpose.
async fn fixture(stores: Stores) -> Option<Fixture> {
    let dir = std::env::temp_dir().join(format!("ocr-secure-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (store, documents_url): (Arc<dyn JobStore>, String) = match stores {
        Stores::SqliteFiles => (
            ocr_server::jobs::store::open(&format!("sqlite://{}", dir.join("jobs.db").display()))
                .await
                .unwrap(),
            format!("file://{}/documents", dir.display()),
        ),
        Stores::PostgresS3 => {
            let db = common::test_database_url().await?;
            let s3 = common::test_s3_url("secure")?;
            (ocr_server::jobs::store::open(&db).await.unwrap(), s3)
        }
    };
    Some(fixture_over(store, &documents_url, dir).await)
}

/// The fixture over a store and a document store already chosen.
async fn fixture_over(store: Arc<dyn JobStore>, documents_url: &str, dir: PathBuf) -> Fixture {
    let mut sc = SchedulerConfig::for_model(ModelKind::V6);
    sc.base.det_resize.limit_side_px = 32;
    let scheduler = Arc::new(Scheduler::start(sc, Arc::new(FakeFactory::default())).unwrap());
    scheduler.wait_ready(Duration::from_secs(60)).unwrap();
    let documents = Arc::new(DocumentStore::open(documents_url, 64 << 20).unwrap());
    let runner = Runner::new(
        store.clone(),
        scheduler.clone(),
        documents.clone(),
        RunnerConfig {
            max_in_flight: 2,
            poll: Duration::from_millis(20),
            ..RunnerConfig::default()
        },
    );
    runner.start();
    let router = router_over(&store, &scheduler, &runner);
    Fixture {
        router,
        store,
        documents,
        scheduler,
        runner,
        dir: TempDir(dir),
    }
}

/// [`fixture`] with a short lease (the heartbeat renews every third of it), for the tests of
/// what the queue's writes wait on.
async fn fixture_with_lease(stores: Stores, lease: Duration) -> Option<Fixture> {
    let f = fixture(stores).await?;
    f.runner.stop_claiming();
    let runner = Runner::new(
        f.store.clone(),
        f.scheduler.clone(),
        f.documents.clone(),
        RunnerConfig {
            max_in_flight: 4,
            poll: Duration::from_millis(20),
            lease,
            ..RunnerConfig::default()
        },
    );
    runner.start();
    let router = router_over(&f.store, &f.scheduler, &runner);
    Some(Fixture {
        router,
        runner,
        ..f
    })
}

/// A fresh API (a fresh `Auth`, as after a restart) over the fixture's store.
fn router_over(
    store: &Arc<dyn JobStore>,
    scheduler: &Arc<Scheduler>,
    runner: &Arc<Runner>,
) -> Router {
    let jobs = JobService::new(runner.clone(), ServiceConfig::default());
    let auth = Auth::new(AuthMode::Auto, Some(store.clone()), false);
    Api::with_jobs_and_auth(scheduler.clone(), ApiConfig::default(), jobs, auth).router()
}

async fn key(store: &Arc<dyn JobStore>, name: &str, tenant: &str, scopes: &[&str]) -> String {
    let k = format!("ocr_test_{name}_{}", uuid::Uuid::new_v4().simple());
    store
        .create_key(&ApiKey::new(name, tenant, hash_key(&k), scopes, 1))
        .await
        .unwrap();
    k
}

fn pause(key: Option<&str>) -> Request<Body> {
    req("POST", "/v1/admin/pause", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap()
}

async fn wait_final(router: &Router, id: &str, key: &str) -> Value {
    for _ in 0..3000 {
        let (s, _, job) = send(router, get(&format!("/v1/jobs/{id}"), Some(key))).await;
        assert_eq!(s, StatusCode::OK, "{job}");
        if ["completed", "failed", "partially_completed", "needs_review"]
            .contains(&job["state"].as_str().unwrap())
        {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never finished");
}

/// Until `f` answers `want` (at most `within`); the last answer.
async fn until_status(
    router: &Router,
    make: impl Fn() -> Request<Body>,
    want: u16,
    within: Duration,
) -> u16 {
    let start = Instant::now();
    loop {
        let s = send(router, make()).await.0.as_u16();
        if s == want || start.elapsed() > within {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 26's first finding: with `--auth auto`, revoking every key opened the server to
/// anonymous callers (every tenant's jobs, admin routes). Now it locks, here and after a
/// restart.
async fn revoking_every_key_locks_the_server(stores: Stores) {
    let Some(f) = fixture(stores).await else {
        return;
    };
    // No key yet: a fresh local server is open (loopback only; see `startup_*`).
    assert_eq!(
        send(&f.router, get("/v1/jobs", None)).await.0,
        StatusCode::OK
    );
    let alice = key(&f.store, "alice", "alice", &["ocr", "jobs"]).await;
    let _bob = key(&f.store, "bob", "bob", &["ocr", "jobs"]).await;
    assert_eq!(
        until_status(
            &f.router,
            || get("/v1/jobs", None),
            401,
            Duration::from_secs(5)
        )
        .await,
        401,
        "keys exist: anonymous refused"
    );
    let (s, _, job) = send(
        &f.router,
        req("POST", "/v1/jobs", Some(&alice))
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from(png(1)))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    // Revoke both, as when rotating a leaked key; wait out every cache.
    assert!(f.store.revoke_key("alice", 2).await.unwrap());
    assert!(f.store.revoke_key("bob", 2).await.unwrap());
    tokio::time::sleep(ocr_server::auth::CACHE_TTL + Duration::from_millis(500)).await;
    let fresh = router_over(&f.store, &f.scheduler, &f.runner);
    for router in [&f.router, &fresh] {
        for _ in 0..3 {
            let (s, _, p) = send(router, get("/v1/jobs", None)).await;
            assert_eq!(
                (s.as_u16(), p["code"].as_str()),
                (401, Some("unauthorized")),
                "{p}"
            );
            let (s, _, p) = send(router, pause(None)).await;
            assert_eq!(s.as_u16(), 401, "{p}");
            let (s, _, p) = send(router, get("/v1/jobs", Some(&alice))).await;
            assert_eq!(s.as_u16(), 401, "a revoked key: {p}");
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    // A new key opens it for its holder only.
    let carol = key(&f.store, "carol", "carol", &["jobs"]).await;
    let (s, _, list) = send(&fresh, get("/v1/jobs", Some(&carol))).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(
        list["jobs"].as_array().unwrap().is_empty(),
        "carol sees no one's jobs: {list}"
    );
    drop(f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_every_key_locks_the_server_sqlite() {
    revoking_every_key_locks_the_server(Stores::SqliteFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_every_key_locks_the_server_postgres() {
    revoking_every_key_locks_the_server(Stores::PostgresS3).await;
}

/// Issue 26's second finding: Bob named Alice's upload by URL and read her text. Now a reference
/// reaches only the caller's own `tenants/<tenant>/` area, and everything else (Alice's upload,
/// Alice's area, a path outside the store, a missing object) gets one answer that names no path
/// of the server's.
async fn references_stay_inside_the_tenant(stores: Stores) {
    let Some(f) = fixture(stores).await else {
        return;
    };
    let alice = key(&f.store, "alice", "alice", &["ocr", "jobs"]).await;
    let bob = key(&f.store, "bob", "bob", &["ocr", "jobs"]).await;
    let base = f.documents.base().to_string();
    let (s, _, job) = send(
        &f.router,
        req("POST", "/v1/jobs", Some(&alice))
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from(png(2)))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let alice_job = job["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_final(&f.router, &alice_job, &alice).await["state"],
        "completed"
    );
    // Documents each tenant keeps in its own area.
    let put = |rel: &str, bytes: Vec<u8>| {
        let docs = f.documents.clone();
        let rel = rel.to_string();
        async move { write_object(&docs, &rel, bytes).await }
    };
    put("tenants/alice/in/secret.png", png(3)).await;
    put("tenants/bob/in/mine.png", png(1)).await;

    let reference = |url: String| {
        req("POST", "/v1/jobs", Some(&bob))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({"documents": [{"url": url}]}).to_string(),
            ))
            .unwrap()
    };
    let mut answers = Vec::new();
    for url in [
        format!("{base}/uploads/alice/{alice_job}/0.bin"),
        format!("{base}/{alice_job}/0.bin"),
        format!("{base}/tenants/alice/in/secret.png"),
        format!("{base}/tenants/bob/in/../../alice/in/secret.png"),
        format!("{base}/tenants/bob/in/missing.png"),
        format!("{base}/tenants/bob"),
        "file:///etc/passwd".to_string(),
        "s3://another-bucket/tenants/bob/x.png".to_string(),
    ] {
        let (s, _, p) = send(&f.router, reference(url.clone())).await;
        let detail = p["detail"]
            .as_str()
            .unwrap_or_default()
            .replace(&url, "URL");
        assert_eq!(
            (s.as_u16(), p["code"].as_str()),
            (422, Some("invalid_option")),
            "{url}: {p}"
        );
        let server_path = base
            .trim_start_matches("file://")
            .trim_start_matches("s3://");
        assert!(
            !detail.contains(server_path),
            "{url}: the body names the store: {p}"
        );
        answers.push(detail);
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "one answer for all of them: {answers:?}");
    // Bob's own document works, and his job reads his text, not Alice's.
    let (s, _, job) = send(
        &f.router,
        reference(format!("{base}/tenants/bob/in/mine.png")),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let bob_job = job["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_final(&f.router, &bob_job, &bob).await["state"],
        "completed"
    );
    let (_, _, result) = send(
        &f.router,
        get(&format!("/v1/jobs/{bob_job}/result"), Some(&bob)),
    )
    .await;
    let lines = result["documents"][0]["pages"][0]["lines"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(lines, 1, "bob's one-bar page: {result}");
    // Uploads land under the uploader's tenant.
    let (_, _, a) = send(
        &f.router,
        get(&format!("/v1/jobs/{alice_job}"), Some(&alice)),
    )
    .await;
    assert_eq!(a["state"], "completed");
    assert!(
        object_exists(&f.documents, &format!("uploads/alice/{alice_job}/0.bin")).await,
        "alice's upload is in her area"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_stay_inside_the_tenant_sqlite_files() {
    references_stay_inside_the_tenant(Stores::SqliteFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_stay_inside_the_tenant_postgres_s3() {
    references_stay_inside_the_tenant(Stores::PostgresS3).await;
}

/// Writes an object at `rel` under the document store's base, as a tenant's pipeline would.
async fn write_object(docs: &DocumentStore, rel: &str, bytes: Vec<u8>) {
    let base = docs.base();
    if let Some(root) = base.strip_prefix("file://") {
        let path = PathBuf::from(root).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        return;
    }
    let (bucket, prefix) = base.trim_start_matches("s3://").split_once('/').unwrap();
    use object_store::ObjectStore;
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    s3.put(
        &object_store::path::Path::from(format!("{prefix}/{rel}")),
        bytes.into(),
    )
    .await
    .unwrap();
}

async fn object_exists(docs: &DocumentStore, rel: &str) -> bool {
    docs.get(&format!("{}/{rel}", docs.base())).await.is_ok()
}

/// Browser safety through the router: a foreign Host (DNS rebinding), a cross-site Origin, an
/// HTML form's POST are refused before authentication; every answer carries nosniff and
/// refuses framing. The same in a real Chromium is in `tests/review_desk.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_cannot_reach_in_from_other_sites() {
    let Some(f) = fixture(Stores::SqliteFiles).await else {
        return;
    };
    let with = |method: &str, uri: &str, pairs: &[(&str, &str)]| {
        let mut r = req(method, uri, None);
        for (k, v) in pairs {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).unwrap()
    };
    // No key exists: this is the open local server a web page would attack.
    for (what, request) in [
        (
            "rebinding",
            with("GET", "/v1/jobs", &[("host", "evil.example:8080")]),
        ),
        (
            "cross-site read",
            with(
                "GET",
                "/v1/jobs",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "https://evil.example"),
                ],
            ),
        ),
        (
            "cross-site simple POST",
            with(
                "POST",
                "/v1/admin/pause",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "https://evil.example"),
                    ("content-type", "text/plain"),
                ],
            ),
        ),
        (
            "a same-site form",
            with(
                "POST",
                "/v1/admin/pause",
                &[
                    ("host", "localhost:8080"),
                    ("sec-fetch-mode", "navigate"),
                    ("sec-fetch-site", "same-site"),
                ],
            ),
        ),
        (
            "sandboxed frame",
            with(
                "DELETE",
                "/v1/jobs/x",
                &[("host", "localhost:8080"), ("origin", "null")],
            ),
        ),
    ] {
        let (s, h, p) = send(&f.router, request).await;
        assert_eq!(
            (s.as_u16(), p["code"].as_str()),
            (403, Some("foreign_origin")),
            "{what}: {p}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    }
    let (_, _, pauses) = send(&f.router, get("/v1/admin/pauses", None)).await;
    assert_eq!(
        pauses["paused"].as_array().map(Vec::len),
        Some(0),
        "{pauses}"
    );
    // The server's own page, and programs, still work.
    let (s, h, _) = send(
        &f.router,
        with("GET", "/review", &[("host", "127.0.0.1:8080")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"),
        "{csp}"
    );
    let (s, h, p) = send(
        &f.router,
        with(
            "GET",
            "/v1/jobs",
            &[
                ("host", "localhost:8080"),
                ("origin", "http://localhost:8080"),
                ("sec-fetch-site", "same-origin"),
            ],
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], "frame-ancestors 'none'");
    let (s, _, p) = send(&f.router, with("GET", "/nope", &[])).await;
    assert_eq!(s.as_u16(), 404, "{p}");
}

/// `serve` on an address other machines reach, with `--auth auto` and no key, refuses to start
/// (before loading any model); with a bootstrap key from a secret file it starts locked, and the
/// bootstrap key is an admin's.
#[test]
fn startup_refuses_an_exposed_server_without_keys_and_takes_a_bootstrap_key() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir(std::env::temp_dir().join(format!("ocr-startup-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let serve = |extra: &[&str], envs: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_ocr-server"))
            .args([
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--cls-workers",
                "0",
            ])
            .arg("--data-dir")
            .arg(&dir.0)
            .args(extra)
            .envs(envs.iter().copied())
            .env_remove("OCR_BOOTSTRAP_KEY")
            .env_remove("OCR_AUTH")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = serve(&[], &[]).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("refusing to serve on 0.0.0.0 with no API key"),
        "{said}"
    );
    // A too-short bootstrap key is refused too.
    let short = dir.0.join("short.key");
    std::fs::write(&short, "abc\n").unwrap();
    let out = serve(&["--bootstrap-key-file", short.to_str().unwrap()], &[])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 characters"));

    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let file = dir.0.join("bootstrap.key");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let mut child = serve(&[], &[("OCR_BOOTSTRAP_KEY_FILE", file.to_str().unwrap())]);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut said = String::new();
    let port = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "server exited: {said}"
        );
        said.push_str(&line);
        if let Some(rest) = line
            .trim()
            .strip_prefix("ocr-server: listening on http://0.0.0.0:")
        {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    assert!(
        said.contains("stored the bootstrap key as \"bootstrap\""),
        "{said}"
    );
    assert!(!said.contains(&secret), "the key is never logged");
    let addr = format!("127.0.0.1:{port}");
    let (s, p) = common::http(&addr, "GET", "/v1/jobs", &[], b"");
    assert_eq!(s, 401, "{p}");
    let bearer = format!("Bearer {secret}");
    let (s, p) = common::http(
        &addr,
        "GET",
        "/v1/admin/pauses",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(s, 200, "the bootstrap key is an admin's: {p}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Slowloris (issue 26, item 8): one byte every second never trips the per-frame body timeout
/// (2 s here), but the body falls under the minimum rate once the grace period (the body
/// timeout) has passed, and is cut; the answer is a 400. A body at a fair rate passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_at_the_minimum_rate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(f) = fixture(Stores::SqliteFiles).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ocr_server::api::serve::HttpLimits {
        body_timeout: Duration::from_secs(2),
        body_min_rate: 1000,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ocr_server::api::serve::serve(
        listener,
        f.router.clone(),
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    let body = png(1);
    // A job upload's request head, on a new connection.
    let upload = || async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s
    };
    let s = upload().await;
    // One byte a second, while reading whatever comes back.
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).to_string()
    });
    let mut sent = 0;
    while sent < 30 && !reader.is_finished() {
        if wr.write_all(&body[sent..sent + 1]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the server never answered a trickling body")
        .unwrap();
    assert!(
        sent < 30,
        "30 bytes at 1 byte/s were all accepted: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("slower than 1000 bytes per second"),
        "{answer}"
    );
    // A whole body sent at once is served.
    let mut s = upload().await;
    s.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 202"), "{got}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// The queue's writes never wait behind reads (issue 26, item 4): bulk pages run under a 900 ms
/// lease (renewed every 300 ms) while eight clients flood the store with job listings, queue
/// reports and random bearer tokens (each an unknown-key lookup). No lease expires, no page
/// runs twice, every job completes.
async fn a_read_flood_does_not_starve_the_queue(stores: Stores) {
    const JOBS: usize = 200;
    let Some(f) = fixture_with_lease(stores, Duration::from_millis(900)).await else {
        return;
    };
    let k = key(&f.store, "bulk", "bulk", &["ocr", "jobs"]).await;
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..8 {
        let (router, stop, k) = (f.router.clone(), stop.clone(), k.clone());
        flood.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = match (i + n) % 3 {
                    0 => get("/v1/jobs?limit=500", Some(&k)),
                    1 => get("/v1/queue", Some(&k)),
                    _ => get(
                        "/v1/jobs",
                        Some(&format!("ocr_{}", uuid::Uuid::new_v4().simple())),
                    ),
                };
                let _ = send(&router, r).await;
                n += 1;
            }
            n
        }));
    }
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        let (s, _, job) = send(
            &f.router,
            req("POST", "/v1/jobs", Some(&k))
                .header(header::CONTENT_TYPE, "image/png")
                .body(Body::from(png(4)))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(wait_final(&f.router, id, &k).await["state"], "completed");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for t in flood {
        requests += t.await.unwrap();
    }
    let mut expired = 0;
    for id in &ids {
        let (_, _, events) = send(&f.router, get(&format!("/v1/jobs/{id}/events"), Some(&k))).await;
        expired += events.to_string().matches("lease_expired").count();
        let (_, _, job) = send(&f.router, get(&format!("/v1/jobs/{id}"), Some(&k))).await;
        for p in job["documents"][0]["pages"].as_array().unwrap() {
            assert_eq!(p["attempts"], 1, "a page ran twice: {job}");
        }
    }
    eprintln!(
        "{stores:?}: {requests} flood requests in {:.1} s while {JOBS} jobs of one 4-line page \
         ran; {expired} leases expired",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(expired, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_flood_does_not_starve_the_queue_sqlite() {
    a_read_flood_does_not_starve_the_queue(Stores::SqliteFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_flood_does_not_starve_the_queue_postgres() {
    a_read_flood_does_not_starve_the_queue(Stores::PostgresS3).await;
}

/// Issue 26, item 9, on both stores: storage quotas per tenant. Alice may store 3 jobs; her
/// fourth is 429 `storage_quota_exceeded` (jobs). Bob's job of four documents would pass the
/// byte quota (3.5 documents' worth) and is refused whole (bytes), nothing of it stored; his
/// one-document job is accepted: one tenant's use never counts against another's.
async fn storage_quotas_are_per_tenant(stores: Stores) {
    let Some(f) = fixture(stores).await else {
        return;
    };
    let doc = png(1);
    let size = doc.len() as u64;
    let jobs = JobService::new(
        f.runner.clone(),
        ServiceConfig {
            tenant_max_jobs: 3,
            tenant_max_stored_bytes: size * 7 / 2,
            ..ServiceConfig::default()
        },
    );
    let auth = Auth::new(AuthMode::Auto, Some(f.store.clone()), false);
    let router =
        Api::with_jobs_and_auth(f.scheduler.clone(), ApiConfig::default(), jobs, auth).router();
    let alice = key(&f.store, "alice", "alice", &["ocr", "jobs"]).await;
    let bob = key(&f.store, "bob", "bob", &["ocr", "jobs"]).await;
    let raw = |key: &str| {
        req("POST", "/v1/jobs", Some(key))
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from(doc.clone()))
            .unwrap()
    };
    for n in 0..3 {
        let (s, _, v) = send(&router, raw(&alice)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "alice's job {n}: {v}");
    }
    let (s, _, v) = send(&router, raw(&alice)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some("storage_quota_exceeded")
        ),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("3 jobs"), "{v}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
    let four = serde_json::json!({"documents": (0..4).map(|i| serde_json::json!({"name": format!("d{i}"), "data": b64})).collect::<Vec<_>>()});
    let (s, _, v) = send(
        &router,
        req("POST", "/v1/jobs", Some(&bob))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(four.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some("storage_quota_exceeded")
        ),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("bytes"), "{v}");
    assert_eq!(f.store.tenant_usage("bob").await.unwrap(), (0, 0));
    let (s, _, v) = send(&router, raw(&bob)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(f.store.tenant_usage("bob").await.unwrap(), (1, size));
    assert_eq!(f.store.tenant_usage("alice").await.unwrap(), (3, 3 * size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_quotas_are_per_tenant_sqlite_files() {
    storage_quotas_are_per_tenant(Stores::SqliteFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_quotas_are_per_tenant_postgres_s3() {
    storage_quotas_are_per_tenant(Stores::PostgresS3).await;
}

/// Issue 26, item 10: tags are each tenant's own names. An admin pauses alice's tag `x`:
/// alice's `x` job waits while bob's `x` job and alice's `y` job run; bob's `/v1/queue` does
/// not show alice's pause (nor her tag's name), alice's and the admin's do; resuming it runs
/// alice's job. Before, a pause named a tag of every tenant, and `/v1/queue` listed every
/// paused tag to any key with the `ocr` scope.
async fn pauses_and_queue_views_are_per_tenant(stores: Stores) {
    let Some(f) = fixture(stores).await else {
        return;
    };
    let admin = key(&f.store, "ops", "ops", &["admin"]).await;
    let alice = key(&f.store, "alice", "alice", &["ocr", "jobs"]).await;
    let bob = key(&f.store, "bob", "bob", &["ocr", "jobs"]).await;
    let pause_body = r#"{"tenant": "alice", "tag": "x"}"#;
    let admin_post = |path: &str| {
        req("POST", path, Some(&admin))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(pause_body))
            .unwrap()
    };
    let (s, _, v) = send(&f.router, admin_post("/v1/admin/pause")).await;
    assert_eq!(
        (s, v["paused"].clone()),
        (StatusCode::OK, serde_json::json!(["alice:x"]))
    );
    let submit = |key: &str, tag: &str| {
        req("POST", &format!("/v1/jobs?tag={tag}"), Some(key))
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from(png(1)))
            .unwrap()
    };
    let mut ids = Vec::new();
    for (k, tag) in [(&alice, "x"), (&bob, "x"), (&alice, "y")] {
        let (s, _, v) = send(&f.router, submit(k, tag)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        wait_final(&f.router, &ids[1], &bob).await["state"],
        "completed"
    );
    assert_eq!(
        wait_final(&f.router, &ids[2], &alice).await["state"],
        "completed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, job) = send(
        &f.router,
        get(&format!("/v1/jobs/{}", ids[0]), Some(&alice)),
    )
    .await;
    assert_eq!(job["state"], "queued", "alice's x is paused: {job}");
    for (who, k, want) in [
        ("bob", &bob, serde_json::json!([])),
        ("alice", &alice, serde_json::json!(["alice:x"])),
        ("admin", &admin, serde_json::json!(["alice:x"])),
    ] {
        let (s, _, q) = send(&f.router, get("/v1/queue", Some(k))).await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(q["jobs"]["paused"], want, "{who}'s view: {q}");
    }
    let (s, _, v) = send(&f.router, admin_post("/v1/admin/resume")).await;
    assert_eq!(
        (s, v["paused"].clone()),
        (StatusCode::OK, serde_json::json!([]))
    );
    assert_eq!(
        wait_final(&f.router, &ids[0], &alice).await["state"],
        "completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_and_queue_views_are_per_tenant_sqlite_files() {
    pauses_and_queue_views_are_per_tenant(Stores::SqliteFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_and_queue_views_are_per_tenant_postgres_s3() {
    pauses_and_queue_views_are_per_tenant(Stores::PostgresS3).await;
}

/// A TCP proxy in front of PostgreSQL that, once armed, loses the answer to the `COMMIT` of
/// the first transaction that inserted a job: it forwards the `COMMIT`, lets the server
/// commit, then closes both sides before the answer comes back. What a replica sees when its
/// connection drops at the worst moment (a network cut, a failover).
struct CommitCutter {
    url: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<std::sync::atomic::AtomicUsize>,
}

async fn commit_cutter(db: &str) -> CommitCutter {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // postgres://USER@HOST:PORT/DB
    let (scheme_user, rest) = db.split_once('@').unwrap();
    let (target, path) = rest.split_once('/').unwrap();
    let target = target.to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{scheme_user}@{}/{path}", listener.local_addr().unwrap());
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cut = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (a, c) = (armed.clone(), cut.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (armed, cut) = (a.clone(), c.clone());
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                let mut inserted = false;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let seen = &buf[..n];
                    let has = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
                    inserted |= has(b"INSERT INTO jobs");
                    if inserted && has(b"COMMIT") && armed.swap(false, Ordering::SeqCst) {
                        // The answer's way back is closed first, then PostgreSQL gets the
                        // COMMIT and commits; the client never hears of it.
                        back.abort();
                        let _ = sw.write_all(seen).await;
                        cut.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        return;
                    }
                    if sw.write_all(seen).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    CommitCutter { url, armed, cut }
}

/// Issue 26, item 10: a job whose commit succeeded but whose answer was lost was answered with
/// an error and its documents deleted, though the job existed (its pages then failed). Now
/// the service looks the job up after a store error and answers 202 with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_commit_answer_is_lost_is_kept_whole() {
    let Some(db) = common::test_database_url().await else {
        return;
    };
    let Some(s3) = common::test_s3_url("ambiguous") else {
        return;
    };
    let cutter = commit_cutter(&db).await;
    let store = ocr_server::jobs::store::open(&cutter.url).await.unwrap();
    let dir = std::env::temp_dir().join(format!("ocr-ambiguous-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = fixture_over(store, &s3, dir).await;
    let k = key(&f.store, "alice", "alice", &["ocr", "jobs"]).await;
    cutter
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, _, v) = send(
        &f.router,
        req("POST", "/v1/jobs", Some(&k))
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from(png(1)))
            .unwrap(),
    )
    .await;
    assert_eq!(
        cutter.cut.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the proxy never cut a commit: nothing was tested ({s}: {v})"
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap();
    let job = wait_final(&f.router, id, &k).await;
    assert_eq!(job["state"], "completed", "{job}");
    let (s, _, r) = send(&f.router, get(&format!("/v1/jobs/{id}/result"), Some(&k))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["documents"][0]["pages"][0].is_object(), "{r}");
}

/// Keys can expire (`keys create --expires-in-days`): past its expiry, on the store's clock,
/// a key is refused like a revoked one; before it, it works.
async fn an_expired_key_is_refused(stores: Stores) {
    let Some(f) = fixture(stores).await else {
        return;
    };
    let now = ocr_server::jobs::now_ms();
    let mut keys = Vec::new();
    for (name, expires) in [("past", now - 1_000), ("future", now + 3_600_000)] {
        let k = format!("ocr_test_{name}_{}", uuid::Uuid::new_v4().simple());
        let mut record = ApiKey::new(name, name, hash_key(&k), &["ocr", "jobs"], now - 5_000);
        record.expires_ms = Some(expires);
        f.store.create_key(&record).await.unwrap();
        keys.push(k);
    }
    let (s, _, v) = send(&f.router, get("/v1/jobs", Some(&keys[0]))).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");
    let (s, _, v) = send(&f.router, get("/v1/jobs", Some(&keys[1]))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_sqlite() {
    an_expired_key_is_refused(Stores::SqliteFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_postgres() {
    an_expired_key_is_refused(Stores::PostgresS3).await;
}

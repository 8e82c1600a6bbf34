//! API keys, scopes, tenants, rate limits, quotas and fair share, through the router over the
//! real scheduler (fake models: these are tests of admission and scheduling), a real SQLite job
//! store and the job runner. The real binary with `keys create` on a shared PostgreSQL store is in
//! `tests/hostile.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::router::{TempDir, get, png, req, send};
use ocr_server::api::{Api, ApiConfig};
use ocr_server::auth::{Auth, AuthMode, hash_key};
use ocr_server::engine::ModelKind;
use ocr_server::engine::fake::FakeFactory;
use ocr_server::jobs::documents::DocumentStore;
use ocr_server::jobs::model::ApiKey;
use ocr_server::jobs::runner::{Runner, RunnerConfig};
use ocr_server::jobs::service::{JobService, ServiceConfig};
use ocr_server::jobs::sqlite::SqliteStore;
use ocr_server::jobs::store::JobStore;
use ocr_server::scheduler::{Scheduler, SchedulerConfig};
use serde_json::Value;

struct Fixture {
    router: Router,
    store: Arc<dyn JobStore>,
    _runner: Arc<Runner>,
    _dir: TempDir,
}

fn fixture(job_concurrency: usize) -> Fixture {
    let dir = std::env::temp_dir().join(format!("ocr-tenants-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut sc = SchedulerConfig::for_model(ModelKind::V6);
    sc.base.det_resize.limit_side_px = 32;
    let scheduler = Arc::new(Scheduler::start(sc, Arc::new(FakeFactory::default())).unwrap());
    scheduler.wait_ready(Duration::from_secs(60)).unwrap();
    let store: Arc<dyn JobStore> = Arc::new(SqliteStore::open(&dir.join("jobs.db")).unwrap());
    let documents = Arc::new(
        DocumentStore::open(&format!("file://{}/documents", dir.display()), 64 << 20).unwrap(),
    );
    let runner = Runner::new(
        store.clone(),
        scheduler.clone(),
        documents,
        RunnerConfig {
            max_in_flight: job_concurrency,
            poll: Duration::from_millis(20),
            ..RunnerConfig::default()
        },
    );
    runner.start();
    let jobs = JobService::new(runner.clone(), ServiceConfig::default());
    let auth = Auth::new(AuthMode::Required, Some(store.clone()), false);
    let router = Api::with_jobs_and_auth(scheduler, ApiConfig::default(), jobs, auth).router();
    Fixture {
        router,
        store,
        _runner: runner,
        _dir: TempDir(dir),
    }
}

/// Stores a key and returns it.
async fn key(
    f: &Fixture,
    name: &str,
    tenant: &str,
    scopes: &[&str],
    tweak: fn(&mut ApiKey),
) -> String {
    let k = format!("ocr_test_{name}_{}", uuid::Uuid::new_v4().simple());
    let mut rec = ApiKey::new(name, tenant, hash_key(&k), scopes, 1);
    tweak(&mut rec);
    f.store.create_key(&rec).await.unwrap();
    k
}

fn post_png(uri: &str, key: Option<&str>, bytes: Vec<u8>) -> Request<Body> {
    req("POST", uri, key)
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from(bytes))
        .unwrap()
}

fn multipart(files: &[Vec<u8>]) -> (String, Vec<u8>) {
    let b = "tenantBoundary9";
    let mut body = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p{i}.png\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn wait_final(f: &Fixture, id: &str, key: &str) -> Value {
    for _ in 0..3000 {
        let (s, _, job) = send(&f.router, get(&format!("/v1/jobs/{id}"), Some(key))).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_and_tenant_isolation() {
    let f = fixture(2);
    let a = key(&f, "a", "acme", &["ocr", "jobs"], |_| {}).await;
    let a_review = key(&f, "a-review", "acme", &["review"], |_| {}).await;
    let b = key(&f, "b", "globex", &["jobs", "review"], |_| {}).await;
    let admin = key(&f, "root", "ops", &["admin"], |_| {}).await;

    // 401 without a key or with a wrong one; health stays open.
    let (s, h, p) = send(&f.router, get("/v1/jobs", None)).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (401, Some("unauthorized")),
        "{p}"
    );
    assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
    let (s, _, _) = send(&f.router, get("/v1/jobs", Some("ocr_nope"))).await;
    assert_eq!(s.as_u16(), 401);
    assert_eq!(
        send(&f.router, get("/health/live", None)).await.0,
        StatusCode::OK
    );
    // /metrics needs admin.
    assert_eq!(
        send(&f.router, get("/metrics", Some(&a))).await.0.as_u16(),
        403
    );
    assert_eq!(
        send(&f.router, get("/metrics", Some(&admin)))
            .await
            .0
            .as_u16(),
        200
    );
    // 403 naming the missing scope.
    let (s, _, p) = send(&f.router, post_png("/v1/ocr", Some(&b), png(1))).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (403, Some("forbidden")),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("`ocr`"), "{p}");
    // 200 with the scope.
    let (s, _, p) = send(&f.router, post_png("/v1/ocr", Some(&a), png(1))).await;
    assert_eq!(s, StatusCode::OK, "{p}");

    // A's job: invisible to B in every route (404), visible to A's other key and to admin.
    let (s, _, job) = send(&f.router, post_png("/v1/jobs", Some(&a), png(2))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait_final(&f, &id, &a).await;
    assert_eq!(done["state"], "completed", "{done}");
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("GET", format!("/v1/jobs/{id}/result")),
        ("GET", format!("/v1/jobs/{id}/events")),
        ("DELETE", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/retry")),
    ] {
        let (s, _, p) = send(
            &f.router,
            req(method, &path, Some(&b)).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(
            (s.as_u16(), p["code"].as_str()),
            (404, Some("job_not_found")),
            "{method} {path}: {p}"
        );
    }
    let review = |k: &str| {
        req("POST", &format!("/v1/jobs/{id}/review"), Some(k))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"approve": true}"#))
            .unwrap()
    };
    let (s, _, p) = send(&f.router, review(&b)).await;
    assert_eq!(s.as_u16(), 404, "B cannot review A's job: {p}");
    let (s, _, p) = send(&f.router, review(&a)).await;
    assert_eq!(s.as_u16(), 403, "A's jobs key has no review scope: {p}");
    let (s, _, list) = send(&f.router, get("/v1/jobs", Some(&b))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(list["jobs"].as_array().unwrap().is_empty(), "{list}");
    let (_, _, list) = send(&f.router, get("/v1/jobs", Some(&a_review))).await;
    assert_eq!(list["jobs"][0]["id"], id.as_str(), "{list}");
    assert_eq!(
        send(&f.router, get(&format!("/v1/jobs/{id}"), Some(&admin)))
            .await
            .0,
        StatusCode::OK
    );
    // A reviewer of the same tenant sees it (the fake models are sure of every line, so the job
    // completed and is not in review: 409, not 404).
    let (s, _, p) = send(&f.router, review(&a_review)).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (409, Some("not_in_review")),
        "{p}"
    );
    // The audit trail names the keys: the creator, and who asked for a retry.
    let retry = req("POST", &format!("/v1/jobs/{id}/retry"), Some(&a))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.router, retry).await.0, StatusCode::ACCEPTED);
    let (_, _, events) = send(&f.router, get(&format!("/v1/jobs/{id}/events"), Some(&a))).await;
    let text = events.to_string();
    assert!(
        text.contains("\"actor\":\"a\""),
        "creation by key a: {text}"
    );
    assert!(
        text.contains("\"action\":\"retry\""),
        "retry by key a: {text}"
    );

    // Idempotency keys are per tenant: one key, two tenants, two payloads, two jobs.
    let idem = |k: &str, bars: u32| {
        req("POST", "/v1/jobs", Some(k))
            .header(header::CONTENT_TYPE, "image/png")
            .header("idempotency-key", "shared-key")
            .body(Body::from(png(bars)))
            .unwrap()
    };
    let (s1, _, j1) = send(&f.router, idem(&a, 1)).await;
    let (s2, _, j2) = send(&f.router, idem(&b, 2)).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{j1} {j2}"
    );
    assert_ne!(j1["id"], j2["id"]);

    // A revoked key is refused on this replica within the cache time.
    f.store.revoke_key("b", 2).await.unwrap();
    let mut refused = false;
    for _ in 0..50 {
        if send(&f.router, get("/v1/jobs", Some(&b))).await.0.as_u16() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "revoked key still accepted after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_quotas() {
    let f = fixture(2);
    let admin = key(&f, "root", "ops", &["admin"], |_| {}).await;
    let r = key(&f, "r", "r", &["ocr", "jobs"], |k| {
        k.rate_per_s = Some(0.5);
        k.burst = Some(2);
    })
    .await;
    // Two requests fit the bucket; the third is 429 with the three headers.
    for _ in 0..2 {
        assert_eq!(
            send(&f.router, get("/v1/queue", Some(&r))).await.0,
            StatusCode::OK
        );
    }
    let (s, h, p) = send(&f.router, get("/v1/queue", Some(&r))).await;
    assert_eq!(
        (s.as_u16(), p["code"].as_str()),
        (429, Some("rate_limited")),
        "{p}"
    );
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-policy"], "\"requests\";q=2;w=4");
    assert_eq!(h["ratelimit"], format!("\"requests\";r=0;t={retry}"));

    // Pages: a bucket of 3 pages; a 2-page job fits, then a 2-page one does not.
    let p = key(&f, "p", "p", &["jobs"], |k| {
        k.pages_per_s = Some(0.01);
        k.page_burst = Some(3);
    })
    .await;
    let (ct, body) = multipart(&[png(1), png(1)]);
    let job = |k: &str, ct: &str, body: Vec<u8>| {
        req("POST", "/v1/jobs", Some(k))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let (s, _, v) = send(&f.router, job(&p, &ct, body.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, h, v) = send(&f.router, job(&p, &ct, body.clone())).await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    assert!(
        h["ratelimit-policy"]
            .to_str()
            .unwrap()
            .starts_with("\"pages\";q=3")
    );

    // Quota: with bulk work paused pages stay queued; 3 queued pages are the limit.
    let pause = req("POST", "/v1/admin/pause", Some(&admin))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.router, pause).await.0, StatusCode::OK);
    let q = key(&f, "q", "q", &["jobs"], |k| k.max_queued_pages = Some(3)).await;
    let (s, _, v) = send(&f.router, job(&q, &ct, body.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, h, v) = send(&f.router, job(&q, &ct, body.clone())).await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v}"
    );
    assert!(h.contains_key(header::RETRY_AFTER));
    // Another tenant is not affected by q's quota.
    let (s, _, v) = send(&f.router, job(&admin, &ct, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}

/// Tenant A queues 200 pages, then tenant B 4: B's pages all finish before A's 100th.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_share_between_tenants() {
    let f = fixture(2);
    let a = key(&f, "a", "a", &["jobs"], |_| {}).await;
    let b = key(&f, "b", "b", &["jobs"], |_| {}).await;
    let page = png(1);
    let (ct, body) = multipart(&vec![page.clone(); 200]);
    let create = |k: &str, ct: &str, body: Vec<u8>| {
        req("POST", "/v1/jobs", Some(k))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let (s, _, ja) = send(&f.router, create(&a, &ct, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ja}");
    let (ct, body) = multipart(&vec![page; 4]);
    let (s, _, jb) = send(&f.router, create(&b, &ct, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{jb}");
    let ja = wait_final(&f, ja["id"].as_str().unwrap(), &a).await;
    let jb = wait_final(&f, jb["id"].as_str().unwrap(), &b).await;
    let times = |j: &Value| -> Vec<i64> {
        let mut t: Vec<i64> = j["documents"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["pages"].as_array().unwrap().iter())
            .map(|p| p["updated_at_ms"].as_i64().unwrap())
            .collect();
        t.sort_unstable();
        t
    };
    let (ta, tb) = (times(&ja), times(&jb));
    assert_eq!((ta.len(), tb.len()), (200, 4));
    assert!(
        tb[3] <= ta[99],
        "B's last page finished at {} ms, A's 100th at {} ms",
        tb[3] - ta[0],
        ta[99] - ta[0]
    );
}

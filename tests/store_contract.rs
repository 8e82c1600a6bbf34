//! The job store's contract, one suite run against both backends: embedded SQLite (a file per
//! test) and PostgreSQL (a fresh database per test in the cluster `scripts/test.sh` starts,
//! named by `OCR_TEST_DATABASE_URL`). Without that variable the PostgreSQL half fails, unless
//! `OCR_TEST_SKIP_SERVICES=1` says on purpose that it is not wanted.

mod common;

use std::sync::Arc;

use ocr_server::jobs::events::JobEvent;
use ocr_server::jobs::model::{
    Claim, ClaimedPage, Created, DeliveryAttempt, DeliveryState, JobClass, JobOptions, JobState,
    NewDocument, NewJob, PageState, Review,
};
use ocr_server::jobs::postgres::PgStore;
use ocr_server::jobs::sqlite::SqliteStore;
use ocr_server::jobs::store::{JobStore, KeyCounts};
use ocr_server::pipeline::{Line, Page};

fn new_job(id: &str, pages: &[usize]) -> NewJob {
    NewJob {
        id: id.into(),
        options: JobOptions::default(),
        class: JobClass::Bulk,
        tag: Some("t".into()),
        webhook_url: None,
        priority: 0,
        review_threshold: Some(0.8),
        idempotency: None,
        documents: pages
            .iter()
            .enumerate()
            .map(|(i, &n)| NewDocument {
                name: format!("d{i}.png"),
                location: format!("/tmp/{id}-{i}"),
                sha256: "00".into(),
                source_pages: (0..n).map(|p| p * 2).collect(),
                owned: true,
                bytes: 10,
            })
            .collect(),
        tenant: String::new(),
        actor: None,
    }
}

fn page(conf: f32) -> Page {
    Page {
        width: 10,
        height: 10,
        lines: vec![Line {
            text: "x".into(),
            confidence: conf,
            bbox: [[0.0; 2]; 4],
            words: Vec::new(),
            char_confidences: Vec::new(),
        }],
        error: None,
    }
}

fn claim(owner: &str, class: JobClass, limit: usize, now: i64) -> Claim {
    Claim {
        owner: owner.into(),
        profiles: vec!["default/v4".into()],
        class,
        limit,
        now_ms: now,
        lease_until_ms: now + 1000,
        max_attempts: 3,
    }
}

fn ids(pages: &[ClaimedPage]) -> Vec<(String, usize, usize)> {
    pages
        .iter()
        .map(|p| {
            (
                p.lease.page.job_id.clone(),
                p.lease.page.doc,
                p.lease.page.page,
            )
        })
        .collect()
}

/// A fresh store of each backend.
enum Backend {
    Sqlite,
    Postgres,
}

async fn open(backend: Backend) -> Option<Arc<dyn JobStore>> {
    match backend {
        Backend::Sqlite => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("store-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            Some(Arc::new(SqliteStore::open(&dir.join("jobs.db")).unwrap()))
        }
        Backend::Postgres => {
            let url = common::test_database_url().await?;
            Some(Arc::new(PgStore::connect(&url).await.unwrap()))
        }
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let s = super::open(super::Backend::Sqlite).await.unwrap();
                super::$name(s).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(s) = super::open(super::Backend::Postgres).await else { return };
                super::$name(s).await;
            })*
        }
    };
}

contract!(
    lifecycle_with_retry_review_and_events,
    claims_follow_class_priority_and_age,
    a_lost_lease_is_fenced_out_and_rescued,
    concurrent_claimers_never_share_a_page,
    release_counts_no_attempt_and_spent_leases_dead_letter,
    cancel_revokes_leases,
    idempotency_same_different_and_expired,
    pauses_hold_bulk_work_by_tag_or_all,
    outbox_rows_are_written_with_the_state_and_claimed_once,
    sweep_keeps_unreviewed_jobs_and_lists_with_a_cursor,
    api_keys_are_stored_hashed_and_revoked,
    tenants_see_their_own_jobs_and_backlog,
    claims_share_turns_between_tenants,
    a_review_reason_sends_a_confident_page_to_review,
    claims_take_only_served_profiles,
    a_lost_worker_charges_only_the_pages_it_started,
    every_event_kind_round_trips,
);

/// Issue 27: every kind of job event, written through the store's one event helper and read
/// back typed, is the event written, on both stores; and the row's kind is the stored kind.
async fn every_event_kind_round_trips(s: Arc<dyn JobStore>) {
    s.create_job(new_job("ev", &[1]), 1, 10).await.unwrap();
    let examples = JobEvent::examples();
    for (i, e) in examples.iter().enumerate() {
        s.add_event("ev", e, 10 + i as i64).await.unwrap();
    }
    let events = s.events("ev").await.unwrap();
    // The job's own `created` first, then the examples in order.
    assert_eq!(events[0].kind, "created");
    let back: Vec<_> = events[1..].iter().map(|e| e.typed()).collect();
    assert_eq!(back.len(), examples.len());
    for ((got, want), row) in back.iter().zip(&examples).zip(&events[1..]) {
        assert_eq!(got.as_ref(), Some(want), "{} {}", row.kind, row.detail);
        assert_eq!(row.kind, want.row().0);
    }
    let kinds: Vec<&str> = events[1..].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, JobEvent::KINDS);
}

/// Issue 26, item 3: three lost workers while tenant a's poison page runs. The first crash
/// charges both pages it had started (nothing can tell them apart yet) and marks them suspect;
/// after that only the page running when the worker is lost is charged (its co-claimed page
/// waited for its turn and gets the attempt back), so the poison page is dead-lettered after
/// its third crash and tenant b's page completes. Before, every crash charged every claimed
/// page, and b's page was dead-lettered with a's.
async fn a_lost_worker_charges_only_the_pages_it_started(s: Arc<dyn JobStore>) {
    s.create_job(tenant_job("poison", "a", 1), 1, 10)
        .await
        .unwrap();
    s.create_job(tenant_job("victim", "b", 1), 2, 10)
        .await
        .unwrap();
    let lease = 1000;
    let mut now = 100;
    let by_job = |pages: &[ClaimedPage], job: &str| {
        pages
            .iter()
            .find(|p| p.lease.page.job_id == job)
            .cloned()
            .unwrap_or_else(|| panic!("{job} not claimed: {:?}", ids(pages)))
    };
    // Crash 1: both claimed, both started.
    let got = s.claim(&claim("w1", JobClass::Bulk, 2, now)).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| !p.suspect));
    for p in &got {
        assert!(s.start_page(&p.lease).await.unwrap());
    }
    // Crashes 2 and 3: both claimed again (suspect now), only the poison page started.
    for (round, owner) in [(2, "w2"), (3, "w3")] {
        now += lease + 1;
        let got = s
            .claim(&claim(owner, JobClass::Bulk, 2, now))
            .await
            .unwrap();
        let (poison, victim) = (by_job(&got, "poison"), by_job(&got, "victim"));
        assert!(poison.suspect && victim.suspect, "round {round}");
        assert_eq!(
            (poison.attempts, victim.attempts),
            (round, 2),
            "round {round}: the victim was charged once, for the first crash only"
        );
        assert!(s.start_page(&poison.lease).await.unwrap());
    }
    // The third crash spends the poison page; the victim runs and completes.
    now += lease + 1;
    let got = s.claim(&claim("w4", JobClass::Bulk, 2, now)).await.unwrap();
    assert_eq!(ids(&got), [("victim".to_string(), 0, 0)]);
    assert!(s.start_page(&got[0].lease).await.unwrap());
    s.complete_page(&got[0].lease, &page(0.99), None, now)
        .await
        .unwrap();
    let poison = s.get_job("poison").await.unwrap().unwrap();
    assert_eq!(poison.state, JobState::Failed);
    let p = &poison.documents[0].pages[0];
    assert_eq!(p.attempts, 3);
    assert!(
        p.error
            .as_deref()
            .unwrap_or("")
            .contains("while the page ran"),
        "{p:?}"
    );
    assert_eq!(
        s.get_job("victim").await.unwrap().unwrap().state,
        JobState::Completed
    );
    let refunds = s
        .events("victim")
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "lease_expired" && e.detail["charged"] == false)
        .count();
    assert_eq!(
        refunds, 2,
        "crashes 2 and 3 gave the victim its attempt back"
    );
    // A stale lease cannot mark a page started.
    assert!(!s.start_page(&got[0].lease).await.unwrap());
}

/// Issue 26, item 7: a job is pinned to its profile and model set; a replica claims only the
/// pages of profiles it serves (and of jobs stored before pinning), never another's.
async fn claims_take_only_served_profiles(s: Arc<dyn JobStore>) {
    let pinned = |id: &str, profile: &str, model| {
        let mut j = new_job(id, &[2]);
        j.options.overrides.profile = Some(profile.into());
        j.options.overrides.model = Some(model);
        j
    };
    use ocr_server::engine::ModelKind::{V4, V6};
    s.create_job(pinned("fast", "fast", V4), 1, 10)
        .await
        .unwrap();
    s.create_job(pinned("best", "best", V6), 2, 10)
        .await
        .unwrap();
    // The same name on another model set is another profile.
    s.create_job(pinned("fast6", "fast", V6), 3, 10)
        .await
        .unwrap();
    s.create_job(new_job("old", &[1]), 4, 10).await.unwrap();
    let mut c = claim("a", JobClass::Bulk, 10, 100);
    c.profiles = vec!["fast/v4".into()];
    let got: std::collections::BTreeSet<String> = s
        .claim(&c)
        .await
        .unwrap()
        .iter()
        .map(|p| p.lease.page.job_id.clone())
        .collect();
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        ["fast", "old"],
        "replica a serves fast/v4"
    );
    c.owner = "b".into();
    c.profiles = vec!["best/v6".into(), "other/v5".into()];
    let got = s.claim(&c).await.unwrap();
    assert_eq!(
        ids(&got),
        [("best".to_string(), 0, 0), ("best".to_string(), 0, 1)],
        "replica b serves best/v6"
    );
    // Nobody serves fast/v6 yet: its pages wait (queued, not failed) until one does.
    c.profiles = vec![];
    assert!(s.claim(&c).await.unwrap().is_empty());
    assert_eq!(
        s.get_job("fast6").await.unwrap().unwrap().state,
        JobState::Queued
    );
    c.profiles = vec!["fast/v6".into()];
    assert_eq!(s.claim(&c).await.unwrap().len(), 2);
}

/// A page whose extracted field failed its check is stored with the reason: the job ends in
/// `needs_review` although every line is over the threshold, the `page_completed` event names
/// the field, and a page completed without a reason does not.
async fn a_review_reason_sends_a_confident_page_to_review(s: Arc<dyn JobStore>) {
    for (id, reason, want) in [
        ("ok", None, JobState::Completed),
        (
            "flagged",
            Some("mrz date_of_birth: check digit"),
            JobState::NeedsReview,
        ),
    ] {
        s.create_job(new_job(id, &[1]), 1, 1000).await.unwrap();
        let got = s.claim(&claim("a", JobClass::Bulk, 1, 2)).await.unwrap();
        assert_eq!(ids(&got), [(id.into(), 0, 0)]);
        assert_eq!(
            s.complete_page(&got[0].lease, &page(0.99), reason, 3)
                .await
                .unwrap(),
            Some(want),
            "{id}"
        );
        let events = s.events(id).await.unwrap();
        let done = events
            .iter()
            .find(|e| e.kind == "page_completed")
            .expect("a page_completed event");
        assert_eq!(
            done.detail["review"].as_str(),
            reason,
            "{id}: {}",
            done.detail
        );
    }
}

fn api_key(name: &str, hash: &str) -> ocr_server::jobs::model::ApiKey {
    ocr_server::jobs::model::ApiKey {
        name: name.into(),
        tenant: format!("t-{name}"),
        hash: hash.into(),
        scopes: vec!["ocr".into(), "jobs".into()],
        rate_per_s: Some(2.5),
        burst: Some(5),
        pages_per_s: None,
        page_burst: Some(7),
        max_queued_pages: Some(100),
        created_ms: 10,
        revoked_ms: None,
        expires_ms: (name == "b").then_some(90),
    }
}

async fn api_keys_are_stored_hashed_and_revoked(s: Arc<dyn JobStore>) {
    let counts = |total, active| KeyCounts { total, active };
    assert_eq!(s.key_counts().await.unwrap(), counts(0, 0));
    s.create_key(&api_key("b", "hb")).await.unwrap();
    s.create_key(&api_key("a", "ha")).await.unwrap();
    let e = s.create_key(&api_key("a", "hx")).await.unwrap_err();
    assert_eq!(e.code(), "invalid_option", "{e}");
    let keys = s.keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(keys[0], api_key("a", "ha"));
    assert_eq!(s.key_by_hash("hb").await.unwrap(), Some(api_key("b", "hb")));
    assert_eq!(s.key_by_hash("nope").await.unwrap(), None);
    assert_eq!(s.key_counts().await.unwrap(), counts(2, 2));
    assert!(s.revoke_key("a", 50).await.unwrap());
    assert!(!s.revoke_key("a", 60).await.unwrap(), "already revoked");
    assert!(!s.revoke_key("zz", 60).await.unwrap());
    assert_eq!(
        s.key_by_hash("ha").await.unwrap().unwrap().revoked_ms,
        Some(50)
    );
    assert_eq!(s.key_counts().await.unwrap(), counts(2, 1));
    // A revoked name is never reused.
    assert!(s.create_key(&api_key("a", "hy")).await.is_err());
    // Revoking the last key leaves the count of keys ever made (what `--auth auto` reads).
    assert!(s.revoke_key("b", 70).await.unwrap());
    assert_eq!(s.key_counts().await.unwrap(), counts(2, 0));
}

fn tenant_job(id: &str, tenant: &str, pages: usize) -> NewJob {
    let mut j = new_job(id, &[pages]);
    j.tenant = tenant.into();
    j.actor = Some(format!("key-of-{tenant}"));
    j
}

async fn tenants_see_their_own_jobs_and_backlog(s: Arc<dyn JobStore>) {
    s.create_job(tenant_job("ja", "acme", 3), 1, 10)
        .await
        .unwrap();
    s.create_job(tenant_job("jb", "globex", 2), 2, 10)
        .await
        .unwrap();
    let ids = |v: Vec<ocr_server::jobs::model::JobSummary>| {
        v.into_iter().map(|j| j.job.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.list_jobs(Some("acme"), None, None, 10).await.unwrap()),
        ["ja"]
    );
    assert_eq!(
        ids(s.list_jobs(Some("globex"), None, None, 10).await.unwrap()),
        ["jb"]
    );
    assert_eq!(
        ids(s.list_jobs(None, None, None, 10).await.unwrap()),
        ["jb", "ja"]
    );
    assert_eq!(
        ids(s.list_jobs(None, None, Some("jb"), 10).await.unwrap()),
        ["ja"]
    );
    // A cursor is one of the caller's own jobs; another tenant's or an unknown id is refused
    // (it never restarts from the newest job, nor positions a listing by another's job).
    for (tenant, cursor) in [(Some("acme"), "jb"), (Some("acme"), "nope"), (None, "nope")] {
        let e = s
            .list_jobs(tenant, None, Some(cursor), 10)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_option", "{tenant:?} {cursor}: {e}");
    }
    assert_eq!(s.get_job("ja").await.unwrap().unwrap().tenant, "acme");
    assert_eq!(s.tenant_backlog("acme").await.unwrap(), 3);
    assert_eq!(s.tenant_backlog("globex").await.unwrap(), 2);
    assert_eq!(s.tenant_backlog("other").await.unwrap(), 0);
    let events = s.events("ja").await.unwrap();
    assert_eq!(events[0].kind, "created");
    assert_eq!(
        events[0].detail["actor"], "key-of-acme",
        "{:?}",
        events[0].detail
    );
}

/// Tenant A queues 200 pages, then tenant B 4: claiming one page at a time, B's pages are all
/// claimed before A's 10th; a claim of 4 holds pages of both.
async fn claims_share_turns_between_tenants(s: Arc<dyn JobStore>) {
    s.create_job(tenant_job("ja", "a", 200), 1, 10)
        .await
        .unwrap();
    s.create_job(tenant_job("jb", "b", 4), 2, 10).await.unwrap();
    let four = s.claim(&claim("w", JobClass::Bulk, 4, 100)).await.unwrap();
    let jobs: std::collections::BTreeSet<&str> =
        four.iter().map(|p| p.lease.page.job_id.as_str()).collect();
    assert_eq!(
        jobs.into_iter().collect::<Vec<_>>(),
        ["ja", "jb"],
        "{:?}",
        ids(&four)
    );
    let (mut a, mut b) = (2usize, 2usize);
    for _ in 0..6 {
        let one = s.claim(&claim("w", JobClass::Bulk, 1, 100)).await.unwrap();
        assert_eq!(one.len(), 1);
        if one[0].lease.page.job_id == "ja" {
            a += 1;
        } else {
            b += 1;
        }
    }
    assert_eq!(b, 4, "B's pages all claimed by then (A: {a})");
    assert!(a < 10, "{a}");
}

async fn lifecycle_with_retry_review_and_events(s: Arc<dyn JobStore>) {
    let Created::New(job) = s
        .create_job(new_job("j1", &[2, 1]), 10, 1000)
        .await
        .unwrap()
    else {
        panic!("new job expected")
    };
    assert_eq!(
        (job.state, job.pages_total(), job.documents.len()),
        (JobState::Queued, 3, 2)
    );
    assert_eq!(
        job.documents[0].pages[1].source_index, 2,
        "source page indices are kept"
    );
    let got = s.claim(&claim("a", JobClass::Bulk, 2, 11)).await.unwrap();
    assert_eq!(ids(&got), [("j1".into(), 0, 0), ("j1".into(), 0, 1)]);
    assert_eq!(got[1].source_index, 2);
    assert_eq!(got[0].location, "/tmp/j1-0");
    assert_eq!(
        s.get_job("j1").await.unwrap().unwrap().state,
        JobState::Processing
    );
    assert_eq!(
        s.complete_page(&got[0].lease, &page(0.95), None, 12)
            .await
            .unwrap(),
        Some(JobState::Processing)
    );
    assert_eq!(
        s.fail_page(&got[1].lease, "boom", Some(14), 13)
            .await
            .unwrap(),
        Some(JobState::Processing)
    );
    // The summary counts what the page rows say, without them.
    let sum = s.job_summary("j1").await.unwrap().unwrap();
    assert_eq!(sum.doc_pages, [2, 1]);
    assert_eq!(sum.pages_total(), 3);
    assert_eq!(
        (sum.counts.completed, sum.counts.queued, sum.counts.failed),
        (1, 2, 0)
    );
    assert_eq!(sum.min_confidence, Some(0.95));
    assert!(sum.job.documents.iter().all(|d| d.pages.is_empty()));
    assert!(s.job_summary("nope").await.unwrap().is_none());
    // The retried page is not runnable before its time.
    let early = s.claim(&claim("a", JobClass::Bulk, 5, 13)).await.unwrap();
    assert_eq!(ids(&early), [("j1".into(), 1, 0)]);
    let late = s.claim(&claim("a", JobClass::Bulk, 5, 15)).await.unwrap();
    assert_eq!(ids(&late), [("j1".into(), 0, 1)]);
    assert_eq!(late[0].attempts, 2);
    s.complete_page(&late[0].lease, &page(0.5), None, 16)
        .await
        .unwrap();
    // The 0.5 page is under the 0.8 review threshold.
    assert_eq!(
        s.complete_page(&early[0].lease, &page(0.9), None, 18)
            .await
            .unwrap(),
        Some(JobState::NeedsReview)
    );
    let job = s.get_job("j1").await.unwrap().unwrap();
    assert_eq!(job.pages_in(PageState::Completed), 3);
    assert_eq!(job.documents[0].pages[1].attempts, 2);
    let results = s.page_results("j1", 0, 0, 10).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap().lines[0].confidence, 0.95);
    // Read in slices: from a page, at most a limit.
    assert_eq!(s.page_results("j1", 0, 0, 1).await.unwrap(), results[..1]);
    assert_eq!(s.page_results("j1", 0, 1, 5).await.unwrap(), results[1..]);
    assert!(s.page_results("j1", 0, 2, 5).await.unwrap().is_empty());
    assert_eq!(s.page_results("j1", 1, 0, 5).await.unwrap().len(), 1);
    assert_eq!(
        s.job_summary("j1").await.unwrap().unwrap().min_confidence,
        Some(0.5)
    );
    let approve = Review {
        approve: true,
        reviewer: Some("ann".into()),
        ..Review::default()
    };
    assert!(
        !s.complete_review("nope", &Review::default(), 19)
            .await
            .unwrap()
    );
    assert!(s.complete_review("j1", &approve, 20).await.unwrap());
    assert!(
        !s.complete_review("j1", &Review::default(), 21)
            .await
            .unwrap(),
        "once"
    );
    assert_eq!(
        s.get_job("j1").await.unwrap().unwrap().state,
        JobState::Completed
    );
    let kinds: Vec<String> = s
        .events("j1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("created"));
    assert!(kinds.iter().any(|k| k == "page_retry"));
    // The review is read back typed from the state event that completed the job.
    let events = s.events("j1").await.unwrap();
    let review = events
        .iter()
        .rev()
        .find_map(|e| e.typed()?.review().cloned());
    assert_eq!(review, Some(approve));
    // queued→processing, processing→needs_review, needs_review→completed.
    assert_eq!(
        kinds.iter().filter(|k| *k == "state").count(),
        3,
        "{kinds:?}"
    );
}

async fn claims_follow_class_priority_and_age(s: Arc<dyn JobStore>) {
    s.create_job(new_job("old", &[1]), 1, 10).await.unwrap();
    let mut high = new_job("high", &[1]);
    high.priority = 5;
    s.create_job(high, 2, 10).await.unwrap();
    s.create_job(new_job("new", &[1]), 3, 10).await.unwrap();
    let mut hybrid = new_job("hybrid", &[1]);
    hybrid.class = JobClass::Interactive;
    s.create_job(hybrid, 4, 10).await.unwrap();
    let i = s
        .claim(&claim("a", JobClass::Interactive, 10, 5))
        .await
        .unwrap();
    assert_eq!(ids(&i), [("hybrid".into(), 0, 0)]);
    assert_eq!(i[0].class, JobClass::Interactive);
    let b = s.claim(&claim("a", JobClass::Bulk, 10, 5)).await.unwrap();
    let order: Vec<String> = ids(&b).into_iter().map(|x| x.0).collect();
    assert_eq!(order, ["high", "old", "new"]);
    let backlog = s.backlog(JobClass::Bulk).await.unwrap();
    assert_eq!((backlog.queued, backlog.processing), (0, 3));
}

async fn a_lost_lease_is_fenced_out_and_rescued(s: Arc<dyn JobStore>) {
    s.create_job(new_job("j", &[1]), 0, 10).await.unwrap();
    let a = s.claim(&claim("a", JobClass::Bulk, 1, 1)).await.unwrap();
    assert_eq!(a.len(), 1);
    assert!(s.start_page(&a[0].lease).await.unwrap());
    // A renews in time once; then stops (it died), its lease runs out at 2001.
    assert_eq!(
        s.renew("a", &[a[0].lease.token.clone()], 2001)
            .await
            .unwrap(),
        vec![a[0].lease.token.clone()]
    );
    assert!(
        s.claim(&claim("b", JobClass::Bulk, 1, 1500))
            .await
            .unwrap()
            .is_empty()
    );
    let b = s.claim(&claim("b", JobClass::Bulk, 1, 2500)).await.unwrap();
    assert_eq!(ids(&b), ids(&a), "the expired page is claimed again");
    assert_eq!(b[0].attempts, 2);
    assert_ne!(a[0].lease.token, b[0].lease.token);
    // A comes back and tries to write: fenced out, and its renewal says the lease is gone.
    assert!(
        s.renew("a", &[a[0].lease.token.clone()], 9999)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.complete_page(&a[0].lease, &page(0.1), None, 2600)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.fail_page(&a[0].lease, "late", None, 2600).await.unwrap(),
        None
    );
    assert_eq!(
        s.complete_page(&b[0].lease, &page(0.99), None, 2700)
            .await
            .unwrap(),
        Some(JobState::Completed)
    );
    let r = s.page_results("j", 0, 0, 100).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap().lines[0].confidence,
        0.99,
        "B's result, written once"
    );
    let kinds: Vec<String> = s
        .events("j")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "lease_expired"), "{kinds:?}");
}

async fn concurrent_claimers_never_share_a_page(s: Arc<dyn JobStore>) {
    for j in 0..8 {
        s.create_job(new_job(&format!("j{j}"), &[5]), j, 10)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim(&claim(&format!("w{w}"), JobClass::Bulk, 2, 100))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for p in got {
                    s.complete_page(&p.lease, &page(0.9), None, 101)
                        .await
                        .unwrap()
                        .unwrap();
                    mine.push((p.lease.page.job_id, p.lease.page.page));
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (40, 40), "every page claimed exactly once");
    for j in 0..8 {
        let job = s.get_job(&format!("j{j}")).await.unwrap().unwrap();
        assert_eq!(
            job.state,
            JobState::Completed,
            "the last page's writer sees the final state"
        );
    }
}

async fn release_counts_no_attempt_and_spent_leases_dead_letter(s: Arc<dyn JobStore>) {
    s.create_job(new_job("j", &[1]), 0, 10).await.unwrap();
    let a = s.claim(&claim("a", JobClass::Bulk, 1, 1)).await.unwrap();
    assert!(s.release_page(&a[0].lease, 50, 2).await.unwrap());
    assert!(
        !s.release_page(&a[0].lease, 50, 2).await.unwrap(),
        "only once"
    );
    assert!(
        s.claim(&claim("a", JobClass::Bulk, 1, 10))
            .await
            .unwrap()
            .is_empty(),
        "run_at"
    );
    let mut now = 50;
    for attempt in 1..=3 {
        let got = s.claim(&claim("a", JobClass::Bulk, 1, now)).await.unwrap();
        assert_eq!(got[0].attempts, attempt, "the release did not count");
        assert!(s.start_page(&got[0].lease).await.unwrap());
        now += 2000; // the lease (1 s) expires: the worker died running it
    }
    // The third lease expired with the attempts spent: the page is dead-lettered, not run again.
    assert!(
        s.claim(&claim("a", JobClass::Bulk, 1, now))
            .await
            .unwrap()
            .is_empty()
    );
    let job = s.get_job("j").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.documents[0].pages[0]
            .error
            .as_deref()
            .unwrap()
            .contains("lease expired")
    );
    assert_eq!(s.retry_failed("j", now).await.unwrap(), 1);
    assert_eq!(
        s.claim(&claim("a", JobClass::Bulk, 1, now))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn cancel_revokes_leases(s: Arc<dyn JobStore>) {
    s.create_job(new_job("j", &[3]), 0, 10).await.unwrap();
    let a = s.claim(&claim("a", JobClass::Bulk, 1, 1)).await.unwrap();
    assert!(s.cancel_job("j", 2).await.unwrap());
    assert!(!s.cancel_job("j", 3).await.unwrap(), "already final");
    assert!(
        s.renew("a", &[a[0].lease.token.clone()], 999)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.complete_page(&a[0].lease, &page(0.9), None, 4)
            .await
            .unwrap(),
        None
    );
    assert!(
        s.claim(&claim("a", JobClass::Bulk, 5, 5))
            .await
            .unwrap()
            .is_empty()
    );
    let job = s.get_job("j").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.pages_in(PageState::Cancelled), 3);
    assert_eq!(s.retry_failed("j", 6).await.unwrap(), 0);
}

async fn idempotency_same_different_and_expired(s: Arc<dyn JobStore>) {
    let keyed = |id: &str, h: &str| {
        let mut j = new_job(id, &[1]);
        j.idempotency = Some(("k".into(), h.into()));
        j
    };
    assert!(matches!(
        s.create_job(keyed("a", "h1"), 0, 100).await.unwrap(),
        Created::New(_)
    ));
    let again = s.create_job(keyed("b", "h1"), 50, 100).await.unwrap();
    assert!(matches!(&again, Created::Existing(j) if j.id == "a"));
    assert!(matches!(
        s.create_job(keyed("c", "h2"), 60, 100).await,
        Err(ocr_server::Error::IdempotencyConflict(_))
    ));
    let later = s.create_job(keyed("d", "h2"), 200, 100).await.unwrap();
    assert!(matches!(&later, Created::New(j) if j.id == "d"));
    assert!(s.get_job("b").await.unwrap().is_none() && s.get_job("c").await.unwrap().is_none());
    // Two racing creations with one key name one job.
    let (x, y) = tokio::join!(
        s.create_job(keyed("x", "h3"), 400, 100),
        s.create_job(keyed("y", "h3"), 400, 100)
    );
    let names: Vec<String> = [x.unwrap(), y.unwrap()]
        .into_iter()
        .map(|c| match c {
            Created::New(j) | Created::Existing(j) => j.id,
        })
        .collect();
    assert_eq!(names[0], names[1], "{names:?}");
}

async fn pauses_hold_bulk_work_by_tag_or_all(s: Arc<dyn JobStore>) {
    let tagged = |id: &str, tag: &str, class: JobClass| {
        let mut j = new_job(id, &[1]);
        j.tag = Some(tag.into());
        j.class = class;
        j
    };
    s.create_job(tagged("a", "alpha", JobClass::Bulk), 0, 10)
        .await
        .unwrap();
    s.create_job(tagged("b", "beta", JobClass::Bulk), 1, 10)
        .await
        .unwrap();
    s.create_job(tagged("h", "alpha", JobClass::Interactive), 2, 10)
        .await
        .unwrap();
    s.set_paused(Some("alpha"), true, 3).await.unwrap();
    let got = s.claim(&claim("w", JobClass::Bulk, 5, 4)).await.unwrap();
    assert_eq!(ids(&got), [("b".into(), 0, 0)]);
    assert_eq!(
        s.claim(&claim("w", JobClass::Interactive, 5, 4))
            .await
            .unwrap()
            .len(),
        1,
        "interactive work is never paused"
    );
    s.set_paused(None, true, 5).await.unwrap();
    assert_eq!(s.paused().await.unwrap(), ["*", "alpha"]);
    s.set_paused(Some("alpha"), false, 6).await.unwrap();
    assert!(
        s.claim(&claim("w", JobClass::Bulk, 5, 7))
            .await
            .unwrap()
            .is_empty(),
        "all paused"
    );
    s.set_paused(None, false, 8).await.unwrap();
    assert_eq!(
        ids(&s.claim(&claim("w", JobClass::Bulk, 5, 9)).await.unwrap()),
        [("a".into(), 0, 0)]
    );
    assert_eq!(s.backlog(JobClass::Bulk).await.unwrap().queued, 0);
}

async fn outbox_rows_are_written_with_the_state_and_claimed_once(s: Arc<dyn JobStore>) {
    let mut j = new_job("w", &[2]);
    j.webhook_url = Some("http://127.0.0.1:9/hook".into());
    s.create_job(j, 0, 10).await.unwrap();
    let got = s.claim(&claim("a", JobClass::Bulk, 2, 1)).await.unwrap();
    s.complete_page(&got[0].lease, &page(0.9), None, 2)
        .await
        .unwrap();
    assert!(s.deliveries("w").await.unwrap().is_empty(), "not final yet");
    s.complete_page(&got[1].lease, &page(0.9), None, 3)
        .await
        .unwrap();
    let d = s.deliveries("w").await.unwrap();
    assert_eq!(d.len(), 1, "written in the completing transaction");
    assert_eq!(
        (d[0].event.as_str(), d[0].state),
        ("job.completed", DeliveryState::Pending)
    );
    let body: serde_json::Value = serde_json::from_str(&d[0].payload).unwrap();
    assert_eq!(body["data"]["pages_done"], 2);
    let (x, y) = tokio::join!(
        s.claim_deliveries("r1", 10, 4, 1000),
        s.claim_deliveries("r2", 10, 4, 1000)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 1, "one replica sends it");
    let (winner, loser) = if x.is_empty() {
        ("r2", "r1")
    } else {
        ("r1", "r2")
    };
    let retry = DeliveryAttempt {
        delivered: false,
        status: Some(500),
        error: Some("HTTP 500".into()),
        retry_at_ms: Some(50),
    };
    assert!(!s.record_delivery(&d[0].id, loser, &retry, 5).await.unwrap());
    assert!(
        s.record_delivery(&d[0].id, winner, &retry, 5)
            .await
            .unwrap()
    );
    assert!(
        s.claim_deliveries("r1", 10, 10, 1000)
            .await
            .unwrap()
            .is_empty(),
        "not due"
    );
    let again = s.claim_deliveries("r1", 10, 60, 1000).await.unwrap();
    assert_eq!(
        (again.len(), again[0].attempts, again[0].payload.as_str()),
        (1, 1, d[0].payload.as_str())
    );
    let fail = DeliveryAttempt {
        retry_at_ms: None,
        ..retry
    };
    assert!(s.record_delivery(&d[0].id, "r1", &fail, 61).await.unwrap());
    assert_eq!(
        s.deliveries("w").await.unwrap()[0].state,
        DeliveryState::Failed
    );
    assert_eq!(s.resend_deliveries("w", 70).await.unwrap(), 1);
    assert_eq!(
        s.claim_deliveries("r2", 10, 70, 1000).await.unwrap().len(),
        1
    );
    // Cancel and review send their events too.
    let mut c = new_job("c", &[1]);
    c.webhook_url = Some("http://127.0.0.1:9/hook".into());
    s.create_job(c, 80, 10).await.unwrap();
    s.cancel_job("c", 81).await.unwrap();
    let cancelled = &s.deliveries("c").await.unwrap()[0];
    assert_eq!(cancelled.event, "job.cancelled");
    let body: serde_json::Value = serde_json::from_str(&cancelled.payload).unwrap();
    assert_eq!(
        body["data"]["pages_total"], 1,
        "cancelled pages count in the total"
    );
}

async fn sweep_keeps_unreviewed_jobs_and_lists_with_a_cursor(s: Arc<dyn JobStore>) {
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        s.create_job(new_job(id, &[1]), i as i64, 10).await.unwrap();
    }
    s.cancel_job("b", 10).await.unwrap();
    // d goes to review (0.5 < 0.8) and stays there.
    let got = s.claim(&claim("w", JobClass::Bulk, 5, 11)).await.unwrap();
    let d = got.iter().find(|p| p.lease.page.job_id == "d").unwrap();
    assert_eq!(
        s.complete_page(&d.lease, &page(0.5), None, 12)
            .await
            .unwrap(),
        Some(JobState::NeedsReview)
    );
    let first: Vec<String> = s
        .list_jobs(None, None, None, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job.id)
        .collect();
    assert_eq!(first, ["d", "c"]);
    let next: Vec<String> = s
        .list_jobs(None, None, Some("c"), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job.id)
        .collect();
    assert_eq!(next, ["b", "a"]);
    let review = s
        .list_jobs(None, Some(JobState::NeedsReview), None, 10)
        .await
        .unwrap();
    assert_eq!(review.len(), 1);
    assert_eq!(
        s.sweep(5, 5, 100).await.unwrap(),
        (0, Vec::<String>::new()),
        "b was updated at 10"
    );
    assert_eq!(
        s.sweep(1_000_000, 5, 100).await.unwrap(),
        (1, vec!["/tmp/b-0".to_string()])
    );
    assert!(s.get_job("b").await.unwrap().is_none());
    assert!(
        s.get_job("d").await.unwrap().is_some(),
        "needs_review jobs wait for a reviewer"
    );
    assert!(
        s.get_job("a").await.unwrap().is_some(),
        "unfinished jobs are never swept"
    );
    assert!(
        s.events("b").await.unwrap().is_empty(),
        "events go with the job"
    );
    // ... but not for ever: past the review retention they go too (issue 26: any tenant could
    // park every job in review and grow the store without bound).
    s.sweep(1_000_000, 1_000_000, 100).await.unwrap();
    assert!(s.get_job("d").await.unwrap().is_none(), "review retention");
    assert!(s.get_job("a").await.unwrap().is_some());
    // In batches: at most `limit` jobs a call, until a call comes back short.
    for id in ["s1", "s2", "s3"] {
        s.create_job(new_job(id, &[1]), 20, 10).await.unwrap();
        assert!(s.cancel_job(id, 21).await.unwrap());
    }
    let (n1, p1) = s.sweep(1_000_000, 1_000_000, 2).await.unwrap();
    let (n2, p2) = s.sweep(1_000_000, 1_000_000, 2).await.unwrap();
    assert_eq!((n1, p1.len(), n2, p2.len()), (2, 2, 1, 1));
    let mut all: Vec<String> = p1.into_iter().chain(p2).collect();
    all.sort();
    assert_eq!(all, ["/tmp/s1-0", "/tmp/s2-0", "/tmp/s3-0"]);
    assert_eq!(s.sweep(1_000_000, 1_000_000, 2).await.unwrap(), (0, vec![]));
    assert!(s.get_job("a").await.unwrap().is_some());
}

/// A data directory of the first release (schema version 1, no leases) opens, migrates, and
/// its unfinished pages run with the right source pages.
#[test]
fn sqlite_migrates_a_first_release_database() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("store-v1-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("jobs.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(include_str!("data/jobs_v1.sql")).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = SqliteStore::open(&db).unwrap();
        let job = s.get_job("old").await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Processing);
        let srcs: Vec<usize> = job.documents[0]
            .pages
            .iter()
            .map(|p| p.source_index)
            .collect();
        assert_eq!(srcs, [1, 2, 4], "pages `2-3,5` of the source");
        let got = s
            .claim(&claim("w", JobClass::Bulk, 10, 2_000_000))
            .await
            .unwrap();
        // The page that was `processing` under the old runner is runnable again; the completed
        // one is kept.
        assert_eq!(ids(&got), [("old".into(), 0, 1), ("old".into(), 0, 2)]);
        assert_eq!(got[0].source_index, 2);
        let hybrid = s
            .claim(&claim("w", JobClass::Interactive, 10, 2_000_000))
            .await
            .unwrap();
        assert_eq!(ids(&hybrid), [("hyb".into(), 0, 0)]);
    });
}

/// Claim latency with a deep queue (a measurement, not a check: run by hand with
/// `cargo test --test store_contract claim_latency -- --ignored --nocapture` after
/// `scripts/services.sh start` and `. target/services/env`). Prints p50/p99 of claiming 16 pages
/// with 100,000 queued, per backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn claim_latency_with_100k_queued() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(s) = open(backend).await else { return };
        let started = std::time::Instant::now();
        for j in 0..1000 {
            let mut job = new_job(&format!("j{j:04}"), &[100]);
            job.priority = (j % 3) as i32;
            s.create_job(job, j, 10).await.unwrap();
        }
        let filled = started.elapsed();
        let mut times = Vec::new();
        for i in 0..300 {
            let t = std::time::Instant::now();
            let got = s
                .claim(&claim("w", JobClass::Bulk, 16, 10_000 + i))
                .await
                .unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(got.len(), 16);
            for p in &got {
                s.complete_page(&p.lease, &page(0.9), None, 10_000 + i)
                    .await
                    .unwrap();
            }
        }
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        eprintln!(
            "claim latency, {}: 100,000 pages queued in {:.1} s; claim(16) over 300 claims: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.backend(),
            filled.as_secs_f64(),
            q(0.5),
            q(0.99),
            times[times.len() - 1]
        );
    }
}

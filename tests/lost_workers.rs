//! Issue 26, item 3, through the real runner and scheduler on one SQLite file: a replica is lost
//! three times (its tokio runtime dropped mid-page: no release, no heartbeat, exactly what a
//! kill leaves in the store) while tenant a's poison page is in the model, with tenant b's page
//! claimed beside it. The fake detector hangs on the poison page only (a page taller than
//! wide) and takes 800 ms on any other, so b's page is still running when the first crash
//! comes. The poison page is dead-lettered after its third crash; b's page completes. Before,
//! every crash charged both pages, and the third dead-lettered b's page with a's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use ocr_server::engine::fake::{FakeDetector, FakeFactory};
use ocr_server::engine::{Model, ModelKind};
use ocr_server::error::{Error, Result};
use ocr_server::jobs::documents::DocumentStore;
use ocr_server::jobs::model::{JobClass, JobOptions, JobState, NewDocument, NewJob};
use ocr_server::jobs::runner::{Runner, RunnerConfig};
use ocr_server::jobs::sqlite::SqliteStore;
use ocr_server::jobs::store::JobStore;
use ocr_server::pipeline::Tensor;
use ocr_server::pipeline::ctc::Charset;
use ocr_server::scheduler::{ModelFactory, Role, Scheduler, SchedulerConfig};

/// Lets the hung detector threads of lost replicas end when the test is over.
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Sets [`RELEASE`] when dropped: declared after the lost replicas, it is dropped before them,
/// so a failing assertion does not leave their schedulers joining hung threads for ever.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        RELEASE.store(true, Ordering::Release);
    }
}

/// A detector that never returns for a page taller than wide (announcing it first), and takes
/// 800 ms for any other.
struct PoisonDetector {
    entered: mpsc::Sender<()>,
}

impl Model for PoisonDetector {
    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let [_, _, h, w] = input.shape[..] else {
            return Err(Error::Runtime("NCHW expected".into()));
        };
        if h >= 2 * w {
            let _ = self.entered.send(());
            while !RELEASE.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(Error::Runtime("released".into()));
        }
        std::thread::sleep(Duration::from_millis(800));
        FakeDetector.run(input)
    }
}

struct PoisonFactory {
    entered: Mutex<mpsc::Sender<()>>,
}

impl ModelFactory for PoisonFactory {
    fn kind(&self) -> ModelKind {
        ModelKind::V6
    }
    fn charset(&self) -> Arc<Charset> {
        Arc::new(FakeFactory::charset())
    }
    fn has_classifier(&self) -> bool {
        false
    }
    fn load(&self, role: Role) -> Result<Box<dyn Model>> {
        match role {
            Role::Detector => Ok(Box::new(PoisonDetector {
                entered: self.entered.lock().unwrap().clone(),
            })),
            other => FakeFactory::default().load(other),
        }
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for y in h / 3..h / 2 {
        for x in w / 8..w - w / 8 {
            img.put_pixel(x, y, Rgb([0, 0, 0]));
        }
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// One replica: its own runtime, scheduler and runner over the shared store and documents.
struct Replica {
    rt: tokio::runtime::Runtime,
    runner: Arc<Runner>,
    scheduler: Arc<Scheduler>,
}

fn replica(dir: &Path, entered: &mpsc::Sender<()>) -> Replica {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sc = SchedulerConfig::for_model(ModelKind::V6);
    sc.base.det_resize.limit_side_px = 32;
    sc.cls.workers = 0;
    // Two detection workers, one page each: the poison page and the other run side by side.
    sc.det.workers = 2;
    sc.det.policy.max_items = 1;
    let factory = Arc::new(PoisonFactory {
        entered: Mutex::new(entered.clone()),
    });
    let scheduler = Arc::new(Scheduler::start(sc, factory).unwrap());
    scheduler.wait_ready(Duration::from_secs(60)).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.join("jobs.db")).unwrap());
    let documents = Arc::new(
        DocumentStore::open(&format!("file://{}/documents", dir.display()), 16 << 20).unwrap(),
    );
    let runner = Runner::new(
        store,
        scheduler.clone(),
        documents,
        RunnerConfig {
            max_in_flight: 2,
            max_attempts: 3,
            lease: Duration::from_millis(600),
            poll: Duration::from_millis(50),
            backoff_base: Duration::from_millis(10),
            ..RunnerConfig::default()
        },
    );
    {
        let _in = rt.enter();
        runner.start();
    }
    Replica {
        rt,
        runner,
        scheduler,
    }
}

async fn create(dir: &Path, id: &str, tenant: &str, bytes: Vec<u8>) {
    let store = SqliteStore::open(&dir.join("jobs.db")).unwrap();
    let documents =
        DocumentStore::open(&format!("file://{}/documents", dir.display()), 16 << 20).unwrap();
    let stored = documents.put(tenant, id, 0, bytes.into()).await.unwrap();
    let job = NewJob {
        id: id.into(),
        options: JobOptions::default(),
        class: JobClass::Bulk,
        tag: None,
        webhook_url: None,
        priority: 0,
        review_threshold: None,
        idempotency: None,
        documents: vec![NewDocument {
            name: format!("{id}.png"),
            location: stored.location,
            sha256: stored.sha256,
            source_pages: vec![0],
            owned: true,
            bytes: 0,
        }],
        tenant: tenant.into(),
        actor: None,
    };
    store.create_job(job, 1, 1000).await.unwrap();
}

#[test]
fn a_poison_page_dead_letters_itself_not_the_page_claimed_beside_it() {
    let dir: PathBuf = std::env::temp_dir().join(format!("ocr-lost-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("documents")).unwrap();
    let setup = tokio::runtime::Runtime::new().unwrap();
    setup.block_on(async {
        create(&dir, "poison", "a", png(40, 160)).await;
        create(&dir, "victim", "b", png(160, 40)).await;
    });
    let (entered_tx, entered) = mpsc::channel();
    // Lost replicas are kept (their hung detector threads end at RELEASE), never dropped.
    let mut lost = Vec::new();
    let _release = Release;
    for crash in 1..=3 {
        let r = replica(&dir, &entered_tx);
        entered
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("crash {crash}: the poison page never reached a model"));
        // The worker is lost with the poison page in the model: no release, no more renewals.
        let Replica {
            rt,
            runner,
            scheduler,
        } = r;
        rt.shutdown_background();
        lost.push((runner, scheduler));
    }
    // A healthy replica takes over once the last leases expire.
    let last = replica(&dir, &entered_tx);
    let store = SqliteStore::open(&dir.join("jobs.db")).unwrap();
    let t0 = Instant::now();
    let (poison, victim) = loop {
        let (p, v) = setup.block_on(async {
            (
                store.get_job("poison").await.unwrap().unwrap(),
                store.get_job("victim").await.unwrap().unwrap(),
            )
        });
        if p.state.is_final() && v.state.is_final() {
            break (p, v);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not finished: poison {:?}, victim {:?}",
            p.state,
            v.state
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (pp, vp) = (&poison.documents[0].pages[0], &victim.documents[0].pages[0]);
    eprintln!(
        "poison: {:?} after {} attempts ({:?}); victim: {:?} after {} attempts",
        poison.state, pp.attempts, pp.error, victim.state, vp.attempts
    );
    assert_eq!(victim.state, JobState::Completed, "{vp:?}");
    assert_eq!((poison.state, pp.attempts), (JobState::Failed, 3), "{pp:?}");
    assert!(
        pp.error
            .as_deref()
            .unwrap_or("")
            .contains("while the page ran"),
        "{pp:?}"
    );
    let Replica { rt, .. } = last;
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
}

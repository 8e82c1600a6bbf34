//! The scheduler's worker loops with fake models and a gated detector (the test decides when a
//! detection run ends, so nothing here depends on timing): class priority across stages,
//! dropping work whose caller has gone or whose deadline passed, typed full-queue errors, and a
//! shutdown that finishes everything admitted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use ocr_server::Error;
use ocr_server::engine::ModelKind;
use ocr_server::engine::fake::{FakeFactory, Gate};
use ocr_server::scheduler::{Class, Scheduler, SchedulerConfig, Ticket};

fn page(bars: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(320, 40 + 40 * bars, Rgb([255, 255, 255]));
    for b in 0..bars {
        for y in 30 + 40 * b..50 + 40 * b {
            for x in 20..300 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
    }
    img
}

/// A scheduler whose single detector waits for a permit per run; warm-up already let through.
fn gated(capacity: usize) -> (Scheduler, Gate) {
    let gate = Gate::new();
    let mut c = SchedulerConfig::for_model(ModelKind::V6);
    c.base.det_resize.limit_side_px = 32;
    c.det.policy.max_items = 1;
    c.det.policy.capacity = capacity;
    let s = Scheduler::start(
        c,
        Arc::new(FakeFactory {
            gate: Some(gate.clone()),
            ..FakeFactory::default()
        }),
    )
    .unwrap();
    gate.permits.send(()).unwrap();
    gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    s.wait_ready(Duration::from_secs(30)).unwrap();
    (s, gate)
}

fn submit(s: &Scheduler, bars: u32, class: Class) -> Ticket {
    s.submit(vec![page(bars)], s.base_options().clone(), class, None)
        .unwrap()
}

fn wait(t: Ticket) -> ocr_server::Result<ocr_server::scheduler::Outcome> {
    t.rx.blocking_recv().expect("the scheduler always replies")
}

#[test]
fn interactive_work_overtakes_queued_bulk_work() {
    let (s, gate) = gated(16);
    let first = submit(&s, 1, Class::Bulk);
    gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    // While the detector is busy, bulk work queues up, then one interactive request arrives.
    let bulk: Vec<Ticket> = (0..3).map(|_| submit(&s, 2, Class::Bulk)).collect();
    let interactive = submit(&s, 2, Class::Interactive);
    gate.open();
    let i = wait(interactive).unwrap();
    let first = wait(first).unwrap();
    let later: Vec<u64> = bulk.into_iter().map(|t| wait(t).unwrap().seq).collect();
    // The bulk page already in detection may finish before or after it (its lines and the
    // interactive lines meet in the recognition queue), but every queued bulk page finishes
    // after the interactive request.
    assert!(i.seq <= 2, "interactive finished {}th", i.seq);
    assert!(
        first.seq <= 2,
        "the running bulk page finished {}th",
        first.seq
    );
    assert!(
        later.iter().all(|&b| b > i.seq),
        "queued bulk {later:?} vs {}",
        i.seq
    );
    assert_eq!(i.pages[0].text(), "#\n#");
}

#[test]
fn gone_and_expired_work_is_dropped_before_the_model() {
    let (s, gate) = gated(16);
    let running = submit(&s, 1, Class::Interactive);
    gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    let gone = submit(&s, 1, Class::Interactive);
    let expired = s
        .submit(
            vec![page(1)],
            s.base_options().clone(),
            Class::Interactive,
            Some(Instant::now()),
        )
        .unwrap();
    let kept = submit(&s, 1, Class::Interactive);
    drop(gone);
    gate.open();
    assert!(wait(running).is_ok());
    // It expired before any model saw it: the server was too busy to start it (429).
    assert!(matches!(wait(expired), Err(Error::Overloaded { .. })));
    assert!(wait(kept).is_ok());
    let st = s.stats();
    assert_eq!((st.dropped_gone, st.dropped_expired), (1, 1));
    assert_eq!(
        st.det_pages, 2,
        "only the running and the kept page were detected"
    );
}

/// Deadline-aware admission (issue 26, item 11): once the busy rate is known, a request whose
/// estimated start (the interactive pages ahead of it at that rate) is past its deadline is
/// refused at once with `Overloaded` and a Retry-After, and one whose deadline leaves time is
/// admitted; with nothing ahead, even an instant deadline is admitted.
#[test]
fn a_request_that_cannot_start_before_its_deadline_is_refused_at_admission() {
    let (s, gate) = gated(256);
    // Ten completions, one permit each: the rate is measured (and fast: milliseconds a page).
    for _ in 0..10 {
        let t = submit(&s, 1, Class::Interactive);
        gate.permits.send(()).unwrap();
        gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(wait(t).is_ok());
    }
    // The detector holds one page; 100 interactive pages queue behind it: 101 in flight.
    let running = submit(&s, 1, Class::Interactive);
    gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    let queued: Vec<Ticket> = (0..100)
        .map(|_| submit(&s, 1, Class::Interactive))
        .collect();
    let at = |d: Duration| {
        s.submit(
            vec![page(1)],
            s.base_options().clone(),
            Class::Interactive,
            Some(Instant::now() + d),
        )
    };
    match at(Duration::from_micros(1)) {
        Err(Error::Overloaded {
            depth,
            retry_after_s,
        }) => assert!(
            depth == 101 && retry_after_s >= 1,
            "{depth} {retry_after_s}"
        ),
        other => panic!("admitted or another error: {:?}", other.map(|t| t.id)),
    }
    let roomy = at(Duration::from_secs(3600)).expect("an hour is enough for 100 pages");
    // Bulk work has no deadline: never refused for one.
    let bulk = submit(&s, 1, Class::Bulk);
    gate.open();
    assert!(wait(running).is_ok());
    for t in queued {
        assert!(wait(t).is_ok());
    }
    assert!(wait(roomy).is_ok());
    assert!(wait(bulk).is_ok());
    // Nothing ahead: admitted whatever the deadline (the estimate only counts work ahead).
    let idle = at(Duration::from_millis(50)).expect("nothing ahead");
    let _ = wait(idle);
}

#[test]
fn a_full_queue_is_a_typed_error_and_admission_is_all_or_nothing() {
    let (s, gate) = gated(2);
    let running = submit(&s, 1, Class::Interactive);
    gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
    // Three pages do not fit in two places: nothing is queued.
    let three = s.submit(
        vec![page(1), page(1), page(1)],
        s.base_options().clone(),
        Class::Bulk,
        None,
    );
    match three {
        Err(Error::Overloaded {
            depth,
            retry_after_s,
        }) => assert_eq!((depth, retry_after_s >= 1), (0, true)),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    let two = s
        .submit(
            vec![page(1), page(2)],
            s.base_options().clone(),
            Class::Bulk,
            None,
        )
        .unwrap();
    assert!(matches!(
        s.submit(
            vec![page(1)],
            s.base_options().clone(),
            Class::Interactive,
            None
        ),
        Err(Error::Overloaded { depth: 2, .. })
    ));
    gate.open();
    assert!(wait(running).is_ok());
    let two = wait(two).unwrap();
    assert_eq!(two.pages.len(), 2);
    assert_eq!(two.pages[1].text(), "#\n#");
}

#[test]
fn shutdown_finishes_admitted_work_then_refuses() {
    let (s, gate) = gated(16);
    let tickets: Vec<Ticket> = (1..=4).map(|b| submit(&s, b, Class::Bulk)).collect();
    gate.open();
    s.shutdown();
    for (b, t) in (1..=4).zip(tickets) {
        let out = wait(t).unwrap();
        assert_eq!(out.pages[0].lines.len(), b as usize);
    }
    assert!(matches!(
        s.submit(
            vec![page(1)],
            s.base_options().clone(),
            Class::Interactive,
            None
        ),
        Err(Error::ShuttingDown)
    ));
}

/// `ocr::document::ocr_document` (the CLI's path) over a six-page TIFF whose page k has k
/// bars, with a window of 4 pages against a detection queue of 1 and a detector held shut: the
/// in-process caller waits for room instead of being refused, and the pages come back in document order, each with its
/// own lines.
#[test]
fn document_ocr_waits_for_room_and_keeps_page_order() {
    let (s, gate) = gated(1);
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut enc = tiff::encoder::TiffEncoder::new(&mut buf).unwrap();
        for bars in 1..=6 {
            let p = page(bars);
            enc.write_image::<tiff::encoder::colortype::RGB8>(p.width(), p.height(), p.as_raw())
                .unwrap();
        }
    }
    let limits = ocr_server::pipeline::decode::DecodeLimits::default();
    let doc = ocr_server::document::Document::open(Arc::new(buf.into_inner()), &limits).unwrap();
    let selected: Vec<usize> = (0..6).collect();
    let pages = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            ocr_server::ocr::document::ocr_document(&s, &doc, &selected, s.base_options(), 4)
        });
        // The detector holds page 1, page 2 fills the queue: page 3 must wait for room.
        gate.entered.recv_timeout(Duration::from_secs(30)).unwrap();
        let started = Instant::now();
        while s.queue_report().stages[0].bulk.depth < 1 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "page 2 never queued"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        let gave_up = run.is_finished();
        gate.open();
        assert!(!gave_up, "the call gave up on a full queue");
        run.join().unwrap()
    })
    .unwrap();
    let lines: Vec<usize> = pages.iter().map(|p| p.lines.len()).collect();
    let heights: Vec<u32> = pages.iter().map(|p| p.height).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5, 6], "heights {heights:?}");
    assert_eq!(heights, (1..=6).map(|b| 40 + 40 * b).collect::<Vec<_>>());
    assert!(pages.iter().all(|p| p.error.is_none()));
    s.shutdown();
}

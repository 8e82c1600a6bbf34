//! Spans travel with queued work: a request submitted inside a caller's span (as the job runner
//! submits inside `job_page{job, page}`) is logged by the worker that fails its batch with that
//! span as parent, so the error line names the job. Fake models; one test per process, since it
//! installs the global subscriber (the workers log from their own threads).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::{Rgb, RgbImage};
use ocr_server::engine::ModelKind;
use ocr_server::engine::fake::FakeFactory;
use ocr_server::scheduler::{Class, Scheduler, SchedulerConfig};

/// Log output, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_batch_is_logged_in_the_span_of_each_request_it_held() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let mut cfg = SchedulerConfig::for_model(ModelKind::V6);
    cfg.base.det_resize.limit_side_px = 32;
    let scheduler = Scheduler::start(
        cfg,
        Arc::new(FakeFactory {
            failing_rec: true,
            ..FakeFactory::default()
        }),
    )
    .unwrap();
    scheduler.wait_ready(Duration::from_secs(30)).unwrap();
    let mut page = RgbImage::from_pixel(320, 80, Rgb([255, 255, 255]));
    for y in 30..50 {
        for x in 20..300 {
            page.put_pixel(x, y, Rgb([0, 0, 0]));
        }
    }
    let ticket = tracing::info_span!("job_page", job = "job-4242", page = 1).in_scope(|| {
        scheduler
            .submit(
                vec![page],
                scheduler.base_options().clone(),
                Class::Bulk,
                None,
            )
            .unwrap()
    });
    let outcome = ticket.rx.blocking_recv().unwrap();
    assert!(
        outcome.is_err(),
        "the failing recogniser did not fail the request"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("recognition batch failed"))
        .unwrap_or_else(|| panic!("no batch failure logged:\n{text}"));
    assert!(
        line.contains("job_page{job=\"job-4242\" page=1}") && line.contains("ocr_request{request="),
        "the failure line does not name the request and its job: {line}"
    );
}

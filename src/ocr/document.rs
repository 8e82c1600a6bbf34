//! Document OCR on an in-process [`Scheduler`]: what `ocr-server ocr`, the golden tests and an
//! embedding program call. A document's pages go through the same stages, batching, padding
//! and options as the server's requests, so the CLI's output is the server's output and the
//! golden tests measure the path the server serves.
//!
//! Each selected page is reserved from the memory budget, decoded, and submitted as its own
//! one-page request; at most `window` pages of a call are decoded or in the scheduler at once
//! (bounded memory whatever the document's length), and results are collected in page order.
//! Several threads may call this on one scheduler at once (the CLI's file workers do): their
//! pages share the batches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::document::{Document, select_pages};
use crate::engine::OcrOptions;
use crate::error::{Error, Result};
use crate::memory::Reservation;
use crate::pipeline::Page;
use crate::pipeline::decode::DecodeLimits;

use crate::scheduler::{Class, Scheduler, Ticket};

/// Pages of one call in flight at once when the caller has no reason to choose: enough to keep
/// detection and recognition of consecutive pages overlapping.
pub const DEFAULT_WINDOW: usize = 4;

/// A page of the call: failed before the scheduler, or in it (holding its memory reservation
/// until its result is back).
enum Pending {
    Failed(Error),
    Running(Ticket, Reservation),
}

/// OCR of every page of a document's bytes (up to `limits.max_pages`).
pub fn ocr_bytes(
    scheduler: &Scheduler,
    bytes: &[u8],
    opts: &OcrOptions,
    limits: &DecodeLimits,
) -> Result<Vec<Page>> {
    let doc = Document::open(Arc::new(bytes.to_vec()), limits)?;
    let selected = select_pages(None, doc.page_count(), limits.max_pages)?;
    ocr_document(scheduler, &doc, &selected, opts, DEFAULT_WINDOW)
}

/// OCR of the `selected` pages (0-based) of `doc`, blocking the calling thread (never call it
/// on an async runtime's thread). `opts` are the scheduler's base options with any overrides.
/// A page that cannot be decoded or rendered becomes a [`Page::failed`] (when every page fails,
/// the first page's error is the result, as for `/v1/ocr`); a model failure fails the call.
pub fn ocr_document(
    scheduler: &Scheduler,
    doc: &Document,
    selected: &[usize],
    opts: &OcrOptions,
    window: usize,
) -> Result<Vec<Page>> {
    let window = window.max(1);
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window);
    let mut pages = Vec::with_capacity(selected.len());
    let mut first_error = None;
    let mut collect = |p: Pending, pages: &mut Vec<Page>| -> Result<()> {
        match p {
            Pending::Failed(e) => {
                pages.push(Page::failed(&e));
                first_error.get_or_insert(e);
            }
            Pending::Running(ticket, _reservation) => {
                let outcome = ticket
                    .rx
                    .blocking_recv()
                    .map_err(|_| Error::ShuttingDown)??;
                pages.extend(outcome.pages);
            }
        }
        Ok(())
    };
    for &i in selected {
        if pending.len() >= window
            && let Some(p) = pending.pop_front()
        {
            collect(p, &mut pages)?;
        }
        match doc.decode_one(i) {
            Ok((image, reservation)) => {
                let ticket = scheduler.submit_within(
                    vec![image],
                    opts.clone(),
                    Class::Bulk,
                    None,
                    ROOM_PATIENCE,
                )?;
                pending.push_back(Pending::Running(ticket, reservation));
            }
            Err(e) => pending.push_back(Pending::Failed(e)),
        }
    }
    while let Some(p) = pending.pop_front() {
        collect(p, &mut pages)?;
    }
    match first_error {
        Some(e) if pages.iter().all(|p| p.error.is_some()) => Err(e),
        _ => Ok(pages),
    }
}

/// How long a page waits for room in a detection queue that other callers keep full before the
/// call fails with [`Error::Overloaded`].
pub const ROOM_PATIENCE: Duration = Duration::from_secs(600);

//! The streamed `GET /v1/jobs/{id}/result` (JSON and plain text).
//!
//! A job's result is never built in memory: a 100,000-page job's pages are read from the store
//! [`RESULT_SLICE`](crate::jobs::service::RESULT_SLICE) at a time ([`ResultPages`]), each written
//! to a buffer and handed to the client in chunks of [`CHUNK`] bytes through a channel of
//! [`QUEUED_CHUNKS`]. What one result holds is therefore one slice of parsed pages and a few
//! chunks, whatever the job's size; that bound is reserved from the memory budget
//! ([`STREAM_RESERVE`]) while the body streams, so many slow downloads wait for room like any other
//! work instead of adding up.
//!
//! The JSON has the [`JobResult`](super::jobs::JobResult) schema. Each document is walked up to
//! three times, one pass per member (`pages`, `text`, `extractions`), which re-reads its pages from
//! the store rather than keeping them; a document of one slice is read once. Everything that can
//! fail with a status (the job, the caller's tenant, the corrections, the budget) is settled before
//! the 200 is sent. A result of one chunk is sent whole with its `Content-Length`; a larger one is
//! chunked. A store error after the 200 cuts the body (the client sees an incomplete chunked
//! response, never a truncated document that parses) and is logged with the job's id. A client that
//! takes no chunk for [`SEND_TIMEOUT`] is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::Error;
use crate::extract::Extraction;
use crate::jobs::model::JobSummary;
use crate::jobs::service::{Correction, JobService, ResultPages, page_text};
use crate::jobs::store::JobStore;
use crate::memory::MemoryBudget;

use super::Format;

/// Bytes gathered before they go to the client.
pub const CHUNK: usize = 64 * 1024;
/// Chunks written ahead of the client.
pub const QUEUED_CHUNKS: usize = 4;
/// Reserved from the memory budget while a result streams: a slice of parsed pages (a dense
/// page's JSON is under 1 MiB) and the queued chunks, with room to spare.
pub const STREAM_RESERVE: u64 = 16 << 20;
/// How long a client may leave a chunk untaken before the download is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why writing stopped early.
enum Stop {
    /// The client went away or stopped reading: nothing more to do.
    Gone,
    /// The store failed: the body is cut.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

type Chunk = Result<Bytes, std::io::Error>;

struct Out {
    buf: Vec<u8>,
    tx: mpsc::Sender<Chunk>,
}

impl Out {
    fn raw(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn json<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        serde_json::to_writer(&mut self.buf, v)
            .map_err(|e| Stop::Failed(Error::Runtime(format!("serialising a result: {e}"))))
    }

    /// `s` as the inside of a JSON string (escaped, no quotes): a long string is written a
    /// piece at a time.
    fn json_str_part(&mut self, s: &str) -> Result<(), Stop> {
        let start = self.buf.len();
        self.json(s)?;
        // Drop the quotes serde_json wrote around it.
        self.buf.pop();
        self.buf.remove(start);
        Ok(())
    }

    async fn maybe_flush(&mut self) -> Result<(), Stop> {
        if self.buf.len() >= CHUNK {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Ok(chunk))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Gone),
        }
    }
}

/// The job's result in `format` (`json` or `text`), streamed.
pub(super) async fn stream(
    svc: &JobService,
    caller: &Caller,
    id: &str,
    format: Format,
    budget: &MemoryBudget,
) -> Result<Response, Error> {
    let (job, corrections) = svc.result_source(caller, id).await?;
    let reservation = {
        let budget = budget.clone();
        tokio::task::spawn_blocking(move || budget.reserve(STREAM_RESERVE))
            .await
            .map_err(|e| Error::Runtime(format!("reserve task: {e}")))??
    };
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUED_CHUNKS);
    let store = svc.store().clone();
    let text = format == Format::Text;
    tokio::spawn(async move {
        let _reservation = reservation;
        let id = job.job.id.clone();
        let mut out = Out {
            buf: Vec::with_capacity(CHUNK + CHUNK / 4),
            tx,
        };
        let written = if text {
            write_text(&mut out, &store, &job, &corrections).await
        } else {
            write_json(&mut out, &store, &job, &corrections).await
        };
        let done = match written {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        if let Err(Stop::Failed(e)) = done {
            tracing::error!(job = %id, error = %e, "streaming a result failed; its body was cut");
            metrics::counter!("ocr_result_streams_cut_total").increment(1);
            let _ = out.tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    // A result that fits one chunk (most: a job of a few pages) goes out whole, with its
    // length; a larger one streams.
    let mut rx = rx;
    let first = rx.recv().await;
    let second = match &first {
        Some(Ok(_)) => rx.recv().await,
        _ => None,
    };
    let body = match (first, second) {
        (Some(Ok(whole)), None) => Body::from(whole),
        (first, second) => {
            let head = futures_util::stream::iter(first.into_iter().chain(second));
            let rest = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            Body::from_stream(futures_util::StreamExt::chain(head, rest))
        }
    };
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

fn pages_of(
    store: &Arc<dyn JobStore>,
    job: &JobSummary,
    doc: usize,
    corrections: &Arc<Vec<Correction>>,
) -> ResultPages {
    let count = job.doc_pages.get(doc).copied().unwrap_or(0);
    ResultPages::new(store.clone(), &job.job.id, doc, count, corrections.clone())
}

/// Every page's text, pages separated by a form feed (`\n\f`), documents one after another.
async fn write_text(
    out: &mut Out,
    store: &Arc<dyn JobStore>,
    job: &JobSummary,
    corrections: &Arc<Vec<Correction>>,
) -> Result<(), Stop> {
    let mut first = true;
    for d in &job.job.documents {
        let mut pages = pages_of(store, job, d.index, corrections);
        while let Some((i, page)) = pages.next().await? {
            if !first {
                out.raw("\n\u{c}");
            }
            first = false;
            out.raw(&page_text(d.index, i, page, corrections));
            out.maybe_flush().await?;
        }
    }
    Ok(())
}

/// The [`JobResult`](super::jobs::JobResult) JSON, a member at a time.
async fn write_json(
    out: &mut Out,
    store: &Arc<dyn JobStore>,
    job: &JobSummary,
    corrections: &Arc<Vec<Correction>>,
) -> Result<(), Stop> {
    let j = &job.job;
    let extract = j.options.overrides.extract;
    let first_pass = j.options.first_pass.as_ref();
    // A two-pass job (one sync-sized document): its first document's completed pages and
    // fields, to say which fields this pass changed.
    let mut first_done: Vec<bool> = Vec::new();
    let mut first_fields: Vec<Extraction> = Vec::new();
    out.raw("{\"id\":");
    out.json(&j.id)?;
    out.raw(",\"state\":");
    out.json(&j.state)?;
    if let Some(tag) = &j.tag {
        out.raw(",\"tag\":");
        out.json(tag)?;
    }
    out.raw(",\"documents\":[");
    for (n, d) in j.documents.iter().enumerate() {
        let keep = first_pass.is_some() && n == 0;
        if n > 0 {
            out.raw(",");
        }
        out.raw("{\"name\":");
        out.json(&d.name)?;
        let mut pages = pages_of(store, job, d.index, corrections);
        out.raw(",\"pages\":[");
        while let Some((i, page)) = pages.next().await? {
            if i > 0 {
                out.raw(",");
            }
            out.json(&page)?;
            if keep {
                first_done.push(page.is_some());
            }
            out.maybe_flush().await?;
        }
        out.raw("],\"text\":\"");
        pages.rewind();
        while let Some((i, page)) = pages.next().await? {
            if i > 0 {
                out.raw("\\n\\n");
            }
            out.json_str_part(&page_text(d.index, i, page, corrections))?;
            out.maybe_flush().await?;
        }
        out.raw("\"");
        if let Some(e) = extract {
            pages.rewind();
            let mut opened = false;
            while let Some((i, page)) = pages.next().await? {
                let Some(fields) = page
                    .filter(|p| !p.lines.is_empty())
                    .and_then(|p| crate::extract::extract_page(e, p, i + 1))
                else {
                    continue;
                };
                out.raw(if opened { "," } else { ",\"extractions\":[" });
                opened = true;
                out.json(&fields)?;
                if keep {
                    first_fields.push(fields);
                }
                out.maybe_flush().await?;
            }
            if opened {
                out.raw("]");
            }
        }
        out.raw("}");
    }
    out.raw("],\"corrections\":");
    out.json(corrections.as_slice())?;
    if let Some(first) = first_pass
        && !j.documents.is_empty()
    {
        // Only pages this pass completed: a page still running has no second answer yet.
        let done: Vec<Extraction> = first
            .extractions
            .iter()
            .filter(|e| {
                e.page
                    .checked_sub(1)
                    .and_then(|p| first_done.get(p))
                    .is_some_and(|d| *d)
            })
            .cloned()
            .collect();
        out.raw(",\"changes\":");
        out.json(&super::jobs::field_changes(&done, &first_fields))?;
    }
    out.raw("}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_string_written_in_pieces_is_one_json_string() {
        let (tx, _rx) = mpsc::channel(1);
        let mut out = Out {
            buf: Vec::new(),
            tx,
        };
        out.raw("\"");
        for (i, piece) in ["a \"quoted\"\nline", "tab\there", "ünï\u{c}"]
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.raw("\\n\\n");
            }
            out.json_str_part(piece).ok().unwrap();
        }
        out.raw("\"");
        let back: String = serde_json::from_slice(&out.buf).unwrap();
        assert_eq!(back, "a \"quoted\"\nline\n\ntab\there\n\nünï\u{c}");
    }
}

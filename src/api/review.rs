//! The review desk: `GET /review` (one HTML page, its CSS and JavaScript embedded in the binary
//! with `include_str!`), and the two routes it reads besides the jobs API:
//! - `GET /v1/review/queue`: the `needs_review` jobs a caller may see, ordered by priority
//!   (higher first), then lowest line confidence, each with its documents and why it waits
//!   (the field or check its pages failed, a line under the threshold, random sampling),
//!   computed by [`JobService::review_queue`](crate::jobs::service::JobService::review_queue)
//!   and mapped here;
//! - `GET /v1/jobs/{id}/documents/{d}/pages/{p}/image`: a job page rendered from the stored
//!   document, scaled to fit [`IMAGE_MAX_SIDE`] and sent as JPEG, for the desk to draw the
//!   page's boxes over (the result's coordinates are in the page's own pixels; the desk scales
//!   them by `image width / page width`).
//!
//! The page is plain HTML, CSS and JavaScript with no build step and no dependency: it is
//! small, it must work offline (nothing is fetched from outside), and a committed build output
//! would be a second copy of the same code to keep in step. Saving a review is the existing
//! `POST /v1/jobs/{id}/review` with line corrections.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::Caller;
use crate::error::Error;

use super::AppState;
use super::problem::ApiError;

/// The longest side of a page image, in pixels: enough to read a receipt's small print on a
/// desktop screen, small enough that a page is a few hundred kilobytes.
pub const IMAGE_MAX_SIDE: u32 = 1600;

/// How many `needs_review` jobs the queue reads at most (the count says when there are more).
const QUEUE_MAX: usize = 1000;
/// Reasons listed per queue entry (a 100,000-page job under its threshold would list them all).
const REASONS_MAX: usize = 100;

const DESK_HTML: &str = include_str!("review_desk.html");

/// The review desk: a page for people (HTML; its data comes from this API with the reviewer's
/// key).
#[utoipa::path(get, path = "/review", responses(
    (status = 200, description = "The review desk", content_type = "text/html", body = String)))]
pub(super) async fn desk() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DESK_HTML,
    )
        .into_response()
}

/// One job waiting for review.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueEntry {
    pub id: String,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The job's documents, by name.
    pub documents: Vec<String>,
    /// The lowest line confidence over the job's pages.
    pub min_confidence: Option<f32>,
    pub review_threshold: Option<f32>,
    /// Why it waits: one entry per page sent to review (the first 100, by page).
    pub reasons: Vec<QueueReason>,
    pub created_at_ms: i64,
}

pub use crate::jobs::service::QueueReason;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewQueue {
    /// Jobs waiting (at most 1000 are read).
    pub waiting: usize,
    pub jobs: Vec<QueueEntry>,
}

/// The review queue: `needs_review` jobs by priority, then lowest confidence.
#[utoipa::path(get, path = "/v1/review/queue", responses((status = 200, body = ReviewQueue)))]
pub(super) async fn queue(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let svc = st.jobs.as_ref().ok_or(Error::JobsDisabled)?;
    let waiting = svc.review_queue(&caller, QUEUE_MAX, REASONS_MAX).await?;
    let entries: Vec<QueueEntry> = waiting
        .into_iter()
        .map(|(summary, reasons)| QueueEntry {
            id: summary.job.id,
            priority: summary.job.priority,
            tag: summary.job.tag,
            documents: summary.job.documents.into_iter().map(|d| d.name).collect(),
            min_confidence: summary.min_confidence,
            review_threshold: summary.job.review_threshold,
            reasons,
            created_at_ms: summary.job.created_at_ms,
        })
        .collect();
    Ok(Json(ReviewQueue {
        waiting: entries.len(),
        jobs: entries,
    })
    .into_response())
}

/// A job page's image, rendered from the stored document and scaled to fit 1600 pixels
/// (JPEG). `d` and `p` count from 0, as in corrections.
#[utoipa::path(get, path = "/v1/jobs/{id}/documents/{d}/pages/{p}/image",
    params(("id" = String, Path), ("d" = usize, Path), ("p" = usize, Path)),
    responses(
        (status = 200, description = "The page as JPEG", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, body = super::problem::Problem, content_type = "application/problem+json")))]
pub(super) async fn page_image(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((id, d, p)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let svc = st.jobs.as_ref().ok_or(Error::JobsDisabled)?;
    let job = svc.get(&caller, &id).await?;
    let missing = || Error::PageNotFound(format!("job {id} has no page {p} in document {d}"));
    let (d, p): (usize, usize) = match (d.parse(), p.parse()) {
        (Ok(d), Ok(p)) => (d, p),
        _ => return Err(missing().into()),
    };
    let doc = job.documents.get(d).ok_or_else(missing)?;
    let page = doc.pages.iter().find(|x| x.page == p).ok_or_else(missing)?;
    let source = page.source_index;
    // Rendering is bounded like any decode: one of the API's decode permits, and the page's
    // worst case reserved from the memory budget while its pixels live (issue 26: 20 parallel
    // requests for an 8000×8000 page were 9 GB outside the budget).
    let _permit = st
        .ocr
        .decode_permits()
        .acquire()
        .await
        .map_err(|_| Error::ShuttingDown)?;
    let opened = svc.open_document(&doc.location).await?;
    let jpeg = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Error> {
        let (img, _reservation) = opened.decode_one(source)?;
        let (w, h) = img.dimensions();
        let scale = (IMAGE_MAX_SIDE as f32 / w.max(h) as f32).min(1.0);
        let img = if scale < 1.0 {
            let (nw, nh) = (
                ((w as f32 * scale).round() as u32).max(1),
                ((h as f32 * scale).round() as u32).max(1),
            );
            image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle)
        } else {
            img
        };
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .map_err(|e| Error::Runtime(format!("encoding a page image: {e}")))?;
        Ok(out)
    })
    .await
    .map_err(|e| Error::Runtime(format!("page image task: {e}")))??;
    let mut resp = jpeg.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(resp)
}

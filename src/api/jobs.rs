//! The jobs API: `POST /v1/jobs`, `GET /v1/jobs`, `GET|DELETE /v1/jobs/{id}`,
//! `GET /v1/jobs/{id}/result`, `GET /v1/jobs/{id}/events`, `POST /v1/jobs/{id}/retry`,
//! `POST /v1/jobs/{id}/review`, `POST /v1/jobs/{id}/webhook/resend`, and the admin routes
//! `POST /v1/admin/pause`, `POST /v1/admin/resume`, `GET /v1/admin/pauses`.
//!
//! Handlers extract, call [`JobService`] and map; the service owns the transitions. A job's
//! options are [`JobRequestOptions`] (the shared [`Overrides`] and [`JobFields`]), from the query
//! and the body ([`body::parse_job`]); its spec comes from
//! [`OcrService::job_spec`](crate::ocr::OcrService::job_spec), which validates them as
//! `/v1/ocr` does and pins the profile and model set. A job is acknowledged (202) only after
//! its documents are stored and its rows are committed. An `Idempotency-Key` names the job for
//! 24 h (`--idempotency-ttl-s`): the same key and payload answer with the same job
//! (`Idempotent-Replayed: true`), the same key with another payload is 422
//! `idempotency_conflict`.
//!
//! Results (`?format=`): `json` and `text` are streamed from the store (`super::results`);
//! `hocr` and `pdf` are of one document (`document=N`, default 0). `hybrid_response` maps
//! the answer of `Prefer: respond-async` on `/v1/ocr` (the result, or 202 with the job).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::Error;

use crate::jobs::model::{JobClass, JobRecord, JobState};
use crate::jobs::service::{Correction, JobService, Review, Source, Upload};
use crate::overrides::Overrides;
use crate::pipeline::Page;

use super::body;
pub use super::body::{JsonDocument, JsonJobRequest};
pub use super::dto::{EventView, JobListEntry, JobView};
use super::options::{Fields, Options, Overlay, QueryOptions, StrictQuery, json_body};
use super::problem::{ApiError, Problem};
use super::{AppState, Format, read_body};
use crate::ocr::AsyncAnswer;

/// Options of a job: the shared [`Overrides`] plus the job's own fields.
pub type JobRequestOptions = Options<JobFields>;

/// A job's own options, beside the shared [`Overrides`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFields {
    /// A completed page whose lowest line confidence is under this puts the job in
    /// `needs_review`.
    pub review_threshold: Option<f32>,
    /// Echoed back on the job.
    pub tag: Option<String>,
    /// Order within the bulk class (higher first); default 0.
    pub priority: Option<i32>,
    /// POSTed a signed event when the job ends or needs review (Standard Webhooks v1).
    pub webhook_url: Option<String>,
    /// Name of a raw-body document (default `document`).
    pub name: Option<String>,
    /// Random sampling as a review trigger: this fraction (0–1) of completed pages goes to
    /// review whatever its confidence, the reason saying it was sampled.
    pub review_sample_rate: Option<f32>,
}

impl Fields for JobFields {
    const FIELDS: &'static [&'static str] = &[
        "review_threshold",
        "tag",
        "priority",
        "webhook_url",
        "name",
        "review_sample_rate",
    ];
}

impl Overlay for JobFields {
    fn overlay(self, o: JobFields) -> JobFields {
        JobFields {
            review_threshold: o.review_threshold.or(self.review_threshold),
            tag: o.tag.or(self.tag),
            priority: o.priority.or(self.priority),
            webhook_url: o.webhook_url.or(self.webhook_url),
            name: o.name.or(self.name),
            review_sample_rate: o.review_sample_rate.or(self.review_sample_rate),
        }
    }
}

fn service(st: &AppState) -> Result<&Arc<JobService>, Error> {
    st.jobs.as_ref().ok_or(Error::JobsDisabled)
}

/// The API view of a job: the record with its ETA and webhook deliveries.
async fn view(svc: &JobService, job: &JobRecord) -> Result<JobView, Error> {
    let eta = svc.eta_s(job).await?;
    let deliveries = svc.store().deliveries(&job.id).await?;
    Ok(JobView::new(job, eta, &deliveries))
}

pub(super) async fn job_response(
    svc: &JobService,
    status: StatusCode,
    job: &JobRecord,
    replayed: bool,
) -> Result<Response, Error> {
    let location = format!("/v1/jobs/{}", job.id);
    let v = view(svc, job).await?;
    let retry = v.eta_s;
    let mut resp = (status, Json(v)).into_response();
    let h = resp.headers_mut();
    if let Ok(l) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, l);
    }
    if let Some(s) = retry {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s.clamp(1, 60)));
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Creates a job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    params(Overrides, JobFields, ("idempotency-key" = Option<String>, Header, description = "Names the job for 24 h: a retry with the same payload returns the same job")),
    request_body(description = "One document as `image/*` or `application/pdf` bytes (streamed to the document store, at most `--max-document-bytes`), multipart/form-data with `file` parts, or JSON `{\"documents\": [{\"name\", \"data\": base64} or {\"name\", \"url\": \"s3://BUCKET/KEY\"}], ...options}`", content(
        (Vec<u8> = "image/*"),
        (JsonJobRequest = "application/json"),
        (Vec<u8> = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "Accepted; Location names the job", body = JobView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid document or option, or an Idempotency-Key reused with another payload", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_job(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryOptions(query): QueryOptions<JobFields>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    if st.shutting_down.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::ShuttingDown.into());
    }
    let key = idempotency_key(&headers)?;
    let id = JobService::new_job_id();
    // Quota, backlog and disk before a byte of the body is read.
    svc.admit(&caller, JobClass::Bulk, 1).await?;
    let (mime, _) = body::media_type(&headers);
    if body::is_raw(&mime) {
        let spec = st.ocr.job_spec(&query, JobClass::Bulk)?;
        let limit = svc.documents().max_bytes();
        if super::content_length(&headers).is_some_and(|n| n > limit) {
            return Err(Error::PayloadTooLarge {
                limit: limit as usize,
            }
            .into());
        }
        let stored = svc
            .documents()
            .upload(&caller.owner, &id, 0, body.into_data_stream())
            .await?;
        let name = query
            .route
            .name
            .clone()
            .unwrap_or_else(|| "document".into());
        let doc = Upload {
            name,
            source: Source::Stored(stored),
        };
        let (job, replayed) = svc.create(&caller, id, vec![doc], spec, key).await?;
        return Ok(job_response(svc, StatusCode::ACCEPTED, &job, replayed).await?);
    }
    // The body's reservation lives until the job is created (its documents are the body's
    // bytes, decoded from base64 or cut from the multipart body).
    let (bytes, _body) =
        read_body(&headers, body, st.cfg.max_body_bytes, &st.cfg.decode.memory).await?;
    let (docs, body_opts) = body::parse_job(&headers, bytes).await?;
    let opts = query.overlay(body_opts);
    let spec = st.ocr.job_spec(&opts, JobClass::Bulk)?;
    let (job, replayed) = svc.create(&caller, id, docs, spec, key).await?;
    Ok(job_response(svc, StatusCode::ACCEPTED, &job, replayed).await?)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Error::InvalidOption("Idempotency-Key must be ASCII".into()))
        })
        .transpose()
}

/// A job's state, per-document and per-page states, progress and ETA.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = JobView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_job(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    let job = svc.get(&caller, &id).await?;
    Ok(job_response(svc, StatusCode::OK, &job, false).await?)
}

/// Cancels a job: queued pages are dropped, running ones abandoned on every replica.
#[utoipa::path(delete, path = "/v1/jobs/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = JobView),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The job already finished", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn cancel_job(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    let job = svc.cancel(&caller, &id).await?;
    Ok(job_response(svc, StatusCode::OK, &job, false).await?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state (`needs_review` is the review queue).
    pub state: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (1–500, default 50).
    pub limit: Option<usize>,
}

impl Fields for ListQuery {
    const FIELDS: &'static [&'static str] = &["state", "cursor", "limit"];
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobListEntry>,
    pub next_cursor: Option<String>,
}

/// Lists jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", params(ListQuery), responses((status = 200, body = JobList)))]
pub(super) async fn list_jobs(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| Error::InvalidOption(format!("unknown state {s:?}")))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let jobs = svc.list(&caller, state, q.cursor.as_deref(), limit).await?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.job.id.clone()))
        .flatten();
    // The queued pages ahead, read once per class for the whole listing.
    let mut ahead: std::collections::HashMap<JobClass, u64> = Default::default();
    let mut views = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let eta = if j.job.state.is_final() {
            None
        } else {
            let queued = match ahead.get(&j.job.class) {
                Some(q) => *q,
                None => {
                    let q = svc.store().backlog(j.job.class).await?.queued;
                    ahead.insert(j.job.class, q);
                    q
                }
            };
            Some(svc.eta_from(j.counts.queued + j.counts.processing, queued))
        };
        views.push(JobListEntry::new(j, eta));
    }
    Ok(Json(JobList {
        jobs: views,
        next_cursor,
    })
    .into_response())
}

/// The audit trail: every transition and action, with timestamps.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", params(("id" = String, Path)), responses((status = 200, body = Vec<EventView>)))]
pub(super) async fn job_events(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let events = service(&st)?.events(&caller, &id).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect::<Vec<_>>()).into_response())
}

/// Requeues the job's failed (dead-lettered) pages; completed pages are kept.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", params(("id" = String, Path)), responses((status = 202, body = JobView)))]
pub(super) async fn retry_job(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    let job = svc.retry(&caller, &id).await?;
    Ok(job_response(svc, StatusCode::ACCEPTED, &job, false).await?)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// Approve the result as it is.
    #[serde(default)]
    pub approve: bool,
    /// Corrections: of a line (`line` given; its box and words stay, and the JSON result, hOCR
    /// and searchable PDF carry it) or of a page's whole text (text outputs only).
    #[serde(default)]
    pub corrections: Vec<Correction>,
    pub reviewer: Option<String>,
}

/// Approves or corrects a job in `needs_review` and completes it.
#[utoipa::path(post, path = "/v1/jobs/{id}/review", params(("id" = String, Path)), request_body = ReviewRequest, responses(
    (status = 200, body = JobView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn review_job(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    let req: ReviewRequest = json_body("review body", &body)?;
    let review = Review {
        approve: req.approve,
        corrections: req.corrections,
        reviewer: req.reviewer,
    };
    let job = svc.review(&caller, &id, review).await?;
    Ok(job_response(svc, StatusCode::OK, &job, false).await?)
}

/// Makes the job's failed webhook deliveries pending again.
#[utoipa::path(post, path = "/v1/jobs/{id}/webhook/resend", params(("id" = String, Path)), responses((status = 202, body = JobView)))]
pub(super) async fn resend_webhooks(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    let job = svc.resend_webhooks(&caller, &id).await?;
    Ok(job_response(svc, StatusCode::ACCEPTED, &job, false).await?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultQuery {
    /// `json` (default); `text` (pages and documents separated by form feeds, with review
    /// corrections); `hocr` or `pdf` (a searchable PDF) of one document, chosen by `document`.
    pub format: Option<Format>,
    /// The document (0-based) for `hocr` and `pdf`; default 0.
    pub document: Option<usize>,
}

impl Fields for ResultQuery {
    const FIELDS: &'static [&'static str] = &["format", "document"];
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentResult {
    pub name: String,
    pub text: String,
    /// Per page: its result, or null when it is not completed (see the job's page states).
    pub pages: Vec<Option<Page>>,
    /// With the job's `extract`: the fields of each completed page (`page` counts from 1
    /// within this document).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extractions: Vec<crate::extract::Extraction>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobResult {
    pub id: String,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub documents: Vec<DocumentResult>,
    /// Corrections made in review; they replace the text of their pages in `text`.
    pub corrections: Vec<Correction>,
    /// A two-pass job (`followup=` on `/v1/ocr`): the fields whose value this pass changed
    /// from the first pass's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<FieldChange>>,
}

/// A field that differs between a two-pass job's first (fast) pass and this one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// The page, from 1.
    pub page: usize,
    /// The field's name (`total`, `date_of_birth`, …).
    pub field: String,
    /// The first pass's value (null: it found none).
    pub first: Option<String>,
    /// This pass's value (null: it found none).
    pub followup: Option<String>,
}

/// The fields whose values differ between `first` and `now` (pages of the first document).
pub(super) fn field_changes(
    first: &[crate::extract::Extraction],
    now: &[crate::extract::Extraction],
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let pages: std::collections::BTreeSet<usize> =
        first.iter().chain(now).map(|e| e.page).collect();
    for page in pages {
        let fields = |v: &[crate::extract::Extraction]| {
            v.iter()
                .filter(|e| e.page == page)
                .flat_map(|e| e.fields.iter().map(|(k, f)| (k.clone(), f.value.clone())))
                .collect::<std::collections::BTreeMap<String, String>>()
        };
        let (a, b) = (fields(first), fields(now));
        let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for name in names {
            let (x, y) = (a.get(name), b.get(name));
            if x != y {
                out.push(FieldChange {
                    page,
                    field: name.clone(),
                    first: x.cloned(),
                    followup: y.cloned(),
                });
            }
        }
    }
    out
}

/// The job's result so far (completed pages; others null).
#[utoipa::path(get, path = "/v1/jobs/{id}/result", params(("id" = String, Path), ResultQuery), responses(
    (status = 200, description = "The result in the asked `format`", content(
        (JobResult = "application/json"),
        (String = "text/plain"),
        (String = "text/vnd.hocr+html"),
        (Vec<u8> = "application/pdf"),
    )),
    (status = 422, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn job_result(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    StrictQuery(q): StrictQuery<ResultQuery>,
) -> Result<Response, ApiError> {
    let svc = service(&st)?;
    if let Some(format @ (Format::Hocr | Format::Pdf)) = q.format {
        let job = svc.get(&caller, &id).await?;
        let (doc, selected, pages) = svc.document_pages(&job, q.document.unwrap_or(0)).await?;
        return Ok(super::respond(
            format,
            st.scheduler.kind(),
            doc,
            selected,
            pages,
            Default::default(),
            super::JsonExtras::default(),
        )
        .await?);
    }
    let format = q.format.unwrap_or(Format::Json);
    Ok(super::results::stream(svc, &caller, &id, format, &st.cfg.decode.memory).await?)
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Pause or resume only the bulk jobs with this tag (default: all bulk work).
    pub tag: Option<String>,
    /// Only this tenant's bulk jobs (with `tag`: only its jobs with that tag); tags are each
    /// tenant's own names, so one tenant's `urgent` is not another's.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pauses {
    /// Paused scopes: `*` for all bulk work, a tag (every tenant's jobs with it), or
    /// `TENANT:TAG` / `TENANT:*` (one tenant's).
    pub paused: Vec<String>,
}

async fn set_paused(st: &AppState, body: bytes::Bytes, paused: bool) -> Result<Response, ApiError> {
    let req: PauseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        json_body("pause body", &body)?
    };
    let paused = service(st)?
        .set_paused(req.tenant.as_deref(), req.tag.as_deref(), paused)
        .await?;
    Ok(Json(Pauses { paused }).into_response())
}

/// Pauses bulk work (all, or one tag): its pages stay queued and are not claimed by any
/// replica; interactive work is unaffected.
#[utoipa::path(post, path = "/v1/admin/pause", request_body(content = PauseRequest, description = "Optional: `{\"tag\": \"...\"}`"), responses((status = 200, body = Pauses)))]
pub(super) async fn pause(
    State(st): State<Arc<AppState>>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    set_paused(&st, body, true).await
}

/// Resumes paused bulk work (all, or one tag).
#[utoipa::path(post, path = "/v1/admin/resume", request_body(content = PauseRequest, description = "Optional: `{\"tag\": \"...\"}`"), responses((status = 200, body = Pauses)))]
pub(super) async fn resume(
    State(st): State<Arc<AppState>>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    set_paused(&st, body, false).await
}

/// The paused scopes.
#[utoipa::path(get, path = "/v1/admin/pauses", responses((status = 200, body = Pauses)))]
pub(super) async fn pauses(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let paused = service(&st)?.paused(&Caller::anonymous()).await?;
    Ok(Json(Pauses { paused }).into_response())
}

/// The answer of the hybrid `/v1/ocr` (`Prefer: respond-async, wait=N`, run by
/// [`crate::ocr::OcrService::respond_async`]): the sync result (200, `Content-Location` naming
/// the job) when the job finished within `wait`, else 202 with the job's `Location`.
pub(super) async fn hybrid_response(
    st: &AppState,
    answer: AsyncAnswer,
    format: Format,
    arrived: std::time::Instant,
) -> Result<Response, Error> {
    let mut resp = match answer {
        AsyncAnswer::Done { job, pages: r } => {
            let mut resp = super::respond(
                format,
                r.kind,
                r.doc,
                r.selected,
                r.pages,
                r.timings,
                super::JsonExtras {
                    extractions: r.extractions,
                    followup: None,
                },
            )
            .await?;
            let h = resp.headers_mut();
            if let Ok(l) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
                h.insert(header::CONTENT_LOCATION, l);
            }
            let total = arrived.elapsed().as_secs_f64() * 1000.0;
            if let Ok(v) = HeaderValue::from_str(&format!("{total:.1}")) {
                h.insert(super::X_TOTAL_TIME, v);
            }
            resp
        }
        AsyncAnswer::Pending(job) => {
            let mut resp = job_response(service(st)?, StatusCode::ACCEPTED, &job, false).await?;
            resp.headers_mut().insert(
                "preference-applied",
                HeaderValue::from_static("respond-async"),
            );
            resp
        }
    };
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Prefer"));
    Ok(resp)
}

/// `Prefer` (RFC 7240): whether `respond-async` is asked, and `wait` in seconds.
pub(crate) fn parse_prefer(headers: &HeaderMap) -> (bool, Option<u64>) {
    let mut async_ = false;
    let mut wait = None;
    for v in headers.get_all("prefer") {
        let Ok(v) = v.to_str() else { continue };
        for token in v.split(',') {
            let token = token.split(';').next().unwrap_or("").trim();
            let (name, value) = token.split_once('=').map_or((token, None), |(n, v)| {
                (n.trim(), Some(v.trim().trim_matches('"')))
            });
            match name.to_ascii_lowercase().as_str() {
                "respond-async" => async_ = true,
                "wait" => wait = value.and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
    }
    (async_, wait)
}

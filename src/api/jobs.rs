//! The jobs API: `POST /v1/jobs`, `GET /v1/jobs`, `GET|DELETE /v1/jobs/{id}`,
//! `GET /v1/jobs/{id}/result`, `GET /v1/jobs/{id}/events`, `POST /v1/jobs/{id}/retry`,
//! `POST /v1/jobs/{id}/review`.
//!
//! A job is acknowledged (202) only after its documents are on disk (fsynced) and its rows are
//! committed; the runner then feeds its pages to the scheduler's bulk class. An
//! `Idempotency-Key` names the job for 24 h (`--idempotency-ttl-s`): the same key and payload
//! answer with the same job (`Idempotent-Replayed: true`), the same key with another payload is
//! 422 `idempotency_conflict`.

use std::io::Write;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::{Document, select_pages};
use crate::engine::ModelKind;
use crate::error::Error;
use crate::jobs::runner::{JobOptions, now_ms};
use crate::jobs::store::{
    Created, Event, JobRecord, JobState, JobStore, NewDocument, NewJob, PageRef, PageState,
};
use crate::pipeline::{Page, document_text};

use super::problem::{ApiError, Problem};
use super::{AppState, Format, RequestOptions, read_body};

/// Options of a job: those of `/v1/ocr` plus the job's own.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobRequestOptions {
    pub model: Option<ModelKind>,
    pub det_limit_side: Option<u32>,
    pub classify: Option<bool>,
    pub min_confidence: Option<f32>,
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
    /// Pages of each PDF or TIFF, 1-based: `1-3,7`, `5-` (default: all).
    pub pages: Option<String>,
}

impl JobRequestOptions {
    fn overlay(self, o: JobRequestOptions) -> JobRequestOptions {
        JobRequestOptions {
            model: o.model.or(self.model),
            det_limit_side: o.det_limit_side.or(self.det_limit_side),
            classify: o.classify.or(self.classify),
            min_confidence: o.min_confidence.or(self.min_confidence),
            review_threshold: o.review_threshold.or(self.review_threshold),
            tag: o.tag.or(self.tag),
            priority: o.priority.or(self.priority),
            webhook_url: o.webhook_url.or(self.webhook_url),
            name: o.name.or(self.name),
            pages: o.pages.or(self.pages),
        }
    }
}

/// A document in a JSON job request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct JsonDocument {
    pub name: Option<String>,
    /// The document bytes, base64.
    pub data: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct JsonJobRequest {
    pub documents: Vec<JsonDocument>,
    #[serde(flatten)]
    pub options: JobRequestOptions,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub job: JobRecord,
    /// Pages finished (completed or failed for good) over pages in all.
    pub progress: f64,
    /// Seconds until the job is likely finished (null when final).
    pub eta_s: Option<u64>,
    /// Webhook events of the job and their delivery attempts.
    pub webhook_deliveries: Vec<crate::jobs::store::Delivery>,
}

fn view(st: &AppState, job: JobRecord) -> JobView {
    let finished = job.pages_done + job.pages_failed;
    let progress = if job.pages_total == 0 {
        1.0
    } else {
        finished as f64 / job.pages_total as f64
    };
    let eta_s = (!job.state.is_final()).then(|| {
        let ahead = st.jobs.as_ref().map_or(0, |r| r.pending());
        st.scheduler.retry_after(job.pages_total - finished + ahead)
    });
    let webhook_deliveries = st
        .jobs
        .as_ref()
        .and_then(|r| r.store().deliveries(&job.id).ok())
        .unwrap_or_default();
    JobView {
        job,
        progress,
        eta_s,
        webhook_deliveries,
    }
}

fn runner(st: &AppState) -> Result<&Arc<crate::jobs::runner::Runner>, Error> {
    st.jobs
        .as_ref()
        .ok_or_else(|| Error::InvalidOption("jobs are not enabled on this server".into()))
}

fn not_found(id: &str) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Not found",
        "job_not_found",
        format!("no job {id}"),
    )
    .into_response()
}

pub(super) fn job_response(
    st: &AppState,
    status: StatusCode,
    job: JobRecord,
    replayed: bool,
) -> Response {
    let location = format!("/v1/jobs/{}", job.id);
    let v = view(st, job);
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
    resp
}

/// A document received: its name and bytes.
pub(super) struct Doc {
    pub(super) name: String,
    pub(super) bytes: bytes::Bytes,
}

async fn split_job_body(
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(Vec<Doc>, JobRequestOptions), Error> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("image/") || mime == "application/octet-stream" || mime == "application/pdf"
    {
        return Ok((
            vec![Doc {
                name: String::new(),
                bytes: body,
            }],
            JobRequestOptions::default(),
        ));
    }
    if mime == "application/json" {
        let req: JsonJobRequest = serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("JSON body: {e}")))?;
        let mut docs = Vec::new();
        for (i, d) in req.documents.into_iter().enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(d.data.trim().trim_end_matches('='))
                .map_err(|e| {
                    Error::BadRequest(format!("documents[{i}].data is not base64: {e}"))
                })?;
            docs.push(Doc {
                name: d.name.unwrap_or_else(|| format!("document-{i}")),
                bytes: bytes.into(),
            });
        }
        return Ok((docs, req.options));
    }
    if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(&ctype)
            .map_err(|e| Error::BadRequest(format!("multipart: {e}")))?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut docs = Vec::new();
        let mut fields: Vec<(String, String)> = Vec::new();
        let bad = |e: multer::Error| Error::BadRequest(format!("multipart: {e}"));
        while let Some(field) = mp.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or("").to_string();
            if name == "file" || name == "files" {
                let file_name = field
                    .file_name()
                    .map_or_else(|| format!("document-{}", docs.len()), str::to_string);
                docs.push(Doc {
                    name: file_name,
                    bytes: field.bytes().await.map_err(bad)?,
                });
            } else {
                fields.push((name, field.text().await.map_err(bad)?));
            }
        }
        let encoded = serde_urlencoded::to_string(&fields)
            .map_err(|e| Error::BadRequest(format!("multipart fields: {e}")))?;
        let opts = serde_urlencoded::from_str(&encoded)
            .map_err(|e| Error::InvalidOption(format!("multipart fields: {e}")))?;
        return Ok((docs, opts));
    }
    Err(Error::UnsupportedMediaType(format!(
        "`{}`; send image/* bytes (one document), multipart/form-data with `file` parts, or \
         application/json with base64 `documents`",
        if mime.is_empty() { "(none)" } else { &mime }
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    params(JobRequestOptions, ("idempotency-key" = Option<String>, Header, description = "Names the job for 24 h: a retry with the same payload returns the same job")),
    request_body(description = "One document as `image/*` bytes, multipart/form-data with `file` parts, or JSON `{\"documents\": [{\"name\", \"data\": base64}], ...options}`", content(
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
    query: Result<Query<JobRequestOptions>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    runner(&st)?;
    if st.shutting_down.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::ShuttingDown.into());
    }
    let Query(query) =
        query.map_err(|e| Error::InvalidOption(format!("query string: {}", e.body_text())))?;
    let bytes = read_body(&headers, body, st.cfg.max_body_bytes).await?;
    let (docs, body_opts) = split_job_body(&headers, bytes).await?;
    let opts = query.overlay(body_opts);
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Error::InvalidOption("Idempotency-Key must be ASCII".into()))
        })
        .transpose()?;
    let (job, replayed) = create_from(&st, docs, opts, key, false).await?;
    Ok(job_response(&st, StatusCode::ACCEPTED, job, replayed))
}

/// Validates, stores and enqueues a job; `(job, replayed)`. `interactive` jobs run in the
/// scheduler's interactive class (the hybrid `/v1/ocr`).
pub(super) async fn create_from(
    st: &Arc<AppState>,
    mut docs: Vec<Doc>,
    opts: JobRequestOptions,
    key: Option<String>,
    interactive: bool,
) -> Result<(JobRecord, bool), Error> {
    let runner = runner(st)?.clone();
    if docs.is_empty() {
        return Err(Error::EmptyInput);
    }
    if docs.len() == 1 && docs[0].name.is_empty() {
        docs[0].name = opts.name.clone().unwrap_or_else(|| "document".into());
    }
    // Validate the OCR options exactly as /v1/ocr does.
    RequestOptions {
        model: opts.model,
        det_limit_side: opts.det_limit_side,
        classify: opts.classify,
        min_confidence: opts.min_confidence,
        format: None,
        pages: None,
    }
    .apply(st.scheduler.kind(), st.scheduler.base_options())?;
    if opts.classify == Some(true) && !st.scheduler.has_classifier() {
        return Err(Error::InvalidOption(
            "orientation classification is not enabled on this server".into(),
        ));
    }
    if let Some(t) = opts.review_threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Error::InvalidOption(format!(
            "review_threshold must be in 0..=1, got {t}"
        )));
    }
    if let Some(url) = &opts.webhook_url {
        if runner.webhooks().secrets.is_empty() {
            return Err(Error::InvalidOption(
                "webhook_url given but the server has no --webhook-secret".into(),
            ));
        }
        crate::jobs::webhook::check_target(url, &runner.webhooks().allow).await?;
    }
    let job_opts = JobOptions {
        det_limit_side: opts.det_limit_side,
        classify: opts.classify,
        min_confidence: opts.min_confidence,
        interactive: interactive.then_some(true),
        pages: opts.pages.clone(),
    };
    let options_json = serde_json::to_string(&job_opts)
        .map_err(|e| Error::Runtime(format!("serialising options: {e}")))?;

    // Count pages (and reject what cannot be decoded) before anything is stored.
    let limits = st.cfg.decode.clone();
    let spec = opts.pages.clone();
    let docs = tokio::task::spawn_blocking(move || {
        docs.into_iter()
            .map(|d| {
                let named = |e: Error| match e {
                    Error::CorruptImage(m) => Error::CorruptImage(format!("{}: {m}", d.name)),
                    Error::CorruptDocument(m) => Error::CorruptDocument(format!("{}: {m}", d.name)),
                    other => other,
                };
                let doc = Document::open(Arc::new(d.bytes.to_vec()), &limits).map_err(named)?;
                let pages = select_pages(spec.as_deref(), doc.page_count(), limits.max_pages)
                    .map_err(named)?
                    .len();
                let sha = hex(&Sha256::digest(&d.bytes));
                Ok((d, pages, sha))
            })
            .collect::<Result<Vec<_>, Error>>()
    })
    .await
    .map_err(|e| Error::Runtime(format!("decode task: {e}")))??;

    let payload_hash = {
        let mut h = Sha256::new();
        h.update(options_json.as_bytes());
        h.update(
            serde_json::to_vec(&(
                &opts.tag,
                opts.priority,
                opts.review_threshold,
                &opts.webhook_url,
            ))
            .unwrap_or_default(),
        );
        for (d, _, sha) in &docs {
            h.update(d.name.as_bytes());
            h.update(sha.as_bytes());
        }
        hex(&h.finalize())
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = runner.docs_dir().join(&id);
    let written = {
        let dir = dir.clone();
        let files: Vec<(usize, bytes::Bytes)> = docs
            .iter()
            .enumerate()
            .map(|(i, (d, _, _))| (i, d.bytes.clone()))
            .collect();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, Error> {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
            files
                .into_iter()
                .map(|(i, bytes)| {
                    let path = dir.join(format!("{i}.bin"));
                    let io = |e| Error::Io {
                        path: path.display().to_string(),
                        source: e,
                    };
                    let mut f = std::fs::File::create(&path).map_err(io)?;
                    f.write_all(&bytes).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    Ok(path.display().to_string())
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Runtime(format!("write task: {e}")))??
    };
    let new = NewJob {
        id: id.clone(),
        options: options_json,
        tag: opts.tag.clone(),
        webhook_url: opts.webhook_url.clone(),
        priority: opts.priority.unwrap_or(0),
        review_threshold: opts.review_threshold,
        idempotency: key.map(|k| (k, payload_hash)),
        documents: docs
            .iter()
            .zip(&written)
            .map(|((d, pages, sha), path)| NewDocument {
                name: d.name.clone(),
                path: path.clone(),
                sha256: sha.clone(),
                pages: *pages,
            })
            .collect(),
    };
    let store = runner.store().clone();
    let ttl = st.cfg.idempotency_ttl.as_millis() as i64;
    let created = tokio::task::spawn_blocking(move || store.create_job(&new, now_ms(), ttl))
        .await
        .map_err(|e| Error::Runtime(format!("store task: {e}")))?;
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    Ok(match created {
        Created::New(job) => {
            let pages = job.documents.iter().flat_map(|d| {
                d.pages.iter().map(|p| PageRef {
                    job_id: job.id.clone(),
                    doc: d.index,
                    page: p.page,
                })
            });
            runner.enqueue(pages.collect::<Vec<_>>(), job.priority);
            (job, false)
        }
        Created::Existing(job) => {
            let _ = std::fs::remove_dir_all(&dir);
            (job, true)
        }
    })
}

fn load(st: &AppState, id: &str) -> Result<Option<JobRecord>, Error> {
    runner(st)?.store().get_job(id)
}

/// A job's state, per-document and per-page states, progress and ETA.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = JobView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_job(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(match load(&st, &id)? {
        Some(job) => job_response(&st, StatusCode::OK, job, false),
        None => not_found(&id),
    })
}

/// Cancels a job: queued pages are dropped, nothing more is computed.
#[utoipa::path(delete, path = "/v1/jobs/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = JobView),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The job already finished", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn cancel_job(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = runner(&st)?;
    if load(&st, &id)?.is_none() {
        return Ok(not_found(&id));
    }
    if !r.cancel(&id)? {
        return Ok(Problem::new(
            StatusCode::CONFLICT,
            "Job finished",
            "job_finished",
            format!("job {id} already finished; nothing to cancel"),
        )
        .into_response());
    }
    let job = load(&st, &id)?.ok_or_else(|| Error::Store(format!("job {id} vanished")))?;
    Ok(job_response(&st, StatusCode::OK, job, false))
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

/// Lists jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", params(ListQuery), responses((status = 200, body = JobList)))]
pub(super) async fn list_jobs(
    State(st): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| Error::InvalidOption(format!("query string: {}", e.body_text())))?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| Error::InvalidOption(format!("unknown state {s:?}")))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let jobs = runner(&st)?
        .store()
        .list_jobs(state, q.cursor.as_deref(), limit)?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.clone()))
        .flatten();
    Ok(Json(JobList {
        jobs: jobs.into_iter().map(|j| view(&st, j)).collect(),
        next_cursor,
    })
    .into_response())
}

/// The audit trail: every transition and action, with timestamps.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", params(("id" = String, Path)), responses((status = 200, body = Vec<Event>)))]
pub(super) async fn job_events(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if load(&st, &id)?.is_none() {
        return Ok(not_found(&id));
    }
    Ok(Json(runner(&st)?.store().events(&id)?).into_response())
}

/// Requeues the job's failed (dead-lettered) pages; completed pages are kept.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", params(("id" = String, Path)), responses((status = 202, body = JobView)))]
pub(super) async fn retry_job(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = runner(&st)?;
    let Some(job) = load(&st, &id)? else {
        return Ok(not_found(&id));
    };
    let pages = r.store().retry_failed(&id, now_ms())?;
    r.enqueue(pages, job.priority);
    let job = load(&st, &id)?.ok_or_else(|| Error::Store(format!("job {id} vanished")))?;
    Ok(job_response(&st, StatusCode::ACCEPTED, job, false))
}

/// A correction of one page's text.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Correction {
    pub document: usize,
    pub page: usize,
    pub text: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReviewRequest {
    /// Approve the result as it is.
    #[serde(default)]
    pub approve: bool,
    /// Replace the text of these pages.
    #[serde(default)]
    pub corrections: Vec<Correction>,
    pub reviewer: Option<String>,
}

/// Approves or corrects a job in `needs_review` and completes it.
#[utoipa::path(post, path = "/v1/jobs/{id}/review", params(("id" = String, Path)), request_body = ReviewRequest, responses(
    (status = 200, body = JobView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn review_job(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<ReviewRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) =
        body.map_err(|e| Error::BadRequest(format!("review body: {}", e.body_text())))?;
    let Some(job) = load(&st, &id)? else {
        return Ok(not_found(&id));
    };
    if job.state != JobState::NeedsReview {
        return Ok(Problem::new(
            StatusCode::CONFLICT,
            "Not in review",
            "not_in_review",
            format!("job {id} is {}, not needs_review", job.state.as_str()),
        )
        .into_response());
    }
    if !req.approve && req.corrections.is_empty() {
        return Err(Error::InvalidOption("send `approve: true` or `corrections`".into()).into());
    }
    for c in &req.corrections {
        let ok = job
            .documents
            .get(c.document)
            .is_some_and(|d| d.pages.iter().any(|p| p.page == c.page));
        if !ok {
            return Err(Error::InvalidOption(format!(
                "no page {} in document {}",
                c.page, c.document
            ))
            .into());
        }
    }
    let r = runner(&st)?;
    r.store().set_job_state(
        &id,
        JobState::Completed,
        serde_json::json!({"review": {"approve": req.approve, "corrections": req.corrections,
                                      "reviewer": req.reviewer}}),
        now_ms(),
    )?;
    r.notify_job(&id, JobState::Completed);
    let job = load(&st, &id)?.ok_or_else(|| Error::Store(format!("job {id} vanished")))?;
    Ok(job_response(&st, StatusCode::OK, job, false))
}

/// Makes the job's failed webhook deliveries pending again.
#[utoipa::path(post, path = "/v1/jobs/{id}/webhook/resend", params(("id" = String, Path)), responses((status = 202, body = JobView)))]
pub(super) async fn resend_webhooks(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(job) = load(&st, &id)? else {
        return Ok(not_found(&id));
    };
    runner(&st)?.resend(&id)?;
    Ok(job_response(&st, StatusCode::ACCEPTED, job, false))
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentResult {
    pub name: String,
    pub text: String,
    /// Per page: its result, or null when it is not completed (see the job's page states).
    pub pages: Vec<Option<Page>>,
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
}

/// The job's result so far (completed pages; others null).
#[utoipa::path(get, path = "/v1/jobs/{id}/result", params(("id" = String, Path), ResultQuery), responses(
    (status = 200, body = JobResult), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn job_result(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<ResultQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| Error::InvalidOption(format!("query string: {}", e.body_text())))?;
    let Some(job) = load(&st, &id)? else {
        return Ok(not_found(&id));
    };
    if let Some(format @ (Format::Hocr | Format::Pdf)) = q.format {
        let r = runner(&st)?;
        let (doc, selected, pages) = document_pages(r, &job, q.document.unwrap_or(0)).await?;
        return Ok(super::respond(
            format,
            st.scheduler.kind(),
            doc,
            selected,
            pages,
            Default::default(),
        )
        .await?);
    }
    let store: &Arc<dyn JobStore> = runner(&st)?.store();
    let mut all_texts: Vec<String> = Vec::new();
    let corrections: Vec<Correction> = store
        .events(&id)?
        .into_iter()
        .rev()
        .find_map(|e| {
            serde_json::from_value(e.detail["detail"]["review"]["corrections"].clone()).ok()
        })
        .unwrap_or_default();
    let mut documents = Vec::new();
    for d in &job.documents {
        let pages = stored_pages(store, &job, d.index)?;
        let texts: Vec<String> = pages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                corrections
                    .iter()
                    .find(|c| c.document == d.index && c.page == i)
                    .map(|c| c.text.clone())
                    .or_else(|| p.as_ref().map(|p| document_text(std::slice::from_ref(p))))
                    .unwrap_or_default()
            })
            .collect();
        documents.push(DocumentResult {
            name: d.name.clone(),
            text: texts.join("\n\n"),
            pages,
        });
        all_texts.extend(texts);
    }
    if q.format == Some(Format::Text) {
        let text = all_texts.join("\n\u{c}");
        return Ok(([(header::CONTENT_TYPE, Format::Text.content_type())], text).into_response());
    }
    Ok(Json(JobResult {
        id: job.id,
        state: job.state,
        tag: job.tag,
        documents,
        corrections,
    })
    .into_response())
}

/// The hybrid `/v1/ocr` (`Prefer: respond-async, wait=N`): the request becomes an interactive
/// job; if it finishes within `wait`, the answer is the sync result (200), else 202 with the
/// job's `Location`, and the job continues the same work.
pub(super) async fn hybrid(
    st: &Arc<AppState>,
    image: bytes::Bytes,
    options: &RequestOptions,
    format: Format,
    key: Option<String>,
    wait: std::time::Duration,
    arrived: std::time::Instant,
) -> Result<Response, Error> {
    let opts = JobRequestOptions {
        model: options.model,
        det_limit_side: options.det_limit_side,
        classify: options.classify,
        min_confidence: options.min_confidence,
        pages: options.pages.clone(),
        ..JobRequestOptions::default()
    };
    let doc = Doc {
        name: "document".into(),
        bytes: image,
    };
    let (job, _) = create_from(st, vec![doc], opts, key, true).await?;
    let r = runner(st)?.clone();
    let job = r.wait_final(&job.id, wait).await?.unwrap_or(job);
    let location = format!("/v1/jobs/{}", job.id);
    let mut resp = if matches!(job.state, JobState::Completed | JobState::NeedsReview) {
        let (doc, selected, pages) = document_pages(&r, &job, 0).await?;
        let mut resp = super::respond(
            format,
            st.scheduler.kind(),
            doc,
            selected,
            pages,
            Default::default(),
        )
        .await?;
        let h = resp.headers_mut();
        if let Ok(l) = HeaderValue::from_str(&location) {
            h.insert(header::CONTENT_LOCATION, l);
        }
        let total = arrived.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("{total:.1}")) {
            h.insert(super::X_TOTAL_TIME, v);
        }
        resp
    } else {
        let mut resp = job_response(st, StatusCode::ACCEPTED, job, false);
        resp.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
        resp
    };
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Prefer"));
    Ok(resp)
}

/// A job document's source (reopened from the data directory), its selected page indices and
/// its pages: the completed results, and a page with error `not_completed` for the others.
async fn document_pages(
    r: &Arc<crate::jobs::runner::Runner>,
    job: &JobRecord,
    index: usize,
) -> Result<(Arc<Document>, Vec<usize>, Vec<Page>), Error> {
    let d = job
        .documents
        .get(index)
        .ok_or_else(|| Error::InvalidOption(format!("the job has no document {index}")))?;
    let opts: JobOptions = serde_json::from_str(&job.options)
        .map_err(|e| Error::Store(format!("job options: {e}")))?;
    let (doc, selected) = r.open_document(&d.path, opts.pages.as_deref()).await?;
    let pages = stored_pages(r.store(), job, index)?
        .into_iter()
        .zip(&d.pages)
        .map(|(page, p)| {
            page.unwrap_or_else(|| Page {
                error: Some(crate::pipeline::PageError {
                    code: "not_completed".into(),
                    message: format!("page is {}", p.state.as_str()),
                }),
                ..Page::default()
            })
        })
        .collect();
    Ok((doc, selected, pages))
}

/// The stored results of a job document's pages, in order: `None` for pages not completed.
fn stored_pages(
    store: &Arc<dyn JobStore>,
    job: &JobRecord,
    index: usize,
) -> Result<Vec<Option<Page>>, Error> {
    let Some(d) = job.documents.get(index) else {
        return Ok(Vec::new());
    };
    d.pages
        .iter()
        .map(|p| {
            if p.state != PageState::Completed {
                return Ok(None);
            }
            Ok(store
                .page_result(&PageRef {
                    job_id: job.id.clone(),
                    doc: index,
                    page: p.page,
                })?
                .and_then(|s| serde_json::from_str::<Page>(&s).ok()))
        })
        .collect()
}

/// `Prefer` (RFC 7240): whether `respond-async` is asked, and `wait` in seconds.
pub(super) fn parse_prefer(headers: &HeaderMap) -> (bool, Option<u64>) {
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

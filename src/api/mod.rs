//! The HTTP API (axum on tokio). [`Api::router`] mounts every route: `POST /v1/ocr`,
//! `GET /v1/queue`, the jobs and admin routes ([`jobs`]), the review desk (`GET /review`,
//! `GET /v1/review/queue`, a job page's image), `GET /health/live`, `GET /health/ready`,
//! `GET /metrics` and `GET /openapi.json`; behind the `authorize` middleware (keys, scopes and
//! rate limits, [`crate::auth`]) and [`browser::guard`] (Host and Origin checks).
//!
//! Handlers extract, call and map. `read_body` reads a body whole, reserved from the memory
//! budget while its bytes live; [`body`] is the one request-body parser (`/v1/ocr` and
//! `/v1/jobs`); [`crate::ocr::OcrService`] does the work of `/v1/ocr` (decoding on tokio's
//! blocking pool behind a semaphore, models on the scheduler's worker threads, the request's
//! deadline) and [`crate::jobs::service::JobService`] that of the jobs routes. Every error is
//! `application/problem+json` with a stable `code` ([`problem`]). The OpenAPI 3.1 document
//! ([`ApiDoc`]) is generated from the handler annotations and types (utoipa), so it cannot
//! drift from the code.

pub mod body;
pub mod browser;
pub mod dto;
pub mod jobs;
pub mod options;
pub mod problem;
mod results;
mod review;
pub mod serve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::auth::{self, Auth, Caller};
use crate::document::Document;
use crate::engine::ModelKind;
use crate::error::Error;
use crate::extract::Extraction;
use crate::overrides::Overrides;
use crate::pipeline::decode::DecodeLimits;
use crate::pipeline::{Page, document_text};
use crate::scheduler::service::QueueReport;
use crate::scheduler::{Profiles, Scheduler, Timings};

pub use body::JsonRequest;
use problem::{ApiError, PROBLEM_JSON, Problem};

/// Response headers with the time split of a request, in milliseconds.
pub const X_QUEUE_TIME: &str = "x-queue-time";
pub const X_DETECT_TIME: &str = "x-detect-time";
pub const X_CLASSIFY_TIME: &str = "x-classify-time";
pub const X_RECOGNIZE_TIME: &str = "x-recognize-time";
pub const X_TOTAL_TIME: &str = "x-total-time";
pub const X_REQUEST_ID: &str = "x-request-id";
/// Request header: the request's deadline, in milliseconds from arrival.
pub const X_REQUEST_TIMEOUT: &str = "x-request-timeout";

/// Limits and defaults of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Decoded size limits (422 above).
    pub decode: DecodeLimits,
    /// Deadline of a request without `X-Request-Timeout`.
    pub default_timeout: Duration,
    /// Largest `X-Request-Timeout` accepted.
    pub max_timeout: Duration,
    /// Requests decoding at once (each holds its decoded pages in memory until admitted).
    pub decode_concurrency: usize,
    /// Most pages a synchronous request may OCR (413 above: use `/v1/jobs` or
    /// `Prefer: respond-async`).
    pub sync_max_pages: usize,
    /// How long an `Idempotency-Key` names its job.
    pub idempotency_ttl: Duration,
    /// The `Host` names served ([`browser`]); others get 403 `foreign_origin`.
    pub allowed_hosts: browser::AllowedHosts,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            decode: DecodeLimits::default(),
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(600),
            decode_concurrency: 4,
            sync_max_pages: 10,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            allowed_hosts: browser::AllowedHosts::default(),
        }
    }
}

struct AppState {
    /// The default profile's scheduler (`profiles.default_scheduler()`).
    scheduler: Arc<Scheduler>,
    /// Every served model profile ([`Profiles`]); `profile=` picks one.
    profiles: Arc<Profiles>,
    cfg: ApiConfig,
    shutting_down: AtomicBool,
    metrics: PrometheusHandle,
    /// The synchronous OCR use case: recognize, respond-async, job specs.
    ocr: crate::ocr::OcrService,
    /// The job service, when jobs are enabled (`serve` always enables them).
    jobs: Option<Arc<crate::jobs::service::JobService>>,
    /// Keys, scopes and rate limits.
    auth: Arc<Auth>,
}

/// What the server embedding the router holds: the router and a switch for shutdown.
#[derive(Clone)]
pub struct Api {
    state: Arc<AppState>,
}

impl Api {
    pub fn new(scheduler: Arc<Scheduler>, cfg: ApiConfig) -> Self {
        Self::build(
            Arc::new(Profiles::single(scheduler)),
            cfg,
            None,
            Arc::new(Auth::off()),
        )
    }

    /// The API over several model profiles, with jobs (when given) and keys.
    pub fn with_profiles(
        profiles: Arc<Profiles>,
        cfg: ApiConfig,
        jobs: Option<Arc<crate::jobs::service::JobService>>,
        auth: Auth,
    ) -> Self {
        Self::build(profiles, cfg, jobs, Arc::new(auth))
    }

    /// The API with the jobs routes backed by `jobs` (no keys required).
    pub fn with_jobs(
        scheduler: Arc<Scheduler>,
        cfg: ApiConfig,
        jobs: Arc<crate::jobs::service::JobService>,
    ) -> Self {
        Self::build(
            Arc::new(Profiles::single(scheduler)),
            cfg,
            Some(jobs),
            Arc::new(Auth::off()),
        )
    }

    /// The API with jobs and API keys ([`crate::auth`]).
    pub fn with_jobs_and_auth(
        scheduler: Arc<Scheduler>,
        cfg: ApiConfig,
        jobs: Arc<crate::jobs::service::JobService>,
        auth: Auth,
    ) -> Self {
        Self::build(
            Arc::new(Profiles::single(scheduler)),
            cfg,
            Some(jobs),
            Arc::new(auth),
        )
    }

    fn build(
        profiles: Arc<Profiles>,
        cfg: ApiConfig,
        jobs: Option<Arc<crate::jobs::service::JobService>>,
        auth: Arc<Auth>,
    ) -> Self {
        let ocr = crate::ocr::OcrService::new(
            profiles.clone(),
            jobs.clone(),
            cfg.decode.clone(),
            cfg.sync_max_pages,
            cfg.decode_concurrency,
        );
        Self {
            state: Arc::new(AppState {
                scheduler: profiles.default_scheduler().clone(),
                profiles,
                cfg,
                shutting_down: AtomicBool::new(false),
                metrics: metrics_handle(),
                ocr,
                jobs,
                auth,
            }),
        }
    }

    /// Stop admitting: new OCR requests get 503 `shutting_down`, readiness fails; requests
    /// already admitted finish.
    pub fn begin_shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::Release);
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/ocr", post(ocr))
            .route("/v1/queue", get(queue))
            .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
            .route("/v1/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
            .route("/v1/jobs/{id}/result", get(jobs::job_result))
            .route("/v1/jobs/{id}/events", get(jobs::job_events))
            .route("/v1/jobs/{id}/retry", post(jobs::retry_job))
            .route("/v1/jobs/{id}/review", post(jobs::review_job))
            .route("/v1/jobs/{id}/webhook/resend", post(jobs::resend_webhooks))
            .route("/v1/admin/pause", post(jobs::pause))
            .route("/v1/admin/resume", post(jobs::resume))
            .route("/v1/admin/pauses", get(jobs::pauses))
            .route("/v1/review/queue", get(review::queue))
            .route(
                "/v1/jobs/{id}/documents/{d}/pages/{p}/image",
                get(review::page_image),
            )
            .route("/review", get(review::desk))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route("/metrics", get(metrics_text))
            .route("/openapi.json", get(openapi))
            .route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                authorize,
            ))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(self.state.cfg.allowed_hosts.clone()),
                browser::guard,
            ))
            .layer(axum::middleware::from_fn(count_requests))
            .with_state(self.state.clone())
    }
}

/// The process-wide Prometheus recorder (installed on first use; later calls share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let ratio = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("ratio".into()), &ratio))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("ocr_batch_size".into()), &sizes)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("ocr_batch_requests".into()), &sizes)
                })
                .expect("bucket lists are non-empty constants. This is a bug.");
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is already installed (an embedding program's): render ours
                // anyway so /metrics still answers.
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder was already installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Authenticates the caller and checks the route's scope ([`crate::auth`]); the [`Caller`] goes
/// into the request's extensions for the handlers.
async fn authorize(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let need = auth::need(req.method(), &path, st.auth.metrics_open());
    if need == auth::Need::Open {
        req.extensions_mut().insert(Caller::anonymous());
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let client = req
        .extensions()
        .get::<serve::ClientAddr>()
        .map(|c| c.0.ip());
    if let Err(e) = st.auth.failure_gate(client, header) {
        return ApiError(e).into_response();
    }
    let authenticated = st.auth.authenticate(header).await;
    if header.is_some() && matches!(authenticated, Err(Error::Unauthorized(_))) {
        st.auth.note_failure(client);
    }
    let caller = authenticated.and_then(|c| auth::allow(&c, need).map(|()| c));
    match caller {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("ocr_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ocr_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

pub use crate::output::Format;

/// Options of one OCR request: the shared [`Overrides`] and `/v1/ocr`'s own fields, from query
/// parameters, multipart fields or JSON body fields (a body field overrides the query parameter
/// of the same name).
pub type RequestOptions = options::Options<OcrFields>;

/// `/v1/ocr`'s own options, beside the shared [`Overrides`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OcrFields {
    /// `json` (default), `text`, `hocr` or `pdf` (`output` is accepted as an alias); without
    /// it the `Accept` header chooses.
    #[serde(alias = "output")]
    pub format: Option<Format>,
    /// The two-pass hybrid: answer with this request's profile now and create a job that runs
    /// the named profile over the same stored upload in the bulk class (with `extract`,
    /// `review_threshold`, `webhook_url` and `tag`); the response links it.
    pub followup: Option<String>,
    /// With `followup`: the job's review threshold.
    pub review_threshold: Option<f32>,
    /// With `followup`: the job's webhook.
    pub webhook_url: Option<String>,
    /// With `followup`: the job's tag.
    pub tag: Option<String>,
}

impl options::Fields for OcrFields {
    const FIELDS: &'static [&'static str] = &[
        "format",
        "output",
        "followup",
        "review_threshold",
        "webhook_url",
        "tag",
    ];
}

impl options::Overlay for OcrFields {
    fn overlay(self, over: OcrFields) -> OcrFields {
        OcrFields {
            format: over.format.or(self.format),
            followup: over.followup.or(self.followup),
            review_threshold: over.review_threshold.or(self.review_threshold),
            webhook_url: over.webhook_url.or(self.webhook_url),
            tag: over.tag.or(self.tag),
        }
    }
}

impl RequestOptions {
    /// The job options this request carries over to a job (`Prefer: respond-async`, or the
    /// follow-up of a two-pass request): the overrides but `model` and `profile` (each caller
    /// says which set the job runs), and the review rules, webhook and tag.
    pub(crate) fn job_options(&self) -> jobs::JobRequestOptions {
        jobs::JobRequestOptions {
            overrides: self.overrides.for_job(),
            route: jobs::JobFields {
                review_threshold: self.route.review_threshold,
                tag: self.route.tag.clone(),
                webhook_url: self.route.webhook_url.clone(),
                ..jobs::JobFields::default()
            },
        }
    }

    /// The follow-up job's options: [`Self::job_options`] on `profile` (not this request's
    /// `model`, which names the first pass's set).
    pub(crate) fn followup_options(&self, profile: &str) -> jobs::JobRequestOptions {
        let mut o = self.job_options();
        o.overrides.profile = Some(profile.to_string());
        o
    }

    /// The response format: `format`, else the `Accept` header, else JSON.
    fn response_format(&self, headers: &HeaderMap) -> Format {
        self.route
            .format
            .or_else(|| {
                headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Format::from_accept)
            })
            .unwrap_or_default()
    }
}

/// The JSON result: the same `text`/`pages` shape as the CLI's JSON output.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OcrResponse {
    pub model: ModelKind,
    /// Lines joined by `\n`, pages by a blank line.
    pub text: String,
    pub pages: Vec<Page>,
    /// With `extract=`: what each page says as fields (pages numbered from 1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extractions: Vec<Extraction>,
    /// With `followup=`: the job running the second pass over the same upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followup: Option<FollowupLink>,
    pub timings: Timings,
}

pub use crate::ocr::FollowupLink;

/// What a JSON result carries beside the pages.
#[derive(Debug, Default)]
pub(crate) struct JsonExtras {
    pub extractions: Vec<Extraction>,
    pub followup: Option<FollowupLink>,
}

/// OCR an image or a multi-page TIFF.
#[utoipa::path(
    post,
    path = "/v1/ocr",
    params(Overrides, OcrFields,
        ("x-request-timeout" = Option<u64>, Header, description = "Deadline in milliseconds (default: the server's)"),
        ("prefer" = Option<String>, Header, description = "`respond-async, wait=N` (RFC 7240): the result if done within N s (200), else 202 with the Location of a job continuing the same work"),
    ),
    request_body(
        description = "The image bytes (`image/*`), multipart/form-data with a `file` part (other parts: options), or JSON with base64 `image`.",
        content(
            (Vec<u8> = "image/*"),
            (JsonRequest = "application/json"),
            (Vec<u8> = "multipart/form-data"),
        )
    ),
    responses(
        (status = 200, description = "The text in the asked `format` (JSON by default); headers x-queue-time, x-detect-time, x-classify-time, x-recognize-time and x-total-time (ms) split where the time went", content(
            (OcrResponse = "application/json"),
            (String = "text/plain"),
            (String = "text/vnd.hocr+html"),
            (Vec<u8> = "application/pdf"),
        )),
        (status = 401, description = "A key is required and missing, unknown or revoked", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "The key lacks the `ocr` scope", body = Problem, content_type = PROBLEM_JSON),
        (status = 202, description = "`Prefer: respond-async` and not done within `wait`: Location names the job", body = jobs::JobView),
        (status = 400, description = "Empty or malformed body", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "Body over the limit", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "Unsupported content type or image format", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Corrupt image, image over the pixel or side limits, invalid option", body = Problem, content_type = PROBLEM_JSON),
        (status = 429, description = "Queue full; Retry-After says when to retry", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "Shutting down", body = Problem, content_type = PROBLEM_JSON),
        (status = 504, description = "The deadline passed", body = Problem, content_type = PROBLEM_JSON),
    )
)]
async fn ocr(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    options::QueryOptions(query): options::QueryOptions<OcrFields>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    if st.shutting_down.load(Ordering::Acquire) {
        return Err(Error::ShuttingDown.into());
    }
    let deadline = arrived + request_timeout(&headers, &st.cfg)?;
    let (bytes, _body) =
        read_body(&headers, body, st.cfg.max_body_bytes, &st.cfg.decode.memory).await?;
    let (image, body_opts) = body::parse_ocr(&headers, bytes).await?;
    let options = query.overlay(body_opts);
    let format = options.response_format(&headers);
    let (respond_async, wait_s) = jobs::parse_prefer(&headers);
    // Without jobs, `respond-async` is ignored: the answer is synchronous.
    let hybrid = respond_async && st.jobs.is_some();
    let plan = st.ocr.check(&caller, &options, hybrid)?;
    if hybrid {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let wait = Duration::from_secs(wait_s.unwrap_or(0)).min(st.cfg.max_timeout);
        let answer = st
            .ocr
            .respond_async(&caller, image, &options, key, wait)
            .await?;
        return Ok(jobs::hybrid_response(&st, answer, format, arrived).await?);
    }
    let r = st
        .ocr
        .recognize(&caller, image, &options, plan, deadline)
        .await?;
    let (t, id, followup) = (r.timings, r.request_id, r.followup.clone());
    let mut resp = respond(
        format,
        r.kind,
        r.doc,
        r.selected,
        r.pages,
        t,
        JsonExtras {
            extractions: r.extractions,
            followup: r.followup,
        },
    )
    .await?;
    if let Some(f) = &followup
        && let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"followup\"", f.location))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    timing_headers(resp.headers_mut(), t, arrived, id);
    Ok(resp)
}

/// Where a sync request's time went (`x-queue-time` … `x-total-time`, ms), its scheduler id,
/// and `Vary: Prefer`.
fn timing_headers(h: &mut HeaderMap, t: Timings, arrived: Instant, id: u64) {
    let total_ms = arrived.elapsed().as_secs_f64() * 1000.0;
    for (name, v) in [
        (X_QUEUE_TIME, t.queue_ms),
        (X_DETECT_TIME, t.detect_ms),
        (X_CLASSIFY_TIME, t.classify_ms),
        (X_RECOGNIZE_TIME, t.recognize_ms),
        (X_TOTAL_TIME, total_ms),
    ] {
        if let Ok(v) = HeaderValue::from_str(&format!("{v:.1}")) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h.insert(HeaderName::from_static(X_REQUEST_ID), HeaderValue::from(id));
    h.insert(header::VARY, HeaderValue::from_static("Prefer"));
}

/// The response body of an OCR result in the asked format (`hocr` and `pdf` are written on the
/// blocking pool).
pub(crate) async fn respond(
    format: Format,
    model: ModelKind,
    doc: Arc<Document>,
    selected: Vec<usize>,
    pages: Vec<Page>,
    timings: Timings,
    extras: JsonExtras,
) -> Result<Response, Error> {
    Ok(match format {
        Format::Json => Json(OcrResponse {
            model,
            text: document_text(&pages),
            extractions: extras.extractions,
            followup: extras.followup,
            pages,
            timings,
        })
        .into_response(),
        Format::Text => (
            [(header::CONTENT_TYPE, format.content_type())],
            crate::output::text(&pages),
        )
            .into_response(),
        Format::Hocr | Format::Pdf => {
            let bytes = tokio::task::spawn_blocking(move || {
                crate::output::render(format, &doc, "document", &selected, &pages)
            })
            .await
            .map_err(|e| Error::Runtime(format!("output task: {e}")))??;
            ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response()
        }
    })
}

fn request_timeout(headers: &HeaderMap, cfg: &ApiConfig) -> Result<Duration, Error> {
    let Some(v) = headers.get(X_REQUEST_TIMEOUT) else {
        return Ok(cfg.default_timeout);
    };
    let ms: u64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&ms| ms > 0)
        .ok_or_else(|| {
            Error::InvalidOption(
                "X-Request-Timeout must be a positive number of milliseconds".into(),
            )
        })?;
    Ok(Duration::from_millis(ms).min(cfg.max_timeout))
}

/// Reads the whole body, refusing more than `limit` bytes (by Content-Length before reading,
/// and while reading for chunked bodies).
/// The declared `Content-Length`, if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
}

/// A request body read whole (at most `limit` bytes), and its reservation: bodies in flight are
/// part of the memory budget (one budget for every byte the server holds for a request), so a
/// thousand connections each sending the largest body wait for room or get 503, instead of
/// holding a thousand bodies. The reservation is the `Content-Length`, or the limit when the
/// body is chunked; keep it as long as the bytes (or what is decoded from them without a
/// reservation of its own) live.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &crate::memory::MemoryBudget,
) -> Result<(bytes::Bytes, crate::memory::Reservation), Error> {
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let want = declared.unwrap_or(limit as u64);
    let reservation = if want == 0 {
        crate::memory::Reservation::default()
    } else {
        let budget = budget.clone();
        tokio::task::spawn_blocking(move || budget.reserve(want))
            .await
            .map_err(|e| Error::Runtime(format!("reserve task: {e}")))??
    };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if s.is::<http_body_util::LengthLimitError>() {
                return Error::PayloadTooLarge { limit };
            }
            src = s.source();
        }
        Error::BadRequest(format!("reading the body: {e}"))
    })?;
    Ok((bytes, reservation))
}

/// The model set served and whether the server is ready.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// The default profile's model set and classifier.
    pub model: ModelKind,
    pub classifier: bool,
    /// Every served profile, the default first.
    pub profiles: Vec<ProfileView>,
}

/// One served model profile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    pub name: String,
    pub model: ModelKind,
    pub classifier: bool,
}

fn health(st: &AppState, status: &'static str) -> Health {
    Health {
        status,
        model: st.scheduler.kind(),
        classifier: st.scheduler.has_classifier(),
        profiles: st
            .profiles
            .iter()
            .map(|(name, s)| ProfileView {
                name: name.to_string(),
                model: s.kind(),
                classifier: s.has_classifier(),
            })
            .collect(),
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", responses((status = 200, body = Health)))]
async fn live(State(st): State<Arc<AppState>>) -> Json<Health> {
    Json(health(&st, "live"))
}

/// Readiness: models loaded and warmed, and not shutting down.
#[utoipa::path(get, path = "/health/ready", responses(
    (status = 200, body = Health),
    (status = 503, body = Problem, content_type = PROBLEM_JSON),
))]
async fn ready(State(st): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    if st.shutting_down.load(Ordering::Acquire) {
        return Err(Error::ShuttingDown.into());
    }
    if !st.profiles.is_ready() {
        return Err(Error::NotReady.into());
    }
    Ok(Json(health(&st, "ready")))
}

/// This replica's scheduler queues and the job backlog of all replicas.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    #[serde(flatten)]
    pub scheduler: QueueReport,
    /// Job pages queued and running in the store (absent when jobs are off).
    pub jobs: Option<crate::jobs::service::JobsQueue>,
}

/// Queue depth, oldest age and ETA per class, per-stage depths, counters since start, and the
/// job backlog in the store.
#[utoipa::path(get, path = "/v1/queue", responses((status = 200, body = QueueView)))]
async fn queue(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<QueueView>, ApiError> {
    let jobs = match &st.jobs {
        Some(j) => Some(j.queue_report(&caller).await?),
        None => None,
    };
    Ok(Json(QueueView {
        scheduler: st.scheduler.queue_report(),
        jobs,
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")))]
async fn metrics_text(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    // Refreshes the queue gauges (and the job gauges from the store).
    st.scheduler.queue_report();
    if let Some(j) = &st.jobs
        && let Err(e) = j.queue_report(&Caller::anonymous()).await
    {
        tracing::warn!(error = %e, "job gauges not refreshed");
    }
    st.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    Error::RouteNotFound(uri.path().to_string()).into()
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    Error::MethodNotAllowed(method.to_string()).into()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ocr-server",
        description = "OCR with PP-OCR models on ONNX Runtime, dynamically batched across requests."
    ),
    paths(
        ocr,
        queue,
        live,
        ready,
        metrics_text,
        openapi,
        jobs::create_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        jobs::job_result,
        jobs::job_events,
        jobs::retry_job,
        jobs::review_job,
        jobs::resend_webhooks,
        jobs::pause,
        jobs::resume,
        jobs::pauses,
        review::queue,
        review::page_image,
        review::desk
    ),
    components(schemas(
        OcrResponse,
        Problem,
        Page,
        Overrides,
        OcrFields,
        JsonRequest,
        Health,
        QueueReport
    ))
)]
pub struct ApiDoc;

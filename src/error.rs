//! The one error type of the crate, and its one table. Every failure a client can cause, and
//! every failure of the runtime, is a variant here; [`Error::meta`] is the only place that says
//! what a variant means outside the process: its HTTP status, stable machine-readable code,
//! title, and retry rule (never, after the server has room again, or with backoff). Problem
//! bodies, the job runner's retries, logs and the CLI all read it; nothing else in the crate
//! invents error codes, and a test checks the table in docs/api.md against it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("the input is empty")]
    EmptyInput,
    #[error("unsupported or unrecognised format (expected PDF, PNG, JPEG, TIFF, WebP or BMP)")]
    UnsupportedFormat,
    #[error("corrupt or truncated image: {0}")]
    CorruptImage(String),
    #[error("corrupt or damaged document: {0}")]
    CorruptDocument(String),
    #[error("the PDF is encrypted with a password; send it decrypted")]
    EncryptedDocument,
    #[error(
        "the document has {pages} pages; synchronous requests take at most {limit}: submit it to \
         /v1/jobs, or send `Prefer: respond-async`"
    )]
    TooManyPagesForSync { pages: usize, limit: usize },
    #[error("image too large: {0}")]
    ImageTooLarge(String),
    #[error("document has more than {limit} pages")]
    TooManyPages { limit: usize },
    #[error("the job has {count} documents; a job takes at most {limit}")]
    TooManyDocuments { count: usize, limit: usize },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error(
        "ONNX Runtime library not found at {path}: run `scripts/setup.sh` (it installs \
         onnxruntime==1.31.1 into .runtime/), or pass --ort-lib / set ORT_DYLIB_PATH"
    )]
    RuntimeMissing { path: String },
    #[error("model file not found at {path}: run `scripts/setup.sh` to fetch the PP-OCR models")]
    ModelMissing { path: String },
    #[error("ONNX Runtime error: {0}")]
    Runtime(String),
    #[error("model output has an unexpected shape: {0}")]
    ModelOutput(String),
    #[error("the server is at capacity ({depth} pages queued); retry after {retry_after_s} s")]
    Overloaded { depth: usize, retry_after_s: u64 },
    #[error("the request's deadline passed before it finished")]
    DeadlineExceeded,
    #[error("the server is shutting down and admits no new work")]
    ShuttingDown,
    #[error("the server is still loading and warming its models")]
    NotReady,
    #[error("request body larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("the Idempotency-Key {0:?} was used with a different payload")]
    IdempotencyConflict(String),
    #[error("no job {0}")]
    JobNotFound(String),
    #[error("{0}")]
    PageNotFound(String),
    #[error("job {0} already finished; nothing to cancel")]
    JobFinished(String),
    #[error("job {id} is {state}, not needs_review")]
    NotInReview { id: String, state: &'static str },
    #[error("the document store has {free_mb} MiB free, under the floor of {floor_mb} MiB")]
    InsufficientStorage { free_mb: u64, floor_mb: u64 },
    #[error("jobs are not enabled on this server")]
    JobsDisabled,
    #[error("job store error: {0}")]
    Store(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("this API key lacks the `{scope}` scope")]
    Forbidden { scope: &'static str },
    #[error(
        "rate limit of key {key:?}: {limit} {unit} per {window_s} s; retry after {retry_after_s} s"
    )]
    RateLimited {
        key: String,
        unit: &'static str,
        limit: u32,
        window_s: u64,
        retry_after_s: u64,
    },
    #[error("key {key:?} has {queued} pages queued; {adding} more would pass its quota of {limit}")]
    QuotaExceeded {
        key: String,
        queued: u64,
        adding: u64,
        limit: u64,
    },
    #[error(
        "decoding needs {needed_mb} MiB and the server's memory budget of {budget_mb} MiB had no \
         room within {waited_ms} ms"
    )]
    MemoryExhausted {
        needed_mb: u64,
        budget_mb: u64,
        waited_ms: u64,
    },
    #[error("{0}")]
    DecompressedTooLarge(String),
    #[error("no route {0}; see /openapi.json")]
    RouteNotFound(String),
    #[error("this route does not take the method {0}; see /openapi.json")]
    MethodNotAllowed(String),
    #[error("the page is {0}, not completed")]
    NotCompleted(&'static str),
    #[error("refused: {0}")]
    ForeignOrigin(String),
    #[error(
        "tenant {tenant:?} stores {stored} {unit}; {adding} more would pass its storage quota of \
         {limit} (finished jobs are deleted after the retention period)"
    )]
    StorageQuotaExceeded {
        tenant: String,
        unit: &'static str,
        stored: u64,
        adding: u64,
        limit: u64,
    },
    #[error("the page took longer than {seconds} s to {stage}")]
    PageTimedOut { stage: &'static str, seconds: u64 },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What an error means outside the process: one row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// HTTP status of the problem body.
    pub status: u16,
    /// Stable, machine-readable code (snake_case). Clients may match on it.
    pub code: &'static str,
    /// Short human title of the problem type.
    pub title: &'static str,
    /// How work that failed with it is retried.
    pub retry: Retry,
}

/// The retry rule of an error: never (the input or the caller is at fault), after the server
/// (or the caller's allowance) has room again, with `Retry-After` seconds and no attempt
/// counted against a job page, or with backoff (a fault of the server that may pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Never,
    After(u64),
    Backoff,
}

impl Error {
    /// The error table: status, code, title and retry rule of every variant. The match has no
    /// wildcard, so a new variant does not compile until it has its row.
    pub fn meta(&self) -> Meta {
        use Retry::{After, Backoff, Never};
        let (status, code, title, retry) = match self {
            Error::EmptyInput => (400, "empty_input", "Empty input", Never),
            Error::BadRequest(_) => (400, "bad_request", "Malformed request", Never),
            Error::Unauthorized(_) => (401, "unauthorized", "Unauthorized", Never),
            Error::Forbidden { .. } => (403, "forbidden", "Forbidden", Never),
            Error::ForeignOrigin(_) => (403, "foreign_origin", "Foreign host or origin", Never),
            Error::JobNotFound(_) => (404, "job_not_found", "Not found", Never),
            Error::PageNotFound(_) => (404, "page_not_found", "Not found", Never),
            Error::JobsDisabled => (404, "jobs_disabled", "Jobs not enabled", Never),
            Error::RouteNotFound(_) => (404, "not_found", "Not found", Never),
            Error::MethodNotAllowed(_) => (405, "method_not_allowed", "Method not allowed", Never),
            Error::JobFinished(_) => (409, "job_finished", "Job finished", Never),
            Error::NotInReview { .. } => (409, "not_in_review", "Not in review", Never),
            Error::NotCompleted(_) => (409, "not_completed", "Not completed", Never),
            Error::PayloadTooLarge { .. } => (413, "payload_too_large", "Payload too large", Never),
            Error::TooManyPagesForSync { .. } => (
                413,
                "too_many_pages_for_sync",
                "Too many pages for a synchronous request",
                Never,
            ),
            Error::UnsupportedFormat => {
                (415, "unsupported_format", "Unsupported image format", Never)
            }
            Error::UnsupportedMediaType(_) => (
                415,
                "unsupported_media_type",
                "Unsupported media type",
                Never,
            ),
            Error::CorruptImage(_) => (422, "corrupt_image", "Corrupt image", Never),
            Error::CorruptDocument(_) => (422, "corrupt_document", "Corrupt document", Never),
            Error::EncryptedDocument => (422, "encrypted_document", "Encrypted document", Never),
            Error::ImageTooLarge(_) => (422, "image_too_large", "Image too large", Never),
            Error::DecompressedTooLarge(_) => (
                422,
                "decompressed_too_large",
                "Decompressed data over the limit",
                Never,
            ),
            Error::TooManyPages { .. } => (422, "too_many_pages", "Too many pages", Never),
            Error::TooManyDocuments { .. } => {
                (422, "too_many_documents", "Too many documents", Never)
            }
            Error::InvalidOption(_) => (422, "invalid_option", "Invalid option", Never),
            Error::IdempotencyConflict(_) => {
                (422, "idempotency_conflict", "Idempotency key reused", Never)
            }
            Error::RateLimited { retry_after_s, .. } => {
                (429, "rate_limited", "Rate limited", After(*retry_after_s))
            }
            Error::QuotaExceeded { .. } => (429, "quota_exceeded", "Quota exceeded", After(30)),
            Error::StorageQuotaExceeded { .. } => (
                429,
                "storage_quota_exceeded",
                "Storage quota exceeded",
                After(3600),
            ),
            Error::Overloaded { retry_after_s, .. } => (
                429,
                "overloaded",
                "Server overloaded",
                After(*retry_after_s),
            ),
            Error::RuntimeMissing { .. } => (500, "runtime_missing", "Internal error", Backoff),
            Error::ModelMissing { .. } => (500, "model_missing", "Internal error", Backoff),
            Error::Runtime(_) => (500, "runtime_error", "Internal error", Backoff),
            Error::ModelOutput(_) => (500, "model_output", "Internal error", Backoff),
            Error::Store(_) => (500, "store_error", "Internal error", Backoff),
            Error::Io { .. } => (500, "io_error", "Internal error", Backoff),
            Error::ShuttingDown => (503, "shutting_down", "Shutting down", After(1)),
            Error::NotReady => (503, "not_ready", "Not ready", After(1)),
            Error::MemoryExhausted { .. } => {
                (503, "memory_exhausted", "Memory budget exhausted", After(2))
            }
            Error::DeadlineExceeded => (504, "deadline_exceeded", "Deadline exceeded", Backoff),
            Error::PageTimedOut { .. } => (504, "page_timed_out", "Page timed out", Backoff),
            Error::InsufficientStorage { .. } => (
                507,
                "insufficient_storage",
                "Insufficient storage",
                After(60),
            ),
        };
        Meta {
            status,
            code,
            title,
            retry,
        }
    }

    /// Stable, machine-readable code of the error (the table's `code`).
    pub fn code(&self) -> &'static str {
        self.meta().code
    }

    /// How work that failed with this error is retried (the table's `retry`).
    pub fn retry(&self) -> Retry {
        self.meta().retry
    }

    /// Whether the caller caused the error (a 4xx), as opposed to the server or its set-up.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.meta().status)
    }
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::Runtime(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

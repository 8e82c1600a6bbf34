//! The one error type of the crate. Every failure a client can cause, and every failure of the
//! runtime, is a variant here; `code()` gives the stable machine-readable code that logs, the CLI
//! and (later) HTTP problem bodies use. Nothing else in the crate invents error codes.

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
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Error {
    /// Stable, machine-readable code of the error (snake_case). Clients may match on it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptyInput => "empty_input",
            Error::UnsupportedFormat => "unsupported_format",
            Error::CorruptImage(_) => "corrupt_image",
            Error::CorruptDocument(_) => "corrupt_document",
            Error::EncryptedDocument => "encrypted_document",
            Error::TooManyPagesForSync { .. } => "too_many_pages_for_sync",
            Error::ImageTooLarge(_) => "image_too_large",
            Error::TooManyPages { .. } => "too_many_pages",
            Error::InvalidOption(_) => "invalid_option",
            Error::RuntimeMissing { .. } => "runtime_missing",
            Error::ModelMissing { .. } => "model_missing",
            Error::Runtime(_) => "runtime_error",
            Error::ModelOutput(_) => "model_output",
            Error::Overloaded { .. } => "overloaded",
            Error::DeadlineExceeded => "deadline_exceeded",
            Error::ShuttingDown => "shutting_down",
            Error::NotReady => "not_ready",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::BadRequest(_) => "bad_request",
            Error::IdempotencyConflict(_) => "idempotency_conflict",
            Error::JobNotFound(_) => "job_not_found",
            Error::JobFinished(_) => "job_finished",
            Error::NotInReview { .. } => "not_in_review",
            Error::JobsDisabled => "jobs_disabled",
            Error::InsufficientStorage { .. } => "insufficient_storage",
            Error::Store(_) => "store_error",
            Error::Io { .. } => "io_error",
        }
    }

    /// How work that failed with this error is retried: never (the input is at fault), after
    /// the server has room again (back-pressure: no attempt is counted), or with backoff.
    pub fn retry(&self) -> Retry {
        match self {
            e if e.is_client_error() => Retry::Never,
            Error::Overloaded { .. }
            | Error::NotReady
            | Error::ShuttingDown
            | Error::InsufficientStorage { .. } => Retry::After,
            _ => Retry::Backoff,
        }
    }

    /// Whether the caller's input caused the error (as opposed to the server or its set-up).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::EmptyInput
                | Error::UnsupportedFormat
                | Error::CorruptImage(_)
                | Error::ImageTooLarge(_)
                | Error::CorruptDocument(_)
                | Error::EncryptedDocument
                | Error::TooManyPagesForSync { .. }
                | Error::TooManyPages { .. }
                | Error::InvalidOption(_)
                | Error::PayloadTooLarge { .. }
                | Error::UnsupportedMediaType(_)
                | Error::BadRequest(_)
                | Error::IdempotencyConflict(_)
                | Error::JobNotFound(_)
                | Error::JobFinished(_)
                | Error::NotInReview { .. }
        )
    }
}

/// The retry rule of an error (see [`Error::retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Never,
    After,
    Backoff,
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::Runtime(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

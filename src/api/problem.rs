//! Errors as HTTP responses: `application/problem+json` bodies (RFC 9457) with the crate's
//! stable `code`, and the one mapping from error code to status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// An RFC 9457 problem body. `type` is a relative URI naming the code (`/problems/<code>`);
/// `code` repeats it as a plain string for clients that match on it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    /// Seconds to wait before retrying (429 and 503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// HTTP status and title of an error code.
fn status_of(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::EmptyInput => (StatusCode::BAD_REQUEST, "Empty input"),
        Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "Malformed request"),
        Error::UnsupportedFormat => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported image format",
        ),
        Error::UnsupportedMediaType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type")
        }
        Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
        Error::CorruptImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Corrupt image"),
        Error::ImageTooLarge(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Image too large"),
        Error::CorruptDocument(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Corrupt document"),
        Error::EncryptedDocument => (StatusCode::UNPROCESSABLE_ENTITY, "Encrypted document"),
        Error::TooManyPagesForSync { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too many pages for a synchronous request",
        ),
        Error::TooManyPages { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Too many pages"),
        Error::InvalidOption(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid option"),
        Error::IdempotencyConflict(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "Idempotency key reused")
        }
        Error::JobNotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        Error::JobFinished(_) => (StatusCode::CONFLICT, "Job finished"),
        Error::NotInReview { .. } => (StatusCode::CONFLICT, "Not in review"),
        Error::JobsDisabled => (StatusCode::NOT_FOUND, "Jobs not enabled"),
        Error::InsufficientStorage { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, "Insufficient storage")
        }
        Error::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "Server overloaded"),
        Error::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "Deadline exceeded"),
        Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "Shutting down"),
        Error::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "Not ready"),
        Error::RuntimeMissing { .. }
        | Error::ModelMissing { .. }
        | Error::Runtime(_)
        | Error::ModelOutput(_)
        | Error::Store(_)
        | Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

impl Problem {
    pub fn new(
        status: StatusCode,
        title: &'static str,
        code: &'static str,
        detail: String,
    ) -> Self {
        Self {
            kind: format!("/problems/{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
            retry_after_s: None,
        }
    }

    pub fn from_error(e: &Error) -> Self {
        let (status, title) = status_of(e);
        let mut p = Self::new(status, title, e.code(), e.to_string());
        p.retry_after_s = match e {
            Error::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            Error::ShuttingDown | Error::NotReady => Some(1),
            Error::InsufficientStorage { .. } => Some(60),
            _ => None,
        };
        p
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after_s;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// An [`Error`] as a handler's error type.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = Problem::from_error(&self.0);
        if p.status >= 500 {
            tracing::error!(code = p.code, error = %self.0, "request failed");
        } else {
            tracing::debug!(code = p.code, error = %self.0, "request refused");
        }
        p.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_is_4xx_and_every_other_is_5xx() {
        let cases = [
            Error::EmptyInput,
            Error::UnsupportedFormat,
            Error::CorruptImage("x".into()),
            Error::ImageTooLarge("x".into()),
            Error::CorruptDocument("x".into()),
            Error::EncryptedDocument,
            Error::TooManyPagesForSync { pages: 2, limit: 1 },
            Error::TooManyPages { limit: 1 },
            Error::InvalidOption("x".into()),
            Error::PayloadTooLarge { limit: 1 },
            Error::UnsupportedMediaType("x".into()),
            Error::BadRequest("x".into()),
            Error::Runtime("x".into()),
            Error::ModelOutput("x".into()),
            Error::ModelMissing { path: "p".into() },
        ];
        for e in cases {
            let p = Problem::from_error(&e);
            assert_eq!(p.status < 500, e.is_client_error(), "{e:?}");
            assert_eq!(p.kind, format!("/problems/{}", e.code()));
        }
        let p = Problem::from_error(&Error::Overloaded {
            depth: 3,
            retry_after_s: 7,
        });
        assert_eq!((p.status, p.retry_after_s), (429, Some(7)));
    }
}

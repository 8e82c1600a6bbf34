//! Errors as HTTP responses: `application/problem+json` bodies (RFC 9457) with the crate's
//! stable `code`, and `Retry-After` where the error has one. The status, code, title and retry
//! rule of each error come from the one table, [`Error::meta`] (`error.rs`); this file only
//! writes them out.
//!
//! A 500's own message (a store driver's error, a file path, a runtime's text) never reaches
//! the client: the body says only that it failed and names a fresh `request_id`, which is also
//! the `X-Request-Id` header and a field of the error line in the log that holds the message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, Retry};

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
    /// For an internal error (500): the id under which the server logged what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

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
            request_id: None,
        }
    }

    /// The problem body of an error: status, code, title and `Retry-After` from the error
    /// table ([`Error::meta`]).
    pub fn from_error(e: &Error) -> Self {
        let m = e.meta();
        let status = StatusCode::from_u16(m.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let detail = if m.status == 500 {
            "the server failed to handle the request; its log has the details under this \
             request_id"
                .to_string()
        } else {
            e.to_string()
        };
        let mut p = Self::new(status, m.title, m.code, detail);
        if m.status == 500 {
            p.request_id = Some(uuid::Uuid::new_v4().simple().to_string());
        }
        // 5xx that are retried with backoff say nothing; only "come back later" errors
        // (429, 503, 507) carry a time.
        p.retry_after_s = match m.retry {
            Retry::After(s) => Some(s),
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
        if let Some(id) = self
            .request_id
            .as_deref()
            .and_then(|i| HeaderValue::from_str(i).ok())
        {
            h.insert(super::X_REQUEST_ID, id);
        }
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
        let rate = match &self.0 {
            // The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers): the
            // policy (quota `q` per window `w` seconds) and the state (`r` remaining, `t`
            // seconds until there is room again).
            Error::RateLimited {
                unit,
                limit,
                window_s,
                retry_after_s,
                ..
            } => Some((
                format!("\"{unit}\";q={limit};w={window_s}"),
                format!("\"{unit}\";r=0;t={retry_after_s}"),
            )),
            _ => None,
        };
        if p.status >= 500 {
            let id = p.request_id.as_deref().unwrap_or("");
            tracing::error!(code = p.code, request_id = id, error = %self.0, "request failed");
        } else {
            tracing::debug!(code = p.code, error = %self.0, "request refused");
        }
        let unauthorized = matches!(self.0, Error::Unauthorized(_));
        let mut resp = p.into_response();
        if unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some((policy, state)) = rate
            && let (Ok(policy), Ok(state)) = (
                HeaderValue::from_str(&policy),
                HeaderValue::from_str(&state),
            )
        {
            resp.headers_mut().insert("ratelimit-policy", policy);
            resp.headers_mut().insert("ratelimit", state);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One example of every variant. `index` has no wildcard, so a new variant does not compile
    /// until it is added here, and the test checks that every index is covered.
    fn examples() -> Vec<Error> {
        vec![
            Error::EmptyInput,
            Error::UnsupportedFormat,
            Error::CorruptImage("x".into()),
            Error::CorruptDocument("x".into()),
            Error::EncryptedDocument,
            Error::TooManyPagesForSync { pages: 2, limit: 1 },
            Error::ImageTooLarge("x".into()),
            Error::TooManyPages { limit: 1 },
            Error::InvalidOption("x".into()),
            Error::RuntimeMissing { path: "p".into() },
            Error::ModelMissing { path: "p".into() },
            Error::Runtime("x".into()),
            Error::ModelOutput("x".into()),
            Error::Overloaded {
                depth: 3,
                retry_after_s: 7,
            },
            Error::DeadlineExceeded,
            Error::ShuttingDown,
            Error::NotReady,
            Error::PayloadTooLarge { limit: 1 },
            Error::UnsupportedMediaType("x".into()),
            Error::BadRequest("x".into()),
            Error::IdempotencyConflict("k".into()),
            Error::JobNotFound("j".into()),
            Error::PageNotFound("p".into()),
            Error::JobFinished("j".into()),
            Error::NotInReview {
                id: "j".into(),
                state: "queued",
            },
            Error::InsufficientStorage {
                free_mb: 1,
                floor_mb: 2,
            },
            Error::JobsDisabled,
            Error::Store("x".into()),
            Error::Io {
                path: "p".into(),
                source: std::io::Error::other("x"),
            },
            Error::Unauthorized("x".into()),
            Error::Forbidden { scope: "admin" },
            Error::RateLimited {
                key: "k".into(),
                unit: "requests",
                limit: 10,
                window_s: 1,
                retry_after_s: 2,
            },
            Error::QuotaExceeded {
                key: "k".into(),
                queued: 1,
                adding: 2,
                limit: 2,
            },
            Error::MemoryExhausted {
                needed_mb: 1,
                budget_mb: 1,
                waited_ms: 1,
            },
            Error::DecompressedTooLarge("x".into()),
            Error::RouteNotFound("/x".into()),
            Error::MethodNotAllowed("PUT".into()),
            Error::NotCompleted("queued"),
            Error::ForeignOrigin("x".into()),
            Error::PageTimedOut {
                stage: "decode",
                seconds: 1,
            },
            Error::TooManyDocuments { count: 2, limit: 1 },
            Error::StorageQuotaExceeded {
                tenant: "t".into(),
                unit: "jobs",
                stored: 1,
                adding: 1,
                limit: 1,
            },
        ]
    }

    fn index(e: &Error) -> usize {
        match e {
            Error::EmptyInput => 0,
            Error::UnsupportedFormat => 1,
            Error::CorruptImage(_) => 2,
            Error::CorruptDocument(_) => 3,
            Error::EncryptedDocument => 4,
            Error::TooManyPagesForSync { .. } => 5,
            Error::ImageTooLarge(_) => 6,
            Error::TooManyPages { .. } => 7,
            Error::InvalidOption(_) => 8,
            Error::RuntimeMissing { .. } => 9,
            Error::ModelMissing { .. } => 10,
            Error::Runtime(_) => 11,
            Error::ModelOutput(_) => 12,
            Error::Overloaded { .. } => 13,
            Error::DeadlineExceeded => 14,
            Error::ShuttingDown => 15,
            Error::NotReady => 16,
            Error::PayloadTooLarge { .. } => 17,
            Error::UnsupportedMediaType(_) => 18,
            Error::BadRequest(_) => 19,
            Error::IdempotencyConflict(_) => 20,
            Error::JobNotFound(_) => 21,
            Error::JobFinished(_) => 22,
            Error::NotInReview { .. } => 23,
            Error::InsufficientStorage { .. } => 24,
            Error::JobsDisabled => 25,
            Error::Store(_) => 26,
            Error::Io { .. } => 27,
            Error::Unauthorized(_) => 28,
            Error::Forbidden { .. } => 29,
            Error::RateLimited { .. } => 30,
            Error::QuotaExceeded { .. } => 31,
            Error::MemoryExhausted { .. } => 32,
            Error::DecompressedTooLarge(_) => 33,
            Error::RouteNotFound(_) => 34,
            Error::MethodNotAllowed(_) => 35,
            Error::NotCompleted(_) => 36,
            Error::PageNotFound(_) => 37,
            Error::ForeignOrigin(_) => 38,
            Error::PageTimedOut { .. } => 39,
            Error::TooManyDocuments { .. } => 40,
            Error::StorageQuotaExceeded { .. } => 41,
        }
    }

    #[test]
    fn the_error_table_covers_every_variant_consistently() {
        let all = examples();
        let mut seen: Vec<usize> = all.iter().map(index).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..all.len()).collect::<Vec<_>>(),
            "one example per variant"
        );
        let mut codes = std::collections::BTreeSet::new();
        for e in &all {
            let m = e.meta();
            assert!(codes.insert(m.code), "code {} used twice", m.code);
            assert!(
                m.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.code
            );
            let p = Problem::from_error(e);
            assert_eq!((p.status, p.code, p.title), (m.status, m.code, m.title));
            assert_eq!(p.kind, format!("/problems/{}", m.code));
            assert!(StatusCode::from_u16(p.status).is_ok());
            assert_eq!(p.status < 500, e.is_client_error(), "{e:?}");
            // A 500 says nothing of its cause (paths, driver errors) and names a request id.
            if p.status == 500 {
                assert!(!p.detail.contains(&e.to_string()), "{p:?}");
                assert_eq!(p.request_id.as_ref().map(String::len), Some(32), "{p:?}");
            } else {
                assert_eq!(
                    (p.detail.clone(), p.request_id.clone()),
                    (e.to_string(), None)
                );
            }
            // Retry-After exactly for the "come back later" rule, and only on 429/503/507.
            match m.retry {
                Retry::After(s) => {
                    assert_eq!(p.retry_after_s, Some(s));
                    assert!([429, 503, 507].contains(&m.status), "{e:?}");
                }
                Retry::Never => {
                    assert!(m.status < 500 && m.status != 429, "{e:?}");
                    assert_eq!(p.retry_after_s, None);
                }
                Retry::Backoff => {
                    assert!(m.status >= 500, "{e:?}");
                    assert_eq!(p.retry_after_s, None);
                }
            }
        }
    }

    /// The docs/api.md error table lists exactly the table's codes, each under its status.
    #[test]
    fn readme_error_table_matches_the_error_table() {
        let readme = include_str!("../../docs/api.md");
        let mut documented = std::collections::BTreeMap::new();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | status | `code`, `code` | when |
            if cells.len() < 4 || cells[1].len() != 3 {
                continue;
            }
            let Ok(status) = cells[1].parse::<u16>() else {
                continue;
            };
            for code in cells[2].split(',').map(str::trim) {
                if let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
                    documented.insert(code.to_string(), status);
                }
            }
        }
        let table: std::collections::BTreeMap<String, u16> = examples()
            .iter()
            .map(|e| (e.code().to_string(), e.meta().status))
            .collect();
        assert_eq!(documented, table, "docs/api.md error table vs Error::meta");
    }

    #[test]
    fn rate_limited_answers_carry_the_ratelimit_fields() {
        let resp = ApiError(Error::RateLimited {
            key: "k".into(),
            unit: "requests",
            limit: 10,
            window_s: 1,
            retry_after_s: 3,
        })
        .into_response();
        assert_eq!(resp.status(), 429);
        let h = resp.headers();
        assert_eq!(h["retry-after"], "3");
        assert_eq!(h["ratelimit-policy"], "\"requests\";q=10;w=1");
        assert_eq!(h["ratelimit"], "\"requests\";r=0;t=3");
    }
}

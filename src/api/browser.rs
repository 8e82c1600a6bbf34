//! Browser safety: what keeps a web page that the server's user happens to visit from using the
//! server through that user's browser. Runs on every request, before authentication, as one
//! middleware ([`guard`]); pure checks ([`check`]) with a table test.
//!
//! - **Host allow-list** (DNS rebinding): a page on `evil.example` whose name is re-pointed to
//!   127.0.0.1 reaches a loopback server with `Host: evil.example`. A request whose `Host` (or
//!   HTTP/2 authority) names a host that is not allowed is refused. Allowed by default: the
//!   loopback names (`localhost`, `127.0.0.1`, `::1`) and the address the server is bound to;
//!   `--allowed-host` adds names (`*` allows any). A server bound to every address (`0.0.0.0`)
//!   with keys checks no Host unless `--allowed-host` is given: it must have keys to start
//!   ([`crate::auth::check_exposure`]), and a rebinding page has no key; with `--auth off` it
//!   answers only the loopback names and `--allowed-host`. A request without a Host (an
//!   in-process test, HTTP/1.0) is not a browser's and passes.
//! - **Cross-origin requests**: a browser sends `Origin` on every cross-origin request and on
//!   every POST; one whose origin is not the server's own (scheme-less comparison of host and
//!   port with the request's Host) is refused, unless its host is one of the `--allowed-host`
//!   names (behind a proxy that rewrites `Host`, the desk's origin is the public name); so is
//!   `Origin: null` (sandboxed frames, `data:` pages) on a route that changes state.
//!   `Sec-Fetch-Site: cross-site`/`same-site` is refused too.
//! - **"Simple" requests** on routes that change state (POST, PUT, PATCH, DELETE): an HTML form
//!   (`Sec-Fetch-Mode: navigate`) or a `no-cors` fetch needs no CORS preflight, so it is refused
//!   even from the server's own origin; the review desk uses ordinary `fetch` with JSON.
//!   Programs (curl, SDKs) send none of these headers and are not affected.
//! - **Headers on every response**: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`
//!   and `Content-Security-Policy: frame-ancestors 'none'` (a response with its own policy, the
//!   review desk's, carries `frame-ancestors 'none'` in it), so no page can frame the desk.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use crate::error::Error;

/// Which `Host` names the server answers to, and which other origins' hosts it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// None: any host (`--allowed-host '*'`, or a keyed server bound to every address); else
    /// these names (lowercase, without port or brackets).
    hosts: Option<Vec<String>>,
    /// The names given with `--allowed-host`: an `Origin` with one of these hosts is served
    /// even when the `Host` header differs (a proxy that rewrites it).
    origins: Vec<String>,
}

impl Default for AllowedHosts {
    fn default() -> Self {
        Self {
            hosts: Some(LOOPBACK.iter().map(|s| s.to_string()).collect()),
            origins: Vec::new(),
        }
    }
}

const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl AllowedHosts {
    /// The list for a server bound to `bound` (an IP) with `--allowed-host` values `extra`;
    /// `keyed`: whether keys can be required (not `--auth off`).
    pub fn for_bind(bound: std::net::IpAddr, extra: &[String], keyed: bool) -> Self {
        let origins: Vec<String> = extra
            .iter()
            .map(|h| h.trim())
            .filter(|h| *h != "*" && !h.is_empty())
            .map(host_name)
            .collect();
        if extra.iter().any(|h| h.trim() == "*")
            || (bound.is_unspecified() && extra.is_empty() && keyed)
        {
            return Self {
                hosts: None,
                origins,
            };
        }
        let mut names: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
        if !bound.is_unspecified() {
            names.push(bound.to_string());
        }
        names.extend(origins.iter().cloned());
        names.sort();
        names.dedup();
        Self {
            hosts: Some(names),
            origins,
        }
    }

    fn allows(&self, host: &str) -> bool {
        self.hosts
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == host))
    }
}

/// The host part of an authority (`Host` value), lowercase, without port, brackets or a
/// trailing dot: `[::1]:8080` → `::1`, `Example.org.:80` → `example.org`.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if a.matches(':').count() > 1 {
        a // a bare IPv6 address
    } else {
        a.split(':').next().unwrap_or("")
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The checks of the module docs for one request: `authority` is its `Host` header (or the
/// URI's authority for HTTP/2).
pub fn check(
    method: &Method,
    authority: Option<&str>,
    headers: &HeaderMap,
    allowed: &AllowedHosts,
) -> Result<(), Error> {
    if let Some(a) = authority {
        let host = host_name(a);
        if !allowed.allows(&host) {
            return Err(Error::ForeignOrigin(format!(
                "this server does not answer to the host {host:?} (add it with --allowed-host)"
            )));
        }
    }
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = get("origin") {
        let origin = origin.trim();
        if origin == "null" {
            if changes_state(method) {
                return Err(Error::ForeignOrigin(
                    "a request from an opaque origin (Origin: null) may not change state".into(),
                ));
            }
        } else {
            let origin_authority = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            let own = origin_authority
                .zip(authority)
                .is_some_and(|(o, a)| o.eq_ignore_ascii_case(a.trim()));
            let listed = origin_authority
                .is_some_and(|o| allowed.origins.iter().any(|n| *n == host_name(o)));
            if !own && !listed {
                return Err(Error::ForeignOrigin(format!(
                    "cross-origin requests are not served (Origin {origin:?})"
                )));
            }
        }
    }
    if changes_state(method) {
        if let Some(site @ ("cross-site" | "same-site")) = get("sec-fetch-site") {
            return Err(Error::ForeignOrigin(format!(
                "a {site} browser request may not change state"
            )));
        }
        if let Some(mode @ ("navigate" | "no-cors" | "nested-navigate")) = get("sec-fetch-mode") {
            return Err(Error::ForeignOrigin(format!(
                "a browser {mode} request (an HTML form, a no-cors fetch) may not change state: \
                 use fetch with a JSON body"
            )));
        }
    }
    Ok(())
}

/// The middleware: refuses what [`check`] refuses (403 `foreign_origin`) and sets the
/// protective headers on every response, refusals included.
pub async fn guard(State(allowed): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let mut resp = match check(req.method(), authority.as_deref(), req.headers(), &allowed) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            metrics::counter!("ocr_http_foreign_origin_total").increment(1);
            tracing::warn!(error = %e, "browser request refused");
            ApiError(e).into_response()
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_names() {
        for (a, want) in [
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("::1", "::1"),
            ("LocalHost", "localhost"),
            ("example.org.:80", "example.org"),
        ] {
            assert_eq!(host_name(a), want, "{a}");
        }
    }

    #[test]
    fn allowed_hosts_from_the_bind() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
        let lan: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        assert!(AllowedHosts::for_bind(any, &[], true).allows("evil.example"));
        assert!(AllowedHosts::for_bind(lo, &["*".into()], true).allows("evil.example"));
        // --auth off on every address: no key stops a rebinding page, so Host is checked.
        let open = AllowedHosts::for_bind(any, &[], false);
        assert!(open.allows("localhost") && !open.allows("evil.example"));
        let a = AllowedHosts::for_bind(lan, &["OCR.example.org".into()], true);
        for h in ["10.0.0.5", "localhost", "::1", "ocr.example.org"] {
            assert!(a.allows(h), "{h}");
        }
        assert!(!a.allows("evil.example"));
        let a = AllowedHosts::for_bind(any, &["ocr.internal".into()], true);
        assert!(a.allows("ocr.internal") && !a.allows("0.0.0.0") && !a.allows("evil.example"));
        // Behind a proxy that sends `Host: 127.0.0.1:8080`, the desk's own origin is the public
        // name given with --allowed-host.
        let h = headers(&[
            ("origin", "https://ocr.internal"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check(&Method::POST, Some("127.0.0.1:8080"), &h, &a).is_ok());
        let h = headers(&[("origin", "https://evil.example")]);
        assert!(check(&Method::POST, Some("127.0.0.1:8080"), &h, &a).is_err());
    }

    #[test]
    fn what_a_browser_may_and_may_not_do() {
        let lo = AllowedHosts::default();
        let ok = |m: Method, host: Option<&str>, h: &[(&'static str, &'static str)]| {
            check(&m, host, &headers(h), &lo).is_ok()
        };
        // Programs: no browser headers.
        assert!(ok(Method::POST, Some("127.0.0.1:8080"), &[]));
        assert!(ok(Method::POST, None, &[]));
        // DNS rebinding: a foreign Host, whatever else.
        assert!(!ok(Method::GET, Some("evil.example:8080"), &[]));
        // The review desk: same-origin fetches.
        let same = [
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ];
        assert!(ok(Method::POST, Some("127.0.0.1:8080"), &same));
        assert!(ok(Method::GET, Some("127.0.0.1:8080"), &same));
        // Another port is another origin.
        assert!(!ok(
            Method::GET,
            Some("127.0.0.1:8080"),
            &[("origin", "http://127.0.0.1:9999")]
        ));
        // A cross-site page: refused whatever the method.
        for m in [Method::GET, Method::POST, Method::DELETE] {
            assert!(!ok(
                m,
                Some("localhost:8080"),
                &[("origin", "https://evil.example")]
            ));
        }
        assert!(!ok(
            Method::POST,
            Some("localhost:8080"),
            &[("sec-fetch-site", "cross-site")]
        ));
        // Opaque origins may read (nothing is readable cross-origin) but not write.
        assert!(ok(
            Method::GET,
            Some("localhost:8080"),
            &[("origin", "null")]
        ));
        assert!(!ok(
            Method::POST,
            Some("localhost:8080"),
            &[("origin", "null")]
        ));
        // A same-origin HTML form or no-cors fetch changes nothing; navigating to a page may.
        assert!(!ok(
            Method::POST,
            Some("localhost:8080"),
            &[("sec-fetch-mode", "navigate")]
        ));
        assert!(!ok(
            Method::DELETE,
            Some("localhost:8080"),
            &[("sec-fetch-mode", "no-cors")]
        ));
        assert!(ok(
            Method::GET,
            Some("localhost:8080"),
            &[("sec-fetch-mode", "navigate"), ("sec-fetch-site", "none")]
        ));
    }
}

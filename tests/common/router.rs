//! Helpers of the tests that drive the router in process (`oneshot`, no port): a small page,
//! requests with an optional key, the answer as status, headers and JSON.

use std::io::Cursor;
use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use image::{Rgb, RgbImage};
use serde_json::Value;
use tower::ServiceExt;

/// A white PNG with `bars` black bars (each a line to the fake models).
pub fn png(bars: u32) -> Vec<u8> {
    let mut img = RgbImage::from_pixel(160, 40 + 40 * bars, Rgb([255, 255, 255]));
    for b in 0..bars {
        for y in 30 + 40 * b..50 + 40 * b {
            for x in 20..140 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
    }
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends one request through the router; the status, headers and body (JSON, or a JSON string
/// when it is not JSON).
pub async fn send(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, headers, v)
}

/// A request builder with `Authorization: Bearer KEY` when a key is given.
pub fn req(method: &str, uri: &str, key: Option<&str>) -> axum::http::request::Builder {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        r = r.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    r
}

pub fn get(uri: &str, key: Option<&str>) -> Request<Body> {
    req("GET", uri, key).body(Body::empty()).unwrap()
}

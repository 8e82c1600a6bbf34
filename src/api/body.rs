//! One request-body parser for the routes that take documents (`POST /v1/ocr`, `POST /v1/jobs`):
//! the media type chooses how the body is read, the same way for both.
//!
//! - `image/*`, `application/pdf`, `application/octet-stream`: the body is one document
//!   ([`is_raw`]; `POST /v1/jobs` streams such a body to the document store instead of reading it
//!   here).
//! - `application/json`: the documents as base64 (`image` for one, `documents` of
//!   `{name, data | url}` for several) beside the options, read in place from the body
//!   ([`JsonRequest`], [`JsonJobRequest`]).
//! - `multipart/form-data`: the documents as `file` parts (`files` too where several are taken),
//!   the other parts as options.
//!
//! Options in a body are parsed by the route's [`Options`] rules (unknown names refused); they
//! override the query string's. Anything else is 415 naming what is accepted.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use serde::Deserialize;

use super::jobs::{JobFields, JobRequestOptions};
use super::options::{Fields, Options, json_with_options};
use super::{OcrFields, RequestOptions};
use crate::error::Error;
use crate::jobs::service::{Source, Upload};
use crate::overrides::Overrides;

/// How many documents a route's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /v1/ocr`: one document (JSON `image`, one multipart `file` part).
    One,
    /// `POST /v1/jobs`: any number (JSON `documents`, multipart `file` or `files` parts).
    Many,
}

/// The JSON request body: the image as base64 plus options.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct JsonRequest<'a> {
    /// The image or TIFF document, base64 (standard alphabet, padding optional); read in place
    /// from the request body.
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub image: std::borrow::Cow<'a, str>,
    #[serde(flatten)]
    pub overrides: Overrides,
    #[serde(flatten)]
    pub own: OcrFields,
}

/// A document in a JSON job request: its bytes, or the URL of a document already in the
/// server's object store (`s3://BUCKET/KEY` under `--object-store-url`; nothing else is
/// fetched).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonDocument<'a> {
    pub name: Option<String>,
    /// The document bytes, base64 (read in place from the request body).
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    #[schema(value_type = Option<String>)]
    pub data: Option<std::borrow::Cow<'a, str>>,
    /// A document in the configured bucket.
    pub url: Option<String>,
}

/// An optional string borrowed from the body where it has no escapes (serde borrows a `Cow`
/// only when it is not inside an `Option`).
fn borrowed_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::borrow::Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct JsonJobRequest<'a> {
    #[serde(borrow)]
    pub documents: Vec<JsonDocument<'a>>,
    #[serde(flatten)]
    pub overrides: Overrides,
    #[serde(flatten)]
    pub own: JobFields,
}

/// The media type of a request, lower-case, without parameters; and the whole header.
pub fn media_type(headers: &HeaderMap) -> (String, String) {
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
    (mime, ctype)
}

/// A body that is one document's bytes.
pub fn is_raw(mime: &str) -> bool {
    mime.starts_with("image/") || mime == "application/octet-stream" || mime == "application/pdf"
}

fn base64(data: &str, what: &str) -> Result<bytes::Bytes, Error> {
    // Padding is optional: strip it and decode without.
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(data.trim().trim_end_matches('='))
        .map(Into::into)
        .map_err(|e| Error::BadRequest(format!("{what} is not base64: {e}")))
}

/// The documents and options of a body held in memory (bounded by the body limit), for a route
/// whose own options are `R`; `json` reads the route's JSON body.
async fn parse<R>(
    headers: &HeaderMap,
    body: bytes::Bytes,
    shape: Shape,
    json: impl FnOnce(&[u8]) -> Result<(Vec<Upload>, Options<R>), Error>,
) -> Result<(Vec<Upload>, Options<R>), Error>
where
    R: Fields + Default + serde::de::DeserializeOwned,
{
    let (mime, ctype) = media_type(headers);
    if is_raw(&mime) {
        let doc = Upload {
            name: "document".into(),
            source: Source::Bytes(body),
        };
        return Ok((vec![doc], Options::default()));
    }
    if mime == "application/json" {
        return json(&body);
    }
    if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(&ctype)
            .map_err(|e| Error::BadRequest(format!("multipart: {e}")))?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut docs: Vec<Upload> = Vec::new();
        let mut fields: Vec<(String, String)> = Vec::new();
        let bad = |e: multer::Error| Error::BadRequest(format!("multipart: {e}"));
        while let Some(field) = mp.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or("").to_string();
            if name == "file" || (shape == Shape::Many && name == "files") {
                let file_name = field
                    .file_name()
                    .map_or_else(|| format!("document-{}", docs.len()), str::to_string);
                let doc = Upload {
                    name: file_name,
                    source: Source::Bytes(field.bytes().await.map_err(bad)?),
                };
                // One document: the last `file` part is the one read.
                if shape == Shape::One {
                    docs.clear();
                }
                docs.push(doc);
            } else {
                fields.push((name, field.text().await.map_err(bad)?));
            }
        }
        if shape == Shape::One && docs.is_empty() {
            return Err(Error::BadRequest(
                "multipart body has no part named `file`".into(),
            ));
        }
        return Ok((docs, Options::from_fields(&fields)?));
    }
    let what = if mime.is_empty() { "(none)" } else { &mime };
    Err(Error::UnsupportedMediaType(match shape {
        Shape::One => format!(
            "`{what}`; send image/* bytes, multipart/form-data with a `file` part, or \
             application/json with a base64 `image`"
        ),
        Shape::Many => format!(
            "`{what}`; send image/* bytes (one document), multipart/form-data with `file` parts, \
             or application/json with base64 `documents`"
        ),
    }))
}

/// `POST /v1/ocr`'s body: its one document's bytes and its options.
pub async fn parse_ocr(
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(bytes::Bytes, RequestOptions), Error> {
    let (mut docs, opts) = parse::<OcrFields>(headers, body, Shape::One, |bytes| {
        let req: JsonRequest = json_with_options::<_, OcrFields>(bytes, &["image"])?;
        let doc = Upload {
            name: "document".into(),
            source: Source::Bytes(base64(&req.image, "`image`")?),
        };
        let opts = Options {
            overrides: req.overrides,
            route: req.own,
        };
        Ok((vec![doc], opts))
    })
    .await?;
    match docs.pop().map(|d| d.source) {
        Some(Source::Bytes(b)) => Ok((b, opts)),
        _ => Err(Error::BadRequest("the body holds no document".into())),
    }
}

/// `POST /v1/jobs`'s body (JSON or multipart; a raw body is streamed by the handler instead):
/// its documents and options.
pub async fn parse_job(
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(Vec<Upload>, JobRequestOptions), Error> {
    parse::<JobFields>(headers, body, Shape::Many, |bytes| {
        let req: JsonJobRequest = json_with_options::<_, JobFields>(bytes, &["documents"])?;
        let mut docs = Vec::with_capacity(req.documents.len());
        for (i, d) in req.documents.into_iter().enumerate() {
            let source = match (d.data, d.url) {
                (Some(data), None) => {
                    Source::Bytes(base64(&data, &format!("documents[{i}].data"))?)
                }
                (None, Some(url)) => Source::Url(url),
                _ => {
                    return Err(Error::BadRequest(format!(
                        "documents[{i}] needs exactly one of `data` (base64) and `url`"
                    )));
                }
            };
            docs.push(Upload {
                name: d.name.unwrap_or_else(|| format!("document-{i}")),
                source,
            });
        }
        let opts = Options {
            overrides: req.overrides,
            route: req.own,
        };
        Ok((docs, opts))
    })
    .await
}

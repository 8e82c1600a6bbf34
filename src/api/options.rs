//! Strict option parsing: a query parameter, JSON field or multipart field that a route does not
//! know is refused with 422 `invalid_option` naming every unknown name, so a client's typo
//! (`min_confidance=0.9`) is an error instead of a silently ignored option.
//!
//! A route's options are [`Options`]: the [`Overrides`] every OCR route shares and the route's
//! own fields (`/v1/ocr`: [`RequestOptions`](super::RequestOptions); `/v1/jobs`:
//! [`JobRequestOptions`](super::jobs::JobRequestOptions)), parsed from the same query pairs,
//! form fields or JSON object, the unknown-name check run once over both lists. (`serde`'s
//! `flatten` cannot read numbers or booleans out of a query string, whose values are all
//! strings, so a query is read twice, once per part, each part taking its own names.) A body's
//! options (JSON or multipart, [`super::body`]) override the query's ([`Options::overlay`]).
//!
//! Each options type lists its names once ([`Fields::FIELDS`]); a test checks the lists against
//! the OpenAPI parameters generated from the same types, so they cannot drift. Body types without
//! `#[serde(flatten)]` use `#[serde(deny_unknown_fields)]` and [`json_body`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use crate::error::Error;
use crate::overrides::Overrides;

/// The option names a type accepts (aliases included).
pub trait Fields {
    const FIELDS: &'static [&'static str];
}

/// A route's own options, beside the shared [`Overrides`]: a JSON body's value replaces the
/// query's.
pub trait Overlay {
    fn overlay(self, over: Self) -> Self;
}

/// Options of a route: the shared [`Overrides`] and the route's own fields `R` (see the module
/// docs).
#[derive(Debug, Clone, Default)]
pub struct Options<R> {
    pub overrides: Overrides,
    pub route: R,
}

impl<R: DeserializeOwned + Fields> Options<R> {
    /// The options in a query string (or form-encoded fields), unknown names refused.
    pub fn from_query(query: &str) -> Result<Self, Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| Error::InvalidOption(format!("query string: {e}")))?;
        check_names(
            "option",
            pairs.iter().map(|(k, _)| k.as_str()),
            &[Overrides::FIELDS, R::FIELDS],
        )?;
        let bad = |e: serde_urlencoded::de::Error| Error::InvalidOption(format!("options: {e}"));
        Ok(Options {
            overrides: serde_urlencoded::from_str(query).map_err(bad)?,
            route: serde_urlencoded::from_str(query).map_err(bad)?,
        })
    }

    /// The options in multipart form fields (parts other than files), unknown names refused.
    pub fn from_fields(fields: &[(String, String)]) -> Result<Self, Error> {
        let encoded = serde_urlencoded::to_string(fields)
            .map_err(|e| Error::BadRequest(format!("multipart fields: {e}")))?;
        Self::from_query(&encoded)
    }
}

impl<R: Overlay> Options<R> {
    /// `over`'s values where it has them, else these.
    pub fn overlay(self, over: Options<R>) -> Options<R> {
        Options {
            overrides: self.overrides.overlay(over.overrides),
            route: self.route.overlay(over.route),
        }
    }
}

/// Refuses every name in none of the `known` lists, naming them all.
pub fn check_names<'a>(
    what: &str,
    names: impl IntoIterator<Item = &'a str>,
    known: &[&[&str]],
) -> Result<(), Error> {
    let mut unknown: Vec<&str> = names
        .into_iter()
        .filter(|n| !known.iter().any(|k| k.contains(n)))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    unknown.dedup();
    let list = |v: &[&str]| {
        v.iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut all: Vec<&str> = known.iter().flat_map(|k| k.iter()).copied().collect();
    all.sort_unstable();
    Err(Error::InvalidOption(format!(
        "unknown {what} {}; known: {}",
        list(&unknown),
        list(&all)
    )))
}

/// Parses a query string (or form-encoded fields) into `T`, refusing unknown names.
pub fn parse_query<T: DeserializeOwned + Fields>(query: &str) -> Result<T, Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| Error::InvalidOption(format!("query string: {e}")))?;
    check_names(
        "option",
        pairs.iter().map(|(k, _)| k.as_str()),
        &[T::FIELDS],
    )?;
    serde_urlencoded::from_str(query).map_err(|e| Error::InvalidOption(format!("options: {e}")))
}

/// Parses a JSON object whose top level holds the options of a route whose own fields are `R`
/// beside the `extra` fields of the
/// body itself (`image`, `documents`), refusing any other name. Malformed JSON is 400; a known
/// field of the wrong type is 422.
///
/// No `Value` tree is built: the names are read first (values skipped), then `B` straight
/// from the bytes, so `B` may borrow its large strings (base64 documents) from the body
/// instead of holding a second copy of them.
pub fn json_with_options<'a, B: serde::Deserialize<'a>, R: Fields>(
    bytes: &'a [u8],
    extra: &[&str],
) -> Result<B, Error> {
    let names: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
        serde_json::from_slice(bytes).map_err(|e| {
            if e.classify() == serde_json::error::Category::Data {
                Error::BadRequest("JSON body: expected an object".into())
            } else {
                Error::BadRequest(format!("JSON body: {e}"))
            }
        })?;
    check_names(
        "field",
        names.keys().map(String::as_str),
        &[Overrides::FIELDS, R::FIELDS, extra],
    )?;
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidOption(format!("JSON body: {e}")))
}

/// Parses a JSON body of a type with `deny_unknown_fields`: an unknown field is 422
/// `invalid_option` (serde names it and the known ones), other malformed JSON 400.
pub fn json_body<B: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<B, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            Error::InvalidOption(format!("{what}: {e}"))
        } else {
            Error::BadRequest(format!("{what}: {e}"))
        }
    })
}

/// A route's query parameters, unknown names refused (see the module docs).
pub struct StrictQuery<T>(pub T);

/// A route's [`Options`] from the query string, unknown names refused.
pub struct QueryOptions<R>(pub Options<R>);

impl<S: Send + Sync, R: DeserializeOwned + Fields> FromRequestParts<S> for QueryOptions<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(QueryOptions(Options::from_query(
            parts.uri.query().unwrap_or(""),
        )?))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Fields> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(StrictQuery(parse_query(parts.uri.query().unwrap_or(""))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::jobs::{JobFields, JobRequestOptions, ListQuery, ResultQuery};
    use crate::api::{OcrFields, RequestOptions};
    use utoipa::IntoParams;

    fn param_names<T: IntoParams>() -> Vec<String> {
        let mut v: Vec<String> = T::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        v.sort();
        v
    }

    fn sorted(list: &[&str], aliases: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list
            .iter()
            .filter(|f| !aliases.contains(f))
            .map(|s| s.to_string())
            .collect();
        v.sort();
        v
    }

    fn fields<T: Fields>(aliases: &[&str]) -> Vec<String> {
        sorted(T::FIELDS, aliases)
    }

    #[test]
    fn field_lists_match_the_openapi_parameters() {
        assert_eq!(sorted(Overrides::FIELDS, &[]), param_names::<Overrides>());
        assert_eq!(fields::<OcrFields>(&["output"]), param_names::<OcrFields>());
        assert_eq!(fields::<JobFields>(&[]), param_names::<JobFields>());
        assert_eq!(fields::<ListQuery>(&[]), param_names::<ListQuery>());
        assert_eq!(fields::<ResultQuery>(&[]), param_names::<ResultQuery>());
        // No route field shadows a shared one (a query pair would set both).
        for own in [OcrFields::FIELDS, JobFields::FIELDS] {
            assert!(
                own.iter().all(|f| !Overrides::FIELDS.contains(f)),
                "{own:?}"
            );
        }
    }

    #[test]
    fn extract_names_parse_and_unknown_ones_are_refused() {
        use crate::extract::Extract;
        for (s, e) in [
            ("receipt", Extract::Receipt),
            ("mrz", Extract::Mrz),
            ("kv", Extract::Kv),
            ("auto", Extract::Auto),
        ] {
            let o = RequestOptions::from_query(&format!("extract={s}")).unwrap();
            assert_eq!(o.overrides.extract, Some(e));
        }
        assert_eq!(
            RequestOptions::from_query("extract=invoice")
                .unwrap_err()
                .code(),
            "invalid_option"
        );
    }

    /// Both parts of a route's options come from the same pairs, typed; one pair set twice is
    /// refused; a JSON body's options override the query's.
    #[test]
    fn shared_and_route_options_parse_from_one_query() {
        let o = RequestOptions::from_query(
            "det_limit_side=960&classify=true&min_confidence=0.5&rec_space_min=0.3&output=text&review_threshold=0.7&followup=accurate",
        )
        .unwrap();
        assert_eq!(o.overrides.det_limit_side, Some(960));
        assert_eq!(o.overrides.classify, Some(true));
        assert_eq!(o.overrides.min_confidence, Some(0.5));
        assert_eq!(o.overrides.rec_space_min, Some(0.3));
        assert_eq!(o.route.format, Some(crate::output::Format::Text));
        assert_eq!(o.route.review_threshold, Some(0.7));
        let j = JobRequestOptions::from_query("priority=3&rec_space_min=0.25&name=a").unwrap();
        assert_eq!(j.route.priority, Some(3));
        assert_eq!(j.overrides.rec_space_min, Some(0.25));
        assert_eq!(
            RequestOptions::from_query("classify=true&classify=false")
                .unwrap_err()
                .code(),
            "invalid_option"
        );
        // `priority` is a job's field, not `/v1/ocr`'s.
        assert!(
            RequestOptions::from_query("priority=3")
                .unwrap_err()
                .to_string()
                .contains("`priority`")
        );
        let body = RequestOptions::from_query("classify=false&tag=b").unwrap();
        let both = o.overlay(body);
        assert_eq!(both.overrides.classify, Some(false));
        assert_eq!(both.overrides.det_limit_side, Some(960));
        assert_eq!(both.route.tag.as_deref(), Some("b"));
        assert_eq!(both.route.followup.as_deref(), Some("accurate"));
    }

    #[test]
    fn unknown_names_are_refused_and_named() {
        let e = RequestOptions::from_query("quality=high&colour=red&classify=true").unwrap_err();
        assert_eq!(e.code(), "invalid_option");
        let msg = e.to_string();
        assert!(
            msg.contains("`colour`, `quality`"),
            "both unknown names, sorted: {msg}"
        );
        let o = RequestOptions::from_query("classify=true&output=text").unwrap();
        assert_eq!(o.overrides.classify, Some(true));
        let e = RequestOptions::from_query("min_confidance=0.9").unwrap_err();
        assert!(e.to_string().contains("`min_confidance`"), "{e}");
        let e = json_with_options::<serde_json::Value, OcrFields>(
            br#"{"image": "", "classfy": true}"#,
            &["image"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("`classfy`"), "{e}");
        assert_eq!(
            json_with_options::<serde_json::Value, OcrFields>(b"{", &[])
                .unwrap_err()
                .code(),
            "bad_request"
        );
        assert_eq!(
            json_with_options::<serde_json::Value, OcrFields>(b"[1]", &[])
                .unwrap_err()
                .code(),
            "bad_request"
        );
    }

    /// A base64 document is read in place from the body, not copied into a JSON tree first.
    #[test]
    fn base64_documents_borrow_from_the_body() {
        use crate::api::JsonRequest;
        use crate::api::jobs::JsonJobRequest;
        let data = "QUJD".repeat(1000);
        let body = format!(r#"{{"image": "{data}", "classify": true, "output": "text"}}"#);
        let r: JsonRequest =
            json_with_options::<_, OcrFields>(body.as_bytes(), &["image"]).unwrap();
        assert!(matches!(r.image, std::borrow::Cow::Borrowed(_)));
        assert_eq!(r.overrides.classify, Some(true));
        assert_eq!(r.own.format, Some(crate::output::Format::Text));
        let body = format!(
            r#"{{"documents": [{{"name": "a", "data": "{data}"}}, {{"url": "s3://b/k"}}], "priority": 3, "det_limit_side": 640}}"#
        );
        let r: JsonJobRequest =
            json_with_options::<_, JobFields>(body.as_bytes(), &["documents"]).unwrap();
        assert!(matches!(
            r.documents[0].data,
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(r.documents[0].data.as_deref(), Some(data.as_str()));
        assert_eq!(r.own.priority, Some(3));
        assert_eq!(r.overrides.det_limit_side, Some(640));
        // An escaped string cannot be borrowed: it is unescaped into its own copy.
        let r: JsonRequest =
            json_with_options::<_, OcrFields>(br#"{"image": "QU\/D"}"#, &["image"]).unwrap();
        assert_eq!(r.image, "QU/D");
    }
}

//! Strict option parsing: a query parameter, JSON field or multipart field that a route does not
//! know is refused with 422 `invalid_option` naming every unknown name, so a client's typo
//! (`min_confidance=0.9`) is an error instead of a silently ignored option.
//!
//! Each options type lists its names once ([`Fields::FIELDS`]); a test checks the lists against
//! the OpenAPI parameters generated from the same types, so they cannot drift. Body types without
//! `#[serde(flatten)]` use `#[serde(deny_unknown_fields)]` and [`json_body`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use crate::error::Error;

/// The option names a type accepts (aliases included).
pub trait Fields {
    const FIELDS: &'static [&'static str];
}

/// Refuses every name not in `known` (nor in `extra`), naming them all.
pub fn check_names<'a>(
    what: &str,
    names: impl IntoIterator<Item = &'a str>,
    known: &[&str],
    extra: &[&str],
) -> Result<(), Error> {
    let mut unknown: Vec<&str> = names
        .into_iter()
        .filter(|n| !known.contains(n) && !extra.contains(n))
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
    let mut all: Vec<&str> = known.iter().chain(extra).copied().collect();
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
        T::FIELDS,
        &[],
    )?;
    serde_urlencoded::from_str(query).map_err(|e| Error::InvalidOption(format!("options: {e}")))
}

/// Parses form fields (multipart parts other than files) into `T`, refusing unknown names.
pub fn parse_fields<T: DeserializeOwned + Fields>(fields: &[(String, String)]) -> Result<T, Error> {
    let encoded = serde_urlencoded::to_string(fields)
        .map_err(|e| Error::BadRequest(format!("multipart fields: {e}")))?;
    parse_query(&encoded)
}

/// Parses a JSON object whose top level holds `T`'s options beside the `extra` fields of the
/// body itself (`image`, `documents`), refusing any other name. Malformed JSON is 400; a known
/// field of the wrong type is 422.
///
/// No `Value` tree is built: the names are read first (values skipped), then `B` straight
/// from the bytes, so `B` may borrow its large strings (base64 documents) from the body
/// instead of holding a second copy of them.
pub fn json_with_options<'a, B: serde::Deserialize<'a>, T: Fields>(
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
    check_names("field", names.keys().map(String::as_str), T::FIELDS, extra)?;
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

/// The route's options from the query string, unknown names refused (see the module docs).
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Fields> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(StrictQuery(parse_query(parts.uri.query().unwrap_or(""))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RequestOptions;
    use crate::api::jobs::{JobRequestOptions, ListQuery, ResultQuery};
    use utoipa::IntoParams;

    fn param_names<T: IntoParams>() -> Vec<String> {
        let mut v: Vec<String> = T::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        v.sort();
        v
    }

    fn fields<T: Fields>(aliases: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = T::FIELDS
            .iter()
            .filter(|f| !aliases.contains(f))
            .map(|s| s.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn field_lists_match_the_openapi_parameters() {
        assert_eq!(
            fields::<RequestOptions>(&["output"]),
            param_names::<RequestOptions>()
        );
        assert_eq!(
            fields::<JobRequestOptions>(&[]),
            param_names::<JobRequestOptions>()
        );
        assert_eq!(fields::<ListQuery>(&[]), param_names::<ListQuery>());
        assert_eq!(fields::<ResultQuery>(&[]), param_names::<ResultQuery>());
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
            let o = parse_query::<RequestOptions>(&format!("extract={s}")).unwrap();
            assert_eq!(o.extract, Some(e));
        }
        assert_eq!(
            parse_query::<RequestOptions>("extract=invoice")
                .unwrap_err()
                .code(),
            "invalid_option"
        );
    }

    #[test]
    fn unknown_names_are_refused_and_named() {
        let e = parse_query::<RequestOptions>("quality=high&colour=red&classify=true").unwrap_err();
        assert_eq!(e.code(), "invalid_option");
        let msg = e.to_string();
        assert!(
            msg.contains("`colour`, `quality`"),
            "both unknown names, sorted: {msg}"
        );
        let o = parse_query::<RequestOptions>("classify=true&output=text").unwrap();
        assert_eq!(o.classify, Some(true));
        let e = parse_query::<RequestOptions>("min_confidance=0.9").unwrap_err();
        assert!(e.to_string().contains("`min_confidance`"), "{e}");
        let e = json_with_options::<serde_json::Value, RequestOptions>(
            br#"{"image": "", "classfy": true}"#,
            &["image"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("`classfy`"), "{e}");
        assert_eq!(
            json_with_options::<serde_json::Value, RequestOptions>(b"{", &[])
                .unwrap_err()
                .code(),
            "bad_request"
        );
        assert_eq!(
            json_with_options::<serde_json::Value, RequestOptions>(b"[1]", &[])
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
        let body = format!(r#"{{"image": "{data}", "classify": true}}"#);
        let r: JsonRequest =
            json_with_options::<_, RequestOptions>(body.as_bytes(), &["image"]).unwrap();
        assert!(matches!(r.image, std::borrow::Cow::Borrowed(_)));
        assert_eq!(r.options.classify, Some(true));
        let body = format!(
            r#"{{"documents": [{{"name": "a", "data": "{data}"}}, {{"url": "s3://b/k"}}], "priority": 3}}"#
        );
        let r: JsonJobRequest = json_with_options::<_, crate::api::jobs::JobRequestOptions>(
            body.as_bytes(),
            &["documents"],
        )
        .unwrap();
        assert!(matches!(
            r.documents[0].data,
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(r.documents[0].data.as_deref(), Some(data.as_str()));
        assert_eq!(r.options.priority, Some(3));
        // An escaped string cannot be borrowed: it is unescaped into its own copy.
        let r: JsonRequest =
            json_with_options::<_, RequestOptions>(br#"{"image": "QU\/D"}"#, &["image"]).unwrap();
        assert_eq!(r.image, "QU/D");
    }
}

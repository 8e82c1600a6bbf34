//! What a caller may set per request or per job: one type, [`Overrides`], for `/v1/ocr`,
//! `/v1/jobs`, the hybrid's follow-up job, the stored job, `ocr-server submit` and the `options`
//! fuzz target.
//!
//! Its names are listed once ([`Overrides::FIELDS`], checked against the OpenAPI parameters
//! generated from the same type), [`Overrides::check`] validates them against the model set
//! that will run them, and [`Overrides::apply`] lays them over the server's [`OcrOptions`].
//! A route's own fields (`format`, `followup`, `priority`, …) live in the route's type beside it
//! (`api::options::Options`). A job stores its overrides flat in its options' JSON, in the
//! order and under the names it always had, so no stored job needs a migration.
//!
//! Adding an option: a field here (with its doc line, which becomes the OpenAPI description and
//! `submit`'s `--help`), its name in `FIELDS`, a line in `overlay`, its range in `check` and its
//! effect in `apply`; the compiler points at anything else.

use serde::{Deserialize, Serialize};

use crate::engine::{ModelKind, OcrOptions};
use crate::error::Error;
use crate::extract::Extract;

/// The per-request and per-job options shared by every route. `None` everywhere: the server's
/// own settings.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
    clap::Args,
)]
#[into_params(parameter_in = Query)]
pub struct Overrides {
    /// Detector side limit in pixels (32–4096); the server's sizing rule applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub det_limit_side: Option<u32>,
    /// Run the 180° line orientation classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub classify: Option<bool>,
    /// Drop lines whose confidence is below this (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// Pages of a PDF or TIFF, 1-based: `1-3,7`, `5-` (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub pages: Option<String>,
    /// Fields to extract from each page into the JSON result's `extractions`: `receipt`,
    /// `mrz`, `kv` (form labels and values) or `auto` (per page, whichever is found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_enum)]
    pub extract: Option<Extract>,
    /// The model profile to run (`fast`, `accurate`, …; see `/health/ready`). Default: the
    /// server's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub profile: Option<String>,
    /// Model set; must be the one the profile serves (see `/health/ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// A space the recogniser's arg-max missed is still written where the space class peaks
    /// at this probability or more between two characters (0–1, exclusive of 0; 1 turns it
    /// off). Default: the server's `--rec-space-min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub rec_space_min: Option<f32>,
}

impl Overrides {
    /// Every name, as query parameter, form field and JSON field.
    pub const FIELDS: &'static [&'static str] = &[
        "det_limit_side",
        "classify",
        "min_confidence",
        "pages",
        "extract",
        "profile",
        "model",
        "rec_space_min",
    ];

    /// `over`'s values where it has them, else these (a JSON body's over its query string's).
    pub fn overlay(self, over: Overrides) -> Overrides {
        Overrides {
            det_limit_side: over.det_limit_side.or(self.det_limit_side),
            classify: over.classify.or(self.classify),
            min_confidence: over.min_confidence.or(self.min_confidence),
            pages: over.pages.or(self.pages),
            extract: over.extract.or(self.extract),
            profile: over.profile.or(self.profile),
            model: over.model.or(self.model),
            rec_space_min: over.rec_space_min.or(self.rec_space_min),
        }
    }

    /// Refuses a value out of its range, or a `model` other than `kind` (the set the profile
    /// serves). The page selection is checked against the document when it is read, and the
    /// profile name against the server's profiles when one is chosen.
    pub fn check(&self, kind: ModelKind) -> Result<(), Error> {
        if let Some(m) = self.model
            && m != kind
        {
            return Err(Error::InvalidOption(format!(
                "model {} is not served here; this server serves {}",
                m.name(),
                kind.name()
            )));
        }
        if let Some(side) = self.det_limit_side
            && !(32..=4096).contains(&side)
        {
            return Err(Error::InvalidOption(format!(
                "det_limit_side must be 32..=4096, got {side}"
            )));
        }
        if let Some(m) = self.min_confidence
            && !(0.0..=1.0).contains(&m)
        {
            return Err(Error::InvalidOption(format!(
                "min_confidence must be in 0..=1, got {m}"
            )));
        }
        if let Some(s) = self.rec_space_min
            && !(s > 0.0 && s <= 1.0)
        {
            return Err(Error::InvalidOption(format!(
                "rec_space_min must be in (0, 1], got {s}"
            )));
        }
        Ok(())
    }

    /// The server's options `base` with these overrides laid over them (values already
    /// [`check`](Self::check)ed: a stored job's were when it was created).
    pub fn apply(&self, base: &OcrOptions) -> OcrOptions {
        let mut o = base.clone();
        if let Some(side) = self.det_limit_side {
            o.det_resize.limit_side_px = side;
        }
        if let Some(c) = self.classify {
            o.classify = c;
        }
        if let Some(m) = self.min_confidence {
            o.min_confidence = m;
        }
        if let Some(s) = self.rec_space_min {
            o.rec_space_min = s;
        }
        o
    }

    /// [`check`](Self::check), then [`apply`](Self::apply).
    pub fn checked(&self, kind: ModelKind, base: &OcrOptions) -> Result<OcrOptions, Error> {
        self.check(kind)?;
        Ok(self.apply(base))
    }

    /// The pipeline overrides a job carries over from a request (everything but the model set
    /// and profile, which each job creator chooses itself).
    pub fn for_job(&self) -> Overrides {
        Overrides {
            profile: None,
            model: None,
            ..self.clone()
        }
    }

    /// As query pairs in field order (`submit` sends these; they are part of its idempotency
    /// key, so the order is fixed).
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let encoded = serde_urlencoded::to_string(self).unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&encoded).unwrap_or_default();
        let mut out = Vec::new();
        for name in Self::FIELDS {
            if let Some((_, v)) = pairs.iter().find(|(k, _)| k == name) {
                out.push((*name, v.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIELDS names every field, in declaration order (the order jobs store them in).
    #[test]
    fn fields_name_every_field_in_order() {
        let full = Overrides {
            det_limit_side: Some(960),
            classify: Some(true),
            min_confidence: Some(0.5),
            pages: Some("1-3".into()),
            extract: Some(Extract::Auto),
            profile: Some("fast".into()),
            model: Some(ModelKind::V6),
            rec_space_min: Some(0.3),
        };
        let pairs = full.query_pairs();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, Overrides::FIELDS);
        assert_eq!(pairs[2].1, "0.5");
        assert_eq!(pairs[7].1, "0.3", "an f32 written as it was given");
        let json = serde_json::to_string(&full).unwrap();
        let order: Vec<usize> = Overrides::FIELDS
            .iter()
            .map(|n| json.find(&format!("\"{n}\"")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let base = OcrOptions::for_model(ModelKind::V6);
        for bad in [
            Overrides {
                det_limit_side: Some(31),
                ..Default::default()
            },
            Overrides {
                min_confidence: Some(1.5),
                ..Default::default()
            },
            Overrides {
                rec_space_min: Some(0.0),
                ..Default::default()
            },
            Overrides {
                rec_space_min: Some(f32::NAN),
                ..Default::default()
            },
            Overrides {
                model: Some(ModelKind::V4),
                ..Default::default()
            },
        ] {
            let e = bad.checked(ModelKind::V6, &base).unwrap_err();
            assert_eq!(e.code(), "invalid_option", "{bad:?}");
        }
        let o = Overrides {
            rec_space_min: Some(1.0),
            det_limit_side: Some(32),
            ..Default::default()
        }
        .checked(ModelKind::V6, &base)
        .unwrap();
        assert_eq!(o.rec_space_min, 1.0);
        assert_eq!(o.det_resize.limit_side_px, 32);
    }
}

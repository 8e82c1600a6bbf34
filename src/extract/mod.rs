//! What a document says, as fields: pure functions over OCR pages (lines with their text,
//! confidence and box, in reading order), no I/O and no models.
//!
//! - [`receipt`]: vendor, date, address, total (with currency, subtotal and tax where printed)
//!   and line items, found by layout: rows of lines at one height, key words, positions.
//! - [`mrz`]: the machine-readable zone of passports and ID cards (ICAO 9303 TD1, TD2, TD3),
//!   found among the page's lines, parsed and check-digit verified by the `mrz` crate, which
//!   repairs OCR's usual confusions (`<`, `0/O`, `1/I`, `5/S`, `8/B`) only where a check digit
//!   confirms the repair.
//! - [`kv`]: key-value pairs of forms: a label ending in `:` and the value beside or below it.
//!
//! Every field carries the `value` as printed, a `confidence` (the lowest confidence of the
//! lines it came from), the `box` it was read from and, where a rule exists, `valid`. An
//! extraction lists in `problems` every check that failed, each naming its field: the job
//! runner sends such a page to review.

pub mod kv;
pub mod mrz;
pub mod receipt;
mod rows;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::{Line, Page};

pub use rows::{Row, rows};

/// Which extraction a request asks for (`extract=`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Extract {
    /// Receipts and invoices: company, date, address, total, subtotal, tax, line items.
    Receipt,
    /// Passport and ID-card machine-readable zones, every check digit verified.
    Mrz,
    /// Form labels and their values.
    Kv,
    /// Per page: the MRZ when one parses, else a receipt when a total or a date is found,
    /// else key-value pairs.
    Auto,
}

/// The kind of one extraction in a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Receipt,
    Mrz,
    Kv,
}

impl Kind {
    /// The name in results and review reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receipt => "receipt",
            Kind::Mrz => "mrz",
            Kind::Kv => "kv",
        }
    }
}

/// One extracted value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Field {
    /// The text as printed.
    pub value: String,
    /// A normal form where one exists: ISO 8601 for dates, a plain decimal for amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized: Option<String>,
    /// The lowest confidence of the lines the value was read from, in [0, 1].
    pub confidence: f32,
    /// Where it was read (the union of its lines' boxes: tl, tr, br, bl).
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<f32>>>)]
    pub bbox: Option<[[f32; 2]; 4]>,
    /// The outcome of this field's check, where a rule exists (a check digit, a date that
    /// parses, a total that agrees with its parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
}

impl Field {
    /// A field read from `lines` (its confidence and box are theirs).
    pub fn from_lines(value: impl Into<String>, lines: &[&Line]) -> Self {
        Field {
            value: value.into(),
            normalized: None,
            confidence: lines
                .iter()
                .map(|l| l.confidence)
                .reduce(f32::min)
                .unwrap_or(0.0),
            bbox: union_box(lines.iter().map(|l| &l.bbox)),
            valid: None,
        }
    }

    pub fn normalized(mut self, n: impl Into<String>) -> Self {
        self.normalized = Some(n.into());
        self
    }

    pub fn valid(mut self, v: bool) -> Self {
        self.valid = Some(v);
        self
    }
}

/// A receipt's line item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineItem {
    pub description: Field,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Field>,
    pub amount: Field,
}

/// A form's label and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pair {
    pub key: Field,
    pub value: Field,
}

/// What one page says, as fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Extraction {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The page's position in the result's `pages`, 1-based.
    pub page: usize,
    pub fields: BTreeMap<String, Field>,
    /// Receipts: the line items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<LineItem>,
    /// Forms: the label-value pairs in reading order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<Pair>,
    /// MRZ: every check digit's outcome by name (`document_number`, `date_of_birth`,
    /// `date_of_expiry`, `personal_number`, `composite`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, bool>,
    /// Whether every check of this extraction passed (absent where nothing was checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    /// The checks that failed, each naming its field (`date_of_birth: check digit`): the
    /// reasons a job sends the page to review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Extraction {
    fn new(kind: Kind, page: usize) -> Self {
        Extraction {
            kind,
            page,
            fields: BTreeMap::new(),
            items: Vec::new(),
            pairs: Vec::new(),
            checks: BTreeMap::new(),
            valid: None,
            problems: Vec::new(),
        }
    }

    /// The fields (and line items' and pairs' fields) whose confidence is under `threshold`,
    /// by name.
    pub fn fields_under(&self, threshold: f32) -> Vec<String> {
        let mut out: Vec<String> = self
            .fields
            .iter()
            .filter(|(_, f)| f.confidence < threshold)
            .map(|(k, _)| k.clone())
            .collect();
        for (i, it) in self.items.iter().enumerate() {
            if it.description.confidence.min(it.amount.confidence) < threshold {
                out.push(format!("items[{i}]"));
            }
        }
        out
    }
}

/// Extracts what `what` asks from every page that has lines (pages numbered from 1).
pub fn extract(what: Extract, pages: &[Page]) -> Vec<Extraction> {
    pages
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.lines.is_empty())
        .filter_map(|(i, p)| extract_page(what, p, i + 1))
        .collect()
}

/// One page's extraction, if it holds what `what` looks for.
pub fn extract_page(what: Extract, page: &Page, number: usize) -> Option<Extraction> {
    match what {
        Extract::Mrz => mrz::extract(page, number),
        Extract::Receipt => Some(receipt::extract(page, number)),
        Extract::Kv => Some(kv::extract(page, number)),
        Extract::Auto => mrz::extract(page, number)
            .or_else(|| {
                let r = receipt::extract(page, number);
                (r.fields.contains_key("total") || r.fields.contains_key("date")).then_some(r)
            })
            .or_else(|| {
                let k = kv::extract(page, number);
                (!k.pairs.is_empty()).then_some(k)
            }),
    }
}

/// The axis-aligned union of quads, as a quad (tl, tr, br, bl).
pub fn union_box<'a>(boxes: impl IntoIterator<Item = &'a [[f32; 2]; 4]>) -> Option<[[f32; 2]; 4]> {
    let mut it = boxes.into_iter().flat_map(|b| b.iter()).peekable();
    it.peek()?;
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in it {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    Some([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::pipeline::{Line, Page};

    /// A line of `text` at (x, y), `h` high, about 0.6 h per character wide.
    pub fn line(text: &str, x: f32, y: f32, h: f32) -> Line {
        let w = text.chars().count() as f32 * h * 0.6;
        Line {
            text: text.into(),
            confidence: 0.95,
            bbox: [[x, y], [x + w, y], [x + w, y + h], [x, y + h]],
            words: Vec::new(),
            char_confidences: Vec::new(),
        }
    }

    /// A page of lines, one per entry: (text, x, y).
    pub fn page(lines: &[(&str, f32, f32)]) -> Page {
        Page {
            width: 600,
            height: 1600,
            lines: lines.iter().map(|&(t, x, y)| line(t, x, y, 20.0)).collect(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::page;
    use super::*;

    #[test]
    fn auto_picks_the_mrz_then_a_receipt_then_pairs() {
        let passport = page(&[
            ("PASSPORT", 10.0, 10.0),
            ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", 10.0, 500.0),
            ("L898902C36UTO7408122F1204159ZE184226B<<<<<10", 10.0, 530.0),
        ]);
        let receipt = page(&[
            ("KEDAI BUKU SDN BHD", 100.0, 10.0),
            ("DATE: 12/03/2018", 10.0, 100.0),
            ("TOTAL", 10.0, 300.0),
            ("12.50", 400.0, 300.0),
        ]);
        let form = page(&[
            ("Name: Jane Roe", 10.0, 10.0),
            ("Phone: 555 0100", 10.0, 40.0),
        ]);
        let got: Vec<Kind> = extract(Extract::Auto, &[passport, receipt, form, Page::default()])
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(got, [Kind::Mrz, Kind::Receipt, Kind::Kv]);
    }

    /// OCR output is untrusted: every extraction takes any text without panicking (multi-byte
    /// characters next to colons, dates and amounts; case changes that move byte offsets).
    #[test]
    fn odd_text_never_panics() {
        let odd = [
            "ﬁ：ß 12/03/2018 ＴＯＴＡＬ 12.50",
            "İstanbul: 1,234.50 € Straße:",
            "：：：",
            "TOTA L ǅ 31/12/99 RM1.00%",
            "P<UTOß<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<",
            "«««««««««««««««««««««««««««««««««««««««««««",
            "ΣΊΣΥΦΟΣ: DATE 01-ΝΟΕ-2017 🧾 total 9.99",
            "",
        ];
        let lines: Vec<(&str, f32, f32)> = odd
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, 10.0, 10.0 + 30.0 * i as f32))
            .collect();
        let p = page(&lines);
        for what in [Extract::Receipt, Extract::Mrz, Extract::Kv, Extract::Auto] {
            let _ = extract(what, std::slice::from_ref(&p));
        }
        let r = receipt::extract(&p, 1);
        assert_eq!(r.fields["date"].value, "12/03/2018");
        let k = kv::extract(&p, 1);
        let keys: Vec<&str> = k.pairs.iter().map(|p| p.key.value.as_str()).collect();
        assert!(keys.contains(&"İstanbul"), "{keys:?}");
    }

    #[test]
    fn a_field_takes_its_lines_lowest_confidence_and_their_union_box() {
        let p = page(&[("A", 10.0, 10.0), ("B", 50.0, 40.0)]);
        let mut lines: Vec<&Line> = p.lines.iter().collect();
        let mut low = p.lines[1].clone();
        low.confidence = 0.4;
        lines[1] = &low;
        let f = Field::from_lines("A B", &lines);
        assert_eq!(f.confidence, 0.4);
        assert_eq!(f.bbox.unwrap()[0], [10.0, 10.0]);
        assert_eq!(f.bbox.unwrap()[2], [62.0, 60.0]);
    }
}

//! Pure pre- and post-processing: bytes → pages → detector tensor → boxes → crops → recogniser
//! tensors → text. Nothing here does I/O, awaits, logs above debug, or reads global config; every
//! function takes what it needs and returns a value, so each is unit-tested on its own.

pub mod ctc;
pub mod db;
pub mod decode;
pub mod geometry;
pub mod order;
pub mod preprocess;

use serde::{Deserialize, Serialize};

/// A dense f32 tensor, row-major (C order). Models take and return these.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }
}

/// A recognised word: text, confidence in [0, 1] and its quad on the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Word {
    pub text: String,
    pub confidence: f32,
    #[serde(rename = "box")]
    #[schema(value_type = Vec<Vec<f32>>)]
    pub bbox: [[f32; 2]; 4],
}

/// A recognised text line: text, mean character confidence in [0, 1], its quad on the page
/// (tl, tr, br, bl) and its words.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    pub text: String,
    pub confidence: f32,
    #[serde(rename = "box")]
    #[schema(value_type = Vec<Vec<f32>>)]
    pub bbox: [[f32; 2]; 4],
    pub words: Vec<Word>,
    /// Optional: the CTC decoder's probability of each character of `text` as recognised (one
    /// per `char`, three decimals); absent where nothing recognised the line (a correction).
    /// The review desk marks the characters under the job's threshold with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub char_confidences: Vec<f32>,
}

/// The OCR result of one page, lines in reading order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page {
    pub width: u32,
    pub height: u32,
    pub lines: Vec<Line>,
    /// Set when this page could not be decoded or rendered (the document's other pages still
    /// went through); the page then has no lines and a zero size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PageError>,
}

/// Why one page of a document has no result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PageError {
    /// The stable error code (as in problem bodies).
    pub code: String,
    pub message: String,
}

impl Page {
    /// The placeholder of a page that failed.
    pub fn failed(e: &crate::error::Error) -> Self {
        Page {
            error: Some(PageError {
                code: e.code().into(),
                message: e.to_string(),
            }),
            ..Page::default()
        }
    }
}

impl Page {
    /// The page's text: lines in reading order joined by `\n`.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A document's text: pages joined by a blank line (`\n\n`).
pub fn document_text(pages: &[Page]) -> String {
    pages
        .iter()
        .map(Page::text)
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Rounds a quad for output: one decimal is sub-pixel enough and keeps JSON small.
pub fn quad_out(q: &geometry::Quad) -> [[f32; 2]; 4] {
    q.map(|p| [(p.x * 10.0).round() / 10.0, (p.y * 10.0).round() / 10.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str) -> Line {
        Line {
            text: t.into(),
            confidence: 1.0,
            bbox: [[0.0; 2]; 4],
            words: vec![],
            char_confidences: vec![],
        }
    }

    #[test]
    fn document_text_joins_lines_and_pages() {
        let p1 = Page {
            width: 1,
            height: 1,
            lines: vec![line("a"), line("b")],
            error: None,
        };
        let p2 = Page {
            width: 1,
            height: 1,
            lines: vec![line("c")],
            error: None,
        };
        assert_eq!(document_text(&[p1, p2]), "a\nb\n\nc");
        assert_eq!(document_text(&[]), "");
    }

    #[test]
    fn page_json_shape_is_the_contract() {
        let p = Page {
            width: 3,
            height: 4,
            lines: vec![line("x")],
            error: None,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["lines"][0]["box"].as_array().unwrap().len(), 4);
        assert!(v["lines"][0]["words"].is_array());
        assert_eq!(v["width"], 3);
    }
}

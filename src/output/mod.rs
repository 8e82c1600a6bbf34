//! Output formats of an OCR result: `json` (the API's shape), `text` (reading order, pages
//! separated by form feed), `hocr` (hOCR 1.2) and `pdf` (searchable PDF: the page image, or the
//! original PDF page itself, under an invisible text layer).
//!
//! `hocr` and `pdf` go through [`render`] wherever they are asked for: the CLI (`--format`),
//! `POST /v1/ocr` (`?format=` or `Accept`) and a job's result of one document (`?format=`), so
//! they give the same bytes for the same pages. `text` is [`text`] (the CLI and `/v1/ocr`);
//! `json` is each caller's own shape. A job's `json` and `text` results are not built here:
//! `api::results` streams them from the store page by page, with the same text rule.

pub mod glyphless_font;
pub mod hocr;
pub mod pdf;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::document::{Document, Kind};
use crate::error::{Error, Result};
use crate::pipeline::Page;
use pdf::PageImage;

/// The resolution images are placed at in a searchable PDF (their pixels are kept; this only
/// sets the page size in points): 300 dpi, the usual scan resolution.
pub const IMAGE_DPI: f32 = 300.0;

/// An output format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Deserialize,
    Serialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `application/json`: text, pages, lines, words and boxes.
    #[default]
    Json,
    /// `text/plain`: lines joined by `\n`, pages separated by a form feed.
    Text,
    /// `text/vnd.hocr+html`: hOCR 1.2 (`ocr_page`, `ocr_line`, `ocrx_word` with `bbox`, `x_wconf`).
    Hocr,
    /// `application/pdf`: a searchable PDF.
    Pdf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Text => "text/plain; charset=utf-8",
            Format::Hocr => "text/vnd.hocr+html; charset=utf-8",
            Format::Pdf => "application/pdf",
        }
    }

    /// The format an `Accept` header asks for, by the first media type we produce (`None` when
    /// it names none of them, e.g. `*/*`).
    pub fn from_accept(accept: &str) -> Option<Format> {
        accept.split(',').find_map(|part| {
            match part.split(';').next()?.trim().to_ascii_lowercase().as_str() {
                "application/json" => Some(Format::Json),
                "text/plain" => Some(Format::Text),
                "text/vnd.hocr+html" | "application/xhtml+xml" | "text/html" => Some(Format::Hocr),
                "application/pdf" => Some(Format::Pdf),
                _ => None,
            }
        })
    }
}

/// The `text` output: each page's lines joined by `\n`, pages separated by a form feed.
pub fn text(pages: &[Page]) -> String {
    pages
        .iter()
        .map(Page::text)
        .collect::<Vec<_>>()
        .join("\n\u{c}")
}

/// Renders `pages` (the OCR of the document's pages `selected`, 0-based, in order) as `text`,
/// `hocr` or `pdf` bytes. `json` is the caller's own shape and is refused here.
pub fn render(
    format: Format,
    doc: &Document,
    name: &str,
    selected: &[usize],
    pages: &[Page],
) -> Result<Vec<u8>> {
    match format {
        Format::Text => Ok(text(pages).into_bytes()),
        Format::Hocr => Ok(hocr::hocr(pages, name).into_bytes()),
        Format::Pdf => searchable_pdf(doc, selected, pages),
        Format::Json => Err(Error::Runtime("output::render called for json".into())),
    }
}

fn write_error(e: pdf::PdfWriteError) -> Error {
    Error::Runtime(format!("writing the searchable PDF: {e}"))
}

/// The searchable PDF of a document. A PDF keeps its own pages (every page, OCRed or not) with a
/// text layer added to the OCRed ones; when the PDF cannot be rewritten in place (an
/// owner-password-encrypted file, say) its pages are rendered instead, as for images. Images are
/// embedded at their own resolution: JPEGs byte for byte, others Flate-compressed.
pub fn searchable_pdf(doc: &Document, selected: &[usize], pages: &[Page]) -> Result<Vec<u8>> {
    let ok: Vec<(usize, &Page)> = selected
        .iter()
        .copied()
        .zip(pages)
        .filter(|(_, p)| p.error.is_none())
        .collect();
    if doc.kind() == Kind::Pdf {
        match pdf::add_text_layer(doc.bytes(), &ok) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => tracing::warn!(
                "searchable PDF: the original cannot be rewritten ({e}); rendering its pages"
            ),
        }
    }
    let jpeg = matches!(doc.kind(), Kind::Image(image::ImageFormat::Jpeg))
        && jpeg_orientation_is_identity(doc.bytes());
    let layers: Vec<(&Page, f32)> = ok
        .iter()
        .map(|(i, p)| (*p, doc.page_dpi(*i).unwrap_or(IMAGE_DPI)))
        .collect();
    let mut held: Option<crate::memory::Reservation> = None;
    pdf::from_images_lazy(&layers, |k| {
        let index = ok[k].0;
        if jpeg {
            let (width, height, components, _) = pdf::jpeg_info(doc.bytes())?;
            return Ok(PageImage::Jpeg {
                bytes: doc.bytes().to_vec(),
                width,
                height,
                components,
            });
        }
        // Reserved from the memory budget while the page is decoded and embedded: the writer
        // drops each image before it asks for the next, so the reservation is kept until then.
        drop(held.take());
        held = Some(
            doc.reserve(&[index])
                .map_err(|e| pdf::PdfWriteError::Image(e.to_string()))?
                .1,
        );
        let img = doc
            .page(index)
            .map_err(|e| pdf::PdfWriteError::Image(e.to_string()))?;
        Ok(PageImage::Rgb(img))
    })
    .map_err(write_error)
}

/// Whether a JPEG needs no EXIF rotation (then its bytes can be embedded as they are: the OCR
/// coordinates are those of the stored pixels).
fn jpeg_orientation_is_identity(bytes: &[u8]) -> bool {
    use image::ImageDecoder;
    image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes))
        .ok()
        .and_then(|mut d| d.orientation().ok())
        .is_none_or(|o| o == image::metadata::Orientation::NoTransforms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_and_content_types() {
        assert_eq!(Format::from_accept("application/pdf"), Some(Format::Pdf));
        assert_eq!(
            Format::from_accept("text/vnd.hocr+html;q=1, */*"),
            Some(Format::Hocr)
        );
        assert_eq!(Format::from_accept("*/*"), None);
        assert_eq!(
            Format::from_accept("image/png, text/plain"),
            Some(Format::Text)
        );
        assert!(Format::Pdf.content_type().starts_with("application/pdf"));
    }

    #[test]
    fn text_separates_pages_with_form_feed() {
        let p = |t: &str| Page {
            width: 1,
            height: 1,
            lines: vec![crate::pipeline::Line {
                text: t.into(),
                confidence: 1.0,
                bbox: [[0.0; 2]; 4],
                words: vec![],
                char_confidences: vec![],
            }],
            error: None,
        };
        assert_eq!(
            text(&[p("a"), p("b")]),
            "a\u{c}b".replace('\u{c}', "\n\u{c}")
        );
    }
}

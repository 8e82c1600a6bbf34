//! Documents: one lazy page stream over single images, multi-page TIFF and PDF.
//!
//! [`Document::open`] recognises the container from its magic bytes and reads only what it needs
//! to know the page count: an image's header, a TIFF's directory chain, a PDF's cross-reference
//! table and page tree (`hayro`, pure Rust, so a malicious PDF cannot corrupt memory; the
//! renderer comparison is in docs/api.md, "Documents"). [`Document::page`] then decodes or renders
//! one page at a time, so a 1,000-page PDF never sits in memory whole: callers hold at most the
//! pages they are working on.
//!
//! Errors are split the way a client can act on them: a document that cannot be opened at all
//! (empty, not a supported format, a PDF damaged beyond repair) is an error of the whole document
//! from `open`; a page that cannot be decoded or rendered is an error of that page from `page`,
//! and the other pages still go through. A PDF encrypted with a user password opens as one page
//! that is an `encrypted_document` error (its page tree is usually encrypted too), so in a job
//! beside other documents it fails only itself, and alone it fails the request or file.
//!
//! PDF pages are rendered at [`DecodeLimits::pdf_dpi`] (default 200, docs/api.md "Documents");
//! a page whose rendering would exceed the pixel or side limits is rendered at the highest
//! resolution that fits, down to [`MIN_PDF_DPI`], below which it is a page error (an absurd
//! MediaBox).

pub mod pdf;

use std::sync::Arc;

use image::{ImageFormat, RgbImage};

use crate::error::{Error, Result};
use crate::memory::Reservation;
use crate::pipeline::decode::{
    DecodeLimits, check_header, decode_single, decode_tiff_page, image_cost, sniff_format,
    tiff_page_cost, tiff_page_count,
};

use pdf::{PdfError, PdfSource};

/// Lowest resolution a PDF page is rendered at to fit the limits.
pub const MIN_PDF_DPI: f32 = 36.0;

/// Most pages a document may declare (the `pages` selection and `max_pages` then bound what is
/// processed); a TIFF directory chain or PDF page tree longer than this is refused.
pub const MAX_DOCUMENT_PAGES: usize = 100_000;

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One image (PNG, JPEG, WebP, BMP).
    Image(ImageFormat),
    /// A TIFF, one page per directory.
    Tiff,
    /// A PDF.
    Pdf,
}

enum Source {
    Image(ImageFormat),
    Tiff,
    Pdf(PdfSource),
    /// A PDF encrypted with a user password: one page, which is an `encrypted_document` error
    /// (the real page count is encrypted too when the page tree sits in object streams).
    EncryptedPdf,
}

/// An opened document: its bytes, kind and page count; pages are produced on demand.
pub struct Document {
    bytes: Arc<Vec<u8>>,
    source: Source,
    count: usize,
    limits: DecodeLimits,
    /// Decoded stream bytes of the PDF pages measured so far.
    measured: std::sync::Mutex<std::collections::HashMap<usize, u64>>,
}

/// Whether the bytes are a PDF: `%PDF-` within the first 1024 bytes, as readers accept.
pub fn is_pdf(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)]
        .windows(5)
        .any(|w| w == b"%PDF-")
}

impl Document {
    /// Opens a document, reading only what gives its page count.
    pub fn open(bytes: Arc<Vec<u8>>, limits: &DecodeLimits) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::EmptyInput);
        }
        let (source, count) = if is_pdf(&bytes) {
            let pdf = match PdfSource::open(bytes.clone()) {
                Ok(pdf) => Some(pdf),
                Err(PdfError::Encrypted) => None,
                Err(e) => return Err(pdf_error(e)),
            };
            let count = match &pdf {
                Some(pdf) => pdf.page_count(),
                None => 1,
            };
            if count == 0 {
                return Err(Error::CorruptDocument("the PDF has no pages".into()));
            }
            if count > MAX_DOCUMENT_PAGES {
                return Err(Error::TooManyPages {
                    limit: MAX_DOCUMENT_PAGES,
                });
            }
            (pdf.map_or(Source::EncryptedPdf, Source::Pdf), count)
        } else {
            match sniff_format(&bytes).ok_or(Error::UnsupportedFormat)? {
                ImageFormat::Tiff => {
                    let count = tiff_page_count(&bytes, limits, MAX_DOCUMENT_PAGES)?;
                    (Source::Tiff, count)
                }
                f => {
                    check_header(&bytes, f, limits)?;
                    (Source::Image(f), 1)
                }
            }
        };
        Ok(Self {
            bytes,
            source,
            count,
            limits: limits.clone(),
            measured: Default::default(),
        })
    }

    pub fn kind(&self) -> Kind {
        match &self.source {
            Source::Image(f) => Kind::Image(*f),
            Source::Tiff => Kind::Tiff,
            Source::Pdf(_) | Source::EncryptedPdf => Kind::Pdf,
        }
    }

    /// The document's bytes as received.
    pub fn bytes(&self) -> &Arc<Vec<u8>> {
        &self.bytes
    }

    pub fn page_count(&self) -> usize {
        self.count
    }

    /// Worst-case bytes that decoding or rendering page `index` allocates, including the RGB
    /// page it leaves: what [`Document::reserve`] takes from the memory budget. For a PDF page
    /// this measures what its streams decode to, and a page over
    /// [`DecodeLimits::max_decompressed_bytes_per_page`] is `decompressed_too_large` here.
    pub fn page_cost(&self, index: usize) -> Result<u64> {
        self.check_index(index)?;
        match &self.source {
            Source::Image(f) => image_cost(&self.bytes, *f, &self.limits),
            Source::Tiff => tiff_page_cost(&self.bytes, index, &self.limits),
            Source::Pdf(pdf) => {
                let dpi = self.pdf_dpi(pdf, index)?;
                let (w, h) = pdf
                    .render_size(index, dpi)
                    .map_err(|e| page_error(index, pdf_error(e)))?;
                let streams = self.pdf_streams(pdf, index)?;
                // The renderer's RGBA pixmap, the RGB page, and the decoded streams.
                Ok(w * h * (4 + 3) + streams)
            }
            Source::EncryptedPdf => Err(Error::EncryptedDocument),
        }
    }

    /// Reserves the worst case of `pages` from the memory budget, waiting a bounded time for
    /// room (blocking: call it on a blocking thread). Returns each page's cost check (a page
    /// that fails it fails alone: decode only the `Ok` ones) and the reservation, which must
    /// live as long as the decoded pages do.
    pub fn reserve(&self, pages: &[usize]) -> Result<(Vec<Result<()>>, Reservation)> {
        let mut total = 0u64;
        let checks = pages
            .iter()
            .map(|&i| {
                self.page_cost(i).map(|c| {
                    total = total.saturating_add(c);
                })
            })
            .collect();
        let reservation = if total == 0 {
            Reservation::default()
        } else {
            self.limits.memory.reserve(total)?
        };
        Ok((checks, reservation))
    }

    /// The one reserve-then-decode: reserves the worst case of every page of `pages` first (see
    /// [`Self::reserve`]), then decodes each page that passed its check; a page over a limit
    /// fails alone. Blocking. The reservation must live as long as the pages do.
    pub fn decode_reserved(&self, pages: &[usize]) -> Result<(Vec<Result<RgbImage>>, Reservation)> {
        let (checks, reservation) = self.reserve(pages)?;
        let decoded = pages
            .iter()
            .zip(checks)
            .map(|(&i, c)| c.and_then(|()| self.page(i)))
            .collect();
        Ok((decoded, reservation))
    }

    /// [`Self::decode_reserved`] of one page.
    pub fn decode_one(&self, index: usize) -> Result<(RgbImage, Reservation)> {
        let (mut decoded, reservation) = self.decode_reserved(&[index])?;
        let image = decoded
            .pop()
            .unwrap_or_else(|| Err(Error::Runtime("no page decoded".into())))?;
        Ok((image, reservation))
    }

    /// What page `index`'s streams decode to, measured once per document (see
    /// [`PdfSource::decoded_bytes`]).
    fn pdf_streams(&self, pdf: &PdfSource, index: usize) -> Result<u64> {
        let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&n) = measured.get(&index) {
            return Ok(n);
        }
        let n = pdf
            .decoded_bytes(index, self.limits.max_decompressed_bytes_per_page)
            .map_err(|e| page_error(index, pdf_error(e)))?;
        measured.insert(index, n);
        Ok(n)
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.count {
            return Err(Error::InvalidOption(format!(
                "page {} does not exist: the document has {} pages",
                index + 1,
                self.count
            )));
        }
        Ok(())
    }

    /// Decodes or renders page `index` (0-based) to RGB. The caller reserves its cost first
    /// ([`Document::reserve`]); a PDF page over the decompression cap is refused here too.
    pub fn page(&self, index: usize) -> Result<RgbImage> {
        if index >= self.count {
            return Err(Error::InvalidOption(format!(
                "page {} does not exist: the document has {} pages",
                index + 1,
                self.count
            )));
        }
        match &self.source {
            Source::Image(f) => decode_single(&self.bytes, *f, &self.limits),
            Source::Tiff => decode_tiff_page(&self.bytes, index, &self.limits),
            Source::Pdf(pdf) => {
                let dpi = self.pdf_dpi(pdf, index)?;
                self.pdf_streams(pdf, index)?;
                pdf.render(index, dpi, self.limits.max_pixels)
                    .map_err(|e| page_error(index, pdf_error(e)))
            }
            Source::EncryptedPdf => Err(Error::EncryptedDocument),
        }
    }

    /// The resolution a page is (or was) rendered at: for PDFs the rendering DPI, else `None`
    /// (images carry their own resolution).
    pub fn page_dpi(&self, index: usize) -> Option<f32> {
        match &self.source {
            Source::Pdf(pdf) => self.pdf_dpi(pdf, index).ok(),
            _ => None,
        }
    }

    /// `pdf_dpi`, lowered so the rendering fits the pixel and side limits.
    fn pdf_dpi(&self, pdf: &PdfSource, index: usize) -> Result<f32> {
        let (w, h) = pdf
            .page_size_pt(index)
            .map_err(|e| page_error(index, pdf_error(e)))?;
        let (w, h) = (w.max(1.0) as f64, h.max(1.0) as f64);
        let want = self.limits.pdf_dpi as f64;
        let side = (self.limits.max_side_px.min(u16::MAX as u32) as f64 - 1.0) * 72.0 / w.max(h);
        let area = (self.limits.max_pixels as f64 / (w * h)).sqrt() * 72.0 * 0.999;
        let dpi = want.min(side).min(area);
        if dpi < MIN_PDF_DPI as f64 {
            return Err(page_error(
                index,
                Error::ImageTooLarge(format!(
                    "the page is {w:.0}×{h:.0} pt: even at {MIN_PDF_DPI} dpi it exceeds the limits \
                     of {} px per side and {} pixels",
                    self.limits.max_side_px, self.limits.max_pixels
                )),
            ));
        }
        Ok(dpi as f32)
    }
}

fn page_error(index: usize, e: Error) -> Error {
    let p = index + 1;
    match e {
        Error::CorruptImage(m) => Error::CorruptImage(format!("page {p}: {m}")),
        Error::CorruptDocument(m) => Error::CorruptDocument(format!("page {p}: {m}")),
        Error::ImageTooLarge(m) => Error::ImageTooLarge(format!("page {p}: {m}")),
        other => other,
    }
}

fn pdf_error(e: PdfError) -> Error {
    match e {
        PdfError::Encrypted => Error::EncryptedDocument,
        PdfError::Malformed(m) => Error::CorruptDocument(format!("PDF: {m}")),
        PdfError::PageOutOfRange { index, count } => Error::InvalidOption(format!(
            "page {} does not exist: the document has {count} pages",
            index + 1
        )),
        e @ PdfError::TooLarge { .. } => Error::ImageTooLarge(e.to_string()),
        PdfError::Render(m) => Error::CorruptDocument(format!("PDF: {m}")),
        e @ PdfError::Decompressed { .. } => Error::DecompressedTooLarge(e.to_string()),
    }
}

/// Parses a page selection (`1-3,7`, `5-`, 1-based, inclusive) against a document of `count`
/// pages into sorted, distinct 0-based indices; `None` selects every page. More than
/// `max_pages` selected pages is `TooManyPages`.
pub fn select_pages(spec: Option<&str>, count: usize, max_pages: usize) -> Result<Vec<usize>> {
    let bad = |why: String| Error::InvalidOption(format!("pages: {why}"));
    let mut out: Vec<usize> = match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => (0..count).collect(),
        Some(spec) => {
            let mut v = Vec::new();
            for part in spec.split(',') {
                let part = part.trim();
                let num = |s: &str| -> Result<usize> {
                    s.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| bad(format!("{s:?} is not a page number (1-based)")))
                };
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) if b.trim().is_empty() => (num(a)?, count),
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => {
                        let n = num(part)?;
                        (n, n)
                    }
                };
                if a > b {
                    return Err(bad(format!("range {part:?} is backwards")));
                }
                if b > count {
                    return Err(bad(format!(
                        "page {b} does not exist: the document has {count} pages"
                    )));
                }
                if b - a >= MAX_DOCUMENT_PAGES {
                    return Err(Error::TooManyPages { limit: max_pages });
                }
                v.extend(a - 1..b);
            }
            v.sort_unstable();
            v.dedup();
            v
        }
    };
    if out.len() > max_pages {
        out.clear();
        return Err(Error::TooManyPages { limit: max_pages });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_selection() {
        assert_eq!(select_pages(None, 3, 10).unwrap(), [0, 1, 2]);
        assert_eq!(select_pages(Some(""), 2, 10).unwrap(), [0, 1]);
        assert_eq!(
            select_pages(Some("1-3, 7,2"), 10, 10).unwrap(),
            [0, 1, 2, 6]
        );
        assert_eq!(select_pages(Some("8-"), 10, 10).unwrap(), [7, 8, 9]);
        for bad in ["0", "3-1", "x", "1-11", "11", "1,,2", "-2"] {
            let e = select_pages(Some(bad), 10, 10).unwrap_err();
            assert_eq!(e.code(), "invalid_option", "{bad}: {e}");
        }
        assert_eq!(
            select_pages(None, 11, 10).unwrap_err().code(),
            "too_many_pages"
        );
        assert_eq!(select_pages(Some("3-5"), 11, 3).unwrap(), [2, 3, 4]);
    }

    #[test]
    fn kinds_and_document_errors() {
        let limits = DecodeLimits::default();
        assert!(matches!(
            Document::open(Arc::new(vec![]), &limits),
            Err(Error::EmptyInput)
        ));
        assert!(matches!(
            Document::open(Arc::new(b"hello world".to_vec()), &limits),
            Err(Error::UnsupportedFormat)
        ));
        let e = Document::open(Arc::new(b"%PDF-1.7\n1 0 obj garbage".to_vec()), &limits)
            .err()
            .unwrap();
        assert_eq!(e.code(), "corrupt_document", "{e}");
        let mut png = std::io::Cursor::new(Vec::new());
        RgbImage::new(5, 4)
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let doc = Document::open(Arc::new(png.into_inner()), &limits).unwrap();
        assert_eq!(doc.kind(), Kind::Image(ImageFormat::Png));
        assert_eq!(doc.page_count(), 1);
        assert_eq!(doc.page(0).unwrap().dimensions(), (5, 4));
        assert_eq!(doc.page(1).unwrap_err().code(), "invalid_option");
    }
}

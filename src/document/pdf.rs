//! PDF page source backed by `hayro` (pure-Rust PDF parser + CPU rasteriser).
//!
//! Cargo.toml:
//!   hayro = "0.9.0"          # default features: embed-fonts, embed-cmaps (standard-14 fonts + CMaps built in)
//!   image = { version = "0.25", default-features = false, features = ["png"] }
//!   thiserror = "2"
//!
//! `PdfSource` is `Send + Sync` (checked at compile time below). Each `render` call builds its
//! own (non-`Send`) render cache, so concurrent `render` calls on one `PdfSource` from several
//! threads are fine; nothing is shared mutably except hayro's internal `Mutex`/`OnceLock` caches.
//! Panics inside hayro are caught (`catch_unwind`) and turned into `PdfError::Render`/`Malformed`
//! (this requires `panic = "unwind"`, the default).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use hayro::hayro_interpret::InterpreterSettings;
use hayro::hayro_interpret::util::TransformExt;
use hayro::hayro_syntax::{DecryptionError, LoadPdfError, Pdf};
use hayro::kurbo::Affine;
use hayro::vello_cpu::color::palette::css::WHITE;
use hayro::vello_cpu::{Pixmap, RasterizerSettings, RenderContext, Resources, TargetInit};
use hayro::{RenderCache, RenderSettings};

/// Largest pixmap side hayro/vello_cpu can allocate (dimensions are `u16`).
const MAX_SIDE: u64 = u16::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("PDF is encrypted and cannot be opened without a password")]
    Encrypted,
    #[error("malformed PDF: {0}")]
    Malformed(String),
    #[error("page index {index} out of range (document has {count} pages)")]
    PageOutOfRange { index: usize, count: usize },
    #[error(
        "page {index} at {dpi} dpi would be {width}x{height} px, over the limit of {max_pixels} px"
    )]
    TooLarge {
        index: usize,
        dpi: f32,
        width: u64,
        height: u64,
        max_pixels: u64,
    },
    #[error("render failed: {0}")]
    Render(String),
}

pub struct PdfSource {
    // `Pdf` keeps the `Arc<Vec<u8>>` alive itself (zero-copy), and holds the parsed xref + page list.
    pdf: Pdf,
}

fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

impl PdfSource {
    /// Parse the document. Whole-document failures (not a PDF, unrecoverable damage, encrypted
    /// with a non-empty user password, unsupported encryption) return `Err`.
    /// Encrypted files whose *user* password is empty (owner-password-only) open normally.
    pub fn open(bytes: Arc<Vec<u8>>) -> Result<Self, PdfError> {
        if bytes.is_empty() {
            return Err(PdfError::Malformed("empty file".into()));
        }
        let res = catch_unwind(AssertUnwindSafe(|| Pdf::new(bytes)))
            .map_err(|p| PdfError::Malformed(format!("parser panicked: {}", panic_msg(p))))?;
        match res {
            Ok(pdf) => Ok(Self { pdf }),
            Err(LoadPdfError::Decryption(DecryptionError::PasswordProtected)) => {
                Err(PdfError::Encrypted)
            }
            Err(LoadPdfError::Decryption(e)) => Err(PdfError::Malformed(format!(
                "unsupported or invalid encryption: {e:?}"
            ))),
            Err(LoadPdfError::Invalid) => Err(PdfError::Malformed(
                "not a PDF or damaged beyond repair".into(),
            )),
        }
    }

    /// Number of pages actually reachable in the page tree (a lying `/Count` is ignored).
    pub fn page_count(&self) -> usize {
        self.pdf.pages().len()
    }

    /// Page size in PDF points after CropBox (intersected with MediaBox) and /Rotate.
    /// Zero-area boxes fall back to A4, as hayro renders them.
    pub fn page_size_pt(&self, index: usize) -> Result<(f32, f32), PdfError> {
        let pages = self.pdf.pages();
        let page = pages.get(index).ok_or(PdfError::PageOutOfRange {
            index,
            count: pages.len(),
        })?;
        Ok(page.render_dimensions())
    }

    /// Pixel size a render at `dpi` would produce (ceil, like pdftoppm).
    pub fn render_size(&self, index: usize, dpi: f32) -> Result<(u64, u64), PdfError> {
        if !(dpi.is_finite() && dpi > 0.0) {
            return Err(PdfError::Render(format!("invalid dpi {dpi}")));
        }
        let (w, h) = self.page_size_pt(index)?;
        let s = dpi as f64 / 72.0;
        let px = |v: f32| ((v as f64 * s).ceil().max(1.0)).min(u64::MAX as f64 / 2.0) as u64;
        Ok((px(w), px(h)))
    }

    /// Render one page at `dpi` to 8-bit RGB on a white background.
    /// Refuses (before allocating anything) if `w*h > max_pixels` or a side exceeds 65535 px.
    pub fn render(
        &self,
        index: usize,
        dpi: f32,
        max_pixels: u64,
    ) -> Result<image::RgbImage, PdfError> {
        let (w, h) = self.render_size(index, dpi)?;
        if w.saturating_mul(h) > max_pixels || w > MAX_SIDE || h > MAX_SIDE {
            return Err(PdfError::TooLarge {
                index,
                dpi,
                width: w,
                height: h,
                max_pixels,
            });
        }
        let page = &self.pdf.pages()[index];
        let (w16, h16) = (w as u16, h as u16);
        let scale = dpi as f64 / 72.0;

        let rgba = catch_unwind(AssertUnwindSafe(|| {
            let cache = RenderCache::new();
            let settings = InterpreterSettings::default();
            let mut ctx = RenderContext::new(w16, h16);
            let transform = Affine::scale(scale) * page.initial_transform(true).to_kurbo();
            hayro::render_into(
                page,
                &cache,
                &settings,
                &RenderSettings::default(),
                &mut ctx,
                transform,
            );
            ctx.flush();
            let mut pixmap = Pixmap::new(w16, h16);
            ctx.render_with(
                &mut pixmap,
                &mut Resources::default(),
                RasterizerSettings {
                    target_init: TargetInit::Clear(WHITE),
                    ..Default::default()
                },
            );
            pixmap
        }))
        .map_err(|p| {
            PdfError::Render(format!(
                "renderer panicked on page {index}: {}",
                panic_msg(p)
            ))
        })?;

        // Premultiplied RGBA over opaque white -> RGB (c + (255 - a) composites onto white).
        let mut out = Vec::with_capacity((w * h * 3) as usize);
        for px in rgba.data() {
            let k = 255 - px.a;
            out.extend_from_slice(&[
                px.r.saturating_add(k),
                px.g.saturating_add(k),
                px.b.saturating_add(k),
            ]);
        }
        drop(rgba);
        image::RgbImage::from_raw(w as u32, h as u32, out)
            .ok_or_else(|| PdfError::Render("pixel buffer size mismatch".into()))
    }
}

#[allow(dead_code)]
const fn _assert_send_sync<T: Send + Sync>() {}
const _: () = _assert_send_sync::<PdfSource>();

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal one-page PDF with a correct xref; `page_extra` is spliced into the page dict.
    fn tiny_pdf(page_extra: &str) -> Vec<u8> {
        let content = "BT /F1 24 Tf 72 720 Td (Hello) Tj ET";
        let objs = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            "<< /Type /Pages /Count 1 /Kids [3 0 R] >>".to_string(),
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] {page_extra} /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
            ),
            format!(
                "<< /Length {} >>\nstream\n{content}\nendstream",
                content.len()
            ),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        ];
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offs = vec![];
        for (i, o) in objs.iter().enumerate() {
            offs.push(out.len());
            out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).bytes());
        for o in offs {
            out.extend(format!("{o:010} 00000 n \n").bytes());
        }
        out.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objs.len() + 1
            )
            .bytes(),
        );
        out
    }

    #[test]
    fn renders_letter_page_at_100dpi() {
        let src = PdfSource::open(Arc::new(tiny_pdf(""))).unwrap();
        assert_eq!(src.page_count(), 1);
        assert_eq!(src.page_size_pt(0).unwrap(), (612.0, 792.0));
        let img = src.render(0, 100.0, 50_000_000).unwrap();
        assert_eq!(img.dimensions(), (850, 1100));
        // some dark text pixels, mostly white
        let dark = img.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 50 && dark < 850 * 1100 / 10, "dark={dark}");
    }

    #[test]
    fn crop_box_and_rotate_are_honoured() {
        let src =
            PdfSource::open(Arc::new(tiny_pdf("/CropBox [50 100 350 500] /Rotate 90"))).unwrap();
        assert_eq!(src.page_size_pt(0).unwrap(), (400.0, 300.0));
        assert_eq!(
            src.render(0, 72.0, u64::MAX).unwrap().dimensions(),
            (400, 300)
        );
    }

    #[test]
    fn pixel_cap_is_checked_before_rendering() {
        let src = PdfSource::open(Arc::new(tiny_pdf("/MediaBox [0 0 14400000 14400000]"))).unwrap();
        assert!(matches!(
            src.render(0, 200.0, 50_000_000),
            Err(PdfError::TooLarge { .. })
        ));
        let src = PdfSource::open(Arc::new(tiny_pdf(""))).unwrap();
        assert!(matches!(
            src.render(0, 200.0, 1_000),
            Err(PdfError::TooLarge { .. })
        ));
        assert!(matches!(
            src.render(1, 200.0, 1_000),
            Err(PdfError::PageOutOfRange { .. })
        ));
    }

    #[test]
    fn garbage_and_empty_are_errors() {
        assert!(matches!(
            PdfSource::open(Arc::new(vec![])),
            Err(PdfError::Malformed(_))
        ));
        let mut g = b"%PDF-1.7\n".to_vec();
        g.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        assert!(PdfSource::open(Arc::new(g)).is_err());
    }

    #[test]
    fn usable_from_other_threads() {
        let src = Arc::new(PdfSource::open(Arc::new(tiny_pdf(""))).unwrap());
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let s = src.clone();
                std::thread::spawn(move || s.render(0, 50.0, u64::MAX).unwrap().dimensions())
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), (425, 550));
        }
    }
}

//! PDF page source backed by `hayro` (pure-Rust PDF parser + CPU rasteriser).
//!
//! `PdfSource` is `Send + Sync` (checked at compile time below). Each `render` call builds its
//! own (non-`Send`) render cache, so concurrent `render` calls on one `PdfSource` from several
//! threads are fine; nothing is shared mutably except hayro's internal `Mutex`/`OnceLock` caches.
//! Panics inside hayro are caught (`catch_unwind`) and turned into `PdfError::Render`/`Malformed`
//! (this requires `panic = "unwind"`, the default).
//!
//! Decompression bombs: [`PdfSource::decoded_bytes`] measures what a page's streams decode to,
//! counting without keeping, and refuses the page (`PdfError::Decompressed`) over a cap
//! (`--max-decompressed-bytes-per-page`) before anything inflates it for real.
//!
//! Encrypted PDFs: a file with a non-empty user password is `PdfError::Encrypted` from `open`
//! (the document opens as one `encrypted_document` page, [`super::Document`]); one with only
//! an owner password (an empty user password) opens normally.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

mod text;

pub use text::TextLayer;

use hayro::hayro_interpret::InterpreterSettings;
use hayro::hayro_interpret::util::TransformExt;
use hayro::hayro_syntax::object::{Dict, Name, Object, Stream};
use hayro::hayro_syntax::{DecryptionError, Filter, LoadPdfError, Pdf};
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
    #[error("page {index}: {why}")]
    Decompressed { index: usize, why: String },
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

/// Most objects walked from one page when its decompressed size is measured.
const MAX_PAGE_OBJECTS: usize = 100_000;

/// Keys not followed from a page: back-pointers to the page tree or to other pages (`Parent`,
/// `P`, `Dest`, actions), and what a renderer never draws (thumbnails, metadata, structure).
const SKIP_KEYS: &[&[u8]] = &[
    b"Parent",
    b"P",
    b"Dest",
    b"A",
    b"AA",
    b"Popup",
    b"IRT",
    b"B",
    b"Thumb",
    b"Metadata",
    b"PieceInfo",
    b"StructParent",
    b"StructParents",
];

impl PdfSource {
    /// Bytes the streams that page `index` can draw decode to: its content streams, and every
    /// stream reachable from its dictionary and resources (forms, images, fonts, patterns,
    /// annotation appearances), each counted once, plus 4 bytes per pixel of every image. Flate
    /// and LZW are measured by decoding while counting (nothing over the cap is kept);
    /// ASCIIHex, ASCII85 and RunLength stages are decoded to feed them. Over `cap` the page is
    /// refused (`Decompressed`) before anything inflates it for real: a 1 MB stream of a
    /// zip bomb costs the cap in time and nothing in memory.
    pub fn decoded_bytes(&self, index: usize, cap: u64) -> Result<u64, PdfError> {
        let pages = self.pdf.pages();
        let page = pages.get(index).ok_or(PdfError::PageOutOfRange {
            index,
            count: pages.len(),
        })?;
        let over = |why: String| PdfError::Decompressed {
            index: index + 1,
            why,
        };
        catch_unwind(AssertUnwindSafe(|| {
            let mut walk = Walk {
                seen: std::collections::HashSet::new(),
                total: 0,
                cap,
            };
            walk.object(Object::Dict(page.raw().clone()))?;
            let r = page.resources();
            for d in [
                &r.ext_g_states,
                &r.fonts,
                &r.properties,
                &r.color_spaces,
                &r.x_objects,
                &r.patterns,
                &r.shadings,
            ] {
                walk.object(Object::Dict(d.clone()))?;
            }
            Ok(walk.total)
        }))
        .map_err(|p| PdfError::Malformed(format!("parser panicked: {}", panic_msg(p))))?
        .map_err(over)
    }
}

struct Walk {
    seen: std::collections::HashSet<usize>,
    total: u64,
    cap: u64,
}

impl Walk {
    fn add(&mut self, n: u64) -> Result<(), String> {
        self.total = self.total.saturating_add(n);
        if self.total > self.cap {
            return Err(format!(
                "its streams decode to more than the limit of {} bytes",
                self.cap
            ));
        }
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.cap.saturating_sub(self.total)
    }

    fn first_visit(&mut self, data: &[u8]) -> Result<bool, String> {
        if self.seen.len() >= MAX_PAGE_OBJECTS {
            return Err(format!(
                "more than {MAX_PAGE_OBJECTS} objects are reachable from it"
            ));
        }
        Ok(self.seen.insert(data.as_ptr() as usize))
    }

    fn object(&mut self, obj: Object<'_>) -> Result<(), String> {
        match obj {
            Object::Dict(d) => {
                if !self.first_visit(d.data())? {
                    return Ok(());
                }
                let keys: Vec<_> = d.keys().collect();
                for k in keys {
                    if SKIP_KEYS.contains(&k.as_ref()) {
                        continue;
                    }
                    if let Some(v) = d.get::<Object<'_>>(k.as_ref()) {
                        self.object(v)?;
                    }
                }
            }
            Object::Array(a) => {
                if !self.first_visit(a.data())? {
                    return Ok(());
                }
                for v in a.iter::<Object<'_>>() {
                    self.object(v)?;
                }
            }
            Object::Stream(s) => {
                if !self.first_visit(s.dict().data())? {
                    return Ok(());
                }
                self.stream(&s)?;
                self.object(Object::Dict(s.dict().clone()))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn stream(&mut self, s: &Stream<'_>) -> Result<(), String> {
        let dict = s.dict();
        if dict
            .get::<Name<'_>>("Subtype")
            .is_some_and(|n| n.as_ref() == b"Image")
        {
            let dim = |k: &str| dict.get::<f32>(k).unwrap_or(0.0).clamp(0.0, 1e9) as u64;
            let wide = dict.get::<f32>("BitsPerComponent").unwrap_or(8.0) > 8.0;
            let px = dim("Width").saturating_mul(dim("Height"));
            self.add(px.saturating_mul(if wide { 8 } else { 4 }))?;
        }
        let filters = s.filters();
        let mut data: Option<Vec<u8>> = None;
        for (i, f) in filters.iter().enumerate() {
            let last = i + 1 == filters.len();
            let input: std::borrow::Cow<'_, [u8]> = match data.take() {
                Some(d) => d.into(),
                None => s.raw_data(),
            };
            let limit = self.remaining();
            let out = match f {
                Filter::FlateDecode | Filter::LzwDecode => {
                    let early = !dict
                        .get::<Dict<'_>>("DecodeParms")
                        .and_then(|p| p.get::<f32>("EarlyChange"))
                        .is_some_and(|e| e == 0.0);
                    inflate(&input, *f == Filter::FlateDecode, early, limit, !last)
                }
                Filter::AsciiHexDecode => Decoded::Bytes(ascii_hex(&input)),
                Filter::Ascii85Decode => Decoded::Bytes(ascii_85(&input)),
                Filter::RunLengthDecode => Decoded::Bytes(run_length(&input, limit)),
                // Images: counted by their dimensions above; Crypt: nothing to decode.
                _ => return Ok(()),
            };
            match out {
                Decoded::Counted(n) => return self.add(n),
                Decoded::Bytes(b) => {
                    if b.len() as u64 > limit {
                        return self.add(b.len() as u64);
                    }
                    if last {
                        return self.add(b.len() as u64);
                    }
                    data = Some(b);
                }
            }
        }
        if filters.is_empty() {
            self.add(s.raw_data().len() as u64)?;
        }
        Ok(())
    }
}

enum Decoded {
    /// The decoded length (nothing kept).
    Counted(u64),
    /// The decoded bytes, to feed the next filter.
    Bytes(Vec<u8>),
}

/// Decodes Flate (zlib, else raw deflate) or LZW, keeping at most `limit + 1` bytes when `keep`
/// and none otherwise; stops one byte past the limit. A stream damaged part-way counts what
/// came out before the damage, as a tolerant reader renders it.
fn inflate(input: &[u8], flate: bool, early_change: bool, limit: u64, keep: bool) -> Decoded {
    use std::io::Read;
    let mut reader: Box<dyn Read + '_> = if flate {
        if input.len() >= 2 && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0 {
            Box::new(flate2::read::ZlibDecoder::new(input))
        } else {
            Box::new(flate2::read::DeflateDecoder::new(input))
        }
    } else {
        Box::new(LzwRead::new(input, early_change))
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut kept = Vec::new();
    let mut n: u64 = 0;
    while n <= limit {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                n += k as u64;
                if keep {
                    kept.extend_from_slice(&buf[..k]);
                }
            }
        }
    }
    if keep {
        Decoded::Bytes(kept)
    } else {
        Decoded::Counted(n)
    }
}

/// LZW (PDF's variant: MSB first, 8-bit codes, early change by default) as a reader.
struct LzwRead<'a> {
    input: &'a [u8],
    decoder: weezl::decode::Decoder,
    done: bool,
}

impl<'a> LzwRead<'a> {
    fn new(input: &'a [u8], early_change: bool) -> Self {
        let decoder = if early_change {
            weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
        } else {
            weezl::decode::Decoder::new(weezl::BitOrder::Msb, 8)
        };
        Self {
            input,
            decoder,
            done: false,
        }
    }
}

impl std::io::Read for LzwRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while !self.done {
            let r = self.decoder.decode_bytes(self.input, out);
            self.input = &self.input[r.consumed_in..];
            match r.status {
                Ok(weezl::LzwStatus::Ok) if r.consumed_out > 0 => return Ok(r.consumed_out),
                Ok(weezl::LzwStatus::Ok) if r.consumed_in > 0 => continue,
                Ok(weezl::LzwStatus::Done) => {
                    self.done = true;
                    return Ok(r.consumed_out);
                }
                // No progress, no input, or an error: what came out so far is all.
                _ => {
                    self.done = true;
                    return Ok(r.consumed_out);
                }
            }
        }
        Ok(0)
    }
}

fn ascii_hex(input: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = input
        .iter()
        .take_while(|&&c| c != b'>')
        .filter_map(|&c| (c as char).to_digit(16).map(|d| d as u8))
        .collect();
    digits
        .chunks(2)
        .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0))
        .collect()
}

fn ascii_85(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 5 * 4 + 4);
    let mut group = [0u32; 5];
    let mut n = 0;
    let body = input.strip_prefix(b"<~").unwrap_or(input);
    for &c in body {
        match c {
            b'~' => break,
            b'z' if n == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                group[n] = u32::from(c - b'!');
                n += 1;
                if n == 5 {
                    let v = group
                        .iter()
                        .fold(0u32, |a, &d| a.wrapping_mul(85).wrapping_add(d));
                    out.extend_from_slice(&v.to_be_bytes());
                    n = 0;
                }
            }
            _ => {}
        }
    }
    if n > 1 {
        for g in group.iter_mut().skip(n) {
            *g = 84;
        }
        let v = group
            .iter()
            .fold(0u32, |a, &d| a.wrapping_mul(85).wrapping_add(d));
        out.extend_from_slice(&v.to_be_bytes()[..n - 1]);
    }
    out
}

/// RunLength decoding, stopping one byte past `limit`.
fn run_length(input: &[u8], limit: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() && (out.len() as u64) <= limit {
        let l = input[i] as usize;
        i += 1;
        match l {
            0..=127 => {
                let end = (i + l + 1).min(input.len());
                out.extend_from_slice(&input[i..end]);
                i = end;
            }
            128 => break,
            _ => {
                if let Some(&b) = input.get(i) {
                    out.extend(std::iter::repeat_n(b, 257 - l));
                }
                i += 1;
            }
        }
    }
    out
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

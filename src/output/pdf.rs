//! Searchable PDF output: page images (or an existing PDF) plus an invisible OCR text layer.
//!
//! The text layer uses the glyph-less font technique (Tesseract, OCRmyPDF): a Type0 font with
//! `/Encoding /Identity-H` over a CIDFontType2 whose embedded TrueType has one empty glyph.
//! Every CID maps to that glyph (`/CIDToGIDMap`), every glyph is 0.5 em wide (`/DW 500`), and a
//! `/ToUnicode` CMap gives each CID its text. CIDs are assigned per document: each distinct
//! character gets 1..=N as a 2-byte code. Text is drawn in render mode 3 (invisible).
//!
//! Placement of a word with quad (tl, tr, br, bl), mapped into PDF user space:
//! * `u` = mean of the top and bottom edges (the reading direction, length = box width `w`),
//!   `e1 = u / |u|`, `e2` = `e1` turned 90° counter-clockwise (the "up" direction);
//! * box height `h` = the quad's extent along `e2` (|u × v| / |u| with `v` the mean side edge);
//! * font size `s = h` (the font's ascent − descent is exactly 1 em), so the glyph box is
//!   exactly the word box height;
//! * horizontal scaling `Tz = 100 · w / (0.5 · s · n)` for `n` characters, so the advance of the
//!   word's characters is exactly `w`;
//! * `Tm = [e1x e1y e2x e2y ox oy]` (a pure rotation by the line angle), origin `o` = the box's
//!   bottom-left corner moved up by the descent (0.2 · s), i.e. on the baseline.
//!
//! Each word is its own `Tj` with its own `Tm`; between words of a line a space glyph (CID for
//! U+0020, drawn after the word's advance, i.e. in the gap) is emitted so that extractors that do
//! not rebuild spaces from geometry still see a word break. The space is not counted in `Tz`, so
//! the extracted word box matches the word quad.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use lopdf::{Dictionary, Document, IncrementalDocument, Object, ObjectId, Stream, dictionary};

use crate::output::glyphless_font::{self, ADVANCE, ASCENT, DESCENT};
use crate::pipeline::{Line, Page, Word};

/// A page image to put under the text layer.
pub enum PageImage {
    /// JPEG bytes, embedded unchanged (`/DCTDecode`). `components`: 1 gray, 3 YCbCr/RGB, 4 CMYK.
    Jpeg {
        bytes: Vec<u8>,
        width: u32,
        height: u32,
        components: u8,
    },
    /// Raw RGB, Flate-compressed.
    Rgb(image::RgbImage),
    /// Raw grayscale, Flate-compressed.
    Gray(image::GrayImage),
}

#[derive(Debug, thiserror::Error)]
pub enum PdfWriteError {
    #[error("PDF error: {0}")]
    Pdf(#[from] lopdf::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid JPEG: {0}")]
    Jpeg(String),
    #[error("invalid image: {0}")]
    Image(String),
    #[error("invalid dpi {0}")]
    Dpi(f32),
    #[error("page index {index} out of range: the PDF has {count} pages")]
    PageIndex { index: usize, count: usize },
    #[error("encrypted PDFs are not supported")]
    Encrypted,
    #[error("unsupported page structure: {0}")]
    Page(String),
    #[error("more than 65535 distinct characters in one document")]
    TooManyCharacters,
}

/// Resource name of our font; a numeric suffix is added if a page already uses it.
const FONT_RESOURCE: &str = "OCRGlyphLess";
/// Words whose direction is within this many degrees of a page axis are written along the axis.
/// Poppler (pdftotext, Evince, Okular) ends a word whenever a glyph's baseline moves more than
/// 0.5 pt from the word's first glyph, so a word drawn on a slightly skewed baseline (a scan
/// skewed by 1°) comes out in fragments; writing it level, centred on its quad with the quad's
/// width and height, keeps it whole at a cost of at most `w/2 · sin 3°` at its ends.
const SNAP_DEGREES: f64 = 3.0;
/// Word separator glyph emitted between the words of a line.
const SEPARATOR: char = ' ';

// ---------------------------------------------------------------------------------------------
// Text selection: which words are written, and their characters.

/// Characters written for a text: control characters are dropped.
fn text_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| !c.is_control())
}

/// The words of a line that get written: non-empty words, or the whole line as one word.
fn line_words(line: &Line) -> Vec<&str> {
    let words: Vec<&str> = line
        .words
        .iter()
        .map(|w| w.text.as_str())
        .filter(|t| text_chars(t).any(|c| !c.is_whitespace()))
        .collect();
    if !words.is_empty() || !text_chars(&line.text).any(|c| !c.is_whitespace()) {
        return words;
    }
    vec![line.text.as_str()]
}

fn line_word_boxes(line: &Line) -> Vec<(&str, [[f32; 2]; 4])> {
    let words: Vec<&Word> = line
        .words
        .iter()
        .filter(|w| text_chars(&w.text).any(|c| !c.is_whitespace()))
        .collect();
    if !words.is_empty() {
        return words.iter().map(|w| (w.text.trim(), w.bbox)).collect();
    }
    line_words(line)
        .into_iter()
        .map(|t| (t.trim(), line.bbox))
        .collect()
}

/// Per-document CID assignment: each distinct character gets a CID in 1..=65535.
#[derive(Default)]
struct Cids {
    map: BTreeMap<char, u16>,
}

impl Cids {
    fn build<'a>(pages: impl Iterator<Item = &'a Page>) -> Result<Self, PdfWriteError> {
        let mut cids = Cids::default();
        for page in pages {
            for line in &page.lines {
                let words = line_words(line);
                if words.len() > 1 {
                    cids.add(SEPARATOR)?;
                }
                for w in words {
                    for c in text_chars(w.trim()) {
                        cids.add(c)?;
                    }
                }
            }
        }
        Ok(cids)
    }

    fn add(&mut self, c: char) -> Result<(), PdfWriteError> {
        if !self.map.contains_key(&c) {
            let next =
                u16::try_from(self.map.len() + 1).map_err(|_| PdfWriteError::TooManyCharacters)?;
            self.map.insert(c, next);
        }
        Ok(())
    }

    fn hex(&self, s: &str, out: &mut String) {
        out.push('<');
        for c in text_chars(s) {
            let _ = write!(out, "{:04X}", self.map[&c]);
        }
        out.push('>');
    }

    /// The `/ToUnicode` CMap: CID → UTF-16BE (surrogate pairs outside the BMP).
    fn to_unicode_cmap(&self) -> Vec<u8> {
        let mut s = String::from(
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
             /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
             /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
             1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
        );
        let mut entries: Vec<(u16, char)> = self.map.iter().map(|(&c, &cid)| (cid, c)).collect();
        entries.sort_unstable();
        for chunk in entries.chunks(100) {
            let _ = writeln!(s, "{} beginbfchar", chunk.len());
            for (cid, c) in chunk {
                let mut buf = [0u16; 2];
                let utf16: String = c
                    .encode_utf16(&mut buf)
                    .iter()
                    .map(|u| format!("{u:04X}"))
                    .collect();
                let _ = writeln!(s, "<{cid:04X}> <{utf16}>");
            }
            s.push_str("endbfchar\n");
        }
        s.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
        s.into_bytes()
    }

    /// `/CIDToGIDMap`: CID 0 → GID 0, every assigned CID → GID 1.
    fn cid_to_gid_map(&self) -> Vec<u8> {
        let mut v = vec![0u8, 0];
        for _ in 0..self.map.len() {
            v.extend_from_slice(&[0, 1]);
        }
        v
    }
}

fn deflate(data: &[u8]) -> Result<Vec<u8>, PdfWriteError> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn flate_stream(mut dict: Dictionary, data: &[u8]) -> Result<Stream, PdfWriteError> {
    dict.set("Filter", "FlateDecode");
    Ok(Stream::new(dict, deflate(data)?).with_compression(false))
}

/// Adds the Type0 glyph-less font (and its descendants) to `doc`; returns the Type0 font's id.
fn add_font(doc: &mut Document, cids: &Cids) -> Result<ObjectId, PdfWriteError> {
    let ttf = glyphless_font::glyphless_ttf();
    let font_file = doc.add_object(flate_stream(
        dictionary! { "Length1" => ttf.len() as i64 },
        &ttf,
    )?);
    let descriptor = doc.add_object(dictionary! {
        "Type" => "FontDescriptor",
        "FontName" => glyphless_font::FONT_NAME,
        "Flags" => 5, // FixedPitch | Symbolic
        "FontBBox" => vec![0.into(), (DESCENT as i64).into(), (ADVANCE as i64).into(), (ASCENT as i64).into()],
        "ItalicAngle" => 0,
        "Ascent" => ASCENT as i64,
        "Descent" => DESCENT as i64,
        "CapHeight" => ASCENT as i64,
        "StemV" => 80,
        "FontFile2" => font_file,
    });
    let gid_map = doc.add_object(flate_stream(Dictionary::new(), &cids.cid_to_gid_map())?);
    let cid_font = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "CIDFontType2",
        "BaseFont" => glyphless_font::FONT_NAME,
        "CIDSystemInfo" => dictionary! {
            "Registry" => Object::string_literal("Adobe"),
            "Ordering" => Object::string_literal("Identity"),
            "Supplement" => 0,
        },
        "FontDescriptor" => descriptor,
        "DW" => ADVANCE as i64,
        "CIDToGIDMap" => gid_map,
    });
    let to_unicode = doc.add_object(flate_stream(Dictionary::new(), &cids.to_unicode_cmap())?);
    Ok(doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type0",
        "BaseFont" => glyphless_font::FONT_NAME,
        "Encoding" => "Identity-H",
        "DescendantFonts" => vec![cid_font.into()],
        "ToUnicode" => to_unicode,
    }))
}

// ---------------------------------------------------------------------------------------------
// Geometry.

/// Affine map `(x, y) → (a x + c y + e, b x + d y + f)` from page pixels to PDF user space.
#[derive(Debug, Clone, Copy)]
struct Affine {
    a: f64,
    b: f64,
    c: f64,
    d: f64,
    e: f64,
    f: f64,
}

impl Affine {
    fn apply(&self, p: [f32; 2]) -> [f64; 2] {
        let (x, y) = (p[0] as f64, p[1] as f64);
        [
            self.a * x + self.c * y + self.e,
            self.b * x + self.d * y + self.f,
        ]
    }
}

/// Formats a number for a content stream: fixed point, no exponent, trailing zeros dropped.
fn num(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// The text layer of one page as content-stream operators, wrapped in `q … Q`.
fn text_layer(page: &Page, map: Affine, font: &str, cids: &Cids) -> String {
    let mut o = String::from("q\nBT\n3 Tr\n");
    let em_height = (ASCENT as f64 - DESCENT as f64) / 1000.0;
    let advance = ADVANCE as f64 / 1000.0;
    for line in &page.lines {
        let words = line_word_boxes(line);
        let count = words.len();
        for (i, (text, quad)) in words.into_iter().enumerate() {
            let n = text_chars(text).count();
            if n == 0 || quad.iter().flatten().any(|v| !v.is_finite()) {
                continue;
            }
            let [tl, tr, br, bl] = quad.map(|p| map.apply(p));
            let u = [
                ((tr[0] - tl[0]) + (br[0] - bl[0])) / 2.0,
                ((tr[1] - tl[1]) + (br[1] - bl[1])) / 2.0,
            ];
            let v = [
                ((tl[0] - bl[0]) + (tr[0] - br[0])) / 2.0,
                ((tl[1] - bl[1]) + (tr[1] - br[1])) / 2.0,
            ];
            let w = (u[0] * u[0] + u[1] * u[1]).sqrt();
            if w < 1e-3 {
                continue;
            }
            let mut e1 = [u[0] / w, u[1] / w];
            // Snap a slight skew to the nearest axis (see SNAP_DEGREES).
            let angle = e1[1].atan2(e1[0]);
            let quarter = (angle / std::f64::consts::FRAC_PI_2).round();
            if (angle - quarter * std::f64::consts::FRAC_PI_2).abs() <= SNAP_DEGREES.to_radians() {
                let axis = quarter * std::f64::consts::FRAC_PI_2;
                e1 = [axis.cos().round(), axis.sin().round()];
            }
            let e2 = [-e1[1], e1[0]];
            let h = ((u[0] * v[1] - u[1] * v[0]) / w).abs();
            if h < 1e-3 {
                continue;
            }
            let center = [
                (tl[0] + tr[0] + br[0] + bl[0]) / 4.0,
                (tl[1] + tr[1] + br[1] + bl[1]) / 4.0,
            ];
            let size = h / em_height;
            let baseline_up = -(DESCENT as f64) / 1000.0 * size;
            let origin = [
                center[0] - e1[0] * w / 2.0 + e2[0] * (baseline_up - h / 2.0),
                center[1] - e1[1] * w / 2.0 + e2[1] * (baseline_up - h / 2.0),
            ];
            let tz = 100.0 * w / (advance * size * n as f64);
            let _ = write!(
                o,
                "/{font} {} Tf\n{} Tz\n{} {} {} {} {} {} Tm\n",
                num(size),
                num(tz),
                num(e1[0]),
                num(e1[1]),
                num(e2[0]),
                num(e2[1]),
                num(origin[0]),
                num(origin[1])
            );
            cids.hex(text, &mut o);
            o.push_str(" Tj\n");
            if i + 1 < count {
                let mut sep = String::new();
                cids.hex(&SEPARATOR.to_string(), &mut sep);
                o.push_str(&sep);
                o.push_str(" Tj\n");
            }
        }
    }
    o.push_str("ET\nQ\n");
    o
}

// ---------------------------------------------------------------------------------------------
// From images.

/// What a JPEG's headers say: (width, height, components, Adobe APP14 present).
pub fn jpeg_info(bytes: &[u8]) -> Result<(u32, u32, u8, bool), PdfWriteError> {
    let err = |m: &str| PdfWriteError::Jpeg(m.to_string());
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(err("no SOI marker"));
    }
    let mut i = 2;
    let mut adobe = false;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return Err(err("bad marker"));
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        if len < 2 || i + 2 + len > bytes.len() {
            return Err(err("truncated segment"));
        }
        let seg = &bytes[i + 4..i + 2 + len];
        match marker {
            0xEE if seg.starts_with(b"Adobe") => adobe = true,
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if seg.len() < 6 {
                    return Err(err("short SOF"));
                }
                if seg[0] != 8 {
                    return Err(err("only 8-bit JPEGs are supported"));
                }
                let h = u16::from_be_bytes([seg[1], seg[2]]) as u32;
                let w = u16::from_be_bytes([seg[3], seg[4]]) as u32;
                return Ok((w, h, seg[5], adobe));
            }
            0xD9 | 0xDA => break,
            _ => {}
        }
        i += 2 + len;
    }
    Err(err("no SOF marker"))
}

fn image_xobject(img: &PageImage) -> Result<(Stream, u32, u32), PdfWriteError> {
    let base = |w: u32, h: u32, cs: &str| {
        dictionary! {
            "Type" => "XObject",
            "Subtype" => "Image",
            "Width" => w as i64,
            "Height" => h as i64,
            "ColorSpace" => cs,
            "BitsPerComponent" => 8,
        }
    };
    match img {
        PageImage::Jpeg {
            bytes,
            width,
            height,
            components,
        } => {
            let (w, h, comps, adobe) = jpeg_info(bytes)?;
            if (w, h, comps) != (*width, *height, *components) {
                return Err(PdfWriteError::Jpeg(format!(
                    "headers say {w}x{h}x{comps}, caller said {width}x{height}x{components}"
                )));
            }
            let cs = match comps {
                1 => "DeviceGray",
                3 => "DeviceRGB",
                4 => "DeviceCMYK",
                n => return Err(PdfWriteError::Jpeg(format!("{n} components"))),
            };
            let mut dict = base(w, h, cs);
            dict.set("Filter", "DCTDecode");
            if comps == 4 && adobe {
                // Adobe (Photoshop) CMYK JPEGs store inverted values.
                dict.set(
                    "Decode",
                    [1, 0, 1, 0, 1, 0, 1, 0].map(Object::from).to_vec(),
                );
            }
            Ok((
                Stream::new(dict, bytes.clone()).with_compression(false),
                w,
                h,
            ))
        }
        PageImage::Rgb(im) => Ok((
            flate_stream(base(im.width(), im.height(), "DeviceRGB"), im.as_raw())?,
            im.width(),
            im.height(),
        )),
        PageImage::Gray(im) => Ok((
            flate_stream(base(im.width(), im.height(), "DeviceGray"), im.as_raw())?,
            im.width(),
            im.height(),
        )),
    }
}

/// A new PDF: one page per image, sized `pixels · 72 / dpi` points, the image filling the page
/// at its own resolution, with the OCR `Page` as an invisible text layer (the `Page`'s pixel
/// coordinates are scaled by page size / `Page` size, so it may come from a resized image).
pub fn from_images(pages: &[(PageImage, &Page, f32)]) -> Result<Vec<u8>, PdfWriteError> {
    let ocr: Vec<(&Page, f32)> = pages.iter().map(|(_, p, d)| (*p, *d)).collect();
    from_images_lazy(&ocr, |i| Ok(clone_image(&pages[i].0)))
}

fn clone_image(i: &PageImage) -> PageImage {
    match i {
        PageImage::Jpeg {
            bytes,
            width,
            height,
            components,
        } => PageImage::Jpeg {
            bytes: bytes.clone(),
            width: *width,
            height: *height,
            components: *components,
        },
        PageImage::Rgb(im) => PageImage::Rgb(im.clone()),
        PageImage::Gray(im) => PageImage::Gray(im.clone()),
    }
}

/// [`from_images`] with each page's image produced on demand by `image(i)` and dropped once it
/// is compressed into the document, so only one decoded page is in memory at a time.
pub fn from_images_lazy(
    pages: &[(&Page, f32)],
    mut image: impl FnMut(usize) -> Result<PageImage, PdfWriteError>,
) -> Result<Vec<u8>, PdfWriteError> {
    let mut doc = Document::with_version("1.5");
    let cids = Cids::build(pages.iter().map(|p| p.0))?;
    let font_id = add_font(&mut doc, &cids)?;
    let pages_id = doc.new_object_id();
    let mut kids = Vec::new();
    for (i, (ocr, dpi)) in pages.iter().enumerate() {
        if !(dpi.is_finite() && *dpi > 0.0) {
            return Err(PdfWriteError::Dpi(*dpi));
        }
        let (xobject, w, h) = image_xobject(&image(i)?)?;
        if w == 0 || h == 0 {
            return Err(PdfWriteError::Image("empty image".into()));
        }
        let image_id = doc.add_object(xobject);
        let dpi = *dpi as f64;
        let (wpt, hpt) = (w as f64 * 72.0 / dpi, h as f64 * 72.0 / dpi);
        let (ow, oh) = if ocr.width > 0 && ocr.height > 0 {
            (ocr.width, ocr.height)
        } else {
            (w, h)
        };
        let map = Affine {
            a: wpt / ow as f64,
            b: 0.0,
            c: 0.0,
            d: -hpt / oh as f64,
            e: 0.0,
            f: hpt,
        };
        let mut content = format!("q\n{} 0 0 {} 0 0 cm\n/Im0 Do\nQ\n", num(wpt), num(hpt));
        content.push_str(&text_layer(ocr, map, FONT_RESOURCE, &cids));
        let content_id = doc.add_object(flate_stream(Dictionary::new(), content.as_bytes())?);
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "MediaBox" => vec![0.into(), 0.into(), Object::Real(wpt as f32), Object::Real(hpt as f32)],
            "Resources" => dictionary! {
                "XObject" => dictionary! { "Im0" => image_id },
                "Font" => dictionary! { FONT_RESOURCE => font_id },
            },
            "Contents" => content_id,
        });
        kids.push(Object::Reference(page_id));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => count }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let info = doc.add_object(dictionary! { "Producer" => Object::string_literal("ocr-server") });
    doc.trailer.set("Info", info);
    let mut out = Vec::new();
    doc.save_to(&mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Text layer on an existing PDF.

/// Follows references (bounded, so a reference cycle cannot loop).
fn deref<'a>(doc: &'a Document, mut o: &'a Object) -> &'a Object {
    for _ in 0..32 {
        match o {
            Object::Reference(id) => match doc.get_object(*id) {
                Ok(next) => o = next,
                Err(_) => return &Object::Null,
            },
            _ => return o,
        }
    }
    &Object::Null
}

/// An inheritable page attribute: on the page or the nearest `/Pages` ancestor.
fn inherited<'a>(doc: &'a Document, page: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    let mut node = page;
    for _ in 0..64 {
        if let Ok(v) = node.get(key) {
            let v = deref(doc, v);
            return if matches!(v, Object::Null) {
                None
            } else {
                Some(v)
            };
        }
        node = deref(doc, node.get(b"Parent").ok()?).as_dict().ok()?;
    }
    None
}

fn rect(doc: &Document, o: Option<&Object>) -> Option<[f64; 4]> {
    let a = o?.as_array().ok()?;
    if a.len() != 4 {
        return None;
    }
    let mut v = [0f64; 4];
    for (i, x) in a.iter().enumerate() {
        v[i] = deref(doc, x).as_float().ok()? as f64;
    }
    let r = [
        v[0].min(v[2]),
        v[1].min(v[3]),
        v[0].max(v[2]),
        v[1].max(v[3]),
    ];
    (r[2] > r[0] && r[3] > r[1]).then_some(r)
}

/// The map from the OCR'd rendering (visible box, `/Rotate` applied, `page.width × height`
/// pixels) to the page's user space.
fn page_map(doc: &Document, page_dict: &Dictionary, ocr: &Page) -> Result<Affine, PdfWriteError> {
    let media =
        rect(doc, inherited(doc, page_dict, b"MediaBox")).unwrap_or([0.0, 0.0, 612.0, 792.0]);
    let visible = match rect(doc, inherited(doc, page_dict, b"CropBox")) {
        // The effective crop box is clipped to the media box.
        Some(c) => {
            let r = [
                c[0].max(media[0]),
                c[1].max(media[1]),
                c[2].min(media[2]),
                c[3].min(media[3]),
            ];
            if r[2] > r[0] && r[3] > r[1] { r } else { media }
        }
        None => media,
    };
    let rotate = inherited(doc, page_dict, b"Rotate")
        .and_then(|o| o.as_float().ok())
        .unwrap_or(0.0) as f64;
    let rotate = (((rotate / 90.0).round() as i64).rem_euclid(4)) * 90;
    let [x0, y0, x1, y1] = visible;
    let (bw, bh) = (x1 - x0, y1 - y0);
    let (dw, dh) = if rotate % 180 == 0 {
        (bw, bh)
    } else {
        (bh, bw)
    };
    if ocr.width == 0 || ocr.height == 0 {
        return Err(PdfWriteError::Page("OCR page has zero size".into()));
    }
    // Pixel → displayed points (u right, v down).
    let (ku, kv) = (dw / ocr.width as f64, dh / ocr.height as f64);
    // Displayed (u, v) → user space, per rotation (the page is shown rotated clockwise).
    Ok(match rotate {
        0 => Affine {
            a: ku,
            b: 0.0,
            c: 0.0,
            d: -kv,
            e: x0,
            f: y1,
        },
        90 => Affine {
            a: 0.0,
            b: ku,
            c: kv,
            d: 0.0,
            e: x0,
            f: y0,
        },
        180 => Affine {
            a: -ku,
            b: 0.0,
            c: 0.0,
            d: kv,
            e: x1,
            f: y0,
        },
        _ => Affine {
            a: 0.0,
            b: -ku,
            c: -kv,
            d: 0.0,
            e: x1,
            f: y1,
        },
    })
}

/// Appends an invisible text layer to the listed pages (0-based) of an existing PDF, as an
/// incremental update: the output is the original bytes followed by the changed objects.
///
/// Per page: `/Contents` becomes `[q, <original streams>, Q + layer]`, so the original content's
/// graphics state cannot leak into the layer; the page gets a direct `/Resources` dictionary
/// (a copy of its own or inherited one) whose `/Font` has our font added under a fresh name.
pub fn add_text_layer(
    original_pdf: &[u8],
    layers: &[(usize, &Page)],
) -> Result<Vec<u8>, PdfWriteError> {
    let doc = Document::load_mem(original_pdf)?;
    if doc.is_encrypted() || doc.was_encrypted() || doc.trailer.has(b"Encrypt") {
        return Err(PdfWriteError::Encrypted);
    }
    let page_ids = doc.get_pages();
    let mut by_page: BTreeMap<usize, Vec<&Page>> = BTreeMap::new();
    for (index, page) in layers {
        if *index >= page_ids.len() {
            return Err(PdfWriteError::PageIndex {
                index: *index,
                count: page_ids.len(),
            });
        }
        by_page.entry(*index).or_default().push(page);
    }
    if by_page.is_empty() {
        return Ok(original_pdf.to_vec());
    }
    let cids = Cids::build(layers.iter().map(|l| l.1))?;

    // Everything read from the original is computed first, then written to the update.
    struct Edit {
        page_id: ObjectId,
        resources: Dictionary,
        font_name: String,
        contents: Vec<Object>,
        layer: String,
    }
    let mut edits = Vec::new();
    for (index, ocr_pages) in &by_page {
        let page_id = page_ids[&(*index as u32 + 1)];
        let page_dict = doc.get_dictionary(page_id)?;
        let mut resources = match inherited(&doc, page_dict, b"Resources") {
            Some(Object::Dictionary(d)) => d.clone(),
            _ => Dictionary::new(),
        };
        let mut fonts = match resources.get(b"Font").map(|f| deref(&doc, f)) {
            Ok(Object::Dictionary(d)) => d.clone(),
            _ => Dictionary::new(),
        };
        let mut font_name = FONT_RESOURCE.to_string();
        let mut k = 1;
        while fonts.has(font_name.as_bytes()) {
            font_name = format!("{FONT_RESOURCE}{k}");
            k += 1;
        }
        fonts.set(font_name.as_bytes(), Object::Null); // placeholder for the font id
        resources.set("Font", fonts);
        let contents = match page_dict.get(b"Contents") {
            Ok(Object::Reference(id)) => match doc.get_object(*id) {
                Ok(Object::Array(a)) => a.clone(),
                Ok(Object::Stream(_)) => vec![Object::Reference(*id)],
                _ => return Err(PdfWriteError::Page(format!("page {index}: bad /Contents"))),
            },
            Ok(Object::Array(a)) => a.clone(),
            Ok(Object::Null) | Err(_) => Vec::new(),
            Ok(_) => return Err(PdfWriteError::Page(format!("page {index}: bad /Contents"))),
        };
        let mut layer = String::from("\nQ\n");
        for ocr in ocr_pages {
            let map = page_map(&doc, page_dict, ocr)?;
            layer.push_str(&text_layer(ocr, map, &font_name, &cids));
        }
        edits.push(Edit {
            page_id,
            resources,
            font_name,
            contents,
            layer,
        });
    }

    let mut inc = IncrementalDocument::create_from(original_pdf.to_vec(), doc);
    let font_id = add_font(&mut inc.new_document, &cids)?;
    let q_id = inc
        .new_document
        .add_object(Stream::new(Dictionary::new(), b"q\n".to_vec()).with_compression(false));
    for mut e in edits {
        if let Ok(Object::Dictionary(fonts)) = e.resources.get_mut(b"Font") {
            fonts.set(e.font_name.as_bytes(), font_id);
        }
        let layer_id = inc
            .new_document
            .add_object(flate_stream(Dictionary::new(), e.layer.as_bytes())?);
        let mut contents = vec![Object::Reference(q_id)];
        contents.append(&mut e.contents);
        contents.push(Object::Reference(layer_id));
        inc.opt_clone_object_to_new_document(e.page_id)?;
        let page = inc.new_document.get_object_mut(e.page_id)?.as_dict_mut()?;
        page.set("Resources", e.resources);
        page.set("Contents", contents);
    }
    let mut out = Vec::new();
    inc.save_to(&mut out)?;
    Ok(out)
}

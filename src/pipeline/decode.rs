//! Decoding of input bytes into RGB page images, with bounded memory.
//!
//! Formats: PNG, JPEG, WebP, BMP through `image`, and TIFF (every page of a multi-page file)
//! through `tiff`. EXIF orientation is applied for the formats that carry it. Dimensions are read
//! from the header and checked against [`DecodeLimits`] *before* any pixel buffer is allocated, so
//! a 30,000 × 30,000 header costs nothing; the decoders also get allocation limits of their own.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{Error, Result};
use crate::memory::MemoryBudget;

/// Bounds on what one input may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeLimits {
    /// Longest side accepted, in pixels.
    pub max_side_px: u32,
    /// Most pixels accepted for one page (width × height).
    pub max_pixels: u64,
    /// Most pages processed from one document (after any `pages` selection).
    pub max_pages: usize,
    /// Resolution PDF pages are rendered at (lowered for a page that would exceed the pixel or
    /// side limits).
    pub pdf_dpi: f32,
    /// Most bytes the streams of one PDF page may decode to (`--max-decompressed-bytes-per-page`);
    /// a page over it fails alone with `decompressed_too_large`, before anything inflates it.
    pub max_decompressed_bytes_per_page: u64,
    /// The server-wide budget every decode and render reserves its worst case from
    /// (`--memory-budget-mb`; [`crate::memory`]).
    pub memory: MemoryBudget,
}

/// Default cap on what one PDF page's streams may decode to.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES_PER_PAGE: u64 = 256 << 20;

/// Default PDF rendering resolution (docs/api.md, "Documents": chosen by measurement on the dev PDF).
pub const DEFAULT_PDF_DPI: f32 = 200.0;

impl Default for DecodeLimits {
    fn default() -> Self {
        // 16k sides and 64 MP cover a 600 dpi A3 scan (7016 × 9921 = 70 MP is just over: such
        // inputs should be downsampled by the client); a 64 MP RGB page is 192 MB decoded.
        Self {
            max_side_px: 16_384,
            max_pixels: 64_000_000,
            max_pages: 200,
            pdf_dpi: DEFAULT_PDF_DPI,
            max_decompressed_bytes_per_page: DEFAULT_MAX_DECOMPRESSED_BYTES_PER_PAGE,
            memory: MemoryBudget::default(),
        }
    }
}

impl DecodeLimits {
    pub fn check(&self, width: u64, height: u64) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::CorruptImage(format!(
                "image has a zero dimension ({width}×{height})"
            )));
        }
        if width > self.max_side_px as u64 || height > self.max_side_px as u64 {
            return Err(Error::ImageTooLarge(format!(
                "{width}×{height} px is over the limit of {} px per side",
                self.max_side_px
            )));
        }
        if width * height > self.max_pixels {
            return Err(Error::ImageTooLarge(format!(
                "{width}×{height} px is over the limit of {} pixels",
                self.max_pixels
            )));
        }
        Ok(())
    }

    /// Allocation ceiling handed to decoders: one page at the pixel limit in RGBA 16-bit, plus
    /// slack for the decoder's own buffers.
    fn max_alloc_bytes(&self) -> u64 {
        self.max_pixels * 8 + (64 << 20)
    }
}

/// Recognises the container format from magic bytes.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes).ok()? {
        f @ (ImageFormat::Png
        | ImageFormat::Jpeg
        | ImageFormat::Tiff
        | ImageFormat::WebP
        | ImageFormat::Bmp) => Some(f),
        _ => None,
    }
}

/// Decodes every page of an image file into RGB, applying EXIF orientation.
pub fn decode_pages(bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<RgbImage>> {
    if bytes.is_empty() {
        return Err(Error::EmptyInput);
    }
    let format = sniff_format(bytes).ok_or(Error::UnsupportedFormat)?;
    if format == ImageFormat::Tiff {
        let count = tiff_page_count(bytes, limits, limits.max_pages)?;
        return (0..count)
            .map(|i| decode_tiff_page(bytes, i, limits))
            .collect();
    }
    Ok(vec![decode_single(bytes, format, limits)?])
}

/// Reads an image's header and checks its size against the limits, decoding no pixels.
pub fn check_header(bytes: &[u8], format: ImageFormat, limits: &DecodeLimits) -> Result<()> {
    let decoder = limited_reader(bytes, format, limits)
        .into_decoder()
        .map_err(image_error)?;
    let (w, h) = decoder.dimensions();
    limits.check(w as u64, h as u64)
}

/// Worst-case bytes that decoding a single-image file allocates: the decoder's buffer in its
/// own pixel format, a second one when EXIF orientation rotates it, and the RGB page. Reads
/// only the header.
pub fn image_cost(bytes: &[u8], format: ImageFormat, limits: &DecodeLimits) -> Result<u64> {
    let mut decoder = limited_reader(bytes, format, limits)
        .into_decoder()
        .map_err(image_error)?;
    let (w, h) = decoder.dimensions();
    limits.check(w as u64, h as u64)?;
    let px = w as u64 * h as u64;
    let color = decoder.color_type();
    let bpp = color.bytes_per_pixel() as u64;
    let rotated = decoder
        .orientation()
        .is_ok_and(|o| o != image::metadata::Orientation::NoTransforms);
    // The RGB page (counted even when the decoder's buffer already is 8-bit RGB: a job page
    // keeps a second copy while it is handed to the scheduler).
    Ok(px * (bpp * if rotated { 2 } else { 1 } + 3))
}

/// Worst-case bytes that decoding TIFF page `index` allocates: its samples at up to 16 bits and
/// four channels, the 8-bit copy, and the RGB page.
pub fn tiff_page_cost(bytes: &[u8], index: usize, limits: &DecodeLimits) -> Result<u64> {
    let mut dec = tiff_decoder(bytes, limits)?;
    if index > 0 {
        dec.seek_to_image(index).map_err(tiff_error)?;
    }
    let (w, h) = dec.dimensions().map_err(tiff_error)?;
    limits.check(w as u64, h as u64)?;
    Ok(w as u64 * h as u64 * (8 + 4 + 3))
}

/// A reader whose decoder refuses sizes and allocations over the limits.
fn limited_reader<'a>(
    bytes: &'a [u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> ImageReader<Cursor<&'a [u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(limits.max_side_px);
    lim.max_image_height = Some(limits.max_side_px);
    lim.max_alloc = Some(limits.max_alloc_bytes());
    reader.limits(lim);
    reader
}

/// Decodes a single-image file (not TIFF) into RGB, applying EXIF orientation.
pub fn decode_single(bytes: &[u8], format: ImageFormat, limits: &DecodeLimits) -> Result<RgbImage> {
    let mut decoder = limited_reader(bytes, format, limits)
        .into_decoder()
        .map_err(image_error)?;
    let (w, h) = decoder.dimensions();
    limits.check(w as u64, h as u64)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn image_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::ImageTooLarge(format!("decoder limit: {l}")),
        image::ImageError::Unsupported(u) => {
            Error::CorruptImage(format!("unsupported image variant: {u}"))
        }
        other => Error::CorruptImage(other.to_string()),
    }
}

fn tiff_error(e: tiff::TiffError) -> Error {
    match e {
        tiff::TiffError::LimitsExceeded => {
            Error::ImageTooLarge("TIFF decoder limits exceeded".into())
        }
        other => Error::CorruptImage(format!("TIFF: {other}")),
    }
}

fn tiff_decoder<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<tiff::decoder::Decoder<Cursor<&'a [u8]>>> {
    let mut tl = tiff::decoder::Limits::default();
    tl.decoding_buffer_size = limits.max_alloc_bytes() as usize;
    tl.intermediate_buffer_size = limits.max_alloc_bytes() as usize;
    Ok(tiff::decoder::Decoder::new(Cursor::new(bytes))
        .map_err(tiff_error)?
        .with_limits(tl))
}

/// Number of pages (IFDs) of a TIFF, reading only the directories. A chain longer than `cap` is
/// `TooManyPages`; a directory that cannot be read is an error naming the page.
pub fn tiff_page_count(bytes: &[u8], limits: &DecodeLimits, cap: usize) -> Result<usize> {
    let mut dec = tiff_decoder(bytes, limits)?;
    let mut count = 1;
    while dec.more_images() {
        if count >= cap {
            return Err(Error::TooManyPages { limit: cap });
        }
        dec.next_image().map_err(|e| match tiff_error(e) {
            Error::CorruptImage(m) => Error::CorruptImage(format!("page {}: {m}", count + 1)),
            other => other,
        })?;
        count += 1;
    }
    Ok(count)
}

/// Decodes page `index` (0-based) of a TIFF, seeking to its directory; nothing else is decoded.
/// Pages in a colour model we cannot convert are an error naming the page.
pub fn decode_tiff_page(bytes: &[u8], index: usize, limits: &DecodeLimits) -> Result<RgbImage> {
    let named = |e: Error| match e {
        Error::CorruptImage(m) => Error::CorruptImage(format!("page {}: {m}", index + 1)),
        other => other,
    };
    let mut dec = tiff_decoder(bytes, limits)?;
    if index > 0 {
        dec.seek_to_image(index).map_err(|e| named(tiff_error(e)))?;
    }
    let (w, h) = dec.dimensions().map_err(|e| named(tiff_error(e)))?;
    limits.check(w as u64, h as u64)?;
    tiff_page_rgb(&mut dec, w, h).map_err(named)
}

fn tiff_page_rgb(
    dec: &mut tiff::decoder::Decoder<Cursor<&[u8]>>,
    w: u32,
    h: u32,
) -> Result<RgbImage> {
    use tiff::ColorType as C;
    use tiff::decoder::DecodingResult as D;
    let color = dec.colortype().map_err(tiff_error)?;
    let data = dec.read_image().map_err(tiff_error)?;
    let n = (w as usize) * (h as usize);
    // Samples as 8-bit, whatever the stored depth.
    let samples: Vec<u8> = match data {
        D::U8(v) => v,
        D::U16(v) => v.into_iter().map(|s| (s >> 8) as u8).collect(),
        D::F32(v) => v
            .into_iter()
            .map(|s| (s.clamp(0.0, 1.0) * 255.0) as u8)
            .collect(),
        _ => {
            return Err(Error::CorruptImage(format!(
                "unsupported TIFF sample type for {color:?}"
            )));
        }
    };
    let channels = match color {
        C::Gray(1) => {
            // Bilevel rows are bit-packed, each row padded to a byte. PhotometricInterpretation
            // is handled by the decoder for 8-bit; for 1-bit, 1 = white is the common
            // BlackIsZero convention.
            let row_bytes = (w as usize).div_ceil(8);
            if samples.len() < row_bytes * h as usize {
                return Err(Error::CorruptImage("bilevel TIFF data is short".into()));
            }
            let mut out = RgbImage::new(w, h);
            for (y, row) in samples.chunks(row_bytes).take(h as usize).enumerate() {
                for x in 0..w as usize {
                    let bit = (row[x / 8] >> (7 - x % 8)) & 1;
                    let v = if bit == 1 { 255 } else { 0 };
                    out.put_pixel(x as u32, y as u32, image::Rgb([v, v, v]));
                }
            }
            return Ok(out);
        }
        C::Gray(_) => 1,
        C::GrayA(_) => 2,
        C::RGB(_) => 3,
        C::RGBA(_) => 4,
        C::CMYK(_) => {
            if samples.len() < n * 4 {
                return Err(Error::CorruptImage("CMYK TIFF data is short".into()));
            }
            let rgb = samples
                .chunks_exact(4)
                .take(n)
                .flat_map(|p| {
                    let k = 255 - p[3] as u16;
                    [0, 1, 2].map(|i| ((255 - p[i] as u16) * k / 255) as u8)
                })
                .collect();
            return RgbImage::from_raw(w, h, rgb)
                .ok_or_else(|| Error::CorruptImage("CMYK TIFF data is short".into()));
        }
        other => {
            return Err(Error::CorruptImage(format!(
                "unsupported TIFF colour type {other:?}"
            )));
        }
    };
    if samples.len() < n * channels {
        return Err(Error::CorruptImage("TIFF pixel data is short".into()));
    }
    let rgb: Vec<u8> = match channels {
        1 | 2 => samples
            .chunks_exact(channels)
            .take(n)
            .flat_map(|p| [p[0]; 3])
            .collect(),
        _ => samples
            .chunks_exact(channels)
            .take(n)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
    };
    RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| Error::CorruptImage("TIFF pixel data is short".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    fn encode(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 10) as u8, 128])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_each_format_to_rgb() {
        for f in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Tiff,
            ImageFormat::Bmp,
            ImageFormat::WebP,
        ] {
            let pages = decode_pages(&encode(f, 12, 7), &DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(pages.len(), 1, "{f:?}");
            assert_eq!(pages[0].dimensions(), (12, 7), "{f:?}");
        }
    }

    #[test]
    fn multi_page_tiff_gives_every_page() {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut enc = tiff::encoder::TiffEncoder::new(&mut buf).unwrap();
            enc.write_image::<tiff::encoder::colortype::RGB8>(4, 3, &[200u8; 36])
                .unwrap();
            enc.write_image::<tiff::encoder::colortype::Gray8>(5, 2, &[10u8; 10])
                .unwrap();
            enc.write_image::<tiff::encoder::colortype::Gray16>(2, 2, &[65535u16; 4])
                .unwrap();
        }
        let pages = decode_pages(buf.get_ref(), &DecodeLimits::default()).unwrap();
        let dims: Vec<_> = pages.iter().map(|p| p.dimensions()).collect();
        assert_eq!(dims, vec![(4, 3), (5, 2), (2, 2)]);
        assert_eq!(pages[1].get_pixel(0, 0).0, [10, 10, 10]);
        assert_eq!(pages[2].get_pixel(1, 1).0, [255, 255, 255]);
        let few = DecodeLimits {
            max_pages: 2,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_pages(buf.get_ref(), &few),
            Err(Error::TooManyPages { limit: 2 })
        ));
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 4×2 JPEG whose EXIF says "rotate 90° clockwise" (orientation 6) decodes as 2×4.
        let img = RgbImage::from_pixel(4, 2, image::Rgb([90, 90, 90]));
        let mut jpg = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new(&mut jpg);
        let exif: Vec<u8> = [
            &b"MM\x00\x2a\x00\x00\x00\x08"[..], // big-endian TIFF header, IFD at 8
            &[0, 1],                            // one entry
            &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], // Orientation, SHORT, 1, value 6
            &[0, 0, 0, 0],
        ]
        .concat();
        enc.set_exif_metadata(exif).unwrap();
        enc.write_image(img.as_raw(), 4, 2, image::ExtendedColorType::Rgb8)
            .unwrap();
        let pages = decode_pages(&jpg, &DecodeLimits::default()).unwrap();
        assert_eq!(pages[0].dimensions(), (2, 4));
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let png = encode(ImageFormat::Png, 50, 50);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty_input"),
            (
                "text",
                b"hello, this is not an image".to_vec(),
                "unsupported_format",
            ),
            (
                "truncated png",
                png[..png.len() / 2].to_vec(),
                "corrupt_image",
            ),
            (
                "png magic only",
                b"\x89PNG\r\n\x1a\n".to_vec(),
                "corrupt_image",
            ),
            (
                "huge header",
                huge_png_header(30_000, 30_000),
                "image_too_large",
            ),
            (
                "gif",
                b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
                "unsupported_format",
            ),
        ];
        for (name, bytes, code) in cases {
            let err = decode_pages(&bytes, &DecodeLimits::default()).expect_err(name);
            assert_eq!(err.code(), code, "{name}: {err}");
        }
        let small = DecodeLimits {
            max_side_px: 40,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode_pages(&png, &small).unwrap_err().code(),
            "image_too_large"
        );
    }

    /// A PNG signature and an IHDR chunk claiming `w`×`h` RGB, with no pixel data.
    fn huge_png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let crc = crc32(&ihdr);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend(13u32.to_be_bytes());
        out.extend(&ihdr);
        out.extend(crc.to_be_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}

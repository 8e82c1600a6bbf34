//! Searchable PDF from images: the text layer lands on the word boxes, the page has the image's
//! size at the given dpi, and the image is unchanged. The generated glyph-less TrueType is
//! structurally valid, and poppler sees the PDF font as an embedded CID TrueType with a
//! ToUnicode map. No models needed; needs poppler-utils and qpdf (mutool is optional).

mod common;

use common::pdf_tools::*;
use ocr_server::output::glyphless_font::glyphless_ttf;
use ocr_server::output::pdf::{PageImage, from_images};
use ocr_server::pipeline::{Line, Page};

/// How a synthetic line is expected to come out of poppler.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Level text: exact word boxes.
    Level,
    /// Slightly skewed (≤ 3°): written level, centred on the quad, width/height of the quad.
    Skewed,
    /// Tilted 10°: written rotated; poppler breaks such words into fragments (it ends a word
    /// when the baseline moves 0.5 pt), so only the fragments' text and positions are checked.
    Tilted,
}

fn synthetic_lines(scale: f32) -> Vec<(Line, Kind)> {
    let s = scale;
    vec![
        (
            line(
                [60.0 * s, 120.0 * s],
                28.0 * s,
                0.0,
                15.0 * s,
                &["Invoice", "number", "12345"],
            ),
            Kind::Level,
        ),
        (
            line(
                [60.0 * s, 220.0 * s],
                30.0 * s,
                0.0,
                24.0 * s,
                &["日本語", "Ünïcödé"],
            ),
            Kind::Level,
        ),
        (
            line(
                [60.0 * s, 300.0 * s],
                24.0 * s,
                2.0,
                14.0 * s,
                &["Skewed", "by", "two", "degrees"],
            ),
            Kind::Skewed,
        ),
        (
            line(
                [80.0 * s, 420.0 * s],
                26.0 * s,
                10.0,
                14.0 * s,
                &["Rotated", "line", "here"],
            ),
            Kind::Tilted,
        ),
        (
            line(
                [60.0 * s, 520.0 * s],
                22.0 * s,
                0.0,
                12.0 * s,
                &["a<b", "&", "\"q\"", "it's", "x>y"],
            ),
            Kind::Level,
        ),
        (
            line(
                [60.0 * s, 600.0 * s],
                24.0 * s,
                0.0,
                14.0 * s,
                &["math", "𝐀𝐁𝐂", "emoji😀"],
            ),
            Kind::Level,
        ),
        (
            line(
                [60.0 * s, 700.0 * s],
                12.0 * s,
                0.0,
                7.0 * s,
                &["small", "print", "line"],
            ),
            Kind::Level,
        ),
        (
            tight(line(
                [60.0 * s, 760.0 * s],
                20.0 * s,
                0.0,
                11.0 * s,
                &["tight", "gap", "words"],
            )),
            Kind::Level,
        ),
    ]
}

/// Closes the gaps between words to 0.05 of the line height (0.6 → 0.05).
fn tight(mut l: Line) -> Line {
    let h = l.words[0].bbox[3][1] - l.words[0].bbox[0][1];
    for (i, w) in l.words.iter_mut().enumerate() {
        for p in &mut w.bbox {
            p[0] -= i as f32 * 0.55 * h;
        }
    }
    l.bbox[1][0] -= (l.words.len() - 1) as f32 * 0.55 * h;
    l.bbox[2][0] = l.bbox[1][0];
    l
}

fn page_for(width: u32, height: u32, scale: f32) -> (Page, Vec<Kind>) {
    let lines = synthetic_lines(scale);
    let kinds = lines.iter().map(|l| l.1).collect();
    (
        Page {
            width,
            height,
            lines: lines.into_iter().map(|l| l.0).collect(),
            error: None,
        },
        kinds,
    )
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

/// Is `p` inside the convex quad `q` grown by `tol`?
fn in_quad(p: [f32; 2], q: &[[f32; 2]; 4], tol: f32) -> bool {
    (0..4).all(|i| {
        let (a, b) = (q[i], q[(i + 1) % 4]);
        let cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
        cross / dist(a, b) >= -tol
    })
}

/// Checks the text layer of page `pno` against `page` (pixels → points by `pt`).
fn check_words(pdf: &std::path::Path, pno: usize, page: &Page, kinds: &[Kind], pt: f32) {
    let pages = pdftotext_bbox(pdf, &[]);
    let bp = &pages[pno];
    let mut expected_words = 0;
    for (line, &kind) in page.lines.iter().zip(kinds) {
        match kind {
            Kind::Level => {
                for w in &line.words {
                    assert_word_at(bp, &w.text, bounds(&w.bbox).map(|v| v * pt), 1.0);
                    expected_words += 1;
                }
            }
            Kind::Skewed => {
                for w in &line.words {
                    let q = w.bbox.map(|p| [p[0] * pt, p[1] * pt]);
                    let c = [(q[0][0] + q[2][0]) / 2.0, (q[0][1] + q[2][1]) / 2.0];
                    let (ww, hh) = (dist(q[0], q[1]), dist(q[0], q[3]));
                    let want = [
                        c[0] - ww / 2.0,
                        c[1] - hh / 2.0,
                        c[0] + ww / 2.0,
                        c[1] + hh / 2.0,
                    ];
                    assert_word_at(bp, &w.text, want, 1.0);
                    expected_words += 1;
                }
            }
            Kind::Tilted => {
                // Fragments whose centre lies on the line's quad, in order along the line,
                // spell the line's words.
                let q = line.bbox.map(|p| [p[0] * pt, p[1] * pt]);
                let mut frags: Vec<(f32, &str)> = bp
                    .words
                    .iter()
                    .filter_map(|w| {
                        let c = [(w.bbox[0] + w.bbox[2]) / 2.0, (w.bbox[1] + w.bbox[3]) / 2.0];
                        in_quad(c, &q, 1.0).then_some((c[0], w.text.as_str()))
                    })
                    .collect();
                frags.sort_by(|a, b| a.0.total_cmp(&b.0));
                let got: String = frags.iter().map(|f| f.1).collect();
                assert_eq!(
                    got,
                    line.text.replace(' ', ""),
                    "tilted line fragments {frags:?}"
                );
                expected_words += frags.len();
            }
        }
    }
    // No extra words (stray glyphs, duplicated text).
    assert_eq!(bp.words.len(), expected_words, "words: {:?}", bp.words);
}

/// Plain text: each level/skewed line on its own text line, words in order, lines in order.
fn check_plain(pdf: &std::path::Path, page: &Page, kinds: &[Kind]) {
    let text = pdftotext_plain(pdf, 1);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let wanted: Vec<&str> = page
        .lines
        .iter()
        .zip(kinds)
        .filter(|(_, k)| **k != Kind::Tilted)
        .map(|(l, _)| l.text.as_str())
        .collect();
    let pos: Vec<usize> = wanted
        .iter()
        .map(|t| {
            lines
                .iter()
                .position(|x| x == t)
                .unwrap_or_else(|| panic!("line {t:?} not in {lines:?}"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "lines out of order: {lines:?}"
    );
}

/// MuPDF (which, unlike poppler, follows rotated baselines) reads every line, the 10° one
/// included, in order. Fails when `mutool` is missing (`scripts/test.sh` installs `mupdf-tools`).
fn check_mupdf(pdf: &std::path::Path, page: &Page) {
    let o = std::process::Command::new("mutool")
        .args(["draw", "-q", "-F", "txt", "-o", "-"])
        .arg(pdf)
        .output()
        .expect("mutool (Debian mupdf-tools) is missing: scripts/test.sh installs it");
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let want: Vec<&str> = page.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(lines, want, "mutool text");
}

#[test]
fn png_page_round_trip() {
    let dir = out_dir("png_page_round_trip");
    let img = image::open(funsd_png()).unwrap().to_luma8();
    let (w, h) = img.dimensions();
    let dpi = 150.0;
    let (page, kinds) = page_for(w, h, 1.0);
    let pdf = from_images(&[(PageImage::Gray(img.clone()), &page, dpi)]).unwrap();
    let path = dir.join("out.pdf");
    std::fs::write(&path, &pdf).unwrap();
    qpdf_check(&path);

    // Page size in points = pixels * 72 / dpi.
    let pages = pdftotext_bbox(&path, &[]);
    assert_eq!(pages.len(), 1);
    assert!(
        (pages[0].width - w as f32 * 72.0 / dpi).abs() < 0.01,
        "{:?}",
        pages[0].width
    );
    assert!((pages[0].height - h as f32 * 72.0 / dpi).abs() < 0.01);
    check_words(&path, 0, &page, &kinds, 72.0 / dpi);
    check_plain(&path, &page, &kinds);
    check_mupdf(&path, &page);

    // Rendering at the dpi gives back the image: same size, same pixels (the text is invisible).
    let r = render(&path, 1, dpi, true).to_luma8();
    assert!((r.width() as i64 - w as i64).abs() <= 1 && (r.height() as i64 - h as i64).abs() <= 1);
    let (cw, ch) = (r.width().min(w), r.height().min(h));
    let mut diff = 0u64;
    for y in 0..ch {
        for x in 0..cw {
            diff += (r.get_pixel(x, y)[0] as i64 - img.get_pixel(x, y)[0] as i64).unsigned_abs();
        }
    }
    let mean = diff as f64 / (cw * ch) as f64;
    // Splash resamples the image slightly (edges), so allow a small mean difference.
    assert!(
        mean < 6.0,
        "rendered page differs from the image: mean abs diff {mean}"
    );

    // The text layer is invisible: the page renders exactly as the same page without text.
    let empty = Page {
        width: w,
        height: h,
        lines: vec![],
        error: None,
    };
    let bare = from_images(&[(PageImage::Gray(img.clone()), &empty, dpi)]).unwrap();
    let bare_path = dir.join("bare.pdf");
    std::fs::write(&bare_path, &bare).unwrap();
    assert!(
        render(&bare_path, 1, dpi, true).to_luma8() == r,
        "text layer changed the rendering"
    );
}

#[test]
fn jpeg_passthrough_round_trip() {
    let dir = out_dir("jpeg_passthrough_round_trip");
    let bytes = std::fs::read(sroie_jpg()).unwrap();
    let (w, h) = image::image_dimensions(sroie_jpg()).unwrap();
    let dpi = 200.0;
    // OCR ran on a half-size copy of the image: the Page is 444 px wide, the image 888.
    let (ow, oh) = (w / 2, h / 2);
    let (page, kinds) = page_for(ow, oh, 0.5);
    let pdf = from_images(&[(
        PageImage::Jpeg {
            bytes: bytes.clone(),
            width: w,
            height: h,
            components: 3,
        },
        &page,
        dpi,
    )])
    .unwrap();
    // Embedded unchanged.
    assert!(
        pdf.windows(bytes.len()).any(|x| x == bytes.as_slice()),
        "JPEG bytes not embedded verbatim"
    );
    let path = dir.join("out.pdf");
    std::fs::write(&path, &pdf).unwrap();
    qpdf_check(&path);
    let list = run("pdfimages", &["-list", path.to_str().unwrap()]);
    let row = list.lines().nth(2).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cols[3], cols[4], cols[5], cols[8]),
        (
            w.to_string().as_str(),
            h.to_string().as_str(),
            "rgb",
            "jpeg"
        ),
        "{list}"
    );
    assert_eq!(cols[12], dpi.to_string(), "x-ppi {list}");

    let pt_per_px = (w as f32 * 72.0 / dpi) / ow as f32;
    check_words(&path, 0, &page, &kinds, pt_per_px);
    check_plain(&path, &page, &kinds);
    let r = render(&path, 1, dpi, false);
    assert!(
        (r.width() as i64 - w as i64).abs() <= 1 && (r.height() as i64 - h as i64).abs() <= 1,
        "{}x{}",
        r.width(),
        r.height()
    );
}

#[test]
fn multi_page_rgb_and_gray() {
    let dir = out_dir("multi_page_rgb_and_gray");
    let rgb = image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([(x * 255 / 300) as u8, (y * 255 / 200) as u8, 128])
    });
    let gray = image::GrayImage::from_pixel(400, 500, image::Luma([255]));
    let p1 = Page {
        width: 300,
        height: 200,
        lines: vec![line([10.0, 50.0], 20.0, 0.0, 10.0, &["first", "page"])],
        error: None,
    };
    let p2 = Page {
        width: 400,
        height: 500,
        lines: vec![line([10.0, 450.0], 20.0, 0.0, 10.0, &["second"])],
        error: None,
    };
    let pdf = from_images(&[
        (PageImage::Rgb(rgb.clone()), &p1, 72.0),
        (PageImage::Gray(gray), &p2, 300.0),
    ])
    .unwrap();
    let path = dir.join("out.pdf");
    std::fs::write(&path, &pdf).unwrap();
    qpdf_check(&path);
    let pages = pdftotext_bbox(&path, &[]);
    assert_eq!(pages.len(), 2);
    assert_eq!((pages[0].width, pages[0].height), (300.0, 200.0));
    assert!((pages[1].width - 96.0).abs() < 0.01 && (pages[1].height - 120.0).abs() < 0.01);
    assert_word_at(&pages[0], "page", bounds(&p1.lines[0].words[1].bbox), 1.0);
    assert_word_at(
        &pages[1],
        "second",
        bounds(&p2.lines[0].words[0].bbox).map(|v| v * 72.0 / 300.0),
        1.0,
    );
    // The RGB image survives losslessly.
    let r = render(&path, 1, 72.0, false).to_rgb8();
    assert_eq!(r.dimensions(), (300, 200));
    let max = r
        .pixels()
        .zip(rgb.pixels())
        .map(|(a, b)| (0..3).map(|i| a[i].abs_diff(b[i])).max().unwrap())
        .max()
        .unwrap();
    assert!(max <= 2, "max channel diff {max}");
}

#[test]
fn bad_inputs_are_errors() {
    let page = Page {
        width: 10,
        height: 10,
        lines: vec![],
        error: None,
    };
    let jpeg = std::fs::read(sroie_jpg()).unwrap();
    // Wrong declared size.
    assert!(
        from_images(&[(
            PageImage::Jpeg {
                bytes: jpeg.clone(),
                width: 10,
                height: 10,
                components: 3
            },
            &page,
            72.0
        )])
        .is_err()
    );
    // Not a JPEG.
    assert!(
        from_images(&[(
            PageImage::Jpeg {
                bytes: b"nope".to_vec(),
                width: 10,
                height: 10,
                components: 3
            },
            &page,
            72.0
        )])
        .is_err()
    );
    // Bad dpi.
    assert!(from_images(&[(PageImage::Gray(image::GrayImage::new(10, 10)), &page, 0.0)]).is_err());
    assert!(
        from_images(&[(
            PageImage::Gray(image::GrayImage::new(10, 10)),
            &page,
            f32::NAN
        )])
        .is_err()
    );
}

/// Big-endian reads from a font file, panicking (with the offset) when out of bounds.
struct Be<'a>(&'a [u8]);

impl Be<'_> {
    fn bytes(&self, at: usize, n: usize) -> &[u8] {
        self.0
            .get(at..at + n)
            .unwrap_or_else(|| panic!("read of {n} bytes at {at} past the end ({})", self.0.len()))
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_be_bytes(self.bytes(at, 2).try_into().unwrap())
    }
    fn i16(&self, at: usize) -> i16 {
        self.u16(at) as i16
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.bytes(at, 4).try_into().unwrap())
    }
}

/// The TrueType table checksum: the sum of big-endian u32 words, zero-padded.
fn checksum(data: &[u8]) -> u32 {
    data.chunks(4).fold(0u32, |sum, c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        sum.wrapping_add(u32::from_be_bytes(w))
    })
}

/// The glyph a format-4 `cmap` subtable (at `at`) maps `code` to.
fn cmap4_lookup(f: &Be, at: usize, code: u16) -> u16 {
    assert_eq!(f.u16(at), 4, "cmap subtable format");
    let seg_x2 = f.u16(at + 6) as usize;
    let ends = at + 14;
    let starts = ends + seg_x2 + 2;
    let deltas = starts + seg_x2;
    let range_offsets = deltas + seg_x2;
    assert_eq!(
        f.u16(ends + seg_x2 - 2),
        0xFFFF,
        "last segment ends at 0xFFFF"
    );
    for s in 0..seg_x2 / 2 {
        let (end, start) = (f.u16(ends + 2 * s), f.u16(starts + 2 * s));
        if code < start || code > end {
            continue;
        }
        let ro = f.u16(range_offsets + 2 * s) as usize;
        if ro == 0 {
            return code.wrapping_add(f.u16(deltas + 2 * s));
        }
        let g = f.u16(range_offsets + 2 * s + ro + 2 * (code - start) as usize);
        return if g == 0 {
            0
        } else {
            g.wrapping_add(f.u16(deltas + 2 * s))
        };
    }
    0
}

/// A structural check of the generated TrueType (what fontTools' `checkChecksums=2` plus
/// decompiling the tables would catch): the table directory (binary-search fields, sorted tags,
/// aligned, in-bounds, non-overlapping tables), every table's checksum and the whole-file
/// `checkSumAdjustment`, the required tables, and the metrics the PDF writer relies on.
fn check_ttf(font: &[u8]) {
    let f = Be(font);

    // Offset table.
    assert_eq!(f.u32(0), 0x0001_0000, "sfnt version (TrueType outlines)");
    let n = f.u16(4) as usize;
    let pow2 = 1usize << (usize::BITS - 1 - n.leading_zeros());
    assert_eq!(f.u16(6) as usize, 16 * pow2, "searchRange");
    assert_eq!(
        f.u16(8) as usize,
        pow2.trailing_zeros() as usize,
        "entrySelector"
    );
    assert_eq!(f.u16(10) as usize, 16 * n - 16 * pow2, "rangeShift");

    // Table directory.
    let mut tables = std::collections::BTreeMap::new();
    let mut spans = Vec::new();
    let mut prev: Option<[u8; 4]> = None;
    for i in 0..n {
        let rec = 12 + 16 * i;
        let tag: [u8; 4] = f.bytes(rec, 4).try_into().unwrap();
        let name = String::from_utf8_lossy(&tag).to_string();
        if let Some(p) = prev {
            assert!(p < tag, "table tags not sorted: {name} after {:?}", p);
        }
        prev = Some(tag);
        let (sum, off, len) = (
            f.u32(rec + 4),
            f.u32(rec + 8) as usize,
            f.u32(rec + 12) as usize,
        );
        assert_eq!(off % 4, 0, "{name} not 4-byte aligned");
        assert!(off >= 12 + 16 * n, "{name} overlaps the directory");
        let data = f.bytes(off, len).to_vec();
        // head's checksum is computed with checkSumAdjustment zeroed.
        let mut for_sum = data.clone();
        if &tag == b"head" {
            for_sum[8..12].fill(0);
        }
        assert_eq!(checksum(&for_sum), sum, "checksum of {name}");
        spans.push((off, off + len, name.clone()));
        tables.insert(name, (off, len));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "tables {} and {} overlap", w[0].2, w[1].2);
    }
    assert_eq!(checksum(font), 0xB1B0_AFBA, "whole-file checkSumAdjustment");
    assert_eq!(font.len() % 4, 0, "file padded to 4 bytes");
    assert_eq!(
        tables.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "OS/2", "cmap", "glyf", "head", "hhea", "hmtx", "loca", "maxp", "name", "post"
        ],
        "the required TrueType tables, and only those"
    );
    let t = |name: &str| tables[name];

    // head: magic, 1000 units per em, loca format.
    let (head, head_len) = t("head");
    assert_eq!(head_len, 54);
    assert_eq!(f.u32(head + 12), 0x5F0F_3CF5, "head magicNumber");
    assert_eq!(f.u16(head + 18), 1000, "unitsPerEm");
    let (x_min, y_min, x_max, y_max) = (
        f.i16(head + 36),
        f.i16(head + 38),
        f.i16(head + 40),
        f.i16(head + 42),
    );
    assert!(x_min <= x_max && y_min <= y_max, "head bbox");
    let long_loca = f.i16(head + 50);
    assert!(long_loca == 0 || long_loca == 1, "indexToLocFormat");
    assert_eq!(f.i16(head + 52), 0, "glyphDataFormat");

    // maxp / hhea / hmtx: two glyphs, both 500 units wide; ascent 800, descent -200.
    let (maxp, _) = t("maxp");
    let glyphs = f.u16(maxp + 4) as usize;
    assert_eq!(glyphs, 2, "numGlyphs");
    let (hhea, hhea_len) = t("hhea");
    assert_eq!(hhea_len, 36);
    assert_eq!(
        (f.i16(hhea + 4), f.i16(hhea + 6)),
        (800, -200),
        "hhea ascent/descent"
    );
    let metrics = f.u16(hhea + 34) as usize;
    assert!((1..=glyphs).contains(&metrics), "numberOfHMetrics");
    let (hmtx, hmtx_len) = t("hmtx");
    assert_eq!(
        hmtx_len,
        4 * metrics + 2 * (glyphs - metrics),
        "hmtx length"
    );
    let advance = |g: usize| f.u16(hmtx + 4 * g.min(metrics - 1));
    assert_eq!((advance(0), advance(1)), (500, 500), "advance widths");
    assert_eq!(f.u16(hhea + 10), 500, "advanceWidthMax");

    // loca / glyf: glyph 0 a closed outline inside the head bbox, glyph 1 empty.
    let (loca, loca_len) = t("loca");
    let (glyf, glyf_len) = t("glyf");
    let offs: Vec<usize> = (0..=glyphs)
        .map(|i| {
            if long_loca == 1 {
                f.u32(loca + 4 * i) as usize
            } else {
                2 * f.u16(loca + 2 * i) as usize
            }
        })
        .collect();
    assert_eq!(loca_len, (glyphs + 1) * if long_loca == 1 { 4 } else { 2 });
    assert!(
        offs.windows(2).all(|w| w[0] <= w[1]),
        "loca increasing: {offs:?}"
    );
    assert_eq!(offs[0], 0);
    assert!(
        offs[glyphs] <= glyf_len,
        "loca past glyf: {offs:?} vs {glyf_len}"
    );
    assert_eq!(offs[1], offs[2], "glyph 1 has no outline");
    let g0 = glyf + offs[0];
    assert!(offs[1] - offs[0] >= 10, "glyph 0 has a header");
    assert_eq!(f.i16(g0), 1, "glyph 0: one contour");
    let gb = [f.i16(g0 + 2), f.i16(g0 + 4), f.i16(g0 + 6), f.i16(g0 + 8)];
    assert!(
        gb[0] >= x_min && gb[1] >= y_min && gb[2] <= x_max && gb[3] <= y_max,
        "glyph 0 bbox {gb:?} outside the head bbox"
    );

    // cmap: a Windows Unicode BMP format-4 subtable mapping the space to the empty glyph.
    let (cmap, _) = t("cmap");
    assert_eq!(f.u16(cmap), 0, "cmap version");
    let sub = (0..f.u16(cmap + 2) as usize)
        .find(|&i| f.u16(cmap + 4 + 8 * i) == 3 && f.u16(cmap + 6 + 8 * i) == 1)
        .map(|i| cmap + f.u32(cmap + 8 + 8 * i) as usize)
        .expect("a (3, 1) cmap subtable");
    assert_eq!(cmap4_lookup(&f, sub, 0x20), 1, "space -> glyph 1");
    assert_eq!(cmap4_lookup(&f, sub, 0x41), 0, "'A' unmapped");

    // name: the PostScript name (ID 6), UTF-16BE on the Windows platform.
    let (name, _) = t("name");
    let strings = name + f.u16(name + 4) as usize;
    let ps_name = (0..f.u16(name + 2) as usize)
        .map(|i| name + 6 + 12 * i)
        .find(|&r| f.u16(r) == 3 && f.u16(r + 6) == 6)
        .map(|r| {
            let b = f.bytes(strings + f.u16(r + 10) as usize, f.u16(r + 8) as usize);
            let units: Vec<u16> = b
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).unwrap()
        });
    assert_eq!(ps_name.as_deref(), Some("GlyphLessFont"));

    // OS/2 (version 4 is 96 bytes) and post (version 3: 32 bytes).
    let (os2, os2_len) = t("OS/2");
    assert_eq!(f.u16(os2), 4, "OS/2 version");
    assert_eq!(os2_len, 96);
    assert_eq!(f.u16(os2 + 8), 0, "fsType: installable embedding");
    assert_eq!(
        (f.i16(os2 + 68), f.i16(os2 + 70)),
        (800, -200),
        "sTypoAscender/Descender"
    );
    let (post, post_len) = t("post");
    assert_eq!((f.u32(post), post_len), (0x0003_0000, 32), "post version 3");
}

#[test]
fn glyphless_ttf_is_structurally_valid() {
    let font = glyphless_ttf();
    assert_eq!(font, glyphless_ttf(), "deterministic");
    check_ttf(&font);
}

/// The structural check is not vacuous: damaged fonts fail it.
#[test]
fn ttf_check_rejects_damaged_fonts() {
    let font = glyphless_ttf();
    let fails = |f: Vec<u8>| std::panic::catch_unwind(move || check_ttf(&f)).is_err();
    let mut flipped = font.clone();
    let last = flipped.len() - 8; // inside the last table (post)
    flipped[last] ^= 0x01;
    assert!(fails(flipped), "a flipped byte passes the checksums");
    assert!(
        fails(font[..font.len() - 4].to_vec()),
        "a truncated font passes"
    );
    let mut renamed = font.clone();
    renamed[12..16].copy_from_slice(b"XXXX"); // the first table's tag
    assert!(fails(renamed), "a missing OS/2 table passes");
}

#[test]
fn pdffonts_sees_embedded_cid_truetype() {
    let page = Page {
        width: 100,
        height: 100,
        lines: vec![line([10.0, 50.0], 20.0, 0.0, 10.0, &["hi"])],
        error: None,
    };
    let pdf = from_images(&[(
        PageImage::Gray(image::GrayImage::new(100, 100)),
        &page,
        72.0,
    )])
    .unwrap();
    let path = out_dir("pdffonts").join("out.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = run("pdffonts", &[path.to_str().unwrap()]);
    let row = out.lines().nth(2).expect(&out);
    let cols: Vec<&str> = row.split_whitespace().collect();
    // name type(2 words) encoding emb sub uni object ID
    assert_eq!(
        &cols[..6],
        &[
            "GlyphLessFont",
            "CID",
            "TrueType",
            "Identity-H",
            "yes",
            "no"
        ],
        "{out}"
    );
    assert_eq!(cols[6], "yes", "ToUnicode: {out}");
}

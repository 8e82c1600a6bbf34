//! hOCR 1.2 output (XHTML): `ocr_page` → `ocr_line` → `ocrx_word`.
//!
//! Boxes are axis-aligned integer pixel bounds (`bbox x0 y0 x1 y1`, x0/y0 inclusive-floor,
//! x1/y1 ceil), clamped to the page. A line's bbox is the bounds of its quad united with its
//! words' bounds, so every word box lies inside its line box. No `baseline` is written: our
//! quads are detector boxes around the text (with padding and descenders), not baselines.

use std::fmt::Write as _;

use crate::pipeline::{Line, Page, Word};

/// Escapes text for XML character data and attribute values; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Axis-aligned float bounds of a quad: (x0, y0, x1, y1).
fn quad_bounds(q: &[[f32; 2]; 4]) -> (f32, f32, f32, f32) {
    let mut b = (
        f32::INFINITY,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
    );
    for p in q {
        let (x, y) = (finite(p[0]), finite(p[1]));
        b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    b
}

fn finite(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

fn union(a: (f32, f32, f32, f32), b: (f32, f32, f32, f32)) -> (f32, f32, f32, f32) {
    (a.0.min(b.0), a.1.min(b.1), a.2.max(b.2), a.3.max(b.3))
}

/// Integer bbox clamped to the page, x0 <= x1, y0 <= y1.
fn int_bbox(b: (f32, f32, f32, f32), w: u32, h: u32) -> [u32; 4] {
    let cx = |v: f32| v.clamp(0.0, w as f32);
    let cy = |v: f32| v.clamp(0.0, h as f32);
    let x0 = cx(b.0).floor() as u32;
    let y0 = cy(b.1).floor() as u32;
    let x1 = (cx(b.2).ceil() as u32).max(x0);
    let y1 = (cy(b.3).ceil() as u32).max(y0);
    [x0, y0, x1, y1]
}

fn wconf(c: f32) -> u32 {
    if c.is_finite() {
        (c * 100.0).round().clamp(0.0, 100.0) as u32
    } else {
        0
    }
}

/// The words to write for a line: its non-empty words, or the line itself as one word.
fn line_words(line: &Line) -> Vec<Word> {
    let words: Vec<Word> = line
        .words
        .iter()
        .filter(|w| !w.text.trim().is_empty())
        .cloned()
        .collect();
    if !words.is_empty() || line.text.trim().is_empty() {
        return words;
    }
    vec![Word {
        text: line.text.clone(),
        confidence: line.confidence,
        bbox: line.bbox,
    }]
}

/// Renders `pages` as one hOCR document. `ppageno` is 0-based (as Tesseract writes it);
/// element ids (`page_1`, `line_1_1`, `word_1_1_1`) are 1-based.
pub fn hocr(pages: &[Page], title: &str) -> String {
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    o.push_str(
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n    \
         \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n",
    );
    o.push_str("<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n");
    o.push_str(" <head>\n");
    let _ = writeln!(o, "  <title>{}</title>", xml_escape(title));
    o.push_str("  <meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n");
    let _ = writeln!(
        o,
        "  <meta name=\"ocr-system\" content=\"ocr-server {}\"/>",
        xml_escape(env!("CARGO_PKG_VERSION"))
    );
    o.push_str("  <meta name=\"ocr-capabilities\" content=\"ocr_page ocr_line ocrx_word\"/>\n");
    let _ = writeln!(
        o,
        "  <meta name=\"ocr-number-of-pages\" content=\"{}\"/>",
        pages.len()
    );
    o.push_str(" </head>\n <body>\n");
    for (pi, page) in pages.iter().enumerate() {
        let (pw, ph) = (page.width, page.height);
        let _ = writeln!(
            o,
            "  <div class=\"ocr_page\" id=\"page_{}\" title=\"bbox 0 0 {pw} {ph}; ppageno {pi}\">",
            pi + 1
        );
        let mut li = 0;
        for line in &page.lines {
            let words = line_words(line);
            if words.is_empty() {
                continue;
            }
            li += 1;
            let lb = words.iter().fold(quad_bounds(&line.bbox), |b, w| {
                union(b, quad_bounds(&w.bbox))
            });
            let [x0, y0, x1, y1] = int_bbox(lb, pw, ph);
            let _ = write!(
                o,
                "   <span class=\"ocr_line\" id=\"line_{}_{li}\" title=\"bbox {x0} {y0} {x1} {y1}\">",
                pi + 1
            );
            for (wi, w) in words.iter().enumerate() {
                if wi > 0 {
                    o.push(' ');
                }
                let [x0, y0, x1, y1] = int_bbox(quad_bounds(&w.bbox), pw, ph);
                let _ = write!(
                    o,
                    "<span class=\"ocrx_word\" id=\"word_{}_{li}_{}\" title=\"bbox {x0} {y0} {x1} {y1}; x_wconf {}\">{}</span>",
                    pi + 1,
                    wi + 1,
                    wconf(w.confidence),
                    xml_escape(&w.text)
                );
            }
            o.push_str("</span>\n");
        }
        o.push_str("  </div>\n");
    }
    o.push_str(" </body>\n</html>\n");
    o
}

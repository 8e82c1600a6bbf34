//! The page pipeline end to end with fake models (no weights): detection boxes, reading order,
//! crops, classification, recognition batching, word boxes, and error paths.

use std::sync::Arc;

use image::{Rgb, RgbImage};
use ocr_server::engine::fake::{FailingModel, FakeClassifier, FakeDetector, FakeRecognizer};
use ocr_server::engine::{Model, ModelKind, OcrEngine, OcrOptions};
use ocr_server::pipeline::ctc::Charset;

/// A white page with black bars (x0, y0, x1, y1).
fn page(w: u32, h: u32, bars: &[(u32, u32, u32, u32)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for &(x0, y0, x1, y1) in bars {
        for y in y0..y1 {
            for x in x0..x1 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
    }
    img
}

fn charset() -> Arc<Charset> {
    Arc::new(Charset::from_dictionary(["a", "b"]))
}

fn engine(det: Box<dyn Model>, rec: Box<dyn Model>, cls: Option<Box<dyn Model>>) -> OcrEngine {
    OcrEngine::new(ModelKind::V6, det, rec, cls, charset())
}

fn fakes() -> OcrEngine {
    engine(
        Box::new(FakeDetector),
        Box::new(FakeRecognizer { classes: 4 }),
        Some(Box::new(FakeClassifier {
            probs: [0.99, 0.01],
        })),
    )
}

/// Options that do not upscale the synthetic pages.
fn opts() -> OcrOptions {
    let mut o = OcrOptions::default();
    o.det_resize.limit_side_px = 32;
    o
}

#[test]
fn every_bar_becomes_a_line_in_reading_order() {
    // Row 1: one bar; row 2: two bars (the right one listed first); row 3: one bar.
    let bars = [
        (40, 40, 360, 60),
        (260, 120, 420, 140),
        (40, 120, 200, 140),
        (40, 200, 300, 220),
    ];
    let img = page(480, 256, &bars);
    let result = fakes().ocr_page(&img, &opts()).unwrap();
    assert_eq!((result.width, result.height), (480, 256));
    assert_eq!(result.lines.len(), 4, "{result:#?}");
    let lefts: Vec<(f32, f32)> = result
        .lines
        .iter()
        .map(|l| (l.bbox[0][0], l.bbox[0][1]))
        .collect();
    // Reading order: top row, then the second row left to right, then the bottom row.
    assert!(
        lefts[0].1 < lefts[1].1 && lefts[1].1 < lefts[3].1,
        "{lefts:?}"
    );
    assert!(lefts[1].0 < lefts[2].0, "{lefts:?}");
    for (line, bar) in result
        .lines
        .iter()
        .zip([bars[0], bars[2], bars[1], bars[3]])
    {
        assert_eq!(line.text, "a");
        // The line box covers its bar (grown by unclip) and not much more.
        let b = line.bbox;
        assert!(
            b[0][0] <= bar.0 as f32 && b[2][0] >= bar.2 as f32 - 1.0,
            "{b:?} vs {bar:?}"
        );
        assert!(
            b[0][1] <= bar.1 as f32 && b[2][1] >= bar.3 as f32 - 1.0,
            "{b:?} vs {bar:?}"
        );
        assert!(b[2][1] - b[0][1] < 3.0 * (bar.3 - bar.1) as f32, "{b:?}");
        // One word, inside its line's box.
        assert_eq!(line.words.len(), 1);
        let w = line.words[0].bbox;
        for p in w {
            assert!(
                p[0] >= b[0][0] - 1.0
                    && p[0] <= b[2][0] + 1.0
                    && p[1] >= b[0][1] - 1.0
                    && p[1] <= b[2][1] + 1.0,
                "{w:?} in {b:?}"
            );
        }
    }
}

#[test]
fn blank_page_has_no_lines_and_confidence_filter_applies() {
    let mut e = fakes();
    assert!(
        e.ocr_page(&page(200, 100, &[]), &opts())
            .unwrap()
            .lines
            .is_empty()
    );
    let img = page(400, 100, &[(40, 40, 360, 60)]);
    let strict = OcrOptions {
        min_confidence: 1.01,
        ..opts()
    };
    assert!(e.ocr_page(&img, &strict).unwrap().lines.is_empty());
}

#[test]
fn many_lines_span_several_recognition_batches() {
    let bars: Vec<_> = (0..15)
        .map(|i| (20, 20 + i * 30, 120 + i * 20, 36 + i * 30))
        .collect();
    let img = page(480, 480, &bars);
    for batch in [1, 4, 6, 32] {
        let o = OcrOptions {
            rec_batch: batch,
            ..opts()
        };
        let r = fakes().ocr_page(&img, &o).unwrap();
        assert_eq!(r.lines.len(), 15, "batch {batch}");
        let tops: Vec<f32> = r.lines.iter().map(|l| l.bbox[0][1]).collect();
        assert!(
            tops.windows(2).all(|w| w[0] < w[1]),
            "batch {batch}: {tops:?}"
        );
    }
}

#[test]
fn upside_down_lines_are_turned_and_words_map_back() {
    let img = page(400, 100, &[(40, 40, 360, 60)]);
    let mut upright = fakes();
    let mut flipped = engine(
        Box::new(FakeDetector),
        Box::new(FakeRecognizer { classes: 4 }),
        Some(Box::new(FakeClassifier {
            probs: [0.01, 0.99],
        })),
    );
    let o = OcrOptions {
        classify: true,
        ..opts()
    };
    let a = upright.ocr_page(&img, &o).unwrap();
    let b = flipped.ocr_page(&img, &o).unwrap();
    assert_eq!(a.lines[0].text, b.lines[0].text);
    // Upright, the word's first corner is its top-left on the page; turned, the reading frame's
    // top-left lies at the page's bottom-right.
    let (wa, wb) = (a.lines[0].words[0].bbox, b.lines[0].words[0].bbox);
    assert!(wa[0][1] < wa[2][1] && wa[0][0] < wa[2][0], "{wa:?}");
    assert!(wb[0][1] > wb[2][1] && wb[0][0] > wb[2][0], "{wb:?}");
    // The fake recogniser emits its one character at the first dark step of what it is shown:
    // upright that is the bar's left end (x = 40), turned it is the bar's right end (x = 360).
    let span = |q: [[f32; 2]; 4]| {
        (
            q.iter().map(|p| p[0]).fold(f32::MAX, f32::min),
            q.iter().map(|p| p[0]).fold(f32::MIN, f32::max),
        )
    };
    let (sa, sb) = (span(wa), span(wb));
    assert!((sa.0 - 40.0).abs() < 24.0 && sa.1 < 200.0, "{sa:?}");
    assert!((sb.1 - 360.0).abs() < 24.0 && sb.0 > 200.0, "{sb:?}");
}

#[test]
fn model_failures_are_errors_not_panics() {
    let img = page(400, 100, &[(40, 40, 360, 60)]);
    let cases: Vec<(&str, OcrEngine, &str)> = vec![
        (
            "detector fails",
            engine(
                Box::new(FailingModel { wrong_shape: false }),
                Box::new(FakeRecognizer { classes: 4 }),
                None,
            ),
            "runtime_error",
        ),
        (
            "detector shape",
            engine(
                Box::new(FailingModel { wrong_shape: true }),
                Box::new(FakeRecognizer { classes: 4 }),
                None,
            ),
            "model_output",
        ),
        (
            "recogniser fails",
            engine(
                Box::new(FakeDetector),
                Box::new(FailingModel { wrong_shape: false }),
                None,
            ),
            "runtime_error",
        ),
        (
            "recogniser shape",
            engine(
                Box::new(FakeDetector),
                Box::new(FailingModel { wrong_shape: true }),
                None,
            ),
            "model_output",
        ),
        (
            "charset mismatch",
            engine(
                Box::new(FakeDetector),
                Box::new(FakeRecognizer { classes: 9 }),
                None,
            ),
            "model_output",
        ),
    ];
    for (name, mut e, code) in cases {
        let err = e.ocr_page(&img, &opts()).expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
    }
}

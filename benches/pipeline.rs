//! Criterion benchmarks of the pure pipeline stages on a real dev page:
//! decode + resize + normalise (detector input), DB post-processing, CTC decoding.
//! The probability map and recogniser output are synthetic but shaped like the real ones, so
//! these measure our code, not the models. Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use ocr_server::pipeline::ctc::{Charset, ctc_greedy, word_spans};
use ocr_server::pipeline::db::{DbParams, boxes_from_prob_map};
use ocr_server::pipeline::decode::{DecodeLimits, decode_pages};
use ocr_server::pipeline::preprocess::{
    DetResize, LimitType, Normalize, det_input_size, det_tensor,
};

fn dev_page() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/dev/funsd_82573104.png");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A probability map with `rows` text lines of `words` words each, like a dense form.
fn prob_map(w: usize, h: usize, rows: usize, words: usize) -> Vec<f32> {
    let mut m = vec![0.01f32; w * h];
    for r in 0..rows {
        let y0 = 20 + r * (h - 40) / rows;
        for k in 0..words {
            let x0 = 20 + k * (w - 40) / words;
            for y in y0..y0 + 12 {
                for x in x0..x0 + (w - 40) / words - 15 {
                    m[y * w + x] = 0.9;
                }
            }
        }
    }
    m
}

fn benches(c: &mut Criterion) {
    let bytes = dev_page();
    let resize = DetResize {
        limit_type: LimitType::Min,
        limit_side_px: 736,
        max_side_px: 2048,
    };
    c.bench_function("decode_resize_normalise", |b| {
        b.iter(|| {
            let pages = decode_pages(black_box(&bytes), &DecodeLimits::default()).unwrap();
            let (w, h) = pages[0].dimensions();
            det_tensor(&pages[0], det_input_size(w, h, &resize), &Normalize::HALF)
        })
    });
    let (w, h) = (960, 1248);
    let map = prob_map(w, h, 60, 4);
    c.bench_function("db_postprocess_240_boxes", |b| {
        b.iter(|| boxes_from_prob_map(black_box(&map), w, h, 762, 1000, &DbParams::default()))
    });
    // One recognition batch of 6 lines at width 320: 40 steps × 18,710 classes (PP-OCRv6).
    let (steps, classes) = (40usize, 18_710usize);
    let mut out = vec![0.0f32; 6 * steps * classes];
    for (i, row) in out.chunks_mut(classes).enumerate() {
        row[(i * 7919) % classes] = 0.9;
    }
    let charset = Charset::from_dictionary(
        (0..classes - 2).map(|i| char::from_u32(0x4e00 + i as u32).unwrap().to_string()),
    );
    c.bench_function("ctc_decode_batch6_w320_v6", |b| {
        b.iter(|| {
            for k in 0..6 {
                let chars = ctc_greedy(
                    black_box(&out[k * steps * classes..(k + 1) * steps * classes]),
                    steps,
                    &charset,
                    1.0,
                );
                black_box(word_spans(&chars, &charset, 8.0, 320.0));
            }
        })
    });
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);

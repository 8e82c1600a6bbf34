//! DB (Differentiable Binarization) post-processing: from the detector's probability map to text
//! line quads in page coordinates, as PaddleOCR's `DBPostProcess` does it:
//! threshold → optional 2×2 dilation → connected regions → minimum-area rectangle →
//! mean probability inside the box ("fast" box score) → unclip (grow by area·ratio/perimeter) →
//! scale to the page → drop boxes of 3 px or less.
//!
//! Regions are found by 8-connected component labelling rather than contour tracing; the convex
//! hull of a region's row extremes equals the hull of its outer contour, which is all the
//! minimum-area rectangle needs.

use super::geometry::{
    Point, Quad, expand_rect, min_area_rect, order_quad, polygon_area, polygon_perimeter,
    quad_contains,
};

/// Parameters of DB post-processing. Defaults are RapidOCR's, which keep word spacing on
/// PP-OCR v4 (FACTS.md: box threshold 0.6 and no dilation merge words).
#[derive(Debug, Clone, PartialEq)]
pub struct DbParams {
    /// Pixel threshold on the probability map.
    pub thresh: f32,
    /// Minimum mean probability inside a box to keep it.
    pub box_thresh: f32,
    /// How far boxes are grown: distance = area · ratio / perimeter.
    pub unclip_ratio: f32,
    /// Dilate the binary map with a 2×2 kernel before finding regions.
    pub use_dilation: bool,
    /// At most this many regions are considered per page.
    pub max_candidates: usize,
    /// Boxes whose short side is below this (before unclip, in map pixels) are dropped.
    pub min_size: f32,
}

impl Default for DbParams {
    fn default() -> Self {
        Self {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.6,
            use_dilation: true,
            max_candidates: 1000,
            min_size: 3.0,
        }
    }
}

/// A detected text region in page coordinates, with its DB box score in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedBox {
    pub quad: Quad,
    pub score: f32,
}

/// Binary map of `prob > thresh`, optionally dilated by a 2×2 kernel anchored as OpenCV anchors
/// it (each foreground pixel also sets its right, lower and lower-right neighbours).
pub fn binarize(prob: &[f32], width: usize, height: usize, thresh: f32, dilate: bool) -> Vec<bool> {
    let raw: Vec<bool> = prob.iter().map(|&p| p > thresh).collect();
    if !dilate {
        return raw;
    }
    let mut out = vec![false; raw.len()];
    for y in 0..height {
        for x in 0..width {
            let at = |dx: usize, dy: usize| raw[(y - dy) * width + (x - dx)];
            out[y * width + x] = at(0, 0)
                || (x > 0 && at(1, 0))
                || (y > 0 && at(0, 1))
                || (x > 0 && y > 0 && at(1, 1));
        }
    }
    out
}

/// 8-connected regions of a binary map. Each region is returned as the centres of its left-most
/// and right-most pixel on every row it covers (enough for its convex hull). At most `max` regions.
pub fn region_extremes(mask: &[bool], width: usize, height: usize, max: usize) -> Vec<Vec<Point>> {
    let mut seen = vec![false; mask.len()];
    let mut regions = Vec::new();
    let mut stack = Vec::new();
    // Per-row (min x, max x) of the region being filled, keyed by row offset from its first row.
    let mut rows: Vec<(usize, usize, usize)> = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        if regions.len() >= max {
            break;
        }
        rows.clear();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            rows.push((y, x, x));
            let (x0, x1) = (x.saturating_sub(1), (x + 1).min(width - 1));
            let (y0, y1) = (y.saturating_sub(1), (y + 1).min(height - 1));
            for ny in y0..=y1 {
                for nx in x0..=x1 {
                    let j = ny * width + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        rows.sort_unstable();
        let mut pts = Vec::new();
        let mut k = 0;
        while k < rows.len() {
            let y = rows[k].0;
            let (mut lo, mut hi) = (rows[k].1, rows[k].2);
            while k < rows.len() && rows[k].0 == y {
                lo = lo.min(rows[k].1);
                hi = hi.max(rows[k].2);
                k += 1;
            }
            pts.push(Point::new(lo as f32, y as f32));
            if hi != lo {
                pts.push(Point::new(hi as f32, y as f32));
            }
        }
        regions.push(pts);
    }
    regions
}

/// Mean probability inside `quad` over the pixels of its bounding box (PaddleOCR's
/// `box_score_fast`: vertices truncated to integers, border pixels included).
pub fn box_score_fast(prob: &[f32], width: usize, height: usize, quad: &Quad) -> f32 {
    let clampi = |v: f32, hi: usize| (v as i64).clamp(0, hi as i64 - 1) as usize;
    let xmin = clampi(
        quad.iter().map(|p| p.x).fold(f32::MAX, f32::min).floor(),
        width,
    );
    let xmax = clampi(
        quad.iter().map(|p| p.x).fold(f32::MIN, f32::max).ceil(),
        width,
    );
    let ymin = clampi(
        quad.iter().map(|p| p.y).fold(f32::MAX, f32::min).floor(),
        height,
    );
    let ymax = clampi(
        quad.iter().map(|p| p.y).fold(f32::MIN, f32::max).ceil(),
        height,
    );
    let local: Quad =
        quad.map(|p| Point::new((p.x - xmin as f32).trunc(), (p.y - ymin as f32).trunc()));
    let (mut sum, mut n) = (0f64, 0usize);
    for y in ymin..=ymax {
        for x in xmin..=xmax {
            if quad_contains(&local, Point::new((x - xmin) as f32, (y - ymin) as f32)) {
                sum += prob[y * width + x] as f64;
                n += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// From a detector probability map (`width`×`height`, row-major, values in [0, 1]) to text boxes
/// in the coordinates of a `page_w`×`page_h` page (the map covers the whole page, resized).
/// Boxes are returned in region discovery order; reading order is decided later.
pub fn boxes_from_prob_map(
    prob: &[f32],
    width: usize,
    height: usize,
    page_w: u32,
    page_h: u32,
    params: &DbParams,
) -> Vec<DetectedBox> {
    assert_eq!(
        prob.len(),
        width * height,
        "probability map size does not match its shape. This is a bug."
    );
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let mask = binarize(prob, width, height, params.thresh, params.use_dilation);
    let (sx, sy) = (page_w as f32 / width as f32, page_h as f32 / height as f32);
    let mut out = Vec::new();
    for region in region_extremes(&mask, width, height, params.max_candidates) {
        let rect = min_area_rect(&region);
        if rect.width.min(rect.height) < params.min_size {
            continue;
        }
        let quad = order_quad(rect.corners);
        let score = box_score_fast(prob, width, height, &quad);
        if score < params.box_thresh {
            continue;
        }
        let perimeter = polygon_perimeter(&quad);
        let distance = polygon_area(&quad) * params.unclip_ratio / perimeter;
        let grown = order_quad(expand_rect(&quad, distance));
        if rect.width.min(rect.height) + 2.0 * distance < params.min_size + 2.0 {
            continue;
        }
        let scaled = grown.map(|p| {
            Point::new(
                (p.x * sx)
                    .round()
                    .clamp(0.0, page_w.saturating_sub(1) as f32),
                (p.y * sy)
                    .round()
                    .clamp(0.0, page_h.saturating_sub(1) as f32),
            )
        });
        if scaled[0].dist(scaled[1]).trunc() <= 3.0 || scaled[0].dist(scaled[3]).trunc() <= 3.0 {
            continue;
        }
        out.push(DetectedBox {
            quad: scaled,
            score,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with rectangles of probability `v` at (x0, y0, x1, y1) inclusive.
    fn map(w: usize, h: usize, rects: &[(usize, usize, usize, usize, f32)]) -> Vec<f32> {
        let mut m = vec![0.0; w * h];
        for &(x0, y0, x1, y1, v) in rects {
            for y in y0..=y1 {
                for x in x0..=x1 {
                    m[y * w + x] = v;
                }
            }
        }
        m
    }

    #[test]
    fn binarize_dilates_right_and_down() {
        let m = map(4, 3, &[(1, 1, 1, 1, 0.9)]);
        let plain = binarize(&m, 4, 3, 0.3, false);
        assert_eq!(plain.iter().filter(|&&b| b).count(), 1);
        let d = binarize(&m, 4, 3, 0.3, true);
        let on: Vec<usize> = (0..12).filter(|&i| d[i]).collect();
        assert_eq!(on, vec![5, 6, 9, 10]);
    }

    #[test]
    fn regions_are_eight_connected_and_capped() {
        // Two diagonal pixels form one region; a far pixel another.
        let mut mask = vec![false; 25];
        mask[0] = true;
        mask[6] = true;
        mask[24] = true;
        let r = region_extremes(&mask, 5, 5, 10);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], vec![Point::new(0., 0.), Point::new(1., 1.)]);
        assert_eq!(region_extremes(&mask, 5, 5, 1).len(), 1);
    }

    #[test]
    fn box_score_is_mean_inside_quad() {
        let m = map(10, 10, &[(2, 2, 5, 5, 1.0)]);
        let q = [
            Point::new(2., 2.),
            Point::new(5., 2.),
            Point::new(5., 5.),
            Point::new(2., 5.),
        ];
        assert!((box_score_fast(&m, 10, 10, &q) - 1.0).abs() < 1e-6);
        let q = [
            Point::new(0., 0.),
            Point::new(9., 0.),
            Point::new(9., 9.),
            Point::new(0., 9.),
        ];
        assert!((box_score_fast(&m, 10, 10, &q) - 0.16).abs() < 1e-6);
    }

    struct Case {
        name: &'static str,
        rects: Vec<(usize, usize, usize, usize, f32)>,
        params: DbParams,
        boxes: usize,
    }

    #[test]
    fn boxes_from_prob_map_table() {
        let cases = vec![
            Case {
                name: "one line",
                rects: vec![(10, 10, 50, 19, 0.9)],
                params: DbParams::default(),
                boxes: 1,
            },
            Case {
                name: "two lines",
                rects: vec![(10, 10, 50, 19, 0.9), (10, 40, 70, 49, 0.8)],
                params: DbParams::default(),
                boxes: 2,
            },
            Case {
                name: "low box score",
                rects: vec![(10, 10, 50, 19, 0.4)],
                params: DbParams::default(),
                boxes: 0,
            },
            Case {
                name: "below pixel threshold",
                rects: vec![(10, 10, 50, 19, 0.2)],
                params: DbParams::default(),
                boxes: 0,
            },
            Case {
                name: "too thin",
                rects: vec![(10, 10, 50, 11, 0.9)],
                params: DbParams {
                    use_dilation: false,
                    ..DbParams::default()
                },
                boxes: 0,
            },
            Case {
                name: "capped candidates",
                rects: vec![(10, 10, 50, 19, 0.9), (10, 40, 70, 49, 0.8)],
                params: DbParams {
                    max_candidates: 1,
                    ..DbParams::default()
                },
                boxes: 1,
            },
        ];
        for c in cases {
            let m = map(100, 60, &c.rects);
            let b = boxes_from_prob_map(&m, 100, 60, 200, 120, &c.params);
            assert_eq!(b.len(), c.boxes, "{}", c.name);
        }
    }

    #[test]
    fn boxes_are_unclipped_and_scaled_to_page() {
        let m = map(100, 60, &[(10, 10, 49, 19, 0.9)]);
        let params = DbParams {
            use_dilation: false,
            ..DbParams::default()
        };
        let b = boxes_from_prob_map(&m, 100, 60, 200, 120, &params);
        assert_eq!(b.len(), 1);
        let q = b[0].quad;
        // Region centres span x 10..49, y 10..19 (39×9); distance = 39·9·1.6/96 = 5.85 map px.
        // Page coordinates are twice the map's.
        let d = 39.0 * 9.0 * 1.6 / 96.0;
        assert_eq!(
            q[0],
            Point::new(((10.0 - d) * 2.0f32).round(), ((10.0 - d) * 2.0f32).round())
        );
        assert_eq!(
            q[2],
            Point::new(((49.0 + d) * 2.0f32).round(), ((19.0 + d) * 2.0f32).round())
        );
        assert!((b[0].score - 0.9).abs() < 1e-5);
    }
}

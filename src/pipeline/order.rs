//! Reading order of detected lines: rows top to bottom, left to right inside a row.
//!
//! PaddleOCR sorts by the top-left corner and swaps neighbours whose tops differ by under 10 px,
//! a fixed pixel tolerance that fails on large or small print. Here a box joins the current row
//! when its vertical centre lies within half a line height of the row's centre, the height being
//! the smaller of the box's and the row's, so the tolerance scales with the print.

use super::geometry::Quad;

#[derive(Debug, Clone, Copy)]
struct Extent {
    x0: f32,
    yc: f32,
    h: f32,
}

fn extent(q: &Quad) -> Extent {
    let (mut x0, mut y0, mut y1) = (f32::MAX, f32::MAX, f32::MIN);
    for p in q {
        x0 = x0.min(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    Extent { x0, yc: (y0 + y1) / 2.0, h: (y1 - y0).max(1.0) }
}

/// Indices of `quads` in reading order.
pub fn reading_order(quads: &[Quad]) -> Vec<usize> {
    let ext: Vec<Extent> = quads.iter().map(extent).collect();
    let mut by_y: Vec<usize> = (0..quads.len()).collect();
    by_y.sort_by(|&a, &b| ext[a].yc.total_cmp(&ext[b].yc).then(ext[a].x0.total_cmp(&ext[b].x0)));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // Running centre and height of the current row (means over its boxes).
    let (mut row_yc, mut row_h) = (0f32, 0f32);
    for i in by_y {
        let e = ext[i];
        let joins = rows.last().is_some() && (e.yc - row_yc).abs() < 0.5 * e.h.min(row_h);
        if joins {
            let row = rows.last_mut().expect("checked above. This is a bug.");
            let n = row.len() as f32;
            row_yc = (row_yc * n + e.yc) / (n + 1.0);
            row_h = (row_h * n + e.h) / (n + 1.0);
            row.push(i);
        } else {
            rows.push(vec![i]);
            row_yc = e.yc;
            row_h = e.h;
        }
    }
    for row in &mut rows {
        row.sort_by(|&a, &b| ext[a].x0.total_cmp(&ext[b].x0));
    }
    rows.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::geometry::Point;

    fn r(x0: f32, y0: f32, x1: f32, y1: f32) -> Quad {
        [Point::new(x0, y0), Point::new(x1, y0), Point::new(x1, y1), Point::new(x0, y1)]
    }

    #[test]
    fn reading_order_table() {
        let cases: Vec<(&str, Vec<Quad>, Vec<usize>)> = vec![
            ("empty", vec![], vec![]),
            ("two rows", vec![r(0., 50., 10., 60.), r(0., 0., 10., 10.)], vec![1, 0]),
            // Same row, the right box a little higher: still left to right.
            ("skewed row", vec![r(100., 12., 150., 32.), r(0., 10., 50., 30.)], vec![1, 0]),
            // Small print: 8 px lines 9 px apart are separate rows (a fixed 10 px rule merges them).
            ("tight rows", vec![r(50., 9., 90., 17.), r(0., 0., 40., 8.)], vec![1, 0]),
            (
                "form with columns",
                vec![r(300., 100., 400., 120.), r(0., 102., 100., 122.), r(0., 0., 100., 20.), r(300., 140., 400., 160.)],
                vec![2, 1, 0, 3],
            ),
        ];
        for (name, quads, want) in cases {
            assert_eq!(reading_order(&quads), want, "{name}");
        }
    }
}

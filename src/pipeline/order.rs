//! Reading order of detected lines.
//!
//! Recursive XY-cut with a conservative column rule, then rows:
//! 1. A region splits into columns at a vertical gutter (an x interval no box covers) only when
//!    both sides hold at least [`MIN_COLUMN_LINES`] lines and both sides look like prose: their
//!    median line is at least [`MIN_PROSE_ASPECT`] times as wide as it is high. Tables, forms and
//!    receipts (short values beside labels) therefore stay row-wise, as their readers expect,
//!    while newspaper and magazine columns are read one after the other.
//! 2. Otherwise the top-most band (lines up to the first horizontal gap) is peeled off and
//!    ordered from step 1 on its own, and the rest again from step 1, so a title spanning the
//!    columns does not prevent the columns above or below it from being found.
//! 3. Inside a band that splits no further: rows top to bottom, left to right inside a row. A box
//!    joins the current row when its vertical centre is within half a line height of the row's
//!    centre (the smaller of the two heights), so the tolerance scales with the print; PaddleOCR
//!    uses a fixed 10 px, which merges rows of small print and splits rows of large print.

use super::geometry::Quad;

/// Fewest lines on each side of a column gutter.
const MIN_COLUMN_LINES: usize = 3;
/// Median width/height of the lines on each side of a gutter: prose lines in a column are long
/// (a 40-character line at 48 px is ~15); table cells and amounts are short (2–4).
const MIN_PROSE_ASPECT: f32 = 6.0;

#[derive(Debug, Clone, Copy)]
struct Extent {
    x0: f32,
    x1: f32,
    y0: f32,
    y1: f32,
}

impl Extent {
    fn yc(&self) -> f32 {
        (self.y0 + self.y1) / 2.0
    }
    fn h(&self) -> f32 {
        (self.y1 - self.y0).max(1.0)
    }
    fn aspect(&self) -> f32 {
        (self.x1 - self.x0) / self.h()
    }
}

fn extent(q: &Quad) -> Extent {
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in q {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    Extent { x0, x1, y0, y1 }
}

/// Indices of `quads` in reading order.
pub fn reading_order(quads: &[Quad]) -> Vec<usize> {
    let ext: Vec<Extent> = quads.iter().map(extent).collect();
    let mut out = Vec::with_capacity(quads.len());
    order_region((0..quads.len()).collect(), &ext, &mut out);
    out
}

fn order_region(mut ids: Vec<usize>, ext: &[Extent], out: &mut Vec<usize>) {
    loop {
        if let Some((left, right)) = column_split(&ids, ext) {
            order_region(left, ext, out);
            order_region(right, ext, out);
            return;
        }
        match peel_top_band(&mut ids, ext) {
            // The band has no horizontal gap inside, but may still hold columns.
            Some(band) => order_region(band, ext, out),
            None => {
                out.extend(rows(ids, ext));
                return;
            }
        }
    }
}

fn is_prose_column(ids: &[usize], ext: &[Extent]) -> bool {
    if ids.len() < MIN_COLUMN_LINES {
        return false;
    }
    let mut aspects: Vec<f32> = ids.iter().map(|&i| ext[i].aspect()).collect();
    aspects.sort_by(f32::total_cmp);
    aspects[aspects.len() / 2] >= MIN_PROSE_ASPECT
}

/// The left-most gutter whose two sides are both prose columns, as (left ids, right ids).
fn column_split(ids: &[usize], ext: &[Extent]) -> Option<(Vec<usize>, Vec<usize>)> {
    if ids.len() < 2 * MIN_COLUMN_LINES {
        return None;
    }
    let mut by_x = ids.to_vec();
    by_x.sort_by(|&a, &b| ext[a].x0.total_cmp(&ext[b].x0));
    let mut reach = f32::MIN;
    for k in 0..by_x.len() {
        if k > 0 && ext[by_x[k]].x0 > reach {
            let (left, right) = by_x.split_at(k);
            if is_prose_column(left, ext) && is_prose_column(right, ext) {
                return Some((left.to_vec(), right.to_vec()));
            }
        }
        reach = reach.max(ext[by_x[k]].x1);
    }
    None
}

/// Removes and returns the lines above the first horizontal gap; `None` when there is no gap.
fn peel_top_band(ids: &mut Vec<usize>, ext: &[Extent]) -> Option<Vec<usize>> {
    ids.sort_by(|&a, &b| ext[a].y0.total_cmp(&ext[b].y0));
    let mut reach = f32::MIN;
    for k in 0..ids.len() {
        if k > 0 && ext[ids[k]].y0 > reach {
            let rest = ids.split_off(k);
            return Some(std::mem::replace(ids, rest));
        }
        reach = reach.max(ext[ids[k]].y1);
    }
    None
}

/// Rows top to bottom, left to right inside a row.
fn rows(mut ids: Vec<usize>, ext: &[Extent]) -> Vec<usize> {
    ids.sort_by(|&a, &b| {
        ext[a]
            .yc()
            .total_cmp(&ext[b].yc())
            .then(ext[a].x0.total_cmp(&ext[b].x0))
    });
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // Running centre and height of the current row (means over its boxes).
    let (mut row_yc, mut row_h) = (0f32, 0f32);
    for i in ids {
        let e = ext[i];
        match rows.last_mut() {
            Some(row) if (e.yc() - row_yc).abs() < 0.5 * e.h().min(row_h) => {
                let n = row.len() as f32;
                row_yc = (row_yc * n + e.yc()) / (n + 1.0);
                row_h = (row_h * n + e.h()) / (n + 1.0);
                row.push(i);
            }
            _ => {
                rows.push(vec![i]);
                row_yc = e.yc();
                row_h = e.h();
            }
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
        [
            Point::new(x0, y0),
            Point::new(x1, y0),
            Point::new(x1, y1),
            Point::new(x0, y1),
        ]
    }

    #[test]
    fn reading_order_table() {
        let cases: Vec<(&str, Vec<Quad>, Vec<usize>)> = vec![
            ("empty", vec![], vec![]),
            (
                "two rows",
                vec![r(0., 50., 10., 60.), r(0., 0., 10., 10.)],
                vec![1, 0],
            ),
            // Same row, the right box a little higher: still left to right.
            (
                "skewed row",
                vec![r(100., 12., 150., 32.), r(0., 10., 50., 30.)],
                vec![1, 0],
            ),
            // Small print: 8 px lines 9 px apart are separate rows (a fixed 10 px rule merges them).
            (
                "tight rows",
                vec![r(50., 9., 90., 17.), r(0., 0., 40., 8.)],
                vec![1, 0],
            ),
            (
                "form with columns",
                vec![
                    r(300., 100., 400., 120.),
                    r(0., 102., 100., 122.),
                    r(0., 0., 100., 20.),
                    r(300., 140., 400., 160.),
                ],
                vec![2, 1, 0, 3],
            ),
            (
                "two prose columns under a title",
                vec![
                    r(0., 0., 400., 20.),
                    r(0., 30., 180., 40.),
                    r(220., 30., 400., 40.),
                    r(0., 45., 180., 55.),
                    r(220., 45., 400., 55.),
                    r(0., 60., 180., 70.),
                    r(220., 60., 400., 70.),
                ],
                vec![0, 1, 3, 5, 2, 4, 6],
            ),
            (
                "receipt: labels and short amounts stay row-wise",
                vec![
                    r(0., 0., 200., 20.),
                    r(300., 0., 340., 20.),
                    r(0., 25., 200., 45.),
                    r(300., 25., 340., 45.),
                    r(0., 50., 200., 70.),
                    r(300., 50., 340., 70.),
                ],
                vec![0, 1, 2, 3, 4, 5],
            ),
        ];
        for (name, quads, want) in cases {
            assert_eq!(reading_order(&quads), want, "{name}");
        }
    }
}

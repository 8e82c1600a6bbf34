//! Rows: the lines of a page that stand at one height, left to right. A receipt prints a label
//! and its amount far apart ("TOTAL ........ 26.60"), and the detector finds them as two lines;
//! a row puts them back together.

use crate::pipeline::{Line, Page};

/// Lines at one height, left to right.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub lines: Vec<&'a Line>,
}

impl<'a> Row<'a> {
    /// The row's text: its lines joined by a space.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.trim())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Top and bottom of the row.
    pub fn span(&self) -> (f32, f32) {
        self.lines
            .iter()
            .map(|l| vspan(l))
            .fold((f32::MAX, f32::MIN), |(a, b), (t, u)| (a.min(t), b.max(u)))
    }

    pub fn height(&self) -> f32 {
        let (t, b) = self.span();
        b - t
    }
}

/// The vertical extent of a line's quad.
pub fn vspan(l: &Line) -> (f32, f32) {
    let ys = l.bbox.iter().map(|p| p[1]);
    let top = ys.clone().fold(f32::MAX, f32::min);
    (top, ys.fold(f32::MIN, f32::max))
}

/// The horizontal extent of a line's quad.
pub fn hspan(l: &Line) -> (f32, f32) {
    let xs = l.bbox.iter().map(|p| p[0]);
    let left = xs.clone().fold(f32::MAX, f32::min);
    (left, xs.fold(f32::MIN, f32::max))
}

/// Groups the page's lines into rows, top to bottom: a line joins the row above when their
/// vertical centres are within half the smaller height of each other (lines of one printed row
/// drift by a few pixels on a photographed receipt; lines of neighbouring rows are a whole
/// height apart).
pub fn rows(page: &Page) -> Vec<Row<'_>> {
    let mut lines: Vec<&Line> = page.lines.iter().collect();
    lines.sort_by(|a, b| {
        let (ca, cb) = (centre(a), centre(b));
        ca.total_cmp(&cb)
    });
    let mut out: Vec<Row<'_>> = Vec::new();
    for l in lines {
        let (t, b) = vspan(l);
        let h = b - t;
        let c = (t + b) / 2.0;
        let joins = out.last().is_some_and(|r| {
            let (rt, rb) = r.span();
            let rc = r.lines.iter().map(|x| centre(x)).sum::<f32>() / r.lines.len() as f32;
            (c - rc).abs() <= 0.5 * h.min(rb - rt)
        });
        if joins {
            out.last_mut()
                .expect("joins implies a last row. This is a bug.")
                .lines
                .push(l);
        } else {
            out.push(Row { lines: vec![l] });
        }
    }
    for r in &mut out {
        r.lines.sort_by(|a, b| hspan(a).0.total_cmp(&hspan(b).0));
    }
    out
}

fn centre(l: &Line) -> f32 {
    let (t, b) = vspan(l);
    (t + b) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::testing::page;

    #[test]
    fn a_label_and_its_amount_far_apart_make_one_row() {
        let p = page(&[
            ("26.60", 400.0, 102.0),
            ("TOTAL", 10.0, 100.0),
            ("CASH", 10.0, 130.0),
            ("30.00", 400.0, 128.0),
        ]);
        let r = rows(&p);
        let texts: Vec<String> = r.iter().map(Row::text).collect();
        assert_eq!(texts, ["TOTAL 26.60", "CASH 30.00"]);
    }
}

//! Key-value pairs of forms, by layout: a label is text that ends in `:` (or is followed by
//! one), and its value is the rest of its own line, else the next line to its right on the same
//! row, else the line just below it that starts within the label's width.

use super::rows::{hspan, rows, vspan};
use super::{Extraction, Field, Kind, Pair};
use crate::pipeline::{Line, Page};

/// Labels longer than this many characters are sentences, not labels.
const MAX_LABEL_CHARS: usize = 40;

/// The page's pairs in reading order.
pub fn extract(page: &Page, number: usize) -> Extraction {
    let rows = rows(page);
    let mut e = Extraction::new(Kind::Kv, number);
    let all: Vec<&Line> = rows.iter().flat_map(|r| r.lines.iter().copied()).collect();
    let mut used = vec![false; all.len()];
    for (ri, row) in rows.iter().enumerate() {
        for (li, line) in row.lines.iter().enumerate() {
            let idx = index_of(&all, line);
            if used[idx] {
                continue;
            }
            let Some(colon) = label_end(&line.text) else {
                continue;
            };
            let key = line.text[..colon].trim();
            // The colon may be the full-width `：` (three bytes).
            let after = line.text[colon..]
                .chars()
                .next()
                .map_or(colon + 1, |c| colon + c.len_utf8());
            let rest = line.text[after..].trim();
            let (value, vlines): (String, Vec<&Line>) = if !rest.is_empty() {
                (rest.to_string(), vec![*line])
            } else if let Some(next) = row
                .lines
                .get(li + 1)
                .filter(|n| label_end(&n.text).is_none())
            {
                used[index_of(&all, next)] = true;
                (next.text.trim().to_string(), vec![*next])
            } else if let Some(below) =
                below(&rows, ri, line).filter(|b| label_end(&b.text).is_none())
            {
                used[index_of(&all, below)] = true;
                (below.text.trim().to_string(), vec![below])
            } else {
                continue;
            };
            used[idx] = true;
            e.pairs.push(Pair {
                key: Field::from_lines(key, &[*line]),
                value: Field::from_lines(value, &vlines),
            });
        }
    }
    e
}

fn index_of(all: &[&Line], l: &Line) -> usize {
    all.iter()
        .position(|x| std::ptr::eq(*x, l))
        .expect("every row line is in the page. This is a bug.")
}

/// The byte index of the colon that ends a label at the start of `text`, if it has one.
fn label_end(text: &str) -> Option<usize> {
    let i = text.find([':', '：'])?;
    let key = text[..i].trim();
    let letters = key.chars().filter(|c| c.is_alphabetic()).count();
    // A time (10:22) or a ratio is not a label.
    let numeric_end = key.ends_with(|c: char| c.is_ascii_digit());
    (letters >= 2 && !numeric_end && key.chars().count() <= MAX_LABEL_CHARS).then_some(i)
}

/// The first line of the next row that starts under `label` (within its width).
fn below<'a>(rows: &[super::Row<'a>], ri: usize, label: &Line) -> Option<&'a Line> {
    let (l0, l1) = hspan(label);
    let (_, bottom) = vspan(label);
    let h = bottom - vspan(label).0;
    let next = rows.get(ri + 1)?;
    if next.span().0 - bottom > 1.5 * h {
        return None;
    }
    next.lines
        .iter()
        .find(|n| {
            let (n0, _) = hspan(n);
            n0 >= l0 - h && n0 <= l1
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::testing::page;

    #[test]
    fn values_beside_and_below_their_labels() {
        let p = page(&[
            ("Name: Jane Roe", 10.0, 10.0),
            ("Date:", 10.0, 50.0),
            ("12 March 1998", 200.0, 51.0),
            ("Address:", 10.0, 90.0),
            ("12 High Street", 10.0, 115.0),
            ("Opening at 10:30 daily", 10.0, 300.0),
            ("Città：Roma", 10.0, 340.0),
        ]);
        let e = extract(&p, 3);
        assert_eq!(e.page, 3);
        let pairs: Vec<(&str, &str)> = e
            .pairs
            .iter()
            .map(|p| (p.key.value.as_str(), p.value.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("Name", "Jane Roe"),
                ("Date", "12 March 1998"),
                ("Address", "12 High Street"),
                ("Città", "Roma")
            ]
        );
    }
}

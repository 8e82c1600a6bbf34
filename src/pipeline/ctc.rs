//! CTC decoding of recognition output, with character positions for word boxes.
//!
//! The recogniser emits `[N, T, C]` probabilities (already soft-maxed): T time steps across the
//! padded input width (one step per 8 px for PP-OCR), C classes = blank (index 0) + dictionary +
//! a trailing space. [`ctc_greedy`] scans each contiguous `[T, C]` block once as a flat slice
//! (slicing it per step with ndarray cost 15–40 ms per page on 18k classes): arg-max per step,
//! repeats collapsed, blanks dropped, plus the space rule, which also emits a space where the
//! space class peaked at `space_min` or more between two characters without winning a step
//! (never inside a number; `--rec-space-min`, `rec_space_min=`; 1 is plain greedy decoding).
//! [`word_spans`] splits the characters into words at spaces, each with its pixel extent in the
//! crop.

/// The class → text table of a recogniser. Index 0 is the CTC blank.
#[derive(Debug, Clone, PartialEq)]
pub struct Charset {
    symbols: Vec<String>,
    /// The space class (PaddleOCR's trailing `' '`), where the dictionary has one.
    space: Option<usize>,
    /// Classes that may be part of a number (`0-9 . ,`): no space is inserted inside a number
    /// ([`Charset::in_number`], [`ctc_greedy`]).
    numeric: Vec<bool>,
}

impl Charset {
    /// Builds the table from dictionary lines as PaddleOCR does: blank, the lines, then a space.
    pub fn from_dictionary<S: AsRef<str>>(lines: impl IntoIterator<Item = S>) -> Self {
        let mut symbols = vec![String::new()];
        symbols.extend(
            lines
                .into_iter()
                .map(|l| l.as_ref().trim_end_matches(['\r', '\n']).to_string()),
        );
        symbols.push(" ".to_string());
        let numeric = symbols
            .iter()
            .map(|s| matches!(s.as_bytes(), [b'0'..=b'9' | b'.' | b',']))
            .collect();
        Self {
            space: Some(symbols.len() - 1),
            symbols,
            numeric,
        }
    }

    /// Whether `next` continues a number that `before` ends: a digit after a digit or a
    /// separator (`.` `,`), or a separator after a digit. A separator after a letter (`Alam,`)
    /// ends a word, so `Alam, 40150` may get its space.
    fn in_number(&self, before: &[CtcChar], next: usize) -> bool {
        let digit = |c: usize| self.numeric[c] && self.symbols[c].as_bytes()[0].is_ascii_digit();
        match before {
            [.., a, b] if !digit(b.class) => digit(a.class) && digit(next) && self.numeric[b.class],
            [.., b] => digit(b.class) && self.numeric[next],
            [] => false,
        }
    }

    /// Number of classes including blank and space.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.len() <= 1
    }

    pub fn symbol(&self, class: usize) -> &str {
        self.symbols.get(class).map(String::as_str).unwrap_or("")
    }
}

/// One emitted character: its class, the time step where it peaked and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CtcChar {
    pub class: usize,
    pub step: usize,
    pub prob: f32,
    /// A space the arg-max did not emit, inserted by [`ctc_greedy`]'s space rule. It keeps its
    /// own (low) probability in [`char_confidences`], so a reviewer sees an uncertain gap, but
    /// it does not count in the line's mean ([`text_and_confidence`]): a line reads as
    /// confidently as plain greedy decoding read it, so the space rule never pushes a line
    /// under `min_confidence` or a job into review.
    pub inserted: bool,
}

/// Greedy CTC over one `[T, C]` row-major block (C = `charset.len()`): arg-max per step,
/// repeated classes collapsed, blanks dropped; then the space rule below.
///
/// **Spaces the arg-max misses.** Between two words on a tightly printed line (receipts, forms)
/// the recogniser often gives the space class real probability without it ever beating the
/// blank: `SANYU STATIONERY` decodes as `SANYUSTATIONERY` with the space class peaking at 0.25
/// between `U` and `S`, where inside a word it stays under 0.05 (NOTES.md, session 12). So a
/// space is also emitted between two characters when the space class peaked at `space_min` or
/// more at a blank step between them (a step whose arg-max is the blank: not the characters'
/// own steps, nor the repeated steps of the first), at that step and with that probability,
/// except between two characters of a number (`0-9 . ,`), where a space splits an amount
/// (`38 .00`). `space_min` ≥ 1 is pure greedy decoding.
pub fn ctc_greedy(probs: &[f32], steps: usize, charset: &Charset, space_min: f32) -> Vec<CtcChar> {
    let classes = charset.len();
    debug_assert_eq!(probs.len(), steps * classes);
    let space = charset.space.filter(|_| space_min < 1.0);
    let mut out: Vec<CtcChar> = Vec::new();
    let mut prev = usize::MAX;
    // The space class's peak on the blank steps since the last emitted character.
    let mut gap_space = CtcChar::default();
    for (t, row) in probs.chunks_exact(classes).take(steps).enumerate() {
        let (mut best, mut best_p) = (0usize, f32::MIN);
        for (c, &p) in row.iter().enumerate() {
            if p > best_p {
                best_p = p;
                best = c;
            }
        }
        if best == 0 {
            if let Some(sp) = space
                && row[sp] > gap_space.prob
            {
                gap_space = CtcChar {
                    class: sp,
                    step: t,
                    prob: row[sp],
                    inserted: true,
                };
            }
        } else if best != prev {
            if let (Some(sp), Some(last)) = (space, out.last())
                && best != sp
                && last.class != sp
                && gap_space.prob >= space_min
                && !charset.in_number(&out, best)
            {
                out.push(gap_space);
            }
            gap_space.prob = 0.0;
            out.push(CtcChar {
                class: best,
                step: t,
                prob: best_p,
                inserted: false,
            });
        }
        prev = best;
    }
    out
}

/// Text and mean probability of decoded characters (confidence 0 for an empty line, as
/// PaddleOCR); spaces the space rule inserted are in the text but not in the mean.
pub fn text_and_confidence(chars: &[CtcChar], charset: &Charset) -> (String, f32) {
    let text: String = chars.iter().map(|c| charset.symbol(c.class)).collect();
    let (sum, n) = chars
        .iter()
        .filter(|c| !c.inserted)
        .fold((0.0f32, 0usize), |(s, n), c| (s + c.prob, n + 1));
    let conf = if n == 0 { 0.0 } else { sum / n as f32 };
    (text, conf)
}

/// The probability of each character of the decoded text (a symbol of several characters
/// repeats its probability), rounded to three decimals.
pub fn char_confidences(chars: &[CtcChar], charset: &Charset) -> Vec<f32> {
    chars
        .iter()
        .flat_map(|c| {
            let p = (c.prob * 1000.0).round() / 1000.0;
            std::iter::repeat_n(p, charset.symbol(c.class).chars().count())
        })
        .collect()
}

/// A word as a span of the recognition input: text, confidence and horizontal extent in pixels
/// of the resized (unpadded) crop.
#[derive(Debug, Clone, PartialEq)]
pub struct WordSpan {
    pub text: String,
    pub confidence: f32,
    pub x0: f32,
    pub x1: f32,
}

/// Splits decoded characters into words at spaces and gives each word a pixel extent. A step
/// covers `step_px` pixels of the padded input; a word spans from half a step before its first
/// character's peak to one and a half steps after its last (CTC peaks sit early in a glyph),
/// clipped to the crop's resized width `content_px`.
pub fn word_spans(
    chars: &[CtcChar],
    charset: &Charset,
    step_px: f32,
    content_px: f32,
) -> Vec<WordSpan> {
    let mut words = Vec::new();
    let mut cur: Vec<&CtcChar> = Vec::new();
    let mut flush = |cur: &mut Vec<&CtcChar>| {
        if let (Some(first), Some(last)) = (cur.first(), cur.last()) {
            let text: String = cur.iter().map(|c| charset.symbol(c.class)).collect();
            let confidence = cur.iter().map(|c| c.prob).sum::<f32>() / cur.len() as f32;
            let x0 = ((first.step as f32 - 0.5) * step_px).clamp(0.0, content_px);
            let x1 = ((last.step as f32 + 1.5) * step_px).clamp(x0, content_px);
            words.push(WordSpan {
                text,
                confidence,
                x0,
                x1,
            });
        }
        cur.clear();
    };
    for c in chars {
        if charset.symbol(c.class).trim().is_empty() {
            flush(&mut cur);
        } else {
            cur.push(c);
        }
    }
    flush(&mut cur);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charset() -> Charset {
        Charset::from_dictionary(["a", "b", "c"]) // 0 blank, 1 a, 2 b, 3 c, 4 space
    }

    /// One-hot `[T, 5]` probabilities from a class per step.
    fn steps(classes: &[usize]) -> Vec<f32> {
        classes
            .iter()
            .flat_map(|&c| (0..5).map(move |k| if k == c { 0.9 } else { 0.025 }))
            .collect()
    }

    #[test]
    fn ctc_greedy_table() {
        let cs = charset();
        let cases: &[(&[usize], &str)] = &[
            (&[1, 1, 0, 1, 2], "aab"),
            (&[0, 0, 0], ""),
            (&[3, 3, 3], "c"),
            (&[1, 4, 2], "a b"),
            (&[2, 0, 2, 0, 2], "bbb"),
        ];
        for (seq, want) in cases {
            let chars = ctc_greedy(&steps(seq), seq.len(), &cs, 1.0);
            assert_eq!(text_and_confidence(&chars, &cs).0, *want, "{seq:?}");
        }
        let chars = ctc_greedy(&steps(&[1, 0, 2]), 3, &cs, 1.0);
        assert_eq!(chars.iter().map(|c| c.step).collect::<Vec<_>>(), vec![0, 2]);
        assert!((text_and_confidence(&chars, &cs).1 - 0.9).abs() < 1e-6);
        assert_eq!(text_and_confidence(&[], &cs), (String::new(), 0.0));
    }

    /// `[T, C]` rows from (class, probability) pairs: the rest of each row's mass on the blank.
    fn rows(cs: &Charset, seq: &[(usize, f32, f32)]) -> Vec<f32> {
        let sp = cs.len() - 1;
        seq.iter()
            .flat_map(|&(c, p, space)| {
                let mut row = vec![0.0; cs.len()];
                row[c] = p;
                row[sp] = space;
                row[0] += 1.0 - p - space;
                row
            })
            .collect()
    }

    #[test]
    fn a_space_the_blank_outvoted_is_kept_outside_numbers() {
        let cs = Charset::from_dictionary(["a", "b", "1", ".", ","]); // space = 6
        let text = |seq: &[(usize, f32, f32)], min: f32| {
            text_and_confidence(&ctc_greedy(&rows(&cs, seq), seq.len(), &cs, min), &cs).0
        };
        // a, a gap whose space class peaks at 0.3 under a blank of 0.7, then b.
        let gap = [(1, 0.9, 0.0), (0, 0.0, 0.1), (0, 0.0, 0.3), (2, 0.9, 0.0)];
        assert_eq!(text(&gap, 0.2), "a b");
        assert_eq!(text(&gap, 0.35), "ab", "under the threshold");
        assert_eq!(text(&gap, 1.0), "ab", "1 is plain greedy");
        let spaced = ctc_greedy(&rows(&cs, &gap), 4, &cs, 0.2);
        assert_eq!(
            (spaced[1].step, spaced[1].prob),
            (2, 0.3),
            "at the space's peak"
        );
        // The line reads as confidently as plain greedy: the inserted space is not in the mean,
        // but keeps its own probability per character.
        let conf = text_and_confidence(&spaced, &cs).1;
        assert!((conf - 0.9).abs() < 1e-6, "line confidence {conf}");
        assert_eq!(char_confidences(&spaced, &cs), vec![0.9, 0.3, 0.9]);
        // A peak on a character's own step, or on the repeated steps of a character, is not
        // between two characters.
        let own = [(1, 0.6, 0.3), (2, 0.9, 0.0)];
        assert_eq!(text(&own, 0.2), "ab");
        let repeated = [(1, 0.6, 0.3), (1, 0.6, 0.35), (2, 0.9, 0.0)];
        assert_eq!(text(&repeated, 0.2), "ab");
        // A higher space value on the next character's own step does not hide the gap's peak.
        let hidden = [(1, 0.9, 0.0), (0, 0.0, 0.25), (2, 0.6, 0.3)];
        assert_eq!(text(&hidden, 0.2), "a b");
        // Never inside a number (1.1, 1,1, 11); b, 1 and 1 a get theirs.
        let num = |a: usize, b: usize, c: usize| {
            [(a, 0.9, 0.0), (b, 0.9, 0.0), (0, 0.0, 0.4), (c, 0.9, 0.0)]
        };
        assert_eq!(text(&num(3, 4, 3), 0.2), "1.1");
        assert_eq!(text(&num(3, 5, 3), 0.2), "1,1");
        assert_eq!(text(&num(2, 5, 3), 0.2), "b, 1");
        assert_eq!(text(&num(1, 3, 3), 0.2), "a11", "two digits");
        assert_eq!(text(&num(2, 3, 1), 0.2), "b1 a");
        assert_eq!(text(&num(1, 3, 4), 0.2), "a1.", "a separator after a digit");
        // A space the arg-max emitted is not doubled.
        let real = [(1, 0.9, 0.0), (6, 0.6, 0.0), (0, 0.0, 0.3), (2, 0.9, 0.0)];
        assert_eq!(text(&real, 0.2), "a b");
    }

    #[test]
    fn charset_from_dictionary_adds_blank_and_space() {
        let cs = Charset::from_dictionary(["x\r", "y"]);
        assert_eq!(cs.len(), 4);
        assert_eq!(
            (cs.symbol(0), cs.symbol(1), cs.symbol(3), cs.symbol(99)),
            ("", "x", " ", "")
        );
    }

    #[test]
    fn word_spans_split_at_spaces_with_extents() {
        let cs = charset();
        // "ab c" with peaks at steps 1, 3, (space) 5, 8.
        let chars = [
            CtcChar {
                class: 1,
                step: 1,
                prob: 0.8,
                inserted: false,
            },
            CtcChar {
                class: 2,
                step: 3,
                prob: 1.0,
                inserted: false,
            },
            CtcChar {
                class: 4,
                step: 5,
                prob: 0.9,
                inserted: true,
            },
            CtcChar {
                class: 3,
                step: 8,
                prob: 0.7,
                inserted: false,
            },
        ];
        let w = word_spans(&chars, &cs, 8.0, 70.0);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].text.as_str(), w[0].x0, w[0].x1), ("ab", 4.0, 36.0));
        assert!((w[0].confidence - 0.9).abs() < 1e-6);
        assert_eq!((w[1].text.as_str(), w[1].x0, w[1].x1), ("c", 60.0, 70.0));
        assert!(word_spans(&[], &cs, 8.0, 10.0).is_empty());
    }
}

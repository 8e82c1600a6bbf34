//! The machine-readable zone of passports (TD3, 2 × 44), ID cards (TD1, 3 × 30; TD2, 2 × 36) and
//! visas, read from a page's OCR lines.
//!
//! Finding, parsing and check digits are the `mrz` crate's (ICAO 9303; MIT): it scans text for
//! lines of an MRZ's widths, repairs OCR's confusions of `<`, `0/O`, `1/I`, `5/S`, `8/B` at
//! fixed positions and keeps a repair only where the check digits then verify, and reports each
//! check digit's outcome. This module feeds it the page's lines (with OCR's spaces inside a line
//! removed: the recogniser often reads a run of `<` as spaced) and maps its record to fields,
//! with the boxes of the lines it came from.

use super::{Extraction, Field, Kind};
use crate::pipeline::{Line, Page};

/// Every MRZ line width (TD1, TD2/MRV-B, TD3/MRV-A).
const WIDTHS: [usize; 3] = [30, 36, 44];

/// The page's MRZ, if one is found (its checks may fail: see [`Extraction::valid`]).
pub fn extract(page: &Page, number: usize) -> Option<Extraction> {
    let candidates: Vec<(String, &Line)> = page
        .lines
        .iter()
        .map(|l| (zone_text(&l.text), l))
        .filter(|(t, _)| looks_like_zone(t))
        .collect();
    if candidates.len() < 2 {
        return None;
    }
    let text: String = candidates
        .iter()
        .map(|(t, _)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let doc = ::mrz::find_and_parse(&text).ok()?;
    // The page lines the record came from: those whose text is (nearly) one of its lines.
    let zone: Vec<&str> = doc.mrz_lines.lines().collect();
    let lines: Vec<&Line> = candidates
        .iter()
        .filter(|(t, _)| zone.iter().any(|z| near(t, z)))
        .map(|(_, l)| *l)
        .collect();
    let lines = if lines.is_empty() {
        candidates.iter().map(|(_, l)| *l).collect()
    } else {
        lines
    };
    Some(to_extraction(&doc, &lines, number))
}

/// A line's text as zone characters: upper case, spaces dropped, `«` (a run of `<` read as
/// one glyph) spread back to `<<`.
fn zone_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' | '\t' => {}
            '«' => out.push_str("<<"),
            '‹' | '〈' | '＜' | 'く' => out.push('<'),
            c => out.extend(c.to_uppercase()),
        }
    }
    out
}

/// Within three characters of an MRZ width, made of the zone's alphabet (A–Z, 0–9, `<`) but
/// for a few misreads, and holding a filler or digits (every zone line does; a sentence of
/// capitals does not).
fn looks_like_zone(t: &str) -> bool {
    let n = t.chars().count();
    if !WIDTHS.iter().any(|&w| n + 3 >= w && n <= w + 3) {
        return false;
    }
    let alien = t
        .chars()
        .filter(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '<'))
        .count();
    let digits = t.chars().filter(char::is_ascii_digit).count();
    alien * 10 <= n && (t.contains('<') || digits >= 4)
}

/// Whether two zone lines are the same but for a few characters (a repair, a lost filler).
fn near(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 3 {
        return false;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same * 10 >= b.len() * 8
}

fn to_extraction(doc: &::mrz::MrzData, lines: &[&Line], number: usize) -> Extraction {
    let mut e = Extraction::new(Kind::Mrz, number);
    let field = |v: String| Field::from_lines(v, lines);
    let c = &doc.checks;
    let checks = [
        ("document_number", c.document_number),
        ("date_of_birth", c.date_of_birth),
        ("date_of_expiry", c.date_of_expiry),
        ("personal_number", c.personal_number),
        ("composite", c.composite),
    ];
    let format = match doc.format {
        ::mrz::Format::Td1 => "TD1",
        ::mrz::Format::Td2 => "TD2",
        ::mrz::Format::Td3 => "TD3",
        ::mrz::Format::MrvA => "MRV-A",
        ::mrz::Format::MrvB => "MRV-B",
        _ => "other",
    };
    let check_of = |name: &str| {
        checks
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    };
    let mut put = |name: &str, value: String, normalized: Option<String>| {
        if value.is_empty() {
            return;
        }
        let mut f = field(value);
        f.normalized = normalized;
        f.valid = check_of(name);
        e.fields.insert(name.to_string(), f);
    };
    put("format", format.to_string(), None);
    put("document_type", doc.document_type.clone(), None);
    put("issuing_country", doc.issuing_country.clone(), None);
    put(
        "document_number",
        doc.full_document_number().to_string(),
        None,
    );
    put("surname", letters_only(&doc.surname), None);
    put("given_names", letters_only(&doc.given_names), None);
    put("nationality", doc.nationality.clone(), None);
    put(
        "date_of_birth",
        raw_date(&doc.mrz_lines, doc.format, true),
        Some(doc.date_of_birth.to_string()),
    );
    put("sex", doc.sex.to_string(), None);
    put(
        "date_of_expiry",
        raw_date(&doc.mrz_lines, doc.format, false),
        Some(doc.date_of_expiry.to_string()),
    );
    if let Some(p) = doc.personal_number() {
        put("personal_number", p.to_string(), None);
    } else if let Some(o) = &doc.optional_data_1 {
        put("optional_data", o.clone(), None);
    }
    put("mrz", doc.mrz_lines.clone(), None);
    for (name, v) in checks {
        if let Some(ok) = v {
            e.checks.insert(name.to_string(), ok);
            if !ok {
                e.problems.push(format!("{name}: check digit"));
            }
        }
    }
    e.valid = Some(doc.valid());
    e
}

/// A name field with OCR's digit-for-letter confusions mended. No check digit covers names, but
/// ICAO 9303 allows only A–Z in them, so a digit there can only be its lookalike letter
/// (`0→O`, `1→I`, `2→Z`, `5→S`, `6→G`, `8→B`); any other digit is left for review to see.
fn letters_only(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '0' => 'O',
            '1' => 'I',
            '2' => 'Z',
            '5' => 'S',
            '6' => 'G',
            '8' => 'B',
            c => c,
        })
        .collect()
}

/// The six digits of a date as printed in the zone (the record holds its ISO form).
fn raw_date(zone: &str, format: ::mrz::Format, birth: bool) -> String {
    let lines: Vec<&str> = zone.lines().collect();
    // ICAO 9303: TD1 line 2 starts with the birth date (0..6) and expiry (8..14); TD2, TD3 and
    // the visas hold them on line 2 at 13..19 and 21..27.
    let (line, start) = match (format, birth) {
        (::mrz::Format::Td1, true) => (1, 0),
        (::mrz::Format::Td1, false) => (1, 8),
        (_, true) => (1, 13),
        (_, false) => (1, 21),
    };
    lines
        .get(line)
        .and_then(|l| l.get(start..start + 6))
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::testing::page;

    // ICAO Doc 9303 Part 4's specimen passport (TD3) and Part 5's specimen ID card (TD1).
    const TD3: [&str; 2] = [
        "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
        "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
    ];
    const TD1: [&str; 3] = [
        "I<UTOD231458907<<<<<<<<<<<<<<<",
        "7408122F1204159UTO<<<<<<<<<<<6",
        "ERIKSSON<<ANNA<MARIA<<<<<<<<<<",
    ];

    fn zone_page(zone: &[&str]) -> Page {
        let mut lines = vec![("PASSPORT  PASSEPORT", 10.0, 10.0), ("Utopia", 10.0, 40.0)];
        for (i, z) in zone.iter().enumerate() {
            lines.push((z, 10.0, 400.0 + 30.0 * i as f32));
        }
        page(&lines)
    }

    #[test]
    fn icao_specimens_parse_with_every_check_verified() {
        let e = extract(&zone_page(&TD3), 1).expect("TD3 found");
        assert_eq!(e.fields["format"].value, "TD3");
        assert_eq!(e.fields["surname"].value, "ERIKSSON");
        assert_eq!(e.fields["given_names"].value, "ANNA MARIA");
        assert_eq!(e.fields["document_number"].value, "L898902C3");
        assert_eq!(e.fields["date_of_birth"].value, "740812");
        assert_eq!(
            e.fields["date_of_birth"].normalized.as_deref(),
            Some("1974-08-12")
        );
        assert_eq!(e.fields["date_of_birth"].valid, Some(true));
        assert_eq!(e.fields["date_of_expiry"].value, "120415");
        assert_eq!(e.fields["personal_number"].value, "ZE184226B");
        assert_eq!(e.checks.len(), 5);
        assert!(e.checks.values().all(|&v| v));
        assert_eq!(e.valid, Some(true));
        assert!(e.problems.is_empty());
        // The box is the zone's two lines, not the page's header.
        assert_eq!(e.fields["surname"].bbox.unwrap()[0][1], 400.0);

        let e = extract(&zone_page(&TD1), 1).expect("TD1 found");
        assert_eq!(e.fields["format"].value, "TD1");
        assert_eq!(e.fields["document_number"].value, "D23145890");
        assert_eq!(e.fields["surname"].value, "ERIKSSON");
        assert_eq!(e.checks.len(), 4, "TD1 has no personal-number check");
        assert_eq!(e.valid, Some(true));
    }

    #[test]
    fn one_wrong_check_digit_is_named_and_the_document_is_invalid() {
        // Date of birth 740812 → 750812 with its printed check digit kept.
        let bad = [TD3[0], "L898902C36UTO7508122F1204159ZE184226B<<<<<10"];
        let e = extract(&zone_page(&bad), 1).expect("found even when invalid");
        assert_eq!(e.valid, Some(false));
        assert!(!e.checks["date_of_birth"]);
        assert!(e.checks["document_number"]);
        assert_eq!(e.fields["date_of_birth"].valid, Some(false));
        assert!(
            e.problems
                .contains(&"date_of_birth: check digit".to_string()),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn ocr_confusions_are_repaired_only_where_a_check_digit_confirms() {
        // OCR read the document number's 0 as O and spaced the fillers: the check digit over
        // the number confirms the repair back to 0.
        let misread = [
            "P<UTOERIKSSON<<ANNA<MARIA<< <<<<<<<<<<<<<<<<<",
            "L8989O2C36UTO7408122F1204159ZE184226B<<<<<10",
        ];
        let e = extract(&zone_page(&misread), 1).expect("found");
        assert_eq!(e.fields["document_number"].value, "L898902C3");
        assert_eq!(e.valid, Some(true));
        // Names carry no check digit, but only letters: a zero in one is an O.
        let name = ["P<UTOERIKSS0N<<ANNA<MAR1A<<<<<<<<<<<<<<<<<<<", TD3[1]];
        let e = extract(&zone_page(&name), 1).expect("found");
        assert_eq!(e.fields["surname"].value, "ERIKSSON");
        assert_eq!(e.fields["given_names"].value, "ANNA MARIA");
        // An O where the check digit says a different digit belongs is not "repaired" into a
        // valid read: the checks fail and say where.
        let wrong = [TD3[0], "L898912C36UTO7408122F1204159ZE184226B<<<<<10"];
        let e = extract(&zone_page(&wrong), 1).expect("found");
        assert_eq!(e.valid, Some(false));
        assert!(!e.checks["document_number"]);
    }

    #[test]
    fn a_page_without_a_zone_has_no_mrz() {
        let p = page(&[("TOTAL 12.50", 10.0, 10.0), ("THANK YOU", 10.0, 40.0)]);
        assert!(extract(&p, 1).is_none());
    }

    #[test]
    fn zone_text_drops_spaces_and_spreads_guillemets() {
        assert_eq!(zone_text("p<uto eriks«<"), "P<UTOERIKS<<<");
        assert!(looks_like_zone(&zone_text(TD3[0])));
        assert!(!looks_like_zone("THIS IS A PERFECTLY ORDINARY SENTENCE OK"));
    }
}

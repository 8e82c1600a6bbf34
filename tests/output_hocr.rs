//! The hOCR writer on synthetic pages (no models): well-formed XHTML, titles parse, boxes nest,
//! text (and escaping) survives, confidences are clamped, empty words and lines are dropped.

mod common;

use common::pdf_tools::{line, out_dir};
use ocr_server::output::hocr::hocr;
use ocr_server::pipeline::{Line, Page, Word};

/// Parses an hOCR `title`: `bbox x0 y0 x1 y1; key value…` → (bbox, other properties).
fn parse_title(t: &str) -> ([u32; 4], Vec<(String, Vec<String>)>) {
    let mut bbox = None;
    let mut props = Vec::new();
    for part in t.split(';') {
        let mut it = part.split_whitespace();
        let key = it.next().expect("empty property").to_string();
        let vals: Vec<String> = it.map(String::from).collect();
        if key == "bbox" {
            assert_eq!(vals.len(), 4, "bbox {t:?}");
            let v: Vec<u32> = vals.iter().map(|x| x.parse().unwrap()).collect();
            assert!(v[0] <= v[2] && v[1] <= v[3], "inverted bbox {t:?}");
            bbox = Some([v[0], v[1], v[2], v[3]]);
        } else {
            props.push((key, vals));
        }
    }
    (bbox.unwrap_or_else(|| panic!("no bbox in {t:?}")), props)
}

fn inside(a: [u32; 4], b: [u32; 4]) -> bool {
    a[0] >= b[0] && a[1] >= b[1] && a[2] <= b[2] && a[3] <= b[3]
}

fn pages() -> Vec<Page> {
    let mut tilted = line([40.0, 300.0], 26.0, 10.0, 14.0, &["Rotated", "line"]);
    // A word poking slightly out of its line quad: the line box must still contain it.
    tilted.words[0].bbox[0][0] -= 5.0;
    let no_words = Line {
        text: "whole line <only>".into(),
        confidence: 0.5,
        bbox: [[10.0, 400.0], [200.0, 400.0], [200.0, 420.0], [10.0, 420.0]],
        words: vec![],
        char_confidences: vec![],
    };
    let mut with_empty = line([10.0, 480.0], 20.0, 0.0, 10.0, &["keep", "", "this"]);
    with_empty.words[2].confidence = 1.7; // out of range: clamped
    let off_page = Line {
        text: "edge".into(),
        confidence: f32::NAN,
        bbox: [[-5.0, 590.0], [60.0, 590.0], [60.0, 610.0], [-5.0, 610.0]],
        words: vec![Word {
            text: "edge".into(),
            confidence: f32::NAN,
            bbox: [[-5.0, 590.0], [60.0, 590.0], [60.0, 610.0], [-5.0, 610.0]],
        }],
        char_confidences: vec![],
    };
    vec![
        Page {
            width: 600,
            height: 600,
            lines: vec![
                line(
                    [40.0, 100.0],
                    28.0,
                    0.0,
                    15.0,
                    &["Hello", "<&>\"'", "日本語", "emoji😀"],
                ),
                tilted,
                no_words,
                with_empty,
                off_page,
                Line {
                    text: "  ".into(),
                    confidence: 0.1,
                    bbox: [[0.0; 2]; 4],
                    words: vec![],
                    char_confidences: vec![],
                },
            ],
            error: None,
        },
        Page {
            width: 100,
            height: 50,
            lines: vec![line([5.0, 40.0], 20.0, 0.0, 8.0, &["p2"])],
            error: None,
        },
    ]
}

#[test]
fn hocr_is_valid_and_consistent() {
    let pages = pages();
    let out = hocr(&pages, "scan <1> & \"two\"");
    std::fs::write(out_dir("hocr").join("out.hocr"), &out).unwrap();
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(&out, opt).expect("hOCR is not well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "html");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/1999/xhtml")
    );
    let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
    assert_eq!(title.text(), Some("scan <1> & \"two\""));
    let meta = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("meta") && n.attribute("name") == Some(name))
            .and_then(|n| n.attribute("content"))
            .map(String::from)
    };
    assert_eq!(
        meta("ocr-capabilities").as_deref(),
        Some("ocr_page ocr_line ocrx_word")
    );
    assert!(meta("ocr-system").is_some());

    let page_nodes: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("ocr_page"))
        .collect();
    assert_eq!(page_nodes.len(), 2);
    let mut all_words = Vec::new();
    for (pi, (pn, page)) in page_nodes.iter().zip(&pages).enumerate() {
        let (pb, props) = parse_title(pn.attribute("title").unwrap());
        assert_eq!(pb, [0, 0, page.width, page.height]);
        assert_eq!(props, vec![("ppageno".to_string(), vec![pi.to_string()])]);
        let lines: Vec<_> = pn
            .children()
            .filter(|n| n.attribute("class") == Some("ocr_line"))
            .collect();
        let mut words_on_page = Vec::new();
        for ln in &lines {
            let (lb, lprops) = parse_title(ln.attribute("title").unwrap());
            assert!(lprops.is_empty(), "unexpected line properties {lprops:?}");
            assert!(inside(lb, pb), "line {lb:?} outside page {pb:?}");
            let words: Vec<_> = ln
                .children()
                .filter(|n| n.attribute("class") == Some("ocrx_word"))
                .collect();
            assert!(!words.is_empty());
            let mut texts = Vec::new();
            for wn in words {
                let (wb, wprops) = parse_title(wn.attribute("title").unwrap());
                assert!(inside(wb, lb), "word {wb:?} outside line {lb:?}");
                assert_eq!(wprops.len(), 1);
                assert_eq!(wprops[0].0, "x_wconf");
                let c: u32 = wprops[0].1[0].parse().unwrap();
                assert!(c <= 100);
                let t = wn.text().unwrap().to_string();
                assert!(!t.is_empty());
                texts.push((t, c));
            }
            words_on_page.push(texts);
        }
        all_words.push(words_on_page);
    }
    let p1: Vec<Vec<&str>> = all_words[0]
        .iter()
        .map(|l| l.iter().map(|w| w.0.as_str()).collect())
        .collect();
    assert_eq!(
        p1,
        vec![
            vec!["Hello", "<&>\"'", "日本語", "emoji😀"],
            vec!["Rotated", "line"],
            vec!["whole line <only>"], // a line without words becomes one word
            vec!["keep", "this"],      // the empty word is skipped
            vec!["edge"],
        ]
    );
    assert_eq!(all_words[0][0][0].1, 90);
    assert_eq!(all_words[0][3][1].1, 100, "confidence clamped");
    assert_eq!(all_words[0][4][0].1, 0, "NaN confidence");
    assert_eq!(all_words[1], vec![vec![("p2".to_string(), 90)]]);
    // The text of each line, read as XHTML, is the words joined by spaces.
    let first_line = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("line_1_1"))
        .unwrap();
    let text: String = first_line
        .descendants()
        .filter(|n| n.is_text())
        .map(|n| n.text().unwrap())
        .collect();
    assert_eq!(text, "Hello <&>\"' 日本語 emoji😀");
    // ids are unique.
    let mut ids: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.attribute("id"))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
}

#[test]
fn hocr_parses_with_python_etree() {
    // A second, independent XML parser.
    let out = hocr(&pages(), "t");
    let path = out_dir("hocr_etree").join("out.hocr");
    std::fs::write(&path, &out).unwrap();
    let script = "import sys, xml.etree.ElementTree as ET\n\
        t = ET.parse(sys.argv[1])\n\
        ns = {'h': 'http://www.w3.org/1999/xhtml'}\n\
        print(len(t.findall('.//h:span[@class=\"ocrx_word\"]', ns)))";
    let o = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "11");
}

#[test]
fn hocr_empty_document() {
    let out = hocr(&[], "");
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(&out, opt).unwrap();
}

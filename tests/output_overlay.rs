//! Text layer on an existing PDF: new words land where the OCR'd rendering had them, the
//! original text and rendering are untouched, for /Rotate, CropBox offsets and inherited
//! resources.
//! No models needed; needs poppler-utils and qpdf.

mod common;

use common::pdf_tools::*;
use lopdf::{Document, Object};
use ocr_server::output::pdf::{PdfWriteError, add_text_layer};
use ocr_server::pipeline::Page;

/// Render scale of the simulated OCR (pixels per point).
const K: f64 = 2.0;

/// Visible box and rotation of a page, as a viewer shows it.
fn displayed_size(doc: &Document, page_no: u32) -> (f64, f64) {
    let id = doc.get_pages()[&page_no];
    let page = doc.get_dictionary(id).unwrap();
    let get = |key: &[u8]| -> Option<&Object> {
        let mut node = page;
        loop {
            if let Ok(v) = node.get(key) {
                return Some(v);
            }
            node = doc
                .get_dictionary(node.get(b"Parent").ok()?.as_reference().unwrap())
                .unwrap();
        }
    };
    let arr = |o: &Object| -> Vec<f64> {
        o.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_float().unwrap() as f64)
            .collect()
    };
    let b = get(b"CropBox")
        .or_else(|| get(b"MediaBox"))
        .map(arr)
        .unwrap();
    let (w, h) = ((b[2] - b[0]).abs(), (b[3] - b[1]).abs());
    let rot = get(b"Rotate").map(|r| r.as_i64().unwrap()).unwrap_or(0);
    if rot % 180 == 0 { (w, h) } else { (h, w) }
}

/// An OCR result for page `page_no` rendered at `K` px/pt: two words at fixed pixel boxes.
fn ocr_page(doc: &Document, page_no: u32) -> Page {
    let (w, h) = displayed_size(doc, page_no);
    let (pw, ph) = ((w * K).round() as u32, (h * K).round() as u32);
    let lines = vec![
        line([120.0, 90.0], 40.0, 0.0, 22.0, &["OVERLAYWORD", "x<&>\"'y"]),
        line([120.0, 150.0], 30.0, 0.0, 18.0, &["Zweite", "Zeile"]),
    ];
    Page {
        width: pw,
        height: ph,
        lines,
        error: None,
    }
}

fn words_on(pages: &[BoxPage], i: usize) -> Vec<(String, [i64; 4])> {
    let mut v: Vec<(String, [i64; 4])> = pages[i]
        .words
        .iter()
        .map(|w| (w.text.clone(), w.bbox.map(|x| (x * 10.0).round() as i64)))
        .collect();
    v.sort();
    v
}

/// Adds layers to `pages` (1-based) of `input`, and checks everything.
fn check_overlay(name: &str, input: &[u8], pages: &[u32]) {
    let dir = out_dir(name);
    let in_path = dir.join("in.pdf");
    std::fs::write(&in_path, input).unwrap();
    let doc = Document::load_mem(input).unwrap();
    let ocr: Vec<Page> = pages.iter().map(|&p| ocr_page(&doc, p)).collect();
    let layers: Vec<(usize, &Page)> = pages
        .iter()
        .zip(&ocr)
        .map(|(&p, o)| (p as usize - 1, o))
        .collect();
    let out = add_text_layer(input, &layers).unwrap();
    let out_path = dir.join("out.pdf");
    std::fs::write(&out_path, &out).unwrap();

    // An incremental update: the original bytes come first, unchanged.
    assert!(out.starts_with(input), "original bytes not preserved");
    qpdf_check(&out_path);

    let before = pdftotext_bbox(&in_path, &["-cropbox"]);
    let after = pdftotext_bbox(&out_path, &["-cropbox"]);
    assert_eq!(before.len(), after.len());
    let n_pages = before.len();
    for i in 0..n_pages {
        let old = words_on(&before, i);
        let new = words_on(&after, i);
        let ocr_for = pages.iter().position(|&p| p as usize == i + 1);
        // Every original word is still there, at the same place.
        let mut rest = new.clone();
        for w in &old {
            let at = rest
                .iter()
                .position(|x| x == w)
                .unwrap_or_else(|| panic!("page {i}: original word {w:?} lost"));
            rest.remove(at);
        }
        match ocr_for {
            None => assert!(rest.is_empty(), "page {i}: unexpected words {rest:?}"),
            Some(k) => {
                let page = &ocr[k];
                let (dw, dh) = displayed_size(&doc, i as u32 + 1);
                let (sx, sy) = (dw / page.width as f64, dh / page.height as f64);
                let n: usize = page.lines.iter().map(|l| l.words.len()).sum();
                assert_eq!(rest.len(), n, "page {i}: new words {rest:?}");
                for l in &page.lines {
                    for w in &l.words {
                        let b = bounds(&w.bbox);
                        let want = [
                            b[0] as f64 * sx,
                            b[1] as f64 * sy,
                            b[2] as f64 * sx,
                            b[3] as f64 * sy,
                        ];
                        assert_word_at(&after[i], &w.text, want.map(|v| v as f32), 1.0);
                    }
                }
                // Plain text has the new words. (Where they sit relative to the
                // page's own text in poppler's reading order is poppler's call: the synthetic
                // words overlap or abut the original text on cropped/rotated pages.)
                let plain = pdftotext_plain(&out_path, i as u32 + 1);
                // On the cropped page poppler glues "Zeile" to an original word it abuts
                // ("Really?Zeile"), so look for substrings, not tokens.
                for l in &page.lines {
                    for w in &l.words {
                        assert!(
                            plain.contains(w.text.as_str()),
                            "page {i}: {:?} not in {plain}",
                            w.text
                        );
                    }
                }
            }
        }
        // Pixels unchanged.
        let a = render(&in_path, i as u32 + 1, 60.0, false).to_rgb8();
        let b = render(&out_path, i as u32 + 1, 60.0, false).to_rgb8();
        assert!(a == b, "page {i}: rendering changed");
    }
}

fn modified(f: impl Fn(&mut Document)) -> Vec<u8> {
    let mut doc = Document::load(latex_pdf()).unwrap();
    f(&mut doc);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn page_dict(doc: &mut Document, page_no: u32) -> &mut lopdf::Dictionary {
    let id = doc.get_pages()[&page_no];
    doc.get_dictionary_mut(id).unwrap()
}

#[test]
fn overlay_plain() {
    let input = std::fs::read(latex_pdf()).unwrap();
    check_overlay("overlay_plain", &input, &[1, 3]);
}

#[test]
fn overlay_rotations() {
    let input = modified(|doc| {
        page_dict(doc, 1).set("Rotate", 90);
        page_dict(doc, 2).set("Rotate", 180);
        page_dict(doc, 3).set("Rotate", 270);
    });
    check_overlay("overlay_rotations", &input, &[1, 2, 3, 4]);
}

#[test]
fn overlay_cropbox_offset() {
    let input = modified(|doc| {
        page_dict(doc, 1).set(
            "CropBox",
            vec![60.into(), 110.into(), 480.into(), 700.into()],
        );
        // Crop box and rotation together.
        let p2 = page_dict(doc, 2);
        p2.set(
            "CropBox",
            vec![40.into(), 200.into(), 500.into(), 760.into()],
        );
        p2.set("Rotate", 90);
    });
    check_overlay("overlay_cropbox_offset", &input, &[1, 2]);
}

#[test]
fn overlay_inherited_resources_and_attributes() {
    // Page 1's /Resources, /MediaBox and /Rotate move to the root /Pages node.
    let input = modified(|doc| {
        let p1 = page_dict(doc, 1);
        let res = p1.remove(b"Resources").unwrap();
        let mb = p1.remove(b"MediaBox").unwrap();
        let root_id = p1.get(b"Parent").unwrap().as_reference().unwrap();
        for no in 2..=4 {
            // Keep the other pages self-contained.
            let p = page_dict(doc, no);
            if !p.has(b"MediaBox") {
                p.set("MediaBox", mb.clone());
            }
            p.set("Rotate", 0);
        }
        let root = doc.get_dictionary_mut(root_id).unwrap();
        root.set("Resources", res);
        root.set("MediaBox", mb);
        root.set("Rotate", 90);
    });
    let doc = Document::load_mem(&input).unwrap();
    let p1 = doc.get_dictionary(doc.get_pages()[&1]).unwrap();
    assert!(!p1.has(b"Resources") && !p1.has(b"Rotate"));
    check_overlay(
        "overlay_inherited_resources_and_attributes",
        &input,
        &[1, 2],
    );
}

#[test]
fn overlay_twice_and_errors() {
    // A second layer on an already-layered PDF keeps both, with distinct font names.
    let input = std::fs::read(latex_pdf()).unwrap();
    let doc = Document::load_mem(&input).unwrap();
    let p = ocr_page(&doc, 1);
    let once = add_text_layer(&input, &[(0, &p)]).unwrap();
    let mut p2 = p.clone();
    p2.lines.truncate(1);
    for w in &mut p2.lines[0].words {
        w.text = format!("{}2", w.text);
        for pt in &mut w.bbox {
            pt[1] += 600.0;
        }
    }
    let twice = add_text_layer(&once, &[(0, &p2)]).unwrap();
    let dir = out_dir("overlay_twice");
    let path = dir.join("twice.pdf");
    std::fs::write(&path, &twice).unwrap();
    qpdf_check(&path);
    let words = &pdftotext_bbox(&path, &[])[0].words;
    for t in ["OVERLAYWORD", "OVERLAYWORD2", "Zweite", "x<&>\"'y2"] {
        assert!(words.iter().any(|w| w.text == t), "{t} missing");
    }
    let d = Document::load_mem(&twice).unwrap();
    let fonts = d.get_page_fonts(d.get_pages()[&1]).unwrap();
    assert!(
        fonts.contains_key(b"OCRGlyphLess".as_slice())
            && fonts.contains_key(b"OCRGlyphLess1".as_slice())
    );

    // Page index out of range.
    assert!(add_text_layer(&input, &[(4, &p)]).is_err());
    // Not a PDF.
    assert!(add_text_layer(b"hello", &[(0, &p)]).is_err());
}

/// A hand-made PDF with awkward structure: page 1's content leaves a scaled CTM, a clip and
/// text render state in effect (unbalanced), in a /Contents array of two streams; pages 1 and
/// 2 share one indirect /Resources whose /Font is itself indirect; page 2 has no /Contents.
fn awkward_pdf() -> Vec<u8> {
    use lopdf::{Stream, dictionary};
    let mut doc = Document::with_version("1.4");
    let pages_id = doc.new_object_id();
    let helv = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let fonts = doc.add_object(dictionary! { "F1" => helv });
    let res = doc.add_object(dictionary! { "Font" => fonts });
    let c1 = doc.add_object(Stream::new(
        dictionary! {},
        b"0.5 0 0 0.5 0 0 cm 0 0 400 400 re W n\n".to_vec(),
    ));
    let c2 = doc.add_object(Stream::new(dictionary! {}, b"BT 7 Tr /F1 24 Tf 40 700 Td (Leaky) Tj ET 0 Tr\nBT /F1 24 Tf 40 600 Td 2 Tz (Squeezed) Tj ET".to_vec()));
    let p1 = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Resources" => res, "Contents" => vec![c1.into(), c2.into()],
    });
    let p2 =
        doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Resources" => res });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![p1.into(), p2.into()], "Count" => 2,
            "MediaBox" => vec![0.into(), 0.into(), 300.into(), 400.into()],
        }),
    );
    let cat = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", cat);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

#[test]
fn overlay_awkward_structure() {
    let input = awkward_pdf();
    // The original's own text is there before we start.
    let dir = out_dir("overlay_awkward_probe");
    std::fs::write(dir.join("in.pdf"), &input).unwrap();
    assert!(pdftotext_plain(&dir.join("in.pdf"), 1).contains("Leaky"));
    check_overlay("overlay_awkward_structure", &input, &[1, 2]);
    // The shared resources object itself was not modified (pages got their own copies).
    let out = add_text_layer(
        &input,
        &[(0, &ocr_page(&Document::load_mem(&input).unwrap(), 1))],
    )
    .unwrap();
    let d = Document::load_mem(&out).unwrap();
    let fonts2 = d.get_page_fonts(d.get_pages()[&2]).unwrap();
    assert_eq!(fonts2.len(), 1, "page 2 fonts changed: {:?}", fonts2.keys());
    let fonts1 = d.get_page_fonts(d.get_pages()[&1]).unwrap();
    assert_eq!(fonts1.len(), 2);
}

#[test]
fn overlay_encrypted_is_refused() {
    // Owner-password-only AES-256 (opens without a password): refused, not silently broken.
    let dir = out_dir("overlay_encrypted");
    let enc = dir.join("enc.pdf");
    run(
        "qpdf",
        &[
            "--encrypt",
            "",
            "owner",
            "256",
            "--",
            latex_pdf().to_str().unwrap(),
            enc.to_str().unwrap(),
        ],
    );
    let input = std::fs::read(&enc).unwrap();
    let p = Page {
        width: 100,
        height: 100,
        lines: vec![],
        error: None,
    };
    let r = add_text_layer(&input, &[(0, &p)]);
    assert!(
        matches!(r, Err(PdfWriteError::Encrypted)),
        "{:?}",
        r.map(|v| v.len())
    );
}

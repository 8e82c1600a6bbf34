//! Entry points for the cargo-fuzz targets under `fuzz/` (`scripts/fuzz.sh`): one function per
//! target, each taking the fuzzer's raw bytes and driving one of the parsers that hostile input
//! reaches (image decoding, documents, request bodies, the `Prefer` header, page selections,
//! options). Not an API: hidden from the docs, and only the fuzz targets call it.
//!
//! Each function returns normally for every input, errors included: a panic is a bug. Where a
//! result has a property the rest of the server relies on (a decoded page within the limits, a
//! page selection sorted and in range, a hostile input answered with a 4xx), it is asserted, so
//! breaking it is a crash too.
//!
//! Panics are run through [`guard`]. The crate catches panics of the PDF library on purpose
//! (`document::pdf` turns them into errors); libFuzzer's own hook would abort on those too, so
//! the hook here only records a panic: one caught inside the crate is reported once per
//! location on stderr (`fuzz: panic caught inside the crate ...`) and fuzzing goes on, unless
//! `FUZZ_CAUGHT_PANICS=abort` is set; one that reaches [`guard`] prints its message, location and
//! backtrace and aborts, which libFuzzer records as a crash with the input saved.

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::api::RequestOptions;
use crate::api::jobs::JobRequestOptions;
use crate::document::{Document, MAX_DOCUMENT_PAGES, select_pages};
use crate::engine::{ModelKind, OcrOptions};
use crate::error::Error;
use crate::jobs::model::JobOptions;
use crate::memory::MemoryBudget;
use crate::overrides::Overrides;
use crate::pipeline::decode::{DecodeLimits, check_header, decode_pages, sniff_format};

/// Limits small enough that one input costs bounded time and memory (a 4-megapixel page, PDF
/// pages at 50 dpi, 16 MiB of decoded streams per PDF page, 8 pages).
pub fn limits() -> &'static DecodeLimits {
    static LIMITS: OnceLock<DecodeLimits> = OnceLock::new();
    LIMITS.get_or_init(|| DecodeLimits {
        max_side_px: 4096,
        max_pixels: 4_000_000,
        max_pages: 8,
        pdf_dpi: 50.0,
        max_decompressed_bytes_per_page: 16 << 20,
        // Never waits: the fuzzer runs one input at a time and releases every reservation.
        memory: MemoryBudget::new(1 << 30, Duration::ZERO),
    })
}

/// Image bytes: format sniffing, the header check, and decoding every page.
pub fn image_decode(data: &[u8]) {
    guard(|| {
        let limits = limits();
        if let Some(format) = sniff_format(data)
            && let Err(e) = check_header(data, format, limits)
        {
            client_error("check_header", &e);
        }
        match decode_pages(data, limits) {
            Ok(pages) => {
                assert!(
                    pages.len() <= limits.max_pages,
                    "decode_pages gave {} pages, over max_pages {}",
                    pages.len(),
                    limits.max_pages
                );
                for p in &pages {
                    within_limits("decode_pages", p.width(), p.height(), limits);
                }
            }
            Err(e) => client_error("decode_pages", &e),
        }
    })
}

/// Document bytes (PDF, TIFF or image), as the server handles them: open, page count, the
/// memory reservation of the first and last pages, then those pages decoded or rendered.
pub fn document(data: &[u8]) {
    guard(|| {
        let limits = limits();
        let doc = match Document::open(Arc::new(data.to_vec()), limits) {
            Ok(doc) => doc,
            Err(e) => return client_error("Document::open", &e),
        };
        let count = doc.page_count();
        assert!(
            (1..=MAX_DOCUMENT_PAGES).contains(&count),
            "an open document has {count} pages"
        );
        let pdf = (doc.kind() == crate::document::Kind::Pdf)
            .then(|| crate::document::pdf::PdfSource::open(Arc::new(data.to_vec())).ok())
            .flatten();
        let mut pages = vec![0];
        if count > 1 {
            pages.push(count - 1);
        }
        let (checks, reservation) = match doc.reserve(&pages) {
            Ok(r) => r,
            Err(e) => return client_error("Document::reserve", &e),
        };
        assert_eq!(checks.len(), pages.len(), "one cost check per page");
        for (&i, check) in pages.iter().zip(checks) {
            if let Err(e) = check {
                client_error("Document::page_cost", &e);
                continue;
            }
            let _ = doc.page_dpi(i);
            match doc.page(i) {
                Ok(img) => {
                    within_limits("Document::page", img.width(), img.height(), limits);
                    let rgb = img.width() as u64 * img.height() as u64 * 3;
                    let cost = doc.page_cost(i).expect("page_cost succeeded a moment ago");
                    assert!(
                        cost >= rgb,
                        "page {i}: page_cost {cost} B is under the {rgb} B of its RGB page"
                    );
                    // The page's own text, once its cost check passed (the same streams).
                    if let Some(pdf) = &pdf {
                        text_layer(pdf, i, img.width(), img.height());
                    }
                }
                Err(e) => client_error("Document::page", &e),
            }
        }
        drop(reservation);
        assert_eq!(limits.memory.used(), 0, "the reservation was released");
        if let Err(e) = doc.page(count) {
            client_error("Document::page past the end", &e);
        } else {
            panic!("page {count} of a {count}-page document decoded");
        }
    })
}

/// Boundary of the multipart bodies that [`body`] builds when its first byte asks for one.
pub const MULTIPART_BOUNDARY: &str = "fuzzboundary";

/// A request body and its content type, through the `/v1/ocr` body parser (raw image, JSON with
/// base64 `image`, multipart with a `file` part), then the options it carried applied. The first
/// byte chooses the content type: `b'r'` raw `image/png`, `b'j'` `application/json`, `b'm'`
/// multipart with boundary [`MULTIPART_BOUNDARY`]; any other byte means the content type is the
/// rest of the input up to the first `\n` (the body follows it).
pub fn body(data: &[u8]) {
    guard(|| {
        let Some((&first, rest)) = data.split_first() else {
            return;
        };
        let (ctype, bytes): (Vec<u8>, &[u8]) = match first {
            b'r' => (b"image/png".to_vec(), rest),
            b'j' => (b"application/json".to_vec(), rest),
            b'm' => (
                format!("multipart/form-data; boundary={MULTIPART_BOUNDARY}").into_bytes(),
                rest,
            ),
            _ => match data.iter().position(|&b| b == b'\n') {
                Some(n) => (data[..n].to_vec(), &data[n + 1..]),
                None => (data.to_vec(), &[][..]),
            },
        };
        let Ok(value) = HeaderValue::from_bytes(&ctype) else {
            return;
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, value);
        let body = bytes::Bytes::copy_from_slice(bytes);
        let split = runtime().block_on(crate::api::body::parse_ocr(&headers, body.clone()));
        match split {
            Ok((_image, opts)) => overrides(&opts.overrides),
            Err(e) => client_error("body::parse_ocr", &e),
        }
        let split = runtime().block_on(crate::api::body::parse_job(&headers, body));
        match split {
            Ok((_docs, opts)) => job(&opts),
            Err(e) => client_error("body::parse_job", &e),
        }
    })
}

/// A PDF page's text layer, at the dpi the page was just rendered at: no panic, every line has
/// words, and every box is finite and inside the rendered page.
fn text_layer(pdf: &crate::document::pdf::PdfSource, index: usize, width: u32, height: u32) {
    let dpi = match pdf.page_size_pt(index) {
        Ok((w, _)) if w > 0.0 => width as f32 / w * 72.0,
        _ => return,
    };
    let Ok(layer) = pdf.text_layer(index, dpi) else {
        return;
    };
    // The text layer's page is the render size at `dpi` (ceil'd): at most a pixel over.
    let (w, h) = (width as f32 + 1.0, height as f32 + 1.0);
    for line in &layer.lines {
        assert!(!line.words.is_empty(), "a text-layer line without words");
        for word in &line.words {
            for [x, y] in word.bbox {
                assert!(
                    x.is_finite()
                        && y.is_finite()
                        && (0.0..=w).contains(&x)
                        && (0.0..=h).contains(&y),
                    "a word box {:?} outside the {width}x{height} page",
                    word.bbox
                );
            }
        }
    }
}

/// `Prefer` header values, one per line of the input.
pub fn prefer(data: &[u8]) {
    guard(|| {
        let mut headers = HeaderMap::new();
        for line in data.split(|&b| b == b'\n') {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                headers.append("prefer", v);
            }
        }
        let _ = crate::api::jobs::parse_prefer(&headers);
    })
}

/// A page selection against a document: bytes 0–2 are the page count (little-endian, modulo
/// [`MAX_DOCUMENT_PAGES`] + 1), bytes 3–4 `max_pages` (little-endian; `0xffff` is
/// `usize::MAX`, as the job store passes), the rest the selection (`1-3,7`, `5-`).
pub fn pages(data: &[u8]) {
    guard(|| {
        if data.len() < 5 {
            return;
        }
        let count =
            u32::from_le_bytes([data[0], data[1], data[2], 0]) as usize % (MAX_DOCUMENT_PAGES + 1);
        let max_pages = match u16::from_le_bytes([data[3], data[4]]) {
            u16::MAX => usize::MAX,
            n => n as usize,
        };
        let spec = String::from_utf8_lossy(&data[5..]);
        check_selection(Some(&spec), count, max_pages);
    })
}

/// A query string of options, parsed as `/v1/ocr` and `/v1/jobs` parse theirs (strictly,
/// unknown names refused, through the routes' own parser), then validated and applied to each
/// model set's defaults by the functions the routes call, and made into a job's stored options
/// as `POST /v1/jobs` makes them.
pub fn options(data: &[u8]) {
    guard(|| {
        let query = String::from_utf8_lossy(data);
        if let Ok(o) = serde_urlencoded::from_str::<Overrides>(&query) {
            overrides(&o);
        }
        match RequestOptions::from_query(&query) {
            Ok(opts) => overrides(&opts.overrides),
            Err(e) => client_error("RequestOptions::from_query", &e),
        }
        match JobRequestOptions::from_query(&query) {
            Ok(opts) => job(&opts),
            Err(e) => client_error("JobRequestOptions::from_query", &e),
        }
    })
}

/// What `/v1/ocr` does with its options: validates them against each model set and applies
/// them, and parses the page selection against a 10-page document.
fn overrides(o: &Overrides) {
    for kind in ModelKind::ALL {
        let base = OcrOptions::for_model(kind);
        match o.checked(kind, &base) {
            Ok(applied) => {
                if let Some(side) = o.det_limit_side {
                    assert_eq!(
                        applied.det_resize.limit_side_px, side,
                        "det_limit_side applied"
                    );
                    assert!(
                        (32..=4096).contains(&side),
                        "det_limit_side {side} accepted"
                    );
                }
                assert!(
                    (0.0..=1.0).contains(&applied.min_confidence),
                    "min_confidence {} accepted",
                    applied.min_confidence
                );
                assert!(
                    applied.rec_space_min > 0.0 && applied.rec_space_min <= 1.0,
                    "rec_space_min {} accepted",
                    applied.rec_space_min
                );
                assert!(applied.validate().is_ok(), "{o:?} made invalid options");
            }
            Err(e) => client_error("Overrides::checked", &e),
        }
    }
    check_selection(o.pages.as_deref(), 10, 200);
}

/// What `/v1/jobs` does with its options: the job's stored options made as `POST /v1/jobs`
/// makes them, stored and read back, then applied to the defaults as the runner applies them.
fn job(opts: &JobRequestOptions) {
    overrides(&opts.overrides);
    for kind in ModelKind::ALL {
        match crate::ocr::job_options(opts, kind, "default".into()) {
            Ok(job) => {
                let stored = serde_json::to_string(&job).expect("job options serialize");
                let back: JobOptions = serde_json::from_str(&stored).expect("job options read");
                assert_eq!(
                    serde_json::to_string(&back).unwrap(),
                    stored,
                    "stored job options changed on the way back"
                );
                let applied = back.apply(&OcrOptions::for_model(kind));
                assert!(
                    applied.validate().is_ok(),
                    "{opts:?} made invalid job options"
                );
            }
            Err(e) => client_error("job_options", &e),
        }
    }
}

/// `select_pages`, and what its callers rely on: sorted, distinct, in range, at most
/// `max_pages`.
fn check_selection(spec: Option<&str>, count: usize, max_pages: usize) {
    match select_pages(spec, count, max_pages) {
        Ok(v) => {
            assert!(
                v.len() <= max_pages,
                "{} pages selected, over max_pages {max_pages}",
                v.len()
            );
            assert!(
                v.windows(2).all(|w| w[0] < w[1]),
                "selection not sorted and distinct"
            );
            if let Some(&last) = v.last() {
                assert!(last < count, "page index {last} of a {count}-page document");
            }
        }
        Err(e) => client_error("select_pages", &e),
    }
}

/// A decoded page within the limits it was decoded under.
fn within_limits(what: &str, w: u32, h: u32, limits: &DecodeLimits) {
    assert!(w > 0 && h > 0, "{what}: a {w}×{h} page");
    assert!(
        w <= limits.max_side_px && h <= limits.max_side_px,
        "{what}: a {w}×{h} page is over max_side_px {}",
        limits.max_side_px
    );
    assert!(
        w as u64 * h as u64 <= limits.max_pixels,
        "{what}: a {w}×{h} page is over max_pixels {}",
        limits.max_pixels
    );
}

/// Hostile input is the client's fault: its errors are 4xx, never a 500 or a 503.
fn client_error(what: &str, e: &Error) {
    let _ = e.to_string();
    assert!(
        e.is_client_error(),
        "{what}: hostile input gave a server error: {} ({e})",
        e.code()
    );
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime")
    })
}

thread_local! {
    /// The last panic on this thread: its message and location, and its backtrace.
    static LAST_PANIC: RefCell<Option<(String, Backtrace)>> = const { RefCell::new(None) };
}

/// Runs one input. A panic that the crate catches is reported once per location (or aborts,
/// with `FUZZ_CAUGHT_PANICS=abort`); one that reaches here prints its message, location and
/// backtrace and aborts the process, which libFuzzer records as a crash.
pub fn guard(f: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // Replaces libFuzzer's hook, which aborts on every panic, caught or not.
        std::panic::set_hook(Box::new(|info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".into());
            let at = info
                .location()
                .map_or_else(|| "(unknown location)".into(), |l| l.to_string());
            // Symbols are resolved only if the backtrace is printed.
            let bt = Backtrace::force_capture();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((format!("'{msg}' at {at}"), bt)));
        }));
    });
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let last = LAST_PANIC.with(|p| p.borrow_mut().take());
    match (outcome, last) {
        (Ok(()), None) => {}
        (Ok(()), Some((what, bt))) => {
            static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
            let abort = std::env::var("FUZZ_CAUGHT_PANICS").is_ok_and(|v| v == "abort");
            let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
            let first = seen.get_or_insert_with(HashSet::new).insert(what.clone());
            if first || abort {
                eprintln!(
                    "fuzz: panic caught inside the crate (not a crash; FUZZ_CAUGHT_PANICS=abort \
                     makes it one): {what}"
                );
            }
            if abort {
                eprintln!("{bt}");
                std::process::abort();
            }
        }
        (Err(_), last) => {
            let (what, bt) =
                last.unwrap_or_else(|| ("(no panic recorded)".into(), Backtrace::disabled()));
            eprintln!("fuzz: panic: {what}\n{bt}");
            std::process::abort();
        }
    }
}

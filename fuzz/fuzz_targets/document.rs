//! Document bytes (PDF, TIFF, images): open, page count, the memory reservation of the first and
//! last pages, and those pages decoded or rendered (PDF at 50 dpi).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ocr_server::fuzzing::document(data));

//! Page selections (`1-3,7`, `5-`): 3 bytes of page count, 2 of max_pages, then the selection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ocr_server::fuzzing::pages(data));

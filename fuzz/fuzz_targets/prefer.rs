//! `Prefer` header values (RFC 7240), one per line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ocr_server::fuzzing::prefer(data));

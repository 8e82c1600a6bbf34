//! `/v1/ocr` request bodies: the first byte picks raw, JSON or multipart (or a free-form
//! content type up to the first newline); the options the body carried are then applied.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ocr_server::fuzzing::body(data));

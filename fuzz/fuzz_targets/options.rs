//! Option query strings of `/v1/ocr` and `/v1/jobs`, parsed and applied to each model set.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ocr_server::fuzzing::options(data));

//! Image bytes (PNG, JPEG, WebP, BMP, TIFF): format sniffing, the header check and decoding every
//! page under small limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ocr_server::fuzzing::image_decode(data));

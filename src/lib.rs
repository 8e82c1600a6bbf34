//! An OCR inference server: PaddleOCR PP-OCR text detection and recognition models on ONNX
//! Runtime or OpenVINO, with pure pre/post-processing in Rust.
//!
//! Layout: [`pipeline`] holds the pure pixel and tensor maths; [`document`] the lazy page stream
//! over images, TIFF and PDF; [`memory`] the server-wide memory budget; [`engine`] the
//! synchronous model seam ([`engine::Model`]), its ONNX Runtime ([`engine::ort`]) and OpenVINO
//! ([`engine::openvino`]) implementations, the runtime seam that chooses between them and loads
//! model sets ([`engine::runtime`]), test fakes, and the page pipeline ([`engine::OcrEngine`]);
//! [`scheduler`] dynamic batching across requests on worker threads; [`overrides`] the options
//! a caller may set per request or per job; [`ocr`] the OCR use case (recognize, respond-async,
//! job specs, whole documents in process); [`api`] the HTTP API; [`auth`] API keys, tenants,
//! scopes and rate limits; [`jobs`] the durable job store, service and runner; [`error`] the one
//! error type; [`output`] the text, hOCR and searchable-PDF writers; [`extract`] fields from OCR
//! pages (receipts, MRZ, forms); [`cli`] the command line; [`client`] the batch-ingestion client
//! (`ocr-server submit`); [`bench`] the benchmark harness (`ocr-server bench`). `fuzzing`
//! (hidden from the docs) holds the entry points of the cargo-fuzz targets.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod document;
pub mod engine;
pub mod error;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod memory;
pub mod ocr;
pub mod output;
pub mod overrides;
pub mod pipeline;
pub mod scheduler;

pub use error::{Error, Result};

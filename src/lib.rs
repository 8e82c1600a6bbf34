//! An OCR inference server: PaddleOCR PP-OCR text detection and recognition models on ONNX
//! Runtime, with pure pre/post-processing in Rust.
//!
//! Layout: [`pipeline`] holds the pure pixel and tensor maths; [`engine`] the synchronous model
//! seam ([`engine::Model`]), its ONNX Runtime implementation and test fakes, and the page pipeline
//! ([`engine::OcrEngine`]); [`scheduler`] dynamic batching across requests on worker threads;
//! [`api`] the HTTP API; [`jobs`] the durable job store and runner; [`error`] the one error type;
//! [`output`] the text, hOCR and searchable-PDF writers; [`extract`] fields from OCR pages (receipts, MRZ, forms); [`cli`] the command line; [`client`] the batch-ingestion client (`ocr-server submit`); [`bench`] the benchmark harness (`ocr-server bench`).

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

//! The command line: `ocr-server ocr [--model v4|v5|v6] [--format text|json|jsonl|hocr|pdf]
//! FILE...` (`hocr` and `pdf` take one FILE), `ocr-server serve [--host H] [--port P] ...` (the
//! HTTP server, [`crate::api`], with jobs), `submit`, `bench` and `keys`.
//!
//! - [`config`]: the flags that describe the runtime, the pipeline and the server, and what
//!   they build ([`EngineConfig`](crate::engine::runtime::EngineConfig),
//!   [`OcrOptions`](crate::engine::OcrOptions),
//!   [`SchedulerConfig`](crate::scheduler::SchedulerConfig)).
//! - [`serve`]: the server's lifecycle (stores, startup checks, clock, profiles, runner,
//!   listener, sweeps, graceful shutdown).
//! - [`ocr`]: `ocr-server ocr`, which drives an in-process scheduler, the server's own path.
//! - [`keys`]: `ocr-server keys` (API keys and tenants' webhook secrets).

pub mod config;
pub mod keys;
pub mod ocr;
pub mod serve;

use clap::{Parser, Subcommand};

pub use config::{DetLimit, DetNorm, PipelineArgs, RuntimeArgs, ServeArgs};
pub use keys::{KeyCreateArgs, KeysAction, KeysArgs, run_keys};
pub use ocr::{FileError, FileOutput, FileResult, OcrArgs, OutputFormat, run_ocr};
pub use serve::run_serve;

#[derive(Debug, Parser)]
#[command(
    name = "ocr-server",
    version,
    about = "OCR with PP-OCR models on ONNX Runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// OCR image files (PNG, JPEG, TIFF incl. multi-page, WebP, BMP) and print the result.
    Ocr(Box<OcrArgs>),
    /// Run the HTTP server (POST /v1/ocr, /v1/jobs..., /v1/queue, /health/*, /metrics, /openapi.json).
    Serve(Box<ServeArgs>),
    /// Submit files or directories to a server as jobs, wait, and write each result
    /// (idempotent: a rerun resumes instead of duplicating).
    Submit(Box<crate::client::SubmitArgs>),
    /// Benchmark a server: sync sweep, bulk jobs, mixed load (CSV, plots), and the raw-model
    /// limit (`--raw`).
    Bench(Box<crate::bench::BenchArgs>),
    /// Manage API keys in the job store (`create` prints the new key once, as its last line).
    Keys(Box<KeysArgs>),
}

/// A secret from the command line or environment (a webhook secret, a database URL with a
/// password): its `Debug` output never shows it, so a logged configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A URL keeps its scheme and host; anything that could be a credential is hidden.
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                write!(f, "\"{scheme}://***@{host}\"")
            }
            None => f.write_str("\"***\""),
        }
    }
}

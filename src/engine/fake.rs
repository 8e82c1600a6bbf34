//! Small deterministic stand-ins for the real models, for tests of the pipeline, the scheduler
//! and the API without weights. They follow the real models' tensor contracts exactly.
//!
//! - [`FakeDetector`]: probability 1 where the input pixel is dark (first channel < 0 after
//!   normalisation to [-1, 1]), else 0; `[1,3,H,W]` → `[1,1,H,W]`.
//! - [`FakeRecognizer`]: one step per 8 columns; a step whose middle row is dark on average emits
//!   class 1, anything else blank; `[N,3,48,W]` → `[N,W/8,classes]`. A dark bar reads as one
//!   symbol.
//! - [`FakeClassifier`]: every line gets the same `[p0, p180]`.
//! - [`FailingModel`]: every run fails, or returns a tensor of the wrong shape.
//! - [`FailAfter`]: wraps a model; its first runs pass (the scheduler's warm-up), then every run
//!   fails.
//! - [`Gated`]: wraps a model; each run first announces itself and then waits for a permit, so
//!   a test decides exactly when a batch finishes (no sleeps).
//! - [`FakeFactory`]: the scheduler's model factory over these.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::{ModelFactory, Role};
use crate::error::{Error, Result};
use crate::pipeline::Tensor;
use crate::pipeline::ctc::Charset;

use super::{Model, ModelKind};

#[derive(Debug, Clone, Default)]
pub struct FakeDetector;

impl Model for FakeDetector {
    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let [n, _, h, w] = input.shape[..] else {
            return Err(Error::Runtime("fake detector wants NCHW".into()));
        };
        let data = input.data[..n * h * w]
            .iter()
            .map(|&v| if v < 0.0 { 1.0 } else { 0.0 })
            .collect();
        Ok(Tensor {
            shape: vec![n, 1, h, w],
            data,
        })
    }
}

#[derive(Debug, Clone)]
pub struct FakeRecognizer {
    pub classes: usize,
}

impl Model for FakeRecognizer {
    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let [n, _, h, w] = input.shape[..] else {
            return Err(Error::Runtime("fake recogniser wants NCHW".into()));
        };
        let steps = w / 8;
        let mut data = vec![0.0; n * steps * self.classes];
        for i in 0..n {
            // The middle row of channel 0; padding is exactly 0, ink is below 0.
            let row = &input.data[(i * 3 * h + h / 2) * w..(i * 3 * h + h / 2) * w + w];
            for t in 0..steps {
                let mean = row[t * 8..t * 8 + 8].iter().sum::<f32>() / 8.0;
                let class = if mean < 0.0 { 1 } else { 0 };
                data[(i * steps + t) * self.classes + class] = 1.0;
            }
        }
        Ok(Tensor {
            shape: vec![n, steps, self.classes],
            data,
        })
    }
}

#[derive(Debug, Clone)]
pub struct FakeClassifier {
    pub probs: [f32; 2],
}

impl Model for FakeClassifier {
    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let n = input.shape[0];
        Ok(Tensor {
            shape: vec![n, 2],
            data: self.probs.repeat(n),
        })
    }
}

/// A model that fails: with an error, or (when `wrong_shape`) by returning a 1-D tensor.
#[derive(Debug, Clone)]
pub struct FailingModel {
    pub wrong_shape: bool,
}

impl Model for FailingModel {
    fn run(&mut self, _input: &Tensor) -> Result<Tensor> {
        if self.wrong_shape {
            Ok(Tensor {
                shape: vec![3],
                data: vec![0.0; 3],
            })
        } else {
            Err(Error::Runtime("injected failure".into()))
        }
    }
}

/// Passes the first `ok_runs` runs to `inner` (the scheduler's warm-up), then fails every run.
pub struct FailAfter {
    pub inner: Box<dyn Model>,
    pub ok_runs: usize,
}

impl Model for FailAfter {
    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        if self.ok_runs == 0 {
            return Err(Error::Runtime("injected failure".into()));
        }
        self.ok_runs -= 1;
        self.inner.run(input)
    }
}

/// A model whose runs wait for the test: each run sends `()` on `entered`, then waits for one
/// message on `permits`, unless the gate was opened for good ([`Gate::open`]).
pub struct Gated {
    pub inner: Box<dyn Model>,
    pub entered: Sender<()>,
    pub permits: Receiver<()>,
    pub open: Arc<AtomicBool>,
}

impl Model for Gated {
    fn run(&mut self, input: &Tensor) -> Result<Tensor> {
        let _ = self.entered.send(());
        if !self.open.load(Ordering::Acquire) {
            let _ = self.permits.recv();
        }
        self.inner.run(input)
    }
}

/// Test controls for a gated detector: see [`Gated`].
#[derive(Clone)]
pub struct Gate {
    pub entered: Receiver<()>,
    pub permits: Sender<()>,
    open: Arc<AtomicBool>,
    detector_side: (Sender<()>, Receiver<()>),
}

impl Gate {
    pub fn new() -> Self {
        let (entered_tx, entered_rx) = crossbeam_channel::unbounded();
        let (permit_tx, permit_rx) = crossbeam_channel::unbounded();
        Self {
            entered: entered_rx,
            permits: permit_tx,
            open: Arc::new(AtomicBool::new(false)),
            detector_side: (entered_tx, permit_rx),
        }
    }

    /// Lets the waiting run and every later run through.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        for _ in 0..64 {
            let _ = self.permits.send(());
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// Fake models for the scheduler: [`FakeDetector`], [`FakeRecognizer`] over a two-symbol
/// dictionary (`#` for a dark bar), [`FakeClassifier`] saying "upright"; optionally a gated
/// detector, a recogniser that fails after its warm-up, or a detector that fails to load.
#[derive(Clone, Default)]
pub struct FakeFactory {
    pub gate: Option<Gate>,
    pub failing_rec: bool,
    pub det_load_error: bool,
}

impl FakeFactory {
    /// The dictionary: blank, `#`, and the trailing space.
    pub fn charset() -> Charset {
        Charset::from_dictionary(["#"])
    }
}

impl ModelFactory for FakeFactory {
    fn kind(&self) -> ModelKind {
        ModelKind::V6
    }

    fn charset(&self) -> Arc<Charset> {
        Arc::new(Self::charset())
    }

    fn has_classifier(&self) -> bool {
        true
    }

    fn load(&self, role: Role) -> Result<Box<dyn Model>> {
        let classes = Self::charset().len();
        Ok(match role {
            Role::Detector if self.det_load_error => {
                return Err(Error::ModelMissing {
                    path: "fake/det.onnx".into(),
                });
            }
            Role::Detector => match &self.gate {
                Some(g) => Box::new(Gated {
                    inner: Box::new(FakeDetector),
                    entered: g.detector_side.0.clone(),
                    permits: g.detector_side.1.clone(),
                    open: g.open.clone(),
                }),
                None => Box::new(FakeDetector),
            },
            Role::Classifier => Box::new(FakeClassifier { probs: [1.0, 0.0] }),
            Role::Recognizer if self.failing_rec => Box::new(FailAfter {
                inner: Box::new(FakeRecognizer { classes }),
                ok_runs: 1,
            }),
            Role::Recognizer => Box::new(FakeRecognizer { classes }),
        })
    }
}

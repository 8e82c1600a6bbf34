//! Dynamic batching across requests. [`batcher::Batcher`] is the pure batch policy of one stage;
//! [`stage::Stage`] puts it behind a lock shared by a stage's worker threads; [`service`] runs
//! the detection, orientation and recognition stages and routes pages and line crops between
//! them; [`gate::CoreGate`] bounds model runs to the cores, interactive first;
//! [`profiles::Profiles`] serves several model sets from one process over one core gate. The
//! scheduler only batches: what a request or a document asks of it is [`crate::ocr`]'s. See
//! each module's docs for the rules.

pub mod batcher;
pub mod gate;
pub mod profiles;
pub mod service;
pub mod stage;

pub use batcher::{BatchPolicy, Class};
// The model seam lives in `engine`; re-exported here for the scheduler's callers.
pub use crate::engine::{ModelFactory, Role};
pub use profiles::{ProfileSpec, Profiles};
pub use service::{Outcome, Scheduler, SchedulerConfig, Stats, Ticket, Timings};

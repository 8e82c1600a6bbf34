//! Model profiles: named model sets with their options (`fast`, `accurate`, …) served by one
//! process. Each profile is its own [`Scheduler`] (its own workers, each owning its sessions,
//! and batches of its own model set only), and all of them share one [`CoreGate`]: at most one
//! model run per core across every profile, interactive batches of any profile before bulk
//! ones. A request or job names its profile (`profile=`); without one it runs on the first
//! (the default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::ModelFactory;
use crate::error::{Error, Result};

use super::gate::CoreGate;
use super::{Scheduler, SchedulerConfig};

/// One profile to start: its name, scheduler settings and models.
pub struct ProfileSpec {
    pub name: String,
    pub cfg: SchedulerConfig,
    pub factory: Arc<dyn ModelFactory>,
}

/// The running profiles, the default first.
pub struct Profiles {
    profiles: Vec<(String, Arc<Scheduler>)>,
}

impl Profiles {
    /// One scheduler as the only profile, named `default`.
    pub fn single(scheduler: Arc<Scheduler>) -> Self {
        Self {
            profiles: vec![("default".into(), scheduler)],
        }
    }

    /// Starts every profile's scheduler over one core gate of `core_slots` (None: no gate, as
    /// on a GPU). The first spec is the default. Names must be unique.
    pub fn start(specs: Vec<ProfileSpec>, core_slots: Option<usize>) -> Result<Self> {
        if specs.is_empty() {
            return Err(Error::InvalidOption("no model profile configured".into()));
        }
        let gate = core_slots.map(|n| Arc::new(CoreGate::new(n)));
        let mut profiles: Vec<(String, Arc<Scheduler>)> = Vec::with_capacity(specs.len());
        for s in specs {
            if profiles.iter().any(|(n, _)| *n == s.name) {
                return Err(Error::InvalidOption(format!(
                    "profile `{}` is configured twice",
                    s.name
                )));
            }
            let sched = Scheduler::start_with_gate(s.cfg, s.factory, gate.clone())?;
            profiles.push((s.name, Arc::new(sched)));
        }
        Ok(Self { profiles })
    }

    /// The default profile's scheduler.
    pub fn default_scheduler(&self) -> &Arc<Scheduler> {
        &self.profiles[0].1
    }

    pub fn default_name(&self) -> &str {
        &self.profiles[0].0
    }

    /// The named profile's scheduler (the default for None); an unknown name is
    /// `invalid_option` naming the served ones.
    pub fn get(&self, name: Option<&str>) -> Result<&Arc<Scheduler>> {
        let Some(name) = name else {
            return Ok(self.default_scheduler());
        };
        self.profiles
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "profile `{name}` is not served here; served: {}",
                    self.names().join(", ")
                ))
            })
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The profile keys served here (`NAME/MODEL`, [`crate::jobs::model::profile_key`]): the
    /// job pages this process may claim.
    pub fn keys(&self) -> Vec<String> {
        self.profiles
            .iter()
            .map(|(n, s)| crate::jobs::model::profile_key(n, s.kind()))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Scheduler>)> {
        self.profiles.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Blocks until every profile's workers are loaded and warmed (or one failed).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (_, s) in &self.profiles {
            s.wait_ready(deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.profiles.iter().all(|(_, s)| s.is_ready())
    }

    /// Shuts every profile down (each finishes its admitted work first).
    pub fn shutdown(&self) {
        for (_, s) in &self.profiles {
            s.shutdown();
        }
    }
}

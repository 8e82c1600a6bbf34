//! One stage's queue shared by its worker threads: a [`Batcher`] behind a mutex with two
//! condition variables, `work` (a batch may be ready) and `space` (room was made).
//!
//! - Admission into the first stage is all-or-nothing and never waits: a request that does not
//!   fit is refused with [`Admit::Full`] (the API's 429). In-process callers (the CLI) may wait
//!   a bounded time for room instead ([`Stage::admit_within`]).
//! - Hand-offs between stages ([`Stage::push_wait`]) wait for room instead: the item is already
//!   admitted and must not be lost, and the downstream workers never wait on upstream, so the
//!   wait always ends. This is the back-pressure that keeps every queue bounded.
//! - Workers call [`Stage::next_batch`], which sleeps until the policy says a batch is ready (or
//!   until the oldest item's delay runs out) and returns it together with dropped items.
//! - [`Stage::close`] makes admission fail and lets workers drain what is queued, then return
//!   `None`.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::batcher::{BatchPolicy, Batcher, Class, Queued, Taken};

/// Why admission failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Not enough room; `depth` items are queued.
    Full { depth: usize },
    /// The stage is closed (shutting down).
    Closed,
}

struct State<T> {
    batcher: Batcher<T>,
    closed: bool,
}

/// Queue depth and age of one class, for gauges and `/v1/queue`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ClassDepth {
    pub depth: usize,
    /// Seconds the oldest queued item has waited.
    pub oldest_age_s: f64,
}

pub struct Stage<T> {
    pub name: &'static str,
    state: Mutex<State<T>>,
    work: Condvar,
    space: Condvar,
}

impl<T> Stage<T> {
    pub fn new(name: &'static str, policy: BatchPolicy) -> Self {
        Self {
            name,
            state: Mutex::new(State {
                batcher: Batcher::new(policy),
                closed: false,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A worker that panicked while holding the lock left the batcher consistent (every
        // mutation is a single push or a completed take), so the poison is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits all items or none, without waiting.
    pub fn admit(&self, items: Vec<Queued<T>>) -> Result<(), Admit> {
        self.admit_within(items, Duration::ZERO)
    }

    /// Admits all items or none, waiting up to `patience` for room (an in-process caller's
    /// back-pressure; the HTTP API never waits). Items that could never fit at once are refused
    /// at once.
    pub fn admit_within(&self, items: Vec<Queued<T>>, patience: Duration) -> Result<(), Admit> {
        let deadline = Instant::now() + patience;
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(Admit::Closed);
            }
            if st.batcher.room() >= items.len() {
                break;
            }
            let now = Instant::now();
            if now >= deadline || items.len() > st.batcher.policy().capacity {
                return Err(Admit::Full {
                    depth: st.batcher.len(),
                });
            }
            st = self
                .space
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        for q in items {
            if st.batcher.push(q).is_err() {
                unreachable!("room was checked under the same lock. This is a bug.");
            }
        }
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    /// Hands an admitted item over from an upstream stage, waiting while the queue is full.
    pub fn push_wait(&self, q: Queued<T>) {
        let mut st = self.lock();
        let mut q = q;
        loop {
            match st.batcher.push(q) {
                Ok(()) => break,
                Err(full) => {
                    q = full.0;
                    st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        drop(st);
        self.work.notify_one();
    }

    /// Waits for the next batch. Returns `None` once the stage is closed and drained. The batch
    /// of a returned `Taken` may be empty when everything taken was dropped.
    pub fn next_batch(&self, is_gone: impl Fn(&T) -> bool) -> Option<Taken<T>> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if st.batcher.is_empty() {
                if st.closed {
                    return None;
                }
                st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if st.closed || st.batcher.ready(now) {
                let taken = st.batcher.take(now, &is_gone);
                let more = !st.batcher.is_empty();
                drop(st);
                self.space.notify_all();
                if more {
                    self.work.notify_one();
                }
                return Some(taken);
            }
            let wake = st
                .batcher
                .next_deadline()
                .map_or(Duration::from_millis(50), |d| {
                    d.saturating_duration_since(now)
                });
            st = self
                .work
                .wait_timeout(st, wake.max(Duration::from_micros(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops admission; workers drain the queue and then get `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
        // A caller waiting for room ([`Stage::admit_within`]) is refused at once.
        self.space.notify_all();
    }

    /// Depth and oldest age of each class, now.
    pub fn depths(&self) -> [(Class, ClassDepth); 2] {
        let st = self.lock();
        let now = Instant::now();
        [Class::Interactive, Class::Bulk].map(|c| {
            (
                c,
                ClassDepth {
                    depth: st.batcher.depth(c),
                    oldest_age_s: st
                        .batcher
                        .oldest(c)
                        .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()),
                },
            )
        })
    }

    pub fn len(&self) -> usize {
        self.lock().batcher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn policy(&self) -> BatchPolicy {
        self.lock().batcher.policy().clone()
    }
}

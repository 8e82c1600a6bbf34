//! One server-wide memory budget: decoded pages, and every other large buffer the server holds
//! for a caller.
//!
//! Every decode and render reserves its worst-case bytes here before it allocates: pixels ×
//! channels of the decoder's buffer and of the RGB page it leaves, plus, for a PDF page, the
//! bytes its streams inflate to ([`crate::document::Document::page_cost`]). The reservation is
//! held as long as the page's pixels live (the sync request until its answer is built, a job
//! page until its result is stored), so the sum of live page buffers never passes the budget,
//! whatever the input. A reservation that does not fit waits up to the budget's bound
//! (`--memory-wait-ms`) for others to be released, then fails with 503 `memory_exhausted` and
//! `Retry-After`; one that could never fit (more than the whole budget) is a 422 of its own.
//!
//! The same budget covers request bodies while their bytes live (`api::read_body`: the
//! `Content-Length`, or the body limit when chunked), a job's documents read from the store while
//! their pages are counted ([`crate::jobs::service::JobService`]), and each streamed job result
//! (`api::results`), so bodies, documents and downloads wait for room like pages do.
//!
//! A counting semaphore on a mutex and condition variable, written here because reservations
//! are taken on blocking threads (decoders run on tokio's blocking pool and the CLI's threads)
//! and vary in size by six orders of magnitude; tokio's semaphore is async-only and
//! `u32`-permit sized.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const MIB: u64 = 1 << 20;

#[derive(Debug)]
struct Inner {
    total: u64,
    wait: Duration,
    used: Mutex<u64>,
    freed: Condvar,
}

/// The budget (cheap to clone: clones share it).
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

impl PartialEq for MemoryBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.total == other.inner.total && self.inner.wait == other.inner.wait)
    }
}

impl Default for MemoryBudget {
    /// Half the machine's memory (or of the cgroup's limit, when lower); waits 10 s.
    fn default() -> Self {
        Self::new(default_budget_bytes(), Duration::from_secs(10))
    }
}

/// Half of the memory this process may use: `MemTotal`, or the cgroup v2 `memory.max` when it
/// is lower; 4 GiB when neither can be read.
pub fn default_budget_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let machine = match (meminfo, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    };
    machine / 2
}

impl MemoryBudget {
    pub fn new(total_bytes: u64, wait: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                total: total_bytes.max(1),
                wait,
                used: Mutex::new(0),
                freed: Condvar::new(),
            }),
        }
    }

    /// The budget in bytes.
    pub fn total(&self) -> u64 {
        self.inner.total
    }

    /// How long a reservation waits for room.
    pub fn wait(&self) -> Duration {
        self.inner.wait
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        *self.inner.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `bytes`, waiting up to the budget's bound for room (blocking the thread: call it
    /// from a blocking context). More than the whole budget fails at once with 422
    /// `image_too_large`; no room within the bound is 503 `memory_exhausted`.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation> {
        let inner = &self.inner;
        if bytes > inner.total {
            return Err(Error::ImageTooLarge(format!(
                "decoding needs {} MiB, more than the server's whole memory budget of {} MiB",
                bytes.div_ceil(MIB),
                inner.total / MIB
            )));
        }
        let started = Instant::now();
        let deadline = started + inner.wait;
        let mut used = inner.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut waited = false;
        while *used + bytes > inner.total {
            let now = Instant::now();
            if now >= deadline {
                metrics::counter!("ocr_memory_budget_exhausted_total").increment(1);
                return Err(Error::MemoryExhausted {
                    needed_mb: bytes.div_ceil(MIB),
                    budget_mb: inner.total / MIB,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            if !waited {
                waited = true;
                metrics::counter!("ocr_memory_budget_waits_total").increment(1);
            }
            used = inner
                .freed
                .wait_timeout(used, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *used += bytes;
        metrics::gauge!("ocr_memory_budget_used_bytes").set(*used as f64);
        Ok(Reservation {
            budget: Some(self.clone()),
            bytes,
        })
    }
}

/// Reserved bytes, given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            let mut used = b.inner.used.lock().unwrap_or_else(|p| p.into_inner());
            *used = used.saturating_sub(self.bytes);
            metrics::gauge!("ocr_memory_budget_used_bytes").set(*used as f64);
            drop(used);
            b.inner.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_wait_for_room_and_time_out() {
        let b = MemoryBudget::new(100, Duration::from_millis(300));
        let r1 = b.reserve(60).unwrap();
        assert_eq!(b.used(), 60);
        // No room: waits the bound, then 503.
        let e = b.reserve(50).unwrap_err();
        assert_eq!(e.code(), "memory_exhausted");
        // More than the whole budget: refused at once, as the input's fault.
        assert_eq!(b.reserve(101).unwrap_err().code(), "image_too_large");
        // Room made while waiting: the waiter gets it.
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.reserve(50).map(|r| r.bytes()));
        std::thread::sleep(Duration::from_millis(50));
        drop(r1);
        assert_eq!(t.join().unwrap().unwrap(), 50);
        assert_eq!(
            b.used(),
            0,
            "the waiter's reservation was dropped with its thread"
        );
    }

    #[test]
    fn default_is_half_the_machine() {
        let d = default_budget_bytes();
        assert!(d >= 64 * MIB, "{d}");
    }
}

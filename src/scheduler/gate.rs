//! The core gate: at most `slots` model runs at once across every stage, interactive batches
//! first.
//!
//! On CPU each worker's session is single-threaded, and the stages together have more workers
//! than cores (one detection worker plus one recognition worker per core, by default), so
//! without a gate three sessions time-share two cores. Under bulk load that made a sync
//! caller's detection run at about two thirds of a core while two bulk recognition batches ran
//! beside it. With the gate, a worker that has taken a batch waits for a slot before it runs the
//! model; when a slot frees, a waiting batch holding an interactive item gets it before any
//! bulk-only batch, so interactive work waits at most for the shortest running batch to end and
//! then has a core to itself. Bulk-only batches are served in any order among themselves (the
//! stage queues already ordered them).
//!
//! The gate is off (`None` in the scheduler) on GPU, where sessions do not compete for cores.
//! Time spent waiting at the gate is counted as queue time (the batch's `started` instant is
//! taken after the slot).

use std::sync::{Condvar, Mutex};

use super::batcher::Class;

#[derive(Debug)]
struct Slots {
    free: usize,
    /// Interactive batches waiting for a slot: while any wait, bulk batches do not take one.
    waiting_interactive: usize,
}

/// A priority semaphore over the machine's cores.
#[derive(Debug)]
pub struct CoreGate {
    slots: Mutex<Slots>,
    freed: Condvar,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot<'a>(&'a CoreGate);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().free += 1;
        // Every waiter re-checks its own rule; at most a handful of workers wait.
        self.0.freed.notify_all();
    }
}

impl CoreGate {
    /// A gate with `slots` concurrent model runs (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: Mutex::new(Slots {
                free: slots.max(1),
                waiting_interactive: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The counters are consistent after every statement; a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot. An interactive batch takes the first free slot; a bulk batch takes one
    /// only while no interactive batch is waiting.
    pub fn acquire(&self, class: Class) -> Slot<'_> {
        let mut s = self.lock();
        match class {
            Class::Interactive => {
                s.waiting_interactive += 1;
                while s.free == 0 {
                    s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                s.waiting_interactive -= 1;
            }
            Class::Bulk => {
                while s.free == 0 || s.waiting_interactive > 0 {
                    s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        s.free -= 1;
        Slot(self)
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.lock().free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn slots_bound_concurrency_and_are_freed_on_drop() {
        let g = CoreGate::new(2);
        let a = g.acquire(Class::Bulk);
        let b = g.acquire(Class::Interactive);
        assert_eq!(g.free(), 0);
        drop(a);
        assert_eq!(g.free(), 1);
        drop(b);
        assert_eq!(g.free(), 2);
        assert_eq!(CoreGate::new(0).free(), 1, "at least one slot");
    }

    #[test]
    fn a_waiting_interactive_batch_gets_the_next_slot_before_waiting_bulk() {
        // One slot, held. A bulk waiter arrives first, then an interactive one; when the slot
        // frees, the interactive waiter must run first.
        let g = Arc::new(CoreGate::new(1));
        let held = g.acquire(Class::Bulk);
        let (tx, rx) = mpsc::channel();
        let spawn = |class: Class, name: &'static str| {
            let (g, tx) = (g.clone(), tx.clone());
            std::thread::spawn(move || {
                let _slot = g.acquire(class);
                tx.send(name).unwrap();
                // Hold the slot long enough that the other waiter cannot slip in between.
                std::thread::sleep(Duration::from_millis(50));
            })
        };
        let bulk = spawn(Class::Bulk, "bulk");
        std::thread::sleep(Duration::from_millis(50));
        let inter = spawn(Class::Interactive, "interactive");
        // Wait until the interactive waiter is registered.
        while g.lock().waiting_interactive == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(rx.try_recv().is_err(), "nobody ran while the slot was held");
        drop(held);
        assert_eq!(rx.recv().unwrap(), "interactive");
        assert_eq!(rx.recv().unwrap(), "bulk");
        bulk.join().unwrap();
        inter.join().unwrap();
        assert_eq!(g.free(), 1);
    }
}

//! One clock for every replica: the store's.
//!
//! Every expiry the job system decides (a lease, the rescue of an expired one, the retention
//! sweep, an idempotency key's lifetime, a delivery's lease) compares times written by
//! different replicas, so they must come from one clock. For PostgreSQL that is the database
//! server's (`clock_timestamp()`): each replica measures its offset from it at startup and then
//! every [`SYNC_EVERY`] (the round trip halved, taken at the midpoint), and [`super::now_ms`] is
//! this machine's time plus that offset. For SQLite every process sharing the file shares this
//! machine's clock, which is the store's; there is nothing to measure.
//!
//! A replica whose own clock disagrees with the store's by more than the bound
//! (`--max-clock-skew-ms`) still runs on the store's time, but refuses to sweep (deleting is
//! the one irreversible act) and says so in its log, in `ocr_store_clock_offset_ms` and in
//! `ocr_sweeps_refused_total`, until a measurement within the bound. So does a replica that
//! could not measure at all (the store unreachable): nothing is deleted on an unchecked clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::store::JobStore;
use crate::error::Result;

/// How often a replica measures its offset from the store's clock.
pub const SYNC_EVERY: Duration = Duration::from_secs(30);

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);
/// Whether the last measurement (or the lack of one) allows sweeping.
static SWEEP_OK: AtomicBool = AtomicBool::new(true);

/// This machine's wall clock in Unix milliseconds.
pub fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The store's clock minus this machine's, as last measured (0 for SQLite).
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

/// Whether this replica may sweep: its clock agreed with the store's at the last measurement.
pub fn sweep_allowed() -> bool {
    SWEEP_OK.load(Ordering::Acquire)
}

/// What a measurement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// The store has no clock of its own (SQLite): this machine's is the store's.
    Local,
    /// The store's clock minus this machine's, in ms, and whether it is within the bound.
    Measured { offset_ms: i64, within: bool },
    /// The store could not be asked: the last offset stays, sweeping stops.
    Failed,
}

/// Measures the offset from the store's clock once and applies it (see the module docs).
pub async fn sync(store: &dyn JobStore, max_skew: Duration) -> Sync {
    let before = Instant::now();
    let local_before = system_ms();
    let measured: Result<Option<i64>> = store.clock_ms().await;
    let rtt = before.elapsed().as_millis() as i64;
    let out = match measured {
        Ok(None) => Sync::Local,
        Ok(Some(store_ms)) => {
            let offset = store_ms - (local_before + rtt / 2);
            OFFSET_MS.store(offset, Ordering::Relaxed);
            metrics::gauge!("ocr_store_clock_offset_ms").set(offset as f64);
            Sync::Measured {
                offset_ms: offset,
                within: offset.unsigned_abs() <= max_skew.as_millis() as u64,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not read the store's clock: sweeping stops until it can be");
            Sync::Failed
        }
    };
    let ok = match out {
        Sync::Local => true,
        Sync::Measured { offset_ms, within } => {
            if !within {
                tracing::error!(
                    offset_ms,
                    max_skew_ms = max_skew.as_millis() as u64,
                    "this machine's clock disagrees with the store's: leases and expiries use \
                     the store's time, and this replica refuses to sweep until the clocks agree"
                );
            }
            within
        }
        Sync::Failed => false,
    };
    let was = SWEEP_OK.swap(ok, Ordering::AcqRel);
    if ok && !was {
        tracing::info!("the clock agrees with the store's again: sweeping resumes");
    }
    out
}

/// Measures every [`SYNC_EVERY`], for ever (the first measurement is the startup's, [`sync`]).
pub async fn sync_forever(store: std::sync::Arc<dyn JobStore>, max_skew: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + SYNC_EVERY, SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sync(store.as_ref(), max_skew).await;
    }
}

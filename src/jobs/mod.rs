//! Asynchronous jobs. The store is the queue: [`store::JobStore`] (SQLite embedded, PostgreSQL
//! for many replicas) holds jobs, leased pages, events and the webhook outbox; [`documents`]
//! holds the uploaded documents; [`service::JobService`] owns every transition a client asks
//! for (create, cancel, retry, review, pause/resume) and what is read back (results, the review
//! queue), so HTTP handlers only extract, call and map; [`runner::Runner`] claims pages and runs
//! them through the scheduler; [`webhook`] signs and sends the outbox. Records crossing the
//! store boundary are typed ([`model`]), and so is a job's audit trail ([`events::JobEvent`]).
//! [`clock`] is the one clock every replica uses ([`now_ms`]: the store's).

pub mod clock;
pub mod documents;
pub mod events;
pub mod model;
pub mod postgres;
pub mod runner;
pub mod service;
pub mod sqlite;
pub mod store;
pub mod webhook;

/// Unix time in milliseconds on the store's clock: this machine's clock corrected by the
/// offset last measured against the store ([`clock`]); every lease, rescue, sweep, expiry and
/// event time the job system writes or compares is taken from here.
pub fn now_ms() -> i64 {
    clock::system_ms() + clock::offset_ms()
}

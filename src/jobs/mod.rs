//! Asynchronous jobs (issue 4, in progress). So far: the durable job store ([`store`]): the
//! [`store::JobStore`] trait and its embedded SQLite implementation. The job runner, the jobs
//! API, the hybrid endpoint and webhooks come next and will drive it.

pub mod store;

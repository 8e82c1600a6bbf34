//! Asynchronous jobs (issue 4, in progress): the durable job store ([`store`]: the
//! [`store::JobStore`] trait and its embedded SQLite implementation) and the runner that feeds
//! job pages to the scheduler's bulk class ([`runner`]). The HTTP side is [`crate::api::jobs`].
//! The hybrid endpoint, webhooks and the batch client come next.

pub mod runner;
pub mod store;
pub mod webhook;

//! Dynamic batching across requests (issue 3, in progress). So far: the pure batch policy of a
//! stage, [`batcher::Batcher`]. The stages (detection, orientation, recognition on named worker
//! threads, each owning its session) and the HTTP API come next and will drive it.

pub mod batcher;

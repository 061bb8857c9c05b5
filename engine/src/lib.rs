//! Hearsay: a decentralized UDP gossip engine.
pub mod codec;
pub mod placement;
pub mod runtime;

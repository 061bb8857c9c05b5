//! Hearsay: a decentralized UDP gossip engine.
pub mod placement;

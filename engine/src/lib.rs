//! Hearsay: a decentralized UDP gossip engine.
//!
//! Every node runs the same code: it finds the others through any seed, agrees with them
//! on who is alive by gossip, routes keys to nodes by consistent hashing and shares soft
//! state as delta-CRDTs. There is no master, no global lock, no distributed transaction,
//! and no node trusts another's clock.
//!
//! What the crate has today:
//! - [`placement`]: every consistent-hashing scheme a router would pick behind one trait,
//!   and a [`Router`](placement::Router) whose `lookup` never blocks while membership
//!   changes;
//! - [`codec`]: the versioned wire format, with optional authenticated encryption and a
//!   rotating key ring;
//! - [`runtime`]: the thread-per-core UDP runtime (io_uring, with a portable epoll
//!   fallback) that hosts sans-IO endpoints;
//! - `sim` (feature `sim`, on by default): a deterministic single-threaded network
//!   simulator that runs thousands of the same endpoints in virtual time, with loss,
//!   latency, duplication, reordering, partitions, crashes and pauses.
//!
//! Membership and failure detection, the CRDT store and the embeddable `Engine` build on
//! these.
//!
//! ```
//! use hearsay::placement::{Node, Router, Scheme};
//!
//! let nodes: Vec<Node> = (0..5).map(|i| Node::new(i, format!("10.0.0.{i}:7946"))).collect();
//! let router = Router::new(Scheme::Ring { points_per_node: 160 }, 7, &nodes)?;
//! let owner = router.lookup("session:8f1c");
//! let mut replicas = Vec::new();
//! router.load().replicas("session:8f1c", 3, &mut replicas);
//! assert_eq!(replicas[0], owner);
//! # Ok::<(), hearsay::placement::PlacementError>(())
//! ```
#![warn(missing_docs)]

pub mod codec;
pub mod detector;
pub mod dissemination;
pub mod membership;
pub mod node;
pub mod placement;
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;

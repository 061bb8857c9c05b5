//! Hearsay: a decentralized UDP gossip engine.
//!
//! Every node runs the same code: it finds the others through any seed, agrees with them
//! on who is alive by gossip, routes keys to nodes by consistent hashing and shares soft
//! state as delta-CRDTs. There is no master, no global lock, no distributed transaction,
//! and no node trusts another's clock.
//!
//! An application embeds a node with an [`Engine`](engine::Engine): start it, point it at
//! any member as a seed, then ask it who owns a key, from any thread, without blocking.
//!
//! ```
//! use hearsay::crdt::{Kind, Op};
//! use hearsay::engine::Engine;
//! use hearsay::node::Preset;
//!
//! // A cluster of one on loopback (port 0 picks a free port). A second node would call
//! // `.seed(first.local().unwrap().addr.to_string())` to join it.
//! let engine = Engine::builder()
//!     .bind("127.0.0.1:0".parse()?)
//!     .cluster("docs")
//!     .preset(Preset::Local)
//!     .start()?;
//! let me = engine.local().expect("the local member is published at start");
//! assert_eq!(engine.lookup("session:8f1c"), me.id); // the only member owns every key
//!
//! // Soft shared state: a counter every member can increment; it replicates by gossip.
//! engine.update(b"hits", Kind::PNCounter, Op::Incr(3))?;
//! assert_eq!(engine.get(b"hits")?.and_then(|v| v.counter()), Some(3));
//! engine.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `hearsay` binary (feature `agent`, on by default) runs the same engine as a
//! standalone agent with an HTTP endpoint for metrics, debugging and a small key-value
//! API; see the README. [`build`] holds the version and build information compiled in.
//!
//! What the crate has:
//! - [`engine`]: the embeddable [`Engine`](engine::Engine) handle, which runs a node on the
//!   runtime for an application;
//! - [`node`]: the membership node, a sans-IO state machine: join through any seed, SWIM
//!   probing with Lifeguard's local health and dynamic suspicion, piggybacked
//!   dissemination, push-pull anti-entropy, drain and leave, placement rebuilt from the
//!   view, and CRDT replication; its parts live in [`membership`] (the member table, itself
//!   a CRDT), [`detector`], [`dissemination`] and [`replication`]. `engine/ALGORITHM.md`
//!   describes the protocol;
//! - [`placement`]: every consistent-hashing scheme a router would pick behind one trait,
//!   and a [`Router`](placement::Router) whose `lookup` never blocks while membership
//!   changes;
//! - [`codec`]: the versioned wire format, with optional authenticated encryption and a
//!   rotating key ring;
//! - [`crdt`]: delta-state CRDTs for soft shared state (counters, an add-wins set,
//!   registers ordered by logical clocks, an enable-wins flag and maps of them), with their
//!   compact binary encoding;
//! - [`runtime`]: the thread-per-core UDP runtime (io_uring, with a portable epoll
//!   fallback) that hosts sans-IO endpoints;
//! - `sim` (feature `sim`, on by default): a deterministic single-threaded network
//!   simulator that runs thousands of the same endpoints in virtual time, with loss,
//!   latency, duplication, reordering, partitions, crashes and pauses.
//!
//! Placement on its own, without a cluster:
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

pub mod build;
pub mod codec;
pub mod crdt;
pub mod detector;
pub mod dissemination;
pub mod engine;
pub mod membership;
pub mod node;
pub mod placement;
pub mod replication;
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;

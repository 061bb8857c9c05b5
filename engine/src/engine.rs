//! The embeddable engine: a membership [`Node`] running on the UDP runtime, behind a
//! handle that any thread can use.
//!
//! ```no_run
//! use hearsay::engine::Engine;
//! use hearsay::node::Preset;
//!
//! let engine = Engine::builder()
//!     .bind("0.0.0.0:7946".parse()?)
//!     .advertise("10.0.0.5:7946".parse()?)
//!     .seed("hearsay-0.internal:7946")
//!     .cluster("prod")
//!     .preset(Preset::Lan)
//!     .start()?;
//! let owner = engine.lookup("session:8f1c");
//! println!("{owner} owns the key; {} members", engine.members().len());
//! engine.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Reads of placement ([`Engine::lookup`], [`Engine::replicas`]) and of the member list
//! ([`Engine::members`]) are lock-free snapshot loads: they never wait for the node. Writes
//! and CRDT reads are commands executed on the node's shard thread, answered through a
//! channel; the node is never locked.
#![deny(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::codec::KeyRing;
use crate::crdt::{Kind, Op, Value};
use crate::membership::Member;
use crate::node::{Command, Event, Node, NodeConfig, NodeStats, PlacementConfig, Preset};
use crate::placement::{Key, NodeId, Router, Scheme};
use crate::replication::ReplicationError;
use crate::runtime::{
    BackendChoice, BackendInfo, Endpoint, EndpointId, Runtime, RuntimeConfig, RuntimeError, Stats,
};

/// How long a query waits for the node's shard before giving up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the engine API. Each names what went wrong; none leaves the engine half-built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A builder field is invalid.
    #[error("invalid engine config `{field}`: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The node configuration derived from the builder is invalid.
    #[error(transparent)]
    Node(#[from] crate::node::ConfigError),
    /// A seed could not be resolved.
    #[error("cannot resolve seed `{seed}`: {reason}")]
    Seed {
        /// The seed as given.
        seed: String,
        /// Why.
        reason: String,
    },
    /// The runtime could not start or bind.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The node's shard did not answer in time (it is overloaded or gone).
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    /// The CRDT store refused a mutation.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
}

/// Builds an [`Engine`]. Every setting has a default except [`bind`](Self::bind).
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    bind: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    cluster: Vec<u8>,
    keys: Option<KeyRing>,
    shards: usize,
    preset: Preset,
    placement: PlacementConfig,
    metadata: Vec<u8>,
    backend: BackendChoice,
    configure: Option<fn(&mut NodeConfig)>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            bind: None,
            advertise: None,
            seeds: Vec::new(),
            cluster: b"hearsay".to_vec(),
            keys: None,
            shards: 1,
            preset: Preset::Lan,
            placement: PlacementConfig {
                scheme: Scheme::Ring {
                    points_per_node: 160,
                },
                seed: 0,
            },
            metadata: Vec::new(),
            backend: BackendChoice::Auto,
            configure: None,
        }
    }
}

impl EngineBuilder {
    /// The local address to bind (port 0 picks one).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// The address other members reach this node at, when it differs from the bound one
    /// (NAT, containers, binding 0.0.0.0). Default: the bound address.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// A seed as `host:port` (a DNS name or an address), resolved at start. Any member can
    /// be a seed; with none, the node starts a new cluster.
    pub fn seed(mut self, seed: impl Into<String>) -> Self {
        self.seeds.push(seed.into());
        self
    }

    /// The cluster label: frames of other clusters are refused. Default `hearsay`.
    pub fn cluster(mut self, label: impl AsRef<[u8]>) -> Self {
        self.cluster = label.as_ref().to_vec();
        self
    }

    /// Seal every frame with this key ring (every member must hold the primary key).
    pub fn keys(mut self, keys: KeyRing) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Runtime shard threads. Default 1: one node is driven by one thread.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Timing preset. Default [`Preset::Lan`].
    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// Placement scheme and key hash seed (every member must use the same). Default: ring
    /// with 160 points per node, seed 0.
    pub fn placement(mut self, scheme: Scheme, seed: u64) -> Self {
        self.placement = PlacementConfig { scheme, seed };
        self
    }

    /// Metadata announced with this node.
    pub fn metadata(mut self, metadata: impl Into<Vec<u8>>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Runtime backend. Default [`BackendChoice::Auto`] (io_uring when available).
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }

    /// Adjust the node configuration the builder derives, before it is validated.
    pub fn configure(mut self, f: fn(&mut NodeConfig)) -> Self {
        self.configure = Some(f);
        self
    }

    /// Resolve the seeds, start the runtime, bind and join.
    pub fn start(self) -> Result<Engine, EngineError> {
        let bind = self.bind.ok_or(EngineError::Config {
            field: "bind",
            reason: "no bind address given".into(),
        })?;
        if self.shards == 0 {
            return Err(EngineError::Config {
                field: "shards",
                reason: "must be at least 1".into(),
            });
        }
        let mut seeds = Vec::new();
        for s in &self.seeds {
            let addr = s
                .to_socket_addrs()
                .map_err(|e| EngineError::Seed {
                    seed: s.clone(),
                    reason: e.to_string(),
                })?
                .next()
                .ok_or_else(|| EngineError::Seed {
                    seed: s.clone(),
                    reason: "no address".into(),
                })?;
            seeds.push(addr);
        }
        // Validate the node configuration before binding anything.
        let probe_addr = self.advertise.unwrap_or(bind);
        let config = self.node_config(probe_addr);
        // Building a node checks the configuration and the placement parameters, so the
        // node built on the shard below cannot fail for them.
        drop(Node::new(config.clone(), Instant::now())?);
        let runtime = Runtime::start(RuntimeConfig {
            shards: self.shards,
            backend: self.backend,
            max_datagram_size: config.max_datagram,
            ..RuntimeConfig::default()
        })?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::sync_channel(1);
        let builder = self.clone();
        let shared2 = Arc::clone(&shared);
        let id = runtime.add_endpoint(bind, move |local| {
            let advertise = builder.advertise.unwrap_or(local);
            let config = builder.node_config(advertise);
            match Hosted::new(config, Instant::now(), shared2) {
                Ok(h) => {
                    let _ = tx.send(h.router().ok_or_else(|| "no placement".to_string()));
                    h
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    Hosted::failed()
                }
            }
        })?;
        let router = match rx.recv_timeout(QUERY_TIMEOUT) {
            Ok(Ok(router)) => router,
            Ok(Err(reason)) => {
                let _ = runtime.shutdown();
                return Err(EngineError::Config {
                    field: "node",
                    reason,
                });
            }
            Err(_) => {
                let _ = runtime.shutdown();
                return Err(EngineError::Timeout(QUERY_TIMEOUT));
            }
        };
        let engine = Engine {
            runtime: Some(runtime),
            id,
            router,
            shared,
        };
        engine.send(HostCommand::Node(Command::Join(seeds)))?;
        Ok(engine)
    }

    fn node_config(&self, addr: SocketAddr) -> NodeConfig {
        let mut c = NodeConfig::new(self.preset, addr, &self.cluster);
        c.keys = self.keys.clone();
        c.metadata = self.metadata.clone();
        c.placement = Some(self.placement);
        if let Some(f) = self.configure {
            f(&mut c);
        }
        c
    }
}

/// A command to the hosted node.
enum HostCommand {
    Node(Command),
    /// Run on the node's thread (queries, CRDT writes with an answer).
    Inspect(Box<dyn FnOnce(&mut Node) + Send>),
}

/// State shared between the node's thread and the handle.
#[derive(Default)]
struct Shared {
    members: ArcSwap<Vec<Member>>,
    local: ArcSwap<Option<Member>>,
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    tx: SyncSender<Event>,
    lagged: Arc<AtomicU64>,
    /// Only [`Event::CrdtChanged`] for keys that start with this prefix.
    prefix: Option<Vec<u8>>,
}

impl Subscriber {
    fn wants(&self, e: &Event) -> bool {
        match (&self.prefix, e) {
            (None, _) => true,
            (Some(p), Event::CrdtChanged(key)) => key.starts_with(p),
            (Some(_), _) => false,
        }
    }
}

/// The node as the runtime hosts it: forwards events to subscribers and publishes the
/// member list after every change.
struct Hosted {
    node: Option<Node>,
    shared: Arc<Shared>,
    published_hash: u64,
    published_len: usize,
    published_local: Option<(u64, bool)>,
}

impl Hosted {
    fn new(config: NodeConfig, now: Instant, shared: Arc<Shared>) -> Result<Self, EngineError> {
        let node = Node::new(config, now)?;
        let mut h = Self {
            node: Some(node),
            shared,
            published_hash: 0,
            published_len: 0,
            published_local: None,
        };
        h.publish();
        Ok(h)
    }

    /// A placeholder when the node could not be built (the error went to the caller).
    fn failed() -> Self {
        Self {
            node: None,
            shared: Arc::new(Shared::default()),
            published_hash: 0,
            published_len: 0,
            published_local: None,
        }
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.node.as_ref().and_then(|n| n.router().cloned())
    }

    fn publish(&mut self) {
        let Some(node) = &mut self.node else { return };
        while let Some(e) = node.poll_event() {
            let mut subs = self
                .shared
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            subs.retain(|s| match s.wants(&e).then(|| s.tx.try_send(e.clone())) {
                None | Some(Ok(())) => true,
                Some(Err(TrySendError::Full(_))) => {
                    s.lagged.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Some(Err(TrySendError::Disconnected(_))) => false,
            });
        }
        let hash = node.view_hash();
        let len = node.member_count();
        if hash != self.published_hash || len != self.published_len {
            self.published_hash = hash;
            self.published_len = len;
            let mut members: Vec<Member> = node.members().map(|m| m.to_member()).collect();
            members.sort_by_key(|m| m.id);
            self.shared.members.store(Arc::new(members));
        }
        let local = node.local();
        let key = (local.incarnation, local.drained);
        if self.published_local != Some(key) {
            self.published_local = Some(key);
            self.shared.local.store(Arc::new(Some(local.to_member())));
        }
    }
}

impl Endpoint for Hosted {
    type Command = HostCommand;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        if let Some(n) = &mut self.node {
            n.handle_datagram(now, from, data);
        }
        self.publish();
    }

    fn handle_input_delay(&mut self, now: Instant, delay: std::time::Duration) {
        if let Some(n) = &mut self.node {
            n.handle_input_delay(now, delay);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(n) = &mut self.node {
            n.handle_timeout(now);
        }
        self.publish();
    }

    fn handle_command(&mut self, now: Instant, cmd: HostCommand) {
        if let Some(n) = &mut self.node {
            match cmd {
                HostCommand::Node(c) => n.handle_command(now, c),
                HostCommand::Inspect(f) => f(n),
            }
        }
        self.publish();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.node.as_mut()?.poll_transmit(now, buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.node.as_ref()?.poll_timeout()
    }
}

/// Membership and placement events, delivered through a bounded channel that never blocks
/// the engine: when it is full, events are dropped and counted in
/// [`lagged`](Subscription::lagged).
pub struct Subscription {
    rx: Receiver<Event>,
    lagged: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Events dropped because this subscriber was too slow.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

/// A running node. Cheap to share by reference across threads; [`shutdown`](Self::shutdown)
/// (or drop) stops it cleanly.
pub struct Engine {
    runtime: Option<Runtime<Hosted>>,
    id: EndpointId,
    router: Arc<Router>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("endpoint", &self.id)
            .finish()
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    fn runtime(&self) -> Result<&Runtime<Hosted>, EngineError> {
        self.runtime
            .as_ref()
            .ok_or(EngineError::Timeout(Duration::ZERO))
    }

    fn send(&self, cmd: HostCommand) -> Result<(), EngineError> {
        self.runtime()?.command(self.id, cmd)?;
        Ok(())
    }

    /// Run `f` on the node's thread and wait for its answer.
    fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(HostCommand::Inspect(Box::new(move |n| {
            let _ = tx.send(f(n));
        })))?;
        rx.recv_timeout(QUERY_TIMEOUT)
            .map_err(|_| EngineError::Timeout(QUERY_TIMEOUT))
    }

    /// The owner of a key in the current placement. Wait-free, allocation-free.
    pub fn lookup<'k>(&self, key: impl Into<Key<'k>>) -> NodeId {
        self.router.lookup(key)
    }

    /// `n` distinct owners of a key, the primary first, into `out`.
    pub fn replicas<'k>(&self, key: impl Into<Key<'k>>, n: usize, out: &mut Vec<NodeId>) {
        self.router.load().replicas(key, n, out);
    }

    /// The router, for callers that want snapshots (`router().load()`).
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Every member this node knows, tombstones included, in id order. A snapshot.
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.shared.members.load_full()
    }

    /// This node's own entry.
    pub fn local(&self) -> Option<Member> {
        self.shared.local.load().as_ref().clone()
    }

    /// Subscribe to every event (membership, placement, CRDT changes) with a channel of
    /// `capacity`.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.add_subscriber(capacity, None)
    }

    /// Subscribe to changes of the CRDT keys that start with `prefix` (an empty prefix
    /// watches every key): one [`Event::CrdtChanged`] each time this node's value of such a
    /// key changes, by a local write or a merge from a peer. Read the new value with
    /// [`get`](Self::get); several changes may arrive before the read, and the read returns
    /// the latest.
    pub fn subscribe_prefix(&self, prefix: &[u8], capacity: usize) -> Subscription {
        self.add_subscriber(capacity, Some(prefix.to_vec()))
    }

    fn add_subscriber(&self, capacity: usize, prefix: Option<Vec<u8>>) -> Subscription {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let lagged = Arc::new(AtomicU64::new(0));
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                tx,
                lagged: Arc::clone(&lagged),
                prefix,
            });
        Subscription { rx, lagged }
    }

    /// Apply a CRDT mutation on this node; it replicates in the background.
    pub fn update(&self, key: &[u8], kind: Kind, op: Op) -> Result<(), EngineError> {
        let key = key.to_vec();
        self.query(move |n| n.crdt_update(Instant::now(), &key, kind, &op))??;
        Ok(())
    }

    /// This node's value of a CRDT key.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, EngineError> {
        let key = key.to_vec();
        self.query(move |n| n.crdt_get(&key).cloned())
    }

    /// Run a read-only inspection on the node's thread (debug dumps, metrics).
    pub fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        self.query(move |n| f(n))
    }

    /// The node's counters.
    pub fn stats(&self) -> Result<NodeStats, EngineError> {
        self.inspect(|n| n.stats().clone())
    }

    /// The runtime's counters (datagrams, drops, queue depths).
    pub fn runtime_stats(&self) -> Result<Stats, EngineError> {
        Ok(self.runtime()?.stats())
    }

    /// The runtime's counters per shard thread, in shard order (the node runs on one;
    /// queue depths are per shard).
    pub fn shard_stats(&self) -> Result<Vec<Stats>, EngineError> {
        Ok(self.runtime()?.shard_stats())
    }

    /// The runtime backend in use.
    pub fn backend(&self) -> Result<BackendInfo, EngineError> {
        Ok(self.runtime()?.backend().clone())
    }

    /// Leave placement but stay a member.
    pub fn drain(&self) -> Result<(), EngineError> {
        self.send(HostCommand::Node(Command::Drain))
    }

    /// Return to placement.
    pub fn undrain(&self) -> Result<(), EngineError> {
        self.send(HostCommand::Node(Command::Undrain))
    }

    /// Replace this node's metadata.
    pub fn set_metadata(&self, metadata: Vec<u8>) -> Result<(), EngineError> {
        self.send(HostCommand::Node(Command::SetMetadata(metadata)))
    }

    /// Leave the cluster gracefully: announce it, wait until the node stopped (at most
    /// `timeout`), then shut down.
    pub fn leave(self, timeout: Duration) -> Result<(), EngineError> {
        self.send(HostCommand::Node(Command::Leave))?;
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.inspect(|n| n.is_stopped())? {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shutdown()
    }

    /// Stop the runtime: threads joined, sockets closed.
    pub fn shutdown(mut self) -> Result<(), EngineError> {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown()?;
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _ = rt.shutdown();
        }
    }
}

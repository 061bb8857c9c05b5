//! A deterministic, single-threaded network simulator for sans-IO [`Endpoint`]s.
//!
//! [`Sim`] hosts any number of endpoints of one type on an in-memory network and drives
//! them exactly as the runtime does: every input carries `now`, after every input the
//! simulator drains [`Endpoint::poll_transmit`] and re-reads [`Endpoint::poll_timeout`].
//! Nothing is threaded and nothing sleeps: virtual time jumps straight to the next
//! event, so a minute of cluster life costs only the work the endpoints do in it.
//!
//! # What it models
//!
//! - **Time.** One [`Instant::now`] is taken as the epoch when the simulator is built;
//!   virtual now is the epoch plus an offset ([`Sim::now`], [`Sim::elapsed`]). Events are
//!   datagram deliveries, endpoint deadlines and pause ends; ties are broken by the order
//!   in which they were scheduled. `handle_timeout` is called only once virtual now has
//!   reached the endpoint's current `poll_timeout`, never early. A deadline in the past
//!   fires at now, so an endpoint that keeps returning one after `handle_timeout` keeps
//!   being called at the same instant and the run never ends, as it would spin a runtime
//!   shard.
//! - **Links.** Every directed link has a [`LinkConfig`]: loss, a [`Latency`]
//!   distribution (constant, uniform, or a capped log-normal tail), duplication and an
//!   explicit reorder probability (jitter reorders too). The condition of a link is the
//!   first of: its own override ([`Sim::set_link`]), the sender's node condition, the
//!   receiver's node condition ([`Sim::set_node_link`]), the default
//!   ([`Sim::set_default_link`]).
//! - **Partitions.** [`Sim::partition`] splits the nodes into groups that cannot reach
//!   each other until [`Sim::heal`]. The cut is checked when a datagram is sent: one
//!   already in flight when the partition starts still arrives.
//! - **Nodes.** Node `i` lives at the IPv4 address `10.x.y.z:7946` where `x.y.z` encodes
//!   `i + 1` ([`Sim::addr`]). A node can be killed (its endpoint is dropped, datagrams to
//!   it are lost), restarted at the same address with a fresh endpoint, or paused like a
//!   process stalled by a GC pause or a stopped VM: no timeouts and no deliveries until it
//!   resumes, datagrams and commands queue meanwhile (datagrams up to
//!   [`SimConfig::pause_queue_limit`]), and at resume the endpoint gets the queue, each
//!   datagram after a `handle_input_delay` with how long it waited (as a kernel socket's
//!   receive timestamp tells the runtime), then a late `handle_timeout` if its deadline
//!   passed.
//! - **Size.** Datagrams longer than [`SimConfig::max_datagram_size`] are counted in
//!   [`SimStats::oversize`] and dropped, as the runtime drops them.
//!
//! It does not model bandwidth, queueing or congestion (a link carries any number of
//! datagrams at once and loss does not depend on load), MTU fragmentation, corruption,
//! asymmetric routes other than by per-direction overrides, clock skew between nodes (all
//! endpoints share one virtual clock) or CPU time (handling an input takes no virtual
//! time).
//!
//! # Determinism
//!
//! One [`SmallRng`] seeded from [`SimConfig::seed`] draws every random choice, events are
//! ordered by (time, sequence number) and no decision depends on hash-map iteration
//! order, so the same seed and the same calls give the same run bit for bit.
//! [`Sim::trace_digest`] hashes every delivery (virtual time, sender, receiver, bytes) so a
//! test can assert it. The digest is stable for one build: `SmallRng`'s algorithm may
//! change between `rand` versions and platforms, and log-normal sampling uses `libm`
//! functions.
//!
//! # Cost
//!
//! Each event costs O(log n) in the event heap. Node addresses are computed, not looked
//! up. Payload buffers are pooled, so a datagram allocates nothing once the pool has
//! grown to the peak number in flight. Per-node counters live in a `Vec`.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use hearsay::runtime::Endpoint;
//! use hearsay::sim::{Latency, LinkConfig, Sim, SimConfig};
//!
//! /// Answers every datagram with the same bytes, once; sends one `ping` on command.
//! #[derive(Default)]
//! struct Pinger { out: Vec<(SocketAddr, Vec<u8>)>, got: Vec<(Instant, Vec<u8>)> }
//!
//! impl Endpoint for Pinger {
//!     type Command = SocketAddr;
//!     fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
//!         self.got.push((now, data.to_vec()));
//!         if data == b"ping" {
//!             self.out.push((from, b"pong".to_vec()));
//!         }
//!     }
//!     fn handle_timeout(&mut self, _now: Instant) {}
//!     fn handle_command(&mut self, _now: Instant, to: SocketAddr) {
//!         self.out.push((to, b"ping".to_vec()));
//!     }
//!     fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
//!         let (to, data) = self.out.pop()?;
//!         buf.extend_from_slice(&data);
//!         Some(to)
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! let mut sim = Sim::new(SimConfig {
//!     seed: 42,
//!     default_link: LinkConfig::new(Latency::Constant(Duration::from_millis(5))),
//!     ..SimConfig::default()
//! })?;
//! let a = sim.add_node(|_addr| Pinger::default());
//! let b = sim.add_node(|_addr| Pinger::default());
//! let b_addr = sim.addr(b).unwrap();
//! sim.command(a, b_addr)?;
//! sim.run_for(Duration::from_secs(1));
//!
//! // One round trip of 2 × 5 ms.
//! let (at, pong) = &sim.node(a).unwrap().got[0];
//! assert_eq!(pong, b"pong");
//! assert_eq!(*at - sim.epoch(), Duration::from_millis(10));
//! assert_eq!(sim.stats().received, 2);
//! # Ok::<(), hearsay::sim::SimError>(())
//! ```
#![deny(unsafe_code)]

mod link;
mod scenario;
mod stats;

#[cfg(test)]
mod probe;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use xxhash_rust::xxh3::Xxh3;

use crate::runtime::{Endpoint, MAX_UDP_PAYLOAD};
use link::nanos;
use stats::Counters;

pub use link::{Latency, LinkConfig};
pub use scenario::Op;
pub use stats::SimStats;

/// The UDP port of every simulated node unless [`SimConfig::port`] says otherwise.
pub const DEFAULT_PORT: u16 = 7946;

/// The most nodes one simulator holds: the addresses `10.0.0.1` to `10.255.255.254`.
pub const MAX_NODES: usize = 0x00FF_FFFE;

/// The address node `index` gets in a simulator whose nodes use `port`: `10.x.y.z` where
/// `x.y.z` are the low three bytes of `index + 1`, so node 0 is `10.0.0.1`. `None` past
/// [`MAX_NODES`]. Useful to script commands naming nodes that are not added yet.
pub fn node_addr(index: usize, port: u16) -> Option<SocketAddr> {
    if index >= MAX_NODES {
        return None;
    }
    let [_, x, y, z] = (index as u32 + 1).to_be_bytes();
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, x, y, z),
        port,
    )))
}

/// How often [`Sim::run_until`] evaluates its predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// After every `n`th processed event (and once at the deadline). `Events(1)` sees the
    /// exact instant a condition becomes true but calls the predicate once per event:
    /// with an O(n) predicate on a large network that dominates the run.
    Events(u64),
    /// At every multiple of this virtual interval after the call (and once at the
    /// deadline), after the events due at that instant. The predicate cost then depends
    /// on simulated time only, whatever the event rate; success is reported at the check
    /// instant, so up to one interval late.
    Interval(Duration),
}

/// Settings of a [`Sim`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds the one RNG behind every random choice of the network.
    pub seed: u64,
    /// The link condition of every pair without an override.
    pub default_link: LinkConfig,
    /// Datagrams longer than this are counted as oversize and dropped. Also the capacity
    /// of the buffer handed to [`Endpoint::poll_transmit`]. At most
    /// [`MAX_UDP_PAYLOAD`]; default 1400, as the runtime.
    pub max_datagram_size: usize,
    /// How many datagrams a paused node queues; later ones are dropped and counted in
    /// [`SimStats::dropped_paused`]. Default 1024, a typical socket receive queue.
    pub pause_queue_limit: usize,
    /// When [`Sim::run_until`] checks its predicate. Default `Check::Events(1)`: see [`Check`].
    pub check: Check,
    /// The port of every node address. Default [`DEFAULT_PORT`].
    pub port: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            default_link: LinkConfig::default(),
            max_datagram_size: 1400,
            pause_queue_limit: 1024,
            check: Check::Events(1),
            port: DEFAULT_PORT,
        }
    }
}

impl SimConfig {
    /// Checks every field; [`Sim::new`] does this too.
    pub fn validate(&self) -> Result<(), SimError> {
        self.default_link.validate()?;
        if !(1..=MAX_UDP_PAYLOAD).contains(&self.max_datagram_size) {
            return Err(SimError::InvalidConfig {
                field: "max_datagram_size",
                reason: format!("{} is not in 1..={MAX_UDP_PAYLOAD}", self.max_datagram_size),
            });
        }
        validate_check(self.check)
    }
}

fn validate_check(check: Check) -> Result<(), SimError> {
    match check {
        Check::Events(0) => Err(SimError::InvalidConfig {
            field: "check",
            reason: "Check::Events needs at least 1 event".into(),
        }),
        Check::Interval(Duration::ZERO) => Err(SimError::InvalidConfig {
            field: "check",
            reason: "Check::Interval needs a non-zero interval".into(),
        }),
        _ => Ok(()),
    }
}

/// Errors of the simulator API. None of them changes the simulation's state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// No node has this index (it was never added).
    #[error("no node {0}")]
    UnknownNode(usize),
    /// The node was killed and not restarted, so it cannot take this input.
    #[error("node {0} is dead")]
    NodeDead(usize),
    /// A [`LinkConfig`] field is out of range.
    #[error("invalid link config `{field}`: {reason}")]
    InvalidLink {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`SimConfig`] field is out of range.
    #[error("invalid sim config `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Operation number `op` (from 0) of a scenario failed; the operations before it were
    /// applied, the ones after it were not.
    #[error("scenario op {op} failed: {source}")]
    Scenario {
        /// The index of the failing operation.
        op: usize,
        /// Why it failed.
        #[source]
        source: Box<SimError>,
    },
}

/// A deterministic in-memory network of endpoints of type `E`. See the
/// [module docs](self).
pub struct Sim<E: Endpoint> {
    nodes: Vec<Slot<E>>,
    net: Net,
    /// The one buffer every `poll_transmit` writes into; payloads are copied out of it
    /// into pooled buffers sized to fit, so in-flight datagrams never hold
    /// `max_datagram_size` bytes each.
    buf: Vec<u8>,
}

/// One node: its endpoint (if alive) and the simulator's view of its timer and pause.
struct Slot<E: Endpoint> {
    endpoint: Option<E>,
    /// The deadline of the node's one live timer entry, as an offset.
    timer_at: Option<u64>,
    /// Bumped whenever the live entry is replaced, so the replaced ones left in the heap
    /// are recognised as stale when they surface.
    timer_gen: u32,
    /// When a pause ends, as an offset; `None` when running.
    paused_until: Option<u64>,
    /// What arrived during a pause, in arrival order.
    pending: VecDeque<Pending<E::Command>>,
    pending_datagrams: usize,
}

impl<E: Endpoint> Slot<E> {
    fn new() -> Self {
        Slot {
            endpoint: None,
            timer_at: None,
            timer_gen: 0,
            paused_until: None,
            pending: VecDeque::new(),
            pending_datagrams: 0,
        }
    }

    /// Forgets the live timer entry so that it surfaces as stale; says whether there was
    /// one.
    fn cancel_timer(&mut self) -> bool {
        self.timer_gen = self.timer_gen.wrapping_add(1);
        self.timer_at.take().is_some()
    }
}

enum Pending<C> {
    /// A datagram that reached a paused node at virtual time `arrived`.
    Datagram {
        from: u32,
        data: Vec<u8>,
        arrived: u64,
    },
    Command(C),
}

/// A datagram on the wire.
struct Flight {
    from: u32,
    to: u32,
    data: Vec<u8>,
}

/// A scheduled event. The heap holds only these small records; payloads stay in the
/// flight slab.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: u64,
    /// Unique and increasing: orders simultaneous events by when they were scheduled.
    seq: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Deliver the flight in this slab slot.
    Deliver(u32),
    /// The node's deadline, valid while the node's `timer_gen` still equals `gen`.
    Timer { node: u32, gen: u32 },
    /// The node's pause ends, valid while its `paused_until` is still this event's time.
    Resume(u32),
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Everything but the endpoints, so that an endpoint can be borrowed while its output is
/// sent.
struct Net {
    config: SimConfig,
    epoch: Instant,
    /// Virtual now, in nanoseconds after the epoch.
    now: u64,
    seq: u64,
    events: BinaryHeap<Event>,
    /// About how many heap entries are stale (superseded timers and pause ends).
    stale: usize,
    processed: u64,
    rng: SmallRng,
    flights: Vec<Flight>,
    free_flights: Vec<u32>,
    /// Datagrams waiting in pause queues.
    queued: usize,
    /// Cleared payload buffers for reuse.
    pool: Vec<Vec<u8>>,
    link_overrides: HashMap<(u32, u32), LinkConfig>,
    /// Boxed so that nodes without a condition cost one pointer.
    node_links: Vec<Option<Box<LinkConfig>>>,
    /// Partition group per node; 0 is everyone not named in a group.
    groups: Vec<u32>,
    partitioned: bool,
    counters: Counters,
    /// Boxed: the streaming state is about 600 bytes.
    digest: Box<Xxh3>,
}

impl Net {
    fn instant(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now)
    }

    /// `t` as an offset from the epoch; instants before the epoch map to 0.
    fn offset(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.epoch))
    }

    fn push(&mut self, at: u64, kind: Kind) {
        self.seq += 1;
        self.events.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// The address of an existing node, whose index is below `MAX_NODES`.
    fn addr_of(&self, index: usize) -> SocketAddr {
        node_addr(index, self.config.port).unwrap_or_else(|| unreachable!("index {index}"))
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        let SocketAddr::V4(v4) = addr else {
            return None;
        };
        let [a, x, y, z] = v4.ip().octets();
        if a != 10 || v4.port() != self.config.port {
            return None;
        }
        let index = (u32::from_be_bytes([0, x, y, z]) as usize).checked_sub(1)?;
        (index < self.counters.nodes.len()).then_some(index)
    }

    fn link(&self, from: usize, to: usize) -> &LinkConfig {
        // Most runs set no per-link override; skip hashing the pair for them.
        if !self.link_overrides.is_empty() {
            if let Some(link) = self.link_overrides.get(&(from as u32, to as u32)) {
                return link;
            }
        }
        self.node_links[from]
            .as_deref()
            .or(self.node_links[to].as_deref())
            .unwrap_or(&self.config.default_link)
    }

    fn recycle(&mut self, mut data: Vec<u8>) {
        data.clear();
        self.pool.push(data);
    }

    /// Puts one datagram from node `from` on the network, drawing its fate.
    fn send(&mut self, from: usize, to: SocketAddr, data: &[u8]) {
        if data.len() > self.config.max_datagram_size {
            self.counters.add(from, |s| s.oversize += 1);
            return;
        }
        let len = data.len() as u64;
        self.counters.add(from, |s| {
            s.sent += 1;
            s.sent_bytes += len;
        });
        let Some(dst) = self.index_of(to) else {
            self.counters.add(from, |s| s.dropped_dead += 1);
            return;
        };
        if self.partitioned && self.groups[from] != self.groups[dst] {
            self.counters.add(from, |s| s.dropped_partition += 1);
            return;
        }
        let link = *self.link(from, dst);
        // Zero probabilities draw nothing, so adding a lossless link to a scenario does
        // not shift the random stream of the rest.
        if link.loss > 0.0 && self.rng.random::<f64>() < link.loss {
            self.counters.add(from, |s| s.lost += 1);
            return;
        }
        let copies = if link.duplicate > 0.0 && self.rng.random::<f64>() < link.duplicate {
            self.counters.add(from, |s| s.duplicated += 1);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = link.latency.sample(&mut self.rng);
            if link.reorder > 0.0 && self.rng.random::<f64>() < link.reorder {
                delay = delay.saturating_add(nanos(link.reorder_delay));
            }
            let mut payload = self.pool.pop().unwrap_or_default();
            payload.extend_from_slice(data);
            let flight = Flight {
                from: from as u32,
                to: dst as u32,
                data: payload,
            };
            let slot = match self.free_flights.pop() {
                Some(slot) => {
                    self.flights[slot as usize] = flight;
                    slot
                }
                None => {
                    self.flights.push(flight);
                    (self.flights.len() - 1) as u32
                }
            };
            self.push(self.now.saturating_add(delay), Kind::Deliver(slot));
        }
    }

    /// Takes the flight out of its slab slot and frees the slot.
    fn take_flight(&mut self, slot: u32) -> (u32, u32, Vec<u8>) {
        let flight = &mut self.flights[slot as usize];
        let data = std::mem::take(&mut flight.data);
        self.free_flights.push(slot);
        (flight.from, flight.to, data)
    }

    /// Folds one delivery into the trace digest.
    fn record(&mut self, from: u32, to: usize, data: &[u8]) {
        let mut header = [0u8; 20];
        header[..8].copy_from_slice(&self.now.to_le_bytes());
        header[8..12].copy_from_slice(&from.to_le_bytes());
        header[12..16].copy_from_slice(&(to as u32).to_le_bytes());
        header[16..].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.digest.update(&header);
        self.digest.update(data);
    }
}

impl<E: Endpoint> Sim<E> {
    /// An empty network with these settings, at virtual time zero.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let buf = Vec::with_capacity(config.max_datagram_size);
        let rng = SmallRng::seed_from_u64(config.seed);
        Ok(Sim {
            nodes: Vec::new(),
            net: Net {
                config,
                epoch: Instant::now(),
                now: 0,
                seq: 0,
                events: BinaryHeap::new(),
                stale: 0,
                processed: 0,
                rng,
                flights: Vec::new(),
                free_flights: Vec::new(),
                queued: 0,
                pool: Vec::new(),
                link_overrides: HashMap::new(),
                node_links: Vec::new(),
                groups: Vec::new(),
                partitioned: false,
                counters: Counters::default(),
                digest: Box::new(Xxh3::new()),
            },
            buf,
        })
    }

    /// An empty network with default settings and this seed.
    pub fn with_seed(seed: u64) -> Self {
        let config = SimConfig {
            seed,
            ..SimConfig::default()
        };
        match Self::new(config) {
            Ok(sim) => sim,
            // The default configuration is valid; the tests check it.
            Err(e) => unreachable!("default SimConfig rejected: {e}"),
        }
    }

    /// The settings in force (links and check mode as last set).
    pub fn config(&self) -> &SimConfig {
        &self.net.config
    }

    /// The real instant taken as virtual time zero.
    pub fn epoch(&self) -> Instant {
        self.net.epoch
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.net.instant()
    }

    /// Virtual time since the simulator was built.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.net.now)
    }

    /// How many nodes were ever added, dead ones included; indices run `0..len()`.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was ever added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// How many nodes are alive (paused ones included).
    pub fn alive_count(&self) -> usize {
        self.nodes.iter().filter(|s| s.endpoint.is_some()).count()
    }

    /// The address of node `i`, dead or alive; `None` if there is no such node.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        (i < self.nodes.len()).then(|| self.net.addr_of(i))
    }

    /// The index of the node at `addr`, dead or alive.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.net.index_of(addr)
    }

    /// Whether node `i` exists and is not dead (a paused node is alive).
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|s| s.endpoint.is_some())
    }

    /// Whether node `i` is alive and paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|s| s.endpoint.is_some() && s.paused_until.is_some())
    }

    /// The endpoint of node `i`, if it exists and is alive.
    pub fn node(&self, i: usize) -> Option<&E> {
        self.nodes.get(i)?.endpoint.as_ref()
    }

    /// The endpoint of node `i`, if it exists and is alive. The simulator does not see
    /// what is done through this reference until the endpoint's next input: call
    /// [`flush`](Self::flush) if the change makes it want to send or moves its deadline.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut E> {
        self.nodes.get_mut(i)?.endpoint.as_mut()
    }

    /// Drains node `i`'s `poll_transmit` and re-reads its `poll_timeout`, as after any
    /// input. A paused node is left alone: it is flushed when it resumes.
    pub fn flush(&mut self, i: usize) -> Result<(), SimError> {
        self.live_slot(i)?;
        self.flush_node(i);
        Ok(())
    }

    /// The alive endpoints with their indices, in index order.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &E)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.endpoint.as_ref().map(|e| (i, e)))
    }

    /// Adds a node at the next address and returns its index. `factory` gets the address
    /// and builds the endpoint at virtual now; whatever it wants to send right away is
    /// sent.
    ///
    /// # Panics
    ///
    /// If the network already holds [`MAX_NODES`] nodes.
    pub fn add_node(&mut self, factory: impl FnOnce(SocketAddr) -> E) -> usize {
        let i = self.nodes.len();
        assert!(
            i < MAX_NODES,
            "the simulator holds at most {MAX_NODES} nodes"
        );
        self.nodes.push(Slot::new());
        self.net.counters.nodes.push(SimStats::default());
        self.net.node_links.push(None);
        self.net.groups.push(0);
        self.nodes[i].endpoint = Some(factory(self.net.addr_of(i)));
        self.flush_node(i);
        i
    }

    /// Kills node `i`: its endpoint is dropped, its timer and pause are cancelled, what
    /// waited in its pause queue is dropped and datagrams reaching its address are lost
    /// until [`restart`](Self::restart). Killing a dead node does nothing.
    pub fn kill(&mut self, i: usize) -> Result<(), SimError> {
        let slot = self.nodes.get_mut(i).ok_or(SimError::UnknownNode(i))?;
        slot.endpoint = None;
        let stale = usize::from(slot.cancel_timer()) + usize::from(slot.paused_until.is_some());
        self.net.stale += stale;
        slot.paused_until = None;
        slot.pending_datagrams = 0;
        let mut pending = std::mem::take(&mut slot.pending);
        for p in pending.drain(..) {
            if let Pending::Datagram { from, data, .. } = p {
                self.net.queued -= 1;
                self.net
                    .counters
                    .add(from as usize, |s| s.dropped_dead += 1);
                self.net.recycle(data);
            }
        }
        self.nodes[i].pending = pending;
        Ok(())
    }

    /// Reboots node `i` at the same address: the old endpoint (if alive) is dropped as by
    /// [`kill`](Self::kill) and `factory` builds a fresh one at virtual now. Datagrams
    /// still in flight to the address reach the new endpoint, as they would a rebooted
    /// host.
    pub fn restart(
        &mut self,
        i: usize,
        factory: impl FnOnce(SocketAddr) -> E,
    ) -> Result<(), SimError> {
        self.kill(i)?;
        self.nodes[i].endpoint = Some(factory(self.net.addr_of(i)));
        self.flush_node(i);
        Ok(())
    }

    /// Stalls node `i` for `duration` of virtual time (see the [module docs](self)).
    /// Pausing a paused node extends the pause if this one ends later.
    pub fn pause(&mut self, i: usize, duration: Duration) -> Result<(), SimError> {
        let until = self.net.now.saturating_add(nanos(duration));
        let slot = self.live_slot(i)?;
        if slot.paused_until.is_some_and(|end| end >= until) {
            return Ok(());
        }
        let stale = usize::from(slot.paused_until.is_some()) + usize::from(slot.cancel_timer());
        slot.paused_until = Some(until);
        self.net.stale += stale;
        self.net.push(until, Kind::Resume(i as u32));
        Ok(())
    }

    /// Hands `cmd` to node `i` at virtual now; a paused node gets it when it resumes, in
    /// order with the datagrams that arrived meanwhile.
    pub fn command(&mut self, i: usize, cmd: E::Command) -> Result<(), SimError> {
        let now = self.net.instant();
        let slot = self.live_slot(i)?;
        if slot.paused_until.is_some() {
            slot.pending.push_back(Pending::Command(cmd));
            return Ok(());
        }
        if let Some(ep) = slot.endpoint.as_mut() {
            ep.handle_command(now, cmd);
        }
        self.flush_node(i);
        Ok(())
    }

    /// Splits the network: only nodes in the same group reach each other. Nodes named in
    /// no group, including nodes added later, form one more group together. A node named
    /// twice belongs to the last group naming it. Replaces any earlier partition.
    pub fn partition<G: AsRef<[usize]>>(&mut self, groups: &[G]) -> Result<(), SimError> {
        if let Some(&bad) = groups
            .iter()
            .flat_map(|g| g.as_ref())
            .find(|&&n| n >= self.nodes.len())
        {
            return Err(SimError::UnknownNode(bad));
        }
        self.net.groups.fill(0);
        for (g, members) in groups.iter().enumerate() {
            for &n in members.as_ref() {
                self.net.groups[n] = g as u32 + 1;
            }
        }
        self.net.partitioned = true;
        Ok(())
    }

    /// Ends the partition: every node reaches every other again.
    pub fn heal(&mut self) {
        self.net.partitioned = false;
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        self.net.partitioned
    }

    /// Sets the condition of every link without an override.
    pub fn set_default_link(&mut self, link: LinkConfig) -> Result<(), SimError> {
        link.validate()?;
        self.net.config.default_link = link;
        Ok(())
    }

    /// Sets the condition of the directed link `from → to`, overriding node conditions and
    /// the default.
    pub fn set_link(&mut self, from: usize, to: usize, link: LinkConfig) -> Result<(), SimError> {
        self.known(from)?;
        self.known(to)?;
        link.validate()?;
        self.net
            .link_overrides
            .insert((from as u32, to as u32), link);
        Ok(())
    }

    /// Removes the override of the directed link `from → to`, if any.
    pub fn clear_link(&mut self, from: usize, to: usize) -> Result<(), SimError> {
        self.known(from)?;
        self.known(to)?;
        self.net.link_overrides.remove(&(from as u32, to as u32));
        Ok(())
    }

    /// Sets the condition of every link from or to node `node` that has no override of
    /// its own. Where both ends have a node condition, the sender's applies.
    pub fn set_node_link(&mut self, node: usize, link: LinkConfig) -> Result<(), SimError> {
        self.known(node)?;
        link.validate()?;
        self.net.node_links[node] = Some(Box::new(link));
        Ok(())
    }

    /// Removes node `node`'s condition, if any.
    pub fn clear_node_link(&mut self, node: usize) -> Result<(), SimError> {
        self.known(node)?;
        self.net.node_links[node] = None;
        Ok(())
    }

    /// The condition that applies to the directed link `from → to`.
    pub fn link(&self, from: usize, to: usize) -> Option<&LinkConfig> {
        (from < self.nodes.len() && to < self.nodes.len()).then(|| self.net.link(from, to))
    }

    /// Changes when [`run_until`](Self::run_until) checks its predicate.
    pub fn set_check(&mut self, check: Check) -> Result<(), SimError> {
        validate_check(check)?;
        self.net.config.check = check;
        Ok(())
    }

    /// Counters of the whole network.
    pub fn stats(&self) -> &SimStats {
        &self.net.counters.total
    }

    /// Counters of node `i` (see [`SimStats`] for which end a counter belongs to).
    pub fn node_stats(&self, i: usize) -> Option<&SimStats> {
        self.net.counters.nodes.get(i)
    }

    /// Datagrams on the wire or waiting in pause queues.
    pub fn in_flight(&self) -> usize {
        self.net.flights.len() - self.net.free_flights.len() + self.net.queued
    }

    /// A hash of every delivery so far: virtual time, sender, receiver and bytes. Equal
    /// digests mean the runs delivered the same datagrams at the same instants.
    pub fn trace_digest(&self) -> u64 {
        self.net.digest.digest()
    }

    /// How many events were processed (stale timer entries are not counted).
    pub fn events(&self) -> u64 {
        self.net.processed
    }

    /// When the next event is due, if any is scheduled.
    pub fn next_event(&mut self) -> Option<Instant> {
        self.peek_live()
            .map(|at| self.net.epoch + Duration::from_nanos(at))
    }

    /// Processes the next event, moving virtual time to it. Returns `false`, doing
    /// nothing, when no event is scheduled.
    pub fn step(&mut self) -> bool {
        // Endpoints that push their deadline back on every datagram leave a stale entry
        // each time, which would otherwise sit in the heap until its instant passes.
        // Rebuilding once stale entries are the majority keeps the heap O(live) at an
        // amortised O(1) per entry; the pop order is unchanged since (at, seq) is unique.
        if self.net.stale > 1024 && self.net.stale * 2 > self.net.events.len() {
            let nodes = &self.nodes;
            self.net.events.retain(|e| is_live(nodes, e));
            self.net.stale = 0;
        }
        let event = loop {
            let Some(event) = self.net.events.pop() else {
                return false;
            };
            if is_live(&self.nodes, &event) {
                break event;
            }
            self.net.stale = self.net.stale.saturating_sub(1);
        };
        debug_assert!(event.at >= self.net.now, "event scheduled in the past");
        self.net.now = event.at;
        self.net.processed += 1;
        match event.kind {
            Kind::Deliver(slot) => self.deliver(slot),
            Kind::Timer { node, .. } => self.fire_timer(node as usize),
            Kind::Resume(node) => self.resume(node as usize),
        }
        true
    }

    /// Processes every event due within `duration`, then moves virtual time to its end.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.net.now.saturating_add(nanos(duration));
        while self.peek_live().is_some_and(|at| at <= end) {
            self.step();
        }
        self.net.now = end;
    }

    /// Processes events until `pred` holds or virtual time reaches `deadline`, and says
    /// whether `pred` held. `pred` is checked first, then as [`SimConfig::check`] says,
    /// and last at the deadline (virtual now is then the deadline). On success virtual now
    /// is the instant of the check that succeeded. A deadline in the past checks once.
    pub fn run_until(&mut self, deadline: Instant, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let end = self.net.offset(deadline).max(self.net.now);
        if pred(self) {
            return true;
        }
        match self.net.config.check {
            Check::Events(every) => {
                let mut since = 0;
                while self.peek_live().is_some_and(|at| at <= end) {
                    self.step();
                    since += 1;
                    if since >= every {
                        since = 0;
                        if pred(self) {
                            return true;
                        }
                    }
                }
            }
            Check::Interval(interval) => {
                let interval = nanos(interval);
                let mut next_check = self.net.now.saturating_add(interval);
                while next_check < end {
                    while self.peek_live().is_some_and(|at| at <= next_check) {
                        self.step();
                    }
                    self.net.now = next_check;
                    if pred(self) {
                        return true;
                    }
                    next_check = next_check.saturating_add(interval);
                }
                while self.peek_live().is_some_and(|at| at <= end) {
                    self.step();
                }
            }
        }
        self.net.now = end;
        pred(self)
    }

    fn known(&self, i: usize) -> Result<(), SimError> {
        if i < self.nodes.len() {
            Ok(())
        } else {
            Err(SimError::UnknownNode(i))
        }
    }

    fn live_slot(&mut self, i: usize) -> Result<&mut Slot<E>, SimError> {
        let slot = self.nodes.get_mut(i).ok_or(SimError::UnknownNode(i))?;
        if slot.endpoint.is_none() {
            return Err(SimError::NodeDead(i));
        }
        Ok(slot)
    }

    /// The time of the next live event, discarding stale entries on top of the heap.
    fn peek_live(&mut self) -> Option<u64> {
        while let Some(event) = self.net.events.peek() {
            if is_live(&self.nodes, event) {
                return Some(event.at);
            }
            self.net.events.pop();
            self.net.stale = self.net.stale.saturating_sub(1);
        }
        None
    }

    /// After an input: sends everything node `i` wants to send and reschedules its timer.
    fn flush_node(&mut self, i: usize) {
        let slot = &mut self.nodes[i];
        if slot.paused_until.is_some() {
            return;
        }
        let Some(ep) = slot.endpoint.as_mut() else {
            return;
        };
        let now = self.net.instant();
        loop {
            self.buf.clear();
            let Some(to) = ep.poll_transmit(now, &mut self.buf) else {
                break;
            };
            self.net.send(i, to, &self.buf);
        }
        // A deadline already past fires at now, after the events already due now.
        let at = ep
            .poll_timeout()
            .map(|t| self.net.offset(t).max(self.net.now));
        if at != slot.timer_at {
            if slot.cancel_timer() {
                self.net.stale += 1;
            }
            if let Some(at) = at {
                slot.timer_at = Some(at);
                let gen = slot.timer_gen;
                self.net.push(
                    at,
                    Kind::Timer {
                        node: i as u32,
                        gen,
                    },
                );
            }
        }
    }

    fn deliver(&mut self, flight: u32) {
        let (from, to, data) = self.net.take_flight(flight);
        let to = to as usize;
        let slot = &mut self.nodes[to];
        if slot.endpoint.is_none() {
            self.net
                .counters
                .add(from as usize, |s| s.dropped_dead += 1);
            self.net.recycle(data);
        } else if slot.paused_until.is_none() {
            self.hand_datagram(to, from, data);
        } else if slot.pending_datagrams < self.net.config.pause_queue_limit {
            slot.pending.push_back(Pending::Datagram {
                from,
                data,
                arrived: self.net.now,
            });
            slot.pending_datagrams += 1;
            self.net.queued += 1;
        } else {
            self.net
                .counters
                .add(from as usize, |s| s.dropped_paused += 1);
            self.net.recycle(data);
        }
    }

    /// Gives a datagram to running node `to` and flushes it.
    fn hand_datagram(&mut self, to: usize, from: u32, mut data: Vec<u8>) {
        let len = data.len() as u64;
        self.net.counters.add(to, |s| {
            s.received += 1;
            s.received_bytes += len;
        });
        self.net.record(from, to, &data);
        let now = self.net.instant();
        let from_addr = self.net.addr_of(from as usize);
        if let Some(ep) = self.nodes[to].endpoint.as_mut() {
            ep.handle_datagram(now, from_addr, &mut data);
        }
        self.net.recycle(data);
        self.flush_node(to);
    }

    /// Node `i`'s timer entry came due: fire it only if the endpoint's deadline really
    /// has passed, so a stale or early entry can never cause a timeout.
    fn fire_timer(&mut self, i: usize) {
        let now = self.net.instant();
        let slot = &mut self.nodes[i];
        slot.timer_at = None;
        if let Some(ep) = slot.endpoint.as_mut() {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
                self.net.counters.add(i, |s| s.timeouts += 1);
            }
        }
        self.flush_node(i);
    }

    /// Node `i`'s pause ended: it takes what queued, in order, then its timeout if the
    /// deadline passed meanwhile.
    fn resume(&mut self, i: usize) {
        let now = self.net.instant();
        let slot = &mut self.nodes[i];
        slot.paused_until = None;
        slot.pending_datagrams = 0;
        let mut pending = std::mem::take(&mut slot.pending);
        for p in pending.drain(..) {
            match p {
                Pending::Datagram {
                    from,
                    data,
                    arrived,
                } => {
                    self.net.queued -= 1;
                    // Like a kernel socket's receive timestamp: the datagram waited
                    // from its arrival until the node resumed.
                    let delay = Duration::from_nanos(self.net.now.saturating_sub(arrived));
                    if let Some(ep) = self.nodes[i].endpoint.as_mut() {
                        ep.handle_input_delay(now, delay);
                    }
                    self.hand_datagram(i, from, data);
                }
                Pending::Command(cmd) => {
                    if let Some(ep) = self.nodes[i].endpoint.as_mut() {
                        ep.handle_command(now, cmd);
                    }
                    self.flush_node(i);
                }
            }
        }
        // Keep the queue's allocation for the next pause.
        self.nodes[i].pending = pending;
        self.fire_timer(i);
    }
}

/// Whether a heap entry still means something: deliveries always do, a timer or pause end
/// only while the node has not replaced it.
fn is_live<E: Endpoint>(nodes: &[Slot<E>], event: &Event) -> bool {
    match event.kind {
        Kind::Deliver(_) => true,
        Kind::Timer { node, gen } => {
            let slot = &nodes[node as usize];
            slot.timer_gen == gen && slot.timer_at == Some(event.at)
        }
        Kind::Resume(node) => nodes[node as usize].paused_until == Some(event.at),
    }
}

#[cfg(test)]
mod tests {
    use super::probe::{Cmd, Probe};
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn sim_with(seed: u64, link: LinkConfig) -> Sim<Probe> {
        Sim::new(SimConfig {
            seed,
            default_link: link,
            ..SimConfig::default()
        })
        .unwrap()
    }

    fn add(sim: &mut Sim<Probe>, count: usize) {
        for _ in 0..count {
            sim.add_node(Probe::new);
        }
    }

    fn burst(sim: &mut Sim<Probe>, from: usize, to: usize, count: u32, size: usize) {
        let to = sim.addr(to).unwrap();
        sim.command(from, Cmd::Burst { to, count, size }).unwrap();
    }

    fn got(sim: &Sim<Probe>, i: usize) -> usize {
        sim.node(i).unwrap().got.len()
    }

    /// Every emitted datagram is accounted for exactly once.
    fn assert_conserved(sim: &Sim<Probe>) {
        let s = sim.stats();
        assert_eq!(
            s.sent + s.duplicated,
            s.received
                + s.lost
                + s.dropped_partition
                + s.dropped_dead
                + s.dropped_paused
                + sim.in_flight() as u64,
            "{s:?}"
        );
        let mut sum = SimStats::default();
        (0..sim.len()).for_each(|i| sum.merge(sim.node_stats(i).unwrap()));
        assert_eq!(&sum, s);
    }

    /// A busy, lossy run touching every feature; returns what must be reproducible.
    fn busy_run(seed: u64) -> (u64, SimStats, u64, Vec<u32>) {
        let link = LinkConfig::new(Latency::LogNormal {
            min: MS,
            median: 4 * MS,
            sigma: 1.0,
            max: 80 * MS,
        })
        .with_loss(0.2)
        .with_duplicate(0.05)
        .with_reorder(0.1, 30 * MS);
        let mut sim = sim_with(seed, link);
        let n = 20;
        add(&mut sim, n);
        for i in 0..n {
            let to = (1..=3).map(|k| sim.addr((i + k) % n).unwrap()).collect();
            let every = (10 + i as u32) * MS;
            sim.command(
                i,
                Cmd::Tick {
                    to,
                    every,
                    count: 40,
                },
            )
            .unwrap();
            let to = sim.addr((i + 5) % n).unwrap();
            sim.command(i, Cmd::Ping { to, hops: 20 }).unwrap();
        }
        sim.set_link(1, 2, LinkConfig::default()).unwrap();
        sim.pause(3, 100 * MS).unwrap();
        sim.run_for(150 * MS);
        sim.partition(&[vec![0, 1, 2, 3, 4], vec![5, 6, 7]])
            .unwrap();
        sim.kill(9).unwrap();
        sim.run_for(150 * MS);
        assert!(sim.in_flight() > 0);
        assert_conserved(&sim);
        sim.heal();
        sim.restart(9, Probe::new).unwrap();
        sim.run_for(2_000 * MS);
        assert_conserved(&sim);
        let seqs = sim.node(0).unwrap().seqs_from(sim.addr(19).unwrap());
        (sim.trace_digest(), *sim.stats(), sim.events(), seqs)
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        let a = busy_run(1);
        let b = busy_run(1);
        assert_eq!(a, b);
        let s = a.1;
        assert!(
            s.lost > 0 && s.duplicated > 0 && s.dropped_partition > 0,
            "{s:?}"
        );
        assert!(s.dropped_dead > 0 && s.timeouts > 0, "{s:?}");
        let c = busy_run(2);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
    }

    #[test]
    fn digest_covers_timing_and_bytes() {
        let run = |latency: Duration, size: usize| {
            let mut sim = sim_with(0, LinkConfig::new(Latency::Constant(latency)));
            add(&mut sim, 2);
            burst(&mut sim, 0, 1, 3, size);
            sim.run_for(10 * MS);
            sim.trace_digest()
        };
        let base = run(MS, 8);
        assert_eq!(base, run(MS, 8));
        assert_ne!(base, run(2 * MS, 8));
        assert_ne!(base, run(MS, 9));
        // An empty run hashes nothing.
        assert_eq!(
            Sim::<Probe>::with_seed(0).trace_digest(),
            Xxh3::new().digest()
        );
    }

    #[test]
    fn observed_loss_matches_configured() {
        for (seed, loss) in [(1, 0.3), (2, 0.05), (3, 0.9)] {
            let mut sim = sim_with(seed, LinkConfig::default().with_loss(loss));
            add(&mut sim, 2);
            let n = 20_000;
            burst(&mut sim, 0, 1, n, 5);
            sim.run_for(10 * MS);
            let s = sim.stats();
            assert_eq!(s.sent, n as u64);
            assert_eq!(s.received, got(&sim, 1) as u64);
            assert_eq!(s.received + s.lost, n as u64);
            // 6 standard deviations of the binomial at most 0.02 of n.
            let observed = s.lost as f64 / n as f64;
            assert!((observed - loss).abs() < 0.02, "{loss}: {observed}");
        }
    }

    #[test]
    fn partition_blocks_across_groups_and_heal_restores() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 6);
        sim.partition(&[&[0, 1][..], &[2, 3]]).unwrap();
        assert!(sim.is_partitioned());
        // Added after the split: joins the unnamed nodes 4 and 5.
        add(&mut sim, 1);
        for (from, to) in [(0, 1), (0, 2), (2, 3), (3, 1), (4, 5), (6, 4), (4, 0)] {
            burst(&mut sim, from, to, 1, 5);
        }
        sim.run_for(5 * MS);
        let counts: Vec<usize> = (0..7).map(|i| got(&sim, i)).collect();
        assert_eq!(counts, [0, 1, 0, 1, 1, 1, 0]);
        assert_eq!(sim.stats().dropped_partition, 3);
        assert_eq!(sim.node_stats(0).unwrap().dropped_partition, 1);

        // A datagram sent just before the split still arrives: it was on the wire.
        sim.heal();
        burst(&mut sim, 0, 2, 1, 5);
        sim.partition(&[vec![0], vec![2]]).unwrap();
        sim.run_for(5 * MS);
        assert_eq!(got(&sim, 2), 1);

        sim.heal();
        assert!(!sim.is_partitioned());
        for (from, to) in [(0, 2), (3, 1), (4, 0)] {
            burst(&mut sim, from, to, 1, 5);
        }
        sim.run_for(5 * MS);
        let counts: Vec<usize> = (0..7).map(|i| got(&sim, i)).collect();
        assert_eq!(counts, [1, 2, 2, 1, 1, 1, 0]);
        assert_eq!(sim.stats().dropped_partition, 3);
    }

    #[test]
    fn kill_drops_traffic_and_restart_receives_at_same_address() {
        let mut sim = sim_with(0, LinkConfig::new(Latency::Constant(2 * MS)));
        add(&mut sim, 2);
        let addr1 = sim.addr(1).unwrap();
        // One datagram each way is on the wire when 1 dies.
        burst(&mut sim, 0, 1, 1, 5);
        burst(&mut sim, 1, 0, 1, 5);
        sim.run_for(MS);
        sim.kill(1).unwrap();
        sim.kill(1).unwrap();
        assert!(!sim.is_alive(1) && sim.node(1).is_none() && sim.node_mut(1).is_none());
        assert_eq!(sim.alive_count(), 1);
        burst(&mut sim, 0, 1, 2, 5);
        sim.run_for(5 * MS);
        // What 1 sent before dying still arrives; what was sent to it is lost.
        assert_eq!(got(&sim, 0), 1);
        assert_eq!(sim.stats().dropped_dead, 3);
        assert_eq!(sim.node_stats(0).unwrap().dropped_dead, 3);
        let cmd = Cmd::Ping {
            to: sim.addr(0).unwrap(),
            hops: 0,
        };
        assert_eq!(sim.command(1, cmd), Err(SimError::NodeDead(1)));
        assert_eq!(sim.pause(1, MS), Err(SimError::NodeDead(1)));

        let mut seen = None;
        sim.restart(1, |addr| {
            seen = Some(addr);
            Probe::new(addr)
        })
        .unwrap();
        assert_eq!(seen, Some(addr1));
        assert_eq!(sim.addr(1), Some(addr1));
        burst(&mut sim, 0, 1, 1, 5);
        sim.run_for(5 * MS);
        assert_eq!(got(&sim, 1), 1);
        assert_eq!(sim.node(1).unwrap().got[0].from, sim.addr(0).unwrap());
        assert_eq!(sim.stats().dropped_dead, 3);
        assert_conserved(&sim);
    }

    #[test]
    fn restart_replaces_a_live_endpoint_and_its_timer() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 2);
        let to = vec![sim.addr(0).unwrap()];
        sim.command(
            1,
            Cmd::Tick {
                to,
                every: 10 * MS,
                count: 3,
            },
        )
        .unwrap();
        sim.run_for(15 * MS);
        assert_eq!(got(&sim, 0), 1);
        sim.restart(1, Probe::new).unwrap();
        sim.run_for(100 * MS);
        // The old endpoint's timer died with it.
        assert_eq!(got(&sim, 0), 1);
        assert!(sim.node(1).unwrap().timeouts.is_empty());
    }

    #[test]
    fn pause_queues_deliveries_and_gives_a_late_timeout() {
        let mut sim = sim_with(0, LinkConfig::new(Latency::Constant(MS)));
        add(&mut sim, 2);
        let a0 = sim.addr(0).unwrap();
        sim.command(
            1,
            Cmd::Tick {
                to: vec![a0],
                every: 100 * MS,
                count: 2,
            },
        )
        .unwrap();
        sim.pause(1, 500 * MS).unwrap();
        assert!(sim.is_paused(1) && sim.is_alive(1));
        sim.run_for(10 * MS);
        burst(&mut sim, 0, 1, 2, 5);
        // Commands wait too, in order with the datagrams.
        sim.command(1, Cmd::Ping { to: a0, hops: 0 }).unwrap();
        burst(&mut sim, 0, 1, 1, 5);
        // A shorter pause does not cut the running one short.
        sim.pause(1, 10 * MS).unwrap();
        sim.run_for(489 * MS);
        assert_eq!(sim.elapsed(), 499 * MS);
        assert!(sim.node(1).unwrap().got.is_empty());
        assert!(sim.node(1).unwrap().timeouts.is_empty());
        assert_eq!(sim.in_flight(), 3);
        assert_eq!(got(&sim, 0), 0);

        sim.run_for(2 * MS);
        assert!(!sim.is_paused(1));
        let resume = sim.epoch() + 500 * MS;
        let p1 = sim.node(1).unwrap();
        assert_eq!(p1.got.len(), 3);
        assert!(p1.got.iter().all(|g| g.at == resume));
        assert_eq!(p1.seqs_from(a0), [0, 1, 2]);
        // The deadline at 100 ms is seen late, at resume, after the queue.
        assert_eq!(p1.timeouts, [(resume, sim.epoch() + 100 * MS)]);
        // The ping ran at resume and so did the tick's datagram: both reach 0 at 501 ms.
        let p0 = sim.node(0).unwrap();
        assert_eq!(p0.got.len(), 2);
        assert!(p0.got.iter().all(|g| g.at == resume + MS));
        // The tick re-armed from the late timeout.
        sim.run_for(200 * MS);
        assert_eq!(
            sim.node(1).unwrap().timeouts[1],
            (resume + 100 * MS, resume + 100 * MS)
        );
        assert_conserved(&sim);
    }

    #[test]
    fn an_idle_paused_node_still_times_out_at_resume() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 2);
        let to = vec![sim.addr(0).unwrap()];
        sim.command(
            1,
            Cmd::Tick {
                to,
                every: 100 * MS,
                count: 1,
            },
        )
        .unwrap();
        sim.run_for(50 * MS);
        sim.pause(1, 250 * MS).unwrap();
        sim.run_for(Duration::from_secs(1));
        let resume = sim.epoch() + 300 * MS;
        assert_eq!(
            sim.node(1).unwrap().timeouts,
            [(resume, sim.epoch() + 100 * MS)]
        );
        assert_eq!(sim.node(0).unwrap().got[0].at, resume + MS);
    }

    #[test]
    fn pause_queue_overflow_is_counted() {
        let mut sim = Sim::new(SimConfig {
            pause_queue_limit: 3,
            ..SimConfig::default()
        })
        .unwrap();
        add(&mut sim, 2);
        sim.pause(1, 50 * MS).unwrap();
        burst(&mut sim, 0, 1, 5, 5);
        sim.run_for(10 * MS);
        assert_eq!(sim.stats().dropped_paused, 2);
        assert_eq!(sim.in_flight(), 3);
        sim.run_for(50 * MS);
        assert_eq!(
            sim.node(1).unwrap().seqs_from(sim.addr(0).unwrap()),
            [0, 1, 2]
        );
        // Killing a paused node drops its queue.
        sim.pause(1, 50 * MS).unwrap();
        burst(&mut sim, 0, 1, 2, 5);
        sim.run_for(10 * MS);
        sim.kill(1).unwrap();
        assert_eq!(sim.in_flight(), 0);
        assert_eq!(sim.stats().dropped_dead, 2);
        assert_conserved(&sim);
    }

    #[test]
    fn deliveries_respect_latency_bounds() {
        let (lo, hi) = (5 * MS, 15 * MS);
        for latency in [
            Latency::Uniform { min: lo, max: hi },
            Latency::LogNormal {
                min: lo,
                median: 7 * MS,
                sigma: 1.5,
                max: hi,
            },
        ] {
            let mut sim = sim_with(4, LinkConfig::new(latency));
            add(&mut sim, 2);
            sim.run_for(3 * MS);
            let sent = sim.now();
            burst(&mut sim, 0, 1, 2_000, 5);
            sim.run_for(20 * MS);
            let p1 = sim.node(1).unwrap();
            assert_eq!(p1.got.len(), 2_000);
            let delays: Vec<Duration> = p1.got.iter().map(|g| g.at - sent).collect();
            assert!(delays.iter().all(|d| lo <= *d && *d <= hi), "{latency:?}");
            assert!(delays.iter().any(|d| *d < 6 * MS), "{latency:?}");
            assert!(delays.iter().any(|d| *d > 14 * MS), "{latency:?}");
            // Jitter reorders: arrivals are not in send order.
            let seqs = p1.seqs_from(sim.addr(0).unwrap());
            assert!(seqs.windows(2).any(|w| w[0] > w[1]));
        }
    }

    #[test]
    fn constant_latency_keeps_order_and_reorder_breaks_it() {
        let run = |link: LinkConfig| {
            let mut sim = sim_with(8, link);
            add(&mut sim, 2);
            burst(&mut sim, 0, 1, 500, 5);
            sim.run_for(50 * MS);
            let p1 = sim.node(1).unwrap();
            let at: Vec<Duration> = p1.got.iter().map(|g| g.at - sim.epoch()).collect();
            (p1.seqs_from(sim.addr(0).unwrap()), at)
        };
        let constant = LinkConfig::new(Latency::Constant(3 * MS));
        let (seqs, at) = run(constant);
        assert_eq!(seqs, (0..500).collect::<Vec<u32>>());
        assert!(at.iter().all(|d| *d == 3 * MS));

        let (seqs, at) = run(constant.with_reorder(0.25, 10 * MS));
        assert_eq!(seqs.len(), 500);
        assert!(seqs.windows(2).any(|w| w[0] > w[1]));
        let late = at.iter().filter(|d| **d == 13 * MS).count();
        assert!((90..160).contains(&late), "{late} held back");
        assert_eq!(late + at.iter().filter(|d| **d == 3 * MS).count(), 500);
    }

    #[test]
    fn duplication_delivers_extra_copies() {
        let mut sim = sim_with(6, LinkConfig::default().with_duplicate(0.5));
        add(&mut sim, 2);
        burst(&mut sim, 0, 1, 10_000, 5);
        sim.run_for(10 * MS);
        let s = *sim.stats();
        assert_eq!(s.received, s.sent + s.duplicated);
        assert!((4_700..5_300).contains(&s.duplicated), "{s:?}");
        let mut seqs = sim.node(1).unwrap().seqs_from(sim.addr(0).unwrap());
        assert_eq!(seqs.len() as u64, s.received);
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 10_000);
    }

    #[test]
    fn oversize_datagrams_are_counted_and_dropped() {
        let mut sim = Sim::new(SimConfig {
            max_datagram_size: 100,
            ..SimConfig::default()
        })
        .unwrap();
        add(&mut sim, 2);
        burst(&mut sim, 0, 1, 2, 101);
        burst(&mut sim, 0, 1, 1, 100);
        sim.run_for(5 * MS);
        let p1 = sim.node(1).unwrap();
        assert_eq!(p1.got.len(), 1);
        assert_eq!(p1.got[0].len, 100);
        let s = sim.node_stats(0).unwrap();
        assert_eq!((s.oversize, s.sent, s.sent_bytes), (2, 1, 100));
        assert_eq!(sim.node_stats(1).unwrap().received_bytes, 100);
        assert_eq!(sim.stats().oversize, 2);
    }

    #[test]
    fn timers_fire_at_their_deadline_and_stale_ones_never() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 3);
        let to = vec![sim.addr(0).unwrap()];
        // Later deadline replacing an earlier one: the 10 ms entry must not fire.
        sim.command(
            1,
            Cmd::Tick {
                to: to.clone(),
                every: 10 * MS,
                count: 1,
            },
        )
        .unwrap();
        sim.command(
            1,
            Cmd::Tick {
                to: to.clone(),
                every: 50 * MS,
                count: 1,
            },
        )
        .unwrap();
        // Earlier replacing later: the 50 ms entry must not fire a second time.
        sim.command(
            2,
            Cmd::Tick {
                to: to.clone(),
                every: 50 * MS,
                count: 1,
            },
        )
        .unwrap();
        sim.command(
            2,
            Cmd::Tick {
                to,
                every: 10 * MS,
                count: 4,
            },
        )
        .unwrap();
        sim.run_for(200 * MS);
        let at = |ms: u32| sim.epoch() + ms * MS;
        assert_eq!(sim.node(1).unwrap().timeouts, [(at(50), at(50))]);
        let t2: Vec<_> = (1..=4).map(|k| (at(10 * k), at(10 * k))).collect();
        assert_eq!(sim.node(2).unwrap().timeouts, t2);
        assert_eq!(sim.stats().timeouts, 5);
        assert_eq!(got(&sim, 0), 5);
        // Stale entries are not events: 5 timeouts and 5 deliveries.
        assert_eq!(sim.events(), 10);
        assert_eq!(sim.next_event(), None);
        assert!(!sim.step());
    }

    #[test]
    fn superseded_timers_do_not_pile_up() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 2);
        let to = vec![sim.addr(0).unwrap()];
        // Each re-arm moves the deadline earlier, so the superseded entries all lie after
        // the live one and would not surface before it.
        for k in (0..5_000).rev() {
            let every = Duration::from_secs(1) + k * MS;
            sim.command(
                1,
                Cmd::Tick {
                    to: to.clone(),
                    every,
                    count: 1,
                },
            )
            .unwrap();
        }
        assert_eq!(sim.net.events.len(), 5_000);
        assert!(sim.step());
        let deadline = sim.epoch() + Duration::from_secs(1);
        assert_eq!(sim.node(1).unwrap().timeouts, [(deadline, deadline)]);
        // Left: only the tick's datagram, not the 4 999 dead timers.
        assert_eq!(sim.net.events.len(), 1);
        sim.run_for(Duration::from_secs(10));
        assert_eq!(sim.events(), 2);
        assert_eq!(sim.stats().timeouts, 1);
    }

    #[test]
    fn run_until_checks_per_event_or_per_interval() {
        let setup = |check: Check| {
            let mut sim = sim_with(0, LinkConfig::default());
            sim.set_check(check).unwrap();
            add(&mut sim, 2);
            let to = sim.addr(1).unwrap();
            sim.command(0, Cmd::Ping { to, hops: 9 }).unwrap();
            sim
        };
        let two_back = |s: &Sim<Probe>| s.node(0).is_some_and(|p| p.got.len() >= 2);

        let mut sim = setup(Check::Events(1));
        let deadline = sim.now() + Duration::from_secs(1);
        assert!(sim.run_until(deadline, two_back));
        assert_eq!(sim.elapsed(), 4 * MS);

        let mut sim = setup(Check::Interval(3 * MS));
        assert!(sim.run_until(deadline, two_back));
        assert_eq!(sim.elapsed(), 6 * MS);

        let mut sim = setup(Check::Events(3));
        assert!(sim.run_until(deadline, two_back));
        assert_eq!(sim.elapsed(), 6 * MS);

        // Never true: runs to the deadline, past the last event, and says so.
        for check in [Check::Events(1), Check::Interval(7 * MS)] {
            let mut sim = setup(check);
            let mut calls = 0;
            let deadline = sim.now() + 100 * MS;
            assert!(!sim.run_until(deadline, |_| {
                calls += 1;
                false
            }));
            assert_eq!(sim.elapsed(), 100 * MS);
            assert_eq!(got(&sim, 1), 5);
            let expected = match check {
                // First check, one per event (10 deliveries), the last at the deadline.
                Check::Events(_) => 12,
                // First check, at 7, 14, … 98 ms, the last at the deadline.
                Check::Interval(_) => 16,
            };
            assert_eq!(calls, expected, "{check:?}");
        }

        // A deadline in the past checks once and moves nothing.
        let mut sim = setup(Check::Events(1));
        sim.run_for(2 * MS);
        let past = sim.epoch();
        assert!(!sim.run_until(past, |_| false));
        assert_eq!(sim.elapsed(), 2 * MS);
    }

    #[test]
    fn link_conditions_resolve_by_precedence() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 3);
        let dead = LinkConfig::default().with_loss(1.0);
        let slow = LinkConfig::new(Latency::Constant(9 * MS));
        sim.set_node_link(2, dead).unwrap();
        sim.set_node_link(1, slow).unwrap();
        sim.set_link(0, 2, LinkConfig::default()).unwrap();
        assert_eq!(sim.link(0, 2), Some(&LinkConfig::default()));
        assert_eq!(sim.link(2, 0), Some(&dead));
        // Both ends have a node condition: the sender's wins.
        assert_eq!(sim.link(1, 2), Some(&slow));
        assert_eq!(sim.link(2, 1), Some(&dead));
        assert_eq!(sim.link(0, 3), None);
        for (from, to) in [(0, 2), (2, 0), (1, 2), (2, 1), (0, 1)] {
            burst(&mut sim, from, to, 1, 5);
        }
        sim.run_for(20 * MS);
        assert_eq!(sim.stats().lost, 2);
        assert_eq!(got(&sim, 2), 2);
        assert_eq!(got(&sim, 1), 1);
        assert_eq!(sim.node(1).unwrap().got[0].at, sim.epoch() + 9 * MS);

        sim.clear_link(0, 2).unwrap();
        sim.clear_node_link(1).unwrap();
        sim.set_default_link(slow).unwrap();
        assert_eq!(sim.link(0, 2), Some(&dead));
        assert_eq!(sim.link(0, 1), Some(&slow));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut sim = Sim::<Probe>::with_seed(0);
        add(&mut sim, 2);
        assert!(sim.node(2).is_none() && sim.node_mut(usize::MAX).is_none());
        assert_eq!(sim.addr(2), None);
        assert!(sim.node_stats(2).is_none());
        assert!(!sim.is_alive(2) && !sim.is_paused(2));
        assert_eq!(sim.kill(2), Err(SimError::UnknownNode(2)));
        assert_eq!(sim.pause(5, MS), Err(SimError::UnknownNode(5)));
        assert_eq!(sim.flush(5), Err(SimError::UnknownNode(5)));
        assert_eq!(sim.restart(2, Probe::new), Err(SimError::UnknownNode(2)));
        assert_eq!(
            sim.set_link(0, 9, LinkConfig::default()),
            Err(SimError::UnknownNode(9))
        );
        assert_eq!(
            sim.partition(&[vec![0], vec![1, 4]]),
            Err(SimError::UnknownNode(4))
        );
        assert!(!sim.is_partitioned());
        let bad = LinkConfig::default().with_loss(2.0);
        assert!(matches!(
            sim.set_default_link(bad),
            Err(SimError::InvalidLink { .. })
        ));
        assert!(matches!(
            sim.set_node_link(0, bad),
            Err(SimError::InvalidLink { .. })
        ));
        assert_eq!(sim.config().default_link, LinkConfig::default());
        assert!(sim.set_check(Check::Events(0)).is_err());
        assert!(sim.set_check(Check::Interval(Duration::ZERO)).is_err());
        assert_eq!(sim.config().check, Check::Events(1));
        for config in [
            SimConfig {
                max_datagram_size: 0,
                ..SimConfig::default()
            },
            SimConfig {
                max_datagram_size: MAX_UDP_PAYLOAD + 1,
                ..SimConfig::default()
            },
            SimConfig {
                default_link: bad,
                ..SimConfig::default()
            },
            SimConfig {
                check: Check::Events(0),
                ..SimConfig::default()
            },
        ] {
            assert!(Sim::<Probe>::new(config).is_err());
        }
        assert_eq!(sim.len(), 2);
        assert_eq!(sim.elapsed(), Duration::ZERO);
    }

    #[test]
    fn addresses_are_computed_and_resolved() {
        let mut sim = Sim::<Probe>::with_seed(0);
        add(&mut sim, 70_000);
        assert_eq!(sim.addr(0), "10.0.0.1:7946".parse().ok());
        assert_eq!(sim.addr(255), "10.0.1.0:7946".parse().ok());
        assert_eq!(sim.addr(69_999), "10.1.17.112:7946".parse().ok());
        for i in [0, 1, 254, 255, 256, 65_535, 65_536, 69_999] {
            let addr = sim.addr(i).unwrap();
            assert_eq!(sim.index_of(addr), Some(i));
            assert_eq!(node_addr(i, DEFAULT_PORT), Some(addr));
            assert_eq!(sim.node(i).unwrap().addr, addr);
        }
        for foreign in [
            "10.1.17.113:7946",
            "10.0.0.0:7946",
            "10.0.0.1:7947",
            "11.0.0.1:7946",
            "[::1]:7946",
        ] {
            assert_eq!(sim.index_of(foreign.parse().unwrap()), None, "{foreign}");
        }
        assert_eq!(node_addr(MAX_NODES, DEFAULT_PORT), None);
        assert!(node_addr(MAX_NODES - 1, DEFAULT_PORT).is_some());
        // Sending to an address nobody has is a drop, not a panic.
        let to = "10.9.9.9:7946".parse().unwrap();
        sim.command(
            0,
            Cmd::Burst {
                to,
                count: 1,
                size: 5,
            },
        )
        .unwrap();
        assert_eq!(sim.stats().dropped_dead, 1);
    }

    #[test]
    fn a_new_node_sends_at_once_but_only_to_nodes_that_exist() {
        let mut sim = sim_with(0, LinkConfig::default());
        add(&mut sim, 1);
        let to = [sim.addr(0).unwrap(), node_addr(2, DEFAULT_PORT).unwrap()];
        sim.add_node(|addr| Probe::sending(addr, &to, 2, 5));
        add(&mut sim, 1);
        sim.run_for(5 * MS);
        assert_eq!(got(&sim, 0), 2);
        assert_eq!(got(&sim, 2), 0);
        assert_eq!(sim.node_stats(1).unwrap().dropped_dead, 2);
    }

    #[test]
    fn ten_thousand_nodes_each_send_a_few() {
        let n = 10_000;
        let mut sim = Sim::new(SimConfig {
            seed: 10,
            default_link: LinkConfig::new(Latency::Uniform {
                min: MS,
                max: 30 * MS,
            }),
            check: Check::Interval(10 * MS),
            ..SimConfig::default()
        })
        .unwrap();
        let peer = |i: usize, k: usize| node_addr((i * 7 + k * 1_009 + 1) % n, DEFAULT_PORT);
        for _ in 0..n {
            sim.add_node(Probe::new);
        }
        for i in 0..n {
            for k in 0..3 {
                let to = peer(i, k).unwrap();
                sim.command(
                    i,
                    Cmd::Burst {
                        to,
                        count: 1,
                        size: 32,
                    },
                )
                .unwrap();
            }
            let to = vec![peer(i, 3).unwrap()];
            let every = (50 + (i % 50) as u32) * MS;
            sim.command(
                i,
                Cmd::Tick {
                    to,
                    every,
                    count: 3,
                },
            )
            .unwrap();
        }
        let expected = (n * 6) as u64;
        let deadline = sim.now() + Duration::from_secs(5);
        assert!(sim.run_until(deadline, |s| s.stats().received == expected));
        // The last tick is at most 3 × 99 ms in, its datagram at most 30 ms later.
        assert!(sim.elapsed() <= 340 * MS, "{:?}", sim.elapsed());
        assert_eq!(sim.stats().timeouts, (n * 3) as u64);
        assert_eq!(sim.stats().received_bytes, (n * 3 * 32 + n * 3 * 8) as u64);
        assert_eq!(sim.in_flight(), 0);
        let received: usize = sim.nodes().map(|(_, p)| p.got.len()).sum();
        assert_eq!(received as u64, expected);
        assert_conserved(&sim);
    }
}

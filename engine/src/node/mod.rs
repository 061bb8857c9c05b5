//! The membership node: a sans-IO state machine for SWIM-style membership with Lifeguard's
//! refinements, infection-style dissemination and push-pull anti-entropy.
//!
//! A [`Node`] never reads a clock, touches a socket or draws from a global RNG. Its inputs
//! are [`Node::handle_datagram`], [`Node::handle_timeout`] and [`Node::handle_command`],
//! each with `now`; its outputs are [`Node::poll_transmit`] (datagrams to send),
//! [`Node::poll_timeout`] (when to call back) and [`Node::poll_event`] (what changed). After
//! any input, drain `poll_transmit` until it returns `None`, then read `poll_timeout`. The
//! node implements [`Endpoint`], so the runtime hosts it directly; the simulator and the
//! load generator drive the same code.
//!
//! The protocol is described in `engine/ALGORITHM.md`.
//!
//! ```
//! use std::time::Instant;
//! use hearsay::node::{Command, Node, NodeConfig, Preset};
//!
//! let now = Instant::now();
//! let a = NodeConfig::new(Preset::Local, "127.0.0.1:7001".parse()?, b"demo");
//! let b = NodeConfig::new(Preset::Local, "127.0.0.1:7002".parse()?, b"demo");
//! let (a_addr, b_addr) = (a.addr, b.addr);
//! let mut a = Node::new(a, now)?;
//! let mut b = Node::new(b, now)?;
//! b.handle_command(now, Command::Join(vec![a_addr]));
//!
//! // Deliver datagrams by hand until both sides are quiet.
//! let mut buf = Vec::new();
//! for _ in 0..10 {
//!     while let Some(to) = b.poll_transmit(now, &mut buf) {
//!         assert_eq!(to, a_addr);
//!         a.handle_datagram(now, b_addr, &mut buf);
//!         buf.clear();
//!     }
//!     while let Some(to) = a.poll_transmit(now, &mut buf) {
//!         if to == b_addr {
//!             b.handle_datagram(now, a_addr, &mut buf);
//!         }
//!         buf.clear();
//!     }
//! }
//! assert_eq!(a.live_count(), 2);
//! assert_eq!(b.live_count(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

mod config;
mod crdt;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::codec::{
    decode_frame, kind, Ack, Digest, DigestEntry, FrameConfig, FrameWriter, Join, KeyRing,
    MemberSummary, MemberUpdate, Message, Nack, Ping, PingReq, StatePush, StateRequest, Status,
    SummaryBucket,
};
use crate::crdt::{Kind, Op};
use crate::detector::{
    expected_confirmations, longest_suspicion, suspicion_timeout, InputLag, LocalHealth, ProbeOrder,
};
use crate::dissemination::{retransmit_limit, shared_limit, BroadcastQueue, NO_HINT};
use crate::membership::{bucket_of, Member, MemberRef, MemberTable, Merge, BUCKETS};
use crate::placement::{self, NodeId, Router};
use crate::replication::{Store, PARTITIONS};
use crate::runtime::Endpoint;

pub use config::{ConfigError, NodeConfig, PlacementConfig, Preset, MIN_NODE_DATAGRAM};

/// A local request to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Join the cluster through any of these seeds; retried with backoff until one answers.
    /// An empty list starts a cluster of one.
    Join(Vec<SocketAddr>),
    /// Leave gracefully: announce it, keep gossiping for
    /// [`NodeConfig::leave_linger`], then stop.
    Leave,
    /// Leave placement but stay a member (keeps gossiping and answering probes).
    Drain,
    /// Return to placement.
    Undrain,
    /// Apply a CRDT mutation to the local replica (see [`Node::crdt_update`]); a refused
    /// mutation is counted in [`NodeStats::crdt_rejected`].
    CrdtUpdate {
        /// The key.
        key: Vec<u8>,
        /// The value's type (a key keeps the type of its first mutation).
        kind: Kind,
        /// The mutation.
        op: Op,
    },
    /// Replace this node's metadata (at most [`crate::codec::MAX_METADATA_LEN`] bytes;
    /// longer metadata is refused and counted in [`NodeStats::refused_commands`]).
    SetMetadata(Vec<u8>),
}

/// Something a node learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node reached a cluster: a seed (or any member) answered.
    Joined,
    /// A member appeared (or came back with a higher incarnation after being dead or left).
    MemberJoined(NodeId),
    /// A member's metadata changed.
    MemberUpdated(NodeId),
    /// A member missed its probes and is suspected.
    Suspected(NodeId),
    /// A suspected member refuted the suspicion.
    AliveAgain(NodeId),
    /// A member was declared failed.
    Failed(NodeId),
    /// A member left gracefully (this node included, when it leaves).
    Left(NodeId),
    /// A member drained (this node included).
    Drained(NodeId),
    /// A member undrained (this node included).
    Undrained(NodeId),
    /// The local replica's value of a CRDT key changed: by a local write or join, or by a
    /// delta or state merged from a peer (a merge that changes nothing is not reported).
    CrdtChanged(Vec<u8>),
    /// Placement was rebuilt and published with this version and member count.
    PlacementChanged {
        /// The router's new version.
        version: u64,
        /// Members in the new placement.
        members: usize,
    },
}

/// Counters of one node. Plain integers: a node is driven by one thread at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Datagrams handed to the node.
    pub datagrams_in: u64,
    /// Bytes handed to the node.
    pub bytes_in: u64,
    /// Datagrams the node produced.
    pub datagrams_out: u64,
    /// Bytes the node produced.
    pub bytes_out: u64,
    /// Messages read from good frames, and their bytes, by message type.
    pub messages_in: MessageCounts,
    /// Messages written, and their bytes, by message type.
    pub messages_out: MessageCounts,
    /// Frames dropped by the decoder, by reason ([`crate::codec::DecodeError::reason`]).
    pub dropped: Vec<(&'static str, u64)>,
    /// Frames dropped because a known live sender spoke from another address.
    pub source_mismatch: u64,
    /// Frames that claimed to come from this node.
    pub from_self: u64,
    /// Messages of types this version skips, or that membership does not handle.
    pub unhandled_messages: u64,
    /// Pings meant for another identity at this address (a previous process).
    pub misdirected_pings: u64,
    /// Direct probes sent.
    pub probes: u64,
    /// Probes that failed (no ack, direct or indirect).
    pub probe_failures: u64,
    /// Probes answered, but after more than half the probe timeout (each raises the local
    /// health score).
    pub slow_acks: u64,
    /// Indirect probe requests sent.
    pub indirect_probes: u64,
    /// Second direct pings sent alongside indirect probes
    /// ([`NodeConfig::retry_direct_probe`]).
    pub direct_retries: u64,
    /// Probes abandoned because this node missed its own deadline (stalled).
    pub stalls: u64,
    /// Longest wait of a datagram in this node's socket before the node read it, in
    /// microseconds (from the host's reports, [`Node::handle_input_delay`]).
    pub input_lag_peak_us: u64,
    /// Probes left unjudged because this node read its input late (see
    /// [`NodeConfig::input_lag_limit`]): no ack came, but one may have been waiting unread.
    pub probes_unjudged: u64,
    /// Gossip rounds deferred because this node read its input late.
    pub gossip_deferred: u64,
    /// Push-pull rounds deferred because this node read its input late.
    pub push_pulls_deferred: u64,
    /// Suspicion timeouts extended because this node read its input late.
    pub suspicions_extended: u64,
    /// Suspicions this node raised.
    pub suspicions: u64,
    /// Members this node declared failed.
    pub declared_dead: u64,
    /// Times this node refuted a rumour about itself.
    pub refutations: u64,
    /// Stale updates answered with this node's newer state.
    pub corrections: u64,
    /// Member updates merged that changed something.
    pub updates_merged: u64,
    /// Member updates written, by what carried them.
    pub updates_sent: UpdatesSent,
    /// Queued updates that this node received again from others while its queue was
    /// crowded, each counted as one sending ([`BroadcastQueue::heard`]).
    pub broadcasts_heard: u64,
    /// Push-pull rounds this node started.
    pub push_pulls: u64,
    /// Join attempts sent (one per seed per attempt).
    pub join_attempts: u64,
    /// Placement rebuilds.
    pub placement_builds: u64,
    /// Placement rebuilds that failed (the previous placement stays).
    pub placement_errors: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Commands refused (invalid metadata, commands after leaving).
    pub refused_commands: u64,
    /// Local CRDT mutations applied.
    pub crdt_updates: u64,
    /// Remote CRDT deltas and states joined.
    pub crdt_deltas_in: u64,
    /// Remote deltas and states that changed a local value.
    pub crdt_changes: u64,
    /// CRDT mutations and remote values refused (wrong type, malformed, too large).
    pub crdt_rejected: u64,
    /// CRDT anti-entropy rounds this node started.
    pub crdt_syncs: u64,
}

/// Member updates a node wrote, by what carried them. On a network that loses nothing,
/// the receivers read as many: this says where a bulk change's reads come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdatesSent {
    /// In gossip rounds (§10 of ALGORITHM.md), join replies included.
    pub gossip: u64,
    /// Piggybacked on any other frame: probes, acks, joins, summaries, digests, requests.
    pub piggyback: u64,
    /// In push-pull answers (a peer's thin buckets, or what it requested), not marked as
    /// catch-up state.
    pub pull: u64,
    /// In push-pull answers marked as catch-up state (`StatePush`), which the receiver
    /// does not gossip on.
    pub catch_up: u64,
}

impl UpdatesSent {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.gossip + self.piggyback + self.pull + self.catch_up
    }

    fn count(&mut self, carrier: Carrier, n: u64) {
        *match carrier {
            Carrier::Gossip => &mut self.gossip,
            Carrier::Piggyback => &mut self.piggyback,
            Carrier::Pull => &mut self.pull,
            Carrier::CatchUp => &mut self.catch_up,
        } += n;
    }
}

/// What a frame's member updates ride in ([`UpdatesSent`]).
#[derive(Clone, Copy)]
enum Carrier {
    Gossip,
    Piggyback,
    Pull,
    CatchUp,
}

impl NodeStats {
    fn count_drop(&mut self, reason: &'static str) {
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.dropped.push((reason, 1)),
        }
    }

    /// All decoder drops together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// Message types by name, in type order; [`MessageCounts`] has one slot for each and one
/// more for types this version does not know.
const MESSAGE_TYPES: [(u8, &str); 15] = [
    (kind::PING, "ping"),
    (kind::PING_REQ, "ping_req"),
    (kind::ACK, "ack"),
    (kind::NACK, "nack"),
    (kind::JOIN, "join"),
    (kind::LEAVE, "leave"),
    (kind::MEMBER, "member"),
    (kind::DIGEST, "digest"),
    (kind::STATE_REQUEST, "state_request"),
    (kind::MEMBER_SUMMARY, "member_summary"),
    (kind::STATE_PUSH, "state_push"),
    (kind::CRDT_DELTA, "crdt_delta"),
    (kind::CRDT_DIGEST, "crdt_digest"),
    (kind::CRDT_ACK, "crdt_ack"),
    (kind::BROADCAST, "broadcast"),
];

/// Messages and their bytes (type byte, length and body: [`Message::encoded_len`]) by
/// message type. A datagram carries several messages, so these add up to more than the
/// datagram counts; frame headers and seals are not in any type's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// (messages, bytes) per [`MESSAGE_TYPES`] slot, then unknown types.
    slots: [(u64, u64); MESSAGE_TYPES.len() + 1],
}

/// [`MessageCounts`]' slot of every type byte, built at compile time so counting a message
/// on the packet path is one table read.
const MESSAGE_SLOTS: [u8; 256] = {
    let mut slots = [MESSAGE_TYPES.len() as u8; 256];
    let mut i = 0;
    while i < MESSAGE_TYPES.len() {
        slots[MESSAGE_TYPES[i].0 as usize] = i as u8;
        i += 1;
    }
    slots
};

impl MessageCounts {
    fn slot(kind: u8) -> usize {
        usize::from(MESSAGE_SLOTS[usize::from(kind)])
    }

    fn add(&mut self, kind: u8, bytes: usize) {
        let s = &mut self.slots[Self::slot(kind)];
        s.0 += 1;
        s.1 += bytes as u64;
    }

    /// Messages and bytes of type `kind` (a [`kind`] constant); every type this version
    /// does not know shares one count.
    pub fn get(&self, kind: u8) -> (u64, u64) {
        self.slots[Self::slot(kind)]
    }

    /// `(name, messages, bytes)` for every type in type order (`"ping"`, `"ping_req"`, …,
    /// `"broadcast"`), then `"unknown"` for the types this version does not know.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        MESSAGE_TYPES
            .iter()
            .map(|&(_, name)| name)
            .chain(["unknown"])
            .zip(self.slots.iter())
            .map(|(name, &(n, b))| (name, n, b))
    }

    /// Messages and bytes of every type together.
    pub fn total(&self) -> (u64, u64) {
        self.slots
            .iter()
            .fold((0, 0), |(n, b), &(sn, sb)| (n + sn, b + sb))
    }
}

/// Where the node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not (yet) in a cluster: no probing.
    Idle,
    /// Sent joins, waiting for an answer.
    Joining,
    /// In a cluster.
    Member,
    /// Announcing its departure until the deadline.
    Leaving(Instant),
    /// Done: ignores every input.
    Stopped,
}

/// A datagram to write at the next [`Node::poll_transmit`].
#[derive(Debug)]
enum Intent {
    Ping {
        to: SocketAddr,
        seq: u64,
        target: NodeId,
    },
    PingReq {
        to: SocketAddr,
        seq: u64,
        target: NodeId,
        target_addr: SocketAddr,
    },
    Ack {
        to: SocketAddr,
        seq: u64,
    },
    Nack {
        to: SocketAddr,
        seq: u64,
    },
    Join {
        to: SocketAddr,
    },
    /// Pending updates only; `with_self` puts this node's own state first (join replies).
    Gossip {
        to: SocketAddr,
        with_self: bool,
    },
    Summary {
        to: SocketAddr,
        reply: bool,
    },
    Digest {
        to: SocketAddr,
        ids: Vec<NodeId>,
        /// Where each of `ids` was in the table when it was picked (see [`Hints`]).
        hints: Hints,
        pos: usize,
    },
    /// Member states, with the [`StatePush`] marker when the peer is catching up (so it
    /// does not gossip them on as news).
    Updates {
        to: SocketAddr,
        ids: Vec<NodeId>,
        hints: Hints,
        pos: usize,
        catch_up: bool,
    },
    Request {
        to: SocketAddr,
        ids: Vec<NodeId>,
        pos: usize,
    },
    /// The deltas `neighbour` has not acknowledged in one partition.
    CrdtRun {
        to: SocketAddr,
        neighbour: NodeId,
        partition: u16,
    },
    CrdtAcks {
        to: SocketAddr,
        acks: Vec<(u16, u64)>,
    },
    /// Whole-partition digests, opening CRDT anti-entropy.
    CrdtSummary {
        to: SocketAddr,
    },
    CrdtRanges {
        to: SocketAddr,
        partition: u16,
    },
    /// Full values of these keys.
    CrdtState {
        to: SocketAddr,
        keys: Vec<Vec<u8>>,
        pos: usize,
    },
}

/// Table positions of an intent's member ids, one per id, taken as the ids were picked
/// from the table (empty when the ids came from elsewhere: a request, a digest). Writing
/// a long list then reads each entry at its position, checked by id, rather than
/// searching the index for it: one cache miss per member instead of two, in a process
/// hosting thousands of tables. A position gone stale (the table changed in between)
/// only costs the search. The entries a few places ahead are prefetched.
#[derive(Debug, Default)]
struct Hints(Vec<u32>);

impl Hints {
    /// How far ahead of the member being written its successors' entries are prefetched.
    const AHEAD: usize = 8;

    /// The position hint of the id at `pos`.
    fn at(&self, pos: usize) -> u32 {
        self.0.get(pos).copied().unwrap_or(NO_HINT)
    }

    /// Prefetch the entry of the id [`AHEAD`](Self::AHEAD) places after `pos`.
    fn prefetch_ahead(&self, table: &MemberTable, pos: usize) {
        if let Some(&h) = self.0.get(pos + Self::AHEAD) {
            table.prefetch_position(h);
        }
    }
}

/// The probe of the current protocol period.
#[derive(Debug)]
struct Probe {
    target: NodeId,
    seq: u64,
    /// When the ping went out.
    sent: Instant,
    /// How long the first ack took, direct or relayed.
    acked: Option<Duration>,
    /// When to ask others to probe (if still unacked).
    indirect_at: Option<Instant>,
    nacks_expected: u32,
    nacks: u32,
}

/// An indirect probe this node relays for another.
#[derive(Debug)]
struct Relay {
    seq: u64,
    requester: SocketAddr,
    requester_seq: u64,
    deadline: Instant,
}

/// A suspicion this node tracks.
#[derive(Debug)]
struct Suspicion {
    incarnation: u64,
    started: Instant,
    accusers: Vec<NodeId>,
    deadline: Instant,
}

/// Bytes of a datagram a CRDT value cannot use: frame header and seal (at most 121) and the
/// delta record's own fields.
const CRDT_OVERHEAD: usize = 160;

/// Most stale updates answered with corrections per received datagram.
const MAX_CORRECTIONS: usize = 8;
/// Messages of a frame decoded at a time, the table entries of their member updates
/// prefetched together (a 1400-byte frame holds about 90 member updates without metadata).
const DECODE_BATCH: usize = 32;

/// What the node tracks while it reads one datagram.
#[derive(Default)]
pub(super) struct FrameContext {
    /// Members whose stale updates this frame carried, answered with their current state
    /// in one reply once the frame is read (at most [`MAX_CORRECTIONS`]).
    corrections: Vec<NodeId>,
    /// A [`StatePush`] marker was read: the updates that follow are anti-entropy state.
    state: bool,
    /// Per partition, the highest delta sequence number read (acknowledged at the end).
    crdt_acks: [Option<u64>; PARTITIONS],
}

/// A membership node. See the [module docs](self).
pub struct Node {
    config: NodeConfig,
    frame: FrameConfig,
    keys: Option<KeyRing>,
    rng: SmallRng,
    phase: Phase,
    table: MemberTable,
    broadcasts: BroadcastQueue,
    probe_order: ProbeOrder,
    health: LocalHealth,
    /// How late this node reads its input.
    lag: InputLag,
    seeds: Vec<SocketAddr>,
    out: VecDeque<Intent>,
    events: VecDeque<Event>,
    stats: NodeStats,

    next_seq: u64,
    round: u64,
    probe: Option<Probe>,
    relays: VecDeque<Relay>,
    suspicions: HashMap<NodeId, Suspicion>,
    /// Suspects not probed by this node since their suspicion started: probed first.
    suspects_to_probe: VecDeque<NodeId>,
    suspicion_heap: BinaryHeap<Reverse<(Instant, NodeId)>>,

    /// When the next protocol period starts.
    next_probe: Option<Instant>,
    next_gossip: Option<Instant>,
    last_gossip: Option<Instant>,
    next_push_pull: Option<Instant>,
    next_dead_gossip: Option<Instant>,
    next_join: Option<Instant>,
    join_attempt: u32,
    next_gc: Instant,
    next_placement: Option<Instant>,
    /// Largest live view seen lately (decays), to notice a sharp shrink.
    peak_live: usize,
    /// The peer of this node's last push-pull, and whether it taught this node anything:
    /// a node that is behind pulls again after one period instead of a whole interval.
    pp_peer: Option<SocketAddr>,
    pp_learned: bool,
    /// Whether the peer of this node's last push-pull answered its summary.
    pp_answered: bool,
    /// Whether this node is pulling every period: its last answered push-pull taught it
    /// something, or its view grew since the round before.
    pp_learning: bool,
    /// Live members when this node last opened a push-pull round.
    pp_live: usize,

    router: Option<Arc<Router>>,
    store: Store,
    neighbours: Vec<(NodeId, SocketAddr)>,
    /// The replication successor and the view hash it was computed for.
    successor: Option<(u64, Option<(NodeId, SocketAddr)>)>,
    next_crdt_round: Option<Instant>,
    last_crdt_round: Option<Instant>,
    next_crdt_sync: Instant,
    scratch_payload: Vec<u8>,
    scratch_ids: Vec<NodeId>,
    scratch_digest: Vec<DigestEntry>,
    scratch_peers: Vec<(NodeId, SocketAddr)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.config.id)
            .field("addr", &self.config.addr)
            .field("phase", &self.phase)
            .field("live", &self.table.live_count())
            .field("incarnation", &self.incarnation())
            .finish()
    }
}

impl Node {
    /// A node that knows only itself. Send [`Command::Join`] to reach a cluster; until then
    /// it still answers anyone who contacts it (it can be a seed).
    pub fn new(config: NodeConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let frame = FrameConfig::new(&config.cluster)
            .and_then(|c| c.with_max_datagram(config.max_datagram))
            .map_err(ConfigError::Frame)?;
        let mut rng = SmallRng::seed_from_u64(config.rng_seed);
        let local = Member {
            id: config.id,
            addr: config.addr,
            incarnation: 0,
            status: Status::Alive,
            drained: false,
            meta_version: 0,
            metadata: config.metadata.clone(),
            accuser: None,
        };
        let table = MemberTable::new(local, now, rng.random());
        let router = match config.placement {
            Some(p) => {
                let me = [placement::Node::new(config.id.0, config.addr.to_string())];
                Some(Arc::new(
                    Router::new(p.scheme, p.seed, &me).map_err(ConfigError::Placement)?,
                ))
            }
            None => None,
        };
        // Start timers at random offsets so nodes started together do not act in lockstep.
        let jitter = |rng: &mut SmallRng, d: Duration| d.mul_f64(rng.random::<f64>());
        let next_probe = now + jitter(&mut rng, config.probe_interval);
        let next_push_pull = now + jitter(&mut rng, config.push_pull_interval);
        let next_dead_gossip = now + jitter(&mut rng, config.dead_gossip_interval);
        let gc = now + config.tombstone_ttl / 4;
        let next_crdt_sync = now + jitter(&mut rng, config.crdt_sync_interval);
        // Delta sequence numbers start at a random point per process, so a restarted node's
        // runs are never taken for its previous life's.
        let first_seq = rng.random_range(1..u64::MAX / 2);
        let store = Store::new(
            config.id,
            first_seq,
            config.crdt_buffer_cap,
            config.max_datagram.saturating_sub(CRDT_OVERHEAD),
        );
        Ok(Self {
            keys: config.keys.clone(),
            frame,
            rng,
            phase: Phase::Idle,
            table,
            broadcasts: BroadcastQueue::default(),
            probe_order: ProbeOrder::default(),
            health: LocalHealth::new(config.awareness_max),
            lag: InputLag::new(config.probe_interval * 2),
            seeds: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: NodeStats::default(),
            next_seq: 1,
            round: 0,
            probe: None,
            relays: VecDeque::new(),
            suspicions: HashMap::new(),
            suspects_to_probe: VecDeque::new(),
            suspicion_heap: BinaryHeap::new(),
            next_probe: Some(next_probe),
            next_gossip: None,
            last_gossip: None,
            next_push_pull: Some(next_push_pull),
            next_dead_gossip: Some(next_dead_gossip),
            next_join: None,
            join_attempt: 0,
            next_gc: gc,
            next_placement: None,
            peak_live: 1,
            pp_peer: None,
            pp_learned: false,
            pp_answered: false,
            pp_learning: false,
            // The node itself.
            pp_live: 1,
            router,
            store,
            neighbours: Vec::new(),
            successor: None,
            next_crdt_round: None,
            last_crdt_round: None,
            next_crdt_sync,
            scratch_payload: Vec::new(),
            scratch_ids: Vec::new(),
            scratch_digest: Vec::new(),
            scratch_peers: Vec::new(),
            config,
        })
    }

    // -----------------------------------------------------------------------------------
    // Queries

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// This node's advertised address.
    pub fn addr(&self) -> SocketAddr {
        self.config.addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.local().incarnation
    }

    /// This node's own entry.
    pub fn local(&self) -> MemberRef<'_> {
        self.table
            .get(self.config.id)
            .expect("the local member is never removed from the table")
    }

    /// Whether a seed (or any member) has answered since the last [`Command::Join`], or the
    /// node was contacted by a cluster.
    pub fn is_joined(&self) -> bool {
        matches!(self.phase, Phase::Member | Phase::Leaving(_))
    }

    /// Whether the node left and stopped.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// What this node believes about one member.
    pub fn member(&self, id: NodeId) -> Option<MemberRef<'_>> {
        self.table.get(id)
    }

    /// Every member this node knows, tombstones included.
    pub fn members(&self) -> impl Iterator<Item = MemberRef<'_>> + '_ {
        self.table.iter()
    }

    /// Members known, tombstones included (O(1), unlike counting [`members`](Self::members)).
    pub fn member_count(&self) -> usize {
        self.table.len()
    }

    /// Alive and suspect members, this node included.
    pub fn live_count(&self) -> usize {
        self.table.live_count()
    }

    /// A hash of the live view: two nodes with the same live members in the same states
    /// have the same hash.
    pub fn view_hash(&self) -> u64 {
        self.table.view_hash()
    }

    /// The anti-entropy buckets (live count and state hash per bucket of member ids).
    pub fn buckets(&self) -> &[SummaryBucket; BUCKETS] {
        self.table.buckets()
    }

    /// The local health score (0 = healthy; Lifeguard's multiplier minus one).
    pub fn local_health(&self) -> u32 {
        self.health.score()
    }

    /// Members currently suspected by this node, with when the suspicion will be confirmed.
    pub fn suspicions(&self) -> impl Iterator<Item = (NodeId, Instant, usize)> + '_ {
        self.suspicions
            .iter()
            .map(|(&id, s)| (id, s.deadline, s.accusers.len()))
    }

    /// Member updates waiting to be piggybacked.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The router this node publishes placement to, when placement is configured. Clone
    /// the `Arc` into any thread and call `lookup` there; it never blocks.
    pub fn router(&self) -> Option<&Arc<Router>> {
        self.router.as_ref()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // -----------------------------------------------------------------------------------
    // Inputs

    /// A datagram arrived from `from`. Bad frames are counted and dropped; decryption
    /// happens in place.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let frame = match decode_frame(data, &self.config.cluster, self.keys.as_ref()) {
            Ok(f) => f,
            Err(e) => {
                self.stats.count_drop(e.reason());
                return;
            }
        };
        let sender = frame.sender();
        if sender == self.config.id {
            self.stats.from_self += 1;
            return;
        }
        if self.config.verify_source {
            if let Some(m) = self.table.get(sender) {
                if m.is_live() && m.addr != from {
                    self.stats.source_mismatch += 1;
                    return;
                }
            }
        }
        if self.phase == Phase::Joining || self.phase == Phase::Idle {
            // Only a member's answer (its own state, as in a join reply) or a join through
            // this node makes it part of a cluster; any other frame proves nothing.
            let answered = frame.messages().any(|m| match m {
                Ok(Message::Member(u)) => u.id == sender && u.status == Status::Alive,
                Ok(Message::Join(_)) => true,
                _ => false,
            });
            if answered {
                self.become_member(now, Some(from));
            }
        }
        // Decode the messages a batch at a time, and start loading the table entries of the
        // batch's member updates (which fill most datagrams) all at once before merging them
        // one by one. Each message is decoded once, and its length on the wire is what
        // decoding consumed.
        let mut messages = frame.messages();
        let mut batch: [Option<(Message<'_>, usize)>; DECODE_BATCH] = [None; DECODE_BATCH];
        let mut ids = [NodeId(0); DECODE_BATCH];
        let mut ctx = FrameContext::default();
        loop {
            let (mut n, mut k) = (0, 0);
            let mut failed = None;
            while n < DECODE_BATCH {
                let before = messages.remaining();
                match messages.next() {
                    Some(Ok(m)) => {
                        if let Message::Member(u) = &m {
                            ids[k] = u.id;
                            k += 1;
                        }
                        batch[n] = Some((m, before - messages.remaining()));
                        n += 1;
                    }
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            self.table.prefetch(&ids[..k]);
            for &(m, len) in batch[..n].iter().flatten() {
                self.stats.messages_in.add(m.kind(), len);
                self.handle_message(now, from, sender, m, &mut ctx);
            }
            if let Some(e) = failed {
                self.stats.count_drop(e.reason());
                break;
            }
            if n < DECODE_BATCH {
                break;
            }
        }
        if !ctx.corrections.is_empty() {
            self.out.push_back(Intent::Updates {
                to: from,
                ids: std::mem::take(&mut ctx.corrections),
                hints: Hints::default(),
                pos: 0,
                catch_up: false,
            });
        }
        crdt::queue_acks(self, from, &ctx);
    }

    /// The next datagram waited `delay` in this node's socket before being read (the
    /// host knows from the kernel's receive timestamp). See
    /// [`NodeConfig::input_lag_limit`] for what the node does while it reads late.
    pub fn handle_input_delay(&mut self, now: Instant, delay: Duration) {
        if delay > self.lag.peak() {
            self.stats.input_lag_peak_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        }
        self.lag.observe(now, delay);
    }

    /// How late this node reads its input now: the longest wait in its socket among the
    /// datagrams it read in the last two to four probe intervals ([`InputLag`]).
    pub fn input_lag(&self, now: Instant) -> Duration {
        self.lag.get(now)
    }

    /// How late this node reads its input, when that is later than
    /// [`NodeConfig::input_lag_limit`].
    fn late_by(&self, now: Instant) -> Option<Duration> {
        Some(self.lag.get(now)).filter(|&lag| lag > self.config.input_lag_limit)
    }

    /// Whether this node reads its input later than [`NodeConfig::input_lag_limit`].
    fn reads_late(&self, now: Instant) -> bool {
        self.late_by(now).is_some()
    }

    /// Timers due at or before `now` fire; spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Stopped => return,
            Phase::Leaving(until) if now >= until => {
                self.phase = Phase::Stopped;
                self.out.clear();
                return;
            }
            _ => {}
        }
        if self.next_join.is_some_and(|t| now >= t) {
            self.send_joins(now);
        }
        self.fire_relays(now);
        if let Some(p) = &self.probe {
            if p.indirect_at.is_some_and(|t| now >= t) {
                self.probe_indirectly(now);
            }
        }
        if let Some(due) = self.next_probe {
            if now >= due {
                self.probe_tick(now, due);
            }
        }
        self.fire_suspicions(now);
        if self.next_gossip.is_some_and(|t| now >= t) {
            self.gossip_tick(now);
        }
        if self.next_push_pull.is_some_and(|t| now >= t) {
            self.push_pull_tick(now);
        }
        if self.next_dead_gossip.is_some_and(|t| now >= t) {
            self.dead_gossip_tick(now);
        }
        if now >= self.next_gc {
            self.gc_tick(now);
        }
        if self.next_placement.is_some_and(|t| now >= t) {
            self.rebuild_placement();
        }
        if self.next_crdt_round.is_some_and(|t| now >= t) {
            self.crdt_round(now);
        }
        if now >= self.next_crdt_sync {
            self.crdt_sync_tick(now);
        }
    }

    /// A local command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        if matches!(self.phase, Phase::Leaving(_) | Phase::Stopped) {
            self.stats.refused_commands += 1;
            return;
        }
        match cmd {
            Command::Join(seeds) => {
                self.seeds = seeds
                    .into_iter()
                    .filter(|&a| a != self.config.addr)
                    .collect();
                if self.seeds.is_empty() {
                    self.become_member(now, None);
                } else {
                    self.phase = Phase::Joining;
                    self.join_attempt = 0;
                    self.send_joins(now);
                }
            }
            Command::Leave => {
                let id = self.config.id;
                self.bump_local(now, |m| m.status = Status::Left);
                self.push_event(Event::Left(id));
                self.phase = Phase::Leaving(now + self.config.leave_linger);
                self.probe = None;
                // Tell a few members at once; gossip carries it on while lingering.
                self.push_now(now, self.config.gossip_fanout * 2);
            }
            Command::Drain | Command::Undrain => {
                let drain = cmd == Command::Drain;
                if self.local().drained != drain {
                    let id = self.config.id;
                    self.bump_local(now, |m| m.drained = drain);
                    self.push_event(if drain {
                        Event::Drained(id)
                    } else {
                        Event::Undrained(id)
                    });
                    self.placement_dirty(now);
                }
            }
            Command::CrdtUpdate { key, kind, op } => {
                if self.crdt_update(now, &key, kind, &op).is_err() {
                    self.stats.crdt_rejected += 1;
                }
            }
            Command::SetMetadata(metadata) => {
                if metadata.len() > crate::codec::MAX_METADATA_LEN {
                    self.stats.refused_commands += 1;
                    return;
                }
                self.bump_local(now, |m| {
                    m.meta_version += 1;
                    m.metadata = metadata;
                });
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Outputs

    /// Write the next datagram into `buf` (appended; pass it cleared) and return where to
    /// send it, or `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if self.phase == Phase::Stopped {
            return None;
        }
        while let Some(intent) = self.out.pop_front() {
            let start = buf.len();
            if let Some(to) = self.write(intent, buf) {
                self.stats.datagrams_out += 1;
                self.stats.bytes_out += (buf.len() - start) as u64;
                return Some(to);
            }
            buf.truncate(start);
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let leave = match self.phase {
            Phase::Stopped => return None,
            Phase::Leaving(t) => Some(t),
            _ => None,
        };
        [
            leave,
            self.next_join,
            self.relays.front().map(|r| r.deadline),
            self.probe.as_ref().and_then(|p| p.indirect_at),
            self.next_probe,
            self.suspicion_heap.peek().map(|Reverse((t, _))| *t),
            self.next_gossip,
            self.next_push_pull,
            self.next_dead_gossip,
            Some(self.next_gc),
            self.next_placement,
            self.next_crdt_round,
            Some(self.next_crdt_sync),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // -----------------------------------------------------------------------------------
    // Messages

    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: NodeId,
        msg: Message<'_>,
        ctx: &mut FrameContext,
    ) {
        match msg {
            Message::Ping(p) => {
                if p.target == self.config.id {
                    self.out.push_back(Intent::Ack {
                        to: from,
                        seq: p.seq,
                    });
                } else {
                    self.stats.misdirected_pings += 1;
                }
            }
            Message::PingReq(r) => {
                let seq = self.take_seq();
                self.relays.push_back(Relay {
                    seq,
                    requester: from,
                    requester_seq: r.seq,
                    // Nack well inside the requester's window (memberlist uses 80% of the
                    // probe timeout), so a healthy requester hears it before its verdict.
                    deadline: now + self.config.probe_timeout.mul_f64(0.8),
                });
                self.out.push_back(Intent::Ping {
                    to: r.target_addr,
                    seq,
                    target: r.target,
                });
            }
            Message::Ack(a) => self.handle_ack(now, a.seq),
            Message::Nack(n) => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.seq == n.seq) {
                    p.nacks += 1;
                }
            }
            Message::Join(j) => {
                let u = MemberUpdate {
                    id: sender,
                    addr: j.addr,
                    incarnation: j.incarnation,
                    status: Status::Alive,
                    drained: false,
                    meta_version: 0,
                    metadata: j.metadata,
                    accuser: None,
                };
                self.handle_update(now, from, sender, &u, ctx);
                self.out.push_back(Intent::Gossip {
                    to: j.addr,
                    with_self: true,
                });
            }
            Message::Leave(l) => {
                if let Some(m) = self.table.get(l.id) {
                    let mut u = m.to_member();
                    u.incarnation = l.incarnation;
                    u.status = Status::Left;
                    self.handle_update(now, from, sender, &u.as_update(), ctx);
                }
            }
            Message::Member(u) => self.handle_update(now, from, sender, &u, ctx),
            Message::StatePush(_) => ctx.state = true,
            Message::Digest(d) => self.handle_digest(from, d),
            Message::StateRequest(r) => {
                let ids: Vec<NodeId> = r.ids.iter().collect();
                if !ids.is_empty() {
                    let catch_up = self.is_catch_up(ids.len());
                    self.out.push_back(Intent::Updates {
                        to: from,
                        ids,
                        hints: Hints::default(),
                        pos: 0,
                        catch_up,
                    });
                }
            }
            Message::MemberSummary(s) => self.handle_summary(from, s),
            Message::CrdtDelta(d) => self.handle_crdt_delta(now, d, ctx),
            Message::CrdtDigest(d) => self.handle_crdt_digest(from, d),
            Message::CrdtAck(a) => self.handle_crdt_ack(sender, a),
            Message::Broadcast(_) | Message::Unknown(_) => self.stats.unhandled_messages += 1,
        }
    }

    fn handle_ack(&mut self, now: Instant, seq: u64) {
        if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
            if p.acked.is_none() {
                p.acked = Some(now.saturating_duration_since(p.sent));
            }
            p.indirect_at = None;
            return;
        }
        if let Some(i) = self.relays.iter().position(|r| r.seq == seq) {
            if let Some(r) = self.relays.remove(i) {
                self.out.push_back(Intent::Ack {
                    to: r.requester,
                    seq: r.requester_seq,
                });
            }
        }
    }

    /// Merge one member update from `sender` (relayed or first-hand).
    fn handle_update(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: NodeId,
        u: &MemberUpdate<'_>,
        ctx: &mut FrameContext,
    ) {
        if u.id == self.config.id {
            self.hear_about_self(now, u, ctx);
            return;
        }
        match self.table.merge(u, now) {
            Merge::Added => {
                self.stats.updates_merged += 1;
                self.learned_from_pull(now, from);
                if u.status != Status::Dead && u.status != Status::Left {
                    self.push_event(Event::MemberJoined(u.id));
                    self.probe_order.insert(&mut self.rng, u.id);
                    self.placement_dirty(now);
                    // A member learned from anti-entropy state is old news to the cluster
                    // (a joiner catching up); one learned from a rumour is spread on, unless
                    // the queue is crowded and the news is second-hand: in a bulk change,
                    // anti-entropy carries it on, and relayed copies mostly reach members
                    // that already have it (ALGORITHM.md §10). News from the member
                    // itself (a join) is spread on in any case.
                    let relayed_in_bulk = u.id != sender && self.broadcasts_crowded();
                    if !ctx.state && !relayed_in_bulk {
                        self.broadcasts.push(&mut self.table, u.id);
                        self.gossip_soon(now);
                    }
                    self.peak_live = self.peak_live.max(self.table.live_count());
                    self.grew_since_pull(now);
                    if u.status == Status::Suspect {
                        self.start_suspicion(now, u.id, u.incarnation, u.accuser.unwrap_or(sender));
                    }
                }
            }
            Merge::Updated {
                status,
                drained,
                meta_version,
            } => {
                self.stats.updates_merged += 1;
                self.learned_from_pull(now, from);
                let accuser = u.accuser.unwrap_or(sender);
                self.after_change(now, u.id, status, drained, meta_version, accuser);
            }
            Merge::Same => {
                if u.status == Status::Suspect {
                    let accuser = u.accuser.unwrap_or(sender);
                    self.confirm_suspicion(now, u.id, u.incarnation, accuser);
                }
                self.heard_again(u.id);
            }
            Merge::Stale => self.correct(u.id, ctx),
        }
    }

    /// Someone sent this node an update of `id` it already held. While the broadcast queue
    /// is crowded (a bulk change such as a cold start), that copy counts as one sending of
    /// the queued update, so updates most members already hold leave the queue sooner
    /// ([`BroadcastQueue::heard`]). A short queue (a lone rumour) is left alone.
    fn heard_again(&mut self, id: NodeId) {
        if !self.broadcasts_crowded() {
            return;
        }
        let limit = self.broadcast_limit();
        if self.broadcasts.heard(&mut self.table, id, limit) {
            self.stats.broadcasts_heard += 1;
        }
    }

    /// Whether more updates are queued than `broadcast_depth`: a bulk change, whose
    /// updates share the retransmission budget ([`shared_limit`]).
    fn broadcasts_crowded(&self) -> bool {
        self.broadcasts.len() > self.config.broadcast_depth
    }

    /// Times each queued update is sent now: `λ·⌈log10(N + 1)⌉`, shared out while the
    /// queue is crowded.
    fn broadcast_limit(&self) -> u32 {
        shared_limit(
            retransmit_limit(self.table.live_count(), self.config.retransmit_mult),
            self.broadcasts.len(),
            self.config.broadcast_depth,
        )
    }

    /// Note that the sender of this frame holds a stale state of `id`; [`FrameContext`]
    /// gathers them into one reply.
    fn correct(&mut self, id: NodeId, ctx: &mut FrameContext) {
        if ctx.corrections.len() < MAX_CORRECTIONS && !ctx.corrections.contains(&id) {
            self.stats.corrections += 1;
            ctx.corrections.push(id);
        }
    }

    /// Someone says something about this node. Anything at or above the local state that
    /// differs from it (a suspicion, a death, an old incarnation after a reboot) is refuted
    /// with a higher incarnation; only this node ever raises its incarnation.
    fn hear_about_self(&mut self, now: Instant, u: &MemberUpdate<'_>, ctx: &mut FrameContext) {
        if matches!(self.phase, Phase::Leaving(_) | Phase::Stopped) {
            return;
        }
        let me = self.local();
        let key = crate::membership::precedence(u.incarnation, u.status, u.meta_version);
        let same = u.incarnation == me.incarnation
            && u.status == me.status
            && u.drained == me.drained
            && u.meta_version == me.meta_version
            && u.addr == me.addr;
        if same {
            return;
        }
        if key < me.key() {
            // The sender holds an old rumour about this node (say, a suspicion already
            // refuted whose refutation it missed): answer it directly.
            self.correct(self.config.id, ctx);
            return;
        }
        let at_least = u.incarnation.max(me.incarnation);
        // Metadata that differs from what the cluster holds at that version (this node
        // restarted with new metadata) needs a new version, or receivers keep the old bytes.
        let meta = if u.meta_version >= me.meta_version && u.metadata != me.metadata {
            u.meta_version.saturating_add(1)
        } else {
            u.meta_version.max(me.meta_version)
        };
        if matches!(u.status, Status::Suspect | Status::Dead) {
            self.health.degrade(1);
        }
        self.stats.refutations += 1;
        let id = self.config.id;
        let addr = self.config.addr;
        self.table.update_with(id, now, |m| {
            m.incarnation = at_least.saturating_add(1);
            m.status = Status::Alive;
            m.addr = addr;
            m.meta_version = meta;
        });
        self.broadcasts.push(&mut self.table, id);
        self.gossip_soon(now);
    }

    /// Raise this node's incarnation with a change and announce it.
    fn bump_local(&mut self, now: Instant, f: impl FnOnce(&mut Member)) {
        let id = self.config.id;
        self.table.update_with(id, now, |m| {
            m.incarnation = m.incarnation.saturating_add(1);
            f(m);
        });
        self.broadcasts.push(&mut self.table, id);
        self.gossip_soon(now);
    }

    /// Bookkeeping after a member's state changed from (`old`, `old_drained`).
    fn after_change(
        &mut self,
        now: Instant,
        id: NodeId,
        old: Status,
        old_drained: bool,
        old_meta: u64,
        accuser: NodeId,
    ) {
        let Some(m) = self.table.get(id) else { return };
        let (new, drained, incarnation) = (m.status, m.drained, m.incarnation);
        let (is_live, in_placement) = (m.is_live(), m.in_placement());
        let was_live = matches!(old, Status::Alive | Status::Suspect);
        let meta_changed = m.meta_version != old_meta;
        match (old, new) {
            (o, Status::Alive | Status::Suspect) if !was_live && o != new => {
                self.push_event(Event::MemberJoined(id));
                self.probe_order.insert(&mut self.rng, id);
            }
            (Status::Alive, Status::Suspect) => self.push_event(Event::Suspected(id)),
            (Status::Suspect, Status::Alive) => self.push_event(Event::AliveAgain(id)),
            (o, Status::Dead) if o != Status::Dead => self.push_event(Event::Failed(id)),
            (o, Status::Left) if o != Status::Left => self.push_event(Event::Left(id)),
            _ => {}
        }
        if was_live && is_live && drained != old_drained {
            self.push_event(if drained {
                Event::Drained(id)
            } else {
                Event::Undrained(id)
            });
        }
        if meta_changed && is_live {
            self.push_event(Event::MemberUpdated(id));
        }
        if new == Status::Suspect {
            if old != Status::Suspect
                || self.suspicions.get(&id).map(|s| s.incarnation) != Some(incarnation)
            {
                self.start_suspicion(now, id, incarnation, accuser);
            }
        } else {
            self.suspicions.remove(&id);
        }
        if in_placement != (was_live && !old_drained) || meta_changed {
            self.placement_dirty(now);
        }
        self.peak_live = self.peak_live.max(self.table.live_count());
        self.broadcasts.push(&mut self.table, id);
        self.gossip_soon(now);
    }

    fn handle_digest(&mut self, from: SocketAddr, d: Digest<'_>) {
        let mut want = Vec::new();
        let mut give = Vec::new();
        // As for a frame's member updates: decode a batch of digest entries, start loading
        // their table entries all at once, then compare them one by one.
        let mut entries = d.entries.iter();
        let mut batch = [None; DECODE_BATCH];
        let mut ids = [NodeId(0); DECODE_BATCH];
        loop {
            let mut n = 0;
            for (slot, e) in batch.iter_mut().zip(entries.by_ref()) {
                *slot = Some(e);
                ids[n] = e.id;
                n += 1;
            }
            self.table.prefetch(&ids[..n]);
            for e in batch[..n].iter().flatten() {
                if e.id == self.config.id {
                    // Our own entry: the peer's view of us is settled by refutation when it
                    // sends the update itself; offer ours if the peer is behind.
                    if self.local().key()
                        > crate::membership::precedence(e.incarnation, e.status, e.meta_version)
                    {
                        give.push(e.id);
                    }
                    continue;
                }
                let theirs = crate::membership::precedence(e.incarnation, e.status, e.meta_version);
                match self.table.get(e.id) {
                    None => want.push(e.id),
                    Some(m) => match m.key().cmp(&theirs) {
                        std::cmp::Ordering::Less => want.push(e.id),
                        std::cmp::Ordering::Greater => give.push(e.id),
                        std::cmp::Ordering::Equal => {}
                    },
                }
            }
            if n < DECODE_BATCH {
                break;
            }
        }
        if !want.is_empty() {
            self.out.push_back(Intent::Request {
                to: from,
                ids: want,
                pos: 0,
            });
        }
        if !give.is_empty() {
            let catch_up = self.is_catch_up(give.len());
            self.out.push_back(Intent::Updates {
                to: from,
                ids: give,
                hints: Hints::default(),
                pos: 0,
                catch_up,
            });
        }
    }

    fn handle_summary(&mut self, from: SocketAddr, s: MemberSummary<'_>) {
        if s.buckets.len() != BUCKETS {
            self.stats.unhandled_messages += 1;
            return;
        }
        if s.reply && self.pp_peer == Some(from) {
            self.pp_answered = true;
        }
        if !s.reply {
            self.out.push_back(Intent::Summary {
                to: from,
                reply: true,
            });
        }
        let theirs_total: usize = s.buckets.iter().map(|b| b.count as usize).sum();
        // A peer holding less than half of this view is catching up (a joiner, or a node
        // back from a long stall): what it lacks is old news to everyone else.
        let catch_up = theirs_total * 2 < self.table.live_count();
        let mine = self.table.buckets();
        let mut push_mask = 0u64;
        let mut digest_mask = 0u64;
        for (b, theirs) in s.buckets.iter().enumerate() {
            let m = mine[b];
            if m == theirs || m.count == 0 {
                continue;
            }
            // A peer holding fewer than half as many members here would, after a digest,
            // ask for most of them: send them at once, as for an empty bucket, and save
            // the digest, the request and a round trip.
            if u64::from(theirs.count) * 2 < u64::from(m.count) {
                push_mask |= 1 << b;
            } else {
                digest_mask |= 1 << b;
            }
        }
        if push_mask | digest_mask == 0 {
            return;
        }
        let (mut push, mut push_at) = (Vec::new(), Vec::new());
        let (mut digest, mut digest_at) = (Vec::new(), Vec::new());
        for (i, m) in self.table.iter().enumerate().filter(|(_, m)| m.is_live()) {
            let bit = 1u64 << bucket_of(m.id);
            if push_mask & bit != 0 {
                push.push(m.id);
                push_at.push(i as u32);
            } else if digest_mask & bit != 0 {
                digest.push(m.id);
                digest_at.push(i as u32);
            }
        }
        if !push.is_empty() {
            self.out.push_back(Intent::Updates {
                to: from,
                ids: push,
                hints: Hints(push_at),
                pos: 0,
                catch_up,
            });
        }
        if !digest.is_empty() {
            self.out.push_back(Intent::Digest {
                to: from,
                ids: digest,
                hints: Hints(digest_at),
                pos: 0,
            });
        }
    }

    // -----------------------------------------------------------------------------------
    // Timers

    fn become_member(&mut self, now: Instant, via: Option<SocketAddr>) {
        let was_joining = self.phase == Phase::Joining;
        self.phase = Phase::Member;
        self.next_join = None;
        if was_joining || via.is_none() {
            self.push_event(Event::Joined);
        }
        // Catch up at once with whoever answered: a joiner gets the whole view from one
        // push-pull instead of waiting for gossip to bring every member.
        if let Some(to) = via {
            self.pp_peer = Some(to);
            self.out.push_back(Intent::Summary { to, reply: false });
            self.stats.push_pulls += 1;
            // Members that joined while this node did were gossiped before anyone knew
            // of this node; a second round with another member one period later picks
            // them up instead of waiting for the regular push-pull.
            let soon = now + self.config.probe_interval;
            if self.next_push_pull.is_none_or(|t| t > soon) {
                self.next_push_pull = Some(soon);
            }
            // And the CRDT store catches up from the member that answered.
            self.out.push_back(Intent::CrdtSummary { to });
        }
        self.placement_dirty(now);
    }

    fn send_joins(&mut self, now: Instant) {
        if self.phase != Phase::Joining {
            self.next_join = None;
            return;
        }
        for i in 0..self.seeds.len() {
            self.out.push_back(Intent::Join { to: self.seeds[i] });
            self.stats.join_attempts += 1;
        }
        let base = self
            .config
            .join_retry
            .saturating_mul(1 << self.join_attempt.min(16))
            .min(self.config.join_retry_max);
        self.join_attempt += 1;
        self.next_join = Some(now + self.jittered(base));
    }

    /// `d` scaled by a random factor in [0.75, 1.25), so that periodic rounds of many nodes
    /// drift apart.
    fn jittered(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.75 + 0.5 * self.rng.random::<f64>())
    }

    fn fire_relays(&mut self, now: Instant) {
        while self.relays.front().is_some_and(|r| now >= r.deadline) {
            if let Some(r) = self.relays.pop_front() {
                self.out.push_back(Intent::Nack {
                    to: r.requester,
                    seq: r.requester_seq,
                });
            }
        }
    }

    /// The start of a protocol period: settle the previous probe, then probe the next
    /// member. `due` is when this tick was scheduled: firing much later means this node
    /// itself stalled, and the previous probe's silence proves nothing about its target.
    fn probe_tick(&mut self, now: Instant, due: Instant) {
        let stalled = now.saturating_duration_since(due) > self.config.probe_timeout;
        if stalled {
            self.stats.stalls += 1;
            self.health.degrade(1);
            self.probe = None;
        }
        if let Some(p) = self.probe.take() {
            if let Some(rtt) = p.acked {
                // An answer that took more than half the (unscaled) timeout means this
                // node, its target or the path between is slow. Lifeguard raises the score
                // only when probes fail; raising it already when they come close lets a
                // saturated machine stretch its timing before its delays turn into false
                // suspicions.
                if rtt > self.config.probe_timeout / 2 {
                    self.stats.slow_acks += 1;
                    self.health.degrade(1);
                } else {
                    self.health.improve();
                }
            } else if self.reads_late(now) || p.indirect_at.is_some() {
                // The ack may be waiting unread in this node's own socket, or the indirect
                // probes were held back for that reason: the silence proves nothing about
                // the target, only that this node is slow.
                self.stats.probes_unjudged += 1;
                self.health.degrade(1);
            } else {
                self.stats.probe_failures += 1;
                // Lifeguard's rule: each relay that did not even nack suggests this node's
                // own links or CPU are the problem; relays that all nacked say the target
                // is gone, which is no fault of this node's. (Raising the score on every
                // failed probe made a 1% failure stretch every prober's period, and the
                // probes that would find the other victims waited.)
                if p.nacks_expected == 0 {
                    self.health.degrade(1);
                } else {
                    self.health
                        .degrade(p.nacks_expected.saturating_sub(p.nacks));
                }
                self.suspect(now, p.target);
            }
        }
        let period = self.health.scale(self.config.probe_interval);
        self.next_probe = Some(now + period);
        if self.phase != Phase::Member {
            return;
        }
        let me = self.config.id;
        let table = &self.table;
        // A suspect this node has not probed yet goes first: the probe carries the
        // suspicion to it (buddy system) and its ack carries the refutation back, so a
        // live suspect clears itself here even if gossip lost its refutation.
        let mut target = None;
        while let Some(id) = self.suspects_to_probe.pop_front() {
            if table.get(id).is_some_and(|m| m.status == Status::Suspect) {
                target = Some(id);
                break;
            }
        }
        let target = target.or_else(|| {
            self.probe_order.next(
                &mut self.rng,
                |id| id != me && table.get(id).is_some_and(|m| m.is_live()),
                |v| {
                    v.extend(
                        table
                            .iter()
                            .filter(|m| m.is_live() && m.id != me)
                            .map(|m| m.id),
                    )
                },
            )
        });
        let Some(target) = target else { return };
        let Some(addr) = self.table.get(target).map(|m| m.addr) else {
            return;
        };
        let seq = self.take_seq();
        self.stats.probes += 1;
        self.probe = Some(Probe {
            target,
            seq,
            sent: now,
            acked: None,
            indirect_at: Some(now + self.health.scale(self.config.probe_timeout)),
            nacks_expected: 0,
            nacks: 0,
        });
        self.out.push_back(Intent::Ping {
            to: addr,
            seq,
            target,
        });
    }

    fn probe_indirectly(&mut self, now: Instant) {
        let late = self.reads_late(now);
        let retry = now + self.config.input_lag_limit;
        let Some(p) = self.probe.as_mut() else { return };
        if p.acked.is_some() {
            p.indirect_at = None;
            return;
        }
        if late {
            // The direct ack may be waiting unread: asking three more members to probe
            // would add load to a queue that is already long. Look again later; if the
            // period ends first, the probe is left unjudged.
            p.indirect_at = Some(retry);
            return;
        }
        p.indirect_at = None;
        let (target, seq) = (p.target, p.seq);
        let Some(target_addr) = self.table.get(target).map(|m| m.addr) else {
            return;
        };
        self.scratch_peers.clear();
        let exclude = [self.config.id, target];
        self.table.sample_live(
            &mut self.rng,
            self.config.indirect_probes,
            &exclude,
            &mut self.scratch_peers,
        );
        let n = self.scratch_peers.len();
        for i in 0..n {
            let (_, to) = self.scratch_peers[i];
            self.out.push_back(Intent::PingReq {
                to,
                seq,
                target,
                target_addr,
            });
        }
        self.stats.indirect_probes += n as u64;
        if let Some(p) = self.probe.as_mut() {
            p.nacks_expected = n as u32;
        }
        if self.config.retry_direct_probe {
            // The same seq: whichever ack comes first, direct or relayed, settles it.
            self.stats.direct_retries += 1;
            self.out.push_back(Intent::Ping {
                to: target_addr,
                seq,
                target,
            });
        }
    }

    /// This node's probe of `id` failed: suspect it.
    fn suspect(&mut self, now: Instant, id: NodeId) {
        let Some(m) = self.table.get(id) else { return };
        let me = self.config.id;
        let inc = m.incarnation;
        match m.status {
            Status::Alive => {}
            // Already suspected by others: this node's own failed probe is an independent
            // confirmation.
            Status::Suspect => {
                self.confirm_suspicion(now, id, inc, me);
                return;
            }
            Status::Dead | Status::Left => return,
        }
        self.stats.suspicions += 1;
        self.table.update_with(id, now, |m| {
            m.status = Status::Suspect;
            m.accuser = Some(me);
        });
        self.push_event(Event::Suspected(id));
        self.start_suspicion(now, id, inc, me);
        self.broadcasts.push(&mut self.table, id);
        self.gossip_soon(now);
    }

    fn start_suspicion(&mut self, now: Instant, id: NodeId, incarnation: u64, accuser: NodeId) {
        let timeout = suspicion_timeout(
            self.table.live_count(),
            self.config.probe_interval,
            self.config.suspicion_mult,
            self.config.suspicion_max_mult,
            0,
        );
        // The local health score stretches this node's probe timing, not suspicion
        // timeouts (as in Lifeguard): a suspect is declared within the bound however many
        // members failed at once. Failed probes of several dead members can raise the
        // score, and stretching suspicions by it would let those suspicions outlive the
        // bound.
        let deadline = now + timeout;
        // Every member that hears of it, or about `suspect_probers` of them, probe the
        // suspect first.
        let first = match self.config.suspect_probers {
            None => true,
            Some(k) => {
                self.rng.random::<f64>() * (self.table.live_count().max(1) as f64) < k as f64
            }
        };
        if accuser != self.config.id && first {
            self.suspects_to_probe.push_back(id);
        }
        self.suspicions.insert(
            id,
            Suspicion {
                incarnation,
                started: now,
                accusers: vec![accuser],
                deadline,
            },
        );
        self.suspicion_heap.push(Reverse((deadline, id)));
    }

    /// Another member independently suspects `id`: shorten the timeout (Lifeguard).
    fn confirm_suspicion(&mut self, now: Instant, id: NodeId, incarnation: u64, accuser: NodeId) {
        let n = self.table.live_count();
        let k = expected_confirmations(n, self.config.suspicion_mult) as usize;
        let Some(s) = self.suspicions.get_mut(&id) else {
            return;
        };
        if s.incarnation != incarnation || s.accusers.contains(&accuser) || s.accusers.len() > k {
            return;
        }
        s.accusers.push(accuser);
        let timeout = suspicion_timeout(
            n,
            self.config.probe_interval,
            self.config.suspicion_mult,
            self.config.suspicion_max_mult,
            (s.accusers.len() - 1) as u32,
        );
        s.deadline = (s.started + timeout).max(now);
        let deadline = s.deadline;
        self.suspicion_heap.push(Reverse((deadline, id)));
        // Pass the confirmation on under its accuser's name, so the other nodes count it
        // too (memberlist does the same): the suspicion then shortens cluster-wide.
        self.table
            .update_with(id, now, |m| m.accuser = Some(accuser));
        self.broadcasts.push(&mut self.table, id);
        self.gossip_soon(now);
    }

    fn fire_suspicions(&mut self, now: Instant) {
        while let Some(&Reverse((t, id))) = self.suspicion_heap.peek() {
            if t > now {
                break;
            }
            self.suspicion_heap.pop();
            // A refutation may be waiting unread in this node's socket: a node reading
            // late waits out its delay, but never past the longest timeout a suspicion
            // can have.
            let extend_to = self.late_by(now).map(|lag| {
                let longest = longest_suspicion(
                    self.table.live_count(),
                    self.config.probe_interval,
                    self.config.suspicion_mult,
                    self.config.suspicion_max_mult,
                );
                (now + lag, longest)
            });
            let Some(s) = self.suspicions.get_mut(&id) else {
                continue;
            };
            if s.deadline > now {
                continue; // a stale heap entry; the live one is later
            }
            if let Some((until, longest)) = extend_to {
                let extended = until.min(s.started + longest);
                if extended > now {
                    s.deadline = extended;
                    self.stats.suspicions_extended += 1;
                    self.suspicion_heap.push(Reverse((extended, id)));
                    continue;
                }
            }
            let inc = s.incarnation;
            self.suspicions.remove(&id);
            let still = self
                .table
                .get(id)
                .is_some_and(|m| m.status == Status::Suspect && m.incarnation == inc);
            if still {
                self.stats.declared_dead += 1;
                self.table.update_with(id, now, |m| m.status = Status::Dead);
                self.push_event(Event::Failed(id));
                self.broadcasts.push(&mut self.table, id);
                self.gossip_soon(now);
                self.placement_dirty(now);
            }
        }
    }

    /// Ask for a gossip round soon: at once, unless one went out less than a quarter of
    /// a gossip interval ago (so a burst of news costs a few datagrams, not one each).
    fn gossip_soon(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Member | Phase::Leaving(_)) {
            return;
        }
        let earliest = match self.last_gossip {
            Some(t) => (t + self.config.gossip_interval / 4).max(now),
            None => now,
        };
        if self.next_gossip.is_none_or(|t| t > earliest) {
            self.next_gossip = Some(earliest);
        }
    }

    fn gossip_tick(&mut self, now: Instant) {
        self.next_gossip = None;
        if self.broadcasts.is_empty() {
            return;
        }
        // A node reading late is slow or its machine saturated: another round of gossip
        // would lengthen every queue it reaches, its own included, by the answers it
        // draws. Its updates wait (a leaving node's goodbye does not).
        if self.phase == Phase::Member && self.reads_late(now) {
            self.stats.gossip_deferred += 1;
            self.next_gossip = Some(now + self.config.gossip_interval);
            return;
        }
        self.push_now(now, self.config.gossip_fanout);
        // Pending updates keep the regular rhythm going until they are all sent out.
        self.next_gossip = Some(now + self.config.gossip_interval);
    }

    /// Send pending updates to `fanout` random live members now.
    fn push_now(&mut self, now: Instant, fanout: usize) {
        self.last_gossip = Some(now);
        self.scratch_peers.clear();
        self.table.sample_live(
            &mut self.rng,
            fanout,
            &[self.config.id],
            &mut self.scratch_peers,
        );
        for i in 0..self.scratch_peers.len() {
            let (_, to) = self.scratch_peers[i];
            self.out.push_back(Intent::Gossip {
                to,
                with_self: false,
            });
        }
    }

    /// A member was added or updated from `from`: if that is the peer of this node's last
    /// push-pull, the pull taught something, and the next one comes one period from now
    /// rather than at the regular interval set when this one started.
    fn learned_from_pull(&mut self, now: Instant, from: SocketAddr) {
        if self.pp_learned || self.pp_peer != Some(from) {
            return;
        }
        self.pp_learned = true;
        self.pull_within_a_period(now);
    }

    /// Bring the next push-pull round forward to one (jittered) learning interval from
    /// `now`, if it was set later.
    fn pull_within_a_period(&mut self, now: Instant) {
        let soon = now + self.jittered(self.learning_pull_interval());
        if self.next_push_pull.is_some_and(|t| t > soon) {
            self.next_push_pull = Some(soon);
        }
    }

    /// The view grew, from any source: once it holds as many new members as the broadcast
    /// queue sends at full budget (`broadcast_depth`) since this node's last push-pull round
    /// (a bulk change, not a rumour), the next round comes one period from now rather than
    /// when the regular interval set at the last one ends.
    fn grew_since_pull(&mut self, now: Instant) {
        // A depth may be as large as `usize::MAX` (no crowding): count the growth, do not
        // add to the depth.
        if self.table.live_count().saturating_sub(self.pp_live) >= self.config.broadcast_depth {
            self.pull_within_a_period(now);
        }
    }

    /// Time between pulls while they teach something: one period (never above the
    /// regular interval).
    fn learning_pull_interval(&self) -> Duration {
        self.config
            .probe_interval
            .min(self.config.push_pull_interval)
    }

    fn push_pull_tick(&mut self, now: Instant) {
        if self.phase == Phase::Member && self.reads_late(now) {
            // An exchange of summaries and differences is the costliest round: wait until
            // this node reads its input on time.
            self.stats.push_pulls_deferred += 1;
            self.next_push_pull = Some(now + self.jittered(self.config.gossip_interval));
            return;
        }
        // A node that learned from its last push-pull pulls again one period later, for as
        // long as its pulls teach it something; then it waits the regular interval. Each
        // exchange costs two summaries plus the differences, so a node that is behind
        // gains more from pulling every period than the exchanges cost: in the simulator a
        // 5000-node cold start converged in 3.4–3.5 periods with 371–373 KiB sent per node
        // (seeds 1 and 2, before whole buckets were pushed), against 4.5–19.5 periods and
        // 433–483 KiB, by seed, when a learning pull after one that taught nothing waited
        // the regular interval (`loadgen sim --nodes 5000 --steady-periods 5`, ALGORITHM.md
        // §11).
        //
        // A pull that got no answer (its summary or the reply was lost, or the peer is
        // gone) says nothing about whether this node is still behind: it keeps the pace
        // of the pulls before it. Under 10% loss about one pull in five goes unanswered,
        // and a node still behind used to wait the regular interval after one.
        //
        // A view that grew since the last round (from gossip) says the same: the cluster
        // is changing, and a pull from a peer that happened to know no more than this node
        // proves little. A node still missing a few hundred members used to wait the whole
        // regular interval after such a pull, and was the last of a 5000-node cold start by
        // 5.5 s (`results/2026-12-07-vm-stragglers`).
        let learned = std::mem::take(&mut self.pp_learned);
        let answered = std::mem::take(&mut self.pp_answered);
        let live = self.table.live_count();
        let grew = live > self.pp_live;
        self.pp_live = live;
        self.pp_learning = learned || grew || (!answered && self.pp_learning);
        let interval = if self.pp_learning {
            self.learning_pull_interval()
        } else {
            self.config.push_pull_interval
        };
        self.next_push_pull = Some(now + self.jittered(interval));
        if self.phase != Phase::Member {
            return;
        }
        if let Some(m) = self.table.random_live(&mut self.rng, self.config.id) {
            let to = m.addr;
            self.pp_peer = Some(to);
            self.out.push_back(Intent::Summary { to, reply: false });
            self.stats.push_pulls += 1;
        }
    }

    /// Anti-entropy with a dead member, and with a seed when the view has shrunk sharply:
    /// if the "dead" side of a partition answers, the two sides merge their tables and
    /// refute, and the partition heals without an operator.
    fn dead_gossip_tick(&mut self, now: Instant) {
        let live = self.table.live_count();
        // The peak decays slowly, so a cluster that shrank for good stops calling out.
        self.peak_live = live.max(self.peak_live - self.peak_live / 32);
        let shrunk = live * 2 < self.peak_live;
        let interval = if shrunk {
            self.config.probe_interval
        } else {
            self.config.dead_gossip_interval
        };
        self.next_dead_gossip = Some(now + self.jittered(interval));
        if self.phase != Phase::Member {
            return;
        }
        let dead = self
            .table
            .random_dead(&mut self.rng)
            .filter(|m| m.status == Status::Dead)
            .map(|m| m.addr);
        if let Some(to) = dead {
            self.out.push_back(Intent::Summary { to, reply: false });
            self.stats.push_pulls += 1;
        }
        if shrunk && !self.seeds.is_empty() {
            let to = self.seeds[self.rng.random_range(0..self.seeds.len())];
            self.out.push_back(Intent::Summary { to, reply: false });
            self.stats.push_pulls += 1;
        }
    }

    fn gc_tick(&mut self, now: Instant) {
        self.next_gc = now + self.config.tombstone_ttl / 4;
        self.table
            .collect_tombstones(now, self.config.tombstone_ttl);
    }

    fn placement_dirty(&mut self, now: Instant) {
        if self.router.is_some() && self.next_placement.is_none() {
            self.next_placement = Some(now + self.config.placement_debounce);
        }
    }

    /// Build placement afresh from the live, undrained members in id order, so every node
    /// holding the same view publishes the same layout whatever order it learned it in.
    fn rebuild_placement(&mut self) {
        self.next_placement = None;
        let (Some(router), Some(p)) = (&self.router, self.config.placement) else {
            return;
        };
        let mut nodes: Vec<placement::Node> = self
            .table
            .iter()
            .filter(|m| m.in_placement())
            .map(|m| placement::Node::new(m.id.0, m.addr.to_string()))
            .collect();
        if nodes.is_empty() {
            return; // a drained node alone: keep the last placement
        }
        nodes.sort_by_key(|n| n.id);
        match p.scheme.build(&nodes, p.seed) {
            Ok(built) => {
                let version = router.publish(built);
                self.stats.placement_builds += 1;
                self.push_event(Event::PlacementChanged {
                    version,
                    members: nodes.len(),
                });
            }
            Err(e) => {
                self.stats.placement_errors += 1;
                tracing::warn!(error = %e, "placement rebuild failed; keeping the previous one");
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Writing datagrams

    /// Whether a peer that lacks `missing` of this node's members is catching up rather
    /// than holding a view of comparable size (see [`StatePush`]).
    fn is_catch_up(&self, missing: usize) -> bool {
        missing * 2 > self.table.live_count()
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= self.config.event_capacity {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    /// Write one intent as a frame at the end of `buf`; returns the destination, or `None`
    /// when the intent produced nothing to send. Intents too big for one datagram put
    /// their remainder back at the front of the queue.
    fn write(&mut self, intent: Intent, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let mut w = FrameWriter::new(buf, &self.frame, self.config.id, self.keys.as_ref());
        let mut piggyback = true;
        let carrier = match intent {
            Intent::Gossip { .. } => Carrier::Gossip,
            Intent::Updates { catch_up: true, .. } => Carrier::CatchUp,
            Intent::Updates { .. } => Carrier::Pull,
            _ => Carrier::Piggyback,
        };
        let to = match intent {
            Intent::Ping { to, seq, target } => {
                w.try_push(&Message::Ping(Ping { seq, target }));
                // Lifeguard's buddy system: a suspect hears of its suspicion from the
                // very probe, so it can refute before the timeout.
                if let Some(m) = self
                    .table
                    .get(target)
                    .filter(|m| m.status == Status::Suspect)
                {
                    w.try_push(&Message::Member(m.as_update()));
                }
                to
            }
            Intent::PingReq {
                to,
                seq,
                target,
                target_addr,
            } => {
                w.try_push(&Message::PingReq(PingReq {
                    seq,
                    target,
                    target_addr,
                }));
                to
            }
            Intent::Ack { to, seq } => {
                w.try_push(&Message::Ack(Ack { seq }));
                to
            }
            Intent::Nack { to, seq } => {
                w.try_push(&Message::Nack(Nack { seq }));
                to
            }
            Intent::Join { to } => {
                let me = self.table.get(self.config.id)?;
                w.try_push(&Message::Join(Join {
                    incarnation: me.incarnation,
                    addr: me.addr,
                    metadata: me.metadata,
                }));
                to
            }
            Intent::Gossip { to, with_self } => {
                if with_self {
                    let me = self.table.get(self.config.id)?;
                    w.try_push(&Message::Member(me.as_update()));
                }
                to
            }
            Intent::Summary { to, reply } => {
                self.round += 1;
                w.try_push(&Message::MemberSummary(MemberSummary {
                    round: self.round,
                    reply,
                    buckets: crate::codec::List::new(self.table.buckets()),
                }));
                to
            }
            Intent::Updates {
                to,
                ids,
                hints,
                mut pos,
                catch_up,
            } => {
                piggyback = false;
                if catch_up {
                    w.try_push(&Message::StatePush(StatePush { round: self.round }));
                }
                let mut wrote = false;
                while pos < ids.len() {
                    hints.prefetch_ahead(&self.table, pos);
                    let Some(m) = self.table.get_hinted(ids[pos], hints.at(pos)) else {
                        pos += 1;
                        continue;
                    };
                    if !w.try_push(&Message::Member(m.as_update())) {
                        break;
                    }
                    wrote = true;
                    pos += 1;
                }
                if !wrote {
                    return None;
                }
                if pos < ids.len() {
                    self.out.push_front(Intent::Updates {
                        to,
                        ids,
                        hints,
                        pos,
                        catch_up,
                    });
                }
                to
            }
            Intent::Digest {
                to,
                ids,
                hints,
                mut pos,
            } => {
                piggyback = false;
                // Room for the record header and the digest's own fields.
                let budget = w.remaining().saturating_sub(32);
                self.scratch_digest.clear();
                let mut used = 0;
                while pos < ids.len() {
                    hints.prefetch_ahead(&self.table, pos);
                    let Some(m) = self.table.get_hinted(ids[pos], hints.at(pos)) else {
                        pos += 1;
                        continue;
                    };
                    let e = m.as_digest();
                    let len = crate::codec::ListItem::encoded_len(&e);
                    if used + len > budget {
                        break;
                    }
                    used += len;
                    self.scratch_digest.push(e);
                    pos += 1;
                }
                self.round += 1;
                w.try_push(&Message::Digest(Digest {
                    round: self.round,
                    part: 0,
                    parts: 1,
                    entries: crate::codec::List::new(&self.scratch_digest),
                }));
                if pos < ids.len() && !self.scratch_digest.is_empty() {
                    self.out.push_front(Intent::Digest {
                        to,
                        ids,
                        hints,
                        pos,
                    });
                }
                to
            }
            Intent::Request { to, ids, mut pos } => {
                piggyback = false;
                let budget = w.remaining().saturating_sub(24);
                let start = pos;
                let mut used = 0;
                while pos < ids.len() {
                    let len = crate::codec::ListItem::encoded_len(&ids[pos]);
                    if used + len > budget {
                        break;
                    }
                    used += len;
                    pos += 1;
                }
                self.scratch_ids.clear();
                self.scratch_ids.extend_from_slice(&ids[start..pos]);
                w.try_push(&Message::StateRequest(StateRequest {
                    round: self.round,
                    ids: crate::codec::List::new(&self.scratch_ids),
                }));
                if pos < ids.len() && pos > start {
                    self.out.push_front(Intent::Request { to, ids, pos });
                }
                to
            }
            Intent::CrdtRun {
                to,
                neighbour,
                partition,
            } => {
                piggyback = false;
                crdt::write_run(
                    &mut self.store,
                    &mut self.scratch_payload,
                    &mut w,
                    neighbour,
                    partition,
                );
                to
            }
            Intent::CrdtAcks { to, acks } => {
                crdt::write_acks(&mut w, &acks);
                to
            }
            Intent::CrdtSummary { to } => {
                piggyback = false;
                crdt::write_summary(&self.store, &mut w);
                to
            }
            Intent::CrdtRanges { to, partition } => {
                crdt::write_ranges(&self.store, &mut w, partition);
                to
            }
            Intent::CrdtState { to, keys, pos } => {
                piggyback = false;
                let next =
                    crdt::write_state(&self.store, &mut self.scratch_payload, &mut w, &keys, pos);
                if next < keys.len() && next > pos {
                    self.out.push_front(Intent::CrdtState {
                        to,
                        keys,
                        pos: next,
                    });
                }
                to
            }
        };
        if piggyback {
            let limit = self.broadcast_limit();
            self.broadcasts
                .take(&mut self.table, limit, |table, id, hint| {
                    match table.get_hinted(id, hint) {
                        Some(m) => w.try_push(&Message::Member(m.as_update())),
                        None => true,
                    }
                });
        }
        if w.is_empty() {
            return None;
        }
        let mut members = 0;
        for (kind, len) in w.records() {
            self.stats.messages_out.add(kind, len);
            members += u64::from(kind == crate::codec::kind::MEMBER);
        }
        self.stats.updates_sent.count(carrier, members);
        w.finish();
        Some(to)
    }
}

impl Endpoint for Node {
    type Command = Command;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        Node::handle_datagram(self, now, from, data);
    }

    fn handle_input_delay(&mut self, now: Instant, delay: Duration) {
        Node::handle_input_delay(self, now, delay);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now);
    }

    fn handle_command(&mut self, now: Instant, cmd: Command) {
        Node::handle_command(self, now, cmd);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        Node::poll_transmit(self, now, buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_pulls_every_period_while_its_pulls_teach_it_something() {
        let now = Instant::now();
        let c = NodeConfig::new(Preset::Lan, "127.0.0.1:7001".parse().unwrap(), b"t");
        let (p, interval) = (c.probe_interval, c.push_pull_interval);
        let mut node = Node::new(c, now).unwrap();
        let mut t = now;
        // Ten learning pulls in a row each come one period (jittered) after the last:
        // no back-off while the node is still behind.
        for _ in 0..10 {
            node.pp_learned = true;
            node.push_pull_tick(t);
            let next = node.next_push_pull.unwrap();
            assert!(next <= t + p.mul_f64(1.25), "{:?}", next - t);
            t = next;
        }
        // A pull that went unanswered keeps the pace.
        node.push_pull_tick(t);
        let next = node.next_push_pull.unwrap();
        assert!(next <= t + p.mul_f64(1.25), "{:?}", next - t);
        t = next;
        // A pull answered but teaching nothing puts the next back at the regular interval,
        // and so does an unanswered one after it.
        for _ in 0..2 {
            node.pp_answered = true;
            node.push_pull_tick(t);
            let next = node.next_push_pull.unwrap();
            assert!(next >= t + interval.mul_f64(0.75), "{:?}", next - t);
            t = next;
        }
        node.push_pull_tick(t);
        let next = node.next_push_pull.unwrap();
        assert!(next >= t + interval.mul_f64(0.75), "{:?}", next - t);
    }

    /// A frame of more messages than one decode batch: each is merged once and counted by
    /// its bytes; cut short, the messages before the cut are merged and the rest is one drop.
    #[test]
    fn a_frame_is_read_in_batches_up_to_a_broken_message() {
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let updates: Vec<Message<'_>> = (10..80).map(|id| Message::Member(alive(id))).collect();
        assert!(updates.len() > 2 * DECODE_BATCH);
        let config = FrameConfig::new(b"t").unwrap();
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, NodeId(5), None);
        assert!(updates.iter().all(|m| w.try_push(m)));
        w.finish();
        let sizes: Vec<usize> = updates.iter().map(|m| m.encoded_len()).collect();
        let header = buf.len() - sizes.iter().sum::<usize>();

        let mut node = lone_member(now);
        node.handle_datagram(now, from, &mut buf.clone());
        assert_eq!(node.stats().updates_merged, 70);
        assert_eq!(node.live_count(), 71);
        assert_eq!(
            node.stats().messages_in.get(kind::MEMBER),
            (70, sizes.iter().sum::<usize>() as u64)
        );
        assert_eq!(node.stats().dropped_total(), 0);

        // Cut inside the 41st message, in the second batch.
        let cut = header + sizes[..40].iter().sum::<usize>() + 2;
        let mut node = lone_member(now);
        node.handle_datagram(now, from, &mut buf[..cut].to_vec());
        assert_eq!(node.stats().updates_merged, 40);
        assert_eq!(node.stats().messages_in.get(kind::MEMBER).0, 40);
        assert_eq!(node.stats().dropped_total(), 1);
    }

    /// A LAN node alone in its cluster, a member since `now`.
    fn lone_member(now: Instant) -> Node {
        let c = NodeConfig::new(Preset::Lan, "127.0.0.1:7001".parse().unwrap(), b"t");
        let mut node = Node::new(c, now).unwrap();
        node.handle_command(now, Command::Join(Vec::new()));
        node
    }

    /// Member `id` alive at incarnation 1, listening on port 8000 + `id`.
    fn alive(id: u64) -> MemberUpdate<'static> {
        MemberUpdate {
            id: NodeId(id),
            addr: SocketAddr::from(([127, 0, 0, 1], 8000 + id as u16)),
            incarnation: 1,
            status: Status::Alive,
            drained: false,
            meta_version: 0,
            metadata: &[],
            accuser: None,
        }
    }

    /// The peer of a node's push-pull, and someone else.
    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        7002,
    ));
    const OTHER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        7003,
    ));

    #[test]
    fn a_pull_that_teaches_brings_the_next_one_forward_at_once() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let (p, interval) = (node.config.probe_interval, node.config.push_pull_interval);
        // The last pull taught nothing, so this one was set at the regular interval.
        node.push_pull_tick(now);
        let regular = node.next_push_pull.unwrap();
        assert!(regular >= now + interval.mul_f64(0.75));
        node.pp_peer = Some(PEER);
        let t = now + p;
        // A member learned from someone else's gossip says nothing about the pull.
        let mut ctx = FrameContext::default();
        node.handle_update(t, OTHER, NodeId(3), &alive(3), &mut ctx);
        assert_eq!(node.next_push_pull, Some(regular));
        // The pull's peer answers with a member this node lacked: pull again a period on,
        // not when the regular interval ends.
        node.handle_update(t, PEER, NodeId(2), &alive(4), &mut ctx);
        let next = node.next_push_pull.unwrap();
        assert!(next <= t + p.mul_f64(1.25), "{:?}", next - t);
        assert!(node.pp_learned);
    }

    #[test]
    fn a_view_that_grew_since_the_last_pull_brings_the_next_one_a_period_on() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let (p, interval) = (node.config.probe_interval, node.config.push_pull_interval);
        // Nothing changed since the node started: the regular interval.
        node.push_pull_tick(now);
        assert!(node.next_push_pull.unwrap() >= now + interval.mul_f64(0.75));
        // Gossip (not the pull's peer) brings two members; the pull after it, answered but
        // teaching nothing, still comes a period on, since the view grew before it.
        let mut ctx = FrameContext::default();
        node.handle_update(now, OTHER, NodeId(3), &alive(3), &mut ctx);
        node.handle_update(now, OTHER, NodeId(3), &alive(4), &mut ctx);
        let t = now + p;
        node.pp_answered = true;
        node.push_pull_tick(t);
        let next = node.next_push_pull.unwrap();
        assert!(next <= t + p.mul_f64(1.25), "{:?}", next - t);
        // With no growth since, an answered pull that taught nothing goes back to the
        // regular interval; a member lost (a death) is no growth either.
        let t = next;
        node.pp_answered = true;
        node.push_pull_tick(t);
        assert!(node.next_push_pull.unwrap() >= t + interval.mul_f64(0.75));
        let mut dead = alive(4);
        dead.status = Status::Dead;
        node.handle_update(t, OTHER, NodeId(3), &dead, &mut ctx);
        let t = node.next_push_pull.unwrap();
        node.pp_answered = true;
        node.push_pull_tick(t);
        assert!(node.next_push_pull.unwrap() >= t + interval.mul_f64(0.75));
    }

    #[test]
    fn a_bulk_of_new_members_from_anyone_brings_the_next_pull_forward() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let (p, depth) = (node.config.probe_interval, node.config.broadcast_depth);
        node.push_pull_tick(now);
        let regular = node.next_push_pull.unwrap();
        // Gossip from a member that is not the pull's peer brings new members: up to a
        // full queue's worth since the last round, the regular interval stands.
        let mut ctx = FrameContext::default();
        let t = now + p;
        for id in 2..2 + depth as u64 - 1 {
            node.handle_update(t, OTHER, NodeId(id), &alive(id), &mut ctx);
        }
        assert_eq!(node.next_push_pull, Some(regular));
        // One more is a bulk change: the next pull comes a period on.
        let id = 1 + depth as u64;
        node.handle_update(t, OTHER, NodeId(id), &alive(id), &mut ctx);
        let next = node.next_push_pull.unwrap();
        assert!(next <= t + p.mul_f64(1.25), "{:?}", next - t);
        assert!(!node.pp_learned);
    }

    #[test]
    fn copies_heard_again_retire_queued_updates_only_when_the_queue_is_crowded() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let depth = node.config.broadcast_depth;
        let mut ctx = FrameContext::default();
        // A lone rumour, heard again and again, keeps its place and its budget.
        node.handle_update(now, OTHER, NodeId(2), &alive(10), &mut ctx);
        let queued = node.broadcasts.len();
        for _ in 0..50 {
            node.handle_update(now, OTHER, NodeId(2), &alive(10), &mut ctx);
        }
        assert_eq!(node.broadcasts.len(), queued);
        assert_eq!(node.stats.broadcasts_heard, 0);
        // A bulk change crowds the queue: now each copy heard counts as a sending, and an
        // update heard often enough leaves the queue unsent.
        for id in 100..100 + 4 * depth as u64 {
            node.handle_update(now, OTHER, NodeId(2), &alive(id), &mut ctx);
        }
        let crowded = node.broadcasts.len();
        assert!(crowded > depth);
        for _ in 0..20 {
            node.handle_update(now, OTHER, NodeId(2), &alive(100), &mut ctx);
        }
        assert_eq!(node.broadcasts.len(), crowded - 1);
        assert!(node.stats.broadcasts_heard >= 1);
    }

    #[test]
    fn only_the_pull_peers_reply_counts_as_an_answer() {
        let now = Instant::now();
        let mut node = lone_member(now);
        node.pp_peer = Some(PEER);
        let buckets = *node.table.buckets();
        let summary = |reply| MemberSummary {
            round: 1,
            reply,
            buckets: crate::codec::List::new(&buckets),
        };
        node.handle_summary(OTHER, summary(true));
        node.handle_summary(PEER, summary(false));
        assert!(!node.pp_answered);
        node.handle_summary(PEER, summary(true));
        assert!(node.pp_answered);
    }

    #[test]
    fn a_peer_holding_under_half_a_bucket_gets_its_members_rather_than_a_digest() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let mut ctx = FrameContext::default();
        for id in 10..1010 {
            node.handle_update(now, OTHER, NodeId(3), &alive(id), &mut ctx);
        }
        node.out.clear();
        let mine = *node.table.buckets();
        assert!(mine[..4].iter().all(|b| b.count >= 4), "{:?}", &mine[..4]);
        let mut theirs = mine;
        // As many members as here, but other ones: a digest.
        theirs[0].hash ^= 1;
        // Fewer than half: the members themselves, as for an empty bucket.
        theirs[1] = SummaryBucket {
            count: mine[1].count / 2 - 1,
            hash: 7,
        };
        theirs[2] = SummaryBucket { count: 0, hash: 0 };
        // Just over half: a digest.
        theirs[3] = SummaryBucket {
            count: mine[3].count / 2 + 1,
            hash: 7,
        };
        node.handle_summary(
            PEER,
            MemberSummary {
                round: 1,
                reply: true,
                buckets: crate::codec::List::new(&theirs),
            },
        );
        let (mut pushed, mut digested) = (Vec::new(), Vec::new());
        for intent in &node.out {
            match intent {
                Intent::Updates { ids, .. } => pushed.extend(ids.iter().map(|&id| bucket_of(id))),
                Intent::Digest { ids, .. } => digested.extend(ids.iter().map(|&id| bucket_of(id))),
                _ => {}
            }
        }
        let count = |v: &[usize], b: usize| v.iter().filter(|&&x| x == b).count();
        assert_eq!(count(&pushed, 1), mine[1].count as usize);
        assert_eq!(count(&pushed, 2), mine[2].count as usize);
        assert_eq!(pushed.len(), (mine[1].count + mine[2].count) as usize);
        assert_eq!(count(&digested, 0), mine[0].count as usize);
        assert_eq!(count(&digested, 3), mine[3].count as usize);
        assert_eq!(digested.len(), (mine[0].count + mine[3].count) as usize);
    }

    /// A digest longer than a decode batch: every entry is compared, whichever batch it is
    /// in, and its own entry is offered when the peer holds it older.
    #[test]
    fn a_digest_is_compared_entry_by_entry_across_batches() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let me = node.id();
        let mut ctx = FrameContext::default();
        // The node holds 10..90 at incarnation 1.
        for id in 10..90 {
            node.handle_update(now, OTHER, NodeId(3), &alive(id), &mut ctx);
        }
        // A suspicion of this node makes it refute: its incarnation goes up to 1.
        let suspect = MemberUpdate {
            status: Status::Suspect,
            incarnation: 0,
            addr: node.addr(),
            ..alive(me.0)
        };
        node.handle_update(now, OTHER, NodeId(3), &suspect, &mut ctx);
        assert_eq!(node.incarnation(), 1);
        node.out.clear();
        // The peer: 10..50 as here, 50..70 older, 70..90 newer, 90..110 unknown here, and
        // this node at incarnation 0, older than its own.
        let entry = |id: u64, incarnation: u64| DigestEntry {
            id: NodeId(id),
            incarnation,
            status: Status::Alive,
            drained: false,
            meta_version: 0,
        };
        let mut entries: Vec<DigestEntry> = (10..50).map(|id| entry(id, 1)).collect();
        entries.extend((50..70).map(|id| entry(id, 0)));
        entries.extend((70..90).map(|id| entry(id, 2)));
        entries.extend((90..110).map(|id| entry(id, 1)));
        assert!(entries.len() > 3 * DECODE_BATCH);
        entries.push(entry(me.0, 0));
        node.handle_digest(
            PEER,
            Digest {
                round: 1,
                part: 0,
                parts: 1,
                entries: crate::codec::List::new(&entries),
            },
        );
        let (mut want, mut give) = (Vec::new(), Vec::new());
        for intent in &node.out {
            match intent {
                Intent::Request { ids, .. } => want.extend(ids.iter().map(|id| id.0)),
                Intent::Updates { ids, .. } => give.extend(ids.iter().map(|id| id.0)),
                _ => {}
            }
        }
        let expect_want: Vec<u64> = (70..110).collect();
        let mut expect_give: Vec<u64> = (50..70).collect();
        expect_give.push(me.0);
        assert_eq!(want, expect_want);
        assert_eq!(give, expect_give);
    }

    #[test]
    fn a_long_answer_reads_members_at_their_positions_and_survives_stale_ones() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let mut ctx = FrameContext::default();
        for id in 10..1010 {
            node.handle_update(now, OTHER, NodeId(3), &alive(id), &mut ctx);
        }
        let empty = [SummaryBucket { count: 0, hash: 0 }; BUCKETS];
        let answer = |node: &mut Node, stale: bool| {
            node.out.clear();
            node.handle_summary(
                PEER,
                MemberSummary {
                    round: 1,
                    reply: true,
                    buckets: crate::codec::List::new(&empty),
                },
            );
            for intent in node.out.iter_mut() {
                if let Intent::Updates { ids, hints, .. } = intent {
                    assert_eq!(hints.0.len(), ids.len(), "a position for every member");
                    for (&id, &h) in ids.iter().zip(&hints.0) {
                        let at = node.table.iter().nth(h as usize).map(|m| m.id);
                        assert_eq!(at, Some(id), "the position is the member's");
                    }
                    if stale {
                        // As if the table had moved every entry since the list was made.
                        hints.0.reverse();
                    }
                }
            }
            let mut written = Vec::new();
            let mut buf = Vec::new();
            while node.poll_transmit(now, &mut buf).is_some() {
                let frame = decode_frame(&mut buf, b"t", None).unwrap();
                for m in frame.messages() {
                    if let Ok(Message::Member(u)) = m {
                        written.push(u.id.0);
                    }
                }
                buf.clear();
            }
            written.sort_unstable();
            written
        };
        let mut every: Vec<u64> = node.table.iter().map(|m| m.id.0).collect();
        every.sort_unstable();
        assert_eq!(every.len(), 1001);
        assert_eq!(answer(&mut node, false), every);
        assert_eq!(answer(&mut node, true), every);
    }

    #[test]
    fn members_heard_second_hand_during_a_bulk_change_are_not_queued_for_gossip() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let depth = node.config.broadcast_depth;
        node.pp_peer = Some(PEER);
        let mut ctx = FrameContext::default();
        // A short queue: a member relayed by the pull's peer or by anyone else is spread
        // on like any news.
        node.handle_update(now, PEER, NodeId(2), &alive(10), &mut ctx);
        node.handle_update(now, OTHER, NodeId(3), &alive(11), &mut ctx);
        assert_eq!(node.broadcasts.len(), 2);
        for id in 100..100 + 2 * depth as u64 {
            node.handle_update(now, OTHER, NodeId(3), &alive(id), &mut ctx);
        }
        // The queue held at most `depth` before these: the first ones crowded it, and the
        // rest were learned but not queued.
        let crowded = node.broadcasts.len();
        assert_eq!(crowded, depth + 1);
        assert!(node
            .member(NodeId(100 + 2 * depth as u64 - 1))
            .is_some_and(|m| m.is_live()));
        // Crowded, a member relayed by the pull's peer or by anyone else is learned but not
        // queued; one that speaks for itself (a join, its own state) still is.
        node.handle_update(now, PEER, NodeId(2), &alive(20), &mut ctx);
        node.handle_update(now, OTHER, NodeId(3), &alive(21), &mut ctx);
        assert!(node.member(NodeId(21)).is_some_and(|m| m.is_live()));
        assert_eq!(node.broadcasts.len(), crowded);
        node.handle_update(now, OTHER, NodeId(22), &alive(22), &mut ctx);
        assert_eq!(node.broadcasts.len(), crowded + 1);
    }

    #[test]
    fn member_updates_sent_are_counted_by_what_carried_them() {
        let now = Instant::now();
        let mut node = lone_member(now);
        let mut ctx = FrameContext::default();
        for id in 2..12 {
            node.handle_update(now, OTHER, NodeId(id), &alive(id), &mut ctx);
        }
        node.out.clear();
        let ids: Vec<NodeId> = (2..6).map(NodeId).collect();
        let updates = |catch_up| Intent::Updates {
            to: PEER,
            ids: ids.clone(),
            hints: Hints::default(),
            pos: 0,
            catch_up,
        };
        node.out.push_back(updates(true));
        node.out.push_back(updates(false));
        node.out.push_back(updates(false));
        node.out.push_back(Intent::Gossip {
            to: PEER,
            with_self: false,
        });
        node.out.push_back(Intent::Ack { to: PEER, seq: 1 });
        let mut buf = Vec::new();
        while node.poll_transmit(now, &mut buf).is_some() {
            buf.clear();
        }
        let sent = node.stats().updates_sent;
        assert_eq!((sent.catch_up, sent.pull), (4, 8));
        // The ten queued members go out in the gossip round, and again on the ack (their
        // budget is more than two sendings).
        assert_eq!((sent.gossip, sent.piggyback), (10, 10));
        assert_eq!(sent.total(), node.stats().messages_out.get(kind::MEMBER).0);
    }

    #[test]
    fn message_counts_by_type_match_between_sender_and_receiver() {
        let now = Instant::now();
        let a = NodeConfig::new(Preset::Local, "127.0.0.1:7001".parse().unwrap(), b"t");
        let b = NodeConfig::new(Preset::Local, "127.0.0.1:7002".parse().unwrap(), b"t");
        let a_addr = a.addr;
        let a = Node::new(a, now).unwrap();
        let mut b = Node::new(b, now).unwrap();
        b.handle_command(now, Command::Join(vec![a_addr]));
        let mut buf = Vec::new();
        let mut t = now;
        let mut nodes = [a, b];
        for _ in 0..50 {
            t += Duration::from_millis(50);
            for i in 0..2 {
                let [x, y] = &mut nodes;
                let (from, to) = if i == 0 { (y, x) } else { (x, y) };
                let from_addr = from.addr();
                from.handle_timeout(t);
                while from.poll_transmit(t, &mut buf).is_some() {
                    to.handle_datagram(t, from_addr, &mut buf);
                    buf.clear();
                }
            }
        }
        let [a, b] = nodes;
        assert_eq!(a.live_count(), 2);
        let (sa, sb) = (a.stats(), b.stats());
        // Every datagram was delivered, so what one wrote the other read, type by type.
        assert_eq!(sb.messages_out, sa.messages_in);
        assert_eq!(sa.messages_out, sb.messages_in);
        assert_eq!(sb.messages_out.get(kind::JOIN).0, sb.join_attempts);
        assert!(sa.messages_in.get(kind::PING).0 > 0);
        assert_eq!(
            sa.messages_in.get(kind::PING).0,
            sb.messages_out.iter().find(|t| t.0 == "ping").unwrap().1
        );
        // Message bytes never exceed datagram bytes (headers are not in any type).
        let (n, bytes) = sa.messages_in.total();
        assert!(
            n >= sa.datagrams_in && bytes < sa.bytes_in,
            "{n} {bytes} {sa:?}"
        );
        assert_eq!(sa.messages_in.get(0xee), (0, 0));
        assert_eq!(sa.messages_in.iter().count(), 16);
        assert_eq!(sa.messages_in.iter().last().unwrap().0, "unknown");
    }

    /// Two Local-preset nodes, `b` joined through `a`, run until both see each other.
    fn joined_pair(now: Instant) -> ([Node; 2], Instant) {
        let a = NodeConfig::new(Preset::Local, "127.0.0.1:7101".parse().unwrap(), b"t");
        let b = NodeConfig::new(Preset::Local, "127.0.0.1:7102".parse().unwrap(), b"t");
        let a_addr = a.addr;
        let a = Node::new(a, now).unwrap();
        let mut b = Node::new(b, now).unwrap();
        b.handle_command(now, Command::Join(vec![a_addr]));
        let mut nodes = [a, b];
        let t = exchange(&mut nodes, now, 50, true, None);
        assert!(nodes.iter().all(|n| n.live_count() == 2));
        (nodes, t)
    }

    /// `steps` steps of 10 ms: timers fire, and `a` reads `b`'s datagrams (only when
    /// `b_reaches_a`), each reported as having waited `lag` when given; `b` reads all of
    /// `a`'s.
    fn exchange(
        nodes: &mut [Node; 2],
        mut t: Instant,
        steps: u32,
        b_reaches_a: bool,
        lag: Option<Duration>,
    ) -> Instant {
        let mut buf = Vec::new();
        for _ in 0..steps {
            t += Duration::from_millis(10);
            for i in 0..2 {
                let [a, b] = &mut *nodes;
                // i == 0: b's datagrams to a; i == 1: a's to b.
                let (from, to) = if i == 0 { (b, a) } else { (a, b) };
                let deliver = i == 1 || b_reaches_a;
                let from_addr = from.addr();
                from.handle_timeout(t);
                while from.poll_transmit(t, &mut buf).is_some() {
                    if deliver {
                        if let (0, Some(d)) = (i, lag) {
                            to.handle_input_delay(t, d);
                        }
                        to.handle_datagram(t, from_addr, &mut buf);
                    }
                    buf.clear();
                }
            }
            // A node that reads late keeps seeing late datagrams even from quiet peers.
            if let Some(d) = lag {
                nodes[0].handle_input_delay(t, d);
            }
        }
        t
    }

    #[test]
    fn a_probe_that_goes_indirect_pings_its_target_directly_once_more() {
        for retry in [true, false] {
            let now = Instant::now();
            let ([mut a, mut b], t) = joined_pair(now);
            a.config.retry_direct_probe = retry;
            let (a_addr, b_addr) = (a.addr(), b.addr());
            let mut buf = Vec::new();
            // a's next probe goes to b, and its ping is lost.
            let t = a.next_probe.unwrap().max(t);
            a.handle_timeout(t);
            assert_eq!(a.probe.as_ref().map(|p| p.target), Some(b.config.id));
            while a.poll_transmit(t, &mut buf).is_some() {
                buf.clear();
            }
            // At the indirect deadline (no relay to ask in a pair) a pings b once more,
            // with the same seq, and b's ack settles the probe.
            let t = a.probe.as_ref().and_then(|p| p.indirect_at).unwrap();
            a.handle_timeout(t);
            let pings = b.stats().messages_in.get(kind::PING).0;
            while a.poll_transmit(t, &mut buf).is_some() {
                b.handle_datagram(t, a_addr, &mut buf);
                buf.clear();
            }
            while b.poll_transmit(t, &mut buf).is_some() {
                a.handle_datagram(t, b_addr, &mut buf);
                buf.clear();
            }
            let retried = u64::from(retry);
            assert_eq!(b.stats().messages_in.get(kind::PING).0 - pings, retried);
            assert_eq!(a.stats().direct_retries, retried);
            let acked = a.probe.as_ref().is_some_and(|p| p.acked.is_some());
            assert_eq!(acked, retry);
        }
    }

    #[test]
    fn a_node_that_reads_late_leaves_silent_probes_unjudged() {
        let now = Instant::now();
        // Control: b falls silent, and a, reading on time, suspects it.
        let (mut on_time, t) = joined_pair(now);
        exchange(&mut on_time, t, 300, false, None);
        assert!(
            on_time[0].stats().suspicions >= 1,
            "{:?}",
            on_time[0].stats()
        );

        // The same silence while a's own input waits a second in its socket: the missing
        // acks may be waiting unread, so a accuses no one.
        let (mut late, t) = joined_pair(now);
        let lag = Duration::from_secs(1);
        let t = exchange(&mut late, t, 300, false, Some(lag));
        assert_eq!(late[0].input_lag(t), lag);
        let st = late[0].stats();
        assert_eq!(st.suspicions, 0, "{st:?}");
        assert!(st.probes_unjudged >= 1, "{st:?}");
        assert_eq!(st.input_lag_peak_us, 1_000_000);

        // Once a reads on time again, the silence counts: b is suspected.
        exchange(&mut late, t, 300, false, None);
        assert!(late[0].stats().suspicions >= 1, "{:?}", late[0].stats());
    }

    #[test]
    fn a_node_that_reads_late_defers_the_rounds_it_starts() {
        let now = Instant::now();
        let ([mut a, _b], t) = joined_pair(now);
        let starts = |a: &Node| {
            let gossip = a
                .out
                .iter()
                .filter(|i| matches!(i, Intent::Gossip { .. }))
                .count();
            let pulls = a
                .out
                .iter()
                .filter(|i| matches!(i, Intent::Summary { .. }))
                .count();
            (gossip, pulls)
        };
        let other = a.table.iter().find(|m| m.id != a.config.id).unwrap().id;
        a.broadcasts.push(&mut a.table, other);
        a.out.clear();
        // Reading a second late: neither round goes out, and both come back soon.
        a.handle_input_delay(t, Duration::from_secs(1));
        a.gossip_tick(t);
        a.push_pull_tick(t);
        assert_eq!(starts(&a), (0, 0));
        assert_eq!(
            (a.stats.gossip_deferred, a.stats.push_pulls_deferred),
            (1, 1)
        );
        assert!(a.next_gossip.unwrap() <= t + a.config.gossip_interval);
        assert!(a.next_push_pull.unwrap() <= t + a.config.gossip_interval.mul_f64(1.25));
        // Once the reading has lapsed, both go out (gossip to the one other member).
        let later = t + a.config.probe_interval * 5;
        assert!(!a.reads_late(later));
        a.gossip_tick(later);
        a.push_pull_tick(later);
        assert_eq!(starts(&a), (1, 1));
    }

    #[test]
    fn a_suspicion_waits_out_the_input_delay_but_not_past_its_longest_timeout() {
        let now = Instant::now();
        let (mut nodes, t) = joined_pair(now);
        // b falls silent until a suspects it.
        let mut t = t;
        while nodes[0].stats().suspicions == 0 {
            t = exchange(&mut nodes, t, 10, false, None);
        }
        let suspected = t;
        let c = nodes[0].config.clone();
        let shortest = suspicion_timeout(
            2,
            c.probe_interval,
            c.suspicion_mult,
            c.suspicion_max_mult,
            0,
        );
        // a now reads late: its suspicion outlives the usual timeout...
        let lag = Duration::from_millis(500);
        while t < suspected + shortest + c.probe_interval {
            t = exchange(&mut nodes, t, 10, false, Some(lag));
        }
        let st = nodes[0].stats();
        assert_eq!(st.declared_dead, 0, "{st:?}");
        assert!(st.suspicions_extended >= 1, "{st:?}");
        // ... but the longest a suspicion may last still bounds it.
        let longest =
            longest_suspicion(2, c.probe_interval, c.suspicion_mult, c.suspicion_max_mult);
        assert_eq!(longest, shortest * c.suspicion_max_mult);
        while t < suspected + longest + c.probe_interval {
            t = exchange(&mut nodes, t, 10, false, Some(lag));
        }
        assert_eq!(nodes[0].stats().declared_dead, 1, "{:?}", nodes[0].stats());
    }
}

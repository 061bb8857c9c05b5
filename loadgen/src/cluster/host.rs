//! The endpoint loadgen hosts on the runtime: one real [`Node`] plus the observation slot
//! through which the load generator learns, from the node's own view, when it saw an event;
//! and the faults the run injects in user space (loss, delay, duplication, reordering,
//! partitions), applied to what the node receives.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hearsay::node::{Command, Event, Node, NodeConfig};
use hearsay::placement::{NodeId, Router};
use hearsay::runtime::Endpoint;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

/// What every node is asked to notice.
#[derive(Debug, Clone)]
pub(crate) enum Goal {
    /// Nothing is being measured.
    Idle,
    /// The node's view holds exactly `n` live members (cold start, partition heal).
    Live(usize),
    /// The node knows member `id` at incarnation `at_least` or later (a rumour).
    Incarnation { id: NodeId, at_least: u64 },
    /// The node holds a value for a CRDT key (a write reached it).
    Key(Vec<u8>),
    /// None of `ids` is live in the node's view (failure detection).
    Dead(Vec<NodeId>),
}

impl Goal {
    fn met(&self, node: &Node) -> bool {
        match self {
            Goal::Idle => false,
            Goal::Live(n) => node.live_count() == *n,
            Goal::Incarnation { id, at_least } => node
                .member(*id)
                .is_some_and(|m| m.incarnation >= *at_least && m.is_live()),
            Goal::Key(k) => node.crdt_get(k).is_some(),
            Goal::Dead(ids) => ids
                .iter()
                .all(|id| node.member(*id).is_none_or(|m| !m.is_live())),
        }
    }
}

/// The goal of the current measurement: `epoch` tells one measurement from the next.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) goal: Goal,
    pub(crate) since: Instant,
    pub(crate) epoch: u32,
}

/// One node's observations, written by its shard and read by the load generator.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Epoch of the last goal this node met.
    pub(crate) epoch: AtomicU32,
    /// When it met it, in microseconds after the goal was set.
    pub(crate) at_us: AtomicU64,
    /// Its view hash after its last input.
    pub(crate) view_hash: AtomicU64,
    /// Its live member count after its last input.
    pub(crate) live: AtomicU32,
}

/// Faults applied to every datagram a node receives.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    pub(crate) loss: f64,
    pub(crate) dup: f64,
    pub(crate) reorder: f64,
    pub(crate) delay: Delay,
}

impl Faults {
    fn any(&self) -> bool {
        self.loss > 0.0 || self.dup > 0.0 || self.reorder > 0.0 || self.delay != Delay::None
    }
}

/// One-way delay added to received datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) enum Delay {
    /// No added delay.
    #[default]
    None,
    /// Always this long.
    Constant(Duration),
    /// Uniform between the two.
    Uniform(Duration, Duration),
    /// Log-normal with this median and shape σ.
    LogNormal(Duration, f64),
}

impl Delay {
    fn sample(&self, rng: &mut SmallRng) -> Duration {
        match *self {
            Delay::None => Duration::ZERO,
            Delay::Constant(d) => d,
            Delay::Uniform(a, b) => a + (b - a).mul_f64(rng.random::<f64>()),
            Delay::LogNormal(median, sigma) => LogNormal::new(0.0, sigma)
                .map(|d| median.mul_f64(d.sample(rng).min(1000.0)))
                .unwrap_or(median),
        }
    }
}

/// State shared by the load generator and every hosted node.
pub(crate) struct Observatory {
    pub(crate) watch: ArcSwap<Watch>,
    pub(crate) slots: Vec<Slot>,
    /// Nodes crashed by the run, by index.
    pub(crate) killed: Vec<AtomicBool>,
    /// Suspicions and failure declarations of members that were not killed.
    pub(crate) false_suspicions: AtomicU64,
    pub(crate) false_declarations: AtomicU64,
    /// Longest wait of a datagram in a node's socket before its shard read it, in
    /// microseconds, since the last step took it (receive timestamps).
    pub(crate) input_lag_peak_us: AtomicU64,
    pub(crate) faults: Faults,
    /// While set, datagrams between nodes of different groups (index parity) are dropped.
    pub(crate) partitioned: AtomicBool,
    /// Address → node index, set once every socket is bound.
    pub(crate) index_of: OnceLock<std::collections::HashMap<SocketAddr, u32>>,
}

impl Observatory {
    pub(crate) fn new(nodes: usize, faults: Faults) -> Self {
        Self {
            watch: ArcSwap::from_pointee(Watch {
                goal: Goal::Idle,
                since: Instant::now(),
                epoch: 0,
            }),
            slots: (0..nodes).map(|_| Slot::default()).collect(),
            killed: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            false_suspicions: AtomicU64::new(0),
            false_declarations: AtomicU64::new(0),
            input_lag_peak_us: AtomicU64::new(0),
            faults,
            partitioned: AtomicBool::new(false),
            index_of: OnceLock::new(),
        }
    }

    /// Node ids are their index plus one.
    pub(crate) fn index(id: NodeId) -> Option<usize> {
        usize::try_from(id.0).ok()?.checked_sub(1)
    }

    fn is_killed(&self, id: NodeId) -> bool {
        Self::index(id)
            .and_then(|i| self.killed.get(i))
            .is_some_and(|k| k.load(Ordering::Relaxed))
    }
}

impl Slot {
    /// Whether this node met the goal of measurement `epoch`.
    pub(crate) fn met(&self, epoch: u32) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch
    }
}

/// A command from the load generator to one hosted node.
pub(crate) enum HostCmd {
    /// A protocol command.
    Node(Command),
    /// Crash: the node stops processing (its socket stays bound; what reaches it is lost).
    Kill,
    /// Restart a crashed node afresh at the same address and join through `seeds`.
    Restart(Vec<SocketAddr>),
    /// Run on the node's thread.
    Inspect(Box<dyn FnOnce(&Node) + Send>),
}

struct Held {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One hosted node.
pub(crate) struct Host {
    index: usize,
    config: NodeConfig,
    node: Option<Node>,
    obs: Arc<Observatory>,
    rng: SmallRng,
    held: BinaryHeap<Reverse<Held>>,
    held_seq: u64,
}

impl Host {
    pub(crate) fn new(
        index: usize,
        config: NodeConfig,
        now: Instant,
        obs: Arc<Observatory>,
    ) -> Self {
        let node = Node::new(config.clone(), now).ok();
        let rng = SmallRng::seed_from_u64(config.rng_seed ^ 0x6661_756c_7473);
        Self {
            index,
            config,
            node,
            obs,
            rng,
            held: BinaryHeap::new(),
            held_seq: 0,
        }
    }

    /// The router of this node, if it keeps placement.
    pub(crate) fn router(node: &Node) -> Option<Arc<Router>> {
        node.router().cloned()
    }

    fn deliver(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        if let Some(n) = &mut self.node {
            n.handle_datagram(now, from, data);
        }
    }

    fn cut_off(&self, from: SocketAddr) -> bool {
        if !self.obs.partitioned.load(Ordering::Relaxed) {
            return false;
        }
        let Some(map) = self.obs.index_of.get() else {
            return false;
        };
        map.get(&from)
            .is_some_and(|&i| (i as usize) % 2 != self.index % 2)
    }

    /// Record what the node's view now says.
    fn observe(&mut self, now: Instant) {
        let Some(node) = &mut self.node else { return };
        while let Some(e) = node.poll_event() {
            match e {
                Event::Suspected(id) if !self.obs.is_killed(id) => {
                    self.obs.false_suspicions.fetch_add(1, Ordering::Relaxed);
                }
                Event::Failed(id) if !self.obs.is_killed(id) => {
                    self.obs.false_declarations.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let slot = &self.obs.slots[self.index];
        slot.live.store(node.live_count() as u32, Ordering::Relaxed);
        slot.view_hash.store(node.view_hash(), Ordering::Relaxed);
        let watch = self.obs.watch.load();
        if slot.epoch.load(Ordering::Relaxed) != watch.epoch && watch.goal.met(node) {
            let at = now.saturating_duration_since(watch.since).as_micros() as u64;
            slot.at_us.store(at, Ordering::Relaxed);
            slot.epoch.store(watch.epoch, Ordering::Release);
        }
    }
}

impl Endpoint for Host {
    type Command = HostCmd;

    fn handle_input_delay(&mut self, now: Instant, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        // Most reports are below the peak: a read of the shared word, no write.
        if us > self.obs.input_lag_peak_us.load(Ordering::Relaxed) {
            self.obs.input_lag_peak_us.fetch_max(us, Ordering::Relaxed);
        }
        if let Some(node) = &mut self.node {
            node.handle_input_delay(now, delay);
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        if self.node.is_none() || self.cut_off(from) {
            return;
        }
        let faults = self.obs.faults;
        if !faults.any() {
            self.deliver(now, from, data);
        } else if !self.rng.random_bool(faults.loss) {
            let copies = 1 + usize::from(faults.dup > 0.0 && self.rng.random_bool(faults.dup));
            for _ in 0..copies {
                let mut delay = faults.delay.sample(&mut self.rng);
                if faults.reorder > 0.0 && self.rng.random_bool(faults.reorder) {
                    // Held back behind the datagrams that follow it.
                    delay += self.config.probe_interval / 10;
                }
                if delay.is_zero() {
                    let mut copy = data.to_vec();
                    self.deliver(now, from, &mut copy);
                } else {
                    self.held_seq += 1;
                    self.held.push(Reverse(Held {
                        at: now + delay,
                        seq: self.held_seq,
                        from,
                        data: data.to_vec(),
                    }));
                }
            }
        }
        self.observe(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.held.peek().is_some_and(|h| h.0.at <= now) {
            let Some(Reverse(mut h)) = self.held.pop() else {
                break;
            };
            self.deliver(now, h.from, &mut h.data);
        }
        if let Some(n) = &mut self.node {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        self.observe(now);
    }

    fn handle_command(&mut self, now: Instant, cmd: HostCmd) {
        match cmd {
            HostCmd::Node(c) => {
                if let Some(n) = &mut self.node {
                    n.handle_command(now, c);
                }
            }
            HostCmd::Kill => {
                self.node = None;
                self.held.clear();
            }
            HostCmd::Restart(seeds) => {
                let mut config = self.config.clone();
                config.rng_seed = self.rng.random();
                self.node = Node::new(config, now).ok();
                if let Some(n) = &mut self.node {
                    n.handle_command(now, Command::Join(seeds));
                }
            }
            HostCmd::Inspect(f) => {
                if let Some(n) = &self.node {
                    f(n);
                }
            }
        }
        self.observe(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.node.as_mut()?.poll_transmit(now, buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let node = self.node.as_ref().and_then(Node::poll_timeout);
        let held = self.held.peek().map(|h| h.0.at);
        match (node, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

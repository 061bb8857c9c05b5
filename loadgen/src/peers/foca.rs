//! foca (SWIM, sans-IO) hosted on loopback: each instance is one tokio task owning its UDP
//! socket, its `Foca`, an `AccumulatingRuntime` and a min-heap of the timers foca asked for.
//! Received datagrams go to `handle_data`, due timers to `handle_timer`, and what the runtime
//! accumulates is sent, scheduled and read after every call. An instance's view is foca's
//! active members (alive or suspect) plus itself, published to the harness in an atomic
//! whenever a membership notification arrives.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use foca::{
    AccumulatingRuntime, Config, Error as FocaError, Foca, Identity, NoCustomBroadcast,
    OwnedNotification, PostcardCodec, Timer,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinError};
use tokio::time::{sleep_until, Instant};

use super::{fmt_duration, panic_text, FirstFailure, Peer, Traffic, TrafficMeter};

/// The foca release linked (Cargo.toml pins it; a test checks Cargo.lock agrees).
pub(crate) const VERSION: &str = "1.0.0";

/// Seed of the instances' random number generators (instance `i` uses a value derived from
/// it and `i`).
const RNG_SEED: u64 = 0x666f_6361_2d72_6e67;

/// A member's identity: its address, and a generation bumped when it rejoins after being
/// declared down.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct NodeId {
    addr: SocketAddr,
    generation: u64,
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.addr, self.generation)
    }
}

impl Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            addr: self.addr,
            generation: self.generation.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

type Instance = Foca<NodeId, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// What the harness reads of one instance, and how it stops it.
struct Slot {
    /// Members the instance considers alive, itself included (0: not started).
    alive: AtomicU32,
    /// Killed instances the instance still considers alive (`u32::MAX` until it has counted).
    victims_seen: AtomicU32,
    addr: OnceLock<SocketAddr>,
    abort: OnceLock<AbortHandle>,
    killed: AtomicBool,
}

/// Counters of what foca and the sockets returned.
#[derive(Debug, Default)]
struct Counters {
    /// `handle_data` refused a datagram (decode error, malformed, too big).
    decode_errors: AtomicU64,
    /// Any other error foca returned.
    other_errors: AtomicU64,
    /// `send_to` failed.
    send_errors: AtomicU64,
    /// `recv_from` failed and was retried.
    recv_errors: AtomicU64,
    /// The instance learnt it was declared down and rejoined with a new generation.
    rejoins: AtomicU64,
    /// Announces repeated because the instance still knew no member.
    reannounces: AtomicU64,
}

/// N foca instances.
pub(crate) struct FocaPeer {
    config: Config,
    slots: Box<[Slot]>,
    seed_id: OnceLock<NodeId>,
    victims: watch::Sender<Arc<HashSet<SocketAddr>>>,
    meter: TrafficMeter,
    counters: Counters,
    stopping: AtomicBool,
    failure: FirstFailure,
}

impl FocaPeer {
    /// `nodes` instances with `Config::new_lan(nodes)`, unchanged.
    pub(crate) fn lan(nodes: usize) -> FocaPeer {
        let size =
            NonZeroU32::new(u32::try_from(nodes).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        FocaPeer::new(nodes, Config::new_lan(size))
    }

    /// `nodes` instances with `config`.
    pub(crate) fn new(nodes: usize, config: Config) -> FocaPeer {
        FocaPeer {
            config,
            slots: (0..nodes)
                .map(|_| Slot {
                    alive: AtomicU32::new(0),
                    victims_seen: AtomicU32::new(u32::MAX),
                    addr: OnceLock::new(),
                    abort: OnceLock::new(),
                    killed: AtomicBool::new(false),
                })
                .collect(),
            seed_id: OnceLock::new(),
            victims: watch::Sender::new(Arc::new(HashSet::new())),
            meter: TrafficMeter::default(),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            failure: FirstFailure::default(),
        }
    }

    /// Record the end of instance `i`'s task unless it was killed or the run is over.
    fn ended(&self, i: usize, outcome: Result<Result<()>, JoinError>) {
        let why = match outcome {
            Err(e) if e.is_panic() => format!("panicked: {}", panic_text(&*e.into_panic())),
            _ if self.slots[i].killed.load(Ordering::SeqCst)
                || self.stopping.load(Ordering::SeqCst) =>
            {
                return
            }
            Ok(Ok(())) => "stopped".to_string(),
            Ok(Err(e)) => format!("failed: {e:#}"),
            Err(_) => "was cancelled".to_string(),
        };
        self.failure.set(format!("foca instance {i} {why}"));
    }
}

/// A timer foca asked for, due at `at`; `seq` keeps equal deadlines in submission order.
struct Scheduled {
    at: Instant,
    seq: u64,
    timer: Timer<NodeId>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One running instance: the task's state.
struct Node {
    index: usize,
    peer: Arc<FocaPeer>,
    socket: UdpSocket,
    foca: Instance,
    runtime: AccumulatingRuntime<NodeId>,
    timers: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    due: Vec<Timer<NodeId>>,
    victims: watch::Receiver<Arc<HashSet<SocketAddr>>>,
}

impl Node {
    fn slot(&self) -> &Slot {
        &self.peer.slots[self.index]
    }

    /// Count an error foca returned; foca stays usable after any of them.
    fn account(&self, result: Result<(), FocaError>) {
        let counters = &self.peer.counters;
        match result {
            Ok(()) => {}
            Err(FocaError::Decode(_) | FocaError::MalformedPacket | FocaError::DataTooBig) => {
                counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Send, schedule and read what the last calls into foca accumulated.
    async fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            match self.socket.send_to(&data, to.addr).await {
                Ok(sent) => self.peer.meter.record(sent),
                Err(_) => {
                    self.peer
                        .counters
                        .send_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.seq += 1;
            self.timers.push(Reverse(Scheduled {
                at: now + after,
                seq: self.seq,
                timer,
            }));
        }
        let mut changed = false;
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::Rejoin(_) => {
                    self.peer.counters.rejoins.fetch_add(1, Ordering::Relaxed);
                    changed = true;
                }
                OwnedNotification::MemberUp(_)
                | OwnedNotification::MemberDown(_)
                | OwnedNotification::Rename(..)
                | OwnedNotification::Idle
                | OwnedNotification::Defunct => changed = true,
                _ => {}
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Publish the instance's view: its active members plus itself, and how many of the
    /// killed instances it still counts among them.
    fn publish(&self) {
        let alive = u32::try_from(self.foca.num_members() + 1).unwrap_or(u32::MAX);
        self.slot().alive.store(alive, Ordering::Release);
        let victims = Arc::clone(&self.victims.borrow());
        if !victims.is_empty() {
            let seen = self
                .foca
                .iter_members()
                .filter(|m| victims.contains(&m.id().addr))
                .count();
            self.slot()
                .victims_seen
                .store(u32::try_from(seen).unwrap_or(u32::MAX), Ordering::Release);
        }
    }

    /// Hand every due timer to foca, in foca's order for timers due together.
    async fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse(s)| s.at <= now) {
            if let Some(Reverse(s)) = self.timers.pop() {
                self.due.push(s.timer);
            }
        }
        // `Timer`'s order puts events that must come first (an indirect probe before the
        // next probe) first; the sort is stable, so equal kinds keep deadline order.
        self.due.sort();
        let mut due = std::mem::take(&mut self.due);
        for timer in due.drain(..) {
            let result = self.foca.handle_timer(timer, &mut self.runtime);
            self.account(result);
            self.drain().await;
        }
        self.due = due;
    }

    /// Run until the task is aborted or the socket breaks. `seed` is the identity to announce
    /// to (none for the seed itself); the announce is repeated every probe period while the
    /// instance knows no member.
    async fn run(mut self, seed: Option<NodeId>) -> Result<()> {
        let period = self.peer.config.probe_period;
        // One byte more than foca accepts, so that an oversized datagram reaches foca
        // truncated but still too big, and is refused.
        let mut buf = vec![0u8; self.peer.config.max_packet_size.get() + 1];
        let mut next_announce = Instant::now();
        let mut announced = false;
        let mut victims_open = true;
        self.publish();
        loop {
            let announce_due = seed.is_some() && self.foca.num_members() == 0;
            let next_timer = self.timers.peek().map(|Reverse(s)| s.at);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, _from)) => {
                        let result = self.foca.handle_data(&buf[..len], &mut self.runtime);
                        self.account(result);
                    }
                    Err(e) if transient(&e) => {
                        self.peer.counters.recv_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e).context("receiving on the instance's socket"),
                },
                () = sleep_until(next_timer.unwrap_or(next_announce)), if next_timer.is_some() => {
                    self.fire_due_timers().await;
                }
                () = sleep_until(next_announce), if announce_due => {
                    if let Some(seed) = &seed {
                        if announced {
                            self.peer.counters.reannounces.fetch_add(1, Ordering::Relaxed);
                        }
                        let result = self.foca.announce(seed.clone(), &mut self.runtime);
                        self.account(result);
                        announced = true;
                    }
                    next_announce = Instant::now() + period;
                }
                changed = self.victims.changed(), if victims_open => {
                    if changed.is_ok() {
                        self.publish();
                    } else {
                        victims_open = false;
                    }
                }
            }
            self.drain().await;
        }
    }
}

/// Receive errors after which the socket still works.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::OutOfMemory
    )
}

impl Peer for FocaPeer {
    fn name(&self) -> &'static str {
        "foca"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    fn settings(&self) -> String {
        let c = &self.config;
        let periodic = |p: &Option<foca::PeriodicParams>| {
            p.as_ref().map_or_else(
                || "off".to_string(),
                |p| format!("{} to {}", fmt_duration(p.frequency), p.num_members),
            )
        };
        format!(
            "Config::new_lan({}) unchanged: probe_period={}, probe_rtt={}, num_indirect_probes={}, max_transmissions={}, suspect_to_down_after={}, remove_down_after={}, max_packet_size={}, notify_down_members={}, periodic_announce={}, periodic_announce_to_down_members={}, periodic_gossip={}; PostcardCodec; identity = address + generation, renewed on being declared down; one tokio task per instance (UDP socket, AccumulatingRuntime, timer min-heap); joiners announce to the seed, again every probe_period while they know no member; view = iter_members (alive + suspect) + self",
            self.slots.len(),
            fmt_duration(c.probe_period),
            fmt_duration(c.probe_rtt),
            c.num_indirect_probes,
            c.max_transmissions,
            fmt_duration(c.suspect_to_down_after),
            fmt_duration(c.remove_down_after),
            c.max_packet_size,
            c.notify_down_members,
            periodic(&c.periodic_announce),
            periodic(&c.periodic_announce_to_down_members),
            periodic(&c.periodic_gossip),
        )
    }

    fn period(&self) -> Duration {
        self.config.probe_period
    }

    async fn start(self: Arc<Self>, i: usize) -> Result<()> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("cannot bind a UDP socket on 127.0.0.1")?;
        let addr = socket
            .local_addr()
            .context("cannot read a UDP socket's address")?;
        let id = NodeId {
            addr,
            generation: 0,
        };
        let seed = if i == 0 {
            let _ = self.seed_id.set(id.clone());
            None
        } else {
            Some(
                self.seed_id
                    .get()
                    .cloned()
                    .context("the seed has no identity")?,
            )
        };
        let rng =
            SmallRng::seed_from_u64(RNG_SEED ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let node = Node {
            index: i,
            peer: Arc::clone(&self),
            socket,
            foca: Foca::new(id, self.config.clone(), rng, PostcardCodec),
            runtime: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            due: Vec::new(),
            victims: self.victims.subscribe(),
        };
        let slot = &self.slots[i];
        let _ = slot.addr.set(addr);
        let task = tokio::spawn(node.run(seed));
        let _ = slot.abort.set(task.abort_handle());
        let peer = Arc::clone(&self);
        tokio::spawn(async move {
            let outcome = task.await;
            peer.ended(i, outcome);
        });
        // A kill that came before the instance was up.
        if slot.killed.load(Ordering::SeqCst) {
            if let Some(abort) = slot.abort.get() {
                abort.abort();
            }
        }
        Ok(())
    }

    fn alive(&self, i: usize) -> usize {
        self.slots[i].alive.load(Ordering::Acquire) as usize
    }

    fn kill(&self, victims: &[usize]) {
        let addrs = victims
            .iter()
            .filter_map(|&v| {
                let slot = &self.slots[v];
                slot.killed.store(true, Ordering::SeqCst);
                // Drops the task with its socket and its Foca: nothing more is sent, and no
                // leave message was.
                if let Some(abort) = slot.abort.get() {
                    abort.abort();
                }
                slot.addr.get().copied()
            })
            .collect();
        self.victims.send_replace(Arc::new(addrs));
    }

    fn sees_victim(&self, i: usize) -> bool {
        self.slots[i].victims_seen.load(Ordering::Acquire) != 0
    }

    fn traffic(&self) -> Traffic {
        self.meter.total()
    }

    fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    fn notes(&self) -> String {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "foca: {} decode errors, {} other errors, {} failed sends, {} receive errors, {} rejoins after being declared down, {} repeated announces",
            n(&c.decode_errors),
            n(&c.other_errors),
            n(&c.send_errors),
            n(&c.recv_errors),
            n(&c.rejoins),
            n(&c.reannounces),
        )
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for abort in self.slots.iter().filter_map(|s| s.abort.get()) {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_converges, test_plan};
    use super::*;

    /// Eight instances on loopback with foca's LAN configuration converge in the cold start,
    /// and every survivor drops one crashed instance from its active members.
    #[test]
    fn peers_foca_converges_and_detects_a_crash() {
        let peer = FocaPeer::lan(8);
        let plan = test_plan(8, peer.period());
        assert_converges(Arc::new(peer), &plan);
    }

    #[test]
    fn settings_state_the_lan_defaults() {
        let s = FocaPeer::lan(100).settings();
        for part in [
            "Config::new_lan(100)",
            "probe_period=1s",
            "probe_rtt=500ms",
            "num_indirect_probes=3",
            "max_transmissions=8",
            "suspect_to_down_after=8s",
            "remove_down_after=24h",
            "max_packet_size=1400",
            "notify_down_members=true",
            "periodic_gossip=200ms to 3",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }

    /// Garbage and truncated datagrams are refused by foca's decoder and counted, without a
    /// panic.
    #[test]
    fn malformed_datagrams_are_counted_not_fatal() {
        let peer = Arc::new(FocaPeer::lan(2));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            Arc::clone(&peer).start(0).await.expect("seed");
            let to = *peer.slots[0].addr.get().expect("seed address");
            let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("socket");
            for junk in [&[0xffu8; 3][..], &[0u8; 1][..], &[7u8; 1500][..], &[][..]] {
                sender.send_to(junk, to).await.expect("send");
            }
            for _ in 0..100 {
                if peer.counters.decode_errors.load(Ordering::Relaxed) >= 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert_eq!(peer.counters.decode_errors.load(Ordering::Relaxed), 4);
        assert_eq!(peer.failure(), None);
        assert_eq!(peer.alive(0), 1);
        peer.stop();
    }
}

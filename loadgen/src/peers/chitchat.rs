//! chitchat (quickwit-oss) hosted on loopback: each instance is a `spawn_chitchat` server on
//! the crate's own UDP transport, wrapped to count what it sends. An instance's view is its
//! live-nodes watcher (the failure detector's live set, itself included), which chitchat
//! refreshes at the end of every gossip round.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId,
    FailureDetectorConfig, NodeState, ProtocolVersion,
};
use tokio::sync::watch;

use super::{fmt_duration, FirstFailure, Peer, Traffic, TrafficMeter};

/// The chitchat release linked (Cargo.toml pins it; a test checks Cargo.lock agrees).
pub(crate) const VERSION: &str = "0.13.0";

/// Cluster id of every instance.
const CLUSTER_ID: &str = "loadgen-peer";

/// Ports tried for one instance: a port found free can be taken by another process before
/// chitchat binds it.
const BIND_ATTEMPTS: usize = 8;

/// Timing of every instance.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    /// Time between two gossip rounds (the protocol period).
    pub(crate) gossip_interval: Duration,
    /// The phi-accrual failure detector's parameters.
    pub(crate) failure_detector: FailureDetectorConfig,
    /// How long deleted keys are kept as tombstones.
    pub(crate) marked_for_deletion_grace_period: Duration,
}

impl Timing {
    /// chitchat's default configuration: a 1 s gossip interval, the failure detector's
    /// defaults, and a 15 min tombstone grace period (the values of the crate's own
    /// `ChitchatConfig` default).
    pub(crate) fn defaults() -> Timing {
        Timing {
            gossip_interval: Duration::from_secs(1),
            failure_detector: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(15 * 60),
        }
    }
}

/// The wire format of every instance: the latest, which every instance (all on the same
/// release) decodes.
const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V1;

/// chitchat's `Transport` for real UDP, counting every datagram sent.
struct CountingTransport {
    meter: Arc<TrafficMeter>,
    send_errors: Arc<AtomicU64>,
}

#[async_trait]
impl Transport for CountingTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = UdpTransport.open(listen_addr).await?;
        Ok(Box::new(CountingSocket {
            inner,
            meter: Arc::clone(&self.meter),
            send_errors: Arc::clone(&self.send_errors),
        }))
    }
}

/// chitchat's UDP socket, counting every datagram sent.
struct CountingSocket {
    inner: Box<dyn Socket>,
    meter: Arc<TrafficMeter>,
    send_errors: Arc<AtomicU64>,
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        match self.inner.send(to, envelope).await {
            Ok(outcome) => {
                self.meter.record(outcome.num_bytes_sent);
                Ok(outcome)
            }
            Err(e) => {
                self.send_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

/// One running instance.
struct Instance {
    handle: ChitchatHandle,
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
}

/// N chitchat instances.
pub(crate) struct ChitchatPeer {
    timing: Timing,
    transport: CountingTransport,
    meter: Arc<TrafficMeter>,
    send_errors: Arc<AtomicU64>,
    instances: Box<[OnceLock<Instance>]>,
    killed: Box<[AtomicBool]>,
    victims: OnceLock<Vec<ChitchatId>>,
    seed_addr: OnceLock<SocketAddr>,
    stopping: AtomicBool,
    failure: FirstFailure,
}

/// Identity of instance `i` at `addr`.
fn chitchat_id(i: usize, addr: SocketAddr) -> ChitchatId {
    ChitchatId::new(format!("node-{i}"), 0, addr)
}

/// A loopback port free right now.
fn free_port() -> Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot bind a UDP socket on 127.0.0.1")?;
    socket
        .local_addr()
        .context("cannot read a UDP socket's address")
}

impl ChitchatPeer {
    /// `nodes` instances with `timing`.
    pub(crate) fn new(nodes: usize, timing: Timing) -> ChitchatPeer {
        let meter = Arc::new(TrafficMeter::default());
        let send_errors = Arc::new(AtomicU64::new(0));
        ChitchatPeer {
            timing,
            transport: CountingTransport {
                meter: Arc::clone(&meter),
                send_errors: Arc::clone(&send_errors),
            },
            meter,
            send_errors,
            instances: (0..nodes).map(|_| OnceLock::new()).collect(),
            killed: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            victims: OnceLock::new(),
            seed_addr: OnceLock::new(),
            stopping: AtomicBool::new(false),
            failure: FirstFailure::default(),
        }
    }

    fn config(&self, i: usize, addr: SocketAddr, seeds: &[String]) -> ChitchatConfig {
        ChitchatConfig {
            chitchat_id: chitchat_id(i, addr),
            cluster_id: CLUSTER_ID.to_string(),
            gossip_interval: self.timing.gossip_interval,
            listen_addr: addr,
            seed_nodes: seeds.to_vec(),
            failure_detector_config: self.timing.failure_detector.clone(),
            marked_for_deletion_grace_period: self.timing.marked_for_deletion_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// Record the end of instance `i`'s server unless it was killed or the run is over.
    fn ended(&self, i: usize, result: Result<()>) {
        if self.killed[i].load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let why = match result {
            Ok(()) => "stopped".to_string(),
            Err(e) => format!("failed: {e:#}"),
        };
        self.failure.set(format!("chitchat instance {i} {why}"));
    }
}

impl Peer for ChitchatPeer {
    fn name(&self) -> &'static str {
        "chitchat"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    fn settings(&self) -> String {
        let t = &self.timing;
        let fd = &t.failure_detector;
        format!(
            "spawn_chitchat on UdpTransport (wrapped to count sends); gossip_interval={}, each round to 3 live nodes plus a dead node and a seed by chance (crate constants); protocol_version={:?} (latest wire format, every instance runs {VERSION}); failure detector defaults: phi_threshold={}, sampling_window_size={}, max_interval={}, initial_interval={}, dead_node_grace_period={}; marked_for_deletion_grace_period={}; seed_nodes=[instance 0]; no key-values; view = live_nodes_watcher (self included)",
            fmt_duration(t.gossip_interval),
            PROTOCOL_VERSION,
            fd.phi_threshold,
            fd.sampling_window_size,
            fmt_duration(fd.max_interval),
            fmt_duration(fd.initial_interval),
            fmt_duration(fd.dead_node_grace_period),
            fmt_duration(t.marked_for_deletion_grace_period),
        )
    }

    fn period(&self) -> Duration {
        self.timing.gossip_interval
    }

    async fn start(self: Arc<Self>, i: usize) -> Result<()> {
        let seeds: Vec<String> = match (i, self.seed_addr.get()) {
            (0, _) => Vec::new(),
            (_, Some(seed)) => vec![seed.to_string()],
            (_, None) => anyhow::bail!("the seed has no address"),
        };
        let mut attempt = 0;
        let (handle, addr) = loop {
            attempt += 1;
            let addr = free_port()?;
            match spawn_chitchat(self.config(i, addr, &seeds), Vec::new(), &self.transport).await {
                Ok(handle) => break (handle, addr),
                Err(_) if attempt < BIND_ATTEMPTS => continue,
                Err(e) => return Err(e.context(format!("{BIND_ATTEMPTS} ports tried"))),
            }
        };
        if i == 0 {
            let _ = self.seed_addr.set(addr);
        }
        let live = handle.chitchat().lock().await.live_nodes_watcher();
        let termination = handle.termination_watcher();
        if self.instances[i].set(Instance { handle, live }).is_err() {
            anyhow::bail!("instance {i} started twice");
        }
        let peer = Arc::clone(&self);
        tokio::spawn(async move {
            let result = termination.await;
            peer.ended(i, result);
        });
        // A kill that came before the instance was up.
        if self.killed[i].load(Ordering::SeqCst) {
            if let Some(instance) = self.instances[i].get() {
                instance.handle.abort();
            }
        }
        Ok(())
    }

    fn alive(&self, i: usize) -> usize {
        self.instances[i]
            .get()
            .map_or(0, |instance| instance.live.borrow().len())
    }

    fn kill(&self, victims: &[usize]) {
        let ids = victims
            .iter()
            .filter_map(|&v| {
                self.killed[v].store(true, Ordering::SeqCst);
                let instance = self.instances[v].get()?;
                // Stops the server task: no more datagrams, and its socket closes with it.
                instance.handle.abort();
                Some(instance.handle.chitchat_id().clone())
            })
            .collect();
        let _ = self.victims.set(ids);
    }

    fn sees_victim(&self, i: usize) -> bool {
        let (Some(instance), Some(victims)) = (self.instances[i].get(), self.victims.get()) else {
            return false;
        };
        let live = instance.live.borrow();
        victims.iter().any(|v| live.contains_key(v))
    }

    fn traffic(&self) -> Traffic {
        self.meter.total()
    }

    fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    fn notes(&self) -> String {
        format!(
            "chitchat: {} failed sends (malformed datagrams are dropped inside its transport, uncounted)",
            self.send_errors.load(Ordering::Relaxed)
        )
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for instance in self.instances.iter().filter_map(OnceLock::get) {
            instance.handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_converges, test_plan};
    use super::*;

    /// Eight instances on loopback converge in the cold start, and every survivor drops one
    /// crashed instance from its live set. The gossip interval is shortened to 200 ms and the
    /// failure detector's prior interval to 500 ms so that detection (phi = 8 × the smoothed
    /// heartbeat interval) fits the test; `loadgen peer` runs the defaults.
    #[test]
    fn peers_chitchat_converges_and_detects_a_crash() {
        let timing = Timing {
            gossip_interval: Duration::from_millis(200),
            failure_detector: FailureDetectorConfig {
                initial_interval: Duration::from_millis(500),
                ..FailureDetectorConfig::default()
            },
            ..Timing::defaults()
        };
        let plan = test_plan(8, timing.gossip_interval);
        assert_converges(Arc::new(ChitchatPeer::new(8, timing)), &plan);
    }

    #[test]
    fn settings_state_the_defaults() {
        let s = ChitchatPeer::new(2, Timing::defaults()).settings();
        for part in [
            "gossip_interval=1s",
            "phi_threshold=8",
            "sampling_window_size=1000",
            "max_interval=10s",
            "initial_interval=5s",
            "dead_node_grace_period=24h",
            "marked_for_deletion_grace_period=15min",
            "protocol_version=V1",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }
}

//! The Hearsay runtime under test: endpoints for the one-flow, many-sockets and latency
//! measurements, and the harnesses that host them.
//!
//! The endpoints keep the runtime's contract: no clock reads (every time is the `now` the
//! runtime hands in, so timestamps are what an endpoint sees), no sockets, and they copy
//! their payload into the runtime's send buffer as any endpoint must.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hearsay::runtime::{Endpoint, EndpointId, Runtime, RuntimeConfig, Stats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::latency::{due_at, new_histogram, record_rtt, PingOutcome};
use super::probe::{deal, wait_for, Probe, RelayRuns, Waiter};
use super::wire::{self, Counter, Window, ACK, DATA, PING, PONG, TOKEN};
use super::{nanos, Harness, Outcome, Unavailable, WRITE_OFF};
use crate::sys::random_bytes;

/// How long to wait for the shards to build freshly added endpoints.
const SETUP: Duration = Duration::from_secs(30);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Adds one endpoint per `make` call and returns their ids and local addresses, in order,
/// once every shard has built its endpoints.
fn host<E: Endpoint>(
    rt: &Runtime<E>,
    makers: Vec<Box<dyn FnOnce(SocketAddr) -> E + Send>>,
) -> Result<(Vec<EndpointId>, Vec<SocketAddr>), Unavailable> {
    let n = makers.len();
    let (tx, rx) = mpsc::channel();
    let mut ids = Vec::with_capacity(n);
    for (i, make) in makers.into_iter().enumerate() {
        let tx = tx.clone();
        let id = rt
            .add_endpoint(loopback(), move |local| {
                let _ = tx.send((i, local));
                make(local)
            })
            .map_err(|e| Unavailable(format!("endpoint {i} of {n}: {e}")))?;
        ids.push(id);
    }
    let mut addrs = vec![loopback(); n];
    for _ in 0..n {
        let (i, local) = rx
            .recv_timeout(SETUP)
            .map_err(|_| Unavailable("shards did not build the endpoints in time".into()))?;
        addrs[i] = local;
    }
    Ok((ids, addrs))
}

// ---------------------------------------------------------------------------------------------
// One flow

/// Commands of the one-flow endpoints.
pub(crate) enum FlowCmd {
    /// Sender: send `count` datagrams of run `run`.
    Start { run: u32, count: u64 },
}

/// One sender and one receiver endpoint, on different shards.
pub(crate) enum FlowEp {
    Sender {
        peer: SocketAddr,
        payload: Vec<u8>,
        probe: Arc<Probe>,
        window: Window,
        /// When the window last moved (or the run started).
        moved: Instant,
    },
    Receiver {
        probe: Arc<Probe>,
        counter: Counter,
        ack: Option<(SocketAddr, u32, u64)>,
    },
}

impl Endpoint for FlowEp {
    type Command = FlowCmd;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        match (self, wire::get(data)) {
            (FlowEp::Sender { window, moved, .. }, Some((ACK, run, count))) => {
                let opened = window.on_ack(run, count);
                if opened {
                    *moved = now;
                }
            }
            (
                FlowEp::Receiver {
                    probe,
                    counter,
                    ack,
                },
                Some((DATA, run, _)),
            ) => {
                let counted = counter.on_data(probe, run, nanos(now));
                if let Some((run, count)) = counted.then(|| counter.take_ack(probe)).flatten() {
                    *ack = Some((from, run, count));
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let FlowEp::Sender {
            window,
            moved,
            probe,
            ..
        } = self
        {
            if window.blocked() && now >= *moved + WRITE_OFF {
                window.write_off();
                probe.add_write_off();
                *moved = now;
            }
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: FlowCmd) {
        let FlowCmd::Start { run, count } = cmd;
        if let FlowEp::Sender { window, moved, .. } = self {
            *window = Window::start(run, count);
            *moved = now;
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        match self {
            FlowEp::Sender {
                peer,
                payload,
                probe,
                window,
                ..
            } => {
                if window.room() == 0 {
                    return None;
                }
                buf.extend_from_slice(payload);
                wire::put(buf, DATA, window.run, window.sent);
                window.sent += 1;
                probe.set_sent(window.run, window.sent);
                Some(*peer)
            }
            FlowEp::Receiver { ack, .. } => {
                let (to, run, count) = ack.take()?;
                buf.extend_from_slice(&wire::ack(run, count));
                Some(to)
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            FlowEp::Sender { window, moved, .. } if window.blocked() => Some(*moved + WRITE_OFF),
            _ => None,
        }
    }
}

/// The one-flow measurement on the runtime.
pub(crate) struct RuntimeFlow {
    rt: Runtime<FlowEp>,
    sender: EndpointId,
    probe: Arc<Probe>,
}

impl RuntimeFlow {
    pub(crate) fn new(config: RuntimeConfig, payload: usize) -> Result<Self, Unavailable> {
        let rt = Runtime::start(config).map_err(|e| Unavailable(e.to_string()))?;
        let probe = Arc::new(Probe::new());
        let p = Arc::clone(&probe);
        let (_, receiver) = host(
            &rt,
            vec![Box::new(move |_| FlowEp::Receiver {
                probe: p,
                counter: Counter::default(),
                ack: None,
            })],
        )?;
        let (p, peer) = (Arc::clone(&probe), receiver[0]);
        let payload = random_bytes(payload, payload as u64);
        let (ids, _) = host(
            &rt,
            vec![Box::new(move |_| FlowEp::Sender {
                peer,
                payload,
                probe: p,
                window: Window::default(),
                moved: Instant::now(),
            })],
        )?;
        Ok(Self {
            rt,
            sender: ids[0],
            probe,
        })
    }
}

impl Harness for RuntimeFlow {
    fn run(&mut self, count: u64) -> Outcome {
        let write_offs = self.probe.write_offs();
        let run = self.probe.begin(count);
        let start = Instant::now();
        self.rt
            .command(self.sender, FlowCmd::Start { run, count })
            .expect("the sender's shard exists");
        let received = self.probe.wait(run);
        Outcome::new(
            start,
            self.probe.sent(run),
            received,
            self.probe.last_ns(),
            self.probe.write_offs() - write_offs,
        )
    }

    fn runtime_stats(&self) -> Option<Stats> {
        Some(self.rt.stats())
    }

    fn describe(&self) -> String {
        format!("{} on {} shards", self.rt.backend(), self.rt.shards())
    }
}

// ---------------------------------------------------------------------------------------------
// Many sockets

/// What the relay endpoints share with the measuring thread.
pub(crate) struct RelayShared {
    peers: OnceLock<Vec<SocketAddr>>,
    payload: Vec<u8>,
    /// Runs and their counts, one receiving context per endpoint.
    runs: RelayRuns,
}

/// Tokens for a relay endpoint to send out: hops left for each.
pub(crate) struct Inject {
    run: u32,
    hops: Vec<u64>,
}

/// One of many endpoints that pass tokens to random others.
///
/// A token carries the receptions it has left; each endpoint that receives one counts it
/// and, if any are left, forwards it to an endpoint drawn uniformly from all the others.
/// So every datagram goes from a random endpoint to a random other endpoint, and the
/// number in flight stays at the number injected (less drops) without acknowledgements.
pub(crate) struct RelayEp {
    me: usize,
    shared: Arc<RelayShared>,
    rng: SmallRng,
    out: VecDeque<(SocketAddr, u32, u64)>,
}

impl RelayEp {
    fn forward(&mut self, run: u32, hops: u64) {
        let peers = self
            .shared
            .peers
            .get()
            .expect("peers are set before injection");
        let mut to = self.rng.random_range(0..peers.len() - 1);
        if to >= self.me {
            to += 1;
        }
        self.out.push_back((peers[to], run, hops));
    }
}

impl Endpoint for RelayEp {
    type Command = Inject;

    fn handle_datagram(&mut self, now: Instant, _from: SocketAddr, data: &mut [u8]) {
        let Some((TOKEN, run, hops)) = wire::get(data) else {
            return;
        };
        if !self.shared.runs.arrive(self.me, run, nanos(now)) {
            return; // a token of an abandoned run
        }
        if hops > 1 {
            self.forward(run, hops - 1);
        } else {
            self.shared.runs.finish();
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn handle_command(&mut self, _now: Instant, cmd: Inject) {
        for hops in cmd.hops {
            self.forward(cmd.run, hops);
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, run, hops) = self.out.pop_front()?;
        buf.extend_from_slice(&self.shared.payload);
        wire::put(buf, TOKEN, run, hops);
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The many-sockets measurement: `n` relay endpoints on the runtime's shards.
pub(crate) struct RuntimeRelay {
    rt: Runtime<RelayEp>,
    ids: Vec<EndpointId>,
    shared: Arc<RelayShared>,
    tokens: u64,
}

impl RuntimeRelay {
    pub(crate) fn new(
        config: RuntimeConfig,
        sockets: usize,
        payload: usize,
        tokens: u64,
    ) -> Result<Self, Unavailable> {
        assert!(sockets >= 2, "a relay needs two endpoints");
        let rt = Runtime::start(config).map_err(|e| Unavailable(e.to_string()))?;
        let shared = Arc::new(RelayShared {
            peers: OnceLock::new(),
            payload: random_bytes(payload, payload as u64),
            runs: RelayRuns::new(sockets),
        });
        let makers = (0..sockets)
            .map(|me| {
                let shared = Arc::clone(&shared);
                Box::new(move |_| RelayEp {
                    me,
                    shared,
                    rng: SmallRng::seed_from_u64(me as u64),
                    out: VecDeque::new(),
                }) as Box<dyn FnOnce(SocketAddr) -> RelayEp + Send>
            })
            .collect();
        let (ids, addrs) = host(&rt, makers)?;
        shared
            .peers
            .set(addrs)
            .expect("peers are set once, before any token");
        Ok(Self {
            rt,
            ids,
            shared,
            tokens,
        })
    }
}

/// `count` receptions split over `tokens` tokens as evenly as possible.
pub(crate) fn split_hops(count: u64, tokens: u64) -> Vec<u64> {
    let tokens = tokens.min(count).max(1);
    (0..tokens)
        .map(|i| count / tokens + u64::from(i < count % tokens))
        .filter(|&h| h > 0)
        .collect()
}

impl Harness for RuntimeRelay {
    fn run(&mut self, count: u64) -> Outcome {
        let runs = &self.shared.runs;
        let hops = split_hops(count, self.tokens);
        let received_before = runs.received();
        let run = runs.begin(hops.len());
        // Inject from one endpoint per shard (round robin put endpoint i on shard i % shards).
        let parts = deal(&hops, self.rt.shards().min(self.ids.len()));
        let start = Instant::now();
        for (id, hops) in self.ids.iter().zip(parts) {
            self.rt
                .command(*id, Inject { run, hops })
                .expect("the injector's shard exists");
        }
        let (received, last) = runs.wait(count, received_before);
        Outcome::new(start, count, received, last, 0)
    }

    fn runtime_stats(&self) -> Option<Stats> {
        Some(self.rt.stats())
    }

    fn describe(&self) -> String {
        format!(
            "{} on {} shards, {} endpoints, {} tokens in flight",
            self.rt.backend(),
            self.rt.shards(),
            self.ids.len(),
            self.tokens
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Latency

/// Commands of the latency endpoints.
pub(crate) enum PingCmd {
    /// Pinger: send `count` pings to `peer` at `rate` per second.
    Start {
        peer: SocketAddr,
        rate: f64,
        count: u64,
    },
    /// Pinger: hand over what was measured.
    Finish(mpsc::Sender<PingOutcome>),
}

/// A paced pinger and an echo, on different shards.
pub(crate) enum PingEp {
    Pinger(Box<Pinger>),
    Echo {
        out: VecDeque<(SocketAddr, Vec<u8>)>,
        pool: Vec<Vec<u8>>,
    },
}

/// Sends ping *i* at the first chance at or after `start + i / rate` (a pong arriving or its
/// timer), stamped with the runtime's `now`; records half of each round trip.
pub(crate) struct Pinger {
    payload: Vec<u8>,
    peer: Option<SocketAddr>,
    start: Instant,
    rate: f64,
    count: u64,
    sent: u64,
    received: Arc<AtomicU64>,
    hist: Histogram<u64>,
    waiter: Arc<Waiter>,
}

impl Pinger {
    /// When the next ping is due, if any is left.
    fn next_due(&self) -> Option<Instant> {
        (self.peer.is_some() && self.sent < self.count)
            .then(|| due_at(self.start, self.sent, self.rate))
    }
}

impl Endpoint for PingEp {
    type Command = PingCmd;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        match (self, wire::get(data)) {
            (PingEp::Pinger(p), Some((PONG, _, stamp))) => {
                record_rtt(&mut p.hist, nanos(now), stamp);
                let got = p.received.fetch_add(1, Ordering::Relaxed) + 1;
                if got == p.count {
                    p.waiter.wake();
                }
            }
            (PingEp::Echo { out, pool }, Some((PING, _, _))) => {
                let mut pong = pool.pop().unwrap_or_default();
                pong.extend_from_slice(data);
                pong[0] = PONG;
                out.push_back((from, pong));
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn handle_command(&mut self, now: Instant, cmd: PingCmd) {
        let PingEp::Pinger(p) = self else { return };
        match cmd {
            PingCmd::Start { peer, rate, count } => {
                p.peer = Some(peer);
                p.start = now;
                p.rate = rate;
                p.count = count;
            }
            PingCmd::Finish(reply) => {
                let _ = reply.send(PingOutcome {
                    sent: p.sent,
                    received: p.received.load(Ordering::Relaxed),
                    hist: p.hist.clone(),
                });
            }
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        match self {
            PingEp::Pinger(p) => {
                let peer = p.peer?;
                if p.next_due().is_none_or(|due| now < due) {
                    return None;
                }
                buf.extend_from_slice(&p.payload);
                wire::put(buf, PING, 0, nanos(now));
                p.sent += 1;
                Some(peer)
            }
            PingEp::Echo { out, pool } => {
                let (to, mut pong) = out.pop_front()?;
                buf.extend_from_slice(&pong);
                pong.clear();
                pool.push(pong);
                Some(to)
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            PingEp::Pinger(p) => p.next_due(),
            PingEp::Echo { .. } => None,
        }
    }
}

/// Paced ping-pong between two endpoints of one runtime; see [`Pinger`].
pub(crate) fn latency(
    config: RuntimeConfig,
    payload: usize,
    rate: f64,
    count: u64,
) -> Result<PingOutcome, Unavailable> {
    let rt = Runtime::start(config).map_err(|e| Unavailable(e.to_string()))?;
    let received = Arc::new(AtomicU64::new(0));
    let waiter = Arc::new(Waiter::default());
    waiter.register();
    let pinger = Box::new(Pinger {
        payload: random_bytes(payload, payload as u64),
        peer: None,
        start: Instant::now(),
        rate,
        count,
        sent: 0,
        received: Arc::clone(&received),
        hist: new_histogram(),
        waiter: Arc::clone(&waiter),
    });
    let (ids, addrs) = host(
        &rt,
        vec![
            Box::new(move |_| PingEp::Pinger(pinger)),
            Box::new(|_| PingEp::Echo {
                out: VecDeque::new(),
                pool: Vec::new(),
            }),
        ],
    )?;
    rt.command(
        ids[0],
        PingCmd::Start {
            peer: addrs[1],
            rate,
            count,
        },
    )
    .expect("the pinger's shard exists");
    wait_for(count, || received.load(Ordering::Relaxed));
    let (tx, rx) = mpsc::channel();
    rt.command(ids[0], PingCmd::Finish(tx))
        .expect("the pinger's shard exists");
    let outcome = rx
        .recv_timeout(SETUP)
        .map_err(|_| Unavailable("the pinger did not report".into()))?;
    rt.shutdown().map_err(|e| Unavailable(e.to_string()))?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::split_hops;

    #[test]
    fn hops_split_evenly_and_sum_to_count() {
        assert_eq!(split_hops(10, 4), [3, 3, 2, 2]);
        assert_eq!(split_hops(3, 1024), [1, 1, 1]);
        assert_eq!(split_hops(1024 * 5, 1024).iter().sum::<u64>(), 1024 * 5);
        assert!(split_hops(0, 8).is_empty());
    }
}

//! One transport suite, run against every runtime backend (`portable::*`, `io_uring::*`,
//! `memory::*`). Where io_uring is unavailable its part skips with a printed message.
//!
//! The test's own client is a kernel UDP socket on the kernel backends and a
//! `MemorySocket` on the memory backend (which has no kernel sockets to talk to). Tests
//! about the kernel releasing a port (after a panic, a shutdown, a drop) check on the
//! memory backend that the runtime released the address in its memory network, which
//! stays reachable after shutdown through a `MemoryNetwork` handle.
//!
//! Loopback UDP can drop under pressure, so every exchange that must complete is
//! acknowledged and retransmitted by the endpoints themselves (or retried by the test
//! client) with bounded retries; tests wait on conditions with a deadline, never on time.

use std::collections::{BTreeSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearsay::runtime::{
    io_uring_support, BackendChoice, BackendKind, Endpoint, EndpointId, MemoryNetwork,
    MemorySocket, Runtime, RuntimeConfig, RuntimeError,
};

const PING: u8 = 1;
const PONG: u8 = 2;
const ECHO: u8 = 3;
const TAG: u8 = 5;
const PANIC: u8 = 0xFF;
const RETRANSMIT: Duration = Duration::from_millis(50);
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    received: AtomicU64,
    garbage: AtomicU64,
    dropped: AtomicU64,
    /// Input delays reported, and the longest, in microseconds.
    delays: AtomicU64,
    max_delay_us: AtomicU64,
}

type FiredLog = Arc<Mutex<Vec<(usize, Instant, Instant)>>>;

enum Cmd {
    /// Send `count` pings to `peer`, retransmitting until each is answered; with
    /// `forever`, answer every pong with a new ping.
    Start {
        peer: SocketAddr,
        count: u32,
        forever: bool,
    },
    /// Panic inside `handle_command`.
    Panic,
    /// Expect `handle_timeout` at each of these instants (sorted).
    Schedule(usize, Vec<Instant>, FiredLog),
    /// Send the tag to `to`, from this endpoint's socket.
    Tag(u64, SocketAddr),
    /// Block the shard for this long (datagrams queue in the sockets meanwhile).
    Stall(Duration),
}

struct TestEp {
    counters: Arc<Counters>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    peer: Option<SocketAddr>,
    pending: BTreeSet<u32>,
    next_seq: u32,
    forever: bool,
    retransmit_at: Option<Instant>,
    timers: VecDeque<Instant>,
    timer_owner: usize,
    fired: Option<FiredLog>,
}

impl TestEp {
    fn new(counters: Arc<Counters>) -> Self {
        TestEp {
            counters,
            out: VecDeque::new(),
            peer: None,
            pending: BTreeSet::new(),
            next_seq: 0,
            forever: false,
            retransmit_at: None,
            timers: VecDeque::new(),
            timer_owner: 0,
            fired: None,
        }
    }

    fn ping(&mut self, now: Instant) {
        let peer = self.peer.expect("peer set before pinging");
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq);
        self.out.push_back((peer, frame(PING, seq)));
        self.retransmit_at.get_or_insert(now + RETRANSMIT);
    }
}

fn frame(kind: u8, seq: u32) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&seq.to_le_bytes());
    v
}

impl Drop for TestEp {
    fn drop(&mut self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Endpoint for TestEp {
    type Command = Cmd;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let seq = data
            .get(1..5)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
        match (data.first().copied(), seq) {
            (Some(PING), Some(seq)) => self.out.push_back((from, frame(PONG, seq))),
            (Some(PONG), Some(seq)) => {
                if self.pending.remove(&seq) {
                    self.counters.acked.fetch_add(1, Ordering::Relaxed);
                    if self.forever {
                        self.ping(now);
                    }
                }
            }
            (Some(ECHO), _) => self.out.push_back((from, data.to_vec())),
            (Some(PANIC), _) => panic!("test endpoint told to panic by a datagram"),
            _ => {
                self.counters.garbage.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn handle_input_delay(&mut self, _now: Instant, delay: Duration) {
        self.counters.delays.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.counters.max_delay_us.fetch_max(us, Ordering::Relaxed);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.retransmit_at = None;
            if let Some(peer) = self.peer {
                for &seq in &self.pending {
                    self.out.push_back((peer, frame(PING, seq)));
                }
            }
            if !self.pending.is_empty() {
                self.retransmit_at = Some(now + RETRANSMIT);
            }
        }
        while self.timers.front().is_some_and(|&t| t <= now) {
            let t = self.timers.pop_front().unwrap();
            if let Some(log) = &self.fired {
                log.lock().unwrap().push((self.timer_owner, t, now));
            }
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Start {
                peer,
                count,
                forever,
            } => {
                self.peer = Some(peer);
                self.forever = forever;
                for _ in 0..count {
                    self.ping(now);
                }
            }
            Cmd::Panic => panic!("test endpoint told to panic by a command"),
            Cmd::Schedule(owner, at, log) => {
                self.timer_owner = owner;
                self.timers = at.into();
                self.fired = Some(log);
            }
            Cmd::Tag(tag, to) => {
                let mut v = vec![TAG];
                v.extend_from_slice(&tag.to_le_bytes());
                self.out.push_back((to, v));
            }
            Cmd::Stall(d) => std::thread::sleep(d),
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, data) = self.out.pop_front()?;
        buf.extend_from_slice(&data);
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.retransmit_at.filter(|_| !self.pending.is_empty());
        match (retransmit, self.timers.front().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

// ---------------------------------------------------------------- helpers

/// The suite's config for `backend`, or `None` (with a message) when it cannot run here.
fn config_for(backend: BackendChoice) -> Option<RuntimeConfig> {
    let config = RuntimeConfig {
        shards: 2,
        pin_threads: false,
        backend,
        ..RuntimeConfig::default()
    };
    if backend == BackendChoice::IoUring {
        if let Err(why) = io_uring_support(&config) {
            eprintln!("skipping io_uring transport test: {why}");
            return None;
        }
    }
    Some(config)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Hosted {
    rt: Runtime<TestEp>,
    ids: Vec<EndpointId>,
    addrs: Vec<SocketAddr>,
    counters: Vec<Arc<Counters>>,
}

fn host(config: RuntimeConfig, n: usize) -> Hosted {
    let rt = Runtime::start(config).expect("runtime starts");
    let mut hosted = Hosted {
        rt,
        ids: Vec::new(),
        addrs: Vec::new(),
        counters: Vec::new(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let tx = tx.clone();
        let id = hosted
            .rt
            .add_endpoint("127.0.0.1:0".parse().unwrap(), move |local| {
                tx.send((i, local)).unwrap();
                TestEp::new(c)
            })
            .expect("endpoint added");
        hosted.ids.push(id);
        hosted.counters.push(counters);
    }
    let mut addrs = vec![None; n];
    for _ in 0..n {
        let (i, local) = rx.recv_timeout(PATIENCE).expect("endpoint built");
        addrs[i] = Some(local);
    }
    hosted.addrs = addrs.into_iter().map(Option::unwrap).collect();
    hosted
}

/// The test's socket outside the runtime: a kernel UDP socket, or a socket on the memory
/// network when the runtime has one.
enum Client {
    Udp(UdpSocket),
    Memory(MemorySocket),
}

impl Client {
    /// Sends `count` copies of `buf` to `to` as fast as it can; returns how many the
    /// kernel took.
    fn burst(&self, buf: &[u8], to: SocketAddr, count: u64) -> u64 {
        (0..count).filter(|_| self.send_to(buf, to).is_ok()).count() as u64
    }

    fn send_to(&self, buf: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match self {
            Client::Udp(s) => s.send_to(buf, to),
            Client::Memory(s) => s.send_to(buf, to),
        }
    }

    fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            Client::Udp(s) => s.recv_from(buf),
            Client::Memory(s) => s.recv_from(buf),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Client::Udp(s) => s.local_addr().unwrap(),
            Client::Memory(s) => s.local_addr().unwrap(),
        }
    }
}

/// A client that can reach the endpoints of `rt`, with a 100 ms read timeout.
fn client<E: Endpoint>(rt: &Runtime<E>) -> Client {
    let timeout = Some(Duration::from_millis(100));
    match rt.memory_network() {
        Some(net) => {
            let s = net.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            s.set_read_timeout(timeout).unwrap();
            Client::Memory(s)
        }
        None => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(timeout).unwrap();
            Client::Udp(s)
        }
    }
}

/// Whether `addr` can be bound now: in the kernel, or in the memory network `net`.
fn can_bind(net: Option<&MemoryNetwork>, addr: SocketAddr) -> bool {
    match net {
        Some(net) => net.bind(addr).is_ok(),
        None => UdpSocket::bind(addr).is_ok(),
    }
}

/// An address nobody has bound (just released), where `rt`'s endpoints live.
fn unbound_addr<E: Endpoint>(rt: &Runtime<E>) -> SocketAddr {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    match rt.memory_network() {
        Some(net) => net.bind(any).unwrap().local_addr().unwrap(),
        None => UdpSocket::bind(any).unwrap().local_addr().unwrap(),
    }
}

/// Sends `msg` (an ECHO frame) to `to` until the same bytes come back from `to`.
fn echo(client: &Client, to: SocketAddr, msg: &[u8]) {
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
        client.send_to(msg, to).unwrap();
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            match client.recv_from(&mut buf) {
                Ok((n, from)) if from == to && &buf[..n] == msg => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    panic!("no echo from {to}");
}

fn echo_frame(seq: u32) -> Vec<u8> {
    frame(ECHO, seq)
}

// ---------------------------------------------------------------- the suite

fn exchange_between_many_endpoints(config: RuntimeConfig) {
    const N: usize = 200;
    const PINGS: u32 = 10;
    let h = host(config, N);
    for i in 0..N {
        let peer = h.addrs[(i + 1) % N];
        h.rt.command(
            h.ids[i],
            Cmd::Start {
                peer,
                count: PINGS,
                forever: false,
            },
        )
        .unwrap();
    }
    wait_until("every ping acknowledged", || {
        h.counters
            .iter()
            .all(|c| c.acked.load(Ordering::Relaxed) == u64::from(PINGS))
    });
    // Sends are counted when their completion is reaped, which may trail the peer's
    // receipt a little: await it.
    let want = 2 * N as u64 * u64::from(PINGS);
    wait_until("sends counted", || h.rt.stats().datagrams_out >= want);
    let stats = h.rt.stats();
    assert_eq!(stats.endpoints, N as u64);
    assert!(stats.datagrams_in >= want);
    assert_eq!(stats.panics, 0);
    assert!(h.ids.iter().any(|id| id.shard() == 0) && h.ids.iter().any(|id| id.shard() == 1));
    h.rt.shutdown().unwrap();
}

fn oversized_datagram_is_truncated_and_counted(config: RuntimeConfig) {
    let config = RuntimeConfig {
        max_datagram_size: 1400,
        ..config
    };
    let h = host(config, 1);
    let c = client(&h.rt);
    let mut big = vec![ECHO; 3000];
    big[1..5].copy_from_slice(&7u32.to_le_bytes());
    c.send_to(&big, h.addrs[0]).unwrap();
    // Exactly one byte over the limit is truncated too.
    c.send_to(&big[..1401], h.addrs[0]).unwrap();
    // A datagram of exactly the limit is delivered whole.
    echo(&c, h.addrs[0], &big[..1400]);
    wait_until("two truncations counted", || h.rt.stats().truncated == 2);
    echo(&c, h.addrs[0], &echo_frame(1));
    assert_eq!(h.rt.stats().panics, 0);
    h.rt.shutdown().unwrap();
}

fn burst_beyond_receive_buffers(config: RuntimeConfig) {
    let config = RuntimeConfig {
        recv_buffers: 8,
        socket_recv_buffer: Some(64 * 1024),
        ..config
    };
    let h = host(config, 1);
    let c = client(&h.rt);
    let sent = c.burst(&[0u8; 200], h.addrs[0], 20_000);
    // The socket is FIFO: once the marker comes back, every burst datagram before it was
    // either handled or dropped by the kernel.
    echo(&c, h.addrs[0], &echo_frame(99));
    let garbage = h.counters[0].garbage.load(Ordering::Relaxed);
    let dropped = sent - garbage;
    eprintln!(
        "burst: sent {sent}, handled {garbage}, dropped {dropped}, stats {:?}",
        h.rt.stats()
    );
    assert!(garbage <= sent);
    assert!(garbage > 0);
    assert_eq!(h.rt.stats().panics, 0);
    echo(&c, h.addrs[0], &echo_frame(100));
    h.rt.shutdown().unwrap();
}

fn garbage_is_delivered_as_bytes(config: RuntimeConfig) {
    let h = host(config, 1);
    let c = client(&h.rt);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut sent = 0u64;
    for i in 0..200usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 512) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
        if let Some(b) = bytes.first_mut() {
            *b = 0; // not a frame kind the endpoint acts on
        }
        c.send_to(&bytes, h.addrs[0]).unwrap();
        sent += 1;
        if i % 20 == 19 {
            echo(&c, h.addrs[0], &echo_frame(i as u32)); // pace, and prove liveness
        }
    }
    echo(&c, h.addrs[0], &echo_frame(1_000));
    let garbage = h.counters[0].garbage.load(Ordering::Relaxed);
    assert_eq!(
        garbage, sent,
        "every garbage datagram reached the endpoint as bytes"
    );
    assert_eq!(h.rt.stats().panics, 0);
    h.rt.shutdown().unwrap();
}

fn panicking_endpoint_is_contained(config: RuntimeConfig) {
    let h = host(config, 6);
    let c = client(&h.rt);
    h.rt.command(h.ids[1], Cmd::Panic).unwrap();
    c.send_to(&[PANIC], h.addrs[4]).unwrap();
    wait_until("two panics contained", || {
        let s = h.rt.stats();
        s.panics == 2 && s.endpoints == 4
    });
    assert_eq!(h.counters[1].dropped.load(Ordering::Relaxed), 1);
    assert_eq!(h.counters[4].dropped.load(Ordering::Relaxed), 1);
    for i in [0, 2, 3, 5] {
        echo(&c, h.addrs[i], &echo_frame(i as u32));
    }
    // The dead endpoints' sockets are closed: their ports can be bound again.
    let net = h.rt.memory_network();
    for i in [1, 4] {
        wait_until("port released", || can_bind(net.as_ref(), h.addrs[i]));
    }
    // Commands to a dead endpoint are dropped and counted.
    h.rt.command(h.ids[1], Cmd::Panic).unwrap();
    wait_until("dropped command counted", || {
        h.rt.stats().commands_dropped == 1
    });
    assert_eq!(h.rt.stats().panics, 2);
    h.rt.shutdown().unwrap();
}

fn timers_fire_at_or_after_deadline_in_order(config: RuntimeConfig) {
    const N: usize = 100;
    const EACH: usize = 5;
    let h = host(config, N);
    let log: FiredLog = Arc::default();
    let start = Instant::now();
    let mut expected = Vec::new();
    for i in 0..N {
        let mut at: Vec<Instant> = (0..EACH)
            .map(|k| start + Duration::from_millis(((i * 7 + k * 31) % 150) as u64 + 1))
            .collect();
        at.sort();
        expected.push(at.clone());
        h.rt.command(h.ids[i], Cmd::Schedule(i, at, Arc::clone(&log)))
            .unwrap();
    }
    wait_until("every timer fired", || {
        log.lock().unwrap().len() == N * EACH
    });
    let log = log.lock().unwrap();
    for (i, want) in expected.iter().enumerate() {
        let got: Vec<_> = log.iter().filter(|(owner, _, _)| *owner == i).collect();
        let deadlines: Vec<Instant> = got.iter().map(|(_, t, _)| *t).collect();
        assert_eq!(&deadlines, want, "endpoint {i} fired in order");
        for (_, t, now) in got {
            assert!(now >= t, "fired before its deadline");
        }
    }
    drop(log);
    h.rt.shutdown().unwrap();
}

fn commands_reach_the_right_endpoint(config: RuntimeConfig) {
    const N: usize = 8;
    let h = host(config, N);
    let c = client(&h.rt);
    let me = c.local_addr();
    let mut buf = [0u8; 64];
    for round in 0..3u64 {
        let mut seen = BTreeSet::new();
        for _attempt in 0..50 {
            for (i, id) in h.ids.iter().enumerate() {
                if !seen.contains(&i) {
                    h.rt.command(*id, Cmd::Tag(round * 100 + i as u64, me))
                        .unwrap();
                }
            }
            let until = Instant::now() + Duration::from_millis(300);
            while seen.len() < N && Instant::now() < until {
                if let Ok((n, from)) = c.recv_from(&mut buf) {
                    if n == 9 && buf[0] == TAG {
                        let tag = u64::from_le_bytes(buf[1..9].try_into().unwrap());
                        let i = (tag - round * 100) as usize;
                        assert_eq!(from, h.addrs[i], "tag {tag} sent by its own endpoint");
                        seen.insert(i);
                    }
                }
            }
            if seen.len() == N {
                break;
            }
        }
        assert_eq!(seen.len(), N);
    }
    assert!(h.rt.stats().commands >= (3 * N) as u64);
    h.rt.shutdown().unwrap();
}

fn shutdown_while_busy(config: RuntimeConfig) {
    const N: usize = 40;
    let h = host(config, N);
    for i in 0..N {
        let peer = h.addrs[(i + 7) % N];
        h.rt.command(
            h.ids[i],
            Cmd::Start {
                peer,
                count: 4,
                forever: true,
            },
        )
        .unwrap();
    }
    wait_until("traffic flowing", || {
        h.counters
            .iter()
            .map(|c| c.acked.load(Ordering::Relaxed))
            .sum::<u64>()
            > 2_000
    });
    let Hosted {
        rt,
        addrs,
        counters,
        ..
    } = h;
    let net = rt.memory_network();
    rt.shutdown().unwrap();
    // Every endpoint was dropped by its (joined) shard...
    for c in &counters {
        assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
    }
    // ...and every socket is closed.
    for addr in addrs {
        wait_until("port released", || can_bind(net.as_ref(), addr));
    }
}

fn drop_shuts_down(config: RuntimeConfig) {
    let h = host(config, 4);
    let Hosted {
        rt,
        addrs,
        counters,
        ..
    } = h;
    let net = rt.memory_network();
    drop(rt);
    assert!(counters
        .iter()
        .all(|c| c.dropped.load(Ordering::Relaxed) == 1));
    for addr in addrs {
        assert!(can_bind(net.as_ref(), addr), "socket {addr} closed by drop");
    }
}

fn duplicate_bind_is_refused(config: RuntimeConfig) {
    let h = host(config, 1);
    let taken = h.addrs[0];
    let err =
        h.rt.add_endpoint(taken, |_| TestEp::new(Arc::default()))
            .expect_err("address already bound");
    match &err {
        RuntimeError::Bind { addr, source } => {
            assert_eq!(*addr, taken);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    // The first endpoint is untouched.
    let c = client(&h.rt);
    echo(&c, taken, &echo_frame(3));
    assert_eq!(h.rt.stats().endpoints, 1);
    h.rt.shutdown().unwrap();
}

fn datagram_to_unbound_address_is_dropped(config: RuntimeConfig) {
    let memory = config.backend == BackendChoice::Memory;
    let h = host(config, 1);
    let nobody = unbound_addr(&h.rt);
    h.rt.command(h.ids[0], Cmd::Tag(1, nobody)).unwrap();
    if memory {
        // The memory network sees that nobody is there, drops and counts.
        wait_until("unroutable counted", || h.rt.stats().unroutable == 1);
        assert_eq!(h.rt.stats().datagrams_out, 0);
    } else {
        // The kernel accepts the datagram and drops it unseen.
        wait_until("send accepted", || h.rt.stats().datagrams_out == 1);
        assert_eq!(h.rt.stats().unroutable, 0);
    }
    assert_eq!(h.rt.stats().send_errors, 0);
    let c = client(&h.rt);
    echo(&c, h.addrs[0], &echo_frame(4));
    h.rt.shutdown().unwrap();
}

fn datagrams_sent_while_the_endpoint_starts_are_kept(config: RuntimeConfig) {
    const EARLY: u64 = 20;
    let rt: Runtime<TestEp> = Runtime::start(config).unwrap();
    let c = client(&rt);
    let counters = Arc::new(Counters::default());
    for round in 0..5u32 {
        // A fixed address, so the client can send before the endpoint reports it. (On
        // the kernel backends another test may take the just-released port: try again.)
        let addr = loop {
            let addr = unbound_addr(&rt);
            let c2 = Arc::clone(&counters);
            match rt.add_endpoint(addr, move |_| TestEp::new(c2)) {
                Ok(_) => break addr,
                Err(RuntimeError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => panic!("cannot add endpoint: {e}"),
            }
        };
        for _ in 0..EARLY {
            c.send_to(&[0, 1, 2], addr).unwrap();
        }
        echo(&c, addr, &echo_frame(round));
        let want = EARLY * u64::from(round + 1);
        assert_eq!(
            counters.garbage.load(Ordering::Relaxed),
            want,
            "round {round}"
        );
    }
    rt.shutdown().unwrap();
}

fn reuseport_spreads_one_port_over_shards(config: RuntimeConfig) {
    let rt: Runtime<TestEp> = Runtime::start(config).unwrap();
    let counters = Arc::new(Counters::default());
    let c2 = Arc::clone(&counters);
    let ids = rt
        .add_reuseport("127.0.0.1:0".parse().unwrap(), move |_shard, _local| {
            TestEp::new(Arc::clone(&c2))
        })
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].shard(), 0);
    assert_eq!(ids[1].shard(), 1);
    wait_until("both instances up", || rt.stats().endpoints == 2);
    // Find the port: tag from one instance to a client.
    let c = client(&rt);
    rt.command(ids[0], Cmd::Tag(1, c.local_addr())).unwrap();
    let mut buf = [0u8; 64];
    let mut port_addr = None;
    wait_until("tag", || {
        if let Ok((_, from)) = c.recv_from(&mut buf) {
            port_addr = Some(from);
        }
        port_addr.is_some()
    });
    echo(&c, port_addr.unwrap(), &echo_frame(5));
    rt.shutdown().unwrap();
}

macro_rules! suite {
    ($module:ident, $backend:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    if let Some(config) = super::config_for($backend) {
                        super::$test(config);
                    }
                }
            )*
        }
    };
}

macro_rules! suites {
    ($($test:ident),* $(,)?) => {
        suite!(portable, hearsay::runtime::BackendChoice::Portable, [$($test),*]);
        suite!(io_uring, hearsay::runtime::BackendChoice::IoUring, [$($test),*]);
        suite!(memory, hearsay::runtime::BackendChoice::Memory, [$($test),*]);
    };
}

/// Datagrams that wait in a socket while its shard is busy are reported with at least
/// that wait on kernel sockets (receive timestamps); the memory backend has no kernel
/// queue and reports none.
fn input_delay_is_reported(config: RuntimeConfig) {
    let memory = config.backend == BackendChoice::Memory;
    let h = host(config, 1);
    let c = client(&h.rt);
    echo(&c, h.addrs[0], &echo_frame(1));
    let before = h.counters[0].delays.load(Ordering::Relaxed);
    h.rt.command(h.ids[0], Cmd::Stall(Duration::from_millis(300)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let sent = c.burst(&[0u8; 100], h.addrs[0], 10);
    assert_eq!(sent, 10);
    wait_until("the burst to be read", || {
        h.counters[0].garbage.load(Ordering::Relaxed) >= 10
    });
    let delays = h.counters[0].delays.load(Ordering::Relaxed);
    let max = Duration::from_micros(h.counters[0].max_delay_us.load(Ordering::Relaxed));
    if memory {
        assert_eq!(delays, 0, "the memory backend reported input delays");
    } else {
        assert!(
            delays >= before + 10,
            "{} of 10 datagrams came with a delay",
            delays - before
        );
        // Sent about 50 ms into a 300 ms stall: each waited about 250 ms.
        assert!(
            max >= Duration::from_millis(150),
            "longest reported delay {max:?}"
        );
        assert!(max < PATIENCE, "implausible delay {max:?}");
    }
    h.rt.shutdown().unwrap();
}

suites!(
    input_delay_is_reported,
    exchange_between_many_endpoints,
    oversized_datagram_is_truncated_and_counted,
    burst_beyond_receive_buffers,
    garbage_is_delivered_as_bytes,
    panicking_endpoint_is_contained,
    timers_fire_at_or_after_deadline_in_order,
    commands_reach_the_right_endpoint,
    shutdown_while_busy,
    drop_shuts_down,
    reuseport_spreads_one_port_over_shards,
    duplicate_bind_is_refused,
    datagram_to_unbound_address_is_dropped,
    datagrams_sent_while_the_endpoint_starts_are_kept,
);

/// io_uring: a socket whose multishot receive delivers a full batch in one reap is also
/// read directly, so a burst queued on one socket is taken in one go rather than a batch
/// per shard iteration; everything arrives once.
#[test]
fn io_uring_reads_a_busy_socket_directly_as_well() {
    let Some(config) = config_for(BackendChoice::IoUring) else {
        return;
    };
    let h = host(
        RuntimeConfig {
            socket_recv_buffer: Some(4 << 20),
            ..config
        },
        1,
    );
    let c = client(&h.rt);
    // The burst queues on the socket while the shard is stalled, as it does while a
    // saturated shard serves thousands of other sockets.
    h.rt.command(h.ids[0], Cmd::Stall(Duration::from_millis(300)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let sent = c.burst(&[0u8; 100], h.addrs[0], 2_000);
    echo(&c, h.addrs[0], &echo_frame(7));
    let garbage = h.counters[0].garbage.load(Ordering::Relaxed);
    let stats = h.rt.stats();
    assert!(
        garbage <= sent,
        "a datagram was delivered twice: {garbage} of {sent}"
    );
    assert!(
        stats.hot_reads > 0,
        "the busy socket was not read directly: {stats:?}"
    );
    assert_eq!(stats.panics, 0);
    h.rt.shutdown().unwrap();
}

/// Throughput by hand, not a test of speed: `cargo test --release -p hearsay --test
/// transport -- --ignored --nocapture throughput`. 64 endpoints on 2 shards, each keeping
/// 32 pings in flight to a peer, for 3 s per backend (the memory backend shows the
/// runtime's cost without the kernel's).
#[test]
#[ignore = "measurement, run by hand"]
fn throughput_by_hand() {
    for backend in [
        BackendChoice::Portable,
        BackendChoice::IoUring,
        BackendChoice::Memory,
    ] {
        let Some(config) = config_for(backend) else {
            continue;
        };
        const N: usize = 64;
        let h = host(
            RuntimeConfig {
                pin_threads: true,
                ..config
            },
            N,
        );
        for i in 0..N {
            let peer = h.addrs[(i + 1) % N];
            h.rt.command(
                h.ids[i],
                Cmd::Start {
                    peer,
                    count: 32,
                    forever: true,
                },
            )
            .unwrap();
        }
        wait_until("warm-up", || h.rt.stats().datagrams_in > 50_000);
        let (s0, t0) = (h.rt.stats(), Instant::now());
        std::thread::sleep(Duration::from_secs(3));
        let (s1, t1) = (h.rt.stats(), Instant::now());
        let secs = (t1 - t0).as_secs_f64();
        eprintln!(
            "{}: {:.0} datagrams/s received, {:.0} sent, {} send errors, {} exhausted",
            h.rt.backend(),
            (s1.datagrams_in - s0.datagrams_in) as f64 / secs,
            (s1.datagrams_out - s0.datagrams_out) as f64 / secs,
            s1.send_errors - s0.send_errors,
            s1.recv_buffers_exhausted - s0.recv_buffers_exhausted,
        );
        h.rt.shutdown().unwrap();
    }
}

#[test]
fn auto_reports_its_backend() {
    let rt: Runtime<TestEp> = Runtime::start(RuntimeConfig {
        shards: 1,
        pin_threads: false,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let info = rt.backend().clone();
    eprintln!("auto backend: {info}");
    match io_uring_support(rt.config()) {
        Ok(()) => assert_eq!(info.kind, BackendKind::IoUring),
        Err(_) => {
            assert_eq!(info.kind, BackendKind::Portable);
            assert!(info.fallback_reason.is_some());
        }
    }
    rt.shutdown().unwrap();
}

#[test]
fn invalid_config_names_the_field() {
    let err = Runtime::<TestEp>::start(RuntimeConfig {
        max_datagram_size: 70_000,
        ..RuntimeConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        RuntimeError::InvalidConfig {
            field: "max_datagram_size",
            ..
        }
    ));
    assert!(err.to_string().contains("max_datagram_size"));
}

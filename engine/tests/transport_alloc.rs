//! Steady-state ping-pong through the runtime does not allocate per datagram: a counting
//! global allocator (all threads) watches 10 000 datagrams after warm-up, on every
//! backend this machine can run (the memory backend included: its datagram buffers come
//! from pools and its queues are preallocated). The two endpoints sit on different
//! shards, so every datagram crosses threads. One test in this binary, so nothing else
//! allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearsay::runtime::{io_uring_support, BackendChoice, Endpoint, Runtime, RuntimeConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is a static atomic, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, under the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (via `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged under the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Ping-pong without heap use: one frame in flight, fixed-size state.
struct PingPong {
    peer: Option<SocketAddr>,
    seq: u32,
    out: Option<(SocketAddr, [u8; 5])>,
    retransmit_at: Option<Instant>,
    round_trips: Arc<AtomicU64>,
}

impl Endpoint for PingPong {
    type Command = SocketAddr;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        if data.len() != 5 {
            return;
        }
        let seq = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
        match data[0] {
            1 => {
                data[0] = 2;
                self.out = Some((from, [data[0], data[1], data[2], data[3], data[4]]));
            }
            2 if self.peer == Some(from) && seq == self.seq => {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                self.seq += 1;
                self.send_ping(now);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.send_ping(now);
        }
    }

    fn handle_command(&mut self, now: Instant, peer: SocketAddr) {
        self.peer = Some(peer);
        self.send_ping(now);
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, frame) = self.out.take()?;
        buf.extend_from_slice(&frame);
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.retransmit_at
    }
}

impl PingPong {
    fn send_ping(&mut self, now: Instant) {
        let Some(peer) = self.peer else { return };
        let s = self.seq.to_le_bytes();
        self.out = Some((peer, [1, s[0], s[1], s[2], s[3]]));
        self.retransmit_at = Some(now + Duration::from_millis(20));
    }
}

/// One-way traffic: a sender emits bursts of 64 datagrams to a receiver that never
/// answers, so every buffer ends on the receiving shard (the memory backend must hand
/// buffers back through its shared pool instead of allocating on the sending side).
/// A burst starts only once the previous one has arrived (read from the shared counter),
/// so the datagrams in flight stay bounded: any pool grows to the most datagrams ever in
/// flight, and without this bound a scheduling stall of the receiver on a loaded machine
/// would show up as (one-off) allocations.
struct Stream {
    to: Option<SocketAddr>,
    next_burst: Option<Instant>,
    pending: u32,
    sent: u64,
    received: Arc<AtomicU64>,
}

impl Endpoint for Stream {
    type Command = SocketAddr;

    fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, _data: &mut [u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.next_burst.is_some_and(|t| t <= now) {
            if self.received.load(Ordering::Relaxed) + 16 >= self.sent {
                self.pending = 64;
                self.sent += 64;
            }
            self.next_burst = Some(now + Duration::from_millis(1));
        }
    }

    fn handle_command(&mut self, now: Instant, to: SocketAddr) {
        self.to = Some(to);
        self.next_burst = Some(now);
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = self.to.filter(|_| self.pending > 0)?;
        self.pending -= 1;
        buf.extend_from_slice(&[7; 5]);
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_burst
    }
}

fn wait_for(counter: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "ping-pong stalled");
        std::thread::yield_now();
    }
}

fn allocations_per_10k_datagrams(backend: BackendChoice) -> u64 {
    let rt = Runtime::start(RuntimeConfig {
        shards: 2,
        pin_threads: false,
        backend,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let round_trips = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ids = Vec::new();
    for i in 0..2usize {
        let rt2 = Arc::clone(&round_trips);
        let tx = tx.clone();
        let id = rt
            .add_endpoint("127.0.0.1:0".parse().unwrap(), move |local| {
                tx.send((i, local)).unwrap();
                PingPong {
                    peer: None,
                    seq: 0,
                    out: None,
                    retransmit_at: None,
                    round_trips: rt2,
                }
            })
            .unwrap();
        ids.push(id);
    }
    let mut addrs = [None; 2];
    for _ in 0..2 {
        let (i, local) = rx.recv().unwrap();
        addrs[i] = Some(local);
    }
    rt.command(ids[0], addrs[1].unwrap()).unwrap();

    wait_for(&round_trips, 2_000);
    let before = ALLOCS.load(Ordering::Relaxed);
    let start = round_trips.load(Ordering::Relaxed);
    wait_for(&round_trips, start + 5_000); // 10 000 datagrams
    let allocations = ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!(
        "{backend:?} ({}): {allocations} allocations over 10k datagrams",
        rt.backend()
    );
    rt.shutdown().unwrap();
    allocations
}

fn allocations_per_10k_one_way_datagrams(backend: BackendChoice) -> u64 {
    let rt = Runtime::start(RuntimeConfig {
        shards: 2,
        pin_threads: false,
        backend,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ids = Vec::new();
    for i in 0..2usize {
        let received = Arc::clone(&received);
        let tx = tx.clone();
        let id = rt
            .add_endpoint("127.0.0.1:0".parse().unwrap(), move |local| {
                tx.send((i, local)).unwrap();
                Stream {
                    to: None,
                    next_burst: None,
                    pending: 0,
                    sent: 0,
                    received,
                }
            })
            .unwrap();
        ids.push(id);
    }
    let mut addrs = [None; 2];
    for _ in 0..2 {
        let (i, local) = rx.recv().unwrap();
        addrs[i] = Some(local);
    }
    rt.command(ids[0], addrs[1].unwrap()).unwrap();

    // Long enough for the receiver's local pool to fill and overflow into the shared one.
    wait_for(&received, 5_000);
    let before = ALLOCS.load(Ordering::Relaxed);
    let start = received.load(Ordering::Relaxed);
    wait_for(&received, start + 10_000);
    let allocations = ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!("{backend:?} one-way: {allocations} allocations over 10k datagrams");
    rt.shutdown().unwrap();
    allocations
}

#[test]
fn steady_state_ping_pong_does_not_allocate_per_datagram() {
    let mut backends = vec![BackendChoice::Portable, BackendChoice::Memory];
    match io_uring_support(&RuntimeConfig::default()) {
        Ok(()) => backends.push(BackendChoice::IoUring),
        Err(why) => eprintln!("skipping io_uring: {why}"),
    }
    for backend in backends {
        let allocations = allocations_per_10k_datagrams(backend);
        assert!(
            allocations <= 32,
            "{backend:?}: {allocations} allocations over 10k datagrams"
        );
        let allocations = allocations_per_10k_one_way_datagrams(backend);
        assert!(
            allocations <= 32,
            "{backend:?} one-way: {allocations} allocations over 10k datagrams"
        );
    }
}

//! One shard: the loop of a thread that owns a driver, sockets and endpoints.
//!
//! Everything here is backend-independent and safe code: endpoint slab, timer heap with
//! lazy invalidation, command queue, panic containment and the transmit drain.
#![deny(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::backend::memory::{MemoryDriver, Network};
use super::backend::portable::PortableDriver;
use super::backend::uring::UringDriver;
use super::backend::{BoundSocket, Driver, Sink, SlotKey, GENERATION_MASK};
use super::stats::ShardStats;
use super::wake::Waker;
use super::{BackendKind, Endpoint, RuntimeConfig};

/// Datagrams drained from one endpoint's `poll_transmit` per iteration before the shard
/// serves others; the endpoint stays scheduled.
const TRANSMIT_BUDGET: usize = 1024;
/// Queue messages handled per iteration before I/O is served again.
const COMMAND_BUDGET: usize = 4096;

/// What other threads send a shard.
pub(crate) enum Msg<E: Endpoint> {
    /// Host a new endpoint on an already bound socket.
    Add {
        key: u64,
        socket: BoundSocket,
        local: SocketAddr,
        make: Box<dyn FnOnce(SocketAddr) -> E + Send>,
    },
    /// Deliver a command.
    Command { key: u64, cmd: E::Command },
    /// Flush, close every socket and exit.
    Shutdown,
}

/// The part of a shard other threads see.
pub(crate) struct Shared<E: Endpoint> {
    queue: SegQueue<Msg<E>>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) stats: Arc<ShardStats>,
}

impl<E: Endpoint> Shared<E> {
    pub(crate) fn new(waker: Waker) -> Self {
        Shared {
            queue: SegQueue::new(),
            waker: Arc::new(waker),
            stats: Arc::new(ShardStats::default()),
        }
    }

    pub(crate) fn push(&self, msg: Msg<E>) {
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.queue.push(msg);
        self.waker.wake();
    }

    fn pop(&self) -> Option<Msg<E>> {
        let msg = self.queue.pop()?;
        self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
        Some(msg)
    }
}

/// The shard thread's body: sets up the backend, reports readiness, runs until shutdown.
pub(crate) fn run<E: Endpoint>(
    index: usize,
    kind: BackendKind,
    config: &RuntimeConfig,
    memory: Option<Arc<Network>>,
    shared: &Arc<Shared<E>>,
    ready: Sender<(usize, std::io::Result<()>)>,
) {
    let stats = Arc::clone(&shared.stats);
    let waker = Arc::clone(&shared.waker);
    match (kind, memory) {
        (BackendKind::IoUring, _) => serve(index, config, shared, ready, || {
            UringDriver::new(config, stats, waker)
        }),
        (BackendKind::Portable, _) => serve(index, config, shared, ready, || {
            PortableDriver::new(config.max_datagram_size, stats, waker)
        }),
        (BackendKind::Memory, Some(net)) => serve(index, config, shared, ready, || {
            MemoryDriver::new(net, index, stats, waker)
        }),
        (BackendKind::Memory, None) => {
            let missing = std::io::Error::other("memory backend without a network");
            let _ = ready.send((index, Err(missing)));
        }
    }
}

/// Builds the driver on this thread (drivers hold raw pointers and stay on their shard),
/// reports the outcome, then runs the shard until shutdown.
fn serve<E: Endpoint, D: Driver>(
    index: usize,
    config: &RuntimeConfig,
    shared: &Arc<Shared<E>>,
    ready: Sender<(usize, std::io::Result<()>)>,
    make: impl FnOnce() -> std::io::Result<D>,
) {
    match make() {
        Ok(driver) => {
            let _ = ready.send((index, Ok(())));
            drop(ready);
            Core::new(index, config, shared).run(driver);
        }
        Err(e) => {
            let _ = ready.send((index, Err(e)));
        }
    }
}

struct Slot<E> {
    endpoint: E,
    key: u64,
    generation: u32,
    deadline: Option<Instant>,
    scheduled: bool,
    alive: bool,
}

/// The backend-independent state of a shard.
struct Core<'a, E: Endpoint> {
    index: usize,
    shared: &'a Shared<E>,
    stats: Arc<ShardStats>,
    max_datagram: usize,
    slots: Vec<Option<Slot<E>>>,
    free: Vec<u32>,
    by_key: HashMap<u64, u32>,
    next_generation: u32,
    live: usize,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Endpoints that got an input since their last transmit drain.
    scheduled: Vec<u32>,
    scheduled_spare: Vec<u32>,
    /// Endpoints that panicked; their sockets are removed after the current poll.
    dead: Vec<SlotKey>,
}

impl<'a, E: Endpoint> Core<'a, E> {
    fn new(index: usize, config: &RuntimeConfig, shared: &'a Shared<E>) -> Self {
        Core {
            index,
            shared,
            stats: Arc::clone(&shared.stats),
            max_datagram: config.max_datagram_size,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            next_generation: 0,
            live: 0,
            timers: BinaryHeap::new(),
            scheduled: Vec::new(),
            scheduled_spare: Vec::new(),
            dead: Vec::new(),
        }
    }

    fn run<D: Driver>(mut self, mut driver: D) {
        loop {
            let deadline = if self.scheduled.is_empty() && self.shared.queue.is_empty() {
                self.timers.peek().map(|Reverse((t, _, _))| *t)
            } else {
                Some(Instant::now())
            };
            if let Err(e) = driver.poll(deadline, &mut self) {
                ShardStats::add(&self.stats.recv_errors, 1);
                tracing::error!("shard {}: backend wait failed: {e}", self.index);
            }
            self.reap(&mut driver);
            let now = Instant::now();
            self.run_timers(now);
            let stop = self.drain_queue(now, &mut driver);
            self.transmit(now, &mut driver);
            self.reap(&mut driver);
            if stop {
                break;
            }
            driver.flush();
        }
        driver.flush();
        driver.close();
        for slot in self.slots.drain(..).flatten() {
            let endpoint = slot.endpoint;
            let _ = catch_unwind(AssertUnwindSafe(move || drop(endpoint)));
        }
        self.stats.endpoints.store(0, Ordering::Relaxed);
        // Anything queued after the shutdown message is dropped with the queue.
        while self.shared.pop().is_some() {}
    }

    fn live_slot(slots: &mut [Option<Slot<E>>], key: SlotKey) -> Option<&mut Slot<E>> {
        slots
            .get_mut(key.slot as usize)?
            .as_mut()
            .filter(|s| s.alive && s.generation == key.generation)
    }

    fn schedule(&mut self, slot: u32) {
        if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
            if !s.scheduled {
                s.scheduled = true;
                self.scheduled.push(slot);
            }
        }
    }

    /// Marks the endpoint in `slot` dead after a panic in one of its callbacks.
    fn contain_panic(&mut self, slot: u32, what: &str) {
        if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
            if s.alive {
                s.alive = false;
                ShardStats::add(&self.stats.panics, 1);
                tracing::error!(
                    "shard {}: endpoint {} panicked in {what}; removed and its socket closed",
                    self.index,
                    s.key
                );
                self.dead.push(SlotKey {
                    slot,
                    generation: s.generation,
                });
            }
        }
    }

    fn reap<D: Driver>(&mut self, driver: &mut D) {
        while let Some(key) = self.dead.pop() {
            driver.remove_socket(key);
            if let Some(slot) = self.slots[key.slot as usize].take() {
                self.by_key.remove(&slot.key);
                self.free.push(key.slot);
                self.live -= 1;
                self.stats
                    .endpoints
                    .store(self.live as u64, Ordering::Relaxed);
                let endpoint = slot.endpoint;
                if catch_unwind(AssertUnwindSafe(move || drop(endpoint))).is_err() {
                    ShardStats::add(&self.stats.panics, 1);
                }
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let key = SlotKey { slot, generation };
            let Some(s) = Self::live_slot(&mut self.slots, key) else {
                continue;
            };
            // Lazy invalidation: only the endpoint's current deadline fires.
            if s.deadline != Some(at) {
                continue;
            }
            s.deadline = None;
            let result = catch_unwind(AssertUnwindSafe(|| s.endpoint.handle_timeout(now)));
            ShardStats::add(&self.stats.timeouts, 1);
            match result {
                Ok(()) => self.schedule(slot),
                Err(_) => self.contain_panic(slot, "handle_timeout"),
            }
        }
        // Endpoints that move their deadline often leave stale entries behind: rebuild
        // in place (no allocation) when they dominate.
        if self.timers.len() > 4 * self.live + 1024 {
            let mut entries = std::mem::take(&mut self.timers).into_vec();
            entries.clear();
            for (slot, s) in self.slots.iter().enumerate() {
                if let Some(s) = s.as_ref().filter(|s| s.alive) {
                    if let Some(at) = s.deadline {
                        entries.push(Reverse((at, slot as u32, s.generation)));
                    }
                }
            }
            self.timers = BinaryHeap::from(entries);
        }
    }

    /// Handles queued messages; returns true on shutdown.
    fn drain_queue<D: Driver>(&mut self, now: Instant, driver: &mut D) -> bool {
        for _ in 0..COMMAND_BUDGET {
            let Some(msg) = self.shared.pop() else { break };
            match msg {
                Msg::Shutdown => return true,
                Msg::Add {
                    key,
                    socket,
                    local,
                    make,
                } => self.add(now, key, socket, local, make, driver),
                Msg::Command { key, cmd } => {
                    let slot = self.by_key.get(&key).copied();
                    let alive = slot.and_then(|slot| {
                        self.slots[slot as usize]
                            .as_mut()
                            .filter(|s| s.alive)
                            .map(|s| (slot, s))
                    });
                    match alive {
                        Some((slot, s)) => {
                            let result = catch_unwind(AssertUnwindSafe(|| {
                                s.endpoint.handle_command(now, cmd);
                            }));
                            ShardStats::add(&self.stats.commands, 1);
                            match result {
                                Ok(()) => self.schedule(slot),
                                Err(_) => self.contain_panic(slot, "handle_command"),
                            }
                        }
                        None => ShardStats::add(&self.stats.commands_dropped, 1),
                    }
                }
            }
        }
        false
    }

    fn add<D: Driver>(
        &mut self,
        _now: Instant,
        key: u64,
        socket: BoundSocket,
        local: SocketAddr,
        make: Box<dyn FnOnce(SocketAddr) -> E + Send>,
        driver: &mut D,
    ) {
        let endpoint = match catch_unwind(AssertUnwindSafe(move || make(local))) {
            Ok(endpoint) => endpoint,
            Err(_) => {
                ShardStats::add(&self.stats.panics, 1);
                tracing::error!(
                    "shard {}: endpoint {key} panicked while being built",
                    self.index
                );
                return;
            }
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let generation = self.next_generation;
        if let Err(e) = driver.add_socket(SlotKey { slot, generation }, socket) {
            tracing::error!("shard {}: cannot receive on {local}: {e}", self.index);
            ShardStats::add(&self.stats.recv_errors, 1);
            self.free.push(slot);
            return;
        }
        self.slots[slot as usize] = Some(Slot {
            endpoint,
            key,
            generation,
            deadline: None,
            scheduled: false,
            alive: true,
        });
        self.by_key.insert(key, slot);
        self.live += 1;
        self.stats
            .endpoints
            .store(self.live as u64, Ordering::Relaxed);
        self.schedule(slot);
    }

    /// Drains `poll_transmit` of every scheduled endpoint and refreshes its deadline.
    fn transmit<D: Driver>(&mut self, now: Instant, driver: &mut D) {
        std::mem::swap(&mut self.scheduled, &mut self.scheduled_spare);
        for i in 0..self.scheduled_spare.len() {
            let slot = self.scheduled_spare[i];
            let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            s.scheduled = false;
            if !s.alive {
                continue;
            }
            let key = SlotKey {
                slot,
                generation: s.generation,
            };
            let mut panicked = None;
            let mut exhausted = true;
            for _ in 0..TRANSMIT_BUDGET {
                let mut buf = driver.buffer();
                match catch_unwind(AssertUnwindSafe(|| s.endpoint.poll_transmit(now, &mut buf))) {
                    Ok(Some(to)) if buf.len() <= self.max_datagram => driver.send(key, to, buf),
                    Ok(Some(_)) => {
                        ShardStats::add(&self.stats.send_errors, 1);
                        driver.recycle(buf);
                    }
                    Ok(None) => {
                        driver.recycle(buf);
                        exhausted = false;
                        break;
                    }
                    Err(_) => {
                        driver.recycle(buf);
                        panicked = Some("poll_transmit");
                        exhausted = false;
                        break;
                    }
                }
            }
            if panicked.is_none() {
                match catch_unwind(AssertUnwindSafe(|| s.endpoint.poll_timeout())) {
                    Ok(deadline) => {
                        if deadline != s.deadline {
                            s.deadline = deadline;
                            if let Some(at) = deadline {
                                self.timers.push(Reverse((at, slot, s.generation)));
                            }
                        }
                    }
                    Err(_) => panicked = Some("poll_timeout"),
                }
            }
            match panicked {
                Some(what) => self.contain_panic(slot, what),
                None if exhausted => self.schedule(slot),
                None => {}
            }
        }
        self.scheduled_spare.clear();
    }
}

impl<E: Endpoint> Sink for Core<'_, E> {
    fn datagram(
        &mut self,
        now: Instant,
        key: SlotKey,
        from: SocketAddr,
        data: &mut [u8],
        waited: Option<Duration>,
    ) {
        let Some(s) = Self::live_slot(&mut self.slots, key) else {
            return;
        };
        ShardStats::add(&self.stats.datagrams_in, 1);
        ShardStats::add(&self.stats.bytes_in, data.len() as u64);
        match catch_unwind(AssertUnwindSafe(|| {
            if let Some(delay) = waited {
                s.endpoint.handle_input_delay(now, delay);
            }
            s.endpoint.handle_datagram(now, from, data)
        })) {
            Ok(()) => self.schedule(key.slot),
            Err(_) => self.contain_panic(key.slot, "handle_datagram"),
        }
    }
}

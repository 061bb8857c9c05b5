//! Memory backend: the same shards, endpoints, timers, commands and stats as the kernel
//! backends, but datagrams travel through in-process lock-free queues instead of sockets.
//! What it models is documented on [`MemoryNetwork`], the public face of a runtime's
//! network.
//!
//! Shape: a [`Network`] per runtime holds two port tables (one per loopback host) of
//! `arc-swap` cells naming who receives on each port, one inbox per shard (a bounded
//! crossbeam `ArrayQueue`) and a shared buffer pool. A [`Binding`] is a bound address and
//! releases it when dropped; it travels to the shard inside `Msg::Add` like a kernel
//! socket does. A [`MemoryDriver`] delivers its shard's inbox to the endpoints, by
//! destination address, and posts their sends into other inboxes. Safe code only.
#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{BoundSocket, Driver, Sink, SlotKey};
use crate::runtime::stats::{ShardStats, Stats};
use crate::runtime::wake::Waker;
use crate::runtime::{RuntimeConfig, MAX_UDP_PAYLOAD};

const WAKE: Token = Token(0);
const PORTS: usize = 1 << 16;
/// Port 0 allocates from here up, wrapping; the ports below are only bound by number.
const FIRST_FREE_PORT: u16 = 1024;
/// Inbox capacity per configured receive buffer.
const INBOX_PER_RECV_BUFFER: usize = 16;
const MAX_INBOX: usize = 1 << 16;
/// Datagrams taken from the inbox per shard iteration, so timers and commands stay served.
const INBOX_BUDGET: usize = 1024;
/// Datagrams held for addresses whose endpoint has not reached the shard yet.
const EARLY_LIMIT: usize = 1024;
/// Buffers a shard keeps for itself before passing them to the shared pool.
const LOCAL_POOL: usize = 1024;
const MAX_SHARED_POOL: usize = 1 << 17;
/// Datagrams a `MemorySocket` holds before dropping (a kernel socket's receive buffer).
const SOCKET_QUEUE: usize = 4096;

/// One datagram in flight.
struct Datagram {
    to: SocketAddr,
    from: SocketAddr,
    buf: Vec<u8>,
    /// The sender's payload was longer than the maximum and `buf` holds only its start.
    truncated: bool,
}

/// Who receives on a bound address.
enum Route {
    /// Endpoints on these shards, one each; more than one only when all asked for
    /// reuseport.
    Shards {
        shards: Box<[usize]>,
        reuseport: bool,
    },
    /// A `MemorySocket`.
    Socket(Arc<SocketQueue>),
}

/// A shard's receive queue and how to wake it.
struct Inbox {
    queue: ArrayQueue<Datagram>,
    /// Set by the shard just before it blocks: senders then wake it through the eventfd.
    parked: AtomicBool,
    waker: Arc<Waker>,
}

impl Inbox {
    fn push(&self, datagram: Datagram) -> Result<(), Datagram> {
        self.queue.push(datagram)?;
        // Pairs with the fence in `park`: either the shard sees this datagram before it
        // blocks, or this load sees `parked` and wakes it.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Relaxed) {
            self.waker.wake();
        }
        Ok(())
    }

    /// Announces that the shard is about to block; false when the inbox has data already.
    fn park(&self) -> bool {
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.queue.is_empty() {
            true
        } else {
            self.parked.store(false, Ordering::Relaxed);
            false
        }
    }

    fn unpark(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }
}

/// The receive queue of a `MemorySocket`, read by a blocking thread.
struct SocketQueue {
    queue: Mutex<VecDeque<Datagram>>,
    ready: Condvar,
}

impl SocketQueue {
    fn push(&self, datagram: Datagram) -> Result<(), Datagram> {
        let mut queue = lock(&self.queue);
        if queue.len() >= SOCKET_QUEUE {
            return Err(datagram);
        }
        queue.push_back(datagram);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks can be left half-updated by a panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a send carries: a pooled buffer (from a shard, at most the maximum) or bytes to
/// copy (from a `MemorySocket`, up to the UDP limit).
enum Payload<'a> {
    Pooled(Vec<u8>),
    Copy(&'a [u8]),
}

/// Why a datagram was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Nobody bound the destination.
    Unroutable,
    /// The destination's queue was full.
    Full,
}

/// Who is binding an address.
enum Owner {
    Shard(usize),
    Socket(Arc<SocketQueue>),
}

/// The virtual host `addr` names, with its port: the loopback address of its family
/// (unspecified meaning loopback), or `None` for an address the network does not have.
fn host(addr: SocketAddr) -> Option<SocketAddr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST || ip.is_unspecified() => {
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())))
        }
        IpAddr::V6(ip) if ip == Ipv6Addr::LOCALHOST || ip.is_unspecified() => {
            Some(SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port())))
        }
        _ => None,
    }
}

/// Spreads senders over reuseport members (the kernel hashes the flow the same way).
fn flow_hash(from: SocketAddr) -> u64 {
    let ip = match from.ip() {
        IpAddr::V4(ip) => u128::from(u32::from(ip)),
        IpAddr::V6(ip) => u128::from(ip),
    };
    // splitmix64's finaliser: every input bit moves every output bit.
    let mut z = (ip as u64) ^ ((ip >> 64) as u64).rotate_left(17) ^ u64::from(from.port());
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The in-process network of one memory runtime: port tables, shard inboxes and the
/// shared buffer pool.
pub(crate) struct Network {
    v4: Box<[ArcSwapOption<Route>]>,
    v6: Box<[ArcSwapOption<Route>]>,
    /// Serialises binds and unbinds (check then store); holds the next port to try.
    next_port: Mutex<u16>,
    inboxes: Box<[Inbox]>,
    pool: ArrayQueue<Vec<u8>>,
    max_datagram: usize,
    /// Drops of datagrams sent by `MemorySocket`s, which belong to no shard.
    sockets_stats: ShardStats,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("shards", &self.inboxes.len())
            .field("max_datagram", &self.max_datagram)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// A network for a runtime whose shard `i` is woken by `wakers[i]`.
    pub(crate) fn new(config: &RuntimeConfig, wakers: Vec<Arc<Waker>>) -> Arc<Self> {
        let inbox_capacity = (config.recv_buffers * INBOX_PER_RECV_BUFFER).min(MAX_INBOX);
        let table = || {
            (0..PORTS)
                .map(|_| ArcSwapOption::empty())
                .collect::<Box<[_]>>()
        };
        let pool_capacity = (inbox_capacity * wakers.len() + LOCAL_POOL).min(MAX_SHARED_POOL);
        Arc::new(Network {
            v4: table(),
            v6: table(),
            next_port: Mutex::new(FIRST_FREE_PORT),
            inboxes: wakers
                .into_iter()
                .map(|waker| Inbox {
                    queue: ArrayQueue::new(inbox_capacity),
                    parked: AtomicBool::new(false),
                    waker,
                })
                .collect(),
            pool: ArrayQueue::new(pool_capacity),
            max_datagram: config.max_datagram_size,
            sockets_stats: ShardStats::default(),
        })
    }

    /// Counters of the `MemorySocket`s' sends.
    pub(crate) fn sockets_stats(&self) -> Stats {
        self.sockets_stats.snapshot()
    }

    /// The route cell of `host` (an address `host()` returned), `None` for port 0.
    fn cell(&self, host: SocketAddr) -> Option<&ArcSwapOption<Route>> {
        let table = if host.is_ipv4() { &self.v4 } else { &self.v6 };
        (host.port() != 0).then(|| &table[usize::from(host.port())])
    }

    fn bind(
        self: &Arc<Self>,
        addr: SocketAddr,
        owner: Owner,
        reuseport: bool,
    ) -> io::Result<Binding> {
        let Some(mut local) = host(addr) else {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!(
                    "the memory network has only 127.0.0.1 and [::1], not {}",
                    addr.ip()
                ),
            ));
        };
        let mut next_port = lock(&self.next_port);
        let allocate = local.port() == 0;
        if allocate {
            let mut port = *next_port;
            let mut tried = 0;
            loop {
                local.set_port(port);
                if self.cell(local).is_some_and(|cell| cell.load().is_none()) {
                    break;
                }
                tried += 1;
                if tried > PORTS {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "the memory network has no free port left",
                    ));
                }
                port = port.checked_add(1).unwrap_or(FIRST_FREE_PORT);
            }
        }
        let cell = self.cell(local).expect("port is not 0");
        let shard = match owner {
            Owner::Shard(shard) => Some(shard),
            Owner::Socket(_) => None,
        };
        let route = match (cell.load_full().as_deref(), owner) {
            (None, Owner::Shard(shard)) => Route::Shards {
                shards: Box::new([shard]),
                reuseport,
            },
            (None, Owner::Socket(queue)) => Route::Socket(queue),
            (
                Some(Route::Shards {
                    shards,
                    reuseport: true,
                }),
                Owner::Shard(shard),
            ) if reuseport && !shards.contains(&shard) => Route::Shards {
                shards: shards.iter().copied().chain([shard]).collect(),
                reuseport: true,
            },
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{local} is already bound in the memory network"),
                ))
            }
        };
        cell.store(Some(Arc::new(route)));
        if allocate {
            *next_port = local.port().checked_add(1).unwrap_or(FIRST_FREE_PORT);
        }
        Ok(Binding {
            net: Arc::clone(self),
            local,
            shard,
        })
    }

    /// Releases `local` as bound by `shard` (`None`: by a `MemorySocket`).
    fn unbind(&self, local: SocketAddr, shard: Option<usize>) {
        let Some(cell) = self.cell(local) else { return };
        let _serial = lock(&self.next_port);
        let next = match (cell.load_full().as_deref(), shard) {
            (Some(Route::Shards { shards, reuseport }), Some(shard)) if shards.contains(&shard) => {
                let rest: Box<[usize]> = shards.iter().copied().filter(|&s| s != shard).collect();
                (!rest.is_empty()).then(|| {
                    Arc::new(Route::Shards {
                        shards: rest,
                        reuseport: *reuseport,
                    })
                })
            }
            (Some(Route::Socket(_)), None) => None,
            _ => return,
        };
        cell.store(next);
    }

    /// Whether `to` is bound by an endpoint of `shard`.
    fn routes_to(&self, to: SocketAddr, shard: usize) -> bool {
        self.cell(to).is_some_and(|cell| {
            matches!(cell.load().as_deref(), Some(Route::Shards { shards, .. }) if shards.contains(&shard))
        })
    }

    /// Routes one datagram. On success returns the payload length; on refusal hands back
    /// the buffer (when there was one) for recycling.
    fn post(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        payload: Payload<'_>,
    ) -> Result<usize, (Refused, Option<Vec<u8>>)> {
        let refuse = |why, payload: Payload<'_>| match payload {
            Payload::Pooled(buf) => Err((why, Some(buf))),
            Payload::Copy(_) => Err((why, None)),
        };
        let Some(to) = host(to) else {
            return refuse(Refused::Unroutable, payload);
        };
        let Some(cell) = self.cell(to) else {
            return refuse(Refused::Unroutable, payload);
        };
        let route = cell.load();
        match route.as_deref() {
            None => refuse(Refused::Unroutable, payload),
            Some(Route::Shards { shards, .. }) => {
                let shard = match shards.len() {
                    1 => shards[0],
                    n => shards[(flow_hash(from) % n as u64) as usize],
                };
                let (buf, truncated) = match payload {
                    Payload::Pooled(buf) => (buf, false),
                    Payload::Copy(bytes) => {
                        let mut buf = self.take_buffer();
                        let kept = bytes.len().min(self.max_datagram);
                        buf.extend_from_slice(&bytes[..kept]);
                        (buf, bytes.len() > self.max_datagram)
                    }
                };
                let len = buf.len();
                let datagram = Datagram {
                    to,
                    from,
                    buf,
                    truncated,
                };
                match self.inboxes[shard].push(datagram) {
                    Ok(()) => Ok(len),
                    Err(datagram) => Err((Refused::Full, Some(datagram.buf))),
                }
            }
            Some(Route::Socket(queue)) => {
                let buf = match payload {
                    Payload::Pooled(buf) => buf,
                    Payload::Copy(bytes) => bytes.to_vec(),
                };
                let len = buf.len();
                let datagram = Datagram {
                    to,
                    from,
                    buf,
                    truncated: false,
                };
                match queue.push(datagram) {
                    Ok(()) => Ok(len),
                    Err(datagram) => Err((Refused::Full, Some(datagram.buf))),
                }
            }
        }
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.max_datagram))
    }

    /// Offers `buf` to the shared pool; odd sizes (a `MemorySocket`'s copies) are freed.
    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= self.max_datagram && buf.capacity() <= 2 * self.max_datagram {
            buf.clear();
            let _ = self.pool.push(buf);
        }
    }
}

/// An address bound in a [`Network`]; dropping it releases the address.
pub(crate) struct Binding {
    net: Arc<Network>,
    local: SocketAddr,
    /// The binding shard, `None` for a `MemorySocket`.
    shard: Option<usize>,
}

impl Binding {
    /// Binds `addr` for an endpoint that will live on `shard`.
    pub(crate) fn for_shard(
        net: &Arc<Network>,
        addr: SocketAddr,
        shard: usize,
        reuseport: bool,
    ) -> io::Result<Binding> {
        net.bind(addr, Owner::Shard(shard), reuseport)
    }

    /// The bound address.
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        self.net.unbind(self.local, self.shard);
    }
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("local", &self.local)
            .field("shard", &self.shard)
            .finish()
    }
}

/// The in-process network of a runtime started with
/// [`BackendChoice::Memory`](crate::runtime::BackendChoice::Memory), from
/// [`Runtime::memory_network`](crate::runtime::Runtime::memory_network). Cloning it is
/// cheap; it stays usable after the runtime has shut down (every endpoint address is
/// released then).
///
/// The memory backend exists to measure the protocol without the kernel (the load
/// generator's `--transport mem`) and to run the transport suite without sockets. What it
/// models, and how:
///
/// - **Addresses.** Each runtime has its own network with two virtual hosts, `127.0.0.1`
///   and `[::1]`, each with its own 65 535 ports. Binding `0.0.0.0` or `[::]` binds the
///   loopback address of that family; any other address fails with `AddrNotAvailable`.
///   Port 0 takes the next free port (sequentially from 1024, wrapping). Binding an
///   address already bound fails with `AddrInUse`, unless every binder asked for
///   reuseport ([`Runtime::add_reuseport`](crate::runtime::Runtime::add_reuseport)): then
///   senders are spread over the members by a hash of their source address, like
///   `SO_REUSEPORT`. A removed endpoint (or dropped [`MemorySocket`]) releases its
///   address at once.
/// - **Delivery.** A send looks its destination up in a port table (lock-free reads;
///   binds and unbinds take a mutex) and lands in the destination shard's inbox, a
///   bounded lock-free queue of `16 × recv_buffers` datagrams (at most 65 536). The sender
///   wakes the destination shard through its eventfd only when that shard is going to
///   sleep, so busy shards make no syscall per datagram. Order from one sender to one
///   receiver is kept.
/// - **Loss.** Only where the kernel would drop too, and counted where the kernel is
///   silent: a full inbox drops the datagram ([`Stats::recv_queue_full`], counted on the
///   sending shard); a datagram to an address nobody bound is dropped
///   ([`Stats::unroutable`], on the sending shard, or on the receiving one when the
///   address was released while the datagram was in flight). Datagrams for an address
///   that is bound but whose endpoint has not reached its shard yet are held for it (up
///   to 1024 per shard), as a kernel socket buffers them before anyone reads.
/// - **Size.** Endpoint sends are capped at `max_datagram_size` by the shard, as on
///   every backend. A larger datagram from a [`MemorySocket`] to an endpoint is truncated
///   to the maximum, counted in [`Stats::truncated`] and dropped, as on the kernel
///   backends.
/// - **Buffers.** A datagram's buffer moves from sender to receiver, then into the
///   receiver's local pool; a shard whose local pool is full passes buffers on to a
///   network-wide lock-free pool, from which shards with an empty local pool draw. Even
///   one-way traffic reaches a steady state without allocating.
/// - **Outside the runtime.** [`bind`](Self::bind) gives a [`MemorySocket`], the
///   in-process counterpart of a `UdpSocket`. Drops of its sends are counted in
///   [`Runtime::stats`](crate::runtime::Runtime::stats) but in no shard's stats.
///
/// Not modelled: delay, loss, duplication and reordering (inject those in user space),
/// ICMP errors, MTU, and socket buffer sizes (`socket_recv_buffer` and
/// `socket_send_buffer` are ignored).
///
/// [`Stats::recv_queue_full`]: crate::runtime::Stats::recv_queue_full
/// [`Stats::unroutable`]: crate::runtime::Stats::unroutable
/// [`Stats::truncated`]: crate::runtime::Stats::truncated
#[derive(Clone, Debug)]
pub struct MemoryNetwork {
    net: Arc<Network>,
}

impl MemoryNetwork {
    pub(crate) fn new(net: Arc<Network>) -> Self {
        MemoryNetwork { net }
    }

    /// Binds `addr` (`127.0.0.1`, `[::1]`, or the unspecified address of either family
    /// for its loopback; port 0 picks a free port) for a socket outside the runtime.
    /// Fails with `AddrInUse` when an endpoint or another socket holds the address and
    /// `AddrNotAvailable` for any other IP.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemorySocket> {
        let queue = Arc::new(SocketQueue {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        });
        let binding = self
            .net
            .bind(addr, Owner::Socket(Arc::clone(&queue)), false)?;
        Ok(MemorySocket {
            binding,
            queue,
            read_timeout: Mutex::new(None),
        })
    }
}

/// A datagram socket on a [`MemoryNetwork`], shaped like [`std::net::UdpSocket`]: what
/// endpoints send to its address queues here (up to 4096 datagrams, then they are dropped
/// and counted in [`Stats::recv_queue_full`](crate::runtime::Stats::recv_queue_full)).
/// Dropping it releases the address.
#[derive(Debug)]
pub struct MemorySocket {
    binding: Binding,
    queue: Arc<SocketQueue>,
    read_timeout: Mutex<Option<Duration>>,
}

impl std::fmt::Debug for SocketQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketQueue")
            .field("queued", &lock(&self.queue).len())
            .finish()
    }
}

impl MemorySocket {
    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.binding.local)
    }

    /// How long [`recv_from`](Self::recv_from) waits before failing with `WouldBlock`;
    /// `None` (the default) waits forever. A zero duration is refused, as by `UdpSocket`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        *lock(&self.read_timeout) = timeout;
        Ok(())
    }

    /// Sends `buf` to `to`. Like UDP it succeeds when the datagram is handed to the
    /// network, even if it is then dropped (nobody bound `to`, or its queue is full: both
    /// counted in [`Runtime::stats`](crate::runtime::Runtime::stats)). An endpoint
    /// receives at most `max_datagram_size` bytes: longer datagrams are truncated and
    /// counted by its shard, then dropped. Fails with `EMSGSIZE` beyond the UDP limit and
    /// with `EAFNOSUPPORT` for a destination of the other address family.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        if buf.len() > MAX_UDP_PAYLOAD {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        if to.is_ipv4() != self.binding.local.is_ipv4() {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        }
        let net = &self.binding.net;
        match net.post(self.binding.local, to, Payload::Copy(buf)) {
            Ok(_) => {}
            Err((why, spare)) => {
                let counter = match why {
                    Refused::Unroutable => &net.sockets_stats.unroutable,
                    Refused::Full => &net.sockets_stats.recv_queue_full,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(buf) = spare {
                    net.give_back(buf);
                }
            }
        }
        Ok(buf.len())
    }

    /// Waits for a datagram, copies it into `buf` (cutting it to `buf.len()`, as UDP does)
    /// and returns the copied length and the sender. Fails with `WouldBlock` when the read
    /// timeout passes first.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let deadline = lock(&self.read_timeout).map(|t| Instant::now() + t);
        let mut queue = lock(&self.queue.queue);
        loop {
            if let Some(datagram) = queue.pop_front() {
                drop(queue);
                let n = datagram.buf.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram.buf[..n]);
                self.binding.net.give_back(datagram.buf);
                return Ok((n, datagram.from));
            }
            queue = match deadline {
                None => self
                    .queue
                    .ready
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "memory socket read timed out",
                        ));
                    }
                    self.queue
                        .ready
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }
}

struct Entry {
    generation: u32,
    binding: Binding,
}

/// The memory driver of one shard.
pub(crate) struct MemoryDriver {
    net: Arc<Network>,
    shard: usize,
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
    sockets: Vec<Option<Entry>>,
    by_addr: HashMap<SocketAddr, SlotKey>,
    /// Datagrams for addresses bound to this shard whose endpoint is still on its way.
    early: Vec<Datagram>,
    early_spare: Vec<Datagram>,
    early_dirty: bool,
    pool: Vec<Vec<u8>>,
    max_datagram: usize,
    stats: Arc<ShardStats>,
}

impl MemoryDriver {
    pub(crate) fn new(
        net: Arc<Network>,
        shard: usize,
        stats: Arc<ShardStats>,
        waker: Arc<Waker>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&waker.fd()), WAKE, Interest::READABLE)?;
        let max_datagram = net.max_datagram;
        Ok(MemoryDriver {
            net,
            shard,
            poll,
            events: Events::with_capacity(8),
            waker,
            sockets: Vec::new(),
            by_addr: HashMap::new(),
            early: Vec::new(),
            early_spare: Vec::new(),
            early_dirty: false,
            pool: Vec::new(),
            max_datagram,
            stats,
        })
    }

    fn inbox(&self) -> &Inbox {
        &self.net.inboxes[self.shard]
    }

    fn deliver<S: Sink>(&mut self, now: Instant, mut datagram: Datagram, sink: &mut S) {
        match self.by_addr.get(&datagram.to) {
            Some(&key) => {
                if datagram.truncated {
                    ShardStats::add(&self.stats.truncated, 1);
                } else {
                    sink.datagram(now, key, datagram.from, &mut datagram.buf, None);
                }
                self.recycle(datagram.buf);
            }
            None if self.net.routes_to(datagram.to, self.shard) => {
                if self.early.len() < EARLY_LIMIT {
                    self.early.push(datagram);
                } else {
                    ShardStats::add(&self.stats.recv_queue_full, 1);
                    self.recycle(datagram.buf);
                }
            }
            None => {
                ShardStats::add(&self.stats.unroutable, 1);
                self.recycle(datagram.buf);
            }
        }
    }

    /// Delivers held datagrams whose endpoint has arrived (in arrival order); drops those
    /// whose address was released meanwhile.
    fn retry_early<S: Sink>(&mut self, now: Instant, sink: &mut S) {
        self.early_dirty = false;
        std::mem::swap(&mut self.early, &mut self.early_spare);
        let mut held = std::mem::take(&mut self.early_spare);
        for datagram in held.drain(..) {
            self.deliver(now, datagram, sink);
        }
        self.early_spare = held;
    }
}

impl Driver for MemoryDriver {
    fn add_socket(&mut self, key: SlotKey, socket: BoundSocket) -> io::Result<()> {
        let binding = socket.into_memory()?;
        self.by_addr.insert(binding.local, key);
        let slot = key.slot as usize;
        if self.sockets.len() <= slot {
            self.sockets.resize_with(slot + 1, || None);
        }
        self.sockets[slot] = Some(Entry {
            generation: key.generation,
            binding,
        });
        self.early_dirty = !self.early.is_empty();
        Ok(())
    }

    fn remove_socket(&mut self, key: SlotKey) {
        let Some(entry) = self.sockets.get_mut(key.slot as usize) else {
            return;
        };
        if entry
            .as_ref()
            .is_some_and(|e| e.generation == key.generation)
        {
            if let Some(entry) = entry.take() {
                let local = entry.binding.local;
                if self.by_addr.get(&local) == Some(&key) {
                    self.by_addr.remove(&local);
                }
                // Dropping the binding releases the address.
            }
        }
    }

    fn poll<S: Sink>(&mut self, deadline: Option<Instant>, sink: &mut S) -> io::Result<()> {
        if self.early_dirty {
            self.retry_early(Instant::now(), sink);
        }
        // Block only when idle; a busy shard never makes a syscall here.
        let wait = if !self.inbox().queue.is_empty() {
            None
        } else {
            match deadline {
                None => Some(None),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    (!left.is_zero()).then_some(Some(left))
                }
            }
        };
        if let Some(timeout) = wait {
            if self.inbox().park() {
                let result = self.poll.poll(&mut self.events, timeout);
                self.inbox().unpark();
                match result {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                if !self.events.is_empty() {
                    self.waker.reset();
                }
            }
        }
        let now = Instant::now();
        for _ in 0..INBOX_BUDGET {
            let Some(datagram) = self.inbox().queue.pop() else {
                break;
            };
            self.deliver(now, datagram, sink);
        }
        Ok(())
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut buf = self.pool.pop().unwrap_or_else(|| self.net.take_buffer());
        if buf.capacity() < self.max_datagram {
            buf.reserve(self.max_datagram);
        }
        buf
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < LOCAL_POOL {
            buf.clear();
            self.pool.push(buf);
        } else {
            self.net.give_back(buf);
        }
    }

    fn send(&mut self, key: SlotKey, to: SocketAddr, buf: Vec<u8>) {
        let from = match self.sockets.get(key.slot as usize) {
            Some(Some(entry)) if entry.generation == key.generation => entry.binding.local,
            _ => {
                ShardStats::add(&self.stats.send_errors, 1);
                self.recycle(buf);
                return;
            }
        };
        if to.is_ipv4() != from.is_ipv4() {
            // The kernel refuses this too (EAFNOSUPPORT).
            ShardStats::add(&self.stats.send_errors, 1);
            self.recycle(buf);
            return;
        }
        match self.net.post(from, to, Payload::Pooled(buf)) {
            Ok(n) => {
                ShardStats::add(&self.stats.datagrams_out, 1);
                ShardStats::add(&self.stats.bytes_out, n as u64);
            }
            Err((why, spare)) => {
                let counter = match why {
                    Refused::Unroutable => &self.stats.unroutable,
                    Refused::Full => &self.stats.recv_queue_full,
                };
                ShardStats::add(counter, 1);
                if let Some(buf) = spare {
                    self.recycle(buf);
                }
            }
        }
    }

    fn flush(&mut self) {}

    fn close(&mut self) {
        // Dropping the bindings releases every address of this shard.
        self.sockets.clear();
        self.by_addr.clear();
        self.early.clear();
        while self.inbox().queue.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(shards: usize) -> Arc<Network> {
        let config = RuntimeConfig {
            shards,
            max_datagram_size: 100,
            recv_buffers: 8,
            ..RuntimeConfig::default()
        };
        let wakers = (0..shards)
            .map(|_| Arc::new(Waker::new().unwrap()))
            .collect();
        Network::new(&config, wakers)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn port_zero_allocates_distinct_ports_and_release_frees_them() {
        let net = network(1);
        let a = Binding::for_shard(&net, addr("127.0.0.1:0"), 0, false).unwrap();
        let b = Binding::for_shard(&net, addr("0.0.0.0:0"), 0, false).unwrap();
        assert_ne!(a.local(), b.local());
        assert_eq!(a.local().ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(b.local().ip(), Ipv4Addr::LOCALHOST);
        assert!(a.local().port() >= FIRST_FREE_PORT);
        let taken = a.local();
        assert!(net.routes_to(taken, 0));
        drop(a);
        assert!(!net.routes_to(taken, 0));
        let again = Binding::for_shard(&net, taken, 0, false).unwrap();
        assert_eq!(again.local(), taken);
        // v6 has its own port space.
        let v6 = Binding::for_shard(
            &net,
            SocketAddr::from((Ipv6Addr::LOCALHOST, taken.port())),
            0,
            false,
        )
        .unwrap();
        assert!(v6.local().is_ipv6());
    }

    #[test]
    fn duplicate_bind_fails_unless_all_reuseport() {
        let net = network(2);
        let a = Binding::for_shard(&net, addr("127.0.0.1:7000"), 0, false).unwrap();
        let err = Binding::for_shard(&net, addr("127.0.0.1:7000"), 1, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let err = Binding::for_shard(&net, addr("127.0.0.1:7000"), 1, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let sock = MemoryNetwork::new(Arc::clone(&net))
            .bind(a.local())
            .unwrap_err();
        assert_eq!(sock.kind(), io::ErrorKind::AddrInUse);
        drop(a);
        let r0 = Binding::for_shard(&net, addr("127.0.0.1:7001"), 0, true).unwrap();
        let r1 = Binding::for_shard(&net, addr("127.0.0.1:7001"), 1, true).unwrap();
        // One member per shard.
        assert!(Binding::for_shard(&net, addr("127.0.0.1:7001"), 1, true).is_err());
        assert!(net.routes_to(r0.local(), 0) && net.routes_to(r0.local(), 1));
        drop(r0);
        assert!(!net.routes_to(r1.local(), 0) && net.routes_to(r1.local(), 1));
        drop(r1);
        assert!(!net.routes_to(addr("127.0.0.1:7001"), 1));
    }

    #[test]
    fn other_hosts_are_not_available() {
        let net = network(1);
        for bad in ["10.0.0.1:5", "127.0.0.2:5", "[fe80::1]:5"] {
            let err = Binding::for_shard(&net, addr(bad), 0, false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable, "{bad}");
        }
    }

    #[test]
    fn sockets_exchange_and_count_unroutable() {
        let net = network(1);
        let handle = MemoryNetwork::new(Arc::clone(&net));
        let a = handle.bind(addr("127.0.0.1:0")).unwrap();
        let b = handle.bind(addr("127.0.0.1:0")).unwrap();
        b.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 3];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!(
            (n, &buf[..], from),
            (3, &b"hel"[..], a.local_addr().unwrap())
        );
        assert_eq!(
            b.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.send_to(b"lost", addr("127.0.0.1:9")).unwrap();
        assert_eq!(net.sockets_stats().unroutable, 1);
        assert!(a
            .send_to(&vec![0; MAX_UDP_PAYLOAD + 1], b.local_addr().unwrap())
            .is_err());
        assert!(a.send_to(b"x", addr("[::1]:9")).is_err());
    }

    #[test]
    fn oversized_datagram_to_a_shard_is_cut_and_marked() {
        let net = network(1);
        let _endpoint = Binding::for_shard(&net, addr("127.0.0.1:7100"), 0, false).unwrap();
        let sock = MemoryNetwork::new(Arc::clone(&net))
            .bind(addr("127.0.0.1:0"))
            .unwrap();
        sock.send_to(&[1; 101], addr("127.0.0.1:7100")).unwrap();
        sock.send_to(&[2; 100], addr("127.0.0.1:7100")).unwrap();
        let first = net.inboxes[0].queue.pop().unwrap();
        assert!(first.truncated);
        assert_eq!(first.buf.len(), 100);
        let second = net.inboxes[0].queue.pop().unwrap();
        assert!(!second.truncated);
    }

    #[test]
    fn reuseport_spreads_senders_over_members() {
        let net = network(2);
        let _r0 = Binding::for_shard(&net, addr("127.0.0.1:7200"), 0, true).unwrap();
        let _r1 = Binding::for_shard(&net, addr("127.0.0.1:7200"), 1, true).unwrap();
        let handle = MemoryNetwork::new(Arc::clone(&net));
        let socks: Vec<_> = (0..32)
            .map(|_| handle.bind(addr("127.0.0.1:0")).unwrap())
            .collect();
        for s in &socks {
            s.send_to(b"x", addr("127.0.0.1:7200")).unwrap();
        }
        let (a, b) = (net.inboxes[0].queue.len(), net.inboxes[1].queue.len());
        assert_eq!(a + b, 32);
        assert!(a > 0 && b > 0, "both members got flows: {a} / {b}");
    }

    /// Collects what a driver delivers.
    #[derive(Default)]
    struct Collect(Vec<(SlotKey, SocketAddr, Vec<u8>)>);

    impl Sink for Collect {
        fn datagram(
            &mut self,
            _now: Instant,
            key: SlotKey,
            from: SocketAddr,
            data: &mut [u8],
            _: Option<Duration>,
        ) {
            self.0.push((key, from, data.to_vec()));
        }
    }

    fn driver(net: &Arc<Network>) -> (MemoryDriver, Arc<ShardStats>) {
        let stats = Arc::new(ShardStats::default());
        let waker = Arc::clone(&net.inboxes[0].waker);
        let driver = MemoryDriver::new(Arc::clone(net), 0, Arc::clone(&stats), waker).unwrap();
        (driver, stats)
    }

    #[test]
    fn datagrams_for_a_pending_endpoint_wait_for_it() {
        let net = network(1);
        let (mut driver, stats) = driver(&net);
        let binding = Binding::for_shard(&net, addr("127.0.0.1:7400"), 0, false).unwrap();
        let to = binding.local();
        let sock = MemoryNetwork::new(Arc::clone(&net))
            .bind(addr("127.0.0.1:0"))
            .unwrap();
        sock.send_to(b"one", to).unwrap();
        sock.send_to(b"two", to).unwrap();
        let mut sink = Collect::default();
        driver.poll(Some(Instant::now()), &mut sink).unwrap();
        assert!(sink.0.is_empty(), "held until the endpoint arrives");
        let key = SlotKey {
            slot: 0,
            generation: 1,
        };
        driver
            .add_socket(key, BoundSocket::Memory(binding))
            .unwrap();
        sock.send_to(b"three", to).unwrap();
        driver.poll(Some(Instant::now()), &mut sink).unwrap();
        let got: Vec<_> = sink
            .0
            .iter()
            .map(|(k, from, d)| (*k, *from, &d[..]))
            .collect();
        let from = sock.local_addr().unwrap();
        assert_eq!(
            got,
            [
                (key, from, &b"one"[..]),
                (key, from, &b"two"[..]),
                (key, from, &b"three"[..])
            ]
        );
        // Released while a datagram is in flight: it is dropped as unroutable.
        sock.send_to(b"late", to).unwrap();
        driver.remove_socket(key);
        driver.poll(Some(Instant::now()), &mut sink).unwrap();
        assert_eq!(sink.0.len(), 3);
        assert_eq!(stats.snapshot().unroutable, 1);
        assert!(
            MemoryNetwork::new(Arc::clone(&net)).bind(to).is_ok(),
            "address released"
        );
    }

    #[test]
    fn held_datagrams_of_an_endpoint_that_never_arrives_are_dropped() {
        let net = network(1);
        let (mut driver, stats) = driver(&net);
        let lost = Binding::for_shard(&net, addr("127.0.0.1:7410"), 0, false).unwrap();
        let sock = MemoryNetwork::new(Arc::clone(&net))
            .bind(addr("127.0.0.1:0"))
            .unwrap();
        sock.send_to(b"x", lost.local()).unwrap();
        let mut sink = Collect::default();
        driver.poll(Some(Instant::now()), &mut sink).unwrap();
        // The endpoint failed to start: its binding is dropped before reaching the driver.
        drop(lost);
        let other = Binding::for_shard(&net, addr("127.0.0.1:7411"), 0, false).unwrap();
        driver
            .add_socket(
                SlotKey {
                    slot: 0,
                    generation: 1,
                },
                BoundSocket::Memory(other),
            )
            .unwrap();
        driver.poll(Some(Instant::now()), &mut sink).unwrap();
        assert!(sink.0.is_empty());
        assert_eq!(stats.snapshot().unroutable, 1);
    }

    #[test]
    fn truncated_datagram_is_counted_not_delivered() {
        let net = network(1);
        let (mut driver, stats) = driver(&net);
        let binding = Binding::for_shard(&net, addr("127.0.0.1:7420"), 0, false).unwrap();
        let to = binding.local();
        driver
            .add_socket(
                SlotKey {
                    slot: 0,
                    generation: 1,
                },
                BoundSocket::Memory(binding),
            )
            .unwrap();
        let sock = MemoryNetwork::new(Arc::clone(&net))
            .bind(addr("127.0.0.1:0"))
            .unwrap();
        sock.send_to(&[0; 101], to).unwrap();
        sock.send_to(&[0; 100], to).unwrap();
        let mut sink = Collect::default();
        driver.poll(Some(Instant::now()), &mut sink).unwrap();
        assert_eq!(stats.snapshot().truncated, 1);
        assert_eq!(sink.0.len(), 1);
        assert_eq!(sink.0[0].2.len(), 100);
    }

    #[test]
    fn full_inbox_refuses_and_parked_shard_is_woken() {
        let net = network(1);
        let _endpoint = Binding::for_shard(&net, addr("127.0.0.1:7300"), 0, false).unwrap();
        let inbox = &net.inboxes[0];
        assert!(inbox.park());
        let cap = inbox.queue.capacity();
        let from = addr("127.0.0.1:1");
        for _ in 0..cap {
            net.post(from, addr("127.0.0.1:7300"), Payload::Pooled(Vec::new()))
                .unwrap();
        }
        // The first push saw the shard parked and cleared the flag (and woke the eventfd).
        assert!(!inbox.parked.load(Ordering::Relaxed));
        let refused = net.post(from, addr("127.0.0.1:7300"), Payload::Pooled(Vec::new()));
        assert!(matches!(refused, Err((Refused::Full, Some(_)))));
        // Data waiting: the shard must not park.
        assert!(!inbox.park());
    }
}

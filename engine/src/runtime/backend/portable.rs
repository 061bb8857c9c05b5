//! Portable backend: epoll (through `mio`) and nonblocking std sockets, with batched
//! datagram syscalls.
//!
//! It works wherever Linux has epoll, at the cost of reduced performance next to io_uring:
//! no kernel-provided buffers, no submission ring, one `epoll_wait` per iteration plus one
//! `recvmmsg` and one `sendmmsg` per busy socket (up to 32 datagrams each). It is what
//! [`BackendChoice::Auto`](crate::runtime::BackendChoice::Auto) falls back to when io_uring
//! is missing or forbidden.
//!
//! - Receive: mio is edge-triggered, so a ready socket is read with `recvmmsg` until the
//!   kernel says "would block", at most 64 batches per socket per iteration (it stays on
//!   the ready list when it has more). A datagram the kernel flags `MSG_TRUNC` was longer
//!   than `max_datagram_size`: it is counted and dropped.
//! - Send: the shard's sends are queued per socket and leave in `sendmmsg` batches when the
//!   shard flushes (once per iteration), or as soon as a socket has a full batch. When the
//!   kernel answers "would block", the socket's unsent datagrams stay queued (up to
//!   [`SEND_QUEUE_LIMIT`]; beyond that new ones are dropped and counted in
//!   `Stats::send_queue_full`), the socket is watched for writable readiness, and the
//!   queue is retried when it comes. Any other error drops the one datagram it belongs to,
//!   counted in `Stats::send_errors`, and the rest of the queue goes on.
//!
//! Safe code only here; the two syscalls live in `mmsg`.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::mmsg::{RecvBatch, SendBatch, BATCH};
use super::{BoundSocket, Driver, Sink, SlotKey};
use crate::runtime::stats::ShardStats;
use crate::runtime::wake::Waker;

const WAKE: Token = Token(usize::MAX);
/// `recvmmsg` calls on one socket per iteration before moving to the next, so one busy
/// socket cannot starve the others; the socket stays on the ready list.
///
/// Up to 2048 datagrams. In a shard hosting thousands of sockets, a busy one is read once
/// per iteration, and iterations grow long when the shard is saturated. With two calls (64
/// datagrams), the seed of a 5000-node cold start through one seed read 6.8k datagrams in
/// the first 5 s and 14.1k in 40 s while its socket overflowed; the joins lost there left
/// 756 nodes outside the cluster after 20 s and 234 after 40 s. With 64 calls it read 28.8k
/// in the first 5 s and every node had joined within 20 s (`loadgen --nodes 5000 --backend
/// portable --scenario cold-start`, the seed's counters and the views sampled every 5 s).
const RECV_CALLS: usize = 64;
/// Datagrams a socket may hold while the kernel refuses more ("would block").
pub(crate) const SEND_QUEUE_LIMIT: usize = 1024;
/// How long shutdown waits for blocked sockets to take their queued datagrams.
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

/// A datagram waiting for `sendmmsg`.
struct Outgoing {
    to: SocketAddr,
    buf: Vec<u8>,
}

struct Entry {
    generation: u32,
    socket: UdpSocket,
    /// On the ready list (data may be waiting).
    ready: bool,
    /// Sends not yet taken by the kernel.
    out: VecDeque<Outgoing>,
    /// The kernel said "would block": wait for writable readiness before sending again.
    blocked: bool,
    /// On the flush list.
    dirty: bool,
}

/// The epoll driver of one shard.
pub(crate) struct PortableDriver {
    poll: Poll,
    events: Events,
    sockets: Vec<Option<Entry>>,
    /// Slots with data left to read (mio is edge-triggered: a socket is read until it
    /// would block before its next event can come).
    ready: Vec<u32>,
    ready_next: Vec<u32>,
    /// Slots with queued sends to flush.
    dirty: Vec<u32>,
    /// Blocked slots reported writable by the last poll.
    writable: Vec<u32>,
    recv: RecvBatch,
    send: SendBatch,
    pool: Vec<Vec<u8>>,
    max_datagram: usize,
    stats: Arc<ShardStats>,
    waker: Arc<Waker>,
}

fn token(key: SlotKey) -> Token {
    Token(((key.generation as usize) << 32) | key.slot as usize)
}

/// What one attempt to hand a socket's queue to the kernel did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flushed {
    sent: u64,
    bytes: u64,
    failed: u64,
    would_block: bool,
}

/// Hands `queue` to the kernel through `send_batch` (which sends a prefix of the queue
/// and returns its length, or fails for the first datagram) until it is empty or the
/// kernel would block. Sent and failed datagrams leave the queue, their buffers go to
/// `pool`; on "would block" the rest stays queued, in order.
fn flush_queue(
    queue: &mut VecDeque<Outgoing>,
    pool: &mut Vec<Vec<u8>>,
    mut send_batch: impl FnMut(&VecDeque<Outgoing>) -> io::Result<usize>,
) -> Flushed {
    let mut done = Flushed::default();
    let mut recycle = |mut buf: Vec<u8>| {
        buf.clear();
        pool.push(buf);
    };
    while !queue.is_empty() {
        match send_batch(queue) {
            Ok(n) if n > 0 => {
                for _ in 0..n.min(queue.len()) {
                    if let Some(sent) = queue.pop_front() {
                        done.sent += 1;
                        done.bytes += sent.buf.len() as u64;
                        recycle(sent.buf);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                done.would_block = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An error (or, never expected, nothing sent) belongs to the first datagram:
            // drop it so the queue always moves.
            _ => {
                if let Some(failed) = queue.pop_front() {
                    done.failed += 1;
                    recycle(failed.buf);
                }
            }
        }
    }
    done
}

impl PortableDriver {
    pub(crate) fn new(
        max_datagram: usize,
        stats: Arc<ShardStats>,
        waker: Arc<Waker>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&waker.fd()), WAKE, Interest::READABLE)?;
        Ok(PortableDriver {
            poll,
            events: Events::with_capacity(1024),
            sockets: Vec::new(),
            ready: Vec::new(),
            ready_next: Vec::new(),
            dirty: Vec::new(),
            writable: Vec::new(),
            // Buffers of exactly the maximum: the kernel flags longer datagrams MSG_TRUNC.
            recv: RecvBatch::new(max_datagram),
            send: SendBatch::new(),
            pool: Vec::new(),
            max_datagram,
            stats,
            waker,
        })
    }

    fn entry(&mut self, key: SlotKey) -> Option<&mut Entry> {
        self.sockets
            .get_mut(key.slot as usize)?
            .as_mut()
            .filter(|e| e.generation == key.generation)
    }

    fn read_ready<S: Sink>(&mut self, now: Instant, sink: &mut S) {
        std::mem::swap(&mut self.ready, &mut self.ready_next);
        for i in 0..self.ready_next.len() {
            let slot = self.ready_next[i];
            let Some(Some(entry)) = self.sockets.get(slot as usize) else {
                continue;
            };
            let key = SlotKey {
                slot,
                generation: entry.generation,
            };
            let mut drained = false;
            for _ in 0..RECV_CALLS {
                // Sockets are only removed between polls, so the entry is still there.
                let Some(Some(entry)) = self.sockets.get(slot as usize) else {
                    drained = true;
                    break;
                };
                match self
                    .recv
                    .recv_into(&entry.socket, key, now, sink, &self.stats)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => ShardStats::add(&self.stats.recv_errors, 1),
                }
            }
            match self.sockets.get_mut(slot as usize) {
                Some(Some(entry)) if entry.generation == key.generation => {
                    if drained {
                        entry.ready = false;
                    } else {
                        self.ready.push(slot);
                    }
                }
                _ => {}
            }
        }
        self.ready_next.clear();
    }

    /// Hands the queue of `slot` to the kernel unless it waits for writable readiness.
    fn flush_slot(&mut self, slot: u32) {
        let PortableDriver {
            poll,
            sockets,
            send,
            pool,
            stats,
            ..
        } = self;
        let Some(Some(entry)) = sockets.get_mut(slot as usize) else {
            return;
        };
        entry.dirty = false;
        if entry.blocked || entry.out.is_empty() {
            return;
        }
        let socket = &entry.socket;
        let flushed = flush_queue(&mut entry.out, pool, |queue| {
            send.send(socket, queue.iter().take(BATCH).map(|o| (o.to, &o.buf[..])))
        });
        ShardStats::add(&stats.datagrams_out, flushed.sent);
        ShardStats::add(&stats.bytes_out, flushed.bytes);
        ShardStats::add(&stats.send_errors, flushed.failed);
        if flushed.would_block {
            entry.blocked = true;
            let token = token(SlotKey {
                slot,
                generation: entry.generation,
            });
            if poll
                .registry()
                .reregister(
                    &mut SourceFd(&entry.socket.as_raw_fd()),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                // Without writable events the queue could wait forever: give it up.
                drop_queue(entry, pool, stats);
            }
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(slot) = self.dirty.pop() {
            self.flush_slot(slot);
        }
    }

    /// The socket of `slot` became writable: retry its queue, stop watching for writable.
    fn unblock(&mut self, slot: u32) {
        let Some(Some(entry)) = self.sockets.get_mut(slot as usize) else {
            return;
        };
        if !entry.blocked {
            return;
        }
        entry.blocked = false;
        let token = token(SlotKey {
            slot,
            generation: entry.generation,
        });
        let _ = self.poll.registry().reregister(
            &mut SourceFd(&entry.socket.as_raw_fd()),
            token,
            Interest::READABLE,
        );
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(slot);
        }
    }
}

/// Drops what `entry` still has queued, counting each datagram as a send error.
fn drop_queue(entry: &mut Entry, pool: &mut Vec<Vec<u8>>, stats: &ShardStats) {
    ShardStats::add(&stats.send_errors, entry.out.len() as u64);
    for Outgoing { mut buf, .. } in entry.out.drain(..) {
        buf.clear();
        pool.push(buf);
    }
}

impl Driver for PortableDriver {
    fn add_socket(&mut self, key: SlotKey, socket: BoundSocket) -> io::Result<()> {
        let socket = socket.into_udp()?;
        socket.set_nonblocking(true)?;
        self.poll.registry().register(
            &mut SourceFd(&socket.as_raw_fd()),
            token(key),
            Interest::READABLE,
        )?;
        let slot = key.slot as usize;
        if self.sockets.len() <= slot {
            self.sockets.resize_with(slot + 1, || None);
        }
        self.sockets[slot] = Some(Entry {
            generation: key.generation,
            socket,
            // Data may have arrived between bind and registration: read once.
            ready: true,
            out: VecDeque::new(),
            blocked: false,
            dirty: false,
        });
        self.ready.push(key.slot);
        Ok(())
    }

    fn remove_socket(&mut self, key: SlotKey) {
        if self.entry(key).is_none() {
            return;
        }
        // What the endpoint sent before it went goes out if the kernel takes it now.
        self.flush_slot(key.slot);
        if let Some(mut entry) = self.sockets[key.slot as usize].take() {
            drop_queue(&mut entry, &mut self.pool, &self.stats);
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&entry.socket.as_raw_fd()));
            // Dropping the socket closes it; stale ready- and flush-list slots are skipped.
            self.ready.retain(|&s| s != key.slot);
            self.dirty.retain(|&s| s != key.slot);
        }
    }

    fn poll<S: Sink>(&mut self, deadline: Option<Instant>, sink: &mut S) -> io::Result<()> {
        self.flush_dirty();
        let timeout = if self.ready.is_empty() {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            if event.token() == WAKE {
                self.waker.reset();
                continue;
            }
            let slot = (event.token().0 & 0xFFFF_FFFF) as u32;
            let generation = (event.token().0 >> 32) as u32;
            let Some(Some(entry)) = self.sockets.get_mut(slot as usize) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            if event.is_writable() && entry.blocked {
                self.writable.push(slot);
            }
            // Anything but a bare writable event may mean data (or an error) to read.
            let readable = event.is_readable() || event.is_error() || !event.is_writable();
            if readable && !entry.ready {
                entry.ready = true;
                self.ready.push(slot);
            }
        }
        if !self.writable.is_empty() {
            while let Some(slot) = self.writable.pop() {
                self.unblock(slot);
            }
            self.flush_dirty();
        }
        let now = Instant::now();
        self.read_ready(now, sink);
        Ok(())
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.max_datagram))
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.pool.push(buf);
    }

    fn send(&mut self, key: SlotKey, to: SocketAddr, buf: Vec<u8>) {
        let Some(entry) = self.entry(key) else {
            ShardStats::add(&self.stats.send_errors, 1);
            self.recycle(buf);
            return;
        };
        if entry.out.len() >= SEND_QUEUE_LIMIT {
            ShardStats::add(&self.stats.send_queue_full, 1);
            self.recycle(buf);
            return;
        }
        entry.out.push_back(Outgoing { to, buf });
        if entry.blocked {
            return; // retried on writable readiness
        }
        if entry.out.len() >= BATCH {
            self.flush_slot(key.slot);
        } else if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(key.slot);
        }
    }

    fn flush(&mut self) {
        self.flush_dirty();
    }

    fn close(&mut self) {
        // Shutdown flushes what endpoints queued; blocked sockets get a bounded wait.
        let deadline = Instant::now() + CLOSE_PATIENCE;
        loop {
            self.flush_dirty();
            let waiting = self
                .sockets
                .iter()
                .flatten()
                .any(|entry| !entry.out.is_empty());
            let now = Instant::now();
            if !waiting || now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            if self.poll.poll(&mut self.events, Some(wait)).is_err() {
                break;
            }
            for slot in 0..self.sockets.len() as u32 {
                // Retry every blocked socket: a missed edge must not cost the whole wait.
                self.unblock(slot);
            }
        }
        for slot in 0..self.sockets.len() {
            if let Some(mut entry) = self.sockets[slot].take() {
                drop_queue(&mut entry, &mut self.pool, &self.stats);
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&entry.socket.as_raw_fd()));
            }
        }
        self.ready.clear();
        self.dirty.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(n: usize) -> VecDeque<Outgoing> {
        (0..n)
            .map(|i| Outgoing {
                to: "127.0.0.1:9".parse().unwrap(),
                buf: vec![i as u8; 10],
            })
            .collect()
    }

    fn first_bytes(queue: &VecDeque<Outgoing>) -> Vec<u8> {
        queue.iter().map(|o| o.buf[0]).collect()
    }

    #[test]
    fn partial_batches_then_would_block_keep_the_rest_in_order() {
        let mut q = queue(10);
        let mut pool = Vec::new();
        let mut script = vec![Ok(3), Ok(2), Err(io::ErrorKind::WouldBlock.into())].into_iter();
        let flushed = flush_queue(&mut q, &mut pool, |_| script.next().unwrap());
        assert_eq!(
            flushed,
            Flushed {
                sent: 5,
                bytes: 50,
                failed: 0,
                would_block: true
            }
        );
        assert_eq!(first_bytes(&q), [5, 6, 7, 8, 9]);
        assert_eq!(pool.len(), 5);
        assert!(pool.iter().all(|b| b.is_empty()));
    }

    #[test]
    fn an_error_drops_only_the_datagram_it_belongs_to() {
        let mut q = queue(4);
        let mut pool = Vec::new();
        let mut script = vec![
            Ok(1),
            Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(2),
        ]
        .into_iter();
        let mut seen = Vec::new();
        let flushed = flush_queue(&mut q, &mut pool, |q| {
            seen.push(first_bytes(q));
            script.next().unwrap()
        });
        assert_eq!(
            flushed,
            Flushed {
                sent: 3,
                bytes: 30,
                failed: 1,
                would_block: false
            }
        );
        assert!(q.is_empty());
        assert_eq!(
            seen,
            [vec![0, 1, 2, 3], vec![1, 2, 3], vec![2, 3], vec![2, 3]]
        );
    }

    #[test]
    fn nothing_sent_still_moves_the_queue() {
        let mut q = queue(2);
        let mut pool = Vec::new();
        let flushed = flush_queue(&mut q, &mut pool, |_| Ok(0));
        assert_eq!(flushed.failed, 2);
        assert!(q.is_empty());
    }

    struct Count(u64);

    impl Sink for Count {
        fn datagram(
            &mut self,
            _: Instant,
            _: SlotKey,
            _: SocketAddr,
            _: &mut [u8],
            _: Option<Duration>,
        ) {
            self.0 += 1;
        }
    }

    fn driver() -> (PortableDriver, Arc<ShardStats>) {
        let stats = Arc::new(ShardStats::default());
        let waker = Arc::new(Waker::new().unwrap());
        (
            PortableDriver::new(100, Arc::clone(&stats), waker).unwrap(),
            stats,
        )
    }

    #[test]
    fn blocked_socket_queues_up_to_the_limit_then_counts_drops() {
        let (mut driver, stats) = driver();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let key = SlotKey {
            slot: 0,
            generation: 1,
        };
        driver.add_socket(key, BoundSocket::Udp(socket)).unwrap();
        // As if the kernel had said "would block".
        driver.sockets[0].as_mut().unwrap().blocked = true;
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..SEND_QUEUE_LIMIT + 5 {
            let buf = driver.buffer();
            driver.send(key, to, buf);
        }
        driver.flush();
        assert_eq!(
            driver.sockets[0].as_ref().unwrap().out.len(),
            SEND_QUEUE_LIMIT
        );
        assert_eq!(stats.snapshot().send_queue_full, 5);
        assert_eq!(stats.snapshot().datagrams_out, 0);
        // Writable again: the queue drains in batches, in order.
        driver.unblock(0);
        driver.flush();
        assert!(driver.sockets[0].as_ref().unwrap().out.is_empty());
        assert_eq!(stats.snapshot().datagrams_out, SEND_QUEUE_LIMIT as u64);
    }

    #[test]
    fn sends_leave_in_batches_and_arrive() {
        let (mut driver, stats) = driver();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let (skey, rkey) = (
            SlotKey {
                slot: 0,
                generation: 1,
            },
            SlotKey {
                slot: 1,
                generation: 1,
            },
        );
        driver.add_socket(skey, BoundSocket::Udp(sender)).unwrap();
        driver.add_socket(rkey, BoundSocket::Udp(receiver)).unwrap();
        for i in 0..70u8 {
            let mut buf = driver.buffer();
            buf.extend_from_slice(&[i; 20]);
            driver.send(skey, to, buf);
        }
        // Two full batches left at once; the rest waits for the flush.
        assert_eq!(stats.snapshot().datagrams_out, 2 * BATCH as u64);
        driver.flush();
        assert_eq!(stats.snapshot().datagrams_out, 70);
        let mut sink = Count(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.0 < 70 {
            assert!(Instant::now() < deadline, "received {} of 70", sink.0);
            driver
                .poll(Some(Instant::now() + Duration::from_millis(50)), &mut sink)
                .unwrap();
        }
        assert_eq!(stats.snapshot().truncated, 0);
    }
}

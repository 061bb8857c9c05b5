//! Portable backend: epoll (through `mio`) and nonblocking std sockets.
//!
//! It works wherever Linux has epoll, at the cost of reduced performance: one `recvfrom`
//! or `sendto` syscall per datagram, no kernel-provided buffers, no batched submission.
//! It is what [`BackendChoice::Auto`](crate::runtime::BackendChoice::Auto) falls back to
//! when io_uring is missing or forbidden. Safe code only.
#![deny(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{Driver, Sink, SlotKey};
use crate::runtime::stats::ShardStats;
use crate::runtime::wake::Waker;

const WAKE: Token = Token(usize::MAX);
/// Datagrams read from one socket before moving to the next, so one busy socket cannot
/// starve the others; the socket stays on the ready list.
const RECV_BUDGET: usize = 32;

struct Entry {
    generation: u32,
    socket: UdpSocket,
    ready: bool,
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
    recv_buf: Vec<u8>,
    pool: Vec<Vec<u8>>,
    max_datagram: usize,
    stats: Arc<ShardStats>,
    waker: Arc<Waker>,
}

fn token(key: SlotKey) -> Token {
    Token(((key.generation as usize) << 32) | key.slot as usize)
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
            // One byte more than the maximum: a datagram that fills it was truncated.
            recv_buf: vec![0; max_datagram + 1],
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
            for _ in 0..RECV_BUDGET {
                // The socket may have been removed by a panic in the previous datagram.
                let Some(Some(entry)) = self.sockets.get(slot as usize) else {
                    drained = true;
                    break;
                };
                match entry.socket.recv_from(&mut self.recv_buf) {
                    Ok((n, from)) if n > self.max_datagram => {
                        let _ = from;
                        ShardStats::add(&self.stats.truncated, 1);
                    }
                    Ok((n, from)) => sink.datagram(now, key, from, &mut self.recv_buf[..n]),
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
}

impl Driver for PortableDriver {
    fn add_socket(&mut self, key: SlotKey, socket: UdpSocket) -> io::Result<()> {
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
        });
        self.ready.push(key.slot);
        Ok(())
    }

    fn remove_socket(&mut self, key: SlotKey) {
        if self.entry(key).is_some() {
            if let Some(entry) = self.sockets[key.slot as usize].take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&entry.socket.as_raw_fd()));
                // Dropping the socket closes it; stale ready-list slots are skipped.
                self.ready.retain(|&s| s != key.slot);
            }
        }
    }

    fn poll<S: Sink>(&mut self, deadline: Option<Instant>, sink: &mut S) -> io::Result<()> {
        let timeout = if self.ready.is_empty() {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(std::time::Duration::ZERO)
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
            if let Some(Some(entry)) = self.sockets.get_mut(slot as usize) {
                if entry.generation == generation && !entry.ready {
                    entry.ready = true;
                    self.ready.push(slot);
                }
            }
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
        let result = match self.entry(key) {
            Some(entry) => entry.socket.send_to(&buf, to),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        match result {
            Ok(n) => {
                ShardStats::add(&self.stats.datagrams_out, 1);
                ShardStats::add(&self.stats.bytes_out, n as u64);
            }
            Err(_) => ShardStats::add(&self.stats.send_errors, 1),
        }
        self.recycle(buf);
    }

    fn flush(&mut self) {}

    fn close(&mut self) {
        for slot in 0..self.sockets.len() {
            if let Some(entry) = self.sockets[slot].take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&entry.socket.as_raw_fd()));
            }
        }
        self.ready.clear();
    }
}

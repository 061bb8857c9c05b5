//! The one swap point for platform I/O: a shard drives exactly one [`Driver`].
//!
//! A driver owns the shard's sockets, receives datagrams into its own buffers and hands
//! them to a [`Sink`] (the shard's endpoints), sends buffers taken from its pool, and
//! blocks until I/O, a wake-up or a deadline. Everything above it — endpoints, timers,
//! commands, panic containment — is shared by all three backends.

pub(crate) mod memory;
mod mmsg;
pub(crate) mod portable;
pub(crate) mod uring;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::time::Instant;

use super::{BackendChoice, BackendInfo, BackendKind, RuntimeConfig, RuntimeError};

/// What an endpoint receives on: a kernel UDP socket (io_uring and portable backends) or
/// an address bound in the runtime's in-process network (memory backend).
pub(crate) enum BoundSocket {
    Udp(UdpSocket),
    Memory(memory::Binding),
}

impl BoundSocket {
    fn into_udp(self) -> io::Result<UdpSocket> {
        match self {
            BoundSocket::Udp(socket) => Ok(socket),
            BoundSocket::Memory(_) => Err(wrong_kind()),
        }
    }

    fn into_memory(self) -> io::Result<memory::Binding> {
        match self {
            BoundSocket::Memory(binding) => Ok(binding),
            BoundSocket::Udp(_) => Err(wrong_kind()),
        }
    }
}

fn wrong_kind() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "socket of another backend")
}

/// Parses a `sockaddr_in`/`sockaddr_in6` the kernel wrote as bytes (native-endian family,
/// network-endian port and address).
pub(crate) fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*name.first()?, *name.get(1)?]));
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    if family == libc::AF_INET {
        let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 {
        let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

/// Names one endpoint's socket inside a shard. `generation` changes every time a slot is
/// reused, so late completions for a removed socket are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// Generations are kept to 28 bits so a key packs into io_uring user data with a tag.
pub(crate) const GENERATION_MASK: u32 = (1 << 28) - 1;

/// Where a driver delivers received datagrams.
pub(crate) trait Sink {
    /// A datagram of at most the maximum size arrived on the socket of `key`.
    fn datagram(&mut self, now: Instant, key: SlotKey, from: SocketAddr, data: &mut [u8]);
}

/// Platform I/O for one shard.
pub(crate) trait Driver {
    /// Takes ownership of `socket` and starts receiving on it. A socket of another
    /// backend is refused with `InvalidInput` (the runtime never mixes them).
    fn add_socket(&mut self, key: SlotKey, socket: BoundSocket) -> io::Result<()>;
    /// Stops receiving on the socket of `key` and closes it (once the kernel lets go).
    fn remove_socket(&mut self, key: SlotKey);
    /// Submits queued sends, then waits until a datagram arrives, the shard is woken or
    /// `deadline` passes (`None`: no deadline), and delivers what arrived to `sink`.
    fn poll<S: Sink>(&mut self, deadline: Option<Instant>, sink: &mut S) -> io::Result<()>;
    /// A cleared send buffer with capacity for the maximum datagram size.
    fn buffer(&mut self) -> Vec<u8>;
    /// Returns an unused buffer to the pool.
    fn recycle(&mut self, buf: Vec<u8>);
    /// Sends `buf` from the socket of `key` to `to` (now or at the next `poll`/`flush`);
    /// the buffer returns to the pool when the kernel is done with it.
    fn send(&mut self, key: SlotKey, to: SocketAddr, buf: Vec<u8>);
    /// Submits queued sends without waiting.
    fn flush(&mut self);
    /// Shutdown: waits (bounded) for in-flight sends, cancels every receive and closes
    /// every socket.
    fn close(&mut self);
}

/// Picks the backend for `config`, probing io_uring for `Auto` and `IoUring`.
pub(crate) fn choose(config: &RuntimeConfig) -> Result<BackendInfo, RuntimeError> {
    match config.backend {
        BackendChoice::Memory => Ok(BackendInfo {
            kind: BackendKind::Memory,
            fallback_reason: None,
        }),
        BackendChoice::Portable => Ok(BackendInfo {
            kind: BackendKind::Portable,
            fallback_reason: None,
        }),
        BackendChoice::IoUring => match uring::probe(config) {
            Ok(()) => Ok(BackendInfo {
                kind: BackendKind::IoUring,
                fallback_reason: None,
            }),
            Err(why) => Err(RuntimeError::IoUringUnavailable(why)),
        },
        BackendChoice::Auto => Ok(match uring::probe(config) {
            Ok(()) => BackendInfo {
                kind: BackendKind::IoUring,
                fallback_reason: None,
            },
            Err(why) => BackendInfo {
                kind: BackendKind::Portable,
                fallback_reason: Some(why),
            },
        }),
    }
}

/// Whether this machine can run the io_uring backend, and if not why (for tests that
/// skip it).
pub fn io_uring_support(config: &RuntimeConfig) -> Result<(), String> {
    uring::probe(config)
}

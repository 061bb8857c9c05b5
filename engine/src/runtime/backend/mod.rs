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
use std::time::{Duration, Instant, SystemTime};

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

/// Bytes of a `cmsghdr`, and the alignment of every control message and its data.
const CMSG_HDR_LEN: usize = std::mem::size_of::<libc::cmsghdr>();
const CMSG_ALIGN: usize = std::mem::size_of::<usize>();

const fn cmsg_align(len: usize) -> usize {
    (len + CMSG_ALIGN - 1) & !(CMSG_ALIGN - 1)
}

/// Control buffer space for one receive timestamp (`CMSG_SPACE` of a `timespec`).
pub(crate) const CONTROL_LEN: usize =
    cmsg_align(CMSG_HDR_LEN) + cmsg_align(std::mem::size_of::<libc::timespec>());

/// Asks the kernel to stamp every datagram `socket` receives with its arrival time
/// (`SO_TIMESTAMPNS`), which the drivers read from the control buffer. Returns whether the
/// kernel agreed; without it datagrams simply carry no stamp.
pub(crate) fn enable_rx_timestamps(socket: &UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `optlen` bytes from `optval`, which points at a live c_int
    // of that size; the descriptor is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// `N` bytes of `b` at `at`, if there are that many.
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Reads a native-endian signed integer of 4 or 8 bytes.
fn read_int(bytes: &[u8]) -> Option<i64> {
    match bytes.len() {
        4 => Some(i64::from(i32::from_ne_bytes(bytes_at(bytes, 0)?))),
        8 => Some(i64::from_ne_bytes(bytes_at(bytes, 0)?)),
        _ => None,
    }
}

/// The kernel's receive timestamp (`SCM_TIMESTAMPNS`) in the control messages `control`
/// holds, as a time since the Unix epoch. Every length is checked against the buffer; a
/// control area without a well-formed stamp gives `None`.
pub(crate) fn parse_rx_timestamp(control: &[u8]) -> Option<Duration> {
    // `struct cmsghdr`: a `size_t` length, then the level and type as `int`s.
    let len_size = std::mem::size_of::<usize>();
    let mut off = 0;
    while off + CMSG_HDR_LEN <= control.len() {
        let cmsg_len = usize::from_ne_bytes(bytes_at(control, off)?);
        let level = i32::from_ne_bytes(bytes_at(control, off + len_size)?);
        let kind = i32::from_ne_bytes(bytes_at(control, off + len_size + 4)?);
        // `off + CMSG_HDR_LEN <= control.len()`, so the subtraction cannot wrap, and a
        // length near `usize::MAX` cannot overflow an addition.
        if cmsg_len < CMSG_HDR_LEN || cmsg_len > control.len() - off {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            let data = &control[off + cmsg_align(CMSG_HDR_LEN)..off + cmsg_len];
            // The kernel's `__kernel_old_timespec`: both fields are a C `long`, whatever
            // `time_t` the C library chose (musl's is 64-bit everywhere).
            let sec_len = std::mem::size_of::<libc::c_long>();
            let nsec_len = std::mem::size_of::<libc::c_long>();
            let sec = read_int(data.get(..sec_len)?)?;
            let nsec = read_int(data.get(sec_len..sec_len + nsec_len)?)?;
            if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
                return None;
            }
            return Some(Duration::new(sec as u64, nsec as u32));
        }
        off += cmsg_align(cmsg_len);
    }
    None
}

/// The system clock as a time since the Unix epoch, to compare with receive stamps.
pub(crate) fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// How long a datagram stamped `stamp` waited before being read at `wall` (both from
/// the system clock, read moments apart on one machine). A stamp after `wall` (the clock
/// was stepped back between them) counts as no wait.
pub(crate) fn waited(wall: Duration, stamp: Option<Duration>) -> Option<Duration> {
    stamp.map(|s| wall.saturating_sub(s))
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
    /// A datagram of at most the maximum size arrived on the socket of `key`, after
    /// waiting `waited` in the kernel (from its receive timestamp; `None` when the socket
    /// gives none).
    fn datagram(
        &mut self,
        now: Instant,
        key: SlotKey,
        from: SocketAddr,
        data: &mut [u8],
        waited: Option<Duration>,
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A control message as the kernel lays it out: header, data, padding to alignment.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let len = cmsg_align(CMSG_HDR_LEN) + data.len();
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.resize(cmsg_align(CMSG_HDR_LEN), 0);
        v.extend_from_slice(data);
        v.resize(cmsg_align(len), 0);
        v
    }

    fn timespec(sec: i64, nsec: i64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&sec.to_ne_bytes());
        v.extend_from_slice(&nsec.to_ne_bytes());
        v
    }

    #[test]
    fn receive_timestamp_is_found_among_control_messages() {
        let stamp = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1_700_000_000, 5),
        );
        assert_eq!(stamp.len(), CONTROL_LEN);
        assert_eq!(
            parse_rx_timestamp(&stamp),
            Some(Duration::new(1_700_000_000, 5))
        );
        // After another message (an IP-level one the socket did not ask for).
        let mut two = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        two.extend_from_slice(&stamp);
        assert_eq!(
            parse_rx_timestamp(&two),
            Some(Duration::new(1_700_000_000, 5))
        );
    }

    #[test]
    fn malformed_control_messages_give_no_timestamp() {
        let good = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(10, 20));
        // Cut anywhere short of the whole message.
        for cut in 0..good.len() - 1 {
            assert_eq!(parse_rx_timestamp(&good[..cut]), None, "cut at {cut}");
        }
        // Another type, a nanosecond field out of range, a negative time.
        assert_eq!(
            parse_rx_timestamp(&cmsg(
                libc::SOL_SOCKET,
                libc::SCM_TIMESTAMP,
                &timespec(10, 20)
            )),
            None
        );
        for (sec, nsec) in [(10, 1_000_000_000), (10, -1), (-1, 0)] {
            let bad = cmsg(
                libc::SOL_SOCKET,
                libc::SCM_TIMESTAMPNS,
                &timespec(sec, nsec),
            );
            assert_eq!(parse_rx_timestamp(&bad), None, "{sec} {nsec}");
        }
        // A header whose length is shorter than itself, or runs past the buffer.
        let mut short = good.clone();
        short[..std::mem::size_of::<usize>()].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(parse_rx_timestamp(&short), None);
        let mut long = good;
        long[..std::mem::size_of::<usize>()].copy_from_slice(&4096usize.to_ne_bytes());
        assert_eq!(parse_rx_timestamp(&long), None);
        // After a well-formed message, a header claiming the largest length there is.
        let mut huge = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        let at = huge.len();
        huge.extend_from_slice(&cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1, 2),
        ));
        huge[at..at + std::mem::size_of::<usize>()].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse_rx_timestamp(&huge), None);
    }

    #[test]
    fn waited_never_goes_negative() {
        let wall = Duration::from_secs(100);
        assert_eq!(waited(wall, None), None);
        assert_eq!(
            waited(wall, Some(Duration::from_secs(99))),
            Some(Duration::from_secs(1))
        );
        // A clock stepped back between the stamp and the read.
        assert_eq!(
            waited(wall, Some(Duration::from_secs(101))),
            Some(Duration::ZERO)
        );
    }

    proptest! {
        #[test]
        fn any_control_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_rx_timestamp(&bytes);
        }
    }
}

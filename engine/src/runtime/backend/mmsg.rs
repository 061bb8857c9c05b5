//! Batched datagram syscalls for the portable backend: `recvmmsg` and `sendmmsg`.
//!
//! The portable backend's only `unsafe`: the two libc calls and the zeroing of the C
//! headers they take. Every pointer a header holds is written right before the call from
//! buffers owned by the batch (or borrowed for the call), and the kernel keeps none of
//! them after the call returns, so nothing here outlives one call.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

use super::{parse_rx_timestamp, parse_sockaddr, waited, wall_clock, Sink, SlotKey, CONTROL_LEN};
use crate::runtime::stats::ShardStats;

/// Datagrams per syscall.
pub(crate) const BATCH: usize = 32;
const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers (and, on some
    // libcs, private padding fields), for which all zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// Receive buffers, source addresses and headers for one `recvmmsg` of up to [`BATCH`].
pub(crate) struct RecvBatch {
    /// `BATCH` buffers of `buf_len` bytes, back to back.
    bufs: Box<[u8]>,
    buf_len: usize,
    names: Box<[[u8; NAME_LEN]]>,
    /// One control buffer per datagram, for its receive timestamp.
    controls: Box<[[u8; CONTROL_LEN]]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

/// One datagram of the last [`RecvBatch::recv`].
pub(crate) struct Received<'a> {
    /// The sender, `None` when the kernel gave an address family we do not parse.
    pub(crate) from: Option<SocketAddr>,
    /// The payload, at most the buffer length.
    pub(crate) data: &'a mut [u8],
    /// The datagram was longer than the buffer and the kernel cut it (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    /// When the kernel received it (since the Unix epoch), if the socket stamps datagrams.
    pub(crate) stamp: Option<std::time::Duration>,
}

impl RecvBatch {
    /// Buffers of `buf_len` bytes: a longer datagram comes back marked truncated.
    pub(crate) fn new(buf_len: usize) -> Self {
        RecvBatch {
            bufs: vec![0; BATCH * buf_len].into_boxed_slice(),
            buf_len,
            names: vec![[0; NAME_LEN]; BATCH].into_boxed_slice(),
            controls: vec![[0; CONTROL_LEN]; BATCH].into_boxed_slice(),
            iovs: (0..BATCH).map(|_| empty_iovec()).collect(),
            msgs: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// Receives up to [`BATCH`] datagrams from `socket` without blocking and returns how
    /// many arrived; read them with [`get`](Self::get). `WouldBlock` when none is waiting.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // Each base pointer is taken once, after the array it points into was last
        // borrowed, so no later borrow invalidates it before the call.
        let buf_base = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            iov.iov_base = buf_base.wrapping_add(i * self.buf_len).cast();
            iov.iov_len = self.buf_len;
        }
        let iov_base = self.iovs.as_mut_ptr();
        let name_base = self.names.as_mut_ptr();
        let control_base = self.controls.as_mut_ptr();
        for (i, msg) in self.msgs.iter_mut().enumerate() {
            let hdr = &mut msg.msg_hdr;
            hdr.msg_name = name_base.wrapping_add(i).cast();
            hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            hdr.msg_iov = iov_base.wrapping_add(i);
            hdr.msg_iovlen = 1;
            hdr.msg_control = control_base.wrapping_add(i).cast();
            hdr.msg_controllen = CONTROL_LEN as _;
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: (1) `msgs` holds BATCH headers, matching `vlen`; (2) header i points at
        // name buffer i (NAME_LEN bytes, as `msg_namelen` says), control buffer i
        // (CONTROL_LEN bytes, as `msg_controllen` says) and iovec i, which points at
        // buffer i (`buf_len` bytes inside `bufs`); all are owned by `self`, which is
        // borrowed mutably for the call, and none was reborrowed after its pointer was
        // taken above; (3) the kernel writes no more than those lengths; (4) `socket`
        // keeps the descriptor open for the call; (5) with a null timeout the kernel keeps
        // no pointer after returning.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// One [`recv`](Self::recv) from `socket`, each datagram handed to `sink` as `key`'s:
    /// a truncated one is counted in `truncated`, one from an address family we do not
    /// parse in `recv_errors`. Returns how many datagrams the call read.
    pub(crate) fn recv_into<S: Sink>(
        &mut self,
        socket: &UdpSocket,
        key: SlotKey,
        now: std::time::Instant,
        sink: &mut S,
        stats: &ShardStats,
    ) -> io::Result<usize> {
        let n = self.recv(socket)?;
        let wall = wall_clock();
        for i in 0..n {
            let received = self.get(i);
            match received.from {
                _ if received.truncated => ShardStats::add(&stats.truncated, 1),
                Some(from) => {
                    let waited = waited(wall, received.stamp);
                    sink.datagram(now, key, from, received.data, waited)
                }
                None => ShardStats::add(&stats.recv_errors, 1),
            }
        }
        Ok(n)
    }

    /// Datagram `i` (below the count the last `recv` returned).
    pub(crate) fn get(&mut self, i: usize) -> Received<'_> {
        let msg = &self.msgs[i];
        let len = (msg.msg_len as usize).min(self.buf_len);
        let name_len = (msg.msg_hdr.msg_namelen as usize).min(NAME_LEN);
        let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let from = parse_sockaddr(&self.names[i][..name_len]);
        // `msg_controllen` is a `size_t` on glibc and a `socklen_t` on musl.
        #[allow(clippy::unnecessary_cast)]
        let control_len = (msg.msg_hdr.msg_controllen as usize).min(CONTROL_LEN);
        let stamp = parse_rx_timestamp(&self.controls[i][..control_len]);
        let start = i * self.buf_len;
        Received {
            from,
            data: &mut self.bufs[start..start + len],
            truncated,
            stamp,
        }
    }
}

/// Destination addresses and headers for one `sendmmsg` of up to [`BATCH`].
pub(crate) struct SendBatch {
    names: Vec<SockAddr>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        let unspecified = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendBatch {
            names: vec![unspecified; BATCH],
            iovs: (0..BATCH).map(|_| empty_iovec()).collect(),
            msgs: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// Sends the first [`BATCH`] of `datagrams` from `socket` without blocking. Returns
    /// how many the kernel took, always from the front; an error means the first one
    /// failed (`WouldBlock` when the socket's send buffer is full). Calling again with the
    /// rest reports the error that stopped a partial batch.
    pub(crate) fn send<'a>(
        &mut self,
        socket: &UdpSocket,
        datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        let mut count = 0;
        for ((to, data), (name, iov)) in
            datagrams.zip(self.names.iter_mut().zip(self.iovs.iter_mut()))
        {
            *name = SockAddr::from(to);
            // The kernel only reads through this pointer.
            iov.iov_base = data.as_ptr().cast_mut().cast();
            iov.iov_len = data.len();
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let iov_base = self.iovs.as_mut_ptr();
        for (i, msg) in self.msgs.iter_mut().enumerate().take(count) {
            let hdr = &mut msg.msg_hdr;
            hdr.msg_name = self.names[i].as_ptr().cast_mut().cast();
            hdr.msg_namelen = self.names[i].len();
            hdr.msg_iov = iov_base.wrapping_add(i);
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: (1) the first `count` headers are filled and `vlen` is `count`; (2)
        // header i points at destination i (`names[i]`, `msg_namelen` bytes, owned by
        // `self`) and iovec i, which points at the payload borrowed from `datagrams` for
        // `'a`, which outlives this call; the kernel only reads through it; (3) no control
        // buffer; (4) `socket` keeps the descriptor open for the call; (5) the kernel
        // keeps no pointer after returning.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT as _,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Receives until `want` datagrams arrived (loopback delivers asynchronously).
    fn recv_all(
        batch: &mut RecvBatch,
        socket: &UdpSocket,
        want: usize,
    ) -> Vec<(Option<SocketAddr>, Vec<u8>, bool)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want {
            assert!(
                Instant::now() < deadline,
                "only {} of {want} arrived",
                got.len()
            );
            match batch.recv(socket) {
                Ok(n) => {
                    for i in 0..n {
                        let r = batch.get(i);
                        got.push((r.from, r.data.to_vec(), r.truncated));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        got
    }

    #[test]
    fn batches_round_trip_in_order_and_flag_truncation() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        let mut send = SendBatch::new();
        let mut sent = 0;
        while sent < payloads.len() {
            let n = send
                .send(&a, payloads[sent..].iter().map(|p| (to, &p[..])))
                .unwrap();
            assert!(n > 0 && n <= BATCH);
            sent += n;
        }
        // Buffers of 30 bytes: payloads 31..=40 bytes long come back cut and flagged.
        let mut recv = RecvBatch::new(30);
        let got = recv_all(&mut recv, &b, payloads.len());
        for (i, (from, data, truncated)) in got.iter().enumerate() {
            assert_eq!(*from, Some(a.local_addr().unwrap()));
            let want = &payloads[i];
            assert_eq!(*truncated, want.len() > 30, "datagram {i}");
            assert_eq!(&data[..], &want[..want.len().min(30)]);
        }
    }

    #[test]
    fn empty_socket_would_block_and_empty_batch_sends_nothing() {
        let (a, b) = pair();
        let mut recv = RecvBatch::new(16);
        assert_eq!(recv.recv(&b).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let mut send = SendBatch::new();
        assert_eq!(send.send(&a, std::iter::empty()).unwrap(), 0);
    }

    #[test]
    fn failing_first_datagram_is_an_error() {
        let (a, _b) = pair();
        let mut send = SendBatch::new();
        // Port 0 is not a valid destination.
        let err = send
            .send(
                &a,
                [("127.0.0.1:0".parse().unwrap(), &b"x"[..])].into_iter(),
            )
            .unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::WouldBlock);
    }
}

//! `sendmmsg(2)` / `recvmmsg(2)` through `libc`: the raw batched-syscall baseline.
//!
//! Each call moves up to a batch of datagrams through one system call. Sockets stay
//! unconnected, as the runtime's and the std loop's are, so every datagram carries its
//! destination. IPv4 only (the benchmarks run on 127.0.0.1).

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;
use std::ptr;

/// A `sockaddr_in` for `addr`.
fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value of it.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(addr.ip().octets()),
    };
    sa
}

/// The IPv4 address of a loopback socket.
pub(crate) fn v4(addr: SocketAddr) -> io::Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the mmsg loop is IPv4 only",
        )),
    }
}

/// A batch of datagram buffers and the headers `sendmmsg`/`recvmmsg` read them through.
///
/// The header arrays hold pointers into `bufs` and `addr`; they are rebuilt before every
/// call, so the struct may move freely between calls.
pub(crate) struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    addr: Box<libc::sockaddr_in>,
}

impl Batch {
    /// `batch` buffers of `capacity` bytes, each starting as a copy of `fill` (which may be
    /// shorter), sending to `to`.
    pub(crate) fn new(batch: usize, capacity: usize, fill: &[u8], to: SocketAddrV4) -> Self {
        assert!(batch > 0 && fill.len() <= capacity);
        let mut buf = vec![0u8; capacity];
        buf[..fill.len()].copy_from_slice(fill);
        Self {
            bufs: vec![buf; batch],
            lens: vec![fill.len(); batch],
            // SAFETY (both): iovec and mmsghdr are plain old data; all-zero is valid (null
            // pointers, zero lengths) and every field used is set before each call.
            iovs: vec![unsafe { mem::zeroed() }; batch],
            hdrs: vec![unsafe { mem::zeroed() }; batch],
            addr: Box::new(sockaddr_in(to)),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Datagram `i` as last received or to be sent.
    pub(crate) fn datagram(&mut self, i: usize) -> &mut [u8] {
        let len = self.lens[i];
        &mut self.bufs[i][..len]
    }

    /// Points the first `n` headers at the buffers: `len` bytes each for receiving (`None`:
    /// whole buffers), `self.lens` for sending with the destination address.
    fn prepare(&mut self, n: usize, sending: bool) {
        for i in 0..n {
            let len = if sending {
                self.lens[i]
            } else {
                self.bufs[i].len()
            };
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: len,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            if sending {
                h.msg_name = (&mut *self.addr as *mut libc::sockaddr_in).cast();
                h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            } else {
                h.msg_name = ptr::null_mut();
                h.msg_namelen = 0;
            }
            self.hdrs[i].msg_len = 0;
        }
    }

    /// Sends datagrams `0..n` to the batch's destination, looping over partial sends;
    /// `fill(i, datagram)` writes each first.
    pub(crate) fn send(
        &mut self,
        fd: RawFd,
        n: usize,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> io::Result<()> {
        assert!(n <= self.capacity());
        for i in 0..n {
            fill(i, self.datagram(i));
        }
        self.prepare(n, true);
        let mut done = 0;
        while done < n {
            // SAFETY: the first `n` headers point at live buffers of the lengths given and at
            // `self.addr`, all owned by `self` and unaliased for the duration of the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += r as usize;
        }
        Ok(())
    }

    /// Receives up to a batch: blocks (up to the socket's `SO_RCVTIMEO`) for the first
    /// datagram, then takes whatever else is queued (`MSG_WAITFORONE`). Returns how many;
    /// [`datagram`](Self::datagram) reads them.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.capacity();
        self.prepare(n, false);
        // SAFETY: the headers point at `n` live, writable buffers owned by `self`; no name
        // or control buffers are given; the null timeout means none.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for i in 0..r {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        Ok(r)
    }

    /// Sends datagrams `0..n` as they are (after [`recv`](Self::recv): echoes them) to the
    /// batch's destination.
    pub(crate) fn send_as_is(&mut self, fd: RawFd, n: usize) -> io::Result<()> {
        self.send(fd, n, |_, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_batch_goes_through_and_back() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to_b = v4(b.local_addr().unwrap()).unwrap();
        let to_a = v4(a.local_addr().unwrap()).unwrap();
        let mut tx = Batch::new(8, 64, &[7u8; 20], to_b);
        tx.send(a.as_raw_fd(), 5, |i, d| d[0] = i as u8).unwrap();
        let mut rx = Batch::new(8, 64, &[], to_a);
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = rx.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                got.push(rx.datagram(i).to_vec());
            }
            // Echo this batch back to `a`.
            rx.send_as_is(b.as_raw_fd(), n).unwrap();
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), 20);
            assert_eq!(d[0], i as u8);
            assert_eq!(&d[1..], &[7u8; 19]);
        }
        let mut buf = [0u8; 64];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((n, buf[0]), (20, 0));
        assert_eq!(from, b.local_addr().unwrap());
    }
}

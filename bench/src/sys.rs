//! Host helpers for the transport and codec benchmarks: the kernel's UDP drop counters, the
//! open-file limit, socket buffer sizes, thread pinning and seeded payloads.
//!
//! Nothing here measures anything; these are the knobs and gauges around a measurement.

use std::fmt;
use std::io;
use std::net::UdpSocket;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Where Linux keeps the per-namespace UDP counters.
const SNMP_PATH: &str = "/proc/net/snmp";

/// One reading of the `Udp:` counters of `/proc/net/snmp`, by header name.
///
/// The file holds a header line and a value line per protocol (`Udp: InDatagrams NoPorts …`
/// then `Udp: 2362552 10750 …`); the columns are matched by name, not position, because
/// kernels add columns over time (`IgnoredMulti`, `MemErrors`). The counters are global to
/// the network namespace: another process's UDP traffic on the same host shows up too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpSnmp {
    fields: Vec<(String, u64)>,
}

impl UdpSnmp {
    /// Reads `/proc/net/snmp` now.
    pub fn read() -> io::Result<Self> {
        let text = std::fs::read_to_string(SNMP_PATH)?;
        Self::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no Udp: header and value lines in {SNMP_PATH}"),
            )
        })
    }

    /// Reads `/proc/net/snmp`, or `None` where it cannot be read (not Linux, no `/proc`):
    /// the benchmarks then print `n/a` instead of the drop counters.
    pub fn read_or_none() -> Option<Self> {
        Self::read().ok()
    }

    /// Parses the `Udp:` header and value lines out of the text of `/proc/net/snmp`.
    /// `None` unless both lines are present with the same number of columns. `UdpLite:` lines
    /// are not `Udp:` lines.
    pub fn parse(text: &str) -> Option<Self> {
        let mut udp = text
            .lines()
            .filter_map(|line| line.strip_prefix("Udp:"))
            .map(str::split_whitespace);
        let names = udp.next()?;
        let values: Vec<u64> = udp.next()?.map(str::parse).collect::<Result<_, _>>().ok()?;
        let names: Vec<&str> = names.collect();
        if names.len() != values.len() || names.is_empty() {
            return None;
        }
        Some(Self {
            fields: names.into_iter().map(str::to_owned).zip(values).collect(),
        })
    }

    /// The counter named `name` (as in the header line), if this kernel has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// What changed from `before` to `self` in the counters that show kernel drops.
    pub fn since(&self, before: &UdpSnmp) -> SnmpDelta {
        let delta = |name| Some(self.get(name)?.wrapping_sub(before.get(name)?));
        SnmpDelta {
            rcvbuf_errors: delta("RcvbufErrors"),
            sndbuf_errors: delta("SndbufErrors"),
        }
    }
}

/// Growth of the UDP drop counters over one measurement: `RcvbufErrors` (datagrams dropped
/// because a receive buffer was full) and `SndbufErrors` (sends refused for want of send
/// buffer). `None` where the counter could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnmpDelta {
    /// `RcvbufErrors` after − before.
    pub rcvbuf_errors: Option<u64>,
    /// `SndbufErrors` after − before.
    pub sndbuf_errors: Option<u64>,
}

impl SnmpDelta {
    /// The delta between two optional readings (`None` if either is missing).
    pub fn between(before: Option<&UdpSnmp>, after: Option<&UdpSnmp>) -> Self {
        match (before, after) {
            (Some(b), Some(a)) => a.since(b),
            _ => Self::default(),
        }
    }

    /// Adds another delta (a missing counter stays missing).
    pub fn add(&mut self, other: &SnmpDelta) {
        let sum = |a: Option<u64>, b: Option<u64>| Some(a?.wrapping_add(b?));
        self.rcvbuf_errors = sum(self.rcvbuf_errors, other.rcvbuf_errors);
        self.sndbuf_errors = sum(self.sndbuf_errors, other.sndbuf_errors);
    }
}

impl fmt::Display for SnmpDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("+{v}"));
        write!(
            f,
            "RcvbufErrors {} SndbufErrors {}",
            show(self.rcvbuf_errors),
            show(self.sndbuf_errors)
        )
    }
}

/// The open-file limits after [`raise_nofile_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now: the hard limit, or what could be had.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (to `/proc/sys/fs/nr_open` when the hard
/// limit is unlimited) and reports the limits. Never lowers it.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    let mut target = lim.rlim_max;
    if target == libc::RLIM_INFINITY {
        // Linux refuses a soft limit above fs.nr_open even when the hard one is unlimited.
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if target > before {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = target;
    }
    Ok(NofileLimit {
        before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Asks for a receive buffer of `bytes` on `socket` and returns what the kernel granted
/// (`SO_RCVBUF` reads back as twice the request, capped at `net.core.rmem_max` × 2).
pub fn set_recv_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<usize> {
    let s = socket2::SockRef::from(socket);
    s.set_recv_buffer_size(bytes)?;
    s.recv_buffer_size()
}

/// Pins the calling thread to core `index` modulo the cores this process may use, as the
/// runtime pins shard `index`. Returns false where pinning is unavailable or refused.
pub fn pin_to_core(index: usize) -> bool {
    match core_affinity::get_core_ids() {
        Some(cores) if !cores.is_empty() => {
            core_affinity::set_for_current(cores[index % cores.len()])
        }
        _ => false,
    }
}

/// `len` bytes drawn from a generator seeded with `seed`: datagram filler and codec garbage
/// that is the same on every run and every machine.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/net/snmp` (kernel 6.x), columns as the kernel prints them.
    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 4241
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 2362552 10750 634613 3016385 634613 7 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 1 2 3 4 5 6 7 8 9
";

    #[test]
    fn snmp_is_parsed_by_header_name() {
        let s = UdpSnmp::parse(SNMP).unwrap();
        assert_eq!(s.get("InDatagrams"), Some(2_362_552));
        assert_eq!(s.get("RcvbufErrors"), Some(634_613));
        assert_eq!(s.get("SndbufErrors"), Some(7));
        assert_eq!(s.get("Forwarding"), None, "Ip: lines are not Udp: lines");
        assert_eq!(s.get("Nope"), None);
        // Columns in another order (a different kernel) still match by name.
        let reordered = "Udp: SndbufErrors RcvbufErrors\nUdp: 1 2\n";
        let r = UdpSnmp::parse(reordered).unwrap();
        assert_eq!(
            (r.get("RcvbufErrors"), r.get("SndbufErrors")),
            (Some(2), Some(1))
        );
    }

    #[test]
    fn malformed_snmp_is_refused() {
        assert_eq!(UdpSnmp::parse(""), None);
        assert_eq!(UdpSnmp::parse("Udp: A B\n"), None, "header without values");
        assert_eq!(UdpSnmp::parse("Udp: A B\nUdp: 1\n"), None, "column count");
        assert_eq!(UdpSnmp::parse("Udp: A\nUdp: x\n"), None, "not a number");
        assert_eq!(UdpSnmp::parse("UdpLite: A\nUdpLite: 1\n"), None);
    }

    #[test]
    fn deltas_subtract_add_and_print() {
        let before = UdpSnmp::parse("Udp: RcvbufErrors SndbufErrors\nUdp: 10 3\n").unwrap();
        let after = UdpSnmp::parse("Udp: RcvbufErrors SndbufErrors\nUdp: 25 3\n").unwrap();
        let mut d = after.since(&before);
        assert_eq!(d.rcvbuf_errors, Some(15));
        assert_eq!(d.sndbuf_errors, Some(0));
        d.add(&d.clone());
        assert_eq!(d.to_string(), "RcvbufErrors +30 SndbufErrors +0");
        let none = SnmpDelta::between(None, Some(&after));
        assert_eq!(none.to_string(), "RcvbufErrors n/a SndbufErrors n/a");
        let no_sndbuf = UdpSnmp::parse("Udp: RcvbufErrors\nUdp: 1\n").unwrap();
        assert_eq!(no_sndbuf.since(&no_sndbuf).sndbuf_errors, None);
    }

    #[test]
    fn this_host_has_udp_counters() {
        // Linux only; elsewhere the benches print n/a.
        if cfg!(target_os = "linux") {
            let s = UdpSnmp::read().unwrap();
            assert!(s.get("RcvbufErrors").is_some());
        }
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let lim = raise_nofile_limit().unwrap();
        assert!(lim.soft >= lim.before);
        assert!(lim.soft <= lim.hard);
        // Idempotent.
        assert_eq!(raise_nofile_limit().unwrap().soft, lim.soft);
    }

    #[test]
    fn recv_buffer_is_granted() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let granted = set_recv_buffer(&s, 256 * 1024).unwrap();
        assert!(granted > 0);
    }

    #[test]
    fn payloads_are_seeded() {
        assert_eq!(random_bytes(64, 1), random_bytes(64, 1));
        assert_ne!(random_bytes(64, 1), random_bytes(64, 2));
        assert_eq!(random_bytes(1400, 3).len(), 1400);
        assert!(random_bytes(0, 3).is_empty());
    }
}

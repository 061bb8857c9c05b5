//! What the load generator reads from, and asks of, the operating system: open-file
//! limits, CPU time, memory, kernel UDP drops and receive backlogs.

use std::collections::HashSet;

use anyhow::{bail, Result};

/// File descriptors needed beyond one socket per node: shards' rings and wake-ups, stdio,
/// report files.
const SPARE_FILES: u64 = 256;

/// Lower the calling thread's scheduling priority as far as it goes (nice 19), so that it
/// runs on what the other threads leave. Best effort: a refusal leaves it as it was.
pub(crate) fn lowest_priority() {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id
    // changes that thread's nice value only, and takes no pointers.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// Turn transparent huge pages off for this process (`PR_SET_THP_DISABLE`), so that
/// memory is faulted in 4 KiB at a time. The allocator asks for huge pages on its arenas,
/// and with thousands of member tables growing at once the kernel spent 12% of a 5000-node
/// cold start zeroing 2 MiB pages (`results/2026-12-06-vm-cold-start`). Returns whether the
/// kernel agreed; where it refuses, huge pages stay as they were.
pub(crate) fn disable_huge_pages() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and sets a flag on this process's
    // memory map; no pointers are passed.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

/// Raise the open-file soft limit to what `nodes` sockets need, as far as the hard limit
/// allows; fail at once, naming the fix, when the hard limit is too low.
pub(crate) fn raise_open_files(nodes: usize) -> Result<()> {
    let need = nodes as u64 + SPARE_FILES;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        bail!(
            "{nodes} nodes need {need} open files but the hard limit is {} (raise it with `ulimit -Hn {need}` as root or LimitNOFILE=, or run fewer --nodes)",
            lim.rlim_max
        );
    }
    let raised = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct; the new soft limit is within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        bail!(
            "cannot raise the open-file limit to {need}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn rusage() -> libc::rusage {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u
}

/// User and system CPU seconds of this process so far.
pub(crate) fn cpu_seconds() -> f64 {
    let u = rusage();
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Peak resident set size of this process so far.
pub(crate) fn peak_rss_bytes() -> u64 {
    rusage().ru_maxrss.max(0) as u64 * 1024
}

/// Current resident set size.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Cores available to this process.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The kernel's UDP receive errors (`RcvbufErrors` + `InErrors` of /proc/net/snmp, which
/// overlap: the larger), 0 where unreadable.
pub(crate) fn udp_receive_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    let field = |want: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("InErrors").max(field("RcvbufErrors"))
}

/// Kernel, CPU and cores.
pub(crate) fn machine_line() -> String {
    crate::placement::machine_line()
}

/// The receive buffer to ask for: `want`, capped by `net.core.rmem_max` (the most an
/// unprivileged `SO_RCVBUF` gets).
pub(crate) fn socket_buffer(want: usize) -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(want, |max| want.min(max))
}

/// Datagrams waiting in the receive buffers of a set of sockets: how many of the sockets
/// hold any, and their bytes (the kernel's accounting, which counts each datagram's buffer
/// overhead too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backlog {
    pub(crate) sockets: u64,
    pub(crate) bytes: u64,
}

/// The backlog of the sockets bound to `ports`, from the text of `/proc/net/udp` or
/// `/proc/net/udp6` (local address `ADDR:PORT` and `tx_queue:rx_queue` in hex). Lines it
/// cannot read are skipped.
pub(crate) fn udp_backlog(table: &str, ports: &HashSet<u16>) -> Backlog {
    let mut b = Backlog::default();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(local), Some(queues)) = (fields.nth(1), fields.nth(2)) else {
            continue;
        };
        let port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        let rx = queues
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok());
        if let (Some(port), Some(rx)) = (port, rx) {
            if rx > 0 && ports.contains(&port) {
                b.sockets += 1;
                b.bytes += rx;
            }
        }
    }
    b
}

/// The backlog of the sockets bound to `ports`, read from `/proc/net/udp{,6}` now.
pub(crate) fn read_udp_backlog(ports: &HashSet<u16>) -> Backlog {
    let mut total = Backlog::default();
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            let b = udp_backlog(&text, ports);
            total.sockets += b.sockets;
            total.bytes += b.bytes;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::{udp_backlog, Backlog};

    #[test]
    fn backlog_counts_only_the_given_ports_with_data_waiting() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
   1: 0100007F:EDD1 00000000:0000 07 00000000:007B2540 00:00000000 00000000     0        0 1 2 0000000000000000 106004\n\
   2: 0100007F:C398 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 0\n\
   3: 0100007F:9C10 00000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 4 2 0000000000000000 0\n\
   4: 00000000:0044 00000000:0000 07 00000000:00001000 00:00000000 00000000     0        0 5 2 0000000000000000 0\n\
   garbage line\n";
        let ports = [0xEDD1, 0xC398, 0x9C10].into_iter().collect();
        assert_eq!(
            udp_backlog(table, &ports),
            Backlog {
                sockets: 2,
                bytes: 0x007B_2540 + 0x300
            }
        );
        assert_eq!(udp_backlog(table, &Default::default()), Backlog::default());
    }
}

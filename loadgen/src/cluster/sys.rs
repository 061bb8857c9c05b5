//! What the load generator reads from, and asks of, the operating system: open-file
//! limits, CPU time, memory, kernel UDP drops.

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

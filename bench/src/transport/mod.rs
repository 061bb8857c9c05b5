//! Transport measurements on loopback: the Hearsay runtime on both backends, side by side
//! with the `tokio-uring` crate, a plain std `UdpSocket` loop and a raw
//! `sendmmsg`/`recvmmsg` loop.
//!
//! `benches/transport.rs` drives these through criterion; this module holds the harnesses
//! so that they are unit-tested and so that the bench file is only the criterion glue.
//!
//! # Transports
//!
//! - [`Transport::HearsayIoUring`], [`Transport::HearsayPortable`]: the runtime on its two
//!   backends, [`SHARDS`] pinned shards; [`Transport::HearsayIoUringUnstamped`]: io_uring
//!   without the kernel's receive timestamps, to show what they cost.
//! - [`Transport::TokioUring`]: the `tokio-uring` crate (0.5), one tokio-uring runtime per
//!   pinned thread, `tokio_uring::net::UdpSocket` used as its API is meant to be used:
//!   `send_to` / `recv_from` with owned, reused buffers, one task per concurrent activity.
//!   That is one SQE per datagram (`SENDMSG` / `RECVMSG`, with a `msghdr`, an iovec and an
//!   address allocated per operation), no multishot receive, no provided buffers (every
//!   armed receive holds its own buffer), SQEs submitted when the thread is about to park
//!   and completions delivered through tokio's epoll. It measures what an application gets
//!   from tokio-uring instead of driving io_uring itself, as the runtime does.
//! - [`Transport::StdUdp`], [`Transport::LibcMmsg`]: one thread per role, blocking std
//!   calls or `sendmmsg`/`recvmmsg` batches of [`MMSG_BATCH`].
//!
//! # Shapes
//!
//! - **One flow** ([`Flow::one_flow`], every transport): one sender socket, one receiver
//!   socket. For the runtime, a sender endpoint and a receiver endpoint on its two shards;
//!   for the baselines, a sender thread and a receiver thread pinned to cores 0 and 1 (for
//!   tokio-uring, each with its own runtime: a sending task and an acknowledgement-reading
//!   task on the sender's socket, a counting task on the receiver's).
//! - **Many sockets** ([`Flow::many_sockets`], [`Transport::RELAY`]: the runtime and
//!   tokio-uring): [`MANY_SOCKETS`] endpoints on [`SHARDS`] shards (tokio-uring: sockets
//!   round robin on two threads, a `recv_from` task per socket) passing [`RELAY_TOKENS`]
//!   tokens, each hop from a random endpoint to a random other one, sent from the socket
//!   that received it.
//! - **Latency** ([`latency`], every transport): paced ping-pong; tokio-uring paces on
//!   tokio's timer (millisecond resolution).
//!
//! # Flow control and drops
//!
//! A run sends a fixed count and ends when the receiver has counted that many, or when its
//! count has not grown for [`GIVE_UP`] (what is missing was dropped). Every datagram carries a
//! run id, so a straggler from an abandoned run is never counted in a later one.
//!
//! - One flow: the receiver acknowledges cumulatively every [`ACK_EVERY`] datagrams (and at
//!   the last), and the sender keeps at most [`WINDOW`] datagrams unacknowledged, so the
//!   receive buffer (asked for [`RECV_BUFFER`] on every socket) never holds more than the
//!   window and drops do not dominate. The acknowledgements travel over the same transport
//!   and are part of the cost measured (one small datagram back per [`ACK_EVERY`]). If the
//!   window stays full for [`WRITE_OFF`] the sender writes its contents off as lost and goes
//!   on, so a drop costs at most that much and never hangs the run.
//! - Many sockets: each received token is forwarded (one send per receive), so exactly the
//!   injected number of tokens is in flight, spread over thousands of sockets; no
//!   acknowledgements are needed. A dropped token ends its hops early and the run ends by
//!   [`GIVE_UP`].
//!
//! The elapsed time of a run is from just before the first send to the last counted
//! arrival (the time waiting to give up is not in it). Throughput is *received* datagrams per
//! second: when some were lost, [`RunReport::criterion_time`] scales the elapsed time by
//! requested / received so criterion's element count stays true. Losses, window write-offs,
//! the kernel's `RcvbufErrors`/`SndbufErrors` deltas and the runtime's own error counters
//! are summed per benchmark in a [`Tally`] and printed next to criterion's figure.

pub mod latency;
mod mmsg;
mod probe;
mod runtime;
mod threads;
mod tokio_uring_baseline;
mod wire;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearsay::runtime::{io_uring_support, BackendChoice, RuntimeConfig, Stats};

use crate::sys::{raise_nofile_limit, SnmpDelta, UdpSnmp};

pub use latency::{measure_latency, LatencyPlan, LatencyReport};
pub use probe::GIVE_UP;

/// Payload sizes measured: a small control message and a full datagram of the default
/// 1400-byte frame size.
pub const PAYLOADS: [usize; 2] = [64, 1400];
/// Datagrams per criterion iteration; `Throughput::Elements(DATAGRAMS_PER_ITER)` makes
/// criterion print datagrams per second.
pub const DATAGRAMS_PER_ITER: u64 = 1024;
/// Most one-flow datagrams unacknowledged at once.
pub const WINDOW: u64 = 256;
/// The one-flow receiver acknowledges every this many datagrams.
pub const ACK_EVERY: u64 = 32;
/// `SO_RCVBUF` asked for on every socket (granted up to `net.core.rmem_max`).
pub const RECV_BUFFER: usize = 4 << 20;
/// A one-flow sender whose window has been full this long writes it off as lost.
pub const WRITE_OFF: Duration = Duration::from_millis(20);
/// Shards (threads) of the runtime; also the baselines' two threads.
pub const SHARDS: usize = 2;
/// Endpoints of the many-sockets shape.
pub const MANY_SOCKETS: usize = 5000;
/// Tokens in flight in the many-sockets shape.
pub const RELAY_TOKENS: u64 = 1024;
/// Datagrams per `sendmmsg`/`recvmmsg` call in the raw loop.
pub const MMSG_BATCH: usize = 32;
/// File descriptors kept free besides the many-sockets endpoints (the runtime's rings and
/// eventfds, criterion's files, stdio).
const FD_RESERVE: u64 = 64;

/// The instant all timestamps count from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `t` (0 for instants before it).
#[inline]
pub(crate) fn nanos(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// The transports measured side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The Hearsay runtime on its io_uring backend.
    HearsayIoUring,
    /// The same with the kernel's receive timestamps off
    /// (`RuntimeConfig::receive_timestamps`): what the input-delay reports cost.
    HearsayIoUringUnstamped,
    /// The Hearsay runtime on its portable (epoll) backend.
    HearsayPortable,
    /// The `tokio-uring` crate's runtime and `UdpSocket`, one runtime per thread: one
    /// `send_to` / `recv_from` SQE per datagram.
    TokioUring,
    /// One thread per role, std `UdpSocket`, one blocking call per datagram.
    StdUdp,
    /// One thread per role, `sendmmsg`/`recvmmsg` in batches of [`MMSG_BATCH`].
    LibcMmsg,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 6] = [
        Transport::HearsayIoUring,
        Transport::HearsayIoUringUnstamped,
        Transport::HearsayPortable,
        Transport::TokioUring,
        Transport::StdUdp,
        Transport::LibcMmsg,
    ];
    /// The transports that host the many-sockets relay: the runtime's backends and
    /// tokio-uring (a task per socket). The thread-per-role baselines would need a thread
    /// per socket and measure the scheduler.
    pub const RELAY: [Transport; 4] = [
        Transport::HearsayIoUring,
        Transport::HearsayIoUringUnstamped,
        Transport::HearsayPortable,
        Transport::TokioUring,
    ];

    /// Whether this transport can run here: `Err` with the reason when io_uring is asked
    /// for and the kernel or sandbox does not allow it.
    pub fn check(self) -> Result<(), Unavailable> {
        match self {
            Transport::HearsayIoUring
            | Transport::HearsayIoUringUnstamped
            | Transport::HearsayPortable => runtime_config(self).map(|_| ()),
            Transport::TokioUring => tokio_uring_baseline::check(),
            Transport::StdUdp | Transport::LibcMmsg => Ok(()),
        }
    }

    /// The benchmark id part naming this transport.
    pub fn name(self) -> &'static str {
        match self {
            Transport::HearsayIoUring => "hearsay-io_uring",
            Transport::HearsayIoUringUnstamped => "hearsay-io_uring-unstamped",
            Transport::HearsayPortable => "hearsay-portable",
            Transport::TokioUring => "tokio-uring",
            Transport::StdUdp => "std-udp",
            Transport::LibcMmsg => "libc-mmsg32",
        }
    }
}

/// Why a transport cannot be measured here (io_uring unavailable, a socket refused, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The runtime configuration for a runtime transport: [`SHARDS`] pinned shards, the chosen
/// backend, [`RECV_BUFFER`] per socket, defaults otherwise (1400-byte datagrams, 1024
/// receive buffers per shard). `Err` when io_uring is asked for and unavailable.
pub(crate) fn runtime_config(transport: Transport) -> Result<RuntimeConfig, Unavailable> {
    let backend = match transport {
        Transport::HearsayIoUring | Transport::HearsayIoUringUnstamped => BackendChoice::IoUring,
        Transport::HearsayPortable => BackendChoice::Portable,
        other => return Err(Unavailable(format!("{} is not a runtime", other.name()))),
    };
    let config = RuntimeConfig {
        shards: SHARDS,
        backend,
        socket_recv_buffer: Some(RECV_BUFFER),
        receive_timestamps: transport != Transport::HearsayIoUringUnstamped,
        ..RuntimeConfig::default()
    };
    if backend == BackendChoice::IoUring {
        io_uring_support(&config).map_err(|why| Unavailable(format!("io_uring: {why}")))?;
    }
    Ok(config)
}

/// What a harness reports of one run.
pub(crate) struct Outcome {
    sent: u64,
    received: u64,
    elapsed: Duration,
    write_offs: u64,
}

impl Outcome {
    /// A run that started at `start` and whose last counted arrival was at `last_ns`.
    pub(crate) fn new(
        start: Instant,
        sent: u64,
        received: u64,
        last_ns: u64,
        write_offs: u64,
    ) -> Self {
        let start_ns = nanos(start);
        let elapsed = if received > 0 && last_ns > start_ns {
            Duration::from_nanos(last_ns - start_ns)
        } else {
            start.elapsed()
        };
        Self {
            sent,
            received,
            elapsed,
            write_offs,
        }
    }
}

/// A set-up measurement that runs one shape on one transport.
pub(crate) trait Harness {
    /// Sends `count` datagrams and waits for them (or gives up on the lost).
    fn run(&mut self, count: u64) -> Outcome;
    /// The runtime's counters, for a runtime transport.
    fn runtime_stats(&self) -> Option<Stats>;
    /// What runs, for the report.
    fn describe(&self) -> String;
}

/// Growth of the runtime's error counters over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Receive errors.
    pub recv_errors: u64,
    /// io_uring: multishot receives stopped for want of provided buffers.
    pub recv_buffers_exhausted: u64,
    /// Datagrams over the size limit.
    pub truncated: u64,
}

impl RuntimeCounters {
    fn between(before: &Stats, after: &Stats) -> Self {
        Self {
            send_errors: after.send_errors - before.send_errors,
            recv_errors: after.recv_errors - before.recv_errors,
            recv_buffers_exhausted: after.recv_buffers_exhausted - before.recv_buffers_exhausted,
            truncated: after.truncated - before.truncated,
        }
    }

    fn add(&mut self, o: &Self) {
        self.send_errors += o.send_errors;
        self.recv_errors += o.recv_errors;
        self.recv_buffers_exhausted += o.recv_buffers_exhausted;
        self.truncated += o.truncated;
    }
}

/// One measured run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// Datagrams the run was to deliver.
    pub requested: u64,
    /// Datagrams sent (the sender may stop short only if the run was abandoned).
    pub sent: u64,
    /// Datagrams counted by the receivers.
    pub received: u64,
    /// From just before the first send to the last counted arrival.
    pub elapsed: Duration,
    /// Times the one-flow sender wrote its window off as lost.
    pub write_offs: u64,
    /// Kernel UDP drop counters over the run.
    pub snmp: SnmpDelta,
    /// The runtime's error counters over the run (runtime transports).
    pub runtime: Option<RuntimeCounters>,
}

impl RunReport {
    /// Sent but not received.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// The time to hand criterion for `requested` elements: the elapsed time, scaled by
    /// requested / received when datagrams were lost, so that the reported throughput is
    /// the rate at which datagrams *arrived*.
    pub fn criterion_time(&self) -> Duration {
        if self.received >= self.requested || self.received == 0 {
            return self.elapsed;
        }
        self.elapsed
            .mul_f64(self.requested as f64 / self.received as f64)
    }
}

/// One shape on one transport, set up and ready to run.
pub struct Flow {
    harness: Box<dyn Harness>,
}

impl Flow {
    /// One sender and one receiver socket of `transport`, `payload` bytes per datagram.
    pub fn one_flow(transport: Transport, payload: usize) -> Result<Self, Unavailable> {
        assert!(payload >= wire::HEADER_LEN, "payload below the header size");
        let harness: Box<dyn Harness> = match transport {
            Transport::HearsayIoUring
            | Transport::HearsayIoUringUnstamped
            | Transport::HearsayPortable => Box::new(runtime::RuntimeFlow::new(
                runtime_config(transport)?,
                payload,
            )?),
            Transport::TokioUring => Box::new(tokio_uring_baseline::UringFlow::new(payload)?),
            Transport::StdUdp => Box::new(threads::ThreadFlow::new(threads::Api::Std, payload)?),
            Transport::LibcMmsg => Box::new(threads::ThreadFlow::new(threads::Api::Mmsg, payload)?),
        };
        Ok(Self { harness })
    }

    /// `sockets` relay endpoints of `transport` (one of [`Transport::RELAY`]),
    /// [`RELAY_TOKENS`] tokens of `payload` bytes in flight.
    pub fn many_sockets(
        transport: Transport,
        sockets: usize,
        payload: usize,
    ) -> Result<Self, Unavailable> {
        assert!(payload >= wire::HEADER_LEN, "payload below the header size");
        let harness: Box<dyn Harness> = match transport {
            Transport::TokioUring => Box::new(tokio_uring_baseline::UringRelay::new(
                sockets,
                payload,
                RELAY_TOKENS,
            )?),
            _ => Box::new(runtime::RuntimeRelay::new(
                runtime_config(transport)?,
                sockets,
                payload,
                RELAY_TOKENS,
            )?),
        };
        Ok(Self { harness })
    }

    /// Delivers `count` datagrams (or gives up on the lost) and reports the run.
    pub fn run(&mut self, count: u64) -> RunReport {
        let stats = self.harness.runtime_stats();
        let snmp = UdpSnmp::read_or_none();
        let out = self.harness.run(count);
        let snmp = SnmpDelta::between(snmp.as_ref(), UdpSnmp::read_or_none().as_ref());
        let runtime = stats
            .zip(self.harness.runtime_stats())
            .map(|(b, a)| RuntimeCounters::between(&b, &a));
        RunReport {
            requested: count,
            sent: out.sent,
            received: out.received,
            elapsed: out.elapsed,
            write_offs: out.write_offs,
            snmp,
            runtime,
        }
    }

    /// What runs (backend, shards, sockets), for the report.
    pub fn describe(&self) -> String {
        self.harness.describe()
    }
}

/// Runs summed over one benchmark, printed next to criterion's figure.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Runs (criterion samples and warm-up calls).
    pub runs: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Runs that lost datagrams.
    pub lossy_runs: u64,
    /// One-flow window write-offs.
    pub write_offs: u64,
    /// Time of all runs.
    pub elapsed: Duration,
    /// Kernel drop counters.
    pub snmp: SnmpDelta,
    /// Runtime error counters.
    pub runtime: Option<RuntimeCounters>,
}

impl Tally {
    /// Adds a run.
    pub fn add(&mut self, r: &RunReport) {
        if self.runs == 0 {
            self.snmp = r.snmp;
        } else {
            self.snmp.add(&r.snmp);
        }
        self.runs += 1;
        self.sent += r.sent;
        self.received += r.received;
        self.lossy_runs += u64::from(r.lost() > 0);
        self.write_offs += r.write_offs;
        self.elapsed += r.elapsed;
        if let Some(rt) = &r.runtime {
            self.runtime.get_or_insert_with(Default::default).add(rt);
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lost = self.sent.saturating_sub(self.received);
        let rate = self.received as f64 / self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} runs, {} sent, {} received ({:.0}/s overall), {} lost ({:.3}%; {} runs with \
             losses), {} window write-offs; {}",
            self.runs,
            self.sent,
            self.received,
            rate,
            lost,
            100.0 * lost as f64 / self.sent.max(1) as f64,
            self.lossy_runs,
            self.write_offs,
            self.snmp
        )?;
        if let Some(rt) = &self.runtime {
            write!(
                f,
                "; runtime send_errors +{} recv_errors +{} recv_buffers_exhausted +{} truncated +{}",
                rt.send_errors, rt.recv_errors, rt.recv_buffers_exhausted, rt.truncated
            )?;
        }
        Ok(())
    }
}

/// How many sockets the many-sockets shape gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketBudget {
    /// Endpoints to host.
    pub sockets: usize,
    /// Why fewer than asked, if so (for the group name and a printed message).
    pub limited_by: Option<String>,
}

/// Raises `RLIMIT_NOFILE` to its hard limit and says how many of `want` sockets fit under
/// it, keeping a reserve of descriptors for everything else.
pub fn socket_budget(want: usize) -> SocketBudget {
    match raise_nofile_limit() {
        Ok(lim) if lim.soft >= want as u64 + FD_RESERVE => SocketBudget {
            sockets: want,
            limited_by: None,
        },
        Ok(lim) => SocketBudget {
            sockets: (lim.soft.saturating_sub(FD_RESERVE) as usize).clamp(2, want),
            limited_by: Some(format!(
                "RLIMIT_NOFILE is {} (hard {}), below {want} sockets + {FD_RESERVE}",
                lim.soft, lim.hard
            )),
        },
        Err(e) => SocketBudget {
            sockets: want.min(1024 - FD_RESERVE as usize),
            limited_by: Some(format!("cannot read or raise RLIMIT_NOFILE: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requested: u64, sent: u64, received: u64) -> RunReport {
        RunReport {
            requested,
            sent,
            received,
            elapsed: Duration::from_millis(100),
            write_offs: 0,
            snmp: SnmpDelta::default(),
            runtime: None,
        }
    }

    #[test]
    fn lost_datagrams_stretch_the_criterion_time() {
        assert_eq!(
            report(1000, 1000, 1000).criterion_time(),
            Duration::from_millis(100)
        );
        assert_eq!(
            report(1000, 1000, 500).criterion_time(),
            Duration::from_millis(200)
        );
        assert_eq!(
            report(1000, 1000, 0).criterion_time(),
            Duration::from_millis(100)
        );
        assert_eq!(report(1000, 1000, 990).lost(), 10);
    }

    #[test]
    fn tally_sums_runs() {
        let mut t = Tally::default();
        t.add(&report(1000, 1000, 1000));
        t.add(&report(1000, 1000, 990));
        assert_eq!(
            (t.runs, t.sent, t.received, t.lossy_runs),
            (2, 2000, 1990, 1)
        );
        let s = t.to_string();
        assert!(s.contains("10 lost (0.500%; 1 runs with losses)"), "{s}");
        assert!(s.contains("RcvbufErrors n/a"), "{s}");
    }

    #[test]
    fn budget_fits_the_limit() {
        let b = socket_budget(100);
        assert_eq!(
            b,
            SocketBudget {
                sockets: 100,
                limited_by: None
            }
        );
    }

    fn smoke(transport: Transport) {
        let mut flow = match Flow::one_flow(transport, 64) {
            Ok(f) => f,
            Err(why) => {
                eprintln!("skipping {}: {why}", transport.name());
                return;
            }
        };
        for _ in 0..3 {
            let r = flow.run(3 * WINDOW + 7);
            assert_eq!(r.sent, 3 * WINDOW + 7, "{}", transport.name());
            // Loopback can drop under load; a smoke test asks only that most arrive.
            assert!(r.received * 10 >= r.sent * 9, "{}: {r:?}", transport.name());
            assert!(r.elapsed > Duration::ZERO);
        }
    }

    #[test]
    fn one_flow_runs_on_every_transport() {
        for t in Transport::ALL {
            smoke(t);
        }
    }

    #[test]
    fn many_sockets_relay_runs() {
        for t in Transport::RELAY {
            let mut flow = match Flow::many_sockets(t, 50, 64) {
                Ok(f) => f,
                Err(why) => {
                    eprintln!("skipping {}: {why}", t.name());
                    continue;
                }
            };
            let r = flow.run(5000);
            assert!(r.received * 10 >= 5000 * 9, "{}: {r:?}", t.name());
            assert!(r.received <= 5000);
        }
    }

    #[test]
    fn quick_latency_runs_on_every_transport() {
        let plan = LatencyPlan {
            seconds: 1.0,
            quick: true,
        };
        for t in Transport::ALL {
            match measure_latency(t, 64, &plan) {
                Ok(r) => {
                    assert!(r.received * 10 >= r.sent * 9, "{r}");
                    assert!(r.hist.len() == r.received);
                    assert!(r.to_string().starts_with("latency/"));
                }
                Err(why) => eprintln!("skipping {}: {why}", t.name()),
            }
        }
    }
}

//! One-way latency at half load: a paced ping-pong per transport, recording half of every
//! round trip in an HDR histogram.
//!
//! Criterion measures time per iteration, which does not express "the p99 of one-way
//! latency while the transport carries half of what it can", so this runs beside it:
//! `benches/transport.rs` calls [`measure_latency`] after its criterion groups.
//!
//! Method, per transport and payload size:
//! 1. **Peak**: a short one-flow run ([`PEAK_DATAGRAMS`] datagrams after a warm-up) gives
//!    the transport's peak rate P in datagrams per second.
//! 2. **Load**: pings go out at P / 4 per second. Every ping is answered, so the loopback
//!    carries P / 2 datagrams per second, and each side sends and receives P / 4 per
//!    second: about half of what a thread did at the peak, where it only sent or only
//!    received P.
//! 3. **Pacing**: ping *i* is due at `start + i / rate` and goes out at the first chance at
//!    or after that (threads: a sleep with 1 µs timer slack; runtime: a pong arriving or the
//!    endpoint's timer; tokio-uring: tokio's timer, millisecond resolution, so pings due
//!    within one millisecond go out back to back). Pings are stamped when sent, not when
//!    due, so this is the latency of the transport, not of the pacer (no coordinated-omission
//!    correction).
//! 4. **Record**: the pinger records (receive time − send stamp) / 2 per pong. Both
//!    times come from the pinger's side (one clock); the runtime's are the `now` its
//!    endpoint is handed, so they include the runtime's own batching.
//!
//! In `--test` mode the peak step is skipped and a few hundred pings go out at a fixed low
//! rate: a smoke test of the machinery, not a figure.

use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{runtime, runtime_config, threads, tokio_uring_baseline, Flow, Transport, Unavailable};
use crate::sys::{SnmpDelta, UdpSnmp};

/// Datagrams of the one-flow run that finds the peak rate.
pub const PEAK_DATAGRAMS: u64 = 200_000;
/// Datagrams of the warm-up run before it.
const PEAK_WARM_UP: u64 = 20_000;
/// Seconds of pinging per transport and payload size unless told otherwise.
pub const DEFAULT_SECONDS: f64 = 2.0;
/// The environment variable that sets the seconds (0 turns the latency runs off).
pub const SECONDS_ENV: &str = "HEARSAY_LATENCY_SECS";
/// Ping rate and count in `--test` mode.
const QUICK_RATE: f64 = 4_000.0;
const QUICK_PINGS: u64 = 200;
/// The fraction of the peak rate at which pings go out (see the module docs).
pub const LOAD_FRACTION: f64 = 0.25;

/// What the pinger measured.
#[derive(Debug)]
pub(crate) struct PingOutcome {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) hist: Histogram<u64>,
}

/// A histogram of nanoseconds from 1 ns to 60 s at 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// When ping `i` of a schedule of `rate` per second from `start` is due. Both the sending
/// test and the wake-up deadline use this one function, so they agree to the nanosecond.
#[inline]
pub(crate) fn due_at(start: Instant, i: u64, rate: f64) -> Instant {
    start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64)
}

/// Records half of the round trip from `stamp_ns` to `now_ns`.
#[inline]
pub(crate) fn record_rtt(hist: &mut Histogram<u64>, now_ns: u64, stamp_ns: u64) {
    hist.saturating_record((now_ns.saturating_sub(stamp_ns) / 2).max(1));
}

/// How the latency runs go, decided from the bench binary's arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyPlan {
    /// Seconds of pinging per transport and payload.
    pub seconds: f64,
    /// `--test` mode: a smoke test with a few pings at a low fixed rate.
    pub quick: bool,
}

/// Criterion options that take a value (`--opt value`), to tell values from the filter.
const VALUED: &[&str] = &[
    "-c",
    "--color",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

impl LatencyPlan {
    /// The plan for a bench binary run with `args` (without the program name) and
    /// [`SECONDS_ENV`] = `seconds_env`; `None` when the latency runs are off:
    /// criterion's `--list`, `--profile-time` or `--version`; a filter that does not
    /// mention `latency` (so `-- one-flow` runs only that group, and `-- latency` only the
    /// latency runs); or zero seconds.
    pub fn from_args<S: AsRef<str>>(args: &[S], seconds_env: Option<&str>) -> Option<Self> {
        let mut quick = false;
        let mut filter = None;
        let mut args = args.iter().map(AsRef::as_ref);
        while let Some(arg) = args.next() {
            match arg {
                "--list" | "--version" | "-V" => return None,
                a if a == "--profile-time" || a.starts_with("--profile-time=") => return None,
                "--test" => quick = true,
                a if VALUED.contains(&a) => {
                    args.next();
                }
                a if a.starts_with('-') => {}
                a => filter = filter.or(Some(a)),
            }
        }
        if filter.is_some_and(|f| !f.contains("latency")) {
            return None;
        }
        let seconds = match seconds_env {
            Some(s) => s.trim().parse().ok().filter(|s: &f64| s.is_finite())?,
            None => DEFAULT_SECONDS,
        };
        (seconds > 0.0).then_some(Self { seconds, quick })
    }
}

/// One transport's latency at one payload size.
#[derive(Debug)]
pub struct LatencyReport {
    /// The transport measured.
    pub transport: Transport,
    /// Payload bytes per datagram.
    pub payload: usize,
    /// The one-flow peak in datagrams per second (`None` in `--test` mode).
    pub peak: Option<f64>,
    /// Pings per second.
    pub rate: f64,
    /// Pings sent and pongs received.
    pub sent: u64,
    /// Pongs received.
    pub received: u64,
    /// One-way latency (half the round trip) in nanoseconds.
    pub hist: Histogram<u64>,
    /// Kernel UDP drop counters over the ping-pong.
    pub snmp: SnmpDelta,
}

fn micros(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{:.2} µs", ns as f64 / 1e3),
        10_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.hist;
        write!(
            f,
            "latency/{}/{}: one-way p50 {}, p99 {}, max {} (RTT/2 of {} pongs; {:.0} pings/s",
            self.transport.name(),
            self.payload,
            micros(h.value_at_quantile(0.50)),
            micros(h.value_at_quantile(0.99)),
            micros(h.max()),
            h.len(),
            self.rate,
        )?;
        match self.peak {
            Some(p) => write!(f, " = peak {p:.0}/s × {LOAD_FRACTION}")?,
            None => write!(f, ", --test rate")?,
        }
        write!(
            f,
            "); lost {} of {}; {}",
            self.sent.saturating_sub(self.received),
            self.sent,
            self.snmp
        )
    }
}

/// Finds the transport's one-flow peak, then runs the paced ping-pong (see the module
/// docs). `Err` when the transport cannot run here (io_uring unavailable).
pub fn measure_latency(
    transport: Transport,
    payload: usize,
    plan: &LatencyPlan,
) -> Result<LatencyReport, Unavailable> {
    let (peak, rate, count) = if plan.quick {
        (None, QUICK_RATE, QUICK_PINGS)
    } else {
        let mut flow = Flow::one_flow(transport, payload)?;
        flow.run(PEAK_WARM_UP);
        let r = flow.run(PEAK_DATAGRAMS);
        drop(flow);
        let peak = r.received as f64 / r.elapsed.as_secs_f64().max(1e-9);
        let rate = (peak * LOAD_FRACTION).max(1.0);
        (Some(peak), rate, ((rate * plan.seconds) as u64).max(1))
    };
    let before = UdpSnmp::read_or_none();
    let out = match transport {
        Transport::HearsayIoUring
        | Transport::HearsayIoUringUnstamped
        | Transport::HearsayPortable => {
            runtime::latency(runtime_config(transport)?, payload, rate, count)?
        }
        Transport::TokioUring => tokio_uring_baseline::latency(payload, rate, count)?,
        Transport::StdUdp => threads::latency(threads::Api::Std, payload, rate, count)?,
        Transport::LibcMmsg => threads::latency(threads::Api::Mmsg, payload, rate, count)?,
    };
    let snmp = SnmpDelta::between(before.as_ref(), UdpSnmp::read_or_none().as_ref());
    Ok(LatencyReport {
        transport,
        payload,
        peak,
        rate,
        sent: out.sent,
        received: out.received,
        hist: out.hist,
        snmp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str], env: Option<&str>) -> Option<LatencyPlan> {
        LatencyPlan::from_args(args, env)
    }

    #[test]
    fn plan_follows_criterion_arguments() {
        let full = Some(LatencyPlan {
            seconds: DEFAULT_SECONDS,
            quick: false,
        });
        assert_eq!(plan(&["--bench"], None), full);
        assert_eq!(
            plan(&["--bench", "--test"], None),
            Some(LatencyPlan {
                seconds: DEFAULT_SECONDS,
                quick: true
            })
        );
        assert_eq!(plan(&["--bench", "--list"], None), None);
        assert_eq!(plan(&["--profile-time", "5"], None), None);
        // A filter runs the latency only if it names it.
        assert_eq!(plan(&["--bench", "one-flow"], None), None);
        assert_eq!(plan(&["--bench", "latency"], None), full);
        // Option values are not filters.
        assert_eq!(
            plan(
                &["--warm-up-time", "1", "--measurement-time", "2", "--bench"],
                None
            ),
            full
        );
        assert_eq!(plan(&["--save-baseline", "before"], None), full);
        // The environment sets the duration or turns it off.
        assert_eq!(plan(&[], Some("0.5")).unwrap().seconds, 0.5);
        assert_eq!(plan(&[], Some("0")), None);
        assert_eq!(plan(&[], Some("soon")), None);
    }

    #[test]
    fn rtt_halves_and_never_records_zero() {
        let mut h = new_histogram();
        record_rtt(&mut h, 10_000, 4_000);
        record_rtt(&mut h, 5, 9); // clock went backwards: recorded as the minimum
        assert_eq!(h.len(), 2);
        assert_eq!(h.max(), h.highest_equivalent(3_000));
        assert_eq!(h.min(), 1);
    }

    #[test]
    fn schedule_is_monotonic_and_exact() {
        let start = Instant::now();
        assert_eq!(due_at(start, 0, 3.0), start);
        assert_eq!(due_at(start, 3, 3.0), start + Duration::from_secs(1));
        let rate = 61_744.0;
        for i in 0..10_000 {
            assert!(due_at(start, i, rate) <= due_at(start, i + 1, rate));
        }
    }

    #[test]
    fn micros_pick_a_readable_unit() {
        assert_eq!(micros(1_234), "1.23 µs");
        assert_eq!(micros(45_678), "45.7 µs");
        assert_eq!(micros(2_500_000), "2.50 ms");
    }
}

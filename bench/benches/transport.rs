//! Transport benchmarks on loopback: datagrams per second and one-way latency of the
//! Hearsay runtime on both backends, side by side with the `tokio-uring` crate, a plain std
//! `UdpSocket` loop and a raw `sendmmsg`/`recvmmsg` loop, for 64-byte and 1400-byte
//! payloads.
//!
//! Groups (see `bench/README.md` for the method and how to read and run them):
//! - `one-flow`: one sender socket, one receiver socket; every transport.
//! - `many-sockets-5000`: 5000 endpoints on 2 shards passing tokens from random endpoints to
//!   random others; the runtime on both backends (the portable backend is the comparison
//!   point) and tokio-uring (5000 sockets on 2 threads, a task per socket). Named
//!   `many-sockets-<n>-of-5000-nofile-limited` when the open-file limit allows fewer
//!   sockets.
//!
//! Ids are `<group>/<transport>/<payload bytes>`. An iteration delivers
//! [`DATAGRAMS_PER_ITER`] datagrams and `Throughput::Elements` makes criterion print
//! datagrams received per second. After each benchmark a line sums its runs: datagrams
//! sent, received and lost, window write-offs, the kernel's `RcvbufErrors`/`SndbufErrors`
//! deltas and, for the runtime, its own error counters.
//!
//! After the criterion groups the same binary measures one-way latency (p50/p99 of half the
//! round trip of a paced ping-pong at a quarter of each transport's one-flow peak) and
//! prints one line per transport and payload; see [`hearsay_bench::transport::latency`].

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use hearsay_bench::transport::latency::SECONDS_ENV;
use hearsay_bench::transport::{
    epoch, measure_latency, socket_budget, Flow, LatencyPlan, Tally, Transport, Unavailable,
    DATAGRAMS_PER_ITER, MANY_SOCKETS, PAYLOADS,
};

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// Measures one shape on one transport as `<group>/<transport>/<payload>`, then prints the
/// summed runs. The harness is set up on first use, so a benchmark the filter skips costs
/// no sockets or threads, and dropped at the end, before the next one starts.
fn measure(
    g: &mut Group<'_>,
    group: &str,
    transport: Transport,
    payload: usize,
    open: impl Fn() -> Result<Flow, Unavailable>,
) {
    let id = format!("{group}/{}/{payload}", transport.name());
    if let Err(why) = transport.check() {
        println!("{id}: skipped: {why}");
        return;
    }
    let mut flow: Option<Flow> = None;
    let mut tally = Tally::default();
    g.bench_function(BenchmarkId::new(transport.name(), payload), |b| {
        let flow = flow.get_or_insert_with(|| {
            let f = open().unwrap_or_else(|why| panic!("{id}: cannot set up: {why}"));
            println!("{id}: {}", f.describe());
            f
        });
        b.iter_custom(|iters| {
            let r = flow.run(iters * DATAGRAMS_PER_ITER);
            tally.add(&r);
            r.criterion_time()
        });
    });
    if tally.runs > 0 {
        println!("{id}: {tally}");
    }
}

fn one_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("one-flow");
    g.throughput(Throughput::Elements(DATAGRAMS_PER_ITER));
    for payload in PAYLOADS {
        for t in Transport::ALL {
            measure(&mut g, "one-flow", t, payload, || {
                Flow::one_flow(t, payload)
            });
        }
    }
    g.finish();
}

fn many_sockets(c: &mut Criterion) {
    let budget = socket_budget(MANY_SOCKETS);
    let name = match &budget.limited_by {
        None => format!("many-sockets-{}", budget.sockets),
        Some(why) => {
            println!(
                "many-sockets: only {} of {MANY_SOCKETS} sockets: {why}; raise the hard \
                 limit (ulimit -Hn) to measure all",
                budget.sockets
            );
            format!(
                "many-sockets-{}-of-{MANY_SOCKETS}-nofile-limited",
                budget.sockets
            )
        }
    };
    let mut g = c.benchmark_group(&name);
    g.throughput(Throughput::Elements(DATAGRAMS_PER_ITER));
    for payload in PAYLOADS {
        for t in Transport::RELAY {
            measure(&mut g, &name, t, payload, || {
                Flow::many_sockets(t, budget.sockets, payload)
            });
        }
    }
    g.finish();
}

/// The latency runs, after criterion's groups: see `LatencyPlan::from_args` for when they
/// run and `HEARSAY_LATENCY_SECS` for their length.
fn latency() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = std::env::var(SECONDS_ENV).ok();
    let Some(plan) = LatencyPlan::from_args(&args, seconds.as_deref()) else {
        return;
    };
    if plan.quick {
        println!("\nOne-way latency (--test: a few pings at a low rate, a smoke test only)");
    } else {
        println!(
            "\nOne-way latency: paced ping-pong at a quarter of each transport's one-flow \
             peak, {} s each",
            plan.seconds
        );
    }
    for payload in PAYLOADS {
        for t in Transport::ALL {
            match measure_latency(t, payload, &plan) {
                Ok(report) => println!("{report}"),
                Err(why) => println!("latency/{}/{payload}: skipped: {why}", t.name()),
            }
        }
    }
}

// `criterion_group!` expands to an undocumented `pub fn`; keep it out of the crate root.
#[allow(missing_docs)]
mod entry {
    use super::{many_sockets, one_flow, Criterion};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        // Runs are milliseconds each (1024 datagrams an iteration) and a sample is several
        // runs, so 20 samples in 3 s give steady estimates; a full run of both groups takes
        // about two minutes. Command-line options override these.
        config = Criterion::default()
            .sample_size(20)
            .warm_up_time(std::time::Duration::from_secs(1))
            .measurement_time(std::time::Duration::from_secs(3));
        targets = one_flow, many_sockets
    }
}

fn main() {
    // Timestamps count from here.
    epoch();
    entry::benches();
    Criterion::default().configure_from_args().final_summary();
    latency();
}

//! `loadgen peer`: N instances of a peer membership library — chitchat or foca — hosted in
//! this process on loopback UDP, each with its own socket, and measured the same way as each
//! other: a cold start through one seed, steady-state traffic, and detection of crashed
//! members, all read from each instance's own view of the members it considers alive.
//!
//! The harness here owns the scenario, the sampling, the traffic arithmetic and the report;
//! a [`Peer`] only starts, reads and kills its instances and counts what they send.

mod chitchat;
mod foca;

use crate::cluster::sys;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Seed of the harness's own random choices (join times, victims): fixed, so that every run
/// of every peer joins and kills in the same pattern for the same `--nodes`.
const HARNESS_SEED: u64 = 0x7065_6572_2d68_6172;

/// Steady-state window between the end of the cold start and the kill.
const STEADY: Duration = Duration::from_secs(5);

/// Time between scheduling the joins and time zero, so that the first join is on time.
const LEAD: Duration = Duration::from_millis(20);

/// Seed instances: instance 0, the one every other instance joins through.
const SEEDS: u32 = 1;

/// Peer libraries `loadgen peer` can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Impl {
    /// Scuttlebutt gossip with a phi-accrual failure detector (quickwit-oss).
    Chitchat,
    /// SWIM, sans-IO, driven here on tokio UDP sockets.
    Foca,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Chitchat => "chitchat",
            Impl::Foca => "foca",
        }
    }
}

/// Flags of `loadgen peer`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PeerArgs {
    /// Peer library to host.
    #[arg(long = "impl", value_enum)]
    implementation: Impl,
    /// Instances to host, the seed included.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=20_000))]
    nodes: u32,
    /// Fraction of the instances killed at once after the steady state (at least one, never
    /// the seed).
    #[arg(long, default_value_t = 0.01, value_parser = parse_fraction)]
    kill: f64,
    /// Span of the joins after the seed, in protocol periods of the peer.
    #[arg(long, default_value_t = 1.0, value_parser = parse_periods)]
    join_window: f64,
    /// Give up on the cold start after this many seconds.
    #[arg(long, default_value_t = 120.0, value_parser = parse_limit)]
    cold_start_limit: f64,
    /// Give up on the failure detection after this many seconds.
    #[arg(long, default_value_t = 120.0, value_parser = parse_limit)]
    detect_limit: f64,
    /// Milliseconds between two reads of every instance's view.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    sample_ms: u64,
    /// Write the JSON record to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    crate::parse_number(s, |v| (0.0..=1.0).contains(&v), "must be in [0, 1]")
}

fn parse_periods(s: &str) -> Result<f64, String> {
    crate::parse_number(
        s,
        |v| (0.0..=10_000.0).contains(&v),
        "must be in [0, 10000]",
    )
}

fn parse_limit(s: &str) -> Result<f64, String> {
    crate::parse_number(s, |v| v > 0.0 && v <= 86_400.0, "must be in (0, 86400]")
}

/// Datagrams and payload bytes sent, summed over instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// UDP payload bytes.
    pub(crate) bytes: u64,
    /// Datagrams.
    pub(crate) datagrams: u64,
}

impl Traffic {
    fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            bytes: self.bytes.saturating_sub(earlier.bytes),
            datagrams: self.datagrams.saturating_sub(earlier.datagrams),
        }
    }
}

/// What every instance of one peer sends, counted at the socket: one datagram and its payload
/// length per successful send.
#[derive(Debug, Default)]
pub(crate) struct TrafficMeter {
    bytes: AtomicU64,
    datagrams: AtomicU64,
}

impl TrafficMeter {
    /// Count one datagram of `bytes` payload bytes.
    pub(crate) fn record(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.datagrams.fetch_add(1, Ordering::Relaxed);
    }

    /// Totals so far.
    pub(crate) fn total(&self) -> Traffic {
        Traffic {
            bytes: self.bytes.load(Ordering::Relaxed),
            datagrams: self.datagrams.load(Ordering::Relaxed),
        }
    }
}

/// A failure of a hosted instance, kept until the harness reads it (the first one wins).
#[derive(Debug, Default)]
pub(crate) struct FirstFailure(Mutex<Option<String>>);

impl FirstFailure {
    /// Keep `what` unless a failure is already kept.
    pub(crate) fn set(&self, what: String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(what);
        }
    }

    /// The failure kept, if any.
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The text of a task's panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".into()
    }
}

/// A duration the way the settings line states it: `200ms`, `1s`, `7.5s`, `15min`, `24h`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1000.0 {
        format!("{}ms", trim(ms, 1))
    } else if d.as_secs() % 3600 == 0 && d.subsec_nanos() == 0 {
        format!("{}h", d.as_secs() / 3600)
    } else if d.as_secs() % 60 == 0 && d.as_secs() >= 600 && d.subsec_nanos() == 0 {
        format!("{}min", d.as_secs() / 60)
    } else {
        format!("{}s", trim(d.as_secs_f64(), 3))
    }
}

/// `v` rounded to `decimals` decimals, for the JSON record (the samples are `--sample-ms`
/// apart, so finer digits are noise).
fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// `v` with at most `decimals` decimals and no trailing zeros.
fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One peer library's N instances, as the harness drives and reads them. Instance 0 is the
/// seed; every other instance joins through the seed's address only.
pub(crate) trait Peer: Send + Sync + 'static {
    /// Crate name.
    fn name(&self) -> &'static str;
    /// Crate version linked.
    fn version(&self) -> &'static str;
    /// One line: the configuration every instance runs with.
    fn settings(&self) -> String;
    /// The peer's protocol period: the unit of `--join-window`.
    fn period(&self) -> Duration;
    /// Start instance `i` (the seed, 0, is started first and alone) on a runtime thread.
    fn start(self: Arc<Self>, i: usize) -> impl Future<Output = Result<()>> + Send;
    /// Members instance `i` considers alive, itself included; 0 before it started.
    fn alive(&self, i: usize) -> usize;
    /// Crash these instances at once: stop them without a leave message, close their sockets.
    fn kill(&self, victims: &[usize]);
    /// Whether instance `i` still considers one of the killed instances alive.
    fn sees_victim(&self, i: usize) -> bool;
    /// Traffic sent by all instances so far.
    fn traffic(&self) -> Traffic;
    /// A failure of an instance (a panic, a broken socket), if one happened.
    fn failure(&self) -> Option<String>;
    /// One line of counters worth reading next to the results (errors the peer returned).
    fn notes(&self) -> String;
    /// Stop every instance (end of the run).
    fn stop(&self);
}

/// The scenario's numbers, resolved from the flags and the peer's period.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Instances, the seed included.
    pub(crate) nodes: usize,
    /// Instances killed.
    pub(crate) victims: usize,
    /// Span of the joins.
    pub(crate) join_window: Duration,
    /// Cold-start limit.
    pub(crate) cold_limit: Duration,
    /// Steady-state window.
    pub(crate) steady: Duration,
    /// Detection limit.
    pub(crate) detect_limit: Duration,
    /// Time between two samples.
    pub(crate) sample: Duration,
}

impl Plan {
    fn new(args: &PeerArgs, period: Duration) -> Plan {
        let nodes = args.nodes as usize;
        Plan {
            nodes,
            victims: victims_for(args.kill, nodes),
            join_window: period.mul_f64(args.join_window),
            cold_limit: Duration::from_secs_f64(args.cold_start_limit),
            steady: STEADY,
            detect_limit: Duration::from_secs_f64(args.detect_limit),
            sample: Duration::from_millis(args.sample_ms),
        }
    }
}

/// `max(1, round(kill × nodes))`, leaving the seed alive.
fn victims_for(kill: f64, nodes: usize) -> usize {
    ((kill * nodes as f64).round() as usize).clamp(1, nodes.saturating_sub(1).max(1))
}

/// One measured step: when each instance concerned met the goal, and the step's traffic.
#[derive(Debug, Clone)]
pub(crate) struct Phase {
    /// Milliseconds from the step's time zero to the first sample meeting the goal, per
    /// instance concerned; `None` for those that never did.
    pub(crate) times_ms: Vec<Option<f64>>,
    /// Seconds from the step's time zero to its end.
    pub(crate) secs: f64,
    /// Traffic over the step.
    pub(crate) traffic: Traffic,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    /// The cold start.
    pub(crate) cold: Option<Phase>,
    /// The steady state (`times_ms` empty).
    pub(crate) steady: Option<Phase>,
    /// The detection, with the number of instances killed.
    pub(crate) detect: Option<(usize, Phase)>,
    /// A failure that ended the run early.
    pub(crate) error: Option<String>,
}

/// Result of sampling a goal.
struct Sampled {
    times_ms: Vec<Option<f64>>,
    ended: Instant,
    error: Option<String>,
}

/// Read `done(i)` for every instance of `who` at `zero` and every `every` after it, until all
/// are done, `limit` has passed (a last sample is taken at the limit) or `failure` reports.
fn sample_goal(
    who: &[usize],
    zero: Instant,
    every: Duration,
    limit: Duration,
    mut done: impl FnMut(usize) -> bool,
    failure: impl Fn() -> Option<String>,
) -> Sampled {
    let mut times_ms = vec![None; who.len()];
    let mut left = who.len();
    let mut error = None;
    loop {
        let elapsed = Instant::now().saturating_duration_since(zero);
        let ms = elapsed.as_secs_f64() * 1e3;
        for (time, &i) in times_ms.iter_mut().zip(who) {
            if time.is_none() && done(i) {
                *time = Some(ms);
                left -= 1;
            }
        }
        if left == 0 || elapsed >= limit {
            break;
        }
        if let Some(e) = failure() {
            error = Some(e);
            break;
        }
        let ticks = elapsed.as_nanos() / every.as_nanos().max(1) + 1;
        let next = zero + every.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
        sleep_until(next.min(zero + limit));
    }
    Sampled {
        times_ms,
        ended: Instant::now(),
        error,
    }
}

fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// When each joiner (1..nodes) starts, from time zero: uniform draws over `window`, shifted
/// so that the first joiner starts at zero; sorted by start.
fn join_schedule(rng: &mut SmallRng, nodes: usize, window: Duration) -> Vec<(usize, Duration)> {
    let mut draws: Vec<(usize, f64)> = (1..nodes).map(|i| (i, rng.random::<f64>())).collect();
    draws.sort_by(|a, b| a.1.total_cmp(&b.1));
    let first = draws.first().map_or(0.0, |d| d.1);
    draws
        .into_iter()
        .map(|(i, u)| (i, window.mul_f64(u - first)))
        .collect()
}

/// Run the scenario on `peer`, hosted on `rt`: seed, joins, cold start, steady state, kill,
/// detection.
pub(crate) fn measure<P: Peer>(
    peer: &Arc<P>,
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
) -> Measured {
    let mut out = Measured::default();
    let mut rng = SmallRng::seed_from_u64(HARNESS_SEED);
    let n = plan.nodes;

    // The seed, alone.
    if let Err(e) = rt.block_on(Arc::clone(peer).start(0)) {
        out.error = Some(format!("instance 0 (the seed) did not start: {e:#}"));
        return out;
    }

    // The joiners, at their times, through the seed.
    let schedule = join_schedule(&mut rng, n, plan.join_window);
    let zero = Instant::now() + LEAD;
    let start_failure = Arc::new(FirstFailure::default());
    {
        let peer = Arc::clone(peer);
        let start_failure = Arc::clone(&start_failure);
        let zero = tokio::time::Instant::from_std(zero);
        rt.spawn(async move {
            for (i, offset) in schedule {
                tokio::time::sleep_until(zero + offset).await;
                if let Err(e) = Arc::clone(&peer).start(i).await {
                    start_failure.set(format!("instance {i} did not start: {e:#}"));
                    return;
                }
            }
        });
    }
    let failure = || peer.failure().or_else(|| start_failure.get());

    // Cold start: every instance, until it sees all N alive.
    sleep_until(zero);
    let before = peer.traffic();
    let everyone: Vec<usize> = (0..n).collect();
    let cold = sample_goal(
        &everyone,
        zero,
        plan.sample,
        plan.cold_limit,
        |i| peer.alive(i) >= n,
        failure,
    );
    out.cold = Some(Phase {
        times_ms: cold.times_ms,
        secs: (cold.ended - zero).as_secs_f64(),
        traffic: peer.traffic().since(before),
    });
    if let Some(e) = cold.error.or_else(failure) {
        out.error = Some(e);
        return out;
    }

    // Steady state.
    let steady_from = Instant::now();
    let before = peer.traffic();
    std::thread::sleep(plan.steady);
    out.steady = Some(Phase {
        times_ms: Vec::new(),
        secs: steady_from.elapsed().as_secs_f64(),
        traffic: peer.traffic().since(before),
    });
    if let Some(e) = failure() {
        out.error = Some(e);
        return out;
    }

    // Kill, then detection by every survivor.
    let mut victims: Vec<usize> = rand::seq::index::sample(&mut rng, n - 1, plan.victims)
        .into_iter()
        .map(|v| v + 1)
        .collect();
    victims.sort_unstable();
    let before = peer.traffic();
    peer.kill(&victims);
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..n)
        .filter(|i| victims.binary_search(i).is_err())
        .collect();
    let detect = sample_goal(
        &survivors,
        killed_at,
        plan.sample,
        plan.detect_limit,
        |i| !peer.sees_victim(i),
        failure,
    );
    out.detect = Some((
        victims.len(),
        Phase {
            times_ms: detect.times_ms,
            secs: (detect.ended - killed_at).as_secs_f64(),
            traffic: peer.traffic().since(before),
        },
    ));
    out.error = detect.error.or_else(failure);
    out
}

/// Convergence of one step over the instances concerned, in the report's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Spread {
    /// Instances that met the goal.
    pub(crate) converged: usize,
    /// Instances concerned.
    pub(crate) of: usize,
    /// Earliest time among those that met the goal.
    pub(crate) first_ms: Option<f64>,
    /// Median (nearest rank) among those that met the goal.
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile (nearest rank) among those that met the goal.
    pub(crate) p99_ms: Option<f64>,
    /// Latest time, when all met the goal.
    pub(crate) last_ms: Option<f64>,
}

/// Nearest-rank percentile `pct` (1..=100) of sorted, non-empty `v`.
fn nearest_rank(sorted: &[f64], pct: usize) -> f64 {
    let rank = (pct * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Spread {
    /// The spread of `times_ms` (one entry per instance concerned).
    pub(crate) fn of(times_ms: &[Option<f64>]) -> Spread {
        let mut done: Vec<f64> = times_ms.iter().flatten().map(|&t| round_to(t, 1)).collect();
        done.sort_by(f64::total_cmp);
        let all = done.len() == times_ms.len();
        let stat = |pct| (!done.is_empty()).then(|| nearest_rank(&done, pct));
        Spread {
            converged: done.len(),
            of: times_ms.len(),
            first_ms: done.first().copied(),
            p50_ms: stat(50),
            p99_ms: stat(99),
            last_ms: if all { done.last().copied() } else { None },
        }
    }
}

/// `cold_start` of the report.
#[derive(Debug, Clone, Serialize)]
struct ColdStartJson {
    #[serde(flatten)]
    spread: Spread,
    limit_s: f64,
}

/// `detect` of the report.
#[derive(Debug, Clone, Serialize)]
struct DetectJson {
    killed: usize,
    #[serde(flatten)]
    spread: Spread,
    limit_s: f64,
}

/// Per-node, per-second rates of each step.
#[derive(Debug, Clone, Default, Serialize)]
struct Rates {
    cold_start: Option<f64>,
    steady: Option<f64>,
    detect: Option<f64>,
}

/// The JSON record of one run.
#[derive(Debug, Clone, Serialize)]
struct Report {
    #[serde(rename = "impl")]
    implementation: &'static str,
    version: &'static str,
    settings: String,
    nodes: usize,
    seeds: u32,
    join_window_s: f64,
    sample_ms: u64,
    cold_start: Option<ColdStartJson>,
    detect: Option<DetectJson>,
    bytes_per_node_s: Rates,
    datagrams_per_node_s: Rates,
    cpu_s: f64,
    wall_s: f64,
    peak_rss_mib: f64,
    error: Option<String>,
}

/// Traffic of a phase per node and second: bytes, datagrams.
fn rates(phase: Option<&Phase>, nodes: usize) -> (Option<f64>, Option<f64>) {
    match phase {
        Some(p) if p.secs > 0.0 => {
            let per = nodes as f64 * p.secs;
            (
                Some(round_to(p.traffic.bytes as f64 / per, 3)),
                Some(round_to(p.traffic.datagrams as f64 / per, 3)),
            )
        }
        _ => (None, None),
    }
}

impl Report {
    fn new(peer: &dyn PeerInfo, args: &PeerArgs, plan: &Plan) -> Report {
        Report {
            implementation: peer.name(),
            version: peer.version(),
            settings: peer.settings(),
            nodes: plan.nodes,
            seeds: SEEDS,
            join_window_s: plan.join_window.as_secs_f64(),
            sample_ms: args.sample_ms,
            cold_start: None,
            detect: None,
            bytes_per_node_s: Rates::default(),
            datagrams_per_node_s: Rates::default(),
            cpu_s: 0.0,
            wall_s: 0.0,
            peak_rss_mib: 0.0,
            error: None,
        }
    }

    fn fill(&mut self, m: &Measured, plan: &Plan) {
        let n = plan.nodes;
        self.cold_start = m.cold.as_ref().map(|p| ColdStartJson {
            spread: Spread::of(&p.times_ms),
            limit_s: plan.cold_limit.as_secs_f64(),
        });
        self.detect = m.detect.as_ref().map(|(killed, p)| DetectJson {
            killed: *killed,
            spread: Spread::of(&p.times_ms),
            limit_s: plan.detect_limit.as_secs_f64(),
        });
        let (cb, cd) = rates(m.cold.as_ref(), n);
        let (sb, sd) = rates(m.steady.as_ref(), n);
        let (db, dd) = rates(m.detect.as_ref().map(|(_, p)| p), n);
        self.bytes_per_node_s = Rates {
            cold_start: cb,
            steady: sb,
            detect: db,
        };
        self.datagrams_per_node_s = Rates {
            cold_start: cd,
            steady: sd,
            detect: dd,
        };
        self.error = m.error.clone();
    }

    /// The human summary.
    fn summary(&self, notes: &str) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0} ms"));
        let rate = |v: Option<f64>, unit: &str| {
            v.map_or_else(|| "-".to_string(), |v| format!("{} {unit}", trim(v, 2)))
        };
        let mut lines = vec![format!(
            "peer {} {}: {} nodes, {} seed, joins over {} s, sample {} ms",
            self.implementation,
            self.version,
            self.nodes,
            self.seeds,
            trim(self.join_window_s, 3),
            self.sample_ms
        )];
        lines.push(format!("  settings: {}", self.settings));
        let spread = |s: &Spread, limit_s: f64, reached: &str| {
            format!(
                "{}/{} {reached}; first {}, p50 {}, p99 {}, last {} (limit {} s)",
                s.converged,
                s.of,
                ms(s.first_ms),
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.last_ms),
                trim(limit_s, 3)
            )
        };
        lines.push(match &self.cold_start {
            Some(c) => format!(
                "  cold start: {}",
                spread(&c.spread, c.limit_s, "converged")
            ),
            None => "  cold start: not run".into(),
        });
        lines.push(match &self.detect {
            Some(d) => format!(
                "  detect: {} killed, {}",
                d.killed,
                spread(&d.spread, d.limit_s, "survivors detected")
            ),
            None => "  detect: not run".into(),
        });
        let (b, d) = (&self.bytes_per_node_s, &self.datagrams_per_node_s);
        lines.push(format!(
            "  per node: cold start {} {}, steady {} {}, detect {} {}",
            rate(b.cold_start, "B/s"),
            rate(d.cold_start, "dgram/s"),
            rate(b.steady, "B/s"),
            rate(d.steady, "dgram/s"),
            rate(b.detect, "B/s"),
            rate(d.detect, "dgram/s"),
        ));
        lines.push(format!(
            "  cpu {:.1} s, wall {:.1} s, peak RSS {:.0} MiB; {}",
            self.cpu_s, self.wall_s, self.peak_rss_mib, notes
        ));
        if let Some(e) = &self.error {
            lines.push(format!("  error: {e}"));
        }
        lines.join("\n")
    }
}

/// What the report states about a peer, usable as a trait object.
trait PeerInfo {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    fn settings(&self) -> String;
}

impl<P: Peer> PeerInfo for P {
    fn name(&self) -> &'static str {
        Peer::name(self)
    }
    fn version(&self) -> &'static str {
        Peer::version(self)
    }
    fn settings(&self) -> String {
        Peer::settings(self)
    }
}

/// The runtime every instance of a peer runs on: multi-thread, two workers.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peer-worker")
        .enable_io()
        .enable_time()
        .build()
        .context("cannot build the tokio runtime")
}

/// Host `peer` through the scenario and fill the report.
fn host<P: Peer>(peer: Arc<P>, args: &PeerArgs, started: Instant) -> (Report, String) {
    let plan = Plan::new(args, peer.period());
    let mut report = Report::new(&*peer, args, &plan);
    let measured = match sys::raise_open_files(plan.nodes).and_then(|()| runtime()) {
        Err(e) => Measured {
            error: Some(format!("{e:#}")),
            ..Measured::default()
        },
        Ok(rt) => {
            let measured = measure(&peer, &rt, &plan);
            peer.stop();
            rt.shutdown_timeout(Duration::from_secs(2));
            measured
        }
    };
    report.fill(&measured, &plan);
    report.cpu_s = round_to(sys::cpu_seconds(), 3);
    report.wall_s = round_to(started.elapsed().as_secs_f64(), 3);
    report.peak_rss_mib = round_to(sys::peak_rss_bytes() as f64 / (1024.0 * 1024.0), 1);
    (report, peer.notes())
}

/// `loadgen peer`.
pub(crate) fn run(args: &PeerArgs) -> Result<()> {
    let started = Instant::now();
    let nodes = args.nodes as usize;
    eprintln!(
        "loadgen peer: hosting {nodes} {} instances on loopback",
        args.implementation.name()
    );
    let (report, notes) = match args.implementation {
        Impl::Chitchat => host(
            Arc::new(chitchat::ChitchatPeer::new(
                nodes,
                chitchat::Timing::defaults(),
            )),
            args,
            started,
        ),
        Impl::Foca => host(Arc::new(foca::FocaPeer::lan(nodes)), args, started),
    };
    println!("{}", report.summary(&notes));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(e) = &report.error {
        bail!("{e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of the loopback tests: short limits, one victim.
    pub(crate) fn test_plan(nodes: usize, period: Duration) -> Plan {
        Plan {
            nodes,
            victims: 1,
            join_window: period,
            cold_limit: Duration::from_secs(20),
            steady: Duration::from_secs(1),
            detect_limit: Duration::from_secs(25),
            sample: Duration::from_millis(50),
        }
    }

    /// Run `peer` through the scenario and check that every instance converged in the cold
    /// start and every survivor detected the victim.
    pub(crate) fn assert_converges<P: Peer>(peer: Arc<P>, plan: &Plan) {
        sys::raise_open_files(plan.nodes).expect("open-file limit");
        let rt = runtime().expect("runtime");
        let m = measure(&peer, &rt, plan);
        peer.stop();
        rt.shutdown_timeout(Duration::from_secs(2));
        assert_eq!(m.error, None, "{}", peer.notes());
        let cold = m.cold.expect("cold start measured");
        let spread = Spread::of(&cold.times_ms);
        assert_eq!(spread.converged, plan.nodes, "cold start: {spread:?}");
        assert!(cold.traffic.datagrams > 0 && cold.traffic.bytes > 0);
        let (killed, detect) = m.detect.expect("detection measured");
        assert_eq!(killed, plan.victims);
        let spread = Spread::of(&detect.times_ms);
        assert_eq!(spread.of, plan.nodes - plan.victims);
        assert_eq!(spread.converged, spread.of, "detection: {spread:?}");
        // Nobody can have detected the crash before it happened, nor at once: the survivors
        // saw the victim alive at the end of the cold start.
        assert!(spread.first_ms.is_some_and(|t| t > 0.0), "{spread:?}");
    }

    #[test]
    fn spread_uses_nearest_rank_over_the_converged() {
        let times: Vec<Option<f64>> = (1..=100).map(|i| Some(f64::from(i) * 10.0)).collect();
        let s = Spread::of(&times);
        assert_eq!(s.converged, 100);
        assert_eq!(s.of, 100);
        assert_eq!(s.first_ms, Some(10.0));
        assert_eq!(s.p50_ms, Some(500.0));
        assert_eq!(s.p99_ms, Some(990.0));
        assert_eq!(s.last_ms, Some(1000.0));

        // Unordered, two never converged: statistics over the three that did, no last.
        let s = Spread::of(&[Some(30.0), None, Some(10.0), None, Some(20.0)]);
        assert_eq!(
            s,
            Spread {
                converged: 3,
                of: 5,
                first_ms: Some(10.0),
                p50_ms: Some(20.0),
                p99_ms: Some(30.0),
                last_ms: None,
            }
        );

        let s = Spread::of(&[None, None]);
        assert_eq!((s.converged, s.of), (0, 2));
        assert_eq!(
            (s.first_ms, s.p50_ms, s.p99_ms, s.last_ms),
            (None, None, None, None)
        );

        let s = Spread::of(&[Some(7.0)]);
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.last_ms),
            (Some(7.0), Some(7.0), Some(7.0))
        );
    }

    #[test]
    fn victims_are_at_least_one_and_never_the_seed() {
        assert_eq!(victims_for(0.01, 1000), 10);
        assert_eq!(victims_for(0.01, 100), 1);
        assert_eq!(victims_for(0.01, 8), 1);
        assert_eq!(victims_for(0.0, 8), 1);
        assert_eq!(victims_for(0.5, 9), 5);
        assert_eq!(victims_for(1.0, 8), 7);
        assert_eq!(victims_for(1.0, 2), 1);
    }

    #[test]
    fn joins_spread_over_the_window_from_zero() {
        let mut rng = SmallRng::seed_from_u64(1);
        let window = Duration::from_secs(1);
        let s = join_schedule(&mut rng, 1000, window);
        assert_eq!(s.len(), 999);
        assert_eq!(s[0].1, Duration::ZERO);
        assert!(s.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(s.iter().all(|(_, at)| *at <= window));
        assert!(s[998].1 > window.mul_f64(0.99));
        let mut who: Vec<usize> = s.iter().map(|(i, _)| *i).collect();
        who.sort_unstable();
        assert_eq!(who, (1..1000).collect::<Vec<_>>());
    }

    #[test]
    fn report_serializes_to_the_documented_shape() {
        let plan = test_plan(4, Duration::from_secs(1));
        let m = Measured {
            cold: Some(Phase {
                times_ms: vec![Some(100.0), Some(200.0), Some(300.0), None],
                secs: 2.0,
                traffic: Traffic {
                    bytes: 800,
                    datagrams: 8,
                },
            }),
            steady: None,
            detect: None,
            error: Some("instance 3 panicked".into()),
        };
        let args = PeerArgs {
            implementation: Impl::Foca,
            nodes: 4,
            kill: 0.01,
            join_window: 1.0,
            cold_start_limit: 20.0,
            detect_limit: 25.0,
            sample_ms: 50,
            json: None,
        };
        struct Info;
        impl PeerInfo for Info {
            fn name(&self) -> &'static str {
                "foca"
            }
            fn version(&self) -> &'static str {
                "1.0.0"
            }
            fn settings(&self) -> String {
                "x".into()
            }
        }
        let mut r = Report::new(&Info, &args, &plan);
        r.fill(&m, &plan);
        // The fields in the documented order, and no others.
        let text = serde_json::to_string(&r).expect("json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        let documented = [
            "impl",
            "version",
            "settings",
            "nodes",
            "seeds",
            "join_window_s",
            "sample_ms",
            "cold_start",
            "detect",
            "bytes_per_node_s",
            "datagrams_per_node_s",
            "cpu_s",
            "wall_s",
            "peak_rss_mib",
            "error",
        ];
        assert_eq!(v.as_object().map(|o| o.len()), Some(documented.len()));
        let at: Vec<usize> = documented
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).expect(k))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        let cold = v["cold_start"].as_object().expect("cold_start");
        let cold_keys = [
            "converged",
            "of",
            "first_ms",
            "p50_ms",
            "p99_ms",
            "last_ms",
            "limit_s",
        ];
        assert_eq!(cold.len(), cold_keys.len());
        assert!(cold_keys.iter().all(|k| cold.contains_key(*k)));
        assert_eq!(v["cold_start"]["converged"], 3);
        assert_eq!(v["cold_start"]["of"], 4);
        assert_eq!(v["cold_start"]["p99_ms"], 300.0);
        assert!(v["cold_start"]["last_ms"].is_null());
        assert_eq!(v["cold_start"]["limit_s"], 20.0);
        assert!(v["detect"].is_null());
        assert_eq!(v["bytes_per_node_s"]["cold_start"], 100.0);
        assert_eq!(v["datagrams_per_node_s"]["cold_start"], 1.0);
        assert!(v["bytes_per_node_s"]["steady"].is_null());
        assert_eq!(v["error"], "instance 3 panicked");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_duration(Duration::from_millis(7500)), "7.5s");
        assert_eq!(
            fmt_duration(Duration::from_secs_f64(11.999_999_999_999_998)),
            "12s"
        );
        assert_eq!(fmt_duration(Duration::from_secs(900)), "15min");
        assert_eq!(fmt_duration(Duration::from_secs(86_400)), "24h");
    }

    /// The version of `name` in the workspace's Cargo.lock (the only one there).
    fn locked_version(name: &str) -> String {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("Cargo.lock");
        let versions: Vec<String> = lock
            .split("[[package]]")
            .filter(|block| {
                block
                    .lines()
                    .any(|l| l.trim() == format!("name = \"{name}\""))
            })
            .filter_map(|block| {
                block
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("version = \""))
                    .map(|v| v.trim_end_matches('"').to_string())
            })
            .collect();
        assert_eq!(versions.len(), 1, "{name} in Cargo.lock: {versions:?}");
        versions[0].clone()
    }

    #[test]
    fn reported_versions_are_the_locked_ones() {
        assert_eq!(chitchat::VERSION, locked_version("chitchat"));
        assert_eq!(foca::VERSION, locked_version("foca"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            peer: PeerArgs,
        }
        let parse = |s: &str| Cli::try_parse_from(s.split_whitespace());
        let ok = parse("t --impl foca --nodes 100").expect("valid");
        assert_eq!(ok.peer.implementation, Impl::Foca);
        assert_eq!(ok.peer.kill, 0.01);
        assert_eq!(ok.peer.join_window, 1.0);
        assert_eq!(ok.peer.cold_start_limit, 120.0);
        assert_eq!(ok.peer.detect_limit, 120.0);
        assert_eq!(ok.peer.sample_ms, 100);
        for bad in [
            "t --impl serf --nodes 100",
            "t --impl foca",
            "t --impl foca --nodes 1",
            "t --impl foca --nodes 20001",
            "t --impl foca --nodes 10 --kill 1.5",
            "t --impl foca --nodes 10 --join-window -1",
            "t --impl foca --nodes 10 --cold-start-limit 0",
            "t --impl foca --nodes 10 --detect-limit nan",
            "t --impl foca --nodes 10 --sample-ms 0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

//! `loadgen run` (the default): thousands of real nodes — the engine's `Node`, each with its
//! own UDP socket on loopback, hosted by the thread-per-core runtime — driven through a
//! script of scenarios, measured from the nodes' own views.
//!
//! Every node writes, after each input, whether its view meets the goal of the current
//! measurement and when it first did ([`host::Slot`]); the load generator only sets goals,
//! sends commands and reads the slots. Nothing here tells a node what the others know.

mod host;
mod report;
pub(crate) mod sys;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use hearsay::detector::suspicion_timeout;
use hearsay::node::{Command, NodeConfig, PlacementConfig, UpdatesSent};
use hearsay::placement::{NodeId, Router, Scheme};
use hearsay::runtime::{BackendChoice, EndpointId, Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::PresetArg;
use host::{Delay, Faults, Goal, Host, HostCmd, Observatory, Watch};

/// Cluster label of every node of a run.
const CLUSTER: &[u8] = b"loadgen";

/// Nodes that keep placement (a router): lookups are read from the first, and all of them
/// are compared for identical placement.
const OBSERVERS: usize = 3;

/// One step of a run's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Step {
    /// All nodes join through the seeds at once.
    ColdStart,
    /// Steady state: traffic and CPU with nothing happening.
    Steady,
    /// One member changes its metadata (an incarnation bump spreads).
    Rumor,
    /// One CRDT write on one node, until every node holds it.
    Crdt,
    /// A fraction of the nodes crash (`--kill`), while readers look keys up.
    Kill,
    /// Nodes crash and restart at a rate, while readers look keys up.
    Churn,
    /// The nodes split in two groups for `--partition-periods`, then heal.
    Partition,
    /// The placement report for the live member count (hot-spot spread, keys moved).
    Placement,
}

/// Which transport carries the datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub(crate) enum Transport {
    /// Real UDP sockets on loopback (io_uring, or the portable backend).
    Udp,
    /// The runtime's in-process network: same codec and runtime, no kernel.
    Mem,
}

/// io_uring or portable, for `--transport udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    /// io_uring where the kernel allows it, else portable.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll.
    Portable,
}

/// Flags of a run of real nodes.
#[derive(Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub(crate) nodes: u64,
    /// Steps to run in order, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cold-start,steady,rumor,crdt,kill,placement"
    )]
    pub(crate) scenario: Vec<Step>,
    /// Datagram transport.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    pub(crate) transport: Transport,
    /// Backend of the UDP transport.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub(crate) backend: BackendArg,
    /// Shard threads (default: available cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub(crate) shards: Option<u64>,
    /// Timing preset of every node: lan, wan or local.
    #[arg(long, default_value = "lan", value_parser = crate::parse_preset)]
    pub(crate) preset: PresetArg,
    /// Seeds the others join through (the first nodes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub(crate) seeds: u64,
    /// Percent of the nodes the kill step crashes.
    #[arg(long, default_value_t = 1.0, value_parser = parse_percent)]
    pub(crate) kill: f64,
    /// Crash-and-restart operations per second in the churn step.
    #[arg(long, default_value_t = 5.0, value_parser = parse_rate)]
    pub(crate) churn_rate: f64,
    /// Periods the churn step lasts.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) churn_periods: u32,
    /// Periods over which the cold start's joins are spread, in random order (0: all at once).
    #[arg(long, default_value_t = 1.0, value_parser = parse_window)]
    pub(crate) join_window: f64,
    /// Receive buffer of every socket in bytes, capped by net.core.rmem_max (default:
    /// 4 MiB, or rmem_max where that is lower).
    #[arg(long, value_parser = clap::value_parser!(u64).range(4096..=(1 << 30)))]
    pub(crate) socket_buffer: Option<u64>,
    /// Leave transparent huge pages on. By default the load generator turns them off for
    /// itself: zeroing 2 MiB pages as thousands of tables grow cost more CPU than the
    /// larger pages saved.
    #[arg(long)]
    pub(crate) huge_pages: bool,
    /// Nodes reported one by one after each step that waits for full views (cold start,
    /// churn, partition heal): the last ones to converge, with their view once per period,
    /// the pulls they opened and deferred, and how late they read (0: none).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub(crate) stragglers: u32,
    /// Periods the partition lasts before it heals.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) partition_periods: u32,
    /// Periods the steady step measures.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) steady_periods: u32,
    /// Probability that a received datagram is lost.
    #[arg(long, default_value_t = 0.0, value_parser = crate::parse_probability)]
    pub(crate) loss: f64,
    /// Probability that a received datagram is delivered twice.
    #[arg(long, default_value_t = 0.0, value_parser = crate::parse_probability)]
    pub(crate) dup: f64,
    /// Probability that a received datagram is held back behind later ones.
    #[arg(long, default_value_t = 0.0, value_parser = crate::parse_probability)]
    pub(crate) reorder: f64,
    /// Added one-way delay: `none`, `MS`, `uniform:MIN_MS:MAX_MS` or `lognormal:MEDIAN_MS:SIGMA`.
    #[arg(long, default_value = "none", value_parser = parse_delay)]
    pub(crate) delay: DelayArg,
    /// Members that probe a suspect first when they hear of its suspicion (about K of
    /// them, each with probability K/N; `all`: every member that hears of it).
    #[arg(long, value_name = "K|all", default_value = "4", value_parser = parse_probers)]
    pub(crate) suspect_probers: Probers,
    /// Do not ping a probe's target directly once more when asking others to probe it
    /// (`NodeConfig::retry_direct_probe`), to measure what the second ping is worth.
    #[arg(long)]
    pub(crate) no_direct_retry: bool,
    /// Members asked to probe indirectly when a direct probe times out (SWIM's k;
    /// default: the preset's).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=16))]
    pub(crate) indirect_probes: Option<u64>,
    /// Time between gossip rounds, in milliseconds (default: the preset's, a tenth of the
    /// probe interval).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) gossip_interval: Option<u64>,
    /// Reader threads calling `lookup` during the kill and churn steps.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub(crate) readers: u64,
    /// Placement scheme of the observer nodes whose routers the readers use.
    #[arg(long, default_value = "jump")]
    pub(crate) scheme: Scheme,
    /// Keys per measurement of the placement step.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1_000..=1_000_000_000))]
    pub(crate) keys: u64,
    /// Schemes of the placement step (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) schemes: Vec<Scheme>,
    /// Give up on a step after this many periods (the kill step waits for its bound).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_periods: u32,
    /// Seed of the nodes and of the run's random choices.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Write the JSON record to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Write the Markdown report to this file.
    #[arg(long)]
    pub(crate) markdown: Option<PathBuf>,
    /// Write SVG plots (convergence CDF per step) into this directory.
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
}

/// A parsed `--delay`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DelayArg(Delay);

fn parse_delay(s: &str) -> Result<DelayArg, String> {
    let ms = |v: &str| -> Result<Duration, String> {
        let x: f64 = v.parse().map_err(|e| format!("`{v}`: {e}"))?;
        if x.is_finite() && (0.0..=10_000.0).contains(&x) {
            Ok(Duration::from_secs_f64(x / 1000.0))
        } else {
            Err(format!("`{v}` ms is not in 0..=10000"))
        }
    };
    let parts: Vec<&str> = s.split(':').collect();
    let d = match parts.as_slice() {
        ["none"] => Delay::None,
        [v] => Delay::Constant(ms(v)?),
        ["uniform", a, b] => {
            let (a, b) = (ms(a)?, ms(b)?);
            if a > b {
                return Err("uniform: MIN_MS must not exceed MAX_MS".into());
            }
            Delay::Uniform(a, b)
        }
        ["lognormal", m, sigma] => {
            let sigma: f64 = sigma.parse().map_err(|e| format!("sigma: {e}"))?;
            if !(sigma.is_finite() && (0.0..=5.0).contains(&sigma)) {
                return Err("lognormal: SIGMA must be in 0..=5".into());
            }
            Delay::LogNormal(ms(m)?, sigma)
        }
        _ => {
            return Err(
                "expected none, MS, uniform:MIN_MS:MAX_MS or lognormal:MEDIAN_MS:SIGMA".into(),
            )
        }
    };
    Ok(DelayArg(d))
}

fn parse_window(s: &str) -> Result<f64, String> {
    crate::parse_number(
        s,
        |v| v.is_finite() && (0.0..=100.0).contains(&v),
        "must be in 0..=100 periods",
    )
}

fn parse_percent(s: &str) -> Result<f64, String> {
    crate::parse_number(
        s,
        |v| v.is_finite() && v > 0.0 && v < 50.0,
        "must be in (0, 50)",
    )
}

fn parse_rate(s: &str) -> Result<f64, String> {
    crate::parse_number(
        s,
        |v| v.is_finite() && v > 0.0 && v <= 10_000.0,
        "must be in (0, 10000]",
    )
}

/// Convergence of one measured event across the nodes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Convergence {
    /// Nodes whose view was measured (live ones).
    pub(crate) nodes: usize,
    /// Nodes that met the goal before the step gave up.
    pub(crate) converged: usize,
    pub(crate) first_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) last_ms: f64,
    /// Every converged node's time, sorted (for the CDF plot).
    #[serde(skip)]
    pub(crate) times_ms: Vec<f64>,
}

/// One of the last nodes to reach a full view (or the median one, for comparison): its
/// view over the step and what its anti-entropy did, from its own counters. It tells a node
/// starved of pulls (many deferred because it read late) from one whose pulls taught it
/// little.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Straggler {
    /// Its place in the order of convergence, from 1 (first) to the live nodes' count; the
    /// nodes that never converged come last.
    pub(crate) rank: usize,
    /// Node index (its id is the index plus one).
    pub(crate) node: usize,
    /// When it was told to join, ms after the step began (cold start only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) joined_ms: Option<f64>,
    /// When its view became full, ms after the step began (`None`: never).
    pub(crate) converged_ms: Option<f64>,
    /// When the first view sample was taken, ms after the step began: the load generator
    /// starts waiting once it has sent every join (after the join window, in the cold start).
    pub(crate) first_sample_ms: f64,
    /// Live members in its view at the first sample and once per period after it, until
    /// every node converged or the step gave up.
    pub(crate) live_by_period: Vec<u32>,
    /// Push-pull rounds it opened, and rounds it deferred because it read late, in the step.
    pub(crate) pulls: u64,
    pub(crate) pulls_deferred: u64,
    /// Gossip rounds it deferred because it read late, in the step.
    pub(crate) gossip_deferred: u64,
    /// Member updates it read and merged in the step.
    pub(crate) updates_read: u64,
    pub(crate) updates_merged: u64,
    /// Longest wait of a datagram in its socket so far, ms.
    pub(crate) input_lag_peak_ms: f64,
}

/// A node's counters that [`Straggler`] reports as differences over a step.
#[derive(Debug, Clone, Copy, Default)]
struct NodeCounts {
    pulls: u64,
    pulls_deferred: u64,
    gossip_deferred: u64,
    updates_read: u64,
    updates_merged: u64,
    input_lag_peak_us: u64,
    sent: UpdatesSent,
}

impl NodeCounts {
    fn of(s: &hearsay::node::NodeStats) -> Self {
        Self {
            pulls: s.push_pulls,
            pulls_deferred: s.push_pulls_deferred,
            gossip_deferred: s.gossip_deferred,
            updates_read: s.messages_in.get(hearsay::codec::kind::MEMBER).0,
            updates_merged: s.updates_merged,
            input_lag_peak_us: s.input_lag_peak_us,
            sent: s.updates_sent,
        }
    }

    /// The counts since `before`; all of them, for a node restarted since (its counters
    /// went back to zero).
    fn since(&self, before: &Self) -> Self {
        let restarted = self.updates_read < before.updates_read || self.pulls < before.pulls;
        if restarted {
            return *self;
        }
        Self {
            pulls: self.pulls - before.pulls,
            pulls_deferred: self.pulls_deferred.saturating_sub(before.pulls_deferred),
            gossip_deferred: self.gossip_deferred.saturating_sub(before.gossip_deferred),
            updates_read: self.updates_read - before.updates_read,
            updates_merged: self.updates_merged.saturating_sub(before.updates_merged),
            input_lag_peak_us: self.input_lag_peak_us,
            sent: self.sent.since(&before.sent),
        }
    }
}

impl Tally<4> for UpdatesSent {
    fn fields(&mut self) -> [&mut u64; 4] {
        [
            &mut self.gossip,
            &mut self.piggyback,
            &mut self.pull,
            &mut self.catch_up,
        ]
    }
}

/// [`UpdatesSent`] in the JSON report: one number per carrier.
fn serialize_sent<S: serde::Serializer>(u: &UpdatesSent, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("UpdatesSent", 4)?;
    st.serialize_field("gossip", &u.gossip)?;
    st.serialize_field("piggyback", &u.piggyback)?;
    st.serialize_field("pull", &u.pull)?;
    st.serialize_field("catch_up", &u.catch_up)?;
    st.end()
}

/// A record of counters that is summed over the nodes and differenced over a step, field
/// by field.
trait Tally<const N: usize>: Copy {
    fn fields(&mut self) -> [&mut u64; N];

    fn add(&mut self, o: &Self) {
        let mut o = *o;
        for (a, b) in self.fields().into_iter().zip(o.fields()) {
            *a += *b;
        }
    }

    /// The counts since `o`; a counter that went back (a restarted node) counts as 0.
    fn since(&self, o: &Self) -> Self {
        let (mut d, mut o) = (*self, *o);
        for (a, b) in d.fields().into_iter().zip(o.fields()) {
            *a = a.saturating_sub(*b);
        }
        d
    }
}

/// Convergence of the nodes told to join in one quarter of the cold start's join window.
/// Early joiners get a small view from the seed and must learn the rest; late ones get a
/// fuller one: this shows which of them the last node is.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JoinGroup {
    /// The part of the window, in ms after the step began: `[from, to)`.
    pub(crate) joined_from_ms: f64,
    pub(crate) joined_to_ms: f64,
    #[serde(flatten)]
    pub(crate) convergence: Convergence,
}

impl Convergence {
    /// The convergence of `nodes` nodes, of which those in `times` (sorted, in ms) met the
    /// goal.
    fn of(nodes: usize, times: Vec<f64>) -> Self {
        Self {
            nodes,
            converged: times.len(),
            first_ms: times.first().copied().unwrap_or(f64::NAN),
            p50_ms: quantile(&times, 0.50),
            p99_ms: quantile(&times, 0.99),
            last_ms: times.last().copied().unwrap_or(f64::NAN),
            times_ms: times,
        }
    }
}

/// How many live members the nodes not yet at the goal see: "the others see
/// 2–4990 members (median 1784)", or `None` when every node met it.
fn behind_views(obs: &Observatory, epoch: u32, nodes: &[usize]) -> Option<String> {
    let mut live: Vec<u32> = nodes
        .iter()
        .map(|&i| &obs.slots[i])
        .filter(|s| !s.met(epoch))
        .map(|s| s.live.load(Ordering::Relaxed))
        .collect();
    live.sort_unstable();
    let (first, last) = (live.first()?, live.last()?);
    Some(format!(
        "the others see {first}–{last} members (median {})",
        live[(live.len() - 1) / 2]
    ))
}

/// The `p` quantile of sorted `times` (NaN when empty).
fn quantile(times: &[f64], p: f64) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    let k = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len());
    times[k - 1]
}

/// Lookup latency seen by the reader threads.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Lookups {
    pub(crate) count: u64,
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) p999_ns: u64,
    pub(crate) max_ns: u64,
    /// Placement versions the readers saw change under them.
    pub(crate) placement_versions: u64,
}

/// Traffic and CPU over one step.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Usage {
    pub(crate) seconds: f64,
    pub(crate) datagrams_per_node_s: f64,
    pub(crate) bytes_per_node_s: f64,
    /// CPU seconds of the whole process per wall second, over the machine's cores.
    pub(crate) cpu_share: f64,
    pub(crate) cpu_seconds: f64,
    /// UDP receive errors the kernel counted (buffer overflows).
    pub(crate) kernel_drops: u64,
    /// The most bytes waiting at once in the nodes' socket receive buffers (sampled every
    /// 250 ms): what the shards have not read yet. A datagram waits about this much
    /// divided by the rate the shards read at.
    pub(crate) peak_backlog_bytes: u64,
    /// Sockets holding unread datagrams at that peak.
    pub(crate) peak_backlog_sockets: u64,
    /// The longest any datagram waited in a node's socket before its shard read it, in
    /// milliseconds (the kernel's receive timestamps; 0 where sockets give none).
    pub(crate) peak_input_lag_ms: f64,
    /// Sends the runtime could not complete (dropped datagrams).
    pub(crate) send_errors: u64,
    /// Times a socket's receive paused because every receive buffer was in use.
    pub(crate) recv_buffers_exhausted: u64,
    /// Messages the nodes wrote, by message type (types with none are left out); a
    /// datagram carries several, so these add up to more than `datagrams_per_node_s`.
    pub(crate) messages: Vec<MessageRate>,
    /// Member updates the nodes read, all nodes together: every copy of every update,
    /// whether it told the reader something new or not.
    pub(crate) updates_read: u64,
    /// Of those, the ones that changed the reader's view. `updates_read / updates_merged`
    /// is the copies read per change learned: for the rumour step, the messages one
    /// rumour cost each member until the last had it.
    pub(crate) updates_merged: u64,
    /// Member updates the nodes wrote during the step, by what carried them. Nothing is
    /// lost on loopback without `--loss`, so these add up to about the updates read: where
    /// a step's reads came from.
    #[serde(serialize_with = "serialize_sent")]
    pub(crate) updates_sent: UpdatesSent,
    /// What the failure detectors did during the step.
    pub(crate) detector: Detector,
}

/// One message type's share of a step's traffic.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MessageRate {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) per_node_s: f64,
    pub(crate) bytes_per_node_s: f64,
}

/// Message type names in type order (`"ping"`, …, `"unknown"`).
pub(crate) fn message_names() -> Vec<&'static str> {
    hearsay::node::MessageCounts::default()
        .iter()
        .map(|(name, _, _)| name)
        .collect()
}

/// What every node has counted so far, summed over the nodes.
struct Totals {
    /// Messages and bytes written, by type.
    messages: Vec<(&'static str, u64, u64)>,
    /// Failure detector counters.
    detector: Detector,
    /// Each node's own counters, by node index (zero for a node that did not answer).
    nodes: Vec<NodeCounts>,
}

impl Totals {
    /// Member updates read, and of those the ones merged that changed something.
    fn updates(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(r, m), n| {
            (r + n.updates_read, m + n.updates_merged)
        })
    }

    /// Member updates written, by what carried them.
    fn sent(&self) -> UpdatesSent {
        let mut t = UpdatesSent::default();
        for n in &self.nodes {
            t.add(&n.sent);
        }
        t
    }
}

/// What the nodes' failure detectors did, all nodes together (from
/// [`hearsay::node::NodeStats`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Detector {
    /// Direct probes sent.
    pub(crate) probes: u64,
    /// Probes that failed (no ack, direct or indirect).
    pub(crate) probe_failures: u64,
    /// Probes answered after more than half the probe timeout.
    pub(crate) slow_acks: u64,
    /// Probes left unjudged because their node read its input late.
    pub(crate) probes_unjudged: u64,
    /// Suspicions raised.
    pub(crate) suspicions: u64,
    /// Suspicion deadlines extended because their node read its input late.
    pub(crate) suspicions_extended: u64,
}

impl Detector {
    fn of(s: &hearsay::node::NodeStats) -> Self {
        Self {
            probes: s.probes,
            probe_failures: s.probe_failures,
            slow_acks: s.slow_acks,
            probes_unjudged: s.probes_unjudged,
            suspicions: s.suspicions,
            suspicions_extended: s.suspicions_extended,
        }
    }
}

impl Tally<6> for Detector {
    fn fields(&mut self) -> [&mut u64; 6] {
        [
            &mut self.probes,
            &mut self.probe_failures,
            &mut self.slow_acks,
            &mut self.probes_unjudged,
            &mut self.suspicions,
            &mut self.suspicions_extended,
        ]
    }
}

/// Messages and bytes every node has written so far, by type, and the member updates it
/// has read and merged, summed over the nodes. Each node sends its counts from its shard's
/// thread; a crashed node's closure is dropped unanswered, and a restarted node counts from
/// its restart.
fn totals(c: &Cluster) -> Totals {
    let (tx, rx) = mpsc::channel();
    for i in 0..c.ids.len() {
        let tx = tx.clone();
        let cmd = HostCmd::Inspect(Box::new(move |n| {
            let s = n.stats();
            let _ = tx.send((i, s.messages_out, NodeCounts::of(s), Detector::of(s)));
        }));
        // A node the runtime no longer hosts has nothing to add.
        let _ = c.send(i, cmd);
    }
    drop(tx);
    let mut t = Totals {
        messages: message_names().into_iter().map(|k| (k, 0, 0)).collect(),
        detector: Detector::default(),
        nodes: vec![NodeCounts::default(); c.ids.len()],
    };
    // Ends once every closure has run or been dropped (all senders gone).
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok((i, counts, node, detector)) =
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        for (t, (_, m, b)) in t.messages.iter_mut().zip(counts.iter()) {
            t.1 += m;
            t.2 += b;
        }
        t.detector.add(&detector);
        t.nodes[i] = node;
    }
    t
}

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepRecord {
    pub(crate) step: Step,
    /// A line on what happened (who was killed, which key was written…).
    pub(crate) what: String,
    pub(crate) convergence: Option<Convergence>,
    /// The bound a failure detection is held to, in ms (kill step).
    pub(crate) bound_ms: Option<f64>,
    pub(crate) false_suspicions: u64,
    pub(crate) false_declarations: u64,
    pub(crate) lookups: Option<Lookups>,
    pub(crate) usage: Usage,
    /// Distinct view hashes among live nodes when the step ended.
    pub(crate) distinct_views: usize,
    /// Cold start: convergence by quarter of the join window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) by_join: Vec<JoinGroup>,
    /// Steps that wait for full views: the last nodes to converge, then the median one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) stragglers: Vec<Straggler>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct RunRecord {
    pub(crate) command: String,
    pub(crate) machine: String,
    pub(crate) nodes: usize,
    pub(crate) transport: Transport,
    pub(crate) backend: String,
    pub(crate) shards: usize,
    pub(crate) preset: String,
    pub(crate) period_ms: f64,
    pub(crate) faults: String,
    /// Whether transparent huge pages were left on (`--huge-pages`, or the kernel refused
    /// to turn them off).
    pub(crate) huge_pages: bool,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) wall_s: f64,
    pub(crate) cpu_s: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) rss_per_node_kib: f64,
    pub(crate) placement_identical: Option<bool>,
}

/// The running cluster.
struct Cluster {
    rt: Runtime<Host>,
    backlog: BacklogProbe,
    obs: Arc<Observatory>,
    ids: Vec<EndpointId>,
    seeds: Vec<SocketAddr>,
    period: Duration,
    epoch: u32,
    rng: SmallRng,
    max_periods: u32,
    progress: report::Progress,
    /// While the current goal is a full view: every node's live count, sampled once per
    /// period of the wait.
    view_samples: Vec<Vec<u32>>,
    /// When the first of `view_samples` was taken, after the goal was set.
    samples_from: Duration,
}

impl Cluster {
    fn live_indices(&self) -> Vec<usize> {
        (0..self.ids.len())
            .filter(|&i| !self.obs.killed[i].load(Ordering::Relaxed))
            .collect()
    }

    fn send(&self, i: usize, cmd: HostCmd) -> Result<()> {
        self.rt.command(self.ids[i], cmd)?;
        Ok(())
    }

    /// Run `f` on node `i`'s thread and wait for its answer.
    fn ask<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce(&hearsay::node::Node) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(
            i,
            HostCmd::Inspect(Box::new(move |n| {
                let _ = tx.send(f(n));
            })),
        )?;
        rx.recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("node {i} did not answer"))
    }

    /// Set a new goal; returns its epoch.
    fn set_goal(&mut self, goal: Goal) -> Instant {
        self.epoch += 1;
        self.view_samples.clear();
        let since = Instant::now();
        self.obs.watch.store(Arc::new(Watch {
            goal,
            since,
            epoch: self.epoch,
        }));
        since
    }

    /// Wait until every live node met the current goal, or `limit` passed.
    fn wait_goal(&mut self, label: &str, limit: Duration) -> Convergence {
        let live = self.live_indices();
        let start = Instant::now();
        let counting = matches!(self.obs.watch.load().goal, Goal::Live(_));
        self.samples_from = start.saturating_duration_since(self.obs.watch.load().since);
        loop {
            if counting && start + self.period * self.view_samples.len() as u32 <= Instant::now() {
                self.view_samples.push(
                    self.obs
                        .slots
                        .iter()
                        .map(|s| s.live.load(Ordering::Relaxed))
                        .collect(),
                );
            }
            let done = live
                .iter()
                .filter(|&&i| self.obs.slots[i].met(self.epoch))
                .count();
            self.progress
                .update_with(label, done, live.len(), start.elapsed(), || {
                    counting
                        .then(|| behind_views(&self.obs, self.epoch, &live))
                        .flatten()
                });
            if done == live.len() || start.elapsed() >= limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.progress.finish();
        Convergence::of(live.len(), self.times_of(&live))
    }

    /// When each of `nodes` met the current goal, in ms, sorted; those that have not are
    /// left out.
    fn times_of(&self, nodes: &[usize]) -> Vec<f64> {
        let mut times: Vec<f64> = nodes
            .iter()
            .filter(|&&i| self.obs.slots[i].met(self.epoch))
            .map(|&i| self.obs.slots[i].at_us.load(Ordering::Relaxed) as f64 / 1000.0)
            .collect();
        times.sort_by(f64::total_cmp);
        times
    }

    /// The `k` live nodes that met the current full-view goal last (those that never met it
    /// first), then the median node, each with its view as sampled during the wait and its
    /// counters since `before`; empty unless the step waited for full views.
    fn stragglers(
        &mut self,
        k: usize,
        before: &[NodeCounts],
        joined_at: &[Option<f64>],
    ) -> Vec<Straggler> {
        // The samples belong to this step's wait only.
        let samples = std::mem::take(&mut self.view_samples);
        if k == 0 || samples.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<(u64, usize)> = self
            .live_indices()
            .into_iter()
            .map(|i| {
                let s = &self.obs.slots[i];
                let at = if s.met(self.epoch) {
                    s.at_us.load(Ordering::Relaxed)
                } else {
                    u64::MAX
                };
                (at, i)
            })
            .collect();
        order.sort_unstable();
        let n = order.len();
        let mut ranks: Vec<usize> = (n.saturating_sub(k)..n).rev().collect();
        let median = n.saturating_sub(1) / 2;
        if n > 0 && !ranks.contains(&median) {
            ranks.push(median);
        }
        ranks
            .into_iter()
            .filter_map(|r| {
                let (at, i) = order[r];
                let now = self.ask(i, |node| NodeCounts::of(node.stats())).ok()?;
                let d = now.since(&before.get(i).copied().unwrap_or_default());
                Some(Straggler {
                    rank: r + 1,
                    node: i,
                    joined_ms: joined_at.get(i).copied().flatten(),
                    converged_ms: (at != u64::MAX).then(|| at as f64 / 1000.0),
                    first_sample_ms: self.samples_from.as_secs_f64() * 1000.0,
                    live_by_period: samples.iter().map(|v| v[i]).collect(),
                    pulls: d.pulls,
                    pulls_deferred: d.pulls_deferred,
                    gossip_deferred: d.gossip_deferred,
                    updates_read: d.updates_read,
                    updates_merged: d.updates_merged,
                    input_lag_peak_ms: now.input_lag_peak_us as f64 / 1000.0,
                })
            })
            .collect()
    }

    /// Convergence of the current goal among each group of nodes, in order.
    fn by_join(&self, groups: &[(Duration, Duration, Vec<usize>)]) -> Vec<JoinGroup> {
        groups
            .iter()
            .map(|(from, to, nodes)| JoinGroup {
                joined_from_ms: from.as_secs_f64() * 1000.0,
                joined_to_ms: to.as_secs_f64() * 1000.0,
                convergence: Convergence::of(nodes.len(), self.times_of(nodes)),
            })
            .collect()
    }

    fn distinct_views(&self) -> usize {
        let mut hashes: Vec<u64> = self
            .live_indices()
            .iter()
            .map(|&i| self.obs.slots[i].view_hash.load(Ordering::Relaxed))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes.len()
    }

    /// Wait (at most `limit`) until every live node has the same view.
    fn wait_same_view(&self, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let d = self.distinct_views();
            if d <= 1 || start.elapsed() >= limit {
                return d;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn limit(&self) -> Duration {
        self.period * self.max_periods
    }

    fn counters(&self) -> (u64, u64) {
        (
            self.obs.false_suspicions.load(Ordering::Relaxed),
            self.obs.false_declarations.load(Ordering::Relaxed),
        )
    }

    /// A random live node that is neither a seed nor an observer.
    fn pick(&mut self, exclude: &[usize]) -> Option<usize> {
        let floor = OBSERVERS.max(self.seeds.len());
        let live: Vec<usize> = self
            .live_indices()
            .into_iter()
            .filter(|&i| i >= floor && !exclude.contains(&i))
            .collect();
        live.get(self.rng.random_range(0..live.len().max(1)))
            .copied()
    }
}

/// A thread that samples the nodes' socket receive backlog every 250 ms and keeps the
/// peak since it was last taken; it stops when dropped.
struct BacklogProbe {
    shared: Arc<BacklogPeak>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct BacklogPeak {
    stop: AtomicBool,
    peak: Mutex<sys::Backlog>,
}

impl BacklogProbe {
    fn start(ports: HashSet<u16>) -> Self {
        let shared = Arc::new(BacklogPeak::default());
        let thread = (!ports.is_empty()).then(|| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                sys::lowest_priority();
                while !shared.stop.load(Ordering::Relaxed) {
                    let now = sys::read_udp_backlog(&ports);
                    let mut peak = shared.peak.lock().unwrap_or_else(|e| e.into_inner());
                    if now.bytes > peak.bytes {
                        *peak = now;
                    }
                    drop(peak);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        });
        Self { shared, thread }
    }

    /// The peak since the last call, and start over.
    fn take_peak(&self) -> sys::Backlog {
        let mut peak = self.shared.peak.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *peak)
    }
}

impl Drop for BacklogProbe {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counters sampled at a step's start, to report the step's usage.
struct Meter {
    at: Instant,
    start: hearsay::runtime::Stats,
    datagrams: u64,
    bytes: u64,
    cpu: f64,
    drops: u64,
    totals: Totals,
}

impl Meter {
    fn start(c: &Cluster) -> Self {
        c.backlog.take_peak();
        c.obs.input_lag_peak_us.store(0, Ordering::Relaxed);
        let s = c.rt.stats();
        Self {
            at: Instant::now(),
            start: s,
            datagrams: s.datagrams_out,
            bytes: s.bytes_out,
            cpu: sys::cpu_seconds(),
            drops: sys::udp_receive_errors(),
            totals: totals(c),
        }
    }

    fn stop(&self, c: &Cluster) -> Usage {
        let s = c.rt.stats();
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let n = c.live_indices().len().max(1) as f64;
        let cpu = sys::cpu_seconds() - self.cpu;
        let backlog = c.backlog.take_peak();
        let now = totals(c);
        let ((read0, merged0), (read1, merged1)) = (self.totals.updates(), now.updates());
        let sent = now.sent().since(&self.totals.sent());
        let messages = now
            .messages
            .into_iter()
            .zip(&self.totals.messages)
            .filter_map(|((kind, m1, b1), &(_, m0, b0))| {
                let m = m1.saturating_sub(m0);
                (m > 0).then(|| MessageRate {
                    kind,
                    per_node_s: m as f64 / n / secs,
                    bytes_per_node_s: b1.saturating_sub(b0) as f64 / n / secs,
                })
            })
            .collect();
        Usage {
            seconds: secs,
            datagrams_per_node_s: (s.datagrams_out - self.datagrams) as f64 / n / secs,
            bytes_per_node_s: (s.bytes_out - self.bytes) as f64 / n / secs,
            cpu_share: cpu / secs / sys::cores() as f64,
            cpu_seconds: cpu,
            kernel_drops: sys::udp_receive_errors().saturating_sub(self.drops),
            peak_backlog_bytes: backlog.bytes,
            peak_backlog_sockets: backlog.sockets,
            peak_input_lag_ms: c.obs.input_lag_peak_us.swap(0, Ordering::Relaxed) as f64 / 1e3,
            send_errors: (s.send_errors + s.send_queue_full)
                .saturating_sub(self.start.send_errors + self.start.send_queue_full),
            recv_buffers_exhausted: s
                .recv_buffers_exhausted
                .saturating_sub(self.start.recv_buffers_exhausted),
            messages,
            updates_read: read1.saturating_sub(read0),
            updates_merged: merged1.saturating_sub(merged0),
            updates_sent: sent,
            detector: now.detector.since(&self.totals.detector),
        }
    }
}

/// `--suspect-probers`: `None` for every member.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probers(Option<usize>);

fn parse_probers(s: &str) -> Result<Probers, String> {
    if s == "all" {
        return Ok(Probers(None));
    }
    s.parse()
        .map(|k| Probers(Some(k)))
        .map_err(|_| format!("`{s}` is neither a number of members nor `all`"))
}

/// Reader threads calling `lookup` on a router until stopped. They run at the lowest
/// scheduling priority: a router's readers are the embedding application's business, and
/// on a machine with as many cores as shards a spinning reader at normal priority would
/// take a third of the CPU from the nodes it measures.
struct Readers {
    router: Option<Arc<Router>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(Histogram<u64>, u64)>>,
}

impl Readers {
    fn start(router: Option<Arc<Router>>, count: usize, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = router
            .clone()
            .map(|router| {
                (0..count)
                    .map(|t| {
                        let router = Arc::clone(&router);
                        let stop = Arc::clone(&stop);
                        std::thread::spawn(move || read_loop(&router, &stop, seed ^ t as u64))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            router,
            stop,
            threads,
        }
    }

    /// Keep reading until the router places keys on `members` nodes (the change reached
    /// placement), or `limit` passed.
    fn settle(&self, members: usize, limit: Duration) {
        let Some(router) = &self.router else { return };
        let start = Instant::now();
        while router.load().nodes().len() != members && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> Option<Lookups> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Histogram::<u64>::new(3).ok()?;
        let mut versions = 0;
        let mut any = false;
        for t in self.threads {
            let (h, v) = t.join().ok()?;
            total.add(&h).ok()?;
            versions = versions.max(v);
            any = true;
        }
        any.then(|| Lookups {
            count: total.len(),
            p50_ns: total.value_at_quantile(0.50),
            p99_ns: total.value_at_quantile(0.99),
            p999_ns: total.value_at_quantile(0.999),
            max_ns: total.max(),
            placement_versions: versions,
        })
    }
}

fn read_loop(router: &Router, stop: &AtomicBool, seed: u64) -> (Histogram<u64>, u64) {
    sys::lowest_priority();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut version = router.load().version();
    let mut versions = 0;
    let mut sink = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            let key: u64 = rng.random();
            let t = Instant::now();
            let owner = router.lookup(key);
            let ns = t.elapsed().as_nanos() as u64;
            sink = sink.wrapping_add(owner.0);
            let _ = h.record(ns.max(1));
        }
        let v = router.load().version();
        if v != version {
            versions += 1;
            version = v;
        }
    }
    std::hint::black_box(sink);
    (h, versions)
}

/// Receive buffer asked for every socket unless `--socket-buffer` says otherwise: a few
/// seconds of a node's datagrams when its shard falls behind (a 1400-byte datagram takes
/// about 2.3 KiB of buffer), so that a busy shard delays datagrams instead of the kernel
/// dropping them. Capped by `net.core.rmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// Provided receive buffers per shard: eight per node on the shard, between 4096 and the
/// runtime's 32 768, so that one wait's worth of datagrams from thousands of sockets does
/// not run the ring dry (each time it does, the emptied sockets' receives pause until
/// re-armed).
fn recv_buffers(nodes: usize, shards: usize) -> usize {
    (nodes.div_ceil(shards.max(1)) * 8)
        .next_power_of_two()
        .clamp(4096, 32_768)
}

/// SplitMix64's finaliser: distinct, well-mixed seeds for consecutive node indices.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Run the script.
pub(crate) fn run(args: &RunArgs, command_line: String) -> Result<()> {
    let wall = Instant::now();
    let n = args.nodes as usize;
    if args.scenario.first() != Some(&Step::ColdStart)
        || args.scenario[1..].contains(&Step::ColdStart)
    {
        bail!("--scenario must start with cold-start, and only once (the nodes join there)");
    }
    let huge_pages = args.huge_pages || !sys::disable_huge_pages();
    if args.transport == Transport::Udp {
        sys::raise_open_files(n)?;
    }
    let faults = Faults {
        loss: args.loss,
        dup: args.dup,
        reorder: args.reorder,
        delay: args.delay.0,
    };
    let obs = Arc::new(Observatory::new(n, faults));
    let want = args.socket_buffer.map_or(SOCKET_BUFFER, |b| b as usize);
    let socket_buffer = sys::socket_buffer(want);
    let mut rt_config = RuntimeConfig {
        backend: match (args.transport, args.backend) {
            (Transport::Mem, _) => BackendChoice::Memory,
            (Transport::Udp, BackendArg::Auto) => BackendChoice::Auto,
            (Transport::Udp, BackendArg::IoUring) => BackendChoice::IoUring,
            (Transport::Udp, BackendArg::Portable) => BackendChoice::Portable,
        },
        socket_recv_buffer: Some(socket_buffer),
        ..RuntimeConfig::default()
    };
    if let Some(s) = args.shards {
        rt_config.shards = s as usize;
    }
    rt_config.recv_buffers = recv_buffers(n, rt_config.shards);
    let shards = rt_config.shards;
    let rt: Runtime<Host> = Runtime::start(rt_config).context("starting the runtime")?;
    let backend = rt.backend().to_string();
    let preset = args.preset.0;
    let template = NodeConfig::new(preset, "127.0.0.1:1".parse()?, CLUSTER);
    let period = template.probe_interval;
    eprintln!(
        "loadgen run: {n} nodes on {backend}, {shards} shards, preset {preset:?} (period {} ms), transparent huge pages {}, scenario {:?}",
        period.as_millis(),
        if huge_pages { "on" } else { "off" },
        args.scenario
    );
    if args.transport == Transport::Udp && socket_buffer < want {
        eprintln!(
            "  socket receive buffers: {} KiB, capped by net.core.rmem_max (asked for {} KiB; \
             raise it with `sysctl -w net.core.rmem_max={want}` for fewer drops under load)",
            socket_buffer / 1024,
            want / 1024
        );
    }

    let suspect_probers = args.suspect_probers;
    let retry_direct_probe = !args.no_direct_retry;
    let indirect_probes = args.indirect_probes.map(|k| k as usize);
    let gossip_interval = args.gossip_interval.map(Duration::from_millis);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let obs = Arc::clone(&obs);
        let scheme = args.scheme;
        let seed = args.seed;
        let id = rt
            .add_endpoint("127.0.0.1:0".parse()?, move |addr| {
                let mut c = NodeConfig::new(preset, addr, CLUSTER);
                c.id = NodeId(i as u64 + 1);
                c.rng_seed = splitmix(seed ^ (i as u64));
                c.suspect_probers = suspect_probers.0;
                c.retry_direct_probe = retry_direct_probe;
                if let Some(k) = indirect_probes {
                    c.indirect_probes = k;
                }
                if let Some(t) = gossip_interval {
                    c.gossip_interval = t;
                }
                if i < OBSERVERS {
                    c.placement = Some(PlacementConfig { scheme, seed });
                }
                Host::new(i, c, Instant::now(), obs)
            })
            .with_context(|| format!("binding the socket of node {i}"))?;
        ids.push(id);
    }
    let addrs: Vec<SocketAddr> = ids.iter().map(EndpointId::local_addr).collect();
    let index_of: HashMap<SocketAddr, u32> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, i as u32))
        .collect();
    let _ = obs.index_of.set(index_of);
    let seeds = addrs[..(args.seeds as usize).min(n)].to_vec();
    let ports = if args.transport == Transport::Udp {
        addrs.iter().map(SocketAddr::port).collect()
    } else {
        HashSet::new()
    };
    let mut c = Cluster {
        rt,
        backlog: BacklogProbe::start(ports),
        obs,
        ids,
        seeds,
        period,
        epoch: 0,
        rng: SmallRng::seed_from_u64(args.seed),
        max_periods: args.max_periods,
        progress: report::Progress::new(),
        view_samples: Vec::new(),
        samples_from: Duration::ZERO,
    };
    let rss_before = sys::rss_bytes();

    let mut steps = Vec::new();
    let mut joined = false;
    let mut rss_per_node = 0.0;
    for &step in &args.scenario {
        let (sus0, dec0) = c.counters();
        let meter = Meter::start(&c);
        let mut rec = StepRecord {
            step,
            what: String::new(),
            convergence: None,
            bound_ms: None,
            false_suspicions: 0,
            false_declarations: 0,
            lookups: None,
            usage: Usage::default(),
            distinct_views: 0,
            by_join: Vec::new(),
            stragglers: Vec::new(),
        };
        // When each node was told to join (cold start), ms after the goal was set.
        let mut joined_at: Vec<Option<f64>> = Vec::new();
        match step {
            Step::ColdStart => {
                joined = true;
                let since = c.set_goal(Goal::Live(n));
                c.send(0, HostCmd::Node(Command::Join(vec![])))?;
                let window = c.period.mul_f64(args.join_window);
                let mut joins: Vec<(Duration, usize)> = (1..n)
                    .map(|i| (window.mul_f64(c.rng.random::<f64>()), i))
                    .collect();
                joins.sort_unstable();
                // Quarters of the window; the seed, told first, is in the first.
                let mut groups: Vec<(Duration, Duration, Vec<usize>)> = (0..4u32)
                    .map(|q| (window * q / 4, window * (q + 1) / 4, Vec::new()))
                    .collect();
                groups[0].2.push(0);
                joined_at = vec![Some(0.0); n];
                for &(at, i) in &joins {
                    joined_at[i] = Some(at.as_secs_f64() * 1000.0);
                    let q = at.as_nanos() * 4 / window.as_nanos().max(1);
                    groups[(q as usize).min(3)].2.push(i);
                }
                for (at, i) in joins {
                    let wait = (since + at).saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    c.send(i, HostCmd::Node(Command::Join(c.seeds.clone())))?;
                }
                let limit = c.limit();
                rec.convergence = Some(c.wait_goal("cold start", limit));
                rec.by_join = c.by_join(&groups);
                rec.distinct_views = c.wait_same_view(c.period * 10);
                rec.what = format!(
                    "{n} nodes join through {} seed{}, spread over {} periods",
                    c.seeds.len(),
                    if c.seeds.len() == 1 { "" } else { "s" },
                    args.join_window
                );
                rss_per_node =
                    sys::rss_bytes().saturating_sub(rss_before) as f64 / n as f64 / 1024.0;
            }
            Step::Steady => {
                std::thread::sleep(c.period * args.steady_periods);
                rec.what = format!("{} periods with no change", args.steady_periods);
                rec.distinct_views = c.distinct_views();
            }
            Step::Rumor => {
                let Some(who) = c.pick(&[]) else {
                    bail!("no live node for the rumour")
                };
                let inc = c.ask(who, |node| node.incarnation())?;
                let id = NodeId(who as u64 + 1);
                c.set_goal(Goal::Incarnation {
                    id,
                    at_least: inc + 1,
                });
                c.send(
                    who,
                    HostCmd::Node(Command::SetMetadata(b"role=rumour".to_vec())),
                )?;
                let limit = c.limit();
                rec.convergence = Some(c.wait_goal("rumour", limit));
                rec.what = format!("node {who} changes its metadata (incarnation {})", inc + 1);
                rec.distinct_views = c.wait_same_view(c.period * 10);
            }
            Step::Crdt => {
                let Some(who) = c.pick(&[]) else {
                    bail!("no live node for the write")
                };
                let key = format!("loadgen/{}", c.epoch + 1).into_bytes();
                c.set_goal(Goal::Key(key.clone()));
                c.send(
                    who,
                    HostCmd::Node(Command::CrdtUpdate {
                        key,
                        kind: hearsay::crdt::Kind::GCounter,
                        op: hearsay::crdt::Op::Incr(1),
                    }),
                )?;
                let limit = c.limit();
                rec.convergence = Some(c.wait_goal("crdt write", limit));
                rec.what = format!("node {who} increments a counter");
                rec.distinct_views = c.distinct_views();
            }
            Step::Kill => {
                let live = c.live_indices().len();
                let k = ((live as f64 * args.kill / 100.0).round() as usize).max(1);
                let mut victims = Vec::with_capacity(k);
                while victims.len() < k {
                    match c.pick(&victims) {
                        Some(v) => victims.push(v),
                        None => break,
                    }
                }
                let router = c.ask(0, Host::router)?;
                let readers = Readers::start(router, args.readers as usize, args.seed);
                for &v in &victims {
                    c.obs.killed[v].store(true, Ordering::Relaxed);
                }
                let dead: Vec<NodeId> = victims.iter().map(|&v| NodeId(v as u64 + 1)).collect();
                c.set_goal(Goal::Dead(dead));
                for &v in &victims {
                    c.send(v, HostCmd::Kill)?;
                }
                let bound = c.period * 3
                    + suspicion_timeout(
                        live,
                        c.period,
                        template.suspicion_mult,
                        template.suspicion_max_mult,
                        0,
                    )
                    + c.period * 3;
                rec.bound_ms = Some(bound.as_secs_f64() * 1000.0);
                rec.convergence = Some(c.wait_goal("failure detection", bound + c.period * 3));
                readers.settle(c.live_indices().len(), c.period * 3);
                rec.lookups = readers.finish();
                rec.what = format!("{} nodes crash ({}% of {live})", victims.len(), args.kill);
                rec.distinct_views = c.wait_same_view(c.period * 10);
            }
            Step::Churn => {
                let router = c.ask(0, Host::router)?;
                let readers = Readers::start(router, args.readers as usize, args.seed);
                let end = Instant::now() + c.period * args.churn_periods;
                let gap = Duration::from_secs_f64(1.0 / args.churn_rate);
                let mut down: Vec<usize> = Vec::new();
                let mut ops = 0u64;
                while Instant::now() < end {
                    // Crash one; restart one that has been down for a while.
                    if let Some(v) = c.pick(&down) {
                        c.obs.killed[v].store(true, Ordering::Relaxed);
                        c.send(v, HostCmd::Kill)?;
                        down.push(v);
                        ops += 1;
                    }
                    if down.len() > 4 {
                        let v = down.remove(0);
                        c.send(v, HostCmd::Restart(c.seeds.clone()))?;
                        c.obs.killed[v].store(false, Ordering::Relaxed);
                        ops += 1;
                    }
                    c.progress.update(
                        "churn",
                        ops as usize,
                        0,
                        Instant::now() - (end - c.period * args.churn_periods),
                    );
                    std::thread::sleep(gap);
                }
                c.progress.finish();
                for v in down.drain(..) {
                    c.send(v, HostCmd::Restart(c.seeds.clone()))?;
                    c.obs.killed[v].store(false, Ordering::Relaxed);
                }
                c.set_goal(Goal::Live(n));
                let limit = c.limit();
                rec.convergence = Some(c.wait_goal("churn settles", limit));
                readers.settle(n, c.period * 3);
                rec.lookups = readers.finish();
                rec.what = format!(
                    "{ops} crashes and restarts at {}/s for {} periods; then all restart",
                    args.churn_rate, args.churn_periods
                );
                rec.distinct_views = c.wait_same_view(c.period * 10);
            }
            Step::Partition => {
                c.obs.partitioned.store(true, Ordering::Relaxed);
                std::thread::sleep(c.period * args.partition_periods);
                c.obs.partitioned.store(false, Ordering::Relaxed);
                let live = c.live_indices().len();
                c.set_goal(Goal::Live(live));
                let limit = c.limit();
                rec.convergence = Some(c.wait_goal("partition heal", limit));
                rec.what = format!(
                    "two halves cut off for {} periods, then healed",
                    args.partition_periods
                );
                rec.distinct_views = c.wait_same_view(c.period * 10);
            }
            Step::Placement => {
                let live = c.live_indices().len() as u64;
                let pargs = crate::PlacementArgs {
                    nodes: live,
                    keys: args.keys,
                    zipf: 1.1,
                    schemes: args.schemes.clone(),
                    seed: crate::PLACEMENT_SEED,
                    threads: None,
                    json: args
                        .json
                        .as_ref()
                        .map(|p| p.with_extension("placement.json")),
                    markdown: args
                        .markdown
                        .as_ref()
                        .map(|p| p.with_extension("placement.md")),
                };
                crate::placement::run(&pargs)?;
                rec.what = format!("placement report for the {live} live members");
            }
        }
        let (sus1, dec1) = c.counters();
        rec.false_suspicions = sus1 - sus0;
        rec.false_declarations = dec1 - dec0;
        rec.usage = meter.stop(&c);
        rec.stragglers = c.stragglers(args.stragglers as usize, &meter.totals.nodes, &joined_at);
        eprintln!("{}", report::step_line(&rec, c.period));
        for l in report::straggler_lines(&rec) {
            eprintln!("  {l}");
        }
        steps.push(rec);
    }

    // Every observer's router must place keys identically.
    let placement_identical = if joined {
        let routers: Vec<Arc<Router>> = (0..OBSERVERS.min(n))
            .filter(|&i| !c.obs.killed[i].load(Ordering::Relaxed))
            .filter_map(|i| c.ask(i, Host::router).ok().flatten())
            .collect();
        let same = |_: ()| {
            (0..10_000u64).all(|k| {
                let a = routers[0].lookup(k);
                routers.iter().all(|r| r.lookup(k) == a)
            })
        };
        let start = Instant::now();
        let mut ok = routers.len() > 1 && same(());
        while routers.len() > 1 && !ok && start.elapsed() < c.period * 5 {
            std::thread::sleep(c.period / 10);
            ok = same(());
        }
        (routers.len() > 1).then_some(ok)
    } else {
        None
    };

    let record = RunRecord {
        command: command_line,
        machine: sys::machine_line(),
        nodes: n,
        transport: args.transport,
        backend,
        shards,
        preset: format!("{preset:?}"),
        period_ms: period.as_secs_f64() * 1000.0,
        faults: format!(
            "loss {}, dup {}, reorder {}, delay {:?}",
            args.loss, args.dup, args.reorder, args.delay.0
        ),
        huge_pages,
        steps,
        wall_s: wall.elapsed().as_secs_f64(),
        cpu_s: sys::cpu_seconds(),
        peak_rss_mib: sys::peak_rss_bytes() as f64 / (1024.0 * 1024.0),
        rss_per_node_kib: rss_per_node,
        placement_identical,
    };
    for (i, st) in c.rt.shard_stats().iter().enumerate() {
        eprintln!("runtime shard {i}: {st:?}");
    }
    c.rt.shutdown().context("stopping the runtime")?;
    report::emit(&record, args)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::recv_buffers;

    #[test]
    fn receive_buffers_grow_with_the_nodes_per_shard_within_the_runtime_limits() {
        assert_eq!(recv_buffers(100, 2), 4096);
        assert_eq!(recv_buffers(1000, 2), 4096);
        assert_eq!(recv_buffers(1000, 1), 8192);
        assert_eq!(recv_buffers(5000, 2), 32_768);
        assert_eq!(recv_buffers(50_000, 2), 32_768);
        assert_eq!(recv_buffers(10, 0), 4096);
    }
}

//! The membership benchmark on the deterministic simulator: N real `Node` cores on an
//! in-memory network, seeded, with time jumping from event to event.
//!
//! Phases, each measured from the nodes' own views:
//! 1. cold start: node 0 starts the cluster, every other node joins through the first few
//!    nodes (its seed list) at a random instant within the first period; until every node
//!    holds the same view of all N members;
//! 2. steady state: once no node has rumours left to retransmit, datagrams and bytes sent
//!    per node per period, with nothing changing;
//! 3. a new member joins through a random member: periods until every node sees it;
//! 4. a random member is killed: periods until every node has declared it dead, against
//!    the bound probe interval + longest suspicion timeout + 3 periods.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearsay::codec::Status;
use hearsay::detector::suspicion_timeout;
use hearsay::node::{Command, Node, NodeConfig, Preset};
use hearsay::placement::NodeId;
use hearsay::sim::{Check, LinkConfig, Sim, SimConfig, SimStats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::SimArgs;

/// Seeds of the cold start: joins spread over a few members, as an operator would list
/// them.
const SEEDS: usize = 3;

/// One N's measurements; field names are the JSON keys.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimRecord {
    nodes: usize,
    preset: String,
    probe_interval_ms: f64,
    gossip_fanout: usize,
    loss: f64,
    cold_start_periods: f64,
    cold_start_datagrams_per_node: f64,
    cold_start_kib_per_node: f64,
    quiet_after_periods: f64,
    steady_periods: u32,
    steady_datagrams_per_node_per_period: f64,
    steady_bytes_per_node_per_period: f64,
    steady_bytes_per_node_per_sec: f64,
    join_spread_periods: f64,
    join_spread_target_periods: f64,
    failure_detect_periods: f64,
    failure_detect_bound_periods: f64,
    wall_seconds: f64,
    sim_events: u64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    command: String,
    seed: u64,
    runs: &'a [SimRecord],
}

fn node_config(addr: SocketAddr, preset: Preset) -> NodeConfig {
    let mut c = NodeConfig::new(preset, addr, b"loadgen");
    // Small tables for thousands of nodes in one process: no placement, few events kept.
    c.event_capacity = 64;
    c
}

fn all_agree(sim: &Sim<Node>, live: usize) -> bool {
    let mut hash = None;
    for (_, n) in sim.nodes() {
        if n.live_count() != live {
            return false;
        }
        let h = n.view_hash();
        if *hash.get_or_insert(h) != h {
            return false;
        }
    }
    true
}

fn everyone_sees(sim: &Sim<Node>, id: NodeId, about: Option<usize>, want: &[Status]) -> bool {
    sim.nodes()
        .filter(|(i, _)| Some(*i) != about)
        .all(|(_, n)| n.member(id).is_some_and(|m| want.contains(&m.status)))
}

fn sent(sim: &Sim<Node>) -> SimStats {
    *sim.stats()
}

pub(crate) fn run(args: &SimArgs) -> Result<()> {
    let mut records = Vec::new();
    for &n in &args.nodes {
        eprintln!("sim: {n} nodes …");
        let r = run_one(n, args).with_context(|| format!("{n} nodes"))?;
        eprintln!(
            "sim: {n} nodes: cold start {:.1} periods, join spread {:.2} periods (target {:.1}), \
             failure known by all in {:.1} periods (bound {:.1}), steady {:.0} B/node/s, {:.1} s wall",
            r.cold_start_periods,
            r.join_spread_periods,
            r.join_spread_target_periods,
            r.failure_detect_periods,
            r.failure_detect_bound_periods,
            r.steady_bytes_per_node_per_sec,
            r.wall_seconds
        );
        records.push(r);
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seed: args.seed,
        runs: &records,
    };
    print!("{}", render_markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, render_markdown(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_one(n: usize, args: &SimArgs) -> Result<SimRecord> {
    let wall = Instant::now();
    let preset = args.preset.0;
    let template = node_config("127.0.0.1:1".parse()?, preset);
    let period = template.probe_interval;
    let mut sim: Sim<Node> = Sim::new(SimConfig {
        seed: args.seed,
        default_link: LinkConfig::new(hearsay::sim::Latency::Uniform {
            min: Duration::from_micros(200),
            max: Duration::from_micros(800),
        })
        .with_loss(args.loss),
        check: Check::Interval(period / 10),
        ..SimConfig::default()
    })?;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let start = sim.now();
    for _ in 0..n {
        sim.add_node(|addr| Node::new(node_config(addr, preset), start).expect("valid config"));
    }
    let seeds: Vec<SocketAddr> = (0..SEEDS.min(n)).filter_map(|i| sim.addr(i)).collect();
    sim.command(0, Command::Join(vec![]))?;
    // Joins arrive spread over the first period, in random order.
    let mut joins: Vec<(Duration, usize)> = (1..n)
        .map(|i| (period.mul_f64(rng.random::<f64>()), i))
        .collect();
    joins.sort();
    for (at, i) in joins {
        let target = start + at;
        if target > sim.now() {
            sim.run_until(target, |_| false);
        }
        sim.command(i, Command::Join(seeds.clone()))?;
    }
    let limit = start + period * args.max_periods;
    if !sim.run_until(limit, |s| all_agree(s, n)) {
        let live: Vec<usize> = sim.nodes().map(|(_, n)| n.live_count()).take(10).collect();
        bail!("no convergence within {} periods (live counts of the first nodes: {live:?}, events {})", args.max_periods, sim.events());
    }
    let cold = sim.now() - start;
    let cold_stats = sent(&sim);

    // Steady state: once the rumours of the cold start have been sent their last time.
    let t0 = sim.now();
    if !sim.run_until(t0 + period * args.max_periods, |s| {
        s.nodes().all(|(_, n)| n.pending_broadcasts() == 0)
    }) {
        bail!("rumours still pending after {} periods", args.max_periods);
    }
    let quiet = sim.now() - start;
    let before = sent(&sim);
    sim.run_for(period * args.steady_periods);
    let after = sent(&sim);
    let per_period = |x: u64| x as f64 / n as f64 / f64::from(args.steady_periods);
    let steady_datagrams = per_period(after.sent - before.sent);
    let steady_bytes = per_period(after.sent_bytes - before.sent_bytes);

    // A new member.
    let now = sim.now();
    let joiner = sim.add_node(|addr| Node::new(node_config(addr, preset), now).expect("valid"));
    let via = sim.addr(rng.random_range(0..n)).context("seed address")?;
    sim.command(joiner, Command::Join(vec![via]))?;
    let joiner_id = sim.node(joiner).context("joiner")?.id();
    sim.set_check(Check::Interval(period / 100))?;
    let t0 = sim.now();
    if !sim.run_until(t0 + period * 60, |s| {
        everyone_sees(s, joiner_id, Some(joiner), &[Status::Alive])
    }) {
        bail!("the new member did not reach everyone within 60 periods");
    }
    let join_spread = sim.now() - t0;
    sim.set_check(Check::Interval(period / 10))?;
    if !sim.run_until(sim.now() + period * 60, |s| all_agree(s, n + 1)) {
        bail!("no agreement after the join within 60 periods");
    }

    // A failure.
    let victim = rng.random_range(1..n);
    let victim_id = sim.node(victim).context("victim")?.id();
    sim.kill(victim)?;
    let t0 = sim.now();
    let bound = period * 3
        + suspicion_timeout(
            n + 1,
            period,
            template.suspicion_mult,
            template.suspicion_max_mult,
            0,
        )
        + period * 3;
    if !sim.run_until(t0 + bound * 4, |s| {
        everyone_sees(s, victim_id, Some(victim), &[Status::Dead])
    }) {
        bail!("the failure was not known by everyone within 4× the bound");
    }
    let detect = sim.now() - t0;

    let p = |d: Duration| d.as_secs_f64() / period.as_secs_f64();
    let f = template.gossip_fanout as f64;
    Ok(SimRecord {
        nodes: n,
        preset: format!("{preset:?}"),
        probe_interval_ms: period.as_secs_f64() * 1e3,
        gossip_fanout: template.gossip_fanout,
        loss: args.loss,
        cold_start_periods: p(cold),
        cold_start_datagrams_per_node: cold_stats.sent as f64 / n as f64,
        cold_start_kib_per_node: cold_stats.sent_bytes as f64 / n as f64 / 1024.0,
        quiet_after_periods: p(quiet),
        steady_periods: args.steady_periods,
        steady_datagrams_per_node_per_period: steady_datagrams,
        steady_bytes_per_node_per_period: steady_bytes,
        steady_bytes_per_node_per_sec: steady_bytes / period.as_secs_f64(),
        join_spread_periods: p(join_spread),
        join_spread_target_periods: 1.5 * ((n as f64).ln() / (f + 1.0).ln()).ceil(),
        failure_detect_periods: p(detect),
        failure_detect_bound_periods: p(bound),
        wall_seconds: wall.elapsed().as_secs_f64(),
        sim_events: sim.events(),
    })
}

fn render_markdown(report: &Report<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Membership on the simulator\n");
    let _ = writeln!(s, "`{}` (seed {})\n", report.command, report.seed);
    let _ = writeln!(
        s,
        "| N | cold start (periods) | cold start KiB/node | rumours quiet after (periods) | new member reaches all (periods) | target | failure known by all (periods) | bound | steady datagrams/node/period | steady B/node/s | wall s |"
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in report.runs {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
            r.nodes,
            r.cold_start_periods,
            r.cold_start_kib_per_node,
            r.quiet_after_periods,
            r.join_spread_periods,
            r.join_spread_target_periods,
            r.failure_detect_periods,
            r.failure_detect_bound_periods,
            r.steady_datagrams_per_node_per_period,
            r.steady_bytes_per_node_per_sec,
            r.wall_seconds
        );
    }
    if let Some(r) = report.runs.first() {
        let _ = writeln!(
            s,
            "\nPreset {}, probe interval {:.0} ms, gossip fanout {}, loss {:.0}%, link latency uniform 0.2–0.8 ms.",
            r.preset,
            r.probe_interval_ms,
            r.gossip_fanout,
            r.loss * 100.0
        );
    }
    s
}

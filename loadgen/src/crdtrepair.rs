//! Bytes of CRDT anti-entropy needed to repair a replica that is 1%, 10% or 100% behind.
//!
//! Two nodes on the simulator share a store of K counters. Node A holds all of them; node B
//! holds all but a fraction, joined in directly. A's delta buffer holds only its last delta
//! (`crdt_buffer_cap = 1`), so B can only be repaired by digest anti-entropy. The figure is
//! everything both nodes send from B's join until B's store equals A's: the join
//! handshake, membership push-pull and first probes are included (a few hundred bytes).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use hearsay::crdt::{Kind, Op};
use hearsay::node::{Command, Node, NodeConfig, Preset};
use hearsay::sim::{Check, Sim, SimConfig};
use serde::Serialize;

use crate::CrdtRepairArgs;

#[derive(Debug, Serialize)]
struct Row {
    keys: usize,
    behind_pct: f64,
    missing_keys: usize,
    repair_bytes: u64,
    repair_datagrams: u64,
    bytes_per_missing_key: f64,
    periods: f64,
}

fn pair(keys: usize, missing: usize, seed: u64) -> Result<Row> {
    let mut sim: Sim<Node> = Sim::new(SimConfig {
        seed,
        check: Check::Interval(Duration::from_millis(10)),
        ..SimConfig::default()
    })?;
    let now = sim.now();
    let config = |addr| {
        let mut c = NodeConfig::new(Preset::Lan, addr, b"repair");
        c.crdt_buffer_cap = 1;
        c
    };
    let a = sim.add_node(|addr| Node::new(config(addr), now).expect("valid config"));
    let b = sim.add_node(|addr| Node::new(config(addr), now).expect("valid config"));
    let a_addr = sim.addr(a).expect("address");
    // Fill A, copy all but `missing` keys to B, before they ever meet.
    let key = |i: usize| format!("counter/{i:08}").into_bytes();
    for i in 0..keys {
        sim.node_mut(a).expect("node").crdt_update(
            now,
            &key(i),
            Kind::GCounter,
            &Op::Incr(1 + i as u64 % 7),
        )?;
    }
    for i in missing..keys {
        let v = sim.node(a).expect("node").crdt_get(&key(i)).cloned();
        if let Some(v) = v {
            sim.node_mut(b).expect("node").crdt_join(now, &key(i), &v)?;
        }
    }
    sim.command(a, Command::Join(vec![]))?;
    sim.command(b, Command::Join(vec![a_addr]))?;
    let period = Duration::from_secs(1);
    let start = sim.now();
    let before = *sim.stats();
    let ok = sim.run_until(start + period * 120, |s| {
        let ha = s.node(a).map(|n| n.crdt_store().state_hash());
        let hb = s.node(b).map(|n| n.crdt_store().state_hash());
        ha == hb
    });
    if !ok {
        bail!("{keys} keys, {missing} missing: no repair within 120 periods");
    }
    let took = sim.now() - start;
    let after = *sim.stats();
    Ok(Row {
        keys,
        behind_pct: 100.0 * missing as f64 / keys as f64,
        missing_keys: missing,
        repair_bytes: after.sent_bytes - before.sent_bytes,
        repair_datagrams: after.sent - before.sent,
        bytes_per_missing_key: (after.sent_bytes - before.sent_bytes) as f64
            / missing.max(1) as f64,
        periods: took.as_secs_f64() / period.as_secs_f64(),
    })
}

pub(crate) fn run(args: &CrdtRepairArgs) -> Result<()> {
    let mut rows = Vec::new();
    for pct in [1.0f64, 10.0, 100.0] {
        let keys = args.keys as usize;
        let missing = ((keys as f64) * pct / 100.0).round() as usize;
        rows.push(pair(keys, missing.max(1), args.seed)?);
    }
    let mut s = String::new();
    let _ = writeln!(s, "# CRDT anti-entropy repair\n");
    let _ = writeln!(s, "`{}`\n", std::env::args().collect::<Vec<_>>().join(" "));
    let _ = writeln!(s, "| keys | behind | missing keys | bytes sent (both nodes) | datagrams | bytes per missing key | periods |");
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let _ = writeln!(
            s,
            "| {} | {:.0}% | {} | {} | {} | {:.1} | {:.2} |",
            r.keys,
            r.behind_pct,
            r.missing_keys,
            r.repair_bytes,
            r.repair_datagrams,
            r.bytes_per_missing_key,
            r.periods
        );
    }
    print!("{s}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

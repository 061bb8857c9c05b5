//! The placement report: every scheme over the same members and keys, side by side.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use hearsay::placement::{rehash, BoundedLoad, Key, KeyHasher, Node, Placement, Ring, Scheme};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::PlacementArgs;

/// Lookups timed together: one `Instant` pair costs about as much as a fast lookup, so
/// timing single lookups would mostly measure the clock.
const BATCH: usize = 16;
/// Keys whose lookups are timed, per scheme (rendezvous is O(N) a lookup).
const LATENCY_KEYS: usize = 1 << 18;
/// Buckets of the jump-hash paper's standard-error table.
const PAPER_BUCKETS: u64 = 1000;
/// Keys drawn to measure jump's spread for that table.
const PAPER_JUMP_KEYS: u64 = 10_000_000;

/// One scheme's measurements; field names are the JSON keys.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SchemeRecord {
    scheme: String,
    nodes: u64,
    keys: u64,
    build_ms: f64,
    memory_bytes: u64,
    lookup_ns_p50: f64,
    lookup_ns_p99: f64,
    lookup_ns_p999: f64,
    lookup_ns_max: f64,
    uniform_peak_to_mean: f64,
    uniform_stddev_keys: f64,
    uniform_stddev_pct_of_mean: f64,
    zipf_exponent: f64,
    zipf_peak_to_mean: f64,
    zipf_stddev_keys: f64,
    zipf_stddev_pct_of_mean: f64,
    moved_on_add: f64,
    ideal_moved_on_add: f64,
    moved_on_remove: f64,
    ideal_moved_on_remove: f64,
    note: String,
}

/// One row of the jump-hash paper's table: spread of bucket sizes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PaperRow {
    scheme: String,
    points_per_bucket: Option<u32>,
    buckets: u64,
    stderr_measured: f64,
    stderr_paper: f64,
    how: String,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    command: String,
    nodes: u64,
    keys: u64,
    zipf_exponent: f64,
    seed: u64,
    threads: usize,
    lookup_batch: usize,
    timer_overhead_ns_per_batch: f64,
    schemes: &'a [SchemeRecord],
    jump_paper_table: &'a [PaperRow],
}

/// Member `i` of a report's cluster: names look like the `host:port` a cluster would use.
fn member(i: u64) -> Node {
    Node::new(
        i,
        format!("10.{}.{}.{}:7946", (i >> 16) & 255, (i >> 8) & 255, i & 255),
    )
}

pub(crate) fn run(args: &PlacementArgs) -> Result<()> {
    let threads = args
        .threads
        .map(|t| t.get())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let schemes = if args.schemes.is_empty() {
        Scheme::all()
    } else {
        args.schemes.clone()
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!(
        "placement report: {} nodes, {} keys, zipf {}, {} schemes, {} threads",
        args.nodes,
        args.keys,
        args.zipf,
        schemes.len(),
        threads
    );

    let members: Vec<Node> = (0..args.nodes).map(member).collect();
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let uniform: Vec<u64> = (0..args.keys).map(|_| rng.random()).collect();
    let zipf = Zipf::new(args.keys as f64, args.zipf).context("zipf distribution")?;
    // Rank r is the r-th most popular key; its identity is a hash of the rank.
    let skewed: Vec<u64> = (0..args.keys)
        .map(|_| rehash(zipf.sample(&mut rng) as u64, args.seed))
        .collect();
    let latency_keys: Vec<u64> = (0..LATENCY_KEYS).map(|_| rng.random()).collect();
    // A random member leaves (not the last one: that is jump's easy case); one joins.
    let leaving = rng.random_range(0..args.nodes);
    let minus_one: Vec<Node> = members
        .iter()
        .filter(|n| n.id.0 != leaving)
        .cloned()
        .collect();
    let mut plus_one = members.clone();
    plus_one.push(member(args.nodes));
    let timer_overhead = timer_overhead_ns();

    let mut records = Vec::new();
    for (i, scheme) in schemes.iter().enumerate() {
        eprint!("[{}/{}] {scheme:<24}", i + 1, schemes.len());
        let started = Instant::now();
        let rec = measure(
            *scheme,
            args,
            &members,
            &minus_one,
            &plus_one,
            &uniform,
            &skewed,
            &latency_keys,
            timer_overhead,
            threads,
        )
        .with_context(|| format!("scheme {scheme}"))?;
        eprintln!(" done in {:.1} s", started.elapsed().as_secs_f64());
        records.push(rec);
    }
    eprint!("jump-hash paper table ({PAPER_BUCKETS} buckets) ...");
    let paper = paper_table(args.seed, threads)?;
    eprintln!(" done");

    let text = render_table(&records, &paper, args);
    print!("{text}");
    let report = Report {
        command: command.clone(),
        nodes: args.nodes,
        keys: args.keys,
        zipf_exponent: args.zipf,
        seed: args.seed,
        threads,
        lookup_batch: BATCH,
        timer_overhead_ns_per_batch: timer_overhead,
        schemes: &records,
        jump_paper_table: &paper,
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        write_file(path, json.as_bytes())?;
    }
    if let Some(path) = &args.markdown {
        let md = render_markdown(&report);
        write_file(path, md.as_bytes())?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn measure(
    scheme: Scheme,
    args: &PlacementArgs,
    members: &[Node],
    minus_one: &[Node],
    plus_one: &[Node],
    uniform: &[u64],
    skewed: &[u64],
    latency_keys: &[u64],
    timer_overhead: f64,
    threads: usize,
) -> Result<SchemeRecord> {
    let hasher = KeyHasher::new(args.seed);
    // Build time: the best of three, so a page-fault storm on the first build does not count.
    let mut build_ms = f64::INFINITY;
    let mut built = None;
    for _ in 0..3 {
        let t = Instant::now();
        let p = scheme.build(members, args.seed)?;
        build_ms = build_ms.min(t.elapsed().as_secs_f64() * 1e3);
        built = Some(p);
    }
    let placement = built.expect("built three times");
    let p = placement.as_ref();

    let lat = lookup_latency(p, latency_keys);
    let pct = |q: f64| ((lat.value_at_quantile(q) as f64 - timer_overhead) / BATCH as f64).max(0.0);

    let owners = owners(p, uniform, threads);
    let (uniform_counts, zipf_counts, note) = match scheme {
        Scheme::BoundedLoad {
            epsilon,
            points_per_node,
        } => {
            // Loads matter only to this scheme: each draw is placed with the running loads.
            let b = BoundedLoad::new(members, hasher, epsilon, points_per_node)?;
            let hashes = |keys: &[u64]| -> Vec<u64> {
                keys.iter().map(|&k| b.hash_key(Key::U64(k))).collect()
            };
            (
                b.assign(hashes(uniform)),
                b.assign(hashes(skewed)),
                format!(
                    "spread with running loads (capacity ⌈(1+{epsilon})·mean⌉); keys moved by the plain ring answer"
                ),
            )
        }
        _ => (
            counts(&owners, members.len()),
            counts(&self::owners(p, skewed, threads), members.len()),
            if scheme == Scheme::Jump {
                "a middle member leaves: its bucket is refilled by the last one (≈2/N moves)".into()
            } else {
                String::new()
            },
        ),
    };

    let moved = |next: &[Node]| -> Result<f64> {
        let after = p.rebuild(next)?;
        let after_owners = self::owners(after.as_ref(), uniform, threads);
        let moved = owners
            .iter()
            .zip(&after_owners)
            .filter(|(&a, &b)| p.nodes()[a as usize].id != after.nodes()[b as usize].id)
            .count();
        Ok(moved as f64 / uniform.len() as f64)
    };
    let moved_on_add = moved(plus_one)?;
    let moved_on_remove = moved(minus_one)?;
    let (u_ptm, u_sd) = spread(&uniform_counts);
    let (z_ptm, z_sd) = spread(&zipf_counts);
    let mean = uniform.len() as f64 / members.len() as f64;
    Ok(SchemeRecord {
        scheme: scheme.to_string(),
        nodes: members.len() as u64,
        keys: uniform.len() as u64,
        build_ms,
        memory_bytes: p.memory_bytes() as u64,
        lookup_ns_p50: pct(0.5),
        lookup_ns_p99: pct(0.99),
        lookup_ns_p999: pct(0.999),
        lookup_ns_max: ((lat.max() as f64 - timer_overhead) / BATCH as f64).max(0.0),
        uniform_peak_to_mean: u_ptm,
        uniform_stddev_keys: u_sd,
        uniform_stddev_pct_of_mean: 100.0 * u_sd / mean,
        zipf_exponent: args.zipf,
        zipf_peak_to_mean: z_ptm,
        zipf_stddev_keys: z_sd,
        zipf_stddev_pct_of_mean: 100.0 * z_sd / mean,
        moved_on_add,
        ideal_moved_on_add: 1.0 / plus_one.len() as f64,
        moved_on_remove,
        ideal_moved_on_remove: 1.0 / members.len() as f64,
        note,
    })
}

/// Median cost of timing an empty batch, subtracted from every batch measured.
fn timer_overhead_ns() -> f64 {
    // Fixed bounds (1 ns to ~18 min): a batch of O(N) lookups can take milliseconds.
    let mut h = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("valid bounds");
    for _ in 0..100_000 {
        let t = Instant::now();
        std::hint::black_box(());
        h.saturating_record((t.elapsed().as_nanos() as u64).max(1));
    }
    h.value_at_quantile(0.5) as f64
}

/// Histogram of the time, in ns, of each batch of [`BATCH`] lookups through the trait
/// object, as an embedding router calls them (hash included).
fn lookup_latency(p: &dyn Placement, keys: &[u64]) -> Histogram<u64> {
    // Fixed bounds (1 ns to ~18 min): a batch of O(N) lookups can take milliseconds.
    let mut h = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("valid bounds");
    let mut acc = 0u64;
    // Warm the caches and the branch predictors on the same keys first.
    for &k in keys.iter().take(keys.len() / 4) {
        acc ^= p.lookup(Key::U64(k)).id.0;
    }
    for batch in keys.chunks_exact(BATCH) {
        let t = Instant::now();
        for &k in batch {
            acc ^= p.lookup(Key::U64(std::hint::black_box(k))).id.0;
        }
        h.saturating_record((t.elapsed().as_nanos() as u64).max(1));
    }
    std::hint::black_box(acc);
    h
}

/// Owner index of every key, computed on `threads` threads.
fn owners(p: &dyn Placement, keys: &[u64], threads: usize) -> Vec<u32> {
    let mut out = vec![0u32; keys.len()];
    let chunk = keys.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (ks, os) in keys.chunks(chunk).zip(out.chunks_mut(chunk)) {
            s.spawn(move || {
                for (k, o) in ks.iter().zip(os.iter_mut()) {
                    *o = p.locate(p.hash_key(Key::U64(*k))) as u32;
                }
            });
        }
    });
    out
}

fn counts(owners: &[u32], nodes: usize) -> Vec<u64> {
    let mut c = vec![0u64; nodes];
    for &o in owners {
        c[o as usize] += 1;
    }
    c
}

/// Peak-to-mean ratio and standard deviation of keys per node.
fn spread(counts: &[u64]) -> (f64, f64) {
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let peak = counts.iter().copied().max().unwrap_or(0) as f64;
    (peak / mean, var.sqrt())
}

/// Coefficient of variation (standard deviation over mean) of a sample.
fn cv(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// The jump-hash paper's table (Lamping & Veach 2014, table 1): standard error of bucket
/// sizes for a ring with k points per bucket, and for jump.
fn paper_table(seed: u64, threads: usize) -> Result<Vec<PaperRow>> {
    let buckets: Vec<Node> = (0..PAPER_BUCKETS).map(member).collect();
    let mut rows = Vec::new();
    for (k, paper) in [
        (1u32, 0.99791),
        (10, 0.31470),
        (100, 0.09969),
        (1000, 0.03160),
    ] {
        let ring = Ring::new(&buckets, KeyHasher::new(seed), k)?;
        rows.push(PaperRow {
            scheme: "ring".into(),
            points_per_bucket: Some(k),
            buckets: PAPER_BUCKETS,
            stderr_measured: cv(&ring.arc_shares()),
            stderr_paper: paper,
            how: "exact: each bucket's share of the 2^64 hash circle".into(),
        });
    }
    let jump = Scheme::Jump.build(&buckets, seed)?;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6A75_6D70);
    let keys: Vec<u64> = (0..PAPER_JUMP_KEYS).map(|_| rng.random()).collect();
    let shares: Vec<f64> = counts(&owners(jump.as_ref(), &keys, threads), buckets.len())
        .into_iter()
        .map(|c| c as f64)
        .collect();
    let floor = ((PAPER_BUCKETS - 1) as f64 / PAPER_JUMP_KEYS as f64).sqrt();
    rows.push(PaperRow {
        scheme: "jump".into(),
        points_per_bucket: None,
        buckets: PAPER_BUCKETS,
        stderr_measured: cv(&shares),
        stderr_paper: 0.000_000_007_64,
        how: format!(
            "sampled: {PAPER_JUMP_KEYS} random keys; sampling noise alone gives {floor:.4}, so jump's true spread is below what a sample can show"
        ),
    });
    Ok(rows)
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The terminal table; also embedded verbatim in the Markdown report.
fn render_table(records: &[SchemeRecord], paper: &[PaperRow], args: &PlacementArgs) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nPlacement: N = {} nodes, {} keys, Zipf s = {}",
        args.nodes, args.keys, args.zipf
    );
    let _ = writeln!(
        t,
        "{:<22} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10}",
        "scheme",
        "p50 ns",
        "p99 ns",
        "p999 ns",
        "uni p/m",
        "uni sd%",
        "zipf p/m",
        "zipf sd%",
        "+1 moved",
        "+1 ideal",
        "-1 moved",
        "memory",
        "build ms"
    );
    for r in records {
        let _ = writeln!(
            t,
            "{:<22} {:>8.1} {:>8.1} {:>8.1} {:>9.3} {:>9.2} {:>9.1} {:>9.1} {:>9.5} {:>8.5} {:>8.5} {:>10} {:>10.2}",
            r.scheme,
            r.lookup_ns_p50,
            r.lookup_ns_p99,
            r.lookup_ns_p999,
            r.uniform_peak_to_mean,
            r.uniform_stddev_pct_of_mean,
            r.zipf_peak_to_mean,
            r.zipf_stddev_pct_of_mean,
            r.moved_on_add,
            r.ideal_moved_on_add,
            r.moved_on_remove,
            bytes(r.memory_bytes),
            r.build_ms
        );
    }
    let _ = writeln!(
        t,
        "\nStandard error of bucket sizes, {PAPER_BUCKETS} buckets (Lamping & Veach 2014, table 1)"
    );
    let _ = writeln!(
        t,
        "{:<8} {:>16} {:>12} {:>12}",
        "scheme", "points/bucket", "measured", "paper"
    );
    for r in paper {
        let k = r
            .points_per_bucket
            .map_or("-".to_string(), |k| k.to_string());
        let _ = writeln!(
            t,
            "{:<8} {:>16} {:>12.5} {:>12.3e}",
            r.scheme, k, r.stderr_measured, r.stderr_paper
        );
    }
    t
}

fn render_markdown(report: &Report<'_>) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Placement report\n");
    let _ = writeln!(m, "Command: `{}`\n", report.command);
    let _ = writeln!(m, "{}\n", machine_line());
    let _ = writeln!(
        m,
        "N = {} nodes, {} keys per measurement, Zipf exponent {}, seed {}, {} threads for counting.\n",
        report.nodes, report.keys, report.zipf_exponent, report.seed, report.threads
    );
    let _ = writeln!(
        m,
        "Lookup latency: lookups through `&dyn Placement` (key hash included), timed in batches of {} and divided; the median cost of an empty timed batch ({:.0} ns) is subtracted. \
         Spread: peak-to-mean and standard deviation of keys per node. Moved: fraction of the uniform keys whose owner changes when one member joins (+1) or a random member leaves (−1); the ideal is 1/N.\n",
        report.lookup_batch, report.timer_overhead_ns_per_batch
    );
    let _ = writeln!(
        m,
        "| scheme | lookup p50 ns | p99 ns | p999 ns | uniform peak/mean | uniform sd % | Zipf peak/mean | Zipf sd % | moved +1 | ideal +1 | moved −1 | ideal −1 | memory | build ms |"
    );
    let _ = writeln!(
        m,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for r in report.schemes {
        let _ = writeln!(
            m,
            "| {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.2} | {:.1} | {:.1} | {:.5} | {:.5} | {:.5} | {:.5} | {} | {:.2} |",
            r.scheme,
            r.lookup_ns_p50,
            r.lookup_ns_p99,
            r.lookup_ns_p999,
            r.uniform_peak_to_mean,
            r.uniform_stddev_pct_of_mean,
            r.zipf_peak_to_mean,
            r.zipf_stddev_pct_of_mean,
            r.moved_on_add,
            r.ideal_moved_on_add,
            r.moved_on_remove,
            r.ideal_moved_on_remove,
            bytes(r.memory_bytes),
            r.build_ms
        );
    }
    let notes: Vec<_> = report
        .schemes
        .iter()
        .filter(|r| !r.note.is_empty())
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(m);
        for r in notes {
            let _ = writeln!(m, "- {}: {}", r.scheme, r.note);
        }
    }
    let _ = writeln!(
        m,
        "\n## Standard error of bucket sizes ({PAPER_BUCKETS} buckets)\n\nThe jump-hash paper's table 1, reproduced; the paper column is quoted from Lamping & Veach (2014), not measured.\n"
    );
    let _ = writeln!(
        m,
        "| scheme | points per bucket | measured | paper (quoted) | how |"
    );
    let _ = writeln!(m, "|---|--:|--:|--:|---|");
    for r in report.jump_paper_table {
        let k = r
            .points_per_bucket
            .map_or("–".to_string(), |k| k.to_string());
        let _ = writeln!(
            m,
            "| {} | {} | {:.5} | {:.3e} | {} |",
            r.scheme, k, r.stderr_measured, r.stderr_paper, r.how
        );
    }
    m
}

/// Kernel, CPU and core count, read from /proc where present.
pub(crate) fn machine_line() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "Machine: {cpu}, {cores} cores, Linux {kernel}; hearsay {}.",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_even_and_skewed_loads() {
        assert_eq!(spread(&[5, 5, 5, 5]), (1.0, 0.0));
        let (ptm, sd) = spread(&[0, 0, 0, 8]);
        assert_eq!(ptm, 4.0);
        assert!((sd - 12f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn owners_match_single_threaded_lookups() {
        let members: Vec<Node> = (0..50).map(member).collect();
        let p = Scheme::Jump.build(&members, 1).unwrap();
        let keys: Vec<u64> = (0..10_001).collect();
        let par = owners(p.as_ref(), &keys, 3);
        for (k, o) in keys.iter().zip(par) {
            assert_eq!(o as usize, p.locate(p.hash_key(Key::U64(*k))));
        }
    }
}

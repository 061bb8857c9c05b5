//! Progress display, summary table, JSON, Markdown and SVG of a run.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::{Convergence, RunArgs, RunRecord, StepRecord};

/// A live progress bar on a terminal, a plain line every few seconds otherwise.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    tty: bool,
    last_line: Option<Instant>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            bar: None,
            tty: std::io::stderr().is_terminal(),
            last_line: None,
        }
    }

    /// `done` of `total` nodes (total 0: a count with no end) after `elapsed`.
    pub(crate) fn update(&mut self, label: &str, done: usize, total: usize, elapsed: Duration) {
        self.update_with(label, done, total, elapsed, || None);
    }

    /// [`update`](Self::update), with `detail` appended to a plain line (asked for only when
    /// a line is printed).
    pub(crate) fn update_with(
        &mut self,
        label: &str,
        done: usize,
        total: usize,
        elapsed: Duration,
        detail: impl FnOnce() -> Option<String>,
    ) {
        if self.tty {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::new(total as u64);
                b.set_style(
                    ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_message(label.to_string());
                b
            });
            bar.set_position(done as u64);
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.last_line = Some(Instant::now());
            if total > 0 {
                let detail = detail().map(|d| format!("; {d}")).unwrap_or_default();
                eprintln!(
                    "  {label}: {done}/{total} nodes after {:.1} s{detail}",
                    elapsed.as_secs_f64()
                );
            } else {
                eprintln!("  {label}: {done} after {:.1} s", elapsed.as_secs_f64());
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.last_line = None;
    }
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn conv_cells(c: &Option<Convergence>, period_ms: f64) -> [String; 6] {
    match c {
        Some(c) => [
            format!("{}/{}", c.converged, c.nodes),
            ms(c.first_ms),
            ms(c.p50_ms),
            ms(c.p99_ms),
            ms(c.last_ms),
            format!("{:.2}", c.last_ms / period_ms),
        ],
        None => std::array::from_fn(|_| "-".to_string()),
    }
}

/// One line per finished step, for the log.
pub(crate) fn step_line(r: &StepRecord, period: Duration) -> String {
    let period_ms = period.as_secs_f64() * 1000.0;
    let mut s = format!("{:?}: {}", r.step, r.what);
    if let Some(c) = &r.convergence {
        if c.converged < c.nodes {
            let _ = write!(
                s,
                "; NOT CONVERGED: {} nodes never met the goal",
                c.nodes - c.converged
            );
        }
        let _ = write!(
            s,
            "; {}/{} nodes, first {} ms, p50 {} ms, p99 {} ms, last {} ms ({:.2} periods)",
            c.converged,
            c.nodes,
            ms(c.first_ms),
            ms(c.p50_ms),
            ms(c.p99_ms),
            ms(c.last_ms),
            c.last_ms / period_ms
        );
    }
    if let Some(b) = r.bound_ms {
        let _ = write!(s, ", bound {} ms", ms(b));
    }
    if !r.by_join.is_empty() {
        let groups: Vec<String> = r
            .by_join
            .iter()
            .map(|g| format!("{}/{}", ms(g.convergence.p50_ms), ms(g.convergence.last_ms)))
            .collect();
        let _ = write!(
            s,
            "; by quarter of the join window, p50/last ms: {}",
            groups.join(", ")
        );
    }
    let _ = write!(
        s,
        "; false suspicions {}, false declarations {}; {:.0} B/node/s, CPU {:.0}%; kernel drops {}, unread at most {:.1} MB in {} sockets, input read up to {:.0} ms late, send errors {}, receive pauses {}",
        r.false_suspicions,
        r.false_declarations,
        r.usage.bytes_per_node_s,
        r.usage.cpu_share * 100.0,
        r.usage.kernel_drops,
        r.usage.peak_backlog_bytes as f64 / 1e6,
        r.usage.peak_backlog_sockets,
        r.usage.peak_input_lag_ms,
        r.usage.send_errors,
        r.usage.recv_buffers_exhausted
    );
    let u = &r.usage;
    if u.updates_merged > 0 {
        let _ = write!(
            s,
            "; member updates read {}, merged {} ({:.1} read per change)",
            u.updates_read,
            u.updates_merged,
            u.updates_read as f64 / u.updates_merged as f64
        );
    } else {
        let _ = write!(s, "; member updates read {}, none merged", u.updates_read);
    }
    let w = &u.updates_sent;
    let _ = write!(
        s,
        "; member updates sent in gossip rounds {}, piggybacked {}, in pull answers {}, as catch-up state {}",
        w.gossip, w.piggyback, w.pull, w.catch_up
    );
    let d = &u.detector;
    let _ = write!(
        s,
        "; probes {} (failed {}, slow acks {}, unjudged {}), suspicions raised {}, extended {}",
        d.probes,
        d.probe_failures,
        d.slow_acks,
        d.probes_unjudged,
        d.suspicions,
        d.suspicions_extended
    );
    let mut top: Vec<_> = r.usage.messages.iter().collect();
    top.sort_by(|a, b| b.bytes_per_node_s.total_cmp(&a.bytes_per_node_s));
    for (i, m) in top.iter().take(3).enumerate() {
        let _ = write!(
            s,
            "{} {} {:.1}/node/s ({:.0} B)",
            if i == 0 { "; most bytes:" } else { "," },
            m.kind,
            m.per_node_s,
            m.bytes_per_node_s
        );
    }
    s
}

const HEADER: [&str; 18] = [
    "step",
    "nodes",
    "first ms",
    "p50 ms",
    "p99 ms",
    "last ms",
    "last periods",
    "bound ms",
    "false susp.",
    "false decl.",
    "views",
    "B/node/s",
    "dgrams/node/s",
    "CPU %",
    "kernel drops",
    "unread MB",
    "lag ms",
    "wall s",
];

fn rows(rec: &RunRecord) -> Vec<[String; 18]> {
    rec.steps
        .iter()
        .map(|r| {
            let c = conv_cells(&r.convergence, rec.period_ms);
            [
                format!("{:?}", r.step).to_lowercase(),
                c[0].clone(),
                c[1].clone(),
                c[2].clone(),
                c[3].clone(),
                c[4].clone(),
                c[5].clone(),
                r.bound_ms.map_or("-".into(), ms),
                r.false_suspicions.to_string(),
                r.false_declarations.to_string(),
                if r.distinct_views == 0 {
                    "-".into()
                } else {
                    r.distinct_views.to_string()
                },
                format!("{:.0}", r.usage.bytes_per_node_s),
                format!("{:.2}", r.usage.datagrams_per_node_s),
                format!("{:.0}", r.usage.cpu_share * 100.0),
                r.usage.kernel_drops.to_string(),
                format!("{:.1}", r.usage.peak_backlog_bytes as f64 / 1e6),
                format!("{:.0}", r.usage.peak_input_lag_ms),
                format!("{:.1}", r.usage.seconds),
            ]
        })
        .collect()
}

/// Message types any step sent, in type order.
fn message_kinds(rec: &RunRecord) -> Vec<&'static str> {
    super::message_names()
        .into_iter()
        .filter(|k| {
            rec.steps
                .iter()
                .any(|r| r.usage.messages.iter().any(|m| m.kind == *k))
        })
        .collect()
}

/// Markdown tables of messages and bytes per node per second, a row per step and a column
/// per message type.
fn render_messages(rec: &RunRecord) -> String {
    let kinds = message_kinds(rec);
    let mut out = String::new();
    if kinds.is_empty() {
        return out;
    }
    for (title, bytes) in [
        ("Messages sent per node per second, by type", false),
        ("Bytes of those messages per node per second, by type", true),
    ] {
        let _ = writeln!(out, "\n{title}:\n");
        let _ = writeln!(out, "| step | {} |", kinds.join(" | "));
        let _ = writeln!(
            out,
            "|---|{}",
            kinds.iter().map(|_| "--:|").collect::<String>()
        );
        for r in &rec.steps {
            let cells: Vec<String> = kinds
                .iter()
                .map(|k| {
                    r.usage
                        .messages
                        .iter()
                        .find(|m| m.kind == *k)
                        .map_or("0".into(), |m| {
                            if bytes {
                                format!("{:.0}", m.bytes_per_node_s)
                            } else {
                                format!("{:.2}", m.per_node_s)
                            }
                        })
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} |",
                format!("{:?}", r.step).to_lowercase(),
                cells.join(" | ")
            );
        }
    }
    out
}

fn lookups_lines(rec: &RunRecord) -> Vec<String> {
    rec.steps
        .iter()
        .filter_map(|r| {
            let l = r.lookups.as_ref()?;
            Some(format!(
                "lookup during {:?}: {} lookups, p50 {} ns, p99 {} ns, p999 {} ns, max {} ns; placement changed {} times under the readers",
                r.step, l.count, l.p50_ns, l.p99_ns, l.p999_ns, l.max_ns, l.placement_versions
            ))
        })
        .collect()
}

fn summary_lines(rec: &RunRecord) -> Vec<String> {
    vec![
        format!(
            "{} nodes, {} transport on {}, {} shards, preset {} (period {} ms), faults: {}; transparent huge pages {}",
            rec.nodes, format!("{:?}", rec.transport).to_lowercase(), rec.backend, rec.shards, rec.preset, rec.period_ms, rec.faults,
            if rec.huge_pages { "on" } else { "off" }
        ),
        format!(
            "wall {:.1} s, CPU {:.1} s, peak RSS {:.0} MiB, {:.1} KiB per node after cold start; observers' placement identical: {}",
            rec.wall_s,
            rec.cpu_s,
            rec.peak_rss_mib,
            rec.rss_per_node_kib,
            rec.placement_identical.map_or("not checked".into(), |b| if b { "yes".to_string() } else { "NO".to_string() })
        ),
    ]
}

fn render_table(rec: &RunRecord) -> String {
    let rows = rows(rec);
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for line in summary_lines(rec) {
        let _ = writeln!(out, "{line}");
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{}", line(HEADER.to_vec()));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
    for l in lookups_lines(rec) {
        let _ = writeln!(out, "{l}");
    }
    out
}

fn render_markdown(rec: &RunRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# loadgen run: {} real nodes\n", rec.nodes);
    let _ = writeln!(out, "`{}`\n", rec.command);
    let _ = writeln!(out, "{}\n", rec.machine);
    for line in summary_lines(rec) {
        let _ = writeln!(out, "{line}\n");
    }
    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(
        out,
        "|---|{}",
        HEADER[1..].iter().map(|_| "--:|").collect::<String>()
    );
    for r in rows(rec) {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    let _ = writeln!(out);
    for r in &rec.steps {
        let _ = writeln!(out, "- {:?}: {}", r.step, r.what);
    }
    out.push_str(&render_by_join(rec));
    out.push_str(&render_stragglers(rec));
    for l in lookups_lines(rec) {
        let _ = writeln!(out, "- {l}");
    }
    out.push_str(&render_messages(rec));
    let _ = writeln!(
        out,
        "\nTimes are from the event (goal set, command sent) until each live node's own view \
         reflected it, as recorded by the node's shard. \"last periods\" divides the last \
         node's time by the probe interval; \"views\" counts distinct view hashes among live \
         nodes when the step ended (1: every node has the same view); B/node/s and \
         datagrams/node/s are sent traffic over the step's wall time; CPU % is the whole \
         process over all cores. The message tables count what the nodes wrote (a datagram \
         carries several messages; frame headers are in no type's bytes)."
    );
    out
}

/// One line per straggler of a step (see [`super::Straggler`]), for the terminal.
pub(crate) fn straggler_lines(r: &StepRecord) -> Vec<String> {
    let nodes = r.convergence.as_ref().map_or(0, |c| c.nodes);
    r.stragglers
        .iter()
        .map(|s| {
            let mut l = format!("node {}: {} of {nodes} to converge", s.node, s.rank);
            match s.converged_ms {
                Some(t) => {
                    let _ = write!(l, ", at {} ms", ms(t));
                }
                None => l.push_str(", never"),
            }
            if let Some(j) = s.joined_ms {
                let _ = write!(l, ", told to join at {} ms", ms(j));
            }
            let [pulls, deferred, gossip, read, merged, lag, live] = straggler_counts(s);
            let _ = write!(
                l,
                "; pulls {pulls} opened, {deferred} deferred; gossip rounds deferred {gossip}; updates read {read}, merged {merged}; input read up to {lag} ms late; live members from {} ms, once a period: {live}",
                ms(s.first_sample_ms),
            );
            l
        })
        .collect()
}

/// A straggler's counters as the terminal and the Markdown table show them: pulls opened,
/// pulls deferred, gossip rounds deferred, updates read, updates merged, input lag peak (ms),
/// and the sampled views, space separated.
fn straggler_counts(s: &super::Straggler) -> [String; 7] {
    [
        s.pulls.to_string(),
        s.pulls_deferred.to_string(),
        s.gossip_deferred.to_string(),
        s.updates_read.to_string(),
        s.updates_merged.to_string(),
        ms(s.input_lag_peak_ms),
        s.live_by_period
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    ]
}

/// The stragglers of every step that has them, as Markdown tables.
fn render_stragglers(rec: &RunRecord) -> String {
    let mut out = String::new();
    for r in rec.steps.iter().filter(|r| !r.stragglers.is_empty()) {
        let from = r.stragglers[0].first_sample_ms;
        let _ = writeln!(
            out,
            "\n{:?}, the last nodes to converge and the median one (counters over the step; live members sampled from {} ms, once a period):\n\n| node | rank | told to join ms | converged ms | pulls opened | pulls deferred | gossip deferred | updates read | merged | input lag peak ms | live members |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
            r.step,
            ms(from)
        );
        for s in &r.stragglers {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                s.node,
                s.rank,
                s.joined_ms.map_or("–".to_string(), ms),
                s.converged_ms.map_or("never".to_string(), ms),
                straggler_counts(s).join(" | ")
            );
        }
    }
    out
}

/// The cold start's convergence by when the nodes joined, as a Markdown table.
fn render_by_join(rec: &RunRecord) -> String {
    let mut out = String::new();
    for r in rec.steps.iter().filter(|r| !r.by_join.is_empty()) {
        let _ = writeln!(
            out,
            "\n{:?}, by when the nodes were told to join:\n\n| joined (ms) | nodes | converged | p50 ms | last ms |\n|---|--:|--:|--:|--:|",
            r.step
        );
        for g in &r.by_join {
            let _ = writeln!(
                out,
                "| {}–{} | {} | {} | {} | {} |",
                ms(g.joined_from_ms),
                ms(g.joined_to_ms),
                g.convergence.nodes,
                g.convergence.converged,
                ms(g.convergence.p50_ms),
                ms(g.convergence.last_ms)
            );
        }
    }
    out
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Convergence CDF of every measured step, one SVG per step.
fn write_svgs(rec: &RunRecord, dir: &Path) -> Result<()> {
    use plotters::prelude::*;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for r in &rec.steps {
        let Some(c) = &r.convergence else { continue };
        if c.times_ms.is_empty() {
            continue;
        }
        let name = format!("{:?}", r.step).to_lowercase();
        let path = dir.join(format!("convergence-{name}.svg"));
        let root = SVGBackend::new(&path, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let max_x = c.last_ms.max(1.0) * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{name}: nodes whose view reflects the event ({} nodes)",
                    c.nodes
                ),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_x, 0.0..1.0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("ms after the event")
            .y_desc("fraction of nodes")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let n = c.nodes.max(1) as f64;
        chart
            .draw_series(LineSeries::new(
                c.times_ms
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| (t, (i + 1) as f64 / n)),
                &BLUE,
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Print the table; write JSON, Markdown and plots where asked.
pub(crate) fn emit(rec: &RunRecord, args: &RunArgs) -> Result<()> {
    print!("{}", render_table(rec));
    if let Some(p) = &args.json {
        write_file(p, &serde_json::to_vec_pretty(rec)?)?;
    }
    if let Some(p) = &args.markdown {
        write_file(p, render_markdown(rec).as_bytes())?;
    }
    if let Some(d) = &args.svg {
        write_svgs(rec, d)?;
    }
    Ok(())
}

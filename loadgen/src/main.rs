//! `loadgen`: the Hearsay load generator.
//!
//! With no subcommand (or `run`) it starts N real nodes — the engine's `Node`, each with its
//! own UDP socket on loopback, on the thread-per-core runtime — and runs a script of
//! scenarios (cold start, rumour, CRDT write, failures, churn, partition, placement),
//! measuring convergence from the nodes' own views, traffic, CPU, memory and lookup latency:
//! `loadgen --nodes 5000` is the project's main job. Subcommands run the placement report
//! alone, membership on the deterministic simulator, the CRDT repair measurement, and peer
//! membership libraries (chitchat, foca) on loopback through the same cold start and kill.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hearsay::placement::Scheme;

mod cluster;
mod crdtrepair;
mod peers;
mod placement;
mod simrun;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for Hearsay.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: cluster::RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run N real nodes on loopback through a script of scenarios (the default).
    Run(Box<cluster::RunArgs>),
    /// Compare placement schemes: lookup latency, hot-spot spread, keys moved, memory.
    Placement(PlacementArgs),
    /// Run membership on the deterministic simulator: cold start, steady-state traffic,
    /// spread of a new member, failure detection.
    Sim(SimArgs),
    /// Measure the bytes of CRDT anti-entropy that repair a replica 1%, 10% and 100% behind.
    CrdtRepair(CrdtRepairArgs),
    /// Host N instances of a peer membership library (chitchat, foca) on loopback and measure
    /// cold start and failure detection the same way.
    Peer(peers::PeerArgs),
}

/// Flags of the CRDT repair measurement.
#[derive(Args, Debug, Clone)]
struct CrdtRepairArgs {
    /// Keys in the store.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    keys: u64,
    /// Seed of the simulated network.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Flags of the simulator run.
#[derive(Args, Debug, Clone)]
struct SimArgs {
    /// Cluster sizes to run, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000], value_parser = parse_sim_nodes)]
    nodes: Vec<usize>,
    /// Timing preset of every node: lan, wan or local.
    #[arg(long, default_value = "lan", value_parser = parse_preset)]
    preset: PresetArg,
    /// Probability that a datagram is lost, on every link.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    loss: f64,
    /// Seed of the network and of the scenario's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Periods measured at steady state.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    steady_periods: u32,
    /// Give up on the cold start after this many periods.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_periods: u32,
    /// Write the JSON record to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the Markdown report to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// A node timing preset, parsed from its name.
#[derive(Debug, Clone, Copy)]
struct PresetArg(hearsay::node::Preset);

fn parse_preset(s: &str) -> Result<PresetArg, String> {
    use hearsay::node::Preset;
    match s.to_ascii_lowercase().as_str() {
        "lan" => Ok(PresetArg(Preset::Lan)),
        "wan" => Ok(PresetArg(Preset::Wan)),
        "local" => Ok(PresetArg(Preset::Local)),
        _ => Err(format!("unknown preset `{s}` (expected lan, wan or local)")),
    }
}

fn parse_sim_nodes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (2..=hearsay::sim::MAX_NODES - 1).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be in 2..={}", hearsay::sim::MAX_NODES - 1))
    }
}

/// A number from the command line that `within` accepts; otherwise `expected` (e.g. "must
/// be in [0, 1)") as the error. NaN is never accepted.
fn parse_number(s: &str, within: impl Fn(f64) -> bool, expected: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_nan() && within(v) {
        Ok(v)
    } else {
        Err(expected.to_string())
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    crate::parse_number(s, |v| (0.0..1.0).contains(&v), "must be in [0, 1)")
}

/// Default seed of the placement report's key hash and key draws.
const PLACEMENT_SEED: u64 = 0x0048_4541_5253_4159;

/// Flags of the placement report.
#[derive(Args, Debug, Clone)]
struct PlacementArgs {
    /// Members to place keys on.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    nodes: u64,
    /// Keys per measurement (uniform draws, Zipf draws, keys checked for movement).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=1_000_000_000))]
    keys: u64,
    /// Zipf exponent of the skewed key draw.
    #[arg(long, default_value_t = 1.1, value_parser = parse_zipf)]
    zipf: f64,
    /// Schemes to measure, comma separated (default: all), e.g. `ring:160,jump,maglev`.
    #[arg(long, value_delimiter = ',')]
    schemes: Vec<Scheme>,
    /// Seed of the key hash and of the key draws.
    #[arg(long, default_value_t = PLACEMENT_SEED)]
    seed: u64,
    /// Worker threads for the counting passes (default: available cores).
    #[arg(long)]
    threads: Option<std::num::NonZeroUsize>,
    /// Write one JSON record per scheme to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a Markdown report to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn parse_zipf(s: &str) -> Result<f64, String> {
    crate::parse_number(
        s,
        |v| v.is_finite() && v > 0.0 && v <= 10.0,
        "must be in (0, 10]",
    )
}

/// The command line, for reports.
fn command_line() -> String {
    let mut args = std::env::args();
    let prog = args
        .next()
        .map(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "loadgen".into());
    std::iter::once(prog)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A clap error on one line: its first paragraph (a missing argument's names are on the
/// lines after the first), without the usage block and the help hint.
fn one_line(rendered: &str) -> String {
    let text = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.trim_start_matches("error: ");
    if text.is_empty() {
        "invalid arguments".into()
    } else {
        text.to_string()
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("loadgen: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Placement(args)) => placement::run(&args),
        Some(Command::Sim(args)) => simrun::run(&args),
        Some(Command::CrdtRepair(args)) => crdtrepair::run(&args),
        Some(Command::Peer(args)) => peers::run(&args),
        Some(Command::Run(args)) => cluster::run(&args, command_line()),
        None => cluster::run(&cli.run, command_line()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{one_line, Cli};
    use clap::Parser;

    #[test]
    fn command_line_errors_fit_on_one_line_and_name_what_is_wrong() {
        let e = Cli::try_parse_from(["loadgen", "peer", "--nodes", "10"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(line.contains("--impl"), "{line}");
        assert!(!line.contains('\n') && !line.contains("Usage"), "{line}");
        let e = Cli::try_parse_from(["loadgen", "--nodes", "zero"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(
            line.contains("zero") && !line.starts_with("error"),
            "{line}"
        );
    }
}

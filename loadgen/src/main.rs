//! `loadgen`: the Hearsay load generator.
//!
//! Today it runs the placement report: every consistent-hashing scheme built over N members,
//! measured for lookup latency, hot-spot spread under uniform and Zipf keys, keys moved by a
//! membership change, memory and build time. Run with no subcommand it runs that report with
//! the given flags, so `loadgen --nodes 5000` works as the project's main job.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hearsay::placement::Scheme;

mod placement;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for Hearsay.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    placement: PlacementArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare placement schemes: lookup latency, hot-spot spread, keys moved, memory.
    Placement(PlacementArgs),
}

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
    #[arg(long, default_value_t = 0x4845_4152_5341_59)]
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
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 10.0 {
        Ok(v)
    } else {
        Err("must be in (0, 10]".into())
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
            // One line: the error itself, without clap's usage block.
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("loadgen: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let args = match cli.command {
        Some(Command::Placement(args)) => args,
        None => cli.placement,
    };
    match placement::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

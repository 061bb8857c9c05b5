//! `hearsay`: the gossip agent and its command-line client.
//!
//! `hearsay agent` runs one node of a cluster with an HTTP endpoint (metrics, debug views,
//! a small key-value API); the other subcommands talk to a running agent over that
//! endpoint. Every error is one line on stderr and a non-zero exit.
#![deny(unsafe_code)]

mod agent;
mod client;
mod config;
mod eventlog;
mod http;
mod json;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use config::{
    parse_backend, parse_duration_secs, parse_http, parse_key, parse_preset, parse_scheme,
    HttpSetting, Overrides,
};

/// Default HTTP address of an agent, and the client's default `--agent`.
pub(crate) const DEFAULT_HTTP: &str = "127.0.0.1:7947";

/// A decentralized UDP gossip agent: membership, failure detection, placement and
/// replicated soft state.
#[derive(Parser, Debug)]
#[command(name = "hearsay", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node until SIGINT or SIGTERM, then leave the cluster gracefully.
    Agent(Box<AgentArgs>),
    /// List the members the agent knows, tombstones included.
    Members(ClientArgs),
    /// Which member owns a key (and its replicas).
    Lookup {
        /// The key.
        key: String,
        /// Owners to list, the primary first.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        replicas: u16,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a key's value on the agent's replica.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a last-writer-wins register.
    Set {
        /// The key.
        key: String,
        /// The value (stored as its UTF-8 bytes).
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add to a counter (a PN-counter, so `decr` works on it too).
    Incr {
        /// The key.
        key: String,
        /// How much to add.
        #[arg(default_value_t = 1)]
        n: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Subtract from a counter.
    Decr {
        /// The key.
        key: String,
        /// How much to subtract.
        #[arg(default_value_t = 1)]
        n: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take the agent's node out of placement (it stays a member).
    Drain(ClientArgs),
    /// Put the agent's node back into placement.
    Undrain(ClientArgs),
    /// Make the agent leave the cluster and exit.
    Leave(ClientArgs),
    /// Print what the agent's node believes (members, suspicions, placement) as JSON.
    Debug(ClientArgs),
    /// Print version and build information.
    Version {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How a client subcommand reaches the agent.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClientArgs {
    /// The agent's HTTP address (`host:port` or `http://host:port`).
    #[arg(long, env = "HEARSAY_AGENT", default_value = DEFAULT_HTTP, value_name = "ADDR")]
    pub(crate) agent: String,
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `hearsay agent` flags. Each overrides the same field of `--config`.
#[derive(Args, Debug, Default)]
pub(crate) struct AgentArgs {
    /// TOML file with the same fields as the flags (snake_case); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to gossip on [default: 0.0.0.0:7946].
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Address other members reach this node at [default: the bound address; with an
    /// unspecified bind address, the local address routed to the first seed].
    #[arg(long, value_name = "ADDR")]
    advertise: Option<SocketAddr>,
    /// Seeds (`host:port`), any members of the cluster; none starts a new cluster.
    #[arg(long, value_name = "SEED", num_args = 1..)]
    join: Vec<String>,
    /// Cluster label: frames of other clusters are refused [default: hearsay].
    #[arg(long, value_name = "LABEL")]
    cluster: Option<String>,
    /// Timing preset: lan, wan or local (one machine) [default: lan].
    #[arg(long, value_name = "PRESET", value_parser = parse_preset)]
    preset: Option<hearsay::node::Preset>,
    /// Runtime shard threads [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    shards: Option<u16>,
    /// HTTP endpoint address, or `off` [default: 127.0.0.1:7947].
    #[arg(long, value_name = "ADDR", value_parser = parse_http)]
    http: Option<HttpSetting>,
    /// Encryption key, 64 hex digits; repeat to install more (the first seals frames, all
    /// open them).
    #[arg(long = "key", value_name = "HEX", value_parser = parse_key)]
    keys: Vec<[u8; 32]>,
    /// Metadata announced with this node (UTF-8, at most 1024 bytes).
    #[arg(long, value_name = "TEXT")]
    metadata: Option<String>,
    /// Placement scheme (ring[:POINTS], jump, maglev, …) [default: ring:160].
    #[arg(long, value_name = "SCHEME", value_parser = parse_scheme)]
    placement: Option<hearsay::placement::Scheme>,
    /// Key hash seed of placement; every member must use the same [default: 0].
    #[arg(long, value_name = "N")]
    placement_seed: Option<u64>,
    /// Runtime backend: auto, io-uring or portable [default: auto].
    #[arg(long, value_name = "BACKEND", value_parser = parse_backend)]
    backend: Option<hearsay::runtime::BackendChoice>,
    /// Append membership events to this file, one JSON object a line.
    #[arg(long, value_name = "FILE")]
    event_log: Option<PathBuf>,
    /// Rotate the event log when it would grow past this many bytes [default: 10485760].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..))]
    event_log_max_bytes: Option<u64>,
    /// Rotated event logs to keep (`FILE.1` … `FILE.N`) [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1000))]
    event_log_keep: Option<u16>,
    /// Longest wait for the departure to spread when leaving, in seconds [default: 5].
    #[arg(long, value_name = "SECS", value_parser = parse_duration_secs)]
    leave_timeout: Option<std::time::Duration>,
}

impl AgentArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            bind: self.bind,
            advertise: self.advertise,
            join: (!self.join.is_empty()).then(|| self.join.clone()),
            cluster: self.cluster.clone(),
            preset: self.preset,
            shards: self.shards.map(usize::from),
            http: self.http,
            keys: (!self.keys.is_empty()).then(|| self.keys.clone()),
            metadata: self.metadata.clone(),
            placement: self.placement,
            placement_seed: self.placement_seed,
            backend: self.backend,
            event_log: self.event_log.clone(),
            event_log_max_bytes: self.event_log_max_bytes,
            event_log_keep: self.event_log_keep.map(usize::from),
            leave_timeout: self.leave_timeout,
        }
    }
}

fn main() -> ExitCode {
    // `--version` prints the long form; `-V` the short one.
    let long_version: &'static str = Box::leak(hearsay::build::long_version().into_boxed_str());
    let command = Cli::command().long_version(long_version);
    let cli = match command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Cmd::Agent(args) => {
            config::load(args.config.as_deref(), &args.overrides()).and_then(agent::run)
        }
        Cmd::Version { json } => {
            client::print_version(json);
            Ok(())
        }
        Cmd::Members(c) => client::Client::new(&c).and_then(|cl| cl.members()),
        Cmd::Lookup {
            key,
            replicas,
            client,
        } => client::Client::new(&client).and_then(|cl| cl.lookup(&key, replicas)),
        Cmd::Get { key, client } => client::Client::new(&client).and_then(|cl| cl.get(&key)),
        Cmd::Set { key, value, client } => {
            client::Client::new(&client).and_then(|cl| cl.set(&key, &value))
        }
        Cmd::Incr { key, n, client } => {
            client::Client::new(&client).and_then(|cl| cl.add(&key, n, true))
        }
        Cmd::Decr { key, n, client } => {
            client::Client::new(&client).and_then(|cl| cl.add(&key, n, false))
        }
        Cmd::Drain(c) => client::Client::new(&c).and_then(|cl| cl.action("drain")),
        Cmd::Undrain(c) => client::Client::new(&c).and_then(|cl| cl.action("undrain")),
        Cmd::Leave(c) => client::Client::new(&c).and_then(|cl| cl.action("leave")),
        Cmd::Debug(c) => client::Client::new(&c).and_then(|cl| cl.debug()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors are built as one line; make sure of it.
            let line = e.replace(['\n', '\r'], " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// A clap error as one line: its first paragraph (the message and, for missing
/// arguments, the list of them), without the usage block and hints.
fn one_line(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        return format!(
            "a subcommand is required: {} (see `hearsay --help`)",
            names.join(", ")
        );
    }
    let rendered = e.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = paragraph.join(" ");
    let line = line.trim_start_matches("error: ").trim();
    if line.is_empty() {
        "invalid arguments (see `hearsay --help`)".into()
    } else {
        line.to_string()
    }
}

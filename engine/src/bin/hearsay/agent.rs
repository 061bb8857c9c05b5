//! `hearsay agent`: start the engine, serve HTTP, log events, and on SIGINT, SIGTERM or
//! `POST /v1/leave` leave the cluster gracefully and exit.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use hearsay::codec::KeyRing;
use hearsay::engine::Engine;
use hearsay::node::Preset;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{HttpSetting, Settings};
use crate::eventlog::{EventLog, RotatingFile};
use crate::http;

/// Why the agent stops.
#[derive(Debug)]
pub(crate) enum Stop {
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// `POST /v1/leave`.
    Leave,
}

/// HTTP worker threads: a slow client does not hold up a scrape.
const HTTP_WORKERS: usize = 2;

/// Run until told to stop, then leave.
/// Send the engine's `tracing` records (runtime fallbacks, contained panics, join
/// failures) to stderr, at the level `HEARSAY_LOG` names (error, warn, info, debug or
/// trace; default info).
fn init_logging() -> Result<(), String> {
    let level = match std::env::var("HEARSAY_LOG") {
        Ok(v) => v.parse::<tracing::Level>().map_err(|_| {
            format!("invalid `HEARSAY_LOG` {v:?}: expected error, warn, info, debug or trace")
        })?,
        Err(_) => tracing::Level::INFO,
    };
    // A subscriber already installed (by an embedding test) is fine.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    Ok(())
}

pub(crate) fn run(settings: Settings) -> Result<(), String> {
    init_logging()?;
    // Signals first, so one that arrives while the engine starts is not lost.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    let (stop_tx, stop_rx) = mpsc::channel::<Stop>();
    let signal_tx = stop_tx.clone();
    thread::Builder::new()
        .name("hearsay-signals".into())
        .spawn(move || {
            let mut first = true;
            for sig in signals.forever() {
                if first {
                    first = false;
                    let _ = signal_tx.send(Stop::Signal(sig));
                } else {
                    eprintln!("hearsay: second signal, exiting without waiting for the leave");
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    let engine = start_engine(&settings)?;
    let mut event_log = match &settings.event_log {
        Some(path) => {
            let file =
                RotatingFile::open(path, settings.event_log_max_bytes, settings.event_log_keep)
                    .map_err(|e| {
                        format!("invalid `event_log`: cannot open {}: {e}", path.display())
                    })?;
            Some(EventLog::new(file, engine.subscribe(EventLog::CAPACITY)))
        }
        None => None,
    };
    let server = match settings.http {
        HttpSetting::On(addr) => Some(
            tiny_http::Server::http(addr)
                .map_err(|e| format!("invalid `http`: cannot listen on {addr}: {e}"))?,
        ),
        HttpSetting::Off => None,
    };
    let http_addr = server.as_ref().and_then(|s| s.server_addr().to_ip());
    announce(&engine, &settings, http_addr);

    let stopping = AtomicBool::new(false);
    let leaving = AtomicBool::new(false);
    let lagged = event_log.as_ref().map(|l| l.lagged.clone());
    let reason = thread::scope(|scope| {
        let mut workers = Vec::new();
        if let Some(server) = &server {
            for _ in 0..HTTP_WORKERS {
                let ctx = http::Ctx {
                    engine: &engine,
                    stop: stop_tx.clone(),
                    event_log_lagged: lagged.as_deref(),
                    leaving: &leaving,
                };
                let stopping = &stopping;
                workers.push(scope.spawn(move || http::serve(server, &ctx, stopping)));
            }
        }
        let log_thread = event_log.as_mut().map(|log| {
            let (engine, stopping) = (&engine, &stopping);
            scope.spawn(move || log.run(engine, stopping))
        });
        let reason = stop_rx.recv().ok();
        leaving.store(true, Ordering::Relaxed);
        stopping.store(true, Ordering::Relaxed);
        if let Some(server) = &server {
            for _ in 0..workers.len() {
                server.unblock();
            }
        }
        for w in workers {
            let _ = w.join();
        }
        if let Some(t) = log_thread {
            let _ = t.join();
        }
        reason
    });
    drop(server);
    match reason {
        Some(Stop::Signal(sig)) => eprintln!(
            "hearsay: {}, leaving the cluster",
            if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
        ),
        Some(Stop::Leave) => eprintln!("hearsay: asked to leave over HTTP, leaving the cluster"),
        None => eprintln!("hearsay: leaving the cluster"),
    }
    let left = engine.leave(settings.leave_timeout);
    if let Some(log) = &mut event_log {
        log.drain();
    }
    left.map_err(|e| format!("leaving the cluster failed: {e}"))?;
    eprintln!("hearsay: left");
    Ok(())
}

/// Build and start the engine the settings describe.
fn start_engine(s: &Settings) -> Result<Engine, String> {
    let mut b = Engine::builder()
        .bind(s.bind)
        .cluster(&s.cluster)
        .preset(s.preset)
        .shards(s.shards)
        .placement(s.placement, s.placement_seed)
        .backend(s.backend)
        .metadata(s.metadata.as_bytes().to_vec());
    if s.bind.ip().is_unspecified() && s.bind.port() == 0 && s.advertise.is_none() {
        return Err(
            "invalid `advertise`: required when `bind` has an unspecified address and port 0"
                .into(),
        );
    }
    if let Some(a) = s.infer_advertise(s.bind.port())? {
        b = b.advertise(a);
    }
    for seed in &s.join {
        b = b.seed(seed.clone());
    }
    if let Some((first, rest)) = s.keys.split_first() {
        let mut ring = KeyRing::new(*first).map_err(|e| format!("invalid `keys`: {e}"))?;
        for k in rest {
            ring.install(*k)
                .map_err(|e| format!("invalid `keys`: {e}"))?;
        }
        b = b.keys(ring);
    }
    b.start().map_err(|e| format!("cannot start the node: {e}"))
}

/// Say where the node is, on stdout, one `name value` pair a line.
fn announce(engine: &Engine, s: &Settings, http: Option<SocketAddr>) {
    let local = engine.local();
    let backend = engine
        .backend()
        .map(|b| b.to_string())
        .unwrap_or_else(|e| e.to_string());
    let preset = match s.preset {
        Preset::Lan => "lan",
        Preset::Wan => "wan",
        Preset::Local => "local",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "hearsay {} (commit {})",
        hearsay::build::VERSION,
        hearsay::build::GIT_COMMIT
    );
    if let Some(m) = &local {
        let _ = writeln!(out, "node      {}", m.id);
        let _ = writeln!(out, "gossip    {}", m.addr);
    }
    let _ = writeln!(out, "bind      {}", s.bind);
    match http {
        Some(a) => {
            let _ = writeln!(out, "http      {a}");
        }
        None => {
            let _ = writeln!(out, "http      off");
        }
    }
    let _ = writeln!(out, "backend   {backend}");
    let _ = writeln!(
        out,
        "cluster   {} (preset {preset}, placement {}, {} seed(s), {})",
        s.cluster,
        s.placement,
        s.join.len(),
        if s.keys.is_empty() {
            "plaintext"
        } else {
            "encrypted"
        }
    );
    let _ = out.flush();
}

//! A UDP request router that embeds the engine: each request datagram goes to the member
//! that owns its key.
//!
//! ```text
//! cargo run --release --example router                  # a demo on loopback, in one process
//! cargo run --release --example router -- backend --gossip 127.0.0.1:7001 --service 127.0.0.1:9001 [--join SEED]
//! cargo run --release --example router -- router  --gossip 127.0.0.1:7100 --listen 127.0.0.1:9000 --join 127.0.0.1:7001
//! ```
//!
//! # Protocol
//!
//! - **Request** (client → router), one datagram: the key, a newline, the body
//!   (`user:42\nGET profile`). A datagram without a newline is all key.
//! - **Forwarded request** (router → owner): `>` `CLIENT-ADDR` `\n` then the request as it
//!   came, so the owner answers the client directly and the router keeps no state per
//!   request.
//! - **Reply** (owner → client): `OWNER-ID KEY\nBODY`, from the owner's service socket.
//! - **No route** (router → client): `!no-route KEY` when no member serves the key.
//!
//! # How it routes
//!
//! Every member announces its service address in its metadata as `svc=IP:PORT`. The router
//! joins the cluster like any member, then **drains** itself: it gossips and sees every
//! placement change but owns no key. For each request it calls [`Engine::lookup`] (a
//! lock-free read of the current placement) and resolves the owner's service address in a
//! [`Directory`] rebuilt only when the member list changes (an `Arc` pointer comparison
//! per request). The bench `bench/benches/router.rs` measures exactly this code.
//!
//! When a backend is drained, fails or leaves, placement moves its keys to the others and
//! the router follows within a protocol period or two; requests in flight to a dead owner
//! are lost (UDP), as they would be without the router.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearsay::engine::Engine;
use hearsay::membership::Member;
use hearsay::node::Preset;
use hearsay::placement::NodeId;

/// Largest datagram handled.
const MAX_DATAGRAM: usize = 65_507;

/// The key of a request: its bytes up to the first newline.
pub(crate) fn request_key(request: &[u8]) -> &[u8] {
    match request.iter().position(|&b| b == b'\n') {
        Some(i) => &request[..i],
        None => request,
    }
}

/// A member's service address from its metadata (`svc=IP:PORT`, among comma-separated
/// `name=value` pairs).
pub(crate) fn service_addr(metadata: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(metadata)
        .ok()?
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix("svc="))?
        .parse()
        .ok()
}

/// Service addresses by member id, rebuilt when the engine publishes a new member list.
pub(crate) struct Directory {
    members: Arc<Vec<Member>>,
    /// Sorted by id (the member list is).
    addrs: Vec<(NodeId, SocketAddr)>,
}

impl Directory {
    pub(crate) fn new(engine: &Engine) -> Self {
        let mut d = Self {
            members: Arc::new(Vec::new()),
            addrs: Vec::new(),
        };
        d.refresh(engine);
        d
    }

    /// Rebuild if the member list changed since the last call: one atomic load and a
    /// pointer comparison when it did not.
    pub(crate) fn refresh(&mut self, engine: &Engine) {
        let members = engine.members();
        if Arc::ptr_eq(&members, &self.members) {
            return;
        }
        self.addrs = members
            .iter()
            .filter(|m| m.is_live())
            .filter_map(|m| Some((m.id, service_addr(&m.metadata)?)))
            .collect();
        self.members = members;
    }

    /// The service address of a member.
    pub(crate) fn get(&self, id: NodeId) -> Option<SocketAddr> {
        self.addrs
            .binary_search_by_key(&id, |&(i, _)| i)
            .ok()
            .map(|i| self.addrs[i].1)
    }
}

/// The routing decision for one request: the owner of its key and where to send it.
pub(crate) fn route(
    engine: &Engine,
    directory: &mut Directory,
    request: &[u8],
) -> Option<(NodeId, SocketAddr)> {
    let owner = engine.lookup(request_key(request));
    directory.refresh(engine);
    directory.get(owner).map(|addr| (owner, addr))
}

/// The datagram the router sends to an owner: `>CLIENT\n` and the request.
pub(crate) fn forwarded(client: SocketAddr, request: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let _ = writeln!(out, ">{client}");
    out.extend_from_slice(request);
}

/// Split a forwarded request into the client's address and the request.
pub(crate) fn parse_forwarded(datagram: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let rest = datagram.strip_prefix(b">")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let client = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    Some((client, &rest[nl + 1..]))
}

/// Serve requests on `socket` until `stop` is set: route each one to its owner.
pub(crate) fn run_router(engine: &Engine, socket: &UdpSocket, stop: &AtomicBool) {
    let mut directory = Directory::new(engine);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let request = &buf[..n];
        match route(engine, &mut directory, request) {
            Some((_, addr)) => {
                forwarded(client, request, &mut out);
                let _ = socket.send_to(&out, addr);
            }
            None => {
                out.clear();
                out.extend_from_slice(b"!no-route ");
                out.extend_from_slice(request_key(request));
                let _ = socket.send_to(&out, client);
            }
        }
    }
}

/// Answer forwarded requests on `socket` until `stop` is set, as member `id`.
pub(crate) fn run_backend(id: NodeId, socket: &UdpSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some((client, request)) = parse_forwarded(&buf[..n]) else {
            continue;
        };
        let key = request_key(request);
        let body = request.get(key.len() + 1..).unwrap_or_default();
        out.clear();
        out.extend_from_slice(format!("{id} ").as_bytes());
        out.extend_from_slice(key);
        out.push(b'\n');
        out.extend_from_slice(body);
        let _ = socket.send_to(&out, client);
    }
}

/// A member with a service socket: the engine announces the socket's address.
pub(crate) fn start_backend(
    gossip: SocketAddr,
    service: SocketAddr,
    cluster: &str,
    seed: Option<SocketAddr>,
    preset: Preset,
) -> Result<(Engine, UdpSocket), Box<dyn std::error::Error>> {
    let socket = UdpSocket::bind(service)?;
    let svc = socket.local_addr()?;
    let mut b = Engine::builder()
        .bind(gossip)
        .cluster(cluster)
        .preset(preset)
        .metadata(format!("svc={svc}"));
    if let Some(s) = seed {
        b = b.seed(s.to_string());
    }
    Ok((b.start()?, socket))
}

/// A router: a member that drains itself at once, so it owns no key.
pub(crate) fn start_router(
    gossip: SocketAddr,
    cluster: &str,
    seed: SocketAddr,
    preset: Preset,
) -> Result<Engine, Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .bind(gossip)
        .cluster(cluster)
        .preset(preset)
        .seed(seed.to_string())
        .start()?;
    engine.drain()?;
    Ok(engine)
}

/// Wait until `ok` holds, at most `timeout`.
pub(crate) fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok()
}

/// Three backends and a router on loopback, a client sending requests, then a backend
/// drained and the requests again.
fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let stop = AtomicBool::new(false);
    let mut backends = Vec::new();
    let mut seed = None;
    for _ in 0..3 {
        let (engine, socket) = start_backend(any, any, "router-demo", seed, Preset::Local)?;
        seed.get_or_insert(engine.local().ok_or("no local member")?.addr);
        backends.push((engine, socket));
    }
    let router = start_router(any, "router-demo", seed.ok_or("no seed")?, Preset::Local)?;
    let listen = UdpSocket::bind(any)?;
    let router_addr = listen.local_addr()?;
    let converged = wait_until(Duration::from_secs(20), || {
        let d = Directory::new(&router);
        router.router().load().nodes().len() == 3
            && backends
                .iter()
                .all(|(e, _)| e.local().is_some_and(|m| d.get(m.id).is_some()))
    });
    if !converged {
        return Err("the cluster did not converge".into());
    }
    println!("router on {router_addr}, 3 backends");
    let client = UdpSocket::bind(any)?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        s.spawn(|| run_router(&router, &listen, &stop));
        for (engine, socket) in &backends {
            let id = engine.local().ok_or("no local member")?.id;
            let stop = &stop;
            s.spawn(move || run_backend(id, socket, stop));
        }
        // Every reply must come from the owner placement names.
        let send_all = |label: &str| -> Result<Vec<String>, Box<dyn std::error::Error>> {
            println!("{label}");
            let mut buf = [0u8; 1500];
            let mut served = Vec::new();
            for i in 0..12 {
                let request = format!("user:{i}\nGET profile");
                client.send_to(request.as_bytes(), router_addr)?;
                let (n, from) = client.recv_from(&mut buf)?;
                let reply = String::from_utf8_lossy(&buf[..n]);
                let served_by = reply.split(' ').next().unwrap_or_default().to_string();
                let owner = router.lookup(format!("user:{i}").as_str()).to_string();
                println!("  user:{i} -> served by {served_by} at {from}");
                if served_by != owner {
                    return Err(format!("user:{i} went to {served_by}, owner {owner}").into());
                }
                if !reply.ends_with(&format!("user:{i}\nGET profile")) {
                    return Err(format!("unexpected reply {reply:?}").into());
                }
                served.push(served_by);
            }
            Ok(served)
        };
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            send_all("requests:")?;
            let drained = backends[0].0.local().ok_or("no local member")?.id;
            backends[0].0.drain()?;
            let moved = wait_until(Duration::from_secs(20), || {
                router
                    .router()
                    .load()
                    .nodes()
                    .iter()
                    .all(|n| n.id != drained)
            });
            if !moved {
                return Err("the drain did not reach the router".into());
            }
            let served = send_all(&format!("after draining {drained}:"))?;
            if served.contains(&drained.to_string()) {
                return Err("a drained backend still got requests".into());
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    router.shutdown()?;
    for (engine, _) in backends {
        engine.shutdown()?;
    }
    Ok(())
}

/// The value of `--name` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn addr_flag(args: &[String], name: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    flag(args, name)
        .ok_or_else(|| format!("{name} ADDR is required"))?
        .parse()
        .map_err(|e| format!("{name}: {e}").into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cluster = flag(&args, "--cluster").unwrap_or_else(|| "hearsay".into());
    let never = AtomicBool::new(false);
    match args.first().map(String::as_str) {
        None | Some("demo") => demo(),
        Some("backend") => {
            let seed = flag(&args, "--join").map(|s| s.parse()).transpose()?;
            let (engine, socket) = start_backend(
                addr_flag(&args, "--gossip")?,
                addr_flag(&args, "--service")?,
                &cluster,
                seed,
                Preset::Lan,
            )?;
            let id = engine.local().ok_or("no local member")?.id;
            println!("backend {id} serving on {}", socket.local_addr()?);
            run_backend(id, &socket, &never);
            Ok(())
        }
        Some("router") => {
            let engine = start_router(
                addr_flag(&args, "--gossip")?,
                &cluster,
                addr_flag(&args, "--join")?,
                Preset::Lan,
            )?;
            let socket = UdpSocket::bind(addr_flag(&args, "--listen")?)?;
            println!("routing requests on {}", socket.local_addr()?);
            run_router(&engine, &socket, &never);
            Ok(())
        }
        Some(other) => Err(format!("unknown mode {other:?} (demo, backend, router)").into()),
    }
}

#[cfg(test)]
mod tests {
    // Paths in full, no `use`: the bench includes this file, and its build drops `#[test]`
    // functions.
    #[test]
    fn the_demo_routes_every_request_to_its_owner() {
        super::demo().unwrap();
    }

    #[test]
    fn request_framing() {
        assert_eq!(super::request_key(b"user:1\nbody\nmore"), b"user:1");
        assert_eq!(super::request_key(b"just-a-key"), b"just-a-key");
        let client: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut out = Vec::new();
        super::forwarded(client, b"k\nv", &mut out);
        assert_eq!(super::parse_forwarded(&out), Some((client, &b"k\nv"[..])));
        assert_eq!(super::parse_forwarded(b"k\nv"), None);
        assert_eq!(
            super::service_addr(b"zone=a,svc=10.0.0.1:9000"),
            Some("10.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(super::service_addr(b"zone=a"), None);
    }
}

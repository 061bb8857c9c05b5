//! What the example router's decision adds to a request: the router from
//! `engine/examples/router.rs` (its own code, included below) next to a bare UDP forward, on
//! loopback.
//!
//! Setup: three backends and a router, each a real `Engine` on loopback (`local` preset),
//! converged before anything is measured; every backend answers forwarded requests from its
//! service socket, as in the example.
//!
//! Groups:
//! - `router/decision`: [`route`] alone for one request (key parse, `Engine::lookup`, the
//!   directory's freshness check and the owner's service address), no I/O.
//! - `router/round-trip/bare-forward`: a client sends a request to a forwarder thread that
//!   sends it on, with the same forwarding header, to one fixed backend, which answers the
//!   client; the time is the client's whole round trip.
//! - `router/round-trip/routed`: the same path through [`run_router`], which picks the
//!   owner of each key instead of a fixed backend.
//!
//! Keys cycle through 1024 `user:N` keys. The difference of the two round trips is the
//! decision plus noise; `decision` isolates it.

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{criterion_main, Criterion};
use hearsay::engine::Engine;
use hearsay::node::Preset;

#[allow(dead_code)]
#[path = "../../engine/examples/router.rs"]
mod example;

use example::{forwarded, route, run_backend, run_router, Directory};

const KEYS: usize = 1024;

/// A forwarder with no decision: every request goes to `to`.
fn run_bare(socket: &UdpSocket, to: SocketAddr, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_507];
    let mut out = Vec::with_capacity(65_507);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        forwarded(client, &buf[..n], &mut out);
        let _ = socket.send_to(&out, to);
    }
}

/// Send one request through `via` and wait for the answer.
fn round_trip(client: &UdpSocket, via: SocketAddr, request: &[u8], buf: &mut [u8]) -> usize {
    client.send_to(request, via).expect("send");
    let (n, _) = client.recv_from(buf).expect("an answer within the timeout");
    n
}

fn router(c: &mut Criterion) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut backends = Vec::new();
    let mut seed = None;
    for _ in 0..3 {
        let (engine, socket) =
            example::start_backend(any, any, "router-bench", seed, Preset::Local).unwrap();
        seed.get_or_insert(engine.local().unwrap().addr);
        backends.push((engine, socket));
    }
    let engine: Engine =
        example::start_router(any, "router-bench", seed.unwrap(), Preset::Local).unwrap();
    let converged = example::wait_until(Duration::from_secs(30), || {
        let d = Directory::new(&engine);
        engine.router().load().nodes().len() == 3
            && backends
                .iter()
                .all(|(e, _)| e.local().is_some_and(|m| d.get(m.id).is_some()))
    });
    assert!(converged, "the bench cluster did not converge");
    let requests: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("user:{i}\nGET profile").into_bytes())
        .collect();

    let mut g = c.benchmark_group("router");
    let mut directory = Directory::new(&engine);
    let mut i = 0;
    g.bench_function("decision", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(route(&engine, &mut directory, black_box(&requests[i])))
        })
    });

    let stop = AtomicBool::new(false);
    let routed = UdpSocket::bind(any).unwrap();
    let bare = UdpSocket::bind(any).unwrap();
    let (routed_addr, bare_addr) = (routed.local_addr().unwrap(), bare.local_addr().unwrap());
    let fixed = backends[0].1.local_addr().unwrap();
    std::thread::scope(|s| {
        for (e, socket) in &backends {
            let id = e.local().unwrap().id;
            let stop = &stop;
            s.spawn(move || run_backend(id, socket, stop));
        }
        s.spawn(|| run_router(&engine, &routed, &stop));
        s.spawn(|| run_bare(&bare, fixed, &stop));
        let client = UdpSocket::bind(any).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = vec![0u8; 2048];
        for (name, via) in [
            ("round-trip/bare-forward", bare_addr),
            ("round-trip/routed", routed_addr),
        ] {
            // Each path answers before it is measured.
            assert!(round_trip(&client, via, &requests[0], &mut buf) > 0);
            let mut i = 0;
            g.bench_function(name, |b| {
                b.iter(|| {
                    i = (i + 1) % KEYS;
                    round_trip(&client, via, &requests[i], &mut buf)
                })
            });
        }
        stop.store(true, Ordering::Relaxed);
    });
    g.finish();
    engine.shutdown().unwrap();
    for (e, _) in backends {
        e.shutdown().unwrap();
    }
}

// `criterion_group!` expands to an undocumented `pub fn`; keep it out of the crate root.
#[allow(missing_docs)]
mod entry {
    use super::{router, Criterion};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        // Round trips take tens of microseconds; three seconds each settles them.
        config = Criterion::default()
            .warm_up_time(std::time::Duration::from_secs(1))
            .measurement_time(std::time::Duration::from_secs(3));
        targets = router
    }
}
criterion_main!(entry::benches);

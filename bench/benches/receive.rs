//! Receive-path benchmark: [`Node::handle_datagram`] on full frames of member updates, the
//! bulk of what a node reads in a cold start.
//!
//! Group `receive/known-members`: 1400-byte frames of member updates (alive, no metadata,
//! as a cold start carries them) that the receiving node already holds, so each update is
//! decoded, looked up and found the same: the copies a cold start reads again, about half
//! of its reads (`loadgen`'s `member updates read … merged …`). The frames go round
//! `NODES` nodes of `MEMBERS` members each, one node after the other, so a node's table is
//! as cold in cache as in a process hosting thousands of them. `Throughput::Elements` is the
//! member updates in a frame: criterion prints updates per second; time per frame is the
//! reported time.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};
use hearsay::codec::{FrameConfig, FrameWriter, MemberUpdate, Message, Status};
use hearsay::node::{Command, Node, NodeConfig, Preset};
use hearsay::placement::NodeId;
use hearsay_bench::frames::{LABEL, SENDER};

/// Receiving nodes; with `MEMBERS` each the process holds about 124 MiB, beyond the caches.
const NODES: usize = 128;
/// Members every receiving node holds: the default run's cluster size.
const MEMBERS: usize = 5000;

fn addr(i: usize) -> SocketAddr {
    let [_, a, b, c] = (i as u32).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), 7946))
}

/// `MEMBERS` alive members with ids 1, 2, … (as the load generator numbers its nodes),
/// encoded into as few full frames as they fit.
fn frames() -> (Vec<Vec<u8>>, usize) {
    let updates: Vec<Message<'static>> = (0..MEMBERS)
        .map(|i| {
            Message::Member(MemberUpdate {
                id: NodeId(i as u64 + 1),
                addr: addr(i + 1),
                incarnation: 1,
                status: Status::Alive,
                drained: false,
                meta_version: 0,
                metadata: b"",
                accuser: None,
            })
        })
        .collect();
    let config = FrameConfig::new(LABEL).expect("frame config");
    let mut frames = Vec::new();
    let mut rest = &updates[..];
    while !rest.is_empty() {
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, SENDER, None);
        let n = rest.iter().take_while(|m| w.try_push(m)).count();
        assert!(n > 0, "a member update must fit in a frame");
        w.finish();
        frames.push(buf);
        rest = &rest[n..];
    }
    let per_frame = MEMBERS.div_ceil(frames.len());
    (frames, per_frame)
}

/// Receiving node `i`, a member alone in its cluster, after reading `frames`.
fn node(i: usize, now: Instant, frames: &[Vec<u8>]) -> Node {
    let mut config = NodeConfig::new(Preset::Lan, addr(MEMBERS + 1 + i), LABEL);
    config.id = NodeId(u64::MAX - i as u64);
    let mut node = Node::new(config, now).expect("node config");
    node.handle_command(now, Command::Join(Vec::new()));
    for f in frames {
        node.handle_datagram(now, addr(0), &mut f.clone());
    }
    if !frames.is_empty() {
        assert_eq!(
            node.live_count(),
            MEMBERS + 1,
            "the node holds every member"
        );
    }
    while node.poll_event().is_some() {}
    node
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let (frames, per_frame) = frames();
    eprintln!(
        "receive: {MEMBERS} members in {} frames of up to {} bytes (about {per_frame} updates each), \
         round {NODES} nodes",
        frames.len(),
        frames.iter().map(Vec::len).max().unwrap_or(0)
    );
    let mut nodes: Vec<Node> = (0..NODES).map(|i| node(i, now, &frames)).collect();
    let mut g = c.benchmark_group("receive");
    g.throughput(Throughput::Elements(per_frame as u64));
    let mut buf = vec![0u8; 1400];
    let (mut n, mut f) = (0, 0);
    g.bench_function("known-members", |b| {
        b.iter(|| {
            let frame = &frames[f];
            let data = &mut buf[..frame.len()];
            data.copy_from_slice(frame);
            nodes[n].handle_datagram(now, addr(0), black_box(data));
            n += 1;
            if n == NODES {
                n = 0;
                f = (f + 1) % frames.len();
            }
        })
    });
    let merged: u64 = nodes.iter().map(|n| n.stats().updates_merged).sum();
    assert_eq!(merged, (NODES * MEMBERS) as u64, "no update changed a view");
    drop(nodes);

    // Nodes that start empty and learn the members frame by frame; a node that has read
    // every frame is replaced by a fresh one, outside the timed part.
    let fresh = |i: usize| node(i, now, &[]);
    let mut learners: Vec<(Node, usize)> = (0..NODES).map(|i| (fresh(i), 0)).collect();
    let mut n = 0;
    g.bench_function("new-members", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (node, next) = &mut learners[n];
                if *next == frames.len() {
                    *node = fresh(n);
                    *next = 0;
                }
                let frame = &frames[*next];
                let data = &mut buf[..frame.len()];
                data.copy_from_slice(frame);
                let start = Instant::now();
                node.handle_datagram(now, addr(0), black_box(data));
                spent += start.elapsed();
                while node.poll_event().is_some() {}
                *next += 1;
                n = (n + 1) % NODES;
            }
            spent
        })
    });
    g.finish();
}

// `criterion_group!` expands to an undocumented `pub fn`; keep it out of the crate root.
#[allow(missing_docs)]
mod entry {
    use super::{bench, Criterion};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        // A frame takes microseconds; the estimates settle as quickly as the codec's.
        config = Criterion::default()
            .warm_up_time(std::time::Duration::from_millis(500))
            .measurement_time(std::time::Duration::from_secs(2));
        targets = bench
    }
}
criterion_main!(entry::benches);

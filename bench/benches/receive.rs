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
//!
//! Group `receive/new-members`: the same frames read by nodes that start empty and learn
//! the members frame by frame.
//!
//! Group `receive/digest`: 1400-byte frames of one anti-entropy digest each, whose entries
//! the receiving node holds in the same state, so each entry is decoded, looked up and
//! found equal (nothing to ask for or offer). Elements are digest entries.
//!
//! Group `answer/empty-peer`: the other side of a joiner's first pull. A node of `MEMBERS`
//! members reads an opening summary whose 64 buckets are empty and writes its answer: its
//! own summary, then every member (itself included) as a full update, about 55 datagrams.
//! Elements are the member updates written; the time is per answer.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Bencher, Criterion, Throughput};
use hearsay::codec::{
    kind, Digest, DigestEntry, FrameConfig, FrameWriter, List, MemberSummary, MemberUpdate,
    Message, StatePush, Status, SummaryBucket,
};
use hearsay::node::{Command, Node, NodeConfig, Preset};
use hearsay::placement::NodeId;
use hearsay_bench::frames::{LABEL, SENDER};

/// Receiving nodes; with `MEMBERS` each, their tables are far beyond the caches (see
/// `bench/README.md` for the bench's resident size).
const NODES: usize = 128;
/// Members every receiving node holds: the default run's cluster size.
const MEMBERS: usize = 5000;

fn addr(i: usize) -> SocketAddr {
    let [_, a, b, c] = (i as u32).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), 7946))
}

/// Encodes `messages` into as few full frames as they fit, each starting with `lead`
/// when given; returns the frames and the most messages (besides `lead`) in one.
fn pack(messages: &[Message<'_>], lead: Option<Message<'_>>) -> (Vec<Vec<u8>>, usize) {
    let config = FrameConfig::new(LABEL).expect("frame config");
    let mut frames = Vec::new();
    let mut most = 0;
    let mut rest = messages;
    while !rest.is_empty() {
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, SENDER, None);
        if let Some(m) = &lead {
            assert!(w.try_push(m), "the lead message fits");
        }
        let n = rest.iter().take_while(|m| w.try_push(m)).count();
        assert!(n > 0, "a message must fit in a frame");
        w.finish();
        frames.push(buf);
        most = most.max(n);
        rest = &rest[n..];
    }
    (frames, most)
}

/// `MEMBERS` alive members with ids 1, 2, … (as the load generator numbers its nodes), as
/// member updates.
fn updates() -> Vec<Message<'static>> {
    (0..MEMBERS)
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
        .collect()
}

/// The members of [`updates`], encoded into as few full frames as they fit, and the
/// updates in a frame on average (rounded up).
fn frames() -> (Vec<Vec<u8>>, usize) {
    let (frames, _) = pack(&updates(), None);
    let per_frame = MEMBERS.div_ceil(frames.len());
    (frames, per_frame)
}

/// Frames of one digest each, covering the members of [`updates`] in the state they have
/// there, and the most entries in one.
fn digest_frames() -> (Vec<Vec<u8>>, usize) {
    let entries: Vec<DigestEntry> = (0..MEMBERS)
        .map(|i| DigestEntry {
            id: NodeId(i as u64 + 1),
            incarnation: 1,
            status: Status::Alive,
            drained: false,
            meta_version: 0,
        })
        .collect();
    let config = FrameConfig::new(LABEL).expect("frame config");
    let digest = |entries| {
        Message::Digest(Digest {
            round: 1,
            part: 0,
            parts: 1,
            entries: List::new(entries),
        })
    };
    let mut frames = Vec::new();
    let mut most = 0;
    let mut rest = &entries[..];
    while !rest.is_empty() {
        // The most entries whose digest fits in one frame.
        let fits = |n: usize| {
            let mut buf = Vec::new();
            let mut w = FrameWriter::new(&mut buf, &config, SENDER, None);
            w.try_push(&digest(&rest[..n]))
        };
        let mut n = rest.len();
        while !fits(n) {
            n = n * 7 / 8;
        }
        while n < rest.len() && fits(n + 1) {
            n += 1;
        }
        assert!(n > 0, "a digest entry must fit in a frame");
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, SENDER, None);
        assert!(w.try_push(&digest(&rest[..n])));
        w.finish();
        frames.push(buf);
        most = most.max(n);
        rest = &rest[n..];
    }
    (frames, most)
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

/// Times one frame per iteration: frame f to node n, n going round all `nodes` before f
/// moves on to the next frame, so each node's table is cold when its next frame comes.
/// `at` is (n, f), kept from one sample to the next.
fn round_robin(
    b: &mut Bencher<'_>,
    at: &mut (usize, usize),
    nodes: &mut [Node],
    frames: &[Vec<u8>],
    buf: &mut [u8],
    now: Instant,
) {
    b.iter(|| {
        let (n, f) = at;
        let frame = &frames[*f];
        let data = &mut buf[..frame.len()];
        data.copy_from_slice(frame);
        nodes[*n].handle_datagram(now, addr(0), black_box(data));
        *n += 1;
        if *n == nodes.len() {
            *n = 0;
            *f = (*f + 1) % frames.len();
        }
    })
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
    let mut at = (0, 0);
    g.bench_function("known-members", |b| {
        round_robin(b, &mut at, &mut nodes, &frames, &mut buf, now)
    });
    let merged: u64 = nodes.iter().map(|n| n.stats().updates_merged).sum();
    assert_eq!(merged, (NODES * MEMBERS) as u64, "no update changed a view");

    let (digests, per_digest) = digest_frames();
    eprintln!(
        "receive/digest: {MEMBERS} entries in {} frames (up to {per_digest} entries each)",
        digests.len()
    );
    g.throughput(Throughput::Elements(per_digest as u64));
    let mut at = (0, 0);
    g.bench_function("digest", |b| {
        round_robin(b, &mut at, &mut nodes, &digests, &mut buf, now)
    });
    let mut out = Vec::new();
    for node in &mut nodes {
        assert!(
            node.poll_transmit(now, &mut out).is_none(),
            "a digest of equal entries asks for nothing and offers nothing"
        );
    }
    drop(nodes);
    g.throughput(Throughput::Elements(per_frame as u64));

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
    drop(learners);

    // Nodes that learned the members as catch-up state (nothing queued for gossip, so the
    // answer carries the members alone), answering a summary of empty buckets.
    let (catch_up, _) = pack(&updates(), Some(Message::StatePush(StatePush { round: 0 })));
    let mut answering: Vec<Node> = (0..NODES).map(|i| node(i, now, &catch_up)).collect();
    let empty = [SummaryBucket { count: 0, hash: 0 }; hearsay::membership::BUCKETS];
    let (summary, _) = pack(
        &[Message::MemberSummary(MemberSummary {
            round: 1,
            reply: false,
            buckets: List::new(&empty),
        })],
        None,
    );
    let summary = &summary[0];
    let mut g = c.benchmark_group("answer");
    g.throughput(Throughput::Elements(MEMBERS as u64 + 1));
    let mut n = 0;
    let mut frames_out = 0u64;
    g.bench_function("empty-peer", |b| {
        b.iter(|| {
            let node = &mut answering[n];
            let data = &mut buf[..summary.len()];
            data.copy_from_slice(summary);
            node.handle_datagram(now, addr(0), black_box(data));
            // `poll_transmit` appends to the buffer: emptied after each datagram, as a host
            // sends them.
            while node.poll_transmit(now, &mut out).is_some() {
                black_box(&out);
                out.clear();
                frames_out += 1;
            }
            n = (n + 1) % NODES;
        })
    });
    g.finish();
    let answers: u64 = answering
        .iter()
        .map(|n| n.stats().messages_out.get(kind::MEMBER_SUMMARY).0)
        .sum();
    let written: u64 = answering
        .iter()
        .map(|n| n.stats().messages_out.get(kind::MEMBER).0)
        .sum();
    assert!(answers > 0, "the nodes answered");
    assert_eq!(
        written,
        answers * (MEMBERS as u64 + 1),
        "each answer carries every member, the node itself included"
    );
    eprintln!(
        "answer/empty-peer: {answers} answers, {:.1} datagrams each",
        frames_out as f64 / answers as f64
    );
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

//! CRDT replication on the deterministic simulator: random writes from random nodes under
//! loss, duplication, reordering and a partition converge to one state, with no increment
//! lost; hostile CRDT input is refused and counted.

use std::net::SocketAddr;
use std::time::Duration;

use hearsay::codec::{CrdtDelta, Message};
use hearsay::crdt::{Kind, Op};
use hearsay::node::{Command, Node, NodeConfig, Preset};
use hearsay::placement::NodeId;
use hearsay::replication::partition_of;
use hearsay::sim::{Check, Latency, LinkConfig, Sim, SimConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod wire;
use wire::frame;

const CLUSTER: &[u8] = b"crdt";

fn period() -> Duration {
    NodeConfig::new(Preset::Lan, "127.0.0.1:1".parse().unwrap(), CLUSTER).probe_interval
}

fn cluster(n: usize, seed: u64) -> Sim<Node> {
    let mut sim = Sim::new(SimConfig {
        seed,
        check: Check::Interval(period() / 4),
        ..SimConfig::default()
    })
    .unwrap();
    let now = sim.now();
    for _ in 0..n {
        sim.add_node(|addr| {
            let mut c = NodeConfig::new(Preset::Lan, addr, CLUSTER);
            c.event_capacity = 16;
            Node::new(c, now).unwrap()
        });
    }
    let seed_addr = sim.addr(0).unwrap();
    sim.command(0, Command::Join(vec![])).unwrap();
    for i in 1..n {
        sim.command(i, Command::Join(vec![seed_addr])).unwrap();
    }
    let deadline = sim.now() + period() * 60;
    assert!(sim.run_until(deadline, |s| s
        .nodes()
        .all(|(_, n)| n.live_count() == s.len())));
    sim
}

fn replicas_agree(sim: &Sim<Node>) -> bool {
    let mut hash = None;
    sim.nodes().all(|(_, n)| {
        let h = n.crdt_store().state_hash();
        *hash.get_or_insert(h) == h
    })
}

#[test]
fn random_writes_under_loss_duplication_reordering_and_a_partition_converge() {
    let n = 250;
    let mut sim = cluster(n, 21);
    sim.set_default_link(
        LinkConfig::new(Latency::Uniform {
            min: Duration::from_micros(200),
            max: Duration::from_millis(5),
        })
        .with_loss(0.2)
        .with_duplicate(0.05)
        .with_reorder(0.05, Duration::from_millis(20)),
    )
    .unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    let counters = 200u32;
    let mut expected = vec![0i128; counters as usize];
    let mut added: Vec<Vec<u8>> = Vec::new();
    let writes = 5_000;
    for w in 0..writes {
        let node = rng.random_range(0..n);
        let now = sim.now();
        let node_ref = sim.node_mut(node).unwrap();
        if w % 4 == 0 {
            // Many small sets: a value must fit one datagram to replicate.
            let elem = format!("e{w}").into_bytes();
            let key = format!("set/{}", w % 500).into_bytes();
            node_ref
                .crdt_update(now, &key, Kind::AWSet, &Op::Add(elem.clone()))
                .unwrap();
            added.push(elem);
        } else {
            let c = rng.random_range(0..counters);
            let key = format!("counter/{c}").into_bytes();
            let (op, delta) = if rng.random_ratio(1, 3) {
                (Op::Decr(2), -2)
            } else {
                (Op::Incr(3), 3)
            };
            node_ref
                .crdt_update(now, &key, Kind::PNCounter, &op)
                .unwrap();
            expected[c as usize] += delta;
        }
        sim.flush(node).unwrap();
        // Writes arrive over 20 periods; a partition splits the cluster for the middle 5.
        if w == writes / 2 {
            let a: Vec<usize> = (0..n / 2).collect();
            let b: Vec<usize> = (n / 2..n).collect();
            sim.partition(&[a, b]).unwrap();
        }
        if w == writes / 2 + writes / 8 {
            sim.heal();
        }
        sim.run_for(period() * 20 / writes);
    }
    sim.set_default_link(LinkConfig::default()).unwrap();
    let deadline = sim.now() + period() * 120;
    assert!(
        sim.run_until(deadline, replicas_agree),
        "replicas did not converge within 120 periods"
    );
    for (_, node) in sim.nodes() {
        for (c, want) in expected.iter().enumerate() {
            let key = format!("counter/{c}").into_bytes();
            let got = node.crdt_get(&key).and_then(|v| v.counter()).unwrap_or(0);
            assert_eq!(got, *want, "counter {c} lost an increment");
        }
        let elements: usize = (0..500)
            .map(|k| {
                let key = format!("set/{k}").into_bytes();
                node.crdt_get(&key)
                    .and_then(|v| v.elements())
                    .map_or(0, |e| e.len())
            })
            .sum();
        assert_eq!(elements, added.len(), "an element was lost");
    }
    // Once converged and quiet, every neighbour has acknowledged and the buffers drain.
    sim.run_for(period() * 10);
    let buffered: usize = sim.nodes().map(|(_, n)| n.crdt_store().buffered()).sum();
    assert!(
        buffered <= n,
        "{buffered} deltas still buffered across {n} nodes after convergence"
    );
}

#[test]
fn a_late_joiner_catches_up_through_anti_entropy() {
    let n = 20;
    let mut sim = cluster(n, 22);
    for i in 0..200u32 {
        let now = sim.now();
        let node = (i as usize) % n;
        sim.node_mut(node)
            .unwrap()
            .crdt_update(now, &i.to_be_bytes(), Kind::GCounter, &Op::Incr(1))
            .unwrap();
        sim.flush(node).unwrap();
    }
    sim.run_for(period() * 20);
    assert!(replicas_agree(&sim));
    // A new node has none of it, and no neighbour will resend acknowledged deltas.
    let now = sim.now();
    let seed_addr = sim.addr(0).unwrap();
    let joiner =
        sim.add_node(|addr| Node::new(NodeConfig::new(Preset::Lan, addr, CLUSTER), now).unwrap());
    sim.command(joiner, Command::Join(vec![seed_addr])).unwrap();
    let deadline = sim.now() + period() * 30;
    assert!(sim.run_until(deadline, replicas_agree));
    assert_eq!(sim.node(joiner).unwrap().crdt_store().len(), 200);
}

#[test]
fn hostile_crdt_input_is_refused_counted_and_changes_nothing() {
    let mut sim = cluster(4, 23);
    let now = sim.now();
    sim.node_mut(0)
        .unwrap()
        .crdt_update(now, b"k", Kind::GCounter, &Op::Incr(7))
        .unwrap();
    let target = sim.node_mut(0).unwrap();
    let before = target.crdt_store().state_hash();
    let rejected = target.stats().crdt_rejected;
    let attacker: SocketAddr = "10.99.0.9:7946".parse().unwrap();
    let key: &[u8] = b"k";
    let p = partition_of(key) as u16;
    let bad = [
        // Unknown type tag.
        CrdtDelta {
            partition: p,
            seq: 1,
            key,
            kind: 0xee,
            payload: b"",
        },
        // Corrupt payload for a known type.
        CrdtDelta {
            partition: p,
            seq: 2,
            key,
            kind: Kind::GCounter as u8,
            payload: &[0xff; 40],
        },
        // Wrong type for an existing key.
        CrdtDelta {
            partition: p,
            seq: 3,
            key,
            kind: Kind::AWSet as u8,
            payload: b"",
        },
        // A partition the key does not belong to.
        CrdtDelta {
            partition: (p + 1) % 16,
            seq: 4,
            key,
            kind: Kind::GCounter as u8,
            payload: b"",
        },
        // A partition that does not exist.
        CrdtDelta {
            partition: 999,
            seq: 5,
            key,
            kind: Kind::GCounter as u8,
            payload: b"",
        },
    ];
    for d in bad {
        let mut f = frame(CLUSTER, NodeId(0xbad), &[Message::CrdtDelta(d)]);
        target.handle_datagram(now, attacker, &mut f);
    }
    assert_eq!(target.crdt_store().state_hash(), before);
    assert_eq!(target.stats().crdt_rejected, rejected + 5);
    assert_eq!(target.crdt_get(b"k").unwrap().counter(), Some(7));
    // A value too large for a datagram is refused at the source.
    let huge = vec![0u8; 1000];
    let mut refused = 0;
    for i in 0..4u8 {
        let mut elem = huge.clone();
        elem[0] = i;
        if target
            .crdt_update(now, b"big", Kind::AWSet, &Op::Add(elem))
            .is_err()
        {
            refused += 1;
        }
    }
    assert!(refused >= 1);
    assert!(target
        .crdt_get(b"big")
        .is_none_or(|v| v.encoded_len() <= 1400));
}

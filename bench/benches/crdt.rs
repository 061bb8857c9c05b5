//! CRDT benchmarks: how fast a partition merges deltas, applies operations and absorbs a
//! peer's full state, for every kind of `hearsay::crdt::Value`; and how small a delta is
//! next to the state it updates.
//!
//! Groups:
//! - `merge/<kind>`: join a peer's [`OPS`] deltas, one by one, into a local copy that has
//!   seen none of them (it made [`OPS`] concurrent operations of its own).
//!   `Throughput::Elements(OPS)`: criterion reports deltas merged per second.
//! - `apply/<kind>`: apply [`OPS`] operations to a copy that already holds [`OPS`]
//!   operations' worth of state, keeping each returned delta (as a node does, to gossip it).
//!   `Throughput::Elements(OPS)`: operations per second.
//! - `merge-state/<kind>`: join the peer's whole state into the local copy, as anti-entropy
//!   does; one element per iteration, so the reported time is per state.
//!
//! Before measuring, a table on stderr gives, per kind, the encoded size of the peer's full
//! state after its [`OPS`] operations and the mean and largest encoded size of its deltas.
//!
//! Workloads are seeded: elements and keys come from fixed pools (so removes hit elements
//! that were added, and map keys are updated many times), two replicas (ids 1 and 2) work
//! concurrently, and each of the local replica's deltas reaches the peer at once with
//! probability ½ (so the peer's operations see part of the local history, out of order) and
//! the rest at the end (so the peer's state, whose size the table shows, has a compact
//! context, as after anti-entropy; while deltas are missing, a causal state also carries
//! about two bytes per missing dot).

use std::hint::black_box;

use criterion::{criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hearsay::crdt::{Actor, Kind, Op, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Operations each replica makes: the deltas merged and the operations applied per
/// iteration.
const OPS: usize = 1_000;

/// Seed of every workload.
const SEED: u64 = 0x6372_6474_2121;

/// Distinct set elements (and map keys ×4): removes find something to remove.
const ELEMENTS: u32 = 512;

/// A random operation of `kind` (maps hold counters, sets and registers).
fn random_op(kind: Kind, rng: &mut SmallRng) -> Op {
    let element =
        |rng: &mut SmallRng| format!("element:{:04}", rng.random_range(0..ELEMENTS)).into_bytes();
    let payload = |rng: &mut SmallRng| format!("value-{:08x}", rng.random::<u32>()).into_bytes();
    match kind {
        Kind::GCounter => Op::Incr(rng.random_range(1..10)),
        Kind::PNCounter if rng.random_bool(0.3) => Op::Decr(rng.random_range(1..10)),
        Kind::PNCounter => Op::Incr(rng.random_range(1..10)),
        Kind::AWSet if rng.random_bool(0.3) => Op::Remove(element(rng)),
        Kind::AWSet => Op::Add(element(rng)),
        Kind::MVRegister => Op::Assign(payload(rng)),
        Kind::LwwRegister => Op::Write(payload(rng)),
        Kind::EWFlag if rng.random_bool(0.5) => Op::Disable,
        Kind::EWFlag => Op::Enable,
        Kind::ORMap => {
            let key = format!("key:{:03}", rng.random_range(0..ELEMENTS / 4)).into_bytes();
            if rng.random_bool(0.1) {
                return Op::RemoveKey(key);
            }
            let (kind, op) = match rng.random_range(0..3) {
                0 => (Kind::GCounter, Op::Incr(rng.random_range(1..10))),
                1 => (Kind::AWSet, Op::Add(element(rng))),
                _ => (Kind::LwwRegister, Op::Write(payload(rng))),
            };
            Op::Update {
                key,
                kind,
                op: Box::new(op),
            }
        }
    }
}

/// Two replicas after [`OPS`] concurrent operations each.
struct Workload {
    /// The local replica's state.
    local: Value,
    /// Its actor, to apply more operations.
    actor: Actor,
    /// The peer's state.
    peer: Value,
    /// The peer's deltas, none of them seen by the local replica.
    peer_deltas: Vec<Value>,
    /// Further operations to apply locally.
    more_ops: Vec<Op>,
}

fn workload(kind: Kind) -> Workload {
    let mut rng = SmallRng::seed_from_u64(SEED ^ u64::from(kind.as_u8()));
    let mut actor = Actor { id: 1, lamport: 0 };
    let mut peer_actor = Actor { id: 2, lamport: 0 };
    let mut local = Value::new(kind);
    let mut peer = Value::new(kind);
    let mut peer_deltas = Vec::with_capacity(OPS);
    let mut late = Vec::new();
    for _ in 0..OPS {
        let op = random_op(kind, &mut rng);
        let d = local.apply(&mut actor, &op).expect("valid op");
        if rng.random_bool(0.5) {
            peer.join(&d).expect("same kind");
        } else {
            late.push(d);
        }
        let op = random_op(kind, &mut rng);
        peer_deltas.push(peer.apply(&mut peer_actor, &op).expect("valid op"));
    }
    // Anti-entropy catches the peer up on the rest, closing the gaps in its context.
    for d in &late {
        peer.join(d).expect("same kind");
    }
    let more_ops = (0..OPS).map(|_| random_op(kind, &mut rng)).collect();
    Workload {
        local,
        actor,
        peer,
        peer_deltas,
        more_ops,
    }
}

/// The size table: full state against deltas, per kind.
fn print_sizes(loads: &[(Kind, Workload)]) {
    eprintln!("\nEncoded sizes after {OPS} operations per replica (bytes)");
    eprintln!(
        "{:<12} {:>10} {:>11} {:>10} {:>12}",
        "kind", "full state", "delta mean", "delta max", "state/delta"
    );
    for (kind, w) in loads {
        let full = w.peer.encoded_len();
        let sizes: Vec<usize> = w.peer_deltas.iter().map(Value::encoded_len).collect();
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
        let max = sizes.iter().copied().max().unwrap_or(0);
        eprintln!(
            "{:<12} {:>10} {:>11.1} {:>10} {:>12.0}",
            kind.name(),
            full,
            mean,
            max,
            full as f64 / mean.max(1.0)
        );
    }
    eprintln!();
}

fn crdt(c: &mut Criterion) {
    let loads: Vec<(Kind, Workload)> = Kind::ALL.into_iter().map(|k| (k, workload(k))).collect();
    print_sizes(&loads);

    // Check once, outside the measurement, that deltas and state merge to the same value.
    for (kind, w) in &loads {
        let mut by_deltas = w.local.clone();
        for d in &w.peer_deltas {
            by_deltas.join(d).expect("same kind");
        }
        let mut by_state = w.local.clone();
        by_state.join(&w.peer).expect("same kind");
        assert_eq!(
            by_deltas, by_state,
            "{kind:?}: deltas and state merge alike"
        );
    }

    let mut g = c.benchmark_group("merge");
    for (kind, w) in &loads {
        g.throughput(Throughput::Elements(w.peer_deltas.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter_batched_ref(
                || w.local.clone(),
                |local| {
                    for d in &w.peer_deltas {
                        black_box(local.join(black_box(d)).ok());
                    }
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();

    let mut g = c.benchmark_group("apply");
    for (kind, w) in &loads {
        g.throughput(Throughput::Elements(w.more_ops.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter_batched_ref(
                || {
                    (
                        w.local.clone(),
                        w.actor,
                        Vec::with_capacity(w.more_ops.len()),
                    )
                },
                |(local, actor, deltas)| {
                    for op in &w.more_ops {
                        if let Ok(d) = local.apply(actor, black_box(op)) {
                            deltas.push(d);
                        }
                    }
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();

    let mut g = c.benchmark_group("merge-state");
    for (kind, w) in &loads {
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter_batched_ref(
                || w.local.clone(),
                |local| black_box(local.join(black_box(&w.peer)).ok()),
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

// `criterion_group!` expands to an undocumented `pub fn`; keep it out of the crate root.
#[allow(missing_docs)]
mod entry {
    use super::{crdt, Criterion};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        // An iteration is a thousand joins or operations (tens of microseconds to a few
        // milliseconds): short measurements settle (about a minute for the 21 benchmarks).
        config = Criterion::default()
            .warm_up_time(std::time::Duration::from_millis(500))
            .measurement_time(std::time::Duration::from_secs(2));
        targets = crdt
    }
}
criterion_main!(entry::benches);

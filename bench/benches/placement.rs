//! Placement benchmarks: lookup cost and snapshot build cost of every Hearsay scheme, side
//! by side with peer crates from crates.io that implement the same algorithm.
//!
//! Groups (see `bench/README.md` for how to read and run them):
//! - `lookup/<scheme>`: per-lookup time over N members for every entry of
//!   [`Scheme::all`], measured through the concrete type (the `<scheme>` row) and through
//!   `Box<dyn Placement>` from [`Scheme::build`] (the `<scheme>-dyn` row), plus peers;
//!   `lookup/ring` also has the plain binary search over the same ring points
//!   (`ring-binary-search`).
//! - `lookup/ring-bytes`: the ring group again with 16-byte string keys, to show what key
//!   hashing costs next to the ring search.
//! - `build/<scheme>`: time to build one snapshot from a member list, plus peers that have a
//!   build step.
//!
//! Every lookup iteration resolves [`BATCH`] keys; `Throughput::Elements(BATCH)` makes
//! criterion report lookups per second, i.e. per-lookup time. The lookups of a batch are
//! independent, so the figure is the reciprocal throughput of a core issuing lookups back to
//! back (what a router does), not the latency of one isolated, cache-cold lookup.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{
    criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use hearsay::placement::{
    BoundedLoad, Jump, Ketama, Key, KeyHasher, Maglev, Memento, Modulo, MultiProbe, Node,
    Placement, Rendezvous, Ring, Scheme,
};
use hearsay_bench::{
    byte_keys, maglev_capacity, member_list, u64_keys, KeyCursor, BATCH, BUILD_NODES, BYTE_KEY_LEN,
    KEY_POOL, KEY_SEED, LOOKUP_NODES,
};

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// std's SipHash-1-3 with fixed zero keys. Peers that take a `BuildHasher` get this rather
/// than their default `RandomState` (the same algorithm with random keys) so that their
/// layout, and hence their numbers, are the same from run to run.
type FixedSipHash = BuildHasherDefault<DefaultHasher>;

/// The two Maglev peers allocate a full permutation table per member while building
/// (N × M words with M ≈ 100·N: 0.8 GB at N = 1000, 20 GB at N = 5000), so they are measured
/// only up to this N. Hearsay's Maglev does not materialise the permutations.
const PEER_MAGLEV_MAX_NODES: usize = 1_000;

/// Keys checked for agreement between the concrete and the `dyn` placement (and between
/// `locate` and `locate_binary_search`) before measuring.
const CHECKED_KEYS: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Measuring helpers

/// Measure `lookup` over batches of `keys`; the benchmark is `name/n` in `g`.
fn bench_lookups<K, F>(g: &mut Group<'_>, name: &str, n: usize, keys: &[K], lookup: F)
where
    F: Fn(&K) -> usize,
{
    g.bench_function(BenchmarkId::new(name, n), |b| {
        let mut cursor = KeyCursor::new(keys, BATCH);
        b.iter(|| {
            // black_box on the batch hides the keys from the optimiser (no hoisting work out of
            // the timed loop); black_box on each owner keeps every lookup from being dropped.
            for k in black_box(cursor.next_batch()) {
                black_box(lookup(k));
            }
        });
    });
}

/// Measure a placement through its concrete type: generic, so `hash_key` and `locate` are
/// statically dispatched and inlined exactly as in a router that knows its scheme.
fn bench_placement<P: Placement>(g: &mut Group<'_>, name: &str, keys: &[u64], p: &P) {
    bench_lookups(g, name, p.nodes().len(), keys, |&k| {
        p.locate(p.hash_key(Key::U64(k)))
    });
}

/// Measure one build; the output is dropped outside the timed region.
///
/// `PerIteration` batches keep one snapshot alive at a time (a ring of 10 000 members holds
/// 1.6 M points) at the cost of one timer read per build, which is noise next to builds of
/// microseconds and more.
fn bench_build<I, O>(
    g: &mut Group<'_>,
    name: &str,
    n: usize,
    mut setup: impl FnMut() -> I,
    mut build: impl FnMut(I) -> O,
) {
    g.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter_batched(&mut setup, &mut build, BatchSize::PerIteration);
    });
}

/// Panic unless the concrete placement and the `Scheme::build` one agree: the concrete
/// constructors below must be called exactly as `Scheme::build` calls them, or the `<scheme>`
/// and `<scheme>-dyn` rows would measure different things.
fn assert_same(concrete: &dyn Placement, built: &dyn Placement, keys: &[u64]) {
    for &k in &keys[..CHECKED_KEYS] {
        assert_eq!(
            concrete.lookup(Key::U64(k)).id,
            built.lookup(Key::U64(k)).id,
            "{}: concrete and Scheme::build placements disagree on key {k}",
            built.scheme()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Peer crates, each configured like the Hearsay scheme it is compared with.

/// Member indexes `0..n` as the peers' node type; rings that borrow their nodes borrow these.
fn peer_ids(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

/// A virtual node of the `hashring` crate, which has no replica count: a member with P points
/// is P entries `(member, 0..P)`, each placed at the SipHash of the pair.
#[derive(Copy, Clone, Debug, Hash, PartialEq)]
struct VNode {
    node: u32,
    replica: u32,
}

fn hashring_vnodes(n: usize, points: u32) -> Vec<VNode> {
    (0..n as u32)
        .flat_map(|node| (0..points).map(move |replica| VNode { node, replica }))
        .collect()
}

/// `hashring` 0.3: a sorted `Vec` of (hash, vnode) searched with `binary_search_by`; keys and
/// vnodes hashed with zero-keyed SipHash-2-4 (its `DefaultHashBuilder`, already
/// deterministic). `points` vnodes per member, as Hearsay's ring.
fn build_hashring(vnodes: Vec<VNode>) -> hashring::HashRing<VNode> {
    let mut ring = hashring::HashRing::new();
    ring.batch_add(vnodes);
    ring
}

/// `hash-rings` 1.1 `consistent::Ring`: a `BTreeMap<u64, &node>` with `points` replicas per
/// member, searched with `range(hash..)`; SipHash-1-3 with fixed keys.
fn build_hash_rings_ring(
    ids: &[u32],
    points: u32,
) -> hash_rings::consistent::Ring<'_, u32, FixedSipHash> {
    let mut ring = hash_rings::consistent::Ring::with_hasher(FixedSipHash::default());
    for id in ids {
        ring.insert_node(id, points as usize);
    }
    ring
}

/// `hash-rings` 1.1 `rendezvous::Ring` with one replica (score) per member: plain HRW, O(N)
/// SipHash-1-3 combinations per lookup over a `HashMap` of members.
fn build_hash_rings_rendezvous(ids: &[u32]) -> hash_rings::rendezvous::Ring<'_, u32, FixedSipHash> {
    let mut ring = hash_rings::rendezvous::Ring::with_hasher(FixedSipHash::default());
    for id in ids {
        ring.insert_node(id, 1);
    }
    ring
}

/// `hash-rings` 1.1 `weighted_rendezvous::Ring`, every weight 1.0: the logarithmic method
/// (`-w / ln(h)`), O(N) per lookup, as Hearsay's weighted rendezvous.
fn build_hash_rings_weighted(
    ids: &[u32],
) -> hash_rings::weighted_rendezvous::Ring<'_, u32, FixedSipHash> {
    let mut ring = hash_rings::weighted_rendezvous::Ring::with_hasher(FixedSipHash::default());
    for id in ids {
        ring.insert_node(id, 1.0);
    }
    ring
}

/// `hash-rings` 1.1 `mpc::Ring`: multi-probe over a `BTreeMap` of one point per member,
/// `probes` SipHash-derived probes per key (set to Hearsay's default).
fn build_hash_rings_mpc(ids: &[u32], probes: u32) -> hash_rings::mpc::Ring<'_, u32, FixedSipHash> {
    let mut ring = hash_rings::mpc::Ring::with_hasher(FixedSipHash::default(), u64::from(probes));
    for id in ids {
        ring.insert_node(id);
    }
    ring
}

/// `mpchash` 2: multi-probe over a `crossbeam_skiplist::SkipMap`, xxh3 double hashing. Its
/// probe count is fixed at `mpchash::DEFAULT_PROBE_COUNT` (23; Hearsay's default is 21) and
/// cannot be configured.
fn build_mpchash(n: usize) -> mpchash::HashRing<u32> {
    let ring = mpchash::HashRing::new();
    for id in 0..n as u32 {
        ring.add(id);
    }
    ring
}

/// `anchorhash` 0.2 with capacity = N (no removed buckets, the state Memento is in after a
/// fresh build), fixed-key SipHash-1-3 instead of its default `RandomState`. Its result goes
/// through a bucket → resource `HashMap`, which is part of what a user pays per lookup.
fn build_anchorhash(n: usize) -> anchorhash::AnchorHash<u64, u32, FixedSipHash> {
    let capacity = u16::try_from(n).expect("anchorhash holds at most 65535 resources");
    anchorhash::Builder::with_hasher(FixedSipHash::default())
        .with_resources(0..n as u32)
        .build(capacity)
}

/// `maglev` 0.2 with the same table size as Hearsay's Maglev (first prime ≥
/// max(100·N, 65537)); keys and members hashed with std's SipHash-1-3.
fn build_maglev_crate(ids: &[u32]) -> maglev::Maglev<u32> {
    maglev::Maglev::with_capacity(ids.iter().copied(), maglev_capacity(ids.len()))
}

/// `hash-rings` 1.1 `maglev::Ring` with the same table size; its own fixed-key SipHash-2-4.
fn build_hash_rings_maglev(ids: &[u32]) -> hash_rings::maglev::Ring<'_, u32> {
    hash_rings::maglev::Ring::with_capacity_hint(ids.iter().collect(), maglev_capacity(ids.len()))
}

/// The peers compared with `scheme`, measured on `n` members and the same keys.
fn lookup_peers(g: &mut Group<'_>, scheme: Scheme, n: usize, keys: &[u64]) {
    use maglev::ConsistentHasher as _;
    let ids = peer_ids(n);
    match scheme {
        Scheme::Ring { points_per_node } => {
            let ring = build_hashring(hashring_vnodes(n, points_per_node));
            bench_lookups(g, "peer-hashring", n, keys, |k| {
                ring.get(k).map_or(usize::MAX, |v| v.node as usize)
            });
            drop(ring);
            let ring = build_hash_rings_ring(&ids, points_per_node);
            bench_lookups(g, "peer-hash-rings", n, keys, |k| {
                *ring.get_node(k) as usize
            });
        }
        Scheme::Jump => {
            // SipHash-1-3 keyed from our seed; the crate's `new()` would draw random keys.
            let jump = jumphash::JumpHasher::new_with_keys(KEY_SEED, 0);
            let buckets = n as u32;
            bench_lookups(g, "peer-jumphash", n, keys, |k| {
                jump.slot(k, buckets) as usize
            });
            let ring = hash_rings::jump::Ring::with_hasher(FixedSipHash::default(), buckets);
            bench_lookups(g, "peer-hash-rings", n, keys, |k| ring.get_node(k) as usize);
        }
        Scheme::Rendezvous { weighted: false } => {
            let ring = build_hash_rings_rendezvous(&ids);
            bench_lookups(g, "peer-hash-rings", n, keys, |k| {
                *ring.get_node(k) as usize
            });
        }
        Scheme::Rendezvous { weighted: true } => {
            let ring = build_hash_rings_weighted(&ids);
            bench_lookups(g, "peer-hash-rings", n, keys, |k| {
                *ring.get_node(k) as usize
            });
        }
        Scheme::Maglev { .. } if n <= PEER_MAGLEV_MAX_NODES => {
            let m = build_maglev_crate(&ids);
            bench_lookups(g, "peer-maglev", n, keys, |k| {
                m.get(k).map_or(usize::MAX, |&id| id as usize)
            });
            drop(m);
            let ring = build_hash_rings_maglev(&ids);
            bench_lookups(g, "peer-hash-rings", n, keys, |k| {
                *ring.get_node(k) as usize
            });
        }
        Scheme::MultiProbe { probes } => {
            let ring = build_mpchash(n);
            bench_lookups(g, "peer-mpchash", n, keys, |k| {
                ring.node(k).map_or(usize::MAX, |t| *t.node() as usize)
            });
            drop(ring);
            let ring = build_hash_rings_mpc(&ids, probes);
            bench_lookups(g, "peer-hash-rings", n, keys, |k| {
                *ring.get_node(k) as usize
            });
        }
        Scheme::Memento => {
            let anchor = build_anchorhash(n);
            bench_lookups(g, "peer-anchorhash", n, keys, |&k| {
                anchor.get_resource(k).map_or(usize::MAX, |&id| id as usize)
            });
        }
        Scheme::Modulo | Scheme::Ketama | Scheme::Maglev { .. } | Scheme::BoundedLoad { .. } => {}
    }
}

/// Build-time peers of `scheme` (those with a build step: jump hashers have none).
fn build_peers(g: &mut Group<'_>, scheme: Scheme, n: usize) {
    let ids = peer_ids(n);
    let ids = ids.as_slice();
    match scheme {
        Scheme::Ring { points_per_node } => {
            // The vnode list is the input (as our member list is); building it is not timed.
            bench_build(
                g,
                "peer-hashring",
                n,
                || hashring_vnodes(n, points_per_node),
                build_hashring,
            );
            bench_build(
                g,
                "peer-hash-rings",
                n,
                || (),
                |()| build_hash_rings_ring(black_box(ids), points_per_node),
            );
        }
        Scheme::Rendezvous { weighted: false } => {
            bench_build(
                g,
                "peer-hash-rings",
                n,
                || (),
                |()| build_hash_rings_rendezvous(black_box(ids)),
            );
        }
        Scheme::Rendezvous { weighted: true } => {
            bench_build(
                g,
                "peer-hash-rings",
                n,
                || (),
                |()| build_hash_rings_weighted(black_box(ids)),
            );
        }
        Scheme::Maglev { .. } if n <= PEER_MAGLEV_MAX_NODES => {
            bench_build(
                g,
                "peer-maglev",
                n,
                || (),
                |()| build_maglev_crate(black_box(ids)),
            );
            bench_build(
                g,
                "peer-hash-rings",
                n,
                || (),
                |()| build_hash_rings_maglev(black_box(ids)),
            );
        }
        Scheme::MultiProbe { probes } => {
            bench_build(
                g,
                "peer-mpchash",
                n,
                || (),
                |()| build_mpchash(black_box(n)),
            );
            bench_build(
                g,
                "peer-hash-rings",
                n,
                || (),
                |()| build_hash_rings_mpc(black_box(ids), probes),
            );
        }
        Scheme::Memento => {
            bench_build(
                g,
                "peer-anchorhash",
                n,
                || (),
                |()| build_anchorhash(black_box(n)),
            );
        }
        Scheme::Modulo
        | Scheme::Ketama
        | Scheme::Jump
        | Scheme::Maglev { .. }
        | Scheme::BoundedLoad { .. } => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Hearsay's schemes

/// Lookups of one scheme over `nodes`: concrete type, `dyn` from `Scheme::build`, baselines.
fn lookup_scheme(g: &mut Group<'_>, scheme: Scheme, nodes: &[Node], keys: &[u64]) {
    let name = scheme.name();
    let hasher = KeyHasher::new(KEY_SEED);
    let built = scheme.build(nodes, KEY_SEED).expect("Scheme::build");
    // Each arm constructs the scheme's concrete type with the parameters `Scheme::build`
    // passes, so that `bench_placement` is monomorphised for it.
    match scheme {
        Scheme::Modulo => {
            let p = Modulo::new(nodes, hasher).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::Ring { points_per_node } => {
            let p = Ring::new(nodes, hasher, points_per_node).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
            for &k in &keys[..CHECKED_KEYS] {
                let h = p.hash_key(Key::U64(k));
                assert_eq!(p.locate_binary_search(h), p.locate(h), "baseline disagrees");
            }
            bench_lookups(g, "ring-binary-search", nodes.len(), keys, |&k| {
                p.locate_binary_search(p.hash_key(Key::U64(k)))
            });
        }
        Scheme::Ketama => {
            let p = Ketama::new(nodes).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::Jump => {
            let p = Jump::new(nodes, hasher).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::Rendezvous { weighted } => {
            let p = Rendezvous::new(nodes, hasher, weighted).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::Maglev { table_size } => {
            let p = Maglev::new(nodes, hasher, table_size).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::MultiProbe { probes } => {
            let p = MultiProbe::new(nodes, hasher, probes).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::BoundedLoad {
            epsilon,
            points_per_node,
        } => {
            let p = BoundedLoad::new(nodes, hasher, epsilon, points_per_node).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
        Scheme::Memento => {
            let p = Memento::new(nodes, hasher).expect("build");
            assert_same(&p, &*built, keys);
            bench_placement(g, name, keys, &p);
        }
    }
    // What the engine's router pays: a virtual call for `hash_key` and one for `locate`, no
    // inlining across them.
    let built: &dyn Placement = &*built;
    bench_lookups(g, &format!("{name}-dyn"), nodes.len(), keys, |&k| {
        built.locate(built.hash_key(Key::U64(k)))
    });
}

/// Build of one scheme from `nodes` through its concrete constructor (`Scheme::build` adds
/// only a `Box`).
fn build_scheme(g: &mut Group<'_>, scheme: Scheme, nodes: &[Node]) {
    let name = scheme.name();
    let n = nodes.len();
    let hasher = KeyHasher::new(KEY_SEED);
    let members = || black_box(nodes);
    match scheme {
        Scheme::Modulo => bench_build(g, name, n, || (), |()| Modulo::new(members(), hasher)),
        Scheme::Ring { points_per_node } => bench_build(
            g,
            name,
            n,
            || (),
            |()| Ring::new(members(), hasher, points_per_node),
        ),
        Scheme::Ketama => bench_build(g, name, n, || (), |()| Ketama::new(members())),
        Scheme::Jump => bench_build(g, name, n, || (), |()| Jump::new(members(), hasher)),
        Scheme::Rendezvous { weighted } => bench_build(
            g,
            name,
            n,
            || (),
            |()| Rendezvous::new(members(), hasher, weighted),
        ),
        Scheme::Maglev { table_size } => bench_build(
            g,
            name,
            n,
            || (),
            |()| Maglev::new(members(), hasher, table_size),
        ),
        Scheme::MultiProbe { probes } => bench_build(
            g,
            name,
            n,
            || (),
            |()| MultiProbe::new(members(), hasher, probes),
        ),
        Scheme::BoundedLoad {
            epsilon,
            points_per_node,
        } => bench_build(
            g,
            name,
            n,
            || (),
            |()| BoundedLoad::new(members(), hasher, epsilon, points_per_node),
        ),
        Scheme::Memento => bench_build(g, name, n, || (), |()| Memento::new(members(), hasher)),
    }
}

// ---------------------------------------------------------------------------------------------
// Groups

fn lookup(c: &mut Criterion) {
    let keys = u64_keys(KEY_POOL, KEY_SEED);
    for scheme in Scheme::all() {
        let mut g = c.benchmark_group(format!("lookup/{}", scheme.name()));
        g.throughput(Throughput::Elements(BATCH as u64));
        if matches!(scheme, Scheme::Rendezvous { .. }) {
            // O(N) per lookup: a batch at N = 10 000 takes milliseconds (the peer's, a few
            // hundred), so take equal-sized samples rather than criterion's linear ramp, which
            // would need 55× as many iterations as samples.
            g.sampling_mode(SamplingMode::Flat).sample_size(10);
        }
        for n in LOOKUP_NODES {
            let nodes = member_list(n);
            lookup_scheme(&mut g, scheme, &nodes, &keys);
            lookup_peers(&mut g, scheme, n, &keys);
        }
        g.finish();
    }
}

fn lookup_ring_bytes(c: &mut Criterion) {
    let keys = byte_keys(KEY_POOL, KEY_SEED);
    let Some(scheme @ Scheme::Ring { points_per_node }) = Scheme::all()
        .into_iter()
        .find(|s| matches!(s, Scheme::Ring { .. }))
    else {
        unreachable!("Scheme::all() lists the ring");
    };
    let mut g = c.benchmark_group(format!("lookup/{}-bytes", scheme.name()));
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in LOOKUP_NODES {
        let nodes = member_list(n);
        let p = Ring::new(&nodes, KeyHasher::new(KEY_SEED), points_per_node).expect("build");
        bench_lookups(&mut g, "ring", n, &keys, |k: &[u8; BYTE_KEY_LEN]| {
            p.locate(p.hash_key(Key::Bytes(k)))
        });
        bench_lookups(&mut g, "ring-binary-search", n, &keys, |k| {
            p.locate_binary_search(p.hash_key(Key::Bytes(k)))
        });
        drop(p);
        // The peers hash `&[u8]` through `Hash`, which also feeds the length; same 16 bytes.
        let ring = build_hashring(hashring_vnodes(n, points_per_node));
        bench_lookups(&mut g, "peer-hashring", n, &keys, |k| {
            ring.get(&&k[..]).map_or(usize::MAX, |v| v.node as usize)
        });
        drop(ring);
        let ids = peer_ids(n);
        let ring = build_hash_rings_ring(&ids, points_per_node);
        bench_lookups(&mut g, "peer-hash-rings", n, &keys, |k| {
            *ring.get_node(&&k[..]) as usize
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    for scheme in Scheme::all() {
        let mut g = c.benchmark_group(format!("build/{}", scheme.name()));
        // Builds take up to a second (1.6 M ring points, 1 M Maglev slots, and more for some
        // peers); ten samples keep a full run within minutes and still show the scaling.
        // Throughput in members, so the report also gives the cost per member.
        g.sample_size(10);
        for n in BUILD_NODES {
            let nodes = member_list(n);
            g.throughput(Throughput::Elements(n as u64));
            build_scheme(&mut g, scheme, &nodes);
            build_peers(&mut g, scheme, n);
        }
        g.finish();
    }
}

// `criterion_group!` expands to an undocumented `pub fn`; keep it out of the crate root.
#[allow(missing_docs)]
mod entry {
    use super::{build, lookup, lookup_ring_bytes, Criterion};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        // Short warm-up and measurement by default so a full run stays near 12 minutes on two
        // cores; lookups are tight loops whose estimates settle quickly. Command-line
        // `--warm-up-time` / `--measurement-time` override these.
        config = Criterion::default()
            .warm_up_time(std::time::Duration::from_millis(500))
            .measurement_time(std::time::Duration::from_millis(1500));
        targets = lookup, lookup_ring_bytes, build
    }
}
criterion_main!(entry::benches);

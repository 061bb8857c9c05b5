//! Multi-probe consistent hashing (Appleton & O'Reilly, 2015): one point per node on the
//! ring, several probes per key, the probe that lands closest before a point wins.

use super::{
    nodes_memory, validate_nodes, Key, KeyHasher, Node, Placement, PlacementError, Scheme,
};

/// Probes per key by default: 1 + 1/ε for ε = 0.05, the paper's peak-to-mean of 1.05.
pub(crate) const DEFAULT_PROBES: u32 = 21;

/// Points read without a branch per bucket before falling back to a loop: with at most one
/// point per bucket on average, a bucket holds more than 4 with probability < 0.4%.
const SCAN: usize = 4;

/// Bits of the bucket index are capped so the index stays small (64 MiB) for absurd N; past
/// 2²⁴ nodes buckets just hold more points and the fallback loop runs more often.
const MAX_BUCKET_BITS: u32 = 24;

/// Multi-probe consistent hashing.
///
/// Appleton & O'Reilly, "Multi-probe consistent hashing" (arXiv:1505.00062, 2015). Each node
/// has a single point on a 64-bit ring (the hash of its name). A key is hashed `k` times; each
/// probe finds the first point at or after it (clockwise), and the key goes to the node whose
/// point is nearest to its probe. One point per node on a ring leaves node arcs very unequal
/// (the largest about `ln N` times the mean); taking the best of `k` probes favours small
/// gaps just enough that every node's share is close to `1/N`: the paper proves a
/// peak-to-average load of `1 + ε` with `k = 1 + 1/ε` probes, so the default `k = 21` is
/// ε = 0.05. Removing a node only lengthens the distances that ended at its point, so only
/// its own keys move; adding one moves keys only to it.
///
/// **Probes.** Probe `i` of a key hash `h` is `rehash(h, i)` for `i` in `0..k` (splitmix64's
/// finaliser over `h + i·γ`): independent-looking positions, which is what the paper's
/// analysis assumes, for two multiplies a probe. Double hashing (`h + i·d`, one addition a
/// probe) was measured and rejected: an arithmetic progression with a step near `p/q` of the
/// ring for a small `q` bunches its probes into `q` clusters, so a sizeable fraction of keys
/// effectively gets fewer probes; at N = 100, k = 21 over 10M keys it gave peak-to-mean
/// 1.07–1.13 across six hasher seeds against 1.03–1.06 for rehashed probes. The probe mixes are
/// independent of each other, so the CPU overlaps them with the searches. The default replica
/// strategy draws key hashes `rehash(h, a)`, whose probes `rehash(rehash(h, a), i)` share no
/// structure with the primary's.
///
/// **Search.** The points are a sorted array indexed by a bucket table over the top `b` bits
/// of the ring (`2ᵇ ≥ N`, so at most one point per bucket on average): `table[j]` is the first
/// point at or after bucket `j`'s start. A probe reads its bucket's start and counts, without
/// branching, how many of the next `SCAN` points are below it (the point array carries
/// `SCAN` sentinel entries so the reads stay in bounds); only an overfull bucket falls back to
/// a loop. That is two dependent memory reads per probe instead of `log₂ N` for a binary
/// search, and the `k` probes are independent, so the CPU overlaps their cache misses.
/// Memory is 8 bytes of point, 4 of owner and at most 8 of table per node.
///
/// Ties (two probes exactly as far from their points) go to the earlier probe; points at the
/// same position are ordered by node id, so placement depends only on names and ids, not on
/// the order of the member list.
///
/// **Good at:** O(N) memory with one point per node (a ring needs hundreds per node for the
/// same balance), minimal disruption, fast rebuilds.
/// **Bad at:** every lookup does `k` searches, about `k` times a one-point ring's work;
/// weights are not supported; only the *peak* is bounded: a node whose point closely follows
/// another's has a tiny arc and gets a share of about `k` times it, so the lightest nodes can
/// get far less than the mean (measured at N = 100, k = 21: lightest node 0.02–0.42 of the
/// mean over ten hasher seeds, while the median node carries 1.02–1.05).
#[derive(Clone, Debug)]
pub struct MultiProbe {
    nodes: Vec<Node>,
    hasher: KeyHasher,
    probes: u32,
    /// Ring positions, sorted, followed by `SCAN` sentinels of `u64::MAX`.
    points: Vec<u64>,
    /// Index into `nodes` of the node owning each point (same order as `points`).
    owners: Vec<u32>,
    /// First point index at or after the start of each bucket.
    table: Vec<u32>,
    /// `64 − b`: a position's bucket is `position >> shift`.
    shift: u32,
}

/// The sorted point array and its bucket table, as [`MultiProbe`] stores them.
struct RingIndex {
    points: Vec<u64>,
    table: Vec<u32>,
    shift: u32,
}

impl RingIndex {
    /// Index sorted `positions`.
    fn new(positions: &[u64]) -> Self {
        debug_assert!(positions.windows(2).all(|w| w[0] <= w[1]));
        let n = positions.len();
        let bits = (n.next_power_of_two().trailing_zeros()).clamp(1, MAX_BUCKET_BITS);
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut table = Vec::with_capacity(buckets);
        let mut i = 0usize;
        for b in 0..buckets as u64 {
            let start = b << shift;
            while i < n && positions[i] < start {
                i += 1;
            }
            table.push(i as u32);
        }
        let mut points = Vec::with_capacity(n + SCAN);
        points.extend_from_slice(positions);
        points.resize(n + SCAN, u64::MAX);
        Self {
            points,
            table,
            shift,
        }
    }
}

/// Index of the first point at or after `probe`, wrapping to 0 past the last point.
/// `points` holds `len` sorted positions then `SCAN` sentinels of `u64::MAX`.
#[inline(always)]
fn successor(points: &[u64], len: usize, table: &[u32], shift: u32, probe: u64) -> usize {
    let start = table[(probe >> shift) as usize] as usize;
    // Points of later buckets and the sentinels are above the probe, so they never count.
    let window = &points[start..start + SCAN];
    let mut i = start;
    for &p in window {
        i += usize::from(p < probe);
    }
    // Only an overfull bucket gets here with points still below; the sentinel stops it.
    while points[i] < probe {
        i += 1;
    }
    if i >= len {
        0
    } else {
        i
    }
}

impl MultiProbe {
    /// Build over `nodes` (weights are ignored) with `probes` probes per key.
    pub fn new(nodes: &[Node], hasher: KeyHasher, probes: u32) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        if probes == 0 {
            return Err(PlacementError::InvalidParameter {
                name: "probes",
                reason: "must be at least 1".to_string(),
            });
        }
        let mut ring: Vec<(u64, super::NodeId, u32)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (hasher.hash_point(&n.name, 0), n.id, i as u32))
            .collect();
        ring.sort_unstable();
        let positions: Vec<u64> = ring.iter().map(|&(p, _, _)| p).collect();
        let owners = ring.iter().map(|&(_, _, i)| i).collect();
        let RingIndex {
            points,
            table,
            shift,
        } = RingIndex::new(&positions);
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher,
            probes,
            points,
            owners,
            table,
            shift,
        })
    }

    /// Probes per key.
    pub fn probes(&self) -> u32 {
        self.probes
    }
}

impl Placement for MultiProbe {
    fn scheme(&self) -> Scheme {
        Scheme::MultiProbe {
            probes: self.probes,
        }
    }

    fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    #[inline]
    fn hash_key(&self, key: Key<'_>) -> u64 {
        self.hasher.hash(key)
    }

    #[inline]
    fn locate(&self, hash: u64) -> usize {
        let len = self.owners.len();
        let probe = super::rehash(hash, 0);
        let first = successor(&self.points, len, &self.table, self.shift, probe);
        let mut best_dist = self.points[first].wrapping_sub(probe);
        let mut best = first;
        for i in 1..u64::from(self.probes) {
            let probe = super::rehash(hash, i);
            let at = successor(&self.points, len, &self.table, self.shift, probe);
            let dist = self.points[at].wrapping_sub(probe);
            if dist < best_dist {
                best_dist = dist;
                best = at;
            }
        }
        self.owners[best] as usize
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + nodes_memory(&self.nodes)
            + self.points.capacity() * std::mem::size_of::<u64>()
            + self.owners.capacity() * std::mem::size_of::<u32>()
            + self.table.capacity() * std::mem::size_of::<u32>()
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        Ok(Box::new(Self::new(nodes, self.hasher, self.probes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::*;
    use crate::placement::NodeId;
    use proptest::prelude::*;

    fn build(n: u64, probes: u32) -> MultiProbe {
        MultiProbe::new(&nodes(n), KeyHasher::new(13), probes).unwrap()
    }

    /// The owner by brute force: every probe scans every point.
    fn reference_locate(m: &MultiProbe, hash: u64) -> usize {
        let mut ring: Vec<(u64, NodeId, usize)> = m
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (m.hasher.hash_point(&n.name, 0), n.id, i))
            .collect();
        ring.sort_unstable();
        let mut best: Option<(u64, usize)> = None;
        for i in 0..u64::from(m.probes) {
            let probe = crate::placement::rehash(hash, i);
            let succ = ring
                .iter()
                .find(|&&(p, _, _)| p >= probe)
                .unwrap_or(&ring[0]);
            let dist = succ.0.wrapping_sub(probe);
            if best.is_none_or(|(d, _)| dist < d) {
                best = Some((dist, succ.2));
            }
        }
        best.unwrap().1
    }

    #[test]
    fn rejects_zero_probes_and_bad_member_lists() {
        match MultiProbe::new(&nodes(3), KeyHasher::new(0), 0) {
            Err(PlacementError::InvalidParameter { name, .. }) => assert_eq!(name, "probes"),
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
        assert_eq!(
            MultiProbe::new(&[], KeyHasher::new(0), 21).unwrap_err(),
            PlacementError::NoNodes
        );
    }

    #[test]
    fn balance_within_the_papers_bound() {
        // Appleton & O'Reilly: peak-to-average 1 + ε with k = 1 + 1/ε probes, i.e. 1.05 for
        // k = 21 — a statement about the nodes' shares of the ring. Counting 1M keys adds
        // multinomial noise on top (σ = 1% of the mean per node at N = 100, so ≈ +2.5% on the
        // maximum of 100 nodes, +4% at 4σ). Measured at N = 100, k = 21 over ten hasher seeds:
        // 1.044–1.081 with 1M keys, 1.028–1.060 with 10M keys (so the shares themselves meet
        // the paper's 1.05 within about 1%); 1.073 for this test's seed. Allow 1.10: the
        // paper's 1.05, 1% for the ring draw, 4% of key sampling.
        let m = build(100, DEFAULT_PROBES);
        let ptm = peak_to_mean(&counts(&m, 1_000_000));
        assert!(ptm < 1.10, "peak-to-mean {ptm}");
        // One probe is a plain ring with one point per node, whose largest arc is ≈ ln N ≈ 4.6
        // times the mean (measured 5.7 here): the probes are what buys the balance.
        let one = peak_to_mean(&counts(&build(100, 1), 200_000));
        assert!(one > 2.0, "one-probe peak-to-mean {one}");
    }

    #[test]
    fn removal_moves_only_the_removed_nodes_keys() {
        // Exactly the removed node's keys move. How many that is depends on its share: the
        // shares' mean is 1/N, their upper tail is bounded by the paper's 1 + ε, but the lower
        // tail is long (a node whose point follows another's closely has a tiny arc; measured
        // shares at N = 100 have σ ≈ 0.09–0.17 of the mean). So each removal must move at most
        // 1.10/N plus key-sampling noise (4σ = 0.0013 at 100k keys), and the mean over eight
        // removals must be 1/N within 25% (≈ 4σ of the mean of eight shares).
        const KEYS: u64 = 100_000;
        let all = nodes(100);
        let a = MultiProbe::new(&all, KeyHasher::new(13), DEFAULT_PROBES).unwrap();
        let owners: Vec<NodeId> = (0..KEYS).map(|k| a.lookup(Key::U64(k)).id).collect();
        let mut total = 0.0;
        for gone in (0..100).step_by(13) {
            let mut rest = all.clone();
            let removed = rest.remove(gone).id;
            let b = MultiProbe::new(&rest, KeyHasher::new(13), DEFAULT_PROBES).unwrap();
            let mut moved = 0u64;
            for (k, &before) in owners.iter().enumerate() {
                let after = b.lookup(Key::U64(k as u64)).id;
                if before == removed {
                    assert_ne!(after, removed);
                    moved += 1;
                } else {
                    assert_eq!(before, after, "key {k} moved off surviving node {before}");
                }
            }
            let frac = moved as f64 / KEYS as f64;
            assert!(frac < 0.011 + 0.0013, "removing {removed} moved {frac}");
            total += frac;
        }
        let mean = total / 8.0;
        assert!((mean * 100.0 - 1.0).abs() < 0.25, "mean moved {mean}");
    }

    #[test]
    fn adding_a_node_moves_keys_only_to_it() {
        // The newcomer takes its share: at most 1.10/(N+1) plus sampling noise each, and
        // 1/(N+1) within 25% on average over four different newcomers (as for removal).
        const KEYS: u64 = 100_000;
        let a = build(100, DEFAULT_PROBES);
        let owners: Vec<NodeId> = (0..KEYS).map(|k| a.lookup(Key::U64(k)).id).collect();
        let mut total = 0.0;
        for newcomer in 100..104u64 {
            let mut more = nodes(100);
            more.push(Node::new(newcomer, format!("node-{newcomer}")));
            let b = MultiProbe::new(&more, KeyHasher::new(13), DEFAULT_PROBES).unwrap();
            let mut moved = 0u64;
            for (k, &before) in owners.iter().enumerate() {
                let after = b.lookup(Key::U64(k as u64)).id;
                if before != after {
                    assert_eq!(after, NodeId(newcomer), "key {k} moved between old nodes");
                    moved += 1;
                }
            }
            let frac = moved as f64 / KEYS as f64;
            assert!(
                frac < 1.10 / 101.0 + 0.0013,
                "adding {newcomer} moved {frac}"
            );
            total += frac;
        }
        let mean = total / 4.0;
        assert!((mean * 101.0 - 1.0).abs() < 0.25, "mean moved {mean}");
    }

    #[test]
    fn deterministic_and_independent_of_list_order() {
        let ns = nodes(64);
        let mut shuffled = ns.clone();
        shuffled.reverse();
        shuffled.swap(3, 40);
        let a = MultiProbe::new(&ns, KeyHasher::new(2), 21).unwrap();
        let a2 = MultiProbe::new(&ns, KeyHasher::new(2), 21).unwrap();
        let b = MultiProbe::new(&shuffled, KeyHasher::new(2), 21).unwrap();
        for k in 0..20_000u64 {
            let key = Key::U64(k);
            assert_eq!(a.locate(a.hash_key(key)), a2.locate(a2.hash_key(key)));
            assert_eq!(a.lookup(key).id, b.lookup(key).id);
        }
    }

    #[test]
    fn matches_brute_force() {
        // 1 000 nodes put some buckets over the branch-free window, exercising the fallback.
        for (n, probes) in [(1, 21), (2, 3), (100, 21), (1_000, 21), (1_000, 1)] {
            let m = build(n, probes);
            for k in 0..2_000u64 {
                let h = m.hash_key(Key::U64(k));
                assert_eq!(m.locate(h), reference_locate(&m, h), "n {n} k {k}");
            }
            for h in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
                assert!(m.locate(h) < n as usize);
                assert_eq!(m.locate(h), reference_locate(&m, h), "n {n} hash {h:#x}");
            }
        }
    }

    #[test]
    fn successor_handles_crowded_buckets_and_the_wrap() {
        // Everything in bucket 0 (more points than the branch-free window), duplicates, and
        // points at both ends of the ring.
        let positions = [0, 0, 5, 5, 5, 9, 12, 40, 1 << 62, u64::MAX - 1, u64::MAX];
        let idx = RingIndex::new(&positions);
        let len = positions.len();
        let brute = |probe: u64| positions.iter().position(|&p| p >= probe).unwrap_or(0);
        for probe in [
            0,
            1,
            5,
            6,
            9,
            10,
            12,
            13,
            40,
            41,
            1 << 61,
            1 << 62,
            (1 << 62) + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(
                successor(&idx.points, len, &idx.table, idx.shift, probe),
                brute(probe),
                "probe {probe}"
            );
        }
        let single = RingIndex::new(&[77]);
        for probe in [0, 77, 78, u64::MAX] {
            assert_eq!(
                successor(&single.points, 1, &single.table, single.shift, probe),
                0
            );
        }
    }

    #[test]
    fn replicas_are_distinct_with_the_primary_first() {
        let m = build(10, DEFAULT_PROBES);
        let mut out = Vec::with_capacity(10);
        for k in 0..1_000u64 {
            let key = Key::U64(k);
            for n in [1, 3, 10, 12] {
                m.replicas(key, n, &mut out);
                assert_eq!(out.len(), n.min(10));
                assert_eq!(out[0], m.locate(m.hash_key(key)));
                let mut s = out.clone();
                s.sort_unstable();
                s.dedup();
                assert_eq!(s.len(), out.len(), "duplicate replica for key {k}");
            }
        }
    }

    #[test]
    fn reports_its_scheme_and_memory() {
        let m = build(1_000, 7);
        assert_eq!(m.scheme(), Scheme::MultiProbe { probes: 7 });
        assert_eq!(m.probes(), 7);
        // Points (8 bytes), owners (4) and a 1 024-entry table (4 each).
        assert!(m.memory_bytes() >= nodes_memory(m.nodes()) + 12 * 1_000 + 4 * 1_024);
        let b = m.rebuild(&nodes(5)).unwrap();
        assert_eq!(b.scheme(), m.scheme());
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::btree_map(any::<u64>(), "[a-z0-9:.]{0,12}", 1..60).prop_map(|m| {
            m.into_iter()
                .map(|(id, name)| Node::new(id, name))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn prop_locate_matches_brute_force(ns in arb_nodes(), hash in any::<u64>(), probes in 1u32..40) {
            let m = MultiProbe::new(&ns, KeyHasher::new(6), probes).unwrap();
            prop_assert_eq!(m.locate(hash), reference_locate(&m, hash));
        }

        #[test]
        fn prop_removal_keeps_other_owners(ns in arb_nodes(), hash in any::<u64>(), pick in any::<prop::sample::Index>()) {
            prop_assume!(ns.len() >= 2);
            let a = MultiProbe::new(&ns, KeyHasher::new(6), DEFAULT_PROBES).unwrap();
            let gone = pick.index(ns.len());
            let mut rest = ns.clone();
            rest.remove(gone);
            let b = MultiProbe::new(&rest, KeyHasher::new(6), DEFAULT_PROBES).unwrap();
            let before = a.locate(hash);
            if before != gone {
                prop_assert_eq!(ns[before].id, rest[b.locate(hash)].id);
            }
        }
    }
}

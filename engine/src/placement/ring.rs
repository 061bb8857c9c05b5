//! Karger consistent hashing with virtual nodes, and the sorted-circle core (`Continuum`)
//! that [`Ring`], [`BoundedLoad`](super::BoundedLoad) and [`Ketama`](super::Ketama) share.
//!
//! # The lookup index
//!
//! A ring lookup is "the first point at or after the key's hash, wrapping". A plain binary
//! search over 800 000 points (5000 nodes × 160) takes 20 dependent loads, the last dozen
//! of them cache misses. `Continuum` answers from a radix index instead: a table of `2^b`
//! `u64` entries, one per bucket of the top `b` bits of the hash, `b = ⌈log2(points)⌉`, so
//! there are 1 to 2 buckets per point (λ = points / 2^b between ½ and 1). An entry is
//!
//! * **resolved**, for a bucket holding no point or one: `[prefix: 15][at: 24][above: 24]`,
//!   where `at` owns the hashes up to the bucket's point and `above` the hashes after it
//!   (the next point's owner; for an empty bucket both are its successor's owner), and
//!   `prefix` is the top 15 bits of the point's offset inside the bucket. The lookup
//!   compares the key's own prefix with it and answers from the entry: one memory access.
//!   Only a key whose prefix equals the point's (one in 2^15 of the lookups that land in
//!   such a bucket) needs the full hashes and takes the binary search. Resolved buckets
//!   are `e^-λ·(1+λ)` of all, 74 % to 91 % (82 % at 800 000 points); or
//! * **many**, for two points or more: a tag and the index of the bucket's first point. The
//!   lookup scans from it (points are 16 bytes, hash and owner together, so usually within
//!   one cache line) and bisects the rest of a crowded bucket after 8 points. A sentinel
//!   point of hash `u64::MAX` after the last one ends every scan and carries the
//!   wrap-around owner.
//!
//! Memory is 16 bytes per point plus 8–16 bytes of index per point (21.5 MB at 800 000
//! points: 12.8 MB of points, 8 MiB of index). The 24-bit owners cap a circle at 2^24 nodes.
//! Measured at 800 000 points on a 2-core EPYC VM (L2 1 MiB, L3 32 MiB), independent
//! random lookups (the machine was shared, so these are ranges):
//!
//! * this index: 16–25 ns a lookup; the binary search over the same points: 160–300 ns;
//! * a `u32` table of the same size (twice the buckets) whose entries resolve only empty
//!   buckets (68 % of lookups; the others read the points) was as fast on a quiet machine
//!   and about 25 % slower while other processes shared the cache;
//! * one more bit (16 MiB, 94 % resolved) was no faster: the larger table misses in cache
//!   and TLB more often;
//! * the common path is kept short and inlined (fixed field widths, the scan out of line):
//!   with memory latency this high, a lookup's cost is mostly how many of them fit in the
//!   core's instruction window at once.
//!
//! The index is built together with the sort: an in-place partition on the top 8 bits,
//! then per part (a few thousand points, in cache) a counting sort on the bucket, a sort of
//! each bucket's few points, and the entries. Building is linear in the points (25–30 ms
//! for 800 000, much of it the kernel mapping fresh pages).
use std::fmt;

use super::{
    nodes_memory, validate_nodes, Key, KeyHasher, Node, Placement, PlacementError, Scheme,
};

/// Points a node of mean weight gets by default (the value libketama and most rings use).
pub(crate) const DEFAULT_POINTS: u32 = 160;

/// Most points one circle holds (2^27: 2 GiB of points, plus the index).
///
/// Far beyond any useful ring (a million nodes at 128 points), it turns a typo in
/// `points_per_node` into an error rather than an allocation failure.
pub(crate) const MAX_POINTS: u64 = 1 << 27;

/// Points a lookup scans before it bisects the rest of a crowded bucket.
const SCAN: usize = 8;

/// Most nodes one circle indexes: a resolved index entry holds two owners of 24 bits.
pub(crate) const MAX_OWNERS: usize = 1 << OWNER_BITS;

/// Bits of an owner in a resolved index entry.
const OWNER_BITS: u32 = 24;

/// `2^OWNER_BITS − 1`.
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;

/// Bits of a point's in-bucket offset a resolved index entry keeps (the rest of the 63).
const PREFIX_BITS: u32 = 63 - 2 * OWNER_BITS;

/// Tag of an index entry for a bucket of two points or more (its other bits are the first
/// point's index); untagged entries resolve a hash by themselves.
const MANY: u64 = 1 << 63;

/// A point on the circle: its position and the index of the node that owns it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Point {
    /// Position on the circle.
    pub(crate) hash: u64,
    /// Index of the owning node in the member list.
    pub(crate) owner: u32,
}

/// Points sorted around the circle with a radix index over them (see the module docs).
///
/// Ties (two points at the same position) are ordered by a rank per owner that the
/// caller chooses, so the circle does not depend on the order points were generated in.
#[derive(Clone)]
pub(crate) struct Continuum {
    /// Sorted by `(hash, rank[owner])`, followed by one sentinel:
    /// `Point { hash: u64::MAX, owner: <owner of the first point> }`.
    points: Vec<Point>,
    /// `2^bits` entries: `MANY | first point`, or `prefix << 48 | at << 24 | above`.
    index: Vec<u64>,
    /// The bucket bits: a hash's bucket is `hash >> (64 - bits)`, its prefix the next
    /// `PREFIX_BITS` bits.
    bits: u32,
}

impl fmt::Debug for Continuum {
    // The derived form would print every point: hundreds of thousands of lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Continuum")
            .field("points", &self.len())
            .field("index_bits", &self.bits)
            .finish()
    }
}

impl Continuum {
    /// Sort `points` and index them. `rank[owner]` orders points at the same position;
    /// `rank.len()` is the number of nodes.
    ///
    /// The caller guarantees `1 <= points.len() <= MAX_POINTS`, `rank.len() <= MAX_OWNERS`
    /// and every owner below `rank.len()`; the constructors check and return errors instead.
    pub(crate) fn build(mut points: Vec<Point>, rank: &[u64]) -> Self {
        let n = points.len();
        assert!(
            (1..=MAX_POINTS as usize).contains(&n) && rank.len() <= MAX_OWNERS,
            "continuum of {n} points, {} owners: the caller must check the counts",
            rank.len()
        );
        let bits = ceil_log2(n).max(1);
        let shift = 64 - bits;
        let bucket = |h: u64| (h >> shift) as usize;
        let prefix = |h: u64| (h << bits) >> (64 - PREFIX_BITS);
        let resolved = |prefix: u64, at: u32, above: u32| {
            prefix << (2 * OWNER_BITS) | u64::from(at) << OWNER_BITS | u64::from(above)
        };
        let before = |a: &Point, b: &Point| {
            (a.hash, rank[a.owner as usize]) < (b.hash, rank[b.owner as usize])
        };

        // Two-pass radix sort. One scatter straight to the final buckets writes to a random
        // place among megabytes for every point, a cache and TLB miss each; splitting in
        // place on the top 8 bits first (American flag sort: 256 write streams, and no second
        // array whose pages the kernel must map) leaves parts of a few thousand points,
        // each finished in cache.
        let part_bits = bits.min(8);
        let part_shift = 64 - part_bits;
        let part_of = |p: &Point| (p.hash >> part_shift) as usize;
        let mut part_start = vec![0usize; (1 << part_bits) + 1];
        let mut wrap = points[0];
        for p in &points {
            part_start[part_of(p) + 1] += 1;
            if before(p, &wrap) {
                wrap = *p;
            }
        }
        for i in 1..part_start.len() {
            part_start[i] += part_start[i - 1];
        }
        let mut cursor = part_start.clone();
        for part in 0..1usize << part_bits {
            // Swap the point under the cursor to its part until one of this part lands
            // here; every swap puts one point in its place for good.
            while cursor[part] < part_start[part + 1] {
                let i = cursor[part];
                let target = part_of(&points[i]);
                if target == part {
                    cursor[part] += 1;
                } else {
                    points.swap(i, cursor[target]);
                    cursor[target] += 1;
                }
            }
        }
        let largest_part = part_start
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        let mut scratch = Vec::with_capacity(largest_part);

        // The sentinel goes in first so that a bucket at the end can read its successor
        // (the wrap-around owner) like any other.
        points.reserve_exact(1);
        points.push(Point {
            hash: u64::MAX,
            owner: wrap.owner,
        });

        // Each part fills its own slice of the index and of `points`. Parts go last to
        // first, so the successor of a part's last points (the next part's first point) is
        // already in place.
        let buckets_per_part = 1usize << (bits - part_bits);
        let mut index = vec![0u64; 1 << bits];
        for part in (0..1usize << part_bits).rev() {
            let (lo, hi) = (part_start[part], part_start[part + 1]);
            let first_bucket = part * buckets_per_part;
            let slots = &mut index[first_bucket..first_bucket + buckets_per_part];
            scratch.clear();
            scratch.extend_from_slice(&points[lo..hi]);
            for p in &scratch {
                slots[bucket(p.hash) - first_bucket] += 1;
            }
            // Counts become bucket ends, then count down to bucket starts while filling.
            let mut end = lo as u64;
            for e in slots.iter_mut() {
                end += *e;
                *e = end;
            }
            for p in scratch.iter().rev() {
                let slot = &mut slots[bucket(p.hash) - first_bucket];
                *slot -= 1;
                points[*slot as usize] = *p;
            }
            // Last bucket first: a bucket's successor (the first point after it) is then
            // sorted already. An empty bucket's start is that successor.
            let mut next = hi;
            for slot in slots.iter_mut().rev() {
                let start = *slot as usize;
                if next - start > 1 {
                    sort_bucket(&mut points[start..next], before);
                }
                let here = points[start];
                *slot = match next - start {
                    0 => resolved(prefix(u64::MAX), here.owner, here.owner),
                    1 => resolved(prefix(here.hash), here.owner, points[start + 1].owner),
                    _ => MANY | start as u64,
                };
                next = start;
            }
        }
        Self {
            points,
            index,
            bits,
        }
    }

    /// Number of points (the sentinel excluded).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.points.len() - 1
    }

    /// The sorted points (the sentinel excluded).
    #[inline]
    pub(crate) fn points(&self) -> &[Point] {
        &self.points[..self.len()]
    }

    /// Owner of the first point at or after `hash`, wrapping: through the radix index.
    #[inline]
    pub(crate) fn locate(&self, hash: u64) -> usize {
        let slot = (hash >> (64 - self.bits)) as usize;
        let entry = self.index.get(slot).copied().unwrap_or(MANY);
        if entry & MANY == 0 {
            let q = (hash << self.bits) >> (64 - PREFIX_BITS);
            let p = entry >> (2 * OWNER_BITS);
            let at = (entry >> OWNER_BITS) & OWNER_MASK;
            let above = entry & OWNER_MASK;
            if q != p || at == above {
                return if q <= p { at } else { above } as usize;
            }
        }
        self.locate_in_points(hash, entry)
    }

    /// The rest of [`Continuum::locate`], out of line so that the common path inlines.
    #[inline(never)]
    fn locate_in_points(&self, hash: u64, entry: u64) -> usize {
        if entry & MANY == 0 {
            // The key shares the point's prefix: only the full hashes can tell.
            return self.locate_binary_search(hash);
        }
        let tail = self
            .points
            .get((entry & !MANY) as usize..)
            .unwrap_or_default();
        // A bucket holds two or three points as a rule; the scan stops at the next bucket's
        // first point at the latest, or at the sentinel (hash u64::MAX) after the last.
        for p in tail.iter().take(SCAN) {
            if p.hash >= hash {
                return p.owner as usize;
            }
        }
        // A crowded bucket (colliding names) falls back to bisection rather than a long scan.
        let i = tail.partition_point(|p| p.hash < hash);
        tail.get(i).map_or(0, |p| p.owner as usize)
    }

    /// Index of the first point at or after `hash`, wrapping to 0: plain binary search.
    #[inline]
    pub(crate) fn successor(&self, hash: u64) -> usize {
        let points = self.points();
        let i = points.partition_point(|p| p.hash < hash);
        if i == points.len() {
            0
        } else {
            i
        }
    }

    /// Owner of the first point at or after `hash`, by plain binary search.
    #[inline]
    pub(crate) fn locate_binary_search(&self, hash: u64) -> usize {
        self.points[self.successor(hash)].owner as usize
    }

    /// Distinct owners clockwise from `hash`, primary first, `min(n, nodes)` of them.
    ///
    /// Nodes that hold no point (possible in [`Ketama`](super::Ketama)) are never met on the
    /// walk; when the circle runs out they follow the primary in member order, as in
    /// [`replicas_by_rehash`](super::replicas_by_rehash).
    pub(crate) fn replicas(&self, hash: u64, n: usize, nodes: usize, out: &mut Vec<usize>) {
        out.clear();
        let want = n.min(nodes);
        if want == 0 {
            return;
        }
        let points = self.points();
        let start = self.successor(hash);
        // `out.contains` makes a walk O(points · n) at worst; replica sets are small.
        for p in points[start..].iter().chain(&points[..start]) {
            let owner = p.owner as usize;
            if !out.contains(&owner) {
                out.push(owner);
                if out.len() == want {
                    return;
                }
            }
        }
        let mut i = out[0];
        while out.len() < want {
            i = (i + 1) % nodes;
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }

    /// Fraction of the 2^64 hash space each of the `nodes` owners answers for.
    ///
    /// A point owns the hashes after its predecessor up to and including its own position;
    /// the first point also owns the wrap-around arc after the last point.
    pub(crate) fn arc_shares(&self, nodes: usize) -> Vec<f64> {
        let points = self.points();
        let mut owned = vec![0u128; nodes];
        let (first, last) = (points[0].hash, points[points.len() - 1].hash);
        owned[points[0].owner as usize] += (1u128 << 64) - u128::from(last - first);
        for w in points.windows(2) {
            owned[w[1].owner as usize] += u128::from(w[1].hash - w[0].hash);
        }
        owned
            .into_iter()
            .map(|o| o as f64 / 18_446_744_073_709_551_616.0)
            .collect()
    }

    /// Heap bytes: points (with the sentinel) and the index.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<Point>()
            + self.index.capacity() * std::mem::size_of::<u64>()
    }
}

/// Sort one bucket: a few points (Poisson, mean below 1) unless names collide.
fn sort_bucket(s: &mut [Point], before: impl Fn(&Point, &Point) -> bool) {
    if s.len() > 16 {
        s.sort_unstable_by(|a, b| {
            if before(a, b) {
                std::cmp::Ordering::Less
            } else if before(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        return;
    }
    for i in 1..s.len() {
        let mut j = i;
        while j > 0 && before(&s[j], &s[j - 1]) {
            s.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// ⌈log2(n)⌉ for n ≥ 1.
fn ceil_log2(n: usize) -> u32 {
    usize::BITS - (n - 1).leading_zeros()
}

/// Karger consistent hashing: every node places points ("virtual nodes") on a circle of
/// 64-bit hashes, and a key belongs to the first point at or after its hash, wrapping.
///
/// From Karger et al., "Consistent Hashing and Random Trees" (STOC 1997). Node `i` gets
/// `max(1, round(points_per_node · wᵢ / mean w))` points, the `j`th at
/// [`KeyHasher::hash_point`]`(name, j)`; points at the same position go to the node with the
/// lower id.
///
/// Lookups go through a radix index over the sorted points rather than a binary search: a
/// table of 8-byte entries, one to two per point, answers most keys by itself (82 % at
/// 800 000 points) and points the rest at a bucket of two or three points to scan. At
/// 5000 nodes × 160 points that measured 16–25 ns a lookup against 160–300 ns for the plain
/// binary search over the same points ([`Ring::locate_binary_search`]), for 8 MiB of index
/// beside 12.8 MB of points. The design and its trade-offs are written up in this module's
/// source (`engine/src/placement/ring.rs`).
///
/// Good at: minimal disruption (adding or removing a node moves only the keys of the arcs
/// it gains or loses, about 1/N), weights, replica sets that walk the circle (Dynamo
/// preference lists), O(1) expected lookups with the index.
///
/// Bad at: balance and memory. A node's share of the circle is a sum of `k` random arcs, so
/// its standard deviation relative to the mean is about 1/√k ([`Ring::arc_shares`]: 0.32 at
/// k = 10, 0.1 at k = 100); evening loads to within a few percent takes thousands of points
/// per node, 24–32 bytes each with the index (21.5 MB at 5000 nodes × 160 points).
/// [`Jump`](super::Jump) and [`Maglev`](super::Maglev) balance better in far less memory;
/// [`BoundedLoad`](super::BoundedLoad) caps the peak on top of a ring.
#[derive(Clone, Debug)]
pub struct Ring {
    nodes: Vec<Node>,
    hasher: KeyHasher,
    points_per_node: u32,
    continuum: Continuum,
}

impl Ring {
    /// Build over `nodes` with `points_per_node` points for a node of mean weight.
    ///
    /// Fails on an empty member list, duplicate ids, a zero weight, more than 2^24 nodes,
    /// `points_per_node == 0`, or more than 2^27 points in total.
    pub fn new(
        nodes: &[Node],
        hasher: KeyHasher,
        points_per_node: u32,
    ) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        if nodes.len() > MAX_OWNERS {
            return Err(PlacementError::TooManyNodes {
                count: nodes.len(),
                max: MAX_OWNERS,
            });
        }
        if points_per_node == 0 {
            return Err(PlacementError::InvalidParameter {
                name: "points_per_node",
                reason: "must be at least 1".into(),
            });
        }
        let counts = point_counts(nodes, points_per_node);
        let total: u64 = counts.iter().sum();
        if total > MAX_POINTS {
            return Err(PlacementError::InvalidParameter {
                name: "points_per_node",
                reason: format!(
                    "{points_per_node} per node over {} nodes makes {total} points, more than {MAX_POINTS}",
                    nodes.len()
                ),
            });
        }
        // One more for the sentinel `Continuum::build` appends.
        let mut points = Vec::with_capacity(total as usize + 1);
        for (owner, (node, &count)) in nodes.iter().zip(&counts).enumerate() {
            points.extend((0..count).map(|j| Point {
                hash: hasher.hash_point(&node.name, j),
                owner: owner as u32,
            }));
        }
        let rank: Vec<u64> = nodes.iter().map(|n| n.id.0).collect();
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher,
            points_per_node,
            continuum: Continuum::build(points, &rank),
        })
    }

    /// Points on the circle, over all nodes.
    pub fn points(&self) -> usize {
        self.continuum.len()
    }

    /// Points a node of mean weight gets.
    pub fn points_per_node(&self) -> u32 {
        self.points_per_node
    }

    /// The owner of `hash` found by a plain binary search over the same sorted points,
    /// without the radix index: the baseline the benchmarks compare [`Placement::locate`]
    /// with. It gives the same answer as `locate` for every hash.
    pub fn locate_binary_search(&self, hash: u64) -> usize {
        self.continuum.locate_binary_search(hash)
    }

    /// Exact fraction of the 2^64 hash space each node owns, indexed like
    /// [`Placement::nodes`]; the fractions sum to 1.
    ///
    /// Their spread is the ring's imbalance without sampling noise: with `k` points per
    /// node the coefficient of variation is about 1/√k (the jump-hash paper's table of ring
    /// standard error: 0.998, 0.315, 0.0997, 0.0316 for k = 1, 10, 100, 1000).
    pub fn arc_shares(&self) -> Vec<f64> {
        self.continuum.arc_shares(self.nodes.len())
    }

    /// The shared circle, for schemes built over a ring.
    pub(crate) fn continuum(&self) -> &Continuum {
        &self.continuum
    }

    /// The hasher, for schemes built over a ring.
    pub(crate) fn hasher(&self) -> KeyHasher {
        self.hasher
    }
}

/// Points per node: `max(1, round(points_per_node · wᵢ / mean w))`.
fn point_counts(nodes: &[Node], points_per_node: u32) -> Vec<u64> {
    let total_weight: u64 = nodes.iter().map(|n| u64::from(n.weight)).sum();
    let mean = total_weight as f64 / nodes.len() as f64;
    nodes
        .iter()
        .map(|n| {
            let exact = f64::from(points_per_node) * f64::from(n.weight) / mean;
            // `as` saturates, so an absurd product lands above MAX_POINTS and is refused.
            (exact.round() as u64).max(1)
        })
        .collect()
}

impl Placement for Ring {
    fn scheme(&self) -> Scheme {
        Scheme::Ring {
            points_per_node: self.points_per_node,
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
        self.continuum.locate(hash)
    }

    /// Distinct owners met walking clockwise from the key's point.
    fn replicas_hashed(&self, hash: u64, n: usize, out: &mut Vec<usize>) {
        self.continuum.replicas(hash, n, self.nodes.len(), out);
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + nodes_memory(&self.nodes) + self.continuum.memory_bytes()
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        Ok(Box::new(Self::new(
            nodes,
            self.hasher,
            self.points_per_node,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::*;
    use crate::placement::NodeId;
    use proptest::prelude::*;

    fn ring(n: u64, points: u32) -> Ring {
        Ring::new(&nodes(n), KeyHasher::new(7), points).unwrap()
    }

    /// Hashes that probe every boundary of a continuum: the ends of the space, each point
    /// and its neighbours, and bucket edges of the index.
    fn probes(c: &Continuum) -> Vec<u64> {
        let mut h = vec![0, 1, u64::MAX - 1, u64::MAX, 1 << 63];
        for p in c.points() {
            h.extend([p.hash, p.hash.wrapping_sub(1), p.hash.wrapping_add(1)]);
            let edge = (p.hash >> (64 - c.bits)) << (64 - c.bits);
            h.extend([edge, edge.wrapping_sub(1)]);
        }
        h
    }

    #[test]
    fn index_agrees_with_binary_search_at_every_boundary() {
        for (n, points) in [(1, 1), (1, 160), (2, 1), (3, 7), (50, 40), (1000, 160)] {
            let r = ring(n, points);
            for h in probes(&r.continuum) {
                assert_eq!(
                    r.locate(h),
                    r.locate_binary_search(h),
                    "n={n} points={points} h={h:#x}"
                );
            }
        }
    }

    #[test]
    fn binary_search_is_first_point_at_or_after_wrapping() {
        let r = ring(20, 10);
        let pts = r.continuum.points();
        for w in pts.windows(2) {
            assert!(w[0].hash <= w[1].hash, "sorted");
        }
        let last = pts[pts.len() - 1];
        assert_eq!(r.locate(last.hash), last.owner as usize);
        if last.hash < u64::MAX {
            assert_eq!(r.locate(last.hash + 1), pts[0].owner as usize, "wraps");
        }
        assert_eq!(r.locate(0), pts[0].owner as usize);
    }

    #[test]
    fn ties_go_to_the_lower_id_whatever_the_order() {
        // Two nodes with the same name place every point at the same positions.
        let a = [Node::new(9, "same"), Node::new(4, "same")];
        let b = [Node::new(4, "same"), Node::new(9, "same")];
        for members in [a, b] {
            let r = Ring::new(&members, KeyHasher::new(1), 50).unwrap();
            for k in 0..1000u64 {
                assert_eq!(r.lookup(Key::U64(k)).id, NodeId(4));
                let h = r.hash_key(Key::U64(k));
                assert_eq!(r.locate(h), r.locate_binary_search(h));
            }
        }
    }

    #[test]
    fn crafted_circles_with_duplicates_and_extremes() {
        let cases: [&[(u64, u32)]; 5] = [
            &[(u64::MAX, 0), (u64::MAX, 1)],
            &[(0, 2), (0, 1), (0, 0)],
            &[(5, 1), (5, 0), (u64::MAX, 2), (0, 1)],
            &[(1 << 63, 0)],
            &[
                (3, 0),
                (3, 1),
                (3, 0),
                (4, 2),
                (4, 1),
                (1 << 40, 0),
                (u64::MAX - 1, 2),
            ],
        ];
        // A crowded bucket: 20 points below 2^58 where the index has 32 buckets.
        let crowded: Vec<(u64, u32)> = (1..=20u64).map(|h| (h * 1000, (h % 3) as u32)).collect();
        for pts in cases.into_iter().chain([&crowded[..]]) {
            let points: Vec<Point> = pts
                .iter()
                .map(|&(hash, owner)| Point { hash, owner })
                .collect();
            // Rank = owner, except owner 0 ranks last.
            let rank = [10, 1, 2];
            let c = Continuum::build(points, &rank);
            for h in probes(&c) {
                let expect = pts
                    .iter()
                    .filter(|p| p.0 >= h)
                    .min_by_key(|p| (p.0, rank[p.1 as usize]))
                    .or_else(|| pts.iter().min_by_key(|p| (p.0, rank[p.1 as usize])))
                    .unwrap()
                    .1 as usize;
                assert_eq!(c.locate(h), expect, "{pts:?} h={h:#x}");
                assert_eq!(c.locate_binary_search(h), expect, "{pts:?} h={h:#x}");
            }
            let shares: f64 = c.arc_shares(3).iter().sum();
            assert!(
                (shares - 1.0).abs() < 1e-12,
                "{pts:?}: shares sum to {shares}"
            );
        }
    }

    #[test]
    fn weights_scale_points() {
        let members = vec![
            Node::new(0, "a").with_weight(1),
            Node::new(1, "b").with_weight(2),
            Node::new(2, "c").with_weight(3),
            Node::new(3, "tiny").with_weight(1),
        ];
        let r = Ring::new(&members, KeyHasher::new(3), 100).unwrap();
        let mut per_node = [0u64; 4];
        for p in r.continuum.points() {
            per_node[p.owner as usize] += 1;
        }
        // mean weight 7/4: round(100·w·4/7) = 57, 114, 171, 57.
        assert_eq!(per_node, [57, 114, 171, 57]);
        // A node far lighter than the mean still gets one point.
        let mut skewed = nodes(3);
        skewed[0].weight = 1;
        skewed[1].weight = 100_000;
        skewed[2].weight = 100_000;
        let r = Ring::new(&skewed, KeyHasher::new(3), 10).unwrap();
        assert_eq!(
            r.continuum.points().iter().filter(|p| p.owner == 0).count(),
            1
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        let err = Ring::new(&nodes(3), KeyHasher::new(0), 0).unwrap_err();
        assert!(matches!(
            err,
            PlacementError::InvalidParameter {
                name: "points_per_node",
                ..
            }
        ));
        let err = Ring::new(&nodes(3), KeyHasher::new(0), u32::MAX).unwrap_err();
        assert!(matches!(
            err,
            PlacementError::InvalidParameter {
                name: "points_per_node",
                ..
            }
        ));
        assert_eq!(
            Ring::new(&[], KeyHasher::new(0), 10).unwrap_err(),
            PlacementError::NoNodes
        );
    }

    #[test]
    fn arc_share_spread_is_one_over_root_k() {
        // The jump-hash paper (Lamping & Veach 2014, table 1) gives the ring's standard
        // error as 0.0997 for 100 points per bucket; 1000 nodes sample it to within a few
        // percent, and the layout is fixed by the seed, so this cannot flake.
        let r = ring(1000, 100);
        let shares = r.arc_shares();
        let sum: f64 = shares.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "sum {sum}");
        let mean = sum / shares.len() as f64;
        let var = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / shares.len() as f64;
        let cv = var.sqrt() / mean;
        assert!(
            (0.085..0.115).contains(&cv),
            "coefficient of variation {cv}"
        );
    }

    #[test]
    fn arc_shares_match_sampled_loads() {
        let r = ring(10, 20);
        let shares = r.arc_shares();
        let keys = 1_000_000u64;
        for (i, c) in counts(&r, keys).into_iter().enumerate() {
            // Binomial sampling error: sd ≤ √(keys/4) = 500 keys; allow 5 sd.
            let expected = shares[i] * keys as f64;
            assert!(
                (c as f64 - expected).abs() < 2_500.0,
                "node {i}: {c} vs {expected}"
            );
        }
    }

    #[test]
    fn balance_within_the_ring_bound() {
        // With k = 160 points the arc shares have CV ≈ 1/√160 ≈ 0.08; the largest of 100
        // nodes sits about 2.5–3 sd above the mean (Gumbel tail), so peak-to-mean ≈ 1.25.
        // Karger's bound is O(log N) points for O(1) balance; 1.35 leaves room for
        // sampling noise of 1M keys (≈ 3 % per node).
        let r = ring(100, DEFAULT_POINTS);
        let ptm = peak_to_mean(&counts(&r, 1_000_000));
        assert!(ptm < 1.35, "peak-to-mean {ptm}");
    }

    #[test]
    fn disruption_is_near_one_over_n_and_only_from_the_changed_node() {
        let base = ring(100, DEFAULT_POINTS);
        let removed: Vec<Node> = nodes(100).into_iter().filter(|n| n.id.0 != 42).collect();
        let smaller = base.rebuild(&removed).unwrap();
        let larger = base.rebuild(&nodes(101)).unwrap();
        let keys = 200_000u64;
        // The node's share of the circle, 1/N ± ~8 % at 160 points; allowed 1.6/N.
        for other in [&smaller, &larger] {
            let moved = moved_fraction(&base, other.as_ref(), keys);
            assert!(moved > 0.3 / 100.0 && moved < 1.6 / 100.0, "moved {moved}");
        }
        // Removing a node moves its keys only: every other key keeps its owner.
        for k in 0..keys {
            let before = base.lookup(Key::U64(k)).id;
            if before != NodeId(42) {
                assert_eq!(smaller.lookup(Key::U64(k)).id, before);
            }
        }
    }

    #[test]
    fn replicas_walk_clockwise() {
        let r = ring(8, 4);
        let mut out = Vec::new();
        for k in 0..2000u64 {
            let h = r.hash_key(Key::U64(k));
            r.replicas_hashed(h, 3, &mut out);
            assert_eq!(out[0], r.locate(h));
            let mut expect = Vec::new();
            let pts = r.continuum.points();
            let start = r.continuum.successor(h);
            for p in pts[start..].iter().chain(&pts[..start]) {
                if !expect.contains(&(p.owner as usize)) {
                    expect.push(p.owner as usize);
                }
            }
            expect.truncate(3);
            assert_eq!(out, expect);
            r.replicas_hashed(h, 100, &mut out);
            let mut all = out.clone();
            all.sort_unstable();
            assert_eq!(all, (0..8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn deterministic_and_memory_counted() {
        let a = ring(300, 50);
        let b = ring(300, 50);
        for k in 0..10_000u64 {
            assert_eq!(a.lookup(Key::U64(k)).id, b.lookup(Key::U64(k)).id);
        }
        assert_eq!(a.points(), 15_000);
        // Points (16 B) plus an index of 2^15 u32.
        assert!(a.memory_bytes() >= 15_001 * 16 + (1 << 15) * 4);
        assert_eq!(
            a.scheme(),
            Scheme::Ring {
                points_per_node: 50
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn locate_equals_binary_search(
            n in 1u64..60,
            points in 1u32..80,
            seed in any::<u64>(),
            weights in proptest::collection::vec(1u32..20, 60),
            hashes in proptest::collection::vec(any::<u64>(), 200),
        ) {
            let members: Vec<Node> = nodes(n)
                .into_iter()
                .zip(&weights)
                .map(|(m, &w)| m.with_weight(w))
                .collect();
            let r = Ring::new(&members, KeyHasher::new(seed), points).unwrap();
            for h in hashes.into_iter().chain(probes(&r.continuum)) {
                prop_assert_eq!(r.locate(h), r.locate_binary_search(h));
            }
        }
    }
}

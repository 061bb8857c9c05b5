//! Rendezvous hashing, also called highest random weight (HRW) hashing: every node scores
//! every key and the best score wins. Plain (Thaler & Ravishankar 1998) and weighted by the
//! logarithmic method (Schindelhauer & Schomaker 2005).

use super::{
    nodes_memory, validate_nodes, Key, KeyHasher, Node, Placement, PlacementError, Scheme,
};

/// Rendezvous (highest random weight) hashing, plain or weighted.
///
/// Thaler & Ravishankar, "Using name-based mappings to increase hit rates" (IEEE/ACM ToN,
/// 1998): each node `i` gets a score `s(key, i)` from a hash of the key and the node, and the
/// key goes to the node with the highest score; the replica set of size `n` is the `n` highest
/// scores (Dynamo-style preference list, exact and consistent for every `n`).
///
/// Here a node's name is hashed once, at build time, into a 64-bit seed, and
/// `s(key, i) = mix(hash(key) ^ seed_i)` where `mix` is the splitmix64 finaliser (Stafford's
/// "Mix13"). That finaliser is a bijection with full avalanche: flipping any input bit flips
/// each output bit with probability close to ½. Key hash and seeds are both xxh3 outputs, so
/// the inputs for two nodes differ in about 32 random bits, and the scores of the nodes for one
/// key behave like independent uniform draws; that independence is what makes the argmax
/// uniform and the runner-up uniform among the rest. Weaker combinations fail in known ways:
/// the xor alone makes the winner a function of the key's top bits (contiguous, unequal ranges),
/// and a single multiply leaves the top bits of the score nearly blind to the low bits of the
/// input.
///
/// **Weighted** (the logarithmic method of Schindelhauer & Schomaker, "Weighted distributed
/// hash tables", SPAA 2005; the same method is Jason Resch's "weighted rendezvous hashing"):
/// the score is mapped to `u` in the open interval (0, 1) and node `i` bids
/// `−ln(u) / wᵢ`, an exponential variable of rate `wᵢ`; the lowest bid wins, which is the same
/// as the highest `−wᵢ / ln(u)`. The minimum of independent exponentials is the one of index `i`
/// with probability `wᵢ / Σw`, exactly, for any weights — no virtual nodes, no rounding of
/// shares. `u = (⌊score / 2¹¹⌋ | 1) / 2⁵³`, an odd multiple of 2⁻⁵³, lies in
/// [2⁻⁵³, 1 − 2⁻⁵³] and is computed exactly, so the logarithm is never taken of 0 or 1. Computing `ln` for every node would dominate the lookup, so the scan first
/// compares the bound `−ln(u) ≥ 1 − u` against the best bid so far (with a margin larger than
/// any rounding) and takes the logarithm only when the bound cannot rule the node out: about
/// `ln N` times per lookup instead of `N`. The result is the same as evaluating every bid. `ln`
/// comes from the platform's libm; libms that are not correctly rounded could split a tie of
/// two bids within one ulp differently, which is vanishingly rare and only matters to routers
/// on different platforms.
///
/// Ties (equal scores or bids) go to the node with the smaller [`NodeId`](super::NodeId).
///
/// **Good at:** the minimal disruption is exact — removing a node moves exactly that node's
/// keys, each to the node that was its second choice, and adding a node moves to it only keys
/// it now wins; exact weights; consistent replica sets for free; no tables (12 bytes per node
/// of scheme data besides the member list, 20 weighted); routers only need to agree on names, ids and
/// weights, not on the order of the member list.
/// **Bad at:** lookup is O(N) — every node is scored for every key. The scan is a tight loop
/// over the contiguous seeds (a load, the mix, a compare and two conditional moves); measured
/// by hand at about 1.7 ns a node plain and 2 ns weighted (8.4 µs and 9.9 µs a lookup at
/// N = 5 000, 2-vCPU EPYC VM), so past a few hundred nodes the O(1) and O(log N) schemes are
/// far faster. Two members with
/// the same name share a seed, and the one with the smaller id wins all their keys.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    nodes: Vec<Node>,
    hasher: KeyHasher,
    weighted: bool,
    /// Node seeds, by *position*: the members sorted by id, so that scanning in position order
    /// with a strict comparison breaks ties to the smaller id without comparing ids.
    seeds: Vec<u64>,
    /// `1 / weight` by position; empty when plain.
    inv_weights: Vec<f64>,
    /// Index into `nodes` of the member at each position.
    order: Vec<u32>,
}

/// splitmix64's finaliser (Stafford's Mix13): a full-avalanche bijection on 64 bits.
///
/// Written out here rather than borrowed from [`super::rehash`] because it defines where keys
/// land: it must not change if that helper ever does.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The score's top 53 bits with the lowest forced to 1, as `u` in [2⁻⁵³, 1 − 2⁻⁵³]: never 0,
/// never 1.
#[inline(always)]
fn unit_open(score: u64) -> f64 {
    // An odd 53-bit integer converts exactly (through i64, one instruction) and scaling by a
    // power of two is exact. `(m + 0.5)·2⁻⁵³` would not be: m + 0.5 rounds for m ≥ 2⁵², and
    // m = 2⁵³ − 1 rounds up to u = 1.
    ((score >> 11) | 1) as i64 as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The weighted bid `−ln(u) / w`, lower wins. Positive and finite (−ln u ∈ [1.1e−16, 36.8] and
/// 1/w ∈ [2.3e−10, 1]), so its IEEE bits order like the values: callers compare bits as `u64`.
#[inline(always)]
fn bid(score: u64, inv_weight: f64) -> u64 {
    (-unit_open(score).ln() * inv_weight).to_bits()
}

/// A lower bound of `2⁵³·(1 − u)`, as `f64`: `2⁵³·u = m | 1 ≤ m + 1` with `m = score >> 11`, so
/// `2⁵³·(1 − u) ≥ 2⁵³ − 1 − m`, which is `!score >> 11`: one shift and one conversion. Scaled
/// by 2⁵³ so the check needs no extra multiply; the best bid is scaled to match.
#[inline(always)]
fn one_minus_unit_scaled(score: u64) -> f64 {
    (!score >> 11) as i64 as f64
}

/// `2⁵³·(1 + 2⁻³⁰)`: scales the best bid into [`one_minus_unit_scaled`]'s units, with a margin
/// that keeps the bound a safe lower bound after rounding (the rounding errors involved are a
/// few times 2⁻⁵³, relative).
const CUTOFF_SCALE: f64 = (1u64 << 53) as f64 * (1.0 + 1.0 / (1u64 << 30) as f64);

/// Replica sets up to this size are selected on the stack; larger ones in a heap in `out`.
const SMALL_TOP: usize = 8;

impl Rendezvous {
    /// Build over `nodes`; `weighted` bids by the logarithmic method instead of ignoring
    /// weights.
    pub fn new(nodes: &[Node], hasher: KeyHasher, weighted: bool) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        let mut order: Vec<u32> = (0..nodes.len() as u32).collect();
        order.sort_unstable_by_key(|&i| nodes[i as usize].id);
        let seeds = order
            .iter()
            .map(|&i| hasher.hash_point(&nodes[i as usize].name, 0))
            .collect();
        let inv_weights = if weighted {
            order
                .iter()
                .map(|&i| 1.0 / f64::from(nodes[i as usize].weight))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher,
            weighted,
            seeds,
            inv_weights,
            order,
        })
    }

    /// Whether node weights are used.
    pub fn weighted(&self) -> bool {
        self.weighted
    }

    /// Cost of the node at `pos` for a key hash, lower wins: `!score` when plain (so that
    /// the highest score is the lowest cost), the bid's bits when weighted.
    #[inline]
    fn cost(&self, hash: u64, pos: usize) -> u64 {
        self.cost_of(mix(hash ^ self.seeds[pos]), pos)
    }

    /// Position of the plain winner: the highest score, the first position on ties.
    #[inline]
    fn locate_plain(&self, hash: u64) -> usize {
        let mut best = 0u64;
        let mut best_pos = 0usize;
        for (pos, &seed) in self.seeds.iter().enumerate() {
            let score = mix(hash ^ seed);
            if score > best {
                best = score;
                best_pos = pos;
            }
        }
        best_pos
    }

    /// Position of the weighted winner: the lowest bid, the first position on ties.
    #[inline]
    fn locate_weighted(&self, hash: u64) -> usize {
        let mut best = f64::INFINITY;
        let mut cutoff = f64::INFINITY;
        let mut best_pos = 0usize;
        for (pos, (&seed, &inv_w)) in self.seeds.iter().zip(&self.inv_weights).enumerate() {
            let score = mix(hash ^ seed);
            // (1 − u)/w ≤ −ln(u)/w: a node whose bound already exceeds the best bid (with a
            // margin for rounding) cannot win, and the logarithm is skipped.
            if one_minus_unit_scaled(score) * inv_w <= cutoff {
                let b = f64::from_bits(bid(score, inv_w));
                if b < best {
                    best = b;
                    cutoff = b * CUTOFF_SCALE;
                    best_pos = pos;
                }
            }
        }
        best_pos
    }

    /// Whether the node at `pos` with this `score` costs less than `worst`; weighted, the
    /// logarithm is skipped when the `1 − u` bound already rules the node out.
    #[inline(always)]
    fn beats(&self, score: u64, pos: usize, worst: u64) -> bool {
        if self.weighted {
            let inv_w = self.inv_weights[pos];
            let cutoff = f64::from_bits(worst) * CUTOFF_SCALE;
            one_minus_unit_scaled(score) * inv_w <= cutoff && bid(score, inv_w) < worst
        } else {
            !score < worst
        }
    }

    /// The cost of a node whose score is already computed.
    #[inline(always)]
    fn cost_of(&self, score: u64, pos: usize) -> u64 {
        if self.weighted {
            bid(score, self.inv_weights[pos])
        } else {
            !score
        }
    }

    /// Top `n ≤ SMALL_TOP` positions by insertion into a sorted array on the stack: each
    /// cost is computed once, and most nodes cost one comparison with the `n`th best.
    fn top_small(&self, hash: u64, n: usize, out: &mut Vec<usize>) {
        let mut top = [(0u64, 0usize); SMALL_TOP];
        let mut filled = 0usize;
        for (pos, &seed) in self.seeds.iter().enumerate() {
            let score = mix(hash ^ seed);
            if filled < n {
                filled += 1;
            } else if !self.beats(score, pos, top[n - 1].0) {
                continue;
            }
            // Insert after every kept entry of equal or lower cost: positions only grow, so
            // equal costs stay in position (id) order. Past the `n`th entry it falls off.
            let cost = self.cost_of(score, pos);
            let mut at = filled - 1;
            while at > 0 && top[at - 1].0 > cost {
                top[at] = top[at - 1];
                at -= 1;
            }
            top[at] = (cost, pos);
        }
        out.extend(top[..n].iter().map(|&(_, pos)| self.order[pos] as usize));
    }

    /// Restore the max-heap order (worst `(cost, pos)` at the root) below `at` in `heap`.
    fn sift_down(&self, hash: u64, heap: &mut [usize], mut at: usize) {
        let key = |p: usize| (self.cost(hash, p), p);
        let len = heap.len();
        let at_key = key(heap[at]);
        loop {
            let left = 2 * at + 1;
            if left >= len {
                return;
            }
            let mut child = left;
            let mut child_key = key(heap[left]);
            if left + 1 < len {
                let right_key = key(heap[left + 1]);
                if right_key > child_key {
                    child = left + 1;
                    child_key = right_key;
                }
            }
            if child_key <= at_key {
                return;
            }
            // The sinking element keeps its key: no need to score it again.
            heap.swap(at, child);
            at = child;
        }
    }
}

impl Placement for Rendezvous {
    fn scheme(&self) -> Scheme {
        Scheme::Rendezvous {
            weighted: self.weighted,
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
        let pos = if self.weighted {
            self.locate_weighted(hash)
        } else {
            self.locate_plain(hash)
        };
        self.order[pos] as usize
    }

    /// The `n` best scores (bids), best first: the preference list HRW defines, so each
    /// prefix is itself the replica set of that size and removing a member only closes the gap.
    ///
    /// A partial selection in one pass, allocating nothing when `out` has the capacity: for
    /// `n` up to 8 the best `n` (cost, node) pairs are kept sorted on the stack; beyond, the
    /// best `n` nodes are kept as a max-heap inside `out` itself (worst at the root), with
    /// costs recomputed on each heap comparison (a mix, plus a logarithm when weighted), and
    /// sorted at the end. Either way most nodes cost one comparison with the current `n`th
    /// best, so `n` replicas cost little more than one lookup.
    fn replicas_hashed(&self, hash: u64, n: usize, out: &mut Vec<usize>) {
        out.clear();
        let len = self.seeds.len();
        let n = n.min(len);
        if n == 0 {
            return;
        }
        if n == 1 {
            out.push(self.locate(hash));
            return;
        }
        if n <= SMALL_TOP {
            self.top_small(hash, n, out);
            return;
        }
        out.extend(0..n);
        for at in (0..n / 2).rev() {
            self.sift_down(hash, out, at);
        }
        let mut worst = self.cost(hash, out[0]);
        for pos in n..len {
            let score = mix(hash ^ self.seeds[pos]);
            // Later positions have larger ids, so a tie with the worst kept one loses.
            if self.beats(score, pos, worst) {
                out[0] = pos;
                self.sift_down(hash, out, 0);
                worst = self.cost(hash, out[0]);
            }
        }
        out.sort_unstable_by_key(|&p| (self.cost(hash, p), p));
        for p in out.iter_mut() {
            *p = self.order[*p] as usize;
        }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + nodes_memory(&self.nodes)
            + self.seeds.capacity() * std::mem::size_of::<u64>()
            + self.inv_weights.capacity() * std::mem::size_of::<f64>()
            + self.order.capacity() * std::mem::size_of::<u32>()
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        Ok(Box::new(Self::new(nodes, self.hasher, self.weighted)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::*;
    use proptest::prelude::*;

    fn build(n: u64, weighted: bool) -> Rendezvous {
        Rendezvous::new(&nodes(n), KeyHasher::new(11), weighted).unwrap()
    }

    /// Every replica list by brute force: all nodes sorted by (cost, id).
    fn reference_order(r: &Rendezvous, hash: u64) -> Vec<usize> {
        let mut all: Vec<(u64, crate::placement::NodeId, usize)> = (0..r.nodes.len())
            .map(|i| {
                let n = &r.nodes[i];
                let score = mix(hash ^ r.hasher.hash_point(&n.name, 0));
                let cost = if r.weighted {
                    let u = unit_open(score);
                    (-u.ln() * (1.0 / f64::from(n.weight))).to_bits()
                } else {
                    !score
                };
                (cost, n.id, i)
            })
            .collect();
        all.sort_unstable();
        all.into_iter().map(|(_, _, i)| i).collect()
    }

    #[test]
    fn rejects_bad_member_lists() {
        assert_eq!(
            Rendezvous::new(&[], KeyHasher::new(0), false).unwrap_err(),
            PlacementError::NoNodes
        );
        let zero = [Node::new(3, "a").with_weight(0)];
        assert_eq!(
            Rendezvous::new(&zero, KeyHasher::new(0), true).unwrap_err(),
            PlacementError::ZeroWeight(crate::placement::NodeId(3))
        );
    }

    #[test]
    fn plain_balance_is_multinomial() {
        // 1M keys on 100 nodes: each count is Binomial(1M, 1/100), mean 10 000, σ ≈ 99.5.
        // The expected maximum of 100 such counts is about mean + √(2 ln 100)·σ ≈ 1.030·mean;
        // allow 4.5σ either side (1.045 / 0.955), which i.i.d. uniform placement exceeds with
        // probability < 1e-3 over the 100 nodes.
        let r = build(100, false);
        let c = counts(&r, 1_000_000);
        let ptm = peak_to_mean(&c);
        let min = *c.iter().min().unwrap() as f64 / 10_000.0;
        assert!(ptm < 1.045, "peak-to-mean {ptm}");
        assert!(min > 0.955, "min-to-mean {min}");
    }

    #[test]
    fn weighted_shares_follow_weights() {
        // Weights 1, 2, 3 in turn over 60 nodes (Σw = 120): a node of weight w expects
        // w/120 of the keys, e.g. 8 333 of 1M for w = 1 (σ ≈ 91, 1.1%). Every node must be
        // within 6% of its expectation (≥ 5σ for weight 1), and the mean load per unit of
        // weight of the weight-2 nodes must be twice that of the weight-1 nodes within 1.5%
        // (each class holds ≥ 166k keys, so the ratio's σ is ≈ 0.3%). Measured over five
        // hasher seeds: worst node 2.1–2.6% off, w2/w1 1.987–2.017, w3/w1 2.985–3.014; with
        // 10M keys the ratios are 2.000 ± 0.002 and 3.000 ± 0.004, so no bias.
        let ns: Vec<Node> = nodes(60)
            .into_iter()
            .map(|n| {
                let w = (n.id.0 % 3 + 1) as u32;
                n.with_weight(w)
            })
            .collect();
        let r = Rendezvous::new(&ns, KeyHasher::new(5), true).unwrap();
        let c = counts(&r, 1_000_000);
        for (node, &k) in ns.iter().zip(&c) {
            let expected = 1_000_000.0 * f64::from(node.weight) / 120.0;
            let dev = (k as f64 / expected - 1.0).abs();
            assert!(
                dev < 0.06,
                "node {} weight {}: {k} keys, expected {expected}",
                node.id,
                node.weight
            );
        }
        let per_node = |w: u32| {
            let (sum, cnt) = ns
                .iter()
                .zip(&c)
                .filter(|(n, _)| n.weight == w)
                .fold((0u64, 0u64), |(s, m), (_, &k)| (s + k, m + 1));
            sum as f64 / cnt as f64
        };
        let ratio = per_node(2) / per_node(1);
        assert!((ratio - 2.0).abs() < 0.03, "weight 2 / weight 1 = {ratio}");
        let ratio3 = per_node(3) / per_node(1);
        assert!(
            (ratio3 - 3.0).abs() < 0.045,
            "weight 3 / weight 1 = {ratio3}"
        );
    }

    #[test]
    fn weighted_with_equal_weights_is_plain() {
        // −ln(u)/w with one w for all is lowest where u is highest, and u grows with the
        // score's top 52 bits: the owners are the plain owners except when two scores agree in
        // their top 52 bits (probability ≈ N²·2⁻⁵³ per key, never seen here). So the weighted scan,
        // logarithm skipping included, inherits the plain balance.
        let plain = build(100, false);
        let weighted = build(100, true);
        for k in 0..200_000u64 {
            let h = plain.hash_key(Key::U64(k));
            assert_eq!(plain.locate(h), weighted.locate(h), "key {k}");
        }
    }

    #[test]
    fn runner_up_is_uniform() {
        // If two nodes' scores were correlated, the second choice of one node's keys would
        // favour some nodes. For the ≈ 30k keys of node 0 among 30 nodes, the runner-up
        // counts are Binomial(30k, 1/29) (mean ≈ 1 000, σ ≈ 31); allow ±15% (≈ 4.8σ).
        let r = build(30, false);
        let mut second = vec![0u64; 30];
        let mut out = Vec::with_capacity(2);
        let mut owned = 0u64;
        for k in 0..900_000u64 {
            let h = r.hash_key(Key::U64(k));
            r.replicas_hashed(h, 2, &mut out);
            if out[0] == 0 {
                owned += 1;
                second[out[1]] += 1;
            }
        }
        let mean = owned as f64 / 29.0;
        for (i, &s) in second.iter().enumerate().skip(1) {
            assert!(
                (s as f64 / mean - 1.0).abs() < 0.15,
                "node {i}: {s} vs mean {mean}"
            );
        }
    }

    /// Removing node `gone` from `a`: keys of surviving nodes must not move at all.
    fn check_removal(all: &[Node], gone: usize, weighted: bool, keys: u64) -> f64 {
        let a = Rendezvous::new(all, KeyHasher::new(3), weighted).unwrap();
        let mut rest = all.to_vec();
        let removed = rest.remove(gone);
        let b = Rendezvous::new(&rest, KeyHasher::new(3), weighted).unwrap();
        let mut moved = 0u64;
        for k in 0..keys {
            let before = a.lookup(Key::U64(k)).id;
            let after = b.lookup(Key::U64(k)).id;
            if before == removed.id {
                moved += 1;
                // HRW's defining property: the key goes to its runner-up.
                let mut out = Vec::new();
                a.replicas(Key::U64(k), 2, &mut out);
                assert_eq!(after, a.nodes()[out[1]].id, "key {k}");
            } else {
                assert_eq!(before, after, "key {k} moved off surviving node {before}");
            }
        }
        moved as f64 / keys as f64
    }

    #[test]
    fn removal_moves_exactly_the_removed_nodes_keys() {
        // The moved fraction is the removed node's share: 1/N in expectation; with 200k keys
        // its sampling σ is ≈ 0.0002, and the share itself varies by ≈ 1% of 1/N: allow
        // ±0.002 around 1/100.
        let all = nodes(100);
        let moved = check_removal(&all, 37, false, 200_000);
        assert!((moved - 0.01).abs() < 0.002, "moved {moved}");
        let weighted: Vec<Node> = all
            .iter()
            .map(|n| n.clone().with_weight(1 + (n.id.0 % 4) as u32))
            .collect();
        // Node 37 has weight 2 of Σw = 250.
        let moved = check_removal(&weighted, 37, true, 200_000);
        assert!(
            (moved - 2.0 / 250.0).abs() < 0.002,
            "weighted moved {moved}"
        );
    }

    #[test]
    fn adding_a_node_moves_keys_only_to_it() {
        // Expected moved fraction: the newcomer's share, 1/101 plain and 3/103 for a node of
        // weight 3 among 100 of weight 1; ±0.002 as for removal (sampling σ ≤ 0.0005 at 100k
        // keys).
        for (weighted, weight, share) in [(false, 1, 1.0 / 101.0), (true, 3, 3.0 / 103.0)] {
            let a = build(100, weighted);
            let mut more = nodes(100);
            more.push(Node::new(100, "node-100").with_weight(weight));
            let b = Rendezvous::new(&more, KeyHasher::new(11), weighted).unwrap();
            let mut moved = 0u64;
            for k in 0..100_000u64 {
                let before = a.lookup(Key::U64(k)).id;
                let after = b.lookup(Key::U64(k)).id;
                if before != after {
                    assert_eq!(after.0, 100, "key {k} moved between old nodes");
                    moved += 1;
                }
            }
            let frac = moved as f64 / 100_000.0;
            assert!(
                (frac - share).abs() < 0.002,
                "weighted={weighted}: moved {frac}"
            );
        }
    }

    #[test]
    fn owners_depend_on_membership_not_on_list_order() {
        let ns = nodes(50);
        let mut reversed = ns.clone();
        reversed.reverse();
        for weighted in [false, true] {
            let a = Rendezvous::new(&ns, KeyHasher::new(1), weighted).unwrap();
            let b = Rendezvous::new(&reversed, KeyHasher::new(1), weighted).unwrap();
            let c = Rendezvous::new(&ns, KeyHasher::new(2), weighted).unwrap();
            let mut differs = 0;
            for k in 0..10_000u64 {
                let key = Key::U64(k);
                assert_eq!(a.lookup(key).id, b.lookup(key).id);
                differs += usize::from(a.lookup(key).id != c.lookup(key).id);
            }
            // Another hasher seed is another placement: ≈ 49/50 of keys differ.
            assert!(differs > 9_000, "seed ignored? {differs}");
        }
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        // Same name, same seed, same score for every key: the smaller id always wins.
        let twins = [Node::new(9, "same"), Node::new(4, "same")];
        for weighted in [false, true] {
            let r = Rendezvous::new(&twins, KeyHasher::new(0), weighted).unwrap();
            for k in 0..1_000u64 {
                assert_eq!(r.lookup(Key::U64(k)).id.0, 4);
            }
            let mut out = Vec::new();
            r.replicas(Key::U64(1), 2, &mut out);
            assert_eq!(out, vec![1, 0]);
        }
    }

    #[test]
    fn replicas_are_the_top_scores() {
        for weighted in [false, true] {
            let r = Rendezvous::new(
                &nodes(40)
                    .into_iter()
                    .map(|n| {
                        let w = 1 + (n.id.0 % 5) as u32;
                        n.with_weight(w)
                    })
                    .collect::<Vec<_>>(),
                KeyHasher::new(8),
                weighted,
            )
            .unwrap();
            let mut out = Vec::new();
            for k in 0..300u64 {
                let h = r.hash_key(Key::U64(k));
                let want = reference_order(&r, h);
                assert_eq!(r.locate(h), want[0]);
                for n in [0, 1, 2, 3, 7, 8, 9, 39, 40, 41] {
                    r.replicas_hashed(h, n, &mut out);
                    assert_eq!(
                        out[..],
                        want[..n.min(40)],
                        "key {k} n {n} weighted {weighted}"
                    );
                }
            }
        }
    }

    #[test]
    fn replicas_do_not_allocate_with_capacity() {
        let r = build(200, true);
        let mut out = Vec::with_capacity(5);
        let ptr = out.as_ptr();
        for k in 0..100u64 {
            r.replicas(Key::U64(k), 5, &mut out);
            assert_eq!(out.len(), 5);
            assert_eq!(out.as_ptr(), ptr);
            assert_eq!(out.capacity(), 5);
        }
    }

    #[test]
    fn bids_stay_positive_and_ordered_at_the_extremes() {
        // u must stay inside (0, 1): at u = 1 the bid would be −0.0, whose bits compare as the
        // largest u64, and a sure winner would lose.
        assert!(unit_open(u64::MAX) < 1.0);
        assert!(unit_open(0) > 0.0);
        for score in [0, 1, 1 << 11, 1 << 63, u64::MAX - (1 << 11), u64::MAX] {
            let b = f64::from_bits(bid(score, 1.0));
            assert!(b > 0.0 && b.is_finite(), "score {score:#x}: bid {b}");
            // The logarithm-skipping bound must not exceed the bid.
            assert!(one_minus_unit_scaled(score) / (1u64 << 53) as f64 <= b);
        }
        assert!(bid(u64::MAX, 1.0) < bid(u64::MAX - (1 << 12), 1.0));
        assert!(bid(1 << 12, 1.0) < bid(0, 1.0));
        assert!(bid(u64::MAX, 1.0 / f64::from(u32::MAX)) < bid(u64::MAX, 1.0));
    }

    #[test]
    fn extreme_hashes_land_on_present_nodes() {
        for weighted in [false, true] {
            let r = build(7, weighted);
            for h in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63, 0x9E37_79B9_7F4A_7C15] {
                assert!(r.locate(h) < 7);
                assert_eq!(r.locate(h), reference_order(&r, h)[0]);
            }
            let one = build(1, weighted);
            assert_eq!(one.locate(u64::MAX), 0);
        }
    }

    #[test]
    fn reports_its_scheme_and_memory() {
        let r = build(1_000, true);
        assert_eq!(r.scheme(), Scheme::Rendezvous { weighted: true });
        assert!(r.weighted());
        // seeds + 1/w + order: 20 bytes a node beyond the member list.
        assert!(r.memory_bytes() >= nodes_memory(r.nodes()) + 20 * 1_000);
        let b = r.rebuild(&nodes(10)).unwrap();
        assert_eq!(b.scheme(), r.scheme());
        assert_eq!(b.nodes().len(), 10);
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::btree_map(
            any::<u64>(),
            (
                "[a-z0-9:.]{0,12}",
                // Small weights, and the whole range to stress the logarithm-skipping bound.
                prop_oneof![1u32..=20, 1u32..=u32::MAX],
            ),
            1..40,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(id, (name, w))| Node::new(id, name).with_weight(w))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn prop_replicas_match_brute_force(ns in arb_nodes(), hash in any::<u64>(), n in 0usize..45, weighted in any::<bool>()) {
            let r = Rendezvous::new(&ns, KeyHasher::new(21), weighted).unwrap();
            let want = reference_order(&r, hash);
            prop_assert_eq!(r.locate(hash), want[0]);
            let mut out = Vec::new();
            r.replicas_hashed(hash, n, &mut out);
            prop_assert_eq!(&out[..], &want[..n.min(ns.len())]);
        }

        #[test]
        fn prop_removal_moves_only_the_removed_node(ns in arb_nodes(), hash in any::<u64>(), pick in any::<prop::sample::Index>(), weighted in any::<bool>()) {
            prop_assume!(ns.len() >= 2);
            let a = Rendezvous::new(&ns, KeyHasher::new(4), weighted).unwrap();
            let gone = pick.index(ns.len());
            let mut rest = ns.clone();
            rest.remove(gone);
            let b = Rendezvous::new(&rest, KeyHasher::new(4), weighted).unwrap();
            let mut out = Vec::new();
            a.replicas_hashed(hash, ns.len(), &mut out);
            // The new preference list is the old one with the removed node taken out.
            let expected: Vec<_> = out.iter().filter(|&&i| i != gone).map(|&i| ns[i].id).collect();
            let mut out_b = Vec::new();
            b.replicas_hashed(hash, rest.len(), &mut out_b);
            let got: Vec<_> = out_b.iter().map(|&i| rest[i].id).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

//! Maglev hashing (Eisenbud et al., NSDI 2016): a prime-sized lookup table filled round-robin
//! from per-node permutations. One array read per lookup, near-perfect balance, more than
//! minimal disruption.

use super::{
    nodes_memory, reduce, validate_nodes, Key, KeyHasher, Node, Placement, PlacementError, Scheme,
};

/// Smallest default table: the paper's small size, prime.
const MIN_DEFAULT_TABLE: u64 = 65_537;

/// Default table entries per node: the paper (§3.4) sizes M ≥ 100·N so that table shares
/// differ by at most 1%; a larger M/N also lowers the extra disruption.
const DEFAULT_ENTRIES_PER_NODE: u64 = 100;

/// A table chosen by default is kept on rebuild while it has at least this many entries per
/// node (shares then differ by at most 10%); below that, rebuilding picks a new default size.
const KEEP_ENTRIES_PER_NODE: u64 = 10;

/// Largest table accepted: 2³¹ − 1 (prime), 8 GiB of `u32` entries.
const MAX_TABLE_SIZE: u64 = (1 << 31) - 1;

/// Marks a slot not yet filled while the table is built.
const EMPTY: u32 = u32::MAX;

/// Maglev consistent hashing: a lookup table of M entries (M prime), each naming a node.
///
/// From D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer"
/// (NSDI 2016), §3.4. Every node gets a permutation of the table's slots from two hashes of
/// its name, `offset = h1 mod M` and `skip = h2 mod (M − 1) + 1` (slot `j` of the
/// permutation is `(offset + j·skip) mod M`, a full cycle because M is prime). Nodes take
/// turns claiming their next preferred slot that is still free until the table is full
/// (the paper's Pseudocode 1). A lookup reads `table[reduce(hash, M)]`.
///
/// The round-robin fill gives every node ⌊M/N⌋ or ⌈M/N⌉ slots, so the table is balanced to
/// within one entry per node; with uniform key hashes, load follows. Because each node
/// prefers the same slots whatever the other members are, a change of one node moves that
/// node's slots plus some that change hands between surviving nodes, as claims in the fill
/// shift (the paper trades this for balance). Measured here for one node removed: 0.64% of
/// the hash space at N = 1000, M = 100 003 (minimal 0.1%); 1.55% at N = 100, M = 65 537
/// (minimal 1%); the extra shrinks as M/N grows (0.31% at N = 1000, M = 1 000 003).
///
/// Table size: `M` is [`Maglev::new`]'s `table_size` when given (a prime ≥ N, at most
/// 2³¹ − 1); otherwise the first prime ≥ max(100·N, 65 537). [`Placement::rebuild`] keeps M
/// while it is still usable for the new member count, so that a membership change does not
/// remap the whole table: a given size while it is ≥ N, a default size while it holds at
/// least 10 entries per node. Past that it picks the default for the new count, and then
/// every key may move once.
///
/// A node's permutation depends only on its name and the seed, so it is the same whoever the
/// other members are; the member order decides who claims first in each round, so routers
/// build identical tables when they agree on names and order.
///
/// Good at: O(1) lookup (one multiply and one load), even load, compact table (4 bytes a
/// slot). Bad at: weights (none), build time O(M log M) and memory O(M) (both ≈ 100× the
/// node count), and disruption several times the minimum for a single change.
#[derive(Clone, Debug)]
pub struct Maglev {
    nodes: Vec<Node>,
    hasher: KeyHasher,
    /// The `table_size` asked for; `None` when M is the default for the member count.
    requested: Option<u64>,
    /// The lookup table: `table[slot]` is an index into `nodes`. Its length is M.
    table: Vec<u32>,
}

impl Maglev {
    /// Build over `nodes` (weights are ignored) with a table of `table_size` entries, or the
    /// default size for `nodes.len()` when `None`.
    ///
    /// Fails with [`PlacementError::InvalidParameter`] naming `table_size` when it is not a
    /// prime, is smaller than the node count, or exceeds 2³¹ − 1, and with
    /// [`PlacementError::TooManyNodes`] when the default size would exceed that.
    pub fn new(
        nodes: &[Node],
        hasher: KeyHasher,
        table_size: Option<u64>,
    ) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        let n = nodes.len() as u64;
        let m = match table_size {
            Some(m) => {
                let invalid = |reason: String| PlacementError::InvalidParameter {
                    name: "table_size",
                    reason,
                };
                if m > MAX_TABLE_SIZE {
                    return Err(invalid(format!(
                        "{m} is larger than the maximum {MAX_TABLE_SIZE}"
                    )));
                }
                if m < n {
                    return Err(invalid(format!("{m} is smaller than the node count {n}")));
                }
                if !is_prime(m) {
                    return Err(invalid(format!("{m} is not prime")));
                }
                m
            }
            None => default_table_size(nodes.len())?,
        };
        Ok(Self {
            table: populate(nodes, &hasher, m)?,
            nodes: nodes.to_vec(),
            hasher,
            requested: table_size,
        })
    }

    /// M, the number of table entries.
    pub fn table_size(&self) -> u64 {
        self.table.len() as u64
    }

    /// Table entries per node, indexed like [`Placement::nodes`].
    pub fn entries_per_node(&self) -> Vec<u64> {
        let mut out = vec![0; self.nodes.len()];
        for &i in &self.table {
            out[i as usize] += 1;
        }
        out
    }

    /// The size to rebuild with for `count` members: this one while still usable.
    fn size_for(&self, count: usize) -> Option<u64> {
        let m = self.table_size();
        let count = count as u64;
        match self.requested {
            Some(_) if m >= count => Some(m),
            None if m >= count.saturating_mul(KEEP_ENTRIES_PER_NODE) => Some(m),
            _ => None,
        }
    }
}

/// The first prime ≥ max(100·`count`, 65 537), or [`PlacementError::TooManyNodes`] past
/// 2³¹ − 1.
fn default_table_size(count: usize) -> Result<u64, PlacementError> {
    let too_many = PlacementError::TooManyNodes {
        count,
        max: (MAX_TABLE_SIZE / DEFAULT_ENTRIES_PER_NODE) as usize,
    };
    let floor = (count as u64)
        .checked_mul(DEFAULT_ENTRIES_PER_NODE)
        .filter(|&f| f <= MAX_TABLE_SIZE)
        .ok_or(too_many.clone())?
        .max(MIN_DEFAULT_TABLE);
    // Prime gaps below 2^31 are under 300, so the search is short; 2^31 − 1 is prime, so it
    // never passes the maximum.
    let m = (floor..=MAX_TABLE_SIZE)
        .find(|&m| is_prime(m))
        .ok_or(too_many)?;
    Ok(m)
}

/// The paper's population loop (Pseudocode 1), with each permutation walked incrementally
/// instead of stored: O(N) state besides the table, and no division per step.
///
/// Fails, naming `table_size`, only when the table cannot be allocated.
fn populate(nodes: &[Node], hasher: &KeyHasher, m: u64) -> Result<Vec<u32>, PlacementError> {
    let mut skip: Vec<u64> = Vec::with_capacity(nodes.len());
    // Slot each node tries next: permutation[i][next[i]] in the paper.
    let mut next: Vec<u64> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let offset = hasher.hash_point(&node.name, 0) % m;
        // m ≥ 2 as a prime; with m − 1 = 1 every skip is 1.
        skip.push(hasher.hash_point(&node.name, 1) % (m - 1) + 1);
        next.push(offset);
    }
    let mut table = Vec::new();
    table
        .try_reserve_exact(m as usize)
        .map_err(|_| PlacementError::InvalidParameter {
            name: "table_size",
            reason: format!("cannot allocate {} bytes for {m} entries", m * 4),
        })?;
    table.resize(m as usize, EMPTY);
    let mut filled = 0u64;
    // m ≥ N, so every node claims a slot in the first round; the loop ends mid-round when
    // the table is full.
    'fill: loop {
        for (i, (slot, &step)) in next.iter_mut().zip(&skip).enumerate() {
            // A free slot is within m steps: the permutation visits every slot once.
            while table[*slot as usize] != EMPTY {
                *slot += step;
                if *slot >= m {
                    *slot -= m;
                }
            }
            table[*slot as usize] = i as u32;
            *slot += step;
            if *slot >= m {
                *slot -= m;
            }
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    Ok(table)
}

/// Whether `n` is prime: Miller–Rabin with the first twelve prime bases, which is exact for
/// every `u64` (Sorenson and Webster 2015: the bases 2..=37 have no common strong
/// pseudoprime below 3.3·10²⁴).
fn is_prime(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in BASES {
        if n % p == 0 {
            return n == p;
        }
    }
    let mul = |a: u64, b: u64| (u128::from(a) * u128::from(b) % u128::from(n)) as u64;
    let pow = |mut base: u64, mut exp: u64| {
        let mut acc = 1u64;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    };
    // n − 1 = d·2^s with d odd.
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'witness: for a in BASES {
        let mut x = pow(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

impl Placement for Maglev {
    fn scheme(&self) -> Scheme {
        Scheme::Maglev {
            table_size: self.requested,
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
        // reduce(_, M) < M = table.len(), so the index is always in range.
        self.table[reduce(hash, self.table.len() as u64) as usize] as usize
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + nodes_memory(&self.nodes)
            + self.table.capacity() * std::mem::size_of::<u32>()
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        validate_nodes(nodes)?;
        let next = match self.size_for(nodes.len()) {
            Some(m) => Self {
                table: populate(nodes, &self.hasher, m)?,
                nodes: nodes.to_vec(),
                hasher: self.hasher,
                requested: self.requested,
            },
            None => Self::new(nodes, self.hasher, None)?,
        };
        Ok(Box::new(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::*;
    use crate::placement::NodeId;

    /// Fraction of table slots whose owner (by id) differs: the exact share of hash space
    /// that moved.
    fn slots_moved(a: &Maglev, b: &Maglev) -> f64 {
        assert_eq!(a.table.len(), b.table.len());
        let moved = a
            .table
            .iter()
            .zip(&b.table)
            .filter(|(&x, &y)| a.nodes[x as usize].id != b.nodes[y as usize].id)
            .count();
        moved as f64 / a.table.len() as f64
    }

    #[test]
    fn primality() {
        let primes = [
            2,
            3,
            5,
            37,
            41,
            65_537,
            100_003,
            1_000_003,
            MAX_TABLE_SIZE,
            18_446_744_073_709_551_557,
        ];
        for p in primes {
            assert!(is_prime(p), "{p}");
        }
        // Carmichael numbers, a strong pseudoprime to bases 2, 3, 5, 7, squares, the u64 max.
        let composites = [
            0,
            1,
            4,
            9,
            561,
            1105,
            3_215_031_751,
            65_536,
            100_001,
            1 << 31,
            u64::MAX,
            4_294_967_297,
        ];
        for c in composites {
            assert!(!is_prime(c), "{c}");
        }
        // Against trial division on a dense range.
        for n in 0..20_000u64 {
            let trial = n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
            assert_eq!(is_prime(n), trial, "{n}");
        }
    }

    #[test]
    fn table_size_defaults_and_validation() {
        let h = KeyHasher::new(0);
        assert_eq!(
            Maglev::new(&nodes(10), h, None).unwrap().table_size(),
            65_537
        );
        // 100·1000 = 100 000; the first prime at or above it is 100 003.
        assert_eq!(
            Maglev::new(&nodes(1000), h, None).unwrap().table_size(),
            100_003
        );
        assert_eq!(
            Maglev::new(&nodes(10), h, Some(13)).unwrap().table_size(),
            13
        );
        for bad in [Some(12), Some(7), Some(MAX_TABLE_SIZE + 2)] {
            match Maglev::new(&nodes(10), h, bad) {
                Err(PlacementError::InvalidParameter { name, .. }) => {
                    assert_eq!(name, "table_size")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            default_table_size(30_000_000),
            Err(PlacementError::TooManyNodes { .. })
        ));
        assert_eq!(
            Maglev::new(&nodes(3), h, Some(3))
                .unwrap()
                .entries_per_node(),
            vec![1, 1, 1]
        );
        assert_eq!(
            Maglev::new(&nodes(1), h, Some(2))
                .unwrap()
                .entries_per_node(),
            vec![2]
        );
    }

    #[test]
    fn table_is_a_full_round_robin_fill() {
        for (n, m) in [(1, Some(2)), (7, Some(7)), (10, Some(101)), (333, None)] {
            let g = Maglev::new(&nodes(n), KeyHasher::new(2), m).unwrap();
            assert!(
                g.table.iter().all(|&i| (i as usize) < g.nodes.len()),
                "unfilled slot"
            );
            let per = g.entries_per_node();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            // Pseudocode 1 gives every node one slot per round: ⌊M/N⌋ or ⌈M/N⌉ each.
            let m = g.table_size();
            assert_eq!(*lo, m / n, "n={n}");
            assert!(*hi == m.div_ceil(n) && hi - lo <= 1, "n={n}");
            assert_eq!(per.iter().sum::<u64>(), m);
        }
    }

    #[test]
    fn balanced() {
        // Table shares are equal to within one entry (≤ 1.0016 of the mean for N = 100,
        // M = 65 537), so key load is binomial around the mean: 3σ ≈ 3% for 10 000 a node.
        let g = Maglev::new(&nodes(100), KeyHasher::new(0), None).unwrap();
        let c = counts(&g, 1_000_000);
        assert!(peak_to_mean(&c) < 1.05, "peak/mean {}", peak_to_mean(&c));
    }

    #[test]
    fn deterministic_and_order_independent_permutations() {
        let a = Maglev::new(&nodes(50), KeyHasher::new(11), None).unwrap();
        let b = Maglev::new(&nodes(50), KeyHasher::new(11), None).unwrap();
        assert_eq!(a.table, b.table);
        let c = Maglev::new(&nodes(50), KeyHasher::new(12), None).unwrap();
        assert_ne!(a.table, c.table);
        // Reversing the member list changes only who claims first in each round.
        let mut rev = nodes(50);
        rev.reverse();
        let r = Maglev::new(&rev, KeyHasher::new(11), None).unwrap();
        assert!(slots_moved(&a, &r) < 0.05, "{}", slots_moved(&a, &r));
    }

    #[test]
    fn disruption_on_one_node_change() {
        // Minimal disruption is the changed node's share, 1/N. Maglev moves more: when a node
        // leaves or joins, other nodes' claims in the fill shift too (the paper, §3.4 and
        // Fig. 12, trades disruption for balance; Envoy's docs measure about double the keys
        // of a ring). Measured here, share of hash space moved for one node of N:
        //   N = 100,  M = 65 537 (default):  removal 1.55%  vs 1/N = 1%   (+0.55 points)
        //   N = 1000, M = 100 003 (default): removal 0.64%, addition 0.67% vs 0.1% (+0.55)
        //   N = 1000, M = 655 373:           removal 0.43%;  M = 1 000 003: 0.31%
        // Ten of 1000 removed at M = 100 003: 2.6% vs 1%. The bounds allow 1/N + 1% for N = 100
        // and 1/N + 0.9% for N = 1000, so other seeds do not flake; both must move at least
        // the changed node's own slots.
        for (n, bound) in [(100u64, 0.02), (1000, 0.01)] {
            let all = nodes(n + 1);
            let h = KeyHasher::new(3);
            let a = Maglev::new(&all[..n as usize], h, None).unwrap();
            let m = a.table_size();
            let removed = a.rebuild(&all[..n as usize - 1]).unwrap();
            let removed = Maglev::new(removed.nodes(), h, Some(m)).unwrap();
            let added = Maglev::new(&all, h, Some(m)).unwrap();
            let (r, d) = (slots_moved(&a, &removed), slots_moved(&a, &added));
            let own = (m / n) as f64 / m as f64;
            assert!(
                r >= own && r < 1.0 / n as f64 + bound,
                "N={n}: removal moved {r}"
            );
            assert!(
                d >= (m / (n + 1)) as f64 / m as f64 && d < 1.0 / n as f64 + bound,
                "N={n}: addition moved {d}"
            );
            // Keys follow the table.
            let keys = moved_fraction(&a, &removed, 100_000);
            assert!(
                (keys - r).abs() < 0.003,
                "N={n}: keys moved {keys}, slots {r}"
            );
        }
    }

    #[test]
    fn rebuild_keeps_the_table_size_while_usable() {
        let h = KeyHasher::new(0);
        let a = Maglev::new(&nodes(700), h, None).unwrap();
        assert_eq!(a.table_size(), 70_001);
        // 701 nodes would default to 70 111, and a table of another size remaps nearly every
        // key; keeping 70 001 moves about 0.6% of them (see disruption_on_one_node_change).
        let b = a.rebuild(&nodes(701)).unwrap();
        assert_eq!(b.scheme(), Scheme::Maglev { table_size: None });
        assert_eq!(
            b.memory_bytes(),
            a.memory_bytes() + std::mem::size_of::<Node>() + "node-700".len()
        );
        assert!(moved_fraction(&a, b.as_ref(), 100_000) < 0.015);
        let resized = Maglev::new(&nodes(701), h, None).unwrap();
        assert!(moved_fraction(&a, &resized, 100_000) > 0.5);
        // Past 10 entries a node a default table is resized.
        let c = a.rebuild(&nodes(7001)).unwrap();
        let c_size = c.memory_bytes() - nodes_memory(c.nodes()) - std::mem::size_of::<Maglev>();
        assert_eq!(c_size as u64, 4 * default_table_size(7001).unwrap());
        // A given size is kept while ≥ N, then replaced by the default.
        let g = Maglev::new(&nodes(10), h, Some(13)).unwrap();
        assert_eq!(
            g.rebuild(&nodes(13)).unwrap().scheme(),
            Scheme::Maglev {
                table_size: Some(13)
            }
        );
        assert_eq!(
            g.rebuild(&nodes(14)).unwrap().scheme(),
            Scheme::Maglev { table_size: None }
        );
        assert!(matches!(g.rebuild(&[]), Err(PlacementError::NoNodes)));
    }

    #[test]
    fn replicas_distinct_primary_first() {
        let g = Maglev::new(&nodes(9), KeyHasher::new(1), None).unwrap();
        let mut out = Vec::new();
        for k in 0..1000u64 {
            g.replicas(Key::U64(k), 3, &mut out);
            assert_eq!(out[0], g.locate(g.hash_key(Key::U64(k))));
            assert!(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        }
        g.replicas(Key::U64(1), 50, &mut out);
        assert_eq!(out.len(), 9);
    }

    #[test]
    fn locate_never_panics_at_the_edges() {
        let g = Maglev::new(&nodes(5), KeyHasher::new(0), Some(5)).unwrap();
        for h in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            assert!(g.locate(h) < 5);
        }
        assert_eq!(
            g.nodes()[g.locate(u64::MAX)].id,
            NodeId(g.nodes()[g.table[4] as usize].id.0)
        );
    }
}

//! Jump consistent hash (Lamping and Veach, 2014): no memory beyond the member list, even
//! balance, O(log N) lookup, but buckets are numbered `0..N`, so only the last bucket can go
//! away without moving someone else's keys.

use std::collections::HashMap;

use super::{
    nodes_memory, validate_nodes, Key, KeyHasher, Node, NodeId, Placement, PlacementError, Scheme,
};

/// The jump consistent hash of `key` over `buckets` buckets: a bucket in `0..buckets`.
///
/// This is exactly the function of J. Lamping and E. Veach, "A Fast, Minimal Memory,
/// Consistent Hash Algorithm" (2014, arXiv:1406.2294), Figure 1, so its answers match every
/// faithful implementation (the paper's C++, Guava's `Hashing.consistentHash`, Go's
/// `dgryski/go-jump`). When the bucket count grows from `n` to `n + 1`, exactly the keys that
/// now answer `n` move, and each key is equally likely to be in any bucket.
///
/// `buckets` must be at least 1 for the answer to mean anything; `jump_hash(key, 0)` returns
/// 0 rather than panicking, so callers that can see an empty set must check it themselves.
/// Bucket counts above 2³¹ − 1 (where the paper's `int32_t` signature stops) continue the same
/// sequence.
///
/// Takes about ln(buckets) + 0.6 loop steps on average: 9 for 5000 buckets.
#[inline]
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets);
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's double-precision jump. The cast saturates, where C would be undefined,
        // only for bucket counts past 2^31 which the paper does not cover.
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // b stays −1 only when the loop never ran (buckets == 0).
    b.max(0) as u32
}

/// Jump consistent hash over the members, buckets `0..N`.
///
/// Keys: a [`Key::U64`] is fed to `jump_hash` unchanged, as the reference algorithm does, so
/// a `u64` key lands in the same bucket here as in any other jump implementation; bytes are
/// hashed with the seeded [`KeyHasher`] first.
///
/// Buckets and nodes: [`Jump::new`] gives bucket `i` to the `i`th member of the list.
/// [`Placement::nodes`] keeps the member order the caller gave; a bucket table maps buckets to
/// those indexes. [`Placement::rebuild`] carries the buckets over instead of renumbering:
///
/// - a surviving node keeps its bucket, unless it is moved down to fill a hole:
/// - each removed node's bucket is filled by the node in the highest bucket (swap-remove),
///   so jump's bucket count shrinks by one per removal;
/// - added nodes take new buckets at the end, in the order the new member list gives them.
///
/// So removing the node in the last bucket moves exactly that node's keys (1/N of them), as
/// the paper promises; removing any other node moves its own keys and the keys of the last
/// bucket's node, at most ≈ 2/N (the price jump pays for numbered buckets, see [`Memento`]
/// for the scheme that avoids it). Adding a node moves 1/(N+1) of the keys, all to it.
///
/// Good at: no per-node memory or table to build, even balance, and exact compatibility
/// with other jump implementations. Bad at: weights (none), O(log N) lookup (a loop with a
/// float division per step), and removal from the middle.
///
/// [`Memento`]: super::Memento
#[derive(Clone, Debug)]
pub struct Jump {
    nodes: Vec<Node>,
    hasher: KeyHasher,
    /// `bucket_node[b]`: index into `nodes` of the owner of bucket `b`.
    bucket_node: Vec<u32>,
}

impl Jump {
    /// Build over `nodes`, giving bucket `i` to `nodes[i]` (weights are ignored).
    pub fn new(nodes: &[Node], hasher: KeyHasher) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        // validate_nodes caps the count at u32::MAX, so every index fits.
        let bucket_node = (0..nodes.len() as u32).collect();
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher,
            bucket_node,
        })
    }

    /// The bucket each member holds, indexed like [`Placement::nodes`].
    pub fn buckets(&self) -> Vec<u32> {
        let mut out = vec![0; self.nodes.len()];
        for (bucket, &node) in self.bucket_node.iter().enumerate() {
            out[node as usize] = bucket as u32;
        }
        out
    }

    /// The layout after the members become `nodes`, per the rules in the type docs.
    fn carry_over(&self, nodes: &[Node]) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        let new_index: HashMap<NodeId, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i as u32))
            .collect();
        // Owner of each old bucket in the new member list, or None where the owner left.
        let mut buckets: Vec<Option<u32>> = self
            .bucket_node
            .iter()
            .map(|&old| new_index.get(&self.nodes[old as usize].id).copied())
            .collect();
        let holes: Vec<usize> = (0..buckets.len())
            .filter(|&b| buckets[b].is_none())
            .collect();
        let trim = |buckets: &mut Vec<Option<u32>>| {
            while buckets.last() == Some(&None) {
                buckets.pop();
            }
        };
        trim(&mut buckets);
        // Ascending, so the node moved into a hole always comes from above every later hole.
        for hole in holes {
            if hole >= buckets.len() {
                break;
            }
            let last = buckets.pop().flatten();
            buckets[hole] = last;
            trim(&mut buckets);
        }
        let mut bucket_node: Vec<u32> = buckets.into_iter().flatten().collect();
        let mut held = vec![false; nodes.len()];
        for &i in &bucket_node {
            held[i as usize] = true;
        }
        bucket_node.extend((0..nodes.len() as u32).filter(|&i| !held[i as usize]));
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher: self.hasher,
            bucket_node,
        })
    }
}

impl Placement for Jump {
    fn scheme(&self) -> Scheme {
        Scheme::Jump
    }

    fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    #[inline]
    fn hash_key(&self, key: Key<'_>) -> u64 {
        match key {
            Key::U64(k) => k,
            Key::Bytes(_) => self.hasher.hash(key),
        }
    }

    #[inline]
    fn locate(&self, hash: u64) -> usize {
        // The table length is the node count, ≥ 1 and ≤ u32::MAX, so the bucket is in range.
        let bucket = jump_hash(hash, self.bucket_node.len() as u32);
        self.bucket_node[bucket as usize] as usize
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + nodes_memory(&self.nodes)
            + self.bucket_node.capacity() * std::mem::size_of::<u32>()
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        Ok(Box::new(self.carry_over(nodes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::*;
    use proptest::prelude::*;

    /// Output of scripts/fixtures/jump_reference.c, the paper's function compiled with gcc.
    const REFERENCE: &str = include_str!("../../tests/fixtures/jump_reference.txt");

    #[test]
    fn matches_the_c_reference() {
        let mut lines = 0;
        for line in REFERENCE.lines() {
            let f: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let (key, buckets, want) = (f[0], f[1] as u32, f[2] as u32);
            assert_eq!(jump_hash(key, buckets), want, "jump_hash({key}, {buckets})");
            lines += 1;
        }
        assert_eq!(lines, 64 * 7, "fixture truncated");
    }

    #[test]
    fn matches_other_implementations() {
        // dgryski/go-jump, jump_test.go ("Generated from the reference C++ code"):
        // Hash(key, i + 1) for i in 0..len.
        let go: [(u64, &[u32]); 4] = [
            (0, &[0; 20]),
            (
                1,
                &[0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17],
            ),
            (
                0xdead_beef,
                &[0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16],
            ),
            (
                0x0ddc_0ffe_ebad_f00d,
                &[0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15],
            ),
        ];
        for (key, want) in go {
            for (i, &w) in want.iter().enumerate() {
                assert_eq!(
                    jump_hash(key, i as u32 + 1),
                    w,
                    "go-jump key {key} buckets {}",
                    i + 1
                );
            }
        }
        // google/guava, guava-tests/test/com/google/common/hash/HashingTest.java,
        // testConsistentHash_linearCongruentialGeneratorCompatibility.
        let golden100 = [
            0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83,
        ];
        for (key, &w) in golden100.iter().enumerate() {
            assert_eq!(jump_hash(key as u64, 100), w, "guava key {key}");
        }
        assert_eq!(jump_hash(10_863_919_174_838_991, 11), 6);
        assert_eq!(jump_hash(2_016_238_256_797_177_309, 11), 3);
        assert_eq!(jump_hash(1_673_758_223_894_951_030, 11), 5);
        assert_eq!(jump_hash(2, 100_001), 80_343);
        assert_eq!(jump_hash(2201, 100_001), 22_152);
        assert_eq!(jump_hash(2202, 100_001), 15_018);
    }

    #[test]
    fn zero_and_huge_bucket_counts_do_not_panic() {
        for key in [0, 1, u64::MAX, 0x8000_0000_0000_0000] {
            assert_eq!(jump_hash(key, 0), 0);
            assert_eq!(jump_hash(key, 1), 0);
            assert!(jump_hash(key, u32::MAX) < u32::MAX);
        }
    }

    #[test]
    fn u64_keys_are_used_directly_and_bytes_hashed() {
        let j = Jump::new(&nodes(10), KeyHasher::new(3)).unwrap();
        assert_eq!(j.hash_key(Key::U64(12345)), 12345);
        assert_eq!(j.locate(12345), jump_hash(12345, 10) as usize);
        assert_eq!(
            j.hash_key(Key::from("k")),
            KeyHasher::new(3).hash(Key::from("k"))
        );
        let again = Jump::new(&nodes(10), KeyHasher::new(3)).unwrap();
        for k in 0..1000u64 {
            assert_eq!(j.lookup(Key::U64(k)).id, again.lookup(Key::U64(k)).id);
        }
    }

    #[test]
    fn balanced() {
        // Each key is uniform over the buckets (paper, §3), so the peak of 100 bins of ~10 000
        // keys is mean + ~3σ = 1 + 3/√10 000 ≈ 1.03 at worst.
        let j = Jump::new(&nodes(100), KeyHasher::new(0)).unwrap();
        let c = counts(&j, 1_000_000);
        assert!(peak_to_mean(&c) < 1.05, "peak/mean {}", peak_to_mean(&c));
    }

    #[test]
    fn removing_the_last_bucket_moves_exactly_its_keys() {
        let all = nodes(100);
        let a = Jump::new(&all, KeyHasher::new(0)).unwrap();
        let b = a.carry_over(&all[..99]).unwrap();
        let gone = all[99].id;
        let mut moved = 0;
        for k in 0..200_000u64 {
            let (before, after) = (a.lookup(Key::U64(k)).id, b.lookup(Key::U64(k)).id);
            if before != after {
                assert_eq!(before, gone, "key {k} of a surviving node moved");
                moved += 1;
            } else {
                assert_ne!(before, gone);
            }
        }
        // Exactly the removed node's keys: 1/100 of them, within sampling noise.
        let frac = moved as f64 / 200_000.0;
        assert!((frac - 0.01).abs() < 0.002, "moved {frac}");
    }

    #[test]
    fn removing_a_middle_bucket_moves_its_keys_and_the_last_buckets() {
        let all = nodes(100);
        let a = Jump::new(&all, KeyHasher::new(0)).unwrap();
        let mut rest = all.clone();
        let gone = rest.remove(37).id;
        let b = a.carry_over(&rest).unwrap();
        // Swap-remove: the last bucket's node took bucket 37, everyone else kept theirs.
        let id_of = |p: &Jump, bucket: usize| p.nodes[p.bucket_node[bucket] as usize].id;
        assert_eq!(id_of(&b, 37), all[99].id);
        for bucket in (0..99).filter(|&x| x != 37) {
            assert_eq!(id_of(&b, bucket), id_of(&a, bucket));
        }
        let mut moved = 0;
        for k in 0..200_000u64 {
            let (before, after) = (a.lookup(Key::U64(k)).id, b.lookup(Key::U64(k)).id);
            if before != after {
                assert!(
                    before == gone || before == all[99].id,
                    "key {k} of {before} moved"
                );
                moved += 1;
            }
        }
        // Its own keys (1/N) plus the last bucket's keys minus the 1/(N−1) of those that land
        // back in bucket 37: ≈ 2/N − 1/N² = 0.0199 for N = 100, never more than 2/N + noise.
        let frac = moved as f64 / 200_000.0;
        assert!((frac - 0.0199).abs() < 0.003, "moved {frac}");
    }

    #[test]
    fn adding_moves_only_keys_to_the_new_node() {
        let all = nodes(101);
        let a = Jump::new(&all[..100], KeyHasher::new(0)).unwrap();
        let b = a.carry_over(&all).unwrap();
        assert_eq!(b.buckets()[100], 100);
        let frac = moved_fraction(&a, &b, 200_000);
        for k in 0..20_000u64 {
            let (before, after) = (a.lookup(Key::U64(k)).id, b.lookup(Key::U64(k)).id);
            assert!(before == after || after == all[100].id);
        }
        // Ideal 1/101 ≈ 0.0099.
        assert!((frac - 1.0 / 101.0).abs() < 0.002, "moved {frac}");
    }

    #[test]
    fn rebuild_keeps_surviving_buckets_under_reordering() {
        let all = nodes(10);
        let a = Jump::new(&all, KeyHasher::new(0)).unwrap();
        // Remove 2 and 9 (the last), add 10 and 11, and hand the list over shuffled.
        let mut next: Vec<Node> = all
            .iter()
            .filter(|n| n.id.0 != 2 && n.id.0 != 9)
            .cloned()
            .collect();
        next.push(Node::new(10, "node-10"));
        next.push(Node::new(11, "node-11"));
        next.reverse();
        let b = a.carry_over(&next).unwrap();
        let bucket_of = |p: &Jump, id: u64| {
            let i = p.nodes.iter().position(|n| n.id.0 == id).unwrap();
            p.buckets()[i]
        };
        // 9 left the tail, so 8 (the new last) fills 2; 10 and 11 append in list order.
        for id in [0, 1, 3, 4, 5, 6, 7] {
            assert_eq!(bucket_of(&b, id), id as u32);
        }
        assert_eq!(bucket_of(&b, 8), 2);
        assert_eq!(bucket_of(&b, 11), 8);
        assert_eq!(bucket_of(&b, 10), 9);
        assert_eq!(b.nodes(), &next[..]);
    }

    #[test]
    fn replicas_distinct_primary_first() {
        let j = Jump::new(&nodes(8), KeyHasher::new(1)).unwrap();
        let mut out = Vec::new();
        for k in 0..1000u64 {
            j.replicas(Key::U64(k), 3, &mut out);
            assert_eq!(out[0], j.locate(k));
            assert_eq!(out.len(), 3);
            assert!(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        }
        j.replicas(Key::U64(5), 20, &mut out);
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn memory_counts_the_bucket_table() {
        let j = Jump::new(&nodes(1000), KeyHasher::new(0)).unwrap();
        assert!(j.memory_bytes() >= nodes_memory(j.nodes()) + 4000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any rebuild maps buckets 0..N one-to-one onto the new members, and a key whose
        /// owner survived moves only if it was in the removed buckets or the vacated tail.
        #[test]
        fn rebuild_is_a_valid_swap_remove(
            removed in proptest::collection::btree_set(0u64..40, 0..39),
            added in 0u64..5,
        ) {
            let all = nodes(40);
            let a = Jump::new(&all, KeyHasher::new(0)).unwrap();
            let mut next: Vec<Node> = all.iter().filter(|n| !removed.contains(&n.id.0)).cloned().collect();
            next.extend((0..added).map(|i| Node::new(100 + i, format!("new-{i}"))));
            prop_assume!(!next.is_empty());
            let b = a.carry_over(&next).unwrap();
            let mut seen = b.bucket_node.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..next.len() as u32).collect::<Vec<_>>());
            let survivors = all.len() - removed.len();
            let old_bucket = a.buckets();
            let new_bucket = b.buckets();
            for (i, n) in next.iter().enumerate() {
                if let Some(old) = all.iter().position(|o| o.id == n.id) {
                    // A survivor keeps its bucket unless it sat above the surviving count and
                    // was moved down into a hole.
                    let (was, now) = (old_bucket[old] as usize, new_bucket[i] as usize);
                    prop_assert!(was == now || (was >= survivors && now < survivors));
                } else {
                    prop_assert!(new_bucket[i] as usize >= survivors);
                }
            }
        }
    }
}

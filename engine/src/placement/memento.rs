//! MementoHash (Coluzzi, Brocco, Antonucci, Leonardi): jump consistent hash plus a memory of
//! removed buckets, so that any node can leave and only its own keys move.

use std::collections::{BTreeSet, HashMap};

use super::jump::jump_hash;
use super::{
    nodes_memory, reduce, rehash, validate_nodes, Key, KeyHasher, Node, NodeId, Placement,
    PlacementError, Scheme,
};

/// Marks a bucket field that does not apply: no node (removed bucket) or no replacer
/// (working bucket).
const NONE: u32 = u32::MAX;

/// Separates the key's rehash stream inside a lookup from the replica draws
/// ([`rehash`]`(h, 1..)`), which would otherwise reuse the same values.
const REHASH_SALT: u64 = 0x6d65_6d65_6e74_6f21;

/// One bucket of the b-array.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Bucket {
    /// Index into `nodes` of the owner, or [`NONE`] when the bucket is removed.
    node: u32,
    /// For a removed bucket, the working-set size right after its removal, which is also the
    /// bucket that took its place; [`NONE`] for a working bucket.
    replacer: u32,
}

/// A removed bucket, in removal order, and who held it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Removed {
    bucket: u32,
    former: NodeId,
}

/// MementoHash: jump hash over a b-array of buckets, some of which are removed.
///
/// From M. Coluzzi, A. Brocco, A. Antonucci, T. Leonardi, "MementoHash: A Stateful, Minimal
/// Memory, Best Performing Consistent Hash Algorithm" (arXiv:2306.09783, 2023; IEEE/ACM ToN
/// 2024). A lookup runs `jump_hash` over the b-array size `n`.
/// If the bucket is working, that is the answer. If it was removed, its replacement entry
/// records `r`, the working-set size right after the removal: the key is rehashed (seeded by
/// the bucket) into `0..r`, and any bucket hit there that was removed *earlier* (replacer ≥
/// `r`) is replaced by its replacer, the bucket that conceptually swapped into its place.
/// A bucket removed *later* starts the next round with a smaller `r`, so the loop ends.
/// The effect is that removing any bucket moves exactly the keys it held and spreads them
/// evenly over the rest, while a removal of the last bucket of a table with no removals
/// just shrinks `n`, as in plain jump.
///
/// Buckets and nodes: [`Memento::new`] gives bucket `i` to the `i`th member; the member list
/// ([`Placement::nodes`]) keeps the caller's order and each bucket records its owner's index.
/// [`Placement::rebuild`] applies the difference between the old and the new member list:
///
/// - each departed node's bucket is removed (highest bucket first, so that with no earlier
///   removals trailing buckets just shrink the b-array);
/// - each added node restores the most recently removed bucket (LIFO, as the algorithm
///   requires); when several nodes are added at once and one of them held a bucket being
///   restored, it gets that bucket back; the rest take buckets in member-list order;
/// - once no bucket is removed, added nodes append new buckets.
///
/// So only the keys of removed or added nodes move. A member list with no survivor at all
/// builds afresh. Layout depends on history: two routers agree on placement when they have
/// applied the same sequence of member lists, not merely reached the same one.
///
/// Memory: the paper keeps the replacement set in a hash table of removed buckets, O(r).
/// Here the bucket→node table already costs one entry per bucket, so the replacer sits next
/// to the owner in the same 8-byte entry and a lookup that hits a removed bucket reads one
/// array instead of probing a map: O(N + r) overall, with the removal stack (for LIFO
/// restores) O(r).
///
/// Keys are hashed with the seeded [`KeyHasher`] (bytes and `u64` alike).
///
/// Good at: minimal disruption for any removal (exactly 1/N), even balance, O(N + r)
/// memory, lookup as fast as jump while few buckets are removed. Bad at: weights (none);
/// a key that lands on a removed bucket takes extra rehash rounds, so lookups slow down as
/// the removed fraction grows; layout depends on the order of changes.
#[derive(Clone, Debug)]
pub struct Memento {
    nodes: Vec<Node>,
    hasher: KeyHasher,
    /// The b-array: `buckets.len()` is jump's bucket count.
    buckets: Vec<Bucket>,
    /// Removed buckets, most recent last: the next bucket an added node restores.
    removed: Vec<Removed>,
}

impl Memento {
    /// Build over `nodes`, giving bucket `i` to `nodes[i]` (weights are ignored).
    pub fn new(nodes: &[Node], hasher: KeyHasher) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        let buckets = (0..nodes.len() as u32)
            .map(|node| Bucket {
                node,
                replacer: NONE,
            })
            .collect();
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher,
            buckets,
            removed: Vec::new(),
        })
    }

    /// Jump's bucket count: working buckets plus removed ones still remembered.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Removed buckets held in the replacement table.
    pub fn removed_count(&self) -> usize {
        self.removed.len()
    }

    fn working(&self) -> u32 {
        (self.buckets.len() - self.removed.len()) as u32
    }

    /// Memento's remove of bucket `b` (a working bucket).
    fn remove_bucket(&mut self, b: u32, former: NodeId) {
        if self.removed.is_empty() && b as usize + 1 == self.buckets.len() {
            // Jump's own case: dropping the last bucket needs no memory.
            self.buckets.pop();
            return;
        }
        let replacer = self.working() - 1;
        self.buckets[b as usize] = Bucket {
            node: NONE,
            replacer,
        };
        self.removed.push(Removed { bucket: b, former });
    }

    /// Memento's add, giving the restored (or new) bucket to node `node`.
    fn add_bucket(&mut self, node: u32) {
        let bucket = Bucket {
            node,
            replacer: NONE,
        };
        match self.removed.pop() {
            Some(r) => self.buckets[r.bucket as usize] = bucket,
            None => self.buckets.push(bucket),
        }
    }

    /// The layout after the members become `nodes`, per the rules in the type docs.
    fn carry_over(&self, nodes: &[Node]) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        let new_index: HashMap<NodeId, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i as u32))
            .collect();
        let mut next = Self {
            nodes: nodes.to_vec(),
            hasher: self.hasher,
            buckets: self.buckets.clone(),
            removed: self.removed.clone(),
        };
        let mut held = vec![false; nodes.len()];
        let mut departed = Vec::new();
        for (b, slot) in next.buckets.iter_mut().enumerate() {
            if slot.node == NONE {
                continue;
            }
            let id = self.nodes[slot.node as usize].id;
            match new_index.get(&id) {
                Some(&i) => {
                    slot.node = i;
                    held[i as usize] = true;
                }
                None => departed.push((b as u32, id)),
            }
        }
        if departed.len() == self.working() as usize {
            // Every key moves anyway; start from a clean table.
            return Self::new(nodes, self.hasher);
        }
        for &(b, id) in departed.iter().rev() {
            next.remove_bucket(b, id);
        }
        // Added nodes by member-list index: those that once held a bucket still in the
        // replacement table wait for it; the others take whatever bucket comes next.
        let mut plain: BTreeSet<u32> = (0..nodes.len() as u32)
            .filter(|&i| !held[i as usize])
            .collect();
        let mut awaiting = BTreeSet::new();
        for r in &next.removed {
            if let Some(&i) = new_index.get(&r.former) {
                if plain.remove(&i) {
                    awaiting.insert(i);
                }
            }
        }
        loop {
            let returning = next
                .removed
                .last()
                .and_then(|r| new_index.get(&r.former))
                .copied()
                .filter(|i| awaiting.contains(i));
            let node = match returning {
                Some(i) => {
                    awaiting.remove(&i);
                    i
                }
                // A node whose bucket lies deeper gives way while others can take this one.
                None => match plain.pop_first().or_else(|| awaiting.pop_first()) {
                    Some(i) => i,
                    None => break,
                },
            };
            next.add_bucket(node);
        }
        Ok(next)
    }
}

impl Placement for Memento {
    fn scheme(&self) -> Scheme {
        Scheme::Memento
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
        let buckets = &self.buckets[..];
        // The b-array holds at least one working bucket and at most u32::MAX entries.
        let mut b = jump_hash(hash, buckets.len() as u32);
        let mut slot = buckets[b as usize];
        // Each round ends on a working bucket or on one removed later, whose replacer is
        // strictly smaller than `slot.replacer`: at most one round per removed bucket.
        while slot.replacer != NONE {
            let r = slot.replacer;
            b = reduce(rehash(hash ^ REHASH_SALT, u64::from(b)), u64::from(r)) as u32;
            slot = buckets[b as usize];
            // Buckets removed before the one we left were swapped for their replacers.
            while slot.replacer != NONE && slot.replacer >= r {
                b = slot.replacer;
                slot = buckets[b as usize];
            }
        }
        slot.node as usize
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + nodes_memory(&self.nodes)
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.removed.capacity() * std::mem::size_of::<Removed>()
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
    use rand::rngs::SmallRng;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    fn without(list: &[Node], ids: &[u64]) -> Vec<Node> {
        list.iter()
            .filter(|n| !ids.contains(&n.id.0))
            .cloned()
            .collect()
    }

    /// Owner ids of keys `0..keys`.
    fn owners(p: &Memento, keys: u64) -> Vec<NodeId> {
        (0..keys).map(|k| p.lookup(Key::U64(k)).id).collect()
    }

    /// Asserts every key that moved between `a` and `b` left a departed node or went to an
    /// arrived one, and returns the fraction that moved.
    fn check_moves(before: &[NodeId], after: &[NodeId], a: &[Node], b: &[Node]) -> f64 {
        let present = |list: &[Node], id: NodeId| list.iter().any(|n| n.id == id);
        let mut moved = 0;
        for (k, (&x, &y)) in before.iter().zip(after).enumerate() {
            if x != y {
                assert!(
                    !present(b, x) || !present(a, y),
                    "key {k} moved {x} -> {y} though both stayed"
                );
                moved += 1;
            } else {
                assert!(present(b, x), "key {k} still on departed {x}");
            }
        }
        moved as f64 / before.len() as f64
    }

    #[test]
    fn without_removals_it_is_jump() {
        let m = Memento::new(&nodes(50), KeyHasher::new(4)).unwrap();
        for k in 0..10_000u64 {
            let h = m.hash_key(Key::U64(k));
            assert_eq!(m.locate(h), jump_hash(h, 50) as usize);
        }
    }

    #[test]
    fn balanced_with_removed_buckets() {
        // Keys are uniform over working buckets (paper, balance theorem): for ~14 300 keys a
        // bin, the peak of 70 bins is mean + ~3σ ≈ 1.025.
        let all = nodes(100);
        let m = Memento::new(&all, KeyHasher::new(0)).unwrap();
        let mut ids: Vec<u64> = (0..99).collect();
        ids.shuffle(&mut SmallRng::seed_from_u64(1));
        let m = m.carry_over(&without(&all, &ids[..30])).unwrap();
        assert_eq!((m.bucket_count(), m.removed_count()), (100, 30));
        let c = counts(&m, 1_000_000);
        assert!(peak_to_mean(&c) < 1.05, "peak/mean {}", peak_to_mean(&c));
    }

    #[test]
    fn removing_arbitrary_nodes_moves_only_their_keys() {
        const KEYS: u64 = 100_000;
        let all = nodes(100);
        let mut current = all.clone();
        let mut m = Memento::new(&all, KeyHasher::new(9)).unwrap();
        let mut order: Vec<u64> = (0..100).collect();
        order.shuffle(&mut SmallRng::seed_from_u64(2));
        // One at a time: each step moves exactly the departed node's keys, 1/N of them.
        for &id in &order[..8] {
            let next = without(&current, &[id]);
            let n = m.carry_over(&next).unwrap();
            let frac = check_moves(&owners(&m, KEYS), &owners(&n, KEYS), &current, &next);
            let ideal = 1.0 / current.len() as f64;
            assert!((frac - ideal).abs() < 0.004, "moved {frac}, ideal {ideal}");
            m = n;
            current = next;
        }
        // Several at once.
        let next = without(&current, &order[8..14]);
        let n = m.carry_over(&next).unwrap();
        let frac = check_moves(&owners(&m, KEYS), &owners(&n, KEYS), &current, &next);
        assert!(
            (frac - 6.0 / current.len() as f64).abs() < 0.01,
            "moved {frac}"
        );
    }

    #[test]
    fn re_adding_restores_the_layout() {
        const KEYS: u64 = 50_000;
        let all = nodes(60);
        let m0 = Memento::new(&all, KeyHasher::new(5)).unwrap();
        let start = owners(&m0, KEYS);
        // Remove three, one by one, then bring them back one by one in reverse order.
        let m1 = m0.carry_over(&without(&all, &[7])).unwrap();
        let m2 = m1.carry_over(&without(&all, &[7, 31])).unwrap();
        let m3 = m2.carry_over(&without(&all, &[7, 31, 12])).unwrap();
        let r2 = m3.carry_over(&without(&all, &[7, 31])).unwrap();
        assert_eq!(owners(&r2, KEYS), owners(&m2, KEYS));
        let r1 = r2.carry_over(&without(&all, &[7])).unwrap();
        assert_eq!(owners(&r1, KEYS), owners(&m1, KEYS));
        let r0 = r1.carry_over(&all).unwrap();
        assert_eq!(owners(&r0, KEYS), start);
        assert_eq!(r0.removed_count(), 0);
        // All three back in one rebuild, listed in any order: each gets its own bucket back.
        let mut shuffled = all.clone();
        shuffled.reverse();
        let back = m3.carry_over(&shuffled).unwrap();
        assert_eq!(owners(&back, KEYS), start);
        // A new node takes the most recently removed bucket: exactly 12's old keys.
        let mut with_new = without(&all, &[7, 31, 12]);
        with_new.push(Node::new(1000, "fresh"));
        let fresh = m3.carry_over(&with_new).unwrap();
        for (k, (&was, &now)) in start.iter().zip(&owners(&fresh, KEYS)).enumerate() {
            if was == NodeId(12) {
                assert_eq!(now, NodeId(1000), "key {k}");
            }
        }
    }

    #[test]
    fn batch_remove_and_return_restores_the_layout() {
        const KEYS: u64 = 20_000;
        let all = nodes(3000);
        let m = Memento::new(&all, KeyHasher::new(8)).unwrap();
        let start = owners(&m, KEYS);
        // Half the members, including the tail, leave in one change and return in another.
        let mut ids: Vec<u64> = (0..3000).collect();
        ids.shuffle(&mut SmallRng::seed_from_u64(3));
        let mut gone = ids[..1500].to_vec();
        gone.extend([2998, 2999]);
        let half = m.carry_over(&without(&all, &gone)).unwrap();
        let frac = check_moves(&start, &owners(&half, KEYS), &all, half.nodes());
        assert!((frac - 0.5).abs() < 0.02, "moved {frac}");
        let back = half.carry_over(&all).unwrap();
        assert_eq!(owners(&back, KEYS), start);
        assert_eq!((back.bucket_count(), back.removed_count()), (3000, 0));
    }

    #[test]
    fn tail_removal_without_memory_shrinks() {
        let all = nodes(10);
        let m = Memento::new(&all, KeyHasher::new(0)).unwrap();
        let m = m.carry_over(&all[..7]).unwrap();
        assert_eq!((m.bucket_count(), m.removed_count()), (7, 0));
        let m = m.carry_over(&without(&all[..7], &[2])).unwrap();
        assert_eq!((m.bucket_count(), m.removed_count()), (7, 1));
        // Growing past the removed ones appends.
        let m = m.carry_over(&all).unwrap();
        assert_eq!((m.bucket_count(), m.removed_count()), (10, 0));
    }

    #[test]
    fn replacing_everyone_starts_clean() {
        let a = Memento::new(&nodes(5), KeyHasher::new(0)).unwrap();
        let a = a.carry_over(&without(&nodes(5), &[1])).unwrap();
        let fresh: Vec<Node> = (10..13).map(|i| Node::new(i, format!("n{i}"))).collect();
        let b = a.carry_over(&fresh).unwrap();
        assert_eq!((b.bucket_count(), b.removed_count()), (3, 0));
        assert!(matches!(a.carry_over(&[]), Err(PlacementError::NoNodes)));
    }

    #[test]
    fn replicas_distinct_primary_first() {
        let all = nodes(12);
        let m = Memento::new(&all, KeyHasher::new(1)).unwrap();
        let m = m.carry_over(&without(&all, &[3, 4])).unwrap();
        let mut out = Vec::new();
        for k in 0..1000u64 {
            m.replicas(Key::U64(k), 3, &mut out);
            assert_eq!(out[0], m.locate(m.hash_key(Key::U64(k))));
            assert!(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        }
    }

    #[test]
    fn memory_counts_the_replacement_table() {
        let all = nodes(100);
        let m = Memento::new(&all, KeyHasher::new(0)).unwrap();
        let base = m.memory_bytes();
        let ids: Vec<u64> = (0..50).map(|i| i * 2).collect();
        let r = m.carry_over(&without(&all, &ids)).unwrap();
        assert!(r.memory_bytes() >= nodes_memory(r.nodes()) + 100 * 8 + 50 * 12);
        assert!(r.memory_bytes() < base);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random batches of removals and additions: keys move only off departed nodes or
        /// onto arrived ones, and every key lands on a present node.
        #[test]
        fn keys_move_only_with_changed_nodes(
            steps in proptest::collection::vec((0usize..4, 0usize..3, any::<u64>()), 1..12),
        ) {
            const KEYS: u64 = 3000;
            let mut current = nodes(20);
            let mut next_id = 20u64;
            let mut m = Memento::new(&current, KeyHasher::new(7)).unwrap();
            for (remove, add, seed) in steps {
                let mut rng = SmallRng::seed_from_u64(seed);
                let mut next = current.clone();
                next.shuffle(&mut rng);
                next.truncate(next.len().saturating_sub(remove).max(1));
                for _ in 0..add {
                    next.push(Node::new(next_id, format!("node-{next_id}")));
                    next_id += 1;
                }
                let n = m.carry_over(&next).unwrap();
                let (before, after) = (owners(&m, KEYS), owners(&n, KEYS));
                check_moves(&before, &after, &current, &next);
                prop_assert_eq!(n.bucket_count() - n.removed_count(), next.len());
                m = n;
                current = next;
            }
        }
    }
}

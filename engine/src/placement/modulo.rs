//! `hash(key) mod N`: the baseline. Perfect balance, no memory, and on any change of N almost
//! every key moves ((N−1)/N of them), which is what consistent hashing exists to avoid.

use super::{validate_nodes, Key, KeyHasher, Node, Placement, PlacementError, Scheme};

/// `hash(key) mod N` over the members in the order given.
#[derive(Clone, Debug)]
pub struct Modulo {
    nodes: Vec<Node>,
    hasher: KeyHasher,
}

impl Modulo {
    /// Build over `nodes` (weights are ignored).
    pub fn new(nodes: &[Node], hasher: KeyHasher) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        Ok(Self {
            nodes: nodes.to_vec(),
            hasher,
        })
    }
}

impl Placement for Modulo {
    fn scheme(&self) -> Scheme {
        Scheme::Modulo
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
        (hash % self.nodes.len() as u64) as usize
    }

    /// The primary's bucket and the buckets after it.
    fn replicas_hashed(&self, hash: u64, n: usize, out: &mut Vec<usize>) {
        out.clear();
        let len = self.nodes.len();
        let first = self.locate(hash);
        out.extend((0..n.min(len)).map(|i| (first + i) % len));
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + super::nodes_memory(&self.nodes)
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        Ok(Box::new(Self::new(nodes, self.hasher)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::*;

    #[test]
    fn balanced_and_moves_almost_everything() {
        let a = Modulo::new(&nodes(100), KeyHasher::new(7)).unwrap();
        assert!(peak_to_mean(&counts(&a, 1_000_000)) < 1.05);
        let b = Modulo::new(&nodes(101), KeyHasher::new(7)).unwrap();
        let moved = moved_fraction(&a, &b, 200_000);
        // (N−1)/N of the keys for N = 101, within sampling noise.
        assert!((moved - 100.0 / 101.0).abs() < 0.01, "moved {moved}");
    }

    #[test]
    fn replicas_are_distinct_and_clamped() {
        let m = Modulo::new(&nodes(5), KeyHasher::new(0)).unwrap();
        let mut out = Vec::new();
        m.replicas(Key::from("k"), 3, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], m.locate(m.hash_key(Key::from("k"))));
        m.replicas(Key::from("k"), 9, &mut out);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
    }
}

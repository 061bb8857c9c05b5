//! PLACEHOLDER: replaced by the real scheme.
#![allow(missing_docs, unused_variables)]
use super::{Key, KeyHasher, Modulo, Node, Placement, PlacementError, Scheme};

pub(crate) const DEFAULT_EPSILON: f64 = 0.25;

#[derive(Debug)]
pub struct BoundedLoad {
    inner: Modulo,
}

impl BoundedLoad {
    pub fn new(
        nodes: &[Node],
        hasher: KeyHasher,
        epsilon: f64,
        points_per_node: u32,
    ) -> Result<Self, PlacementError> {
        let _ = hasher;
        let _ = epsilon;
        let _ = points_per_node;
        Ok(Self {
            inner: Modulo::new(nodes, hasher)?,
        })
    }
}

impl Placement for BoundedLoad {
    fn scheme(&self) -> Scheme {
        Scheme::BoundedLoad {
            epsilon: 0.25,
            points_per_node: 160,
        }
    }
    fn nodes(&self) -> &[Node] {
        self.inner.nodes()
    }
    fn hash_key(&self, key: Key<'_>) -> u64 {
        self.inner.hash_key(key)
    }
    fn locate(&self, hash: u64) -> usize {
        self.inner.locate(hash)
    }
    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        self.inner.rebuild(nodes)
    }
}
impl BoundedLoad {
    pub fn assign<I: IntoIterator<Item = u64>>(&self, h: I) -> Vec<u64> {
        let mut c = vec![0; self.nodes().len()];
        for x in h {
            c[self.locate(x)] += 1;
        }
        c
    }
}

//! PLACEHOLDER: replaced by the real scheme.
#![allow(missing_docs, unused_variables)]
use super::{Key, KeyHasher, Modulo, Node, Placement, PlacementError, Scheme};

pub(crate) const DEFAULT_POINTS: u32 = 160;

#[derive(Debug)]
pub struct Ring {
    inner: Modulo,
}

impl Ring {
    pub fn new(
        nodes: &[Node],
        hasher: KeyHasher,
        points_per_node: u32,
    ) -> Result<Self, PlacementError> {
        let _ = hasher;
        let _ = points_per_node;
        Ok(Self {
            inner: Modulo::new(nodes, hasher)?,
        })
    }
}

impl Placement for Ring {
    fn scheme(&self) -> Scheme {
        Scheme::Ring {
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
impl Ring {
    pub fn arc_shares(&self) -> Vec<f64> {
        vec![1.0; self.nodes().len()]
    }
}

//! PLACEHOLDER: replaced by the real scheme.
#![allow(missing_docs, unused_variables)]
use super::{Key, KeyHasher, Modulo, Node, Placement, PlacementError, Scheme};

#[derive(Debug)]
pub struct Maglev {
    inner: Modulo,
}

impl Maglev {
    pub fn new(
        nodes: &[Node],
        hasher: KeyHasher,
        table_size: Option<u64>,
    ) -> Result<Self, PlacementError> {
        let _ = hasher;
        let _ = table_size;
        Ok(Self {
            inner: Modulo::new(nodes, hasher)?,
        })
    }
}

impl Placement for Maglev {
    fn scheme(&self) -> Scheme {
        Scheme::Maglev { table_size: None }
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

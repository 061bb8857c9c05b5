//! PLACEHOLDER: replaced by the real scheme.
#![allow(missing_docs, unused_variables)]
use super::{Key, KeyHasher, Modulo, Node, Placement, PlacementError, Scheme};

#[derive(Debug)]
pub struct Rendezvous {
    inner: Modulo,
}

impl Rendezvous {
    pub fn new(nodes: &[Node], hasher: KeyHasher, weighted: bool) -> Result<Self, PlacementError> {
        let _ = hasher;
        let _ = weighted;
        Ok(Self {
            inner: Modulo::new(nodes, hasher)?,
        })
    }
}

impl Placement for Rendezvous {
    fn scheme(&self) -> Scheme {
        Scheme::Rendezvous { weighted: false }
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

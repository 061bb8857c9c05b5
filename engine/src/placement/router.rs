//! Lookups that never block while membership changes.
//!
//! A [`Router`] holds the current [`Snapshot`]: an immutable placement plus a version. An
//! update builds the next placement on the caller's thread — off the lookup path — and
//! publishes it with one atomic pointer swap ([`arc_swap`]). Readers load the current
//! snapshot without locks or allocation and answer a lookup from that one whole snapshot, so
//! they never see a half-built table; an old snapshot is freed when its last reader drops it.

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::{Key, Node, NodeId, Placement, PlacementError, Scheme};

/// One immutable placement and the version it was published as.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    placement: Box<dyn Placement>,
}

impl Snapshot {
    /// Publication number: 1 for the first snapshot, +1 for each update.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The placement this snapshot answers from.
    pub fn placement(&self) -> &dyn Placement {
        self.placement.as_ref()
    }

    /// The members of this snapshot.
    pub fn nodes(&self) -> &[Node] {
        self.placement.nodes()
    }

    /// Owner of a key.
    #[inline]
    pub fn lookup<'k>(&self, key: impl Into<Key<'k>>) -> &Node {
        self.placement.lookup(key.into())
    }

    /// Up to `n` distinct owners of a key, primary first, written into `out` (cleared
    /// first). Uses a per-thread scratch buffer, so after a thread's first call with a given
    /// `n` it does not allocate as long as `out` has the capacity.
    pub fn replicas<'k>(&self, key: impl Into<Key<'k>>, n: usize, out: &mut Vec<NodeId>) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let p = self.placement.as_ref();
        let hash = p.hash_key(key.into());
        out.clear();
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            p.replicas_hashed(hash, n, &mut s);
            out.extend(s.iter().map(|&i| p.nodes()[i].id));
        });
    }
}

/// The current placement of a cluster, shared by any number of reader threads.
///
/// ```
/// use hearsay::placement::{Node, Router, Scheme};
///
/// let nodes: Vec<Node> = (0..3).map(|i| Node::new(i, format!("10.0.0.{i}:7946"))).collect();
/// let router = Router::new(Scheme::Maglev { table_size: None }, 42, &nodes)?;
/// let owner = router.lookup("user:1234");
/// assert!(nodes.iter().any(|n| n.id == owner));
///
/// // A member leaves: the next snapshot is built here and published atomically.
/// let version = router.update(&nodes[..2])?;
/// assert_eq!(version, 2);
/// assert_ne!(router.lookup("user:1234").0, 2);
/// # Ok::<(), hearsay::placement::PlacementError>(())
/// ```
#[derive(Debug)]
pub struct Router {
    current: ArcSwap<Snapshot>,
    /// Serialises writers so that versions are dense and each build starts from the
    /// snapshot it replaces. Readers never touch it.
    writer: Mutex<()>,
}

impl Router {
    /// A router over `nodes` with `scheme`, hashing keys with `seed`.
    pub fn new(scheme: Scheme, seed: u64, nodes: &[Node]) -> Result<Self, PlacementError> {
        let placement = scheme.build(nodes, seed)?;
        Ok(Self {
            current: ArcSwap::from_pointee(Snapshot {
                version: 1,
                placement,
            }),
            writer: Mutex::new(()),
        })
    }

    /// The current snapshot, held as long as the guard lives. Lock-free and allocation
    /// free; hold it briefly (a long-held guard pins memory like a cloned `Arc`).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holding across many lookups.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Owner of a key in the current snapshot.
    #[inline]
    pub fn lookup<'k>(&self, key: impl Into<Key<'k>>) -> NodeId {
        self.current.load().lookup(key).id
    }

    /// Replace the members with `nodes`: build the next placement from the current one
    /// ([`Placement::rebuild`], so history-dependent schemes move only what changed) and
    /// publish it. Returns the new version. On error nothing changes.
    pub fn update(&self, nodes: &[Node]) -> Result<u64, PlacementError> {
        // A poisoned lock only means another writer panicked mid-build; the published
        // snapshot is still whole, so carry on.
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let prev = self.current.load_full();
        let placement = prev.placement.rebuild(nodes)?;
        Ok(self.store(prev.version, placement))
    }

    /// Publish a placement built elsewhere (for instance afresh with
    /// [`Scheme::build`](super::Scheme::build), so that nodes which hold the same members
    /// agree on the layout whatever order the members came in). Returns the new version.
    pub fn publish(&self, placement: Box<dyn Placement>) -> u64 {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let prev = self.current.load();
        self.store(prev.version, placement)
    }

    fn store(&self, prev_version: u64, placement: Box<dyn Placement>) -> u64 {
        let version = prev_version + 1;
        self.current
            .store(Arc::new(Snapshot { version, placement }));
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::nodes;

    #[test]
    fn update_publishes_new_version_and_keeps_old_on_error() {
        let r = Router::new(Scheme::Jump, 1, &nodes(4)).unwrap();
        assert_eq!(r.load().version(), 1);
        let held = r.snapshot();
        assert_eq!(r.update(&nodes(5)).unwrap(), 2);
        assert_eq!(r.load().nodes().len(), 5);
        // A reader holding the old snapshot still sees it whole.
        assert_eq!(held.nodes().len(), 4);
        assert_eq!(r.update(&[]), Err(PlacementError::NoNodes));
        assert_eq!(r.load().version(), 2);
    }

    #[test]
    fn replicas_are_distinct_ids_primary_first() {
        for scheme in Scheme::all() {
            let r = Router::new(scheme, 3, &nodes(20)).unwrap();
            let snap = r.load();
            let mut out = Vec::new();
            for n in [1usize, 3, 8, 12, 40] {
                snap.replicas("some-key", n, &mut out);
                assert_eq!(out.len(), n.min(20), "{scheme}");
                assert_eq!(out[0], snap.lookup("some-key").id, "{scheme}");
                let mut d = out.clone();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), out.len(), "{scheme} replicas not distinct");
            }
        }
    }
}

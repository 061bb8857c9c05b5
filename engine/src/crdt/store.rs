//! Dot stores and their causal join, after Almeida, Shoker and Baquero (§ 6): a store plus
//! a causal context is a causal CRDT, and two of them join as
//!
//! ```text
//! (s₁, c₁) ⊔ (s₂, c₂) = ((s₁ ∩ s₂) ∪ (s₁ \ c₂) ∪ (s₂ \ c₁), c₁ ∪ c₂)
//! ```
//!
//! lifted pointwise through maps (a *DotMap*: key → nested store, a key dropped when its
//! store empties) and through dot-keyed functions (a *DotFun*: dot → immutable value).
//! A dot one side holds and the other has seen but no longer holds was removed there, so it
//! goes; a dot one side holds that the other has never seen is new, so it stays.
//!
//! The functions here join stores only; the caller joins the contexts afterwards, since
//! both joins need the contexts as they were before.

use std::collections::{BTreeMap, BTreeSet};

use super::{CausalContext, Dot};

/// What an update inside a causal value did to its context: the dots it replaced (already
/// in the context, and gone from the store) and the fresh dot it created, if any. A delta's
/// context is exactly these dots, which is what keeps deltas small.
#[derive(Debug, Default)]
pub(super) struct Effect {
    pub(super) superseded: Vec<Dot>,
    pub(super) new: Option<Dot>,
}

impl Effect {
    /// The context of the delta: the replaced dots and the new one.
    pub(super) fn delta_context(&self) -> CausalContext {
        CausalContext::from_dots(self.superseded.iter().copied().chain(self.new))
    }
}

/// A store that joins under causal contexts.
pub(super) trait DotStore: Default {
    /// Whether the store holds no dot (a key mapping to it is dropped).
    fn is_empty(&self) -> bool;
    /// Join `other` (with context `c2`) into `self` (with context `c1`). Returns whether
    /// `self` changed.
    fn join(&mut self, c1: &CausalContext, other: &Self, c2: &CausalContext) -> bool;
    /// Append every dot the store holds.
    fn collect_dots(&self, out: &mut Vec<Dot>);
}

/// A DotSet: the dots alone (a flag's enables, a set element's adds).
impl DotStore for BTreeSet<Dot> {
    fn is_empty(&self) -> bool {
        BTreeSet::is_empty(self)
    }

    fn join(&mut self, c1: &CausalContext, other: &Self, c2: &CausalContext) -> bool {
        let before = self.len();
        self.retain(|d| other.contains(d) || !c2.contains(*d));
        let mut changed = self.len() != before;
        for &d in other {
            if !c1.contains(d) && self.insert(d) {
                changed = true;
            }
        }
        changed
    }

    fn collect_dots(&self, out: &mut Vec<Dot>) {
        out.extend(self.iter().copied());
    }
}

/// Join a DotFun: dot → value. A dot names one write, so both sides hold the same value
/// under it; `same` settles a difference anyway (deterministically, keeping the join a
/// semilattice on any input a peer could send) and returns whether `mine` changed.
pub(super) fn join_dot_fun<T: Clone>(
    mine: &mut BTreeMap<Dot, T>,
    c1: &CausalContext,
    theirs: &BTreeMap<Dot, T>,
    c2: &CausalContext,
    same: impl Fn(&mut T, &T) -> bool,
) -> bool {
    let before = mine.len();
    mine.retain(|d, _| theirs.contains_key(d) || !c2.contains(*d));
    let mut changed = mine.len() != before;
    for (&d, v) in theirs {
        match mine.get_mut(&d) {
            Some(m) => changed |= same(m, v),
            None if !c1.contains(d) => {
                mine.insert(d, v.clone());
                changed = true;
            }
            None => {}
        }
    }
    changed
}

/// Dot → the key of the DotMap entry that holds it. Top-level sets and maps keep one, so
/// that joining a delta costs O(delta), not O(state): the keys a remove touched are found
/// from the remove's context instead of by scanning every key.
pub(super) type Index = BTreeMap<Dot, Vec<u8>>;

/// Join a DotMap: byte key → nested store. With an `index` (kept in step here), only keys
/// the other side's context covers are visited besides the other side's own keys;
/// without one, every key is.
pub(super) fn join_dot_map<S: DotStore + Clone>(
    mine: &mut BTreeMap<Vec<u8>, S>,
    mut index: Option<&mut Index>,
    c1: &CausalContext,
    theirs: &BTreeMap<Vec<u8>, S>,
    c2: &CausalContext,
) -> bool {
    let mut changed = false;
    let empty = S::default();
    // Keys only on this side: their dots that the other side has seen were removed there.
    match index.as_deref_mut() {
        Some(ix) => {
            let mut stale: Vec<Vec<u8>> = Vec::new();
            c2.for_each_covered(ix, |_, key| {
                if !theirs.contains_key(key) {
                    stale.push(key.clone());
                }
            });
            stale.sort_unstable();
            stale.dedup();
            for key in stale {
                changed |= join_key(mine, Some(ix), &key, c1, &empty, c2);
            }
        }
        None => mine.retain(|key, s| {
            if !theirs.contains_key(key) {
                changed |= s.join(c1, &empty, c2);
            }
            !s.is_empty()
        }),
    }
    for (key, s2) in theirs {
        changed |= join_key(mine, index.as_deref_mut(), key, c1, s2, c2);
    }
    changed
}

/// Join one key's store, dropping the key if it empties and keeping the index in step.
fn join_key<S: DotStore + Clone>(
    mine: &mut BTreeMap<Vec<u8>, S>,
    index: Option<&mut Index>,
    key: &[u8],
    c1: &CausalContext,
    s2: &S,
    c2: &CausalContext,
) -> bool {
    match mine.get_mut(key) {
        Some(s1) => {
            let mut before = Vec::new();
            if index.is_some() {
                s1.collect_dots(&mut before);
            }
            if !s1.join(c1, s2, c2) {
                return false;
            }
            if let Some(ix) = index {
                for d in &before {
                    ix.remove(d);
                }
                let mut after = Vec::new();
                s1.collect_dots(&mut after);
                for d in after {
                    ix.insert(d, key.to_vec());
                }
            }
            if s1.is_empty() {
                mine.remove(key);
            }
            true
        }
        None => {
            let mut s = S::default();
            if !s.join(c1, s2, c2) || s.is_empty() {
                return false;
            }
            if let Some(ix) = index {
                let mut after = Vec::new();
                s.collect_dots(&mut after);
                for d in after {
                    ix.insert(d, key.to_vec());
                }
            }
            mine.insert(key.to_vec(), s);
            true
        }
    }
}

/// Build the index of a DotMap, refusing a dot held twice or a dot outside `ctx` (a store
/// a peer could send but no replica could produce).
pub(super) fn build_index<S: DotStore>(
    map: &BTreeMap<Vec<u8>, S>,
    ctx: &CausalContext,
) -> Result<Index, super::CrdtError> {
    let mut index = Index::new();
    let mut dots = Vec::new();
    for (key, s) in map {
        dots.clear();
        s.collect_dots(&mut dots);
        for &d in &dots {
            check_in_context(d, ctx)?;
            if index.insert(d, key.clone()).is_some() {
                return Err(super::CrdtError::Malformed("dot held twice"));
            }
        }
    }
    Ok(index)
}

/// A stored dot must be in the context of the value that holds it.
pub(super) fn check_in_context(d: Dot, ctx: &CausalContext) -> Result<(), super::CrdtError> {
    if ctx.contains(d) {
        Ok(())
    } else {
        Err(super::CrdtError::Malformed("dot outside its context"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dots: &[(u64, u64)]) -> BTreeSet<Dot> {
        dots.iter().map(|&(r, c)| Dot::new(r, c)).collect()
    }

    #[test]
    fn dot_set_join_keeps_unseen_and_drops_removed() {
        // Mine holds (1,1) and (1,2); theirs has seen (1,1) and removed it, and added (2,1).
        let c1 = CausalContext::from_dots(set(&[(1, 1), (1, 2)]));
        let c2 = CausalContext::from_dots(set(&[(1, 1), (2, 1)]));
        let mut mine = set(&[(1, 1), (1, 2)]);
        assert!(mine.join(&c1, &set(&[(2, 1)]), &c2));
        assert_eq!(mine, set(&[(1, 2), (2, 1)]));
        assert!(!mine.join(&c1, &set(&[(2, 1)]), &c2));
    }

    #[test]
    fn indexed_and_scanning_map_joins_agree() {
        let c1 = CausalContext::from_dots(set(&[(1, 1), (1, 2), (1, 3)]));
        let c2 = CausalContext::from_dots(set(&[(1, 1), (1, 2), (2, 1)]));
        let mine: BTreeMap<Vec<u8>, BTreeSet<Dot>> = [
            (b"a".to_vec(), set(&[(1, 1)])),
            (b"b".to_vec(), set(&[(1, 2), (1, 3)])),
        ]
        .into_iter()
        .collect();
        let theirs: BTreeMap<Vec<u8>, BTreeSet<Dot>> =
            [(b"c".to_vec(), set(&[(2, 1)]))].into_iter().collect();
        let mut scanned = mine.clone();
        assert!(join_dot_map(&mut scanned, None, &c1, &theirs, &c2));
        let mut indexed = mine.clone();
        let mut ix = build_index(&indexed, &c1).unwrap();
        assert!(join_dot_map(&mut indexed, Some(&mut ix), &c1, &theirs, &c2));
        assert_eq!(scanned, indexed);
        assert_eq!(
            indexed.keys().map(Vec::as_slice).collect::<Vec<_>>(),
            [&b"b"[..], b"c"]
        );
        assert_eq!(indexed[&b"b"[..]], set(&[(1, 3)]));
        let mut ctx = c1.clone();
        ctx.join(&c2);
        assert_eq!(ix, build_index(&indexed, &ctx).unwrap());
    }
}

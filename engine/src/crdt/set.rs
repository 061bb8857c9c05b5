//! The add-wins set and the enable-wins flag: causal CRDTs over DotSets.

use std::collections::{BTreeMap, BTreeSet};

use super::store::{build_index, check_in_context, join_dot_map, DotStore, Effect, Index};
use super::wire::{bytes_len, put_bytes, put_varint, varint_len, Reader};
use super::{Actor, CausalContext, CrdtError, Dot};

/// An add-wins (observed-remove) set of byte strings.
///
/// Every add tags its element with a fresh dot; a remove removes the dots of the element its
/// replica has seen. So a remove undoes exactly the adds it observed: an add concurrent with
/// it survives (add wins), and so does the element. There are no tombstones: a removed dot
/// lives on only in the causal context, which stays one counter per replica once gaps close.
///
/// A reader sees every element whose add it has received and whose remove it has not.
///
/// The set keeps an index dot → element (top level only) so that joining a delta, a remove
/// included, costs O(delta · log n), not O(n).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AWSet {
    elements: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    index: Index,
    ctx: CausalContext,
}

impl AWSet {
    /// The elements, sorted.
    pub fn elements(&self) -> Vec<&[u8]> {
        self.elements.keys().map(Vec::as_slice).collect()
    }

    /// Whether `element` is in the set.
    pub fn contains(&self, element: &[u8]) -> bool {
        self.elements.contains_key(element)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the set has no element (it may still carry a context).
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The causal context (empty for a set inside a map, which shares the map's).
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    pub(super) fn is_bottom(&self) -> bool {
        self.elements.is_empty() && self.ctx.is_empty()
    }

    /// Wrap a delta store with its context and index.
    fn delta(elements: BTreeMap<Vec<u8>, BTreeSet<Dot>>, effect: &Effect) -> Self {
        let mut index = Index::new();
        for (e, dots) in &elements {
            for &d in dots {
                index.insert(d, e.clone());
            }
        }
        Self {
            elements,
            index,
            ctx: effect.delta_context(),
        }
    }

    pub(super) fn add_top(&mut self, actor: &Actor, e: &[u8]) -> Result<Self, CrdtError> {
        let mut effect = Effect::default();
        let delta = add(
            &mut self.elements,
            Some(&mut self.index),
            &self.ctx,
            actor,
            e,
            &mut effect,
        )?;
        if let Some(d) = effect.new {
            self.ctx.insert(d);
        }
        Ok(Self::delta(delta, &effect))
    }
    pub(super) fn remove_top(&mut self, e: &[u8]) -> Self {
        let mut effect = Effect::default();
        remove(&mut self.elements, Some(&mut self.index), e, &mut effect);
        Self::delta(BTreeMap::new(), &effect)
    }
    pub(super) fn add_store(
        &mut self,
        ctx: &CausalContext,
        actor: &Actor,
        e: &[u8],
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        let elements = add(&mut self.elements, None, ctx, actor, e, effect)?;
        Ok(Self {
            elements,
            ..Self::default()
        })
    }
    pub(super) fn remove_store(&mut self, e: &[u8], effect: &mut Effect) -> Self {
        remove(&mut self.elements, None, e, effect);
        Self::default()
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        let changed = join_dot_map(
            &mut self.elements,
            Some(&mut self.index),
            &self.ctx,
            &other.elements,
            &other.ctx,
        );
        self.ctx.join(&other.ctx) | changed
    }
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Self,
        c2: &CausalContext,
    ) -> bool {
        join_dot_map(&mut self.elements, None, c1, &other.elements, c2)
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        for dots in self.elements.values() {
            out.extend(dots.iter().copied());
        }
    }

    pub(super) fn top_len(&self) -> usize {
        self.ctx.encoded_len() + self.store_len()
    }
    pub(super) fn encode_top(&self, out: &mut Vec<u8>) {
        self.ctx.encode(out);
        self.encode_store(out);
    }
    pub(super) fn decode_top(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        let ctx = CausalContext::decode(r)?;
        let elements = decode_elements(r, false)?;
        let index = build_index(&elements, &ctx)?;
        Ok(Self {
            elements,
            index,
            ctx,
        })
    }
    pub(super) fn store_len(&self) -> usize {
        varint_len(self.elements.len() as u64)
            + self
                .elements
                .iter()
                .map(|(e, dots)| bytes_len(e) + dot_set_len(dots))
                .sum::<usize>()
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        put_varint(out, self.elements.len() as u64);
        for (e, dots) in &self.elements {
            put_bytes(out, e);
            encode_dot_set(dots, out);
        }
    }
    pub(super) fn decode_store(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            elements: decode_elements(r, true)?,
            ..Self::default()
        })
    }

    /// Whether the index is exactly the store's dots, for tests.
    #[cfg(test)]
    pub(super) fn index_is_exact(&self) -> bool {
        build_index(&self.elements, &self.ctx).is_ok_and(|ix| ix == self.index)
    }
}

/// Add `e` under a fresh dot, replacing the dots it had (they are in the context already):
/// the delta is that one element with that one dot, its context the dot and the replaced
/// ones (none for an element not in the set).
fn add(
    elements: &mut BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    index: Option<&mut Index>,
    ctx: &CausalContext,
    actor: &Actor,
    e: &[u8],
    effect: &mut Effect,
) -> Result<BTreeMap<Vec<u8>, BTreeSet<Dot>>, CrdtError> {
    let dot = ctx.next_dot(actor.id)?;
    let old = elements
        .insert(e.to_vec(), [dot].into())
        .unwrap_or_default();
    if let Some(ix) = index {
        for d in &old {
            ix.remove(d);
        }
        ix.insert(dot, e.to_vec());
    }
    effect.superseded.extend(old);
    effect.new = Some(dot);
    Ok([(e.to_vec(), [dot].into())].into_iter().collect())
}

/// Remove `e`'s dots; the delta is just those dots, as a context.
fn remove(
    elements: &mut BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    index: Option<&mut Index>,
    e: &[u8],
    effect: &mut Effect,
) {
    if let Some(old) = elements.remove(e) {
        if let Some(ix) = index {
            for d in &old {
                ix.remove(d);
            }
        }
        effect.superseded.extend(old);
    }
}

fn decode_elements(
    r: &mut Reader<'_>,
    nonempty: bool,
) -> Result<BTreeMap<Vec<u8>, BTreeSet<Dot>>, CrdtError> {
    // An element takes at least its length byte and a dot set of one two-byte dot.
    let n = if nonempty {
        r.nonempty_count(4, "set elements", "empty map field")?
    } else {
        r.count(4, "set elements")?
    };
    let mut elements = BTreeMap::new();
    let mut last: Option<&[u8]> = None;
    for _ in 0..n {
        let e = r.bytes("set element")?;
        if last.is_some_and(|l| l >= e) {
            return Err(CrdtError::Malformed("set elements out of order"));
        }
        last = Some(e);
        elements.insert(e.to_vec(), decode_dot_set(r, true)?);
    }
    Ok(elements)
}

/// Bytes a dot set takes.
pub(super) fn dot_set_len(dots: &BTreeSet<Dot>) -> usize {
    varint_len(dots.len() as u64) + dots.iter().map(|d| d.encoded_len()).sum::<usize>()
}

/// Append a dot set: count, dots in order.
pub(super) fn encode_dot_set(dots: &BTreeSet<Dot>, out: &mut Vec<u8>) {
    put_varint(out, dots.len() as u64);
    for d in dots {
        d.encode(out);
    }
}

/// Read a dot set in strictly increasing order; `nonempty` for one that is a map entry.
pub(super) fn decode_dot_set(
    r: &mut Reader<'_>,
    nonempty: bool,
) -> Result<BTreeSet<Dot>, CrdtError> {
    let n = if nonempty {
        r.nonempty_count(2, "dots", "empty dot set")?
    } else {
        r.count(2, "dots")?
    };
    let mut dots = BTreeSet::new();
    let mut last = None;
    for _ in 0..n {
        let d = Dot::decode(r)?;
        if last.is_some_and(|l| l >= d) {
            return Err(CrdtError::Malformed("dots out of order"));
        }
        last = Some(d);
        dots.insert(d);
    }
    Ok(dots)
}

/// An enable-wins flag: on while some enable is live.
///
/// Enable tags the flag with a fresh dot; disable removes the dots its replica has seen. An
/// enable concurrent with a disable survives it, so the flag reads on (enable wins); a
/// disable only turns it off for good once it has seen every enable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EWFlag {
    dots: BTreeSet<Dot>,
    ctx: CausalContext,
}

impl EWFlag {
    /// Whether the flag is on.
    pub fn is_on(&self) -> bool {
        !self.dots.is_empty()
    }

    /// The causal context (empty for a flag inside a map, which shares the map's).
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    pub(super) fn store_is_empty(&self) -> bool {
        self.dots.is_empty()
    }
    pub(super) fn is_bottom(&self) -> bool {
        self.dots.is_empty() && self.ctx.is_empty()
    }

    pub(super) fn enable_top(&mut self, actor: &Actor) -> Result<Self, CrdtError> {
        let mut effect = Effect::default();
        let dots = enable(&mut self.dots, &self.ctx, actor, &mut effect)?;
        if let Some(d) = effect.new {
            self.ctx.insert(d);
        }
        Ok(Self {
            dots,
            ctx: effect.delta_context(),
        })
    }
    pub(super) fn disable_top(&mut self) -> Self {
        let mut effect = Effect::default();
        effect.superseded.extend(std::mem::take(&mut self.dots));
        Self {
            dots: BTreeSet::new(),
            ctx: effect.delta_context(),
        }
    }
    pub(super) fn enable_store(
        &mut self,
        ctx: &CausalContext,
        actor: &Actor,
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        Ok(Self {
            dots: enable(&mut self.dots, ctx, actor, effect)?,
            ctx: CausalContext::new(),
        })
    }
    pub(super) fn disable_store(&mut self, effect: &mut Effect) -> Self {
        effect.superseded.extend(std::mem::take(&mut self.dots));
        Self::default()
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        let changed = self.dots.join(&self.ctx, &other.dots, &other.ctx);
        self.ctx.join(&other.ctx) | changed
    }
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Self,
        c2: &CausalContext,
    ) -> bool {
        self.dots.join(c1, &other.dots, c2)
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        out.extend(self.dots.iter().copied());
    }

    pub(super) fn top_len(&self) -> usize {
        self.ctx.encoded_len() + dot_set_len(&self.dots)
    }
    pub(super) fn encode_top(&self, out: &mut Vec<u8>) {
        self.ctx.encode(out);
        encode_dot_set(&self.dots, out);
    }
    pub(super) fn decode_top(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        let ctx = CausalContext::decode(r)?;
        let dots = decode_dot_set(r, false)?;
        for &d in &dots {
            check_in_context(d, &ctx)?;
        }
        Ok(Self { dots, ctx })
    }
    pub(super) fn store_len(&self) -> usize {
        dot_set_len(&self.dots)
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        encode_dot_set(&self.dots, out);
    }
    pub(super) fn decode_store(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            dots: decode_dot_set(r, true)?,
            ctx: CausalContext::new(),
        })
    }
}

/// Replace the flag's dots by a fresh one; return the delta store.
fn enable(
    dots: &mut BTreeSet<Dot>,
    ctx: &CausalContext,
    actor: &Actor,
    effect: &mut Effect,
) -> Result<BTreeSet<Dot>, CrdtError> {
    let dot = ctx.next_dot(actor.id)?;
    effect
        .superseded
        .extend(std::mem::replace(dots, [dot].into()));
    effect.new = Some(dot);
    Ok([dot].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_delta_is_one_dot_and_the_element() {
        let actor = Actor { id: 4, lamport: 0 };
        let mut s = AWSet::default();
        s.add_top(&actor, b"x").unwrap();
        let delta = s.add_top(&actor, b"y").unwrap();
        assert_eq!(delta.elements(), [&b"y"[..]]);
        assert_eq!(delta.ctx.dots(), [Dot::new(4, 2)]);
        assert_eq!(delta.ctx.cloud().count(), 1, "one cloud dot, no vector");
        assert!(delta.index_is_exact() && s.index_is_exact());
        // Re-adding an element replaces its dot: the delta's context names the old one too.
        let delta = s.add_top(&actor, b"x").unwrap();
        assert_eq!(delta.ctx.dots(), [Dot::new(4, 1), Dot::new(4, 3)]);
        assert_eq!(s.elements[&b"x"[..]], [Dot::new(4, 3)].into());
    }

    #[test]
    fn a_remove_delta_is_just_the_removed_dots() {
        let actor = Actor { id: 4, lamport: 0 };
        let mut s = AWSet::default();
        s.add_top(&actor, b"x").unwrap();
        let delta = s.remove_top(b"x");
        assert!(delta.is_empty());
        assert_eq!(delta.ctx.dots(), [Dot::new(4, 1)]);
        assert!(s.is_empty() && !s.is_bottom());
        assert!(s.remove_top(b"absent").is_bottom());
    }

    #[test]
    fn flag_disable_removes_seen_enables_only() {
        let a = Actor { id: 1, lamport: 0 };
        let mut fa = EWFlag::default();
        let mut fb = EWFlag::default();
        let enable_a = fa.enable_top(&a).unwrap();
        fb.join_top(&enable_a);
        let off = fb.disable_top();
        let again = fa.enable_top(&a).unwrap();
        assert!(!fb.is_on());
        fb.join_top(&again);
        fa.join_top(&off);
        assert!(fa.is_on() && fb.is_on());
        assert_eq!(fa, fb);
    }
}

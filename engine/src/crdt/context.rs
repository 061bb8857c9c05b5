//! Dots and causal contexts: what a replica has seen, kept as a version vector plus the few
//! events it has seen out of order.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{put_varint, varint_len, Reader};
use super::{CrdtError, ReplicaId};

/// One event: the `counter`-th event created by `replica` in one value. Every mutation that
/// adds something (an element, a register value, an enabled flag, a map field's update)
/// tags it with a fresh dot, and a remove names the dots it removes.
///
/// Counters start at 1; 0 is never a dot. Dots sort by replica, then counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The replica that created the event.
    pub replica: ReplicaId,
    /// Its sequence number among that replica's events in this value, from 1.
    pub counter: u64,
}

impl Dot {
    /// The dot `counter` of `replica`.
    pub const fn new(replica: ReplicaId, counter: u64) -> Self {
        Self { replica, counter }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub(super) fn encoded_len(self) -> usize {
        varint_len(self.replica) + varint_len(self.counter)
    }

    /// Append replica and counter as varints.
    pub(super) fn encode(self, out: &mut Vec<u8>) {
        put_varint(out, self.replica);
        put_varint(out, self.counter);
    }

    /// Read a dot; a zero counter is malformed.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        let replica = r.varint()?;
        let counter = r.nonzero("zero dot counter")?;
        Ok(Self { replica, counter })
    }

    /// The first and last dots of `replica`, for range queries over dot-keyed maps.
    pub(super) fn range_of(replica: ReplicaId) -> std::ops::RangeInclusive<Dot> {
        Dot::new(replica, 0)..=Dot::new(replica, u64::MAX)
    }
}

/// The set of dots a value has seen, kept compact: per replica, the largest counter up to
/// which every dot was seen (a version vector), plus the dots seen past a gap (the dot
/// cloud).
///
/// A remove leaves no tombstone: the removed dots are simply in the context and no longer in
/// the store, so a late copy of them is recognised and dropped. Because every replica
/// eventually sees every dot, gaps close and the context shrinks back to one counter per
/// replica that ever wrote. It is always kept compact: no cloud dot is covered by, or
/// contiguous with, its replica's vector entry, so two contexts holding the same dots are
/// equal field for field (and encode to the same bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalContext {
    /// Replica → every dot `1..=n` seen. No zero entries.
    vv: BTreeMap<ReplicaId, u64>,
    /// Dots seen past a gap: each has `counter > vv[replica] + 1`.
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    /// The empty context: nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// A compact context holding exactly `dots`.
    pub(super) fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut ctx = Self::new();
        for d in dots {
            ctx.insert(d);
        }
        ctx
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Whether `dot` has been seen.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter != 0
            && (dot.counter <= self.vv.get(&dot.replica).copied().unwrap_or(0)
                || self.cloud.contains(&dot))
    }

    /// The largest counter of `replica` seen (0 if none).
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        let vv = self.vv.get(&replica).copied().unwrap_or(0);
        let cloud = self
            .cloud
            .range(Dot::range_of(replica))
            .next_back()
            .map_or(0, |d| d.counter);
        vv.max(cloud)
    }

    /// The dot `replica` tags its next event with: one past the largest it has seen.
    pub fn next_dot(&self, replica: ReplicaId) -> Result<Dot, CrdtError> {
        let counter = self
            .max_counter(replica)
            .checked_add(1)
            .ok_or(CrdtError::Overflow("dot counter"))?;
        Ok(Dot::new(replica, counter))
    }

    /// The version vector: per replica, every counter up to this one has been seen.
    pub fn version_vector(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.vv.iter().map(|(&r, &n)| (r, n))
    }

    /// Dots seen past a gap in their replica's counters, in order.
    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    /// Add one dot. Returns whether it was new.
    pub fn insert(&mut self, dot: Dot) -> bool {
        if dot.counter == 0 {
            return false;
        }
        let seen = self.vv.get(&dot.replica).copied().unwrap_or(0);
        if dot.counter <= seen {
            false
        } else if dot.counter - 1 == seen {
            self.vv.insert(dot.replica, dot.counter);
            self.absorb(dot.replica);
            true
        } else {
            self.cloud.insert(dot)
        }
    }

    /// Add every dot of `other`. Returns whether anything was new.
    pub fn join(&mut self, other: &CausalContext) -> bool {
        let mut changed = false;
        for (&r, &n) in &other.vv {
            let seen = self.vv.entry(r).or_insert(0);
            if n > *seen {
                *seen = n;
                changed = true;
                self.absorb(r);
            }
        }
        for &d in &other.cloud {
            changed |= self.insert(d);
        }
        changed
    }

    /// Fold cloud dots into the version vector wherever they close a gap. `insert` and
    /// `join` keep the context compact already; this is the full pass, for a context built
    /// some other way.
    pub fn compact(&mut self) {
        let replicas: Vec<ReplicaId> = self.cloud.iter().map(|d| d.replica).collect();
        for r in replicas {
            self.absorb(r);
        }
    }

    /// Move `replica`'s cloud dots that are covered by, or contiguous with, its vector
    /// entry into the entry.
    fn absorb(&mut self, replica: ReplicaId) {
        loop {
            let seen = self.vv.get(&replica).copied().unwrap_or(0);
            let Some(&first) = self.cloud.range(Dot::range_of(replica)).next() else {
                return;
            };
            if first.counter <= seen {
                self.cloud.remove(&first);
            } else if first.counter - 1 == seen {
                self.cloud.remove(&first);
                self.vv.insert(replica, first.counter);
            } else {
                return;
            }
        }
    }

    /// Call `f` on every entry of the dot-keyed `index` whose dot this context holds: the
    /// version vector's ranges, then the cloud's dots. Costs O(context + matches), not
    /// O(index).
    pub(super) fn for_each_covered<V>(
        &self,
        index: &BTreeMap<Dot, V>,
        mut f: impl FnMut(&Dot, &V),
    ) {
        for (&r, &n) in &self.vv {
            for (d, v) in index.range(Dot::new(r, 1)..=Dot::new(r, n)) {
                f(d, v);
            }
        }
        for d in &self.cloud {
            if let Some((d, v)) = index.get_key_value(d) {
                f(d, v);
            }
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub(super) fn encoded_len(&self) -> usize {
        varint_len(self.vv.len() as u64)
            + self
                .vv
                .iter()
                .map(|(&r, &n)| varint_len(r) + varint_len(n))
                .sum::<usize>()
            + varint_len(self.cloud.len() as u64)
            + self.cloud.iter().map(|d| d.encoded_len()).sum::<usize>()
    }

    /// Append: vector entry count, (replica, counter)*, cloud count, dot*.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.vv.len() as u64);
        for (&r, &n) in &self.vv {
            put_varint(out, r);
            put_varint(out, n);
        }
        put_varint(out, self.cloud.len() as u64);
        for d in &self.cloud {
            d.encode(out);
        }
    }

    /// Read a context, which must be compact and in order (the only form `encode` writes).
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        let mut ctx = Self::new();
        let n = r.count(2, "version vector")?;
        let mut last = None;
        for _ in 0..n {
            let replica = r.varint()?;
            let counter = r.nonzero("zero version vector entry")?;
            if last.is_some_and(|l| l >= replica) {
                return Err(CrdtError::Malformed("version vector out of order"));
            }
            last = Some(replica);
            ctx.vv.insert(replica, counter);
        }
        let n = r.count(2, "dot cloud")?;
        let mut last = None;
        for _ in 0..n {
            let d = Dot::decode(r)?;
            if last.is_some_and(|l| l >= d) {
                return Err(CrdtError::Malformed("dot cloud out of order"));
            }
            last = Some(d);
            let seen = ctx.vv.get(&d.replica).copied().unwrap_or(0);
            if d.counter <= seen.saturating_add(1) {
                return Err(CrdtError::Malformed("causal context not compact"));
            }
            ctx.cloud.insert(d);
        }
        Ok(ctx)
    }

    /// Every dot, for tests: the vector's ranges expanded, then the cloud.
    #[cfg(test)]
    pub(super) fn dots(&self) -> Vec<Dot> {
        let mut out: Vec<Dot> = self
            .vv
            .iter()
            .flat_map(|(&r, &n)| (1..=n).map(move |c| Dot::new(r, c)))
            .collect();
        out.extend(self.cloud.iter().copied());
        out.sort_unstable();
        out
    }

    /// Whether the context is compact, for tests.
    #[cfg(test)]
    pub(super) fn is_compact(&self) -> bool {
        self.vv.values().all(|&n| n > 0)
            && self.cloud.iter().all(|d| {
                d.counter
                    > self
                        .vv
                        .get(&d.replica)
                        .copied()
                        .unwrap_or(0)
                        .saturating_add(1)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(ctx: &CausalContext) -> Vec<u8> {
        let mut out = Vec::new();
        ctx.encode(&mut out);
        assert_eq!(out.len(), ctx.encoded_len());
        out
    }

    #[test]
    fn gaps_close_into_the_vector() {
        let mut ctx = CausalContext::new();
        assert!(ctx.insert(Dot::new(7, 3)));
        assert!(ctx.insert(Dot::new(7, 2)));
        assert_eq!(ctx.cloud().count(), 2);
        assert_eq!(ctx.next_dot(7), Ok(Dot::new(7, 4)));
        assert!(ctx.insert(Dot::new(7, 1)));
        assert_eq!(ctx.version_vector().collect::<Vec<_>>(), [(7, 3)]);
        assert_eq!(ctx.cloud().count(), 0);
        assert!(!ctx.insert(Dot::new(7, 2)));
        assert!(!ctx.insert(Dot::new(7, 0)));
        assert!(ctx.contains(Dot::new(7, 3)) && !ctx.contains(Dot::new(7, 4)));
    }

    #[test]
    fn covered_entries_of_an_index() {
        let ctx = CausalContext::from_dots([Dot::new(1, 1), Dot::new(1, 2), Dot::new(2, 5)]);
        let index: BTreeMap<Dot, char> = [
            (Dot::new(1, 2), 'a'),
            (Dot::new(1, 3), 'b'),
            (Dot::new(2, 5), 'c'),
            (Dot::new(3, 1), 'd'),
        ]
        .into_iter()
        .collect();
        let mut seen = Vec::new();
        ctx.for_each_covered(&index, |_, &v| seen.push(v));
        assert_eq!(seen, ['a', 'c']);
    }

    #[test]
    fn counters_at_the_top_do_not_overflow() {
        let ctx = CausalContext::from_dots([Dot::new(1, u64::MAX)]);
        assert_eq!(ctx.next_dot(1), Err(CrdtError::Overflow("dot counter")));
        let mut full = CausalContext::new();
        full.vv.insert(1, u64::MAX);
        assert!(!full.insert(Dot::new(1, u64::MAX)));
        full.cloud.insert(Dot::new(1, 5));
        full.compact();
        assert!(full.is_compact());
    }

    #[test]
    fn decode_refuses_non_compact_and_unordered() {
        // vv {1: 2}, cloud {(1, 3)}: 3 is contiguous with the vector.
        assert_eq!(
            CausalContext::decode(&mut Reader::new(&[1, 1, 2, 1, 1, 3])),
            Err(CrdtError::Malformed("causal context not compact"))
        );
        assert_eq!(
            CausalContext::decode(&mut Reader::new(&[2, 2, 1, 1, 1, 0])),
            Err(CrdtError::Malformed("version vector out of order"))
        );
        assert_eq!(
            CausalContext::decode(&mut Reader::new(&[0, 2, 1, 5, 1, 5])),
            Err(CrdtError::Malformed("dot cloud out of order"))
        );
    }

    fn dots() -> impl Strategy<Value = Vec<Dot>> {
        proptest::collection::vec((0u64..3, 1u64..12).prop_map(|(r, c)| Dot::new(r, c)), 0..20)
    }

    proptest! {
        #[test]
        fn holds_exactly_its_dots(a in dots(), b in dots()) {
            let mut x = CausalContext::from_dots(a.iter().copied());
            let y = CausalContext::from_dots(b.iter().copied());
            let mut all: Vec<Dot> = a.iter().chain(&b).copied().collect();
            all.sort_unstable();
            all.dedup();
            let changed = x.join(&y);
            prop_assert_eq!(x.dots(), all.clone());
            prop_assert!(x.is_compact());
            prop_assert_eq!(changed, all != CausalContext::from_dots(a).dots());
            // Equal dot sets make equal contexts, whatever the insertion order.
            prop_assert_eq!(&x, &CausalContext::from_dots(all.iter().rev().copied()));
            let bytes = encoded(&x);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(CausalContext::decode(&mut r), Ok(x));
            prop_assert_eq!(r.finish(), Ok(()));
        }
    }
}

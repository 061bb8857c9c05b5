//! Counters: a grow-only counter and a positive-negative counter, one slot per replica.
//!
//! At the top level a counter is the classic state-based one: replica → its own running
//! total, joined by pointwise maximum; a delta is the writer's one slot. Slots are keyed by
//! [`Dot`] with counter 0 there ("replica r, untagged").
//!
//! Inside an [`ORMap`](super::ORMap) a counter must lose what a `RemoveKey` observed and
//! keep what it did not, so it is the paper's *causal counter* instead: a DotFun whose slots
//! are keyed by the dot of the update that last wrote them. An increment replaces the
//! writer's slot by a fresh dot holding the writer's new total, and the delta's context
//! carries the replaced dot, so each replica keeps at most one slot per key.

use std::collections::BTreeMap;

use super::store::{join_dot_fun, Effect};
use super::wire::{put_varint, varint_len, Reader};
use super::{CausalContext, CrdtError, Dot, ReplicaId};

/// What a counter keeps per slot: a running total, or a pair of them.
pub(super) trait Slot: Copy + Default + Eq + std::fmt::Debug {
    /// Smallest encoding of a slot, for count checks.
    const MIN_LEN: usize;
    /// Raise `self` to the pointwise maximum with `other`. Returns whether it changed.
    fn merge_max(&mut self, other: &Self) -> bool;
    /// `self` plus an increment and a decrement, or `None` on overflow.
    fn plus(self, inc: u64, dec: u64) -> Option<Self>;
    /// `self` plus another slot, or `None` on overflow.
    fn sum(self, other: Self) -> Option<Self>;
    fn is_zero(&self) -> bool;
    fn encoded_len(&self) -> usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(r: &mut Reader<'_>) -> Result<Self, CrdtError>;
}

impl Slot for u64 {
    const MIN_LEN: usize = 1;
    fn merge_max(&mut self, other: &Self) -> bool {
        let changed = *other > *self;
        *self = (*self).max(*other);
        changed
    }
    fn plus(self, inc: u64, _dec: u64) -> Option<Self> {
        self.checked_add(inc)
    }
    fn sum(self, other: Self) -> Option<Self> {
        self.checked_add(other)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
    fn encoded_len(&self) -> usize {
        varint_len(*self)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, *self);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        r.varint()
    }
}

/// A replica's increments and decrements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct PnSlot {
    inc: u64,
    dec: u64,
}

impl Slot for PnSlot {
    const MIN_LEN: usize = 2;
    fn merge_max(&mut self, other: &Self) -> bool {
        let changed = other.inc > self.inc || other.dec > self.dec;
        self.inc = self.inc.max(other.inc);
        self.dec = self.dec.max(other.dec);
        changed
    }
    fn plus(self, inc: u64, dec: u64) -> Option<Self> {
        Some(Self {
            inc: self.inc.checked_add(inc)?,
            dec: self.dec.checked_add(dec)?,
        })
    }
    fn sum(self, other: Self) -> Option<Self> {
        self.plus(other.inc, other.dec)
    }
    fn is_zero(&self) -> bool {
        self.inc == 0 && self.dec == 0
    }
    fn encoded_len(&self) -> usize {
        varint_len(self.inc) + varint_len(self.dec)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.inc);
        put_varint(out, self.dec);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            inc: r.varint()?,
            dec: r.varint()?,
        })
    }
}

/// Slots keyed by dot; the dot's counter is 0 at the top level.
type Slots<T> = BTreeMap<Dot, T>;

const OVERFLOW: CrdtError = CrdtError::Overflow("counter");

/// Top-level join: pointwise maximum.
fn join_top<T: Slot>(mine: &mut Slots<T>, theirs: &Slots<T>) -> bool {
    let mut changed = false;
    for (&d, v) in theirs {
        match mine.get_mut(&d) {
            Some(m) => changed |= m.merge_max(v),
            None => {
                mine.insert(d, *v);
                changed = true;
            }
        }
    }
    changed
}

/// Top-level update by `id`; returns the delta (the writer's slot, or nothing for a no-op).
fn apply_top<T: Slot>(
    slots: &mut Slots<T>,
    id: ReplicaId,
    inc: u64,
    dec: u64,
) -> Result<Slots<T>, CrdtError> {
    let key = Dot::new(id, 0);
    let new = slots
        .get(&key)
        .copied()
        .unwrap_or_default()
        .plus(inc, dec)
        .ok_or(OVERFLOW)?;
    let mut delta = Slots::new();
    if !new.is_zero() {
        slots.insert(key, new);
        delta.insert(key, new);
    }
    Ok(delta)
}

/// Update inside a map: the writer's slots (normally one) are replaced by a fresh dot
/// holding their sum plus the update.
fn apply_store<T: Slot>(
    slots: &mut Slots<T>,
    ctx: &CausalContext,
    id: ReplicaId,
    inc: u64,
    dec: u64,
    effect: &mut Effect,
) -> Result<Slots<T>, CrdtError> {
    let mut own = T::default();
    for v in slots.range(Dot::range_of(id)).map(|(_, v)| *v) {
        own = own.sum(v).ok_or(OVERFLOW)?;
    }
    let new = own.plus(inc, dec).ok_or(OVERFLOW)?;
    let dot = ctx.next_dot(id)?;
    let old: Vec<Dot> = slots.range(Dot::range_of(id)).map(|(d, _)| *d).collect();
    for d in &old {
        slots.remove(d);
    }
    effect.superseded.extend(old);
    effect.new = Some(dot);
    slots.insert(dot, new);
    Ok([(dot, new)].into_iter().collect())
}

fn top_len<T: Slot>(slots: &Slots<T>) -> usize {
    varint_len(slots.len() as u64)
        + slots
            .iter()
            .map(|(d, v)| varint_len(d.replica) + v.encoded_len())
            .sum::<usize>()
}

fn encode_top<T: Slot>(slots: &Slots<T>, out: &mut Vec<u8>) {
    put_varint(out, slots.len() as u64);
    for (d, v) in slots {
        put_varint(out, d.replica);
        v.encode(out);
    }
}

fn decode_top<T: Slot>(r: &mut Reader<'_>) -> Result<Slots<T>, CrdtError> {
    let n = r.count(1 + T::MIN_LEN, "counter entries")?;
    let mut slots = Slots::new();
    let mut last = None;
    for _ in 0..n {
        let replica = r.varint()?;
        let v = T::decode(r)?;
        if last.is_some_and(|l| l >= replica) {
            return Err(CrdtError::Malformed("counter entries out of order"));
        }
        if v.is_zero() {
            return Err(CrdtError::Malformed("zero counter entry"));
        }
        last = Some(replica);
        slots.insert(Dot::new(replica, 0), v);
    }
    Ok(slots)
}

fn store_len<T: Slot>(slots: &Slots<T>) -> usize {
    varint_len(slots.len() as u64)
        + slots
            .iter()
            .map(|(d, v)| d.encoded_len() + v.encoded_len())
            .sum::<usize>()
}

fn encode_store<T: Slot>(slots: &Slots<T>, out: &mut Vec<u8>) {
    put_varint(out, slots.len() as u64);
    for (d, v) in slots {
        d.encode(out);
        v.encode(out);
    }
}

fn decode_store<T: Slot>(r: &mut Reader<'_>) -> Result<Slots<T>, CrdtError> {
    let n = r.nonempty_count(2 + T::MIN_LEN, "counter slots", "empty map field")?;
    let mut slots = Slots::new();
    let mut last = None;
    for _ in 0..n {
        let d = Dot::decode(r)?;
        let v = T::decode(r)?;
        if last.is_some_and(|l| l >= d) {
            return Err(CrdtError::Malformed("counter slots out of order"));
        }
        last = Some(d);
        slots.insert(d, v);
    }
    Ok(slots)
}

fn join_store<T: Slot>(
    mine: &mut Slots<T>,
    c1: &CausalContext,
    theirs: &Slots<T>,
    c2: &CausalContext,
) -> bool {
    join_dot_fun(mine, c1, theirs, c2, |m, t| m.merge_max(t))
}

/// A grow-only counter: every replica adds to its own slot; the value is the sum.
///
/// Concurrent increments all count. A replica that leaves the cluster keeps its slot, so its
/// increments stay in the total. Join is the pointwise maximum of the slots, so a reader
/// sees a value that only grows, and every increment it has received (directly or through
/// any other replica) is in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounter {
    slots: Slots<u64>,
}

impl GCounter {
    /// The counter's value: the sum of every replica's increments (saturating; it would
    /// take 2⁶³ replicas at `u64::MAX` to saturate).
    pub fn value(&self) -> u128 {
        self.slots
            .values()
            .fold(0u128, |acc, &v| acc.saturating_add(u128::from(v)))
    }

    /// Number of slots (replicas that ever incremented, or their live dots inside a map).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no replica ever incremented.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        join_top(&mut self.slots, &other.slots)
    }
    pub(super) fn apply_top(&mut self, id: ReplicaId, n: u64) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: apply_top(&mut self.slots, id, n, 0)?,
        })
    }
    pub(super) fn apply_store(
        &mut self,
        ctx: &CausalContext,
        id: ReplicaId,
        n: u64,
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: apply_store(&mut self.slots, ctx, id, n, 0, effect)?,
        })
    }
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Self,
        c2: &CausalContext,
    ) -> bool {
        join_store(&mut self.slots, c1, &other.slots, c2)
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        out.extend(self.slots.keys().copied());
    }
    pub(super) fn top_len(&self) -> usize {
        top_len(&self.slots)
    }
    pub(super) fn encode_top(&self, out: &mut Vec<u8>) {
        encode_top(&self.slots, out);
    }
    pub(super) fn decode_top(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: decode_top(r)?,
        })
    }
    pub(super) fn store_len(&self) -> usize {
        store_len(&self.slots)
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        encode_store(&self.slots, out);
    }
    pub(super) fn decode_store(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: decode_store(r)?,
        })
    }
}

/// A counter that goes up and down: every replica keeps its own increments and decrements;
/// the value is Σ increments − Σ decrements.
///
/// Concurrent updates all count, in both directions; a departed replica's updates stay.
/// Each of a replica's two totals only grows, so join is still a pointwise maximum, but the
/// value a reader sees can go down as well as up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PNCounter {
    slots: Slots<PnSlot>,
}

impl PNCounter {
    /// The counter's value: Σ increments − Σ decrements (saturating at the `i128` range,
    /// which no real cluster reaches).
    pub fn value(&self) -> i128 {
        self.slots.values().fold(0i128, |acc, s| {
            acc.saturating_add(i128::from(s.inc))
                .saturating_sub(i128::from(s.dec))
        })
    }

    /// Number of slots (replicas that ever updated, or their live dots inside a map).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no replica ever updated.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        join_top(&mut self.slots, &other.slots)
    }
    pub(super) fn apply_top(
        &mut self,
        id: ReplicaId,
        inc: u64,
        dec: u64,
    ) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: apply_top(&mut self.slots, id, inc, dec)?,
        })
    }
    pub(super) fn apply_store(
        &mut self,
        ctx: &CausalContext,
        id: ReplicaId,
        inc: u64,
        dec: u64,
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: apply_store(&mut self.slots, ctx, id, inc, dec, effect)?,
        })
    }
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Self,
        c2: &CausalContext,
    ) -> bool {
        join_store(&mut self.slots, c1, &other.slots, c2)
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        out.extend(self.slots.keys().copied());
    }
    pub(super) fn top_len(&self) -> usize {
        top_len(&self.slots)
    }
    pub(super) fn encode_top(&self, out: &mut Vec<u8>) {
        encode_top(&self.slots, out);
    }
    pub(super) fn decode_top(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: decode_top(r)?,
        })
    }
    pub(super) fn store_len(&self) -> usize {
        store_len(&self.slots)
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        encode_store(&self.slots, out);
    }
    pub(super) fn decode_store(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            slots: decode_store(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_slots_are_per_replica_maxima() {
        let mut a = GCounter::default();
        let mut b = GCounter::default();
        let da = a.apply_top(1, 3).unwrap();
        b.apply_top(2, 4).unwrap();
        let db = b.apply_top(2, 1).unwrap();
        assert_eq!(db.value(), 5, "a delta carries the writer's total");
        assert!(a.join_top(&db));
        assert!(!a.join_top(&db));
        assert!(!a.join_top(&da));
        assert_eq!(a.value(), 8);
        // An increment of zero on an empty slot changes nothing and sends nothing.
        assert!(GCounter::default().apply_top(1, 0).unwrap().is_empty());
    }

    #[test]
    fn overflow_is_refused_without_change() {
        let mut c = PNCounter::default();
        c.apply_top(1, u64::MAX, 0).unwrap();
        let before = c.clone();
        assert_eq!(c.apply_top(1, 1, 0), Err(OVERFLOW));
        assert_eq!(c, before);
        c.apply_top(1, 0, 5).unwrap();
        assert_eq!(c.value(), i128::from(u64::MAX) - 5);
    }

    #[test]
    fn in_a_map_an_update_replaces_the_writers_dot() {
        let mut ctx = CausalContext::new();
        let mut c = GCounter::default();
        let mut effect = Effect::default();
        c.apply_store(&ctx, 1, 2, &mut effect).unwrap();
        ctx.insert(effect.new.unwrap());
        let mut effect = Effect::default();
        let delta = c.apply_store(&ctx, 1, 3, &mut effect).unwrap();
        assert_eq!(effect.superseded, [Dot::new(1, 1)]);
        assert_eq!(effect.new, Some(Dot::new(1, 2)));
        assert_eq!(delta.value(), 5);
        assert_eq!(c.len(), 1);
        assert_eq!(c.value(), 5);
    }
}

//! Registers: a multi-value register that keeps every concurrent write, and a last-writer-
//! wins register ordered by Lamport time.

use std::collections::BTreeMap;

use super::store::{check_in_context, join_dot_fun, Effect};
use super::wire::{bytes_len, put_bytes, put_varint, varint_len, Reader};
use super::{Actor, CausalContext, CrdtError, Dot};

/// A multi-value register: a write replaces every value its writer has seen; writes made
/// concurrently all survive, and the reader sees them all (sorted, duplicates merged) until
/// a later write, which has seen them, replaces them.
///
/// It is a DotFun (dot → value) with a causal context. Nothing is lost silently: two
/// replicas assigning at once leave two values for the application to reconcile (and its
/// next `Assign` replaces both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MVRegister {
    values: BTreeMap<Dot, Vec<u8>>,
    ctx: CausalContext,
}

impl MVRegister {
    /// The concurrent values, sorted, each once. Empty before any write.
    pub fn values(&self) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = self.values.values().map(Vec::as_slice).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The causal context (empty for a register inside a map, which shares the map's).
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    pub(super) fn store_is_empty(&self) -> bool {
        self.values.is_empty()
    }
    pub(super) fn is_bottom(&self) -> bool {
        self.values.is_empty() && self.ctx.is_empty()
    }

    pub(super) fn apply_top(&mut self, actor: &Actor, v: &[u8]) -> Result<Self, CrdtError> {
        let mut effect = Effect::default();
        let values = assign(&mut self.values, &self.ctx, actor, v, &mut effect)?;
        if let Some(d) = effect.new {
            self.ctx.insert(d);
        }
        Ok(Self {
            values,
            ctx: effect.delta_context(),
        })
    }
    pub(super) fn apply_store(
        &mut self,
        ctx: &CausalContext,
        actor: &Actor,
        v: &[u8],
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        Ok(Self {
            values: assign(&mut self.values, ctx, actor, v, effect)?,
            ctx: CausalContext::new(),
        })
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        let changed = join_dot_fun(
            &mut self.values,
            &self.ctx,
            &other.values,
            &other.ctx,
            same_bytes,
        );
        self.ctx.join(&other.ctx) | changed
    }
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Self,
        c2: &CausalContext,
    ) -> bool {
        join_dot_fun(&mut self.values, c1, &other.values, c2, same_bytes)
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        out.extend(self.values.keys().copied());
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
        let values = decode_values(r, false)?;
        for &d in values.keys() {
            check_in_context(d, &ctx)?;
        }
        Ok(Self { values, ctx })
    }
    pub(super) fn store_len(&self) -> usize {
        varint_len(self.values.len() as u64)
            + self
                .values
                .iter()
                .map(|(d, v)| d.encoded_len() + bytes_len(v))
                .sum::<usize>()
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        put_varint(out, self.values.len() as u64);
        for (d, v) in &self.values {
            d.encode(out);
            put_bytes(out, v);
        }
    }
    pub(super) fn decode_store(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        Ok(Self {
            values: decode_values(r, true)?,
            ctx: CausalContext::new(),
        })
    }
}

/// One dot per write, so two copies of a dot hold the same bytes; should a peer send
/// different ones, the larger wins on both sides.
fn same_bytes(mine: &mut Vec<u8>, theirs: &Vec<u8>) -> bool {
    if theirs > mine {
        mine.clone_from(theirs);
        true
    } else {
        false
    }
}

/// Replace every value by `v` under a fresh dot; return the delta store.
fn assign(
    values: &mut BTreeMap<Dot, Vec<u8>>,
    ctx: &CausalContext,
    actor: &Actor,
    v: &[u8],
    effect: &mut Effect,
) -> Result<BTreeMap<Dot, Vec<u8>>, CrdtError> {
    let dot = ctx.next_dot(actor.id)?;
    effect.superseded.extend(values.keys().copied());
    effect.new = Some(dot);
    *values = [(dot, v.to_vec())].into_iter().collect();
    Ok(values.clone())
}

fn decode_values(r: &mut Reader<'_>, nonempty: bool) -> Result<BTreeMap<Dot, Vec<u8>>, CrdtError> {
    let n = if nonempty {
        r.nonempty_count(3, "register values", "empty map field")?
    } else {
        r.count(3, "register values")?
    };
    let mut values = BTreeMap::new();
    let mut last = None;
    for _ in 0..n {
        let d = Dot::decode(r)?;
        let v = r.bytes("register value")?;
        if last.is_some_and(|l| l >= d) {
            return Err(CrdtError::Malformed("register values out of order"));
        }
        last = Some(d);
        values.insert(d, v.to_vec());
    }
    Ok(values)
}

/// One write of a last-writer-wins register: its Lamport time and value. The writer is the
/// replica of the dot it is stored under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamped {
    lamport: u64,
    value: Vec<u8>,
}

/// A last-writer-wins register: of concurrent writes, the one with the highest
/// `(lamport, replica)` stamp wins (and, should a buggy replica reuse a stamp, the larger
/// value, so that every replica still picks the same one).
///
/// The Lamport time is logical, never a wall clock: a write is stamped one past the larger
/// of the writer's clock and the register's current stamp, so a write always beats every
/// write its writer has seen, and a replica whose clock lags loses nothing but concurrent
/// ties. Replicas converge on one value; a concurrent write that lost is gone.
///
/// At the top level the register keeps just the winner. Inside an
/// [`ORMap`](super::ORMap) every write is tagged with a dot (like an
/// [`MVRegister`]) so that a `RemoveKey` removes only the writes it saw; the reader
/// still sees the highest-stamped surviving write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LwwRegister {
    /// Top level: at most one write, under `Dot::new(writer, 0)`. In a map: live writes.
    writes: BTreeMap<Dot, Stamped>,
}

impl LwwRegister {
    /// The winning value, if any write was made.
    pub fn value(&self) -> Option<&[u8]> {
        self.winner().map(|(_, w)| w.value.as_slice())
    }

    /// The winning write's stamp: its Lamport time and writer.
    pub fn stamp(&self) -> Option<(u64, super::ReplicaId)> {
        self.winner().map(|(d, w)| (w.lamport, d.replica))
    }

    /// The largest Lamport time of any write held.
    pub fn max_lamport(&self) -> u64 {
        self.writes.values().map(|w| w.lamport).max().unwrap_or(0)
    }

    fn winner(&self) -> Option<(&Dot, &Stamped)> {
        self.writes
            .iter()
            .max_by(|a, b| order_key(a.0, a.1).cmp(&order_key(b.0, b.1)))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Stamp a write: one past the writer's clock and the register's stamp.
    fn stamp_for(&self, actor: &Actor) -> Result<u64, CrdtError> {
        actor
            .lamport
            .max(self.max_lamport())
            .checked_add(1)
            .ok_or(CrdtError::Overflow("lamport clock"))
    }

    pub(super) fn apply_top(&mut self, actor: &mut Actor, v: &[u8]) -> Result<Self, CrdtError> {
        let lamport = self.stamp_for(actor)?;
        actor.lamport = lamport;
        let write = Stamped {
            lamport,
            value: v.to_vec(),
        };
        self.writes = [(Dot::new(actor.id, 0), write)].into_iter().collect();
        Ok(self.clone())
    }
    pub(super) fn apply_store(
        &mut self,
        ctx: &CausalContext,
        actor: &mut Actor,
        v: &[u8],
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        let lamport = self.stamp_for(actor)?;
        let dot = ctx.next_dot(actor.id)?;
        actor.lamport = lamport;
        effect.superseded.extend(self.writes.keys().copied());
        effect.new = Some(dot);
        let write = Stamped {
            lamport,
            value: v.to_vec(),
        };
        self.writes = [(dot, write)].into_iter().collect();
        Ok(self.clone())
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for (d, w) in &other.writes {
            let better = match self.winner() {
                Some((md, mw)) => order_key(d, w) > order_key(md, mw),
                None => true,
            };
            if better {
                self.writes = [(*d, w.clone())].into_iter().collect();
                changed = true;
            }
        }
        changed
    }
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Self,
        c2: &CausalContext,
    ) -> bool {
        join_dot_fun(&mut self.writes, c1, &other.writes, c2, |m, t| {
            if (t.lamport, &t.value) > (m.lamport, &m.value) {
                m.clone_from(t);
                true
            } else {
                false
            }
        })
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        out.extend(self.writes.keys().copied());
    }

    pub(super) fn top_len(&self) -> usize {
        varint_len(self.writes.len() as u64)
            + self
                .writes
                .iter()
                .map(|(d, w)| varint_len(w.lamport) + varint_len(d.replica) + bytes_len(&w.value))
                .sum::<usize>()
    }
    pub(super) fn encode_top(&self, out: &mut Vec<u8>) {
        put_varint(out, self.writes.len() as u64);
        for (d, w) in &self.writes {
            put_varint(out, w.lamport);
            put_varint(out, d.replica);
            put_bytes(out, &w.value);
        }
    }
    pub(super) fn decode_top(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        let mut writes = BTreeMap::new();
        match r.count(3, "register writes")? {
            0 => {}
            1 => {
                let lamport = r.varint()?;
                let replica = r.varint()?;
                let value = r.bytes("register value")?.to_vec();
                writes.insert(Dot::new(replica, 0), Stamped { lamport, value });
            }
            _ => return Err(CrdtError::Malformed("more than one write")),
        }
        Ok(Self { writes })
    }
    pub(super) fn store_len(&self) -> usize {
        varint_len(self.writes.len() as u64)
            + self
                .writes
                .iter()
                .map(|(d, w)| d.encoded_len() + varint_len(w.lamport) + bytes_len(&w.value))
                .sum::<usize>()
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        put_varint(out, self.writes.len() as u64);
        for (d, w) in &self.writes {
            d.encode(out);
            put_varint(out, w.lamport);
            put_bytes(out, &w.value);
        }
    }
    pub(super) fn decode_store(r: &mut Reader<'_>) -> Result<Self, CrdtError> {
        let n = r.nonempty_count(4, "register writes", "empty map field")?;
        let mut writes = BTreeMap::new();
        let mut last = None;
        for _ in 0..n {
            let d = Dot::decode(r)?;
            let lamport = r.varint()?;
            let value = r.bytes("register value")?.to_vec();
            if last.is_some_and(|l| l >= d) {
                return Err(CrdtError::Malformed("register writes out of order"));
            }
            last = Some(d);
            writes.insert(d, Stamped { lamport, value });
        }
        Ok(Self { writes })
    }
}

/// Writes order by Lamport time, then writer, then value.
fn order_key<'a>(d: &Dot, w: &'a Stamped) -> (u64, super::ReplicaId, &'a [u8]) {
    (w.lamport, d.replica, &w.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_beats_what_its_writer_has_seen_even_with_a_lagging_clock() {
        let mut fast = Actor { id: 1, lamport: 50 };
        let mut slow = Actor { id: 2, lamport: 0 };
        let mut a = LwwRegister::default();
        let d = a.apply_top(&mut fast, b"x").unwrap();
        let mut b = LwwRegister::default();
        b.join_top(&d);
        b.apply_top(&mut slow, b"y").unwrap();
        assert_eq!(slow.lamport, 52);
        assert_eq!(b.stamp(), Some((52, 2)));
        assert!(a.join_top(&b));
        assert_eq!(a.value(), Some(&b"y"[..]));
    }

    #[test]
    fn mv_assign_replaces_what_was_seen() {
        let actor = Actor { id: 3, lamport: 0 };
        let mut r = MVRegister::default();
        r.apply_top(&actor, b"a").unwrap();
        let delta = r.apply_top(&actor, b"b").unwrap();
        assert_eq!(r.values(), [&b"b"[..]]);
        assert_eq!(delta.values.len(), 1);
        assert_eq!(delta.ctx.dots(), [Dot::new(3, 1), Dot::new(3, 2)]);
    }
}

//! [`Value`]: one CRDT of any kind, and the dispatch from it to the types.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::store::Effect;
use super::wire::Reader;
use super::{
    AWSet, Actor, CausalContext, CrdtError, Dot, EWFlag, GCounter, Kind, LwwRegister, MVRegister,
    ORMap, Op, PNCounter, MAX_DEPTH, MAX_ELEMENT_LEN,
};

/// One CRDT value of any [`Kind`]: what a partition stores under a key, and what a delta
/// carries.
///
/// A value is a state and a delta alike (a delta is just a small state): mutate with
/// [`apply`](Self::apply), which returns the delta to gossip, and merge whatever arrives
/// (deltas, groups of joined deltas, full states) with [`join`](Self::join).
///
/// ```
/// use hearsay::crdt::{Actor, Kind, Op, Value};
///
/// let mut a = Actor { id: 1, lamport: 0 };
/// let mut b = Actor { id: 2, lamport: 0 };
/// let mut on_a = Value::new(Kind::AWSet);
/// let mut on_b = Value::new(Kind::AWSet);
///
/// let delta = on_a.apply(&mut a, &Op::Add(b"x".to_vec()))?;
/// on_b.join(&delta)?;
/// // B removes x while A, concurrently, adds it again: the add wins.
/// let remove = on_b.apply(&mut b, &Op::Remove(b"x".to_vec()))?;
/// let re_add = on_a.apply(&mut a, &Op::Add(b"x".to_vec()))?;
/// on_a.join(&remove)?;
/// on_b.join(&re_add)?;
/// assert_eq!(on_a, on_b);
/// assert_eq!(on_a.elements(), Some(vec![&b"x"[..]]));
///
/// // Deltas travel as bytes, the kind beside them.
/// let mut wire = Vec::new();
/// re_add.encode(&mut wire);
/// assert_eq!(wire.len(), re_add.encoded_len());
/// assert_eq!(Value::decode(re_add.kind(), &wire)?, re_add);
/// # Ok::<(), hearsay::crdt::CrdtError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// See [`GCounter`].
    GCounter(GCounter),
    /// See [`PNCounter`].
    PNCounter(PNCounter),
    /// See [`AWSet`].
    AWSet(AWSet),
    /// See [`MVRegister`].
    MVRegister(MVRegister),
    /// See [`LwwRegister`].
    LwwRegister(LwwRegister),
    /// See [`EWFlag`].
    EWFlag(EWFlag),
    /// See [`ORMap`].
    ORMap(ORMap),
}

impl Value {
    /// The bottom value of `kind`: nothing written, nothing seen. Joining anything into it
    /// gives that thing.
    pub fn new(kind: Kind) -> Value {
        match kind {
            Kind::GCounter => Value::GCounter(GCounter::default()),
            Kind::PNCounter => Value::PNCounter(PNCounter::default()),
            Kind::AWSet => Value::AWSet(AWSet::default()),
            Kind::MVRegister => Value::MVRegister(MVRegister::default()),
            Kind::LwwRegister => Value::LwwRegister(LwwRegister::default()),
            Kind::EWFlag => Value::EWFlag(EWFlag::default()),
            Kind::ORMap => Value::ORMap(ORMap::default()),
        }
    }

    /// The value's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Value::GCounter(_) => Kind::GCounter,
            Value::PNCounter(_) => Kind::PNCounter,
            Value::AWSet(_) => Kind::AWSet,
            Value::MVRegister(_) => Kind::MVRegister,
            Value::LwwRegister(_) => Kind::LwwRegister,
            Value::EWFlag(_) => Kind::EWFlag,
            Value::ORMap(_) => Kind::ORMap,
        }
    }

    /// Apply `op` as replica `actor.id`, in place, and return the delta: a value of the same
    /// kind that, joined into any replica's copy, has the effect of the operation there.
    ///
    /// Deltas are small: the written slot, element, value or key with one fresh dot, and a
    /// context of that dot plus the dots it replaced; a remove's delta is only the removed
    /// dots. [`Op::Write`] (also nested in a map) stamps the write with Lamport time
    /// `max(actor.lamport, the register's stamp) + 1` and advances `actor.lamport` to it.
    ///
    /// The whole operation is checked before anything changes, so on error the value (and
    /// the actor) are as they were: [`CrdtError::WrongOp`] for an operation the kind does not
    /// have, [`CrdtError::TooLarge`] for an element, key or value over
    /// [`MAX_ELEMENT_LEN`], [`CrdtError::TooDeep`] for maps nested past [`MAX_DEPTH`],
    /// [`CrdtError::Overflow`] for a counter, dot or clock at `u64::MAX`.
    ///
    /// A replica must apply with an id no other replica uses, and never reuse a dot: a
    /// replica that lost its state must rejoin the key (or use a fresh id) before writing,
    /// or its new dots collide with its old ones and are taken for already seen.
    pub fn apply(&mut self, actor: &mut Actor, op: &Op) -> Result<Value, CrdtError> {
        validate(self.kind(), op, 1)?;
        Ok(match (self, op) {
            (Value::GCounter(c), Op::Incr(n)) => Value::GCounter(c.apply_top(actor.id, *n)?),
            (Value::PNCounter(c), Op::Incr(n)) => Value::PNCounter(c.apply_top(actor.id, *n, 0)?),
            (Value::PNCounter(c), Op::Decr(n)) => Value::PNCounter(c.apply_top(actor.id, 0, *n)?),
            (Value::AWSet(s), Op::Add(e)) => Value::AWSet(s.add_top(actor, e)?),
            (Value::AWSet(s), Op::Remove(e)) => Value::AWSet(s.remove_top(e)),
            (Value::MVRegister(r), Op::Assign(v)) => Value::MVRegister(r.apply_top(actor, v)?),
            (Value::LwwRegister(r), Op::Write(v)) => Value::LwwRegister(r.apply_top(actor, v)?),
            (Value::EWFlag(f), Op::Enable) => Value::EWFlag(f.enable_top(actor)?),
            (Value::EWFlag(f), Op::Disable) => Value::EWFlag(f.disable_top()),
            (Value::ORMap(m), op) => Value::ORMap(m.apply_top(actor, op)?),
            (v, op) => {
                return Err(CrdtError::WrongOp {
                    kind: v.kind(),
                    op: op.name(),
                })
            }
        })
    }

    /// Apply a validated `op` to a value embedded in a map whose context is `ctx`; return
    /// the delta store and record the dots in `effect`.
    pub(super) fn apply_store(
        &mut self,
        ctx: &CausalContext,
        actor: &mut Actor,
        op: &Op,
        effect: &mut Effect,
    ) -> Result<Value, CrdtError> {
        let id = actor.id;
        Ok(match (self, op) {
            (Value::GCounter(c), Op::Incr(n)) => {
                Value::GCounter(c.apply_store(ctx, id, *n, effect)?)
            }
            (Value::PNCounter(c), Op::Incr(n)) => {
                Value::PNCounter(c.apply_store(ctx, id, *n, 0, effect)?)
            }
            (Value::PNCounter(c), Op::Decr(n)) => {
                Value::PNCounter(c.apply_store(ctx, id, 0, *n, effect)?)
            }
            (Value::AWSet(s), Op::Add(e)) => Value::AWSet(s.add_store(ctx, actor, e, effect)?),
            (Value::AWSet(s), Op::Remove(e)) => Value::AWSet(s.remove_store(e, effect)),
            (Value::MVRegister(r), Op::Assign(v)) => {
                Value::MVRegister(r.apply_store(ctx, actor, v, effect)?)
            }
            (Value::LwwRegister(r), Op::Write(v)) => {
                Value::LwwRegister(r.apply_store(ctx, actor, v, effect)?)
            }
            (Value::EWFlag(f), Op::Enable) => Value::EWFlag(f.enable_store(ctx, actor, effect)?),
            (Value::EWFlag(f), Op::Disable) => Value::EWFlag(f.disable_store(effect)),
            (Value::ORMap(m), op) => Value::ORMap(m.apply_store(ctx, actor, op, effect)?),
            (v, op) => {
                return Err(CrdtError::WrongOp {
                    kind: v.kind(),
                    op: op.name(),
                })
            }
        })
    }

    /// Join `other` (a delta, a group of deltas or a full state of the same kind) into
    /// `self`. Returns whether `self` changed: a `false` means `other` brought nothing new,
    /// so a delta need not be forwarded again.
    ///
    /// The join is commutative, associative and idempotent, so deltas may arrive in any
    /// order, any number of times, joined with each other first or not. A kind mismatch is
    /// [`CrdtError::KindMismatch`] and changes nothing.
    ///
    /// Cost: O(size of `other` · log size of `self`) for every kind (sets and maps keep an
    /// index from dots to keys, so even a remove's delta does not scan the state), plus the
    /// size of the map entries it touches.
    pub fn join(&mut self, other: &Value) -> Result<bool, CrdtError> {
        Ok(match (self, other) {
            (Value::GCounter(a), Value::GCounter(b)) => a.join_top(b),
            (Value::PNCounter(a), Value::PNCounter(b)) => a.join_top(b),
            (Value::AWSet(a), Value::AWSet(b)) => a.join_top(b),
            (Value::MVRegister(a), Value::MVRegister(b)) => a.join_top(b),
            (Value::LwwRegister(a), Value::LwwRegister(b)) => a.join_top(b),
            (Value::EWFlag(a), Value::EWFlag(b)) => a.join_top(b),
            (Value::ORMap(a), Value::ORMap(b)) => a.join_top(b),
            (a, b) => {
                return Err(CrdtError::KindMismatch {
                    expected: a.kind(),
                    found: b.kind(),
                })
            }
        })
    }

    /// Join the store of `other` (context `c2`) into this embedded value's (context `c1`).
    /// Map fields are keyed by kind, so the kinds always match; were they not to, nothing
    /// changes.
    pub(super) fn join_store(
        &mut self,
        c1: &CausalContext,
        other: &Value,
        c2: &CausalContext,
    ) -> bool {
        match (self, other) {
            (Value::GCounter(a), Value::GCounter(b)) => a.join_store(c1, b, c2),
            (Value::PNCounter(a), Value::PNCounter(b)) => a.join_store(c1, b, c2),
            (Value::AWSet(a), Value::AWSet(b)) => a.join_store(c1, b, c2),
            (Value::MVRegister(a), Value::MVRegister(b)) => a.join_store(c1, b, c2),
            (Value::LwwRegister(a), Value::LwwRegister(b)) => a.join_store(c1, b, c2),
            (Value::EWFlag(a), Value::EWFlag(b)) => a.join_store(c1, b, c2),
            (Value::ORMap(a), Value::ORMap(b)) => a.join_store(c1, b, c2),
            _ => false,
        }
    }

    /// Whether an embedded value holds no dot (its map field is then dropped).
    pub(super) fn store_is_empty(&self) -> bool {
        match self {
            Value::GCounter(c) => c.is_empty(),
            Value::PNCounter(c) => c.is_empty(),
            Value::AWSet(s) => s.is_empty(),
            Value::MVRegister(r) => r.store_is_empty(),
            Value::LwwRegister(r) => r.is_empty(),
            Value::EWFlag(f) => f.store_is_empty(),
            Value::ORMap(m) => m.is_empty(),
        }
    }

    /// Append every dot an embedded value holds.
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        match self {
            Value::GCounter(c) => c.collect_dots(out),
            Value::PNCounter(c) => c.collect_dots(out),
            Value::AWSet(s) => s.collect_dots(out),
            Value::MVRegister(r) => r.collect_dots(out),
            Value::LwwRegister(r) => r.collect_dots(out),
            Value::EWFlag(f) => f.collect_dots(out),
            Value::ORMap(m) => m.collect_dots(out),
        }
    }

    /// The largest Lamport time inside (last-writer-wins stamps, nested ones too; 0 if
    /// none). After joining what a peer sent, a replica sets
    /// `actor.lamport = actor.lamport.max(value.max_lamport())`, so that its clock never
    /// lags what it has seen (`apply` already stamps past the register it writes, so this
    /// only matters for clocks shared across keys).
    pub fn max_lamport(&self) -> u64 {
        match self {
            Value::LwwRegister(r) => r.max_lamport(),
            Value::ORMap(m) => m.max_lamport(),
            _ => 0,
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::GCounter(c) => c.top_len(),
            Value::PNCounter(c) => c.top_len(),
            Value::AWSet(s) => s.top_len(),
            Value::MVRegister(r) => r.top_len(),
            Value::LwwRegister(r) => r.top_len(),
            Value::EWFlag(f) => f.top_len(),
            Value::ORMap(m) => m.top_len(),
        }
    }

    /// Append the body (see the [module docs](super#encoding)); the kind travels separately
    /// (in [`CrdtDelta::kind`](crate::codec::CrdtDelta::kind)). Equal values encode to equal
    /// bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::GCounter(c) => c.encode_top(out),
            Value::PNCounter(c) => c.encode_top(out),
            Value::AWSet(s) => s.encode_top(out),
            Value::MVRegister(r) => r.encode_top(out),
            Value::LwwRegister(r) => r.encode_top(out),
            Value::EWFlag(f) => f.encode_top(out),
            Value::ORMap(m) => m.encode_top(out),
        }
    }

    /// Decode a body of `kind`.
    ///
    /// Never panics, whatever the bytes. Every count is checked against the bytes left ÷ the
    /// smallest item size and every length against [`MAX_ELEMENT_LEN`] before anything is
    /// read or allocated; maps nested past [`MAX_DEPTH`] are [`CrdtError::TooDeep`]. Only the
    /// canonical encoding is accepted (shortest varints, entries in strictly increasing
    /// order, no empty entries, a compact context holding every dot stored, no dot stored
    /// twice), so what decodes re-encodes to the same bytes. Trailing bytes are
    /// [`CrdtError::Malformed`].
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Value, CrdtError> {
        let mut r = Reader::new(bytes);
        let v = match kind {
            Kind::GCounter => Value::GCounter(GCounter::decode_top(&mut r)?),
            Kind::PNCounter => Value::PNCounter(PNCounter::decode_top(&mut r)?),
            Kind::AWSet => Value::AWSet(AWSet::decode_top(&mut r)?),
            Kind::MVRegister => Value::MVRegister(MVRegister::decode_top(&mut r)?),
            Kind::LwwRegister => Value::LwwRegister(LwwRegister::decode_top(&mut r)?),
            Kind::EWFlag => Value::EWFlag(EWFlag::decode_top(&mut r)?),
            Kind::ORMap => Value::ORMap(ORMap::decode_top(&mut r)?),
        };
        r.finish()?;
        Ok(v)
    }

    /// Bytes [`encode_store`](Self::encode_store) writes.
    pub(super) fn store_len(&self) -> usize {
        match self {
            Value::GCounter(c) => c.store_len(),
            Value::PNCounter(c) => c.store_len(),
            Value::AWSet(s) => s.store_len(),
            Value::MVRegister(r) => r.store_len(),
            Value::LwwRegister(r) => r.store_len(),
            Value::EWFlag(f) => f.store_len(),
            Value::ORMap(m) => m.store_len(),
        }
    }

    /// Append an embedded value's body: its store, no context.
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        match self {
            Value::GCounter(c) => c.encode_store(out),
            Value::PNCounter(c) => c.encode_store(out),
            Value::AWSet(s) => s.encode_store(out),
            Value::MVRegister(r) => r.encode_store(out),
            Value::LwwRegister(r) => r.encode_store(out),
            Value::EWFlag(f) => f.encode_store(out),
            Value::ORMap(m) => m.encode_store(out),
        }
    }

    /// Read an embedded value of `kind` that sits `depth` maps deep.
    pub(super) fn decode_store(
        kind: Kind,
        r: &mut Reader<'_>,
        depth: usize,
    ) -> Result<Value, CrdtError> {
        Ok(match kind {
            Kind::GCounter => Value::GCounter(GCounter::decode_store(r)?),
            Kind::PNCounter => Value::PNCounter(PNCounter::decode_store(r)?),
            Kind::AWSet => Value::AWSet(AWSet::decode_store(r)?),
            Kind::MVRegister => Value::MVRegister(MVRegister::decode_store(r)?),
            Kind::LwwRegister => Value::LwwRegister(LwwRegister::decode_store(r)?),
            Kind::EWFlag => Value::EWFlag(EWFlag::decode_store(r)?),
            Kind::ORMap => Value::ORMap(ORMap::decode_store(r, depth)?),
        })
    }

    /// A hash of the state for anti-entropy digests: equal values hash equal on every
    /// replica and build (xxh3 over the canonical encoding, seeded with the kind), so two
    /// replicas compare hashes and exchange the value only when they differ.
    pub fn state_hash(&self) -> u64 {
        let mut buf = Vec::with_capacity(64);
        self.encode(&mut buf);
        xxh3_64_with_seed(&buf, u64::from(self.kind().as_u8()))
    }

    /// A counter's value: [`GCounter::value`] or [`PNCounter::value`]; `None` for other
    /// kinds.
    pub fn counter(&self) -> Option<i128> {
        match self {
            Value::GCounter(c) => Some(i128::try_from(c.value()).unwrap_or(i128::MAX)),
            Value::PNCounter(c) => Some(c.value()),
            _ => None,
        }
    }

    /// A set's elements, sorted; `None` for other kinds.
    pub fn elements(&self) -> Option<Vec<&[u8]>> {
        match self {
            Value::AWSet(s) => Some(s.elements()),
            _ => None,
        }
    }

    /// A register's values: a multi-value register's concurrent values (sorted, each
    /// once), a last-writer-wins register's winner (zero or one value); `None` for other
    /// kinds.
    pub fn values(&self) -> Option<Vec<&[u8]>> {
        match self {
            Value::MVRegister(r) => Some(r.values()),
            Value::LwwRegister(r) => Some(r.value().into_iter().collect()),
            _ => None,
        }
    }

    /// A flag's state; `None` for other kinds.
    pub fn flag(&self) -> Option<bool> {
        match self {
            Value::EWFlag(f) => Some(f.is_on()),
            _ => None,
        }
    }

    /// A map's entries, sorted by key then kind (see [`ORMap::entries`]); `None` for other
    /// kinds.
    pub fn entries(&self) -> Option<Vec<(&[u8], &Value)>> {
        match self {
            Value::ORMap(m) => Some(m.entries()),
            _ => None,
        }
    }

    /// The causal context of a set, register, flag or map (`None` for counters and
    /// last-writer-wins registers, which have none): for debug dumps.
    pub fn context(&self) -> Option<&CausalContext> {
        match self {
            Value::AWSet(s) => Some(s.context()),
            Value::MVRegister(r) => Some(r.context()),
            Value::EWFlag(f) => Some(f.context()),
            Value::ORMap(m) => Some(m.context()),
            _ => None,
        }
    }

    /// Whether this is the bottom value: nothing written and nothing seen (a set whose
    /// elements were all removed is not bottom: its context remembers the removes).
    pub fn is_bottom(&self) -> bool {
        match self {
            Value::GCounter(c) => c.is_empty(),
            Value::PNCounter(c) => c.is_empty(),
            Value::AWSet(s) => s.is_bottom(),
            Value::MVRegister(r) => r.is_bottom(),
            Value::LwwRegister(r) => r.is_empty(),
            Value::EWFlag(f) => f.is_bottom(),
            Value::ORMap(m) => m.is_bottom(),
        }
    }
}

/// Check `op` against `kind` (for a map, `depth` maps deep) before anything changes.
fn validate(kind: Kind, op: &Op, depth: usize) -> Result<(), CrdtError> {
    let fits = match (kind, op) {
        (Kind::GCounter, Op::Incr(_))
        | (Kind::PNCounter, Op::Incr(_) | Op::Decr(_))
        | (Kind::EWFlag, Op::Enable | Op::Disable) => true,
        (Kind::AWSet, Op::Add(e) | Op::Remove(e)) => check_len("element", e).map(|()| true)?,
        (Kind::MVRegister, Op::Assign(v)) | (Kind::LwwRegister, Op::Write(v)) => {
            check_len("register value", v).map(|()| true)?
        }
        (Kind::ORMap, Op::RemoveKey(key)) => check_len("map key", key).map(|()| true)?,
        (
            Kind::ORMap,
            Op::Update {
                key,
                kind: nested,
                op,
            },
        ) => {
            check_len("map key", key)?;
            let depth = if *nested == Kind::ORMap {
                depth + 1
            } else {
                depth
            };
            if depth > MAX_DEPTH {
                return Err(CrdtError::TooDeep);
            }
            validate(*nested, op, depth).map(|()| true)?
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(CrdtError::WrongOp {
            kind,
            op: op.name(),
        })
    }
}

fn check_len(what: &'static str, b: &[u8]) -> Result<(), CrdtError> {
    if b.len() <= MAX_ELEMENT_LEN {
        Ok(())
    } else {
        Err(CrdtError::TooLarge {
            what,
            len: b.len() as u64,
            max: MAX_ELEMENT_LEN as u64,
        })
    }
}

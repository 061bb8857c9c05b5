//! The observed-remove map: byte keys → nested CRDT values, all sharing the map's causal
//! context.

use std::collections::BTreeMap;

use super::store::{build_index, join_dot_map, DotStore, Effect, Index};
use super::wire::{bytes_len, put_bytes, put_varint, varint_len, Reader};
use super::{Actor, CausalContext, CrdtError, Dot, Kind, Op, Value, MAX_DEPTH};

/// The values under one key, one per kind, sorted by kind; never empty.
type Fields = BTreeMap<Kind, Value>;

/// A map field is a nested dot store; its fields join kind by kind.
impl DotStore for Fields {
    fn is_empty(&self) -> bool {
        BTreeMap::is_empty(self)
    }

    fn join(&mut self, c1: &CausalContext, other: &Self, c2: &CausalContext) -> bool {
        let mut changed = false;
        self.retain(|kind, v| {
            if !other.contains_key(kind) {
                changed |= v.join_store(c1, &Value::new(*kind), c2);
            }
            !v.store_is_empty()
        });
        for (kind, theirs) in other {
            match self.get_mut(kind) {
                Some(v) => {
                    changed |= v.join_store(c1, theirs, c2);
                    if v.store_is_empty() {
                        self.remove(kind);
                    }
                }
                None => {
                    let mut v = Value::new(*kind);
                    if v.join_store(c1, theirs, c2) && !v.store_is_empty() {
                        self.insert(*kind, v);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    fn collect_dots(&self, out: &mut Vec<Dot>) {
        for v in self.values() {
            v.collect_dots(out);
        }
    }
}

/// An observed-remove map from byte keys to nested CRDT values (the paper's ORMap over a
/// DotMap): counters, sets, registers, flags and maps, nested up to [`MAX_DEPTH`] maps deep.
///
/// - **Update** (`Op::Update { key, kind, op }`) creates the value at `(key, kind)` if it is
///   missing and applies `op` to it; its delta is the nested value's delta under that key.
///   Concurrent updates of one key merge as the nested type does: two replicas incrementing
///   a nested counter both count, two adding to a nested set both add.
/// - **Keys are typed**: a key holds at most one value of each kind, and a value of another
///   kind written at the same key is a separate entry (as in Riak's maps), so that two
///   replicas that disagree on a key's kind both keep their data instead of one silently
///   dropping the other's. [`entries`](Self::entries) lists them by key, then kind.
/// - **RemoveKey** removes every value under the key as far as its replica has seen it (all
///   the dots of the key it has observed). An update concurrent with the remove survives:
///   the key comes back holding what that update wrote and nothing the remover had seen
///   (a nested set holds just the concurrently added elements, a register the concurrent
///   write, a flag the concurrent enable). **Update wins over a concurrent remove.**
///
/// Nested sets, multi-value registers, flags and maps are embedded as the paper does it:
/// their dot stores live in the map and share its context. Counters and last-writer-wins
/// registers are not causal on their own, so inside a map they are embedded as DotFuns:
/// a counter keeps one slot per replica tagged with the dot of that replica's last update
/// (the paper's causal counter), a register keeps each write under its own dot. This keeps
/// the join a semilattice and gives them the same observed-remove behaviour. One caveat of
/// the causal counter: a slot holds its replica's whole contribution, so when a replica
/// increments concurrently with a `RemoveKey`, its new slot brings back that replica's
/// earlier increments too (other replicas' observed increments stay removed).
///
/// The map keeps an index dot → key (top level only) so that joining a delta costs
/// O(delta · log n) plus the size of the touched entries, not O(n).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ORMap {
    entries: BTreeMap<Vec<u8>, Fields>,
    index: Index,
    ctx: CausalContext,
}

impl ORMap {
    /// Every (key, value), sorted by key then kind. The values are read-only views: a
    /// nested causal value has an empty context of its own (it shares the map's).
    pub fn entries(&self) -> Vec<(&[u8], &Value)> {
        self.entries
            .iter()
            .flat_map(|(k, fields)| fields.values().map(move |v| (k.as_slice(), v)))
            .collect()
    }

    /// The value of `kind` at `key`.
    pub fn get(&self, key: &[u8], kind: Kind) -> Option<&Value> {
        self.entries.get(key).and_then(|f| f.get(&kind))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no key (it may still carry a context).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The causal context (empty for a map inside a map, which shares the outer one's).
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    /// The largest Lamport time of any nested register write.
    pub fn max_lamport(&self) -> u64 {
        self.entries
            .values()
            .flat_map(|f| f.values())
            .map(Value::max_lamport)
            .max()
            .unwrap_or(0)
    }

    pub(super) fn is_bottom(&self) -> bool {
        self.entries.is_empty() && self.ctx.is_empty()
    }

    pub(super) fn apply_top(&mut self, actor: &mut Actor, op: &Op) -> Result<Self, CrdtError> {
        let mut effect = Effect::default();
        let entries = apply_entries(
            &mut self.entries,
            Some(&mut self.index),
            &self.ctx,
            actor,
            op,
            &mut effect,
        )?;
        if let Some(d) = effect.new {
            self.ctx.insert(d);
        }
        let mut index = Index::new();
        let mut dots = Vec::new();
        for (key, fields) in &entries {
            dots.clear();
            fields.collect_dots(&mut dots);
            for &d in &dots {
                index.insert(d, key.clone());
            }
        }
        Ok(Self {
            entries,
            index,
            ctx: effect.delta_context(),
        })
    }
    pub(super) fn apply_store(
        &mut self,
        ctx: &CausalContext,
        actor: &mut Actor,
        op: &Op,
        effect: &mut Effect,
    ) -> Result<Self, CrdtError> {
        Ok(Self {
            entries: apply_entries(&mut self.entries, None, ctx, actor, op, effect)?,
            ..Self::default()
        })
    }

    pub(super) fn join_top(&mut self, other: &Self) -> bool {
        let changed = join_dot_map(
            &mut self.entries,
            Some(&mut self.index),
            &self.ctx,
            &other.entries,
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
        join_dot_map(&mut self.entries, None, c1, &other.entries, c2)
    }
    pub(super) fn collect_dots(&self, out: &mut Vec<Dot>) {
        for fields in self.entries.values() {
            fields.collect_dots(out);
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
        let entries = decode_entries(r, 1, false)?;
        let index = build_index(&entries, &ctx)?;
        Ok(Self {
            entries,
            index,
            ctx,
        })
    }
    pub(super) fn store_len(&self) -> usize {
        varint_len(self.entries.len() as u64)
            + self
                .entries
                .iter()
                .map(|(k, fields)| {
                    bytes_len(k)
                        + varint_len(fields.len() as u64)
                        + fields.values().map(|v| 1 + v.store_len()).sum::<usize>()
                })
                .sum::<usize>()
    }
    pub(super) fn encode_store(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for (k, fields) in &self.entries {
            put_bytes(out, k);
            put_varint(out, fields.len() as u64);
            for (kind, v) in fields {
                out.push(kind.as_u8());
                v.encode_store(out);
            }
        }
    }
    /// Read a map nested `depth` maps deep (the top-level map is depth 1).
    pub(super) fn decode_store(r: &mut Reader<'_>, depth: usize) -> Result<Self, CrdtError> {
        Ok(Self {
            entries: decode_entries(r, depth, true)?,
            ..Self::default()
        })
    }

    /// Whether the index is exactly the store's dots, for tests.
    #[cfg(test)]
    pub(super) fn index_is_exact(&self) -> bool {
        build_index(&self.entries, &self.ctx).is_ok_and(|ix| ix == self.index)
    }
}

/// Apply a (validated) map operation to `entries`; return the delta's entries. `index`, at
/// the top level, follows the dots the operation replaced and created.
fn apply_entries(
    entries: &mut BTreeMap<Vec<u8>, Fields>,
    index: Option<&mut Index>,
    ctx: &CausalContext,
    actor: &mut Actor,
    op: &Op,
    effect: &mut Effect,
) -> Result<BTreeMap<Vec<u8>, Fields>, CrdtError> {
    let mut delta = BTreeMap::new();
    match op {
        Op::Update { key, kind, op } => {
            let first = effect.superseded.len();
            let fields = entries.entry(key.clone()).or_default();
            let field = fields.entry(*kind).or_insert_with(|| Value::new(*kind));
            let result = field.apply_store(ctx, actor, op, effect);
            // On error nothing changed, but a field created for the update is dropped.
            if field.store_is_empty() {
                fields.remove(kind);
            }
            if fields.is_empty() {
                entries.remove(key);
            }
            let nested = result?;
            if let Some(ix) = index {
                for d in effect.superseded.get(first..).unwrap_or_default() {
                    ix.remove(d);
                }
                if let Some(d) = effect.new {
                    ix.insert(d, key.clone());
                }
            }
            if !nested.store_is_empty() {
                delta.insert(key.clone(), [(*kind, nested)].into_iter().collect());
            }
        }
        Op::RemoveKey(key) => {
            if let Some(fields) = entries.remove(key) {
                let mut dots = Vec::new();
                fields.collect_dots(&mut dots);
                if let Some(ix) = index {
                    for d in &dots {
                        ix.remove(d);
                    }
                }
                effect.superseded.extend(dots);
            }
        }
        other => {
            return Err(CrdtError::WrongOp {
                kind: Kind::ORMap,
                op: other.name(),
            })
        }
    }
    Ok(delta)
}

/// Read the entries of a map `depth` maps deep; `nonempty` for a map that is a field.
fn decode_entries(
    r: &mut Reader<'_>,
    depth: usize,
    nonempty: bool,
) -> Result<BTreeMap<Vec<u8>, Fields>, CrdtError> {
    if depth > MAX_DEPTH {
        return Err(CrdtError::TooDeep);
    }
    // A key takes at least its length byte, a field count and one field; a field at least
    // its kind byte and a three-byte body (a flag's one dot).
    const MIN_FIELD: usize = 4;
    const MIN_KEY: usize = 2 + MIN_FIELD;
    let n = if nonempty {
        r.nonempty_count(MIN_KEY, "map keys", "empty map field")?
    } else {
        r.count(MIN_KEY, "map keys")?
    };
    let mut entries = BTreeMap::new();
    let mut last: Option<&[u8]> = None;
    for _ in 0..n {
        let key = r.bytes("map key")?;
        if last.is_some_and(|l| l >= key) {
            return Err(CrdtError::Malformed("map keys out of order"));
        }
        last = Some(key);
        let f = r.nonempty_count(MIN_FIELD, "map fields", "empty map key")?;
        let mut fields = Fields::new();
        let mut last_kind = None;
        for _ in 0..f {
            let b = r.u8()?;
            let kind = Kind::from_u8(b).ok_or(CrdtError::UnknownKind(b))?;
            if last_kind.is_some_and(|l| l >= kind) {
                return Err(CrdtError::Malformed("map fields out of order"));
            }
            last_kind = Some(kind);
            fields.insert(kind, Value::decode_store(kind, r, depth + 1)?);
        }
        entries.insert(key.to_vec(), fields);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(key: &[u8], kind: Kind, op: Op) -> Op {
        Op::Update {
            key: key.to_vec(),
            kind,
            op: Box::new(op),
        }
    }

    #[test]
    fn update_creates_and_remove_key_removes_every_kind() {
        let mut actor = Actor { id: 1, lamport: 0 };
        let mut m = ORMap::default();
        m.apply_top(&mut actor, &update(b"k", Kind::GCounter, Op::Incr(2)))
            .unwrap();
        m.apply_top(&mut actor, &update(b"k", Kind::EWFlag, Op::Enable))
            .unwrap();
        assert_eq!(m.entries().len(), 2, "a key holds one value per kind");
        assert!(m.index_is_exact());
        let delta = m
            .apply_top(&mut actor, &Op::RemoveKey(b"k".to_vec()))
            .unwrap();
        assert!(m.is_empty() && delta.is_empty());
        assert_eq!(delta.ctx.dots(), [Dot::new(1, 1), Dot::new(1, 2)]);
        assert!(m.index_is_exact());
    }

    #[test]
    fn a_failed_update_leaves_no_empty_field() {
        let mut actor = Actor { id: 1, lamport: 0 };
        let mut m = ORMap::default();
        m.ctx.insert(Dot::new(1, u64::MAX));
        let before = m.clone();
        assert_eq!(
            m.apply_top(
                &mut actor,
                &update(b"k", Kind::AWSet, Op::Add(b"e".to_vec()))
            ),
            Err(CrdtError::Overflow("dot counter"))
        );
        assert_eq!(m, before);
    }
}

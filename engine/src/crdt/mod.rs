//! Soft shared state: delta-state CRDTs (conflict-free replicated data types).
//!
//! Every replica holds its own copy of a [`Value`] and mutates it locally, with no
//! coordination; each mutation returns a *delta*, a small value that carries just its
//! effect. Deltas ride gossip; [`Value::join`] merges any of them (or any full state) into any
//! copy. The join is commutative, associative and idempotent (a join-semilattice), so
//! deltas may be lost and re-sent, duplicated, reordered or batched, and anti-entropy may
//! ship whole states: replicas that have received the same updates hold equal values
//! (*strong eventual consistency*) and hash equal ([`Value::state_hash`]).
//!
//! This module holds the data types only: no I/O, no clock, no randomness. Routing deltas to
//! partitions, buffering and acknowledging them, and anti-entropy belong to the node.
//!
//! # Types
//!
//! | kind | type | operations | under concurrency | read |
//! |---|---|---|---|---|
//! | 1 | [`GCounter`] | `Incr` | all increments count | [`Value::counter`] |
//! | 2 | [`PNCounter`] | `Incr`, `Decr` | all updates count | [`Value::counter`] |
//! | 3 | [`AWSet`] | `Add`, `Remove` | add wins over a concurrent remove | [`Value::elements`] |
//! | 4 | [`MVRegister`] | `Assign` | all concurrent values kept | [`Value::values`] |
//! | 5 | [`LwwRegister`] | `Write` | highest `(lamport, replica)` wins | [`Value::values`] |
//! | 6 | [`EWFlag`] | `Enable`, `Disable` | enable wins over a concurrent disable | [`Value::flag`] |
//! | 7 | [`ORMap`] | `Update`, `RemoveKey` | nested values merge; update wins over a concurrent remove | [`Value::entries`] |
//!
//! What a reader gets: a read is local and never waits. It reflects every update the
//! replica has applied or joined, its own included (read-your-writes on one replica), and
//! may lack updates still in flight from others; it never shows an update and later forgets
//! it unless a later remove or write that saw it arrives. There is no stronger guarantee: no
//! read on another replica sees a write at once, and two replicas may briefly disagree.
//! Nothing here reads a wall clock: order comes from dots (per-replica event counters) and,
//! for [`LwwRegister`], Lamport times.
//!
//! # How it works
//!
//! After Almeida, Shoker and Baquero, *Delta state replicated data types*, Journal of
//! Parallel and Distributed Computing 111 (2018). Counters are per-replica maps joined by
//! maximum (a departed replica's increments stay). The others are *causal* CRDTs: a dot
//! store plus a [`CausalContext`]. Every addition is tagged with a fresh [`Dot`] (replica,
//! counter); a removal removes the dots its replica has seen; the context records every dot
//! seen, so when one side holds a dot and the other has seen it but no longer holds it, the
//! join knows it was removed. The context is a version vector plus a cloud of dots seen out
//! of order, compacted as gaps close: removals leave no tombstones, and once deltas have
//! spread the context is one counter per replica that wrote. An [`ORMap`] embeds nested
//! values in its own store and context (see its docs for the counters and last-writer-wins
//! registers, which it tags with dots).
//!
//! Replica ids are [`ReplicaId`]s, the node's id. A replica must never reuse a dot: one that
//! lost its state (a wiped disk, not a mere restart with state) must learn the key's current
//! value from a peer before writing to it again, or write under a fresh id; otherwise its
//! new dots equal old ones and peers take its writes for already seen.
//!
//! # Encoding
//!
//! A body is the value alone; its kind travels beside it (the kind byte of
//! [`CrdtDelta`](crate::codec::CrdtDelta)). Integers are LEB128 varints, shortest form only;
//! byte strings a varint length (≤ [`MAX_ELEMENT_LEN`]) then the bytes; lists a varint count
//! then the items, the count checked against the bytes left ÷ the smallest item size before
//! any item is read. Entries are in strictly increasing order and never empty, so an
//! encoding is canonical: equal values, equal bytes.
//!
//! | item | encoding |
//! |---|---|
//! | dot | replica, counter (≥ 1) |
//! | dot set | count, dot\* |
//! | context | count, (replica, max counter ≥ 1)\* ; count, cloud dot\* — compact: each cloud dot's counter > its replica's max + 1 |
//!
//! | kind | top-level body | inside a map (no context: the map's is shared) |
//! |---|---|---|
//! | [`GCounter`] | count, (replica, total ≥ 1)\* | count ≥ 1, (dot, total)\* |
//! | [`PNCounter`] | count, (replica, increments, decrements; not both 0)\* | count ≥ 1, (dot, increments, decrements)\* |
//! | [`AWSet`] | context, count, (element, dot set ≥ 1)\* | count ≥ 1, (element, dot set ≥ 1)\* |
//! | [`MVRegister`] | context, count, (dot, value)\* | count ≥ 1, (dot, value)\* |
//! | [`LwwRegister`] | count 0 or 1, (lamport, replica, value) | count ≥ 1, (dot, lamport, value)\* |
//! | [`EWFlag`] | context, dot set | dot set ≥ 1 |
//! | [`ORMap`] | context, count, (key, count ≥ 1, (kind byte, nested body)\*)\* | count ≥ 1, (key, count ≥ 1, (kind byte, nested body)\*)\* |
//!
//! Every dot stored must be in the context of the value that holds it (for nested values,
//! the top-level map's) and be stored once; maps nest at most [`MAX_DEPTH`] deep. Anything
//! else is refused with a [`CrdtError`], never a panic.
//!
//! # Sizes
//!
//! [`Value::encoded_len`] gives a delta's size before encoding it. A delta is a handful of
//! bytes plus its element, key or value: an `Add` is the element, one dot, and a context of
//! that dot (plus the element's previous dots, if it was already in the set). A full state
//! grows with the data and can be far larger than a datagram: ship states in pieces, or ship
//! deltas.
//!
//! ```
//! use hearsay::crdt::{Actor, Kind, Op, Value};
//!
//! // Two replicas of a map of counters, updated concurrently.
//! let mut a = Actor { id: 1, lamport: 0 };
//! let mut b = Actor { id: 2, lamport: 0 };
//! let hit = |page: &str| Op::Update {
//!     key: page.as_bytes().to_vec(),
//!     kind: Kind::GCounter,
//!     op: Box::new(Op::Incr(1)),
//! };
//! let mut on_a = Value::new(Kind::ORMap);
//! let mut on_b = Value::new(Kind::ORMap);
//! let d1 = on_a.apply(&mut a, &hit("/home"))?;
//! let d2 = on_b.apply(&mut b, &hit("/home"))?;
//! let d3 = on_b.apply(&mut b, &hit("/about"))?;
//!
//! // Deltas arrive in any order, duplicated: same result everywhere.
//! for d in [&d3, &d2, &d3] {
//!     on_a.join(d)?;
//! }
//! on_b.join(&d1)?;
//! assert_eq!(on_a, on_b);
//! assert_eq!(on_a.state_hash(), on_b.state_hash());
//! let hits: Vec<(&[u8], i128)> = on_a
//!     .entries()
//!     .unwrap()
//!     .into_iter()
//!     .map(|(k, v)| (k, v.counter().unwrap()))
//!     .collect();
//! assert_eq!(hits, [(&b"/about"[..], 1), (&b"/home"[..], 2)]);
//! # Ok::<(), hearsay::crdt::CrdtError>(())
//! ```
#![deny(unsafe_code)]

mod context;
mod counter;
mod error;
mod map;
mod register;
mod set;
mod store;
mod value;
mod wire;

#[cfg(test)]
mod tests;

pub use context::{CausalContext, Dot};
pub use counter::{GCounter, PNCounter};
pub use error::CrdtError;
pub use map::ORMap;
pub use register::{LwwRegister, MVRegister};
pub use set::{AWSet, EWFlag};
pub use value::Value;

/// Longest set element, map key or register value, in bytes. Enforced by
/// [`Value::apply`] and [`Value::decode`], so whatever one replica stores every other can
/// decode. Elements are meant to be identifiers and small values, not documents.
pub const MAX_ELEMENT_LEN: usize = 1024;

/// Deepest nesting of maps: a top-level [`ORMap`] is depth 1, a map in it depth 2. Bounds
/// the recursion of every operation on a value, on any input.
pub const MAX_DEPTH: usize = 8;

/// A replica: the [`NodeId`](crate::placement::NodeId) (its `.0`) of the node that writes.
pub type ReplicaId = u64;

/// Who applies an operation: the replica's id and its Lamport clock.
///
/// The clock is logical, never a wall clock. [`Value::apply`] advances it past the stamp of
/// every last-writer-wins write it makes; a replica also raises it to
/// [`Value::max_lamport`] of what it joins, so one `Actor` per replica serves every key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    /// The replica's id.
    pub id: ReplicaId,
    /// The largest Lamport time this replica has stamped or seen.
    pub lamport: u64,
}

/// The kind of a CRDT value, as it travels on the wire (one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// [`GCounter`].
    GCounter = 1,
    /// [`PNCounter`].
    PNCounter = 2,
    /// [`AWSet`].
    AWSet = 3,
    /// [`MVRegister`].
    MVRegister = 4,
    /// [`LwwRegister`].
    LwwRegister = 5,
    /// [`EWFlag`].
    EWFlag = 6,
    /// [`ORMap`].
    ORMap = 7,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 7] = [
        Kind::GCounter,
        Kind::PNCounter,
        Kind::AWSet,
        Kind::MVRegister,
        Kind::LwwRegister,
        Kind::EWFlag,
        Kind::ORMap,
    ];

    /// The kind with wire byte `b`, if any.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_u8() == b)
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// A short, stable lowercase name, for metrics and benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Kind::GCounter => "gcounter",
            Kind::PNCounter => "pncounter",
            Kind::AWSet => "awset",
            Kind::MVRegister => "mvregister",
            Kind::LwwRegister => "lwwregister",
            Kind::EWFlag => "ewflag",
            Kind::ORMap => "ormap",
        }
    }
}

impl TryFrom<u8> for Kind {
    type Error = CrdtError;

    fn try_from(b: u8) -> Result<Kind, CrdtError> {
        Kind::from_u8(b).ok_or(CrdtError::UnknownKind(b))
    }
}

/// An operation on a [`Value`]; which ones a kind takes is in the [module table](self#types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add to a [`GCounter`] or [`PNCounter`].
    Incr(u64),
    /// Subtract from a [`PNCounter`].
    Decr(u64),
    /// Add an element to an [`AWSet`] (at most [`MAX_ELEMENT_LEN`] bytes).
    Add(Vec<u8>),
    /// Remove an element from an [`AWSet`]: the adds of it this replica has seen.
    Remove(Vec<u8>),
    /// Set an [`MVRegister`], replacing every value this replica has seen.
    Assign(Vec<u8>),
    /// Set an [`LwwRegister`], stamped with Lamport time `max(actor.lamport, current) + 1`.
    Write(Vec<u8>),
    /// Turn an [`EWFlag`] on.
    Enable,
    /// Turn an [`EWFlag`] off: remove the enables this replica has seen.
    Disable,
    /// Create the value of `kind` at `key` in an [`ORMap`] if it is missing, and apply `op`
    /// to it.
    Update {
        /// The key (at most [`MAX_ELEMENT_LEN`] bytes).
        key: Vec<u8>,
        /// The nested value's kind.
        kind: Kind,
        /// The operation on the nested value.
        op: Box<Op>,
    },
    /// Remove every value at a key of an [`ORMap`], as far as this replica has seen them.
    RemoveKey(Vec<u8>),
}

impl Op {
    /// The operation's name (`"Incr"`, `"Update"`, …), as in [`CrdtError::WrongOp`].
    pub fn name(&self) -> &'static str {
        match self {
            Op::Incr(_) => "Incr",
            Op::Decr(_) => "Decr",
            Op::Add(_) => "Add",
            Op::Remove(_) => "Remove",
            Op::Assign(_) => "Assign",
            Op::Write(_) => "Write",
            Op::Enable => "Enable",
            Op::Disable => "Disable",
            Op::Update { .. } => "Update",
            Op::RemoveKey(_) => "RemoveKey",
        }
    }
}

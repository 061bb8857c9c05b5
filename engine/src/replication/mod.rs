//! Replication of the CRDT store: delta buffers acknowledged per neighbour, and digest
//! anti-entropy for replicas that fell behind.
//!
//! The store maps keys to [`Value`]s, split over [`PARTITIONS`] partitions by key hash (the
//! engine gives each shard thread its own partitions, so one partition is only ever mutated
//! and merged by one thread). Every mutation and every join that changes a value appends a
//! delta to its partition's buffer under the next sequence number: the buffer is the
//! delta-interval log of Almeida et al.'s anti-entropy algorithm.
//!
//! - **Deltas to neighbours.** Each node keeps a few neighbours (random live members,
//!   replaced when they leave). Every round it sends each neighbour, per partition, one
//!   datagram with the contiguous run of deltas that follows what the neighbour last
//!   acknowledged; the neighbour joins them and acknowledges the run's last sequence number
//!   ([`CrdtAck`](crate::codec::CrdtAck)). A delta that changes the receiver's value enters
//!   the receiver's own buffer, so changes flood the neighbour graph. Lost datagrams or acks
//!   only mean the run is sent again. Deltas every neighbour acknowledged are dropped; a
//!   buffer is also capped, and neighbours that fall behind the cap are left to
//!   anti-entropy.
//! - **Digests.** Every anti-entropy round a node sends a random member the key count and
//!   an order-independent hash of each partition. Where they differ, the peer answers with
//!   per-range hashes ([`RANGES`] ranges of key-hash space); each side then sends its full
//!   values for the ranges that differ and its own range hashes, until the hashes agree.
//!   Joins are idempotent, so both sides may send the same value; nothing needs to know who
//!   is newer.
//!
//! Consistency: a node reads its own writes at once; the cluster converges once every
//! delta has reached every node (eventual consistency: strong convergence of CRDTs, no
//! causal delivery across keys). Nothing uses physical time: LWW registers are ordered by
//! Lamport clocks.
#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::crdt::{Actor, CrdtError, Kind, Op, Value};
use crate::membership::mix64;
use crate::placement::NodeId;

/// Partitions of the key space.
pub const PARTITIONS: usize = 16;
/// Ranges per partition in a range digest.
pub const RANGES: usize = 16;

/// The partition of a key.
pub fn partition_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % PARTITIONS as u64) as usize
}

/// The digest range of a key inside its partition.
pub fn range_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) >> 60) as usize
}

/// The hash a key and its value contribute to their range.
fn entry_hash(key: &[u8], value: &Value) -> u64 {
    mix64(xxhash_rust::xxh3::xxh3_64(key) ^ value.state_hash().rotate_left(29))
}

/// One buffered delta.
#[derive(Debug)]
pub struct Delta {
    /// Its sequence number in the partition.
    pub seq: u64,
    /// The key it changes.
    pub key: Vec<u8>,
    /// The delta.
    pub value: Value,
}

/// Per-range key counts and hashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeDigest {
    /// Keys in the range.
    pub keys: u32,
    /// Wrapping sum of the entries' hashes.
    pub hash: u64,
}

/// One partition of the store.
#[derive(Debug)]
pub struct Partition {
    values: BTreeMap<Vec<u8>, Value>,
    ranges: [RangeDigest; RANGES],
    /// Sequence number the next delta gets.
    next_seq: u64,
    buffer: VecDeque<Delta>,
    /// Neighbour → highest sequence number it acknowledged.
    acks: HashMap<NodeId, u64>,
    /// Neighbour → first sequence number of the run last sent to it.
    sent_from: HashMap<NodeId, u64>,
}

impl Partition {
    fn new(first_seq: u64) -> Self {
        Self {
            values: BTreeMap::new(),
            ranges: [RangeDigest::default(); RANGES],
            next_seq: first_seq,
            buffer: VecDeque::new(),
            acks: HashMap::new(),
            sent_from: HashMap::new(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the partition holds no key.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whole-partition digest: key count and the sum of the range hashes.
    pub fn digest(&self) -> RangeDigest {
        self.ranges
            .iter()
            .fold(RangeDigest::default(), |acc, r| RangeDigest {
                keys: acc.keys + r.keys,
                hash: acc.hash.wrapping_add(r.hash),
            })
    }

    /// Per-range digests.
    pub fn ranges(&self) -> &[RangeDigest; RANGES] {
        &self.ranges
    }

    /// Keys and values in the ranges `pick` accepts, in key order.
    pub fn range_entries_where<'a>(
        &'a self,
        pick: impl Fn(usize) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Value)> + 'a {
        self.values.iter().filter(move |(k, _)| pick(range_of(k)))
    }

    /// Deltas buffered.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The value of a key.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.values.get(key)
    }

    /// The deltas a neighbour has not acknowledged, oldest first.
    pub fn pending_for(&self, neighbour: NodeId) -> impl Iterator<Item = &Delta> + '_ {
        let acked = self.acks.get(&neighbour).copied().unwrap_or(0);
        self.buffer.iter().filter(move |d| d.seq > acked)
    }

    /// Remember that a run starting at `first` went to `neighbour`.
    pub fn note_sent(&mut self, neighbour: NodeId, first: u64) {
        self.sent_from.insert(neighbour, first);
    }

    /// A neighbour acknowledged `seq`: trust it only when the run it acknowledges started
    /// right after what the neighbour had acknowledged before (so it holds everything up to
    /// `seq`), then drop what every neighbour holds.
    pub fn acknowledge(&mut self, neighbour: NodeId, seq: u64) -> bool {
        let acked = self.acks.get(&neighbour).copied().unwrap_or(0);
        let first_pending = self
            .buffer
            .iter()
            .find(|d| d.seq > acked)
            .map_or(u64::MAX, |d| d.seq);
        let Some(&from) = self.sent_from.get(&neighbour) else {
            return false;
        };
        if from > first_pending || seq < acked || seq >= self.next_seq {
            return false;
        }
        self.acks.insert(neighbour, seq);
        true
    }

    /// Drop deltas every current neighbour acknowledged, and the oldest beyond `cap`.
    fn trim(&mut self, neighbours: &[NodeId], cap: usize) {
        self.acks.retain(|n, _| neighbours.contains(n));
        self.sent_from.retain(|n, _| neighbours.contains(n));
        let floor = if neighbours.is_empty() {
            0
        } else {
            neighbours
                .iter()
                .map(|n| self.acks.get(n).copied().unwrap_or(0))
                .min()
                .unwrap_or(0)
        };
        while self
            .buffer
            .front()
            .is_some_and(|d| d.seq <= floor || self.buffer.len() > cap)
        {
            self.buffer.pop_front();
        }
    }

    /// Join `value` into `key`; on change, account for it and buffer `delta` (or the value
    /// itself) under a new sequence number. Returns whether the value changed.
    fn join_at(&mut self, key: &[u8], value: &Value) -> Result<bool, CrdtError> {
        let range = range_of(key);
        let changed = match self.values.get_mut(key) {
            Some(v) => {
                let before = entry_hash(key, v);
                let changed = v.join(value)?;
                if changed {
                    let after = entry_hash(key, v);
                    let r = &mut self.ranges[range];
                    r.hash = r.hash.wrapping_sub(before).wrapping_add(after);
                }
                changed
            }
            None => {
                let mut v = Value::new(value.kind());
                v.join(value)?;
                let r = &mut self.ranges[range];
                r.keys += 1;
                r.hash = r.hash.wrapping_add(entry_hash(key, &v));
                self.values.insert(key.to_vec(), v);
                true
            }
        };
        if changed {
            self.push_delta(key, value.clone());
        }
        Ok(changed)
    }

    fn push_delta(&mut self, key: &[u8], value: Value) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.buffer.push_back(Delta {
            seq,
            key: key.to_vec(),
            value,
        });
    }
}

/// The replicated store of one node.
#[derive(Debug)]
pub struct Store {
    actor: Actor,
    partitions: Vec<Partition>,
    buffer_cap: usize,
    max_value_len: usize,
}

impl Store {
    /// An empty store for replica `id`. Sequence numbers start at `first_seq` (random per
    /// process, so a restarted node's runs are never mistaken for its old ones); each
    /// partition buffers at most `buffer_cap` deltas; values whose encoding would exceed
    /// `max_value_len` bytes together with their key are refused, since a value must fit
    /// one datagram to replicate.
    pub fn new(id: NodeId, first_seq: u64, buffer_cap: usize, max_value_len: usize) -> Self {
        Self {
            actor: Actor {
                id: id.0,
                lamport: 0,
            },
            partitions: (0..PARTITIONS)
                .map(|_| Partition::new(first_seq.max(1)))
                .collect(),
            buffer_cap,
            max_value_len,
        }
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// One partition, mutably.
    pub fn partition_mut(&mut self, p: usize) -> Option<&mut Partition> {
        self.partitions.get_mut(p)
    }

    /// The value of a key.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.partitions[partition_of(key)].get(key)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(Partition::len).sum()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deltas buffered across partitions.
    pub fn buffered(&self) -> usize {
        self.partitions.iter().map(Partition::buffered).sum()
    }

    /// Order-independent hash of the whole store: equal on two replicas holding equal
    /// values.
    pub fn state_hash(&self) -> u64 {
        self.partitions.iter().fold(0u64, |acc, p| {
            let d = p.digest();
            mix64(acc ^ d.hash ^ u64::from(d.keys))
        })
    }

    /// Apply a local mutation; the delta is buffered for the neighbours.
    pub fn update(&mut self, key: &[u8], kind: Kind, op: &Op) -> Result<(), ReplicationError> {
        if key.len() > crate::codec::MAX_CRDT_KEY_LEN {
            return Err(ReplicationError::KeyTooLong(key.len()));
        }
        let p = &mut self.partitions[partition_of(key)];
        let range = range_of(key);
        let mut scratch;
        let existing = match p.values.get_mut(key) {
            Some(v) => v,
            None => {
                scratch = Value::new(kind);
                &mut scratch
            }
        };
        if existing.kind() != kind {
            return Err(ReplicationError::Crdt(CrdtError::KindMismatch {
                expected: existing.kind(),
                found: kind,
            }));
        }
        // Work on a copy so a refused mutation leaves the value untouched.
        let mut next = existing.clone();
        let mut actor = self.actor;
        let delta = next.apply(&mut actor, op)?;
        // Key and value travel in one datagram.
        let max = self.max_value_len.saturating_sub(key.len());
        if next.encoded_len() > max {
            return Err(ReplicationError::ValueTooLarge {
                len: next.encoded_len(),
                max,
            });
        }
        self.actor = actor;
        let before = p.values.get(key).map(|v| entry_hash(key, v));
        let r = &mut p.ranges[range];
        match before {
            Some(h) => r.hash = r.hash.wrapping_sub(h),
            None => r.keys += 1,
        }
        r.hash = r.hash.wrapping_add(entry_hash(key, &next));
        p.values.insert(key.to_vec(), next);
        p.push_delta(key, delta);
        Ok(())
    }

    /// Join a remote delta or state. Returns whether the local value changed.
    pub fn join(&mut self, key: &[u8], value: &Value) -> Result<bool, ReplicationError> {
        if key.len() > crate::codec::MAX_CRDT_KEY_LEN {
            return Err(ReplicationError::KeyTooLong(key.len()));
        }
        let p = &mut self.partitions[partition_of(key)];
        let changed = p.join_at(key, value)?;
        self.actor.lamport = self.actor.lamport.max(value.max_lamport());
        Ok(changed)
    }

    /// Keep only `neighbours`' acknowledgements and drop what they all hold.
    pub fn trim(&mut self, neighbours: &[NodeId]) {
        for p in &mut self.partitions {
            p.trim(neighbours, self.buffer_cap);
        }
    }
}

/// Why the store refused a mutation or a remote value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReplicationError {
    /// The key is longer than [`MAX_CRDT_KEY_LEN`](crate::codec::MAX_CRDT_KEY_LEN).
    #[error("key of {0} bytes is too long")]
    KeyTooLong(usize),
    /// The value would no longer fit one datagram, so it could not replicate. Nothing
    /// changed.
    #[error("value of {len} bytes exceeds the replicable maximum of {max}")]
    ValueTooLarge {
        /// Encoded length after the mutation.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node has left or is leaving: it takes no more writes.
    #[error("the node has left the cluster")]
    Stopped,
    /// The CRDT refused the operation or the remote value. Nothing changed.
    #[error(transparent)]
    Crdt(#[from] CrdtError),
}

impl ReplicationError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::KeyTooLong(_) => "key_too_long",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::Stopped => "stopped",
            Self::Crdt(e) => e.reason(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64) -> Store {
        Store::new(NodeId(id), 1, 1024, 1200)
    }

    #[test]
    fn local_updates_are_buffered_and_readable() {
        let mut s = store(1);
        s.update(b"hits", Kind::GCounter, &Op::Incr(3)).unwrap();
        s.update(b"hits", Kind::GCounter, &Op::Incr(2)).unwrap();
        assert_eq!(s.get(b"hits").unwrap().counter(), Some(5));
        assert_eq!(s.buffered(), 2);
        // A wrong kind is refused and changes nothing.
        assert!(s
            .update(b"hits", Kind::AWSet, &Op::Add(b"x".to_vec()))
            .is_err());
        assert_eq!(s.buffered(), 2);
    }

    #[test]
    fn deltas_make_two_stores_equal_and_duplicates_change_nothing() {
        let mut a = store(1);
        let mut b = store(2);
        a.update(b"k", Kind::PNCounter, &Op::Incr(5)).unwrap();
        b.update(b"k", Kind::PNCounter, &Op::Decr(2)).unwrap();
        b.update(b"s", Kind::AWSet, &Op::Add(b"x".to_vec()))
            .unwrap();
        let from_a: Vec<(Vec<u8>, Value)> = a
            .partitions
            .iter()
            .flat_map(|p| p.buffer.iter().map(|d| (d.key.clone(), d.value.clone())))
            .collect();
        let from_b: Vec<(Vec<u8>, Value)> = b
            .partitions
            .iter()
            .flat_map(|p| p.buffer.iter().map(|d| (d.key.clone(), d.value.clone())))
            .collect();
        for (k, v) in &from_b {
            assert!(a.join(k, v).unwrap());
            assert!(!a.join(k, v).unwrap());
        }
        for (k, v) in &from_a {
            b.join(k, v).unwrap();
        }
        assert_eq!(a.state_hash(), b.state_hash());
        assert_eq!(a.get(b"k").unwrap().counter(), Some(3));
    }

    #[test]
    fn acknowledged_deltas_are_trimmed_and_the_buffer_is_capped() {
        let mut s = Store::new(NodeId(1), 100, 8, 1200);
        let key = b"k";
        for _ in 0..5 {
            s.update(key, Kind::GCounter, &Op::Incr(1)).unwrap();
        }
        let p = partition_of(key);
        let n = NodeId(9);
        let part = s.partition_mut(p).unwrap();
        assert_eq!(part.pending_for(n).count(), 5);
        // An ack for a run that was never sent is ignored.
        assert!(!part.acknowledge(n, 102));
        part.note_sent(n, 100);
        assert!(part.acknowledge(n, 102));
        assert_eq!(part.pending_for(n).count(), 2);
        s.trim(&[n]);
        assert_eq!(s.partitions()[p].buffered(), 2);
        for _ in 0..20 {
            s.update(key, Kind::GCounter, &Op::Incr(1)).unwrap();
        }
        s.trim(&[n]);
        assert_eq!(s.partitions()[p].buffered(), 8);
    }

    #[test]
    fn range_digests_track_values() {
        let mut a = store(1);
        let mut b = store(2);
        for i in 0..50u32 {
            a.update(&i.to_be_bytes(), Kind::GCounter, &Op::Incr(1))
                .unwrap();
        }
        for p in 0..PARTITIONS {
            let part = &a.partitions()[p];
            let entries: Vec<_> = part
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in entries {
                b.join(&k, &v).unwrap();
            }
        }
        for p in 0..PARTITIONS {
            assert_eq!(a.partitions()[p].ranges(), b.partitions()[p].ranges());
        }
        assert_eq!(a.len(), 50);
        assert_eq!(a.state_hash(), b.state_hash());
        b.update(&7u32.to_be_bytes(), Kind::GCounter, &Op::Incr(1))
            .unwrap();
        let p = partition_of(&7u32.to_be_bytes());
        let r = range_of(&7u32.to_be_bytes());
        assert_ne!(a.partitions()[p].ranges()[r], b.partitions()[p].ranges()[r]);
        assert_ne!(a.state_hash(), b.state_hash());
    }
}

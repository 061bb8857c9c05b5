//! The node's side of CRDT replication: local updates, delta runs to neighbours, acks and
//! digest anti-entropy (see [`crate::replication`]).

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::{Event, FrameContext, Intent, Node, Phase};
use crate::codec::{CrdtAck, CrdtDelta, CrdtDigest, CrdtRange, FrameWriter, List, Message};
use crate::crdt::{Kind, Op, Value};
use crate::membership::mix64;
use crate::placement::NodeId;
use crate::replication::{partition_of, ReplicationError, Store, PARTITIONS, RANGES};

/// Sequence number of a [`CrdtDelta`] that carries a full value from anti-entropy rather
/// than a buffered delta (never acknowledged).
pub(super) const STATE_SEQ: u64 = 0;

impl Node {
    /// Apply a mutation to the local replica. The change is readable at once
    /// ([`crdt_get`](Self::crdt_get)) and replicates to the cluster in the background.
    pub fn crdt_update(
        &mut self,
        now: Instant,
        key: &[u8],
        kind: Kind,
        op: &Op,
    ) -> Result<(), ReplicationError> {
        if matches!(self.phase, Phase::Leaving(_) | Phase::Stopped) {
            self.stats.refused_commands += 1;
            return Err(ReplicationError::Stopped);
        }
        self.store.update(key, kind, op)?;
        self.stats.crdt_updates += 1;
        self.push_event(Event::CrdtChanged(key.to_vec()));
        self.crdt_soon(now);
        Ok(())
    }

    /// Join a value obtained elsewhere (a backup, another cluster) into the local replica,
    /// as if it had arrived from a peer; it replicates from here like any change. Returns
    /// whether the local value changed.
    pub fn crdt_join(
        &mut self,
        now: Instant,
        key: &[u8],
        value: &Value,
    ) -> Result<bool, ReplicationError> {
        let changed = self.store.join(key, value)?;
        if changed {
            self.push_event(Event::CrdtChanged(key.to_vec()));
            self.crdt_soon(now);
        }
        Ok(changed)
    }

    /// The local replica's value of a key.
    pub fn crdt_get(&self, key: &[u8]) -> Option<&Value> {
        self.store.get(key)
    }

    /// The local replica.
    pub fn crdt_store(&self) -> &Store {
        &self.store
    }

    /// Current replication neighbours.
    pub fn crdt_neighbours(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.neighbours.iter().map(|n| n.0)
    }

    /// Ask for a replication round soon: at once, unless one went out less than a quarter
    /// of [`crdt_round_interval`](super::NodeConfig::crdt_round_interval) ago.
    pub(super) fn crdt_soon(&mut self, now: Instant) {
        let earliest = match self.last_crdt_round {
            Some(t) => (t + self.config.crdt_round_interval / 4).max(now),
            None => now,
        };
        if self.next_crdt_round.is_none_or(|t| t > earliest) {
            self.next_crdt_round = Some(earliest);
        }
    }

    /// Refresh the neighbours, drop what they all acknowledged and send each the deltas it
    /// lacks, one run per partition.
    pub(super) fn crdt_round(&mut self, now: Instant) {
        self.next_crdt_round = None;
        self.last_crdt_round = Some(now);
        if self.phase != Phase::Member {
            return;
        }
        let table = &self.table;
        self.neighbours
            .retain(|(id, _)| table.get(*id).is_some_and(|m| m.is_live()));
        let want = self.config.crdt_neighbours;
        // The first neighbour is the successor on the ring of hashed ids, so every live
        // member is some member's neighbour and deltas reach all of them; the others are
        // random, so they reach them in few hops.
        if let Some(succ) = self.successor() {
            if self.neighbours.first() != Some(&succ) {
                self.neighbours.retain(|n| n.0 != succ.0);
                self.neighbours.insert(0, succ);
            }
        }
        self.neighbours.truncate(want);
        if self.neighbours.len() < want {
            let mut exclude: Vec<NodeId> = self.neighbours.iter().map(|n| n.0).collect();
            exclude.push(self.config.id);
            self.scratch_peers.clear();
            self.table.sample_live(
                &mut self.rng,
                want - self.neighbours.len(),
                &exclude,
                &mut self.scratch_peers,
            );
            self.neighbours.extend_from_slice(&self.scratch_peers);
        }
        let ids: Vec<NodeId> = self.neighbours.iter().map(|n| n.0).collect();
        self.store.trim(&ids);
        let mut pending = false;
        for &(id, addr) in &self.neighbours {
            for p in 0..PARTITIONS {
                if self.store.partitions()[p].pending_for(id).next().is_some() {
                    pending = true;
                    self.out.push_back(Intent::CrdtRun {
                        to: addr,
                        neighbour: id,
                        partition: p as u16,
                    });
                }
            }
        }
        // Unacknowledged runs are sent again next round.
        if pending {
            self.next_crdt_round = Some(now + self.config.crdt_round_interval);
        }
    }

    /// The live member that follows this node on the ring of hashed ids, recomputed when
    /// the view changes.
    fn successor(&mut self) -> Option<(NodeId, SocketAddr)> {
        let view = self.table.view_hash();
        if let Some((v, s)) = self.successor {
            if v == view {
                return s;
            }
        }
        let me = mix64(self.config.id.0);
        let succ = self
            .table
            .iter()
            .filter(|m| m.is_live() && m.id != self.config.id)
            .min_by_key(|m| mix64(m.id.0).wrapping_sub(me))
            .map(|m| (m.id, m.addr));
        self.successor = Some((view, succ));
        succ
    }

    /// Start digest anti-entropy with a random member.
    pub(super) fn crdt_sync_tick(&mut self, now: Instant) {
        self.next_crdt_sync = now + self.jittered(self.config.crdt_sync_interval);
        if self.phase != Phase::Member {
            return;
        }
        // Replace one random neighbour, so that neighbours picked while the view was small
        // (during a cold start) do not stay forever.
        if self.neighbours.len() > 1 {
            let i = self.rng.random_range(1..self.neighbours.len());
            self.neighbours.swap_remove(i);
        }
        if let Some(m) = self.table.random_live(&mut self.rng, self.config.id) {
            let to = m.addr;
            self.stats.crdt_syncs += 1;
            self.out.push_back(Intent::CrdtSummary { to });
        }
    }

    pub(super) fn handle_crdt_delta(
        &mut self,
        now: Instant,
        d: CrdtDelta<'_>,
        ctx: &mut FrameContext,
    ) {
        let p = usize::from(d.partition);
        if p >= PARTITIONS || partition_of(d.key) != p {
            self.stats.crdt_rejected += 1;
            self.stats.count_drop("crdt_partition");
            return;
        }
        let Some(kind) = Kind::from_u8(d.kind) else {
            self.stats.crdt_rejected += 1;
            self.stats.count_drop("crdt_unknown_kind");
            return;
        };
        let value = match Value::decode(kind, d.payload) {
            Ok(v) => v,
            Err(e) => {
                self.stats.crdt_rejected += 1;
                self.stats.count_drop(e.reason());
                return;
            }
        };
        match self.store.join(d.key, &value) {
            Ok(changed) => {
                self.stats.crdt_deltas_in += 1;
                if changed {
                    self.stats.crdt_changes += 1;
                    self.push_event(Event::CrdtChanged(d.key.to_vec()));
                    self.crdt_soon(now);
                }
                if d.seq != STATE_SEQ {
                    let slot = &mut ctx.crdt_acks[p];
                    *slot = Some(slot.map_or(d.seq, |s: u64| s.max(d.seq)));
                }
            }
            Err(e) => {
                self.stats.crdt_rejected += 1;
                self.stats.count_drop(e.reason());
            }
        }
    }

    pub(super) fn handle_crdt_ack(&mut self, sender: NodeId, a: CrdtAck) {
        if let Some(p) = self.store.partition_mut(usize::from(a.partition)) {
            p.acknowledge(sender, a.seq);
        }
    }

    /// A digest: without ranges it opens a round (answer with ranges where the partition
    /// differs); with ranges, send the values of the ranges that differ and this node's
    /// ranges, until both sides agree.
    pub(super) fn handle_crdt_digest(&mut self, from: SocketAddr, d: CrdtDigest<'_>) {
        let p = usize::from(d.partition);
        let Some(part) = self.store.partitions().get(p) else {
            self.stats.count_drop("crdt_partition");
            return;
        };
        let mine = part.digest();
        if d.ranges.is_empty() {
            if mine.keys != d.keys || mine.hash != d.hash {
                self.out.push_back(Intent::CrdtRanges {
                    to: from,
                    partition: d.partition,
                });
            }
            return;
        }
        if d.ranges.len() != RANGES {
            self.stats.count_drop("crdt_ranges");
            return;
        }
        let ranges = part.ranges();
        let mut differ = 0u32;
        for (r, theirs) in d.ranges.iter().enumerate() {
            if theirs.hash != ranges[r].hash {
                differ |= 1 << r;
            }
        }
        if differ == 0 {
            return;
        }
        let keys: Vec<Vec<u8>> = part
            .range_entries_where(|r| differ & (1 << r) != 0)
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            self.out.push_back(Intent::CrdtState {
                to: from,
                keys,
                pos: 0,
            });
        }
        self.out.push_back(Intent::CrdtRanges {
            to: from,
            partition: d.partition,
        });
    }
}

/// Queue the acknowledgements gathered while reading a frame.
pub(super) fn queue_acks(node: &mut Node, to: SocketAddr, ctx: &FrameContext) {
    let acks: Vec<(u16, u64)> = ctx
        .crdt_acks
        .iter()
        .enumerate()
        .filter_map(|(p, s)| s.map(|s| (p as u16, s)))
        .collect();
    if !acks.is_empty() {
        node.out.push_back(Intent::CrdtAcks { to, acks });
    }
}

/// Write the run of deltas `neighbour` has not acknowledged in `partition`; returns how
/// many went in.
pub(super) fn write_run(
    store: &mut Store,
    scratch: &mut Vec<u8>,
    w: &mut FrameWriter<'_, '_>,
    neighbour: NodeId,
    partition: u16,
) -> usize {
    let Some(part) = store.partition_mut(usize::from(partition)) else {
        return 0;
    };
    let mut first = None;
    let mut n = 0;
    for d in part.pending_for(neighbour) {
        scratch.clear();
        d.value.encode(scratch);
        let msg = Message::CrdtDelta(CrdtDelta {
            partition,
            seq: d.seq,
            key: &d.key,
            kind: d.value.kind() as u8,
            payload: scratch,
        });
        if !w.try_push(&msg) {
            break;
        }
        first.get_or_insert(d.seq);
        n += 1;
    }
    if let Some(first) = first {
        part.note_sent(neighbour, first);
    }
    n
}

/// Write full values of `keys[pos..]` as state deltas; returns the new position.
pub(super) fn write_state(
    store: &Store,
    scratch: &mut Vec<u8>,
    w: &mut FrameWriter<'_, '_>,
    keys: &[Vec<u8>],
    mut pos: usize,
) -> usize {
    while pos < keys.len() {
        let key = &keys[pos];
        let Some(v) = store.get(key) else {
            pos += 1;
            continue;
        };
        scratch.clear();
        v.encode(scratch);
        let msg = Message::CrdtDelta(CrdtDelta {
            partition: partition_of(key) as u16,
            seq: STATE_SEQ,
            key,
            kind: v.kind() as u8,
            payload: scratch,
        });
        if !w.try_push(&msg) {
            break;
        }
        pos += 1;
    }
    pos
}

/// Write whole-partition digests (no ranges) for every partition.
pub(super) fn write_summary(store: &Store, w: &mut FrameWriter<'_, '_>) {
    for (p, part) in store.partitions().iter().enumerate() {
        let d = part.digest();
        w.try_push(&Message::CrdtDigest(CrdtDigest {
            partition: p as u16,
            keys: d.keys,
            hash: d.hash,
            ranges: List::new(&[]),
        }));
    }
}

/// Write one partition's digest with its ranges.
pub(super) fn write_ranges(store: &Store, w: &mut FrameWriter<'_, '_>, partition: u16) {
    let Some(part) = store.partitions().get(usize::from(partition)) else {
        return;
    };
    let d = part.digest();
    let ranges: Vec<CrdtRange> = part
        .ranges()
        .iter()
        .enumerate()
        .map(|(r, rd)| CrdtRange {
            start: (r as u64) << 60,
            hash: rd.hash,
        })
        .collect();
    w.try_push(&Message::CrdtDigest(CrdtDigest {
        partition,
        keys: d.keys,
        hash: d.hash,
        ranges: List::new(&ranges),
    }));
}

/// Write acknowledgements.
pub(super) fn write_acks(w: &mut FrameWriter<'_, '_>, acks: &[(u16, u64)]) {
    for &(partition, seq) in acks {
        w.try_push(&Message::CrdtAck(CrdtAck { partition, seq }));
    }
}

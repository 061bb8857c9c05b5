//! Infection-style dissemination: which member updates ride on the next datagram.
//!
//! Every change a node learns is queued by member id (a newer change of the same member
//! replaces the older one in place) and piggybacked on probes, acks and gossip until it has
//! been sent `limit` times, where `limit = λ · ⌈log10(N + 1)⌉` (SWIM §4.1: with that many
//! retransmissions a rumour reaches every member with high probability). The least-sent
//! updates go first, newest first among equals, so a fresh change overtakes old chatter.
#![deny(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::placement::NodeId;

/// Updates that did not fit looked past before a datagram counts as full.
const MAX_SKIPS: usize = 4;

/// The retransmission limit for a cluster of `n` members and multiplier `mult` (λ).
pub fn retransmit_limit(n: usize, mult: u32) -> u32 {
    let log = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
    mult.max(1) * log
}

/// Pending member updates, ordered by (times sent, newest first).
#[derive(Debug, Default)]
pub struct BroadcastQueue {
    /// id → (times sent, enqueue sequence).
    by_id: HashMap<NodeId, (u32, u64)>,
    order: BTreeSet<(u32, Reverse<u64>, NodeId)>,
    next_seq: u64,
    /// Entries taken by the current [`take`](Self::take), re-inserted at its end.
    scratch: Vec<(u32, u64, NodeId)>,
}

impl BroadcastQueue {
    /// Queue (or re-queue, as new) the current state of member `id`.
    pub fn push(&mut self, id: NodeId) {
        if let Some((sent, seq)) = self.by_id.remove(&id) {
            self.order.remove(&(sent, Reverse(seq), id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(id, (0, seq));
        self.order.insert((0, Reverse(seq), id));
    }

    /// Drop a member's pending update (it was collected).
    pub fn remove(&mut self, id: NodeId) {
        if let Some((sent, seq)) = self.by_id.remove(&id) {
            self.order.remove(&(sent, Reverse(seq), id));
        }
    }

    /// Updates pending.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Offer pending updates to `write`, least-sent first, until it has refused a few (the
    /// datagram is full) or the queue is exhausted. Each update `write` accepts counts as
    /// sent once; an update sent `limit` times leaves the queue. Returns how many were
    /// accepted.
    pub fn take(&mut self, limit: u32, mut write: impl FnMut(NodeId) -> bool) -> usize {
        self.scratch.clear();
        let mut accepted = 0;
        let mut refused = 0;
        let mut cursor = None;
        loop {
            let next = match cursor {
                None => self.order.first(),
                Some(after) => self
                    .order
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .next(),
            };
            let Some(&(sent, Reverse(seq), id)) = next else {
                break;
            };
            if write(id) {
                self.order.remove(&(sent, Reverse(seq), id));
                accepted += 1;
                self.scratch.push((sent + 1, seq, id));
            } else {
                // A large update that does not fit must not block the smaller ones behind
                // it for good; look a little further before giving up on this datagram.
                refused += 1;
                if refused > MAX_SKIPS {
                    break;
                }
                cursor = Some((sent, Reverse(seq), id));
            }
        }
        for i in 0..self.scratch.len() {
            let (sent, seq, id) = self.scratch[i];
            if sent >= limit {
                self.by_id.remove(&id);
            } else {
                self.by_id.insert(id, (sent, seq));
                self.order.insert((sent, Reverse(seq), id));
            }
        }
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_grows_with_log_n() {
        assert_eq!(retransmit_limit(1, 4), 4);
        assert_eq!(retransmit_limit(9, 4), 4);
        assert_eq!(retransmit_limit(10, 4), 8);
        assert_eq!(retransmit_limit(5000, 4), 16);
    }

    #[test]
    fn least_sent_and_newest_go_first_and_expire_after_limit() {
        let mut q = BroadcastQueue::default();
        for id in 1..=3 {
            q.push(NodeId(id));
        }
        let mut got = Vec::new();
        q.take(2, |id| {
            got.push(id);
            got.len() <= 2
        });
        // Newest first; the third offer was refused and stays unsent.
        assert_eq!(got, vec![NodeId(3), NodeId(2), NodeId(1)]);
        assert_eq!(q.len(), 3);
        got.clear();
        q.take(2, |id| {
            got.push(id);
            true
        });
        // 1 has been sent least, then 3 and 2 (newest first).
        assert_eq!(got, vec![NodeId(1), NodeId(3), NodeId(2)]);
        // 3 and 2 have now been sent twice and left; 1 once.
        assert_eq!(q.len(), 1);
        q.take(2, |_| true);
        assert!(q.is_empty());
    }

    #[test]
    fn an_update_that_does_not_fit_does_not_block_the_rest() {
        let mut q = BroadcastQueue::default();
        for id in 1..=3 {
            q.push(NodeId(id));
        }
        // Node 3 (newest, first in line) never fits.
        let mut got = Vec::new();
        q.take(5, |id| {
            if id == NodeId(3) {
                return false;
            }
            got.push(id);
            true
        });
        assert_eq!(got, vec![NodeId(2), NodeId(1)]);
    }

    #[test]
    fn requeue_resets_the_count() {
        let mut q = BroadcastQueue::default();
        q.push(NodeId(1));
        q.take(3, |_| true);
        q.take(3, |_| true);
        q.push(NodeId(1));
        assert_eq!(q.take(3, |_| true), 1);
        assert_eq!(q.take(3, |_| true), 1);
        assert_eq!(q.take(3, |_| true), 1);
        assert!(q.is_empty());
        q.push(NodeId(2));
        q.remove(NodeId(2));
        assert!(q.is_empty());
    }
}

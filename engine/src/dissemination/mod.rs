//! Infection-style dissemination: which member updates ride on the next datagram.
//!
//! Every change a node learns is queued by member id (a newer change of the same member
//! replaces the older one in place) and piggybacked on probes, acks and gossip until it has
//! been sent `limit` times, where `limit = λ · ⌈log10(N + 1)⌉` (SWIM §4.1: with that many
//! retransmissions a rumour reaches every member with high probability). The least-sent
//! updates go first, newest first among equals, so a fresh change overtakes old chatter.
//!
//! Each queued member's place in line (times sent and enqueue order) is kept with the
//! member, in a [`QueueSlots`] (the member table keeps it in its entries); the queue itself
//! is a heap of 16-byte (place, id) records. A place also carries a hint of where its
//! member was last found (its position in the table), so offering an update costs one
//! look at the member's entry rather than an index search per step; a hint that has gone
//! stale (the entry moved) only costs the search.
#![deny(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::placement::NodeId;

/// Updates that did not fit looked past before a datagram counts as full.
const MAX_SKIPS: usize = 4;
/// Records [`BroadcastQueue::take`] pops ahead of the one it offers, so that the entries
/// they point at load at the same time rather than one miss after another.
const LOOKAHEAD: usize = 16;

/// The retransmission limit for a cluster of `n` members and multiplier `mult` (λ).
pub fn retransmit_limit(n: usize, mult: u32) -> u32 {
    // ⌈log10(n + 1)⌉, at least 1, is the digit count of n: exact in integers, and cheap,
    // since the node asks for it on every datagram and, while its queue is crowded, on
    // every copy of an update it hears again.
    let log = n.checked_ilog10().map_or(1, |d| d + 1);
    mult.max(1) * log
}

/// Fewest times a queued update is sent when a crowded queue shares out the budget.
pub const MIN_TRANSMISSIONS: u32 = 3;

/// The retransmission limit when `queued` updates wait and the queue holds `depth` at
/// full budget: `limit` up to `depth` queued, then `limit · depth / queued`, but never
/// below [`MIN_TRANSMISSIONS`] (nor above `limit`).
///
/// A queue far longer than a datagram's worth is a bulk change (a cold start, a partition
/// healing), not a rumour: at full budget every member would send every update
/// `limit` times and receive each about as often, long after everyone knew it. Anti-entropy
/// settles bulk changes at the cost of the differences; gossip only needs to get each
/// update going.
pub fn shared_limit(limit: u32, queued: usize, depth: usize) -> u32 {
    if queued <= depth {
        return limit;
    }
    let share = u64::from(limit) * depth as u64 / queued as u64;
    (share as u32).clamp(MIN_TRANSMISSIONS.min(limit), limit)
}

/// Bits of a place that hold the position hint.
const HINT_BITS: u32 = 24;
/// The hint meaning "no position known".
pub const NO_HINT: u32 = (1 << HINT_BITS) - 1;
/// Most times an update is counted as sent; a larger limit counts as this one.
const MAX_SENT: u32 = 255;

/// Where a [`BroadcastQueue`] keeps each member's place in line: a non-zero `u64` while the
/// member is queued, 0 otherwise. The queue reads and writes it only through this trait.
///
/// `hint` is a position the slots gave out before for this member (or [`NO_HINT`]); an
/// implementation checks it first and may ignore it.
pub trait QueueSlots {
    /// The place of `id`, 0 when it is not queued; sets `hint` to where `id` is now
    /// ([`NO_HINT`] when it has no position).
    fn queued(&self, id: NodeId, hint: &mut u32) -> u64;
    /// Set the place of `id` (0: no longer queued).
    fn set_queued(&mut self, id: NodeId, hint: u32, place: u64);
    /// Start loading what [`queued`](Self::queued) will read for `id` at `hint`, ahead of
    /// the call. Only a hint to the hardware; the default does nothing.
    fn prefetch(&self, id: NodeId, hint: u32) {
        let _ = (id, hint);
    }
}

impl QueueSlots for HashMap<NodeId, u64> {
    fn queued(&self, id: NodeId, hint: &mut u32) -> u64 {
        *hint = NO_HINT;
        self.get(&id).copied().unwrap_or(0)
    }

    fn set_queued(&mut self, id: NodeId, _hint: u32, place: u64) {
        if place == 0 {
            self.remove(&id);
        } else {
            self.insert(id, place);
        }
    }
}

/// A place in line: times sent in the top 8 bits, the enqueue sequence number inverted in
/// the next 32, a position hint in the low 24, so that places order as (times sent, newest
/// first); sequence numbers are unique, so the hint never decides. Never 0, because a
/// sequence number never reaches `u32::MAX`.
fn place(sent: u32, seq: u32, hint: u32) -> u64 {
    (u64::from(sent.min(MAX_SENT)) << 56)
        | (u64::from(u32::MAX - seq) << HINT_BITS)
        | u64::from(hint.min(NO_HINT))
}

fn sent_of(place: u64) -> u32 {
    (place >> 56) as u32
}

fn seq_of(place: u64) -> u32 {
    u32::MAX - (place >> HINT_BITS) as u32
}

fn hint_of(place: u64) -> u32 {
    (place as u32) & NO_HINT
}

/// Pending member updates, ordered by (times sent, newest first).
#[derive(Debug, Default)]
pub struct BroadcastQueue {
    /// Min-heap of (place, id). A record whose place is no longer the member's (it was
    /// queued again, or removed) is stale and skipped when it surfaces.
    heap: BinaryHeap<Reverse<(u64, NodeId)>>,
    /// Updates queued.
    len: usize,
    /// Stale records in `heap`.
    stale: usize,
    next_seq: u32,
    /// Records taken by the current [`take`](Self::take), accepted ones first, then the
    /// refused ones; re-inserted at its end.
    scratch: Vec<(u64, NodeId, u32)>,
}

impl BroadcastQueue {
    /// Queue (or re-queue, as new) the current state of member `id`.
    pub fn push(&mut self, slots: &mut impl QueueSlots, id: NodeId) {
        if self.next_seq == u32::MAX {
            self.renumber(slots);
        }
        let mut hint = NO_HINT;
        if slots.queued(id, &mut hint) == 0 {
            self.len += 1;
        } else {
            self.stale += 1;
        }
        let p = place(0, self.next_seq, hint);
        self.next_seq += 1;
        slots.set_queued(id, hint, p);
        self.heap.push(Reverse((p, id)));
        self.compact(slots);
    }

    /// Drop a member's pending update.
    pub fn remove(&mut self, slots: &mut impl QueueSlots, id: NodeId) {
        let mut hint = NO_HINT;
        if slots.queued(id, &mut hint) != 0 {
            slots.set_queued(id, hint, 0);
            self.len -= 1;
            self.stale += 1;
            self.compact(slots);
        }
    }

    /// Count a copy of `id`'s update received from someone else as one sending of it, if
    /// it is queued: the update leaves the queue once it reaches `limit` (at most 255).
    /// Returns whether it was queued.
    ///
    /// This is the feedback of Demers et al.'s rumour mongering: a node that keeps hearing
    /// an update from others loses interest in it, since most members already have it.
    /// The node applies it only to a crowded queue (see [`shared_limit`]), where the
    /// updates are a bulk change that anti-entropy also carries, so that a lone rumour
    /// keeps its whole budget.
    pub fn heard(&mut self, slots: &mut impl QueueSlots, id: NodeId, limit: u32) -> bool {
        let mut hint = NO_HINT;
        let p = slots.queued(id, &mut hint);
        if p == 0 {
            return false;
        }
        // The heap record at `p` goes stale: the update leaves, or is recorded anew.
        self.stale += 1;
        self.count_sent(slots, id, hint, p, limit.min(MAX_SENT));
        self.compact(slots);
        true
    }

    /// Count one more sending of `id`, whose place was `p` and whose heap record has been
    /// taken out or left stale: it leaves the queue at `limit`, else goes back in line.
    fn count_sent(
        &mut self,
        slots: &mut impl QueueSlots,
        id: NodeId,
        hint: u32,
        p: u64,
        limit: u32,
    ) {
        let sent = sent_of(p) + 1;
        if sent >= limit {
            slots.set_queued(id, hint, 0);
            self.len -= 1;
        } else {
            let p = place(sent, seq_of(p), hint);
            slots.set_queued(id, hint, p);
            self.heap.push(Reverse((p, id)));
        }
    }

    /// Updates pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offer pending updates to `write`, least-sent first, until it has refused a few (the
    /// datagram is full) or the queue is exhausted. `write` gets the member's id and a hint
    /// of its position in `slots`. Each update `write` accepts counts as sent once; an
    /// update sent `limit` times (at most 255) leaves the queue. Returns how many were
    /// accepted.
    pub fn take<S: QueueSlots>(
        &mut self,
        slots: &mut S,
        limit: u32,
        mut write: impl FnMut(&S, NodeId, u32) -> bool,
    ) -> usize {
        let limit = limit.min(MAX_SENT);
        self.scratch.clear();
        let mut accepted = 0;
        let mut refused = 0;
        // Records pop in batches, in heap order, and each batch's entries are prefetched
        // before the first is offered; what is left of the last batch goes back unseen.
        // The heap does not change while a batch is offered, so the order is exactly that
        // of popping one record at a time.
        let mut batch = [(0u64, NodeId(0)); LOOKAHEAD];
        'fill: loop {
            let mut n = 0;
            while n < LOOKAHEAD {
                let Some(Reverse((p, id))) = self.heap.pop() else {
                    break;
                };
                slots.prefetch(id, hint_of(p));
                batch[n] = (p, id);
                n += 1;
            }
            if n == 0 {
                break;
            }
            for k in 0..n {
                let (p, id) = batch[k];
                let mut hint = hint_of(p);
                if slots.queued(id, &mut hint) != p {
                    self.stale -= 1;
                    continue;
                }
                if write(slots, id, hint) {
                    // Accepted records stay ahead of the refused ones in `scratch`; they
                    // carry the fresh hint, the place itself is still `p`.
                    self.scratch.insert(accepted, (p, id, hint));
                    accepted += 1;
                } else {
                    // A large update that does not fit must not block the smaller ones
                    // behind it for good; look a little further before giving up on this
                    // datagram.
                    self.scratch.push((p, id, hint));
                    refused += 1;
                    if refused > MAX_SKIPS {
                        for &(p, id) in &batch[k + 1..n] {
                            self.heap.push(Reverse((p, id)));
                        }
                        break 'fill;
                    }
                }
            }
        }
        for k in 0..self.scratch.len() {
            let (p, id, hint) = self.scratch[k];
            if k >= accepted {
                self.heap.push(Reverse((p, id)));
                continue;
            }
            self.count_sent(slots, id, hint, p, limit);
        }
        self.shrink();
        accepted
    }

    /// Drop stale records once they outnumber the live ones.
    fn compact(&mut self, slots: &impl QueueSlots) {
        if self.stale > 64 && self.stale > self.len {
            self.heap
                .retain(|&Reverse((p, id))| slots.queued(id, &mut hint_of(p)) == p);
            self.stale = 0;
            self.shrink();
        }
    }

    /// Give back the heap's memory once the queue is far below its peak.
    fn shrink(&mut self) {
        let n = self.heap.len();
        if self.heap.capacity() > 4 * n + 64 {
            self.heap.shrink_to(2 * n + 16);
        }
    }

    /// Number the queued updates afresh from 0, in their current order, when sequence
    /// numbers run out.
    fn renumber(&mut self, slots: &mut impl QueueSlots) {
        let mut queued: Vec<(u64, NodeId)> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(r)| r)
            .filter(|&(p, id)| slots.queued(id, &mut hint_of(p)) == p)
            .collect();
        queued.sort_by_key(|&(p, _)| seq_of(p));
        for (seq, r) in queued.iter_mut().enumerate() {
            let seq = u32::try_from(seq).expect("fewer than u32::MAX updates queued");
            r.0 = place(sent_of(r.0), seq, hint_of(r.0));
            slots.set_queued(r.1, hint_of(r.0), r.0);
        }
        self.next_seq = u32::try_from(queued.len()).expect("fewer than u32::MAX updates queued");
        self.stale = 0;
        self.heap = queued.into_iter().map(Reverse).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert_eq, proptest, Strategy};
    use std::collections::BTreeSet;

    /// The queue as a map and an ordered set, for the model test.
    #[derive(Default)]
    struct Model {
        by_id: HashMap<NodeId, (u32, u64)>,
        order: BTreeSet<(u32, Reverse<u64>, NodeId)>,
        next_seq: u64,
    }

    impl Model {
        fn push(&mut self, id: NodeId) {
            self.remove(id);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.by_id.insert(id, (0, seq));
            self.order.insert((0, Reverse(seq), id));
        }

        fn remove(&mut self, id: NodeId) {
            if let Some((sent, seq)) = self.by_id.remove(&id) {
                self.order.remove(&(sent, Reverse(seq), id));
            }
        }

        fn heard(&mut self, id: NodeId, limit: u32) -> bool {
            let Some((sent, seq)) = self.by_id.remove(&id) else {
                return false;
            };
            self.order.remove(&(sent, Reverse(seq), id));
            if sent + 1 < limit {
                self.by_id.insert(id, (sent + 1, seq));
                self.order.insert((sent + 1, Reverse(seq), id));
            }
            true
        }

        fn take(&mut self, limit: u32, mut write: impl FnMut(NodeId) -> bool) -> usize {
            let mut taken = Vec::new();
            let (mut accepted, mut refused) = (0, 0);
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
                    taken.push((sent + 1, seq, id));
                } else {
                    refused += 1;
                    if refused > MAX_SKIPS {
                        break;
                    }
                    cursor = Some((sent, Reverse(seq), id));
                }
            }
            for (sent, seq, id) in taken {
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

    #[derive(Clone, Debug)]
    enum Op {
        Push(u64),
        Remove(u64),
        /// A copy of the id's update received, counted against this limit.
        Heard(u64, u32),
        /// A take with this limit; the writer refuses the ids in the mask (by id mod 16)
        /// and everything after `room` acceptances.
        Take {
            limit: u32,
            refuse: u16,
            room: usize,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        proptest::prop_oneof![
            4 => (0..40u64).prop_map(Op::Push),
            1 => (0..40u64).prop_map(Op::Remove),
            2 => (0..40u64, 0..5u32).prop_map(|(id, limit)| Op::Heard(id, limit)),
            4 => (0..5u32, any::<u16>(), 0..12usize)
                .prop_map(|(limit, refuse, room)| Op::Take { limit, refuse, room }),
        ]
    }

    fn run_both(ops: &[Op], first_seq: u32) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut model = Model::default();
        let mut q = BroadcastQueue {
            next_seq: first_seq,
            ..BroadcastQueue::default()
        };
        let mut s = HashMap::new();
        for op in ops {
            match *op {
                Op::Push(id) => {
                    model.push(NodeId(id));
                    q.push(&mut s, NodeId(id));
                }
                Op::Remove(id) => {
                    model.remove(NodeId(id));
                    q.remove(&mut s, NodeId(id));
                }
                Op::Heard(id, limit) => {
                    prop_assert_eq!(
                        model.heard(NodeId(id), limit),
                        q.heard(&mut s, NodeId(id), limit)
                    );
                }
                Op::Take {
                    limit,
                    refuse,
                    room,
                } => {
                    let refused = |id: NodeId| refuse & (1 << (id.0 % 16)) != 0;
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    let mut accepted = 0;
                    let na = model.take(limit, |id| {
                        a.push(id);
                        let ok = !refused(id) && accepted < room;
                        accepted += usize::from(ok);
                        ok
                    });
                    let mut accepted = 0;
                    let nb = q.take(&mut s, limit, |_, id, _| {
                        b.push(id);
                        let ok = !refused(id) && accepted < room;
                        accepted += usize::from(ok);
                        ok
                    });
                    prop_assert_eq!(na, nb);
                    prop_assert_eq!(a, b);
                }
            }
            prop_assert_eq!(model.by_id.len(), q.len());
            prop_assert_eq!(s.len(), q.len());
        }
        Ok(())
    }

    proptest! {
        /// The queue offers the same updates in the same order as a (times sent, newest
        /// first) ordered set, whatever mix of pushes, removals, copies heard and takes.
        #[test]
        fn the_queue_matches_an_ordered_set(ops in proptest::collection::vec(arb_op(), 1..300)) {
            run_both(&ops, 0)?;
        }

        /// Running out of sequence numbers renumbers the queue without reordering it.
        #[test]
        fn renumbering_keeps_the_order(ops in proptest::collection::vec(arb_op(), 1..300)) {
            run_both(&ops, u32::MAX - 20)?;
        }
    }

    #[test]
    fn a_crowded_queue_shares_the_limit_down_to_a_floor() {
        assert_eq!(shared_limit(16, 10, 64), 16);
        assert_eq!(shared_limit(16, 64, 64), 16);
        assert_eq!(shared_limit(16, 128, 64), 8);
        assert_eq!(shared_limit(16, 256, 64), 4);
        assert_eq!(shared_limit(16, 5000, 64), MIN_TRANSMISSIONS);
        // A limit already below the floor is kept.
        assert_eq!(shared_limit(2, 5000, 64), 2);
        assert_eq!(shared_limit(16, usize::MAX, usize::MAX), 16);
    }

    #[test]
    fn limit_grows_with_log_n() {
        assert_eq!(retransmit_limit(1, 4), 4);
        assert_eq!(retransmit_limit(9, 4), 4);
        assert_eq!(retransmit_limit(10, 4), 8);
        assert_eq!(retransmit_limit(5000, 4), 16);
        // The integer form agrees with ⌈log10(n + 1)⌉ at every power of ten and either side
        // (up to 10^14, where f64 still tells 10^k from 10^k + 1), and stays exact above.
        for k in 0..15u32 {
            let p = 10usize.pow(k);
            for n in [p.saturating_sub(2), p - 1, p, p + 1] {
                let want = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
                assert_eq!(retransmit_limit(n, 1), want, "n = {n}");
            }
        }
        assert_eq!(retransmit_limit(10usize.pow(15), 1), 16);
        assert_eq!(retransmit_limit(0, 0), 1);
        assert_eq!(retransmit_limit(usize::MAX, 1), 20);
    }

    #[test]
    fn least_sent_and_newest_go_first_and_expire_after_limit() {
        let mut q = BroadcastQueue::default();
        let mut s = HashMap::new();
        for id in 1..=3 {
            q.push(&mut s, NodeId(id));
        }
        let mut got = Vec::new();
        q.take(&mut s, 2, |_, id, _| {
            got.push(id);
            got.len() <= 2
        });
        // Newest first; the third offer was refused and stays unsent.
        assert_eq!(got, vec![NodeId(3), NodeId(2), NodeId(1)]);
        assert_eq!(q.len(), 3);
        got.clear();
        q.take(&mut s, 2, |_, id, _| {
            got.push(id);
            true
        });
        // 1 has been sent least, then 3 and 2 (newest first).
        assert_eq!(got, vec![NodeId(1), NodeId(3), NodeId(2)]);
        // 3 and 2 have now been sent twice and left; 1 once.
        assert_eq!(q.len(), 1);
        q.take(&mut s, 2, |_, _, _| true);
        assert!(q.is_empty());
    }

    #[test]
    fn an_update_that_does_not_fit_does_not_block_the_rest() {
        let mut q = BroadcastQueue::default();
        let mut s = HashMap::new();
        for id in 1..=3 {
            q.push(&mut s, NodeId(id));
        }
        // Node 3 (newest, first in line) never fits.
        let mut got = Vec::new();
        q.take(&mut s, 5, |_, id, _| {
            if id == NodeId(3) {
                return false;
            }
            got.push(id);
            true
        });
        assert_eq!(got, vec![NodeId(2), NodeId(1)]);
    }

    #[test]
    fn an_update_heard_from_others_counts_as_sent() {
        let mut q = BroadcastQueue::default();
        let mut s = HashMap::new();
        for id in 1..=3 {
            q.push(&mut s, NodeId(id));
        }
        // 3 is newest, but heard once it has "been sent" once and goes behind the others.
        assert!(q.heard(&mut s, NodeId(3), 4));
        assert!(!q.heard(&mut s, NodeId(9), 4), "9 is not queued");
        let mut got = Vec::new();
        q.take(&mut s, 4, |_, id, _| {
            got.push(id);
            got.len() <= 2
        });
        assert_eq!(got, vec![NodeId(2), NodeId(1), NodeId(3)]);
        // Heard three more times, 3 reaches the limit of 4 and leaves unsent.
        for _ in 0..3 {
            assert!(q.heard(&mut s, NodeId(3), 4));
        }
        assert!(!q.heard(&mut s, NodeId(3), 4));
        assert_eq!(q.len(), 2);
        got.clear();
        q.take(&mut s, 4, |_, id, _| {
            got.push(id);
            true
        });
        assert_eq!(got, vec![NodeId(2), NodeId(1)]);
        // The stale heap records of 3 never surface.
        for _ in 0..3 {
            q.take(&mut s, 4, |_, id, _| {
                assert_ne!(id, NodeId(3));
                true
            });
        }
        assert!(q.is_empty());
    }

    #[test]
    fn requeue_resets_the_count() {
        let mut q = BroadcastQueue::default();
        let mut s = HashMap::new();
        q.push(&mut s, NodeId(1));
        q.take(&mut s, 3, |_, _, _| true);
        q.take(&mut s, 3, |_, _, _| true);
        q.push(&mut s, NodeId(1));
        assert_eq!(q.take(&mut s, 3, |_, _, _| true), 1);
        assert_eq!(q.take(&mut s, 3, |_, _, _| true), 1);
        assert_eq!(q.take(&mut s, 3, |_, _, _| true), 1);
        assert!(q.is_empty());
        q.push(&mut s, NodeId(2));
        q.remove(&mut s, NodeId(2));
        assert!(q.is_empty());
    }
}

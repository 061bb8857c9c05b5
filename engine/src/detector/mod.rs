//! Failure detection: SWIM probing with Lifeguard's local health and dynamic suspicion.
//!
//! This module holds the pieces of the detector that are pure functions of their inputs;
//! the probe cycle itself (ping, indirect ping, suspect) runs in [`Node`](crate::node::Node).
//!
//! - [`ProbeOrder`]: every member is probed once per round, in an order reshuffled each
//!   round (SWIM §4.3): a failed member is probed within one round however unlucky the
//!   random choices, unlike uniform random selection.
//! - [`LocalHealth`]: Lifeguard's local health multiplier. A node that misses acks it should
//!   have got, misses nacks from its relays, is itself suspected, or wakes up late for its
//!   own timers is more likely slow itself than surrounded by failures; it stretches its
//!   probe interval and timeout by `score + 1` instead of accusing others.
//! - [`suspicion_timeout`]: Lifeguard's dynamic suspicion. A suspicion starts with a long
//!   timeout that shrinks, logarithmically, as independent confirmations arrive, down to a
//!   minimum that scales with `log10(N)`.
#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use rand::Rng;

use crate::membership::prefetch::prefetch;
use crate::placement::NodeId;

/// Round-robin probe order over a list reshuffled at the start of every round.
#[derive(Debug, Default)]
pub struct ProbeOrder {
    order: Vec<NodeId>,
    next: usize,
    /// Where the next insert lands, as a fraction of the rest of the round (32-bit fixed
    /// point), drawn one insert ahead so that its place can be loaded into the cache
    /// before the insert needs it.
    ahead: Option<u32>,
}

impl ProbeOrder {
    /// The next member to probe: the first of the current round that `eligible` accepts.
    /// When the round is exhausted, `refill` supplies the members for a new round, which is
    /// shuffled. Returns `None` when no member is eligible.
    pub fn next(
        &mut self,
        rng: &mut impl Rng,
        mut eligible: impl FnMut(NodeId) -> bool,
        mut refill: impl FnMut(&mut Vec<NodeId>),
    ) -> Option<NodeId> {
        loop {
            while self.next < self.order.len() {
                let id = self.order[self.next];
                self.next += 1;
                if eligible(id) {
                    return Some(id);
                }
            }
            self.order.clear();
            self.next = 0;
            refill(&mut self.order);
            if self.order.is_empty() {
                return None;
            }
            // Fisher–Yates.
            for i in (1..self.order.len()).rev() {
                self.order.swap(i, rng.random_range(0..=i));
            }
            if !self.order.iter().any(|&id| eligible(id)) {
                self.order.clear();
                return None;
            }
        }
    }

    /// Put a newly learned member at a random place in the rest of the current round, so it
    /// is probed within this round rather than the next (SWIM's suggestion for joins).
    ///
    /// The member takes a random place and the one it displaces moves to the end (an
    /// inside-out Fisher–Yates step): the rest of the round stays a uniform shuffle, and
    /// the insert is O(1). A shifting insert moved half the round each time, which made a
    /// joiner learning N members pay O(N²) in copies.
    ///
    /// The place is uniform over the rest of the round, drawn at the previous insert: a node
    /// hosted among thousands (the load generator's) finds its order cold in the cache, and
    /// reading a random place of it was a cache miss for every member learned. The place
    /// drawn ahead is prefetched, so the miss overlaps the work between two inserts
    /// (`receive/new-members` in `bench/README.md`).
    pub fn insert(&mut self, rng: &mut impl Rng, id: NodeId) {
        let len = self.order.len();
        let u = self.ahead.take().unwrap_or_else(|| rng.random());
        let at = self.place(u, len);
        self.order.push(id);
        self.order.swap(at, len);
        let u = rng.random();
        self.ahead = Some(u);
        if let Some(x) = self.order.get(self.place(u, len + 1)) {
            prefetch(x);
        }
    }

    /// The place `u` (a fraction in 32-bit fixed point) picks among `next..=len`.
    fn place(&self, u: u32, len: usize) -> usize {
        let span = (len + 1).saturating_sub(self.next) as u64;
        self.next + ((u64::from(u) * span) >> 32) as usize
    }
}

/// Lifeguard's local health multiplier: a score in `0..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHealth {
    score: u32,
    max: u32,
}

impl LocalHealth {
    /// A healthy node whose score saturates at `max`.
    pub fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    /// The current score (0 = healthy).
    pub fn score(&self) -> u32 {
        self.score
    }

    /// Something suggests this node is slow: raise the score by `by`.
    pub fn degrade(&mut self, by: u32) {
        self.score = (self.score + by).min(self.max);
    }

    /// A probe succeeded: lower the score by one.
    pub fn improve(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// `d` stretched by the score: `d · (score + 1)`.
    pub fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

/// How late a node reads its input: the longest wait in the socket buffer among the
/// datagrams read in the current window and the one before it, as the host reports them
/// from the kernel's receive timestamps.
///
/// Lifeguard's local health infers a slow node from missed acks after the fact. The input
/// delay measures it directly: an ack that arrived but waited unread looks exactly like
/// one that never came, and a node whose input waits longer than its probe timeout would
/// suspect members that answered in time. The two windows keep one reading alive for
/// between one and two windows after the datagram that showed it, so that a node that reads
/// little (a member few others know yet, during a cold start) does not pass for one that
/// reads on time between two late datagrams; a node that has caught up reads zero within
/// two windows. The node uses windows of two probe intervals: in 5000-node cold starts on
/// two cores, windows of a fifth of a period left the cluster in a storm of false
/// suspicions, and one period only damped it (`engine/ALGORITHM.md` §7.5).
#[derive(Clone, Copy, Debug)]
pub struct InputLag {
    window: Duration,
    start: Option<Instant>,
    current: Duration,
    previous: Duration,
    peak: Duration,
}

impl InputLag {
    /// A reading kept for windows of `window` (at least 1 ms).
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            start: None,
            current: Duration::ZERO,
            previous: Duration::ZERO,
            peak: Duration::ZERO,
        }
    }

    /// A datagram read at `now` had waited `delay`.
    pub fn observe(&mut self, now: Instant, delay: Duration) {
        match self.start {
            Some(start) if now.saturating_duration_since(start) < self.window => {}
            Some(start) => {
                let windows =
                    now.saturating_duration_since(start).as_nanos() / self.window.as_nanos().max(1);
                self.previous = if windows == 1 {
                    self.current
                } else {
                    Duration::ZERO
                };
                self.current = Duration::ZERO;
                // Windows stay aligned to the first, so a steady trickle of reads does not
                // stretch one window forever.
                self.start = Some(start + self.window * windows as u32);
            }
            None => self.start = Some(now),
        }
        self.current = self.current.max(delay);
        self.peak = self.peak.max(delay);
    }

    /// The input delay at `now`: the longest of this window and the last, or zero when
    /// nothing was read for two windows.
    pub fn get(&self, now: Instant) -> Duration {
        let Some(start) = self.start else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < self.window {
            self.current.max(self.previous)
        } else if elapsed < self.window * 2 {
            self.current
        } else {
            Duration::ZERO
        }
    }

    /// The longest delay ever observed.
    pub fn peak(&self) -> Duration {
        self.peak
    }
}

/// Lifeguard's suspicion timeout after `confirmations` independent suspicions beyond the
/// first, for a cluster of `n` members.
///
/// `min = mult · max(1, log10 n) · interval`, `max = max_mult · min`, and with `k`
/// confirmations expected (`mult − 2`, capped by the members that could send them) the
/// timeout falls from `max` towards `min` as `max − (max − min) · log(c + 1) / log(k + 1)`.
pub fn suspicion_timeout(
    n: usize,
    interval: Duration,
    mult: u32,
    max_mult: u32,
    confirmations: u32,
) -> Duration {
    let min = shortest_suspicion(n, interval, mult);
    let max = min * max_mult.max(1);
    let k = expected_confirmations(n, mult);
    if k == 0 {
        return min;
    }
    let frac = ((f64::from(confirmations) + 1.0).ln() / (f64::from(k) + 1.0).ln()).min(1.0);
    let t = max.as_secs_f64() - (max.as_secs_f64() - min.as_secs_f64()) * frac;
    Duration::from_secs_f64(t.max(min.as_secs_f64()))
}

/// The longest a suspicion may last in a cluster of `n` members: `max_mult ·` the minimum
/// of [`suspicion_timeout`], even where no confirmation can come to shorten it.
pub fn longest_suspicion(n: usize, interval: Duration, mult: u32, max_mult: u32) -> Duration {
    shortest_suspicion(n, interval, mult) * max_mult.max(1)
}

/// `mult · max(1, log10 n) · interval`: the minimum suspicion timeout.
fn shortest_suspicion(n: usize, interval: Duration, mult: u32) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    interval.mul_f64(f64::from(mult) * scale)
}

/// Independent confirmations a suspicion waits for before it reaches its minimum timeout:
/// `mult − 2`, at most the members other than the suspect and this node.
pub fn expected_confirmations(n: usize, mult: u32) -> u32 {
    let others = n.saturating_sub(2) as u32;
    mult.saturating_sub(2).min(others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn every_member_is_probed_once_per_round() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut order = ProbeOrder::default();
        let members: Vec<NodeId> = (1..=20).map(NodeId).collect();
        for _ in 0..3 {
            let mut seen: Vec<NodeId> = (0..20)
                .map(|_| {
                    order
                        .next(&mut rng, |_| true, |v| v.extend(&members))
                        .unwrap()
                })
                .collect();
            seen.sort();
            assert_eq!(seen, members);
        }
    }

    #[test]
    fn members_inserted_mid_round_are_probed_in_this_round_at_random_places() {
        let members: Vec<NodeId> = (1..=10).map(NodeId).collect();
        let mut first_at = [0u32; 7];
        for seed in 0..400 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut order = ProbeOrder::default();
            let mut refills = 0;
            let next = |order: &mut ProbeOrder, rng: &mut SmallRng, refills: &mut u32| {
                order
                    .next(
                        rng,
                        |_| true,
                        |v| {
                            *refills += 1;
                            v.extend(&members);
                        },
                    )
                    .unwrap()
            };
            let mut seen: Vec<NodeId> = (0..3)
                .map(|_| next(&mut order, &mut rng, &mut refills))
                .collect();
            let joined: Vec<NodeId> = (100..107).map(NodeId).collect();
            for &id in &joined {
                order.insert(&mut rng, id);
            }
            let rest: Vec<NodeId> = (0..14)
                .map(|_| next(&mut order, &mut rng, &mut refills))
                .collect();
            assert_eq!(
                refills, 1,
                "the round ran out before every member was probed"
            );
            let pos = rest.iter().position(|&id| id == NodeId(100)).unwrap();
            first_at[pos / 2] += 1;
            seen.extend(rest);
            seen.sort();
            let mut all = members.clone();
            all.extend(&joined);
            assert_eq!(seen, all);
        }
        // The first joiner lands anywhere in the rest of the round, not only at its end.
        assert!(first_at.iter().all(|&c| c > 20), "{first_at:?}");
    }

    #[test]
    fn ineligible_members_are_skipped_and_none_when_no_one_is_left() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut order = ProbeOrder::default();
        for _ in 0..10 {
            let id = order
                .next(
                    &mut rng,
                    |id| id.0 % 2 == 0,
                    |v| v.extend((1..=6).map(NodeId)),
                )
                .unwrap();
            assert_eq!(id.0 % 2, 0);
        }
        assert_eq!(order.next(&mut rng, |_| false, |v| v.push(NodeId(1))), None);
        assert_eq!(order.next(&mut rng, |_| true, |_| {}), None);
    }

    #[test]
    fn input_lag_holds_a_reading_for_one_to_two_windows() {
        let w = Duration::from_millis(100);
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut lag = InputLag::new(w);
        assert_eq!(lag.get(t0), Duration::ZERO);
        lag.observe(ms(0), Duration::from_millis(300));
        lag.observe(ms(50), Duration::from_millis(20));
        assert_eq!(lag.get(ms(99)), Duration::from_millis(300));
        // The next window still remembers the last one's longest delay...
        lag.observe(ms(120), Duration::from_millis(10));
        assert_eq!(lag.get(ms(150)), Duration::from_millis(300));
        // ... and forgets it once a whole window passed without it.
        assert_eq!(lag.get(ms(210)), Duration::from_millis(10));
        assert_eq!(lag.get(ms(300)), Duration::ZERO);
        // A read after a long silence starts afresh: old readings are gone.
        lag.observe(ms(1000), Duration::from_millis(5));
        assert_eq!(lag.get(ms(1000)), Duration::from_millis(5));
        assert_eq!(lag.peak(), Duration::from_millis(300));
    }

    #[test]
    fn local_health_saturates_and_scales() {
        let mut h = LocalHealth::new(8);
        h.degrade(5);
        h.degrade(5);
        assert_eq!(h.score(), 8);
        assert_eq!(
            h.scale(Duration::from_millis(100)),
            Duration::from_millis(900)
        );
        for _ in 0..20 {
            h.improve();
        }
        assert_eq!(h.score(), 0);
        assert_eq!(
            h.scale(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations_to_the_minimum() {
        let i = Duration::from_secs(1);
        // n = 1000: min = 4 · 3 · 1 s = 12 s, max = 6 · 12 = 72 s, k = 2.
        let t0 = suspicion_timeout(1000, i, 4, 6, 0);
        let t1 = suspicion_timeout(1000, i, 4, 6, 1);
        let t2 = suspicion_timeout(1000, i, 4, 6, 2);
        let t9 = suspicion_timeout(1000, i, 4, 6, 9);
        assert!((t0.as_secs_f64() - 72.0).abs() < 1e-6);
        assert!(t0 > t1 && t1 > t2);
        assert!((t2.as_secs_f64() - 12.0).abs() < 1e-6);
        assert_eq!(t2, t9);
        // Tiny clusters: log10 is floored at 1 and no confirmations are expected.
        assert_eq!(expected_confirmations(2, 4), 0);
        assert!((suspicion_timeout(2, i, 4, 6, 0).as_secs_f64() - 4.0).abs() < 1e-6);
    }
}

//! The member table: what one node believes about every member, as a state-based CRDT.
//!
//! Each member's state is `(incarnation, status, metadata version)` plus the fields that
//! ride with it (address, drained flag, metadata). Two states of one member are ordered by
//! [`precedence`]: the higher incarnation wins; at equal incarnation left beats dead, dead
//! beats suspect and suspect beats alive; then the higher metadata version. Merging keeps the greater state, so merge is
//! commutative, associative and idempotent, and two halves of a partition agree again by
//! merging alone, whatever order updates arrive in.
//!
//! Only a member raises its own incarnation (to refute a suspicion, to announce a change of
//! its drained flag or metadata, or after a reboot), so an equal key always means equal
//! contents. Dead and left members stay as tombstones for a bounded time, so that stale
//! rumours of them being alive lose against the tombstone, and are then collected.
//!
//! For push-pull anti-entropy the table keeps, per bucket of member ids, the number of live
//! (alive or suspect) members and an order-independent hash of their states, updated in
//! O(1) on every change: two nodes compare [`BUCKETS`] hashes and exchange entries only for
//! the buckets that differ.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use crate::codec::{DigestEntry, MemberUpdate, Status, SummaryBucket};
use crate::placement::NodeId;

/// Number of anti-entropy buckets. 64 buckets of about 9 bytes make one summary fit a
/// 1400-byte datagram with room to spare.
pub const BUCKETS: usize = 64;

/// A member as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its identity.
    pub id: NodeId,
    /// Where it receives gossip.
    pub addr: SocketAddr,
    /// Its incarnation (raised only by the member itself).
    pub incarnation: u64,
    /// Its status.
    pub status: Status,
    /// Whether it is drained: alive and gossiping, but out of placement.
    pub drained: bool,
    /// Version of its metadata.
    pub meta_version: u64,
    /// Its application metadata.
    pub metadata: Vec<u8>,
    /// While suspect: who suspected it first (not part of the merge order).
    pub accuser: Option<NodeId>,
}

impl Member {
    /// Alive or suspect: still a member of the cluster as far as this node knows.
    pub fn is_live(&self) -> bool {
        is_live(self.status)
    }

    /// Whether the member takes part in placement: live and not drained.
    pub fn in_placement(&self) -> bool {
        self.is_live() && !self.drained
    }

    /// The member's merge key (see [`precedence`]).
    pub fn key(&self) -> (u64, u8, u64) {
        precedence(self.incarnation, self.status, self.meta_version)
    }

    /// The member as a wire update.
    pub fn as_update(&self) -> MemberUpdate<'_> {
        MemberUpdate {
            id: self.id,
            addr: self.addr,
            incarnation: self.incarnation,
            status: self.status,
            drained: self.drained,
            meta_version: self.meta_version,
            metadata: &self.metadata,
            accuser: self.accuser.filter(|_| self.status == Status::Suspect),
        }
    }

    /// The member as an anti-entropy digest entry.
    pub fn as_digest(&self) -> DigestEntry {
        DigestEntry {
            id: self.id,
            incarnation: self.incarnation,
            status: self.status,
            drained: self.drained,
            meta_version: self.meta_version,
        }
    }

    fn from_update(u: &MemberUpdate<'_>) -> Self {
        Self {
            id: u.id,
            addr: u.addr,
            incarnation: u.incarnation,
            status: u.status,
            drained: u.drained,
            meta_version: u.meta_version,
            metadata: u.metadata.to_vec(),
            accuser: u.accuser,
        }
    }
}

/// Alive or suspect.
pub fn is_live(status: Status) -> bool {
    matches!(status, Status::Alive | Status::Suspect)
}

/// The order in which states of one member supersede each other: incarnation, then status
/// (`alive < suspect < dead < left`), then metadata version.
pub fn precedence(incarnation: u64, status: Status, meta_version: u64) -> (u64, u8, u64) {
    let rank = match status {
        Status::Alive => 0,
        Status::Suspect => 1,
        Status::Dead => 2,
        Status::Left => 3,
    };
    (incarnation, rank, meta_version)
}

/// What merging an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// A member this node did not know, now recorded.
    Added,
    /// A newer state replaced the old one, whose status and drained flag are given.
    Updated {
        /// Status before the merge.
        status: Status,
        /// Drained flag before the merge.
        drained: bool,
        /// Metadata version before the merge.
        meta_version: u64,
    },
    /// The update equals what this node holds.
    Same,
    /// This node holds a newer state: the sender is behind.
    Stale,
}

/// A fixed-seed hasher for member ids: ids come off the wire, so the seed is drawn from the
/// node's RNG; it never decides iteration order (the table iterates its vector).
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdHashBuilder(u64);

#[derive(Default)]
pub(crate) struct IdHasher {
    seed: u64,
    state: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.state
    }
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.seed ^ self.state);
    }
    fn write_u64(&mut self, n: u64) {
        self.state = mix64(n ^ self.seed ^ self.state.rotate_left(17));
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            seed: self.0,
            state: 0,
        }
    }
}

/// A strong 64-bit mixer (the murmur3 finaliser): spreads ids over buckets and states over
/// hashes.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The anti-entropy bucket of a member id. Uses a fixed mix (not the per-node hasher
/// seed) because every node must put a member in the same bucket.
pub fn bucket_of(id: NodeId) -> usize {
    (mix64(id.0 ^ 0x9e37_79b9_7f4a_7c15) >> 58) as usize
}

/// Hash of one member state for the bucket sums: covers everything the merge key orders,
/// plus the drained flag.
fn state_hash(m: &Member) -> u64 {
    let state = (m.status as u64) | (u64::from(m.drained) << 2);
    mix64(m.id.0 ^ mix64(m.incarnation ^ mix64(m.meta_version ^ (state << 60))))
}

struct Entry {
    member: Member,
    /// When the status last changed (local monotonic time): tombstones age from it.
    since: Instant,
}

/// The member table.
pub struct MemberTable {
    entries: Vec<Entry>,
    index: HashMap<NodeId, usize, IdHashBuilder>,
    buckets: [SummaryBucket; BUCKETS],
    live: usize,
}

impl std::fmt::Debug for MemberTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTable")
            .field("members", &self.entries.len())
            .field("live", &self.live)
            .finish()
    }
}

impl MemberTable {
    /// A table holding only `local` (the node itself), hashing ids with `seed`.
    pub fn new(local: Member, now: Instant, seed: u64) -> Self {
        let mut t = Self {
            entries: Vec::new(),
            index: HashMap::with_hasher(IdHashBuilder(seed)),
            buckets: [SummaryBucket { count: 0, hash: 0 }; BUCKETS],
            live: 0,
        };
        t.insert(local, now);
        t
    }

    /// The member with this id, if known (tombstones included).
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.index.get(&id).map(|&i| &self.entries[i].member)
    }

    /// When the member's status last changed.
    pub fn since(&self, id: NodeId) -> Option<Instant> {
        self.index.get(&id).map(|&i| self.entries[i].since)
    }

    /// Every known member, tombstones included, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &Member> + '_ {
        self.entries.iter().map(|e| &e.member)
    }

    /// Members known, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty (never: the node itself is always in it).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Alive and suspect members, the node itself included.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// The anti-entropy buckets over live members.
    pub fn buckets(&self) -> &[SummaryBucket; BUCKETS] {
        &self.buckets
    }

    /// A hash of the whole live view: equal on two nodes when their live views are equal
    /// (up to hash collisions).
    pub fn view_hash(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |acc, b| mix64(acc ^ b.hash ^ u64::from(b.count)))
    }

    /// Merge an update. The node's own entry is never changed this way (the node refutes
    /// instead); callers handle updates about themselves before calling this.
    pub fn merge(&mut self, u: &MemberUpdate<'_>, now: Instant) -> Merge {
        match self.index.get(&u.id) {
            None => {
                // Tombstones of members never seen alive are kept too: dropping them would
                // make the result depend on whether "dead" or "alive" arrived first.
                self.insert(Member::from_update(u), now);
                Merge::Added
            }
            Some(&i) => {
                let old = &self.entries[i].member;
                let new_key = precedence(u.incarnation, u.status, u.meta_version);
                match new_key.cmp(&old.key()) {
                    std::cmp::Ordering::Less => Merge::Stale,
                    std::cmp::Ordering::Equal => Merge::Same,
                    std::cmp::Ordering::Greater => {
                        let (status, drained, meta_version) =
                            (old.status, old.drained, old.meta_version);
                        let changed_status = status != u.status;
                        self.replace(i, |m| {
                            m.addr = u.addr;
                            m.incarnation = u.incarnation;
                            m.status = u.status;
                            m.drained = u.drained;
                            m.accuser = u.accuser;
                            m.meta_version = u.meta_version;
                            if m.metadata != u.metadata {
                                m.metadata.clear();
                                m.metadata.extend_from_slice(u.metadata);
                            }
                        });
                        if changed_status {
                            self.entries[i].since = now;
                        }
                        Merge::Updated {
                            status,
                            drained,
                            meta_version,
                        }
                    }
                }
            }
        }
    }

    /// Change a member in place (the node's own entry, or a local verdict on another
    /// member such as a suspicion). Returns false when the member is unknown.
    pub fn update_with(&mut self, id: NodeId, now: Instant, f: impl FnOnce(&mut Member)) -> bool {
        let Some(&i) = self.index.get(&id) else {
            return false;
        };
        let before = self.entries[i].member.status;
        self.replace(i, f);
        if self.entries[i].member.status != before {
            self.entries[i].since = now;
        }
        true
    }

    /// Remove tombstones older than `ttl`; returns how many were removed.
    pub fn collect_tombstones(&mut self, now: Instant, ttl: std::time::Duration) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            if !e.member.is_live() && now.saturating_duration_since(e.since) >= ttl {
                self.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// A uniformly random live member other than `exclude`, by rejection sampling (the
    /// table is mostly live), or by a scan when sampling keeps missing.
    pub fn random_live(&self, rng: &mut impl Rng, exclude: NodeId) -> Option<&Member> {
        self.random_matching(rng, |m| m.is_live() && m.id != exclude)
    }

    /// A uniformly random tombstone (dead or left member).
    pub fn random_dead(&self, rng: &mut impl Rng) -> Option<&Member> {
        self.random_matching(rng, |m| !m.is_live())
    }

    fn random_matching(&self, rng: &mut impl Rng, ok: impl Fn(&Member) -> bool) -> Option<&Member> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        for _ in 0..16 {
            let m = &self.entries[rng.random_range(0..n)].member;
            if ok(m) {
                return Some(m);
            }
        }
        let matching = self.entries.iter().filter(|e| ok(&e.member)).count();
        if matching == 0 {
            return None;
        }
        let k = rng.random_range(0..matching);
        self.entries
            .iter()
            .map(|e| &e.member)
            .filter(|m| ok(m))
            .nth(k)
    }

    /// Up to `k` distinct random live members, none of them in `exclude`, appended to
    /// `out` as (id, address).
    pub fn sample_live(
        &self,
        rng: &mut impl Rng,
        k: usize,
        exclude: &[NodeId],
        out: &mut Vec<(NodeId, SocketAddr)>,
    ) {
        let start = out.len();
        let candidates = self.live.saturating_sub(exclude.len());
        let want = k.min(candidates);
        let mut tries = 0;
        while out.len() - start < want && tries < 8 * k + 16 {
            tries += 1;
            let m = &self.entries[rng.random_range(0..self.entries.len())].member;
            if m.is_live() && !exclude.contains(&m.id) && !out[start..].iter().any(|p| p.0 == m.id)
            {
                out.push((m.id, m.addr));
            }
        }
    }

    fn insert(&mut self, member: Member, now: Instant) {
        self.account(&member, true);
        self.index.insert(member.id, self.entries.len());
        self.entries.push(Entry { member, since: now });
    }

    fn replace(&mut self, i: usize, f: impl FnOnce(&mut Member)) {
        let old = std::mem::replace(
            &mut self.entries[i].member,
            Member {
                id: NodeId(0),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                incarnation: 0,
                status: Status::Alive,
                drained: false,
                meta_version: 0,
                metadata: Vec::new(),
                accuser: None,
            },
        );
        self.account(&old, false);
        let mut m = old;
        let id = m.id;
        f(&mut m);
        m.id = id;
        self.account(&m, true);
        self.entries[i].member = m;
    }

    fn remove_at(&mut self, i: usize) {
        let e = self.entries.swap_remove(i);
        self.account(&e.member, false);
        self.index.remove(&e.member.id);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.member.id, i);
        }
    }

    /// Add (or subtract) a member's state to the live count and bucket sums.
    fn account(&mut self, m: &Member, add: bool) {
        if !m.is_live() {
            return;
        }
        let b = &mut self.buckets[bucket_of(m.id)];
        let h = state_hash(m);
        if add {
            self.live += 1;
            b.count += 1;
            b.hash = b.hash.wrapping_add(h);
        } else {
            self.live -= 1;
            b.count -= 1;
            b.hash = b.hash.wrapping_sub(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert_eq, proptest, Strategy};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn member(id: u64, inc: u64, status: Status) -> Member {
        Member {
            id: NodeId(id),
            addr: SocketAddr::from(([10, 0, 0, id as u8], 7946)),
            incarnation: inc,
            status,
            drained: false,
            meta_version: 0,
            metadata: Vec::new(),
            accuser: None,
        }
    }

    fn table() -> (MemberTable, Instant) {
        let now = Instant::now();
        (MemberTable::new(member(0, 0, Status::Alive), now, 1), now)
    }

    #[test]
    fn precedence_orders_incarnation_then_status() {
        let (mut t, now) = table();
        assert_eq!(
            t.merge(&member(1, 1, Status::Alive).as_update(), now),
            Merge::Added
        );
        // Equal incarnation: suspect beats alive, dead beats suspect.
        assert!(matches!(
            t.merge(&member(1, 1, Status::Suspect).as_update(), now),
            Merge::Updated { .. }
        ));
        assert_eq!(
            t.merge(&member(1, 1, Status::Alive).as_update(), now),
            Merge::Stale
        );
        assert!(matches!(
            t.merge(&member(1, 1, Status::Dead).as_update(), now),
            Merge::Updated { .. }
        ));
        // A higher incarnation (the member refuting, or rebooted) beats a tombstone.
        assert!(matches!(
            t.merge(&member(1, 2, Status::Alive).as_update(), now),
            Merge::Updated { .. }
        ));
        assert_eq!(t.get(NodeId(1)).unwrap().status, Status::Alive);
        assert_eq!(
            t.merge(&member(1, 2, Status::Alive).as_update(), now),
            Merge::Same
        );
    }

    #[test]
    fn tombstones_of_strangers_are_recorded_but_not_live() {
        let (mut t, now) = table();
        assert_eq!(
            t.merge(&member(5, 3, Status::Dead).as_update(), now),
            Merge::Added
        );
        assert_eq!(t.get(NodeId(5)).unwrap().status, Status::Dead);
        assert_eq!(t.live_count(), 1);
        // A stale alive rumour loses against the tombstone.
        assert_eq!(
            t.merge(&member(5, 3, Status::Alive).as_update(), now),
            Merge::Stale
        );
    }

    #[test]
    fn tombstones_are_collected_after_ttl() {
        let (mut t, now) = table();
        t.merge(&member(1, 0, Status::Alive).as_update(), now);
        t.merge(&member(2, 0, Status::Alive).as_update(), now);
        t.merge(&member(1, 0, Status::Dead).as_update(), now);
        let ttl = std::time::Duration::from_secs(10);
        assert_eq!(t.collect_tombstones(now + ttl / 2, ttl), 0);
        assert_eq!(t.collect_tombstones(now + ttl, ttl), 1);
        assert!(t.get(NodeId(1)).is_none());
        assert_eq!(t.get(NodeId(2)).unwrap().id, NodeId(2));
        assert_eq!(t.live_count(), 2);
    }

    #[test]
    fn sampling_returns_distinct_live_members() {
        let (mut t, now) = table();
        for i in 1..50 {
            t.merge(&member(i, 0, Status::Alive).as_update(), now);
        }
        t.merge(&member(7, 0, Status::Dead).as_update(), now);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut out = Vec::new();
        t.sample_live(&mut rng, 10, &[NodeId(0)], &mut out);
        assert_eq!(out.len(), 10);
        let mut ids: Vec<_> = out.iter().map(|p| p.0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10);
        assert!(!ids.contains(&NodeId(7)) && !ids.contains(&NodeId(0)));
        for _ in 0..100 {
            let m = t.random_live(&mut rng, NodeId(0)).unwrap();
            assert!(m.is_live() && m.id != NodeId(0));
        }
        assert_eq!(t.random_dead(&mut rng).unwrap().id, NodeId(7));
    }

    fn arb_update() -> impl Strategy<Value = (u64, u64, u8, bool, u64)> {
        (1..6u64, 0..4u64, 0..4u8, any::<bool>(), 0..3u64)
    }

    fn to_member((id, inc, st, drained, mv): (u64, u64, u8, bool, u64)) -> Member {
        let status = [Status::Alive, Status::Suspect, Status::Dead, Status::Left][st as usize];
        // Contents are a function of the key, as when only the member raises its key.
        Member {
            drained: drained && inc % 2 == 0,
            meta_version: mv,
            metadata: vec![mv as u8; mv as usize],
            ..member(id, inc, status)
        }
    }

    fn live_view(t: &MemberTable) -> Vec<Member> {
        let mut v: Vec<Member> = t.iter().filter(|m| m.is_live()).cloned().collect();
        v.sort_by_key(|m| m.id);
        v
    }

    proptest! {
        /// Merge is order-independent: any permutation of the same updates, with
        /// duplicates, ends in the same live view and the same bucket hashes.
        #[test]
        fn merge_is_order_independent(
            updates in proptest::collection::vec(arb_update(), 1..40),
            seed in any::<u64>(),
        ) {
            let ups: Vec<Member> = updates.into_iter().map(|u| {
                let mut m = to_member(u);
                m.drained = false;
                m
            }).collect();
            let now = Instant::now();
            let mut a = MemberTable::new(member(0, 0, Status::Alive), now, 1);
            for u in &ups { a.merge(&u.as_update(), now); }
            let mut shuffled = ups.clone();
            let mut rng = SmallRng::seed_from_u64(seed);
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            shuffled.extend(ups.iter().take(5).cloned());
            let mut b = MemberTable::new(member(0, 0, Status::Alive), now, 2);
            for u in &shuffled { b.merge(&u.as_update(), now); }
            prop_assert_eq!(live_view(&a), live_view(&b));
            prop_assert_eq!(a.len(), b.len());
            prop_assert_eq!(a.buckets(), b.buckets());
            prop_assert_eq!(a.view_hash(), b.view_hash());
        }

        /// Bucket sums always equal a recount from scratch.
        #[test]
        fn buckets_match_a_recount(updates in proptest::collection::vec(arb_update(), 1..60)) {
            let now = Instant::now();
            let mut t = MemberTable::new(member(0, 0, Status::Alive), now, 1);
            for u in updates { t.merge(&to_member(u).as_update(), now); }
            t.collect_tombstones(now, std::time::Duration::ZERO);
            let mut fresh = [SummaryBucket { count: 0, hash: 0 }; BUCKETS];
            let mut live = 0;
            for m in t.iter().filter(|m| m.is_live()) {
                let b = &mut fresh[bucket_of(m.id)];
                b.count += 1;
                b.hash = b.hash.wrapping_add(state_hash(m));
                live += 1;
            }
            prop_assert_eq!(&fresh, t.buckets());
            prop_assert_eq!(live, t.live_count());
        }
    }
}

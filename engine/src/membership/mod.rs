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

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::codec::{DigestEntry, MemberUpdate, Status, SummaryBucket};
use crate::dissemination::{QueueSlots, NO_HINT};
use crate::placement::NodeId;
use prefetch::prefetch;

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
        self.view().is_live()
    }

    /// Whether the member takes part in placement: live and not drained.
    pub fn in_placement(&self) -> bool {
        self.view().in_placement()
    }

    /// The member's merge key (see [`precedence`]).
    pub fn key(&self) -> (u64, u8, u64) {
        self.view().key()
    }

    /// The member as a wire update.
    pub fn as_update(&self) -> MemberUpdate<'_> {
        self.view().as_update()
    }

    /// The member as an anti-entropy digest entry.
    pub fn as_digest(&self) -> DigestEntry {
        self.view().as_digest()
    }

    /// The member as a [`MemberRef`], the form the table hands out.
    pub fn view(&self) -> MemberRef<'_> {
        MemberRef {
            id: self.id,
            addr: self.addr,
            incarnation: self.incarnation,
            status: self.status,
            drained: self.drained,
            meta_version: self.meta_version,
            metadata: &self.metadata,
            accuser: self.accuser,
        }
    }
}

/// A member as the table holds it: the fields of [`Member`], with the metadata borrowed
/// from the table. Copying one costs no allocation; [`to_member`](Self::to_member) makes an
/// owned [`Member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRef<'a> {
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
    pub metadata: &'a [u8],
    /// Who suspected it (not part of the merge order; sent only while suspect).
    pub accuser: Option<NodeId>,
}

impl<'a> MemberRef<'a> {
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
    pub fn as_update(&self) -> MemberUpdate<'a> {
        MemberUpdate {
            id: self.id,
            addr: self.addr,
            incarnation: self.incarnation,
            status: self.status,
            drained: self.drained,
            meta_version: self.meta_version,
            metadata: self.metadata,
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

    /// An owned copy.
    pub fn to_member(&self) -> Member {
        Member {
            id: self.id,
            addr: self.addr,
            incarnation: self.incarnation,
            status: self.status,
            drained: self.drained,
            meta_version: self.meta_version,
            metadata: self.metadata.to_vec(),
            accuser: self.accuser,
        }
    }

    fn from_update(u: &MemberUpdate<'a>) -> Self {
        Self {
            id: u.id,
            addr: u.addr,
            incarnation: u.incarnation,
            status: u.status,
            drained: u.drained,
            meta_version: u.meta_version,
            metadata: u.metadata,
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
fn state_hash(m: &MemberRef<'_>) -> u64 {
    let state = (m.status as u64) | (u64::from(m.drained) << 2);
    mix64(m.id.0 ^ mix64(m.incarnation ^ mix64(m.meta_version ^ (state << 60))))
}

/// The status of an entry, in the low two bits of its flags.
const STATUS_BITS: u8 = 0b011;
/// The drained flag of an entry.
const DRAINED: u8 = 0b100;
/// Set when the entry's `accuser` holds one.
const ACCUSED: u8 = 0b1000;

/// The rarely needed parts of a member, kept out of line so that the common member (an
/// IPv4 address, no metadata) needs no allocation of its own.
#[derive(Debug)]
struct Extra {
    /// The address, when it is not an IPv4 one (the entry then holds none).
    addr: Option<SocketAddr>,
    metadata: Box<[u8]>,
}

/// One member, packed into one 64-byte cache line, plus an [`Extra`] only when the member
/// needs one.
///
/// A process hosting thousands of tables reads entries at random: merging a frame's
/// updates and sending the queued ones each touch one entry per update, nearly always a
/// cache miss. Aligned to a line, an entry costs one miss, never two; and the accuser of
/// a suspect (set for every suspicion, thousands of them in an overloaded cold start) is
/// kept in the line rather than behind the `Extra` pointer, a second miss on every send
/// of a suspicion.
#[repr(align(64))]
struct Entry {
    id: NodeId,
    incarnation: u64,
    meta_version: u64,
    /// When the status last changed (local monotonic time), as signed nanoseconds from the
    /// table's epoch: tombstones age from it.
    since: i64,
    /// The member's place in the dissemination queue, 0 when none (see [`QueueSlots`]).
    queued: u64,
    extra: Option<Box<Extra>>,
    /// The member that accused this one, when the `ACCUSED` flag is set.
    accuser: u64,
    /// The IPv4 address and port, unless the address is in `extra`.
    ip: [u8; 4],
    port: u16,
    /// Status, drained and accused flags.
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

impl Entry {
    fn new(id: NodeId, since: i64) -> Self {
        Self {
            id,
            incarnation: 0,
            meta_version: 0,
            since,
            queued: 0,
            extra: None,
            accuser: 0,
            ip: [0; 4],
            port: 0,
            flags: 0,
        }
    }

    fn status(&self) -> Status {
        match self.flags & STATUS_BITS {
            0 => Status::Alive,
            1 => Status::Suspect,
            2 => Status::Dead,
            _ => Status::Left,
        }
    }

    fn is_live(&self) -> bool {
        is_live(self.status())
    }

    fn view(&self) -> MemberRef<'_> {
        let extra = self.extra.as_deref();
        let addr = match extra.and_then(|x| x.addr) {
            Some(addr) => addr,
            None => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.ip), self.port)),
        };
        MemberRef {
            id: self.id,
            addr,
            incarnation: self.incarnation,
            status: self.status(),
            drained: self.flags & DRAINED != 0,
            meta_version: self.meta_version,
            metadata: extra.map_or(&[][..], |x| &*x.metadata),
            accuser: (self.flags & ACCUSED != 0).then_some(NodeId(self.accuser)),
        }
    }

    /// Take every field of `m` but the id (and keep `since` and `queued`).
    fn set(&mut self, m: &MemberRef<'_>) {
        self.incarnation = m.incarnation;
        self.meta_version = m.meta_version;
        self.flags = (m.status as u8 & STATUS_BITS)
            | if m.drained { DRAINED } else { 0 }
            | if m.accuser.is_some() { ACCUSED } else { 0 };
        self.accuser = m.accuser.map_or(0, |a| a.0);
        let wide = match m.addr {
            SocketAddr::V4(a) => {
                self.ip = a.ip().octets();
                self.port = a.port();
                None
            }
            SocketAddr::V6(_) => {
                self.ip = [0; 4];
                self.port = 0;
                Some(m.addr)
            }
        };
        if wide.is_none() && m.metadata.is_empty() {
            self.extra = None;
            return;
        }
        let x = self.extra.get_or_insert_with(|| {
            Box::new(Extra {
                addr: None,
                metadata: Box::default(),
            })
        });
        x.addr = wide;
        if *x.metadata != *m.metadata {
            x.metadata = m.metadata.into();
        }
    }
}

/// Entries per chunk of [`Entries`]: 64 entries of 64 bytes make one 4 KiB allocation.
const CHUNK: usize = 64;

/// The table's entries in fixed-size chunks. Every table of every node allocates the same
/// chunk size and never reallocates a chunk, so thousands of tables growing side by side
/// leave no trail of freed, differently sized arrays behind them.
#[derive(Default)]
struct Entries {
    chunks: Vec<Vec<Entry>>,
    len: usize,
}

impl Entries {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.chunks.iter().flatten()
    }

    fn push(&mut self, e: Entry) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(e);
        }
        self.len += 1;
    }

    /// Remove entry `i`, moving the last entry into its place.
    fn swap_remove(&mut self, i: usize) -> Entry {
        let chunk = self.chunks.last_mut().expect("swap_remove on no entries");
        let last = chunk.pop().expect("chunks are never empty");
        if chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if i == self.len {
            last
        } else {
            std::mem::replace(&mut self[i], last)
        }
    }
}

impl std::ops::Index<usize> for Entries {
    type Output = Entry;

    fn index(&self, i: usize) -> &Entry {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Entries {
    fn index_mut(&mut self, i: usize) -> &mut Entry {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// The member table.
pub struct MemberTable {
    entries: Entries,
    /// Open-addressing index from member id to position in `entries`: a slot holds the
    /// position plus one in its low 32 bits and the high 32 bits of `mix64(id ^ seed)` in
    /// its high 32 bits, or 0 when empty. Linear probing from `mix64(id ^ seed)`; the
    /// length is a power of two and at most three quarters of the slots are used.
    slots: Vec<u64>,
    seed: u64,
    /// The instant the `since` offsets count from.
    epoch: Instant,
    /// Queue places of members removed from the table while still queued (see
    /// [`QueueSlots`]); given back if the member is added again.
    orphans: Vec<(NodeId, u64)>,
    buckets: [SummaryBucket; BUCKETS],
    live: usize,
    /// The wrapping sum of every live member's state hash: the sum of the buckets' hashes,
    /// kept so that [`view_hash`](Self::view_hash) costs no walk of the buckets.
    view_sum: u64,
}

impl std::fmt::Debug for MemberTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTable")
            .field("members", &self.entries.len())
            .field("live", &self.live)
            .finish()
    }
}

/// The entry position an index slot holds (`None`: the slot is empty).
fn slot_position(v: u64) -> Option<usize> {
    ((v & 0xffff_ffff) as usize).checked_sub(1)
}

/// The low half of a slot for position `i`.
fn slot_low(i: usize) -> u64 {
    u64::from(u32::try_from(i + 1).expect("at most u32::MAX - 1 members"))
}

/// Fewest index slots.
const MIN_SLOTS: usize = 8;

impl MemberTable {
    /// A table holding only `local` (the node itself), hashing ids with `seed`.
    pub fn new(local: Member, now: Instant, seed: u64) -> Self {
        let mut t = Self {
            entries: Entries::default(),
            slots: vec![0; MIN_SLOTS],
            seed,
            epoch: now,
            orphans: Vec::new(),
            buckets: [SummaryBucket { count: 0, hash: 0 }; BUCKETS],
            live: 0,
            view_sum: 0,
        };
        t.insert(&local.view(), now);
        t
    }

    /// The member with this id, if known (tombstones included).
    pub fn get(&self, id: NodeId) -> Option<MemberRef<'_>> {
        self.position(id).map(|i| self.entries[i].view())
    }

    /// [`get`](Self::get), looking first at position `hint` (as handed out through
    /// [`QueueSlots`]); a wrong hint costs only the usual search.
    pub fn get_hinted(&self, id: NodeId, hint: u32) -> Option<MemberRef<'_>> {
        self.find(id, hint).map(|i| self.entries[i].view())
    }

    /// Ask the memory system for what looking up `ids` will touch: first their index
    /// slots, then (once those are on their way) the entries the slots point at. A frame's
    /// updates are then merged out of cache instead of paying two misses each in turn, in a
    /// process that hosts thousands of tables. Only a hint to the hardware: results are
    /// unchanged.
    pub fn prefetch(&self, ids: &[NodeId]) {
        for &id in ids {
            prefetch(&self.slots[self.home(id)]);
        }
        for &id in ids {
            let h = self.hash(id);
            let s = (h as usize) & (self.slots.len() - 1);
            let v = self.slots[s];
            if v >> 32 == h >> 32 {
                if let Some(i) = slot_position(v) {
                    prefetch(&self.entries[i]);
                }
            }
        }
    }

    /// Ask the memory system for the entry at position `hint`, which a coming
    /// [`get_hinted`](Self::get_hinted) will read. Only a hint to the hardware; a position
    /// out of range is ignored.
    pub fn prefetch_position(&self, hint: u32) {
        let h = hint as usize;
        if h < self.entries.len() {
            prefetch(&self.entries[h]);
        }
    }

    /// The position of `id`, trying `hint` before the index.
    fn find(&self, id: NodeId, hint: u32) -> Option<usize> {
        let h = hint as usize;
        if h < self.entries.len() && self.entries[h].id == id {
            return Some(h);
        }
        self.position(id)
    }

    /// When the member's status last changed.
    pub fn since(&self, id: NodeId) -> Option<Instant> {
        self.position(id)
            .map(|i| self.instant(self.entries[i].since))
    }

    /// Every known member, tombstones included, in table order: the n-th is at position
    /// n, which is a hint for [`get_hinted`](Self::get_hinted) until the table changes.
    pub fn iter(&self) -> impl Iterator<Item = MemberRef<'_>> + '_ {
        self.entries.iter().map(Entry::view)
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
    /// (up to hash collisions). Kept up to date with every change, so reading it is O(1):
    /// a host may read it after every datagram.
    pub fn view_hash(&self) -> u64 {
        mix64(self.view_sum ^ mix64(self.live as u64))
    }

    /// Merge an update. The node's own entry is never changed this way (the node refutes
    /// instead); callers handle updates about themselves before calling this.
    pub fn merge(&mut self, u: &MemberUpdate<'_>, now: Instant) -> Merge {
        match self.position(u.id) {
            None => {
                // Tombstones of members never seen alive are kept too: dropping them would
                // make the result depend on whether "dead" or "alive" arrived first.
                self.insert(&MemberRef::from_update(u), now);
                Merge::Added
            }
            Some(i) => {
                let e = &self.entries[i];
                let new_key = precedence(u.incarnation, u.status, u.meta_version);
                let old_key = precedence(e.incarnation, e.status(), e.meta_version);
                match new_key.cmp(&old_key) {
                    std::cmp::Ordering::Less => Merge::Stale,
                    std::cmp::Ordering::Equal => Merge::Same,
                    std::cmp::Ordering::Greater => {
                        let status = e.status();
                        let drained = e.flags & DRAINED != 0;
                        let meta_version = e.meta_version;
                        self.account(i, false);
                        self.entries[i].set(&MemberRef::from_update(u));
                        self.account(i, true);
                        if status != u.status {
                            self.entries[i].since = self.offset(now);
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
        let Some(i) = self.position(id) else {
            return false;
        };
        let mut m = self.entries[i].view().to_member();
        let before = m.status;
        f(&mut m);
        m.id = id;
        self.account(i, false);
        self.entries[i].set(&m.view());
        self.account(i, true);
        if m.status != before {
            self.entries[i].since = self.offset(now);
        }
        true
    }

    /// Remove tombstones older than `ttl`; returns how many were removed.
    pub fn collect_tombstones(&mut self, now: Instant, ttl: std::time::Duration) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            if !e.is_live() && now.saturating_duration_since(self.instant(e.since)) >= ttl {
                self.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        if removed > 0 {
            self.shrink();
        }
        removed
    }

    /// A uniformly random live member other than `exclude`, by rejection sampling (the
    /// table is mostly live), or by a scan when sampling keeps missing.
    pub fn random_live(&self, rng: &mut impl Rng, exclude: NodeId) -> Option<MemberRef<'_>> {
        self.random_matching(rng, |e| e.is_live() && e.id != exclude)
    }

    /// A uniformly random tombstone (dead or left member).
    pub fn random_dead(&self, rng: &mut impl Rng) -> Option<MemberRef<'_>> {
        self.random_matching(rng, |e| !e.is_live())
    }

    fn random_matching(
        &self,
        rng: &mut impl Rng,
        ok: impl Fn(&Entry) -> bool,
    ) -> Option<MemberRef<'_>> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        for _ in 0..16 {
            let e = &self.entries[rng.random_range(0..n)];
            if ok(e) {
                return Some(e.view());
            }
        }
        let matching = self.entries.iter().filter(|e| ok(e)).count();
        if matching == 0 {
            return None;
        }
        let k = rng.random_range(0..matching);
        self.entries
            .iter()
            .filter(|e| ok(e))
            .nth(k)
            .map(Entry::view)
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
            let e = &self.entries[rng.random_range(0..self.entries.len())];
            if e.is_live() && !exclude.contains(&e.id) && !out[start..].iter().any(|p| p.0 == e.id)
            {
                out.push((e.id, e.view().addr));
            }
        }
    }

    /// `t` as signed nanoseconds from the epoch.
    fn offset(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.epoch) {
            Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            None => {
                let d = self.epoch.duration_since(t).as_nanos();
                i64::try_from(d).map_or(i64::MIN, |d| -d)
            }
        }
    }

    /// The instant of an offset from the epoch.
    fn instant(&self, offset: i64) -> Instant {
        let d = Duration::from_nanos(offset.unsigned_abs());
        if offset >= 0 {
            self.epoch + d
        } else {
            self.epoch.checked_sub(d).unwrap_or(self.epoch)
        }
    }

    fn hash(&self, id: NodeId) -> u64 {
        mix64(id.0 ^ self.seed)
    }

    fn home(&self, id: NodeId) -> usize {
        (self.hash(id) as usize) & (self.slots.len() - 1)
    }

    /// The position of a member in `entries`. A slot holds the position plus one in its
    /// low half and the high half of the id's hash in its high half, so a probe looks at
    /// an entry (a cache miss in a large table) only when the hash halves match.
    fn position(&self, id: NodeId) -> Option<usize> {
        let h = self.hash(id);
        let tag = h >> 32;
        let mask = self.slots.len() - 1;
        let mut s = (h as usize) & mask;
        loop {
            let v = self.slots[s];
            let i = slot_position(v)?;
            if v >> 32 == tag && self.entries[i].id == id {
                return Some(i);
            }
            s = (s + 1) & mask;
        }
    }

    /// The slot holding position `i`, whose entry has id `id`.
    fn slot_of(&self, id: NodeId, i: usize) -> usize {
        let mask = self.slots.len() - 1;
        let mut s = self.home(id);
        while slot_position(self.slots[s]) != Some(i) {
            s = (s + 1) & mask;
        }
        s
    }

    /// Record position `i` (whose entry has id `id`, not yet indexed) in a free slot.
    fn index(&mut self, id: NodeId, i: usize) {
        let h = self.hash(id);
        let mask = self.slots.len() - 1;
        let mut s = (h as usize) & mask;
        while self.slots[s] != 0 {
            s = (s + 1) & mask;
        }
        self.slots[s] = (h >> 32 << 32) | slot_low(i);
    }

    /// Rebuild the index with `len` slots (a power of two).
    fn reindex(&mut self, len: usize) {
        self.slots.clear();
        self.slots.resize(len, 0);
        self.slots.shrink_to_fit();
        for i in 0..self.entries.len() {
            self.index(self.entries[i].id, i);
        }
    }

    /// Slots for `n` members: a power of two at least 4/3 of `n`.
    fn slots_for(n: usize) -> usize {
        (n + n.div_ceil(3)).next_power_of_two().max(MIN_SLOTS)
    }

    fn insert(&mut self, m: &MemberRef<'_>, now: Instant) {
        let i = self.entries.len();
        let mut e = Entry::new(m.id, self.offset(now));
        e.set(m);
        if let Some(k) = self.orphans.iter().position(|o| o.0 == m.id) {
            e.queued = self.orphans.swap_remove(k).1;
        }
        self.entries.push(e);
        if (i + 1) * 4 > self.slots.len() * 3 {
            self.reindex(self.slots.len() * 2);
        } else {
            self.index(m.id, i);
        }
        self.account(i, true);
    }

    fn remove_at(&mut self, i: usize) {
        self.account(i, false);
        let id = self.entries[i].id;
        // Backward-shift deletion keeps every probe sequence unbroken without tombstones.
        let mask = self.slots.len() - 1;
        let mut hole = self.slot_of(id, i);
        let mut s = (hole + 1) & mask;
        while let Some(j) = slot_position(self.slots[s]) {
            let home = self.home(self.entries[j].id);
            if (s.wrapping_sub(home) & mask) >= (s.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[s];
                hole = s;
            }
            s = (s + 1) & mask;
        }
        self.slots[hole] = 0;
        let last = self.entries.len() - 1;
        let e = self.entries.swap_remove(i);
        if e.queued != 0 {
            self.orphans.push((e.id, e.queued));
        }
        if i != last {
            let s = self.slot_of(self.entries[i].id, last);
            self.slots[s] = (self.slots[s] >> 32 << 32) | slot_low(i);
        }
    }

    /// Give back memory after the table shrank to well below what it once held.
    fn shrink(&mut self) {
        let n = self.entries.len();
        if self.entries.chunks.capacity() > 2 * self.entries.chunks.len() + 16 {
            self.entries.chunks.shrink_to_fit();
        }
        let want = Self::slots_for(n);
        if self.slots.len() > 2 * want {
            self.reindex(want);
        }
    }

    /// Add (or subtract) entry `i`'s state to the live count and bucket sums.
    fn account(&mut self, i: usize, add: bool) {
        let m = self.entries[i].view();
        if !m.is_live() {
            return;
        }
        let h = state_hash(&m);
        let b = &mut self.buckets[bucket_of(m.id)];
        if add {
            self.live += 1;
            b.count += 1;
            b.hash = b.hash.wrapping_add(h);
            self.view_sum = self.view_sum.wrapping_add(h);
        } else {
            self.live -= 1;
            b.count -= 1;
            b.hash = b.hash.wrapping_sub(h);
            self.view_sum = self.view_sum.wrapping_sub(h);
        }
    }
}

impl QueueSlots for MemberTable {
    fn queued(&self, id: NodeId, hint: &mut u32) -> u64 {
        match self.find(id, *hint) {
            Some(i) => {
                *hint = u32::try_from(i).map_or(NO_HINT, |i| i.min(NO_HINT));
                self.entries[i].queued
            }
            None => {
                *hint = NO_HINT;
                self.orphans.iter().find(|o| o.0 == id).map_or(0, |o| o.1)
            }
        }
    }

    fn prefetch(&self, _id: NodeId, hint: u32) {
        let i = hint as usize;
        if i < self.entries.len() {
            prefetch(&self.entries[i]);
        }
    }

    fn set_queued(&mut self, id: NodeId, hint: u32, key: u64) {
        if let Some(i) = self.find(id, hint) {
            self.entries[i].queued = key;
            return;
        }
        match self.orphans.iter().position(|o| o.0 == id) {
            Some(k) if key == 0 => {
                self.orphans.swap_remove(k);
            }
            Some(k) => self.orphans[k].1 = key,
            None if key != 0 => self.orphans.push((id, key)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, Strategy};
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

    #[test]
    fn every_field_survives_the_packed_form() {
        let (mut t, now) = table();
        let v6: SocketAddr = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            7000,
            5,
            3,
        ));
        let full = Member {
            addr: v6,
            drained: true,
            meta_version: 9,
            metadata: b"zone=a".to_vec(),
            accuser: Some(NodeId(44)),
            ..member(1, u64::MAX - 1, Status::Suspect)
        };
        assert_eq!(t.merge(&full.as_update(), now), Merge::Added);
        // `as_update` leaves the accuser out unless suspect: merge it as stored.
        let got = t.get(NodeId(1)).unwrap();
        assert_eq!(got.to_member(), full);
        assert_eq!(got, full.view());
        for status in [Status::Alive, Status::Dead, Status::Left] {
            let mut plain = member(2, 3, status);
            plain.meta_version = u64::MAX;
            t.merge(&plain.as_update(), now);
            assert_eq!(t.get(NodeId(2)).unwrap().to_member(), plain);
        }
        // Back to a plain IPv4 member: the out-of-line part goes.
        assert!(t.update_with(NodeId(1), now, |m| {
            m.addr = SocketAddr::from(([192, 168, 1, 2], 1));
            m.metadata.clear();
            m.accuser = None;
        }));
        let i = t.position(NodeId(1)).unwrap();
        assert!(t.entries[i].extra.is_none());
        assert_eq!(
            t.get(NodeId(1)).unwrap().addr,
            SocketAddr::from(([192, 168, 1, 2], 1))
        );
        assert_eq!(t.get(NodeId(1)).unwrap().status, Status::Suspect);
        // A suspect's accuser is kept in the entry itself, and goes with the suspicion.
        assert!(t.update_with(NodeId(1), now, |m| m.accuser = Some(NodeId(45))));
        let i = t.position(NodeId(1)).unwrap();
        assert!(t.entries[i].extra.is_none());
        assert_eq!(t.get(NodeId(1)).unwrap().accuser, Some(NodeId(45)));
        assert!(t.update_with(NodeId(1), now, |m| {
            m.status = Status::Alive;
            m.incarnation = u64::MAX;
            m.accuser = None;
        }));
        assert_eq!(t.get(NodeId(1)).unwrap().accuser, None);
    }

    #[test]
    fn since_is_when_the_status_last_changed() {
        let (mut t, now) = table();
        let later = now + std::time::Duration::from_secs(5);
        t.merge(&member(1, 0, Status::Alive).as_update(), now);
        assert_eq!(t.since(NodeId(1)), Some(now));
        t.merge(&member(1, 0, Status::Suspect).as_update(), later);
        assert_eq!(t.since(NodeId(1)), Some(later));
        // A newer state with the same status keeps the instant.
        t.merge(
            &member(1, 1, Status::Suspect).as_update(),
            later + later.duration_since(now),
        );
        assert_eq!(t.since(NodeId(1)), Some(later));
        // Instants before the table was made are kept exactly too.
        let t0 = later;
        let mut t2 = MemberTable::new(member(0, 0, Status::Alive), t0, 1);
        t2.merge(&member(3, 0, Status::Dead).as_update(), now);
        assert_eq!(t2.since(NodeId(3)), Some(now));
        assert_eq!(t2.collect_tombstones(t0, t0.duration_since(now)), 1);
    }

    #[test]
    fn a_stale_position_hint_still_finds_the_member() {
        let (mut t, now) = table();
        for id in 1..=5 {
            t.merge(&member(id, 0, Status::Alive).as_update(), now);
        }
        let mut hint = NO_HINT;
        t.set_queued(NodeId(5), NO_HINT, 9);
        assert_eq!(t.queued(NodeId(5), &mut hint), 9);
        assert_ne!(hint, NO_HINT);
        assert_eq!(t.get_hinted(NodeId(5), hint).map(|m| m.id), Some(NodeId(5)));
        // A hint pointing at another member, or past the end, falls back to the index.
        let other = (hint + 1) % 6;
        assert_eq!(
            t.get_hinted(NodeId(5), other).map(|m| m.id),
            Some(NodeId(5))
        );
        assert_eq!(t.get_hinted(NodeId(5), 1000).map(|m| m.id), Some(NodeId(5)));
        let mut stale = other;
        assert_eq!(t.queued(NodeId(5), &mut stale), 9);
        assert_eq!(stale, hint);
        assert!(t.get_hinted(NodeId(77), hint).is_none());
    }

    #[test]
    fn a_queue_place_outlives_the_collection_of_its_member() {
        let (mut t, now) = table();
        t.merge(&member(1, 0, Status::Dead).as_update(), now);
        t.set_queued(NodeId(1), NO_HINT, 77);
        assert_eq!(t.collect_tombstones(now, std::time::Duration::ZERO), 1);
        assert!(t.get(NodeId(1)).is_none());
        assert_eq!(t.queued(NodeId(1), &mut { NO_HINT }), 77);
        t.set_queued(NodeId(1), NO_HINT, 78);
        assert_eq!(t.queued(NodeId(1), &mut { NO_HINT }), 78);
        // Back in the table, the member has its place again.
        t.merge(&member(1, 1, Status::Alive).as_update(), now);
        assert_eq!(t.queued(NodeId(1), &mut { NO_HINT }), 78);
        assert!(t.orphans.is_empty());
        t.set_queued(NodeId(1), NO_HINT, 0);
        assert_eq!(t.queued(NodeId(1), &mut { NO_HINT }), 0);
        // Places of members never in the table are kept and dropped the same way.
        t.set_queued(NodeId(9), NO_HINT, 5);
        assert_eq!(t.queued(NodeId(9), &mut { NO_HINT }), 5);
        t.set_queued(NodeId(9), NO_HINT, 0);
        assert!(t.orphans.is_empty());
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
        let mut v: Vec<Member> = t
            .iter()
            .filter(|m| m.is_live())
            .map(|m| m.to_member())
            .collect();
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

        /// The index finds every member and nothing else through any mix of additions
        /// and collections, across chunk boundaries and index resizes.
        #[test]
        fn the_index_agrees_with_a_plain_map(
            ops in proptest::collection::vec((0..400u64, any::<bool>(), 0..20u8), 1..1500),
            seed in any::<u64>(),
        ) {
            let now = Instant::now();
            let mut t = MemberTable::new(member(0, 0, Status::Alive), now, seed);
            let mut model: std::collections::HashMap<u64, Status> =
                std::collections::HashMap::from([(0, Status::Alive)]);
            for (id, dead, collect) in ops {
                let id = id + 1;
                let status = if dead { Status::Dead } else { Status::Alive };
                let inc = u64::from(dead);
                let m = Member { id: NodeId(id), addr: SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 1)), ..member(id, inc, status) };
                t.merge(&m.as_update(), now);
                let e = model.entry(id).or_insert(status);
                if dead {
                    *e = Status::Dead;
                }
                if collect == 0 {
                    t.collect_tombstones(now, std::time::Duration::ZERO);
                    model.retain(|_, st| *st != Status::Dead);
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for (&id, &st) in &model {
                let got = t.get(NodeId(id));
                prop_assert_eq!(got.map(|m| (m.id, m.status)), Some((NodeId(id), st)));
                prop_assert_eq!(t.since(NodeId(id)), Some(now));
            }
            for id in 401..420 {
                prop_assert!(t.get(NodeId(id)).is_none());
            }
            let mut ids: Vec<u64> = t.iter().map(|m| m.id.0).collect();
            ids.sort_unstable();
            let mut want: Vec<u64> = model.keys().copied().collect();
            want.sort_unstable();
            prop_assert_eq!(ids, want);
            prop_assert!(t.slots.len().is_power_of_two() && t.slots.len() * 3 >= t.len() * 4);
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
                b.hash = b.hash.wrapping_add(state_hash(&m));
                live += 1;
            }
            prop_assert_eq!(&fresh, t.buckets());
            prop_assert_eq!(live, t.live_count());
            // The view hash's running sum is the buckets' sum, recounted.
            let sum = fresh.iter().fold(0u64, |a, b| a.wrapping_add(b.hash));
            prop_assert_eq!(t.view_hash(), mix64(sum ^ mix64(live as u64)));
        }
    }

    #[test]
    fn the_view_hash_changes_with_any_live_change() {
        let now = Instant::now();
        let mut t = MemberTable::new(member(0, 0, Status::Alive), now, 1);
        let mut seen = vec![t.view_hash()];
        let changes = [
            member(1, 0, Status::Alive),
            member(2, 0, Status::Alive),
            member(1, 1, Status::Alive),
            member(2, 1, Status::Suspect),
            Member {
                meta_version: 1,
                ..member(1, 1, Status::Alive)
            },
            Member {
                drained: true,
                meta_version: 2,
                ..member(1, 1, Status::Alive)
            },
            member(2, 2, Status::Dead),
        ];
        for m in changes {
            t.merge(&m.as_update(), now);
            let h = t.view_hash();
            assert!(!seen.contains(&h), "{m:?} left the view hash as before");
            seen.push(h);
        }
    }
}

/// The one use of `unsafe` in this module: a cache prefetch hint.
#[allow(unsafe_code)]
pub(crate) mod prefetch {
    /// Start loading the cache line holding `x` into all cache levels.
    #[inline(always)]
    pub(crate) fn prefetch<T>(x: &T) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the
        // target's baseline); a prefetch never faults and changes no memory, and `x` is
        // a valid reference anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (x as *const T).cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = x;
    }
}

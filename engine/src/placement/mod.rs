//! Key placement: which node owns a key.
//!
//! Every scheme implements one trait, [`Placement`], so the engine, the load generator and the
//! benchmarks swap schemes freely. A scheme is built from a member list ([`Node`]s, with
//! weights where the scheme has them) and is immutable afterwards: a membership change builds
//! the next one ([`Placement::rebuild`]) off the lookup path, and [`Router`] publishes it
//! atomically so that readers on any thread never block.
//!
//! | scheme | lookup | memory | moved on −1 node | weights | replicas |
//! |---|---|---|---|---|---|
//! | [`Modulo`] | O(1) | O(1) | ≈ (N−1)/N | no | next buckets |
//! | [`Ring`] (Karger, virtual nodes) | O(1) expected | O(N·points) | ≈ 1/N | yes | ring walk |
//! | [`Ketama`] (libmemcached-compatible) | O(1) expected + MD5 | O(N·160) | ≈ 1/N (more where N changes libmemcached's f32 point count) | yes | ring walk |
//! | [`Jump`] (Lamping–Veach) | O(log N) | O(N) | 1/N last, ≤ 2/N other | no | rehash |
//! | [`Rendezvous`] (HRW, plain/weighted) | O(N) | O(N) | 1/N | yes | top n scores |
//! | [`Maglev`] | O(1) | O(M), M ≥ 100·N prime | a few × 1/N (table refill) | no | rehash |
//! | [`MultiProbe`] | O(k·log N) | O(N) | 1/N | no | rehash |
//! | [`BoundedLoad`] | O(1) expected + skips | as [`Ring`] | ≈ 1/N | yes | ring walk |
//! | [`Memento`] | O(log N) | O(N + removed) | 1/N | no | rehash |
//!
//! Keys are bytes or `u64` ([`Key`]); every scheme hashes them with seeded xxh3
//! ([`KeyHasher`]) except where compatibility fixes the hash: [`Ketama`] uses libmemcached's
//! MD5 key hash and [`Jump`] takes a `u64` key as the reference algorithm does.
//!
//! Replica sets ([`Placement::replicas`]) are Dynamo-style preference lists of distinct nodes.
//! Ring-shaped schemes walk the ring clockwise; the others draw successive rehashes of the key
//! (each one itself consistent) and keep the first distinct answers.
#![deny(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

mod bounded;
mod jump;
mod ketama;
mod maglev;
mod memento;
mod modulo;
mod multiprobe;
mod rendezvous;
mod ring;
mod router;

pub use bounded::BoundedLoad;
pub use jump::{jump_hash, Jump};
pub use ketama::Ketama;
pub use maglev::Maglev;
pub use memento::Memento;
pub use modulo::Modulo;
pub use multiprobe::MultiProbe;
pub use rendezvous::Rendezvous;
pub use ring::Ring;
pub use router::{Router, Snapshot};

/// Identity of a member: stable across restarts of the process that hosts it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A member as placement sees it: an id, a name that ring points are derived from, a weight.
///
/// The name matters to schemes that hash it (rings, ketama, rendezvous, Maglev, multi-probe):
/// two routers agree on placement when they agree on names, ids and weights. For [`Ketama`]
/// the name is the memcached server string (`host` or `host:port`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// The member's identity.
    pub id: NodeId,
    /// The member's name, hashed by the schemes that place points per node.
    pub name: String,
    /// Relative capacity; 1 is the default. Ignored by schemes without weights.
    pub weight: u32,
}

impl Node {
    /// A node of weight 1.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        Self {
            id: NodeId(id),
            name: name.into(),
            weight: 1,
        }
    }

    /// The same node with another weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// A key to place: raw bytes or a `u64`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    /// Arbitrary bytes (a string key, a request path, …).
    Bytes(&'a [u8]),
    /// A 64-bit key. Hashed as its 8 little-endian bytes, except by [`Jump`], which uses it
    /// directly as the reference algorithm does.
    U64(u64),
}

impl<'a> From<&'a [u8]> for Key<'a> {
    fn from(b: &'a [u8]) -> Self {
        Key::Bytes(b)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Key<'a> {
    fn from(b: &'a [u8; N]) -> Self {
        Key::Bytes(b)
    }
}

impl<'a> From<&'a str> for Key<'a> {
    fn from(s: &'a str) -> Self {
        Key::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a String> for Key<'a> {
    fn from(s: &'a String) -> Self {
        Key::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a Vec<u8>> for Key<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Key::Bytes(b)
    }
}

impl From<u64> for Key<'_> {
    fn from(k: u64) -> Self {
        Key::U64(k)
    }
}

/// Seeded xxh3 over keys: the hash every scheme uses unless compatibility fixes another.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    /// A hasher with this seed. Routers that must agree use the same seed.
    pub const fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed.
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// Hash a key.
    #[inline]
    pub fn hash(&self, key: Key<'_>) -> u64 {
        match key {
            Key::Bytes(b) => xxh3_64_with_seed(b, self.seed),
            Key::U64(k) => xxh3_64_with_seed(&k.to_le_bytes(), self.seed),
        }
    }

    /// Hash a node's name with a point index: the position of a node's `index`th point.
    #[inline]
    pub fn hash_point(&self, name: &str, index: u64) -> u64 {
        // Mixing the index into the seed keeps the name hashed in one pass with no buffer.
        xxh3_64_with_seed(
            name.as_bytes(),
            self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }
}

/// Re-mix a key hash into the `attempt`th independent hash of the same key.
///
/// Schemes that place replicas by rehashing draw `rehash(h, 1)`, `rehash(h, 2)`, … so each
/// replica slot is itself a consistent mapping of the key.
#[inline]
pub fn rehash(hash: u64, attempt: u64) -> u64 {
    // splitmix64's finaliser over the hash offset by the attempt: a bijection per attempt.
    let mut z = hash.wrapping_add(attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Map a 64-bit hash uniformly onto `0..n` without a division (Lemire's multiply-shift).
#[inline]
pub fn reduce(hash: u64, n: u64) -> u64 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u64
}

/// Why a placement could not be built. Building never changes an existing placement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The member list was empty: there is nowhere to place a key.
    #[error("no nodes to place keys on")]
    NoNodes,
    /// Two members share an id.
    #[error("duplicate node id {0}")]
    DuplicateId(NodeId),
    /// A member has weight 0 in a scheme that uses weights.
    #[error("node {0} has weight 0")]
    ZeroWeight(NodeId),
    /// A scheme parameter is out of range; the message names it.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// More members than the scheme can index.
    #[error("{count} nodes is more than this scheme supports ({max})")]
    TooManyNodes {
        /// Members given.
        count: usize,
        /// The scheme's limit.
        max: usize,
    },
}

/// Heap bytes of a member list (the vector and the names), for `memory_bytes`.
pub(crate) fn nodes_memory(nodes: &[Node]) -> usize {
    std::mem::size_of_val(nodes) + nodes.iter().map(|n| n.name.capacity()).sum::<usize>()
}

/// Check what every scheme needs of a member list: non-empty, ids distinct, weights > 0.
pub(crate) fn validate_nodes(nodes: &[Node]) -> Result<(), PlacementError> {
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    if nodes.len() > u32::MAX as usize {
        return Err(PlacementError::TooManyNodes {
            count: nodes.len(),
            max: u32::MAX as usize,
        });
    }
    let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(PlacementError::DuplicateId(w[0]));
    }
    if let Some(n) = nodes.iter().find(|n| n.weight == 0) {
        return Err(PlacementError::ZeroWeight(n.id));
    }
    Ok(())
}

/// The scheme and parameters a placement is built with: parse one from a name
/// (`"ring"`, `"ring:100"`, `"maglev"`, `"bounded:0.25"`, …) with [`FromStr`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Scheme {
    /// `hash(key) mod N`: the baseline that moves almost every key on change.
    Modulo,
    /// Karger ring with `points_per_node` virtual nodes per unit of mean weight.
    Ring {
        /// Points a node of mean weight gets.
        points_per_node: u32,
    },
    /// libmemcached's weighted ketama: MD5 points, 160 per server of mean weight.
    Ketama,
    /// Lamping–Veach jump consistent hash.
    Jump,
    /// Rendezvous (highest random weight) hashing.
    Rendezvous {
        /// Use node weights (logarithmic method) instead of plain highest score.
        weighted: bool,
    },
    /// Maglev lookup table.
    Maglev {
        /// Table size (a prime ≥ N); `None` picks the first prime ≥ max(100·N, 65537).
        table_size: Option<u64>,
    },
    /// Multi-probe consistent hashing with `probes` probes of the key.
    MultiProbe {
        /// Probes per lookup.
        probes: u32,
    },
    /// Consistent hashing with bounded loads over a ring.
    BoundedLoad {
        /// Capacity is ⌈(1+ε)·mean⌉.
        epsilon: f64,
        /// Points a node of mean weight gets on the underlying ring.
        points_per_node: u32,
    },
    /// MementoHash: jump hash with minimal disruption on arbitrary removal.
    Memento,
}

impl Scheme {
    /// Every scheme with its default parameters, in the order reports list them.
    pub fn all() -> Vec<Scheme> {
        vec![
            Scheme::Modulo,
            Scheme::Ring {
                points_per_node: ring::DEFAULT_POINTS,
            },
            Scheme::Ketama,
            Scheme::Jump,
            Scheme::Rendezvous { weighted: false },
            Scheme::Rendezvous { weighted: true },
            Scheme::Maglev { table_size: None },
            Scheme::MultiProbe {
                probes: multiprobe::DEFAULT_PROBES,
            },
            Scheme::BoundedLoad {
                epsilon: bounded::DEFAULT_EPSILON,
                points_per_node: ring::DEFAULT_POINTS,
            },
            Scheme::Memento,
        ]
    }

    /// A short stable name, e.g. for report rows and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Modulo => "modulo",
            Scheme::Ring { .. } => "ring",
            Scheme::Ketama => "ketama",
            Scheme::Jump => "jump",
            Scheme::Rendezvous { weighted: false } => "rendezvous",
            Scheme::Rendezvous { weighted: true } => "rendezvous-weighted",
            Scheme::Maglev { .. } => "maglev",
            Scheme::MultiProbe { .. } => "multiprobe",
            Scheme::BoundedLoad { .. } => "bounded",
            Scheme::Memento => "memento",
        }
    }

    /// Build a placement of this scheme over `nodes`, hashing keys with `seed`.
    pub fn build(&self, nodes: &[Node], seed: u64) -> Result<Box<dyn Placement>, PlacementError> {
        let hasher = KeyHasher::new(seed);
        Ok(match *self {
            Scheme::Modulo => Box::new(Modulo::new(nodes, hasher)?),
            Scheme::Ring { points_per_node } => {
                Box::new(Ring::new(nodes, hasher, points_per_node)?)
            }
            Scheme::Ketama => Box::new(Ketama::new(nodes)?),
            Scheme::Jump => Box::new(Jump::new(nodes, hasher)?),
            Scheme::Rendezvous { weighted } => Box::new(Rendezvous::new(nodes, hasher, weighted)?),
            Scheme::Maglev { table_size } => Box::new(Maglev::new(nodes, hasher, table_size)?),
            Scheme::MultiProbe { probes } => Box::new(MultiProbe::new(nodes, hasher, probes)?),
            Scheme::BoundedLoad {
                epsilon,
                points_per_node,
            } => Box::new(BoundedLoad::new(nodes, hasher, epsilon, points_per_node)?),
            Scheme::Memento => Box::new(Memento::new(nodes, hasher)?),
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Ring { points_per_node } => write!(f, "ring:{points_per_node}"),
            Scheme::Maglev {
                table_size: Some(m),
            } => write!(f, "maglev:{m}"),
            Scheme::MultiProbe { probes } => write!(f, "multiprobe:{probes}"),
            Scheme::BoundedLoad {
                epsilon,
                points_per_node,
            } => write!(f, "bounded:{epsilon}:{points_per_node}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A scheme name that [`Scheme::from_str`] did not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement scheme {0:?} (expected one of modulo, ring[:POINTS], ketama, jump, rendezvous, rendezvous-weighted, maglev[:TABLE], multiprobe[:K], bounded[:EPSILON[:POINTS]], memento)")]
pub struct ParseSchemeError(String);

impl FromStr for Scheme {
    type Err = ParseSchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseSchemeError(s.to_string());
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let arg = parts.next();
        let arg2 = parts.next();
        if parts.next().is_some() {
            return Err(err());
        }
        fn num<T: FromStr>(a: Option<&str>, default: T) -> Option<T> {
            match a {
                None => Some(default),
                Some(a) => a.parse().ok(),
            }
        }
        let scheme = match (name, arg, arg2) {
            ("modulo", None, None) => Scheme::Modulo,
            ("ring", _, None) => Scheme::Ring {
                points_per_node: num(arg, ring::DEFAULT_POINTS).ok_or_else(err)?,
            },
            ("ketama", None, None) => Scheme::Ketama,
            ("jump", None, None) => Scheme::Jump,
            ("rendezvous", None, None) => Scheme::Rendezvous { weighted: false },
            ("rendezvous-weighted", None, None) => Scheme::Rendezvous { weighted: true },
            ("maglev", _, None) => Scheme::Maglev {
                table_size: match arg {
                    None => None,
                    Some(a) => Some(a.parse().map_err(|_| err())?),
                },
            },
            ("multiprobe", _, None) => Scheme::MultiProbe {
                probes: num(arg, multiprobe::DEFAULT_PROBES).ok_or_else(err)?,
            },
            ("bounded", _, _) => Scheme::BoundedLoad {
                epsilon: num(arg, bounded::DEFAULT_EPSILON).ok_or_else(err)?,
                points_per_node: num(arg2, ring::DEFAULT_POINTS).ok_or_else(err)?,
            },
            ("memento", None, None) => Scheme::Memento,
            _ => return Err(err()),
        };
        Ok(scheme)
    }
}

/// A built, immutable placement of keys onto a member list.
///
/// Implementations answer `locate` from shared references without locks or allocation, so
/// one placement can serve any number of threads.
pub trait Placement: Send + Sync + fmt::Debug {
    /// The scheme and parameters this placement was built with.
    fn scheme(&self) -> Scheme;

    /// The members, in the order that indexes returned by [`Placement::locate`] refer to.
    fn nodes(&self) -> &[Node];

    /// The scheme's hash of a key (the input of [`Placement::locate`]).
    fn hash_key(&self, key: Key<'_>) -> u64;

    /// Index into [`Placement::nodes`] of the owner of a key hash.
    fn locate(&self, hash: u64) -> usize;

    /// Fill `out` with the indexes of `n` distinct owners of a key hash, the primary
    /// ([`Placement::locate`]) first; fewer when there are fewer than `n` nodes. `out` is
    /// cleared first; it does not allocate when it already has the capacity.
    ///
    /// The default draws successive rehashes of the key ([`rehash`]) and keeps the first
    /// distinct owners; after `8·n` draws it completes the set with the nodes that follow
    /// the primary in member order, so it always terminates.
    fn replicas_hashed(&self, hash: u64, n: usize, out: &mut Vec<usize>) {
        replicas_by_rehash(self, hash, n, out);
    }

    /// Bytes of memory held by this placement (tables, points, member list).
    fn memory_bytes(&self) -> usize;

    /// Build the placement that follows this one when the members become `nodes`.
    ///
    /// Schemes whose layout depends on history (which bucket a node holds, in [`Jump`] and
    /// [`Memento`]) carry it over so that only the keys of removed or added nodes move;
    /// the others build afresh with the same parameters and seed.
    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError>;

    /// Owner of a key.
    #[inline]
    fn lookup(&self, key: Key<'_>) -> &Node {
        &self.nodes()[self.locate(self.hash_key(key))]
    }

    /// Distinct owners of a key (see [`Placement::replicas_hashed`]), as indexes into
    /// [`Placement::nodes`].
    fn replicas(&self, key: Key<'_>, n: usize, out: &mut Vec<usize>) {
        self.replicas_hashed(self.hash_key(key), n, out);
    }
}

/// The rehash replica strategy of [`Placement::replicas_hashed`], for schemes to call.
pub(crate) fn replicas_by_rehash<P: Placement + ?Sized>(
    p: &P,
    hash: u64,
    n: usize,
    out: &mut Vec<usize>,
) {
    out.clear();
    let len = p.nodes().len();
    let n = n.min(len);
    if n == 0 {
        return;
    }
    let primary = p.locate(hash);
    out.push(primary);
    let mut attempt = 1u64;
    while out.len() < n && attempt <= 8 * n as u64 {
        let i = p.locate(rehash(hash, attempt));
        if !out.contains(&i) {
            out.push(i);
        }
        attempt += 1;
    }
    let mut i = primary;
    while out.len() < n {
        i = (i + 1) % len;
        if !out.contains(&i) {
            out.push(i);
        }
    }
}

/// Test helpers shared by the schemes' unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// `n` nodes with ids 0..n and names `node-<id>`.
    pub(crate) fn nodes(n: u64) -> Vec<Node> {
        (0..n).map(|i| Node::new(i, format!("node-{i}"))).collect()
    }

    /// Keys per node index for `keys` u64 keys `0..keys`.
    pub(crate) fn counts(p: &dyn Placement, keys: u64) -> Vec<u64> {
        let mut c = vec![0u64; p.nodes().len()];
        for k in 0..keys {
            c[p.locate(p.hash_key(Key::U64(k)))] += 1;
        }
        c
    }

    /// Peak-to-mean ratio of a load vector.
    pub(crate) fn peak_to_mean(c: &[u64]) -> f64 {
        let total: u64 = c.iter().sum();
        let mean = total as f64 / c.len() as f64;
        *c.iter().max().unwrap() as f64 / mean
    }

    /// Fraction of keys `0..keys` whose owner *id* differs between two placements.
    pub(crate) fn moved_fraction(a: &dyn Placement, b: &dyn Placement, keys: u64) -> f64 {
        let moved = (0..keys)
            .filter(|&k| a.lookup(Key::U64(k)).id != b.lookup(Key::U64(k)).id)
            .count();
        moved as f64 / keys as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_round_trip() {
        for s in Scheme::all() {
            let parsed: Scheme = s.to_string().parse().unwrap();
            assert_eq!(parsed, s, "{s}");
        }
        assert_eq!(
            "ring:40".parse::<Scheme>().unwrap(),
            Scheme::Ring {
                points_per_node: 40
            }
        );
        assert!("ring:x".parse::<Scheme>().is_err());
        assert!("nope".parse::<Scheme>().is_err());
        assert!("jump:3".parse::<Scheme>().is_err());
    }

    #[test]
    fn validation_rejects_bad_member_lists() {
        assert_eq!(validate_nodes(&[]), Err(PlacementError::NoNodes));
        let dup = [Node::new(1, "a"), Node::new(1, "b")];
        assert_eq!(
            validate_nodes(&dup),
            Err(PlacementError::DuplicateId(NodeId(1)))
        );
        let zero = [Node::new(1, "a").with_weight(0)];
        assert_eq!(
            validate_nodes(&zero),
            Err(PlacementError::ZeroWeight(NodeId(1)))
        );
        for s in Scheme::all() {
            assert_eq!(s.build(&[], 0).unwrap_err(), PlacementError::NoNodes, "{s}");
        }
    }

    #[test]
    fn reduce_covers_range() {
        assert_eq!(reduce(0, 10), 0);
        assert_eq!(reduce(u64::MAX, 10), 9);
        assert_eq!(reduce(1 << 63, 10), 5);
    }
}

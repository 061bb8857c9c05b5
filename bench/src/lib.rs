//! Shared inputs and harnesses for Hearsay's criterion benchmarks.
//!
//! - The crate root: member lists, key pools and the cursor that feeds placement lookups
//!   batch by batch. Every benchmark in `benches/` draws its inputs from here so that our
//!   schemes and the peer crates are measured on the same members and the same keys.
//!   Everything is seeded: two runs (or two machines) see identical inputs, so differences
//!   between runs are the code's, not the data's.
//! - [`frames`]: seeded member updates, digests and garbage for `benches/codec.rs`.
//! - [`sys`]: host helpers: the kernel's UDP drop counters (`/proc/net/snmp`), the open-file
//!   limit, socket buffers, thread pinning and seeded payload bytes.
//! - [`transport`]: the loopback harnesses behind `benches/transport.rs` (one flow, many
//!   sockets, paced ping-pong latency) for the runtime and its tokio-uring, std and
//!   `sendmmsg` baselines.
//!
//! Criterion does the timing of every benchmark; the only figures produced here are the
//! transport harnesses' per-run counts and the latency histograms that criterion cannot
//! express.
//!
//! ```
//! use hearsay::placement::{Key, KeyHasher, Modulo, Placement};
//! use hearsay_bench::{member_list, u64_keys, KeyCursor, BATCH, KEY_POOL, KEY_SEED};
//!
//! let nodes = member_list(100);
//! let p = Modulo::new(&nodes, KeyHasher::new(KEY_SEED)).unwrap();
//! let keys = u64_keys(KEY_POOL, KEY_SEED);
//! let mut cursor = KeyCursor::new(&keys, BATCH);
//! let owners: usize = cursor
//!     .next_batch()
//!     .iter()
//!     .map(|&k| p.locate(p.hash_key(Key::U64(k))))
//!     .sum();
//! assert!(owners < 100 * BATCH);
//! ```

pub mod frames;
pub mod sys;
pub mod transport;

use hearsay::placement::Node;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Member counts the lookup benchmarks run at: from a small cache tier to a large fleet.
pub const LOOKUP_NODES: [usize; 5] = [10, 100, 1_000, 5_000, 10_000];

/// Member counts the build benchmarks run at. N = 10 is left out: every build is
/// microseconds there and says nothing about how a scheme scales.
pub const BUILD_NODES: [usize; 4] = [100, 1_000, 5_000, 10_000];

/// Keys looked up per measured iteration. Criterion reports time per iteration; with
/// `Throughput::Elements(BATCH)` it also reports lookups per second, i.e. per-lookup time.
/// 1024 makes an iteration long enough (microseconds) that timer overhead is noise.
pub const BATCH: usize = 1024;

/// Keys pre-generated per benchmark; iterations cycle through them batch by batch.
///
/// 64 Ki keys (512 KiB of `u64`, 1 MiB of 16-byte strings) are far more than one batch, so
/// successive iterations do not replay the same keys and find the same table lines hot in
/// cache, while the key array itself streams sequentially (as keys arriving from a socket
/// buffer would) and does not crowd the placement's tables out of the cache. A multiple of
/// [`BATCH`], so every batch is full.
pub const KEY_POOL: usize = 64 * 1024;

/// Seed of the key pools and of the placements' key hashers, so runs are comparable.
pub const KEY_SEED: u64 = 0x4845_4152_5341_5921;

/// Length of the byte keys of [`byte_keys`]: a short string key such as a session id.
pub const BYTE_KEY_LEN: usize = 16;

/// `n` members with ids `0..n`, weight 1, named like memcached servers (`10.a.b.c:11211`).
///
/// Names matter to every scheme that hashes them (rings, ketama, rendezvous, Maglev,
/// multi-probe): realistic names of realistic length give realistic point-hashing cost at
/// build time, and the `host:port` form is what ketama expects.
pub fn member_list(n: usize) -> Vec<Node> {
    (0..n as u64)
        .map(|i| {
            let name = format!(
                "10.{}.{}.{}:11211",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            );
            Node::new(i, name)
        })
        .collect()
}

/// `count` uniformly random `u64` keys, reproducible from `seed`.
pub fn u64_keys(count: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count).map(|_| rng.random()).collect()
}

/// `count` random keys of [`BYTE_KEY_LEN`] lowercase hex characters (a random `u64` spelled
/// out), reproducible from `seed`: what a string key such as a session id looks like.
///
/// Stored inline (`[u8; 16]`), not as `String`s, so that reading a key is one sequential load
/// and the benchmark measures hashing and lookup rather than pointer chasing into the heap.
pub fn byte_keys(count: usize, seed: u64) -> Vec<[u8; BYTE_KEY_LEN]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let v: u64 = rng.random();
            let mut k = [0u8; BYTE_KEY_LEN];
            for (i, b) in k.iter_mut().enumerate() {
                *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
            }
            k
        })
        .collect()
}

/// The Maglev table size floor Hearsay uses when none is given
/// (`Scheme::Maglev { table_size: None }`): `max(100·N, 65537)`; the table is the first prime
/// at or above it. Peer Maglev crates, which also take the first prime at or above the
/// capacity they are given, get this value so that all tables have the same size.
pub fn maglev_capacity(n: usize) -> usize {
    (100 * n).max(65_537)
}

/// Hands out consecutive batches of a key pool, wrapping around at the end.
///
/// One cursor lives across all iterations of one benchmark, so iteration *i* looks up
/// batch *i mod (pool / batch)*.
#[derive(Debug)]
pub struct KeyCursor<'a, T> {
    pool: &'a [T],
    batch: usize,
    next: usize,
}

impl<'a, T> KeyCursor<'a, T> {
    /// A cursor over `pool` in batches of `batch`.
    ///
    /// # Panics
    ///
    /// If `batch` is zero or does not divide `pool.len()` (a short batch would change the
    /// work per iteration that the reported throughput assumes).
    pub fn new(pool: &'a [T], batch: usize) -> Self {
        assert!(batch > 0, "batch must be positive");
        assert!(
            !pool.is_empty() && pool.len() % batch == 0,
            "pool of {} keys is not a whole number of batches of {batch}",
            pool.len()
        );
        Self {
            pool,
            batch,
            next: 0,
        }
    }

    /// The next batch of exactly `batch` keys.
    #[inline]
    pub fn next_batch(&mut self) -> &'a [T] {
        let start = self.next;
        self.next += self.batch;
        if self.next == self.pool.len() {
            self.next = 0;
        }
        &self.pool[start..start + self.batch]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_reproducible_and_distinct() {
        assert_eq!(u64_keys(1000, 1), u64_keys(1000, 1));
        assert_ne!(u64_keys(1000, 1), u64_keys(1000, 2));
        let keys = byte_keys(1000, 1);
        assert!(keys.iter().all(|k| k.iter().all(u8::is_ascii_hexdigit)));
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());

        let nodes = member_list(70_000);
        let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), nodes.len(), "member names must be unique");
        assert_eq!(nodes[258].name, "10.0.1.2:11211");
    }

    #[test]
    fn cursor_cycles_through_whole_batches() {
        let pool: Vec<u32> = (0..8).collect();
        let mut c = KeyCursor::new(&pool, 4);
        assert_eq!(c.next_batch(), &[0, 1, 2, 3]);
        assert_eq!(c.next_batch(), &[4, 5, 6, 7]);
        assert_eq!(c.next_batch(), &[0, 1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "whole number of batches")]
    fn cursor_rejects_partial_batches() {
        let pool = [0u8; 10];
        let _ = KeyCursor::new(&pool, 4);
    }

    #[test]
    fn maglev_capacity_has_the_engine_floor() {
        assert_eq!(maglev_capacity(10), 65_537);
        assert_eq!(maglev_capacity(1000), 100_000);
    }
}

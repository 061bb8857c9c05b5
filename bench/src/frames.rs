//! Seeded inputs for the codec benchmarks: realistic member updates and digest entries, the
//! frames they fill, and garbage that looks like a frame for a few bytes or not at all.
//!
//! ```
//! use hearsay::codec::{decode_frame, FrameConfig, Message};
//! use hearsay_bench::frames::{encode, fill, member_updates, LABEL, SENDER};
//!
//! let config = FrameConfig::new(LABEL).unwrap();
//! let updates: Vec<Message<'_>> = member_updates(100, 1).into_iter().map(Message::Member).collect();
//! let n = fill(&config, None, &updates);
//! let mut buf = Vec::new();
//! let len = encode(&mut buf, &config, None, &updates[..n]);
//! assert!(len <= 1400);
//! assert_eq!(decode_frame(&mut buf, LABEL, None).unwrap().len(), n);
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use hearsay::codec::{
    Digest, DigestEntry, FrameConfig, FrameWriter, KeyRing, List, MemberUpdate, Message, Status,
    FLAG_ENCRYPTED, MAGIC, VERSION,
};
use hearsay::placement::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::sys::random_bytes;

/// The cluster label of every benchmark frame.
pub const LABEL: &[u8] = b"hearsay-bench";
/// The sending node: a random-looking 64-bit id, as real ids are, so its varint is long.
pub const SENDER: NodeId = NodeId(0x9e37_79b9_7f4a_7c15);
/// Seed of the generated messages and garbage.
pub const SEED: u64 = 0x636f_6465_6321;
/// Member metadata: a short tag string, as the codec's limits intend.
pub const METADATA: &[u8] = b"zone=eu-west-1a,rack=r17";

/// The key ring sealed frames are sealed and opened with: one key, fixed salt.
pub fn key_ring() -> KeyRing {
    KeyRing::with_salt([0x42; 32], [0x5a; 16])
}

/// A gossip port on a 10/8 address.
fn member_addr(rng: &mut SmallRng) -> SocketAddr {
    let ip = Ipv4Addr::new(10, rng.random(), rng.random(), rng.random());
    SocketAddr::V4(SocketAddrV4::new(ip, 7946))
}

/// `count` member updates as a node gossips them: random 64-bit ids, 10/8 addresses on the
/// gossip port, small incarnations and metadata versions, mostly alive, [`METADATA`].
pub fn member_updates(count: usize, seed: u64) -> Vec<MemberUpdate<'static>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|_| MemberUpdate {
            id: NodeId(rng.random()),
            addr: member_addr(&mut rng),
            incarnation: rng.random_range(1..100),
            status: if rng.random_ratio(9, 10) {
                Status::Alive
            } else {
                Status::Suspect
            },
            drained: false,
            meta_version: rng.random_range(1..20),
            metadata: METADATA,
            accuser: None,
        })
        .collect()
}

/// `count` digest entries with the same kind of values as [`member_updates`].
pub fn digest_entries(count: usize, seed: u64) -> Vec<DigestEntry> {
    member_updates(count, seed)
        .into_iter()
        .map(|m| DigestEntry {
            id: m.id,
            incarnation: m.incarnation,
            status: m.status,
            drained: m.drained,
            meta_version: m.meta_version,
        })
        .collect()
}

/// How many of `candidates`, in order, fit in one frame of `config` (sealed with `keys`).
pub fn fill(config: &FrameConfig, keys: Option<&KeyRing>, candidates: &[Message<'_>]) -> usize {
    let mut buf = Vec::new();
    let mut w = FrameWriter::new(&mut buf, config, SENDER, keys);
    candidates.iter().take_while(|m| w.try_push(m)).count()
}

/// The digest message over the most of `entries` that fits in one frame alone.
pub fn largest_digest<'a>(
    config: &FrameConfig,
    keys: Option<&KeyRing>,
    entries: &'a [DigestEntry],
) -> Message<'a> {
    let digest = |n| {
        Message::Digest(Digest {
            round: 7,
            part: 0,
            parts: 1,
            entries: List::new(&entries[..n]),
        })
    };
    let n = (1..=entries.len())
        .take_while(|&n| fill(config, keys, &[digest(n)]) == 1)
        .last()
        .expect("one digest entry fits any frame");
    assert!(
        n < entries.len(),
        "offer more entries than fit, to fill the frame"
    );
    digest(n)
}

/// Encodes `msgs` into one frame at the end of `buf`; returns its length.
///
/// # Panics
///
/// If a message does not fit (use [`fill`] to pick them).
pub fn encode(
    buf: &mut Vec<u8>,
    config: &FrameConfig,
    keys: Option<&KeyRing>,
    msgs: &[Message<'_>],
) -> usize {
    let mut w = FrameWriter::new(buf, config, SENDER, keys);
    for m in msgs {
        w.push(m).expect("message fits the frame");
    }
    w.finish()
}

/// `len` bytes that start with a valid header for [`LABEL`] (sealed or not) and continue
/// with random bytes: garbage that passes the header checks and fails later (in the
/// messages, or at authentication).
pub fn garbage_after_header(sealed: bool, len: usize, seed: u64) -> Vec<u8> {
    let mut g = Vec::with_capacity(len);
    g.extend_from_slice(&MAGIC);
    g.push(VERSION);
    g.push(if sealed { FLAG_ENCRYPTED } else { 0 });
    g.push(LABEL.len() as u8);
    g.extend_from_slice(LABEL);
    let rest = len.saturating_sub(g.len());
    g.extend_from_slice(&random_bytes(rest, seed));
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay::codec::{decode_frame, DecodeError, DEFAULT_MAX_DATAGRAM};

    fn config() -> FrameConfig {
        FrameConfig::new(LABEL).unwrap()
    }

    #[test]
    fn member_frames_are_full_and_round_trip() {
        let updates: Vec<Message<'_>> = member_updates(200, SEED)
            .into_iter()
            .map(Message::Member)
            .collect();
        let ring = key_ring();
        for keys in [None, Some(&ring)] {
            let n = fill(&config(), keys, &updates);
            let mut buf = Vec::new();
            let len = encode(&mut buf, &config(), keys, &updates[..n]);
            assert!(len <= DEFAULT_MAX_DATAGRAM);
            assert!(
                len + updates[n].encoded_len() > DEFAULT_MAX_DATAGRAM,
                "full frame"
            );
            let frame = decode_frame(&mut buf, LABEL, keys).unwrap();
            let got: Vec<_> = frame.messages().map(Result::unwrap).collect();
            assert_eq!(got, updates[..n]);
        }
    }

    #[test]
    fn digest_fills_a_frame() {
        let entries = digest_entries(300, SEED);
        let msg = largest_digest(&config(), None, &entries);
        let mut buf = Vec::new();
        let len = encode(&mut buf, &config(), None, &[msg]);
        assert!(len <= DEFAULT_MAX_DATAGRAM && len > DEFAULT_MAX_DATAGRAM - 20);
        let frame = decode_frame(&mut buf, LABEL, None).unwrap();
        let Some(Ok(Message::Digest(d))) = frame.messages().next() else {
            panic!("a digest")
        };
        assert_eq!(d.entries.len(), d.entries.iter().count());
        assert!(d
            .entries
            .iter()
            .eq(entries[..d.entries.len()].iter().copied()));
    }

    #[test]
    fn garbage_is_rejected() {
        let mut random = random_bytes(1400, SEED);
        assert_eq!(
            decode_frame(&mut random, LABEL, None).unwrap_err(),
            DecodeError::BadMagic
        );
        let ring = key_ring();
        let mut sealed = garbage_after_header(true, 1400, SEED);
        assert_eq!(sealed.len(), 1400);
        assert_eq!(
            decode_frame(&mut sealed, LABEL, Some(&ring)).unwrap_err(),
            DecodeError::Unauthenticated
        );
        let mut plain = garbage_after_header(false, 1400, SEED);
        let failed = match decode_frame(&mut plain, LABEL, None) {
            Err(_) => true,
            Ok(f) => f.messages().any(|m| m.is_err()),
        };
        assert!(failed, "random bytes after a header do not decode cleanly");
    }
}

//! The wire format: compact, versioned binary frames, each one UDP datagram carrying many
//! small messages, optionally sealed with XChaCha20-Poly1305.
//!
//! This module only encodes and decodes. It keeps no state beyond a [`KeyRing`]'s nonce
//! counter, reads no clock and touches no socket; what the messages mean is the membership,
//! dissemination and CRDT layers' business.
//!
//! Two promises hold for any input: decoding never panics, and never allocates (byte fields
//! borrow from the datagram, lists are read in place, sealed frames are opened in the
//! caller's buffer). Every length is checked against its limit and against the bytes left
//! before anything is sliced.
//!
//! ```
//! use hearsay::codec::{decode_frame, FrameConfig, FrameWriter, KeyRing, Message, Ping};
//! use hearsay::placement::NodeId;
//!
//! let config = FrameConfig::new(b"prod-eu").unwrap();
//! let keys = KeyRing::new([42; 32]).unwrap();
//!
//! let mut buf = Vec::new();
//! let mut w = FrameWriter::new(&mut buf, &config, NodeId(1), Some(&keys));
//! assert!(w.try_push(&Message::Ping(Ping { seq: 9, target: NodeId(2) })));
//! w.finish();
//!
//! // The receiver: same label, same key.
//! let frame = decode_frame(&mut buf, b"prod-eu", Some(&keys)).unwrap();
//! assert_eq!(frame.sender(), NodeId(1));
//! for msg in frame.messages() {
//!     match msg {
//!         Ok(Message::Ping(p)) => assert_eq!(p.seq, 9),
//!         Ok(other) => unreachable!("{other:?}"),
//!         Err(e) => panic!("count {} and drop the rest", e.reason()),
//!     }
//! }
//! ```
//!
//! # Frame layout
//!
//! | bytes | field | notes |
//! |---|---|---|
//! | 2 | magic `"HS"` | otherwise [`DecodeError::BadMagic`] |
//! | 1 | protocol version, `1` | otherwise [`DecodeError::BadVersion`] (counted apart) |
//! | 1 | flags | bit 0: sealed; any other bit: [`DecodeError::UnknownFlags`] |
//! | 1 | label length *L* | *L* ≤ [`MAX_LABEL_LEN`] (64) |
//! | *L* | cluster label | must equal the receiver's, else [`DecodeError::WrongCluster`] |
//! | 1–10 | sender [`NodeId`](crate::placement::NodeId) | varint; first byte of the body |
//! | 2 | message count *n* | `u16`, big-endian |
//! | … | *n* messages | each: type `u8`, body length varint, body |
//!
//! A sealed frame (flag bit 0) keeps the header (magic through label) in clear, as the
//! AEAD's associated data, and replaces the body with:
//!
//! | bytes | field | notes |
//! |---|---|---|
//! | 24 | nonce | 16-byte per-[`KeyRing`] random salt, then a 64-bit big-endian counter |
//! | body | ciphertext of the body | sender, count and messages, as above |
//! | 16 | Poly1305 tag | over header and ciphertext; a mismatch is [`DecodeError::Unauthenticated`] |
//!
//! The message count is a deviation from "messages until the end of the datagram", made so
//! that a frame cut short at a message boundary (an undersized receive buffer, for example)
//! is detected as [`DecodeError::Truncated`] instead of passing as a shorter frame; bytes
//! after the last counted message are [`DecodeError::TrailingBytes`]. Sealed frames need no
//! such help (the tag covers everything), but both kinds have the same body.
//!
//! # Field encodings
//!
//! - integers: LEB128 varints, shortest form only (a padded or overflowing varint is
//!   [`DecodeError::OverlongVarint`]); `u16`/`u32` fields are varints range-checked on
//!   decode ([`DecodeError::OutOfRange`]). Exceptions: hashes and ring positions are 8 bytes
//!   big-endian (they are uniformly random, so a varint would be longer), the port of an
//!   address and the message count are 2 bytes big-endian.
//! - byte strings: varint length, then the bytes; the length is checked against the field's
//!   limit ([`DecodeError::TooLong`]) and against the bytes left ([`DecodeError::Truncated`]).
//! - lists: varint count, then the items; the count is checked against the bytes left ÷
//!   the smallest item size ([`DecodeError::BadCount`]) before any item is read.
//! - socket address: tag `4` + 4 bytes or tag `6` + 16 bytes, then the port (2 bytes
//!   big-endian), no padding. An IPv6 address's flow info and scope id are **not** sent
//!   (they only mean something on the host that set them) and decode as 0.
//! - member state byte: bits 0–1 status (0 alive, 1 suspect, 2 dead, 3 left), bit 2
//!   drained, other bits must be 0 ([`DecodeError::BadStatus`]).
//!
//! # Messages
//!
//! | type | message | body fields, in order |
//! |---|---|---|
//! | `0x01` | [`Ping`] | seq, target |
//! | `0x02` | [`PingReq`] | seq, target, target address |
//! | `0x03` | [`Ack`] | seq |
//! | `0x04` | [`Nack`] | seq |
//! | `0x10` | [`Join`] | incarnation, address, metadata (≤ [`MAX_METADATA_LEN`]) |
//! | `0x11` | [`Leave`] | id, incarnation |
//! | `0x12` | [`MemberUpdate`] | id, address, incarnation, state byte, metadata version, metadata |
//! | `0x13` | [`Digest`] | round, part (`u16`), parts (`u16`), entries: (id, incarnation, state byte, metadata version)\* |
//! | `0x14` | [`StateRequest`] | round, ids\* |
//! | `0x15` | [`MemberSummary`] | round, reply (`u8`, 0 or 1), buckets: (count `u32`, hash 8 bytes)\* |
//! | `0x16` | [`StatePush`] | round |
//! | `0x20` | [`CrdtDelta`] | partition (`u16`), seq, key (≤ [`MAX_CRDT_KEY_LEN`]), kind `u8`, payload |
//! | `0x21` | [`CrdtDigest`] | partition (`u16`), keys (`u32`), hash (8 bytes), ranges: (start 8 bytes, hash 8 bytes)\* |
//! | `0x22` | [`CrdtAck`] | partition (`u16`), seq |
//! | `0x30` | [`Broadcast`] | origin, seq, payload |
//!
//! Anti-entropy state pieces are plain [`MemberUpdate`]s after a [`StatePush`] marker.
//!
//! # Forward compatibility
//!
//! A message of an unknown type is skipped by its length and handed to the caller as
//! [`Message::Unknown`] (type byte and raw body), so the caller counts it; the messages
//! after it are read as usual. A known message whose body is longer than the fields this
//! version reads is accepted and the extra bytes ignored, so later versions can append
//! fields. Anything else that changes the format takes a new protocol version.
//!
//! # Encryption
//!
//! A node that seals frames holds a [`KeyRing`]: up to [`MAX_KEYS`] keys, one of them the
//! primary. Frames are sealed with the primary and opened by trying the primary, then each
//! other key, so keys rotate with no downtime (see [`KeyRing`] for the steps, and for moving
//! a plaintext cluster to encryption with [`KeyRing::set_accept_plaintext`]).
//! [`Frame::encryption`] tells which key opened a frame.
//!
//! # Errors
//!
//! Every decoding failure is a [`DecodeError`]: counted under its
//! [`reason`](DecodeError::reason) and dropped, never fatal. An error from
//! [`decode_frame`] drops the datagram; an error from [`Frame::messages`] drops the rest of
//! it (the messages before it were good).
#![deny(unsafe_code)]

mod error;
mod frame;
mod keyring;
mod message;
mod wire;

#[cfg(test)]
mod testing;

pub use error::{ConfigError, DecodeError, EncodeError, KeyRingError, PushError};
pub use frame::{
    decode_frame, frame_overhead, Frame, FrameConfig, FrameWriter, Messages, DEFAULT_MAX_DATAGRAM,
    FLAG_ENCRYPTED, MAGIC, MAX_DATAGRAM, MAX_LABEL_LEN, MAX_MESSAGES, MIN_DATAGRAM, VERSION,
};
pub use keyring::{
    Encryption, KeyRing, SecretKey, KEY_LEN, MAX_KEYS, NONCE_LEN, SALT_LEN, SEAL_OVERHEAD, TAG_LEN,
};
pub use message::{
    kind, Ack, Broadcast, CrdtAck, CrdtDelta, CrdtDigest, CrdtRange, Digest, DigestEntries,
    DigestEntry, Join, Leave, List, ListItem, ListIter, MemberSummary, MemberUpdate, Message, Nack,
    Ping, PingReq, StatePush, StateRequest, Status, SummaryBucket, Unknown,
};

/// Longest member metadata ([`Join::metadata`], [`MemberUpdate::metadata`]), in bytes.
/// Metadata rides along with every state piece of a member, so it is kept small: tags, a
/// zone, a version string, not a configuration file.
pub const MAX_METADATA_LEN: usize = 1024;

/// Longest CRDT key ([`CrdtDelta::key`]), in bytes.
pub const MAX_CRDT_KEY_LEN: usize = 1024;

/// Longest payload ([`CrdtDelta::payload`], [`Broadcast::payload`]), in bytes: a datagram.
/// The frame size bounds it in practice; this bound is what a receiver enforces.
pub const MAX_PAYLOAD_LEN: usize = MAX_DATAGRAM;

/// Most items in one list (digest entries, ids, ranges). Every item takes at least one byte,
/// so no datagram holds more; a receiver enforces the tighter bound of bytes left ÷ the
/// smallest item size.
pub const MAX_LIST_LEN: usize = MAX_DATAGRAM;

//! The messages a frame carries, and their encodings.
//!
//! Each message is a record: type byte, body length (varint), body. The length lets a
//! receiver skip a type it does not know (a newer node's message) and read on; it also lets
//! a later version append fields to a known message, since a receiver reads the fields it
//! knows and ignores the rest of the body. Byte fields borrow from the datagram and lists are
//! walked in place ([`List`]), so decoding a message allocates nothing.

use std::fmt;
use std::net::SocketAddr;

use super::wire::{
    addr_len, bytes_len, get_addr, get_bytes, get_node_id, get_prefixed, get_u16v, get_u32v,
    get_u64_be, get_u8, get_varint, put_addr, put_bytes, put_varint, varint_len,
};
use super::{
    DecodeError, EncodeError, MAX_CRDT_KEY_LEN, MAX_LIST_LEN, MAX_METADATA_LEN, MAX_PAYLOAD_LEN,
};
use crate::placement::NodeId;

/// Message type bytes. Values not listed here are skipped by receivers
/// ([`Message::Unknown`]), so a new message type needs no new protocol version.
pub mod kind {
    /// [`Ping`](super::Ping).
    pub const PING: u8 = 0x01;
    /// [`PingReq`](super::PingReq).
    pub const PING_REQ: u8 = 0x02;
    /// [`Ack`](super::Ack).
    pub const ACK: u8 = 0x03;
    /// [`Nack`](super::Nack).
    pub const NACK: u8 = 0x04;
    /// [`Join`](super::Join).
    pub const JOIN: u8 = 0x10;
    /// [`Leave`](super::Leave).
    pub const LEAVE: u8 = 0x11;
    /// [`MemberUpdate`](super::MemberUpdate).
    pub const MEMBER: u8 = 0x12;
    /// [`Digest`](super::Digest).
    pub const DIGEST: u8 = 0x13;
    /// [`StateRequest`](super::StateRequest).
    pub const STATE_REQUEST: u8 = 0x14;
    /// [`MemberSummary`](super::MemberSummary).
    pub const MEMBER_SUMMARY: u8 = 0x15;
    /// [`StatePush`](super::StatePush).
    pub const STATE_PUSH: u8 = 0x16;
    /// [`CrdtDelta`](super::CrdtDelta).
    pub const CRDT_DELTA: u8 = 0x20;
    /// [`CrdtDigest`](super::CrdtDigest).
    pub const CRDT_DIGEST: u8 = 0x21;
    /// [`CrdtAck`](super::CrdtAck).
    pub const CRDT_ACK: u8 = 0x22;
    /// [`Broadcast`](super::Broadcast).
    pub const BROADCAST: u8 = 0x30;

    /// Whether this version decodes messages of type `kind`.
    pub fn is_known(kind: u8) -> bool {
        matches!(
            kind,
            PING | PING_REQ
                | ACK
                | NACK
                | JOIN
                | LEAVE
                | MEMBER
                | DIGEST
                | STATE_REQUEST
                | MEMBER_SUMMARY
                | STATE_PUSH
                | CRDT_DELTA
                | CRDT_DIGEST
                | CRDT_ACK
                | BROADCAST
        )
    }
}

/// A member's status as the membership protocol sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Answering probes.
    Alive = 0,
    /// Missed a probe; declared dead unless it refutes in time.
    Suspect = 1,
    /// Declared failed.
    Dead = 2,
    /// Left gracefully.
    Left = 3,
}

/// The status bits of a packed state byte.
const STATUS_MASK: u8 = 0b011;
/// The drained bit of a packed state byte.
const DRAINED_BIT: u8 = 0b100;

/// Pack a status and the drained flag into one byte: bits 0–1 status, bit 2 drained.
fn pack_state(status: Status, drained: bool) -> u8 {
    status as u8 | if drained { DRAINED_BIT } else { 0 }
}

/// Unpack a state byte; unknown bits are an error so that a later version can give them a
/// meaning without old nodes silently misreading them.
fn get_state(input: &mut &[u8]) -> Result<(Status, bool), DecodeError> {
    let b = get_u8(input)?;
    if b & !(STATUS_MASK | DRAINED_BIT) != 0 {
        return Err(DecodeError::BadStatus(b));
    }
    let status = match b & STATUS_MASK {
        0 => Status::Alive,
        1 => Status::Suspect,
        2 => Status::Dead,
        _ => Status::Left,
    };
    Ok((status, b & DRAINED_BIT != 0))
}

/// Refuse a byte field longer than its limit.
fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooLong { field, len, max });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Lists

/// An item of a [`List`]: a fixed-shape value with no borrowed data.
///
/// Implemented by [`NodeId`], [`DigestEntry`] and [`CrdtRange`].
pub trait ListItem: Copy + PartialEq + fmt::Debug {
    /// The fewest bytes one item takes on the wire. A list's count is checked against the
    /// bytes left ÷ this before any item is read, so a forged count costs nothing.
    const MIN_LEN: usize;
    /// Bytes this item takes on the wire.
    fn encoded_len(&self) -> usize;
    /// Append this item.
    fn encode(&self, out: &mut Vec<u8>);
    /// Read one item and advance `input` past it.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError>;
}

impl ListItem for NodeId {
    const MIN_LEN: usize = 1;
    fn encoded_len(&self) -> usize {
        varint_len(self.0)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.0);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        get_node_id(input)
    }
}

/// A list of items inside a message: either items the sender supplies (for encoding) or
/// items still in the datagram (after decoding), read one at a time by [`List::iter`].
///
/// Decoding checks the count against the bytes left, then reads every item once to validate
/// it and to find where the list ends; iterating decodes them again. This costs a second pass
/// over a few hundred bytes and saves allocating a `Vec` per list per datagram. Two lists are
/// equal when they hold equal items in the same order, whichever form they are in.
pub struct List<'a, T> {
    repr: Repr<'a, T>,
}

enum Repr<'a, T> {
    Items(&'a [T]),
    Wire { count: u32, bytes: &'a [u8] },
}

// Manual impls: a list is a pair of references and is `Copy` whatever `T` is.
impl<T> Clone for List<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for List<'_, T> {}
impl<T> Clone for Repr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Repr<'_, T> {}

impl<'a, T: ListItem> List<'a, T> {
    /// A list of the given items, for encoding.
    pub fn new(items: &'a [T]) -> Self {
        Self {
            repr: Repr::Items(items),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Items(items) => items.len(),
            Repr::Wire { count, .. } => count as usize,
        }
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items, in order. Never fails: decoding validated them.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter {
            repr: match self.repr {
                Repr::Items(items) => IterRepr::Items(items.iter()),
                Repr::Wire { count, bytes } => IterRepr::Wire { left: count, bytes },
            },
        }
    }

    fn encoded_len(&self) -> usize {
        varint_len(self.len() as u64)
            + match self.repr {
                Repr::Items(items) => items.iter().map(ListItem::encoded_len).sum(),
                Repr::Wire { bytes, .. } => bytes.len(),
            }
    }

    fn check(&self, field: &'static str) -> Result<(), EncodeError> {
        check_len(field, self.len(), MAX_LIST_LEN)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        match self.repr {
            Repr::Items(items) => items.iter().for_each(|i| i.encode(out)),
            Repr::Wire { bytes, .. } => out.extend_from_slice(bytes),
        }
    }

    fn decode(input: &mut &'a [u8], field: &'static str) -> Result<Self, DecodeError> {
        let count = get_varint(input)?;
        // Enough bytes for `count` items of the smallest size, or the count is a lie; this
        // bounds the validation loop below by the datagram, not by the count.
        if count > (input.len() / T::MIN_LEN) as u64 {
            return Err(DecodeError::BadCount { field, count });
        }
        let count = u32::try_from(count).map_err(|_| DecodeError::BadCount { field, count })?;
        let start = *input;
        for _ in 0..count {
            T::decode(input)?;
        }
        let bytes = &start[..start.len() - input.len()];
        Ok(Self {
            repr: Repr::Wire { count, bytes },
        })
    }
}

impl<'a, T: ListItem> From<&'a [T]> for List<'a, T> {
    fn from(items: &'a [T]) -> Self {
        Self::new(items)
    }
}

impl<T: ListItem> PartialEq for List<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: ListItem + Eq> Eq for List<'_, T> {}

impl<T: ListItem> fmt::Debug for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: ListItem> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: ListItem> IntoIterator for &List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

/// Iterator over the items of a [`List`].
#[derive(Clone, Debug)]
pub struct ListIter<'a, T> {
    repr: IterRepr<'a, T>,
}

#[derive(Clone, Debug)]
enum IterRepr<'a, T> {
    Items(std::slice::Iter<'a, T>),
    Wire { left: u32, bytes: &'a [u8] },
}

impl<T: ListItem> Iterator for ListIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            IterRepr::Items(items) => items.next().copied(),
            IterRepr::Wire { left, bytes } => {
                if *left == 0 {
                    return None;
                }
                match T::decode(bytes) {
                    Ok(item) => {
                        *left -= 1;
                        Some(item)
                    }
                    // Validated at decode time, so this does not happen; ending the list is
                    // the answer that cannot panic if it ever did.
                    Err(_) => {
                        *left = 0;
                        None
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.repr {
            IterRepr::Items(items) => items.len(),
            IterRepr::Wire { left, .. } => *left as usize,
        };
        (n, Some(n))
    }
}

impl<T: ListItem> ExactSizeIterator for ListIter<'_, T> {}

// ---------------------------------------------------------------------------------------------
// Message bodies

/// The encoding of one message body. Crate-private: callers go through [`Message`].
trait Body<'a>: Sized {
    /// The type byte.
    const KIND: u8;
    /// Bytes of the body alone.
    fn body_len(&self) -> usize;
    /// Append the body.
    fn put_body(&self, out: &mut Vec<u8>);
    /// Read the body's fields from the start of `input` (the body; extra bytes are ignored).
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError>;
    /// Refuse values a receiver would reject.
    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// Bytes of a record with a body of `body` bytes: type byte, length varint, body.
#[inline]
fn record_len(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

/// Direct probe: "are you alive?". Answered with an [`Ack`] carrying the same `seq`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Probe sequence number, echoed by the answer.
    pub seq: u64,
    /// The member the sender believes it is talking to; a restarted node with another id
    /// can tell the probe was not meant for it.
    pub target: NodeId,
}

impl Body<'_> for Ping {
    const KIND: u8 = kind::PING;
    fn body_len(&self) -> usize {
        varint_len(self.seq) + varint_len(self.target.0)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.seq);
        put_varint(out, self.target.0);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: get_varint(input)?,
            target: get_node_id(input)?,
        })
    }
}

/// Indirect probe: "ping `target` for me". The receiver pings the target and relays its
/// [`Ack`], or answers [`Nack`] when the target stays silent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PingReq {
    /// Sequence number of the requester's probe, echoed by the relayed answer.
    pub seq: u64,
    /// The member to probe.
    pub target: NodeId,
    /// Where to probe it.
    pub target_addr: SocketAddr,
}

impl Body<'_> for PingReq {
    const KIND: u8 = kind::PING_REQ;
    fn body_len(&self) -> usize {
        varint_len(self.seq) + varint_len(self.target.0) + addr_len(&self.target_addr)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.seq);
        put_varint(out, self.target.0);
        put_addr(out, &self.target_addr);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: get_varint(input)?,
            target: get_node_id(input)?,
            target_addr: get_addr(input)?,
        })
    }
}

/// Answer to a [`Ping`] (direct or relayed).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The probe's sequence number.
    pub seq: u64,
}

impl Body<'_> for Ack {
    const KIND: u8 = kind::ACK;
    fn body_len(&self) -> usize {
        varint_len(self.seq)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.seq);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: get_varint(input)?,
        })
    }
}

/// "I relayed your probe and the target did not answer": tells the requester that the
/// relay itself is healthy (Lifeguard), so its silence is not counted against it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The probe's sequence number.
    pub seq: u64,
}

impl Body<'_> for Nack {
    const KIND: u8 = kind::NACK;
    fn body_len(&self) -> usize {
        varint_len(self.seq)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.seq);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: get_varint(input)?,
        })
    }
}

/// A node (the frame's sender) asks to join through the receiver.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Join<'a> {
    /// The joiner's incarnation: higher than any it used before, so a rejoin after a reboot
    /// overrides what the cluster remembers of it.
    pub incarnation: u64,
    /// Where the joiner receives gossip.
    pub addr: SocketAddr,
    /// Application metadata, at most [`MAX_METADATA_LEN`] bytes.
    pub metadata: &'a [u8],
}

impl<'a> Body<'a> for Join<'a> {
    const KIND: u8 = kind::JOIN;
    fn body_len(&self) -> usize {
        varint_len(self.incarnation) + addr_len(&self.addr) + bytes_len(self.metadata)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.incarnation);
        put_addr(out, &self.addr);
        put_bytes(out, self.metadata);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            incarnation: get_varint(input)?,
            addr: get_addr(input)?,
            metadata: get_prefixed(input, MAX_METADATA_LEN, "metadata")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_len("metadata", self.metadata.len(), MAX_METADATA_LEN)
    }
}

/// A member leaves the cluster gracefully.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    /// The member leaving (not necessarily the sender: leaves are gossiped on).
    pub id: NodeId,
    /// Its incarnation when it left; a later rejoin uses a higher one.
    pub incarnation: u64,
}

impl Body<'_> for Leave {
    const KIND: u8 = kind::LEAVE;
    fn body_len(&self) -> usize {
        varint_len(self.id.0) + varint_len(self.incarnation)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.id.0);
        put_varint(out, self.incarnation);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            id: get_node_id(input)?,
            incarnation: get_varint(input)?,
        })
    }
}

/// What the sender believes about one member: gossiped rumours and anti-entropy state
/// pieces alike. Merged into the member table by (incarnation, status) precedence.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemberUpdate<'a> {
    /// The member.
    pub id: NodeId,
    /// Where it receives gossip.
    pub addr: SocketAddr,
    /// Its incarnation; only the member itself raises it (to refute a suspicion, or on
    /// rejoin).
    pub incarnation: u64,
    /// Its status.
    pub status: Status,
    /// Whether it is drained: alive and gossiping, but out of the hash ring.
    pub drained: bool,
    /// Version of its metadata, raised by the member on every change, so receivers keep the
    /// newest without comparing bytes.
    pub meta_version: u64,
    /// Application metadata, at most [`MAX_METADATA_LEN`] bytes.
    pub metadata: &'a [u8],
    /// Who first suspected the member, carried with suspicions so receivers can count
    /// independent accusers (Lifeguard's confirmations) rather than relays. An optional
    /// trailing field: written only when present, read when bytes remain in the body.
    pub accuser: Option<NodeId>,
}

impl<'a> Body<'a> for MemberUpdate<'a> {
    const KIND: u8 = kind::MEMBER;
    fn body_len(&self) -> usize {
        varint_len(self.id.0)
            + addr_len(&self.addr)
            + varint_len(self.incarnation)
            + 1
            + varint_len(self.meta_version)
            + bytes_len(self.metadata)
            + self.accuser.map_or(0, |a| varint_len(a.0))
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.id.0);
        put_addr(out, &self.addr);
        put_varint(out, self.incarnation);
        out.push(pack_state(self.status, self.drained));
        put_varint(out, self.meta_version);
        put_bytes(out, self.metadata);
        if let Some(a) = self.accuser {
            put_varint(out, a.0);
        }
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        let id = get_node_id(input)?;
        let addr = get_addr(input)?;
        let incarnation = get_varint(input)?;
        let (status, drained) = get_state(input)?;
        Ok(Self {
            id,
            addr,
            incarnation,
            status,
            drained,
            meta_version: get_varint(input)?,
            metadata: get_prefixed(input, MAX_METADATA_LEN, "metadata")?,
            accuser: if input.is_empty() {
                None
            } else {
                Some(get_node_id(input)?)
            },
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_len("metadata", self.metadata.len(), MAX_METADATA_LEN)
    }
}

/// One member in a [`Digest`]: enough to tell whether the receiver's view is older.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    /// The member.
    pub id: NodeId,
    /// Its incarnation in the sender's view.
    pub incarnation: u64,
    /// Its status in the sender's view.
    pub status: Status,
    /// Whether it is drained in the sender's view.
    pub drained: bool,
    /// Its metadata version in the sender's view.
    pub meta_version: u64,
}

impl ListItem for DigestEntry {
    /// id, incarnation, state byte and metadata version, each at least one byte.
    const MIN_LEN: usize = 4;
    fn encoded_len(&self) -> usize {
        varint_len(self.id.0) + varint_len(self.incarnation) + 1 + varint_len(self.meta_version)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.id.0);
        put_varint(out, self.incarnation);
        out.push(pack_state(self.status, self.drained));
        put_varint(out, self.meta_version);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let id = get_node_id(input)?;
        let incarnation = get_varint(input)?;
        let (status, drained) = get_state(input)?;
        Ok(Self {
            id,
            incarnation,
            status,
            drained,
            meta_version: get_varint(input)?,
        })
    }
}

/// The entries of a [`Digest`].
pub type DigestEntries<'a> = List<'a, DigestEntry>;

/// One MTU-sized piece of the sender's member table, for push-pull anti-entropy. The
/// receiver answers with [`MemberUpdate`]s for what it knows better and a [`StateRequest`]
/// for what the sender knows better.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Digest<'a> {
    /// The anti-entropy round this piece belongs to.
    pub round: u64,
    /// Index of this piece, `0..parts`.
    pub part: u16,
    /// Number of pieces in the round.
    pub parts: u16,
    /// The members of this piece.
    pub entries: DigestEntries<'a>,
}

impl<'a> Body<'a> for Digest<'a> {
    const KIND: u8 = kind::DIGEST;
    fn body_len(&self) -> usize {
        varint_len(self.round)
            + varint_len(u64::from(self.part))
            + varint_len(u64::from(self.parts))
            + self.entries.encoded_len()
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.round);
        put_varint(out, u64::from(self.part));
        put_varint(out, u64::from(self.parts));
        self.entries.encode(out);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            round: get_varint(input)?,
            part: get_u16v(input, "digest part")?,
            parts: get_u16v(input, "digest parts")?,
            entries: List::decode(input, "digest entries")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        self.entries.check("digest entries")
    }
}

/// "Send me your state for these members": the pull half of anti-entropy, answered with
/// [`MemberUpdate`]s.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StateRequest<'a> {
    /// The anti-entropy round the request answers.
    pub round: u64,
    /// The members wanted.
    pub ids: List<'a, NodeId>,
}

impl<'a> Body<'a> for StateRequest<'a> {
    const KIND: u8 = kind::STATE_REQUEST;
    fn body_len(&self) -> usize {
        varint_len(self.round) + self.ids.encoded_len()
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.round);
        self.ids.encode(out);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            round: get_varint(input)?,
            ids: List::decode(input, "state request ids")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        self.ids.check("state request ids")
    }
}

/// One bucket of a [`MemberSummary`]: how many live members the sender holds in it and a
/// hash of their states.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SummaryBucket {
    /// Live (alive or suspect) members in the bucket.
    pub count: u32,
    /// Order-independent hash of those members' (id, incarnation, state, metadata version).
    pub hash: u64,
}

impl ListItem for SummaryBucket {
    /// A one-byte count and the fixed 8-byte hash.
    const MIN_LEN: usize = 9;
    fn encoded_len(&self) -> usize {
        varint_len(u64::from(self.count)) + 8
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.count));
        out.extend_from_slice(&self.hash.to_be_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            count: get_u32v(input, "bucket count")?,
            hash: get_u64_be(input)?,
        })
    }
}

/// The opening of a push-pull anti-entropy round: the sender's live member table folded
/// into buckets by member id. The receiver compares bucket by bucket and sends a [`Digest`]
/// (or, for buckets the sender has empty, the [`MemberUpdate`]s themselves) only where the
/// hashes differ, so two nodes that agree exchange one small datagram each way.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemberSummary<'a> {
    /// The anti-entropy round.
    pub round: u64,
    /// Whether this summary answers one (the receiver then does not answer again).
    pub reply: bool,
    /// One entry per bucket; both sides use the same bucket count.
    pub buckets: List<'a, SummaryBucket>,
}

impl<'a> Body<'a> for MemberSummary<'a> {
    const KIND: u8 = kind::MEMBER_SUMMARY;
    fn body_len(&self) -> usize {
        varint_len(self.round) + 1 + self.buckets.encoded_len()
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.round);
        out.push(u8::from(self.reply));
        self.buckets.encode(out);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        let round = get_varint(input)?;
        let reply = match get_u8(input)? {
            0 => false,
            1 => true,
            _ => {
                return Err(DecodeError::OutOfRange {
                    field: "reply flag",
                })
            }
        };
        Ok(Self {
            round,
            reply,
            buckets: List::decode(input, "summary buckets")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        self.buckets.check("summary buckets")
    }
}

/// Marks the [`MemberUpdate`]s after it in the same frame as anti-entropy state (answers to
/// a summary, digest or state request) rather than rumours: the receiver merges them but
/// does not gossip members it learns this way as news, so a joiner catching up on a large
/// view does not make the whole cluster retransmit that view.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StatePush {
    /// The anti-entropy round the state answers.
    pub round: u64,
}

impl Body<'_> for StatePush {
    const KIND: u8 = kind::STATE_PUSH;
    fn body_len(&self) -> usize {
        varint_len(self.round)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.round);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            round: get_varint(input)?,
        })
    }
}

/// A delta of one CRDT value, routed to the partition that owns its key.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CrdtDelta<'a> {
    /// The key-space partition (merged by one shard thread).
    pub partition: u16,
    /// The sender's delta sequence number in this partition, acknowledged by [`CrdtAck`].
    pub seq: u64,
    /// The value's key, at most [`MAX_CRDT_KEY_LEN`] bytes.
    pub key: &'a [u8],
    /// The CRDT type (counter, set, register, map, …), as the CRDT layer numbers them.
    pub kind: u8,
    /// The encoded delta, at most [`MAX_PAYLOAD_LEN`] bytes (in practice: what fits).
    pub payload: &'a [u8],
}

impl<'a> Body<'a> for CrdtDelta<'a> {
    const KIND: u8 = kind::CRDT_DELTA;
    fn body_len(&self) -> usize {
        varint_len(u64::from(self.partition))
            + varint_len(self.seq)
            + bytes_len(self.key)
            + 1
            + bytes_len(self.payload)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.partition));
        put_varint(out, self.seq);
        put_bytes(out, self.key);
        out.push(self.kind);
        put_bytes(out, self.payload);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            partition: get_u16v(input, "partition")?,
            seq: get_varint(input)?,
            key: get_prefixed(input, MAX_CRDT_KEY_LEN, "crdt key")?,
            kind: get_u8(input)?,
            payload: get_prefixed(input, MAX_PAYLOAD_LEN, "payload")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_len("crdt key", self.key.len(), MAX_CRDT_KEY_LEN)?;
        check_len("payload", self.payload.len(), MAX_PAYLOAD_LEN)
    }
}

/// One range of a partition's key-hash space and the hash of its contents, in a
/// [`CrdtDigest`]: ranges whose hashes differ are the ones to repair.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct CrdtRange {
    /// Start of the range in key-hash space (the range ends where the next one starts).
    pub start: u64,
    /// Hash of the range's contents.
    pub hash: u64,
}

impl ListItem for CrdtRange {
    /// Two fixed 8-byte fields.
    const MIN_LEN: usize = 16;
    fn encoded_len(&self) -> usize {
        16
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.hash.to_be_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            start: get_u64_be(input)?,
            hash: get_u64_be(input)?,
        })
    }
}

/// Summary of one CRDT partition for anti-entropy: equal hashes mean nothing to repair;
/// otherwise the ranges narrow down where the difference is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CrdtDigest<'a> {
    /// The partition.
    pub partition: u16,
    /// Number of keys the sender holds in it.
    pub keys: u32,
    /// Hash of the whole partition's contents.
    pub hash: u64,
    /// Per-range hashes (may be empty when the whole-partition hash suffices).
    pub ranges: List<'a, CrdtRange>,
}

impl<'a> Body<'a> for CrdtDigest<'a> {
    const KIND: u8 = kind::CRDT_DIGEST;
    fn body_len(&self) -> usize {
        varint_len(u64::from(self.partition))
            + varint_len(u64::from(self.keys))
            + 8
            + self.ranges.encoded_len()
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.partition));
        put_varint(out, u64::from(self.keys));
        out.extend_from_slice(&self.hash.to_be_bytes());
        self.ranges.encode(out);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            partition: get_u16v(input, "partition")?,
            keys: get_u32v(input, "crdt keys")?,
            hash: get_u64_be(input)?,
            ranges: List::decode(input, "crdt ranges")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        self.ranges.check("crdt ranges")
    }
}

/// "I have merged your deltas of this partition up to `seq`."
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CrdtAck {
    /// The partition.
    pub partition: u16,
    /// Highest delta sequence number merged.
    pub seq: u64,
}

impl Body<'_> for CrdtAck {
    const KIND: u8 = kind::CRDT_ACK;
    fn body_len(&self) -> usize {
        varint_len(u64::from(self.partition)) + varint_len(self.seq)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.partition));
        put_varint(out, self.seq);
    }
    fn get_body(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            partition: get_u16v(input, "partition")?,
            seq: get_varint(input)?,
        })
    }
}

/// A user broadcast, disseminated by gossip to every member.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Broadcast<'a> {
    /// The member that originated it (not necessarily the sender).
    pub origin: NodeId,
    /// The origin's broadcast sequence number: (origin, seq) identifies the broadcast, so
    /// duplicates are dropped.
    pub seq: u64,
    /// The application's bytes, at most [`MAX_PAYLOAD_LEN`] (in practice: what fits).
    pub payload: &'a [u8],
}

impl<'a> Body<'a> for Broadcast<'a> {
    const KIND: u8 = kind::BROADCAST;
    fn body_len(&self) -> usize {
        varint_len(self.origin.0) + varint_len(self.seq) + bytes_len(self.payload)
    }
    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.origin.0);
        put_varint(out, self.seq);
        put_bytes(out, self.payload);
    }
    fn get_body(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            origin: get_node_id(input)?,
            seq: get_varint(input)?,
            payload: get_prefixed(input, MAX_PAYLOAD_LEN, "payload")?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_len("payload", self.payload.len(), MAX_PAYLOAD_LEN)
    }
}

/// A message of a type this version does not know, kept whole so the caller can count it
/// (by `kind`) and, if it relays frames, pass it on unchanged.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Unknown<'a> {
    /// The type byte; never one of [`kind`]'s known values.
    pub kind: u8,
    /// The undecoded body.
    pub body: &'a [u8],
}

impl Unknown<'_> {
    fn check(&self) -> Result<(), EncodeError> {
        if kind::is_known(self.kind) {
            return Err(EncodeError::KnownKind(self.kind));
        }
        check_len("unknown body", self.body.len(), MAX_PAYLOAD_LEN)
    }
}

// Every message type knows the bytes it takes in a frame before it is written.
macro_rules! impl_encoded_len {
    ($($ty:ident $(<$l:lifetime>)?),* $(,)?) => {$(
        impl$(<$l>)? $ty$(<$l>)? {
            /// Bytes this message takes in a frame: type byte, length varint and body.
            pub fn encoded_len(&self) -> usize {
                record_len(self.body_len())
            }
        }
    )*};
}
impl_encoded_len!(
    Ping,
    PingReq,
    Ack,
    Nack,
    Join<'a>,
    Leave,
    MemberUpdate<'a>,
    Digest<'a>,
    StateRequest<'a>,
    MemberSummary<'a>,
    StatePush,
    CrdtDelta<'a>,
    CrdtDigest<'a>,
    CrdtAck,
    Broadcast<'a>,
);

impl Unknown<'_> {
    /// Bytes this message takes in a frame: type byte, length varint and body.
    pub fn encoded_len(&self) -> usize {
        record_len(self.body.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Message

/// Any message a frame can carry. Byte fields and lists borrow from the datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// See [`Ping`].
    Ping(Ping),
    /// See [`PingReq`].
    PingReq(PingReq),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Join`].
    Join(Join<'a>),
    /// See [`Leave`].
    Leave(Leave),
    /// See [`MemberUpdate`].
    Member(MemberUpdate<'a>),
    /// See [`Digest`].
    Digest(Digest<'a>),
    /// See [`StateRequest`].
    StateRequest(StateRequest<'a>),
    /// See [`MemberSummary`].
    MemberSummary(MemberSummary<'a>),
    /// See [`StatePush`].
    StatePush(StatePush),
    /// See [`CrdtDelta`].
    CrdtDelta(CrdtDelta<'a>),
    /// See [`CrdtDigest`].
    CrdtDigest(CrdtDigest<'a>),
    /// See [`CrdtAck`].
    CrdtAck(CrdtAck),
    /// See [`Broadcast`].
    Broadcast(Broadcast<'a>),
    /// A message of a type this version does not know, skipped by its length. Callers count
    /// these (by [`Unknown::kind`]) and otherwise ignore them.
    Unknown(Unknown<'a>),
}

/// Run `$body` with `$m` bound to the struct inside any known variant; `$unknown` for
/// [`Message::Unknown`].
macro_rules! dispatch {
    ($msg:expr, $m:ident => $body:expr, $u:ident => $unknown:expr) => {
        match $msg {
            Message::Ping($m) => $body,
            Message::PingReq($m) => $body,
            Message::Ack($m) => $body,
            Message::Nack($m) => $body,
            Message::Join($m) => $body,
            Message::Leave($m) => $body,
            Message::Member($m) => $body,
            Message::Digest($m) => $body,
            Message::StateRequest($m) => $body,
            Message::MemberSummary($m) => $body,
            Message::StatePush($m) => $body,
            Message::CrdtDelta($m) => $body,
            Message::CrdtDigest($m) => $body,
            Message::CrdtAck($m) => $body,
            Message::Broadcast($m) => $body,
            Message::Unknown($u) => $unknown,
        }
    };
}

/// The type byte of a body type, named through a value so that [`dispatch`] can use it.
fn kind_of<'a, B: Body<'a>>(_: &B) -> u8 {
    B::KIND
}

impl<'a> Message<'a> {
    /// The type byte (see [`kind`]).
    pub fn kind(&self) -> u8 {
        dispatch!(self, m => kind_of(m), u => u.kind)
    }

    /// Bytes this message takes in a frame: type byte, length varint and body.
    pub fn encoded_len(&self) -> usize {
        dispatch!(self, m => m.encoded_len(), u => u.encoded_len())
    }

    /// Check the limits every receiver enforces (field lengths, list lengths, and that an
    /// [`Unknown`] does not use a known type byte).
    pub fn check(&self) -> Result<(), EncodeError> {
        dispatch!(self, m => m.check(), u => u.check())
    }

    /// Append this message to `out`: exactly [`encoded_len`](Self::encoded_len) bytes, or
    /// nothing if [`check`](Self::check) refuses it.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.check()?;
        self.encode_unchecked(out);
        Ok(())
    }

    /// Append this message without checking limits (the caller has).
    pub(crate) fn encode_unchecked(&self, out: &mut Vec<u8>) {
        fn record<'b, B: Body<'b>>(m: &B, out: &mut Vec<u8>) {
            out.push(B::KIND);
            put_varint(out, m.body_len() as u64);
            m.put_body(out);
        }
        dispatch!(self, m => record(m, out), u => {
            out.push(u.kind);
            put_bytes(out, u.body);
        });
    }

    /// Read one message from the start of `input` and advance `input` past it.
    ///
    /// A body longer than the fields this version reads is accepted and the rest skipped:
    /// that is how a later version appends fields to a message without a new type.
    pub fn decode(input: &mut &'a [u8]) -> Result<Self, DecodeError> {
        let kind = get_u8(input)?;
        let len = get_varint(input)?;
        // A length beyond the address space is beyond the datagram too.
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        let body = get_bytes(input, len)?;
        let b = &mut &*body;
        Ok(match kind {
            kind::PING => Self::Ping(Ping::get_body(b)?),
            kind::PING_REQ => Self::PingReq(PingReq::get_body(b)?),
            kind::ACK => Self::Ack(Ack::get_body(b)?),
            kind::NACK => Self::Nack(Nack::get_body(b)?),
            kind::JOIN => Self::Join(Join::get_body(b)?),
            kind::LEAVE => Self::Leave(Leave::get_body(b)?),
            kind::MEMBER => Self::Member(MemberUpdate::get_body(b)?),
            kind::DIGEST => Self::Digest(Digest::get_body(b)?),
            kind::STATE_REQUEST => Self::StateRequest(StateRequest::get_body(b)?),
            kind::MEMBER_SUMMARY => Self::MemberSummary(MemberSummary::get_body(b)?),
            kind::STATE_PUSH => Self::StatePush(StatePush::get_body(b)?),
            kind::CRDT_DELTA => Self::CrdtDelta(CrdtDelta::get_body(b)?),
            kind::CRDT_DIGEST => Self::CrdtDigest(CrdtDigest::get_body(b)?),
            kind::CRDT_ACK => Self::CrdtAck(CrdtAck::get_body(b)?),
            kind::BROADCAST => Self::Broadcast(Broadcast::get_body(b)?),
            kind => Self::Unknown(Unknown { kind, body }),
        })
    }
}

macro_rules! impl_from {
    ($($variant:ident($ty:ident $(<$l:lifetime>)?)),* $(,)?) => {$(
        impl<'a> From<$ty$(<$l>)?> for Message<'a> {
            fn from(m: $ty$(<$l>)?) -> Self {
                Self::$variant(m)
            }
        }
    )*};
}
impl_from!(
    Ping(Ping),
    PingReq(PingReq),
    Ack(Ack),
    Nack(Nack),
    Join(Join<'a>),
    Leave(Leave),
    Member(MemberUpdate<'a>),
    Digest(Digest<'a>),
    StateRequest(StateRequest<'a>),
    MemberSummary(MemberSummary<'a>),
    StatePush(StatePush),
    CrdtDelta(CrdtDelta<'a>),
    CrdtDigest(CrdtDigest<'a>),
    CrdtAck(CrdtAck),
    Broadcast(Broadcast<'a>),
    Unknown(Unknown<'a>),
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::{self, Owned};
    use proptest::prelude::*;

    fn encode(m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out).expect("valid message");
        out
    }

    /// decode(encode(m)) == m, the bytes written are exactly `encoded_len`, and decoding
    /// consumes exactly them.
    fn round_trip(owned: &Owned) -> Result<(), TestCaseError> {
        let m = owned.as_message();
        let bytes = encode(&m);
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let mut input = &bytes[..];
        let back = Message::decode(&mut input);
        prop_assert_eq!(back, Ok(m));
        prop_assert!(input.is_empty());
        // The struct's own encoded_len agrees with the enum's.
        let inner = dispatch!(&m, x => x.encoded_len(), u => u.encoded_len());
        prop_assert_eq!(inner, bytes.len());
        // A record cut anywhere is an error, never a shorter message.
        for cut in 0..bytes.len() {
            let mut input = &bytes[..cut];
            prop_assert!(Message::decode(&mut input).is_err(), "cut at {}", cut);
        }
        Ok(())
    }

    macro_rules! round_trips {
        ($($name:ident: $strategy:expr;)*) => {
            proptest! {
                $(
                    #[test]
                    fn $name(m in $strategy) {
                        round_trip(&m)?;
                    }
                )*
            }
        };
    }

    round_trips! {
        ping_round_trip: testing::ping();
        ping_req_round_trip: testing::ping_req();
        ack_round_trip: testing::ack();
        nack_round_trip: testing::nack();
        join_round_trip: testing::join();
        leave_round_trip: testing::leave();
        member_round_trip: testing::member();
        digest_round_trip: testing::digest();
        state_request_round_trip: testing::state_request();
        member_summary_round_trip: testing::member_summary();
        state_push_round_trip: testing::state_push();
        crdt_delta_round_trip: testing::crdt_delta();
        crdt_digest_round_trip: testing::crdt_digest();
        crdt_ack_round_trip: testing::crdt_ack();
        broadcast_round_trip: testing::broadcast();
        unknown_round_trip: testing::unknown();
    }

    proptest! {
        #[test]
        fn random_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut input = &bytes[..];
            if let Ok(m) = Message::decode(&mut input) {
                // Whatever decodes is within limits and re-encodes to something that decodes
                // to the same message.
                let again = encode(&m);
                prop_assert_eq!(Message::decode(&mut &again[..]), Ok(m));
            }
        }

        #[test]
        fn random_bodies_of_every_kind_never_panic(
            kind in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut record = vec![kind];
            put_bytes(&mut record, &body);
            let _ = Message::decode(&mut &record[..]);
        }
    }

    #[test]
    fn golden_bytes() {
        let ping = Message::Ping(Ping {
            seq: 300,
            target: NodeId(5),
        });
        assert_eq!(encode(&ping), [kind::PING, 3, 0xac, 0x02, 5]);

        let member = Message::Member(MemberUpdate {
            id: NodeId(1),
            addr: "10.0.0.1:7946".parse().unwrap(),
            incarnation: 2,
            status: Status::Suspect,
            drained: true,
            meta_version: 3,
            metadata: b"az",
            accuser: None,
        });
        assert_eq!(
            encode(&member),
            [
                kind::MEMBER,
                14,
                1, // id
                4,
                10,
                0,
                0,
                1,
                0x1f,
                0x0a,  // address
                2,     // incarnation
                0b101, // suspect, drained
                3,     // meta version
                2,
                b'a',
                b'z', // metadata
            ]
        );

        let ranges = [CrdtRange { start: 1, hash: 2 }];
        let digest = Message::CrdtDigest(CrdtDigest {
            partition: 300,
            keys: 1,
            hash: 0x0102_0304_0506_0708,
            ranges: List::new(&ranges),
        });
        let mut want = vec![
            kind::CRDT_DIGEST,
            28,
            0xac,
            0x02,
            1,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            1,
        ];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(encode(&digest), want);
    }

    #[test]
    fn unknown_types_are_skipped_by_length() {
        let mut bytes = Vec::new();
        Message::Unknown(Unknown {
            kind: 0xee,
            body: b"from the future",
        })
        .encode(&mut bytes)
        .unwrap();
        Message::Ack(Ack { seq: 1 }).encode(&mut bytes).unwrap();
        let mut input = &bytes[..];
        assert_eq!(
            Message::decode(&mut input),
            Ok(Message::Unknown(Unknown {
                kind: 0xee,
                body: b"from the future"
            }))
        );
        assert_eq!(
            Message::decode(&mut input),
            Ok(Message::Ack(Ack { seq: 1 }))
        );
        assert!(input.is_empty());
    }

    #[test]
    fn appended_fields_are_ignored() {
        // An Ack from a later version with one more field after seq.
        let mut input = &[kind::ACK, 3, 7, 0xff, 0x01][..];
        assert_eq!(
            Message::decode(&mut input),
            Ok(Message::Ack(Ack { seq: 7 }))
        );
        assert!(input.is_empty());
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let big = vec![0u8; MAX_METADATA_LEN + 1];
        let addr = "10.0.0.1:1".parse().unwrap();
        let join = Message::Join(Join {
            incarnation: 1,
            addr,
            metadata: &big,
        });
        assert_eq!(
            join.encode(&mut Vec::new()),
            Err(EncodeError::TooLong {
                field: "metadata",
                len: MAX_METADATA_LEN + 1,
                max: MAX_METADATA_LEN
            })
        );
        // The same message forged on the wire is refused before its bytes are read.
        let mut forged = Vec::new();
        join.encode_unchecked(&mut forged);
        assert_eq!(
            Message::decode(&mut &forged[..]),
            Err(DecodeError::TooLong {
                field: "metadata",
                len: (MAX_METADATA_LEN + 1) as u64,
                max: MAX_METADATA_LEN
            })
        );

        let key = vec![0u8; MAX_CRDT_KEY_LEN + 1];
        let delta = Message::CrdtDelta(CrdtDelta {
            partition: 0,
            seq: 0,
            key: &key,
            kind: 0,
            payload: b"",
        });
        assert!(matches!(
            delta.check(),
            Err(EncodeError::TooLong {
                field: "crdt key",
                ..
            })
        ));

        let known = Message::Unknown(Unknown {
            kind: kind::PING,
            body: b"",
        });
        assert_eq!(known.check(), Err(EncodeError::KnownKind(kind::PING)));
    }

    #[test]
    fn forged_list_counts_are_refused_before_reading() {
        // A StateRequest claiming a million ids in a few bytes.
        let mut body = Vec::new();
        put_varint(&mut body, 1); // round
        put_varint(&mut body, 1_000_000); // count
        body.extend_from_slice(&[1, 2, 3]);
        let mut record = vec![kind::STATE_REQUEST];
        put_bytes(&mut record, &body);
        assert_eq!(
            Message::decode(&mut &record[..]),
            Err(DecodeError::BadCount {
                field: "state request ids",
                count: 1_000_000
            })
        );
        // A count that fits the bytes but whose items do not decode.
        let mut body = Vec::new();
        put_varint(&mut body, 1);
        put_varint(&mut body, 2);
        body.extend_from_slice(&[0x80, 0x80]);
        let mut record = vec![kind::STATE_REQUEST];
        put_bytes(&mut record, &body);
        assert_eq!(
            Message::decode(&mut &record[..]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn bad_fields() {
        // Unknown bits in a state byte.
        let mut record = vec![kind::LEAVE];
        put_bytes(&mut record, &[1, 1]);
        assert!(Message::decode(&mut &record[..]).is_ok());
        let entry = |state: u8| {
            let mut body = vec![0, 0, 0]; // round, part, parts
            body.extend_from_slice(&[1, 1, 0, 0]); // count, id, incarnation
            body[6] = state;
            body.push(0); // meta version
            let mut record = vec![kind::DIGEST];
            put_bytes(&mut record, &body);
            record
        };
        assert!(Message::decode(&mut &entry(0b111)[..]).is_ok());
        assert_eq!(
            Message::decode(&mut &entry(0b1000)[..]),
            Err(DecodeError::BadStatus(0b1000))
        );
        // A u16 field above 65 535.
        let mut body = Vec::new();
        put_varint(&mut body, 65_536);
        put_varint(&mut body, 0);
        let mut record = vec![kind::CRDT_ACK];
        put_bytes(&mut record, &body);
        assert_eq!(
            Message::decode(&mut &record[..]),
            Err(DecodeError::OutOfRange { field: "partition" })
        );
        // A body length beyond the input.
        assert_eq!(
            Message::decode(&mut &[kind::ACK, 5, 1][..]),
            Err(DecodeError::Truncated)
        );
        // A bad address tag.
        let mut record = vec![kind::PING_REQ];
        put_bytes(&mut record, &[1, 1, 5, 0, 0]);
        assert_eq!(
            Message::decode(&mut &record[..]),
            Err(DecodeError::BadAddress(5))
        );
    }

    #[test]
    fn lists_compare_by_items_in_either_form() {
        let ids = [NodeId(1), NodeId(300), NodeId(u64::MAX)];
        let req = Message::StateRequest(StateRequest {
            round: 9,
            ids: List::new(&ids),
        });
        let bytes = encode(&req);
        let Ok(Message::StateRequest(back)) = Message::decode(&mut &bytes[..]) else {
            panic!("decodes");
        };
        assert_eq!(back.ids.len(), 3);
        assert_eq!(back.ids.iter().len(), 3);
        assert_eq!(back.ids.iter().collect::<Vec<_>>(), ids);
        assert_eq!(back.ids, List::new(&ids));
        assert_ne!(back.ids, List::new(&ids[..2]));
        assert_eq!(format!("{:?}", back.ids), format!("{ids:?}"));
        // A decoded list re-encodes to the same bytes.
        assert_eq!(encode(&Message::StateRequest(back)), bytes);
        let empty: List<'_, NodeId> = List::new(&[]);
        assert!(empty.is_empty());
    }

    #[test]
    fn kinds_are_consistent() {
        let addr = "[::1]:1".parse().unwrap();
        let all: Vec<Message<'_>> = vec![
            Ping {
                seq: 0,
                target: NodeId(0),
            }
            .into(),
            PingReq {
                seq: 0,
                target: NodeId(0),
                target_addr: addr,
            }
            .into(),
            Ack { seq: 0 }.into(),
            Nack { seq: 0 }.into(),
            Join {
                incarnation: 0,
                addr,
                metadata: b"",
            }
            .into(),
            Leave {
                id: NodeId(0),
                incarnation: 0,
            }
            .into(),
            MemberUpdate {
                id: NodeId(0),
                addr,
                incarnation: 0,
                status: Status::Alive,
                drained: false,
                meta_version: 0,
                metadata: b"",
                accuser: None,
            }
            .into(),
            Digest {
                round: 0,
                part: 0,
                parts: 1,
                entries: List::new(&[]),
            }
            .into(),
            StateRequest {
                round: 0,
                ids: List::new(&[]),
            }
            .into(),
            MemberSummary {
                round: 0,
                reply: false,
                buckets: List::new(&[]),
            }
            .into(),
            StatePush { round: 0 }.into(),
            CrdtDelta {
                partition: 0,
                seq: 0,
                key: b"",
                kind: 0,
                payload: b"",
            }
            .into(),
            CrdtDigest {
                partition: 0,
                keys: 0,
                hash: 0,
                ranges: List::new(&[]),
            }
            .into(),
            CrdtAck {
                partition: 0,
                seq: 0,
            }
            .into(),
            Broadcast {
                origin: NodeId(0),
                seq: 0,
                payload: b"",
            }
            .into(),
        ];
        let mut kinds: Vec<u8> = all.iter().map(Message::kind).collect();
        assert!(kinds.iter().all(|&k| kind::is_known(k)));
        for m in &all {
            assert_eq!(encode(m)[0], m.kind());
        }
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
        assert_eq!((0..=255).filter(|&k| kind::is_known(k)).count(), all.len());
    }
}

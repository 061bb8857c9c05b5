//! Proptest strategies for messages, shared by the message and frame tests.
//!
//! Messages borrow their byte fields, so strategies produce [`Owned`] values that own the
//! bytes, and tests borrow a [`Message`] from them with [`Owned::as_message`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::placement::NodeId;

/// A message that owns its bytes and lists.
#[derive(Clone, Debug)]
pub(crate) enum Owned {
    Ping(Ping),
    PingReq(PingReq),
    Ack(Ack),
    Nack(Nack),
    Join(u64, SocketAddr, Vec<u8>),
    Leave(Leave),
    Member(
        NodeId,
        SocketAddr,
        u64,
        Status,
        bool,
        u64,
        Vec<u8>,
        Option<NodeId>,
    ),
    Digest(u64, u16, u16, Vec<DigestEntry>),
    StateRequest(u64, Vec<NodeId>),
    MemberSummary(u64, bool, Vec<SummaryBucket>),
    StatePush(StatePush),
    CrdtDelta(u16, u64, Vec<u8>, u8, Vec<u8>),
    CrdtDigest(u16, u32, u64, Vec<CrdtRange>),
    CrdtAck(CrdtAck),
    Broadcast(NodeId, u64, Vec<u8>),
    Unknown(u8, Vec<u8>),
}

impl Owned {
    pub(crate) fn as_message(&self) -> Message<'_> {
        match self {
            Self::Ping(m) => Message::Ping(*m),
            Self::PingReq(m) => Message::PingReq(*m),
            Self::Ack(m) => Message::Ack(*m),
            Self::Nack(m) => Message::Nack(*m),
            Self::Join(incarnation, addr, metadata) => Message::Join(Join {
                incarnation: *incarnation,
                addr: *addr,
                metadata,
            }),
            Self::Leave(m) => Message::Leave(*m),
            Self::Member(
                id,
                addr,
                incarnation,
                status,
                drained,
                meta_version,
                metadata,
                accuser,
            ) => Message::Member(MemberUpdate {
                id: *id,
                addr: *addr,
                incarnation: *incarnation,
                status: *status,
                drained: *drained,
                meta_version: *meta_version,
                metadata,
                accuser: *accuser,
            }),
            Self::Digest(round, part, parts, entries) => Message::Digest(Digest {
                round: *round,
                part: *part,
                parts: *parts,
                entries: List::new(entries),
            }),
            Self::StateRequest(round, ids) => Message::StateRequest(StateRequest {
                round: *round,
                ids: List::new(ids),
            }),
            Self::MemberSummary(round, reply, buckets) => Message::MemberSummary(MemberSummary {
                round: *round,
                reply: *reply,
                buckets: List::new(buckets),
            }),
            Self::StatePush(m) => Message::StatePush(*m),
            Self::CrdtDelta(partition, seq, key, kind, payload) => Message::CrdtDelta(CrdtDelta {
                partition: *partition,
                seq: *seq,
                key,
                kind: *kind,
                payload,
            }),
            Self::CrdtDigest(partition, keys, hash, ranges) => Message::CrdtDigest(CrdtDigest {
                partition: *partition,
                keys: *keys,
                hash: *hash,
                ranges: List::new(ranges),
            }),
            Self::CrdtAck(m) => Message::CrdtAck(*m),
            Self::Broadcast(origin, seq, payload) => Message::Broadcast(Broadcast {
                origin: *origin,
                seq: *seq,
                payload,
            }),
            Self::Unknown(kind, body) => Message::Unknown(Unknown { kind: *kind, body }),
        }
    }
}

/// Integers of every encoded length: small ones (one-byte varints) are common on the wire,
/// large ones exercise the long encodings.
pub(crate) fn int() -> impl Strategy<Value = u64> {
    prop_oneof![0..200u64, any::<u64>(), Just(u64::MAX)]
}

pub(crate) fn node_id() -> impl Strategy<Value = NodeId> {
    int().prop_map(NodeId)
}

/// Addresses as they come back from the wire: IPv6 without flow info and scope id.
pub(crate) fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

pub(crate) fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Alive),
        Just(Status::Suspect),
        Just(Status::Dead),
        Just(Status::Left),
    ]
}

/// Byte strings up to `max`, mostly short.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..=16.min(max)),
        1 => vec(any::<u8>(), 0..=max),
    ]
}

pub(crate) fn ping() -> impl Strategy<Value = Owned> {
    (int(), node_id()).prop_map(|(seq, target)| Owned::Ping(Ping { seq, target }))
}

pub(crate) fn ping_req() -> impl Strategy<Value = Owned> {
    (int(), node_id(), addr()).prop_map(|(seq, target, target_addr)| {
        Owned::PingReq(PingReq {
            seq,
            target,
            target_addr,
        })
    })
}

pub(crate) fn ack() -> impl Strategy<Value = Owned> {
    int().prop_map(|seq| Owned::Ack(Ack { seq }))
}

pub(crate) fn nack() -> impl Strategy<Value = Owned> {
    int().prop_map(|seq| Owned::Nack(Nack { seq }))
}

pub(crate) fn join() -> impl Strategy<Value = Owned> {
    (int(), addr(), bytes(MAX_METADATA_LEN)).prop_map(|(i, a, m)| Owned::Join(i, a, m))
}

pub(crate) fn leave() -> impl Strategy<Value = Owned> {
    (node_id(), int()).prop_map(|(id, incarnation)| Owned::Leave(Leave { id, incarnation }))
}

pub(crate) fn member() -> impl Strategy<Value = Owned> {
    (
        node_id(),
        addr(),
        int(),
        status(),
        any::<bool>(),
        int(),
        bytes(MAX_METADATA_LEN),
        proptest::option::of(node_id()),
    )
        .prop_map(|(id, a, i, s, d, v, m, x)| Owned::Member(id, a, i, s, d, v, m, x))
}

pub(crate) fn digest_entry() -> impl Strategy<Value = DigestEntry> {
    (node_id(), int(), status(), any::<bool>(), int()).prop_map(
        |(id, incarnation, status, drained, meta_version)| DigestEntry {
            id,
            incarnation,
            status,
            drained,
            meta_version,
        },
    )
}

pub(crate) fn digest() -> impl Strategy<Value = Owned> {
    (
        int(),
        any::<u16>(),
        any::<u16>(),
        vec(digest_entry(), 0..40),
    )
        .prop_map(|(r, p, n, e)| Owned::Digest(r, p, n, e))
}

pub(crate) fn state_request() -> impl Strategy<Value = Owned> {
    (int(), vec(node_id(), 0..60)).prop_map(|(r, ids)| Owned::StateRequest(r, ids))
}

pub(crate) fn member_summary() -> impl Strategy<Value = Owned> {
    let bucket =
        (any::<u32>(), any::<u64>()).prop_map(|(count, hash)| SummaryBucket { count, hash });
    (int(), any::<bool>(), vec(bucket, 0..80)).prop_map(|(r, f, b)| Owned::MemberSummary(r, f, b))
}

pub(crate) fn state_push() -> impl Strategy<Value = Owned> {
    int().prop_map(|round| Owned::StatePush(StatePush { round }))
}

pub(crate) fn crdt_delta() -> impl Strategy<Value = Owned> {
    (
        any::<u16>(),
        int(),
        bytes(MAX_CRDT_KEY_LEN),
        any::<u8>(),
        bytes(2000),
    )
        .prop_map(|(p, s, k, t, d)| Owned::CrdtDelta(p, s, k, t, d))
}

pub(crate) fn crdt_range() -> impl Strategy<Value = CrdtRange> {
    (any::<u64>(), any::<u64>()).prop_map(|(start, hash)| CrdtRange { start, hash })
}

pub(crate) fn crdt_digest() -> impl Strategy<Value = Owned> {
    (
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        vec(crdt_range(), 0..20),
    )
        .prop_map(|(p, k, h, r)| Owned::CrdtDigest(p, k, h, r))
}

pub(crate) fn crdt_ack() -> impl Strategy<Value = Owned> {
    (any::<u16>(), int()).prop_map(|(partition, seq)| Owned::CrdtAck(CrdtAck { partition, seq }))
}

pub(crate) fn broadcast() -> impl Strategy<Value = Owned> {
    (node_id(), int(), bytes(2000)).prop_map(|(o, s, p)| Owned::Broadcast(o, s, p))
}

pub(crate) fn unknown() -> impl Strategy<Value = Owned> {
    (
        any::<u8>().prop_filter("an unknown type", |k| !kind::is_known(*k)),
        bytes(300),
    )
        .prop_map(|(k, b)| Owned::Unknown(k, b))
}

/// Any message, every type equally likely.
pub(crate) fn any_message() -> impl Strategy<Value = Owned> {
    prop_oneof![
        ping(),
        ping_req(),
        ack(),
        nack(),
        join(),
        leave(),
        member(),
        digest(),
        state_request(),
        member_summary(),
        state_push(),
        crdt_delta(),
        crdt_digest(),
        crdt_ack(),
        broadcast(),
        unknown(),
    ]
}

//! Decoding a frame allocates nothing, plain or sealed, and a writer reusing its buffer
//! allocates nothing after the first frame: a counting global allocator watches this thread.

use hearsay::codec::{
    decode_frame, CrdtRange, Digest, DigestEntry, FrameConfig, FrameWriter, KeyRing, List,
    MemberUpdate, Message, StateRequest, Status,
};
use hearsay::placement::NodeId;

mod common;
use common::allocations;

fn write(buf: &mut Vec<u8>, config: &FrameConfig, keys: Option<&KeyRing>, msgs: &[Message<'_>]) {
    buf.clear();
    let mut w = FrameWriter::new(buf, config, NodeId(42), keys);
    for m in msgs {
        assert!(w.try_push(m));
    }
    w.finish();
}

#[test]
fn decoding_and_rewriting_do_not_allocate() {
    let entries: Vec<DigestEntry> = (0..20)
        .map(|i| DigestEntry {
            id: NodeId(i * 1_000_003),
            incarnation: i,
            status: Status::Alive,
            drained: i % 3 == 0,
            meta_version: 1,
        })
        .collect();
    let ids: Vec<NodeId> = (0..30).map(NodeId).collect();
    let ranges = [CrdtRange { start: 1, hash: 2 }];
    let msgs = [
        Message::Digest(Digest {
            round: 1,
            part: 0,
            parts: 1,
            entries: List::new(&entries),
        }),
        Message::StateRequest(StateRequest {
            round: 1,
            ids: List::new(&ids),
        }),
        Message::Member(MemberUpdate {
            id: NodeId(7),
            addr: "[2001:db8::7]:7946".parse().unwrap(),
            incarnation: 3,
            status: Status::Suspect,
            drained: false,
            meta_version: 9,
            metadata: b"zone=eu-1",
            accuser: Some(NodeId(2)),
        }),
        Message::CrdtDigest(hearsay::codec::CrdtDigest {
            partition: 3,
            keys: 10,
            hash: 99,
            ranges: List::new(&ranges),
        }),
    ];
    let config = FrameConfig::new(b"prod").unwrap();
    let keys = KeyRing::with_salt([7; 32], [1; 16]);
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    for sealing in [None, Some(&keys)] {
        // Warm up: the first frame sizes the buffer.
        write(&mut buf, &config, sealing, &msgs);
        scratch.clone_from(&buf);

        let before = allocations();
        let mut acc = 0u64;
        for _ in 0..100 {
            write(&mut buf, &config, sealing, &msgs);
            scratch.copy_from_slice(&buf);
            let frame = decode_frame(&mut scratch, b"prod", sealing).unwrap();
            for m in frame.messages() {
                match m.unwrap() {
                    Message::Digest(d) => acc += d.entries.iter().map(|e| e.id.0).sum::<u64>(),
                    Message::StateRequest(r) => acc += r.ids.iter().map(|i| i.0).sum::<u64>(),
                    Message::CrdtDigest(d) => acc += d.ranges.iter().map(|r| r.hash).sum::<u64>(),
                    Message::Member(m) => acc += m.metadata.len() as u64,
                    _ => unreachable!(),
                }
            }
        }
        assert_eq!(allocations() - before, 0, "sealed: {}", sealing.is_some());
        std::hint::black_box(acc);
    }
}

//! Decoding a frame allocates nothing, plain or sealed, and a writer reusing its buffer
//! allocates nothing after the first frame: a counting global allocator watches this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hearsay::codec::{
    decode_frame, CrdtRange, Digest, DigestEntry, FrameConfig, FrameWriter, KeyRing, List,
    MemberUpdate, Message, StateRequest, Status,
};
use hearsay::placement::NodeId;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is a const-initialised thread-local Cell, which never
// allocates itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

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

//! `lookup` never allocates: a counting global allocator watches this thread while every
//! scheme answers lookups through the router.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hearsay::placement::{Key, Node, Router, Scheme};

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

#[test]
fn lookups_do_not_allocate() {
    let members: Vec<Node> = (0..300).map(|i| Node::new(i, format!("n{i}"))).collect();
    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    for scheme in Scheme::all() {
        let router = Router::new(scheme, 1, &members).unwrap();
        let mut out = Vec::with_capacity(8);
        // Warm up: the first replica call sizes this thread's scratch buffer.
        router.load().replicas("warm", 3, &mut out);
        let before = allocations();
        let mut acc = 0u64;
        for (i, k) in keys.iter().enumerate() {
            acc ^= router.lookup(k).0;
            acc ^= router.lookup(i as u64).0;
            acc ^= router.load().lookup(Key::from(k)).id.0;
            router.load().replicas(k, 3, &mut out);
        }
        assert_eq!(allocations() - before, 0, "{scheme} allocated on lookup");
        std::hint::black_box(acc);
    }
}

//! `lookup` never allocates: a counting global allocator watches this thread while every
//! scheme answers lookups through the router.

use hearsay::placement::{Key, Node, Router, Scheme};

mod common;
use common::allocations;

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

//! The embeddable engine on real loopback sockets: three engines find each other through a
//! seed, agree on placement, replicate a CRDT write, and drain one node out of placement.

use std::time::{Duration, Instant};

use hearsay::crdt::{Kind, Op};
use hearsay::engine::Engine;
use hearsay::node::Preset;
use hearsay::runtime::BackendChoice;

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn start(seed: Option<String>) -> Engine {
    let mut b = Engine::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .cluster("engine-test")
        .preset(Preset::Local)
        .backend(BackendChoice::Portable);
    if let Some(s) = seed {
        b = b.seed(s);
    }
    b.start().unwrap()
}

#[test]
fn engines_join_agree_replicate_and_drain() {
    let a = start(None);
    let seed = a.local().unwrap().addr.to_string();
    let b = start(Some(seed.clone()));
    let c = start(Some(seed));
    let all = [&a, &b, &c];
    wait(
        "three live members everywhere",
        Duration::from_secs(20),
        || {
            all.iter()
                .all(|e| e.members().iter().filter(|m| m.is_live()).count() == 3)
        },
    );
    wait("identical placement", Duration::from_secs(20), || {
        all.iter().all(|e| e.router().load().nodes().len() == 3)
            && (0..100u64).all(|k| a.lookup(k) == b.lookup(k) && b.lookup(k) == c.lookup(k))
    });

    let users = c.subscribe_prefix(b"user/", 64);
    a.update(b"user/ann", Kind::LwwRegister, Op::Write(b"x".to_vec()))
        .unwrap();
    c.update(b"user/bob", Kind::LwwRegister, Op::Write(b"y".to_vec()))
        .unwrap();
    a.update(b"hits", Kind::GCounter, Op::Incr(5)).unwrap();
    b.update(b"hits", Kind::GCounter, Op::Incr(2)).unwrap();
    wait("the counter to replicate", Duration::from_secs(20), || {
        all.iter()
            .all(|e| e.get(b"hits").unwrap().and_then(|v| v.counter()) == Some(7))
    });
    assert!(b
        .update(b"hits", Kind::AWSet, Op::Add(b"x".to_vec()))
        .is_err());
    // The prefix subscriber saw its own write and the replicated one, nothing else.
    let mut watched = std::collections::BTreeSet::new();
    wait("both user/ changes at c", Duration::from_secs(20), || {
        while let Some(e) = users.try_recv() {
            match e {
                hearsay::node::Event::CrdtChanged(k) => watched.insert(k),
                other => panic!("prefix subscriber got {other:?}"),
            };
        }
        watched.len() == 2
    });
    assert!(
        watched.iter().all(|k| k.starts_with(b"user/")),
        "{watched:?}"
    );

    let events = a.subscribe(1024);
    let c_id = c.local().unwrap().id;
    c.drain().unwrap();
    wait(
        "the drained node to leave placement",
        Duration::from_secs(20),
        || {
            all.iter().all(|e| {
                let snap = e.router().load();
                snap.nodes().len() == 2 && snap.nodes().iter().all(|n| n.id != c_id)
            })
        },
    );
    assert_eq!(a.members().iter().filter(|m| m.is_live()).count(), 3);
    let mut saw_drain = false;
    while let Some(e) = events.try_recv() {
        saw_drain |= e == hearsay::node::Event::Drained(c_id);
    }
    assert!(saw_drain);
    // Timers run on the runtime: probing goes on by itself.
    wait("probes", Duration::from_secs(20), || {
        a.stats().unwrap().probes > 3
    });
    c.leave(Duration::from_secs(5)).unwrap();
    b.shutdown().unwrap();
    a.shutdown().unwrap();
}

#[test]
fn a_bad_config_is_a_typed_error_naming_the_field() {
    let e = Engine::builder().start().unwrap_err().to_string();
    assert!(e.contains("bind"), "{e}");
    let e = Engine::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .cluster([b'x'; 65])
        .start()
        .unwrap_err()
        .to_string();
    assert!(e.contains("label") || e.contains("cluster"), "{e}");
    let e = Engine::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .seed("no-such-host.invalid:7946")
        .start()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-host"), "{e}");
}

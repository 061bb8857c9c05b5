//! Laws and semantics for every kind: random operation sequences on three replicas check
//! that join is a semilattice and that deltas reproduce full states; hostile bytes check
//! that decoding never panics and accepts only canonical encodings.

use proptest::prelude::*;
use proptest::sample::Index as Pick;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::*;

/// Replica ids: one of them takes a two-byte varint.
const IDS: [ReplicaId; 3] = [1, 2, 300];

fn actors() -> [Actor; 3] {
    IDS.map(|id| Actor { id, lamport: 0 })
}

fn update(key: &[u8], kind: Kind, op: Op) -> Op {
    Op::Update {
        key: key.to_vec(),
        kind,
        op: Box::new(op),
    }
}

fn bytes(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn joined(a: &Value, b: &Value) -> Value {
    let mut x = a.clone();
    let changed = x.join(b).expect("same kind");
    assert_eq!(
        changed,
        &x != a,
        "join reports whether it changed the value"
    );
    x
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

/// Invariants every reachable value keeps, and a round trip through the encoding.
fn check_value(v: &Value) {
    match v {
        Value::AWSet(s) => assert!(s.index_is_exact(), "set index out of step: {v:?}"),
        Value::ORMap(m) => assert!(m.index_is_exact(), "map index out of step: {v:?}"),
        _ => {}
    }
    if let Some(ctx) = v.context() {
        assert!(ctx.is_compact());
    }
    let bytes = encoded(v);
    assert_eq!(bytes.len(), v.encoded_len(), "encoded_len of {v:?}");
    // Decoding also re-checks that every dot is in the context, once, and the context is
    // compact.
    let back = Value::decode(v.kind(), &bytes).unwrap_or_else(|e| panic!("{e}: {v:?}"));
    assert_eq!(&back, v);
    assert_eq!(back.state_hash(), v.state_hash());
}

// ---------------------------------------------------------------------------------------
// Random runs

fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(bytes(&["a", "b", "c", ""]))
}

fn op_for(kind: Kind, depth: usize) -> BoxedStrategy<Op> {
    match kind {
        Kind::GCounter => (0u64..5).prop_map(Op::Incr).boxed(),
        Kind::PNCounter => {
            prop_oneof![(0u64..5).prop_map(Op::Incr), (0u64..5).prop_map(Op::Decr)].boxed()
        }
        Kind::AWSet => prop_oneof![
            2 => small_bytes().prop_map(Op::Add),
            1 => small_bytes().prop_map(Op::Remove)
        ]
        .boxed(),
        Kind::MVRegister => small_bytes().prop_map(Op::Assign).boxed(),
        Kind::LwwRegister => small_bytes().prop_map(Op::Write).boxed(),
        Kind::EWFlag => prop_oneof![Just(Op::Enable), Just(Op::Disable)].boxed(),
        Kind::ORMap => {
            let kinds: Vec<Kind> = Kind::ALL
                .into_iter()
                .filter(|&k| k != Kind::ORMap || depth < 2)
                .collect();
            let key = prop::sample::select(bytes(&["k", "l"]));
            let upd = (key.clone(), prop::sample::select(kinds)).prop_flat_map(move |(k, kind)| {
                op_for(kind, depth + 1).prop_map(move |op| update(&k, kind, op))
            });
            prop_oneof![3 => upd, 1 => key.prop_map(Op::RemoveKey)].boxed()
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Apply(usize, Op),
    /// Join one replica's full state into another's.
    Sync(usize, usize),
    /// Join one of the deltas made so far into a replica (out of order, maybe again).
    Deliver(Pick, usize),
}

fn steps(kind: Kind) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        5 => (0usize..3, op_for(kind, 0)).prop_map(|(i, op)| Step::Apply(i, op)),
        1 => (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Sync(a, b)),
        2 => (any::<Pick>(), 0usize..3).prop_map(|(p, i)| Step::Deliver(p, i)),
    ];
    prop::collection::vec(step, 0..40)
}

/// Run `steps` on three replicas; return their states and every delta made.
fn run(kind: Kind, steps: &[Step]) -> ([Value; 3], Vec<Value>) {
    let mut actors = actors();
    let mut states = [Value::new(kind), Value::new(kind), Value::new(kind)];
    let mut deltas: Vec<Value> = Vec::new();
    for step in steps {
        match step {
            Step::Apply(i, op) => {
                let before = states[*i].clone();
                let delta = states[*i].apply(&mut actors[*i], op).expect("valid op");
                assert_eq!(delta.kind(), kind);
                // The delta-mutator law: m(X) = X ⊔ mδ(X).
                assert_eq!(joined(&before, &delta), states[*i], "delta of {op:?}");
                deltas.push(delta);
            }
            Step::Sync(from, to) => {
                let s = states[*from].clone();
                states[*to].join(&s).expect("same kind");
                actors[*to].lamport = actors[*to].lamport.max(s.max_lamport());
            }
            Step::Deliver(pick, to) => {
                if !deltas.is_empty() {
                    let d = deltas[pick.index(deltas.len())].clone();
                    states[*to].join(&d).expect("same kind");
                }
            }
        }
    }
    (states, deltas)
}

fn check_laws(kind: Kind, steps: &[Step], seed: u64) {
    let (states, deltas) = run(kind, steps);
    for v in states.iter().chain(&deltas) {
        check_value(v);
    }
    let [a, b, c] = &states;
    // Commutative, with equal hashes for the equal results.
    for (x, y) in [(a, b), (b, c), (a, c)] {
        let xy = joined(x, y);
        let yx = joined(y, x);
        assert_eq!(xy, yx);
        assert_eq!(xy.state_hash(), yx.state_hash());
        check_value(&xy);
    }
    // Associative.
    let full = joined(&joined(a, b), c);
    assert_eq!(full, joined(a, &joined(b, c)));
    // Idempotent.
    for x in [a, b, c, &full] {
        let mut y = x.clone();
        assert_eq!(y.join(x), Ok(false));
        assert_eq!(&y, x);
    }
    // Every delta, in any order, some twice, joined into bottom: the full join.
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut shuffled: Vec<&Value> = deltas.iter().chain(deltas.iter().step_by(3)).collect();
    shuffled.shuffle(&mut rng);
    let mut from_deltas = Value::new(kind);
    for d in &shuffled {
        from_deltas.join(d).expect("same kind");
    }
    assert_eq!(from_deltas, full);
    assert_eq!(from_deltas.state_hash(), full.state_hash());
    // Deltas joined into groups first (as a sender batches them), then the groups.
    let mut groups = [Value::new(kind), Value::new(kind)];
    for (i, d) in shuffled.iter().enumerate() {
        groups[i % 2].join(d).expect("same kind");
    }
    for g in &groups {
        check_value(g);
    }
    assert_eq!(joined(&groups[0], &groups[1]), full);
    // And into a replica's state, which has some of them already.
    let mut into_a = a.clone();
    for d in shuffled.iter().rev() {
        into_a.join(d).expect("same kind");
    }
    assert_eq!(into_a, full);
}

// ---------------------------------------------------------------------------------------
// Hostile bytes

/// Decoding arbitrary bytes never panics; whatever decodes re-encodes to exactly those
/// bytes (only canonical encodings are accepted) and is safe to use.
fn check_hostile(kind: Kind, bytes: &[u8]) {
    let Ok(v) = Value::decode(kind, bytes) else {
        return;
    };
    assert_eq!(encoded(&v), bytes, "non-canonical encoding accepted: {v:?}");
    assert_eq!(v.encoded_len(), bytes.len());
    check_value(&v);
    // A hostile but valid value joins and takes operations like any other.
    let mut actors = actors();
    let mut mine = Value::new(kind);
    for op in sample_ops(kind) {
        let _ = mine.apply(&mut actors[0], &op);
    }
    let mut theirs = v.clone();
    let _ = theirs.join(&mine);
    let _ = mine.join(&v);
    for op in sample_ops(kind) {
        let _ = theirs.apply(&mut actors[1], &op);
    }
    check_value(&theirs);
}

fn sample_ops(kind: Kind) -> Vec<Op> {
    match kind {
        Kind::GCounter => vec![Op::Incr(2)],
        Kind::PNCounter => vec![Op::Incr(2), Op::Decr(1)],
        Kind::AWSet => vec![Op::Add(vec![]), Op::Add(vec![1]), Op::Remove(vec![])],
        Kind::MVRegister => vec![Op::Assign(vec![0])],
        Kind::LwwRegister => vec![Op::Write(vec![0])],
        Kind::EWFlag => vec![Op::Enable, Op::Disable, Op::Enable],
        Kind::ORMap => vec![
            update(b"", Kind::EWFlag, Op::Enable),
            update(b"", Kind::GCounter, Op::Incr(1)),
            Op::RemoveKey(vec![0]),
        ],
    }
}

/// A valid encoding of each kind, with some content, to mutate.
fn sample_encoding(kind: Kind) -> Vec<u8> {
    let mut actors = actors();
    let mut states = [Value::new(kind), Value::new(kind)];
    for (i, op) in sample_ops(kind).into_iter().enumerate() {
        let _ = states[i % 2].apply(&mut actors[i % 2], &op);
    }
    let [a, b] = states;
    encoded(&joined(&a, &b))
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn gcounter_laws(steps in steps(Kind::GCounter), seed: u64) {
        check_laws(Kind::GCounter, &steps, seed);
    }

    #[test]
    fn pncounter_laws(steps in steps(Kind::PNCounter), seed: u64) {
        check_laws(Kind::PNCounter, &steps, seed);
    }

    #[test]
    fn awset_laws(steps in steps(Kind::AWSet), seed: u64) {
        check_laws(Kind::AWSet, &steps, seed);
    }

    #[test]
    fn mvregister_laws(steps in steps(Kind::MVRegister), seed: u64) {
        check_laws(Kind::MVRegister, &steps, seed);
    }

    #[test]
    fn lwwregister_laws(steps in steps(Kind::LwwRegister), seed: u64) {
        check_laws(Kind::LwwRegister, &steps, seed);
    }

    #[test]
    fn ewflag_laws(steps in steps(Kind::EWFlag), seed: u64) {
        check_laws(Kind::EWFlag, &steps, seed);
    }

    #[test]
    fn ormap_laws(steps in steps(Kind::ORMap), seed: u64) {
        check_laws(Kind::ORMap, &steps, seed);
    }

    #[test]
    fn random_bytes_never_panic(kind in kind(), bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        check_hostile(kind, &bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        kind in kind(),
        edits in prop::collection::vec((any::<Pick>(), any::<u8>(), 0u8..4), 1..4),
    ) {
        let mut bytes = sample_encoding(kind);
        for (at, b, how) in edits {
            let i = at.index(bytes.len() + 1);
            match how {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                2 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.truncate(i),
            }
        }
        check_hostile(kind, &bytes);
    }
}

// ---------------------------------------------------------------------------------------
// Limits

#[test]
fn huge_counts_are_refused_before_allocating() {
    // The first list of every body (counter entries, a context's vector, register writes)
    // claims u64::MAX items in nine bytes.
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    for kind in Kind::ALL {
        let err = Value::decode(kind, &huge).unwrap_err();
        assert!(
            matches!(
                err,
                CrdtError::TooLarge {
                    len: u64::MAX,
                    max: 0,
                    ..
                }
            ),
            "{kind:?}: {err}"
        );
    }
    // A set with an empty context claiming 10 elements in 12 bytes: 4 bytes is the least
    // an element takes, so at most 3 fit.
    let mut body = vec![0, 0, 10];
    body.extend([0; 12]);
    assert_eq!(
        Value::decode(Kind::AWSet, &body),
        Err(CrdtError::TooLarge {
            what: "set elements",
            len: 10,
            max: 3
        })
    );
}

/// A top-level map holding `depth` maps in all (itself included), the innermost holding an
/// enabled flag, all at key "" with dot (1, 1).
fn nested_maps(depth: usize) -> Vec<u8> {
    let mut out = vec![1, 1, 1, 0]; // context: vv {1: 1}, empty cloud
    for level in 1..=depth {
        out.extend([1, 0, 1]); // one key "", one field
        out.push(
            if level == depth {
                Kind::EWFlag
            } else {
                Kind::ORMap
            }
            .as_u8(),
        );
    }
    out.extend([1, 1, 1]); // the flag's dot set {(1, 1)}
    out
}

#[test]
fn nesting_is_limited_on_the_wire_and_in_operations() {
    let v = Value::decode(Kind::ORMap, &nested_maps(MAX_DEPTH)).expect("8 maps deep");
    check_value(&v);
    assert_eq!(
        Value::decode(Kind::ORMap, &nested_maps(MAX_DEPTH + 1)),
        Err(CrdtError::TooDeep)
    );
    let nest = |maps: usize| {
        let mut op = update(b"", Kind::EWFlag, Op::Enable);
        for _ in 1..maps {
            op = update(b"", Kind::ORMap, op);
        }
        op
    };
    let mut actor = Actor { id: 1, lamport: 0 };
    let mut m = Value::new(Kind::ORMap);
    let delta = m.apply(&mut actor, &nest(MAX_DEPTH)).expect("8 maps deep");
    assert_eq!(encoded(&delta), nested_maps(MAX_DEPTH)[..].to_vec());
    let before = m.clone();
    assert_eq!(
        m.apply(&mut actor, &nest(MAX_DEPTH + 1)),
        Err(CrdtError::TooDeep)
    );
    assert_eq!(m, before);
}

#[test]
fn wrong_ops_and_oversized_arguments_change_nothing() {
    let mut actor = Actor { id: 1, lamport: 0 };
    let mut c = Value::new(Kind::GCounter);
    assert_eq!(
        c.apply(&mut actor, &Op::Decr(1)),
        Err(CrdtError::WrongOp {
            kind: Kind::GCounter,
            op: "Decr"
        })
    );
    let mut m = Value::new(Kind::ORMap);
    assert_eq!(
        m.apply(&mut actor, &update(b"k", Kind::AWSet, Op::Enable)),
        Err(CrdtError::WrongOp {
            kind: Kind::AWSet,
            op: "Enable"
        })
    );
    let big = vec![0; MAX_ELEMENT_LEN + 1];
    let mut s = Value::new(Kind::AWSet);
    assert!(matches!(
        s.apply(&mut actor, &Op::Add(big.clone())),
        Err(CrdtError::TooLarge {
            what: "element",
            ..
        })
    ));
    assert!(matches!(
        m.apply(&mut actor, &update(&big, Kind::EWFlag, Op::Enable)),
        Err(CrdtError::TooLarge {
            what: "map key",
            ..
        })
    ));
    assert!(s
        .apply(&mut actor, &Op::Add(vec![0; MAX_ELEMENT_LEN]))
        .is_ok());
    assert!(c.is_bottom() && m.is_bottom());
    assert_eq!(
        c.join(&s),
        Err(CrdtError::KindMismatch {
            expected: Kind::GCounter,
            found: Kind::AWSet
        })
    );
    assert_eq!(actor.lamport, 0);
}

#[test]
fn kinds_round_trip_their_bytes() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_u8(k.as_u8()), Some(k));
        assert_eq!(Kind::try_from(k.as_u8()), Ok(k));
        assert!(Value::new(k).is_bottom());
        assert_eq!(Value::new(k).kind(), k);
    }
    assert_eq!(Kind::from_u8(0), None);
    assert_eq!(Kind::try_from(8), Err(CrdtError::UnknownKind(8)));
}

// ---------------------------------------------------------------------------------------
// Semantics

/// Three replicas and a way to exchange deltas between them.
struct Cluster {
    actors: [Actor; 3],
    states: [Value; 3],
}

impl Cluster {
    fn new(kind: Kind) -> Self {
        Self {
            actors: actors(),
            states: [Value::new(kind), Value::new(kind), Value::new(kind)],
        }
    }

    /// Apply on replica `i`; return the delta (not yet sent anywhere).
    fn op(&mut self, i: usize, op: Op) -> Value {
        self.states[i]
            .apply(&mut self.actors[i], &op)
            .expect("valid op")
    }

    fn deliver(&mut self, i: usize, delta: &Value) {
        self.states[i].join(delta).expect("same kind");
        let l = self.states[i].max_lamport();
        self.actors[i].lamport = self.actors[i].lamport.max(l);
    }

    /// Everyone sends everyone its full state.
    fn sync(&mut self) {
        let all = self.states.clone();
        for i in 0..3 {
            for s in &all {
                self.deliver(i, s);
            }
        }
        assert!(self.states.iter().all(|s| s == &self.states[0]));
    }
}

fn strs(v: Option<Vec<&[u8]>>) -> Vec<String> {
    v.expect("right kind")
        .into_iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

#[test]
fn set_add_wins_over_a_concurrent_remove() {
    let mut c = Cluster::new(Kind::AWSet);
    let add = c.op(0, Op::Add(b"x".to_vec()));
    c.deliver(1, &add);
    let remove = c.op(1, Op::Remove(b"x".to_vec()));
    let re_add = c.op(0, Op::Add(b"x".to_vec()));
    c.deliver(0, &remove);
    c.deliver(1, &re_add);
    c.sync();
    assert_eq!(strs(c.states[0].elements()), ["x"]);
}

#[test]
fn set_remove_removes_what_it_observed_for_good() {
    let mut c = Cluster::new(Kind::AWSet);
    let add_x = c.op(0, Op::Add(b"x".to_vec()));
    let add_y = c.op(0, Op::Add(b"y".to_vec()));
    c.deliver(1, &add_x);
    let remove = c.op(1, Op::Remove(b"x".to_vec()));
    // The remover has not seen y; a remove of something it never saw does nothing.
    let remove_y = c.op(1, Op::Remove(b"y".to_vec()));
    assert!(remove_y.is_bottom());
    c.deliver(0, &remove);
    // A late duplicate of the add does not bring x back, on either side.
    c.deliver(1, &add_x);
    c.deliver(0, &add_x);
    c.deliver(1, &add_y);
    c.sync();
    assert_eq!(strs(c.states[2].elements()), ["y"]);
    // No tombstones: the removed element left only its dot, folded into the vector.
    let ctx = c.states[2].context().unwrap();
    assert_eq!(ctx.version_vector().collect::<Vec<_>>(), [(1, 2)]);
    assert_eq!(ctx.cloud().count(), 0);
}

#[test]
fn set_state_stays_small_after_churn() {
    let mut c = Cluster::new(Kind::AWSet);
    for round in 0..200u32 {
        let i = (round % 3) as usize;
        let e = (round % 7).to_le_bytes().to_vec();
        let d = c.op(i, Op::Add(e.clone()));
        c.deliver((i + 1) % 3, &d);
        let d = c.op((i + 1) % 3, Op::Remove(e));
        c.deliver(i, &d);
    }
    c.sync();
    assert!(c.states[0].elements().unwrap().is_empty());
    // Three version-vector entries, nothing else: 2 + 3·(1–2 + 2) + 1 + 1 bytes.
    assert!(
        c.states[0].encoded_len() <= 16,
        "{}",
        c.states[0].encoded_len()
    );
}

#[test]
fn mv_register_keeps_concurrent_values_until_overwritten() {
    let mut c = Cluster::new(Kind::MVRegister);
    let a = c.op(0, Op::Assign(b"1".to_vec()));
    let b = c.op(1, Op::Assign(b"2".to_vec()));
    c.deliver(0, &b);
    c.deliver(1, &a);
    assert_eq!(strs(c.states[0].values()), ["1", "2"]);
    assert_eq!(c.states[0], c.states[1]);
    let resolve = c.op(1, Op::Assign(b"3".to_vec()));
    c.deliver(0, &resolve);
    c.deliver(2, &a);
    c.deliver(2, &resolve);
    c.deliver(2, &b);
    assert_eq!(strs(c.states[2].values()), ["3"]);
    c.sync();
    assert_eq!(strs(c.states[0].values()), ["3"]);
}

#[test]
fn lww_higher_lamport_wins_then_higher_replica() {
    // Concurrent writes at the same Lamport time: the higher replica id wins.
    let mut c = Cluster::new(Kind::LwwRegister);
    let a = c.op(0, Op::Write(b"from-1".to_vec()));
    let b = c.op(1, Op::Write(b"from-2".to_vec()));
    c.deliver(0, &b);
    c.deliver(1, &a);
    assert_eq!(strs(c.states[0].values()), ["from-2"]);
    assert_eq!(c.states[0], c.states[1]);
    // A replica whose clock is ahead wins over one that writes later in real time.
    let mut c = Cluster::new(Kind::LwwRegister);
    c.actors[0].lamport = 10;
    let ahead = c.op(0, Op::Write(b"ahead".to_vec()));
    let behind = c.op(2, Op::Write(b"behind".to_vec()));
    c.deliver(2, &ahead);
    c.deliver(0, &behind);
    assert_eq!(strs(c.states[2].values()), ["ahead"]);
    // Once it has seen the winner, a replica's next write beats it.
    let next = c.op(2, Op::Write(b"next".to_vec()));
    assert_eq!(c.actors[2].lamport, 12);
    c.deliver(0, &next);
    assert_eq!(strs(c.states[0].values()), ["next"]);
    c.sync();
    assert!(strs(c.states[1].values()) == ["next"]);
}

#[test]
fn flag_enable_wins_over_a_concurrent_disable() {
    let mut c = Cluster::new(Kind::EWFlag);
    let on = c.op(0, Op::Enable);
    c.deliver(1, &on);
    let off = c.op(1, Op::Disable);
    let on_again = c.op(0, Op::Enable);
    c.deliver(0, &off);
    assert_eq!(c.states[0].flag(), Some(true));
    c.deliver(1, &on_again);
    c.sync();
    assert_eq!(c.states[2].flag(), Some(true));
    // A disable that has seen every enable turns it off.
    let off = c.op(2, Op::Disable);
    c.deliver(0, &off);
    c.deliver(1, &off);
    assert!(c.states.iter().all(|s| s.flag() == Some(false)));
}

#[test]
fn counters_sum_every_replica_and_keep_departed_ones() {
    let mut c = Cluster::new(Kind::PNCounter);
    let d: Vec<Value> = vec![
        c.op(0, Op::Incr(10)),
        c.op(1, Op::Incr(5)),
        c.op(1, Op::Decr(7)),
        c.op(2, Op::Decr(1)),
    ];
    // Replica 2 leaves after its deltas reached replica 0 only.
    c.deliver(0, &d[3]);
    c.deliver(0, &d[1]);
    c.deliver(0, &d[2]);
    assert_eq!(c.states[0].counter(), Some(7));
    c.deliver(1, &c.states[0].clone());
    assert_eq!(c.states[1].counter(), Some(7));
    // Duplicates change nothing.
    assert_eq!(c.states[1].join(&d[0]), Ok(false));
}

#[test]
fn map_nested_counters_from_two_replicas_sum() {
    let mut c = Cluster::new(Kind::ORMap);
    let a = c.op(0, update(b"hits", Kind::GCounter, Op::Incr(3)));
    let b = c.op(1, update(b"hits", Kind::GCounter, Op::Incr(4)));
    let b2 = c.op(1, update(b"hits", Kind::GCounter, Op::Incr(1)));
    c.deliver(0, &b2);
    c.deliver(0, &b);
    c.deliver(1, &a);
    for s in &c.states[..2] {
        let entries = s.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, b"hits");
        assert_eq!(entries[0].1.counter(), Some(8));
    }
    assert_eq!(c.states[0], c.states[1]);
}

/// The documented choice: an update concurrent with a `RemoveKey` survives it, and the key
/// comes back with what the update wrote and nothing the remover had seen.
#[test]
fn map_remove_key_concurrent_with_update_keeps_the_update() {
    let mut c = Cluster::new(Kind::ORMap);
    let setup = [
        c.op(0, update(b"k", Kind::AWSet, Op::Add(b"old".to_vec()))),
        c.op(0, update(b"k", Kind::GCounter, Op::Incr(5))),
        c.op(
            0,
            update(b"k", Kind::LwwRegister, Op::Write(b"v1".to_vec())),
        ),
    ];
    for d in &setup {
        c.deliver(1, d);
    }
    let remove = c.op(0, Op::RemoveKey(b"k".to_vec()));
    let add = c.op(1, update(b"k", Kind::AWSet, Op::Add(b"new".to_vec())));
    let incr = c.op(1, update(b"k", Kind::GCounter, Op::Incr(2)));
    c.deliver(0, &add);
    c.deliver(0, &incr);
    c.deliver(1, &remove);
    assert_eq!(c.states[0], c.states[1]);
    let m = &c.states[0];
    let Value::ORMap(map) = m else { unreachable!() };
    assert_eq!(
        strs(map.get(b"k", Kind::AWSet).unwrap().elements()),
        ["new"]
    );
    // Replica 0's 5 was observed by the remove; replica 1's concurrent 2 survives.
    assert_eq!(map.get(b"k", Kind::GCounter).unwrap().counter(), Some(2));
    // The register's write was observed and not rewritten: gone.
    assert_eq!(map.get(b"k", Kind::LwwRegister), None);
    // A remove that has seen everything removes the key for good.
    let remove = c.op(1, Op::RemoveKey(b"k".to_vec()));
    c.deliver(0, &remove);
    c.deliver(0, &incr);
    assert_eq!(c.states[0].entries().unwrap().len(), 0);
}

#[test]
fn map_keys_are_typed() {
    let mut c = Cluster::new(Kind::ORMap);
    let a = c.op(0, update(b"k", Kind::GCounter, Op::Incr(1)));
    let b = c.op(1, update(b"k", Kind::EWFlag, Op::Enable));
    c.deliver(0, &b);
    c.deliver(1, &a);
    let entries = c.states[0].entries().unwrap();
    let kinds: Vec<Kind> = entries.iter().map(|(_, v)| v.kind()).collect();
    assert_eq!(kinds, [Kind::GCounter, Kind::EWFlag]);
    assert_eq!(c.states[0], c.states[1]);
}

#[test]
fn nested_maps_merge_and_report_their_lamport_times() {
    let mut c = Cluster::new(Kind::ORMap);
    c.actors[1].lamport = 40;
    let inner =
        |key: &[u8], op: Op| update(b"user:7", Kind::ORMap, update(key, Kind::LwwRegister, op));
    let a = c.op(0, inner(b"name", Op::Write(b"ann".to_vec())));
    let b = c.op(1, inner(b"mail", Op::Write(b"a@x".to_vec())));
    assert_eq!(b.max_lamport(), 41);
    c.deliver(0, &b);
    c.deliver(1, &a);
    assert_eq!(c.states[0], c.states[1]);
    assert_eq!(c.actors[0].lamport, 41);
    let entries = c.states[0].entries().unwrap();
    let nested = entries[0].1.entries().unwrap();
    let keys: Vec<&[u8]> = nested.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, [&b"mail"[..], b"name"]);
    assert_eq!(strs(nested[1].1.values()), ["ann"]);
}

#[test]
fn deltas_are_small() {
    let mut actors = actors();
    let mut s = Value::new(Kind::AWSet);
    for i in 0..1000u32 {
        s.apply(&mut actors[0], &Op::Add(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    let delta = s.apply(&mut actors[0], &Op::Add(b"new".to_vec())).unwrap();
    // Context: no vector entry, one cloud dot (1, 1001); one element with that dot.
    assert_eq!(delta.encoded_len(), 1 + 1 + 3 + 1 + 4 + 1 + 3);
    assert!(s.encoded_len() > 1000 * 7);
    let mut m = Value::new(Kind::ORMap);
    for i in 0..1000u32 {
        m.apply(
            &mut actors[0],
            &update(&i.to_be_bytes(), Kind::PNCounter, Op::Incr(1)),
        )
        .unwrap();
    }
    let delta = m
        .apply(&mut actors[0], &update(b"k", Kind::PNCounter, Op::Decr(1)))
        .unwrap();
    assert!(delta.encoded_len() < 20, "{}", delta.encoded_len());
}

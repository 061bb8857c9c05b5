//! Codec benchmarks: encode and decode throughput of whole frames, plain and sealed
//! (XChaCha20-Poly1305 with a one-key `KeyRing`), and the cost of rejecting garbage.
//!
//! Groups (see `bench/README.md`):
//! - `encode/<frame>/<mode>`: `FrameWriter::new`, a `push` per message, `finish` (which seals
//!   in `sealed` mode) into a reused buffer.
//! - `decode/<frame>/<mode>`: `decode_frame` (which opens in place in `sealed` mode) and a
//!   walk over every message (and every digest entry), on a fresh copy of the frame.
//!   `<frame>` also takes the garbage inputs, which must be rejected.
//!
//! Frames: `ack` (one Ack), `member-updates` (as many member updates as fill 1400 bytes),
//! `digest` (one digest whose entries fill 1400 bytes). `Throughput::Bytes` is the frame's
//! length on the wire, so criterion prints bytes per second; time per frame is the reported
//! time.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use hearsay::codec::{decode_frame, Ack, FrameConfig, FrameWriter, KeyRing, Message};
use hearsay_bench::frames::{
    digest_entries, encode, fill, garbage_after_header, key_ring, largest_digest, member_updates,
    LABEL, SEED, SENDER,
};
use hearsay_bench::sys::random_bytes;

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// Datagram size of the garbage inputs: a full default frame.
const GARBAGE_LEN: usize = 1400;

/// Whether a mode seals, and its name in benchmark ids.
const MODES: [(&str, bool); 2] = [("plain", false), ("sealed", true)];

/// The messages of the frame `name` for the given keys (the sealed frames hold fewer
/// member updates or digest entries: the seal takes 40 bytes).
fn frame_messages<'a>(
    name: &str,
    config: &FrameConfig,
    keys: Option<&KeyRing>,
    updates: &'a [Message<'a>],
    entries: &'a [hearsay::codec::DigestEntry],
) -> Vec<Message<'a>> {
    match name {
        "ack" => vec![Message::Ack(Ack { seq: 48_213 })],
        "member-updates" => updates[..fill(config, keys, updates)].to_vec(),
        "digest" => vec![largest_digest(config, keys, entries)],
        _ => unreachable!("unknown frame {name}"),
    }
}

/// Reads every message the way a receiver does: each decoded message, and each entry of a
/// digest (lists are validated at decode and read again when iterated). Returns false if
/// any message failed to decode.
#[inline]
fn consume(frame: hearsay::codec::Frame<'_>) -> bool {
    let mut ok = true;
    for m in frame.messages() {
        match m {
            Ok(Message::Digest(d)) => {
                for e in d.entries.iter() {
                    black_box(e);
                }
            }
            Ok(m) => {
                black_box(m);
            }
            Err(e) => {
                black_box(e);
                ok = false;
            }
        }
    }
    ok
}

fn bench_decode(g: &mut Group<'_>, name: &str, mode: &str, frame: &[u8], keys: Option<&KeyRing>) {
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function(BenchmarkId::new(name, mode), |b| {
        // Decoding a sealed frame opens it in place, so every iteration gets a fresh copy;
        // the copy is made outside the timed region.
        b.iter_batched_ref(
            || frame.to_vec(),
            |buf| match decode_frame(black_box(buf), LABEL, keys) {
                Ok(f) => consume(f),
                Err(e) => {
                    black_box(e);
                    false
                }
            },
            BatchSize::SmallInput,
        );
    });
}

fn codec(c: &mut Criterion) {
    let config = FrameConfig::new(LABEL).expect("label fits");
    let ring = key_ring();
    let updates: Vec<Message<'_>> = member_updates(200, SEED)
        .into_iter()
        .map(Message::Member)
        .collect();
    let entries = digest_entries(300, SEED);

    let mut encode_group = c.benchmark_group("encode");
    let mut frames = Vec::new();
    for name in ["ack", "member-updates", "digest"] {
        for (mode, sealed) in MODES {
            let keys = sealed.then_some(&ring);
            let msgs = frame_messages(name, &config, keys, &updates, &entries);
            let mut frame = Vec::new();
            let len = encode(&mut frame, &config, keys, &msgs);
            let what = match msgs.as_slice() {
                [Message::Digest(d)] => format!("1 digest of {} entries", d.entries.len()),
                [Message::Ack(_)] => "1 ack".to_owned(),
                m => format!("{} member updates", m.len()),
            };
            println!("{name}/{mode}: a {len}-byte frame of {what}");
            encode_group.throughput(Throughput::Bytes(len as u64));
            encode_group.bench_function(BenchmarkId::new(name, mode), |b| {
                let mut buf = Vec::with_capacity(config.max_datagram());
                b.iter(|| {
                    buf.clear();
                    let mut w = FrameWriter::new(&mut buf, &config, SENDER, keys);
                    for m in black_box(&msgs) {
                        black_box(w.try_push(m));
                    }
                    black_box(w.finish())
                });
            });
            frames.push((name, mode, keys, frame));
        }
    }
    encode_group.finish();

    let mut decode_group = c.benchmark_group("decode");
    for (name, mode, keys, frame) in &frames {
        // Check once, outside the measurement, that the frame decodes cleanly.
        assert!(
            consume(decode_frame(&mut frame.clone(), LABEL, *keys).expect("decodes")),
            "{name}/{mode} decodes cleanly"
        );
        bench_decode(&mut decode_group, name, mode, frame, *keys);
    }
    // Garbage: random bytes (rejected at the magic, whatever the keys), and a valid header
    // followed by random bytes (plain: fails in the messages; sealed: fails authentication
    // after the full Poly1305 pass).
    let random = random_bytes(GARBAGE_LEN, SEED);
    for (mode, sealed) in MODES {
        let keys = sealed.then_some(&ring);
        assert!(decode_frame(&mut random.clone(), LABEL, keys).is_err());
        bench_decode(&mut decode_group, "garbage-random", mode, &random, keys);
        let after_header = garbage_after_header(sealed, GARBAGE_LEN, SEED);
        let rejected = match decode_frame(&mut after_header.clone(), LABEL, keys) {
            Err(_) => true,
            Ok(f) => !consume(f),
        };
        assert!(rejected, "garbage-header/{mode} must be rejected");
        bench_decode(
            &mut decode_group,
            "garbage-header",
            mode,
            &after_header,
            keys,
        );
    }
    decode_group.finish();
}

// `criterion_group!` expands to an undocumented `pub fn`; keep it out of the crate root.
#[allow(missing_docs)]
mod entry {
    use super::{codec, Criterion};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        // Frames encode and decode in nanoseconds to microseconds: short, tight loops whose
        // estimates settle quickly (about a minute for the 16 benchmarks).
        config = Criterion::default()
            .warm_up_time(std::time::Duration::from_millis(500))
            .measurement_time(std::time::Duration::from_secs(2));
        targets = codec
    }
}
criterion_main!(entry::benches);

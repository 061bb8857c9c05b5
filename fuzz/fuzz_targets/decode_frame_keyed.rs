//! Frames at a node with a key ring (two keys: a primary and an older one).
//!
//! Input: one mode byte, then the datagram. Mode bit 0: the ring accepts plaintext. Mode bit
//! 1: a valid plaintext header is put in front of the rest (see `decode_frame.rs`). Random
//! bytes almost never authenticate, so besides hammering the header, policy and
//! authentication paths, every plaintext frame the ring accepts is sealed again with the ring
//! and must open to the same messages: the fuzzer drives the sealed round trip with its own
//! message mixes.
#![no_main]

use hearsay::codec::{decode_frame, Encryption, FrameConfig, FrameWriter, KeyRing, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

const LABEL: &[u8] = b"fz";
const HEADER: &[u8] = b"HS\x01\x00\x02fz";
const OLD_KEY: [u8; 32] = [0x11; 32];
const PRIMARY_KEY: [u8; 32] = [0x22; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut keys = KeyRing::with_salt(OLD_KEY, [0x33; 16]);
    keys.install(PRIMARY_KEY).expect("room for two keys");
    keys.set_primary(PRIMARY_KEY).expect("installed");
    keys.set_accept_plaintext(mode & 1 != 0);

    let mut buf = Vec::with_capacity(HEADER.len() + rest.len());
    if mode & 2 != 0 {
        buf.extend_from_slice(HEADER);
    }
    buf.extend_from_slice(rest);

    let Ok(frame) = decode_frame(&mut buf, LABEL, Some(&keys)) else {
        return;
    };
    let msgs: Vec<_> = frame.messages().map_while(Result::ok).collect();
    if frame.encryption() != Encryption::Plaintext {
        return;
    }

    let config = FrameConfig::new(LABEL)
        .and_then(|c| c.with_max_datagram(MAX_DATAGRAM))
        .expect("valid config");
    let mut sealed = Vec::new();
    let mut w = FrameWriter::new(&mut sealed, &config, frame.sender(), Some(&keys));
    for m in &msgs {
        // Fuzz inputs are far below 64 KiB, so everything that decoded fits.
        assert!(w.try_push(m), "{m:?} did not fit");
    }
    w.finish();
    let back = decode_frame(&mut sealed, LABEL, Some(&keys)).expect("own sealed frame opens");
    assert_eq!(back.encryption(), Encryption::PrimaryKey);
    assert_eq!(back.sender(), frame.sender());
    let again: Vec<_> = back
        .messages()
        .collect::<Result<_, _>>()
        .expect("own frame decodes");
    assert_eq!(again, msgs);
});

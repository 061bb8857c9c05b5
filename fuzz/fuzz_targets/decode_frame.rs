//! Plaintext frames: any datagram decodes to an error or to a frame whose messages decode to
//! an error or to messages that re-encode to exactly `encoded_len` bytes and decode back to
//! themselves. Never a panic, never an allocation the datagram does not justify (ASan and
//! libFuzzer's `-rss_limit_mb`/`-malloc_limit_mb` catch those).
//!
//! Input: one mode byte, then the datagram. Mode bit 0 set puts a valid header in front of
//! the rest, so the fuzzer spends its time in the body and message decoders from the first
//! run instead of first having to guess the magic and the label; clear, the input is the
//! whole datagram and the header checks are fuzzed too.
#![no_main]

use hearsay::codec::{decode_frame, Message};
use libfuzzer_sys::fuzz_target;

const LABEL: &[u8] = b"fz";
/// Magic, version 1, no flags, label.
const HEADER: &[u8] = b"HS\x01\x00\x02fz";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = Vec::with_capacity(HEADER.len() + rest.len());
    if mode & 1 != 0 {
        buf.extend_from_slice(HEADER);
    }
    buf.extend_from_slice(rest);

    let Ok(frame) = decode_frame(&mut buf, LABEL, None) else {
        return;
    };
    let mut out = Vec::new();
    for msg in frame.messages() {
        let Ok(msg) = msg else { break };
        out.clear();
        msg.encode(&mut out)
            .expect("a decoded message is within the limits encoding checks");
        assert_eq!(out.len(), msg.encoded_len());
        let mut input = &out[..];
        assert_eq!(Message::decode(&mut input), Ok(msg));
        assert!(input.is_empty());
    }
});

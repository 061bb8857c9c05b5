//! Frames: the header, the writer that packs messages into one datagram, and the decoder.

use super::keyring::{Encryption, KeyRing, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use super::message::Message;
use super::wire::{
    get_array, get_bytes, get_node_id, get_u8, get_varint, put_varint, MAX_VARINT_LEN,
};
use super::{ConfigError, DecodeError, PushError};
use crate::placement::NodeId;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"HS";
/// The protocol version this code speaks. Frames of any other version are refused with
/// [`DecodeError::BadVersion`].
pub const VERSION: u8 = 1;
/// Flags bit 0: the body is sealed (nonce, ciphertext, tag).
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Longest cluster label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Default datagram size: an Ethernet MTU of 1500 less IPv6 and UDP headers (48) and a
/// margin for tunnels and VPN encapsulation, so frames are not fragmented on common paths.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;
/// Largest UDP payload over IPv4: 65 535 − 20 (IP header) − 8 (UDP header).
pub const MAX_DATAGRAM: usize = 65_507;
/// Smallest datagram size a writer accepts: room for the largest header, the largest
/// sender id, the message count and the seal overhead (5 + 64 + 10 + 2 + 40 = 121), rounded.
pub const MIN_DATAGRAM: usize = 128;
/// Most messages in one frame: the count is a `u16`.
pub const MAX_MESSAGES: usize = u16::MAX as usize;

/// Bytes of the fixed part of the header: magic, version, flags, label length.
const FIXED_HEADER_LEN: usize = 5;
/// Bytes of the message count.
const COUNT_LEN: usize = 2;

/// How a node writes frames: its cluster label and its datagram size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    label: Box<[u8]>,
    max_datagram: usize,
}

impl FrameConfig {
    /// Frames for the cluster `label` (at most [`MAX_LABEL_LEN`] bytes; may be empty), of at
    /// most [`DEFAULT_MAX_DATAGRAM`] bytes.
    pub fn new(label: &[u8]) -> Result<Self, ConfigError> {
        if label.len() > MAX_LABEL_LEN {
            return Err(ConfigError::LabelTooLong(label.len()));
        }
        Ok(Self {
            label: label.into(),
            max_datagram: DEFAULT_MAX_DATAGRAM,
        })
    }

    /// The same configuration with frames of at most `max_datagram` bytes, in
    /// [`MIN_DATAGRAM`]`..=`[`MAX_DATAGRAM`].
    pub fn with_max_datagram(mut self, max_datagram: usize) -> Result<Self, ConfigError> {
        if !(MIN_DATAGRAM..=MAX_DATAGRAM).contains(&max_datagram) {
            return Err(ConfigError::DatagramSize(max_datagram));
        }
        self.max_datagram = max_datagram;
        Ok(self)
    }

    /// The cluster label.
    pub fn label(&self) -> &[u8] {
        &self.label
    }

    /// The largest frame written, in bytes, seal overhead included.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }
}

/// Packs messages into one frame of at most the configured datagram size.
///
/// The writer appends the header to the caller's buffer at once, then each message that
/// fits; [`finish`](Self::finish) writes the message count and, with a key ring, seals the
/// body. When a key ring is given, the seal's 40 bytes are reserved from the start, so a
/// frame that accepted a message never outgrows the datagram when sealed.
///
/// ```
/// use hearsay::codec::{decode_frame, Ack, FrameConfig, FrameWriter, Message};
/// use hearsay::placement::NodeId;
///
/// let config = FrameConfig::new(b"prod").unwrap();
/// let mut buf = Vec::new();
/// let mut w = FrameWriter::new(&mut buf, &config, NodeId(7), None);
/// let mut seq = 0;
/// while w.try_push(&Message::Ack(Ack { seq })) {
///     seq += 1;
/// }
/// let len = w.finish();
/// assert!(len <= config.max_datagram());
///
/// let frame = decode_frame(&mut buf, b"prod", None).unwrap();
/// assert_eq!(frame.sender(), NodeId(7));
/// assert_eq!(frame.messages().count() as u64, seq);
/// ```
///
/// Dropping a writer without finishing it removes the unfinished frame from the buffer.
pub struct FrameWriter<'b, 'k> {
    buf: &'b mut Vec<u8>,
    /// Where this frame starts in `buf` (the buffer may hold earlier frames).
    start: usize,
    /// Bytes of the header (magic through label): the associated data when sealing.
    header_len: usize,
    /// Where the message count goes, relative to `start`.
    count_at: usize,
    /// The longest `buf` may grow to before sealing adds the tag.
    limit: usize,
    count: u16,
    keys: Option<&'k KeyRing>,
    finished: bool,
}

impl<'b, 'k> FrameWriter<'b, 'k> {
    /// Start a frame from `sender` at the end of `buf`; it will be sealed with `keys`'
    /// primary key if a ring is given.
    ///
    /// `buf` is grown once to hold a whole datagram, so a buffer reused from frame to frame
    /// stops allocating after the first.
    pub fn new(
        buf: &'b mut Vec<u8>,
        config: &FrameConfig,
        sender: NodeId,
        keys: Option<&'k KeyRing>,
    ) -> Self {
        let start = buf.len();
        buf.reserve(config.max_datagram);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(if keys.is_some() { FLAG_ENCRYPTED } else { 0 });
        // FrameConfig::new checked the label's length.
        buf.push(config.label.len() as u8);
        buf.extend_from_slice(&config.label);
        let header_len = buf.len() - start;
        if keys.is_some() {
            // Room for the nonce, chosen at `finish`.
            buf.resize(buf.len() + NONCE_LEN, 0);
        }
        put_varint(buf, sender.0);
        let count_at = buf.len() - start;
        buf.extend_from_slice(&[0; COUNT_LEN]);
        let tag = if keys.is_some() { TAG_LEN } else { 0 };
        let limit = start + config.max_datagram - tag;
        debug_assert!(
            buf.len() <= limit,
            "MIN_DATAGRAM leaves room for any header"
        );
        Self {
            buf,
            start,
            header_len,
            count_at,
            limit,
            count: 0,
            keys,
            finished: false,
        }
    }

    /// Add `msg` if it is valid and fits; otherwise leave the frame as it was and say why.
    pub fn push(&mut self, msg: &Message<'_>) -> Result<(), PushError> {
        msg.check()?;
        if usize::from(self.count) == MAX_MESSAGES {
            return Err(PushError::TooManyMessages);
        }
        let len = msg.encoded_len();
        if len > self.remaining() {
            return Err(PushError::Full);
        }
        let before = self.buf.len();
        msg.encode_unchecked(self.buf);
        debug_assert_eq!(self.buf.len() - before, len, "encoded_len is exact");
        self.count += 1;
        Ok(())
    }

    /// Add `msg` if it is valid and fits: true if it was added. False for a message that does
    /// not fit (send this frame, start another) and for one that fits in no frame
    /// ([`push`](Self::push) tells the two apart).
    pub fn try_push(&mut self, msg: &Message<'_>) -> bool {
        self.push(msg).is_ok()
    }

    /// Bytes left for messages (each takes its [`Message::encoded_len`]).
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    /// Messages added so far.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// The type byte and encoded length ([`Message::encoded_len`]) of each message added so
    /// far, in order: what a sender counts per message type before it
    /// [`finish`](Self::finish)es the frame. Reads the records in the buffer; allocates
    /// nothing.
    pub fn records(&self) -> impl Iterator<Item = (u8, usize)> + '_ {
        let start = self.start + self.count_at + COUNT_LEN;
        let mut input = &self.buf[start..];
        (0..self.count).map_while(move |_| {
            let before = input.len();
            let kind = get_u8(&mut input).ok()?;
            let len = usize::try_from(get_varint(&mut input).ok()?).ok()?;
            get_bytes(&mut input, len).ok()?;
            Some((kind, before - input.len()))
        })
    }

    /// Whether no message has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Complete the frame (message count; seal if a key ring was given) and return its
    /// length: the frame is the last that many bytes of the buffer.
    pub fn finish(mut self) -> usize {
        self.finished = true;
        let frame = &mut self.buf[self.start..];
        frame[self.count_at..self.count_at + COUNT_LEN].copy_from_slice(&self.count.to_be_bytes());
        if let Some(keys) = self.keys {
            let (header, rest) = frame.split_at_mut(self.header_len);
            let (nonce, body) = rest.split_at_mut(NONCE_LEN);
            let mut n = [0u8; NONCE_LEN];
            let tag = keys.seal(header, &mut n, body);
            nonce.copy_from_slice(&n);
            self.buf.extend_from_slice(&tag);
        }
        self.buf.len() - self.start
    }
}

impl Drop for FrameWriter<'_, '_> {
    fn drop(&mut self) {
        // An unfinished frame (no count, not sealed) must not be sent by mistake.
        if !self.finished {
            self.buf.truncate(self.start);
        }
    }
}

/// A decoded frame: who sent it and the messages it carries, still in the datagram.
#[derive(Copy, Clone, Debug)]
pub struct Frame<'a> {
    sender: NodeId,
    count: u16,
    encryption: Encryption,
    messages: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The sending node.
    pub fn sender(&self) -> NodeId {
        self.sender
    }

    /// Number of messages the header announces.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether the frame announces no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the frame was encrypted and with which key.
    pub fn encryption(&self) -> Encryption {
        self.encryption
    }

    /// The messages, decoded one by one. A malformed message ends the iteration with its
    /// error (the caller counts it; the messages before it are good); so do missing messages
    /// ([`DecodeError::Truncated`]) and bytes after the last one
    /// ([`DecodeError::TrailingBytes`]).
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            input: self.messages,
            left: self.count,
            done: false,
        }
    }
}

/// Iterator over the messages of a [`Frame`]; see [`Frame::messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    input: &'a [u8],
    left: u16,
    done: bool,
}

impl Messages<'_> {
    /// Bytes not yet decoded: the difference across a call to `next` is the length of the
    /// message it returned.
    pub fn remaining(&self) -> usize {
        self.input.len()
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.left == 0 {
            self.done = true;
            return (!self.input.is_empty()).then_some(Err(DecodeError::TrailingBytes));
        }
        match Message::decode(&mut self.input) {
            Ok(m) => {
                self.left -= 1;
                Some(Ok(m))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // Each announced message, or an error in its place, plus maybe TrailingBytes.
            (0, Some(usize::from(self.left) + 1))
        }
    }
}

impl std::iter::FusedIterator for Messages<'_> {}

/// Check the header (magic through label) against this node; return the header's length
/// and whether the frame is sealed.
fn read_header(buf: &[u8], expected_label: &[u8]) -> Result<(usize, bool), DecodeError> {
    let mut input = buf;
    // Magic, version and flags in this order: another protocol first, then another version
    // (whose flags may mean something else), then flags this version does not define.
    if get_array::<2>(&mut input)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = get_u8(&mut input)?;
    if version != VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    let flags = get_u8(&mut input)?;
    if flags & !FLAG_ENCRYPTED != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let label_len = usize::from(get_u8(&mut input)?);
    if label_len > MAX_LABEL_LEN {
        return Err(DecodeError::TooLong {
            field: "cluster label",
            len: label_len as u64,
            max: MAX_LABEL_LEN,
        });
    }
    if get_bytes(&mut input, label_len)? != expected_label {
        return Err(DecodeError::WrongCluster);
    }
    Ok((FIXED_HEADER_LEN + label_len, flags & FLAG_ENCRYPTED != 0))
}

/// Decode a datagram: check its header against this node's cluster label and key ring,
/// open it in place if it is sealed, and read the sender and message count.
///
/// `keys` is this node's key ring, or `None` if it does not use encryption. A sealed frame
/// needs a ring ([`DecodeError::NoKeys`]); a plaintext frame is refused when a ring is given
/// unless the ring accepts plaintext ([`DecodeError::PlaintextRejected`]).
///
/// Decryption overwrites the ciphertext in `buf` with the plaintext (even when a later
/// check fails), and every byte field of the messages borrows from `buf`: nothing is
/// allocated and nothing is copied. No input makes this panic; every failure is a
/// [`DecodeError`] whose [`reason`](DecodeError::reason) the caller counts.
pub fn decode_frame<'a>(
    buf: &'a mut [u8],
    expected_label: &[u8],
    keys: Option<&KeyRing>,
) -> Result<Frame<'a>, DecodeError> {
    let (header_len, sealed) = read_header(buf, expected_label)?;
    let (body, encryption): (&'a [u8], Encryption) = if sealed {
        let keys = keys.ok_or(DecodeError::NoKeys)?;
        if buf.len() < header_len + SEAL_OVERHEAD {
            return Err(DecodeError::Truncated);
        }
        let (header, rest) = buf.split_at_mut(header_len);
        let (nonce, rest) = rest.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        let encryption = keys.open(header, &n, body, &t)?;
        (body, encryption)
    } else {
        if keys.is_some_and(|k| !k.accepts_plaintext()) {
            return Err(DecodeError::PlaintextRejected);
        }
        let buf: &'a [u8] = buf;
        (&buf[header_len..], Encryption::Plaintext)
    };
    let mut input = body;
    let sender = get_node_id(&mut input)?;
    let count = u16::from_be_bytes(get_array(&mut input)?);
    Ok(Frame {
        sender,
        count,
        encryption,
        messages: input,
    })
}

/// Bytes of the header and body preamble of a plaintext frame for `label` and `sender`:
/// what a frame with no message takes.
pub fn frame_overhead(label_len: usize, sender: NodeId) -> usize {
    FIXED_HEADER_LEN + label_len + super::wire::varint_len(sender.0) + COUNT_LEN
}

// The largest preamble must fit in the smallest datagram with the seal.
const _: () = assert!(
    FIXED_HEADER_LEN + MAX_LABEL_LEN + MAX_VARINT_LEN + COUNT_LEN + SEAL_OVERHEAD <= MIN_DATAGRAM
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::{self, Owned};
    use crate::codec::{kind, Ack, KeyRingError, List, Ping, StateRequest, Unknown};
    use proptest::collection::vec;
    use proptest::prelude::*;

    const KEY_A: [u8; 32] = [0xa; 32];
    const KEY_B: [u8; 32] = [0xb; 32];

    fn ring(key: [u8; 32]) -> KeyRing {
        KeyRing::with_salt(key, [0x5a; 16])
    }

    /// A frame holding as many of `msgs` as fit (in order, skipping those that do not);
    /// returns the frame and the messages taken.
    fn build<'m>(
        msgs: &'m [Owned],
        config: &FrameConfig,
        sender: NodeId,
        keys: Option<&KeyRing>,
    ) -> (Vec<u8>, Vec<Message<'m>>) {
        let mut buf = Vec::new();
        let mut taken = Vec::new();
        let mut w = FrameWriter::new(&mut buf, config, sender, keys);
        for o in msgs {
            let m = o.as_message();
            if w.try_push(&m) {
                taken.push(m);
            }
        }
        w.finish();
        (buf, taken)
    }

    #[test]
    fn records_list_each_message_type_and_length() {
        let config = FrameConfig::new(b"c").unwrap();
        let msgs = mixed();
        for keys in [None, Some(ring(KEY_A))] {
            let mut buf = Vec::new();
            let mut w = FrameWriter::new(&mut buf, &config, NodeId(9), keys.as_ref());
            assert_eq!(w.records().count(), 0);
            let mut expected = Vec::new();
            for o in &msgs {
                let m = o.as_message();
                assert!(w.try_push(&m));
                expected.push((m.kind(), m.encoded_len()));
            }
            assert_eq!(w.records().collect::<Vec<_>>(), expected);
            w.finish();
        }
    }

    fn mixed() -> Vec<Owned> {
        let ids = vec![NodeId(1), NodeId(1 << 40)];
        vec![
            Owned::Ping(Ping {
                seq: 1,
                target: NodeId(2),
            }),
            Owned::StateRequest(3, ids),
            Owned::Unknown(0xf0, b"later".to_vec()),
            Owned::Join(4, "[2001:db8::1]:7946".parse().unwrap(), b"zone=a".to_vec()),
            Owned::Ack(Ack { seq: 1 << 50 }),
        ]
    }

    /// Decode and collect every message; the first error from either stage.
    fn decode_all<'a>(
        buf: &'a mut [u8],
        label: &[u8],
        keys: Option<&KeyRing>,
    ) -> Result<(NodeId, Encryption, Vec<Message<'a>>), DecodeError> {
        let frame = decode_frame(buf, label, keys)?;
        let msgs = frame.messages().collect::<Result<Vec<_>, _>>()?;
        assert_eq!(msgs.len(), frame.len());
        Ok((frame.sender(), frame.encryption(), msgs))
    }

    #[test]
    fn golden_plain_frame() {
        let config = FrameConfig::new(b"t").unwrap();
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, NodeId(5), None);
        assert!(w.try_push(&Message::Ack(Ack { seq: 1 })));
        assert_eq!(w.finish(), 12);
        assert_eq!(
            buf,
            [
                b'H',
                b'S', // magic
                1,    // version
                0,    // flags
                1,
                b't', // label
                5,    // sender
                0,
                1, // one message
                kind::ACK,
                1,
                1, // Ack { seq: 1 }
            ]
        );
    }

    #[test]
    fn plain_and_sealed_frames_round_trip() {
        let msgs = mixed();
        let config = FrameConfig::new(b"prod").unwrap();
        let keys = ring(KEY_A);
        for sealing in [None, Some(&keys)] {
            let (mut buf, taken) = build(&msgs, &config, NodeId(77), sealing);
            assert_eq!(taken.len(), msgs.len());
            let plain_len = frame_overhead(4, NodeId(77))
                + taken.iter().map(Message::encoded_len).sum::<usize>();
            let extra = if sealing.is_some() { SEAL_OVERHEAD } else { 0 };
            assert_eq!(buf.len(), plain_len + extra);
            assert_eq!(buf[3], u8::from(sealing.is_some()));
            let (sender, enc, back) = decode_all(&mut buf, b"prod", sealing).unwrap();
            assert_eq!(sender, NodeId(77));
            assert_eq!(back, taken);
            let want = if sealing.is_some() {
                Encryption::PrimaryKey
            } else {
                Encryption::Plaintext
            };
            assert_eq!(enc, want);
        }
    }

    #[test]
    fn empty_frame_is_the_overhead() {
        let config = FrameConfig::new(b"abc").unwrap();
        let mut buf = Vec::new();
        let w = FrameWriter::new(&mut buf, &config, NodeId(300), None);
        assert!(w.is_empty());
        assert_eq!(w.finish(), frame_overhead(3, NodeId(300)));
        let frame = decode_frame(&mut buf, b"abc", None).unwrap();
        assert!(frame.is_empty());
        assert_eq!(frame.messages().count(), 0);
    }

    #[test]
    fn writer_fills_to_the_limit_and_no_further() {
        let keys = ring(KEY_A);
        for max in [MIN_DATAGRAM, DEFAULT_MAX_DATAGRAM, MAX_DATAGRAM] {
            let config = FrameConfig::new(b"fill")
                .unwrap()
                .with_max_datagram(max)
                .unwrap();
            for sealing in [None, Some(&keys)] {
                let mut buf = Vec::new();
                let mut w = FrameWriter::new(&mut buf, &config, NodeId(1), sealing);
                let ack = Message::Ack(Ack { seq: 1 }); // 3 bytes
                let mut n = 0;
                while w.try_push(&ack) {
                    n += 1;
                }
                assert!(w.remaining() < ack.encoded_len());
                assert_eq!(w.push(&ack), Err(PushError::Full));
                // Something smaller still fits where a 3-byte ack did not.
                let tiny = Message::Unknown(Unknown {
                    kind: 0xff,
                    body: b"",
                });
                let took_tiny = w.remaining() >= 2;
                assert_eq!(w.try_push(&tiny), took_tiny);
                assert_eq!(w.len(), n + usize::from(took_tiny));
                let len = w.finish();
                assert!(len <= max, "{len} > {max}");
                assert!(len + 2 > max, "{len} leaves room in {max}");
                assert_eq!(
                    decode_all(&mut buf, b"fill", sealing).unwrap().2.len(),
                    n + usize::from(took_tiny)
                );
            }
        }
    }

    #[test]
    fn invalid_messages_are_refused_not_truncated() {
        let config = FrameConfig::new(b"").unwrap();
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, NodeId(1), None);
        let big = vec![0; crate::codec::MAX_METADATA_LEN + 1];
        let join = Message::Join(crate::codec::Join {
            incarnation: 0,
            addr: "1.2.3.4:5".parse().unwrap(),
            metadata: &big,
        });
        assert!(matches!(w.push(&join), Err(PushError::Invalid(_))));
        assert!(!w.try_push(&join));
        assert!(w.is_empty());
    }

    #[test]
    fn frames_append_and_unfinished_frames_vanish() {
        let config = FrameConfig::new(b"x").unwrap();
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, NodeId(1), None);
        w.try_push(&Message::Ack(Ack { seq: 1 }));
        let first = w.finish();
        {
            let mut w = FrameWriter::new(&mut buf, &config, NodeId(2), None);
            w.try_push(&Message::Ack(Ack { seq: 2 }));
            // Dropped unfinished.
        }
        assert_eq!(buf.len(), first);
        let mut w = FrameWriter::new(&mut buf, &config, NodeId(3), None);
        w.try_push(&Message::Ack(Ack { seq: 3 }));
        let second = w.finish();
        let (a, b) = buf.split_at_mut(first);
        assert_eq!(b.len(), second);
        assert_eq!(decode_all(a, b"x", None).unwrap().0, NodeId(1));
        assert_eq!(decode_all(b, b"x", None).unwrap().0, NodeId(3));
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(
            FrameConfig::new(&[0; 65]),
            Err(ConfigError::LabelTooLong(65))
        );
        assert!(FrameConfig::new(&[0; 64]).is_ok());
        let c = FrameConfig::new(b"").unwrap();
        assert_eq!(c.max_datagram(), DEFAULT_MAX_DATAGRAM);
        for bad in [0, MIN_DATAGRAM - 1, MAX_DATAGRAM + 1] {
            assert_eq!(
                c.clone().with_max_datagram(bad),
                Err(ConfigError::DatagramSize(bad))
            );
        }
        assert!(c.clone().with_max_datagram(MIN_DATAGRAM).is_ok());
        assert!(c.with_max_datagram(MAX_DATAGRAM).is_ok());
        // The largest header, sealed, still fits the smallest datagram.
        let c = FrameConfig::new(&[7; 64])
            .unwrap()
            .with_max_datagram(MIN_DATAGRAM)
            .unwrap();
        let keys = ring(KEY_A);
        let mut buf = Vec::new();
        let w = FrameWriter::new(&mut buf, &c, NodeId(u64::MAX), Some(&keys));
        assert!(w.finish() <= MIN_DATAGRAM);
        assert!(decode_frame(&mut buf, &[7; 64], Some(&keys)).is_ok());
    }

    #[test]
    fn header_errors() {
        let config = FrameConfig::new(b"blue").unwrap();
        let (good, _) = build(&mixed(), &config, NodeId(1), None);
        let check = |edit: &dyn Fn(&mut Vec<u8>), label: &[u8], want: DecodeError| {
            let mut buf = good.clone();
            edit(&mut buf);
            assert_eq!(decode_frame(&mut buf, label, None).err(), Some(want));
        };
        check(&|_| {}, b"green", DecodeError::WrongCluster);
        check(&|_| {}, b"blu", DecodeError::WrongCluster);
        check(&|b| b[0] = b'X', b"blue", DecodeError::BadMagic);
        check(&|b| b[2] = 2, b"blue", DecodeError::BadVersion(2));
        check(&|b| b[2] = 0, b"blue", DecodeError::BadVersion(0));
        check(&|b| b[3] = 0x02, b"blue", DecodeError::UnknownFlags(0x02));
        check(&|b| b[3] = 0x81, b"blue", DecodeError::UnknownFlags(0x81));
        check(
            &|b| b[4] = 65,
            b"blue",
            DecodeError::TooLong {
                field: "cluster label",
                len: 65,
                max: MAX_LABEL_LEN,
            },
        );
        check(&|b| b.truncate(0), b"blue", DecodeError::Truncated);
        check(&|b| b.truncate(7), b"blue", DecodeError::Truncated);
        // Version is checked before flags: a v2 frame with flags v1 does not know.
        check(
            &|b| {
                b[2] = 2;
                b[3] = 0xff;
            },
            b"blue",
            DecodeError::BadVersion(2),
        );
    }

    #[test]
    fn trailing_bytes_and_missing_messages() {
        let config = FrameConfig::new(b"").unwrap();
        let msgs = mixed();
        let (good, taken) = build(&msgs, &config, NodeId(1), None);
        let mut buf = good.clone();
        buf.push(0);
        let frame = decode_frame(&mut buf, b"", None).unwrap();
        let results: Vec<_> = frame.messages().collect();
        assert_eq!(results.len(), taken.len() + 1);
        assert_eq!(results.last(), Some(&Err(DecodeError::TrailingBytes)));

        // The count announces one message more than there is.
        let mut buf = good.clone();
        let count_at = frame_overhead(0, NodeId(1)) - 2;
        buf[count_at + 1] += 1;
        let frame = decode_frame(&mut buf, b"", None).unwrap();
        let results: Vec<_> = frame.messages().collect();
        assert_eq!(results.last(), Some(&Err(DecodeError::Truncated)));
        // Fused after the error.
        let mut it = frame.messages();
        for _ in it.by_ref() {}
        assert!(it.next().is_none());
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let config = FrameConfig::new(b"cut").unwrap();
        let keys = ring(KEY_A);
        for sealing in [None, Some(&keys)] {
            let (good, _) = build(&mixed(), &config, NodeId(9), sealing);
            for cut in 0..good.len() {
                let mut buf = good[..cut].to_vec();
                assert!(
                    decode_all(&mut buf, b"cut", sealing).is_err(),
                    "cut at {cut} of {} (sealed: {})",
                    good.len(),
                    sealing.is_some()
                );
            }
        }
    }

    #[test]
    fn every_flipped_bit_of_a_sealed_frame_is_caught() {
        let config = FrameConfig::new(b"sec").unwrap();
        let keys = ring(KEY_A);
        let (good, _) = build(&mixed(), &config, NodeId(9), Some(&keys));
        let header_len = 5 + 3;
        for bit in 0..good.len() * 8 {
            let mut buf = good.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            let got = decode_frame(&mut buf, b"sec", Some(&keys)).err();
            if bit / 8 >= header_len {
                // Nonce, ciphertext or tag.
                assert_eq!(got, Some(DecodeError::Unauthenticated), "bit {bit}");
            } else {
                // Header: refused one way or another, never accepted.
                assert!(got.is_some(), "bit {bit}");
            }
        }
    }

    #[test]
    fn the_header_is_authenticated() {
        // Relabel a sealed frame and present it to a node of the other cluster, which has
        // the same key: the label check passes, the tag does not.
        let keys = ring(KEY_A);
        let (mut buf, _) = build(
            &mixed(),
            &FrameConfig::new(b"aaa").unwrap(),
            NodeId(1),
            Some(&keys),
        );
        buf[5..8].copy_from_slice(b"bbb");
        assert_eq!(
            decode_frame(&mut buf, b"bbb", Some(&keys)).err(),
            Some(DecodeError::Unauthenticated)
        );
    }

    #[test]
    fn key_rotation_without_downtime() {
        let config = FrameConfig::new(b"rot").unwrap();
        let msgs = mixed();
        // Both nodes start on key A.
        let mut sender = ring(KEY_A);
        let mut receiver = KeyRing::with_salt(KEY_A, [1; 16]);
        let (old, want) = build(&msgs, &config, NodeId(1), Some(&sender));

        // Step 1: install B everywhere. Nothing changes on the wire.
        sender.install(KEY_B).unwrap();
        receiver.install(KEY_B).unwrap();
        let mut buf = old.clone();
        assert_eq!(
            decode_all(&mut buf, b"rot", Some(&receiver)).unwrap().1,
            Encryption::PrimaryKey
        );

        // Step 2: B becomes primary on the receiver first, then on the sender. Frames under
        // A still open (primary B is tried first and fails, then A), as do frames under B.
        receiver.set_primary(KEY_B).unwrap();
        let mut buf = old.clone();
        let (_, enc, got) = decode_all(&mut buf, b"rot", Some(&receiver)).unwrap();
        assert_eq!((enc, &got), (Encryption::OtherKey, &want));
        sender.set_primary(KEY_B).unwrap();
        let (mut new, _) = build(&msgs, &config, NodeId(1), Some(&sender));
        assert_eq!(
            decode_all(&mut new.clone(), b"rot", Some(&receiver))
                .unwrap()
                .1,
            Encryption::PrimaryKey
        );

        // A node that has not installed B yet cannot open B frames.
        let laggard = ring(KEY_A);
        assert_eq!(
            decode_all(&mut new, b"rot", Some(&laggard)).err(),
            Some(DecodeError::Unauthenticated)
        );

        // Step 3: remove A. Frames sealed under A no longer open.
        receiver.remove(KEY_A).unwrap();
        let mut buf = old.clone();
        assert_eq!(
            decode_all(&mut buf, b"rot", Some(&receiver)).err(),
            Some(DecodeError::Unauthenticated)
        );
        assert_eq!(sender.remove(KEY_B), Err(KeyRingError::RemovePrimary));
    }

    #[test]
    fn plaintext_policy() {
        let config = FrameConfig::new(b"p").unwrap();
        let (plain, _) = build(&mixed(), &config, NodeId(1), None);
        let strict = ring(KEY_A);
        let migrating = ring(KEY_A).with_accept_plaintext(true);
        assert!(!strict.accepts_plaintext());
        assert!(migrating.accepts_plaintext());
        assert_eq!(
            decode_frame(&mut plain.clone(), b"p", Some(&strict)).err(),
            Some(DecodeError::PlaintextRejected)
        );
        let mut buf = plain.clone();
        let frame = decode_frame(&mut buf, b"p", Some(&migrating)).unwrap();
        assert_eq!(frame.encryption(), Encryption::Plaintext);
        assert!(decode_frame(&mut plain.clone(), b"p", None).is_ok());

        let (mut sealed, _) = build(&mixed(), &config, NodeId(1), Some(&strict));
        assert_eq!(
            decode_frame(&mut sealed.clone(), b"p", None).err(),
            Some(DecodeError::NoKeys)
        );
        assert!(decode_frame(&mut sealed, b"p", Some(&migrating)).is_ok());
    }

    #[test]
    fn sealing_is_deterministic_per_salt_and_counter() {
        let config = FrameConfig::new(b"d").unwrap();
        let msgs = mixed();
        let (a, _) = build(&msgs, &config, NodeId(1), Some(&ring(KEY_A)));
        let (b, _) = build(&msgs, &config, NodeId(1), Some(&ring(KEY_A)));
        assert_eq!(a, b);
        let keys = ring(KEY_A);
        let (c, _) = build(&msgs, &config, NodeId(1), Some(&keys));
        let (d, _) = build(&msgs, &config, NodeId(1), Some(&keys));
        assert_ne!(c, d, "the counter moves the nonce");
        // The ciphertext does not contain the plaintext.
        let (p, _) = build(&msgs, &config, NodeId(1), None);
        assert!(!c.windows(6).any(|w| w == b"zone=a"));
        assert!(p.windows(6).any(|w| w == b"zone=a"));
    }

    #[test]
    fn decoded_fields_borrow_from_the_datagram() {
        let ids = [NodeId(5)];
        let config = FrameConfig::new(b"").unwrap();
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, &config, NodeId(1), None);
        w.try_push(&Message::StateRequest(StateRequest {
            round: 1,
            ids: List::new(&ids),
        }));
        w.try_push(&Message::Unknown(Unknown {
            kind: 0xfe,
            body: b"abc",
        }));
        w.finish();
        let range = buf.as_ptr_range();
        let frame = decode_frame(&mut buf, b"", None).unwrap();
        let mut msgs = frame.messages();
        assert!(matches!(msgs.next(), Some(Ok(Message::StateRequest(_)))));
        let Some(Ok(Message::Unknown(u))) = msgs.next() else {
            panic!()
        };
        assert!(range.contains(&u.body.as_ptr()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whole frames of random message mixes, plain and sealed: what was accepted comes
        /// back, in order; a refusal happens exactly when the message did not fit; the frame
        /// never exceeds the datagram size.
        #[test]
        fn frames_round_trip(
            msgs in vec(testing::any_message(), 0..60),
            sender in testing::node_id(),
            label in vec(any::<u8>(), 0..=MAX_LABEL_LEN),
            max in prop_oneof![MIN_DATAGRAM..600usize, 600..=4000usize, Just(MAX_DATAGRAM)],
            sealed in any::<bool>(),
        ) {
            let config = FrameConfig::new(&label).unwrap().with_max_datagram(max).unwrap();
            let keys = ring(KEY_A);
            let keys = sealed.then_some(&keys);
            let mut buf = Vec::new();
            let mut w = FrameWriter::new(&mut buf, &config, sender, keys);
            let mut taken = Vec::new();
            for o in &msgs {
                let m = o.as_message();
                let room = w.remaining();
                let count = w.len();
                let fits = m.encoded_len() <= room;
                prop_assert_eq!(w.try_push(&m), fits);
                if fits {
                    prop_assert_eq!(w.remaining(), room - m.encoded_len());
                    taken.push(m);
                } else {
                    prop_assert_eq!(w.remaining(), room);
                    prop_assert_eq!(w.len(), count);
                }
            }
            let len = w.finish();
            prop_assert_eq!(len, buf.len());
            prop_assert!(len <= max);
            let body: usize = taken.iter().map(Message::encoded_len).sum();
            let overhead = if sealed { SEAL_OVERHEAD } else { 0 };
            prop_assert_eq!(len, frame_overhead(label.len(), sender) + body + overhead);
            let (s, _, back) = decode_all(&mut buf, &label, keys).unwrap();
            prop_assert_eq!(s, sender);
            prop_assert_eq!(back, taken);
        }

        #[test]
        fn random_datagrams_never_panic(
            bytes in vec(any::<u8>(), 0..300),
            accept_plaintext in any::<bool>(),
        ) {
            let keys = ring(KEY_A).with_accept_plaintext(accept_plaintext);
            for k in [None, Some(&keys)] {
                let mut buf = bytes.clone();
                let _ = decode_all(&mut buf, b"", k);
            }
        }

        /// Random bytes after a valid header reach the body decoder (the test above rarely
        /// gets past the magic).
        #[test]
        fn random_bodies_never_panic(body in vec(any::<u8>(), 0..300)) {
            let mut buf = vec![b'H', b'S', VERSION, 0, 0];
            buf.extend_from_slice(&body);
            if let Ok(frame) = decode_frame(&mut buf, b"", None) {
                // Whatever decodes is valid and re-encodes.
                for m in frame.messages().map_while(Result::ok) {
                    prop_assert!(m.encode(&mut Vec::new()).is_ok());
                }
            }
        }

        #[test]
        fn truncated_random_frames_are_errors(
            msgs in vec(testing::any_message(), 1..8),
            sealed in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let config = FrameConfig::new(b"c").unwrap();
            let keys = ring(KEY_A);
            let keys = sealed.then_some(&keys);
            let (good, _) = build(&msgs, &config, NodeId(3), keys);
            let mut buf = good[..cut.index(good.len())].to_vec();
            prop_assert!(decode_all(&mut buf, b"c", keys).is_err());
        }
    }
}

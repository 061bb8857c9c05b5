//! Errors of the codec, one type per direction.
//!
//! Decoding errors come from the network: every one of them means "drop this datagram (or the
//! rest of it) and count it". None of them is fatal and none of them changes any state, which
//! is why each variant has a stable [`DecodeError::reason`] label for metrics rather than a
//! code path of its own. Encoding errors come from our own callers: a field over its limit
//! would produce a frame that every receiver rejects, so it is refused at the sender.

/// Why a datagram, or a message inside it, could not be decoded.
///
/// Every variant leaves all state as it was: the caller counts the datagram under
/// [`reason`](DecodeError::reason) and drops it (or, for an error from the message iterator,
/// the rest of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram ends inside a field, or before the number of messages its header
    /// announced. Data is in an unexpected format. Doesn't affect state.
    #[error("datagram ends before the field it announced")]
    Truncated,
    /// The first two bytes are not the Hearsay magic: not a Hearsay datagram at all (a port
    /// scan, another protocol on the same port). Doesn't affect state.
    #[error("not a Hearsay frame (bad magic)")]
    BadMagic,
    /// The frame is from another protocol version. Counted separately so that a rolling
    /// upgrade shows up as such rather than as corruption. Doesn't affect state.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// The flags byte has bits set that this version does not define. Doesn't affect state.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// The frame carries another cluster's label: two clusters share a network and this
    /// datagram is not for us. Doesn't affect state.
    #[error("frame belongs to another cluster")]
    WrongCluster,
    /// A varint is longer than needed (a trailing zero byte) or does not fit in 64 bits.
    /// Data is in an unexpected format. Doesn't affect state.
    #[error("overlong or overflowing varint")]
    OverlongVarint,
    /// An integer field holds a value beyond its type's range (a `u16` field above 65 535).
    /// Data is in an unexpected format. Doesn't affect state.
    #[error("{field} out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
    },
    /// A length-prefixed field is longer than its limit (see the `MAX_*` constants).
    /// Refused before anything is read or allocated. Doesn't affect state.
    #[error("{field} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A list announces more items than the bytes left could hold even at the smallest item
    /// size. Refused before any item is read. Doesn't affect state.
    #[error("{field} announces {count} items, more than the datagram can hold")]
    BadCount {
        /// The list.
        field: &'static str,
        /// The announced count.
        count: u64,
    },
    /// A socket address has an unknown family tag (neither 4 nor 6). Doesn't affect state.
    #[error("unknown address family tag {0}")]
    BadAddress(u8),
    /// A member status byte has an unknown status or unknown bits. Doesn't affect state.
    #[error("bad member status byte {0:#04x}")]
    BadStatus(u8),
    /// Bytes follow the last message the header announced. Doesn't affect state.
    #[error("bytes after the last announced message")]
    TrailingBytes,
    /// The frame is encrypted but no installed key authenticates it: a wrong or retired key,
    /// or a forged or corrupted datagram. Doesn't affect state.
    #[error("no installed key authenticates this frame")]
    Unauthenticated,
    /// The frame is plaintext but this node requires encryption (its key ring does not
    /// accept plaintext). Doesn't affect state.
    #[error("plaintext frame rejected: encryption is required")]
    PlaintextRejected,
    /// The frame is encrypted but this node has no key ring. Doesn't affect state.
    #[error("encrypted frame but no key ring is configured")]
    NoKeys,
}

impl DecodeError {
    /// A short, stable label for metrics (`hearsay_frames_dropped_total{reason="…"}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadMagic => "bad_magic",
            Self::BadVersion(_) => "bad_version",
            Self::UnknownFlags(_) => "unknown_flags",
            Self::WrongCluster => "wrong_cluster",
            Self::OverlongVarint => "overlong_varint",
            Self::OutOfRange { .. } => "out_of_range",
            Self::TooLong { .. } => "too_long",
            Self::BadCount { .. } => "bad_count",
            Self::BadAddress(_) => "bad_address",
            Self::BadStatus(_) => "bad_status",
            Self::TrailingBytes => "trailing_bytes",
            Self::Unauthenticated => "unauthenticated",
            Self::PlaintextRejected => "plaintext_rejected",
            Self::NoKeys => "no_keys",
        }
    }
}

/// Why a message cannot be encoded: it breaks a limit that every receiver enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A byte field or list is longer than its limit.
    #[error("{field} of {len} bytes or items exceeds the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An [`Unknown`](super::Unknown) message uses the type byte of a known message, so a
    /// receiver would decode its body as that message.
    #[error("message kind {0:#04x} is a known kind")]
    KnownKind(u8),
}

/// Why [`FrameWriter::push`](super::FrameWriter::push) did not add a message. The frame is
/// unchanged and can still be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The message does not fit in the space left under the datagram size: send this frame
    /// and start another.
    #[error("message does not fit in the frame")]
    Full,
    /// The frame already holds [`MAX_MESSAGES`](super::MAX_MESSAGES) messages.
    #[error("frame holds the maximum number of messages")]
    TooManyMessages,
    /// The message itself is invalid and fits in no frame.
    #[error(transparent)]
    Invalid(#[from] EncodeError),
}

/// Why a [`FrameConfig`](super::FrameConfig) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cluster label is longer than [`MAX_LABEL_LEN`](super::MAX_LABEL_LEN).
    #[error("cluster label of {0} bytes exceeds {max}", max = super::MAX_LABEL_LEN)]
    LabelTooLong(usize),
    /// The datagram size is outside
    /// [`MIN_DATAGRAM`](super::MIN_DATAGRAM)`..=`[`MAX_DATAGRAM`](super::MAX_DATAGRAM).
    #[error(
        "max datagram size {0} is outside {min}..={max}",
        min = super::MIN_DATAGRAM,
        max = super::MAX_DATAGRAM
    )]
    DatagramSize(usize),
}

/// Why a [`KeyRing`](super::KeyRing) operation was refused. The key ring is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// [`MAX_KEYS`](super::MAX_KEYS) keys are installed already: remove a retired one first.
    #[error("key ring is full")]
    Full,
    /// The key is not installed.
    #[error("key is not installed")]
    NotInstalled,
    /// The primary key cannot be removed: make another key primary first.
    #[error("the primary key cannot be removed")]
    RemovePrimary,
    /// The operating system's random source failed while drawing the nonce salt.
    #[error("OS random source failed: {0}")]
    Random(getrandom::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case_labels() {
        let all = [
            DecodeError::Truncated,
            DecodeError::BadMagic,
            DecodeError::BadVersion(2),
            DecodeError::UnknownFlags(2),
            DecodeError::WrongCluster,
            DecodeError::OverlongVarint,
            DecodeError::OutOfRange { field: "x" },
            DecodeError::TooLong {
                field: "x",
                len: 1,
                max: 0,
            },
            DecodeError::BadCount {
                field: "x",
                count: 1,
            },
            DecodeError::BadAddress(5),
            DecodeError::BadStatus(9),
            DecodeError::TrailingBytes,
            DecodeError::Unauthenticated,
            DecodeError::PlaintextRejected,
            DecodeError::NoKeys,
        ];
        let mut reasons: Vec<&str> = all.iter().map(DecodeError::reason).collect();
        assert!(reasons
            .iter()
            .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn messages_name_the_field() {
        let e = DecodeError::TooLong {
            field: "metadata",
            len: 2000,
            max: 1024,
        };
        assert_eq!(
            e.to_string(),
            "metadata of 2000 bytes exceeds the limit of 1024"
        );
        assert_eq!(
            ConfigError::LabelTooLong(65).to_string(),
            "cluster label of 65 bytes exceeds 64"
        );
    }
}

//! Why a CRDT operation, join or decode was refused.

use super::Kind;

/// Why [`Value::apply`](super::Value::apply), [`Value::join`](super::Value::join) or
/// [`Value::decode`](super::Value::decode) failed.
///
/// Every variant leaves the value it was called on as it was: `apply` validates the whole
/// operation (and checks every counter it would add to) before it changes anything, `join`
/// checks the kinds first, and `decode` builds a new value only once all the bytes are read.
/// Errors from `decode` come from the network: count them under [`reason`](CrdtError::reason)
/// and drop the delta, never treat them as fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrdtError {
    /// The operation does not apply to this kind of value (a `Decr` on a grow-only counter,
    /// an `Add` on a register). Doesn't affect state.
    #[error("operation {op} does not apply to a {kind:?}")]
    WrongOp {
        /// The kind of the value the operation was applied to.
        kind: Kind,
        /// The operation's name (`"Decr"`, `"Add"`, …).
        op: &'static str,
    },
    /// A join of two values of different kinds: a caller stored two types under one key, or
    /// a peer sent a delta of another kind. Doesn't affect state.
    #[error("cannot join a {found:?} into a {expected:?}")]
    KindMismatch {
        /// The kind of the value joined into.
        expected: Kind,
        /// The kind of the value offered.
        found: Kind,
    },
    /// The bytes are not a valid encoding: truncated, an overlong varint, entries out of
    /// order or repeated, a dot outside its causal context, a non-compact context, trailing
    /// bytes. The string says which. Doesn't affect state.
    #[error("malformed CRDT encoding: {0}")]
    Malformed(&'static str),
    /// A length or count is over its limit: an element, key or register value longer than
    /// [`MAX_ELEMENT_LEN`](super::MAX_ELEMENT_LEN) (from a caller or on the wire), or a list
    /// announcing more items than the bytes left could hold at the smallest item size
    /// (refused before anything is allocated). Doesn't affect state.
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// The field or list.
        what: &'static str,
        /// The length or count given.
        len: u64,
        /// The limit it broke.
        max: u64,
    },
    /// Maps nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH), in an operation or on the
    /// wire. Doesn't affect state.
    #[error("maps nested deeper than the limit")]
    TooDeep,
    /// A kind byte that names no [`Kind`] (inside an encoded map, or given by a caller to
    /// [`Kind::try_from`]). Doesn't affect state.
    #[error("unknown CRDT kind {0}")]
    UnknownKind(u8),
    /// The operation would take a counter or a logical clock past `u64::MAX` (a replica's
    /// increments, a dot counter or a Lamport time). Doesn't affect state.
    #[error("{0} would overflow")]
    Overflow(&'static str),
}

impl CrdtError {
    /// A short, stable label for metrics (`hearsay_crdt_rejected_total{reason="…"}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongOp { .. } => "wrong_op",
            Self::KindMismatch { .. } => "kind_mismatch",
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::TooDeep => "too_deep",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Overflow(_) => "overflow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case_labels() {
        let all = [
            CrdtError::WrongOp {
                kind: Kind::GCounter,
                op: "Decr",
            },
            CrdtError::KindMismatch {
                expected: Kind::AWSet,
                found: Kind::ORMap,
            },
            CrdtError::Malformed("x"),
            CrdtError::TooLarge {
                what: "x",
                len: 2,
                max: 1,
            },
            CrdtError::TooDeep,
            CrdtError::UnknownKind(99),
            CrdtError::Overflow("x"),
        ];
        let mut reasons: Vec<&str> = all.iter().map(CrdtError::reason).collect();
        assert!(reasons
            .iter()
            .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn messages_say_what() {
        let e = CrdtError::WrongOp {
            kind: Kind::GCounter,
            op: "Decr",
        };
        assert_eq!(e.to_string(), "operation Decr does not apply to a GCounter");
        let e = CrdtError::TooLarge {
            what: "element",
            len: 2000,
            max: 1024,
        };
        assert_eq!(e.to_string(), "element of 2000 exceeds the limit of 1024");
    }
}

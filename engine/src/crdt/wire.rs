//! The primitive encodings CRDT bodies are built from: LEB128 varints (shortest form only),
//! length-prefixed byte strings and counted lists.
//!
//! The codec has the same primitives, private to it and tied to its error type; CRDT bodies
//! are decoded after the frame (by the partition that owns the key), so they get their own
//! small reader with [`CrdtError`]s. Every read checks what it needs against the bytes left
//! before it slices, so no input makes one panic, and every count is checked against the
//! bytes left ÷ the smallest item size before any item is read.

use super::{CrdtError, MAX_ELEMENT_LEN};

/// Longest LEB128 encoding of a `u64`.
const MAX_VARINT_LEN: usize = 10;

const TRUNCATED: CrdtError = CrdtError::Malformed("truncated");
const OVERLONG: CrdtError = CrdtError::Malformed("overlong varint");

/// Bytes the LEB128 encoding of `v` takes.
#[inline]
pub(super) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append the shortest LEB128 encoding of `v`.
#[inline]
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes a length-prefixed byte string takes.
#[inline]
pub(super) fn bytes_len(b: &[u8]) -> usize {
    varint_len(b.len() as u64) + b.len()
}

/// Append a length-prefixed byte string.
#[inline]
pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a CRDT body front to back.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Read one byte.
    #[inline]
    pub(super) fn u8(&mut self) -> Result<u8, CrdtError> {
        let (&b, rest) = self.rest.split_first().ok_or(TRUNCATED)?;
        self.rest = rest;
        Ok(b)
    }

    /// Read a LEB128 `u64`, refusing padded and overflowing encodings, so every value has
    /// one encoding and a decoded body re-encodes to the bytes it came from.
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, CrdtError> {
        let mut v = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let b = self.u8()?;
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(OVERLONG);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(OVERLONG);
                }
                return Ok(v);
            }
        }
        Err(OVERLONG)
    }

    /// Read a varint that must not be zero (dot counters, version-vector entries).
    #[inline]
    pub(super) fn nonzero(&mut self, what: &'static str) -> Result<u64, CrdtError> {
        match self.varint()? {
            0 => Err(CrdtError::Malformed(what)),
            v => Ok(v),
        }
    }

    /// Read a length-prefixed byte string of at most [`MAX_ELEMENT_LEN`] bytes, borrowed.
    pub(super) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CrdtError> {
        let len = self.varint()?;
        let n = match usize::try_from(len) {
            Ok(n) if n <= MAX_ELEMENT_LEN => n,
            _ => {
                return Err(CrdtError::TooLarge {
                    what,
                    len,
                    max: MAX_ELEMENT_LEN as u64,
                })
            }
        };
        if self.rest.len() < n {
            return Err(TRUNCATED);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// Read a list count, refused unless `count × min_item` bytes are left: a hostile count
    /// is rejected before any item is read or any memory is set aside for it.
    pub(super) fn count(
        &mut self,
        min_item: usize,
        what: &'static str,
    ) -> Result<usize, CrdtError> {
        let count = self.varint()?;
        let max = self.rest.len() / min_item.max(1);
        match usize::try_from(count) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(CrdtError::TooLarge {
                what,
                len: count,
                max: max as u64,
            }),
        }
    }

    /// A count that must be at least one: a stored entry is never empty.
    pub(super) fn nonempty_count(
        &mut self,
        min_item: usize,
        what: &'static str,
        empty: &'static str,
    ) -> Result<usize, CrdtError> {
        match self.count(min_item, what)? {
            0 => Err(CrdtError::Malformed(empty)),
            n => Ok(n),
        }
    }

    /// The whole body must have been read.
    pub(super) fn finish(self) -> Result<(), CrdtError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CrdtError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints_are_shortest_form_only() {
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(r.finish(), Ok(()));
        }
        assert_eq!(Reader::new(&[0x80, 0x00]).varint(), Err(OVERLONG));
        assert_eq!(Reader::new(&[0xff; 10]).varint(), Err(OVERLONG));
        assert_eq!(Reader::new(&[0xff; 3]).varint(), Err(TRUNCATED));
    }

    #[test]
    fn counts_are_checked_against_the_bytes_left() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        out.extend_from_slice(&[0; 8]);
        assert_eq!(
            Reader::new(&out).count(2, "dots"),
            Err(CrdtError::TooLarge {
                what: "dots",
                len: u64::MAX,
                max: 4
            })
        );
        assert_eq!(
            Reader::new(&[4, 0, 0, 0, 0, 0, 0, 0, 0]).count(2, "x"),
            Ok(4)
        );
        assert!(Reader::new(&[5, 0, 0, 0, 0, 0, 0, 0, 0])
            .count(2, "x")
            .is_err());
    }

    #[test]
    fn byte_strings_are_limited_before_slicing() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"abc");
        assert_eq!(bytes_len(b"abc"), out.len());
        assert_eq!(Reader::new(&out).bytes("e"), Ok(&b"abc"[..]));
        assert_eq!(Reader::new(&out[..3]).bytes("e"), Err(TRUNCATED));
        let mut huge = Vec::new();
        put_varint(&mut huge, 1025);
        assert!(matches!(
            Reader::new(&huge).bytes("e"),
            Err(CrdtError::TooLarge { len: 1025, .. })
        ));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v: u64) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            prop_assert_eq!(Reader::new(&out).varint(), Ok(v));
        }
    }
}

//! Primitive encodings every message is built from: LEB128 varints, fixed-width big-endian
//! integers, length-prefixed byte strings and socket addresses.
//!
//! Readers take `&mut &'a [u8]` and advance it past what they consumed, so byte strings come
//! back as sub-slices of the datagram (`&'a [u8]`) and nothing is copied or allocated. Every
//! reader checks the length it needs against what is left before it slices, so no input can
//! make one panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::DecodeError;
use crate::placement::NodeId;

/// Longest LEB128 encoding of a `u64`: ⌈64 / 7⌉ bytes.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Address family tag of an IPv4 [`SocketAddr`] on the wire.
const ADDR_V4: u8 = 4;
/// Address family tag of an IPv6 [`SocketAddr`] on the wire.
const ADDR_V6: u8 = 6;

/// Bytes the LEB128 encoding of `v` takes: one per started group of 7 significant bits.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // `| 1` gives zero one significant bit, so it takes one byte like every value below 128.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append the LEB128 encoding of `v`: 7 bits a byte, least significant group first, high bit
/// set on every byte but the last. Always the shortest form, which is the only one readers
/// accept.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read one byte.
#[inline]
pub(crate) fn get_u8(input: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&b, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
    *input = rest;
    Ok(b)
}

/// Read `n` bytes as a sub-slice of the input.
#[inline]
pub(crate) fn get_bytes<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if input.len() < n {
        return Err(DecodeError::Truncated);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// Read a fixed-size array.
#[inline]
pub(crate) fn get_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let mut out = [0u8; N];
    out.copy_from_slice(get_bytes(input, N)?);
    Ok(out)
}

/// Read a LEB128 `u64`, refusing any encoding but the shortest one and anything above
/// `u64::MAX`.
///
/// Accepting only the shortest form makes every value's encoding unique, so a decoded message
/// re-encodes to the bytes it came from and [`varint_len`] is exact for decoded values too.
#[inline]
pub(crate) fn get_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    // Most varints on the wire (lengths, counts, small sequence numbers) are one byte.
    if let Some((&b, rest)) = input.split_first() {
        if b < 0x80 {
            *input = rest;
            return Ok(u64::from(b));
        }
    }
    let mut v = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let b = get_u8(input)?;
        // The tenth byte holds bit 63 only; anything more overflows a u64.
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(DecodeError::OverlongVarint);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // A final zero group after other groups adds nothing: a padded encoding.
            if b == 0 && i > 0 {
                return Err(DecodeError::OverlongVarint);
            }
            return Ok(v);
        }
    }
    // Unreachable in practice (the tenth byte either ends the varint or fails above), but a
    // loop that runs out is malformed input, not a reason to panic.
    Err(DecodeError::OverlongVarint)
}

/// Read a varint that must fit in a `u16`.
#[inline]
pub(crate) fn get_u16v(input: &mut &[u8], field: &'static str) -> Result<u16, DecodeError> {
    u16::try_from(get_varint(input)?).map_err(|_| DecodeError::OutOfRange { field })
}

/// Read a varint that must fit in a `u32`.
#[inline]
pub(crate) fn get_u32v(input: &mut &[u8], field: &'static str) -> Result<u32, DecodeError> {
    u32::try_from(get_varint(input)?).map_err(|_| DecodeError::OutOfRange { field })
}

/// Read a fixed 8-byte big-endian `u64` (hashes and ring positions: uniformly distributed,
/// so a varint would take 9 or 10 bytes for most of them).
#[inline]
pub(crate) fn get_u64_be(input: &mut &[u8]) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(get_array(input)?))
}

/// Read a [`NodeId`] (a varint).
#[inline]
pub(crate) fn get_node_id(input: &mut &[u8]) -> Result<NodeId, DecodeError> {
    get_varint(input).map(NodeId)
}

/// Bytes a length-prefixed byte string takes.
#[inline]
pub(crate) fn bytes_len(b: &[u8]) -> usize {
    varint_len(b.len() as u64) + b.len()
}

/// Append a length-prefixed byte string.
#[inline]
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Read a length-prefixed byte string of at most `max` bytes, borrowed from the input. The
/// length is checked against the limit and against what is left before anything is sliced.
#[inline]
pub(crate) fn get_prefixed<'a>(
    input: &mut &'a [u8],
    max: usize,
    field: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let len = get_varint(input)?;
    match usize::try_from(len) {
        Ok(n) if n <= max => get_bytes(input, n),
        _ => Err(DecodeError::TooLong { field, len, max }),
    }
}

/// Bytes a socket address takes: tag, address, port.
#[inline]
pub(crate) fn addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Append a socket address: tag 4 or 6, the address bytes, the port big-endian. An IPv6
/// address's flow info and scope id are not sent: they are meaningful only on the host that
/// set them (a scope id names a local interface), so a peer could not use them anyway.
#[inline]
pub(crate) fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(ADDR_V4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(ADDR_V6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Read a socket address written by [`put_addr`]; IPv6 addresses come back with flow info and
/// scope id 0.
#[inline]
pub(crate) fn get_addr(input: &mut &[u8]) -> Result<SocketAddr, DecodeError> {
    let ip = match get_u8(input)? {
        ADDR_V4 => IpAddr::V4(Ipv4Addr::from(get_array::<4>(input)?)),
        ADDR_V6 => IpAddr::V6(Ipv6Addr::from(get_array::<16>(input)?)),
        tag => return Err(DecodeError::BadAddress(tag)),
    };
    let port = u16::from_be_bytes(get_array(input)?);
    Ok(match ip {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V4(ip), port),
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varint_boundaries() {
        for (v, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            ((1 << 63) - 1, 9),
            (1 << 63, 10),
            (u64::MAX, 10),
        ] {
            let bytes = encode(v);
            assert_eq!(bytes.len(), len, "{v}");
            assert_eq!(varint_len(v), len, "{v}");
            let mut input = &bytes[..];
            assert_eq!(get_varint(&mut input), Ok(v));
            assert!(input.is_empty());
        }
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(
            encode(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn varint_rejects_padding_overflow_and_truncation() {
        let bad: &[(&[u8], DecodeError)] = &[
            // Zero and one, padded to two bytes.
            (&[0x80, 0x00], DecodeError::OverlongVarint),
            (&[0x81, 0x00], DecodeError::OverlongVarint),
            // u64::MAX with a tenth byte of 2: bit 64.
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                DecodeError::OverlongVarint,
            ),
            // Eleven bytes.
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00,
                ],
                DecodeError::OverlongVarint,
            ),
            // Ten bytes whose last group is a padding zero.
            (
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
                DecodeError::OverlongVarint,
            ),
            (&[], DecodeError::Truncated),
            (&[0x80], DecodeError::Truncated),
            (&[0xff, 0xff], DecodeError::Truncated),
        ];
        for (bytes, err) in bad {
            let mut input = *bytes;
            assert_eq!(get_varint(&mut input), Err(*err), "{bytes:02x?}");
        }
    }

    #[test]
    fn ranged_varints() {
        let mut input = &encode(65_535)[..];
        assert_eq!(get_u16v(&mut input, "f"), Ok(65_535));
        let mut input = &encode(65_536)[..];
        assert_eq!(
            get_u16v(&mut input, "f"),
            Err(DecodeError::OutOfRange { field: "f" })
        );
        let mut input = &encode(1 << 32)[..];
        assert_eq!(
            get_u32v(&mut input, "g"),
            Err(DecodeError::OutOfRange { field: "g" })
        );
    }

    #[test]
    fn prefixed_bytes_are_limited_before_reading() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"hello");
        assert_eq!(bytes_len(b"hello"), out.len());
        let mut input = &out[..];
        assert_eq!(get_prefixed(&mut input, 5, "f"), Ok(&b"hello"[..]));
        let mut input = &out[..];
        assert_eq!(
            get_prefixed(&mut input, 4, "f"),
            Err(DecodeError::TooLong {
                field: "f",
                len: 5,
                max: 4
            })
        );
        // A length beyond the datagram is truncation, not an allocation.
        let mut input = &[0x10, 1, 2][..];
        assert_eq!(
            get_prefixed(&mut input, 1024, "f"),
            Err(DecodeError::Truncated)
        );
        // A length beyond usize on 32-bit targets, or just beyond the limit, is refused as such.
        let huge = encode(u64::MAX);
        let mut input = &huge[..];
        assert!(matches!(
            get_prefixed(&mut input, 1024, "f"),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn addresses() {
        let v4: SocketAddr = "10.1.2.3:7946".parse().unwrap();
        let mut out = Vec::new();
        put_addr(&mut out, &v4);
        assert_eq!(out, [4, 10, 1, 2, 3, 0x1f, 0x0a]);
        assert_eq!(addr_len(&v4), out.len());
        assert_eq!(get_addr(&mut &out[..]), Ok(v4));

        let scoped = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            7946,
            0xabcd,
            3,
        ));
        let mut out = Vec::new();
        put_addr(&mut out, &scoped);
        assert_eq!(out.len(), 19);
        assert_eq!(addr_len(&scoped), 19);
        let back = get_addr(&mut &out[..]).unwrap();
        // Flow info and scope id are dropped on the wire.
        assert_eq!(back, "[fe80::1]:7946".parse::<SocketAddr>().unwrap());

        assert_eq!(
            get_addr(&mut &[5u8, 0, 0][..]),
            Err(DecodeError::BadAddress(5))
        );
        assert_eq!(get_addr(&mut &out[..18]), Err(DecodeError::Truncated));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v: u64) {
            let bytes = encode(v);
            prop_assert_eq!(bytes.len(), varint_len(v));
            let mut input = &bytes[..];
            prop_assert_eq!(get_varint(&mut input), Ok(v));
            prop_assert!(input.is_empty());
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut input = &bytes[..];
            if let Ok(v) = get_varint(&mut input) {
                // Whatever decodes re-encodes to exactly the bytes consumed.
                let used = bytes.len() - input.len();
                prop_assert_eq!(encode(v), &bytes[..used]);
            }
        }
    }
}

//! libmemcached's weighted ketama: the same key → server answers as a C client using
//! libmemcached with `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`, for the same server list.

use md5::{Digest, Md5};

use super::ring::{Continuum, Point, MAX_OWNERS, MAX_POINTS};
use super::{nodes_memory, validate_nodes, Key, Node, Placement, PlacementError, Scheme};

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`: points of a server of mean weight.
const POINTS_PER_SERVER: f32 = 160.0;

/// libmemcached's `MEMCACHED_DEFAULT_PORT`, left out of the point names.
const DEFAULT_PORT: u16 = 11211;

/// Ketama consistent hashing exactly as libmemcached's weighted ketama places keys, so a
/// Rust router and C (or PHP, Python, Ruby…) clients built on libmemcached agree on every
/// key's server.
///
/// The layout (libmemcached `hosts.cc`, `update_continuum`; RJ's libketama before it):
///
/// * server `i` of weight `wᵢ` out of a total `W` over `N` servers gets
///   `floor(wᵢ/W · 160 / 4 · N + 1e-10) · 4` points, computed in `f32` step by step as the C
///   code does. Rounding matters: with 100 equal servers `1/100 · 160 / 4 · 100` is just
///   below 40 in `f32`, so each gets 156 points, not 160; a server far lighter than the
///   mean may get none and then never owns a key;
/// * its `j`th group of four points comes from `MD5("{host}-{j}")`, or
///   `MD5("{host}:{port}-{j}")` when the port is not 11211: the digest's bytes `4x..4x+4`
///   read as a little-endian `u32` are point `x`;
/// * points are sorted by value, ties by server index (libmemcached's `qsort` comparator);
/// * a key hashes to bytes 0..4 of `MD5(key)` as a little-endian `u32`, and belongs to the
///   first point at or above it, wrapping to the first point.
///
/// [`Node::name`] is the server string: `host` (port 11211), `host:port`, or
/// `[v6-address]:port`. A name with several colons and no brackets is a bare IPv6 host on
/// the default port. [`Node::weight`] is libmemcached's server weight. Member order is
/// libmemcached's server list order (it only breaks ties between equal points; libmemcached
/// keeps insertion order unless `MEMCACHED_BEHAVIOR_SORT_HOSTS` is set).
///
/// [`Placement::hash_key`] returns the 32-bit MD5 key hash as a `u64`; a [`Key::U64`] is
/// hashed as its 8 little-endian bytes (libmemcached has no integer keys; this matches a C
/// client that sends those 8 bytes as the key). [`Placement::locate`] uses only the low 32
/// bits of the hash it is given, so any `u64` (e.g. a random one in a benchmark) is a valid
/// input. Lookups use the same radix index as [`Ring`](super::Ring) over the 32-bit points,
/// with answers identical to libmemcached's binary search (checked against fixtures the
/// real library produced). Replica sets walk the circle clockwise (libmemcached's own
/// replication instead uses the servers after the primary in list order).
///
/// Good at: compatibility with a large installed base of memcached clients; weights.
///
/// Bad at: everything compatibility fixes. MD5 dominates a lookup (about 130 ns for a short
/// key against a few ns for xxh3, and about 20 ns for the index search itself), 32-bit
/// positions collide once there are tens of thousands of points, there is no
/// seed, balance is a 160-point ring's (peak-to-mean ≈ 1.25 at 100 servers), and because
/// the point count is recomputed from `N` in `f32`, a change of membership can change every
/// server's count (156 ↔ 160), moving keys between servers that stayed.
#[derive(Clone, Debug)]
pub struct Ketama {
    nodes: Vec<Node>,
    continuum: Continuum,
}

impl Ketama {
    /// Build the continuum libmemcached would build for these servers, in this order.
    ///
    /// Fails on an empty member list, duplicate ids or a zero weight, and on more servers
    /// than one continuum holds (about 800 000).
    pub fn new(nodes: &[Node]) -> Result<Self, PlacementError> {
        validate_nodes(nodes)?;
        let max_servers = ((MAX_POINTS / 160) as usize).min(MAX_OWNERS);
        if nodes.len() > max_servers {
            return Err(PlacementError::TooManyNodes {
                count: nodes.len(),
                max: max_servers,
            });
        }
        let counts = point_counts(nodes);
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if total > MAX_POINTS {
            // f32 rounding could push the sum a few points past 160·N at the largest N.
            return Err(PlacementError::TooManyNodes {
                count: nodes.len(),
                max: max_servers - 1,
            });
        }
        let mut points = Vec::with_capacity(total as usize + 1);
        let mut name = String::new();
        for (owner, (node, &count)) in nodes.iter().zip(&counts).enumerate() {
            let (host, port) = split_host_port(&node.name);
            for group in 0..count / 4 {
                write_point_name(&mut name, host, port, group);
                let digest = Md5::digest(name.as_bytes());
                points.extend(digest.chunks_exact(4).map(|b| Point {
                    hash: u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) << 32,
                    owner: owner as u32,
                }));
            }
        }
        if points.is_empty() {
            // Unreachable: the heaviest server's count is floor(≥ 40 − rounding) · 4 > 0.
            return Err(PlacementError::InvalidParameter {
                name: "weight",
                reason: "no server gets a point on the continuum".into(),
            });
        }
        // libmemcached breaks ties between equal values by server index.
        let rank: Vec<u64> = (0..nodes.len() as u64).collect();
        Ok(Self {
            nodes: nodes.to_vec(),
            continuum: Continuum::build(points, &rank),
        })
    }

    /// Points on the continuum, over all servers.
    pub fn points(&self) -> usize {
        self.continuum.len()
    }
}

/// Points per server as libmemcached computes them (`update_continuum`, weighted branch).
fn point_counts(nodes: &[Node]) -> Vec<u32> {
    let total_weight: u64 = nodes.iter().map(|n| u64::from(n.weight)).sum();
    let servers = nodes.len() as f32;
    nodes
        .iter()
        .map(|n| {
            // float pct = (float) weight / (float) total_weight;
            // floor((float) (pct * 160 / 4 * (float) live_servers + 0.0000000001F)) * 4
            // Each step rounds to f32, in this order, exactly as the C expression does.
            let pct = n.weight as f32 / total_weight as f32;
            let groups = (pct * POINTS_PER_SERVER / 4.0 * servers + 1e-10_f32).floor();
            groups as u32 * 4
        })
        .collect()
}

/// The string libmemcached hashes for a server's `group`th four points: `host-group`, or
/// `host:port-group` when the port is not 11211.
fn write_point_name(out: &mut String, host: &str, port: u16, group: u32) {
    use std::fmt::Write;
    out.clear();
    // Writing to a String cannot fail.
    let _ = if port == DEFAULT_PORT {
        write!(out, "{host}-{group}")
    } else {
        write!(out, "{host}:{port}-{group}")
    };
}

/// `(host, port)` of a server string; port 11211 when absent (or 0, as libmemcached does).
fn split_host_port(name: &str) -> (&str, u16) {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, rest)) => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => (name, None),
            },
            None => (name, None),
        }
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (name, None),
        }
    };
    match port.map(str::parse::<u16>) {
        Some(Ok(0)) | None => (host, DEFAULT_PORT),
        Some(Ok(p)) => (host, p),
        // Not a port: the whole string is the host.
        Some(Err(_)) => (name, DEFAULT_PORT),
    }
}

/// libmemcached's MD5 key hash (`hashkit_md5`): digest bytes 0..4, little-endian.
fn md5_hash(bytes: &[u8]) -> u32 {
    let d = Md5::digest(bytes);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

impl Placement for Ketama {
    fn scheme(&self) -> Scheme {
        Scheme::Ketama
    }

    fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    #[inline]
    fn hash_key(&self, key: Key<'_>) -> u64 {
        u64::from(match key {
            Key::Bytes(b) => md5_hash(b),
            Key::U64(k) => md5_hash(&k.to_le_bytes()),
        })
    }

    /// The server of the first point at or above the low 32 bits of `hash`, wrapping.
    #[inline]
    fn locate(&self, hash: u64) -> usize {
        self.continuum.locate(hash << 32)
    }

    /// Distinct servers clockwise from the key, then (for servers without points) in
    /// member order after the primary.
    fn replicas_hashed(&self, hash: u64, n: usize, out: &mut Vec<usize>) {
        self.continuum
            .replicas(hash << 32, n, self.nodes.len(), out);
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + nodes_memory(&self.nodes) + self.continuum.memory_bytes()
    }

    fn rebuild(&self, nodes: &[Node]) -> Result<Box<dyn Placement>, PlacementError> {
        Ok(Box::new(Self::new(nodes)?))
    }
}

#[cfg(test)]
mod tests {
    //! The fixtures were produced by the real libmemcached: libmemcached-awesome 1.1.4
    //! (Debian package `libmemcached-dev` 1.1.4-1, `dpkg -s libmemcached-dev`), with
    //!
    //! ```text
    //! gcc -O2 -Wall -Wextra -o /tmp/ketama_fixture scripts/fixtures/ketama_fixture.c -lmemcached
    //! /tmp/ketama_fixture engine/tests/fixtures
    //! ```
    //!
    //! (from the repository root; see scripts/fixtures/README.md). Each lists a server list,
    //! the points per server libmemcached put on its continuum, for small lists every
    //! continuum point, and keys with libmemcached's MD5 hash and the server index that
    //! `memcached_generate_hash` returned.
    use super::*;
    use crate::placement::testutil::*;
    use crate::placement::NodeId;

    struct Fixture {
        servers: Vec<Node>,
        points: Vec<u32>,
        continuum: Vec<(u32, usize)>,
        keys: Vec<(String, u32, usize)>,
    }

    fn parse(text: &str) -> Fixture {
        let mut f = Fixture {
            servers: Vec::new(),
            points: Vec::new(),
            continuum: Vec::new(),
            keys: Vec::new(),
        };
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                ["server", name, weight] => {
                    let id = f.servers.len() as u64;
                    f.servers
                        .push(Node::new(id, name).with_weight(weight.parse().unwrap()));
                }
                ["points", server, count] => {
                    assert_eq!(server.parse::<usize>().unwrap(), f.points.len());
                    f.points.push(count.parse().unwrap());
                }
                ["continuum", value, server] => {
                    f.continuum
                        .push((value.parse().unwrap(), server.parse().unwrap()));
                }
                ["key", key, hash, server] => {
                    f.keys.push((
                        key.to_string(),
                        hash.parse().unwrap(),
                        server.parse().unwrap(),
                    ));
                }
                _ => panic!("bad fixture line {line:?}"),
            }
        }
        assert!(!f.servers.is_empty() && !f.keys.is_empty());
        f
    }

    const FIXTURES: [(&str, &str); 6] = [
        ("1", include_str!("../../tests/fixtures/ketama_1.txt")),
        ("3", include_str!("../../tests/fixtures/ketama_3.txt")),
        ("10", include_str!("../../tests/fixtures/ketama_10.txt")),
        (
            "skewed",
            include_str!("../../tests/fixtures/ketama_skewed.txt"),
        ),
        ("100", include_str!("../../tests/fixtures/ketama_100.txt")),
        (
            "equal100",
            include_str!("../../tests/fixtures/ketama_equal100.txt"),
        ),
    ];

    #[test]
    fn matches_libmemcached_fixtures() {
        for (name, text) in FIXTURES {
            let f = parse(text);
            let k = Ketama::new(&f.servers).unwrap();
            let mut per_server = vec![0u32; f.servers.len()];
            for p in k.continuum.points() {
                per_server[p.owner as usize] += 1;
            }
            assert_eq!(per_server, f.points, "{name}: points per server");
            if !f.continuum.is_empty() {
                let ours: Vec<(u32, usize)> = k
                    .continuum
                    .points()
                    .iter()
                    .map(|p| ((p.hash >> 32) as u32, p.owner as usize))
                    .collect();
                assert_eq!(ours, f.continuum, "{name}: continuum");
            }
            for (key, hash, server) in &f.keys {
                let h = k.hash_key(Key::from(key.as_str()));
                assert_eq!(h, u64::from(*hash), "{name}: hash of {key}");
                assert_eq!(k.locate(h), *server, "{name}: server of {key}");
                assert_eq!(
                    k.continuum.locate_binary_search(h << 32),
                    *server,
                    "{name}: {key}"
                );
            }
        }
    }

    #[test]
    fn equal_hundred_servers_get_156_points() {
        // The f32 rounding documented on the type, confirmed by the equal100 fixture.
        assert!(point_counts(&nodes(100)).iter().all(|&c| c == 156));
        assert!(point_counts(&nodes(99)).iter().all(|&c| c == 160));
        assert!(point_counts(&nodes(101)).iter().all(|&c| c == 160));
    }

    #[test]
    fn server_strings() {
        let point_name = |server: &str| {
            let (host, port) = split_host_port(server);
            let mut s = String::new();
            write_point_name(&mut s, host, port, 7);
            s
        };
        assert_eq!(point_name("10.0.0.1"), "10.0.0.1-7");
        assert_eq!(point_name("10.0.0.1:11211"), "10.0.0.1-7");
        assert_eq!(point_name("10.0.0.1:0"), "10.0.0.1-7");
        assert_eq!(point_name("10.0.0.1:11212"), "10.0.0.1:11212-7");
        assert_eq!(
            point_name("cache.example.com:22122"),
            "cache.example.com:22122-7"
        );
        assert_eq!(point_name("host:notaport"), "host:notaport-7");
        assert_eq!(point_name("a:70000"), "a:70000-7");
        assert_eq!(point_name("::1"), "::1-7");
        assert_eq!(point_name("[::1]:11211"), "::1-7");
        assert_eq!(point_name("[::1]"), "::1-7");
        assert_eq!(point_name("[::1]:11212"), "::1:11212-7");
        assert_eq!(point_name("[fe80::1"), "[fe80::1-7");
        assert_eq!(point_name("[fe80::1]x"), "[fe80::1]x-7");
    }

    #[test]
    fn u64_keys_hash_as_le_bytes() {
        let k = Ketama::new(&nodes(3)).unwrap();
        let x = 0x0102_0304_0506_0708u64;
        assert_eq!(
            k.hash_key(Key::U64(x)),
            k.hash_key(Key::Bytes(&x.to_le_bytes()))
        );
        // MD5("") = d41d8cd98f00b204…: bytes d4 1d 8c d9, little-endian.
        assert_eq!(k.hash_key(Key::from("")), 0xd98c_1dd4);
    }

    #[test]
    fn any_u64_hash_is_a_valid_input() {
        let k = Ketama::new(&nodes(7)).unwrap();
        for h in [
            0,
            1,
            u64::from(u32::MAX),
            u64::MAX,
            1 << 32,
            0xdead_beef_0000_0001,
        ] {
            assert!(k.locate(h) < 7);
            assert_eq!(k.locate(h), k.locate(h & 0xffff_ffff));
        }
    }

    #[test]
    fn servers_without_points_still_complete_replica_sets() {
        let members = [
            Node::new(1, "10.0.2.1").with_weight(1),
            Node::new(2, "10.0.2.2").with_weight(500),
            Node::new(3, "10.0.2.3:11212").with_weight(1000),
        ];
        let k = Ketama::new(&members).unwrap();
        let mut out = Vec::new();
        for key in 0..500u64 {
            let h = k.hash_key(Key::U64(key));
            assert_ne!(k.locate(h), 0, "a server without points owns nothing");
            k.replicas_hashed(h, 3, &mut out);
            assert_eq!(out[0], k.locate(h));
            let mut sorted = out.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2]);
        }
    }

    #[test]
    fn balance_and_disruption() {
        // 160 points per server: peak-to-mean ≈ 1 + 3/√160 ≈ 1.25 over 101 servers
        // (N = 101 and 102 both give 160 points, so only the changed server's arcs move).
        let base = Ketama::new(&nodes(101)).unwrap();
        assert!(peak_to_mean(&counts(&base, 1_000_000)) < 1.35);
        let removed: Vec<Node> = nodes(102).into_iter().filter(|n| n.id.0 != 5).collect();
        let other = Ketama::new(&removed).unwrap();
        let moved = moved_fraction(&base, &other, 200_000);
        // One server out, one in: ≈ 2/N moved; allowed 3.2/N (as the ring's 1.6/N each).
        assert!(moved > 0.6 / 101.0 && moved < 3.2 / 101.0, "moved {moved}");
        for key in 0..50_000u64 {
            let before = base.lookup(Key::U64(key)).id;
            let after = other.lookup(Key::U64(key)).id;
            assert!(before == after || before == NodeId(5) || after == NodeId(101));
        }
    }
}

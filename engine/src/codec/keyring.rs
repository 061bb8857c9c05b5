//! The key ring: the keys a node encrypts and decrypts frames with, and its nonce source.
//!
//! Frames are sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`). Its 24-byte
//! nonce is long enough to hold a random per-ring salt plus a counter, so nonces are unique
//! without coordination between nodes and without reading a random source per packet.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};

use super::{DecodeError, KeyRingError};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce on the wire.
pub const NONCE_LEN: usize = 24;
/// Bytes of an authentication tag on the wire.
pub const TAG_LEN: usize = 16;
/// Bytes sealing adds to a frame: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of the random salt that starts every nonce of a key ring.
pub const SALT_LEN: usize = 16;
/// Most keys a ring holds at once. Rotation needs two; the rest is slack for operators who
/// stage a key early or retire one late. Each installed key can cost one failed
/// authentication per forged datagram, so the bound also bounds that work.
pub const MAX_KEYS: usize = 8;

/// A 32-byte XChaCha20-Poly1305 key.
pub type SecretKey = [u8; KEY_LEN];

/// Which key opened a frame, so that operators can see when a retired key stops being used
/// before they remove it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// The frame was not encrypted.
    Plaintext,
    /// The frame was opened with the primary key.
    PrimaryKey,
    /// The frame was opened with an installed key other than the primary: its sender has not
    /// switched to the current primary yet.
    OtherKey,
}

/// Unique nonces for one key ring and its clones: a random salt and a counter.
struct NonceSource {
    salt: [u8; SALT_LEN],
    counter: AtomicU64,
}

impl NonceSource {
    fn next(&self) -> [u8; NONCE_LEN] {
        // Relaxed suffices: only the uniqueness of each value matters, and fetch_add hands
        // out every value once whatever the ordering. 2^64 frames do not happen.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..SALT_LEN].copy_from_slice(&self.salt);
        nonce[SALT_LEN..].copy_from_slice(&n.to_be_bytes());
        nonce
    }
}

/// The keys a node seals and opens frames with.
///
/// Frames are sealed with the primary key; opening tries the primary first and then every
/// other installed key, so keys rotate with no downtime:
///
/// 1. [`install`](Self::install) the new key on every node (all still seal with the old one,
///    all can open both);
/// 2. [`set_primary`](Self::set_primary) the new key on every node (frames sealed with either
///    key open everywhere while this rolls out);
/// 3. once no node reports [`Encryption::OtherKey`] any more, [`remove`](Self::remove) the
///    old key everywhere.
///
/// Moving a cluster from plaintext to encryption works the same way with
/// [`set_accept_plaintext`](Self::set_accept_plaintext): give every node a ring that accepts
/// plaintext while still sending plaintext, then have every node seal, then stop accepting
/// plaintext.
///
/// Nonces are a 16-byte salt drawn from the OS when the ring is created followed by a 64-bit
/// counter, so they never repeat within a ring, collide across rings only with the salt
/// (probability about n²/2¹²⁹ for n rings), and sealing reads no random source. Clones share
/// the salt *and* the counter, so a ring cloned to change its keys (copy, modify, publish)
/// keeps handing out fresh nonces.
#[derive(Clone)]
pub struct KeyRing {
    /// `keys[0]` is the primary; then the others in the order they were installed, which is
    /// the order opening tries them in.
    keys: [SecretKey; MAX_KEYS],
    len: usize,
    accept_plaintext: bool,
    nonces: Arc<NonceSource>,
}

impl KeyRing {
    /// A ring with one key, its primary, and a nonce salt from the OS random source. Does
    /// not accept plaintext frames.
    pub fn new(primary: SecretKey) -> Result<Self, KeyRingError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(KeyRingError::Random)?;
        Ok(Self::with_salt(primary, salt))
    }

    /// A ring with one key and the given nonce salt, for deterministic tests and fuzzing.
    ///
    /// Two rings with the same salt and a key in common produce the same nonces: production
    /// code uses [`new`](Self::new).
    pub fn with_salt(primary: SecretKey, salt: [u8; SALT_LEN]) -> Self {
        let mut keys = [[0u8; KEY_LEN]; MAX_KEYS];
        keys[0] = primary;
        Self {
            keys,
            len: 1,
            accept_plaintext: false,
            nonces: Arc::new(NonceSource {
                salt,
                counter: AtomicU64::new(0),
            }),
        }
    }

    /// Add a key that frames may be opened with. Installing a key already installed does
    /// nothing.
    pub fn install(&mut self, key: SecretKey) -> Result<(), KeyRingError> {
        if self.position(&key).is_some() {
            return Ok(());
        }
        if self.len == MAX_KEYS {
            return Err(KeyRingError::Full);
        }
        self.keys[self.len] = key;
        self.len += 1;
        Ok(())
    }

    /// Make an installed key the primary: frames are sealed with it from now on, and opening
    /// tries it first. The previous primary stays installed.
    pub fn set_primary(&mut self, key: SecretKey) -> Result<(), KeyRingError> {
        let at = self.position(&key).ok_or(KeyRingError::NotInstalled)?;
        // Move it to the front, keeping the others in order.
        self.keys[..=at].rotate_right(1);
        Ok(())
    }

    /// Remove a key that is not the primary. Frames sealed with it no longer open.
    pub fn remove(&mut self, key: SecretKey) -> Result<(), KeyRingError> {
        match self.position(&key) {
            None => Err(KeyRingError::NotInstalled),
            Some(0) => Err(KeyRingError::RemovePrimary),
            Some(at) => {
                self.keys[at..self.len].rotate_left(1);
                self.len -= 1;
                // Do not leave the removed key's bytes in the unused slot.
                self.keys[self.len] = [0u8; KEY_LEN];
                Ok(())
            }
        }
    }

    /// Whether `key` is installed.
    pub fn contains(&self, key: &SecretKey) -> bool {
        self.position(key).is_some()
    }

    /// Whether `key` is the primary.
    pub fn is_primary(&self, key: &SecretKey) -> bool {
        self.keys[0] == *key
    }

    /// Number of installed keys (at least one: the primary).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a ring holds at least its primary key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Accept plaintext frames as well (while a cluster migrates to encryption), or not.
    pub fn set_accept_plaintext(&mut self, accept: bool) {
        self.accept_plaintext = accept;
    }

    /// This ring, accepting plaintext frames or not.
    pub fn with_accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    /// Whether plaintext frames are accepted.
    pub fn accepts_plaintext(&self) -> bool {
        self.accept_plaintext
    }

    fn position(&self, key: &SecretKey) -> Option<usize> {
        self.keys[..self.len].iter().position(|k| k == key)
    }

    /// Encrypt `body` in place with the primary key, authenticating `header` with it; write
    /// the nonce used to `nonce` and return the tag.
    pub(crate) fn seal(
        &self,
        header: &[u8],
        nonce: &mut [u8; NONCE_LEN],
        body: &mut [u8],
    ) -> [u8; TAG_LEN] {
        *nonce = self.nonces.next();
        let cipher = XChaCha20Poly1305::new(&self.keys[0].into());
        // The only failure is a message of 256 GiB or more; frames are at most 64 KiB.
        let tag = cipher
            .encrypt_inout_detached(&(*nonce).into(), header, body.into())
            .expect("a datagram is far below the AEAD length limit");
        tag.into()
    }

    /// Authenticate `header` and `body` against `tag` and decrypt `body` in place, trying
    /// the primary key first and then the others.
    ///
    /// A failed attempt leaves `body` as it was: `chacha20poly1305` verifies the tag before
    /// it decrypts (its documented order), which is what lets the next key be tried on the
    /// same bytes. The tests check rotation through exactly that path.
    pub(crate) fn open(
        &self,
        header: &[u8],
        nonce: &[u8; NONCE_LEN],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<Encryption, DecodeError> {
        let nonce = (*nonce).into();
        let tag = (*tag).into();
        for (i, key) in self.keys[..self.len].iter().enumerate() {
            let cipher = XChaCha20Poly1305::new(&(*key).into());
            if cipher
                .decrypt_inout_detached(&nonce, header, (&mut *body).into(), &tag)
                .is_ok()
            {
                return Ok(if i == 0 {
                    Encryption::PrimaryKey
                } else {
                    Encryption::OtherKey
                });
            }
        }
        Err(DecodeError::Unauthenticated)
    }
}

impl fmt::Debug for KeyRing {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.len)
            .field("accept_plaintext", &self.accept_plaintext)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SecretKey = [1; KEY_LEN];
    const B: SecretKey = [2; KEY_LEN];
    const C: SecretKey = [3; KEY_LEN];

    fn seal(ring: &KeyRing, body: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>, [u8; TAG_LEN]) {
        let mut nonce = [0; NONCE_LEN];
        let mut ct = body.to_vec();
        let tag = ring.seal(b"hdr", &mut nonce, &mut ct);
        (nonce, ct, tag)
    }

    #[test]
    fn nonces_are_salt_then_counter_and_shared_by_clones() {
        let ring = KeyRing::with_salt(A, [7; SALT_LEN]);
        let clone = ring.clone();
        let (n0, ..) = seal(&ring, b"x");
        let (n1, ..) = seal(&clone, b"x");
        let (n2, ..) = seal(&ring, b"x");
        assert_eq!(n0[..SALT_LEN], [7; SALT_LEN]);
        assert_eq!(n0[SALT_LEN..], 0u64.to_be_bytes());
        assert_eq!(n1[SALT_LEN..], 1u64.to_be_bytes());
        assert_eq!(n2[SALT_LEN..], 2u64.to_be_bytes());
    }

    #[test]
    fn os_salts_differ() {
        let a = KeyRing::new(A).unwrap();
        let b = KeyRing::new(A).unwrap();
        assert_ne!(a.nonces.salt, b.nonces.salt);
    }

    #[test]
    fn open_reverses_seal_and_checks_everything() {
        let ring = KeyRing::with_salt(A, [0; SALT_LEN]);
        let (nonce, mut ct, tag) = seal(&ring, b"hello gossip");
        assert_ne!(ct, b"hello gossip");
        let mut body = ct.clone();
        assert_eq!(
            ring.open(b"hdr", &nonce, &mut body, &tag),
            Ok(Encryption::PrimaryKey)
        );
        assert_eq!(body, b"hello gossip");
        // Another header (the associated data) does not authenticate.
        assert_eq!(
            ring.open(b"hdR", &nonce, &mut ct.clone(), &tag),
            Err(DecodeError::Unauthenticated)
        );
        // A changed ciphertext byte does not, and the bytes are left as they were.
        ct[0] ^= 1;
        let before = ct.clone();
        assert_eq!(
            ring.open(b"hdr", &nonce, &mut ct, &tag),
            Err(DecodeError::Unauthenticated)
        );
        assert_eq!(ct, before);
    }

    #[test]
    fn rotation_steps() {
        let mut ring = KeyRing::with_salt(A, [0; SALT_LEN]);
        let (nonce, ct, tag) = seal(&ring, b"under A");

        ring.install(B).unwrap();
        ring.install(B).unwrap(); // idempotent
        assert_eq!(ring.len(), 2);
        ring.set_primary(B).unwrap();
        assert!(ring.is_primary(&B));
        // Sealed under the old primary: still opens, reported as an older key.
        let mut body = ct.clone();
        assert_eq!(
            ring.open(b"hdr", &nonce, &mut body, &tag),
            Ok(Encryption::OtherKey)
        );
        assert_eq!(body, b"under A");

        assert_eq!(ring.remove(B), Err(KeyRingError::RemovePrimary));
        ring.remove(A).unwrap();
        assert!(!ring.contains(&A));
        assert_eq!(ring.remove(A), Err(KeyRingError::NotInstalled));
        assert_eq!(ring.set_primary(A), Err(KeyRingError::NotInstalled));
        assert_eq!(
            ring.open(b"hdr", &nonce, &mut ct.clone(), &tag),
            Err(DecodeError::Unauthenticated)
        );
    }

    #[test]
    fn set_primary_keeps_the_others_in_order() {
        let mut ring = KeyRing::with_salt(A, [0; SALT_LEN]);
        ring.install(B).unwrap();
        ring.install(C).unwrap();
        ring.set_primary(C).unwrap();
        assert_eq!(ring.keys[..3], [C, A, B]);
        ring.remove(A).unwrap();
        assert_eq!(ring.keys[..2], [C, B]);
        assert_eq!(ring.keys[2], [0; KEY_LEN]);
    }

    #[test]
    fn ring_is_bounded() {
        let mut ring = KeyRing::with_salt([0; KEY_LEN], [0; SALT_LEN]);
        for i in 1..MAX_KEYS as u8 {
            ring.install([i; KEY_LEN]).unwrap();
        }
        assert_eq!(ring.install([0xff; KEY_LEN]), Err(KeyRingError::Full));
        assert_eq!(ring.len(), MAX_KEYS);
    }

    #[test]
    fn debug_hides_keys() {
        let ring = KeyRing::with_salt([0xab; KEY_LEN], [0; SALT_LEN]);
        let shown = format!("{ring:?}");
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
    }
}

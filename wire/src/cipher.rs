//! Encryption of the engine link: what the hub and its engines say to each other is readable by
//! nobody else on the network.
//!
//! The link's signature keeps strangers from speaking on it, but an engine on another node (mpi,
//! slurm, ssh without `--tunnel`) dials the hub over a network where anyone on the path could
//! read the cells' objects, pushed values and outputs. The link is therefore sealed with an AEAD,
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), always, whether the hub listens on
//! loopback or not: there is no plain mode to misconfigure.
//!
//! - The key is derived with HKDF-SHA256 from the link's existing secret (the key in the engine
//!   connection file), so no second secret has to be generated, written or shipped.
//! - Every sealed piece carries its own fresh random 24-byte nonce. The hub and each of its
//!   engines seal with the same key and keep no shared counter; with 192 random bits two of them
//!   never pick the same nonce, where ChaCha20-Poly1305's 96 bits would make that a risk.
//! - The associated data binds a piece to its message and its place in it, so a piece cannot be
//!   moved into another message or position unnoticed.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;

/// What HKDF's `info` says the derived key is for, so it can never equal a key derived from the
/// same secret for another purpose (the HMAC signature uses the secret itself).
const KEY_PURPOSE: &[u8] = b"rustpx engine link: XChaCha20-Poly1305 key, v1";

/// Bytes of the random nonce in front of each sealed piece.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the Poly1305 tag at the end of each sealed piece.
pub const TAG_BYTES: usize = 16;

/// Why a sealed piece could not be opened. Either is a reason to drop the message it came in.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("a sealed frame of {0} bytes is shorter than its nonce and tag")]
    Truncated(usize),
    #[error("a sealed frame does not open (wrong key, or it was altered or moved)")]
    Unauthentic,
}

/// Seals and opens pieces of engine-link messages with the key derived from the link's secret.
#[derive(Clone)]
pub struct LinkCipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for LinkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("LinkCipher")
    }
}

impl LinkCipher {
    /// The cipher for a link whose secret (the connection file's `key`) is `secret`.
    pub fn from_link_key(secret: &str) -> Self {
        let mut key = Key::default();
        // HKDF-SHA256 can expand up to 8,160 bytes; 32 always fits.
        if Hkdf::<Sha256>::new(None, secret.as_bytes())
            .expand(KEY_PURPOSE, &mut key)
            .is_err()
        {
            unreachable!("HKDF-SHA256 always yields 32 bytes");
        }
        LinkCipher {
            aead: XChaCha20Poly1305::new(&key),
        }
    }

    /// `plaintext` encrypted and authenticated together with `context`: nonce, ciphertext, tag.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut sealed = Vec::with_capacity(NONCE_BYTES + plaintext.len() + TAG_BYTES);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .aead
            .encrypt_in_place_detached(&nonce, context, &mut sealed[NONCE_BYTES..]);
        match tag {
            Ok(tag) => sealed.extend_from_slice(&tag),
            // Only a piece over 256 GiB fails, far beyond the link's 1 GiB frames.
            Err(_) => unreachable!("a link frame is too long for XChaCha20"),
        }
        sealed
    }

    /// The plaintext of a piece [`seal`](Self::seal)ed with the same key and `context`; nothing
    /// is decrypted unless the tag is right.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(CipherError::Truncated(sealed.len()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_BYTES);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let mut plaintext = ciphertext.to_vec();
        self.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                context,
                &mut plaintext,
                tag.into(),
            )
            .map_err(|_| CipherError::Unauthentic)?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> LinkCipher {
        LinkCipher::from_link_key("0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_sealed_piece_opens_to_what_was_sealed() {
        let sealed = cipher().seal(b"print secret", b"ctx");
        assert_eq!(sealed.len(), NONCE_BYTES + 12 + TAG_BYTES);
        assert_eq!(cipher().open(&sealed, b"ctx").unwrap(), b"print secret");
        let empty = cipher().seal(b"", b"ctx");
        assert_eq!(cipher().open(&empty, b"ctx").unwrap(), b"");
    }

    #[test]
    fn the_plaintext_does_not_appear_in_what_is_sent() {
        let plaintext = b"a distinctive string that must stay private";
        let sealed = cipher().seal(plaintext, b"");
        assert!(!sealed
            .windows(plaintext.len())
            .any(|window| window == plaintext));
    }

    #[test]
    fn two_seals_of_one_piece_differ() {
        let (a, b) = (cipher().seal(b"same", b"c"), cipher().seal(b"same", b"c"));
        assert_ne!(a, b);
        assert_ne!(a[..NONCE_BYTES], b[..NONCE_BYTES]);
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let sealed = cipher().seal(b"payload", b"c");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                cipher().open(&tampered, b"c"),
                Err(CipherError::Unauthentic),
                "byte {i}"
            );
        }
    }

    #[test]
    fn another_key_or_context_is_refused() {
        let sealed = cipher().seal(b"payload", b"c");
        let other = LinkCipher::from_link_key("another secret");
        assert_eq!(other.open(&sealed, b"c"), Err(CipherError::Unauthentic));
        assert_eq!(cipher().open(&sealed, b"d"), Err(CipherError::Unauthentic));
    }

    #[test]
    fn truncated_pieces_are_refused_without_panicking() {
        let sealed = cipher().seal(b"payload", b"c");
        for len in 0..sealed.len() {
            let result = cipher().open(&sealed[..len], b"c");
            if len < NONCE_BYTES + TAG_BYTES {
                assert_eq!(result, Err(CipherError::Truncated(len)));
            } else {
                assert_eq!(result, Err(CipherError::Unauthentic));
            }
        }
    }
}

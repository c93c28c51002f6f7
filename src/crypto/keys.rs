//! Key material and the small AEAD/HKDF helpers the key hierarchy and the blob store share.
//!
//! Every long-lived secret (master key, firm key, matter keys, blob data keys) is held in a
//! [`SecretKey`], whose bytes are zeroized when it is dropped. ring's expanded key schedules
//! (`LessSafeKey`, `hmac::Key`) are built from those bytes when needed and are not wiped by ring;
//! the keyring therefore keeps only raw [`SecretKey`]s in its caches and builds ring keys per call.

use crate::{Error, Result};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every symmetric key in the hierarchy.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD tag (both ciphers).
pub const TAG_LEN: usize = 16;
/// Length of an AEAD nonce (both ciphers).
pub const NONCE_LEN: usize = 12;

/// A 256-bit secret, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Wraps existing bytes (the caller should zeroize its own copy).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn random() -> Result<Self> {
        let mut k = SecretKey([0u8; KEY_LEN]);
        fill_random(&mut k.0)?;
        Ok(k)
    }

    /// The raw bytes (for wrapping and for building ring keys).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives an independent subkey with HKDF-SHA256 (`info` names the purpose).
    pub fn derive(&self, info: &[u8]) -> SecretKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sdx-portal hkdf v1").extract(&self.0);
        let mut out = SecretKey([0u8; KEY_LEN]);
        let info = [info];
        // expand/fill only fail when the requested length exceeds 255 * 32 bytes; 32 never does.
        if let Ok(okm) = prk.expand(&info, hkdf::HKDF_SHA256) {
            let _ = okm.fill(&mut out.0);
        }
        out
    }

    /// HMAC-SHA256 of `data` under this key.
    pub fn hmac(&self, data: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// HMAC-SHA256 over several parts (concatenated).
    pub fn hmac_parts(&self, parts: &[&[u8]]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A ring AEAD key for `cipher`.
    pub fn aead_key(&self, cipher: Cipher) -> Result<LessSafeKey> {
        // Only fails for a wrong key length; both algorithms take 32 bytes.
        UnboundKey::new(cipher.algorithm(), &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| Error::Key("the AEAD key has the wrong length".into()))
    }
}

/// Fills `buf` from the OS random source.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::Key("the operating system's random number generator failed".into()))
}

/// The content cipher of the blob store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Cipher {
    /// AES-256-GCM (fastest with AES-NI/VAES; the default).
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (constant-time without AES hardware).
    ChaCha20Poly1305,
}

impl Cipher {
    /// The one-byte id stored with sealed data.
    pub fn id(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
            Cipher::ChaCha20Poly1305 => 2,
        }
    }

    /// Inverse of [`Cipher::id`].
    pub fn from_id(id: u8) -> Option<Cipher> {
        match id {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The ring algorithm.
    pub fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

impl std::str::FromStr for Cipher {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "aes256gcm" | "aes" => Ok(Cipher::Aes256Gcm),
            "chacha20poly1305" | "chacha" => Ok(Cipher::ChaCha20Poly1305),
            _ => Err(Error::Invalid(format!(
                "unknown cipher \"{s}\" (expected aes-256-gcm or chacha20-poly1305)"
            ))),
        }
    }
}

/// Version byte of [`wrap`]ped keys.
const WRAP_V1: u8 = 1;
/// Length of a wrapped 32-byte key: version, nonce, ciphertext, tag.
pub const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

/// Encrypts `key` under `kek` (AES-256-GCM, random nonce) bound to `aad`.
pub fn wrap(kek: &SecretKey, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(WRAP_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(key.as_bytes());
    let tag = kek
        .aead_key(Cipher::Aes256Gcm)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| Error::Key("sealing a key failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Reverses [`wrap`]. `what` names the key for the error message.
pub fn unwrap(kek: &SecretKey, aad: &[u8], wrapped: &[u8], what: &str) -> Result<SecretKey> {
    if wrapped.len() != WRAPPED_LEN || wrapped.first() != Some(&WRAP_V1) {
        return Err(Error::Integrity(format!(
            "the stored {what} is malformed ({} bytes)",
            wrapped.len()
        )));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&wrapped[1..1 + NONCE_LEN]);
    let mut buf = zeroize::Zeroizing::new([0u8; KEY_LEN + TAG_LEN]);
    buf.copy_from_slice(&wrapped[1 + NONCE_LEN..]);
    let plain = kek
        .aead_key(Cipher::Aes256Gcm)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf[..],
        )
        .map_err(|_| {
            Error::Integrity(format!(
                "the stored {what} failed its integrity check (tampered, or moved from another record)"
            ))
        })?;
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(plain);
    let key = SecretKey(k);
    k.zeroize();
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_separates_purposes() {
        let k = SecretKey::from_bytes([7u8; 32]);
        assert_ne!(k.derive(b"a").as_bytes(), k.derive(b"b").as_bytes());
        assert_eq!(k.derive(b"a").as_bytes(), k.derive(b"a").as_bytes());
        assert_ne!(k.derive(b"a").as_bytes(), k.as_bytes());
    }

    #[test]
    fn wrap_round_trip_and_binding() {
        let kek = SecretKey::random().unwrap();
        let key = SecretKey::random().unwrap();
        let w = wrap(&kek, b"ctx1", &key).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(
            unwrap(&kek, b"ctx1", &w, "k").unwrap().as_bytes(),
            key.as_bytes()
        );
        assert!(matches!(
            unwrap(&kek, b"ctx2", &w, "k"),
            Err(Error::Integrity(_))
        ));
        let other = SecretKey::random().unwrap();
        assert!(unwrap(&other, b"ctx1", &w, "k").is_err());
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert!(unwrap(&kek, b"ctx1", &bad, "k").is_err());
        assert!(unwrap(&kek, b"ctx1", &w[..40], "k").is_err());
    }

    #[test]
    fn cipher_ids_round_trip() {
        for c in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            assert_eq!(Cipher::from_id(c.id()), Some(c));
        }
        assert_eq!(Cipher::from_id(0), None);
        assert_eq!(
            "chacha20-poly1305".parse::<Cipher>().unwrap(),
            Cipher::ChaCha20Poly1305
        );
        assert!("des".parse::<Cipher>().is_err());
    }
}

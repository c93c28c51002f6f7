//! The committed blob format, the wrapped data key in
//! [`BlobRef::sealed_key`](crate::blob::BlobRef::sealed_key), and the staging scratch format.
//!
//! **Committed blob file** `blobs/<matter:016x>/<blob id:032x>`: the plaintext cut into chunks of
//! `C` bytes (the last one shorter, possibly empty — an empty blob is one empty chunk), each
//! stored as `ciphertext ‖ 16-byte tag`, back to back with no header. Chunk `i` is at offset
//! `i·(C+16)`, so a range read decrypts only the chunks it touches.
//! - key: the blob's own random data key;
//! - nonce: `i` (u64 big-endian) ‖ final flag (1 byte) ‖ 3 zero bytes — derived, never stored;
//! - AAD: `"sdxblob1"` ‖ blob id ‖ cipher id ‖ log2(C).
//!
//! So a chunk moved to another index, or the last chunk dropped (truncation) or followed by more
//! (extension), or a chunk or whole file from another blob, fails authentication.
//!
//! **Wrapped data key** (`BlobRef::sealed_key`, 63 bytes): `1 ‖ cipher id ‖ log2(C) ‖
//! wrap(matter blob key, data key)` where the wrap AAD binds the matter id, blob id, plaintext
//! length and SHA-256: a reference edited, or moved to another matter, fails to unwrap.
//!
//! **Scratch file** (random-access staging): slot `i` at `i·(8+C+16)` holds `counter (u64 LE) ‖
//! ciphertext of C bytes ‖ tag` under a per-staging random key with nonce = counter, a per-staging
//! write counter that never repeats (so rewriting a chunk never reuses a nonce); AAD = slot index.
//! Counter 0 (a hole) means "never written".

use crate::blob::BlobId;
use crate::crypto::keys::{Cipher, SecretKey, TAG_LEN, unwrap, wrap};
use crate::model::MatterId;
use crate::{Error, Result};
use ring::aead::{Aad, LessSafeKey, Nonce};

/// Smallest and largest supported chunk sizes (log2).
pub const MIN_CHUNK_LOG2: u8 = 12;
/// See [`MIN_CHUNK_LOG2`].
pub const MAX_CHUNK_LOG2: u8 = 24;
/// Largest blob the store accepts (4 TiB).
pub const MAX_BLOB_LEN: u64 = 1 << 42;
const KEY_V1: u8 = 1;
const TAG: u64 = TAG_LEN as u64;

/// Chunk geometry of one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Plaintext bytes per chunk.
    pub c: u64,
    pub log2: u8,
}

impl Layout {
    pub fn new(log2: u8) -> Result<Layout> {
        if !(MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2).contains(&log2) {
            return Err(Error::Integrity(format!(
                "unsupported blob chunk size 2^{log2}"
            )));
        }
        Ok(Layout {
            c: 1u64 << log2,
            log2,
        })
    }
    pub fn cu(&self) -> usize {
        // c <= 16 MiB always fits usize.
        self.c as usize
    }
    /// Number of chunks of a blob of `len` bytes (at least one).
    pub fn chunks(&self, len: u64) -> u64 {
        if len == 0 { 1 } else { (len - 1) / self.c + 1 }
    }
    /// Stored bytes per full chunk.
    pub fn stride(&self) -> u64 {
        self.c + TAG
    }
    /// Size of the committed file of a blob of `len` bytes.
    pub fn file_len(&self, len: u64) -> u64 {
        len + self.chunks(len) * TAG
    }
    /// Plaintext length of chunk `i` of a blob of `len` bytes.
    pub fn plain_len(&self, len: u64, i: u64) -> u64 {
        len.saturating_sub(i * self.c).min(self.c)
    }
    /// Scratch slot size.
    pub fn slot(&self) -> u64 {
        8 + self.c + TAG
    }
}

/// Seals and opens the chunks of one committed blob.
pub(crate) struct ChunkCipher {
    key: LessSafeKey,
    aad: [u8; 26],
    id: BlobId,
}

impl ChunkCipher {
    pub fn new(data_key: &SecretKey, id: BlobId, cipher: Cipher, layout: Layout) -> Result<Self> {
        let mut aad = [0u8; 26];
        aad[..8].copy_from_slice(b"sdxblob1");
        aad[8..24].copy_from_slice(&id.0);
        aad[24] = cipher.id();
        aad[25] = layout.log2;
        Ok(ChunkCipher {
            key: data_key.aead_key(cipher)?,
            aad,
            id,
        })
    }

    /// The blob id in hex (for messages).
    pub fn id_hex(&self) -> String {
        self.id.to_hex()
    }

    fn nonce(i: u64, fin: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&i.to_be_bytes());
        n[8] = u8::from(fin);
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `buf` in place as chunk `i`; returns the tag.
    pub fn seal(&self, i: u64, fin: bool, buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(i, fin), Aad::from(&self.aad[..]), buf)
            .map_err(|_| Error::Key("sealing a blob chunk failed".into()))?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Decrypts chunk `i` found at `in_out[src..]` (ciphertext ‖ tag, running to the end of
    /// `in_out`) and writes the plaintext to the start of `in_out` (ring shifts while it
    /// decrypts, so packing chunks costs no extra pass). Returns the plaintext length.
    pub fn open_within(&self, i: u64, fin: bool, in_out: &mut [u8], src: usize) -> Result<usize> {
        self.key
            .open_within(Self::nonce(i, fin), Aad::from(&self.aad[..]), in_out, src..)
            .map(|p| p.len())
            .map_err(|_| self.chunk_error(i))
    }

    fn chunk_error(&self, i: u64) -> Error {
        Error::Integrity(format!(
            "blob {}: chunk {i} failed its integrity check (modified, reordered, truncated, \
             extended, or taken from another blob)",
            self.id.to_hex()
        ))
    }
}

/// What [`BlobRef::sealed_key`](crate::blob::BlobRef::sealed_key) carries besides the key.
pub(crate) struct KeyInfo {
    pub cipher: Cipher,
    pub layout: Layout,
}

/// Length of a sealed key.
pub const SEALED_KEY_LEN: usize = 3 + crate::crypto::keys::WRAPPED_LEN;

#[allow(clippy::too_many_arguments)]
fn key_aad(
    matter: MatterId,
    id: BlobId,
    len: u64,
    sha256: &[u8; 32],
    cipher: Cipher,
    log2: u8,
) -> Vec<u8> {
    let mut a = Vec::with_capacity(8 + 8 + 16 + 8 + 32 + 2);
    a.extend_from_slice(b"sdxbkey1");
    a.extend_from_slice(&matter.0.to_be_bytes());
    a.extend_from_slice(&id.0);
    a.extend_from_slice(&len.to_be_bytes());
    a.extend_from_slice(sha256);
    a.push(cipher.id());
    a.push(log2);
    a
}

/// Wraps a blob's data key for its [`BlobRef`](crate::blob::BlobRef).
pub(crate) fn seal_data_key(
    matter_blob_key: &SecretKey,
    matter: MatterId,
    id: BlobId,
    len: u64,
    sha256: &[u8; 32],
    info: &KeyInfo,
    data_key: &SecretKey,
) -> Result<Vec<u8>> {
    let aad = key_aad(matter, id, len, sha256, info.cipher, info.layout.log2);
    let mut out = vec![KEY_V1, info.cipher.id(), info.layout.log2];
    out.extend_from_slice(&wrap(matter_blob_key, &aad, data_key)?);
    Ok(out)
}

/// Reads the cipher and chunk size from a sealed key without unwrapping it.
pub(crate) fn key_info(sealed: &[u8]) -> Result<KeyInfo> {
    match sealed {
        [KEY_V1, c, l, ..] if sealed.len() == SEALED_KEY_LEN => Ok(KeyInfo {
            cipher: Cipher::from_id(*c).ok_or_else(|| {
                Error::Integrity(format!("blob reference names an unknown cipher ({c})"))
            })?,
            layout: Layout::new(*l)?,
        }),
        _ => Err(Error::Integrity(format!(
            "blob reference has a malformed key ({} bytes)",
            sealed.len()
        ))),
    }
}

/// Unwraps the data key of a blob reference.
pub(crate) fn open_data_key(
    matter_blob_key: &SecretKey,
    matter: MatterId,
    id: BlobId,
    len: u64,
    sha256: &[u8; 32],
    sealed: &[u8],
) -> Result<(SecretKey, KeyInfo)> {
    let info = key_info(sealed)?;
    let aad = key_aad(matter, id, len, sha256, info.cipher, info.layout.log2);
    let key = unwrap(matter_blob_key, &aad, &sealed[3..], "blob key").map_err(|_| {
        Error::Integrity(format!(
            "blob {}: its reference does not match its key (the reference was modified, or belongs \
             to another matter)",
            id.to_hex()
        ))
    })?;
    Ok((key, info))
}

/// Seals and opens scratch slots.
pub(crate) struct SlotCipher {
    key: LessSafeKey,
}

impl SlotCipher {
    pub fn new(key: &SecretKey) -> Result<Self> {
        Ok(SlotCipher {
            key: key.aead_key(Cipher::Aes256Gcm)?,
        })
    }
    fn nonce(counter: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&counter.to_le_bytes());
        Nonce::assume_unique_for_key(n)
    }
    fn aad(slot: u64) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(b"sdxscr1\0");
        a[8..].copy_from_slice(&slot.to_be_bytes());
        a
    }
    pub fn seal(&self, slot: u64, counter: u64, buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(counter), Aad::from(Self::aad(slot)), buf)
            .map_err(|_| Error::Key("sealing a staging chunk failed".into()))?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }
    pub fn open(&self, slot: u64, counter: u64, ct_tag: &mut [u8]) -> Result<usize> {
        self.key
            .open_in_place(Self::nonce(counter), Aad::from(Self::aad(slot)), ct_tag)
            .map(|p| p.len())
            .map_err(|_| {
                Error::Integrity(format!(
                    "staged upload: chunk {slot} of the staging file failed its integrity check"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_math() {
        let l = Layout::new(16).unwrap();
        assert_eq!(l.chunks(0), 1);
        assert_eq!(l.chunks(1), 1);
        assert_eq!(l.chunks(65536), 1);
        assert_eq!(l.chunks(65537), 2);
        assert_eq!(l.file_len(0), 16);
        assert_eq!(l.file_len(65537), 65537 + 32);
        assert_eq!(l.plain_len(65537, 0), 65536);
        assert_eq!(l.plain_len(65537, 1), 1);
        assert!(Layout::new(11).is_err());
        assert!(Layout::new(25).is_err());
    }

    #[test]
    fn chunk_nonce_binds_index_final_flag_and_blob() {
        let k = SecretKey::random().unwrap();
        let l = Layout::new(12).unwrap();
        let id = BlobId::random();
        let cc = ChunkCipher::new(&k, id, Cipher::Aes256Gcm, l).unwrap();
        let mut buf = b"hello chunk".to_vec();
        let tag = cc.seal(3, false, &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        let ok = |i, fin, cc: &ChunkCipher| {
            let mut b = buf.clone();
            cc.open_within(i, fin, &mut b, 0).is_ok()
        };
        assert!(ok(3, false, &cc));
        assert!(!ok(3, true, &cc), "final flag not bound");
        assert!(!ok(2, false, &cc), "index not bound");
        let other_id = ChunkCipher::new(&k, BlobId::random(), Cipher::Aes256Gcm, l).unwrap();
        assert!(!ok(3, false, &other_id), "blob id not bound");
        let other_cipher = ChunkCipher::new(&k, id, Cipher::ChaCha20Poly1305, l).unwrap();
        assert!(!ok(3, false, &other_cipher));
    }

    #[test]
    fn sealed_key_binds_reference() {
        let mk = SecretKey::random().unwrap();
        let dk = SecretKey::random().unwrap();
        let id = BlobId::random();
        let sha = [9u8; 32];
        let info = KeyInfo {
            cipher: Cipher::ChaCha20Poly1305,
            layout: Layout::new(16).unwrap(),
        };
        let s = seal_data_key(&mk, MatterId(1), id, 10, &sha, &info, &dk).unwrap();
        assert_eq!(s.len(), SEALED_KEY_LEN);
        let (k, i) = open_data_key(&mk, MatterId(1), id, 10, &sha, &s).unwrap();
        assert_eq!(k.as_bytes(), dk.as_bytes());
        assert_eq!(i.cipher, Cipher::ChaCha20Poly1305);
        assert!(open_data_key(&mk, MatterId(2), id, 10, &sha, &s).is_err());
        assert!(open_data_key(&mk, MatterId(1), BlobId::random(), 10, &sha, &s).is_err());
        assert!(open_data_key(&mk, MatterId(1), id, 11, &sha, &s).is_err());
        assert!(open_data_key(&mk, MatterId(1), id, 10, &[8u8; 32], &s).is_err());
        let mut bad = s.clone();
        bad[1] = Cipher::Aes256Gcm.id();
        assert!(open_data_key(&mk, MatterId(1), id, 10, &sha, &bad).is_err());
        let mut bad = s.clone();
        bad[2] = 17;
        assert!(open_data_key(&mk, MatterId(1), id, 10, &sha, &bad).is_err());
        assert!(open_data_key(&mk, MatterId(1), id, 10, &sha, &s[..40]).is_err());
    }
}

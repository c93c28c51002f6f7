//! Document contents: the blob-store seam.
//!
//! The portal never stores document bytes itself: it stages an upload in a [`BlobStore`], commits
//! it (the bytes are durable when [`StagedBlob::commit`] returns) and then records the returned
//! [`BlobRef`] in the database in the same commit as the version and its audit entry. A staged blob
//! that is never committed is invisible; one committed but never recorded (a crash between the two)
//! is an orphan that [`BlobStore::retain`] removes at the next open.
//!
//! **Small blobs kept in the database.** A store may hand a small blob's stored form back in
//! [`BlobRef::inline`] instead of keeping it itself (the encrypted store does for uploads of up to
//! [`encrypted::BlobOptions::inline_max`] bytes: the same sealed bytes its file would hold). The
//! portal then writes them into the database in the same commit as the version, so creating a
//! small document costs one database commit instead of a file create, write, rename and two
//! syncs; and it sets [`BlobRef::inline`] again whenever it hands that reference back to the store
//! (open, open with a prefix, staging an edit).
//!
//! Implementations: [`mem::MemBlobStore`] (in memory, for tests and fuzzing). The encrypted
//! on-disk store lives in its own module.

pub mod encrypted;
pub mod mem;

use crate::Result;
use crate::model::MatterId;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A blob's identity: 16 random bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(pub [u8; 16]);

impl BlobId {
    /// A fresh random id.
    pub fn random() -> Self {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 16];
        // SystemRandom only fails if the OS has no entropy source; fall back to time + counter,
        // which is still unique (ids need uniqueness, not secrecy).
        if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            b[..8].copy_from_slice(&crate::model::now_millis().to_le_bytes());
            b[8..].copy_from_slice(&n.to_le_bytes());
        }
        BlobId(b)
    }
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What the database records about a committed blob.
///
/// `sealed_key` is opaque to the portal: the store puts there whatever it needs to read the blob
/// back (for the encrypted store: the blob's data key wrapped by the matter key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// The blob's id.
    pub id: BlobId,
    /// Plaintext length in bytes.
    pub len: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// Store-specific key material (wrapped); empty for stores that need none.
    pub sealed_key: Vec<u8>,
    /// The blob's stored form when the database keeps it rather than the store (see the
    /// module documentation): set by [`StagedBlob::commit`] for the portal to record, and by
    /// the portal when it passes a recorded reference back for reading. Never part of the
    /// serialized reference (a version record stays small; the bytes live in their own table).
    #[serde(skip)]
    pub inline: Option<Bytes>,
}

/// Where document contents are kept. All methods may do blocking work internally but must not block
/// the async runtime (use `spawn_blocking` or a dedicated thread).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a staged blob for a document of `matter`. With `base`, the staged blob starts as a copy
    /// of that committed blob (for random-access edits); otherwise it starts empty.
    async fn stage(&self, matter: MatterId, base: Option<&BlobRef>) -> Result<Box<dyn StagedBlob>>;
    /// Opens a committed blob for reading.
    async fn open(&self, matter: MatterId, blob: &BlobRef) -> Result<Box<dyn BlobReader>>;
    /// Opens a committed blob and reads its first `max` bytes (fewer for a shorter blob, none for
    /// `0`): what a reader about to stream the whole blob needs first. Stores that do blocking
    /// work should do both in one blocking job (the default opens, then reads).
    async fn open_prefix(
        &self,
        matter: MatterId,
        blob: &BlobRef,
        max: usize,
    ) -> Result<(Box<dyn BlobReader>, Bytes)> {
        let mut reader = self.open(matter, blob).await?;
        let first = if max == 0 {
            Bytes::new()
        } else {
            reader.read_at(0, max).await?
        };
        Ok((reader, first))
    }
    /// Deletes a committed blob (purge). Deleting a missing blob is not an error (nor one the
    /// database kept, see [`BlobRef::inline`]: the portal deletes those).
    async fn remove(&self, matter: MatterId, blob: &BlobRef) -> Result<()>;
    /// Deletes every committed or staged blob whose id is not in `live` (crash leftovers). Returns
    /// how many were removed. Called once after open, before any staging.
    async fn retain(&self, live: &HashSet<BlobId>) -> Result<u64>;
    /// Destroys everything of a matter (crypto-shredding for the encrypted store).
    async fn purge_matter(&self, matter: MatterId) -> Result<()>;
}

/// An upload in progress. Dropping it without [`StagedBlob::commit`] aborts it.
#[async_trait]
pub trait StagedBlob: Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> u64;
    /// Whether nothing has been written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends at the end (the streaming fast path).
    async fn append(&mut self, data: &[u8]) -> Result<()>;
    /// Writes at any offset; writing past the end zero-fills the gap.
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Reads back what was staged so far (sshfs reads files it has open for writing).
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes>;
    /// Truncates or zero-extends to `len`.
    async fn set_len(&mut self, len: u64) -> Result<()>;
    /// Makes the blob durable and returns its reference. Nothing is visible until the portal
    /// records the reference. A reference with [`BlobRef::inline`] set is not stored by the
    /// store at all: it becomes durable with the portal's commit that records it.
    async fn commit(self: Box<Self>) -> Result<BlobRef>;
    /// Discards the staged data.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// A committed blob opened for reading.
#[async_trait]
pub trait BlobReader: Send + Sync {
    /// Plaintext length.
    fn len(&self) -> u64;
    /// Whether the blob is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads up to `max` bytes at `offset`; an empty result means end of blob. Integrity failures are
    /// reported as [`crate::Error::Integrity`], never as wrong bytes.
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes>;
}

//! An in-memory [`BlobStore`]: for tests, fuzzing and throw-away portals. Nothing is encrypted and
//! nothing survives the process.

use super::{BlobId, BlobReader, BlobRef, BlobStore, StagedBlob};
use crate::model::MatterId;
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Largest blob the in-memory store accepts (it is for tests).
pub const MEM_BLOB_LIMIT: u64 = 1 << 30;

type Blobs = Arc<Mutex<HashMap<BlobId, (MatterId, Bytes)>>>;

/// Blobs kept in a `HashMap`.
///
/// ```
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use sdx_portal::blob::{BlobStore, mem::MemBlobStore};
/// use sdx_portal::model::MatterId;
/// let store = MemBlobStore::default();
/// let mut up = store.stage(MatterId(1), None).await.unwrap();
/// up.append(b"hello").await.unwrap();
/// let r = up.commit().await.unwrap();
/// let mut rd = store.open(MatterId(1), &r).await.unwrap();
/// assert_eq!(&rd.read_at(0, 100).await.unwrap()[..], b"hello");
/// # }) }
/// ```
#[derive(Clone)]
pub struct MemBlobStore {
    blobs: Blobs,
    limit: u64,
}

impl Default for MemBlobStore {
    fn default() -> Self {
        MemBlobStore {
            blobs: Blobs::default(),
            limit: MEM_BLOB_LIMIT,
        }
    }
}

impl MemBlobStore {
    /// A store whose blobs may grow to `limit` bytes (at most [`MEM_BLOB_LIMIT`]); writes past
    /// it fail with [`Error::TooLarge`]. A write far past the end materialises the gap in memory
    /// here (the encrypted store keeps it sparse), so a fuzzer or test bounds it this way.
    pub fn with_limit(limit: u64) -> Self {
        MemBlobStore {
            limit: limit.min(MEM_BLOB_LIMIT),
            ..Default::default()
        }
    }
}

fn lock(b: &Blobs) -> std::sync::MutexGuard<'_, HashMap<BlobId, (MatterId, Bytes)>> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl BlobStore for MemBlobStore {
    async fn stage(&self, matter: MatterId, base: Option<&BlobRef>) -> Result<Box<dyn StagedBlob>> {
        let data = match base {
            Some(b) => lock(&self.blobs)
                .get(&b.id)
                .map(|(_, d)| d.to_vec())
                .ok_or_else(|| Error::NotFound(format!("blob {}", b.id.to_hex())))?,
            None => Vec::new(),
        };
        Ok(Box::new(MemStaged {
            blobs: self.blobs.clone(),
            matter,
            data,
            limit: self.limit,
        }))
    }
    async fn open(&self, _matter: MatterId, blob: &BlobRef) -> Result<Box<dyn BlobReader>> {
        let data = lock(&self.blobs)
            .get(&blob.id)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| Error::NotFound(format!("blob {}", blob.id.to_hex())))?;
        Ok(Box::new(MemReader { data }))
    }
    async fn remove(&self, _matter: MatterId, blob: &BlobRef) -> Result<()> {
        lock(&self.blobs).remove(&blob.id);
        Ok(())
    }
    async fn retain(&self, live: &HashSet<BlobId>) -> Result<u64> {
        let mut b = lock(&self.blobs);
        let before = b.len();
        b.retain(|id, _| live.contains(id));
        Ok((before - b.len()) as u64)
    }
    async fn purge_matter(&self, matter: MatterId) -> Result<()> {
        lock(&self.blobs).retain(|_, (m, _)| *m != matter);
        Ok(())
    }
}

struct MemStaged {
    blobs: Blobs,
    matter: MatterId,
    data: Vec<u8>,
    limit: u64,
}

fn check_len(end: u64, limit: u64) -> Result<usize> {
    if end > limit {
        return Err(Error::TooLarge(format!(
            "in-memory blobs are limited to {limit} bytes"
        )));
    }
    usize::try_from(end).map_err(|_| Error::TooLarge("blob too large".into()))
}

#[async_trait]
impl StagedBlob for MemStaged {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    async fn append(&mut self, data: &[u8]) -> Result<()> {
        check_len(self.data.len() as u64 + data.len() as u64, self.limit)?;
        self.data.extend_from_slice(data);
        Ok(())
    }
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = check_len(offset.saturating_add(data.len() as u64), self.limit)?;
        let start = end - data.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(data);
        Ok(())
    }
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
        Ok(slice(&self.data, offset, max).to_vec().into())
    }
    async fn set_len(&mut self, len: u64) -> Result<()> {
        let len = check_len(len, self.limit)?;
        self.data.resize(len, 0);
        Ok(())
    }
    async fn commit(self: Box<Self>) -> Result<BlobRef> {
        let me = *self;
        let digest = ring::digest::digest(&ring::digest::SHA256, &me.data);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        let r = BlobRef {
            id: BlobId::random(),
            len: me.data.len() as u64,
            sha256,
            sealed_key: Vec::new(),
            inline: None,
        };
        lock(&me.blobs).insert(r.id, (me.matter, Bytes::from(me.data)));
        Ok(r)
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

fn slice(data: &[u8], offset: u64, max: usize) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(max).min(data.len());
    &data[start..end]
}

struct MemReader {
    data: Bytes,
}

#[async_trait]
impl BlobReader for MemReader {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let end = start.saturating_add(max).min(self.data.len());
        Ok(self.data.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_limit_refuses_writes_past_it_without_allocating_them() {
        let store = MemBlobStore::with_limit(1000);
        let mut up = store.stage(MatterId(1), None).await.unwrap();
        up.write_at(990, b"0123456789").await.unwrap();
        let e = up.write_at(1 << 30, b"x").await.unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        let e = up.append(b"x").await.unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert_eq!(up.len(), 1000);
        assert_eq!(MemBlobStore::with_limit(u64::MAX).limit, MEM_BLOB_LIMIT);
    }
}

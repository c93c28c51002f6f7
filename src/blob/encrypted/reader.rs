//! Reading committed blobs: position-independent chunks, so a range decrypts only what it touches.

use super::Shared;
use super::format::{ChunkCipher, Layout, MAX_BLOB_LEN, open_data_key};
use crate::blob::{BlobReader, BlobRef};
use crate::model::MatterId;
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Largest plaintext returned by one `read_at` (bounds memory per call).
pub const MAX_READ: usize = 4 << 20;

/// Sealed chunks in a file: a committed blob, or the sealed prefix of an append-mode upload.
pub(crate) struct Chunks {
    pub file: Arc<File>,
    pub cc: Arc<ChunkCipher>,
    pub layout: Layout,
    /// Plaintext length covered.
    pub len: u64,
    /// Whether the last chunk carries the final flag (committed blobs) or not (an upload's prefix).
    pub last_is_final: bool,
}

impl Chunks {
    /// Reads and decrypts chunks `first..=last` into `buf` (replacing its contents) as one run of
    /// plaintext. Blocking.
    pub fn read_chunks(&self, first: u64, last: u64, buf: &mut Vec<u8>) -> Result<()> {
        let l = self.layout;
        let n = l.chunks(self.len);
        if first > last || last >= n {
            return Err(Error::Invalid(format!(
                "chunk range {first}..={last} outside a blob of {n} chunks"
            )));
        }
        let stride = l.stride();
        let start = first * stride;
        let end = (last * stride) + l.plain_len(self.len, last) + stride - l.c;
        let size = usize::try_from(end - start)
            .map_err(|_| Error::TooLarge("read range too large".into()))?;
        buf.clear();
        buf.resize(size, 0);
        self.file.read_exact_at(buf, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Integrity(format!(
                    "blob {}: the file is shorter than its reference says (truncated)",
                    self.cc_id()
                ))
            } else {
                Error::Io(e)
            }
        })?;
        let su = l.stride() as usize;
        let mut w = 0usize;
        for i in first..=last {
            let off = (i - first) as usize * su;
            let clen = (size - off).min(su);
            let fin = self.last_is_final && i == n - 1;
            let pl = self.cc.open(i, fin, &mut buf[off..off + clen])?;
            if off != w {
                buf.copy_within(off..off + pl, w);
            }
            w += pl;
        }
        buf.truncate(w);
        Ok(())
    }

    /// Appends the plaintext bytes `offset..offset + n` to `out`. Blocking.
    pub fn read_range(&self, offset: u64, n: u64, out: &mut Vec<u8>) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(n)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| Error::Invalid("read past the end of a blob".into()))?;
        let c = self.layout.c;
        let first = offset / c;
        let last = (end - 1) / c;
        let mut buf = Vec::new();
        self.read_chunks(first, last, &mut buf)?;
        let s = (offset - first * c) as usize;
        let e = (end - first * c) as usize;
        out.extend_from_slice(buf.get(s..e).ok_or_else(|| {
            Error::Integrity("a blob chunk decrypted to an unexpected length".into())
        })?);
        Ok(())
    }

    fn cc_id(&self) -> String {
        self.cc.id_hex()
    }
}

/// Opens a committed blob: unwraps its key (checking the reference) and checks the file size.
/// Blocking.
pub(crate) fn open_committed(shared: &Shared, matter: MatterId, r: &BlobRef) -> Result<Chunks> {
    let keys = shared.keys.matter_keys(matter)?;
    let (dk, info) = open_data_key(&keys.blob, matter, r.id, r.len, &r.sha256, &r.sealed_key)?;
    if r.len > MAX_BLOB_LEN {
        return Err(Error::Integrity(format!(
            "blob {}: implausible length {}",
            r.id.to_hex(),
            r.len
        )));
    }
    let path = shared.blob_path(matter, r.id);
    let file = File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Integrity(format!(
                "blob {} is missing from the data dir",
                r.id.to_hex()
            ))
        } else {
            Error::Io(e)
        }
    })?;
    let size = file.metadata()?.len();
    let expected = info.layout.file_len(r.len);
    if size != expected {
        return Err(Error::Integrity(format!(
            "blob {}: the file has {size} bytes but should have {expected} ({})",
            r.id.to_hex(),
            if size < expected {
                "truncated"
            } else {
                "extended"
            }
        )));
    }
    Ok(Chunks {
        file: Arc::new(file),
        cc: Arc::new(ChunkCipher::new(&dk, r.id, info.cipher, info.layout)?),
        layout: info.layout,
        len: r.len,
        last_is_final: true,
    })
}

/// A committed blob opened for reading; keeps the last decrypted chunk so that small sequential
/// reads (SFTP asks for 32 KiB at a time) decrypt each chunk once.
pub(crate) struct EncReader {
    chunks: Arc<Chunks>,
    cache: Option<(u64, Bytes)>,
}

impl EncReader {
    pub fn new(chunks: Chunks) -> Self {
        EncReader {
            chunks: Arc::new(chunks),
            cache: None,
        }
    }
}

#[async_trait]
impl BlobReader for EncReader {
    fn len(&self) -> u64 {
        self.chunks.len
    }

    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
        let len = self.chunks.len;
        if offset >= len || max == 0 {
            return Ok(Bytes::new());
        }
        let end = len.min(offset.saturating_add(max.min(MAX_READ) as u64));
        let c = self.chunks.layout.c;
        let first = offset / c;
        let last = (end - 1) / c;
        if let Some((idx, data)) = &self.cache
            && first == last
            && *idx == first
        {
            let s = (offset - first * c) as usize;
            let e = (end - first * c) as usize;
            if e <= data.len() {
                return Ok(data.slice(s..e));
            }
        }
        let chunks = self.chunks.clone();
        let buf = tokio::task::spawn_blocking(move || {
            let mut b = Vec::new();
            chunks.read_chunks(first, last, &mut b).map(|_| b)
        })
        .await??;
        let bytes = Bytes::from(buf);
        let last_start = ((last - first) * c) as usize;
        let s = (offset - first * c) as usize;
        let e = (end - first * c) as usize;
        if e > bytes.len() || last_start > bytes.len() {
            return Err(Error::Integrity(
                "a blob chunk decrypted to an unexpected length".into(),
            ));
        }
        self.cache = Some((last, bytes.slice(last_start..)));
        Ok(bytes.slice(s..e))
    }
}

//! Reading committed blobs: position-independent chunks, so a range decrypts only what it touches.

use super::Shared;
use super::format::{ChunkCipher, Layout, MAX_BLOB_LEN, open_data_key};
use crate::blob::{BlobReader, BlobRef};
use crate::crypto::keyring::MatterKeys;
use crate::model::MatterId;
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Largest plaintext returned by one `read_at` (bounds memory per call).
pub const MAX_READ: usize = 4 << 20;

/// Where sealed chunks are read from.
pub(crate) enum Source {
    /// A blob file or an upload's staging file.
    File(Arc<File>),
    /// A small blob's stored form, kept in the database ([`BlobRef::inline`]).
    Mem(Bytes),
}

impl Source {
    /// Fills `buf` from `offset`; a short source is an `UnexpectedEof` error, as for a file.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset),
            Source::Mem(b) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|s| b.get(s..s.checked_add(buf.len())?))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// Sealed chunks in a file (a committed blob, or the sealed prefix of an append-mode upload) or
/// in memory (a blob the database keeps).
pub(crate) struct Chunks {
    pub src: Source,
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
        // Reused buffers are not cleared: every byte is overwritten by the read below.
        buf.resize(size, 0);
        self.src.read_exact_at(buf, start).map_err(|e| {
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
            w += self
                .cc
                .open_within(i, fin, &mut buf[w..off + clen], off - w)?;
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
    open_committed_with(shared, &keys, matter, r)
}

/// [`open_committed`] with the matter's keys at hand. For a blob the database keeps
/// ([`BlobRef::inline`]) this touches no disk.
pub(crate) fn open_committed_with(
    shared: &Shared,
    keys: &MatterKeys,
    matter: MatterId,
    r: &BlobRef,
) -> Result<Chunks> {
    let (dk, info) = open_data_key(&keys.blob, matter, r.id, r.len, &r.sha256, &r.sealed_key)?;
    if r.len > MAX_BLOB_LEN {
        return Err(Error::Integrity(format!(
            "blob {}: implausible length {}",
            r.id.to_hex(),
            r.len
        )));
    }
    let cc = Arc::new(ChunkCipher::new(&dk, r.id, info.cipher, info.layout)?);
    let expected = info.layout.file_len(r.len);
    if let Some(bytes) = &r.inline {
        let size = bytes.len() as u64;
        if size != expected {
            return Err(Error::Integrity(format!(
                "blob {}: the database holds {size} bytes of it but should hold {expected}",
                r.id.to_hex()
            )));
        }
        return Ok(Chunks {
            src: Source::Mem(bytes.clone()),
            cc,
            layout: info.layout,
            len: r.len,
            last_is_final: true,
        });
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
        src: Source::File(Arc::new(file)),
        cc,
        layout: info.layout,
        len: r.len,
        last_is_final: true,
    })
}

/// Plaintext decrypted per blocking call for small sequential reads.
const READAHEAD: u64 = 2 << 20;
/// Runs decrypted ahead of a sequential reader, in parallel on the blocking pool.
const PREFETCH_DEPTH: usize = 2;

struct Run {
    first: u64,
    last: u64,
    task: tokio::task::JoinHandle<Result<Vec<u8>>>,
}

/// A committed blob opened for reading.
///
/// Keeps the last decrypted run of chunks, so small sequential reads (SFTP asks for 32 KiB at a
/// time) decrypt each chunk once and in batches; a sequential reader also gets the next runs
/// decrypted ahead on the blocking pool while it consumes the current one. Random reads decrypt
/// only the chunks they touch.
pub(crate) struct EncReader {
    chunks: Arc<Chunks>,
    /// First chunk index and plaintext of a decrypted run.
    cache: Option<(u64, Bytes)>,
    prefetch: std::collections::VecDeque<Run>,
    /// Offset after the previous read (sequential detection: read-ahead starts with the second
    /// contiguous read, so a lone range read decrypts only the chunks it touches).
    next: Option<u64>,
    /// Recycled run buffers (saves zeroing fresh memory).
    spares: Vec<Vec<u8>>,
    /// Runs replaced while a caller still held a slice of them — a WebDAV response still
    /// sending the run's last piece, which is the usual case — reclaimed as a spare once the
    /// caller lets go. Freeing them instead cost a fresh zeroed, page-faulted run every 2 MiB
    /// (~15 % of the server's CPU in a 1 GiB GET).
    retired: Vec<Bytes>,
    /// Runs handed to the blocking pool so far (for tests of the read-ahead).
    runs_spawned: u64,
    /// Run buffers allocated instead of reused (for tests).
    fresh_buffers: u64,
}

impl EncReader {
    pub fn new(chunks: Chunks) -> Self {
        EncReader {
            chunks: Arc::new(chunks),
            cache: None,
            prefetch: std::collections::VecDeque::new(),
            next: None,
            spares: Vec::new(),
            retired: Vec::new(),
            runs_spawned: 0,
            fresh_buffers: 0,
        }
    }

    /// Opens a committed blob and decrypts the chunks holding its first `max` bytes (capped at
    /// [`MAX_READ`]) in the same call; returns the reader, primed with that run as its cached
    /// run and as a sequential reader at the end of the prefix, and the prefix. Blocking.
    pub fn open_prefix(
        shared: &Shared,
        matter: MatterId,
        r: &BlobRef,
        max: usize,
    ) -> Result<(EncReader, Bytes)> {
        Self::with_prefix(open_committed(shared, matter, r)?, max)
    }

    /// A reader over `chunks` primed with their first `max` bytes (see
    /// [`EncReader::open_prefix`]), and those bytes. Blocking unless the chunks are in memory.
    pub fn with_prefix(chunks: Chunks, max: usize) -> Result<(EncReader, Bytes)> {
        let want = chunks.len.min(max.min(MAX_READ) as u64);
        let mut reader = EncReader::new(chunks);
        if want == 0 {
            return Ok((reader, Bytes::new()));
        }
        let last = (want - 1) / reader.chunks.layout.c;
        let mut run = Vec::new();
        reader.chunks.read_chunks(0, last, &mut run)?;
        reader.cache = Some((0, Bytes::from(run)));
        reader.next = Some(want);
        let first = reader.cached(0, want).ok_or_else(|| {
            Error::Integrity("a blob chunk decrypted to an unexpected length".into())
        })?;
        Ok((reader, first))
    }

    fn spawn_run(&mut self, first: u64, last: u64) -> Run {
        self.runs_spawned += 1;
        let chunks = self.chunks.clone();
        let mut b = self.take_spare();
        Run {
            first,
            last,
            task: tokio::task::spawn_blocking(move || {
                chunks.read_chunks(first, last, &mut b).map(|_| b)
            }),
        }
    }

    /// A buffer for the next run: a spare, or a retired run no caller holds any more, or a new
    /// (empty) one.
    fn take_spare(&mut self) -> Vec<u8> {
        if let Some(b) = self.spares.pop() {
            return b;
        }
        if let Some(i) = self.retired.iter().position(Bytes::is_unique)
            && let Ok(m) = self.retired.swap_remove(i).try_into_mut()
        {
            return Vec::from(m);
        }
        self.fresh_buffers += 1;
        Vec::new()
    }

    /// Replaces the cached run, recycling the old buffer — at once if no caller holds a slice
    /// of it, else once they let go (see `retired`). At most `PREFETCH_DEPTH + 1` buffers wait
    /// for reuse.
    fn set_cache(&mut self, first: u64, data: Vec<u8>) {
        let Some((_, old)) = self.cache.replace((first, Bytes::from(data))) else {
            return;
        };
        if self.spares.len() + self.retired.len() > PREFETCH_DEPTH {
            return;
        }
        match old.try_into_mut() {
            Ok(m) => self.spares.push(Vec::from(m)),
            Err(old) => self.retired.push(old),
        }
    }

    /// The cached plaintext for `offset..end`, if the cache covers it.
    fn cached(&self, offset: u64, end: u64) -> Option<Bytes> {
        let (first, data) = self.cache.as_ref()?;
        let start = first * self.chunks.layout.c;
        if offset < start || end > start + data.len() as u64 {
            return None;
        }
        Some(data.slice((offset - start) as usize..(end - start) as usize))
    }

    fn cache_last(&self) -> Option<u64> {
        let (first, data) = self.cache.as_ref()?;
        let c = self.chunks.layout.c;
        Some(first + (data.len() as u64).saturating_sub(1) / c)
    }

    /// A sequential read that starts in the cached run and ends in the next run read ahead — reads
    /// whose size does not divide the run, such as OpenSSH's 261,120-byte requests, do this once
    /// per run: the two are joined (one copy of this read's bytes) instead of decrypting the rest
    /// again and dropping the read-ahead. `None` when that is not the case, or when the run read
    /// ahead failed (the caller then reads exactly the chunks asked for).
    async fn read_across_runs(
        &mut self,
        offset: u64,
        end: u64,
        run_size: u64,
    ) -> Result<Option<Bytes>> {
        let c = self.chunks.layout.c;
        let Some((cfirst, cdata)) = self.cache.as_ref() else {
            return Ok(None);
        };
        let cstart = cfirst * c;
        let cend = cstart + cdata.len() as u64;
        if offset < cstart || offset >= cend || end <= cend || !cend.is_multiple_of(c) {
            return Ok(None);
        }
        let next_first = cend / c;
        let last = (end - 1) / c;
        if !self
            .prefetch
            .front()
            .is_some_and(|r| r.first == next_first && r.last >= last)
        {
            return Ok(None);
        }
        let head = cdata.slice((offset - cstart) as usize..);
        let Some(run) = self.prefetch.pop_front() else {
            return Ok(None);
        };
        let Ok(data) = run.task.await? else {
            return Ok(None);
        };
        let Some(tail) = data.get(..(end - cend) as usize) else {
            return Err(Error::Integrity(
                "a blob chunk decrypted to an unexpected length".into(),
            ));
        };
        let mut out = bytes::BytesMut::with_capacity(head.len() + tail.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(tail);
        drop(head);
        self.set_cache(next_first, data);
        self.fill_prefetch(run_size);
        Ok(Some(out.freeze()))
    }

    /// Keeps up to [`PREFETCH_DEPTH`] runs of `size` chunks in flight after the cached run.
    fn fill_prefetch(&mut self, size: u64) {
        let n = self.chunks.layout.chunks(self.chunks.len);
        let Some(mut next) = self
            .prefetch
            .back()
            .map(|r| r.last + 1)
            .or_else(|| self.cache_last().map(|l| l + 1))
        else {
            return;
        };
        while self.prefetch.len() < PREFETCH_DEPTH && next < n {
            let last = (next + size - 1).min(n - 1);
            let run = self.spawn_run(next, last);
            self.prefetch.push_back(run);
            next = last + 1;
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
        let sequential = self.next == Some(offset);
        self.next = Some(end);
        let run_size = (READAHEAD / c).max(1).max(last - first + 1);
        if self.cached(offset, end).is_none() {
            if sequential && let Some(out) = self.read_across_runs(offset, end, run_size).await? {
                return Ok(out);
            }
            let mut got = None;
            while let Some(run) = self.prefetch.pop_front() {
                if run.last < first {
                    continue; // passed already (its task finishes in the background)
                }
                if run.first <= first && run.last >= last {
                    // A failed read-ahead (damage further on) is retried below for exactly the
                    // chunks asked for, so it never fails a read of intact chunks.
                    if let Ok(data) = run.task.await? {
                        got = Some((run.first, data));
                    }
                }
                break;
            }
            let (run_first, data) = match got {
                Some(g) => g,
                None => {
                    self.prefetch.clear();
                    let n = self.chunks.layout.chunks(len);
                    let run_last = if sequential {
                        (first + run_size - 1).min(n - 1).max(last)
                    } else {
                        last
                    };
                    let run = self.spawn_run(first, run_last);
                    match run.task.await? {
                        Ok(data) => (first, data),
                        Err(_) if run_last > last => {
                            let exact = self.spawn_run(first, last);
                            (first, exact.task.await??)
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            self.set_cache(run_first, data);
        }
        let out = self.cached(offset, end).ok_or_else(|| {
            Error::Integrity("a blob chunk decrypted to an unexpected length".into())
        })?;
        if sequential {
            self.fill_prefetch(run_size);
        } else {
            self.prefetch.clear();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobStore;
    use crate::blob::encrypted::test_store;

    /// `open_prefix` returns the blob's first bytes (fewer for a shorter blob, none for 0) and a
    /// reader primed with the decrypted run, continuing as a sequential reader after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_prefix_reads_the_first_bytes_in_the_same_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Default::default());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut up = store.stage(MatterId(1), None).await.unwrap();
        up.append(&data).await.unwrap();
        let r = up.commit().await.unwrap();
        let shared = store.shared.clone();
        for (max, want) in [
            (0usize, 0usize),
            (10, 10),
            (65_536, 65_536),
            (100_000, 100_000),
            (1 << 20, 200_000),
        ] {
            let (sh, r2) = (shared.clone(), r.clone());
            let (mut rd, first) = tokio::task::spawn_blocking(move || {
                EncReader::open_prefix(&sh, MatterId(1), &r2, max)
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(first.len(), want, "max {max}");
            assert_eq!(&first[..], &data[..want]);
            if want > 0 {
                assert_eq!(rd.next, Some(want as u64), "not primed as sequential");
                let (run_first, run) = rd.cache.as_ref().unwrap();
                assert_eq!(*run_first, 0);
                assert!(run.len() >= want);
            }
            // the rest reads on from there
            let rest = rd.read_at(want as u64, 1 << 20).await.unwrap();
            assert_eq!(&rest[..], &data[want..]);
            assert!(rd.read_at(200_000, 10).await.unwrap().is_empty());
        }
        // The trait method gives the same.
        let (mut rd, first) = store.open_prefix(MatterId(1), &r, 4096).await.unwrap();
        assert_eq!(&first[..], &data[..4096]);
        assert_eq!(&rd.read_at(4096, 10).await.unwrap()[..], &data[4096..4106]);
        // A damaged reference fails the open, as `open` does.
        let mut bad = r.clone();
        bad.len += 1;
        assert!(store.open_prefix(MatterId(1), &bad, 4096).await.is_err());
    }

    /// A committed blob of `len` bytes (`i % m`) and a reader over it.
    async fn committed_reader(len: usize, m: u32) -> (tempfile::TempDir, Vec<u8>, EncReader) {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Default::default());
        let data: Vec<u8> = (0..len as u32).map(|i| (i % m) as u8).collect();
        let mut up = store.stage(MatterId(1), None).await.unwrap();
        up.append(&data).await.unwrap();
        let r = up.commit().await.unwrap();
        let sh = store.shared.clone();
        let chunks = tokio::task::spawn_blocking(move || open_committed(&sh, MatterId(1), &r))
            .await
            .unwrap()
            .unwrap();
        (dir, data, EncReader::new(chunks))
    }

    /// Sequential reads whose size does not divide the read-ahead run (OpenSSH's 261,120-byte
    /// requests) join the cached run and the next one instead of decrypting the rest again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_across_run_boundaries_use_the_read_ahead() {
        let len = 8 << 20;
        let (_dir, data, mut rd) = committed_reader(len, 251).await;
        let step = 261_120usize;
        let mut off = 0usize;
        while off < len {
            let b = rd.read_at(off as u64, step).await.unwrap();
            assert_eq!(b.len(), step.min(len - off), "at {off}");
            assert!(b[..] == data[off..off + b.len()], "bytes differ at {off}");
            off += b.len();
        }
        // One exact run for the first read, one run for the second, then every 2 MiB run once
        // (8 MiB: 4 runs). Re-decrypting at each of the 4 run boundaries would spawn 3 more each.
        assert!(
            rd.runs_spawned <= 7,
            "{} runs decrypted for one sequential pass",
            rd.runs_spawned
        );
    }

    /// A reader whose caller still holds the last slice of a run when the next run starts (a
    /// WebDAV response sending its previous piece) reuses that run's buffer once the slice is
    /// dropped, instead of allocating a fresh buffer for every run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_buffers_still_held_by_the_caller_are_reused_later() {
        let len = 24 << 20;
        let (_dir, data, mut rd) = committed_reader(len, 249).await;
        let step = 64 << 10;
        let mut held = Bytes::new();
        let mut off = 0usize;
        while off < len {
            let b = rd.read_at(off as u64, step).await.unwrap();
            assert!(b[..] == data[off..off + b.len()], "bytes differ at {off}");
            off += b.len();
            // The previous piece is let go only after the next one is read.
            held = b;
        }
        drop(held);
        // 12 runs of 2 MiB (plus the first exact one); without reuse each takes a new buffer.
        assert!(
            rd.fresh_buffers <= PREFETCH_DEPTH as u64 + 3,
            "{} fresh run buffers for {} runs",
            rd.fresh_buffers,
            rd.runs_spawned
        );
    }
}

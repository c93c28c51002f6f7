//! Uploads in progress.
//!
//! Two modes:
//! - **Append** (the streaming fast path, every upload starts here): the staging file
//!   `tmp/<id>.part` is already in the committed format under the blob's final data key. It is
//!   created with the first batch written (an upload shorter than one batch creates, writes,
//!   syncs and renames it in its commit's one blocking job), so starting an upload touches no
//!   disk. Full chunks are sealed as non-final in batches (`flush_bytes`, 256 KiB by default) on
//!   the blocking pool — one job per batch hashes it (SHA-256 of the plaintext, in batch order),
//!   then seals and writes it — while the caller fills the next batch. The last `1..=C` bytes
//!   stay in memory until commit, which seals them as the final chunk, syncs, and renames the
//!   file into place: each byte is encrypted once, nothing is read back. A background
//!   `fdatasync` every `sync_every` bytes starts the disk early so the commit's sync has little
//!   left to do.
//! - **Random** (a write before the end, a shrink, a large gap, or staging from a base blob): a
//!   scratch file of counter-nonce slots (see [`super::format`]) over an optional read-only base
//!   (the committed blob being edited, or the append file written so far), with one decrypted chunk
//!   cached. Commit re-encrypts into a new committed file under a fresh data key and blob id.

use super::Shared;
use super::format::{ChunkCipher, Layout, MAX_BLOB_LEN, SlotCipher, seal_data_key};
use super::reader::{Chunks, MAX_READ, Source, open_committed};
use crate::blob::{BlobId, BlobRef, StagedBlob};
use crate::crypto::keyring::MatterKeys;
use crate::crypto::keys::{SecretKey, TAG_LEN};
use crate::model::MatterId;
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use ring::digest;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, spawn_blocking};

/// Largest zero gap (from `write_at` past the end or `set_len`) filled on the append path;
/// bigger gaps switch to random mode, where they cost nothing until written.
const APPEND_ZERO_FILL_MAX: u64 = 1 << 20;

/// A temporary file removed on drop unless disarmed.
pub(crate) struct TempPath(Option<PathBuf>);

impl TempPath {
    pub fn new(p: PathBuf) -> Self {
        TempPath(Some(p))
    }
    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    /// Forgets the file (it was renamed into place).
    pub fn disarm(&mut self) {
        self.0 = None;
    }
    /// Removes the file now (call on a blocking thread).
    pub fn remove_now(&mut self) {
        if let Some(p) = self.0.take() {
            remove_quietly(&p);
        }
    }
}

fn remove_quietly(p: &Path) {
    if let Err(e) = std::fs::remove_file(p)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %p.display(), error = %e, "could not remove a staging file");
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || remove_quietly(&p));
                }
                Err(_) => remove_quietly(&p),
            }
        }
    }
}

fn create_temp(dir: &Path, name: &str) -> Result<(File, TempPath)> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)?;
    Ok((f, TempPath::new(p)))
}

/// A batch being sealed and written.
struct Sealing {
    data: Arc<Vec<u8>>,
    task: JoinHandle<Result<Vec<u8>>>,
    bytes: u64,
}

/// Batches sealed and written concurrently. Each batch's blocking job hashes it first (in order:
/// a job gets the hash context only once the previous batch's job has handed it back), then seals
/// and writes it.
const SEAL_DEPTH: usize = 3;

/// Finished batch buffers kept for reuse (of each kind): one is enough to recycle in the steady
/// state; more would only be memory an idle upload holds.
const SPARES: usize = 1;

/// The staging file of an append-mode upload.
struct PartFile {
    file: Arc<File>,
    path: TempPath,
}

impl PartFile {
    /// Creates `tmp/<id>.part` (blocking).
    fn create(shared: &Shared, id: BlobId) -> Result<PartFile> {
        let (file, path) = create_temp(&shared.tmp, &format!("{}.part", id.to_hex()))?;
        Ok(PartFile {
            file: Arc::new(file),
            path,
        })
    }
}

struct Append {
    id: BlobId,
    data_key: SecretKey,
    cc: Arc<ChunkCipher>,
    /// Created at the first batch flush, or by the commit of an upload that never reached one
    /// (so opening an upload touches no disk, and a small upload's file is created, written,
    /// synced and renamed in one blocking job).
    file: Option<PartFile>,
    /// Chunks handed to the writer (sealed, non-final).
    sealed: u64,
    /// Plaintext after the sealed chunks.
    pending: Vec<u8>,
    /// The SHA-256 state, when no batch's job holds it.
    hasher: Option<digest::Context>,
    /// The hash context, handed back by the newest batch's job once it has hashed its batch.
    hashing: Option<oneshot::Receiver<digest::Context>>,
    sealing: std::collections::VecDeque<Sealing>,
    sync: Option<JoinHandle<std::io::Result<()>>>,
    unsynced: u64,
    spare_plain: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    /// Held by a batch's job while it writes to the staging file (see [`seal_full_chunks`]).
    writes: Arc<std::sync::Mutex<()>>,
}

struct Cached {
    idx: u64,
    data: Vec<u8>,
    dirty: bool,
}

struct Random {
    layout: Layout,
    scratch: File,
    scratch_path: TempPath,
    scratch_len: u64,
    sc: SlotCipher,
    counter: u64,
    base: Option<Chunks>,
    /// Keeps the append file of an upload that switched modes until the upload ends.
    base_temp: Option<TempPath>,
    /// Bytes below this offset not in a slot come from `base`; above it they are zeros.
    base_limit: u64,
    cache: Option<Cached>,
}

enum Mode {
    Append(Box<Append>),
    Random(Box<Random>),
    Failed(String),
}

/// An upload into an [`super::EncryptedBlobStore`].
pub(crate) struct EncStaged {
    shared: Arc<Shared>,
    matter: MatterId,
    mkeys: Arc<MatterKeys>,
    len: u64,
    mode: Mode,
}

fn failed(why: &str) -> Error {
    Error::Conflict(format!(
        "this upload failed earlier ({why}) and can only be aborted"
    ))
}

fn check_len(end: Option<u64>) -> Result<u64> {
    match end {
        Some(e) if e <= MAX_BLOB_LEN => Ok(e),
        _ => Err(Error::TooLarge(format!(
            "documents are limited to {MAX_BLOB_LEN} bytes"
        ))),
    }
}

impl EncStaged {
    /// Starts an append-mode upload with the matter's keys at hand. Touches no disk (the staging
    /// file is created when the first batch is written), so it may run on an async thread.
    pub fn fresh(shared: Arc<Shared>, matter: MatterId, mkeys: Arc<MatterKeys>) -> Result<Self> {
        let id = BlobId::random();
        let data_key = SecretKey::random()?;
        let layout = shared.layout;
        let cc = ChunkCipher::new(&data_key, id, shared.opts.cipher, layout)?;
        let a = Append {
            id,
            data_key,
            cc: Arc::new(cc),
            file: None,
            sealed: 0,
            pending: Vec::new(),
            hasher: Some(digest::Context::new(&digest::SHA256)),
            hashing: None,
            sealing: std::collections::VecDeque::new(),
            sync: None,
            unsynced: 0,
            spare_plain: Vec::new(),
            spare_out: Vec::new(),
            writes: Arc::default(),
        };
        Ok(EncStaged {
            shared,
            matter,
            mkeys,
            len: 0,
            mode: Mode::Append(Box::new(a)),
        })
    }

    /// Starts an upload (blocking: call inside `spawn_blocking`).
    pub fn start(shared: Arc<Shared>, matter: MatterId, base: Option<&BlobRef>) -> Result<Self> {
        let mkeys = shared.keys.matter_keys(matter)?;
        match base {
            None => Self::fresh(shared, matter, mkeys),
            Some(b) => {
                let chunks = open_committed(&shared, matter, b)?;
                let r = Random::new(&shared, Some(chunks), None, b.len)?;
                Ok(EncStaged {
                    shared,
                    matter,
                    mkeys,
                    len: b.len,
                    mode: Mode::Random(Box::new(r)),
                })
            }
        }
    }

    fn append_mode(&mut self) -> Result<&mut Append> {
        match &mut self.mode {
            Mode::Append(a) => Ok(a),
            Mode::Random(_) => Err(Error::Storage("internal: not in append mode".into())),
            Mode::Failed(w) => Err(failed(w)),
        }
    }

    /// Marks the upload failed if `r` is an error.
    fn poison_on_err<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            tracing::warn!(error = %e, "staged upload failed");
            // Dropping the old mode removes its temporary files.
            self.mode = Mode::Failed(e.to_string());
        }
        r
    }

    async fn append_bytes(&mut self, data: &[u8]) -> Result<()> {
        let layout = self.shared.layout;
        let flush = self.shared.opts.flush_bytes;
        let sync_every = self.shared.opts.sync_every;
        let cap = flush + layout.cu();
        let shared = self.shared.clone();
        let a = self.append_mode()?;
        let mut rest = data;
        while !rest.is_empty() {
            let room = cap.saturating_sub(a.pending.len()).max(1);
            let n = room.min(rest.len());
            let need = a.pending.len() + n;
            if need > a.pending.capacity() {
                // Grows geometrically up to one batch: a small upload never holds a whole batch
                // buffer, a large one never more than one.
                let target = need.max(a.pending.capacity() * 2).min(cap).max(need);
                a.pending.reserve_exact(target - a.pending.len());
            }
            a.pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if a.pending.len() > flush {
                a.flush(&shared, flush, sync_every).await?;
            }
        }
        Ok(())
    }

    async fn append_zeros(&mut self, mut n: u64) -> Result<()> {
        let zeros = vec![0u8; 64 << 10];
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.append_bytes(&zeros[..k]).await?;
            self.len += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Switches an append-mode upload to random mode (no-op if already there).
    async fn switch_to_random(&mut self) -> Result<()> {
        let a = match std::mem::replace(&mut self.mode, Mode::Failed("switching modes".into())) {
            Mode::Append(a) => a,
            m @ Mode::Random(_) => {
                self.mode = m;
                return Ok(());
            }
            Mode::Failed(w) => {
                let e = failed(&w);
                self.mode = Mode::Failed(w);
                return Err(e);
            }
        };
        let mut a = a;
        a.finish_all(u64::MAX).await?;
        a.finish_sync().await?;
        let shared = self.shared.clone();
        let r = spawn_blocking(move || -> Result<Random> {
            let layout = shared.layout;
            let a = *a;
            let Append {
                cc,
                file,
                sealed,
                pending,
                ..
            } = a;
            let base_len = sealed * layout.c;
            let (base, base_temp) = match file {
                Some(PartFile { file, path }) if sealed > 0 => {
                    let ch = Chunks {
                        src: Source::File(file),
                        cc,
                        layout,
                        len: base_len,
                        last_is_final: false,
                    };
                    (Some(ch), Some(path))
                }
                other => {
                    if let Some(mut f) = other {
                        f.path.remove_now();
                    }
                    (None, None)
                }
            };
            let mut r = Random::new(&shared, base, base_temp, base_len)?;
            for (j, chunk) in pending.chunks(layout.cu()).enumerate() {
                let mut buf = chunk.to_vec();
                buf.resize(layout.cu(), 0);
                r.write_slot(sealed + j as u64, &buf)?;
            }
            Ok(r)
        })
        .await?;
        let r = self.poison_on_err(r)?;
        self.mode = Mode::Random(Box::new(r));
        Ok(())
    }

    /// Runs `f` on the random-mode state on the blocking pool.
    async fn with_random<R, F>(&mut self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Random, &mut u64) -> Result<R> + Send + 'static,
    {
        self.switch_to_random().await?;
        let mut r = match std::mem::replace(&mut self.mode, Mode::Failed("I/O task lost".into())) {
            Mode::Random(r) => r,
            other => {
                self.mode = other;
                return Err(Error::Storage("internal: not in random mode".into()));
            }
        };
        let mut len = self.len;
        let (r, len, res) = spawn_blocking(move || {
            let res = f(&mut r, &mut len);
            (r, len, res)
        })
        .await?;
        self.mode = Mode::Random(r);
        self.len = len;
        self.poison_on_err(res)
    }

    fn is_append(&self) -> bool {
        matches!(self.mode, Mode::Append(_))
    }

    fn sealed_bytes(&self) -> u64 {
        match &self.mode {
            Mode::Append(a) => a.sealed * self.shared.layout.c,
            _ => 0,
        }
    }
}

impl Append {
    /// Bytes of the buffers this upload holds now: the batch being filled, the batches in flight
    /// (plaintext and sealed output) and the spares.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        let in_flight: usize = self
            .sealing
            .iter()
            .map(|b| b.data.len() + b.bytes as usize)
            .sum();
        self.pending.capacity()
            + in_flight
            + self.spare_plain.iter().map(Vec::capacity).sum::<usize>()
            + self.spare_out.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Hands all full chunks but the last `1..=C` pending bytes to one blocking job, which hashes
    /// them (after the previous batch's hash, whose context it is given), hands the context back,
    /// then seals and writes them; up to [`SEAL_DEPTH`] batches are in flight, so hashing never
    /// waits for the disk. One job per batch rather than a hashing job beside a sealing job: one
    /// hand-off to the blocking pool fewer, and the batch is still in the cache when it is sealed
    /// (8 concurrent 64 MiB WebDAV uploads: server CPU 920 → 880 ms, median of 9 rounds; see
    /// BENCHMARKS.md, session 11).
    async fn flush(&mut self, shared: &Arc<Shared>, flush: usize, sync_every: u64) -> Result<()> {
        let layout = shared.layout;
        if self.pending.is_empty() {
            return Ok(());
        }
        let k = (self.pending.len() as u64 - 1) / layout.c;
        if k == 0 {
            return Ok(());
        }
        self.take_hasher().await?;
        while self.sealing.len() >= SEAL_DEPTH {
            self.finish_oldest_seal(sync_every).await?;
        }
        let cut = (k * layout.c) as usize;
        let mut next = self.spare_plain.pop().unwrap_or_default();
        next.clear();
        next.reserve(flush + layout.cu());
        next.extend_from_slice(&self.pending[cut..]);
        let mut batch = std::mem::replace(&mut self.pending, next);
        batch.truncate(cut);
        let data = Arc::new(batch);
        let file = match &self.file {
            Some(f) => f.file.clone(),
            None => {
                // The first batch: the staging file is created now.
                let (sh, id) = (shared.clone(), self.id);
                let f = spawn_blocking(move || PartFile::create(&sh, id)).await??;
                let file = f.file.clone();
                self.file = Some(f);
                file
            }
        };
        let mut hasher = self
            .hasher
            .take()
            .ok_or_else(|| Error::Storage("internal: hasher missing".into()))?;
        let (hashed, hashing) = oneshot::channel();
        self.hashing = Some(hashing);
        let (plain, cc, writes, first) = (
            data.clone(),
            self.cc.clone(),
            self.writes.clone(),
            self.sealed,
        );
        let out = self.spare_out.pop().unwrap_or_default();
        let task = spawn_blocking(move || {
            hasher.update(&plain);
            // The upload may have been dropped meanwhile; then nobody wants the context.
            let _ = hashed.send(hasher);
            seal_full_chunks(&cc, &file, &writes, &plain, first, layout, out)
        });
        self.sealed += k;
        self.sealing.push_back(Sealing {
            data,
            task,
            bytes: k * layout.stride(),
        });
        Ok(())
    }

    /// Waits for the oldest batch being sealed; starts a background sync when enough is
    /// unsynced.
    async fn finish_oldest_seal(&mut self, sync_every: u64) -> Result<()> {
        let Some(f) = self.sealing.pop_front() else {
            return Ok(());
        };
        let out = f.task.await??;
        if self.spare_out.len() < SPARES {
            self.spare_out.push(out);
        }
        if let Ok(v) = Arc::try_unwrap(f.data)
            && self.spare_plain.len() < SPARES
        {
            self.spare_plain.push(v);
        }
        self.unsynced += f.bytes;
        if self.unsynced >= sync_every && self.sync.as_ref().is_none_or(|s| s.is_finished()) {
            self.finish_sync().await?;
            if let Some(f) = &self.file {
                let file = f.file.clone();
                self.sync = Some(spawn_blocking(move || file.sync_data()));
            }
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Takes back the hash context from the newest batch's job once it has hashed its batch.
    async fn take_hasher(&mut self) -> Result<()> {
        if let Some(h) = self.hashing.take() {
            let hasher = match h.await {
                Ok(c) => c,
                // The job ended without handing it back: it panicked, and its join reports why.
                Err(_) => {
                    return Err(Error::Storage(
                        "internal: the job hashing a batch of this upload stopped".into(),
                    ));
                }
            };
            self.hasher = Some(hasher);
        }
        Ok(())
    }

    /// Waits until everything handed out is hashed, sealed and written.
    async fn finish_all(&mut self, sync_every: u64) -> Result<()> {
        self.take_hasher().await?;
        while !self.sealing.is_empty() {
            self.finish_oldest_seal(sync_every).await?;
        }
        Ok(())
    }

    async fn finish_sync(&mut self) -> Result<()> {
        if let Some(s) = self.sync.take() {
            s.await??;
        }
        Ok(())
    }
}

/// Seals `data` (whole chunks, numbered from `first`) into `out` and writes them at their place in
/// the staging file, holding `writes` for the write: the batches of one upload are sealed in
/// parallel but written one at a time. ext4 lets one buffered write into a file proceed at a time
/// anyway, and a job waiting for the inode's lock spins on the CPU while the other copies (11 % of
/// the server's samples in a 1 GiB SFTP upload, `perf record -g`); waiting on this mutex sleeps.
fn seal_full_chunks(
    cc: &ChunkCipher,
    file: &File,
    writes: &std::sync::Mutex<()>,
    data: &[u8],
    first: u64,
    layout: Layout,
    mut out: Vec<u8>,
) -> Result<Vec<u8>> {
    out.clear();
    let n = data.len() / layout.cu();
    out.reserve(n * layout.stride() as usize);
    for (j, chunk) in data.chunks(layout.cu()).enumerate() {
        let start = out.len();
        out.extend_from_slice(chunk);
        let tag = cc.seal(first + j as u64, false, &mut out[start..])?;
        out.extend_from_slice(&tag);
    }
    let _turn = writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    file.write_all_at(&out, first * layout.stride())?;
    Ok(out)
}

impl Random {
    fn new(
        shared: &Shared,
        base: Option<Chunks>,
        base_temp: Option<TempPath>,
        base_limit: u64,
    ) -> Result<Random> {
        let key = SecretKey::random()?;
        let mut rnd = [0u8; 16];
        crate::crypto::keys::fill_random(&mut rnd)?;
        let (scratch, scratch_path) =
            create_temp(&shared.tmp, &format!("{}.scratch", hex::encode(rnd)))?;
        Ok(Random {
            layout: shared.layout,
            scratch,
            scratch_path,
            scratch_len: 0,
            sc: SlotCipher::new(&key)?,
            counter: 0,
            base,
            base_temp,
            base_limit,
            cache: None,
        })
    }

    fn remove_files(&mut self) {
        self.scratch_path.remove_now();
        if let Some(t) = &mut self.base_temp {
            t.remove_now();
        }
    }

    /// Plaintext of chunk `idx` (C bytes, zeros past the end) from its slot, the base, or zeros.
    fn read_slot(&self, idx: u64) -> Result<Vec<u8>> {
        let l = self.layout;
        let s = l.slot();
        let off = idx * s;
        if off + s <= self.scratch_len {
            let mut buf = vec![0u8; s as usize];
            self.scratch.read_exact_at(&mut buf, off)?;
            let mut ctr = [0u8; 8];
            ctr.copy_from_slice(&buf[..8]);
            let counter = u64::from_le_bytes(ctr);
            if counter != 0 {
                let n = self.sc.open(idx, counter, &mut buf[8..])?;
                buf.copy_within(8..8 + n, 0);
                buf.truncate(n);
                return Ok(buf);
            }
        }
        let mut out = Vec::with_capacity(l.cu());
        let start = idx * l.c;
        if let Some(b) = &self.base
            && start < self.base_limit.min(b.len)
        {
            let n = (self.base_limit.min(b.len) - start).min(l.c);
            b.read_range(start, n, &mut out)?;
        }
        out.resize(l.cu(), 0);
        Ok(out)
    }

    fn write_slot(&mut self, idx: u64, data: &[u8]) -> Result<()> {
        let s = self.layout.slot();
        self.counter += 1;
        let mut buf = Vec::with_capacity(s as usize);
        buf.extend_from_slice(&self.counter.to_le_bytes());
        buf.extend_from_slice(data);
        let tag = self.sc.seal(idx, self.counter, &mut buf[8..])?;
        buf.extend_from_slice(&tag);
        let off = idx * s;
        self.scratch.write_all_at(&buf, off)?;
        self.scratch_len = self.scratch_len.max(off + s);
        Ok(())
    }

    fn evict(&mut self) -> Result<()> {
        if let Some(c) = self.cache.take()
            && c.dirty
        {
            self.write_slot(c.idx, &c.data)?;
        }
        Ok(())
    }

    /// Loads chunk `idx` into the cache (`whole`: it will be overwritten entirely, skip reading).
    fn chunk_mut(&mut self, idx: u64, whole: bool) -> Result<&mut Cached> {
        if self.cache.as_ref().is_none_or(|c| c.idx != idx) {
            self.evict()?;
            let data = if whole {
                vec![0u8; self.layout.cu()]
            } else {
                self.read_slot(idx)?
            };
            self.cache = Some(Cached {
                idx,
                data,
                dirty: false,
            });
        }
        self.cache
            .as_mut()
            .ok_or_else(|| Error::Storage("internal: chunk cache empty".into()))
    }

    fn write_at(&mut self, len: &mut u64, offset: u64, data: &[u8]) -> Result<()> {
        let end = check_len(offset.checked_add(data.len() as u64))?;
        let c = self.layout.c;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let idx = pos / c;
            let within = (pos % c) as usize;
            let n = (self.layout.cu() - within).min(rest.len());
            let whole = within == 0 && n == self.layout.cu();
            let ch = self.chunk_mut(idx, whole)?;
            ch.data[within..within + n].copy_from_slice(&rest[..n]);
            ch.dirty = true;
            pos += n as u64;
            rest = &rest[n..];
        }
        *len = (*len).max(end);
        Ok(())
    }

    fn read_at(&mut self, len: u64, offset: u64, max: usize) -> Result<Vec<u8>> {
        let end = len.min(offset.saturating_add(max.min(MAX_READ) as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let c = self.layout.c;
        let mut pos = offset;
        while pos < end {
            let idx = pos / c;
            let within = (pos % c) as usize;
            let n = ((c - within as u64).min(end - pos)) as usize;
            let ch = self.chunk_mut(idx, false)?;
            out.extend_from_slice(&ch.data[within..within + n]);
            pos += n as u64;
        }
        Ok(out)
    }

    fn set_len(&mut self, len: &mut u64, new: u64) -> Result<()> {
        check_len(Some(new))?;
        if new >= *len {
            // Bytes past the old end are zero in every chunk (invariant), so nothing to write.
            *len = new;
            return Ok(());
        }
        let c = self.layout.c;
        let b = new / c;
        let r = (new % c) as usize;
        let keep = if r == 0 { b } else { b + 1 };
        if r > 0 {
            let ch = self.chunk_mut(b, false)?;
            ch.data[r..].fill(0);
            ch.dirty = true;
        }
        if self.cache.as_ref().is_some_and(|ch| ch.idx >= keep) {
            self.cache = None;
        }
        let s = self.layout.slot();
        let new_scratch = self.scratch_len.min(keep * s);
        self.scratch.set_len(new_scratch)?;
        self.scratch_len = new_scratch;
        self.base_limit = self.base_limit.min(new);
        *len = new;
        Ok(())
    }

    /// Re-encrypts the staged contents into a committed-format temp file. Returns the new blob's
    /// id, data key, SHA-256 and temp path.
    fn convert(
        &mut self,
        shared: &Shared,
        len: u64,
    ) -> Result<(BlobId, SecretKey, [u8; 32], TempPath)> {
        self.evict()?;
        let l = self.layout;
        let id = BlobId::random();
        let dk = SecretKey::random()?;
        let cc = ChunkCipher::new(&dk, id, shared.opts.cipher, l)?;
        let (file, path) = create_temp(&shared.tmp, &format!("{}.part", id.to_hex()))?;
        let mut hasher = digest::Context::new(&digest::SHA256);
        let n = l.chunks(len);
        let batch = (shared.opts.flush_bytes / l.cu()).max(1) as u64;
        let mut out = Vec::with_capacity(batch as usize * l.stride() as usize);
        let mut out_off = 0u64;
        for i in 0..n {
            let mut data = self.read_slot(i)?;
            data.truncate(l.plain_len(len, i) as usize);
            hasher.update(&data);
            let start = out.len();
            out.extend_from_slice(&data);
            let tag = cc.seal(i, i == n - 1, &mut out[start..])?;
            out.extend_from_slice(&tag);
            if (i + 1) % batch == 0 || i == n - 1 {
                file.write_all_at(&out, out_off)?;
                out_off += out.len() as u64;
                out.clear();
            }
        }
        if !shared.deferred() {
            file.sync_data()?;
        }
        Ok((id, dk, finish(hasher), path))
    }
}

fn finish(h: digest::Context) -> [u8; 32] {
    let mut sha = [0u8; 32];
    sha.copy_from_slice(h.finish().as_ref());
    sha
}

/// Seals a small upload's only chunk into its stored form (the bytes its file would hold) and
/// returns the reference carrying it in [`BlobRef::inline`].
fn seal_inline(
    shared: &Shared,
    mkeys: &MatterKeys,
    matter: MatterId,
    mut a: Append,
    len: u64,
) -> Result<BlobRef> {
    let mut hasher = a
        .hasher
        .take()
        .ok_or_else(|| Error::Storage("internal: hasher missing".into()))?;
    hasher.update(&a.pending);
    let mut out = Vec::with_capacity(a.pending.len() + TAG_LEN);
    out.extend_from_slice(&a.pending);
    let tag = a.cc.seal(0, true, &mut out)?;
    out.extend_from_slice(&tag);
    let expected = shared.layout.file_len(len);
    if out.len() as u64 != expected {
        return Err(Error::Storage(format!(
            "internal: sealed {} bytes for a blob of {len}, expected {expected}",
            out.len()
        )));
    }
    let mut r = make_ref(
        shared,
        mkeys,
        matter,
        a.id,
        len,
        finish(hasher),
        &a.data_key,
    )?;
    r.inline = Some(Bytes::from(out));
    Ok(r)
}

/// Seals the wrapped key and builds the reference (blocking).
fn make_ref(
    shared: &Shared,
    mkeys: &MatterKeys,
    matter: MatterId,
    id: BlobId,
    len: u64,
    sha256: [u8; 32],
    dk: &SecretKey,
) -> Result<BlobRef> {
    let info = super::format::KeyInfo {
        cipher: shared.opts.cipher,
        layout: shared.layout,
    };
    let sealed_key = seal_data_key(&mkeys.blob, matter, id, len, &sha256, &info, dk)?;
    Ok(BlobRef {
        id,
        len,
        sha256,
        sealed_key,
        inline: None,
    })
}

#[async_trait]
impl StagedBlob for EncStaged {
    fn len(&self) -> u64 {
        self.len
    }

    async fn append(&mut self, data: &[u8]) -> Result<()> {
        check_len(self.len.checked_add(data.len() as u64))?;
        if self.is_append() {
            let r = self.append_bytes(data).await;
            self.poison_on_err(r)?;
            self.len += data.len() as u64;
            Ok(())
        } else {
            let data = data.to_vec();
            self.with_random(move |r, len| {
                let at = *len;
                r.write_at(len, at, &data)
            })
            .await
        }
    }

    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = check_len(offset.checked_add(data.len() as u64))?;
        if self.is_append() {
            let sealed = self.sealed_bytes();
            if offset >= self.len && offset - self.len <= APPEND_ZERO_FILL_MAX {
                let gap = offset - self.len;
                let r = self.append_zeros(gap).await;
                self.poison_on_err(r)?;
                return self.append(data).await;
            }
            if offset >= sealed && offset < self.len {
                // Rewrite inside the in-memory tail: patch it, append the rest.
                let a = self.append_mode()?;
                let at = (offset - sealed) as usize;
                let overlap = (a.pending.len() - at).min(data.len());
                a.pending[at..at + overlap].copy_from_slice(&data[..overlap]);
                if overlap < data.len() {
                    return self.append(&data[overlap..]).await;
                }
                return Ok(());
            }
        }
        let data = data.to_vec();
        self.with_random(move |r, len| r.write_at(len, offset, &data))
            .await?;
        debug_assert!(self.len >= end);
        Ok(())
    }

    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
        if offset >= self.len || max == 0 {
            return Ok(Bytes::new());
        }
        if self.is_append() {
            let end = self
                .len
                .min(offset.saturating_add(max.min(MAX_READ) as u64));
            let sealed = self.sealed_bytes();
            let layout = self.shared.layout;
            let sync_every = self.shared.opts.sync_every;
            let a = self.append_mode()?;
            let mut out = Vec::with_capacity((end - offset) as usize);
            if offset < sealed {
                a.finish_all(sync_every).await?;
                let file = a.file.as_ref().map(|f| f.file.clone()).ok_or_else(|| {
                    Error::Storage("internal: sealed chunks without a staging file".into())
                })?;
                let ch = Chunks {
                    src: Source::File(file),
                    cc: a.cc.clone(),
                    layout,
                    len: sealed,
                    last_is_final: false,
                };
                let upto = end.min(sealed);
                out = spawn_blocking(move || {
                    let mut o = out;
                    ch.read_range(offset, upto - offset, &mut o).map(|_| o)
                })
                .await??;
            }
            if end > sealed {
                let s = (offset.max(sealed) - sealed) as usize;
                let e = (end - sealed) as usize;
                out.extend_from_slice(&a.pending[s..e]);
            }
            return Ok(Bytes::from(out));
        }
        let out = self
            .with_random(move |r, len| r.read_at(*len, offset, max))
            .await?;
        Ok(Bytes::from(out))
    }

    async fn set_len(&mut self, new: u64) -> Result<()> {
        check_len(Some(new))?;
        if self.is_append() {
            if new >= self.len && new - self.len <= APPEND_ZERO_FILL_MAX {
                let r = self.append_zeros(new - self.len).await;
                return self.poison_on_err(r);
            }
            let sealed = self.sealed_bytes();
            if new < self.len && (new > sealed || (sealed == 0 && new == 0)) {
                let a = self.append_mode()?;
                a.pending.truncate((new - sealed) as usize);
                self.len = new;
                return Ok(());
            }
        }
        self.with_random(move |r, len| r.set_len(len, new)).await
    }

    async fn commit(mut self: Box<Self>) -> Result<BlobRef> {
        let shared = self.shared.clone();
        let matter = self.matter;
        let mkeys = self.mkeys.clone();
        let len = self.len;
        let mode = std::mem::replace(&mut self.mode, Mode::Failed("committed".into()));
        match mode {
            Mode::Failed(w) => Err(failed(&w)),
            Mode::Append(mut a) => {
                a.finish_all(u64::MAX).await?;
                a.finish_sync().await?;
                let inline_max = shared.opts.inline_max.min(shared.layout.cu());
                if inline_max > 0
                    && a.file.is_none()
                    && a.sealed == 0
                    && a.pending.len() <= inline_max
                {
                    // Small enough for the database: sealed here (one chunk of at most
                    // `inline_max` bytes, microseconds of work), no file at all.
                    return seal_inline(&shared, &mkeys, matter, *a, len);
                }
                spawn_blocking(move || -> Result<BlobRef> {
                    let mut a = *a;
                    let layout = shared.layout;
                    let mut hasher = a
                        .hasher
                        .take()
                        .ok_or_else(|| Error::Storage("internal: hasher missing".into()))?;
                    let pending = std::mem::take(&mut a.pending);
                    hasher.update(&pending);
                    // Full chunks still in memory (uploads shorter than one batch), then the
                    // final chunk (0..=C bytes; empty only for an empty blob).
                    let k = if pending.is_empty() {
                        0
                    } else {
                        (pending.len() - 1) / layout.cu()
                    };
                    let cut = k * layout.cu();
                    // An upload that never filled a batch has no staging file yet.
                    let PartFile { file, mut path } = match a.file.take() {
                        Some(f) => f,
                        None => PartFile::create(&shared, a.id)?,
                    };
                    let mut out = if k > 0 {
                        let out = a.spare_out.pop().unwrap_or_default();
                        let (cc, w) = (&a.cc, &a.writes);
                        seal_full_chunks(cc, &file, w, &pending[..cut], a.sealed, layout, out)?
                    } else {
                        Vec::new()
                    };
                    let last = a.sealed + k as u64;
                    out.clear();
                    out.extend_from_slice(&pending[cut..]);
                    let tag = a.cc.seal(last, true, &mut out)?;
                    out.extend_from_slice(&tag);
                    file.write_all_at(&out, last * layout.stride())?;
                    if !shared.deferred() {
                        file.sync_data()?;
                    }
                    let expected = layout.file_len(len);
                    let actual = file.metadata()?.len();
                    if actual != expected {
                        return Err(Error::Storage(format!(
                            "internal: staged file has {actual} bytes, expected {expected}"
                        )));
                    }
                    let sha = finish(hasher);
                    let r = make_ref(&shared, &mkeys, matter, a.id, len, sha, &a.data_key)?;
                    shared.install(matter, path.path(), a.id)?;
                    path.disarm();
                    Ok(r)
                })
                .await?
            }
            Mode::Random(mut r) => {
                spawn_blocking(move || -> Result<BlobRef> {
                    let res = (|| {
                        let (id, dk, sha, mut path) = r.convert(&shared, len)?;
                        let br = make_ref(&shared, &mkeys, matter, id, len, sha, &dk)?;
                        shared.install(matter, path.path(), id)?;
                        path.disarm();
                        Ok(br)
                    })();
                    r.remove_files();
                    res
                })
                .await?
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let mode = std::mem::replace(&mut self.mode, Mode::Failed("aborted".into()));
        match mode {
            Mode::Failed(_) => Ok(()),
            Mode::Append(mut a) => {
                // Let the batch in flight finish so nothing writes to the file after removal.
                let _ = a.finish_all(u64::MAX).await;
                let _ = a.finish_sync().await;
                if let Some(mut f) = a.file.take() {
                    spawn_blocking(move || f.path.remove_now()).await?;
                }
                Ok(())
            }
            Mode::Random(mut r) => {
                spawn_blocking(move || r.remove_files()).await?;
                Ok(())
            }
        }
    }
}

const _: () = assert!(TAG_LEN == 16);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::encrypted::{EncryptedBlobStore, test_store};

    fn staged_files(store: &EncryptedBlobStore) -> usize {
        std::fs::read_dir(store.dir().join("tmp")).unwrap().count()
    }

    fn committed_files(store: &EncryptedBlobStore) -> usize {
        match std::fs::read_dir(store.dir().join(format!("{:016x}", 1))) {
            Ok(d) => d.count(),
            Err(_) => 0,
        }
    }

    /// Uploads of up to `inline_max` bytes come back sealed in the reference and never touch the
    /// disk; they read back through `open`, `open_prefix` and as the base of an edit; one byte
    /// more, a file; `inline_max = 0`, always a file. A damaged stored form is an integrity
    /// error, never wrong bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_uploads_are_returned_inline_and_read_back() {
        use crate::blob::BlobStore;
        use crate::blob::encrypted::{BlobOptions, DEFAULT_INLINE_MAX};
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), BlobOptions::default());
        let m = MatterId(1);
        for len in [0usize, 1, 4096, DEFAULT_INLINE_MAX] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut up = store.stage(m, None).await.unwrap();
            up.append(&data[..len / 2]).await.unwrap();
            up.append(&data[len / 2..]).await.unwrap();
            let r = up.commit().await.unwrap();
            let stored = r.inline.clone().expect("a small upload is kept inline");
            assert_eq!(stored.len(), len + TAG_LEN, "one sealed chunk of {len}");
            assert!(len < 16 || !stored.windows(16).any(|w| w == &data[..16]));
            assert_eq!((staged_files(&store), committed_files(&store)), (0, 0));
            let mut rd = store.open(m, &r).await.unwrap();
            assert_eq!(&rd.read_at(0, 1 << 20).await.unwrap()[..], &data[..]);
            let (mut rd, first) = store.open_prefix(m, &r, 100).await.unwrap();
            assert_eq!(&first[..], &data[..len.min(100)]);
            assert_eq!(rd.read_at(len as u64, 10).await.unwrap().len(), 0);
            store.verify(m, &r).await.unwrap();
            // Editing it: the inline blob is the base; the result is a blob of its own.
            let mut ed = store.stage(m, Some(&r)).await.unwrap();
            ed.write_at(0, b"EDIT").await.unwrap();
            let r2 = ed.commit().await.unwrap();
            let mut want = data.clone();
            want.resize(len.max(4), 0);
            want[..4].copy_from_slice(b"EDIT");
            let mut rd = store.open(m, &r2).await.unwrap();
            assert_eq!(&rd.read_at(0, 1 << 20).await.unwrap()[..], &want[..]);
            store.remove(m, &r2).await.unwrap();
            // Damaged or missing stored forms.
            let mut bad = r.clone();
            let mut b = stored.to_vec();
            b[0] ^= 1;
            bad.inline = Some(b.into());
            let e = match store.open(m, &bad).await {
                Err(e) => Some(e),
                Ok(mut rd) => rd.read_at(0, 1 << 20).await.err(),
            };
            // (an empty blob has no bytes to read, so nothing to find wrong)
            assert!(
                len == 0 || matches!(e, Some(crate::Error::Integrity(_))),
                "{len}: {e:?}"
            );
            let mut short = r.clone();
            short.inline = Some(stored.slice(1..));
            let e = store.open(m, &short).await.err();
            assert!(matches!(e, Some(crate::Error::Integrity(_))), "{e:?}");
            let mut gone = r.clone();
            gone.inline = None;
            let e = store.open(m, &gone).await.err();
            assert!(matches!(e, Some(crate::Error::Integrity(_))), "{e:?}");
        }
        // One byte over: a file.
        let mut up = store.stage(m, None).await.unwrap();
        up.append(&vec![5u8; DEFAULT_INLINE_MAX + 1]).await.unwrap();
        let r = up.commit().await.unwrap();
        assert!(r.inline.is_none());
        assert_eq!(committed_files(&store), 1);
        store.verify(m, &r).await.unwrap();
        // Turned off: a file for 10 bytes.
        let dir2 = tempfile::tempdir().unwrap();
        let off = test_store(
            dir2.path(),
            BlobOptions {
                inline_max: 0,
                ..Default::default()
            },
        );
        let mut up = off.stage(m, None).await.unwrap();
        up.append(b"0123456789").await.unwrap();
        let r = up.commit().await.unwrap();
        assert!(r.inline.is_none());
        assert_eq!(committed_files(&off), 1);
        let r = off.stage(m, None).await.unwrap().commit().await.unwrap();
        assert!(r.inline.is_none(), "an empty upload too");
        assert_eq!(committed_files(&off), 2);
    }

    /// Starting an upload touches no disk; a small upload's file appears only in its commit
    /// (and is renamed into place there), an upload longer than a batch gets it at the first
    /// batch; aborted or dropped uploads leave nothing behind either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_staging_file_is_created_with_the_first_batch_or_at_commit() {
        use crate::blob::BlobStore;
        let dir = tempfile::tempdir().unwrap();
        // Files for every size here (small blobs kept inline are the next test's subject).
        let opts = crate::blob::encrypted::BlobOptions {
            inline_max: 0,
            ..Default::default()
        };
        let store = test_store(dir.path(), opts);
        let flush = store.shared.opts.flush_bytes;
        for round in 0..2 {
            // round 0 loads the matter key (blocking pool), round 1 finds it cached
            let mut up = store.stage(MatterId(1), None).await.unwrap();
            assert_eq!(staged_files(&store), 0, "round {round}: a file at stage()");
            up.append(&[7u8; 4096]).await.unwrap();
            up.write_at(4096, &[8u8; 100]).await.unwrap();
            assert_eq!(
                &up.read_at(4090, 10).await.unwrap()[..],
                &[7, 7, 7, 7, 7, 7, 8, 8, 8, 8]
            );
            assert_eq!(
                staged_files(&store),
                0,
                "round {round}: a file before any batch"
            );
            let r = up.commit().await.unwrap();
            assert_eq!(r.len, 4196);
            assert_eq!(staged_files(&store), 0);
            assert_eq!(committed_files(&store), round + 1);
            let mut rd = store.open(MatterId(1), &r).await.unwrap();
            let got = rd.read_at(0, 1 << 20).await.unwrap();
            assert_eq!(&got[..4096], &[7u8; 4096][..]);
            assert_eq!(&got[4096..], &[8u8; 100][..]);
        }
        // An empty upload commits too (its file is the one final, empty chunk).
        let up = store.stage(MatterId(1), None).await.unwrap();
        let r = up.commit().await.unwrap();
        assert_eq!(r.len, 0);
        store.verify(MatterId(1), &r).await.unwrap();
        assert_eq!(staged_files(&store), 0);

        // Past one batch: the file exists while the upload goes on.
        let big: Vec<u8> = (0..flush * 2 + 1000).map(|i| (i % 251) as u8).collect();
        let mut up = store.stage(MatterId(1), None).await.unwrap();
        up.append(&big).await.unwrap();
        assert_eq!(
            staged_files(&store),
            1,
            "no staging file after a full batch"
        );
        let r = up.commit().await.unwrap();
        assert_eq!(staged_files(&store), 0);
        store.verify(MatterId(1), &r).await.unwrap();

        // Aborted and dropped, small and big: nothing left.
        for data in [&big[..100], &big[..]] {
            let mut up = store.stage(MatterId(1), None).await.unwrap();
            up.append(data).await.unwrap();
            up.abort().await.unwrap();
            assert_eq!(staged_files(&store), 0);
            let mut up = store.stage(MatterId(1), None).await.unwrap();
            up.append(data).await.unwrap();
            drop(up);
            let mut left = usize::MAX;
            for _ in 0..100 {
                left = staged_files(&store);
                if left == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(
                left,
                0,
                "a dropped upload of {} bytes left its file",
                data.len()
            );
        }
    }

    /// A small upload switched to random mode before any batch (a write far past the end)
    /// has no append file to carry over, and still commits what was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_upload_switches_to_random_mode_without_a_staging_file() {
        use crate::blob::BlobStore;
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Default::default());
        let mut up = store.stage(MatterId(1), None).await.unwrap();
        up.append(b"head").await.unwrap();
        let far = APPEND_ZERO_FILL_MAX + 10;
        up.write_at(far, b"tail").await.unwrap();
        // only the scratch file of random mode
        assert_eq!(staged_files(&store), 1);
        let r = up.commit().await.unwrap();
        assert_eq!(r.len, far + 4);
        assert_eq!(staged_files(&store), 0);
        let mut rd = store.open(MatterId(1), &r).await.unwrap();
        assert_eq!(&rd.read_at(0, 4).await.unwrap()[..], b"head");
        assert_eq!(&rd.read_at(far, 4).await.unwrap()[..], b"tail");
        assert_eq!(rd.read_at(4, 4).await.unwrap()[..], [0u8; 4]);
    }

    /// A commit that can't create its staging file (here: the staging directory is gone) fails
    /// cleanly and commits nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_that_cannot_create_its_file_fails() {
        use crate::blob::BlobStore;
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::blob::encrypted::BlobOptions {
            inline_max: 0,
            ..Default::default()
        };
        let store = test_store(dir.path(), opts);
        let mut up = store.stage(MatterId(1), None).await.unwrap();
        up.append(b"hello").await.unwrap();
        std::fs::remove_dir(store.dir().join("tmp")).unwrap();
        let e = up.commit().await.unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e}");
        assert_eq!(committed_files(&store), 0);
    }

    /// Eight concurrent uploads must fit a server's memory budget (issue 8: under 100 MiB in all
    /// during 8 concurrent 64 MiB uploads): each upload's buffers stay within a few MiB whatever
    /// its size, and the content still round-trips.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_holds_a_few_mib_of_buffers_whatever_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Default::default());
        let shared = store.shared.clone();
        let mut up = spawn_blocking(move || EncStaged::start(shared, MatterId(1), None))
            .await
            .unwrap()
            .unwrap();
        let mut piece: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut h = digest::Context::new(&digest::SHA256);
        let mut max_held = 0usize;
        for n in 0..512u64 {
            // Every piece differs, so a batch hashed out of order changes the checksum.
            piece[..8].copy_from_slice(&n.to_le_bytes());
            up.append(&piece).await.unwrap();
            h.update(&piece);
            if let Mode::Append(a) = &up.mode {
                max_held = max_held.max(a.held_bytes());
            } else {
                panic!("a plain upload left append mode");
            }
        }
        assert!(
            max_held <= 4 << 20,
            "a 32 MiB upload held {max_held} bytes of buffers at once"
        );
        let r = Box::new(up).commit().await.unwrap();
        assert_eq!(r.len, 512 * 64 * 1024);
        assert_eq!(r.sha256.as_slice(), h.finish().as_ref());
        store.verify(MatterId(1), &r).await.unwrap();
    }
}

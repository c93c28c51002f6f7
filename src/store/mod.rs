//! The embedded database: redb tables, sealed records, and the one writer thread.
//!
//! What this module owns:
//! - the table layout ([`tables`]) and the record types ([`records`]);
//! - every byte that reaches redb passes through the [`Sealer`] (values) or
//!   [`Sealer::index_key`] (name-derived keys): nothing here writes client data in the clear;
//! - **all writes go through one writer thread** ([`Store::write`]). It takes every job that is
//!   waiting, runs them in one write transaction and commits once (group commit), then answers each
//!   job. So an operation and its audit entry are committed together (atomically), concurrent
//!   operations share the commit, and no caller reports "done" before its commit returned.
//! - **durability** ([`Durability`]): with `Immediate` (the default) every commit is fsynced before
//!   its jobs are answered. With `Batched`, commits are made with `redb::Durability::None`
//!   (visible at once, not yet on disk) and the writer makes one durable commit at most
//!   `flush_interval` after the first non-durable one, on [`Store::sync`] and when the store shuts
//!   down. Blob files registered in the [`SyncQueue`] are fdatasynced (and their directories
//!   fsynced) before that durable commit, so a durable commit never names a blob that is not on
//!   disk.
//! - **deferred entries** ([`Store::write_deferred`]): in batched mode only, a job that writes
//!   nothing but an access record (the audit entry of a read, a refusal or an abandoned upload) is queued without waking the writer
//!   and without waiting: it runs at the head of the next batch, and at the latest
//!   [`DEFER_WINDOW`] after it was queued. Its place in the trail is still before anything the
//!   same caller does next. With `Immediate` it is an ordinary [`Store::write`].
//! - reads run on tokio's blocking pool in their own MVCC read transactions ([`Store::read`]).
//!
//! What it must never do: decide access. It stores; [`crate::policy`] decides.
//!
//! Job contract: a write job validates before it mutates. A job that returns `Err` must not have
//! written anything it would not want rolled back: if any job in a batch fails, the whole batch is
//! rolled back and each job is re-run alone in its own transaction, so the failing job's partial
//! writes are discarded and the others still commit. Domain outcomes that must be audited (denials,
//! not-found) are returned as `Ok(Err(..))`, never as `Err`.

pub mod records;
pub mod tables;

use crate::crypto::{Scope, Sealer};
use crate::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tables::Raw;

/// Schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Most jobs committed together in one transaction.
const MAX_BATCH: usize = 512;

/// Default [`Durability::Batched`] flush interval.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Longest time a deferred job ([`Store::write_deferred`]) waits for the next batch before the
/// writer commits it on its own.
pub const DEFER_WINDOW: Duration = Duration::from_millis(10);

/// Deferred jobs queued beyond this make the next caller wait for a commit (bounds memory).
const MAX_DEFERRED: usize = 4096;

/// Blob files waiting for their sync above which a new one is synced at once (bounds memory).
const MAX_PENDING_FILES: usize = 65_536;

/// Linux: a flush with more queued files than this syncs with one `syncfs(2)` per filesystem;
/// up to this many are fdatasynced one by one. `syncfs` also writes back every other dirty page of
/// the filesystem — on a disk shared with other writers that can be far more than sdx's own few
/// large uploads (8 concurrent 64 MiB uploads in batched mode ran at 425–668 MB/s with another
/// server's unsynced files on the same filesystem) — while each `fdatasync` of a new file costs a
/// journal commit of its own, which only many small files make worth sharing.
const SYNCFS_FROM_FILES: usize = 16;

/// When an acknowledged write is on disk.
///
/// - `Immediate` (the default): every commit is fsynced before the operation is acknowledged, and
///   every uploaded blob file and its directory are synced before its reference is recorded. A
///   crash (power loss, kernel panic, SIGKILL) loses nothing that was acknowledged.
/// - `Batched { flush_interval }`: commits are made without fsync (`redb::Durability::None`):
///   readers see them at once, but they reach the disk with the next durable commit, which the
///   store makes at most `flush_interval` after the first non-durable commit (with or without
///   further traffic), on [`Store::sync`], and when the store is dropped or the server shuts down
///   cleanly. Uploaded blob files are synced (fdatasync, then their directory) just before that
///   durable commit, never after it. Read operations' audit entries are not even waited for
///   ([`Store::write_deferred`]): they are committed with the next batch, at most
///   [`DEFER_WINDOW`] later. **What a crash can lose:** the operations acknowledged in
///   the last `flush_interval` (plus the time one flush takes and [`DEFER_WINDOW`]), together with their audit
///   entries; the database then opens at the last durable commit, which is consistent (every
///   document whole, old or new version; the audit chain verifies; no reference to a missing or
///   partial blob). Uploads still go through a temporary file and a rename, so no document is
///   ever partial. A crash of the process alone (SIGKILL, the OS keeps running) loses the same
///   interval: redb's on-disk header moves only with a durable commit. This is the class of guarantee Apache mod_dav, OpenSSH's sftp-server, Nextcloud and SFTPGo
///   give (page cache, no fsync per operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every acknowledged operation has been fsynced.
    #[default]
    Immediate,
    /// Operations are fsynced in groups, at most `flush_interval` after the first unsynced one.
    Batched {
        /// Longest time a committed operation stays only in memory.
        flush_interval: Duration,
    },
}

impl Durability {
    /// Batched with the default interval ([`DEFAULT_FLUSH_INTERVAL`]).
    pub fn batched() -> Self {
        Durability::Batched {
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }
    /// Whether acknowledged operations may still be only in memory.
    pub fn is_batched(&self) -> bool {
        matches!(self, Durability::Batched { .. })
    }
}

/// Files and directories written without a sync, to be synced before the next durable commit
/// (see [`Durability::Batched`]). Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct SyncQueue {
    inner: Arc<Mutex<PendingSyncs>>,
    /// Held across a whole [`SyncQueue::sync_all`]: a second caller (the lock manager before its
    /// own durable commit) must not find the list empty while the first is still syncing it.
    running: Arc<Mutex<()>>,
}

#[derive(Default)]
struct PendingSyncs {
    files: Vec<std::path::PathBuf>,
    dirs: std::collections::HashSet<std::path::PathBuf>,
}

impl std::fmt::Debug for SyncQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SyncQueue")
            .field("files", &g.files.len())
            .field("dirs", &g.dirs.len())
            .finish()
    }
}

fn sync_file_data(p: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(p).and_then(|f| f.sync_data()) {
        // Removed since (an orphan cleared, a purge after a sync): nothing left to make durable.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn sync_dir_entries(p: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(p).and_then(|f| f.sync_all()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Linux: one `syncfs(2)` per filesystem holding the queued directories (every queued file lives
/// in one of them) instead of an `fdatasync` per file. On ext4 each `fdatasync` of a new file forces
/// its own journal commit (0.3–4 ms here), and the writer thread waits for all of them at a flush; a
/// `syncfs` writes back every dirty page of the filesystem and commits the journal once, so a flush
/// after 1,000 small uploads costs one journal commit instead of 1,000. It also flushes other dirty
/// data of that filesystem (a superset of what is needed; correct, and cheap on a data disk).
/// `None` when a directory could not be examined: the caller falls back to syncing file by file.
#[cfg(target_os = "linux")]
fn sync_filesystems(
    dirs: &std::collections::HashSet<std::path::PathBuf>,
) -> Option<std::io::Result<()>> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<u64> = Vec::new();
    let mut handles = Vec::new();
    for d in dirs {
        match std::fs::File::open(d) {
            Ok(f) => {
                let dev = f.metadata().ok()?.dev();
                if !seen.contains(&dev) {
                    seen.push(dev);
                    handles.push(f);
                }
            }
            // Removed since (a purged matter): nothing left there to make durable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    let mut first_err = None;
    for f in &handles {
        if let Err(e) = rustix::fs::syncfs(f) {
            first_err.get_or_insert(std::io::Error::from(e));
        }
    }
    Some(match first_err {
        None => Ok(()),
        Some(e) => Err(e),
    })
}

impl SyncQueue {
    /// Queues a file written without a sync (its data is fdatasynced at the next flush) and the
    /// directory naming it (fsynced once however many files it got). With too many files queued
    /// already, syncs both now instead (blocking).
    pub fn push(&self, file: &std::path::Path, dir: &std::path::Path) -> std::io::Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if g.files.len() >= MAX_PENDING_FILES {
            drop(g);
            sync_file_data(file)?;
            return sync_dir_entries(dir);
        }
        g.files.push(file.to_path_buf());
        if !g.dirs.contains(dir) {
            g.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }
    /// Queues a directory whose entries changed (e.g. a new subdirectory).
    pub fn push_dir(&self, dir: &std::path::Path) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !g.dirs.contains(dir) {
            g.dirs.insert(dir.to_path_buf());
        }
    }
    /// How many files wait for their sync.
    pub fn pending_files(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .len()
    }
    /// Syncs everything queued so far: with more than `SYNCFS_FROM_FILES` (16) files on Linux, one
    /// `syncfs` per filesystem of the queued directories; otherwise the files first, then the
    /// directories. Blocking. Files removed
    /// in the meantime are skipped. On error the queue is emptied anyway (Linux forgets a failed
    /// writeback, so a retry would wrongly succeed) and the first error returned.
    pub fn sync_all(&self) -> std::io::Result<()> {
        let _running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let (files, dirs) = {
            let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut g.files), std::mem::take(&mut g.dirs))
        };
        if files.is_empty() && dirs.is_empty() {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if files.len() > SYNCFS_FROM_FILES
            && let Some(r) = sync_filesystems(&dirs)
        {
            return r;
        }
        let mut first_err = None;
        for f in &files {
            if let Err(e) = sync_file_data(f) {
                first_err.get_or_insert(e);
            }
        }
        for d in &dirs {
            if let Err(e) = sync_dir_entries(d) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// The current database handle, shared by everything that uses the database (the store, the
/// keyring, the lock manager). Cheap to clone.
///
/// After a commit fails with an I/O error (a full disk), redb refuses every later transaction
/// until the file is reopened. The store's writer then takes the handle out of this cell, waits
/// (bounded) until every holder has dropped its `Arc` (redb refuses a second open of the same file
/// in one process until then), reopens the file and puts the new handle in. Holders therefore
/// keep the cell, never an `Arc<Database>`, and fetch the handle per transaction
/// ([`DbCell::begin_read`], [`DbCell::begin_write`], [`DbCell::get`]).
#[derive(Clone)]
pub struct DbCell {
    inner: Arc<CellInner>,
}

struct CellInner {
    slot: std::sync::RwLock<Slot>,
    /// Batched durability: blob files to sync before any durable commit.
    syncs: Mutex<Option<SyncQueue>>,
    /// How to reopen it (`None`: in memory, can't be reopened).
    file: Option<(std::path::PathBuf, usize)>,
    generation: std::sync::atomic::AtomicU64,
}

enum Slot {
    Open(Arc<redb::Database>),
    /// Being reopened after a storage failure: why.
    Closed(String),
}

impl std::fmt::Debug for DbCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCell")
            .field("file", &self.inner.file)
            .field("generation", &self.generation())
            .finish()
    }
}

impl From<Arc<redb::Database>> for DbCell {
    fn from(db: Arc<redb::Database>) -> Self {
        DbCell::new(db, None)
    }
}

impl From<redb::Database> for DbCell {
    fn from(db: redb::Database) -> Self {
        DbCell::new(Arc::new(db), None)
    }
}

impl DbCell {
    /// A cell over an open database; `file` = (path, cache bytes) lets the store reopen it after
    /// a storage failure.
    pub fn new(db: Arc<redb::Database>, file: Option<(std::path::PathBuf, usize)>) -> Self {
        DbCell {
            inner: Arc::new(CellInner {
                slot: std::sync::RwLock::new(Slot::Open(db)),
                syncs: Mutex::new(None),
                file,
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Opens (or creates) the database file with sdx's settings ([`open_database`]) in a cell that
    /// can reopen it.
    pub fn open_file(path: &std::path::Path, cache_bytes: usize) -> Result<Self> {
        let db = open_database(path, cache_bytes)?;
        Ok(DbCell::new(
            Arc::new(db),
            Some((path.to_path_buf(), cache_bytes)),
        ))
    }

    /// The current handle. While the database is being reopened after a storage failure: an
    /// error that says why (it keeps the OS error, e.g. "(os error 28)" for a full disk).
    pub fn get(&self) -> std::result::Result<Arc<redb::Database>, redb::StorageError> {
        match &*self
            .inner
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Slot::Open(db) => Ok(db.clone()),
            Slot::Closed(why) => Err(redb::StorageError::Io(std::io::Error::other(format!(
                "the database is being reopened after a storage failure: {why}"
            )))),
        }
    }

    /// A read transaction on the current handle.
    pub fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        self.get()?.begin_read()
    }

    /// A write transaction on the current handle (blocks while another one is alive).
    pub fn begin_write(
        &self,
    ) -> std::result::Result<redb::WriteTransaction, redb::TransactionError> {
        self.get()?.begin_write()
    }

    /// Syncs the blob files queued by batched durability (nothing otherwise). Code that commits
    /// on this database outside the store with redb's default (immediate) durability must call
    /// it **while holding its write transaction, just before `commit`**: an immediate commit also
    /// makes the store's pending non-durable commits durable, so their blob files must be on disk
    /// first (and holding the write transaction keeps the store from committing meanwhile).
    pub fn sync_pending_files(&self) -> std::io::Result<()> {
        let q = self
            .inner
            .syncs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match q {
            Some(q) => q.sync_all(),
            None => Ok(()),
        }
    }

    /// How many times the database was reopened.
    pub fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the handle out (nobody starts new transactions on it); returns it.
    fn close(&self, why: String) -> Option<Arc<redb::Database>> {
        let mut g = self
            .inner
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *g, Slot::Closed(why)) {
            Slot::Open(db) => Some(db),
            Slot::Closed(_) => None,
        }
    }

    fn put(&self, db: Arc<redb::Database>) {
        *self
            .inner
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Slot::Open(db);
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Anything that can read tables: a read or a write transaction.
pub trait Tx {
    /// One raw value.
    fn get_raw(&self, t: Raw, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Entries whose key starts with `prefix`, from `start` (inclusive; forward) or from the end of
    /// the prefix range backwards (`rev`), at most `limit`.
    fn range_raw(
        &self,
        t: Raw,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// All entries whose key starts with `prefix`, in key order, at most `limit`.
    fn scan_raw(&self, t: Raw, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range_raw(t, prefix, prefix, limit, false)
    }
    /// The last entry of a table (highest key).
    fn last_raw(&self, t: Raw) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.range_raw(t, &[], &[], 1, true)?.pop())
    }
}

/// The smallest key greater than every key starting with `prefix` (None: no such bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn range_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    start: &[u8],
    prefix: &[u8],
    limit: usize,
    rev: bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut push = |k: &[u8], v: &[u8]| -> bool {
        if !k.starts_with(prefix) || out.len() >= limit {
            return false;
        }
        out.push((k.to_vec(), v.to_vec()));
        true
    };
    if rev {
        let end = prefix_end(prefix);
        let iter = match &end {
            Some(e) => table.range::<&[u8]>(..e.as_slice())?,
            None => table.range::<&[u8]>(..)?,
        };
        for item in iter.rev() {
            let (k, v) = item?;
            if !push(k.value(), v.value()) {
                break;
            }
        }
    } else {
        for item in table.range::<&[u8]>(start..)? {
            let (k, v) = item?;
            if !push(k.value(), v.value()) {
                break;
            }
        }
    }
    Ok(out)
}

impl Tx for redb::ReadTransaction {
    fn get_raw(&self, t: Raw, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = match self.open_table(t) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
    fn range_raw(
        &self,
        t: Raw,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.open_table(t) {
            Ok(table) => range_table(&table, start, prefix, limit, rev),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Tx for redb::WriteTransaction {
    fn get_raw(&self, t: Raw, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.open_table(t)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
    fn range_raw(
        &self,
        t: Raw,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let table = self.open_table(t)?;
        range_table(&table, start, prefix, limit, rev)
    }
}

/// The additional data binding a sealed value to its table and key.
pub fn aad(t: Raw, key: &[u8]) -> Vec<u8> {
    let name = t.name().as_bytes();
    let mut a = Vec::with_capacity(name.len() + 1 + key.len());
    a.extend_from_slice(name);
    a.push(0);
    a.extend_from_slice(key);
    a
}

fn encode<V: Serialize>(v: &V) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::Storage(format!("encoding a record failed: {e}")))
}

fn decode<V: DeserializeOwned>(t: Raw, bytes: &[u8]) -> Result<V> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Integrity(format!("a record in table {} is malformed: {e}", t.name())))
}

/// Typed, sealed access to any transaction.
pub struct Db<'a, T: Tx + ?Sized> {
    /// The transaction.
    pub tx: &'a T,
    /// The record sealer.
    pub sealer: &'a dyn Sealer,
}

impl<'a, T: Tx + ?Sized> Db<'a, T> {
    /// Reads and unseals one record.
    pub fn get<V: DeserializeOwned>(&self, t: Raw, scope: Scope, key: &[u8]) -> Result<Option<V>> {
        match self.tx.get_raw(t, key)? {
            None => Ok(None),
            Some(sealed) => {
                let plain = self.sealer.open(scope, &aad(t, key), &sealed)?;
                Ok(Some(decode(t, &plain)?))
            }
        }
    }
    /// Reads one record that must exist.
    pub fn need<V: DeserializeOwned>(
        &self,
        t: Raw,
        scope: Scope,
        key: &[u8],
        what: &str,
    ) -> Result<V> {
        self.get(t, scope, key)?
            .ok_or_else(|| Error::NotFound(what.to_string()))
    }
    /// All records under a key prefix, unsealed.
    pub fn scan<V: DeserializeOwned>(
        &self,
        t: Raw,
        scope: Scope,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>> {
        let raw = self.tx.scan_raw(t, prefix, limit)?;
        let mut out = Vec::with_capacity(raw.len());
        for (k, sealed) in raw {
            let plain = self.sealer.open(scope, &aad(t, &k), &sealed)?;
            out.push((k.clone(), decode(t, &plain)?));
        }
        Ok(out)
    }
    /// An index entry: a plaintext id stored under a (hashed) key.
    pub fn get_id(&self, t: Raw, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.tx.get_raw(t, key)?.and_then(|v| tables::id_from(&v)))
    }
    /// Keys of all index entries under a prefix.
    pub fn scan_keys(&self, t: Raw, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .tx
            .scan_raw(t, prefix, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    /// The keyed hash of a canonical name for index keys.
    pub fn ikey(&self, scope: Scope, data: &str) -> [u8; 32] {
        self.sealer.index_key(scope, data.as_bytes())
    }
}

/// Write access inside a job.
pub struct WriteCtx<'a> {
    /// The write transaction.
    pub txn: &'a redb::WriteTransaction,
    /// The record sealer.
    pub sealer: &'a dyn Sealer,
    /// The id allocator and the audit chain head, owned by the writer thread.
    pub state: &'a mut WriterState,
    /// Events to publish once the batch is committed.
    pub events: &'a mut Vec<crate::events::PortalEvent>,
    /// Set by jobs that change who may access what: bumps the access epoch after commit.
    pub access_changed: &'a mut bool,
    /// Set by every write outside the audit trail: bumps [`Store::data_epoch`] after commit.
    data_changed: &'a std::cell::Cell<bool>,
}

/// State the writer thread keeps between transactions.
#[derive(Clone, Debug, Default)]
pub struct WriterState {
    /// Next id to hand out.
    pub next_id: u64,
    /// Next audit sequence number.
    pub audit_next_seq: u64,
    /// MAC of the last audit entry.
    pub audit_last_mac: [u8; 32],
}

impl<'a> WriteCtx<'a> {
    /// Typed read access within this transaction.
    pub fn db(&self) -> Db<'_, redb::WriteTransaction> {
        Db {
            tx: self.txn,
            sealer: self.sealer,
        }
    }
    /// A fresh id (ids are shared by all entity kinds and never reused).
    pub fn new_id(&mut self) -> u64 {
        let id = self.state.next_id;
        self.state.next_id += 1;
        id
    }
    /// Seals and stores one record.
    pub fn put<V: Serialize>(&self, t: Raw, scope: Scope, key: &[u8], v: &V) -> Result<()> {
        self.data_changed.set(true);
        let plain = encode(v)?;
        let sealed = self.sealer.seal(scope, &aad(t, key), &plain)?;
        let mut table = self.txn.open_table(t)?;
        table.insert(key, sealed.as_slice())?;
        Ok(())
    }
    /// Stores a plaintext value (ids, counters) under a key.
    pub fn put_raw(&self, t: Raw, key: &[u8], v: &[u8]) -> Result<()> {
        self.data_changed.set(true);
        let mut table = self.txn.open_table(t)?;
        table.insert(key, v)?;
        Ok(())
    }
    /// Stores an index entry pointing at an id.
    pub fn put_id(&self, t: Raw, key: &[u8], id: u64) -> Result<()> {
        self.put_raw(t, key, &id.to_be_bytes())
    }
    /// Removes one entry; returns whether it existed.
    pub fn del(&self, t: Raw, key: &[u8]) -> Result<bool> {
        self.data_changed.set(true);
        let mut table = self.txn.open_table(t)?;
        Ok(table.remove(key)?.is_some())
    }
    /// Removes every entry under a prefix; returns how many.
    pub fn del_prefix(&self, t: Raw, prefix: &[u8]) -> Result<u64> {
        self.data_changed.set(true);
        let keys = self.txn.scan_raw(t, prefix, usize::MAX)?;
        let mut table = self.txn.open_table(t)?;
        for (k, _) in &keys {
            table.remove(k.as_slice())?;
        }
        Ok(keys.len() as u64)
    }
    /// Queues an event for after the commit.
    pub fn emit(&mut self, e: crate::events::PortalEvent) {
        self.events.push(e);
    }
    /// Marks that this job changed access rights.
    pub fn access_changed(&mut self) {
        *self.access_changed = true;
    }
    /// Runs `f` (which only appends to the audit trail) without counting its writes as a change
    /// of data ([`Store::data_epoch`]).
    pub(crate) fn audit_only<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.data_changed.get();
        let r = f(self);
        self.data_changed.set(before);
        r
    }
}

type JobResult = Result<Box<dyn Any + Send>>;
type JobFn = Box<dyn FnMut(&mut WriteCtx<'_>) -> JobResult + Send>;

struct Job {
    run: JobFn,
    /// `None` for a deferred job: nobody waits for it.
    reply: Option<tokio::sync::oneshot::Sender<JobResult>>,
    /// Make everything committed before durable first (see [`Store::write_after_sync`]).
    flush_first: bool,
}

enum Msg {
    Job(Job),
    /// Reply once everything committed so far is durable.
    Sync(SyncReply),
    /// The deferred queue was empty and has a job now: commit it within [`DEFER_WINDOW`].
    Deferred,
}

/// Jobs queued by [`Store::write_deferred`], taken by the writer at the head of its next batch.
#[derive(Clone, Default)]
struct DeferredQueue(Arc<Mutex<Vec<JobFn>>>);

impl DeferredQueue {
    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<JobFn>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` and says whether the queue was empty; hands `job` back when
    /// [`MAX_DEFERRED`] are already waiting.
    fn push(&self, job: JobFn) -> std::result::Result<bool, JobFn> {
        let mut q = self.jobs();
        if q.len() >= MAX_DEFERRED {
            return Err(job);
        }
        q.push(job);
        Ok(q.len() == 1)
    }

    fn is_waiting(&self) -> bool {
        !self.jobs().is_empty()
    }

    fn take(&self) -> Vec<JobFn> {
        std::mem::take(&mut *self.jobs())
    }
}

type SyncReply = tokio::sync::oneshot::Sender<Result<()>>;

/// Called after each committed batch with its events and whether access changed.
pub type CommitHook = Arc<dyn Fn(Vec<crate::events::PortalEvent>, bool) + Send + Sync>;

/// The database handle: cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DbCell,
    sealer: Arc<dyn Sealer>,
    // Declared before `_writer`: the last handle's sender goes first, so the writer sees the
    // channel close, flushes and ends, and `_writer`'s drop then waits for that.
    jobs: std_mpsc::SyncSender<Msg>,
    deferred: DeferredQueue,
    stats: Arc<WriterStats>,
    durability: Durability,
    _writer: Arc<WriterThread>,
}

/// Joins the writer thread when the last [`Store`] handle goes, so that its final flush (batched
/// durability) is done before the caller goes on (and, say, the process exits).
struct WriterThread(Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(h) = h
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}

/// How a [`Store`] commits.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// When acknowledged writes reach the disk.
    pub durability: Durability,
    /// Files to sync before each durable commit (shared with the blob store in batched mode).
    pub syncs: SyncQueue,
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Write transactions committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Jobs committed.
    pub jobs: std::sync::atomic::AtomicU64,
    /// Durable (fsynced) commits made to flush non-durable ones (batched mode).
    pub flushes: std::sync::atomic::AtomicU64,
    /// Times the database was reopened after a storage failure.
    pub reopens: std::sync::atomic::AtomicU64,
    /// Commits that wrote anything besides audit entries, plus reopens: [`Store::data_epoch`].
    pub changes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Starts the store over an open database: checks the schema version, creates missing tables,
    /// and starts the writer thread. `on_commit` is called on the writer thread after every commit.
    pub fn start(
        db: impl Into<DbCell>,
        sealer: Arc<dyn Sealer>,
        on_commit: CommitHook,
    ) -> Result<Store> {
        Self::start_with(db, sealer, on_commit, StoreOptions::default())
    }

    /// [`Store::start`] with explicit options (durability).
    pub fn start_with(
        db: impl Into<DbCell>,
        sealer: Arc<dyn Sealer>,
        on_commit: CommitHook,
        opts: StoreOptions,
    ) -> Result<Store> {
        let db: DbCell = db.into();
        if let Durability::Batched { flush_interval } = opts.durability
            && flush_interval.is_zero()
        {
            return Err(Error::Invalid(
                "the flush interval of batched durability must be above zero".into(),
            ));
        }
        let state = init_schema(&*db.get()?, sealer.as_ref())?;
        if opts.durability.is_batched() {
            *db.inner
                .syncs
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(opts.syncs.clone());
        }
        let (tx, rx) = std_mpsc::sync_channel::<Msg>(4096);
        let stats = Arc::new(WriterStats::default());
        let durability = opts.durability;
        let deferred = DeferredQueue::default();
        let writer = Writer {
            deferred: deferred.clone(),
            deferred_due: None,
            db: db.clone(),
            sealer: sealer.clone(),
            state,
            on_commit,
            stats: stats.clone(),
            opts,
            dirty_since: None,
            broken: None,
        };
        let handle = std::thread::Builder::new()
            .name("sdx-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(Error::Io)?;
        Ok(Store {
            db,
            sealer,
            jobs: tx,
            deferred,
            stats,
            durability,
            _writer: Arc::new(WriterThread(Mutex::new(Some(handle)))),
        })
    }

    /// The durability this store commits with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Returns once everything committed before the call is durable (fsynced, with the blob files
    /// it names). Immediate at once with [`Durability::Immediate`], where every commit already is.
    /// Call it before deleting a blob whose reference was just removed (batched mode): a crash
    /// must not bring back a reference to a deleted file.
    pub async fn sync(&self) -> Result<()> {
        if !self.durability.is_batched() {
            return Ok(());
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Sync(reply)).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Durable commits made to flush batched ones.
    pub fn flushes(&self) -> u64 {
        self.stats
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn send(&self, msg: Msg) -> Result<()> {
        // The channel is bounded. Usually it has room: hand the message over right here. Only
        // when it is full would sending block, so then wait for room off the runtime. (A
        // blocking-pool hop for every job cost a thread wake-up per operation, about as much as
        // the fsync itself on a quiet disk: `cargo bench --bench audit`.)
        match self.jobs.try_send(msg) {
            Ok(()) => Ok(()),
            Err(std_mpsc::TrySendError::Full(msg)) => {
                let sender = self.jobs.clone();
                tokio::task::spawn_blocking(move || sender.send(msg))
                    .await?
                    .map_err(|_| Error::ShuttingDown)
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => Err(Error::ShuttingDown),
        }
    }

    /// The database handle (for co-located services such as the lock manager and the keyring):
    /// keep the cell, fetch the database per transaction (it is reopened after a storage failure).
    pub fn database(&self) -> &DbCell {
        &self.db
    }

    /// How many transactions and jobs the writer has committed (group commit shows as fewer
    /// transactions than jobs).
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats.commits.load(Relaxed),
            self.stats.jobs.load(Relaxed),
        )
    }

    /// A counter that moves (before the jobs of the commit are answered) after every commit
    /// that wrote anything besides audit entries, and when the database is reopened. Two equal
    /// readings taken around a read transaction's result mean nothing it read has changed since:
    /// what a read found may be reused while the counter still shows the value read before it.
    pub fn data_epoch(&self) -> u64 {
        self.stats.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The record sealer.
    pub fn sealer(&self) -> &Arc<dyn Sealer> {
        &self.sealer
    }

    /// Runs `f` in a fresh read transaction on the blocking pool.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_, redb::ReadTransaction>) -> Result<R> + Send + 'static,
    {
        let db = self.db.clone();
        let sealer = self.sealer.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            let d = Db {
                tx: &txn,
                sealer: sealer.as_ref(),
            };
            f(&d)
        })
        .await?
    }

    /// Runs `f` in the writer thread's next batch; returns once the batch is committed (and
    /// fsynced with [`Durability::Immediate`]; see [`Durability`] for batched mode).
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        self.write_job(f, false).await
    }

    /// [`Store::write`], but the writer first makes every earlier commit durable, so `f` runs
    /// with the database file holding exactly the last commit (the backup copies it from there).
    pub async fn write_after_sync<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        self.write_job(f, self.durability.is_batched()).await
    }

    /// Hands the writer `f`, a job that writes only an access record (a read's audit entry):
    /// jobs the caller sends after this returns are committed after it. What the returned
    /// [`Committed`] waits for depends on the durability:
    ///
    /// - [`Durability::Immediate`]: `f`'s durable commit, as with [`Store::write`].
    /// - [`Durability::Batched`]: nothing. `f` is queued without waking the writer; it runs at the
    ///   head of the writer's next batch, or on its own at most [`DEFER_WINDOW`] after it was
    ///   queued. Readers see it once that batch is committed ([`Store::settle`] waits for it); a
    ///   crash can lose it as it can lose any batched commit, and a job that fails then is logged
    ///   and dropped.
    pub async fn write_deferred<F>(&self, mut f: F) -> Result<Committed<()>>
    where
        F: FnMut(&mut WriteCtx<'_>) -> Result<()> + Send + 'static,
    {
        if !self.durability.is_batched() {
            return self.send_job(f, false).await;
        }
        let job: JobFn = Box::new(move |ctx| f(ctx).map(|()| Box::new(()) as Box<dyn Any + Send>));
        match self.deferred.push(job) {
            Ok(true) => self.send(Msg::Deferred).await?,
            Ok(false) => {}
            Err(mut job) => {
                // The writer is behind: wait for a commit like any other job (the queue goes first).
                self.write(move |ctx| job(ctx).map(drop)).await?;
            }
        }
        Ok(Committed::nothing())
    }

    /// Returns once every job queued by [`Store::write_deferred`] before the call is committed
    /// (visible to readers). At once when none is waiting.
    pub async fn settle(&self) -> Result<()> {
        if self.deferred.is_waiting() {
            self.write(|_| Ok(())).await?;
        }
        Ok(())
    }

    async fn write_job<R, F>(&self, f: F, flush_first: bool) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        self.send_job(f, flush_first).await?.wait().await
    }

    /// Hands `f` to the writer; jobs sent after this returns are committed after it.
    async fn send_job<R, F>(&self, mut f: F, flush_first: bool) -> Result<Committed<R>>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            run: Box::new(move |ctx| f(ctx).map(|r| Box::new(r) as Box<dyn Any + Send>)),
            reply: Some(reply),
            flush_first,
        };
        self.send(Msg::Job(job)).await?;
        Ok(Committed {
            rx: Some(rx),
            _r: std::marker::PhantomData,
        })
    }
}

/// A job handed to the writer ([`Store::write_deferred`]): its place among the writer's jobs is
/// fixed; [`Committed::wait`] returns its result once it is committed.
#[must_use = "the job's failure is only seen through wait()"]
pub struct Committed<R> {
    /// `None`: nothing to wait for (a deferred job in batched mode).
    rx: Option<tokio::sync::oneshot::Receiver<JobResult>>,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl Committed<()> {
    /// Nothing to wait for.
    pub(crate) fn nothing() -> Self {
        Committed {
            rx: None,
            _r: std::marker::PhantomData,
        }
    }
}

impl<R: Send + 'static> Committed<R> {
    /// The job's result once it is committed (see [`Store::write_deferred`] for deferred jobs).
    pub async fn wait(self) -> Result<R> {
        let Some(rx) = self.rx else {
            let unit: Box<dyn Any> = Box::new(());
            return unit
                .downcast::<R>()
                .map(|b| *b)
                .map_err(|_| Error::Storage("a deferred job has no result".into()));
        };
        let any = rx.await.map_err(|_| Error::ShuttingDown)??;
        any.downcast::<R>()
            .map(|b| *b)
            .map_err(|_| Error::Storage("writer returned an unexpected type".into()))
    }
}

impl<R> std::fmt::Debug for Committed<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("waiting", &self.rx.is_some())
            .finish()
    }
}

fn init_schema(db: &redb::Database, sealer: &dyn Sealer) -> Result<WriterState> {
    let txn = db.begin_write()?;
    for t in tables::ALL {
        txn.open_table(*t)?;
    }
    let schema = txn.get_raw(tables::META, tables::META_SCHEMA)?;
    match schema.as_deref().and_then(tables::u32_from) {
        None => {
            if schema.is_some() {
                return Err(Error::Integrity(
                    "the schema version record is malformed".into(),
                ));
            }
            let mut t = txn.open_table(tables::META)?;
            t.insert(tables::META_SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(Error::SchemaTooNew {
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        Some(_) => {}
    }
    let next_id = txn
        .get_raw(tables::META, tables::META_NEXT_ID)?
        .and_then(|v| tables::id_from(&v))
        .unwrap_or(1);
    let (audit_next_seq, audit_last_mac) = crate::audit::chain_head(&Db { tx: &txn, sealer })?;
    txn.commit()?;
    Ok(WriterState {
        next_id,
        audit_next_seq,
        audit_last_mac,
    })
}

struct Writer {
    db: DbCell,
    sealer: Arc<dyn Sealer>,
    state: WriterState,
    on_commit: CommitHook,
    stats: Arc<WriterStats>,
    opts: StoreOptions,
    /// When the oldest commit not yet durable was made (batched mode).
    dirty_since: Option<Instant>,
    /// Set after a storage failure left the database unusable, until it is reopened.
    broken: Option<Broken>,
    /// Jobs of [`Store::write_deferred`].
    deferred: DeferredQueue,
    /// When the deferred jobs must be committed at the latest.
    deferred_due: Option<Instant>,
}

/// The database failed (e.g. the disk is full) and must be reopened.
struct Broken {
    /// What failed (answered to jobs meanwhile).
    why: String,
    /// The old handle, while other holders still have clones of it.
    old: Option<Arc<redb::Database>>,
    next_try: Instant,
    backoff: Duration,
}

/// First wait before retrying a reopen; doubles up to [`REOPEN_MAX_BACKOFF`].
const REOPEN_FIRST_BACKOFF: Duration = Duration::from_millis(50);
const REOPEN_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one reopen attempt waits for other holders to drop the old handle.
const REOPEN_WAIT_FOR_HOLDERS: Duration = Duration::from_secs(2);

/// A storage error as jobs see it: a full disk is named as such (the OS error stays in the text:
/// the front ends map "(os error 28)" to "insufficient storage").
fn storage_failure(e: &Error) -> Error {
    let text = match e {
        Error::Storage(m) => m.clone(),
        other => other.to_string(),
    };
    if text.contains("(os error 28)") && !text.contains("the disk is full") {
        Error::Storage(format!("the disk is full: {text}"))
    } else {
        Error::Storage(text)
    }
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Msg>) {
        loop {
            if self
                .broken
                .as_ref()
                .is_some_and(|b| Instant::now() >= b.next_try)
            {
                self.try_reopen();
            }
            let flush_at = match (self.opts.durability, self.dirty_since) {
                (Durability::Batched { flush_interval }, Some(since)) if self.broken.is_none() => {
                    Some(since + flush_interval)
                }
                _ => None,
            };
            let wake_at = [
                flush_at,
                self.broken.as_ref().map(|b| b.next_try),
                self.deferred_due,
            ]
            .into_iter()
            .flatten()
            .min();
            let first = match wake_at {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(m) => m,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {
                            let now = Instant::now();
                            if self.deferred_due.is_some_and(|d| d <= now) {
                                self.commit_jobs(Vec::new());
                            }
                            if self.broken.is_none() && flush_at.is_some_and(|f| f <= now) {
                                let _ = self.flush();
                            }
                            continue;
                        }
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let mut jobs = Vec::new();
            let mut syncs = Vec::new();
            let mut deferred = false;
            let mut take = |m: Msg, jobs: &mut Vec<Job>, syncs: &mut Vec<SyncReply>| match m {
                Msg::Job(j) => jobs.push(j),
                Msg::Sync(r) => syncs.push(r),
                Msg::Deferred => deferred = true,
            };
            take(first, &mut jobs, &mut syncs);
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut jobs, &mut syncs),
                    Err(_) => break,
                }
            }
            let mut group = Vec::with_capacity(jobs.len());
            for j in jobs {
                if j.flush_first {
                    if !group.is_empty() {
                        self.commit_jobs(std::mem::take(&mut group));
                    }
                    if let Err(e) = self.flush() {
                        if let Some(reply) = j.reply {
                            let _ = reply.send(Err(e));
                        }
                        continue;
                    }
                }
                group.push(j);
            }
            if !group.is_empty() {
                self.commit_jobs(group);
            }
            if deferred && self.deferred_due.is_none() && self.deferred.is_waiting() {
                self.deferred_due = Some(Instant::now() + DEFER_WINDOW);
            }
            if self.deferred_due.is_some_and(|d| d <= Instant::now()) {
                // Under steady traffic of other messages the timeout above never fires.
                self.commit_jobs(Vec::new());
            }
            if let Some(since) = self.dirty_since
                && let Durability::Batched { flush_interval } = self.opts.durability
                && since.elapsed() >= flush_interval
            {
                // Under steady traffic the timeout above never fires.
                let _ = self.flush();
            }
            if !syncs.is_empty() {
                let r = self.flush().map_err(|e| e.to_string());
                for reply in syncs {
                    let _ = reply.send(r.clone().map_err(Error::Storage));
                }
            }
        }
        // Every Store handle is gone: make what was committed durable before the file closes.
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "the final flush of the database failed");
        }
        tracing::debug!("store writer stopped");
    }

    /// Makes every commit so far durable: syncs the queued blob files, then commits durably.
    /// Deferred jobs are committed first.
    fn flush(&mut self) -> Result<()> {
        if self.deferred.is_waiting() {
            self.commit_jobs(Vec::new());
        }
        if let Some(b) = &self.broken {
            return Err(Error::Storage(b.why.clone()));
        }
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let span = tracing::debug_span!("flush");
        let _g = span.enter();
        let r = (|| {
            self.opts.syncs.sync_all().map_err(|e| {
                Error::Storage(format!("syncing uploaded files before a flush failed: {e}"))
            })?;
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| Error::Storage(format!("setting durability: {e}")))?;
            txn.commit()?;
            Ok(())
        })();
        match &r {
            Ok(()) => {
                self.dirty_since = None;
                self.stats
                    .flushes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                // Retry one interval later rather than in a tight loop.
                self.dirty_since = Some(Instant::now());
                tracing::error!(error = %e, "flushing batched commits to disk failed; retrying");
                self.check_usable(e);
            }
        }
        r.map_err(|e| storage_failure(&e))
    }

    /// After a failed commit: if the database now refuses transactions (redb latches an I/O
    /// failure until the file is reopened), close it and schedule the reopen.
    fn check_usable(&mut self, cause: &Error) {
        if self.broken.is_some() || !matches!(cause, Error::Storage(_) | Error::Io(_)) {
            return;
        }
        let usable = match self.db.get() {
            Ok(db) => db.begin_write().is_ok(),
            Err(_) => false,
        };
        if usable {
            return;
        }
        let why = storage_failure(cause).to_string();
        tracing::error!(error = %why, "the database refuses transactions after a storage failure; reopening it");
        let old = self.db.close(why.clone());
        self.broken = Some(Broken {
            why,
            old,
            next_try: Instant::now(),
            backoff: REOPEN_FIRST_BACKOFF,
        });
    }

    /// One attempt to reopen the database: waits (bounded) for the other holders of the old
    /// handle, opens the file, re-reads the writer state. On failure schedules the next attempt.
    fn try_reopen(&mut self) {
        let Some(mut b) = self.broken.take() else {
            return;
        };
        let r = (|| -> Result<()> {
            let Some((path, cache)) = self.db.inner.file.clone() else {
                return Err(Error::Storage(
                    "an in-memory database can't be reopened".into(),
                ));
            };
            if let Some(old) = b.old.take() {
                let deadline = Instant::now() + REOPEN_WAIT_FOR_HOLDERS;
                let mut old = old;
                loop {
                    match Arc::try_unwrap(old) {
                        Ok(db) => {
                            // Closing a database with a latched I/O failure reports it; the
                            // next open recovers the file.
                            drop(db);
                            break;
                        }
                        Err(still) if Instant::now() < deadline => {
                            old = still;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(still) => {
                            b.old = Some(still);
                            return Err(Error::Storage(
                                "the old database handle is still in use".into(),
                            ));
                        }
                    }
                }
            }
            let deadline = Instant::now() + REOPEN_WAIT_FOR_HOLDERS;
            let db = loop {
                match open_database(&path, cache) {
                    Ok(db) => break db,
                    // A read transaction that outlived its handle can hold the file a moment.
                    Err(Error::Conflict(_)) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            };
            let state = init_schema(&db, self.sealer.as_ref())?;
            self.state = state;
            // What was read before may be gone with the commits that were not durable.
            self.stats
                .changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.db.put(Arc::new(db));
            Ok(())
        })();
        match r {
            Ok(()) => {
                // Commits that were not durable are gone with the old handle.
                self.dirty_since = None;
                self.stats
                    .reopens
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(after = %b.why, "the database was reopened after a storage failure");
            }
            Err(e) => {
                tracing::warn!(error = %e, "reopening the database failed; retrying");
                b.next_try = Instant::now() + b.backoff;
                b.backoff = (b.backoff * 2).min(REOPEN_MAX_BACKOFF);
                self.broken = Some(b);
            }
        }
    }

    /// Commits the deferred jobs (first, in the order they were queued) and `batch` in one
    /// transaction, then answers `batch`'s jobs.
    fn commit_jobs(&mut self, batch: Vec<Job>) {
        let deferred = self.deferred.take();
        self.deferred_due = None;
        let jobs: Vec<Job> = deferred
            .into_iter()
            .map(|run| Job {
                run,
                reply: None,
                flush_first: false,
            })
            .chain(batch)
            .collect();
        if jobs.is_empty() {
            return;
        }
        if let Some(b) = &self.broken {
            let why = b.why.clone();
            for j in jobs {
                answer(j.reply, Err(Error::Storage(why.clone())));
            }
            return;
        }
        let durable = !self.opts.durability.is_batched();
        let mut runs: Vec<JobFn> = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for j in jobs {
            runs.push(j.run);
            replies.push(j.reply);
        }
        let n = runs.len();
        let span = tracing::debug_span!("commit", jobs = n);
        let _g = span.enter();
        let sealer = self.sealer.clone();
        let db = match self.db.get() {
            Ok(db) => db,
            Err(e) => {
                let e = Error::from(e);
                for reply in replies {
                    answer(reply, Err(storage_failure(&e)));
                }
                return;
            }
        };
        match run_batch(&db, sealer.as_ref(), &mut self.state, &mut runs, durable) {
            Ok((results, events, changed, data)) => {
                self.committed(n, data);
                (self.on_commit)(events, changed);
                for (reply, r) in replies.into_iter().zip(results) {
                    answer(reply, Ok(r));
                }
            }
            Err(e) => {
                drop(db);
                self.check_usable(&e);
                if n == 1 || self.broken.is_some() {
                    // The database itself failed: every job of the batch gets that error.
                    let e = if self.broken.is_some() {
                        storage_failure(&e)
                    } else {
                        e
                    };
                    let text = e.to_string();
                    let mut first = Some(e);
                    for reply in replies {
                        let err = first.take().unwrap_or_else(|| Error::Storage(text.clone()));
                        answer(reply, Err(err));
                    }
                    return;
                }
                // One job failed: re-run each alone so the others still commit.
                for (mut run, reply) in runs.into_iter().zip(replies) {
                    if let Some(b) = &self.broken {
                        answer(reply, Err(Error::Storage(b.why.clone())));
                        continue;
                    }
                    let r = match self.db.get() {
                        Ok(db) => run_batch(
                            &db,
                            sealer.as_ref(),
                            &mut self.state,
                            std::slice::from_mut(&mut run),
                            durable,
                        ),
                        Err(e) => Err(Error::from(e)),
                    };
                    match r {
                        Ok((mut results, events, changed, data)) => {
                            self.committed(1, data);
                            (self.on_commit)(events, changed);
                            if let Some(v) = results.pop() {
                                answer(reply, Ok(v));
                            }
                        }
                        Err(e) => {
                            self.check_usable(&e);
                            let e = if self.broken.is_some() {
                                storage_failure(&e)
                            } else {
                                e
                            };
                            answer(reply, Err(e));
                        }
                    }
                }
            }
        }
    }

    fn committed(&mut self, jobs: usize, data_changed: bool) {
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        if data_changed {
            self.stats.changes.fetch_add(1, SeqCst);
        }
        self.stats.commits.fetch_add(1, Relaxed);
        self.stats.jobs.fetch_add(jobs as u64, Relaxed);
        if self.opts.durability.is_batched() && self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }
}

/// Answers a job; a deferred one (no reply) that failed is logged.
fn answer(reply: Option<tokio::sync::oneshot::Sender<JobResult>>, r: JobResult) {
    match reply {
        Some(reply) => {
            let _ = reply.send(r);
        }
        None => {
            if let Err(e) = r {
                tracing::error!(error = %e, "a deferred audit entry could not be written");
            }
        }
    }
}

/// The jobs' results, the events, whether access changed, whether data changed.
type BatchOk = (
    Vec<Box<dyn Any + Send>>,
    Vec<crate::events::PortalEvent>,
    bool,
    bool,
);

fn run_batch(
    db: &redb::Database,
    sealer: &dyn Sealer,
    state: &mut WriterState,
    runs: &mut [JobFn],
    durable: bool,
) -> Result<BatchOk> {
    let before = state.clone();
    let result = (|| {
        let mut txn = db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| Error::Storage(format!("setting durability: {e}")))?;
        }
        let mut events = Vec::new();
        let mut changed = false;
        let data_changed = std::cell::Cell::new(false);
        let mut results = Vec::with_capacity(runs.len());
        for run in runs.iter_mut() {
            let mut ctx = WriteCtx {
                txn: &txn,
                sealer,
                state: &mut *state,
                events: &mut events,
                access_changed: &mut changed,
                data_changed: &data_changed,
            };
            results.push(run(&mut ctx)?);
        }
        // Only when ids were handed out: rewriting it anyway costs a B-tree path of pages in
        // every commit (most commits are audit entries of reads, which allocate no id).
        if state.next_id != before.next_id {
            let mut t = txn.open_table(tables::META)?;
            t.insert(tables::META_NEXT_ID, state.next_id.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok((results, events, changed, data_changed.get()))
    })();
    if result.is_err() {
        *state = before;
    }
    result
}

/// Opens (or creates) a redb database file with sdx's settings.
pub fn open_database(path: &std::path::Path, cache_bytes: usize) -> Result<redb::Database> {
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Conflict(format!(
                "the database {} is already open in another process (is sdx already running?)",
                path.display()
            )),
            other => Error::Storage(format!("opening {}: {other}", path.display())),
        })?;
    Ok(db)
}

/// An in-memory database (tests, fuzzing, examples).
pub fn memory_database() -> Result<redb::Database> {
    Ok(redb::Builder::new()
        .set_cache_size(16 << 20)
        .create_with_backend(redb::backends::InMemoryBackend::new())?)
}

/// A raw table definition (all sdx tables map bytes to bytes).
pub type RawTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PlainSealer;

    fn start(path: &std::path::Path) -> Store {
        // The previous store's writer thread may still hold the file for a moment after drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match open_database(path, 1 << 20) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        Store::start(Arc::new(db), Arc::new(PlainSealer), Arc::new(|_, _| {})).unwrap()
    }

    fn stored_next_id(s: &Store) -> Option<u64> {
        let txn = s.database().begin_read().unwrap();
        txn.get_raw(tables::META, tables::META_NEXT_ID)
            .unwrap()
            .and_then(|v| tables::id_from(&v))
    }

    /// The data epoch moves with every commit that writes outside the audit trail (before the
    /// job is answered) and stays put for audit entries alone and for failed jobs.
    #[tokio::test]
    async fn the_data_epoch_moves_with_data_not_with_audit_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&dir.path().join("e.redb"));
        let e0 = s.data_epoch();
        s.write(|ctx| {
            crate::audit::append(
                ctx,
                crate::audit::NewEntry {
                    actor: crate::model::Actor::system(),
                    matter: None,
                    document: None,
                    object: "x".into(),
                    action: crate::audit::AuditAction::Stat,
                    outcome: crate::audit::Outcome::Allowed,
                },
            )
            .map(|_| ())
        })
        .await
        .unwrap();
        assert_eq!(s.data_epoch(), e0, "an audit entry moved the data epoch");
        s.write(|ctx| ctx.put_raw(tables::PROPS, b"k", b"v"))
            .await
            .unwrap();
        let e1 = s.data_epoch();
        assert!(e1 > e0, "a write did not move it");
        let r: Result<()> = s
            .write(|ctx| {
                ctx.put_raw(tables::PROPS, b"k2", b"v")?;
                Err(Error::Conflict("no".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(s.data_epoch(), e1, "a failed job moved it");
        s.write(|ctx| ctx.del(tables::PROPS, b"k").map(|_| ()))
            .await
            .unwrap();
        assert!(s.data_epoch() > e1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_beyond_a_full_queue_wait_for_room_and_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&dir.path().join("q.redb"));
        // Hold the writer so the bounded queue (4096) fills up behind it.
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let s = s.clone();
            tokio::spawn(async move {
                s.write(move |_ctx| {
                    let _ = held_rx.recv_timeout(std::time::Duration::from_secs(30));
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let n = 5000u32;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let s = s.clone();
            tasks.spawn(async move {
                s.write(move |ctx| ctx.put_raw(tables::META, format!("q{i}").as_bytes(), b"x"))
                    .await
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        held_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut done = 0;
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
            done += 1;
        }
        assert_eq!(done, n);
        let txn = s.database().begin_read().unwrap();
        for i in [0, n / 2, n - 1] {
            assert!(
                txn.get_raw(tables::META, format!("q{i}").as_bytes())
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[tokio::test]
    async fn ids_persist_across_commits_that_allocate_none_and_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let s = start(&path);
        let ids: Vec<u64> = s
            .write(|ctx| Ok((ctx.new_id(), ctx.new_id())))
            .await
            .map(|(a, b)| vec![a, b])
            .unwrap();
        assert_eq!(stored_next_id(&s), Some(ids[1] + 1));
        // Commits without new ids leave the stored counter alone (and correct).
        for i in 0..3u8 {
            s.write(move |ctx| ctx.put_raw(tables::META, b"test-key", &[i]))
                .await
                .unwrap();
        }
        assert_eq!(stored_next_id(&s), Some(ids[1] + 1));
        // A failed job allocating an id rolls the counter back.
        let r: Result<u64> = s
            .write(|ctx| {
                ctx.new_id();
                Err(Error::Invalid("no".into()))
            })
            .await;
        assert!(r.is_err());
        drop(s);
        let s = start(&path);
        let next = s.write(|ctx| Ok(ctx.new_id())).await.unwrap();
        assert_eq!(next, ids[1] + 1, "an id was reused or skipped after reopen");
        assert_eq!(stored_next_id(&s), Some(next + 1));
    }

    fn start_batched(path: &std::path::Path, interval_ms: u64, syncs: SyncQueue) -> Store {
        let db = open_database(path, 1 << 20).unwrap();
        Store::start_with(
            Arc::new(db),
            Arc::new(PlainSealer),
            Arc::new(|_, _| {}),
            StoreOptions {
                durability: Durability::Batched {
                    flush_interval: std::time::Duration::from_millis(interval_ms),
                },
                syncs,
            },
        )
        .unwrap()
    }

    /// What a crash would leave: the database file as it is on disk now, opened as a copy.
    fn crash_image_has(path: &std::path::Path, key: &[u8]) -> bool {
        let copy = path.with_extension("crash");
        let _ = std::fs::remove_file(&copy);
        std::fs::copy(path, &copy).unwrap();
        let db = open_database(&copy, 1 << 20).unwrap();
        let txn = db.begin_read().unwrap();
        txn.get_raw(tables::META, key).unwrap().is_some()
    }

    #[tokio::test]
    async fn batched_commits_are_visible_at_once_and_durable_after_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let s = start_batched(&path, 60_000, SyncQueue::default());
        s.write(|ctx| ctx.put_raw(tables::META, b"k1", b"v"))
            .await
            .unwrap();
        // Readers see it at once.
        let seen = s
            .read(|db| Ok(db.tx.get_raw(tables::META, b"k1")?.is_some()))
            .await
            .unwrap();
        assert!(seen);
        // Not on disk yet: a crash now would lose it (the flush is a minute away).
        assert!(!crash_image_has(&path, b"k1"));
        assert_eq!(s.flushes(), 0);
        s.sync().await.unwrap();
        assert_eq!(s.flushes(), 1);
        assert!(crash_image_has(&path, b"k1"));
        // Nothing new: sync does not commit again.
        s.sync().await.unwrap();
        assert_eq!(s.flushes(), 1);
    }

    /// A write job run in a task of its own (it may wait behind a held writer).
    fn spawn_write<R, F>(s: &Store, f: F) -> tokio::task::JoinHandle<Result<R>>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        let s = s.clone();
        tokio::spawn(async move { s.write(f).await })
    }

    /// Queues a deferred put of `key` (returns at once in batched mode).
    async fn defer_put(s: &Store, key: &'static [u8]) {
        s.write_deferred(move |ctx| ctx.put_raw(tables::META, key, b"v"))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }

    async fn has(s: &Store, key: &'static [u8]) -> bool {
        s.read(move |db| Ok(db.tx.get_raw(tables::META, key)?.is_some()))
            .await
            .unwrap()
    }

    /// Holds the writer inside a job until the returned sender is dropped.
    async fn hold_writer(s: &Store) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let mut entered_tx = Some(entered_tx);
        let s2 = s.clone();
        tokio::spawn(async move {
            s2.write(move |_| {
                if let Some(t) = entered_tx.take() {
                    let _ = t.send(());
                }
                let _ = held.recv_timeout(std::time::Duration::from_secs(30));
                Ok(())
            })
            .await
        });
        entered.await.unwrap();
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_job_returns_at_once_and_commits_before_the_callers_next_job() {
        let dir = tempfile::tempdir().unwrap();
        let s = start_batched(&dir.path().join("d.redb"), 60_000, SyncQueue::default());
        let release = hold_writer(&s).await;
        // The writer is busy: a deferred job still returns at once…
        tokio::time::timeout(std::time::Duration::from_secs(5), defer_put(&s, b"d1"))
            .await
            .expect("write_deferred waited for the writer");
        // …and the caller's next job, queued behind the held one, finds it already written.
        let next = spawn_write(&s, |ctx| {
            Ok(ctx.db().tx.get_raw(tables::META, b"d1")?.is_some())
        });
        assert!(!has(&s, b"d1").await, "visible before any commit");
        drop(release);
        assert!(
            next.await.unwrap().unwrap(),
            "the deferred job ran after a later one"
        );
        assert!(has(&s, b"d1").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_jobs_commit_on_their_own_within_the_window_and_settle_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = start_batched(&dir.path().join("d.redb"), 60_000, SyncQueue::default());
        let commits = |s: &Store| s.stats().0;
        let before = commits(&s);
        for k in [b"a1".as_slice(), b"a2", b"a3"] {
            defer_put(&s, k).await;
        }
        // No other traffic: one commit for all three, within the window (generously bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !has(&s, b"a3").await {
            assert!(std::time::Instant::now() < deadline, "never committed");
            tokio::time::sleep(DEFER_WINDOW).await;
        }
        assert!(has(&s, b"a1").await && has(&s, b"a2").await);
        assert_eq!(
            commits(&s) - before,
            1,
            "the three deferred jobs shared one commit"
        );
        // settle(): returns once what was queued before it is visible.
        let release = hold_writer(&s).await;
        defer_put(&s, b"b1").await;
        let s2 = s.clone();
        let settled = tokio::spawn(async move { s2.settle().await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!settled.is_finished(), "settle returned before the commit");
        drop(release);
        settled.await.unwrap().unwrap();
        assert!(has(&s, b"b1").await);
        // A sync makes deferred jobs durable too.
        defer_put(&s, b"c1").await;
        s.sync().await.unwrap();
        assert!(crash_image_has(&dir.path().join("d.redb"), b"c1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_deferred_job_is_dropped_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = start_batched(&dir.path().join("d.redb"), 60_000, SyncQueue::default());
        let release = hold_writer(&s).await;
        defer_put(&s, b"ok1").await;
        s.write_deferred(|ctx| {
            ctx.put_raw(tables::META, b"bad", b"v")?;
            Err(Error::Storage("refused by the test".into()))
        })
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
        let next = spawn_write(&s, |ctx| ctx.put_raw(tables::META, b"ok2", b"v"));
        drop(release);
        next.await.unwrap().unwrap();
        assert!(has(&s, b"ok1").await && has(&s, b"ok2").await);
        assert!(
            !has(&s, b"bad").await,
            "a failed job's writes were committed"
        );
    }

    #[tokio::test]
    async fn with_immediate_durability_a_deferred_job_is_durable_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        let s = start(&path);
        defer_put(&s, b"i1").await;
        assert!(crash_image_has(&path, b"i1"));
    }

    #[tokio::test]
    async fn batched_commits_are_flushed_within_the_interval_without_more_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        let s = start_batched(&path, 50, SyncQueue::default());
        s.write(|ctx| ctx.put_raw(tables::META, b"k2", b"v"))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while s.flushes() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(s.flushes(), 1, "no flush within the interval");
        assert!(crash_image_has(&path, b"k2"));
    }

    #[tokio::test]
    async fn a_clean_drop_flushes_batched_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let s = start_batched(&path, 60_000, SyncQueue::default());
        s.write(|ctx| ctx.put_raw(tables::META, b"k3", b"v"))
            .await
            .unwrap();
        drop(s);
        let s = start(&path);
        let txn = s.database().begin_read().unwrap();
        assert!(txn.get_raw(tables::META, b"k3").unwrap().is_some());
    }

    #[tokio::test]
    async fn a_flush_syncs_queued_files_first_and_write_after_sync_sees_a_durable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.redb");
        let q = SyncQueue::default();
        let s = start_batched(&path, 60_000, q.clone());
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"data").unwrap();
        q.push(&blob, dir.path()).unwrap();
        // A queued file that is gone by flush time is not an error.
        q.push(&dir.path().join("gone"), dir.path()).unwrap();
        assert_eq!(q.pending_files(), 2);
        s.write(|ctx| ctx.put_raw(tables::META, b"k4", b"v"))
            .await
            .unwrap();
        let p2 = path.clone();
        let on_disk = s
            .write_after_sync(move |_ctx| Ok(crash_image_has(&p2, b"k4")))
            .await
            .unwrap();
        assert!(on_disk, "write_after_sync ran before the flush");
        assert_eq!(q.pending_files(), 0);
    }

    #[tokio::test]
    async fn immediate_mode_needs_no_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        let s = start(&path);
        s.write(|ctx| ctx.put_raw(tables::META, b"k5", b"v"))
            .await
            .unwrap();
        assert!(crash_image_has(&path, b"k5"));
        s.sync().await.unwrap();
        assert_eq!(s.flushes(), 0);
        let zero = Store::start_with(
            Arc::new(memory_database().unwrap()),
            Arc::new(PlainSealer),
            Arc::new(|_, _| {}),
            StoreOptions {
                durability: Durability::Batched {
                    flush_interval: std::time::Duration::ZERO,
                },
                syncs: SyncQueue::default(),
            },
        );
        assert!(zero.is_err());
    }
}

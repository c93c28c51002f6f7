//! The embedded database: redb tables, sealed records, and the one writer thread.
//!
//! What this module owns:
//! - the table layout ([`tables`]) and the record types ([`records`]);
//! - every byte that reaches redb passes through the [`Sealer`] (values) or
//!   [`Sealer::index_key`] (name-derived keys): nothing here writes client data in the clear;
//! - **all writes go through one writer thread** ([`Store::write`]). It takes every job that is
//!   waiting, runs them in one write transaction and commits once (group commit), then answers each
//!   job. So an operation and its audit entry are durable together, concurrent operations share the
//!   fsync, and no caller reports "done" before its commit returned.
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
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use tables::Raw;

/// Schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Most jobs committed together in one transaction.
const MAX_BATCH: usize = 512;

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
        let plain = encode(v)?;
        let sealed = self.sealer.seal(scope, &aad(t, key), &plain)?;
        let mut table = self.txn.open_table(t)?;
        table.insert(key, sealed.as_slice())?;
        Ok(())
    }
    /// Stores a plaintext value (ids, counters) under a key.
    pub fn put_raw(&self, t: Raw, key: &[u8], v: &[u8]) -> Result<()> {
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
        let mut table = self.txn.open_table(t)?;
        Ok(table.remove(key)?.is_some())
    }
    /// Removes every entry under a prefix; returns how many.
    pub fn del_prefix(&self, t: Raw, prefix: &[u8]) -> Result<u64> {
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
}

type JobResult = Result<Box<dyn Any + Send>>;
type JobFn = Box<dyn FnMut(&mut WriteCtx<'_>) -> JobResult + Send>;

struct Job {
    run: JobFn,
    reply: tokio::sync::oneshot::Sender<JobResult>,
}

/// Called after each committed batch with its events and whether access changed.
pub type CommitHook = Arc<dyn Fn(Vec<crate::events::PortalEvent>, bool) + Send + Sync>;

/// The database handle: cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
    sealer: Arc<dyn Sealer>,
    jobs: std_mpsc::SyncSender<Job>,
    stats: Arc<WriterStats>,
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Write transactions committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Jobs committed.
    pub jobs: std::sync::atomic::AtomicU64,
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
        db: Arc<redb::Database>,
        sealer: Arc<dyn Sealer>,
        on_commit: CommitHook,
    ) -> Result<Store> {
        let state = init_schema(&db, sealer.as_ref())?;
        let (tx, rx) = std_mpsc::sync_channel::<Job>(4096);
        let wdb = db.clone();
        let wsealer = sealer.clone();
        let stats = Arc::new(WriterStats::default());
        let wstats = stats.clone();
        std::thread::Builder::new()
            .name("sdx-store-writer".into())
            .spawn(move || writer_loop(wdb, wsealer, state, rx, on_commit, wstats))
            .map_err(Error::Io)?;
        Ok(Store {
            db,
            sealer,
            jobs: tx,
            stats,
        })
    }

    /// The underlying database (for co-located services such as the lock manager and the blob
    /// store's index tables).
    pub fn database(&self) -> &Arc<redb::Database> {
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

    /// Runs `f` in the writer thread's next batch; returns once the batch is durably committed.
    pub async fn write<R, F>(&self, mut f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            run: Box::new(move |ctx| f(ctx).map(|r| Box::new(r) as Box<dyn Any + Send>)),
            reply,
        };
        // The channel is bounded. Usually it has room: hand the job over right here. Only when it
        // is full would sending block, so then wait for room off the runtime. (A blocking-pool hop
        // for every job cost a thread wake-up per operation, about as much as the fsync itself
        // on a quiet disk: `cargo bench --bench audit`.)
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(job)) => {
                let sender = self.jobs.clone();
                tokio::task::spawn_blocking(move || sender.send(job))
                    .await?
                    .map_err(|_| Error::ShuttingDown)?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(Error::ShuttingDown),
        }
        let any = rx.await.map_err(|_| Error::ShuttingDown)??;
        any.downcast::<R>()
            .map(|b| *b)
            .map_err(|_| Error::Storage("writer returned an unexpected type".into()))
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

fn writer_loop(
    db: Arc<redb::Database>,
    sealer: Arc<dyn Sealer>,
    mut state: WriterState,
    rx: std_mpsc::Receiver<Job>,
    on_commit: CommitHook,
    stats: Arc<WriterStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut runs: Vec<JobFn> = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for j in batch {
            runs.push(j.run);
            replies.push(j.reply);
        }
        let n = runs.len();
        let span = tracing::debug_span!("commit", jobs = n);
        let _g = span.enter();
        match run_batch(&db, sealer.as_ref(), &mut state, &mut runs) {
            Ok((results, events, changed)) => {
                stats.commits.fetch_add(1, Relaxed);
                stats.jobs.fetch_add(n as u64, Relaxed);
                on_commit(events, changed);
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) if n == 1 => {
                if let Some(reply) = replies.pop() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(_) => {
                // One job failed: re-run each alone so the others still commit.
                for (mut run, reply) in runs.into_iter().zip(replies) {
                    let r = run_batch(
                        &db,
                        sealer.as_ref(),
                        &mut state,
                        std::slice::from_mut(&mut run),
                    );
                    match r {
                        Ok((mut results, events, changed)) => {
                            stats.commits.fetch_add(1, Relaxed);
                            stats.jobs.fetch_add(1, Relaxed);
                            on_commit(events, changed);
                            if let Some(v) = results.pop() {
                                let _ = reply.send(Ok(v));
                            }
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}

type BatchOk = (
    Vec<Box<dyn Any + Send>>,
    Vec<crate::events::PortalEvent>,
    bool,
);

fn run_batch(
    db: &redb::Database,
    sealer: &dyn Sealer,
    state: &mut WriterState,
    runs: &mut [JobFn],
) -> Result<BatchOk> {
    let before = state.clone();
    let result = (|| {
        let txn = db.begin_write()?;
        let mut events = Vec::new();
        let mut changed = false;
        let mut results = Vec::with_capacity(runs.len());
        for run in runs.iter_mut() {
            let mut ctx = WriteCtx {
                txn: &txn,
                sealer,
                state: &mut *state,
                events: &mut events,
                access_changed: &mut changed,
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
        Ok((results, events, changed))
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
}

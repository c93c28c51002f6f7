//! The portal's lock manager: WebDAV-style write locks on tree paths, shared by every principal and
//! every front end, persistent in redb.
//!
//! A client's lock taken through WebDAV (Word, Finder…) blocks a staff edit through any channel
//! and vice versa: front ends call [`LockManager::check`] before a write.
//!
//! # Semantics (RFC 4918)
//! - A lock is *exclusive* or *shared*, of depth 0 or infinity, with a timeout (capped by
//!   [`LockLimits::max_timeout`]; "infinite" or no timeout becomes [`LockLimits::default_timeout`]).
//! - A lock on a path covers that path; a depth-infinity lock also covers everything below it.
//! - New lock: it conflicts with every covering lock (and, for a depth-infinity request, every lock
//!   below) unless both are shared. Submitted tokens don't matter: a principal can't take a second
//!   exclusive lock on what it already locked.
//! - Write ([`LockManager::check`]): every covering lock must be *held* — its token submitted by the
//!   principal who took it — except that with shared locks holding one of them is enough; with
//!   `deep` (DELETE/MOVE of a folder) the same holds for every locked path below.
//! - Expired locks are ignored everywhere and swept lazily on the next change.
//!
//! # Paths
//! Paths are the tree paths the principal sees (`/Matter/Folder/doc.pdf`), `/`-separated and
//! absolute. They are normalised (repeated and trailing `/` dropped; `.`/`..` segments and NUL are
//! refused) and compared case-insensitively through a fold function (today `to_lowercase`,
//! later the portal's `names::fold_key`).
//!
//! # Storage
//! One redb table, `locks_v1`, keyed by the lock token (random, server-made). The value is the
//! postcard-encoded lock sealed with [`Sealer::seal`] (scope [`Scope::Global`], AAD = table name
//! and token), so paths and owner XML are never stored in the clear and no key is derived from a
//! path. Every live lock is also held in memory (bounded by [`LockLimits::max_total`]), loaded at
//! [`LockManager::open`]: checks and discovery never touch the database, and changes are written
//! through (one redb write transaction per change, on tokio's blocking pool). A record that fails to
//! open (tampering, or a changed key) is dropped with an error log: losing a lock only unlocks.
//!
//! Only one `LockManager` may be opened per database (clone the handle instead); two would not
//! see each other's changes.

use crate::crypto::{Scope, Sealer};
use crate::model::{Millis, now_millis};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The lock table.
const LOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("locks_v1");

/// Exclusive or shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockScope {
    /// Nobody else may hold any lock on what this covers.
    Exclusive,
    /// Others may hold shared locks too.
    Shared,
}

/// How far down a lock reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockDepth {
    /// The path itself only.
    Zero,
    /// The path and everything below it.
    Infinity,
}

/// A granted lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock token (`urn:uuid:…`).
    pub token: String,
    /// The lock root: the normalised path (a trailing `/` is kept when the request had one).
    pub path: String,
    /// Who took the lock (the portal uses `Principal`'s display form, e.g. `portal:7`).
    pub principal: String,
    /// The `DAV:owner` XML the client supplied, as bytes.
    pub owner: Option<Vec<u8>>,
    /// Exclusive or shared.
    pub scope: LockScope,
    /// Depth 0 or infinity.
    pub depth: LockDepth,
    /// The granted timeout (after capping).
    pub timeout: Duration,
    /// When the lock lapses unless refreshed.
    pub expires_at: SystemTime,
    /// When the lock was taken.
    pub created_at: SystemTime,
}

/// A request for a new lock.
#[derive(Clone, Debug)]
pub struct LockRequest {
    /// The path to lock.
    pub path: String,
    /// Who asks.
    pub principal: String,
    /// The client's `DAV:owner` XML, kept verbatim (size-capped).
    pub owner: Option<Vec<u8>>,
    /// Exclusive or shared.
    pub scope: LockScope,
    /// Depth 0 or infinity.
    pub depth: LockDepth,
    /// Requested timeout; `None` = infinite (capped to the default).
    pub timeout: Option<Duration>,
}

/// Bounds on what clients can make the lock manager store.
#[derive(Clone, Debug)]
pub struct LockLimits {
    /// Most live locks one principal may hold.
    pub max_per_principal: usize,
    /// Most live locks overall (they are all kept in memory).
    pub max_total: usize,
    /// Largest owner XML, in bytes.
    pub max_owner_bytes: usize,
    /// Longest path, in bytes.
    pub max_path_bytes: usize,
    /// Most path segments.
    pub max_path_segments: usize,
    /// Timeout given when a client asks for none or for "infinite".
    pub default_timeout: Duration,
    /// Longest timeout granted.
    pub max_timeout: Duration,
}

impl Default for LockLimits {
    fn default() -> Self {
        LockLimits {
            max_per_principal: 1_000,
            max_total: 20_000,
            max_owner_bytes: 4_096,
            max_path_bytes: 4_096,
            max_path_segments: 64,
            default_timeout: Duration::from_secs(3_600),
            max_timeout: Duration::from_secs(86_400),
        }
    }
}

/// What a lock operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another lock is in the way (the conflicting lock is attached).
    #[error("\"{}\" is locked by another user{}", .0.path, owner_hint(.0))]
    Locked(Box<LockInfo>),
    /// No live lock with that token covers that path.
    #[error("no such lock (it may have expired)")]
    NoSuchLock,
    /// The lock belongs to another principal.
    #[error("that lock belongs to another user")]
    NotOwner,
    /// The path can't be locked.
    #[error("invalid path for a lock: {0}")]
    InvalidPath(String),
    /// A bound in [`LockLimits`] was hit.
    #[error("lock limit exceeded: {0}")]
    TooMany(String),
    /// The database failed.
    #[error("lock storage error: {0}")]
    Storage(String),
}

fn owner_hint(l: &LockInfo) -> String {
    match &l.owner {
        Some(o) if o.len() <= 256 => format!(" ({})", strip_tags(o)),
        _ => String::new(),
    }
}

/// The text content of a small XML fragment, for messages ("locked by Jane Doe").
fn strip_tags(xml: &[u8]) -> String {
    let s = String::from_utf8_lossy(xml);
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag && !c.is_control() => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

impl From<LockError> for crate::Error {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Locked(_) | LockError::NotOwner => crate::Error::Conflict(e.to_string()),
            LockError::NoSuchLock => crate::Error::NotFound(e.to_string()),
            LockError::InvalidPath(_) => crate::Error::Invalid(e.to_string()),
            LockError::TooMany(_) => crate::Error::TooLarge(e.to_string()),
            LockError::Storage(s) => crate::Error::Storage(s),
        }
    }
}

macro_rules! storage_err {
    ($($t:ty),*) => {$(
        impl From<$t> for LockError {
            fn from(e: $t) -> Self {
                LockError::Storage(e.to_string())
            }
        }
    )*};
}
storage_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    tokio::task::JoinError
);

/// The stored form of a lock (inside the sealed value).
#[derive(Serialize, Deserialize)]
struct StoredLock {
    path: String,
    principal: String,
    owner: Option<Vec<u8>>,
    shared: bool,
    deep: bool,
    timeout_secs: u64,
    expires_ms: Millis,
    created_ms: Millis,
}

/// One live lock in memory.
#[derive(Clone, Debug)]
struct Entry {
    info: LockInfo,
    /// Folded, normalised path (no trailing slash).
    key: String,
    expires_ms: Millis,
    created_ms: Millis,
}

impl Entry {
    fn live(&self, now: Millis) -> bool {
        self.expires_ms > now
    }
    fn deep(&self) -> bool {
        self.info.depth == LockDepth::Infinity
    }
    fn shared(&self) -> bool {
        self.info.scope == LockScope::Shared
    }
    fn held_by(&self, principal: &str, tokens: &[String]) -> bool {
        self.info.principal == principal && tokens.contains(&self.info.token)
    }
    fn stored(&self) -> StoredLock {
        StoredLock {
            path: self.info.path.clone(),
            principal: self.info.principal.clone(),
            owner: self.info.owner.clone(),
            shared: self.shared(),
            deep: self.deep(),
            timeout_secs: self.info.timeout.as_secs(),
            expires_ms: self.expires_ms,
            created_ms: self.created_ms,
        }
    }
    fn from_stored(token: String, s: StoredLock, limits: &LockLimits) -> Result<Self, String> {
        let norm = normalise(&s.path, limits)?;
        Ok(Entry {
            key: fold(&norm.path),
            info: LockInfo {
                token,
                path: s.path,
                principal: s.principal,
                owner: s.owner,
                scope: if s.shared {
                    LockScope::Shared
                } else {
                    LockScope::Exclusive
                },
                depth: if s.deep {
                    LockDepth::Infinity
                } else {
                    LockDepth::Zero
                },
                timeout: Duration::from_secs(s.timeout_secs),
                expires_at: to_system_time(s.expires_ms),
                created_at: to_system_time(s.created_ms),
            },
            expires_ms: s.expires_ms,
            created_ms: s.created_ms,
        })
    }
}

fn to_system_time(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The in-memory view of all stored locks.
#[derive(Default)]
struct State {
    by_token: HashMap<String, Entry>,
    /// Folded path -> tokens of the locks rooted there.
    by_path: BTreeMap<String, Vec<String>>,
}

impl State {
    fn insert(&mut self, e: Entry) {
        self.by_path
            .entry(e.key.clone())
            .or_default()
            .push(e.info.token.clone());
        self.by_token.insert(e.info.token.clone(), e);
    }

    fn remove(&mut self, token: &str) -> Option<Entry> {
        let e = self.by_token.remove(token)?;
        if let Some(v) = self.by_path.get_mut(&e.key) {
            v.retain(|t| t != token);
            if v.is_empty() {
                self.by_path.remove(&e.key);
            }
        }
        Some(e)
    }

    fn at(&self, key: &str) -> impl Iterator<Item = &Entry> {
        self.by_path
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|t| self.by_token.get(t))
    }

    /// Live locks that cover `key`: rooted at it, or depth-infinity locks rooted above it.
    fn covering(&self, key: &str, now: Millis) -> Vec<&Entry> {
        let mut out = Vec::new();
        for anc in ancestors(key) {
            out.extend(self.at(anc).filter(|e| e.live(now) && e.deep()));
        }
        out.extend(self.at(key).filter(|e| e.live(now)));
        out
    }

    /// Live locks rooted strictly below `key`, grouped by path.
    fn below(&self, key: &str, now: Millis) -> Vec<Vec<&Entry>> {
        let prefix = if key == "/" {
            "/".to_string()
        } else {
            format!("{key}/")
        };
        self.by_path
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.as_str() != key)
            .map(|(_, toks)| {
                toks.iter()
                    .filter_map(|t| self.by_token.get(t))
                    .filter(|e| e.live(now))
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn expired(&self, now: Millis) -> Vec<String> {
        self.by_token
            .values()
            .filter(|e| !e.live(now))
            .map(|e| e.info.token.clone())
            .collect()
    }
}

/// Proper ancestors of a folded key, root first (`/a/b` -> `/`, `/a`).
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    let root = if key == "/" { None } else { Some("/") };
    let inner = key
        .char_indices()
        .skip(1)
        .filter(|(_, c)| *c == '/')
        .map(move |(i, _)| &key[..i]);
    root.into_iter().chain(inner)
}

/// A path after validation: `path` without trailing slash, `collection` if the input had one.
struct Norm {
    path: String,
    collection: bool,
}

impl Norm {
    /// The form kept as lock root.
    fn root(&self) -> String {
        if self.collection && self.path != "/" {
            format!("{}/", self.path)
        } else {
            self.path.clone()
        }
    }
}

fn normalise(path: &str, limits: &LockLimits) -> Result<Norm, String> {
    if path.len() > limits.max_path_bytes {
        return Err(format!(
            "path is {} bytes long, the limit is {}",
            path.len(),
            limits.max_path_bytes
        ));
    }
    if !path.starts_with('/') {
        return Err("path must start with \"/\"".into());
    }
    let mut out = String::with_capacity(path.len());
    let mut n = 0usize;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err("\".\" and \"..\" are not allowed in a path".into());
        }
        if seg.contains('\0') {
            return Err("NUL is not allowed in a path".into());
        }
        n += 1;
        if n > limits.max_path_segments {
            return Err(format!(
                "path has more than {} segments",
                limits.max_path_segments
            ));
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Norm {
        collection: path.ends_with('/'),
        path: out,
    })
}

/// Case-insensitive key of a normalised path.
// TODO(names): switch to `crate::names::fold_key` per segment once it lands.
fn fold(normalised: &str) -> String {
    normalised.to_lowercase()
}

/// A fresh lock token: `urn:uuid:` and a random (version 4) UUID.
fn new_token() -> Result<String, LockError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| LockError::Storage("the system random generator failed".into()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn aad(token: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(LOCKS_NAME.len() + 1 + token.len());
    a.extend_from_slice(LOCKS_NAME.as_bytes());
    a.push(0);
    a.extend_from_slice(token.as_bytes());
    a
}

const LOCKS_NAME: &str = "locks_v1";

/// What a change does to the stored set.
#[derive(Default)]
struct Change {
    insert: Vec<Entry>,
    remove: Vec<String>,
}

struct Inner {
    /// The database handle (reopened by the store after a storage failure).
    db: crate::store::DbCell,
    sealer: Arc<dyn Sealer>,
    limits: LockLimits,
    state: RwLock<State>,
    /// Serialises changes (held only on blocking threads, across the redb commit).
    gate: Mutex<()>,
}

/// The lock manager: a cheap, cloneable handle.
#[derive(Clone)]
pub struct LockManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for LockManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.read_state().by_token.len();
        f.debug_struct("LockManager").field("locks", &n).finish()
    }
}

impl LockManager {
    /// Opens the lock manager on `db` with default [`LockLimits`], creating its table if needed,
    /// loading every stored lock and sweeping expired ones.
    pub async fn open(
        db: impl Into<crate::store::DbCell>,
        sealer: Arc<dyn Sealer>,
    ) -> crate::Result<Self> {
        Self::open_with_limits(db, sealer, LockLimits::default()).await
    }

    /// Like [`LockManager::open`] with explicit limits.
    pub async fn open_with_limits(
        db: impl Into<crate::store::DbCell>,
        sealer: Arc<dyn Sealer>,
        limits: LockLimits,
    ) -> crate::Result<Self> {
        let inner = Arc::new(Inner {
            db: db.into(),
            sealer,
            limits,
            state: RwLock::new(State::default()),
            gate: Mutex::new(()),
        });
        let i2 = inner.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&i2)).await??;
        tracing::debug!(locks = loaded, "lock manager opened");
        Ok(LockManager { inner })
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn norm(&self, path: &str) -> Result<Norm, LockError> {
        normalise(path, &self.inner.limits).map_err(LockError::InvalidPath)
    }

    /// Takes a new lock. Fails with [`LockError::Locked`] (carrying the conflicting lock) if
    /// another lock is in the way.
    pub async fn lock(&self, req: LockRequest) -> Result<LockInfo, LockError> {
        let limits = &self.inner.limits;
        let norm = self.norm(&req.path)?;
        if let Some(o) = &req.owner
            && o.len() > limits.max_owner_bytes
        {
            return Err(LockError::TooMany(format!(
                "the lock owner is {} bytes, the limit is {}",
                o.len(),
                limits.max_owner_bytes
            )));
        }
        if req.principal.len() > 1024 {
            return Err(LockError::TooMany("principal name too long".into()));
        }
        let timeout = match req.timeout {
            None => limits.default_timeout,
            Some(t) if t.is_zero() => limits.default_timeout,
            Some(t) => t.min(limits.max_timeout),
        };
        let token = new_token()?;
        let key = fold(&norm.path);
        let max_per = limits.max_per_principal;
        let max_total = limits.max_total;
        self.mutate(move |state, now| {
            // Conflicts with covering locks (and, for depth infinity, locks below).
            let exclusive = req.scope == LockScope::Exclusive;
            if let Some(c) = state
                .covering(&key, now)
                .into_iter()
                .find(|e| exclusive || !e.shared())
            {
                return Err(LockError::Locked(Box::new(c.info.clone())));
            }
            if req.depth == LockDepth::Infinity
                && let Some(c) = state
                    .below(&key, now)
                    .into_iter()
                    .flatten()
                    .find(|e| exclusive || !e.shared())
            {
                return Err(LockError::Locked(Box::new(c.info.clone())));
            }
            let live: Vec<&Entry> = state.by_token.values().filter(|e| e.live(now)).collect();
            if live.len() >= max_total {
                return Err(LockError::TooMany(format!(
                    "the portal holds {max_total} locks already"
                )));
            }
            if live
                .iter()
                .filter(|e| e.info.principal == req.principal)
                .count()
                >= max_per
            {
                return Err(LockError::TooMany(format!(
                    "you hold {max_per} locks already: unlock some files first"
                )));
            }
            let expires_ms = now.saturating_add(timeout.as_millis() as u64);
            let e = Entry {
                key,
                info: LockInfo {
                    token,
                    path: norm.root(),
                    principal: req.principal,
                    owner: req.owner,
                    scope: req.scope,
                    depth: req.depth,
                    timeout,
                    expires_at: to_system_time(expires_ms),
                    created_at: to_system_time(now),
                },
                expires_ms,
                created_ms: now,
            };
            let info = e.info.clone();
            Ok((
                Change {
                    insert: vec![e],
                    remove: vec![],
                },
                info,
            ))
        })
        .await
    }

    /// Finds the live lock `token` covering `path` and, when `principal` is given, checks that it
    /// belongs to them.
    fn find_covering<'s>(
        state: &'s State,
        key: &str,
        token: &str,
        principal: Option<&str>,
        now: Millis,
    ) -> Result<&'s Entry, LockError> {
        let e = state
            .covering(key, now)
            .into_iter()
            .find(|e| e.info.token == token)
            .ok_or(LockError::NoSuchLock)?;
        if let Some(p) = principal
            && e.info.principal != p
        {
            return Err(LockError::NotOwner);
        }
        Ok(e)
    }

    /// Extends a lock's timeout. `path` may be the lock root or any path the lock covers; when
    /// `principal` is given the lock must be theirs.
    pub async fn refresh(
        &self,
        path: &str,
        token: &str,
        principal: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<LockInfo, LockError> {
        let key = fold(&self.norm(path)?.path);
        let token = token.to_string();
        let principal = principal.map(str::to_string);
        let limits = self.inner.limits.clone();
        self.mutate(move |state, now| {
            let e = Self::find_covering(state, &key, &token, principal.as_deref(), now)?;
            let timeout = match timeout {
                None => limits.default_timeout,
                Some(t) if t.is_zero() => limits.default_timeout,
                Some(t) => t.min(limits.max_timeout),
            };
            let mut e = e.clone();
            e.expires_ms = now.saturating_add(timeout.as_millis() as u64);
            e.info.timeout = timeout;
            e.info.expires_at = to_system_time(e.expires_ms);
            let info = e.info.clone();
            Ok((
                Change {
                    remove: vec![token.clone()],
                    insert: vec![e],
                },
                info,
            ))
        })
        .await
    }

    /// Removes a lock. `path` may be the lock root or any path it covers; when `principal` is
    /// given the lock must be theirs.
    pub async fn unlock(
        &self,
        path: &str,
        token: &str,
        principal: Option<&str>,
    ) -> Result<(), LockError> {
        let key = fold(&self.norm(path)?.path);
        let token = token.to_string();
        let principal = principal.map(str::to_string);
        self.mutate(move |state, now| {
            Self::find_covering(state, &key, &token, principal.as_deref(), now)?;
            Ok((
                Change {
                    remove: vec![token.clone()],
                    insert: vec![],
                },
                (),
            ))
        })
        .await
    }

    /// Removes a lock by token alone, whoever holds it: for staff breaking a stale lock. Returns
    /// the removed lock.
    pub async fn break_lock(&self, token: &str) -> Result<LockInfo, LockError> {
        let token = token.to_string();
        self.mutate(move |state, now| {
            let e = state
                .by_token
                .get(&token)
                .filter(|e| e.live(now))
                .ok_or(LockError::NoSuchLock)?;
            Ok((
                Change {
                    remove: vec![token.clone()],
                    insert: vec![],
                },
                e.info.clone(),
            ))
        })
        .await
    }

    /// Removes every lock rooted at `path` or below (after the resource was deleted or moved away).
    /// Returns how many were removed.
    pub async fn delete_tree(&self, path: &str) -> Result<usize, LockError> {
        let key = fold(&self.norm(path)?.path);
        self.mutate(move |state, _now| {
            let mut remove: Vec<String> = state.at(&key).map(|e| e.info.token.clone()).collect();
            // `below` only reports live locks; expired ones go with the sweep anyway.
            for group in state.below(&key, 0) {
                remove.extend(group.into_iter().map(|e| e.info.token.clone()));
            }
            let n = remove.len();
            Ok((
                Change {
                    remove,
                    insert: vec![],
                },
                n,
            ))
        })
        .await
    }

    /// Checks whether `principal` may write `path` given the lock tokens it submitted; with `deep`
    /// (DELETE or MOVE of a folder) locks below `path` count too. Returns the first lock in the way.
    ///
    /// This reads memory only and never blocks on the database.
    pub fn check(
        &self,
        path: &str,
        principal: &str,
        submitted_tokens: &[String],
        deep: bool,
    ) -> Result<(), LockError> {
        let key = fold(&self.norm(path)?.path);
        let now = now_millis();
        let state = self.read_state();
        let group_ok = |group: &[&Entry]| -> Result<(), LockError> {
            let mut first_unheld: Option<&Entry> = None;
            let mut held = false;
            for e in group {
                if e.held_by(principal, submitted_tokens) {
                    held = true;
                } else if !e.shared() {
                    return Err(LockError::Locked(Box::new(e.info.clone())));
                } else {
                    first_unheld.get_or_insert(e);
                }
            }
            match first_unheld {
                Some(e) if !held => Err(LockError::Locked(Box::new(e.info.clone()))),
                _ => Ok(()),
            }
        };
        group_ok(&state.covering(&key, now))?;
        if deep {
            for group in state.below(&key, now) {
                group_ok(&group)?;
            }
        }
        Ok(())
    }

    /// Whether `token` names a live lock that covers `path` (for evaluating `If:` headers).
    pub fn token_covers(&self, path: &str, token: &str) -> bool {
        let Ok(norm) = self.norm(path) else {
            return false;
        };
        let key = fold(&norm.path);
        let state = self.read_state();
        state
            .covering(&key, now_millis())
            .iter()
            .any(|e| e.info.token == token)
    }

    /// The live locks that cover `path` (lock discovery): rooted there, or depth-infinity locks
    /// rooted above it.
    pub fn discover(&self, path: &str) -> Vec<LockInfo> {
        let Ok(norm) = self.norm(path) else {
            return Vec::new();
        };
        let key = fold(&norm.path);
        let state = self.read_state();
        state
            .covering(&key, now_millis())
            .into_iter()
            .map(|e| e.info.clone())
            .collect()
    }

    /// Every live lock rooted at `path` or below it (for an administrator's view).
    pub fn locks_under(&self, path: &str) -> Result<Vec<LockInfo>, LockError> {
        let key = fold(&self.norm(path)?.path);
        let now = now_millis();
        let state = self.read_state();
        let mut out: Vec<LockInfo> = state
            .at(&key)
            .filter(|e| e.live(now))
            .map(|e| e.info.clone())
            .collect();
        for group in state.below(&key, now) {
            out.extend(group.into_iter().map(|e| e.info.clone()));
        }
        Ok(out)
    }

    /// Runs a change on a blocking thread: decide under the gate, write and commit, then apply to
    /// memory. Expired locks are swept in the same transaction. Runs to completion even if the
    /// caller stops waiting, so memory and database never disagree.
    async fn mutate<R, F>(&self, op: F) -> Result<R, LockError>
    where
        R: Send + 'static,
        F: FnOnce(&State, Millis) -> Result<(Change, R), LockError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _gate = inner.gate.lock().unwrap_or_else(PoisonError::into_inner);
            let now = now_millis();
            let (mut change, r) = {
                let state = inner.state.read().unwrap_or_else(PoisonError::into_inner);
                let (mut change, r) = op(&state, now)?;
                for t in state.expired(now) {
                    if !change.remove.contains(&t) {
                        change.remove.push(t);
                    }
                }
                (change, r)
            };
            change.remove.sort();
            change.remove.dedup();
            if !change.insert.is_empty() || !change.remove.is_empty() {
                let mut sealed = Vec::with_capacity(change.insert.len());
                for e in &change.insert {
                    let plain = postcard::to_stdvec(&e.stored())
                        .map_err(|e| LockError::Storage(format!("encoding a lock: {e}")))?;
                    let v = inner
                        .sealer
                        .seal(Scope::Global, &aad(&e.info.token), &plain)
                        .map_err(|e| LockError::Storage(e.to_string()))?;
                    sealed.push(v);
                }
                let txn = inner.db.begin_write()?;
                {
                    let mut table = txn.open_table(LOCKS)?;
                    for t in &change.remove {
                        table.remove(t.as_bytes())?;
                    }
                    for (e, v) in change.insert.iter().zip(&sealed) {
                        table.insert(e.info.token.as_bytes(), v.as_slice())?;
                    }
                }
                // This commit is durable: with the store in batched mode it also makes the store's
                // pending commits durable, so their blob files go to disk first.
                inner
                    .db
                    .sync_pending_files()
                    .map_err(|e| LockError::Storage(format!("syncing uploaded files: {e}")))?;
                txn.commit()?;
                let mut state = inner.state.write().unwrap_or_else(PoisonError::into_inner);
                for t in &change.remove {
                    state.remove(t);
                }
                for e in change.insert.drain(..) {
                    state.insert(e);
                }
            }
            Ok(r)
        })
        .await?
    }
}

/// Loads every stored lock into memory; drops expired and unreadable records. Returns the count.
fn load(inner: &Inner) -> crate::Result<usize> {
    // Create the table if needed (a read transaction can't).
    let txn = inner.db.begin_write()?;
    txn.open_table(LOCKS)?;
    txn.commit()?;

    let now = now_millis();
    let mut drop_tokens: Vec<Vec<u8>> = Vec::new();
    let mut entries = Vec::new();
    {
        let rtxn = inner.db.begin_read()?;
        let table = rtxn.open_table(LOCKS)?;
        for item in table.iter()? {
            let (k, v) = item?;
            let key = k.value().to_vec();
            let token = match String::from_utf8(key.clone()) {
                Ok(t) => t,
                Err(_) => {
                    tracing::error!("dropping a lock record with a malformed token");
                    drop_tokens.push(key);
                    continue;
                }
            };
            let parsed = inner
                .sealer
                .open(Scope::Global, &aad(&token), v.value())
                .map_err(|e| e.to_string())
                .and_then(|plain| {
                    postcard::from_bytes::<StoredLock>(&plain).map_err(|e| e.to_string())
                })
                .and_then(|s| Entry::from_stored(token, s, &inner.limits));
            match parsed {
                Ok(e) if e.live(now) => {
                    if entries.len() >= inner.limits.max_total {
                        tracing::warn!("more stored locks than max_total: dropping the rest");
                        drop_tokens.push(key);
                    } else {
                        entries.push(e);
                    }
                }
                Ok(_) => drop_tokens.push(key),
                Err(reason) => {
                    tracing::error!(%reason, "dropping an unreadable lock record");
                    drop_tokens.push(key);
                }
            }
        }
    }
    if !drop_tokens.is_empty() {
        let txn = inner.db.begin_write()?;
        {
            let mut table = txn.open_table(LOCKS)?;
            for k in &drop_tokens {
                table.remove(k.as_slice())?;
            }
        }
        txn.commit()?;
    }
    let mut state = inner.state.write().unwrap_or_else(PoisonError::into_inner);
    let n = entries.len();
    for e in entries {
        state.insert(e);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PlainSealer;
    use redb::ReadableDatabase;

    fn req(path: &str, who: &str, scope: LockScope, depth: LockDepth) -> LockRequest {
        LockRequest {
            path: path.into(),
            principal: who.into(),
            owner: Some(b"<D:owner>someone</D:owner>".to_vec()),
            scope,
            depth,
            timeout: Some(Duration::from_secs(60)),
        }
    }

    async fn manager(limits: LockLimits) -> (tempfile::TempDir, Arc<redb::Database>, LockManager) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("db.redb")).unwrap());
        let m = LockManager::open_with_limits(db.clone(), Arc::new(PlainSealer), limits)
            .await
            .unwrap();
        (dir, db, m)
    }

    use LockDepth::{Infinity, Zero};
    use LockScope::{Exclusive, Shared};

    #[tokio::test]
    async fn exclusive_blocks_others_and_case_is_folded() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let l = m
            .lock(req("/M/F/doc.docx", "a", Exclusive, Zero))
            .await
            .unwrap();
        assert!(l.token.starts_with("urn:uuid:"));
        // Another principal, any case: conflict for a second lock and for writing.
        let e = m
            .lock(req("/m/f/DOC.docx", "b", Shared, Zero))
            .await
            .unwrap_err();
        assert!(
            matches!(e, LockError::Locked(ref c) if c.token == l.token),
            "{e}"
        );
        assert!(m.check("/m/F/Doc.DOCX", "b", &[], false).is_err());
        // Even with the token: it is not theirs.
        assert!(
            m.check("/M/F/doc.docx", "b", std::slice::from_ref(&l.token), false)
                .is_err()
        );
        // The holder with the token may write; without it not.
        assert!(
            m.check("/M/F/doc.docx", "a", std::slice::from_ref(&l.token), false)
                .is_ok()
        );
        assert!(m.check("/M/F/doc.docx", "a", &[], false).is_err());
        // The holder can't lock it a second time either.
        assert!(
            m.lock(req("/M/F/doc.docx", "a", Exclusive, Zero))
                .await
                .is_err()
        );
        // Siblings are free.
        assert!(m.check("/M/F/other.docx", "b", &[], false).is_ok());
        assert!(m.check("/M/F", "b", &[], false).is_ok());
    }

    #[tokio::test]
    async fn shared_locks_coexist_but_not_with_exclusive() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let a = m.lock(req("/x/f", "a", Shared, Zero)).await.unwrap();
        let b = m.lock(req("/x/f", "b", Shared, Zero)).await.unwrap();
        assert_ne!(a.token, b.token);
        assert!(m.lock(req("/x/f", "c", Exclusive, Zero)).await.is_err());
        // A writer needs one of the shared tokens (their own).
        assert!(m.check("/x/f", "a", &[], false).is_err());
        assert!(
            m.check("/x/f", "a", std::slice::from_ref(&a.token), false)
                .is_ok()
        );
        assert!(
            m.check("/x/f", "c", std::slice::from_ref(&a.token), false)
                .is_err()
        );
        assert_eq!(m.discover("/X/F").len(), 2);
    }

    #[tokio::test]
    async fn depth_infinity_covers_descendants_only() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let l = m
            .lock(req("/m/folder/", "a", Exclusive, Infinity))
            .await
            .unwrap();
        assert_eq!(l.path, "/m/folder/");
        assert!(m.check("/m/folder/sub/doc", "b", &[], false).is_err());
        assert!(
            m.lock(req("/m/folder/sub", "b", Shared, Zero))
                .await
                .is_err()
        );
        // A name that merely starts with the folder's name is not inside it.
        assert!(m.check("/m/folder2/doc", "b", &[], false).is_ok());
        assert!(m.check("/m", "b", &[], false).is_ok());
        // ... but a deep operation on the parent hits the lock below.
        assert!(m.check("/m", "b", &[], true).is_err());
        // Discovery from inside returns the ancestor lock; token_covers agrees.
        let d = m.discover("/m/folder/sub/doc");
        assert_eq!(d.len(), 1);
        assert!(m.token_covers("/m/folder/sub/doc", &l.token));
        assert!(!m.token_covers("/m/folder2", &l.token));
        // Refresh through a member URL works (indirect refresh).
        m.refresh(
            "/m/folder/a",
            &l.token,
            Some("a"),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn depth_zero_does_not_cover_children_and_deep_lock_sees_below() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        m.lock(req("/m/folder", "a", Exclusive, Zero))
            .await
            .unwrap();
        assert!(m.check("/m/folder/doc", "b", &[], false).is_ok());
        m.lock(req("/m/folder/doc", "b", Exclusive, Zero))
            .await
            .unwrap();
        // A depth-infinity lock on the parent conflicts with the lock below.
        let e = m.lock(req("/m", "c", Shared, Infinity)).await.unwrap_err();
        assert!(matches!(e, LockError::Locked(_)));
        // Depth 0 on the parent is fine.
        m.lock(req("/m", "c", Shared, Zero)).await.unwrap();
    }

    #[tokio::test]
    async fn deep_check_requires_every_lock_below() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let a = m.lock(req("/m/f/a", "p", Exclusive, Zero)).await.unwrap();
        let b = m.lock(req("/m/f/b", "p", Exclusive, Zero)).await.unwrap();
        assert!(
            m.check("/m/f", "p", std::slice::from_ref(&a.token), true)
                .is_err()
        );
        assert!(
            m.check("/m/f", "p", &[a.token.clone(), b.token.clone()], true)
                .is_ok()
        );
        assert_eq!(m.delete_tree("/M/F").await.unwrap(), 2);
        assert!(m.check("/m/f", "q", &[], true).is_ok());
    }

    #[tokio::test]
    async fn unlock_and_refresh_need_the_owner() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let l = m.lock(req("/m/doc", "a", Exclusive, Zero)).await.unwrap();
        assert!(matches!(
            m.unlock("/m/doc", &l.token, Some("b")).await,
            Err(LockError::NotOwner)
        ));
        assert!(matches!(
            m.refresh("/m/doc", &l.token, Some("b"), None).await,
            Err(LockError::NotOwner)
        ));
        assert!(matches!(
            m.unlock("/m/other", &l.token, Some("a")).await,
            Err(LockError::NoSuchLock)
        ));
        m.unlock("/m/doc", &l.token, Some("a")).await.unwrap();
        assert!(m.check("/m/doc", "b", &[], false).is_ok());
        assert!(matches!(
            m.unlock("/m/doc", &l.token, Some("a")).await,
            Err(LockError::NoSuchLock)
        ));
    }

    #[tokio::test]
    async fn expired_locks_are_ignored_and_swept() {
        let limits = LockLimits {
            max_timeout: Duration::from_millis(1),
            ..LockLimits::default()
        };
        let (_d, db, m) = manager(limits).await;
        m.lock(req("/m/doc", "a", Exclusive, Zero)).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(m.check("/m/doc", "b", &[], false).is_ok());
        assert!(m.discover("/m/doc").is_empty());
        // The next change sweeps the stored record.
        m.lock(req("/m/other", "b", Exclusive, Zero)).await.unwrap();
        let rtxn = db.begin_read().unwrap();
        let t = rtxn.open_table(LOCKS).unwrap();
        assert_eq!(t.iter().unwrap().count(), 1);
    }

    #[tokio::test]
    async fn locks_survive_reopen_and_are_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let token;
        {
            let db = Arc::new(redb::Database::create(&path).unwrap());
            let m = LockManager::open(db.clone(), Arc::new(PlainSealer))
                .await
                .unwrap();
            token = m
                .lock(req("/Secret Matter/doc.pdf", "a", Exclusive, Zero))
                .await
                .unwrap()
                .token;
        }
        {
            let db = Arc::new(redb::Database::create(&path).unwrap());
            let m = LockManager::open(db, Arc::new(PlainSealer)).await.unwrap();
            let d = m.discover("/secret matter/DOC.pdf");
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].token, token);
            assert_eq!(d[0].path, "/Secret Matter/doc.pdf");
            assert_eq!(
                d[0].owner.as_deref(),
                Some(&b"<D:owner>someone</D:owner>"[..])
            );
            assert!(m.check("/Secret Matter/doc.pdf", "b", &[], false).is_err());
        }
    }

    /// A sealer that flips bytes, to show values go through it.
    struct XorSealer;
    impl Sealer for XorSealer {
        fn seal(&self, _s: Scope, aad: &[u8], plain: &[u8]) -> crate::Result<Vec<u8>> {
            let mut v: Vec<u8> = plain.iter().map(|b| b ^ 0x5a).collect();
            v.extend_from_slice(&PlainSealer.index_key(Scope::Global, aad)[..4]);
            Ok(v)
        }
        fn open(&self, _s: Scope, aad: &[u8], sealed: &[u8]) -> crate::Result<Vec<u8>> {
            let n = sealed
                .len()
                .checked_sub(4)
                .ok_or(crate::Error::Integrity("short".into()))?;
            if sealed[n..] != PlainSealer.index_key(Scope::Global, aad)[..4] {
                return Err(crate::Error::Integrity("aad".into()));
            }
            Ok(sealed[..n].iter().map(|b| b ^ 0x5a).collect())
        }
        fn index_key(&self, s: Scope, d: &[u8]) -> [u8; 32] {
            PlainSealer.index_key(s, d)
        }
        fn chain_mac(&self, d: &[u8]) -> [u8; 32] {
            PlainSealer.chain_mac(d)
        }
        fn create_matter_key(
            &self,
            _t: &redb::WriteTransaction,
            _m: crate::model::MatterId,
        ) -> crate::Result<()> {
            Ok(())
        }
        fn destroy_matter_key(
            &self,
            _t: &redb::WriteTransaction,
            _m: crate::model::MatterId,
        ) -> crate::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn stored_values_are_sealed_and_bad_records_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = Arc::new(redb::Database::create(&path).unwrap());
        let m = LockManager::open(db.clone(), Arc::new(XorSealer))
            .await
            .unwrap();
        m.lock(req("/Secret Matter/doc.pdf", "a", Exclusive, Zero))
            .await
            .unwrap();
        {
            let rtxn = db.begin_read().unwrap();
            let t = rtxn.open_table(LOCKS).unwrap();
            for item in t.iter().unwrap() {
                let (k, v) = item.unwrap();
                let hay = [k.value(), v.value()].concat();
                assert!(
                    !hay.windows(6).any(|w| w == b"Secret"),
                    "path stored in clear"
                );
            }
        }
        drop(m);
        // Opened with the wrong sealer: the record can't be read and is dropped, not fatal.
        let m = LockManager::open(db.clone(), Arc::new(PlainSealer))
            .await
            .unwrap();
        assert!(m.discover("/Secret Matter/doc.pdf").is_empty());
    }

    #[tokio::test]
    async fn limits_are_enforced() {
        let limits = LockLimits {
            max_per_principal: 2,
            max_owner_bytes: 16,
            ..LockLimits::default()
        };
        let (_d, _db, m) = manager(limits).await;
        let mut r = req("/a", "p", Exclusive, Zero);
        r.owner = Some(vec![b'x'; 17]);
        assert!(matches!(m.lock(r).await, Err(LockError::TooMany(_))));
        let ok = |p: &str| {
            let mut r = req(p, "p", Exclusive, Zero);
            r.owner = None;
            r
        };
        m.lock(ok("/a")).await.unwrap();
        m.lock(ok("/b")).await.unwrap();
        assert!(matches!(m.lock(ok("/c")).await, Err(LockError::TooMany(_))));
        // Other principals are not affected.
        let mut r = ok("/c");
        r.principal = "q".into();
        m.lock(r).await.unwrap();
        // Bad paths.
        for bad in ["relative", "/a/../b", "/a/./b", "/a\0b"] {
            assert!(
                matches!(m.lock(ok(bad)).await, Err(LockError::InvalidPath(_))),
                "{bad}"
            );
        }
        let long = format!("/{}", "a/".repeat(100));
        assert!(matches!(
            m.lock(ok(&long)).await,
            Err(LockError::InvalidPath(_))
        ));
    }

    #[tokio::test]
    async fn timeouts_are_capped_and_defaulted() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let mut r = req("/a", "p", Exclusive, Zero);
        r.timeout = None;
        let l = m.lock(r).await.unwrap();
        assert_eq!(l.timeout, LockLimits::default().default_timeout);
        let mut r = req("/b", "p", Exclusive, Zero);
        r.timeout = Some(Duration::from_secs(10 * 86_400));
        let l = m.lock(r).await.unwrap();
        assert_eq!(l.timeout, LockLimits::default().max_timeout);
        let l2 = m
            .refresh("/b", &l.token, Some("p"), Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(l2.timeout, Duration::from_secs(30));
        assert!(l2.expires_at < l.expires_at);
    }

    #[tokio::test]
    async fn root_locks_and_break_lock() {
        let (_d, _db, m) = manager(LockLimits::default()).await;
        let l = m.lock(req("/", "a", Exclusive, Infinity)).await.unwrap();
        assert!(m.check("/any/thing", "b", &[], false).is_err());
        assert_eq!(m.locks_under("/").unwrap().len(), 1);
        let broken = m.break_lock(&l.token).await.unwrap();
        assert_eq!(broken.principal, "a");
        assert!(m.check("/any/thing", "b", &[], false).is_ok());
    }

    #[test]
    fn ancestors_and_normalise() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            vec!["/", "/a", "/a/b"]
        );
        assert_eq!(ancestors("/").count(), 0);
        let l = LockLimits::default();
        let n = normalise("//a///b/", &l).unwrap();
        assert_eq!((n.path.as_str(), n.collection), ("/a/b", true));
        assert_eq!(normalise("/", &l).unwrap().path, "/");
    }
}

//! dav-server's filesystem over the principal's tree.
//!
//! A translator only: every call becomes one [`Tree`] operation, which checks the permission and
//! writes the audit entry. dav-server hands each call the authenticated principal and the client's
//! address ([`DavCtx`]); the adapter turns them into that principal's [`Tree`] (channel `webdav`).
//!
//! - **Refusals say why**: a portal error that refuses the request (a missing permission, a staff
//!   operation, an invalid name, a limit) is recorded in the request's [`DavCtx`] with its message
//!   (e.g. `you do not have Create permission on folder "/2026-001 Smith v Jones/Correspondence"`),
//!   which the service puts in the response body.
//! - **One audited read per request where the protocol allows it**: a PROPFIND asks for each
//!   node's dead properties several times; the node comes with its properties
//!   ([`Tree::stat_with_props`]) and `read_dir` fetches every child's properties and content hash
//!   in one audited listing ([`Tree::list_with_props`]), which the request remembers. A GET (or
//!   HEAD) opens the document when dav-server first asks for its metadata and hands the same
//!   handle to the `open` that follows: one `Read` entry instead of a `Stat` and a `Read`. A plain
//!   PUT (no conditional headers, no range) opens its upload at that point too, so it is audited
//!   once, as the `Create`/`Update` it is, without a `Stat` before it.
//! - **ownCloud clients** (rclone's `owncloud` vendor): `X-OC-Mtime` on PUT sets the document's
//!   modification time. A PUT with `X-OC-Mtime` or `OC-Checksum` also computes MD5, SHA-1 and
//!   SHA-256 of the body on a blocking thread while it streams, refuses the upload (400) if an
//!   `OC-Checksum` (`SHA1:`/`MD5:`) does not match, and stores `oc:checksums` as a dead property
//!   in the same commit, bound to the content's SHA-256: served in PROPFIND only while the
//!   document still has that content (an update by another client makes it disappear rather
//!   than lie). Clients can't write `oc:checksums` or the binding themselves.
//! - **Quota** (RFC 4331): `quota-available-bytes` is the free space of the portal's data
//!   directory (statvfs, cached for a few seconds, never blocking a PROPFIND for long),
//!   `quota-used-bytes` is 0 at the root (per-user usage is not counted).
//!
//! OS junk (`.DS_Store`, `._*`, `Thumbs.db`, `desktop.ini`, `~$*`…, see [`crate::names::is_os_junk`])
//! never reaches the firm's folders: it is kept in a small per-login scratch area in memory (bounded,
//! lost on restart), served back to the same login only, never listed, never audited as an upload.

use super::server::DavCtx;
use crate::Portal;
use crate::model::{Actor, Channel, Millis, Principal};
use crate::tree::{
    DeadProp, Entry, ListedEntry, PropsWanted, ReadHandle, Tree, Upload, WriteOptions,
};
use crate::{Error, names};
use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use http::StatusCode;
use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The ownCloud namespace (`oc:checksums`).
pub const OC_NS: &str = "http://owncloud.org/ns";
/// The namespace of the adapter's own dead properties (never served, never writable by clients).
pub const SDX_NS: &str = "urn:sdx-portal:webdav";
/// The dead property binding `oc:checksums` to the content's SHA-256.
const BINDING: &str = "checksums-sha256";

/// How long a free-space figure is reused.
const QUOTA_TTL: Duration = Duration::from_secs(5);
/// How long a PROPFIND waits for the free-space figure before leaving it out.
const QUOTA_WAIT: Duration = Duration::from_secs(2);
/// Bytes of a document a GET reads while its audit entry is committed (dav-server's read size).
const PREFETCH: usize = 65536;
/// Chunks queued for the checksum thread of one upload.
const HASH_QUEUE: usize = 16;

/// Most junk files kept per login.
const SCRATCH_FILES: usize = 256;
/// Largest junk file kept.
const SCRATCH_FILE_BYTES: usize = 1 << 20;

/// Maps a portal error to a WebDAV status.
pub fn fs_error(e: &Error) -> FsError {
    match e {
        Error::PermissionDenied { .. } | Error::StaffOnly(_) | Error::AuthenticationFailed => {
            FsError::Forbidden
        }
        Error::LockedOut { .. } => FsError::Forbidden,
        Error::NotFound(_) => FsError::NotFound,
        Error::AlreadyExists(_) => FsError::Exists,
        Error::InvalidName { .. } | Error::Invalid(_) | Error::Conflict(_) => FsError::Forbidden,
        Error::TooLarge(_) => FsError::TooLarge,
        // No space (ENOSPC), over quota (EDQUOT) or a read-only file system (EROFS): the server
        // can't store the request (507), not an unexplained internal error.
        Error::Io(io) if matches!(io.raw_os_error(), Some(28 | 30 | 122)) => {
            FsError::InsufficientStorage
        }
        // The same from the database (redb's errors reach us as text): e.g. a read whose audit
        // entry can't be made durable on a full disk.
        Error::Storage(m)
            if ["(os error 28)", "(os error 30)", "(os error 122)"]
                .iter()
                .any(|c| m.contains(c)) =>
        {
            FsError::InsufficientStorage
        }
        _ => FsError::GeneralFailure,
    }
}

/// Maps a portal error to a WebDAV status and records, for refusals, why (for the response body).
fn fail<T>(ctx: &DavCtx<Principal>, e: Error) -> FsResult<T> {
    tracing::debug!(error = %e, "webdav operation refused");
    let status = match &e {
        Error::PermissionDenied { .. }
        | Error::StaffOnly(_)
        | Error::Invalid(_)
        | Error::AuthenticationFailed => Some(None),
        Error::InvalidName { .. } => Some(Some(StatusCode::BAD_REQUEST)),
        Error::Conflict(_) => Some(Some(StatusCode::CONFLICT)),
        Error::TooLarge(_) => Some(Some(StatusCode::PAYLOAD_TOO_LARGE)),
        Error::LockedOut { .. } => Some(Some(StatusCode::TOO_MANY_REQUESTS)),
        _ => None,
    };
    let fe = fs_error(&e);
    if let Some(status) = status {
        ctx.refuse(status, capitalised(&e.to_string()));
    } else if matches!(fe, FsError::InsufficientStorage) {
        ctx.refuse(
            Some(StatusCode::INSUFFICIENT_STORAGE),
            "The server has no room to store this right now; nothing was changed. Please try again later.",
        );
    }
    Err(fe)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

/// The cache key of a tree path: no trailing `/` (except the root).
fn key_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    }
}

fn child_key(parent: &str, name: &str) -> String {
    let k = key_of(parent);
    if k == "/" {
        format!("/{name}")
    } else {
        format!("{k}/{name}")
    }
}

fn path_str(p: &DavPath) -> FsResult<String> {
    match std::str::from_utf8(p.as_bytes()) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Err(FsError::NotFound),
    }
}

fn to_time(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn to_millis(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Metadata of one node.
#[derive(Clone, Debug)]
pub struct Meta {
    len: u64,
    modified: SystemTime,
    created: SystemTime,
    dir: bool,
    etag: String,
}

impl Meta {
    fn of(e: &Entry) -> Self {
        Meta {
            len: e.len,
            modified: to_time(e.modified),
            created: to_time(e.created),
            dir: e.is_dir(),
            etag: e.etag.clone(),
        }
    }
    fn file(len: u64) -> Self {
        let now = SystemTime::now();
        Meta {
            len,
            modified: now,
            created: now,
            dir: false,
            etag: format!("s{len:x}"),
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }
    fn created(&self) -> FsResult<SystemTime> {
        Ok(self.created)
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn etag(&self) -> Option<String> {
        Some(self.etag.clone())
    }
}

struct DirEntry {
    name: String,
    meta: Meta,
}

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m = self.meta.clone();
        Box::pin(async move { Ok(Box::new(m) as Box<dyn DavMetaData>) })
    }
}

type Scratch = Arc<Mutex<HashMap<Principal, HashMap<String, Bytes>>>>;

/// Free space of the data directory, as last measured.
type QuotaCache = Arc<Mutex<Option<(Instant, Option<u64>)>>>;

/// The WebDAV filesystem: cheap to clone (dav-server clones it per request).
#[derive(Clone)]
pub struct PortalDavFs {
    portal: Portal,
    scratch: Scratch,
    quota: QuotaCache,
}

impl PortalDavFs {
    /// The filesystem over `portal`'s trees.
    pub fn new(portal: Portal) -> Self {
        PortalDavFs {
            portal,
            scratch: Scratch::default(),
            quota: QuotaCache::default(),
        }
    }

    fn tree(&self, ctx: &DavCtx<Principal>) -> Tree {
        self.portal
            .tree(Actor::new(ctx.principal, Channel::WebDav, Some(ctx.remote)))
    }

    fn scratch_get(&self, who: Principal, path: &str) -> Option<Bytes> {
        let s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        s.get(&who)
            .and_then(|m| m.get(&names::fold_key(path)).cloned())
    }

    fn scratch_put(&self, who: Principal, path: &str, data: Bytes) {
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let m = s.entry(who).or_default();
        if m.len() >= SCRATCH_FILES && !m.contains_key(&names::fold_key(path)) {
            // Full: forget an arbitrary old entry (junk is disposable by definition).
            if let Some(k) = m.keys().next().cloned() {
                m.remove(&k);
            }
        }
        m.insert(names::fold_key(path), data);
    }

    fn scratch_remove(&self, who: Principal, path: &str) -> bool {
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        s.get_mut(&who)
            .is_some_and(|m| m.remove(&names::fold_key(path)).is_some())
    }

    /// The node's dead properties, from this request's memory or one tree read.
    async fn node_props(&self, p: &str, ctx: &DavCtx<Principal>) -> FsResult<Vec<DeadProp>> {
        let key = key_of(p);
        if let Some(props) = ctx.node(&key).and_then(|n| n.props) {
            return Ok(props);
        }
        let props = match self.tree(ctx).props(p).await {
            Ok(v) => v,
            Err(e) => return fail(ctx, e),
        };
        ctx.remember(&key, |n| n.props = Some(props.clone()));
        Ok(props)
    }

    /// The properties a client may see: the adapter's own are hidden, `oc:checksums` only while
    /// bound to the current content.
    async fn served_props(&self, p: &str, ctx: &DavCtx<Principal>) -> FsResult<Vec<DeadProp>> {
        let props = self.node_props(p, ctx).await?;
        let sha = ctx.node(&key_of(p)).and_then(|n| n.sha256);
        let bound = props
            .iter()
            .find(|d| d.namespace.as_deref() == Some(SDX_NS) && d.name == BINDING)
            .and_then(|d| d.xml.as_deref())
            .and_then(|x| xmltree::Element::parse(x).ok())
            .and_then(|e| e.get_text().map(|t| t.trim().to_ascii_lowercase()));
        let valid = matches!((sha, bound), (Some(s), Some(b)) if hex::encode(s) == b);
        Ok(props
            .into_iter()
            .filter(|d| d.namespace.as_deref() != Some(SDX_NS))
            .filter(|d| valid || !(d.namespace.as_deref() == Some(OC_NS) && d.name == "checksums"))
            .collect())
    }

    /// Free bytes of the data directory (cached; `None` for an in-memory portal or on failure).
    async fn free_bytes(&self) -> Option<u64> {
        if let Some((at, v)) = *self.quota.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < QUOTA_TTL
        {
            return v;
        }
        let dir: PathBuf = self.portal.data_dir()?.to_path_buf();
        let measure = tokio::task::spawn_blocking(move || {
            rustix::fs::statvfs(&dir)
                .ok()
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        });
        let v = match tokio::time::timeout(QUOTA_WAIT, measure).await {
            Ok(Ok(v)) => v,
            _ => {
                tracing::warn!("free space of the data directory could not be measured in time");
                None
            }
        };
        *self.quota.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), v));
        v
    }
}

fn is_oc_checksums(d: &DavProp) -> bool {
    d.namespace.as_deref() == Some(OC_NS) && d.name == "checksums"
}

fn is_junk_path(path: &str) -> bool {
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .is_some_and(names::is_os_junk)
}

impl GuardedFileSystem<DavCtx<Principal>> for PortalDavFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            if is_junk_path(&p) {
                let who = tree.actor().principal;
                if options.write || options.create {
                    return Ok(Box::new(ScratchFile {
                        fs: self.clone(),
                        who,
                        path: p,
                        buf: Vec::new(),
                        pos: 0,
                        data: None,
                    }) as Box<dyn DavFile>);
                }
                let data = self.scratch_get(who, &p).ok_or(FsError::NotFound)?;
                return Ok(Box::new(ScratchFile {
                    fs: self.clone(),
                    who,
                    path: p,
                    buf: Vec::new(),
                    pos: 0,
                    data: Some(data),
                }) as Box<dyn DavFile>);
            }
            if options.write || options.create || options.create_new {
                let opts = WriteOptions {
                    truncate: options.truncate || !options.append,
                    create_new: options.create_new,
                };
                let stashed = (opts == WriteOptions::upload())
                    .then(|| ctx.take_write(&key_of(&p)))
                    .flatten();
                // dav-server opens with create+write for PUT; a plain write on a missing file is a create too.
                let up = match stashed {
                    Some(u) => u,
                    None => match tree.open_write(&p, opts).await {
                        Ok(u) => u,
                        Err(e) => return fail(ctx, e),
                    },
                };
                let hasher = (ctx.wants_checksums() && opts.truncate).then(Hasher::start);
                return Ok(Box::new(WriteFile {
                    up: Some(up),
                    pos: 0,
                    expect: options.size,
                    ctx: ctx.clone(),
                    hasher,
                    oc_checksum: options.checksum,
                }) as Box<dyn DavFile>);
            }
            if let Some((h, first)) = ctx.take_read(&key_of(&p)) {
                return Ok(Box::new(ReadFile {
                    h,
                    pos: 0,
                    first: (!first.is_empty()).then_some(first),
                }) as Box<dyn DavFile>);
            }
            match tree.open_read(&p).await {
                Ok(h) => Ok(Box::new(ReadFile {
                    h,
                    pos: 0,
                    first: None,
                }) as Box<dyn DavFile>),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            let live_only = ctx.live_props_only();
            let entries = match ctx.take_listing(&key_of(&p)) {
                Some(v) => v,
                None if live_only => match tree.list(&p).await {
                    Ok(v) => v
                        .into_iter()
                        .map(|entry| ListedEntry {
                            entry,
                            props: Vec::new(),
                        })
                        .collect(),
                    Err(e) => return fail(ctx, e),
                },
                None => match tree.list_with_props(&p).await {
                    Ok(v) => v,
                    Err(e) => return fail(ctx, e),
                },
            };
            let items: Vec<FsResult<Box<dyn DavDirEntry>>> = entries
                .into_iter()
                .map(|le| {
                    if !live_only {
                        let key = child_key(&p, &le.entry.name);
                        let sha = le.entry.sha256;
                        ctx.remember(&key, |n| {
                            n.sha256 = sha;
                            n.props = Some(le.props);
                        });
                    }
                    Ok(Box::new(DirEntry {
                        name: le.entry.name.clone(),
                        meta: Meta::of(&le.entry),
                    }) as Box<dyn DavDirEntry>)
                })
                .collect();
            Ok(Box::pin(futures_util::stream::iter(items)) as FsStream<Box<dyn DavDirEntry>>)
        })
    }

    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            if is_junk_path(&p) {
                let data = self
                    .scratch_get(tree.actor().principal, &p)
                    .ok_or(FsError::NotFound)?;
                return Ok(Box::new(Meta::file(data.len() as u64)) as Box<dyn DavMetaData>);
            }
            let key = key_of(&p);
            let method = ctx.method().clone();
            if ctx.is_plain_put() {
                // dav-server only needs to know whether the target exists before the upload
                // starts: open the upload now (its permission check is the one that counts, and
                // the upload is audited when it ends) instead of an audited stat first.
                return match tree.open_write(&p, WriteOptions::upload()).await {
                    Ok(up) => {
                        let exists = up.is_update();
                        ctx.stash_write(&key, up);
                        if exists {
                            Ok(Box::new(Meta::file(0)) as Box<dyn DavMetaData>)
                        } else {
                            Err(FsError::NotFound)
                        }
                    }
                    // Not a document (a folder, a missing parent…): described below.
                    Err(Error::Conflict(_) | Error::NotFound(_)) => match tree.stat(&p).await {
                        Ok(e) => Ok(Box::new(Meta::of(&e)) as Box<dyn DavMetaData>),
                        Err(e) => fail(ctx, e),
                    },
                    Err(e) => fail(ctx, e),
                };
            }
            if method == http::Method::GET || method == http::Method::HEAD {
                // dav-server asks for the metadata and then opens the document: open it now,
                // one audited read instead of a stat and a read. A GET of the whole document
                // also gets its first chunk, read while the audit entry is committed.
                let prefetch = if method == http::Method::GET && !ctx.is_ranged() {
                    PREFETCH
                } else {
                    0
                };
                match tree.open_read_prefetch(&p, prefetch).await {
                    Ok((h, first)) => {
                        let m = Meta::of(h.entry());
                        ctx.stash_read(&key, h, first);
                        return Ok(Box::new(m) as Box<dyn DavMetaData>);
                    }
                    // A folder: described below.
                    Err(Error::Invalid(_)) => {}
                    Err(e) => return fail(ctx, e),
                }
            }
            if method.as_str() == "PROPFIND" && ctx.propfind_children() {
                // The node and its children in one read, audited once (a `List` for a folder);
                // `read_dir` takes the children from the request.
                let live_only = ctx.live_props_only();
                let wanted = if live_only {
                    PropsWanted::No
                } else {
                    PropsWanted::All
                };
                return match tree.stat_and_list(&p, wanted).await {
                    Ok(l) => {
                        let m = Meta::of(&l.node.entry);
                        if !live_only {
                            let sha = l.node.entry.sha256;
                            let props = l.node.props;
                            ctx.remember(&key, |n| {
                                n.sha256 = sha;
                                n.props = Some(props);
                            });
                        }
                        if let Some(children) = l.children {
                            ctx.stash_listing(&key, children);
                        }
                        Ok(Box::new(m) as Box<dyn DavMetaData>)
                    }
                    Err(e) => fail(ctx, e),
                };
            }
            if method.as_str() == "PROPFIND" && ctx.live_props_only() {
                return match tree.stat(&p).await {
                    Ok(e) => Ok(Box::new(Meta::of(&e)) as Box<dyn DavMetaData>),
                    Err(e) => fail(ctx, e),
                };
            }
            if method.as_str() == "PROPFIND" {
                // The properties come with the node (one audited read).
                return match tree.stat_with_props(&p).await {
                    Ok(le) => {
                        let m = Meta::of(&le.entry);
                        let sha = le.entry.sha256;
                        ctx.remember(&key, |n| {
                            n.sha256 = sha;
                            n.props = Some(le.props);
                        });
                        Ok(Box::new(m) as Box<dyn DavMetaData>)
                    }
                    Err(e) => fail(ctx, e),
                };
            }
            match tree.stat(&p).await {
                Ok(e) => {
                    if e.sha256.is_some() {
                        ctx.remember(&key, |n| n.sha256 = e.sha256);
                    }
                    Ok(Box::new(Meta::of(&e)) as Box<dyn DavMetaData>)
                }
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, ctx: &'a DavCtx<Principal>) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            match tree.mkdir(&p).await {
                Ok(_) => Ok(()),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, ctx: &'a DavCtx<Principal>) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            match tree.delete(&p).await {
                Ok(()) => Ok(()),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn remove_file<'a>(
        &'a self,
        path: &'a DavPath,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            if is_junk_path(&p) {
                return if self.scratch_remove(tree.actor().principal, &p) {
                    Ok(())
                } else {
                    Err(FsError::NotFound)
                };
            }
            match tree.delete(&p).await {
                Ok(()) => Ok(()),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn rename<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let (a, b) = (path_str(from)?, path_str(to)?);
            if is_junk_path(&a) || is_junk_path(&b) {
                let who = tree.actor().principal;
                let data = self.scratch_get(who, &a).ok_or(FsError::NotFound)?;
                self.scratch_remove(who, &a);
                if !is_junk_path(&b) {
                    // A junk file renamed to a real name becomes a real upload.
                    let r = async {
                        let mut up = tree.open_write(&b, WriteOptions::upload()).await?;
                        up.write(&data).await?;
                        up.commit().await
                    }
                    .await;
                    if let Err(e) = r {
                        return fail(ctx, e);
                    }
                } else {
                    self.scratch_put(who, &b, data);
                }
                return Ok(());
            }
            // dav-server removes an existing target first when Overwrite: T, so overwrite here is
            // only reached for races; allow it (the policy still requires Update).
            match tree.rename(&a, &b, true).await {
                Ok(()) => Ok(()),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn copy<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let (a, b) = (path_str(from)?, path_str(to)?);
            match tree.copy(&a, &b, true).await {
                Ok(()) => Ok(()),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn set_modified<'a>(
        &'a self,
        path: &'a DavPath,
        tm: SystemTime,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            if is_junk_path(&p) {
                return Ok(());
            }
            match tree.set_modified(&p, to_millis(tm)).await {
                Ok(()) => Ok(()),
                Err(e) => fail(ctx, e),
            }
        })
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
        _ctx: &'a DavCtx<Principal>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async { true })
    }

    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, Vec<DavProp>> {
        Box::pin(async move {
            let p = path_str(path)?;
            if is_junk_path(&p) {
                return Ok(Vec::new());
            }
            let props = self.served_props(&p, ctx).await?;
            Ok(props
                .into_iter()
                .map(|d| DavProp {
                    name: d.name,
                    prefix: d.prefix,
                    namespace: d.namespace,
                    xml: if do_content { d.xml } else { None },
                })
                .collect())
        })
    }

    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let p = path_str(path)?;
            if is_junk_path(&p) {
                return Err(FsError::NotFound);
            }
            let props = self.served_props(&p, ctx).await?;
            props
                .into_iter()
                .find(|d| d.name == prop.name && d.namespace == prop.namespace)
                .and_then(|d| d.xml)
                .ok_or(FsError::NotFound)
        })
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        ctx: &'a DavCtx<Principal>,
    ) -> FsFuture<'a, Vec<(http::StatusCode, DavProp)>> {
        Box::pin(async move {
            let p = path_str(path)?;
            let reserved =
                |d: &DavProp| d.namespace.as_deref() == Some(SDX_NS) || is_oc_checksums(d);
            if patch.iter().any(|(_, d)| reserved(d)) {
                // All or nothing (RFC 4918 §9.2): the reserved ones are forbidden, the rest fail
                // with them.
                ctx.refuse(
                    None,
                    "oc:checksums is computed by the server and can't be set by a client.",
                );
                return Ok(patch
                    .into_iter()
                    .map(|(_, d)| {
                        let s = if reserved(&d) {
                            http::StatusCode::FORBIDDEN
                        } else {
                            http::StatusCode::FAILED_DEPENDENCY
                        };
                        (s, DavProp { xml: None, ..d })
                    })
                    .collect());
            }
            let changes: Vec<DeadProp> = patch
                .iter()
                .map(|(set, d)| DeadProp {
                    name: d.name.clone(),
                    prefix: d.prefix.clone(),
                    namespace: d.namespace.clone(),
                    xml: if *set { d.xml.clone() } else { None },
                })
                .collect();
            let status = if is_junk_path(&p) {
                http::StatusCode::OK
            } else {
                let r = self.tree(ctx).patch_props(&p, changes).await;
                ctx.remember(&key_of(&p), |n| n.props = None);
                match r {
                    Ok(()) => http::StatusCode::OK,
                    Err(e) if e.is_not_found() => return Err(FsError::NotFound),
                    Err(e) if e.is_denied() => {
                        ctx.refuse(None, capitalised(&e.to_string()));
                        http::StatusCode::FORBIDDEN
                    }
                    Err(Error::TooLarge(m)) => {
                        ctx.refuse(None, format!("Limit exceeded: {m}."));
                        http::StatusCode::INSUFFICIENT_STORAGE
                    }
                    Err(e) => return fail(ctx, e),
                }
            };
            Ok(patch
                .into_iter()
                .map(|(_, d)| (status, DavProp { xml: None, ..d }))
                .collect())
        })
    }

    fn get_quota<'a>(&'a self, _ctx: &'a DavCtx<Principal>) -> FsFuture<'a, (u64, Option<u64>)> {
        Box::pin(async move { Ok((0, self.free_bytes().await)) })
    }
}

#[derive(Debug)]
struct ReadFile {
    h: ReadHandle,
    pos: u64,
    /// Bytes already read from the start of the document (a GET's first chunk).
    first: Option<Bytes>,
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m = Meta::of(self.h.entry());
        Box::pin(async move { Ok(Box::new(m) as Box<dyn DavMetaData>) })
    }
    fn write_buf(&mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(async { Err(FsError::Forbidden) })
    }
    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async { Err(FsError::Forbidden) })
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(async move {
            if let Some(first) = self.first.take()
                && let Ok(at) = usize::try_from(self.pos)
                && at < first.len()
            {
                let end = first.len().min(at.saturating_add(count));
                let b = first.slice(at..end);
                self.pos += b.len() as u64;
                if end < first.len() {
                    self.first = Some(first);
                }
                return Ok(b);
            }
            let b = self
                .h
                .read_at(self.pos, count)
                .await
                .map_err(|e| fs_error(&e))?;
            self.pos += b.len() as u64;
            Ok(b)
        })
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        Box::pin(async move {
            self.pos = seek_to(self.pos, self.h.len(), pos)?;
            Ok(self.pos)
        })
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

fn seek_to(cur: u64, len: u64, pos: SeekFrom) -> FsResult<u64> {
    let target = match pos {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => cur.checked_add_signed(d),
    };
    target.ok_or(FsError::GeneralFailure)
}

/// MD5, SHA-1 and SHA-256 of an upload.
struct Sums {
    md5: [u8; 16],
    sha1: Vec<u8>,
    sha256: Vec<u8>,
}

/// Hashes an upload's bytes on a blocking thread while it streams (the async task only queues
/// reference-counted chunks; the queue is bounded).
struct Hasher {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    done: tokio::task::JoinHandle<Sums>,
}

impl Hasher {
    fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            let mut md5 = md5::Context::new();
            let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
            let mut sha256 = ring::digest::Context::new(&ring::digest::SHA256);
            while let Some(b) = rx.blocking_recv() {
                md5.consume(&b);
                sha1.update(&b);
                sha256.update(&b);
            }
            Sums {
                md5: md5.finalize().0,
                sha1: sha1.finish().as_ref().to_vec(),
                sha256: sha256.finish().as_ref().to_vec(),
            }
        });
        Hasher { tx: Some(tx), done }
    }

    async fn feed(&mut self, b: Bytes) {
        if let Some(tx) = &self.tx
            && tx.send(b).await.is_err()
        {
            self.tx = None;
        }
    }

    async fn finish(mut self) -> Option<Sums> {
        self.tx = None;
        (&mut self.done).await.ok()
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // Closing the queue ends the thread; nothing waits for it.
        self.tx = None;
    }
}

/// Checks an `OC-Checksum` header (`SHA1:…`, `MD5:…`; other kinds are not checked).
fn checksum_mismatch(header: &str, sums: &Sums) -> Option<String> {
    let (kind, want) = header.trim().split_once(':')?;
    let got = if kind.eq_ignore_ascii_case("SHA1") {
        hex::encode(&sums.sha1)
    } else if kind.eq_ignore_ascii_case("MD5") {
        hex::encode(sums.md5)
    } else if kind.eq_ignore_ascii_case("SHA256") {
        hex::encode(&sums.sha256)
    } else {
        return None;
    };
    let want = want.trim().to_ascii_lowercase();
    (want != got).then(|| {
        format!(
            "The uploaded content does not match the OC-Checksum header: {kind} {want} was announced, {got} arrived. Nothing was stored."
        )
    })
}

/// The dead properties an ownCloud client reads back: `oc:checksums` and its binding.
fn checksum_props(sums: &Sums) -> Vec<DeadProp> {
    let value = format!(
        "SHA1:{} MD5:{}",
        hex::encode(&sums.sha1),
        hex::encode(sums.md5)
    );
    vec![
        DeadProp {
            namespace: Some(OC_NS.into()),
            prefix: Some("oc".into()),
            name: "checksums".into(),
            xml: Some(
                format!(
                    "<oc:checksums xmlns:oc=\"{OC_NS}\"><oc:checksum>{value}</oc:checksum></oc:checksums>"
                )
                .into_bytes(),
            ),
        },
        DeadProp {
            namespace: Some(SDX_NS.into()),
            prefix: Some("sdx".into()),
            name: BINDING.into(),
            xml: Some(
                format!(
                    "<sdx:{BINDING} xmlns:sdx=\"{SDX_NS}\">{}</sdx:{BINDING}>",
                    hex::encode(&sums.sha256)
                )
                .into_bytes(),
            ),
        },
    ]
}

struct WriteFile {
    up: Option<Upload>,
    pos: u64,
    expect: Option<u64>,
    ctx: DavCtx<Principal>,
    hasher: Option<Hasher>,
    oc_checksum: Option<String>,
}

impl std::fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFile")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl WriteFile {
    async fn put(&mut self, data: Bytes) -> FsResult<()> {
        let up = self.up.as_mut().ok_or(FsError::GeneralFailure)?;
        let sequential = self.pos == up.len();
        let r = if sequential {
            up.write(&data).await
        } else {
            up.write_at(self.pos, &data).await
        };
        if let Err(e) = r {
            return fail(&self.ctx, e);
        }
        self.pos += data.len() as u64;
        if !sequential {
            // Checksums are computed for plain front-to-back uploads only.
            self.hasher = None;
        }
        if let Some(h) = &mut self.hasher {
            h.feed(data).await;
        }
        Ok(())
    }
}

impl DavFile for WriteFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        Box::pin(async move {
            match &self.up {
                Some(u) => Ok(Box::new(Meta::file(u.len())) as Box<dyn DavMetaData>),
                None => Err(FsError::GeneralFailure),
            }
        })
    }
    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(async move {
            let n = buf.remaining();
            self.put(buf.copy_to_bytes(n)).await
        })
    }
    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async move { self.put(buf).await })
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(async move {
            let up = self.up.as_mut().ok_or(FsError::GeneralFailure)?;
            let b = match up.read_at(self.pos, count).await {
                Ok(b) => b,
                Err(e) => return fail(&self.ctx, e),
            };
            self.pos += b.len() as u64;
            Ok(b)
        })
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        Box::pin(async move {
            let len = self.up.as_ref().map(|u| u.len()).unwrap_or(0);
            self.pos = seek_to(self.pos, len, pos)?;
            Ok(self.pos)
        })
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(async move {
            let Some(mut up) = self.up.take() else {
                return Ok(());
            };
            if let Some(n) = self.expect
                && up.len() != n
            {
                // The body ended early (or ran long): never make a partial document visible.
                let got = up.len();
                let _ = up.abort().await;
                self.ctx.refuse(
                    Some(StatusCode::BAD_REQUEST),
                    format!(
                        "The upload is incomplete: {got} of the {n} bytes announced arrived. Nothing was stored."
                    ),
                );
                return Err(FsError::GeneralFailure);
            }
            if let Some(t) = self.ctx.oc_mtime() {
                up.set_modified(to_millis(t));
            }
            if let Some(h) = self.hasher.take()
                && let Some(sums) = h.finish().await
            {
                if let Some(why) = self
                    .oc_checksum
                    .as_deref()
                    .and_then(|c| checksum_mismatch(c, &sums))
                {
                    let _ = up.abort().await;
                    self.ctx.refuse(Some(StatusCode::BAD_REQUEST), why);
                    return Err(FsError::GeneralFailure);
                }
                up.set_props(checksum_props(&sums));
            }
            match up.commit().await {
                Ok(_) => Ok(()),
                Err(e) => fail(&self.ctx, e),
            }
        })
    }
}

#[derive(Debug)]
struct ScratchFile {
    fs: PortalDavFs,
    who: Principal,
    path: String,
    buf: Vec<u8>,
    pos: usize,
    data: Option<Bytes>,
}

impl std::fmt::Debug for PortalDavFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalDavFs").finish_non_exhaustive()
    }
}

impl DavFile for ScratchFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let len = self
            .data
            .as_ref()
            .map(|d| d.len())
            .unwrap_or(self.buf.len()) as u64;
        Box::pin(async move { Ok(Box::new(Meta::file(len)) as Box<dyn DavMetaData>) })
    }
    fn write_buf(&mut self, buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(async move {
            let mut buf = buf;
            while buf.has_remaining() {
                let c = buf.chunk().to_vec();
                buf.advance(c.len());
                if self.buf.len() + c.len() > SCRATCH_FILE_BYTES {
                    return Err(FsError::TooLarge);
                }
                self.buf.extend_from_slice(&c);
            }
            Ok(())
        })
    }
    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async move {
            if self.buf.len() + buf.len() > SCRATCH_FILE_BYTES {
                return Err(FsError::TooLarge);
            }
            self.buf.extend_from_slice(&buf);
            Ok(())
        })
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(async move {
            let d = self.data.clone().unwrap_or_default();
            let start = self.pos.min(d.len());
            let end = start.saturating_add(count).min(d.len());
            self.pos = end;
            Ok(d.slice(start..end))
        })
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        Box::pin(async move {
            let len = self
                .data
                .as_ref()
                .map(|d| d.len())
                .unwrap_or(self.buf.len()) as u64;
            let p = seek_to(self.pos as u64, len, pos)?;
            self.pos = usize::try_from(p).map_err(|_| FsError::GeneralFailure)?;
            Ok(p)
        })
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(async move {
            if self.data.is_none() {
                self.fs.scratch_put(
                    self.who,
                    &self.path,
                    Bytes::from(std::mem::take(&mut self.buf)),
                );
            }
            Ok(())
        })
    }
}

//! dav-server's filesystem over the principal's tree.
//!
//! A translator only: every call becomes one [`Tree`] operation, which checks the permission and
//! writes the audit entry. dav-server hands each call the authenticated principal and the client's
//! address ([`DavCtx`]); the adapter turns them into that principal's [`Tree`] (channel `webdav`).
//!
//! OS junk (`.DS_Store`, `._*`, `Thumbs.db`, `desktop.ini`, `~$*`…, see [`crate::names::is_os_junk`])
//! never reaches the firm's folders: it is kept in a small per-login scratch area in memory (bounded,
//! lost on restart), served back to the same login only, never listed, never audited as an upload.

use super::server::DavCtx;
use crate::Portal;
use crate::model::{Actor, Channel, Millis, Principal};
use crate::tree::{DeadProp, Entry, ReadHandle, Tree, Upload, WriteOptions};
use crate::{Error, names};
use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

fn err<T>(e: Error) -> FsResult<T> {
    tracing::debug!(error = %e, "webdav operation refused");
    Err(fs_error(&e))
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

/// The WebDAV filesystem: cheap to clone (dav-server clones it per request).
#[derive(Clone)]
pub struct PortalDavFs {
    portal: Portal,
    scratch: Scratch,
}

impl PortalDavFs {
    /// The filesystem over `portal`'s trees.
    pub fn new(portal: Portal) -> Self {
        PortalDavFs {
            portal,
            scratch: Scratch::default(),
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
                // dav-server opens with create+write for PUT; a plain write on a missing file is a create too.
                let up = match tree.open_write(&p, opts).await {
                    Ok(u) => u,
                    Err(e) => return err(e),
                };
                return Ok(Box::new(WriteFile {
                    up: Some(up),
                    pos: 0,
                    expect: options.size,
                    tree: tree.clone(),
                }) as Box<dyn DavFile>);
            }
            match tree.open_read(&p).await {
                Ok(h) => Ok(Box::new(ReadFile { h, pos: 0 }) as Box<dyn DavFile>),
                Err(e) => err(e),
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
            let entries = match tree.list(&p).await {
                Ok(v) => v,
                Err(e) => return err(e),
            };
            let items: Vec<FsResult<Box<dyn DavDirEntry>>> = entries
                .iter()
                .map(|e| {
                    Ok(Box::new(DirEntry {
                        name: e.name.clone(),
                        meta: Meta::of(e),
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
            match tree.stat(&p).await {
                Ok(e) => Ok(Box::new(Meta::of(&e)) as Box<dyn DavMetaData>),
                Err(e) => err(e),
            }
        })
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, ctx: &'a DavCtx<Principal>) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            tree.mkdir(&p).await.map(|_| ()).or_else(err)
        })
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, ctx: &'a DavCtx<Principal>) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let tree = &self.tree(ctx);
            let p = path_str(path)?;
            tree.delete(&p).await.or_else(err)
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
            tree.delete(&p).await.or_else(err)
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
                    let mut up = tree
                        .open_write(&b, WriteOptions::upload())
                        .await
                        .or_else(err)?;
                    up.write(&data).await.or_else(err)?;
                    up.commit().await.or_else(err)?;
                } else {
                    self.scratch_put(who, &b, data);
                }
                return Ok(());
            }
            // dav-server removes an existing target first when Overwrite: T, so overwrite here is
            // only reached for races; allow it (the policy still requires Update).
            tree.rename(&a, &b, true).await.or_else(err)
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
            tree.copy(&a, &b, true).await.or_else(err)
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
            tree.set_modified(&p, to_millis(tm)).await.or_else(err)
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
            let props = self.tree(ctx).props(&p).await.or_else(err)?;
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
            let props = self.tree(ctx).props(&p).await.or_else(err)?;
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
                match self.tree(ctx).patch_props(&p, changes).await {
                    Ok(()) => http::StatusCode::OK,
                    Err(e) if e.is_not_found() => return Err(FsError::NotFound),
                    Err(e) if e.is_denied() => http::StatusCode::FORBIDDEN,
                    Err(Error::TooLarge(_)) => http::StatusCode::INSUFFICIENT_STORAGE,
                    Err(e) => return err(e),
                }
            };
            Ok(patch
                .into_iter()
                .map(|(_, d)| (status, DavProp { xml: None, ..d }))
                .collect())
        })
    }

    fn get_quota<'a>(&'a self, _ctx: &'a DavCtx<Principal>) -> FsFuture<'a, (u64, Option<u64>)> {
        Box::pin(async move { Ok((0, None)) })
    }
}

#[derive(Debug)]
struct ReadFile {
    h: ReadHandle,
    pos: u64,
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
            let b = self.h.read_at(self.pos, count).await.or_else(err)?;
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

struct WriteFile {
    up: Option<Upload>,
    pos: u64,
    expect: Option<u64>,
    tree: Tree,
}

impl std::fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFile")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl WriteFile {
    async fn put(&mut self, data: &[u8]) -> FsResult<()> {
        let up = self.up.as_mut().ok_or(FsError::GeneralFailure)?;
        let r = if self.pos == up.len() {
            up.write(data).await
        } else {
            up.write_at(self.pos, data).await
        };
        r.or_else(err)?;
        self.pos += data.len() as u64;
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
            while buf.has_remaining() {
                let chunk = buf.chunk().to_vec();
                buf.advance(chunk.len());
                self.put(&chunk).await?;
            }
            Ok(())
        })
    }
    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async move { self.put(&buf).await })
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(async move {
            let up = self.up.as_mut().ok_or(FsError::GeneralFailure)?;
            let b = up.read_at(self.pos, count).await.or_else(err)?;
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
            let Some(up) = self.up.take() else {
                return Ok(());
            };
            if let Some(n) = self.expect
                && up.len() != n
            {
                // The body ended early: never make a partial document visible.
                let _ = up.abort().await;
                return Err(FsError::GeneralFailure);
            }
            let _ = &self.tree;
            up.commit().await.map(|_| ()).or_else(err)
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

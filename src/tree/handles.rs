//! Open documents: streaming reads and staged uploads.

use super::{Entry, Tree, resolve};
use crate::audit::{AuditAction, NewEntry, Outcome};
use crate::blob::{BlobReader, StagedBlob};
use crate::model::*;
use crate::path::PortalPath;
use crate::policy;
use crate::{Error, Result};
use bytes::Bytes;

/// Largest single read served (front ends ask for at most this much at once).
pub const MAX_READ: usize = 4 << 20;

/// How [`Tree::open_write`] opens a document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Start empty (true, the usual upload) or from the current content (false: random-access
    /// edits such as sshfs's or a resumed upload).
    pub truncate: bool,
    /// Fail if the document exists (SFTP `O_EXCL`, WebDAV `If-None-Match: *`).
    pub create_new: bool,
}

impl WriteOptions {
    /// A plain upload: create or replace, starting empty.
    pub fn upload() -> Self {
        WriteOptions {
            truncate: true,
            create_new: false,
        }
    }
}

/// A document open for reading. Each read re-checks the Read permission if access rights changed
/// since the last check, so a revoked grant stops a download in progress.
pub struct ReadHandle {
    tree: Tree,
    entry: Entry,
    folder: FolderId,
    len: u64,
    source: Source,
    /// The document's first bytes, read at open ([`Tree::open_read_prefetch`]): reads inside
    /// them (and at or past the end) are answered without asking the blob store.
    prefix: Bytes,
    epoch: u64,
}

/// The opened blob: a blob open in the background with its first bytes, as
/// [`Tree::open_read_pipelined`] leaves it.
pub(crate) type Opening = tokio::task::JoinHandle<Result<(Box<dyn BlobReader>, Bytes)>>;

enum Source {
    Ready(Box<dyn BlobReader>),
    /// The `Read` audit entry is being committed and the blob opened: no byte is read before
    /// both are done.
    Opening(Opening),
    /// Opening failed (the first read returned why).
    Failed(String),
}

impl std::fmt::Debug for ReadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHandle")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl ReadHandle {
    pub(crate) fn new(
        tree: Tree,
        entry: Entry,
        folder: FolderId,
        reader: Box<dyn BlobReader>,
    ) -> Self {
        let len = reader.len();
        Self::with_source(tree, entry, folder, len, Source::Ready(reader))
    }

    /// A handle whose blob is still `opening`; `len` is the blob's length.
    pub(crate) fn opening(
        tree: Tree,
        entry: Entry,
        folder: FolderId,
        len: u64,
        opening: Opening,
    ) -> Self {
        Self::with_source(tree, entry, folder, len, Source::Opening(opening))
    }

    fn with_source(tree: Tree, entry: Entry, folder: FolderId, len: u64, source: Source) -> Self {
        let epoch = tree.portal.access_epoch();
        ReadHandle {
            tree,
            entry,
            folder,
            len,
            source,
            prefix: Bytes::new(),
            epoch,
        }
    }

    /// Keeps `prefix` (the document's first bytes) to answer reads inside it.
    pub(crate) fn with_prefix(mut self, prefix: Bytes) -> Self {
        self.prefix = prefix;
        self
    }

    /// What was opened.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Content length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the document is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `max` bytes (capped at `MAX_READ`, 4 MiB) at `offset`; empty at the end. The
    /// access check is repeated whenever access rights changed since the last one, even for
    /// bytes read ahead at open.
    pub async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
        self.wait_opened().await?;
        self.recheck().await?;
        let max = max.min(MAX_READ);
        if let Some(b) = self.read_in_prefix(offset, max) {
            return Ok(b);
        }
        match &mut self.source {
            Source::Ready(r) => r.read_at(offset, max).await,
            _ => Err(Error::Storage("internal: the document is not open".into())),
        }
    }

    /// Waits for a blob opened in the background (and its audit entry's commit).
    async fn wait_opened(&mut self) -> Result<()> {
        if let Source::Opening(task) = &mut self.source {
            let r = match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::from(e)),
            };
            match r {
                Ok((reader, prefix)) => {
                    self.source = Source::Ready(reader);
                    self.prefix = prefix;
                }
                Err(e) => {
                    self.source = Source::Failed(e.to_string());
                    return Err(e);
                }
            }
        }
        match &self.source {
            Source::Failed(why) => Err(Error::Storage(format!(
                "the document could not be opened: {why}"
            ))),
            _ => Ok(()),
        }
    }

    /// The answer to a read from the prefix read at open (or empty at or past the end), if it
    /// needs nothing else.
    fn read_in_prefix(&self, offset: u64, max: usize) -> Option<Bytes> {
        let len = self.len();
        if offset >= len || max == 0 {
            return Some(Bytes::new());
        }
        let end = len.min(offset.saturating_add(max as u64));
        if end > self.prefix.len() as u64 {
            return None;
        }
        // Both bounds are at most the prefix length (a usize), so the casts are exact.
        Some(self.prefix.slice(offset as usize..end as usize))
    }

    async fn recheck(&mut self) -> Result<()> {
        let now = self.tree.portal.access_epoch();
        if now == self.epoch {
            return Ok(());
        }
        let p = self.tree.actor.principal;
        let (Some(matter), folder) = (self.entry.matter, self.folder) else {
            return Err(Error::NotFound(self.entry.name.clone()));
        };
        let res = self
            .tree
            .portal
            .inner
            .store
            .read(move |db| {
                let acc = policy::matter_access(db, p, matter)?;
                let f = resolve::folder_by_id(db, &acc, folder)?;
                policy::require(f.perms(), Permission::Read, &f.path.to_string())
            })
            .await;
        match res {
            Ok(()) => {
                self.epoch = now;
                Ok(())
            }
            Err(e) => {
                let e = if e.is_not_found() {
                    Error::PermissionDenied {
                        permission: Permission::Read,
                        folder: "(access was withdrawn)".into(),
                    }
                } else {
                    e
                };
                self.tree
                    .portal
                    .audit(NewEntry {
                        actor: self.tree.actor.clone(),
                        matter: Some(matter),
                        document: self.entry.document,
                        object: self.entry.name.clone(),
                        action: AuditAction::Read,
                        outcome: Outcome::from_err(&e),
                    })
                    .await?;
                Err(e)
            }
        }
    }
}

/// An upload in progress. Nothing is visible until [`Upload::commit`]; dropping it (or
/// [`Upload::abort`]) discards it and audits the abandoned upload.
pub struct Upload {
    tree: Tree,
    path: PortalPath,
    action: AuditAction,
    matter: MatterId,
    staged: Option<Box<dyn StagedBlob>>,
    mtime: Option<Millis>,
    create_new: bool,
    props: Vec<super::DeadProp>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub(crate) fn new(
        tree: Tree,
        path: PortalPath,
        action: AuditAction,
        matter: MatterId,
        staged: Box<dyn StagedBlob>,
    ) -> Self {
        Upload {
            tree,
            path,
            action,
            matter,
            staged: Some(staged),
            mtime: None,
            create_new: false,
            props: Vec::new(),
        }
    }

    fn staged(&mut self) -> Result<&mut Box<dyn StagedBlob>> {
        self.staged
            .as_mut()
            .ok_or_else(|| Error::Conflict("the upload is already finished".into()))
    }

    /// The target path.
    pub fn path(&self) -> &PortalPath {
        &self.path
    }

    /// Whether this upload replaces an existing document.
    pub fn is_update(&self) -> bool {
        self.action == AuditAction::Update
    }

    /// Bytes staged so far.
    pub fn len(&self) -> u64 {
        self.staged.as_ref().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fail at commit if the document exists by then.
    pub fn set_create_new(&mut self, v: bool) {
        self.create_new = v;
    }

    /// The modification time to record (client-supplied, e.g. `X-OC-Mtime`).
    pub fn set_modified(&mut self, mtime: Millis) {
        self.mtime = Some(mtime);
    }

    /// Dead properties to set on the document in the same commit as its content (e.g. the
    /// checksums a WebDAV client asked for), merged into its existing ones. The usual limits on
    /// dead properties apply at commit; no separate audit entry.
    pub fn set_props(&mut self, props: Vec<super::DeadProp>) {
        self.props = props;
    }

    /// Appends data.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.staged()?.append(data).await
    }

    /// Writes at an offset.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.staged()?.write_at(offset, data).await
    }

    /// Reads back staged data.
    pub async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
        self.staged()?.read_at(offset, max.min(MAX_READ)).await
    }

    /// Truncates or extends.
    pub async fn set_len(&mut self, len: u64) -> Result<()> {
        self.staged()?.set_len(len).await
    }

    /// Makes the upload the document's new content (atomically), after re-checking the permission.
    pub async fn commit(mut self) -> Result<Entry> {
        let staged = self
            .staged
            .take()
            .ok_or_else(|| Error::Conflict("the upload is already finished".into()))?;
        let blob = match staged.commit().await {
            Ok(b) => b,
            Err(e) => {
                let _ = self
                    .tree
                    .audit_aborted(&self.path, self.action.clone(), self.matter, e.to_string())
                    .await;
                return Err(e);
            }
        };
        let res = self
            .tree
            .commit_upload(
                self.path.clone(),
                blob.clone(),
                self.mtime,
                self.create_new,
                std::mem::take(&mut self.props),
            )
            .await;
        if res.is_err() {
            // Not recorded: the blob is an orphan; remove it now (the next open would too).
            let _ = self
                .tree
                .portal
                .inner
                .blobs
                .remove(self.matter, &blob)
                .await;
        }
        res
    }

    /// Discards the upload.
    pub async fn abort(mut self) -> Result<()> {
        if let Some(s) = self.staged.take() {
            s.abort().await?;
            self.tree
                .audit_aborted(
                    &self.path,
                    self.action.clone(),
                    self.matter,
                    "upload cancelled".into(),
                )
                .await?;
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(s) = self.staged.take() {
            let tree = self.tree.clone();
            let path = self.path.clone();
            let action = self.action.clone();
            let matter = self.matter;
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = s.abort().await;
                    let _ = tree
                        .audit_aborted(
                            &path,
                            action,
                            matter,
                            "upload interrupted before it completed".into(),
                        )
                        .await;
                });
            }
        }
    }
}

//! The principal's tree: the path-based view both front ends serve.
//!
//! `/` lists the principal's matters; below a matter are its folders the principal can see, then
//! documents. Every operation here is one *policy point*: it resolves the path for the principal
//! ([`resolve`](mod@resolve)), checks exactly the permission the operation needs
//! ([`crate::policy`]), does the work and appends one audit entry — in the same commit for
//! changes, before returning for reads.
//!
//! | operation | permission checked |
//! |---|---|
//! | `stat` of `/`, a matter or a folder | visibility only |
//! | `stat` of a document | List on its folder |
//! | `list` of a folder | List (without it: only sub-folders, never documents) |
//! | `open_read` | Read |
//! | `open_write` of a new name | Create |
//! | `open_write` of an existing document | Update |
//! | `delete` of a document | Delete (moves it to the matter's trash) |
//! | `rename` | Delete at the source + Create at the target (+ Update if the target exists) |
//! | `copy` | Read at the source + Create at the target (+ Update if the target exists) |
//! | `set_modified` | Update, or Create if the principal wrote the current version |
//! | `mkdir`, `rmdir`, folder rename/copy | staff only |
//!
//! Open handles re-check when access changes ([`crate::Portal::access_epoch`]): a revoked grant stops
//! an open download on its next read and an upload at commit.

mod handles;
mod listing;
mod probes;
mod props;
mod reads;
pub mod resolve;

pub use handles::{ReadHandle, Upload, WriteOptions};
pub use listing::{NodeListing, PropsWanted};
pub use props::{DeadProp, ListedEntry};

use crate::audit::{self, AuditAction, NewEntry, Outcome};
use crate::blob::BlobRef;
use crate::crypto::Scope;
use crate::events::PortalEvent;
use crate::model::*;
use crate::path::PortalPath;
use crate::policy::{self, MatterAccess, Visibility};
use crate::store::records::*;
use crate::store::tables::{
    self, DOCUMENTS, FOLDERS, Key, LINKS, NAMES, VERSIONS, link_kind, name_kind,
};
use crate::store::{Db, Tx, WriteCtx};
use crate::{Error, Portal, Result};
use resolve::{FolderNode, Node, doc_name_key, folder_name_key, resolve};
use serde::Serialize;

/// [`Tree::open_write`]'s decision: the action to audit, the matter and document it names, and
/// the matter and base blob to stage from, or why not.
type WriteDecision = (
    AuditAction,
    Option<MatterId>,
    Option<DocumentId>,
    Result<(MatterId, Option<BlobRef>)>,
);

/// What kind of thing an [`Entry`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EntryKind {
    /// The principal's root.
    Root,
    /// A matter's folder.
    Matter,
    /// A folder.
    Folder,
    /// A document.
    Document,
}

/// One node of the tree as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Name (empty for the root).
    pub name: String,
    /// Kind.
    pub kind: EntryKind,
    /// Size in bytes (0 for folders).
    pub len: u64,
    /// Modification time.
    pub modified: Millis,
    /// Creation time.
    pub created: Millis,
    /// Changes whenever the content changes.
    pub etag: String,
    /// The principal's permissions here (for documents: on their folder).
    pub perms: Permissions,
    /// SHA-256 of the content (documents, from `stat`).
    pub sha256: Option<[u8; 32]>,
    /// The matter.
    pub matter: Option<MatterId>,
    /// The document.
    pub document: Option<DocumentId>,
}

impl Entry {
    /// Whether this is a folder-like node.
    pub fn is_dir(&self) -> bool {
        self.kind != EntryKind::Document
    }
}

fn dir_entry(
    name: &str,
    kind: EntryKind,
    created: Millis,
    tag: String,
    perms: Permissions,
    matter: Option<MatterId>,
) -> Entry {
    Entry {
        name: name.to_string(),
        kind,
        len: 0,
        modified: created,
        created,
        etag: tag,
        perms,
        sha256: None,
        matter,
        document: None,
    }
}

fn matter_entry(a: &MatterAccess) -> Entry {
    dir_entry(
        &a.rec.display,
        EntryKind::Matter,
        a.rec.created,
        format!("m{:x}-{:x}", a.matter.0, a.rec.created),
        Permissions::NONE,
        Some(a.matter),
    )
}

fn folder_entry(a: &MatterAccess, f: &FolderNode) -> Entry {
    dir_entry(
        &f.rec.name,
        EntryKind::Folder,
        f.rec.created,
        format!("f{:x}-{:x}", f.id.0, f.rec.created),
        f.perms(),
        Some(a.matter),
    )
}

fn doc_entry(
    a: &MatterAccess,
    f: &FolderNode,
    d: DocumentId,
    r: &DocumentRec,
    sha: Option<[u8; 32]>,
) -> Entry {
    Entry {
        name: r.name.clone(),
        kind: EntryKind::Document,
        len: r.len,
        modified: r.modified,
        created: r.created,
        etag: format!("{:x}-{}", d.0, r.current),
        perms: f.perms(),
        sha256: sha,
        matter: Some(a.matter),
        document: Some(d),
    }
}

pub(crate) fn version_key(m: MatterId, d: DocumentId, n: u32) -> Vec<u8> {
    Key::new().id(m.0).id(d.0).bytes(&n.to_be_bytes()).done()
}

/// A recorded blob reference as the blob store needs it to read: with its stored form when the
/// database keeps it (see [`BlobRef::inline`]).
pub(crate) fn readable_blob<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    mut blob: BlobRef,
) -> Result<BlobRef> {
    if let Some(data) = db
        .tx
        .get_raw(tables::BLOB_DATA, &tables::blob_data_key(m, blob.id))?
    {
        blob.inline = Some(bytes::Bytes::from(data));
    }
    Ok(blob)
}

pub(crate) fn current_version<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    d: DocumentId,
    r: &DocumentRec,
) -> Result<VersionRec> {
    db.need(
        VERSIONS,
        Scope::Matter(m),
        &version_key(m, d, r.current),
        "document version",
    )
}

/// The folder's permissions for the principal, with the error naming it.
pub(crate) fn need(f: &FolderNode, p: Permission) -> Result<()> {
    policy::require(f.perms(), p, &f.path.to_string())
}

/// Replacing a document's content needs Update, or only Create when the principal wrote the
/// current version and it is empty. Mounted drives (Windows, macOS, davfs2) create a file empty
/// and then upload its content, which a Create-only folder must allow; nothing is lost, since
/// the replaced version is empty (and kept in the history).
fn need_replace<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    f: &FolderNode,
    d: DocumentId,
    r: &DocumentRec,
    who: Principal,
) -> Result<()> {
    let update = need(f, Permission::Update);
    if update.is_ok() || r.len != 0 || need(f, Permission::Create).is_err() {
        return update;
    }
    if current_version(db, m, d, r)?.author == who {
        Ok(())
    } else {
        update
    }
}

/// [`Tree::open_write`] at a missing name: Create on its folder; the matter to stage in, no base.
fn create_at(
    acc: &MatterAccess,
    parent: &Option<FolderNode>,
) -> Result<(MatterId, Option<BlobRef>)> {
    need_at(parent, acc, Permission::Create).map(|_| (acc.matter, None))
}

fn need_at(parent: &Option<FolderNode>, acc: &MatterAccess, p: Permission) -> Result<()> {
    match parent {
        Some(f) => need(f, p),
        // The matter root holds folders only.
        None => Err(Error::PermissionDenied {
            permission: p,
            folder: format!(
                "/{} (documents go into one of its folders)",
                acc.rec.display
            ),
        }),
    }
}

/// Cuts an untrusted path for the audit trail.
pub(crate) fn object_of(path: &str) -> String {
    path.chars().take(1024).collect()
}

/// A principal's view of the portal. Cheap to clone; create one per connection or request.
#[derive(Clone, Debug)]
pub struct Tree {
    portal: Portal,
    actor: Actor,
    /// Audit entries of stat probes waiting for the next commit ([`Tree::with_deferred_probes`]).
    probes: Option<std::sync::Arc<probes::Pending>>,
}

/// Checks a name that is about to be created: canonical, and not taken by a folder or a live
/// document in `parent` (case-insensitively).
fn check_free<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    parent: Option<FolderId>,
    name: &str,
) -> Result<()> {
    if db
        .get_id(NAMES, &folder_name_key(db, m, parent, name))?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!("a folder named \"{name}\"")));
    }
    if let Some(f) = parent
        && db.get_id(NAMES, &doc_name_key(db, m, f, name))?.is_some()
    {
        return Err(Error::AlreadyExists(format!("a document named \"{name}\"")));
    }
    Ok(())
}

/// Records a new document or a new version of an existing one. Returns the entry.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_version(
    ctx: &mut WriteCtx<'_>,
    acc: &MatterAccess,
    folder: &FolderNode,
    existing: Option<(DocumentId, DocumentRec)>,
    name: &str,
    blob: BlobRef,
    actor: &Actor,
    mtime: Option<Millis>,
) -> Result<Entry> {
    let m = acc.matter;
    let now = now_millis();
    let modified = mtime.unwrap_or(now);
    let (d, rec, added) = match existing {
        Some((d, mut r)) => {
            r.last_version += 1;
            r.current = r.last_version;
            r.len = blob.len;
            r.modified = modified;
            (d, r, false)
        }
        None => {
            check_free(&ctx.db(), m, Some(folder.id), name)?;
            let d = DocumentId(ctx.new_id());
            ctx.put_id(NAMES, &doc_name_key(&ctx.db(), m, folder.id, name), d.0)?;
            (
                d,
                DocumentRec {
                    folder: folder.id,
                    name: name.to_string(),
                    current: 1,
                    last_version: 1,
                    len: blob.len,
                    modified,
                    created: now,
                    trashed: None,
                },
                true,
            )
        }
    };
    let sha = blob.sha256;
    if let Some(data) = &blob.inline {
        // A small blob the store left to the database: recorded in this same commit.
        ctx.put_raw(tables::BLOB_DATA, &tables::blob_data_key(m, blob.id), data)?;
    }
    ctx.put(
        VERSIONS,
        Scope::Matter(m),
        &version_key(m, d, rec.current),
        &VersionRec {
            blob,
            created: now,
            author: actor.principal,
            channel: actor.channel,
            mtime,
        },
    )?;
    ctx.put(DOCUMENTS, Scope::Matter(m), &tables::ids(&[m.0, d.0]), &rec)?;
    ctx.emit(if added {
        PortalEvent::DocumentAdded {
            matter: m,
            folder: folder.id,
            document: d,
            by: actor.principal,
        }
    } else {
        PortalEvent::DocumentUpdated {
            matter: m,
            folder: folder.id,
            document: d,
            by: actor.principal,
        }
    });
    Ok(doc_entry(acc, folder, d, &rec, Some(sha)))
}

/// Moves a live document to the matter's trash.
pub(crate) fn trash(
    ctx: &mut WriteCtx<'_>,
    m: MatterId,
    folder: &FolderNode,
    d: DocumentId,
    mut rec: DocumentRec,
    by: Principal,
) -> Result<()> {
    ctx.del(NAMES, &doc_name_key(&ctx.db(), m, folder.id, &rec.name))?;
    rec.trashed = Some(TrashInfo {
        at: now_millis(),
        by,
        folder_path: folder.names.clone(),
    });
    ctx.put(DOCUMENTS, Scope::Matter(m), &tables::ids(&[m.0, d.0]), &rec)?;
    ctx.put_raw(
        LINKS,
        &Key::kind(link_kind::TRASH).id(m.0).id(d.0).done(),
        &[],
    )?;
    ctx.emit(PortalEvent::DocumentDeleted {
        matter: m,
        document: d,
        by,
    });
    Ok(())
}

fn child_folders<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    acc: &MatterAccess,
    parent: Option<&FolderNode>,
) -> Result<Vec<FolderNode>> {
    let m = acc.matter;
    let prefix = Key::kind(name_kind::FOLDER)
        .id(m.0)
        .id(parent.map(|f| f.id.0).unwrap_or(0))
        .done();
    let mut out = Vec::new();
    for (_, v) in db.tx.scan_raw(NAMES, &prefix, usize::MAX)? {
        let Some(fid) = tables::id_from(&v) else {
            continue;
        };
        let n = resolve::folder_by_id(db, acc, FolderId(fid));
        match n {
            Ok(n) => out.push(n),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = parent;
    Ok(out)
}

fn child_docs<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    folder: FolderId,
) -> Result<Vec<(DocumentId, DocumentRec)>> {
    let prefix = Key::kind(name_kind::DOCUMENT).id(m.0).id(folder.0).done();
    let mut out = Vec::new();
    for (_, v) in db.tx.scan_raw(NAMES, &prefix, usize::MAX)? {
        let Some(d) = tables::id_from(&v) else {
            continue;
        };
        let r: DocumentRec = db.need(
            DOCUMENTS,
            Scope::Matter(m),
            &tables::ids(&[m.0, d]),
            "document",
        )?;
        out.push((DocumentId(d), r));
    }
    Ok(out)
}

/// Removes a folder and everything below it: documents go to the trash, folders are deleted.
fn remove_folder_tree(
    ctx: &mut WriteCtx<'_>,
    acc: &MatterAccess,
    f: &FolderNode,
    by: Principal,
) -> Result<()> {
    let m = acc.matter;
    for sub in child_folders(&ctx.db(), acc, Some(f))? {
        remove_folder_tree(ctx, acc, &sub, by)?;
    }
    for (d, r) in child_docs(&ctx.db(), m, f.id)? {
        trash(ctx, m, f, d, r, by)?;
    }
    ctx.del(
        NAMES,
        &folder_name_key(&ctx.db(), m, f.rec.parent, &f.rec.name),
    )?;
    ctx.del(FOLDERS, &tables::ids(&[m.0, f.id.0]))?;
    Ok(())
}

/// Copies a folder tree within a matter; documents share their blobs (same matter).
fn copy_folder_tree(
    ctx: &mut WriteCtx<'_>,
    acc: &MatterAccess,
    src: &FolderNode,
    parent: Option<FolderId>,
    name: &str,
    actor: &Actor,
) -> Result<()> {
    let m = acc.matter;
    check_free(&ctx.db(), m, parent, name)?;
    let id = FolderId(ctx.new_id());
    let rec = FolderRec {
        parent,
        name: name.to_string(),
        created: now_millis(),
    };
    ctx.put(FOLDERS, Scope::Matter(m), &tables::ids(&[m.0, id.0]), &rec)?;
    ctx.put_id(NAMES, &folder_name_key(&ctx.db(), m, parent, name), id.0)?;
    let node = resolve::folder_by_id(&ctx.db(), acc, id)?;
    for (d, r) in child_docs(&ctx.db(), m, src.id)? {
        let v = current_version(&ctx.db(), m, d, &r)?;
        put_version(
            ctx,
            acc,
            &node,
            None,
            &r.name,
            v.blob,
            actor,
            Some(r.modified),
        )?;
    }
    for sub in child_folders(&ctx.db(), acc, Some(src))? {
        copy_folder_tree(ctx, acc, &sub, Some(id), &sub.rec.name.clone(), actor)?;
    }
    Ok(())
}

/// Whether `inner` is `outer` or lies below it.
fn is_within<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    inner: Option<FolderId>,
    outer: FolderId,
) -> Result<bool> {
    let mut cur = inner;
    let mut steps = 0;
    while let Some(f) = cur {
        if f == outer {
            return Ok(true);
        }
        steps += 1;
        if steps > 64 {
            return Err(Error::Integrity("folder parents form a loop".into()));
        }
        let r: FolderRec = db.need(
            FOLDERS,
            Scope::Matter(m),
            &tables::ids(&[m.0, f.0]),
            "folder",
        )?;
        cur = r.parent;
    }
    Ok(false)
}

/// Where a listed node keeps its dead properties (see [`props`]).
pub(crate) type PropsKey = Option<(MatterId, Vec<u8>)>;

/// What `stat` shows of `node`, with the key of its dead properties.
fn stat_node<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    node: Node,
) -> (Result<(Entry, PropsKey)>, Option<Outcome>) {
    let r = match node {
        Node::Root => Ok((
            dir_entry(
                "",
                EntryKind::Root,
                0,
                "root".into(),
                Permissions::NONE,
                None,
            ),
            None,
        )),
        Node::Matter(a) => Ok((matter_entry(&a), None)),
        Node::Folder(a, f) => Ok((folder_entry(&a, &f), props::folder_key(a.matter, f.id))),
        Node::Document(a, f, d, r) => need(&f, Permission::List)
            .and_then(|_| current_version(db, a.matter, d, &r))
            .map(|v| {
                (
                    doc_entry(&a, &f, d, &r, Some(v.blob.sha256)),
                    props::document_key(a.matter, d),
                )
            }),
        Node::Missing(_, _, name) => Err(Error::NotFound(name)),
    };
    // A document hidden by a missing List permission looks like nothing at all.
    match r {
        Err(Error::PermissionDenied {
            permission: Permission::List,
            folder,
        }) => (
            Err(Error::NotFound(path_hint(&folder))),
            Some(Outcome::Denied(format!("no List permission on {folder}"))),
        ),
        other => (other, None),
    }
}

/// The children of `node` as `list` shows them, each with the key of its dead properties. With
/// `details`, documents carry the SHA-256 of their current version (one more read each).
fn list_node<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    p: Principal,
    node: Node,
    details: bool,
) -> (Result<Vec<(Entry, PropsKey)>>, Option<Outcome>) {
    match node {
        Node::Root => (
            policy::visible_matters(db, p)
                .map(|v| v.iter().map(|a| (matter_entry(a), None)).collect()),
            None,
        ),
        Node::Matter(a) => (
            child_folders(db, &a, None).map(|fs| {
                fs.iter()
                    .map(|f| (folder_entry(&a, f), props::folder_key(a.matter, f.id)))
                    .collect()
            }),
            None,
        ),
        Node::Folder(a, f) => {
            let mut out: Vec<(Entry, PropsKey)> = match child_folders(db, &a, Some(&f)) {
                Ok(fs) => fs
                    .iter()
                    .map(|s| (folder_entry(&a, s), props::folder_key(a.matter, s.id)))
                    .collect(),
                Err(e) => return (Err(e), None),
            };
            if f.vis == Visibility::Container || !f.perms().contains(Permission::List) {
                let why = format!("no List permission on {}: documents not shown", f.path);
                return (Ok(out), Some(Outcome::Denied(why)));
            }
            let docs = match child_docs(db, a.matter, f.id) {
                Ok(docs) => docs,
                Err(e) => return (Err(e), None),
            };
            for (d, r) in &docs {
                let sha = if details {
                    match current_version(db, a.matter, *d, r) {
                        Ok(v) => Some(v.blob.sha256),
                        Err(e) => return (Err(e), None),
                    }
                } else {
                    None
                };
                out.push((
                    doc_entry(&a, &f, *d, r, sha),
                    props::document_key(a.matter, *d),
                ));
            }
            (Ok(out), None)
        }
        Node::Document(..) => (Err(Error::Invalid("not a folder".into())), None),
        Node::Missing(_, _, name) => (Err(Error::NotFound(name)), None),
    }
}

impl Tree {
    pub(crate) fn new(portal: Portal, actor: Actor) -> Self {
        Tree {
            portal,
            actor,
            probes: None,
        }
    }

    /// Who this tree belongs to.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The portal.
    pub fn portal(&self) -> &Portal {
        &self.portal
    }

    async fn audit(
        &self,
        action: AuditAction,
        object: String,
        matter: Option<MatterId>,
        document: Option<DocumentId>,
        outcome: Outcome,
    ) -> Result<()> {
        let e = NewEntry {
            actor: self.actor.clone(),
            matter,
            document,
            object,
            action,
            outcome,
        };
        let mut entries = self.take_probes();
        entries.push(e);
        probes::commit_entries(&self.portal, entries).await
    }

    /// Runs a read-only operation: resolve + check in a read transaction, then the audit entry.
    pub(crate) async fn read_op<R, F>(&self, action: AuditAction, path: &str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_, redb::ReadTransaction>, Principal, Node) -> (Result<R>, Option<Outcome>)
            + Send
            + 'static,
    {
        let r = self.resolve_read(path, f).await?;
        let outcome = r.outcome();
        self.audit(action, object_of(path), r.matter, r.doc, outcome)
            .await?;
        r.res
    }

    /// The first half of [`Tree::read_op`]: parses `path`, resolves it for the principal in a read
    /// transaction and runs `f` on the node, without writing the audit entry (the caller does:
    /// at once, deferred or overlapped with other work, but always).
    pub(crate) async fn resolve_read<R, F>(&self, path: &str, f: F) -> Result<ResolvedRead<R>>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_, redb::ReadTransaction>, Principal, Node) -> (Result<R>, Option<Outcome>)
            + Send
            + 'static,
    {
        let p = self.actor.principal;
        let pp = match PortalPath::parse(path) {
            Ok(pp) => pp,
            Err(e) => return Ok(ResolvedRead::failed(e)),
        };
        self.portal
            .inner
            .store
            .read(move |db| {
                let node = match resolve(db, p, &pp) {
                    Ok(n) => n,
                    Err(e) => return Ok(ResolvedRead::failed(e)),
                };
                let (matter, doc) = (node.matter(), node.document());
                let (res, over) = f(db, p, node);
                Ok(ResolvedRead {
                    res,
                    matter,
                    doc,
                    over,
                })
            })
            .await
    }

    /// Runs a changing operation in one write job: resolve, check, change, audit, one commit.
    pub(crate) async fn write_op<R, F>(
        &self,
        action: AuditAction,
        object: String,
        paths: Vec<PortalPath>,
        mut f: F,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>, &Actor, Vec<Node>) -> Result<R> + Send + 'static,
    {
        let actor = self.actor.clone();
        let earlier = self.take_probes();
        self.portal
            .inner
            .store
            .write(move |ctx| {
                for e in &earlier {
                    audit::append(ctx, e.clone())?;
                }
                let mut nodes = Vec::with_capacity(paths.len());
                let mut res: Result<R> = Err(Error::NotFound(String::new()));
                let mut resolved = true;
                for p in &paths {
                    match resolve(&ctx.db(), actor.principal, p) {
                        Ok(n) => nodes.push(n),
                        Err(e) => {
                            res = Err(e);
                            resolved = false;
                            break;
                        }
                    }
                }
                let (m, d) = nodes
                    .first()
                    .map(|n| (n.matter(), n.document()))
                    .unwrap_or((None, None));
                if resolved {
                    res = f(ctx, &actor, nodes);
                }
                if let Err(e @ (Error::Storage(_) | Error::Io(_))) = res {
                    return Err(e);
                }
                audit::append(
                    ctx,
                    NewEntry {
                        actor: actor.clone(),
                        matter: m,
                        document: d,
                        object: object.clone(),
                        action: action.clone(),
                        outcome: Outcome::of(&res),
                    },
                )?;
                Ok(res)
            })
            .await?
    }

    async fn parse_or_audit(&self, action: &AuditAction, path: &str) -> Result<PortalPath> {
        match PortalPath::parse(path) {
            Ok(p) => Ok(p),
            Err(e) => {
                self.audit(
                    action.clone(),
                    object_of(path),
                    None,
                    None,
                    Outcome::from_err(&e),
                )
                .await?;
                Err(e)
            }
        }
    }

    /// Describes one node.
    pub async fn stat(&self, path: &str) -> Result<Entry> {
        self.read_op(AuditAction::Stat, path, |db, _p, node| {
            let (r, over) = stat_node(db, node);
            (r.map(|(e, _)| e), over)
        })
        .await
    }

    /// Lists a folder. Without List permission a folder lists only its visible sub-folders.
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>> {
        self.read_op(AuditAction::List, path, |db, p, node| {
            let (r, over) = list_node(db, p, node, false);
            (r.map(|v| v.into_iter().map(|(e, _)| e).collect()), over)
        })
        .await
    }

    /// Opens a document for reading (streaming, any offset).
    pub async fn open_read(&self, path: &str) -> Result<ReadHandle> {
        let (entry, blob, folder) = self
            .read_op(AuditAction::Read, path, |db, _p, node| {
                (readable_document(db, node), None)
            })
            .await?;
        let matter = entry
            .matter
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        let reader = self.portal.inner.blobs.open(matter, &blob).await?;
        Ok(ReadHandle::new(self.clone(), entry, folder, reader))
    }

    /// Opens a document for writing: a new name needs Create, an existing document Update.
    /// Nothing is visible until [`Upload::commit`].
    pub async fn open_write(&self, path: &str, opts: WriteOptions) -> Result<Upload> {
        let action_guess = AuditAction::Create;
        let pp = self.parse_or_audit(&action_guess, path).await?;
        // A name the session's last probe found missing, with nothing changed since: Create
        // on its folder decides, without a second read transaction.
        let decided = match self.probed_node(path) {
            Some(Node::Missing(a, parent, _)) => (
                AuditAction::Create,
                Some(a.matter),
                None,
                create_at(&a, &parent),
            ),
            _ => self.decide_write(pp.clone(), opts).await?,
        };
        let (action, matter, doc, res) = decided;
        match res {
            Err(e) => {
                self.audit(action, object_of(path), matter, doc, Outcome::from_err(&e))
                    .await?;
                Err(e)
            }
            Ok((m, base)) => {
                let staged = self.portal.inner.blobs.stage(m, base.as_ref()).await?;
                Ok(Upload::new(self.clone(), pp, action, m, staged))
            }
        }
    }

    /// [`Tree::open_write`]'s check in a read transaction: the action to audit, the matter and
    /// document, and the matter and base to stage from (or why not).
    async fn decide_write(&self, pp: PortalPath, opts: WriteOptions) -> Result<WriteDecision> {
        let p = self.actor.principal;
        self.portal
            .inner
            .store
            .read(move |db| {
                let node = match resolve(db, p, &pp) {
                    Ok(n) => n,
                    Err(e) => return Ok((AuditAction::Create, None, None, Err(e))),
                };
                let (m, d) = (node.matter(), node.document());
                let r = match node {
                    Node::Document(a, f, d, r) => {
                        if opts.create_new {
                            (
                                AuditAction::Create,
                                Err(Error::AlreadyExists(r.name.to_string())),
                            )
                        } else {
                            let base = if opts.truncate {
                                Ok(None)
                            } else {
                                current_version(db, a.matter, d, &r)
                                    .and_then(|v| readable_blob(db, a.matter, v.blob))
                                    .map(Some)
                            };
                            (
                                AuditAction::Update,
                                need_replace(db, a.matter, &f, d, &r, p)
                                    .and(base)
                                    .map(|b| (a.matter, b)),
                            )
                        }
                    }
                    Node::Missing(a, parent, _) => (AuditAction::Create, create_at(&a, &parent)),
                    _ => (
                        AuditAction::Create,
                        Err(Error::Conflict("that is a folder".into())),
                    ),
                };
                Ok((r.0, m, d, r.1))
            })
            .await
    }

    /// Commits a staged upload: re-checks the permission, records the version, audits. Used by
    /// [`Upload::commit`].
    pub(crate) async fn commit_upload(
        &self,
        path: PortalPath,
        blob: BlobRef,
        mtime: Option<Millis>,
        create_new: bool,
        props: Vec<DeadProp>,
    ) -> Result<Entry> {
        let object = object_of(&path.to_string());
        let actor = self.actor.clone();
        let earlier = self.take_probes();
        self.portal
            .inner
            .store
            .write(move |ctx| {
                for e in &earlier {
                    audit::append(ctx, e.clone())?;
                }
                let node = resolve(&ctx.db(), actor.principal, &path);
                let (m, d) = node
                    .as_ref()
                    .map(|n| (n.matter(), n.document()))
                    .unwrap_or((None, None));
                let mut action = AuditAction::Create;
                let res = node.and_then(|node| match node {
                    Node::Document(a, f, d, r) => {
                        action = AuditAction::Update;
                        if create_new {
                            return Err(Error::AlreadyExists(r.name));
                        }
                        need_replace(&ctx.db(), a.matter, &f, d, &r, actor.principal)?;
                        put_version(
                            ctx,
                            &a,
                            &f,
                            Some((d, r.clone())),
                            &r.name,
                            blob.clone(),
                            &actor,
                            mtime,
                        )
                    }
                    Node::Missing(a, Some(f), name) => {
                        need(&f, Permission::Create)?;
                        put_version(ctx, &a, &f, None, &name, blob.clone(), &actor, mtime)
                    }
                    Node::Missing(a, None, _) => {
                        need_at(&None, &a, Permission::Create).map(|_| unreachable_entry())
                    }
                    _ => Err(Error::Conflict("that is a folder".into())),
                });
                let res = res.and_then(|e| {
                    if let (false, Some(m), Some(d)) = (props.is_empty(), e.matter, e.document) {
                        props::store(ctx, m, d, &props)?;
                    }
                    Ok(e)
                });
                if let Err(e @ (Error::Storage(_) | Error::Io(_))) = res {
                    return Err(e);
                }
                let d = d.or_else(|| res.as_ref().ok().and_then(|e| e.document));
                audit::append(
                    ctx,
                    NewEntry {
                        actor: actor.clone(),
                        matter: m,
                        document: d,
                        object: object.clone(),
                        action: action.clone(),
                        outcome: Outcome::of(&res),
                    },
                )?;
                Ok(res)
            })
            .await?
    }

    /// Audits an upload that never committed (cancelled, failed, connection lost).
    pub(crate) async fn audit_aborted(
        &self,
        path: &PortalPath,
        action: AuditAction,
        matter: MatterId,
        why: String,
    ) -> Result<()> {
        self.audit(
            action,
            object_of(&path.to_string()),
            Some(matter),
            None,
            Outcome::Failed(why),
        )
        .await
    }

    /// Deletes a document (to the matter's trash; needs Delete) or, for staff, a folder with
    /// everything in it (documents to the trash).
    pub async fn delete(&self, path: &str) -> Result<()> {
        let action = AuditAction::Delete;
        let pp = self.parse_or_audit(&action, path).await?;
        self.write_op(
            action,
            object_of(path),
            vec![pp],
            |ctx, actor, nodes| match nodes.into_iter().next() {
                Some(Node::Document(a, f, d, r)) => {
                    need(&f, Permission::Delete)?;
                    trash(ctx, a.matter, &f, d, r, actor.principal)
                }
                Some(Node::Folder(a, f)) => {
                    policy::require_staff(actor.principal, "deleting folders")?;
                    remove_folder_tree(ctx, &a, &f, actor.principal)
                }
                Some(Node::Missing(_, _, n)) => Err(Error::NotFound(n)),
                Some(Node::Matter(_)) => Err(Error::StaffOnly("matters are closed, not deleted")),
                _ => Err(Error::StaffOnly("the root can't be deleted")),
            },
        )
        .await
    }

    /// Creates a folder (staff only; portal users never create folders).
    pub async fn mkdir(&self, path: &str) -> Result<Entry> {
        let action = AuditAction::Mkdir;
        let pp = self.parse_or_audit(&action, path).await?;
        self.write_op(action, object_of(path), vec![pp], |ctx, actor, nodes| {
            policy::require_staff(actor.principal, "creating folders")?;
            match nodes.into_iter().next() {
                Some(Node::Missing(a, parent, name)) => {
                    let m = a.matter;
                    let pid = parent.as_ref().map(|f| f.id);
                    check_free(&ctx.db(), m, pid, &name)?;
                    let id = FolderId(ctx.new_id());
                    let rec = FolderRec {
                        parent: pid,
                        name: name.clone(),
                        created: now_millis(),
                    };
                    ctx.put(FOLDERS, Scope::Matter(m), &tables::ids(&[m.0, id.0]), &rec)?;
                    ctx.put_id(NAMES, &folder_name_key(&ctx.db(), m, pid, &name), id.0)?;
                    let node = resolve::folder_by_id(&ctx.db(), &a, id)?;
                    Ok(folder_entry(&a, &node))
                }
                Some(Node::Root) | Some(Node::Matter(_)) => Err(Error::Invalid(
                    "matters are created through the API, not as folders".into(),
                )),
                Some(_) => Err(Error::AlreadyExists("that name".to_string())),
                None => Err(Error::NotFound(String::new())),
            }
        })
        .await
    }

    /// Renames or moves a document (Delete at the source, Create at the target, Update too if the
    /// target exists and `overwrite`), or, for staff, a folder. Documents can't change matter.
    pub async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<()> {
        let action = AuditAction::Rename;
        let a = self.parse_or_audit(&action, from).await?;
        let b = self.parse_or_audit(&action, to).await?;
        let object = format!("{} -> {}", object_of(from), object_of(to));
        // The target's spelling as given: a case-only rename resolves to the document itself.
        let to_name = b.name().unwrap_or_default().to_string();
        self.write_op(action, object, vec![a, b], move |ctx, actor, nodes| {
            let mut it = nodes.into_iter();
            let (Some(src), Some(dst)) = (it.next(), it.next()) else {
                return Err(Error::NotFound(String::new()));
            };
            rename_nodes(ctx, actor, src, dst, overwrite, &to_name)
        })
        .await
    }

    /// Copies a document (Read at the source, Create at the target, Update too if the target exists
    /// and `overwrite`), or, for staff, a folder tree within a matter.
    pub async fn copy(&self, from: &str, to: &str, overwrite: bool) -> Result<()> {
        let action = AuditAction::Copy;
        let a = self.parse_or_audit(&action, from).await?;
        let b = self.parse_or_audit(&action, to).await?;
        let object = format!("{} -> {}", object_of(from), object_of(to));
        let cross = self
            .write_op(action, object, vec![a, b], move |ctx, actor, nodes| {
                let mut it = nodes.into_iter();
                let (Some(src), Some(dst)) = (it.next(), it.next()) else {
                    return Err(Error::NotFound(String::new()));
                };
                copy_nodes(ctx, actor, src, dst, overwrite)
            })
            .await?;
        if cross {
            // Across matters the content is re-encrypted under the target matter's key: stream it.
            let mut rd = self.open_read(from).await?;
            let mut up = self
                .open_write(
                    to,
                    WriteOptions {
                        truncate: true,
                        create_new: !overwrite,
                    },
                )
                .await?;
            let mut off = 0u64;
            loop {
                let chunk = rd.read_at(off, 1 << 20).await?;
                if chunk.is_empty() {
                    break;
                }
                off += chunk.len() as u64;
                up.write(&chunk).await?;
            }
            up.commit().await?;
        }
        Ok(())
    }

    /// Sets a document's modification time (clients preserving mtimes). Needs Update, or Create
    /// when the principal wrote the current version (so a drop-box upload can keep its date).
    pub async fn set_modified(&self, path: &str, mtime: Millis) -> Result<()> {
        let action = AuditAction::Update;
        let pp = self.parse_or_audit(&action, path).await?;
        self.write_op(
            action,
            format!("{} (modification time)", object_of(path)),
            vec![pp],
            move |ctx, actor, nodes| match nodes.into_iter().next() {
                Some(Node::Document(a, f, d, mut r)) => {
                    let m = a.matter;
                    let key = version_key(m, d, r.current);
                    let mut v: VersionRec =
                        ctx.db().need(VERSIONS, Scope::Matter(m), &key, "version")?;
                    if need(&f, Permission::Update).is_err() {
                        if v.author == actor.principal {
                            need(&f, Permission::Create)?
                        } else {
                            need(&f, Permission::Update)?
                        }
                    }
                    v.mtime = Some(mtime);
                    r.modified = mtime;
                    ctx.put(VERSIONS, Scope::Matter(m), &key, &v)?;
                    ctx.put(DOCUMENTS, Scope::Matter(m), &tables::ids(&[m.0, d.0]), &r)?;
                    Ok(())
                }
                Some(Node::Missing(_, _, n)) => Err(Error::NotFound(n)),
                // Folder times are derived; accepting the request keeps clients happy.
                Some(_) => Ok(()),
                None => Err(Error::NotFound(String::new())),
            },
        )
        .await
    }
}

fn unreachable_entry() -> Entry {
    dir_entry(
        "",
        EntryKind::Root,
        0,
        String::new(),
        Permissions::NONE,
        None,
    )
}

fn path_hint(folder: &str) -> String {
    format!("a document in {folder}")
}

fn rename_nodes(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    src: Node,
    dst: Node,
    overwrite: bool,
    to_name: &str,
) -> Result<()> {
    match (src, dst) {
        (Node::Document(a, fs, d, r), Node::Missing(b, parent, name)) => {
            if a.matter != b.matter {
                return Err(Error::Invalid(
                    "documents can't be moved between matters; copy them instead".into(),
                ));
            }
            need(&fs, Permission::Delete)?;
            need_at(&parent, &b, Permission::Create)?;
            let fd = parent.ok_or_else(|| Error::Invalid("documents go into a folder".into()))?;
            let m = a.matter;
            check_free(&ctx.db(), m, Some(fd.id), &name)?;
            ctx.del(NAMES, &doc_name_key(&ctx.db(), m, fs.id, &r.name))?;
            let mut r2 = r.clone();
            r2.folder = fd.id;
            r2.name = name.clone();
            ctx.put_id(NAMES, &doc_name_key(&ctx.db(), m, fd.id, &name), d.0)?;
            ctx.put(DOCUMENTS, Scope::Matter(m), &tables::ids(&[m.0, d.0]), &r2)?;
            Ok(())
        }
        (Node::Document(a, fs, d, r), Node::Document(b, fd, d2, r2)) => {
            if a.matter != b.matter {
                return Err(Error::Invalid(
                    "documents can't be moved between matters; copy them instead".into(),
                ));
            }
            let m = a.matter;
            if d == d2 {
                // Same document, other spelling (case change): just rename.
                need(&fs, Permission::Delete)?;
                need(&fd, Permission::Create)?;
                let name = to_name.to_string();
                let mut r3 = r.clone();
                ctx.del(NAMES, &doc_name_key(&ctx.db(), m, fs.id, &r.name))?;
                r3.name = name.clone();
                ctx.put_id(NAMES, &doc_name_key(&ctx.db(), m, fd.id, &name), d.0)?;
                ctx.put(DOCUMENTS, Scope::Matter(m), &tables::ids(&[m.0, d.0]), &r3)?;
                return Ok(());
            }
            if !overwrite {
                return Err(Error::AlreadyExists(r2.name.clone()));
            }
            need(&fs, Permission::Delete)?;
            need(&fd, Permission::Create)?;
            need(&fd, Permission::Update)?;
            // The target keeps its history and gets the source's content as a new version.
            let v = current_version(&ctx.db(), m, d, &r)?;
            put_version(
                ctx,
                &b,
                &fd,
                Some((d2, r2.clone())),
                &r2.name,
                v.blob,
                actor,
                Some(r.modified),
            )?;
            if r.last_version <= 1 {
                // Its only version lives on in the target: nothing is lost by removing it.
                ctx.del(NAMES, &doc_name_key(&ctx.db(), m, fs.id, &r.name))?;
                ctx.del(DOCUMENTS, &tables::ids(&[m.0, d.0]))?;
                ctx.del(VERSIONS, &version_key(m, d, 1))?;
                ctx.emit(PortalEvent::DocumentDeleted {
                    matter: m,
                    document: d,
                    by: actor.principal,
                });
            } else {
                trash(ctx, m, &fs, d, r, actor.principal)?;
            }
            Ok(())
        }
        (Node::Folder(a, f), Node::Missing(b, parent, name)) => {
            policy::require_staff(actor.principal, "moving folders")?;
            if a.matter != b.matter {
                return Err(Error::Invalid(
                    "folders can't be moved between matters".into(),
                ));
            }
            let m = a.matter;
            let pid = parent.as_ref().map(|p| p.id);
            if is_within(&ctx.db(), m, pid, f.id)? {
                return Err(Error::Conflict(
                    "a folder can't be moved into itself".into(),
                ));
            }
            check_free(&ctx.db(), m, pid, &name)?;
            ctx.del(
                NAMES,
                &folder_name_key(&ctx.db(), m, f.rec.parent, &f.rec.name),
            )?;
            let rec = FolderRec {
                parent: pid,
                name: name.clone(),
                created: f.rec.created,
            };
            ctx.put(
                FOLDERS,
                Scope::Matter(m),
                &tables::ids(&[m.0, f.id.0]),
                &rec,
            )?;
            ctx.put_id(NAMES, &folder_name_key(&ctx.db(), m, pid, &name), f.id.0)?;
            Ok(())
        }
        (Node::Folder(a, f), Node::Folder(b, t)) => {
            policy::require_staff(actor.principal, "moving folders")?;
            if f.id == t.id {
                if f.rec.name != to_name {
                    // Same folder, other spelling (case change): just rename.
                    let m = a.matter;
                    ctx.del(
                        NAMES,
                        &folder_name_key(&ctx.db(), m, f.rec.parent, &f.rec.name),
                    )?;
                    let rec = FolderRec {
                        name: to_name.to_string(),
                        ..f.rec.clone()
                    };
                    ctx.put(
                        FOLDERS,
                        Scope::Matter(m),
                        &tables::ids(&[m.0, f.id.0]),
                        &rec,
                    )?;
                    ctx.put_id(
                        NAMES,
                        &folder_name_key(&ctx.db(), m, rec.parent, to_name),
                        f.id.0,
                    )?;
                }
                return Ok(());
            }
            if !overwrite {
                return Err(Error::AlreadyExists(t.rec.name.clone()));
            }
            if a.matter != b.matter {
                return Err(Error::Invalid(
                    "folders can't be moved between matters".into(),
                ));
            }
            let (name, parent) = (t.rec.name.clone(), t.rec.parent);
            remove_folder_tree(ctx, &b, &t, actor.principal)?;
            let parent_node = match parent {
                Some(p) => Some(resolve::folder_by_id(&ctx.db(), &b, p)?),
                None => None,
            };
            let to = name.clone();
            rename_nodes(
                ctx,
                actor,
                Node::Folder(a, f),
                Node::Missing(b, parent_node, name),
                false,
                &to,
            )
        }
        (Node::Folder(..), Node::Document(..)) | (Node::Document(..), Node::Folder(..)) => Err(
            Error::Conflict("a document and a folder can't replace each other".into()),
        ),
        (Node::Missing(_, _, n), _) => Err(Error::NotFound(n)),
        (Node::Matter(_) | Node::Root, _) => {
            Err(Error::StaffOnly("matters are renamed through the API"))
        }
        (_, _) => Err(Error::Invalid("that is not a valid target".into())),
    }
}

/// Returns `true` when the copy crosses matters and must be streamed by the caller.
fn copy_nodes(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    src: Node,
    dst: Node,
    overwrite: bool,
) -> Result<bool> {
    match (src, dst) {
        (Node::Document(a, fs, d, r), dst @ (Node::Missing(..) | Node::Document(..))) => {
            need(&fs, Permission::Read)?;
            let (b, fd, existing, name) = match dst {
                Node::Missing(b, parent, name) => {
                    need_at(&parent, &b, Permission::Create)?;
                    let fd = parent
                        .ok_or_else(|| Error::Invalid("documents go into a folder".into()))?;
                    (b, fd, None, name)
                }
                Node::Document(b, fd, d2, r2) => {
                    if d2 == d {
                        return Err(Error::Conflict(
                            "source and target are the same document".into(),
                        ));
                    }
                    if !overwrite {
                        return Err(Error::AlreadyExists(r2.name.clone()));
                    }
                    need(&fd, Permission::Create)?;
                    need(&fd, Permission::Update)?;
                    let n = r2.name.clone();
                    (b, fd, Some((d2, r2)), n)
                }
                _ => return Err(Error::Invalid("that is not a valid target".into())),
            };
            if a.matter != b.matter {
                return Ok(true);
            }
            let v = current_version(&ctx.db(), a.matter, d, &r)?;
            put_version(
                ctx,
                &b,
                &fd,
                existing,
                &name,
                v.blob,
                actor,
                Some(r.modified),
            )?;
            Ok(false)
        }
        (Node::Folder(a, f), dst) => {
            policy::require_staff(actor.principal, "copying folders")?;
            let (b, parent, name) = match dst {
                Node::Missing(b, parent, name) => (b, parent, name),
                Node::Folder(b, t) => {
                    if !overwrite {
                        return Err(Error::AlreadyExists(t.rec.name.clone()));
                    }
                    if t.id == f.id {
                        return Err(Error::Conflict(
                            "source and target are the same folder".into(),
                        ));
                    }
                    let (name, parent) = (t.rec.name.clone(), t.rec.parent);
                    remove_folder_tree(ctx, &b, &t, actor.principal)?;
                    let pn = match parent {
                        Some(p) => Some(resolve::folder_by_id(&ctx.db(), &b, p)?),
                        None => None,
                    };
                    (b, pn, name)
                }
                _ => return Err(Error::Conflict("a folder can't replace a document".into())),
            };
            if a.matter != b.matter {
                return Err(Error::Invalid(
                    "folders can't be copied between matters".into(),
                ));
            }
            let pid = parent.as_ref().map(|p| p.id);
            if is_within(&ctx.db(), a.matter, pid, f.id)? {
                return Err(Error::Conflict(
                    "a folder can't be copied into itself".into(),
                ));
            }
            copy_folder_tree(ctx, &a, &f, pid, &name, actor)?;
            Ok(false)
        }
        (Node::Document(..), _) => Err(Error::Conflict("a document can't replace a folder".into())),
        (Node::Missing(_, _, n), _) => Err(Error::NotFound(n)),
        _ => Err(Error::Invalid("that can't be copied".into())),
    }
}

/// The checks of a read: the node is a document the principal may Read; its entry, current blob
/// and folder.
pub(crate) fn readable_document<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    node: Node,
) -> Result<(Entry, BlobRef, FolderId)> {
    match node {
        Node::Document(a, f, d, r) => need(&f, Permission::Read)
            .and_then(|_| current_version(db, a.matter, d, &r))
            .and_then(|v| {
                let entry = doc_entry(&a, &f, d, &r, Some(v.blob.sha256));
                Ok((entry, readable_blob(db, a.matter, v.blob)?, f.id))
            }),
        Node::Missing(_, _, n) => Err(Error::NotFound(n)),
        _ => Err(Error::Invalid(
            "a folder can't be read as a document".into(),
        )),
    }
}

/// What [`Tree::resolve_read`] found: the operation's result, where it happened (for the audit
/// entry) and the outcome to record when it is not simply that of the result.
pub(crate) struct ResolvedRead<R> {
    pub(crate) res: Result<R>,
    pub(crate) matter: Option<MatterId>,
    pub(crate) doc: Option<DocumentId>,
    pub(crate) over: Option<Outcome>,
}

impl<R> ResolvedRead<R> {
    fn failed(e: Error) -> Self {
        ResolvedRead {
            res: Err(e),
            matter: None,
            doc: None,
            over: None,
        }
    }
    /// The outcome to audit.
    pub(crate) fn outcome(&self) -> Outcome {
        self.over.clone().unwrap_or_else(|| Outcome::of(&self.res))
    }
}

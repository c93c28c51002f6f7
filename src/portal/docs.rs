//! Staff document management: versions, trash, restore, purge. Nothing a client does destroys
//! data; only staff purge.

use super::Portal;
use crate::crypto::Scope;
use crate::model::*;
use crate::store::records::*;
use crate::store::tables::{self, DOCUMENTS, FOLDERS, Key, LINKS, NAMES, VERSIONS, link_kind};
use crate::tree::resolve::{doc_name_key, folder_name_key};
use crate::tree::version_key;
use crate::{Error, Result};
use serde::Serialize;

/// One version of a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Version number (from 1).
    pub number: u32,
    /// Size.
    pub len: u64,
    /// SHA-256 of the content.
    pub sha256: String,
    /// Committed at.
    pub created: Millis,
    /// Author.
    pub author: Principal,
    /// Whether it is the current version.
    pub current: bool,
}

/// A document in a matter's trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrashedDocument {
    /// Document.
    pub document: DocumentId,
    /// Its name.
    pub name: String,
    /// The folder it was in (names from the matter root).
    pub folder_path: Vec<String>,
    /// When it was trashed.
    pub at: Millis,
    /// By whom.
    pub by: Principal,
}

fn doc_key(m: MatterId, d: DocumentId) -> Vec<u8> {
    tables::ids(&[m.0, d.0])
}

impl Portal {
    /// Lists a document's versions (staff only).
    pub async fn versions(
        &self,
        actor: &Actor,
        matter: MatterId,
        doc: DocumentId,
    ) -> Result<Vec<VersionInfo>> {
        self.admin_read(
            actor,
            "list_versions",
            Some(matter),
            format!("document {doc}"),
            move |db| {
                let r: DocumentRec = db.need(
                    DOCUMENTS,
                    Scope::Matter(matter),
                    &doc_key(matter, doc),
                    "document",
                )?;
                let all: Vec<(Vec<u8>, VersionRec)> = db.scan(
                    VERSIONS,
                    Scope::Matter(matter),
                    &doc_key(matter, doc),
                    usize::MAX,
                )?;
                Ok(all
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let n = k
                            .get(16..20)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_be_bytes)?;
                        Some(VersionInfo {
                            number: n,
                            len: v.blob.len,
                            sha256: hex::encode(v.blob.sha256),
                            created: v.created,
                            author: v.author,
                            current: n == r.current,
                        })
                    })
                    .collect())
            },
        )
        .await
    }

    /// Makes an old version current again by recording it as a new version (staff only).
    pub async fn restore_version(
        &self,
        actor: &Actor,
        matter: MatterId,
        doc: DocumentId,
        number: u32,
    ) -> Result<()> {
        let a = actor.clone();
        self.admin(
            actor,
            "restore_version",
            Some(matter),
            format!("document {doc} version {number}"),
            move |ctx| {
                let key = doc_key(matter, doc);
                let mut r: DocumentRec =
                    ctx.db()
                        .need(DOCUMENTS, Scope::Matter(matter), &key, "document")?;
                let v: VersionRec = ctx.db().need(
                    VERSIONS,
                    Scope::Matter(matter),
                    &version_key(matter, doc, number),
                    "version",
                )?;
                r.last_version += 1;
                r.current = r.last_version;
                r.len = v.blob.len;
                r.modified = now_millis();
                let nv = VersionRec {
                    created: now_millis(),
                    author: a.principal,
                    channel: a.channel,
                    ..v
                };
                ctx.put(
                    VERSIONS,
                    Scope::Matter(matter),
                    &version_key(matter, doc, r.current),
                    &nv,
                )?;
                ctx.put(DOCUMENTS, Scope::Matter(matter), &key, &r)?;
                Ok(())
            },
        )
        .await
    }

    /// Lists a matter's trash (staff only).
    pub async fn trash(&self, actor: &Actor, matter: MatterId) -> Result<Vec<TrashedDocument>> {
        self.admin_read(
            actor,
            "list_trash",
            Some(matter),
            String::new(),
            move |db| {
                let prefix = Key::kind(link_kind::TRASH).id(matter.0).done();
                let mut out = Vec::new();
                for k in db.scan_keys(LINKS, &prefix, usize::MAX)? {
                    let Some(d) = tables::id_at(&k, 9) else {
                        continue;
                    };
                    let r: Option<DocumentRec> = db.get(
                        DOCUMENTS,
                        Scope::Matter(matter),
                        &doc_key(matter, DocumentId(d)),
                    )?;
                    if let Some(DocumentRec {
                        name,
                        trashed: Some(t),
                        ..
                    }) = r
                    {
                        out.push(TrashedDocument {
                            document: DocumentId(d),
                            name,
                            folder_path: t.folder_path,
                            at: t.at,
                            by: t.by,
                        });
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    /// Restores a trashed document into its folder (recreated if it was removed). Fails if a
    /// document of that name exists there now (staff only).
    pub async fn restore_from_trash(
        &self,
        actor: &Actor,
        matter: MatterId,
        doc: DocumentId,
    ) -> Result<()> {
        self.admin(
            actor,
            "restore_from_trash",
            Some(matter),
            format!("document {doc}"),
            move |ctx| {
                let key = doc_key(matter, doc);
                let mut r: DocumentRec =
                    ctx.db()
                        .need(DOCUMENTS, Scope::Matter(matter), &key, "document")?;
                let t = r
                    .trashed
                    .clone()
                    .ok_or_else(|| Error::Conflict("the document is not in the trash".into()))?;
                let folder_path = t.folder_path.join("/");
                if !folder_path.is_empty() {
                    super::admin::instantiate_template(ctx, matter, &[folder_path])?;
                }
                // Walk to the folder.
                let mut parent: Option<FolderId> = None;
                for seg in &t.folder_path {
                    let id = ctx
                        .db()
                        .get_id(NAMES, &folder_name_key(&ctx.db(), matter, parent, seg))?
                        .ok_or_else(|| Error::NotFound(seg.clone()))?;
                    parent = Some(FolderId(id));
                }
                let folder =
                    parent.ok_or_else(|| Error::Conflict("the document had no folder".into()))?;
                ctx.db().need::<FolderRec>(
                    FOLDERS,
                    Scope::Matter(matter),
                    &tables::ids(&[matter.0, folder.0]),
                    "folder",
                )?;
                let nk = doc_name_key(&ctx.db(), matter, folder, &r.name);
                if ctx.db().get_id(NAMES, &nk)?.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "a document named \"{}\" in that folder",
                        r.name
                    )));
                }
                r.trashed = None;
                r.folder = folder;
                ctx.put(DOCUMENTS, Scope::Matter(matter), &key, &r)?;
                ctx.put_id(NAMES, &nk, doc.0)?;
                ctx.del(
                    LINKS,
                    &Key::kind(link_kind::TRASH).id(matter.0).id(doc.0).done(),
                )?;
                Ok(())
            },
        )
        .await
    }

    /// Destroys a trashed document and all its versions (staff only). Content shared with other
    /// versions (copies within the matter) is kept for them.
    pub async fn purge_document(
        &self,
        actor: &Actor,
        matter: MatterId,
        doc: DocumentId,
    ) -> Result<()> {
        let freed = self
            .admin(
                actor,
                "purge_document",
                Some(matter),
                format!("document {doc}"),
                move |ctx| {
                    let key = doc_key(matter, doc);
                    let r: DocumentRec =
                        ctx.db()
                            .need(DOCUMENTS, Scope::Matter(matter), &key, "document")?;
                    if r.trashed.is_none() {
                        return Err(Error::Conflict(
                            "only documents in the trash can be purged; delete it first".into(),
                        ));
                    }
                    let mine: Vec<(Vec<u8>, VersionRec)> =
                        ctx.db()
                            .scan(VERSIONS, Scope::Matter(matter), &key, usize::MAX)?;
                    let others: Vec<(Vec<u8>, VersionRec)> = ctx.db().scan(
                        VERSIONS,
                        Scope::Matter(matter),
                        &tables::ids(&[matter.0]),
                        usize::MAX,
                    )?;
                    let keep: std::collections::HashSet<_> = others
                        .iter()
                        .filter(|(k, _)| !k.starts_with(&key))
                        .map(|(_, v)| v.blob.id)
                        .collect();
                    let mut freed = Vec::new();
                    for (k, v) in mine {
                        ctx.del(VERSIONS, &k)?;
                        if !keep.contains(&v.blob.id)
                            && !freed
                                .iter()
                                .any(|b: &crate::blob::BlobRef| b.id == v.blob.id)
                        {
                            freed.push(v.blob);
                        }
                    }
                    for b in &freed {
                        // A small blob kept in the database goes with this commit.
                        ctx.del(tables::BLOB_DATA, &tables::blob_data_key(matter, b.id))?;
                    }
                    ctx.del(DOCUMENTS, &key)?;
                    ctx.del(
                        LINKS,
                        &Key::kind(link_kind::TRASH).id(matter.0).id(doc.0).done(),
                    )?;
                    Ok(freed)
                },
            )
            .await?;
        if !freed.is_empty() {
            // The purge must be durable before its blobs go: a crash must not bring back a
            // version whose file is deleted (batched durability; immediate returns at once).
            self.inner.store.sync().await?;
        }
        for b in freed {
            self.inner.blobs.remove(matter, &b).await?;
        }
        Ok(())
    }
}

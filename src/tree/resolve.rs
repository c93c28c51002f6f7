//! Path → node resolution inside one transaction, for one principal.
//!
//! Resolution applies visibility as it walks: a matter the principal can't see, or a folder hidden
//! from them, resolves as `NotFound` exactly like a name that does not exist, so nothing leaks.

use crate::crypto::Scope;
use crate::model::*;
use crate::names;
use crate::path::PortalPath;
use crate::policy::{self, MatterAccess, Visibility};
use crate::store::records::*;
use crate::store::tables::{self, DOCUMENTS, FOLDERS, Key, NAMES, name_kind};
use crate::store::{Db, Tx};
use crate::{Error, Result};

/// A folder reached by a path.
#[derive(Clone, Debug)]
pub struct FolderNode {
    /// Its id.
    pub id: FolderId,
    /// Its record.
    pub rec: FolderRec,
    /// Folded template path from the matter root (`client documents/tax returns`).
    pub tpath: String,
    /// Canonical names from the matter root.
    pub names: Vec<String>,
    /// How the principal sees it.
    pub vis: Visibility,
    /// The path in the principal's tree (for messages).
    pub path: PortalPath,
}

impl FolderNode {
    /// The principal's permissions here (none for containers).
    pub fn perms(&self) -> Permissions {
        match self.vis {
            Visibility::Folder(p) => p,
            _ => Permissions::NONE,
        }
    }
}

/// What a path names.
#[derive(Clone, Debug)]
pub enum Node {
    /// `/`: the principal's matters.
    Root,
    /// A matter's folder.
    Matter(MatterAccess),
    /// A folder.
    Folder(MatterAccess, FolderNode),
    /// A live document.
    Document(MatterAccess, FolderNode, DocumentId, DocumentRec),
    /// Nothing yet: the last segment `name` does not exist in `parent` (None = the matter root).
    Missing(MatterAccess, Option<FolderNode>, String),
}

impl Node {
    /// The matter concerned, if any.
    pub fn matter(&self) -> Option<MatterId> {
        match self {
            Node::Root => None,
            Node::Matter(a) | Node::Folder(a, _) | Node::Document(a, ..) | Node::Missing(a, ..) => {
                Some(a.matter)
            }
        }
    }
    /// The document concerned, if any.
    pub fn document(&self) -> Option<DocumentId> {
        match self {
            Node::Document(_, _, d, _) => Some(*d),
            _ => None,
        }
    }
}

/// Key of a folder's name in its parent.
pub fn folder_name_key<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    parent: Option<FolderId>,
    name: &str,
) -> Vec<u8> {
    Key::kind(name_kind::FOLDER)
        .id(m.0)
        .id(parent.map(|f| f.0).unwrap_or(0))
        .bytes(&db.ikey(Scope::Matter(m), &names::fold_key(name)))
        .done()
}

/// Key of a live document's name in its folder.
pub fn doc_name_key<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    folder: FolderId,
    name: &str,
) -> Vec<u8> {
    Key::kind(name_kind::DOCUMENT)
        .id(m.0)
        .id(folder.0)
        .bytes(&db.ikey(Scope::Matter(m), &names::fold_key(name)))
        .done()
}

/// Key of a matter's display name.
pub fn matter_display_key<T: Tx + ?Sized>(db: &Db<'_, T>, display: &str) -> Vec<u8> {
    Key::kind(name_kind::MATTER_DISPLAY)
        .bytes(&db.ikey(Scope::Global, &names::fold_key(display)))
        .done()
}

/// The matter named by a path's first segment, with the principal's access to it.
///
/// Looked up through the display-name index and then checked with [`policy::matter_access`] (for
/// everyone: staff and portal users alike), rather than by building every matter the principal can
/// see and searching it, which cost a portal user with many matters three record reads per matter
/// on every request (`cargo bench --bench policy`). A matter the principal can't see answers
/// exactly like a name that does not exist.
fn find_matter<T: Tx + ?Sized>(db: &Db<'_, T>, p: Principal, seg: &str) -> Result<MatterAccess> {
    let nf = || Error::NotFound(format!("/{seg}"));
    let Some(id) = db.get_id(NAMES, &matter_display_key(db, seg))? else {
        // A disabled or unknown login is refused before anything is said about names.
        policy::check_principal(db, p)?;
        return Err(nf());
    };
    match policy::matter_access(db, p, MatterId(id)) {
        Err(Error::NotFound(_)) => Err(nf()),
        other => other,
    }
}

/// Loads a folder node by id (used when re-checking open handles).
pub fn folder_by_id<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    acc: &MatterAccess,
    id: FolderId,
) -> Result<FolderNode> {
    let m = acc.matter;
    let mut chain: Vec<(FolderId, FolderRec)> = Vec::new();
    let mut cur = Some(id);
    while let Some(f) = cur {
        if chain.len() > crate::path::MAX_DEPTH {
            return Err(Error::Integrity("folder parents form a loop".into()));
        }
        let rec: FolderRec = db.need(
            FOLDERS,
            Scope::Matter(m),
            &tables::ids(&[m.0, f.0]),
            "folder",
        )?;
        cur = rec.parent;
        chain.push((f, rec));
    }
    chain.reverse();
    let mut node: Option<FolderNode> = None;
    let root = PortalPath::root().join(&acc.rec.display)?;
    for (fid, rec) in chain {
        node = Some(child_node(acc, node.as_ref(), &root, fid, rec)?);
    }
    let n = node.ok_or_else(|| Error::NotFound("folder".into()))?;
    if n.vis == Visibility::Hidden {
        return Err(Error::NotFound(n.path.to_string()));
    }
    Ok(n)
}

fn child_node(
    acc: &MatterAccess,
    parent: Option<&FolderNode>,
    matter_path: &PortalPath,
    id: FolderId,
    rec: FolderRec,
) -> Result<FolderNode> {
    let fold = names::fold_key(&rec.name);
    let (tpath, mut names_v, path) = match parent {
        Some(p) => (
            format!("{}/{}", p.tpath, fold),
            p.names.clone(),
            p.path.join(&rec.name)?,
        ),
        None => (fold, Vec::new(), matter_path.join(&rec.name)?),
    };
    names_v.push(rec.name.clone());
    Ok(FolderNode {
        id,
        vis: acc.folder(&tpath),
        rec,
        tpath,
        names: names_v,
        path,
    })
}

/// Resolves `path` for principal `p`.
pub fn resolve<T: Tx + ?Sized>(db: &Db<'_, T>, p: Principal, path: &PortalPath) -> Result<Node> {
    let segs = path.segments();
    let Some(first) = segs.first() else {
        policy::check_principal(db, p)?;
        return Ok(Node::Root);
    };
    let acc = find_matter(db, p, first)?;
    let m = acc.matter;
    let matter_path = PortalPath::root().join(&acc.rec.display)?;
    let rest = segs.get(1..).unwrap_or(&[]);
    let mut parent: Option<FolderNode> = None;
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let pid = parent.as_ref().map(|f| f.id);
        if let Some(fid) = db.get_id(NAMES, &folder_name_key(db, m, pid, seg))? {
            let rec: FolderRec = db.need(
                FOLDERS,
                Scope::Matter(m),
                &tables::ids(&[m.0, fid]),
                "folder",
            )?;
            let node = child_node(&acc, parent.as_ref(), &matter_path, FolderId(fid), rec)?;
            if node.vis == Visibility::Hidden {
                return Err(Error::NotFound(path.to_string()));
            }
            parent = Some(node);
            continue;
        }
        if !last {
            return Err(Error::NotFound(path.to_string()));
        }
        if let Some(f) = &parent
            && f.vis != Visibility::Container
            && let Some(did) = db.get_id(NAMES, &doc_name_key(db, m, f.id, seg))?
        {
            let rec: DocumentRec = db.need(
                DOCUMENTS,
                Scope::Matter(m),
                &tables::ids(&[m.0, did]),
                "document",
            )?;
            return Ok(Node::Document(acc, f.clone(), DocumentId(did), rec));
        }
        return Ok(Node::Missing(acc, parent, seg.clone()));
    }
    match parent {
        Some(f) => Ok(Node::Folder(acc, f)),
        None => Ok(Node::Matter(acc)),
    }
}

#[cfg(test)]
mod tests {
    use crate::Portal;
    use crate::model::*;

    /// Alice takes part in matters 1 (granted) and 2 (not granted); her access to matter 3 was
    /// revoked and the matter closed; matter 4 exists without her.
    async fn setup() -> (Portal, LoginId) {
        let portal = Portal::in_memory().await.unwrap();
        let firm = Actor::system();
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .unwrap();
        let mt = portal
            .create_matter_type(&firm, "General", &["Docs"])
            .await
            .unwrap();
        portal
            .set_portal_permissions(&firm, mt, "Docs", client, Permissions::FULL)
            .await
            .unwrap();
        let alice = portal
            .create_contact(&firm, "Alice", "alice@x.test")
            .await
            .unwrap();
        let login = portal
            .create_portal_login(&firm, alice, None)
            .await
            .unwrap();
        for (n, grant, close) in [("1", true, false), ("2", false, false), ("3", true, true)] {
            let m = portal.create_matter(&firm, n, "M", mt).await.unwrap();
            let p = portal
                .add_participant(&firm, m, alice, client)
                .await
                .unwrap();
            if grant {
                portal.grant_access(&firm, m, p).await.unwrap();
            }
            if close {
                portal.revoke_access(&firm, m, p).await.unwrap();
                portal.close_matter(&firm, m).await.unwrap();
            }
        }
        portal.create_matter(&firm, "4", "M", mt).await.unwrap();
        (portal, login)
    }

    #[tokio::test]
    async fn matters_a_portal_user_cannot_see_answer_like_missing_names() {
        let (portal, login) = setup().await;
        let t = portal.tree(Actor::api(Principal::Portal(login)));
        assert_eq!(t.list("/1 M").await.unwrap().len(), 1);
        // Case and Unicode folding of the matter segment work as before.
        assert_eq!(t.list("/1 m").await.unwrap().len(), 1);
        let missing = t.stat("/9 M").await.unwrap_err().to_string();
        for hidden in ["/2 M", "/3 M", "/4 M"] {
            let e = t.stat(hidden).await.unwrap_err();
            assert!(e.is_not_found(), "{hidden}: {e}");
            assert_eq!(
                e.to_string().replace(&hidden[1..], "9 M"),
                missing,
                "{hidden} must not be told apart from a name that does not exist"
            );
            assert!(t.list(&format!("{hidden}/Docs")).await.is_err());
        }
        let root: Vec<String> = t
            .list("/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(root, ["1 M"]);
    }

    #[tokio::test]
    async fn a_disabled_login_is_refused_before_names_are_looked_at() {
        let (portal, login) = setup().await;
        portal
            .set_login_disabled(&Actor::system(), login, true)
            .await
            .unwrap();
        let t = portal.tree(Actor::api(Principal::Portal(login)));
        for p in ["/1 M", "/9 M", "/"] {
            let e = t.stat(p).await.unwrap_err();
            assert!(
                matches!(e, crate::Error::AuthenticationFailed),
                "{p}: {e:?}"
            );
        }
    }
}

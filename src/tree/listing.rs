//! A node and its children in one read and one audit entry (what a WebDAV `PROPFIND` with
//! `Depth: 1` needs), instead of a `Stat` of the node followed by a `List` of it.

use super::props::ListedEntry;
use super::resolve::Node;
use super::{DeadProp, PropsKey, Tree, list_node, object_of, stat_node};
use crate::Result;
use crate::audit::{AuditAction, Outcome};
use crate::crypto::Scope;
use crate::model::Principal;
use crate::store::tables::PROPS;
use crate::store::{Db, Tx};

/// A node as [`Tree::stat_and_list`] returns it: the node itself and, for folder-like nodes,
/// its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeListing {
    /// The node, as [`Tree::stat`] describes it (with its dead properties when asked for).
    pub node: ListedEntry,
    /// Its children as [`Tree::list`] shows them (`None` for a document).
    pub children: Option<Vec<ListedEntry>>,
}

/// What dead properties to read with a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropsWanted {
    /// None: entries carry empty property lists and no content hash.
    No,
    /// Every node's dead properties, and each document's content hash.
    All,
}

fn props_of<T: Tx + ?Sized>(db: &Db<'_, T>, key: PropsKey) -> Result<Vec<DeadProp>> {
    Ok(match key {
        Some((m, k)) => db
            .get::<Vec<DeadProp>>(PROPS, Scope::Matter(m), &k)?
            .unwrap_or_default(),
        None => Vec::new(),
    })
}

/// The node and (for folders) its children, read in one transaction; the audit action is
/// `List` for a folder-like node and `Stat` for a document (or a node that does not resolve).
fn node_listing<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    p: Principal,
    node: Node,
    wanted: PropsWanted,
) -> (AuditAction, Result<NodeListing>, Option<Outcome>) {
    let folder_like = matches!(node, Node::Root | Node::Matter(_) | Node::Folder(..));
    let with_props = wanted == PropsWanted::All;
    let (own, over) = stat_node(db, node.clone());
    let own = own.and_then(|(entry, key)| {
        let props = if with_props {
            props_of(db, key)?
        } else {
            Vec::new()
        };
        Ok(ListedEntry { entry, props })
    });
    if !folder_like {
        return (
            AuditAction::Stat,
            own.map(|node| NodeListing {
                node,
                children: None,
            }),
            over,
        );
    }
    let own = match own {
        Ok(o) => o,
        Err(e) => return (AuditAction::List, Err(e), over),
    };
    let (kids, over) = list_node(db, p, node, with_props);
    let kids = kids.and_then(|v| {
        v.into_iter()
            .map(|(entry, key)| {
                let props = if with_props {
                    props_of(db, key)?
                } else {
                    Vec::new()
                };
                Ok(ListedEntry { entry, props })
            })
            .collect::<Result<Vec<_>>>()
    });
    (
        AuditAction::List,
        kids.map(|children| NodeListing {
            node: own,
            children: Some(children),
        }),
        over,
    )
}

impl Tree {
    /// Describes a node and, if it is a folder (or a matter, or the root), lists it — one read
    /// transaction and **one** audit entry (`List` for a folder, `Stat` for a document), with the
    /// same permission rules as [`Tree::stat`] and [`Tree::list`]: a folder without List
    /// permission shows only its visible sub-folders. `wanted` says whether dead properties
    /// (and documents' content hashes) are read too, as [`Tree::list_with_props`] does.
    pub async fn stat_and_list(&self, path: &str, wanted: PropsWanted) -> Result<NodeListing> {
        let r = self
            .resolve_read(path, move |db, p, node| {
                // The action depends on the node (List for a folder, Stat for a document).
                let (action, res, over) = node_listing(db, p, node, wanted);
                let outcome = over.unwrap_or_else(|| Outcome::of(&res));
                (Ok((action, res)), Some(outcome))
            })
            .await?;
        let outcome = r.outcome();
        let (action, res) = match r.res {
            Ok(found) => found,
            Err(e) => (AuditAction::Stat, Err(e)),
        };
        let object = object_of(path);
        self.audit(action, object, r.matter, r.doc, outcome).await?;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::PropsWanted;
    use crate::Portal;
    use crate::audit::{AuditAction, AuditEntry, AuditFilter, Outcome};
    use crate::model::*;
    use crate::tree::{DeadProp, WriteOptions};

    /// Alice: Full on `Docs`, nothing on `Docs/Sub` except through `Docs/Sub/Open` (List), so
    /// `Docs/Sub` is a container.
    async fn setup() -> (Portal, Actor, Actor, LoginId) {
        let portal = Portal::in_memory().await.unwrap();
        let firm = Actor::system();
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .unwrap();
        let mt = portal
            .create_matter_type(&firm, "General", &["Docs", "Docs/Sub", "Docs/Sub/Open"])
            .await
            .unwrap();
        portal
            .set_portal_permissions(&firm, mt, "Docs", client, Permissions::FULL)
            .await
            .unwrap();
        let list = Permissions::NONE.with(Permission::List);
        portal
            .set_portal_permissions(&firm, mt, "Docs/Sub/Open", client, list)
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
        let m = portal.create_matter(&firm, "1", "M", mt).await.unwrap();
        let p = portal
            .add_participant(&firm, m, alice, client)
            .await
            .unwrap();
        portal.grant_access(&firm, m, p).await.unwrap();
        let staff = portal
            .create_staff_login(&firm, "sam@firm.test", "Sam", None)
            .await
            .unwrap();
        let staff = Actor::api(Principal::Staff(staff));
        let t = portal.tree(staff.clone());
        for path in [
            "/1 M/Docs/a.txt",
            "/1 M/Docs/b.txt",
            "/1 M/Docs/Sub/hidden.txt",
        ] {
            let mut up = t.open_write(path, WriteOptions::upload()).await.unwrap();
            up.write(b"x").await.unwrap();
            up.commit().await.unwrap();
        }
        let prop = DeadProp {
            name: "color".into(),
            prefix: Some("x".into()),
            namespace: Some("urn:x".into()),
            xml: Some(b"<x:color xmlns:x=\"urn:x\">red</x:color>".to_vec()),
        };
        t.patch_props("/1 M/Docs/a.txt", vec![prop]).await.unwrap();
        (portal, Actor::api(Principal::Portal(login)), staff, login)
    }

    /// Alice's audit entries, newest first.
    async fn newest(portal: &Portal, staff: &Actor, login: LoginId) -> Vec<AuditEntry> {
        portal
            .audit_query(
                staff,
                AuditFilter {
                    login: Some(login),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_folder_and_its_children_are_one_list_entry() {
        let (portal, alice, staff, login) = setup().await;
        let t = portal.tree(alice);
        let before = newest(&portal, &staff, login).await.len();
        let l = t
            .stat_and_list("/1 M/Docs", PropsWanted::All)
            .await
            .unwrap();
        assert_eq!(l.node.entry.name, "Docs");
        let kids = l.children.unwrap();
        let mut names: Vec<&str> = kids.iter().map(|k| k.entry.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["Sub", "a.txt", "b.txt"]);
        let a = kids.iter().find(|k| k.entry.name == "a.txt").unwrap();
        assert_eq!(a.props.len(), 1);
        assert!(a.entry.sha256.is_some());
        // Without properties: same children, none read.
        let l = t.stat_and_list("/1 M/Docs", PropsWanted::No).await.unwrap();
        let kids = l.children.unwrap();
        assert_eq!(kids.len(), 3);
        assert!(kids.iter().all(|k| k.props.is_empty()));
        let trail = newest(&portal, &staff, login).await;
        assert_eq!(trail.len(), before + 2);
        assert!(
            trail[..2]
                .iter()
                .all(|e| e.action == AuditAction::List && e.outcome == Outcome::Allowed)
        );
    }

    #[tokio::test]
    async fn containers_show_only_folders_and_documents_are_stats() {
        let (portal, alice, staff, login) = setup().await;
        let t = portal.tree(alice);
        let l = t
            .stat_and_list("/1 M/Docs/Sub", PropsWanted::No)
            .await
            .unwrap();
        let names: Vec<String> = l
            .children
            .unwrap()
            .into_iter()
            .map(|k| k.entry.name)
            .collect();
        assert_eq!(names, ["Open"], "the document is hidden");
        let e = &newest(&portal, &staff, login).await[0];
        assert_eq!(e.action, AuditAction::List);
        assert!(matches!(e.outcome, Outcome::Denied(_)), "{:?}", e.outcome);

        let l = t
            .stat_and_list("/1 M/Docs/a.txt", PropsWanted::No)
            .await
            .unwrap();
        assert!(l.children.is_none());
        assert_eq!(l.node.entry.name, "a.txt");
        assert_eq!(
            newest(&portal, &staff, login).await[0].action,
            AuditAction::Stat
        );

        let e = t
            .stat_and_list("/1 M/Docs/Sub/hidden.txt", PropsWanted::No)
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = &newest(&portal, &staff, login).await[0];
        assert_eq!(e.action, AuditAction::Stat);
        assert_ne!(e.outcome, Outcome::Allowed);
    }
}

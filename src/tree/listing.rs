//! A node and its children in one read and one audit entry (what a WebDAV `PROPFIND` with
//! `Depth: 1` needs), instead of a `Stat` of the node followed by a `List` of it.

use super::props::ListedEntry;
use super::resolve::{Node, resolve};
use super::{DeadProp, PropsKey, Tree, list_node, object_of, stat_node};
use crate::Result;
use crate::audit::{AuditAction, Outcome};
use crate::crypto::Scope;
use crate::model::Principal;
use crate::path::PortalPath;
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
        let object = object_of(path);
        let p = self.actor.principal;
        let (action, res, matter, doc, over) = match PortalPath::parse(path) {
            Err(e) => (AuditAction::Stat, Err(e), None, None, None),
            Ok(pp) => {
                self.portal
                    .inner
                    .store
                    .read(move |db| {
                        let node = match resolve(db, p, &pp) {
                            Ok(n) => n,
                            Err(e) => return Ok((AuditAction::Stat, Err(e), None, None, None)),
                        };
                        let (m, d) = (node.matter(), node.document());
                        let (action, r, over) = node_listing(db, p, node, wanted);
                        Ok((action, r, m, d, over))
                    })
                    .await?
            }
        };
        let outcome = over.unwrap_or_else(|| Outcome::of(&res));
        self.audit(action, object, matter, doc, outcome).await?;
        res
    }
}

//! Dead properties (WebDAV PROPPATCH/PROPFIND of client-defined properties), through the same
//! policy point: reading them is a `stat` (documents need List), changing them needs Update (or
//! Create for the author of the current version, as for modification times); folders' properties
//! are changed by staff only.

use super::resolve::Node;
use super::{Entry, Tree, current_version, list_node, need, object_of, stat_node};
use crate::audit::AuditAction;
use crate::crypto::Scope;
use crate::model::*;
use crate::path::PortalPath;
use crate::policy;
use crate::store::WriteCtx;
use crate::store::tables::{Key, PROPS};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Most dead properties on one node.
pub const MAX_PROPS: usize = 64;
/// Largest value of one dead property (its XML), in bytes.
pub const MAX_PROP_BYTES: usize = 4096;

/// A client-defined property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadProp {
    /// XML namespace.
    pub namespace: Option<String>,
    /// XML prefix.
    pub prefix: Option<String>,
    /// Local name.
    pub name: String,
    /// The property element as XML.
    pub xml: Option<Vec<u8>>,
}

impl DeadProp {
    fn same(&self, o: &DeadProp) -> bool {
        self.name == o.name && self.namespace == o.namespace
    }
}

pub(crate) fn folder_key(m: MatterId, f: FolderId) -> Option<(MatterId, Vec<u8>)> {
    Some((m, Key::new().id(m.0).bytes(b"f").id(f.0).done()))
}

pub(crate) fn document_key(m: MatterId, d: DocumentId) -> Option<(MatterId, Vec<u8>)> {
    Some((m, Key::new().id(m.0).bytes(b"d").id(d.0).done()))
}

fn props_key(node: &Node) -> Option<(MatterId, Vec<u8>)> {
    match node {
        Node::Folder(a, f) => folder_key(a.matter, f.id),
        Node::Document(a, _, d, _) => document_key(a.matter, *d),
        _ => None,
    }
}

fn check_sizes(patch: &[DeadProp]) -> Result<()> {
    if patch
        .iter()
        .any(|p| p.xml.as_ref().is_some_and(|x| x.len() > MAX_PROP_BYTES))
    {
        return Err(Error::TooLarge(format!(
            "a property value is limited to {MAX_PROP_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Applies `patch` to the stored properties under `key` (no permission check: callers have done it).
fn apply(ctx: &mut WriteCtx<'_>, m: MatterId, key: &[u8], patch: &[DeadProp]) -> Result<()> {
    check_sizes(patch)?;
    let mut cur: Vec<DeadProp> = ctx
        .db()
        .get(PROPS, Scope::Matter(m), key)?
        .unwrap_or_default();
    for p in patch {
        cur.retain(|c| !c.same(p));
        if p.xml.is_some() {
            cur.push(p.clone());
        }
    }
    if cur.len() > MAX_PROPS {
        return Err(Error::TooLarge(format!(
            "at most {MAX_PROPS} properties per item"
        )));
    }
    ctx.put(PROPS, Scope::Matter(m), key, &cur)
}

/// Sets a document's dead properties as part of a commit that already checked the permission
/// (an upload carrying properties, [`crate::tree::Upload::set_props`]).
pub(crate) fn store(
    ctx: &mut WriteCtx<'_>,
    m: MatterId,
    d: DocumentId,
    patch: &[DeadProp],
) -> Result<()> {
    match document_key(m, d) {
        Some((m, k)) => apply(ctx, m, &k, patch),
        None => Ok(()),
    }
}

/// One child of a folder as [`Tree::list_with_props`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    /// The child, as [`Tree::list`] describes it; documents also carry `sha256`.
    pub entry: Entry,
    /// Its dead properties.
    pub props: Vec<DeadProp>,
}

impl Tree {
    /// The dead properties of a node.
    pub async fn props(&self, path: &str) -> Result<Vec<DeadProp>> {
        self.read_op(AuditAction::Stat, path, |db, _p, node| {
            if let Node::Document(_, f, ..) = &node
                && let Err(e) = need(f, Permission::List)
            {
                return (Err(e), None);
            }
            let r = match props_key(&node) {
                Some((m, k)) => db
                    .get::<Vec<DeadProp>>(PROPS, Scope::Matter(m), &k)
                    .map(|v| v.unwrap_or_default()),
                None => match node {
                    Node::Missing(_, _, n) => Err(Error::NotFound(n)),
                    _ => Ok(Vec::new()),
                },
            };
            (r, None)
        })
        .await
    }

    /// Lists a folder like [`Tree::list`] (same permission rules, one `List` audit entry), with
    /// each child's dead properties and each document's content hash, read in the same
    /// transaction: what a WebDAV `PROPFIND` of a folder needs, without one read per child.
    pub async fn list_with_props(&self, path: &str) -> Result<Vec<ListedEntry>> {
        self.read_op(AuditAction::List, path, |db, p, node| {
            let (r, over) = list_node(db, p, node, true);
            let r = r.and_then(|v| {
                v.into_iter()
                    .map(|(entry, key)| {
                        let props = match key {
                            Some((m, k)) => db
                                .get::<Vec<DeadProp>>(PROPS, Scope::Matter(m), &k)?
                                .unwrap_or_default(),
                            None => Vec::new(),
                        };
                        Ok(ListedEntry { entry, props })
                    })
                    .collect::<Result<Vec<_>>>()
            });
            (r, over)
        })
        .await
    }

    /// Describes one node like [`Tree::stat`] (same permission rules, one `Stat` audit entry),
    /// with its dead properties read in the same transaction (a WebDAV `PROPFIND` of one node).
    pub async fn stat_with_props(&self, path: &str) -> Result<ListedEntry> {
        self.read_op(AuditAction::Stat, path, |db, _p, node| {
            let (r, over) = stat_node(db, node);
            let r = r.and_then(|(entry, key)| {
                let props = match key {
                    Some((m, k)) => db
                        .get::<Vec<DeadProp>>(PROPS, Scope::Matter(m), &k)?
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                Ok(ListedEntry { entry, props })
            });
            (r, over)
        })
        .await
    }

    /// Sets (`Some` xml) or removes (`None` xml) dead properties of a node.
    pub async fn patch_props(&self, path: &str, patch: Vec<DeadProp>) -> Result<()> {
        let pp = PortalPath::parse(path)?;
        check_sizes(&patch)?;
        self.write_op(
            AuditAction::Update,
            format!("{} (properties)", object_of(path)),
            vec![pp],
            move |ctx, actor, nodes| {
                let node = nodes
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::NotFound(String::new()))?;
                match &node {
                    Node::Document(a, f, d, r) => {
                        if need(f, Permission::Update).is_err() {
                            let v = current_version(&ctx.db(), a.matter, *d, r)?;
                            if v.author == actor.principal {
                                need(f, Permission::Create)?
                            } else {
                                need(f, Permission::Update)?
                            }
                        }
                    }
                    Node::Folder(..) => {
                        policy::require_staff(actor.principal, "changing folder properties")?
                    }
                    Node::Missing(_, _, n) => return Err(Error::NotFound(n.clone())),
                    _ => return Err(Error::StaffOnly("the root and matters have no properties")),
                }
                let Some((m, k)) = props_key(&node) else {
                    return Err(Error::NotFound(String::new()));
                };
                apply(ctx, m, &k, &patch)
            },
        )
        .await
    }
}

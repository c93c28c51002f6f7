//! Dead properties (WebDAV PROPPATCH/PROPFIND of client-defined properties), through the same
//! policy point: reading them is a `stat` (documents need List), changing them needs Update (or
//! Create for the author of the current version, as for modification times); folders' properties
//! are changed by staff only.

use super::resolve::Node;
use super::{Entry, Tree, current_version, need, object_of};
use crate::audit::AuditAction;
use crate::crypto::Scope;
use crate::model::*;
use crate::path::PortalPath;
use crate::policy;
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

/// Where a folder's dead properties are kept.
pub(crate) fn folder_props_key(m: MatterId, f: FolderId) -> (MatterId, Vec<u8>) {
    (m, Key::new().id(m.0).bytes(b"f").id(f.0).done())
}

/// Where a document's dead properties are kept.
pub(crate) fn doc_props_key(m: MatterId, d: DocumentId) -> (MatterId, Vec<u8>) {
    (m, Key::new().id(m.0).bytes(b"d").id(d.0).done())
}

fn props_key(node: &Node) -> Option<(MatterId, Vec<u8>)> {
    match node {
        Node::Folder(a, f) => Some(folder_props_key(a.matter, f.id)),
        Node::Document(a, _, d, _) => Some(doc_props_key(a.matter, *d)),
        _ => None,
    }
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

    /// Lists a folder like [`Tree::list`] and returns each entry's dead properties with it, read in
    /// the same transaction, under the listing's one audit entry (`list`). For WebDAV PROPFIND
    /// with `Depth: 1`, where dav-server asks for every child's properties: one [`Tree::props`]
    /// call per child would resolve the child's path and append (and wait for) an audit entry
    /// each — 10,000 commits for a 10,000-document folder. The permission rules are those of
    /// [`Tree::props`]: a document's properties are seen with List on its folder, which a listing
    /// that shows the document already required.
    pub async fn list_with_props(&self, path: &str) -> Result<Vec<(Entry, Vec<DeadProp>)>> {
        self.read_op(AuditAction::List, path, |db, p, node| {
            let (r, over) = super::list_node(db, p, node);
            let r = r.and_then(|entries| {
                entries
                    .into_iter()
                    .map(|(e, at)| {
                        let props = match at {
                            Some((m, k)) => db
                                .get::<Vec<DeadProp>>(PROPS, Scope::Matter(m), &k)?
                                .unwrap_or_default(),
                            None => Vec::new(),
                        };
                        Ok((e, props))
                    })
                    .collect::<Result<Vec<_>>>()
            });
            (r, over)
        })
        .await
    }

    /// Sets (`Some` xml) or removes (`None` xml) dead properties of a node.
    pub async fn patch_props(&self, path: &str, patch: Vec<DeadProp>) -> Result<()> {
        let pp = PortalPath::parse(path)?;
        if patch
            .iter()
            .any(|p| p.xml.as_ref().is_some_and(|x| x.len() > MAX_PROP_BYTES))
        {
            return Err(Error::TooLarge(format!(
                "a property value is limited to {MAX_PROP_BYTES} bytes"
            )));
        }
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
                let mut cur: Vec<DeadProp> = ctx
                    .db()
                    .get(PROPS, Scope::Matter(m), &k)?
                    .unwrap_or_default();
                for p in &patch {
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
                ctx.put(PROPS, Scope::Matter(m), &k, &cur)
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Portal;
    use crate::audit::AuditFilter;
    use crate::tree::WriteOptions;

    fn prop(name: &str, value: &str) -> DeadProp {
        DeadProp {
            namespace: Some("urn:test".into()),
            prefix: Some("t".into()),
            name: name.into(),
            xml: Some(format!("<t:{name} xmlns:t=\"urn:test\">{value}</t:{name}>").into_bytes()),
        }
    }

    /// A portal user with Full rights on `Docs` and only Create on `Drop`, and a matter holding
    /// `Docs/a.txt` (with a property), `Docs/b.txt` (without) and `Drop/c.txt`.
    async fn setup() -> (Portal, crate::tree::Tree, MatterId) {
        let portal = Portal::in_memory().await.unwrap();
        let firm = Actor::system();
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .unwrap();
        let mt = portal
            .create_matter_type(&firm, "General", &["Docs", "Drop"])
            .await
            .unwrap();
        portal
            .set_portal_permissions(&firm, mt, "Docs", client, Permissions::FULL)
            .await
            .unwrap();
        let create = Permissions::NONE.with(Permission::Create);
        portal
            .set_portal_permissions(&firm, mt, "Drop", client, create)
            .await
            .unwrap();
        let m = portal.create_matter(&firm, "1", "M", mt).await.unwrap();
        let c = portal.create_contact(&firm, "C", "c@x.test").await.unwrap();
        let login = portal.create_portal_login(&firm, c, None).await.unwrap();
        let part = portal.add_participant(&firm, m, c, client).await.unwrap();
        portal.grant_access(&firm, m, part).await.unwrap();
        let tree = portal.tree(Actor::api(Principal::Portal(login)));
        for p in ["/1 M/Docs/a.txt", "/1 M/Docs/b.txt", "/1 M/Drop/c.txt"] {
            let mut up = tree.open_write(p, WriteOptions::upload()).await.unwrap();
            up.write(b"x").await.unwrap();
            up.commit().await.unwrap();
        }
        tree.patch_props("/1 M/Docs/a.txt", vec![prop("colour", "red")])
            .await
            .unwrap();
        (portal, tree, m)
    }

    async fn listings_audited(portal: &Portal, m: MatterId) -> usize {
        let f = AuditFilter {
            matter: Some(m),
            limit: Some(100_000),
            ..AuditFilter::default()
        };
        // Only listings: the query itself is audited too.
        portal
            .audit_query(&Actor::system(), f)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.action == AuditAction::List)
            .count()
    }

    #[tokio::test]
    async fn listing_carries_each_entrys_properties_under_one_audit_entry() {
        let (portal, tree, m) = setup().await;
        let before = listings_audited(&portal, m).await;
        let got = tree.list_with_props("/1 M/Docs").await.unwrap();
        assert_eq!(listings_audited(&portal, m).await, before + 1);
        let mut names: Vec<(String, Vec<String>)> = got
            .iter()
            .map(|(e, p)| (e.name.clone(), p.iter().map(|d| d.name.clone()).collect()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("a.txt".to_string(), vec!["colour".to_string()]),
                ("b.txt".to_string(), vec![])
            ]
        );
        // Same properties as the one-by-one call, same entries as a plain listing.
        let one = tree.props("/1 M/Docs/a.txt").await.unwrap();
        let a = got.iter().find(|(e, _)| e.name == "a.txt").unwrap();
        assert_eq!(a.1, one);
        let plain: Vec<Entry> = tree.list("/1 M/Docs").await.unwrap();
        let with: Vec<Entry> = got.into_iter().map(|(e, _)| e).collect();
        assert_eq!(plain, with);
    }

    #[tokio::test]
    async fn folder_properties_are_listed_at_the_matter_level() {
        let (portal, tree, _) = setup().await;
        let staff = portal
            .create_staff_login(&Actor::system(), "s@firm.test", "S", None)
            .await
            .unwrap();
        let st = portal.tree(Actor::api(Principal::Staff(staff)));
        st.patch_props("/1 M/Docs", vec![prop("owner", "sam")])
            .await
            .unwrap();
        let got = tree.list_with_props("/1 M").await.unwrap();
        let docs = got.iter().find(|(e, _)| e.name == "Docs").unwrap();
        assert_eq!(docs.1.len(), 1);
        assert_eq!(docs.1[0].name, "owner");
        let drop = got.iter().find(|(e, _)| e.name == "Drop").unwrap();
        assert!(drop.1.is_empty());
    }

    #[tokio::test]
    async fn without_list_no_documents_and_no_properties_and_a_denied_entry() {
        let (portal, tree, m) = setup().await;
        let got = tree.list_with_props("/1 M/Drop").await.unwrap();
        assert!(got.is_empty(), "{got:?}");
        let f = AuditFilter {
            matter: Some(m),
            limit: Some(1),
            ..AuditFilter::default()
        };
        let last = portal.audit_query(&Actor::system(), f).await.unwrap();
        assert_eq!(last[0].action, AuditAction::List);
        assert_eq!(last[0].outcome.as_str(), "denied");
        // A document path is not a folder; a missing one is not found.
        assert!(tree.list_with_props("/1 M/Docs/a.txt").await.is_err());
        assert!(
            tree.list_with_props("/1 M/Nope")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}

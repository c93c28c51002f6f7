//! Opening a document for a request that will read it at once (a WebDAV GET): the blob is opened
//! and its first bytes read while the audit entry is being written, instead of one after the
//! other. Nothing reaches the caller before both are done, so the audit entry still precedes
//! the data.

use super::handles::{MAX_READ, ReadHandle};
use super::{Tree, object_of, readable_document};
use crate::audit::{AuditAction, Outcome};
use crate::{Error, Result};
use bytes::Bytes;

impl Tree {
    /// Opens a document for reading like [`Tree::open_read`] (same checks, one `Read` audit
    /// entry) and returns its first `prefetch` bytes (capped at [`MAX_READ`]; fewer for a shorter
    /// document, none for `0`) with the handle. Opening and reading the blob overlap the audit
    /// entry's commit.
    pub async fn open_read_prefetch(
        &self,
        path: &str,
        prefetch: usize,
    ) -> Result<(ReadHandle, Bytes)> {
        let object = object_of(path);
        let found = self
            .resolve_read(path, |db, _, node| (readable_document(db, node), None))
            .await?;
        let (res, matter, doc) = (found.res, found.matter, found.doc);
        let outcome = Outcome::of(&res);
        let (entry, blob, folder) = match res {
            Ok(v) => v,
            Err(e) => {
                self.audit(AuditAction::Read, object, matter, doc, outcome)
                    .await?;
                return Err(e);
            }
        };
        let blobs = self.portal.inner.blobs.clone();
        let m = entry.matter;
        let fetch = async move {
            let m = m.ok_or_else(|| Error::NotFound(object_of(path)))?;
            let mut reader = blobs.open(m, &blob).await?;
            let first = if prefetch == 0 {
                Bytes::new()
            } else {
                reader.read_at(0, prefetch.min(MAX_READ)).await?
            };
            Ok::<_, Error>((reader, first))
        };
        let (audited, fetched) = tokio::join!(
            self.audit(AuditAction::Read, object, matter, doc, outcome),
            fetch
        );
        audited?;
        let (reader, first) = fetched?;
        Ok((ReadHandle::new(self.clone(), entry, folder, reader), first))
    }
}

#[cfg(test)]
mod tests {
    use crate::Portal;
    use crate::audit::{AuditAction, AuditFilter, Outcome};
    use crate::model::*;
    use crate::tree::WriteOptions;

    /// Alice may read `Docs` of matter 1; `Internal` is hidden from her.
    async fn setup() -> (Portal, Actor, Actor) {
        let portal = Portal::in_memory().await.unwrap();
        let firm = Actor::system();
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .unwrap();
        let mt = portal
            .create_matter_type(&firm, "General", &["Docs", "Internal"])
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
        for path in ["/1 M/Docs/a.txt", "/1 M/Internal/secret.txt"] {
            let mut up = t.open_write(path, WriteOptions::upload()).await.unwrap();
            up.write(b"hello, world").await.unwrap();
            up.commit().await.unwrap();
        }
        (portal, Actor::api(Principal::Portal(login)), staff)
    }

    async fn reads(portal: &Portal, staff: &Actor) -> Vec<(String, Outcome)> {
        portal
            .audit_query(staff, AuditFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == AuditAction::Read)
            .map(|e| (e.object, e.outcome))
            .collect()
    }

    #[tokio::test]
    async fn prefetch_returns_the_first_bytes_and_audits_one_read() {
        let (portal, alice, staff) = setup().await;
        let t = portal.tree(alice);
        let (mut h, first) = t.open_read_prefetch("/1 M/Docs/a.txt", 5).await.unwrap();
        assert_eq!(&first[..], b"hello");
        assert_eq!(h.len(), 12);
        assert_eq!(&h.read_at(5, 100).await.unwrap()[..], b", world");
        let (_, all) = t
            .open_read_prefetch("/1 M/Docs/a.txt", 1 << 20)
            .await
            .unwrap();
        assert_eq!(&all[..], b"hello, world");
        let (_, none) = t.open_read_prefetch("/1 M/Docs/a.txt", 0).await.unwrap();
        assert!(none.is_empty());
        let r = reads(&portal, &staff).await;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            r.iter()
                .all(|(o, x)| o.ends_with("a.txt") && *x == Outcome::Allowed)
        );
    }

    #[tokio::test]
    async fn refusals_are_audited_and_return_nothing() {
        let (portal, alice, staff) = setup().await;
        let t = portal.tree(alice);
        for (path, not_found) in [
            ("/1 M/Internal/secret.txt", true),
            ("/1 M/Docs/missing.txt", true),
            ("/1 M/Docs", false),
        ] {
            let e = t.open_read_prefetch(path, 5).await.unwrap_err();
            assert_eq!(e.is_not_found(), not_found, "{path}: {e}");
        }
        let r = reads(&portal, &staff).await;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r.iter().all(|(_, x)| *x != Outcome::Allowed), "{r:?}");
    }
}

//! Opening a document for a request that will read it at once (a WebDAV GET, an SFTP open for
//! reading): the blob is opened and its first bytes read ([`crate::blob::BlobStore::open_prefix`],
//! one blocking job for the encrypted store) while the audit entry is being written, instead of
//! one after the other. Nothing reaches the caller before both are done, so the audit entry still
//! precedes the data, and a refused open never touches the blob. The handle keeps those first
//! bytes and answers reads inside them (and at the end) without the blob store.
//!
//! [`Tree::open_read_pipelined`] goes one step further for protocols where opening and reading
//! are separate requests (SFTP's `OPEN`, then `READ`): it answers as soon as the check is done
//! and leaves the entry's commit and the blob's opening running; the handle's first read waits
//! for both. The client's round trip between the two requests overlaps the commit, and still no
//! byte of the document leaves before its `Read` entry is committed.
//!
//! With batched durability "committed" means handed to the writer in order
//! ([`crate::store::Store::write_deferred`]): the entry is committed with the writer's next
//! batch, ahead of anything the session does next, and the read does not wait for it — the
//! same crash window every batched commit has.

use super::handles::{MAX_READ, ReadHandle};
use super::{Entry, Tree, object_of, probes, readable_document};
use crate::audit::{AuditAction, NewEntry, Outcome};
use crate::blob::BlobRef;
use crate::model::FolderId;
use crate::{Error, Result};
use bytes::Bytes;
use tracing::Instrument;

impl Tree {
    /// Opens a document for reading like [`Tree::open_read`] (same checks, one `Read` audit
    /// entry) and returns its first `prefetch` bytes (capped at `MAX_READ`, 4 MiB; fewer for a
    /// shorter document, none for `0`) with the handle. Opening and reading the blob overlap the
    /// audit entry's commit.
    pub async fn open_read_prefetch(
        &self,
        path: &str,
        prefetch: usize,
    ) -> Result<(ReadHandle, Bytes)> {
        let object = object_of(path);
        let (entry, blob, folder) = self.readable_or_audit(path, None).await?;
        let (matter, doc, outcome) = (entry.matter, entry.document, Outcome::Allowed);
        let blobs = self.portal.inner.blobs.clone();
        let m = entry.matter;
        let fetch = async move {
            let m = m.ok_or_else(|| Error::NotFound(object_of(path)))?;
            // One blocking job opens the blob and decrypts its first bytes.
            blobs.open_prefix(m, &blob, prefetch.min(MAX_READ)).await
        };
        let (audited, fetched) = tokio::join!(
            self.audit(AuditAction::Read, object, matter, doc, outcome),
            fetch
        );
        audited?;
        let (reader, first) = fetched?;
        let handle =
            ReadHandle::new(self.clone(), entry, folder, reader).with_prefix(first.clone());
        Ok((handle, first))
    }
}

impl Tree {
    /// The document at `path` if the principal may read it (`known`: already found so, by a
    /// probe with nothing changed since); a refusal is audited before it is returned.
    async fn readable_or_audit(
        &self,
        path: &str,
        known: Option<(Entry, BlobRef, FolderId)>,
    ) -> Result<(Entry, BlobRef, FolderId)> {
        if let Some(v) = known {
            return Ok(v);
        }
        let found = self
            .resolve_read(path, |db, _, node| (readable_document(db, node), None))
            .await?;
        match found.res {
            Ok(v) => Ok(v),
            Err(e) => {
                let outcome = Outcome::from_err(&e);
                self.audit(
                    AuditAction::Read,
                    object_of(path),
                    found.matter,
                    found.doc,
                    outcome,
                )
                .await?;
                Err(e)
            }
        }
    }

    /// Opens a document for reading with the same checks and `Read` entry as
    /// [`Tree::open_read_prefetch`], but returns once the permission is checked: committing the
    /// entry and opening the blob (with its first `prefetch` bytes) go on in the background, and
    /// the handle's first [`ReadHandle::read_at`] waits for both (and returns their error, if
    /// any). A refused open is audited before this returns, as always.
    pub async fn open_read_pipelined(&self, path: &str, prefetch: usize) -> Result<ReadHandle> {
        let object = object_of(path);
        // Just probed, allowed, nothing changed since: no second read transaction.
        let probed = self.probed_readable(path);
        let (entry, blob, folder) = self.readable_or_audit(path, probed).await?;
        let (matter, doc, outcome) = (entry.matter, entry.document, Outcome::Allowed);
        let Some(m) = entry.matter else {
            return Err(Error::NotFound(object));
        };
        // Earlier probes' entries are taken now, so they stay ahead of this one.
        let mut entries = self.take_probes();
        entries.push(NewEntry {
            actor: self.actor.clone(),
            matter,
            document: doc,
            object,
            action: AuditAction::Read,
            outcome,
        });
        let (portal, blobs, len) = (
            self.portal.clone(),
            self.portal.inner.blobs.clone(),
            blob.len,
        );
        // Handed to the writer now, so that nothing this tree does next lands before them.
        let audited = probes::send_entries(&portal, entries).await?;
        let opening = tokio::spawn(
            async move {
                let (audited, fetched) = tokio::join!(
                    audited.wait(),
                    blobs.open_prefix(m, &blob, prefetch.min(MAX_READ))
                );
                audited?;
                fetched
            }
            .in_current_span(),
        );
        Ok(ReadHandle::opening(
            self.clone(),
            entry,
            folder,
            len,
            opening,
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::{AuditAction, AuditFilter, Outcome};
    use crate::blob::mem::MemBlobStore;
    use crate::blob::{BlobId, BlobReader, BlobRef, BlobStore, StagedBlob};
    use crate::model::*;
    use crate::tree::WriteOptions;
    use crate::{Portal, PortalBuilder, Result};
    use async_trait::async_trait;
    use bytes::Bytes;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Alice may read `Docs` of matter 1; `Internal` is hidden from her.
    async fn setup() -> (Portal, Actor, Actor) {
        let (portal, alice, staff, _) = setup_on(Portal::in_memory().await.unwrap()).await;
        (portal, alice, staff)
    }

    /// [`setup`] on a given portal; also returns alice's matter and participant ids.
    async fn setup_on(portal: Portal) -> (Portal, Actor, Actor, (MatterId, ParticipantId)) {
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
        (portal, Actor::api(Principal::Portal(login)), staff, (m, p))
    }

    /// A blob store counting opens and reads.
    #[derive(Default)]
    struct Counting {
        inner: MemBlobStore,
        opens: Arc<AtomicUsize>,
        reads: Arc<AtomicUsize>,
    }

    struct CountingReader(Box<dyn BlobReader>, Arc<AtomicUsize>);

    #[async_trait]
    impl BlobReader for CountingReader {
        fn len(&self) -> u64 {
            self.0.len()
        }
        async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.read_at(offset, max).await
        }
    }

    #[async_trait]
    impl BlobStore for Counting {
        async fn stage(&self, m: MatterId, base: Option<&BlobRef>) -> Result<Box<dyn StagedBlob>> {
            self.inner.stage(m, base).await
        }
        async fn open(&self, m: MatterId, blob: &BlobRef) -> Result<Box<dyn BlobReader>> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let r = self.inner.open(m, blob).await?;
            Ok(Box::new(CountingReader(r, self.reads.clone())))
        }
        async fn remove(&self, m: MatterId, blob: &BlobRef) -> Result<()> {
            self.inner.remove(m, blob).await
        }
        async fn retain(&self, live: &HashSet<BlobId>) -> Result<u64> {
            self.inner.retain(live).await
        }
        async fn purge_matter(&self, m: MatterId) -> Result<()> {
            self.inner.purge_matter(m).await
        }
    }

    /// Reads inside the prefix read at open, and reads at or past the end, don't go back to the
    /// blob store; a refused open never opens the blob; a revoked grant still stops reads of
    /// the prefix.
    #[tokio::test]
    async fn the_prefix_answers_reads_without_the_store_and_refusals_never_open_the_blob() {
        let store = Arc::new(Counting::default());
        let (opens, reads) = (store.opens.clone(), store.reads.clone());
        let portal = PortalBuilder::memory()
            .blob_store(store)
            .open()
            .await
            .unwrap();
        let (portal, alice, _staff, (m, p)) = setup_on(portal).await;
        let t = portal.tree(alice);
        let before = opens.load(Ordering::SeqCst);
        for path in [
            "/1 M/Internal/secret.txt",
            "/1 M/Docs/missing.txt",
            "/1 M/Docs",
        ] {
            t.open_read_prefetch(path, 65_536).await.unwrap_err();
        }
        assert_eq!(
            opens.load(Ordering::SeqCst),
            before,
            "a refused open opened a blob"
        );

        let (mut h, first) = t
            .open_read_prefetch("/1 M/Docs/a.txt", 65_536)
            .await
            .unwrap();
        assert_eq!(&first[..], b"hello, world");
        assert_eq!(opens.load(Ordering::SeqCst), before + 1);
        let r0 = reads.load(Ordering::SeqCst);
        assert_eq!(&h.read_at(0, 32_768).await.unwrap()[..], b"hello, world");
        assert_eq!(&h.read_at(5, 3).await.unwrap()[..], b", w");
        assert!(h.read_at(12, 32_768).await.unwrap().is_empty());
        assert!(h.read_at(1 << 40, 32_768).await.unwrap().is_empty());
        assert_eq!(
            reads.load(Ordering::SeqCst),
            r0,
            "a read inside the prefix hit the store"
        );

        // A shorter prefix: reads beyond it go to the store.
        let (mut h2, first) = t.open_read_prefetch("/1 M/Docs/a.txt", 5).await.unwrap();
        assert_eq!(&first[..], b"hello");
        assert_eq!(&h2.read_at(0, 5).await.unwrap()[..], b"hello");
        assert_eq!(reads.load(Ordering::SeqCst), r0 + 1);
        assert_eq!(&h2.read_at(3, 100).await.unwrap()[..], b"lo, world");
        assert_eq!(reads.load(Ordering::SeqCst), r0 + 2);

        portal.revoke_access(&Actor::system(), m, p).await.unwrap();
        let e = h.read_at(0, 5).await.unwrap_err();
        assert!(e.is_denied(), "{e}");
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

    /// Batched durability: a read's entry is queued, not waited for, yet staff see it at once and
    /// in its place before what the reader does next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_batched_durability_read_entries_are_queued_and_still_in_order() {
        let portal = PortalBuilder::memory()
            .durability(crate::store::Durability::batched())
            .open()
            .await
            .unwrap();
        let (portal, alice, staff, _) = setup_on(portal).await;
        // A tree that defers its probes (SFTP): with batched durability the store queues them.
        let t = portal.tree(alice.clone()).with_deferred_probes();
        let (commits, _) = portal.store().stats();
        t.stat_probe("/1 M/Docs/a.txt").await.unwrap();
        let (_h, first) = t.open_read_prefetch("/1 M/Docs/a.txt", 5).await.unwrap();
        assert_eq!(first.as_ref(), b"hello");
        let _ = t.open_read_pipelined("/1 M/Docs/a.txt", 5).await.unwrap();
        // Nothing waited for a commit of its own.
        assert_eq!(portal.store().stats().0, commits);
        // The reader's next write lands after both reads; staff queries see all three.
        t.delete("/1 M/Docs/a.txt").await.unwrap();
        let trail: Vec<AuditAction> = portal
            .audit_query(&staff, AuditFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.actor == alice.principal)
            .map(|e| e.action)
            .collect();
        assert_eq!(
            trail[..4],
            [
                AuditAction::Delete,
                AuditAction::Read,
                AuditAction::Read,
                AuditAction::Stat
            ],
            "{trail:?}"
        );
        assert!(portal.audit_verify(&staff).await.unwrap().ok());
    }

    /// A pipelined open answers while the writer is busy, but its first read returns nothing
    /// until the `Read` entry is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipelined_open_answers_at_once_and_reads_wait_for_the_audit_entry() {
        let (portal, alice, staff) = setup().await;
        let t = portal.tree(alice);
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = portal.store().clone();
            tokio::spawn(async move {
                store
                    .write(move |_ctx| {
                        let _ = held_rx.recv_timeout(std::time::Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut h = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            t.open_read_pipelined("/1 M/Docs/a.txt", 65_536),
        )
        .await
        .expect("the open waited for the writer")
        .unwrap();
        assert_eq!(h.len(), 12);
        let read = tokio::spawn(async move {
            let b = h.read_at(0, 100).await;
            (h, b)
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !read.is_finished(),
            "data before the audit entry was committed"
        );
        held_tx.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let (mut h, b) = read.await.unwrap();
        assert_eq!(&b.unwrap()[..], b"hello, world");
        assert!(h.read_at(12, 100).await.unwrap().is_empty());
        let r = reads(&portal, &staff).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].1, Outcome::Allowed);
        // A refusal is audited before the call returns.
        t.open_read_pipelined("/1 M/Internal/secret.txt", 10)
            .await
            .unwrap_err();
        assert_eq!(reads(&portal, &staff).await.len(), 2);
    }

    /// A blob that can't be opened: the open was allowed and audited, every read says why.
    #[tokio::test]
    async fn a_pipelined_open_whose_blob_fails_fails_every_read() {
        struct Broken(MemBlobStore);
        #[async_trait]
        impl BlobStore for Broken {
            async fn stage(
                &self,
                m: MatterId,
                base: Option<&BlobRef>,
            ) -> Result<Box<dyn StagedBlob>> {
                self.0.stage(m, base).await
            }
            async fn open(&self, _m: MatterId, _b: &BlobRef) -> Result<Box<dyn BlobReader>> {
                Err(crate::Error::Integrity("blob damaged (test)".into()))
            }
            async fn remove(&self, m: MatterId, blob: &BlobRef) -> Result<()> {
                self.0.remove(m, blob).await
            }
            async fn retain(&self, live: &HashSet<BlobId>) -> Result<u64> {
                self.0.retain(live).await
            }
            async fn purge_matter(&self, m: MatterId) -> Result<()> {
                self.0.purge_matter(m).await
            }
        }
        let portal = PortalBuilder::memory()
            .blob_store(Arc::new(Broken(MemBlobStore::default())))
            .open()
            .await
            .unwrap();
        let (portal, alice, staff, _) = setup_on(portal).await;
        let t = portal.tree(alice);
        let mut h = t.open_read_pipelined("/1 M/Docs/a.txt", 100).await.unwrap();
        let e = h.read_at(0, 10).await.unwrap_err();
        assert!(matches!(e, crate::Error::Integrity(_)), "{e}");
        let e = h.read_at(0, 10).await.unwrap_err();
        assert!(e.to_string().contains("blob damaged"), "{e}");
        assert_eq!(reads(&portal, &staff).await.len(), 1);
    }
}

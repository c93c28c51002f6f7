//! Stat probes whose audit entries ride on the session's next commit.
//!
//! Clients probe before every transfer: OpenSSH's `sftp` sends `STAT` before each `put` and
//! `LSTAT` + `STAT` before each `get`. Each probe is a policy point like any other (resolved and
//! checked for the principal in its own read transaction, one audit entry each), but committing
//! each entry on its own costs one durable commit per probe, two or three per small file.
//!
//! A tree made with [`Tree::with_deferred_probes`] answers [`Tree::stat_probe`] as soon as the
//! check is done and keeps the probe's audit entry pending. Pending entries are committed, in
//! order and ahead of the operation's own entry, in the same commit as the next audit entry the
//! tree (or a handle opened from it) writes — the `open`'s or the upload's commit — or on their
//! own at the latest [`FLUSH_AFTER`] after the first one was taken, or once [`MAX_PENDING`] are
//! waiting. So every probe is still checked and recorded; only its entry's commit is shared. The
//! entry's time is its commit time (at most [`FLUSH_AFTER`] after the probe).
//! With batched durability the entries, once taken, go through the store's deferred queue
//! ([`crate::store::Store::write_deferred`]) like every read's entry; holding them here still
//! saves waking the writer for a probe that an upload's commit follows anyway.
//!
//! Such a tree also remembers what its last probe found (the resolved node and the answer) with
//! the store's [`data_epoch`](crate::store::Store::data_epoch) read before the probe's read
//! transaction. While that epoch has not moved, nothing the probe read has changed (no document,
//! folder, grant, permission or login; every such commit moves it before it is acknowledged), so
//! the same answer is still exact: OpenSSH's `LSTAT` + `STAT` + `OPEN` of one `get` cost one read
//! transaction (a probe that finds a document the principal may read also fetches what opening
//! it needs, [`Tree::open_read_pipelined`]), and an upload opened at a path just probed as
//! missing ([`Tree::open_write`]) decides without a second one. The reused probe is audited like any
//! other; the upload's commit resolves and checks again as always.

use super::resolve::Node;
use super::{Entry, Tree, object_of, readable_document, stat_node};
use crate::audit::{self, AuditAction, NewEntry, Outcome};
use crate::blob::BlobRef;
use crate::model::FolderId;
use crate::store::Committed;
use crate::{Error, Portal, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a probe's audit entry waits for a commit to ride on before it is committed alone.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Most probe entries kept pending; one more commits them at once.
pub const MAX_PENDING: usize = 64;

#[derive(Debug, Default)]
struct State {
    entries: Vec<NewEntry>,
    /// A timer task will commit what is pending.
    armed: bool,
}

/// What the last probe of a tree found, valid while the store's data epoch is `epoch`.
#[derive(Clone, Debug)]
struct Memo {
    path: String,
    epoch: u64,
    node: Node,
    /// The answer: the entry, or `None` for a missing name (the answer was "not found").
    entry: Option<Entry>,
    outcome: Outcome,
    /// A document the principal may read: what [`Tree::open_read_pipelined`] needs to open it.
    readable: Option<(Entry, BlobRef, FolderId)>,
}

/// The pending probe entries of one tree (shared by its clones and handles), and its last probe.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    state: Mutex<State>,
    memo: Mutex<Option<Memo>>,
}

impl Pending {
    /// Takes every pending entry (to be committed by the caller, ahead of its own).
    pub(crate) fn take(&self) -> Vec<NewEntry> {
        match self.state.lock() {
            Ok(mut s) => std::mem::take(&mut s.entries),
            Err(poisoned) => std::mem::take(&mut poisoned.into_inner().entries),
        }
    }

    /// Adds an entry; returns (entries now pending, whether the caller must arm a timer).
    fn push(&self, e: NewEntry) -> (usize, bool) {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.entries.push(e);
        let arm = !s.armed;
        s.armed = true;
        (s.entries.len(), arm)
    }

    /// The last probe of `path`, if nothing has changed since (`epoch` = the data epoch now).
    fn memo(&self, path: &str, epoch: u64) -> Option<Memo> {
        let m = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        m.as_ref()
            .filter(|m| m.epoch == epoch && m.path == path)
            .cloned()
    }

    fn remember(&self, memo: Option<Memo>) {
        *self.memo.lock().unwrap_or_else(|p| p.into_inner()) = memo;
    }

    fn disarm_and_take(&self) -> Vec<NewEntry> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.armed = false;
        std::mem::take(&mut s.entries)
    }
}

/// Commits `entries` (in order) in one write job: returns once it is durable with immediate
/// durability; with batched durability once it is queued (see [`send_entries`]).
pub(crate) async fn commit_entries(portal: &Portal, entries: Vec<NewEntry>) -> Result<()> {
    send_entries(portal, entries).await?.wait().await
}

/// Hands `entries` (in order) to the store's writer as one job ([`Store::write_deferred`]):
/// whatever the caller writes after this returns lands after them in the trail. The returned
/// [`Committed`] waits for their durable commit with immediate durability, for nothing with
/// batched durability (they are committed with the writer's next batch).
///
/// [`Store::write_deferred`]: crate::store::Store::write_deferred
pub(crate) async fn send_entries(portal: &Portal, entries: Vec<NewEntry>) -> Result<Committed<()>> {
    if entries.is_empty() {
        return Ok(Committed::nothing());
    }
    portal
        .inner
        .store
        .write_deferred(move |ctx| {
            for e in &entries {
                audit::append(ctx, e.clone())?;
            }
            Ok(())
        })
        .await
}

impl Tree {
    /// This tree, with [`Tree::stat_probe`]'s audit entries committed with the next commit (see
    /// the `tree::probes` module documentation). For front ends whose clients probe before each
    /// transfer (SFTP).
    pub fn with_deferred_probes(mut self) -> Self {
        self.probes = Some(Arc::new(Pending::default()));
        self
    }

    /// [`Tree::stat`] for a client's probe: the same resolution, permission check and audit entry,
    /// but on a tree made with [`Tree::with_deferred_probes`] the entry is committed with the
    /// tree's next commit instead of before returning. On other trees, exactly [`Tree::stat`].
    pub async fn stat_probe(&self, path: &str) -> Result<Entry> {
        let Some(pending) = self.probes.clone() else {
            return self.stat(path).await;
        };
        let epoch = self.portal.inner.store.data_epoch();
        let (res, matter, doc, outcome) = match pending.memo(path, epoch) {
            Some(m) => {
                let res = match (&m.entry, &m.node) {
                    (Some(e), _) => Ok(e.clone()),
                    (None, Node::Missing(_, _, name)) => Err(Error::NotFound(name.clone())),
                    (None, _) => Err(Error::NotFound(object_of(path))),
                };
                (res, m.node.matter(), m.node.document(), m.outcome)
            }
            None => {
                let r = self
                    .resolve_read(path, |db, _, node| {
                        let keep = node.clone();
                        let (r, over) = stat_node(db, node);
                        let res = r.map(|(e, _)| e);
                        let outcome = over.unwrap_or_else(|| Outcome::of(&res));
                        // Clients probe a document before they download it: what the download
                        // needs is read now, in the same transaction.
                        let readable = match (&keep, &outcome) {
                            (Node::Document(..), Outcome::Allowed) => {
                                readable_document(db, keep.clone()).ok()
                            }
                            _ => None,
                        };
                        (Ok((res, outcome, keep, readable)), None)
                    })
                    .await?;
                let (matter, doc) = (r.matter, r.doc);
                match r.res {
                    Ok((res, outcome, node, readable)) => {
                        // Remembered: a found entry, or a name that is simply not there.
                        let entry = match (&res, &node, &outcome) {
                            (Ok(e), _, Outcome::Allowed) => Some(Some(e.clone())),
                            (Err(Error::NotFound(_)), Node::Missing(..), _) => Some(None),
                            _ => None,
                        };
                        pending.remember(entry.map(|entry| Memo {
                            path: path.to_string(),
                            epoch,
                            node,
                            entry,
                            outcome: outcome.clone(),
                            readable,
                        }));
                        (res, matter, doc, outcome)
                    }
                    Err(e) => {
                        pending.remember(None);
                        let outcome = Outcome::from_err(&e);
                        (Err(e), matter, doc, outcome)
                    }
                }
            }
        };
        let entry = NewEntry {
            actor: self.actor.clone(),
            matter,
            document: doc,
            object: object_of(path),
            action: AuditAction::Stat,
            outcome,
        };
        let (n, arm) = pending.push(entry);
        if n >= MAX_PENDING {
            commit_entries(&self.portal, pending.take()).await?;
        } else if arm {
            let portal = self.portal.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FLUSH_AFTER).await;
                let entries = pending.disarm_and_take();
                let n = entries.len();
                if let Err(e) = commit_entries(&portal, entries).await {
                    tracing::warn!(error = %e, entries = n, "probe audit entries not committed");
                }
            });
        }
        res
    }

    /// Commits the pending probe entries now (nothing to do unless the tree defers probes). For a
    /// front end whose session ends.
    pub async fn flush_probes(&self) -> Result<()> {
        commit_entries(&self.portal, self.take_probes()).await
    }

    /// The node the tree's last probe resolved at `path`, if nothing has changed since (see the
    /// [module documentation](self)); `None` on trees that don't defer probes.
    pub(crate) fn probed_node(&self, path: &str) -> Option<Node> {
        let pending = self.probes.as_ref()?;
        let epoch = self.portal.inner.store.data_epoch();
        pending.memo(path, epoch).map(|m| m.node)
    }

    /// What opening the document at `path` for reading needs (entry, blob, folder), as the
    /// tree's last probe found it, if that probe allowed reading it and nothing has changed since.
    pub(crate) fn probed_readable(&self, path: &str) -> Option<(Entry, BlobRef, FolderId)> {
        let pending = self.probes.as_ref()?;
        let epoch = self.portal.inner.store.data_epoch();
        pending.memo(path, epoch).and_then(|m| m.readable)
    }

    /// Entries of earlier probes to commit ahead of this operation's own (empty unless the tree
    /// defers probes).
    pub(crate) fn take_probes(&self) -> Vec<NewEntry> {
        self.probes.as_ref().map(|p| p.take()).unwrap_or_default()
    }
}

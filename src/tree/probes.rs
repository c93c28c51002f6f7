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

use super::{Entry, Tree, object_of, stat_node};
use crate::audit::{self, AuditAction, NewEntry};
use crate::{Portal, Result};
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

/// The pending probe entries of one tree (shared by its clones and handles).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    state: Mutex<State>,
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

    fn disarm_and_take(&self) -> Vec<NewEntry> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.armed = false;
        std::mem::take(&mut s.entries)
    }
}

/// Commits `entries` (in order) in one write job; returns once durable.
pub(crate) async fn commit_entries(portal: &Portal, entries: Vec<NewEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    portal
        .inner
        .store
        .write(move |ctx| {
            for e in &entries {
                audit::append(ctx, e.clone())?;
            }
            Ok(())
        })
        .await
}

impl Tree {
    /// This tree, with [`Tree::stat_probe`]'s audit entries committed with the next commit (see
    /// the [module documentation](self)). For front ends whose clients probe before each
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
        let r = self
            .resolve_read(path, |db, _, node| {
                let (r, over) = stat_node(db, node);
                (r.map(|(e, _)| e), over)
            })
            .await?;
        let outcome = r.outcome();
        let (res, matter, doc, object) = (r.res, r.matter, r.doc, object_of(path));
        let (n, arm) = pending.push(NewEntry {
            actor: self.actor.clone(),
            matter,
            document: doc,
            object,
            action: AuditAction::Stat,
            outcome,
        });
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

    /// Entries of earlier probes to commit ahead of this operation's own (empty unless the tree
    /// defers probes).
    pub(crate) fn take_probes(&self) -> Vec<NewEntry> {
        self.probes.as_ref().map(|p| p.take()).unwrap_or_default()
    }
}

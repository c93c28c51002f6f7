//! The audit trail: append-only, hash-chained, queryable by staff.
//!
//! Every operation by anyone — staff, portal user, system — allowed or denied, appends one
//! [`AuditEntry`] in the same write transaction as the operation's effect (for reads, in the first
//! group commit after the read). Each stored entry carries `mac = chain_mac(prev_mac ‖ entry)`, where
//! `chain_mac` is keyed by the firm's audit key when the store is encrypted: an edited, deleted or
//! reordered entry breaks the chain and [`verify`] reports where.
//!
//! Portal users never read the trail; [`crate::Portal::audit_query`] is staff-only.

use crate::crypto::Scope;
use crate::model::*;
use crate::store::tables::{self, AUDIT, Key, LINKS, link_kind};
use crate::store::{Db, Tx, WriteCtx};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What was attempted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditAction {
    /// Stat of a tree path.
    Stat,
    /// Listing of a folder.
    List,
    /// Opening a document for reading.
    Read,
    /// Uploading a new document.
    Create,
    /// Replacing a document (new version).
    Update,
    /// Deleting (trashing) a document.
    Delete,
    /// Renaming or moving.
    Rename,
    /// Copying.
    Copy,
    /// Creating a folder.
    Mkdir,
    /// Removing a folder.
    Rmdir,
    /// A successful or failed authentication.
    Login,
    /// Message posted.
    PostMessage,
    /// Messages read.
    ReadMessages,
    /// Any staff/admin operation, named.
    Admin(String),
    /// A portal user's or visitor's account operation, named: invitation links opened or
    /// accepted, password reset and change, app passwords, lockouts.
    Account(String),
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AuditAction::Stat => "stat",
            AuditAction::List => "list",
            AuditAction::Read => "read",
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
            AuditAction::Rename => "rename",
            AuditAction::Copy => "copy",
            AuditAction::Mkdir => "mkdir",
            AuditAction::Rmdir => "rmdir",
            AuditAction::Login => "login",
            AuditAction::PostMessage => "post_message",
            AuditAction::ReadMessages => "read_messages",
            AuditAction::Admin(a) => return write!(f, "admin:{a}"),
            AuditAction::Account(a) => return write!(f, "account:{a}"),
        };
        f.write_str(s)
    }
}

/// How it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Allowed and done.
    Allowed,
    /// Refused by policy; the reason.
    Denied(String),
    /// Allowed but failed (not found, conflict, I/O…); the reason.
    Failed(String),
}

impl Outcome {
    /// From an operation's result.
    pub fn of<T>(r: &Result<T>) -> Outcome {
        match r {
            Ok(_) => Outcome::Allowed,
            Err(e) => Outcome::from_err(e),
        }
    }
    /// From an error.
    pub fn from_err(e: &Error) -> Outcome {
        if e.is_denied() {
            Outcome::Denied(e.to_string())
        } else {
            Outcome::Failed(e.to_string())
        }
    }
    /// `allowed`, `denied` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied(_) => "denied",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the trail (from 1, no gaps).
    pub seq: u64,
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: Principal,
    /// Through which front end.
    pub channel: Channel,
    /// Client address.
    pub remote: Option<String>,
    /// Matter concerned.
    pub matter: Option<MatterId>,
    /// Document concerned.
    pub document: Option<DocumentId>,
    /// The object as a path or description (e.g. `/2026-001 Smith/Client Documents/a.pdf`).
    pub object: String,
    /// What was attempted.
    pub action: AuditAction,
    /// How it ended.
    pub outcome: Outcome,
}

/// An entry before it gets its place in the trail.
#[derive(Clone, Debug)]
pub struct NewEntry {
    /// Who, how, from where.
    pub actor: Actor,
    /// Matter concerned.
    pub matter: Option<MatterId>,
    /// Document concerned.
    pub document: Option<DocumentId>,
    /// Object description.
    pub object: String,
    /// Action.
    pub action: AuditAction,
    /// Outcome.
    pub outcome: Outcome,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    entry: AuditEntry,
    prev: [u8; 32],
    mac: [u8; 32],
}

fn chain_input(prev: &[u8; 32], entry: &AuditEntry) -> Result<Vec<u8>> {
    let mut v = prev.to_vec();
    v.extend(
        postcard::to_stdvec(entry)
            .map_err(|e| Error::Storage(format!("encoding an audit entry failed: {e}")))?,
    );
    Ok(v)
}

/// Appends an entry inside a write job. Returns its sequence number.
pub fn append(ctx: &mut WriteCtx<'_>, e: NewEntry) -> Result<u64> {
    // Audit entries change nothing a read of the tree sees (`Store::data_epoch`).
    ctx.audit_only(|ctx| append_entry(ctx, e))
}

fn append_entry(ctx: &mut WriteCtx<'_>, e: NewEntry) -> Result<u64> {
    let seq = ctx.state.audit_next_seq;
    let entry = AuditEntry {
        seq,
        at: now_millis(),
        actor: e.actor.principal,
        channel: e.actor.channel,
        remote: e.actor.remote.map(|a| a.to_string()),
        matter: e.matter,
        document: e.document,
        object: e.object,
        action: e.action,
        outcome: e.outcome,
    };
    let prev = ctx.state.audit_last_mac;
    let mac = ctx.sealer.chain_mac(&chain_input(&prev, &entry)?);
    let key = tables::ids(&[seq]);
    ctx.put(
        AUDIT,
        Scope::Global,
        &key,
        &Stored {
            entry: entry.clone(),
            prev,
            mac,
        },
    )?;
    if let Some(m) = entry.matter {
        let k = Key::kind(link_kind::AUDIT_BY_MATTER).id(m.0).id(seq).done();
        ctx.put_raw(LINKS, &k, &[])?;
        if let Some(d) = entry.document {
            let k = Key::kind(link_kind::AUDIT_BY_DOC)
                .id(m.0)
                .id(d.0)
                .id(seq)
                .done();
            ctx.put_raw(LINKS, &k, &[])?;
        }
    }
    if let Some(l) = entry.actor.login() {
        let k = Key::kind(link_kind::AUDIT_BY_LOGIN).id(l.0).id(seq).done();
        ctx.put_raw(LINKS, &k, &[])?;
    }
    ctx.state.audit_next_seq = seq + 1;
    ctx.state.audit_last_mac = mac;
    Ok(seq)
}

/// The next sequence number and the last MAC, read at open.
pub fn chain_head<T: Tx + ?Sized>(db: &Db<'_, T>) -> Result<(u64, [u8; 32])> {
    match db.tx.last_raw(AUDIT)? {
        None => Ok((1, [0u8; 32])),
        Some((k, _)) => {
            let seq = tables::id_from(&k)
                .ok_or_else(|| Error::Integrity("an audit key is malformed".into()))?;
            let s: Stored = db.need(AUDIT, Scope::Global, &k, "last audit entry")?;
            Ok((seq + 1, s.mac))
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// `None` if the chain is intact; otherwise the first problem found.
    pub problem: Option<String>,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Walks the whole trail and checks the chain: sequence numbers from 1 without gaps, each entry's
/// `prev` equal to the MAC before it, each MAC recomputed.
pub fn verify<T: Tx + ?Sized>(db: &Db<'_, T>) -> Result<VerifyReport> {
    let mut expect_seq = 1u64;
    let mut prev = [0u8; 32];
    let mut from: Vec<u8> = Vec::new();
    let mut entries = 0u64;
    const PAGE: usize = 4096;
    loop {
        let raw = db.tx.range_raw(AUDIT, &from, &[], PAGE, false)?;
        if raw.is_empty() {
            break;
        }
        for (k, sealed) in &raw {
            let bad = |what: String| -> Result<VerifyReport> {
                Ok(VerifyReport {
                    entries,
                    problem: Some(what),
                })
            };
            let Some(seq) = tables::id_from(k) else {
                return bad("an audit key is malformed".into());
            };
            if seq != expect_seq {
                return bad(format!(
                    "entry {expect_seq} is missing (next entry found is {seq}): entries were deleted"
                ));
            }
            let plain = match db
                .sealer
                .open(Scope::Global, &crate::store::aad(AUDIT, k), sealed)
            {
                Ok(p) => p,
                Err(_) => {
                    return bad(format!(
                        "entry {seq} fails its integrity check: it was edited or moved"
                    ));
                }
            };
            let s: Stored = match postcard::from_bytes(&plain) {
                Ok(s) => s,
                Err(_) => return bad(format!("entry {seq} is malformed: it was edited")),
            };
            if s.entry.seq != seq {
                return bad(format!(
                    "entry {seq} carries sequence {}: entries were reordered",
                    s.entry.seq
                ));
            }
            if s.prev != prev {
                return bad(format!(
                    "entry {seq} does not follow entry {}: the chain is broken",
                    seq - 1
                ));
            }
            if db.sealer.chain_mac(&chain_input(&prev, &s.entry)?) != s.mac {
                return bad(format!("entry {seq} was edited: its MAC does not match"));
            }
            prev = s.mac;
            expect_seq += 1;
            entries += 1;
        }
        if let Some((k, _)) = raw.last() {
            from = k.clone();
            from.push(0);
        }
    }
    Ok(VerifyReport {
        entries,
        problem: None,
    })
}

/// What to select in [`crate::Portal::audit_query`].
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this matter.
    pub matter: Option<MatterId>,
    /// Only this document (needs `matter`).
    pub document: Option<DocumentId>,
    /// Only this login's actions.
    pub login: Option<LoginId>,
    /// Only entries at or after this time.
    pub since: Option<Millis>,
    /// At most this many, newest first (default 100, at most 100,000).
    pub limit: Option<usize>,
}

/// Runs a query: newest first.
pub fn query<T: Tx + ?Sized>(db: &Db<'_, T>, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let limit = f.limit.unwrap_or(100).min(100_000);
    let seqs: Vec<u64> = match (f.matter, f.document, f.login) {
        (Some(m), Some(d), _) => {
            let p = Key::kind(link_kind::AUDIT_BY_DOC).id(m.0).id(d.0).done();
            db.scan_keys(LINKS, &p, usize::MAX)?
                .iter()
                .filter_map(|k| tables::id_at(k, 17))
                .collect()
        }
        (Some(m), None, _) => {
            let p = Key::kind(link_kind::AUDIT_BY_MATTER).id(m.0).done();
            db.scan_keys(LINKS, &p, usize::MAX)?
                .iter()
                .filter_map(|k| tables::id_at(k, 9))
                .collect()
        }
        (None, _, Some(l)) => {
            let p = Key::kind(link_kind::AUDIT_BY_LOGIN).id(l.0).done();
            db.scan_keys(LINKS, &p, usize::MAX)?
                .iter()
                .filter_map(|k| tables::id_at(k, 9))
                .collect()
        }
        (None, _, None) => {
            // Newest first straight from the trail.
            let raw = db.tx.range_raw(AUDIT, &[], &[], limit, true)?;
            let mut seqs: Vec<u64> = raw.iter().filter_map(|(k, _)| tables::id_from(k)).collect();
            seqs.reverse();
            seqs
        }
    };
    let mut out = Vec::new();
    for seq in seqs.into_iter().rev() {
        if out.len() >= limit {
            break;
        }
        let s: Option<Stored> = db.get(AUDIT, Scope::Global, &tables::ids(&[seq]))?;
        let Some(s) = s else { continue };
        if let Some(since) = f.since
            && s.entry.at < since
        {
            break;
        }
        if let Some(l) = f.login
            && s.entry.actor.login() != Some(l)
        {
            continue;
        }
        out.push(s.entry);
    }
    Ok(out)
}

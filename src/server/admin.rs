//! The admin commands: one request type, executed the same way by a running server (through the
//! admin socket) and by the CLI on a data dir no server holds.

use super::{Failure, Opened};
use crate::audit::{AuditAction, AuditEntry, AuditFilter, NewEntry, Outcome};
use crate::model::*;
use crate::portal::ParticipantInfo;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Most audit entries one export returns (the query's limit).
pub const EXPORT_LIMIT: usize = 100_000;

/// An admin request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdminRequest {
    /// Who is serving (answered only by a server).
    Ping,
    /// Apply a portal file.
    Apply {
        /// The file's name, for messages.
        name: String,
        /// Its text.
        text: String,
        /// Only report what would change.
        dry_run: bool,
    },
    /// Grant a participant portal access (adding them to the matter first if a type is given).
    Grant {
        /// Matter number.
        matter: String,
        /// Contact email.
        contact: String,
        /// Participant type (needed if the contact is not yet a participant, or takes part twice).
        participant_type: Option<String>,
    },
    /// Revoke a participant's portal access.
    Revoke {
        /// Matter number.
        matter: String,
        /// Contact email.
        contact: String,
        /// Participant type (needed if the contact takes part twice).
        participant_type: Option<String>,
    },
    /// Close a matter.
    CloseMatter {
        /// Matter number.
        matter: String,
    },
    /// Reopen a matter.
    ReopenMatter {
        /// Matter number.
        matter: String,
    },
    /// List matters.
    ListMatters {
        /// JSON lines instead of a table.
        json: bool,
    },
    /// List logins.
    ListUsers {
        /// JSON lines instead of a table.
        json: bool,
    },
    /// Export the audit trail, oldest first.
    AuditExport {
        /// Output format.
        format: ExportFormat,
        /// Only this matter (number).
        matter: Option<String>,
        /// Only this login (email).
        user: Option<String>,
        /// Only entries at or after this time (ms since the epoch).
        since: Option<u64>,
    },
    /// Check the audit trail's hash chain.
    AuditVerify,
    /// Re-wrap every key under a new master key.
    KeyRotate {
        /// Where to write the new key; default: replace the key file in place.
        new_key: Option<PathBuf>,
    },
    /// Write a consistent copy of the data dir.
    Backup {
        /// Target directory (must not exist, or be empty).
        out: PathBuf,
    },
}

/// Audit export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// One piece of a command's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frame {
    /// A line for standard output.
    Out(String),
    /// A line for standard error (progress, warnings).
    Err(String),
}

/// Where a command writes its output.
pub type Output = mpsc::Sender<Frame>;

async fn out(o: &Output, line: impl Into<String>) {
    let _ = o.send(Frame::Out(line.into())).await;
}

async fn warn(o: &Output, line: impl Into<String>) {
    let _ = o.send(Frame::Err(line.into())).await;
}

/// What admin commands run against.
#[derive(Debug)]
pub struct AdminCtx {
    /// The open data dir.
    pub opened: Opened,
    /// Whether a server runs in this process (for `ping`).
    pub serving: bool,
    apply_lock: tokio::sync::Mutex<()>,
}

impl AdminCtx {
    /// A context over an open data dir.
    pub fn new(opened: Opened, serving: bool) -> Self {
        AdminCtx {
            opened,
            serving,
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// Records an admin action of the CLI in the audit trail.
pub(crate) async fn audit_admin(
    ctx: &AdminCtx,
    action: &str,
    object: String,
    outcome: Outcome,
) -> Result<(), Failure> {
    ctx.opened
        .portal
        .audit(NewEntry {
            actor: Actor::system(),
            matter: None,
            document: None,
            object,
            action: AuditAction::Admin(action.to_string()),
            outcome,
        })
        .await
        .map_err(Failure::from)
}

async fn matter_by_number(ctx: &AdminCtx, number: &str) -> Result<MatterId, Failure> {
    ctx.opened
        .portal
        .find_matter(&Actor::system(), number)
        .await?
        .ok_or_else(|| {
            Failure(format!(
                "no matter numbered {number} (see `sdx matter list`)"
            ))
        })
}

/// The participant of `contact` in `matter` that a grant or revoke is about.
async fn participant(
    ctx: &AdminCtx,
    matter: MatterId,
    number: &str,
    email: &str,
    ptype: Option<&str>,
    add: bool,
) -> Result<(ParticipantInfo, String), Failure> {
    let p = &ctx.opened.portal;
    let sys = Actor::system();
    let contact = p.find_contact(&sys, email).await?.ok_or_else(|| {
        Failure(format!(
            "no contact with email {email}: add them with `sdx apply` (a [[contacts]] entry)"
        ))
    })?;
    let types = p.participant_types(&sys).await?;
    let type_name = |id: ParticipantTypeId| {
        types
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("type {id}"))
    };
    let wanted = match ptype {
        None => None,
        Some(t) => Some(
            p.find_participant_type(&sys, t)
                .await?
                .ok_or_else(|| Failure(format!("no participant type \"{t}\"")))?,
        ),
    };
    let all: Vec<ParticipantInfo> = p
        .participants(&sys, matter)
        .await?
        .into_iter()
        .filter(|x| x.contact == contact.id && wanted.is_none_or(|w| w == x.participant_type))
        .collect();
    match (all.as_slice(), wanted) {
        ([one], _) => Ok((one.clone(), type_name(one.participant_type))),
        ([], Some(t)) if add => {
            let id = p.add_participant(&sys, matter, contact.id, t).await?;
            Ok((
                ParticipantInfo {
                    id,
                    matter,
                    contact: contact.id,
                    participant_type: t,
                    portal_access: false,
                },
                type_name(t),
            ))
        }
        ([], _) => Err(Failure(format!(
            "{email} does not take part in matter {number}{}",
            if add { ": give --type to add them" } else { "" }
        ))),
        (many, _) => Err(Failure(format!(
            "{email} takes part in matter {number} as {}: give --type",
            many.iter()
                .map(|x| type_name(x.participant_type))
                .collect::<Vec<_>>()
                .join(" and ")
        ))),
    }
}

/// Runs one request, writing its output to `o`. An `Err` is the command's one-line failure.
pub async fn execute(ctx: &AdminCtx, req: AdminRequest, o: &Output) -> Result<(), Failure> {
    let p = &ctx.opened.portal;
    let sys = Actor::system();
    match req {
        AdminRequest::Ping => {
            out(
                o,
                format!(
                    "sdx {} {} {} (pid {})",
                    env!("CARGO_PKG_VERSION"),
                    if ctx.serving { "serving" } else { "opened" },
                    ctx.opened.data.display(),
                    std::process::id()
                ),
            )
            .await;
            Ok(())
        }
        AdminRequest::Apply {
            name,
            text,
            dry_run,
        } => {
            let file = crate::provision::PortalFile::parse(&text)
                .map_err(|e| Failure(format!("{name} {e}")))?;
            let _guard = ctx.apply_lock.lock().await;
            match crate::provision::apply(p, &sys, &file, dry_run).await {
                Ok(report) => {
                    for c in &report.changes {
                        out(o, c.to_string()).await;
                    }
                    let n = report.changes.len();
                    out(
                        o,
                        match (n, dry_run) {
                            (0, _) => format!("no changes: the portal already matches {name}"),
                            (n, true) => {
                                format!("{n} change(s) would be made (dry run: nothing changed)")
                            }
                            (n, false) => format!("{n} change(s) applied"),
                        },
                    )
                    .await;
                    Ok(())
                }
                Err(f) => {
                    for c in &f.done {
                        out(o, c.to_string()).await;
                    }
                    let note = if f.done.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} change(s) above were made; fix the file and apply again)",
                            f.done.len()
                        )
                    };
                    Err(Failure(format!("{name} {}{note}", f.error)))
                }
            }
        }
        AdminRequest::Grant {
            matter,
            contact,
            participant_type,
        } => {
            let m = matter_by_number(ctx, &matter).await?;
            let (part, tname) =
                participant(ctx, m, &matter, &contact, participant_type.as_deref(), true).await?;
            let g = p.grant_access(&sys, m, part.id).await?;
            let msg = if !g.granted {
                format!("{contact} ({tname}) already has portal access to {matter}")
            } else {
                let inv = match g.invitation_kind {
                    Some(crate::store::records::InvitationKind::NewLogin) => {
                        "; an invitation to create a login was recorded"
                    }
                    Some(crate::store::records::InvitationKind::NewMatter) => {
                        "; a new-matter notice was recorded"
                    }
                    _ => "",
                };
                format!("granted {contact} ({tname}) portal access to {matter}{inv}")
            };
            out(o, msg).await;
            Ok(())
        }
        AdminRequest::Revoke {
            matter,
            contact,
            participant_type,
        } => {
            let m = matter_by_number(ctx, &matter).await?;
            let (part, tname) = participant(
                ctx,
                m,
                &matter,
                &contact,
                participant_type.as_deref(),
                false,
            )
            .await?;
            let done = p.revoke_access(&sys, m, part.id).await?;
            out(
                o,
                if done {
                    format!("revoked the portal access of {contact} ({tname}) to {matter}")
                } else {
                    format!("{contact} ({tname}) had no portal access to {matter}")
                },
            )
            .await;
            Ok(())
        }
        AdminRequest::CloseMatter { matter } => {
            let m = matter_by_number(ctx, &matter).await?;
            p.close_matter(&sys, m).await?;
            out(o, format!("closed matter {matter}")).await;
            Ok(())
        }
        AdminRequest::ReopenMatter { matter } => {
            let m = matter_by_number(ctx, &matter).await?;
            p.reopen_matter(&sys, m).await?;
            out(o, format!("reopened matter {matter}")).await;
            Ok(())
        }
        AdminRequest::ListMatters { json } => list_matters(ctx, json, o).await,
        AdminRequest::ListUsers { json } => list_users(ctx, json, o).await,
        AdminRequest::AuditExport {
            format,
            matter,
            user,
            since,
        } => audit_export(ctx, format, matter, user, since, o).await,
        AdminRequest::AuditVerify => {
            let r = p.audit_verify(&sys).await?;
            match r.problem {
                None => {
                    out(o, format!("audit trail intact: {} entries", r.entries)).await;
                    Ok(())
                }
                Some(problem) => Err(Failure(format!(
                    "audit trail broken after {} good entries: {problem}",
                    r.entries
                ))),
            }
        }
        AdminRequest::KeyRotate { new_key } => key_rotate(ctx, new_key, o).await,
        AdminRequest::Backup { out: dir } => {
            let r = super::backup::backup(ctx, &dir, o).await?;
            out(o, r.summary()).await;
            Ok(())
        }
    }
}

async fn list_matters(ctx: &AdminCtx, json: bool, o: &Output) -> Result<(), Failure> {
    let p = &ctx.opened.portal;
    let sys = Actor::system();
    let types = p.matter_types(&sys).await?;
    let mut matters = p.matters(&sys).await?;
    matters.sort_by(|a, b| a.number.cmp(&b.number));
    if !json {
        out(
            o,
            format!(
                "{:<14} {:<8} {:<16} {:>6}  TITLE",
                "NUMBER", "STATUS", "TYPE", "ACCESS"
            ),
        )
        .await;
    }
    for m in matters {
        let access = p
            .participants(&sys, m.id)
            .await?
            .iter()
            .filter(|x| x.portal_access)
            .count();
        let tname = types
            .iter()
            .find(|t| t.id == m.matter_type)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let status = if m.closed { "closed" } else { "open" };
        if json {
            let v = serde_json::json!({
                "number": m.number, "title": m.title, "matter_type": tname,
                "closed": m.closed, "portal_access": access, "folder": m.display,
            });
            out(o, v.to_string()).await;
        } else {
            out(
                o,
                format!(
                    "{:<14} {:<8} {:<16} {:>6}  {}",
                    m.number, status, tname, access, m.title
                ),
            )
            .await;
        }
    }
    Ok(())
}

async fn list_users(ctx: &AdminCtx, json: bool, o: &Output) -> Result<(), Failure> {
    let p = &ctx.opened.portal;
    let sys = Actor::system();
    let mut logins = p.logins(&sys).await?;
    logins.sort_by(|a, b| (!a.staff, &a.email).cmp(&(!b.staff, &b.email)));
    if !json {
        out(
            o,
            format!(
                "{:<32} {:<7} {:<9} {:<8} {:>4}  NAME",
                "EMAIL", "KIND", "STATE", "PASSWORD", "KEYS"
            ),
        )
        .await;
    }
    for l in logins {
        let kind = if l.staff { "staff" } else { "portal" };
        let state = if l.disabled {
            "disabled"
        } else if !l.verified {
            "invited"
        } else {
            "active"
        };
        if json {
            let v = serde_json::json!({
                "email": l.email, "name": l.name, "kind": kind, "state": state,
                "has_password": l.has_password, "ssh_keys": l.ssh_keys,
            });
            out(o, v.to_string()).await;
        } else {
            out(
                o,
                format!(
                    "{:<32} {:<7} {:<9} {:<8} {:>4}  {}",
                    l.email,
                    kind,
                    state,
                    if l.has_password { "set" } else { "-" },
                    l.ssh_keys,
                    l.name
                ),
            )
            .await;
        }
    }
    Ok(())
}

/// The flat record both export formats write.
#[derive(Serialize)]
struct ExportRow {
    seq: u64,
    time: String,
    at_ms: u64,
    actor: String,
    channel: String,
    remote: String,
    matter: String,
    document: String,
    object: String,
    action: String,
    outcome: String,
    reason: String,
}

fn row(e: &AuditEntry, matter_numbers: &std::collections::HashMap<MatterId, String>) -> ExportRow {
    let (outcome, reason) = match &e.outcome {
        Outcome::Allowed => ("allowed", String::new()),
        Outcome::Denied(r) => ("denied", r.clone()),
        Outcome::Failed(r) => ("failed", r.clone()),
    };
    ExportRow {
        seq: e.seq,
        time: super::rfc3339(e.at),
        at_ms: e.at,
        actor: e.actor.to_string(),
        channel: e.channel.to_string(),
        remote: e.remote.clone().unwrap_or_default(),
        matter: e
            .matter
            .map(|m| {
                matter_numbers
                    .get(&m)
                    .cloned()
                    .unwrap_or_else(|| m.to_string())
            })
            .unwrap_or_default(),
        document: e.document.map(|d| d.to_string()).unwrap_or_default(),
        object: e.object.clone(),
        action: e.action.to_string(),
        outcome: outcome.into(),
        reason,
    }
}

/// One CSV field (RFC 4180), with a leading `'` on text a spreadsheet would run as a formula:
/// object names come from portal users.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

const CSV_HEADER: &str =
    "seq,time,at_ms,actor,channel,remote,matter,document,object,action,outcome,reason";

async fn audit_export(
    ctx: &AdminCtx,
    format: ExportFormat,
    matter: Option<String>,
    user: Option<String>,
    since: Option<u64>,
    o: &Output,
) -> Result<(), Failure> {
    let p = &ctx.opened.portal;
    let sys = Actor::system();
    let matter_id = match &matter {
        Some(n) => Some(matter_by_number(ctx, n).await?),
        None => None,
    };
    let login = match &user {
        Some(e) => Some(
            p.find_login(&sys, e)
                .await?
                .ok_or_else(|| Failure(format!("no login with email {e} (see `sdx user list`)")))?
                .id,
        ),
        None => None,
    };
    let numbers = p
        .matters(&sys)
        .await?
        .into_iter()
        .map(|m| (m.id, m.number))
        .collect();
    let mut entries = p
        .audit_query(
            &sys,
            AuditFilter {
                matter: matter_id,
                document: None,
                login,
                since,
                limit: Some(EXPORT_LIMIT),
            },
        )
        .await?;
    // With both a matter and a user, the query selects by matter; keep that user's entries.
    if let (Some(_), Some(l)) = (matter_id, login) {
        entries.retain(|e| e.actor.login() == Some(l));
    }
    if entries.len() >= EXPORT_LIMIT {
        warn(
            o,
            format!(
                "warning: only the newest {EXPORT_LIMIT} entries were exported; export older ones in parts with --since"
            ),
        )
        .await;
    }
    if format == ExportFormat::Csv {
        out(o, CSV_HEADER).await;
    }
    for e in entries.iter().rev() {
        let r = row(e, &numbers);
        let line = match format {
            ExportFormat::Jsonl => serde_json::to_string(&r)
                .map_err(|e| Failure(format!("encoding an audit entry failed: {e}")))?,
            ExportFormat::Csv => [
                r.seq.to_string(),
                r.time,
                r.at_ms.to_string(),
                r.actor,
                r.channel,
                r.remote,
                r.matter,
                r.document,
                r.object,
                r.action,
                r.outcome.to_string(),
                r.reason,
            ]
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(","),
        };
        out(o, line).await;
    }
    warn(o, format!("{} audit entries exported", entries.len())).await;
    Ok(())
}

async fn key_rotate(ctx: &AdminCtx, new_key: Option<PathBuf>, o: &Output) -> Result<(), Failure> {
    let data = &ctx.opened.data;
    let current = ctx.opened.key.file_in(data);
    let (target, replace) = match (new_key, current) {
        (Some(p), _) => (p, None),
        (None, Some(cur)) => (
            PathBuf::from(format!("{}{}", cur.display(), super::NEW_KEY_SUFFIX)),
            Some(cur),
        ),
        (None, None) => {
            return Err(Failure(
                "the master key comes from an environment variable: give --new-key FILE for the new key, then change the variable"
                    .into(),
            ));
        }
    };
    if target.exists() {
        return Err(Failure(format!(
            "{} exists (left by an interrupted rotation?): if the portal opens with the current key, delete it and rotate again",
            target.display()
        )));
    }
    crate::crypto::KeyFile::create(&target)?;
    let keys = ctx.opened.keyring.clone();
    let t = target.clone();
    let res = tokio::task::spawn_blocking(move || keys.rotate(&crate::crypto::KeyFile::new(t)))
        .await
        .map_err(|e| Failure(format!("key rotation task failed: {e}")))?;
    if let Err(e) = res {
        let _ = std::fs::remove_file(&target);
        audit_admin(
            ctx,
            "key_rotate",
            String::new(),
            Outcome::Failed(e.to_string()),
        )
        .await?;
        return Err(Failure(format!(
            "key rotation failed, nothing changed: {e}"
        )));
    }
    audit_admin(ctx, "key_rotate", String::new(), Outcome::Allowed).await?;
    match replace {
        Some(cur) => {
            std::fs::rename(&target, &cur).map_err(|e| {
                Failure(format!(
                    "the database now needs the new key in {}, but moving it to {} failed: {e}; move it by hand",
                    target.display(),
                    cur.display()
                ))
            })?;
            if let Some(dir) = cur.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            out(
                o,
                format!(
                    "rotated the master key: {} holds the new key and the old one is gone (backups made before now still need the old key)",
                    cur.display()
                ),
            )
            .await;
        }
        None => {
            out(
                o,
                format!(
                    "rotated the master key: the new key is in {}; point the key provider at it before the next start",
                    target.display()
                ),
            )
            .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use std::sync::Arc;

    async fn ctx() -> AdminCtx {
        let db = Arc::new(crate::store::memory_database().unwrap());
        let master = crate::crypto::MasterKey::random().unwrap();
        let keyring = crate::crypto::Keyring::open(db.clone(), &master).unwrap();
        let portal = crate::Portal::start(
            db,
            Arc::new(keyring.sealer()),
            Arc::new(crate::blob::mem::MemBlobStore::default()),
            None,
        )
        .await
        .unwrap();
        let file = r#"
[firm]
participant_types = ["Client", "Expert"]
[[matter_types]]
name = "General"
folders = ["Docs"]
[matter_types.portal."Docs"]
Client = ["list"]
[[contacts]]
key = "a"
name = "A"
email = "a@x.test"
[[contacts]]
key = "b"
name = "B"
email = "b@x.test"
[[matters]]
number = "M-1"
title = "One"
matter_type = "General"
participants = [ { contact = "a", type = "Client" }, { contact = "a", type = "Expert" } ]
"#;
        crate::provision::apply_text(&portal, &Actor::system(), file, false)
            .await
            .unwrap();
        AdminCtx::new(
            Opened {
                portal,
                keyring,
                data: PathBuf::from("/nonexistent"),
                key: KeySource::Env("UNUSED".into()),
            },
            false,
        )
    }

    async fn exec(ctx: &AdminCtx, req: AdminRequest) -> (Result<(), Failure>, Vec<Frame>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let r = execute(ctx, req, &tx).await;
        drop(tx);
        let mut frames = Vec::new();
        while let Some(f) = rx.recv().await {
            frames.push(f);
        }
        (r, frames)
    }

    fn grant(contact: &str, t: Option<&str>) -> AdminRequest {
        AdminRequest::Grant {
            matter: "M-1".into(),
            contact: contact.into(),
            participant_type: t.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn grant_needs_a_type_only_when_it_is_ambiguous_or_new() {
        let ctx = ctx().await;
        let (r, _) = exec(&ctx, grant("a@x.test", None)).await;
        let e = r.unwrap_err().0;
        assert!(e.contains("as Client and Expert: give --type"), "{e}");
        let (r, out) = exec(&ctx, grant("a@x.test", Some("client"))).await;
        r.unwrap();
        assert!(
            matches!(&out[0], Frame::Out(l) if l.starts_with("granted a@x.test (Client) portal access to M-1")),
            "{out:?}"
        );
        let (r, out) = exec(&ctx, grant("a@x.test", Some("Client"))).await;
        r.unwrap();
        assert!(
            matches!(&out[0], Frame::Out(l) if l.contains("already has")),
            "{out:?}"
        );
        // b is not a participant: without a type that's an error, with one they are added.
        let (r, _) = exec(&ctx, grant("b@x.test", None)).await;
        assert!(r.unwrap_err().0.contains("give --type to add them"));
        exec(&ctx, grant("b@x.test", Some("Expert")))
            .await
            .0
            .unwrap();
        let (r, _) = exec(&ctx, grant("nobody@x.test", Some("Expert"))).await;
        assert!(r.unwrap_err().0.contains("no contact with email"));
        let (r, _) = exec(
            &ctx,
            AdminRequest::CloseMatter {
                matter: "M-404".into(),
            },
        )
        .await;
        assert!(r.unwrap_err().0.contains("no matter numbered M-404"));
        let (r, out) = exec(&ctx, AdminRequest::ListMatters { json: true }).await;
        r.unwrap();
        let Frame::Out(l) = &out[0] else {
            panic!("{out:?}")
        };
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["portal_access"], 2, "{v}");
        // Rotation without a key file needs a target.
        let (r, _) = exec(&ctx, AdminRequest::KeyRotate { new_key: None }).await;
        assert!(r.unwrap_err().0.contains("--new-key"));
    }

    #[tokio::test]
    async fn key_rotation_to_a_new_file_rewraps_under_that_key() {
        let ctx = ctx().await;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new.key");
        let (r, out) = exec(
            &ctx,
            AdminRequest::KeyRotate {
                new_key: Some(target.clone()),
            },
        )
        .await;
        r.unwrap();
        assert!(
            matches!(&out[0], Frame::Out(l) if l.contains("new.key")),
            "{out:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        // The database now opens with the new key only, and the portal keeps working.
        let db = ctx.opened.keyring.database().clone();
        assert!(
            crate::crypto::Keyring::open(db.clone(), &crate::crypto::KeyFile::new(&target)).is_ok()
        );
        assert!(
            crate::crypto::Keyring::open(db, &crate::crypto::MasterKey::random().unwrap()).is_err()
        );
        exec(&ctx, grant("b@x.test", Some("Client")))
            .await
            .0
            .unwrap();
        // A second rotation to the same file is refused (it exists).
        let (r, _) = exec(
            &ctx,
            AdminRequest::KeyRotate {
                new_key: Some(target),
            },
        )
        .await;
        assert!(r.unwrap_err().0.contains("exists"));
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-1+2,x"), "\"'-1+2,x\"");
    }
}

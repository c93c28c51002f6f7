//! Invitations and password-reset links.
//!
//! **Invitations.** [`Portal::grant_access`] records one and mails it: "create your login" to a
//! contact without a login (or with a login that has no password yet), "you now have access to
//! matter X" to one with a login. The link carries a 256-bit random token; only its SHA-256 is
//! stored, under an index that keeps every token ever sent for the invitation, so a link that
//! was superseded by a re-send, used, revoked or expired is recognised and answered with a clear
//! page instead of a bare "not found". Links are single use: accepting marks the invitation
//! accepted in the same write transaction that creates the login (the store's single writer
//! serialises two browsers racing on one link). Staff re-send (new token, the old one dies at
//! once) and revoke. Accepting a "create your login" invitation verifies the e-mail address
//! (the person proved they read the mailbox), creates the login with the chosen password, and
//! gives access to every matter the contact was granted; a "new matter" one only confirms.
//!
//! **Password reset.** [`Portal::request_password_reset`] answers the same whether or not the
//! address belongs to a login; for an enabled login it mails a link (1 hour by default, at most
//! one per minute per login, a new link revokes the older ones). The link sets a new password
//! (strength-checked), marks the address verified and clears the login's failed-attempt
//! counters.
//!
//! Everything is audited: sending (`admin:send_invitation`), re-sending and revoking (`admin:*`),
//! opening, accepting and every refused link (`account:*` on channel `web`, with the address).

use super::Portal;
use super::admin::login_email_key;
use super::credentials::weak_error;
use super::logins::{find_login, principal_of};
use crate::accounts::password::{self, WeakPassword};
use crate::accounts::templates;
use crate::accounts::tokens::{Token, TokenHash};
use crate::audit::{self, AuditAction, NewEntry, Outcome};
use crate::crypto::Scope;
use crate::model::*;
use crate::store::records::*;
use crate::store::tables::{
    self, CONTACTS, INVITATIONS, Key, LOGINS, MATTERS, NAMES, RESETS, name_kind,
};
use crate::store::{Db, Tx, WriteCtx};
use crate::{Error, Result};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// At most one password-reset mail per login in this time.
pub const RESET_COOLDOWN: Duration = Duration::from_secs(60);
/// Used or expired reset links are forgotten this long after they expire.
const RESET_KEEP_MILLIS: u64 = 24 * 3600 * 1000;

/// Why an invitation or reset link can't be used. The messages are meant for the person who
/// followed the link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// No such link (mistyped, cut off, or never issued).
    #[error("this link is not valid: check that you copied the whole address from the e-mail")]
    Unknown,
    /// The link's lifetime is over.
    #[error("this link has expired")]
    Expired,
    /// The link was already used.
    #[error("this link has already been used")]
    Used,
    /// Staff withdrew the invitation, or a newer reset link replaced this one.
    #[error("this link has been withdrawn")]
    Revoked,
    /// A newer invitation e-mail was sent; only its link works.
    #[error("a newer invitation has been sent: use the link in the most recent e-mail")]
    Superseded,
    /// The login the link is for is disabled.
    #[error("this login is disabled: please contact the firm")]
    LoginDisabled,
    /// The chosen password was refused.
    #[error("{0}")]
    Weak(WeakPassword),
    /// Anything else (storage, mail, a conflicting login).
    #[error(transparent)]
    Portal(#[from] Error),
}

impl LinkError {
    /// The HTTP status a page reporting this error should carry: 404 unknown, 410 expired,
    /// used, withdrawn or superseded, 403 disabled, 400 weak password, 409/500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            LinkError::Unknown => 404,
            LinkError::Expired | LinkError::Used | LinkError::Revoked | LinkError::Superseded => {
                410
            }
            LinkError::LoginDisabled => 403,
            LinkError::Weak(_) => 400,
            LinkError::Portal(e) => match e {
                Error::AlreadyExists(_) | Error::Conflict(_) => 409,
                Error::Invalid(_) => 400,
                Error::LockedOut { .. } => 429,
                _ => 500,
            },
        }
    }

    /// A short word for audit entries and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Unknown => "unknown",
            LinkError::Expired => "expired",
            LinkError::Used => "used",
            LinkError::Revoked => "revoked",
            LinkError::Superseded => "superseded",
            LinkError::LoginDisabled => "disabled",
            LinkError::Weak(_) => "weak_password",
            LinkError::Portal(e) => e.kind(),
        }
    }
}

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Unknown => Error::NotFound("invitation or link".into()),
            LinkError::Portal(e) => e,
            LinkError::Weak(w) => weak_error(w),
            LinkError::LoginDisabled => Error::AuthenticationFailed,
            other => Error::Conflict(other.to_string()),
        }
    }
}

/// An invitation as listed for staff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvitationInfo {
    /// Id.
    pub id: InvitationId,
    /// The contact invited.
    pub contact: ContactId,
    /// Their e-mail address.
    pub email: String,
    /// The matter it is about.
    pub matter: Option<MatterId>,
    /// New login or new matter.
    pub kind: InvitationKind,
    /// Pending, accepted or revoked.
    pub status: InvitationStatus,
    /// True if pending and past its expiry.
    pub expired: bool,
    /// Created at.
    pub created: Millis,
    /// The current link expires at.
    pub expires: Millis,
    /// How many mails were handed to the mailer for it.
    pub sent: u32,
}

/// What following an invitation link leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LinkAction {
    /// Choose a password (creates the login, or gives a password to a login without one).
    SetPassword,
    /// The person already has a login with a password: just confirm.
    Confirm,
}

/// A valid invitation link, as the accept page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvitationView {
    /// Id.
    pub id: InvitationId,
    /// What the page asks for.
    pub action: LinkAction,
    /// The e-mail address (the future login name).
    pub email: String,
    /// The contact's name.
    pub name: String,
    /// The matter's name as shown in trees, if any.
    pub matter: Option<String>,
    /// Expires at.
    pub expires: Millis,
}

/// An accepted invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptedInvitation {
    /// The login (new or existing).
    pub login: LoginId,
    /// Its principal.
    pub principal: Principal,
    /// Its login name.
    pub email: String,
    /// Whether the login was created now.
    pub created_login: bool,
    /// Whether a password was set now.
    pub password_set: bool,
    /// The matter's name, if any.
    pub matter: Option<String>,
}

/// A valid password-reset link, as the reset page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResetView {
    /// The login name.
    pub email: String,
    /// The login's display name.
    pub name: String,
    /// Expires at.
    pub expires: Millis,
}

/// The index key of a token hash.
fn token_key<T: Tx + ?Sized>(db: &Db<'_, T>, kind: u8, hash: &TokenHash) -> Vec<u8> {
    Key::kind(kind)
        .bytes(&db.ikey(Scope::Global, &hex::encode(hash.as_bytes())))
        .done()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Records a pending invitation whose link token hashes to `hash` (inside a write job).
pub(crate) fn put_invitation(
    ctx: &mut WriteCtx<'_>,
    contact: ContactId,
    matter: Option<MatterId>,
    kind: InvitationKind,
    hash: &TokenHash,
    ttl: Duration,
) -> Result<InvitationId> {
    let id = InvitationId(ctx.new_id());
    let now = now_millis();
    ctx.put(
        INVITATIONS,
        Scope::Global,
        &tables::ids(&[id.0]),
        &InvitationRec {
            contact,
            matter,
            kind,
            token_hash: Some(*hash.as_bytes()),
            created: now,
            expires: now.saturating_add(millis(ttl)),
            status: InvitationStatus::Pending,
            sent: 0,
        },
    )?;
    let key = token_key(&ctx.db(), name_kind::INVITE_TOKEN, hash);
    ctx.put_id(NAMES, &key, id.0)?;
    Ok(id)
}

type Refused = (Option<u64>, LinkError);

/// The invitation a token names, if it is usable now.
fn find_invitation<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    hash: &TokenHash,
    now: Millis,
) -> Result<std::result::Result<(InvitationId, InvitationRec), Refused>> {
    let Some(id) = db.get_id(NAMES, &token_key(db, name_kind::INVITE_TOKEN, hash))? else {
        return Ok(Err((None, LinkError::Unknown)));
    };
    let rec: Option<InvitationRec> = db.get(INVITATIONS, Scope::Global, &tables::ids(&[id]))?;
    let Some(rec) = rec.filter(|r| r.kind != InvitationKind::PasswordReset) else {
        return Ok(Err((Some(id), LinkError::Unknown)));
    };
    let refused = |e| Ok(Err((Some(id), e)));
    if rec.token_hash.map(TokenHash::from_bytes) != Some(*hash) {
        return refused(LinkError::Superseded);
    }
    match rec.status {
        InvitationStatus::Accepted => return refused(LinkError::Used),
        InvitationStatus::Revoked => return refused(LinkError::Revoked),
        InvitationStatus::Pending => {}
    }
    if now >= rec.expires {
        return refused(LinkError::Expired);
    }
    Ok(Ok((InvitationId(id), rec)))
}

/// Who an invitation is for and what accepting it does.
struct Invitee {
    contact: ContactRec,
    login: Option<(LoginId, LoginRec)>,
    matter: Option<String>,
}

impl Invitee {
    fn action(&self) -> LinkAction {
        match &self.login {
            Some((_, l)) if l.password_hash.is_some() => LinkAction::Confirm,
            _ => LinkAction::SetPassword,
        }
    }
}

fn invitee<T: Tx + ?Sized>(db: &Db<'_, T>, rec: &InvitationRec) -> Result<Invitee> {
    let contact: ContactRec = db.need(
        CONTACTS,
        Scope::Global,
        &tables::ids(&[rec.contact.0]),
        "contact",
    )?;
    let login = match contact.login {
        Some(l) => db
            .get::<LoginRec>(LOGINS, Scope::Global, &tables::ids(&[l.0]))?
            .map(|r| (l, r)),
        None => None,
    };
    let matter = match rec.matter {
        Some(m) => db
            .get::<MatterRec>(MATTERS, Scope::Global, &tables::ids(&[m.0]))?
            .map(|m| m.display),
        None => None,
    };
    Ok(Invitee {
        contact,
        login,
        matter,
    })
}

fn info_of(id: InvitationId, r: &InvitationRec, email: String, now: Millis) -> InvitationInfo {
    InvitationInfo {
        id,
        contact: r.contact,
        email,
        matter: r.matter,
        kind: r.kind,
        status: r.status,
        expired: r.status == InvitationStatus::Pending && now >= r.expires,
        created: r.created,
        expires: r.expires,
        sent: r.sent,
    }
}

/// The reset link a token names, if it is usable now.
fn find_reset<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    hash: &TokenHash,
    now: Millis,
) -> Result<std::result::Result<(u64, ResetRec), Refused>> {
    let Some(id) = db.get_id(NAMES, &token_key(db, name_kind::RESET_TOKEN, hash))? else {
        return Ok(Err((None, LinkError::Unknown)));
    };
    let Some(rec) = db.get::<ResetRec>(RESETS, Scope::Global, &tables::ids(&[id]))? else {
        return Ok(Err((Some(id), LinkError::Unknown)));
    };
    let refused = |e| Ok(Err((Some(id), e)));
    if TokenHash::from_bytes(rec.token_hash) != *hash {
        return refused(LinkError::Unknown);
    }
    match rec.status {
        InvitationStatus::Accepted => return refused(LinkError::Used),
        InvitationStatus::Revoked => return refused(LinkError::Revoked),
        InvitationStatus::Pending => {}
    }
    if now >= rec.expires {
        return refused(LinkError::Expired);
    }
    Ok(Ok((id, rec)))
}

/// Marks every pending reset link of `login` revoked (except `keep`) and forgets links long
/// past their expiry.
fn retire_resets(
    ctx: &mut WriteCtx<'_>,
    login: LoginId,
    keep: Option<u64>,
    now: Millis,
) -> Result<()> {
    let all: Vec<(Vec<u8>, ResetRec)> = ctx.db().scan(RESETS, Scope::Global, &[], usize::MAX)?;
    for (k, mut r) in all {
        let id = tables::id_from(&k);
        if r.expires.saturating_add(RESET_KEEP_MILLIS) < now {
            let ik = token_key(
                &ctx.db(),
                name_kind::RESET_TOKEN,
                &TokenHash::from_bytes(r.token_hash),
            );
            ctx.del(NAMES, &ik)?;
            ctx.del(RESETS, &k)?;
        } else if r.login == login && r.status == InvitationStatus::Pending && id != keep {
            r.status = InvitationStatus::Revoked;
            ctx.put(RESETS, Scope::Global, &k, &r)?;
        }
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().take(254).collect()
}

fn link_object(what: &str, id: Option<u64>) -> String {
    match id {
        Some(id) => format!("{what} {id}"),
        None => format!("{what} (unknown link)"),
    }
}

impl Portal {
    /// Mails invitation `id` with the link for `token`, then records the delivery (audited as
    /// `admin:send_invitation` for `actor`; `sent` counts successes).
    pub(crate) async fn deliver_invitation(
        &self,
        actor: &Actor,
        id: InvitationId,
        token: Token,
    ) -> Result<()> {
        let (rec, who) = self
            .inner
            .store
            .read(move |db| {
                let rec: InvitationRec = db.need(
                    INVITATIONS,
                    Scope::Global,
                    &tables::ids(&[id.0]),
                    &format!("invitation {id}"),
                )?;
                let who = invitee(db, &rec)?;
                Ok((rec, who))
            })
            .await?;
        let link = self.base_url().invite_link(&token);
        drop(token);
        let valid = Duration::from_millis(rec.expires.saturating_sub(now_millis()));
        let firm = self.firm_name();
        let matter = who
            .matter
            .clone()
            .unwrap_or_else(|| format!("{firm} portal"));
        let to = who.contact.email.clone();
        let mail = match who.action() {
            LinkAction::SetPassword => {
                templates::invite_new_login(&to, firm, &matter, &link, valid)
            }
            LinkAction::Confirm => {
                templates::invite_existing_login(&to, firm, &matter, &link, valid)
            }
        };
        let sent = self.mailer().send(mail).await.map_err(Error::from);
        let outcome = Outcome::of(&sent);
        let actor = actor.clone();
        let object = format!("invitation {id} to {}", clip(&to));
        let ok = sent.is_ok();
        self.inner
            .store
            .write(move |ctx| {
                if ok {
                    let key = tables::ids(&[id.0]);
                    if let Some(mut r) =
                        ctx.db()
                            .get::<InvitationRec>(INVITATIONS, Scope::Global, &key)?
                    {
                        r.sent = r.sent.saturating_add(1);
                        ctx.put(INVITATIONS, Scope::Global, &key, &r)?;
                    }
                }
                audit::append(
                    ctx,
                    NewEntry {
                        actor: actor.clone(),
                        matter: rec.matter,
                        document: None,
                        object: object.clone(),
                        action: AuditAction::Admin("send_invitation".into()),
                        outcome: outcome.clone(),
                    },
                )?;
                Ok(())
            })
            .await?;
        if let Err(e) = &sent {
            tracing::warn!(invitation = %id, error = %e, "the invitation mail could not be sent");
        }
        sent
    }

    /// Lists invitations (staff), optionally only those of one contact. Password resets are
    /// not listed.
    pub async fn invitations(
        &self,
        actor: &Actor,
        contact: Option<ContactId>,
    ) -> Result<Vec<InvitationInfo>> {
        self.admin_read(actor, "list_invitations", None, String::new(), move |db| {
            let now = now_millis();
            let all: Vec<(Vec<u8>, InvitationRec)> =
                db.scan(INVITATIONS, Scope::Global, &[], usize::MAX)?;
            let mut out = Vec::new();
            for (k, r) in all {
                let Some(id) = tables::id_from(&k) else {
                    continue;
                };
                if r.kind == InvitationKind::PasswordReset
                    || contact.is_some_and(|c| c != r.contact)
                {
                    continue;
                }
                let email = db
                    .get::<ContactRec>(CONTACTS, Scope::Global, &tables::ids(&[r.contact.0]))?
                    .map(|c| c.email)
                    .unwrap_or_default();
                out.push(info_of(InvitationId(id), &r, email, now));
            }
            Ok(out)
        })
        .await
    }

    /// Sends invitation `id` again with a new link (staff): the previous link stops working at
    /// once and the lifetime starts over. Works on pending (also expired) and revoked
    /// invitations, not accepted ones. Fails with the mailer's error if the mail can't be
    /// handed over (the new link is recorded either way; re-send again).
    pub async fn resend_invitation(
        &self,
        actor: &Actor,
        id: InvitationId,
    ) -> Result<InvitationInfo> {
        let matter = self
            .inner
            .store
            .read(move |db| {
                Ok(db
                    .get::<InvitationRec>(INVITATIONS, Scope::Global, &tables::ids(&[id.0]))?
                    .and_then(|r| r.matter))
            })
            .await?;
        let (token, hash) = Token::generate()?;
        let ttl = self.invite_ttl();
        let info = self
            .admin(
                actor,
                "resend_invitation",
                matter,
                format!("invitation {id}"),
                move |ctx| {
                    let key = tables::ids(&[id.0]);
                    let mut r: InvitationRec = ctx
                        .db()
                        .get(INVITATIONS, Scope::Global, &key)?
                        .filter(|r: &InvitationRec| r.kind != InvitationKind::PasswordReset)
                        .ok_or_else(|| Error::NotFound(format!("invitation {id}")))?;
                    if r.status == InvitationStatus::Accepted {
                        return Err(Error::Conflict(format!(
                            "invitation {id} was already accepted"
                        )));
                    }
                    let now = now_millis();
                    r.token_hash = Some(*hash.as_bytes());
                    r.expires = now.saturating_add(millis(ttl));
                    r.status = InvitationStatus::Pending;
                    ctx.put(INVITATIONS, Scope::Global, &key, &r)?;
                    let ik = token_key(&ctx.db(), name_kind::INVITE_TOKEN, &hash);
                    ctx.put_id(NAMES, &ik, id.0)?;
                    let email = ctx
                        .db()
                        .get::<ContactRec>(CONTACTS, Scope::Global, &tables::ids(&[r.contact.0]))?
                        .map(|c| c.email)
                        .unwrap_or_default();
                    Ok(info_of(id, &r, email, now))
                },
            )
            .await?;
        self.deliver_invitation(actor, id, token).await?;
        Ok(InvitationInfo {
            sent: info.sent.saturating_add(1),
            ..info
        })
    }

    /// Withdraws invitation `id` (staff): its link stops working. The portal access granted
    /// stays as it is (revoke that with [`Portal::revoke_access`]). Returns false if it was not
    /// pending.
    pub async fn revoke_invitation(&self, actor: &Actor, id: InvitationId) -> Result<bool> {
        self.admin(
            actor,
            "revoke_invitation",
            None,
            format!("invitation {id}"),
            move |ctx| {
                let key = tables::ids(&[id.0]);
                let mut r: InvitationRec = ctx
                    .db()
                    .get(INVITATIONS, Scope::Global, &key)?
                    .filter(|r: &InvitationRec| r.kind != InvitationKind::PasswordReset)
                    .ok_or_else(|| Error::NotFound(format!("invitation {id}")))?;
                if r.status != InvitationStatus::Pending {
                    return Ok(false);
                }
                r.status = InvitationStatus::Revoked;
                ctx.put(INVITATIONS, Scope::Global, &key, &r)?;
                Ok(true)
            },
        )
        .await
    }

    /// Looks up the invitation behind a link's token (the accept page's GET). Audited on
    /// channel `web` from `remote`: `account:invitation_open`, or `account:invitation_refused`
    /// with the reason.
    pub async fn open_invitation(
        &self,
        token: &str,
        remote: Option<SocketAddr>,
    ) -> std::result::Result<InvitationView, LinkError> {
        let now = now_millis();
        let found = match Token::parse(token) {
            Ok(t) => {
                let hash = t.hash();
                self.inner
                    .store
                    .read(move |db| {
                        Ok(match find_invitation(db, &hash, now)? {
                            Ok((id, rec)) => Ok((id, invitee(db, &rec)?, rec)),
                            Err(e) => Err(e),
                        })
                    })
                    .await?
            }
            Err(_) => Err((None, LinkError::Unknown)),
        };
        let actor = Actor::new(Principal::System, Channel::Web, remote);
        match found {
            Ok((id, who, rec)) => {
                if who.login.as_ref().is_some_and(|(_, l)| l.disabled) {
                    self.audit_account(
                        actor,
                        "invitation_refused",
                        rec.matter,
                        format!("invitation {id}"),
                        Outcome::Failed(LinkError::LoginDisabled.to_string()),
                    )
                    .await?;
                    return Err(LinkError::LoginDisabled);
                }
                self.audit_account(
                    actor,
                    "invitation_open",
                    rec.matter,
                    format!("invitation {id}"),
                    Outcome::Allowed,
                )
                .await?;
                Ok(InvitationView {
                    id,
                    action: who.action(),
                    email: who.contact.email.clone(),
                    name: who.contact.name.clone(),
                    matter: who.matter,
                    expires: rec.expires,
                })
            }
            Err((id, e)) => {
                self.audit_account(
                    actor,
                    "invitation_refused",
                    None,
                    link_object("invitation", id),
                    Outcome::Failed(e.to_string()),
                )
                .await?;
                Err(e)
            }
        }
    }

    /// Accepts an invitation link (the accept page's POST). For a [`LinkAction::SetPassword`]
    /// invitation `password` must pass the strength rules ([`LinkError::Weak`] otherwise,
    /// nothing recorded); the login is created verified (or given its first password) and can
    /// sign in at once. A [`LinkAction::Confirm`] invitation ignores `password`. Either way the
    /// link is used up. Audited (`account:invitation_accept`, channel `web`).
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: Option<&str>,
        remote: Option<SocketAddr>,
    ) -> std::result::Result<AcceptedInvitation, LinkError> {
        let now = now_millis();
        let refuse = |id: Option<u64>, e: LinkError| async move {
            let actor = Actor::new(Principal::System, Channel::Web, remote);
            self.audit_account(
                actor,
                "invitation_accept",
                None,
                link_object("invitation", id),
                Outcome::Failed(e.to_string()),
            )
            .await?;
            Err::<AcceptedInvitation, LinkError>(e)
        };
        let Ok(t) = Token::parse(token) else {
            return refuse(None, LinkError::Unknown).await;
        };
        let hash = t.hash();
        let found = self
            .inner
            .store
            .read(move |db| {
                Ok(match find_invitation(db, &hash, now)? {
                    Ok((id, rec)) => Ok((id, invitee(db, &rec)?)),
                    Err(e) => Err(e),
                })
            })
            .await?;
        let (id, who) = match found {
            Ok(x) => x,
            Err((id, e)) => return refuse(id, e).await,
        };
        if who.login.as_ref().is_some_and(|(_, l)| l.disabled) {
            return refuse(Some(id.0), LinkError::LoginDisabled).await;
        }
        let new_hash = match who.action() {
            LinkAction::Confirm => None,
            LinkAction::SetPassword => {
                let pw = password.unwrap_or_default();
                let ctx = [
                    who.contact.email.as_str(),
                    who.contact.name.as_str(),
                    self.firm_name(),
                ];
                password::check_strength(pw, &ctx).map_err(LinkError::Weak)?;
                Some(
                    password::hash_password_async(pw.to_owned())
                        .await
                        .map_err(Error::from)?,
                )
            }
        };
        let res = self
            .inner
            .store
            .write(move |ctx| {
                let res = accept_job(ctx, &hash, new_hash.as_deref());
                let (principal, outcome, object, matter) = match &res {
                    Ok((acc, matter)) => (
                        acc.principal,
                        Outcome::Allowed,
                        format!("invitation {id} by {}", clip(&acc.email)),
                        *matter,
                    ),
                    Err(LinkError::Portal(e @ (Error::Storage(_) | Error::Io(_)))) => {
                        return Err(Error::Storage(e.to_string()));
                    }
                    Err(e) => (
                        Principal::System,
                        Outcome::Failed(e.to_string()),
                        format!("invitation {id}"),
                        None,
                    ),
                };
                audit::append(
                    ctx,
                    NewEntry {
                        actor: Actor::new(principal, Channel::Web, remote),
                        matter,
                        document: None,
                        object,
                        action: AuditAction::Account("invitation_accept".into()),
                        outcome,
                    },
                )?;
                Ok(res.map(|(acc, _)| acc))
            })
            .await??;
        self.throttle().clear_login(&res.email);
        Ok(res)
    }

    /// Asks for a password-reset link for `email`. Answers `Ok(())` whether or not a login
    /// has that address (no enumeration); for an enabled login a link is mailed, at most one
    /// per [`RESET_COOLDOWN`]. Audited (`account:password_reset_request`, channel `web`).
    /// Fails only if storage fails or the mail can't be handed to the mailer — a web page
    /// should run this in the background so its answer time doesn't tell either.
    pub async fn request_password_reset(
        &self,
        email: &str,
        remote: Option<SocketAddr>,
    ) -> Result<()> {
        let now = now_millis();
        let e = email.trim().to_string();
        let cooldown = millis(RESET_COOLDOWN);
        let found = self
            .inner
            .store
            .read(move |db| {
                let Some((id, r)) = find_login(db, &e)?.filter(|(_, r)| !r.disabled) else {
                    return Ok(None);
                };
                let all: Vec<(Vec<u8>, ResetRec)> =
                    db.scan(RESETS, Scope::Global, &[], usize::MAX)?;
                let recent = all.iter().any(|(_, x)| {
                    x.login == id
                        && x.status == InvitationStatus::Pending
                        && now.saturating_sub(x.created) < cooldown
                });
                Ok(Some((id, r, recent)))
            })
            .await?;
        let actor = Actor::new(Principal::System, Channel::Web, remote);
        let object = format!("password reset for {}", clip(email.trim()));
        let (login, rec) = match found {
            None => {
                return self
                    .audit_account(
                        actor,
                        "password_reset_request",
                        None,
                        object,
                        Outcome::Failed("no enabled login has this e-mail address".into()),
                    )
                    .await;
            }
            Some((_, _, true)) => {
                return self
                    .audit_account(
                        actor,
                        "password_reset_request",
                        None,
                        object,
                        Outcome::Failed("a reset link was sent less than a minute ago".into()),
                    )
                    .await;
            }
            Some((id, r, false)) => (id, r),
        };
        let (token, hash) = Token::generate()?;
        let ttl = self.reset_ttl();
        let obj = object.clone();
        let a = actor.clone();
        self.inner
            .store
            .write(move |ctx| {
                let now = now_millis();
                let id = ctx.new_id();
                retire_resets(ctx, login, Some(id), now)?;
                ctx.put(
                    RESETS,
                    Scope::Global,
                    &tables::ids(&[id]),
                    &ResetRec {
                        login,
                        token_hash: *hash.as_bytes(),
                        created: now,
                        expires: now.saturating_add(millis(ttl)),
                        status: InvitationStatus::Pending,
                    },
                )?;
                let ik = token_key(&ctx.db(), name_kind::RESET_TOKEN, &hash);
                ctx.put_id(NAMES, &ik, id)?;
                audit::append(
                    ctx,
                    NewEntry {
                        actor: a.clone(),
                        matter: None,
                        document: None,
                        object: format!("{obj}: link {id}"),
                        action: AuditAction::Account("password_reset_request".into()),
                        outcome: Outcome::Allowed,
                    },
                )?;
                Ok(())
            })
            .await?;
        let link = self.base_url().reset_link(&token);
        drop(token);
        let mail = templates::password_reset(&rec.email, self.firm_name(), &link, ttl);
        let sent = self.mailer().send(mail).await.map_err(Error::from);
        if let Err(e) = &sent {
            tracing::warn!(error = %e, "the password-reset mail could not be sent");
            self.audit_account(
                actor,
                "password_reset_mail",
                None,
                object,
                Outcome::Failed(e.to_string()),
            )
            .await?;
        }
        sent
    }

    /// Looks up a password-reset link (the reset page's GET). Refusals are audited
    /// (`account:password_reset_refused`).
    pub async fn open_reset(
        &self,
        token: &str,
        remote: Option<SocketAddr>,
    ) -> std::result::Result<ResetView, LinkError> {
        let now = now_millis();
        let found = match Token::parse(token) {
            Ok(t) => {
                let hash = t.hash();
                self.inner
                    .store
                    .read(move |db| {
                        Ok(match find_reset(db, &hash, now)? {
                            Ok((id, r)) => {
                                let l: Option<LoginRec> =
                                    db.get(LOGINS, Scope::Global, &tables::ids(&[r.login.0]))?;
                                match l {
                                    Some(l) if !l.disabled => Ok((r, l)),
                                    Some(_) => Err((Some(id), LinkError::LoginDisabled)),
                                    None => Err((Some(id), LinkError::Unknown)),
                                }
                            }
                            Err(e) => Err(e),
                        })
                    })
                    .await?
            }
            Err(_) => Err((None, LinkError::Unknown)),
        };
        match found {
            Ok((r, l)) => Ok(ResetView {
                email: l.email,
                name: l.name,
                expires: r.expires,
            }),
            Err((id, e)) => {
                self.audit_account(
                    Actor::new(Principal::System, Channel::Web, remote),
                    "password_reset_refused",
                    None,
                    link_object("password reset link", id),
                    Outcome::Failed(e.to_string()),
                )
                .await?;
                Err(e)
            }
        }
    }

    /// Sets a new password through a reset link (the reset page's POST): strength-checked,
    /// the link is used up (and any other pending one of the login revoked), the address is
    /// marked verified and the login's failed-attempt counters are cleared. Audited
    /// (`account:password_reset`).
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        remote: Option<SocketAddr>,
    ) -> std::result::Result<Principal, LinkError> {
        let view = self.open_reset(token, remote).await?;
        let ctx = [view.email.as_str(), view.name.as_str(), self.firm_name()];
        password::check_strength(new_password, &ctx).map_err(LinkError::Weak)?;
        let new_hash = password::hash_password_async(new_password.to_owned())
            .await
            .map_err(Error::from)?;
        let hash = Token::parse(token).map_err(|_| LinkError::Unknown)?.hash();
        let email = view.email.clone();
        let res = self
            .inner
            .store
            .write(move |ctx| {
                let now = now_millis();
                let res = match find_reset(&ctx.db(), &hash, now)? {
                    Err((_, e)) => Err(e),
                    Ok((id, mut r)) => {
                        let key = tables::ids(&[r.login.0]);
                        match ctx.db().get::<LoginRec>(LOGINS, Scope::Global, &key)? {
                            None => Err(LinkError::Unknown),
                            Some(l) if l.disabled => Err(LinkError::LoginDisabled),
                            Some(mut l) => {
                                l.password_hash = Some(new_hash.clone());
                                l.verified = true;
                                l.credential_gen += 1;
                                ctx.put(LOGINS, Scope::Global, &key, &l)?;
                                r.status = InvitationStatus::Accepted;
                                ctx.put(RESETS, Scope::Global, &tables::ids(&[id]), &r)?;
                                retire_resets(ctx, r.login, Some(id), now)?;
                                ctx.access_changed();
                                Ok(principal_of(r.login, &l))
                            }
                        }
                    }
                };
                let principal = res.as_ref().map_or(Principal::System, |p| *p);
                audit::append(
                    ctx,
                    NewEntry {
                        actor: Actor::new(principal, Channel::Web, remote),
                        matter: None,
                        document: None,
                        object: format!("password reset for {}", clip(&email)),
                        action: AuditAction::Account("password_reset".into()),
                        outcome: match &res {
                            Ok(_) => Outcome::Allowed,
                            Err(e) => Outcome::Failed(e.to_string()),
                        },
                    },
                )?;
                Ok(res)
            })
            .await??;
        self.throttle().clear_login(&view.email);
        Ok(res)
    }
}

/// The write half of accepting an invitation: re-checks the link (it may have been used,
/// revoked or re-sent since the page was shown), creates or completes the login, uses up the
/// link. Validates before writing. Returns the result and the invitation's matter.
fn accept_job(
    ctx: &mut WriteCtx<'_>,
    hash: &TokenHash,
    new_hash: Option<&str>,
) -> std::result::Result<(AcceptedInvitation, Option<MatterId>), LinkError> {
    let now = now_millis();
    let (id, mut rec) = find_invitation(&ctx.db(), hash, now)?.map_err(|(_, e)| e)?;
    let who = invitee(&ctx.db(), &rec)?;
    let (login, lrec, created, password_set) = match who.login {
        Some((l, _)) if who.action() == LinkAction::Confirm => {
            let key = tables::ids(&[l.0]);
            let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
            if r.disabled {
                return Err(LinkError::LoginDisabled);
            }
            if !r.verified {
                r.verified = true;
                ctx.put(LOGINS, Scope::Global, &key, &r)?;
            }
            (l, r, false, false)
        }
        Some((l, _)) => {
            // A login without a password (staff set it up): this link gives it one.
            let Some(h) = new_hash else {
                return Err(Error::Conflict(
                    "the invitation changed meanwhile; reload the page".into(),
                )
                .into());
            };
            let key = tables::ids(&[l.0]);
            let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
            if r.disabled {
                return Err(LinkError::LoginDisabled);
            }
            r.password_hash = Some(h.to_owned());
            r.verified = true;
            r.credential_gen += 1;
            ctx.put(LOGINS, Scope::Global, &key, &r)?;
            (l, r, false, true)
        }
        None => {
            let Some(h) = new_hash else {
                return Err(Error::Conflict(
                    "the invitation changed meanwhile; reload the page".into(),
                )
                .into());
            };
            let email = who.contact.email.clone();
            let key = login_email_key(&ctx.db(), &email);
            if ctx.db().get_id(NAMES, &key)?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "a login for {email} (not linked to this contact): please contact the firm"
                ))
                .into());
            }
            let l = LoginId(ctx.new_id());
            let r = LoginRec {
                email: email.clone(),
                name: who.contact.name.clone(),
                kind: LoginKind::Portal,
                contact: Some(rec.contact),
                verified: true,
                password_hash: Some(h.to_owned()),
                ssh_keys: Vec::new(),
                app_passwords: Vec::new(),
                disabled: false,
                created: now,
                credential_gen: 0,
            };
            ctx.put(LOGINS, Scope::Global, &tables::ids(&[l.0]), &r)?;
            ctx.put_id(NAMES, &key, l.0)?;
            let mut c = who.contact.clone();
            c.login = Some(l);
            ctx.put(CONTACTS, Scope::Global, &tables::ids(&[rec.contact.0]), &c)?;
            (l, r, true, true)
        }
    };
    rec.status = InvitationStatus::Accepted;
    ctx.put(INVITATIONS, Scope::Global, &tables::ids(&[id.0]), &rec)?;
    ctx.access_changed();
    Ok((
        AcceptedInvitation {
            login,
            principal: principal_of(login, &lrec),
            email: lrec.email.clone(),
            created_login: created,
            password_set,
            matter: who.matter,
        },
        rec.matter,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_error_statuses() {
        assert_eq!(LinkError::Unknown.http_status(), 404);
        for e in [
            LinkError::Expired,
            LinkError::Used,
            LinkError::Revoked,
            LinkError::Superseded,
        ] {
            assert_eq!(e.http_status(), 410, "{e}");
            assert_eq!(Error::from(e).kind(), "conflict");
        }
        assert_eq!(LinkError::Weak(WeakPassword::Common).http_status(), 400);
        assert_eq!(Error::from(LinkError::Unknown).kind(), "not_found");
        assert_eq!(
            LinkError::Portal(Error::Storage("x".into())).http_status(),
            500
        );
    }
}

//! Logins: staff and portal accounts, passwords, SSH keys, authentication.

use super::Portal;
use super::admin::{check_email, check_text, contact_email_key, login_email_key};
use crate::accounts::password;
use crate::accounts::throttle::{Attempt, Refusal, RefusalKind, Throttle};
use crate::accounts::tokens::AppPasswordHash;
use crate::audit::{AuditAction, NewEntry, Outcome};
use crate::crypto::Scope;
use crate::model::*;
use crate::store::records::*;
use crate::store::tables::{self, CONTACTS, LOGINS, NAMES};
use crate::store::{Db, Tx};
use crate::{Error, Result};
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// A login as listed (no secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoginInfo {
    /// Id.
    pub id: LoginId,
    /// Email (login name).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Staff?
    pub staff: bool,
    /// Linked contact (portal logins).
    pub contact: Option<ContactId>,
    /// Email verified?
    pub verified: bool,
    /// Disabled?
    pub disabled: bool,
    /// Has a password set?
    pub has_password: bool,
    /// Number of SSH keys.
    pub ssh_keys: usize,
    /// Number of app passwords.
    pub app_passwords: usize,
}

fn info(id: LoginId, r: &LoginRec) -> LoginInfo {
    LoginInfo {
        id,
        email: r.email.clone(),
        name: r.name.clone(),
        staff: r.kind == LoginKind::Staff,
        contact: r.contact,
        verified: r.verified,
        disabled: r.disabled,
        has_password: r.password_hash.is_some(),
        ssh_keys: r.ssh_keys.len(),
        app_passwords: r.app_passwords.len(),
    }
}

/// Hashes a password with Argon2id (off the async threads, one hashing slot per core).
pub(crate) async fn hash_password(pw: String) -> Result<String> {
    Ok(password::hash_password_async(pw).await?)
}

/// Longest a password attempt waits for an escalating delay before it is answered "locked
/// out" instead (the per-login delays stay below it; per-address ones can exceed it).
pub const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(10);

/// Reserves a password attempt, waiting out short delays (a person who mistyped once waits
/// half a second longer); a block, or a delay above [`MAX_THROTTLE_WAIT`], is refused.
pub(crate) async fn throttle_begin<'t>(
    throttle: &'t Throttle,
    login: &str,
    ip: Option<IpAddr>,
) -> std::result::Result<Attempt<'t>, Refusal> {
    let deadline = Instant::now() + MAX_THROTTLE_WAIT;
    loop {
        match throttle.begin(login, ip) {
            Ok(a) => return Ok(a),
            Err(r)
                if r.kind != RefusalKind::Blocked && Instant::now() + r.retry_after <= deadline =>
            {
                tokio::time::sleep(r.retry_after).await;
            }
            Err(r) => return Err(r),
        }
    }
}

/// The error for a refused attempt: seconds rounded up, at least 1.
pub(crate) fn locked_out(retry_after: Duration) -> Error {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Error::LockedOut {
        retry_after_secs: secs.max(1),
    }
}

/// May this login sign in at all (enabled and its email verified)?
fn usable(r: &LoginRec) -> bool {
    !r.disabled && r.verified
}

/// The app password of `r` that `presented` is, if any (constant-time hash comparisons).
fn matching_app_password<'r>(r: &'r LoginRec, presented: &str) -> Option<&'r AppPasswordRec> {
    let h = AppPasswordHash::of(presented)?;
    r.app_passwords.iter().find(|a| {
        let mut b = [0u8; 32];
        hex::decode_to_slice(&a.hash, &mut b).is_ok() && AppPasswordHash::from_bytes(b) == h
    })
}

/// Normalises an OpenSSH public key line to `type base64` (comment dropped) after checking it parses.
pub fn normalize_ssh_key(line: &str) -> Result<String> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(Error::Invalid(
            "an SSH public key looks like \"ssh-ed25519 AAAA… comment\"".into(),
        ));
    };
    let allowed = [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
    ];
    if !allowed.contains(&kind) {
        return Err(Error::Invalid(format!(
            "unsupported SSH key type \"{kind}\""
        )));
    }
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| Error::Invalid("the SSH public key's base64 part is malformed".into()))?;
    // The blob starts with the key type as an SSH string.
    let ok = raw.len() > 4
        && raw
            .get(4..4 + kind.len())
            .is_some_and(|t| t == kind.as_bytes());
    if !ok {
        return Err(Error::Invalid(
            "the SSH public key's type does not match its data".into(),
        ));
    }
    Ok(format!("{kind} {b64}"))
}

pub(crate) fn find_login<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    email: &str,
) -> Result<Option<(LoginId, LoginRec)>> {
    let Some(id) = db.get_id(NAMES, &login_email_key(db, email))? else {
        return Ok(None);
    };
    let r: Option<LoginRec> = db.get(LOGINS, Scope::Global, &tables::ids(&[id]))?;
    Ok(r.map(|r| (LoginId(id), r)))
}

pub(crate) fn principal_of(id: LoginId, r: &LoginRec) -> Principal {
    match r.kind {
        LoginKind::Staff => Principal::Staff(id),
        LoginKind::Portal => Principal::Portal(id),
    }
}

impl Portal {
    /// Creates a staff login (sees everything, full rights).
    pub async fn create_staff_login(
        &self,
        actor: &Actor,
        email: &str,
        name: &str,
        password: Option<&str>,
    ) -> Result<LoginId> {
        let email = check_email(email)?;
        let name = check_text("a name", name, 200)?;
        let hash = match password {
            Some(p) => Some(hash_password(p.to_string()).await?),
            None => None,
        };
        self.admin(
            actor,
            "create_staff_login",
            None,
            format!("login {email}"),
            move |ctx| {
                let key = login_email_key(&ctx.db(), &email);
                if ctx.db().get_id(NAMES, &key)?.is_some() {
                    return Err(Error::AlreadyExists(format!("a login for {email}")));
                }
                let id = ctx.new_id();
                ctx.put(
                    LOGINS,
                    Scope::Global,
                    &tables::ids(&[id]),
                    &LoginRec {
                        email: email.clone(),
                        name: name.clone(),
                        kind: LoginKind::Staff,
                        contact: None,
                        verified: true,
                        password_hash: hash.clone(),
                        ssh_keys: Vec::new(),
                        app_passwords: Vec::new(),
                        disabled: false,
                        created: now_millis(),
                        credential_gen: 0,
                    },
                )?;
                ctx.put_id(NAMES, &key, id)?;
                Ok(LoginId(id))
            },
        )
        .await
    }

    /// Creates a verified portal login for a contact, with an optional password (staff set-up, the
    /// declarative config, tests). Invitations create unverified logins in the accounts flow.
    pub async fn create_portal_login(
        &self,
        actor: &Actor,
        contact: ContactId,
        password: Option<&str>,
    ) -> Result<LoginId> {
        let hash = match password {
            Some(p) => Some(hash_password(p.to_string()).await?),
            None => None,
        };
        self.admin(
            actor,
            "create_portal_login",
            None,
            format!("contact {contact}"),
            move |ctx| {
                let ckey = tables::ids(&[contact.0]);
                let mut c: ContactRec = ctx.db().need(CONTACTS, Scope::Global, &ckey, "contact")?;
                if c.login.is_some() {
                    return Err(Error::AlreadyExists(format!("a login for {}", c.email)));
                }
                let key = login_email_key(&ctx.db(), &c.email);
                if ctx.db().get_id(NAMES, &key)?.is_some() {
                    return Err(Error::AlreadyExists(format!("a login for {}", c.email)));
                }
                let id = ctx.new_id();
                ctx.put(
                    LOGINS,
                    Scope::Global,
                    &tables::ids(&[id]),
                    &LoginRec {
                        email: c.email.clone(),
                        name: c.name.clone(),
                        kind: LoginKind::Portal,
                        contact: Some(contact),
                        verified: true,
                        password_hash: hash.clone(),
                        ssh_keys: Vec::new(),
                        app_passwords: Vec::new(),
                        disabled: false,
                        created: now_millis(),
                        credential_gen: 0,
                    },
                )?;
                ctx.put_id(NAMES, &key, id)?;
                c.login = Some(LoginId(id));
                ctx.put(CONTACTS, Scope::Global, &ckey, &c)?;
                // Keep the contact index consistent (the email may differ in case only).
                let _ = contact_email_key(&ctx.db(), &c.email);
                ctx.access_changed();
                Ok(LoginId(id))
            },
        )
        .await
    }

    /// Sets a login's password (staff action).
    pub async fn set_password(&self, actor: &Actor, login: LoginId, password: &str) -> Result<()> {
        let hash = hash_password(password.to_string()).await?;
        self.admin(
            actor,
            "set_password",
            None,
            format!("login {login}"),
            move |ctx| {
                let key = tables::ids(&[login.0]);
                let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
                r.password_hash = Some(hash.clone());
                r.credential_gen += 1;
                ctx.put(LOGINS, Scope::Global, &key, &r)?;
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }

    /// Adds an SSH public key (OpenSSH one-line format) to a login.
    pub async fn add_ssh_key(&self, actor: &Actor, login: LoginId, key_line: &str) -> Result<()> {
        let k = normalize_ssh_key(key_line)?;
        self.admin(
            actor,
            "add_ssh_key",
            None,
            format!("login {login}"),
            move |ctx| {
                let key = tables::ids(&[login.0]);
                let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
                if r.ssh_keys.len() >= 64 {
                    return Err(Error::TooLarge("a login holds at most 64 SSH keys".into()));
                }
                if !r.ssh_keys.contains(&k) {
                    r.ssh_keys.push(k.clone());
                    r.credential_gen += 1;
                    ctx.put(LOGINS, Scope::Global, &key, &r)?;
                    ctx.access_changed();
                }
                Ok(())
            },
        )
        .await
    }

    /// Finds a login by email.
    pub async fn find_login(&self, actor: &Actor, email: &str) -> Result<Option<LoginInfo>> {
        let email = email.to_string();
        self.admin_read(actor, "find_login", None, email.clone(), move |db| {
            Ok(find_login(db, &email)?.map(|(id, r)| info(id, &r)))
        })
        .await
    }

    /// Lists logins.
    pub async fn logins(&self, actor: &Actor) -> Result<Vec<LoginInfo>> {
        self.admin_read(actor, "list_logins", None, String::new(), |db| {
            let all: Vec<(Vec<u8>, LoginRec)> = db.scan(LOGINS, Scope::Global, &[], usize::MAX)?;
            Ok(all
                .into_iter()
                .filter_map(|(k, r)| tables::id_from(&k).map(|id| info(LoginId(id), &r)))
                .collect())
        })
        .await
    }

    /// Checks an email and password. Unknown logins and wrong passwords get the same answer in a
    /// similar time. Throttled and audited (see [`Portal::authenticate_password_from`]).
    pub async fn authenticate_password(&self, email: &str, password: &str) -> Result<Principal> {
        self.authenticate_password_from(email, password, Channel::Api, None)
            .await
    }

    /// [`Portal::authenticate_password`] for a front end: records the channel and address.
    ///
    /// Accepts the login's password or one of its app passwords. Brute-force defence is
    /// inside: failures are counted per login name and per source address (`remote`; without
    /// one only per name) by the portal's [`Throttle`]; an attempt during an escalating delay
    /// waits it out (up to [`MAX_THROTTLE_WAIT`]), an attempt on a blocked name or address is
    /// refused at once with [`Error::LockedOut`] without checking the password. An unknown
    /// login, a wrong password, a disabled or unverified login all cost one Argon2id verify
    /// and answer [`Error::AuthenticationFailed`]. Every attempt is audited (`login`), the
    /// start of a block too (`account:lockout`); refusals while blocked at most once a minute
    /// per name or address.
    pub async fn authenticate_password_from(
        &self,
        email: &str,
        password: &str,
        channel: Channel,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<Principal> {
        let ip = remote.map(|r| r.ip());
        let throttle = self.throttle().clone();
        let attempt = match throttle_begin(&throttle, email, ip).await {
            Ok(a) => a,
            Err(r) => {
                let e = locked_out(r.retry_after);
                if r.audit {
                    self.audit_login(
                        email,
                        None,
                        &Err(locked_out(r.retry_after)),
                        channel,
                        remote,
                    )
                    .await?;
                }
                return Err(e);
            }
        };
        let e = email.to_string();
        let found = self.inner.store.read(move |db| find_login(db, &e)).await?;
        let mut via_app = None;
        let mut result = Err(Error::AuthenticationFailed);
        if let Some((id, r)) = &found
            && usable(r)
            && let Some(a) = matching_app_password(r, password)
        {
            via_app = Some(a.name.clone());
            result = Ok(principal_of(*id, r));
        }
        let mut rehash = None;
        if result.is_err() {
            let stored = found.as_ref().and_then(|(_, r)| r.password_hash.clone());
            // Unknown login or no password yet: a dummy verify of the same cost.
            let ok = password::verify_async(password.to_owned(), stored.clone()).await?;
            if let (true, Some((id, r))) = (ok, &found)
                && usable(r)
            {
                result = Ok(principal_of(*id, r));
                if stored.as_deref().is_some_and(password::needs_rehash) {
                    rehash = stored.map(|old| (*id, old));
                }
            }
        }
        match &result {
            Ok(_) => attempt.succeeded(),
            Err(_) => {
                let f = attempt.failed();
                for (what, d) in [
                    (format!("login {}", clip(email)), f.login_blocked),
                    (
                        format!("address {}", ip.map_or("-".into(), |i| i.to_string())),
                        f.address_blocked,
                    ),
                ] {
                    if let Some(d) = d {
                        tracing::warn!(%what, secs = d.as_secs(), "blocked after repeated failed logins");
                        self.audit_account(
                            Actor::new(Principal::System, channel, remote),
                            "lockout",
                            None,
                            format!(
                                "{what} blocked for {} s after repeated failed logins",
                                d.as_secs()
                            ),
                            Outcome::Allowed,
                        )
                        .await?;
                    }
                }
            }
        }
        if let Some((id, old)) = rehash {
            self.spawn_rehash(id, old, password.to_owned());
        }
        self.audit_login(email, via_app.as_deref(), &result, channel, remote)
            .await?;
        result
    }

    /// Re-hashes a password stored with outdated Argon2 parameters, in the background (the
    /// login that proved it is not held up). Skipped if the hash changed meanwhile.
    fn spawn_rehash(&self, login: LoginId, old: String, pw: String) {
        let portal = self.clone();
        tokio::spawn(async move {
            let Ok(new) = password::hash_password_async(pw).await else {
                return;
            };
            let res = portal
                .inner
                .store
                .write(move |ctx| {
                    let key = tables::ids(&[login.0]);
                    let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
                    if r.password_hash.as_deref() == Some(old.as_str()) {
                        r.password_hash = Some(new.clone());
                        ctx.put(LOGINS, Scope::Global, &key, &r)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "re-hashing a password with current parameters failed");
            }
        });
    }

    /// Checks an SSH public key for a login. Audited either way. A blocked source address is
    /// refused ([`Error::LockedOut`]); a login blocked because of password guessing is not (a
    /// key can't be guessed, so its owner keeps access).
    pub async fn authenticate_public_key(
        &self,
        email: &str,
        key_line: &str,
        channel: Channel,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<Principal> {
        if let Some(d) = remote.and_then(|r| self.throttle().address_blocked(r.ip())) {
            let res: Result<Principal> = Err(locked_out(d));
            self.audit_login(email, None, &res, channel, remote).await?;
            return res;
        }
        let e = email.to_string();
        let found = self.inner.store.read(move |db| find_login(db, &e)).await?;
        let wanted = normalize_ssh_key(key_line).ok();
        let result = match (found, wanted) {
            (Some((id, r)), Some(k)) if usable(&r) && r.ssh_keys.contains(&k) => {
                Ok(principal_of(id, &r))
            }
            _ => Err(Error::AuthenticationFailed),
        };
        self.audit_login(email, None, &result, channel, remote)
            .await?;
        result
    }

    async fn audit_login(
        &self,
        email: &str,
        app_password: Option<&str>,
        result: &Result<Principal>,
        channel: Channel,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<()> {
        let principal = match result {
            Ok(p) => *p,
            Err(_) => Principal::System,
        };
        self.audit(NewEntry {
            actor: Actor::new(principal, channel, remote),
            matter: None,
            document: None,
            object: match app_password {
                Some(name) => format!("login {} (app password \"{}\")", clip(email), clip(name)),
                None => format!("login {}", clip(email)),
            },
            action: AuditAction::Login,
            outcome: Outcome::of(result),
        })
        .await
    }
}

/// A name as typed, cut to a sane length for logs and audit entries.
fn clip(s: &str) -> String {
    s.chars().take(254).collect()
}

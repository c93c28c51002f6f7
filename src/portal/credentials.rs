//! Account settings of a portal (mailer, link base URL, link lifetimes, lockout thresholds) and
//! the self-service credential API: password change and per-device app passwords.
//!
//! Every credential change (password set, changed or reset, app password created or revoked,
//! login disabled) bumps [`Portal::access_epoch`], so caches of successful logins (the WebDAV
//! front end's) and open handles re-check on their next request.

use super::{Portal, PortalBuilder};
use crate::accounts::mailer::{FileOutbox, Mailer, MemoryMailer, NoMailer};
use crate::accounts::password::{self, WeakPassword};
use crate::accounts::templates::BaseUrl;
use crate::accounts::throttle::{Throttle, ThrottleConfig};
use crate::accounts::tokens::{AppPassword, DEFAULT_INVITE_TTL, DEFAULT_RESET_TTL};
use crate::audit::{self, AuditAction, NewEntry, Outcome};
use crate::crypto::Scope;
use crate::model::*;
use crate::store::records::*;
use crate::store::tables::{self, LOGINS};
use crate::store::{Db, Tx, WriteCtx};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use crate::accounts::templates::DEFAULT_BASE_URL;
/// The firm name used in mails and pages when none is configured.
pub const DEFAULT_FIRM_NAME: &str = "The firm";
/// Most app passwords one login may hold.
pub const MAX_APP_PASSWORDS: usize = 32;

/// Account settings as collected by the [`PortalBuilder`].
#[derive(Default)]
pub(crate) struct AccountSetup {
    mailer: Option<Arc<dyn Mailer>>,
    base_url: Option<BaseUrl>,
    firm: Option<String>,
    invite_ttl: Option<Duration>,
    reset_ttl: Option<Duration>,
    throttle: Option<ThrottleConfig>,
    sftp_address: Option<String>,
}

impl AccountSetup {
    /// The running state, defaults filled in. The default mailer: a file outbox in
    /// `DATA/outbox` for an on-disk portal stored in the clear, memory for one in memory, and
    /// for an on-disk portal encrypted at rest a [`NoMailer`] (its mails must not land in the
    /// data folder in plaintext: configure SMTP, or an outbox explicitly).
    pub(crate) fn build(self, data_dir: Option<&Path>, encrypted: bool) -> AccountState {
        let mailer: Arc<dyn Mailer> = match (self.mailer, data_dir) {
            (Some(m), _) => m,
            (None, Some(_)) if encrypted => Arc::new(NoMailer::new(
                "no mailer is configured: this portal is encrypted at rest, so its mails are not \
                 written into the data folder in plaintext; configure SMTP (or choose an outbox \
                 folder explicitly)",
            )),
            (None, Some(dir)) => Arc::new(FileOutbox::new(dir.join("outbox"))),
            (None, None) => Arc::new(MemoryMailer::new()),
        };
        let base_url = self.base_url.unwrap_or_default();
        AccountState {
            mailer,
            base_url,
            firm: self.firm.unwrap_or_else(|| DEFAULT_FIRM_NAME.to_owned()),
            invite_ttl: self.invite_ttl.unwrap_or(DEFAULT_INVITE_TTL),
            reset_ttl: self.reset_ttl.unwrap_or(DEFAULT_RESET_TTL),
            throttle: Arc::new(Throttle::new(self.throttle.unwrap_or_default())),
            sftp_address: self.sftp_address,
        }
    }
}

/// The account settings a running portal uses.
pub(crate) struct AccountState {
    pub(crate) mailer: Arc<dyn Mailer>,
    pub(crate) base_url: BaseUrl,
    pub(crate) firm: String,
    pub(crate) invite_ttl: Duration,
    pub(crate) reset_ttl: Duration,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) sftp_address: Option<String>,
}

impl PortalBuilder {
    /// Delivers the portal's mail (invitations, password resets, notifications) through
    /// `mailer`. Default: a file outbox in `DATA/outbox` for an on-disk portal stored in the
    /// clear, a [`MemoryMailer`] for one in memory, and for a portal encrypted at rest
    /// ([`PortalBuilder::key_provider`] or a custom sealer) a [`NoMailer`] that refuses: its
    /// mails would otherwise sit in the data folder in plaintext. An explicitly chosen
    /// [`FileOutbox`] is used as given.
    pub fn mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.accounts.mailer = Some(mailer);
        self
    }
    /// The portal's public base URL, used to build the links in mails and the WebDAV address
    /// shown on the pages (default [`DEFAULT_BASE_URL`]).
    pub fn base_url(mut self, url: BaseUrl) -> Self {
        self.accounts.base_url = Some(url);
        self
    }
    /// The firm's name, shown in mails and pages (default [`DEFAULT_FIRM_NAME`]).
    pub fn firm_name(mut self, name: impl Into<String>) -> Self {
        self.accounts.firm = Some(name.into());
        self
    }
    /// How long an invitation link stays valid (default 7 days).
    pub fn invite_ttl(mut self, ttl: Duration) -> Self {
        self.accounts.invite_ttl = Some(ttl);
        self
    }
    /// How long a password-reset link stays valid (default 1 hour).
    pub fn reset_ttl(mut self, ttl: Duration) -> Self {
        self.accounts.reset_ttl = Some(ttl);
        self
    }
    /// Brute-force defence thresholds (default [`ThrottleConfig::default`]).
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.accounts.throttle = Some(config);
        self
    }
    /// The SFTP address people connect to (`host:port` or `host`), shown on the pages after an
    /// invitation is accepted. Default: the base URL's host on port 22.
    pub fn sftp_address(mut self, address: impl Into<String>) -> Self {
        self.accounts.sftp_address = Some(address.into());
        self
    }
}

/// An app password as listed (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppPasswordInfo {
    /// Id (within the login).
    pub id: u64,
    /// The device name given at creation.
    pub name: String,
    /// Created at.
    pub created: Millis,
}

/// A new app password: the only time its secret is available.
#[derive(Debug)]
pub struct NewAppPassword {
    /// How it is listed.
    pub info: AppPasswordInfo,
    /// The secret (`xxxx-xxxx-xxxx-xxxx-xxxx`). Show it once; it is not stored.
    pub secret: AppPassword,
}

fn app_info(r: &AppPasswordRec) -> AppPasswordInfo {
    AppPasswordInfo {
        id: r.id,
        name: r.name.clone(),
        created: r.created,
    }
}

/// The login record behind `login`, if `actor` may manage its credentials: the login itself
/// or staff (the actor's own login must exist and be enabled).
fn self_or_staff<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    actor: &Actor,
    login: LoginId,
) -> Result<LoginRec> {
    crate::policy::check_principal(db, actor.principal)?;
    if !actor.principal.is_staff() && actor.principal.login() != Some(login) {
        return Err(Error::StaffOnly("managing another login's credentials"));
    }
    db.need(
        LOGINS,
        Scope::Global,
        &tables::ids(&[login.0]),
        &format!("login {login}"),
    )
}

/// A weak-password refusal as a library error (the message is meant for the person).
pub(crate) fn weak_error(w: WeakPassword) -> Error {
    Error::Invalid(w.to_string())
}

impl Portal {
    /// The mailer the portal sends through.
    pub fn mailer(&self) -> &Arc<dyn Mailer> {
        &self.inner.accounts.mailer
    }

    /// The public base URL links are built from.
    pub fn base_url(&self) -> &BaseUrl {
        &self.inner.accounts.base_url
    }

    /// The firm's name as shown in mails and pages.
    pub fn firm_name(&self) -> &str {
        &self.inner.accounts.firm
    }

    /// The SFTP address shown to people (`host:port`), if configured.
    pub fn sftp_address(&self) -> Option<&str> {
        self.inner.accounts.sftp_address.as_deref()
    }

    /// The brute-force throttle shared by every front end.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.inner.accounts.throttle
    }

    /// How long new invitation links stay valid.
    pub fn invite_ttl(&self) -> Duration {
        self.inner.accounts.invite_ttl
    }

    /// How long new password-reset links stay valid.
    pub fn reset_ttl(&self) -> Duration {
        self.inner.accounts.reset_ttl
    }

    /// Runs a credential job on `login` for `actor` (the login itself or staff): checks, runs
    /// `f` in a write job and audits the outcome as `account:<action>` in the same commit.
    pub(crate) async fn account_job<R, F>(
        &self,
        actor: &Actor,
        action: &'static str,
        login: LoginId,
        object: String,
        mut f: F,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut WriteCtx<'_>, LoginRec) -> Result<R> + Send + 'static,
    {
        let actor = actor.clone();
        self.inner
            .store
            .write(move |ctx| {
                let res = self_or_staff(&ctx.db(), &actor, login).and_then(|r| f(ctx, r));
                let res = match res {
                    Err(e @ (Error::Storage(_) | Error::Io(_))) => return Err(e),
                    other => other,
                };
                audit::append(
                    ctx,
                    NewEntry {
                        actor: actor.clone(),
                        matter: None,
                        document: None,
                        object: object.clone(),
                        action: AuditAction::Account(action.to_string()),
                        outcome: Outcome::of(&res),
                    },
                )?;
                Ok(res)
            })
            .await?
    }

    /// Appends an `account:<action>` audit entry on its own.
    pub(crate) async fn audit_account(
        &self,
        actor: Actor,
        action: &str,
        matter: Option<MatterId>,
        object: String,
        outcome: Outcome,
    ) -> Result<()> {
        self.audit(NewEntry {
            actor,
            matter,
            document: None,
            object,
            action: AuditAction::Account(action.to_string()),
            outcome,
        })
        .await
    }

    /// Creates an app password for one device of `login` (the login itself or staff). The
    /// secret is returned once and only its hash is stored. It works wherever the login's
    /// password does (WebDAV, SFTP) and can be revoked on its own.
    pub async fn create_app_password(
        &self,
        actor: &Actor,
        login: LoginId,
        name: &str,
    ) -> Result<NewAppPassword> {
        let name = super::admin::check_text("an app password name", name, 100)?;
        let (secret, hash) = AppPassword::generate()?;
        let hash_hex = hex::encode(hash.as_bytes());
        let object = format!("login {login}: app password \"{name}\"");
        let info = self
            .account_job(actor, "app_password_create", login, object, move |ctx, mut r| {
                if r.app_passwords.len() >= MAX_APP_PASSWORDS {
                    return Err(Error::TooLarge(format!(
                        "a login holds at most {MAX_APP_PASSWORDS} app passwords; revoke one first"
                    )));
                }
                let folded = name.to_lowercase();
                if r.app_passwords.iter().any(|a| a.name.to_lowercase() == folded) {
                    return Err(Error::AlreadyExists(format!("an app password named \"{name}\"")));
                }
                let rec = AppPasswordRec {
                    id: ctx.new_id(),
                    name: name.clone(),
                    hash: hash_hex.clone(),
                    created: now_millis(),
                };
                let info = app_info(&rec);
                r.app_passwords.push(rec);
                r.credential_gen += 1;
                ctx.put(LOGINS, Scope::Global, &tables::ids(&[login.0]), &r)?;
                ctx.access_changed();
                Ok(info)
            })
            .await?;
        Ok(NewAppPassword { info, secret })
    }

    /// Lists `login`'s app passwords (the login itself or staff).
    pub async fn app_passwords(
        &self,
        actor: &Actor,
        login: LoginId,
    ) -> Result<Vec<AppPasswordInfo>> {
        let a = actor.clone();
        let res = self
            .inner
            .store
            .read(move |db| {
                let r = self_or_staff(db, &a, login)?;
                Ok(r.app_passwords.iter().map(app_info).collect::<Vec<_>>())
            })
            .await;
        self.audit_account(
            actor.clone(),
            "app_password_list",
            None,
            format!("login {login}"),
            Outcome::of(&res),
        )
        .await?;
        res
    }

    /// Revokes one of `login`'s app passwords (the login itself or staff). Takes effect on the
    /// next request of any client using it. Returns false if there was no such app password.
    pub async fn revoke_app_password(
        &self,
        actor: &Actor,
        login: LoginId,
        id: u64,
    ) -> Result<bool> {
        let object = format!("login {login}: app password {id}");
        self.account_job(
            actor,
            "app_password_revoke",
            login,
            object,
            move |ctx, mut r| {
                let before = r.app_passwords.len();
                r.app_passwords.retain(|a| a.id != id);
                if r.app_passwords.len() == before {
                    return Ok(false);
                }
                r.credential_gen += 1;
                ctx.put(LOGINS, Scope::Global, &tables::ids(&[login.0]), &r)?;
                ctx.access_changed();
                Ok(true)
            },
        )
        .await
    }

    /// Changes the actor's own password: `current` must be its present password (an app
    /// password does not do), `new` must pass the strength rules. Throttled like a login.
    pub async fn change_password(&self, actor: &Actor, current: &str, new: &str) -> Result<()> {
        let Some(login) = actor.principal.login() else {
            return Err(Error::Invalid(
                "the system has no password to change".into(),
            ));
        };
        let a = actor.clone();
        let rec = self
            .inner
            .store
            .read(move |db| self_or_staff(db, &a, login))
            .await?;
        let object = format!("login {}", rec.email);
        let ip = actor.remote.map(|r| r.ip());
        let throttle = self.throttle().clone();
        let attempt = match super::logins::throttle_begin(&throttle, &rec.email, ip).await {
            Ok(a) => a,
            Err(r) => {
                let e = super::logins::locked_out(r.retry_after);
                self.audit_account(
                    actor.clone(),
                    "password_change",
                    None,
                    object,
                    Outcome::from_err(&e),
                )
                .await?;
                return Err(e);
            }
        };
        let ok = password::verify_async(current.to_owned(), rec.password_hash.clone()).await?;
        if !ok {
            let _ = attempt.failed();
            let e = Error::AuthenticationFailed;
            self.audit_account(
                actor.clone(),
                "password_change",
                None,
                object,
                Outcome::from_err(&e),
            )
            .await?;
            return Err(e);
        }
        attempt.succeeded();
        if let Err(w) = password::check_strength(new, &[&rec.email, &rec.name, self.firm_name()]) {
            let e = weak_error(w);
            self.audit_account(
                actor.clone(),
                "password_change",
                None,
                object,
                Outcome::from_err(&e),
            )
            .await?;
            return Err(e);
        }
        let hash = password::hash_password_async(new.to_owned()).await?;
        self.account_job(
            actor,
            "password_change",
            login,
            object,
            move |ctx, mut r| {
                r.password_hash = Some(hash.clone());
                r.credential_gen += 1;
                ctx.put(LOGINS, Scope::Global, &tables::ids(&[login.0]), &r)?;
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_base_url_is_valid() {
        assert!(BaseUrl::parse(DEFAULT_BASE_URL).is_ok());
        let s = AccountSetup::default().build(None, false);
        assert_eq!(s.base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(s.invite_ttl, DEFAULT_INVITE_TTL);
        assert_eq!(s.firm, DEFAULT_FIRM_NAME);
    }
}

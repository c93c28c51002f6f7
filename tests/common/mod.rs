//! Shared fixture for the engine's integration tests: a portal with a staff login, the usual
//! participant types and a "General" matter type, plus helpers to add portal users, upload and read
//! documents and count audit entries. Everything goes through the public API.
#![allow(dead_code)]

use sdx_portal::audit::{AuditEntry, AuditFilter, Outcome};
use sdx_portal::model::*;
use sdx_portal::tree::{Entry, Tree, WriteOptions};
use sdx_portal::{Error, Portal, Result};

/// The portal folder most tests use.
pub const CD: &str = "Client Documents";

/// A portal set up the way a firm would: staff, Client / Other Side, a "General" matter type.
pub struct Fx {
    /// The portal.
    pub portal: Portal,
    /// The system acting through the API (set-up).
    pub firm: Actor,
    /// A staff login acting through the API.
    pub staff: Actor,
    /// That staff login.
    pub staff_login: LoginId,
    /// Participant type "Client".
    pub client: ParticipantTypeId,
    /// Participant type "Other Side".
    pub other_side: ParticipantTypeId,
    /// Matter type "General": `Client Documents`, `Client Documents/Tax Returns`, `Internal`.
    pub general: MatterTypeId,
}

/// A portal user taking part in one matter.
pub struct User {
    /// Contact.
    pub contact: ContactId,
    /// Participant in the matter.
    pub participant: ParticipantId,
    /// Login.
    pub login: LoginId,
    /// How the user acts.
    pub actor: Actor,
}

impl User {
    /// The user's tree.
    pub fn tree(&self, portal: &Portal) -> Tree {
        portal.tree(self.actor.clone())
    }
}

impl Fx {
    /// An in-memory portal.
    pub async fn new() -> Fx {
        Fx::with_portal(Portal::in_memory().await.expect("in-memory portal")).await
    }

    /// Sets up the usual types on `portal`.
    pub async fn with_portal(portal: Portal) -> Fx {
        let firm = Actor::system();
        let staff_login = portal
            .create_staff_login(&firm, "staff@firm.test", "Sam Staff", None)
            .await
            .expect("staff login");
        let staff = Actor::api(Principal::Staff(staff_login));
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .expect("Client");
        let other_side = portal
            .create_participant_type(&firm, "Other Side")
            .await
            .expect("Other Side");
        let general = portal
            .create_matter_type(
                &firm,
                "General",
                &[
                    "Client Documents",
                    "Client Documents/Tax Returns",
                    "Internal",
                ],
            )
            .await
            .expect("General");
        Fx {
            portal,
            firm,
            staff,
            staff_login,
            client,
            other_side,
            general,
        }
    }

    /// The staff login's tree.
    pub fn staff_tree(&self) -> Tree {
        self.portal.tree(self.staff.clone())
    }

    /// Opens a matter; returns its id and its path in trees (`/number title`).
    pub async fn matter(
        &self,
        number: &str,
        title: &str,
        mtype: MatterTypeId,
    ) -> (MatterId, String) {
        let id = self
            .portal
            .create_matter(&self.firm, number, title, mtype)
            .await
            .expect("create matter");
        (id, format!("/{number} {title}"))
    }

    /// Sets one participant type's permissions on one folder of a matter type.
    pub async fn set_perms(
        &self,
        mtype: MatterTypeId,
        folder: &str,
        ptype: ParticipantTypeId,
        perms: Permissions,
    ) {
        self.portal
            .set_portal_permissions(&self.firm, mtype, folder, ptype, perms)
            .await
            .expect("set portal permissions");
    }

    /// A contact with a portal login, on `matter` as `ptype`, with portal access if `grant`.
    pub async fn user(
        &self,
        name: &str,
        email: &str,
        matter: MatterId,
        ptype: ParticipantTypeId,
        grant: bool,
    ) -> User {
        let contact = self
            .portal
            .create_contact(&self.firm, name, email)
            .await
            .expect("contact");
        let login = self
            .portal
            .create_portal_login(&self.firm, contact, None)
            .await
            .expect("login");
        let participant = self
            .portal
            .add_participant(&self.firm, matter, contact, ptype)
            .await
            .expect("participant");
        if grant {
            self.portal
                .grant_access(&self.firm, matter, participant)
                .await
                .expect("grant");
        }
        User {
            contact,
            participant,
            login,
            actor: Actor::api(Principal::Portal(login)),
        }
    }

    /// Adds an existing contact (with its login) to another matter.
    pub async fn join(
        &self,
        u: &User,
        matter: MatterId,
        ptype: ParticipantTypeId,
    ) -> ParticipantId {
        let p = self
            .portal
            .add_participant(&self.firm, matter, u.contact, ptype)
            .await
            .expect("participant");
        self.portal
            .grant_access(&self.firm, matter, p)
            .await
            .expect("grant");
        p
    }

    /// Every audit entry by `login`, newest first.
    pub async fn audit_of(&self, login: LoginId) -> Vec<AuditEntry> {
        self.portal
            .audit_query(
                &self.staff,
                AuditFilter {
                    login: Some(login),
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
            .await
            .expect("audit query")
    }

    /// Every audit entry about `matter`, newest first.
    pub async fn audit_of_matter(&self, matter: MatterId) -> Vec<AuditEntry> {
        self.portal
            .audit_query(
                &self.staff,
                AuditFilter {
                    matter: Some(matter),
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
            .await
            .expect("audit query")
    }

    /// Runs `op` and checks that it added exactly one audit entry for `login`, returning that entry
    /// with the op's result.
    pub async fn audited<T, F>(&self, login: LoginId, what: &str, op: F) -> (Result<T>, AuditEntry)
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let before = self.audit_of(login).await;
        let r = op.await;
        let after = self.audit_of(login).await;
        assert_eq!(
            after.len(),
            before.len() + 1,
            "{what}: expected exactly one new audit entry, got {}",
            after.len() as i64 - before.len() as i64
        );
        let newest = after.first().cloned().expect("an entry");
        if let Some(prev) = before.first() {
            assert!(newest.seq > prev.seq, "{what}: the new entry is the newest");
        }
        (r, newest)
    }
}

/// Uploads `data` to `path` (create or replace) and commits.
pub async fn put(tree: &Tree, path: &str, data: &[u8]) -> Result<Entry> {
    let mut up = tree.open_write(path, WriteOptions::upload()).await?;
    up.write(data).await?;
    up.commit().await
}

/// Reads a whole document.
pub async fn read_all(tree: &Tree, path: &str) -> Result<Vec<u8>> {
    let mut h = tree.open_read(path).await?;
    let mut out = Vec::new();
    loop {
        let chunk = h.read_at(out.len() as u64, 1 << 16).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Names of the entries of a listing.
pub fn names(entries: &[Entry]) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    v.sort();
    v
}

/// Whether an outcome is `Allowed`.
pub fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allowed)
}

/// Short description of an error's kind for assertion messages.
pub fn kind<T: std::fmt::Debug>(r: &Result<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?})"),
    }
}

/// Whether the error is `NotFound`.
pub fn is_not_found<T>(r: &Result<T>) -> bool {
    matches!(r, Err(Error::NotFound(_)))
}

/// Whether the error is a policy denial for `perm`.
pub fn is_denied_for<T>(r: &Result<T>, perm: Permission) -> bool {
    matches!(r, Err(Error::PermissionDenied { permission, .. }) if *permission == perm)
}

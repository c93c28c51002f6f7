//! The access policy: the one place that decides who may do what.
//!
//! Given a principal, this module answers: which matters can they see, and what may they do in
//! each folder? Front ends and the tree never compute permissions themselves; they ask here and
//! [`require`] the answer.
//!
//! Rules (from the portal model):
//! - Staff and the system see every matter (open or closed) and every folder with all permissions.
//! - A portal login sees a matter only while it is open and one of its contact's participants in it
//!   has portal access. In that matter it gets, per folder, the union of the permissions the matter
//!   type configures for its participant types at that folder's template path.
//! - A folder with no permission is invisible — unless a configured portal folder lies below it,
//!   then it is shown as an empty *container* so the portal folder can be reached.
//! - A disabled or unknown login is refused everything.

use crate::crypto::Scope;
use crate::model::*;
use crate::names;
use crate::store::records::*;
use crate::store::tables::{self, Key, LINKS, LOGINS, MATTERS, MTYPES, PARTICIPANTS, link_kind};
use crate::store::{Db, Tx};
use crate::{Error, Result};

/// What a principal may do in one matter.
#[derive(Clone, Debug)]
pub struct MatterAccess {
    /// The matter.
    pub matter: MatterId,
    /// Its record.
    pub rec: MatterRec,
    /// Staff (full rights everywhere) or not.
    pub staff: bool,
    /// For portal users: (folded template folder path, permissions), already the union over the
    /// principal's participant types.
    rules: Vec<(String, Permissions)>,
    /// For portal users: their participant ids in this matter with portal access.
    pub participants: Vec<ParticipantId>,
}

/// How a folder appears to a principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Not shown at all.
    Hidden,
    /// Shown only as a way to reach a portal folder below it; no permissions of its own.
    Container,
    /// A folder with these permissions.
    Folder(Permissions),
}

impl MatterAccess {
    /// How a folder with the given folded template path (segments joined by `/`) appears.
    pub fn folder(&self, folded_path: &str) -> Visibility {
        if self.staff {
            return Visibility::Folder(Permissions::FULL);
        }
        let mut below = false;
        let mut perms = Permissions::NONE;
        for (p, perm) in &self.rules {
            if perm.is_empty() {
                continue;
            }
            if p == folded_path {
                perms = perms.union(*perm);
            } else if p.len() > folded_path.len()
                && p.starts_with(folded_path)
                && p.as_bytes().get(folded_path.len()) == Some(&b'/')
            {
                below = true;
            }
        }
        if !perms.is_empty() {
            Visibility::Folder(perms)
        } else if below {
            Visibility::Container
        } else {
            Visibility::Hidden
        }
    }
}

/// Checks that the principal's login exists and is enabled.
pub fn check_principal<T: Tx + ?Sized>(db: &Db<'_, T>, p: Principal) -> Result<Option<LoginRec>> {
    let Some(login) = p.login() else {
        return Ok(None);
    };
    let rec: Option<LoginRec> = db.get(LOGINS, Scope::Global, &tables::ids(&[login.0]))?;
    match rec {
        Some(r) if !r.disabled => {
            let ok = matches!(
                (p, r.kind),
                (Principal::Staff(_), LoginKind::Staff) | (Principal::Portal(_), LoginKind::Portal)
            );
            if ok {
                Ok(Some(r))
            } else {
                Err(Error::AuthenticationFailed)
            }
        }
        _ => Err(Error::AuthenticationFailed),
    }
}

/// Requires staff rights.
pub fn require_staff(p: Principal, what: &'static str) -> Result<()> {
    if p.is_staff() {
        Ok(())
    } else {
        Err(Error::StaffOnly(what))
    }
}

/// Requires `perm` in `perms`; the error names the folder as the principal sees it.
pub fn require(perms: Permissions, perm: Permission, folder: &str) -> Result<()> {
    if perms.contains(perm) {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            permission: perm,
            folder: folder.to_string(),
        })
    }
}

fn matter_type<T: Tx + ?Sized>(db: &Db<'_, T>, id: MatterTypeId) -> Result<MatterTypeRec> {
    db.need(MTYPES, Scope::Global, &tables::ids(&[id.0]), "matter type")
}

/// The portal participations of a contact: (matter, participant, record).
pub fn participations<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    contact: ContactId,
) -> Result<Vec<(MatterId, ParticipantId, ParticipantRec)>> {
    let prefix = Key::kind(link_kind::CONTACT_PARTICIPATION)
        .id(contact.0)
        .done();
    let mut out = Vec::new();
    for k in db.scan_keys(LINKS, &prefix, usize::MAX)? {
        let (Some(m), Some(p)) = (tables::id_at(&k, 9), tables::id_at(&k, 17)) else {
            continue;
        };
        let rec: Option<ParticipantRec> = db.get(
            PARTICIPANTS,
            Scope::Matter(MatterId(m)),
            &tables::ids(&[m, p]),
        )?;
        if let Some(r) = rec {
            out.push((MatterId(m), ParticipantId(p), r));
        }
    }
    Ok(out)
}

/// The portal participations of a contact in one matter: (participant, record). Reads only the
/// links under `contact ‖ matter` (a prefix scan), not every matter the contact takes part in.
pub fn participations_in<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    contact: ContactId,
    matter: MatterId,
) -> Result<Vec<(ParticipantId, ParticipantRec)>> {
    let prefix = Key::kind(link_kind::CONTACT_PARTICIPATION)
        .id(contact.0)
        .id(matter.0)
        .done();
    let mut out = Vec::new();
    for k in db.scan_keys(LINKS, &prefix, usize::MAX)? {
        let Some(p) = tables::id_at(&k, 17) else {
            continue;
        };
        let rec: Option<ParticipantRec> = db.get(
            PARTICIPANTS,
            Scope::Matter(matter),
            &tables::ids(&[matter.0, p]),
        )?;
        if let Some(r) = rec {
            out.push((ParticipantId(p), r));
        }
    }
    Ok(out)
}

fn portal_access<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    matter: MatterId,
    rec: MatterRec,
    parts: &[(ParticipantId, ParticipantTypeId)],
) -> Result<MatterAccess> {
    let mtype = matter_type(db, rec.mtype)?;
    let mut rules: Vec<(String, Permissions)> = Vec::new();
    for r in &mtype.portal {
        if parts.iter().any(|(_, t)| *t == r.ptype) {
            rules.push((fold_path(&r.folder), r.perms));
        }
    }
    Ok(MatterAccess {
        matter,
        rec,
        staff: false,
        rules,
        participants: parts.iter().map(|(p, _)| *p).collect(),
    })
}

/// Folds a template path (`A/B`) segment-wise for comparisons.
pub fn fold_path(path: &str) -> String {
    path.split('/')
        .map(names::fold_key)
        .collect::<Vec<_>>()
        .join("/")
}

/// Every matter the principal can see, with its access. Staff: all matters.
pub fn visible_matters<T: Tx + ?Sized>(db: &Db<'_, T>, p: Principal) -> Result<Vec<MatterAccess>> {
    let login = check_principal(db, p)?;
    if p.is_staff() {
        let all: Vec<(Vec<u8>, MatterRec)> = db.scan(MATTERS, Scope::Global, &[], usize::MAX)?;
        return Ok(all
            .into_iter()
            .filter_map(|(k, rec)| {
                tables::id_from(&k).map(|id| MatterAccess {
                    matter: MatterId(id),
                    rec,
                    staff: true,
                    rules: Vec::new(),
                    participants: Vec::new(),
                })
            })
            .collect());
    }
    let Some(contact) = login.and_then(|l| l.contact) else {
        return Ok(Vec::new());
    };
    let mut by_matter: std::collections::BTreeMap<
        MatterId,
        Vec<(ParticipantId, ParticipantTypeId)>,
    > = Default::default();
    for (m, pid, r) in participations(db, contact)? {
        if r.portal {
            by_matter.entry(m).or_default().push((pid, r.ptype));
        }
    }
    let mut out = Vec::new();
    for (m, parts) in by_matter {
        let rec: Option<MatterRec> = db.get(MATTERS, Scope::Global, &tables::ids(&[m.0]))?;
        if let Some(rec) = rec.filter(|r| !r.closed) {
            out.push(portal_access(db, m, rec, &parts)?);
        }
    }
    Ok(out)
}

/// The principal's access to one matter; `NotFound` if they can't see it (no existence leak).
pub fn matter_access<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    p: Principal,
    matter: MatterId,
) -> Result<MatterAccess> {
    let login = check_principal(db, p)?;
    let not_found = || Error::NotFound(format!("matter {matter}"));
    let rec: MatterRec = db
        .get(MATTERS, Scope::Global, &tables::ids(&[matter.0]))?
        .ok_or_else(not_found)?;
    if p.is_staff() {
        return Ok(MatterAccess {
            matter,
            rec,
            staff: true,
            rules: Vec::new(),
            participants: Vec::new(),
        });
    }
    if rec.closed {
        return Err(not_found());
    }
    let Some(contact) = login.and_then(|l| l.contact) else {
        return Err(not_found());
    };
    let parts: Vec<(ParticipantId, ParticipantTypeId)> = participations_in(db, contact, matter)?
        .into_iter()
        .filter(|(_, r)| r.portal)
        .map(|(p, r)| (p, r.ptype))
        .collect();
    if parts.is_empty() {
        return Err(not_found());
    }
    portal_access(db, matter, rec, &parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(rules: &[(&str, Permissions)]) -> MatterAccess {
        MatterAccess {
            matter: MatterId(1),
            rec: MatterRec {
                number: "1".into(),
                title: "t".into(),
                mtype: MatterTypeId(1),
                closed: false,
                created: 0,
                display: "1 t".into(),
            },
            staff: false,
            rules: rules.iter().map(|(p, x)| (fold_path(p), *x)).collect(),
            participants: vec![],
        }
    }

    #[test]
    fn subfolders_are_invisible_unless_configured() {
        let list = Permissions::NONE.with(Permission::List);
        let a = access(&[("Client Documents", list)]);
        assert_eq!(a.folder("client documents"), Visibility::Folder(list));
        assert_eq!(a.folder("client documents/tax returns"), Visibility::Hidden);
        assert_eq!(a.folder("internal"), Visibility::Hidden);
    }

    #[test]
    fn parents_of_portal_folders_are_containers() {
        let a = access(&[("A/B", Permissions::FULL)]);
        assert_eq!(a.folder("a"), Visibility::Container);
        assert_eq!(a.folder("a/b"), Visibility::Folder(Permissions::FULL));
        // A sibling with a common prefix is not a parent.
        let b = access(&[("AB/C", Permissions::FULL)]);
        assert_eq!(b.folder("a"), Visibility::Hidden);
    }

    #[test]
    fn empty_rules_hide_the_folder() {
        let a = access(&[("A", Permissions::NONE)]);
        assert_eq!(a.folder("a"), Visibility::Hidden);
    }

    /// Bob takes part in matters 1 (twice: Client granted, Witness not), 2 (granted) and 3 (not
    /// granted); Carol only in matter 2.
    #[tokio::test]
    async fn participations_in_reads_only_the_asked_matter() {
        use crate::Portal;
        let portal = Portal::in_memory().await.unwrap();
        let firm = Actor::system();
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .unwrap();
        let witness = portal
            .create_participant_type(&firm, "Witness")
            .await
            .unwrap();
        let mt = portal
            .create_matter_type(&firm, "General", &["Docs", "Other"])
            .await
            .unwrap();
        portal
            .set_portal_permissions(&firm, mt, "Docs", client, Permissions::FULL)
            .await
            .unwrap();
        let list = Permissions::NONE.with(Permission::List);
        portal
            .set_portal_permissions(&firm, mt, "Other", witness, list)
            .await
            .unwrap();
        let bob = portal
            .create_contact(&firm, "Bob", "bob@x.test")
            .await
            .unwrap();
        let carol = portal
            .create_contact(&firm, "Carol", "carol@x.test")
            .await
            .unwrap();
        let bob_login = portal.create_portal_login(&firm, bob, None).await.unwrap();
        let mut matters = Vec::new();
        for n in ["1", "2", "3"] {
            matters.push(portal.create_matter(&firm, n, "M", mt).await.unwrap());
        }
        let (m1, m2, m3) = (matters[0], matters[1], matters[2]);
        let b1 = portal
            .add_participant(&firm, m1, bob, client)
            .await
            .unwrap();
        let b1w = portal
            .add_participant(&firm, m1, bob, witness)
            .await
            .unwrap();
        let b2 = portal
            .add_participant(&firm, m2, bob, client)
            .await
            .unwrap();
        let _b3 = portal
            .add_participant(&firm, m3, bob, client)
            .await
            .unwrap();
        let c2 = portal
            .add_participant(&firm, m2, carol, client)
            .await
            .unwrap();
        portal.grant_access(&firm, m1, b1).await.unwrap();
        portal.grant_access(&firm, m2, b2).await.unwrap();
        portal.grant_access(&firm, m2, c2).await.unwrap();

        let (in1, in2, in3, carol2, all, acc1, acc3) = portal
            .inner
            .store
            .read(move |db| {
                let ids = |v: Vec<(ParticipantId, ParticipantRec)>| {
                    let mut v: Vec<(ParticipantId, bool)> =
                        v.into_iter().map(|(p, r)| (p, r.portal)).collect();
                    v.sort();
                    v
                };
                let p = Principal::Portal(bob_login);
                Ok((
                    ids(participations_in(db, bob, m1)?),
                    ids(participations_in(db, bob, m2)?),
                    ids(participations_in(db, bob, m3)?),
                    ids(participations_in(db, carol, m2)?),
                    participations(db, bob)?.len(),
                    matter_access(db, p, m1)?,
                    matter_access(db, p, m3).map(|_| ()),
                ))
            })
            .await
            .unwrap();
        let mut want1 = vec![(b1, true), (b1w, false)];
        want1.sort();
        assert_eq!(in1, want1);
        assert_eq!(in2, vec![(b2, true)]);
        assert_eq!(in3.len(), 1);
        assert!(!in3[0].1);
        assert_eq!(carol2, vec![(c2, true)]);
        assert_eq!(all, 4);
        // Only the granted participation counts: Docs (Client), not Other (Witness).
        assert_eq!(acc1.participants, vec![b1]);
        assert_eq!(acc1.folder("docs"), Visibility::Folder(Permissions::FULL));
        assert_eq!(acc1.folder("other"), Visibility::Hidden);
        assert!(acc3.unwrap_err().is_not_found());
    }

    #[test]
    fn require_names_permission_and_folder() {
        let e = require(Permissions::NONE, Permission::Create, "/m/Client Documents").unwrap_err();
        assert!(e.to_string().contains("Create"));
        assert!(e.to_string().contains("Client Documents"));
    }
}

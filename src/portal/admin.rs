//! Staff administration: participant types, matter types and their portal configuration,
//! contacts, matters, participants, grants, closing.

use super::Portal;
use crate::crypto::Scope;
use crate::events::PortalEvent;
use crate::model::*;
use crate::names;
use crate::policy;
use crate::store::records::*;
use crate::store::tables::{
    self, CONTACTS, FOLDERS, Key, LINKS, LOGINS, MATTERS, MTYPES, NAMES, PARTICIPANTS, PTYPES,
    link_kind, name_kind,
};
use crate::store::{Db, Tx, WriteCtx};
use crate::tree::resolve::{folder_name_key, matter_display_key};
use crate::{Error, Result};
use serde::Serialize;

/// Default invitation lifetime: 7 days (configure with [`crate::PortalBuilder::invite_ttl`]).
pub const INVITATION_TTL_MILLIS: u64 = 7 * 24 * 3600 * 1000;

/// A participant type as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParticipantTypeInfo {
    /// Id.
    pub id: ParticipantTypeId,
    /// Name.
    pub name: String,
}

/// A matter type as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatterTypeInfo {
    /// Id.
    pub id: MatterTypeId,
    /// Name.
    pub name: String,
    /// Template folders.
    pub folders: Vec<String>,
    /// Portal configuration: (folder, participant type, permissions).
    pub portal: Vec<(String, ParticipantTypeId, Permissions)>,
}

/// A matter as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatterInfo {
    /// Id.
    pub id: MatterId,
    /// Number.
    pub number: String,
    /// Title.
    pub title: String,
    /// Type.
    pub matter_type: MatterTypeId,
    /// Closed?
    pub closed: bool,
    /// Its folder name in trees.
    pub display: String,
}

/// A contact as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactInfo {
    /// Id.
    pub id: ContactId,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Linked login.
    pub login: Option<LoginId>,
}

/// A participant as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    /// Id.
    pub id: ParticipantId,
    /// Matter.
    pub matter: MatterId,
    /// Contact.
    pub contact: ContactId,
    /// Participant type.
    pub participant_type: ParticipantTypeId,
    /// Portal access granted?
    pub portal_access: bool,
}

/// What [`Portal::grant_access`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantOutcome {
    /// Whether access was newly granted (false: it already was).
    pub granted: bool,
    /// The invitation recorded for the contact, if one was.
    pub invitation: Option<InvitationId>,
    /// Its kind.
    pub invitation_kind: Option<InvitationKind>,
    /// Whether the invitation mail was handed to the portal's mailer (false if there was none
    /// to send, or delivery failed: see the audit trail and re-send it).
    pub mailed: bool,
}

fn name_key<T: Tx + ?Sized>(db: &Db<'_, T>, kind: u8, name: &str) -> Vec<u8> {
    Key::kind(kind)
        .bytes(&db.ikey(Scope::Global, &names::fold_key(name)))
        .done()
}

fn email_key<T: Tx + ?Sized>(db: &Db<'_, T>, kind: u8, email: &str) -> Vec<u8> {
    Key::kind(kind)
        .bytes(&db.ikey(Scope::Global, &email.trim().to_lowercase()))
        .done()
}

pub(crate) fn contact_email_key<T: Tx + ?Sized>(db: &Db<'_, T>, email: &str) -> Vec<u8> {
    email_key(db, name_kind::CONTACT_EMAIL, email)
}

pub(crate) fn login_email_key<T: Tx + ?Sized>(db: &Db<'_, T>, email: &str) -> Vec<u8> {
    email_key(db, name_kind::LOGIN_EMAIL, email)
}

/// Checks a plain display text (names of types, titles): not empty, bounded, no control chars.
pub(crate) fn check_text(what: &str, s: &str, max: usize) -> Result<String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(Error::Invalid(format!("{what} must not be empty")));
    }
    if t.chars().count() > max {
        return Err(Error::Invalid(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(t.to_string())
}

/// Checks an email address enough to route mail (local@domain, no spaces or control chars).
pub(crate) fn check_email(s: &str) -> Result<String> {
    let e = s.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    if ok {
        Ok(e.to_string())
    } else {
        Err(Error::Invalid(format!(
            "\"{e}\" is not a valid email address"
        )))
    }
}

/// Canonicalises a template folder path: each segment a legal name, joined by `/`.
pub(crate) fn canonical_folder_path(p: &str) -> Result<String> {
    let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if segs.is_empty() {
        return Err(Error::Invalid("a folder path must not be empty".into()));
    }
    if segs.len() > crate::path::MAX_DEPTH {
        return Err(Error::Invalid(format!("folder path \"{p}\" is too deep")));
    }
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        out.push(names::canonical(s)?);
    }
    Ok(out.join("/"))
}

fn canonical_template(folders: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in folders {
        let c = canonical_folder_path(f)?;
        // Parents are implied: "A/B" brings "A".
        let segs: Vec<&str> = c.split('/').collect();
        for i in 1..=segs.len() {
            let p = segs[..i].join("/");
            if seen.insert(policy::fold_path(&p)) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Makes sure every template folder exists in a matter (creating missing ones). Returns how many
/// were created.
pub(crate) fn instantiate_template(
    ctx: &mut WriteCtx<'_>,
    matter: MatterId,
    folders: &[String],
) -> Result<u64> {
    let mut created = 0;
    for path in folders {
        let mut parent: Option<FolderId> = None;
        for seg in path.split('/') {
            let key = folder_name_key(&ctx.db(), matter, parent, seg);
            parent = Some(match ctx.db().get_id(NAMES, &key)? {
                Some(id) => FolderId(id),
                None => {
                    let id = FolderId(ctx.new_id());
                    ctx.put(
                        FOLDERS,
                        Scope::Matter(matter),
                        &tables::ids(&[matter.0, id.0]),
                        &FolderRec {
                            parent,
                            name: seg.to_string(),
                            created: now_millis(),
                        },
                    )?;
                    ctx.put_id(NAMES, &key, id.0)?;
                    created += 1;
                    id
                }
            });
        }
    }
    Ok(created)
}

fn get_mtype<T: Tx + ?Sized>(db: &Db<'_, T>, id: MatterTypeId) -> Result<MatterTypeRec> {
    db.need(
        MTYPES,
        Scope::Global,
        &tables::ids(&[id.0]),
        &format!("matter type {id}"),
    )
}

fn get_matter<T: Tx + ?Sized>(db: &Db<'_, T>, id: MatterId) -> Result<MatterRec> {
    db.need(
        MATTERS,
        Scope::Global,
        &tables::ids(&[id.0]),
        &format!("matter {id}"),
    )
}

fn get_participant<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    m: MatterId,
    p: ParticipantId,
) -> Result<ParticipantRec> {
    db.need(
        PARTICIPANTS,
        Scope::Matter(m),
        &tables::ids(&[m.0, p.0]),
        &format!("participant {p} in matter {m}"),
    )
}

impl Portal {
    /// Creates a participant type (Client, Other Side, Expert…). Names are unique, case-insensitively.
    pub async fn create_participant_type(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<ParticipantTypeId> {
        let name = check_text("a participant type name", name, 100)?;
        self.admin(
            actor,
            "create_participant_type",
            None,
            name.clone(),
            move |ctx| {
                let key = name_key(&ctx.db(), name_kind::PTYPE, &name);
                if ctx.db().get_id(NAMES, &key)?.is_some() {
                    return Err(Error::AlreadyExists(format!("participant type \"{name}\"")));
                }
                let id = ctx.new_id();
                ctx.put(
                    PTYPES,
                    Scope::Global,
                    &tables::ids(&[id]),
                    &ParticipantTypeRec { name: name.clone() },
                )?;
                ctx.put_id(NAMES, &key, id)?;
                Ok(ParticipantTypeId(id))
            },
        )
        .await
    }

    /// Finds a participant type by name.
    pub async fn find_participant_type(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<Option<ParticipantTypeId>> {
        let name = name.to_string();
        self.admin_read(
            actor,
            "find_participant_type",
            None,
            name.clone(),
            move |db| {
                Ok(db
                    .get_id(NAMES, &name_key(db, name_kind::PTYPE, &name))?
                    .map(ParticipantTypeId))
            },
        )
        .await
    }

    /// Lists participant types.
    pub async fn participant_types(&self, actor: &Actor) -> Result<Vec<ParticipantTypeInfo>> {
        self.admin_read(actor, "list_participant_types", None, String::new(), |db| {
            let all: Vec<(Vec<u8>, ParticipantTypeRec)> =
                db.scan(PTYPES, Scope::Global, &[], usize::MAX)?;
            Ok(all
                .into_iter()
                .filter_map(|(k, r)| {
                    tables::id_from(&k).map(|id| ParticipantTypeInfo {
                        id: ParticipantTypeId(id),
                        name: r.name,
                    })
                })
                .collect())
        })
        .await
    }

    /// Creates a matter type with a folder template (paths like `Client Documents/Tax Returns`;
    /// parents are implied). No folder is a portal folder until configured.
    pub async fn create_matter_type(
        &self,
        actor: &Actor,
        name: &str,
        folders: &[&str],
    ) -> Result<MatterTypeId> {
        let name = check_text("a matter type name", name, 100)?;
        let folders =
            canonical_template(&folders.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        self.admin(
            actor,
            "create_matter_type",
            None,
            name.clone(),
            move |ctx| {
                let key = name_key(&ctx.db(), name_kind::MTYPE, &name);
                if ctx.db().get_id(NAMES, &key)?.is_some() {
                    return Err(Error::AlreadyExists(format!("matter type \"{name}\"")));
                }
                let id = ctx.new_id();
                ctx.put(
                    MTYPES,
                    Scope::Global,
                    &tables::ids(&[id]),
                    &MatterTypeRec {
                        name: name.clone(),
                        folders: folders.clone(),
                        portal: Vec::new(),
                    },
                )?;
                ctx.put_id(NAMES, &key, id)?;
                Ok(MatterTypeId(id))
            },
        )
        .await
    }

    /// Finds a matter type by name.
    pub async fn find_matter_type(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<Option<MatterTypeId>> {
        let name = name.to_string();
        self.admin_read(actor, "find_matter_type", None, name.clone(), move |db| {
            Ok(db
                .get_id(NAMES, &name_key(db, name_kind::MTYPE, &name))?
                .map(MatterTypeId))
        })
        .await
    }

    /// One matter type with its template and portal configuration.
    pub async fn matter_type(&self, actor: &Actor, id: MatterTypeId) -> Result<MatterTypeInfo> {
        self.admin_read(actor, "get_matter_type", None, id.to_string(), move |db| {
            let r = get_mtype(db, id)?;
            Ok(MatterTypeInfo {
                id,
                name: r.name,
                folders: r.folders,
                portal: r
                    .portal
                    .into_iter()
                    .map(|p| (p.folder, p.ptype, p.perms))
                    .collect(),
            })
        })
        .await
    }

    /// Lists matter types.
    pub async fn matter_types(&self, actor: &Actor) -> Result<Vec<MatterTypeInfo>> {
        self.admin_read(actor, "list_matter_types", None, String::new(), |db| {
            let all: Vec<(Vec<u8>, MatterTypeRec)> =
                db.scan(MTYPES, Scope::Global, &[], usize::MAX)?;
            Ok(all
                .into_iter()
                .filter_map(|(k, r)| {
                    tables::id_from(&k).map(|id| MatterTypeInfo {
                        id: MatterTypeId(id),
                        name: r.name,
                        folders: r.folders,
                        portal: r
                            .portal
                            .into_iter()
                            .map(|p| (p.folder, p.ptype, p.perms))
                            .collect(),
                    })
                })
                .collect())
        })
        .await
    }

    /// Replaces a matter type's folder template and pushes it to every matter of the type: missing
    /// folders are created. Folders dropped from the template stay in existing matters (their
    /// documents are never touched) but stop being portal folders if they were.
    pub async fn set_matter_type_folders(
        &self,
        actor: &Actor,
        id: MatterTypeId,
        folders: &[&str],
    ) -> Result<()> {
        let folders =
            canonical_template(&folders.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        self.admin(
            actor,
            "set_matter_type_folders",
            None,
            id.to_string(),
            move |ctx| {
                let mut r = get_mtype(&ctx.db(), id)?;
                let keep: std::collections::HashSet<String> =
                    folders.iter().map(|f| policy::fold_path(f)).collect();
                r.folders = folders.clone();
                r.portal
                    .retain(|p| keep.contains(&policy::fold_path(&p.folder)));
                ctx.put(MTYPES, Scope::Global, &tables::ids(&[id.0]), &r)?;
                let prefix = Key::kind(link_kind::MATTER_OF_TYPE).id(id.0).done();
                for k in ctx.db().scan_keys(LINKS, &prefix, usize::MAX)? {
                    if let Some(m) = tables::id_at(&k, 9) {
                        instantiate_template(ctx, MatterId(m), &folders)?;
                    }
                }
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }

    /// Sets what one participant type may do in one template folder of a matter type (replacing
    /// what it had; [`Permissions::NONE`] removes the folder from that type's portal). Changes only
    /// this matter type, and take effect at once for every open session.
    pub async fn set_portal_permissions(
        &self,
        actor: &Actor,
        id: MatterTypeId,
        folder: &str,
        ptype: ParticipantTypeId,
        perms: Permissions,
    ) -> Result<()> {
        let folder = canonical_folder_path(folder)?;
        let object = format!("{folder} [{ptype}] = {perms}");
        self.admin(actor, "set_portal_permissions", None, object, move |ctx| {
            let mut r = get_mtype(&ctx.db(), id)?;
            let fold = policy::fold_path(&folder);
            if !r.folders.iter().any(|f| policy::fold_path(f) == fold) {
                return Err(Error::NotFound(format!(
                    "folder \"{folder}\" is not in the template of matter type \"{}\"",
                    r.name
                )));
            }
            if ctx
                .db()
                .get::<ParticipantTypeRec>(PTYPES, Scope::Global, &tables::ids(&[ptype.0]))?
                .is_none()
            {
                return Err(Error::NotFound(format!("participant type {ptype}")));
            }
            r.portal
                .retain(|p| !(policy::fold_path(&p.folder) == fold && p.ptype == ptype));
            if !perms.is_empty() {
                r.portal.push(PortalRule {
                    folder: folder.clone(),
                    ptype,
                    perms,
                });
            }
            ctx.put(MTYPES, Scope::Global, &tables::ids(&[id.0]), &r)?;
            ctx.access_changed();
            Ok(())
        })
        .await
    }

    /// Creates a contact. Emails are unique (case-insensitively).
    pub async fn create_contact(
        &self,
        actor: &Actor,
        name: &str,
        email: &str,
    ) -> Result<ContactId> {
        let name = check_text("a contact name", name, 200)?;
        let email = check_email(email)?;
        self.admin(
            actor,
            "create_contact",
            None,
            format!("contact {email}"),
            move |ctx| {
                let key = contact_email_key(&ctx.db(), &email);
                if ctx.db().get_id(NAMES, &key)?.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "a contact with email {email}"
                    )));
                }
                let id = ctx.new_id();
                // Link an existing portal login with the same email.
                let login = ctx
                    .db()
                    .get_id(NAMES, &login_email_key(&ctx.db(), &email))?
                    .map(LoginId);
                ctx.put(
                    CONTACTS,
                    Scope::Global,
                    &tables::ids(&[id]),
                    &ContactRec {
                        name: name.clone(),
                        email: email.clone(),
                        login,
                    },
                )?;
                ctx.put_id(NAMES, &key, id)?;
                Ok(ContactId(id))
            },
        )
        .await
    }

    /// Finds a contact by email.
    pub async fn find_contact(&self, actor: &Actor, email: &str) -> Result<Option<ContactInfo>> {
        let email = email.to_string();
        self.admin_read(actor, "find_contact", None, email.clone(), move |db| {
            let Some(id) = db.get_id(NAMES, &contact_email_key(db, &email))? else {
                return Ok(None);
            };
            let r: ContactRec = db.need(CONTACTS, Scope::Global, &tables::ids(&[id]), "contact")?;
            Ok(Some(ContactInfo {
                id: ContactId(id),
                name: r.name,
                email: r.email,
                login: r.login,
            }))
        })
        .await
    }

    /// Lists contacts.
    pub async fn contacts(&self, actor: &Actor) -> Result<Vec<ContactInfo>> {
        self.admin_read(actor, "list_contacts", None, String::new(), |db| {
            let all: Vec<(Vec<u8>, ContactRec)> =
                db.scan(CONTACTS, Scope::Global, &[], usize::MAX)?;
            Ok(all
                .into_iter()
                .filter_map(|(k, r)| {
                    tables::id_from(&k).map(|id| ContactInfo {
                        id: ContactId(id),
                        name: r.name,
                        email: r.email,
                        login: r.login,
                    })
                })
                .collect())
        })
        .await
    }

    /// Opens a matter of a type: its folders are created from the type's template. The matter's
    /// folder in trees is named after its number and title, made safe for every OS.
    pub async fn create_matter(
        &self,
        actor: &Actor,
        number: &str,
        title: &str,
        mtype: MatterTypeId,
    ) -> Result<MatterId> {
        let number = check_text("a matter number", number, 64)?;
        let title = check_text("a matter title", title, 200)?;
        let display = names::sanitize(&format!("{number} {title}"));
        self.admin(
            actor,
            "create_matter",
            None,
            format!("matter {number}"),
            move |ctx| {
                let t = get_mtype(&ctx.db(), mtype)?;
                let nkey = name_key(&ctx.db(), name_kind::MATTER_NUMBER, &number);
                if ctx.db().get_id(NAMES, &nkey)?.is_some() {
                    return Err(Error::AlreadyExists(format!("matter number {number}")));
                }
                let dkey = matter_display_key(&ctx.db(), &display);
                if ctx.db().get_id(NAMES, &dkey)?.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "a matter named \"{display}\""
                    )));
                }
                let id = MatterId(ctx.new_id());
                ctx.sealer.create_matter_key(ctx.txn, id)?;
                ctx.put(
                    MATTERS,
                    Scope::Global,
                    &tables::ids(&[id.0]),
                    &MatterRec {
                        number: number.clone(),
                        title: title.clone(),
                        mtype,
                        closed: false,
                        created: now_millis(),
                        display: display.clone(),
                    },
                )?;
                ctx.put_id(NAMES, &nkey, id.0)?;
                ctx.put_id(NAMES, &dkey, id.0)?;
                ctx.put_raw(
                    LINKS,
                    &Key::kind(link_kind::MATTER_OF_TYPE)
                        .id(mtype.0)
                        .id(id.0)
                        .done(),
                    &[],
                )?;
                instantiate_template(ctx, id, &t.folders)?;
                Ok(id)
            },
        )
        .await
    }

    /// Finds a matter by its number.
    pub async fn find_matter(&self, actor: &Actor, number: &str) -> Result<Option<MatterId>> {
        let number = number.to_string();
        self.admin_read(actor, "find_matter", None, number.clone(), move |db| {
            Ok(db
                .get_id(NAMES, &name_key(db, name_kind::MATTER_NUMBER, &number))?
                .map(MatterId))
        })
        .await
    }

    /// Lists matters (staff: all).
    pub async fn matters(&self, actor: &Actor) -> Result<Vec<MatterInfo>> {
        self.admin_read(actor, "list_matters", None, String::new(), |db| {
            let all: Vec<(Vec<u8>, MatterRec)> =
                db.scan(MATTERS, Scope::Global, &[], usize::MAX)?;
            Ok(all
                .into_iter()
                .filter_map(|(k, r)| {
                    tables::id_from(&k).map(|id| MatterInfo {
                        id: MatterId(id),
                        number: r.number,
                        title: r.title,
                        matter_type: r.mtype,
                        closed: r.closed,
                        display: r.display,
                    })
                })
                .collect())
        })
        .await
    }

    /// Adds a contact to a matter as a participant of a type (without portal access).
    pub async fn add_participant(
        &self,
        actor: &Actor,
        matter: MatterId,
        contact: ContactId,
        ptype: ParticipantTypeId,
    ) -> Result<ParticipantId> {
        self.admin(
            actor,
            "add_participant",
            Some(matter),
            format!("contact {contact}"),
            move |ctx| {
                get_matter(&ctx.db(), matter)?;
                ctx.db().need::<ContactRec>(
                    CONTACTS,
                    Scope::Global,
                    &tables::ids(&[contact.0]),
                    "contact",
                )?;
                ctx.db().need::<ParticipantTypeRec>(
                    PTYPES,
                    Scope::Global,
                    &tables::ids(&[ptype.0]),
                    "participant type",
                )?;
                let existing = policy::participations(&ctx.db(), contact)?;
                if existing
                    .iter()
                    .any(|(m, _, r)| *m == matter && r.ptype == ptype)
                {
                    return Err(Error::AlreadyExists(format!(
                        "contact {contact} already takes part in matter {matter} as that type"
                    )));
                }
                let id = ParticipantId(ctx.new_id());
                ctx.put(
                    PARTICIPANTS,
                    Scope::Matter(matter),
                    &tables::ids(&[matter.0, id.0]),
                    &ParticipantRec {
                        contact,
                        ptype,
                        portal: false,
                    },
                )?;
                ctx.put_raw(
                    LINKS,
                    &Key::kind(link_kind::CONTACT_PARTICIPATION)
                        .id(contact.0)
                        .id(matter.0)
                        .id(id.0)
                        .done(),
                    &[],
                )?;
                Ok(id)
            },
        )
        .await
    }

    /// Lists a matter's participants.
    pub async fn participants(
        &self,
        actor: &Actor,
        matter: MatterId,
    ) -> Result<Vec<ParticipantInfo>> {
        self.admin_read(
            actor,
            "list_participants",
            Some(matter),
            String::new(),
            move |db| {
                let all: Vec<(Vec<u8>, ParticipantRec)> = db.scan(
                    PARTICIPANTS,
                    Scope::Matter(matter),
                    &tables::ids(&[matter.0]),
                    usize::MAX,
                )?;
                Ok(all
                    .into_iter()
                    .filter_map(|(k, r)| {
                        tables::id_at(&k, 8).map(|id| ParticipantInfo {
                            id: ParticipantId(id),
                            matter,
                            contact: r.contact,
                            participant_type: r.ptype,
                            portal_access: r.portal,
                        })
                    })
                    .collect())
            },
        )
        .await
    }

    /// Grants a participant portal access: they inherit the matter type's permissions for their
    /// participant type. Records an invitation and mails it through the portal's mailer:
    /// "create your login" for a contact without a login, "you now have access to this matter"
    /// for one with a login (see [`crate::portal::invitations`]). A failed delivery does not
    /// undo the grant: it is audited, logged and reported in [`GrantOutcome::mailed`].
    pub async fn grant_access(
        &self,
        actor: &Actor,
        matter: MatterId,
        participant: ParticipantId,
    ) -> Result<GrantOutcome> {
        let (token, hash) = crate::accounts::tokens::Token::generate()?;
        let ttl = self.invite_ttl();
        let mut outcome = self
            .admin(
                actor,
                "grant_access",
                Some(matter),
                format!("participant {participant}"),
                move |ctx| {
                    let m = get_matter(&ctx.db(), matter)?;
                    if m.closed {
                        return Err(Error::Conflict(format!(
                            "matter {} is closed: reopen it before granting access",
                            m.number
                        )));
                    }
                    let mut p = get_participant(&ctx.db(), matter, participant)?;
                    if p.portal {
                        return Ok(GrantOutcome {
                            granted: false,
                            invitation: None,
                            invitation_kind: None,
                            mailed: false,
                        });
                    }
                    p.portal = true;
                    ctx.put(
                        PARTICIPANTS,
                        Scope::Matter(matter),
                        &tables::ids(&[matter.0, participant.0]),
                        &p,
                    )?;
                    let c: ContactRec = ctx.db().need(
                        CONTACTS,
                        Scope::Global,
                        &tables::ids(&[p.contact.0]),
                        "contact",
                    )?;
                    let kind = if c.login.is_some() {
                        InvitationKind::NewMatter
                    } else {
                        InvitationKind::NewLogin
                    };
                    let inv = super::invitations::put_invitation(
                        ctx,
                        p.contact,
                        Some(matter),
                        kind,
                        &hash,
                        ttl,
                    )?;
                    ctx.access_changed();
                    ctx.emit(PortalEvent::AccessGranted {
                        matter,
                        participant,
                    });
                    ctx.emit(PortalEvent::InvitationCreated {
                        invitation: inv,
                        contact: p.contact,
                        matter: Some(matter),
                    });
                    Ok(GrantOutcome {
                        granted: true,
                        invitation: Some(inv),
                        invitation_kind: Some(kind),
                        mailed: false,
                    })
                },
            )
            .await?;
        if let Some(inv) = outcome.invitation {
            outcome.mailed = self.deliver_invitation(actor, inv, token).await.is_ok();
        }
        Ok(outcome)
    }

    /// Revokes a participant's portal access. Takes effect at once, on open connections too.
    pub async fn revoke_access(
        &self,
        actor: &Actor,
        matter: MatterId,
        participant: ParticipantId,
    ) -> Result<bool> {
        self.admin(
            actor,
            "revoke_access",
            Some(matter),
            format!("participant {participant}"),
            move |ctx| {
                let mut p = get_participant(&ctx.db(), matter, participant)?;
                if !p.portal {
                    return Ok(false);
                }
                p.portal = false;
                ctx.put(
                    PARTICIPANTS,
                    Scope::Matter(matter),
                    &tables::ids(&[matter.0, participant.0]),
                    &p,
                )?;
                ctx.access_changed();
                ctx.emit(PortalEvent::AccessRevoked {
                    matter,
                    participant,
                });
                Ok(true)
            },
        )
        .await
    }

    /// Closes a matter. Refused while any participant still has portal access; the error names them.
    pub async fn close_matter(&self, actor: &Actor, matter: MatterId) -> Result<()> {
        self.admin(actor, "close_matter", Some(matter), format!("matter {matter}"), move |ctx| {
            let mut m = get_matter(&ctx.db(), matter)?;
            let parts: Vec<(Vec<u8>, ParticipantRec)> = ctx.db().scan(
                PARTICIPANTS,
                Scope::Matter(matter),
                &tables::ids(&[matter.0]),
                usize::MAX,
            )?;
            let mut holders = Vec::new();
            for (_, p) in parts.iter().filter(|(_, p)| p.portal) {
                let c: Option<ContactRec> =
                    ctx.db().get(CONTACTS, Scope::Global, &tables::ids(&[p.contact.0]))?;
                holders.push(match c {
                    Some(c) => format!("{} <{}>", c.name, c.email),
                    None => format!("contact {}", p.contact),
                });
            }
            if !holders.is_empty() {
                return Err(Error::Conflict(format!(
                    "matter {} can't be closed while these participants have portal access: {}; revoke their access first",
                    m.number,
                    holders.join(", ")
                )));
            }
            m.closed = true;
            ctx.put(MATTERS, Scope::Global, &tables::ids(&[matter.0]), &m)?;
            ctx.access_changed();
            Ok(())
        })
        .await
    }

    /// Reopens a closed matter.
    pub async fn reopen_matter(&self, actor: &Actor, matter: MatterId) -> Result<()> {
        self.admin(
            actor,
            "reopen_matter",
            Some(matter),
            format!("matter {matter}"),
            move |ctx| {
                let mut m = get_matter(&ctx.db(), matter)?;
                m.closed = false;
                ctx.put(MATTERS, Scope::Global, &tables::ids(&[matter.0]), &m)?;
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }

    /// Disables or re-enables a login. A disabled login's live sessions stop working on their next
    /// request.
    pub async fn set_login_disabled(
        &self,
        actor: &Actor,
        login: LoginId,
        disabled: bool,
    ) -> Result<()> {
        self.admin(
            actor,
            "set_login_disabled",
            None,
            format!("login {login}"),
            move |ctx| {
                let mut r: LoginRec =
                    ctx.db()
                        .need(LOGINS, Scope::Global, &tables::ids(&[login.0]), "login")?;
                r.disabled = disabled;
                r.credential_gen += 1;
                ctx.put(LOGINS, Scope::Global, &tables::ids(&[login.0]), &r)?;
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }

    /// Checks the audit trail's hash chain (staff only).
    pub async fn audit_verify(&self, actor: &Actor) -> Result<crate::audit::VerifyReport> {
        // Entries of reads still queued (batched durability) are part of the trail already.
        self.inner.store.settle().await?;
        self.admin_read(actor, "audit_verify", None, String::new(), |db| {
            crate::audit::verify(db)
        })
        .await
    }

    /// Recent audit entries, newest first (staff only).
    pub async fn audit_query(
        &self,
        actor: &Actor,
        filter: crate::audit::AuditFilter,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        let matter = filter.matter;
        // Entries of reads still queued (batched durability) are part of the trail already.
        self.inner.store.settle().await?;
        self.admin_read(actor, "audit_query", matter, String::new(), move |db| {
            crate::audit::query(db, &filter)
        })
        .await
    }
}

// ---- Updates used by declarative set-up (`crate::provision`) and the admin CLI. ----

impl Portal {
    /// Changes a matter's title. Its folder name in trees (number and title) changes with it; the
    /// new name must not collide with another matter's.
    pub async fn set_matter_title(
        &self,
        actor: &Actor,
        matter: MatterId,
        title: &str,
    ) -> Result<()> {
        let title = check_text("a matter title", title, 200)?;
        self.admin(
            actor,
            "set_matter_title",
            Some(matter),
            format!("matter {matter}"),
            move |ctx| {
                let mut m = get_matter(&ctx.db(), matter)?;
                let display = names::sanitize(&format!("{} {title}", m.number));
                let new_key = matter_display_key(&ctx.db(), &display);
                let old_key = matter_display_key(&ctx.db(), &m.display);
                if new_key != old_key {
                    if ctx.db().get_id(NAMES, &new_key)?.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "a matter named \"{display}\""
                        )));
                    }
                    ctx.del(NAMES, &old_key)?;
                    ctx.put_id(NAMES, &new_key, matter.0)?;
                }
                m.title = title.clone();
                m.display = display;
                ctx.put(MATTERS, Scope::Global, &tables::ids(&[matter.0]), &m)?;
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }

    /// Changes a contact's display name (the email, its identity, stays).
    pub async fn set_contact_name(
        &self,
        actor: &Actor,
        contact: ContactId,
        name: &str,
    ) -> Result<()> {
        let name = check_text("a contact name", name, 200)?;
        self.admin(
            actor,
            "set_contact_name",
            None,
            format!("contact {contact}"),
            move |ctx| {
                let key = tables::ids(&[contact.0]);
                let mut c: ContactRec = ctx.db().need(CONTACTS, Scope::Global, &key, "contact")?;
                c.name = name.clone();
                ctx.put(CONTACTS, Scope::Global, &key, &c)
            },
        )
        .await
    }

    /// Changes a login's display name.
    pub async fn set_login_name(&self, actor: &Actor, login: LoginId, name: &str) -> Result<()> {
        let name = check_text("a name", name, 200)?;
        self.admin(
            actor,
            "set_login_name",
            None,
            format!("login {login}"),
            move |ctx| {
                let key = tables::ids(&[login.0]);
                let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
                r.name = name.clone();
                ctx.put(LOGINS, Scope::Global, &key, &r)
            },
        )
        .await
    }

    /// A login's SSH public keys (`type base64`, as stored).
    pub async fn login_ssh_keys(&self, actor: &Actor, login: LoginId) -> Result<Vec<String>> {
        self.admin_read(
            actor,
            "get_ssh_keys",
            None,
            format!("login {login}"),
            move |db| {
                let r: LoginRec =
                    db.need(LOGINS, Scope::Global, &tables::ids(&[login.0]), "login")?;
                Ok(r.ssh_keys)
            },
        )
        .await
    }

    /// Replaces a login's SSH public keys (OpenSSH one-line format; at most 64). Live sessions
    /// authenticated with a removed key stop working on their next request.
    pub async fn set_ssh_keys(&self, actor: &Actor, login: LoginId, keys: &[String]) -> Result<()> {
        let mut wanted = Vec::with_capacity(keys.len());
        for k in keys {
            let k = crate::portal::normalize_ssh_key(k)?;
            if !wanted.contains(&k) {
                wanted.push(k);
            }
        }
        if wanted.len() > 64 {
            return Err(Error::TooLarge("a login holds at most 64 SSH keys".into()));
        }
        self.admin(
            actor,
            "set_ssh_keys",
            None,
            format!("login {login}"),
            move |ctx| {
                let key = tables::ids(&[login.0]);
                let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
                if r.ssh_keys != wanted {
                    r.ssh_keys = wanted.clone();
                    r.credential_gen += 1;
                    ctx.put(LOGINS, Scope::Global, &key, &r)?;
                    ctx.access_changed();
                }
                Ok(())
            },
        )
        .await
    }

    /// Whether `password` is a login's current password. A staff check for declarative set-up,
    /// not an authentication: it does not count towards lockout and is audited as an admin read.
    pub async fn login_password_matches(
        &self,
        actor: &Actor,
        login: LoginId,
        password: &str,
    ) -> Result<bool> {
        let hash = self
            .admin_read(
                actor,
                "check_password",
                None,
                format!("login {login}"),
                move |db| {
                    let r: LoginRec =
                        db.need(LOGINS, Scope::Global, &tables::ids(&[login.0]), "login")?;
                    Ok(r.password_hash)
                },
            )
            .await?;
        let Some(hash) = hash else {
            return Ok(false);
        };
        // The same hashing slots and pooled memory as a login.
        Ok(crate::accounts::verify_async(password.to_owned(), Some(hash)).await?)
    }

    /// Whether a login's stored password hash is exactly `phc`.
    pub async fn login_password_hash_is(
        &self,
        actor: &Actor,
        login: LoginId,
        phc: &str,
    ) -> Result<bool> {
        let phc = phc.trim().to_string();
        self.admin_read(
            actor,
            "check_password",
            None,
            format!("login {login}"),
            move |db| {
                let r: LoginRec =
                    db.need(LOGINS, Scope::Global, &tables::ids(&[login.0]), "login")?;
                Ok(r.password_hash.as_deref() == Some(phc.as_str()))
            },
        )
        .await
    }

    /// Sets a login's password from an Argon2id PHC string (`$argon2id$v=19$m=…`) made elsewhere,
    /// e.g. by a declarative config file that must not hold the password itself.
    pub async fn set_password_hash(&self, actor: &Actor, login: LoginId, phc: &str) -> Result<()> {
        let phc = phc.trim().to_string();
        let ok = argon2::password_hash::phc::PasswordHash::new(&phc)
            .is_ok_and(|h| h.algorithm.as_str() == "argon2id");
        if !ok {
            return Err(Error::Invalid(
                "a password hash must be an Argon2id PHC string (\"$argon2id$v=19$m=…\")".into(),
            ));
        }
        self.admin(
            actor,
            "set_password_hash",
            None,
            format!("login {login}"),
            move |ctx| {
                let key = tables::ids(&[login.0]);
                let mut r: LoginRec = ctx.db().need(LOGINS, Scope::Global, &key, "login")?;
                r.password_hash = Some(phc.clone());
                r.credential_gen += 1;
                ctx.put(LOGINS, Scope::Global, &key, &r)?;
                ctx.access_changed();
                Ok(())
            },
        )
        .await
    }
}

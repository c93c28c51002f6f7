//! Comparing a [`PortalFile`] with the portal and applying the difference through the admin API.

use super::file::{Credentials, PortalFile, fold, fold_email};
use super::{ApplyError, Change, Op};
use crate::model::*;
use crate::portal::{ContactInfo, LoginInfo, MatterInfo};
use crate::{Error, Portal};
use std::collections::{BTreeMap, HashMap};

type Res<T> = std::result::Result<T, ApplyError>;

/// Canonical template as the portal stores it (parents implied), folded for comparison.
fn folded_template(folders: &[String]) -> crate::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in folders {
        let c = crate::portal::canonical_folder_path(f)?;
        let segs: Vec<&str> = c.split('/').collect();
        for i in 1..=segs.len() {
            let p = crate::policy::fold_path(&segs[..i].join("/"));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

fn folded_folder(f: &str) -> crate::Result<String> {
    Ok(crate::policy::fold_path(
        &crate::portal::canonical_folder_path(f)?,
    ))
}

fn perms_text(p: Permissions) -> String {
    if p == Permissions::FULL {
        return "full".into();
    }
    let v: Vec<&str> = p.iter().map(|x| x.as_str()).collect();
    v.join(", ")
}

/// The normalised form of a key list, for an order-insensitive comparison.
fn key_set(keys: &[String]) -> crate::Result<Vec<String>> {
    let mut v = Vec::with_capacity(keys.len());
    for k in keys {
        let n = crate::portal::normalize_ssh_key(k)?;
        if !v.contains(&n) {
            v.push(n);
        }
    }
    v.sort();
    Ok(v)
}

struct Applier<'a> {
    portal: &'a Portal,
    actor: &'a Actor,
    dry_run: bool,
    changes: Vec<Change>,
}

impl Applier<'_> {
    fn note(&mut self, op: Op, what: String) {
        tracing::info!(change = %what, dry_run = self.dry_run, "apply");
        self.changes.push(Change { op, what });
    }

    /// Brings an existing login's credentials in line with the file. `None` fields are left alone.
    async fn credentials(
        &mut self,
        line: usize,
        login: &LoginInfo,
        creds: &Credentials,
    ) -> Res<()> {
        let (p, a) = (self.portal, self.actor);
        let email = &login.email;
        if let Some(pw) = &creds.password {
            let same = p
                .login_password_matches(a, login.id, pw)
                .await
                .map_err(at(line))?;
            if !same {
                self.note(Op::Update, format!("login {email}: password set"));
                if !self.dry_run {
                    p.set_password(a, login.id, pw).await.map_err(at(line))?;
                }
            }
        }
        if let Some(h) = &creds.password_hash {
            let same = p
                .login_password_hash_is(a, login.id, h)
                .await
                .map_err(at(line))?;
            if !same {
                self.note(Op::Update, format!("login {email}: password hash set"));
                if !self.dry_run {
                    p.set_password_hash(a, login.id, h)
                        .await
                        .map_err(at(line))?;
                }
            }
        }
        if let Some(keys) = &creds.ssh_keys {
            let want = key_set(keys).map_err(at(line))?;
            let have = key_set(&p.login_ssh_keys(a, login.id).await.map_err(at(line))?)
                .map_err(at(line))?;
            if want != have {
                let added = want.iter().filter(|k| !have.contains(k)).count();
                let removed = have.iter().filter(|k| !want.contains(k)).count();
                self.note(
                    Op::Update,
                    format!("login {email}: SSH keys ({added} added, {removed} removed)"),
                );
                if !self.dry_run {
                    p.set_ssh_keys(a, login.id, keys).await.map_err(at(line))?;
                }
            }
        }
        Ok(())
    }

    /// Sets the credentials of a login created just now (it has the password already).
    async fn new_login_credentials(
        &mut self,
        line: usize,
        login: Option<LoginId>,
        creds: &Credentials,
    ) -> Res<()> {
        let (p, a) = (self.portal, self.actor);
        let Some(id) = login else { return Ok(()) };
        if let Some(h) = &creds.password_hash {
            p.set_password_hash(a, id, h).await.map_err(at(line))?;
        }
        if let Some(keys) = &creds.ssh_keys
            && !keys.is_empty()
        {
            p.set_ssh_keys(a, id, keys).await.map_err(at(line))?;
        }
        Ok(())
    }
}

/// Wraps a portal error with the line of the file entry it concerns.
fn at(line: usize) -> impl Fn(Error) -> ApplyError {
    move |e| ApplyError::Entry {
        line,
        message: e.to_string(),
    }
}

fn conflict(line: usize, message: String) -> ApplyError {
    ApplyError::Entry { line, message }
}

pub(super) async fn run(
    portal: &Portal,
    actor: &Actor,
    file: &PortalFile,
    dry_run: bool,
) -> (Vec<Change>, Option<ApplyError>) {
    let mut ap = Applier {
        portal,
        actor,
        dry_run,
        changes: Vec::new(),
    };
    let res = run_inner(&mut ap, file).await;
    (ap.changes, res.err())
}

async fn run_inner(ap: &mut Applier<'_>, file: &PortalFile) -> Res<()> {
    let (p, a) = (ap.portal, ap.actor);
    let dry = ap.dry_run;

    // What the portal holds now.
    let ptype_list = p.participant_types(a).await?;
    let mut ptype_name: HashMap<ParticipantTypeId, String> =
        ptype_list.iter().map(|t| (t.id, t.name.clone())).collect();
    let mut ptypes: HashMap<String, Option<ParticipantTypeId>> = ptype_list
        .iter()
        .map(|t| (fold(&t.name), Some(t.id)))
        .collect();
    let mtype_list = p.matter_types(a).await?;
    let logins: HashMap<String, LoginInfo> = p
        .logins(a)
        .await?
        .into_iter()
        .map(|l| (fold_email(&l.email), l))
        .collect();
    let contact_list: HashMap<String, ContactInfo> = p
        .contacts(a)
        .await?
        .into_iter()
        .map(|c| (fold_email(&c.email), c))
        .collect();
    let matter_list: HashMap<String, MatterInfo> = p
        .matters(a)
        .await?
        .into_iter()
        .map(|m| (fold(&m.number), m))
        .collect();

    // 1. Participant types (never removed: other matters may use them).
    for t in &file.participant_types {
        let k = fold(&t.name);
        if ptypes.contains_key(&k) {
            continue;
        }
        ap.note(Op::Add, format!("participant type \"{}\"", t.name));
        let id = if dry {
            None
        } else {
            let id = p
                .create_participant_type(a, &t.name)
                .await
                .map_err(at(t.line))?;
            ptype_name.insert(id, t.name.clone());
            Some(id)
        };
        ptypes.insert(k, id);
    }

    // 2. Matter types: the template and the permission matrix are exactly the file's.
    let mut mtypes: HashMap<String, Option<MatterTypeId>> = HashMap::new();
    for mt in &file.matter_types {
        let line = mt.line;
        let want = folded_template(&mt.folders).map_err(at(line))?;
        let existing = mtype_list.iter().find(|x| fold(&x.name) == fold(&mt.name));
        let folder_refs: Vec<&str> = mt.folders.iter().map(String::as_str).collect();
        let (id, mut current): (
            Option<MatterTypeId>,
            Vec<(String, ParticipantTypeId, Permissions)>,
        ) = match existing {
            None => {
                ap.note(
                    Op::Add,
                    format!("matter type \"{}\" ({} folders)", mt.name, want.len()),
                );
                let id = if dry {
                    None
                } else {
                    Some(
                        p.create_matter_type(a, &mt.name, &folder_refs)
                            .await
                            .map_err(at(line))?,
                    )
                };
                (id, Vec::new())
            }
            Some(info) => {
                let have = folded_template(&info.folders).map_err(at(line))?;
                let mut portal = info.portal.clone();
                if have != want {
                    let added: Vec<&String> = mt
                        .folders
                        .iter()
                        .filter(|f| folded_folder(f).is_ok_and(|ff| !have.contains(&ff)))
                        .collect();
                    let dropped: Vec<&String> = info
                        .folders
                        .iter()
                        .filter(|f| folded_folder(f).is_ok_and(|ff| !want.contains(&ff)))
                        .collect();
                    let mut what = format!("matter type \"{}\": folders", info.name);
                    if !added.is_empty() {
                        what.push_str(&format!(
                            " added {}",
                            added
                                .iter()
                                .map(|s| format!("\"{s}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if !dropped.is_empty() {
                        what.push_str(&format!(
                            " dropped from the template {}",
                            dropped
                                .iter()
                                .map(|s| format!("\"{s}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if added.is_empty() && dropped.is_empty() {
                        what.push_str(" reordered");
                    }
                    ap.note(Op::Update, what);
                    if !dry {
                        p.set_matter_type_folders(a, info.id, &folder_refs)
                            .await
                            .map_err(at(line))?;
                    }
                    // Rules of dropped folders go with them.
                    portal.retain(|(f, _, _)| folded_folder(f).is_ok_and(|ff| want.contains(&ff)));
                }
                (Some(info.id), portal)
            }
        };
        mtypes.insert(fold(&mt.name), id);

        // Desired matrix, keyed by (folded folder, folded participant type).
        let mut desired: BTreeMap<(String, String), (&str, &str, Permissions, usize)> =
            BTreeMap::new();
        for r in &mt.portal {
            let key = (
                folded_folder(&r.folder).map_err(at(r.line))?,
                fold(&r.participant_type),
            );
            // An empty list means "nothing": the same as leaving the cell out.
            if !r.perms.is_empty() {
                desired.insert(key, (&r.folder, &r.participant_type, r.perms, r.line));
            }
        }
        for ((ff, pf), (folder, pt, perms, rline)) in &desired {
            let pid = ptypes.get(pf).copied().flatten();
            let cur = current.iter().position(|(f, id, _)| {
                Some(*id) == pid && folded_folder(f).is_ok_and(|x| &x == ff)
            });
            let cur_perms = cur.and_then(|i| current.get(i)).map(|(_, _, p)| *p);
            if let Some(i) = cur {
                current.remove(i);
            }
            if cur_perms == Some(*perms) {
                continue;
            }
            let what = match cur_perms {
                None => format!(
                    "matter type \"{}\": \"{folder}\" for {pt}: {}",
                    mt.name,
                    perms_text(*perms)
                ),
                Some(old) => format!(
                    "matter type \"{}\": \"{folder}\" for {pt}: {} (was {})",
                    mt.name,
                    perms_text(*perms),
                    perms_text(old)
                ),
            };
            ap.note(
                if cur_perms.is_some() {
                    Op::Update
                } else {
                    Op::Add
                },
                what,
            );
            if let (false, Some(id), Some(pid)) = (dry, id, pid) {
                p.set_portal_permissions(a, id, folder, pid, *perms)
                    .await
                    .map_err(at(*rline))?;
            }
        }
        // Cells the file no longer has.
        for (folder, pid, old) in current {
            let pt = ptype_name
                .get(&pid)
                .cloned()
                .unwrap_or_else(|| format!("participant type {pid}"));
            ap.note(
                Op::Remove,
                format!(
                    "matter type \"{}\": \"{folder}\" for {pt} (was {})",
                    mt.name,
                    perms_text(old)
                ),
            );
            if let (false, Some(id)) = (dry, id) {
                p.set_portal_permissions(a, id, &folder, pid, Permissions::NONE)
                    .await
                    .map_err(at(line))?;
            }
        }
    }
    for x in &mtype_list {
        mtypes.entry(fold(&x.name)).or_insert(Some(x.id));
    }

    // 3. Staff logins.
    for s in &file.staff {
        let line = s.line;
        match logins.get(&fold_email(&s.email)) {
            None => {
                ap.note(Op::Add, format!("staff login {} ({})", s.email, s.name));
                if !dry {
                    let id = p
                        .create_staff_login(a, &s.email, &s.name, s.credentials.password.as_deref())
                        .await
                        .map_err(at(line))?;
                    ap.new_login_credentials(line, Some(id), &s.credentials)
                        .await?;
                }
            }
            Some(l) => {
                if !l.staff {
                    return Err(conflict(
                        line,
                        format!(
                            "{} is a portal login in the portal; a staff login needs another email",
                            s.email
                        ),
                    ));
                }
                if l.name.trim() != s.name.trim() {
                    ap.note(
                        Op::Update,
                        format!(
                            "staff login {}: name \"{}\" (was \"{}\")",
                            s.email, s.name, l.name
                        ),
                    );
                    if !dry {
                        p.set_login_name(a, l.id, &s.name).await.map_err(at(line))?;
                    }
                }
                ap.credentials(line, l, &s.credentials).await?;
            }
        }
    }

    // 4. Contacts and their portal logins.
    let mut contacts: HashMap<String, (Option<ContactId>, String)> = HashMap::new();
    for c in &file.contacts {
        let line = c.line;
        let existing = contact_list.get(&fold_email(&c.email));
        let id = match existing {
            None => {
                ap.note(Op::Add, format!("contact {} <{}>", c.name, c.email));
                if dry {
                    None
                } else {
                    Some(
                        p.create_contact(a, &c.name, &c.email)
                            .await
                            .map_err(at(line))?,
                    )
                }
            }
            Some(info) => {
                if info.name.trim() != c.name.trim() {
                    ap.note(
                        Op::Update,
                        format!(
                            "contact <{}>: name \"{}\" (was \"{}\")",
                            c.email, c.name, info.name
                        ),
                    );
                    if !dry {
                        p.set_contact_name(a, info.id, &c.name)
                            .await
                            .map_err(at(line))?;
                    }
                }
                Some(info.id)
            }
        };
        contacts.insert(c.key.clone(), (id, c.email.clone()));
        let Some(creds) = &c.login else { continue };
        match logins.get(&fold_email(&c.email)) {
            Some(l) if l.staff => {
                return Err(conflict(
                    line,
                    format!(
                        "{} is a staff login; a contact's portal login needs another email",
                        c.email
                    ),
                ));
            }
            Some(l) => ap.credentials(line, l, creds).await?,
            None => {
                ap.note(Op::Add, format!("portal login {}", c.email));
                if let (false, Some(cid)) = (dry, id) {
                    let lid = p
                        .create_portal_login(a, cid, creds.password.as_deref())
                        .await
                        .map_err(at(line))?;
                    ap.new_login_credentials(line, Some(lid), creds).await?;
                }
            }
        }
    }

    // 5. Matters, participants and portal access.
    for m in &file.matters {
        let line = m.line;
        let mt = mtypes.get(&fold(&m.matter_type)).copied().flatten();
        let existing = matter_list.get(&fold(&m.number));
        let id = match existing {
            None => {
                ap.note(
                    Op::Add,
                    format!("matter {} \"{}\" ({})", m.number, m.title, m.matter_type),
                );
                match (dry, mt) {
                    (false, Some(mt)) => Some(
                        p.create_matter(a, &m.number, &m.title, mt)
                            .await
                            .map_err(at(line))?,
                    ),
                    _ => None,
                }
            }
            Some(info) => {
                if Some(info.matter_type) != mt {
                    return Err(conflict(
                        line,
                        format!(
                            "matter {} has another matter type in the portal; changing a matter's type is not supported",
                            m.number
                        ),
                    ));
                }
                if info.title.trim() != m.title.trim() {
                    ap.note(
                        Op::Update,
                        format!(
                            "matter {}: title \"{}\" (was \"{}\")",
                            m.number, m.title, info.title
                        ),
                    );
                    if !dry {
                        p.set_matter_title(a, info.id, &m.title)
                            .await
                            .map_err(at(line))?;
                    }
                }
                if info.closed && !m.closed {
                    ap.note(Op::Update, format!("matter {}: reopened", m.number));
                    if !dry {
                        p.reopen_matter(a, info.id).await.map_err(at(line))?;
                    }
                }
                Some(info.id)
            }
        };
        let mut current = match id {
            Some(id) if existing.is_some() => p.participants(a, id).await.map_err(at(line))?,
            _ => Vec::new(),
        };
        for part in &m.participants {
            let pl = part.line;
            let (cid, email) = contacts
                .get(&part.contact)
                .cloned()
                .ok_or_else(|| conflict(pl, format!("unknown contact \"{}\"", part.contact)))?;
            let pid = ptypes.get(&fold(&part.participant_type)).copied().flatten();
            let who = format!("{} ({}) in {}", email, part.participant_type, m.number);
            let found = current
                .iter()
                .position(|x| Some(x.contact) == cid && Some(x.participant_type) == pid);
            let (part_id, has_access) = match found {
                Some(i) => {
                    let x = current.remove(i);
                    (Some(x.id), x.portal_access)
                }
                None => {
                    ap.note(Op::Add, format!("participant {who}"));
                    match (dry, id, cid, pid) {
                        (false, Some(mid), Some(cid), Some(pid)) => (
                            Some(p.add_participant(a, mid, cid, pid).await.map_err(at(pl))?),
                            false,
                        ),
                        _ => (None, false),
                    }
                }
            };
            if part.portal && !has_access {
                let has_login = logins.contains_key(&fold_email(&email))
                    || file
                        .contacts
                        .iter()
                        .any(|c| c.key == part.contact && c.login.is_some());
                let note = if has_login {
                    ""
                } else {
                    " (invitation to create a login)"
                };
                ap.note(Op::Add, format!("portal access for {who}{note}"));
                if let (false, Some(mid), Some(part_id)) = (dry, id, part_id) {
                    p.grant_access(a, mid, part_id).await.map_err(at(pl))?;
                }
            } else if !part.portal && has_access {
                ap.note(Op::Remove, format!("portal access for {who}"));
                if let (false, Some(mid), Some(part_id)) = (dry, id, part_id) {
                    p.revoke_access(a, mid, part_id).await.map_err(at(pl))?;
                }
            }
        }
        // Participants the file does not list keep their record but lose portal access.
        if let Some(mid) = id {
            for x in current.into_iter().filter(|x| x.portal_access) {
                let email = contact_list
                    .values()
                    .find(|c| c.id == x.contact)
                    .map(|c| c.email.clone())
                    .unwrap_or_else(|| format!("contact {}", x.contact));
                let pt = ptype_name
                    .get(&x.participant_type)
                    .cloned()
                    .unwrap_or_else(|| format!("type {}", x.participant_type));
                ap.note(
                    Op::Remove,
                    format!(
                        "portal access for {email} ({pt}) in {}: not in the file",
                        m.number
                    ),
                );
                if !dry {
                    p.revoke_access(a, mid, x.id).await.map_err(at(line))?;
                }
            }
        }
        let closed_now = existing.is_some_and(|i| i.closed);
        if m.closed && !closed_now {
            ap.note(Op::Update, format!("matter {}: closed", m.number));
            if let (false, Some(mid)) = (dry, id) {
                p.close_matter(a, mid).await.map_err(at(line))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Portal;
    use crate::model::Actor;
    use crate::provision::{ApplyReport, PortalFile, apply};

    const BASE: &str = r#"
[firm]
name = "Demo & Co"
participant_types = ["Client", "Other Side"]

[[matter_types]]
name = "General"
folders = ["Client Documents", "Client Documents/Tax Returns", "Correspondence", "Internal"]
[matter_types.portal."Client Documents"]
Client = ["list", "read", "create"]
"Other Side" = ["list", "read"]
[matter_types.portal."Client Documents/Tax Returns"]
Client = ["full"]

[[staff]]
email = "sam@demo.test"
name = "Sam Staff"
password = "a long staff passphrase"

[[contacts]]
key = "alice"
name = "Alice Client"
email = "alice@client.test"
login = { password = "a long client passphrase" }

[[contacts]]
key = "olga"
name = "Olga Other"
email = "olga@other.test"

[[matters]]
number = "2026-001"
title = "Smith v Jones"
matter_type = "General"
participants = [
  { contact = "alice", type = "Client", portal = true },
  { contact = "olga", type = "Other Side", portal = true },
]
"#;

    async fn run(portal: &Portal, text: &str, dry: bool) -> ApplyReport {
        let f = PortalFile::parse(text).unwrap();
        apply(portal, &Actor::system(), &f, dry).await.unwrap()
    }

    fn lines(r: &ApplyReport) -> Vec<String> {
        r.changes.iter().map(|c| c.to_string()).collect()
    }

    async fn client_sees(portal: &Portal, email: &str, pw: &str) -> Vec<String> {
        let who = portal.authenticate_password(email, pw).await.unwrap();
        let tree = portal.tree(Actor::api(who));
        let mut out = Vec::new();
        for m in tree.list("/").await.unwrap() {
            for f in tree.list(&format!("/{}", m.name)).await.unwrap() {
                out.push(format!("{}/{} [{}]", m.name, f.name, f.perms));
            }
        }
        out
    }

    #[tokio::test]
    async fn second_apply_changes_nothing() {
        let portal = Portal::in_memory().await.unwrap();
        let first = run(&portal, BASE, false).await;
        let l = lines(&first);
        for want in [
            "+ participant type \"Client\"",
            "+ matter type \"General\" (4 folders)",
            "+ staff login sam@demo.test (Sam Staff)",
            "+ portal login alice@client.test",
            "+ matter 2026-001 \"Smith v Jones\" (General)",
            "+ portal access for alice@client.test (Client) in 2026-001",
            "+ portal access for olga@other.test (Other Side) in 2026-001 (invitation to create a login)",
        ] {
            assert!(l.iter().any(|x| x == want), "missing {want:?} in {l:#?}");
        }
        assert_eq!(l.len(), 15, "{l:#?}");
        let again = run(&portal, BASE, false).await;
        assert!(again.is_noop(), "{:#?}", lines(&again));
        // What the client sees follows the file.
        let seen = client_sees(&portal, "alice@client.test", "a long client passphrase").await;
        assert_eq!(
            seen,
            ["2026-001 Smith v Jones/Client Documents [List+Read+Create]"],
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_changed_file_applies_exactly_the_difference() {
        let portal = Portal::in_memory().await.unwrap();
        run(&portal, BASE, false).await;
        let changed = BASE
            .replace(
                "Client = [\"list\", \"read\", \"create\"]\n\"Other Side\" = [\"list\", \"read\"]",
                "Client = [\"list\", \"read\", \"create\", \"update\"]",
            )
            .replace("title = \"Smith v Jones\"", "title = \"Smith v Jones Ltd\"")
            .replace("a long client passphrase", "another client passphrase")
            .replace(
                "{ contact = \"olga\", type = \"Other Side\", portal = true },",
                "",
            );
        // The dry run reports the same changes and changes nothing.
        let dry = run(&portal, &changed, true).await;
        let real = run(&portal, &changed, false).await;
        assert_eq!(lines(&dry), lines(&real));
        let mut l = lines(&real);
        l.sort();
        assert_eq!(
            l,
            [
                "- matter type \"General\": \"Client Documents\" for Other Side (was list, read)",
                "- portal access for olga@other.test (Other Side) in 2026-001: not in the file",
                "~ login alice@client.test: password set",
                "~ matter 2026-001: title \"Smith v Jones Ltd\" (was \"Smith v Jones\")",
                "~ matter type \"General\": \"Client Documents\" for Client: list, read, create, update (was list, read, create)",
            ]
        );
        assert!(run(&portal, &changed, false).await.is_noop());
        assert!(
            portal
                .authenticate_password("alice@client.test", "a long client passphrase")
                .await
                .is_err()
        );
        let seen = client_sees(&portal, "alice@client.test", "another client passphrase").await;
        assert_eq!(
            seen,
            ["2026-001 Smith v Jones Ltd/Client Documents [List+Read+Create+Update]"]
        );
    }

    #[tokio::test]
    async fn dry_run_changes_nothing() {
        let portal = Portal::in_memory().await.unwrap();
        let dry = run(&portal, BASE, true).await;
        assert!(dry.dry_run);
        assert_eq!(dry.changes.len(), 15);
        let sys = Actor::system();
        assert!(portal.matters(&sys).await.unwrap().is_empty());
        assert!(portal.logins(&sys).await.unwrap().is_empty());
        assert_eq!(run(&portal, BASE, false).await.changes, dry.changes);
    }

    #[tokio::test]
    async fn closing_revokes_first_and_keys_are_managed() {
        let portal = Portal::in_memory().await.unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwMN0yW1OSvDfwTvPWQgaUI0bRqshG0eF+VEJJ0XQHm alice@laptop";
        let with_key = BASE.replace(
            "login = { password = \"a long client passphrase\" }",
            &format!(
                "login = {{ password = \"a long client passphrase\", ssh_keys = [\"{key}\"] }}"
            ),
        );
        run(&portal, &with_key, false).await;
        let sys = Actor::system();
        let alice = portal
            .find_login(&sys, "alice@client.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.ssh_keys, 1);
        let closed = with_key
            .replace(&format!("ssh_keys = [\"{key}\"]"), "ssh_keys = []")
            .replace("portal = true", "portal = false")
            .replace(
                "title = \"Smith v Jones\"",
                "title = \"Smith v Jones\"\nclosed = true",
            );
        let r = run(&portal, &closed, false).await;
        let l = lines(&r);
        assert_eq!(
            l.last().map(String::as_str),
            Some("~ matter 2026-001: closed"),
            "{l:#?}"
        );
        assert!(
            l.contains(&"~ login alice@client.test: SSH keys (0 added, 1 removed)".to_string())
        );
        let m = portal.matters(&sys).await.unwrap();
        assert!(m[0].closed);
        assert!(run(&portal, &closed, false).await.is_noop());
        // Reopening and granting again.
        let r = run(&portal, BASE, false).await;
        let l = lines(&r);
        assert_eq!(
            l.first().map(String::as_str),
            Some("~ matter 2026-001: reopened"),
            "{l:#?}"
        );
        assert!(!portal.matters(&sys).await.unwrap()[0].closed);
    }

    #[tokio::test]
    async fn conflicts_stop_with_the_line_and_what_was_done() {
        let portal = Portal::in_memory().await.unwrap();
        run(&portal, BASE, false).await;
        let other = BASE.replace(
            "[[staff]]",
            "[[matter_types]]\nname = \"Estates\"\nfolders = [\"Wills\"]\n\n[[staff]]",
        );
        let other = other.replacen("matter_type = \"General\"", "matter_type = \"Estates\"", 1);
        let f = PortalFile::parse(&other).unwrap();
        let e = apply(&portal, &Actor::system(), &f, false)
            .await
            .unwrap_err();
        assert_eq!(e.error.line(), Some(f.matters[0].line), "{e}");
        assert!(e.to_string().contains("matter type"), "{e}");
        assert_eq!(e.done.len(), 1, "{:?}", e.done);
        // A staff email used by a contact's login.
        let clash = BASE.replace("email = \"sam@demo.test\"", "email = \"alice@client.test\"");
        let f = PortalFile::parse(&clash);
        assert!(
            f.is_err(),
            "the same email twice in one file is refused at parse time"
        );
    }
}

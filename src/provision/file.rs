//! The portal file: parsing and checking, before anything touches the portal.
//!
//! Every error carries the line it is about, so the admin sees `portal.toml line 12: …`.

use crate::model::Permissions;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use toml::Spanned;

/// Largest portal file accepted (a firm's whole set-up is a few hundred KiB at most).
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// A problem with the portal file, with the line it is about (1-based) when known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct FileError {
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// The parsed and checked portal file. Names are as written (the portal canonicalises them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortalFile {
    /// The firm's name, if given (`[firm] name`).
    pub firm_name: Option<String>,
    /// Participant types, in file order.
    pub participant_types: Vec<Named>,
    /// Matter types, in file order.
    pub matter_types: Vec<MatterTypeSpec>,
    /// Staff logins.
    pub staff: Vec<StaffSpec>,
    /// Contacts (with optional portal logins).
    pub contacts: Vec<ContactSpec>,
    /// Matters with their participants.
    pub matters: Vec<MatterSpec>,
}

/// A name and the line it was written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The name.
    pub name: String,
    /// Its line.
    pub line: usize,
}

/// One `[[matter_types]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct MatterTypeSpec {
    /// Name.
    pub name: String,
    /// Line of the name.
    pub line: usize,
    /// Template folders as written (parents are implied).
    pub folders: Vec<String>,
    /// Portal configuration: (folder, participant type, permissions, line).
    pub portal: Vec<PortalRuleSpec>,
}

/// One cell of a matter type's permission matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalRuleSpec {
    /// Template folder.
    pub folder: String,
    /// Participant type name.
    pub participant_type: String,
    /// What that participant type may do there.
    pub perms: Permissions,
    /// Line of the entry.
    pub line: usize,
}

/// Credentials the file manages for a login. `None` fields are left as they are in the portal.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A password in clear (hashed before it is stored).
    pub password: Option<String>,
    /// An Argon2id PHC hash.
    pub password_hash: Option<String>,
    /// The complete list of SSH public keys (OpenSSH one-line format).
    pub ssh_keys: Option<Vec<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("ssh_keys", &self.ssh_keys)
            .finish()
    }
}

/// One `[[staff]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffSpec {
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Credentials.
    pub credentials: Credentials,
    /// Line of the email.
    pub line: usize,
}

/// One `[[contacts]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactSpec {
    /// The reference used by `participants` in this file.
    pub key: String,
    /// Name.
    pub name: String,
    /// Email (the contact's identity in the portal).
    pub email: String,
    /// A verified portal login with these credentials, if the file gives one.
    pub login: Option<Credentials>,
    /// Line of the key.
    pub line: usize,
}

/// One `[[matters]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatterSpec {
    /// Matter number (its identity).
    pub number: String,
    /// Title.
    pub title: String,
    /// Matter type name.
    pub matter_type: String,
    /// Closed?
    pub closed: bool,
    /// Participants.
    pub participants: Vec<ParticipantSpec>,
    /// Line of the number.
    pub line: usize,
}

/// One participant of a matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantSpec {
    /// The contact's `key`.
    pub contact: String,
    /// Participant type name.
    pub participant_type: String,
    /// Whether they get portal access.
    pub portal: bool,
    /// Line of the entry.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    firm: Option<RawFirm>,
    #[serde(default)]
    matter_types: Vec<RawMatterType>,
    #[serde(default)]
    staff: Vec<RawStaff>,
    #[serde(default)]
    contacts: Vec<RawContact>,
    #[serde(default)]
    matters: Vec<RawMatter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirm {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    participant_types: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatterType {
    name: Spanned<String>,
    #[serde(default)]
    folders: Vec<Spanned<String>>,
    #[serde(default)]
    portal: BTreeMap<String, BTreeMap<String, Spanned<Vec<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaff {
    email: Spanned<String>,
    name: String,
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default)]
    password_hash: Option<Spanned<String>>,
    #[serde(default)]
    ssh_keys: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default)]
    password_hash: Option<Spanned<String>>,
    #[serde(default)]
    ssh_keys: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContact {
    key: Spanned<String>,
    name: String,
    email: Spanned<String>,
    #[serde(default)]
    login: Option<Spanned<RawLogin>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatter {
    number: Spanned<String>,
    title: String,
    matter_type: Spanned<String>,
    #[serde(default)]
    closed: bool,
    #[serde(default)]
    participants: Vec<Spanned<RawParticipant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParticipant {
    contact: String,
    #[serde(rename = "type")]
    participant_type: String,
    #[serde(default)]
    portal: bool,
}

/// Line (1-based) of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// Parses a TOML document into `T`, turning errors into one line with the line number.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(FileError {
            line: None,
            message: format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
        });
    }
    toml::from_str::<T>(text).map_err(|e| FileError {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().replace('\n', "; "),
    })
}

/// Case-insensitive identity of a name, as the portal compares them.
pub(crate) fn fold(name: &str) -> String {
    crate::names::fold_key(name.trim())
}

/// Email identity (trimmed, lower case), as the portal compares them.
pub(crate) fn fold_email(email: &str) -> String {
    email.trim().to_lowercase()
}

struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(self.text, s.span().start)
    }
    fn err<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> FileError {
        FileError {
            line: Some(self.line(s)),
            message: message.into(),
        }
    }
    fn creds(
        &self,
        password: Option<Spanned<String>>,
        password_hash: Option<Spanned<String>>,
        ssh_keys: Option<Vec<Spanned<String>>>,
    ) -> Result<Credentials, FileError> {
        if let (Some(_), Some(h)) = (&password, &password_hash) {
            return Err(self.err(h, "give either password or password_hash, not both"));
        }
        if let Some(p) = &password
            && p.get_ref().is_empty()
        {
            return Err(self.err(p, "the password is empty"));
        }
        if let Some(h) = &password_hash {
            let ok = argon2::password_hash::phc::PasswordHash::new(h.get_ref().trim())
                .is_ok_and(|p| p.algorithm.as_str() == "argon2id");
            if !ok {
                return Err(self.err(
                    h,
                    "password_hash must be an Argon2id PHC string (\"$argon2id$v=19$m=…\")",
                ));
            }
        }
        let keys = match ssh_keys {
            None => None,
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for k in list {
                    crate::portal::normalize_ssh_key(k.get_ref())
                        .map_err(|e| self.err(&k, format!("ssh_keys: {e}")))?;
                    out.push(k.into_inner());
                }
                Some(out)
            }
        };
        Ok(Credentials {
            password: password.map(Spanned::into_inner),
            password_hash: password_hash.map(|h| h.into_inner().trim().to_string()),
            ssh_keys: keys,
        })
    }
}

impl PortalFile {
    /// Parses and checks a portal file: syntax, unknown keys, duplicate names, references between
    /// sections (participant types, matter types, contact keys), permission words.
    pub fn parse(text: &str) -> Result<PortalFile, FileError> {
        let raw: RawFile = from_toml(text)?;
        let cx = Ctx { text };
        let mut out = PortalFile::default();

        // Participant types.
        let mut ptypes: HashMap<String, String> = HashMap::new();
        if let Some(firm) = raw.firm {
            out.firm_name = firm.name;
            for t in firm.participant_types {
                let name = t.get_ref().trim().to_string();
                if name.is_empty() {
                    return Err(cx.err(&t, "a participant type name is empty"));
                }
                if ptypes.insert(fold(&name), name.clone()).is_some() {
                    return Err(cx.err(&t, format!("participant type \"{name}\" is listed twice")));
                }
                out.participant_types.push(Named {
                    name,
                    line: cx.line(&t),
                });
            }
        }
        let ptype = |name: &str, line: usize| -> Result<String, FileError> {
            ptypes.get(&fold(name)).cloned().ok_or_else(|| FileError {
                line: Some(line),
                message: format!(
                    "participant type \"{name}\" is not listed in [firm] participant_types"
                ),
            })
        };

        // Matter types.
        let mut mtypes: HashSet<String> = HashSet::new();
        for mt in raw.matter_types {
            let name = mt.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(cx.err(&mt.name, "a matter type name is empty"));
            }
            if !mtypes.insert(fold(&name)) {
                return Err(cx.err(&mt.name, format!("matter type \"{name}\" is defined twice")));
            }
            let mut folders = Vec::new();
            let mut known = HashSet::new();
            for f in &mt.folders {
                let canon = crate::portal::canonical_folder_path(f.get_ref())
                    .map_err(|e| cx.err(f, format!("folder \"{}\": {e}", f.get_ref())))?;
                // Parents are implied.
                let segs: Vec<&str> = canon.split('/').collect();
                for i in 1..=segs.len() {
                    known.insert(crate::policy::fold_path(&segs[..i].join("/")));
                }
                folders.push(f.get_ref().clone());
            }
            let mut portal = Vec::new();
            for (folder, row) in &mt.portal {
                for (pt, words) in row {
                    let line = cx.line(words);
                    let canon =
                        crate::portal::canonical_folder_path(folder).map_err(|e| FileError {
                            line: Some(line),
                            message: format!("folder \"{folder}\": {e}"),
                        })?;
                    if !known.contains(&crate::policy::fold_path(&canon)) {
                        return Err(FileError {
                            line: Some(line),
                            message: format!(
                                "portal folder \"{folder}\" is not in the folders of matter type \"{name}\""
                            ),
                        });
                    }
                    let participant_type = ptype(pt, line)?;
                    let perms = Permissions::parse(words.get_ref()).map_err(|e| FileError {
                        line: Some(line),
                        message: e.to_string(),
                    })?;
                    portal.push(PortalRuleSpec {
                        folder: folder.clone(),
                        participant_type,
                        perms,
                        line,
                    });
                }
            }
            out.matter_types.push(MatterTypeSpec {
                line: cx.line(&mt.name),
                name,
                folders,
                portal,
            });
        }

        // Staff and contacts: one login per email.
        let mut emails: HashSet<String> = HashSet::new();
        for s in raw.staff {
            let email = s.email.get_ref().trim().to_string();
            crate::portal::check_email(&email).map_err(|e| cx.err(&s.email, e.to_string()))?;
            if !emails.insert(fold_email(&email)) {
                return Err(cx.err(&s.email, format!("{email} is listed twice")));
            }
            let line = cx.line(&s.email);
            out.staff.push(StaffSpec {
                credentials: cx.creds(s.password, s.password_hash, s.ssh_keys)?,
                email,
                name: s.name,
                line,
            });
        }
        let mut keys: HashSet<String> = HashSet::new();
        for c in raw.contacts {
            let key = c.key.get_ref().trim().to_string();
            if key.is_empty() {
                return Err(cx.err(&c.key, "a contact key is empty"));
            }
            if !keys.insert(key.clone()) {
                return Err(cx.err(&c.key, format!("contact key \"{key}\" is used twice")));
            }
            let email = c.email.get_ref().trim().to_string();
            crate::portal::check_email(&email).map_err(|e| cx.err(&c.email, e.to_string()))?;
            if !emails.insert(fold_email(&email)) {
                return Err(cx.err(&c.email, format!("{email} is listed twice")));
            }
            let login = match c.login {
                None => None,
                Some(l) => {
                    let line = cx.line(&l);
                    let l = l.into_inner();
                    Some(
                        cx.creds(l.password, l.password_hash, l.ssh_keys)
                            .map_err(|mut e| {
                                e.line = e.line.or(Some(line));
                                e
                            })?,
                    )
                }
            };
            out.contacts.push(ContactSpec {
                line: cx.line(&c.key),
                key,
                name: c.name,
                email,
                login,
            });
        }

        // Matters.
        let mut numbers: HashSet<String> = HashSet::new();
        for m in raw.matters {
            let number = m.number.get_ref().trim().to_string();
            if number.is_empty() {
                return Err(cx.err(&m.number, "a matter number is empty"));
            }
            if !numbers.insert(fold(&number)) {
                return Err(cx.err(&m.number, format!("matter {number} is listed twice")));
            }
            let mt = m.matter_type.get_ref().trim().to_string();
            if !mtypes.contains(&fold(&mt)) {
                return Err(cx.err(
                    &m.matter_type,
                    format!("matter type \"{mt}\" is not defined in [[matter_types]]"),
                ));
            }
            let mut participants = Vec::new();
            let mut seen = HashSet::new();
            for p in m.participants {
                let line = cx.line(&p);
                let p = p.into_inner();
                if !keys.contains(p.contact.trim()) {
                    return Err(FileError {
                        line: Some(line),
                        message: format!(
                            "contact \"{}\" is not defined in [[contacts]] (use its key)",
                            p.contact
                        ),
                    });
                }
                let participant_type = ptype(&p.participant_type, line)?;
                if !seen.insert((p.contact.trim().to_string(), fold(&participant_type))) {
                    return Err(FileError {
                        line: Some(line),
                        message: format!(
                            "contact \"{}\" takes part as {participant_type} twice",
                            p.contact
                        ),
                    });
                }
                if m.closed && p.portal {
                    return Err(FileError {
                        line: Some(line),
                        message: format!(
                            "matter {number} is closed, so \"{}\" can't have portal = true",
                            p.contact
                        ),
                    });
                }
                participants.push(ParticipantSpec {
                    contact: p.contact.trim().to_string(),
                    participant_type,
                    portal: p.portal,
                    line,
                });
            }
            out.matters.push(MatterSpec {
                line: cx.line(&m.number),
                number,
                title: m.title,
                matter_type: mt,
                closed: m.closed,
                participants,
            });
        }
        Ok(out)
    }

    /// Whether the file holds any password in clear (the CLI warns if such a file is readable by
    /// others).
    pub fn has_clear_passwords(&self) -> bool {
        self.staff.iter().any(|s| s.credentials.password.is_some())
            || self
                .contacts
                .iter()
                .any(|c| c.login.as_ref().is_some_and(|l| l.password.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
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

[[matters]]
number = "2026-001"
title = "Smith v Jones"
matter_type = "General"
participants = [ { contact = "alice", type = "Client", portal = true } ]
"#;

    #[test]
    fn parses_the_issue_format() {
        let f = PortalFile::parse(GOOD).unwrap();
        assert_eq!(f.firm_name.as_deref(), Some("Demo & Co"));
        assert_eq!(f.participant_types.len(), 2);
        assert_eq!(f.participant_types[1].name, "Other Side");
        let mt = &f.matter_types[0];
        assert_eq!(mt.folders.len(), 4);
        assert_eq!(mt.portal.len(), 3);
        let tax = mt
            .portal
            .iter()
            .find(|r| r.folder.ends_with("Tax Returns"))
            .unwrap();
        assert_eq!(tax.perms, Permissions::FULL);
        assert_eq!(tax.line, 13);
        assert_eq!(f.staff[0].line, 16);
        assert!(f.contacts[0].login.as_ref().unwrap().password.is_some());
        assert_eq!(f.matters[0].participants[0].participant_type, "Client");
        assert!(f.matters[0].participants[0].portal);
        assert!(f.has_clear_passwords());
        // Secrets never show in debug output.
        assert!(!format!("{f:?}").contains("passphrase"));
    }

    fn err_of(text: &str) -> FileError {
        PortalFile::parse(text).unwrap_err()
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let e = err_of("[firm]\nparticipant_types = [\"Client\"]\n\n[[staff]\nemail = 1\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("line 4: "), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let e = err_of("[firm]\nname = \"x\"\nparticipant_type = [\"Client\"]\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("participant_type"), "{e}");
    }

    #[test]
    fn references_are_checked_with_lines() {
        let text = GOOD.replace("type = \"Client\", portal", "type = \"Expert\", portal");
        let e = err_of(&text);
        assert_eq!(e.line, Some(30), "{e}");
        assert!(e.message.contains("Expert"), "{e}");

        let text = GOOD.replace("contact = \"alice\"", "contact = \"bob\"");
        let e = err_of(&text);
        assert!(e.message.contains("\"bob\""), "{e}");

        let text = GOOD.replace("matter_type = \"General\"", "matter_type = \"Estates\"");
        let e = err_of(&text);
        assert_eq!(e.line, Some(29), "{e}");

        let text = GOOD.replace("Client = [\"full\"]", "Client = [\"fly\"]");
        let e = err_of(&text);
        assert_eq!(e.line, Some(13), "{e}");
        assert!(e.message.contains("fly"), "{e}");

        let text = GOOD.replace(
            "[matter_types.portal.\"Client Documents/Tax Returns\"]",
            "[matter_types.portal.\"Tax\"]",
        );
        let e = err_of(&text);
        assert!(e.message.contains("not in the folders"), "{e}");
    }

    #[test]
    fn duplicates_and_conflicts_are_refused() {
        let e = err_of(&format!(
            "{GOOD}\n[[contacts]]\nkey = \"alice2\"\nname = \"A\"\nemail = \"ALICE@client.test\"\n"
        ));
        assert!(e.message.contains("twice"), "{e}");
        let e = err_of(&GOOD.replace(
            "password = \"a long staff passphrase\"",
            "password = \"x1234567890ab\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"",
        ));
        assert!(e.message.contains("not both"), "{e}");
        let e = err_of(&GOOD.replace(
            "login = { password = \"a long client passphrase\" }",
            "login = { ssh_keys = [\"ssh-ed25519 not-base64!\"] }",
        ));
        assert_eq!(e.line, Some(24), "{e}");
        let e = err_of(&GOOD.replace(
            "title = \"Smith v Jones\"",
            "title = \"Smith v Jones\"\nclosed = true",
        ));
        assert!(e.message.contains("closed"), "{e}");
    }

    #[test]
    fn line_of_counts_newlines() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\nb\nc", 400), 3);
    }
}

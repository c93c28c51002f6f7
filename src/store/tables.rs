//! The table layout. Every table maps bytes to bytes; keys are big-endian ids (so prefix scans give
//! id order) and keyed hashes of canonical names; values are sealed records (see [`super::records`])
//! or plaintext ids.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | fixed names | schema version, next id |
//! | `ptypes` | ptype | [`super::records::ParticipantTypeRec`] |
//! | `mtypes` | mtype | [`super::records::MatterTypeRec`] |
//! | `matters` | matter | [`super::records::MatterRec`] |
//! | `folders` | matter, folder | [`super::records::FolderRec`] |
//! | `documents` | matter, doc | [`super::records::DocumentRec`] |
//! | `versions` | matter, doc, n | [`super::records::VersionRec`] |
//! | `contacts` | contact | [`super::records::ContactRec`] |
//! | `participants` | matter, participant | [`super::records::ParticipantRec`] |
//! | `logins` | login | [`super::records::LoginRec`] |
//! | `messages` | matter, participant, message | [`super::records::MessageRec`] |
//! | `invitations` | invitation | [`super::records::InvitationRec`] |
//! | `resets` | reset | [`super::records::ResetRec`] (password-reset links) |
//! | `audit` | seq | sealed [`crate::audit::AuditEntry`] with its chain MAC |
//! | `names` | kind byte, scope ids, keyed hash of the folded name | id (unique names) |
//! | `links` | kind byte, ids… | empty (relations: contact→participations, audit indexes, trash) |
//! | `blob_data` | matter, blob id (16 bytes) | a small blob's stored form, already sealed by the blob store ([`crate::blob::BlobRef::inline`]) |

use super::RawTable;
use redb::TableDefinition;

/// Alias for a raw table definition.
pub type Raw = RawTable;

/// Schema version and counters.
pub const META: Raw = TableDefinition::new("meta");
/// Participant types.
pub const PTYPES: Raw = TableDefinition::new("ptypes");
/// Matter types.
pub const MTYPES: Raw = TableDefinition::new("mtypes");
/// Matters.
pub const MATTERS: Raw = TableDefinition::new("matters");
/// Folders.
pub const FOLDERS: Raw = TableDefinition::new("folders");
/// Documents.
pub const DOCUMENTS: Raw = TableDefinition::new("documents");
/// Document versions.
pub const VERSIONS: Raw = TableDefinition::new("versions");
/// Contacts.
pub const CONTACTS: Raw = TableDefinition::new("contacts");
/// Participants.
pub const PARTICIPANTS: Raw = TableDefinition::new("participants");
/// Logins.
pub const LOGINS: Raw = TableDefinition::new("logins");
/// Messages.
pub const MESSAGES: Raw = TableDefinition::new("messages");
/// Invitations.
pub const INVITATIONS: Raw = TableDefinition::new("invitations");
/// Password-reset links.
pub const RESETS: Raw = TableDefinition::new("resets");
/// The audit trail.
pub const AUDIT: Raw = TableDefinition::new("audit");
/// Unique-name indexes.
pub const NAMES: Raw = TableDefinition::new("names");
/// Relations.
pub const LINKS: Raw = TableDefinition::new("links");
/// WebDAV dead properties.
pub const PROPS: Raw = TableDefinition::new("props");

/// Small blobs kept in the database (see [`crate::blob::BlobRef::inline`]): the blob store's
/// sealed bytes, stored as they are.
pub const BLOB_DATA: Raw = TableDefinition::new("blob_data");

/// The `blob_data` key of a blob.
pub fn blob_data_key(matter: crate::model::MatterId, blob: crate::blob::BlobId) -> Vec<u8> {
    Key::new().id(matter.0).bytes(&blob.0).done()
}

/// Every table, created at open.
pub const ALL: &[Raw] = &[
    META,
    PTYPES,
    MTYPES,
    MATTERS,
    FOLDERS,
    DOCUMENTS,
    VERSIONS,
    CONTACTS,
    PARTICIPANTS,
    LOGINS,
    MESSAGES,
    INVITATIONS,
    RESETS,
    AUDIT,
    NAMES,
    LINKS,
    PROPS,
    BLOB_DATA,
];

/// `meta` key of the schema version.
pub const META_SCHEMA: &[u8] = b"schema_version";
/// `meta` key of the id counter.
pub const META_NEXT_ID: &[u8] = b"next_id";

/// Name-index kinds (first key byte of `names`).
pub mod name_kind {
    /// Participant type names.
    pub const PTYPE: u8 = b'p';
    /// Matter type names.
    pub const MTYPE: u8 = b't';
    /// Matter numbers.
    pub const MATTER_NUMBER: u8 = b'n';
    /// Matter folder names (number + title, as shown in trees).
    pub const MATTER_DISPLAY: u8 = b'd';
    /// Folder names within a parent folder.
    pub const FOLDER: u8 = b'f';
    /// Live document names within a folder.
    pub const DOCUMENT: u8 = b'D';
    /// Contact emails.
    pub const CONTACT_EMAIL: u8 = b'c';
    /// Login emails.
    pub const LOGIN_EMAIL: u8 = b'l';
    /// Invitation token hashes (every token ever sent, so a superseded link is recognised).
    pub const INVITE_TOKEN: u8 = b'i';
    /// Password-reset token hashes.
    pub const RESET_TOKEN: u8 = b'r';
}

/// Relation kinds (first key byte of `links`).
pub mod link_kind {
    /// contact, matter, participant.
    pub const CONTACT_PARTICIPATION: u8 = b'c';
    /// matter, seq: audit entries of a matter.
    pub const AUDIT_BY_MATTER: u8 = b'm';
    /// login, seq: audit entries of a login.
    pub const AUDIT_BY_LOGIN: u8 = b'l';
    /// matter, doc, seq: audit entries of a document.
    pub const AUDIT_BY_DOC: u8 = b'd';
    /// matter, doc: documents in the trash.
    pub const TRASH: u8 = b't';
    /// matter, type: matters of a type.
    pub const MATTER_OF_TYPE: u8 = b'y';
}

/// Builds a key from a kind byte and parts.
#[derive(Default, Clone, Debug)]
pub struct Key(Vec<u8>);

impl Key {
    /// An empty key.
    pub fn new() -> Self {
        Key(Vec::with_capacity(48))
    }
    /// A key starting with a kind byte.
    pub fn kind(k: u8) -> Self {
        let mut v = Vec::with_capacity(48);
        v.push(k);
        Key(v)
    }
    /// Appends a big-endian id.
    pub fn id(mut self, id: u64) -> Self {
        self.0.extend_from_slice(&id.to_be_bytes());
        self
    }
    /// Appends bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// The key bytes.
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// A key made of ids only.
pub fn ids(parts: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.len() * 8);
    for p in parts {
        v.extend_from_slice(&p.to_be_bytes());
    }
    v
}

/// Reads a big-endian u64 from exactly 8 bytes.
pub fn id_from(v: &[u8]) -> Option<u64> {
    let a: [u8; 8] = v.try_into().ok()?;
    Some(u64::from_be_bytes(a))
}

/// Reads a big-endian u64 at `offset` of a key.
pub fn id_at(v: &[u8], offset: usize) -> Option<u64> {
    let s = v.get(offset..offset.checked_add(8)?)?;
    id_from(s)
}

/// Reads a big-endian u32 from exactly 4 bytes.
pub fn u32_from(v: &[u8]) -> Option<u32> {
    let a: [u8; 4] = v.try_into().ok()?;
    Some(u32::from_be_bytes(a))
}

//! Records as stored (sealed) in the database.
//!
//! Public API types in [`crate::portal`] are views over these; the records may carry fields the API
//! does not expose (password hashes, token hashes).

use crate::blob::BlobRef;
use crate::model::*;
use serde::{Deserialize, Serialize};

/// A participant type (Client, Other Side…).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantTypeRec {
    /// Display name.
    pub name: String,
}

/// One cell of a matter type's portal configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortalRule {
    /// Template folder path (canonical segments joined by `/`).
    pub folder: String,
    /// The participant type it applies to.
    pub ptype: ParticipantTypeId,
    /// The permissions granted.
    pub perms: Permissions,
}

/// A matter type: folder template plus portal configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MatterTypeRec {
    /// Display name.
    pub name: String,
    /// Template folder paths (canonical segments joined by `/`), parents before children.
    pub folders: Vec<String>,
    /// The portal configuration; folders without rules are not portal folders.
    pub portal: Vec<PortalRule>,
}

/// A matter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MatterRec {
    /// The firm's matter number.
    pub number: String,
    /// Title.
    pub title: String,
    /// The matter type.
    pub mtype: MatterTypeId,
    /// Closed matters are not shown to portal users and can't be changed by them.
    pub closed: bool,
    /// Created at.
    pub created: Millis,
    /// The name of the matter's folder in trees (number and title made safe).
    pub display: String,
}

/// A folder in a matter. Top-level folders have `parent == None`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FolderRec {
    /// Parent folder.
    pub parent: Option<FolderId>,
    /// Canonical name.
    pub name: String,
    /// Created at.
    pub created: Millis,
}

/// Where a trashed document was and who trashed it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrashInfo {
    /// When.
    pub at: Millis,
    /// By whom.
    pub by: Principal,
    /// The folder's path (canonical names from the matter down) when it was trashed, so it can be
    /// restored even if the folder was removed since.
    pub folder_path: Vec<String>,
}

/// A document. Its content is its current version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocumentRec {
    /// Containing folder.
    pub folder: FolderId,
    /// Canonical name.
    pub name: String,
    /// Current version number (versions are numbered from 1).
    pub current: u32,
    /// Highest version number ever used.
    pub last_version: u32,
    /// Size of the current version.
    pub len: u64,
    /// Modification time shown to clients (client-supplied mtime or commit time).
    pub modified: Millis,
    /// Created at.
    pub created: Millis,
    /// Set when the document is in the matter's trash.
    pub trashed: Option<TrashInfo>,
}

/// One version of a document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionRec {
    /// The content.
    pub blob: BlobRef,
    /// Committed at.
    pub created: Millis,
    /// Who wrote it.
    pub author: Principal,
    /// Through which channel.
    pub channel: Channel,
    /// Modification time supplied by the client, if any.
    pub mtime: Option<Millis>,
}

/// A contact (person outside the firm).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactRec {
    /// Name.
    pub name: String,
    /// Email address (as entered; the index uses the lower-cased form).
    pub email: String,
    /// Linked portal login, if any.
    pub login: Option<LoginId>,
}

/// A contact's part in a matter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantRec {
    /// Who.
    pub contact: ContactId,
    /// As what.
    pub ptype: ParticipantTypeId,
    /// Whether staff granted portal access.
    pub portal: bool,
}

/// Staff or portal login.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum LoginKind {
    /// A member of the firm.
    Staff,
    /// An outside person, linked to a contact.
    Portal,
}

/// A per-device app password.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppPasswordRec {
    /// Id within the login.
    pub id: u64,
    /// The device name the user gave.
    pub name: String,
    /// Hash of the secret.
    pub hash: String,
    /// Created at.
    pub created: Millis,
}

/// A login.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginRec {
    /// Login name (email).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Staff or portal.
    pub kind: LoginKind,
    /// For portal logins: the contact.
    pub contact: Option<ContactId>,
    /// Whether the email address is verified.
    pub verified: bool,
    /// Argon2id PHC string; `None` until the user chooses a password.
    pub password_hash: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA… comment`).
    pub ssh_keys: Vec<String>,
    /// App passwords.
    pub app_passwords: Vec<AppPasswordRec>,
    /// Disabled logins can't authenticate.
    pub disabled: bool,
    /// Created at.
    pub created: Millis,
    /// Bumped on every credential change (drops cached authentications).
    pub credential_gen: u64,
}

/// One message in a participant's conversation with the firm.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageRec {
    /// Author.
    pub author: Principal,
    /// Body text.
    pub body: String,
    /// Posted at.
    pub at: Millis,
}

/// What an invitation is for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum InvitationKind {
    /// The contact has no login: create one (verifies the email).
    NewLogin,
    /// The contact has a login: tell them about the new matter.
    NewMatter,
    /// A password reset.
    PasswordReset,
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum InvitationStatus {
    /// Waiting for the person.
    Pending,
    /// Used.
    Accepted,
    /// Revoked by staff (or superseded by a re-send).
    Revoked,
}

/// An invitation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvitationRec {
    /// The contact invited.
    pub contact: ContactId,
    /// The matter, if any.
    pub matter: Option<MatterId>,
    /// Kind.
    pub kind: InvitationKind,
    /// SHA-256 of the token (the token itself is never stored).
    pub token_hash: Option<[u8; 32]>,
    /// Created at.
    pub created: Millis,
    /// Expires at.
    pub expires: Millis,
    /// Status.
    pub status: InvitationStatus,
    /// How many times it was sent.
    pub sent: u32,
}

/// A password-reset link (table `resets`, keyed by its id). The token itself is never stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResetRec {
    /// The login whose password the link resets.
    pub login: LoginId,
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// Created at.
    pub created: Millis,
    /// Expires at.
    pub expires: Millis,
    /// Pending, accepted (used) or revoked (superseded by a newer link).
    pub status: InvitationStatus,
}

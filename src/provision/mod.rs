//! Declarative set-up: a TOML *portal file* describes participant types, matter types (folders,
//! portal folders and the permission matrix), staff and portal logins, contacts, matters,
//! participants and portal access; [`apply`] compares it with the portal through the admin API
//! and changes exactly the difference, returning what it changed.
//!
//! The `sdx apply` command is a thin wrapper around this module; a host application can call it
//! too:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use sdx_portal::{Portal, model::Actor, provision::{self, PortalFile}};
//! let portal = Portal::in_memory().await.unwrap();
//! let file = PortalFile::parse(r#"
//!     [firm]
//!     participant_types = ["Client"]
//!     [[matter_types]]
//!     name = "General"
//!     folders = ["Client Documents", "Internal"]
//!     [matter_types.portal."Client Documents"]
//!     Client = ["list", "read", "create"]
//! "#).unwrap();
//! let first = provision::apply(&portal, &Actor::system(), &file, false).await.unwrap();
//! assert_eq!(first.changes.len(), 3); // the type, the matter type, one permission cell
//! let again = provision::apply(&portal, &Actor::system(), &file, false).await.unwrap();
//! assert!(again.changes.is_empty());
//! # });
//! ```
//!
//! ## What the file manages
//! - **Objects named in the file** are created if missing and brought in line with the file;
//!   objects the file does not name (other matters, contacts, types) are left alone. Nothing is
//!   ever deleted: the admin API has no deletion of types, contacts or matters.
//! - **Matter types:** the folder template and the whole permission matrix are the file's
//!   (cells missing from the file are removed; folders dropped from the template stay in existing
//!   matters with their documents, as [`Portal::set_matter_type_folders`] does).
//! - **Matters:** title and `closed` are the file's; a matter's type can't change. For a matter
//!   in the file, the participants with `portal = true` are exactly those with portal access:
//!   others lose it (their participant record stays).
//! - **Logins:** a `password`, `password_hash` or `ssh_keys` given in the file is enforced
//!   (`ssh_keys` is the complete list); what the file leaves out (e.g. a password the user chose
//!   after an invitation) is left alone. Passwords are compared by verifying them against the
//!   stored hash, never printed.
//! - **Identity:** participant types, matter types by name (case-insensitive), logins and
//!   contacts by email, matters by number. A contact's `key` only links entries inside the file.
//!
//! Each change is one admin call (one transaction, audited). A failure stops the run and
//! reports what was done before it; fixing the cause and applying again finishes the job, since
//! applying is idempotent.

mod apply;
pub mod file;

pub use file::{FileError, PortalFile};

use crate::Portal;
use crate::model::Actor;
use serde::Serialize;
use std::fmt;

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Something was created or granted.
    Add,
    /// Something was changed.
    Update,
    /// Something was removed or revoked.
    Remove,
}

/// One change [`apply`] made (or, in a dry run, would make).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Kind.
    pub op: Op,
    /// What, in words (never a secret).
    pub what: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            Op::Add => '+',
            Op::Update => '~',
            Op::Remove => '-',
        };
        write!(f, "{sign} {}", self.what)
    }
}

/// What [`apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The changes, in the order they were made.
    pub changes: Vec<Change>,
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
}

impl ApplyReport {
    /// Whether the portal already matched the file.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Why [`apply`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The file is malformed.
    #[error(transparent)]
    File(#[from] FileError),
    /// An entry of the file conflicts with the portal or was refused by it.
    #[error("line {line}: {message}")]
    Entry {
        /// The line of the entry.
        line: usize,
        /// Why.
        message: String,
    },
    /// The portal failed.
    #[error(transparent)]
    Portal(#[from] crate::Error),
}

impl ApplyError {
    /// The file line the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ApplyError::File(e) => e.line,
            ApplyError::Entry { line, .. } => Some(*line),
            ApplyError::Portal(_) => None,
        }
    }
}

/// A failed [`apply`]: the error and the changes made before it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ApplyFailed {
    /// What went wrong.
    pub error: ApplyError,
    /// Changes made before the failure (they stay: each one was its own transaction).
    pub done: Vec<Change>,
}

/// Brings the portal in line with `file`, acting as `actor` (staff or system), and reports every
/// change. With `dry_run`, only reports what it would change.
pub async fn apply(
    portal: &Portal,
    actor: &Actor,
    file: &PortalFile,
    dry_run: bool,
) -> Result<ApplyReport, ApplyFailed> {
    let (changes, err) = apply::run(portal, actor, file, dry_run).await;
    match err {
        None => Ok(ApplyReport { changes, dry_run }),
        Some(error) => Err(ApplyFailed {
            error,
            done: changes,
        }),
    }
}

/// [`PortalFile::parse`] then [`apply`].
pub async fn apply_text(
    portal: &Portal,
    actor: &Actor,
    text: &str,
    dry_run: bool,
) -> Result<ApplyReport, ApplyFailed> {
    let file = PortalFile::parse(text).map_err(|e| ApplyFailed {
        error: e.into(),
        done: Vec::new(),
    })?;
    apply(portal, actor, &file, dry_run).await
}

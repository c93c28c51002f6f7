//! The one error type of the library.
//!
//! Every fallible public call returns [`Result`]. Variants say *what* was wrong in words a firm's
//! administrator (or, through a front end, a client) understands; front ends map them to protocol
//! status codes (HTTP 403/404/409…, SFTP `PERMISSION_DENIED`/`NO_SUCH_FILE`…).

use crate::model::Permission;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the portal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The principal lacks a permission on a folder. `folder` is the folder's path in the
    /// principal's tree, so the message can be shown to that principal.
    #[error("permission denied: you do not have {permission} permission on folder \"{folder}\"")]
    PermissionDenied {
        /// The permission that was needed.
        permission: Permission,
        /// The folder, as the principal sees it.
        folder: String,
    },
    /// An operation only staff may perform.
    #[error("permission denied: {0}")]
    StaffOnly(&'static str),
    /// The principal is not (or no longer) allowed in at all: unknown, disabled or wrong credentials.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// Too many failed attempts: try again after the given number of seconds.
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    LockedOut {
        /// Seconds until another attempt is accepted.
        retry_after_secs: u64,
    },
    /// Nothing at that path, or nothing with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// Something with that name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A name or path that can't be used (illegal character, reserved name, too long…).
    #[error("invalid name \"{name}\": {reason}")]
    InvalidName {
        /// The offending name (lossily printed).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A request that is not valid in the current state (e.g. closing a matter with portal access).
    #[error("{0}")]
    Conflict(String),
    /// Input that is malformed (bad config, bad argument).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Stored data failed its integrity check (tampering, truncation, corruption).
    #[error("integrity error: {0}")]
    Integrity(String),
    /// Key material is missing or wrong.
    #[error("key error: {0}")]
    Key(String),
    /// The database was written by a newer version of sdx-portal.
    #[error(
        "the database has schema version {found}, but this build of sdx-portal understands up to {supported}: upgrade sdx-portal"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: u32,
        /// Highest version this build supports.
        supported: u32,
    },
    /// A size or count limit was exceeded.
    #[error("limit exceeded: {0}")]
    TooLarge(String),
    /// The storage layer failed (redb).
    #[error("storage error: {0}")]
    Storage(String),
    /// An I/O error (disk, network).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The portal has been shut down.
    #[error("the portal is shutting down")]
    ShuttingDown,
}

impl Error {
    /// A short machine-readable kind, used in audit entries and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PermissionDenied { .. } | Error::StaffOnly(_) => "denied",
            Error::AuthenticationFailed => "auth_failed",
            Error::LockedOut { .. } => "locked_out",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "exists",
            Error::InvalidName { .. } => "invalid_name",
            Error::Conflict(_) => "conflict",
            Error::Invalid(_) => "invalid",
            Error::Integrity(_) => "integrity",
            Error::Key(_) => "key",
            Error::SchemaTooNew { .. } => "schema",
            Error::TooLarge(_) => "too_large",
            Error::Storage(_) => "storage",
            Error::Io(_) => "io",
            Error::ShuttingDown => "shutdown",
        }
    }

    /// True for refusals by the access policy (as opposed to failures).
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::PermissionDenied { .. } | Error::StaffOnly(_))
    }

    /// True if the error means "nothing there".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Storage(format!("background task failed: {e}"))
    }
}

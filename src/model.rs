//! The portal's vocabulary: ids, permissions, principals and the records staff manage.
//!
//! These are plain data types. They decide nothing: access decisions live in [`crate::policy`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A participant type defined by the firm (Client, Other Side, Expert…).
    ParticipantTypeId
);
id_type!(
    /// A matter type (General, Estate Planning…).
    MatterTypeId
);
id_type!(
    /// A matter (a case).
    MatterId
);
id_type!(
    /// A folder inside one matter.
    FolderId
);
id_type!(
    /// A document inside one matter.
    DocumentId
);
id_type!(
    /// A contact: a person outside the firm.
    ContactId
);
id_type!(
    /// A participant: one contact's part in one matter.
    ParticipantId
);
id_type!(
    /// A login (staff or portal user).
    LoginId
);
id_type!(
    /// A message in a conversation.
    MessageId
);
id_type!(
    /// An invitation to create a login or to a new matter.
    InvitationId
);

/// One of the five portal permissions on a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// See the documents in the folder. Without it the folder always looks empty.
    List,
    /// Read (download) documents.
    Read,
    /// Upload new documents.
    Create,
    /// Replace existing documents (makes a new version).
    Update,
    /// Delete documents (moves them to the matter's trash).
    Delete,
}

impl Permission {
    /// All five, in canonical order.
    pub const ALL: [Permission; 5] = [
        Permission::List,
        Permission::Read,
        Permission::Create,
        Permission::Update,
        Permission::Delete,
    ];

    fn bit(self) -> u8 {
        match self {
            Permission::List => 1,
            Permission::Read => 2,
            Permission::Create => 4,
            Permission::Update => 8,
            Permission::Delete => 16,
        }
    }

    /// Lower-case name as used in config files (`list`, `read`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::List => "list",
            Permission::Read => "read",
            Permission::Create => "create",
            Permission::Update => "update",
            Permission::Delete => "delete",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Permission::List => "List",
            Permission::Read => "Read",
            Permission::Create => "Create",
            Permission::Update => "Update",
            Permission::Delete => "Delete",
        };
        f.write_str(s)
    }
}

/// A set of [`Permission`]s.
///
/// ```
/// use sdx_portal::model::{Permission, Permissions};
/// let p = Permissions::NONE.with(Permission::List).with(Permission::Read);
/// assert!(p.contains(Permission::Read) && !p.contains(Permission::Delete));
/// assert_eq!(Permissions::FULL.iter().count(), 5);
/// assert_eq!(Permissions::parse(&["list", "read"]).unwrap(), p);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission at all: the folder is invisible.
    pub const NONE: Permissions = Permissions(0);
    /// All five permissions.
    pub const FULL: Permissions = Permissions(31);

    /// From the raw bit set (bits above the five are ignored).
    pub fn from_bits(bits: u8) -> Self {
        Permissions(bits & 31)
    }
    /// The raw bit set.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// This set plus `p`.
    pub fn with(self, p: Permission) -> Self {
        Permissions(self.0 | p.bit())
    }
    /// This set without `p`.
    pub fn without(self, p: Permission) -> Self {
        Permissions(self.0 & !p.bit())
    }
    /// Union of two sets.
    pub fn union(self, other: Permissions) -> Self {
        Permissions(self.0 | other.0)
    }
    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The permissions in the set, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
    /// Parses config words: any of `list`, `read`, `create`, `update`, `delete`, or `full`
    /// (case-insensitive).
    pub fn parse<S: AsRef<str>>(words: &[S]) -> crate::Result<Self> {
        let mut p = Permissions::NONE;
        for w in words {
            let w = w.as_ref().trim().to_ascii_lowercase();
            p = match w.as_str() {
                "full" => Permissions::FULL,
                other => match Permission::ALL.iter().find(|x| x.as_str() == other) {
                    Some(x) => p.with(*x),
                    None => {
                        return Err(crate::Error::Invalid(format!(
                            "unknown permission \"{other}\" (use list, read, create, update, delete or full)"
                        )));
                    }
                },
            };
        }
        Ok(p)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Permissions::FULL {
            return f.write_str("Full");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let v: Vec<String> = self.iter().map(|p| p.to_string()).collect();
        f.write_str(&v.join("+"))
    }
}

/// Which door an operation came through. Recorded in every audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// The library API (host application, admin CLI).
    Api,
    /// The WebDAV front end.
    WebDav,
    /// The SFTP front end.
    Sftp,
    /// Web pages (invitation accept, password reset).
    Web,
}

impl Channel {
    /// Lower-case name (`api`, `webdav`, `sftp`, `web`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::WebDav => "webdav",
            Channel::Sftp => "sftp",
            Channel::Web => "web",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is acting.
///
/// Security: a `Principal` is only ever produced by authentication ([`crate::Portal::authenticate_password`]
/// and friends) or by the host application, which is trusted. Front ends must not fabricate one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// A staff login: sees every matter and folder with full rights.
    Staff(LoginId),
    /// A portal login: sees only granted matters, through the matter type's portal configuration.
    Portal(LoginId),
    /// The system itself (maintenance, the admin CLI acting as the firm).
    System,
}

impl Principal {
    /// The login behind the principal, if any.
    pub fn login(&self) -> Option<LoginId> {
        match self {
            Principal::Staff(l) | Principal::Portal(l) => Some(*l),
            Principal::System => None,
        }
    }
    /// Whether the principal has staff rights (staff or system).
    pub fn is_staff(&self) -> bool {
        !matches!(self, Principal::Portal(_))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Staff(l) => write!(f, "staff:{l}"),
            Principal::Portal(l) => write!(f, "portal:{l}"),
            Principal::System => f.write_str("system"),
        }
    }
}

/// The context of one operation: who, through which door, from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Who is acting.
    pub principal: Principal,
    /// Through which front end.
    pub channel: Channel,
    /// The client's address, when known.
    pub remote: Option<SocketAddr>,
}

impl Actor {
    /// The system acting through the API.
    pub fn system() -> Self {
        Actor {
            principal: Principal::System,
            channel: Channel::Api,
            remote: None,
        }
    }
    /// A principal acting through the API.
    pub fn api(principal: Principal) -> Self {
        Actor {
            principal,
            channel: Channel::Api,
            remote: None,
        }
    }
    /// A principal acting through `channel` from `remote`.
    pub fn new(principal: Principal, channel: Channel, remote: Option<SocketAddr>) -> Self {
        Actor {
            principal,
            channel,
            remote,
        }
    }
}

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = u64;

/// Now, in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! The WebDAV front end: the HTTP(S) listener ([`server`]), Basic authentication with a short
//! success cache ([`auth`]) and dav-server's lock system over the portal's shared, persistent
//! [`crate::locks::LockManager`] ([`lock_system`]).
//!
//! The filesystem adapter over the portal's tree ([`fs`]) plugs into
//! [`server::WebDavServer::builder`] as a `GuardedFileSystem<DavCtx<Principal>>`: every call receives
//! the authenticated principal and the client's address in [`server::DavCtx`].

pub mod auth;
pub mod fs;
pub mod lock_system;
pub mod mount;
mod propfind;
pub mod quirks;
pub mod server;

pub use auth::{AuthCache, AuthError, Authenticator, CheckGuard, EpochSource};
pub use lock_system::PortalLockSystem;
pub use server::{
    DAV_PREFIX, DavCtx, DavService, Fallback, Refusal, RunningServer, ServerError, ServerLimits,
    WebDavServer, WebDavServerBuilder,
};

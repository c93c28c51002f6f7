//! The SFTP front end: an SSH server (russh) that offers only the `sftp` subsystem (russh-sftp).
//!
//! This module holds the infrastructure that does not depend on the portal's tree:
//!
//! - [`hostkey`]: the persistent ed25519 host key (generated once, stable fingerprint);
//! - [`server`]: the SSH server itself ([`SftpServer`]): modern algorithms only, password and
//!   public-key authentication through an [`SshAuthenticator`], nothing but the `sftp` subsystem
//!   (shell, exec, pty, env, X11, port and agent forwarding are refused), caps on authentication
//!   attempts, channels and connections, idle timeout and graceful shutdown;
//! - [`transport`]: the adapter between an SSH channel and the SFTP request handler: one task per
//!   channel drains it, checks the framing, handles the requests in order through the handler and
//!   sends the responses (russh-sftp's own loop is not used, only its packet types and `Handler`
//!   trait). It fixes the two defects reproduced with russh 0.65 + russh-sftp 3.0 (see
//!   `shared/notes/crates.md`): the flow-control deadlock (the channel is drained, into a
//!   byte-capped queue, while a response waits for the client's window) and the stream desync on
//!   oversized packets (SFTP framing is checked; a violation closes the session);
//! - [`threads`]: [`ConnectionThreads`], which keeps each connection and all its tasks on one
//!   thread (the server uses it when given one; `sdx serve` does).
//!
//! The SFTP request handler ([`handler`]) maps SFTP requests to the principal's tree; it is plugged
//! in through a [`SessionFactory`], which builds one russh-sftp `Handler` per session.

pub mod handler;
pub mod hostkey;
pub mod mount;
pub mod server;
pub mod threads;
pub mod transport;

pub use hostkey::HostKey;
pub use server::{
    AuthError, RunningSftpServer, SessionContext, SessionFactory, SessionRefused, SftpServer,
    SftpServerBuilder, SshAuthenticator,
};
pub use threads::ConnectionThreads;
pub use transport::{SftpSession, TransportConfig};

use std::path::PathBuf;

/// What can go wrong while setting up or running the SFTP front end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SftpError {
    /// The host key file could not be read, written or synced.
    #[error("host key file {path}: {source}")]
    HostKeyIo {
        /// The file (or its directory).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The host key file exists but can't be used (not an OpenSSH ed25519 key, encrypted, too large,
    /// readable by others…).
    #[error("host key file {path}: {reason}")]
    HostKeyInvalid {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A new host key could not be generated or encoded.
    #[error("host key generation failed: {0}")]
    HostKeyGeneration(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid SFTP server configuration: {0}")]
    Config(String),
    /// A background task failed (panicked or was cancelled).
    #[error("SFTP background task failed: {0}")]
    Task(String),
}

impl From<SftpError> for crate::Error {
    fn from(e: SftpError) -> Self {
        match e {
            SftpError::HostKeyIo { path, source } => crate::Error::Io(std::io::Error::new(
                source.kind(),
                format!("host key file {}: {source}", path.display()),
            )),
            SftpError::HostKeyInvalid { .. } | SftpError::HostKeyGeneration(_) => {
                crate::Error::Key(e.to_string())
            }
            SftpError::Bind { addr, source } => crate::Error::Io(std::io::Error::new(
                source.kind(),
                format!("cannot listen on {addr}: {source}"),
            )),
            SftpError::Config(m) => crate::Error::Invalid(m),
            SftpError::Task(m) => crate::Error::Storage(m),
        }
    }
}

//! Wires the SFTP server to a [`Portal`]: password and public-key authentication against portal
//! logins, and one [`PortalSftp`] handler (over the principal's tree) per session.

use super::HostKey;
use super::handler::PortalSftp;
use super::server::{
    AuthError, SessionContext, SessionFactory, SessionRefused, SftpServer, SftpServerBuilder,
    SshAuthenticator,
};
use super::transport::SftpSession;
use crate::Portal;
use crate::model::{Actor, Channel, Principal};
use async_trait::async_trait;
use russh::keys::PublicKey;
use std::net::SocketAddr;
use std::sync::Arc;

/// Checks SSH credentials against the portal's logins (audited as `login` on channel `sftp`).
#[derive(Clone, Debug)]
pub struct PortalSshAuthenticator {
    portal: Portal,
}

#[async_trait]
impl SshAuthenticator<Principal> for PortalSshAuthenticator {
    async fn password(
        &self,
        user: &str,
        password: &str,
        remote: SocketAddr,
    ) -> Result<Principal, AuthError> {
        Ok(self
            .portal
            .authenticate_password_from(user, password, Channel::Sftp, Some(remote))
            .await?)
    }

    async fn public_key(
        &self,
        user: &str,
        key: &PublicKey,
        remote: SocketAddr,
    ) -> Result<Principal, AuthError> {
        let line = key
            .to_openssh()
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        Ok(self
            .portal
            .authenticate_public_key(user, &line, Channel::Sftp, Some(remote))
            .await?)
    }
}

/// Builds one [`PortalSftp`] per session for the authenticated principal.
#[derive(Clone, Debug)]
pub struct PortalSessions {
    portal: Portal,
}

impl SessionFactory<Principal> for PortalSessions {
    fn new_session(&self, ctx: &SessionContext<Principal>) -> Result<SftpSession, SessionRefused> {
        let tree = self
            .portal
            .tree(Actor::new(ctx.principal, Channel::Sftp, Some(ctx.remote)));
        Ok(SftpSession::new(
            PortalSftp::new(tree).with_limits(ctx.max_packet_len),
        ))
    }
}

/// An SFTP server builder for `portal` with `host_key`, listening on `addr`: `.start().await`.
pub fn builder(
    portal: &Portal,
    host_key: HostKey,
    addr: SocketAddr,
) -> SftpServerBuilder<Principal> {
    SftpServer::builder(
        host_key,
        Arc::new(PortalSshAuthenticator {
            portal: portal.clone(),
        }),
        Arc::new(PortalSessions {
            portal: portal.clone(),
        }),
    )
    .bind(addr)
}

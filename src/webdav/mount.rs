//! Wires the WebDAV listener to a [`Portal`]: the tree filesystem, Basic authentication against
//! portal logins, and the portal's shared, persistent lock manager.

use super::auth::{AuthError, Authenticator};
use super::fs::PortalDavFs;
use super::server::{WebDavServer, WebDavServerBuilder};
use crate::Portal;
use crate::locks::LockManager;
use crate::model::{Channel, Principal};
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;

/// Checks Basic credentials against the portal's logins (audited as `login` on channel `webdav`).
#[derive(Clone, Debug)]
pub struct PortalAuthenticator {
    portal: Portal,
}

impl PortalAuthenticator {
    /// An authenticator for `portal`.
    pub fn new(portal: Portal) -> Self {
        PortalAuthenticator { portal }
    }
}

#[async_trait]
impl Authenticator<Principal> for PortalAuthenticator {
    async fn authenticate_basic(
        &self,
        user: &str,
        pass: &str,
        remote: SocketAddr,
    ) -> Result<Principal, AuthError> {
        Ok(self
            .portal
            .authenticate_password_from(user, pass, Channel::WebDav, Some(remote))
            .await?)
    }
}

/// A WebDAV server builder for `portal` on `addr`: add `.tls(..)`, then `.bind()` and `.spawn()`.
///
/// ```no_run
/// # async fn f(portal: sdx_portal::Portal) -> sdx_portal::Result<()> {
/// let server = sdx_portal::webdav::mount::builder(&portal, "127.0.0.1:0".parse().unwrap())
///     .await?
///     .bind()
///     .await?
///     .spawn();
/// println!("WebDAV at http://{}/dav/", server.local_addr());
/// # Ok(()) }
/// ```
pub async fn builder(
    portal: &Portal,
    addr: SocketAddr,
) -> crate::Result<WebDavServerBuilder<Principal>> {
    let locks = LockManager::open(
        portal.store().database().clone(),
        portal.store().sealer().clone(),
    )
    .await?;
    Ok(WebDavServer::builder(
        addr,
        Box::new(PortalDavFs::new(portal.clone())),
        Arc::new(PortalAuthenticator::new(portal.clone())),
    )
    .locks(locks)
    .access_epoch({
        let p = portal.clone();
        Arc::new(move || p.access_epoch())
    }))
}

//! Starting and stopping the front ends of `sdx serve` around an open data dir.

use super::admin::AdminCtx;
use super::socket::AdminSocket;
use super::{Failure, HOST_KEY_NAME, Opened, SOCKET_NAME};
use crate::config::ServerConfig;
use crate::sftp::RunningSftpServer;
use crate::webdav::server::{RunningServer, ServerError, ServerLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A running `sdx serve`.
pub struct Running {
    /// The WebDAV URL (`https://ADDR/dav/`).
    pub webdav_url: String,
    /// The WebDAV listener's address.
    pub webdav_addr: SocketAddr,
    /// The SFTP listener's address and host key fingerprint, if SFTP runs.
    pub sftp: Option<(SocketAddr, String)>,
    /// The admin socket's path.
    pub socket: std::path::PathBuf,
    webdav: RunningServer,
    sftp_server: Option<RunningSftpServer>,
    admin: AdminSocket,
    notifier: crate::accounts::Notifier,
    grace: Duration,
    portal: crate::Portal,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("webdav_url", &self.webdav_url)
            .field("sftp", &self.sftp)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

fn in_use(what: &str, addr: SocketAddr, e: &std::io::Error, flag: &str) -> Failure {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        Failure(format!(
            "can't listen for {what} on {addr}: the port is in use (another sdx running?); choose another address with {flag}"
        ))
    } else {
        Failure(format!("can't listen for {what} on {addr}: {e}"))
    }
}

/// Replaces a port 0 in the WebDAV and SFTP listen addresses by a free port, so the links in
/// invitation mails (built from the listen address when `[accounts] public_url` is not set) and
/// the SFTP address shown after accepting name the port actually served. The port is found by
/// binding and releasing it: another process could take it in between (the start then fails
/// with "port in use").
pub fn resolve_free_ports(cfg: &mut ServerConfig) -> Result<(), Failure> {
    let free = |a: SocketAddr, what: &str| -> Result<SocketAddr, Failure> {
        std::net::TcpListener::bind(a)
            .and_then(|l| l.local_addr())
            .map_err(|e| Failure(format!("can't find a free port for {what} on {a}: {e}")))
    };
    if cfg.webdav.listen.port() == 0 && cfg.accounts.public_url.is_none() {
        cfg.webdav.listen = free(cfg.webdav.listen, "WebDAV")?;
    }
    if cfg.sftp.enabled && cfg.sftp.listen.port() == 0 && cfg.accounts.sftp_address.is_none() {
        cfg.sftp.listen = free(cfg.sftp.listen, "SFTP")?;
    }
    Ok(())
}

/// Starts WebDAV (with the account pages `/invite/`, `/reset/` on the same listener) and SFTP
/// (unless disabled) on the configured addresses, the notification mails and the admin socket.
pub async fn start(opened: Opened, cfg: &ServerConfig) -> Result<Running, Failure> {
    let data = opened.data.clone();
    let portal = opened.portal.clone();
    let tls = if cfg.webdav.insecure_http {
        None
    } else {
        let (cert, key) = match &cfg.webdav.tls {
            Some((c, k)) => (c.clone(), k.clone()),
            None => crate::tls::generate_self_signed(&data, &cfg.webdav.hostnames)
                .map_err(|e| Failure(e.to_string()))?,
        };
        Some(crate::tls::load_server_config(&cert, &key).map_err(|e| Failure(e.to_string()))?)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(cfg.limits.header_read_timeout_secs),
        max_connections: cfg.limits.max_connections,
        shutdown_grace: Duration::from_secs(cfg.limits.shutdown_grace_secs),
        ..ServerLimits::default()
    };
    let addr = cfg.webdav.listen;
    let webdav = crate::webdav::mount::builder(&portal, addr)
        .await?
        .tls(tls)
        .limits(limits)
        .fallback(crate::accounts::web::invite_pages(portal.clone()))
        .bind()
        .await
        .map_err(|e| match e {
            ServerError::Bind { addr, source } => {
                in_use("WebDAV", addr, &source, "--webdav or [webdav] listen")
            }
            ServerError::PlainHttpNotLoopback(a) => Failure(format!(
                "--insecure-http is allowed only on a loopback address, not {a}: use TLS (--tls-cert/--tls-key) instead"
            )),
            other => Failure(other.to_string()),
        })?;
    let webdav = webdav.spawn();
    let webdav_addr = webdav.local_addr();
    let mut sftp_server = None;
    if cfg.sftp.enabled {
        let hk = cfg
            .sftp
            .host_key
            .clone()
            .unwrap_or_else(|| data.join(HOST_KEY_NAME));
        let started = async {
            let host_key = crate::sftp::HostKey::load_or_generate(hk)
                .await
                .map_err(|e| Failure(e.to_string()))?;
            let addr = cfg.sftp.listen;
            // One thread per core, each connection on one of them (see `sftp::threads`).
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let threads = crate::sftp::ConnectionThreads::start(cores)
                .map_err(|e| Failure(format!("can't start the SFTP connection threads: {e}")))?;
            crate::sftp::mount::builder(&portal, host_key, addr)
                .connection_threads(Arc::new(threads))
                .max_connections(cfg.limits.sftp_max_connections)
                .inactivity_timeout(Duration::from_secs(cfg.limits.sftp_idle_timeout_secs))
                .start()
                .await
                .map_err(|e| match e {
                    crate::sftp::SftpError::Bind { addr, source } => {
                        in_use("SFTP", addr, &source, "--sftp or [sftp] listen")
                    }
                    other => Failure(other.to_string()),
                })
        }
        .await;
        match started {
            Ok(s) => sftp_server = Some(s),
            Err(e) => {
                let _ = webdav.shutdown().await;
                return Err(e);
            }
        }
    }
    let socket = data.join(SOCKET_NAME);
    let ctx = Arc::new(AdminCtx::new(opened, true));
    let admin = match super::socket::listen(ctx, &socket).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(s) = sftp_server {
                let _ = s.stop().await;
            }
            let _ = webdav.shutdown().await;
            return Err(e);
        }
    };
    let notifier = portal.start_notifications(crate::accounts::BatchConfig::default());
    Ok(Running {
        webdav_url: format!("{scheme}://{webdav_addr}/dav/"),
        webdav_addr,
        sftp: sftp_server
            .as_ref()
            .map(|s| (s.local_addr(), s.fingerprint().to_string())),
        socket,
        webdav,
        sftp_server,
        admin,
        notifier,
        grace: Duration::from_secs(cfg.limits.shutdown_grace_secs),
        portal,
    })
}

impl Running {
    /// Graceful stop: no new connections; WebDAV requests in flight may finish within the grace
    /// period (then they are aborted: an aborted upload leaves no document and the previous
    /// version intact); SFTP sessions are closed (open uploads are aborted the same way); the
    /// admin socket goes away; then pending notification mails are sent; last, everything
    /// committed is flushed to disk (batched durability).
    pub async fn shutdown(self) -> Result<(), Failure> {
        let notifier = self.notifier;
        let sftp = self.sftp_server;
        if let Some(s) = &sftp {
            s.shutdown();
        }
        let sftp_wait = async {
            match sftp {
                Some(s) => s.wait().await.map_err(|e| Failure(e.to_string())),
                None => Ok(()),
            }
        };
        let (w, s, ()) = tokio::join!(
            self.webdav.shutdown(),
            sftp_wait,
            self.admin.shutdown(self.grace)
        );
        // After the front ends: the last uploads' notifications are still batched.
        notifier.shutdown().await;
        // Batched durability: what was acknowledged must be on disk before the process exits.
        let synced = self.portal.sync().await;
        w.map_err(|e| Failure(e.to_string()))?;
        s?;
        synced.map_err(|e| Failure(format!("flushing the database at shutdown failed: {e}")))
    }
}

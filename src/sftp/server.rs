//! The SSH server: authentication, the `sftp` subsystem and nothing else.
//!
//! Build one with [`SftpServer::builder`], giving it a [`HostKey`], an [`SshAuthenticator`] (checks
//! passwords and public keys and yields a principal) and a [`SessionFactory`] (builds the SFTP
//! request handler for an authenticated principal). [`SftpServer::start`] binds and spawns the
//! accept loop on the current tokio runtime and returns a [`RunningSftpServer`] to stop it.
//!
//! What the server enforces, independent of the handler:
//!
//! - algorithms: key exchange `mlkem768x25519-sha256` and `curve25519-sha256` only (with strict
//!   key exchange against Terrapin); ciphers chacha20-poly1305, aes256-gcm, aes256/192/128-ctr;
//!   MACs hmac-sha2-512/256 (ETM preferred); host key ed25519; no SHA-1, no CBC, no compression;
//! - authentication: `password` and `publickey` only. A wrong password keeps both methods on offer
//!   (russh would otherwise drop `password` for the rest of the connection); after
//!   `max_auth_attempts` failed password or signed public-key attempts the connection is closed
//!   (the client's `none` probe and refused key offers don't count); a client that has not authenticated
//!   within `login_grace_time` is disconnected. `ssh-rsa` (SHA-1) signatures are refused.
//! - channels: session channels only, at most `max_channels_per_connection` at a time; only the
//!   `sftp` subsystem. shell, exec, pty, env, X11, agent forwarding, TCP/IP and stream-local
//!   forwarding are all refused;
//! - idle connections are dropped after `inactivity_timeout`; at most `max_connections` connections
//!   are served at once (more are closed right after accept);
//! - every channel runs over the [`transport`](super::transport) adapter (deadlock and framing
//!   fixes).
//!
//! Each connection logs inside a `tracing` span `ssh` with the client's address and, once known,
//! the user name.

use super::threads::ConnectionThreads;
use super::transport::{ChannelTransport, SftpSession, TransportConfig};
use super::{HostKey, SftpError};
use crate::model::Principal;
use async_trait::async_trait;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PublicKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Disconnect, MethodKind, MethodSet, Preferred, SshId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

/// Most channels one connection may open over its lifetime (russh keeps a little state for every
/// channel the server closed until the connection ends).
const MAX_CHANNELS_PER_CONNECTION_LIFETIME: u32 = 1024;

/// How long a connection may take to close after it was told to (shutdown, login grace).
const DISCONNECT_GRACE: Duration = Duration::from_secs(10);
/// Read buffer in front of each connection's socket (see `connection`).
const SOCKET_READ_BUFFER: usize = 8 << 10;

// ---------------------------------------------------------------------------------------------
// Plug-in points

/// Why an authentication attempt failed. Every variant is a rejection for the client; they differ
/// only in what the server logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user, wrong password, unregistered key, disabled login.
    #[error("authentication failed")]
    Rejected,
    /// Too many failed attempts for this login.
    #[error("locked out; retry in {retry_after_secs} s")]
    LockedOut {
        /// Seconds until another attempt is accepted.
        retry_after_secs: u64,
    },
    /// The check itself failed (database error…). The client is rejected.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::Error> for AuthError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::AuthenticationFailed => AuthError::Rejected,
            crate::Error::LockedOut { retry_after_secs } => {
                AuthError::LockedOut { retry_after_secs }
            }
            other => AuthError::Unavailable(other.to_string()),
        }
    }
}

/// Checks SSH credentials and yields the principal that will own the session.
///
/// Calls run inline in the connection's SSH loop (one connection waits, the others don't); slow
/// checks such as argon2 should run on the blocking pool. Counting failures toward a lockout is
/// the implementation's job.
#[async_trait]
pub trait SshAuthenticator<P = Principal>: Send + Sync + 'static {
    /// Check a password.
    async fn password(
        &self,
        user: &str,
        password: &str,
        remote: SocketAddr,
    ) -> Result<P, AuthError>;

    /// Accept a public key whose possession the client has just proven (the signature is
    /// verified).
    async fn public_key(
        &self,
        user: &str,
        key: &PublicKey,
        remote: SocketAddr,
    ) -> Result<P, AuthError>;

    /// Whether `key` could authenticate `user` at all, asked before the client signs with it.
    /// Clients offer every key they have, so a `false` here should *not* count as a failed attempt.
    /// The default says yes and leaves the decision to [`SshAuthenticator::public_key`].
    async fn public_key_acceptable(&self, user: &str, key: &PublicKey, remote: SocketAddr) -> bool {
        let _ = (user, key, remote);
        true
    }
}

/// Who an SFTP session is for, handed to the [`SessionFactory`].
#[derive(Clone, Debug)]
pub struct SessionContext<P = Principal> {
    /// The authenticated principal.
    pub principal: P,
    /// The SSH user name the client logged in with.
    pub user: String,
    /// The client's address.
    pub remote: SocketAddr,
    /// The connection's tracing span: instrument the handler's work with it.
    pub span: Span,
    /// The largest SFTP packet the session's transport accepts from the client
    /// ([`TransportConfig::max_packet_len`](super::TransportConfig::max_packet_len)): what a
    /// handler may advertise in `limits@openssh.com`.
    pub max_packet_len: u32,
}

/// The factory refused to start a session; the client's subsystem request fails.
#[derive(Debug, thiserror::Error)]
#[error("SFTP session refused: {0}")]
pub struct SessionRefused(pub String);

/// Builds the SFTP request handler for one session (one `sftp` subsystem on one channel).
///
/// Called inline in the connection's SSH loop: keep it cheap (clone handles, no I/O).
pub trait SessionFactory<P = Principal>: Send + Sync + 'static {
    /// A new session for `ctx`: usually `Ok(SftpSession::new(MyHandler { .. }))`.
    fn new_session(&self, ctx: &SessionContext<P>) -> Result<SftpSession, SessionRefused>;
}

// ---------------------------------------------------------------------------------------------
// Builder

struct Limits {
    inactivity_timeout: Duration,
    login_grace_time: Duration,
    auth_rejection_time: Duration,
    max_auth_attempts: usize,
    max_channels: usize,
    max_connections: usize,
}

/// Configures an [`SftpServer`].
pub struct SftpServerBuilder<P = Principal> {
    bind: SocketAddr,
    host_key: HostKey,
    authenticator: Arc<dyn SshAuthenticator<P>>,
    factory: Arc<dyn SessionFactory<P>>,
    limits: Limits,
    transport: TransportConfig,
    shutdown: CancellationToken,
    threads: Option<Arc<ConnectionThreads>>,
}

impl<P> fmt::Debug for SftpServerBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpServerBuilder")
            .field("bind", &self.bind)
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

impl<P: Clone + Send + Sync + 'static> SftpServerBuilder<P> {
    /// The address to listen on. Default `127.0.0.1:2222`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }
    /// Close connections that sent nothing for this long. Default 10 minutes.
    pub fn inactivity_timeout(mut self, d: Duration) -> Self {
        self.limits.inactivity_timeout = d;
        self
    }
    /// Disconnect clients that have not authenticated within this time. Default 2 minutes.
    pub fn login_grace_time(mut self, d: Duration) -> Self {
        self.limits.login_grace_time = d;
        self
    }
    /// Minimum time a rejected authentication attempt takes (hides which check failed).
    /// Default 1 second; the client's first `none` probe is answered at once.
    pub fn auth_rejection_time(mut self, d: Duration) -> Self {
        self.limits.auth_rejection_time = d;
        self
    }
    /// Failed authentication attempts allowed per connection before it is closed. Default 6.
    pub fn max_auth_attempts(mut self, n: usize) -> Self {
        self.limits.max_auth_attempts = n;
        self
    }
    /// Channels (SFTP sessions) one connection may have open at once. Default 10.
    pub fn max_channels_per_connection(mut self, n: usize) -> Self {
        self.limits.max_channels = n;
        self
    }
    /// Connections served at once; further connections are closed at once. Default 256.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }
    /// Tuning of the channel adapter.
    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }
    /// Stop the server when this token is cancelled (in addition to
    /// [`RunningSftpServer::shutdown`]).
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Run each connection, with every task it starts, on one of these threads (round robin)
    /// instead of the current runtime's workers: a session's many small round trips then never
    /// wake a task on another thread (see [`ConnectionThreads`]). Default: the current runtime.
    pub fn connection_threads(mut self, threads: Arc<ConnectionThreads>) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Check the configuration.
    pub fn build(self) -> Result<SftpServer<P>, SftpError> {
        self.transport.validate()?;
        let l = &self.limits;
        if l.max_auth_attempts == 0 || l.max_auth_attempts > 100 {
            return Err(SftpError::Config(format!(
                "max_auth_attempts must be 1..=100, not {}",
                l.max_auth_attempts
            )));
        }
        if l.max_channels == 0 || l.max_channels > 1000 {
            return Err(SftpError::Config(format!(
                "max_channels_per_connection must be 1..=1000, not {}",
                l.max_channels
            )));
        }
        if l.max_connections == 0 || l.max_connections > Semaphore::MAX_PERMITS {
            return Err(SftpError::Config(format!(
                "max_connections must be at least 1, not {}",
                l.max_connections
            )));
        }
        for (name, d) in [
            ("inactivity_timeout", l.inactivity_timeout),
            ("login_grace_time", l.login_grace_time),
        ] {
            if d.is_zero() {
                return Err(SftpError::Config(format!("{name} must not be zero")));
            }
        }
        let config = russh_config(&self.host_key, &self.limits);
        Ok(SftpServer {
            bind: self.bind,
            fingerprint: self.host_key.fingerprint(),
            shared: Arc::new(Shared {
                config: Arc::new(config),
                authenticator: self.authenticator,
                factory: self.factory,
                transport: self.transport,
                login_grace_time: self.limits.login_grace_time,
                max_auth_attempts: self.limits.max_auth_attempts,
                max_channels: self.limits.max_channels,
            }),
            max_connections: self.limits.max_connections,
            shutdown: self.shutdown,
            threads: self.threads,
        })
    }

    /// [`build`](Self::build) and [`start`](SftpServer::start) in one go.
    pub async fn start(self) -> Result<RunningSftpServer, SftpError> {
        self.build()?.start().await
    }
}

/// The algorithms offered: modern only (see the module documentation).
fn preferred() -> Preferred {
    const KEX: &[russh::kex::Name] = &[
        russh::kex::MLKEM768X25519_SHA256,
        russh::kex::CURVE25519,
        russh::kex::CURVE25519_PRE_RFC_8731,
        russh::kex::EXTENSION_SUPPORT_AS_SERVER,
        russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ];
    const KEYS: &[Algorithm] = &[
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ];
    const CIPHERS: &[russh::cipher::Name] = &[
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_256_GCM,
        russh::cipher::AES_256_CTR,
        russh::cipher::AES_192_CTR,
        russh::cipher::AES_128_CTR,
    ];
    const MACS: &[russh::mac::Name] = &[
        russh::mac::HMAC_SHA512_ETM,
        russh::mac::HMAC_SHA256_ETM,
        russh::mac::HMAC_SHA512,
        russh::mac::HMAC_SHA256,
    ];
    const COMPRESSION: &[russh::compression::Name] = &[russh::compression::NONE];
    Preferred {
        kex: Cow::Borrowed(KEX),
        key: Cow::Borrowed(KEYS),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(COMPRESSION),
    }
}

fn russh_config(host_key: &HostKey, l: &Limits) -> russh::server::Config {
    russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed(concat!(
            "SSH-2.0-sdx-portal_",
            env!("CARGO_PKG_VERSION")
        ))),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::PublicKey][..]),
        auth_rejection_time: l.auth_rejection_time,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key.private_key().clone()],
        preferred: preferred(),
        // The cap on failed attempts is enforced by the connection handler, which counts only real
        // password and signed public-key attempts. russh's own count also includes the `none`
        // probe and every refused key offer; keep it as a generous backstop.
        max_auth_attempts: l.max_auth_attempts + 20,
        inactivity_timeout: Some(l.inactivity_timeout),
        keepalive_interval: None,
        nodelay: true,
        // Messages russh queues per channel for the transport's task (default 100). The task
        // drains them at once unless its byte budget for uploads is full; then this queue is what
        // an upload holds on top of that budget: 32 SSH packets (1 MiB of OpenSSH's 32 KiB
        // packets) instead of 100 cut the 8 x 64 MiB concurrent SFTP upload's peak RSS by
        // ~9 MiB at the same speed (BENCHMARKS.md, "SFTP concurrent-upload RSS").
        channel_buffer_size: 32,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Server

struct Shared<P> {
    config: Arc<russh::server::Config>,
    authenticator: Arc<dyn SshAuthenticator<P>>,
    factory: Arc<dyn SessionFactory<P>>,
    transport: TransportConfig,
    login_grace_time: Duration,
    max_auth_attempts: usize,
    max_channels: usize,
}

/// A configured SFTP server, not yet listening.
pub struct SftpServer<P = Principal> {
    bind: SocketAddr,
    fingerprint: String,
    shared: Arc<Shared<P>>,
    max_connections: usize,
    shutdown: CancellationToken,
    threads: Option<Arc<ConnectionThreads>>,
}

impl<P> fmt::Debug for SftpServer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpServer")
            .field("bind", &self.bind)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl<P: Clone + Send + Sync + 'static> SftpServer<P> {
    /// Start configuring a server.
    pub fn builder(
        host_key: HostKey,
        authenticator: Arc<dyn SshAuthenticator<P>>,
        factory: Arc<dyn SessionFactory<P>>,
    ) -> SftpServerBuilder<P> {
        SftpServerBuilder {
            bind: SocketAddr::from(([127, 0, 0, 1], 2222)),
            host_key,
            authenticator,
            factory,
            limits: Limits {
                inactivity_timeout: Duration::from_secs(600),
                login_grace_time: Duration::from_secs(120),
                auth_rejection_time: Duration::from_secs(1),
                max_auth_attempts: 6,
                max_channels: 10,
                max_connections: 256,
            },
            transport: TransportConfig::default(),
            shutdown: CancellationToken::new(),
            threads: None,
        }
    }

    /// Bind the configured address and start serving on the current tokio runtime.
    pub async fn start(self) -> Result<RunningSftpServer, SftpError> {
        let addr = self.bind;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SftpError::Bind { addr, source })?;
        self.serve(listener)
    }

    /// Serve on an already bound listener (the configured bind address is ignored).
    pub fn serve(self, listener: TcpListener) -> Result<RunningSftpServer, SftpError> {
        let local_addr = listener.local_addr().map_err(|source| SftpError::Bind {
            addr: self.bind,
            source,
        })?;
        let token = self.shutdown.clone();
        info!(addr = %local_addr, fingerprint = %self.fingerprint, "SFTP server listening");
        let task = tokio::spawn(accept_loop(
            listener,
            self.shared,
            self.max_connections,
            self.threads,
            token.clone(),
        ));
        Ok(RunningSftpServer {
            local_addr,
            fingerprint: self.fingerprint,
            token,
            task,
        })
    }
}

/// A listening SFTP server. Dropping it does not stop it: call [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct RunningSftpServer {
    local_addr: SocketAddr,
    fingerprint: String,
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningSftpServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// The host key's fingerprint (`SHA256:…`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// The token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }
    /// Stop accepting, close every session and disconnect every client. Returns at once; use
    /// [`wait`](Self::wait) to wait for the connections to end.
    pub fn shutdown(&self) {
        self.token.cancel();
    }
    /// Wait until the server has stopped (after [`shutdown`](Self::shutdown) or a cancelled
    /// token) and every connection has ended.
    pub async fn wait(self) -> Result<(), SftpError> {
        self.task
            .await
            .map_err(|e| SftpError::Task(format!("SFTP accept loop: {e}")))
    }
    /// [`shutdown`](Self::shutdown), then [`wait`](Self::wait).
    pub async fn stop(self) -> Result<(), SftpError> {
        self.shutdown();
        self.wait().await
    }
}

async fn accept_loop<P: Clone + Send + Sync + 'static>(
    listener: TcpListener,
    shared: Arc<Shared<P>>,
    max_connections: usize,
    threads: Option<Arc<ConnectionThreads>>,
    token: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    if connections.len() >= max_connections {
                        warn!(%remote, max_connections, "too many connections; closing the new one");
                        drop(socket);
                        continue;
                    }
                    let span = info_span!("ssh", %remote, user = field::Empty);
                    let (shared, token) = (shared.clone(), token.child_token());
                    let Some(threads) = &threads else {
                        connections.spawn(
                            connection(socket, remote, shared, token, span.clone()).instrument(span),
                        );
                        continue;
                    };
                    // A tokio socket belongs to the runtime that made it: hand the connection's
                    // thread the bare socket and let it register it with its own runtime.
                    let socket = match socket.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(%remote, error = %e, "can't move the connection to its thread");
                            continue;
                        }
                    };
                    let run = async move {
                        match TcpStream::from_std(socket) {
                            Ok(socket) => {
                                connection(socket, remote, shared, token, Span::current()).await;
                            }
                            Err(e) => warn!(error = %e, "can't register the connection's socket"),
                        }
                    };
                    connections.spawn_on(run.instrument(span), &threads.next_handle());
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    info!(
        connections = connections.len(),
        "SFTP server stopping; waiting for connections to close"
    );
    while connections.join_next().await.is_some() {}
    info!("SFTP server stopped");
}

async fn connection<P: Clone + Send + Sync + 'static>(
    socket: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared<P>>,
    token: CancellationToken,
    span: Span,
) {
    if let Err(e) = socket.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let authenticated = Arc::new(AtomicBool::new(false));
    let too_many_failures = Arc::new(Notify::new());
    let handler = ConnectionHandler {
        failures: 0,
        too_many_failures: too_many_failures.clone(),
        channel_slots: Arc::new(Semaphore::new(shared.max_channels)),
        channels_opened: 0,
        shared: shared.clone(),
        remote,
        span,
        token: token.clone(),
        authenticated: authenticated.clone(),
        principal: None,
        pending: HashMap::new(),
    };
    debug!("connection accepted");
    let grace = tokio::time::sleep(shared.login_grace_time);
    tokio::pin!(grace);
    let started = tokio::select! {
        s = russh::server::run_stream(
            shared.config.clone(),
            // russh reads each packet in two reads (length, then the rest) straight from the
            // socket; a small buffer lets one recv serve several small packets (an SFTP
            // client's stat/open/close requests) while a bulk packet's body, larger than the
            // buffer, is still read directly. Writes pass through unbuffered.
            tokio::io::BufReader::with_capacity(SOCKET_READ_BUFFER, socket),
            handler,
        ) => s,
        () = &mut grace => {
            info!("no SSH handshake within the login grace time; closing");
            return;
        }
        () = token.cancelled() => return,
    };
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "SSH handshake failed");
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    let disconnect = |reason: Disconnect, text: &'static str| {
        let handle = handle.clone();
        async move {
            let _ = handle.disconnect(reason, text.into(), "en".into()).await;
        }
    };
    let mut grace_checked = false;
    let ended = loop {
        tokio::select! {
            r = &mut session => break Some(r),
            () = &mut grace, if !grace_checked => {
                grace_checked = true;
                if !authenticated.load(Ordering::Acquire) {
                    info!("not authenticated within the login grace time; disconnecting");
                    disconnect(Disconnect::ByApplication, "login grace time exceeded").await;
                    break None;
                }
            }
            () = too_many_failures.notified() => {
                info!("too many failed authentication attempts; disconnecting");
                disconnect(
                    Disconnect::NoMoreAuthMethodsAvailable,
                    "too many authentication failures",
                )
                .await;
                break None;
            }
            () = token.cancelled() => {
                disconnect(Disconnect::ByApplication, "server shutting down").await;
                break None;
            }
        }
    };
    let result = match ended {
        Some(r) => Some(r),
        None => tokio::time::timeout(DISCONNECT_GRACE, &mut session)
            .await
            .ok(),
    };
    match result {
        Some(Ok(())) => info!("connection closed"),
        Some(Err(e)) => info!(error = %e, "connection ended"),
        None => warn!("connection did not close after disconnect; abandoning it"),
    }
    // Close whatever sessions may still run on this connection.
    token.cancel();
}

// ---------------------------------------------------------------------------------------------
// The per-connection russh handler

struct ConnectionHandler<P> {
    shared: Arc<Shared<P>>,
    remote: SocketAddr,
    span: Span,
    /// Cancelled when the connection ends; parent of every channel's token.
    token: CancellationToken,
    authenticated: Arc<AtomicBool>,
    /// Failed password and signed public-key attempts so far.
    failures: usize,
    /// Notified when `failures` reaches the cap; the connection task then disconnects.
    too_many_failures: Arc<Notify>,
    principal: Option<(String, P)>,
    /// Channels opened but not (yet) running an SFTP session.
    pending: HashMap<ChannelId, ChannelTransport>,
    /// One permit per live channel.
    channel_slots: Arc<Semaphore>,
    channels_opened: u32,
}

impl<P: Clone + Send + Sync + 'static> ConnectionHandler<P> {
    fn retry_methods() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(
                &[MethodKind::Password, MethodKind::PublicKey][..],
            )),
            partial_success: false,
        }
    }

    fn outcome(&mut self, user: &str, method: &'static str, r: Result<P, AuthError>) -> Auth {
        match r {
            Ok(p) => {
                self.span.record("user", user);
                info!(parent: &self.span, method, "authenticated");
                self.principal = Some((user.to_owned(), p));
                self.authenticated.store(true, Ordering::Release);
                Auth::Accept
            }
            Err(e) => {
                self.failures += 1;
                info!(parent: &self.span, user, method, reason = %e, failures = self.failures, "authentication failed");
                if self.failures >= self.shared.max_auth_attempts {
                    self.too_many_failures.notify_one();
                }
                Self::retry_methods()
            }
        }
    }

    /// True once the cap on failed attempts is reached: further attempts are refused unchecked.
    fn exhausted(&self) -> bool {
        self.failures >= self.shared.max_auth_attempts
    }

    fn take_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        if self.channels_opened >= MAX_CHANNELS_PER_CONNECTION_LIFETIME {
            return None;
        }
        let slot = self.channel_slots.clone().try_acquire_owned().ok()?;
        self.channels_opened += 1;
        Some(slot)
    }

    fn refuse(
        &self,
        what: &'static str,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        info!(parent: &self.span, ?channel, request = what, "refused: only the sftp subsystem is offered");
        session.channel_failure(channel)
    }
}

impl<P: Clone + Send + Sync + 'static> russh::server::Handler for ConnectionHandler<P> {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.exhausted() {
            return Ok(Auth::reject());
        }
        let r = self
            .shared
            .authenticator
            .password(user, password, self.remote)
            .instrument(self.span.clone())
            .await;
        Ok(self.outcome(user, "password", r))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.exhausted() {
            return Ok(Auth::reject());
        }
        if matches!(offer.algorithm, Algorithm::Rsa { hash: None }) {
            debug!(parent: &self.span, user, "ssh-rsa (SHA-1) signature refused");
            return Ok(Self::retry_methods());
        }
        let ok = self
            .shared
            .authenticator
            .public_key_acceptable(user, offer.public_key, self.remote)
            .instrument(self.span.clone())
            .await;
        Ok(if ok {
            Auth::Accept
        } else {
            Self::retry_methods()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.exhausted() {
            return Ok(Auth::reject());
        }
        if matches!(key.algorithm, Algorithm::Rsa { hash: None }) {
            return Ok(Self::retry_methods());
        }
        let r = self
            .shared
            .authenticator
            .public_key(user, key.public_key, self.remote)
            .instrument(self.span.clone())
            .await;
        Ok(self.outcome(user, "publickey", r))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.principal.is_none() {
            // russh only opens channels after authentication; be explicit anyway.
            return Ok(());
        }
        // Forget channels whose transport has ended (closed by us or by the client).
        self.pending.retain(|_, t| !t.is_finished());
        let Some(slot) = self.take_slot() else {
            warn!(parent: &self.span, max = self.shared.max_channels, "too many channels; refusing a new one");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        };
        let id = channel.id();
        let transport = ChannelTransport::spawn(
            channel,
            &self.shared.transport,
            self.token.child_token(),
            self.span.clone(),
            Some(slot),
        );
        self.pending.insert(id, transport);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name != "sftp" {
            info!(parent: &self.span, ?channel, subsystem = name, "refused: unknown subsystem");
            return session.channel_failure(channel);
        }
        let (Some((user, principal)), Some(transport)) =
            (self.principal.as_ref(), self.pending.remove(&channel))
        else {
            info!(parent: &self.span, ?channel, "refused: sftp on a channel that is not waiting for it");
            return session.channel_failure(channel);
        };
        let ctx = SessionContext {
            principal: principal.clone(),
            user: user.clone(),
            remote: self.remote,
            span: self.span.clone(),
            max_packet_len: self.shared.transport.max_packet_len,
        };
        match self.shared.factory.new_session(&ctx) {
            Ok(sftp) => {
                if transport.start(sftp) {
                    debug!(parent: &self.span, ?channel, "sftp subsystem started");
                    session.channel_success(channel)
                } else {
                    session.channel_failure(channel)
                }
            }
            Err(e) => {
                info!(parent: &self.span, ?channel, reason = %e, "sftp session refused");
                // Dropping the transport closes nothing by itself; close the channel.
                drop(transport);
                session.channel_failure(channel)?;
                session.close(channel)
            }
        }
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pending.remove(&channel);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("shell", channel, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("exec", channel, session)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("pty", channel, session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("x11", channel, session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Clients send LANG and friends routinely; refuse quietly.
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        debug!(parent: &self.span, ?channel, "agent forwarding refused");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        info!(parent: &self.span, address, port = *port, "remote port forwarding refused");
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        info!(parent: &self.span, socket_path, "stream-local forwarding refused");
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!(parent: &self.span, host_to_connect, port_to_connect, "local port forwarding refused");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!(parent: &self.span, socket_path, "stream-local forwarding refused");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}

//! The HTTP(S) listener of the WebDAV front end, and the request service a host can mount inside
//! its own hyper/axum server.
//!
//! Request rules ([`DavService::handle`]):
//! - `OPTIONS` on `*`, `/` or anything under `/dav` answers `DAV: 1,2` and
//!   `MS-Author-Via: DAV` **without** authentication (Windows' WebDAV redirector gives up
//!   otherwise). No filesystem work happens for it.
//! - Any other request under `/dav` needs HTTP Basic credentials, checked before any filesystem
//!   work: 401 with `WWW-Authenticate: Basic realm="sdx"` when missing or wrong, 429 with
//!   `Retry-After` when locked out, 503 if the check can't run. Successes are cached briefly
//!   ([`AuthCache`]).
//! - Authenticated requests go to dav-server with the principal's lock system
//!   ([`PortalLockSystem::for_principal`]) and a [`DavCtx`] (principal + client address) that
//!   reaches every filesystem call, for the policy check and the audit entry.
//! - Other paths go to the fallback service if one is set (the invitation pages), else 404.
//!
//! The listener ([`WebDavServer`]): HTTPS with rustls, HTTP/2 or HTTP/1.1 as chosen by ALPN (hyper's
//! own http1/http2 builders rather than hyper-util's auto builder, which can't cap the HTTP/1 header
//! size except through the read-buffer size, and that also throttles uploads), or plain HTTP/1.1
//! on a loopback address only. HTTP/1 has a header-read timeout (hyper's timer is installed,
//! without which the timeout is silently off; it also closes idle keep-alive connections) and
//! bounded header size and count; HTTP/2 a bounded header list; TLS handshakes have a deadline;
//! concurrent connections are capped. Shutdown is graceful: stop accepting, let in-flight requests
//! finish, then abort whatever is left after [`ServerLimits::shutdown_grace`].

use super::auth::{AuthCache, AuthError, Authenticator, parse_basic};
use super::lock_system::PortalLockSystem;
use crate::locks::LockManager;
use bytes::{Buf, Bytes};
use dav_server::body::Body;
use dav_server::fs::GuardedFileSystem;
use dav_server::{DavConfig, DavHandler, DavMethod, DavMethodSet};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The URL prefix the WebDAV tree is served under.
pub const DAV_PREFIX: &str = "/dav";

/// The Basic realm.
pub const REALM: &str = "sdx";

/// The per-request value dav-server hands to every filesystem call.
#[derive(Clone, Debug)]
pub struct DavCtx<P> {
    /// Who is asking (as returned by the [`Authenticator`]).
    pub principal: P,
    /// The client's address (for audit entries).
    pub remote: SocketAddr,
}

/// Error type of request bodies passed to the fallback.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the fallback receives.
pub type FallbackBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// The service for paths outside `/dav` (e.g. the invitation pages).
pub type Fallback = Arc<dyn Fn(Request<FallbackBody>, SocketAddr) -> ResponseFuture + Send + Sync>;

/// What the listener can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Plain HTTP was asked for on an address other people can reach.
    #[error(
        "refusing plain HTTP on {0}: without TLS the server may only listen on a loopback address (127.0.0.1 or ::1); configure a certificate and key"
    )]
    PlainHttpNotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("WebDAV listener I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ServerError> for crate::Error {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Io(io) => crate::Error::Io(io),
            other => crate::Error::Invalid(other.to_string()),
        }
    }
}

/// Resource bounds of the listener.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Largest request head (HTTP/1: request line plus headers; HTTP/2: header list), in bytes.
    pub max_header_bytes: usize,
    /// Most request headers (HTTP/1).
    pub max_headers: usize,
    /// Most concurrent connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
    /// How long in-flight requests may run after shutdown was asked for.
    pub shutdown_grace: Duration,
    /// How long a successful login is cached.
    pub auth_cache_ttl: Duration,
    /// Most cached logins.
    pub auth_cache_capacity: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 1024,
            max_h2_streams: 64,
            shutdown_grace: Duration::from_secs(10),
            auth_cache_ttl: Duration::from_secs(60),
            auth_cache_capacity: 4096,
        }
    }
}

struct ServiceInner<P: Clone + Send + Sync + 'static> {
    config: DavConfig<DavCtx<P>>,
    locks: Option<LockManager>,
    auth: Arc<dyn Authenticator<P>>,
    cache: Arc<AuthCache<P>>,
    fallback: Option<Fallback>,
    requests: AtomicU64,
}

/// The request handler: authentication, the OPTIONS rule, dav-server and the fallback. Cheap to
/// clone; usable from any hyper-based server:
///
/// ```ignore
/// let svc = server.service();          // or WebDavServer::builder(..).build_service()
/// // per accepted connection from `remote`:
/// let hyper_svc = hyper::service::service_fn(move |req| {
///     let svc = svc.clone();
///     async move { Ok::<_, std::convert::Infallible>(svc.handle(req, remote).await) }
/// });
/// // or simply `svc.hyper_service(remote)`; in axum, call `svc.handle(req, remote)` from a
/// // handler that has the `ConnectInfo<SocketAddr>`.
/// ```
pub struct DavService<P: Clone + Send + Sync + 'static> {
    inner: Arc<ServiceInner<P>>,
}

impl<P: Clone + Send + Sync + 'static> Clone for DavService<P> {
    fn clone(&self) -> Self {
        DavService {
            inner: self.inner.clone(),
        }
    }
}

fn is_dav_path(path: &str) -> bool {
    path == DAV_PREFIX
        || path
            .strip_prefix(DAV_PREFIX)
            .is_some_and(|r| r.starts_with('/'))
}

/// Whether a `Destination` header (absolute URL or path) names something under [`DAV_PREFIX`],
/// after percent-decoding and resolving `.`/`..` as dav-server will. dav-server 0.11 checks the
/// prefix with a plain `starts_with`, so `/davx` passes its check and then panics (slice out of
/// range in `DavPath`); such destinations are refused here before dav-server sees them.
fn destination_in_prefix(value: &HeaderValue) -> bool {
    let Ok(s) = value.to_str() else {
        return false;
    };
    let path = if s.starts_with('/') {
        s.split(['?', '#']).next().unwrap_or_default().to_string()
    } else {
        match s.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_some() => u.path().to_string(),
            _ => return false,
        }
    };
    let mut decoded = Vec::with_capacity(path.len());
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                decoded.push(v as u8);
                i += 3;
            }
            (c, _, _) => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|c| *c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() {
                    return false;
                }
            }
            s => segs.push(s),
        }
    }
    segs.first()
        .is_some_and(|first| *first == &DAV_PREFIX.as_bytes()[1..])
}

/// Largest request body dav-server reads for methods other than PUT/PATCH (it answers 413 above).
const MAX_XML_BODY: usize = 65536;

/// Deepest element nesting accepted in a request's XML body. dav-server parses bodies with a
/// recursive parser: ~5,000 nested elements (15 KB) overflowed a tokio worker's stack and aborted
/// the whole server. Real clients nest a handful of levels.
pub const MAX_XML_DEPTH: usize = 64;

/// The element nesting depth of an XML document, approximately (comments, processing
/// instructions and declarations are skipped; `>` inside attribute values may shift it, which only
/// matters for pathological input). Stops counting past `limit`.
fn xml_depth(body: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut i = 0;
    while let Some(off) = body
        .get(i..)
        .and_then(|r| r.iter().position(|b| *b == b'<'))
    {
        let start = i + off;
        let end = body
            .get(start..)
            .and_then(|r| r.iter().position(|b| *b == b'>'))
            .map_or(body.len(), |e| start + e);
        let tag = body.get(start + 1..end).unwrap_or_default();
        match tag.first() {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(b'?') | Some(b'!') | None => {}
            Some(_) if tag.ends_with(b"/") => {}
            Some(_) => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
        }
        i = end + 1;
    }
    max
}

fn text_response(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let msg = msg.into();
    let len = msg.len();
    let mut r = Response::new(Body::from(msg));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unauthorized(msg: &str) -> Response<Body> {
    let mut r = text_response(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sdx\", charset=\"UTF-8\""),
    );
    r
}

const ALLOW: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK";
const ALLOW_NO_LOCKS: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE";

impl<P> DavService<P>
where
    P: Clone + Send + Sync + Display + 'static,
{
    /// The login cache: call [`AuthCache::invalidate_user`] / [`AuthCache::bump_generation`] on
    /// credential or access changes.
    pub fn auth_cache(&self) -> &Arc<AuthCache<P>> {
        &self.inner.cache
    }

    fn options_response(&self) -> Response<Body> {
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        let (dav, allow) = if self.inner.locks.is_some() {
            ("1,2", ALLOW)
        } else {
            ("1", ALLOW_NO_LOCKS)
        };
        h.insert("DAV", HeaderValue::from_static(dav));
        h.insert("MS-Author-Via", HeaderValue::from_static("DAV"));
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        r
    }

    /// Authenticates the request: cache first, then the authenticator.
    async fn authenticate<B>(
        &self,
        req: &Request<B>,
        remote: SocketAddr,
    ) -> Result<P, Response<Body>> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(unauthorized("Please sign in with your portal login.\n"));
        };
        let Some((user, pass)) = parse_basic(value) else {
            return Err(unauthorized(
                "The Authorization header is not valid HTTP Basic authentication.\n",
            ));
        };
        let cache = &self.inner.cache;
        if let Some(p) = cache.get(&user, &pass) {
            return Ok(p);
        }
        let ticket = cache.ticket();
        match self
            .inner
            .auth
            .authenticate_basic(&user, &pass, remote)
            .await
        {
            Ok(p) => {
                cache.insert(ticket, &user, &pass, p.clone());
                Ok(p)
            }
            Err(AuthError::InvalidCredentials) => {
                tracing::info!("WebDAV login failed");
                Err(unauthorized("Wrong user name or password.\n"))
            }
            Err(AuthError::LockedOut { retry_after_secs }) => {
                let mut r = text_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Too many failed sign-in attempts. Try again in {retry_after_secs} seconds.\n"
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                Err(r)
            }
            Err(e) => {
                tracing::warn!(error = %e, "WebDAV authentication unavailable");
                Err(text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in is temporarily unavailable. Please try again later.\n",
                ))
            }
        }
    }

    /// A hyper service for one connection from `remote` (what the built-in listener uses).
    pub fn hyper_service(
        &self,
        remote: SocketAddr,
    ) -> impl hyper::service::Service<
        Request<hyper::body::Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let service = self.clone();
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.handle(req, remote).await) }
        })
    }

    /// Handles one request from `remote`. Never fails: errors become responses.
    pub async fn handle<B>(&self, req: Request<B>, remote: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let n = self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("dav_request", id = n, method = %req.method());
        let started = Instant::now();
        let resp = self
            .handle_inner(req, remote)
            .instrument(span.clone())
            .await;
        let status = resp.status();
        span.in_scope(|| {
            let ms = started.elapsed().as_millis() as u64;
            if status.is_server_error() {
                tracing::warn!(status = status.as_u16(), ms, "request failed");
            } else {
                tracing::debug!(status = status.as_u16(), ms, "request done");
            }
        });
        resp
    }

    async fn handle_inner<B>(&self, req: Request<B>, remote: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        let dav = is_dav_path(path);
        if req.method() == Method::OPTIONS && (dav || path == "/" || path == "*") {
            return self.options_response();
        }
        if !dav {
            return match &self.inner.fallback {
                Some(f) => {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .map_frame(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(|e| Box::new(e) as BoxError)
                        .boxed_unsync();
                    f(Request::from_parts(parts, body), remote).await
                }
                None => text_response(StatusCode::NOT_FOUND, "Not found.\n"),
            };
        }
        let principal = match self.authenticate(&req, remote).await {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        if let Some(dest) = req.headers().get("destination")
            && !destination_in_prefix(dest)
        {
            return text_response(
                StatusCode::BAD_GATEWAY,
                format!("The Destination must be a URL under {DAV_PREFIX}/ on this server.\n"),
            );
        }
        let who = principal.to_string();
        let mut config = self.inner.config.clone();
        if let Some(mgr) = &self.inner.locks {
            config = config.locksystem(Box::new(PortalLockSystem::for_principal(
                mgr.clone(),
                who.clone(),
            )));
        }
        let handler: DavHandler<DavCtx<P>> = config.build_handler();
        let ctx = DavCtx { principal, remote };
        if req.method() == Method::PUT || req.method().as_str() == "PATCH" {
            // Streamed: dav-server never buffers or parses these bodies.
            return handler.handle_guarded(req, who, ctx).await;
        }
        // Every other body is read whole by dav-server (up to 64 KiB) and parsed as XML: read it
        // here first and refuse nesting its recursive parser can't survive.
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_XML_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return text_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("The request body is larger than {MAX_XML_BODY} bytes.\n"),
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, "request body not received");
                return text_response(StatusCode::BAD_REQUEST, "The request body was cut short.\n");
            }
        };
        if xml_depth(&body, MAX_XML_DEPTH) > MAX_XML_DEPTH {
            return text_response(
                StatusCode::BAD_REQUEST,
                format!("The XML body nests elements deeper than {MAX_XML_DEPTH} levels.\n"),
            );
        }
        let req = Request::from_parts(parts, http_body_util::Full::new(body));
        handler.handle_guarded(req, who, ctx).await
    }
}

/// Builds a [`WebDavServer`].
pub struct WebDavServerBuilder<P: Clone + Send + Sync + 'static> {
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    fs: Box<dyn GuardedFileSystem<DavCtx<P>>>,
    auth: Arc<dyn Authenticator<P>>,
    locks: Option<LockManager>,
    fallback: Option<Fallback>,
    limits: ServerLimits,
    methods: DavMethodSet,
}

impl<P> WebDavServerBuilder<P>
where
    P: Clone + Send + Sync + Display + 'static,
{
    /// TLS configuration (see [`crate::tls::load_server_config`]); `None` = plain HTTP, allowed
    /// only on a loopback address.
    pub fn tls(mut self, tls: Option<Arc<ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// The shared lock manager. Without one, LOCK/UNLOCK answer 405 and `DAV: 1` is advertised
    /// (Windows and macOS then mount read-only).
    pub fn locks(mut self, locks: LockManager) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The service for paths outside `/dav`.
    pub fn fallback(mut self, f: Fallback) -> Self {
        self.fallback = Some(f);
        self
    }

    /// Resource bounds.
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The WebDAV methods served (default: all but `PATCH`, since documents are replaced whole,
    /// never written in place).
    pub fn methods(mut self, methods: DavMethodSet) -> Self {
        self.methods = methods;
        self
    }

    /// The request service alone, for mounting in a host's own server (no listener).
    pub fn build_service(self) -> DavService<P> {
        let config = DavHandler::<DavCtx<P>>::builder()
            .filesystem(self.fs)
            .strip_prefix(DAV_PREFIX)
            .read_buf_size(65536)
            .methods(self.methods)
            .hide_symlinks(true)
            .autoindex(false);
        DavService {
            inner: Arc::new(ServiceInner {
                config,
                locks: self.locks,
                auth: self.auth,
                cache: Arc::new(AuthCache::new(
                    self.limits.auth_cache_ttl,
                    self.limits.auth_cache_capacity,
                )),
                fallback: self.fallback,
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// Binds the listener. Refuses plain HTTP on a non-loopback address.
    pub async fn bind(self) -> Result<WebDavServer<P>, ServerError> {
        let addr = self.addr;
        if self.tls.is_none() && !addr.ip().is_loopback() {
            return Err(ServerError::PlainHttpNotLoopback(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener.local_addr()?;
        let tls = self.tls.clone();
        let limits = self.limits.clone();
        let service = self.build_service();
        tracing::info!(addr = %local_addr, tls = tls.is_some(), "WebDAV listener bound");
        Ok(WebDavServer {
            listener,
            local_addr,
            tls,
            limits,
            service,
        })
    }
}

/// A bound WebDAV listener, ready to [`serve`](WebDavServer::serve).
pub struct WebDavServer<P: Clone + Send + Sync + 'static> {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    limits: ServerLimits,
    service: DavService<P>,
}

/// A server running on its own task.
pub struct RunningServer {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    local_addr: SocketAddr,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and waits.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

impl<P> WebDavServer<P>
where
    P: Clone + Send + Sync + Display + 'static,
{
    /// Starts building a server on `addr` over `fs`, authenticating with `auth`.
    pub fn builder(
        addr: SocketAddr,
        fs: Box<dyn GuardedFileSystem<DavCtx<P>>>,
        auth: Arc<dyn Authenticator<P>>,
    ) -> WebDavServerBuilder<P> {
        let mut methods = DavMethodSet::all();
        methods.remove(DavMethod::Patch);
        WebDavServerBuilder {
            addr,
            tls: None,
            fs,
            auth,
            locks: None,
            fallback: None,
            limits: ServerLimits::default(),
            methods,
        }
    }

    /// The bound address (with the actual port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The request service (for mounting the same handler elsewhere, or reaching the auth cache).
    pub fn service(&self) -> DavService<P> {
        self.service.clone()
    }

    /// Runs the server on a new task; stop it with [`RunningServer::shutdown`].
    pub fn spawn(self) -> RunningServer {
        let shutdown = CancellationToken::new();
        let local_addr = self.local_addr;
        let task = tokio::spawn(self.serve(shutdown.clone()));
        RunningServer {
            shutdown,
            task,
            local_addr,
        }
    }

    /// Accepts connections until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let WebDavServer {
            listener,
            local_addr,
            tls,
            limits,
            service,
        } = self;
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let limits = Arc::new(limits);
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let mut conns = JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Reap finished connections so the set does not grow.
            while conns.try_join_next().is_some() {}
            let _ = stream.set_nodelay(true);
            let span = tracing::info_span!("dav_conn", %remote);
            let conn = serve_connection(
                stream,
                remote,
                acceptor.clone(),
                service.clone(),
                limits.clone(),
                shutdown.clone(),
            );
            conns.spawn(
                async move {
                    conn.await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        drop(listener);
        tracing::info!(addr = %local_addr, open = conns.len(), "WebDAV listener stopping");
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                left = conns.len(),
                "shutdown grace period over: aborting connections"
            );
            conns.shutdown().await;
        }
        Ok(())
    }
}

fn http1_builder(limits: &ServerLimits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper silently ignores the header-read timeout. The timeout also runs while
    // a keep-alive connection waits for its next request, so idle connections are closed too.
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b
}

fn http2_builder(limits: &ServerLimits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_h2_streams)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Runs one connection; on shutdown asks it to finish gracefully (in-flight requests complete,
/// keep-alive ends) and gives up after the grace period.
macro_rules! drive {
    ($conn:expr, $shutdown:expr, $grace:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let res = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = $shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout($grace, conn.as_mut()).await.ok()
            }
        };
        if let Some(Err(e)) = res {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }};
}

/// Serves one accepted connection: TLS handshake (with a deadline) and HTTP/2 when ALPN chose
/// `h2`, HTTP/1.1 otherwise. Plain HTTP (loopback only) is HTTP/1.1.
async fn serve_connection<P>(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    service: DavService<P>,
    limits: Arc<ServerLimits>,
    shutdown: CancellationToken,
) where
    P: Clone + Send + Sync + Display + 'static,
{
    let svc = service.hyper_service(remote);
    let grace = limits.shutdown_grace;
    let Some(acceptor) = acceptor else {
        drive!(
            http1_builder(&limits).serve_connection(TokioIo::new(stream), svc),
            shutdown,
            grace
        );
        return;
    };
    let tls =
        match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    if h2 {
        drive!(
            http2_builder(&limits).serve_connection(TokioIo::new(tls), svc),
            shutdown,
            grace
        );
    } else {
        drive!(
            http1_builder(&limits).serve_connection(TokioIo::new(tls), svc),
            shutdown,
            grace
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_outside_the_prefix_are_refused() {
        let ok = |s: &str| destination_in_prefix(&HeaderValue::from_str(s).unwrap());
        assert!(ok("/dav/a/b.txt"));
        assert!(ok("/dav"));
        assert!(ok("http://localhost:8443/dav/x%20y"));
        assert!(ok("/x/../dav/a"));
        // Found by the webdav fuzz target: dav-server panicked on these.
        assert!(!ok("/davdata"));
        assert!(!ok("/dav/../davx"));
        assert!(!ok("/d%61vx/a"));
        assert!(!ok("/other/a"));
        assert!(!ok("/../dav/a"));
        assert!(!ok("dav/a"));
        assert!(!ok("https://h/davy"));
    }

    #[test]
    fn xml_depth_counts_nesting() {
        assert_eq!(xml_depth(b"", 64), 0);
        assert_eq!(
            xml_depth(
                br#"<?xml version="1.0"?><!-- c --><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#,
                64
            ),
            2
        );
        assert_eq!(xml_depth(b"<a><b></b><c><d/></c></a>", 64), 2);
        // The body that aborted the server (found by tests/badinput_webdav.rs): 5,000 levels.
        let deep = "<a>".repeat(5000);
        assert!(xml_depth(deep.as_bytes(), MAX_XML_DEPTH) > MAX_XML_DEPTH);
        assert_eq!(xml_depth(b"<a><b", 64), 2);
    }
}

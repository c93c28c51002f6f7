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
//!   ([`AuthCache`]), and only while the access epoch ([`WebDavServerBuilder::access_epoch`]) is
//!   unchanged, so a password change, a disabled login or a revoked grant stops a connected
//!   client on its next request.
//! - `PROPFIND /` (clients walking up the path) answers, once authenticated, with a collection
//!   holding `/dav/`.
//! - Then, before dav-server sees the request ([`super::quirks`]): the path and `Destination`
//!   are checked (400 for encoded `..`/`/`, backslashes, bad encodings; 414 when too long), the
//!   conditional headers dav-server would panic on are refused, an absurd `Range` is ignored,
//!   `Depth` must be `0`/`1`/`infinity` (400 otherwise); `PROPFIND` with `Depth: infinity` gets
//!   403 with `<D:propfind-finite-depth/>`, without `Depth` it means `1`. Bodies of the non-PUT
//!   methods are read here, bounded in size ([`ServerLimits::max_xml_body`], 413 beyond) and time,
//!   and must be UTF-8 XML without a DTD and nested at most 64 deep (400). PUT bodies stream.
//! - Authenticated requests go to dav-server with the principal's lock system
//!   ([`PortalLockSystem::for_principal`]) and a [`DavCtx`] (principal, client address, and the
//!   request's own state) that reaches every filesystem call, for the policy check and the audit
//!   entry.
//! - Afterwards: an error answer gets the reason the filesystem recorded ([`DavCtx::refuse`]) as
//!   its text body (e.g. which permission is missing on which folder); a PROPPATCH of Windows'
//!   `Win32LastModifiedTime` that dav-server accepted is applied as the document's modification
//!   time (dav-server acknowledges it without storing it); a PUT with `X-OC-Mtime` is answered
//!   with `X-OC-Mtime: accepted`.
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

use super::auth::{AuthCache, AuthError, Authenticator, EpochSource, parse_basic};
use super::lock_system::PortalLockSystem;
use super::quirks::{self, Depth, Reject};
use crate::locks::LockManager;
use bytes::{Buf, Bytes};
use dav_server::body::Body;
use dav_server::davpath::DavPath;
use dav_server::fs::GuardedFileSystem;
use dav_server::{DavConfig, DavHandler, DavMethod, DavMethodSet};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
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
    state: Arc<RequestState>,
}

/// Why a request was refused, recorded by the filesystem for the response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with instead of dav-server's (`None`: keep dav-server's).
    pub status: Option<StatusCode>,
    /// The reason, in words a client understands.
    pub reason: String,
}

/// What the filesystem learned about one path during a request (a PROPFIND asks for the same
/// node's properties several times; a listing fetches all children's at once).
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeInfo {
    /// SHA-256 of a document's content, if known.
    pub(crate) sha256: Option<[u8; 32]>,
    /// Its dead properties, if read.
    pub(crate) props: Option<Vec<crate::tree::DeadProp>>,
}

/// Most nodes remembered per request.
const MAX_NODE_CACHE: usize = 100_000;

/// State of one request, shared by the service and every filesystem call it makes.
#[derive(Debug, Default)]
struct RequestState {
    method: Method,
    refusal: Mutex<Option<Refusal>>,
    oc_mtime: Option<SystemTime>,
    oc_checksums: bool,
    nodes: Mutex<HashMap<String, NodeInfo>>,
    /// A document already opened (and audited) for this GET, with its first bytes.
    read: Mutex<Option<(String, crate::tree::ReadHandle, Bytes)>>,
    /// The request has a `Range` header (a GET then reads from elsewhere than the start).
    ranged: bool,
    /// A plain PUT (no conditions, no range): its upload may be opened at `metadata`.
    plain_put: bool,
    /// The upload opened for this PUT.
    write: Mutex<Option<(String, crate::tree::Upload)>>,
    /// A PROPFIND that lists the node's children (`Depth: 1`): the node and its children are
    /// read together, audited once.
    propfind_children: bool,
    /// The PROPFIND asks only for live properties: no dead properties need reading.
    live_props_only: std::sync::atomic::AtomicBool,
    /// The children read with the node for this PROPFIND.
    listing: Mutex<Option<(String, Vec<crate::tree::ListedEntry>)>>,
}

impl<P> DavCtx<P> {
    /// The context of a request by `principal` from `remote`.
    pub fn new(principal: P, remote: SocketAddr) -> Self {
        DavCtx {
            principal,
            remote,
            state: Arc::default(),
        }
    }

    fn with_request(
        mut self,
        method: Method,
        headers: &http::HeaderMap,
        oc_mtime: Option<SystemTime>,
        oc_checksums: bool,
    ) -> Self {
        let conditional = [
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "content-range",
        ]
        .iter()
        .any(|h| headers.contains_key(*h))
            || headers
                .get_all("if")
                .iter()
                .any(|v| v.as_bytes().contains(&b'['));
        let propfind_children = method.as_str() == "PROPFIND"
            && !matches!(quirks::depth(headers), Ok(Some(Depth::Zero)));
        self.state = Arc::new(RequestState {
            plain_put: method == Method::PUT && !conditional,
            propfind_children,
            ranged: headers.contains_key(header::RANGE),
            method,
            oc_mtime,
            oc_checksums,
            ..RequestState::default()
        });
        self
    }

    /// Whether this is a PUT without conditions or a range: only whether the target exists
    /// matters before the upload starts.
    pub(crate) fn is_plain_put(&self) -> bool {
        self.state.plain_put
    }

    /// Keeps an upload opened while answering `metadata` for the `open` that follows.
    pub(crate) fn stash_write(&self, path: &str, up: crate::tree::Upload) {
        *self
            .state
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((path.to_string(), up));
    }

    /// The upload opened for `path` earlier in this request, if any.
    pub(crate) fn take_write(&self, path: &str) -> Option<crate::tree::Upload> {
        let mut r = self
            .state
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match r.take() {
            Some((p, u)) if p == path => Some(u),
            other => {
                *r = other;
                None
            }
        }
    }

    /// Whether this PROPFIND lists the node's children too (any `Depth` but `0`).
    pub(crate) fn propfind_children(&self) -> bool {
        self.state.propfind_children
    }

    /// Marks this PROPFIND as asking for live properties only.
    pub(crate) fn set_live_props_only(&self) {
        self.state
            .live_props_only
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this PROPFIND asks for live properties only (dead ones need not be read).
    pub(crate) fn live_props_only(&self) -> bool {
        self.state
            .live_props_only
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps the children read with a node for the `read_dir` that follows.
    pub(crate) fn stash_listing(&self, path: &str, children: Vec<crate::tree::ListedEntry>) {
        *self
            .state
            .listing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((path.to_string(), children));
    }

    /// The children of `path` read earlier in this request, if any.
    pub(crate) fn take_listing(&self, path: &str) -> Option<Vec<crate::tree::ListedEntry>> {
        let mut r = self
            .state
            .listing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match r.take() {
            Some((p, l)) if p == path => Some(l),
            other => {
                *r = other;
                None
            }
        }
    }

    /// The request's method (`GET` for a context made with [`DavCtx::new`]).
    pub fn method(&self) -> &Method {
        &self.state.method
    }

    /// Whether the request has a `Range` header.
    pub(crate) fn is_ranged(&self) -> bool {
        self.state.ranged
    }

    /// Keeps a document opened while answering `metadata` (with the bytes read from its start)
    /// for the `open` that follows.
    pub(crate) fn stash_read(&self, path: &str, h: crate::tree::ReadHandle, first: Bytes) {
        *self
            .state
            .read
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((path.to_string(), h, first));
    }

    /// The document opened for `path` earlier in this request (and its first bytes), if any.
    pub(crate) fn take_read(&self, path: &str) -> Option<(crate::tree::ReadHandle, Bytes)> {
        let mut r = self
            .state
            .read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match r.take() {
            Some((p, h, first)) if p == path => Some((h, first)),
            other => {
                *r = other;
                None
            }
        }
    }

    /// Records why the request is being refused (the first reason wins). The service puts it in
    /// the body of the error response, and answers with `status` if one is given.
    pub fn refuse(&self, status: Option<StatusCode>, reason: impl Into<String>) {
        let mut r = self
            .state
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if r.is_none() {
            *r = Some(Refusal {
                status,
                reason: reason.into(),
            });
        }
    }

    /// The recorded refusal, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.state
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The modification time a PUT carried in `X-OC-Mtime` (ownCloud clients such as rclone).
    pub fn oc_mtime(&self) -> Option<SystemTime> {
        self.state.oc_mtime
    }

    /// Whether the client is an ownCloud-style client (a PUT with `X-OC-Mtime` or
    /// `OC-Checksum`) that reads `oc:checksums` back, so an upload should compute them.
    pub fn wants_checksums(&self) -> bool {
        self.state.oc_checksums
    }

    /// What is known about `path` in this request.
    pub(crate) fn node(&self, path: &str) -> Option<NodeInfo> {
        self.state
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// Remembers something about `path` for the rest of this request.
    pub(crate) fn remember(&self, path: &str, f: impl FnOnce(&mut NodeInfo)) {
        let mut m = self
            .state
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if m.len() >= MAX_NODE_CACHE && !m.contains_key(path) {
            return;
        }
        f(m.entry(path.to_string()).or_default());
    }
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
    /// HTTP/2 flow-control window of one stream (hyper's default, 1 MiB, held a 256 MiB upload
    /// over TLS to 62–78 MB/s here against 200–280 MB/s over HTTP/1.1; 8 MiB: 250 MB/s).
    pub h2_stream_window: u32,
    /// HTTP/2 flow-control window of a connection (bounds what one connection can have in
    /// flight; at least `h2_stream_window`).
    pub h2_connection_window: u32,
    /// Largest HTTP/2 frame the client may send (16 KiB to 16 MiB).
    pub h2_max_frame: u32,
    /// How long in-flight requests may run after shutdown was asked for.
    pub shutdown_grace: Duration,
    /// How long a successful login is cached.
    pub auth_cache_ttl: Duration,
    /// Most cached logins.
    pub auth_cache_capacity: usize,
    /// Largest request body of the XML methods (PROPFIND, PROPPATCH, LOCK…); PUT bodies are
    /// streamed and not limited here.
    pub max_xml_body: usize,
    /// Time a client has to send such a body.
    pub body_read_timeout: Duration,
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
            h2_stream_window: 8 << 20,
            h2_connection_window: 16 << 20,
            h2_max_frame: 256 << 10,
            shutdown_grace: Duration::from_secs(10),
            auth_cache_ttl: Duration::from_secs(60),
            auth_cache_capacity: 4096,
            max_xml_body: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

struct ServiceInner<P: Clone + Send + Sync + 'static> {
    config: DavConfig<DavCtx<P>>,
    fs: Box<dyn GuardedFileSystem<DavCtx<P>>>,
    max_xml_body: usize,
    body_read_timeout: Duration,
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
        // One Argon2id check per credential at a time: parallel connections of one client wait
        // for the first and take its cached success.
        let _running = cache.begin_check(&user, &pass).await;
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
        if path == "/" && req.method().as_str() == "PROPFIND" {
            // Clients that walk up the path (gvfs, Finder's "enclosing folder") ask about `/`:
            // answer with a collection holding `/dav/` instead of an error.
            if let Err(resp) = self.authenticate(&req, remote).await {
                return resp;
            }
            return match quirks::depth(req.headers()) {
                Ok(Some(Depth::Infinity)) => finite_depth(),
                Ok(d) => root_propfind(d != Some(Depth::Zero)),
                Err(r) => reject(r),
            };
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
        if let Err(r) = check_request(&req) {
            return reject(r);
        }
        let depth = match quirks::depth(req.headers()) {
            Ok(d) => d,
            Err(r) => return reject(r),
        };
        let method = req.method().clone();
        let mut req = req;
        if quirks::sanitize_range(req.headers_mut()) {
            tracing::debug!("Range header ignored");
        }
        if method.as_str() == "PROPFIND" {
            match depth {
                Some(Depth::Infinity) => return finite_depth(),
                // RFC 4918 reads a missing Depth as infinity, which is refused; clients that
                // omit it want the folder and its children.
                None => {
                    req.headers_mut()
                        .insert("depth", HeaderValue::from_static("1"));
                }
                _ => {}
            }
        }
        let who = principal.to_string();
        let is_put = method == Method::PUT || method == Method::PATCH;
        let oc_mtime = is_put
            .then(|| req.headers().get("x-oc-mtime"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(quirks::parse_oc_mtime);
        let oc_client = is_put
            && (req.headers().contains_key("x-oc-mtime")
                || req.headers().contains_key("oc-checksum"));
        let ctx = DavCtx::new(principal, remote).with_request(
            method.clone(),
            req.headers(),
            oc_mtime,
            oc_client,
        );
        if is_put {
            let resp = self.dispatch(req, who, ctx.clone()).await;
            let mut resp = self.explain(resp, &ctx);
            if oc_mtime.is_some() && resp.status().is_success() {
                resp.headers_mut()
                    .insert("x-oc-mtime", HeaderValue::from_static("accepted"));
            }
            resp
        } else {
            let (parts, body) = req.into_parts();
            let bytes = match self.read_small_body(body).await {
                Ok(b) => b,
                Err(r) => return reject(r),
            };
            if let Err(r) = quirks::check_xml_body(&bytes) {
                return reject(r);
            }
            let win32 = if method.as_str() == "PROPPATCH" {
                quirks::win32_mtime(&bytes)
            } else {
                None
            };
            if method.as_str() == "PROPFIND"
                && let Some(live) = super::propfind::live_props(&bytes)
            {
                let ua = parts
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let children = depth != Some(Depth::Zero);
                if let Some(resp) = super::propfind::answer(
                    &*self.inner.fs,
                    parts.uri.path(),
                    children,
                    &live,
                    &ctx,
                    ua,
                )
                .await
                {
                    return self.explain(resp, &ctx);
                }
            }
            let uri = parts.uri.clone();
            let req = Request::from_parts(parts, http_body_util::Full::new(bytes));
            let resp = self.dispatch(req, who, ctx.clone()).await;
            match win32 {
                Some(t) if resp.status() == StatusCode::MULTI_STATUS => {
                    self.apply_mtime(resp, &uri, t, &ctx).await
                }
                _ => self.explain(resp, &ctx),
            }
        }
    }

    /// Hands a request to dav-server with the principal's lock system.
    async fn dispatch<B>(&self, req: Request<B>, who: String, ctx: DavCtx<P>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut config = self.inner.config.clone();
        if let Some(mgr) = &self.inner.locks {
            config = config.locksystem(Box::new(PortalLockSystem::for_principal(
                mgr.clone(),
                who.clone(),
            )));
        }
        let handler: DavHandler<DavCtx<P>> = config.build_handler();
        handler.handle_guarded(req, who, ctx).await
    }

    /// Reads a non-PUT request body, bounded in size and time.
    async fn read_small_body<B>(&self, body: B) -> Result<Bytes, Reject>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = self.inner.max_xml_body;
        let read = async move {
            let mut body = std::pin::pin!(body);
            let mut out = bytes::BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Reject {
                    status: StatusCode::BAD_REQUEST,
                    reason: format!("The request body could not be read: {e}"),
                })?;
                if let Ok(mut data) = frame.into_data() {
                    if out.len() + data.remaining() > limit {
                        return Err(Reject {
                            status: StatusCode::PAYLOAD_TOO_LARGE,
                            reason: format!(
                                "The request body is too large: at most {} KiB are accepted for this method.",
                                limit / 1024
                            ),
                        });
                    }
                    while data.has_remaining() {
                        let c = data.chunk();
                        let n = c.len();
                        out.extend_from_slice(c);
                        data.advance(n);
                    }
                }
            }
            Ok(out.freeze())
        };
        match tokio::time::timeout(self.inner.body_read_timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(Reject {
                status: StatusCode::REQUEST_TIMEOUT,
                reason: "The request body took too long to arrive.".into(),
            }),
        }
    }

    /// Windows sets a file's modification time with a PROPPATCH of `Win32LastModifiedTime`,
    /// which dav-server acknowledges without storing: apply it through the filesystem once
    /// dav-server has accepted the PROPPATCH (locks and conditions checked).
    async fn apply_mtime(
        &self,
        resp: Response<Body>,
        uri: &http::Uri,
        t: SystemTime,
        ctx: &DavCtx<P>,
    ) -> Response<Body> {
        let path = DavPath::new(uri.path()).and_then(|mut p| {
            p.set_prefix(DAV_PREFIX)?;
            Ok(p)
        });
        let Ok(path) = path else {
            return resp;
        };
        match self.inner.fs.set_modified(&path, t, ctx).await {
            Ok(()) => resp,
            Err(e) => {
                tracing::info!(error = ?e, "Win32LastModifiedTime not applied");
                let reason = ctx
                    .refusal()
                    .map(|r| r.reason)
                    .unwrap_or_else(|| "The modification time could not be set.".to_string());
                text_response(status_of_fs_error(e), format!("{}\n", reason.trim_end()))
            }
        }
    }

    /// Puts the recorded refusal (if any) in the body of an error response.
    fn explain(&self, resp: Response<Body>, ctx: &DavCtx<P>) -> Response<Body> {
        let status = resp.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return resp;
        }
        let Some(r) = ctx.refusal() else {
            return resp;
        };
        let empty = matches!(resp.body().inner, dav_server::body::BodyType::Empty);
        if !empty && r.status.is_none() {
            return resp;
        }
        let (parts, _) = resp.into_parts();
        let mut out = text_response(
            r.status.unwrap_or(parts.status),
            format!("{}\n", r.reason.trim_end()),
        );
        for (k, v) in parts.headers.iter() {
            if k != header::CONTENT_LENGTH && k != header::CONTENT_TYPE {
                out.headers_mut().append(k.clone(), v.clone());
            }
        }
        out
    }
}

fn status_of_fs_error(e: dav_server::fs::FsError) -> StatusCode {
    use dav_server::fs::FsError;
    match e {
        FsError::NotFound => StatusCode::NOT_FOUND,
        FsError::Forbidden => StatusCode::FORBIDDEN,
        FsError::Exists => StatusCode::PRECONDITION_FAILED,
        FsError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        FsError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn reject(r: Reject) -> Response<Body> {
    text_response(r.status, format!("{}\n", r.reason))
}

/// `PROPFIND /`: the server root, a collection whose only member is `/dav/`.
fn root_propfind(children: bool) -> Response<Body> {
    let node = |href: &str| {
        format!(
            "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype><D:getcontenttype>httpd/unix-directory</D:getcontenttype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        )
    };
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">",
    );
    body.push_str(&node("/"));
    if children {
        body.push_str(&node(&format!("{DAV_PREFIX}/")));
    }
    body.push_str("</D:multistatus>\n");
    let len = body.len();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::MULTI_STATUS;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

/// The RFC 4918 answer to `PROPFIND` with `Depth: infinity`.
fn finite_depth() -> Response<Body> {
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n";
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

/// Checks the request path and `Destination` before dav-server sees them.
fn check_request<B>(req: &Request<B>) -> Result<(), Reject> {
    quirks::check_path(req.uri().path())?;
    quirks::check_condition_headers(req.headers())?;
    if let Some(d) = req.headers().get("destination") {
        let p = quirks::destination_path(d)?;
        if !is_dav_path(&p) {
            return Err(Reject {
                status: StatusCode::BAD_REQUEST,
                reason: format!("The Destination must be under {DAV_PREFIX}/."),
            });
        }
    }
    Ok(())
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
    epoch: Option<EpochSource>,
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

    /// A counter that moves whenever credentials or access rights change (e.g.
    /// [`crate::Portal::access_epoch`]): cached logins made under another value are checked
    /// again, so a changed password, a disabled login or a revoked grant takes effect on the
    /// next request of a connected client.
    pub fn access_epoch(mut self, epoch: EpochSource) -> Self {
        self.epoch = Some(epoch);
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
        let mut cache = AuthCache::new(self.limits.auth_cache_ttl, self.limits.auth_cache_capacity);
        if let Some(e) = self.epoch {
            cache = cache.with_epoch_source(e);
        }
        let config = DavHandler::<DavCtx<P>>::builder()
            .filesystem(self.fs.clone())
            .strip_prefix(DAV_PREFIX)
            .read_buf_size(65536)
            .methods(self.methods)
            .hide_symlinks(true)
            .autoindex(false);
        DavService {
            inner: Arc::new(ServiceInner {
                config,
                fs: self.fs,
                max_xml_body: self.limits.max_xml_body,
                body_read_timeout: self.limits.body_read_timeout,
                locks: self.locks,
                auth: self.auth,
                cache: Arc::new(cache),
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
            epoch: None,
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
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window.max(limits.h2_stream_window))
        .max_frame_size(limits.h2_max_frame.clamp(16 * 1024, 16 * 1024 * 1024 - 1))
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
mod destination_tests {
    use super::*;

    fn refused(dest: &str) -> bool {
        let req = Request::builder()
            .method("MOVE")
            .uri("/dav/a.txt")
            .header("destination", dest)
            .body(())
            .unwrap();
        check_request(&req).is_err()
    }

    #[test]
    fn destinations_outside_the_prefix_are_refused() {
        assert!(!refused("/dav/a/b.txt"));
        assert!(!refused("http://localhost:8443/dav/x%20y"));
        // Found by the webdav fuzz target: dav-server panicked on a Destination that merely
        // starts with the prefix's letters.
        for bad in [
            "/davdata",
            "/dav/../davx",
            "/d%61vx/a",
            "/other/a",
            "/../dav/a",
            "https://h/davy",
        ] {
            assert!(refused(bad), "{bad} was accepted");
        }
    }
}

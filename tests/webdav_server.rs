//! The WebDAV listener driven over loopback: the OPTIONS rule, Basic auth and its cache, TLS with a
//! generated certificate (curl), the loopback-only rule for plain HTTP, persistent shared locks,
//! graceful shutdown, header timeouts, and litmus' `locks` suite against dav-server's memfs.
//!
//! Tests that need curl or litmus fail when the tool is missing and `CI=true`; otherwise they
//! print a notice and return.

use async_trait::async_trait;
use base64::Engine;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsFuture, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use dav_server::memfs::MemFs;
use sdx_portal::crypto::PlainSealer;
use sdx_portal::locks::LockManager;
use sdx_portal::webdav::{
    AuthError, Authenticator, DavCtx, Fallback, RunningServer, ServerError, ServerLimits,
    WebDavServer,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type P = String;

// ---------------------------------------------------------------------------------------------
// Test doubles: an authenticator with fixed users, and memfs behind the guarded-FS interface.

struct Users {
    users: HashMap<&'static str, (&'static str, &'static str)>,
    calls: AtomicUsize,
}

impl Users {
    fn new() -> Arc<Self> {
        let mut users = HashMap::new();
        users.insert("alice", ("pw-alice", "portal:1"));
        users.insert("staff", ("pw-staff", "staff:2"));
        users.insert("locked", ("pw-locked", "portal:3"));
        Arc::new(Users {
            users,
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Authenticator<P> for Users {
    async fn authenticate_basic(
        &self,
        user: &str,
        pass: &str,
        _remote: SocketAddr,
    ) -> Result<P, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if user == "locked" {
            return Err(AuthError::LockedOut {
                retry_after_secs: 42,
            });
        }
        match self.users.get(user) {
            Some((pw, principal)) if *pw == pass => Ok(principal.to_string()),
            _ => Err(AuthError::InvalidCredentials),
        }
    }
}

/// memfs ignoring the context, but recording the remote addresses it was called with.
#[derive(Clone)]
struct CtxFs {
    fs: Box<MemFs>,
    seen: Arc<Mutex<Vec<(String, SocketAddr)>>>,
}

impl CtxFs {
    fn new() -> Self {
        CtxFs {
            fs: MemFs::new(),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }
    fn note(&self, c: &DavCtx<P>) {
        self.seen
            .lock()
            .unwrap()
            .push((c.principal.clone(), c.remote));
    }
}

impl GuardedFileSystem<DavCtx<P>> for CtxFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        self.note(c);
        DavFileSystem::open(&*self.fs, path, options)
    }
    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
        c: &'a DavCtx<P>,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        self.note(c);
        DavFileSystem::read_dir(&*self.fs, path, meta)
    }
    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        self.note(c);
        DavFileSystem::metadata(&*self.fs, path)
    }
    fn create_dir<'a>(&'a self, path: &'a DavPath, _c: &'a DavCtx<P>) -> FsFuture<'a, ()> {
        DavFileSystem::create_dir(&*self.fs, path)
    }
    fn remove_dir<'a>(&'a self, path: &'a DavPath, _c: &'a DavCtx<P>) -> FsFuture<'a, ()> {
        DavFileSystem::remove_dir(&*self.fs, path)
    }
    fn remove_file<'a>(&'a self, path: &'a DavPath, _c: &'a DavCtx<P>) -> FsFuture<'a, ()> {
        DavFileSystem::remove_file(&*self.fs, path)
    }
    fn rename<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, ()> {
        DavFileSystem::rename(&*self.fs, from, to)
    }
    fn copy<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, ()> {
        DavFileSystem::copy(&*self.fs, from, to)
    }
    fn have_props<'a>(
        &'a self,
        path: &'a DavPath,
        _c: &'a DavCtx<P>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        DavFileSystem::have_props(&*self.fs, path)
    }
    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Vec<(http::StatusCode, DavProp)>> {
        DavFileSystem::patch_props(&*self.fs, path, patch)
    }
    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Vec<DavProp>> {
        DavFileSystem::get_props(&*self.fs, path, do_content)
    }
    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Vec<u8>> {
        DavFileSystem::get_prop(&*self.fs, path, prop)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn open_locks(path: &Path) -> LockManager {
    let db = Arc::new(redb::Database::create(path).unwrap());
    LockManager::open(db, Arc::new(PlainSealer)).await.unwrap()
}

struct Harness {
    server: RunningServer,
    users: Arc<Users>,
    fs: CtxFs,
    cache: Arc<sdx_portal::webdav::AuthCache<P>>,
}

async fn start(fs: CtxFs, locks: Option<LockManager>, limits: ServerLimits) -> Harness {
    let users = Users::new();
    let mut b =
        WebDavServer::<P>::builder(loopback(), Box::new(fs.clone()), users.clone()).limits(limits);
    if let Some(l) = locks {
        b = b.locks(l);
    }
    let fallback: Fallback = Arc::new(|req, _remote| {
        Box::pin(async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            http::Response::new(dav_server::body::Body::from(format!(
                "fallback saw {}",
                req.uri().path()
            )))
        })
    });
    b = b.fallback(fallback);
    let server = b.bind().await.unwrap();
    let cache = server.service().auth_cache().clone();
    Harness {
        server: server.spawn(),
        users,
        fs,
        cache,
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 exchange with `Connection: close`. `head` holds extra header lines.
async fn http(addr: SocketAddr, method: &str, path: &str, head: &str, body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n{head}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const LOCKINFO: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>Jane Client</D:owner></D:lockinfo>"#;

/// Whether an external tool is present; panics when it is missing and CI=true.
fn have_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required for this test (CI=true)");
        }
        eprintln!("SKIPPED: {name} not installed");
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn options_answers_without_authentication() {
    let h = start(CtxFs::new(), None, ServerLimits::default()).await;
    let addr = h.server.local_addr();
    for path in ["/dav/", "/dav", "/dav/some/deep/path.docx", "/"] {
        let r = http(addr, "OPTIONS", path, "", "").await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("DAV"), Some("1"), "no lock manager: class 1 only");
        assert_eq!(r.header("MS-Author-Via"), Some("DAV"));
    }
    assert_eq!(h.users.calls.load(Ordering::SeqCst), 0);
    h.server.shutdown().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let locks = open_locks(&dir.path().join("l.redb")).await;
    let h = start(CtxFs::new(), Some(locks), ServerLimits::default()).await;
    let r = http(h.server.local_addr(), "OPTIONS", "/dav/", "", "").await;
    assert_eq!(r.header("DAV"), Some("1,2"));
    assert!(r.header("Allow").unwrap().contains("LOCK"));
    assert_eq!(h.users.calls.load(Ordering::SeqCst), 0);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn basic_auth_is_required_checked_and_cached() {
    let h = start(CtxFs::new(), None, ServerLimits::default()).await;
    let addr = h.server.local_addr();
    let depth0 = "Depth: 0\r\n";

    let r = http(addr, "PROPFIND", "/dav/", depth0, "").await;
    assert_eq!(r.status, 401);
    let wa = r.header("WWW-Authenticate").unwrap();
    assert!(wa.starts_with("Basic realm=\"sdx\""), "{wa}");
    assert!(
        h.fs.seen.lock().unwrap().is_empty(),
        "no FS work before auth"
    );

    let r = http(
        addr,
        "PROPFIND",
        "/dav/",
        &format!("{depth0}{}", basic("alice", "wrong")),
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(
        addr,
        "PROPFIND",
        "/dav/",
        &format!("{depth0}Authorization: Basic %%%\r\n"),
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(addr, "GET", "/dav/", &basic("locked", "pw-locked"), "").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("42"));
    assert!(
        h.fs.seen.lock().unwrap().is_empty(),
        "no FS work before auth"
    );
    let failed_calls = h.users.calls.load(Ordering::SeqCst);
    assert_eq!(
        failed_calls, 2,
        "malformed headers never reach the authenticator"
    );

    // Success; the second request is served from the cache.
    let ok = format!("{depth0}{}", basic("alice", "pw-alice"));
    let r = http(addr, "PROPFIND", "/dav/", &ok, "").await;
    assert_eq!(r.status, 207, "{}", r.body);
    let r = http(addr, "PROPFIND", "/dav/", &ok, "").await;
    assert_eq!(r.status, 207);
    assert_eq!(h.users.calls.load(Ordering::SeqCst), failed_calls + 1);
    // Failures are never cached: a wrong password after a success is checked (and refused).
    let r = http(
        addr,
        "PROPFIND",
        "/dav/",
        &format!("{depth0}{}", basic("alice", "pw-alic")),
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(h.users.calls.load(Ordering::SeqCst), failed_calls + 2);
    // Invalidation forces a fresh check.
    h.cache.invalidate_user("Alice");
    let r = http(addr, "PROPFIND", "/dav/", &ok, "").await;
    assert_eq!(r.status, 207);
    assert_eq!(h.users.calls.load(Ordering::SeqCst), failed_calls + 3);
    h.cache.bump_generation();
    http(addr, "PROPFIND", "/dav/", &ok, "").await;
    assert_eq!(h.users.calls.load(Ordering::SeqCst), failed_calls + 4);

    // The principal and the client's address reached the filesystem.
    let seen = h.fs.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (p, remote) in seen {
        assert_eq!(p, "portal:1");
        assert!(remote.ip().is_loopback());
        assert_ne!(
            remote.port(),
            addr.port(),
            "the client's port, not the server's"
        );
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fallback_serves_other_paths_without_auth() {
    let h = start(CtxFs::new(), None, ServerLimits::default()).await;
    let addr = h.server.local_addr();
    let r = http(addr, "GET", "/invite/abc", "", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "fallback saw /invite/abc");
    // "/davx" is not under the prefix.
    let r = http(addr, "GET", "/davx", "", "").await;
    assert_eq!(r.body, "fallback saw /davx");
    assert_eq!(h.users.calls.load(Ordering::SeqCst), 0);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let r = WebDavServer::<P>::builder(addr, Box::new(CtxFs::new()), Users::new())
            .bind()
            .await;
        match r {
            Err(e @ ServerError::PlainHttpNotLoopback(_)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("loopback") && msg.contains(&addr.to_string()),
                    "{msg}"
                );
            }
            Err(e) => panic!("{addr}: wrong error {e}"),
            Ok(_) => panic!("{addr}: plain HTTP was allowed"),
        }
    }
    // IPv6 loopback is fine (if the host has it).
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    match WebDavServer::<P>::builder(v6, Box::new(CtxFs::new()), Users::new())
        .bind()
        .await
    {
        Ok(_) | Err(ServerError::Bind { .. }) => {}
        Err(e) => panic!("::1 refused: {e}"),
    }
}

#[tokio::test]
async fn tls_with_generated_certificate() {
    if !have_tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = sdx_portal::tls::generate_self_signed(
        dir.path(),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    let tls = sdx_portal::tls::load_server_config(&cert, &key).unwrap();
    let users = Users::new();
    let server = WebDavServer::<P>::builder(loopback(), Box::new(CtxFs::new()), users)
        .tls(Some(tls))
        .bind()
        .await
        .unwrap();
    let port = server.local_addr().port();
    let running = server.spawn();

    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(&args)
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let url = format!("https://localhost:{port}/dav/");
    let resolve = format!("localhost:{port}:127.0.0.1");
    for (proto, want) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, out) = curl(vec![
            "-sS".into(),
            proto.into(),
            "--resolve".into(),
            resolve.clone(),
            "--cacert".into(),
            cert.display().to_string(),
            "-u".into(),
            "alice:pw-alice".into(),
            "-X".into(),
            "PROPFIND".into(),
            "-H".into(),
            "Depth: 0".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code} %{http_version}".into(),
            url.clone(),
        ])
        .await;
        assert_eq!(code, Some(0), "curl failed");
        assert_eq!(out, format!("207 {want}"), "{proto}");
    }
    // Without the CA the certificate is not trusted (it really is TLS with our cert).
    let (code, _) = curl(vec![
        "-sS".into(),
        "--resolve".into(),
        resolve.clone(),
        "-o".into(),
        "/dev/null".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(
        code,
        Some(60),
        "curl should reject the self-signed certificate"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (code, _) = curl(vec![
        "-sS".into(),
        "-m".into(),
        "5".into(),
        "-o".into(),
        "/dev/null".into(),
        format!("http://127.0.0.1:{port}/dav/"),
    ])
    .await;
    assert_ne!(code, Some(0));
    running.shutdown().await.unwrap();
}

fn lock_token(r: &Resp) -> String {
    r.header("Lock-Token")
        .expect("Lock-Token header")
        .trim_matches(|c| c == '<' || c == '>')
        .to_string()
}

#[tokio::test]
async fn locks_are_shared_between_principals_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("locks.redb");
    let fs = CtxFs::new();
    let alice = basic("alice", "pw-alice");
    let staff = basic("staff", "pw-staff");

    let token;
    {
        let locks = open_locks(&db_path).await;
        let h = start(fs.clone(), Some(locks), ServerLimits::default()).await;
        let addr = h.server.local_addr();
        let r = http(addr, "PUT", "/dav/contract.docx", &alice, "v1").await;
        assert_eq!(r.status, 201);
        // LOCK without a Depth header (Windows does this).
        let r = http(
            addr,
            "LOCK",
            "/dav/contract.docx",
            &format!("{alice}Timeout: Second-600\r\nContent-Type: application/xml\r\n"),
            LOCKINFO,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        token = lock_token(&r);
        // The response's lock discovery shows the lock just granted.
        assert!(r.body.contains(&token), "{}", r.body);
        assert!(r.body.contains("Jane Client"));
        // The other principal can't lock or write.
        let r = http(addr, "LOCK", "/dav/contract.docx", &staff, LOCKINFO).await;
        assert_eq!(r.status, 423);
        let r = http(addr, "PUT", "/dav/contract.docx", &staff, "staff edit").await;
        assert_eq!(r.status, 423);
        // Knowing the token does not help another principal, neither to write nor to unlock.
        let with_tok = format!("{staff}If: (<{token}>)\r\n");
        let r = http(addr, "PUT", "/dav/contract.docx", &with_tok, "staff edit").await;
        assert_eq!(r.status, 423);
        let r = http(
            addr,
            "UNLOCK",
            "/dav/contract.docx",
            &format!("{staff}Lock-Token: <{token}>\r\n"),
            "",
        )
        .await;
        assert_eq!(r.status, 409);
        h.server.shutdown().await.unwrap();
    }
    // Restart: a fresh database handle and lock manager on the same file.
    {
        let locks = open_locks(&db_path).await;
        let h = start(fs.clone(), Some(locks), ServerLimits::default()).await;
        let addr = h.server.local_addr();
        let r = http(addr, "PUT", "/dav/contract.docx", &staff, "staff edit").await;
        assert_eq!(r.status, 423, "the lock survived the restart");
        let r = http(
            addr,
            "PROPFIND",
            "/dav/contract.docx",
            &format!("{staff}Depth: 0\r\n"),
            r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>"#,
        )
        .await;
        assert_eq!(r.status, 207);
        assert!(r.body.contains(&token), "{}", r.body);
        // The holder writes with the token, then unlocks; then staff can write.
        let with_tok = format!("{alice}If: (<{token}>)\r\n");
        let r = http(addr, "PUT", "/dav/contract.docx", &with_tok, "v2").await;
        assert!(r.status == 204 || r.status == 201, "{}", r.status);
        let r = http(
            addr,
            "UNLOCK",
            "/dav/contract.docx",
            &format!("{alice}Lock-Token: <{token}>\r\n"),
            "",
        )
        .await;
        assert_eq!(r.status, 204);
        let r = http(addr, "PUT", "/dav/contract.docx", &staff, "staff edit").await;
        assert!(r.status == 204 || r.status == 201, "{}", r.status);
        h.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let h = start(CtxFs::new(), None, ServerLimits::default()).await;
    let addr = h.server.local_addr();
    let slow = tokio::spawn(http(addr, "GET", "/slow", "", ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    h.server.shutdown().await.unwrap();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "fallback saw /slow");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Not accepting any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let h = start(CtxFs::new(), None, limits).await;
    let mut s = TcpStream::connect(h.server.local_addr()).await.unwrap();
    s.write_all(b"GET /dav/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "connection still open after 10 s");
    assert!(t.elapsed() < Duration::from_secs(5));
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let h = start(CtxFs::new(), None, ServerLimits::default()).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let r = http(h.server.local_addr(), "GET", "/dav/", &big, "").await;
    assert_eq!(r.status, 431);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = http(h.server.local_addr(), "GET", "/dav/", &many, "").await;
    assert!(r.status == 431 || r.status == 0, "status {}", r.status);
    h.server.shutdown().await.unwrap();
}

/// litmus' `locks` suite against memfs behind this server, as a smoke test of the lock system.
/// Prints the summary; every test must pass. `SDX_LITMUS_TESTS="basic copymove props locks"`
/// runs other suites too (memfs' own gaps then show up as failures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_locks_suite() {
    if !have_tool("litmus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let locks = open_locks(&dir.path().join("l.redb")).await;
    let h = start(CtxFs::new(), Some(locks), ServerLimits::default()).await;
    let url = format!("http://127.0.0.1:{}/dav/", h.server.local_addr().port());
    let out = tokio::process::Command::new("litmus")
        .env(
            "TESTS",
            std::env::var("SDX_LITMUS_TESTS").unwrap_or_else(|_| "locks".into()),
        )
        .current_dir(dir.path())
        .args([url.as_str(), "alice", "pw-alice"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let summaries: Vec<&str> = stdout.lines().filter(|l| l.contains("tests run")).collect();
    assert!(!summaries.is_empty(), "no litmus summary:\n{stdout}");
    for s in summaries {
        eprintln!("litmus: {s}");
    }
    // Lines like " 9.  discover................ FAIL (...)".
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("FAIL")).collect();
    assert!(failed.is_empty(), "litmus failures:\n{}", failed.join("\n"));
    h.server.shutdown().await.unwrap();
}

/// A host mounts the service in its own hyper server (no WebDavServer listener).
#[tokio::test]
async fn service_mounts_in_a_host_server() {
    let users = Users::new();
    let svc = WebDavServer::<P>::builder(loopback(), Box::new(CtxFs::new()), users.clone())
        .build_service();
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, remote) = listener.accept().await.unwrap();
            let svc = svc.clone();
            let hsvc = hyper::service::service_fn(move |req| {
                let svc = svc.clone();
                async move { Ok::<_, std::convert::Infallible>(svc.handle(req, remote).await) }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), hsvc)
                .await
                .unwrap();
        }
    });
    let r = http(addr, "OPTIONS", "/dav/", "", "").await;
    assert_eq!(r.header("DAV"), Some("1"));
    let r = http(
        addr,
        "PROPFIND",
        "/dav/",
        &format!("Depth: 1\r\n{}", basic("staff", "pw-staff")),
        "",
    )
    .await;
    assert_eq!(r.status, 207);
    host.await.unwrap();
    assert_eq!(users.calls.load(Ordering::SeqCst), 1);
}

//! A host application embedding sdx-portal: it opens a portal, configures it through the API,
//! subscribes to its events and serves the WebDAV front end under `/dav/` of its own hyper
//! server, next to its own routes (`/health`, `/api/events`).
//!
//! ```text
//! cargo run --example embed            # then, in another terminal:
//! curl http://127.0.0.1:8080/health
//! curl -u 'alice@client.test:alice portal passphrase' -T report.pdf \
//!   'http://127.0.0.1:8080/dav/2026-001%20Smith%20v%20Jones/Client%20Documents/report.pdf'
//! curl http://127.0.0.1:8080/api/events
//! ```
//!
//! Plain HTTP on loopback keeps the example short; a real host terminates TLS in front of it (or
//! uses `sdx_portal::tls` with its own listener).
use dav_server::body::Body;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sdx_portal::model::{Actor, Permission, Permissions};
use sdx_portal::{Portal, webdav::server::DavService};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The client login the example creates.
pub const CLIENT: &str = "alice@client.test";
/// Its password.
pub const CLIENT_PASSWORD: &str = "alice portal passphrase";

/// The running host application.
pub struct Host {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The portal it embeds.
    pub portal: Portal,
    /// Events seen so far (as JSON), newest last.
    pub events: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Host {
    /// Stops accepting and waits for the accept loop.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Sets up the firm: a participant type, a matter type with its portal configuration, a matter,
/// a client with a login and portal access.
async fn configure(portal: &Portal) -> sdx_portal::Result<()> {
    let firm = Actor::system();
    let client = portal.create_participant_type(&firm, "Client").await?;
    let general = portal
        .create_matter_type(&firm, "General", &["Client Documents", "Internal"])
        .await?;
    let upload = Permissions::NONE
        .with(Permission::List)
        .with(Permission::Read)
        .with(Permission::Create);
    portal
        .set_portal_permissions(&firm, general, "Client Documents", client, upload)
        .await?;
    let matter = portal
        .create_matter(&firm, "2026-001", "Smith v Jones", general)
        .await?;
    let alice = portal.create_contact(&firm, "Alice Client", CLIENT).await?;
    portal
        .create_portal_login(&firm, alice, Some(CLIENT_PASSWORD))
        .await?;
    let part = portal.add_participant(&firm, matter, alice, client).await?;
    portal.grant_access(&firm, matter, part).await?;
    Ok(())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    r
}

/// The host's router: its own routes, and the portal's WebDAV under `/dav/`.
async fn route(
    req: Request<hyper::body::Incoming>,
    remote: SocketAddr,
    dav: DavService<sdx_portal::model::Principal>,
    events: Arc<Mutex<Vec<String>>>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/health" => text(StatusCode::OK, "ok\n"),
        "/api/events" => {
            let list = events.lock().map(|e| e.join("\n")).unwrap_or_default();
            text(StatusCode::OK, list + "\n")
        }
        p if p == "/dav" || p.starts_with("/dav/") => dav.handle(req, remote).await,
        _ => text(StatusCode::NOT_FOUND, "not a route of this host\n"),
    }
}

/// Opens and configures the portal and starts the host's server on `addr`.
pub async fn start(addr: SocketAddr) -> Result<Host, Box<dyn std::error::Error + Send + Sync>> {
    // An in-memory portal keeps the example self-contained. On disk, encrypted:
    // PortalBuilder::new(dir).key_provider(Arc::new(KeyFile::new(dir.join("master.key")))).open()
    let portal = Portal::in_memory().await?;

    // Events arrive after each change is committed (subscribe first to see the set-up too).
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut rx = portal.subscribe();
    let seen = events.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let line = serde_json::to_string(&e).unwrap_or_else(|_| format!("{e:?}"));
                    if let Ok(mut v) = seen.lock() {
                        v.push(line);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("missed {n} events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    configure(&portal).await?;

    // The WebDAV front end as a plain request service (authentication, locks and the
    // principal's tree included); no listener of its own.
    let dav = sdx_portal::webdav::mount::builder(&portal, addr)
        .await?
        .build_service();

    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let ev = events.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                _ = token.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let (dav, ev) = (dav.clone(), ev.clone());
            let svc = hyper::service::service_fn(move |req| {
                let (dav, ev) = (dav.clone(), ev.clone());
                async move { Ok::<_, Infallible>(route(req, remote, dav, ev).await) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Host {
        addr,
        portal,
        events,
        stop,
        task,
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let host = start("127.0.0.1:8080".parse()?).await?;
    println!(
        "host app on http://{}/ (routes /health, /api/events)",
        host.addr
    );
    println!(
        "portal WebDAV on http://{}/dav/ as {CLIENT} / {CLIENT_PASSWORD}",
        host.addr
    );
    tokio::signal::ctrl_c().await?;
    host.stop().await;
    Ok(())
}

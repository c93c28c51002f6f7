//! Shared by the WebDAV integration tests: the demo portal with a second client on a second matter,
//! the real server on loopback, a keep-alive HTTP/1.1 client for raw requests, and external tools.
#![allow(dead_code)]

use base64::Engine;
use sdx_portal::model::{Actor, ParticipantId, Principal};
use sdx_portal::tree::WriteOptions;
use sdx_portal::webdav::RunningServer;
use sdx_portal::{Portal, demo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The demo matter (Alice's), as a URL path segment.
pub const M1: &str = "2026-001%20Smith%20v%20Jones";
/// Bob's matter, which Alice must never reach.
pub const M2_NAME: &str = "2026-002 Other v Else";
/// The same, URL-encoded.
pub const M2: &str = "2026-002%20Other%20v%20Else";
/// Bob's login.
pub const BOB: &str = "bob@other.test";
/// What lies in Bob's matter.
pub const SECRET: &[u8] = b"bob's confidential settlement figures";

/// The demo portal, plus Bob (a client on 2026-002 only) and a document in his matter.
pub struct World {
    /// The portal.
    pub portal: Portal,
    /// The demo set-up.
    pub demo: demo::Demo,
    /// Bob's participation in 2026-002.
    pub bob_part: ParticipantId,
    /// The 2026-002 matter.
    pub m2: sdx_portal::model::MatterId,
}

impl World {
    /// An in-memory world.
    pub async fn new() -> World {
        Self::with_portal(Portal::in_memory().await.unwrap()).await
    }

    /// A world in `portal`.
    pub async fn with_portal(portal: Portal) -> World {
        let demo = demo::provision(&portal).await.unwrap();
        let sys = Actor::system();
        let general = portal
            .find_matter_type(&sys, "General")
            .await
            .unwrap()
            .unwrap();
        let client_t = portal
            .find_participant_type(&sys, "Client")
            .await
            .unwrap()
            .unwrap();
        let m2 = portal
            .create_matter(&sys, "2026-002", "Other v Else", general)
            .await
            .unwrap();
        let bob = portal.create_contact(&sys, "Bob Other", BOB).await.unwrap();
        portal
            .create_portal_login(&sys, bob, Some(demo::DEMO_PASSWORD))
            .await
            .unwrap();
        let bob_part = portal
            .add_participant(&sys, m2, bob, client_t)
            .await
            .unwrap();
        portal.grant_access(&sys, m2, bob_part).await.unwrap();
        let staff = portal.tree(Actor::api(Principal::Staff(demo.staff)));
        let mut up = staff
            .open_write(
                &format!("/{M2_NAME}/Client Documents/secret.txt"),
                WriteOptions::upload(),
            )
            .await
            .unwrap();
        up.write(SECRET).await.unwrap();
        up.commit().await.unwrap();
        World {
            portal,
            demo,
            bob_part,
            m2,
        }
    }

    /// Starts the WebDAV server for this portal on loopback (plain HTTP).
    pub async fn serve(&self) -> Srv {
        let server =
            sdx_portal::webdav::mount::builder(&self.portal, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap()
                .bind()
                .await
                .unwrap()
                .spawn();
        let addr = server.local_addr();
        Srv {
            server,
            addr,
            base: format!("http://{addr}/dav"),
        }
    }
}

/// A running server.
pub struct Srv {
    /// The server.
    pub server: RunningServer,
    /// Its address.
    pub addr: SocketAddr,
    /// `http://addr/dav`
    pub base: String,
}

/// `user:password` of the demo client (Alice).
pub fn alice() -> String {
    format!("{}:{}", demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
}

/// `user:password` of the demo staff login.
pub fn staff() -> String {
    format!("{}:{}", demo::DEMO_STAFF_EMAIL, demo::DEMO_PASSWORD)
}

/// `user:password` of Bob.
pub fn bob() -> String {
    format!("{BOB}:{}", demo::DEMO_PASSWORD)
}

/// An `Authorization` header line for `user:password`.
pub fn auth(userpass: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

/// Whether an external tool is present; panics when it is missing and CI=true.
pub fn have_tool(name: &str) -> bool {
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

/// Runs curl (HTTP/1.1, silent, errors shown) and returns (status code, body). `args` come
/// before the URL list.
pub fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "--http1.1", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code (0 if none arrived).
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
    /// Body bytes.
    pub raw: Vec<u8>,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection for hand-made requests.
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    head_request: bool,
    addr: SocketAddr,
    /// The server said `Connection: close`: the next request reconnects (as clients do).
    closed: bool,
    /// How many times it reconnected.
    pub reconnects: usize,
}

impl Conn {
    /// Connects.
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            head_request: false,
            addr,
            closed: false,
            reconnects: 0,
        }
    }

    /// Sends a request with a Content-Length body; `head` holds extra header lines (each ending
    /// in CRLF). Reads one response.
    pub async fn req(&mut self, method: &str, path: &str, head: &str, body: &[u8]) -> Resp {
        if self.closed {
            self.s = TcpStream::connect(self.addr).await.unwrap();
            self.buf.clear();
            self.closed = false;
            self.reconnects += 1;
        }
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n{head}\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.head_request = method == "HEAD";
        self.send_raw(&req).await
    }

    /// Sends raw bytes, then reads one response.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Resp {
        if self.s.write_all(bytes).await.is_err() {
            return Resp {
                status: 0,
                headers: Vec::new(),
                body: String::new(),
                raw: Vec::new(),
            };
        }
        self.read_response().await
    }

    /// Writes raw bytes without reading.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut tmp = vec![0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(30), self.s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads one response (Content-Length, chunked, or until close).
    pub async fn read_response(&mut self) -> Resp {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                return Resp {
                    status: 0,
                    headers: Vec::new(),
                    body: String::from_utf8_lossy(&self.buf).into_owned(),
                    raw: self.buf.clone(),
                };
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
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
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        if get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.closed = true;
        }
        let mut body = Vec::new();
        if std::mem::take(&mut self.head_request) || (100..200).contains(&status) {
            // No body.
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !self.fill().await {
                        break usize::MAX;
                    }
                };
                if line_end == usize::MAX {
                    break;
                }
                let size = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .unwrap_or(0);
                self.buf.drain(..line_end + 2);
                while self.buf.len() < n + 2 {
                    if !self.fill().await {
                        break;
                    }
                }
                let take = n.min(self.buf.len());
                body.extend_from_slice(&self.buf[..take]);
                self.buf.drain(..(n + 2).min(self.buf.len()));
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < n {
                if !self.fill().await {
                    break;
                }
            }
            let take = n.min(self.buf.len());
            body.extend_from_slice(&self.buf[..take]);
            self.buf.drain(..take);
        } else if status >= 200 && status != 204 && status != 304 {
            while self.fill().await {}
            body.append(&mut self.buf);
        }
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            raw: body,
        }
    }
}

/// One request on a fresh connection.
pub async fn http(addr: SocketAddr, method: &str, path: &str, head: &str, body: &[u8]) -> Resp {
    Conn::open(addr).await.req(method, path, head, body).await
}

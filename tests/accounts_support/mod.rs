//! Shared helpers for the accounts tests: a portal served over WebDAV (with the account pages on
//! its fallback) and SFTP on loopback, reading mails from the file outbox or a memory mailer,
//! curl and paramiko drivers with deadlines.
#![allow(dead_code)]

use sdx_portal::accounts::mailer::{Email, MemoryMailer};
use sdx_portal::accounts::templates::BaseUrl;
use sdx_portal::audit::{AuditEntry, AuditFilter};
use sdx_portal::model::*;
use sdx_portal::sftp::{HostKey, RunningSftpServer};
use sdx_portal::webdav::{RunningServer, ServerLimits};
use sdx_portal::{Portal, PortalBuilder};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The firm name every test portal uses.
pub const FIRM: &str = "Dewey & Partners";
/// A password that passes the strength rules.
pub const GOOD_PW: &str = "lantern meadow oxide 42";

/// True when running under CI: missing tools are failures there.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One portal with its servers.
pub struct Env {
    /// The portal.
    pub portal: Portal,
    /// The system acting through the API (set-up).
    pub firm: Actor,
    /// A staff member acting through the API.
    pub staff: Actor,
    /// `http://127.0.0.1:PORT` of the WebDAV listener (pages included).
    pub base: String,
    /// The SFTP port.
    pub sftp_port: u16,
    /// The memory mailer, if the portal uses one (else the file outbox in `dir/outbox`).
    pub memory: Option<Arc<MemoryMailer>>,
    /// The data dir (kept alive).
    pub dir: tempfile::TempDir,
    web: Option<RunningServer>,
    sftp: Option<RunningSftpServer>,
    /// Participant type "Client".
    pub client: ParticipantTypeId,
    /// Participant type "Other Side".
    pub other_side: ParticipantTypeId,
    /// Matter type "General" (`Client Documents` Full for clients; `Correspondence` List+Read
    /// for the other side; `Internal` for staff only).
    pub general: MatterTypeId,
}

/// Options for [`Env::start`].
pub struct Opts {
    /// Use a memory mailer (else the default file outbox).
    pub memory_mailer: bool,
    /// Extra builder settings.
    pub tweak: Box<dyn FnOnce(PortalBuilder) -> PortalBuilder + Send>,
    /// The WebDAV login cache lifetime.
    pub auth_cache_ttl: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            memory_mailer: false,
            tweak: Box::new(|b| b),
            auth_cache_ttl: ServerLimits::default().auth_cache_ttl,
        }
    }
}

impl Env {
    /// An on-disk portal (default file outbox) with WebDAV+pages and SFTP running.
    pub async fn start(opts: Opts) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let web_port = free_port();
        let sftp_port = free_port();
        let base = format!("http://127.0.0.1:{web_port}");
        let mut b = PortalBuilder::new(dir.path())
            .base_url(BaseUrl::parse(&base).expect("base url"))
            .firm_name(FIRM)
            .sftp_address(format!("127.0.0.1:{sftp_port}"));
        let memory = opts.memory_mailer.then(|| Arc::new(MemoryMailer::new()));
        if let Some(m) = &memory {
            b = b.mailer(m.clone());
        }
        let portal = (opts.tweak)(b).open().await.expect("open portal");
        let firm = Actor::system();
        let staff_login = portal
            .create_staff_login(&firm, "staff@dewey.test", "Sam Staff", None)
            .await
            .expect("staff");
        let staff = Actor::api(Principal::Staff(staff_login));
        let client = portal
            .create_participant_type(&firm, "Client")
            .await
            .expect("Client");
        let other_side = portal
            .create_participant_type(&firm, "Other Side")
            .await
            .expect("Other Side");
        let general = portal
            .create_matter_type(
                &firm,
                "General",
                &["Client Documents", "Correspondence", "Internal"],
            )
            .await
            .expect("General");
        portal
            .set_portal_permissions(
                &firm,
                general,
                "Client Documents",
                client,
                Permissions::FULL,
            )
            .await
            .expect("perms");
        let lr = Permissions::NONE
            .with(Permission::List)
            .with(Permission::Read);
        portal
            .set_portal_permissions(&firm, general, "Correspondence", client, lr)
            .await
            .expect("perms");
        portal
            .set_portal_permissions(&firm, general, "Correspondence", other_side, lr)
            .await
            .expect("perms");
        let limits = ServerLimits {
            auth_cache_ttl: opts.auth_cache_ttl,
            ..Default::default()
        };
        let addr: SocketAddr = format!("127.0.0.1:{web_port}").parse().expect("addr");
        let web = sdx_portal::webdav::mount::builder(&portal, addr)
            .await
            .expect("webdav builder")
            .limits(limits)
            .fallback(sdx_portal::accounts::web::invite_pages(portal.clone()))
            .bind()
            .await
            .expect("bind webdav")
            .spawn();
        let host_key = HostKey::generate_ephemeral().expect("host key");
        let sftp = sdx_portal::sftp::mount::builder(
            &portal,
            host_key,
            format!("127.0.0.1:{sftp_port}").parse().expect("addr"),
        )
        .start()
        .await
        .expect("start sftp");
        Env {
            portal,
            firm,
            staff,
            base,
            sftp_port,
            memory,
            dir,
            web: Some(web),
            sftp: Some(sftp),
            client,
            other_side,
            general,
        }
    }

    /// Stops both servers.
    pub async fn stop(mut self) {
        if let Some(w) = self.web.take() {
            w.shutdown().await.expect("webdav shutdown");
        }
        if let Some(s) = self.sftp.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), s.stop()).await;
        }
    }

    /// Opens a matter; returns its id and its folder name in trees.
    pub async fn matter(&self, number: &str, title: &str) -> (MatterId, String) {
        let id = self
            .portal
            .create_matter(&self.firm, number, title, self.general)
            .await
            .expect("matter");
        (id, format!("{number} {title}"))
    }

    /// A contact on `matter` as `ptype`; returns (contact, participant).
    pub async fn contact_on(
        &self,
        name: &str,
        email: &str,
        matter: MatterId,
        ptype: ParticipantTypeId,
    ) -> (ContactId, ParticipantId) {
        let c = match self
            .portal
            .find_contact(&self.firm, email)
            .await
            .expect("find contact")
        {
            Some(c) => c.id,
            None => self
                .portal
                .create_contact(&self.firm, name, email)
                .await
                .expect("contact"),
        };
        let p = self
            .portal
            .add_participant(&self.firm, matter, c, ptype)
            .await
            .expect("participant");
        (c, p)
    }

    /// Every mail sent so far, oldest first (memory mailer or file outbox).
    pub fn mails(&self) -> Vec<Email> {
        match &self.memory {
            Some(m) => m.sent(),
            None => read_outbox(&self.dir.path().join("outbox")),
        }
    }

    /// Mails to `to`, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<Email> {
        self.mails().into_iter().filter(|m| m.to == to).collect()
    }

    /// Audit entries, newest first.
    pub async fn audit(&self) -> Vec<AuditEntry> {
        self.portal
            .audit_query(
                &self.staff,
                AuditFilter {
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
            .await
            .expect("audit")
    }

    /// Audit entries whose action prints as `action`.
    pub async fn audit_of(&self, action: &str) -> Vec<AuditEntry> {
        self.audit()
            .await
            .into_iter()
            .filter(|e| e.action.to_string() == action)
            .collect()
    }

    /// `http://…/dav/`.
    pub fn dav(&self) -> String {
        format!("{}/dav/", self.base)
    }
}

/// Reads the `.eml` files of a file outbox (oldest first) back into [`Email`]s.
pub fn read_outbox(dir: &Path) -> Vec<Email> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files
        .iter()
        .map(|f| parse_eml(&std::fs::read_to_string(f).expect("read eml")))
        .collect()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_part(part: &str) -> (String, String) {
    let (head, body) = part.split_once("\r\n\r\n").unwrap_or((part, ""));
    let ct = header(head, "Content-Type").unwrap_or_default().to_owned();
    let body = match header(head, "Content-Transfer-Encoding").map(str::to_ascii_lowercase) {
        Some(e) if e == "quoted-printable" => decode_qp(body),
        Some(e) if e == "base64" => {
            use base64::Engine;
            let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(clean)
                    .expect("base64 part"),
            )
            .into_owned()
        }
        _ => body.to_owned(),
    };
    (ct, body.replace("\r\n", "\n"))
}

fn decode_subject(s: &str) -> String {
    // lettre writes non-ASCII or special subjects as RFC 2047 `=?utf-8?b?…?=` words.
    let mut out = String::new();
    for word in s.split_whitespace() {
        if let Some(inner) = word
            .strip_prefix("=?utf-8?b?")
            .and_then(|w| w.strip_suffix("?="))
        {
            use base64::Engine;
            let d = base64::engine::general_purpose::STANDARD
                .decode(inner)
                .expect("encoded word");
            out.push_str(&String::from_utf8_lossy(&d));
        } else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// Parses one message as written by the file outbox.
pub fn parse_eml(raw: &str) -> Email {
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers");
    // Unfold continuation lines.
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let to = header(&head, "To").unwrap_or_default().to_owned();
    let subject = decode_subject(header(&head, "Subject").unwrap_or_default());
    let ct = header(&head, "Content-Type").unwrap_or_default();
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_owned())
        .expect("multipart boundary");
    let mut text = String::new();
    let mut html = String::new();
    for part in body.split(&format!("--{boundary}")) {
        let part = part.trim_start_matches("\r\n");
        if part.starts_with("--") || part.trim().is_empty() {
            continue;
        }
        let (ct, b) = decode_part(part);
        if ct.starts_with("text/plain") {
            text = b;
        } else if ct.starts_with("text/html") {
            html = b;
        }
    }
    Email {
        to,
        subject,
        text,
        html,
    }
}

/// The 43-character token after `marker` (`/invite/` or `/reset/`) in a mail's text.
pub fn token_in(text: &str, marker: &str) -> String {
    let i = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} link in {text}"));
    let t: String = text[i + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(t.len(), 43, "token in {text}");
    t
}

/// One curl call's result.
#[derive(Debug)]
pub struct Http {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Response headers (raw).
    pub headers: String,
}

/// Runs curl (30 s cap) and returns status, headers and body. Panics if curl is missing.
pub fn curl(args: &[&str]) -> Http {
    let hdr = tempfile::NamedTempFile::new().expect("tmp");
    let out = Command::new("curl")
        .args(["-s", "-S", "--http1.1", "--max-time", "30", "-D"])
        .arg(hdr.path())
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("curl is required for this test (apt-get install curl): {e}"));
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    Http {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        headers: std::fs::read_to_string(hdr.path()).unwrap_or_default(),
    }
}

/// The value of the hidden `csrf` field in a page.
pub fn csrf_field(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("csrf field");
    let rest = &page[i + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_owned()
}

/// Form-encodes one value.
pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

/// A browser-like session with a cookie jar: GET the form, POST it back.
pub struct Browser {
    jar: tempfile::NamedTempFile,
}

impl Browser {
    /// A session with an empty cookie jar.
    pub fn new() -> Browser {
        Browser {
            jar: tempfile::NamedTempFile::new().expect("jar"),
        }
    }

    /// GET with the jar.
    pub fn get(&self, url: &str) -> Http {
        let j = self.jar.path().to_str().expect("path");
        curl(&["-b", j, "-c", j, url])
    }

    /// POST a form with the jar.
    pub fn post(&self, url: &str, fields: &[(&str, &str)]) -> Http {
        let j = self.jar.path().to_str().expect("path");
        let data = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        curl(&["-b", j, "-c", j, "--data-raw", &data, url])
    }
}

/// PROPFIND Depth 1 on `url` as `user`/`pw`: (status, decoded names of the entries below).
pub fn dav_list(url: &str, user: &str, pw: &str) -> (u16, Vec<String>) {
    let up = format!("{user}:{pw}");
    let r = curl(&["-u", &up, "-X", "PROPFIND", "-H", "Depth: 1", url]);
    let mut names = Vec::new();
    for chunk in r.body.split("href>").skip(1) {
        if !(chunk.starts_with('/') || chunk.starts_with("http")) {
            continue;
        }
        let href = chunk.split('<').next().unwrap_or_default();
        let seg = href
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        names.push(percent_decode(seg));
    }
    // The first href is the collection itself.
    if !names.is_empty() {
        names.remove(0);
    }
    names.sort();
    (r.status, names)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether python3 with paramiko is available; under CI its absence is a failure.
pub fn paramiko_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import paramiko"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "python3 with paramiko is required for the SFTP part (pip install paramiko)";
        assert!(!ci(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

const SFTP_LS: &str = r#"
import json, socket, sys, paramiko
port, user, pw, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sock = socket.create_connection(("127.0.0.1", port), timeout=30)
t = paramiko.Transport(sock)
t.start_client(timeout=30)
try:
    t.auth_password(user, pw)
except paramiko.AuthenticationException as e:
    print(json.dumps({"error": "auth", "detail": str(e)}), flush=True)
    sys.exit(0)
sftp = paramiko.SFTPClient.from_transport(t)
print(json.dumps({"names": sorted(sftp.listdir(path))}), flush=True)
t.close()
"#;

/// Lists `path` over SFTP with paramiko as `user`/`pw` (60 s deadline). `Err("auth")` when the
/// server refuses the password.
pub async fn sftp_list(port: u16, user: &str, pw: &str, path: &str) -> Result<Vec<String>, String> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c")
        .arg(SFTP_LS)
        .arg(port.to_string())
        .arg(user)
        .arg(pw)
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("paramiko did not finish within 60 s")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "paramiko output {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_owned());
    }
    Ok(v["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}

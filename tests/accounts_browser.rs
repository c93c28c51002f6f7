//! A real browser accepts an invitation: headless Chromium (Debian's `chromium`), driven over
//! the W3C WebDriver protocol through `chromedriver`, opens the link read from the file outbox,
//! sets a password and submits the form — with JavaScript switched off, so the page must work
//! without it. The new login then lists its matter over WebDAV (curl).
//!
//! Needs `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver) and curl.
//! Without them the test is skipped with a message, except under `CI=true`, where it fails.
//!
//! The WebDriver client is a few lines of HTTP/1.1 over a `TcpStream` (JSON in, JSON out), so
//! no WebDriver crate (and its dependency tree) is needed.

mod accounts_support;

use accounts_support::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C key under which an element reference is returned.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromedriver() -> Option<String> {
    for c in [
        "chromedriver",
        "/usr/bin/chromedriver",
        "/usr/lib/chromium/chromedriver",
    ] {
        if Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(c.to_owned());
        }
    }
    None
}

/// Our chromedriver child, killed (by handle) when the test ends.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = request(self.port, "DELETE", &format!("/session/{s}"), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver call: returns the response's `value`, or the error text.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(90)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // Read the head, then exactly Content-Length bytes (chromedriver keeps connections open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let lower = head.to_ascii_lowercase();
    let mut body_bytes = raw[head_end + 4..].to_vec();
    let payload = if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while body_bytes.len() < len {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            body_bytes.extend_from_slice(&buf[..n]);
        }
        body_bytes.truncate(len);
        String::from_utf8_lossy(&body_bytes).into_owned()
    } else if lower.contains("transfer-encoding: chunked") {
        // Read until the terminating chunk, then decode.
        while !body_bytes.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            body_bytes.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&body_bytes).into_owned();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.push_str(tail.get(..n).ok_or("short chunk")?);
            rest = tail.get(n + 2..).unwrap_or_default();
        }
        out
    } else {
        s.read_to_end(&mut body_bytes).map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&body_bytes).into_owned()
    };
    let v: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status >= 400 {
        return Err(format!("{method} {path}: {status} {}", v["value"]));
    }
    Ok(v["value"].clone())
}

impl Driver {
    fn start(bin: &str) -> Driver {
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver {
            child,
            port,
            session: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if request(port, "GET", "/status", None).is_ok_and(|v| v["ready"] == json!(true)) {
                return d;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn new_session(&mut self, profile: &std::path::Path) {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--window-size=1000,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
                // JavaScript off: the pages must work without it.
                "prefs": {"profile.managed_default_content_settings.javascript": 2}
            }
        }}});
        let v = request(self.port, "POST", "/session", Some(&caps)).expect("new session");
        self.session = Some(v["sessionId"].as_str().expect("session id").to_owned());
    }

    fn call(&self, method: &str, tail: &str, body: Option<Value>) -> Value {
        let s = self.session.as_deref().expect("session");
        request(
            self.port,
            method,
            &format!("/session/{s}{tail}"),
            body.as_ref(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.source();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {needle:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_accepts_an_invitation_from_the_outbox() {
    let driver_bin = chromedriver();
    let have_chromium = std::path::Path::new(CHROMIUM).exists();
    let (Some(driver_bin), true) = (driver_bin, have_chromium) else {
        let msg =
            "chromium and chromedriver are required (apt-get install -y chromium chromium-driver)";
        assert!(!ci(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let env = Env::start(Opts::default()).await; // file outbox in DATA/outbox
    let (m, mname) = env.matter("2026-401", "Browser v Driver").await;
    let (_, p) = env
        .contact_on("Quinn Client", "quinn@client.test", m, env.client)
        .await;
    env.portal
        .grant_access(&env.staff, m, p)
        .await
        .expect("grant");
    // The link, as the person would find it: in the .eml file the outbox wrote.
    let mails = read_outbox(&env.dir.path().join("outbox"));
    let mail = mails
        .iter()
        .find(|m| m.to == "quinn@client.test")
        .expect("invitation in the outbox");
    let token = token_in(&mail.text, "/invite/");
    let link = format!("{}/invite/{token}", env.base);
    assert!(mail.text.contains(&link));

    let dav = env.dav();
    let profile = tempfile::tempdir().expect("profile dir");
    tokio::task::spawn_blocking(move || {
        let mut d = Driver::start(&driver_bin);
        d.new_session(profile.path());
        d.go(&link);
        let form = d.wait_for("Create your login");
        assert!(form.contains("quinn@client.test"));
        // A weak password first: the page says why and keeps the form.
        d.type_into("#password", "password123456");
        d.type_into("#confirm", "password123456");
        d.click("button[type=submit]");
        let again = d.wait_for("too common");
        assert!(again.contains("id=\"password\""));
        // Then a good one.
        d.type_into("#password", GOOD_PW);
        d.type_into("#confirm", GOOD_PW);
        d.click("button[type=submit]");
        let done = d.wait_for("is ready");
        assert!(done.contains(&dav), "{done}");
        let title = d.call("GET", "/title", None);
        assert_eq!(title.as_str(), Some("You are all set – Dewey & Partners"));
        // The new login lists its matter over WebDAV.
        let (st, names) = dav_list(&dav, "quinn@client.test", GOOD_PW);
        assert_eq!(st, 207);
        assert_eq!(names, vec![mname]);
        // Opening the link again: already used.
        d.go(&link);
        d.wait_for("already accepted");
    })
    .await
    .expect("browser session");
    env.stop().await;
}

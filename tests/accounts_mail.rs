//! A real SMTP server (Python aiosmtpd on loopback, started by the test) receives the
//! invitation sent by `SmtpMailer`, and the one a portal sends when staff grant access.
//!
//! Needs `python3` with the `aiosmtpd` package (`pip install aiosmtpd`). Without them the
//! test is skipped with a message, except under `CI=true`, where it fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sdx_portal::accounts::mailer::{Mailer, SmtpConfig, SmtpMailer, SmtpSecurity};
use sdx_portal::accounts::templates::{BaseUrl, invite_new_login, notify_documents};
use sdx_portal::accounts::tokens::{DEFAULT_INVITE_TTL, Token};

/// The SMTP sink: stores each message as JSON (envelope + decoded subject and parts).
const SERVER: &str = r#"
import json, os, sys, uuid, email, email.policy
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])

class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        plain = msg.get_body(preferencelist=('plain',))
        html = msg.get_body(preferencelist=('html',))
        rec = {
            'mail_from': envelope.mail_from,
            'rcpt_tos': envelope.rcpt_tos,
            'subject': str(msg['subject']),
            'from': str(msg['from']),
            'to': str(msg['to']),
            'content_type': msg.get_content_type(),
            'text': plain.get_content() if plain is not None else None,
            'html': html.get_content() if html is not None else None,
        }
        path = os.path.join(out, uuid.uuid4().hex)
        with open(path + '.tmp', 'w') as f:
            json.dump(rec, f)
        os.rename(path + '.tmp', path + '.json')
        return '250 Message accepted for delivery'

controller = Controller(Sink(), hostname='127.0.0.1', port=port)
controller.start()
print('READY', flush=True)
sys.stdin.read()
controller.stop()
"#;

struct SmtpSink {
    child: Child,
    port: u16,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Our own child, by handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn aiosmtpd_available() -> bool {
    Command::new("python3")
        .args(["-c", "import aiosmtpd.controller"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the sink, or returns `None` (skip) when the tool is missing outside CI.
fn start_sink(dir: &Path) -> Option<SmtpSink> {
    if !aiosmtpd_available() {
        let msg = "python3 with aiosmtpd is required for this test (pip install aiosmtpd)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SERVER)
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let sink = SmtpSink { child, port };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("aiosmtpd did not start within 30 s");
    assert_eq!(line.trim(), "READY", "unexpected output from the SMTP sink");
    Some(sink)
}

fn wait_for_messages(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("read sink dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        if files.len() >= n || Instant::now() > deadline {
            files.sort();
            return files
                .iter()
                .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json"))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_server_receives_the_invitation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(sink) = start_sink(dir.path()) else {
        return;
    };
    let mailer = SmtpMailer::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(sink.port),
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "Dewey & Partners <portal@dewey.example>".into(),
        timeout_secs: 10,
    })
    .expect("mailer");

    let base = BaseUrl::parse("https://portal.dewey.example/").expect("base url");
    let (token, hash) = Token::generate().expect("token");
    let link = base.invite_link(&token);
    let invite = invite_new_login(
        "alice@example.com",
        "Dewey & Partners",
        "Estate of J. Doe",
        &link,
        DEFAULT_INVITE_TTL,
    );
    mailer.send(invite).await.expect("send invitation");
    let names = ["a.pdf", "b <draft>.docx"];
    mailer
        .send(notify_documents(
            "bob@example.com",
            "Dewey & Partners",
            "Estate of J. Doe",
            &names,
        ))
        .await
        .expect("send notification");

    let got = wait_for_messages(dir.path(), 2);
    assert_eq!(got.len(), 2, "{got:#?}");
    let inv = got
        .iter()
        .find(|m| m["rcpt_tos"] == serde_json::json!(["alice@example.com"]))
        .expect("invitation received");
    assert_eq!(inv["mail_from"], "portal@dewey.example");
    assert_eq!(
        inv["subject"],
        "Dewey & Partners has invited you to its secure document portal"
    );
    assert_eq!(inv["from"], "Dewey & Partners <portal@dewey.example>");
    assert_eq!(inv["content_type"], "multipart/alternative");
    let text = inv["text"].as_str().expect("text part");
    let html = inv["html"].as_str().expect("html part");
    assert!(text.contains(&link), "{text}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    assert!(text.contains("Estate of J. Doe") && text.contains("7 days"));
    // The link's token is the one whose hash the store would keep.
    let received_token = link.rsplit('/').next().expect("token in link");
    assert!(hash.matches(received_token));

    let note = got
        .iter()
        .find(|m| m["rcpt_tos"] == serde_json::json!(["bob@example.com"]))
        .expect("notification received");
    assert_eq!(
        note["subject"],
        "Dewey & Partners: 2 new documents in \"Estate of J. Doe\""
    );
    assert!(
        note["html"]
            .as_str()
            .is_some_and(|h| h.contains("b &lt;draft&gt;.docx"))
    );
    drop(sink);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_access_mails_the_invitation_over_smtp() {
    use sdx_portal::PortalBuilder;
    use sdx_portal::model::*;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let Some(sink) = start_sink(dir.path()) else {
        return;
    };
    let mailer = SmtpMailer::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(sink.port),
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "Dewey & Partners <portal@dewey.example>".into(),
        timeout_secs: 10,
    })
    .expect("mailer");
    let portal = PortalBuilder::memory()
        .mailer(Arc::new(mailer))
        .base_url(BaseUrl::parse("https://portal.dewey.example").expect("base"))
        .firm_name("Dewey & Partners")
        .open()
        .await
        .expect("portal");
    let firm = Actor::system();
    let client = portal
        .create_participant_type(&firm, "Client")
        .await
        .expect("ptype");
    let mt = portal
        .create_matter_type(&firm, "General", &["Client Documents"])
        .await
        .expect("mtype");
    let m = portal
        .create_matter(&firm, "2026-077", "Estate of J. Doe", mt)
        .await
        .expect("matter");
    let c = portal
        .create_contact(&firm, "Alice", "alice@example.com")
        .await
        .expect("contact");
    let p = portal
        .add_participant(&firm, m, c, client)
        .await
        .expect("participant");
    let g = portal.grant_access(&firm, m, p).await.expect("grant");
    assert!(g.mailed, "{g:?}");

    let got = wait_for_messages(dir.path(), 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let inv = &got[0];
    assert_eq!(inv["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert_eq!(inv["mail_from"], "portal@dewey.example");
    assert_eq!(
        inv["subject"],
        "Dewey & Partners has invited you to its secure document portal"
    );
    let text = inv["text"].as_str().expect("text part");
    assert!(text.contains("2026-077 Estate of J. Doe"), "{text}");
    let start = text
        .find("https://portal.dewey.example/invite/")
        .expect("link in the text");
    let token: String = text[start + "https://portal.dewey.example/invite/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    // The received link is the live one.
    let view = portal
        .open_invitation(&token, None)
        .await
        .expect("valid link");
    assert_eq!(view.email, "alice@example.com");
    assert_eq!(view.matter.as_deref(), Some("2026-077 Estate of J. Doe"));
    drop(sink);
}

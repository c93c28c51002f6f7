//! Sending e-mail: the [`Mailer`] trait and its implementations.
//!
//! - [`FileOutbox`]: one RFC 5322 `.eml` file per message in a folder (the default for the
//!   demo and tests). Files appear atomically (written to a hidden temporary name, synced, then
//!   renamed) and their names sort by creation time.
//! - [`SmtpMailer`]: SMTP submission through `lettre` with STARTTLS, implicit TLS, or, to a
//!   loopback server only, no encryption.
//! - [`MemoryMailer`]: keeps messages in memory, for tests of code that sends mail.
//!
//! Every message is `multipart/alternative` with a plain-text and an HTML part. Configure
//! with [`MailConfig`] (the `[mail]` table of the config file) and [`mailer_from_config`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

/// The sender used when none is configured.
pub const DEFAULT_FROM: &str = "sdx-portal <noreply@localhost>";
/// Longest subject accepted, in bytes (longer ones are cut at a character boundary).
const MAX_SUBJECT_BYTES: usize = 400;

/// One message to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// Recipient address (`alice@example.com` or `Alice <alice@example.com>`).
    pub to: String,
    /// Subject line (control characters are replaced by spaces when sent).
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body (already escaped by whoever built it; see the templates module).
    pub html: String,
}

/// What went wrong sending mail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// An address could not be parsed.
    #[error("invalid e-mail address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The message could not be assembled.
    #[error("could not build the e-mail: {0}")]
    Build(String),
    /// Writing to the outbox folder failed.
    #[error("mail outbox {path}: {source}")]
    Outbox {
        /// File or folder concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SMTP server could not be reached or refused the message.
    #[error("SMTP delivery via {host}:{port} failed: {reason}")]
    Smtp {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// Error from the SMTP client (never contains the password).
        reason: String,
    },
    /// Unencrypted SMTP to a host that is not loopback.
    #[error(
        "refusing unencrypted SMTP to {0}: security = \"none\" is only allowed to a loopback address; use \"starttls\" or \"tls\""
    )]
    InsecureRemote(String),
    /// The mail configuration is unusable.
    #[error("mail configuration: {0}")]
    Config(String),
}

impl From<MailError> for crate::Error {
    fn from(e: MailError) -> Self {
        match e {
            MailError::InvalidAddress { .. }
            | MailError::InsecureRemote(_)
            | MailError::Config(_) => crate::Error::Invalid(e.to_string()),
            MailError::Outbox { ref source, .. } => {
                crate::Error::Io(std::io::Error::new(source.kind(), e.to_string()))
            }
            MailError::Build(_) | MailError::Smtp { .. } => {
                crate::Error::Io(std::io::Error::other(e.to_string()))
            }
        }
    }
}

/// Something that delivers [`Email`]s.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Delivers one message (or hands it to the next hop).
    async fn send(&self, msg: Email) -> Result<(), MailError>;
}

/// Parses a mailbox (`a@b.example` or `Name <a@b.example>`).
pub fn parse_mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| MailError::InvalidAddress {
            address: address.chars().take(200).collect(),
            reason: e.to_string(),
        })
}

fn clean_subject(subject: &str) -> String {
    let mut s: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_SUBJECT_BYTES {
        let mut cut = MAX_SUBJECT_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Assembles the RFC 5322 message: `multipart/alternative` (text, then HTML), with Date and
/// Message-ID.
pub fn build_message(from: &Mailbox, msg: &Email) -> Result<Message, MailError> {
    let to = parse_mailbox(&msg.to)?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(clean_subject(&msg.subject))
        .message_id(None)
        .multipart(MultiPart::alternative_plain_html(
            msg.text.clone(),
            msg.html.clone(),
        ))
        .map_err(|e| MailError::Build(e.to_string()))
}

/// Writes each message as an `.eml` file into a folder.
#[derive(Debug)]
pub struct FileOutbox {
    dir: PathBuf,
    /// Sender, validated when set.
    from: String,
}

/// Tie-breaker for file names created within the same nanosecond.
static OUTBOX_SEQ: AtomicU64 = AtomicU64::new(0);

impl FileOutbox {
    /// An outbox writing into `dir` (created on first use), sending as [`DEFAULT_FROM`].
    pub fn new(dir: impl Into<PathBuf>) -> FileOutbox {
        FileOutbox {
            dir: dir.into(),
            from: DEFAULT_FROM.to_owned(),
        }
    }

    /// Sets the sender address.
    pub fn with_from(mut self, from: &str) -> Result<FileOutbox, MailError> {
        parse_mailbox(from)?;
        self.from = from.to_owned();
        Ok(self)
    }

    /// The folder written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `.eml` files in the outbox, oldest first.
    pub fn messages(&self) -> Result<Vec<PathBuf>, MailError> {
        list_eml(&self.dir)
    }
}

fn list_eml(dir: &Path) -> Result<Vec<PathBuf>, MailError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MailError::Outbox {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| MailError::Outbox {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".eml") && !name.starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename durable; not all platforms can open a folder, so best effort.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(dest)
}

#[async_trait]
impl Mailer for FileOutbox {
    async fn send(&self, msg: Email) -> Result<(), MailError> {
        let message = build_message(&parse_mailbox(&self.from)?, &msg)?;
        let bytes = message.formatted();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seq = OUTBOX_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{nanos:020}-{:06}-{seq:06}.eml", std::process::id());
        let dir = self.dir.clone();
        let path = tokio::task::spawn_blocking(move || {
            write_atomically(&dir, &name, &bytes).map_err(|source| MailError::Outbox {
                path: dir.join(&name),
                source,
            })
        })
        .await
        .map_err(|e| MailError::Build(format!("outbox task failed: {e}")))??;
        tracing::debug!(path = %path.display(), "mail written to outbox");
        Ok(())
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required, never falls back). Default port 587.
    #[default]
    StartTls,
    /// Implicit TLS from the first byte (SMTPS). Default port 465.
    Tls,
    /// No encryption: only to a loopback address (a local relay, tests). Default port 25.
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

fn default_from() -> String {
    DEFAULT_FROM.to_owned()
}
fn default_timeout() -> u64 {
    30
}

/// SMTP settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name (checked against its TLS certificate) or address.
    pub host: String,
    /// Port; by default 587 (STARTTLS), 465 (TLS) or 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    /// Connection security (`"starttls"`, `"tls"` or `"none"`).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name for SMTP AUTH, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH.
    #[serde(default)]
    pub password: Option<String>,
    /// Sender, e.g. `"Dewey & Partners <portal@dewey.example>"`.
    #[serde(default = "default_from")]
    pub from: String,
    /// Timeout of each SMTP command, in seconds (default 30).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Delivers through an SMTP server (connection pool, one transaction per message).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .finish()
    }
}

impl SmtpMailer {
    /// A mailer for the given server. Nothing is sent or connected until the first message.
    pub fn new(config: SmtpConfig) -> Result<SmtpMailer, MailError> {
        let from = parse_mailbox(&config.from)?;
        let host = config.host.trim().to_owned();
        if host.is_empty() {
            return Err(MailError::Config("smtp host is empty".into()));
        }
        let port = config.port.unwrap_or(config.security.default_port());
        let smtp_err = |e: lettre::transport::smtp::Error| MailError::Smtp {
            host: host.clone(),
            port,
            reason: e.to_string(),
        };
        let builder = match config.security {
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(smtp_err)?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(smtp_err)?
            }
            SmtpSecurity::None => {
                if !is_loopback_host(&host) {
                    return Err(MailError::InsecureRemote(host));
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            }
        };
        let mut builder = builder
            .port(port)
            .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        match (config.username, config.password) {
            (Some(u), Some(p)) => builder = builder.credentials(Credentials::new(u, p)),
            (None, None) => {}
            _ => {
                return Err(MailError::Config(
                    "smtp username and password must be given together".into(),
                ));
            }
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
            host,
            port,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, msg: Email) -> Result<(), MailError> {
        let message = build_message(&self.from, &msg)?;
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError::Smtp {
                host: self.host.clone(),
                port: self.port,
                reason: e.to_string(),
            })?;
        tracing::debug!(host = %self.host, "mail submitted over SMTP");
        Ok(())
    }
}

/// A mailer that refuses every message with a configuration error: the default of a portal
/// that is encrypted at rest and has no mailer configured (writing its mails into the data
/// folder would put client names and matter titles on disk in plaintext).
#[derive(Debug, Clone)]
pub struct NoMailer {
    reason: String,
}

impl NoMailer {
    /// A mailer whose every send fails with `reason`.
    pub fn new(reason: impl Into<String>) -> NoMailer {
        NoMailer {
            reason: reason.into(),
        }
    }
}

#[async_trait]
impl Mailer for NoMailer {
    async fn send(&self, _msg: Email) -> Result<(), MailError> {
        Err(MailError::Config(self.reason.clone()))
    }
}

/// Keeps sent messages in memory (tests, embedding).
#[derive(Debug, Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<Email>>,
}

impl MemoryMailer {
    /// An empty mailer.
    pub fn new() -> MemoryMailer {
        MemoryMailer::default()
    }
    /// Everything sent so far, oldest first.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, msg: Email) -> Result<(), MailError> {
        parse_mailbox(&msg.to)?;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
        Ok(())
    }
}

fn default_outbox_dir() -> PathBuf {
    PathBuf::from("outbox")
}

/// The `[mail]` table of the config file. `transport = "outbox"` (default) or `"smtp"`:
///
/// ```toml
/// [mail]
/// transport = "smtp"
/// host = "smtp.example.com"
/// security = "starttls"   # or "tls", or "none" (loopback only)
/// username = "portal"
/// password = "secret"
/// from = "Dewey & Partners <portal@dewey.example>"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum MailConfig {
    /// Write `.eml` files into a folder.
    Outbox {
        /// The folder (default `outbox`, relative to the working directory).
        #[serde(default = "default_outbox_dir")]
        dir: PathBuf,
        /// Sender address.
        #[serde(default = "default_from")]
        from: String,
    },
    /// Submit over SMTP.
    Smtp(SmtpConfig),
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig::Outbox {
            dir: default_outbox_dir(),
            from: default_from(),
        }
    }
}

/// Builds the mailer a configuration asks for.
pub fn mailer_from_config(config: &MailConfig) -> Result<Arc<dyn Mailer>, MailError> {
    Ok(match config {
        MailConfig::Outbox { dir, from } => Arc::new(FileOutbox::new(dir.clone()).with_from(from)?),
        MailConfig::Smtp(smtp) => Arc::new(SmtpMailer::new(smtp.clone())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &str, subject: &str) -> Email {
        Email {
            to: to.into(),
            subject: subject.into(),
            text: "Hello,\nfollow https://portal.example/invite/abc\n".into(),
            html: "<p>Hello, <a href=\"https://portal.example/invite/abc\">accept</a></p>".into(),
        }
    }

    #[tokio::test]
    async fn outbox_writes_one_eml_per_message_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = FileOutbox::new(dir.path().join("out"))
            .with_from("Dewey & Partners <portal@dewey.example>")
            .unwrap();
        for i in 0..5 {
            outbox
                .send(email("alice@example.com", &format!("message {i}")))
                .await
                .unwrap();
        }
        let files = outbox.messages().unwrap();
        assert_eq!(files.len(), 5);
        for (i, f) in files.iter().enumerate() {
            let raw = std::fs::read_to_string(f).unwrap();
            assert!(raw.contains(&format!("Subject: message {i}\r\n")), "{raw}");
            assert!(raw.contains("To: alice@example.com\r\n"));
            // lettre writes the display name as an RFC 2047 encoded word ('&' is special).
            assert!(
                raw.contains(
                    "From: =?utf-8?b?RGV3ZXkgJiBQYXJ0bmVycw==?= <portal@dewey.example>\r\n"
                ),
                "{raw}"
            );
            assert!(raw.contains("multipart/alternative"));
            assert!(raw.contains("Content-Type: text/plain; charset=utf-8"));
            assert!(raw.contains("Content-Type: text/html; charset=utf-8"));
            assert!(raw.contains("Message-ID: <"));
            assert!(raw.contains("Date: "));
        }
        // No temporary files left behind.
        let all: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
        assert_eq!(all.len(), 5);
    }

    #[tokio::test]
    async fn bad_recipient_and_header_injection() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = FileOutbox::new(dir.path());
        let err = outbox.send(email("not an address", "x")).await.unwrap_err();
        assert!(matches!(err, MailError::InvalidAddress { .. }), "{err}");
        let err = outbox
            .send(email("a@example.com\r\nBcc: evil@example.com", "x"))
            .await
            .unwrap_err();
        assert!(matches!(err, MailError::InvalidAddress { .. }), "{err}");
        outbox
            .send(email("a@example.com", "hi\r\nBcc: evil@example.com"))
            .await
            .unwrap();
        let files = outbox.messages().unwrap();
        let raw = std::fs::read_to_string(&files[0]).unwrap();
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
        assert!(
            raw.contains("Subject: hi  Bcc: evil@example.com\r\n"),
            "{raw}"
        );
    }

    #[tokio::test]
    async fn outbox_reports_unwritable_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let outbox = FileOutbox::new(file.join("sub"));
        let err = outbox.send(email("a@example.com", "x")).await.unwrap_err();
        assert!(matches!(err, MailError::Outbox { .. }), "{err}");
        let e: crate::Error = err.into();
        assert_eq!(e.kind(), "io");
    }

    #[test]
    fn config_parsing() {
        let c: MailConfig = toml::from_str("transport = \"outbox\"").unwrap();
        assert_eq!(c, MailConfig::default());
        let c: MailConfig = toml::from_str(
            "transport = \"smtp\"\nhost = \"smtp.example.com\"\nsecurity = \"tls\"\nusername = \"u\"\npassword = \"hunter2hunter2\"\nfrom = \"P <p@example.com>\"\n",
        )
        .unwrap();
        let MailConfig::Smtp(s) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(s.security, SmtpSecurity::Tls);
        assert_eq!(s.port, None);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(
            toml::from_str::<MailConfig>("transport = \"smtp\"\nhost = \"h\"\nbogus = 1").is_err()
        );
        assert!(toml::from_str::<MailConfig>("transport = \"pigeon\"").is_err());
    }

    #[tokio::test]
    async fn smtp_security_rules() {
        let base = SmtpConfig {
            host: "smtp.example.com".into(),
            port: None,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: DEFAULT_FROM.into(),
            timeout_secs: 5,
        };
        let err = SmtpMailer::new(base.clone()).unwrap_err();
        assert!(matches!(err, MailError::InsecureRemote(_)), "{err}");
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            let m = SmtpMailer::new(SmtpConfig {
                host: host.into(),
                ..base.clone()
            })
            .unwrap();
            assert_eq!(m.port, 25);
        }
        let m = SmtpMailer::new(SmtpConfig {
            security: SmtpSecurity::StartTls,
            ..base.clone()
        })
        .unwrap();
        assert_eq!(m.port, 587);
        let m = SmtpMailer::new(SmtpConfig {
            security: SmtpSecurity::Tls,
            ..base.clone()
        })
        .unwrap();
        assert_eq!(m.port, 465);
        let err = SmtpMailer::new(SmtpConfig {
            host: "127.0.0.1".into(),
            username: Some("u".into()),
            ..base.clone()
        })
        .unwrap_err();
        assert!(matches!(err, MailError::Config(_)), "{err}");
        let err = SmtpMailer::new(SmtpConfig {
            from: "nope".into(),
            ..base
        })
        .unwrap_err();
        assert!(matches!(err, MailError::InvalidAddress { .. }), "{err}");
    }

    #[tokio::test]
    async fn smtp_unreachable_is_a_typed_error() {
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let m = SmtpMailer::new(SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: DEFAULT_FROM.into(),
            timeout_secs: 5,
        })
        .unwrap();
        let err = m.send(email("a@example.com", "x")).await.unwrap_err();
        assert!(matches!(err, MailError::Smtp { .. }), "{err}");
    }

    #[tokio::test]
    async fn no_mailer_refuses_with_its_reason() {
        let m = NoMailer::new("configure SMTP");
        let err = m.send(email("a@example.com", "x")).await.unwrap_err();
        assert!(
            matches!(&err, MailError::Config(r) if r == "configure SMTP"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn memory_mailer_and_from_config() {
        let m = MemoryMailer::new();
        m.send(email("a@example.com", "one")).await.unwrap();
        assert!(m.send(email("bad", "two")).await.is_err());
        assert_eq!(m.sent().len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let cfg = MailConfig::Outbox {
            dir: dir.path().to_owned(),
            from: DEFAULT_FROM.into(),
        };
        let mailer = mailer_from_config(&cfg).unwrap();
        mailer
            .send(email("a@example.com", "via config"))
            .await
            .unwrap();
        assert_eq!(list_eml(dir.path()).unwrap().len(), 1);
    }
}

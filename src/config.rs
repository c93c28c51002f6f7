//! The server configuration file (TOML) read by `sdx serve --config FILE` and the admin commands.
//!
//! Every setting has a default, so an empty file (or none) is a working loopback set-up. Relative
//! paths are resolved against the directory of the configuration file. Unknown keys are errors,
//! and every error names its line: `sdx.toml line 7: unknown field "listn"`.
//!
//! ```toml
//! data = "/var/lib/sdx"                  # --data overrides it
//!
//! [webdav]
//! listen = "0.0.0.0:8443"                # default 127.0.0.1:8443
//! tls_cert = "/etc/sdx/fullchain.pem"    # default: a self-signed pair in DATA (cert.pem, key.pem)
//! tls_key = "/etc/sdx/privkey.pem"
//! hostnames = ["portal.example.com"]     # names in the self-signed certificate
//! # insecure_http = true                 # plain HTTP, loopback addresses only
//!
//! [sftp]
//! listen = "0.0.0.0:2222"                # default 127.0.0.1:2222
//! # enabled = false
//! # host_key = "/etc/sdx/ssh_host_ed25519_key"   # default DATA/ssh_host_ed25519_key
//!
//! [key]
//! provider = "file"                      # or "env"
//! file = "/etc/sdx/master.key"           # default DATA/master.key (provider = "file")
//! # var = "SDX_MASTER_KEY"               # provider = "env"
//!
//! [accounts]                             # what invitation mails and account pages show
//! public_url = "https://portal.example.com"   # links in mails; default https://<webdav listen>
//! firm_name = "Demo & Co"                # default "The firm"
//! sftp_address = "portal.example.com:2222"    # shown after accepting; default <sftp listen>
//! invite_ttl_hours = 168                 # invitation links stay valid this long (default 7 days)
//!
//! [mail]                                 # see accounts::MailConfig; none: no mail is sent
//! transport = "smtp"                     # or "outbox" with dir = "/var/spool/sdx-outbox"
//! host = "smtp.example.com"
//! from = "Demo & Co <portal@example.com>"
//!
//! [lockout]                              # see accounts::ThrottleConfig
//! per_login = { free_failures = 0, base_delay_ms = 500, max_delay_ms = 30000, block_after = 5, block_secs = 900 }
//!
//! [limits]
//! max_connections = 1024                 # WebDAV connections at once
//! sftp_max_connections = 256
//! header_read_timeout_secs = 30
//! sftp_idle_timeout_secs = 600
//! shutdown_grace_secs = 10               # how long transfers may finish after SIGTERM
//! cache_mib = 16                         # database page cache
//!
//! [storage]
//! durability = "immediate"               # or "batched": see StorageSettings
//! flush_interval_ms = 200                # batched: longest time an acknowledged write is unsynced
//!
//! [log]
//! level = "info"                         # or a filter such as "info,sdx_portal::webdav=debug"
//! format = "text"                        # or "json"
//! ```

use crate::accounts::{BaseUrl, MailConfig, ThrottleConfig};
use crate::provision::file::{from_toml, line_of};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Default WebDAV (HTTPS) address.
pub const DEFAULT_WEBDAV: &str = "127.0.0.1:8443";
/// Default SFTP address.
pub const DEFAULT_SFTP: &str = "127.0.0.1:2222";
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A configuration problem: the file, the line (when known) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, when read from one.
    pub file: Option<PathBuf>,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(l)) => write!(f, "{} line {l}: {}", file.display(), self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            (None, Some(l)) => write!(f, "line {l}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the master key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A key file (mode 0600); `None` means `DATA/master.key`.
    File(Option<PathBuf>),
    /// An environment variable holding the key.
    Env(String),
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource::File(None)
    }
}

impl KeySource {
    /// The key file for data dir `data`, if the key lives in a file.
    pub fn file_in(&self, data: &Path) -> Option<PathBuf> {
        match self {
            KeySource::File(Some(p)) => Some(p.clone()),
            KeySource::File(None) => Some(data.join("master.key")),
            KeySource::Env(_) => None,
        }
    }

    /// The provider for data dir `data`.
    pub fn provider(&self, data: &Path) -> std::sync::Arc<dyn crate::crypto::KeyProvider> {
        match self {
            KeySource::Env(var) => std::sync::Arc::new(crate::crypto::EnvKey::new(var.clone())),
            other => std::sync::Arc::new(crate::crypto::KeyFile::new(
                other
                    .file_in(data)
                    .unwrap_or_else(|| data.join("master.key")),
            )),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[webdav]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebDavSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS certificate chain and key (PEM); `None`: a self-signed pair in the data dir.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve plain HTTP (loopback addresses only).
    pub insecure_http: bool,
    /// Host names and addresses for the self-signed certificate.
    pub hostnames: Vec<String>,
}

/// `[sftp]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpSettings {
    /// Whether the SFTP front end runs.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Host key file; `None`: `DATA/ssh_host_ed25519_key`.
    pub host_key: Option<PathBuf>,
}

/// `[accounts]`: what invitation mails and the account pages (`/invite/`, `/reset/`) show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountSettings {
    /// The public base URL links in mails are built from (`https://portal.example.com`),
    /// checked by [`BaseUrl::parse`]. `None`: `https://<webdav listen address>` (a wildcard
    /// address is replaced by the first certificate host name).
    pub public_url: Option<String>,
    /// The firm's name in mails and pages (`None`: the library's default).
    pub firm_name: Option<String>,
    /// The SFTP address shown to people (`host:port`); `None`: the SFTP listen address.
    pub sftp_address: Option<String>,
    /// How long invitation links stay valid, in hours (`None`: 7 days).
    pub invite_ttl_hours: Option<u64>,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// WebDAV connections served at once.
    pub max_connections: usize,
    /// SFTP connections served at once.
    pub sftp_max_connections: usize,
    /// Seconds a WebDAV client has to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Seconds of silence after which an SFTP connection is closed.
    pub sftp_idle_timeout_secs: u64,
    /// Seconds in-flight transfers may take to finish after SIGINT/SIGTERM; then they are
    /// aborted (an aborted upload leaves no document and the previous version intact).
    pub shutdown_grace_secs: u64,
    /// Database page cache, in MiB (default 16: the database holds records and only documents
    /// of up to 16 KiB, and
    /// the OS page cache keeps the file warm anyway; 64 MiB cost the server ~30 MiB of RSS in the
    /// concurrent-upload benchmark without making the 10,000-entry listing faster).
    pub cache_mib: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            sftp_max_connections: 256,
            header_read_timeout_secs: 30,
            sftp_idle_timeout_secs: 600,
            shutdown_grace_secs: 10,
            cache_mib: 16,
        }
    }
}

/// `durability` of `[storage]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Every acknowledged operation is fsynced (database commit, uploaded file and directory).
    #[default]
    Immediate,
    /// Operations are fsynced in groups, at most `flush_interval_ms` after the first unsynced one.
    Batched,
}

/// `[storage]`: when acknowledged writes reach the disk.
///
/// - `durability = "immediate"` (default): an acknowledged upload, change or audit entry has been
///   fsynced; a power loss loses nothing that was acknowledged.
/// - `durability = "batched"`: operations are acknowledged once committed (visible to every
///   client at once) and fsynced together at most `flush_interval_ms` later (default 200), as
///   well as on a clean shutdown (SIGTERM/SIGINT) and before a backup or a purge deletes files.
///   A crash of the machine (power loss, kernel panic) or a SIGKILL of the server can lose the
///   operations acknowledged in that last interval, with their audit entries (so can a full disk:
///   a commit that fails for lack of space reopens the database at its last durable commit); it
///   never leaves a
///   partial document or a corrupt database, and `sdx audit verify` still passes (the chain ends
///   at the last durable commit). The same class of guarantee as Apache mod_dav, OpenSSH's
///   sftp-server, Nextcloud or SFTPGo, which do not fsync per operation. Much faster for many
///   small files. See [`crate::store::Durability`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// `"immediate"` or `"batched"`.
    pub durability: DurabilityMode,
    /// Batched mode: most milliseconds between a commit and its fsync (1..=60000).
    pub flush_interval_ms: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            durability: DurabilityMode::Immediate,
            flush_interval_ms: crate::store::DEFAULT_FLUSH_INTERVAL.as_millis() as u64,
        }
    }
}

impl StorageSettings {
    /// The store's durability for these settings.
    pub fn durability(&self) -> crate::store::Durability {
        match self.durability {
            DurabilityMode::Immediate => crate::store::Durability::Immediate,
            DurabilityMode::Batched => crate::store::Durability::Batched {
                flush_interval: std::time::Duration::from_millis(self.flush_interval_ms),
            },
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter: a level (`info`) or directives (`info,sdx_portal::webdav=debug`).
    /// The `SDX_LOG` environment variable overrides it.
    pub level: String,
    /// Text or JSON lines (on stderr).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Data directory (`--data` overrides it).
    pub data: Option<PathBuf>,
    /// WebDAV front end.
    pub webdav: WebDavSettings,
    /// SFTP front end.
    pub sftp: SftpSettings,
    /// Master key.
    pub key: KeySource,
    /// Invitation links and account pages.
    pub accounts: AccountSettings,
    /// Outgoing mail. `None`: no mail is sent (`sdx serve --demo` uses a file outbox in the
    /// demo dir); grants still work and are audited, the invitation can be re-sent later.
    pub mail: Option<MailConfig>,
    /// Login throttling and lockout (`None`: the defaults).
    pub lockout: Option<ThrottleConfig>,
    /// Resource bounds.
    pub limits: Limits,
    /// Durability of acknowledged writes.
    pub storage: StorageSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data: None,
            webdav: WebDavSettings {
                listen: DEFAULT_WEBDAV.parse().unwrap_or_else(|_| loopback(8443)),
                tls: None,
                insecure_http: false,
                hostnames: default_hostnames(),
            },
            sftp: SftpSettings {
                enabled: true,
                listen: DEFAULT_SFTP.parse().unwrap_or_else(|_| loopback(2222)),
                host_key: None,
            },
            key: KeySource::default(),
            accounts: AccountSettings::default(),
            mail: None,
            lockout: None,
            limits: Limits::default(),
            storage: StorageSettings::default(),
            log: LogSettings::default(),
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn default_hostnames() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    data: Option<PathBuf>,
    #[serde(default)]
    webdav: RawWebDav,
    #[serde(default)]
    sftp: RawSftp,
    #[serde(default)]
    key: Option<Spanned<RawKey>>,
    #[serde(default)]
    accounts: RawAccounts,
    #[serde(default)]
    mail: Option<MailConfig>,
    #[serde(default)]
    lockout: Option<ThrottleConfig>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    storage: StorageSettings,
    #[serde(default)]
    log: Option<Spanned<LogSettings>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebDav {
    #[serde(default)]
    listen: Option<Spanned<SocketAddr>>,
    #[serde(default)]
    tls_cert: Option<Spanned<PathBuf>>,
    #[serde(default)]
    tls_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    insecure_http: Option<Spanned<bool>>,
    #[serde(default)]
    hostnames: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSftp {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    host_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccounts {
    #[serde(default)]
    public_url: Option<Spanned<String>>,
    #[serde(default)]
    firm_name: Option<Spanned<String>>,
    #[serde(default)]
    sftp_address: Option<Spanned<String>>,
    #[serde(default)]
    invite_ttl_hours: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    provider: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    var: Option<String>,
}

impl ServerConfig {
    /// Parses a configuration text. Relative paths are kept as written (see [`ServerConfig::load`]).
    pub fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        let raw: Raw = from_toml(text).map_err(|e| ConfigError {
            file: None,
            line: e.line,
            message: e.message,
        })?;
        let at = |span: std::ops::Range<usize>, message: String| ConfigError {
            file: None,
            line: Some(line_of(text, span.start)),
            message,
        };
        let mut c = ServerConfig {
            data: raw.data,
            ..ServerConfig::default()
        };
        if let Some(l) = raw.webdav.listen {
            c.webdav.listen = *l.get_ref();
        }
        match (raw.webdav.tls_cert, raw.webdav.tls_key) {
            (Some(cert), Some(key)) => c.webdav.tls = Some((cert.into_inner(), key.into_inner())),
            (Some(cert), None) => {
                return Err(at(cert.span(), "tls_cert needs tls_key too".into()));
            }
            (None, Some(key)) => {
                return Err(at(key.span(), "tls_key needs tls_cert too".into()));
            }
            (None, None) => {}
        }
        if let Some(h) = raw.webdav.hostnames {
            c.webdav.hostnames = h;
        }
        if let Some(insecure) = raw.webdav.insecure_http {
            c.webdav.insecure_http = *insecure.get_ref();
            if c.webdav.insecure_http && c.webdav.tls.is_some() {
                return Err(at(
                    insecure.span(),
                    "insecure_http = true contradicts tls_cert/tls_key: choose one".into(),
                ));
            }
            if c.webdav.insecure_http && !c.webdav.listen.ip().is_loopback() {
                return Err(at(
                    insecure.span(),
                    format!(
                        "insecure_http is allowed only on a loopback address, not {}: configure tls_cert and tls_key",
                        c.webdav.listen
                    ),
                ));
            }
        }
        if let Some(e) = raw.sftp.enabled {
            c.sftp.enabled = e;
        }
        if let Some(l) = raw.sftp.listen {
            c.sftp.listen = l;
        }
        c.sftp.host_key = raw.sftp.host_key;
        if let Some(k) = raw.key {
            let span = k.span();
            let k = k.into_inner();
            c.key = match k.provider.as_str() {
                "file" => {
                    if k.var.is_some() {
                        return Err(at(span, "var is for provider = \"env\"".into()));
                    }
                    KeySource::File(k.file)
                }
                "env" => {
                    if k.file.is_some() {
                        return Err(at(span, "file is for provider = \"file\"".into()));
                    }
                    KeySource::Env(k.var.unwrap_or_else(|| "SDX_MASTER_KEY".into()))
                }
                other => {
                    return Err(at(
                        span,
                        format!("unknown key provider \"{other}\": use \"file\" or \"env\""),
                    ));
                }
            };
        }
        let acc = raw.accounts;
        if let Some(u) = acc.public_url {
            BaseUrl::parse(u.get_ref().trim()).map_err(|e| at(u.span(), e.to_string()))?;
            c.accounts.public_url = Some(u.get_ref().trim().to_string());
        }
        if let Some(f) = acc.firm_name {
            let name = f.get_ref().trim();
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(at(
                    f.span(),
                    "firm_name must be 1 to 200 characters on one line".into(),
                ));
            }
            c.accounts.firm_name = Some(name.to_string());
        }
        if let Some(a) = acc.sftp_address {
            let addr = a.get_ref().trim();
            if addr.is_empty()
                || addr.len() > 255
                || addr
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control() || "'\"`$;&|<>/@".contains(ch))
            {
                return Err(at(
                    a.span(),
                    format!("sftp_address \"{addr}\" is not host or host:port"),
                ));
            }
            c.accounts.sftp_address = Some(addr.to_string());
        }
        if let Some(h) = acc.invite_ttl_hours {
            let hours = *h.get_ref();
            if !(1..=24 * 90).contains(&hours) {
                return Err(at(
                    h.span(),
                    "invite_ttl_hours must be between 1 and 2160 (90 days)".into(),
                ));
            }
            c.accounts.invite_ttl_hours = Some(hours);
        }
        c.mail = raw.mail;
        c.lockout = raw.lockout;
        c.limits = raw.limits;
        c.storage = raw.storage;
        if !(1..=60_000).contains(&c.storage.flush_interval_ms) {
            return Err(ConfigError {
                file: None,
                line: None,
                message: "[storage]: flush_interval_ms must be between 1 and 60000".into(),
            });
        }
        if let Some(log) = raw.log {
            let span = log.span();
            let log = log.into_inner();
            let ok = !log.level.trim().is_empty()
                && log
                    .level
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_=,:.-[]{}\" ".contains(ch));
            if !ok {
                return Err(at(
                    span,
                    format!(
                        "log level \"{}\" is not a level (error, warn, info, debug, trace) or filter",
                        log.level
                    ),
                ));
            }
            c.log = log;
        }
        let l = &c.limits;
        if l.max_connections == 0 || l.sftp_max_connections == 0 || l.cache_mib == 0 {
            return Err(ConfigError {
                file: None,
                line: None,
                message: "[limits]: max_connections, sftp_max_connections and cache_mib must be at least 1".into(),
            });
        }
        if l.header_read_timeout_secs == 0 || l.sftp_idle_timeout_secs == 0 {
            return Err(ConfigError {
                file: None,
                line: None,
                message: "[limits]: timeouts must be at least 1 second".into(),
            });
        }
        Ok(c)
    }

    /// Reads and parses `path`, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let with_file = |mut e: ConfigError| {
            e.file = Some(path.to_path_buf());
            e
        };
        let text = read_bounded(path).map_err(|message| {
            with_file(ConfigError {
                file: None,
                line: None,
                message,
            })
        })?;
        let mut c = ServerConfig::parse(&text).map_err(with_file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = c.data.as_mut() {
            abs(d);
        }
        if let Some((cert, key)) = c.webdav.tls.as_mut() {
            abs(cert);
            abs(key);
        }
        if let Some(h) = c.sftp.host_key.as_mut() {
            abs(h);
        }
        if let KeySource::File(Some(f)) = &mut c.key {
            abs(f);
        }
        if let Some(MailConfig::Outbox { dir, .. }) = c.mail.as_mut() {
            abs(dir);
        }
        Ok(c)
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("can't read it: {e}"))?;
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("can't read it: {e}"))?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "larger than {} KiB: not a configuration file",
            MAX_CONFIG_BYTES >> 10
        ));
    }
    String::from_utf8(buf).map_err(|_| "not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_the_loopback_default() {
        let c = ServerConfig::parse("").unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.webdav.listen.to_string(), DEFAULT_WEBDAV);
        assert_eq!(c.key, KeySource::File(None));
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
data = "data"
[webdav]
listen = "0.0.0.0:9443"
tls_cert = "cert.pem"
tls_key = "key.pem"
hostnames = ["portal.example.com"]
[sftp]
listen = "0.0.0.0:2022"
host_key = "/etc/sdx/host"
[key]
provider = "env"
var = "MY_KEY"
[mail]
transport = "smtp"
host = "smtp.example.com"
[lockout]
forget_after_secs = 60
[accounts]
public_url = "https://portal.example.com/"
firm_name = "Demo & Co"
sftp_address = "portal.example.com:2022"
invite_ttl_hours = 48
[limits]
shutdown_grace_secs = 3
[storage]
durability = "batched"
flush_interval_ms = 50
[log]
level = "debug"
format = "json"
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sdx.toml");
        std::fs::write(&path, text).unwrap();
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.data, Some(dir.path().join("data")));
        assert_eq!(c.webdav.listen.port(), 9443);
        assert_eq!(
            c.webdav.tls,
            Some((dir.path().join("cert.pem"), dir.path().join("key.pem")))
        );
        assert_eq!(c.sftp.host_key, Some(PathBuf::from("/etc/sdx/host")));
        assert_eq!(c.key, KeySource::Env("MY_KEY".into()));
        assert!(matches!(c.mail, Some(MailConfig::Smtp(_))));
        assert_eq!(c.lockout.unwrap().forget_after_secs, 60);
        assert_eq!(
            c.accounts.public_url.as_deref(),
            Some("https://portal.example.com/")
        );
        assert_eq!(c.accounts.firm_name.as_deref(), Some("Demo & Co"));
        assert_eq!(
            c.storage.durability(),
            crate::store::Durability::Batched {
                flush_interval: std::time::Duration::from_millis(50)
            }
        );
        assert_eq!(
            c.accounts.sftp_address.as_deref(),
            Some("portal.example.com:2022")
        );
        assert_eq!(c.accounts.invite_ttl_hours, Some(48));
        assert_eq!(c.limits.shutdown_grace_secs, 3);
        assert_eq!(c.limits.cache_mib, 16);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sdx.toml");
        std::fs::write(&path, "[webdav]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n").unwrap();
        let e = ServerConfig::load(&path).unwrap_err();
        assert_eq!(e.line, Some(3));
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("{} line 3: ", path.display())),
            "{s}"
        );
        assert!(s.contains("listn"), "{s}");
        assert!(!s.contains('\n'), "{s}");

        let e = ServerConfig::parse("[webdav]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = ServerConfig::parse("[webdav]\nlisten = \"0.0.0.0:80\"\n\ninsecure_http = true\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("loopback"), "{e}");
        let e = ServerConfig::parse("[key]\nprovider = \"vault\"\n").unwrap_err();
        assert!(e.message.contains("vault"), "{e}");
        let e = ServerConfig::parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = ServerConfig::parse("[limits]\nmax_connections = 0\n").unwrap_err();
        assert!(e.message.contains("max_connections"), "{e}");
        let e = ServerConfig::parse("[webdav]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = ServerConfig::parse("[accounts]\n\npublic_url = \"ftp://x\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("https://"), "{e}");
        let e = ServerConfig::parse("[accounts]\nsftp_address = \"a b\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = ServerConfig::parse("[accounts]\ninvite_ttl_hours = 0\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = ServerConfig::parse("[accounts]\nfirm = \"x\"\n").unwrap_err();
        assert!(e.message.contains("firm"), "{e}");
    }

    #[test]
    fn missing_file_is_one_line() {
        let e = ServerConfig::load(Path::new("/nonexistent/sdx.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/nonexistent/sdx.toml: can't read it"), "{s}");
    }
}

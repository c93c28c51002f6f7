//! The `sdx` server around a data directory: setting one up ([`init`]), opening it
//! ([`open_data_dir`]), running the front ends ([`run::start`]), the admin commands
//! ([`admin::AdminRequest`]) and the local admin socket that lets those commands reach a running
//! server ([`socket`]).
//!
//! ## A data directory
//! ```text
//! DATA/                       mode 0700
//!   portal.redb               the database (records sealed under the firm's keys)
//!   blobs/                    encrypted document contents (see blob::encrypted)
//!   master.key                the master key (mode 0600) unless [key] says otherwise
//!   ssh_host_ed25519_key      SFTP host key (mode 0600)
//!   cert.pem, key.pem         self-signed TLS pair, when no certificate is configured
//!   admin.sock                the admin socket while `sdx serve` runs (mode 0600)
//!   outbox/                   `sdx serve --demo` only: mails as .eml files (plaintext!)
//! ```
//!
//! ## Mail
//! Invitations, password resets and notifications go through the mailer of `[mail]`
//! ([`accounts_builder`]). Without `[mail]` nothing is sent: grants still work, the invitation
//! is recorded and audited (`mailed = false`) and can be re-sent (`sdx invite resend`) once mail
//! is configured. Only `sdx serve --demo` writes mail into the data dir (`DATA/outbox`),
//! announced as plaintext when it starts: the rest of the data dir is encrypted, mails are not.
//!
//! ## One process per data dir
//! redb opens a database in one process only. While `sdx serve` runs, it listens on
//! `DATA/admin.sock` (a unix socket, mode 0600, peers must run as the same user); every admin
//! command (`sdx apply`, `sdx grant`, `sdx audit export`, `sdx backup`, `sdx key rotate`…) first
//! tries that socket and has the server execute the request; with no server running, the command
//! opens the data dir itself. Either way the same code ([`admin::execute`]) runs.

pub mod admin;
pub mod backup;
pub mod run;
pub mod socket;

use crate::config::{KeySource, ServerConfig};
use crate::crypto::Keyring;
use crate::{Portal, PortalBuilder};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The admin socket's file name inside the data dir.
pub const SOCKET_NAME: &str = "admin.sock";
/// The database file name inside the data dir.
pub const DB_NAME: &str = "portal.redb";
/// The SFTP host key's default file name inside the data dir.
pub const HOST_KEY_NAME: &str = "ssh_host_ed25519_key";
/// Where `sdx key rotate` writes the new key before it replaces the old one.
pub const NEW_KEY_SUFFIX: &str = ".new";

/// A failure of a server or admin operation, as one line that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

impl Failure {
    /// A failure with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        Failure(msg.into())
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure(e.to_string())
    }
}

/// An open data dir: the portal and the keyring that protects it (for key rotation).
#[derive(Clone, Debug)]
pub struct Opened {
    /// The portal.
    pub portal: Portal,
    /// The firm's keys.
    pub keyring: Keyring,
    /// The data dir.
    pub data: PathBuf,
    /// Where the master key comes from.
    pub key: KeySource,
}

/// Creates a directory (and missing parents) with mode 0700.
pub(crate) fn mkdir_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Where the portal's mail goes, for people reading `sdx serve`'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailRoute {
    /// No `[mail]`: nothing is sent (grants are recorded, invitations can be re-sent later).
    None,
    /// `.eml` files in this folder.
    Outbox(PathBuf),
    /// SMTP to this host.
    Smtp(String),
}

impl std::fmt::Display for MailRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailRoute::None => f.write_str(
                "not sent: no [mail] configured (invitations are recorded; `sdx invite resend` once mail works)",
            ),
            MailRoute::Outbox(d) => write!(
                f,
                "written to {} as .eml files (plaintext: names and links of clients)",
                d.display()
            ),
            MailRoute::Smtp(h) => write!(f, "sent over SMTP via {h}"),
        }
    }
}

/// A host (IP address or name) and port as written in a URL authority.
fn authority(ip: std::net::IpAddr, port: u16, hostnames: &[String]) -> String {
    let host = if ip.is_unspecified() {
        hostnames
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into())
    } else {
        ip.to_string()
    };
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The portal's account settings from the configuration: the mailer of `[mail]` (with
/// `demo_outbox` and no `[mail]`, a file outbox in `DATA/outbox`), the `[lockout]` thresholds,
/// the `[accounts]` base URL, firm name, SFTP address and invitation lifetime. Defaults for the
/// base URL and SFTP address come from the listen addresses in `cfg`.
pub fn accounts_builder(
    data: &Path,
    cfg: &ServerConfig,
    demo_outbox: bool,
) -> Result<(PortalBuilder, MailRoute), Failure> {
    let mut b = PortalBuilder::new(data)
        .durability(cfg.storage.durability())
        .inline_max(cfg.storage.inline_max_kib << 10);
    let route = match (&cfg.mail, demo_outbox) {
        (Some(m), _) => {
            b = b.mailer(
                crate::accounts::mailer_from_config(m)
                    .map_err(|e| Failure(format!("[mail]: {e}")))?,
            );
            match m {
                crate::accounts::MailConfig::Outbox { dir, .. } => MailRoute::Outbox(dir.clone()),
                crate::accounts::MailConfig::Smtp(s) => MailRoute::Smtp(s.host.clone()),
            }
        }
        (None, true) => {
            let dir = data.join("outbox");
            b = b.mailer(std::sync::Arc::new(crate::accounts::FileOutbox::new(
                dir.clone(),
            )));
            MailRoute::Outbox(dir)
        }
        (None, false) => MailRoute::None,
    };
    if let Some(t) = &cfg.lockout {
        b = b.throttle(t.clone());
    }
    let url = match &cfg.accounts.public_url {
        Some(u) => u.clone(),
        None => format!(
            "{}://{}",
            if cfg.webdav.insecure_http {
                "http"
            } else {
                "https"
            },
            authority(
                cfg.webdav.listen.ip(),
                cfg.webdav.listen.port(),
                &cfg.webdav.hostnames
            )
        ),
    };
    b = b.base_url(
        crate::accounts::BaseUrl::parse(&url).map_err(|e| Failure(format!("[accounts]: {e}")))?,
    );
    if let Some(f) = &cfg.accounts.firm_name {
        b = b.firm_name(f.clone());
    }
    match &cfg.accounts.sftp_address {
        Some(a) => b = b.sftp_address(a.clone()),
        None if cfg.sftp.enabled => {
            b = b.sftp_address(authority(
                cfg.sftp.listen.ip(),
                cfg.sftp.listen.port(),
                &cfg.webdav.hostnames,
            ))
        }
        None => {}
    }
    if let Some(h) = cfg.accounts.invite_ttl_hours {
        b = b.invite_ttl(std::time::Duration::from_secs(h.saturating_mul(3600)));
    }
    Ok((b, route))
}

/// Opens the portal in `data`, encrypted under the master key from `key`, with the library's
/// default account settings (no mail is sent). See [`open_data_dir_with`].
pub async fn open_data_dir(
    data: &Path,
    key: &KeySource,
    cache_bytes: usize,
) -> Result<Opened, Failure> {
    open_data_dir_with(data, key, cache_bytes, PortalBuilder::new(data)).await
}

/// Opens the portal in `data`, encrypted under the master key from `key`, with the account
/// settings of `accounts` (see [`accounts_builder`]). Errors say what to do: a missing data dir
/// or key, a data dir held by a running server, a wrong key.
pub async fn open_data_dir_with(
    data: &Path,
    key: &KeySource,
    cache_bytes: usize,
    accounts: PortalBuilder,
) -> Result<Opened, Failure> {
    let db_path = data.join(DB_NAME);
    if !data.is_dir() {
        return Err(Failure(format!(
            "no data dir at {}: create one with `sdx init --data {}`",
            data.display(),
            data.display()
        )));
    }
    if let Some(kf) = key.file_in(data)
        && !kf.exists()
    {
        return Err(Failure(if db_path.exists() {
            format!(
                "no master key at {}: restore it from your backup (without it the data can't be read)",
                kf.display()
            )
        } else {
            format!(
                "no master key at {}: run `sdx init --data {}` to set up a new portal",
                kf.display(),
                data.display()
            )
        }));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(data)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                dir = %data.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "the data dir is accessible by group or others: chmod 700 it"
            );
        }
    }
    let provider = key.provider(data);
    let new_key = key
        .file_in(data)
        .map(|k| PathBuf::from(format!("{}{NEW_KEY_SUFFIX}", k.display())));
    let dir = data.to_path_buf();
    // Batched durability: the store syncs uploaded files before its durable commits.
    let blob_opts = accounts.blob_options();
    let (db, keys, blobs) = tokio::task::spawn_blocking(move || -> Result<_, Failure> {
        // A cell that can reopen the file: the store does after a storage failure (disk full).
        let db = crate::store::DbCell::open_file(&dir.join(DB_NAME), cache_bytes).map_err(|e| {
            match e {
                crate::Error::Conflict(_) => Failure(format!(
                    "the data dir {} is in use by another sdx process (a server without a reachable {SOCKET_NAME}, or another admin command): stop it or wait",
                    dir.display()
                )),
                other => Failure(other.to_string()),
            }
        })?;
        let keys = Keyring::open(db.clone(), provider.as_ref()).map_err(|e| {
            let hint = match &new_key {
                Some(n) if n.exists() => format!(
                    "; a key rotation was interrupted: if {} is the new key, move it to replace the old one",
                    n.display()
                ),
                _ => String::new(),
            };
            Failure(format!("{e}{hint}"))
        })?;
        let blobs = crate::blob::encrypted::EncryptedBlobStore::open_with(
            dir.join("blobs"),
            keys.clone(),
            blob_opts,
        )?;
        Ok((db, keys, blobs))
    })
    .await
    .map_err(|e| Failure(format!("opening the data dir failed: {e}")))??;
    let portal: Portal = accounts
        .start_with(db, Arc::new(keys.sealer()), Arc::new(blobs))
        .await?;
    Ok(Opened {
        portal,
        keyring: keys,
        data: data.to_path_buf(),
        key: key.clone(),
    })
}

/// Sets up a data dir: the directory (0700), the master key file (0600, for a file provider),
/// the SFTP host key, a self-signed certificate (unless the configuration names one) and the
/// database with the firm's keys. Parts that exist are kept. Returns one line per step.
pub async fn init(data: &Path, cfg: &ServerConfig) -> Result<Vec<String>, Failure> {
    let mut done = Vec::new();
    if !data.exists() {
        mkdir_private(data)
            .map_err(|e| Failure(format!("can't create {}: {e}", data.display())))?;
        done.push(format!("created {}", data.display()));
    }
    match cfg.key.file_in(data) {
        Some(kf) if kf.exists() => done.push(format!("kept the master key {}", kf.display())),
        Some(kf) => {
            if data.join(DB_NAME).exists() {
                return Err(Failure(format!(
                    "{} holds a portal but no master key at {}: restore the key from your backup",
                    data.display(),
                    kf.display()
                )));
            }
            crate::crypto::KeyFile::create(&kf)?;
            done.push(format!(
                "created the master key {} (mode 0600): keep a copy apart from your backups",
                kf.display()
            ));
        }
        None => {
            cfg.key.provider(data).master_key().map_err(|e| {
                Failure(format!(
                    "{e}: set it to 64 hex digits (e.g. from `openssl rand -hex 32`) and keep a copy"
                ))
            })?;
            done.push("using the master key from the environment".into());
        }
    }
    if cfg.sftp.enabled {
        let hk = cfg
            .sftp
            .host_key
            .clone()
            .unwrap_or_else(|| data.join(HOST_KEY_NAME));
        let existed = hk.exists();
        let key = crate::sftp::HostKey::load_or_generate(hk.clone())
            .await
            .map_err(|e| Failure(e.to_string()))?;
        done.push(format!(
            "{} the SSH host key {} ({})",
            if existed { "kept" } else { "created" },
            hk.display(),
            key.fingerprint()
        ));
    }
    if cfg.webdav.tls.is_none() && !cfg.webdav.insecure_http {
        let existed = data.join(crate::tls::CERT_FILE).exists();
        let (cert, _) = crate::tls::generate_self_signed(data, &cfg.webdav.hostnames)
            .map_err(|e| Failure(e.to_string()))?;
        done.push(format!(
            "{} the self-signed certificate {} (for {})",
            if existed { "kept" } else { "created" },
            cert.display(),
            cfg.webdav.hostnames.join(", ")
        ));
    }
    let existed = data.join(DB_NAME).exists();
    // Create the database and the firm's keys (checking the master key), and close it again at
    // once: no store threads, so the caller may open the data dir right after.
    let provider = cfg.key.provider(data);
    let db_path = data.join(DB_NAME);
    tokio::task::spawn_blocking(move || -> Result<(), Failure> {
        let db = Arc::new(crate::store::open_database(&db_path, 16 << 20)?);
        Keyring::open(db, provider.as_ref())?;
        Ok(())
    })
    .await
    .map_err(|e| Failure(format!("creating the database failed: {e}")))??;
    done.push(format!(
        "{} the database {}",
        if existed { "kept" } else { "created" },
        data.join(DB_NAME).display()
    ));
    Ok(done)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC (`2026-01-31T12:00:00.000Z`).
pub fn rfc3339(millis: u64) -> String {
    let secs = millis / 1000;
    let ms = millis % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC, optional `Z`) or a duration back from now
/// (`30m`, `12h`, `7d`) into milliseconds since the Unix epoch.
pub fn parse_time(s: &str, now_millis: u64) -> Result<u64, Failure> {
    let t = s.trim();
    let bad = || {
        Failure(format!(
            "\"{s}\" is not a time: use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z] or a duration such as 7d, 12h, 30m"
        ))
    };
    if let Some(unit) = t.chars().last()
        && "smhd".contains(unit)
        && t.len() > 1
        && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
    {
        let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let mult = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        return Ok(now_millis.saturating_sub(n.saturating_mul(mult)));
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let num = |x: &str| -> Result<i64, Failure> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) || x.len() > 4 {
            return Err(bad());
        }
        x.parse::<i64>().map_err(|_| bad())
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(tm) = time {
        let parts: Vec<&str> = tm.split(':').collect();
        let (h, mi, sec) = match parts.as_slice() {
            [h, mi] => (num(h)?, num(mi)?, 0),
            [h, mi, s] => (num(h)?, num(mi)?, num(s)?),
            _ => return Err(bad()),
        };
        if h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + sec;
    }
    u64::try_from(secs).map(|s| s * 1000).map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn portal_of(b: PortalBuilder) -> Portal {
        b.start_with(
            Arc::new(crate::store::memory_database().unwrap()),
            Arc::new(crate::crypto::PlainSealer),
            Arc::new(crate::blob::mem::MemBlobStore::default()),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn account_settings_come_from_the_config_and_the_listen_addresses() {
        let data = Path::new("/srv/sdx");
        let mut cfg = ServerConfig::default();
        cfg.webdav.listen = "0.0.0.0:9443".parse().unwrap();
        cfg.webdav.hostnames = vec!["portal.example".into()];
        cfg.sftp.listen = "0.0.0.0:2022".parse().unwrap();
        let (b, route) = accounts_builder(data, &cfg, false).unwrap();
        assert_eq!(route, MailRoute::None);
        let p = portal_of(b).await;
        assert_eq!(p.base_url().as_str(), "https://portal.example:9443");
        assert_eq!(p.sftp_address(), Some("portal.example:2022"));
        assert_eq!(p.firm_name(), crate::portal::DEFAULT_FIRM_NAME);

        cfg.webdav.listen = "[::1]:8080".parse().unwrap();
        cfg.webdav.insecure_http = true;
        cfg.sftp.enabled = false;
        cfg.accounts.firm_name = Some("Demo & Co".into());
        cfg.accounts.invite_ttl_hours = Some(2);
        let (b, route) = accounts_builder(data, &cfg, true).unwrap();
        assert_eq!(route, MailRoute::Outbox(data.join("outbox")));
        let p = portal_of(b).await;
        assert_eq!(p.base_url().as_str(), "http://[::1]:8080");
        assert_eq!(p.sftp_address(), None);
        assert_eq!(p.firm_name(), "Demo & Co");
        assert_eq!(p.invite_ttl(), std::time::Duration::from_secs(7200));

        cfg.accounts.public_url = Some("https://files.example.com/".into());
        cfg.accounts.sftp_address = Some("sftp.example.com:22".into());
        cfg.mail = Some(crate::accounts::MailConfig::Outbox {
            dir: "/var/spool/sdx".into(),
            from: "portal@example.com".into(),
        });
        let (b, route) = accounts_builder(data, &cfg, true).unwrap();
        assert_eq!(route, MailRoute::Outbox("/var/spool/sdx".into()));
        let p = portal_of(b).await;
        assert_eq!(p.base_url().as_str(), "https://files.example.com");
        assert_eq!(p.sftp_address(), Some("sftp.example.com:22"));
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(parse_time("2000-02-29", 0).unwrap(), 951_782_400_000);
        assert_eq!(
            parse_time("2026-11-23T10:20:30Z", 0).map(rfc3339).unwrap(),
            "2026-11-23T10:20:30.000Z"
        );
        assert_eq!(
            parse_time("2026-11-23 10:20", 0).map(rfc3339).unwrap(),
            "2026-11-23T10:20:00.000Z"
        );
        for d in [0i64, 1, 59, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m as i64, dd as i64), d);
        }
        assert_eq!(parse_time("7d", 10 * 86_400_000).unwrap(), 3 * 86_400_000);
        assert_eq!(parse_time("30m", 3_600_000).unwrap(), 1_800_000);
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-1-1T25:00",
            "7w",
            "d",
            "-5d",
        ] {
            assert!(parse_time(bad, 0).is_err(), "{bad}");
        }
    }
}

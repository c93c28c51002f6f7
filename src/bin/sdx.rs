//! `sdx`: the sdx-portal server and admin command. A thin layer over the library: argument
//! parsing, logging, printing; the work is in `sdx_portal::server`, `config` and `provision`.
use clap::{Args, Parser, Subcommand, ValueEnum};
use sdx_portal::config::{KeySource, LogFormat, ServerConfig};
use sdx_portal::server::admin::{AdminCtx, AdminRequest, ExportFormat, Frame, InviteTarget};
use sdx_portal::server::{self, Failure, SOCKET_NAME, socket};
use sdx_portal::{Portal, demo, model::Actor};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sdx",
    version,
    about = "Secure document exchange portal: server and admin commands",
    after_help = "Admin commands reach a running `sdx serve` through DATA/admin.sock; with no server running they open the data dir themselves."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options every command that works on a data dir takes.
#[derive(Args, Clone, Debug, Default)]
struct DataArgs {
    /// Data directory (default: `data` in the config file).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Configuration file (TOML): listen addresses, TLS, key provider, mail, limits, logging.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a data dir: master key (0600), SSH host key, self-signed certificate, database.
    Init {
        #[command(flatten)]
        data: DataArgs,
        /// Host name or address for the self-signed certificate (repeatable; default localhost
        /// and 127.0.0.1).
        #[arg(long = "hostname", value_name = "NAME")]
        hostnames: Vec<String>,
    },
    /// Run the portal's WebDAV and SFTP front ends until SIGINT/SIGTERM. With --demo, create (or
    /// reuse) a demo portal first.
    Serve(ServeArgs),
    /// Apply a declarative portal file: create and change exactly what differs, report it.
    Apply {
        #[command(flatten)]
        data: DataArgs,
        /// The portal file (TOML; see examples/portal.toml).
        file: PathBuf,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Grant a contact portal access to a matter (adding them as a participant of --type first
    /// if needed).
    Grant(GrantArgs),
    /// Revoke a contact's portal access to a matter.
    Revoke(GrantArgs),
    /// Matters: list, close, reopen.
    Matter {
        #[command(subcommand)]
        cmd: MatterCmd,
    },
    /// Logins: list.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Invitations: list, resend (new link), revoke.
    Invite {
        #[command(subcommand)]
        cmd: InviteCmd,
    },
    /// App passwords (one per device, so a mounted drive never stores the main password):
    /// create (shown once), list, revoke.
    #[command(name = "app-password")]
    AppPassword {
        #[command(subcommand)]
        cmd: AppPasswordCmd,
    },
    /// The audit trail: export, verify.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// The master key: rotate.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Write a consistent copy of the data dir (works while the server runs). The master key is
    /// not copied.
    Backup {
        #[command(flatten)]
        data: DataArgs,
        /// Target directory (new, or empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Say whether a server is running on the data dir.
    Status {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Same as `sdx audit verify` (kept for scripts).
    #[command(hide = true)]
    AuditVerify {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Create or reuse the demo portal in the data dir (default ./sdx-demo).
    #[arg(long)]
    demo: bool,
    /// WebDAV listen address (default 127.0.0.1:8443).
    #[arg(long, value_name = "ADDR")]
    webdav: Option<SocketAddr>,
    /// SFTP listen address (default 127.0.0.1:2222).
    #[arg(long, value_name = "ADDR")]
    sftp: Option<SocketAddr>,
    /// Don't run the SFTP front end.
    #[arg(long, conflicts_with = "sftp")]
    no_sftp: bool,
    /// TLS certificate chain (PEM). Without one, a self-signed pair is made in the data dir.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP (refused unless the address is loopback).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_http: bool,
}

#[derive(Args)]
struct GrantArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Matter number.
    #[arg(long)]
    matter: String,
    /// The contact's email.
    #[arg(long)]
    contact: String,
    /// Participant type (e.g. Client).
    #[arg(long = "type", value_name = "TYPE")]
    participant_type: Option<String>,
}

#[derive(Subcommand)]
enum MatterCmd {
    /// List matters with status, type and how many participants have portal access.
    List {
        #[command(flatten)]
        data: DataArgs,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Close a matter (refused while anyone has portal access: revoke first).
    Close {
        #[command(flatten)]
        data: DataArgs,
        /// Matter number.
        number: String,
    },
    /// Reopen a closed matter.
    Reopen {
        #[command(flatten)]
        data: DataArgs,
        /// Matter number.
        number: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// List staff and portal logins.
    List {
        #[command(flatten)]
        data: DataArgs,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Which invitation: an id, or `--contact EMAIL` [`--matter N`].
#[derive(Args)]
struct InviteWhich {
    #[command(flatten)]
    data: DataArgs,
    /// Invitation id (see `sdx invite list`).
    #[arg(required_unless_present = "contact", conflicts_with = "contact")]
    id: Option<u64>,
    /// The contact's email: their one invitation that is not accepted.
    #[arg(long)]
    contact: Option<String>,
    /// With --contact: the invitation about this matter (number).
    #[arg(long, requires = "contact")]
    matter: Option<String>,
}

impl InviteWhich {
    fn target(self) -> (DataArgs, InviteTarget) {
        let t = match (self.id, self.contact) {
            (Some(id), _) => InviteTarget::Id(id),
            (None, email) => InviteTarget::Contact {
                email: email.unwrap_or_default(),
                matter: self.matter,
            },
        };
        (self.data, t)
    }
}

#[derive(Subcommand)]
enum InviteCmd {
    /// List invitations with their state (pending, expired, accepted, revoked).
    List {
        #[command(flatten)]
        data: DataArgs,
        /// Only this contact's (email).
        #[arg(long)]
        contact: Option<String>,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Mail an invitation again with a new link; the previous link stops working.
    Resend(InviteWhich),
    /// Withdraw a pending invitation: its link stops working (access stays as granted).
    Revoke(InviteWhich),
}

#[derive(Subcommand)]
enum AppPasswordCmd {
    /// Create an app password for a login and print it once (alone on stdout).
    Create {
        #[command(flatten)]
        data: DataArgs,
        /// The login's email.
        #[arg(long)]
        user: String,
        /// A name for the device (e.g. "office laptop").
        #[arg(long)]
        name: String,
    },
    /// List a login's app passwords (ids, names, dates; never the secrets).
    List {
        #[command(flatten)]
        data: DataArgs,
        /// The login's email.
        #[arg(long)]
        user: String,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one app password: devices using it are refused from their next request.
    Revoke {
        #[command(flatten)]
        data: DataArgs,
        /// The login's email.
        #[arg(long)]
        user: String,
        /// The app password's id (see `sdx app-password list`).
        id: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Export audit entries, oldest first, to stdout.
    Export {
        #[command(flatten)]
        data: DataArgs,
        /// Output format.
        #[arg(long, value_enum)]
        format: Format,
        /// Only this matter (number).
        #[arg(long)]
        matter: Option<String>,
        /// Only this login's actions (email).
        #[arg(long)]
        user: Option<String>,
        /// Only entries since: YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (UTC), or a
        /// duration back from now (7d, 12h, 30m).
        #[arg(long)]
        since: Option<String>,
    },
    /// Check the audit trail's hash chain; exits non-zero if it is broken.
    Verify {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Re-wrap every key under a new master key. With a key file, the file is replaced; with
    /// --new-key, the new key goes there.
    Rotate {
        #[command(flatten)]
        data: DataArgs,
        /// Write the new key to this file (mode 0600) instead of replacing the key file.
        #[arg(long, value_name = "FILE")]
        new_key: Option<PathBuf>,
    },
}

/// Prints a line to stdout, ignoring a closed pipe (a reader going away must not take the
/// server down).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn print_frame(f: Frame) {
    match f {
        Frame::Out(l) => say!("{l}"),
        Frame::Err(l) => eprintln!("{l}"),
    }
}

fn load_config(d: &DataArgs) -> Result<ServerConfig, Failure> {
    match &d.config {
        Some(f) => Ok(ServerConfig::load(f)?),
        None => Ok(ServerConfig::default()),
    }
}

fn data_dir(d: &DataArgs, cfg: &ServerConfig) -> Result<PathBuf, Failure> {
    d.data
        .clone()
        .or_else(|| cfg.data.clone())
        .ok_or_else(|| Failure::new("give the data dir with --data DIR (or `data` in --config)"))
}

/// Runs an admin request on the server serving `data`, or on the data dir itself if none does.
async fn admin(d: &DataArgs, req: AdminRequest) -> Result<(), Failure> {
    let cfg = load_config(d)?;
    let data = data_dir(d, &cfg)?;
    if let Some(stream) = socket::connect(&data.join(SOCKET_NAME)).await? {
        return socket::call(stream, &req, print_frame).await;
    }
    if matches!(req, AdminRequest::Ping) {
        return Err(Failure(format!(
            "no server is running on {}",
            data.display()
        )));
    }
    // Mail goes out through [mail] of --config; without it, grants say "not mailed".
    let (accounts, _) = server::accounts_builder(&data, &cfg, false)?;
    let opened =
        server::open_data_dir_with(&data, &cfg.key, cfg.limits.cache_mib << 20, accounts).await?;
    let ctx = AdminCtx::new(opened, false);
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let printer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            print_frame(f);
        }
    });
    let r = server::admin::execute(&ctx, req, &tx).await;
    drop(tx);
    let _ = printer.await;
    r
}

async fn serve(a: ServeArgs, mut cfg: ServerConfig, stop: Stopper) -> Result<(), Failure> {
    let data = match (a.data.data.clone().or_else(|| cfg.data.clone()), a.demo) {
        (Some(d), _) => d,
        (None, true) => PathBuf::from("sdx-demo"),
        (None, false) => {
            return Err(Failure::new(
                "give --data DIR (or --demo for a demo portal in ./sdx-demo)",
            ));
        }
    };
    if let Some(w) = a.webdav {
        cfg.webdav.listen = w;
    }
    if let Some(s) = a.sftp {
        cfg.sftp.listen = s;
    }
    if a.no_sftp {
        cfg.sftp.enabled = false;
    }
    if let (Some(c), Some(k)) = (a.tls_cert, a.tls_key) {
        cfg.webdav.tls = Some((c, k));
        cfg.webdav.insecure_http = false;
    }
    if a.insecure_http {
        if !cfg.webdav.listen.ip().is_loopback() {
            return Err(Failure(format!(
                "--insecure-http is allowed only on a loopback address, not {}: use TLS (--tls-cert/--tls-key) instead",
                cfg.webdav.listen
            )));
        }
        cfg.webdav.insecure_http = true;
        cfg.webdav.tls = None;
    }
    if a.demo
        && let Some(kf) = cfg.key.file_in(&data)
        && !kf.exists()
        && !data.join(server::DB_NAME).exists()
    {
        server::init(
            &data,
            &ServerConfig {
                key: KeySource::File(Some(kf)),
                ..cfg.clone()
            },
        )
        .await?;
    }
    server::run::resolve_free_ports(&mut cfg)?;
    let (accounts, route) = server::accounts_builder(&data, &cfg, a.demo)?;
    let opened =
        server::open_data_dir_with(&data, &cfg.key, cfg.limits.cache_mib << 20, accounts).await?;
    if a.demo {
        demo::provision(&opened.portal).await?;
        print_demo(&opened.portal, &data).await?;
    }
    if route == server::MailRoute::None {
        tracing::warn!(
            "no [mail] configured: invitations and notifications are not sent (grants still work; configure [mail] and `sdx invite resend`)"
        );
    }
    let base = opened.portal.base_url().as_str().to_string();
    let running = server::run::start(opened, &cfg).await?;
    let url = &running.webdav_url;
    say!("WebDAV: {url}");
    let (user, pass) = if a.demo {
        (demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
    } else {
        ("EMAIL", "PASSWORD")
    };
    let k = if url.starts_with("https") { "-k " } else { "" };
    say!("  try:   curl {k}-u '{user}:{pass}' -X PROPFIND -H 'Depth: 1' {url}");
    say!(
        "  mount: rclone lsd :webdav: --webdav-url {url} --webdav-user {user} --webdav-pass $(rclone obscure '{pass}') --no-check-certificate"
    );
    if let Some((addr, fingerprint)) = &running.sftp {
        say!("SFTP: sftp://{addr}");
        say!("  host key fingerprint: {fingerprint}");
        say!("  try:   sftp -P {} '{user}'@{}", addr.port(), addr.ip());
    }
    say!("Mail: {route}");
    if a.demo && matches!(route, server::MailRoute::Outbox(_)) {
        say!("  (demo only: unlike the rest of the data dir these files are not encrypted)");
    }
    say!("Invitation links: {base}/invite/...  password reset: {base}/reset");
    say!("Admin socket: {}", running.socket.display());
    say!("Press Ctrl-C to stop.");
    stop.wait().await;
    tracing::info!("stopping: finishing requests in flight");
    eprintln!("stopping: finishing requests in flight");
    running.shutdown().await
}

/// SIGINT/SIGTERM, installed before anything else starts.
struct Stopper {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stopper {
    fn install() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |k: SignalKind, name: &str| {
            signal(k).map_err(|e| Failure(format!("can't install the {name} handler: {e}")))
        };
        Ok(Stopper {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

async fn print_demo(portal: &Portal, dir: &Path) -> Result<(), Failure> {
    say!("Demo portal in {}", dir.display());
    say!(
        "  staff login:  {} / {}",
        demo::DEMO_STAFF_EMAIL,
        demo::DEMO_PASSWORD
    );
    say!(
        "  client login: {} / {}",
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD
    );
    let who = portal
        .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
        .await?;
    let tree = portal.tree(Actor::api(who));
    say!("What the client sees:");
    for m in tree.list("/").await? {
        say!("  /{}", m.name);
        for f in tree.list(&format!("/{}", m.name)).await? {
            say!("    /{}/{}  [{}]", m.name, f.name, f.perms);
            for s in tree.list(&format!("/{}/{}", m.name, f.name)).await? {
                say!("      /{}/{}/{}  [{}]", m.name, f.name, s.name, s.perms);
            }
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure(format!("{}: {e}", p.display())))
}

fn since_millis(s: Option<String>) -> Result<Option<u64>, Failure> {
    s.map(|s| server::parse_time(&s, sdx_portal::model::now_millis()))
        .transpose()
}

fn read_portal_file(path: &Path) -> Result<String, Failure> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(path)
        .map_err(|e| Failure(format!("{}: can't read it: {e}", path.display())))?;
    let mode = f.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
    let limit = sdx_portal::provision::file::MAX_FILE_BYTES as u64;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Failure(format!("{}: can't read it: {e}", path.display())))?;
    if buf.len() as u64 > limit {
        return Err(Failure(format!(
            "{}: larger than {} MiB",
            path.display(),
            limit >> 20
        )));
    }
    let text = String::from_utf8(buf)
        .map_err(|_| Failure(format!("{}: not UTF-8 text", path.display())))?;
    if mode & 0o077 != 0 && (text.contains("password =") || text.contains("password=")) {
        eprintln!(
            "warning: {} holds passwords and others can read it (mode {:o}): chmod 600 it, or use password_hash",
            path.display(),
            mode & 0o777
        );
    }
    Ok(text)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Init { data, hostnames } => {
            let mut cfg = load_config(&data)?;
            if !hostnames.is_empty() {
                cfg.webdav.hostnames = hostnames;
            }
            let dir = data_dir(&data, &cfg)?;
            for line in server::init(&dir, &cfg).await? {
                say!("{line}");
            }
            say!(
                "next: sdx apply --data {0} portal.toml   (see examples/portal.toml), then sdx serve --data {0}",
                dir.display()
            );
            Ok(())
        }
        Cmd::Serve(a) => {
            // Signal handlers first, so a SIGTERM during start-up is a clean stop too.
            let stop = Stopper::install()?;
            let cfg = load_config(&a.data)?;
            serve(a, cfg, stop).await
        }
        Cmd::Apply {
            data,
            file,
            dry_run,
        } => {
            let text = read_portal_file(&file)?;
            let name = file.display().to_string();
            admin(
                &data,
                AdminRequest::Apply {
                    name,
                    text,
                    dry_run,
                },
            )
            .await
        }
        Cmd::Grant(g) => {
            admin(
                &g.data,
                AdminRequest::Grant {
                    matter: g.matter,
                    contact: g.contact,
                    participant_type: g.participant_type,
                },
            )
            .await
        }
        Cmd::Revoke(g) => {
            admin(
                &g.data,
                AdminRequest::Revoke {
                    matter: g.matter,
                    contact: g.contact,
                    participant_type: g.participant_type,
                },
            )
            .await
        }
        Cmd::Matter { cmd } => match cmd {
            MatterCmd::List { data, json } => {
                admin(&data, AdminRequest::ListMatters { json }).await
            }
            MatterCmd::Close { data, number } => {
                admin(&data, AdminRequest::CloseMatter { matter: number }).await
            }
            MatterCmd::Reopen { data, number } => {
                admin(&data, AdminRequest::ReopenMatter { matter: number }).await
            }
        },
        Cmd::User {
            cmd: UserCmd::List { data, json },
        } => admin(&data, AdminRequest::ListUsers { json }).await,
        Cmd::Audit { cmd } => match cmd {
            AuditCmd::Export {
                data,
                format,
                matter,
                user,
                since,
            } => {
                let format = match format {
                    Format::Jsonl => ExportFormat::Jsonl,
                    Format::Csv => ExportFormat::Csv,
                };
                let since = since_millis(since)?;
                admin(
                    &data,
                    AdminRequest::AuditExport {
                        format,
                        matter,
                        user,
                        since,
                    },
                )
                .await
            }
            AuditCmd::Verify { data } => admin(&data, AdminRequest::AuditVerify).await,
        },
        Cmd::AuditVerify { data } => admin(&data, AdminRequest::AuditVerify).await,
        // Paths travel to the server, which may run in another directory: make them absolute.
        Cmd::Key {
            cmd: KeyCmd::Rotate { data, new_key },
        } => {
            let new_key = new_key.map(|p| absolute(&p)).transpose()?;
            admin(&data, AdminRequest::KeyRotate { new_key }).await
        }
        Cmd::Backup { data, out } => {
            let out = absolute(&out)?;
            admin(&data, AdminRequest::Backup { out }).await
        }
        Cmd::Status { data } => admin(&data, AdminRequest::Ping).await,
        Cmd::Invite { cmd } => match cmd {
            InviteCmd::List {
                data,
                contact,
                json,
            } => admin(&data, AdminRequest::InviteList { contact, json }).await,
            InviteCmd::Resend(w) => {
                let (data, target) = w.target();
                admin(&data, AdminRequest::InviteResend { target }).await
            }
            InviteCmd::Revoke(w) => {
                let (data, target) = w.target();
                admin(&data, AdminRequest::InviteRevoke { target }).await
            }
        },
        Cmd::AppPassword { cmd } => match cmd {
            AppPasswordCmd::Create { data, user, name } => {
                admin(&data, AdminRequest::AppPasswordCreate { user, name }).await
            }
            AppPasswordCmd::List { data, user, json } => {
                admin(&data, AdminRequest::AppPasswordList { user, json }).await
            }
            AppPasswordCmd::Revoke { data, user, id } => {
                admin(&data, AdminRequest::AppPasswordRevoke { user, id }).await
            }
        },
    }
}

/// The `--config` of whichever command was given (for logging settings).
fn config_arg(cmd: &Cmd) -> Option<&Path> {
    let d = match cmd {
        Cmd::Init { data, .. }
        | Cmd::Apply { data, .. }
        | Cmd::Backup { data, .. }
        | Cmd::Status { data }
        | Cmd::AuditVerify { data } => data,
        Cmd::Serve(a) => &a.data,
        Cmd::Grant(g) | Cmd::Revoke(g) => &g.data,
        Cmd::Matter { cmd } => match cmd {
            MatterCmd::List { data, .. }
            | MatterCmd::Close { data, .. }
            | MatterCmd::Reopen { data, .. } => data,
        },
        Cmd::User {
            cmd: UserCmd::List { data, .. },
        } => data,
        Cmd::Audit { cmd } => match cmd {
            AuditCmd::Export { data, .. } | AuditCmd::Verify { data } => data,
        },
        Cmd::Key {
            cmd: KeyCmd::Rotate { data, .. },
        } => data,
        Cmd::Invite { cmd } => match cmd {
            InviteCmd::List { data, .. } => data,
            InviteCmd::Resend(w) | InviteCmd::Revoke(w) => &w.data,
        },
        Cmd::AppPassword { cmd } => match cmd {
            AppPasswordCmd::Create { data, .. }
            | AppPasswordCmd::List { data, .. }
            | AppPasswordCmd::Revoke { data, .. } => data,
        },
    };
    d.config.as_deref()
}

fn init_logging(cli: &Cli) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    // A config file's [log] applies; otherwise the server logs at info, admin commands at warn.
    let (level, format) = match config_arg(&cli.cmd) {
        Some(f) => {
            let c = ServerConfig::load(f)?;
            (c.log.level, c.log.format)
        }
        None => match &cli.cmd {
            Cmd::Serve(a) if !a.demo => ("info".to_string(), LogFormat::Text),
            _ => ("warn".to_string(), LogFormat::Text),
        },
    };
    let filter = match EnvFilter::try_from_env("SDX_LOG") {
        Ok(f) => f,
        Err(_) => EnvFilter::try_new(&level)
            .map_err(|e| Failure(format!("log level \"{level}\" is not valid: {e}")))?,
    };
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
    Ok(())
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps
/// freed memory in each. The server runs dozens of threads (tokio workers, the blocking pool that
/// stages and seals uploads, the store writer), so after a burst of concurrent uploads its RSS sat
/// at 130–280 MiB although the heap in use peaked at ~45 MiB (heaptrack). Two arenas bring the
/// 8 × 64 MiB concurrent-upload workload to 93 MiB at the same speed (BENCHMARKS.md).
///
/// The arena limit is read by glibc only at process start, so `serve` re-executes itself once with
/// `MALLOC_ARENA_MAX=2` (`exec` keeps the PID, arguments and the rest of the environment). An
/// operator's own `MALLOC_ARENA_MAX` is left alone. Hosts embedding the library choose their own
/// allocator settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "sdx".into());
    // Only returns on failure; then run as we are.
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VAR, "2")
        .exec();
    eprintln!("sdx: note: could not re-execute with {VAR}=2 ({err}); continuing");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if matches!(cli.cmd, Cmd::Serve(_)) {
        limit_malloc_arenas();
    }
    if let Err(e) = init_logging(&cli) {
        eprintln!("sdx: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdx: can't start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Don't wait for idle blocking threads (e.g. a stdin reader) on the way out.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdx: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `sdx`: the sdx-portal server and admin command.
use clap::{Parser, Subcommand};
use sdx_portal::{Portal, PortalBuilder, demo, model::Actor};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sdx", version, about = "Secure document exchange portal")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the portal's WebDAV and SFTP front ends. With --demo, create (or reuse) a demo portal first.
    Serve {
        /// Create or reuse the demo portal in the data dir (default ./sdx-demo).
        #[arg(long)]
        demo: bool,
        /// Data directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// WebDAV listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        webdav: SocketAddr,
        /// SFTP listen address (host key kept in DATA/ssh_host_ed25519_key).
        #[arg(long, default_value = "127.0.0.1:2222")]
        sftp: SocketAddr,
        /// TLS certificate (PEM). Without --tls-cert/--tls-key a self-signed one is made in the data dir.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve plain HTTP (refused unless the address is loopback).
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        insecure_http: bool,
    },
    /// Check the audit trail's hash chain; exits non-zero if it is broken.
    AuditVerify {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

/// Prints a line to stdout, ignoring a closed pipe (output is informational; a reader going away
/// must not take the server down).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Opens the portal in `dir`, encrypted under the master key in `dir/master.key`. With `create`, a
/// new data dir gets a fresh key file (mode 0600).
async fn open_portal(dir: &Path, create: bool) -> Result<Portal, String> {
    let key = dir.join("master.key");
    if !key.exists() {
        if create && !dir.join("portal.redb").exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("can't create {}: {e}", dir.display()))?;
            sdx_portal::crypto::KeyFile::create(&key).map_err(err)?;
        } else {
            return Err(format!(
                "no master key at {}: restore it from your backup (without it the data can't be read)",
                key.display()
            ));
        }
    }
    PortalBuilder::new(dir)
        .key_provider(std::sync::Arc::new(sdx_portal::crypto::KeyFile::new(key)))
        .open()
        .await
        .map_err(err)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    demo_mode: bool,
    data: Option<PathBuf>,
    webdav: SocketAddr,
    sftp: SocketAddr,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_http: bool,
) -> Result<(), String> {
    // Install the signal handlers first, so a SIGTERM during start-up is a clean stop too.
    let stop = Stopper::install()?;
    let dir = match (data, demo_mode) {
        (Some(d), _) => d,
        (None, true) => PathBuf::from("sdx-demo"),
        (None, false) => {
            return Err("give --data DIR (or --demo for a demo portal in ./sdx-demo)".into());
        }
    };
    let portal = open_portal(&dir, demo_mode).await?;
    if demo_mode {
        demo::provision(&portal).await.map_err(err)?;
        print_demo(&portal, &dir).await?;
    }
    let tls = if insecure_http {
        None
    } else {
        let (cert, key) = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => (c, k),
            _ => sdx_portal::tls::generate_self_signed(
                &dir,
                &["localhost".to_string(), "127.0.0.1".to_string()],
            )
            .map_err(err)?,
        };
        Some(sdx_portal::tls::load_server_config(&cert, &key).map_err(err)?)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = sdx_portal::webdav::mount::builder(&portal, webdav)
        .await
        .map_err(err)?
        .tls(tls)
        .bind()
        .await
        .map_err(err)?
        .spawn();
    let url = format!("{scheme}://{}/dav/", server.local_addr());
    say!("WebDAV: {url}");
    say!(
        "  try:   curl -k -u '{}:{}' -X PROPFIND -H 'Depth: 1' {url}",
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD
    );
    say!(
        "  mount: rclone lsd :webdav: --webdav-url {url} --webdav-user {} --webdav-pass $(rclone obscure '{}') --no-check-certificate",
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD
    );
    let host_key = sdx_portal::sftp::HostKey::load_or_generate(dir.join("ssh_host_ed25519_key"))
        .await
        .map_err(err)?;
    let sftp_server = sdx_portal::sftp::mount::builder(&portal, host_key, sftp)
        .start()
        .await
        .map_err(|e| format!("can't start SFTP on {sftp}: {e}"))?;
    let sftp_addr = sftp_server.local_addr();
    say!("SFTP: sftp://{sftp_addr}");
    say!("  host key fingerprint: {}", sftp_server.fingerprint());
    say!(
        "  try:   sftp -P {} '{}'@{}",
        sftp_addr.port(),
        demo::DEMO_CLIENT_EMAIL,
        sftp_addr.ip()
    );
    say!("Press Ctrl-C to stop.");
    stop.wait().await;
    eprintln!("stopping: finishing requests in flight");
    sftp_server.shutdown();
    let (w, s) = tokio::join!(server.shutdown(), sftp_server.wait());
    w.map_err(err)?;
    s.map_err(err)?;
    Ok(())
}

/// SIGINT/SIGTERM, installed before anything else starts.
struct Stopper {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Stopper {
    fn install() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .map_err(|e| format!("can't install the SIGTERM handler: {e}"))?;
            Ok(Stopper { term })
        }
        #[cfg(not(unix))]
        Ok(Stopper {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Serve {
            demo,
            data,
            webdav,
            sftp,
            tls_cert,
            tls_key,
            insecure_http,
        } => serve(demo, data, webdav, sftp, tls_cert, tls_key, insecure_http).await,
        Cmd::AuditVerify { data } => {
            let portal = open_portal(&data, false).await?;
            let r = portal.audit_verify(&Actor::system()).await.map_err(err)?;
            match r.problem {
                None => {
                    say!("audit trail intact: {} entries", r.entries);
                    Ok(())
                }
                Some(p) => Err(format!(
                    "audit trail broken after {} good entries: {p}",
                    r.entries
                )),
            }
        }
    }
}

async fn print_demo(portal: &Portal, dir: &Path) -> Result<(), String> {
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
        .await
        .map_err(err)?;
    let tree = portal.tree(Actor::api(who));
    say!("What the client sees:");
    for m in tree.list("/").await.map_err(err)? {
        say!("  /{}", m.name);
        for f in tree.list(&format!("/{}", m.name)).await.map_err(err)? {
            say!("    /{}/{}  [{}]", m.name, f.name, f.perms);
            for s in tree
                .list(&format!("/{}/{}", m.name, f.name))
                .await
                .map_err(err)?
            {
                say!("      /{}/{}/{}  [{}]", m.name, f.name, s.name, s.perms);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SDX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdx: can't start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdx: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Shared fixture for the SFTP tests that drive the real portal with real clients: a demo portal
//! behind the SFTP front end on a loopback port, tool checks, and running external programs with a
//! deadline (a hang fails the test instead of hanging it; the child is killed).
//!
//! Missing tools fail the test under `CI=true`; otherwise the test prints why and returns.
#![allow(dead_code)]

use sdx_portal::model::{Actor, Channel, Principal};
use sdx_portal::sftp::{HostKey, RunningSftpServer, SftpServerBuilder};
use sdx_portal::tree::Tree;
use sdx_portal::{Portal, demo};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The demo client's login name.
pub const USER: &str = demo::DEMO_CLIENT_EMAIL;
/// The demo password.
pub const PASSWORD: &str = demo::DEMO_PASSWORD;
/// The demo matter as it appears at the root of the client's tree.
pub const MATTER: &str = "/2026-001 Smith v Jones";

/// A portal with the demo set-up, served over SFTP on 127.0.0.1.
pub struct PortalServer {
    /// The portal.
    pub portal: Portal,
    /// What the demo created.
    pub demo: demo::Demo,
    /// The running SFTP server.
    pub server: RunningSftpServer,
}

impl PortalServer {
    /// The demo portal behind a server tuned by `tune` (short rejection delay by default).
    pub async fn start_with(
        tune: impl FnOnce(SftpServerBuilder<Principal>) -> SftpServerBuilder<Principal>,
    ) -> PortalServer {
        let portal = Portal::in_memory().await.expect("in-memory portal");
        Self::start_on(portal, tune).await
    }

    /// `portal`, given the demo set-up, behind a server tuned by `tune`.
    pub async fn start_on(
        portal: Portal,
        tune: impl FnOnce(SftpServerBuilder<Principal>) -> SftpServerBuilder<Principal>,
    ) -> PortalServer {
        init_tracing();
        let demo = demo::provision(&portal).await.expect("demo set-up");
        let key = HostKey::generate_ephemeral().expect("host key");
        let builder =
            sdx_portal::sftp::mount::builder(&portal, key, "127.0.0.1:0".parse().expect("address"))
                .auth_rejection_time(Duration::from_millis(50))
                // As `sdx serve` runs it: each connection on one of two threads of its own.
                .connection_threads(std::sync::Arc::new(
                    sdx_portal::sftp::ConnectionThreads::start(2).expect("connection threads"),
                ));
        let server = tune(builder).start().await.expect("SFTP server starts");
        PortalServer {
            portal,
            demo,
            server,
        }
    }

    /// The demo portal behind a server with the default settings.
    pub async fn start() -> PortalServer {
        Self::start_with(|b| b).await
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// The demo client's tree, seen through the API (to check what a session did).
    pub fn client_tree(&self) -> Tree {
        self.portal.tree(Actor::new(
            Principal::Portal(self.demo.client),
            Channel::Api,
            None,
        ))
    }

    /// Stop the server and wait for its connections to end (bounded).
    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(30), self.server.stop())
            .await
            .expect("the server stops within 30 s")
            .expect("the server stops cleanly");
    }
}

/// Logs to the test output (`RUST_LOG`, default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn missing(what: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("required test tool {what} is missing or broken (CI=true)");
    }
    eprintln!("SKIPPED: {what} not available (set CI=true to make this a failure)");
    false
}

/// Whether `tool probe...` runs and succeeds. Missing tools fail the test under CI=true.
pub async fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(tool)
            .args(probe)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .map(|s| s.success())
    .unwrap_or(false);
    ok || missing(&format!("`{tool}`"))
}

/// Whether `tool` is on the PATH. Missing tools fail the test under CI=true.
pub async fn which(tool: &str) -> bool {
    have("sh", &["-c", &format!("command -v {tool}")]).await || missing(&format!("`{tool}`"))
}

/// The Python interpreter (`PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether Python with paramiko is available.
pub async fn have_paramiko() -> bool {
    have(&python(), &["-c", "import paramiko"]).await
}

/// What a finished program printed.
pub struct Output {
    /// Exit status.
    pub status: std::process::ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Both streams, for assertion messages and text searches.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a program with stdin closed and a deadline: past it the child is killed and the test
/// fails with the command line.
pub async fn run(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {limit:?} (killed)"))
        .expect("wait for the child");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// OpenSSH client options for a throw-away test server.
pub const SSH_OPTS: &[&str] = &[
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "IdentityAgent=none",
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "PreferredAuthentications=password",
];

/// `sshpass -p PASSWORD sftp -b BATCH` as `user` against the server on `port`.
pub fn sftp_batch(port: u16, user: &str, password: &str, batch: &Path) -> Command {
    let mut c = Command::new("sshpass");
    // BatchMode=no must come before -b: sftp's -b adds BatchMode=yes, and ssh keeps the first.
    c.args(["-p", password, "sftp", "-o", "BatchMode=no", "-b"])
        .arg(batch)
        .args(["-P", &port.to_string()])
        .args(SSH_OPTS)
        .args(["-o", &format!("User={user}")])
        .arg("127.0.0.1");
    c
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 4);
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed).wrapping_mul(0x0101_0101);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// SHA-256, hex.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

/// A script under `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Runs `tests/py/sftp_portal.py COMMAND --port P ARGS...` and parses the last line of its output
/// as JSON. The script itself failing fails the test.
pub async fn portal_probe(
    port: u16,
    command: &str,
    args: &[&str],
    limit: Duration,
) -> serde_json::Value {
    let mut c = Command::new(python());
    c.arg(py_script("sftp_portal.py"))
        .arg(command)
        .args(["--port", &port.to_string()])
        .args(["--user", USER, "--password", PASSWORD])
        .args(args);
    let out = run(&mut c, limit).await;
    assert!(
        out.status.success(),
        "probe {command} {args:?} failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("probe output {line:?}: {e}\n{}", out.stderr))
}

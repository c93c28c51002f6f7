//! Helpers for the tests that run the built `sdx` binary as a user would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The alice login of [`PORTAL`].
pub const ALICE: &str = "alice@client.test";
/// Her password.
pub const ALICE_PW: &str = "alice's portal passphrase";
/// Her first matter's folder in trees.
pub const M1: &str = "2026-001 Smith v Jones";

/// A small portal file: one matter type, a staff login, alice with a login, bob without, one
/// matter with both.
pub const PORTAL: &str = r#"
[firm]
name = "Demo & Co"
participant_types = ["Client", "Other Side"]

[[matter_types]]
name = "General"
folders = ["Client Documents", "Client Documents/Tax Returns", "Correspondence", "Internal"]
[matter_types.portal."Client Documents"]
Client = ["full"]
"Other Side" = ["list", "read"]
[matter_types.portal."Client Documents/Tax Returns"]
Client = ["full"]

[[staff]]
email = "sam@demo.test"
name = "Sam Staff"
password = "sam's staff passphrase"

[[contacts]]
key = "alice"
name = "Alice Client"
email = "alice@client.test"
login = { password = "alice's portal passphrase" }

[[contacts]]
key = "bob"
name = "Bob Builder"
email = "bob@jones.test"

[[matters]]
number = "2026-001"
title = "Smith v Jones"
matter_type = "General"
participants = [
  { contact = "alice", type = "Client", portal = true },
  { contact = "bob", type = "Other Side", portal = true },
]
"#;

/// A command running the built binary.
pub fn sdx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sdx"))
}

/// Runs `sdx ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    sdx().args(args).output().expect("running sdx")
}

/// stdout + stderr as text.
pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Runs `sdx ARGS` and requires success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "sdx {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes a file readable by its owner only (portal files hold passwords).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `sdx init --data DIR/data`; returns the data dir.
pub fn init(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    ok(&["init", "--data", data.to_str().unwrap()]);
    data
}

/// Writes [`PORTAL`] (or `text`) to DIR/NAME and applies it; returns apply's stdout.
pub fn apply(data: &Path, file: &Path, text: &str) -> String {
    write_private(file, text);
    ok(&[
        "apply",
        "--data",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

/// A running `sdx serve`.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `https://127.0.0.1:PORT/dav/`.
    pub url: String,
    /// SFTP port, if printed.
    pub sftp_port: Option<u16>,
    /// What it printed before it was ready.
    pub printed: Vec<String>,
}

impl Server {
    /// `sdx serve --data DATA --webdav 127.0.0.1:0 --sftp 127.0.0.1:0 EXTRA…`, waiting until it is
    /// ready.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let mut child = sdx()
            .args(["serve", "--data", data.to_str().unwrap()])
            .args(["--webdav", "127.0.0.1:0", "--sftp", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut sftp_port, mut printed) = (None, None, Vec::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            printed.push(line.clone());
            if let Some(u) = line.strip_prefix("WebDAV: ") {
                url = Some(u.to_string());
            }
            if let Some(a) = line.strip_prefix("SFTP: sftp://") {
                sftp_port = a.rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let url = url.unwrap_or_else(|| {
            panic!(
                "the server printed no WebDAV URL: {printed:?}; exit {:?}",
                child.try_wait()
            )
        });
        Server {
            child,
            url,
            sftp_port,
            printed,
        }
    }

    /// The URL of a path below `/dav/` (segments are percent-encoded).
    pub fn url_of(&self, path: &str) -> String {
        let enc: Vec<String> = path
            .split('/')
            .map(|s| {
                s.replace('%', "%25")
                    .replace(' ', "%20")
                    .replace('#', "%23")
            })
            .collect();
        format!("{}{}", self.url, enc.join("/"))
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the process to end, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "sdx serve did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (at most 30 s) and requires a clean exit.
    pub fn stop(mut self) {
        self.term();
        let s = self.wait(Duration::from_secs(30));
        assert!(s.success(), "sdx serve exited with {s}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// curl with TLS verification off, basic auth as `user:pass`, silent; returns the output.
pub fn curl(user: &str, pass: &str, args: &[&str]) -> Output {
    Command::new("curl")
        .args([
            "-s",
            "-k",
            "--max-time",
            "60",
            "-u",
            &format!("{user}:{pass}"),
        ])
        .args(args)
        .output()
        .expect("curl is required for this test")
}

/// PROPFIND Depth 1 of `url` as alice; returns the body.
pub fn propfind(user: &str, pass: &str, url: &str) -> String {
    let o = curl(user, pass, &["-X", "PROPFIND", "-H", "Depth: 1", url]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `sdx ARGS` under `timeout 60` (for commands that must end on their own), logging errors
/// only (so stderr holds just what the command itself says).
pub fn run_limited(args: &[&str]) -> Output {
    Command::new("timeout")
        .env("SDX_LOG", "error")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_sdx"))
        .args(args)
        .output()
        .expect("running timeout sdx")
}

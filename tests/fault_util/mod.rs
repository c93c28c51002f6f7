//! Helpers shared by the fault and bad-input tests: deterministic contents, a small seeded RNG,
//! SHA-256, tool checks and the `sdx` server child process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// xorshift64*: reproducible randomness without a dependency.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `SDX_FAULT_SEED` or the clock; prints the seed so a failure can be replayed.
    pub fn from_env() -> Rng {
        let seed = std::env::var("SDX_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("SDX_FAULT_SEED={seed}");
        Rng(seed | 1)
    }
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `len` bytes that depend on `tag` (different versions differ everywhere).
pub fn content(tag: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

/// Whether an external tool works. Missing tools fail the test under `CI=true`, else skip it.
pub fn have(cmd: &str, args: &[&str]) -> bool {
    let ok = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("required test tool `{cmd}` is missing or broken (CI=true)");
        }
        eprintln!("SKIPPED: `{cmd}` not available (set CI=true to make this a failure)");
    }
    ok
}

/// The Python interpreter with paramiko (`PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether curl, python3 with paramiko are there (see [`have`]).
pub fn have_clients() -> bool {
    have("curl", &["--version"]) && have(&python(), &["-c", "import paramiko"])
}

/// A running `sdx serve` child (plain HTTP on loopback, SFTP on loopback), killed on drop.
pub struct Server {
    /// The child.
    pub child: Child,
    /// `http://127.0.0.1:PORT/dav/`.
    pub url: String,
    /// WebDAV address.
    pub webdav: SocketAddr,
    /// SFTP address.
    pub sftp: SocketAddr,
    /// What the server printed on stdout.
    pub lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `sdx serve` on `data` (with `--demo` if `demo`) and waits until both front ends are
    /// up. Panics if it does not come up within 30 s.
    pub fn start(data: &Path, demo: bool) -> Server {
        Self::try_start(data, demo).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start`], returning what went wrong instead of panicking.
    pub fn try_start(data: &Path, demo: bool) -> Result<Server, String> {
        Self::try_start_with(data, demo, &[])
    }

    /// [`Server::try_start`] with extra arguments for `sdx serve` (e.g. `--config FILE`).
    pub fn try_start_with(
        data: &Path,
        demo: bool,
        extra: &[&std::ffi::OsStr],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sdx"));
        cmd.arg("serve");
        cmd.args(extra);
        if demo {
            cmd.arg("--demo");
        }
        let mut child = cmd
            .args([
                "--insecure-http",
                "--webdav",
                "127.0.0.1:0",
                "--sftp",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data)
            .env(
                "SDX_LOG",
                std::env::var("SDX_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("can't run sdx: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        let mut sftp = None;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    if let Some(u) = l.strip_prefix("WebDAV: ") {
                        url = Some(u.to_string());
                    }
                    if let Some(a) = l.strip_prefix("SFTP: sftp://") {
                        sftp = a.parse::<SocketAddr>().ok();
                    }
                    let ready = l.starts_with("Press Ctrl-C");
                    seen.push(l);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let (Some(url), Some(sftp)) = (url, sftp) else {
            let _ = child.kill();
            let status = child.wait();
            return Err(format!(
                "sdx serve did not come up: printed {seen:?}, exit {status:?}"
            ));
        };
        let webdav = url
            .trim_start_matches("http://")
            .trim_end_matches("/dav/")
            .parse()
            .map_err(|e| format!("bad WebDAV URL {url}: {e}"))?;
        Ok(Server {
            child,
            url,
            webdav,
            sftp,
            lines: rx,
        })
    }

    /// SIGKILL and wait.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (up to 20 s, then SIGKILL); returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Resident set size of the server in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of /proc/PID/status in KiB (0 if unreadable).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The demo client's credentials for curl's `-u`.
pub fn demo_user() -> String {
    format!(
        "{}:{}",
        sdx_portal::demo::DEMO_CLIENT_EMAIL,
        sdx_portal::demo::DEMO_PASSWORD
    )
}

/// Percent-encodes a portal path for a URL (keeps `/`).
pub fn url_path(p: &str) -> String {
    let mut out = String::new();
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One curl request; returns (HTTP status, body). `args` come after the common options.
pub fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "30",
            "-u",
            &demo_user(),
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

/// Runs the paramiko helper script `tests/py/fault_sftp.py` with `args`; returns its output.
pub fn sftp_py(args: &[&str]) -> std::process::Output {
    Command::new(python())
        .arg(py_script())
        .args(args)
        .output()
        .expect("python3")
}

/// The path of `tests/py/fault_sftp.py`.
pub fn py_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/fault_sftp.py")
}

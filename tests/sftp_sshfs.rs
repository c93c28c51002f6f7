//! The SFTP front end over the real portal mounted with `sshfs` (FUSE): an existing document opened
//! read+write, written at random offsets (and past its end), fsync'd, statvfs'd (`df`) and read
//! back. The mount is always undone (`fusermount3 -u`), even when the test fails.

mod sftp_common;

use sdx_portal::tree::WriteOptions;
use sftp_common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);

/// Unmounts on drop (also while a failing test unwinds).
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn unmount(&self) -> bool {
        let status = |lazy: bool| {
            let mut c = std::process::Command::new("fusermount3");
            c.arg(if lazy { "-uz" } else { "-u" })
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c.status().map(|s| s.success()).unwrap_or(false)
        };
        status(false) || status(true)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) && !self.unmount() {
            eprintln!("could not unmount {}", self.dir.display());
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// Mounts `remote` (a path in the portal user's tree) at `dir`.
async fn mount(port: u16, remote: &str, dir: &Path, log: &Path) -> Mounted {
    let log_file = std::fs::File::create(log).unwrap();
    let mut c = Command::new("sshfs");
    // sshfs passes only the ssh options it knows (not User); ssh splits user@host at the last '@'.
    c.arg(format!("{USER}@127.0.0.1:{remote}"))
        .arg(dir)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "password_stdin,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PubkeyAuthentication=no,PreferredAuthentications=password,IdentityAgent=none",
        ])
        .args(["-o", "ServerAliveInterval=5,ServerAliveCountMax=3"])
        .stdin(Stdio::piped())
        // sshfs daemonizes once mounted: the daemon must not hold pipes we wait on.
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true);
    let mut child = c.spawn().expect("start sshfs");
    let mut stdin = child.stdin.take().expect("sshfs stdin");
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let m = Mounted {
        dir: dir.to_path_buf(),
    };
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("sshfs did not finish mounting in time")
        .unwrap();
    assert!(
        status.success() && is_mounted(dir),
        "sshfs failed ({status}): {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshfs_random_writes_fsync_statvfs_read_back() {
    if !(which("sshfs").await
        && which("fusermount3").await
        && have(&python(), &["--version"]).await)
    {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("/dev/fuse is missing (CI=true)");
        }
        eprintln!("SKIPPED: no /dev/fuse");
        return;
    }
    let srv = PortalServer::start().await;
    let tr = format!("{MATTER}/Client Documents/Tax Returns");
    // An existing document (Tax Returns: the client may update it).
    let original = pattern(1_500_000, 9);
    let tree = srv.client_tree();
    let mut up = tree
        .open_write(&format!("{tr}/ledger.bin"), WriteOptions::upload())
        .await
        .unwrap();
    up.write(&original).await.unwrap();
    up.commit().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = mount(srv.port(), &tr, &mnt, &work.path().join("sshfs.log")).await;

    // The listing through the mount.
    let out = run(Command::new("ls").arg("-l").arg(&mnt), LIMIT).await;
    assert!(out.status.success(), "{}", out.text());
    assert!(out.stdout.contains("ledger.bin"), "{}", out.stdout);

    // df: statvfs@openssh.com through FUSE.
    let out = run(Command::new("df").args(["-P", "-k"]).arg(&mnt), LIMIT).await;
    assert!(out.status.success(), "{}", out.text());
    let line = out.stdout.lines().nth(1).unwrap_or_default().to_owned();
    // The source column holds spaces (the remote path): count from the right.
    let fields: Vec<&str> = line.split_whitespace().rev().collect();
    let total_k: u64 = fields.get(4).and_then(|v| v.parse().ok()).unwrap_or(0);
    let avail_k: u64 = fields.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(total_k > 0 && avail_k > 0, "df: {}", out.stdout);

    // Random-offset edits of the existing file, opened read+write.
    let file = mnt.join("ledger.bin");
    let mut c = Command::new(python());
    c.arg(py_script("sftp_portal.py"))
        .arg("fs-edit")
        .arg("--path")
        .arg(&file)
        .args(["--seed", "7", "--writes", "40"]);
    let out = run(&mut c, LIMIT).await;
    assert!(out.status.success(), "{}", out.text());
    let v: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().unwrap_or_default()).unwrap();
    eprintln!("{v}");
    assert_eq!(v["original_len"], original.len(), "{v}");
    assert_eq!(v["same_fd_matches"], true, "{v}");
    assert_eq!(v["fstat_size"], v["expected_len"], "{v}");
    assert!(v["statvfs"]["blocks"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["statvfs"]["bavail"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["back_sha256"], v["expected_sha256"], "{v}");

    // The portal holds exactly the edited content (not a cached copy of the mount).
    let e = tree.stat(&format!("{tr}/ledger.bin")).await.unwrap();
    assert_eq!(serde_json::json!(e.len), v["expected_len"]);
    assert_eq!(
        serde_json::json!(e.sha256.map(hex::encode)),
        v["expected_sha256"]
    );

    assert!(mounted.unmount(), "fusermount3 -u failed");
    assert!(!is_mounted(&mnt));
    srv.stop().await;
}

//! The SFTP front end over the real portal driven by `rclone` (sftp remote configured through
//! environment variables, password obscured with `rclone obscure`): copy up and down, contents
//! compared by SHA-256 and by `rclone check --download`.

mod sftp_common;

use sftp_common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(180);

fn rclone(cfg: &Path, port: u16, obscured: &str) -> Command {
    let mut c = Command::new("rclone");
    c.arg("--config")
        .arg(cfg)
        .env("RCLONE_CONFIG_PORTAL_TYPE", "sftp")
        .env("RCLONE_CONFIG_PORTAL_HOST", "127.0.0.1")
        .env("RCLONE_CONFIG_PORTAL_PORT", port.to_string())
        .env("RCLONE_CONFIG_PORTAL_USER", USER)
        .env("RCLONE_CONFIG_PORTAL_PASS", obscured)
        .args(["--contimeout", "20s", "--timeout", "60s", "--retries", "1"]);
    c
}

fn hashes(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256_hex(&std::fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_copy_up_and_down_keeps_every_byte() {
    if !have("rclone", &["version"]).await {
        return;
    }
    let srv = PortalServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("rclone.conf");
    std::fs::write(&cfg, "").unwrap();
    let out = run(
        Command::new("rclone")
            .arg("--config")
            .arg(&cfg)
            .args(["obscure", PASSWORD]),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "{}", out.text());
    let obscured = out.stdout.trim().to_owned();
    assert!(!obscured.is_empty() && obscured != PASSWORD);

    let up = work.path().join("up");
    std::fs::create_dir(&up).unwrap();
    // Several sizes: empty, tiny, not a multiple of any chunk size, and big enough for rclone
    // to keep many writes and reads in flight (out of order on the server).
    for (name, len, seed) in [
        ("empty.txt", 0usize, 1u8),
        ("tiny.txt", 17, 2),
        ("odd size.bin", 1_000_003, 3),
        ("big.bin", 24 * 1024 * 1024 + 5, 4),
    ] {
        std::fs::write(up.join(name), pattern(len, seed)).unwrap();
    }
    let remote = format!("portal:{MATTER}/Client Documents/Tax Returns");

    let out = run(
        rclone(&cfg, srv.port(), &obscured)
            .args(["copy", "--checksum"])
            .arg(&up)
            .arg(&remote),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "rclone copy up: {}", out.text());

    // What the portal now holds, read through the API.
    let tree = srv.client_tree();
    let tr = format!("{MATTER}/Client Documents/Tax Returns");
    for (name, want) in hashes(&up) {
        let e = tree.stat(&format!("{tr}/{name}")).await.unwrap();
        assert_eq!(
            e.sha256.map(hex::encode).as_deref(),
            Some(want.as_str()),
            "{name} as stored"
        );
    }

    let down = work.path().join("down");
    let out = run(
        rclone(&cfg, srv.port(), &obscured)
            .args(["copy", "--checksum"])
            .arg(&remote)
            .arg(&down),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "rclone copy down: {}", out.text());
    assert_eq!(hashes(&up), hashes(&down));

    // rclone's own comparison, by content (the server offers no hash command).
    let out = run(
        rclone(&cfg, srv.port(), &obscured)
            .args(["check", "--download"])
            .arg(&up)
            .arg(&remote),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "rclone check: {}", out.text());
    assert!(out.text().contains("0 differences found"), "{}", out.text());

    // A second copy finds nothing to do: sizes and modification times were kept.
    let out = run(
        rclone(&cfg, srv.port(), &obscured)
            .args(["copy", "-v"])
            .arg(&up)
            .arg(&remote),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "{}", out.text());
    assert!(
        !out.text().contains("Copied"),
        "nothing should be copied again: {}",
        out.text()
    );

    // A folder the client can only read refuses the upload, and rclone says so.
    let out = run(
        rclone(&cfg, srv.port(), &obscured)
            .arg("copy")
            .arg(&up)
            .arg(format!("portal:{MATTER}/Correspondence")),
        LIMIT,
    )
    .await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(out.text().contains("permission denied"), "{}", out.text());
    srv.stop().await;
}

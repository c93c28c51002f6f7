//! Runs the built `sdx` binary as a user would: `serve --demo` comes up over HTTPS, the demo client
//! lists its matter with curl (WebDAV) and OpenSSH `sftp` (SFTP), and SIGTERM stops the server
//! cleanly.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn serve_demo_comes_up_and_the_client_lists_its_matter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdx"))
        .args([
            "serve",
            "--demo",
            "--webdav",
            "127.0.0.1:0",
            "--sftp",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut url = None;
    let mut sftp = None;
    let mut seen = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if let Some(u) = line.strip_prefix("WebDAV: ") {
            url = Some(u.to_string());
        }
        if let Some(u) = line.strip_prefix("SFTP: sftp://") {
            sftp = Some(u.to_string());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    // Keep draining what the server prints.
    std::thread::spawn(move || for _ in lines {});
    let url = url.unwrap_or_else(|| {
        panic!(
            "the server printed no WebDAV URL; it printed: {seen:?}; exit: {:?}",
            child.try_wait()
        )
    });
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // The demo says where its mail goes, and that those files are plaintext.
    let outbox = data.join("outbox");
    assert!(
        seen.iter().any(|l| l.starts_with("Mail: written to")
            && l.contains(outbox.to_str().unwrap())
            && l.contains("plaintext")),
        "{seen:?}"
    );
    let base = url.trim_end_matches("/dav/");
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("Invitation links: {base}/invite/"))),
        "{seen:?}"
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-k",
            "-u",
            "alice@client.test:demo portal password",
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            &url,
        ])
        .output()
        .expect("curl is required for this test");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("2026-001"), "{body}");
    // The key material stays private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key.pem is readable by others: {mode:o}");
    }
    // The same client over SFTP, with the real OpenSSH client.
    let sftp = sftp.unwrap_or_else(|| panic!("the server printed no SFTP address: {seen:?}"));
    let port = sftp.rsplit(':').next().unwrap().to_string();
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "ls -1 /\n").unwrap();
    let out = Command::new("timeout")
        .args(["60", "sshpass", "-p", "demo portal password", "sftp"])
        .args(["-o", "BatchMode=no", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-P", &port, "-b"])
        .arg(&batch)
        .arg("alice@client.test@127.0.0.1")
        .output()
        .expect("timeout, sshpass and OpenSSH sftp are required for this test");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sftp failed: {text}");
    assert!(text.contains("2026-001 Smith v Jones"), "{text}");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "sdx exited with {status}");
}

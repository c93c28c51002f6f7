//! `sdx serve` as an operator runs it: graceful SIGTERM in the middle of an upload, and the
//! one-line errors for the usual mistakes.
mod cli_support;
use cli_support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_during_an_upload_leaves_no_partial_document_and_the_old_version_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    apply(&data, &dir.path().join("portal.toml"), PORTAL);
    let cfg = dir.path().join("sdx.toml");
    std::fs::write(&cfg, "[limits]\nshutdown_grace_secs = 1\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut server = Server::start(&data, &["--config", cfg]);
    let doc = format!("{M1}/Client Documents/report.pdf");
    let url = server.url_of(&doc);

    // Version one.
    let v1 = dir.path().join("v1");
    std::fs::write(&v1, "version one\n").unwrap();
    let o = curl(
        ALICE,
        ALICE_PW,
        &[
            "-T",
            v1.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "201");

    // Version two: 32 MiB sent at 512 KiB/s (about a minute), interrupted after two seconds.
    let big = dir.path().join("big");
    let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let mut content = Vec::with_capacity(32 << 20);
    for _ in 0..32 {
        content.extend_from_slice(&chunk);
    }
    std::fs::write(&big, &content).unwrap();
    let mut upload = Command::new("curl")
        .args(["-s", "-k", "-u", &format!("{ALICE}:{ALICE_PW}")])
        .args(["-H", "Expect:", "--limit-rate", "512K", "--max-time", "120"])
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-T",
            big.to_str().unwrap(),
            &url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is required for this test");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        upload.try_wait().unwrap().is_none(),
        "the upload ended too early"
    );
    let t0 = Instant::now();
    server.term();
    let status = server.wait(Duration::from_secs(30));
    let took = t0.elapsed();
    assert!(status.success(), "sdx serve exited with {status}");
    // The transfer had its grace period, then was aborted.
    assert!(took >= Duration::from_millis(900), "stopped after {took:?}");
    eprintln!("SIGTERM to exit with an upload in flight: {took:?}");
    let up = upload.wait_with_output().unwrap();
    let code = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(
        !code.starts_with('2'),
        "the interrupted upload was answered {code}"
    );

    // After a restart: the old version, nothing partial, no staged leftovers.
    let server = Server::start(&data, &[]);
    let o = curl(ALICE, ALICE_PW, &[&server.url_of(&doc)]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "version one\n");
    let listing = propfind(
        ALICE,
        ALICE_PW,
        &server.url_of(&format!("{M1}/Client Documents/")),
    );
    assert_eq!(listing.matches("<D:response>").count(), 3, "{listing}");
    assert!(
        listing.contains("report.pdf") && listing.contains("Tax%20Returns"),
        "{listing}"
    );
    let tmp: Vec<_> = std::fs::read_dir(data.join("blobs/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "staged files left: {tmp:?}");
    server.stop();
    let verify = ok(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(verify.contains("audit trail intact"), "{verify}");
}

fn one_line_error(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "expected a failure: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("sdx: "), "{err}");
    err
}

#[test]
fn mistakes_give_one_line_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    let loopback = ["--webdav", "127.0.0.1:0", "--sftp", "127.0.0.1:0"];

    // A bad config line: file and line number.
    let cfg = dir.path().join("sdx.toml");
    std::fs::write(
        &cfg,
        "# sdx\n[webdav]\nlisten = \"127.0.0.1:0\"\nlisten_port = 8443\n",
    )
    .unwrap();
    let o = run_limited(&["serve", "--data", d, "--config", cfg.to_str().unwrap()]);
    let err = one_line_error(&o);
    assert!(
        err.contains(&format!("{} line 4: ", cfg.display())) && err.contains("listen_port"),
        "{err}"
    );

    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let o = run_limited(&[
        "serve",
        "--data",
        d,
        "--webdav",
        &addr,
        "--sftp",
        "127.0.0.1:0",
    ]);
    let err = one_line_error(&o);
    assert!(
        err.contains("port is in use") && err.contains("--webdav"),
        "{err}"
    );
    let o = run_limited(&[
        "serve",
        "--data",
        d,
        "--webdav",
        "127.0.0.1:0",
        "--sftp",
        &addr,
    ]);
    let err = one_line_error(&o);
    assert!(
        err.contains("port is in use") && err.contains("--sftp"),
        "{err}"
    );

    // Plain HTTP off loopback.
    let o = run_limited(&[
        "serve",
        "--data",
        d,
        "--insecure-http",
        "--webdav",
        "0.0.0.0:0",
    ]);
    let err = one_line_error(&o);
    assert!(err.contains("only on a loopback address"), "{err}");

    // No data dir; no key.
    let o = run_limited(&["serve", "--data", "/nonexistent/sdx"]);
    assert!(one_line_error(&o).contains("sdx init --data /nonexistent/sdx"));
    let mut args = vec!["serve", "--data", d];
    args.extend(loopback);
    std::fs::rename(data.join("master.key"), dir.path().join("key.saved")).unwrap();
    let err = one_line_error(&run_limited(&args));
    assert!(
        err.contains("no master key") && err.contains("restore it from your backup"),
        "{err}"
    );
    // A wrong key.
    ok(&["init", "--data", dir.path().join("other").to_str().unwrap()]);
    std::fs::copy(dir.path().join("other/master.key"), data.join("master.key")).unwrap();
    let err = one_line_error(&run_limited(&args));
    assert!(err.contains("key"), "{err}");
    std::fs::rename(dir.path().join("key.saved"), data.join("master.key")).unwrap();

    // A data dir in use by another process (a server whose admin socket went away).
    let server = Server::start(&data, &[]);
    std::fs::remove_file(data.join("admin.sock")).unwrap();
    let err = one_line_error(&run_limited(&["matter", "list", "--data", d]));
    assert!(err.contains("in use by another sdx process"), "{err}");
    server.stop();
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["serve"],
        &["apply"],
        &["grant"],
        &["revoke"],
        &["matter"],
        &["matter", "list"],
        &["matter", "close"],
        &["matter", "reopen"],
        &["user", "list"],
        &["audit"],
        &["audit", "export"],
        &["audit", "verify"],
        &["key", "rotate"],
        &["backup"],
        &["status"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let o = run(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(out.contains("Usage: sdx"), "{args:?}: {out}");
    }
}

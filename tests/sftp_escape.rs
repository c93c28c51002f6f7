//! A portal user can't leave their tree over SFTP by any path form (Python paramiko): `..`,
//! absolute and host paths, symbolic links, NUL bytes, overlong names and paths, names that are
//! not UTF-8 (refused, not mangled). Another matter of the firm is never reached, and is indistinguishable from a matter
//! that does not exist.

mod sftp_common;

use sdx_portal::model::{Actor, Principal};
use sdx_portal::tree::WriteOptions;
use serde_json::{Value, json};
use sftp_common::*;
use std::time::Duration;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);
const OTHER: &str = "2026-002 Other Case";
const NOTHING: &str = "2026-999 Nothing Here";
const OWN_FOLDER: &str = "Client Documents/Tax Returns";

fn is_success(v: &Value) -> bool {
    v == "ok" || v.is_object()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_form_leaves_the_tree() {
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    let sys = Actor::system();
    let general = srv
        .portal
        .find_matter_type(&sys, "General")
        .await
        .unwrap()
        .unwrap();
    srv.portal
        .create_matter(&sys, "2026-002", "Other Case", general)
        .await
        .unwrap();
    let staff = srv
        .portal
        .tree(Actor::api(Principal::Staff(srv.demo.staff)));
    let secret = format!("/{OTHER}/Client Documents/secret.txt");
    let mut up = staff
        .open_write(&secret, WriteOptions::upload())
        .await
        .unwrap();
    up.write(b"top secret").await.unwrap();
    up.commit().await.unwrap();

    let host_dir = tempfile::tempdir().unwrap();
    let host_file = host_dir.path().join("escaped.txt");
    let mut c = Command::new(python());
    c.arg(py_script("sftp_portal.py"))
        .arg("escape")
        .args(["--port", &srv.port().to_string(), "--user", USER])
        .args([
            "--password",
            PASSWORD,
            "--root",
            MATTER,
            "--folder",
            OWN_FOLDER,
        ])
        .args(["--other", OTHER, "--nothing", NOTHING, "--host-file"])
        .arg(&host_file);
    let out = run(&mut c, LIMIT).await;
    assert!(out.status.success(), "{}", out.text());
    let v: Value = serde_json::from_str(out.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", out.text()));
    let r = v.as_object().expect("a JSON object");
    let own_root = json!({ "names": [MATTER.trim_start_matches('/')] });

    for (k, val) in r {
        let ctx = format!("{k}: {val}");
        if k.starts_with("ls ") && !k.contains("after") || k == "final ls /" {
            // Every spelling of the root lists the user's own matter only.
            assert_eq!(val, &own_root, "{ctx}");
        } else if k.starts_with("realpath ") {
            let p = val["path"].as_str().unwrap_or_else(|| panic!("{ctx}"));
            assert!(p.starts_with('/'), "{ctx}");
            assert!(
                !p.split('/').any(|s| s == ".." || s == "."),
                "realpath must be canonical: {ctx}"
            );
        } else if k.starts_with("other ") {
            // Never reached, and answered exactly like a matter that does not exist.
            assert!(!is_success(val), "{ctx}");
            let twin = &r[&k.replacen("other ", "nothing ", 1)];
            assert_eq!(val, twin, "{k}: other matter vs no matter");
        } else if k == "ls after symlinks" {
            let names = val["names"].as_array().unwrap_or_else(|| panic!("{ctx}"));
            assert!(
                !names
                    .iter()
                    .any(|n| n.as_str().unwrap_or("").starts_with("link")),
                "{ctx}"
            );
        } else if k == "final get mine" {
            assert_eq!(val["sha256"], sha256_hex(b"mine"), "{ctx}");
        } else if k.starts_with("nothing ") {
            assert!(!is_success(val), "{ctx}");
        } else {
            assert!(!is_success(val), "must be refused: {ctx}");
        }
    }
    // Specific answers: links are refused cleanly, NUL bytes and overlong names are bad
    // names (not "no such file"), the host's files do not exist here.
    assert_eq!(r["symlink abs"], "denied");
    assert_eq!(r["symlink rel"], "denied");
    assert!(
        r["readlink"]
            .as_str()
            .is_some_and(|s| s.starts_with("failed") && s.contains("symbolic links")),
        "{}",
        r["readlink"]
    );
    for k in [
        "nul put",
        "nul get",
        "nul ls",
        "long name 10000",
        "long path 200000",
        "latin1 get",
        "latin1 put",
    ] {
        assert!(
            r[k].as_str().is_some_and(|s| s.starts_with("failed")),
            "{k}: {}",
            r[k]
        );
    }
    assert_eq!(r["host get /etc/passwd"], "nosuch");
    assert!(!host_file.exists(), "a file was written on the host");

    // The other matter is untouched; the user's folder holds only what the user put there.
    let tree = srv.client_tree();
    let other_docs: Vec<String> = staff
        .list(&format!("/{OTHER}/Client Documents"))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !e.is_dir())
        .map(|e| e.name)
        .collect();
    assert_eq!(other_docs, vec!["secret.txt".to_string()]);
    let mut rd = staff.open_read(&secret).await.unwrap();
    assert_eq!(&rd.read_at(0, 100).await.unwrap()[..], b"top secret");
    let mut own: Vec<String> = tree
        .list(&format!("{MATTER}/{OWN_FOLDER}"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    own.sort();
    assert_eq!(own, vec!["mine.txt".to_string()]);
    srv.stop().await;
}

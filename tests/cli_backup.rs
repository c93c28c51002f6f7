//! `sdx backup` while the server runs and uploads go on, restored into a new data dir; then
//! `sdx key rotate` on the running server.
mod cli_support;
use cli_support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn content(i: usize) -> Vec<u8> {
    format!("document {i}\n").repeat(20_000).into_bytes()
}

fn copy_key(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn backup_while_serving_restores_and_key_rotation_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    apply(&data, &dir.path().join("portal.toml"), PORTAL);
    let key_v1 = dir.path().join("key-v1");
    copy_key(&data.join("master.key"), &key_v1);
    let server = Server::start(&data, &[]);
    let folder = format!("{M1}/Client Documents");
    let src = dir.path().join("first.txt");
    std::fs::write(&src, "first document\n").unwrap();
    let o = curl(
        ALICE,
        ALICE_PW,
        &[
            "-T",
            src.to_str().unwrap(),
            &server.url_of(&format!("{folder}/first.txt")),
        ],
    );
    assert!(o.status.success());

    // Uploads keep going while the backup runs.
    let urls: Vec<String> = (0..12)
        .map(|i| server.url_of(&format!("{folder}/doc{i}.txt")))
        .collect();
    let srcdir = dir.path().to_path_buf();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = done.clone();
    let uploader = std::thread::spawn(move || {
        for (i, u) in urls.iter().enumerate() {
            let f = srcdir.join(format!("doc{i}"));
            std::fs::write(&f, content(i)).unwrap();
            let o = curl(
                ALICE,
                ALICE_PW,
                &["-T", f.to_str().unwrap(), "-w", "%{http_code}", u],
            );
            assert_eq!(String::from_utf8_lossy(&o.stdout), "201");
            progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // Back up once a few documents are in, while the rest are still coming.
    while done.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let bk = dir.path().join("backup");
    let out = ok(&["backup", "--data", d, "--out", bk.to_str().unwrap()]);
    assert!(
        out.contains("backup written to") && out.contains("verified"),
        "{out}"
    );
    uploader.join().unwrap();
    assert!(bk.join("backup.json").is_file());
    assert!(
        !bk.join("master.key").exists(),
        "the master key must not be in a backup"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bk.join("backup.json")).unwrap()).unwrap();
    assert!(
        manifest["audit_entries"].as_u64().unwrap() > 10,
        "{manifest}"
    );
    eprintln!("backup while uploading: {out}");

    // Refusals.
    let o = run(&["backup", "--data", d, "--out", bk.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not empty"),
        "{}",
        text(&o)
    );
    let inside = data.join("bk");
    let o = run(&["backup", "--data", d, "--out", inside.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("inside the data dir"),
        "{}",
        text(&o)
    );

    // Key rotation on the running server: the key file is replaced, serving goes on.
    let out = ok(&["key", "rotate", "--data", d]);
    assert!(out.contains("rotated the master key"), "{out}");
    let new_key = std::fs::read(data.join("master.key")).unwrap();
    assert_ne!(new_key, std::fs::read(&key_v1).unwrap());
    let mode = std::fs::metadata(data.join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    assert!(!data.join("master.key.new").exists());
    let o = curl(
        ALICE,
        ALICE_PW,
        &[&server.url_of(&format!("{folder}/first.txt"))],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "first document\n");
    let o = curl(
        ALICE,
        ALICE_PW,
        &[
            "-T",
            src.to_str().unwrap(),
            "-w",
            "%{http_code}",
            &server.url_of(&format!("{folder}/after-rotation.txt")),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "201");
    server.stop();
    // The data dir opens with the new key only.
    let v = ok(&["audit", "verify", "--data", d]);
    assert!(v.contains("intact"), "{v}");

    // Restore: the backup plus the key it was made under.
    copy_key(&data.join("master.key"), &bk.join("master.key"));
    let o = run(&["audit", "verify", "--data", bk.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("wrong master key"),
        "{}",
        text(&o)
    );
    copy_key(&key_v1, &bk.join("master.key"));
    let restored = Server::start(&bk, &[]);
    let o = curl(
        ALICE,
        ALICE_PW,
        &[&restored.url_of(&format!("{folder}/first.txt"))],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "first document\n");
    // Every document in the copy is complete (whichever uploads made it in).
    let listing = propfind(ALICE, ALICE_PW, &restored.url_of(&format!("{folder}/")));
    let mut found = 0;
    for i in 0..12 {
        if listing.contains(&format!("doc{i}.txt")) {
            let o = curl(
                ALICE,
                ALICE_PW,
                &[&restored.url_of(&format!("{folder}/doc{i}.txt"))],
            );
            assert_eq!(o.stdout, content(i), "doc{i}.txt differs in the backup");
            found += 1;
        }
    }
    eprintln!("{found} of 12 concurrent uploads were in the backup");
    assert!(found >= 3, "uploads finished before the backup are in it");
    assert!(!listing.contains("after-rotation.txt"));
    restored.stop();
    let v = ok(&["audit", "verify", "--data", bk.to_str().unwrap()]);
    assert!(v.contains("intact"), "{v}");
}

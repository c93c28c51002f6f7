//! Issue 3, "Must show": an upload killed mid-way (SIGKILL) leaves the database opening cleanly,
//! the old version intact, no partial document and, after the next open, no orphaned blob.
//!
//! The test re-executes its own binary as a child (`SDX_FAULT_KILL_CHILD=<data dir>`) that opens
//! the encrypted portal and stages a large upload through the Tree API; the parent SIGKILLs it at a
//! random moment — while staging, around the commit, or after it — then reopens the portal and
//! checks: the audit chain verifies; the document is exactly the previous version or (only if the
//! child could have committed) exactly the new one, never anything else; the blob store holds one
//! file per recorded version and its staging area is empty. `SDX_FAULT_KILLS` sets the number of
//! kills (default 8); the random seed is printed and can be replayed with `SDX_FAULT_SEED`.

mod fault_util;

use fault_util::{Rng, content, sha256};
use sdx_portal::crypto::KeyFile;
use sdx_portal::model::Actor;
use sdx_portal::tree::WriteOptions;
use sdx_portal::{Error, Portal, PortalBuilder, demo};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SDX_FAULT_KILL_CHILD";
const DOC: &str = "/2026-001 Smith v Jones/Client Documents/Tax Returns/ledger.bin";
/// Size of every version: 48 MiB, so staging takes long enough to be interrupted.
const LEN: usize = 48 << 20;

async fn open(dir: &Path) -> Portal {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = PortalBuilder::new(dir)
            .key_provider(Arc::new(KeyFile::new(dir.join("master.key"))))
            .open()
            .await;
        match r {
            Ok(p) => return p,
            // The previous portal's writer thread may still hold the database for a moment.
            Err(Error::Conflict(m)) if Instant::now() < deadline => {
                let _ = m;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the portal in {} does not open: {e}", dir.display()),
        }
    }
}

/// The child: stage version `SDX_FAULT_VERSION` of DOC, commit if asked, then wait to be killed.
async fn child(dir: PathBuf) {
    let version: u64 = std::env::var("SDX_FAULT_VERSION").unwrap().parse().unwrap();
    let commit = std::env::var("SDX_FAULT_COMMIT").as_deref() == Ok("1");
    let portal = open(&dir).await;
    let who = portal
        .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
        .await
        .unwrap();
    let tree = portal.tree(Actor::api(who));
    let data = content(version, LEN);
    let mut up = tree.open_write(DOC, WriteOptions::upload()).await.unwrap();
    println!("STAGING");
    for (i, piece) in data.chunks(256 << 10).enumerate() {
        up.write(piece).await.unwrap();
        if i % 16 == 15 {
            println!("WROTE {}", (i + 1) * (256 << 10));
        }
    }
    if commit {
        println!("COMMITTING");
        up.commit().await.unwrap();
        println!("COMMITTED");
    } else {
        println!("STAGED");
        // Keep the upload open (staged, not committed) until the kill.
        std::thread::sleep(Duration::from_secs(60));
        drop(up);
    }
    std::thread::sleep(Duration::from_secs(60));
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn upload_killed_mid_way_leaves_the_old_version_and_no_orphans() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        rt.block_on(child(PathBuf::from(dir)));
        return;
    }
    let kills: usize = std::env::var("SDX_FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut rng = Rng::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    KeyFile::create(dir.join("master.key")).unwrap();
    // Version 1, committed normally.
    let (matter_dir, first) = rt.block_on(async {
        let portal = open(&dir).await;
        demo::provision(&portal).await.unwrap();
        let tree = portal.tree(Actor::system());
        let mut up = tree.open_write(DOC, WriteOptions::upload()).await.unwrap();
        let v1 = content(1, LEN);
        up.write(&v1).await.unwrap();
        let e = up.commit().await.unwrap();
        let m = e.matter.unwrap();
        (dir.join("blobs").join(format!("{:016x}", m.0)), sha256(&v1))
    });
    let mut current = (1u64, first);
    let mut outcomes = Vec::new();
    for round in 0..kills {
        let version = round as u64 + 2;
        // A fixed schedule (so every outcome is exercised), random delays within it.
        let commit = round % 4 != 1;
        let point = round as u64 % 3;
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "upload_killed_mid_way_leaves_the_old_version_and_no_orphans",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .env("SDX_FAULT_VERSION", version.to_string())
            .env("SDX_FAULT_COMMIT", if commit { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let out = c.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let wait_for = |what: &str, seen: &mut Vec<String>| -> bool {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(l) => {
                        let hit = l.contains(what);
                        seen.push(l);
                        if hit {
                            return true;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                }
            }
            false
        };
        assert!(
            wait_for("STAGING", &mut seen),
            "child never started: {seen:?}"
        );
        // Where to kill: mid-staging (random delay), right around the commit, or after it.
        match point {
            0 => std::thread::sleep(Duration::from_millis(rng.below(150))),
            1 => {
                let marker = if commit { "COMMITTING" } else { "STAGED" };
                assert!(wait_for(marker, &mut seen), "{seen:?}");
                std::thread::sleep(Duration::from_micros(rng.below(30_000)));
            }
            _ => {
                let marker = if commit { "COMMITTED" } else { "STAGED" };
                assert!(wait_for(marker, &mut seen), "{seen:?}");
            }
        }
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        while let Ok(l) = rx.try_recv() {
            seen.push(l);
        }
        let committed = seen.iter().any(|l| l.contains("COMMITTED"));
        let may_commit = seen.iter().any(|l| l.contains("COMMITTING"));
        let new = sha256(&content(version, LEN));
        rt.block_on(async {
            let portal = open(&dir).await;
            let r = portal.audit_verify(&Actor::system()).await.unwrap();
            assert!(r.problem.is_none(), "round {round}: audit: {:?}", r.problem);
            let tree = portal.tree(Actor::system());
            let e = tree.stat(DOC).await.unwrap();
            // Read every byte back: the content is one whole version, never a mix or a prefix.
            let mut rd = tree.open_read(DOC).await.unwrap();
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut off = 0u64;
            loop {
                let b = rd.read_at(off, 1 << 20).await.unwrap();
                if b.is_empty() {
                    break;
                }
                ctx.update(&b);
                off += b.len() as u64;
            }
            drop(rd);
            let got: [u8; 32] = ctx.finish().as_ref().try_into().unwrap();
            assert_eq!(
                Some(got),
                e.sha256,
                "round {round}: content differs from its record"
            );
            assert_eq!(off, LEN as u64, "round {round}: partial document");
            if committed {
                assert_eq!(got, new, "round {round}: a committed upload was lost");
            } else if got != current.1 {
                assert!(
                    may_commit && got == new,
                    "round {round}: the document is neither version {} nor {version}",
                    current.0
                );
            }
            if got == new {
                current = (version, new);
            }
            // No orphans after open: one blob file per recorded version, nothing staged.
            let versions = portal
                .versions(&Actor::system(), e.matter.unwrap(), e.document.unwrap())
                .await
                .unwrap();
            let blobs = files_in(&matter_dir);
            assert_eq!(
                blobs.len(),
                versions.len(),
                "round {round}: {} blob files for {} versions: {blobs:?}",
                blobs.len(),
                versions.len()
            );
            let staged = files_in(&dir.join("blobs").join("tmp"));
            assert!(
                staged.is_empty(),
                "round {round}: staged leftovers {staged:?}"
            );
        });
        outcomes.push(format!(
            "{}{}",
            ["mid", "edge", "after"][point as usize],
            if current.0 == version { "+new" } else { "" }
        ));
    }
    println!("kills: {kills}, outcomes: {outcomes:?}");
    // The kills must have exercised both outcomes, or the test proved less than it claims.
    if kills >= 3 {
        assert!(
            outcomes.iter().any(|o| o.ends_with("+new"))
                && outcomes.iter().any(|o| !o.ends_with("+new")),
            "every kill had the same outcome: {outcomes:?}"
        );
    }
}

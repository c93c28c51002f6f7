//! Disk full and a read-only data dir, on the real server (issue 8, fault tests).
//!
//! The data dir lives on a small tmpfs (`mount -t tmpfs -o size=40m`, needs root; the test fails
//! under `CI=true` when it can't mount, else it is skipped). With the server running:
//! 1. the disk is filled by a file beside the data dir: uploads over WebDAV and SFTP fail with a
//!    clear error (HTTP 507 Insufficient Storage; SFTP failure saying there is no space), the server
//!    stays up, and a read of a document already there is either served intact or refused with
//!    507 (its audit entry could not be made durable);
//! 2. space returns (the filler is deleted): uploads succeed again without a restart. When a
//!    database commit failed while the disk was full, redb refuses every later transaction until
//!    the file is reopened: the store's writer answers with a storage error meanwhile, reopens the
//!    database (retrying with backoff) and carries on. `disk_full_recovers_without_a_restart`
//!    asserts this recovery; the other test would fall back to a restart and say so;
//! 3. the staging area becomes read-only (an empty read-only tmpfs mounted over `blobs/tmp`: a
//!    file system can't be remounted read-only while the server holds its files open for writing):
//!    uploads fail with a clear error (HTTP 507; SFTP failure saying "read-only"), the server
//!    stays up;
//! 4. it is unmounted: uploads succeed again;
//! 5. the server stops cleanly, `sdx audit-verify` passes, every acknowledged document reads back
//!    with its hash, nothing failed is visible and no orphaned blob or staging file is left.
//!
//! Finally, with the server stopped, the whole file system is remounted read-only: `sdx serve`
//! refuses to start with a message naming the problem.

mod fault_util;

use fault_util::{Server, content, curl, have_clients, sftp_py, sha256, url_path};
use sdx_portal::crypto::KeyFile;
use sdx_portal::model::Actor;
use sdx_portal::{Error, PortalBuilder, demo};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FOLDER: &str = "/2026-001 Smith v Jones/Client Documents/Tax Returns";

/// A tmpfs mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "can't mount a tmpfs at {} (needs root; CI=true)",
                    at.display()
                );
            }
            eprintln!("SKIPPED: can't mount a tmpfs (needs root)");
            return None;
        }
        Some(Mount(at.to_path_buf()))
    }

    /// An empty read-only tmpfs over `at`.
    fn tmpfs_ro(at: &Path) -> Mount {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "can't mount a read-only tmpfs over {}",
            at.display()
        );
        Mount(at.to_path_buf())
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opt} failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn put_webdav(server: &Server, name: &str, file: &Path) -> (u16, String) {
    let url = format!(
        "http://{}/dav{}",
        server.webdav,
        url_path(&format!("{FOLDER}/{name}"))
    );
    let f = file.to_str().unwrap();
    let (code, body) = curl(&["-H", "Expect:", "-T", f, &url]);
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn get_sha(server: &Server, name: &str) -> (u16, [u8; 32]) {
    let url = format!(
        "http://{}/dav{}",
        server.webdav,
        url_path(&format!("{FOLDER}/{name}"))
    );
    let (code, body) = curl(&[&url]);
    (code, sha256(&body))
}

fn put_sftp(server: &Server, name: &str, size: usize) -> String {
    let out = sftp_py(&[
        "put",
        &server.sftp.port().to_string(),
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD,
        &format!("{FOLDER}/{name}"),
        &size.to_string(),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What paramiko's `put` helper writes: bytes 0..=255 repeated.
fn sftp_content(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 256) as u8).collect()
}

/// Fills the file system holding `at` with one file; returns it.
fn fill(at: &Path) -> PathBuf {
    let p = at.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0x5au8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

fn free_bytes(at: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(at)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Retries `f` for up to 10 s until it returns true.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn disk_full_and_read_only_data_dir_give_clear_errors_and_recover() {
    scenario(false);
}

/// The full requirement: recovery from a full disk without a restart. Once a redb commit
/// has failed with an I/O error, redb refuses every later transaction ("Previous I/O error
/// occurred. Please close and re-open the database."): the store reopens the file by itself.
#[test]
fn disk_full_recovers_without_a_restart() {
    scenario(true);
}

fn scenario(live_recovery_required: bool) {
    if !have_clients() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mnt) = Mount::tmpfs(&tmp.path().join("mnt"), "40m") else {
        return;
    };
    let data = mnt.0.join("data");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut server = Server::start(&data, true);
    // name -> sha of what must be there at the end
    let mut expect: Vec<(String, [u8; 32])> = Vec::new();
    let mut absent: Vec<String> = Vec::new();

    let keep = content(1, 300_000);
    let keep_file = work.join("keep");
    std::fs::write(&keep_file, &keep).unwrap();
    let (code, body) = put_webdav(&server, "keep.bin", &keep_file);
    assert!(code == 201 || code == 204, "baseline PUT: {code} {body}");
    expect.push(("keep.bin".into(), sha256(&keep)));
    assert_eq!(put_sftp(&server, "keep-sftp.bin", 100_000), "OK");
    expect.push(("keep-sftp.bin".into(), sha256(&sftp_content(100_000))));

    // 1. Disk full.
    let big = content(2, 4 << 20);
    let big_file = work.join("big");
    std::fs::write(&big_file, &big).unwrap();
    let filler = fill(&mnt.0);
    println!("free after filling: {} bytes", free_bytes(&mnt.0));
    let (code, body) = put_webdav(&server, "full.bin", &big_file);
    println!("WebDAV PUT on a full disk: {code} {body:?}");
    assert_eq!(code, 507, "WebDAV PUT on a full disk: {code} {body}");
    absent.push("full.bin".into());
    let r = put_sftp(&server, "full-sftp.bin", 4 << 20);
    println!("SFTP put on a full disk: {r}");
    assert!(r.starts_with("ERR"), "SFTP put on a full disk: {r}");
    assert!(
        r.to_lowercase().contains("space"),
        "the SFTP error does not say what is wrong: {r}"
    );
    absent.push("full-sftp.bin".into());
    // A read needs its audit entry made durable: on a full disk it is served if the database
    // still has room inside its file, else refused as clearly as an upload (507).
    let (code, sha) = get_sha(&server, "keep.bin");
    println!("WebDAV GET on a full disk: {code}");
    assert!(
        (code == 200 && sha == sha256(&keep)) || code == 507,
        "reading on a full disk: {code}"
    );

    // 2. Space returns.
    std::fs::remove_file(&filler).unwrap();
    let mut last = (0, String::new());
    let live = eventually(|| {
        last = put_webdav(&server, "after-full.bin", &big_file);
        last.0 == 201 || last.0 == 204
    });
    if !live {
        assert!(
            !live_recovery_required,
            "WebDAV did not recover after space returned: {last:?}"
        );
        // Known defect (see `disk_full_recovers_without_a_restart`): a restart recovers.
        println!(
            "FINDING: no recovery without a restart after the disk was full ({last:?}); restarting"
        );
        assert!(
            server.stop(),
            "the server did not stop cleanly after the disk was full"
        );
        server = Server::start(&data, false);
        last = put_webdav(&server, "after-full.bin", &big_file);
        assert!(
            last.0 == 201 || last.0 == 204,
            "WebDAV did not recover after a restart either: {last:?}"
        );
    }
    expect.push(("after-full.bin".into(), sha256(&big)));
    let mut r = String::new();
    assert!(
        eventually(|| {
            r = put_sftp(&server, "after-full-sftp.bin", 1 << 20);
            r == "OK"
        }),
        "SFTP did not recover after space returned: {r}"
    );
    expect.push(("after-full-sftp.bin".into(), sha256(&sftp_content(1 << 20))));

    // 3. Read-only. A file system can't be remounted read-only while the server holds files open
    // for writing, so the staging area (where every upload starts) gets an empty read-only tmpfs
    // mounted over it: new uploads meet EROFS, as on a file system the kernel made read-only.
    let staging = data.join("blobs").join("tmp");
    let ro = Mount::tmpfs_ro(&staging);
    let (code, body) = put_webdav(&server, "ro.bin", &keep_file);
    println!("WebDAV PUT on a read-only data dir: {code} {body:?}");
    assert_eq!(
        code, 507,
        "WebDAV PUT on a read-only data dir: {code} {body}"
    );
    absent.push("ro.bin".into());
    // (over 16 KiB: smaller documents are kept in the database, not in the staging area)
    let r = put_sftp(&server, "ro-sftp.bin", 100_000);
    println!("SFTP put on a read-only data dir: {r}");
    assert!(
        r.starts_with("ERR"),
        "SFTP put on a read-only data dir: {r}"
    );
    assert!(
        r.to_lowercase().contains("read-only"),
        "the SFTP error does not say what is wrong: {r}"
    );
    absent.push("ro-sftp.bin".into());

    // 4. Read-write again.
    drop(ro);
    let mut last = (0, String::new());
    assert!(
        eventually(|| {
            last = put_webdav(&server, "after-ro.bin", &keep_file);
            last.0 == 201 || last.0 == 204
        }),
        "WebDAV did not recover after the remount: {last:?}"
    );
    expect.push(("after-ro.bin".into(), sha256(&keep)));
    assert_eq!(put_sftp(&server, "after-ro-sftp.bin", 5000), "OK");
    expect.push(("after-ro-sftp.bin".into(), sha256(&sftp_content(5000))));
    for (name, sha) in &expect {
        assert_eq!(get_sha(&server, name), (200, *sha), "{name} over WebDAV");
    }

    // 5. Clean stop, then check the data dir.
    assert!(server.stop(), "the server did not stop cleanly");
    let out = Command::new(env!("CARGO_BIN_EXE_sdx"))
        .args(["audit-verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit-verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let portal = PortalBuilder::new(&data)
            .key_provider(Arc::new(KeyFile::new(data.join("master.key"))))
            .open()
            .await
            .unwrap();
        let sys = Actor::system();
        let tree = portal.tree(sys.clone());
        let mut versions = 0;
        let mut matter = None;
        for (name, sha) in &expect {
            let e = tree.stat(&format!("{FOLDER}/{name}")).await.unwrap();
            assert_eq!(e.sha256.as_ref(), Some(sha), "{name}");
            versions += portal
                .versions(&sys, e.matter.unwrap(), e.document.unwrap())
                .await
                .unwrap()
                .len();
            matter = e.matter;
        }
        for name in &absent {
            match tree.stat(&format!("{FOLDER}/{name}")).await {
                Err(Error::NotFound(_)) => {}
                other => panic!("{name}: a failed upload is visible: {other:?}"),
            }
        }
        let m = matter.unwrap();
        let blobs = std::fs::read_dir(data.join("blobs").join(format!("{:016x}", m.0)))
            .unwrap()
            .count();
        // Documents of up to 16 KiB are kept in the database instead of a file.
        let rows = portal
            .store()
            .read(move |db| {
                use sdx_portal::store::Tx;
                Ok(db
                    .tx
                    .scan_raw(
                        sdx_portal::store::tables::BLOB_DATA,
                        &m.0.to_be_bytes(),
                        usize::MAX,
                    )?
                    .len())
            })
            .await
            .unwrap();
        assert_eq!(
            blobs + rows,
            versions,
            "orphaned blobs after the disk was full"
        );
        let staged = std::fs::read_dir(data.join("blobs").join("tmp"))
            .unwrap()
            .count();
        assert_eq!(staged, 0, "staging files left");
    });
    drop(rt);

    // A server started on a read-only data dir says so and exits.
    std::thread::sleep(Duration::from_millis(300));
    mnt.remount("ro");
    let out = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_sdx"))
        .args([
            "serve",
            "--insecure-http",
            "--webdav",
            "127.0.0.1:0",
            "--sftp",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("sdx serve on a read-only data dir: {:?} {err}", out.status);
    assert!(
        !out.status.success(),
        "sdx serve ran on a read-only data dir"
    );
    assert!(
        err.to_lowercase().contains("read-only"),
        "unclear start-up error: {err}"
    );
    mnt.remount("rw");
}

/// The store on its own, on a tmpfs with no room left: a commit fails with an error that says the
/// disk is full, redb then refuses every transaction, and once space returns the store has
/// reopened the database by itself — the committed data is there, ids continue where the last
/// commit left them, and the keyring (which shares the database handle) keeps working.
#[test]
fn a_failed_commit_on_a_full_disk_reopens_the_database_when_space_returns() {
    use sdx_portal::crypto::{Keyring, MasterKey, Sealer};
    use sdx_portal::model::MatterId;
    use sdx_portal::store::{DbCell, Store, StoreOptions, Tx, tables};
    let tmp = tempfile::tempdir().unwrap();
    let Some(mnt) = Mount::tmpfs(&tmp.path().join("mnt"), "8m") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cell = DbCell::open_file(&mnt.0.join("portal.redb"), 1 << 20).unwrap();
        let master = MasterKey::random().unwrap();
        let keys = Keyring::open(cell.clone(), &master).unwrap();
        {
            let txn = cell.begin_write().unwrap();
            keys.create_matter_key(&txn, MatterId(7)).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::start_with(
            cell.clone(),
            Arc::new(sdx_portal::crypto::PlainSealer),
            Arc::new(|_, _| {}),
            StoreOptions::default(),
        )
        .unwrap();
        let before = store
            .write(|ctx| {
                ctx.put_raw(tables::META, b"before", b"kept")?;
                Ok(ctx.new_id())
            })
            .await
            .unwrap();

        let filler = fill(&mnt.0);
        let mut failure = None;
        for i in 0..200u32 {
            let r = store
                .write(move |ctx| {
                    ctx.put_raw(
                        tables::META,
                        format!("big{i}").as_bytes(),
                        &vec![7u8; 256 << 10],
                    )
                })
                .await;
            if let Err(e) = r {
                failure = Some(e.to_string());
                break;
            }
        }
        let failure = failure.expect("no commit failed on a full disk");
        println!("commit on a full disk: {failure}");
        assert!(
            failure.contains("the disk is full") && failure.contains("(os error 28)"),
            "unclear error: {failure}"
        );

        std::fs::remove_file(&filler).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let after = loop {
            match store.write(|ctx| Ok(ctx.new_id())).await {
                Ok(id) => break id,
                Err(e) if Instant::now() < deadline => {
                    println!("while recovering: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the store did not recover after space returned: {e}"),
            }
        };
        assert!(cell.generation() >= 1, "the database was not reopened");
        assert!(after > before, "ids went back: {after} after {before}");
        let kept = store
            .read(|db| db.tx.get_raw(tables::META, b"before"))
            .await
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&b"kept"[..]));
        assert!(keys.has_matter_key(MatterId(7)).unwrap());
        drop(store);
    });
}

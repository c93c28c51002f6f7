//! The encrypted blob store and key hierarchy, end to end: round trips, every tamper case, wrong
//! master key, rotation, purge (crypto-shredding), crash leftovers, random-access staging against
//! a model (proptest), range reads (proptest), a canary scan of the data dir, and flat memory.

use proptest::prelude::*;
use sdx_portal::Error;
use sdx_portal::blob::encrypted::{BlobOptions, EncryptedBlobStore, verify_content};
use sdx_portal::blob::{BlobId, BlobRef, BlobStore, mem::MemBlobStore};
use sdx_portal::crypto::{Cipher, EnvKey, KeyFile, KeyProvider, Keyring, MasterKey, Scope, Sealer};
use sdx_portal::model::MatterId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const M1: MatterId = MatterId(1);
const M2: MatterId = MatterId(2);

struct Env {
    dir: tempfile::TempDir,
    db: Arc<redb::Database>,
    keys: Keyring,
    store: EncryptedBlobStore,
}

impl Env {
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
    fn blob_file(&self, m: MatterId, r: &BlobRef) -> PathBuf {
        self.store
            .dir()
            .join(format!("{:016x}", m.0))
            .join(r.id.to_hex())
    }
}

fn env_with(master: &MasterKey, opts: BlobOptions) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("portal.redb")).unwrap());
    let keys = Keyring::open(db.clone(), master).unwrap();
    let txn = db.begin_write().unwrap();
    keys.create_matter_key(&txn, M1).unwrap();
    keys.create_matter_key(&txn, M2).unwrap();
    txn.commit().unwrap();
    let store =
        EncryptedBlobStore::open_with(dir.path().join("blobs"), keys.clone(), opts).unwrap();
    Env {
        dir,
        db,
        keys,
        store,
    }
}

/// A store that writes every blob to a file: these tests are about the files (sizes, tampering,
/// clean-up). Small blobs kept in the database are tested beside the staging code and in
/// `tests/encrypted_portal.rs`.
fn env(cipher: Cipher) -> Env {
    env_with(
        &MasterKey::random().unwrap(),
        BlobOptions {
            cipher,
            inline_max: 0,
            ..BlobOptions::default()
        },
    )
}

/// Deterministic, non-repeating-looking test data.
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn put(store: &EncryptedBlobStore, m: MatterId, bytes: &[u8], piece: usize) -> BlobRef {
    let mut up = store.stage(m, None).await.unwrap();
    for p in bytes.chunks(piece.max(1)) {
        up.append(p).await.unwrap();
    }
    assert_eq!(up.len(), bytes.len() as u64);
    up.commit().await.unwrap()
}

async fn read_all(
    store: &EncryptedBlobStore,
    m: MatterId,
    r: &BlobRef,
    step: usize,
) -> sdx_portal::Result<Vec<u8>> {
    let mut rd = store.open(m, r).await?;
    let mut out = Vec::new();
    loop {
        let b = rd.read_at(out.len() as u64, step).await?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

fn sha(b: &[u8]) -> [u8; 32] {
    let mut o = [0u8; 32];
    o.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_sizes_both_ciphers() {
    const C: usize = 1 << 16;
    for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        let e = env(cipher);
        let sizes = [
            0,
            1,
            C - 1,
            C,
            C + 1,
            2 * C - 1,
            2 * C,
            2 * C + 1,
            (1 << 20) - 1,
            (1 << 20) + C + 1,
            3 * (1 << 20) + 12345,
        ];
        for (i, &n) in sizes.iter().enumerate() {
            let d = data(n, i as u8);
            for piece in [1000, 1 << 20, n.max(1)] {
                let r = put(&e.store, M1, &d, piece).await;
                assert_eq!(r.len, n as u64);
                assert_eq!(r.sha256, sha(&d), "size {n}");
                let chunks = if n == 0 { 1 } else { n.div_ceil(C) };
                assert_eq!(
                    std::fs::metadata(e.blob_file(M1, &r)).unwrap().len(),
                    (n + 16 * chunks) as u64,
                    "size {n}"
                );
                for step in [32 << 10, 1 << 20] {
                    assert_eq!(
                        read_all(&e.store, M1, &r, step).await.unwrap(),
                        d,
                        "{cipher:?} size {n} piece {piece}"
                    );
                }
                e.store.verify(M1, &r).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_do_not_block_each_other() {
    let e = env(Cipher::Aes256Gcm);
    let a = data(300_000, 1);
    let b = data(200_000, 2);
    let mut ua = e.store.stage(M1, None).await.unwrap();
    let mut ub = e.store.stage(M2, None).await.unwrap();
    for (pa, pb) in a.chunks(7000).zip(b.chunks(5000)) {
        ua.append(pa).await.unwrap();
        ub.append(pb).await.unwrap();
    }
    let ra = {
        for p in a.chunks(7000).skip(b.len().div_ceil(5000)) {
            ua.append(p).await.unwrap();
        }
        ua.commit().await.unwrap()
    };
    let rb = ub.commit().await.unwrap();
    assert_eq!(read_all(&e.store, M1, &ra, 1 << 20).await.unwrap(), a);
    assert_eq!(read_all(&e.store, M2, &rb, 1 << 20).await.unwrap(), b);
}

fn assert_integrity<T: std::fmt::Debug>(r: sdx_portal::Result<T>, what: &str) {
    match r {
        Err(Error::Integrity(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected an integrity error, got {other:?}"),
    }
}

/// Opens and reads everything; must fail with an integrity error (and never return wrong bytes).
async fn read_fails(e: &Env, m: MatterId, r: &BlobRef, what: &str) {
    let res = async {
        let mut rd = e.store.open(m, r).await?;
        let mut off = 0u64;
        loop {
            let b = rd.read_at(off, 1 << 20).await?;
            if b.is_empty() {
                return Ok(off);
            }
            off += b.len() as u64;
        }
    }
    .await;
    assert_integrity(res, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_case_is_detected() {
    const C: u64 = 1 << 16;
    const S: u64 = C + 16;
    let e = env(Cipher::Aes256Gcm);
    let da = data(3 * C as usize + 500, 1);
    let db_ = data(3 * C as usize + 500, 2);
    let ra = put(&e.store, M1, &da, 1 << 20).await;
    let rb = put(&e.store, M1, &db_, 1 << 20).await;
    let pa = e.blob_file(M1, &ra);
    let pb = e.blob_file(M1, &rb);
    let orig_a = std::fs::read(&pa).unwrap();
    let orig_b = std::fs::read(&pb).unwrap();
    let restore = || std::fs::write(&pa, &orig_a).unwrap();

    // Sanity: intact blobs read back.
    assert_eq!(read_all(&e.store, M1, &ra, 1 << 20).await.unwrap(), da);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut f = orig_a.clone();
    f[(S + 100) as usize] ^= 1;
    cases.push(("bit flip in chunk 1", f));
    let mut f = orig_a.clone();
    f[(2 * S - 1) as usize] ^= 0x80;
    cases.push(("bit flip in a tag", f));
    let mut f = orig_a.clone();
    let last = f.len() - 1;
    f[last] ^= 1;
    cases.push(("bit flip in the final chunk", f));
    cases.push(("truncated by one byte", orig_a[..orig_a.len() - 1].to_vec()));
    cases.push(("final chunk dropped", orig_a[..(3 * S) as usize].to_vec()));
    cases.push(("truncated to nothing", Vec::new()));
    let mut f = orig_a.clone();
    f.extend_from_slice(&[0u8; 16]);
    cases.push(("extended by 16 bytes", f));
    let mut f = orig_a.clone();
    f.extend_from_slice(&orig_a[..S as usize]);
    cases.push(("extended by a copy of chunk 0", f));
    let mut f = orig_a.clone();
    f[..S as usize].copy_from_slice(&orig_a[S as usize..2 * S as usize]);
    f[S as usize..2 * S as usize].copy_from_slice(&orig_a[..S as usize]);
    cases.push(("chunks 0 and 1 swapped", f));
    let mut f = orig_a.clone();
    f[S as usize..2 * S as usize].copy_from_slice(&orig_b[S as usize..2 * S as usize]);
    cases.push(("chunk 1 from another blob", f));
    cases.push(("whole file from another blob", orig_b.clone()));

    for (what, bytes) in cases {
        std::fs::write(&pa, &bytes).unwrap();
        read_fails(&e, M1, &ra, what).await;
        restore();
    }

    // A range read touching only intact chunks still works; one touching the damaged chunk fails.
    let mut f = orig_a.clone();
    f[(2 * S + 5) as usize] ^= 1;
    std::fs::write(&pa, &f).unwrap();
    let mut rd = e.store.open(M1, &ra).await.unwrap();
    assert_eq!(&rd.read_at(10, 1000).await.unwrap()[..], &da[10..1010]);
    assert_integrity(rd.read_at(2 * C + 10, 10).await, "range over damaged chunk");
    // Sequential reads (which read ahead) return the intact chunks, then fail on the damaged one.
    let mut rd = e.store.open(M1, &ra).await.unwrap();
    let mut off = 0u64;
    let err = loop {
        match rd.read_at(off, 32 << 10).await {
            Ok(b) => {
                assert!(!b.is_empty());
                assert_eq!(&b[..], &da[off as usize..off as usize + b.len()]);
                off += b.len() as u64;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(off, 2 * C);
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    restore();

    // Edited references.
    let mut r = ra.clone();
    r.len -= 1;
    read_fails(&e, M1, &r, "length edited").await;
    let mut r = ra.clone();
    r.sha256[0] ^= 1;
    read_fails(&e, M1, &r, "hash edited").await;
    let mut r = ra.clone();
    r.sealed_key[20] ^= 1;
    read_fails(&e, M1, &r, "wrapped key edited").await;
    let mut r = ra.clone();
    r.sealed_key.truncate(10);
    read_fails(&e, M1, &r, "wrapped key truncated").await;
    // The reference of blob A pointing at blob B's file (swap whole blobs between documents).
    let mut r = ra.clone();
    r.id = rb.id;
    read_fails(&e, M1, &r, "reference moved to another blob").await;
    // The reference moved to another matter (the file copied along).
    let m2dir = e.store.dir().join(format!("{:016x}", M2.0));
    std::fs::create_dir_all(&m2dir).unwrap();
    std::fs::copy(&pa, m2dir.join(ra.id.to_hex())).unwrap();
    read_fails(&e, M2, &ra, "blob moved to another matter").await;
    // Missing file.
    std::fs::remove_file(&pa).unwrap();
    read_fails(&e, M1, &ra, "file missing").await;
    std::fs::write(&pa, &orig_a).unwrap();
    assert_eq!(read_all(&e.store, M1, &ra, 1 << 20).await.unwrap(), da);

    // On-demand hash check: any store, wrong expected hash.
    let mem = MemBlobStore::default();
    let mut up = mem.stage(M1, None).await.unwrap();
    up.append(b"abc").await.unwrap();
    let mut mr = up.commit().await.unwrap();
    let mut rd = mem.open(M1, &mr).await.unwrap();
    verify_content(rd.as_mut(), &mr).await.unwrap();
    mr.sha256[3] ^= 1;
    let mut rd = mem.open(M1, &mr).await.unwrap();
    assert_integrity(verify_content(rd.as_mut(), &mr).await, "hash mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_master_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let kf = KeyFile::create(dir.path().join("master.key")).unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("p.redb")).unwrap());
    drop(Keyring::open(db.clone(), &kf).unwrap());
    let e = Keyring::open(db.clone(), &MasterKey::random().unwrap()).unwrap_err();
    assert!(matches!(e, Error::Key(_)), "{e}");
    assert!(e.to_string().contains("wrong master key"), "{e}");
    let e = Keyring::open(db.clone(), &EnvKey::new("SDX_TEST_UNSET_MASTER_KEY_VAR")).unwrap_err();
    assert!(
        matches!(e, Error::Key(_)) && e.to_string().contains("not set"),
        "{e}"
    );
    let e = Keyring::open(db, &KeyFile::new(dir.path().join("absent.key"))).unwrap_err();
    assert!(matches!(e, Error::Key(_)), "{e}");
}

/// The environment-variable provider, in a child process (edition 2024 forbids `set_var` without
/// `unsafe`, which the crate forbids).
#[test]
fn env_key_provider_in_child_process() {
    const VAR: &str = "SDX_BLOB_TEST_MASTER_KEY";
    if std::env::var_os("SDX_BLOB_TEST_CHILD").is_some() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("p.redb")).unwrap());
        let k = Keyring::open(db.clone(), &EnvKey::new(VAR)).unwrap();
        let s = k.seal(Scope::Global, b"a", b"b").unwrap();
        drop(k);
        let same = MasterKey::parse(&std::env::var(VAR).unwrap(), "env").unwrap();
        let k = Keyring::open(db, &same).unwrap();
        assert_eq!(k.open(Scope::Global, b"a", &s).unwrap(), b"b");
        return;
    }
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([0x5au8; 32]);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "env_key_provider_in_child_process",
            "--test-threads=1",
        ])
        .env("SDX_BLOB_TEST_CHILD", "1")
        .env(VAR, key)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_everything_readable() {
    let dir = tempfile::tempdir().unwrap();
    let old = KeyFile::create(dir.path().join("old.key")).unwrap();
    let new = KeyFile::create(dir.path().join("new.key")).unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let db = Arc::new(redb::Database::create(data_dir.join("p.redb")).unwrap());
    let keys = Keyring::open(db.clone(), &old).unwrap();
    let txn = db.begin_write().unwrap();
    keys.create_matter_key(&txn, M1).unwrap();
    keys.create_matter_key(&txn, M2).unwrap();
    txn.commit().unwrap();
    let store = EncryptedBlobStore::open(
        data_dir.join("blobs"),
        keys.clone(),
        Cipher::ChaCha20Poly1305,
    )
    .unwrap();
    let d1 = data(200_000, 1);
    let d2 = data(70_000, 2);
    let r1 = put(&store, M1, &d1, 4096).await;
    let r2 = put(&store, M2, &d2, 4096).await;
    let s1 = keys
        .seal(Scope::Matter(M1), b"doc/1", b"Contract.pdf")
        .unwrap();
    let sg = keys
        .seal(Scope::Global, b"contact/1", b"jane@example.com")
        .unwrap();
    let idx = keys.index_key(Scope::Matter(M1), b"contract.pdf");
    let mac = keys.chain_mac(b"audit 1");
    let blob_bytes_before =
        std::fs::read(store.dir().join(format!("{:016x}", 1)).join(r1.id.to_hex())).unwrap();

    keys.rotate(&new).unwrap();
    assert_eq!(keys.master_source(), new.describe());
    // Still readable through the running keyring (cached and uncached matter keys)...
    assert_eq!(read_all(&store, M1, &r1, 1 << 20).await.unwrap(), d1);
    // ...and blob files were not rewritten.
    assert_eq!(
        std::fs::read(store.dir().join(format!("{:016x}", 1)).join(r1.id.to_hex())).unwrap(),
        blob_bytes_before
    );
    drop(store);
    drop(keys);

    assert!(matches!(
        Keyring::open(db.clone(), &old),
        Err(Error::Key(_))
    ));
    let keys = Keyring::open(db.clone(), &new).unwrap();
    let store =
        EncryptedBlobStore::open(data_dir.join("blobs"), keys.clone(), Cipher::Aes256Gcm).unwrap();
    assert_eq!(read_all(&store, M1, &r1, 1 << 20).await.unwrap(), d1);
    assert_eq!(read_all(&store, M2, &r2, 1 << 20).await.unwrap(), d2);
    assert_eq!(
        keys.open(Scope::Matter(M1), b"doc/1", &s1).unwrap(),
        b"Contract.pdf"
    );
    assert_eq!(
        keys.open(Scope::Global, b"contact/1", &sg).unwrap(),
        b"jane@example.com"
    );
    assert_eq!(keys.index_key(Scope::Matter(M1), b"contract.pdf"), idx);
    assert_eq!(keys.chain_mac(b"audit 1"), mac);
    // New blobs after rotation (other cipher) sit next to old ones.
    let r3 = put(&store, M1, &d2, 100_000).await;
    assert_eq!(read_all(&store, M1, &r3, 1 << 20).await.unwrap(), d2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_shreds_the_matter() {
    let e = env(Cipher::Aes256Gcm);
    let d = data(150_000, 3);
    let r1 = put(&e.store, M1, &d, 9999).await;
    let r2 = put(&e.store, M2, &d, 9999).await;
    let saved = std::fs::read(e.blob_file(M1, &r1)).unwrap();
    let rec = e.keys.seal(Scope::Matter(M1), b"x", b"name").unwrap();

    let txn = e.db.begin_write().unwrap();
    e.keys.destroy_matter_key(&txn, M1).unwrap();
    txn.commit().unwrap();
    e.store.purge_matter(M1).await.unwrap();
    assert!(!e.blob_file(M1, &r1).exists());

    // Even with the file restored from a copy, nothing opens: the key is gone.
    std::fs::create_dir_all(e.blob_file(M1, &r1).parent().unwrap()).unwrap();
    std::fs::write(e.blob_file(M1, &r1), &saved).unwrap();
    match e.store.open(M1, &r1).await {
        Err(Error::Key(m)) => assert!(m.contains("purged"), "{m}"),
        Err(other) => panic!("expected a key error, got {other}"),
        Ok(_) => panic!("a purged matter's blob opened"),
    }
    assert!(e.keys.open(Scope::Matter(M1), b"x", &rec).is_err());
    assert!(e.store.stage(M1, None).await.is_err());
    // After reopening too.
    let keys = Keyring::open(e.db.clone(), &MasterKey::random().unwrap());
    assert!(keys.is_err(), "a random key must not open the db");
    // The other matter is untouched.
    assert_eq!(read_all(&e.store, M2, &r2, 1 << 20).await.unwrap(), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_uploads_leave_nothing() {
    let e = env(Cipher::Aes256Gcm);
    let tmp = e.store.dir().join("tmp");
    let count = |p: &Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let d = data(3 << 20, 4);

    // Abort.
    let mut up = e.store.stage(M1, None).await.unwrap();
    up.append(&d).await.unwrap();
    assert!(count(&tmp) > 0);
    up.abort().await.unwrap();
    assert_eq!(count(&tmp), 0);

    // Random mode abort.
    let mut up = e.store.stage(M1, None).await.unwrap();
    up.append(&d).await.unwrap();
    up.write_at(10, b"xx").await.unwrap();
    up.abort().await.unwrap();
    assert_eq!(count(&tmp), 0);

    // Dropped (client went away): cleaned up in the background.
    let mut up = e.store.stage(M1, None).await.unwrap();
    up.append(&d).await.unwrap();
    drop(up);
    for _ in 0..100 {
        if count(&tmp) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(count(&tmp), 0);

    // Crash leftovers: a staged file (process died) and a committed blob never recorded.
    let live = put(&e.store, M1, &d[..1000], 1000).await;
    let orphan = put(&e.store, M2, &d[..2000], 1000).await;
    let mut up = e.store.stage(M1, None).await.unwrap();
    up.append(&d).await.unwrap();
    std::mem::forget(up); // like SIGKILL: no drop, no cleanup
    assert!(count(&tmp) > 0);
    let store2 =
        EncryptedBlobStore::open(e.store.dir(), e.keys.clone(), Cipher::Aes256Gcm).unwrap();
    let removed = store2.retain(&HashSet::from([live.id])).await.unwrap();
    assert_eq!(removed, 2);
    assert_eq!(count(&tmp), 0);
    assert!(!e.blob_file(M2, &orphan).exists());
    assert_eq!(
        read_all(&store2, M1, &live, 4096).await.unwrap(),
        &d[..1000]
    );
    // Removing is idempotent.
    store2.remove(M1, &live).await.unwrap();
    store2.remove(M1, &live).await.unwrap();
    assert!(!e.blob_file(M1, &live).exists());
    assert_eq!(store2.retain(&HashSet::<BlobId>::new()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_edit_of_a_committed_blob() {
    let e = env(Cipher::Aes256Gcm);
    let mut d = data(500_000, 5);
    let base = put(&e.store, M1, &d, 65536).await;
    let mut up = e.store.stage(M1, Some(&base)).await.unwrap();
    assert_eq!(up.len(), d.len() as u64);
    // sshfs-style: read, patch in the middle, then WinSCP-style resume at the end.
    assert_eq!(
        &up.read_at(70_000, 100).await.unwrap()[..],
        &d[70_000..70_100]
    );
    up.write_at(70_000, b"PATCHED").await.unwrap();
    d[70_000..70_007].copy_from_slice(b"PATCHED");
    let tail = data(100_000, 6);
    up.write_at(d.len() as u64, &tail).await.unwrap();
    d.extend_from_slice(&tail);
    assert_eq!(
        &up.read_at(69_999, 9).await.unwrap()[..],
        &d[69_999..70_008]
    );
    let r = up.commit().await.unwrap();
    assert_ne!(r.id, base.id);
    assert_eq!(r.sha256, sha(&d));
    assert_eq!(read_all(&e.store, M1, &r, 1 << 20).await.unwrap(), d);
    // The base is unchanged.
    assert_eq!(
        read_all(&e.store, M1, &base, 1 << 20).await.unwrap(),
        data(500_000, 5)
    );
    assert_eq!(
        std::fs::read_dir(e.store.dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    // A base from another matter is refused.
    assert!(e.store.stage(M2, Some(&base)).await.is_err());
}

/// Every readable file under `dir`, recursively.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            all_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_scan_of_the_data_dir() {
    let canary = b"CANARY-q7Zx-client-Smith-v-Jones";
    let master = MasterKey::random().unwrap();
    let e = env_with(&master, BlobOptions::default());
    let mut doc = Vec::new();
    for i in 0..20_000u32 {
        doc.extend_from_slice(canary);
        doc.extend_from_slice(&i.to_le_bytes());
    }
    // Committed blobs (both modes), an upload in progress (append + scratch), sealed records and
    // index keys stored in redb.
    let r1 = put(&e.store, M1, &doc, 10_000).await;
    let mut up = e.store.stage(M1, Some(&r1)).await.unwrap();
    up.write_at(5, canary).await.unwrap();
    let _r2 = up.commit().await.unwrap();
    let mut pending_a = e.store.stage(M2, None).await.unwrap();
    pending_a.append(&doc).await.unwrap();
    let mut pending_r = e.store.stage(M2, None).await.unwrap();
    pending_r.append(&doc).await.unwrap();
    pending_r.write_at(3, canary).await.unwrap();
    {
        let t: redb::TableDefinition<&[u8], &[u8]> =
            redb::TableDefinition::new("canary_test_records");
        let txn = e.db.begin_write().unwrap();
        {
            let mut tab = txn.open_table(t).unwrap();
            for i in 0..50u8 {
                let sealed = e.keys.seal(Scope::Matter(M1), &[i], canary).unwrap();
                let k = e.keys.index_key(Scope::Matter(M1), canary);
                let mut key = k.to_vec();
                key.push(i);
                tab.insert(key.as_slice(), sealed.as_slice()).unwrap();
                let g = e.keys.seal(Scope::Global, &[i], canary).unwrap();
                tab.insert([b'g', i].as_slice(), g.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let mut files = Vec::new();
    all_files(e.data_dir(), &mut files);
    assert!(files.len() >= 5, "{files:?}");
    let master_hex = master.to_hex();
    let mut scanned = 0usize;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        scanned += bytes.len();
        assert!(!contains(&bytes, canary), "canary in {}", f.display());
        assert!(
            !contains(&bytes, &canary[..12]),
            "canary prefix in {}",
            f.display()
        );
        assert!(
            !contains(&bytes, master_hex.as_bytes()),
            "master key (hex) in {}",
            f.display()
        );
        let raw = hex::decode(master_hex.as_str()).unwrap();
        assert!(!contains(&bytes, &raw), "master key in {}", f.display());
    }
    assert!(scanned > 2 * doc.len(), "scanned only {scanned} bytes");
    drop(pending_a);
    drop(pending_r);
}

/// Peak memory while streaming 256 MiB in and out, in a child process (so other tests' memory does
/// not count). The bench measures the same for 1 GiB in release.
#[test]
fn memory_stays_flat_while_streaming() {
    if std::env::var_os("SDX_BLOB_MEM_CHILD").is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = env(Cipher::Aes256Gcm);
            let piece = data(256 << 10, 9);
            let before = vm_hwm_kib();
            let mut up = e.store.stage(M1, None).await.unwrap();
            for _ in 0..1024 {
                up.append(&piece).await.unwrap();
            }
            let r = up.commit().await.unwrap();
            let mut rd = e.store.open(M1, &r).await.unwrap();
            let mut off = 0;
            while off < r.len {
                let b = rd.read_at(off, 1 << 20).await.unwrap();
                assert_eq!(off % piece.len() as u64, 0);
                for c in b.chunks(piece.len()) {
                    assert_eq!(c, &piece[..c.len()]);
                }
                off += b.len() as u64;
            }
            let grew = vm_hwm_kib() - before;
            println!("MEMGROWTH_KIB={grew}");
            assert!(grew < 32 * 1024, "peak RSS grew by {grew} KiB");
        });
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memory_stays_flat_while_streaming",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SDX_BLOB_MEM_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("MEMGROWTH_KIB="),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vm_hwm_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---- property tests --------------------------------------------------------------------------

fn small_opts() -> BlobOptions {
    BlobOptions {
        chunk_log2: 12,
        flush_bytes: 10_000,
        ..BlobOptions::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn range_reads_equal_plaintext_slices(
        len in 0usize..40_000,
        reads in proptest::collection::vec((0u64..45_000, 0usize..12_000), 1..40),
        seed in any::<u8>(),
    ) {
        let rt = rt();
        rt.block_on(async {
            let e = env_with(&MasterKey::random().unwrap(), small_opts());
            let d = data(len, seed);
            let r = put(&e.store, M1, &d, 3000).await;
            let mut rd = e.store.open(M1, &r).await.unwrap();
            for (off, max) in reads {
                let got = rd.read_at(off, max).await.unwrap();
                let s = (off as usize).min(d.len());
                let end = s.saturating_add(max).min(d.len());
                prop_assert_eq!(&got[..], &d[s..end], "offset {} max {}", off, max);
            }
            Ok(())
        })?;
    }

    #[test]
    fn staged_random_access_matches_a_model(
        base_len in proptest::option::of(0usize..30_000),
        ops in proptest::collection::vec(op_strategy(), 1..40),
        seed in any::<u8>(),
    ) {
        let rt = rt();
        rt.block_on(async {
            let e = env_with(&MasterKey::random().unwrap(), small_opts());
            let (mut model, base) = match base_len {
                Some(n) => {
                    let d = data(n, seed);
                    let r = put(&e.store, M1, &d, 7000).await;
                    (d, Some(r))
                }
                None => (Vec::new(), None),
            };
            let mut up = e.store.stage(M1, base.as_ref()).await.unwrap();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Append(n) => {
                        let d = data(n, i as u8);
                        up.append(&d).await.unwrap();
                        model.extend_from_slice(&d);
                    }
                    Op::WriteAt(off, n) => {
                        let off = off % (model.len() as u64 + 5000);
                        let d = data(n, i as u8 ^ 0x55);
                        up.write_at(off, &d).await.unwrap();
                        let end = off as usize + n;
                        if model.len() < end { model.resize(end, 0); }
                        model[off as usize..end].copy_from_slice(&d);
                    }
                    Op::FarWrite(n) => {
                        let off = model.len() as u64 + (1 << 20) + 3;
                        let d = data(n, i as u8 ^ 0xaa);
                        up.write_at(off, &d).await.unwrap();
                        let end = off as usize + n;
                        if model.len() < end { model.resize(end, 0); }
                        model[off as usize..end].copy_from_slice(&d);
                    }
                    Op::SetLen(frac) => {
                        let new = (model.len() as u64 + 5000) * u64::from(frac) / 100;
                        up.set_len(new).await.unwrap();
                        model.resize(new as usize, 0);
                    }
                    Op::Read(off, max) => {
                        let got = up.read_at(off % (model.len() as u64 + 10), max).await.unwrap();
                        let s = ((off % (model.len() as u64 + 10)) as usize).min(model.len());
                        let end = s.saturating_add(max).min(model.len());
                        prop_assert_eq!(&got[..], &model[s..end]);
                    }
                }
                prop_assert_eq!(up.len(), model.len() as u64);
            }
            let r = up.commit().await.unwrap();
            prop_assert_eq!(r.len, model.len() as u64);
            prop_assert_eq!(r.sha256, sha(&model));
            prop_assert_eq!(read_all(&e.store, M1, &r, 50_000).await.unwrap(), model);
            prop_assert_eq!(std::fs::read_dir(e.store.dir().join("tmp")).unwrap().count(), 0);
            Ok(())
        })?;
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    WriteAt(u64, usize),
    FarWrite(usize),
    SetLen(u8),
    Read(u64, usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..9000).prop_map(Op::Append),
        3 => (any::<u64>(), 0usize..9000).prop_map(|(o, n)| Op::WriteAt(o, n)),
        1 => (0usize..5000).prop_map(Op::FarWrite),
        2 => (0u8..=110).prop_map(Op::SetLen),
        3 => (any::<u64>(), 0usize..20_000).prop_map(|(o, n)| Op::Read(o, n)),
    ]
}

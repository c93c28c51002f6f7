//! Fuzz the encrypted blob format against attacker-controlled files: a committed blob's file (and
//! its reference) are replaced or damaged, then read back through the public store API.
//!
//! The store (4 KiB chunks, so small inputs span several chunks) holds one committed blob of
//! 10,000 known bytes, made once per process in a temp dir (`/dev/shm` when there is one). Each
//! input decides how the file and the reference are changed; the file is restored afterwards.
//!
//! Input: byte 0 = mode.
//! - mode & 3 == 0: the file is replaced by the rest of the input;
//! - otherwise the rest is a list of 4-byte edits `op, a, b, v` on the real file: xor a byte,
//!   truncate, extend, copy/swap whole chunks, edit the reference (length, hash, wrapped key).
//!   The final 8 bytes are read offsets/sizes.
//!
//! Invariant (the store's promise): every read either fails with an integrity or input error or
//! returns exactly the original plaintext at that offset — damage is never served as wrong bytes.
//! The same holds for a staged copy started from the damaged blob and committed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdx_portal::Error;
use sdx_portal::blob::encrypted::{BlobOptions, EncryptedBlobStore};
use sdx_portal::blob::{BlobRef, BlobStore};
use sdx_portal::crypto::{Cipher, Keyring, MasterKey, Sealer};
use sdx_portal::model::MatterId;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

const M: MatterId = MatterId(1);
const CHUNK: usize = 4096;
const STRIDE: usize = CHUNK + 16;
const LEN: usize = 10_000;

struct State {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: EncryptedBlobStore,
    plain: Vec<u8>,
    blob: BlobRef,
    path: PathBuf,
    file: Vec<u8>,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let db = Arc::new(redb::Database::create(dir.path().join("portal.redb")).expect("redb"));
        let keys = Keyring::open(db.clone(), &MasterKey::random().expect("key")).expect("keyring");
        let txn = db.begin_write().expect("txn");
        keys.create_matter_key(&txn, M).expect("matter key");
        txn.commit().expect("commit");
        let store = EncryptedBlobStore::open_with(
            dir.path().join("blobs"),
            keys,
            BlobOptions {
                cipher: Cipher::Aes256Gcm,
                chunk_log2: 12,
                ..BlobOptions::default()
            },
        )
        .expect("store");
        let plain: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        let blob = rt.block_on(async {
            let mut up = store.stage(M, None).await.expect("stage");
            up.append(&plain).await.expect("append");
            up.commit().await.expect("commit")
        });
        let path = dir
            .path()
            .join("blobs")
            .join(format!("{:016x}", M.0))
            .join(blob.id.to_hex());
        let file = std::fs::read(&path).expect("committed file");
        assert_eq!(file.len(), LEN + LEN.div_ceil(CHUNK) * 16);
        State {
            rt,
            _dir: dir,
            store,
            plain,
            blob,
            path,
            file,
        }
    })
}

/// Applies the edits; returns the damaged file and reference.
fn damage(st: &State, edits: &[u8]) -> (Vec<u8>, BlobRef) {
    let mut f = st.file.clone();
    let mut r = st.blob.clone();
    for e in edits.chunks_exact(4) {
        let (op, a, b, v) = (e[0], usize::from(e[1]), usize::from(e[2]), e[3]);
        let pos = (a << 8 | b) % (f.len().max(1));
        match op % 10 {
            0 | 1 | 2 => {
                if let Some(x) = f.get_mut(pos) {
                    *x ^= v.max(1);
                }
            }
            3 => f.truncate(pos),
            4 => f.extend(std::iter::repeat_n(v, usize::from(e[2]) + 1)),
            5 => {
                // swap chunks a and b
                let (i, j) = (a % 4, b % 4);
                let (si, sj) = (i * STRIDE, j * STRIDE);
                if i != j && sj + STRIDE <= f.len() && si + STRIDE <= f.len() {
                    for k in 0..STRIDE {
                        f.swap(si + k, sj + k);
                    }
                }
            }
            6 => {
                // copy chunk a over chunk b (duplicate)
                let (i, j) = (a % 4, b % 4);
                let src = f
                    .get(i * STRIDE..(i * STRIDE + STRIDE).min(f.len()))
                    .map(<[u8]>::to_vec);
                if let Some(src) = src {
                    for (k, x) in src.into_iter().enumerate() {
                        if let Some(d) = f.get_mut(j * STRIDE + k) {
                            *d = x;
                        }
                    }
                }
            }
            7 => r.len = u64::from_be_bytes([v, e[1], e[2], 0, 0, 0, 0, 0]) >> (v % 64),
            8 => {
                let i = pos % r.sealed_key.len().max(1);
                if let Some(x) = r.sealed_key.get_mut(i) {
                    *x ^= v.max(1);
                } else {
                    r.sealed_key.push(v);
                }
            }
            _ => r.sha256[pos % 32] ^= v.max(1),
        }
    }
    (f, r)
}

fn acceptable(e: &Error) -> bool {
    matches!(
        e,
        Error::Integrity(_) | Error::Invalid(_) | Error::TooLarge(_) | Error::Key(_)
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let st = state();
    let (reads, edits) = if rest.len() >= 8 {
        rest.split_at(8)
    } else {
        (rest, &[][..])
    };
    let (file, r) = if mode & 3 == 0 {
        (rest.to_vec(), st.blob.clone())
    } else {
        damage(st, edits)
    };
    std::fs::write(&st.path, &file).expect("write the damaged file");
    let expect = |off: u64, got: &[u8], what: &str| {
        let off = off as usize;
        if got.is_empty() {
            assert!(
                off >= LEN,
                "{what}: nothing read at {off}, before the end (mode {mode})"
            );
            return;
        }
        assert!(
            st.plain.get(off..off + got.len()) == Some(got),
            "{what}: {} bytes at {off} differ from the plaintext (mode {mode})",
            got.len()
        );
    };
    st.rt.block_on(async {
        match st.store.open(M, &r).await {
            Ok(mut rd) => {
                assert!(
                    rd.len() as usize <= LEN,
                    "a reader claims {} bytes",
                    rd.len()
                );
                let mut offs: Vec<(u64, usize)> = reads
                    .chunks(2)
                    .map(|c| {
                        let off = u64::from(c[0]) * 64;
                        let n = usize::from(*c.get(1).unwrap_or(&255)) * 64 + 1;
                        (off, n)
                    })
                    .collect();
                offs.push((0, 1 << 20));
                for (off, n) in offs {
                    match rd.read_at(off, n).await {
                        Ok(b) => expect(off, &b, "read"),
                        Err(e) => assert!(acceptable(&e), "read error of the wrong kind: {e:?}"),
                    }
                }
            }
            Err(e) => assert!(acceptable(&e), "open error of the wrong kind: {e:?}"),
        }
        // Open and first bytes in one job (what a GET and an SFTP open use), then a read after
        // the prefix from the same reader (where its sequential read-ahead starts).
        let pre = usize::from(reads.first().copied().unwrap_or(0)) * 64 + 1;
        match st.store.open_prefix(M, &r, pre).await {
            Ok((mut rd, first)) => {
                expect(0, &first, "prefix");
                let at = first.len() as u64;
                match rd.read_at(at, 1 << 20).await {
                    Ok(b) => expect(at, &b, "read after the prefix"),
                    Err(e) => assert!(acceptable(&e), "read error of the wrong kind: {e:?}"),
                }
            }
            Err(e) => assert!(acceptable(&e), "open_prefix error of the wrong kind: {e:?}"),
        }
        // A staged copy of the damaged blob (random-access edit) must not launder the damage.
        if mode & 4 != 0 {
            match st.store.stage(M, Some(&r)).await {
                Ok(mut s) => {
                    let mut staged_ok = true;
                    if let Some(&o) = reads.first() {
                        match s.read_at(u64::from(o) * 32, 5000).await {
                            Ok(b) => expect(u64::from(o) * 32, &b, "staged read"),
                            Err(e) => {
                                assert!(acceptable(&e), "staged read error: {e:?}");
                                staged_ok = false;
                            }
                        }
                    }
                    if staged_ok && let Ok(new) = s.commit().await {
                        let mut rd = st.store.open(M, &new).await.expect("reopen a fresh commit");
                        let mut got = Vec::new();
                        loop {
                            let b = rd.read_at(got.len() as u64, 1 << 20).await.expect("read");
                            if b.is_empty() {
                                break;
                            }
                            got.extend_from_slice(&b);
                        }
                        assert_eq!(got.len(), LEN, "a staged copy changed the length");
                        expect(0, &got, "committed copy");
                        st.store.remove(M, &new).await.expect("remove");
                    }
                }
                Err(e) => assert!(acceptable(&e), "stage error of the wrong kind: {e:?}"),
            }
        }
    });
    std::fs::write(&st.path, &st.file).expect("restore");
});

//! Encrypted blob store throughput next to raw ring AEAD on the same chunks, in one run.
//!
//! `cargo bench --bench blob` (release, shared target dir). Groups (filter with a substring):
//! - `aead_raw/{aes,chacha}/{seal,open}_1GiB`: `seal_in_place_separate_tag` / `open_in_place` over
//!   16,384 chunks of 64 KiB in a 1 GiB buffer laid out like a blob file (chunk ‖ tag).
//! - `store/{aes,chacha}/write_1GiB`: stage + 4,096 appends of 256 KiB + durable commit (fsync,
//!   rename, directory fsync). `store/{..}/read_1GiB`: read_at of 1 MiB, sequential, page cache
//!   warm.
//! - `choice/*`: the storage decision — 1 GiB of sealed chunks into redb (one write transaction)
//!   vs into one file with `fdatasync` (no AEAD, storage cost only).
//! - `chunk/*`: the chunk-size decision — store write+read of 256 MiB and raw seal per chunk size.
//!
//! Before criterion runs, the peak RSS growth while streaming 1 GiB in and out is measured
//! (`VmHWM`, set `SDX_BENCH_MEM=0` to skip). After it runs, a summary prints MB/s (10^6 B/s,
//! median of the timed iterations) and the store/raw ratios.

use criterion::{Criterion, SamplingMode, Throughput};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sdx_portal::blob::encrypted::{BlobOptions, EncryptedBlobStore};
use sdx_portal::blob::{BlobRef, BlobStore};
use sdx_portal::crypto::{Cipher, Keyring, MasterKey, Sealer};
use sdx_portal::model::MatterId;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const C: usize = 64 << 10;
const TAG: usize = 16;
const M: MatterId = MatterId(1);

static TIMES: Mutex<BTreeMap<String, (u64, Vec<Duration>)>> = Mutex::new(BTreeMap::new());

fn record(id: &str, bytes: u64, d: Duration) {
    let mut t = TIMES.lock().unwrap();
    let e = t.entry(id.to_string()).or_insert((bytes, Vec::new()));
    e.1.push(d);
}

fn mbps(id: &str) -> Option<f64> {
    let t = TIMES.lock().unwrap();
    let (bytes, ds) = t.get(id)?;
    let mut v: Vec<f64> = ds.iter().map(|d| d.as_secs_f64()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let med = v[v.len() / 2];
    Some(*bytes as f64 / med / 1e6)
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: EncryptedBlobStore,
}

fn fixture(opts: BlobOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("p.redb")).unwrap());
    let keys = Keyring::open(db.clone(), &MasterKey::random().unwrap()).unwrap();
    let txn = db.begin_write().unwrap();
    keys.create_matter_key(&txn, M).unwrap();
    txn.commit().unwrap();
    let store = EncryptedBlobStore::open_with(dir.path().join("blobs"), keys, opts).unwrap();
    Fixture { _dir: dir, store }
}

async fn write_blob(store: &EncryptedBlobStore, src: &[u8], total: u64, piece: usize) -> BlobRef {
    let mut up = store.stage(M, None).await.unwrap();
    let mut done = 0u64;
    while done < total {
        for p in src.chunks(piece) {
            up.append(p).await.unwrap();
        }
        done += src.len() as u64;
    }
    up.commit().await.unwrap()
}

async fn read_blob(store: &EncryptedBlobStore, r: &BlobRef, step: usize) -> u64 {
    let mut rd = store.open(M, r).await.unwrap();
    let mut off = 0u64;
    loop {
        let b = rd.read_at(off, step).await.unwrap();
        if b.is_empty() {
            return off;
        }
        off += b.len() as u64;
    }
}

fn vm_hwm_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn vm_rss_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Peak RSS growth while streaming 1 GiB in (256 KiB appends) and out (1 MiB reads).
fn memory_check() {
    let rt = rt();
    let f = fixture(BlobOptions::default());
    let src = pattern(1 << 20);
    let base_rss = vm_rss_kib();
    let base_hwm = vm_hwm_kib();
    let (w, r) = rt.block_on(async {
        // Split the write into the append phase and the durable commit.
        let t = Instant::now();
        let mut up = f.store.stage(M, None).await.unwrap();
        for _ in 0..GIB / src.len() as u64 {
            for p in src.chunks(256 << 10) {
                up.append(p).await.unwrap();
            }
        }
        let appended = t.elapsed();
        let r = up.commit().await.unwrap();
        let w = t.elapsed();
        println!(
            "memory: write phases: appends {:.2} s, commit (seal tail, fsync, rename) {:.2} s",
            appended.as_secs_f64(),
            (w - appended).as_secs_f64()
        );
        let t = Instant::now();
        assert_eq!(read_blob(&f.store, &r, 1 << 20).await, GIB);
        (w, t.elapsed())
    });
    let hwm = vm_hwm_kib();
    println!(
        "memory: streaming 1 GiB in ({:.0} MB/s) and out ({:.0} MB/s): VmRSS before {} KiB, VmHWM before {} KiB, after {} KiB => peak growth {} KiB ({:.1} MiB above baseline)",
        GIB as f64 / w.as_secs_f64() / 1e6,
        GIB as f64 / r.as_secs_f64() / 1e6,
        base_rss,
        base_hwm,
        hwm,
        hwm - base_rss,
        (hwm - base_rss) as f64 / 1024.0
    );
}

fn key(alg: &'static ring::aead::Algorithm) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).unwrap())
}

fn nonce(i: u64, fin: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&i.to_be_bytes());
    n[8] = u8::from(fin);
    Nonce::assume_unique_for_key(n)
}

/// Raw seal/open of `total` bytes in chunks of `c` laid out chunk ‖ tag in `buf`.
fn raw_seal(k: &LessSafeKey, buf: &mut [u8], c: usize) {
    let aad = [1u8; 26];
    for (i, slot) in buf.chunks_mut(c + TAG).enumerate() {
        let (pt, tag) = slot.split_at_mut(c);
        let t = k
            .seal_in_place_separate_tag(nonce(i as u64, false), Aad::from(&aad[..]), pt)
            .unwrap();
        tag.copy_from_slice(t.as_ref());
    }
}

fn raw_open(k: &LessSafeKey, buf: &mut [u8], c: usize) {
    let aad = [1u8; 26];
    for (i, slot) in buf.chunks_mut(c + TAG).enumerate() {
        k.open_in_place(nonce(i as u64, false), Aad::from(&aad[..]), slot)
            .unwrap();
    }
}

fn bench_raw(c: &mut Criterion) {
    let n = (GIB as usize) / C;
    let mut g = c.benchmark_group("aead_raw");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(GIB));
    for (name, alg) in [
        ("aes", &ring::aead::AES_256_GCM),
        ("chacha", &CHACHA20_POLY1305),
    ] {
        let k = key(alg);
        let mut buf = vec![0u8; n * (C + TAG)];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        let id = format!("aead_raw/{name}/seal_1GiB");
        g.bench_function(format!("{name}/seal_1GiB"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    raw_seal(&k, &mut buf, C);
                    let d = t.elapsed();
                    record(&id, GIB, d);
                    total += d;
                }
                total
            })
        });
        if name == "aes" {
            let id = "aead_raw/sha256_1GiB".to_string();
            g.bench_function("sha256_1GiB", |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                        for ch in buf.chunks(C + TAG) {
                            ctx.update(&ch[..C]);
                        }
                        std::hint::black_box(ctx.finish());
                        let d = t.elapsed();
                        record(&id, GIB, d);
                        total += d;
                    }
                    total
                })
            });
        }
        // Open needs valid ciphertext: seal once, keep a pristine copy, restore before each
        // (untimed) iteration.
        raw_seal(&k, &mut buf, C);
        let pristine = buf.clone();
        let id = format!("aead_raw/{name}/open_1GiB");
        g.bench_function(format!("{name}/open_1GiB"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    buf.copy_from_slice(&pristine);
                    let t = Instant::now();
                    raw_open(&k, &mut buf, C);
                    let d = t.elapsed();
                    record(&id, GIB, d);
                    total += d;
                }
                total
            })
        });
    }
    g.finish();
}

/// Tuning overrides for experiments: `SDX_BENCH_FLUSH` (bytes per batch), `SDX_BENCH_SYNC_EVERY`
/// (bytes between background syncs; 0 = never), `SDX_BENCH_PIECE` (bytes per append).
fn env_opts(mut o: BlobOptions) -> BlobOptions {
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(v) = num("SDX_BENCH_FLUSH") {
        o.flush_bytes = v as usize;
    }
    if let Some(v) = num("SDX_BENCH_SYNC_EVERY") {
        o.sync_every = if v == 0 { u64::MAX } else { v };
    }
    o
}

fn piece() -> usize {
    std::env::var("SDX_BENCH_PIECE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 10)
}

fn bench_store(c: &mut Criterion) {
    let rt = rt();
    let src = pattern(1 << 20);
    let mut g = c.benchmark_group("store");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(GIB));
    for (name, cipher) in [
        ("aes", Cipher::Aes256Gcm),
        ("chacha", Cipher::ChaCha20Poly1305),
    ] {
        let f = fixture(env_opts(BlobOptions {
            cipher,
            ..BlobOptions::default()
        }));
        let id = format!("store/{name}/write_1GiB");
        g.bench_function(format!("{name}/write_1GiB"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let r = rt.block_on(write_blob(&f.store, &src, GIB, piece()));
                    let d = t.elapsed();
                    record(&id, GIB, d);
                    total += d;
                    rt.block_on(f.store.remove(M, &r)).unwrap();
                }
                total
            })
        });
        let r = rt.block_on(write_blob(&f.store, &src, GIB, 256 << 10));
        let id = format!("store/{name}/read_1GiB");
        g.bench_function(format!("{name}/read_1GiB"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    assert_eq!(rt.block_on(read_blob(&f.store, &r, 1 << 20)), GIB);
                    let d = t.elapsed();
                    record(&id, GIB, d);
                    total += d;
                }
                total
            })
        });
        rt.block_on(f.store.remove(M, &r)).unwrap();
    }
    g.finish();
}

/// Storage only (no AEAD): sealed-chunk-sized values into redb vs a file with fdatasync.
fn bench_choice(c: &mut Criterion) {
    let n = (GIB as usize) / C;
    let mut g = c.benchmark_group("choice");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(GIB));
    let val = pattern(C + TAG);
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("blob_chunks");
    for (name, vlen) in [
        ("redb_64KiB+tag", C + TAG),
        ("redb_65504+tag", 65_504 + TAG),
    ] {
        let id = format!("choice/{name}");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let db = redb::Database::create(dir.path().join("c.redb")).unwrap();
                    let t = Instant::now();
                    let txn = db.begin_write().unwrap();
                    {
                        let mut tab = txn.open_table(table).unwrap();
                        for i in 0..n as u64 {
                            tab.insert(i, &val[..vlen]).unwrap();
                        }
                    }
                    txn.commit().unwrap();
                    let d = t.elapsed();
                    // Throughput in plaintext bytes (what the values would carry).
                    let plain = (n * (vlen - TAG)) as f64 / GIB as f64;
                    record(&id, GIB, d.div_f64(plain));
                    total += d;
                    drop(db);
                }
                total
            })
        });
    }
    let id = "choice/file_fdatasync".to_string();
    g.bench_function("file_fdatasync", |b| {
        let mut out = Vec::with_capacity(16 * (C + TAG));
        for _ in 0..16 {
            out.extend_from_slice(&val);
        }
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let p = dir.path().join("blob.part");
                let f = std::fs::File::create(&p).unwrap();
                let mut off = 0u64;
                for _ in 0..n / 16 {
                    f.write_all_at(&out, off).unwrap();
                    off += out.len() as u64;
                }
                f.sync_data().unwrap();
                std::fs::rename(&p, dir.path().join("blob")).unwrap();
                std::fs::File::open(dir.path()).unwrap().sync_all().unwrap();
                let d = t.elapsed();
                record(&id, GIB, d);
                total += d;
            }
            total
        })
    });
    g.finish();
}

/// Chunk size: store write + read of 256 MiB and raw seal, per chunk size.
fn bench_chunk(c: &mut Criterion) {
    let rt = rt();
    let total = 256u64 << 20;
    let src = pattern(1 << 20);
    let mut g = c.benchmark_group("chunk");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(total));
    for log2 in [14u8, 16, 18, 20] {
        let cs = 1usize << log2;
        let k = key(&ring::aead::AES_256_GCM);
        let mut buf = vec![1u8; (total as usize / cs) * (cs + TAG)];
        let id = format!("chunk/raw_seal_{}KiB", cs >> 10);
        g.bench_function(format!("raw_seal_{}KiB", cs >> 10), |b| {
            b.iter_custom(|iters| {
                let mut t_all = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    raw_seal(&k, &mut buf, cs);
                    let d = t.elapsed();
                    record(&id, total, d);
                    t_all += d;
                }
                t_all
            })
        });
        drop(buf);
        let f = fixture(BlobOptions {
            chunk_log2: log2,
            flush_bytes: (1 << 20).max(cs),
            ..BlobOptions::default()
        });
        let id = format!("chunk/store_write_read_{}KiB", cs >> 10);
        g.bench_function(format!("store_write_read_{}KiB", cs >> 10), |b| {
            b.iter_custom(|iters| {
                let mut t_all = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let r = rt.block_on(async {
                        let r = write_blob(&f.store, &src, total, 256 << 10).await;
                        // SFTP-sized reads: 32 KiB.
                        assert_eq!(read_blob(&f.store, &r, 32 << 10).await, total);
                        r
                    });
                    let d = t.elapsed();
                    record(&id, total, d);
                    t_all += d;
                    rt.block_on(f.store.remove(M, &r)).unwrap();
                }
                t_all
            })
        });
    }
    g.finish();
}

fn summary() {
    println!("\n==== summary (MB/s = 10^6 B/s, median of timed iterations) ====");
    for (id, (bytes, ds)) in TIMES.lock().unwrap().iter() {
        let mut v: Vec<f64> = ds.iter().map(|d| d.as_secs_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let med = v[v.len() / 2];
        println!(
            "{id:<40} {:>8.0} MB/s  (n={}, min {:.0}, max {:.0})",
            *bytes as f64 / med / 1e6,
            v.len(),
            *bytes as f64 / v[v.len() - 1] / 1e6,
            *bytes as f64 / v[0] / 1e6
        );
    }
    for name in ["aes", "chacha"] {
        if let (Some(w), Some(s)) = (
            mbps(&format!("store/{name}/write_1GiB")),
            mbps(&format!("aead_raw/{name}/seal_1GiB")),
        ) {
            println!(
                "ratio {name}: durable store write / raw seal = {:.0}% (target >= 50%)",
                100.0 * w / s
            );
        }
        if let (Some(r), Some(o)) = (
            mbps(&format!("store/{name}/read_1GiB")),
            mbps(&format!("aead_raw/{name}/open_1GiB")),
        ) {
            println!(
                "ratio {name}: store read / raw open = {:.0}% (target >= 70%)",
                100.0 * r / o
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants =
        |g: &str| args.is_empty() || args.iter().any(|a| g.contains(a.as_str()) || a.contains(g));
    if std::env::var("SDX_BENCH_MEM").as_deref() != Ok("0") && (args.is_empty() || wants("memory"))
    {
        memory_check();
    }
    if wants("aead_raw") {
        bench_raw(&mut c);
    }
    if wants("store") {
        bench_store(&mut c);
    }
    if wants("choice") {
        bench_choice(&mut c);
    }
    if wants("chunk") {
        bench_chunk(&mut c);
    }
    c.final_summary();
    summary();
}

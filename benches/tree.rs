//! Tree operations as a portal user sees them, on an in-memory portal and on an on-disk portal
//! (redb file in a temp dir; the blob store is in memory for now):
//! - `stat` of a document,
//! - `list` of a folder holding 10,000 documents,
//! - a small (4 KiB) create + commit.
//!
//! Every operation goes through the policy point and appends its audit entry, as in production.
//! Run: `cargo bench -j2 --bench tree -- --sample-size 10`.

use criterion::{Criterion, criterion_group, criterion_main};
use sdx_portal::model::*;
use sdx_portal::tree::{Tree, WriteOptions};
use sdx_portal::{Portal, PortalBuilder};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BIG: usize = 10_000;
const MATTER: &str = "/2026-001 Bench";

struct Setup {
    tree: Tree,
    _dir: Option<tempfile::TempDir>,
}

async fn upload(t: &Tree, path: &str, data: &[u8]) {
    let mut up = t
        .open_write(path, WriteOptions::upload())
        .await
        .expect("open_write");
    up.write(data).await.expect("write");
    up.commit().await.expect("commit");
}

async fn setup(on_disk: bool) -> Setup {
    let (portal, dir) = if on_disk {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = PortalBuilder::new(dir.path()).open().await.expect("open");
        (p, Some(dir))
    } else {
        (Portal::in_memory().await.expect("portal"), None)
    };
    let firm = Actor::system();
    let client = portal
        .create_participant_type(&firm, "Client")
        .await
        .expect("ptype");
    let mt = portal
        .create_matter_type(&firm, "Bench", &["Big", "Uploads"])
        .await
        .expect("mtype");
    for f in ["Big", "Uploads"] {
        portal
            .set_portal_permissions(&firm, mt, f, client, Permissions::FULL)
            .await
            .expect("perms");
    }
    let m = portal
        .create_matter(&firm, "2026-001", "Bench", mt)
        .await
        .expect("matter");
    let c = portal
        .create_contact(&firm, "Carol", "carol@client.test")
        .await
        .expect("contact");
    let login = portal
        .create_portal_login(&firm, c, None)
        .await
        .expect("login");
    let p = portal
        .add_participant(&firm, m, c, client)
        .await
        .expect("participant");
    portal.grant_access(&firm, m, p).await.expect("grant");
    let tree = portal.tree(Actor::api(Principal::Portal(login)));

    // Populate the big folder with concurrent small uploads (group commit batches them).
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let t = tree.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= BIG {
                    break;
                }
                upload(&t, &format!("{MATTER}/Big/doc-{i:05}.txt"), b"small").await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("populate");
    }
    let n = tree
        .list(&format!("{MATTER}/Big"))
        .await
        .expect("list")
        .len();
    assert_eq!(n, BIG);
    Setup { tree, _dir: dir }
}

fn bench_tree(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (label, on_disk) in [("in_memory", false), ("on_disk", true)] {
        let s = rt.block_on(setup(on_disk));
        let mut g = c.benchmark_group(format!("tree/{label}"));
        g.measurement_time(Duration::from_secs(5));

        let doc = format!("{MATTER}/Big/doc-04321.txt");
        g.bench_function("stat_document", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(s.tree.stat(&doc).await.expect("stat")) })
        });

        let big = format!("{MATTER}/Big");
        g.bench_function("list_10000", |b| {
            b.to_async(&rt).iter(|| async {
                let v = s.tree.list(&big).await.expect("list");
                assert_eq!(v.len(), BIG);
                black_box(v)
            })
        });

        let data = vec![0x5au8; 4096];
        let counter = AtomicU64::new(0);
        g.bench_function("create_4KiB", |b| {
            b.to_async(&rt).iter(|| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let path = format!("{MATTER}/Uploads/new-{i}.bin");
                let t = &s.tree;
                let data = &data;
                async move { upload(t, &path, data).await }
            })
        });
        g.finish();
        drop(s);
    }
}

criterion_group!(benches, bench_tree);
criterion_main!(benches);

//! Policy check cost: resolving a path and checking the permission for a portal user who takes
//! part in many matters, on an encrypted on-disk portal (records sealed, as `sdx serve` runs it).
//!
//! For M = 1, 100 and 1,000 matters (the user is a participant with portal access in all of them;
//! the document lives in the last one):
//! - `resolve_check`: one read transaction, [`resolve`] of `/<matter>/Client Documents/doc.pdf`
//!   and the Read check, on the calling thread — the policy work every WebDAV/SFTP request does
//!   before anything else;
//! - `stat`: the whole [`Tree::stat`] (resolve + check on the blocking pool, then the durable audit
//!   entry);
//! - `list_root`: listing `/` (the user's matters);
//! - `visible_matters`: building every matter the user can see, which `resolve` did on every
//!   request of a portal user before commit 6b8914a (it now looks the matter up by name);
//! - and `resolve_check` for a staff user at M = 1,000 for comparison.
//!
//! Run: `cargo bench -j2 --bench policy -- --sample-size 10`.

use criterion::{Criterion, criterion_group, criterion_main};
use sdx_portal::crypto::KeyFile;
use sdx_portal::model::*;
use sdx_portal::path::PortalPath;
use sdx_portal::policy;
use sdx_portal::store::Db;
use sdx_portal::tree::WriteOptions;
use sdx_portal::tree::resolve::{Node, resolve};
use sdx_portal::{Portal, PortalBuilder};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    portal: Portal,
    user: Principal,
    staff: Principal,
    doc: String,
    _dir: tempfile::TempDir,
}

async fn setup(matters: usize) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("master.key");
    KeyFile::create(&key).expect("key file");
    let portal = PortalBuilder::new(dir.path())
        .key_provider(Arc::new(KeyFile::new(&key)))
        .open()
        .await
        .expect("open portal");
    let firm = Actor::system();
    let client = portal
        .create_participant_type(&firm, "Client")
        .await
        .expect("ptype");
    let mt = portal
        .create_matter_type(&firm, "General", &["Client Documents", "Internal"])
        .await
        .expect("mtype");
    portal
        .set_portal_permissions(&firm, mt, "Client Documents", client, Permissions::FULL)
        .await
        .expect("perms");
    let contact = portal
        .create_contact(&firm, "Carol", "carol@client.test")
        .await
        .expect("contact");
    let login = portal
        .create_portal_login(&firm, contact, None)
        .await
        .expect("login");
    let staff = portal
        .create_staff_login(&firm, "sam@firm.test", "Sam", None)
        .await
        .expect("staff");

    // Matters in parallel (group commit batches the admin jobs).
    let mut tasks = tokio::task::JoinSet::new();
    let per = matters.div_ceil(32);
    for w in 0..32usize {
        let portal = portal.clone();
        tasks.spawn(async move {
            let firm = Actor::system();
            for i in (w * per)..((w + 1) * per).min(matters) {
                let m = portal
                    .create_matter(&firm, &format!("2026-{i:04}"), &format!("Matter {i}"), mt)
                    .await
                    .expect("matter");
                let p = portal
                    .add_participant(&firm, m, contact, client)
                    .await
                    .expect("participant");
                portal.grant_access(&firm, m, p).await.expect("grant");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("setup task");
    }
    let user = Principal::Portal(login);
    let tree = portal.tree(Actor::api(user));
    let last = matters - 1;
    let doc = format!("/2026-{last:04} Matter {last}/Client Documents/doc.pdf");
    let mut up = tree
        .open_write(&doc, WriteOptions::upload())
        .await
        .expect("open_write");
    up.write(b"%PDF-1.7 bench").await.expect("write");
    up.commit().await.expect("commit");
    assert_eq!(tree.list("/").await.expect("list /").len(), matters);
    Setup {
        portal,
        user,
        staff: Principal::Staff(staff),
        doc,
        _dir: dir,
    }
}

/// One read transaction: resolve the path and require Read, as every request does first.
fn resolve_check(portal: &Portal, who: Principal, path: &PortalPath) {
    let store = portal.store();
    let txn = store.database().begin_read().expect("read txn");
    let db = Db {
        tx: &txn,
        sealer: store.sealer().as_ref(),
    };
    match resolve(&db, who, path).expect("resolve") {
        Node::Document(_, f, d, _) => {
            policy::require(f.perms(), Permission::Read, "folder").expect("allowed");
            black_box(d);
        }
        other => panic!("expected a document, got {other:?}"),
    }
}

fn bench_policy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("policy");
    g.measurement_time(Duration::from_secs(5));
    for matters in [1usize, 100, 1000] {
        let s = rt.block_on(setup(matters));
        let path = PortalPath::parse(&s.doc).expect("path");
        g.bench_function(format!("resolve_check/portal_{matters}_matters"), |b| {
            b.iter(|| resolve_check(&s.portal, s.user, &path))
        });
        g.bench_function(format!("visible_matters/portal_{matters}_matters"), |b| {
            b.iter(|| {
                let store = s.portal.store();
                let txn = store.database().begin_read().expect("read txn");
                let db = Db {
                    tx: &txn,
                    sealer: store.sealer().as_ref(),
                };
                let v = policy::visible_matters(&db, s.user).expect("visible");
                assert_eq!(v.len(), matters);
                black_box(v)
            })
        });
        if matters == 1000 {
            g.bench_function(format!("resolve_check/staff_{matters}_matters"), |b| {
                b.iter(|| resolve_check(&s.portal, s.staff, &path))
            });
        }
        let tree = s.portal.tree(Actor::api(s.user));
        g.bench_function(format!("stat/portal_{matters}_matters"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(tree.stat(&s.doc).await.expect("stat")) })
        });
        g.bench_function(format!("list_root/portal_{matters}_matters"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(tree.list("/").await.expect("list")) })
        });
        drop(tree);
        drop(s);
    }
    g.finish();
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);

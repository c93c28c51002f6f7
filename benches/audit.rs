//! Audit append throughput: concurrent appenders, durable, on disk.
//!
//! An encrypted on-disk portal (redb in a temp dir, records sealed under a master key, keyed MAC
//! chain) as `sdx serve` runs it. Each iteration appends 256 entries — a portal user's `read` of a
//! document, with matter, document and client address, so the matter/document/login index links
//! are written too — split between C concurrent appenders (C = 1, 4, 16, 64), each append awaited
//! until its commit is durable. Concurrent appenders share commits (the store's group commit); the
//! commits-per-entry ratio is printed after each group.
//!
//! Run: `cargo bench -j2 --bench audit -- --sample-size 10`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sdx_portal::PortalBuilder;
use sdx_portal::audit::{self, AuditAction, NewEntry, Outcome};
use sdx_portal::crypto::KeyFile;
use sdx_portal::model::*;
use std::sync::Arc;
use std::time::Duration;

const PER_ITER: usize = 256;

fn entry(i: usize) -> NewEntry {
    NewEntry {
        actor: Actor::new(
            Principal::Portal(LoginId(7)),
            Channel::WebDav,
            Some("127.0.0.1:50000".parse().expect("address")),
        ),
        matter: Some(MatterId(3)),
        document: Some(DocumentId(1000 + i as u64)),
        object: format!("/2026-001 Smith v Jones/Client Documents/statement-{i:05}.pdf"),
        action: AuditAction::Read,
        outcome: Outcome::Allowed,
    }
}

fn bench_audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("master.key");
    KeyFile::create(&key).expect("key file");
    let portal = rt
        .block_on(
            PortalBuilder::new(dir.path())
                .key_provider(Arc::new(KeyFile::new(&key)))
                .open(),
        )
        .expect("open portal");
    let store = portal.store().clone();

    let mut g = c.benchmark_group("audit/append_durable");
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(PER_ITER as u64));
    for conc in [1usize, 4, 16, 64] {
        let (c0, j0) = store.stats();
        g.bench_function(format!("appenders_{conc}"), |b| {
            b.to_async(&rt).iter(|| {
                let store = store.clone();
                async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for a in 0..conc {
                        let store = store.clone();
                        tasks.spawn(async move {
                            let mut i = a;
                            while i < PER_ITER {
                                let e = entry(i);
                                store
                                    .write(move |ctx| audit::append(ctx, e.clone()))
                                    .await
                                    .expect("append");
                                i += conc;
                            }
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.expect("appender");
                    }
                }
            })
        });
        let (c1, j1) = store.stats();
        eprintln!(
            "appenders_{conc}: {} entries in {} commits ({:.1} entries per commit)",
            j1 - j0,
            c1 - c0,
            (j1 - j0) as f64 / (c1 - c0).max(1) as f64
        );
    }
    g.finish();

    // The trail still verifies after everything above.
    let report = rt
        .block_on(portal.audit_verify(&Actor::system()))
        .expect("verify");
    assert!(report.ok(), "audit chain broken: {:?}", report.problem);
    eprintln!("audit trail verified: {} entries", report.entries);
}

criterion_group!(benches, bench_audit);
criterion_main!(benches);

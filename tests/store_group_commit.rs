//! Audit appends share commits: concurrent operations on an on-disk portal (every commit fsyncs) are
//! grouped, and none returns before its audit entry is durable.
use sdx_portal::model::Actor;
use sdx_portal::{PortalBuilder, demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_share_durable_commits() {
    let dir = tempfile::tempdir().unwrap();
    let portal = PortalBuilder::new(dir.path()).open().await.unwrap();
    demo::provision(&portal).await.unwrap();
    let who = portal
        .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
        .await
        .unwrap();
    let (c0, j0) = portal.store().stats();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let t = portal.tree(Actor::api(who));
        tasks.push(tokio::spawn(async move {
            t.stat("/2026-001 Smith v Jones/Correspondence").await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (c1, j1) = portal.store().stats();
    eprintln!(
        "200 concurrent stats: {} jobs in {} commits",
        j1 - j0,
        c1 - c0
    );
    assert_eq!(j1 - j0, 200, "one audit job per operation");
    assert!(
        c1 - c0 < 200,
        "200 audit appends took {} commits: no grouping",
        c1 - c0
    );
    // Every one of them is in the (durable) trail.
    let entries = portal
        .audit_query(
            &Actor::system(),
            sdx_portal::audit::AuditFilter {
                login: who.login(),
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .filter(|e| e.action == sdx_portal::audit::AuditAction::Stat)
            .count()
            >= 200
    );
}

//! A portal opened with a master key keeps nothing of its clients in plaintext on disk, reads
//! everything back with the right key, and refuses a wrong one.
use sdx_portal::crypto::KeyFile;
use sdx_portal::model::*;
use sdx_portal::tree::WriteOptions;
use sdx_portal::{Error, Portal, PortalBuilder};
use std::sync::Arc;

const CANARY: &str = "Zq7CanaryPelican";

async fn open(dir: &std::path::Path, key: &std::path::Path) -> sdx_portal::Result<Portal> {
    PortalBuilder::new(dir)
        .key_provider(Arc::new(KeyFile::new(key)))
        .open()
        .await
}

fn scan(dir: &std::path::Path, needle: &[u8], hits: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            scan(&p, needle, hits);
        } else {
            let data = std::fs::read(&p).unwrap();
            if data.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_data_in_plaintext_on_disk_and_wrong_key_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = tmp.path().join("master.key");
    KeyFile::create(&key).unwrap();
    let sys = Actor::system();
    let doc = format!("/2026-001 {CANARY} v Jones/Client Documents/{CANARY}.txt");
    {
        let p = open(&dir, &key).await.unwrap();
        let client = p.create_participant_type(&sys, "Client").await.unwrap();
        let t = p
            .create_matter_type(&sys, "General", &["Client Documents"])
            .await
            .unwrap();
        p.set_portal_permissions(&sys, t, "Client Documents", client, Permissions::FULL)
            .await
            .unwrap();
        let m = p
            .create_matter(&sys, "2026-001", &format!("{CANARY} v Jones"), t)
            .await
            .unwrap();
        let c = p
            .create_contact(
                &sys,
                &format!("Alice {CANARY}"),
                &format!("{}@example.test", CANARY.to_lowercase()),
            )
            .await
            .unwrap();
        let part = p.add_participant(&sys, m, c, client).await.unwrap();
        p.grant_access(&sys, m, part).await.unwrap();
        p.post_message(&sys, m, Some(part), &format!("message {CANARY}"))
            .await
            .unwrap();
        let tree = p.tree(sys.clone());
        let mut up = tree.open_write(&doc, WriteOptions::upload()).await.unwrap();
        for _ in 0..2000 {
            up.write(format!("content {CANARY} ").as_bytes())
                .await
                .unwrap();
        }
        up.commit().await.unwrap();
    }
    // Let the writer thread finish and release the database.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut hits = Vec::new();
    scan(&dir, CANARY.as_bytes(), &mut hits);
    scan(&dir, CANARY.to_lowercase().as_bytes(), &mut hits);
    assert!(hits.is_empty(), "client data in plaintext in: {hits:?}");

    // The right key reads everything back.
    let p = open(&dir, &key).await.unwrap();
    let mut rd = p.tree(sys.clone()).open_read(&doc).await.unwrap();
    let first = rd.read_at(0, 64).await.unwrap();
    assert!(first.starts_with(format!("content {CANARY} ").as_bytes()));
    drop((rd, p));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A wrong key is refused at open with a key error.
    let other = tmp.path().join("other.key");
    KeyFile::create(&other).unwrap();
    match open(&dir, &other).await {
        Err(Error::Key(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a key error, got {other:?}"),
    }
}

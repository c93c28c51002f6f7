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

/// A matter type "General" with a "Client Documents" folder open to "Client" participants, and
/// one matter of it; returns the matter and the participant type.
async fn matter(
    p: &Portal,
    sys: &Actor,
    number: &str,
    title: &str,
) -> (MatterId, ParticipantTypeId) {
    let client = p.create_participant_type(sys, "Client").await.unwrap();
    let t = p
        .create_matter_type(sys, "General", &["Client Documents"])
        .await
        .unwrap();
    p.set_portal_permissions(sys, t, "Client Documents", client, Permissions::FULL)
        .await
        .unwrap();
    (
        p.create_matter(sys, number, title, t).await.unwrap(),
        client,
    )
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
        let (m, client) = matter(&p, &sys, "2026-001", &format!("{CANARY} v Jones")).await;
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

/// Rows of the `blob_data` table (small documents kept in the database).
async fn inline_rows(p: &Portal) -> usize {
    use sdx_portal::store::Tx;
    p.store()
        .read(|db| {
            Ok(db
                .tx
                .scan_raw(sdx_portal::store::tables::BLOB_DATA, &[], usize::MAX)?
                .len())
        })
        .await
        .unwrap()
}

/// Blob files of the data dir (staging files excluded).
fn blob_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir.join("blobs")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.ends_with("tmp") {
            n += std::fs::read_dir(&p).unwrap().count();
        }
    }
    n
}

/// A small document is kept in the database, sealed like a blob file (no plaintext on disk, no
/// file at all), reads back after a restart, keeps its history across updates and a rename, and
/// goes with its last version when purged. A large one still gets a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_documents_are_kept_sealed_in_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = tmp.path().join("master.key");
    KeyFile::create(&key).unwrap();
    let sys = Actor::system();
    let folder = "/2026-002 Small v Large/Client Documents";
    let doc = format!("{folder}/note.txt");
    let small_v1 = format!("first {CANARY} note").into_bytes();
    let small_v2 = format!("second {CANARY} note, a little longer").into_bytes();
    let (m, d) = {
        let p = open(&dir, &key).await.unwrap();
        let (m, _) = matter(&p, &sys, "2026-002", "Small v Large").await;
        let tree = p.tree(sys.clone());
        for body in [&small_v1, &small_v2] {
            let mut up = tree.open_write(&doc, WriteOptions::upload()).await.unwrap();
            up.write(body).await.unwrap();
            up.commit().await.unwrap();
        }
        assert_eq!(inline_rows(&p).await, 2, "one row per small version");
        assert_eq!(blob_files(&dir), 0, "no file for a small document");
        // Large: a file, no row.
        let mut up = tree
            .open_write(&format!("{folder}/big.bin"), WriteOptions::upload())
            .await
            .unwrap();
        up.write(&vec![9u8; 100_000]).await.unwrap();
        up.commit().await.unwrap();
        assert_eq!((inline_rows(&p).await, blob_files(&dir)), (2, 1));
        let e = tree.stat(&doc).await.unwrap();
        (m, e.document.unwrap())
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut hits = Vec::new();
    scan(&dir, CANARY.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "client data in plaintext in: {hits:?}");

    let p = open(&dir, &key).await.unwrap();
    let tree = p.tree(sys.clone());
    let mut rd = tree.open_read(&doc).await.unwrap();
    assert_eq!(&rd.read_at(0, 1000).await.unwrap()[..], &small_v2[..]);
    // Renamed: the same row serves the new name; the old version is still there.
    let moved = format!("{folder}/renamed.txt");
    tree.rename(&doc, &moved, false).await.unwrap();
    let mut rd = tree.open_read(&moved).await.unwrap();
    assert_eq!(&rd.read_at(0, 1000).await.unwrap()[..], &small_v2[..]);
    drop(rd);
    assert_eq!(p.versions(&sys, m, d).await.unwrap().len(), 2);
    // Purged: its rows go in the same commit.
    tree.delete(&moved).await.unwrap();
    p.purge_document(&sys, m, d).await.unwrap();
    assert_eq!(inline_rows(&p).await, 0);
    assert_eq!(blob_files(&dir), 1, "the large document's file stays");
}

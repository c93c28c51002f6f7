//! Provisions a data directory for the end-to-end benchmark (`benches/e2e/compare.sh`), through the
//! public API only, before `sdx serve --data DIR` is started on it:
//!
//! - a master key file `DIR/master.key` (as `sdx serve` expects) and the encrypted portal;
//! - matter type "Bench" with portal folders `Uploads` and `Big`, Full permission for participant
//!   type "Client"; matter `2026-001 Bench`;
//! - a portal login (EMAIL, PASSWORD, optional SSH public key) granted access to that matter;
//! - `Big` filled with COUNT small documents `doc-00000.txt`… (the listing workload).
//!
//! ```text
//! cargo run --release --example bench_setup -- DIR EMAIL PASSWORD [PUBKEY_FILE] [COUNT]
//! ```
//! Refuses a directory that already holds a portal (it is meant for fresh temp dirs).

use sdx_portal::PortalBuilder;
use sdx_portal::crypto::KeyFile;
use sdx_portal::model::*;
use sdx_portal::tree::WriteOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The matter's folder name as clients see it.
const MATTER_DIR: &str = "2026-001 Bench";

async fn run(args: Vec<String>) -> Result<(), String> {
    let (dir, email, password) = match args.as_slice() {
        [d, e, p, ..] => (PathBuf::from(d), e.clone(), p.clone()),
        _ => {
            return Err("usage: bench_setup DIR EMAIL PASSWORD [PUBKEY_FILE] [COUNT]".into());
        }
    };
    let pubkey = match args.get(3).filter(|s| !s.is_empty() && s.as_str() != "-") {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("can't read the public key {p}: {e}"))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let count: usize = match args.get(4) {
        Some(c) => c
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {c:?}"))?,
        None => 10_000,
    };
    if dir.join("portal.redb").exists() {
        return Err(format!("{} already holds a portal", dir.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("can't create {}: {e}", dir.display()))?;
    let key = dir.join("master.key");
    KeyFile::create(&key).map_err(|e| e.to_string())?;
    let portal = PortalBuilder::new(&dir)
        .key_provider(Arc::new(KeyFile::new(&key)))
        .open()
        .await
        .map_err(|e| e.to_string())?;

    let firm = Actor::system();
    let e = |e: sdx_portal::Error| e.to_string();
    let client = portal
        .create_participant_type(&firm, "Client")
        .await
        .map_err(e)?;
    let mt = portal
        .create_matter_type(&firm, "Bench", &["Uploads", "Big"])
        .await
        .map_err(e)?;
    for f in ["Uploads", "Big"] {
        portal
            .set_portal_permissions(&firm, mt, f, client, Permissions::FULL)
            .await
            .map_err(e)?;
    }
    let matter = portal
        .create_matter(&firm, "2026-001", "Bench", mt)
        .await
        .map_err(e)?;
    let contact = portal
        .create_contact(&firm, "Bench User", &email)
        .await
        .map_err(e)?;
    let login = portal
        .create_portal_login(&firm, contact, Some(&password))
        .await
        .map_err(e)?;
    if let Some(k) = &pubkey {
        portal.add_ssh_key(&firm, login, k).await.map_err(e)?;
    }
    let part = portal
        .add_participant(&firm, matter, contact, client)
        .await
        .map_err(e)?;
    portal.grant_access(&firm, matter, part).await.map_err(e)?;

    // Fill `Big` with concurrent small uploads as the portal user (group commit batches them).
    let tree = portal.tree(Actor::api(Principal::Portal(login)));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let t = tree.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), sdx_portal::Error>(());
                }
                let path = format!("/{MATTER_DIR}/Big/doc-{i:05}.txt");
                let mut up = t.open_write(&path, WriteOptions::upload()).await?;
                up.write(format!("document {i:05}\n").as_bytes()).await?;
                up.commit().await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())?.map_err(e)?;
    }
    let listed = tree
        .list(&format!("/{MATTER_DIR}/Big"))
        .await
        .map_err(e)?
        .len();
    if listed != count {
        return Err(format!("Big lists {listed} documents, expected {count}"));
    }
    println!(
        "provisioned {}: /{MATTER_DIR}/Big holds {count}",
        dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_setup: can't start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_setup: {e}");
            ExitCode::FAILURE
        }
    }
}

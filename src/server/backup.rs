//! `sdx backup`: a consistent copy of a data dir, taken by the process that has it open (the
//! running server, through the admin socket, or the CLI itself when no server runs).
//!
//! How it stays consistent while clients keep working:
//! 1. Committed blob files are immutable (an upload is renamed into place only when complete), so
//!    they are copied first, while everything runs.
//! 2. Then one job on the store's writer thread — the only thread that commits — copies
//!    `portal.redb` and any blob committed since step 1. While that job runs nothing commits, so
//!    the copied file holds exactly the last commit and every blob it references. Uploads keep
//!    streaming meanwhile; only their final commit waits (for a database of metadata, a short
//!    pause: see BENCHMARKS.md).
//! 3. The copy is opened and checked: it opens under the master key and its audit chain
//!    verifies. `backup.json` is written last, so a directory without it is an incomplete backup.
//!
//! The backup holds the SSH host key and the TLS pair of the data dir, but **never the master
//! key**: keep that apart. To restore, copy the backup to a new data dir, put the master key
//! next to it (`master.key`, mode 0600) and start `sdx serve --data DIR`.

use super::admin::{AdminCtx, Frame, Output, audit_admin};
use super::{DB_NAME, Failure, HOST_KEY_NAME};
use crate::audit::Outcome;
use serde::Serialize;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The manifest written last into a backup.
pub const MANIFEST: &str = "backup.json";

/// What a backup copied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Target directory.
    pub out: PathBuf,
    /// When (ms since the epoch).
    pub created_ms: u64,
    /// Size of the database copy.
    pub db_bytes: u64,
    /// Blob files copied.
    pub blobs: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// How long commits were paused for the database copy, in ms.
    pub pause_ms: u64,
    /// Audit entries in the copy (all verified).
    pub audit_entries: u64,
}

impl BackupReport {
    /// One line for the admin.
    pub fn summary(&self) -> String {
        format!(
            "backup written to {}: database {} KiB, {} blobs ({} KiB), audit chain of {} entries verified; commits paused {} ms. The master key is NOT in the backup: keep it apart",
            self.out.display(),
            self.db_bytes / 1024,
            self.blobs,
            self.blob_bytes / 1024,
            self.audit_entries,
            self.pause_ms
        )
    }
}

/// Copies `src` to a new file `dst` (mode `mode`) and syncs it. Returns the bytes copied.
fn copy_synced(src: &Path, dst: &Path, mode: u32) -> io::Result<u64> {
    let mut from = File::open(src)?;
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(dst)?;
    let n = io::copy(&mut from, &mut to)?;
    to.sync_all()?;
    Ok(n)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Copies every committed blob under `src` (skipping `tmp/`) not in `done` into `dst`, adding it
/// to `done`. A blob that disappears meanwhile (purged) is skipped. Returns (files, bytes).
fn copy_blobs(src: &Path, dst: &Path, done: &mut HashSet<PathBuf>) -> io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let dirs = match fs::read_dir(src) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    for d in dirs {
        let d = d?;
        let name = d.file_name();
        if name == "tmp" || !d.file_type()?.is_dir() {
            continue;
        }
        let target_dir = dst.join(&name);
        let mut made = target_dir.exists();
        for f in fs::read_dir(d.path())? {
            let f = f?;
            if !f.file_type()?.is_file() {
                continue;
            }
            let rel = PathBuf::from(&name).join(f.file_name());
            if done.contains(&rel) {
                continue;
            }
            if !made {
                super::mkdir_private(&target_dir)?;
                made = true;
            }
            match copy_synced(&f.path(), &dst.join(&rel), 0o600) {
                Ok(n) => {
                    files += 1;
                    bytes += n;
                    done.insert(rel);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if made {
            sync_dir(&target_dir)?;
        }
    }
    Ok((files, bytes))
}

fn prepare_out(data: &Path, out: &Path) -> Result<(), Failure> {
    if out.exists() {
        let empty = fs::read_dir(out)
            .map_err(|e| Failure(format!("can't use {}: {e}", out.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(Failure(format!(
                "{} is not empty: back up into a new directory",
                out.display()
            )));
        }
    }
    super::mkdir_private(out)
        .map_err(|e| Failure(format!("can't create {}: {e}", out.display())))?;
    let (d, o) = (fs::canonicalize(data)?, fs::canonicalize(out)?);
    if o.starts_with(&d) {
        let _ = fs::remove_dir(out);
        return Err(Failure(format!(
            "{} is inside the data dir: back up somewhere else",
            out.display()
        )));
    }
    super::mkdir_private(&out.join("blobs"))?;
    Ok(())
}

/// Takes the backup (see the module documentation).
pub async fn backup(ctx: &AdminCtx, out: &Path, o: &Output) -> Result<BackupReport, Failure> {
    let res = backup_inner(ctx, out, o).await;
    let outcome = match &res {
        Ok(_) => Outcome::Allowed,
        Err(e) => Outcome::Failed(e.0.clone()),
    };
    audit_admin(ctx, "backup", out.display().to_string(), outcome).await?;
    res
}

async fn backup_inner(ctx: &AdminCtx, out: &Path, o: &Output) -> Result<BackupReport, Failure> {
    let data = ctx.opened.data.clone();
    let out = if out.is_relative() {
        std::env::current_dir()?.join(out)
    } else {
        out.to_path_buf()
    };
    {
        let (d, t) = (data.clone(), out.clone());
        tokio::task::spawn_blocking(move || prepare_out(&d, &t))
            .await
            .map_err(|e| Failure(format!("backup task failed: {e}")))??;
    }
    let mut report = BackupReport {
        out: out.clone(),
        created_ms: crate::model::now_millis(),
        ..BackupReport::default()
    };
    let blob_src = data.join("blobs");
    let blob_dst = out.join("blobs");

    // 1. Blobs, while everything runs.
    let done = Arc::new(Mutex::new(HashSet::new()));
    let (files, bytes) = {
        let (s, d, done) = (blob_src.clone(), blob_dst.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let mut set = done.lock().unwrap_or_else(|p| p.into_inner());
            copy_blobs(&s, &d, &mut set)
        })
        .await
        .map_err(|e| Failure(format!("backup task failed: {e}")))?
        .map_err(|e| Failure(format!("copying blobs failed: {e}")))?
    };
    let _ = o
        .send(Frame::Err(format!(
            "copied {files} blobs ({} KiB); now the database",
            bytes / 1024
        )))
        .await;

    // 2. The database and late blobs, with commits paused.
    let (db_src, db_dst) = (data.join(DB_NAME), out.join(DB_NAME));
    let paused = {
        let (s, d, done) = (blob_src.clone(), blob_dst.clone(), done.clone());
        ctx.opened
            .portal
            .store()
            // Batched durability: flush first, so the file holds exactly the last commit.
            .write_after_sync(move |_ctx| {
                let t0 = Instant::now();
                let db_bytes = copy_synced(&db_src, &db_dst, 0o600).map_err(|e| {
                    crate::Error::Invalid(format!("copying the database failed: {e}"))
                })?;
                let mut set = done.lock().unwrap_or_else(|p| p.into_inner());
                let late = copy_blobs(&s, &d, &mut set)
                    .map_err(|e| crate::Error::Invalid(format!("copying blobs failed: {e}")))?;
                Ok((db_bytes, late, t0.elapsed().as_millis() as u64))
            })
            .await?
    };
    let (db_bytes, (late_files, late_bytes), pause_ms) = paused;
    report.db_bytes = db_bytes;
    report.blobs = files + late_files;
    report.blob_bytes = bytes + late_bytes;
    report.pause_ms = pause_ms;

    // Keys of the front ends (not the master key).
    for (name, mode) in [
        (HOST_KEY_NAME, 0o600),
        (crate::tls::KEY_FILE, 0o600),
        (crate::tls::CERT_FILE, 0o644),
    ] {
        let src = data.join(name);
        if src.is_file() {
            copy_synced(&src, &out.join(name), mode)?;
        }
    }

    // 3. Check the copy: it opens under the master key and its audit chain verifies.
    let provider = ctx.opened.key.provider(&data);
    let check = out.clone();
    report.audit_entries = tokio::task::spawn_blocking(move || -> Result<u64, Failure> {
        use redb::ReadableDatabase;
        let db = Arc::new(crate::store::open_database(&check.join(DB_NAME), 16 << 20)?);
        let keys = crate::crypto::Keyring::open(db.clone(), provider.as_ref())?;
        let txn = db.begin_read().map_err(crate::Error::from)?;
        let r = crate::audit::verify(&crate::store::Db {
            tx: &txn,
            sealer: &keys,
        })?;
        match r.problem {
            None => Ok(r.entries),
            Some(p) => Err(Failure(format!(
                "the copy's audit trail does not verify: {p}"
            ))),
        }
    })
    .await
    .map_err(|e| Failure(format!("backup check failed: {e}")))??;

    let manifest = serde_json::to_vec_pretty(&report)
        .map_err(|e| Failure(format!("writing the manifest failed: {e}")))?;
    let m = out.join(MANIFEST);
    let (b, m2, out2) = (blob_dst, m.clone(), out.clone());
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        sync_dir(&b)?;
        let tmp = out2.join(".backup.json.tmp");
        fs::write(&tmp, &manifest)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &m2)?;
        sync_dir(&out2)
    })
    .await
    .map_err(|e| Failure(format!("backup task failed: {e}")))??;
    Ok(report)
}

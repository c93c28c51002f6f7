//! The [`Portal`]: the library's one way in.
//!
//! A `Portal` owns the store, the blob store and the event channel. Everything a host application,
//! the admin CLI or a front end does goes through its methods (staff administration here and in the
//! submodules, the principal's tree in [`crate::tree`]), and every method resolves the caller's
//! permission through [`crate::policy`], does the work and appends the audit entry.

mod admin;
mod credentials;
mod docs;
pub mod invitations;
mod logins;
mod messages;

pub use admin::*;
pub use credentials::*;
pub use docs::*;
pub use invitations::*;
pub use logins::*;
pub use messages::*;

use crate::audit::{self, AuditAction, NewEntry, Outcome};
use crate::blob::{BlobStore, mem::MemBlobStore};
use crate::crypto::{PlainSealer, Sealer};
use crate::events::{EVENT_BUFFER, PortalEvent};
use crate::model::*;
use crate::store::{self, Store};
use crate::tree::Tree;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) events: broadcast::Sender<PortalEvent>,
    pub(crate) epoch: Arc<AtomicU64>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) accounts: credentials::AccountState,
}

/// A portal: cheap to clone, share it between tasks and front ends.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use sdx_portal::{Portal, model::*};
/// let portal = Portal::in_memory().await.unwrap();
/// let firm = Actor::system();
/// let client = portal.create_participant_type(&firm, "Client").await.unwrap();
/// let general = portal
///     .create_matter_type(&firm, "General", &["Client Documents", "Internal"])
///     .await
///     .unwrap();
/// portal
///     .set_portal_permissions(&firm, general, "Client Documents", client, Permissions::FULL)
///     .await
///     .unwrap();
/// let matter = portal.create_matter(&firm, "2026-001", "Smith v Jones", general).await.unwrap();
/// let alice = portal.create_contact(&firm, "Alice", "alice@example.test").await.unwrap();
/// let part = portal.add_participant(&firm, matter, alice, client).await.unwrap();
/// portal.create_portal_login(&firm, alice, Some("a long passphrase here")).await.unwrap();
/// portal.grant_access(&firm, matter, part).await.unwrap();
///
/// let who = portal.authenticate_password("alice@example.test", "a long passphrase here").await.unwrap();
/// let tree = portal.tree(Actor::api(who));
/// let names: Vec<String> = tree.list("/").await.unwrap().into_iter().map(|e| e.name).collect();
/// assert_eq!(names, ["2026-001 Smith v Jones"]);
/// // "Internal" is not a portal folder: Alice does not see it.
/// let folders = tree.list("/2026-001 Smith v Jones").await.unwrap();
/// assert_eq!(folders.len(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Portal {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Portal`] with non-default parts.
pub struct PortalBuilder {
    dir: Option<PathBuf>,
    keys: Option<Arc<dyn crate::crypto::KeyProvider>>,
    sealer: Option<Arc<dyn Sealer>>,
    blobs: Option<Arc<dyn BlobStore>>,
    cache_bytes: usize,
    inline_max: usize,
    accounts: credentials::AccountSetup,
    store: store::StoreOptions,
}

impl PortalBuilder {
    /// A portal whose database lives in `dir/portal.redb`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        PortalBuilder {
            dir: Some(dir.as_ref().to_path_buf()),
            keys: None,
            sealer: None,
            blobs: None,
            cache_bytes: 16 << 20,
            inline_max: crate::blob::encrypted::DEFAULT_INLINE_MAX,
            accounts: Default::default(),
            store: Default::default(),
        }
    }
    /// A portal held entirely in memory.
    pub fn memory() -> Self {
        PortalBuilder {
            dir: None,
            keys: None,
            sealer: None,
            blobs: None,
            cache_bytes: 16 << 20,
            inline_max: crate::blob::encrypted::DEFAULT_INLINE_MAX,
            accounts: Default::default(),
            store: Default::default(),
        }
    }
    /// Encrypts everything at rest under the master key from `provider`: records are sealed by the
    /// firm's key hierarchy and document contents go to the encrypted blob store in `dir/blobs`.
    /// A wrong or missing master key fails [`PortalBuilder::open`] with [`Error::Key`].
    pub fn key_provider(mut self, provider: Arc<dyn crate::crypto::KeyProvider>) -> Self {
        self.keys = Some(provider);
        self
    }
    /// Uses this record sealer (default: none, records in the clear).
    pub fn sealer(mut self, s: Arc<dyn Sealer>) -> Self {
        self.sealer = Some(s);
        self
    }
    /// Uses this blob store (default: in memory).
    pub fn blob_store(mut self, b: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(b);
        self
    }
    /// redb page cache size in bytes (default 16 MiB, as `[limits] cache_mib` of the server).
    pub fn cache_bytes(mut self, n: usize) -> Self {
        self.cache_bytes = n;
        self
    }
    /// When acknowledged writes reach the disk (default [`store::Durability::Immediate`]: each
    /// operation is fsynced before it is acknowledged). With [`store::Durability::Batched`],
    /// operations are acknowledged once committed in memory and fsynced in groups at most
    /// `flush_interval` later: a crash of the machine can lose the operations (and their audit
    /// entries) of that last interval, never consistency. See [`store::Durability`] for the exact
    /// guarantee. A blob store passed to [`PortalBuilder::start_with`] must be opened with
    /// [`PortalBuilder::deferred_blob_syncs`] as its [`crate::blob::encrypted::BlobOptions::deferred_sync`].
    pub fn durability(mut self, d: store::Durability) -> Self {
        self.store.durability = d;
        self
    }
    /// Documents of up to `bytes` (at most 64 KiB) are kept, sealed, in the database instead of a
    /// blob file each (default 16 KiB; 0: never). See
    /// [`crate::blob::encrypted::BlobOptions::inline_max`].
    pub fn inline_max(mut self, bytes: usize) -> Self {
        self.inline_max = bytes;
        self
    }
    /// The options of the encrypted blob store for this portal (its durability's sync queue, its
    /// inline limit); a host opening the store itself for [`PortalBuilder::start_with`] uses
    /// these.
    pub fn blob_options(&self) -> crate::blob::encrypted::BlobOptions {
        crate::blob::encrypted::BlobOptions {
            deferred_sync: self.deferred_blob_syncs(),
            inline_max: self.inline_max,
            ..Default::default()
        }
    }
    /// The queue an encrypted blob store opened by the host must defer its syncs to (batched
    /// durability); `None` with immediate durability (the blob store syncs each upload).
    pub fn deferred_blob_syncs(&self) -> Option<store::SyncQueue> {
        self.store
            .durability
            .is_batched()
            .then(|| self.store.syncs.clone())
    }
    /// Opens the portal.
    pub async fn open(self) -> Result<Portal> {
        let dir = self.dir.clone();
        let cache = self.cache_bytes;
        let db = tokio::task::spawn_blocking(move || -> Result<store::DbCell> {
            match dir {
                Some(d) => {
                    std::fs::create_dir_all(&d)?;
                    store::DbCell::open_file(&d.join("portal.redb"), cache)
                }
                None => Ok(store::memory_database()?.into()),
            }
        })
        .await??;
        let encrypted = self.keys.is_some() || self.sealer.is_some();
        let blob_opts = self.blob_options();
        let (mut sealer, mut blobs) = (self.sealer, self.blobs);
        if let Some(provider) = self.keys {
            let d = db.clone();
            let blob_dir = self.dir.as_ref().map(|d| d.join("blobs"));
            let (keys, store) = tokio::task::spawn_blocking(move || -> Result<_> {
                let keys = crate::crypto::Keyring::open(d, provider.as_ref())?;
                let store: Option<Arc<dyn BlobStore>> = match blob_dir {
                    Some(bd) => Some(Arc::new(
                        crate::blob::encrypted::EncryptedBlobStore::open_with(
                            bd,
                            keys.clone(),
                            blob_opts,
                        )?,
                    )),
                    None => None,
                };
                Ok((keys, store))
            })
            .await??;
            sealer = Some(Arc::new(keys.sealer()));
            if blobs.is_none() {
                blobs = store;
            }
        }
        let sealer = sealer.unwrap_or_else(|| Arc::new(PlainSealer));
        let blobs = blobs.unwrap_or_else(|| Arc::new(MemBlobStore::default()));
        Portal::start_with(
            db,
            sealer,
            blobs,
            self.dir,
            self.accounts,
            encrypted,
            self.store,
        )
        .await
    }

    /// Starts the portal over an already open database with this builder's account settings
    /// (mailer, base URL, throttle...), for hosts that open the database and keys themselves
    /// (the `sdx` server). The sealer and blob store given here are used (the builder's are
    /// ignored); the portal counts as encrypted at rest (no default mail outbox).
    pub async fn start_with(
        self,
        db: impl Into<store::DbCell>,
        sealer: Arc<dyn Sealer>,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Portal> {
        Portal::start_with(
            db.into(),
            sealer,
            blobs,
            self.dir,
            self.accounts,
            true,
            self.store,
        )
        .await
    }
}

impl Portal {
    /// Opens (or creates) the portal whose database is `dir/portal.redb`, with default parts. Use
    /// [`PortalBuilder`] to choose the sealer and the blob store.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Portal> {
        PortalBuilder::new(dir).open().await
    }

    /// A throw-away portal in memory (tests, examples, fuzzing).
    pub async fn in_memory() -> Result<Portal> {
        PortalBuilder::memory().open().await
    }

    /// Starts a portal over an already open database (default account settings; as the
    /// sealer may encrypt, an on-disk portal started this way gets no default mail outbox).
    pub async fn start(
        db: impl Into<store::DbCell>,
        sealer: Arc<dyn Sealer>,
        blobs: Arc<dyn BlobStore>,
        data_dir: Option<PathBuf>,
    ) -> Result<Portal> {
        Portal::start_with(
            db.into(),
            sealer,
            blobs,
            data_dir,
            Default::default(),
            true,
            Default::default(),
        )
        .await
    }

    async fn start_with(
        db: store::DbCell,
        sealer: Arc<dyn Sealer>,
        blobs: Arc<dyn BlobStore>,
        data_dir: Option<PathBuf>,
        accounts: credentials::AccountSetup,
        encrypted: bool,
        store_opts: store::StoreOptions,
    ) -> Result<Portal> {
        let accounts = accounts.build(data_dir.as_deref(), encrypted);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let epoch = Arc::new(AtomicU64::new(1));
        let ev = events.clone();
        let ep = epoch.clone();
        let hook: store::CommitHook = Arc::new(move |evs, changed| {
            if changed {
                ep.fetch_add(1, Ordering::SeqCst);
            }
            for e in evs {
                let _ = ev.send(e);
            }
        });
        let store =
            tokio::task::spawn_blocking(move || Store::start_with(db, sealer, hook, store_opts))
                .await??;
        let portal = Portal {
            inner: Arc::new(Inner {
                store,
                blobs,
                events,
                epoch,
                data_dir,
                accounts,
            }),
        };
        portal.collect_orphans().await?;
        Ok(portal)
    }

    /// The data directory, for on-disk portals.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    /// The store (crate-internal services and front-end plumbing such as the lock manager).
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Returns once every operation acknowledged so far is on disk (fsynced). Nothing to wait
    /// for with immediate durability; with batched durability, call it before a clean shutdown
    /// (the store also flushes when its last handle is dropped, but a process that exits right
    /// after may not give it the time).
    pub async fn sync(&self) -> Result<()> {
        self.inner.store.sync().await
    }

    /// Subscribes to portal events. Events arrive after the change is durable.
    pub fn subscribe(&self) -> broadcast::Receiver<PortalEvent> {
        self.inner.events.subscribe()
    }

    /// The principal's tree, as both front ends serve it.
    pub fn tree(&self, actor: Actor) -> Tree {
        Tree::new(self.clone(), actor)
    }

    /// A counter bumped whenever access rights change; open handles re-check when it moves.
    pub fn access_epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// Appends an audit entry on its own (reads, authentication): returns once it is durable.
    pub(crate) async fn audit(&self, e: NewEntry) -> Result<()> {
        self.inner
            .store
            .write(move |ctx| audit::append(ctx, e.clone()).map(|_| ()))
            .await
    }

    /// Runs a staff-only admin job: checks staff rights (auditing a refusal), runs `f` in a write
    /// job, audits its outcome in the same commit.
    pub(crate) async fn admin<R, F>(
        &self,
        actor: &Actor,
        action: &'static str,
        matter: Option<MatterId>,
        object: String,
        mut f: F,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut store::WriteCtx<'_>) -> Result<R> + Send + 'static,
    {
        let actor = actor.clone();

        self.inner
            .store
            .write(move |ctx| {
                let res = crate::policy::require_staff(actor.principal, action)
                    .and_then(|_| {
                        crate::policy::check_principal(&ctx.db(), actor.principal).map(|_| ())
                    })
                    .and_then(|_| f(ctx));
                let res = match res {
                    // Storage failures abort the batch (nothing half-done is committed).
                    Err(e @ (Error::Storage(_) | Error::Io(_))) => return Err(e),
                    other => other,
                };
                audit::append(
                    ctx,
                    NewEntry {
                        actor: actor.clone(),
                        matter,
                        document: None,
                        object: object.clone(),
                        action: AuditAction::Admin(action.to_string()),
                        outcome: Outcome::of(&res),
                    },
                )?;
                Ok(res)
            })
            .await?
    }

    /// Staff-only read: checks rights, runs `f` in a read transaction, audits the outcome.
    pub(crate) async fn admin_read<R, F>(
        &self,
        actor: &Actor,
        action: &'static str,
        matter: Option<MatterId>,
        object: String,
        f: F,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&store::Db<'_, redb::ReadTransaction>) -> Result<R> + Send + 'static,
    {
        let p = actor.principal;
        let res = self
            .inner
            .store
            .read(move |db| {
                crate::policy::require_staff(p, action)?;
                crate::policy::check_principal(db, p)?;
                f(db)
            })
            .await;
        self.audit(NewEntry {
            actor: actor.clone(),
            matter,
            document: None,
            object,
            action: AuditAction::Admin(action.to_string()),
            outcome: Outcome::of(&res),
        })
        .await?;
        res
    }

    async fn collect_orphans(&self) -> Result<()> {
        let live = self
            .inner
            .store
            .read(|db| {
                let mut live = std::collections::HashSet::new();
                let all: Vec<(Vec<u8>, crate::store::records::VersionRec)> = scan_all_versions(db)?;
                for (_, v) in all {
                    live.insert(v.blob.id);
                }
                Ok(live)
            })
            .await?;
        let removed = self.inner.blobs.retain(&live).await?;
        if removed > 0 {
            tracing::info!(removed, "removed blobs left over from interrupted uploads");
        }
        Ok(())
    }
}

/// Every version record of every matter, unsealed with its matter's key.
fn scan_all_versions<T: crate::store::Tx + ?Sized>(
    db: &crate::store::Db<'_, T>,
) -> Result<Vec<(Vec<u8>, crate::store::records::VersionRec)>> {
    use crate::crypto::Scope;
    use crate::store::tables::{self, VERSIONS};
    let mut out = Vec::new();
    for (k, sealed) in db.tx.scan_raw(VERSIONS, &[], usize::MAX)? {
        let Some(m) = tables::id_at(&k, 0) else {
            continue;
        };
        let plain = db.sealer.open(
            Scope::Matter(MatterId(m)),
            &store::aad(VERSIONS, &k),
            &sealed,
        )?;
        let v: crate::store::records::VersionRec = postcard::from_bytes(&plain)
            .map_err(|e| Error::Integrity(format!("a version record is malformed: {e}")))?;
        out.push((k, v));
    }
    Ok(out)
}

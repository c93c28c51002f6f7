//! The firm's key hierarchy and the encrypting [`Sealer`].
//!
//! ```text
//! master key (host: KeyProvider)           never stored
//!  ├─ wraps firm key        crypto_meta["firm"]       → record / index / audit subkeys (HKDF)
//!  └─ wraps matter key m    crypto_matter_keys[m]     → record / index / blob-wrap subkeys (HKDF)
//!                                                        └─ wraps each blob's data key (BlobRef)
//! ```
//!
//! - **Open:** [`Keyring::open`] creates the firm key on first use. Later opens check the master key
//!   against a stored key-check value (an HMAC under a key derived from the master), so a wrong key
//!   fails at once with [`Error::Key`]; a missing one fails in the provider with [`Error::Key`].
//! - **Rotation:** [`Keyring::rotate`] re-wraps the firm key and every matter key under a new master
//!   key in one write transaction. Blob contents and sealed records are untouched.
//! - **Crypto-shredding:** [`Sealer::destroy_matter_key`] deletes the matter's wrapped key, after
//!   which its records and blobs cannot be decrypted. A backup taken *before* the purge still holds
//!   that key wrapped by the master key, and redb may keep the freed page's old bytes inside the
//!   database file for a while; to make the matter unrecoverable from those copies too, rotate the
//!   master key after purging and destroy the old master key.
//! - **Zeroization:** all keys are held as [`SecretKey`]s (wiped on drop); ring key schedules are
//!   built per operation.
//!
//! Records are sealed as `[1][16-byte random salt][ciphertext][16-byte tag]` with AES-256-GCM under
//! a per-record key `HMAC(record key, salt)` (so there is no per-key usage limit on random nonces).
//! The AAD binds the scope (firm or matter id) and the caller's `aad` (table and key).

use super::keys::{Cipher, SecretKey, TAG_LEN, fill_random, unwrap, wrap};
use super::provider::{KeyProvider, MasterKey};
use super::{Scope, Sealer};
use crate::model::MatterId;
use crate::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use ring::aead::{Aad, Nonce};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Firm-level key records: `format`, `kcv` (master key check value), `firm` (wrapped firm key).
pub const CRYPTO_META: TableDefinition<&str, &[u8]> = TableDefinition::new("crypto_meta");
/// Matter keys: matter id → matter key wrapped by the master key.
pub const CRYPTO_MATTER_KEYS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("crypto_matter_keys");

const FORMAT: u8 = 1;
const WRAP_INFO: &[u8] = b"sdx master wrap v1";
const KCV_INFO: &[u8] = b"sdx master check v1";
const KCV_MSG: &[u8] = b"sdx-portal master key check";
const FIRM_AAD: &[u8] = b"sdx firm key v1";
const REC_V1: u8 = 1;
const SALT_LEN: usize = 16;
/// Bytes a sealed record adds to its plaintext.
pub const RECORD_OVERHEAD: usize = 1 + SALT_LEN + TAG_LEN;
/// Cached unwrapped matter keys beyond which the cache is emptied (memory hygiene).
const MATTER_CACHE_MAX: usize = 10_000;

fn matter_aad(m: MatterId) -> Vec<u8> {
    let mut a = b"sdx matter key v1".to_vec();
    a.extend_from_slice(&m.0.to_be_bytes());
    a
}

struct Master {
    wrap: SecretKey,
    source: String,
}

struct FirmKeys {
    record: SecretKey,
    index: SecretKey,
    audit: SecretKey,
}

/// One matter's unwrapped subkeys.
pub(crate) struct MatterKeys {
    record: SecretKey,
    index: SecretKey,
    /// Wraps the data keys of the matter's blobs.
    pub(crate) blob: SecretKey,
}

impl MatterKeys {
    fn from_root(root: &SecretKey) -> Self {
        MatterKeys {
            record: root.derive(b"sdx matter record v1"),
            index: root.derive(b"sdx matter index v1"),
            blob: root.derive(b"sdx matter blob v1"),
        }
    }
}

struct Inner {
    /// The database handle (reopened by the store after a storage failure).
    db: crate::store::DbCell,
    master: RwLock<Master>,
    firm: FirmKeys,
    matters: Mutex<HashMap<MatterId, Arc<MatterKeys>>>,
    /// Index key used when a matter's key is unavailable: random per process, so such lookups
    /// match nothing that was ever stored.
    dead: SecretKey,
}

/// The firm's keys: opens (or creates) the key hierarchy in the database and seals records.
///
/// Cheap to clone (an `Arc`). Implements [`Sealer`]; [`Keyring::sealer`] returns a clone for
/// `Arc<dyn Sealer>` call sites.
///
/// ```
/// # fn main() -> sdx_portal::Result<()> {
/// use std::sync::Arc;
/// use sdx_portal::crypto::{Keyring, MasterKey, Scope, Sealer};
/// let dir = tempfile::tempdir()?;
/// let db = Arc::new(redb::Database::create(dir.path().join("portal.redb"))?);
/// let master = MasterKey::random()?;
/// let keys = Keyring::open(db.clone(), &master)?;
/// let sealed = keys.seal(Scope::Global, b"contacts/1", b"Jane Doe")?;
/// assert_eq!(keys.open(Scope::Global, b"contacts/1", &sealed)?, b"Jane Doe");
/// // Another master key is refused at open.
/// assert!(Keyring::open(db, &MasterKey::random()?).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.read_master().source)
            .finish_non_exhaustive()
    }
}

fn kcv_ok(master: &MasterKey, stored: &[u8]) -> bool {
    let k = master.secret().derive(KCV_INFO);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_bytes());
    ring::hmac::verify(&key, KCV_MSG, stored).is_ok()
}

fn kcv(master: &MasterKey) -> [u8; 32] {
    master.secret().derive(KCV_INFO).hmac(KCV_MSG)
}

impl Keyring {
    /// Opens the firm's keys in `db`, creating them on first use, with the master key from
    /// `provider`. Blocking (reads, and on first use writes, the database): call it at startup or
    /// inside `spawn_blocking`.
    ///
    /// Errors: [`Error::Key`] if the provider has no key or the key is not the one this database
    /// was set up with; [`Error::Integrity`] if the stored key records are damaged.
    pub fn open(
        db: impl Into<crate::store::DbCell>,
        provider: &dyn KeyProvider,
    ) -> Result<Keyring> {
        let cell: crate::store::DbCell = db.into();
        let db = cell.get()?;
        let master = provider.master_key()?;
        let source = provider.describe();
        let wrap_key = master.secret().derive(WRAP_INFO);
        let firm_root = match read_firm(&db)? {
            Some(stored) => open_firm(&master, &wrap_key, &stored, &source)?,
            None => {
                let txn = db.begin_write()?;
                let root = {
                    let mut meta = txn.open_table(CRYPTO_META)?;
                    txn.open_table(CRYPTO_MATTER_KEYS)?;
                    let existing = stored_from(&meta)?;
                    match existing {
                        // Another process/thread created the keys meanwhile.
                        Some(stored) => open_firm(&master, &wrap_key, &stored, &source)?,
                        None => {
                            let root = SecretKey::random()?;
                            meta.insert("format", [FORMAT].as_slice())?;
                            meta.insert("kcv", kcv(&master).as_slice())?;
                            meta.insert("firm", wrap(&wrap_key, FIRM_AAD, &root)?.as_slice())?;
                            tracing::info!(master = %source, "created the firm's key hierarchy");
                            root
                        }
                    }
                };
                txn.commit()?;
                root
            }
        };
        let firm = FirmKeys {
            record: firm_root.derive(b"sdx firm record v1"),
            index: firm_root.derive(b"sdx firm index v1"),
            audit: firm_root.derive(b"sdx firm audit v1"),
        };
        drop(firm_root);
        drop(db);
        Ok(Keyring {
            inner: Arc::new(Inner {
                db: cell,
                master: RwLock::new(Master {
                    wrap: wrap_key,
                    source,
                }),
                firm,
                matters: Mutex::new(HashMap::new()),
                dead: SecretKey::random()?,
            }),
        })
    }

    /// A clone to hand out as `Arc<dyn Sealer>`.
    pub fn sealer(&self) -> Keyring {
        self.clone()
    }

    /// The database the keys live in.
    pub fn database(&self) -> &crate::store::DbCell {
        &self.inner.db
    }

    /// Where the current master key came from.
    pub fn master_source(&self) -> String {
        self.read_master().source.clone()
    }

    /// Re-wraps the firm key and every matter key under the master key from `new`, in one write
    /// transaction; nothing else is re-encrypted. Blocking. After it returns, only the new master
    /// key opens the database.
    pub fn rotate(&self, new: &dyn KeyProvider) -> Result<()> {
        let new_master = new.master_key()?;
        let new_wrap = new_master.secret().derive(WRAP_INFO);
        let db = &self.inner.db;
        let txn = db.begin_write()?;
        let mut rewrapped = 0usize;
        {
            // We hold the only write transaction, and the wrap key only changes under one, so it
            // is stable while we re-wrap.
            let old_wrap = self.read_master().wrap.clone();
            let mut meta = txn.open_table(CRYPTO_META)?;
            let stored = stored_from(&meta)?.ok_or_else(|| {
                Error::Integrity("the firm key record disappeared from the database".into())
            })?;
            let root = unwrap(&old_wrap, FIRM_AAD, &stored.firm, "firm key")?;
            meta.insert("firm", wrap(&new_wrap, FIRM_AAD, &root)?.as_slice())?;
            meta.insert("kcv", kcv(&new_master).as_slice())?;
            let mut mk = txn.open_table(CRYPTO_MATTER_KEYS)?;
            let mut all = Vec::new();
            for entry in mk.range::<u64>(..)? {
                let (k, v) = entry?;
                all.push((k.value(), v.value().to_vec()));
            }
            for (m, w) in all {
                let aad = matter_aad(MatterId(m));
                let root = unwrap(&old_wrap, &aad, &w, &format!("key of matter {m}"))?;
                mk.insert(m, wrap(&new_wrap, &aad, &root)?.as_slice())?;
                rewrapped += 1;
            }
        }
        // Hold the master lock across commit + swap: no reader may pair the new records with the
        // old wrap key or vice versa.
        let mut guard = self.inner.master.write().unwrap_or_else(|p| p.into_inner());
        // A durable commit: the store's pending batched commits' blob files go to disk first.
        self.inner.db.sync_pending_files()?;
        txn.commit()?;
        guard.wrap = new_wrap;
        guard.source = new.describe();
        drop(guard);
        tracing::info!(matters = rewrapped, master = %new.describe(), "rotated the master key");
        Ok(())
    }

    /// Whether `matter` has a key in the database (false after purge).
    pub fn has_matter_key(&self, matter: MatterId) -> Result<bool> {
        let txn = self.inner.db.begin_read()?;
        let t = match txn.open_table(CRYPTO_MATTER_KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(matter.0)?.is_some())
    }

    fn read_master(&self) -> std::sync::RwLockReadGuard<'_, Master> {
        self.inner.master.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<MatterId, Arc<MatterKeys>>> {
        self.inner.matters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The unwrapped keys of `matter` if they are cached (never touches the database, so it may
    /// run on an async thread).
    pub(crate) fn cached_matter_keys(&self, matter: MatterId) -> Option<Arc<MatterKeys>> {
        self.cache().get(&matter).cloned()
    }

    /// The unwrapped keys of `matter` (cached; loaded with a read transaction on a miss).
    pub(crate) fn matter_keys(&self, matter: MatterId) -> Result<Arc<MatterKeys>> {
        if let Some(k) = self.cache().get(&matter) {
            return Ok(k.clone());
        }
        // Hold the master read lock across the snapshot and the unwrap (see `rotate`).
        let master = self.read_master();
        let txn = self.inner.db.begin_read()?;
        let missing = || {
            Error::Key(format!(
                "matter {matter} has no key: it was purged (crypto-shredded) or never created"
            ))
        };
        let t = match txn.open_table(CRYPTO_MATTER_KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        let wrapped = t.get(matter.0)?.ok_or_else(missing)?;
        let root = unwrap(
            &master.wrap,
            &matter_aad(matter),
            wrapped.value(),
            &format!("key of matter {matter}"),
        )?;
        drop(master);
        let keys = Arc::new(MatterKeys::from_root(&root));
        let mut c = self.cache();
        if c.len() >= MATTER_CACHE_MAX {
            c.clear();
        }
        c.insert(matter, keys.clone());
        Ok(keys)
    }

    fn record_key(&self, scope: Scope) -> Result<RecordKey> {
        match scope {
            Scope::Global => Ok(RecordKey::Firm),
            Scope::Matter(m) => Ok(RecordKey::Matter(self.matter_keys(m)?)),
        }
    }
}

enum RecordKey {
    Firm,
    Matter(Arc<MatterKeys>),
}

struct StoredFirm {
    kcv: Vec<u8>,
    firm: Vec<u8>,
}

fn stored_from(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<StoredFirm>> {
    let format = meta.get("format")?.map(|v| v.value().to_vec());
    let kcv = meta.get("kcv")?.map(|v| v.value().to_vec());
    let firm = meta.get("firm")?.map(|v| v.value().to_vec());
    match (format, kcv, firm) {
        (None, None, None) => Ok(None),
        (Some(f), Some(kcv), Some(firm)) => {
            match f.as_slice() {
                [FORMAT] => {}
                [v] if *v > FORMAT => {
                    return Err(Error::Key(format!(
                        "the key records have format {v}, newer than this build of sdx-portal understands ({FORMAT}): upgrade sdx-portal"
                    )));
                }
                _ => {
                    return Err(Error::Integrity(
                        "the key format record is malformed".into(),
                    ));
                }
            }
            Ok(Some(StoredFirm { kcv, firm }))
        }
        _ => Err(Error::Integrity(
            "the firm's key records are incomplete (damaged database?)".into(),
        )),
    }
}

fn read_firm(db: &redb::Database) -> Result<Option<StoredFirm>> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(CRYPTO_META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    stored_from(&meta)
}

fn open_firm(
    master: &MasterKey,
    wrap_key: &SecretKey,
    stored: &StoredFirm,
    source: &str,
) -> Result<SecretKey> {
    if !kcv_ok(master, &stored.kcv) {
        return Err(Error::Key(format!(
            "wrong master key: the key from {source} is not the one this data dir was set up with"
        )));
    }
    unwrap(wrap_key, FIRM_AAD, &stored.firm, "firm key")
}

fn record_aad(scope: Scope, aad: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(10 + aad.len());
    a.push(REC_V1);
    match scope {
        Scope::Global => {
            a.push(0);
            a.extend_from_slice(&0u64.to_be_bytes());
        }
        Scope::Matter(m) => {
            a.push(1);
            a.extend_from_slice(&m.0.to_be_bytes());
        }
    }
    a.extend_from_slice(aad);
    a
}

impl Keyring {
    fn with_record_key<R>(&self, scope: Scope, f: impl FnOnce(&SecretKey) -> R) -> Result<R> {
        Ok(match self.record_key(scope)? {
            RecordKey::Firm => f(&self.inner.firm.record),
            RecordKey::Matter(k) => f(&k.record),
        })
    }
}

fn message_key(record_key: &SecretKey, salt: &[u8]) -> SecretKey {
    SecretKey::from_bytes(record_key.hmac_parts(&[b"sdx record message key", salt]))
}

impl Sealer for Keyring {
    fn seal(&self, scope: Scope, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        let mk = self.with_record_key(scope, |k| message_key(k, &salt))?;
        let mut out = Vec::with_capacity(plain.len() + RECORD_OVERHEAD);
        out.push(REC_V1);
        out.extend_from_slice(&salt);
        out.extend_from_slice(plain);
        let tag = mk
            .aead_key(Cipher::Aes256Gcm)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(record_aad(scope, aad)),
                &mut out[1 + SALT_LEN..],
            )
            .map_err(|_| Error::Key("sealing a record failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(&self, scope: Scope, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < RECORD_OVERHEAD || sealed.first() != Some(&REC_V1) {
            return Err(Error::Integrity(format!(
                "a sealed record is malformed ({} bytes)",
                sealed.len()
            )));
        }
        let salt = &sealed[1..1 + SALT_LEN];
        let mk = self.with_record_key(scope, |k| message_key(k, salt))?;
        let mut buf = sealed[1 + SALT_LEN..].to_vec();
        let n = mk
            .aead_key(Cipher::Aes256Gcm)?
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(record_aad(scope, aad)),
                &mut buf,
            )
            .map_err(|_| {
                Error::Integrity(
                    "a sealed record failed its integrity check (tampered, or moved to another record)"
                        .into(),
                )
            })?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    fn index_key(&self, scope: Scope, data: &[u8]) -> [u8; 32] {
        match scope {
            Scope::Global => self.inner.firm.index.hmac(data),
            Scope::Matter(m) => match self.matter_keys(m) {
                Ok(k) => k.index.hmac(data),
                Err(e) => {
                    tracing::warn!(matter = %m, error = %e, "index key without a matter key: the lookup will match nothing");
                    self.inner.dead.hmac(data)
                }
            },
        }
    }

    fn chain_mac(&self, data: &[u8]) -> [u8; 32] {
        self.inner.firm.audit.hmac(data)
    }

    fn create_matter_key(&self, txn: &redb::WriteTransaction, matter: MatterId) -> Result<()> {
        let master = self.read_master();
        let mut t = txn.open_table(CRYPTO_MATTER_KEYS)?;
        if t.get(matter.0)?.is_some() {
            return Err(Error::Conflict(format!(
                "matter {matter} already has a key"
            )));
        }
        let root = SecretKey::random()?;
        let wrapped = wrap(&master.wrap, &matter_aad(matter), &root)?;
        drop(master);
        t.insert(matter.0, wrapped.as_slice())?;
        // Cache now: records of the new matter are sealed in this same (uncommitted) transaction,
        // which a read transaction could not see.
        self.cache()
            .insert(matter, Arc::new(MatterKeys::from_root(&root)));
        Ok(())
    }

    fn destroy_matter_key(&self, txn: &redb::WriteTransaction, matter: MatterId) -> Result<()> {
        let mut t = txn.open_table(CRYPTO_MATTER_KEYS)?;
        t.remove(matter.0)?;
        self.cache().remove(&matter);
        tracing::info!(matter = %matter, "destroyed the matter key (crypto-shredded)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (tempfile::TempDir, Arc<redb::Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        (dir, Arc::new(db))
    }

    fn new_matter(k: &Keyring, m: MatterId) {
        let txn = k.database().begin_write().unwrap();
        k.create_matter_key(&txn, m).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn seal_open_bindings() {
        let (_d, db) = temp_db();
        let k = Keyring::open(db, &MasterKey::random().unwrap()).unwrap();
        let m1 = MatterId(1);
        let m2 = MatterId(2);
        new_matter(&k, m1);
        new_matter(&k, m2);
        let s = k.seal(Scope::Matter(m1), b"t/1", b"secret name").unwrap();
        assert_eq!(s.len(), 11 + RECORD_OVERHEAD);
        assert_eq!(
            k.open(Scope::Matter(m1), b"t/1", &s).unwrap(),
            b"secret name"
        );
        // Sealing twice gives different bytes (random salt).
        assert_ne!(
            s,
            k.seal(Scope::Matter(m1), b"t/1", b"secret name").unwrap()
        );
        for (scope, aad) in [
            (Scope::Matter(m1), &b"t/2"[..]),
            (Scope::Matter(m2), &b"t/1"[..]),
            (Scope::Global, &b"t/1"[..]),
        ] {
            assert!(matches!(k.open(scope, aad, &s), Err(Error::Integrity(_))));
        }
        for i in 0..s.len() {
            let mut bad = s.clone();
            bad[i] ^= 0x40;
            assert!(k.open(Scope::Matter(m1), b"t/1", &bad).is_err(), "byte {i}");
        }
        assert!(
            k.open(Scope::Matter(m1), b"t/1", &s[..s.len() - 1])
                .is_err()
        );
        assert!(k.open(Scope::Matter(m1), b"t/1", &[]).is_err());
        // Empty plaintext works.
        let e = k.seal(Scope::Global, b"", b"").unwrap();
        assert_eq!(k.open(Scope::Global, b"", &e).unwrap(), b"");
    }

    #[test]
    fn index_keys_are_keyed_and_scoped() {
        let (_d, db) = temp_db();
        let k = Keyring::open(db, &MasterKey::random().unwrap()).unwrap();
        new_matter(&k, MatterId(1));
        new_matter(&k, MatterId(2));
        let a = k.index_key(Scope::Matter(MatterId(1)), b"report.pdf");
        assert_eq!(a, k.index_key(Scope::Matter(MatterId(1)), b"report.pdf"));
        assert_ne!(a, k.index_key(Scope::Matter(MatterId(2)), b"report.pdf"));
        assert_ne!(a, k.index_key(Scope::Global, b"report.pdf"));
        assert_ne!(
            a,
            crate::crypto::PlainSealer.index_key(Scope::Matter(MatterId(1)), b"report.pdf")
        );
        // Another firm (other keys) gets other index keys and chain MACs.
        let (_d2, db2) = temp_db();
        let k2 = Keyring::open(db2, &MasterKey::random().unwrap()).unwrap();
        assert_ne!(k.chain_mac(b"x"), k2.chain_mac(b"x"));
        assert_ne!(
            k.index_key(Scope::Global, b"x"),
            k2.index_key(Scope::Global, b"x")
        );
    }

    #[test]
    fn reopen_wrong_key_rotation_and_shredding() {
        let (_d, db) = temp_db();
        let m1 = MasterKey::random().unwrap();
        let k = Keyring::open(db.clone(), &m1).unwrap();
        new_matter(&k, MatterId(7));
        let sealed_g = k.seal(Scope::Global, b"g", b"firm record").unwrap();
        let sealed_m = k
            .seal(Scope::Matter(MatterId(7)), b"m", b"matter record")
            .unwrap();
        let mac = k.chain_mac(b"entry");
        let idx = k.index_key(Scope::Matter(MatterId(7)), b"n");
        drop(k);

        // Same key: everything opens, keys derive identically.
        let k = Keyring::open(db.clone(), &m1).unwrap();
        assert_eq!(
            k.open(Scope::Global, b"g", &sealed_g).unwrap(),
            b"firm record"
        );
        assert_eq!(k.chain_mac(b"entry"), mac);
        assert_eq!(k.index_key(Scope::Matter(MatterId(7)), b"n"), idx);

        // Wrong key: refused at open with a clear message.
        let e = Keyring::open(db.clone(), &MasterKey::random().unwrap()).unwrap_err();
        assert!(matches!(e, Error::Key(_)));
        assert!(e.to_string().contains("wrong master key"), "{e}");

        // Rotation: new key opens everything; old key no longer does.
        let m2 = MasterKey::random().unwrap();
        k.rotate(&m2).unwrap();
        new_matter(&k, MatterId(8)); // wrapped under the new key
        drop(k);
        assert!(Keyring::open(db.clone(), &m1).is_err());
        let k = Keyring::open(db.clone(), &m2).unwrap();
        assert_eq!(
            k.open(Scope::Matter(MatterId(7)), b"m", &sealed_m).unwrap(),
            b"matter record"
        );
        assert_eq!(k.chain_mac(b"entry"), mac);
        assert!(k.matter_keys(MatterId(8)).is_ok());

        // Shredding: the matter's records no longer open, even after reopening.
        let txn = db.begin_write().unwrap();
        k.destroy_matter_key(&txn, MatterId(7)).unwrap();
        txn.commit().unwrap();
        assert!(!k.has_matter_key(MatterId(7)).unwrap());
        let e = k
            .open(Scope::Matter(MatterId(7)), b"m", &sealed_m)
            .unwrap_err();
        assert!(matches!(e, Error::Key(_)), "{e}");
        drop(k);
        let k = Keyring::open(db, &m2).unwrap();
        assert!(k.open(Scope::Matter(MatterId(7)), b"m", &sealed_m).is_err());
        assert!(k.has_matter_key(MatterId(8)).unwrap());
    }

    #[test]
    fn create_twice_is_a_conflict_and_abort_leaves_nothing() {
        let (_d, db) = temp_db();
        let k = Keyring::open(db.clone(), &MasterKey::random().unwrap()).unwrap();
        new_matter(&k, MatterId(1));
        let txn = db.begin_write().unwrap();
        assert!(matches!(
            k.create_matter_key(&txn, MatterId(1)),
            Err(Error::Conflict(_))
        ));
        drop(txn);
        let txn = db.begin_write().unwrap();
        k.create_matter_key(&txn, MatterId(2)).unwrap();
        txn.abort().unwrap();
        assert!(!k.has_matter_key(MatterId(2)).unwrap());
    }
}

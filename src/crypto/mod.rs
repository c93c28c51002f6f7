//! Protecting metadata at rest: the record-sealer seam.
//!
//! Every record the store writes (names, message bodies, contact details, audit entries) passes
//! through a [`Sealer`] before it reaches the database, and index keys derived from names go
//! through [`Sealer::index_key`] (a keyed hash), so a copied data dir reveals nothing but ids,
//! sizes, timestamps and permission bits.
//!
//! [`PlainSealer`] stores records as they are: for tests and in-memory portals only.
//! [`Keyring`] is the real sealer: the firm's key hierarchy (master key from a [`KeyProvider`] →
//! firm key and per-matter keys → blob data keys), see [`keyring`].

pub mod keyring;
pub mod keys;
pub mod provider;

pub use keyring::Keyring;
pub use keys::{Cipher, SecretKey};
pub use provider::{EnvKey, KeyFile, KeyProvider, MasterKey};

use crate::Result;
use crate::model::MatterId;

/// Which key protects a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Firm-wide records (contacts, logins, matter types, the audit trail).
    Global,
    /// Records that belong to one matter (folders, documents, messages): destroyed with the
    /// matter's key when the matter is purged.
    Matter(MatterId),
}

/// Seals records and derives index keys.
///
/// `aad` binds a sealed value to where it is stored (table and key), so a value moved to another
/// record fails to open.
pub trait Sealer: Send + Sync + 'static {
    /// Encrypts and authenticates `plain`.
    fn seal(&self, scope: Scope, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>>;
    /// Reverses [`Sealer::seal`]; tampering is an [`crate::Error::Integrity`].
    fn open(&self, scope: Scope, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>>;
    /// A keyed hash of `data` (already canonicalised by the caller) for use in index keys.
    fn index_key(&self, scope: Scope, data: &[u8]) -> [u8; 32];
    /// The MAC that chains audit entries: a tamperer without the key can't recompute the chain.
    fn chain_mac(&self, data: &[u8]) -> [u8; 32];
    /// Prepares the key of a new matter inside the write transaction that creates it.
    fn create_matter_key(&self, txn: &redb::WriteTransaction, matter: MatterId) -> Result<()>;
    /// Destroys a matter's key (crypto-shredding).
    fn destroy_matter_key(&self, txn: &redb::WriteTransaction, matter: MatterId) -> Result<()>;
}

/// No encryption: records stored as they are, SHA-256 for index keys and the audit chain.
#[derive(Clone, Debug, Default)]
pub struct PlainSealer;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Sealer for PlainSealer {
    fn seal(&self, _scope: Scope, _aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        Ok(plain.to_vec())
    }
    fn open(&self, _scope: Scope, _aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        Ok(sealed.to_vec())
    }
    fn index_key(&self, scope: Scope, data: &[u8]) -> [u8; 32] {
        let s = match scope {
            Scope::Global => [0u8; 8],
            Scope::Matter(m) => m.0.to_be_bytes(),
        };
        sha256(&[&s, data])
    }
    fn chain_mac(&self, data: &[u8]) -> [u8; 32] {
        sha256(&[data])
    }
    fn create_matter_key(&self, _txn: &redb::WriteTransaction, _matter: MatterId) -> Result<()> {
        Ok(())
    }
    fn destroy_matter_key(&self, _txn: &redb::WriteTransaction, _matter: MatterId) -> Result<()> {
        Ok(())
    }
}

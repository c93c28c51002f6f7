//! The SSH host key: an ed25519 key generated once and kept in an OpenSSH private key file.
//!
//! [`HostKey::load_or_generate`] reads the file if it exists and creates it otherwise. A new file is
//! written with mode 0600 to a temporary name in the same directory, synced, and then linked into
//! place, so a crash never leaves a half-written key and two processes starting at once agree on one
//! key (the loser of the race loads the winner's file). The fingerprint is therefore stable across
//! restarts, which is what SSH clients check against their `known_hosts`.

use super::SftpError;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The largest host key file accepted. An OpenSSH ed25519 private key is about 400 bytes.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// The comment stored in a generated key.
const KEY_COMMENT: &str = "sdx-portal host key";

/// The server's ed25519 host key.
#[derive(Clone)]
pub struct HostKey {
    key: PrivateKey,
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private half.
        f.debug_struct("HostKey")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl HostKey {
    /// Load the host key from `path`, or generate a new one there if the file does not exist.
    ///
    /// The disk work runs on tokio's blocking pool.
    pub async fn load_or_generate(path: impl Into<PathBuf>) -> Result<Self, SftpError> {
        let path = path.into();
        tokio::task::spawn_blocking(move || Self::load_or_generate_blocking(&path))
            .await
            .map_err(|e| SftpError::Task(format!("host key task: {e}")))?
    }

    /// Blocking version of [`HostKey::load_or_generate`], for start-up code outside a runtime.
    pub fn load_or_generate_blocking(path: &Path) -> Result<Self, SftpError> {
        match Self::load_blocking(path) {
            Err(SftpError::HostKeyIo { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Self::generate_into(path)
            }
            other => other,
        }
    }

    /// Load an existing host key file (blocking).
    ///
    /// The file must be an unencrypted OpenSSH ed25519 private key, a regular file of at most
    /// 16 KiB, and not readable or writable by group or others.
    pub fn load_blocking(path: &Path) -> Result<Self, SftpError> {
        let io_err = |source| SftpError::HostKeyIo {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: String| SftpError::HostKeyInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "permissions {mode:04o} are too open: the private key must be readable by its owner only (chmod 600)"
            )));
        }
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(invalid(format!(
                "{} bytes is too large for a host key (at most {MAX_KEY_FILE_LEN})",
                meta.len()
            )));
        }
        let mut text = zeroize::Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut text)
            .map_err(io_err)?;
        if text.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(invalid("the file grew while it was read".into()));
        }
        let key = PrivateKey::from_openssh(text.as_slice())
            .map_err(|e| invalid(format!("not an OpenSSH private key: {e}")))?;
        if key.is_encrypted() {
            return Err(invalid(
                "the key is passphrase-protected; a host key must be stored unencrypted".into(),
            ));
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(invalid(format!(
                "the key is {}, but the host key must be ed25519",
                key.algorithm()
            )));
        }
        Ok(HostKey { key })
    }

    /// A fresh ed25519 key that is not stored anywhere (tests, throw-away servers).
    pub fn generate_ephemeral() -> Result<Self, SftpError> {
        let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .map_err(|e| SftpError::HostKeyGeneration(e.to_string()))?;
        key.set_comment(KEY_COMMENT);
        Ok(HostKey { key })
    }

    fn generate_into(path: &Path) -> Result<Self, SftpError> {
        let new = Self::generate_ephemeral()?;
        let pem = new
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SftpError::HostKeyGeneration(e.to_string()))?;
        let io_err = |p: &Path, source| SftpError::HostKeyIo {
            path: p.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let file_name = path
            .file_name()
            .ok_or_else(|| SftpError::HostKeyInvalid {
                path: path.to_path_buf(),
                reason: "the path has no file name".into(),
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(
            ".{file_name}.tmp-{}-{}",
            std::process::id(),
            hex::encode(random_suffix())
        ));
        let write_tmp = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pem.as_bytes())?;
            f.sync_all()
        };
        if let Err(e) = write_tmp() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp, e));
        }
        // Link, don't rename: linking fails if another process created the key meanwhile, and
        // then that key wins, so concurrent starts agree on one fingerprint.
        let linked = fs::hard_link(&tmp, path);
        let result = match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // Filesystems without hard links: fall back to a rename (the file did not exist a
            // moment ago, so this can only clobber a key created in the last few microseconds).
            Err(_) => fs::rename(&tmp, path).map(|()| true),
        };
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(true) => {
                if let Ok(d) = File::open(&dir) {
                    let _ = d.sync_all();
                }
                tracing::info!(
                    path = %path.display(),
                    fingerprint = %new.fingerprint(),
                    "generated a new SSH host key"
                );
                Ok(new)
            }
            Ok(false) => Self::load_blocking(path),
            Err(e) => Err(io_err(path, e)),
        }
    }

    /// The key's SHA-256 fingerprint as OpenSSH prints it (`SHA256:` and unpadded base64).
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The public key in `authorized_keys` / `known_hosts` format (`ssh-ed25519 AAAA… comment`).
    pub fn public_key_openssh(&self) -> String {
        // Encoding an in-memory ed25519 key can't fail; fall back to the fingerprint just in case.
        self.key
            .public_key()
            .to_openssh()
            .unwrap_or_else(|_| self.fingerprint())
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The private key, for the SSH server's configuration.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }
}

fn random_suffix() -> [u8; 8] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // On failure the suffix stays zero; `create_new` still refuses to reuse an existing file.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_persisted_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("ssh_host_ed25519_key");
        let first = HostKey::load_or_generate_blocking(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = HostKey::load_or_generate_blocking(&path).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.public_key(), second.public_key());
        assert!(first.fingerprint().starts_with("SHA256:"));
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("ssh_host_ed25519_key")]
        );
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = HostKey::generate_ephemeral().unwrap();
        let b = HostKey::generate_ephemeral().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(a.public_key_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }

    #[test]
    fn open_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        HostKey::load_or_generate_blocking(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = HostKey::load_or_generate_blocking(&path).unwrap_err();
        assert!(
            matches!(&err, SftpError::HostKeyInvalid { reason, .. } if reason.contains("too open")),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_oversized_files_are_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64\n")
            .unwrap();
        drop(f);
        let err = HostKey::load_or_generate_blocking(&path).unwrap_err();
        assert!(matches!(err, SftpError::HostKeyInvalid { .. }), "{err}");
        assert!(fs::read(&path).unwrap().starts_with(b"-----BEGIN"));

        fs::write(&path, vec![b'A'; (MAX_KEY_FILE_LEN + 1) as usize]).unwrap();
        let err = HostKey::load_blocking(&path).unwrap_err();
        assert!(
            matches!(&err, SftpError::HostKeyInvalid { reason, .. } if reason.contains("too large")),
            "{err}"
        );
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let err = HostKey::load_blocking(dir.path()).unwrap_err();
        assert!(matches!(err, SftpError::HostKeyInvalid { .. }), "{err}");
    }

    #[tokio::test]
    async fn async_wrapper_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = HostKey::load_or_generate(&path).await.unwrap();
        let b = HostKey::load_or_generate(path).await.unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
    }
}

//! Where the master key comes from: the host supplies it through a [`KeyProvider`].
//!
//! Built-in providers: [`KeyFile`] (a file holding the key as 64 hex digits or base64, mode 0600)
//! and [`EnvKey`] (an environment variable, same encodings). A [`MasterKey`] is itself a provider,
//! for embedders that fetch the key elsewhere (a KMS, a hardware token) and for tests.

use super::keys::{KEY_LEN, SecretKey, fill_random};
use crate::{Error, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The firm's master key: 32 bytes, zeroized on drop. It wraps the firm key and every matter key.
#[derive(Clone, Debug)]
pub struct MasterKey(SecretKey);

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(SecretKey::from_bytes(bytes))
    }

    /// A fresh random key.
    pub fn random() -> Result<Self> {
        Ok(MasterKey(SecretKey::random()?))
    }

    /// Parses the text form: 64 hex digits, or standard/URL-safe base64 of 32 bytes (surrounding
    /// whitespace ignored). `source` names where the text came from, for error messages.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        use base64::Engine;
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::Key(format!(
                "{source} is empty: it must hold a 32-byte master key (64 hex digits or base64)"
            )));
        }
        let bytes: Zeroizing<Vec<u8>> =
            if t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(hex::decode(t).map_err(|_| bad_encoding(source))?)
            } else {
                let engines = [
                    base64::engine::general_purpose::STANDARD,
                    base64::engine::general_purpose::URL_SAFE,
                    base64::engine::general_purpose::STANDARD_NO_PAD,
                    base64::engine::general_purpose::URL_SAFE_NO_PAD,
                ];
                let mut decoded = None;
                for e in engines {
                    if let Ok(b) = e.decode(t) {
                        decoded = Some(Zeroizing::new(b));
                        break;
                    }
                }
                decoded.ok_or_else(|| bad_encoding(source))?
            };
        let mut arr: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            Error::Key(format!(
                "{source} holds {} bytes, but a master key has exactly {KEY_LEN}",
                bytes.len()
            ))
        })?;
        let key = MasterKey::from_bytes(arr);
        zeroize::Zeroize::zeroize(&mut arr);
        Ok(key)
    }

    /// The key as 64 lower-case hex digits (for writing key files).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_bytes()))
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.0
    }
}

fn bad_encoding(source: &str) -> Error {
    Error::Key(format!(
        "{source} is not a master key: expected 64 hex digits or base64 of 32 bytes"
    ))
}

/// Supplies the master key. Called at [`super::Keyring::open`] and [`super::Keyring::rotate`].
pub trait KeyProvider: Send + Sync {
    /// Returns the master key, or [`Error::Key`] saying why it is unavailable.
    fn master_key(&self) -> Result<MasterKey>;
    /// Where the key comes from, for messages ("key file /etc/sdx/master.key").
    fn describe(&self) -> String;
}

impl KeyProvider for MasterKey {
    fn master_key(&self) -> Result<MasterKey> {
        Ok(self.clone())
    }
    fn describe(&self) -> String {
        "an in-memory master key".into()
    }
}

/// Largest key file read (a key is 64 characters; anything much bigger is not a key file).
const MAX_KEY_FILE: u64 = 4096;

/// A master key kept in a file (64 hex digits or base64), readable only by its owner.
#[derive(Clone, Debug)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// A provider reading `path` when the key is needed. The file must be a regular file that
    /// neither group nor others can access (mode 0600 or 0400); otherwise reading it fails.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyFile { path: path.into() }
    }

    /// Writes a fresh random master key to `path` with mode 0600 and returns its provider.
    /// Atomic: the key is written to a temporary file, synced and linked into place, so `path`
    /// either doesn't exist or holds a complete key. Refuses to overwrite an existing file.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path: PathBuf = path.into();
        if path.exists() {
            return Err(Error::AlreadyExists(format!(
                "key file {} (refusing to overwrite a master key)",
                path.display()
            )));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} is not a file path", path.display())))?;
        let mut rnd = [0u8; 8];
        fill_random(&mut rnd)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            hex::encode(rnd)
        ));
        let key = MasterKey::random()?;
        let result = (|| -> Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut text = key.to_hex();
            text.push('\n');
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            drop(f);
            // hard_link fails if `path` appeared meanwhile: never replace an existing key.
            std::fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists(format!("key file {}", path.display()))
                } else {
                    Error::Io(e)
                }
            })?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&tmp);
        result?;
        std::fs::File::open(&dir)?.sync_all()?;
        tracing::info!(path = %path.display(), "created a new master key file");
        Ok(KeyFile { path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl KeyProvider for KeyFile {
    fn master_key(&self) -> Result<MasterKey> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path.display();
        let f = std::fs::File::open(&self.path)
            .map_err(|e| Error::Key(format!("cannot open the master key file {p}: {e}")))?;
        let meta = f
            .metadata()
            .map_err(|e| Error::Key(format!("cannot stat the master key file {p}: {e}")))?;
        if !meta.is_file() {
            return Err(Error::Key(format!(
                "the master key file {p} is not a regular file"
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Key(format!(
                "the master key file {p} is accessible by group or others (mode {mode:04o}); \
                 restrict it with `chmod 600 {p}`"
            )));
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(Error::Key(format!(
                "the master key file {p} is {} bytes long: not a key file",
                meta.len()
            )));
        }
        let mut buf = Zeroizing::new(Vec::new());
        f.take(MAX_KEY_FILE)
            .read_to_end(&mut buf)
            .map_err(|e| Error::Key(format!("cannot read the master key file {p}: {e}")))?;
        let text = std::str::from_utf8(&buf).map_err(|_| {
            Error::Key(format!(
                "the master key file {p} is not text: expected 64 hex digits or base64"
            ))
        })?;
        MasterKey::parse(text, &format!("the master key file {p}"))
    }
    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }
}

/// A master key taken from an environment variable (64 hex digits or base64).
///
/// The variable stays in the process environment (Rust cannot wipe it safely); prefer
/// [`KeyFile`] where that matters.
#[derive(Clone, Debug)]
pub struct EnvKey {
    var: String,
}

impl EnvKey {
    /// A provider reading the variable `var` (e.g. `SDX_MASTER_KEY`) when the key is needed.
    pub fn new(var: impl Into<String>) -> Self {
        EnvKey { var: var.into() }
    }
}

impl KeyProvider for EnvKey {
    fn master_key(&self) -> Result<MasterKey> {
        match std::env::var(&self.var) {
            Ok(v) => {
                let v = Zeroizing::new(v);
                MasterKey::parse(&v, &format!("the environment variable {}", self.var))
            }
            Err(std::env::VarError::NotPresent) => Err(Error::Key(format!(
                "no master key: the environment variable {} is not set",
                self.var
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::Key(format!(
                "the environment variable {} is not valid text",
                self.var
            ))),
        }
    }
    fn describe(&self) -> String {
        format!("environment variable {}", self.var)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parse_hex_and_base64() {
        let k = [0xabu8; 32];
        let hex = hex::encode(k);
        assert_eq!(
            MasterKey::parse(&format!(" {hex}\n"), "t")
                .unwrap()
                .secret()
                .as_bytes(),
            &k
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        assert_eq!(MasterKey::parse(&b64, "t").unwrap().secret().as_bytes(), &k);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let e = MasterKey::parse(&short, "t").unwrap_err().to_string();
        assert!(e.contains("16 bytes"), "{e}");
        assert!(MasterKey::parse("", "t").is_err());
        assert!(MasterKey::parse("not a key!", "t").is_err());
    }

    #[test]
    fn key_file_create_read_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let kf = KeyFile::create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k1 = kf.master_key().unwrap();
        let k2 = KeyFile::new(&p).master_key().unwrap();
        assert_eq!(k1.secret().as_bytes(), k2.secret().as_bytes());
        // No leftovers besides the key file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Never overwrites.
        assert!(matches!(KeyFile::create(&p), Err(Error::AlreadyExists(_))));
        // Group-readable is refused with a message naming the fix.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = kf.master_key().unwrap_err();
        assert!(matches!(e, Error::Key(_)));
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // Missing file.
        let e = KeyFile::new(dir.path().join("nope"))
            .master_key()
            .unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }

    #[test]
    fn env_key() {
        let var = "SDX_TEST_MASTER_KEY_PROVIDER_UNIT";
        let e = EnvKey::new(var).master_key().unwrap_err();
        assert!(e.to_string().contains("not set"), "{e}");
        // Edition 2024 makes `set_var` unsafe (forbidden here): read a variable that is set but
        // is no key. The positive path runs in a child process in tests/blob_store.rs.
        let e = EnvKey::new("PATH").master_key().unwrap_err();
        assert!(e.to_string().contains("not a master key"), "{e}");
    }
}

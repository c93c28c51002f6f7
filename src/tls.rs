//! TLS for the HTTPS listener: loading a certificate chain and key from PEM files, and creating a
//! self-signed pair for first start and tests.
//!
//! rustls is used with the ring provider only (no aws-lc); the provider is passed explicitly, so no
//! process-wide default has to be installed and another crate's choice can't change ours. ALPN
//! offers `h2` then `http/1.1`.
//!
//! Both functions do blocking file I/O: call them at startup (or inside `spawn_blocking`).

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file read (certificate chains are a few KiB; this only stops absurd input).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// File names written by [`generate_self_signed`].
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key written by [`generate_self_signed`].
pub const KEY_FILE: &str = "key.pem";

/// What went wrong while preparing TLS. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("TLS file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not usable PEM of the expected kind.
    #[error("TLS file {path}: {reason}")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// rustls refused the certificate/key combination.
    #[error("TLS certificate {cert} with key {key} was refused: {reason}")]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason (e.g. the key does not match the certificate).
        reason: String,
    },
    /// Creating the self-signed certificate failed.
    #[error("generating a self-signed certificate failed: {0}")]
    Generate(String),
}

impl From<TlsError> for crate::Error {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Io { path, source } => crate::Error::Io(std::io::Error::new(
                source.kind(),
                format!("TLS file {}: {source}", path.display()),
            )),
            other => crate::Error::Invalid(other.to_string()),
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::InvalidPem {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_PEM_BYTES} bytes: not a PEM certificate or key"),
        });
    }
    Ok(buf)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_bounded(path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        let cert = item.map_err(|e| TlsError::InvalidPem {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(TlsError::InvalidPem {
            path: path.to_path_buf(),
            reason: "no \"BEGIN CERTIFICATE\" section found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::InvalidPem {
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key section (PKCS#8, PKCS#1 or SEC1) found".into()
            }
            other => format!("malformed PEM: {other}"),
        },
    })
}

/// Loads a certificate chain and its private key from PEM files and builds the server
/// configuration: TLS 1.2 and 1.3 with ring, no client certificates, ALPN `h2` and `http/1.1`.
///
/// Errors name the offending file: missing file, no certificate/key section, malformed PEM, or a
/// key that does not match the certificate.
pub fn load_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert_pem)?;
    let key = load_key(key_pem)?;
    let rejected = |e: rustls::Error| TlsError::Rejected {
        cert: cert_pem.to_path_buf(),
        key: key_pem.to_path_buf(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rejected)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `data` to `path` via a temporary file and a rename, with `mode` on Unix.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io)?;
    // `mode` only applies when the file is created: tighten a left-over temp file too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)
}

/// Makes sure `dir` holds `cert.pem` and `key.pem`, generating a self-signed certificate for
/// `hostnames` (DNS names or IP addresses) with rcgen if neither exists. Existing files are reused
/// as they are (and not checked here: [`load_server_config`] does that). The key file is created
/// with mode 0600.
///
/// Returns the certificate and key paths. If only one of the two files exists, that is an error
/// (rather than silently replacing a certificate someone installed).
pub fn generate_self_signed(
    dir: &Path,
    hostnames: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => return Ok((cert_path, key_path)),
        (true, false) => {
            return Err(TlsError::InvalidPem {
                path: key_path,
                reason: format!(
                    "missing while {} exists: remove the certificate to regenerate both",
                    cert_path.display()
                ),
            });
        }
        (false, true) => {
            return Err(TlsError::InvalidPem {
                path: cert_path,
                reason: format!(
                    "missing while {} exists: remove the key to regenerate both",
                    key_path.display()
                ),
            });
        }
        (false, false) => {}
    }
    if hostnames.is_empty() {
        return Err(TlsError::Generate(
            "at least one host name or IP address is needed".into(),
        ));
    }
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let certified = rcgen::generate_simple_self_signed(hostnames.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key_pem = zeroize::Zeroizing::new(certified.signing_key.serialize_pem());
    // Key first: a crash in between leaves only a key, which the next start reports.
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = generate_self_signed(dir.path(), &["localhost".into()]).unwrap();
        let cert_before = fs::read(&c).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let cfg = load_server_config(&c, &k).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // Second call reuses the files instead of generating new ones.
        let (c2, _) = generate_self_signed(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(fs::read(c2).unwrap(), cert_before);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = generate_self_signed(dir.path(), &["127.0.0.1".into()]).unwrap();
        let missing = dir.path().join("nope.pem");
        let e = load_server_config(&missing, &k).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, b"hello").unwrap();
        let e = load_server_config(&garbage, &k).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("CERTIFICATE"),
            "{e}"
        );
        // A certificate is not a key.
        let e = load_server_config(&c, &c).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("private key"), "{e}");

        // A key from another pair does not match.
        let other = tempfile::tempdir().unwrap();
        let (_, k2) = generate_self_signed(other.path(), &["localhost".into()]).unwrap();
        let e = load_server_config(&c, &k2).unwrap_err();
        assert!(matches!(e, TlsError::Rejected { .. }), "{e}");
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, k) = generate_self_signed(dir.path(), &["localhost".into()]).unwrap();
        fs::remove_file(&k).unwrap();
        let e = generate_self_signed(dir.path(), &["localhost".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key.pem"), "{e}");
    }
}

//! Password hashing used by logins (Argon2id). Superseded by `accounts::password` once merged.
use crate::{Error, Result};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

/// Hashes a password to a PHC string.
pub fn hash(pw: &str) -> Result<String> {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("hashing the password failed: {e}")))
}
/// Verifies a password against a PHC string.
pub fn verify(pw: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}
/// Burns the time of one verification (unknown logins).
pub fn verify_dummy(pw: &str) {
    let _ = hash(pw);
}

//! One-time tokens (invitations, password resets) and per-device app passwords.
//!
//! # Tokens
//!
//! A [`Token`] is 256 random bits from the system RNG, written as 43 characters of URL-safe
//! base64 (no padding), so it can sit in a link (`/invite/<token>`) as is. Only its
//! [`TokenHash`] (SHA-256 of the text) is stored; the secret exists in the e-mail and in the
//! browser that follows it. A slow hash is pointless here: nobody can search a 2^256 space, so
//! SHA-256 suffices, and lookups by hash stay cheap. Comparisons of hashes are constant-time.
//! Single use is the store's job: it deletes (or marks used) the record in the same write
//! transaction that accepts the token.
//!
//! # App passwords
//!
//! An [`AppPassword`] is 100 random bits shown once as five groups of four characters from
//! Crockford's base-32 alphabet (no `i l o u`; typing `i`/`l` is read as `1`, `o` as `0`, any
//! case, dashes and spaces ignored), e.g. `k7qm-3xhp-9d2r-wcaf-tn4e`.
//!
//! It is stored as a **fast** hash ([`AppPasswordHash`], SHA-256 with a domain-separation
//! prefix), not Argon2id. Why: the slow hash exists to protect *guessable* secrets; an app
//! password is random with 100 bits of entropy, so even at 10^12 SHA-256 guesses per second an
//! offline search of a stolen database takes ~4 × 10^10 years. A fast hash matters because
//! mounted drives (Windows, macOS, davfs2) send the credentials with **every** WebDAV request
//! and a login may have several app passwords: with Argon2 each request would cost
//! ~25 ms × devices of CPU and 19 MiB of memory. Online guessing is still throttled like any
//! login.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::SHA256;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Random bytes in a [`Token`].
pub const TOKEN_BYTES: usize = 32;
/// Length of a token's text form (URL-safe base64 of [`TOKEN_BYTES`], unpadded).
pub const TOKEN_CHARS: usize = 43;
/// Default lifetime of an invitation link: 7 days.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default lifetime of a password-reset link: 1 hour.
pub const DEFAULT_RESET_TTL: Duration = Duration::from_secs(3600);

/// Errors from generating or reading tokens and app passwords.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The presented text is not a token of the right form (length or alphabet).
    #[error("malformed token")]
    Malformed,
}

impl From<TokenError> for crate::Error {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Random => crate::Error::Key(e.to_string()),
            // Don't tell a caller more than "not found": a malformed and an unknown token get
            // the same answer.
            TokenError::Malformed => crate::Error::NotFound("invitation or link".into()),
        }
    }
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, TokenError> {
    let mut buf = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(buf.as_mut())
        .map_err(|_| TokenError::Random)?;
    Ok(buf)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A one-time secret for a link. Its text is zeroised on drop and never printed by `Debug`.
pub struct Token(Zeroizing<String>);

impl Token {
    /// A fresh random token and the hash to store.
    pub fn generate() -> Result<(Token, TokenHash), TokenError> {
        let raw = random_bytes::<TOKEN_BYTES>()?;
        let token = Token(Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref())));
        let hash = token.hash();
        Ok((token, hash))
    }

    /// Reads a token presented by a client (from a URL or a form). Checks only its form;
    /// whether it is known, unused and unexpired is the store's question.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        if text.len() != TOKEN_CHARS
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError::Malformed);
        }
        // 43 chars of the alphabet always decode unless the last char has stray low bits.
        let decoded = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| TokenError::Malformed)?,
        );
        if decoded.len() != TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        Ok(Token(Zeroizing::new(text.to_owned())))
    }

    /// The secret text, to put in a link. Show it to no one but the recipient.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash to store or look up.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<secret>)")
    }
}

/// SHA-256 of a token's text: what the store keeps. Equality is constant-time.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a token's text.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(sha256(&[token.as_bytes()]))
    }
    /// Rebuilds a hash read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> TokenHash {
        TokenHash(bytes)
    }
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// True if `presented` hashes to this value (constant-time comparison).
    pub fn matches(&self, presented: &str) -> bool {
        *self == TokenHash::of(presented)
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for TokenHash {}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenHash({}…)",
            hex::encode(self.0.get(..6).unwrap_or_default())
        )
    }
}

/// Seconds since the Unix epoch for `t` (0 for times before 1970).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The expiry (Unix seconds) of something issued at `issued` that lives for `ttl`.
/// Saturates instead of overflowing.
pub fn expires_at(issued: SystemTime, ttl: Duration) -> u64 {
    unix_secs(issued).saturating_add(ttl.as_secs())
}

/// True if an expiry (Unix seconds) has been reached at `now`. The expiry second itself
/// counts as expired.
pub fn is_expired(expires_at_unix: u64, now: SystemTime) -> bool {
    unix_secs(now) >= expires_at_unix
}

/// Time left before an expiry (Unix seconds), `None` once expired.
pub fn remaining(expires_at_unix: u64, now: SystemTime) -> Option<Duration> {
    let now = unix_secs(now);
    (expires_at_unix > now).then(|| Duration::from_secs(expires_at_unix - now))
}

/// Lifetimes of one-time links, as read from the configuration file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// How long an invitation link stays valid, in hours (default 168 = 7 days).
    pub invite_ttl_hours: u32,
    /// How long a password-reset link stays valid, in minutes (default 60).
    pub reset_ttl_minutes: u32,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            invite_ttl_hours: 168,
            reset_ttl_minutes: 60,
        }
    }
}

impl TokenConfig {
    /// Lifetime of an invitation link.
    pub fn invite_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.invite_ttl_hours) * 3600)
    }
    /// Lifetime of a password-reset link.
    pub fn reset_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.reset_ttl_minutes) * 60)
    }
}

/// Crockford base-32, lower case.
const APP_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Groups of four characters in an app password.
pub const APP_PASSWORD_GROUPS: usize = 5;
const APP_PASSWORD_CHARS: usize = APP_PASSWORD_GROUPS * 4;
/// Bits of entropy in an app password.
pub const APP_PASSWORD_BITS: usize = APP_PASSWORD_CHARS * 5;
const APP_HASH_DOMAIN: &[u8] = b"sdx-portal app password v1\0";

/// A per-device password, shown once at creation. Zeroised on drop; `Debug` doesn't print it.
pub struct AppPassword(Zeroizing<String>);

impl AppPassword {
    /// A fresh app password (`xxxx-xxxx-xxxx-xxxx-xxxx`) and the hash to store.
    pub fn generate() -> Result<(AppPassword, AppPasswordHash), TokenError> {
        let raw = random_bytes::<APP_PASSWORD_CHARS>()?;
        let mut text = Zeroizing::new(String::with_capacity(APP_PASSWORD_CHARS + 4));
        for (i, b) in raw.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                text.push('-');
            }
            // 256 is a multiple of 32: masking keeps the choice uniform.
            let idx = usize::from(b & 31);
            text.push(char::from(APP_ALPHABET.get(idx).copied().unwrap_or(b'0')));
        }
        let pw = AppPassword(text);
        let hash = AppPasswordHash::of(&pw.0).ok_or(TokenError::Malformed)?;
        Ok((pw, hash))
    }

    /// The text to show the user (once).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppPassword(<secret>)")
    }
}

/// The canonical form of typed app-password text: 20 alphabet characters, or `None` if the
/// text can't be an app password.
fn canonical_app_password(input: &str) -> Option<Zeroizing<Vec<u8>>> {
    if input.len() > 64 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(APP_PASSWORD_CHARS));
    for c in input.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' => continue,
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        let b = u8::try_from(c).ok()?;
        if !APP_ALPHABET.contains(&b) {
            return None;
        }
        out.push(b);
    }
    (out.len() == APP_PASSWORD_CHARS).then_some(out)
}

/// True if `input` has the shape of an app password (so a front end can try the app passwords
/// of a login before, or instead of, the slow main-password check).
pub fn looks_like_app_password(input: &str) -> bool {
    canonical_app_password(input).is_some()
}

/// A stored app password: SHA-256 over a domain prefix and the canonical text. Equality is
/// constant-time.
#[derive(Clone, Copy)]
pub struct AppPasswordHash([u8; 32]);

impl AppPasswordHash {
    /// Hashes typed app-password text (any case, with or without dashes/spaces); `None` if the
    /// text can't be an app password.
    pub fn of(input: &str) -> Option<AppPasswordHash> {
        let canon = canonical_app_password(input)?;
        Some(AppPasswordHash(sha256(&[APP_HASH_DOMAIN, &canon])))
    }
    /// Rebuilds a hash read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> AppPasswordHash {
        AppPasswordHash(bytes)
    }
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// True if `presented` is this app password (constant-time comparison of the hashes).
    pub fn matches(&self, presented: &str) -> bool {
        AppPasswordHash::of(presented).is_some_and(|h| h == *self)
    }
}

impl PartialEq for AppPasswordHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for AppPasswordHash {}

impl fmt::Debug for AppPasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppPasswordHash({}…)",
            hex::encode(self.0.get(..6).unwrap_or_default())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn token_form_and_uniqueness() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let (t, h) = Token::generate().unwrap();
            assert_eq!(t.as_str().len(), TOKEN_CHARS);
            assert!(
                t.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(h, TokenHash::of(t.as_str()));
            assert!(h.matches(t.as_str()));
            assert!(seen.insert(t.as_str().to_owned()));
        }
    }

    #[test]
    fn token_hash_is_sha256_of_text() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hex::encode(TokenHash::of("abc").as_bytes()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_parse() {
        let (t, h) = Token::generate().unwrap();
        let back = Token::parse(t.as_str()).unwrap();
        assert_eq!(back.hash(), h);
        assert_eq!(Token::parse("").unwrap_err(), TokenError::Malformed);
        assert_eq!(
            Token::parse(&t.as_str()[1..]).unwrap_err(),
            TokenError::Malformed
        );
        let mut bad = t.as_str().to_owned();
        bad.replace_range(0..1, "/");
        assert_eq!(Token::parse(&bad).unwrap_err(), TokenError::Malformed);
        let long = format!("{}A", t.as_str());
        assert_eq!(Token::parse(&long).unwrap_err(), TokenError::Malformed);
        assert!(Token::parse(&"é".repeat(22)).is_err());
        // Last char with stray low bits ('B' = 000001 leaves a non-zero trailing bit).
        let stray = format!("{}B", &"A".repeat(42));
        assert_eq!(Token::parse(&stray).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn debug_does_not_leak() {
        let (t, _) = Token::generate().unwrap();
        assert!(!format!("{t:?}").contains(t.as_str()));
        let (a, _) = AppPassword::generate().unwrap();
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn expiry() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let exp = expires_at(t0, DEFAULT_INVITE_TTL);
        assert_eq!(exp, 1_000_000 + 604_800);
        assert!(!is_expired(exp, t0));
        assert!(!is_expired(exp, t0 + Duration::from_secs(604_799)));
        assert!(is_expired(exp, t0 + Duration::from_secs(604_800)));
        assert_eq!(
            remaining(exp, t0 + Duration::from_secs(604_790)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(remaining(exp, t0 + Duration::from_secs(604_800)), None);
        assert_eq!(expires_at(t0, Duration::MAX), u64::MAX);
    }

    #[test]
    fn token_config() {
        let c: TokenConfig = toml::from_str("").unwrap();
        assert_eq!(c.invite_ttl(), DEFAULT_INVITE_TTL);
        assert_eq!(c.reset_ttl(), DEFAULT_RESET_TTL);
        let c: TokenConfig = toml::from_str("invite_ttl_hours = 24").unwrap();
        assert_eq!(c.invite_ttl(), Duration::from_secs(86_400));
        assert!(toml::from_str::<TokenConfig>("invite_ttl = 24").is_err());
    }

    #[test]
    fn app_password_form() {
        let mut seen = HashSet::new();
        let mut chars = HashSet::new();
        for _ in 0..300 {
            let (p, h) = AppPassword::generate().unwrap();
            let s = p.as_str();
            assert_eq!(s.len(), 24, "{s}");
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(groups.len(), 5);
            assert!(groups.iter().all(|g| g.len() == 4));
            assert!(!s.contains(['i', 'l', 'o', 'u']));
            chars.extend(s.chars().filter(|c| *c != '-'));
            assert!(h.matches(s));
            assert!(seen.insert(s.to_owned()));
        }
        // 6000 draws from 32 symbols: all of them show up.
        assert_eq!(chars.len(), 32);
        assert_eq!(APP_PASSWORD_BITS, 100);
    }

    #[test]
    fn app_password_typing_variants() {
        let (p, h) = AppPassword::generate().unwrap();
        let s = p.as_str();
        assert!(h.matches(&s.to_uppercase()));
        assert!(h.matches(&s.replace('-', "")));
        assert!(h.matches(&s.replace('-', " ")));
        let fixed = AppPasswordHash::of("1000-0000-0000-0000-0000").unwrap();
        assert!(fixed.matches("I000-OOOO-0000-0000-0000"));
        assert!(fixed.matches("l0000000000000000000"));
        // Wrong ones.
        assert!(!fixed.matches("1000-0000-0000-0000-0001"));
        assert!(!h.matches("not an app password"));
        assert!(AppPasswordHash::of("u000-0000-0000-0000-0000").is_none());
        assert!(AppPasswordHash::of("0000-0000-0000-0000").is_none());
        assert!(AppPasswordHash::of(&"0".repeat(1000)).is_none());
        assert!(looks_like_app_password(s));
        assert!(!looks_like_app_password("correct horse battery"));
    }

    #[test]
    fn stored_bytes_round_trip() {
        let (_, h) = Token::generate().unwrap();
        assert_eq!(TokenHash::from_bytes(*h.as_bytes()), h);
        let (p, a) = AppPassword::generate().unwrap();
        assert!(AppPasswordHash::from_bytes(*a.as_bytes()).matches(p.as_str()));
        // Token and app-password hashes of the same text differ (domain separation).
        let text = "0000-0000-0000-0000-0000";
        assert_ne!(
            TokenHash::of(text).as_bytes(),
            AppPasswordHash::of(text).unwrap().as_bytes()
        );
    }
}

//! Password hashing (Argon2id) and strength rules (NIST SP 800-63B).
//!
//! # Parameters
//!
//! Argon2id, version 0x13, **m = 19,456 KiB (19 MiB), t = 3, p = 1**, 16-byte random salt,
//! 32-byte output, stored as a PHC string (`$argon2id$v=19$m=19456,t=3,p=1$<salt>$<hash>`).
//!
//! Why these: OWASP's Password Storage Cheat Sheet lists m = 19 MiB, t = 2, p = 1 as the
//! minimum Argon2id configuration; the budget for one login is 25–50 ms. Measured on the
//! 2-vCPU build VM (release, `cargo bench --bench login -- sweep`, raw Argon2id, three runs
//! while other builds kept the load average at 3–5, criterion upper bounds):
//!
//! | m | t | ms per hash |
//! |---|---|---|
//! | 19 MiB | 2 | 15–21 |
//! | 19 MiB | 3 | 28–39 |
//! | 19 MiB | 4 | 34–60 |
//! | 32 MiB | 2 | 51–69 |
//! | 46 MiB | 1 | 63–85 |
//! | 64 MiB | 1 | 87–89 |
//!
//! t = 2 falls below the budget; larger m costs disproportionately more here (probably because
//! the working set no longer fits the caches), so t = 3 at 19 MiB is the strongest setting inside the
//! budget. Through the library's own path, one verify measured 23.5–26.8 ms (criterion
//! means, two runs). p = 1 because the server handles many logins at once: more lanes per
//! hash would only steal cores from other requests. Stored hashes carry their own parameters, so
//! changing [`ARGON2_T_COST`] later keeps old hashes verifiable; [`needs_rehash`] tells the
//! caller to re-hash on the next successful login.
//!
//! # Running it
//!
//! Hashing is CPU- and memory-heavy: never call [`hash_password`] / [`verify_password`] on an
//! async worker thread. Use [`hash_password_async`] / [`verify_async`], which run on tokio's
//! blocking pool **and** take one of a fixed number of hashing slots (one per core), so a burst
//! of 50 logins queues instead of pinning 50 × 19 MiB and thrashing the cores.
//!
//! # Unknown logins
//!
//! To give the same answer in the same time for an unknown login and a wrong password, verify
//! the attempt against [`DUMMY_HASH`] ([`verify_dummy`]); [`verify_async`] does this when it
//! is given no stored hash.
//!
//! # Normalisation
//!
//! Passwords are NFKC-normalised before hashing and before the length is counted (SP 800-63B
//! §5.1.1.2), so the same password typed on systems that compose accents differently matches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Argon2id memory cost in KiB (19 MiB, the OWASP minimum).
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// Argon2id iterations.
pub const ARGON2_T_COST: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P_COST: u32 = 1;

/// Shortest password accepted, in Unicode characters (after NFKC).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in Unicode characters (after NFKC).
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest input [`verify_password`] will hash, in bytes. Longer inputs can't be a valid
/// password (256 characters of at most 4 bytes) and are refused after a dummy verify.
pub const MAX_PASSWORD_BYTES: usize = 4 * MAX_PASSWORD_CHARS;

/// Hard limits on the parameters of a *stored* hash: a corrupted or planted hash must not make
/// a verify allocate gigabytes or spin for minutes.
const MAX_STORED_M_COST_KIB: u32 = 256 * 1024;
const MAX_STORED_T_COST: u32 = 16;
const MAX_STORED_P_COST: u32 = 4;

/// A PHC string with exactly the current parameters, a random salt and a random 32-byte output
/// (so no known password matches it): verifying against it costs the same as verifying a real
/// login's hash. Regenerate it (the `dummy_hash_matches_current_params` test fails otherwise)
/// whenever the parameters change.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=3,p=1$2N3CgjqB+7hD4YkeRiXAmQ$jW3c57iWqb4VUKt47/VMNGBnNDhbaAPAZxZnsWdPHXQ";

/// Errors from hashing a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password exceeds [`MAX_PASSWORD_BYTES`].
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Argon2 refused the input or parameters.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The hashing task could not run to completion.
    #[error("password hashing task failed: {0}")]
    Task(String),
}

impl From<PasswordError> for crate::Error {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::TooLong => crate::Error::Invalid(e.to_string()),
            other => crate::Error::Key(other.to_string()),
        }
    }
}

/// Why a new password was refused. The messages are meant to be shown to the person choosing
/// the password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WeakPassword {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("the password has {chars} characters; use at least {min}", min = MIN_PASSWORD_CHARS)]
    TooShort {
        /// Characters counted (after NFKC).
        chars: usize,
    },
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[error("the password is longer than {max} characters", max = MAX_PASSWORD_CHARS)]
    TooLong,
    /// The password is on the list of commonly used passwords, possibly with digits or symbols
    /// added before or after it, or repeated.
    #[error("this password is too common; choose another one")]
    Common,
    /// The password is made of very few distinct characters, a short unit repeated
    /// (`abcabcabc…`) or one run such as `abcdef…` or `987654…`.
    #[error("the password is a repeated or sequential pattern; choose another one")]
    Pattern,
    /// The password contains the person's e-mail address, name or another context word.
    #[error("the password must not contain your name, e-mail address or the firm's name")]
    ContainsContext,
}

static COMMON_LIST: &str = include_str!("common_passwords.txt");

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    COMMON_LIST
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Number of entries in the bundled common-password list.
pub fn common_list_len() -> usize {
    COMMON.len()
}

fn is_common(lower: &str) -> bool {
    COMMON.contains(lower)
}

fn normalize(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.nfkc().collect())
}

/// Letters and digits only, lowercased: the form in which context words are compared.
fn compact(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Checks a new password against the SP 800-63B rules: 12 to 256 characters (after NFKC),
/// not a common password (case-insensitive, also with digits or symbols stuck to either end,
/// or repeated), not a trivial pattern, and not containing any `context` value (the person's
/// e-mail address and name, the firm's name…). There are deliberately no composition rules
/// ("one upper case, one digit…").
///
/// For a context value that is an e-mail address, the address itself and each word of its
/// local part are checked; for other values, the whole value and each word of at least four
/// characters.
pub fn check_strength(password: &str, context: &[&str]) -> Result<(), WeakPassword> {
    let pw = normalize(password);
    let chars = pw.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort { chars });
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(WeakPassword::TooLong);
    }
    let lower = Zeroizing::new(pw.to_lowercase());
    if is_common(&lower) {
        return Err(WeakPassword::Common);
    }
    // A common password with digits/symbols glued on: "password2024!", "!!monkey123456".
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    if core.chars().count() >= 4 && core != lower.as_str() && is_common(core) {
        return Err(WeakPassword::Common);
    }
    if let Some(unit) = repeated_unit(&lower) {
        if is_common(unit) {
            return Err(WeakPassword::Common);
        }
        if unit.chars().count() <= 4 {
            return Err(WeakPassword::Pattern);
        }
    }
    if is_pattern(&lower) {
        return Err(WeakPassword::Pattern);
    }
    let pw_compact = Zeroizing::new(compact(&lower));
    for item in context {
        for word in context_words(item) {
            if pw_compact.contains(word.as_str()) {
                return Err(WeakPassword::ContainsContext);
            }
        }
    }
    Ok(())
}

/// The shortest unit that, repeated two or more times, makes `s`.
fn repeated_unit(s: &str) -> Option<&str> {
    let len = s.len();
    (1..=len / 2)
        .filter(|&n| len.is_multiple_of(n) && s.is_char_boundary(n))
        .find_map(|n| {
            let unit = s.get(..n)?;
            (unit.repeat(len / n) == s).then_some(unit)
        })
}

/// Fewer than four distinct characters, or one ascending/descending run ("abcdef…",
/// "3456789012…" with the digits wrapping).
fn is_pattern(lower: &str) -> bool {
    let distinct: HashSet<char> = lower.chars().collect();
    if distinct.len() < 4 {
        return true;
    }
    let codes: Vec<i64> = lower.chars().map(|c| i64::from(u32::from(c))).collect();
    let step_ok = |a: i64, b: i64, dir: i64| {
        b - a == dir || (a.abs_diff(b) == 9 && (48..=57).contains(&a) && (48..=57).contains(&b))
    };
    [1i64, -1].iter().any(|&dir| {
        codes
            .windows(2)
            .all(|w| matches!(w, [a, b] if step_ok(*a, *b, dir)))
    })
}

/// The strings a password must not contain for one context value.
fn context_words(item: &str) -> Vec<String> {
    let mut out = Vec::new();
    let whole = compact(item);
    if whole.chars().count() >= 3 {
        out.push(whole);
    }
    let words_of = match item.split_once('@') {
        Some((local, _domain)) => local,
        None => item,
    };
    for w in words_of.split(|c: char| !c.is_alphanumeric()) {
        let w = compact(w);
        if w.chars().count() >= 4 && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// The Argon2id parameters new hashes get.
pub fn current_params() -> Params {
    // The constants are valid (tested), so this can't fail; fall back to the library default
    // (m = 19 MiB, t = 2) rather than panic.
    Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None).unwrap_or_default()
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, current_params())
}

/// Hashes a password with Argon2id and the current parameters; returns the PHC string.
///
/// CPU-heavy (tens of milliseconds): from async code use [`hash_password_async`].
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let pw = normalize(password);
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::Random)?;
    let hash = hasher()
        .hash_password_with_salt(pw.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Parses a stored PHC string and checks it is an Argon2id hash with bounded parameters.
fn parse_stored(phc: &str) -> Option<PasswordHash> {
    let parsed = PasswordHash::new(phc).ok()?;
    if parsed.algorithm.as_str() != "argon2id" {
        return None;
    }
    let params = Params::try_from(&parsed).ok()?;
    (params.m_cost() <= MAX_STORED_M_COST_KIB
        && params.t_cost() <= MAX_STORED_T_COST
        && params.p_cost() <= MAX_STORED_P_COST)
        .then_some(parsed)
}

/// True if `password` matches the stored PHC string `phc`. The hash comparison is
/// constant-time (argon2's `Output` equality). A malformed stored hash, one with parameters
/// beyond sane limits, or an over-long password gives `false` (after a dummy verify, so the
/// time taken doesn't tell those cases apart).
///
/// CPU-heavy: from async code use [`verify_async`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    let pw = normalize(password);
    let parsed = match parse_stored(phc) {
        Some(p) if pw.len() <= MAX_PASSWORD_BYTES => p,
        Some(_) => {
            burn_dummy();
            return false;
        }
        None => {
            tracing::warn!("stored password hash is malformed or out of bounds; refusing");
            burn_dummy();
            return false;
        }
    };
    verify_pooled(pw.as_bytes(), &parsed)
}

/// The capacity verify buffers are requested with: above glibc's largest dynamic mmap threshold
/// (32 MiB on 64-bit, `mallopt(3)`), so the allocator maps each buffer on its own and unmaps it
/// when it is freed. Only the `m` KiB Argon2 uses are ever touched.
const VERIFY_MEMORY_CAPACITY: usize = 33 << 20;

/// How long a verify buffer nobody used stays in the pool before it is freed.
const POOL_IDLE: Duration = Duration::from_secs(2);

/// Argon2 working memory between verifies: at most one buffer per hashing slot, each freed once
/// it has been idle for [`POOL_IDLE`].
///
/// Allocating and freeing 19 MiB per login let glibc keep a freed copy per blocking-pool thread
/// (server RSS climbed ~19 MiB per login, up to 300–470 MiB under repeated SSH logins), and a
/// fresh mapping per login costs ~7 ms of page faults on a 21 ms hash here; a pool kept for good
/// holds slots × 19 MiB (38 MiB of a 2-core server's ~100) while nobody logs in. So a burst
/// reuses the pooled buffers, and a quiet server holds none.
struct BlockPool {
    idle: Vec<(Vec<Block>, Instant)>,
}

impl BlockPool {
    /// A buffer of at least `count` zeroed blocks: a pooled one, or a fresh mapping.
    fn take(&mut self, count: usize) -> Vec<Block> {
        let mut buf = self.idle.pop().map(|(b, _)| b).unwrap_or_else(|| {
            let mut b = Vec::new();
            let cap = count.max(VERIFY_MEMORY_CAPACITY / std::mem::size_of::<Block>());
            if b.try_reserve_exact(cap).is_err() {
                // Short of address space: only what Argon2 needs.
                b.reserve_exact(count);
            }
            b
        });
        if buf.len() < count {
            buf.resize(count, Block::default());
        }
        buf
    }

    /// Returns a wiped buffer, unless `slots` are already pooled.
    fn put(&mut self, buf: Vec<Block>, now: Instant, slots: usize) {
        if self.idle.len() < slots {
            self.idle.push((buf, now));
        }
    }

    /// Removes the buffers idle for [`POOL_IDLE`] or longer at `now` (for the caller to free
    /// outside the lock).
    fn expire(&mut self, now: Instant) -> Vec<Vec<Block>> {
        let (old, keep) = std::mem::take(&mut self.idle)
            .into_iter()
            .partition(|(_, at)| now.saturating_duration_since(*at) >= POOL_IDLE);
        self.idle = keep;
        old.into_iter().map(|(b, _)| b).collect()
    }
}

static BLOCK_POOL: Mutex<BlockPool> = Mutex::new(BlockPool { idle: Vec::new() });

/// Whether a task that frees idle pooled buffers is running.
static POOL_SWEEPER: AtomicBool = AtomicBool::new(false);

/// Runs `f` over `count` zeroed Argon2 blocks from the pool, then wipes them and pools the buffer.
fn with_blocks<T>(count: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    use zeroize::Zeroize;
    let mut buf = match BLOCK_POOL.lock() {
        Ok(mut pool) => pool.take(count),
        Err(poisoned) => poisoned.into_inner().take(count),
    };
    // `buf` holds at least `count` blocks here; an empty slice would only make Argon2 refuse.
    let out = f(buf.get_mut(..count).unwrap_or_default());
    for b in buf.iter_mut() {
        AsMut::<[u64]>::as_mut(b).zeroize();
    }
    if let Ok(mut pool) = BLOCK_POOL.lock() {
        pool.put(buf, Instant::now(), hash_slots());
    }
    out
}

/// Starts, unless one runs, a task on the current tokio runtime that frees pooled verify buffers
/// once idle and ends when the pool is empty.
fn sweep_pool_later() {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if POOL_SWEEPER.swap(true, Ordering::AcqRel) {
        return;
    }
    rt.spawn(async {
        // Clears the flag when the task ends, also if it is dropped mid-way (its runtime shut
        // down), so that the next verify starts another sweeper.
        struct Running;
        impl Drop for Running {
            fn drop(&mut self) {
                POOL_SWEEPER.store(false, Ordering::Release);
            }
        }
        let running = Running;
        loop {
            tokio::time::sleep(POOL_IDLE).await;
            let left = tokio::task::spawn_blocking(|| {
                let (old, left) = match BLOCK_POOL.lock() {
                    Ok(mut pool) => (pool.expire(Instant::now()), pool.idle.len()),
                    Err(_) => (Vec::new(), 0),
                };
                drop(old); // unmapped here, off the async threads
                left
            })
            .await
            .unwrap_or(0);
            if left == 0 {
                break;
            }
        }
        drop(running);
        // A buffer pooled since the last check needs a sweeper too.
        if BLOCK_POOL.lock().is_ok_and(|p| !p.idle.is_empty()) {
            sweep_pool_later();
        }
    });
}

/// Verifies `password` against a parsed Argon2id hash in working memory of its own; the
/// comparison is constant-time.
fn verify_pooled(password: &[u8], parsed: &PasswordHash) -> bool {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        burn_dummy();
        return false;
    };
    let Ok(params) = Params::try_from(parsed) else {
        burn_dummy();
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => {
            burn_dummy();
            return false;
        }
    };
    let count = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, version, params);
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let ok = with_blocks(count, |blocks| {
        argon
            .hash_password_into_with_memory(password, salt, out, blocks)
            .is_ok()
    });
    ok && bool::from(out.ct_eq(expected.as_bytes()))
}

fn burn_dummy() {
    if let Some(parsed) = parse_stored(DUMMY_HASH) {
        let _ = verify_pooled(b"sdx-portal dummy attempt", &parsed);
    }
}

/// Spends the time of one real verify on nothing: call it for an unknown login so the answer
/// takes as long as for a wrong password. Always returns `false`, so it can stand in for
/// [`verify_password`] directly.
pub fn verify_dummy(password: &str) -> bool {
    // Verify the attempt itself (not a fixed string) so the work done matches a real verify,
    // including NFKC and the length of the input.
    let _ = verify_password(password, DUMMY_HASH);
    false
}

/// True if a stored hash was made with other parameters than the current ones (or can't be
/// parsed): re-hash the password after the next successful verify.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    let cur = current_params();
    parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(0x13)
        || params.m_cost() != cur.m_cost()
        || params.t_cost() != cur.t_cost()
        || params.p_cost() != cur.p_cost()
}

/// How many hashes may run at once: one per core (at least one).
fn hash_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

static HASH_SLOTS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(hash_slots())));

async fn run_limited<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let permit = Arc::clone(&HASH_SLOTS)
        .acquire_owned()
        .await
        .map_err(|e| PasswordError::Task(e.to_string()))?;
    // The permit moves into the blocking task: if the caller's future is dropped (client gone),
    // the slot stays taken until the hash really finishes.
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(permit);
        out
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))
}

/// [`hash_password`] on tokio's blocking pool, limited to one hash per core at a time.
pub async fn hash_password_async(password: String) -> Result<String, PasswordError> {
    let pw = Zeroizing::new(password);
    run_limited(move || hash_password(&pw)).await?
}

/// [`verify_password`] on tokio's blocking pool, limited to one hash per core at a time.
/// With `phc = None` (unknown login) it runs [`verify_dummy`] and returns `false`, taking the
/// same time as a wrong password. The working memory stays pooled for the next verify and is
/// freed by a background task once idle for 2 s.
pub async fn verify_async(password: String, phc: Option<String>) -> Result<bool, PasswordError> {
    let pw = Zeroizing::new(password);
    let ok = run_limited(move || match phc {
        Some(phc) => verify_password(&pw, &phc),
        None => verify_dummy(&pw),
    })
    .await;
    sweep_pool_later();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn hash_then_verify() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=3,p=1$"), "{h}");
        assert!(verify_password("correct horse battery staple", &h));
        assert!(!verify_password("correct horse battery stapler", &h));
        assert!(!verify_password("", &h));
        assert!(!needs_rehash(&h));
    }

    /// Verify buffers are mappings of their own (freeing one returns it to the system), hold the
    /// zeroed blocks Argon2 needs, are pooled up to one per slot and freed once idle for
    /// `POOL_IDLE`; concurrent verifies still give the right answers.
    #[test]
    fn verify_buffers_are_pooled_then_freed_when_idle() {
        let mut pool = BlockPool { idle: Vec::new() };
        let t0 = Instant::now();
        let a = pool.take(19 * 1024);
        assert_eq!(a.len(), 19 * 1024);
        assert!(a.capacity() * std::mem::size_of::<Block>() > 32 << 20);
        assert!(a.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)));
        let b = pool.take(19 * 1024);
        let c = pool.take(19 * 1024);
        pool.put(a, t0, 2);
        pool.put(b, t0 + Duration::from_secs(1), 2);
        pool.put(c, t0, 2);
        assert_eq!(pool.idle.len(), 2, "one buffer per slot");
        assert!(pool.expire(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(
            pool.expire(t0 + POOL_IDLE).len(),
            1,
            "the older one goes first"
        );
        assert_eq!(pool.idle.len(), 1);
        // A pooled buffer is reused (no new mapping) and a larger `m` grows it.
        let again = pool.take(20 * 1024);
        assert_eq!(again.len(), 20 * 1024);
        assert!(pool.idle.is_empty());
        assert_eq!(pool.expire(t0 + POOL_IDLE * 10).len(), 0);

        let phc = hash_password("pooled memory check 1").unwrap();
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let phc = phc.clone();
                std::thread::spawn(move || {
                    assert!(verify_password("pooled memory check 1", &phc));
                    assert!(!verify_password("pooled memory check 2", &phc));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let pool = BLOCK_POOL.lock().unwrap();
        assert!(
            pool.idle.len() <= hash_slots(),
            "{} pooled",
            pool.idle.len()
        );
        assert!(
            pool.idle
                .iter()
                .all(|(b, _)| b.iter().all(|blk| blk.as_ref().iter().all(|w| *w == 0))),
            "pooled buffers are wiped"
        );
    }

    /// Through the async entry point, pooled buffers are freed by the sweeper once idle (other
    /// tests of this binary may verify meanwhile, so the pool has until a generous deadline).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_verify_buffers_are_freed_by_the_sweeper() {
        let phc = hash_password("swept memory check 1").unwrap();
        assert!(
            verify_async("swept memory check 1".into(), Some(phc))
                .await
                .unwrap()
        );
        let deadline = Instant::now() + POOL_IDLE * 10;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if BLOCK_POOL.lock().unwrap().idle.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "idle verify buffers were not freed"
            );
        }
    }

    #[test]
    fn salts_differ() {
        let a = hash_password("same password here").unwrap();
        let b = hash_password("same password here").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn nfkc_equivalent_forms_match() {
        // "é" precomposed vs "e" + combining acute.
        let h = hash_password("caf\u{e9} au lait tous les jours").unwrap();
        assert!(verify_password("cafe\u{301} au lait tous les jours", &h));
    }

    #[test]
    fn dummy_hash_matches_current_params() {
        assert!(!needs_rehash(DUMMY_HASH), "regenerate DUMMY_HASH");
        assert!(parse_stored(DUMMY_HASH).is_some());
        assert!(!verify_dummy("anything"));
    }

    #[test]
    fn dummy_verify_costs_about_a_real_verify() {
        let h = hash_password("some real password 1").unwrap();
        // warm up
        verify_password("x", &h);
        verify_dummy("x");
        let mut real = Vec::new();
        let mut dummy = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            verify_password("wrong password", &h);
            real.push(t.elapsed());
            let t = Instant::now();
            verify_dummy("wrong password");
            dummy.push(t.elapsed());
        }
        real.sort();
        dummy.sort();
        let (r, d) = (real[2].as_secs_f64(), dummy[2].as_secs_f64());
        assert!(
            (d / r) > 0.6 && (d / r) < 1.6,
            "median real {r:.4}s vs dummy {d:.4}s"
        );
    }

    #[test]
    fn malformed_or_hostile_stored_hashes_are_refused() {
        assert!(!verify_password("pw", "not a hash"));
        assert!(!verify_password("pw", ""));
        // argon2i (not id)
        assert!(!verify_password(
            "pw",
            "$argon2i$v=19$m=19456,t=3,p=1$5YbhfpOHjafB6GSIfTTHRw$jSPkiZGPlWb2QDbWbdWrlRJ4NGtPMkz/OLIa9ieD9KI"
        ));
        // 4 GiB of memory: refused without allocating it.
        let t = Instant::now();
        assert!(!verify_password(
            "pw",
            "$argon2id$v=19$m=4194304,t=3,p=1$5YbhfpOHjafB6GSIfTTHRw$jSPkiZGPlWb2QDbWbdWrlRJ4NGtPMkz/OLIa9ieD9KI"
        ));
        assert!(t.elapsed().as_secs() < 5);
        assert!(needs_rehash("garbage"));
        assert!(needs_rehash(
            "$argon2id$v=19$m=19456,t=2,p=1$5YbhfpOHjafB6GSIfTTHRw$jSPkiZGPlWb2QDbWbdWrlRJ4NGtPMkz/OLIa9ieD9KI"
        ));
    }

    #[test]
    fn overlong_password_refused() {
        let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(hash_password(&long), Err(PasswordError::TooLong)));
        assert!(!verify_password(&long, DUMMY_HASH));
    }

    #[test]
    fn strength_length_counts_chars_not_bytes() {
        assert_eq!(
            check_strength("short", &[]),
            Err(WeakPassword::TooShort { chars: 5 })
        );
        // 11 characters, 22 bytes: too short.
        assert_eq!(
            check_strength("ééééébcdfgh", &[]),
            Err(WeakPassword::TooShort { chars: 11 })
        );
        // 12 two-byte characters are enough.
        assert_eq!(check_strength("ñandú pingüé", &[]), Ok(()));
        assert_eq!(
            check_strength(&"xq7".repeat(86), &[]).unwrap_err(),
            WeakPassword::TooLong
        );
        // Exactly 256 characters is allowed.
        assert_eq!(check_strength(&"xq7 mzpk".repeat(32), &[]), Ok(()));
    }

    #[test]
    fn strength_common_list() {
        assert!(common_list_len() >= 10_000, "{}", common_list_len());
        // On the bundled list (12+ characters), any case.
        assert_eq!(
            check_strength("qwerty123456", &[]),
            Err(WeakPassword::Common)
        );
        assert_eq!(
            check_strength("QWERTY123456", &[]),
            Err(WeakPassword::Common)
        );
        assert_eq!(
            check_strength("1qaz2wsx3edc", &[]),
            Err(WeakPassword::Common)
        );
        // Common word with digits/symbols glued on.
        assert_eq!(
            check_strength("password2024!", &[]),
            Err(WeakPassword::Common)
        );
        assert_eq!(
            check_strength("!!Monkey123456", &[]),
            Err(WeakPassword::Common)
        );
        // Repeated common word, repeated short unit.
        assert_eq!(
            check_strength("dragondragon", &[]),
            Err(WeakPassword::Common)
        );
        assert_eq!(
            check_strength("abcdabcdabcd", &[]),
            Err(WeakPassword::Pattern)
        );
        // No composition rules: all lower-case words are fine.
        assert_eq!(check_strength("tulip gravel sextant", &[]), Ok(()));
        assert_eq!(check_strength("correcthorsebatterystaple", &[]), Ok(()));
    }

    #[test]
    fn strength_patterns() {
        assert_eq!(
            check_strength("aaaaaaaaaaaa", &[]),
            Err(WeakPassword::Pattern)
        );
        assert_eq!(
            check_strength("ababababababx", &[]),
            Err(WeakPassword::Pattern)
        );
        assert_eq!(
            check_strength("abcdefghijklm", &[]),
            Err(WeakPassword::Pattern)
        );
        assert_eq!(
            check_strength("3456789012345", &[]),
            Err(WeakPassword::Pattern)
        );
        assert_eq!(
            check_strength("zyxwvutsrqpo", &[]),
            Err(WeakPassword::Pattern)
        );
    }

    #[test]
    fn strength_context() {
        let ctx = ["alice.smith@example.com", "Alice Smith", "Dewey & Partners"];
        assert_eq!(
            check_strength("my alice.smith@example.com pw", &ctx),
            Err(WeakPassword::ContainsContext)
        );
        assert_eq!(
            check_strength("Smith-for-president-99", &ctx),
            Err(WeakPassword::ContainsContext)
        );
        assert_eq!(
            check_strength("dewey&partners rocks", &ctx),
            Err(WeakPassword::ContainsContext)
        );
        // The e-mail domain alone is not a context word.
        assert_eq!(check_strength("example of a long phrase", &ctx), Ok(()));
        assert_eq!(check_strength("violet orbit canyon", &ctx), Ok(()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_wrappers() {
        let h = hash_password_async("lantern meadow oxide".into())
            .await
            .unwrap();
        assert!(
            verify_async("lantern meadow oxide".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_async("lantern meadow oxid".into(), Some(h))
                .await
                .unwrap()
        );
        assert!(
            !verify_async("lantern meadow oxide".into(), None)
                .await
                .unwrap()
        );
    }
}

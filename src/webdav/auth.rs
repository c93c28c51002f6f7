//! HTTP Basic authentication for the WebDAV front end: the [`Authenticator`] seam and a short
//! success cache.
//!
//! WebDAV clients send their credentials with every request and a password check (Argon2id) costs
//! about 25 ms, so successful checks are cached for a short time ([`AuthCache`], 60 s by default).
//! Failures are never cached: each one reaches the authenticator, which counts it toward lockout.
//!
//! Cache entries must die when credentials or access change. The cache can follow an external
//! counter ([`AuthCache::with_epoch_source`]; the portal front end uses
//! [`crate::Portal::access_epoch`], which every password change, disabled login, revoked grant or
//! other access change bumps): an entry made under an older value is dead, so such a change takes
//! effect on the very next request of an already connected client. Explicit invalidation also
//! exists: [`AuthCache::invalidate_user`] for one login and [`AuthCache::bump_generation`] for
//! all. A check that was already running when an invalidation happened does not insert its
//! result.
//!
//! Clients open several connections at once with the same credentials (Finder and Explorer on
//! mount, rclone and curl transferring in parallel). On a cache miss those requests would each
//! run Argon2id; instead the first runs the check and the others with the same (user, password)
//! wait for it and then take the cached result ([`AuthCache::begin_check`]). A failure is not
//! shared: each waiter then runs its own check, so each failure still counts toward lockout.

use async_trait::async_trait;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user, wrong password, or a disabled login (the client is not told which).
    #[error("authentication failed")]
    InvalidCredentials,
    /// Too many failures: retry after the given number of seconds.
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    LockedOut {
        /// Seconds until another attempt is accepted.
        retry_after_secs: u64,
    },
    /// The check itself could not run (storage error, shutting down).
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::Error> for AuthError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::AuthenticationFailed => AuthError::InvalidCredentials,
            crate::Error::LockedOut { retry_after_secs } => {
                AuthError::LockedOut { retry_after_secs }
            }
            other => AuthError::Unavailable(other.to_string()),
        }
    }
}

/// Verifies Basic credentials and yields the principal `P`.
///
/// Verification (password hashing, lockout counting) is the implementor's business and should run
/// off the async threads (`spawn_blocking`). The server calls this only on a cache miss.
#[async_trait]
pub trait Authenticator<P>: Send + Sync + 'static {
    /// Checks `user`/`pass` presented by the client at `remote`.
    async fn authenticate_basic(
        &self,
        user: &str,
        pass: &str,
        remote: SocketAddr,
    ) -> Result<P, AuthError>;
}

struct Entry<P> {
    /// Lower-cased user name, for [`AuthCache::invalidate_user`].
    user_folded: String,
    principal: P,
    expires: Instant,
    generation: u64,
    /// The external epoch when the check started.
    source_epoch: u64,
}

/// A counter that moves whenever credentials or access rights change (see
/// [`AuthCache::with_epoch_source`]).
pub type EpochSource = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// A bounded, short-lived cache of successful logins, keyed by an HMAC of (user, password) under
/// a per-process random key (the cache never holds a password or a reusable hash of one).
pub struct AuthCache<P> {
    key: ring::hmac::Key,
    ttl: Duration,
    capacity: usize,
    map: Mutex<HashMap<[u8; 32], Entry<P>>>,
    /// Entries from an older generation are dead.
    generation: AtomicU64,
    /// Bumped by every invalidation; a check that saw another value does not insert.
    epoch: AtomicU64,
    /// An external counter; entries made under another value are dead.
    source: Option<EpochSource>,
    /// Checks running now, by cache key (see [`AuthCache::begin_check`]).
    inflight: Mutex<HashMap<[u8; 32], Arc<CheckSlot>>>,
}

impl<P> std::fmt::Debug for AuthCache<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("generation", &self.generation.load(Ordering::SeqCst))
            .finish()
    }
}

/// A ticket taken before a credential check; the result may be cached only if no invalidation
/// happened meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct CacheTicket {
    epoch: u64,
    generation: u64,
    source_epoch: u64,
}

impl<P: Clone> AuthCache<P> {
    /// A cache holding at most `capacity` successes for `ttl` each. A zero `ttl` or `capacity`
    /// disables caching.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // `generate` only fails if the OS random source fails; fall back to a fixed-length key
        // from the time so the server still works (the cache key is not a secret defence).
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &t.to_le_bytes())
        });
        AuthCache {
            key,
            ttl,
            capacity,
            map: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            source: None,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Ties the cache to an external counter (e.g. [`crate::Portal::access_epoch`]): a cached
    /// login is used only while the counter still has the value it had when the login was
    /// checked.
    pub fn with_epoch_source(mut self, source: EpochSource) -> Self {
        self.source = Some(source);
        self
    }

    fn source_epoch(&self) -> u64 {
        self.source.as_ref().map(|f| f()).unwrap_or(0)
    }

    fn cache_key(&self, user: &str, pass: &str) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user.as_bytes());
        ctx.update(pass.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The cached principal for these credentials, if a live entry exists.
    pub fn get(&self, user: &str, pass: &str) -> Option<P> {
        if self.ttl.is_zero() || self.capacity == 0 {
            return None;
        }
        let k = self.cache_key(user, pass);
        let now = Instant::now();
        let generation = self.generation.load(Ordering::SeqCst);
        let source_epoch = self.source_epoch();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&k) {
            Some(e)
                if e.expires > now
                    && e.generation == generation
                    && e.source_epoch == source_epoch =>
            {
                Some(e.principal.clone())
            }
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Waits until no other check of the same (user, password) is running, then returns a guard
    /// that marks this one as running until it is dropped. Call on a cache miss, then look the
    /// credentials up again ([`AuthCache::get`]): a check that finished meanwhile has cached its
    /// success. With caching disabled this returns at once and serialises nothing.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use sdx_portal::webdav::AuthCache;
    /// use std::time::Duration;
    /// let cache: AuthCache<u32> = AuthCache::new(Duration::from_secs(60), 16);
    /// let running = cache.begin_check("jane", "pw").await;
    /// let ticket = cache.ticket();
    /// // ... verify the password (Argon2id), then:
    /// cache.insert(ticket, "jane", "pw", 7);
    /// drop(running);
    /// // A request that waited in `begin_check` meanwhile now finds the result:
    /// let _next = cache.begin_check("jane", "pw").await;
    /// assert_eq!(cache.get("jane", "pw"), Some(7));
    /// # });
    /// ```
    pub async fn begin_check(&self, user: &str, pass: &str) -> CheckGuard<'_, P> {
        if self.ttl.is_zero() || self.capacity == 0 {
            return CheckGuard {
                cache: self,
                held: None,
            };
        }
        let key = self.cache_key(user, pass);
        let slot = {
            let mut m = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            // Slots nobody holds any more (a waiter whose request was cancelled can leave one):
            // only the map refers to them, and new references are made only under this lock.
            m.retain(|_, s| Arc::strong_count(s) > 1);
            m.entry(key).or_default().clone()
        };
        let guard = slot.clone().lock_owned().await;
        CheckGuard {
            cache: self,
            held: Some((key, slot, guard)),
        }
    }

    /// Take before checking credentials; pass to [`AuthCache::insert`].
    pub fn ticket(&self) -> CacheTicket {
        CacheTicket {
            epoch: self.epoch.load(Ordering::SeqCst),
            generation: self.generation.load(Ordering::SeqCst),
            source_epoch: self.source_epoch(),
        }
    }

    /// Caches a success, unless an invalidation happened since `ticket` was taken.
    pub fn insert(&self, ticket: CacheTicket, user: &str, pass: &str, principal: P) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let k = self.cache_key(user, pass);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the map lock: invalidations take the same lock after bumping the epoch.
        if self.epoch.load(Ordering::SeqCst) != ticket.epoch
            || self.source_epoch() != ticket.source_epoch
        {
            return;
        }
        if map.len() >= self.capacity && !map.contains_key(&k) {
            map.retain(|_, e| {
                e.expires > now
                    && e.generation == ticket.generation
                    && e.source_epoch == ticket.source_epoch
            });
            if map.len() >= self.capacity {
                // Still full: drop the entry closest to expiry.
                if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            k,
            Entry {
                user_folded: user.to_lowercase(),
                principal,
                expires: now + self.ttl,
                generation: ticket.generation,
                source_epoch: ticket.source_epoch,
            },
        );
    }

    /// Drops every entry of `user` (compared case-insensitively): call on any credential change
    /// of that login (password, app password, disabled, deleted).
    pub fn invalidate_user(&self, user: &str) {
        let folded = user.to_lowercase();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, e| e.user_folded != folded);
    }

    /// Drops every entry: call when something changed that may affect any login.
    pub fn bump_generation(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.clear();
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Number of entries (live or not yet swept).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A credential check in progress (from [`AuthCache::begin_check`]); dropping it lets the next
/// request with the same credentials proceed.
#[must_use = "the check counts as running only while the guard is held"]
pub struct CheckGuard<'a, P> {
    cache: &'a AuthCache<P>,
    held: Option<([u8; 32], Arc<CheckSlot>, tokio::sync::OwnedMutexGuard<()>)>,
}

/// What requests with the same credentials queue on while one of them is being checked.
type CheckSlot = tokio::sync::Mutex<()>;

impl<P> std::fmt::Debug for CheckGuard<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckGuard")
            .field("held", &self.held.is_some())
            .finish()
    }
}

impl<P> Drop for CheckGuard<'_, P> {
    fn drop(&mut self) {
        if let Some((key, slot, guard)) = self.held.take() {
            let mut m = self
                .cache
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Under the map lock (where every new reference is made): release the check, then
            // forget the slot if nobody else waits on it — only the map and `slot` refer to it
            // then. Waiters hold references and take the slot in turn.
            drop(guard);
            if m.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) && Arc::strong_count(&slot) <= 2 {
                m.remove(&key);
            }
            drop(slot);
        }
    }
}

/// Longest `Authorization` header value accepted.
const MAX_AUTH_HEADER: usize = 4096;

/// Parses `Authorization: Basic …` into (user, password). `None` for anything malformed.
pub(crate) fn parse_basic(value: &http::HeaderValue) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = value.as_bytes();
    if bytes.len() > MAX_AUTH_HEADER {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?.trim();
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hits_expires_and_invalidates() {
        let c: AuthCache<u32> = AuthCache::new(Duration::from_millis(200), 10);
        assert_eq!(c.get("jane", "pw"), None);
        let t = c.ticket();
        c.insert(t, "jane", "pw", 7);
        assert_eq!(c.get("jane", "pw"), Some(7));
        assert_eq!(
            c.get("jane", "other"),
            None,
            "a different password must miss"
        );
        c.invalidate_user("JANE");
        assert_eq!(c.get("jane", "pw"), None);

        // A check started before an invalidation does not insert.
        let t = c.ticket();
        c.invalidate_user("bob");
        c.insert(t, "jane", "pw", 7);
        assert_eq!(c.get("jane", "pw"), None);

        let t = c.ticket();
        c.insert(t, "jane", "pw", 7);
        c.bump_generation();
        assert_eq!(c.get("jane", "pw"), None);

        let t = c.ticket();
        c.insert(t, "jane", "pw", 7);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.get("jane", "pw"), None, "expired");
    }

    #[test]
    fn cache_follows_the_epoch_source() {
        let counter = std::sync::Arc::new(AtomicU64::new(5));
        let c2 = counter.clone();
        let c: AuthCache<u32> = AuthCache::new(Duration::from_secs(60), 10)
            .with_epoch_source(std::sync::Arc::new(move || c2.load(Ordering::SeqCst)));
        let t = c.ticket();
        c.insert(t, "jane", "pw", 7);
        assert_eq!(c.get("jane", "pw"), Some(7));
        counter.fetch_add(1, Ordering::SeqCst);
        assert_eq!(c.get("jane", "pw"), None, "access changed: re-check");
        // A check that started before the change does not insert.
        let t = c.ticket();
        counter.fetch_add(1, Ordering::SeqCst);
        c.insert(t, "jane", "pw", 7);
        assert_eq!(c.get("jane", "pw"), None);
        let t = c.ticket();
        c.insert(t, "jane", "pw", 7);
        assert_eq!(c.get("jane", "pw"), Some(7));
    }

    /// The server's flow: cache, wait for a running check of the same credentials, cache again,
    /// else check. Returns how many checks ran.
    async fn concurrent_logins(
        c: Arc<AuthCache<u32>>,
        creds: Vec<(&'static str, &'static str)>,
        ok: bool,
    ) -> usize {
        let checks = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (u, p) in creds {
            let (c, checks) = (c.clone(), checks.clone());
            tasks.push(tokio::spawn(async move {
                if c.get(u, p).is_some() {
                    return;
                }
                let _running = c.begin_check(u, p).await;
                if c.get(u, p).is_some() {
                    return;
                }
                let t = c.ticket();
                checks.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                if ok {
                    c.insert(t, u, p, 7);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Finished checks leave nothing held: at most unreferenced slots, swept by the next check.
        assert!(
            c.inflight
                .lock()
                .unwrap()
                .values()
                .all(|s| Arc::strong_count(s) == 1),
            "a finished check still holds its slot"
        );
        drop(c.begin_check("someone", "else").await);
        assert!(c.inflight.lock().unwrap().is_empty(), "slots are swept");
        checks.load(Ordering::SeqCst) as usize
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_logins_with_the_same_credentials_check_once() {
        let c = Arc::new(AuthCache::new(Duration::from_secs(60), 16));
        assert_eq!(concurrent_logins(c, vec![("jane", "pw"); 8], true).await, 1);
        // Different passwords (or users) are different checks.
        let c = Arc::new(AuthCache::new(Duration::from_secs(60), 16));
        let creds = vec![("jane", "a"), ("jane", "b"), ("bob", "a"), ("jane", "a")];
        assert_eq!(concurrent_logins(c, creds, true).await, 3);
        // A failure is not shared: every request runs (and is counted for lockout) itself.
        let c = Arc::new(AuthCache::new(Duration::from_secs(60), 16));
        assert_eq!(
            concurrent_logins(c, vec![("jane", "bad"); 5], false).await,
            5
        );
        // With the cache off nothing waits for anything.
        let c = Arc::new(AuthCache::new(Duration::ZERO, 16));
        assert_eq!(concurrent_logins(c, vec![("jane", "pw"); 4], true).await, 4);
    }

    #[test]
    fn cache_is_bounded() {
        let c: AuthCache<usize> = AuthCache::new(Duration::from_secs(60), 8);
        for i in 0..100 {
            let t = c.ticket();
            c.insert(t, &format!("u{i}"), "pw", i);
        }
        assert!(c.len() <= 8, "{}", c.len());
        assert_eq!(c.get("u99", "pw"), Some(99));
    }

    #[test]
    fn basic_header_parsing() {
        let h = |s: &str| http::HeaderValue::from_str(s).unwrap();
        // "jane:pa:ss" -> the password may contain colons.
        assert_eq!(
            parse_basic(&h("Basic amFuZTpwYTpzcw==")),
            Some(("jane".into(), "pa:ss".into()))
        );
        assert_eq!(
            parse_basic(&h("basic   amFuZTpwYTpzcw==")),
            Some(("jane".into(), "pa:ss".into()))
        );
        assert_eq!(parse_basic(&h("Bearer abc")), None);
        assert_eq!(parse_basic(&h("Basic !!!")), None);
        assert_eq!(parse_basic(&h("Basic bm9jb2xvbg==")), None); // "nocolon"
        assert_eq!(parse_basic(&h("Basic OnB3")), None); // ":pw", empty user
        let long = format!("Basic {}", "A".repeat(5000));
        assert_eq!(parse_basic(&h(&long)), None);
    }
}

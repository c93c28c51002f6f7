//! Brute-force defence shared by every front end (WebDAV Basic auth, SFTP password auth, the
//! accept and reset pages).
//!
//! Failed attempts are counted per **login name** (as typed, so unknown names are throttled
//! exactly like real ones and the answer can't reveal which exist) and per **source address**
//! (IPv6 addresses grouped by /64, since one host usually owns a whole /64). After a few failures
//! each further attempt must wait an escalating delay; after `block_after` failures the key is
//! blocked for `block_secs`.
//!
//! Use, for every password attempt:
//! 1. [`Throttle::begin`] *before* verifying. `Err(refusal)` means don't verify: for a
//!    [`RefusalKind::Blocked`] key answer "locked out, retry after N s" at once; for a
//!    [`RefusalKind::Delay`] or [`RefusalKind::Busy`] one, the caller may wait
//!    `retry_after` and ask again (what [`crate::Portal::authenticate_password_from`] does, so
//!    a person who mistypes once simply waits half a second longer).
//! 2. Verify (always, also for unknown logins: see [`super::password::verify_dummy`]).
//! 3. Settle the returned [`Attempt`]: [`Attempt::failed`] or [`Attempt::succeeded`]. An
//!    attempt dropped unsettled (storage error, client gone) gives its reservation back.
//!
//! The older [`Throttle::check`] / [`Throttle::record_failure`] / [`Throttle::record_success`]
//! calls do the same without the guard, for an address that is always known.
//!
//! A successful reservation counts against the remaining budget while in flight, so a burst
//! of 50 simultaneous guesses can't slip past a limit of 5. A reservation never settled lapses
//! after 30 s.
//!
//! After a block ends the key gets one more attempt before it is blocked again, until it has
//! gone `forget_after_secs` without a failure or a login succeeds: a patient attacker gets
//! ~4 guesses an hour per login, not 5 per 15 minutes.
//!
//! A success resets the *login*'s counter but not the address's: otherwise an attacker holding
//! one valid account could log into it between guesses at others to wipe their address's record.
//!
//! Memory is bounded: each table holds at most `max_entries` keys. When full, stale entries are
//! dropped first, then the least recently seen eighth (blocked keys last), so spraying names or
//! addresses costs the attacker their own counters before anyone's block.
//!
//! Blocking a login also locks its owner out for a while (the classic trade-off); the
//! per-address limit, the escalating delay and staff being able to see blocks in the audit
//! trail are the mitigations. Times are injectable (`*_at` methods) for tests.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long an unsettled reservation from [`Throttle::check`] counts as in flight.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A refused key's refusal is reported for auditing at most this often.
pub const REFUSAL_NOTE_EVERY: Duration = Duration::from_secs(60);

/// Why an attempt may not go ahead now. Ordered by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalKind {
    /// Too many attempts are in flight for the remaining budget: retry shortly.
    Busy,
    /// The escalating delay after a failure has not passed yet.
    Delay,
    /// The login or address is blocked.
    Blocked,
}

/// An attempt refused by [`Throttle::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub kind: RefusalKind,
    /// When another attempt may go ahead.
    pub retry_after: Duration,
    /// True for the first refusal of a blocked key in [`REFUSAL_NOTE_EVERY`]: record it in the
    /// audit trail (the others would only flood it).
    pub audit: bool,
}

/// What a failed attempt led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Failure {
    /// The wait now imposed before the next attempt, if any.
    pub wait: Option<Duration>,
    /// Set if this failure blocked the login: for how long.
    pub login_blocked: Option<Duration>,
    /// Set if this failure blocked the source address: for how long.
    pub address_blocked: Option<Duration>,
}

/// A reserved password attempt (see [`Throttle::begin`]). Settle it with
/// [`Attempt::succeeded`] or [`Attempt::failed`]; dropping it unsettled gives the reservation
/// back without counting anything.
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    login: String,
    ip: Option<IpAddr>,
    settled: bool,
}

impl Attempt<'_> {
    /// The credentials were right: clears the login's counters.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle
            .succeed_at(&self.login, self.ip, Instant::now());
    }

    /// The credentials were wrong (or the login unknown or disabled): counts a failure.
    pub fn failed(self) -> Failure {
        self.failed_at(Instant::now())
    }

    /// [`Attempt::failed`] at a given time (tests).
    pub fn failed_at(mut self, now: Instant) -> Failure {
        self.settled = true;
        self.throttle.fail_at(&self.login, self.ip, now)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.release(&self.login, self.ip);
        }
    }
}

/// Thresholds for one kind of key (login name or source address).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// Delay after the first failure past `free_failures`, in milliseconds; doubles with each
    /// further failure.
    pub base_delay_ms: u64,
    /// Upper bound of the delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Failures after which the key is blocked.
    pub block_after: u32,
    /// Length of a block, in seconds.
    pub block_secs: u64,
}

impl Limits {
    /// Per login: a delay from the first failure (0.5 s, 1 s, 2 s, 4 s), blocked 15 min after 5.
    pub fn login_default() -> Limits {
        Limits {
            free_failures: 0,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
            block_after: 5,
            block_secs: 900,
        }
    }
    /// Per address: 5 free failures (an office behind one NAT), then 0.5 s doubling up to
    /// 30 s, blocked 15 min after 20.
    pub fn address_default() -> Limits {
        Limits {
            free_failures: 5,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
            block_after: 20,
            block_secs: 900,
        }
    }

    /// The wait imposed after `failures` failures (zero if none).
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures - 1).min(63);
        let ms = self
            .base_delay_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay_ms);
        Duration::from_millis(ms)
    }

    fn block_after(&self) -> u32 {
        self.block_after.max(1)
    }
}

/// Configuration of the [`Throttle`], as read from the `[throttle]` table of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Limits per login name.
    pub per_login: Limits,
    /// Limits per source address.
    pub per_address: Limits,
    /// Failure counters are forgotten after this many seconds without a failure (default 3600).
    pub forget_after_secs: u64,
    /// Most keys kept per table (default 20,000; at ~100 bytes each, about 4 MB in all).
    pub max_entries: usize,
    /// IPv6 addresses are grouped by this prefix length (default 64).
    pub ipv6_prefix: u8,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            per_login: Limits::login_default(),
            per_address: Limits::address_default(),
            forget_after_secs: 3600,
            max_entries: 20_000,
            ipv6_prefix: 64,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    failures: u32,
    in_flight: u32,
    in_flight_at: Instant,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    last_seen: Instant,
    /// When a refusal of this key was last reported for auditing.
    refusal_noted: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            in_flight: 0,
            in_flight_at: now,
            last_failure: None,
            blocked_until: None,
            last_seen: now,
            refusal_noted: None,
        }
    }

    /// Applies the passage of time: ends blocks, forgets old failures, drops lapsed reservations.
    fn refresh(&mut self, limits: &Limits, forget_after: Duration, now: Instant) {
        if let Some(until) = self.blocked_until
            && until <= now
        {
            self.blocked_until = None;
            // One more strike re-blocks.
            self.failures = limits.block_after().saturating_sub(1);
        }
        if self.blocked_until.is_none()
            && self
                .last_failure
                .is_some_and(|t| now.saturating_duration_since(t) >= forget_after)
        {
            self.failures = 0;
            self.last_failure = None;
        }
        if now.saturating_duration_since(self.in_flight_at) >= ATTEMPT_TIMEOUT {
            self.in_flight = 0;
        }
    }

    /// How long to wait before the next attempt, if at all.
    fn retry_after(&self, limits: &Limits, now: Instant) -> Option<Duration> {
        self.refusal(limits, now).map(|(_, d)| d)
    }

    /// Why and how long the next attempt must wait, if at all.
    fn refusal(&self, limits: &Limits, now: Instant) -> Option<(RefusalKind, Duration)> {
        if let Some(until) = self.blocked_until {
            return Some((RefusalKind::Blocked, until.saturating_duration_since(now)));
        }
        if let Some(last) = self.last_failure {
            let free_at = last + limits.delay_after(self.failures);
            if free_at > now {
                return Some((RefusalKind::Delay, free_at - now));
            }
        }
        if self.failures.saturating_add(self.in_flight) >= limits.block_after() {
            // Too many attempts in flight for the remaining budget: come back when they settle.
            return Some((
                RefusalKind::Busy,
                Duration::from_millis(limits.base_delay_ms.clamp(10, 100)),
            ));
        }
        None
    }

    fn is_stale(&self, forget_after: Duration, now: Instant) -> bool {
        self.blocked_until.is_none_or(|u| u <= now)
            && (self.in_flight == 0
                || now.saturating_duration_since(self.in_flight_at) >= ATTEMPT_TIMEOUT)
            && self
                .last_failure
                .is_none_or(|t| now.saturating_duration_since(t) >= forget_after)
    }
}

struct Table<K> {
    map: HashMap<K, Entry>,
    limits: Limits,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limits: Limits) -> Self {
        Table {
            map: HashMap::new(),
            limits,
        }
    }

    /// Makes room for one more key if the table is full.
    fn make_room(&mut self, max: usize, forget_after: Duration, now: Instant) {
        if self.map.len() < max {
            return;
        }
        self.map.retain(|_, e| !e.is_stale(forget_after, now));
        if self.map.len() < max {
            return;
        }
        let evict = (max / 8).max(1).min(self.map.len());
        let mut ranked: Vec<(bool, Instant, K)> = self
            .map
            .iter()
            .map(|(k, e)| {
                (
                    e.blocked_until.is_some_and(|u| u > now),
                    e.last_seen,
                    k.clone(),
                )
            })
            .collect();
        ranked.select_nth_unstable_by(evict - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, k) in ranked.iter().take(evict) {
            self.map.remove(k);
        }
        tracing::debug!(
            evicted = evict,
            "throttle table full; evicted least recently seen keys"
        );
    }

    fn entry(&mut self, key: &K, max: usize, forget_after: Duration, now: Instant) -> &mut Entry {
        if !self.map.contains_key(key) {
            self.make_room(max, forget_after, now);
        }
        let limits = &self.limits;
        let e = self
            .map
            .entry(key.clone())
            .or_insert_with(|| Entry::new(now));
        e.refresh(limits, forget_after, now);
        e.last_seen = now;
        e
    }

    /// Counts a failure for `key`; returns the wait now imposed and whether this failure started
    /// a block.
    fn fail(
        &mut self,
        key: &K,
        max: usize,
        forget_after: Duration,
        now: Instant,
    ) -> (Option<Duration>, bool) {
        let limits = self.limits.clone();
        let e = self.entry(key, max, forget_after, now);
        e.in_flight = e.in_flight.saturating_sub(1);
        e.failures = e.failures.saturating_add(1);
        e.last_failure = Some(now);
        let mut newly = false;
        if e.failures >= limits.block_after() && e.blocked_until.is_none() {
            e.blocked_until = Some(now + Duration::from_secs(limits.block_secs));
            newly = true;
        }
        (e.retry_after(&limits, now), newly)
    }

    /// Gives back an unsettled reservation without counting anything.
    fn release(&mut self, key: &K) {
        if let Some(e) = self.map.get_mut(key) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    /// The refusal for `key` now, if any; `noted` says whether a blocked refusal should be
    /// reported (at most once per [`REFUSAL_NOTE_EVERY`] per key).
    fn peek_refusal(
        &mut self,
        key: &K,
        forget_after: Duration,
        now: Instant,
    ) -> Option<(RefusalKind, Duration, bool)> {
        let limits = &self.limits;
        let e = self.map.get_mut(key)?;
        e.refresh(limits, forget_after, now);
        e.last_seen = now;
        let (kind, wait) = e.refusal(limits, now)?;
        let mut noted = false;
        if kind == RefusalKind::Blocked
            && e.refusal_noted
                .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_NOTE_EVERY)
        {
            e.refusal_noted = Some(now);
            noted = true;
        }
        Some((kind, wait, noted))
    }
}

struct Inner {
    logins: Table<[u8; 32]>,
    addresses: Table<IpAddr>,
}

/// In-memory attempt counters per login name and per source address. Cheap to share
/// (`Arc<Throttle>`); every method takes a short lock and never blocks on I/O.
pub struct Throttle {
    config: ThrottleConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (l, a) = self.len();
        f.debug_struct("Throttle")
            .field("config", &self.config)
            .field("logins", &l)
            .field("addresses", &a)
            .finish()
    }
}

/// Canonical key for a login name: trimmed, lower-cased, hashed (so a long name costs no more
/// memory than a short one).
fn login_key(login: &str) -> [u8; 32] {
    let canon = login.trim().to_lowercase();
    let d = ring::digest::digest(&ring::digest::SHA256, canon.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Throttle {
    /// A throttle with the given thresholds.
    pub fn new(config: ThrottleConfig) -> Throttle {
        let inner = Inner {
            logins: Table::new(config.per_login.clone()),
            addresses: Table::new(config.per_address.clone()),
        };
        Throttle {
            config,
            inner: Mutex::new(inner),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay meaningful even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_after(&self) -> Duration {
        Duration::from_secs(self.config.forget_after_secs)
    }

    fn max_entries(&self) -> usize {
        self.config.max_entries.max(1)
    }

    /// The address key: IPv4-mapped IPv6 as IPv4, other IPv6 masked to the configured prefix.
    fn address_key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpAddr::V4(v4);
                }
                let prefix = u32::from(self.config.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// May `login` try a password from `ip` now? `Err(retry_after)` if not. `Ok` reserves the
    /// attempt: settle it with [`Throttle::record_failure`] or [`Throttle::record_success`].
    pub fn check(&self, login: &str, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(login, ip, Instant::now())
    }

    /// [`Throttle::check`] at a given time (tests).
    pub fn check_at(&self, login: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.reserve_at(login, Some(ip), now)
            .map_err(|r| r.retry_after)
    }

    /// Reserves an attempt for `login` from `ip` (`None`: no address known, e.g. the library
    /// API; only the login's counters apply). See [`Throttle::begin`] for the guarded form.
    fn reserve_at(&self, login: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
        let lk = login_key(login);
        let ak = ip.map(|ip| self.address_key(ip));
        let (fa, max) = (self.forget_after(), self.max_entries());
        let mut guard = self.lock();
        let inner = &mut *guard;
        let refusals = [
            inner.logins.peek_refusal(&lk, fa, now),
            ak.and_then(|ak| inner.addresses.peek_refusal(&ak, fa, now)),
        ];
        let worst = refusals
            .iter()
            .flatten()
            .max_by_key(|(kind, wait, _)| (*kind, *wait))
            .copied();
        if let Some((kind, retry_after, _)) = worst {
            let audit = refusals.iter().flatten().any(|(_, _, noted)| *noted);
            return Err(Refusal {
                kind,
                retry_after,
                audit,
            });
        }
        let e = inner.logins.entry(&lk, max, fa, now);
        e.in_flight = e.in_flight.saturating_add(1);
        e.in_flight_at = now;
        if let Some(ak) = ak {
            let e = inner.addresses.entry(&ak, max, fa, now);
            e.in_flight = e.in_flight.saturating_add(1);
            e.in_flight_at = now;
        }
        Ok(())
    }

    /// Starts a password attempt for `login` from `ip` (`None` when no address is known: only
    /// the login's counters apply). `Err` says why it may not go ahead now and for how long.
    /// The returned guard must be settled with [`Attempt::succeeded`] or [`Attempt::failed`];
    /// dropped unsettled (an error, a client that went away) it gives the reservation back
    /// without counting a failure.
    pub fn begin(&self, login: &str, ip: Option<IpAddr>) -> Result<Attempt<'_>, Refusal> {
        self.begin_at(login, ip, Instant::now())
    }

    /// [`Throttle::begin`] at a given time (tests).
    pub fn begin_at(
        &self,
        login: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt<'_>, Refusal> {
        self.reserve_at(login, ip, now)?;
        Ok(Attempt {
            throttle: self,
            login: login.to_owned(),
            ip,
            settled: false,
        })
    }

    /// If `ip` is blocked (per-address block only, not delays or a login's block), how long for.
    /// For credentials that can't be guessed (SSH keys): a login's block, caused by someone
    /// guessing its password, must not lock out its owner's key.
    pub fn address_blocked(&self, ip: IpAddr) -> Option<Duration> {
        let ak = self.address_key(ip);
        let fa = self.forget_after();
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.addresses.peek_refusal(&ak, fa, now) {
            Some((RefusalKind::Blocked, d, _)) => Some(d),
            _ => None,
        }
    }

    /// Forgets everything about `login` (after its owner proved who they are some other way,
    /// e.g. a password reset through their mailbox).
    pub fn clear_login(&self, login: &str) {
        let lk = login_key(login);
        self.lock().logins.map.remove(&lk);
    }

    /// Records a failed attempt (wrong password, unknown login, disabled login…). Returns the
    /// wait now imposed before the next attempt, if any (the block length once blocked).
    pub fn record_failure(&self, login: &str, ip: IpAddr) -> Option<Duration> {
        self.record_failure_at(login, ip, Instant::now())
    }

    /// [`Throttle::record_failure`] at a given time (tests).
    pub fn record_failure_at(&self, login: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.fail_at(login, Some(ip), now).wait
    }

    fn fail_at(&self, login: &str, ip: Option<IpAddr>, now: Instant) -> Failure {
        let lk = login_key(login);
        let ak = ip.map(|ip| self.address_key(ip));
        let (fa, max) = (self.forget_after(), self.max_entries());
        let mut inner = self.lock();
        let (a, a_new) = inner.logins.fail(&lk, max, fa, now);
        let (b, b_new) = match ak {
            Some(ak) => inner.addresses.fail(&ak, max, fa, now),
            None => (None, false),
        };
        Failure {
            wait: a.max(b),
            login_blocked: a_new.then(|| a.unwrap_or_default()),
            address_blocked: b_new.then(|| b.unwrap_or_default()),
        }
    }

    /// Records a successful login: clears the login's counters and settles the address's
    /// reservation (the address keeps its failure count).
    pub fn record_success(&self, login: &str, ip: IpAddr) {
        self.record_success_at(login, ip, Instant::now());
    }

    /// [`Throttle::record_success`] at a given time (tests).
    pub fn record_success_at(&self, login: &str, ip: IpAddr, now: Instant) {
        self.succeed_at(login, Some(ip), now);
    }

    fn succeed_at(&self, login: &str, ip: Option<IpAddr>, now: Instant) {
        let lk = login_key(login);
        let fa = self.forget_after();
        let mut inner = self.lock();
        inner.logins.map.remove(&lk);
        if let Some(ip) = ip {
            let ak = self.address_key(ip);
            let limits = inner.addresses.limits.clone();
            if let Some(e) = inner.addresses.map.get_mut(&ak) {
                e.refresh(&limits, fa, now);
                e.in_flight = e.in_flight.saturating_sub(1);
                e.last_seen = now;
            }
        }
    }

    fn release(&self, login: &str, ip: Option<IpAddr>) {
        let lk = login_key(login);
        let mut inner = self.lock();
        inner.logins.release(&lk);
        if let Some(ip) = ip {
            let ak = self.address_key(ip);
            inner.addresses.release(&ak);
        }
    }

    /// Number of keys held: (login names, addresses).
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.logins.map.len(), inner.addresses.map.len())
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One full attempt that fails; panics if the check refuses.
    fn fail(t: &Throttle, login: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        t.check_at(login, ip, now).expect("check refused");
        t.record_failure_at(login, ip, now)
    }

    #[test]
    fn delay_schedule() {
        let l = Limits::login_default();
        let got: Vec<u64> = (0..8)
            .map(|n| l.delay_after(n).as_millis() as u64)
            .collect();
        assert_eq!(got, [0, 500, 1000, 2000, 4000, 8000, 16000, 30000]);
        let a = Limits::address_default();
        assert_eq!(a.delay_after(5), Duration::ZERO);
        assert_eq!(a.delay_after(6), ms(500));
        assert_eq!(a.delay_after(1000), ms(30_000));
        assert_eq!(a.delay_after(u32::MAX), ms(30_000));
    }

    #[test]
    fn escalating_delay_then_block_per_login() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        assert_eq!(fail(&t, "alice", IP, t0), Some(ms(500)));
        // Too early: refused with the remaining wait.
        assert_eq!(t.check_at("alice", IP, t0 + ms(200)), Err(ms(300)));
        // Another login from the same address is not held up by alice's delay.
        assert!(t.check_at("bob", IP, t0 + ms(200)).is_ok());
        t.record_success_at("bob", IP, t0 + ms(200));

        let mut now = t0 + ms(500);
        assert_eq!(fail(&t, "alice", IP, now), Some(ms(1000)));
        now += ms(1000);
        assert_eq!(fail(&t, "alice", IP, now), Some(ms(2000)));
        now += ms(2000);
        assert_eq!(fail(&t, "alice", IP, now), Some(ms(4000)));
        now += ms(4000);
        // Fifth failure: blocked for 15 minutes.
        assert_eq!(fail(&t, "alice", IP, now), Some(Duration::from_secs(900)));
        assert_eq!(
            t.check_at("alice", IP2, now + ms(10_000)),
            Err(Duration::from_secs(890))
        );
        // Same for any spelling of the name.
        assert!(t.check_at(" ALICE ", IP2, now + ms(10_000)).is_err());
        // After the block: one more try, and a failure re-blocks at once.
        let later = now + Duration::from_secs(900);
        assert_eq!(
            fail(&t, "alice", IP2, later),
            Some(Duration::from_secs(900))
        );
        // A success after the block resets everything.
        let much_later = later + Duration::from_secs(900);
        t.check_at("alice", IP2, much_later).unwrap();
        t.record_success_at("alice", IP2, much_later);
        assert_eq!(fail(&t, "alice", IP2, much_later), Some(ms(500)));
    }

    #[test]
    fn unknown_logins_are_throttled_alike() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        let a = fail(&t, "alice", IP, t0);
        let b = fail(&t, "no-such-user", IP2, t0);
        assert_eq!(a, b);
        assert_eq!(
            t.check_at("alice", IP, t0 + ms(100)),
            t.check_at("no-such-user", IP2, t0 + ms(100))
        );
    }

    #[test]
    fn per_address_limit_across_many_names() {
        let t = Throttle::new(ThrottleConfig::default());
        let mut now = Instant::now();
        let limits = Limits::address_default();
        for i in 0..20u32 {
            let r = fail(&t, &format!("user{i}"), IP, now);
            if i < 19 {
                // The name's own first-failure delay (0.5 s) or the address's, whichever is longer.
                assert_eq!(
                    r,
                    Some(limits.delay_after(i + 1).max(ms(500))),
                    "failure {i}"
                );
                now += limits.delay_after(i + 1);
            } else {
                assert_eq!(r, Some(Duration::from_secs(900)));
            }
        }
        // The address is blocked for every name, also a fresh one.
        assert!(t.check_at("fresh-user", IP, now + ms(1)).is_err());
        // Another address is fine.
        assert!(t.check_at("fresh-user", IP2, now + ms(1)).is_ok());
    }

    #[test]
    fn success_does_not_reset_the_address() {
        let t = Throttle::new(ThrottleConfig::default());
        let mut now = Instant::now();
        for i in 0..6 {
            fail(&t, &format!("victim{i}"), IP, now);
            now += Duration::from_secs(60);
        }
        t.check_at("attacker", IP, now).unwrap();
        t.record_success_at("attacker", IP, now);
        // The address has 6 failures: the 7th brings a 1 s delay, as without the success.
        assert_eq!(fail(&t, "victim9", IP, now), Some(ms(1000)));
    }

    #[test]
    fn parallel_burst_cannot_exceed_the_budget() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        let ok = (0..50)
            .filter(|_| t.check_at("alice", IP, now).is_ok())
            .count();
        assert_eq!(ok, 5, "only block_after attempts may be in flight at once");
        for _ in 0..ok {
            t.record_failure_at("alice", IP, now);
        }
        assert_eq!(
            t.check_at("alice", IP, now + ms(1)),
            Err(Duration::from_secs(900) - ms(1))
        );
    }

    #[test]
    fn unsettled_reservations_lapse() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        for _ in 0..5 {
            t.check_at("alice", IP, now).unwrap();
        }
        assert!(t.check_at("alice", IP, now).is_err());
        assert!(t.check_at("alice", IP, now + ATTEMPT_TIMEOUT).is_ok());
    }

    #[test]
    fn failures_are_forgotten() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..4 {
            let w = fail(&t, "alice", IP, now).unwrap_or_default();
            now += w;
        }
        // An hour later the count starts over: the next failure costs 0.5 s, not a block.
        now += Duration::from_secs(3600);
        assert_eq!(fail(&t, "alice", IP, now), Some(ms(500)));
    }

    #[test]
    fn ipv6_grouped_by_prefix_and_mapped_v4() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(t.address_key(a), t.address_key(b));
        assert_ne!(t.address_key(a), t.address_key(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(t.address_key(mapped), IP);
        let cfg = ThrottleConfig {
            ipv6_prefix: 128,
            ..Default::default()
        };
        let t128 = Throttle::new(cfg);
        assert_ne!(t128.address_key(a), t128.address_key(b));
        let t0cfg = ThrottleConfig {
            ipv6_prefix: 0,
            ..Default::default()
        };
        assert_eq!(
            Throttle::new(t0cfg).address_key(a),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
        // Spraying one /64 fills one address entry.
        for i in 0..100u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 0, 0, 1));
            let _ = t.check_at("x", ip, now);
        }
        assert_eq!(t.len().1, 1);
    }

    #[test]
    fn memory_is_bounded_and_blocks_survive_spraying() {
        let cfg = ThrottleConfig {
            max_entries: 64,
            ..Default::default()
        };
        let t = Throttle::new(cfg);
        let mut now = Instant::now();
        // Block alice.
        for _ in 0..5 {
            let w = fail(&t, "alice", IP, now).unwrap_or_default();
            if w < Duration::from_secs(900) {
                now += w;
            }
        }
        assert!(t.check_at("alice", IP2, now).is_err());
        // Spray 10,000 names from 10,000 addresses.
        for i in 0..10_000u32 {
            now += ms(1);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let name = format!("spray{i}");
            if t.check_at(&name, ip, now).is_ok() {
                t.record_failure_at(&name, ip, now);
            }
            let (l, a) = t.len();
            assert!(l <= 64 && a <= 64, "{l} {a}");
        }
        // alice is still blocked (10 s of spraying < 15 min).
        assert!(t.check_at("alice", IP2, now).is_err());
    }

    #[test]
    fn guarded_attempts_kinds_and_release() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        // Dropped unsettled: nothing counted, the reservation is given back.
        for _ in 0..20 {
            let a = t.begin_at("alice", Some(IP), t0).expect("free");
            drop(a);
        }
        assert!(t.begin_at("alice", Some(IP), t0).is_ok());
        // A failure brings a delay refusal, not a block.
        let f = t.begin_at("alice", Some(IP), t0).unwrap().failed_at(t0);
        assert_eq!(f.wait, Some(ms(500)));
        assert_eq!(f.login_blocked, None);
        let r = t.begin_at("alice", Some(IP), t0 + ms(100)).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Delay);
        assert_eq!(r.retry_after, ms(400));
        assert!(!r.audit, "delays are not audited");
        // Busy: five in flight at once.
        let held: Vec<_> = (0..4)
            .map(|_| t.begin_at("bob", Some(IP2), t0).unwrap())
            .collect();
        let fifth = t.begin_at("bob", Some(IP2), t0).unwrap();
        let r = t.begin_at("bob", Some(IP2), t0).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Busy);
        drop(held);
        fifth.succeeded();
        assert!(t.begin_at("bob", Some(IP2), t0).is_ok());
    }

    #[test]
    fn block_is_reported_once_per_window_and_without_address() {
        let t = Throttle::new(ThrottleConfig::default());
        let mut now = Instant::now();
        let mut last = Failure::default();
        for _ in 0..5 {
            last = t
                .begin_at("carol", None, now)
                .expect("not yet blocked")
                .failed_at(now);
            now += last.wait.unwrap_or_default().min(ms(8000));
        }
        assert_eq!(last.login_blocked, Some(Duration::from_secs(900)));
        assert_eq!(last.address_blocked, None);
        let r = t.begin_at("carol", None, now).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Blocked);
        assert!(r.audit, "first refusal of a block is audited");
        let r = t.begin_at("carol", Some(IP), now + ms(10)).unwrap_err();
        assert!(!r.audit, "not again within the window");
        let r = t
            .begin_at("carol", None, now + REFUSAL_NOTE_EVERY + ms(10))
            .unwrap_err();
        assert!(r.audit);
        // No address was involved: the address table stays empty.
        assert_eq!(t.len().1, 0);
        // A login block does not block the address (SSH keys still work from there).
        assert_eq!(t.address_blocked(IP), None);
        t.clear_login("CAROL");
        assert!(t.begin_at("carol", None, now).is_ok());
    }

    #[test]
    fn address_block_is_visible_to_key_logins() {
        let cfg = ThrottleConfig {
            per_address: Limits {
                free_failures: 0,
                base_delay_ms: 1,
                max_delay_ms: 1,
                block_after: 2,
                block_secs: 60,
            },
            ..Default::default()
        };
        let t = Throttle::new(cfg);
        let f1 = t.begin("u1", Some(IP)).unwrap().failed();
        assert_eq!(f1.address_blocked, None);
        std::thread::sleep(ms(5));
        let f2 = t.begin("u2", Some(IP)).unwrap().failed();
        assert_eq!(f2.address_blocked, Some(Duration::from_secs(60)));
        assert!(t.address_blocked(IP).is_some());
        assert!(t.address_blocked(IP2).is_none());
    }

    #[test]
    fn config_from_toml() {
        let c: ThrottleConfig = toml::from_str("").unwrap();
        assert_eq!(c, ThrottleConfig::default());
        let c: ThrottleConfig = toml::from_str(
            "max_entries = 10\n[per_login]\nfree_failures = 1\nbase_delay_ms = 100\nmax_delay_ms = 1000\nblock_after = 3\nblock_secs = 60\n",
        )
        .unwrap();
        assert_eq!(c.per_login.block_after, 3);
        assert_eq!(c.per_address, Limits::address_default());
        assert!(toml::from_str::<ThrottleConfig>("max_entry = 10").is_err());
        // A configured block_after of 0 behaves as 1 rather than refusing everything.
        let c = ThrottleConfig {
            per_login: Limits {
                block_after: 0,
                ..Limits::login_default()
            },
            ..Default::default()
        };
        let t = Throttle::new(c);
        assert!(t.check_at("a", IP, Instant::now()).is_ok());
    }
}

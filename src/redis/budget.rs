//! The fleet retry budget: one token bucket for every replica in Redis,
//! leased to each replica in small batches so that no request waits for a
//! round trip.
//!
//! The bucket fills at the reserve rate (tokens per second) and by `ratio`
//! for every request the fleet sends, up to its cap (by default ten
//! seconds of the reserve, as Finagle's budget keeps ten seconds of
//! deposits). Each replica keeps a small pool of tokens it has leased: a
//! retry takes one from the pool (one atomic operation, no round trip), or
//! is refused when the pool is empty. Every `sync_every` a background task
//! runs one script per replica that reports the requests sent since the
//! last report, refills the bucket, and tops the pool up to what the
//! replica asked for in the last interval (twice its retries, at least one,
//! at most `batch`).
//!
//! **Staleness, worst case**: a deposit funds retries elsewhere up to one
//! `sync_every` later, and a replica can spend up to `batch` tokens it
//! leased before the bucket emptied — so at any instant the fleet can be
//! ahead of the bucket by at most `replicas × batch` retries, and over any
//! window its retries are the bucket's grants plus at most that.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use super::server::Connection;
use ::redis::Script;

use super::link::Link;
use super::server::Server;
use crate::budget::{RatioBudget, RetryBudget, Withdrawal};
use crate::error::{ConfigError, check_f64};
use crate::tally::Count;

/// `KEYS`: the bucket (a hash: `tokens`, `at`). `ARGV`: reserve per ms,
/// ratio, cap, deposits, asked, idle expiry (ms). Returns the tokens granted.
static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or cap
local at = tonumber(state[2]) or now
if at > now then
  at = now
end
tokens = math.min(cap, tokens + (now - at) * tonumber(ARGV[1]) + tonumber(ARGV[4]) * tonumber(ARGV[2]))
local grant = math.max(0, math.min(tonumber(ARGV[5]), math.floor(tokens)))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return grant
",
    )
});

/// A retry budget shared by every replica that builds one with the same
/// server, prefix and name — the reserve and the ratio are the *fleet's* —
/// whose hot path makes no round trip (see the staleness bound in the
/// module docs, repeated here):
///
/// - a retry takes a token this replica leased earlier (an atomic
///   decrement), or is refused;
/// - a request adds to a local count, reported in the background;
/// - every `sync_every` (100 ms by default) one script per replica reports
///   those requests, refills the bucket and tops the local pool up.
///
/// A deposit funds retries up to one `sync_every` later; a replica can
/// spend up to `batch` tokens leased before the bucket emptied, so the
/// fleet is ahead of its budget by at most `replicas × batch` retries.
/// Tokens leased and not spent stay with their replica (at most `batch`).
///
/// A replica spends only what it leased. A new replica has nothing until
/// its first sync (its first retry is refused), and a quiet one holds one
/// token: after a quiet spell, a burst of retries gets that one, then up to
/// twice what it asked for (at most `batch`) at each following sync. Size
/// `batch` and `sync_every` for the bursts a replica must absorb.
///
/// When Redis is unreachable (two syncs in a row failed), each replica
/// falls back to a local [`RatioBudget`] with its share of the reserve
/// (`reserve / replicas`), the same ratio, and a window that keeps about
/// its share of the cap (1 to 10 s), fed the requests sent while Redis is
/// away; a `WARN` event says when Redis is lost,
/// an `INFO` event when it is back. The background task needs a tokio
/// runtime: it starts with the first request, and stops when the last
/// clone of the budget is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use dephase::redis::FleetBudget;
/// use dephase::retry::RetryPolicy;
///
/// # fn main() -> Result<(), dephase::ConfigError> {
/// // 50 retries a second for the whole fleet, plus 10% of its requests.
/// let budget = FleetBudget::builder("redis://127.0.0.1:6379/", "payments")
///     .reserve_per_sec(50.0)
///     .ratio(0.1)
///     .replicas(10) // without Redis: 5 a second each
///     .build()?;
/// let _policy = RetryPolicy::builder().budget(budget).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetBudget {
    shared: Arc<Shared>,
}

struct Shared {
    link: Link,
    name: String,
    key: String,
    reserve_per_sec: f64,
    ratio: f64,
    cap: f64,
    batch: u64,
    sync_every: Duration,
    /// Tokens leased by this replica and not spent.
    pool: AtomicU64,
    /// Requests since the last report.
    deposits: AtomicU64,
    /// Retries asked for since the last sync (granted or not).
    asked: AtomicU64,
    /// Redis was unreachable at the last two syncs: the fallback decides.
    down: AtomicBool,
    /// Syncs that failed in a row.
    failures: AtomicU64,
    fallback: RatioBudget,
    /// The background sync is running (cleared when its task ends, also
    /// when its runtime shuts down: the next caller starts another).
    syncing: AtomicBool,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    granted: Count,
    denied: Count,
    leased: Count,
    syncs: Count,
    failed_syncs: Count,
}

/// What a [`FleetBudget`] did so far in this process.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FleetBudgetStats {
    /// Retries allowed (from the leased pool, or the fallback).
    pub granted: u64,
    /// Retries refused.
    pub denied: u64,
    /// Tokens leased from the fleet's bucket.
    pub leased: u64,
    /// Syncs with Redis that went through.
    pub syncs: u64,
    /// Syncs that could not reach Redis.
    pub failed_syncs: u64,
    /// Tokens in this replica's pool now.
    pub pool: u64,
}

/// The stamp of a withdrawal from the leased pool (the fallback's own
/// receipts carry its time slots, never this).
const POOL: u64 = u64::MAX;

impl FleetBudget {
    /// A builder for the budget `name` on `server` (a URL, or a
    /// [`Server`]: a cluster, TLS).
    pub fn builder(server: impl Into<Server>, name: impl Into<String>) -> FleetBudgetBuilder {
        FleetBudgetBuilder {
            server: server.into(),
            name: name.into(),
            prefix: "dephase:".to_owned(),
            reserve_per_sec: 10.0,
            ratio: 0.2,
            cap: None,
            batch: 10,
            sync_every: Duration::from_millis(100),
            replicas: 1,
            op_timeout: Duration::from_millis(200),
        }
    }

    /// What this budget did so far in this process.
    pub fn stats(&self) -> FleetBudgetStats {
        let s = &self.shared;
        FleetBudgetStats {
            granted: s.counts.granted.get(),
            denied: s.counts.denied.get(),
            leased: s.counts.leased.get(),
            syncs: s.counts.syncs.get(),
            failed_syncs: s.counts.failed_syncs.get(),
            pool: s.pool.load(Ordering::Relaxed),
        }
    }

    /// Starts the background sync on the current runtime, unless it runs.
    #[inline]
    fn ensure_syncing(&self) {
        let shared = &self.shared;
        if shared.syncing.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if shared
            .syncing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // The guard goes with the task from the start: a task dropped
            // before its first poll (its runtime shutting down) clears the
            // flag too.
            let running = Running(Arc::downgrade(shared));
            runtime.spawn(sync_loop(running));
        }
    }
}

/// Clears the running flag when the sync task ends, however it ends.
struct Running(Weak<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.syncing.store(false, Ordering::Release);
        }
    }
}

/// Syncs every `sync_every` until the budget is dropped.
async fn sync_loop(running: Running) {
    let budget = running.0.clone();
    let Some(every) = budget.upgrade().map(|s| s.sync_every) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = budget.upgrade() else {
            return;
        };
        shared.sync().await;
    }
}

impl Shared {
    async fn sync(&self) {
        let deposits = self.deposits.swap(0, Ordering::Relaxed);
        let asked = self.asked.swap(0, Ordering::Relaxed);
        let want = asked.saturating_mul(2).clamp(1, self.batch);
        let ask = want.saturating_sub(self.pool.load(Ordering::Relaxed));
        // An idle bucket is forgotten once it would be full again (at least
        // a minute, at most a day); a new one starts full anyway.
        let expiry_ms = Duration::try_from_secs_f64(self.cap / self.reserve_per_sec.max(1e-3))
            .unwrap_or(Duration::from_secs(86_400))
            .clamp(Duration::from_secs(60), Duration::from_secs(86_400))
            .as_millis() as u64;
        let granted: Option<i64> = self
            .link
            .run(|mut c: Connection| async move {
                SYNC.key(&self.key)
                    .arg(self.reserve_per_sec / 1000.0)
                    .arg(self.ratio)
                    .arg(self.cap)
                    .arg(deposits)
                    .arg(ask)
                    .arg(expiry_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match granted {
            Some(granted) => {
                let granted = u64::try_from(granted).unwrap_or(0);
                self.pool.fetch_add(granted, Ordering::AcqRel);
                self.counts.leased.add_n(granted);
                self.counts.syncs.add();
                self.failures.store(0, Ordering::Relaxed);
                self.down.store(false, Ordering::Release);
            }
            None => {
                // The requests not reported go to the fallback, which
                // decides once two syncs in a row have failed (one slow
                // reply does not hand the decision over).
                // (At most 10 000: a fallback window's worth of requests at
                // any rate a replica sustains between two syncs.)
                for _ in 0..deposits.min(10_000) {
                    self.fallback.deposit();
                }
                self.counts.failed_syncs.add();
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= 2 {
                    self.down.store(true, Ordering::Release);
                }
            }
        }
    }
}

impl RetryBudget for FleetBudget {
    fn deposit(&self) {
        self.ensure_syncing();
        let shared = &self.shared;
        if shared.down.load(Ordering::Acquire) {
            shared.fallback.deposit();
        } else {
            shared.deposits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> Option<Withdrawal> {
        self.ensure_syncing();
        let shared = &self.shared;
        shared.asked.fetch_add(1, Ordering::Relaxed);
        if shared.down.load(Ordering::Acquire) {
            let withdrawal = shared.fallback.withdraw();
            match withdrawal {
                Some(_) => shared.counts.granted.add(),
                None => shared.counts.denied.add(),
            }
            return withdrawal;
        }
        let mut pool = shared.pool.load(Ordering::Relaxed);
        while pool > 0 {
            match shared.pool.compare_exchange_weak(
                pool,
                pool - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    shared.counts.granted.add();
                    return Some(Withdrawal::new(1, POOL));
                }
                Err(now) => pool = now,
            }
        }
        shared.counts.denied.add();
        None
    }

    fn refund(&self, withdrawal: Withdrawal) {
        if withdrawal.stamp() == POOL {
            self.shared.pool.fetch_add(1, Ordering::AcqRel);
        } else {
            self.shared.fallback.refund(withdrawal);
        }
    }

    fn balance(&self) -> f64 {
        let shared = &self.shared;
        if shared.down.load(Ordering::Acquire) {
            shared.fallback.balance()
        } else {
            shared.pool.load(Ordering::Relaxed) as f64
        }
    }
}

impl fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("FleetBudget")
            .field("name", &s.name)
            .field("reserve_per_sec", &s.reserve_per_sec)
            .field("ratio", &s.ratio)
            .field("cap", &s.cap)
            .field("batch", &s.batch)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`FleetBudget`]: [`FleetBudget::builder`].
#[derive(Debug, Clone)]
pub struct FleetBudgetBuilder {
    server: Server,
    name: String,
    prefix: String,
    reserve_per_sec: f64,
    ratio: f64,
    cap: Option<f64>,
    batch: u64,
    sync_every: Duration,
    replicas: u32,
    op_timeout: Duration,
}

impl FleetBudgetBuilder {
    /// Retries a second the fleet may always send (default 10, Finagle's
    /// `minRetriesPerSec`).
    pub fn reserve_per_sec(mut self, per_sec: f64) -> Self {
        self.reserve_per_sec = per_sec;
        self
    }

    /// Retries earned per request the fleet sends (default 0.2, Finagle's
    /// `percentCanRetry`).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// The most tokens the bucket holds (default ten seconds of the
    /// reserve, at least `batch`). A new bucket starts full — in Redis:
    /// each replica leases from it at its syncs (see the type's docs).
    pub fn cap(mut self, cap: f64) -> Self {
        self.cap = Some(cap);
        self
    }

    /// The most tokens a replica leases at a time (default 10): the
    /// staleness bound is `replicas × batch`.
    pub fn batch(mut self, batch: u64) -> Self {
        self.batch = batch;
        self
    }

    /// How often a replica reports and leases (default 100 ms).
    pub fn sync_every(mut self, every: Duration) -> Self {
        self.sync_every = every;
        self
    }

    /// The replicas expected to share the budget (default 1): while Redis
    /// is unreachable, each keeps `reserve / replicas` a second.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Prepended to the budget's Redis key (default `dephase:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The deadline of every Redis command, and of connecting (default
    /// 200 ms). A sync slower than `sync_every` delays the next one.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Checks the settings. Does not connect: the background sync does.
    ///
    /// # Errors
    ///
    /// A URL that is not a Redis URL (`fleet_budget.url`), a root
    /// certificate that is not PEM (`fleet_budget.root_certificate`), an empty name
    /// (`fleet_budget.name`), a reserve that is negative, not finite or over
    /// a million a second (`fleet_budget.reserve_per_sec`), a ratio outside
    /// `[0, 1000]` (`fleet_budget.ratio`), a cap that is not finite or below
    /// one batch (`fleet_budget.cap`), a zero batch (`fleet_budget.batch`),
    /// a sync interval outside 1 ms ..= 1 hour (`fleet_budget.sync_every`),
    /// a batch over a million (`fleet_budget.batch`),
    /// zero replicas (`fleet_budget.replicas`), a zero `op_timeout`
    /// (`fleet_budget.op_timeout`).
    pub fn build(self) -> Result<FleetBudget, ConfigError> {
        let client = self.server.open(
            "fleet_budget.url",
            "fleet_budget.root_certificate",
            self.op_timeout,
        )?;
        if self.name.is_empty() {
            return Err(ConfigError::new("fleet_budget.name", "must not be empty"));
        }
        let reserve = check_f64(
            "fleet_budget.reserve_per_sec",
            self.reserve_per_sec,
            0.0,
            1e6,
        )?;
        let ratio = check_f64("fleet_budget.ratio", self.ratio, 0.0, 1000.0)?;
        if self.batch == 0 || self.batch > 1_000_000 {
            return Err(ConfigError::new(
                "fleet_budget.batch",
                "must be between 1 and a million",
            ));
        }
        let cap = match self.cap {
            Some(cap) => check_f64("fleet_budget.cap", cap, self.batch as f64, 1e12)?,
            None => (reserve * 10.0).max(self.batch as f64),
        };
        if self.sync_every < Duration::from_millis(1) || self.sync_every > Duration::from_secs(3600)
        {
            return Err(ConfigError::new(
                "fleet_budget.sync_every",
                "must be between 1 ms and an hour",
            ));
        }
        if self.replicas == 0 {
            return Err(ConfigError::new(
                "fleet_budget.replicas",
                "must be at least 1",
            ));
        }
        if self.op_timeout.is_zero() {
            return Err(ConfigError::new(
                "fleet_budget.op_timeout",
                "must be greater than zero",
            ));
        }
        // The fallback: this replica's share of the reserve, the same ratio,
        // and a window whose reserve is about its share of the cap (Finagle's
        // reserve is a window's worth of it: ten seconds would hand a
        // replica ten seconds of retries at once).
        let share = (reserve / f64::from(self.replicas)).ceil();
        let window = if reserve > 0.0 { cap / reserve } else { 1.0 };
        let fallback = RatioBudget::builder()
            .ratio(ratio)
            .min_per_sec(u32::try_from(share as u64).unwrap_or(u32::MAX))
            .ttl(Duration::from_secs_f64(window.clamp(1.0, 10.0)))
            .build()?;
        Ok(FleetBudget {
            shared: Arc::new(Shared {
                link: Link::new(
                    client,
                    self.op_timeout,
                    "the fleet retry budget decides with this replica's local share",
                    "the fleet retry budget is shared again",
                ),
                key: format!("{}{{budget:{}}}:bucket", self.prefix, self.name),
                name: self.name,
                reserve_per_sec: reserve,
                ratio,
                cap,
                batch: self.batch,
                sync_every: self.sync_every,
                pool: AtomicU64::new(0),
                deposits: AtomicU64::new(0),
                asked: AtomicU64::new(0),
                down: AtomicBool::new(false),
                failures: AtomicU64::new(0),
                fallback,
                syncing: AtomicBool::new(false),
                counts: Counts::default(),
            }),
        })
    }
}

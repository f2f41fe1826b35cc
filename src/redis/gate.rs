//! The fleet gate's state and protocol: at most `K` holders across every
//! replica, as leases in one Redis sorted set.
//!
//! - **Acquire** (one script, one round trip): drop the expired leases,
//!   and if fewer than `K` are left, add this caller's (`token`, scored
//!   with its expiry on Redis's clock) and hand it the next fencing token
//!   (`INCR`). Else say when the earliest lease expires.
//! - **Renew** (one script), every `renew_every` while held: push the
//!   lease's expiry on, if it is still there and not expired. A holder
//!   whose lease is gone has lost its slot.
//! - **Release**: `ZREM` of the token, when the guard is dropped.
//!
//! Expiry is judged on Redis's clock (`TIME` inside the scripts, which
//! needs Redis 5 or later: it writes after a non-deterministic command), so
//! replicas with skewed clocks agree. The set, the fencing counter and
//! the grace key of one gate share a Redis Cluster hash slot (`{gate:…}`).
//!
//! **When Redis loses its data** (a restart without persistence, a
//! failover to a replica that had not seen the latest writes, `FLUSHALL`),
//! the leases are forgotten while their holders still work. The acquire
//! script sees that the fencing counter is missing and then (1) restarts
//! the counter at Redis's clock in milliseconds × 1000, so fencing tokens
//! keep growing across the loss (unless more than a thousand slots a
//! millisecond were handed out before it), and (2) with the restart grace
//! on (the default),
//! gives no slot for one lease TTL: every lease from before the loss has
//! expired by then — and its holder, whose renewals find nothing, has
//! been told it lost the slot ([`SlotGuard::is_lost`]).

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::server::Connection;
use ::redis::Script;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::GateError;
use super::fill::new_token;
use super::lease::px;
use super::link::Link;
use super::server::Server;
use crate::backoff::{ExponentialBackoff, Jitter};
use crate::error::ConfigError;
use crate::tally::Count;

/// `KEYS`: holders, fencing counter, grace. `ARGV`: slots, TTL (ms),
/// token, grace (`1`/`0`). Returns `{fence, 0}` (granted) or `{0, ms}`
/// (full, or in grace: the earliest a slot may free).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], string.format('%.0f', now * 1000))
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[3], '1', 'PX', ttl)
  end
end
local grace = redis.call('PTTL', KEYS[3])
if grace > 0 then
  return {0, grace}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local mine = redis.call('ZSCORE', KEYS[1], ARGV[3])
if (not mine) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(first[2]) - now)}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {fence, 0}
",
    )
});

/// `KEYS`: holders. `ARGV`: token, TTL (ms). 1 if the lease was there and
/// is renewed; 0 if it is gone (expired or forgotten).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
",
    )
});

/// At most `K` holders of a slot across every replica that builds a gate
/// with the same server, prefix and name — for work that must not all
/// happen at once (remediations, compactions, restarts, a cold cache's
/// warm-up), as jobs ([`acquire`](Self::acquire)) or as requests
/// ([`FleetGateLayer`](super::FleetGateLayer)).
///
/// A slot is a lease: renewed in the background while its
/// [`SlotGuard`] lives, released when the guard is dropped, and expired
/// after the lease TTL if its holder dies. Each holder gets a fencing
/// token, larger than every earlier holder's: pass it to the resource the
/// gate protects, so that a holder that lost its slot (a pause longer than
/// the TTL) is refused there.
///
/// Callers that find the gate full poll again after jittered, growing
/// delays (20 ms doubling to 1 s, equal jitter, by default): when a slot
/// frees, the waiters do not come back together.
///
/// **When Redis is unreachable** (no reply within `op_timeout`), the gate
/// fails closed: [`acquire`](Self::acquire) returns
/// [`GateError::Unavailable`], since nobody can prove a slot is free — at
/// once without a `max_wait`, else once the wait is over (a caller with
/// time left keeps polling through a blip). A slot granted by a script
/// whose reply did not come in time is removed in the background, as is a
/// slot whose release Redis did not confirm (retried until it would have
/// expired anyway).
/// [`fail_open`](FleetGateBuilder::fail_open) admits the caller instead,
/// with a guard that has no fencing token. A `WARN` event says when Redis
/// is lost, an `INFO` event when it is back (target `dephase::redis`).
///
/// ```no_run
/// use std::time::Duration;
/// use dephase::redis::FleetGate;
///
/// # async fn remediate(_fence: Option<u64>) {}
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // At most 5 hosts of the fleet remediate at once.
/// let gate = FleetGate::builder("redis://127.0.0.1:6379/", "remediation")
///     .slots(5)
///     .lease_ttl(Duration::from_secs(30))
///     .max_wait(Duration::from_secs(600))
///     .build()?;
/// // On a Redis that has never seen this gate (or lost its data), the
/// // first slot comes one lease TTL later: see `restart_grace`.
/// let slot = gate.acquire().await?;
/// remediate(slot.fence()).await;
/// drop(slot); // or `slot.release().await`
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetGate {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    link: Link,
    name: String,
    holders: String,
    fence: String,
    grace_key: String,
    slots: u32,
    lease_ttl: Duration,
    renew_every: Duration,
    max_wait: Option<Duration>,
    poll: ExponentialBackoff,
    fail_open: bool,
    restart_grace: bool,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    acquired: Count,
    waited: Count,
    timed_out: Count,
    unavailable: Count,
    admitted_open: Count,
    lost: Count,
}

/// What a gate did so far in this process: [`FleetGate::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// Slots acquired (with a fencing token).
    pub acquired: u64,
    /// Of those, the ones that had to wait for a slot.
    pub waited: u64,
    /// Callers whose `max_wait` ran out.
    pub timed_out: u64,
    /// Callers refused because Redis was unreachable (failing closed).
    pub unavailable: u64,
    /// Callers admitted without a slot because Redis was unreachable
    /// (failing open).
    pub admitted_open: u64,
    /// Slots lost while held: a renewal found the lease gone, or could not
    /// reach Redis before the lease ran out.
    pub lost: u64,
}

/// What one acquire script said.
enum Answer {
    Granted(u64),
    /// Full (or in the restart grace): the earliest a slot may free.
    Full(Duration),
}

impl FleetGate {
    /// A builder for the gate `name` on `server` (a URL, or a [`Server`]:
    /// a cluster, TLS).
    pub fn builder(server: impl Into<Server>, name: impl Into<String>) -> FleetGateBuilder {
        FleetGateBuilder {
            server: server.into(),
            name: name.into(),
            prefix: "dephase:".to_owned(),
            slots: 1,
            lease_ttl: Duration::from_secs(10),
            renew_every: None,
            max_wait: None,
            poll: None,
            op_timeout: Duration::from_millis(200),
            fail_open: false,
            restart_grace: true,
            seed: None,
        }
    }

    /// Waits for a slot (up to `max_wait`, polling with jittered, growing
    /// delays) and holds it until the guard is dropped.
    ///
    /// Cancel-safe: dropping the future while its request is in flight
    /// removes the slot it may have been given.
    ///
    /// # Errors
    ///
    /// [`GateError::Timeout`] when `max_wait` ran out;
    /// [`GateError::Unavailable`] when Redis could not be reached (and the
    /// gate fails closed).
    pub async fn acquire(&self) -> Result<SlotGuard, GateError> {
        let shared = &self.shared;
        let started = Instant::now();
        let deadline = shared.max_wait.and_then(|w| started.checked_add(w));
        let mut delays = shared.poll.sequence();
        let mut full = false;
        // One token for every attempt: a grant whose reply was lost is
        // found again by the next attempt, not taken twice; and if this
        // caller leaves without knowing, the token is removed.
        let token = new_token();
        let mut pending = Pending {
            shared: Some(Arc::clone(shared)),
            token: &token,
        };
        // Whether a script went unanswered: it may have granted the token a
        // slot, which the token must then give back.
        let mut unanswered = false;
        loop {
            let sent = Instant::now();
            let (answer, reached_redis) = shared.try_acquire(&token).await;
            unanswered |= answer.is_none() && reached_redis;
            let reached = answer.is_some();
            match answer {
                Some(Answer::Granted(fence)) => {
                    pending.shared = None;
                    let waited = started.elapsed();
                    shared.counts.acquired.add();
                    crate::telemetry::count::fleet_gate("acquired");
                    if full {
                        shared.counts.waited.add();
                    }
                    record(Some(fence), waited, full);
                    return Ok(SlotGuard::held(shared, token.clone(), fence, sent));
                }
                Some(Answer::Full(_earliest)) => full = true,
                // Unreachable (or no reply in time: the script may have run,
                // so `pending` stays armed and removes the token).
                None if shared.fail_open => {
                    if !unanswered {
                        pending.shared = None;
                    }
                    shared.counts.admitted_open.add();
                    crate::telemetry::count::fleet_gate("admitted_open");
                    record(None, started.elapsed(), false);
                    return Ok(SlotGuard::open());
                }
                // A caller with time left keeps polling through a blip.
                None if deadline.is_some_and(|d| Instant::now() < d) => {}
                None => {
                    if !unanswered {
                        pending.shared = None;
                    }
                    shared.counts.unavailable.add();
                    crate::telemetry::count::fleet_gate("unavailable");
                    return Err(GateError::unavailable(started.elapsed()));
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                if !unanswered {
                    // Every script sent was answered: the token holds nothing.
                    pending.shared = None;
                }
                if reached {
                    shared.counts.timed_out.add();
                    crate::telemetry::count::fleet_gate("timed_out");
                    return Err(GateError::timeout(started.elapsed()));
                }
                shared.counts.unavailable.add();
                crate::telemetry::count::fleet_gate("unavailable");
                return Err(GateError::unavailable(started.elapsed()));
            }
            let wake = now + delays.next_delay();
            tokio::time::sleep_until(deadline.map_or(wake, |d| wake.min(d))).await;
        }
    }

    /// What this gate did so far in this process.
    pub fn stats(&self) -> GateStats {
        let c = &self.shared.counts;
        GateStats {
            acquired: c.acquired.get(),
            waited: c.waited.get(),
            timed_out: c.timed_out.get(),
            unavailable: c.unavailable.get(),
            admitted_open: c.admitted_open.get(),
            lost: c.lost.get(),
        }
    }

    /// How many holders the gate allows across the fleet.
    pub fn slots(&self) -> u32 {
        self.shared.slots
    }
}

impl Shared {
    /// One acquire script. `None`: Redis unreachable; with whether the
    /// script was sent (then it may have run).
    async fn try_acquire(&self, token: &str) -> (Option<Answer>, bool) {
        let (reply, sent) = self
            .link
            .run_sent(|mut c: Connection| async move {
                ACQUIRE
                    .key(&self.holders)
                    .key(&self.fence)
                    .key(&self.grace_key)
                    .arg(self.slots)
                    .arg(px(self.lease_ttl))
                    .arg(token)
                    .arg(if self.restart_grace { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let Some((fence, wait)): Option<(i64, i64)> = reply else {
            return (None, sent);
        };
        let answer = match u64::try_from(fence) {
            Ok(fence) if fence > 0 => Answer::Granted(fence),
            _ => Answer::Full(Duration::from_millis(u64::try_from(wait).unwrap_or(1))),
        };
        (Some(answer), sent)
    }

    /// One renewal. `None`: Redis unreachable; `Some(false)`: the lease is gone.
    async fn renew(&self, token: &str) -> Option<bool> {
        self.link
            .run(|mut c: Connection| async move {
                let renewed: i64 = RENEW
                    .key(&self.holders)
                    .arg(token)
                    .arg(px(self.lease_ttl))
                    .invoke_async(&mut c)
                    .await?;
                Ok(renewed == 1)
            })
            .await
    }

    /// Releases `token`, trying again (every 50 ms, while the link waits
    /// out an outage) until Redis confirms or the lease would have expired
    /// anyway: a slot freed late is a slot the fleet goes without.
    async fn release_until_done(&self, token: &str) {
        let give_up = Instant::now() + self.lease_ttl;
        while self.release(token).await.is_none() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn release(&self, token: &str) -> Option<()> {
        self.link
            .run(|mut c: Connection| async move {
                let _: i64 = ::redis::cmd("ZREM")
                    .arg(&self.holders)
                    .arg(token)
                    .query_async(&mut c)
                    .await?;
                Ok(())
            })
            .await
    }
}

/// Removes the slot an acquire may have been given, if that acquire is
/// dropped before it could say so.
struct Pending<'a> {
    shared: Option<Arc<Shared>>,
    token: &'a str,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            release_later(shared, self.token.to_owned());
        }
    }
}

/// Releases `token` in the background, if there is a runtime to do it on
/// (else its lease expires after the TTL).
fn release_later(shared: Arc<Shared>, token: String) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { shared.release_until_done(&token).await });
    }
}

fn record(fence: Option<u64>, waited: Duration, full: bool) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        if let Some(fence) = fence {
            span.record(
                crate::telemetry::FLEET_SLOT,
                i64::try_from(fence).unwrap_or(i64::MAX),
            );
        }
        span.record(
            crate::telemetry::FLEET_WAIT_MS,
            crate::telemetry::millis(waited),
        );
    }
    // A wait for a slot is an applied delay; one round trip is not.
    if full {
        crate::telemetry::count::applied_offset("fleet_gate", waited);
    }
}

/// A slot of a [`FleetGate`], held until dropped (then released in the
/// background) or [`release`](Self::release)d.
///
/// While it lives, a task renews the lease every `renew_every`. If a
/// renewal finds the lease gone (Redis lost it, or this process paused
/// past the TTL), or cannot reach Redis before the lease would have
/// expired, the slot is lost: [`is_lost`](Self::is_lost) turns true and
/// [`lost`](Self::lost) resolves — stop the work, another holder may have
/// the slot now.
pub struct SlotGuard {
    held: Option<Held>,
}

struct Held {
    shared: Arc<Shared>,
    token: String,
    fence: u64,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl SlotGuard {
    fn held(shared: &Arc<Shared>, token: String, fence: u64, sent: Instant) -> SlotGuard {
        let (tell, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(Arc::clone(shared), token.clone(), sent, tell));
        SlotGuard {
            held: Some(Held {
                shared: Arc::clone(shared),
                token,
                fence,
                lost,
                renewer,
            }),
        }
    }

    fn open() -> SlotGuard {
        SlotGuard { held: None }
    }

    /// The fencing token: larger than every earlier holder's of this gate.
    /// `None` when the caller was admitted without a slot (Redis was
    /// unreachable and the gate fails open).
    pub fn fence(&self) -> Option<u64> {
        self.held.as_ref().map(|h| h.fence)
    }

    /// Whether the slot was lost (never, for a guard without a slot). A
    /// slot whose renewals stopped (the runtime that renewed it shut down)
    /// counts as lost.
    pub fn is_lost(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| *h.lost.borrow() || h.lost.has_changed().is_err())
    }

    /// Resolves when the slot is lost; never, for a guard without a slot.
    pub async fn lost(&self) {
        match &self.held {
            Some(held) => {
                let mut lost = held.lost.clone();
                // The sender lives in the renewal task, which ends only
                // after saying so, when the guard is dropped, or with its
                // runtime: then nothing renews the slot, so it is lost too.
                let _ = lost.wait_for(|l| *l).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Releases the slot now, and waits until Redis has removed it (or
    /// could not be reached: then the lease expires after its TTL).
    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            held.renewer.abort();
            // Not confirmed (or this future dropped before the reply): the
            // background tries again.
            let mut unconfirmed = Pending {
                shared: Some(Arc::clone(&held.shared)),
                token: &held.token,
            };
            if held.shared.release(&held.token).await.is_some() {
                unconfirmed.shared = None;
            }
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.renewer.abort();
            release_later(held.shared, held.token);
        }
    }
}

impl fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard")
            .field("fence", &self.fence())
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// Renews the lease every `renew_every`; says when it is lost. The lease
/// counts as valid until the TTL after the last renewal was *sent*.
async fn renew(shared: Arc<Shared>, token: String, sent: Instant, tell: watch::Sender<bool>) {
    let mut valid_until = sent + shared.lease_ttl;
    let mut next = sent + shared.renew_every;
    loop {
        tokio::time::sleep_until(next.min(valid_until)).await;
        let now = Instant::now();
        if now >= valid_until {
            break;
        }
        next = match shared.renew(&token).await {
            Some(true) => {
                valid_until = now + shared.lease_ttl;
                Instant::now() + shared.renew_every
            }
            Some(false) => break,
            // Not reached: try again soon, not a whole interval later.
            None => Instant::now() + (shared.renew_every / 4).max(Duration::from_millis(1)),
        };
    }
    shared.counts.lost.add();
    crate::telemetry::count::fleet_gate("lost");
    tracing::event!(
        target: "dephase::redis",
        tracing::Level::WARN,
        gate = %shared.name,
        "fleet gate slot lost: its lease is gone or could not be renewed in time"
    );
    let _ = tell.send(true);
    // Keep the sender alive (the guard's `lost` waits on it) until the
    // guard aborts this task.
    std::future::pending::<()>().await;
}

/// Builds a [`FleetGate`]: [`FleetGate::builder`].
#[derive(Debug, Clone)]
pub struct FleetGateBuilder {
    server: Server,
    name: String,
    prefix: String,
    slots: u32,
    lease_ttl: Duration,
    renew_every: Option<Duration>,
    max_wait: Option<Duration>,
    poll: Option<ExponentialBackoff>,
    op_timeout: Duration,
    fail_open: bool,
    restart_grace: bool,
    seed: Option<u64>,
}

impl FleetGateBuilder {
    /// Holders allowed at once across the fleet (default 1).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Prepended to the gate's Redis keys (default `dephase:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a slot outlives its holder's last renewal (default 10 s): a
    /// holder that dies frees its slot after this.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How often a holder renews its lease (default a third of the TTL).
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// How long [`acquire`](FleetGate::acquire) waits for a slot before
    /// [`GateError::Timeout`] (default: until one frees).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The delays between polls of a full gate (default 20 ms doubling to
    /// 1 s, equal jitter).
    pub fn poll(mut self, backoff: ExponentialBackoff) -> Self {
        self.poll = Some(backoff);
        self
    }

    /// The deadline of every Redis command, and of connecting (default 200 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// When Redis is unreachable, admit callers without a slot (`true`)
    /// instead of refusing them with [`GateError::Unavailable`] (`false`,
    /// the default).
    pub fn fail_open(mut self, open: bool) -> Self {
        self.fail_open = open;
        self
    }

    /// After Redis lost the gate's data (or on the gate's first use), give
    /// no slot for one lease TTL, so that every lease from before has
    /// expired (default `true`; see the module docs). Turn it off only for a
    /// Redis that keeps its data across restarts and failovers.
    pub fn restart_grace(mut self, grace: bool) -> Self {
        self.restart_grace = grace;
        self
    }

    /// Makes the polling jitter reproducible (default polling only; a
    /// backoff given to [`poll`](Self::poll) keeps its own seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings. Does not connect: the first acquire does.
    ///
    /// # Errors
    ///
    /// A URL that is not a Redis URL (`gate.url`), a root certificate that
    /// is not PEM (`gate.root_certificate`), an empty name
    /// (`gate.name`), zero slots (`gate.slots`), a lease TTL under 1 ms or
    /// over a day (`gate.lease_ttl`), a renewal interval that is zero or not
    /// below the TTL (`gate.renew_every`), a zero `op_timeout` or one that
    /// with the renewal interval reaches the TTL (`gate.op_timeout`: a
    /// renewal must be able to fail and still leave time), a `max_wait` over
    /// 100 years (`gate.max_wait`).
    pub fn build(self) -> Result<FleetGate, ConfigError> {
        let client = self
            .server
            .open("gate.url", "gate.root_certificate", self.op_timeout)?;
        if self.name.is_empty() {
            return Err(ConfigError::new("gate.name", "must not be empty"));
        }
        if self.slots == 0 {
            return Err(ConfigError::new("gate.slots", "must be at least 1"));
        }
        if self.lease_ttl < Duration::from_millis(1) || self.lease_ttl > Duration::from_secs(86_400)
        {
            return Err(ConfigError::new(
                "gate.lease_ttl",
                "must be between 1 ms and a day",
            ));
        }
        // Whole milliseconds, as Redis keeps it: never longer here than there.
        let lease_ttl =
            Duration::from_millis(u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX));
        let renew_every = self.renew_every.unwrap_or(lease_ttl / 3);
        if renew_every.is_zero() || renew_every >= lease_ttl {
            return Err(ConfigError::new(
                "gate.renew_every",
                "must be greater than zero and less than the lease TTL",
            ));
        }
        if self.op_timeout.is_zero() || renew_every.saturating_add(self.op_timeout) >= lease_ttl {
            return Err(ConfigError::new(
                "gate.op_timeout",
                "must be greater than zero, and the renewal interval plus it less than the lease TTL",
            ));
        }
        if self
            .max_wait
            .is_some_and(|w| w > Duration::from_secs(100 * 365 * 86_400))
        {
            return Err(ConfigError::new(
                "gate.max_wait",
                "must be at most 100 years",
            ));
        }
        let poll = match self.poll {
            Some(poll) => poll,
            None => {
                let builder = ExponentialBackoff::builder()
                    .base(Duration::from_millis(20))
                    .cap(Duration::from_secs(1))
                    .jitter(Jitter::Equal);
                match self.seed {
                    Some(seed) => builder.seed(seed),
                    None => builder,
                }
                .build()?
            }
        };
        let tag = format!("{}{{gate:{}}}", self.prefix, self.name);
        Ok(FleetGate {
            shared: Arc::new(Shared {
                link: Link::new(
                    client,
                    self.op_timeout,
                    if self.fail_open {
                        "the fleet gate admits callers without a slot (fail open)"
                    } else {
                        "the fleet gate refuses callers (fail closed)"
                    },
                    "the fleet gate hands out slots again",
                ),
                holders: format!("{tag}:holders"),
                fence: format!("{tag}:fence"),
                grace_key: format!("{tag}:grace"),
                name: self.name,
                slots: self.slots,
                lease_ttl,
                renew_every,
                max_wait: self.max_wait,
                poll,
                fail_open: self.fail_open,
                restart_grace: self.restart_grace,
                counts: Counts::default(),
            }),
        })
    }
}

impl fmt::Debug for FleetGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("FleetGate")
            .field("name", &s.name)
            .field("slots", &s.slots)
            .field("lease_ttl", &s.lease_ttl)
            .field("renew_every", &s.renew_every)
            .field("max_wait", &s.max_wait)
            .field("fail_open", &s.fail_open)
            .field("link", &s.link)
            .finish_non_exhaustive()
    }
}

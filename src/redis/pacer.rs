//! The fleet pacer's schedule: GCRA on Redis (as redis-cell does), with
//! reservations, and the local share it falls back to.
//!
//! One key per quota holds the theoretical arrival time (TAT) in
//! microseconds of Redis's clock. A script, in one round trip, gives the
//! caller its release time `max(now, TAT − τ)` (τ: the burst tolerance,
//! `(burst − 1) · T`), unless that is more than the maximum wait away, and
//! books the next one: `TAT = max(TAT, now) + T`. The caller then waits
//! locally until the turn, as [`Pacer`](crate::pace::Pacer) does. The
//! scripts read Redis's `TIME` before writing: Redis 5 or later.
//!
//! The turn is an instant on Redis's clock; this replica maps it onto its
//! own with the smallest lag it has seen between Redis's `now` in a reply
//! and the reply's arrival (a reply that waited in a queue says nothing
//! about the clocks, the fastest one does). Mapping with each reply's own
//! arrival instead would shift every turn of a replica whose replies came
//! late — at a herd's start, all of them — by that lateness, and bunch its
//! turns with its neighbours'. The smallest lag may rise by 100 µs a
//! second (100 ppm, above a clock's drift), so a drifting clock is
//! followed; a turn is never mapped before Redis's instant plus the
//! fastest reply's delay.
//! A caller that goes away before its turn gives it back if nobody booked
//! after it (the TAT is still the one it set): the script moves the TAT
//! back by `T`. Later turns are not moved: they are other callers' already.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use super::server::Connection;
use ::redis::Script;
use tokio::time::Instant;

use super::link::Link;
use super::server::Server;
use crate::error::ConfigError;
use crate::pace::error::Overloaded;
use crate::pace::{Pacer, Quota};
use crate::rng::RngSource;
use crate::tally::Count;

/// The reserve script. `KEYS`: the TAT. `ARGV`: `T`, `τ`, max wait (µs).
/// Returns `{1, wait, booked TAT, now}` or `{0, wait, 0, now}` (too far
/// away), in µs. The TAT key has no expiry: one small key per pacer (an
/// expiry cost 7% of an admission's time in Redis), and a TAT in the past
/// is the same as none. Public, hidden, for the bench that measures one
/// `EVALSHA` of it against an admission.
#[doc(hidden)]
pub const RESERVE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local at = math.max(now, tat - tau)
local wait = at - now
if wait > tonumber(ARGV[3]) then
  return {0, wait, 0, now}
end
local booked = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', booked))
return {1, wait, booked, now}
";

static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE_SCRIPT));

/// `KEYS`: the TAT. `ARGV`: the TAT this caller booked, `T` (µs). Moves
/// the TAT back by `T` if nobody booked after this caller. 1 if it did.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local tat = redis.call('GET', KEYS[1])
if tat and tonumber(tat) == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], string.format('%.0f', tonumber(ARGV[1]) - tonumber(ARGV[2])))
  return 1
end
return 0
",
    )
});

/// A pacing schedule shared by every replica that builds one with the same
/// server, prefix and name: the fleet, not each process, goes at the
/// quota's rate. Same shape as [`Pacer`](crate::pace::Pacer): callers wait
/// their turn, and one whose turn is more than `max_wait`
/// away (or past its [`Deadline`](crate::deadline::Deadline)) is turned
/// away at once with [`Overloaded`].
///
/// Each turn is one Redis round trip (a script), then a local wait. When
/// Redis is unreachable (no reply within `op_timeout`), callers are paced
/// by a local [`Pacer`] with this replica's share of the quota
/// ([`replicas`](FleetPacerBuilder::replicas): the quota divided by the
/// replicas you expect), so the fleet stays near its quota; a `WARN`
/// event says when Redis is lost, an `INFO` event when it is back.
///
/// ```no_run
/// use std::time::Duration;
/// use dephase::redis::FleetPacer;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), dephase::BoxError> {
/// // 300 instances warm up against one database: 100 a second between them.
/// let pacer = FleetPacer::builder("redis://127.0.0.1:6379/", "warmup")
///     .rate(100, Duration::from_secs(1))
///     .max_wait(Duration::from_secs(30))
///     .replicas(300) // without Redis: 1 every 3 s per instance
///     .build()?;
/// let waited = pacer.wait().await?;
/// # let _ = waited;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetPacer {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    link: Link,
    name: String,
    key: String,
    quota: Quota,
    /// `T` and `τ`, in microseconds.
    interval_us: u64,
    tolerance_us: u64,
    max_wait: Duration,
    jitter: Duration,
    rng: RngSource,
    /// This replica's clock (µs since `epoch`) minus Redis's, as the
    /// fastest reply saw it, and when (see the module docs).
    lag: Mutex<Option<Lag>>,
    epoch: Instant,
    local: Pacer,
    waited: Count,
    overloaded: Count,
    local_turns: Count,
    given_back: Count,
}

/// What a [`FleetPacer`] did so far in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetPacerStats {
    /// Callers that waited for a turn from Redis (and then went); a caller
    /// whose turn was due at once is not counted (that would cost the path
    /// that does not wait).
    pub waited: u64,
    /// Callers turned away: their turn was more than the maximum wait away.
    pub overloaded: u64,
    /// Turns taken from the local share while Redis was unreachable.
    pub local_turns: u64,
    /// Turns given back to Redis by callers that went away before them.
    pub given_back: u64,
}

/// What one reserve script said.
enum Reserved {
    /// A turn at `at` on this replica's clock.
    Turn {
        at: Instant,
        booked: i64,
    },
    TooFar(Duration),
}

/// The smallest lag seen, and when (µs of this replica's clock).
#[derive(Debug, Clone, Copy)]
struct Lag {
    lag: i64,
    seen: i64,
}

/// How much the smallest lag may rise per µs: 100 ppm.
const LAG_CREEP: i64 = 10_000;

impl FleetPacer {
    /// A builder for the pacer `name` on `server` (a URL, or a
    /// [`Server`]: a cluster, TLS);
    /// [`rate`](FleetPacerBuilder::rate) or
    /// [`quota`](FleetPacerBuilder::quota) is required.
    pub fn builder(server: impl Into<Server>, name: impl Into<String>) -> FleetPacerBuilder {
        FleetPacerBuilder {
            server: server.into(),
            name: name.into(),
            prefix: "dephase:".to_owned(),
            quota: None,
            rate: None,
            burst: None,
            max_wait: Duration::from_secs(30),
            jitter: None,
            replicas: 1,
            op_timeout: Duration::from_millis(200),
            seed: None,
        }
    }

    /// The fleet's quota.
    pub fn quota(&self) -> Quota {
        self.shared.quota
    }

    /// Waits for this caller's turn in the fleet's schedule: `Ok` with the
    /// wait it applied (jitter included), or [`Overloaded`] at once if the
    /// turn is too far away. Dropping the future while it waits for its
    /// turn gives the turn back where nobody booked after it — in the
    /// background, so a caller that books at that very moment may come
    /// first, and the turn goes unused; dropping it during the round trip
    /// that books it cannot (the reply never comes back to it): that turn
    /// goes unused too. Neither ever sends more than the quota.
    ///
    /// # Errors
    ///
    /// [`Overloaded`] when the turn is more than the maximum wait away (or
    /// the caller's deadline has passed).
    pub async fn wait(&self) -> Result<Duration, Overloaded> {
        let shared = &self.shared;
        let max_wait = crate::pace::max_wait_now(shared.max_wait).inspect_err(|_| {
            shared.overloaded.add();
            crate::telemetry::count::pace_overloaded();
            crate::telemetry::count::fleet_pace("overloaded");
        })?;
        let Some(reserved) = shared.reserve(max_wait).await else {
            // Redis unreachable: this replica's share of the quota.
            let turn = shared.local.wait().await;
            match turn {
                Ok(_) => shared.local_turns.add(),
                Err(_) => shared.overloaded.add(),
            }
            crate::telemetry::count::fleet_pace(if turn.is_ok() { "local" } else { "overloaded" });
            return turn;
        };
        let received = Instant::now();
        let (at, booked) = match reserved {
            Reserved::Turn { at, booked } => (at, booked),
            Reserved::TooFar(wait) => {
                shared.overloaded.add();
                crate::telemetry::count::pace_overloaded();
                crate::telemetry::count::fleet_pace("overloaded");
                return Err(Overloaded::new(wait, max_wait));
            }
        };
        let wait = at.saturating_duration_since(received);
        // The round trip took time: the turn must still come within what
        // the caller's deadline leaves now.
        let max_wait = match crate::pace::max_wait_now(shared.max_wait) {
            Ok(left) if wait <= left => left,
            _ => {
                drop(Booked {
                    shared: Some(Arc::clone(shared)),
                    booked,
                });
                shared.overloaded.add();
                crate::telemetry::count::pace_overloaded();
                crate::telemetry::count::fleet_pace("overloaded");
                return Err(Overloaded::new(wait, max_wait));
            }
        };
        crate::telemetry::count::fleet_pace("redis");
        if wait.is_zero() {
            record(Duration::ZERO);
            return Ok(Duration::ZERO);
        }
        let room = max_wait.saturating_sub(wait);
        let jitter_nanos = crate::clock::nanos(shared.jitter.min(room));
        let jitter = Duration::from_nanos(shared.rng.stream().in_range(0, jitter_nanos));
        let mut turn = Booked {
            shared: Some(Arc::clone(shared)),
            booked,
        };
        // A wait too long for an instant (a max wait of centuries) never
        // comes: about 30 years.
        let until = at
            .checked_add(jitter)
            .unwrap_or_else(|| received + Duration::from_secs(86_400 * 365 * 30));
        tokio::time::sleep_until(until).await;
        turn.shared = None;
        shared.waited.add();
        crate::telemetry::count::pace_waited();
        record(wait + jitter);
        Ok(wait + jitter)
    }

    /// What this pacer did so far in this process.
    pub fn stats(&self) -> FleetPacerStats {
        let s = &self.shared;
        FleetPacerStats {
            waited: s.waited.get(),
            overloaded: s.overloaded.get(),
            local_turns: s.local_turns.get(),
            given_back: s.given_back.get(),
        }
    }
}

impl Shared {
    async fn reserve(&self, max_wait: Duration) -> Option<Reserved> {
        let max_wait_us = u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX / 2);
        let (granted, wait_us, booked, now_us): (i64, i64, i64, i64) = self
            .link
            .run(|mut c: Connection| async move {
                RESERVE
                    .key(&self.key)
                    .arg(self.interval_us)
                    .arg(self.tolerance_us)
                    .arg(max_wait_us)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let received = Instant::now();
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
        if granted != 1 {
            return Some(Reserved::TooFar(wait));
        }
        // Redis's `now` on this replica's clock, as the fastest reply says.
        let here =
            i64::try_from(received.duration_since(self.epoch).as_micros()).unwrap_or(i64::MAX);
        let lag = {
            let mut lag = self.lag.lock().unwrap_or_else(PoisonError::into_inner);
            let seen = here.saturating_sub(now_us);
            // The base moves only to a new minimum; the creep is counted
            // from when the base was seen (recomputed, never rounded away).
            match *lag {
                Some(base) => {
                    let crept = base.lag.saturating_add((here - base.seen) / LAG_CREEP);
                    if seen < crept {
                        *lag = Some(Lag {
                            lag: seen,
                            seen: here,
                        });
                        seen
                    } else {
                        crept
                    }
                }
                None => {
                    *lag = Some(Lag {
                        lag: seen,
                        seen: here,
                    });
                    seen
                }
            }
        };
        let turn_here = now_us.saturating_add(wait_us).saturating_add(lag);
        let by_reply = received
            .checked_add(wait)
            .unwrap_or_else(|| received + Duration::from_secs(86_400 * 365 * 30));
        let at = self
            .epoch
            .checked_add(Duration::from_micros(u64::try_from(turn_here).unwrap_or(0)))
            .unwrap_or(by_reply);
        Some(Reserved::Turn {
            // Never later than the reply's own arrival says.
            at: at.min(by_reply),
            booked,
        })
    }

    async fn give_back(&self, booked: i64) {
        let given: Option<i64> = self
            .link
            .run(|mut c: Connection| async move {
                GIVE_BACK
                    .key(&self.key)
                    .arg(booked)
                    .arg(self.interval_us)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if given == Some(1) {
            self.given_back.add();
        }
    }
}

/// A turn booked in Redis and not yet taken: given back if dropped.
struct Booked {
    shared: Option<Arc<Shared>>,
    booked: i64,
}

impl Drop for Booked {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let booked = self.booked;
            runtime.spawn(async move { shared.give_back(booked).await });
        }
    }
}

fn record(wait: Duration) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record(
            crate::telemetry::FLEET_WAIT_MS,
            crate::telemetry::millis(wait),
        );
    }
    if !wait.is_zero() {
        crate::telemetry::count::applied_offset("fleet_pace", wait);
        tracing::event!(
            target: "dephase::redis",
            tracing::Level::DEBUG,
            dephase.fleet.wait_ms = crate::telemetry::millis(wait),
            "paced by the fleet: released after waiting its turn"
        );
    }
}

impl fmt::Debug for FleetPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("FleetPacer")
            .field("name", &s.name)
            .field("quota", &s.quota)
            .field("max_wait", &s.max_wait)
            .field("jitter", &s.jitter)
            .field("link", &s.link)
            .finish_non_exhaustive()
    }
}

/// Builds a [`FleetPacer`]: [`FleetPacer::builder`].
#[derive(Debug, Clone)]
pub struct FleetPacerBuilder {
    server: Server,
    name: String,
    prefix: String,
    quota: Option<Quota>,
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    max_wait: Duration,
    jitter: Option<Duration>,
    replicas: u32,
    op_timeout: Duration,
    seed: Option<u64>,
}

impl FleetPacerBuilder {
    /// `n` callers per `period` across the fleet.
    pub fn rate(mut self, n: u32, period: Duration) -> Self {
        self.rate = Some((n, period));
        self.quota = None;
        self
    }

    /// A governor quota for the fleet (its burst is kept unless
    /// [`burst`](Self::burst) is set).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self.rate = None;
        self
    }

    /// How many callers may go at once before the pacing starts (default 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Callers whose turn is further away are turned away at once (default 30 s).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The most random extra wait added to a caller that waits (default:
    /// none). Unlike a [`Pacer`] per process, whose schedules start in step
    /// and need jitter to drift apart, every turn here comes from one
    /// schedule for the whole fleet: there is no lockstep for jitter to
    /// break, and it would only bunch neighbouring turns (10 processes × 30
    /// callers at 100 a second: a peak of 2 per 10 ms without jitter, 2–3
    /// with up to one interval). The local share used while Redis is away
    /// is jittered as a [`Pacer`]'s is, by one of its intervals.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// The replicas expected to share the quota (default 1): while Redis is
    /// unreachable, each paces itself at `1 / replicas` of it.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Prepended to the pacer's Redis key (default `dephase:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The deadline of every Redis command, and of connecting (default 200 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Makes the jitter reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings. Does not connect: the first caller does.
    ///
    /// # Errors
    ///
    /// What [`PacerBuilder::build`](crate::pace::PacerBuilder::build) says
    /// of the quota (`pace.*`); a URL that is not a Redis URL
    /// (`fleet_pace.url`), a root certificate that is not PEM
    /// (`fleet_pace.root_certificate`), an empty name (`fleet_pace.name`), a quota
    /// interval over a day or not within 1% of whole microseconds
    /// (`fleet_pace.quota`), zero replicas
    /// (`fleet_pace.replicas`), a zero `op_timeout`
    /// (`fleet_pace.op_timeout`).
    pub fn build(self) -> Result<FleetPacer, ConfigError> {
        let client = self.server.open(
            "fleet_pace.url",
            "fleet_pace.root_certificate",
            self.op_timeout,
        )?;
        if self.name.is_empty() {
            return Err(ConfigError::new("fleet_pace.name", "must not be empty"));
        }
        if self.op_timeout.is_zero() {
            return Err(ConfigError::new(
                "fleet_pace.op_timeout",
                "must be greater than zero",
            ));
        }
        let replicas = NonZeroU32::new(self.replicas)
            .ok_or_else(|| ConfigError::new("fleet_pace.replicas", "must be at least 1"))?;
        // The fleet's quota, checked as a local pacer's is.
        let mut fleet = Pacer::builder().max_wait(self.max_wait);
        fleet = match (self.quota, self.rate) {
            (Some(quota), _) => fleet.quota(quota),
            (None, Some((n, period))) => fleet.rate(n, period),
            (None, None) => fleet,
        };
        if let Some(burst) = self.burst {
            fleet = fleet.burst(burst);
        }
        let quota = fleet.build()?.quota();
        let interval = quota.replenish_interval();
        if interval > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "fleet_pace.quota",
                "at least one caller a day",
            ));
        }
        // Redis's clock is read in microseconds: the interval is rounded to
        // the nearest, and refused if that moves the rate by more than 1%.
        let nanos = interval.as_nanos();
        let interval_us = ((nanos + 500) / 1000) as u64;
        if interval_us == 0 || (interval_us as u128 * 1000).abs_diff(nanos) * 100 > nanos {
            return Err(ConfigError::new(
                "fleet_pace.quota",
                format!(
                    "an interval of {interval:?} is not within 1% of whole microseconds (Redis's clock is read in microseconds)"
                ),
            ));
        }
        let jitter = self.jitter.unwrap_or(Duration::ZERO);
        // This replica's share: the interval times the replicas, the burst
        // divided among them.
        let share = Quota::with_period(interval.saturating_mul(replicas.get()))
            .ok_or_else(|| ConfigError::new("fleet_pace.quota", "the interval is zero"))?
            .allow_burst(
                NonZeroU32::new(quota.burst_size().get() / replicas.get())
                    .unwrap_or(NonZeroU32::MIN),
            );
        let mut local = Pacer::builder().quota(share).max_wait(self.max_wait);
        if let Some(seed) = self.seed {
            local = local.seed(seed);
        }
        let local = local.build()?;
        Ok(FleetPacer {
            shared: Arc::new(Shared {
                link: Link::new(
                    client,
                    self.op_timeout,
                    "the fleet pacer paces this replica with its local share of the quota",
                    "the fleet pacer's shared schedule is back in use",
                ),
                key: format!("{}{{pace:{}}}:tat", self.prefix, self.name),
                name: self.name,
                quota,
                interval_us,
                tolerance_us: interval_us.saturating_mul(u64::from(quota.burst_size().get() - 1)),
                max_wait: self.max_wait,
                jitter,
                rng: RngSource::from_seed(self.seed),
                lag: Mutex::new(None),
                epoch: Instant::now(),
                local,
                waited: Count::default(),
                overloaded: Count::default(),
                local_turns: Count::default(),
                given_back: Count::default(),
            }),
        })
    }
}

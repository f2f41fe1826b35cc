//! Admission that waits instead of rejecting: a burst of callers released
//! in slices of a quota.
//!
//! # Why
//!
//! Three hundred instances start together after a deploy and all warm their
//! caches from the same database; a remediation script restarts a fleet in
//! one go; a batch fires every job at midnight. A rate limiter that
//! *rejects* turns the excess into errors and retries (another herd). A
//! pacer makes the excess *wait its turn*: callers are released at the
//! quota's rate, first come first served, and only a caller whose turn is
//! more than `max_wait` away is turned away (at once, with
//! [`error::Overloaded`]).
//!
//! The quota is a [governor](https://docs.rs/governor) [`Quota`]: `n` per
//! period, with an optional burst. The schedule is GCRA's (governor's
//! algorithm), with reservations: each caller gets its own release time, so
//! waiting callers do not poll the limiter in a loop. A caller that had to
//! wait also waits a random extra of up to `jitter` (by default one quota
//! interval), as governor's `until_ready_with_jitter` does, so that several
//! pacers started together do not release in step. The wait it applied is
//! recorded as `dephase.offset_ms` (strategy `pace`) on the current span.
//! A caller that goes away before its turn gives the turn back.
//!
//! ```
//! use std::time::Duration;
//! use dephase::pace::{Pacer, PaceLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::BoxError> {
//! let pacer = Pacer::builder()
//!     .rate(100, Duration::from_secs(1)) // 100 per second, one every 10 ms
//!     .max_wait(Duration::from_secs(5))
//!     .build()?;
//! let service = ServiceBuilder::new()
//!     .layer(PaceLayer::new(pacer))
//!     .service(tower::service_fn(|i: u32| async move { Ok::<_, dephase::BoxError>(i) }));
//!
//! let start = tokio::time::Instant::now();
//! let herd: Vec<_> = (0..300).map(|i| tokio::spawn(service.clone().oneshot(i))).collect();
//! for caller in herd {
//!     caller.await??;
//! }
//! // 300 callers at 100 per second: about three seconds, not one instant.
//! assert!(start.elapsed() >= Duration::from_millis(2990));
//! # Ok(()) }
//! ```

pub mod error;
pub mod future;
mod layer;
mod schedule;

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use governor::Quota;
use tower_service::Service;

use self::error::Overloaded;
pub use self::future::ResponseFuture;
pub use self::layer::PaceLayer;
use self::schedule::{Schedule, Slot};
use crate::BoxError;
use crate::error::ConfigError;
use crate::rng::{RngSource, Stream};

/// A pacing schedule shared by every clone (and every service built from
/// one [`PaceLayer`]).
#[derive(Clone)]
pub struct Pacer {
    shared: Arc<Shared>,
}

struct Shared {
    schedule: Schedule,
    quota: Quota,
    max_wait: Duration,
    jitter: Duration,
    rng: RngSource,
}

impl Pacer {
    /// A builder; [`rate`](PacerBuilder::rate) or
    /// [`quota`](PacerBuilder::quota) is required.
    pub fn builder() -> PacerBuilder {
        PacerBuilder::default()
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.shared.quota
    }

    /// The longest a caller is made to wait.
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// How long a caller arriving now would wait for its turn (before jitter).
    pub fn next_release(&self) -> Duration {
        self.shared.schedule.next_release()
    }

    /// Turns given back by callers that went away, not yet taken again.
    pub fn returned_turns(&self) -> usize {
        self.shared.schedule.returned()
    }

    /// Waits for a turn, outside any tower service: `Ok` with the wait it
    /// applied, or [`Overloaded`] at once if the turn is too far away.
    ///
    /// # Errors
    ///
    /// [`Overloaded`] when the turn is more than the maximum wait away.
    pub async fn wait(&self) -> Result<Duration, Overloaded> {
        let mut rng = self.shared.rng.stream();
        let turn = self.reserve(&mut rng)?;
        if let Some(at) = turn.at {
            tokio::time::sleep_until(at).await;
        }
        Ok(turn.spend())
    }

    /// Reserves a turn (with its jitter) for one caller.
    fn reserve(&self, rng: &mut Stream) -> Result<Turn, Overloaded> {
        let shared = &self.shared;
        let (slot, wait) = shared
            .schedule
            .reserve(shared.max_wait)
            .map_err(|wait| Overloaded::new(wait, shared.max_wait))?;
        let mut turn = Turn {
            shared: Arc::clone(shared),
            slot: Some(slot),
            at: None,
            wait,
        };
        if !wait.is_zero() {
            let jitter_nanos = u64::try_from(shared.jitter.as_nanos()).unwrap_or(u64::MAX);
            let jitter = Duration::from_nanos(rng.in_range(0, jitter_nanos));
            turn.wait += jitter;
            turn.at = Some(shared.schedule.instant(slot.release()) + jitter);
        }
        Ok(turn)
    }
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("quota", &self.shared.quota)
            .field("max_wait", &self.shared.max_wait)
            .field("jitter", &self.shared.jitter)
            .field("next_release", &self.next_release())
            .finish()
    }
}

/// A reserved turn; given back to the schedule if dropped before it is spent.
struct Turn {
    shared: Arc<Shared>,
    slot: Option<Slot>,
    /// When to go, if not at once.
    at: Option<tokio::time::Instant>,
    /// The wait this turn applies, jitter included.
    wait: Duration,
}

impl Turn {
    fn spend(mut self) -> Duration {
        self.slot = None;
        let wait = self.wait;
        if !wait.is_zero() {
            let millis = crate::offset::record_on_span(wait, "pace");
            tracing::event!(
                target: "dephase::pace",
                tracing::Level::DEBUG,
                dephase.offset_ms = millis,
                dephase.offset.strategy = "pace",
                "paced: released after waiting its turn"
            );
        }
        wait
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.schedule.give_back(slot);
        }
    }
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pacer`]; [`build`](Self::build) checks every field.
#[derive(Debug, Clone, Default)]
pub struct PacerBuilder {
    rate: Option<(u32, Duration)>,
    quota: Option<Quota>,
    burst: Option<u32>,
    max_wait: Option<Duration>,
    jitter: Option<Duration>,
    seed: Option<u64>,
}

impl PacerBuilder {
    /// `n` callers per `period`, one every `period / n`.
    pub fn rate(mut self, n: u32, period: Duration) -> Self {
        self.rate = Some((n, period));
        self.quota = None;
        self
    }

    /// A governor quota (its burst is kept unless [`burst`](Self::burst) is set).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self.rate = None;
        self
    }

    /// How many callers may go at once before the pacing starts (default 1:
    /// none — a burst is exactly what pacing spreads).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Callers whose turn is further away than this are turned away at once
    /// (default 30 s; zero means "only if it can go now").
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most random extra wait added to a caller that has to wait
    /// (default: one quota interval; zero for none).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Makes the jitter reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// No rate or quota, a zero rate (`pace.rate`), a zero period
    /// (`pace.period`), or a zero burst (`pace.burst`).
    pub fn build(self) -> Result<Pacer, ConfigError> {
        let quota = match (self.quota, self.rate) {
            (Some(quota), _) => quota,
            (None, Some((n, period))) => {
                let n = NonZeroU32::new(n)
                    .ok_or_else(|| ConfigError::new("pace.rate", "must be at least 1"))?;
                if period.is_zero() {
                    return Err(ConfigError::new("pace.period", "must be greater than zero"));
                }
                Quota::with_period(period / n.get()).ok_or_else(|| {
                    ConfigError::new("pace.period", format!("{period:?} / {n} is zero"))
                })?
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "pace.rate",
                    "a rate or a quota is required",
                ));
            }
        };
        let quota = match (self.burst, self.quota.is_some()) {
            (Some(b), _) => quota.allow_burst(
                NonZeroU32::new(b)
                    .ok_or_else(|| ConfigError::new("pace.burst", "must be at least 1"))?,
            ),
            (None, true) => quota,
            (None, false) => quota.allow_burst(NonZeroU32::MIN),
        };
        let interval = quota.replenish_interval();
        Ok(Pacer {
            shared: Arc::new(Shared {
                schedule: Schedule::new(interval, quota.burst_size().get()),
                quota,
                max_wait: self.max_wait.unwrap_or(Duration::from_secs(30)),
                jitter: self.jitter.unwrap_or(interval),
                rng: RngSource::from_seed(self.seed),
            }),
        })
    }
}

/// A service whose callers are released at a [`Pacer`]'s rate. Errors are
/// [`BoxError`]s: the inner service's, or an [`error::Overloaded`].
pub struct Pace<S> {
    inner: S,
    pacer: Pacer,
    rng: Stream,
}

impl<S> Pace<S> {
    /// Paces calls to `inner`.
    pub fn new(inner: S, pacer: Pacer) -> Self {
        let rng = pacer.shared.rng.stream();
        Pace { inner, pacer, rng }
    }

    /// The pacer.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    inner_accessors!();
}

impl<S, Req> Service<Req> for Pace<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.pacer.reserve(&mut self.rng) {
            Err(overloaded) => ResponseFuture::overloaded(overloaded),
            Ok(turn) => match turn.at {
                // Its turn is now: the service made ready for this call takes it.
                None => {
                    turn.spend();
                    ResponseFuture::called(self.inner.call(request))
                }
                // Later: the service made ready for this call waits with it
                // (and keeps what its readiness reserved); this service
                // goes on with a clone, to be made ready for the next call.
                Some(at) => {
                    let clone = self.inner.clone();
                    let readied = std::mem::replace(&mut self.inner, clone);
                    ResponseFuture::waiting(at, turn, readied, request)
                }
            },
        }
    }
}

impl<S: Clone> Clone for Pace<S> {
    fn clone(&self) -> Self {
        Pace::new(self.inner.clone(), self.pacer.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Pace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("inner", &self.inner)
            .field("pacer", &self.pacer)
            .finish()
    }
}

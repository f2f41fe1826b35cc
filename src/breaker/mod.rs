//! A circuit breaker whose open time is jittered and whose half-open state
//! admits a bounded number of probes.
//!
//! # Why
//!
//! A breaker stops calling a dependency that keeps failing, and tries it
//! again later. With a fixed open time, every replica whose breaker opened
//! at the same moment (they all saw the same outage) probes at the same
//! moment — resilience4j, Polly and tower-resilience all use a fixed break
//! duration. With a half-open state that lets every waiting call through
//! (failsafe, recloser), a recovering dependency gets the whole herd at once.
//!
//! Here:
//!
//! - **Trip** on a failure rate over a sliding window of time buckets, once a
//!   minimum number of calls has been seen (resilience4j and Polly
//!   semantics), or on `n` consecutive failures. Calls slower than a
//!   configured duration can count as failures. What a failure is comes from
//!   the same [`Classify`] a retry layer uses.
//! - **Open** for a jittered time drawn from an
//!   [`ExponentialBackoff`] (equal jitter by
//!   default, so at least half the base), growing with every re-opening
//!   until the breaker closes again: a hundred breakers that opened together
//!   probe at a hundred different moments.
//! - **Half-open** admits exactly `K` probes, however many callers race, and
//!   rejects the rest at once. `K` successes close it; one failure re-opens
//!   it for longer.
//! - A **rejection** does not call the inner service, is not counted, and is
//!   an [`error::Rejected`] that says when to come back.
//! - **Operators** can [`isolate`](Breaker::isolate) (force open),
//!   [`force_closed`](Breaker::force_closed) and [`reset`](Breaker::reset).
//!   Every transition emits an `INFO` event (target `dephase::breaker`) and
//!   sets `dephase.breaker.state` on the current span; a rejection sets
//!   `dephase.breaker.state` and `dephase.breaker.retry_after_ms`.
//!
//! One [`Breaker`] is shared by every clone (and by every service built from
//! one [`CircuitBreakerLayer`]). [`KeyedBreaker`] keeps one per key (per
//! host, say), bounded in number. The closed path is one atomic load to
//! admit and, for a success, one atomic add to record: no lock, no
//! allocation, and no clock read. Successes are placed in the window's time
//! buckets sixteen at a time (or at the next failure), in the bucket of that
//! moment: at most fifteen successes count from a later bucket than the one
//! they happened in, which matters only when calls are sparser than sixteen
//! per bucket.
//!
//! ```
//! use std::time::Duration;
//! use dephase::breaker::{Breaker, CircuitBreakerLayer, State};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let breaker = Breaker::builder()
//!     .consecutive_failures(3)
//!     .half_open_probes(1)
//!     .build()?;
//! let mut service = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(tower::service_fn(|_: ()| async { Err::<(), _>("down") }));
//!
//! for _ in 0..3 {
//!     let _ = service.ready().await.unwrap().call(()).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let rejected = service.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(rejected.to_string().contains("retry after"));
//! # Ok(()) }
//! ```

pub mod error;
pub mod future;
mod keyed;
mod layer;
mod state;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use self::error::Rejected;
pub use self::future::ResponseFuture;
pub use self::keyed::{KeyedBreaker, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use self::layer::CircuitBreakerLayer;
use self::state::{Config, Core, MAX_PROBES, PER_MILLION, Trip};
pub use self::state::{Permit, State};
use crate::BoxError;
use crate::backoff::{ExponentialBackoff, Jitter};
use crate::classify::{Classify, RetryErrors};
use crate::error::{ConfigError, check_f64};

/// A circuit breaker's shared state. Cheap to clone; clones are the same breaker.
#[derive(Clone)]
pub struct Breaker {
    core: Arc<Core>,
}

impl Breaker {
    /// A builder with the defaults: trip at a 50% failure rate over 10 s
    /// (10 buckets) once 20 calls were seen; open for 5 s with equal jitter,
    /// doubling on each re-opening up to 60 s; 3 half-open probes.
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::default()
    }

    /// Where the breaker is now.
    pub fn state(&self) -> State {
        self.core.state()
    }

    /// When an open (or half-open) breaker will next admit a call; `None`
    /// when it admits calls now or is isolated.
    pub fn retry_after(&self) -> Option<Duration> {
        self.core.retry_after()
    }

    /// Asks to make one call: a [`Permit`] whose outcome you then
    /// [`record`](Permit::record), or the rejection. For guarding code that is
    /// not a tower service.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, isolated, or half-open with
    /// all its probes out.
    #[inline]
    pub fn acquire(&self) -> Result<Permit, Rejected> {
        self.core
            .admit()
            .map(|ticket| Permit::new(&self.core, ticket))
    }

    /// Runs `f` through the breaker, for synchronous code: `Ok` with `f`'s
    /// result (every `Err` counts as a failure), or the rejection without
    /// running `f`.
    ///
    /// ```
    /// use dephase::breaker::Breaker;
    ///
    /// let breaker = Breaker::builder().consecutive_failures(2).build()?;
    /// assert_eq!(breaker.call(|| "ok".parse::<i32>().map_err(|_| "nan")), Ok(Err("nan")));
    /// assert_eq!(breaker.call(|| "42".parse::<i32>().map_err(|_| "nan")), Ok(Ok(42)));
    /// # Ok::<(), dephase::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, isolated, or half-open with
    /// all its probes out.
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<Result<T, E>, Rejected> {
        self.call_with(&RetryErrors, f)
    }

    /// [`call`](Self::call) with a classifier deciding what counts as a failure.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, isolated, or half-open with
    /// all its probes out.
    pub fn call_with<T, E, C: Classify<T, E>>(
        &self,
        classify: &C,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, Rejected> {
        let mut guard = state::Guard {
            core: &self.core,
            ticket: Some(self.core.admit()?),
        };
        let result = f();
        let ticket = guard.ticket.take().expect("taken once");
        self.core
            .finish(&ticket, classify.classify(result.as_ref()));
        Ok(result)
    }

    /// Forces the breaker open: every call is rejected until [`reset`](Self::reset).
    pub fn isolate(&self) {
        self.core.force(State::Isolated);
    }

    /// Forces the breaker closed: every call goes through and nothing is
    /// counted until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.core.force(State::ForcedClosed);
    }

    /// Back to closed, with an empty window and the open time starting over.
    pub fn reset(&self) {
        self.core.force(State::Closed);
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

/// Builds a [`Breaker`]; [`build`](Self::build) checks every field.
#[derive(Debug, Clone)]
pub struct BreakerBuilder {
    failure_rate: f64,
    minimum_calls: u32,
    window: Duration,
    buckets: u32,
    consecutive: Option<u32>,
    slow_call: Option<Duration>,
    open_time: Option<ExponentialBackoff>,
    probes: u32,
}

impl Default for BreakerBuilder {
    fn default() -> Self {
        BreakerBuilder {
            failure_rate: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            buckets: 10,
            consecutive: None,
            slow_call: None,
            open_time: None,
            probes: 3,
        }
    }
}

impl BreakerBuilder {
    /// Trip when failures are at least this share of the calls in the
    /// window: in `(0, 1]`, kept to a millionth and compared exactly (7
    /// failures in 100 calls are at least 0.07). (Turns off
    /// [`consecutive_failures`](Self::consecutive_failures).)
    pub fn failure_rate(mut self, threshold: f64) -> Self {
        self.failure_rate = threshold;
        self.consecutive = None;
        self
    }

    /// No trip on the failure rate before the window holds this many calls (at least 1).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// How far back the failure rate looks.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many buckets the window is kept in (1 to 10 000): an outcome
    /// counts for between `window − window/buckets` and `window`.
    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// Trip on `n` failures in a row instead of a failure rate.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = Some(n);
        self
    }

    /// Count a call that takes longer than `limit` as a failure.
    pub fn slow_call(mut self, limit: Duration) -> Self {
        self.slow_call = Some(limit);
        self
    }

    /// How long to stay open: the `n`-th opening in a row waits the `n`-th
    /// delay of this backoff (jittered; capped); closing starts it over.
    /// Default: base 5 s, multiplier 2, cap 60 s, [`Jitter::Equal`].
    pub fn open_time(mut self, backoff: ExponentialBackoff) -> Self {
        self.open_time = Some(backoff);
        self
    }

    /// How many probe calls the half-open state admits, and how many must
    /// succeed to close: 1 to 1023.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.probes = probes;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a failure rate outside `(0, 1]`
    /// (`breaker.failure_rate`), zero minimum calls (`breaker.minimum_calls`),
    /// a zero window (`breaker.window`), buckets outside 1–10 000 or narrower
    /// than a millisecond (`breaker.buckets`), zero consecutive failures
    /// (`breaker.consecutive_failures`), a zero slow-call limit
    /// (`breaker.slow_call`), or probes outside 1–1023
    /// (`breaker.half_open_probes`).
    pub fn build(self) -> Result<Breaker, ConfigError> {
        Ok(Breaker {
            core: Arc::new(Core::new(self.config()?)),
        })
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let trip = match self.consecutive {
            Some(0) => {
                return Err(ConfigError::new(
                    "breaker.consecutive_failures",
                    "must be at least 1",
                ));
            }
            Some(n) => Trip::Consecutive(n),
            None => {
                let threshold = check_f64("breaker.failure_rate", self.failure_rate, 0.0, 1.0)?;
                // Kept to a millionth, compared in integers.
                let threshold = (threshold * PER_MILLION as f64).round() as u64;
                if threshold == 0 {
                    return Err(ConfigError::new(
                        "breaker.failure_rate",
                        "must be at least a millionth (0 would trip on any call)",
                    ));
                }
                if self.minimum_calls == 0 {
                    return Err(ConfigError::new(
                        "breaker.minimum_calls",
                        "must be at least 1",
                    ));
                }
                if self.window.is_zero() {
                    return Err(ConfigError::new(
                        "breaker.window",
                        "must be greater than zero",
                    ));
                }
                if self.buckets == 0 || self.buckets > 10_000 {
                    return Err(ConfigError::new(
                        "breaker.buckets",
                        format!("must be between 1 and 10000 (got {})", self.buckets),
                    ));
                }
                if self.window / self.buckets < Duration::from_millis(1) {
                    return Err(ConfigError::new(
                        "breaker.buckets",
                        format!(
                            "{} buckets over {:?} are narrower than 1 ms",
                            self.buckets, self.window
                        ),
                    ));
                }
                Trip::FailureRate {
                    threshold,
                    minimum_calls: self.minimum_calls,
                    window: self.window,
                    buckets: self.buckets,
                }
            }
        };
        if self.slow_call.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "breaker.slow_call",
                "must be greater than zero",
            ));
        }
        if self.probes == 0 || self.probes > MAX_PROBES {
            return Err(ConfigError::new(
                "breaker.half_open_probes",
                format!("must be between 1 and {MAX_PROBES} (got {})", self.probes),
            ));
        }
        let open_time = match &self.open_time {
            Some(backoff) => backoff.clone(),
            None => ExponentialBackoff::builder()
                .base(Duration::from_secs(5))
                .multiplier(2.0)
                .cap(Duration::from_secs(60))
                .jitter(Jitter::Equal)
                .build()?,
        };
        Ok(Config {
            trip,
            slow_call: self.slow_call,
            open_time,
            probes: self.probes,
        })
    }
}

/// A service guarded by a [`Breaker`]. Its errors are [`BoxError`]s: the
/// inner service's, or an [`error::Rejected`].
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S, C = RetryErrors> {
    inner: S,
    breaker: Breaker,
    classify: C,
}

impl<S> CircuitBreaker<S> {
    /// Guards `inner` with `breaker`; every `Err` counts as a failure.
    pub fn new(inner: S, breaker: Breaker) -> Self {
        CircuitBreaker::with_classifier(inner, breaker, RetryErrors)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Guards `inner` with `breaker`; `classify` decides what a failure is.
    pub fn with_classifier(inner: S, breaker: Breaker, classify: C) -> Self {
        CircuitBreaker {
            inner,
            breaker,
            classify,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    inner_accessors!();
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        call_through(&self.breaker, &mut self.inner, &self.classify, request)
    }
}

/// Admits the call through `breaker` (calling `inner`) or rejects it.
fn call_through<S, C, Req>(
    breaker: &Breaker,
    inner: &mut S,
    classify: &C,
    request: Req,
) -> ResponseFuture<S::Future, C>
where
    S: Service<Req>,
    C: Clone,
{
    match breaker.acquire() {
        Ok(permit) => ResponseFuture::called(inner.call(request), permit, classify.clone()),
        Err(rejected) => ResponseFuture::rejected(rejected),
    }
}

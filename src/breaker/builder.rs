//! [`BreakerBuilder`]: a breaker's settings, checked when it is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::handle::{Breaker, Lanes};
use super::state::{BreakerEvent, Config, Core, HalfOpen, Listener, MAX_PROBES, PER_MILLION, Trip};
use crate::backoff::{ExponentialBackoff, Jitter};
use crate::error::{ConfigError, check_f64};
use crate::window;

/// Builds a [`Breaker`]; [`build`](Self::build) checks every field.
#[derive(Clone)]
pub struct BreakerBuilder {
    failure_rate: f64,
    minimum_calls: u32,
    window: Duration,
    buckets: u32,
    consecutive: Option<u32>,
    slow_call: Option<Duration>,
    slow_call_rate: Option<f64>,
    open_time: Option<ExponentialBackoff>,
    probes: u32,
    half_open_by_rate: bool,
    listener: Option<Listener>,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("failure_rate", &self.failure_rate)
            .field("minimum_calls", &self.minimum_calls)
            .field("window", &self.window)
            .field("buckets", &self.buckets)
            .field("consecutive", &self.consecutive)
            .field("slow_call", &self.slow_call)
            .field("slow_call_rate", &self.slow_call_rate)
            .field("probes", &self.probes)
            .field("half_open_by_rate", &self.half_open_by_rate)
            .finish_non_exhaustive()
    }
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
            slow_call_rate: None,
            open_time: None,
            probes: 3,
            half_open_by_rate: false,
            listener: None,
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
        self.slow_call_rate = None;
        self
    }

    /// resilience4j's slow-call rate: calls longer than `limit` are counted
    /// on their own (not as failures), and the breaker also trips when they
    /// are at least `share` of the calls in the window, once the minimum of
    /// calls is in — two thresholds, the failure rate and this one. Needs
    /// the failure-rate trip. `share` is kept to a millionth.
    pub fn slow_call_rate(mut self, limit: Duration, share: f64) -> Self {
        self.slow_call = Some(limit);
        self.slow_call_rate = Some(share);
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

    /// Decides the half-open state as resilience4j does: once all the
    /// probes are done, open again if their failure rate reaches the
    /// failure-rate threshold or (with [`slow_call_rate`](Self::slow_call_rate))
    /// their slow-call rate reaches its share, else close. (With
    /// [`slow_call`](Self::slow_call) instead, a slow probe is a failure.)
    /// The default decides as each probe ends: all must succeed, and be
    /// fast, one failure (or slow call) opens.
    pub fn half_open_by_failure_rate(mut self) -> Self {
        self.half_open_by_rate = true;
        self
    }

    /// Calls `listener` with every [`BreakerEvent`] (transitions and
    /// rejections), synchronously, on the thread of the call that caused
    /// it: keep it short. Nothing is called on the closed path.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use dephase::breaker::{Breaker, BreakerEvent, State};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let breaker = Breaker::builder()
    ///     .consecutive_failures(1)
    ///     .on_event(move |event| log.lock().unwrap().push(*event))
    ///     .build()?;
    /// breaker.acquire().unwrap().record(dephase::Outcome::failure("down"));
    /// assert!(matches!(
    ///     seen.lock().unwrap()[0],
    ///     BreakerEvent::Transition { from: State::Closed, to: State::Open, .. }
    /// ));
    /// # Ok::<(), dephase::ConfigError>(())
    /// ```
    pub fn on_event(mut self, listener: impl Fn(&BreakerEvent) + Send + Sync + 'static) -> Self {
        self.listener = Some(Listener(Arc::new(listener)));
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
            core: Arc::new(Core::new(self.config()?, true)),
            lanes: (!cfg!(dephase_loom)).then(|| Arc::new(Lanes::new())),
        })
    }

    pub(super) fn config(&self) -> Result<Config, ConfigError> {
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
                window::check(
                    ("breaker.window", self.window),
                    ("breaker.buckets", self.buckets),
                )?;
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
        let slow_call_rate = match self.slow_call_rate {
            None => None,
            Some(_) if matches!(trip, Trip::Consecutive(_)) => {
                return Err(ConfigError::new(
                    "breaker.slow_call_rate",
                    "needs the failure-rate trip (not consecutive failures)",
                ));
            }
            Some(share) => {
                let share = check_f64("breaker.slow_call_rate", share, 0.0, 1.0)?;
                let share = (share * PER_MILLION as f64).round() as u64;
                if share == 0 {
                    return Err(ConfigError::new(
                        "breaker.slow_call_rate",
                        "must be at least a millionth",
                    ));
                }
                Some(share)
            }
        };
        // The half-open failure rate is the failure-rate threshold (the
        // default 50% with consecutive failures).
        let half_open = if self.half_open_by_rate {
            let threshold = check_f64("breaker.failure_rate", self.failure_rate, 0.0, 1.0)?;
            HalfOpen::FailureRate(((threshold * PER_MILLION as f64).round() as u64).max(1))
        } else {
            HalfOpen::AllSucceed
        };
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
            slow_call_rate,
            open_time,
            probes: self.probes,
            half_open,
            listener: self.listener.clone(),
        })
    }
}

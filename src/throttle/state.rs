//! What the throttle decides: the counts of requests and accepts over a
//! trailing window, and the probability of shedding the next request.

use std::fmt;
use std::sync::Arc;

use super::builder::ThrottlerBuilder;
use super::error::Throttled;
use crate::classify::Outcome;
use crate::rng::RngSource;
use crate::tally::Count;
use crate::window::{Window, pair};

/// The counts of an adaptive throttle, shared by every clone.
#[derive(Clone)]
pub struct Throttler {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// (requests, accepts) per slot.
    pub(super) window: Window,
    pub(super) k: f64,
    pub(super) rng: RngSource,
    pub(super) rejections: Count,
}

/// What a [`Throttler`] has done: its counts over the trailing window now,
/// and the calls it has shed since it was built (every clone counts into
/// the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct ThrottleStats {
    /// Requests in the window (shed ones included).
    pub requests: u64,
    /// Of those, the ones the backend accepted.
    pub accepts: u64,
    /// The probability that a request made now is shed.
    pub probability: f64,
    /// Calls shed locally since the throttler was built.
    pub rejections: u64,
}

impl Throttler {
    /// A builder with the SRE book's defaults: `K = 2`, a two-minute window
    /// (in 120 one-second buckets).
    pub fn builder() -> ThrottlerBuilder {
        ThrottlerBuilder::default()
    }

    /// `(requests, accepts)` in the window now.
    pub fn counts(&self) -> (u64, u64) {
        self.shared.window.now();
        self.shared.window.sum_pairs()
    }

    /// The probability that a request made now is rejected locally.
    pub fn probability(&self) -> f64 {
        let (requests, accepts) = self.counts();
        probability(requests, accepts, self.shared.k)
    }

    /// The window's counts, the probability of shedding, and the calls
    /// shed so far.
    pub fn stats(&self) -> ThrottleStats {
        let (requests, accepts) = self.counts();
        ThrottleStats {
            requests,
            accepts,
            probability: probability(requests, accepts, self.shared.k),
            rejections: self.shared.rejections.get(),
        }
    }

    /// Asks to make one call: a [`Permit`] whose outcome you then
    /// [`record`](Permit::record), or the rejection. The request counts
    /// either way. For guarding code that is not a tower service.
    ///
    /// # Errors
    ///
    /// [`Throttled`] when the call is shed locally.
    pub fn acquire(&self) -> Result<Permit, Throttled> {
        self.admit(self.shared.rng.draw())?;
        Ok(Permit {
            throttler: self.clone(),
        })
    }

    /// Runs `f` through the throttle, for synchronous code: `Ok` with `f`'s
    /// result (an `Err` counts as not accepted), or the rejection without
    /// running `f`.
    ///
    /// ```
    /// use dephase::throttle::Throttler;
    ///
    /// let throttler = Throttler::builder().seed(1).build()?;
    /// assert_eq!(throttler.call(|| "42".parse::<i32>()), Ok(Ok(42)));
    /// # Ok::<(), dephase::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Throttled`] when the call is shed locally.
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<Result<T, E>, Throttled> {
        let permit = self.acquire()?;
        let result = f();
        if result.is_ok() {
            permit.record(Outcome::Success);
        }
        Ok(result)
    }

    /// Counts one request and decides whether it may go. `draw` is a
    /// uniform fraction of 2⁶⁴.
    fn admit(&self, draw: u64) -> Result<(), Throttled> {
        let window = &self.shared.window;
        let now = window.now();
        let (requests, accepts) = window.sum_pairs();
        let p = probability(requests, accepts, self.shared.k);
        window.add(now, pair(1, 0));
        if p > 0.0 && (draw as f64) < p * 2f64.powi(64) {
            self.shared.rejections.add();
            crate::telemetry::count::throttle_rejected();
            Err(Throttled::new(p))
        } else {
            Ok(())
        }
    }

    /// Books an accepted request.
    fn accept(&self) {
        let window = &self.shared.window;
        window.add(window.now(), pair(0, 1));
    }
}

fn probability(requests: u64, accepts: u64, k: f64) -> f64 {
    ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
}

impl fmt::Debug for Throttler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (requests, accepts) = self.counts();
        f.debug_struct("Throttler")
            .field("k", &self.shared.k)
            .field("requests", &requests)
            .field("accepts", &accepts)
            .finish_non_exhaustive()
    }
}

/// The right to make one call through a [`Throttler`]; book its outcome
/// with [`record`](Permit::record). A permit dropped without an outcome
/// counts as a request that the backend did not accept.
#[derive(Debug)]
pub struct Permit {
    throttler: Throttler,
}

impl Permit {
    /// Books the call's outcome: anything but a failure is an accept.
    pub fn record(self, outcome: Outcome) {
        if !outcome.is_failure() {
            self.throttler.accept();
        }
    }
}

//! [`ExponentialBackoff`] and the [`Sequence`] each retrying request draws from it.

use std::time::Duration;

use super::jitter::{self, Jitter};
use crate::clock::nanos;
use crate::error::{ConfigError, check_f64};
use crate::rng::{RngSource, Stream};

/// The largest cap a backoff accepts: `u64::MAX` nanoseconds (about 584 years).
pub const MAX_CAP: Duration = Duration::from_nanos(u64::MAX);

/// A validated exponential backoff: `min(cap, base · multiplier^n)` with [`Jitter`].
///
/// Cheap to clone; clones share the random source, so sequences started from
/// any clone are still independent of each other.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    base: Duration,
    cap: Duration,
    multiplier: f64,
    jitter: Jitter,
    evenly_spread: bool,
    rng: RngSource,
}

impl ExponentialBackoff {
    /// A builder with the defaults: base 100 ms, multiplier 2, cap 10 s, full jitter.
    pub fn builder() -> ExponentialBackoffBuilder {
        ExponentialBackoffBuilder::default()
    }

    /// Starts a new retry sequence with its own random stream.
    pub fn sequence(&self) -> Sequence {
        Sequence {
            base: nanos(self.base),
            cap: nanos(self.cap),
            multiplier: self.multiplier,
            jitter: self.jitter,
            current: nanos(self.base),
            previous: nanos(self.base),
            retries: 0,
            rng: if self.evenly_spread {
                self.rng.stream()
            } else {
                self.rng.stream().independent()
            },
        }
    }

    /// The delay before the first retry, before jitter.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay this backoff can produce.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The factor by which the delay grows per retry.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The jitter kind.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Whether first delays are evenly spread across sequences (see
    /// [`ExponentialBackoffBuilder::evenly_spread`]).
    pub fn is_evenly_spread(&self) -> bool {
        self.evenly_spread
    }
}

impl Default for ExponentialBackoff {
    /// Base 100 ms, multiplier 2, cap 10 s, full jitter, unseeded.
    fn default() -> Self {
        ExponentialBackoff::builder()
            .build()
            .expect("the default backoff settings are valid")
    }
}

/// Builds an [`ExponentialBackoff`]; [`build`](Self::build) checks every field.
#[derive(Debug, Clone)]
pub struct ExponentialBackoffBuilder {
    base: Duration,
    cap: Duration,
    multiplier: f64,
    jitter: Jitter,
    evenly_spread: bool,
    seed: Option<u64>,
}

impl Default for ExponentialBackoffBuilder {
    fn default() -> Self {
        ExponentialBackoffBuilder {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            evenly_spread: true,
            seed: None,
        }
    }
}

impl ExponentialBackoffBuilder {
    /// The delay before the first retry, before jitter (and the lower bound
    /// of `Decorrelated`). Must be greater than zero.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The largest delay. Must not be less than the base, nor more than [`MAX_CAP`].
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The factor by which the delay grows per retry. Must be finite and at
    /// least 1 (1 gives a constant delay).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The jitter kind (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Whether the *first* delays of the sequences started from this backoff
    /// are evenly spread (the default) or independent.
    ///
    /// Evenly spread: the `k`-th sequence's first jitter draw is the `k`-th
    /// point of a golden-ratio (Weyl) sequence from a random start, so a
    /// herd of requests that fail together comes back as evenly as possible
    /// over the jitter range (1000 sequences in 20 buckets: peak-to-mean
    /// about 1.0, against about 1.25 for independent draws). Later draws,
    /// and sequences from other processes, are independent.
    ///
    /// `false` draws every delay independently, as most implementations do
    /// (the AWS SDKs, Brooker's simulation).
    pub fn evenly_spread(mut self, evenly_spread: bool) -> Self {
        self.evenly_spread = evenly_spread;
        self
    }

    /// Makes every sequence reproducible: the `k`-th sequence started from
    /// this backoff (or its clones) draws the same numbers in every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when the base is zero, the cap is
    /// below the base or above [`MAX_CAP`], or the multiplier is NaN,
    /// infinite or below 1.
    pub fn build(self) -> Result<ExponentialBackoff, ConfigError> {
        if self.base.is_zero() {
            return Err(ConfigError::new(
                "backoff.base",
                "must be greater than zero",
            ));
        }
        if self.cap < self.base {
            return Err(ConfigError::new(
                "backoff.cap",
                format!(
                    "must not be less than the base (cap {:?}, base {:?})",
                    self.cap, self.base
                ),
            ));
        }
        if self.cap > MAX_CAP {
            return Err(ConfigError::new(
                "backoff.cap",
                format!("must be at most {MAX_CAP:?} (got {:?})", self.cap),
            ));
        }
        let multiplier = check_f64("backoff.multiplier", self.multiplier, 1.0, f64::MAX)?;
        Ok(ExponentialBackoff {
            base: self.base,
            cap: self.cap,
            multiplier,
            jitter: self.jitter,
            evenly_spread: self.evenly_spread,
            rng: RngSource::from_seed(self.seed),
        })
    }
}

/// One retry sequence: the delays before the 1st, 2nd, ... retry of one request.
///
/// An endless [`Iterator`] of delays; [`next_delay`](Self::next_delay) is the
/// same without the `Option`.
#[derive(Debug, Clone)]
pub struct Sequence {
    base: u64,
    cap: u64,
    multiplier: f64,
    jitter: Jitter,
    /// The exponential delay for the next retry, before jitter.
    current: u64,
    /// The last delay returned (the state of `Decorrelated`).
    previous: u64,
    retries: u32,
    rng: Stream,
}

impl Sequence {
    /// The delay before the next retry; never more than the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jitter::draw(
            self.jitter,
            self.current,
            self.base,
            self.cap,
            self.previous,
            &mut self.rng,
        );
        self.previous = delay.max(self.base);
        self.retries = self.retries.saturating_add(1);
        // `base · multiplierⁿ`, from the base each time: a product of
        // truncated products would lose up to a nanosecond per step. `as
        // u64` saturates, so an overflowing product lands on the cap.
        let exponent = i32::try_from(self.retries).unwrap_or(i32::MAX);
        self.current = ((self.base as f64 * self.multiplier.powi(exponent)) as u64).min(self.cap);
        Duration::from_nanos(delay)
    }

    /// How many delays this sequence has produced.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The jitter kind of this sequence.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }
}

impl Iterator for Sequence {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

//! The limit algorithms: how a concurrency limit follows what the service
//! can take — [`Aimd`], [`Vegas`] and [`Gradient2`], after Netflix's
//! concurrency-limits (`AIMDLimit`, `VegasLimit`, `Gradient2Limit`), with
//! the same formulas and defaults. Each is a pure state machine fed one
//! [`Sample`] per sampling window; the [`Limiter`](super::Limiter) does the
//! windowing, as Netflix's `WindowedLimit` does.

use std::time::Duration;

use crate::error::{ConfigError, check_f64};
use crate::rng::{RngSource, Stream};

/// What a sampling window saw: its average round-trip time, the most
/// requests in flight while it ran, and whether any request was dropped
/// (classified as a retryable failure: a timeout, a 503, a refusal — the
/// overload signal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The window's average round-trip time.
    pub rtt: Duration,
    /// The most requests in flight at once during the window.
    pub in_flight: u32,
    /// Whether a request of the window was dropped.
    pub dropped: bool,
}

/// A concurrency limit algorithm: the limit after each window's sample.
///
/// Implement it for your own; [`Aimd`], [`Vegas`] and [`Gradient2`] are
/// here.
pub trait LimitAlgorithm: Send + 'static {
    /// The limit to start from.
    fn initial(&self) -> f64;

    /// The new (estimated, fractional) limit after `sample`. The limiter
    /// admits the integer part, at least 1.
    fn update(&mut self, sample: &Sample) -> f64;
}

/// Netflix's `Log10RootFunction` (as fixed in 2018: `⌊log₁₀ n⌋` above
/// 1000 too): `max(1, ⌊log₁₀ n⌋)` — how Vegas scales its thresholds with
/// the limit.
fn log10_root(n: f64) -> f64 {
    n.max(1.0).log10().floor().max(1.0)
}

// ----- AIMD ------------------------------------------------------------

/// Loss-based: add one while no request is dropped and the limit is in
/// use; multiply by `backoff` on a drop (or a window slower than the
/// timeout). Netflix `AIMDLimit`:
///
/// ```text
/// if dropped or rtt > timeout:  limit = max(min, min(limit − 1, ⌊limit × backoff⌋))
/// else if in_flight × 2 ≥ limit: limit = limit + 1
/// ```
/// (then within `[min, max]`). Defaults, as Netflix's builder: initial 20,
/// backoff 0.9, timeout 5 s, min 20, max 200.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    /// The initial limit asked for, before the range clamps it.
    asked: f64,
    backoff: f64,
    timeout: Duration,
    min: f64,
    max: f64,
}

impl Aimd {
    /// The defaults above.
    pub fn new() -> Aimd {
        Aimd {
            limit: 20.0,
            asked: 20.0,
            backoff: 0.9,
            timeout: Duration::from_secs(5),
            min: 20.0,
            max: 200.0,
        }
    }

    /// The limit to start from (default 20; kept within the range, in
    /// whichever order the two are set).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.asked = f64::from(limit.max(1));
        self.limit = self.asked.clamp(self.min, self.max);
        self
    }

    /// The factor applied on a drop, in `[0.5, 1)` (default 0.9).
    ///
    /// # Errors
    ///
    /// Outside `[0.5, 1)` (`limit.backoff`), as Netflix checks.
    pub fn backoff(mut self, backoff: f64) -> Result<Self, ConfigError> {
        let backoff = check_f64("limit.backoff", backoff, 0.5, 1.0)?;
        if backoff >= 1.0 {
            return Err(ConfigError::new("limit.backoff", "must be below 1"));
        }
        self.backoff = backoff;
        Ok(self)
    }

    /// A window whose average round trip exceeds this counts as a drop
    /// (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The range the limit stays in (default 20 to 200).
    ///
    /// # Errors
    ///
    /// A zero minimum or a maximum below it (`limit.range`).
    pub fn range(mut self, min: u32, max: u32) -> Result<Self, ConfigError> {
        check_range(min, max)?;
        self.min = f64::from(min);
        self.max = f64::from(max);
        self.limit = self.asked.clamp(self.min, self.max);
        Ok(self)
    }
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Aimd {
    fn initial(&self) -> f64 {
        self.limit.clamp(self.min, self.max)
    }

    fn update(&mut self, sample: &Sample) -> f64 {
        let limit = self.limit;
        let next = if sample.dropped || sample.rtt > self.timeout {
            (limit - 1.0).min((limit * self.backoff).floor())
        } else if f64::from(sample.in_flight) * 2.0 >= limit {
            limit + 1.0
        } else {
            limit
        };
        self.limit = next.clamp(self.min, self.max);
        self.limit
    }
}

fn check_range(min: u32, max: u32) -> Result<(), ConfigError> {
    if min == 0 {
        return Err(ConfigError::new(
            "limit.range",
            "the minimum must be at least 1",
        ));
    }
    if max < min {
        return Err(ConfigError::new(
            "limit.range",
            format!("the maximum ({max}) must not be below the minimum ({min})"),
        ));
    }
    Ok(())
}

// ----- Vegas -----------------------------------------------------------

/// Delay-based, after TCP Vegas: the queue a window implies,
/// `queue = ⌈limit × (1 − rtt_noload / rtt)⌉`, is kept between `α` and
/// `β`. Netflix `VegasLimit`, with its functions of the limit
/// (`L = max(1, ⌊log₁₀ limit⌋)`, Netflix's `Log10RootFunction`):
///
/// ```text
/// α = 3L, β = 6L, threshold = L
/// dropped                → limit − L
/// in_flight × 2 < limit  → unchanged (no upward drift while idle)
/// queue ≤ threshold      → limit + β
/// queue < α              → limit + L
/// queue > β              → limit − L
/// otherwise              → unchanged
/// ```
/// then clamped to `[1, max]` and smoothed: `limit × (1 − s) + new × s`.
/// The no-load round trip is the smallest seen, re-probed (set to the
/// current sample) every `probe × limit` samples, `probe` jittered in
/// `[0.5, 1) × 30`. Defaults: initial 20, max 1000, smoothing 1.
#[derive(Debug, Clone)]
pub struct Vegas {
    limit: f64,
    /// The initial limit asked for, before the maximum clamps it.
    asked: f64,
    max: f64,
    smoothing: f64,
    rtt_noload: Option<Duration>,
    probe_multiplier: f64,
    probe_jitter: f64,
    probe_count: u64,
    rng: Stream,
}

impl Vegas {
    /// The defaults above.
    pub fn new() -> Vegas {
        Vegas::with_rng(RngSource::entropy())
    }

    /// The defaults, with the probe's jitter drawn from `seed` (for tests).
    pub fn seeded(seed: u64) -> Vegas {
        Vegas::with_rng(RngSource::seeded(seed))
    }

    fn with_rng(source: RngSource) -> Vegas {
        let mut vegas = Vegas {
            limit: 20.0,
            asked: 20.0,
            max: 1000.0,
            smoothing: 1.0,
            rtt_noload: None,
            probe_multiplier: 30.0,
            probe_jitter: 1.0,
            probe_count: 0,
            rng: source.stream().independent(),
        };
        vegas.reset_probe_jitter();
        vegas
    }

    fn reset_probe_jitter(&mut self) {
        // Uniform in [0.5, 1).
        self.probe_jitter = 0.5 + (self.rng.fraction() >> 11) as f64 / (1u64 << 54) as f64;
    }

    /// The limit to start from (default 20; at most the maximum).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.asked = f64::from(limit.max(1));
        self.limit = self.asked.min(self.max);
        self
    }

    /// The largest limit (default 1000).
    pub fn max_limit(mut self, max: u32) -> Self {
        self.max = f64::from(max.max(1));
        self.limit = self.asked.min(self.max);
        self
    }

    /// How much of each new estimate is taken, in `(0, 1]` (default 1).
    ///
    /// # Errors
    ///
    /// Outside `(0, 1]` (`limit.smoothing`).
    pub fn smoothing(mut self, smoothing: f64) -> Result<Self, ConfigError> {
        self.smoothing = check_smoothing(smoothing)?;
        Ok(self)
    }

    /// The no-load round trip, once one has been seen.
    pub fn rtt_noload(&self) -> Option<Duration> {
        self.rtt_noload
    }
}

impl Default for Vegas {
    fn default() -> Self {
        Self::new()
    }
}

fn check_smoothing(smoothing: f64) -> Result<f64, ConfigError> {
    let smoothing = check_f64("limit.smoothing", smoothing, 0.0, 1.0)?;
    if smoothing == 0.0 {
        return Err(ConfigError::new(
            "limit.smoothing",
            "must be greater than zero",
        ));
    }
    Ok(smoothing)
}

impl LimitAlgorithm for Vegas {
    fn initial(&self) -> f64 {
        self.limit.min(self.max)
    }

    fn update(&mut self, sample: &Sample) -> f64 {
        let rtt = sample.rtt.max(Duration::from_nanos(1));
        self.probe_count += 1;
        if self.probe_jitter * self.probe_multiplier * self.limit <= self.probe_count as f64 {
            self.reset_probe_jitter();
            self.probe_count = 0;
            self.rtt_noload = Some(rtt);
            return self.limit;
        }
        let noload = match self.rtt_noload {
            Some(noload) if rtt >= noload => noload,
            _ => {
                self.rtt_noload = Some(rtt);
                return self.limit;
            }
        };
        let limit = self.limit;
        let queue = (limit * (1.0 - noload.as_secs_f64() / rtt.as_secs_f64())).ceil();
        let l = log10_root(limit);
        let new = if sample.dropped {
            limit - l
        } else if f64::from(sample.in_flight) * 2.0 < limit {
            return limit;
        } else {
            let (alpha, beta, threshold) = (3.0 * l, 6.0 * l, l);
            if queue <= threshold {
                limit + beta
            } else if queue < alpha {
                limit + l
            } else if queue > beta {
                limit - l
            } else {
                return limit;
            }
        };
        let new = new.clamp(1.0, self.max);
        self.limit = (1.0 - self.smoothing) * limit + self.smoothing * new;
        self.limit
    }
}

// ----- Gradient2 --------------------------------------------------------

/// Delay-based, on the gradient between a long-term average round trip
/// and the current one. Netflix `Gradient2Limit`:
///
/// ```text
/// long = exponential average of rtt over 600 samples (the first 10 averaged)
/// if long / rtt > 2:      long = long × 0.95     (recover after an overload)
/// if in_flight < limit/2: unchanged              (app-limited)
/// gradient = clamp(tolerance × long / rtt, 0.5, 1)
/// new = limit × gradient + queue
/// limit = limit × (1 − s) + new × s, clamped to [min, max]
/// ```
/// Defaults: initial 20, min 20, max 200, queue 4, smoothing 0.2, long
/// window 600, tolerance 1.5 (round trips up to 1.5× the long average are
/// not queueing). Drops are not an input (the round trip is).
#[derive(Debug, Clone)]
pub struct Gradient2 {
    limit: f64,
    /// The initial limit asked for, before the range clamps it.
    asked: f64,
    min: f64,
    max: f64,
    queue: f64,
    smoothing: f64,
    tolerance: f64,
    long: ExpAvg,
}

/// Netflix's `ExpAvgMeasurement`: the plain average of the first `warmup`
/// samples, then `value × (1 − f) + sample × f` with `f = 2 / (window + 1)`.
#[derive(Debug, Clone)]
struct ExpAvg {
    value: f64,
    sum: f64,
    count: u32,
    window: u32,
    warmup: u32,
}

impl ExpAvg {
    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / f64::from(self.count);
        } else {
            let factor = 2.0 / (f64::from(self.window) + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }
}

impl Gradient2 {
    /// The defaults above.
    pub fn new() -> Gradient2 {
        Gradient2 {
            limit: 20.0,
            asked: 20.0,
            min: 20.0,
            max: 200.0,
            queue: 4.0,
            smoothing: 0.2,
            tolerance: 1.5,
            long: ExpAvg {
                value: 0.0,
                sum: 0.0,
                count: 0,
                window: 600,
                warmup: 10,
            },
        }
    }

    /// The limit to start from (default 20; kept within the range, in
    /// whichever order the two are set).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.asked = f64::from(limit.max(1));
        self.limit = self.asked.clamp(self.min, self.max);
        self
    }

    /// The range the limit stays in (default 20 to 200).
    ///
    /// # Errors
    ///
    /// A zero minimum or a maximum below it (`limit.range`).
    pub fn range(mut self, min: u32, max: u32) -> Result<Self, ConfigError> {
        check_range(min, max)?;
        self.min = f64::from(min);
        self.max = f64::from(max);
        self.limit = self.asked.clamp(self.min, self.max);
        Ok(self)
    }

    /// Round trips up to `tolerance` × the long average count as no
    /// queueing (default 1.5, Netflix's `rttTolerance`; at least 1).
    ///
    /// # Errors
    ///
    /// Below 1 or not finite (`limit.tolerance`).
    pub fn tolerance(mut self, tolerance: f64) -> Result<Self, ConfigError> {
        self.tolerance = check_f64("limit.tolerance", tolerance, 1.0, f64::MAX)?;
        Ok(self)
    }

    /// How far the limit may grow past the gradient's estimate while round
    /// trips stay low (default 4).
    pub fn queue(mut self, queue: u32) -> Self {
        self.queue = f64::from(queue);
        self
    }

    /// How much of each new estimate is taken, in `(0, 1]` (default 0.2).
    ///
    /// # Errors
    ///
    /// Outside `(0, 1]` (`limit.smoothing`).
    pub fn smoothing(mut self, smoothing: f64) -> Result<Self, ConfigError> {
        self.smoothing = check_smoothing(smoothing)?;
        Ok(self)
    }

    /// Samples in the long-term average's window (default 600).
    pub fn long_window(mut self, window: u32) -> Self {
        self.long.window = window.max(1);
        self
    }

    /// The long-term average round trip (zero before the first sample).
    pub fn long_rtt(&self) -> Duration {
        Duration::try_from_secs_f64(self.long.value.max(0.0)).unwrap_or(Duration::MAX)
    }
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial(&self) -> f64 {
        self.limit.clamp(self.min, self.max)
    }

    fn update(&mut self, sample: &Sample) -> f64 {
        let short = sample.rtt.as_secs_f64().max(1e-9);
        // As Netflix: the decay applies to the measurement, the gradient
        // below uses the value before it.
        let long = self.long.add(short);
        if long / short > 2.0 {
            self.long.value *= 0.95;
        }
        let limit = self.limit;
        if f64::from(sample.in_flight) < limit / 2.0 {
            return limit;
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let new = limit * gradient + self.queue;
        let new = limit * (1.0 - self.smoothing) + new * self.smoothing;
        self.limit = new.clamp(self.min, self.max);
        self.limit
    }
}

/// A fixed limit (no adaptation): the baseline the herd compares with.
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub u32);

impl LimitAlgorithm for Fixed {
    fn initial(&self) -> f64 {
        f64::from(self.0.max(1))
    }

    fn update(&mut self, _: &Sample) -> f64 {
        f64::from(self.0.max(1))
    }
}

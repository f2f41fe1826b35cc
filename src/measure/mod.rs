//! How spread out a set of events is: the numbers that prove dephasing works.
//!
//! # Why
//!
//! "We added jitter" is a claim; "the peak went from 500 requests in one
//! 10 ms bucket to 23" is a result. This module turns event timestamps (and
//! start/end intervals) into the few statistics that show a herd and its
//! spreading:
//!
//! - **count** and **standard deviation** of the timestamps;
//! - **peak per bucket**: the most events in any bucket of a given width;
//! - **peak-to-mean**: that peak over the mean per bucket — 1.0 is perfectly
//!   flat, `n` means everything landed in one of `n` buckets;
//! - **maximum concurrency** of intervals (how many calls were in flight at once).
//!
//! The examples and benches of this crate use it, and so can you: record
//! when your jobs fire (a [`Recorder`] does it from many tasks) and compare.
//!
//! ```
//! use std::time::Duration;
//! use dephase::measure::{Spread, max_concurrency};
//!
//! let ms = Duration::from_millis;
//! // A herd: everything in the first 10 ms.
//! let herd = [ms(0), ms(1), ms(2), ms(3)];
//! // The same events, spread.
//! let spread = [ms(0), ms(10), ms(20), ms(30)];
//!
//! assert_eq!(Spread::in_window(&herd, ms(0)..ms(40), 4)?.peak(), 4);
//! assert_eq!(Spread::in_window(&herd, ms(0)..ms(40), 4)?.peak_to_mean(), 4.0);
//! assert_eq!(Spread::in_window(&spread, ms(0)..ms(40), 4)?.peak_to_mean(), 1.0);
//!
//! let calls = [(ms(0), ms(15)), (ms(10), ms(20)), (ms(20), ms(30))];
//! assert_eq!(max_concurrency(&calls), 2); // an interval ends before one starting at the same instant
//! # Ok::<(), dephase::ConfigError>(())
//! ```

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// The most buckets a [`Spread`] will allocate.
pub const MAX_BUCKETS: usize = 10_000_000;

/// Counts of events per bucket, and the statistics derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    start: Duration,
    width: Duration,
    buckets: Vec<usize>,
    count: usize,
    outside: usize,
    std_dev: Duration,
}

impl Spread {
    /// Buckets of `width` from the first event to the last one.
    ///
    /// With no events there are no buckets.
    ///
    /// # Errors
    ///
    /// A zero width, or one so small that the span needs more than
    /// [`MAX_BUCKETS`] buckets (`measure.width`).
    pub fn by_width(times: &[Duration], width: Duration) -> Result<Spread, ConfigError> {
        if width.is_zero() {
            return Err(ConfigError::new(
                "measure.width",
                "must be greater than zero",
            ));
        }
        let Some((first, last)) = bounds(times) else {
            return Ok(Spread::empty(width, 0));
        };
        let n = (last - first).as_nanos() / width.as_nanos() + 1;
        if n > MAX_BUCKETS as u128 {
            return Err(ConfigError::new(
                "measure.width",
                format!(
                    "{width:?} splits {:?} into more than {MAX_BUCKETS} buckets",
                    last - first
                ),
            ));
        }
        let mut spread = Spread::empty(width, n as usize);
        spread.start = first;
        spread.count = times.len();
        spread.std_dev = std_dev(times);
        for t in times {
            spread.buckets[((*t - first).as_nanos() / width.as_nanos()) as usize] += 1;
        }
        Ok(spread)
    }

    /// `buckets` equal buckets from the first event to the last one (the
    /// last event falls in the last bucket). If every event happened at the
    /// same instant, they are all in the first bucket.
    ///
    /// # Errors
    ///
    /// Zero buckets, or more than [`MAX_BUCKETS`] (`measure.buckets`).
    pub fn by_count(times: &[Duration], buckets: usize) -> Result<Spread, ConfigError> {
        check_buckets(buckets)?;
        let Some((first, last)) = bounds(times) else {
            return Ok(Spread::empty(Duration::ZERO, buckets));
        };
        Spread::fill(times, first..last, buckets, true)
    }

    /// `buckets` equal buckets over a fixed window `[start, end)`. Events
    /// outside the window are not in any bucket; [`outside`](Self::outside)
    /// counts them.
    ///
    /// # Errors
    ///
    /// An empty or inverted window (`measure.window`), zero buckets or more
    /// than [`MAX_BUCKETS`] (`measure.buckets`).
    pub fn in_window(
        times: &[Duration],
        window: Range<Duration>,
        buckets: usize,
    ) -> Result<Spread, ConfigError> {
        check_buckets(buckets)?;
        if window.end <= window.start {
            return Err(ConfigError::new(
                "measure.window",
                format!(
                    "must end after it starts (got {:?}..{:?})",
                    window.start, window.end
                ),
            ));
        }
        Spread::fill(times, window, buckets, false)
    }

    fn fill(
        times: &[Duration],
        window: Range<Duration>,
        n: usize,
        include_end: bool,
    ) -> Result<Spread, ConfigError> {
        let span = (window.end - window.start).as_nanos();
        let width = Duration::from_nanos(u64::try_from(span / n as u128).unwrap_or(u64::MAX));
        let mut spread = Spread::empty(width, n);
        spread.start = window.start;
        let mut inside = Vec::with_capacity(times.len());
        for t in times {
            let index =
                if *t < window.start || *t > window.end || (*t == window.end && !include_end) {
                    None
                } else {
                    // A zero span (every event at one instant) puts them all in the first bucket.
                    let i = ((*t - window.start).as_nanos() * n as u128)
                        .checked_div(span)
                        .unwrap_or(0);
                    Some((i as usize).min(n - 1))
                };
            match index {
                Some(i) => {
                    spread.buckets[i] += 1;
                    inside.push(*t);
                }
                None => spread.outside += 1,
            }
        }
        spread.count = inside.len();
        spread.std_dev = std_dev(&inside);
        Ok(spread)
    }

    fn empty(width: Duration, buckets: usize) -> Spread {
        Spread {
            start: Duration::ZERO,
            width,
            buckets: vec![0; buckets],
            count: 0,
            outside: 0,
            std_dev: Duration::ZERO,
        }
    }

    /// Events counted in the buckets.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Events that fell outside the window (only [`in_window`](Self::in_window) has any).
    pub fn outside(&self) -> usize {
        self.outside
    }

    /// The standard deviation of the counted events' times.
    pub fn std_dev(&self) -> Duration {
        self.std_dev
    }

    /// Where the first bucket starts.
    pub fn start(&self) -> Duration {
        self.start
    }

    /// The width of each bucket.
    pub fn bucket_width(&self) -> Duration {
        self.width
    }

    /// Events per bucket, in time order.
    pub fn buckets(&self) -> &[usize] {
        &self.buckets
    }

    /// The most events in any one bucket (0 with no events).
    pub fn peak(&self) -> usize {
        self.buckets.iter().copied().max().unwrap_or(0)
    }

    /// The mean number of events per bucket (0 with no buckets).
    pub fn mean(&self) -> f64 {
        if self.buckets.is_empty() {
            0.0
        } else {
            self.count as f64 / self.buckets.len() as f64
        }
    }

    /// [`peak`](Self::peak) over [`mean`](Self::mean): 1.0 for a perfectly
    /// even spread, the number of buckets when everything is in one bucket,
    /// and 0 when there are no events.
    pub fn peak_to_mean(&self) -> f64 {
        let mean = self.mean();
        if mean == 0.0 {
            0.0
        } else {
            self.peak() as f64 / mean
        }
    }
}

/// The (population) standard deviation of `times`; zero for fewer than two.
pub fn std_dev(times: &[Duration]) -> Duration {
    if times.len() < 2 {
        return Duration::ZERO;
    }
    let n = times.len() as f64;
    let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / n;
    let variance = times
        .iter()
        .map(|t| (t.as_secs_f64() - mean).powi(2))
        .sum::<f64>()
        / n;
    Duration::try_from_secs_f64(variance.sqrt()).unwrap_or(Duration::MAX)
}

/// The largest number of intervals `(start, end)` that overlap at any
/// instant. Intervals are half-open: one that ends at `t` does not overlap
/// one that starts at `t`. An interval that ends before it starts is ignored.
pub fn max_concurrency(intervals: &[(Duration, Duration)]) -> usize {
    // (time, +1 for a start / -1 for an end); ends sort before starts at the same time.
    let mut edges: Vec<(Duration, i8)> = Vec::with_capacity(intervals.len() * 2);
    for &(start, end) in intervals {
        if end >= start {
            edges.push((start, 1));
            edges.push((end, -1));
        }
    }
    edges.sort_unstable();
    let (mut current, mut max) = (0i64, 0i64);
    for (_, delta) in edges {
        current += i64::from(delta);
        max = max.max(current);
    }
    max as usize
}

/// Collects event times (and intervals) from many tasks, relative to when
/// it was created, on tokio's clock (so paused-time tests work).
///
/// Clones share the same records.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use dephase::measure::Recorder;
///
/// let recorder = Recorder::new();
/// recorder.mark();
/// tokio::time::sleep(Duration::from_millis(5)).await;
/// recorder.mark();
/// assert_eq!(recorder.times(), vec![Duration::ZERO, Duration::from_millis(5)]);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Recorder {
    origin: Instant,
    records: Arc<Mutex<Records>>,
}

#[derive(Debug, Default)]
struct Records {
    times: Vec<Duration>,
    intervals: Vec<(Duration, Duration)>,
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new() -> Recorder {
        Recorder::starting_at(Instant::now())
    }

    /// A recorder whose time zero is `origin`.
    pub fn starting_at(origin: Instant) -> Recorder {
        Recorder {
            origin,
            records: Arc::default(),
        }
    }

    /// Records an event now.
    pub fn mark(&self) {
        self.mark_at(Instant::now());
    }

    /// Records an event at `at` (before the origin counts as the origin).
    pub fn mark_at(&self, at: Instant) {
        let t = at.saturating_duration_since(self.origin);
        self.lock().times.push(t);
    }

    /// Records an interval that started at `start` and ends now.
    pub fn mark_interval(&self, start: Instant) {
        let end = Instant::now().saturating_duration_since(self.origin);
        let start = start.saturating_duration_since(self.origin);
        self.lock().intervals.push((start, end));
    }

    /// The recorded event times, sorted.
    pub fn times(&self) -> Vec<Duration> {
        let mut times = self.lock().times.clone();
        times.sort_unstable();
        times
    }

    /// The recorded intervals, in the order they were recorded.
    pub fn intervals(&self) -> Vec<(Duration, Duration)> {
        self.lock().intervals.clone()
    }

    /// Time zero of this recorder.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // The records stay consistent even if a recording thread panicked.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

fn bounds(times: &[Duration]) -> Option<(Duration, Duration)> {
    let first = *times.iter().min()?;
    let last = *times.iter().max()?;
    Some((first, last))
}

fn check_buckets(buckets: usize) -> Result<(), ConfigError> {
    if buckets == 0 || buckets > MAX_BUCKETS {
        return Err(ConfigError::new(
            "measure.buckets",
            format!("must be between 1 and {MAX_BUCKETS} (got {buckets})"),
        ));
    }
    Ok(())
}

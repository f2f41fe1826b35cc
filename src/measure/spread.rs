//! [`Spread`] and the statistics of event times.

use std::ops::Range;

use std::time::Duration;

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

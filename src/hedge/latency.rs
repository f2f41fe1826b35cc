//! The rolling latency estimate a hedge's delay is taken from: a
//! log-bucketed histogram of the trailing window's latencies, its
//! percentile computed once per window.
//!
//! A latency is one relaxed add to a bucket (16 buckets per power of two
//! of microseconds: a bucket is at most 6.25% wide). When a window has
//! passed and holds at least the minimum number of samples, the first
//! caller to notice computes the percentile from it, stores it, and
//! empties the buckets; a window with fewer samples carries them over to
//! the next, so a quiet service keeps its last estimate instead of losing
//! it. The percentile is read with one load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::{Clock, nanos};

/// Sub-buckets per power of two (`2^SUB_BITS`).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are counted up to 2⁴⁰ µs (12.7 days); longer ones in the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;
/// No estimate yet.
const NONE: u64 = u64::MAX;

/// The bucket of a latency of `micros` microseconds.
fn bucket(micros: u64) -> usize {
    let micros = micros.min((1 << MAX_EXP) - 1);
    if micros < SUB {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros();
    let sub = (micros >> (exp - SUB_BITS)) & (SUB - 1);
    ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The upper end of bucket `index`, in microseconds: the estimate errs
/// late (a hedge a little later than the exact percentile), never early.
fn upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index + 1;
    }
    let exp = (index / SUB) as u32 + SUB_BITS - 1;
    let sub = index % SUB;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB + sub) << (exp - SUB_BITS)) + width
}

/// The shared latency histogram and its last percentile.
pub(crate) struct Latencies {
    buckets: Box<[AtomicU64]>,
    /// The last estimate in nanoseconds, or `NONE`.
    estimate: AtomicU64,
    /// When the current window ends, on `clock`.
    window_end: AtomicU64,
    clock: Clock,
    window: u64,
    percentile: f64,
    min_samples: u64,
}

impl Latencies {
    pub(crate) fn new(window: Duration, percentile: f64, min_samples: u64) -> Latencies {
        let window = nanos(window);
        Latencies {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            estimate: AtomicU64::new(NONE),
            window_end: AtomicU64::new(window),
            clock: Clock::exact(),
            window,
            percentile,
            min_samples,
        }
    }

    /// The estimate, if a window has produced one.
    #[inline]
    pub(crate) fn estimate(&self) -> Option<Duration> {
        match self.estimate.load(Ordering::Relaxed) {
            NONE => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Counts one latency, ending `now`.
    #[inline]
    pub(crate) fn record(&self, latency: Duration, now: Instant) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        let reading = self.clock.reading(now);
        let end = self.window_end.load(Ordering::Relaxed);
        if reading >= end {
            self.roll(end, reading);
        }
    }

    /// The window that ended at `end` is over: the first caller here
    /// computes its percentile (if it has enough samples).
    #[cold]
    fn roll(&self, end: u64, now: u64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total < self.min_samples {
            // Too few to say anything: keep them for the next window.
            let _ = self.window_end.compare_exchange(
                end,
                now.saturating_add(self.window),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if self
            .window_end
            .compare_exchange(
                end,
                now.saturating_add(self.window),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another caller rolled it
        }
        // The rank of the percentile: the smallest latency that at least
        // `percentile` of the samples do not exceed.
        let rank = ((self.percentile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let mut at = counts.len() - 1;
        for (index, &count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                at = index;
                break;
            }
        }
        // Empty what was counted (samples added meanwhile stay, for the
        // next window).
        for (bucket, &count) in self.buckets.iter().zip(&counts) {
            if count > 0 {
                bucket.fetch_sub(count, Ordering::Relaxed);
            }
        }
        self.estimate
            .store(upper(at).saturating_mul(1000), Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("estimate", &self.estimate())
            .field("percentile", &self.percentile)
            .field("window", &Duration::from_nanos(self.window))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_at_most_a_sixteenth_wide() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 20, (1 << 40) - 1, u64::MAX]) {
            let index = bucket(micros);
            assert!(index >= last, "{micros}");
            assert!(index < BUCKETS);
            last = index;
            let upper = upper(index);
            assert!(upper > micros.min((1 << MAX_EXP) - 1), "{micros} < {upper}");
            if (SUB..(1 << MAX_EXP)).contains(&micros) {
                assert!((upper - micros) * SUB <= micros + SUB, "{micros}: {upper}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_percentile_of_a_window_errs_late_by_at_most_a_bucket() {
        let latencies = Latencies::new(Duration::from_secs(1), 0.9, 10);
        let now = Instant::now();
        for ms in 1..=100u64 {
            latencies.record(Duration::from_millis(ms), now);
        }
        assert_eq!(latencies.estimate(), None, "the window is not over");
        tokio::time::advance(Duration::from_secs(1)).await;
        latencies.record(Duration::from_millis(1), Instant::now());
        // 90 of the 101 samples are ≤ 89 ms: rank ⌈0.9 × 101⌉ = 91 is 90 ms.
        let estimate = latencies.estimate().expect("a window of 101 samples");
        assert!(estimate >= Duration::from_millis(90), "{estimate:?}");
        assert!(
            estimate <= Duration::from_micros(90_000 * 17 / 16),
            "{estimate:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_window_keeps_its_samples_for_the_next() {
        let latencies = Latencies::new(Duration::from_secs(1), 0.5, 4);
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(1)).await;
            latencies.record(Duration::from_millis(10), Instant::now());
        }
        assert_eq!(latencies.estimate(), None, "three samples, four needed");
        tokio::time::advance(Duration::from_secs(1)).await;
        latencies.record(Duration::from_millis(10), Instant::now());
        let estimate = latencies
            .estimate()
            .expect("four samples over four windows");
        assert!(estimate >= Duration::from_millis(10) && estimate < Duration::from_millis(11));
    }
}

//! Where the crate's randomness comes from.
//!
//! Every consumer of randomness (a backoff sequence, a splay, a breaker's
//! open time, the cache's early-refresh draw, a lease's polling) asks an
//! [`RngSource`] for its own *stream*: a small, fast generator
//! (xoshiro256++) seeded from a base value and a counter that is bumped for
//! every stream. Two streams never share their numbers, which is the whole
//! point: retries that drew the *same* jitter would fire together. A
//! consumer that keeps no stream (the throttle) takes single draws from
//! the source ([`RngSource::draw`]).
//!
//! Unseeded sources use a per-process random base and a process-wide
//! counter; seeded sources use the seed and a counter shared by their clones,
//! so a seeded run that creates its streams in the same order is reproducible.
//!
//! A stream's *first* fraction can be its place in the source's golden-ratio
//! (Weyl) sequence instead of a random number: `frac(start + k / φ)` for the
//! `k`-th stream, from a random (or seeded) start. Independent draws spread
//! a herd only as evenly as chance allows (100 draws in 10 buckets put 15 or
//! more in some bucket about half the time); the Weyl sequence is as even as
//! a sequence can be, however many streams are taken. Across sources (across
//! processes) the starts are independent, so nothing is correlated there.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

/// 2⁶⁴ / φ: adding it steps the golden-ratio sequence in 64-bit fixed point.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// One stream of random numbers.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    rng: Xoshiro256PlusPlus,
    /// The stream's place in its source's golden-ratio sequence, used for
    /// the first [`fraction`](Stream::fraction) when present.
    first: Option<u64>,
}

impl Stream {
    /// A uniform fraction of 2⁶⁴.
    pub(crate) fn fraction(&mut self) -> u64 {
        self.first.take().unwrap_or_else(|| self.rng.next_u64())
    }

    /// A value in `lo..=hi` (by multiply-shift: bias below 2⁻⁶⁴ per value).
    pub(crate) fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        let span = u128::from(hi - lo) + 1;
        lo + ((u128::from(self.fraction()) * span) >> 64) as u64
    }

    /// Drops the golden-ratio first fraction: every draw is independent.
    pub(crate) fn independent(mut self) -> Stream {
        self.first = None;
        self
    }
}

/// Hands out independent [`Stream`]s; cheap to clone (clones share the counter).
#[derive(Clone, Debug)]
pub(crate) enum RngSource {
    /// Random per process; streams numbered by a process-wide counter.
    Entropy,
    /// Reproducible: streams numbered from zero by a counter shared by clones.
    Seeded { seed: u64, counter: Arc<AtomicU64> },
}

static ENTROPY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random value drawn once per process from the operating system.
pub(crate) fn process_entropy() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    *BASE.get_or_init(rand::random::<u64>)
}

/// SplitMix64's output function: a bijective scrambler of 64-bit values.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RngSource {
    /// A source seeded from the process's entropy.
    pub(crate) fn entropy() -> Self {
        RngSource::Entropy
    }

    /// A reproducible source.
    pub(crate) fn seeded(seed: u64) -> Self {
        RngSource::Seeded {
            seed,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `Some(seed)` for seeded sources, otherwise `None`.
    pub(crate) fn from_seed(seed: Option<u64>) -> Self {
        seed.map_or_else(Self::entropy, Self::seeded)
    }

    /// One uniform fraction of 2⁶⁴, drawn from the source itself (a
    /// counter step and a scrambler: one atomic add, for callers that keep
    /// no stream of their own).
    pub(crate) fn draw(&self) -> u64 {
        let (base, n) = match self {
            RngSource::Entropy => (
                process_entropy(),
                ENTROPY_COUNTER.fetch_add(1, Ordering::Relaxed),
            ),
            RngSource::Seeded { seed, counter } => (*seed, counter.fetch_add(1, Ordering::Relaxed)),
        };
        mix64(base ^ mix64(n.wrapping_mul(GOLDEN).wrapping_add(0x5851_f42d_4c95_7f2d)))
    }

    /// A new stream that shares no numbers with any other stream of this source.
    pub(crate) fn stream(&self) -> Stream {
        let (base, n) = match self {
            RngSource::Entropy => (
                process_entropy(),
                ENTROPY_COUNTER.fetch_add(1, Ordering::Relaxed),
            ),
            RngSource::Seeded { seed, counter } => (*seed, counter.fetch_add(1, Ordering::Relaxed)),
        };
        // Scramble (base, n) before seeding: seeds that differ by a constant
        // step would otherwise give xoshiro overlapping SplitMix expansions.
        let key = mix64(base ^ mix64(n.wrapping_mul(GOLDEN).wrapping_add(1)));
        Stream {
            rng: Xoshiro256PlusPlus::seed_from_u64(key),
            first: Some(mix64(base ^ 0x2545_f491_4f6c_dd1d).wrapping_add(n.wrapping_mul(GOLDEN))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_repeat_and_streams_differ() {
        let a = RngSource::seeded(7);
        let b = RngSource::seeded(7);
        let (mut a1, mut a2) = (a.stream(), a.stream());
        let (mut b1, mut b2) = (b.stream(), b.stream());
        for _ in 0..3 {
            let (x1, x2) = (a1.fraction(), a2.fraction());
            assert_eq!(x1, b1.fraction());
            assert_eq!(x2, b2.fraction());
            assert_ne!(x1, x2);
        }
    }

    #[test]
    fn clones_share_the_counter() {
        let a = RngSource::seeded(1);
        let b = a.clone();
        assert_ne!(a.stream().fraction(), b.stream().fraction());
    }

    #[test]
    fn entropy_streams_differ() {
        let s = RngSource::entropy();
        assert_ne!(s.stream().fraction(), s.stream().fraction());
    }

    #[test]
    fn first_fractions_are_evenly_spread_then_random() {
        let s = RngSource::seeded(3);
        let mut buckets = [0u32; 10];
        for _ in 0..1000 {
            buckets[(s.stream().fraction() / (u64::MAX / 10 + 1)) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (99..=101).contains(b)),
            "{buckets:?}"
        );
        // Independent streams spread only as chance does.
        let mut buckets = [0u32; 10];
        for _ in 0..1000 {
            buckets[(s.stream().independent().fraction() / (u64::MAX / 10 + 1)) as usize] += 1;
        }
        assert!(
            buckets.iter().any(|b| !(99..=101).contains(b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn in_range_covers_both_ends() {
        let mut s = RngSource::seeded(1).stream().independent();
        let (mut lo, mut hi) = (false, false);
        for _ in 0..10_000 {
            let v = s.in_range(3, 5);
            assert!((3..=5).contains(&v));
            lo |= v == 3;
            hi |= v == 5;
        }
        assert!(lo && hi);
        let _full_range_does_not_overflow = s.in_range(0, u64::MAX);
        assert_eq!(s.in_range(7, 7), 7);
    }
}

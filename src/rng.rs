//! Where the crate's randomness comes from.
//!
//! Every consumer of randomness (a backoff sequence, a splay, later the
//! breaker's open time and the cache's early-refresh draw) asks an
//! [`RngSource`] for its own *stream*: a small, fast generator
//! (xoshiro256++) seeded from a base value and a counter that is bumped for
//! every stream. Two streams never share their numbers, which is the whole
//! point — tower's `ExponentialBackoffMaker` clones one generator into every
//! backoff, so concurrent retries draw the *same* jitter and fire together.
//!
//! Unseeded sources use a per-process random base and a process-wide
//! counter; seeded sources use the seed and a counter shared by their clones,
//! so a seeded run that creates its streams in the same order is reproducible.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// One independent stream of random numbers.
pub(crate) type Stream = Xoshiro256PlusPlus;

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
        let key = mix64(base ^ mix64(n.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1)));
        Xoshiro256PlusPlus::seed_from_u64(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn seeded_sources_repeat_and_streams_differ() {
        let a = RngSource::seeded(7);
        let b = RngSource::seeded(7);
        let (mut a1, mut a2) = (a.stream(), a.stream());
        let (mut b1, mut b2) = (b.stream(), b.stream());
        let (x1, x2) = (a1.next_u64(), a2.next_u64());
        assert_eq!(x1, b1.next_u64());
        assert_eq!(x2, b2.next_u64());
        assert_ne!(x1, x2);
    }

    #[test]
    fn clones_share_the_counter() {
        let a = RngSource::seeded(1);
        let b = a.clone();
        assert_ne!(a.stream().next_u64(), b.stream().next_u64());
    }

    #[test]
    fn entropy_streams_differ() {
        let s = RngSource::entropy();
        assert_ne!(s.stream().next_u64(), s.stream().next_u64());
    }
}

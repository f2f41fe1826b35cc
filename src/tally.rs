//! The counters behind the layers' `stats()` snapshots. A counter bumped on
//! a hot path (a cache hit) is striped: each thread adds to a stripe of its
//! own cache line, so that counting does not make the cores fight over one
//! line; reading sums the stripes. The breaker's successes not yet placed
//! in its window are such a counter too ([`Pending`]), taken in batches.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A plain counter, for paths that already do more than an atomic add
/// (a retry, a rejection, a load).
#[derive(Debug, Default)]
pub(crate) struct Count(AtomicU64);

impl Count {
    #[inline]
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn add_n(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// Stripes per striped counter (and lanes per shared breaker).
pub(crate) const STRIPES: usize = 8;

/// One cache line per stripe (128 bytes: adjacent-line prefetching pairs
/// 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

/// A counter split in stripes, for the hot path.
#[derive(Debug, Default)]
pub(crate) struct Striped([Line; STRIPES]);

/// This thread's stripe, `0..STRIPES` (threads take them in turn).
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        // Const-initialised and without a destructor: no lazy
        // registration on the hot path, and always accessible.
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| match stripe.get() {
        usize::MAX => {
            let mine = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(mine);
            mine
        }
        mine => mine,
    })
}

impl Striped {
    #[inline]
    pub(crate) fn add(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, line| {
            sum.wrapping_add(line.0.load(Ordering::Relaxed))
        })
    }
}

/// Successes a breaker has not yet placed in its window: bumped on every
/// call of the closed path, taken in batches. A breaker that many threads
/// share keeps a stripe per thread (1 KiB), so that the closed path writes
/// no cache line another core writes; a keyed breaker (one per key, each
/// lightly used) keeps one counter.
#[derive(Debug)]
pub(crate) enum Pending {
    One(crate::sync::AtomicU64),
    Striped(Box<Striped>),
}

impl Pending {
    pub(crate) fn one() -> Pending {
        Pending::One(crate::sync::AtomicU64::new(0))
    }

    /// Striped, except in the loom models (whose atomics are loom's).
    pub(crate) fn striped() -> Pending {
        if cfg!(dephase_loom) {
            Pending::one()
        } else {
            Pending::Striped(Box::default())
        }
    }

    /// Adds one; returns the new count of the counter it went to.
    #[inline]
    pub(crate) fn add(&self) -> u64 {
        match self {
            Pending::One(count) => count.fetch_add(1, Ordering::AcqRel) + 1,
            Pending::Striped(stripes) => stripes.0[stripe()].0.fetch_add(1, Ordering::AcqRel) + 1,
        }
    }

    /// Takes the count of the counter this thread adds to.
    pub(crate) fn take_mine(&self) -> u64 {
        match self {
            Pending::One(count) => count.swap(0, Ordering::AcqRel),
            Pending::Striped(stripes) => stripes.0[stripe()].0.swap(0, Ordering::AcqRel),
        }
    }

    /// Takes every count.
    pub(crate) fn take_all(&self) -> u64 {
        match self {
            Pending::One(count) => count.swap(0, Ordering::AcqRel),
            Pending::Striped(stripes) => stripes.0.iter().fold(0u64, |sum, line| {
                sum.wrapping_add(line.0.swap(0, Ordering::AcqRel))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_sum_across_threads() {
        let count = std::sync::Arc::new(Striped::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let count = std::sync::Arc::clone(&count);
                std::thread::spawn(move || (0..1000).for_each(|_| count.add()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(count.get(), 12_000);
    }

    #[test]
    fn pending_counts_are_taken_whole() {
        for pending in [Pending::one(), Pending::striped()] {
            let pending = std::sync::Arc::new(pending);
            let threads: Vec<_> = (0..12)
                .map(|_| {
                    let pending = std::sync::Arc::clone(&pending);
                    std::thread::spawn(move || {
                        (0..1000).for_each(|_| {
                            pending.add();
                        })
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            assert_eq!(pending.take_all(), 12_000);
            assert_eq!(pending.take_all(), 0);
            assert_eq!((pending.add(), pending.add()), (1, 2));
            assert_eq!(pending.take_mine(), 2);
        }
    }
}

//! The counters behind the layers' `stats()` snapshots. The counters
//! bumped on a hot path (a cache hit, a budget's withdrawal) are [`Lanes`]:
//! each thread adds to a lane that it alone writes, on a cache line of its
//! own, with a plain load and store instead of an atomic read-modify-write
//! (which costs ~9 ns on the 2-core VM the benches run on, as much as the
//! rest of a cache hit's own work); reading sums the lanes. The breaker's
//! successes not yet placed in its window are taken in batches by other
//! threads, so they stay striped atomics ([`Pending`]).

use std::cell::Cell;
use std::sync::Mutex;
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

/// A counter split in stripes, each on its own cache line (the breaker's
/// [`Pending`] successes).
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

/// Lanes per [`Lanes`] counter: the threads alive at once that get a lane
/// of their own; the others add atomically to [`STRIPES`] shared lines.
pub(crate) const LANES: usize = 32;

/// Not yet asked for.
const UNSET: usize = usize::MAX;
/// Every lane was taken when this thread asked, or the thread is exiting.
const NONE: usize = usize::MAX - 1;

/// Lanes given back by threads that exited, and the next never-used one.
static FREE_LANES: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

thread_local! {
    // Const-initialised and without a destructor: reading it is one load,
    // on every add.
    static LANE: Cell<usize> = const { Cell::new(UNSET) };
    // Touched once, when the thread takes a lane: its destructor gives the
    // lane back when the thread exits.
    static GIVE_BACK: LaneGuard = const { LaneGuard };
}

/// Gives this thread's lane back when the thread exits.
struct LaneGuard;

impl Drop for LaneGuard {
    fn drop(&mut self) {
        // Adds made after this (by other destructors) go to the shared lines.
        let lane = LANE.try_with(|lane| lane.replace(NONE)).unwrap_or(NONE);
        if lane < LANES {
            // The mutex orders the exited thread's last writes to the lane
            // before the next owner's first read of it.
            let mut free = FREE_LANES.lock().unwrap_or_else(|e| e.into_inner());
            free.0.push(lane);
        }
    }
}

/// This thread's lane, which no other living thread writes: `None` when
/// more than [`LANES`] threads hold one, or once this thread is exiting.
#[inline(always)]
fn lane() -> Option<usize> {
    match LANE.try_with(Cell::get).unwrap_or(NONE) {
        UNSET => take_lane(),
        mine => (mine < LANES).then_some(mine),
    }
}

/// Takes a lane for this thread (once).
#[cold]
fn take_lane() -> Option<usize> {
    // Registers the destructor that gives the lane back; a thread already
    // exiting gets none (and adds to the shared lines).
    if GIVE_BACK.try_with(|_| ()).is_err() {
        return None;
    }
    let mine = {
        let mut free = FREE_LANES.lock().unwrap_or_else(|e| e.into_inner());
        match free.0.pop() {
            Some(lane) => lane,
            None if free.1 < LANES => {
                free.1 += 1;
                free.1 - 1
            }
            None => NONE,
        }
    };
    let _ = LANE.try_with(|lane| lane.set(mine));
    (mine < LANES).then_some(mine)
}

/// `K` counters whose every lane is on a cache line of its own.
#[derive(Debug)]
#[repr(align(128))]
struct LaneLine<const K: usize>([AtomicU64; K]);

/// `K` counters bumped on hot paths by many threads: each thread adds to
/// its own lane with a load and a store (it is the lane's only writer, so
/// no count is lost), on a cache line no other thread writes; a thread
/// beyond the first [`LANES`] alive adds atomically to one of
/// [`STRIPES`] shared lines (as the striped counters do: on 64 cores,
/// 32 threads with lanes, the other 32 four to a line).
/// Reading sums the lanes: it sees every add that happened before it (a
/// joined thread's, an awaited task's); a read that races an add may or
/// may not see it, as with any atomic counter.
/// `LANES + STRIPES` lines of 128 bytes: 5 KiB per counter set.
#[derive(Debug)]
pub(crate) struct Lanes<const K: usize> {
    lanes: Box<[LaneLine<K>]>,
    shared: Box<[LaneLine<K>]>,
}

impl<const K: usize> Default for Lanes<K> {
    fn default() -> Self {
        let line = || LaneLine(std::array::from_fn(|_| AtomicU64::new(0)));
        Lanes {
            lanes: (0..LANES).map(|_| line()).collect(),
            shared: (0..STRIPES).map(|_| line()).collect(),
        }
    }
}

impl<const K: usize> Lanes<K> {
    /// Adds one to counter `which`.
    #[inline(always)]
    pub(crate) fn add(&self, which: usize) {
        match lane() {
            Some(lane) => {
                let count = &self.lanes[lane].0[which];
                count.store(
                    count.load(Ordering::Relaxed).wrapping_add(1),
                    Ordering::Relaxed,
                );
            }
            None => {
                self.shared[stripe()].0[which].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counter `which`: the sum of its lanes.
    pub(crate) fn get(&self, which: usize) -> u64 {
        self.lanes
            .iter()
            .chain(self.shared.iter())
            .fold(0u64, |sum, line| {
                sum.wrapping_add(line.0[which].load(Ordering::Relaxed))
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
    fn lanes_lose_no_count_across_threads_and_lane_reuse() {
        // More threads than lanes, in waves: lanes are reused by later
        // threads (continuing their count) and the threads beyond LANES
        // alive at once add to the shared lines.
        let counts = std::sync::Arc::new(Lanes::<2>::default());
        for _wave in 0..3 {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(LANES + 8));
            let threads: Vec<_> = (0..LANES + 8)
                .map(|_| {
                    let (counts, barrier) = (
                        std::sync::Arc::clone(&counts),
                        std::sync::Arc::clone(&barrier),
                    );
                    std::thread::spawn(move || {
                        counts.add(1);
                        barrier.wait(); // every thread alive at once
                        (0..1000).for_each(|_| counts.add(0));
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
        }
        assert_eq!(counts.get(0), 3 * (LANES as u64 + 8) * 1000);
        assert_eq!(counts.get(1), 3 * (LANES as u64 + 8));
        assert!(
            counts
                .shared
                .iter()
                .any(|line| line.0[0].load(Ordering::Relaxed) > 0),
            "some threads had no lane"
        );
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

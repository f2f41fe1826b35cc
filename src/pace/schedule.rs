//! Who goes when: reservations on a quota, first come first served.
//!
//! This is GCRA's virtual scheduling (the algorithm governor implements),
//! with one change: a caller that cannot go now *reserves* the next free
//! slot instead of being told to try again later. Each caller gets its own
//! release time, in arrival order, spaced by the quota's interval; nobody
//! polls the limiter in a loop, so the waiters do not become a herd of their
//! own, and a caller knows at once whether it would wait past the maximum.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Schedule {
    start: Instant,
    /// The quota's replenish interval `T`, in nanoseconds.
    interval: u64,
    /// `T · (burst − 1)`: how far ahead of the schedule a burst may go.
    tolerance: u64,
    /// The theoretical arrival time of the next caller, in nanoseconds since `start`.
    tat: AtomicU64,
    /// Slots given back by callers that went away before their turn.
    returned: Mutex<BinaryHeap<Reverse<u64>>>,
    returned_len: AtomicUsize,
}

/// A reserved turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// When the caller may go, in nanoseconds since the schedule's start.
    release: u64,
    /// The schedule's `tat` right after this reservation (to undo it).
    tat_after: Option<u64>,
}

impl Schedule {
    pub(super) fn new(interval: Duration, burst: u32) -> Schedule {
        let interval = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Schedule {
            start: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            tat: AtomicU64::new(0),
            returned: Mutex::new(BinaryHeap::new()),
            returned_len: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.start)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// The instant `nanos` after the start.
    pub(super) fn instant(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }

    /// Reserves the next turn, unless it is more than `max_wait` away: then
    /// `Err(wait)` with the wait it would have been.
    pub(super) fn reserve(&self, max_wait: Duration) -> Result<(Slot, Duration), Duration> {
        let now = self.now();
        let max_wait = crate::clock::nanos(max_wait);
        if let Some(slot) = self.take_returned(now, max_wait) {
            return Ok((slot, Duration::from_nanos(slot.release - now)));
        }
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now);
            let release = base.saturating_sub(self.tolerance).max(now);
            let wait = release - now;
            if wait > max_wait {
                return Err(Duration::from_nanos(wait));
            }
            let next = base.saturating_add(self.interval);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let slot = Slot {
                        release,
                        tat_after: Some(next),
                    };
                    return Ok((slot, Duration::from_nanos(wait)));
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// A slot given back earlier that is still ahead (and not too far).
    /// Slots that have passed are dropped on the way: nobody came for them
    /// in time, and that capacity is gone, as it would be after an idle
    /// moment.
    fn take_returned(&self, now: u64, max_wait: u64) -> Option<Slot> {
        let release = self.earliest_returned(now)?;
        if release - now > max_wait {
            return None;
        }
        let mut returned = self.returned.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have taken it meanwhile: take whatever is first
        // now, if it is still within reach.
        match returned.peek().copied() {
            Some(Reverse(release)) if release >= now && release - now <= max_wait => {
                returned.pop();
                self.returned_len.store(returned.len(), Ordering::Release);
                Some(Slot {
                    release,
                    tat_after: None,
                })
            }
            _ => None,
        }
    }

    /// Gives back a slot whose caller went away before its turn.
    pub(super) fn give_back(&self, slot: Slot) {
        // The latest reservation can simply be undone.
        if let Some(tat_after) = slot.tat_after {
            if self
                .tat
                .compare_exchange(
                    tat_after,
                    tat_after - self.interval,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                return;
            }
        }
        let mut returned = self.returned.lock().unwrap_or_else(PoisonError::into_inner);
        returned.push(Reverse(slot.release));
        self.returned_len.store(returned.len(), Ordering::Release);
    }

    /// Slots given back and not yet taken (some may have passed).
    pub(super) fn returned(&self) -> usize {
        self.returned_len.load(Ordering::Acquire)
    }

    /// When a caller arriving now would go: the earliest turn given back
    /// that is still ahead, or else the next turn of the schedule.
    pub(super) fn next_release(&self) -> Duration {
        let now = self.now();
        let tat = self.tat.load(Ordering::Acquire).max(now);
        let scheduled = tat.saturating_sub(self.tolerance).max(now);
        let returned = self.earliest_returned(now).unwrap_or(u64::MAX);
        Duration::from_nanos(scheduled.min(returned) - now)
    }

    /// The earliest slot given back that has not passed (the passed ones
    /// are dropped on the way: nobody can take them any more).
    fn earliest_returned(&self, now: u64) -> Option<u64> {
        if self.returned_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut returned = self.returned.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Reverse(release)) = returned.peek().copied() {
            if release >= now {
                return Some(release);
            }
            returned.pop();
            self.returned_len.store(returned.len(), Ordering::Release);
        }
        None
    }
}

impl Slot {
    pub(super) fn release(&self) -> u64 {
        self.release
    }
}

//! A clock cheap enough to read on every request.
//!
//! Reading the monotonic clock costs 30–50 ns on a VM (a `clock_gettime`
//! through the vDSO) — more than the rest of a budget deposit or a cache
//! hit. What those paths need to know is coarse: which slot of a trailing
//! window (each at least a millisecond wide) a request falls in, or whether
//! a cached entry has expired. So they read a [`Clock`]: one atomic load of
//! a process-wide count of nanoseconds that a background thread
//! (`dephase-clock`, started the first time a `Clock` is made) advances
//! every millisecond. It runs behind real time by at most a tick, plus
//! however long the thread waits to be scheduled.
//!
//! Tests keep tokio's paused clock: a `Clock` made while tokio's clock is
//! paused (a `start_paused` runtime, or after `tokio::time::pause`) — or
//! has been moved by a pause — reads tokio's clock on every call, exactly
//! as before. So does every `Clock` where no thread can be started, and
//! every `Clock` of the loom models.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How often the background thread advances the coarse count.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Nanoseconds from [`base`] to the background thread's latest tick.
static COARSE: AtomicU64 = AtomicU64::new(0);

/// When the coarse count started, if its thread is running.
fn base() -> Option<std::time::Instant> {
    static BASE: OnceLock<Option<std::time::Instant>> = OnceLock::new();
    *BASE.get_or_init(|| {
        if cfg!(dephase_loom) {
            return None;
        }
        let base = std::time::Instant::now();
        std::thread::Builder::new()
            .name("dephase-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    COARSE.store(nanos(base.elapsed()), Ordering::Relaxed);
                }
            })
            .ok()
            .map(|_| base)
    })
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// Time since the clock was made, read coarsely (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    /// The coarse count when the clock was made; `None`: read tokio's clock.
    coarse_start: Option<u64>,
}

impl Clock {
    /// A clock starting now: coarse, unless tokio's clock is paused (or was).
    pub(crate) fn new() -> Clock {
        let start = Instant::now();
        let coarse_start = base().and_then(|_| (!tokio_paused(start)).then(coarse));
        Clock {
            start,
            coarse_start,
        }
    }

    /// A clock that always reads tokio's clock.
    pub(crate) fn exact() -> Clock {
        Clock {
            start: Instant::now(),
            coarse_start: None,
        }
    }

    /// Nanoseconds since the clock was made.
    #[inline]
    pub(crate) fn elapsed_nanos(&self) -> u64 {
        match self.coarse_start {
            Some(start) => coarse().saturating_sub(start),
            None => nanos(Instant::now().saturating_duration_since(self.start)),
        }
    }

    /// The instant on tokio's clock that this clock reads as now.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match self.coarse_start {
            Some(_) => self.start + Duration::from_nanos(self.elapsed_nanos()),
            None => Instant::now(),
        }
    }
}

#[inline]
fn coarse() -> u64 {
    COARSE.load(Ordering::Relaxed)
}

/// Whether tokio's clock, read as `read`, is paused or has been: it stands
/// still (a second read is the same to the nanosecond), or it is more
/// than a tick away from the system's monotonic clock. A false "yes" (a
/// platform whose clock does not move between two reads, a preemption
/// between them) only costs a clock read per call.
fn tokio_paused(read: Instant) -> bool {
    let again = Instant::now();
    let system = std::time::Instant::now();
    let read = read.into_std();
    again.into_std() == read
        || read > system
        || system.saturating_duration_since(read) > TICK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clock_made_under_paused_time_follows_it_exactly() {
        let clock = Clock::new();
        assert!(clock.coarse_start.is_none());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.elapsed_nanos(), 1_500_000_000);
        assert_eq!(clock.now(), clock.start + Duration::from_millis(1500));
    }

    #[test]
    fn a_clock_made_in_real_time_is_coarse_never_ahead_and_moves() {
        let clock = Clock::new();
        assert!(clock.coarse_start.is_some());
        let base = base().expect("the clock thread runs");
        // The thread's count never runs ahead of the system clock, and it
        // moves: wait (bounded, no fixed sleep) until 3 ticks have passed.
        let started = std::time::Instant::now();
        while clock.elapsed_nanos() < 3 * nanos(TICK) {
            assert!(base + Duration::from_nanos(coarse()) <= std::time::Instant::now());
            assert!(started.elapsed() < Duration::from_secs(10), "the coarse clock stands still");
            std::thread::yield_now();
        }
    }
}

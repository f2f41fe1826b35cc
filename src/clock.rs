//! A clock cheap enough to read on every request.
//!
//! Reading the monotonic clock costs 25–50 ns on a VM (`clock_gettime`
//! reads and scales the TSC through the vDSO) — more than the rest of a
//! budget deposit or a cache hit. What those paths need to know is coarse:
//! which slot of a trailing window a request falls in, or whether a cached
//! entry has expired. So on Linux they read the kernel's coarse monotonic
//! clock (`CLOCK_MONOTONIC_COARSE`: the time of the last scheduler tick,
//! read from the vDSO's data page without touching the TSC; 5–6 ns, and
//! nothing runs in the background to keep it). It moves in steps of the
//! kernel's tick (1–10 ms; `clock_getres` says which) and runs behind real
//! time by up to a step (a little more when a tick comes late).
//!
//! A [`Clock`] is made for a precision: it is coarse only when the step is
//! at most a tenth of it (a window's slot width, a cache's shortest life or
//! stale window), so the accuracy traded is bounded by a tenth of what it
//! measures; else, and on other platforms, it reads tokio's clock as
//! before.
//!
//! And it is coarse only when it is made inside a multi-thread tokio
//! runtime, whose clock cannot be paused (`tokio::time::pause` and
//! `start_paused` need a current-thread runtime). Made anywhere else — in a
//! current-thread runtime (every `#[tokio::test]` by default, which may
//! pause time before or after the layer is built), or outside any runtime
//! — it reads tokio's clock on every call, so tests with paused time stay
//! exact. So does every `Clock` of the loom models.

use std::time::Duration;

use tokio::time::Instant;

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years): the
/// one conversion the crate uses.
pub(crate) fn nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// Time since the clock was made, read coarsely where that is precise
/// enough (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    /// `None`: read tokio's clock.
    coarse: Option<Coarse>,
}

/// The coarse clock's reading when a [`Clock`] was made.
#[derive(Debug, Clone, Copy)]
struct Coarse {
    /// The exact monotonic clock at the start, in nanoseconds: a reading
    /// is the coarse clock less this, so never ahead of tokio's.
    start: u64,
}

impl Clock {
    /// A clock starting now, reading coarsely if the coarse clock's step
    /// is at most a tenth of `precision` and it is made in a multi-thread
    /// runtime (see the module docs).
    pub(crate) fn new(precision: Duration) -> Clock {
        let usable = coarse::step().is_some_and(|step| step.saturating_mul(10) <= precision)
            && unpausable_runtime();
        // The start, then the two clocks at once: the coarse reading is
        // never ahead of tokio's (see `now`).
        let start = Instant::now();
        let coarse = usable
            .then(|| {
                // The two clocks count from the same origin: readings are
                // the coarse clock less the exact one at the start.
                Some(Coarse {
                    start: coarse::exact()?,
                })
            })
            .flatten();
        Clock { start, coarse }
    }

    /// A clock that always reads tokio's clock.
    pub(crate) fn exact() -> Clock {
        Clock {
            start: Instant::now(),
            coarse: None,
        }
    }

    /// Nanoseconds since the clock was made: never more than tokio's clock
    /// says, less by the coarse clock's step or less (a little more when a
    /// tick comes late).
    #[inline]
    pub(crate) fn elapsed_nanos(&self) -> u64 {
        match self.coarse {
            Some(Coarse { start, .. }) => coarse::now().saturating_sub(start),
            None => nanos(Instant::now().saturating_duration_since(self.start)),
        }
    }

    /// The instant on tokio's clock that this clock reads as now (see
    /// [`elapsed_nanos`](Self::elapsed_nanos)).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn now(&self) -> Instant {
        match self.coarse {
            Some(_) => self.start + Duration::from_nanos(self.elapsed_nanos()),
            None => Instant::now(),
        }
    }

    /// `instant` as a reading of this clock (nanoseconds since its start).
    pub(crate) fn reading(&self, instant: Instant) -> u64 {
        nanos(instant.saturating_duration_since(self.start))
    }
}

/// Whether this is a multi-thread runtime, whose clock cannot be paused.
fn unpausable_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(dephase_loom)))]
mod coarse {
    use std::sync::OnceLock;
    use std::time::Duration;

    use rustix::time::{ClockId, Timespec, clock_getres, clock_gettime};

    fn nanos(t: Timespec) -> u64 {
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
    }

    /// The coarse clock's step.
    pub(super) fn step() -> Option<Duration> {
        static STEP: OnceLock<Duration> = OnceLock::new();
        let step = *STEP.get_or_init(|| {
            Duration::from_nanos(nanos(clock_getres(ClockId::MonotonicCoarse)).max(1))
        });
        Some(step)
    }

    /// The coarse clock, in nanoseconds.
    #[inline]
    pub(super) fn now() -> u64 {
        nanos(clock_gettime(ClockId::MonotonicCoarse))
    }

    /// The exact monotonic clock (the coarse one's origin), in nanoseconds.
    pub(super) fn exact() -> Option<u64> {
        Some(nanos(clock_gettime(ClockId::Monotonic)))
    }
}

#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(dephase_loom))))]
mod coarse {
    //! No coarse clock here: every `Clock` reads tokio's.
    use std::time::Duration;

    pub(super) fn step() -> Option<Duration> {
        None
    }

    pub(super) fn now() -> u64 {
        0
    }

    pub(super) fn exact() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clock_made_under_paused_time_follows_it_exactly() {
        let clock = Clock::new(Duration::from_secs(10));
        assert!(clock.coarse.is_none());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.elapsed_nanos(), 1_500_000_000);
        assert_eq!(clock.now(), clock.start + Duration::from_millis(1500));
    }

    /// A multi-thread runtime to make coarse clocks in.
    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
    }

    #[test]
    fn a_clock_is_coarse_only_in_a_multi_thread_runtime_where_its_step_is_a_tenth_of_the_precision()
    {
        let Some(step) = coarse::step() else {
            return; // no coarse clock on this platform: every clock is exact
        };
        assert!(Clock::new(step * 10).coarse.is_none(), "outside a runtime");
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = current.enter();
        assert!(
            Clock::new(step * 10).coarse.is_none(),
            "in a current-thread runtime"
        );
        let multi = multi_thread();
        let _entered = multi.enter();
        assert!(Clock::new(step * 10).coarse.is_some());
        assert!(
            Clock::new(step * 10 - Duration::from_nanos(1))
                .coarse
                .is_none()
        );
    }

    /// Paused time can begin after a layer is built (in the same
    /// current-thread runtime): its clock follows it.
    #[tokio::test]
    async fn a_clock_made_before_a_pause_follows_it() {
        let clock = Clock::new(Duration::from_secs(10));
        tokio::time::pause();
        let before = clock.elapsed_nanos();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.elapsed_nanos() - before, 5_000_000_000);
    }

    #[test]
    fn a_coarse_clock_is_never_ahead_and_behind_by_at_most_a_step() {
        let Some(step) = coarse::step() else {
            return;
        };
        let multi = multi_thread();
        let _entered = multi.enter();
        let clock = Clock::new(Duration::from_secs(10));
        assert!(clock.coarse.is_some());
        // Until the coarse clock has moved three steps (bounded: no fixed sleep).
        let started = std::time::Instant::now();
        while clock.elapsed_nanos() < 3 * nanos(step) {
            let before = Instant::now();
            let coarse = clock.now();
            assert!(coarse <= Instant::now(), "the coarse clock ran ahead");
            // A step (a tick may come late: two), and room for a
            // preemption while the clock was made.
            let behind = before.saturating_duration_since(coarse);
            assert!(
                behind <= step * 2 + Duration::from_millis(1),
                "{behind:?} behind"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the coarse clock stands still"
            );
            std::thread::yield_now();
        }
    }
}

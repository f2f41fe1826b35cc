//! A periodic ticker that fires at each period boundary plus an offset.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, Sleep};

use super::Offset;
use crate::error::ConfigError;

/// The longest period a [`Ticker`] accepts: ten years of 365 days.
pub const MAX_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// What a [`Ticker`] does when it is polled after one or more of its ticks
/// have already passed (the job ran long, the process was suspended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissedTicks {
    /// Fire once, for the most recent missed tick, then continue on
    /// schedule. [`Tick::missed`] says how many ticks were skipped. The
    /// offset is kept: the fleet stays spread.
    #[default]
    Skip,
    /// Fire once for every missed tick, back to back, until caught up.
    /// Use it when every period's run matters (a job that processes "the
    /// last period's data"). The catch-up runs are not spread.
    Burst,
}

// tokio's `MissedTickBehavior::Delay` is left out on purpose: it moves
// every later tick to "last tick + period", which throws the offset away.

/// One firing of a [`Ticker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    scheduled: Instant,
    missed: u64,
}

impl Tick {
    /// When this tick was due: a period boundary plus the offset.
    pub fn scheduled(&self) -> Instant {
        self.scheduled
    }

    /// How many earlier ticks were skipped to produce this one (always 0
    /// with [`MissedTicks::Burst`]).
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Fires at every period boundary plus an [`Offset`], on tokio's monotonic clock.
///
/// Tick `k` is due at `boundary₀ + k · period + offset`. Each due time is
/// computed from the previous one by exact integer addition, never from when
/// the last tick happened to be observed, so the ticker does not drift.
///
/// [`Ticker::new`] puts boundaries at multiples of the period since the Unix
/// epoch (so `period = 1 h` means on the hour, the same on every machine),
/// reading the wall clock once and then keeping time with the monotonic
/// clock. [`Ticker::starting_at`] puts them at an [`Instant`] of your choice
/// (and is what tests with paused time use).
///
/// ```
/// use std::time::Duration;
/// use dephase::offset::{Offset, Ticker};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dephase::ConfigError> {
/// let period = Duration::from_secs(60);
/// let offset = Offset::hash("nightly-report@host-3", period)?;
/// let start = Instant::now();
/// let mut ticker = Ticker::starting_at(start, period, offset)?;
/// for k in 0..3 {
///     let tick = ticker.tick().await;
///     assert_eq!(tick.scheduled(), start + period * k + offset.duration());
///     // run the job here
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Ticker {
    period: Duration,
    offset: Offset,
    next: Instant,
    missed_ticks: MissedTicks,
    // Boxed once, at construction, so that `Ticker` is `Unpin` like tokio's `Interval`.
    sleep: Pin<Box<Sleep>>,
}

impl Ticker {
    /// Boundaries at multiples of `period` since the Unix epoch (read once
    /// from the wall clock); the first tick is the first boundary-plus-offset
    /// that is not in the past.
    ///
    /// # Errors
    ///
    /// A zero period or one over [`MAX_PERIOD`] (`ticker.period`), an offset
    /// that is not shorter than the period (`ticker.offset`), or a wall clock
    /// set before 1970 (`ticker.wall_clock`).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, like
    /// `tokio::time::interval`.
    pub fn new(period: Duration, offset: Offset) -> Result<Ticker, ConfigError> {
        Ticker::from_wall_clock(SystemTime::now(), Instant::now(), period, offset)
    }

    /// Boundaries at `anchor + k · period`, `k ≥ 0`; the first tick is the
    /// first of those plus the offset that is not in the past.
    ///
    /// # Errors
    ///
    /// A zero period or one over [`MAX_PERIOD`] (`ticker.period`), or an
    /// offset that is not shorter than the period (`ticker.offset`).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, like
    /// `tokio::time::interval`.
    pub fn starting_at(
        anchor: Instant,
        period: Duration,
        offset: Offset,
    ) -> Result<Ticker, ConfigError> {
        check(period, offset)?;
        let first = anchor + offset.duration();
        let now = Instant::now();
        let next = if first >= now {
            first
        } else {
            let behind = (now - first).as_nanos();
            let periods = behind.div_ceil(period.as_nanos());
            first + mul(period, periods)
        };
        Ok(Ticker::at(next, period, offset))
    }

    /// [`Ticker::new`] with the clocks given, so the alignment can be tested.
    pub(crate) fn from_wall_clock(
        wall: SystemTime,
        now: Instant,
        period: Duration,
        offset: Offset,
    ) -> Result<Ticker, ConfigError> {
        check(period, offset)?;
        let since_epoch = wall.duration_since(UNIX_EPOCH).map_err(|_| {
            ConfigError::new("ticker.wall_clock", "the system clock is set before 1970")
        })?;
        // How far into the current period we are.
        let phase = mul(
            Duration::from_nanos(1),
            since_epoch.as_nanos() % period.as_nanos(),
        );
        let next = if offset.duration() >= phase {
            now + (offset.duration() - phase)
        } else {
            now + (period - phase) + offset.duration()
        };
        Ok(Ticker::at(next, period, offset))
    }

    fn at(next: Instant, period: Duration, offset: Offset) -> Ticker {
        Ticker {
            period,
            offset,
            next,
            missed_ticks: MissedTicks::default(),
            sleep: Box::pin(tokio::time::sleep_until(next)),
        }
    }

    /// Chooses what happens to ticks that were missed (default [`MissedTicks::Skip`]).
    pub fn missed_ticks(mut self, missed_ticks: MissedTicks) -> Self {
        self.missed_ticks = missed_ticks;
        self
    }

    /// Waits for the next tick.
    ///
    /// Cancel-safe: if the returned future is dropped before it completes,
    /// no tick is lost.
    pub async fn tick(&mut self) -> Tick {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick; the waker is woken when it is due.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Tick> {
        ready!(self.sleep.as_mut().poll(cx));
        let now = Instant::now();
        let (scheduled, missed) = match self.missed_ticks {
            MissedTicks::Burst => (self.next, 0),
            MissedTicks::Skip => {
                let behind = now.saturating_duration_since(self.next).as_nanos();
                let missed = behind / self.period.as_nanos();
                (self.next + mul(self.period, missed), missed as u64)
            }
        };
        self.next = scheduled + self.period;
        self.sleep.as_mut().reset(self.next);
        self.offset.record();
        if missed > 0 {
            tracing::debug!(target: "dephase::offset", missed, "ticks skipped");
        }
        Poll::Ready(Tick { scheduled, missed })
    }

    /// When the next tick is due.
    pub fn next_tick(&self) -> Instant {
        self.next
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The offset added to every boundary.
    pub fn offset(&self) -> Offset {
        self.offset
    }
}

fn check(period: Duration, offset: Offset) -> Result<(), ConfigError> {
    if period.is_zero() || period > MAX_PERIOD {
        return Err(ConfigError::new(
            "ticker.period",
            format!("must be greater than zero and at most {MAX_PERIOD:?} (got {period:?})"),
        ));
    }
    if offset.duration() >= period {
        return Err(ConfigError::new(
            "ticker.offset",
            format!(
                "must be shorter than the period (offset {:?}, period {period:?})",
                offset.duration()
            ),
        ));
    }
    Ok(())
}

/// `period · k`, for `period ≤ MAX_PERIOD` and any `k` that keeps it in range.
fn mul(period: Duration, k: u128) -> Duration {
    let nanos = period.as_nanos().saturating_mul(k);
    Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_clock_alignment() {
        let period = Duration::from_secs(60);
        let offset = Offset::index(1, 4, period).unwrap(); // 15 s
        let now = Instant::now();
        // 10 s into a minute: the tick at :15 of this minute is next.
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 10);
        let t = Ticker::from_wall_clock(wall, now, period, offset).unwrap();
        assert_eq!(t.next_tick(), now + Duration::from_secs(5));
        // 20 s into a minute: the next minute's :15.
        let wall = wall + Duration::from_secs(10);
        let t = Ticker::from_wall_clock(wall, now, period, offset).unwrap();
        assert_eq!(t.next_tick(), now + Duration::from_secs(55));
        // Exactly on the tick: fire now.
        let wall = wall - Duration::from_secs(5);
        let t = Ticker::from_wall_clock(wall, now, period, offset).unwrap();
        assert_eq!(t.next_tick(), now);
    }

    #[test]
    fn clock_before_epoch_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let offset = Offset::index(0, 1, Duration::from_secs(1)).unwrap();
        let wall = UNIX_EPOCH - Duration::from_secs(1);
        let err = Ticker::from_wall_clock(wall, Instant::now(), Duration::from_secs(1), offset)
            .unwrap_err();
        assert_eq!(err.field(), "ticker.wall_clock");
    }
}

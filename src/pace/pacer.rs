//! The [`Pacer`]: a quota's schedule shared by every clone, and the turns
//! it hands out (reserved in [`schedule`](super::schedule)'s order, given
//! back when their caller goes away).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::Quota;
use super::error::Overloaded;
use super::schedule::{Schedule, Slot};
use crate::error::ConfigError;
use crate::later::Ticket;
use crate::rng::{RngSource, Stream};
use crate::tally::Count;

/// A pacing schedule shared by every clone (and every service built from
/// one [`PaceLayer`](super::PaceLayer)).
#[derive(Clone)]
pub struct Pacer {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    schedule: Schedule,
    quota: Quota,
    max_wait: Duration,
    jitter: Duration,
    pub(super) rng: RngSource,
    waited: Count,
    overloaded: Count,
}

/// What a [`Pacer`] has done since it was built (every clone counts into
/// the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PacerStats {
    /// Callers that waited for their turn (and then went).
    pub waited: u64,
    /// Callers turned away because their turn was more than the maximum
    /// wait away.
    pub overloaded: u64,
}

impl Pacer {
    /// A builder; [`rate`](PacerBuilder::rate) or
    /// [`quota`](PacerBuilder::quota) is required.
    pub fn builder() -> PacerBuilder {
        PacerBuilder::default()
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.shared.quota
    }

    /// The longest a caller is made to wait.
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// How long a caller arriving now would wait for its turn (before jitter).
    pub fn next_release(&self) -> Duration {
        self.shared.schedule.next_release()
    }

    /// How many callers waited, and how many were turned away, so far.
    /// Callers that went at once are not counted (that would cost the
    /// path that does not wait).
    pub fn stats(&self) -> PacerStats {
        PacerStats {
            waited: self.shared.waited.get(),
            overloaded: self.shared.overloaded.get(),
        }
    }

    /// Turns given back by callers that went away, not yet taken again.
    pub fn returned_turns(&self) -> usize {
        self.shared.schedule.returned()
    }

    /// Waits for a turn, outside any tower service: `Ok` with the wait it
    /// applied, or [`Overloaded`] at once if the turn is too far away.
    ///
    /// # Errors
    ///
    /// [`Overloaded`] when the turn is more than the maximum wait away.
    pub async fn wait(&self) -> Result<Duration, Overloaded> {
        let mut rng = self.shared.rng.stream();
        let turn = self.reserve(&mut rng)?;
        if let Some(at) = turn.at {
            tokio::time::sleep_until(at).await;
        }
        Ok(turn.spend())
    }

    /// Reserves a turn (with its jitter) for one caller.
    pub(super) fn reserve(&self, rng: &mut Stream) -> Result<Turn, Overloaded> {
        let shared = &self.shared;
        let max_wait = max_wait_now(shared.max_wait).inspect_err(|_| {
            shared.overloaded.add();
            crate::telemetry::count::pace_overloaded();
        })?;
        let (slot, wait) = shared.schedule.reserve(max_wait).map_err(|wait| {
            shared.overloaded.add();
            crate::telemetry::count::pace_overloaded();
            Overloaded::new(wait, max_wait)
        })?;
        let mut turn = Turn {
            shared: Arc::clone(shared),
            slot: Some(slot),
            at: None,
            wait,
        };
        if !wait.is_zero() {
            let room = max_wait.saturating_sub(wait);
            let jitter_nanos = crate::clock::nanos(shared.jitter.min(room));
            let jitter = Duration::from_nanos(rng.in_range(0, jitter_nanos));
            turn.wait += jitter;
            turn.at = Some(shared.schedule.instant(slot.release()) + jitter);
        }
        Ok(turn)
    }
}

/// The longest a caller may wait for its turn now: `max_wait`, or less
/// inside a [`Deadline`](crate::deadline::Deadline)'s scope — a turn after
/// the deadline would only be wasted, so a turn must come strictly before
/// it. [`Overloaded`] when the deadline has passed (no turn, not even a
/// free one).
pub(crate) fn max_wait_now(max_wait: Duration) -> Result<Duration, Overloaded> {
    match crate::deadline::Deadline::current() {
        Some(deadline) => {
            let left = deadline.remaining();
            if left.is_zero() {
                return Err(Overloaded::new(Duration::ZERO, Duration::ZERO));
            }
            Ok(max_wait.min(left - Duration::from_nanos(1)))
        }
        None => Ok(max_wait),
    }
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("quota", &self.shared.quota)
            .field("max_wait", &self.shared.max_wait)
            .field("jitter", &self.shared.jitter)
            .field("next_release", &self.next_release())
            .finish()
    }
}

/// A reserved turn; given back to the schedule if dropped before it is spent.
pub(super) struct Turn {
    shared: Arc<Shared>,
    slot: Option<Slot>,
    /// When to go, if not at once.
    pub(super) at: Option<tokio::time::Instant>,
    /// The wait this turn applies, jitter included.
    wait: Duration,
}

impl Ticket for Turn {
    type Spent = Duration;

    /// Takes the turn: records the wait it applied.
    fn spend(mut self) -> Duration {
        self.slot = None;
        let wait = self.wait;
        if !wait.is_zero() {
            self.shared.waited.add();
            crate::telemetry::count::pace_waited();
            let millis = crate::offset::record_on_span(wait, "pace");
            tracing::event!(
                target: "dephase::pace",
                tracing::Level::DEBUG,
                dephase.offset_ms = millis,
                dephase.offset.strategy = "pace",
                "paced: released after waiting its turn"
            );
        }
        wait
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.schedule.give_back(slot);
        }
    }
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pacer`]; [`build`](Self::build) checks every field.
#[derive(Debug, Clone, Default)]
pub struct PacerBuilder {
    rate: Option<(u32, Duration)>,
    quota: Option<Quota>,
    burst: Option<u32>,
    max_wait: Option<Duration>,
    jitter: Option<Duration>,
    seed: Option<u64>,
}

impl PacerBuilder {
    /// `n` callers per `period`, one every `period / n`.
    pub fn rate(mut self, n: u32, period: Duration) -> Self {
        self.rate = Some((n, period));
        self.quota = None;
        self
    }

    /// A governor quota (its burst is kept unless [`burst`](Self::burst) is set).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self.rate = None;
        self
    }

    /// How many callers may go at once before the pacing starts (default 1:
    /// none — a burst is exactly what pacing spreads).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Callers whose turn is further away than this are turned away at once
    /// (default 30 s; zero means "only if it can go now").
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most random extra wait added to a caller that has to wait
    /// (default: one quota interval; zero for none).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Makes the jitter reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// No rate or quota, a zero rate (`pace.rate`), a zero period
    /// (`pace.period`), or a zero burst (`pace.burst`).
    pub fn build(self) -> Result<Pacer, ConfigError> {
        let quota = match (self.quota, self.rate) {
            (Some(quota), _) => quota,
            (None, Some((n, period))) => {
                let n = NonZeroU32::new(n)
                    .ok_or_else(|| ConfigError::new("pace.rate", "must be at least 1"))?;
                if period.is_zero() {
                    return Err(ConfigError::new("pace.period", "must be greater than zero"));
                }
                Quota::with_period(period / n.get()).ok_or_else(|| {
                    ConfigError::new("pace.period", format!("{period:?} / {n} is zero"))
                })?
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "pace.rate",
                    "a rate or a quota is required",
                ));
            }
        };
        let quota = match (self.burst, self.quota.is_some()) {
            (Some(b), _) => quota.allow_burst(
                NonZeroU32::new(b)
                    .ok_or_else(|| ConfigError::new("pace.burst", "must be at least 1"))?,
            ),
            (None, true) => quota,
            (None, false) => quota.allow_burst(NonZeroU32::MIN),
        };
        let interval = quota.replenish_interval();
        Ok(Pacer {
            shared: Arc::new(Shared {
                schedule: Schedule::new(interval, quota.burst_size().get()),
                quota,
                max_wait: self.max_wait.unwrap_or(Duration::from_secs(30)),
                jitter: self.jitter.unwrap_or(interval),
                rng: RngSource::from_seed(self.seed),
                waited: Count::default(),
                overloaded: Count::default(),
            }),
        })
    }
}

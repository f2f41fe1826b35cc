//! What to inject: a [`Plan`] of latency, errors and outages, and the
//! decision for one call — a pure function of the plan, the time since
//! the [`Faults`](super::Faults) handle started and two random draws.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use crate::clock::nanos;
use crate::error::{ConfigError, check_f64};

/// How long an injected delay lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the two.
    Uniform(Duration, Duration),
    /// Exponential with this mean (capped at 20 means): many short delays,
    /// a few long ones — a tail.
    Exponential(Duration),
}

impl Latency {
    /// The delay for a draw `u` (a uniform fraction of 2⁶⁴).
    fn delay(self, u: u64) -> Duration {
        match self {
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) => {
                let span = nanos(hi.saturating_sub(lo));
                lo + Duration::from_nanos(((u128::from(u) * u128::from(span)) >> 64) as u64)
            }
            Latency::Exponential(mean) => {
                // −ln(1 − u) with u in [0, 1): finite, capped at 20 means.
                let f = (u >> 11) as f64 / (1u64 << 53) as f64;
                let factor = (-(1.0 - f).ln()).min(20.0);
                Duration::try_from_secs_f64(mean.as_secs_f64() * factor).unwrap_or(Duration::MAX)
            }
        }
    }
}

/// What an outage does to every call inside its time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The call fails with an [`Injected`](super::error::Injected) error
    /// (or the layer's response).
    Fail,
    /// The call fails as a refused connection would: an
    /// [`Injected`](super::error::Injected) error whose source is an
    /// `io::Error` of kind `ConnectionRefused` (HTTP classifiers retry it).
    Refuse,
}

/// A plan of faults: built with [`Plan::builder`], swapped at run time with
/// [`Faults::set`](super::Faults::set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    latency: Option<(Latency, f64)>,
    errors: f64,
    outages: Vec<(Range<Duration>, Outage)>,
}

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Call the service (after `delay`, if any).
    Call { delay: Option<Duration> },
    /// Fail it (after `delay`, if any).
    Fail {
        delay: Option<Duration>,
        kind: super::error::Kind,
    },
}

impl Plan {
    /// A builder of an empty plan (no faults).
    pub fn builder() -> PlanBuilder {
        PlanBuilder {
            plan: Plan::default(),
        }
    }

    /// No faults.
    pub fn none() -> Plan {
        Plan::default()
    }

    /// Decides for a call made `since` after the handle started, with two
    /// uniform draws.
    pub(crate) fn decide(&self, since: Duration, draw: [u64; 2]) -> Decision {
        use super::error::Kind;
        let delay = self
            .latency
            .filter(|(_, share)| chance(draw[0], *share))
            .map(|(latency, _)| latency.delay(draw[0].rotate_left(32)));
        if let Some((_, outage)) = self
            .outages
            .iter()
            .find(|(range, _)| range.contains(&since))
        {
            let kind = match outage {
                Outage::Fail => Kind::Outage,
                Outage::Refuse => Kind::Refused,
            };
            return Decision::Fail { delay, kind };
        }
        if self.errors > 0.0 && chance(draw[1], self.errors) {
            return Decision::Fail {
                delay,
                kind: Kind::Error,
            };
        }
        Decision::Call { delay }
    }

    /// Whether the plan injects anything.
    pub fn is_empty(&self) -> bool {
        self.latency.is_none() && self.errors == 0.0 && self.outages.is_empty()
    }
}

/// `true` with probability `share`, from a uniform draw.
fn chance(u: u64, share: f64) -> bool {
    share >= 1.0 || (u as f64) < share * 18_446_744_073_709_551_616.0
}

/// Builds a [`Plan`].
pub struct PlanBuilder {
    plan: Plan,
}

impl PlanBuilder {
    /// Delays `share` of the calls (in `[0, 1]`) by `latency`.
    ///
    /// # Errors
    ///
    /// A share outside `[0, 1]` (`fault.latency`), a uniform range whose
    /// end is before its start (`fault.latency`).
    pub fn latency(mut self, latency: Latency, share: f64) -> Result<Self, ConfigError> {
        let share = check_f64("fault.latency", share, 0.0, 1.0)?;
        if let Latency::Uniform(lo, hi) = latency {
            if hi < lo {
                return Err(ConfigError::new(
                    "fault.latency",
                    format!("a uniform range must not end before it starts ({lo:?}..{hi:?})"),
                ));
            }
        }
        self.plan.latency = Some((latency, share));
        Ok(self)
    }

    /// Fails `share` of the calls (in `[0, 1]`) with an injected error.
    ///
    /// # Errors
    ///
    /// A share outside `[0, 1]` (`fault.errors`).
    pub fn errors(mut self, share: f64) -> Result<Self, ConfigError> {
        self.plan.errors = check_f64("fault.errors", share, 0.0, 1.0)?;
        Ok(self)
    }

    /// Every call made between `during.start` and `during.end` after the
    /// handle started fails as `outage` says ("fail everything between t₁
    /// and t₂").
    ///
    /// # Errors
    ///
    /// An empty or inverted range (`fault.outage`).
    pub fn outage(mut self, during: Range<Duration>, outage: Outage) -> Result<Self, ConfigError> {
        if during.end <= during.start {
            return Err(ConfigError::new(
                "fault.outage",
                format!("the range must not be empty ({during:?})"),
            ));
        }
        self.plan.outages.push((during, outage));
        Ok(self)
    }

    /// The plan.
    pub fn build(self) -> Plan {
        self.plan
    }
}

impl fmt::Debug for PlanBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanBuilder")
            .field("plan", &self.plan)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::error::Kind;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_outage_fails_every_call_inside_its_range_and_none_outside() {
        let plan = Plan::builder()
            .outage(100 * MS..200 * MS, Outage::Refuse)
            .unwrap()
            .build();
        let at = |ms| plan.decide(MS * ms, [0, 0]);
        assert_eq!(at(99), Decision::Call { delay: None });
        assert_eq!(
            at(100),
            Decision::Fail {
                delay: None,
                kind: Kind::Refused
            }
        );
        assert_eq!(
            at(199),
            Decision::Fail {
                delay: None,
                kind: Kind::Refused
            }
        );
        assert_eq!(at(200), Decision::Call { delay: None });
    }

    #[test]
    fn shares_and_latencies_follow_the_draws() {
        let plan = Plan::builder()
            .errors(0.25)
            .unwrap()
            .latency(Latency::Uniform(10 * MS, 20 * MS), 0.5)
            .unwrap()
            .build();
        let quarter = u64::MAX / 4;
        // Below the share: an error; above: a call.
        assert!(matches!(
            plan.decide(MS, [u64::MAX, quarter - (1 << 20)]),
            Decision::Fail { .. }
        ));
        assert!(matches!(
            plan.decide(MS, [u64::MAX, quarter + (1 << 20)]),
            Decision::Call { delay: None }
        ));
        // Latency for half of the draws, inside its range.
        match plan.decide(MS, [0, u64::MAX]) {
            Decision::Call { delay: Some(d) } => assert!((10 * MS..=20 * MS).contains(&d)),
            other => panic!("{other:?}"),
        }
        assert_eq!(Latency::Exponential(MS).delay(u64::MAX), MS * 20, "capped");
        assert_eq!(Latency::Fixed(MS).delay(7), MS);
    }
}

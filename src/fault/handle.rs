//! [`Faults`]: the switch a rehearsal turns — the plan in force, swapped
//! at run time, shared by every layer built with it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::time::Instant;

use super::plan::{Decision, Plan};
use crate::rng::RngSource;
use crate::tally::Count;

/// The faults in force, shared by every clone and every
/// [`FaultLayer`](super::FaultLayer) built with it; [`set`](Self::set)
/// swaps the plan while traffic runs. A plan's outages are timed from when
/// the handle was made.
///
/// ```
/// use std::time::Duration;
/// use dephase::fault::{Faults, Outage, Plan};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dephase::ConfigError> {
/// let faults = Faults::seeded(Plan::none(), 7);
/// // Later, from an admin endpoint or a test: everything fails for 2 s.
/// faults.set(
///     Plan::builder()
///         .outage(Duration::from_secs(1)..Duration::from_secs(3), Outage::Fail)?
///         .build(),
/// );
/// faults.clear(); // and back
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

struct Shared {
    plan: RwLock<Plan>,
    active: AtomicBool,
    start: Instant,
    rng: RngSource,
    calls: Count,
    delayed: Count,
    failed: Count,
}

/// What the faults did so far: [`Faults::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Calls decided while a plan was in force.
    pub calls: u64,
    /// Calls delayed.
    pub delayed: u64,
    /// Calls failed (shares and outages).
    pub failed: u64,
}

impl Faults {
    /// A handle with `plan` in force, its randomness from the process.
    pub fn new(plan: Plan) -> Faults {
        Faults::with_rng(plan, RngSource::entropy())
    }

    /// A handle with `plan`, its draws reproducible from `seed`.
    pub fn seeded(plan: Plan, seed: u64) -> Faults {
        Faults::with_rng(plan, RngSource::seeded(seed))
    }

    fn with_rng(plan: Plan, rng: RngSource) -> Faults {
        Faults {
            shared: Arc::new(Shared {
                active: AtomicBool::new(!plan.is_empty()),
                plan: RwLock::new(plan),
                start: Instant::now(),
                rng,
                calls: Count::default(),
                delayed: Count::default(),
                failed: Count::default(),
            }),
        }
    }

    /// Puts `plan` in force (its outages still timed from the handle's start).
    pub fn set(&self, plan: Plan) {
        let active = !plan.is_empty();
        *self
            .shared
            .plan
            .write()
            .unwrap_or_else(PoisonError::into_inner) = plan;
        self.shared.active.store(active, Ordering::Release);
    }

    /// No more faults.
    pub fn clear(&self) {
        self.set(Plan::none());
    }

    /// The plan in force.
    pub fn plan(&self) -> Plan {
        self.shared
            .plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the faults did so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            calls: self.shared.calls.get(),
            delayed: self.shared.delayed.get(),
            failed: self.shared.failed.get(),
        }
    }

    /// What to do with a call made now.
    #[inline]
    pub(super) fn decide(&self) -> Decision {
        let shared = &*self.shared;
        if !shared.active.load(Ordering::Acquire) {
            return Decision::Call { delay: None };
        }
        let since = shared.start.elapsed();
        let draw = [shared.rng.draw(), shared.rng.draw()];
        let decision = shared
            .plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(since, draw);
        shared.calls.add();
        match decision {
            Decision::Call { delay } => {
                if delay.is_some() {
                    shared.delayed.add();
                }
            }
            Decision::Fail { delay, .. } => {
                if delay.is_some() {
                    shared.delayed.add();
                }
                shared.failed.add();
            }
        }
        decision
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("plan", &self.plan())
            .field("stats", &self.stats())
            .finish()
    }
}

//! The [`Breaker`] handle: one breaker's shared state, for tower services
//! (through the guard engine) and for code that is not a service
//! ([`acquire`](Breaker::acquire), [`call`](Breaker::call)).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::builder::BreakerBuilder;
use super::error::Rejected;
use super::state::{self, BreakerStats, Core, Permit, State};
use crate::classify::{Classify, RetryErrors};
use crate::tally::{STRIPES, stripe};

/// A circuit breaker's shared state. Cheap to clone; clones are the same breaker.
#[derive(Clone)]
pub struct Breaker {
    pub(super) core: Arc<Core>,
    /// For a breaker many threads share: the handles its permits hold,
    /// one per thread stripe (see [`Lanes`]); `None` for a keyed breaker's.
    pub(super) lanes: Option<Arc<Lanes>>,
}

/// Handles on one [`Core`], one per thread stripe, each its own allocation
/// on its own cache line. A permit must keep the breaker alive while its
/// call runs, so it holds a counted reference; were that the core's own
/// `Arc`, every call on every thread would write the one cache line of its
/// count. A permit holds its thread's lane instead.
pub(super) struct Lanes([OnceLock<Arc<Lane>>; STRIPES]);

/// One stripe's handle on the core.
#[repr(align(128))]
pub(super) struct Lane(pub(super) Arc<Core>);

impl Lanes {
    pub(super) fn new() -> Lanes {
        Lanes(std::array::from_fn(|_| OnceLock::new()))
    }

    /// This thread's lane on `core`.
    #[inline]
    fn mine(&self, core: &Arc<Core>) -> Arc<Lane> {
        Arc::clone(self.0[stripe()].get_or_init(|| Arc::new(Lane(Arc::clone(core)))))
    }
}

impl Breaker {
    /// A builder with the defaults: trip at a 50% failure rate over 10 s
    /// (10 buckets) once 20 calls were seen; open for 5 s with equal jitter,
    /// doubling on each re-opening up to 60 s; 3 half-open probes.
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::default()
    }

    /// Where the breaker is now.
    pub fn state(&self) -> State {
        self.core.state()
    }

    /// What the breaker has done since it was built (read from counters
    /// that only the transitions and the rejections write: nothing on the
    /// closed path).
    pub fn stats(&self) -> BreakerStats {
        self.core.stats()
    }

    /// When an open (or half-open) breaker will next admit a call; `None`
    /// when it admits calls now or is isolated.
    pub fn retry_after(&self) -> Option<Duration> {
        self.core.retry_after()
    }

    /// Asks to make one call: a [`Permit`] whose outcome you then
    /// [`record`](Permit::record), or the rejection. For guarding code that is
    /// not a tower service.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, isolated, or half-open with
    /// all its probes out.
    #[inline]
    pub fn acquire(&self) -> Result<Permit, Rejected> {
        let ticket = self.core.admit()?;
        Ok(match &self.lanes {
            Some(lanes) => Permit::on_lane(lanes.mine(&self.core), ticket),
            None => Permit::new(&self.core, ticket),
        })
    }

    /// Runs `f` through the breaker, for synchronous code: `Ok` with `f`'s
    /// result (every `Err` counts as a failure), or the rejection without
    /// running `f`.
    ///
    /// ```
    /// use dephase::breaker::Breaker;
    ///
    /// let breaker = Breaker::builder().consecutive_failures(2).build()?;
    /// assert_eq!(breaker.call(|| "ok".parse::<i32>().map_err(|_| "nan")), Ok(Err("nan")));
    /// assert_eq!(breaker.call(|| "42".parse::<i32>().map_err(|_| "nan")), Ok(Ok(42)));
    /// # Ok::<(), dephase::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, isolated, or half-open with
    /// all its probes out.
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<Result<T, E>, Rejected> {
        self.call_with(&RetryErrors, f)
    }

    /// [`call`](Self::call) with a classifier deciding what counts as a failure.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, isolated, or half-open with
    /// all its probes out.
    pub fn call_with<T, E, C: Classify<T, E>>(
        &self,
        classify: &C,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, Rejected> {
        let mut guard = state::Guard {
            core: &self.core,
            ticket: Some(self.core.admit()?),
        };
        let result = f();
        let ticket = guard.ticket.take().expect("taken once");
        self.core
            .finish(&ticket, classify.classify(result.as_ref()));
        Ok(result)
    }

    /// Forces the breaker open: every call is rejected until [`reset`](Self::reset).
    pub fn isolate(&self) {
        self.core.force(State::Isolated);
    }

    /// Forces the breaker closed: every call goes through and nothing is
    /// counted until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.core.force(State::ForcedClosed);
    }

    /// Back to closed, with an empty window and the open time starting over.
    pub fn reset(&self) {
        self.core.force(State::Closed);
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

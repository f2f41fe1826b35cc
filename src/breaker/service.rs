//! A breaker as a guard: [`Breaker`] and [`PerKey`] admit calls, their
//! permits book outcomes, and their rejections are recorded.

use tracing::{Level, Span};

use super::error::Rejected;
use super::handle::Breaker;
use super::keyed::PerKey;
use super::state::Permit;
use crate::classify::{Outcome, RetryErrors};
use crate::guard::{Admit, Book, Guard};
use crate::telemetry::{self, BREAKER_RETRY_AFTER_MS, BREAKER_STATE};

/// A service guarded by a [`Breaker`]: the [`guard`](crate::guard)
/// engine's [`Guard`]. Its errors are [`BoxError`](crate::BoxError)s: the
/// inner service's, or an [`error::Rejected`](super::error::Rejected).
///
/// `CircuitBreaker::new(inner, breaker)`; `.classify(c)` decides what a
/// failure is.
pub type CircuitBreaker<S, C = RetryErrors> = Guard<S, Breaker, C>;

impl Book for Permit {
    fn book(self, outcome: Outcome) {
        self.record(outcome);
    }
}

impl<Req> Admit<Req> for Breaker {
    type Permit = Permit;
    type Rejection = Rejected;

    #[inline]
    fn admit(&mut self, _: &Req) -> Result<Permit, Rejected> {
        self.acquire()
    }

    fn rejected(rejection: &Rejected) {
        record_rejection(rejection);
    }
}

impl<K, F, Req> Admit<Req> for PerKey<K, F>
where
    K: std::hash::Hash + Eq + Clone,
    F: Fn(&Req) -> Option<K>,
{
    type Permit = Option<Permit>;
    type Rejection = Rejected;

    fn admit(&mut self, request: &Req) -> Result<Option<Permit>, Rejected> {
        match self.key(request) {
            Some(key) => self.breakers().get(&key).acquire().map(Some),
            None => Ok(None), // no key: not guarded
        }
    }

    fn rejected(rejection: &Rejected) {
        record_rejection(rejection);
    }
}

fn record_rejection(rejected: &Rejected) {
    let span = Span::current();
    span.record(BREAKER_STATE, rejected.state().as_str());
    telemetry::count::breaker_rejected(rejected.state().as_str());
    let after_ms = rejected.retry_after().map(telemetry::millis);
    if let Some(ms) = after_ms {
        span.record(BREAKER_RETRY_AFTER_MS, ms);
    }
    tracing::event!(
        target: "dephase::breaker",
        Level::DEBUG,
        dephase.breaker.state = rejected.state().as_str(),
        dephase.breaker.retry_after_ms = after_ms,
        "call rejected by the circuit breaker"
    );
}

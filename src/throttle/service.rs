//! The throttle as a guard: the [`Throttler`] admits calls and its permits
//! book accepts.

use tracing::{Level, Span};

use super::error::Throttled;
use super::state::{Permit, Throttler};
use crate::classify::{Outcome, RetryErrors};
use crate::guard::{Admit, Book, Guard};
use crate::telemetry::THROTTLE_PROBABILITY;

/// A service behind an adaptive throttle: the [`guard`](crate::guard)
/// engine's [`Guard`]. Errors are [`BoxError`](crate::BoxError)s: the
/// inner service's, or an [`error::Throttled`](super::error::Throttled).
///
/// `Throttle::new(inner, throttler)`; `.classify(c)` decides what the
/// backend accepted (anything but a failure).
pub type Throttle<S, C = RetryErrors> = Guard<S, Throttler, C>;

impl Book for Permit {
    fn book(self, outcome: Outcome) {
        self.record(outcome);
    }

    /// A call another dephase layer below turned away never reached the
    /// backend, which did not refuse it: it counts as accepted, so that
    /// the throttle does not shed for a refusal the backend never made.
    fn abandon(self) {
        self.record(Outcome::Success);
    }
}

impl<Req> Admit<Req> for Throttler {
    type Permit = Permit;
    type Rejection = Throttled;

    fn admit(&mut self, _: &Req) -> Result<Permit, Throttled> {
        self.acquire()
    }

    fn rejected(throttled: &Throttled) {
        Span::current().record(THROTTLE_PROBABILITY, throttled.probability());
        tracing::event!(
            target: "dephase::throttle",
            Level::DEBUG,
            dephase.throttle.probability = throttled.probability(),
            "call shed by the adaptive throttle"
        );
    }
}

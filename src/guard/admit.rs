//! What a guard decides: [`Admit`] before the call, [`Book`] after it.

use crate::classify::Outcome;

/// Decides, before a call, whether it may be made.
///
/// Implemented by [`Breaker`](crate::breaker::Breaker), the keyed breaker's
/// [`PerKey`](crate::breaker::PerKey) and
/// [`Throttler`](crate::throttle::Throttler).
pub trait Admit<Req> {
    /// The right to make one call; booked with the call's outcome.
    type Permit: Book;

    /// Why a call was turned away.
    type Rejection: std::error::Error + Send + Sync + 'static;

    /// Admits the call for `request`, or says why not.
    ///
    /// # Errors
    ///
    /// The rejection, when the call must not be made.
    fn admit(&mut self, request: &Req) -> Result<Self::Permit, Self::Rejection>;

    /// Records a rejection on the current span and in the metrics; called
    /// when the rejected future is first polled (the caller's span is
    /// entered then). Nothing by default.
    fn rejected(rejection: &Self::Rejection) {
        let _ = rejection;
    }
}

/// Books the outcome of an admitted call.
pub trait Book {
    /// The call ended with `outcome`.
    fn book(self, outcome: Outcome);
}

/// No permit: nothing to book (a request without a key in a keyed guard).
impl<P: Book> Book for Option<P> {
    fn book(self, outcome: Outcome) {
        if let Some(permit) = self {
            permit.book(outcome);
        }
    }
}

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
pub trait Book: Sized {
    /// The call ended with `outcome`.
    fn book(self, outcome: Outcome);

    /// The call was turned away by another dephase layer below this one (a
    /// breaker, a pacer, a throttle): the service behind it never saw the
    /// call, so it says nothing about that service's health. Drops the
    /// permit by default.
    fn abandon(self) {}
}

/// No permit: nothing to book (a request without a key in a keyed guard).
impl<P: Book> Book for Option<P> {
    fn book(self, outcome: Outcome) {
        if let Some(permit) = self {
            permit.book(outcome);
        }
    }

    fn abandon(self) {
        if let Some(permit) = self {
            permit.abandon();
        }
    }
}

/// An optional admitter: `None` admits every call (and books nothing), so
/// that one service type serves with or without a breaker or a throttle.
impl<Req, A: Admit<Req>> Admit<Req> for Option<A> {
    type Permit = Option<A::Permit>;
    type Rejection = A::Rejection;

    fn admit(&mut self, request: &Req) -> Result<Self::Permit, Self::Rejection> {
        self.as_mut().map(|admit| admit.admit(request)).transpose()
    }

    fn rejected(rejection: &Self::Rejection) {
        A::rejected(rejection);
    }
}

//! The [`Guard`] service: admit, call, book.

use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;

use super::admit::Admit;
use super::future::ResponseFuture;
use crate::BoxError;
use crate::classify::{Classify, RetryErrors};

/// A service whose calls are admitted by `A` and whose outcomes, decided by
/// the classifier `C`, are booked with it. Errors are [`BoxError`]s: the
/// inner service's, or `A`'s rejection.
#[derive(Clone)]
pub struct Guard<S, A, C = RetryErrors> {
    inner: S,
    admit: A,
    classify: C,
}

impl<S, A> Guard<S, A> {
    /// Guards `inner` with `admit`; every `Err` counts as a failure.
    pub fn new(inner: S, admit: A) -> Self {
        Guard {
            inner,
            admit,
            classify: RetryErrors,
        }
    }
}

impl<S, A, C> Guard<S, A, C> {
    /// Decides what counts as a failure: any outcome other than
    /// [`Outcome::Success`](crate::classify::Outcome::Success) — the same
    /// classifier a retry layer uses.
    pub fn classify<C2>(self, classify: C2) -> Guard<S, A, C2> {
        Guard {
            inner: self.inner,
            admit: self.admit,
            classify,
        }
    }

    /// What admits the calls (the breaker, the throttler...).
    pub fn admitter(&self) -> &A {
        &self.admit
    }

    inner_accessors!();
}

impl<S, A, C, Req> Service<Req> for Guard<S, A, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: Admit<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, A::Permit, A::Rejection, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.admit.admit(&request) {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(request), permit, self.classify.clone())
            }
            Err(rejection) => ResponseFuture::rejected(rejection, A::rejected),
        }
    }
}

impl<S: fmt::Debug, A: fmt::Debug, C> fmt::Debug for Guard<S, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("inner", &self.inner)
            .field("admit", &self.admit)
            .finish_non_exhaustive()
    }
}

//! The [`GuardLayer`].

use tower_layer::Layer;

use super::service::Guard;
use crate::classify::RetryErrors;

/// Wraps services in [`Guard`]s that admit calls through clones of one
/// admitter (clones of a breaker or a throttler share its state).
#[derive(Debug, Clone)]
pub struct GuardLayer<A, C = RetryErrors> {
    admit: A,
    classify: C,
}

impl<A> GuardLayer<A> {
    /// A layer admitting through `admit`; every `Err` counts as a failure.
    pub fn new(admit: A) -> Self {
        GuardLayer {
            admit,
            classify: RetryErrors,
        }
    }
}

impl<A, C> GuardLayer<A, C> {
    /// Decides what counts as a failure: any outcome other than
    /// [`Outcome::Success`](crate::classify::Outcome::Success) — the same
    /// classifier a retry layer uses.
    pub fn classify<C2>(self, classify: C2) -> GuardLayer<A, C2> {
        GuardLayer {
            admit: self.admit,
            classify,
        }
    }

    /// What admits the calls.
    pub fn admitter(&self) -> &A {
        &self.admit
    }
}

impl<S, A: Clone, C: Clone> Layer<S> for GuardLayer<A, C> {
    type Service = Guard<S, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard::new(inner, self.admit.clone()).classify(self.classify.clone())
    }
}

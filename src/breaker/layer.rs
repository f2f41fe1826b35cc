use tower_layer::Layer;

use super::{Breaker, CircuitBreaker};
use crate::classify::RetryErrors;

/// Wraps services in [`CircuitBreaker`]s that all share one [`Breaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = RetryErrors> {
    breaker: Breaker,
    classify: C,
}

impl CircuitBreakerLayer {
    /// A layer in front of `breaker`; every `Err` counts as a failure.
    pub fn new(breaker: Breaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classify: RetryErrors,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Decides what counts as a failure: any outcome other than
    /// [`Outcome::Success`](crate::classify::Outcome::Success) — the same
    /// classifier a retry layer uses.
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.breaker.clone(), self.classify.clone())
    }
}

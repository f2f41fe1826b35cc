//! The [`CircuitBreakerLayer`].

use super::handle::Breaker;
use crate::classify::RetryErrors;
use crate::guard::GuardLayer;

/// Wraps services in [`CircuitBreaker`](super::CircuitBreaker)s that all
/// share one [`Breaker`]: the [`guard`](crate::guard) engine's
/// [`GuardLayer`]. `CircuitBreakerLayer::new(breaker)`; `.classify(c)`
/// decides what a failure is.
pub type CircuitBreakerLayer<C = RetryErrors> = GuardLayer<Breaker, C>;

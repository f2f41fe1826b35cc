//! The [`ConcurrencyLimitLayer`].

use std::fmt;

use tower_layer::Layer;

use super::service::{ConcurrencyLimit, NoPriority};
use super::state::Limiter;
use crate::classify::RetryErrors;

/// Wraps services in [`ConcurrencyLimit`], all sharing one [`Limiter`].
#[derive(Clone)]
pub struct ConcurrencyLimitLayer<C = RetryErrors, P = NoPriority> {
    limiter: Limiter,
    classify: C,
    priority: P,
}

impl ConcurrencyLimitLayer {
    /// A layer that limits with `limiter`; every error is a drop.
    pub fn new(limiter: Limiter) -> Self {
        ConcurrencyLimitLayer {
            limiter,
            classify: RetryErrors,
            priority: NoPriority,
        }
    }
}

impl<C, P> ConcurrencyLimitLayer<C, P> {
    /// What a result tells the limit: a success is an answer, a retryable
    /// failure a *drop* (the overload signal: AIMD and Vegas shrink the
    /// limit on it), any other failure is not sampled.
    pub fn classify<C2>(self, classify: C2) -> ConcurrencyLimitLayer<C2, P> {
        ConcurrencyLimitLayer {
            limiter: self.limiter,
            classify,
            priority: self.priority,
        }
    }

    /// Which partition each request belongs to (see [`Priority`](super::Priority)).
    pub fn priority<P2>(self, priority: P2) -> ConcurrencyLimitLayer<C, P2> {
        ConcurrencyLimitLayer {
            limiter: self.limiter,
            classify: self.classify,
            priority,
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for ConcurrencyLimitLayer<C, P> {
    type Service = ConcurrencyLimit<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_parts(
            inner,
            self.limiter.clone(),
            self.classify.clone(),
            self.priority.clone(),
        )
    }
}

impl<C, P> fmt::Debug for ConcurrencyLimitLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

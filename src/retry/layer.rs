//! The [`RetryLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::{Retry, RetryPolicy};
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::RetryErrors;
use crate::retry::CloneRequests;

/// Wraps services in [`Retry`], all sharing one [`RetryPolicy`] (and so one budget).
pub struct RetryLayer<C = RetryErrors, R = CloneRequests, B = NoBudget> {
    policy: Arc<RetryPolicy<C, R, B>>,
}

impl<C, R, B> RetryLayer<C, R, B> {
    /// A layer that applies `policy`.
    pub fn new(policy: RetryPolicy<C, R, B>) -> Self {
        RetryLayer {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C, R, B> {
        &self.policy
    }
}

impl<S, C, R, B> Layer<S> for RetryLayer<C, R, B> {
    type Service = Retry<S, C, R, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.policy))
    }
}

impl<C, R, B> Clone for RetryLayer<C, R, B> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<C, R, B: RetryBudget> fmt::Debug for RetryLayer<C, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

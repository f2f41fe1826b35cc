use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::{Retry, RetryPolicy};
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::RetryErrors;
use crate::retry::CloneRequests;

/// Wraps services in [`Retry`], all sharing one [`RetryPolicy`] (and so one budget).
pub struct RetryLayer<C = RetryErrors, K = CloneRequests, B = NoBudget> {
    policy: Arc<RetryPolicy<C, K, B>>,
}

impl<C, K, B> RetryLayer<C, K, B> {
    /// A layer that applies `policy`.
    pub fn new(policy: RetryPolicy<C, K, B>) -> Self {
        RetryLayer {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C, K, B> {
        &self.policy
    }
}

impl<S, C, K, B> Layer<S> for RetryLayer<C, K, B> {
    type Service = Retry<S, C, K, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.policy))
    }
}

impl<C, K, B> Clone for RetryLayer<C, K, B> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<C, K, B: RetryBudget> fmt::Debug for RetryLayer<C, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

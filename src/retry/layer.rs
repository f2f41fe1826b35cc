use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::{Retry, RetryPolicy};
use crate::classify::RetryErrors;
use crate::retry::CloneRequests;

/// Wraps services in [`Retry`], all sharing one [`RetryPolicy`] (and so one budget).
pub struct RetryLayer<C = RetryErrors, K = CloneRequests> {
    policy: Arc<RetryPolicy<C, K>>,
}

impl<C, K> RetryLayer<C, K> {
    /// A layer that applies `policy`.
    pub fn new(policy: RetryPolicy<C, K>) -> Self {
        RetryLayer {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C, K> {
        &self.policy
    }
}

impl<S, C, K> Layer<S> for RetryLayer<C, K> {
    type Service = Retry<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.policy))
    }
}

impl<C, K> Clone for RetryLayer<C, K> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<C, K> fmt::Debug for RetryLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

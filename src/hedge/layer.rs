//! The [`HedgeLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::policy::{Always, HedgePolicy};
use super::service::Hedge;
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::RetryErrors;
use crate::retry::CloneRequests;

/// Wraps services in [`Hedge`], all sharing one [`HedgePolicy`] (one
/// latency estimate, one budget).
pub struct HedgeLayer<C = RetryErrors, R = CloneRequests, B = NoBudget, G = Always> {
    policy: Arc<HedgePolicy<C, R, B, G>>,
}

impl<C, R, B, G> HedgeLayer<C, R, B, G> {
    /// A layer that applies `policy`.
    pub fn new(policy: HedgePolicy<C, R, B, G>) -> Self {
        HedgeLayer {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &HedgePolicy<C, R, B, G> {
        &self.policy
    }
}

impl<S, C, R, B, G> Layer<S> for HedgeLayer<C, R, B, G> {
    type Service = Hedge<S, C, R, B, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::from_shared(inner, Arc::clone(&self.policy))
    }
}

impl<C, R, B, G> Clone for HedgeLayer<C, R, B, G> {
    fn clone(&self) -> Self {
        HedgeLayer {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<C, R, B: RetryBudget, G> fmt::Debug for HedgeLayer<C, R, B, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

//! The [`Hedge`] service: sends the original, and when a hedge is possible
//! keeps a copy and a service for it and arms the timer.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::HedgeLayer;
use super::policy::{Always, HedgeGate, HedgePolicy};
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::{Classify, RetryErrors};
use crate::retry::{CloneRequest, CloneRequests};

/// Sends copies of slow requests, within a budget, after a jittered delay
/// taken from the latency of recent requests.
///
/// See the [module documentation](super). Clones share the policy (the
/// latency estimate, the budget, the gate).
pub struct Hedge<S, C = RetryErrors, R = CloneRequests, B = NoBudget, G = Always> {
    inner: S,
    policy: Arc<HedgePolicy<C, R, B, G>>,
}

impl<S, C, R, B, G> Hedge<S, C, R, B, G> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: HedgePolicy<C, R, B, G>) -> Self {
        Hedge::from_shared(inner, Arc::new(policy))
    }

    pub(crate) fn from_shared(inner: S, policy: Arc<HedgePolicy<C, R, B, G>>) -> Self {
        Hedge { inner, policy }
    }

    /// A [`HedgeLayer`] that applies `policy`.
    pub fn layer(policy: HedgePolicy<C, R, B, G>) -> HedgeLayer<C, R, B, G> {
        HedgeLayer::new(policy)
    }

    /// The policy.
    pub fn policy(&self) -> &HedgePolicy<C, R, B, G> {
        &self.policy
    }

    inner_accessors!();
}

impl<S, C, R, B, G, Req> Service<Req> for Hedge<S, C, R, B, G>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    B: RetryBudget + Clone,
    G: HedgeGate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, C, R, B, G, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let policy = &self.policy;
        policy.on_request();
        let started = Instant::now();
        // A copy and a service only when a hedge could be sent: until the
        // first estimate, requests cost what they cost without the layer.
        let hedge = policy.base_delay().and_then(|base| {
            let copy = policy.clone.clone_request(&request)?;
            Some((base, self.inner.clone(), copy))
        });
        // The instance made ready is used by the original; a hedge readies
        // its own clone before using it.
        let future = self.inner.call(request);
        ResponseFuture::new(future, Arc::clone(policy), started, hedge)
    }
}

impl<S: Clone, C, R, B, G> Clone for Hedge<S, C, R, B, G> {
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, C, R, B: RetryBudget, G> fmt::Debug for Hedge<S, C, R, B, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

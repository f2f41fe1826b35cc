//! The [`Retry`] service: sends the first attempt, keeps a copy and a
//! service for re-sends, and hands both to the future.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::RetryLayer;
use super::policy::{CloneRequest, CloneRequests, RetryPolicy};
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::{Classify, RetryErrors};

/// Retries failed requests with a jittered backoff, a shared budget and a deadline.
///
/// See the [module documentation](super) for what it does and in which order.
/// Clones share the policy (and so the budget and the random source).
pub struct Retry<S, C = RetryErrors, R = CloneRequests, B = NoBudget> {
    inner: S,
    policy: Arc<RetryPolicy<C, R, B>>,
}

impl<S, C, R, B> Retry<S, C, R, B> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy<C, R, B>) -> Self {
        Retry::from_shared(inner, Arc::new(policy))
    }

    pub(crate) fn from_shared(inner: S, policy: Arc<RetryPolicy<C, R, B>>) -> Self {
        Retry { inner, policy }
    }

    /// A [`RetryLayer`] that applies `policy`.
    pub fn layer(policy: RetryPolicy<C, R, B>) -> RetryLayer<C, R, B> {
        RetryLayer::new(policy)
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C, R, B> {
        &self.policy
    }

    inner_accessors!();
}

impl<S, C, R, B, Req> Service<Req> for Retry<S, C, R, B>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    B: RetryBudget + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, C, R, B, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.policy.on_request();
        let copy = if self.policy.max_attempts > 1 {
            self.policy.clone.clone_request(&request)
        } else {
            None
        };
        let future = self.inner.call(request);
        // The instance that was made ready has been used; re-sends get a
        // clone of their own, which the future makes ready before using it.
        let service = copy.as_ref().map(|_| self.inner.clone());
        ResponseFuture::new(future, Arc::clone(&self.policy), service, copy)
    }
}

impl<S: Clone, C, R, B> Clone for Retry<S, C, R, B> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, C, R, B: RetryBudget> fmt::Debug for Retry<S, C, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

//! The `Retry` layer: classify → ask the budget → sleep a jittered backoff → re-send.
//!
//! # Why
//!
//! tower's `retry` gives you the mechanism and leaves the policy to you: the
//! backoff it ships draws the same jitter for every request
//! (`ExponentialBackoffMaker` clones its RNG), its `TpsBudget` rounds a 60%
//! budget up to 100% (tower#857), and wiring a budget, a backoff and a
//! classifier into a `Policy` is left to each user. Here one
//! [`RetryPolicy`] holds all of it:
//!
//! 1. **classify** the result with a [`Classify`]
//!    (the same classifier a breaker uses); only
//!    [`Outcome::Retry`](crate::classify::Outcome::Retry) is retried;
//! 2. stop after `max_attempts`, or if the request could not be copied;
//! 3. compute the delay from **this request's own** backoff sequence. A
//!    server hint (`Retry-After`) is a floor: the layer waits the hint *plus*
//!    the jittered backoff, so that callers told the same `Retry-After` at the
//!    same moment do not all come back at the same moment (a hint obeyed
//!    exactly re-creates the herd it was meant to calm). The wait never
//!    passes the cap — callers whose hint alone reaches the cap all wait
//!    exactly the cap, so set the cap above the hints you mean to honour;
//! 4. stop if the sleep would end past the **deadline**;
//! 5. ask the shared **budget**; if it says no, the caller gets the last
//!    result unchanged;
//! 6. sleep, wait for the service to be ready, re-send a copy.
//!
//! The span fields and events it records are listed in [`telemetry`](crate::telemetry).
//!
//! # Runtime
//!
//! The backoff sleeps on tokio's timer, so a retry needs a tokio runtime
//! with time enabled (as tower's `retry` with its tokio backoff does); a
//! request that succeeds at once never touches the timer.
//!
//! # Cancellation
//!
//! Dropping the [`ResponseFuture`] at any point is safe: an attempt in
//! flight is dropped with it, and a retry that was granted by the budget
//! but not sent yet (the future was dropped during the backoff) is refunded.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use dephase::backoff::ExponentialBackoff;
//! use dephase::budget::TokenBucket;
//! use dephase::retry::{RetryLayer, RetryPolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget = TokenBucket::aws_standard(); // share clones of it between clients
//! let policy = RetryPolicy::builder()
//!     .max_attempts(3)
//!     .backoff(ExponentialBackoff::builder().base(Duration::from_millis(20)).build()?)
//!     .budget(budget.clone())
//!     .build()?;
//!
//! // A flaky service: fails twice, then answers.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let flaky = tower::service_fn(move |name: &'static str| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move { if n < 2 { Err("busy") } else { Ok(format!("hello, {name}")) } }
//! });
//!
//! let mut service = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(flaky);
//! let reply = service.ready().await?.call("herd").await?;
//! assert_eq!(reply, "hello, herd");
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
//! # Ok(()) }
//! ```

pub mod future;
mod layer;
mod policy;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
pub use self::policy::{CloneRequest, CloneRequests, RetryPolicy, RetryPolicyBuilder};
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::{Classify, RetryErrors};

/// Retries failed requests with a jittered backoff, a shared budget and a deadline.
///
/// See the [module documentation](self) for what it does and in which order.
/// Clones share the policy (and so the budget and the random source).
pub struct Retry<S, C = RetryErrors, K = CloneRequests, B = NoBudget> {
    inner: S,
    policy: Arc<RetryPolicy<C, K, B>>,
}

impl<S, C, K, B> Retry<S, C, K, B> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy<C, K, B>) -> Self {
        Retry::from_shared(inner, Arc::new(policy))
    }

    pub(crate) fn from_shared(inner: S, policy: Arc<RetryPolicy<C, K, B>>) -> Self {
        Retry { inner, policy }
    }

    /// A [`RetryLayer`] that applies `policy`.
    pub fn layer(policy: RetryPolicy<C, K, B>) -> RetryLayer<C, K, B> {
        RetryLayer::new(policy)
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C, K, B> {
        &self.policy
    }

    inner_accessors!();
}

impl<S, C, K, B, Req> Service<Req> for Retry<S, C, K, B>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
    B: RetryBudget + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, C, K, B, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(budget) = &self.policy.budget {
            budget.deposit();
        }
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

impl<S: Clone, C, K, B> Clone for Retry<S, C, K, B> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, C, K, B: RetryBudget> fmt::Debug for Retry<S, C, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

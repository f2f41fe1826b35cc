//! The [`DephaseMiddleware`]: its settings, and the stack it runs per request.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tower_service::Service;

use super::next::NextService;
use crate::BoxError;
use crate::breaker::Breaker;
use crate::breaker::error::Rejected;
use crate::budget::{NoBudget, RetryBudget};
use crate::classify::Classify;
use crate::guard::Guard;
use crate::http::{HttpClassifier, IdempotentRequests};
use crate::pace::Pacer;
use crate::pace::error::Overloaded;
use crate::retry::{CloneRequest, Retry, RetryPolicy};
use crate::throttle::Throttler;
use crate::throttle::error::Throttled;

/// dephase for `reqwest-middleware` users (feature `reqwest-middleware`): a
/// [`DephaseMiddleware`] that runs the retry (with its budget), a breaker,
/// a throttle and a pacer for a `ClientWithMiddleware`, so that a client
/// keeps `client.get(url).send().await` and composes with other
/// middleware (`reqwest-tracing` and the like).
///
/// Each attempt goes down the rest of the middleware chain: a middleware
/// added after this one (tracing, say) sees every attempt, one added before
/// it sees the request once. The attempt number is put into the chain's
/// `Extensions` as an [`Attempt`](crate::retry::Attempt) before each attempt.
///
/// ```
/// use std::time::Duration;
/// use dephase::breaker::Breaker;
/// use dephase::budget::RatioBudget;
/// use dephase::http::{DephaseMiddleware, HttpClassifier, IdempotentRequests};
/// use dephase::retry::RetryPolicy;
///
/// # fn main() -> Result<(), dephase::ConfigError> {
/// let budget = RatioBudget::builder().build()?; // share clones between clients
/// let middleware = DephaseMiddleware::new()
///     .retry(
///         RetryPolicy::builder()
///             .max_attempts(3)
///             .budget(budget.clone())
///             .classify(HttpClassifier::new())
///             .clone_requests(IdempotentRequests::new())
///             .build()?,
///     )
///     .breaker(Breaker::builder().build()?);
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(middleware)
///     .build();
/// # let _ = client;
/// # Ok(()) }
/// ```
///
/// For each request it runs the retry (outermost, with its budget), then
/// a breaker, then a throttle, then a pacer's turn, each optional — the
/// same layers, in the same order, as a tower stack over
/// `reqwest::Client`. Its errors are `reqwest_middleware::Error`s: the
/// chain's own, or a dephase rejection as `Error::Middleware` (find it
/// with `anyhow_error.downcast_ref::<dephase::breaker::error::Rejected>()`,
/// or `Throttled`, or `Overloaded`).
pub struct DephaseMiddleware<C = HttpClassifier, R = IdempotentRequests, B = NoBudget> {
    policy: Arc<RetryPolicy<C, R, B>>,
    breaker: Option<Breaker>,
    throttler: Option<Throttler>,
    pacer: Option<Pacer>,
}

impl DephaseMiddleware {
    /// A middleware that does nothing yet: one attempt, no breaker, no
    /// throttle, no pacer.
    pub fn new() -> Self {
        let policy = RetryPolicy::builder()
            .max_attempts(1)
            .classify(HttpClassifier::new())
            .clone_requests(IdempotentRequests::new())
            .build()
            .expect("one attempt is a valid policy");
        DephaseMiddleware {
            policy: Arc::new(policy),
            breaker: None,
            throttler: None,
            pacer: None,
        }
    }
}

/// A clone shares the policy (and so its budget), the breaker, the
/// throttle and the pacer: one per client, or one for several.
impl<C, R, B> Clone for DephaseMiddleware<C, R, B> {
    fn clone(&self) -> Self {
        DephaseMiddleware {
            policy: Arc::clone(&self.policy),
            breaker: self.breaker.clone(),
            throttler: self.throttler.clone(),
            pacer: self.pacer.clone(),
        }
    }
}

impl Default for DephaseMiddleware {
    fn default() -> Self {
        DephaseMiddleware::new()
    }
}

impl<C, R, B> DephaseMiddleware<C, R, B> {
    /// Retries with `policy` (its classifier also decides what the breaker
    /// and the throttle count as failures).
    pub fn retry<C2, R2, B2>(
        self,
        policy: RetryPolicy<C2, R2, B2>,
    ) -> DephaseMiddleware<C2, R2, B2> {
        DephaseMiddleware {
            policy: Arc::new(policy),
            breaker: self.breaker,
            throttler: self.throttler,
            pacer: self.pacer,
        }
    }

    /// Guards every attempt with `breaker`.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Sheds attempts locally through `throttler`.
    pub fn throttle(mut self, throttler: Throttler) -> Self {
        self.throttler = Some(throttler);
        self
    }

    /// Sends every attempt at its turn of `pacer`.
    pub fn pace(mut self, pacer: Pacer) -> Self {
        self.pacer = Some(pacer);
        self
    }
}

impl<C, R, B: RetryBudget> fmt::Debug for DephaseMiddleware<C, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DephaseMiddleware")
            .field("policy", &self.policy)
            .field("breaker", &self.breaker)
            .field("throttler", &self.throttler)
            .field("pacer", &self.pacer)
            .finish()
    }
}

#[async_trait::async_trait]
impl<C, R, B> Middleware for DephaseMiddleware<C, R, B>
where
    C: Classify<reqwest::Response, BoxError>
        + Classify<reqwest::Response, reqwest_middleware::Error>
        + Clone
        + Send
        + Sync
        + 'static,
    R: CloneRequest<reqwest::Request> + Send + Sync + 'static,
    B: RetryBudget + Clone + Send + Sync + 'static,
{
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let sender = NextService {
            next,
            extensions: Arc::new(tokio::sync::Mutex::new(extensions)),
            pacer: self.pacer.clone(),
            attempts: Arc::new(AtomicU32::new(0)),
        };
        let classify = self.policy.classifier().clone();
        let throttled = Guard::new(sender, self.throttler.clone()).classify(classify.clone());
        let guarded = Guard::new(throttled, self.breaker.clone()).classify(classify);
        let mut retry = Retry::from_shared(guarded, Arc::clone(&self.policy));
        std::future::poll_fn(|cx| retry.poll_ready(cx))
            .await
            .map_err(into_middleware_error)?;
        retry.call(request).await.map_err(into_middleware_error)
    }
}

/// A dephase error as the chain's: the chain's own error as it was, a
/// rejection as `Error::Middleware` of its own type.
fn into_middleware_error(error: BoxError) -> reqwest_middleware::Error {
    let error = match error.downcast::<reqwest_middleware::Error>() {
        Ok(error) => return *error,
        Err(other) => other,
    };
    let error = match error.downcast::<Rejected>() {
        Ok(rejected) => return reqwest_middleware::Error::middleware(*rejected),
        Err(other) => other,
    };
    let error = match error.downcast::<Throttled>() {
        Ok(throttled) => return reqwest_middleware::Error::middleware(*throttled),
        Err(other) => other,
    };
    match error.downcast::<Overloaded>() {
        Ok(overloaded) => reqwest_middleware::Error::middleware(*overloaded),
        Err(other) => reqwest_middleware::Error::middleware(Boxed(other)),
    }
}

/// Any other error, with its source chain.
#[derive(Debug)]
struct Boxed(BoxError);

impl fmt::Display for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Boxed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

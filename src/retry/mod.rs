//! The `Retry` layer: classify → ask the budget → sleep a jittered backoff → re-send.
//!
//! # Why
//!
//! A retry layer needs a classifier, a backoff that each request draws on
//! its own (so that retries do not fire together), a budget shared by
//! every client of a dependency, and a deadline. Here one [`RetryPolicy`]
//! holds all of it, and decides:
//!
//! 1. **classify** the result with a [`Classify`](crate::classify::Classify)
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
//! with time enabled; a request that succeeds at once never touches the
//! timer.
//!
//! # Cancellation
//!
//! Dropping the [`ResponseFuture`](future::ResponseFuture) at any point is safe: an attempt in
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

mod attempt;
pub mod future;
mod layer;
mod policy;
mod service;

pub use self::attempt::Attempt;
pub use self::layer::RetryLayer;
pub use self::policy::{CloneRequest, CloneRequests, RetryPolicy, RetryPolicyBuilder};
pub use self::service::Retry;

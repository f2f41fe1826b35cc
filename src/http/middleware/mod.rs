//! dephase for `reqwest-middleware` users (feature `reqwest-middleware`): a
//! [`DephaseMiddleware`] that runs the retry (with its budget), a breaker,
//! a throttle and a pacer for a `ClientWithMiddleware`, so that a client
//! keeps `client.get(url).send().await` and composes with other
//! middleware (`reqwest-tracing` and the like).
//!
//! Each attempt goes down the rest of the middleware chain: a middleware
//! added after this one (tracing, say) sees every attempt, one added before
//! it sees the request once. The attempt number is put into the chain's
//! `Extensions` as an [`Attempt`](crate::retry::Attempt) before each attempt.
//!
//! ```
//! use std::time::Duration;
//! use dephase::breaker::Breaker;
//! use dephase::budget::RatioBudget;
//! use dephase::http::{DephaseMiddleware, HttpClassifier, IdempotentRequests};
//! use dephase::retry::RetryPolicy;
//!
//! # fn main() -> Result<(), dephase::ConfigError> {
//! let budget = RatioBudget::builder().build()?; // share clones between clients
//! let middleware = DephaseMiddleware::new()
//!     .retry(
//!         RetryPolicy::builder()
//!             .max_attempts(3)
//!             .budget(budget.clone())
//!             .classify(HttpClassifier::new())
//!             .clone_requests(IdempotentRequests::new())
//!             .build()?,
//!     )
//!     .breaker(Breaker::builder().build()?);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(middleware)
//!     .build();
//! # let _ = client;
//! # Ok(()) }
//! ```

mod handle;
mod next;

pub use self::handle::DephaseMiddleware;

//! axum responses for dephase's rejections (feature `axum`).
//!
//! A breaker, a throttle or a pacer on an axum `Router` turns some requests
//! away with a typed error, and a `Router` only takes services that never
//! fail. [`RejectionLayer`], outermost, turns every dephase rejection into
//! the response it stands for, and any other error into a `500`, so
//! `Router::layer(...)` works without `HandleErrorLayer`:
//!
//! | rejection | response |
//! |---|---|
//! | a breaker's [`Rejected`](crate::breaker::error::Rejected) | `503 Service Unavailable`, `Retry-After` rounded up (none while isolated) |
//! | a pacer's [`Overloaded`](crate::pace::error::Overloaded) | `429 Too Many Requests`, `Retry-After`: how much later the turn would have been within the maximum wait (the wait it was offered minus the maximum wait), rounded up |
//! | a throttle's [`Throttled`](crate::throttle::error::Throttled) | `503 Service Unavailable`, `Retry-After: 1` |
//! | a deadline's [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) | `504 Gateway Timeout` |
//! | a concurrency limit's [`LimitExceeded`](crate::limit::error::LimitExceeded) | `503 Service Unavailable`, `Retry-After`: its jittered `retry_after`, rounded up |
//! | a fleet gate's `GateError` (feature `redis`) | `503 Service Unavailable` |
//!
//! A rejection is found also when it comes wrapped in a coalesced or
//! cached call's shared error. Each of them is also `IntoResponse`, and
//! [`error_response`] answers any error the same way, for handlers that
//! call a guarded service (or a [`Breaker`](crate::breaker::Breaker), a
//! [`Pacer`](crate::pace::Pacer)) themselves.
//!
//! Put a pacer *above* a breaker: the breaker does not count the calls
//! another dephase layer below it turned away (the service never saw
//! them), but above it the pacer also keeps an overload off the breaker.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use dephase::axum::RejectionLayer;
//! use dephase::breaker::{Breaker, CircuitBreakerLayer};
//! use dephase::pace::{PaceLayer, Pacer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), dephase::ConfigError> {
//! let breaker = Breaker::builder().build()?;
//! let pacer = Pacer::builder().rate(100, Duration::from_secs(1)).max_wait(Duration::from_secs(1)).build()?;
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(RejectionLayer::new())
//!         .layer(PaceLayer::new(pacer))
//!         .layer(CircuitBreakerLayer::new(breaker)),
//! );
//! # let _ = app;
//! # Ok(()) }
//! ```

pub mod future;
mod layer;
mod response;
mod service;

pub use self::layer::RejectionLayer;
pub use self::response::error_response;
pub use self::service::HandleRejection;

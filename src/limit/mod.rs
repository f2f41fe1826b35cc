//! An adaptive concurrency limit: admission that follows what the backend
//! can take right now, measured by the round trips of its own calls.
//!
//! # Why
//!
//! A fixed limit is right for one capacity; when the backend slows down
//! (a deploy, a noisy neighbour, a failover to a smaller pool) the same
//! limit queues work it cannot finish, and latency climbs before any
//! request fails. Round-trip time moves *before* refusals do. Netflix's
//! concurrency-limits, Envoy's adaptive concurrency filter and
//! tower-resilience's limiter follow it; none of them spreads the callers
//! it turns away or makes them wait, so a limit that drops sends its
//! rejected callers back in lockstep. Here:
//!
//! 1. the limit follows an algorithm behind [`LimitAlgorithm`]:
//!    [`Aimd`] (loss-based), [`Vegas`] and [`Gradient2`] (delay-based),
//!    with Netflix's formulas and defaults (cited on each type), fed one
//!    [`Sample`] per sampling window — the window's average round trip, its
//!    most requests in flight and whether one was *dropped* (classified as
//!    a retryable failure);
//! 2. a caller over the limit is turned away at once with a
//!    [`LimitExceeded`](error::LimitExceeded) whose `retry_after` is
//!    jittered (one to two round trips, so the rejected do not come back
//!    together), or — with [`LimiterBuilder::max_wait`] — waits in a queue
//!    that gives each freed slot to *one* caller, up to the maximum wait;
//! 3. **priority shedding** (Netflix's partitioned limiter): a request's
//!    partition, from a [`Priority`] (a closure over the request: a
//!    header, an extension), reserves a share of the limit; once the
//!    limit is reached only partitions under their share get in, so the
//!    sheddable traffic goes first.
//!
//! What counts as a *drop* is the layer's classifier's business
//! ([`ConcurrencyLimitLayer::classify`]): by default every error is one;
//! a server's `503` *responses* are not errors, so pass a classifier (such
//! as `HttpClassifier`) to count them. Round trips under 100 µs are not
//! sampled: calls that fail at once (an outage injected by
//! [`fault`](crate::fault), a refused connection) move a delay-based
//! limit (Gradient2, Vegas) only through drops, which Gradient2 ignores.
//!
//! A priority closure needs the type of its argument written
//! (`|request: &http::Request<B>| ...`), as closures given to generic
//! methods do.
//!
//! A rejection is a local one, like a breaker's: a breaker above does not
//! count it as a failure of the service, and `HttpClassifier` does not
//! retry it.
//!
//! The span fields, events and metrics are in
//! [`telemetry`](crate::telemetry); [`Limiter::stats`] counts the rest.
//!
//! # Cancellation
//!
//! Dropping the [`ResponseFuture`](future::ResponseFuture) releases its
//! slot; a waiting caller leaves the queue, and a slot given to it in the
//! meantime goes to the next caller.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use dephase::limit::{ConcurrencyLimitLayer, Limiter, Vegas};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::BoxError> {
//! let limiter = Limiter::builder()
//!     .algorithm(Vegas::seeded(1).initial_limit(2))
//!     .partition("critical", 0.5)?
//!     .build()?;
//! let critical = limiter.partition_index("critical");
//! let mut service = ServiceBuilder::new()
//!     .layer(ConcurrencyLimitLayer::new(limiter.clone()).priority(
//!         move |request: &&str| if request.starts_with("pay") { critical } else { None },
//!     ))
//!     .service(tower::service_fn(|_: &str| async {
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!         Ok::<_, std::convert::Infallible>("done")
//!     }));
//!
//! // Two calls fill the limit; a third sheddable one is turned away, a
//! // critical one still has its partition's share.
//! let a = service.ready().await?.call("browse");
//! let b = service.ready().await?.call("browse");
//! let shed = service.ready().await?.call("browse").await;
//! assert!(shed.unwrap_err().is::<dephase::limit::error::LimitExceeded>());
//! let paid = service.ready().await?.call("pay").await?;
//! assert_eq!(paid, "done");
//! let _ = (a.await?, b.await?);
//! # Ok(()) }
//! ```

mod algorithm;
pub mod error;
pub mod future;
mod layer;
mod service;
mod state;

pub use self::algorithm::{Aimd, Fixed, Gradient2, LimitAlgorithm, Sample, Vegas};
pub use self::layer::ConcurrencyLimitLayer;
pub use self::service::{ConcurrencyLimit, NoPriority, Priority};
pub use self::state::{LimitStats, Limiter, LimiterBuilder};

//! The `Hedge` layer: a copy of a slow request after a jittered delay
//! taken from recent latencies, paid for by a retry budget.
//!
//! # Why
//!
//! A request stuck behind a slow replica, a GC pause or a lost packet
//! makes the tail of the latency distribution. Sending a second copy once
//! a request has taken longer than most ("The Tail at Scale", Dean and
//! Barroso, 2013: hedge after the 95th percentile) cuts that tail for a
//! few percent more load — while the backend is healthy. When it is
//! overloaded, *every* request is slow, every request is hedged, and the
//! load doubles exactly when the backend is weakest. tower's `Hedge`,
//! Polly, Envoy and resilience4j hedge without a bound; gRPC (gRFC A6)
//! bounds hedges with its retry throttling. Here:
//!
//! 1. the hedge delay is a **percentile of the trailing window's
//!    latencies** (each original's latency, from when it was sent; a
//!    request a hedge answered first counts the time the original had
//!    taken by then), clamped to a floor and a cap, **plus jitter** drawn
//!    per request (up to `jitter` × the delay), so a fleet's hedges do not
//!    fire at one instant when a dependency slows down for everybody. No
//!    request is hedged before the first window with enough latencies;
//! 2. each hedge **withdraws from a [`RetryBudget`](crate::budget::RetryBudget)**
//!    (the same budget types as the retry layer, shareable with it): no
//!    hedge when it says no, so hedges stay a bounded share of traffic —
//!    with a [`RatioBudget`](crate::budget::RatioBudget) of 5%, at most 5%
//!    of the requests of its window are hedged, plus its reserve
//!    (`min_per_sec` × its window: 10/s × 10 s = 100 hedges by default,
//!    which a quiet client may spend at once — size it to the traffic),
//!    however slow the backend gets;
//! 3. a **gate** ([`HedgeGate`]) is asked before each hedge: give it the
//!    [`Breaker`](crate::breaker::Breaker) or the
//!    [`Throttler`](crate::throttle::Throttler) of the layers below, and no
//!    hedge is sent while the breaker is half-open (its probes are
//!    counted) or open, or while the throttle sheds;
//! 4. **no hedge past the deadline** in scope
//!    ([`Deadline`](crate::deadline::Deadline)), nor with less than the
//!    minimum attempt time left;
//! 5. as in gRFC A6's hedging, the first copy whose result the classifier
//!    calls a success answers, and so does a fatal failure
//!    ([`Outcome::Failure`](crate::classify::Outcome::Failure)); the other
//!    copies are dropped. A retryable failure waits for the copies still in
//!    flight; when every copy sent has answered so, the last answer does —
//!    a failure is for the retry layer to handle, not a reason to hedge: an
//!    original that fails before its hedge is due is answered at once. Each
//!    copy's outcome is booked with the budget (A6: every failed attempt
//!    counts against the throttle). Only copies of requests the copier can copy
//!    are sent (with [`IdempotentRequests`](crate::http::IdempotentRequests),
//!    only idempotent requests are hedged).
//!
//! A hedged copy is marked as a re-send of its request
//! ([`CloneRequest::mark`](crate::retry::CloneRequest::mark): with
//! [`IdempotentRequests`](crate::http::IdempotentRequests), an
//! [`Attempt`](crate::retry::Attempt) in its extensions, numbered from 2
//! within the hedge), so a tracing layer below records its
//! `http.request.resend_count`. What the hedges did is counted in
//! [`HedgePolicy::stats`].
//!
//! A [`Retry`](crate::retry::Retry) above a `Hedge` sees one attempt,
//! however many copies the hedge sent; give both the same budget with
//! [`HedgePolicyBuilder::shared_budget`] so that retries and hedges come
//! out of one pool.
//!
//! The span fields and events it records are listed in
//! [`telemetry`](crate::telemetry).
//!
//! # Cancellation
//!
//! Dropping the [`ResponseFuture`](future::ResponseFuture) drops every copy
//! in flight. A dropped hyper client response future closes its connection
//! (hyper does not reuse a connection in the middle of a response), so the
//! server sees the losing copies cancelled; a hedge granted by the budget
//! but not sent yet is refunded.
//!
//! # Runtime
//!
//! The hedge timer is tokio's, so the layer needs a tokio runtime with
//! time enabled (paused time in tests).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use dephase::budget::RatioBudget;
//! use dephase::hedge::{HedgeLayer, HedgePolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = HedgePolicy::builder()
//!     .percentile(0.9)
//!     .window(Duration::from_secs(1))
//!     .min_samples(10)
//!     .budget(RatioBudget::builder().ratio(0.1).min_per_sec(1).build()?)
//!     .build()?;
//! let hedge = HedgeLayer::new(policy);
//!
//! // Every tenth call to this backend is stuck for 2 s; the rest take 10 ms.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let backend = tower::service_fn(move |_: ()| {
//!     let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let slow = n % 10 == 9;
//!         tokio::time::sleep(Duration::from_millis(if slow { 2000 } else { 10 })).await;
//!         Ok::<_, std::convert::Infallible>(if slow { "slow" } else { "fast" })
//!     }
//! });
//! let mut service = ServiceBuilder::new().layer(hedge.clone()).service(backend);
//!
//! // Warm up the estimate: a window with enough latencies must end — at
//! // the first latency recorded after it (the first call after the sleep).
//! for _ in 0..20 {
//!     service.ready().await?.call(()).await?;
//! }
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let start = tokio::time::Instant::now();
//! for _ in 0..10 {
//!     // The stuck call is hedged after about 10 ms; the hedge answers.
//!     assert_eq!(service.ready().await?.call(()).await?, "fast");
//! }
//! assert!(start.elapsed() < Duration::from_millis(500));
//! # Ok(()) }
//! ```

pub mod future;
mod latency;
mod layer;
mod policy;
mod service;

pub use self::layer::HedgeLayer;
pub use self::policy::{Always, HedgeGate, HedgePolicy, HedgePolicyBuilder, HedgeStats};
pub use self::service::Hedge;

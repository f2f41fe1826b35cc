//! Tower middleware that keeps callers, replicas and scheduled jobs from
//! acting in lockstep.
//!
//! # The idea
//!
//! Distributed systems hurt themselves when many parts do the same thing at
//! the same moment: every client retries 100 ms after an outage ends, every
//! replica's cache key expires at once, every host runs its cron job at
//! `00:00`. Each of those is a spike of load on something that is already
//! struggling, and the spike keeps its shape because everybody waits the
//! same time before trying again.
//!
//! *Dephasing* spreads those actions out — with randomness drawn
//! independently by each caller (jitter), with offsets derived from stable
//! keys (so a fleet spreads the same way every day), and with shared budgets
//! that cap how much extra work the whole client may create. Every layer
//! records the offset it applied on the current `tracing` span, so you can
//! see it in your traces (names in [`telemetry`]).
//!
//! These docs show what the features you built with turn on: `cargo doc`
//! without `--all-features` leaves out the `reqwest`, `reqwest-middleware`,
//! `axum`, `otel` and `redis` parts (docs.rs shows them all). The common
//! names are in one import, [`prelude`].
//!
//! # What is here
//!
//! | module | what it does |
//! |---|---|
//! | [`backoff`] | exponential backoff with [`Jitter`]`::{None, Full, Equal, Decorrelated}`; never above the cap; an independent random stream per retry sequence; seedable |
//! | [`offset`] | deterministic offsets (`SipHash-2-4(key) mod window`, `i · window / n`, per-process splay) and a staggered periodic [`Ticker`] |
//! | [`budget`] | retry budgets shared by every clone: a [`TokenBucket`] (AWS standard mode, gRPC A6) and a [`RatioBudget`] (Finagle, exact) |
//! | [`retry`] | the [`Retry`] layer: classify → budget → jittered backoff (a server's `Retry-After` is a floor, with the jitter on top) → re-send, with max attempts and a deadline |
//! | [`breaker`] | a circuit breaker: failure rate over time buckets or consecutive failures, a jittered open time that grows with each re-opening, exactly `K` half-open probes, operator controls, one breaker per key |
//! | [`hedge`] | hedged requests: copies after a jittered delay taken from a rolling latency percentile, drawn from a retry budget so hedges stay a bounded share of traffic |
//! | [`deadline`] | deadlines that travel: the remaining time sent in a header (`grpc-timeout`'s format), read by a server layer, honoured by retry, hedge and pace |
//! | [`fault`] | seeded fault injection to rehearse herds: latency, errors and outages on a schedule, switched at run time |
//! | [`limit`] | an adaptive concurrency limit (AIMD, Vegas, Gradient2, after Netflix's concurrency-limits) with priority shares; callers over it are turned away with a jittered `retry_after` or released one at a time |
//! | [`pace`] | admission that waits instead of rejecting: callers released first come first served at a governor quota's rate, with jitter, up to a maximum wait |
//! | [`throttle`] | adaptive client-side throttling (Google SRE): shed locally in proportion to what the backend refuses |
//! | [`coalesce`] | request coalescing (singleflight): one call per key in flight, its result to every concurrent caller; no spinning waiters, cancel- and panic-safe |
//! | [`guard`] | the engine of the breaker and the throttle — admit, call, book — for your own admission policies |
//! | [`cache`] | one cache layer over a [`MemoryStore`] (bounded moka) or a Redis store: XFetch early refresh in the background, TTL jitter, coalesced misses, stale-while-revalidate and stale-if-error |
//! | [`classify`] | the one [`Classify`] trait that tells every layer what a result means |
//! | [`measure`] | spread statistics (peak per bucket, peak-to-mean, standard deviation, max concurrency) to prove that dephasing works |
//! | `http` (feature `http`, default) | what an HTTP result means (`HttpClassifier`, `Retry-After`), which requests may be re-sent (`IdempotentRequests`), streaming bodies replayed by retries (`ReplayBody`), request keys and response fan-out for coalescing and caching (`RequestKey`, `FanoutLayer`) |
//! | `redis` (feature `redis`) | a cache store in Redis shared by every replica, with leases (`SET NX PX`) so that one replica in the fleet refills an expired key; falls back to in-process coalescing when Redis is slow or down; a fleet gate: at most `K` holders across every replica, with fencing tokens; a fleet pacer: one quota for every replica; a fleet retry budget, leased in batches |
//! | `axum` (feature `axum`) | responses for the layers' rejections, and a layer that turns them into responses on a `Router` |
//! | [`telemetry`] | the names of the span fields and events every layer records; with the `otel` feature, OpenTelemetry metrics |
//!
//! Features: `http` (default: the `http` module), `hyper-util` (default:
//! the HTTP classifier knows hyper-util's client error), `reqwest`
//! (classify and re-send `reqwest` requests), `reqwest-middleware` (the
//! layers as a `reqwest_middleware::Middleware`), `axum` (the `axum`
//! module), `otel` (count through the `opentelemetry` metrics API),
//! `redis` (the `redis` module).
//!
//! # Example
//!
//! Retry a flaky service with full jitter and a budget shared by two clients:
//!
//! ```
//! use std::time::Duration;
//! use dephase::{ExponentialBackoff, Jitter, RatioBudget, RetryLayer, RetryPolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One budget for the whole process: 20% of requests may be retried,
//! // plus 10 retries per second.
//! let budget = RatioBudget::builder().build()?;
//!
//! let retry = RetryLayer::new(
//!     RetryPolicy::builder()
//!         .max_attempts(4)
//!         .backoff(
//!             ExponentialBackoff::builder()
//!                 .base(Duration::from_millis(100))
//!                 .cap(Duration::from_secs(5))
//!                 .jitter(Jitter::Full)
//!                 .build()?,
//!         )
//!         .budget(budget.clone())
//!         .deadline(Duration::from_secs(10))
//!         .build()?,
//! );
//!
//! let mut users = ServiceBuilder::new()
//!     .layer(retry.clone())
//!     .service(tower::service_fn(|id: u32| async move { Ok::<_, &str>(id * 2) }));
//! let mut orders = ServiceBuilder::new()
//!     .layer(retry)
//!     .service(tower::service_fn(|id: u32| async move { Ok::<_, &str>(id + 1) }));
//!
//! assert_eq!(users.ready().await?.call(21).await?, 42);
//! assert_eq!(orders.ready().await?.call(41).await?, 42);
//! # Ok(()) }
//! ```
//!
//! `cargo run --release --example herd` starts a real local HTTP origin and
//! runs four herds against it — a retry storm, a cache stampede, a cron
//! herd and a warm-up — naive and with dephase, and prints what each layer
//! saved.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The error type of layers that add a failure of their own (a breaker's
/// rejection, a pace's overload): the inner service's error or the layer's,
/// boxed, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[macro_use]
mod macros;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod classify;
mod clock;
pub mod coalesce;
pub mod deadline;
mod error;
pub mod fault;
mod flight;
pub mod guard;
pub mod hedge;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod later;
pub mod limit;
pub mod measure;
pub mod offset;
pub mod pace;
pub mod prelude;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod retry;
mod rng;
mod sync;
mod tally;
pub mod telemetry;
pub mod throttle;
mod window;

pub use crate::backoff::{ExponentialBackoff, Jitter};
pub use crate::breaker::error::Rejected;
pub use crate::breaker::{Breaker, CircuitBreaker, CircuitBreakerLayer};
pub use crate::budget::{RatioBudget, RetryBudget, TokenBucket};
pub use crate::cache::{Cache, CacheLayer, MemoryStore, TtlJitter};
pub use crate::classify::{Classify, Outcome};
pub use crate::coalesce::{Coalesce, CoalesceLayer};
pub use crate::deadline::{Deadline, DeadlineExceeded};
pub use crate::error::ConfigError;
pub use crate::hedge::{Hedge, HedgeLayer, HedgePolicy};
pub use crate::offset::{Offset, Ticker};
pub use crate::pace::error::Overloaded;
pub use crate::pace::{Pace, PaceLayer, Pacer};
pub use crate::retry::{Retry, RetryLayer, RetryPolicy};
pub use crate::throttle::error::Throttled;
pub use crate::throttle::{Throttle, ThrottleLayer, Throttler};

/// The README's code blocks, compiled (and run) as doctests so they stay
/// true. They use the HTTP integrations and the Redis store, so they are
/// checked when every feature is on (`cargo test --all-features`).
#[cfg(all(
    doctest,
    feature = "http",
    feature = "reqwest-middleware",
    feature = "axum",
    feature = "redis"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

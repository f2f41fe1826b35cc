//! A circuit breaker whose open time is jittered and whose half-open state
//! admits a bounded number of probes.
//!
//! # Why
//!
//! A breaker stops calling a dependency that keeps failing, and tries it
//! again later. With a fixed open time, every replica whose breaker opened
//! at the same moment (they all saw the same outage) probes at the same
//! moment. With a half-open state that lets every waiting call through, a
//! recovering dependency gets the whole herd at once.
//!
//! Here:
//!
//! - **Trip** on a failure rate over a sliding window of time buckets, once a
//!   minimum number of calls has been seen (resilience4j and Polly
//!   semantics), or on `n` consecutive failures. Calls slower than a
//!   configured duration can count as failures. What a failure is comes from
//!   the same [`Classify`](crate::classify::Classify) a retry layer uses.
//! - **Open** for a jittered time drawn from an
//!   [`ExponentialBackoff`](crate::backoff::ExponentialBackoff) (equal jitter by
//!   default, so at least half the base), growing with every re-opening
//!   until the breaker closes again: a hundred breakers that opened together
//!   probe at a hundred different moments.
//! - **Half-open** admits exactly `K` probes, however many callers race, and
//!   rejects the rest at once. `K` successes close it; one failure re-opens
//!   it for longer.
//! - A **rejection** does not call the inner service, is not counted, and is
//!   an [`error::Rejected`] that says when to come back.
//! - **Operators** can [`isolate`](Breaker::isolate) (force open),
//!   [`force_closed`](Breaker::force_closed) and [`reset`](Breaker::reset).
//!   Every transition and rejection is recorded (see
//!   [`telemetry`](crate::telemetry)).
//!
//! One [`Breaker`] is shared by every clone (and by every service built from
//! one [`CircuitBreakerLayer`]). [`KeyedBreaker`] keeps one per key (per
//! host, say), bounded in number; [`KeyedBreaker::layer`] guards each
//! request with the breaker of its key. The services are the
//! [`guard`](crate::guard) engine's, with a [`Breaker`] (or a [`PerKey`])
//! admitting the calls. The closed path is one atomic load to
//! admit and, for a success, one atomic add to record: no lock, no
//! allocation, and no clock read. A [`Breaker`] counts successes per thread
//! (in one of eight stripes, each on a cache line of its own), so that
//! while no failure is in the window threads sharing a breaker write no
//! common cache line on a success; a [`KeyedBreaker`]'s breakers, each
//! lightly used, keep one counter. While failures are in the window, each
//! success is placed in it at once (the failure rate is checked at every
//! call, as resilience4j does): one add on the window's current bucket,
//! which the threads share.
//! Successes are placed in the window's time buckets sixteen at a time per
//! stripe (or all of them at the next failure), in the bucket of that
//! moment: at most fifteen successes per stripe — 120 in all — count from a
//! later bucket than the one they happened in, which matters only when
//! calls are sparser than that per bucket; the failure rate at a failure
//! always counts every success made before it.
//!
//! ```
//! use std::time::Duration;
//! use dephase::breaker::{Breaker, CircuitBreakerLayer, State};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let breaker = Breaker::builder()
//!     .consecutive_failures(3)
//!     .half_open_probes(1)
//!     .build()?;
//! let mut service = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(tower::service_fn(|_: ()| async { Err::<(), _>("down") }));
//!
//! for _ in 0..3 {
//!     let _ = service.ready().await.unwrap().call(()).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let rejected = service.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(rejected.to_string().contains("retry after"));
//! # Ok(()) }
//! ```

mod builder;
pub mod error;
mod handle;
mod keyed;
mod layer;
mod service;
mod state;

pub use self::builder::BreakerBuilder;
pub use self::handle::Breaker;
pub use self::keyed::{KeyedBreaker, PerKey};
pub use self::layer::CircuitBreakerLayer;
pub use self::service::CircuitBreaker;
pub use self::state::{BreakerEvent, BreakerStats, Permit, State};

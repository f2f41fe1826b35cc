//! Seeded fault injection, to rehearse a herd: latency, errors and
//! outages on a schedule, switched at run time.
//!
//! # Why
//!
//! Dephasing is proven by rehearsal: trigger the synchronized action — an
//! outage that ends for everybody at once, a dependency that slows down —
//! and compare the load with and without dephasing. A [`Fault`] layer
//! (on a client, or on a server's handlers) injects, from a [`Plan`]:
//!
//! - **latency**: a share of calls delayed by a fixed, uniform or
//!   exponential (long-tailed) [`Latency`];
//! - **errors**: a share of calls failed;
//! - **outages**: every call between t₁ and t₂ (from the [`Faults`]
//!   handle's start) failed — as an error, or as a refused connection
//!   ([`Outage::Refuse`], which HTTP classifiers retry like the real one).
//!
//! Draws come from a seeded source ([`Faults::seeded`]), so a rehearsal
//! replays; the handle is shared (`Clone`) and its plan swapped while
//! traffic runs ([`Faults::set`]). A failure is an [`error::Injected`]
//! error, or a response of the service's own type with
//! [`FaultLayer::respond_with`] (an HTTP server's `503`). Injected faults
//! are *not* local rejections: a breaker above counts them, as it would
//! the failures they stand for. An outage fails calls at once: a
//! delay-based concurrency limit (Gradient2, Vegas) sees no round trip
//! from it (see [`limit`](crate::limit)); inject latency to rehearse a
//! slow dependency. Peers: Polly's Simmy, Envoy's fault
//! filter, tower-resilience's chaos layer.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use dephase::fault::{FaultLayer, Faults, Latency, Outage, Plan};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::BoxError> {
//! let faults = Faults::seeded(
//!     Plan::builder()
//!         .latency(Latency::Uniform(Duration::from_millis(10), Duration::from_millis(50)), 0.2)?
//!         .outage(Duration::from_secs(1)..Duration::from_secs(2), Outage::Refuse)?
//!         .build(),
//!     7,
//! );
//! let service = FaultLayer::new(faults.clone())
//!     .layer(tower::service_fn(|x: u32| async move { Ok::<_, dephase::BoxError>(x) }));
//!
//! assert_eq!(service.clone().oneshot(1).await?, 1);
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let refused = service.clone().oneshot(2).await.unwrap_err();
//! assert!(refused.downcast_ref::<dephase::fault::error::Injected>().unwrap().is_refused());
//! faults.clear();
//! assert_eq!(service.oneshot(3).await?, 3);
//! # Ok(()) }
//! ```

pub mod error;
pub mod future;
mod handle;
mod plan;
mod service;

pub use self::handle::{FaultStats, Faults};
pub use self::plan::{Latency, Outage, Plan, PlanBuilder};
pub use self::service::{AsError, Fault, FaultLayer, Respond};

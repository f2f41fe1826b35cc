//! Adaptive client-side throttling: shed load locally, in proportion to how
//! much the backend has been refusing.
//!
//! # Why
//!
//! A circuit breaker is modal: all or (almost) nothing. When a backend is
//! *overloaded* rather than down — it serves some requests and refuses the
//! rest — the best a client can do is send roughly what the backend accepts
//! and fail the rest locally, cheaply, before they cost the backend anything
//! to refuse. The Google SRE book ("Handling Overload") does this with two
//! counts over a trailing window (two minutes by default): `requests` the
//! client attempted and `accepts` the backend served. Each new request is
//! rejected locally with probability
//!
//! ```text
//! max(0, (requests − K · accepts) / (requests + 1))
//! ```
//!
//! `K` (default 2) is how much more than the backend accepts a client may
//! send: with `K = 2` a backend that accepts half of what it gets sees no
//! throttling at all, one that accepts less sees the client back off in
//! proportion. What counts as an accept comes from the same
//! [`Classify`](crate::classify::Classify) a retry layer uses: anything but a failure.
//! Locally rejected requests count as requests (that is what makes the
//! client converge).
//!
//! The service is the [`guard`](crate::guard) engine's, with the
//! [`Throttler`] admitting the calls; code that is not a tower service
//! uses [`Throttler::acquire`] or [`Throttler::call`].
//!
//! ```
//! use std::time::Duration;
//! use dephase::throttle::{Throttler, ThrottleLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let throttler = Throttler::builder().k(2.0).window(Duration::from_secs(120)).seed(1).build()?;
//! let mut service = ServiceBuilder::new()
//!     .layer(ThrottleLayer::new(throttler.clone()))
//!     .service(tower::service_fn(|_: ()| async { Err::<(), _>("overloaded") }));
//!
//! let mut reached = 0;
//! for _ in 0..1000 {
//!     match service.ready().await.unwrap().call(()).await {
//!         Err(e) if e.is::<dephase::throttle::error::Throttled>() => {}
//!         _ => reached += 1,
//!     }
//! }
//! // A backend that refuses everything gets a trickle: about ln(1000) ≈ 7 calls.
//! assert!(reached < 20, "{reached}");
//! # Ok(()) }
//! ```

mod builder;
pub mod error;
mod layer;
mod service;
mod state;

pub use self::builder::ThrottlerBuilder;
pub use self::layer::ThrottleLayer;
pub use self::service::Throttle;
pub use self::state::{Permit, ThrottleStats, Throttler};

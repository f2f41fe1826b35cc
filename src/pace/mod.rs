//! Admission that waits instead of rejecting: a burst of callers released
//! in slices of a quota.
//!
//! # Why
//!
//! Three hundred instances start together after a deploy and all warm their
//! caches from the same database; a remediation script restarts a fleet in
//! one go; a batch fires every job at midnight. A rate limiter that
//! *rejects* turns the excess into errors and retries (another herd). A
//! pacer makes the excess *wait its turn*: callers are released at the
//! quota's rate, first come first served, and only a caller whose turn is
//! more than `max_wait` away is turned away (at once, with
//! [`error::Overloaded`]). Inside a [`Deadline`](crate::deadline::Deadline)'s
//! scope the wait is also bounded by the time the deadline leaves: a turn
//! after it would be wasted.
//!
//! The quota is a [governor](https://docs.rs/governor) [`Quota`]: `n` per
//! period, with an optional burst. The schedule is GCRA's (governor's
//! algorithm), with reservations: each caller gets its own release time, so
//! waiting callers do not poll the limiter in a loop. A caller that had to
//! wait also waits a random extra of up to `jitter` (by default one quota
//! interval), as governor's `until_ready_with_jitter` does, so that several
//! pacers started together do not release in step. The wait it applied is
//! recorded (see [`telemetry`](crate::telemetry)). A caller that goes away
//! before its turn gives the turn back.
//!
//! ```
//! use std::time::Duration;
//! use dephase::pace::{Pacer, PaceLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::BoxError> {
//! let pacer = Pacer::builder()
//!     .rate(100, Duration::from_secs(1)) // 100 per second, one every 10 ms
//!     .max_wait(Duration::from_secs(5))
//!     .build()?;
//! let service = ServiceBuilder::new()
//!     .layer(PaceLayer::new(pacer))
//!     .service(tower::service_fn(|i: u32| async move { Ok::<_, dephase::BoxError>(i) }));
//!
//! let start = tokio::time::Instant::now();
//! let herd: Vec<_> = (0..300).map(|i| tokio::spawn(service.clone().oneshot(i))).collect();
//! for caller in herd {
//!     caller.await??;
//! }
//! // 300 callers at 100 per second: about three seconds, not one instant.
//! assert!(start.elapsed() >= Duration::from_millis(2990));
//! # Ok(()) }
//! ```

pub mod error;
pub mod future;
mod layer;
mod pacer;
mod schedule;
mod service;

pub use governor::Quota;

pub use self::layer::PaceLayer;
#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
pub(crate) use self::pacer::max_wait_now;
pub use self::pacer::{Pacer, PacerBuilder, PacerStats};
pub use self::service::Pace;

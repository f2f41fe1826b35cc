//! Exponential backoff with jitter, one independent random stream per retry sequence.
//!
//! # Why
//!
//! When a dependency fails, every caller that saw the failure retries. If
//! they wait the same time, they come back together, fail together and wait
//! together again: the herd keeps its shape and the recovering dependency
//! meets it at full height. Jitter breaks the lockstep — but only if each
//! caller draws *its own* randomness (a generator cloned into every backoff
//! gives every concurrent retry the same "random" delay), and only if the
//! jitter is taken from the delay, not added on top of the cap.
//!
//! Here an [`ExponentialBackoff`] is a validated configuration. Each call to
//! [`sequence`](ExponentialBackoff::sequence) starts a new retry sequence
//! with its own random stream, and every delay it yields stays within
//! `[0, cap]`. A seed makes a whole run reproducible.
//!
//! ```
//! use std::time::Duration;
//! use dephase::backoff::{ExponentialBackoff, Jitter};
//!
//! let backoff = ExponentialBackoff::builder()
//!     .base(Duration::from_millis(100))
//!     .multiplier(2.0)
//!     .cap(Duration::from_secs(5))
//!     .jitter(Jitter::Full)
//!     .seed(42) // leave out for production
//!     .build()?;
//!
//! // One sequence per request that is being retried.
//! let delays: Vec<Duration> = backoff.sequence().take(8).collect();
//! for (n, delay) in delays.iter().enumerate() {
//!     let exponential = Duration::from_millis(100 * 2u64.pow(n as u32)).min(Duration::from_secs(5));
//!     assert!(*delay <= exponential);
//! }
//! // Two sequences started together do not share their delays.
//! assert_ne!(backoff.sequence().next_delay(), backoff.sequence().next_delay());
//! # Ok::<(), dephase::ConfigError>(())
//! ```

mod exponential;
mod jitter;

pub use self::exponential::{ExponentialBackoff, ExponentialBackoffBuilder, MAX_CAP, Sequence};
pub use self::jitter::Jitter;

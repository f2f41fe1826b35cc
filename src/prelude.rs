//! The names most programs use, in one import: `use dephase::prelude::*;`.
//!
//! ```
//! use dephase::prelude::*;
//!
//! # fn main() -> Result<(), ConfigError> {
//! let budget = RatioBudget::builder().build()?;
//! let _retry = RetryLayer::new(RetryPolicy::builder().budget(budget.clone()).build()?);
//! assert_eq!(budget.balance(), 100.0);
//! # Ok(()) }
//! ```

pub use crate::backoff::{ExponentialBackoff, Jitter};
pub use crate::breaker::error::Rejected;
pub use crate::breaker::{Breaker, CircuitBreakerLayer, KeyedBreaker};
pub use crate::budget::{RatioBudget, RetryBudget, TokenBucket};
pub use crate::cache::{CacheLayer, MemoryStore, TtlJitter};
pub use crate::classify::{Classify, Outcome};
pub use crate::coalesce::CoalesceLayer;
pub use crate::coalesce::error::{Panicked, SharedError};
pub use crate::deadline::{Deadline, DeadlineExceeded};
pub use crate::fault::{FaultLayer, Faults};
pub use crate::hedge::{HedgeLayer, HedgePolicy};
pub use crate::limit::error::LimitExceeded;
pub use crate::limit::{ConcurrencyLimitLayer, Limiter};
pub use crate::offset::{Offset, Ticker};
pub use crate::pace::error::Overloaded;
pub use crate::pace::{PaceLayer, Pacer};
pub use crate::retry::{RetryLayer, RetryPolicy};
pub use crate::throttle::error::Throttled;
pub use crate::throttle::{ThrottleLayer, Throttler};
pub use crate::{BoxError, ConfigError};

#[cfg(feature = "http")]
pub use crate::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
#[cfg(feature = "reqwest-middleware")]
pub use crate::http::DephaseMiddleware;
#[cfg(feature = "http")]
pub use crate::http::{FanoutLayer, HttpClassifier, IdempotentRequests, ReplayLayer, RequestKey};
#[cfg(feature = "redis")]
pub use crate::redis::error::GateError;
#[cfg(feature = "redis")]
pub use crate::redis::{
    FleetBudget, FleetGate, FleetGateLayer, FleetPaceLayer, FleetPacer, RedisStore, Server,
    SlotGuard,
};

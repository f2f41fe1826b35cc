//! The [`ThrottleLayer`].

use super::state::Throttler;
use crate::classify::RetryErrors;
use crate::guard::GuardLayer;

/// Wraps services in [`Throttle`](super::Throttle)s that all share one
/// [`Throttler`]: the [`guard`](crate::guard) engine's [`GuardLayer`].
/// `ThrottleLayer::new(throttler)`; `.classify(c)` decides what the
/// backend accepted.
pub type ThrottleLayer<C = RetryErrors> = GuardLayer<Throttler, C>;

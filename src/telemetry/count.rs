//! The counting hooks every layer calls: through [`metrics`](super::metrics)
//! with the `otel` feature, empty (and gone after inlining) without it.

#[cfg(feature = "otel")]
pub(crate) use super::metrics::{
    applied_offset, breaker_gone_open, breaker_rejected, breaker_transition, budget_denied,
    cache_recompute, cache_result, cache_store, cache_ttl_offset, coalesce_follower,
    hedge_answered, hedge_refused, hedge_sent, limit_changed, limit_rejected, limit_waited,
    pace_overloaded, pace_waited, redis_lease, retried_call, retry, throttle_rejected,
};
#[cfg(all(feature = "otel", feature = "redis"))]
pub(crate) use super::metrics::{fleet_gate, fleet_pace};

#[cfg(not(feature = "otel"))]
pub(crate) use self::off::*;

#[cfg(not(feature = "otel"))]
mod off {
    use std::time::Duration;

    #[inline(always)]
    pub(crate) fn retry(_reason: &'static str, _delay: Duration) {}
    #[inline(always)]
    pub(crate) fn retried_call(_retries: u32, _slept: Duration) {}
    #[inline(always)]
    pub(crate) fn budget_denied() {}
    #[inline(always)]
    pub(crate) fn breaker_transition(
        _to: &'static str,
        _was_open: bool,
        _is_open: bool,
        _open_for: Option<Duration>,
    ) {
    }
    #[inline(always)]
    pub(crate) fn breaker_gone_open() {}
    #[inline(always)]
    pub(crate) fn breaker_rejected(_state: &'static str) {}
    #[inline(always)]
    pub(crate) fn coalesce_follower() {}
    #[inline(always)]
    pub(crate) fn cache_result(_which: usize) {}
    #[inline(always)]
    pub(crate) fn cache_recompute() {}
    #[inline(always)]
    pub(crate) fn cache_store() {}
    #[inline(always)]
    pub(crate) fn cache_ttl_offset(_jitter: Duration) {}
    #[inline(always)]
    pub(crate) fn applied_offset(_layer: &'static str, _applied: Duration) {}
    #[inline(always)]
    pub(crate) fn pace_waited() {}
    #[inline(always)]
    pub(crate) fn pace_overloaded() {}
    #[inline(always)]
    pub(crate) fn throttle_rejected() {}
    #[inline(always)]
    pub(crate) fn hedge_sent(_after: Duration) {}
    #[inline(always)]
    pub(crate) fn hedge_refused(_reason: &'static str) {}
    #[inline(always)]
    pub(crate) fn hedge_answered(_winner: &'static str) {}
    #[inline(always)]
    pub(crate) fn limit_rejected() {}
    #[inline(always)]
    pub(crate) fn limit_changed(_limit: u32) {}
    #[inline(always)]
    pub(crate) fn limit_waited(_waited: Duration) {}
    #[inline(always)]
    pub(crate) fn redis_lease(_lease: &'static str, _waited: Duration) {}
    #[cfg(feature = "redis")]
    #[inline(always)]
    pub(crate) fn fleet_gate(_outcome: &'static str) {}
    #[cfg(feature = "redis")]
    #[inline(always)]
    pub(crate) fn fleet_pace(_outcome: &'static str) {}
}

//! The names every layer uses for what it records.
//!
//! Each layer records the offset it applied on the **current** `tracing`
//! span (the span that is entered while its future is polled — the span of a
//! `tower-http` `TraceLayer`, or any span you attach with
//! [`Instrument`](https://docs.rs/tracing/latest/tracing/trait.Instrument.html))
//! and emits an event for each delay it applies. `tracing-opentelemetry`
//! exports span fields as OpenTelemetry span attributes under these names.
//!
//! `tracing` only records a field on a span that *declared* it, so declare
//! the fields you want as `Empty` when you create the span; the events carry
//! the same fields whether or not the span declares them:
//!
//! ```
//! use tracing::field::Empty;
//!
//! let span = tracing::info_span!(
//!     "GET /users",
//!     http.request.resend_count = Empty,
//!     dephase.retry.delay_ms = Empty,
//!     dephase.jitter = Empty,
//!     dephase.budget = Empty,
//!     dephase.retry.reason = Empty,
//! );
//! # drop(span);
//! ```
//!
//! | layer | span fields | event |
//! |---|---|---|
//! | retry | [`RESEND_COUNT`], [`RETRY_DELAY_MS`] (total slept), [`JITTER`], [`BUDGET`], [`RETRY_REASON`] — recorded once, when the request finishes or is dropped, and only if it was retried | one per planned retry, with the delay of that retry; one when the budget or the deadline stops retrying |
//! | breaker | [`BREAKER_STATE`], [`BREAKER_RETRY_AFTER_MS`] (on rejection) | `INFO` on every transition (with [`BREAKER_OPEN_MS`] when it opens); `DEBUG` on every rejection |
//! | offset | [`OFFSET_MS`], [`OFFSET_STRATEGY`] | one per [`Offset::record`](crate::offset::Offset::record) and per ticker tick |
//! | coalesce | [`COALESCE_ROLE`], [`COALESCE_WAITERS`] | `DEBUG` when a coalesced call finishes |
//! | cache | [`CACHE_RESULT`], [`CACHE_EXPIRES_IN_MS`] (on a hit), [`CACHE_TTL_OFFSET_MS`] (on a load) | `TRACE` per lookup |
//! | redis (feature `redis`) | [`CACHE_RESULT`], [`CACHE_EXPIRES_IN_MS`] (on a hit), [`CACHE_TTL_OFFSET_MS`] (on a load), [`REDIS_LEASE`], [`REDIS_WAIT_MS`] (the jittered polling applied while another replica held the lease) | `WARN` when Redis becomes unreachable (and the layer falls back), `INFO` when it is back, `WARN` when a value is not written because its lease was lost |
//! | throttle | [`THROTTLE_PROBABILITY`] (on a local rejection) | `DEBUG` on every local rejection |
//! | pace | [`OFFSET_MS`] (the wait applied), [`OFFSET_STRATEGY`] = `pace` | one per caller that had to wait |
//! | hedge | [`HEDGE_DELAY_MS`], [`HEDGE_SENT`], [`HEDGE_WINNER`], [`BUDGET`] (`denied` when the budget refused a hedge) — recorded once, only for a request still unanswered when its hedge was due | `DEBUG` per hedge sent and per hedge refused |
//! | limit | [`LIMIT_WAIT_MS`] (a caller that waited for a slot); on a rejection also [`LIMIT_CURRENT`], [`LIMIT_IN_FLIGHT`], [`LIMIT_PRIORITY`] | `DEBUG` on every rejection and every change of the limit |
//! | fleet gate (feature `redis`) | [`FLEET_SLOT`] (the fencing token), [`FLEET_WAIT_MS`] (time waited for a slot); the wait is also counted in `dephase.delay` (`layer` = `fleet_gate`) | `WARN` when a held slot is lost; the Redis link's `WARN`/`INFO` when Redis is lost and back |
//! | fleet pacer (feature `redis`) | [`FLEET_WAIT_MS`] (the wait for the turn); also counted in `dephase.delay` (`layer` = `fleet_pace`) | `DEBUG` on each wait; the Redis link's `WARN`/`INFO` when Redis is lost and back |
//! | deadline | [`DEADLINE_REMAINING_MS`] (as received by the server layer, as sent by the client layer) | `DEBUG` when a request is refused or cut short, and when a header is ignored |
//!
//! Events use the target `dephase::<module>` (for example `dephase::retry`)
//! at `DEBUG` level, so `RUST_LOG=dephase=debug` shows them.

pub(crate) mod count;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod metrics;
mod names;

pub use self::names::*;

/// The values of [`CACHE_RESULT`], in the order the cache numbers them.
pub(crate) const CACHE_RESULT_NAMES: [&str; 4] = ["hit", "miss", "early_refresh", "stale"];

/// Records the time a deadline leaves on the current span.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn record_deadline(remaining: std::time::Duration) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record(DEADLINE_REMAINING_MS, millis(remaining));
    }
}

/// A duration in (fractional) milliseconds, as every `*_ms` field records it.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

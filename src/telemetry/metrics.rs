//! The same facts as the span fields, counted through the `opentelemetry`
//! metrics API (feature `otel`).
//!
//! Names follow OpenTelemetry's conventions — durations in seconds (unit
//! `s`), counts with a `{thing}` unit — and, for the per-call retry
//! histograms, gRPC's retry metrics (gRFC A96: `grpc.client.call.retries`,
//! `grpc.client.call.retry_delay`). The OpenTelemetry Prometheus exporter
//! turns a name's dots into underscores, adds `_total` to counters and the
//! unit (`_seconds`) to histograms: `dephase.retry.retries` is scraped as
//! `dephase_retry_retries_total`, `dephase.delay` as
//! `dephase_delay_seconds_bucket` (the dashboard in `dashboards/` uses
//! those names).

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, UpDownCounter};

use crate::tally::Lanes;

/// Retries sent (attribute `dephase.retry.reason`). Counter.
pub const RETRIES: &str = "dephase.retry.retries";
/// Retries the budget refused. Counter.
pub const BUDGET_DENIALS: &str = "dephase.retry.budget_denials";
/// Retries per retried call (gRFC A96's `grpc.client.call.retries`;
/// calls that were not retried are not recorded, so that the success path
/// records nothing). Histogram, unit `{retry}`.
pub const CALL_RETRIES: &str = "dephase.retry.call.retries";
/// Total backoff of each retried call, in seconds (gRFC A96's
/// `grpc.client.call.retry_delay`). Histogram, unit `s`.
pub const CALL_RETRY_DELAY: &str = "dephase.retry.call.retry_delay";
/// Breaker transitions (attribute `dephase.breaker.state`: the new state). Counter.
pub const BREAKER_TRANSITIONS: &str = "dephase.breaker.transitions";
/// Calls a breaker rejected (attribute `dephase.breaker.state`). Counter.
pub const BREAKER_REJECTIONS: &str = "dephase.breaker.rejections";
/// Breakers not letting every call through now (open, half-open or
/// isolated): up when one leaves the closed states, down when one returns
/// to them or goes away (an evicted keyed breaker, the last clone
/// dropped). Up-down counter (a gauge in Prometheus).
pub const BREAKERS_OPEN: &str = "dephase.breaker.open";
/// Callers that shared another caller's call. Counter.
pub const COALESCE_FOLLOWERS: &str = "dephase.coalesce.followers";
/// Cache lookups (attribute `dephase.cache.result`: `hit`, `miss`,
/// `early_refresh`, `stale`). Counter, observed when metrics are
/// collected: a lookup (the hottest path dephase has) adds one to a
/// counter of its thread's own instead of calling an instrument, and the
/// collection reads the process's totals (every result is reported, zero
/// included).
pub const CACHE_RESULTS: &str = "dephase.cache.results";
/// Values a cache computed through the origin that it would keep (loads
/// and refreshes that returned a storable value), stored or not. Counter.
pub const CACHE_RECOMPUTES: &str = "dephase.cache.recomputes";
/// Values a cache wrote into its store. `recomputes / stores` is the
/// number of times each stored value was computed: 1 when every expiry is
/// recomputed once; more when replicas of a fleet computed the same value
/// (a lease wait that ran out, Redis unreachable) or a write was refused
/// (its lease lost). The stampede alert in `dashboards/alerts.yaml` fires
/// above 1.5. Counter.
pub const CACHE_STORES: &str = "dephase.cache.stores";
/// Requests served through the Redis store (feature `redis`), by how the
/// fill went across replicas (attribute `dephase.redis.lease`: `none`,
/// `acquired`, `waited`, `deadline`, `degraded`). Counter.
pub const REDIS_LEASES: &str = "dephase.redis.leases";
/// Callers a pacer made wait for their turn. Counter.
pub const PACE_WAITS: &str = "dephase.pace.waits";
/// Callers a pacer turned away (their turn was too far). Counter.
pub const PACE_OVERLOADED: &str = "dephase.pace.overloaded";
/// Calls a throttle shed locally. Counter.
pub const THROTTLE_REJECTIONS: &str = "dephase.throttle.rejections";
/// Hedged copies sent. Counter.
pub const HEDGES: &str = "dephase.hedge.hedges";
/// Hedges that came due and were not sent (attribute
/// `dephase.hedge.refusal`: `budget`, `gate`, `deadline`, `no_copy`). Counter.
pub const HEDGE_REFUSALS: &str = "dephase.hedge.refusals";
/// Requests whose hedge came due, by which copy answered (attribute
/// `dephase.hedge.winner`: `original`, `hedge`). Counter.
pub const HEDGE_ANSWERS: &str = "dephase.hedge.answers";
/// Callers a concurrency limit turned away. Counter.
pub const LIMIT_REJECTIONS: &str = "dephase.limit.rejections";
/// The concurrency limits' latest value (the last limit set by any
/// limiter of the process). Gauge, unit `{request}`.
pub const LIMIT: &str = "dephase.limit.limit";
/// The attribute that says why a hedge was not sent.
pub const HEDGE_REFUSAL: &str = "dephase.hedge.refusal";
/// Slot requests of fleet gates, by outcome (attribute
/// `dephase.fleet.outcome`: `acquired`, `timed_out`, `unavailable`,
/// `admitted_open`; and `lost` for a slot lost while held). Counter
/// (feature `redis`).
pub const FLEET_GATE: &str = "dephase.fleet.gate";
/// Callers of fleet pacers, by where their turn came from (attribute
/// `dephase.fleet.outcome`: `redis`, `local` (Redis unreachable: the
/// replica's share), `overloaded`). Counter (feature `redis`).
pub const FLEET_PACE: &str = "dephase.fleet.pace";
/// The attribute of [`FLEET_GATE`] and [`FLEET_PACE`].
pub const FLEET_OUTCOME: &str = "dephase.fleet.outcome";
/// Delays applied, in seconds (attribute `dephase.layer`: `retry` (a
/// backoff), `hedge` (how long a request had run when a hedge was sent),
/// `limit` (a caller's wait for a concurrency slot), `breaker` (an open time), `cache` (a TTL jitter), `pace` (a
/// wait), `offset` (a deterministic offset), `redis` (the polling of a
/// replica that waited for another's load)). Histogram, unit `s`.
pub const DELAYS: &str = "dephase.delay";

/// The attribute that says which layer applied a delay.
pub const LAYER: &str = "dephase.layer";

/// Bucket boundaries of the delay histograms, in seconds: 1 ms to 5 min.
const SECONDS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

struct Instruments {
    retries: Counter<u64>,
    budget_denials: Counter<u64>,
    call_retries: Histogram<u64>,
    call_retry_delay: Histogram<f64>,
    breaker_transitions: Counter<u64>,
    breaker_rejections: Counter<u64>,
    breakers_open: UpDownCounter<i64>,
    coalesce_followers: Counter<u64>,
    /// Kept for its callback, which reads [`CACHE_RESULT_COUNTS`].
    _cache_results: ObservableCounter<u64>,
    cache_recomputes: Counter<u64>,
    cache_stores: Counter<u64>,
    #[cfg(feature = "redis")]
    redis_leases: Counter<u64>,
    #[cfg(feature = "redis")]
    fleet_gate: Counter<u64>,
    #[cfg(feature = "redis")]
    fleet_pace: Counter<u64>,
    pace_waits: Counter<u64>,
    pace_overloaded: Counter<u64>,
    throttle_rejections: Counter<u64>,
    hedges: Counter<u64>,
    hedge_refusals: Counter<u64>,
    hedge_answers: Counter<u64>,
    limit_rejections: Counter<u64>,
    limit: opentelemetry::metrics::Gauge<u64>,
    delays: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

impl Instruments {
    fn new(meter: &Meter) -> Self {
        let counter = |name: &'static str, unit: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        Instruments {
            retries: counter(RETRIES, "{retry}", "Retries sent"),
            budget_denials: counter(
                BUDGET_DENIALS,
                "{retry}",
                "Retries refused by the retry budget",
            ),
            call_retries: meter
                .u64_histogram(CALL_RETRIES)
                .with_unit("{retry}")
                .with_description("Retries per retried call")
                .with_boundaries(vec![1.0, 2.0, 3.0, 4.0, 5.0, 10.0])
                .build(),
            call_retry_delay: meter
                .f64_histogram(CALL_RETRY_DELAY)
                .with_unit("s")
                .with_description("Total backoff of each retried call")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            breaker_transitions: counter(
                BREAKER_TRANSITIONS,
                "{transition}",
                "Circuit breaker transitions, by new state",
            ),
            breaker_rejections: counter(
                BREAKER_REJECTIONS,
                "{call}",
                "Calls rejected by a circuit breaker",
            ),
            breakers_open: meter
                .i64_up_down_counter(BREAKERS_OPEN)
                .with_unit("{breaker}")
                .with_description("Circuit breakers open or half-open")
                .build(),
            coalesce_followers: counter(
                COALESCE_FOLLOWERS,
                "{call}",
                "Callers that shared another caller's call",
            ),
            _cache_results: meter
                .u64_observable_counter(CACHE_RESULTS)
                .with_unit("{lookup}")
                .with_description("Cache lookups, by result")
                .with_callback(|observer| {
                    for (which, result) in crate::telemetry::CACHE_RESULT_NAMES.iter().enumerate() {
                        observer.observe(
                            CACHE_RESULT_COUNTS.get(which),
                            &[KeyValue::new(super::CACHE_RESULT, *result)],
                        );
                    }
                })
                .build(),
            cache_recomputes: counter(
                CACHE_RECOMPUTES,
                "{value}",
                "Values a cache computed through the origin that it would keep",
            ),
            cache_stores: counter(CACHE_STORES, "{value}", "Values written into a cache"),
            #[cfg(feature = "redis")]
            redis_leases: counter(
                REDIS_LEASES,
                "{request}",
                "Requests through the Redis store, by lease outcome",
            ),
            #[cfg(feature = "redis")]
            fleet_gate: counter(
                FLEET_GATE,
                "{request}",
                "Slot requests of fleet gates, by outcome",
            ),
            #[cfg(feature = "redis")]
            fleet_pace: counter(
                FLEET_PACE,
                "{call}",
                "Callers of fleet pacers, by where their turn came from",
            ),
            pace_waits: counter(PACE_WAITS, "{call}", "Callers a pacer made wait"),
            pace_overloaded: counter(PACE_OVERLOADED, "{call}", "Callers a pacer turned away"),
            throttle_rejections: counter(
                THROTTLE_REJECTIONS,
                "{call}",
                "Calls a throttle shed locally",
            ),
            hedges: counter(HEDGES, "{hedge}", "Hedged copies sent"),
            hedge_refusals: counter(
                HEDGE_REFUSALS,
                "{hedge}",
                "Hedges that came due and were not sent, by reason",
            ),
            hedge_answers: counter(
                HEDGE_ANSWERS,
                "{request}",
                "Requests whose hedge came due, by the copy that answered",
            ),
            limit_rejections: counter(
                LIMIT_REJECTIONS,
                "{call}",
                "Callers a concurrency limit turned away",
            ),
            limit: meter
                .u64_gauge(LIMIT)
                .with_unit("{request}")
                .with_description("The latest concurrency limit")
                .build(),
            delays: meter
                .f64_histogram(DELAYS)
                .with_unit("s")
                .with_description("Delays applied by dephase layers")
                .with_boundaries(SECONDS.to_vec())
                .build(),
        }
    }
}

/// Makes every layer count through instruments of `meter`. Returns `false`
/// (and changes nothing) if the instruments already exist — they are made
/// once, at the first fact counted, from
/// `opentelemetry::global::meter("dephase")` unless this was called before.
/// So either call this, or install the global meter provider, before the
/// layers first run.
pub fn use_meter(meter: &Meter) -> bool {
    let mut installed = false;
    INSTRUMENTS.get_or_init(|| {
        installed = true;
        Instruments::new(meter)
    });
    installed
}

fn instruments() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| Instruments::new(&opentelemetry::global::meter("dephase")))
}

fn delay(layer: &'static str, delay: Duration) {
    instruments()
        .delays
        .record(delay.as_secs_f64(), &[KeyValue::new(LAYER, layer)]);
}

pub(crate) fn retry(reason: &'static str, backoff: Duration) {
    instruments()
        .retries
        .add(1, &[KeyValue::new(super::RETRY_REASON, reason)]);
    delay("retry", backoff);
}

pub(crate) fn retried_call(retries: u32, slept: Duration) {
    let i = instruments();
    i.call_retries.record(u64::from(retries), &[]);
    i.call_retry_delay.record(slept.as_secs_f64(), &[]);
}

pub(crate) fn budget_denied() {
    instruments().budget_denials.add(1, &[]);
}

/// `was_open`, `is_open`: whether the breaker was, and is, open,
/// half-open or isolated (not letting every call through).
pub(crate) fn breaker_transition(
    to: &'static str,
    was_open: bool,
    is_open: bool,
    open_for: Option<Duration>,
) {
    let i = instruments();
    i.breaker_transitions
        .add(1, &[KeyValue::new(super::BREAKER_STATE, to)]);
    match (was_open, is_open) {
        (false, true) => i.breakers_open.add(1, &[]),
        (true, false) => i.breakers_open.add(-1, &[]),
        _ => {}
    }
    if let Some(open_for) = open_for {
        delay("breaker", open_for);
    }
}

/// A breaker went away while open (evicted, or its last clone dropped).
pub(crate) fn breaker_gone_open() {
    instruments().breakers_open.add(-1, &[]);
}

pub(crate) fn breaker_rejected(state: &'static str) {
    instruments()
        .breaker_rejections
        .add(1, &[KeyValue::new(super::BREAKER_STATE, state)]);
}

pub(crate) fn coalesce_follower() {
    instruments().coalesce_followers.add(1, &[]);
}

/// Cache lookups by result (indexes into `CACHE_RESULT_NAMES`), since the
/// process started.
static CACHE_RESULT_COUNTS: LazyLock<Lanes<4>> = LazyLock::new(Lanes::default);

/// Counts a cache lookup's result (an index into `CACHE_RESULT_NAMES`).
#[inline]
pub(crate) fn cache_result(which: usize) {
    CACHE_RESULT_COUNTS.add(which);
    // Makes the instruments (and so registers the callback that reports
    // these counts) if no other fact has.
    instruments();
}

pub(crate) fn cache_recompute() {
    instruments().cache_recomputes.add(1, &[]);
}

pub(crate) fn cache_store() {
    instruments().cache_stores.add(1, &[]);
}

pub(crate) fn cache_ttl_offset(jitter: Duration) {
    delay("cache", jitter);
}

pub(crate) fn applied_offset(layer: &'static str, applied: Duration) {
    delay(layer, applied);
}

pub(crate) fn pace_waited() {
    instruments().pace_waits.add(1, &[]);
}

pub(crate) fn pace_overloaded() {
    instruments().pace_overloaded.add(1, &[]);
}

pub(crate) fn throttle_rejected() {
    instruments().throttle_rejections.add(1, &[]);
}

/// Called by the cache for requests that went through a Redis store (so
/// only with the `redis` feature).
pub(crate) fn redis_lease(lease: &'static str, waited: Duration) {
    #[cfg(not(feature = "redis"))]
    let _ = lease;
    #[cfg(feature = "redis")]
    instruments()
        .redis_leases
        .add(1, &[KeyValue::new(super::REDIS_LEASE, lease)]);
    if !waited.is_zero() {
        delay("redis", waited);
    }
}

pub(crate) fn hedge_sent(after: Duration) {
    instruments().hedges.add(1, &[]);
    delay("hedge", after);
}

pub(crate) fn hedge_refused(reason: &'static str) {
    instruments()
        .hedge_refusals
        .add(1, &[KeyValue::new(HEDGE_REFUSAL, reason)]);
}

pub(crate) fn hedge_answered(winner: &'static str) {
    instruments()
        .hedge_answers
        .add(1, &[KeyValue::new(super::HEDGE_WINNER, winner)]);
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_gate(outcome: &'static str) {
    instruments()
        .fleet_gate
        .add(1, &[KeyValue::new(FLEET_OUTCOME, outcome)]);
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_pace(outcome: &'static str) {
    instruments()
        .fleet_pace
        .add(1, &[KeyValue::new(FLEET_OUTCOME, outcome)]);
}

pub(crate) fn limit_rejected() {
    instruments().limit_rejections.add(1, &[]);
}

pub(crate) fn limit_changed(limit: u32) {
    instruments().limit.record(u64::from(limit), &[]);
}

pub(crate) fn limit_waited(waited: Duration) {
    delay("limit", waited);
}

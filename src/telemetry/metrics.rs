//! The same facts as the span fields, counted through the `opentelemetry`
//! metrics API (feature `otel`).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

/// Retries planned (attribute `dephase.retry.reason`). Counter.
pub const RETRIES: &str = "dephase.retry.retries";
/// Retries the budget refused. Counter.
pub const BUDGET_DENIALS: &str = "dephase.retry.budget_denials";
/// Breaker transitions (attribute `dephase.breaker.state`: the new state). Counter.
pub const BREAKER_TRANSITIONS: &str = "dephase.breaker.transitions";
/// Calls a breaker rejected (attribute `dephase.breaker.state`). Counter.
pub const BREAKER_REJECTIONS: &str = "dephase.breaker.rejections";
/// Callers that shared another caller's call. Counter.
pub const COALESCE_FOLLOWERS: &str = "dephase.coalesce.followers";
/// Cache lookups (attribute `dephase.cache.result`). Counter.
pub const CACHE_RESULTS: &str = "dephase.cache.results";
/// Requests served through the Redis store (feature `redis`), by how the
/// fill went across replicas (attribute `dephase.redis.lease`: `none`,
/// `acquired`, `waited`, `deadline`, `degraded`). Counter.
pub const REDIS_LEASES: &str = "dephase.redis.leases";
/// Offsets applied, in milliseconds (attribute `dephase.layer`: `retry`
/// (a backoff), `breaker` (an open time), `cache` (a TTL jitter), `pace`
/// (a wait), `offset` (a deterministic offset), `redis` (the polling of a
/// replica that waited for another's load)). Histogram.
pub const OFFSETS: &str = "dephase.offset";

/// The attribute that says which layer applied an offset.
pub const LAYER: &str = "dephase.layer";

struct Instruments {
    retries: Counter<u64>,
    budget_denials: Counter<u64>,
    breaker_transitions: Counter<u64>,
    breaker_rejections: Counter<u64>,
    coalesce_followers: Counter<u64>,
    cache_results: Counter<u64>,
    #[cfg(feature = "redis")]
    redis_leases: Counter<u64>,
    offsets: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

impl Instruments {
    fn new(meter: &Meter) -> Self {
        Instruments {
            retries: meter
                .u64_counter(RETRIES)
                .with_description("Retries planned")
                .build(),
            budget_denials: meter
                .u64_counter(BUDGET_DENIALS)
                .with_description("Retries refused by the retry budget")
                .build(),
            breaker_transitions: meter
                .u64_counter(BREAKER_TRANSITIONS)
                .with_description("Circuit breaker transitions, by new state")
                .build(),
            breaker_rejections: meter
                .u64_counter(BREAKER_REJECTIONS)
                .with_description("Calls rejected by a circuit breaker")
                .build(),
            coalesce_followers: meter
                .u64_counter(COALESCE_FOLLOWERS)
                .with_description("Callers that shared another caller's call")
                .build(),
            cache_results: meter
                .u64_counter(CACHE_RESULTS)
                .with_description("Cache lookups, by result")
                .build(),
            #[cfg(feature = "redis")]
            redis_leases: meter
                .u64_counter(REDIS_LEASES)
                .with_description("Requests through the Redis store, by lease outcome")
                .build(),
            offsets: meter
                .f64_histogram(OFFSETS)
                .with_unit("ms")
                .with_description("Offsets applied by dephase layers")
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

fn offset(layer: &'static str, offset: Duration) {
    instruments()
        .offsets
        .record(super::millis(offset), &[KeyValue::new(LAYER, layer)]);
}

pub(crate) fn retry(reason: &'static str, delay: Duration) {
    instruments()
        .retries
        .add(1, &[KeyValue::new(super::RETRY_REASON, reason)]);
    offset("retry", delay);
}

pub(crate) fn budget_denied() {
    instruments().budget_denials.add(1, &[]);
}

pub(crate) fn breaker_transition(to: &'static str, open_for: Option<Duration>) {
    instruments()
        .breaker_transitions
        .add(1, &[KeyValue::new(super::BREAKER_STATE, to)]);
    if let Some(open_for) = open_for {
        offset("breaker", open_for);
    }
}

pub(crate) fn breaker_rejected(state: &'static str) {
    instruments()
        .breaker_rejections
        .add(1, &[KeyValue::new(super::BREAKER_STATE, state)]);
}

pub(crate) fn coalesce_follower() {
    instruments().coalesce_followers.add(1, &[]);
}

pub(crate) fn cache_result(result: &'static str) {
    instruments()
        .cache_results
        .add(1, &[KeyValue::new(super::CACHE_RESULT, result)]);
}

pub(crate) fn cache_ttl_offset(jitter: Duration) {
    offset("cache", jitter);
}

pub(crate) fn applied_offset(layer: &'static str, applied: Duration) {
    offset(layer, applied);
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
        offset("redis", waited);
    }
}

//! The names of the span fields and event fields.

/// Re-sends of this request: the OpenTelemetry HTTP semantic convention's
/// name. Integer (recorded as `i64`, which `tracing-opentelemetry` exports
/// as an integer attribute; it exports `u64` as a string).
pub const RESEND_COUNT: &str = "http.request.resend_count";

/// Retry: milliseconds slept before re-sends. On the span, the total
/// actually slept (tokio's timer wakes on whole milliseconds, so this can be
/// up to 1 ms per retry above the plan); on each event, the delay planned
/// for that one retry. Float.
pub const RETRY_DELAY_MS: &str = "dephase.retry.delay_ms";

/// Retry: the jitter kind of the backoff (`none`, `full`, `equal`, `decorrelated`).
pub const JITTER: &str = "dephase.jitter";

/// Retry: whether the retry budget `granted` or `denied` the last retry.
pub const BUDGET: &str = "dephase.budget";

/// Retry: why the last attempt was retried, as the classifier put it
/// ([`Outcome::Retry`](crate::classify::Outcome::Retry)'s `reason`). When
/// retrying stops early (attempts, deadline, budget), an event says why.
pub const RETRY_REASON: &str = "dephase.retry.reason";

/// Breaker: the state (`closed`, `open`, `half_open`), set on every
/// transition and on every rejection.
pub const BREAKER_STATE: &str = "dephase.breaker.state";

/// Breaker: on a rejection, how long until the breaker admits a call, in
/// milliseconds. Float.
pub const BREAKER_RETRY_AFTER_MS: &str = "dephase.breaker.retry_after_ms";

/// Breaker: on the event of an opening, how long it stays open, in
/// milliseconds. Float.
pub const BREAKER_OPEN_MS: &str = "dephase.breaker.open_ms";

/// Coalesce: `leader` (this caller made the call) or `follower` (it shared
/// another caller's).
pub const COALESCE_ROLE: &str = "dephase.coalesce.role";

/// Coalesce: how many callers shared the call (recorded when it finishes). Integer.
pub const COALESCE_WAITERS: &str = "dephase.coalesce.waiters";

/// Cache: what happened to the request: `hit`, `miss`, `early_refresh`
/// (a hit that also started a background refresh) or `stale`.
pub const CACHE_RESULT: &str = "dephase.cache.result";

/// Cache: on a hit, how long until the entry expires, in milliseconds. Float.
pub const CACHE_EXPIRES_IN_MS: &str = "dephase.cache.expires_in_ms";

/// Cache: on a load, the TTL jitter added to the new entry, in milliseconds. Float.
pub const CACHE_TTL_OFFSET_MS: &str = "dephase.cache.ttl_offset_ms";

/// Redis store: how this request's fill went across replicas: `none` (the
/// value was in Redis), `acquired` (this replica held the lease and loaded
/// it), `waited` (another replica held it; this one polled for the value),
/// `deadline` (waited up to the deadline, then loaded it itself) or
/// `degraded` (Redis unreachable: loaded with in-process coalescing only).
pub const REDIS_LEASE: &str = "dephase.redis.lease";

/// Redis store: time spent polling for a value another replica was loading
/// (the jittered waits), in milliseconds. Float.
pub const REDIS_WAIT_MS: &str = "dephase.redis.wait_ms";

/// Throttle: on a local rejection, the rejection probability at that moment. Float.
pub const THROTTLE_PROBABILITY: &str = "dephase.throttle.probability";

/// Offset and pace: the offset applied, in milliseconds. Float.
pub const OFFSET_MS: &str = "dephase.offset_ms";

/// Offset and pace: how the offset was chosen (`hash`, `index`, `random`),
/// or `pace` for the wait a pacer applied.
pub const OFFSET_STRATEGY: &str = "dephase.offset.strategy";

/// Hedge: the delay after which the first hedge was due (the latency
/// estimate plus this request's jitter), in milliseconds; recorded only for
/// a request still unanswered then. Float.
pub const HEDGE_DELAY_MS: &str = "dephase.hedge.delay_ms";

/// Hedge: how many hedged copies were sent for the request (0 when the
/// budget, the gate or the deadline refused them). Integer.
pub const HEDGE_SENT: &str = "dephase.hedge.sent";

/// Hedge: which copy answered, `original` or `hedge` (recorded for a
/// request for which a hedge was considered).
pub const HEDGE_WINNER: &str = "dephase.hedge.winner";

/// Deadline: the time left, in milliseconds — as received (server layer)
/// or as sent with the first attempt (client layer; a re-send marked with
/// its [`Attempt`](crate::retry::Attempt) does not record it again). Float.
pub const DEADLINE_REMAINING_MS: &str = "dephase.deadline.remaining_ms";

/// Limit: the concurrency limit when a caller was turned away. Integer.
pub const LIMIT_CURRENT: &str = "dephase.limit.current";

/// Limit: requests in flight when a caller was turned away. Integer.
pub const LIMIT_IN_FLIGHT: &str = "dephase.limit.in_flight";

/// Limit: how long the caller waited for a slot (recorded when it waited,
/// or was turned away), in milliseconds. Float.
pub const LIMIT_WAIT_MS: &str = "dephase.limit.wait_ms";

/// Limit: the caller's partition, when it was turned away.
pub const LIMIT_PRIORITY: &str = "dephase.limit.priority";

/// Fleet gate: the fencing token of the slot the call or job acquired.
pub const FLEET_SLOT: &str = "dephase.fleet.slot";

/// Fleet gate: how long the caller waited for a slot, in milliseconds. Float.
pub const FLEET_WAIT_MS: &str = "dephase.fleet.wait_ms";

/// Every field name above, for subscribers or tests that want the full list.
pub const ALL_FIELDS: &[&str] = &[
    RESEND_COUNT,
    RETRY_DELAY_MS,
    JITTER,
    BUDGET,
    RETRY_REASON,
    BREAKER_STATE,
    BREAKER_RETRY_AFTER_MS,
    BREAKER_OPEN_MS,
    THROTTLE_PROBABILITY,
    COALESCE_ROLE,
    COALESCE_WAITERS,
    CACHE_RESULT,
    CACHE_EXPIRES_IN_MS,
    CACHE_TTL_OFFSET_MS,
    REDIS_LEASE,
    REDIS_WAIT_MS,
    OFFSET_MS,
    OFFSET_STRATEGY,
    HEDGE_DELAY_MS,
    HEDGE_SENT,
    HEDGE_WINNER,
    DEADLINE_REMAINING_MS,
    LIMIT_CURRENT,
    LIMIT_IN_FLIGHT,
    LIMIT_WAIT_MS,
    LIMIT_PRIORITY,
    FLEET_SLOT,
    FLEET_WAIT_MS,
];

//! What a Redis store counts.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what a [`RedisStore`](super::RedisStore) did, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Flights answered by a fresh value from Redis (early refreshes included).
    pub hits: u64,
    /// Hits that also started an early refresh in the background.
    pub early_refreshes: u64,
    /// Flights answered by a value past its freshness, within `stale_while_revalidate`.
    pub stale: u64,
    /// Calls this store made to the origin (loads and refreshes).
    pub origin_calls: u64,
    /// Flights that waited for a value another replica was loading.
    pub waited: u64,
    /// Flights that waited until `lease_wait` and then called the origin themselves.
    pub wait_deadlines: u64,
    /// Flights served without Redis (unreachable, too slow, or an unreadable value).
    pub degraded: u64,
    /// Values not written because their lease was gone when the load ended:
    /// it expired (and was perhaps taken over), or an invalidation deleted it.
    pub leases_lost: u64,
    /// Values this replica wrote into Redis (with its lease). Summed over
    /// the fleet, `origin_calls / stores` is the origin calls per stored
    /// value: 1 when each expiry is recomputed once.
    pub stores: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) early_refreshes: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) origin_calls: AtomicU64,
    pub(super) waited: AtomicU64,
    pub(super) wait_deadlines: AtomicU64,
    pub(super) degraded: AtomicU64,
    pub(super) leases_lost: AtomicU64,
    pub(super) stores: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> RedisStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            hits: get(&self.hits),
            early_refreshes: get(&self.early_refreshes),
            stale: get(&self.stale),
            origin_calls: get(&self.origin_calls),
            waited: get(&self.waited),
            wait_deadlines: get(&self.wait_deadlines),
            degraded: get(&self.degraded),
            leases_lost: get(&self.leases_lost),
            stores: get(&self.stores),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

//! The [`RedisStore`]: shared state (the link, the flights of this replica,
//! counts) and its lookups for the cache.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tower_service::Service;

use super::builder::Redis;
use super::entry::RedisValue;
use super::error::Unavailable;
use super::fill::serve;
use super::lease::{self, Names};
use super::link::Link;
use super::stats::{Counters, RedisStats};
use crate::BoxError;
use crate::cache::policy::Freshness;
use crate::cache::{Draws, Looked, Served, Store, StoreBuilder, StoreFor, sealed};
use crate::flight::{Call, Joined, Table};
use crate::rng::RngSource;

/// A cache store in Redis, shared by every replica that builds one with the
/// same server and prefix; put a [`CacheLayer`](crate::cache::CacheLayer)
/// in front of it. Clones share the connection and the in-process flights.
pub struct RedisStore<K, T> {
    pub(super) shared: Arc<Shared<K, T>>,
}

pub(super) struct Shared<K, T> {
    pub(super) link: Link,
    pub(super) config: Config,
    pub(super) keep: fn(&T) -> bool,
    pub(super) flights: Arc<Table<K, (T, Served)>>,
    /// Keys this replica is refreshing in the background.
    pub(super) refreshing: Mutex<HashSet<K>>,
    pub(super) rng: RngSource,
    pub(super) counters: Counters,
    /// Flights polling for another replica's load right now.
    pub(super) waiting: Arc<AtomicUsize>,
}

#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) prefix: String,
    pub(super) freshness: Freshness,
    pub(super) lease_ttl: Duration,
    pub(super) lease_wait: Duration,
}

impl<K, T> RedisStore<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    /// A builder for a store on `server`: a URL
    /// (`redis://[user:password@]host:port/db`, `rediss://…` for TLS,
    /// `unix:///path/to/socket`), or a [`Server`](super::Server) (a
    /// cluster, a certificate authority).
    pub fn builder(server: impl Into<super::Server>) -> StoreBuilder<Redis<K, T>> {
        StoreBuilder::new(Redis::new(server.into()))
    }

    /// What the store has done so far.
    pub fn stats(&self) -> RedisStats {
        self.shared.counters.snapshot()
    }

    /// Whether Redis is currently considered unreachable (requests go to
    /// the origin until a reconnection succeeds).
    pub fn is_degraded(&self) -> bool {
        self.shared.link.is_down()
    }

    /// Flights of this replica waiting, right now, for a value that another
    /// replica (or another flight) holds the lease for.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Background refreshes (early or stale) in progress in this replica.
    pub fn refreshes_in_progress(&self) -> usize {
        self.refreshing().len()
    }

    /// Flights (one per key) in progress in this replica.
    pub fn flights_in_progress(&self) -> usize {
        self.shared.flights.len()
    }

    /// Deletes `key`'s value in Redis: the next request for it, on any
    /// replica, loads it.
    ///
    /// As a memcache delete does, this also invalidates the lease of a load
    /// in progress, on any replica: that load still answers the callers
    /// waiting for it, but its write is refused, so a value read before the
    /// invalidation is never stored after it. In this replica, a request
    /// after the invalidation starts a flight of its own.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] if Redis could not be reached.
    pub async fn invalidate(&self, key: &K) -> Result<(), Unavailable> {
        self.shared.flights.fence(key);
        let names = self.names(key);
        lease::invalidate(&self.shared.link, &names)
            .await
            .ok_or(Unavailable::new())
    }

    pub(super) fn names(&self, key: &K) -> Names {
        Names::new(&self.shared.config.prefix, key)
    }

    pub(super) fn refreshing(&self) -> MutexGuard<'_, HashSet<K>> {
        self.shared
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, T> sealed::Sealed for RedisStore<K, T> {}

impl<K, T> Store for RedisStore<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = T;

    fn draws(&self) -> Draws {
        Draws::new(&self.shared.rng)
    }
}

impl<K, T, S, Req> StoreFor<S, Req> for RedisStore<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    fn lookup(&self, key: K, service: &mut S, request: Req, _: &mut Draws) -> Looked<K, T> {
        match self.shared.flights.join(key.clone()) {
            Joined::Follower(waiter) => Looked::flight(waiter, None),
            Joined::Leader(starter) => {
                // The flight may call the origin later (or never): it takes
                // the service that `poll_ready` readied, and leaves a clone.
                let clone = service.clone();
                let service = std::mem::replace(service, clone);
                let rng = self.shared.rng.stream().independent();
                let call: Call<(T, Served)> =
                    Box::pin(serve(self.clone(), key, service, request, rng));
                Looked::flight(starter.start(call), None)
            }
        }
    }
}

impl<K, T> Clone for RedisStore<K, T> {
    fn clone(&self) -> Self {
        RedisStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, T> fmt::Debug for RedisStore<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("link", &self.shared.link)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

//! The Redis store's own settings, on the cache's
//! [`StoreBuilder`](crate::cache::StoreBuilder): a server, a prefix, leases
//! and a deadline per command.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::entry::RedisValue;
use super::link::Link;
use super::server::Server;
use super::stats::Counters;
use super::store::{Config, RedisStore, Shared};
use crate::cache::StoreBuilder;
use crate::cache::policy::{Fields, at_most_max_life};
use crate::error::ConfigError;
use crate::flight::Table;

/// The Redis store's own settings, set on its [`StoreBuilder`] (made by
/// [`RedisStore::builder`]).
pub struct Redis<K, T> {
    server: Server,
    prefix: String,
    lease_ttl: Duration,
    lease_wait: Option<Duration>,
    op_timeout: Duration,
    keep: fn(&T) -> bool,
    _types: PhantomData<fn() -> K>,
}

impl<K, T> Redis<K, T> {
    pub(super) fn new(server: Server) -> Self {
        Redis {
            server,
            prefix: "dephase:".to_owned(),
            lease_ttl: Duration::from_secs(5),
            lease_wait: None,
            op_timeout: Duration::from_millis(200),
            keep: |_| true,
            _types: PhantomData,
        }
    }
}

impl<K, T> fmt::Debug for Redis<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("server", &self.server)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("lease_wait", &self.lease_wait)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, T> StoreBuilder<Redis<K, T>>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    /// Prepended to every Redis key (default `dephase:`): one prefix per
    /// cache, the same on every replica.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.backend.prefix = prefix.into();
        self
    }

    /// How long a filler's lease lasts if it is not freed (default 5 s): set
    /// it above the slowest load. A holder that dies loses it after this.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.backend.lease_ttl = ttl;
        self
    }

    /// How long a replica waits for another replica's load before calling
    /// the origin itself (default: the lease TTL).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.backend.lease_wait = Some(wait);
        self
    }

    /// The deadline of every Redis command, and of connecting (default 200 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.backend.op_timeout = timeout;
        self
    }

    /// Writes a loaded value only if `keep(&value)` (default: every value
    /// that [`is_storable`](RedisValue::is_storable)). A value that is not
    /// kept still goes to the callers that waited for it in this replica;
    /// its lease is freed, and a replica waiting for it loads on its own.
    /// For HTTP: `store_if(dephase::http::Collected::is_cacheable)`.
    pub fn store_if(mut self, keep: fn(&T) -> bool) -> Self {
        self.backend.keep = keep;
        self
    }

    /// Checks the settings. Does not connect: the first request does, and a
    /// store whose Redis is unreachable serves from the origin. The seed
    /// makes the XFetch draws, the TTL jitter and the polling jitter
    /// reproducible (lease tokens stay random).
    ///
    /// # Errors
    ///
    /// A URL that is not a Redis URL (`redis.url`), a zero TTL (`redis.ttl`),
    /// a β that is not positive and finite (`redis.beta`), a zero lease TTL
    /// (`redis.lease_ttl`), a zero `op_timeout` (`redis.op_timeout`); a TTL
    /// (with its jitter and stale window), lease TTL, lease wait or
    /// `op_timeout` over 100 years; `stale_if_error` or `negative_ttl`, which
    /// this store does not keep (`redis.stale_if_error`, `redis.negative_ttl`).
    pub fn build(self) -> Result<RedisStore<K, T>, ConfigError> {
        let rng = self.rng();
        let Redis {
            server,
            prefix,
            lease_ttl,
            lease_wait,
            op_timeout,
            keep,
            ..
        } = self.backend;
        let client = server.open("redis.url", "redis.root_certificate", op_timeout)?;
        let positive = |field, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(field, "must be greater than zero"))
            } else {
                Ok(d)
            }
        };
        let freshness = self.freshness.check(&Fields {
            ttl: "redis.ttl",
            beta: "redis.beta",
            negative_ttl: "redis.negative_ttl",
        })?;
        if !freshness.stale_if_error.is_zero() {
            return Err(ConfigError::new(
                "redis.stale_if_error",
                "is not kept by the Redis store (values leave Redis at the end of their stale window)",
            ));
        }
        if freshness.negative_ttl.is_some() {
            return Err(ConfigError::new(
                "redis.negative_ttl",
                "is not kept by the Redis store (errors are never written to Redis)",
            ));
        }
        let lease_ttl = positive("redis.lease_ttl", lease_ttl)?;
        let op_timeout = positive("redis.op_timeout", op_timeout)?;
        at_most_max_life("redis.lease_ttl", lease_ttl)?;
        at_most_max_life("redis.op_timeout", op_timeout)?;
        let lease_wait = at_most_max_life("redis.lease_wait", lease_wait.unwrap_or(lease_ttl))?;
        Ok(RedisStore {
            shared: Arc::new(Shared {
                link: Link::new(
                    client,
                    op_timeout,
                    "falling back to in-process coalescing and the origin",
                    "leases and the shared store are back in use",
                ),
                config: Config {
                    prefix,
                    freshness,
                    lease_ttl,
                    lease_wait,
                },
                keep,
                flights: Table::new(),
                refreshing: Mutex::new(HashSet::new()),
                rng,
                counters: Counters::default(),
                waiting: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }
}

//! What a [`Cache`](super::Cache) needs from a store: the answer to one
//! request's lookup, either now (an in-process hit, answered inside `call`
//! without a future of its own) or as a place in the key's flight (a miss,
//! a refresh; every lookup of a Redis store). The two stores are
//! [`MemoryStore`](super::MemoryStore) and, with the `redis` feature,
//! `redis::RedisStore`; the traits are sealed.

use std::hash::Hash;
use std::time::Duration;

use crate::BoxError;
use crate::flight::Waiter;
use crate::rng::{RngSource, Stream};

/// A store a [`Cache`](super::Cache) keeps its values in. Implemented by
/// [`MemoryStore`](super::MemoryStore) and `redis::RedisStore`; sealed.
pub trait Store: Clone + sealed::Sealed {
    /// The key type.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    /// The value type (the inner service's response).
    type Value: Clone + Send + Sync + 'static;

    /// A random stream for one cache service.
    #[doc(hidden)]
    fn draws(&self) -> Draws;
}

/// A store that can look values up for requests `Req` to a service `S`
/// (it may call `S` to load or refresh them). Sealed.
pub trait StoreFor<S, Req>: Store {
    /// Looks `key` up for one request; `service` was made ready for it, and
    /// is called (now, or moved into a flight) when the value must be loaded.
    #[doc(hidden)]
    fn lookup(
        &self,
        key: Self::Key,
        service: &mut S,
        request: Req,
        draws: &mut Draws,
    ) -> Looked<Self::Key, Self::Value>;
}

pub(crate) mod sealed {
    /// Keeps the store traits to this crate's stores.
    pub trait Sealed {}
}

/// A random stream for one cache service (XFetch draws, TTL jitter): no
/// shared state touched per request. Made at the service's first draw: a
/// cache service is cloned for every request that goes through a layer
/// that clones what it readies (fan-out, retry), and most clones never
/// draw.
#[derive(Debug)]
#[doc(hidden)]
pub struct Draws {
    source: RngSource,
    stream: Option<Stream>,
}

impl Draws {
    pub(crate) fn new(source: &RngSource) -> Draws {
        Draws {
            source: source.clone(),
            stream: None,
        }
    }

    pub(crate) fn fraction(&mut self) -> u64 {
        self.stream
            .get_or_insert_with(|| self.source.stream().independent())
            .fraction()
    }
}

/// How a request was served, for telemetry; shared by every caller of a
/// flight. Small (it is carried by every answer).
/// Kept as whole words (24 bytes, no padding between small fields), so
/// that building one on a hit and moving it are plain word copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Served {
    /// On a hit: nanoseconds until the value expires (saturated below
    /// `u64::MAX`); `u64::MAX` otherwise.
    expires_in: u64,
    /// Redis: nanoseconds spent polling for another replica's load.
    waited: u64,
    result: CacheResult,
    lease: Option<Lease>,
}

/// `Served::expires_in` when there is none.
const NO_EXPIRY: u64 = u64::MAX;

/// What the cache did (`dephase.cache.result`), in the order of
/// `telemetry::CACHE_RESULT_NAMES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheResult {
    Hit = 0,
    Miss = 1,
    EarlyRefresh = 2,
    Stale = 3,
}

/// How a Redis fill went across replicas (`dephase.redis.lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Lease {
    /// The value was in Redis.
    None,
    Acquired,
    Waited,
    Deadline,
    Degraded,
}

impl Lease {
    fn as_str(self) -> &'static str {
        match self {
            Lease::None => "none",
            Lease::Acquired => "acquired",
            Lease::Waited => "waited",
            Lease::Deadline => "deadline",
            Lease::Degraded => "degraded",
        }
    }
}

impl Served {
    pub(crate) const MISS: CacheResult = CacheResult::Miss;
    pub(crate) const STALE: CacheResult = CacheResult::Stale;

    pub(crate) const fn new(result: CacheResult) -> Served {
        Served {
            expires_in: NO_EXPIRY,
            waited: 0,
            result,
            lease: None,
        }
    }

    /// A hit (or an early refresh), expiring in `expires_in`.
    pub(crate) fn hit(result: CacheResult, expires_in: Option<Duration>) -> Served {
        Served {
            expires_in: expires_in.map_or(NO_EXPIRY, |left| {
                crate::clock::nanos(left).min(NO_EXPIRY - 1)
            }),
            ..Served::new(result)
        }
    }

    /// A hit expiring in `nanos` nanoseconds.
    #[inline]
    pub(crate) const fn hit_in_nanos(result: CacheResult, nanos: u64) -> Served {
        Served {
            expires_in: if nanos < NO_EXPIRY {
                nanos
            } else {
                NO_EXPIRY - 1
            },
            ..Served::new(result)
        }
    }

    /// The same, served through a Redis fill.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn leased(self, lease: Lease, waited: Duration) -> Served {
        Served {
            lease: Some(lease),
            waited: crate::clock::nanos(waited),
            ..self
        }
    }

    /// On a hit: how long until the value expires.
    pub(crate) fn expires_in(&self) -> Option<Duration> {
        (self.expires_in != NO_EXPIRY).then(|| Duration::from_nanos(self.expires_in))
    }

    /// Redis: time spent polling for another replica's load.
    pub(crate) fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited)
    }

    pub(crate) fn result(&self) -> &'static str {
        crate::telemetry::CACHE_RESULT_NAMES[self.result_index()]
    }

    /// The result as an index into `telemetry::CACHE_RESULT_NAMES`.
    pub(crate) fn result_index(&self) -> usize {
        self.result as usize
    }

    pub(crate) fn lease(&self) -> Option<&'static str> {
        self.lease.map(Lease::as_str)
    }
}

/// The answer to one lookup: now, or from the key's flight.
#[doc(hidden)]
pub struct Looked<K: Hash + Eq + Clone, T: Clone> {
    pub(crate) kind: LookedKind<K, T>,
}

pub(crate) enum LookedKind<K: Hash + Eq + Clone, T: Clone> {
    /// Answered from the store.
    Now(Result<T, BoxError>, Served),
    /// Waits for the key's flight; `stale` is served if it fails.
    Flight {
        waiter: Waiter<K, (T, Served)>,
        stale: Option<T>,
    },
}

impl<K: Hash + Eq + Clone, T: Clone> Looked<K, T> {
    pub(crate) fn now(answer: Result<T, BoxError>, served: Served) -> Self {
        Looked {
            kind: LookedKind::Now(answer, served),
        }
    }

    pub(crate) fn flight(waiter: Waiter<K, (T, Served)>, stale: Option<T>) -> Self {
        Looked {
            kind: LookedKind::Flight { waiter, stale },
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> std::fmt::Debug for Looked<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            LookedKind::Now(_, served) => served.result(),
            LookedKind::Flight { .. } => "flight",
        };
        f.debug_struct("Looked").field("kind", &kind).finish()
    }
}

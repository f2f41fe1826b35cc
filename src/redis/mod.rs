//! A cache shared by every replica through Redis, with leases so that one
//! replica in the whole fleet refills an expired key (feature `redis`,
//! which needs Rust 1.88: the `redis` crate's minimum).
//!
//! # Why
//!
//! In-process coalescing ([`coalesce`](crate::coalesce),
//! [`cache`](crate::cache)) gives one recompute per key *per replica*: a
//! fleet of 50 replicas still sends 50 recomputes to the origin at every
//! expiry. Facebook's memcache leases (Nishtala et al., "Scaling Memcache
//! at Facebook", NSDI 2013) let one filler per key through across the whole
//! fleet; they cut a herd-prone key's peak database rate from 17K/s to
//! 1.3K/s. This module does the same on Redis.
//!
//! # What happens to a request
//!
//! Requests are grouped by a key function, as in [`cache`](crate::cache)
//! (`None`: not cached). Within one replica, concurrent requests for a key
//! share one flight (one Redis round trip, at most one origin call). The
//! flight asks Redis, in one round trip, for the value or the lease:
//!
//! - **hit**: the value. XFetch (`now − Δ·β·ln(U) ≥ expiry`, with `Δ` the
//!   time the value took to compute, stored beside it so that every replica
//!   decides the same way) may also start an **early refresh** in the
//!   background; the refresh first takes the lease (`SET NX PX`), so across
//!   the fleet one replica refreshes.
//! - **stale**: past its freshness but within `stale_while_revalidate`: the
//!   old value, and a background refresh (again behind the lease).
//! - **miss, lease taken**: this replica calls the origin, then writes the
//!   value — only if its lease token is still the current one — and frees
//!   the lease. A failed or cancelled load frees the lease at once.
//! - **miss, lease held elsewhere**: this replica polls Redis at jittered,
//!   growing intervals (5 ms doubling to 50 ms, equal jitter) until the value
//!   is there, or the lease is free again (its holder failed or died: the
//!   lease expires by itself after `lease_ttl`), which it then takes. If
//!   neither happens before `lease_wait`, it calls the origin itself.
//!
//! Freshness is judged on Redis's clock (values are written with `PX`, read
//! with `PTTL`), so replicas with skewed clocks agree. Errors are not cached;
//! values are encoded by [`RedisValue`].
//!
//! # When Redis is slow or down
//!
//! Every Redis command has a deadline (`op_timeout`, 200 ms by default). A
//! command that fails sends its request to the origin (still coalesced
//! within the replica) — no request fails because of Redis. One that could
//! not reach Redis (refused, dropped, timed out) also marks Redis down: for
//! a jittered, growing delay (100 ms to 5 s) nothing is sent to Redis at
//! all, then the next request reconnects. An error *reply* (`WRONGTYPE`
//! under a key of another program's, `LOADING`, `OOM`...) does not: Redis
//! answered. A `WARN`
//! event (target `dephase::redis`) says when Redis is lost, an `INFO` event
//! when it is back. [`RedisStore::stats`] counts what happened.
//!
//! # A near cache
//!
//! Each hit here is one Redis round trip. For a hot key, put an in-process
//! [`CacheLayer`](crate::cache::CacheLayer) with a short TTL in front:
//! moka answers most requests, and its misses and refreshes come here.
//!
//! # Fleet-wide coalescing without a cache
//!
//! The lease is also how to coalesce one call across replicas when the
//! result is not meant to be cached: a store whose `ttl` is how long a
//! result may be handed to late arrivals (a second, say), with early
//! refresh off. Concurrent requests of the whole fleet then make one call;
//! the other replicas read its result from Redis.
//!
//! # Telemetry
//!
//! Each request records `dephase.cache.result` (`hit`, `miss`,
//! `early_refresh`, `stale`), on a hit `dephase.cache.expires_in_ms`, on a
//! load `dephase.cache.ttl_offset_ms`, and [`REDIS_LEASE`] and
//! [`REDIS_WAIT_MS`] (the jittered waits it applied while another replica
//! held the lease).
//!
//! [`REDIS_LEASE`]: crate::telemetry::REDIS_LEASE
//! [`REDIS_WAIT_MS`]: crate::telemetry::REDIS_WAIT_MS
//!
//! ```
//! use std::time::Duration;
//! use dephase::redis::{RedisCacheLayer, RedisStore};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dephase::BoxError> {
//! // Every replica builds the same store; port 1 has no Redis here, so
//! // this example also shows the fallback: requests go to the origin.
//! let store = RedisStore::builder("redis://127.0.0.1:1/")
//!     .prefix("users:")
//!     .ttl(Duration::from_secs(60))
//!     .lease_ttl(Duration::from_secs(5))
//!     .build()?;
//! let users = ServiceBuilder::new()
//!     .layer(RedisCacheLayer::new(store.clone(), |id: &u32| Some(*id)))
//!     .service(tower::service_fn(|id: u32| async move {
//!         Ok::<_, std::io::Error>(format!("user {id}"))
//!     }));
//!
//! assert_eq!(users.oneshot(7).await?, "user 7");
//! assert_eq!(store.stats().degraded, 1); // Redis unreachable: served by the origin
//! # Ok(()) }
//! ```

mod entry;
mod error;
pub mod future;
mod layer;
mod lease;
mod link;

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;
use tracing::Level;

pub use self::entry::RedisValue;
use self::entry::{Header, decode, encode, fresh_for};
pub use self::error::Unavailable;
pub use self::future::ResponseFuture;
pub use self::layer::RedisCacheLayer;
use self::lease::{Found, Names};
use self::link::Link;
use crate::BoxError;
use crate::cache::entry::refresh_early;
use crate::cache::{TtlJitter, at_most_max_life, check_freshness};
use crate::coalesce::{Call, Joined, Table};
use crate::error::ConfigError;
use crate::rng::{RngSource, Stream};
use crate::telemetry::{self, CACHE_TTL_OFFSET_MS};

/// How a request was served, shared by every caller of a flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    result: &'static str,
    lease: &'static str,
    expires_in: Option<Duration>,
    waited: Duration,
}

#[derive(Debug, Clone)]
struct Config {
    prefix: String,
    ttl: Duration,
    beta: f64,
    xfetch: bool,
    jitter: TtlJitter,
    stale_while_revalidate: Duration,
    lease_ttl: Duration,
    lease_wait: Duration,
}

/// Counts of what a [`RedisStore`] did, since it was built.
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
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    early_refreshes: AtomicU64,
    stale: AtomicU64,
    origin_calls: AtomicU64,
    waited: AtomicU64,
    wait_deadlines: AtomicU64,
    degraded: AtomicU64,
    leases_lost: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A cache store in Redis, shared by every replica that builds one with the
/// same server and prefix. Clones share the connection and the in-process
/// flights.
pub struct RedisStore<K, T> {
    shared: Arc<Shared<K, T>>,
}

struct Shared<K, T> {
    link: Link,
    config: Config,
    keep: fn(&T) -> bool,
    flights: Arc<Table<K, (T, Served)>>,
    /// Keys this replica is refreshing in the background.
    refreshing: Mutex<HashSet<K>>,
    rng: RngSource,
    counters: Counters,
    /// Flights polling for another replica's load right now.
    waiting: Arc<AtomicUsize>,
}

/// One flight's place in the `waiting` count.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<K, T> RedisStore<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    /// A builder for a store on the Redis server at `url`:
    /// `redis://[user:password@]host:port/db` or `unix:///path/to/socket`
    /// (TLS, `rediss://`, is not built in: such a URL is a [`ConfigError`]).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder<K, T> {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "dephase:".to_owned(),
            ttl: Duration::from_secs(60),
            beta: 1.0,
            xfetch: true,
            jitter: None,
            stale_while_revalidate: Duration::ZERO,
            lease_ttl: Duration::from_secs(5),
            lease_wait: None,
            op_timeout: Duration::from_millis(200),
            seed: None,
            keep: |_| true,
            _types: std::marker::PhantomData,
        }
    }

    /// What the store has done so far.
    pub fn stats(&self) -> RedisStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            hits: get(&c.hits),
            early_refreshes: get(&c.early_refreshes),
            stale: get(&c.stale),
            origin_calls: get(&c.origin_calls),
            waited: get(&c.waited),
            wait_deadlines: get(&c.wait_deadlines),
            degraded: get(&c.degraded),
            leases_lost: get(&c.leases_lost),
        }
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

    fn names(&self, key: &K) -> Names {
        Names::new(&self.shared.config.prefix, key)
    }

    /// A lease token: 128 random bits, unique to this process and call
    /// (never from the seeded stream: replicas with the same seed must not
    /// share tokens).
    fn token() -> String {
        let mut stream = RngSource::entropy().stream();
        format!("{:016x}{:016x}", stream.fraction(), stream.fraction())
    }
}

/// The work of one flight: look up, or lease and load, or wait.
async fn serve<S, Req, K, T>(
    store: RedisStore<K, T>,
    key: K,
    mut service: S,
    request: Req,
    mut rng: Stream,
) -> Result<(T, Served), Arc<BoxError>>
where
    S: Service<Req, Response = T> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    let shared = &store.shared;
    let config = &shared.config;
    let names = store.names(&key);
    // Made when a lease is asked for (a hit needs none).
    let mut token = String::new();
    let started = Instant::now();
    let deadline = started + config.lease_wait;
    let mut waited = Duration::ZERO;
    let mut polls = 0u32;
    // Counts this flight in `waiting` from its first poll until it ends.
    let mut _waiting = None;
    let served = |result, lease, waited| Served {
        result,
        lease,
        expires_in: None,
        waited,
    };
    // The first lookup is a plain GET + PTTL (what a hit costs); only a
    // miss runs the script that also takes the lease.
    let mut take_lease = None;
    loop {
        // The script may take the lease and its reply be lost with this
        // flight (cancelled while it waits): the guard that releases the
        // lease exists before the await that can take it.
        let mut held = take_lease.map(|_| Held::new(&store, &names, &token));
        let found = lease::lookup(&shared.link, &names, &token, take_lease).await;
        if matches!(found, Some(Found::Value(..) | Found::Held | Found::Missing)) {
            // Redis answered, and the lease is not ours.
            held.as_mut().map(Held::disarm);
        }
        if waited > Duration::ZERO && !matches!(found, Some(Found::Held)) {
            bump(&shared.counters.waited);
        }
        let lease = if waited > Duration::ZERO {
            "waited"
        } else {
            "none"
        };
        match found {
            None => {
                bump(&shared.counters.degraded);
                let value = store.call_origin(&mut service, request).await?;
                return Ok((value, served("miss", "degraded", waited)));
            }
            Some(Found::Value(bytes, pttl)) => {
                let Some((header, value)) = decode::<T>(&bytes) else {
                    tracing::event!(
                        target: "dephase::redis",
                        Level::WARN,
                        key = %names.value,
                        "a value in Redis could not be decoded; this request goes to the origin"
                    );
                    bump(&shared.counters.degraded);
                    let value = store.call_origin(&mut service, request).await?;
                    return Ok((value, served("miss", "degraded", waited)));
                };
                let Some(fresh) = fresh_for(pttl, header.stale) else {
                    bump(&shared.counters.stale);
                    store.refresh_in_background(key, service, request, rng, pttl);
                    return Ok((value, served("stale", lease, waited)));
                };
                let now = Instant::now();
                let early = config.xfetch
                    && fresh < Duration::from_secs(u64::from(u32::MAX))
                    && refresh_early(now, header.delta, config.beta, now + fresh, || {
                        rng.fraction()
                    });
                bump(&shared.counters.hits);
                let result =
                    if early && store.refresh_in_background(key, service, request, rng, pttl) {
                        bump(&shared.counters.early_refreshes);
                        "early_refresh"
                    } else {
                        "hit"
                    };
                let expires_in = (fresh < Duration::MAX).then_some(fresh);
                return Ok((
                    value,
                    Served {
                        expires_in,
                        ..served(result, lease, waited)
                    },
                ));
            }
            Some(Found::Missing) => {
                token = RedisStore::<K, T>::token();
                take_lease = Some(config.lease_ttl);
            }
            Some(Found::Leased) => {
                let held = held.expect("a lease is taken only when asked for");
                let value = store
                    .load(&key, held, &mut service, request, &mut rng)
                    .await?;
                return Ok((value, served("miss", "acquired", waited)));
            }
            Some(Found::Held) => {
                let now = Instant::now();
                if now >= deadline {
                    bump(&shared.counters.wait_deadlines);
                    let value = store.call_origin(&mut service, request).await?;
                    return Ok((value, served("miss", "deadline", waited)));
                }
                // Equal jitter on 5 ms · 2ⁿ, at most 50 ms: replicas that
                // missed together do not poll together.
                let ceiling = (5u64 << polls.min(4)).min(50) * 1000;
                let pause =
                    Duration::from_micros(rng.in_range(ceiling / 2, ceiling)).min(deadline - now);
                polls += 1;
                _waiting.get_or_insert_with(|| Waiting::new(&shared.waiting));
                let slept = Instant::now();
                tokio::time::sleep(pause).await;
                waited += slept.elapsed(); // what was applied, not planned
            }
        }
    }
}

impl<K, T> RedisStore<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    async fn call_origin<S, Req>(&self, service: &mut S, request: Req) -> Result<T, Arc<BoxError>>
    where
        S: Service<Req, Response = T>,
        S::Error: Into<BoxError>,
    {
        bump(&self.shared.counters.origin_calls);
        service.call(request).await.map_err(|e| Arc::new(e.into()))
    }

    /// With the lease `held`: calls the origin, measures Δ, writes the value
    /// if the lease is still ours, and frees the lease (also when the load
    /// fails or is cancelled).
    async fn load<S, Req>(
        &self,
        key: &K,
        mut held: Held<K, T>,
        service: &mut S,
        request: Req,
        rng: &mut Stream,
    ) -> Result<T, Arc<BoxError>>
    where
        S: Service<Req, Response = T>,
        S::Error: Into<BoxError>,
    {
        let shared = &self.shared;
        let names = held.names.clone().expect("an armed lease");
        let token = held.token.clone();
        let names = &names;
        let started = Instant::now();
        let value = match self.call_origin(service, request).await {
            Ok(value) => value,
            Err(error) => {
                held.release().await; // the next filler need not wait for it to expire
                return Err(error);
            }
        };
        let delta = started.elapsed();
        let config = &shared.config;
        if !value.is_storable() || !(shared.keep)(&value) {
            held.release().await;
            return Ok(value);
        }
        let offset = config.jitter.offset(key, rng.fraction());
        tracing::Span::current().record(CACHE_TTL_OFFSET_MS, telemetry::millis(offset));
        telemetry::count::cache_ttl_offset(offset);
        let header = Header {
            delta,
            stale: config.stale_while_revalidate,
        };
        let bytes = encode(&value, &header);
        let life = config.ttl + offset + config.stale_while_revalidate;
        let written = lease::write(&shared.link, names, &token, &bytes, life).await;
        if written.is_some() {
            held.disarm(); // the write freed the lease (or it was not ours any more)
        }
        if written == Some(false) {
            bump(&shared.counters.leases_lost);
            tracing::event!(
                target: "dephase::redis",
                Level::WARN,
                key = %names.value,
                load_ms = telemetry::millis(delta),
                "the value was not written: its lease was gone when the load ended (the key was invalidated, or the lease expired: then raise lease_ttl)"
            );
        }
        Ok(value)
    }

    /// Starts a refresh of `key` in the background if this replica is not
    /// already refreshing it and there is a runtime: it takes the lease
    /// (so one replica of the fleet refreshes) and loads. `true` if started.
    fn refresh_in_background<S, Req>(
        &self,
        key: K,
        mut service: S,
        request: Req,
        mut rng: Stream,
        seen_pttl: i64,
    ) -> bool
    where
        S: Service<Req, Response = T> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        Req: Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if !self.refreshing().insert(key.clone()) {
            return false;
        }
        // Made before the spawn, so that the key leaves the set even if the
        // task is dropped unpolled (a runtime shutting down).
        let done = Refreshing {
            store: self.clone(),
            key,
        };
        runtime.spawn(async move {
            let Refreshing { store, key } = &done;
            let names = store.names(key);
            let token = Self::token();
            let ttl = store.shared.config.lease_ttl;
            // Armed before the await that may take the lease.
            let mut held = Held::new(store, &names, &token);
            match lease::acquire(&store.shared.link, &names, &token, ttl, seen_pttl).await {
                Some(true) => {
                    let _ = store.load(key, held, &mut service, request, &mut rng).await;
                }
                Some(false) => held.disarm(),
                None => {} // unknown: the guard releases it if it is ours
            }
        });
        true
    }

    fn refreshing(&self) -> std::sync::MutexGuard<'_, HashSet<K>> {
        self.shared
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a key off the refreshing set when its background refresh ends.
struct Refreshing<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    store: RedisStore<K, T>,
    key: K,
}

impl<K, T> Drop for Refreshing<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.store.refreshing().remove(&self.key);
    }
}

/// A lease this flight may hold: made before the command that can take
/// it, disarmed when Redis says it was not taken or the value is written;
/// freed when the load fails or its value is not stored, and in the
/// background if the flight is dropped (cancelled, or panicking) while it
/// is armed — also between the command that took the lease and its reply.
/// Freeing is conditional on the token, so a guard whose command did not
/// take the lease frees nothing.
struct Held<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    store: RedisStore<K, T>,
    names: Option<Names>,
    token: String,
}

impl<K, T> Held<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    /// A guard for the lease of `names` with `token`, armed: dropped, it
    /// releases the lease if it holds this token.
    fn new(store: &RedisStore<K, T>, names: &Names, token: &str) -> Self {
        Held {
            store: store.clone(),
            names: Some(names.clone()),
            token: token.to_owned(),
        }
    }

    /// The lease is known not to be ours (any more): nothing to release.
    fn disarm(&mut self) {
        self.names = None;
    }

    async fn release(&mut self) {
        if let Some(names) = self.names.take() {
            lease::release(&self.store.shared.link, &names, &self.token).await;
        }
    }
}

impl<K, T> Drop for Held<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        let (Some(names), Ok(runtime)) = (self.names.take(), tokio::runtime::Handle::try_current())
        else {
            return; // written, or no runtime: the lease expires by itself
        };
        let store = self.store.clone();
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move { lease::release(&store.shared.link, &names, &token).await });
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

/// Builds a [`RedisStore`]; [`build`](Self::build) checks every field.
pub struct RedisStoreBuilder<K, T> {
    url: String,
    prefix: String,
    ttl: Duration,
    beta: f64,
    xfetch: bool,
    jitter: Option<TtlJitter>,
    stale_while_revalidate: Duration,
    lease_ttl: Duration,
    lease_wait: Option<Duration>,
    op_timeout: Duration,
    seed: Option<u64>,
    keep: fn(&T) -> bool,
    _types: std::marker::PhantomData<fn() -> (K, T)>,
}

impl<K, T> RedisStoreBuilder<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    /// Prepended to every Redis key (default `dephase:`): one prefix per
    /// cache, the same on every replica.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    freshness_setters!();

    /// For how long after its freshness a value is still kept and served
    /// while one replica refreshes it (default zero).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// How long a filler's lease lasts if it is not freed (default 5 s): set
    /// it above the slowest load. A holder that dies loses it after this.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long a replica waits for another replica's load before calling
    /// the origin itself (default: the lease TTL).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = Some(wait);
        self
    }

    /// The deadline of every Redis command, and of connecting (default 200 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Writes a loaded value only if `keep(&value)` (default: every value
    /// that [`is_storable`](RedisValue::is_storable)). A value that is not
    /// kept still goes to the callers that waited for it in this replica;
    /// its lease is freed, and a replica waiting for it loads on its own.
    /// For HTTP: `store_if(dephase::http::Collected::is_cacheable)`.
    pub fn store_if(mut self, keep: fn(&T) -> bool) -> Self {
        self.keep = keep;
        self
    }

    /// Makes the XFetch draws, the TTL jitter and the polling jitter
    /// reproducible (lease tokens stay random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings. Does not connect: the first request does, and a
    /// store whose Redis is unreachable serves from the origin.
    ///
    /// # Errors
    ///
    /// A URL that is not a Redis URL (`redis.url`), a zero TTL (`redis.ttl`),
    /// a β that is not positive and finite (`redis.beta`), a zero lease TTL
    /// (`redis.lease_ttl`), a zero `op_timeout` (`redis.op_timeout`); a TTL
    /// (with its jitter and stale window), lease TTL, lease wait or
    /// `op_timeout` over 100 years.
    pub fn build(self) -> Result<RedisStore<K, T>, ConfigError> {
        let client = ::redis::Client::open(self.url.as_str())
            .map_err(|e| ConfigError::new("redis.url", e.to_string()))?;
        let positive = |field, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(field, "must be greater than zero"))
            } else {
                Ok(d)
            }
        };
        let beta = check_freshness(("redis.ttl", self.ttl), ("redis.beta", self.beta))?;
        let ttl = self.ttl;
        let lease_ttl = positive("redis.lease_ttl", self.lease_ttl)?;
        let op_timeout = positive("redis.op_timeout", self.op_timeout)?;
        let jitter = self.jitter.unwrap_or(TtlJitter::Random(ttl / 10));
        let longest =
            (ttl.saturating_add(jitter.max())).saturating_add(self.stale_while_revalidate);
        at_most_max_life("redis.ttl", longest)?;
        at_most_max_life("redis.lease_ttl", lease_ttl)?;
        at_most_max_life("redis.op_timeout", op_timeout)?;
        let lease_wait =
            at_most_max_life("redis.lease_wait", self.lease_wait.unwrap_or(lease_ttl))?;
        let config = Config {
            prefix: self.prefix,
            ttl,
            beta,
            xfetch: self.xfetch,
            jitter,
            stale_while_revalidate: self.stale_while_revalidate,
            lease_ttl,
            lease_wait,
        };
        Ok(RedisStore {
            shared: Arc::new(Shared {
                link: Link::new(client, op_timeout),
                config,
                keep: self.keep,
                flights: Table::new(),
                refreshing: Mutex::new(HashSet::new()),
                rng: RngSource::from_seed(self.seed),
                counters: Counters::default(),
                waiting: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }
}

impl<K, T> fmt::Debug for RedisStoreBuilder<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// A service in front of a [`RedisStore`].
pub struct RedisCache<S, F, K, T> {
    inner: S,
    key: F,
    store: RedisStore<K, T>,
}

impl<S, F, K, T> RedisCache<S, F, K, T> {
    /// Caches `inner`'s responses in `store`, by `key(&request)`.
    pub fn new(inner: S, store: RedisStore<K, T>, key: F) -> Self {
        RedisCache { inner, key, store }
    }

    /// The store.
    pub fn store(&self) -> &RedisStore<K, T> {
        &self.store
    }

    inner_accessors!();
}

impl<S, F, K, T, Req> Service<Req> for RedisCache<S, F, K, T>
where
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Option<K>,
    Req: Send + 'static,
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, K, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let Some(key) = (self.key)(&request) else {
            return ResponseFuture::direct(self.inner.call(request));
        };
        match self.store.shared.flights.join(key.clone()) {
            Joined::Follower(waiter) => ResponseFuture::shared(waiter),
            Joined::Leader(starter) => {
                // The flight may call the origin later (or never): it takes
                // the service that `poll_ready` readied, and leaves a clone.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let rng = self.store.shared.rng.stream().independent();
                let call: Call<(T, Served)> =
                    Box::pin(serve(self.store.clone(), key, service, request, rng));
                ResponseFuture::shared(starter.start(call))
            }
        }
    }
}

impl<S: Clone, F: Clone, K, T> Clone for RedisCache<S, F, K, T> {
    fn clone(&self) -> Self {
        RedisCache {
            inner: self.inner.clone(),
            key: self.key.clone(),
            store: self.store.clone(),
        }
    }
}

impl<S: fmt::Debug, F, K, T> fmt::Debug for RedisCache<S, F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

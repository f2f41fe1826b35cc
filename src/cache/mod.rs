//! A cache layer that refreshes hot entries before they expire (XFetch),
//! spreads expiries (TTL jitter) and lets one caller per key fill a miss.
//!
//! # Why
//!
//! When a hot key expires, every request for it misses at once and
//! recomputes it: with 1000 requests a second and a 50 ms recompute, about
//! fifty recomputes per expiry. Coalescing the misses (what moka's
//! `get_with` does) cuts that to one, but still makes fifty requests wait
//! for it at every expiry. XFetch (Vattani, Chierichetti and Lowenstein,
//! "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015) refreshes
//! an entry *before* it expires, with a probability that rises towards
//! expiry — refresh when `now − Δ·β·ln(U) ≥ expiry`, `U` uniform in (0, 1],
//! `Δ` the time the value took to compute — so that one request refreshes it
//! a little early, in the background, while everyone else keeps getting the
//! cached value. And entries written together (a cold start, a deploy)
//! expire together unless their TTLs are jittered.
//!
//! Here, per request with a key (the same key function as
//! [`coalesce`](crate::coalesce); `None` bypasses the cache):
//!
//! - **hit**: the cached value. XFetch decides whether this request also
//!   starts an **early refresh** in the background (coalesced: once per key);
//! - **stale**: past its expiry but within `stale_while_revalidate`, the old
//!   value, and a background refresh. Also, with early refresh on and
//!   without any window: while a refresh of the key is running, for up to
//!   `Δ` past expiry (the refresh is late by less than one recompute);
//! - **miss**: a coalesced load — one call per key, every concurrent caller
//!   gets its result. If the load fails and the old value is within
//!   `stale_if_error` of its expiry, the old value is served instead
//!   (**stale**), never beyond that bound.
//! - Errors are not cached, unless a `negative_ttl` is set.
//!
//! The store is a [moka](https://docs.rs/moka) cache with a required maximum
//! capacity, so memory is bounded; each entry keeps its value, `Δ` and its
//! expiry. Freshness is judged on tokio's clock (tests with paused time work).
//! Background refreshes run as tokio tasks: the inner service's future must
//! be `Send + 'static`, and without a tokio runtime no refresh is started
//! early (the entry is then loaded when it expires).
//!
//! Each request records `dephase.cache.result` (`hit`, `miss`,
//! `early_refresh`, `stale`) and, on a hit, `dephase.cache.expires_in_ms`;
//! a load records `dephase.cache.ttl_offset_ms`, the jitter it added.
//!
//! ```
//! use std::time::Duration;
//! use dephase::cache::{CacheLayer, Store, TtlJitter};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let store = Store::builder(10_000)
//!     .ttl(Duration::from_secs(60))
//!     .ttl_jitter(TtlJitter::Random(Duration::from_secs(6)))
//!     .stale_while_revalidate(Duration::from_secs(10))
//!     .build()?;
//! let users = ServiceBuilder::new()
//!     .layer(CacheLayer::new(store.clone(), |id: &u32| Some(*id)))
//!     .service(tower::service_fn(|id: u32| async move {
//!         Ok::<_, std::io::Error>(format!("user {id}"))
//!     }));
//!
//! assert_eq!(users.clone().oneshot(7).await.unwrap(), "user 7"); // miss: loaded
//! assert_eq!(users.oneshot(7).await.unwrap(), "user 7"); // hit
//! assert_eq!(store.len(), 1);
//! # Ok(()) }
//! ```

pub(crate) mod entry;
pub mod future;
mod layer;

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;
use tracing::{Level, Span};

pub use self::entry::TtlJitter;
use self::entry::{Entry, refresh_early};
pub use self::future::ResponseFuture;
pub use self::layer::CacheLayer;
use crate::BoxError;
use crate::coalesce::error::Shared;
use crate::coalesce::{Call, Fence, Joined, Table};
use crate::error::{ConfigError, check_f64};
use crate::rng::{RngSource, Stream};
use crate::telemetry::{self, CACHE_EXPIRES_IN_MS, CACHE_RESULT, CACHE_TTL_OFFSET_MS};

/// Records what the cache did for this request.
pub(crate) fn record_result(result: &'static str, expires_in: Option<Duration>) {
    let span = Span::current();
    span.record(CACHE_RESULT, result);
    telemetry::count::cache_result(result);
    let expires_in_ms = expires_in.map(telemetry::millis);
    if let Some(ms) = expires_in_ms {
        span.record(CACHE_EXPIRES_IN_MS, ms);
    }
    tracing::event!(
        target: "dephase::cache",
        Level::TRACE,
        dephase.cache.result = result,
        dephase.cache.expires_in_ms = expires_in_ms,
        "cache lookup"
    );
}

#[derive(Debug, Clone)]
struct Config {
    ttl: Duration,
    beta: f64,
    xfetch: bool,
    jitter: TtlJitter,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    negative_ttl: Option<Duration>,
}

impl Config {
    /// How long past its expiry a value may still be served (the longer of
    /// the two stale windows).
    fn stale_window(&self) -> Duration {
        self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// The cache's store: bounded entries plus the table of loads in flight.
/// Clones share both.
pub struct Store<K, T> {
    shared: Arc<StoreShared<K, T>>,
}

struct StoreShared<K, T> {
    // Entries by value: a hit clones the value anyway, and an `Arc` around
    // each entry would cost two atomic operations per hit.
    entries: moka::sync::Cache<K, Entry<T>>,
    loads: Arc<Table<K, T>>,
    config: Config,
    keep: fn(&T) -> bool,
    rng: RngSource,
}

impl<K, T> Store<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// A builder for a store of at most `max_capacity` entries.
    pub fn builder(max_capacity: u64) -> StoreBuilder<K, T> {
        StoreBuilder {
            max_capacity,
            ttl: Duration::from_secs(60),
            beta: 1.0,
            xfetch: true,
            jitter: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            negative_ttl: None,
            seed: None,
            keep: |_| true,
            _types: PhantomData,
        }
    }

    /// Entries currently held (moka's count, updated lazily).
    pub fn len(&self) -> u64 {
        self.shared.entries.run_pending_tasks();
        self.shared.entries.entry_count()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads (and refreshes) in flight.
    pub fn loads_in_flight(&self) -> usize {
        self.shared.loads.len()
    }

    /// Removes `key`'s entry; the next request for it loads it.
    ///
    /// The invalidation wins over every load of `key` that started before
    /// it: such a load still answers the callers that were waiting for it,
    /// but does not store its value, and a request that comes after the
    /// invalidation starts a load of its own instead of joining it.
    pub fn invalidate(&self, key: &K) {
        // Fence first, then remove: a load that stored before the fence is
        // removed here; one that would store after it does not.
        self.shared.loads.fence(key);
        self.shared.entries.invalidate(key);
    }

    /// The call for a load of `key`: awaits `future`, measures `Δ`, and
    /// stores the value (or, with a negative TTL, the error) unless `fence`
    /// says that the key was invalidated meanwhile.
    /// `fraction` (a uniform fraction of 2⁶⁴) draws the new entry's TTL jitter.
    fn load_call<F, E>(&self, key: K, future: F, fraction: u64, fence: Fence<K, T>) -> Call<T>
    where
        F: std::future::Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            let now = Instant::now();
            let (config, delta) = (&shared.config, now - started);
            match result {
                Ok(value) if !(shared.keep)(&value) => Ok(value),
                Ok(value) => {
                    let offset = config.jitter.offset(&key, fraction);
                    Span::current().record(CACHE_TTL_OFFSET_MS, telemetry::millis(offset));
                    telemetry::count::cache_ttl_offset(offset);
                    let life = config.ttl + offset;
                    fence.store_unless_fenced(|| {
                        store(&shared, key, Ok(value.clone()), now, delta, life);
                    });
                    Ok(value)
                }
                Err(error) => {
                    let error = Arc::new(error.into());
                    if let Some(ttl) = config.negative_ttl {
                        fence.store_unless_fenced(|| {
                            // A failure never replaces a value that is still
                            // servable (fresh, or within a stale window).
                            let servable = shared.entries.get(&key).is_some_and(|old| {
                                old.value.is_ok() && now < old.expires + config.stale_window()
                            });
                            if !servable {
                                store(&shared, key, Err(Arc::clone(&error)), now, delta, ttl);
                            }
                        });
                    }
                    Err(error)
                }
            }
        })
    }
}

/// The longest life, window or wait a store accepts: lives are added to
/// the clock (and sent to Redis as milliseconds), so they are kept far from
/// either's overflow.
pub(crate) const MAX_LIFE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `d`, unless it is over [`MAX_LIFE`].
pub(crate) fn at_most_max_life(field: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_LIFE {
        return Err(ConfigError::new(field, "must be at most 100 years"));
    }
    Ok(d)
}

/// Checks a TTL (not zero) and an XFetch β (positive and finite), shared by
/// the in-process and the Redis stores; returns β.
pub(crate) fn check_freshness(
    (ttl_field, ttl): (&'static str, Duration),
    (beta_field, beta): (&'static str, f64),
) -> Result<f64, ConfigError> {
    if ttl.is_zero() {
        return Err(ConfigError::new(ttl_field, "must be greater than zero"));
    }
    let beta = check_f64(beta_field, beta, 0.0, 1e6)?;
    if beta == 0.0 {
        return Err(ConfigError::new(beta_field, "must be greater than zero"));
    }
    Ok(beta)
}

/// Puts a freshly loaded value (or error) in the store, living `life`.
fn store<K, T>(
    shared: &StoreShared<K, T>,
    key: K,
    value: Result<T, Arc<BoxError>>,
    now: Instant,
    delta: Duration,
    life: Duration,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    let entry = Entry {
        value,
        delta,
        expires: now + life,
    };
    shared.entries.insert(key, entry);
}

impl<K, T> Clone for Store<K, T> {
    fn clone(&self) -> Self {
        Store {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, T> fmt::Debug for Store<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Store`]; [`build`](Self::build) checks every field.
pub struct StoreBuilder<K, T> {
    max_capacity: u64,
    ttl: Duration,
    beta: f64,
    xfetch: bool,
    jitter: Option<TtlJitter>,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    negative_ttl: Option<Duration>,
    seed: Option<u64>,
    keep: fn(&T) -> bool,
    _types: PhantomData<fn() -> (K, T)>,
}

impl<K, T> StoreBuilder<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    freshness_setters!();

    /// For how long after expiry the old value is still served while a
    /// background refresh runs (default zero).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// For how long after expiry the old value is served when the load
    /// that should replace it fails (default zero).
    pub fn stale_if_error(mut self, bound: Duration) -> Self {
        self.stale_if_error = bound;
        self
    }

    /// Caches errors for `ttl` (default: errors are not cached).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Stores a loaded value only if `keep(&value)` (default: every value).
    /// A value that is not kept is still handed to the callers that waited
    /// for the load. For HTTP, keep only complete, successful responses:
    /// `store_if(dephase::http::Collected::is_cacheable)`.
    pub fn store_if(mut self, keep: fn(&T) -> bool) -> Self {
        self.keep = keep;
        self
    }

    /// Makes the XFetch draws and the random TTL jitter reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A zero capacity (`cache.max_capacity`), a zero TTL (`cache.ttl`), a
    /// β that is not positive and finite (`cache.beta`), a zero negative TTL
    /// (`cache.negative_ttl`); a TTL (with its jitter and the longer of the
    /// stale windows) or a negative TTL over 100 years.
    pub fn build(self) -> Result<Store<K, T>, ConfigError> {
        if self.max_capacity == 0 {
            return Err(ConfigError::new("cache.max_capacity", "must be at least 1"));
        }
        let beta = check_freshness(("cache.ttl", self.ttl), ("cache.beta", self.beta))?;
        let jitter = self.jitter.unwrap_or(TtlJitter::Random(self.ttl / 10));
        let longest = (self.ttl.saturating_add(jitter.max()))
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error));
        at_most_max_life("cache.ttl", longest)?;
        at_most_max_life("cache.negative_ttl", self.negative_ttl.unwrap_or_default())?;
        if self.negative_ttl.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "cache.negative_ttl",
                "must be greater than zero",
            ));
        }
        let config = Config {
            ttl: self.ttl,
            beta,
            xfetch: self.xfetch,
            jitter,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            negative_ttl: self.negative_ttl,
        };
        // No moka expiry policy: freshness is judged on tokio's clock at
        // every lookup, a stale entry is replaced by its next load, and the
        // capacity bounds memory. (A per-entry moka expiry roughly doubles
        // the cost of a hit.)
        let entries = moka::sync::Cache::builder()
            .max_capacity(self.max_capacity)
            .build();
        Ok(Store {
            shared: Arc::new(StoreShared {
                entries,
                loads: Table::new(),
                config,
                keep: self.keep,
                rng: RngSource::from_seed(self.seed),
            }),
        })
    }
}

impl<K, T> fmt::Debug for StoreBuilder<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("ttl", &self.ttl)
            .field("beta", &self.beta)
            .finish_non_exhaustive()
    }
}

/// A service in front of a [`Store`].
pub struct Cache<S, F, K, T> {
    inner: S,
    key: F,
    store: Store<K, T>,
    rng: Stream,
}

impl<S, F, K, T> Cache<S, F, K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Caches `inner`'s responses in `store`, by `key(&request)`.
    pub fn new(inner: S, store: Store<K, T>, key: F) -> Self {
        let rng = store.shared.rng.stream().independent();
        Cache {
            inner,
            key,
            store,
            rng,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store<K, T> {
        &self.store
    }

    inner_accessors!();
}

impl<S, F, K, T, Req> Service<Req> for Cache<S, F, K, T>
where
    S: Service<Req, Response = T>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Option<K>,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
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
        let shared = &self.store.shared;
        let config = &shared.config;
        let mut stale = None;
        if let Some(entry) = shared.entries.get(&key) {
            let now = Instant::now();
            let answer = || {
                entry
                    .value
                    .clone()
                    .map_err(|e| -> BoxError { Box::new(Shared::new(e)) })
            };
            if now < entry.expires {
                let expires_in = Some(entry.expires - now);
                let early = config.xfetch
                    && entry.value.is_ok()
                    && refresh_early(now, entry.delta, config.beta, entry.expires, || {
                        self.rng.fraction()
                    });
                if early && self.refresh_in_background(key, request) {
                    return ResponseFuture::answered(answer(), "early_refresh", expires_in);
                }
                return ResponseFuture::answered(answer(), "hit", expires_in);
            }
            if let Ok(value) = &entry.value {
                if now < entry.expires + config.stale_while_revalidate {
                    let value = value.clone();
                    self.refresh_in_background(key, request);
                    return ResponseFuture::answered(Ok(value), "stale", None);
                }
                // With early refresh on, a refresh that is still running
                // when the value expires (it started less than Δ before)
                // is not waited for while within Δ of the expiry: that is
                // the time the value took to compute last time.
                if config.xfetch && now < entry.expires + entry.delta && shared.loads.contains(&key)
                {
                    return ResponseFuture::answered(Ok(value.clone()), "stale", None);
                }
                if now < entry.expires + config.stale_if_error {
                    stale = Some(value.clone());
                }
            }
        }
        match shared.loads.join(key.clone()) {
            Joined::Follower(waiter) => ResponseFuture::load(waiter, stale),
            Joined::Leader(starter) => {
                let call = self.store.load_call(
                    key,
                    self.inner.call(request),
                    self.rng.fraction(),
                    starter.fence(),
                );
                ResponseFuture::load(starter.start(call), stale)
            }
        }
    }
}

impl<S, F, K, T> Cache<S, F, K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Starts a load of `key` that nobody waits for, unless one is already
    /// in flight (or there is no runtime to run it on). `true` if started.
    fn refresh_in_background<Req>(&mut self, key: K, request: Req) -> bool
    where
        S: Service<Req, Response = T>,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let Some(starter) = self.store.shared.loads.lead(key.clone()) else {
            return false; // a load of this key is already running
        };
        let call = self.store.load_call(
            key,
            self.inner.call(request),
            self.rng.fraction(),
            starter.fence(),
        );
        let mut waiter = starter.start(call);
        runtime.spawn(async move {
            let _ = std::future::poll_fn(|cx| waiter.poll(cx)).await;
        });
        true
    }
}

impl<S: Clone, F: Clone, K, T> Clone for Cache<S, F, K, T> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            key: self.key.clone(),
            rng: self.store.shared.rng.stream().independent(),
            store: self.store.clone(),
        }
    }
}

impl<S: fmt::Debug, F, K, T> fmt::Debug for Cache<S, F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

//! The in-process store: a bounded moka cache of entries, and the table of
//! loads in flight.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use super::builder::{Memory, StoreBuilder};
use super::error::SharedError;
use super::policy::{Age, Freshness, Verdict, early_window};
use super::store::{CacheResult, Draws, Looked, Served, Store, StoreFor, sealed};
use crate::BoxError;
use crate::clock::{self, Clock};
use crate::flight::{Call, Fence, Joined, Table};
use crate::rng::RngSource;
use crate::tally::Lanes;
use crate::telemetry::{self, CACHE_TTL_OFFSET_MS};

/// One cached value with what XFetch needs: how long it took to compute.
#[derive(Debug, Clone)]
struct Entry<T> {
    /// The value, or (with a negative TTL) the error, shared.
    value: Result<T, Arc<BoxError>>,
    /// Δ: how long the computation took.
    delta: Duration,
    /// When it expires, as a reading of the store's clock (nanoseconds):
    /// a hit compares two integers.
    expires: u64,
    /// Until when (a reading of the store's clock) a hit cannot refresh it
    /// early (see `policy::early_window`): most hits decide on this alone.
    quiet_until: u64,
}

impl<T> Entry<T> {
    fn age(&self, now: u64) -> Age {
        match self.expires.checked_sub(now) {
            Some(left) if left != 0 => Age::Fresh {
                left: Duration::from_nanos(left),
            },
            _ => Age::Expired {
                ago: Duration::from_nanos(now.saturating_sub(self.expires)),
            },
        }
    }
}

/// The in-process store: bounded entries plus the table of loads in
/// flight. Clones share both.
///
/// ```
/// use std::time::Duration;
/// use dephase::cache::MemoryStore;
///
/// let store = MemoryStore::<u32, String>::builder(10_000)
///     .ttl(Duration::from_secs(60))
///     .build()?;
/// assert!(store.is_empty());
/// # Ok::<(), dephase::ConfigError>(())
/// ```
pub struct MemoryStore<K, T> {
    shared: Arc<Shared<K, T>>,
}

struct Shared<K, T> {
    // Entries by value: a hit clones the value anyway, and an `Arc` around
    // each entry would cost two atomic operations per hit.
    entries: moka::sync::Cache<K, Entry<T>>,
    loads: Arc<Table<K, (T, Served)>>,
    freshness: Freshness,
    keep: fn(&T) -> bool,
    rng: RngSource,
    counts: Counts,
    /// Judges freshness on a hit (coarse: see `crate::clock`).
    clock: Clock,
}

/// The counters behind [`MemoryStore::stats`], in lanes (a hit is
/// counted with a load and a store, no atomic read-modify-write).
#[derive(Debug, Default)]
struct Counts(Lanes<6>);

/// Which of [`Counts`]' counters.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Hits,
    EarlyRefreshes,
    Stale,
    Misses,
    Loads,
    Stores,
}

impl Counts {
    #[inline]
    fn add(&self, counted: Counted) {
        self.0.add(counted as usize);
    }

    fn get(&self, counted: Counted) -> u64 {
        self.0.get(counted as usize)
    }
}

/// What a [`MemoryStore`] has done since it was built (every clone counts
/// into the same numbers). Each lookup is exactly one of a hit, a stale
/// answer or a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Lookups answered by a fresh value (or a cached error), early
    /// refreshes included.
    pub hits: u64,
    /// Hits that also started an early (XFetch) refresh in the background.
    pub early_refreshes: u64,
    /// Lookups answered by an expired value within the stale window, while
    /// a refresh ran in the background.
    pub stale: u64,
    /// Lookups that waited for a load: the first of a key (which started
    /// it) and every one that joined it.
    pub misses: u64,
    /// Calls to the inner service: loads and refreshes (early or stale).
    pub loads: u64,
    /// Values (and, with a negative TTL, errors) written into the store.
    /// `loads / stores` is the number of origin calls per stored value —
    /// 1 when every expiry is recomputed once.
    pub stores: u64,
}

impl<K, T> MemoryStore<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// A builder for a store of at most `max_capacity` entries.
    pub fn builder(max_capacity: u64) -> StoreBuilder<Memory<K, T>> {
        StoreBuilder::new(Memory::new(max_capacity))
    }

    pub(super) fn from_parts(
        max_capacity: u64,
        freshness: Freshness,
        keep: fn(&T) -> bool,
        rng: RngSource,
    ) -> Self {
        // No moka expiry policy: freshness is judged on the store's clock at
        // every lookup, a stale entry is replaced by its next load, and the
        // capacity bounds memory. (A per-entry moka expiry roughly doubles
        // the cost of a hit.)
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_capacity)
            .build();
        // Freshness is judged to a tenth of the shortest life or stale
        // window, at worst.
        let shortest = [
            Some(freshness.ttl),
            freshness.negative_ttl,
            Some(freshness.stale_while_revalidate).filter(|d| !d.is_zero()),
            Some(freshness.stale_if_error).filter(|d| !d.is_zero()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(freshness.ttl);
        MemoryStore {
            shared: Arc::new(Shared {
                entries,
                loads: Table::new(),
                freshness,
                keep,
                rng,
                counts: Counts::default(),
                clock: Clock::new(shortest),
            }),
        }
    }

    /// What the store has done so far: hits, stale answers, misses, loads.
    ///
    /// Counting is always on and costs a load and a store per lookup, on
    /// a cache line of the calling thread's own (no atomic
    /// read-modify-write; a thread beyond the 32 that hold such lines adds
    /// atomically to one of 8 shared ones). A snapshot includes every
    /// lookup made before it — by a task you awaited, a thread you joined —
    /// exactly; lookups racing it may or may not be in it.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use dephase::cache::{CacheLayer, MemoryStore};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let store = MemoryStore::<u32, u32>::builder(100)
    ///     .ttl(Duration::from_secs(60))
    ///     .build()?;
    /// let origin = service_fn(|n: u32| async move { Ok::<_, Infallible>(n * 2) });
    /// let mut cache = CacheLayer::new(store.clone(), |n: &u32| Some(*n)).layer(origin);
    ///
    /// for n in [1, 1, 1, 2] {
    ///     cache.ready().await?.call(n).await?;
    /// }
    /// let stats = store.stats();
    /// assert_eq!((stats.hits, stats.misses, stats.loads), (2, 2, 2));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> MemoryStats {
        let counts = &self.shared.counts;
        MemoryStats {
            hits: counts.get(Counted::Hits),
            early_refreshes: counts.get(Counted::EarlyRefreshes),
            stale: counts.get(Counted::Stale),
            misses: counts.get(Counted::Misses),
            loads: counts.get(Counted::Loads),
            stores: counts.get(Counted::Stores),
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
    /// says that the key was invalidated meanwhile. `fraction` (a uniform
    /// fraction of 2⁶⁴) draws the new entry's TTL jitter.
    fn load_call<F, E>(
        &self,
        key: K,
        future: F,
        fraction: u64,
        fence: Fence<K, (T, Served)>,
    ) -> Call<(T, Served)>
    where
        F: std::future::Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let shared = Arc::clone(&self.shared);
        shared.counts.add(Counted::Loads);
        Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            let now = Instant::now();
            let (freshness, delta) = (&shared.freshness, now - started);
            match result {
                Ok(value) if !(shared.keep)(&value) => Ok((value, Served::new(CacheResult::Miss))),
                Ok(value) => {
                    telemetry::count::cache_recompute();
                    let offset = freshness.jitter.offset(&key, fraction);
                    Span::current().record(CACHE_TTL_OFFSET_MS, telemetry::millis(offset));
                    telemetry::count::cache_ttl_offset(offset);
                    let life = freshness.ttl + offset;
                    fence.store_unless_fenced(|| {
                        shared.store(key, Ok(value.clone()), now, delta, life);
                    });
                    Ok((value, Served::new(CacheResult::Miss)))
                }
                Err(error) => {
                    let error = Arc::new(error.into());
                    if let Some(ttl) = freshness.negative_ttl {
                        fence.store_unless_fenced(|| {
                            // A failure never replaces a value that is still
                            // servable (fresh, or within a stale window).
                            let servable = shared.entries.get(&key).is_some_and(|old| {
                                old.value.is_ok()
                                    && shared.clock.reading(now)
                                        < old
                                            .expires
                                            .saturating_add(clock::nanos(freshness.stale_window()))
                            });
                            if !servable {
                                shared.store(key, Err(Arc::clone(&error)), now, delta, ttl);
                            }
                        });
                    }
                    Err(error)
                }
            }
        })
    }

    /// Starts a load of `key` that nobody waits for, unless one is already
    /// in flight (or there is no runtime to run it on). `true` if started.
    fn refresh_in_background<S, Req>(
        &self,
        key: K,
        service: &mut S,
        request: Req,
        draws: &mut Draws,
    ) -> bool
    where
        S: Service<Req, Response = T>,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let Some(starter) = self.shared.loads.lead(key.clone()) else {
            return false; // a load of this key is already running
        };
        let call = self.load_call(
            key,
            service.call(request),
            draws.fraction(),
            starter.fence(),
        );
        let mut waiter = starter.start(call);
        runtime.spawn(async move {
            let _ = std::future::poll_fn(|cx| waiter.poll(cx)).await;
        });
        true
    }
}

impl<K, T> Shared<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Puts a freshly loaded value (or error) in the store, living `life`.
    fn store(
        &self,
        key: K,
        value: Result<T, Arc<BoxError>>,
        now: Instant,
        delta: Duration,
        life: Duration,
    ) {
        let expires = self.clock.reading(now).saturating_add(clock::nanos(life));
        let f = &self.freshness;
        let quiet_until = match early_window(delta, f.beta, f.early_refresh && value.is_ok()) {
            Some(window) => expires.saturating_sub(clock::nanos(window)),
            None => expires,
        };
        let entry = Entry {
            value,
            delta,
            expires,
            quiet_until,
        };
        self.counts.add(Counted::Stores);
        telemetry::count::cache_store();
        self.entries.insert(key, entry);
    }
}

impl<K, T> sealed::Sealed for MemoryStore<K, T> {}

impl<K, T> Store for MemoryStore<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = T;

    fn draws(&self) -> Draws {
        Draws::new(&self.shared.rng)
    }
}

impl<K, T, S, Req> StoreFor<S, Req> for MemoryStore<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Service<Req, Response = T>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    fn lookup(&self, key: K, service: &mut S, request: Req, draws: &mut Draws) -> Looked<K, T> {
        let shared = &self.shared;
        let mut stale = None;
        if let Some(entry) = shared.entries.get(&key) {
            // moka's `get` returned a copy of the entry: the answer is moved
            // out of it, not copied again (for an HTTP response, a second
            // copy of its headers).
            let answer = |value: Result<T, Arc<BoxError>>| {
                value.map_err(|e| -> BoxError { Box::new(SharedError::new(e)) })
            };
            let now = shared.clock.elapsed_nanos();
            if now < entry.quiet_until {
                // Fresh, and too far from its expiry for XFetch to refresh
                // it (the judgement below would say the same).
                shared.counts.add(Counted::Hits);
                return Looked::now(
                    answer(entry.value),
                    Served::hit_in_nanos(CacheResult::Hit, entry.expires - now),
                );
            }
            let age = entry.age(now);
            let refreshing = || shared.loads.contains(&key);
            let verdict = match &entry.value {
                Ok(_) => {
                    let refreshing = matches!(age, Age::Expired { .. }) && refreshing();
                    shared
                        .freshness
                        .judge(age, entry.delta, refreshing, || draws.fraction())
                }
                // A cached error is served while fresh, never refreshed
                // early, and never served stale.
                Err(_) => match age {
                    Age::Fresh { left } => Verdict::Hit {
                        expires_in: left,
                        refresh: false,
                    },
                    Age::Expired { .. } => Verdict::Load { or_stale: false },
                },
            };
            match verdict {
                Verdict::Hit {
                    expires_in,
                    refresh,
                } => {
                    shared.counts.add(Counted::Hits);
                    let result =
                        if refresh && self.refresh_in_background(key, service, request, draws) {
                            shared.counts.add(Counted::EarlyRefreshes);
                            CacheResult::EarlyRefresh
                        } else {
                            CacheResult::Hit
                        };
                    return Looked::now(answer(entry.value), Served::hit(result, Some(expires_in)));
                }
                Verdict::Stale => {
                    shared.counts.add(Counted::Stale);
                    self.refresh_in_background(key, service, request, draws);
                    return Looked::now(answer(entry.value), Served::new(CacheResult::Stale));
                }
                Verdict::Load { or_stale } => {
                    if or_stale {
                        stale = entry.value.ok();
                    }
                }
            }
        }
        shared.counts.add(Counted::Misses);
        match shared.loads.join(key.clone()) {
            Joined::Follower(waiter) => Looked::flight(waiter, stale),
            Joined::Leader(starter) => {
                let call = self.load_call(
                    key,
                    service.call(request),
                    draws.fraction(),
                    starter.fence(),
                );
                Looked::flight(starter.start(call), stale)
            }
        }
    }
}

impl<K, T> Clone for MemoryStore<K, T> {
    fn clone(&self) -> Self {
        MemoryStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, T> fmt::Debug for MemoryStore<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("freshness", &self.shared.freshness)
            .finish_non_exhaustive()
    }
}

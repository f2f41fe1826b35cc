//! One builder for both stores: the freshness settings are written once,
//! here; each store adds its own (a capacity in memory; a server, a prefix
//! and leases in Redis).

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use super::memory::MemoryStore;
use super::policy::{Fields, Settings, TtlJitter};
use crate::error::ConfigError;
use crate::rng::RngSource;

/// Builds a store: [`MemoryStore::builder`] or, with the `redis` feature,
/// `redis::RedisStore::builder`. [`build`](StoreBuilder::build) checks
/// every field.
///
/// ```
/// use std::time::Duration;
/// use dephase::cache::{MemoryStore, TtlJitter};
///
/// let store = MemoryStore::<String, String>::builder(10_000)
///     .ttl(Duration::from_secs(60))
///     .ttl_jitter(TtlJitter::Random(Duration::from_secs(6)))
///     .stale_while_revalidate(Duration::from_secs(10))
///     .seed(7)
///     .build()?;
/// # let _ = store;
/// # Ok::<(), dephase::ConfigError>(())
/// ```
pub struct StoreBuilder<B> {
    pub(crate) freshness: Settings,
    pub(crate) seed: Option<u64>,
    pub(crate) backend: B,
}

impl<B> StoreBuilder<B> {
    pub(crate) fn new(backend: B) -> Self {
        StoreBuilder {
            freshness: Settings::default(),
            seed: None,
            backend,
        }
    }

    /// How long a value is fresh (default 60 s), before jitter.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.freshness.ttl = ttl;
        self
    }

    /// XFetch's β: above 1 refreshes earlier, below 1 later (default 1;
    /// must be positive).
    pub fn beta(mut self, beta: f64) -> Self {
        self.freshness.beta = beta;
        self
    }

    /// Turns early refreshes on (the default) or off.
    pub fn early_refresh(mut self, on: bool) -> Self {
        self.freshness.early_refresh = on;
        self
    }

    /// How expiries are spread (default [`TtlJitter::Random`] of a tenth
    /// of the TTL).
    pub fn ttl_jitter(mut self, jitter: TtlJitter) -> Self {
        self.freshness.jitter = Some(jitter);
        self
    }

    /// For how long after its expiry a value is still served while one
    /// refresh runs in the background (default zero).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.freshness.stale_while_revalidate = window;
        self
    }

    /// For how long after its expiry a value is served when the load that
    /// should replace it fails (default zero). In-process store only.
    pub fn stale_if_error(mut self, bound: Duration) -> Self {
        self.freshness.stale_if_error = bound;
        self
    }

    /// Caches errors for `ttl` (default: errors are not cached). A failure
    /// never replaces a value that is still fresh or within a stale window.
    /// In-process store only.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.freshness.negative_ttl = Some(ttl);
        self
    }

    /// Makes the XFetch draws and the TTL jitter reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub(crate) fn rng(&self) -> RngSource {
        RngSource::from_seed(self.seed)
    }
}

impl<B: fmt::Debug> fmt::Debug for StoreBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("freshness", &self.freshness)
            .field("seed", &self.seed)
            .field("backend", &self.backend)
            .finish()
    }
}

/// The in-process store's own settings.
pub struct Memory<K, T> {
    max_capacity: u64,
    keep: fn(&T) -> bool,
    _types: PhantomData<fn() -> K>,
}

impl<K, T> Memory<K, T> {
    pub(super) fn new(max_capacity: u64) -> Self {
        Memory {
            max_capacity,
            keep: |_| true,
            _types: PhantomData,
        }
    }
}

impl<K, T> fmt::Debug for Memory<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("max_capacity", &self.max_capacity)
            .finish_non_exhaustive()
    }
}

impl<K, T> StoreBuilder<Memory<K, T>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Stores a loaded value only if `keep(&value)` (default: every value).
    /// A value that is not kept is still handed to the callers that waited
    /// for the load. For HTTP, keep only complete, successful responses:
    /// `store_if(dephase::http::Collected::is_cacheable)`.
    pub fn store_if(mut self, keep: fn(&T) -> bool) -> Self {
        self.backend.keep = keep;
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
    pub fn build(self) -> Result<MemoryStore<K, T>, ConfigError> {
        if self.backend.max_capacity == 0 {
            return Err(ConfigError::new("cache.max_capacity", "must be at least 1"));
        }
        let freshness = self.freshness.check(&Fields {
            ttl: "cache.ttl",
            beta: "cache.beta",
            negative_ttl: "cache.negative_ttl",
        })?;
        Ok(MemoryStore::from_parts(
            self.backend.max_capacity,
            freshness,
            self.backend.keep,
            self.rng(),
        ))
    }
}

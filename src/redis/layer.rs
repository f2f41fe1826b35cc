use std::fmt;

use tower_layer::Layer;

use super::{RedisCache, RedisStore};

/// Wraps services in [`RedisCache`], all sharing one [`RedisStore`].
pub struct RedisCacheLayer<F, K, T> {
    store: RedisStore<K, T>,
    key: F,
}

impl<F, K, T> RedisCacheLayer<F, K, T> {
    /// Caches in `store`, by `key(&request)` (`None`: not cached). The key's
    /// `Display` form names it in Redis, so it must be the same on every
    /// replica.
    pub fn new(store: RedisStore<K, T>, key: F) -> Self {
        RedisCacheLayer { store, key }
    }

    /// The store.
    pub fn store(&self) -> &RedisStore<K, T> {
        &self.store
    }
}

impl<S, F: Clone, K, T> Layer<S> for RedisCacheLayer<F, K, T> {
    type Service = RedisCache<S, F, K, T>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisCache::new(inner, self.store.clone(), self.key.clone())
    }
}

impl<F: Clone, K, T> Clone for RedisCacheLayer<F, K, T> {
    fn clone(&self) -> Self {
        RedisCacheLayer {
            store: self.store.clone(),
            key: self.key.clone(),
        }
    }
}

impl<F, K, T> fmt::Debug for RedisCacheLayer<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheLayer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

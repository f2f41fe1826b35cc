use std::fmt;
use std::hash::Hash;

use tower_layer::Layer;

use super::{Cache, Store};

/// Wraps services in [`Cache`], all sharing one [`Store`].
pub struct CacheLayer<F, K, T> {
    store: Store<K, T>,
    key: F,
}

impl<F, K, T> CacheLayer<F, K, T> {
    /// Caches in `store`, by `key(&request)` (`None`: not cached).
    pub fn new(store: Store<K, T>, key: F) -> Self {
        CacheLayer { store, key }
    }

    /// The store.
    pub fn store(&self) -> &Store<K, T> {
        &self.store
    }
}

impl<S, F, K, T> Layer<S> for CacheLayer<F, K, T>
where
    F: Clone,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Service = Cache<S, F, K, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.store.clone(), self.key.clone())
    }
}

impl<F: Clone, K, T> Clone for CacheLayer<F, K, T> {
    fn clone(&self) -> Self {
        CacheLayer {
            store: self.store.clone(),
            key: self.key.clone(),
        }
    }
}

impl<F, K, T> fmt::Debug for CacheLayer<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

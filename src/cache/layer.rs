//! The [`CacheLayer`].

use std::fmt;

use tower_layer::Layer;

use super::Cache;
use super::store::Store;

/// Wraps services in [`Cache`], all sharing one store.
pub struct CacheLayer<F, St> {
    store: St,
    key: F,
}

impl<F, St: Store> CacheLayer<F, St> {
    /// Caches in `store`, by `key(&request)` (`None`: not cached).
    pub fn new(store: St, key: F) -> Self {
        CacheLayer { store, key }
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<S, F: Clone, St: Store> Layer<S> for CacheLayer<F, St> {
    type Service = Cache<S, F, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.store.clone(), self.key.clone())
    }
}

impl<F: Clone, St: Clone> Clone for CacheLayer<F, St> {
    fn clone(&self) -> Self {
        CacheLayer {
            store: self.store.clone(),
            key: self.key.clone(),
        }
    }
}

impl<F, St: fmt::Debug> fmt::Debug for CacheLayer<F, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

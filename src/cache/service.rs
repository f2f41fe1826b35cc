//! The [`Cache`] service: a request with a key is looked up in the store;
//! one without is passed through.

use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::ResponseFuture;
use super::store::{Draws, Store, StoreFor};
use crate::BoxError;

/// A service in front of a [`Store`]: a [`MemoryStore`](super::MemoryStore)
/// or, with the `redis` feature, a `redis::RedisStore`.
///
/// The inner service must be `Clone` (a load may be made by a flight, a
/// refresh in the background, each through the instance this service made
/// ready) and its future `Send + 'static`.
pub struct Cache<S, F, St: Store> {
    inner: S,
    key: F,
    store: St,
    draws: Draws,
}

impl<S, F, St: Store> Cache<S, F, St> {
    /// Caches `inner`'s responses in `store`, by `key(&request)` (`None`:
    /// not cached).
    pub fn new(inner: S, store: St, key: F) -> Self {
        let draws = store.draws();
        Cache {
            inner,
            key,
            store,
            draws,
        }
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    inner_accessors!();
}

impl<S, F, St, Req> Service<Req> for Cache<S, F, St>
where
    S: Service<Req, Response = St::Value>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Option<St::Key>,
    St: StoreFor<S, Req>,
{
    type Response = St::Value;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, St::Key, St::Value>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match (self.key)(&request) {
            None => ResponseFuture::direct(self.inner.call(request)),
            Some(key) => ResponseFuture::looked(self.store.lookup(
                key,
                &mut self.inner,
                request,
                &mut self.draws,
            )),
        }
    }
}

impl<S: Clone, F: Clone, St: Store> Clone for Cache<S, F, St> {
    fn clone(&self) -> Self {
        Cache::new(self.inner.clone(), self.store.clone(), self.key.clone())
    }
}

impl<S: fmt::Debug, F, St: Store + fmt::Debug> fmt::Debug for Cache<S, F, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

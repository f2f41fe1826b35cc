//! The [`Coalesce`] service and its shared in-flight table, the [`Coalescer`].

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::ResponseFuture;
use crate::BoxError;
use crate::flight::{Call, Joined, Table};

/// The in-flight table of a coalescing layer; clones share it.
pub struct Coalescer<K, T> {
    table: Arc<Table<K, T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// An empty table.
    pub fn new() -> Self {
        Coalescer {
            table: Table::new(),
        }
    }

    /// Forgets the call in flight for `key`, if any: the next caller starts a
    /// new call; the waiters of the old one still get its result.
    pub fn forget(&self, key: &K) {
        self.table.forget(key);
    }

    /// How many keys have a call in flight.
    pub fn in_flight(&self) -> usize {
        self.table.len()
    }

    /// Whether `key` has a call in flight.
    pub fn is_in_flight(&self, key: &K) -> bool {
        self.table.contains(key)
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Default for Coalescer<K, T> {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl<K, T> Clone for Coalescer<K, T> {
    fn clone(&self) -> Self {
        Coalescer {
            table: Arc::clone(&self.table),
        }
    }
}

impl<K, T> fmt::Debug for Coalescer<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

/// A service whose concurrent requests with the same key share one call.
///
/// `F` is the key function, `K` the key and `T` the response type. Errors
/// are [`BoxError`]s: for a coalesced request a
/// [`SharedError`](super::error::SharedError) around the inner service's
/// error, or a [`Panicked`](super::error::Panicked).
pub struct Coalesce<S, F, K, T> {
    inner: S,
    key: F,
    coalescer: Coalescer<K, T>,
    _types: PhantomData<fn() -> (K, T)>,
}

impl<S, F, K: Hash + Eq + Clone, T: Clone> Coalesce<S, F, K, T> {
    /// Coalesces requests to `inner` by `key(&request)`.
    pub fn new(inner: S, key: F) -> Self {
        Coalesce::with_coalescer(inner, key, Coalescer::new())
    }
}

impl<S, F, K, T> Coalesce<S, F, K, T> {
    pub(super) fn with_coalescer(inner: S, key: F, coalescer: Coalescer<K, T>) -> Self {
        Coalesce {
            inner,
            key,
            coalescer,
            _types: PhantomData,
        }
    }

    /// The in-flight table.
    pub fn coalescer(&self) -> &Coalescer<K, T> {
        &self.coalescer
    }

    inner_accessors!();
}

impl<S, F, K, T, Req> Service<Req> for Coalesce<S, F, K, T>
where
    S: Service<Req, Response = T>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Option<K>,
    K: Hash + Eq + Clone,
    T: Clone + Send + 'static,
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
        match self.coalescer.table.join(key) {
            Joined::Follower(waiter) => ResponseFuture::shared(waiter),
            Joined::Leader(starter) => {
                let future = self.inner.call(request);
                let call: Call<T> =
                    Box::pin(async move { future.await.map_err(|e| Arc::new(e.into())) });
                ResponseFuture::shared(starter.start(call))
            }
        }
    }
}

impl<S: Clone, F: Clone, K, T> Clone for Coalesce<S, F, K, T> {
    fn clone(&self) -> Self {
        Coalesce::with_coalescer(self.inner.clone(), self.key.clone(), self.coalescer.clone())
    }
}

impl<S: fmt::Debug, F, K, T> fmt::Debug for Coalesce<S, F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

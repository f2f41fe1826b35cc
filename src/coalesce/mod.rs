//! Request coalescing ("singleflight"): one call per key in flight, its
//! result handed to every concurrent caller with that key.
//!
//! # Why
//!
//! When a hot key is missing from a cache, every concurrent request for it
//! misses and goes to the origin: a stampede of identical work. Coalescing
//! lets one call through per key and gives its result (or its error) to
//! every caller that asked meanwhile. The peers get parts of it wrong, and
//! this module is built against those failures: tower-resilience-coalesce's
//! waiters spin (re-poll themselves) while they wait and fail when the
//! leader is cancelled; cacheflight leaves a key blocked for good when its
//! leader is cancelled; quick_cache does not share errors.
//!
//! Here:
//!
//! - A key function `Fn(&Req) -> Option<K>` groups requests (`None`: call
//!   directly). The first caller of a key makes the call; the others wait
//!   for it and get a clone of its response. Errors go to every waiter as a
//!   [`error::Shared`] (an `Arc` inside) and are not remembered once the
//!   flight has ended.
//! - **No spinning**: exactly one waiter polls the call; the others are woken
//!   once, when the result is ready (two polls each).
//! - **Cancellation**: if the caller that started the call goes away, another
//!   waiter takes over polling it and everybody still gets the result. When
//!   the *last* interested caller goes away, the call is dropped (cancelled)
//!   and the key freed: the next caller starts a new call.
//! - **Panics**: a panic in the call gives every waiter an
//!   [`error::Panicked`] and frees the key; the layer keeps working.
//! - The in-flight table holds only keys in flight, sharded so that
//!   unrelated keys do not contend. [`Coalescer::forget`] drops a key from it
//!   (as Go's `singleflight.Group.Forget` does): the next caller starts a new
//!   call while the old one's waiters still get its result.
//!
//! Every caller records `dephase.coalesce.role` (`leader` or `follower`) and,
//! when done, `dephase.coalesce.waiters` (how many callers shared the call)
//! on its span.
//!
//! The call is stored in the flight (boxed, so any waiter can poll it), so
//! the inner service's future must be `Send + 'static`.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use dephase::coalesce::CoalesceLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! let origin = tower::service_fn(move |user: u32| {
//!     counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         tokio::time::sleep(Duration::from_millis(50)).await; // a slow lookup
//!         Ok::<_, std::io::Error>(format!("user {user}"))
//!     }
//! });
//! let service = ServiceBuilder::new()
//!     .layer(CoalesceLayer::new(|user: &u32| Some(*user)))
//!     .service(origin);
//!
//! let herd: Vec<_> = (0..100).map(|_| tokio::spawn(service.clone().oneshot(7))).collect();
//! for caller in herd {
//!     assert_eq!(caller.await.unwrap().unwrap(), "user 7");
//! }
//! assert_eq!(calls.load(Ordering::SeqCst), 1); // one call for a hundred callers
//! # }
//! ```

pub mod error;
mod flight;
pub mod future;
mod layer;

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

pub(crate) use self::flight::{Call, Fence, Joined, Table, Waiter};
pub use self::future::ResponseFuture;
pub use self::layer::CoalesceLayer;
use crate::BoxError;

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
/// are [`BoxError`]s: for a coalesced request an [`error::Shared`] around the
/// inner service's error, or an [`error::Panicked`].
pub struct Coalesce<S, F, K, T> {
    inner: S,
    key: F,
    coalescer: Coalescer<K, T>,
    _types: PhantomData<fn() -> (K, T)>,
}

impl<S, F, K: Hash + Eq + Clone, T: Clone> Coalesce<S, F, K, T> {
    /// Coalesces requests to `inner` by `key(&request)`.
    pub fn new(inner: S, key: F) -> Self {
        Coalesce {
            inner,
            key,
            coalescer: Coalescer::new(),
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
        Coalesce {
            inner: self.inner.clone(),
            key: self.key.clone(),
            coalescer: self.coalescer.clone(),
            _types: PhantomData,
        }
    }
}

impl<S: fmt::Debug, F, K, T> fmt::Debug for Coalesce<S, F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

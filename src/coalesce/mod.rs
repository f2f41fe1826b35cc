//! Request coalescing ("singleflight"): one call per key in flight, its
//! result handed to every concurrent caller with that key.
//!
//! # Why
//!
//! When a hot key is missing from a cache, every concurrent request for it
//! misses and goes to the origin: a stampede of identical work. Coalescing
//! lets one call through per key and gives its result (or its error) to
//! every caller that asked meanwhile.
//!
//! Here:
//!
//! - A key function `Fn(&Req) -> Option<K>` groups requests (`None`: call
//!   directly). The first caller of a key makes the call; the others wait
//!   for it and get a clone of its response. Errors go to every waiter as a
//!   [`error::SharedError`] (an `Arc` inside) and are not remembered once
//!   the flight has ended.
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
//! What each caller records is listed in [`telemetry`](crate::telemetry).
//!
//! The call is stored in the flight (boxed, so any waiter can poll it), so
//! the inner service's future must be `Send + 'static`.
//!
//! A [`cache`](crate::cache) coalesces its misses already: a
//! `CoalesceLayer` over a `CacheLayer` with the same key adds nothing.
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
pub mod future;
mod layer;
mod service;

pub use self::layer::CoalesceLayer;
pub use self::service::{Coalesce, Coalescer};

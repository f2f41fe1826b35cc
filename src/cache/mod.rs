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
//! # Stores
//!
//! One [`CacheLayer`] over either store (the decision above is the same,
//! for both; where values live differs):
//!
//! - [`MemoryStore`]: a [moka](https://docs.rs/moka) cache with a required
//!   maximum capacity, so memory is bounded; each entry keeps its value,
//!   `Δ` and its expiry. Freshness is judged on tokio's clock (tests with
//!   paused time work), which a store made in a multi-thread runtime reads
//!   coarsely on Linux: the kernel's coarse clock when its step (1–10 ms,
//!   4 ms on a common kernel) is at most a tenth of the shortest TTL and
//!   stale window, so a value may be served up to about a step past its
//!   expiry or its stale window (a refresh still running is waited for up
//!   to Δ of the expiry on the same clock). A hit is answered inside
//!   `call`, without a future of its own.
//! - `redis::RedisStore` (feature `redis`): values shared by every replica
//!   through Redis, with leases so that one replica of the fleet refills an
//!   expired key (see the `redis` module). A near cache is a
//!   `CacheLayer` over a `MemoryStore` with a short TTL in front of one over
//!   the Redis store.
//!
//! Both are built with the same [`StoreBuilder`] settings. Background
//! refreshes run as tokio tasks: the inner service's future must be
//! `Send + 'static`, and without a tokio runtime no refresh is started
//! early (the entry is then loaded when it expires). What a request records
//! is listed in [`telemetry`](crate::telemetry).
//!
//! ```
//! use std::time::Duration;
//! use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let store = MemoryStore::builder(10_000)
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

mod builder;
pub mod error;
pub mod future;
mod layer;
mod memory;
pub(crate) mod policy;
mod service;
mod store;

pub use self::builder::{Memory, StoreBuilder};
pub use self::layer::CacheLayer;
pub use self::memory::{MemoryStats, MemoryStore};
pub use self::policy::TtlJitter;
pub use self::service::Cache;
#[cfg(feature = "redis")]
pub(crate) use self::store::{CacheResult, Draws, Lease, Looked, Served, sealed};
pub use self::store::{Store, StoreFor};

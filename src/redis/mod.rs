//! Dephasing across the fleet through Redis (feature `redis`, which needs
//! Rust 1.88: the `redis` crate's minimum): a cache shared by every
//! replica, with leases so that one replica in the whole fleet refills an
//! expired key ([`RedisStore`]); a gate that lets at most `K` holders
//! across every replica run at once ([`FleetGate`], [`FleetGateLayer`]);
//! a pacer whose quota is the fleet's, not each process's ([`FleetPacer`],
//! [`FleetPaceLayer`]); a retry budget whose reserve and ratio are the
//! fleet's, with no round trip per request ([`FleetBudget`]). Their docs
//! say how each works and degrades; the rest of this page is about the
//! cache.
//!
//! # Why
//!
//! In-process coalescing ([`coalesce`](crate::coalesce),
//! [`cache`](crate::cache)) gives one recompute per key *per replica*: a
//! fleet of 50 replicas still sends 50 recomputes to the origin at every
//! expiry. Facebook's memcache leases (Nishtala et al., "Scaling Memcache
//! at Facebook", NSDI 2013) let one filler per key through across the whole
//! fleet; they cut a herd-prone key's peak database rate from 17K/s to
//! 1.3K/s. This module does the same on Redis.
//!
//! # What happens to a request
//!
//! Requests are grouped by a key function, as in [`cache`](crate::cache)
//! (`None`: not cached). Within one replica, concurrent requests for a key
//! share one flight (one Redis round trip, at most one origin call). The
//! flight asks Redis, in one round trip, for the value or the lease:
//!
//! - **hit**: the value. XFetch (`now − Δ·β·ln(U) ≥ expiry`, with `Δ` the
//!   time the value took to compute, stored beside it so that every replica
//!   decides the same way) may also start an **early refresh** in the
//!   background; the refresh first takes the lease (`SET NX PX`), so across
//!   the fleet one replica refreshes.
//! - **stale**: past its freshness but within `stale_while_revalidate`: the
//!   old value, and a background refresh (again behind the lease).
//! - **miss, lease taken**: this replica calls the origin, then writes the
//!   value — only if its lease token is still the current one — and frees
//!   the lease. A failed or cancelled load frees the lease at once.
//! - **miss, lease held elsewhere**: this replica polls Redis at jittered,
//!   growing intervals (5 ms doubling to 50 ms, equal jitter) until the value
//!   is there, or the lease is free again (its holder failed or died: the
//!   lease expires by itself after `lease_ttl`), which it then takes. If
//!   neither happens before `lease_wait`, it calls the origin itself.
//!
//! Freshness is judged on Redis's clock (values are written with `PX`, read
//! with `PTTL`), so replicas with skewed clocks agree. Errors are not cached;
//! values are encoded by [`RedisValue`].
//!
//! # When Redis is slow or down
//!
//! Every Redis command has a deadline (`op_timeout`, 200 ms by default). A
//! command that fails sends its request to the origin (still coalesced
//! within the replica) — no request fails because of Redis. One that could
//! not reach Redis (refused, dropped, timed out) also marks Redis down: for
//! a jittered, growing delay (100 ms to 5 s) nothing is sent to Redis at
//! all, then the next request reconnects. An error *reply* (`WRONGTYPE`
//! under a key of another program's, `LOADING`, `OOM`...) does not: Redis
//! answered. A `WARN`
//! event (target `dephase::redis`) says when Redis is lost, an `INFO` event
//! when it is back. [`RedisStore::stats`] counts what happened.
//!
//! # A near cache
//!
//! Each hit here is one Redis round trip. For a hot key, put a
//! [`CacheLayer`](crate::cache::CacheLayer) over a
//! [`MemoryStore`](crate::cache::MemoryStore) with a short TTL in front:
//! moka answers most requests, and its misses and refreshes come here.
//!
//! # Fleet-wide coalescing without a cache
//!
//! The lease is also how to coalesce one call across replicas when the
//! result is not meant to be cached: a store whose `ttl` is how long a
//! result may be handed to late arrivals (a second, say), with early
//! refresh off. Concurrent requests of the whole fleet then make one call;
//! the other replicas read its result from Redis.
//!
//! What a request records (the cache's fields, and how its fill went
//! across replicas) is listed in [`telemetry`](crate::telemetry).
//!
//! ```
//! use std::time::Duration;
//! use dephase::cache::CacheLayer;
//! use dephase::redis::RedisStore;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dephase::BoxError> {
//! // Every replica builds the same store; port 1 has no Redis here, so
//! // this example also shows the fallback: requests go to the origin.
//! let store = RedisStore::builder("redis://127.0.0.1:1/")
//!     .prefix("users:")
//!     .ttl(Duration::from_secs(60))
//!     .lease_ttl(Duration::from_secs(5))
//!     .build()?;
//! let users = ServiceBuilder::new()
//!     .layer(CacheLayer::new(store.clone(), |id: &u32| Some(*id)))
//!     .service(tower::service_fn(|id: u32| async move {
//!         Ok::<_, std::io::Error>(format!("user {id}"))
//!     }));
//!
//! assert_eq!(users.oneshot(7).await?, "user 7");
//! assert_eq!(store.stats().degraded, 1); // Redis unreachable: served by the origin
//! # Ok(()) }
//! ```

mod budget;
mod builder;
mod entry;
pub mod error;
mod fill;
pub mod future;
mod gate;
mod gate_layer;
mod lease;
mod link;
mod pace_layer;
mod pacer;
mod server;
mod stats;
mod store;

pub use self::budget::{FleetBudget, FleetBudgetBuilder, FleetBudgetStats};
pub use self::builder::Redis;
pub use self::entry::RedisValue;
pub use self::gate::{FleetGate, FleetGateBuilder, GateStats, SlotGuard};
pub use self::gate_layer::{FleetGateLayer, Gated};
pub use self::pace_layer::{FleetPaceLayer, FleetPaced};
#[doc(hidden)]
pub use self::pacer::RESERVE_SCRIPT as FLEET_PACE_SCRIPT;
pub use self::pacer::{FleetPacer, FleetPacerBuilder, FleetPacerStats};
pub use self::server::Server;
pub use self::stats::RedisStats;
pub use self::store::RedisStore;

//! How one flight of a Redis store fills its key: look the value up, or
//! take the lease and load it, or wait for the replica that holds the
//! lease — and the guards that leave nothing behind when a flight goes away
//! (the lease, the refreshing mark, the waiting count).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;
use tracing::Level;

use super::entry::{Header, RedisValue, age, decode, encode};
use super::lease::{self, Found, Names};
use super::stats::bump;
use super::store::RedisStore;
use crate::BoxError;
use crate::cache::policy::Verdict;
use crate::cache::{CacheResult, Lease, Served};
use crate::rng::{RngSource, Stream};
use crate::telemetry::{self, CACHE_TTL_OFFSET_MS};

/// One flight's place in the `waiting` count.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A lease token: 128 random bits, unique to this process and call (never
/// from the seeded stream: replicas with the same seed must not share
/// tokens).
pub(super) fn new_token() -> String {
    let mut stream = RngSource::entropy().stream();
    format!("{:016x}{:016x}", stream.fraction(), stream.fraction())
}

/// The work of one flight: look up, or lease and load, or wait.
pub(super) async fn serve<S, Req, K, T>(
    store: RedisStore<K, T>,
    key: K,
    mut service: S,
    request: Req,
    mut rng: Stream,
) -> Result<(T, Served), Arc<BoxError>>
where
    S: Service<Req, Response = T> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    let shared = &store.shared;
    let config = &shared.config;
    let names = store.names(&key);
    // Made when a lease is asked for (a hit needs none).
    let mut token = String::new();
    let started = Instant::now();
    let deadline = started + config.lease_wait;
    let mut waited = Duration::ZERO;
    let mut polls = 0u32;
    // Counts this flight in `waiting` from its first poll until it ends.
    let mut _waiting = None;
    let served = |result, lease, waited| Served::new(result).leased(lease, waited);
    // The first lookup is a plain GET + PTTL (what a hit costs); only a
    // miss runs the script that also takes the lease.
    let mut take_lease = None;
    loop {
        // The script may take the lease and its reply be lost with this
        // flight (cancelled while it waits): the guard that releases the
        // lease exists before the await that can take it.
        let mut held = take_lease.map(|_| Held::new(&store, &names, &token));
        let found = lease::lookup(&shared.link, &names, &token, take_lease).await;
        if matches!(found, Some(Found::Value(..) | Found::Held | Found::Missing)) {
            // Redis answered, and the lease is not ours.
            held.as_mut().map(Held::disarm);
        }
        if waited > Duration::ZERO && !matches!(found, Some(Found::Held)) {
            bump(&shared.counters.waited);
        }
        let lease = if waited > Duration::ZERO {
            Lease::Waited
        } else {
            Lease::None
        };
        match found {
            None => {
                bump(&shared.counters.degraded);
                let value = store.call_origin(&mut service, request).await?;
                return Ok((value, served(CacheResult::Miss, Lease::Degraded, waited)));
            }
            Some(Found::Value(bytes, pttl)) => {
                let Some((header, value)) = decode::<T>(&bytes) else {
                    tracing::event!(
                        target: "dephase::redis",
                        Level::WARN,
                        key = %names.value,
                        "a value in Redis could not be decoded; this request goes to the origin"
                    );
                    bump(&shared.counters.degraded);
                    let value = store.call_origin(&mut service, request).await?;
                    return Ok((value, served(CacheResult::Miss, Lease::Degraded, waited)));
                };
                let age = age(pttl, header.stale);
                let freshness = &config.freshness;
                let Verdict::Hit {
                    expires_in,
                    refresh,
                } = freshness.judge(age, header.delta, false, || rng.fraction())
                else {
                    // Past its freshness but still in Redis: within the
                    // stale window it was written with.
                    bump(&shared.counters.stale);
                    store.refresh_in_background(key, service, request, rng, pttl);
                    return Ok((value, served(CacheResult::Stale, lease, waited)));
                };
                bump(&shared.counters.hits);
                let result =
                    if refresh && store.refresh_in_background(key, service, request, rng, pttl) {
                        bump(&shared.counters.early_refreshes);
                        CacheResult::EarlyRefresh
                    } else {
                        CacheResult::Hit
                    };
                let expires_in = (expires_in < Duration::MAX).then_some(expires_in);
                let served = Served::hit(result, expires_in).leased(lease, waited);
                return Ok((value, served));
            }
            Some(Found::Missing) => {
                token = new_token();
                take_lease = Some(config.lease_ttl);
            }
            Some(Found::Leased) => {
                let held = held.expect("a lease is taken only when asked for");
                let value = store
                    .load(&key, held, &mut service, request, &mut rng)
                    .await?;
                return Ok((value, served(CacheResult::Miss, Lease::Acquired, waited)));
            }
            Some(Found::Held) => {
                let now = Instant::now();
                if now >= deadline {
                    bump(&shared.counters.wait_deadlines);
                    let value = store.call_origin(&mut service, request).await?;
                    return Ok((value, served(CacheResult::Miss, Lease::Deadline, waited)));
                }
                // Equal jitter on 5 ms · 2ⁿ, at most 50 ms: replicas that
                // missed together do not poll together.
                let ceiling = (5u64 << polls.min(4)).min(50) * 1000;
                let pause =
                    Duration::from_micros(rng.in_range(ceiling / 2, ceiling)).min(deadline - now);
                polls += 1;
                _waiting.get_or_insert_with(|| Waiting::new(&shared.waiting));
                let slept = Instant::now();
                tokio::time::sleep(pause).await;
                waited += slept.elapsed(); // what was applied, not planned
            }
        }
    }
}

impl<K, T> RedisStore<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    async fn call_origin<S, Req>(&self, service: &mut S, request: Req) -> Result<T, Arc<BoxError>>
    where
        S: Service<Req, Response = T>,
        S::Error: Into<BoxError>,
    {
        bump(&self.shared.counters.origin_calls);
        let value = service
            .call(request)
            .await
            .map_err(|e| Arc::new(e.into()))?;
        if value.is_storable() && (self.shared.keep)(&value) {
            telemetry::count::cache_recompute();
        }
        Ok(value)
    }

    /// With the lease `held`: calls the origin, measures Δ, writes the value
    /// if the lease is still ours, and frees the lease (also when the load
    /// fails or is cancelled).
    async fn load<S, Req>(
        &self,
        key: &K,
        mut held: Held<K, T>,
        service: &mut S,
        request: Req,
        rng: &mut Stream,
    ) -> Result<T, Arc<BoxError>>
    where
        S: Service<Req, Response = T>,
        S::Error: Into<BoxError>,
    {
        let shared = &self.shared;
        let names = held.names.clone().expect("an armed lease");
        let token = held.token.clone();
        let names = &names;
        let started = Instant::now();
        let value = match self.call_origin(service, request).await {
            Ok(value) => value,
            Err(error) => {
                held.release().await; // the next filler need not wait for it to expire
                return Err(error);
            }
        };
        let delta = started.elapsed();
        let config = &shared.config;
        if !value.is_storable() || !(shared.keep)(&value) {
            held.release().await;
            return Ok(value);
        }
        let offset = config.freshness.jitter.offset(key, rng.fraction());
        tracing::Span::current().record(CACHE_TTL_OFFSET_MS, telemetry::millis(offset));
        telemetry::count::cache_ttl_offset(offset);
        let header = Header {
            delta,
            stale: config.freshness.stale_while_revalidate,
        };
        let bytes = encode(&value, &header);
        let life = config.freshness.ttl + offset + config.freshness.stale_while_revalidate;
        let written = lease::write(&shared.link, names, &token, &bytes, life).await;
        if written.is_some() {
            held.disarm(); // the write freed the lease (or it was not ours any more)
        }
        if written == Some(true) {
            bump(&shared.counters.stores);
            telemetry::count::cache_store();
        }
        if written == Some(false) {
            bump(&shared.counters.leases_lost);
            tracing::event!(
                target: "dephase::redis",
                Level::WARN,
                key = %names.value,
                load_ms = telemetry::millis(delta),
                "the value was not written: its lease was gone when the load ended (the key was invalidated, or the lease expired: then raise lease_ttl)"
            );
        }
        Ok(value)
    }

    /// Starts a refresh of `key` in the background if this replica is not
    /// already refreshing it and there is a runtime: it takes the lease
    /// (so one replica of the fleet refreshes) and loads. `true` if started.
    fn refresh_in_background<S, Req>(
        &self,
        key: K,
        mut service: S,
        request: Req,
        mut rng: Stream,
        seen_pttl: i64,
    ) -> bool
    where
        S: Service<Req, Response = T> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        Req: Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if !self.refreshing().insert(key.clone()) {
            return false;
        }
        // Made before the spawn, so that the key leaves the set even if the
        // task is dropped unpolled (a runtime shutting down).
        let done = Refreshing {
            store: self.clone(),
            key,
        };
        runtime.spawn(async move {
            let Refreshing { store, key } = &done;
            let names = store.names(key);
            let token = new_token();
            let ttl = store.shared.config.lease_ttl;
            // Armed before the await that may take the lease.
            let mut held = Held::new(store, &names, &token);
            match lease::acquire(&store.shared.link, &names, &token, ttl, seen_pttl).await {
                Some(true) => {
                    let _ = store.load(key, held, &mut service, request, &mut rng).await;
                }
                Some(false) => held.disarm(),
                None => {} // unknown: the guard releases it if it is ours
            }
        });
        true
    }
}

/// Takes a key off the refreshing set when its background refresh ends.
struct Refreshing<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    store: RedisStore<K, T>,
    key: K,
}

impl<K, T> Drop for Refreshing<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.store.refreshing().remove(&self.key);
    }
}

/// A lease this flight may hold: made before the command that can take
/// it, disarmed when Redis says it was not taken or the value is written;
/// freed when the load fails or its value is not stored, and in the
/// background if the flight is dropped (cancelled, or panicking) while it
/// is armed — also between the command that took the lease and its reply.
/// Freeing is conditional on the token, so a guard whose command did not
/// take the lease frees nothing.
struct Held<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    store: RedisStore<K, T>,
    names: Option<Names>,
    token: String,
}

impl<K, T> Held<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    /// A guard for the lease of `names` with `token`, armed: dropped, it
    /// releases the lease if it holds this token.
    fn new(store: &RedisStore<K, T>, names: &Names, token: &str) -> Self {
        Held {
            store: store.clone(),
            names: Some(names.clone()),
            token: token.to_owned(),
        }
    }

    /// The lease is known not to be ours (any more): nothing to release.
    fn disarm(&mut self) {
        self.names = None;
    }

    async fn release(&mut self) {
        if let Some(names) = self.names.take() {
            lease::release(&self.store.shared.link, &names, &self.token).await;
        }
    }
}

impl<K, T> Drop for Held<K, T>
where
    K: fmt::Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: RedisValue + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        let (Some(names), Ok(runtime)) = (self.names.take(), tokio::runtime::Handle::try_current())
        else {
            return; // written, or no runtime: the lease expires by itself
        };
        let store = self.store.clone();
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move { lease::release(&store.shared.link, &names, &token).await });
    }
}

//! The cache-stampede model shared by `examples/cache_stampede` and
//! `tests/cache_stampede.rs`: Poisson arrivals on one hot key in front of a
//! slow recompute, on tokio's clock (run it with time paused).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::BoxError;
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use dephase::measure::Recorder;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// One hot key.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Mean requests per second (Poisson arrivals).
    pub rate: f64,
    /// How long the origin takes to compute the value (Δ).
    pub recompute: Duration,
    pub ttl: Duration,
    pub duration: Duration,
    pub seed: u64,
}

/// How the value is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A plain TTL cache: every request that finds the entry missing or
    /// expired recomputes it.
    PlainTtl,
    /// Misses coalesced, no early refresh: what moka's `get_with` gives.
    Coalesced,
    /// dephase's cache: misses coalesced and XFetch early refresh (β = 1).
    XFetch,
    /// The same with β = 0.5: refreshes later, fewer extra recomputes.
    XFetchHalfBeta,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::PlainTtl,
        Strategy::Coalesced,
        Strategy::XFetch,
        Strategy::XFetchHalfBeta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::PlainTtl => "plain TTL",
            Strategy::Coalesced => "coalescing only",
            Strategy::XFetch => "XFetch + coalescing",
            Strategy::XFetchHalfBeta => "XFetch β=0.5 + coal.",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub requests: usize,
    /// Recomputes once the value had been cached for the first time (the
    /// cold start's are not a stampede on expiry).
    pub recomputes: usize,
    /// Expiry periods in the run: duration / TTL.
    pub expiries: f64,
    /// Requests that waited for a recompute, once the value had been cached
    /// for the first time (after warm-up).
    pub waited: usize,
    /// Recomputes that started while another one was running.
    pub duplicates: usize,
}

impl Report {
    pub fn recomputes_per_expiry(&self) -> f64 {
        self.recomputes as f64 / self.expiries
    }

    pub fn waited_per_expiry(&self) -> f64 {
        self.waited as f64 / self.expiries
    }
}

/// The origin: counts recomputes (and those that overlap another), takes
/// `recompute` to answer.
fn origin(
    recompute: Duration,
    count: Arc<AtomicUsize>,
    duplicates: Arc<AtomicUsize>,
    warm: Arc<std::sync::atomic::AtomicBool>,
) -> impl Service<u32, Response = u64, Error = BoxError, Future: Send + 'static> + Clone + Send + 'static
{
    let running = Arc::new(AtomicUsize::new(0));
    tower::service_fn(move |key: u32| {
        let n = count.load(Ordering::SeqCst) as u64;
        if warm.load(Ordering::SeqCst) {
            count.fetch_add(1, Ordering::SeqCst);
            if running.load(Ordering::SeqCst) > 0 {
                duplicates.fetch_add(1, Ordering::SeqCst);
            }
        }
        running.fetch_add(1, Ordering::SeqCst);
        let running = running.clone();
        async move {
            tokio::time::sleep(recompute).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(u64::from(key) * 1_000_000 + n)
        }
    })
}

/// A plain TTL cache in front of a service, as a naive client writes it.
#[derive(Clone)]
struct PlainTtl<S> {
    inner: S,
    ttl: Duration,
    entries: Arc<Mutex<HashMap<u32, (u64, Instant)>>>,
}

impl<S> PlainTtl<S>
where
    S: Service<u32, Response = u64, Error = BoxError> + Clone,
{
    async fn get(mut self, key: u32) -> Result<u64, BoxError> {
        let cached = self.entries.lock().unwrap().get(&key).copied();
        if let Some((value, expires)) = cached {
            if Instant::now() < expires {
                return Ok(value);
            }
        }
        let value = self.inner.ready().await?.call(key).await?;
        self.entries
            .lock()
            .unwrap()
            .insert(key, (value, Instant::now() + self.ttl));
        Ok(value)
    }
}

/// Runs the scenario with one strategy. Call it with time paused.
pub async fn run(scenario: Scenario, strategy: Strategy) -> Report {
    let recomputes = Arc::new(AtomicUsize::new(0));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let waits = Arc::new(AtomicUsize::new(0));
    let warm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let origin = origin(
        scenario.recompute,
        recomputes.clone(),
        duplicates.clone(),
        warm.clone(),
    );
    let plain = PlainTtl {
        inner: origin.clone(),
        ttl: scenario.ttl,
        entries: Arc::default(),
    };
    let store = MemoryStore::builder(1000)
        .ttl(scenario.ttl)
        .ttl_jitter(TtlJitter::None)
        .early_refresh(matches!(
            strategy,
            Strategy::XFetch | Strategy::XFetchHalfBeta
        ))
        .beta(if strategy == Strategy::XFetchHalfBeta {
            0.5
        } else {
            1.0
        })
        .seed(scenario.seed)
        .build()
        .expect("valid settings");
    let cached = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |key: &u32| Some(*key)))
        .service(origin);

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(scenario.seed);
    let start = Instant::now();
    let end = start + scenario.duration;
    let mut at = start;
    let mut requests = 0;
    let mut tasks = Vec::new();
    while at < end {
        tokio::time::sleep_until(at).await;
        requests += 1;
        let (waits, warm) = (waits.clone(), warm.clone());
        let (plain, cached) = (plain.clone(), cached.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let warmed_up = warm.load(Ordering::SeqCst);
            let answer = match strategy {
                Strategy::PlainTtl => plain.get(1).await,
                _ => cached.oneshot(1).await,
            };
            answer.expect("the origin always answers");
            warm.store(true, Ordering::SeqCst);
            if sent.elapsed() > Duration::ZERO && warmed_up {
                waits.fetch_add(1, Ordering::Relaxed);
            }
        }));
        // Exponential gaps: a Poisson process of the given rate.
        let u: f64 = 1.0 - rng.random::<f64>();
        at += Duration::from_secs_f64(-u.ln() / scenario.rate);
    }
    for task in tasks {
        task.await.expect("a request task");
    }
    Report {
        requests,
        recomputes: recomputes.load(Ordering::SeqCst),
        // The first value is cached at about `recompute`; it then expires
        // every TTL.
        expiries: (scenario.duration.as_secs_f64() - scenario.recompute.as_secs_f64())
            / scenario.ttl.as_secs_f64(),
        waited: waits.load(Ordering::Relaxed),
        duplicates: duplicates.load(Ordering::SeqCst),
    }
}

/// `keys` hot keys written at the same instant, then read continuously:
/// when each key is recomputed for the first time after that write.
pub async fn hot_keys(keys: u32, ttl: Duration, jitter: TtlJitter, seed: u64) -> Vec<Duration> {
    let loads = Recorder::new();
    let recorder = loads.clone();
    let origin = tower::service_fn(move |key: u32| {
        recorder.mark();
        async move { Ok::<_, BoxError>(u64::from(key)) }
    });
    let store = MemoryStore::builder(10_000)
        .ttl(ttl)
        .ttl_jitter(jitter)
        .early_refresh(false)
        .seed(seed)
        .build()
        .expect("valid settings");
    let mut cached = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |key: &u32| Some(*key)))
        .service(origin);
    // Every key, every 10 ms, for two TTLs.
    let step = Duration::from_millis(10);
    let start = Instant::now();
    while start.elapsed() < ttl * 2 {
        for key in 0..keys {
            cached
                .ready()
                .await
                .expect("ready")
                .call(key)
                .await
                .expect("answer");
        }
        tokio::time::sleep(step).await;
    }
    // The first load of each key is the write; the next ones are recomputes.
    loads
        .times()
        .into_iter()
        .skip(keys as usize)
        .take(keys as usize)
        .collect()
}

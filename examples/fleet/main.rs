//! Recomputes per expiry across a fleet: N replicas of a service, each
//! with its own in-process cache, against the same N replicas sharing a
//! Redis store with leases.
//!
//! A real `redis-server` is started on a free loopback port (Debian's
//! package; without it the example says so and stops). Each replica sends
//! a request for one hot key every 10 ms for 4 s to its own cache layer in
//! front of a shared origin that takes 50 ms. The TTL is 1 s (plus the
//! default jitter of up to a tenth), so each run sees the key expire three
//! or four times. Early refresh is off in both modes, so that an expiry is
//! a plain TTL expiry (XFetch refreshes earlier the more requests draw, so
//! with it on the number of refreshes in a run depends on the request rate):
//!
//! - **in-process**: each replica has its own [`CacheLayer`] (moka store,
//!   coalesced loads): one recompute per expiry *per replica*.
//! - **Redis lease**: each replica has its own [`RedisStore`] (its own
//!   connection and flights) on the shared server: one recompute per
//!   expiry for the fleet.
//!
//! Then the other fleet stores ([`rest`]): a gate, a pacer and a retry
//! budget shared by replicas through Redis, against each replica alone.
//!
//! ```text
//! cargo run --release --example fleet --features redis
//! ```

pub mod rest;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dephase::BoxError;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::redis::RedisStore;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const TTL: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_secs(4);
const EVERY: Duration = Duration::from_millis(10);
const ORIGIN_TIME: Duration = Duration::from_millis(50);

type Replica = BoxCloneSyncService<String, String, BoxError>;

/// The shared origin: counts calls, and how many run at once.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Origin {
    fn service(
        &self,
    ) -> impl tower::Service<String, Response = String, Error = BoxError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static {
        let origin = self.clone();
        tower::service_fn(move |key: String| {
            let origin = origin.clone();
            async move {
                let call = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let now = origin.running.fetch_add(1, Ordering::SeqCst) + 1;
                origin.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(ORIGIN_TIME).await;
                origin.running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(format!("{key} v{call}"))
            }
        })
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Replicas in the fleet.
    pub replicas: usize,
    /// Requests sent, and answered with a value.
    pub requests: usize,
    /// Requests answered with a value.
    pub answered: usize,
    /// Origin calls in the run.
    pub origin_calls: usize,
    /// Most origin calls running at once.
    pub origin_peak: usize,
    /// Redis: flights that waited for another replica's load.
    pub waited: usize,
    /// Redis: flights served without it (unreachable, or waited too long).
    pub degraded: usize,
}

/// Drives `replicas` for `run_for` and counts.
async fn drive(replicas: Vec<Replica>, origin: &Origin, run_for: Duration) -> Run {
    let sent = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut drivers = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let (replica, sent, answered) = (replica.clone(), sent.clone(), answered.clone());
        // Replicas start spread over one tick, as real ones would.
        let start = tokio::time::Instant::now() + EVERY * i as u32 / replicas.len() as u32;
        drivers.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start, EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = start + run_for;
            let mut requests = Vec::new();
            while ticks.tick().await < end {
                sent.fetch_add(1, Ordering::Relaxed);
                let (replica, answered) = (replica.clone(), answered.clone());
                requests.push(tokio::spawn(async move {
                    if replica.oneshot("hot".to_string()).await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for request in requests {
                let _ = request.await;
            }
        }));
    }
    for driver in drivers {
        driver.await.expect("a replica's driver panicked");
    }
    Run {
        replicas: replicas.len(),
        requests: sent.load(Ordering::Relaxed),
        answered: answered.load(Ordering::Relaxed),
        origin_calls: origin.calls.load(Ordering::SeqCst),
        origin_peak: origin.peak.load(Ordering::SeqCst),
        waited: 0,
        degraded: 0,
    }
}

/// A fleet of `n` replicas with in-process caches.
async fn in_process(n: usize, run_for: Duration) -> Run {
    let origin = Origin::default();
    let replicas = (0..n)
        .map(|_| {
            let store = MemoryStore::builder(1000)
                .ttl(TTL)
                .early_refresh(false)
                .build()
                .expect("valid store");
            let layer = CacheLayer::new(store, |k: &String| Some(k.clone()));
            BoxCloneSyncService::new(layer.layer(origin.service()))
        })
        .collect();
    drive(replicas, &origin, run_for).await
}

/// A fleet of `n` replicas sharing the Redis store at `url`.
async fn with_redis(n: usize, url: &str, run_for: Duration) -> Run {
    let origin = Origin::default();
    let stores: Vec<RedisStore<String, String>> = (0..n)
        .map(|_| {
            RedisStore::builder(url)
                .prefix(format!("fleet{n}:"))
                .ttl(TTL)
                .early_refresh(false)
                .build()
                .expect("valid store")
        })
        .collect();
    let replicas = stores
        .iter()
        .map(|store| {
            let layer = CacheLayer::new(store.clone(), |k: &String| Some(k.clone()));
            BoxCloneSyncService::new(layer.layer(origin.service()))
        })
        .collect();
    let mut run = drive(replicas, &origin, run_for).await;
    for store in &stores {
        let stats = store.stats();
        run.waited += stats.waited as usize;
        run.degraded += stats.degraded as usize + stats.wait_deadlines as usize;
    }
    run
}

/// Both modes for each fleet size, each for `run_for`, against the Redis
/// server at `url`.
pub async fn run(url: &str, sizes: &[usize], run_for: Duration) -> Vec<(Run, Run)> {
    let mut runs = Vec::new();
    for &n in sizes {
        runs.push((
            in_process(n, run_for).await,
            with_redis(n, url, run_for).await,
        ));
    }
    runs
}

/// Recomputes per expiry: origin calls of `run` over those of one replica
/// in the same mode and time (one replica recomputes once per expiry).
pub fn per_expiry(run: &Run, single: &Run) -> f64 {
    run.origin_calls as f64 / single.origin_calls as f64
}

#[tokio::main]
async fn main() {
    let server = match server::RedisServer::start() {
        Ok(Some(server)) => server,
        Ok(None) => {
            println!("fleet: {}", server::SKIPPED);
            return;
        }
        Err(error) => {
            eprintln!("fleet: redis-server did not start: {error}");
            std::process::exit(1);
        }
    };
    println!(
        "one hot key, TTL {TTL:?} (+ up to 10% jitter), no early refresh; each replica sends a request every {EVERY:?} for {RUN:?}; the origin takes {ORIGIN_TIME:?}\n"
    );
    println!(
        "{:>8} | {:>30} | {:>38} | {:>19}",
        "replicas",
        "in-process: calls, per expiry",
        "Redis lease: calls, per expiry, waited",
        "answered in / Redis"
    );
    let runs = run(&server.url(), &[1, 10, 50], RUN).await;
    let (single_local, single_shared) = runs[0];
    for (local, shared) in &runs {
        println!(
            "{:>8} | {:>6} {:>9.2} (peak {:>3}) | {:>6} {:>9.2} (peak {:>3}) {:>7} | {:>8.1}% / {:>6.1}%",
            local.replicas,
            local.origin_calls,
            per_expiry(local, &single_local),
            local.origin_peak,
            shared.origin_calls,
            per_expiry(shared, &single_shared),
            shared.origin_peak,
            shared.waited,
            100.0 * local.answered as f64 / local.requests as f64,
            100.0 * shared.answered as f64 / shared.requests as f64,
        );
        if shared.degraded > 0 {
            println!(
                "         ({} Redis flights were served without it)",
                shared.degraded
            );
        }
    }
    println!(
        "\ncalls: origin calls in the run; per expiry: calls / calls of one replica in the same mode; peak: most origin calls at once; waited: flights that waited for another replica's load"
    );

    let url = server.url();
    let (peak, took) = rest::gate(&url).await;
    println!(
        "\nFleetGate, K = 5: 100 jobs of 20 ms over 10 replicas: at most {peak} at once, all done in {took:.2?}"
    );
    let [(shared_peak, shared_last), (alone_peak, alone_last)] = rest::pacer(&url).await;
    println!(
        "FleetPacer, 100 a second for 10 replicas × 30 callers: at most {shared_peak} in any 100 ms, the last at {shared_last:.2?}; a Pacer per replica: {alone_peak} in 100 ms, the last at {alone_last:.2?}"
    );
    for replicas in [1, 5, 10] {
        let [shared, alone] = rest::budget(&url, replicas).await;
        println!(
            "FleetBudget, 50 retries a second, {replicas:>2} replicas flooding: {shared:.1} retries/s; a RatioBudget of 50/s per replica: {alone:.1}/s"
        );
    }
}

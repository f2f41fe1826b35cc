//! Stampede layers against their peers, in the same run:
//!
//! - `coalesce_10000_waiters`: 10 000 callers of one key at once, one
//!   call; the time for all of them to get the result, and the polls each
//!   waiter took (printed and written to `target/stampede_polls.json`),
//!   for dephase's `Coalesce`, tower-resilience-coalesce, moka's
//!   `get_with` and async_singleflight;
//! - `coalesce_uncontended`: one caller per key, the call ready at once:
//!   the overhead of going through the coalescer at all;
//! - `cache_hit`: a hit through dephase's `Cache` layer against a direct
//!   moka `get` (sync and future).
//!
//! ```text
//! cargo bench --bench peers -- coalesce cache_hit
//! ```

use std::future::Future;
use std::hint::black_box;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use dephase::BoxError;
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use dephase::coalesce::CoalesceLayer;
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

use crate::support;

const WAITERS: usize = 10_000;
/// How long the call takes in the polls-per-waiter figure.
const HOLD: Duration = Duration::from_millis(50);

/// Counts the polls of a future.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// The one slow call: pending until released.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<Notify>,
    started: Arc<AtomicBool>,
}

impl Gate {
    fn call(&self) -> impl Future<Output = u64> + Send + use<> {
        let gate = self.clone();
        async move {
            let opened = gate.open.notified();
            gate.started.store(true, Ordering::SeqCst);
            opened.await;
            42
        }
    }
}

/// Runs one herd of `WAITERS` callers of `call` (made per caller): spawns
/// them, lets every one of them poll, keeps the call pending for `hold`,
/// opens the gate, waits for all. Returns the wall time and the polls.
async fn herd<F, Fut>(gate: &Gate, call: F, hold: Duration) -> (Duration, usize)
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let polls = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..WAITERS)
        .map(|_| {
            tokio::spawn(Counted {
                inner: Box::pin(call()),
                polls: polls.clone(),
            })
        })
        .collect();
    while !gate.started.load(Ordering::SeqCst) || polls.load(Ordering::Relaxed) < WAITERS {
        tokio::task::yield_now().await;
    }
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    gate.open.notify_waiters();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 42);
    }
    (start.elapsed(), polls.load(Ordering::Relaxed))
}

fn gated_service(
    gate: Gate,
) -> impl Service<u32, Response = u64, Error = BoxError, Future: Send + 'static> + Clone + Send + 'static
{
    tower::service_fn(move |_: u32| {
        let call = gate.call();
        async move { Ok::<_, BoxError>(call.await) }
    })
}

#[derive(Debug, Clone)]
struct Never;

/// Given the gate, makes a function that makes one caller's future.
type MakeCaller = dyn Fn(Gate) -> Box<dyn Fn() -> Pin<Box<dyn Future<Output = u64> + Send>>>;

fn ten_thousand_waiters(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("coalesce_10000_waiters");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(WAITERS as u64));
    let polls_per_waiter = std::sync::Mutex::new(Vec::new());

    let mut run = |name: &'static str, make: &MakeCaller| {
        let mut total_polls = 0;
        let mut herds = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let gate = Gate::default();
                    let call = make(gate.clone());
                    let (took, polls) = runtime.block_on(herd(&gate, &*call, Duration::ZERO));
                    elapsed += took;
                    total_polls += polls;
                    herds += 1;
                }
                elapsed
            })
        });
        // Outside the timing: how often each waiter is polled while the
        // call takes 50 ms (a waiter that spins is polled all that time).
        let gate = Gate::default();
        let call = make(gate.clone());
        let (_, held_polls) = runtime.block_on(herd(&gate, &*call, HOLD));
        polls_per_waiter.lock().unwrap().push((
            name,
            total_polls as f64 / (herds * WAITERS) as f64,
            held_polls as f64 / WAITERS as f64,
        ));
    };

    run("dephase", &|gate| {
        let svc = CoalesceLayer::new(|k: &u32| Some(*k)).layer(gated_service(gate));
        Box::new(move || {
            let svc = svc.clone();
            Box::pin(async move { svc.oneshot(1).await.unwrap() })
        })
    });
    run("tower_resilience_coalesce", &|gate| {
        let svc = tower_resilience_coalesce::CoalesceLayer::new(|k: &u32| *k).layer(
            tower::service_fn(move |_: u32| {
                let call = gate.call();
                async move { Ok::<_, Never>(call.await) }
            }),
        );
        Box::new(move || {
            let svc = svc.clone();
            Box::pin(async move { svc.oneshot(1).await.unwrap() })
        })
    });
    run("moka_get_with", &|gate| {
        let cache: moka::future::Cache<u32, u64> = moka::future::Cache::new(100);
        Box::new(move || {
            let (cache, gate) = (cache.clone(), gate.clone());
            Box::pin(async move { cache.get_with(1, gate.call()).await })
        })
    });
    run("async_singleflight", &|gate| {
        let group: Arc<async_singleflight::Group<u32, u64, Never>> =
            Arc::new(async_singleflight::Group::new());
        Box::new(move || {
            let (group, gate) = (group.clone(), gate.clone());
            Box::pin(async move {
                group
                    .work(&1, async move { Ok::<_, Never>(gate.call().await) })
                    .await
                    .unwrap_or_else(|_| panic!("singleflight failed"))
            })
        })
    });
    group.finish();

    let path = support::target_dir().join("stampede_polls.json");
    let mut out = std::fs::File::create(&path).unwrap();
    println!(
        "\npolls per waiter, {WAITERS} waiters on one key: call ready at once / call taking {HOLD:?}"
    );
    for (name, polls, held) in polls_per_waiter.into_inner().unwrap() {
        println!("  {name:<28} {polls:>10.2} {held:>14.2}");
        writeln!(
            out,
            "{}",
            serde_json::json!({"bench": "coalesce_10000_waiters", "contender": name, "polls_per_waiter": polls, "polls_per_waiter_50ms_call": held})
        )
        .unwrap();
    }
}

fn uncontended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("coalesce_uncontended");
    group.throughput(Throughput::Elements(1));

    let inner = tower::service_fn(|k: u32| std::future::ready(Ok::<u64, BoxError>(u64::from(k))));
    let mut ours = CoalesceLayer::new(|k: &u32| Some(*k)).layer(inner);
    group.bench_function("dephase", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            support::now(ours.call(black_box(k))).unwrap()
        })
    });
    let cache: moka::future::Cache<u32, u64> = moka::future::Cache::new(10_000);
    group.bench_function("moka_get_with", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            runtime.block_on(cache.get_with(black_box(k), async move { u64::from(k) }))
        })
    });
    let flights: async_singleflight::Group<u32, u64, Never> = async_singleflight::Group::new();
    group.bench_function("async_singleflight", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            runtime
                .block_on(flights.work(&black_box(k), async move { Ok::<_, Never>(u64::from(k)) }))
                .unwrap_or(0)
        })
    });
    group.finish();
}

/// A cache holding keys `0..100` (each a hit from now on).
fn hundred_hits(
    runtime: &tokio::runtime::Runtime,
) -> impl Service<u32, Response = u64, Error = BoxError, Future: Unpin> {
    let server = support::server_runtime();
    let store = {
        let _built_in = server.enter();
        MemoryStore::builder(10_000)
            .ttl(Duration::from_secs(3600))
            .ttl_jitter(TtlJitter::None)
            .build()
            .unwrap()
    };
    let inner = tower::service_fn(|k: u32| std::future::ready(Ok::<u64, BoxError>(u64::from(k))));
    let mut ours = CacheLayer::new(store, |k: &u32| Some(*k)).layer(inner);
    runtime.block_on(async {
        for k in 0..100 {
            ours.ready().await.unwrap().call(k).await.unwrap();
        }
    });
    ours
}

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("cache_hit");
    group.throughput(Throughput::Elements(1));

    let mut ours = hundred_hits(&runtime);
    group.bench_function("dephase", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = (k + 1) % 100;
            support::now(ours.call(black_box(k))).unwrap()
        })
    });
    let sync: moka::sync::Cache<u32, u64> = moka::sync::Cache::new(10_000);
    let future: moka::future::Cache<u32, u64> = moka::future::Cache::new(10_000);
    for k in 0..100u32 {
        sync.insert(k, u64::from(k));
        runtime.block_on(future.insert(k, u64::from(k)));
    }
    group.bench_function("moka_sync_get", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = (k + 1) % 100;
            sync.get(&black_box(k)).unwrap()
        })
    });
    group.bench_function("moka_future_get", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = (k + 1) % 100;
            support::now(future.get(&black_box(k))).unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = ten_thousand_waiters, uncontended, cache_hit
}

/// (group, ours, peer, peer's name) for the ratio report.
pub fn ratios() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        (
            "coalesce_10000_waiters",
            "dephase",
            "tower_resilience_coalesce",
            "tower-resilience-coalesce",
        ),
        (
            "coalesce_10000_waiters",
            "dephase",
            "moka_get_with",
            "moka get_with",
        ),
        (
            "coalesce_10000_waiters",
            "dephase",
            "async_singleflight",
            "async_singleflight",
        ),
        (
            "coalesce_uncontended",
            "dephase",
            "moka_get_with",
            "moka get_with",
        ),
        (
            "coalesce_uncontended",
            "dephase",
            "async_singleflight",
            "async_singleflight",
        ),
        ("cache_hit", "dephase", "moka_sync_get", "moka sync get"),
        ("cache_hit", "dephase", "moka_future_get", "moka future get"),
    ]
}

/// A cache hit against moka's sync `get`, in paired rounds (see
/// `support::paired`).
pub fn paired() -> Vec<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut ours = hundred_hits(&runtime);
    let sync: moka::sync::Cache<u32, u64> = moka::sync::Cache::new(10_000);
    for k in 0..100u32 {
        sync.insert(k, u64::from(k));
    }
    let (mut a, mut b) = (0u32, 0u32);
    vec![support::paired(
        "cache_hit/dephase",
        "moka sync get",
        20_000,
        || {
            a = (a + 1) % 100;
            black_box(support::now(ours.call(black_box(a))).unwrap());
        },
        || {
            b = (b + 1) % 100;
            black_box(sync.get(&black_box(b)).unwrap());
        },
    )]
}

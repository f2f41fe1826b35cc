//! The whole stack on a real HTTP client, and what span tagging costs.
//!
//! - `http_stack/miss`: a GET over loopback to an axum server (on the same
//!   thread as the client) through
//!   hyper-util's client wrapped in retry (with a shared budget), a circuit
//!   breaker and a cache with coalesced loads (body fan-out), against the
//!   bare client in the same run. Each request has its own URI, so every
//!   one misses the cache and goes to the server: the layers' overhead on
//!   a request that does the work (the target: ≤ 10%).
//! - `http_stack/without_cache`: the same without the cache (retry, budget,
//!   breaker, coalescing with body fan-out).
//! - `http_stack/hit`: the whole stack when the cache answers, for scale.
//! - `span_tagging`: a cache hit with no subscriber installed, against the
//!   same hit with a subscriber that records every field on an entered span;
//!   and the tagging calls alone with no subscriber.
//!
//! ```text
//! cargo bench --bench http_stack
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use dephase::backoff::ExponentialBackoff;
use dephase::breaker::Breaker;
use dephase::budget::RatioBudget;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::CoalesceLayer;
use dephase::http::{Collected, FanoutLayer, HttpClassifier, IdempotentRequests, RequestKey};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::{BoxError, CircuitBreakerLayer};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

mod support;

/// Sends `n` GETs one after another through `service`, reading each body;
/// each to `/items/<next>`, `next` advanced by `step` (0: always the same item).
async fn send<S, B>(
    service: &mut S,
    address: std::net::SocketAddr,
    n: u64,
    next: &AtomicU64,
    step: u64,
) where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for _ in 0..n {
        let id = next.fetch_add(step, Ordering::Relaxed);
        let request = http::Request::get(format!("http://{address}/items/{id}"))
            .body(Empty::new())
            .unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        black_box(response.into_body().collect().await.unwrap());
    }
}

/// CPU time this thread has run, in nanoseconds (Linux's schedstat); the
/// wall clock elsewhere.
fn thread_cpu_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| START.get_or_init(Instant::now).elapsed().as_nanos() as u64)
}

/// The retry policy of both stacks: 3 attempts, a ratio budget, HTTP rules.
fn retry_policy() -> RetryPolicy<HttpClassifier, IdempotentRequests, RatioBudget> {
    RetryPolicy::builder()
        .max_attempts(3)
        .backoff(ExponentialBackoff::builder().build().unwrap())
        .budget(RatioBudget::builder().build().unwrap())
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()
        .unwrap()
}

/// The breaker of both stacks, classifying the HTTP way.
fn breaker() -> CircuitBreakerLayer<HttpClassifier> {
    CircuitBreakerLayer::new(Breaker::builder().build().unwrap()).classify(HttpClassifier::new())
}

fn http_stack(c: &mut Criterion) {
    // Server and client on one thread: each request's time is the CPU work
    // of both ends plus the loopback syscalls, without the cross-thread
    // wake-ups that make a two-thread run on this 2-core VM vary by ±20%.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/items/{id}",
            axum::routing::get(|| async { "a small JSON document, say" }),
        );
        tokio::spawn(axum::serve(listener, app).into_future());
        address
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // Bounded and full after the first thousand requests: a miss inserts
    // and evicts, as in a cache in steady state.
    let store = MemoryStore::builder(1_000)
        .ttl(Duration::from_secs(3600))
        .store_if(Collected::is_cacheable)
        .build()
        .unwrap();
    let cache_and_coalesce = ServiceBuilder::new()
        .layer(CacheLayer::new(store, RequestKey::new().into_fn()))
        .layer(CoalesceLayer::new(RequestKey::new().into_fn()))
        .into_inner();
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(retry_policy()))
        .layer(breaker())
        .layer(FanoutLayer::new(64 * 1024, cache_and_coalesce))
        .service(client.clone());

    let without_cache = ServiceBuilder::new()
        .layer(RetryLayer::new(retry_policy()))
        .layer(breaker())
        .layer(FanoutLayer::new(
            64 * 1024,
            CoalesceLayer::new(RequestKey::new().into_fn()),
        ))
        .service(client.clone());

    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("http_stack");
    let hot = AtomicU64::new(u64::MAX / 2);
    runtime.block_on(send(&mut stack.clone(), address, 1, &hot, 0)); // cached from now on
    let runs: [(&str, &AtomicU64, u64); 4] = [
        ("bare_client", &next, 1),
        ("miss", &next, 1),
        ("without_cache", &next, 1),
        ("hit", &hot, 0),
    ];
    for (name, ids, step) in runs {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    match name {
                        "bare_client" => send(&mut client.clone(), address, iters, ids, step).await,
                        "without_cache" => {
                            send(&mut without_cache.clone(), address, iters, ids, step).await
                        }
                        _ => send(&mut stack.clone(), address, iters, ids, step).await,
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    // Paired rounds: the machine's speed drifts by more than the overhead
    // being measured between criterion's functions (run one after the
    // other), so the ratios come from rounds that alternate the three
    // clients, 500 requests each, and their median; each round is timed in
    // CPU time of this thread (server and client both run on it), which
    // leaves out the time the VM was not running us.
    let rounds = 30;
    let mut ratios = (Vec::new(), Vec::new());
    runtime.block_on(async {
        let (mut bare, mut full, mut lean) = (client.clone(), stack.clone(), without_cache.clone());
        for _ in 0..rounds {
            let time = |started: u64| (thread_cpu_ns() - started) as f64;
            let started = thread_cpu_ns();
            send(&mut bare, address, 500, &next, 1).await;
            let bare_s = time(started);
            let started = thread_cpu_ns();
            send(&mut full, address, 500, &next, 1).await;
            let full_s = time(started);
            let started = thread_cpu_ns();
            send(&mut lean, address, 500, &next, 1).await;
            let lean_s = time(started);
            ratios.0.push(full_s / bare_s);
            ratios.1.push(lean_s / bare_s);
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (miss, lean) = (median(&mut ratios.0), median(&mut ratios.1));
    println!(
        "\npaired rounds ({rounds} × 500 requests each), median ratio to the bare client [min, max]:"
    );
    println!(
        "  whole stack, every request a cache miss: {:.2} [{:.2}, {:.2}]",
        miss.0, miss.1, miss.2
    );
    println!(
        "  without the cache:                       {:.2} [{:.2}, {:.2}]",
        lean.0, lean.1, lean.2
    );
    let path = support::target_dir().join("http_stack_paired.json");
    let json = serde_json::json!({
        "rounds": rounds,
        "requests_per_round": 500,
        "miss_ratio": {"median": miss.0, "min": miss.1, "max": miss.2},
        "without_cache_ratio": {"median": lean.0, "min": lean.1, "max": lean.2},
    });
    std::fs::write(&path, json.to_string()).expect("write the paired ratios");
    println!("wrote {}", path.display());
}

fn span_tagging(c: &mut Criterion) {
    use tracing::field::Empty as Unset;
    use tracing_subscriber::layer::SubscriberExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = runtime.enter();
    let store = MemoryStore::builder(100)
        .ttl(Duration::from_secs(3600))
        .early_refresh(false)
        .build()
        .unwrap();
    let cache =
        CacheLayer::new(store, |k: &u32| Some(*k)).layer(tower::service_fn(|k: u32| async move {
            Ok::<_, BoxError>(k)
        }));
    support::now(cache.clone().oneshot(1)).unwrap();

    let mut group = c.benchmark_group("span_tagging");
    group.bench_function("cache_hit_no_subscriber", |b| {
        let mut cache = cache.clone();
        b.iter(|| support::now(cache.call(black_box(1))).unwrap())
    });
    group.bench_function("cache_hit_recording", |b| {
        // A subscriber that keeps every recorded field of an entered span.
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                dephase.cache.result = Unset,
                dephase.cache.expires_in_ms = Unset,
            );
            let _entered = span.enter();
            let mut cache = cache.clone();
            b.iter(|| support::now(cache.call(black_box(1))).unwrap())
        })
    });
    group.bench_function("tagging_alone_no_subscriber", |b| {
        b.iter(|| {
            let span = tracing::Span::current();
            span.record(dephase::telemetry::CACHE_RESULT, black_box("hit"));
            span.record(dephase::telemetry::CACHE_EXPIRES_IN_MS, black_box(1.0));
            tracing::event!(target: "dephase::cache", tracing::Level::TRACE, dephase.cache.result = "hit", "cache lookup");
        })
    });
    group.bench_function("nothing", |b| b.iter(|| black_box(1)));
    group.finish();
}

fn report() {
    support::report(
        "http_stack_ratios.json",
        &[
            (
                "http_stack",
                "miss",
                "bare_client",
                "hyper-util client, bare",
            ),
            (
                "http_stack",
                "without_cache",
                "bare_client",
                "hyper-util client, bare",
            ),
            (
                "http_stack",
                "hit",
                "bare_client",
                "hyper-util client, bare",
            ),
            (
                "span_tagging",
                "cache_hit_recording",
                "cache_hit_no_subscriber",
                "the same hit, no subscriber",
            ),
            (
                "span_tagging",
                "tagging_alone_no_subscriber",
                "cache_hit_no_subscriber",
                "a cache hit",
            ),
        ],
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = http_stack, span_tagging
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}

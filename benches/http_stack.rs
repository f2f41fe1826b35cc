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
//! - paired rounds (the figures to read; `target/http_stack_paired.json`):
//!   the bare client, the two stacks above, retry and breaker alone (no
//!   coalescing), and the issue's limit for a miss — the bare client plus
//!   one moka lookup and insert and one copy of the body — each round
//!   timing every client in turn in thread CPU time.
//! - `layers_alone`: the same stacks over an origin that answers at once,
//!   in nanoseconds per request, without the loopback round trip.
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

use support::{spread, thread_cpu_ns};

/// The thread CPU clock's resolution as `clock_getres` states it, and the
/// smallest step actually seen between two reads (over 10 000 reads), in ns.
fn thread_cpu_clock_step() -> (u64, u64) {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above.
    let status = unsafe { libc::clock_getres(libc::CLOCK_THREAD_CPUTIME_ID, &mut res) };
    assert_eq!(status, 0, "clock_getres(CLOCK_THREAD_CPUTIME_ID) failed");
    let stated = res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64;
    let mut smallest = u64::MAX;
    let mut last = thread_cpu_ns();
    for _ in 0..10_000 {
        let now = thread_cpu_ns();
        if now > last {
            smallest = smallest.min(now - last);
        }
        last = now;
    }
    (stated, smallest)
}

/// The issue's limit for a miss over `inner`: what any cache must do on
/// one — a lookup and an insert into a bounded moka cache (1 000 entries,
/// full after the first thousand requests, as the stores of the stacks) —
/// and one copy of the body; no retry, breaker, coalescing or telemetry.
fn limit_of<S, B>(
    inner: S,
) -> impl Service<
    http::Request<Empty<Bytes>>,
    Response = http::Response<http_body_util::Full<Bytes>>,
    Error = BoxError,
> + Clone
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let kept: moka::sync::Cache<http::Uri, http::Response<Bytes>> = moka::sync::Cache::new(1_000);
    tower::service_fn(move |request: http::Request<Empty<Bytes>>| {
        let (mut inner, kept) = (inner.clone(), kept.clone());
        async move {
            let uri = request.uri().clone();
            if let Some(hit) = kept.get(&uri) {
                return Ok::<_, BoxError>(hit.map(http_body_util::Full::new));
            }
            let (parts, body) = inner.call(request).await.map_err(Into::into)?.into_parts();
            let body =
                Bytes::copy_from_slice(&body.collect().await.map_err(Into::into)?.to_bytes());
            let response = http::Response::from_parts(parts, body);
            kept.insert(uri, response.clone());
            Ok(response.map(http_body_util::Full::new))
        }
    })
}

/// The stacks over `$inner`, built as a server builds them (in a
/// multi-thread runtime, returned first to be kept): the whole stack as
/// the README builds it (a 1 000-entry store, so that once it is full every
/// miss inserts and evicts; the cache coalesces its own misses), the same
/// without the cache (coalescing with fan-out), and retry (with its
/// budget) and the breaker alone. A macro: each stack's type is its own.
macro_rules! stacks {
    ($inner:expr) => {{
        let server = support::server_runtime();
        let built_in = server.enter();
        let inner = $inner;
        let store = MemoryStore::builder(1_000)
            .ttl(Duration::from_secs(3600))
            .store_if(Collected::is_cacheable)
            .build()
            .unwrap();
        let whole = ServiceBuilder::new()
            .layer(RetryLayer::new(retry_policy()))
            .layer(breaker())
            .layer(FanoutLayer::new(
                64 * 1024,
                CacheLayer::new(store, RequestKey::new().into_fn()),
            ))
            .service(inner.clone());
        let without_cache = ServiceBuilder::new()
            .layer(RetryLayer::new(retry_policy()))
            .layer(breaker())
            .layer(FanoutLayer::new(
                64 * 1024,
                CoalesceLayer::new(RequestKey::new().into_fn()),
            ))
            .service(inner.clone());
        let retry_breaker = ServiceBuilder::new()
            .layer(RetryLayer::new(retry_policy()))
            .layer(breaker())
            .service(inner);
        drop(built_in);
        (server, whole, without_cache, retry_breaker)
    }};
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
    let (_server, stack, without_cache, retry_breaker) = stacks!(client.clone());
    // The issue's "limit" for the miss path (see `limit_of`).
    let limit = limit_of(client.clone());

    let next = AtomicU64::new(0);
    // For a profiler: `HTTP_STACK_PROFILE=bare|limit|retry_breaker|miss|without_cache` runs only
    // that client for 200 000 requests, then exits.
    if std::env::var("HTTP_STACK_SIZES").is_ok() {
        let request = || {
            http::Request::get("http://x/")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let _enter = runtime.enter();
        println!(
            "stack future {} B, service {} B",
            std::mem::size_of_val(&stack.clone().call(request())),
            std::mem::size_of_val(&stack)
        );
        println!(
            "lean future {} B, service {} B",
            std::mem::size_of_val(&without_cache.clone().call(request())),
            std::mem::size_of_val(&without_cache)
        );
        println!(
            "bare future {} B, service {} B",
            std::mem::size_of_val(&client.clone().call(request())),
            std::mem::size_of_val(&client)
        );
        std::process::exit(0);
    }
    if let Ok(which) = std::env::var("HTTP_STACK_PROFILE") {
        runtime.block_on(async {
            match which.as_str() {
                "bare" => send(&mut client.clone(), address, 200_000, &next, 1).await,
                "limit" => send(&mut limit.clone(), address, 200_000, &next, 1).await,
                "retry_breaker" => {
                    send(&mut retry_breaker.clone(), address, 200_000, &next, 1).await
                }
                "miss" => send(&mut stack.clone(), address, 200_000, &next, 1).await,
                _ => send(&mut without_cache.clone(), address, 200_000, &next, 1).await,
            }
        });
        std::process::exit(0);
    }
    if std::env::var_os("HTTP_STACK_NO_PAIRED").is_some() {
        return; // a profiler's run of another group with `--profile-time`
    }
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
    // other), so the ratios come from rounds that take the three clients in
    // turn (the order rotating from round to round), and their median. Each
    // client's share of a round is timed in CPU time of this thread (server
    // and client both run on it), which leaves out the time the VM was not
    // running us; a share lasts tens of milliseconds, so the clock's step
    // (checked below) is far under 1% of it.
    let (stated, step) = thread_cpu_clock_step();
    let rounds = 61;
    let per_round = 2_000u64;
    let mut ratios = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut shortest = u64::MAX;
    runtime.block_on(async {
        let (mut bare, mut full, mut lean, mut least, mut guarded) = (
            client.clone(),
            stack.clone(),
            without_cache.clone(),
            limit.clone(),
            retry_breaker.clone(),
        );
        for round in 0..rounds {
            let mut took = [0u64; 5];
            for turn in 0..5 {
                let which = (round + turn) % 5;
                let started = thread_cpu_ns();
                match which {
                    0 => send(&mut bare, address, per_round, &next, 1).await,
                    1 => send(&mut full, address, per_round, &next, 1).await,
                    2 => send(&mut lean, address, per_round, &next, 1).await,
                    3 => send(&mut least, address, per_round, &next, 1).await,
                    _ => send(&mut guarded, address, per_round, &next, 1).await,
                }
                took[which] = thread_cpu_ns() - started;
            }
            shortest = shortest.min(*took.iter().min().unwrap());
            ratios.0.push(took[1] as f64 / took[0] as f64);
            ratios.1.push(took[2] as f64 / took[0] as f64);
            ratios.2.push(took[3] as f64 / took[0] as f64);
            ratios.3.push(took[1] as f64 / took[3] as f64);
            ratios.4.push(took[4] as f64 / took[0] as f64);
        }
    });
    assert!(
        step.saturating_mul(100) <= shortest,
        "the CPU clock's step ({step} ns) is over 1% of a round's share ({shortest} ns)"
    );
    let (miss, lean, limit, miss_to_limit, retry_breaker) = (
        spread(&mut ratios.0),
        spread(&mut ratios.1),
        spread(&mut ratios.2),
        spread(&mut ratios.3),
        spread(&mut ratios.4),
    );
    println!(
        "\npaired rounds ({rounds} × {per_round} requests per client; thread CPU clock: \
         clock_getres {stated} ns, smallest step seen {step} ns, shortest share {:.1} ms):",
        shortest as f64 / 1e6
    );
    println!("  ratio to the bare client       median  [q1, q3]      [min, max]");
    for (name, r) in [
        ("whole stack, every request a miss", &miss),
        ("without the cache", &lean),
        ("limit: moka get+insert, body copy", &limit),
        ("whole stack (miss) / the limit", &miss_to_limit),
        ("retry + breaker, no coalescing", &retry_breaker),
    ] {
        println!(
            "  {name:<33} {:.3}  [{:.3}, {:.3}]  [{:.3}, {:.3}]",
            r["median"].as_f64().unwrap(),
            r["q1"].as_f64().unwrap(),
            r["q3"].as_f64().unwrap(),
            r["min"].as_f64().unwrap(),
            r["max"].as_f64().unwrap(),
        );
    }
    let path = support::target_dir().join("http_stack_paired.json");
    // The previous run's figures, to say whether two runs agree.
    let previous: Option<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let json = serde_json::json!({
        "rounds": rounds,
        "requests_per_round": per_round,
        "clock": {"getres_ns": stated, "smallest_step_ns": step, "shortest_share_ns": shortest},
        "miss_ratio": miss,
        "without_cache_ratio": lean,
        "limit_ratio": limit,
        "miss_to_limit_ratio": miss_to_limit,
        "retry_breaker_ratio": retry_breaker,
    });
    if let Some(previous) = previous {
        for key in [
            "miss_ratio",
            "without_cache_ratio",
            "limit_ratio",
            "miss_to_limit_ratio",
            "retry_breaker_ratio",
        ] {
            let (now, then) = (
                json[key]["median"].as_f64(),
                previous[key]["median"].as_f64(),
            );
            if let (Some(now), Some(then)) = (now, then) {
                println!(
                    "  {key}: median {now:.3} against {then:.3} in the previous run ({:+.1}%)",
                    (now / then - 1.0) * 100.0
                );
            }
        }
        std::fs::write(
            support::target_dir().join("http_stack_paired.previous.json"),
            previous.to_string(),
        )
        .expect("keep the previous run");
    }
    std::fs::write(&path, json.to_string()).expect("write the paired ratios");
    println!("wrote {}", path.display());
}

/// The layers alone, over an origin that answers at once (a small body
/// and the three headers axum sends), each request to its own URI: what
/// each layer costs a request in nanoseconds, without the loopback
/// round trip whose noise the paired rounds above fight.
fn layers_alone(c: &mut Criterion) {
    use std::convert::Infallible;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = runtime.enter();
    let origin = tower::service_fn(|_: http::Request<Empty<Bytes>>| {
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::from_static(
            b"a small JSON document, say",
        )));
        let headers = response.headers_mut();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("content-length", http::HeaderValue::from_static("26"));
        headers.insert(
            "date",
            http::HeaderValue::from_static("Tue, 01 Dec 2026 22:00:00 GMT"),
        );
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let (_server, cached, coalesced, retry_breaker) = stacks!(origin);

    fn time<S, B>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        mut service: S,
    ) where
        S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>>,
        S::Error: std::fmt::Debug,
    {
        let mut id = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                id += 1;
                let request = http::Request::get(format!("http://127.0.0.1:1/items/{id}"))
                    .body(Empty::new())
                    .unwrap();
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                assert!(service.poll_ready(&mut cx).is_ready());
                black_box(support::now(service.call(request)).unwrap());
            })
        });
    }
    // The issue's limit for a miss, over the same origin.
    let limit = limit_of(origin);
    let mut group = c.benchmark_group("layers_alone");
    time(&mut group, "origin", origin);
    time(&mut group, "limit_moka_get_insert_copy", limit);
    time(&mut group, "retry_breaker", retry_breaker);
    time(&mut group, "coalesce_fanout", coalesced);
    time(&mut group, "cache_miss", cached);
    group.finish();
}

fn span_tagging(c: &mut Criterion) {
    use tracing::field::Empty as Unset;
    use tracing_subscriber::layer::SubscriberExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = runtime.enter();
    let server = support::server_runtime();
    let built_in = server.enter();
    let store = MemoryStore::builder(100)
        .ttl(Duration::from_secs(3600))
        .early_refresh(false)
        .build()
        .unwrap();
    drop(built_in);
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
    targets = http_stack, layers_alone, span_tagging
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}

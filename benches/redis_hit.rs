//! What a cache hit costs with the Redis store, against a direct `redis`
//! client GET of the same value in the same run (the target: ≤ 1.2×).
//!
//! A `redis-server` is started on a free loopback port (as in the tests;
//! without the binary the bench says it skipped). Both sides use a
//! multiplexed connection of the `redis` crate on a current-thread tokio
//! runtime and send one request after another, so each is one round trip:
//!
//! - `redis_hit/direct_get`: `GET` of the stored entry.
//! - `redis_hit/cache_hit`: a request through [`RedisCacheLayer`] whose key
//!   is in Redis (fresh, early refresh off): the in-process flight, the
//!   lookup script (`GET` + `PTTL` in one round trip), decoding.
//!
//! Then paired rounds (500 requests of each, 101 rounds, which side goes
//! first alternating; wall clock: most of the time is Redis's and the
//! loopback's, outside this thread) give the median ratio, written to
//! `target/redis_hit.json`.
//!
//! ```text
//! cargo bench --bench redis_hit --features redis
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use dephase::cache::CacheLayer;
use dephase::redis::RedisStore;
use redis::aio::MultiplexedConnection;
use tower::{Layer, Service, ServiceExt};

#[allow(dead_code)]
#[path = "../examples/fleet/server.rs"]
mod server;
mod support;

const KEY: &str = "bench:{hot}:v";

async fn direct_gets(connection: &mut MultiplexedConnection, n: u64) {
    for _ in 0..n {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(KEY)
            .query_async(connection)
            .await
            .unwrap();
        black_box(value.unwrap());
    }
}

async fn hits<S>(service: &mut S, n: u64)
where
    S: Service<String, Response = String>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        let value = service.ready().await.unwrap().call("hot".to_string()).await;
        black_box(value.unwrap());
    }
}

fn redis_hit(c: &mut Criterion) {
    let Some(server) = server::RedisServer::start().expect("redis-server failed to start") else {
        println!("redis_hit: {}", server::SKIPPED);
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = RedisStore::builder(server.url())
        .prefix("bench:")
        .ttl(Duration::from_secs(3600))
        .early_refresh(false)
        .build()
        .unwrap();
    let origin = tower::service_fn(|key: String| async move {
        Ok::<_, std::io::Error>(format!(
            "the value of {key}, about as long as a small JSON document"
        ))
    });
    let service = CacheLayer::new(store.clone(), |k: &String| Some(k.clone())).layer(origin);
    let mut direct = runtime.block_on(async {
        // The first request loads and stores the entry.
        service.clone().oneshot("hot".to_string()).await.unwrap();
        redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });

    let mut group = c.benchmark_group("redis_hit");
    group.bench_function("direct_get", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                direct_gets(&mut direct, iters).await;
                started.elapsed()
            })
        })
    });
    group.bench_function("cache_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                hits(&mut service.clone(), iters).await;
                started.elapsed()
            })
        })
    });
    group.finish();

    let rounds = 101;
    let per_round = 500;
    let mut ratios = Vec::new();
    runtime.block_on(async {
        let mut cached = service.clone();
        for round in 0..rounds {
            // Alternate which side goes first, so neither always follows
            // the other's effect on caches and scheduling.
            let (mut get, mut hit) = (0.0, 0.0);
            for side in [round % 2, 1 - round % 2] {
                let started = Instant::now();
                if side == 0 {
                    direct_gets(&mut direct, per_round).await;
                    get = started.elapsed().as_secs_f64();
                } else {
                    hits(&mut cached, per_round).await;
                    hit = started.elapsed().as_secs_f64();
                }
            }
            ratios.push(hit / get);
        }
    });
    assert_eq!(store.stats().degraded, 0, "every hit came from Redis");
    ratios.sort_by(f64::total_cmp);
    let (median, min, max) = (ratios[rounds / 2], ratios[0], ratios[rounds - 1]);
    println!(
        "\npaired rounds ({rounds} × {per_round} requests each): cache hit / direct GET, median {median:.3} [{min:.3}, {max:.3}]"
    );
    support::report(
        "redis_hit_criterion.json",
        &[("redis_hit", "cache_hit", "direct_get", "redis crate GET")],
    );
    let path = support::target_dir().join("redis_hit.json");
    let json = serde_json::json!({
        "rounds": rounds,
        "requests_per_round": per_round,
        "hit_over_get": {"median": median, "min": min, "max": max},
    });
    std::fs::write(&path, json.to_string()).expect("write the paired ratios");
    println!("wrote {}", path.display());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = redis_hit
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

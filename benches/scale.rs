//! Cost per operation as the work grows — the operations whose input a
//! caller chooses (keys) or whose count a caller drives (waiters). Each
//! figure is compared with the same operation at a small size in the same
//! run (`target/scale.json`, one JSON object per line, as `peers.json`):
//! flat means within 2×.
//!
//! - `keyed_breaker/admit_new_key_<n>`: a new key admitted into a keyed breaker
//!   that is full (each admission evicts one), at capacity 1 000, 100 000
//!   and 1 000 000;
//!   beside it `hashmap_churn`, a std `HashMap` of `Arc`ed values inserting
//!   a new key and dropping the oldest, at the same sizes: what the memory
//!   hierarchy alone costs when the set outgrows the caches;
//! - `flight/overlapping_caller_<n>`: one caller joining a coalesced call that
//!   never finishes, waiting, and leaving while ten newer callers wait —
//!   after 1 000 and after 100 000 such callers on the same call;
//! - `coalesce/new_key_<n>`: a call for a new key (join, poll, finish) while
//!   1 000 or 100 000 other keys are in flight.
//!
//! ```text
//! cargo bench --bench scale
//! ```

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use dephase::breaker::{Breaker, KeyedBreaker};
use dephase::coalesce::CoalesceLayer;
use tokio_test::task::Spawn;
use tower::{Layer, Service};

#[path = "support/mod.rs"]
mod support;

fn keyed_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed_breaker");
    group.throughput(Throughput::Elements(1));
    for capacity in [1_000usize, 100_000, 1_000_000] {
        let breakers = KeyedBreaker::new(Breaker::builder(), capacity).unwrap();
        for key in 0..capacity as u64 {
            drop(breakers.get(&key));
        }
        let mut next = capacity as u64;
        group.bench_function(format!("admit_new_key_{capacity}"), |b| {
            b.iter(|| {
                next += 1;
                black_box(breakers.get(&next))
            })
        });
        // The anchor: the least a bounded map of shared values does per new
        // key at this size — insert it, drop the oldest (whose value is
        // freed) — to tell the memory hierarchy from the algorithm.
        let mut map: HashMap<u64, Arc<[u64; 32]>> = HashMap::new();
        let mut order = VecDeque::new();
        for key in 0..capacity as u64 {
            map.insert(key, Arc::new([key; 32]));
            order.push_back(key);
        }
        let mut next = capacity as u64;
        group.bench_function(format!("hashmap_churn_{capacity}"), |b| {
            b.iter(|| {
                next += 1;
                map.insert(next, Arc::new([next; 32]));
                order.push_back(next);
                let oldest = order.pop_front().expect("full");
                black_box(map.remove(&oldest))
            })
        });
    }
    group.finish();
}

/// A service whose calls never finish.
fn hung()
-> impl Service<u64, Response = u64, Error = std::io::Error, Future: Send + 'static> + Clone {
    tower::service_fn(|_: u64| std::future::pending::<Result<u64, std::io::Error>>())
}

/// One more caller joins and waits; the oldest of the eleven leaves.
fn overlap<S: Service<u64>>(service: &mut S, live: &mut VecDeque<Spawn<S::Future>>) {
    let mut call = tokio_test::task::spawn(service.call(7));
    assert!(call.poll().is_pending());
    live.push_back(call);
    if live.len() > 10 {
        drop(live.pop_front());
    }
}

fn flight(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("flight");
    group.throughput(Throughput::Elements(1));
    for before in [1_000u64, 100_000] {
        group.bench_function(format!("overlapping_caller_{before}"), |b| {
            b.iter_custom(|iterations| {
                // A fresh call with `before` callers already through it,
                // ten of them still waiting; then time the next ones.
                let mut service = CoalesceLayer::new(|k: &u64| Some(*k)).layer(hung());
                let mut live = VecDeque::new();
                for _ in 0..before {
                    overlap(&mut service, &mut live);
                }
                let started = Instant::now();
                for _ in 0..iterations {
                    overlap(&mut service, &mut live);
                }
                started.elapsed()
            })
        });
    }
    group.finish();
}

fn coalesce_keys(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("coalesce");
    group.throughput(Throughput::Elements(1));
    for in_flight in [1_000u64, 100_000] {
        let mut hung_keys =
            CoalesceLayer::new(|k: &u64| Some(*k)).layer(tower::service_fn(|k: u64| async move {
                if k < 1 << 40 {
                    std::future::pending::<()>().await;
                }
                Ok::<u64, std::io::Error>(k)
            }));
        let held: Vec<_> = (0..in_flight)
            .map(|k| {
                let mut call = tokio_test::task::spawn(Service::call(&mut hung_keys, k));
                assert!(call.poll().is_pending());
                call
            })
            .collect();
        let mut next = 1u64 << 40;
        group.bench_function(format!("new_key_{in_flight}"), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    next
                },
                |key| support::now(Service::call(&mut hung_keys, key)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(hung_keys.coalescer().in_flight(), held.len());
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    keyed_breaker(&mut c);
    flight(&mut c);
    coalesce_keys(&mut c);
    c.final_summary();
    support::report(
        "scale.json",
        &[
            (
                "keyed_breaker",
                "admit_new_key_100000",
                "admit_new_key_1000",
                "the same at capacity 1 000",
            ),
            (
                "keyed_breaker",
                "admit_new_key_1000000",
                "admit_new_key_100000",
                "the same at capacity 100 000",
            ),
            (
                "keyed_breaker",
                "hashmap_churn_100000",
                "hashmap_churn_1000",
                "the same at 1 000 entries",
            ),
            (
                "flight",
                "overlapping_caller_100000",
                "overlapping_caller_1000",
                "the same after 1 000 callers",
            ),
            (
                "coalesce",
                "new_key_100000",
                "new_key_1000",
                "the same with 1 000 in flight",
            ),
        ],
    );
}

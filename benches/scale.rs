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
//!   1 000, 100 000 or 1 000 000 other keys are in flight;
//! - `cache/hit_<n>` and `cache/miss_<n>`: a hit on one of `n` stored keys
//!   (visited in a scattered order), and a miss that loads a new key into a
//!   full store of `n` (evicting one), at 1 000, 100 000 and 1 000 000;
//!   beside them the same on a bare moka `sync::Cache` (`moka_get_<n>`,
//!   `moka_insert_<n>`), the anchor at each size;
//! - memory (`target/scale_memory.json`): bytes allocated per stored entry
//!   of a `MemoryStore` and of a bare moka cache of the same values, and per
//!   key in flight in a coalescing table, measured with a counting
//!   allocator.
//!
//! ```text
//! cargo bench --bench scale
//! ```

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use dephase::BoxError;
use dephase::breaker::{Breaker, KeyedBreaker};
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use dephase::coalesce::CoalesceLayer;
use tokio_test::task::Spawn;
use tower::{Layer, Service};

#[path = "support/mod.rs"]
mod support;

/// Counts the bytes allocated and not yet freed, to measure memory per
/// entry.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is only arithmetic on the sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as the caller promised for `layout`.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as the caller promised for `ptr` and `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The `i`-th key of a scattered walk over `0..n` (an odd multiplier
/// modulo `n` visits keys far apart, as a real key mix does).
fn scattered(i: u64, n: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}

/// An empty store for `n` `u64` entries, built in a multi-thread runtime
/// (as a server's: see `support::server_runtime`); the runtime is gone
/// before it returns.
fn empty_store(n: u64) -> MemoryStore<u64, u64> {
    let server = support::server_runtime();
    let _built_in = server.enter();
    MemoryStore::builder(n)
        .ttl(Duration::from_secs(3600))
        .ttl_jitter(TtlJitter::None)
        .build()
        .unwrap()
}

/// A store of `n` entries, filled with keys `0..n`, and a cache over it
/// whose loads answer at once.
fn filled_cache(
    n: u64,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    let store = empty_store(n);
    let mut cache =
        CacheLayer::new(store, |k: &u64| Some(*k)).layer(tower::service_fn(|k: u64| {
            std::future::ready(Ok::<u64, BoxError>(k))
        }));
    for k in 0..n {
        support::now(cache.call(k)).unwrap();
    }
    cache
}

fn cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(1));
    for n in [1_000u64, 100_000, 1_000_000] {
        let mut ours = filled_cache(n);
        let mut i = 0u64;
        group.bench_function(format!("hit_{n}"), |b| {
            b.iter(|| {
                i += 1;
                support::now(ours.call(scattered(i, n))).unwrap()
            })
        });
        let mut next = n;
        group.bench_function(format!("miss_{n}"), |b| {
            b.iter(|| {
                next += 1;
                support::now(ours.call(next)).unwrap()
            })
        });
        drop(ours);
        let moka: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(n);
        for k in 0..n {
            moka.insert(k, k);
        }
        group.bench_function(format!("moka_get_{n}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(moka.get(&scattered(i, n)))
            })
        });
        let mut next = n;
        group.bench_function(format!("moka_insert_{n}"), |b| {
            b.iter(|| {
                next += 1;
                moka.insert(next, next)
            })
        });
    }
    group.finish();
}

/// Bytes per stored entry (ours and moka's, `u64` keys and values) and
/// per key in flight, at 100 000 of each.
fn memory() {
    const N: u64 = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let settle = || std::thread::sleep(Duration::from_millis(50));

    let before = live_bytes();
    let store = empty_store(N);
    let mut cache =
        CacheLayer::new(store.clone(), |k: &u64| Some(*k)).layer(tower::service_fn(|k: u64| {
            std::future::ready(Ok::<u64, BoxError>(k))
        }));
    for k in 0..N {
        support::now(cache.call(k)).unwrap();
    }
    assert_eq!(store.len(), N);
    settle();
    let ours = (live_bytes() - before) as f64 / N as f64;
    drop((cache, store));

    let before = live_bytes();
    let moka: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(N);
    for k in 0..N {
        moka.insert(k, k);
    }
    moka.run_pending_tasks();
    assert_eq!(moka.entry_count(), N);
    settle();
    let theirs = (live_bytes() - before) as f64 / N as f64;
    drop(moka);

    let before = live_bytes();
    let mut hung_keys = CoalesceLayer::new(|k: &u64| Some(*k)).layer(hung());
    let held: Vec<_> = (0..N)
        .map(|k| {
            let mut call = tokio_test::task::spawn(Service::call(&mut hung_keys, k));
            assert!(call.poll().is_pending());
            call
        })
        .collect();
    let future_bytes = std::mem::size_of_val(&held[0]);
    let in_flight = (live_bytes() - before) as f64 / N as f64 - future_bytes as f64;
    assert_eq!(hung_keys.coalescer().in_flight(), N as usize);
    drop(held);

    println!(
        "\nmemory per entry at {N} entries (u64 keys and values): MemoryStore {ours:.0} B, \
         moka sync::Cache {theirs:.0} B (ours − moka's: {:.0} B); per key in flight in a \
         coalescing table: {in_flight:.0} B (besides the caller's own {future_bytes}-byte future)",
        ours - theirs
    );
    let path = support::target_dir().join("scale_memory.json");
    let json = serde_json::json!({
        "entries": N,
        "memory_store_bytes_per_entry": ours,
        "moka_bytes_per_entry": theirs,
        "difference": ours - theirs,
        "coalesce_bytes_per_key_in_flight": in_flight,
    });
    std::fs::write(&path, json.to_string()).expect("write the memory figures");
    println!("wrote {}", path.display());
}

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
    for in_flight in [1_000u64, 100_000, 1_000_000] {
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
    cache(&mut c);
    c.final_summary();
    memory();
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
            (
                "coalesce",
                "new_key_1000000",
                "new_key_1000",
                "the same with 1 000 in flight",
            ),
            ("cache", "hit_100000", "hit_1000", "the same at 1 000 keys"),
            ("cache", "hit_1000000", "hit_1000", "the same at 1 000 keys"),
            (
                "cache",
                "moka_get_1000000",
                "moka_get_1000",
                "the same at 1 000 keys",
            ),
            ("cache", "hit_1000", "moka_get_1000", "moka get, 1 000 keys"),
            (
                "cache",
                "hit_1000000",
                "moka_get_1000000",
                "moka get, 1 000 000 keys",
            ),
            (
                "cache",
                "miss_100000",
                "miss_1000",
                "the same at 1 000 keys",
            ),
            (
                "cache",
                "miss_1000000",
                "miss_1000",
                "the same at 1 000 keys",
            ),
            (
                "cache",
                "moka_insert_1000000",
                "moka_insert_1000",
                "the same at 1 000 keys",
            ),
            (
                "cache",
                "miss_1000",
                "moka_insert_1000",
                "moka insert, 1 000 keys",
            ),
            (
                "cache",
                "miss_1000000",
                "moka_insert_1000000",
                "moka insert, 1 000 000 keys",
            ),
        ],
    );
}

//! The `stats()` snapshots count exactly what happened: paused time, seeded
//! randomness, every expected number derived from the scenario.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dephase::TtlJitter;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::{Breaker, BreakerEvent, State};
use dephase::budget::{RatioBudget, RetryBudget, TokenBucket};
use dephase::cache::{CacheLayer, MemoryStats, MemoryStore};
use dephase::pace::Pacer;
use dephase::throttle::Throttler;
use tower::{Layer, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

/// A slow origin (100 ms per load) that counts its calls and answers its
/// key, or 0 for key 0.
fn origin(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(move |key: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Infallible>(key)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn memory_store_counts_each_lookup_once() {
    let store = MemoryStore::<u32, u32>::builder(100)
        .ttl(10 * SECOND)
        .ttl_jitter(TtlJitter::None)
        .early_refresh(false)
        .stale_while_revalidate(5 * SECOND)
        .store_if(|v| *v != 0)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let cache = CacheLayer::new(store.clone(), |k: &u32| Some(*k)).layer(origin(calls.clone()));
    let get = |key| cache.clone().oneshot(key);

    // Three callers at once: three misses, one load, one value stored.
    let (a, b, c) = tokio::join!(get(1), get(1), get(1));
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 1, 1));
    // Two fresh hits.
    get(1).await.unwrap();
    get(1).await.unwrap();
    // Past the TTL, within the stale window: a stale answer, a refresh in
    // the background (a load, then a store).
    tokio::time::advance(11 * SECOND).await;
    get(1).await.unwrap();
    tokio::time::sleep(SECOND).await;
    // Fresh again: a hit.
    get(1).await.unwrap();
    // Invalidated: a miss, a load, a store.
    store.invalidate(&1);
    get(1).await.unwrap();
    // A value the store does not keep: a miss and a load, nothing stored.
    get(0).await.unwrap();

    let stats: MemoryStats = store.stats();
    assert_eq!((stats.hits, stats.early_refreshes, stats.stale), (3, 0, 1));
    assert_eq!((stats.misses, stats.loads, stats.stores), (5, 4, 3));
    assert_eq!(calls.load(Ordering::SeqCst), 4, "loads are origin calls");
}

/// XFetch (Vattani et al., VLDB 2015): a hit refreshes early when
/// `now − Δ·β·ln(U) ≥ expiry`. With β at its maximum (10⁶), Δ = 100 ms and
/// 10 ms left, any draw `U < 1 − 10⁻⁷` refreshes.
#[tokio::test(start_paused = true)]
async fn an_early_refresh_is_a_hit_that_also_loads() {
    let store = MemoryStore::<u32, u32>::builder(100)
        .ttl(10 * SECOND)
        .ttl_jitter(TtlJitter::None)
        .beta(1e6)
        .seed(3)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let cache = CacheLayer::new(store.clone(), |k: &u32| Some(*k)).layer(origin(calls.clone()));
    cache.clone().oneshot(7).await.unwrap();
    tokio::time::advance(10 * SECOND - Duration::from_millis(10)).await;
    cache.clone().oneshot(7).await.unwrap();
    tokio::time::sleep(SECOND).await;

    let stats = store.stats();
    assert_eq!((stats.misses, stats.hits, stats.early_refreshes), (1, 1, 1));
    assert_eq!((stats.loads, stats.stores), (2, 2));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn budgets_count_grants_denials_and_refunds() {
    // Finagle's rule: retries ≤ ratio · requests + reserve.
    let budget = RatioBudget::builder()
        .min_per_sec(0)
        .ratio(0.5)
        .build()
        .unwrap();
    for _ in 0..4 {
        budget.deposit();
    }
    let first = budget.withdraw().unwrap();
    let _second = budget.withdraw().unwrap();
    assert!(budget.withdraw().is_none());
    budget.refund(first);
    let stats = budget.stats();
    assert_eq!((stats.granted, stats.denied, stats.refunded), (2, 1, 1));
    assert_eq!(stats.balance, 1.0);

    // AWS standard mode: 500 tokens, 5 per retry, 10 per retry of a timeout.
    let bucket = TokenBucket::aws_standard();
    let mut kept = Vec::new();
    while let Some(w) = bucket.withdraw_for("timeout") {
        kept.push(w);
    }
    assert_eq!(kept.len(), 50);
    let stats = bucket.stats();
    assert_eq!((stats.granted, stats.denied, stats.balance), (50, 1, 0.0));
}

#[tokio::test(start_paused = true)]
async fn breaker_counts_transitions_openings_and_rejections() {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let breaker = Breaker::builder()
        .consecutive_failures(2)
        .open_time(
            ExponentialBackoff::builder()
                .base(SECOND)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .half_open_probes(1)
        .on_event(move |event| {
            if let BreakerEvent::Transition { to, .. } = event {
                seen.lock().unwrap().push(*to);
            }
        })
        .build()
        .unwrap();
    let fail = || breaker.call(|| Err::<(), _>("down"));
    let succeed = || breaker.call(|| Ok::<_, Infallible>(()));
    fail().unwrap().unwrap_err();
    fail().unwrap().unwrap_err(); // opens
    assert!(succeed().is_err()); // rejected
    assert!(succeed().is_err()); // rejected
    tokio::time::advance(SECOND).await;
    succeed().unwrap().unwrap(); // the probe: half-open, then closed

    let stats = breaker.stats();
    assert_eq!(stats.state, State::Closed);
    assert_eq!(
        (stats.transitions, stats.openings, stats.rejections),
        (3, 1, 2)
    );
    assert_eq!(
        *events.lock().unwrap(),
        [State::Open, State::HalfOpen, State::Closed]
    );
}

#[tokio::test(start_paused = true)]
async fn pacer_counts_waits_and_turns_away() {
    let pacer = Pacer::builder()
        .rate(1, SECOND)
        .jitter(Duration::ZERO)
        .max_wait(2 * SECOND)
        .build()
        .unwrap();
    // Turns at 0, 1 s and 2 s; the fourth (3 s away) is turned away.
    let (a, b, c, d) = tokio::join!(pacer.wait(), pacer.wait(), pacer.wait(), pacer.wait());
    assert_eq!(
        [a.unwrap(), b.unwrap(), c.unwrap()],
        [Duration::ZERO, SECOND, 2 * SECOND]
    );
    assert!(d.is_err());
    let stats = pacer.stats();
    assert_eq!((stats.waited, stats.overloaded), (2, 1));
}

/// Google SRE book, "Handling Overload": reject with probability
/// `max(0, (requests − K·accepts) / (requests + 1))`.
#[tokio::test(start_paused = true)]
async fn throttle_counts_its_window_and_its_rejections() {
    let throttler = Throttler::builder().seed(11).build().unwrap();
    for _ in 0..10 {
        throttler.call(|| Ok::<_, Infallible>(())).unwrap().unwrap();
    }
    let mut shed = 0;
    for _ in 0..100 {
        if throttler.call(|| Err::<(), _>("down")).is_err() {
            shed += 1;
        }
    }
    let stats = throttler.stats();
    assert_eq!((stats.requests, stats.accepts), (110, 10));
    assert_eq!(stats.rejections, shed);
    let k = 2.0;
    assert_eq!(stats.probability, (110.0 - k * 10.0) / 111.0);
    assert!(shed > 0);
}

/// Counting from many threads at once (the counts live in per-thread
/// lanes, 32 of them, and threads past those add to shared lines): a
/// snapshot taken after the counting tasks were awaited has every count.
/// Eight tasks on a multi-thread runtime, each a miss then 1 000 hits of
/// its own key; no time involved, so real time is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_counts_from_many_threads_are_exact_once_awaited() {
    let store = MemoryStore::<u32, u32>::builder(100)
        .ttl(600 * SECOND)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let origin = {
        let calls = Arc::clone(&calls);
        tower::service_fn(move |key: u32| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, Infallible>(key))
        })
    };
    let cache = CacheLayer::new(store.clone(), |k: &u32| Some(*k)).layer(origin);
    let tasks: Vec<_> = (0..8u32)
        .map(|key| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for i in 0..=1000 {
                    assert_eq!(cache.clone().oneshot(key).await.unwrap(), key);
                    if i % 50 == 0 {
                        tokio::task::yield_now().await; // move between workers
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert_eq!((stats.hits, stats.misses, stats.stale), (8000, 8, 0));
}

/// A ratio budget's withdrawals from 48 threads at once (more than the
/// 32 lanes): every answer is counted, and the budget never grants more
/// than Finagle's rule allows — `⌊ratio · requests⌋` with no reserve — and
/// after the race a one-at-a-time drain reaches that bound exactly (racing
/// withdrawals may give back one that only the other could have had).
#[test]
fn budget_counts_from_many_threads_are_exact_and_never_overdraw() {
    let budget = RatioBudget::builder()
        .ratio(0.25)
        .min_per_sec(0)
        .build()
        .unwrap();
    for _ in 0..4000 {
        budget.deposit();
    }
    let barrier = Arc::new(std::sync::Barrier::new(48));
    let threads: Vec<_> = (0..48)
        .map(|_| {
            let (budget, barrier) = (budget.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                (0..50).filter(|_| budget.withdraw().is_some()).count() as u64
            })
        })
        .collect();
    let raced: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(raced <= 1000, "granted {raced} of at most 1000");
    let drained = std::iter::from_fn(|| budget.withdraw()).count() as u64;
    let stats = budget.stats();
    assert_eq!(raced + drained, 1000);
    assert_eq!(stats.granted, 1000);
    assert_eq!(stats.granted + stats.denied, 48 * 50 + drained + 1);
}

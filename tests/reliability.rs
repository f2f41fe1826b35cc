//! Reliability under a total outage and under key churn, builders that
//! refuse bad settings, and cancellation at random drop points. Paused
//! time, fixed seeds. (The adversarial suite, `tests/adversarial/`, attacks
//! each class of fault on its own.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dephase::BoxError;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::budget::{RatioBudget, RetryBudget, TokenBucket};
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::CoalesceLayer;
use dephase::retry::{RetryLayer, RetryPolicy};
use tower::{Layer, Service, ServiceExt};

use support::{Counting, bounded};

/// Sends `rate` requests a second for `seconds` through a retry layer (3
/// attempts, `budget`) to a backend that always fails; returns the backend's
/// calls per request over the seconds after `warm_up`.
async fn amplification<B>(budget: B, rate: u64, seconds: u64, warm_up: u64) -> f64
where
    B: RetryBudget + Clone + Send + Sync + 'static,
{
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let backend = tower::service_fn(move |_: u64| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Err::<u64, _>("the backend is down") }
    });
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(10))
                .cap(Duration::from_millis(100))
                .jitter(Jitter::Full)
                .seed(1)
                .build()
                .unwrap(),
        )
        .budget(budget)
        .build()
        .unwrap();
    let service = RetryLayer::new(policy).layer(backend);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate));
    let (mut requests, mut calls_at_warm_up) = (0u64, 0u64);
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        tick.tick().await;
        if i == rate * warm_up {
            // Let the warm-up's retries finish, then count from here.
            tokio::time::sleep(Duration::from_millis(500)).await;
            calls_at_warm_up = calls.load(Ordering::Relaxed);
            requests = 0;
        }
        requests += 1;
        tasks.push(tokio::spawn(service.clone().oneshot(i)));
    }
    for task in tasks {
        assert!(task.await.unwrap().is_err(), "the backend never answers");
    }
    (calls.load(Ordering::Relaxed) - calls_at_warm_up) as f64 / requests as f64
}

/// The SRE book's figure: per-request attempts (3) plus a per-client budget
/// (10%) hold a failing backend's load to about 1.1× the requests, where 3
/// attempts alone would triple it.
#[tokio::test(start_paused = true)]
async fn a_ratio_budget_holds_amplification_to_one_point_one_in_a_total_outage() {
    let budget = RatioBudget::builder()
        .ratio(0.1)
        .min_per_sec(0)
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let ratio = bounded(amplification(budget, 100, 60, 10)).await;
    eprintln!("ratio budget 10%, 3 attempts: {ratio:.4} backend calls per request");
    assert!(ratio <= 1.1 + 1e-9, "{ratio} backend calls per request");
    assert!(ratio >= 1.05, "the budget still grants its 10%: {ratio}");

    // Without a budget the same client triples the load.
    let ratio = bounded(amplification(dephase::budget::NoBudget, 100, 20, 5)).await;
    eprintln!("no budget, 3 attempts: {ratio:.4} backend calls per request");
    assert!((ratio - 3.0).abs() < 1e-9, "{ratio}");
}

/// A token bucket (AWS standard: 500 tokens, 5 per retry, refilled only by
/// successes) drains in a total outage and then allows no retry at all.
#[tokio::test(start_paused = true)]
async fn a_token_bucket_drains_and_stops_retrying_in_a_total_outage() {
    let ratio = bounded(amplification(TokenBucket::aws_standard(), 100, 30, 5)).await;
    eprintln!("token bucket (AWS standard), 3 attempts: {ratio:.4} backend calls per request");
    assert!(ratio <= 1.1, "{ratio} backend calls per request");
    assert_eq!(ratio, 1.0, "after 100 retries the bucket is empty");
}

/// A million distinct keys through coalescing: every flight leaves the
/// table when it ends; nothing is left behind.
#[tokio::test(start_paused = true)]
async fn a_million_keys_through_coalesce_leave_the_table_empty() {
    let inner = tower::service_fn(|k: u64| async move {
        tokio::task::yield_now().await; // not ready at once: a real flight
        Ok::<_, BoxError>(k)
    });
    let mut service = CoalesceLayer::new(|k: &u64| Some(*k)).layer(inner);
    let coalescer = service.coalescer().clone();
    let mut pending = Vec::with_capacity(1000);
    for k in 0..1_000_000u64 {
        pending.push(service.ready().await.unwrap().call(k));
        if pending.len() == 1000 {
            assert_eq!(coalescer.in_flight(), 1000);
            for (i, call) in pending.drain(..).enumerate() {
                assert_eq!(call.await.unwrap(), k + 1 - 1000 + i as u64);
            }
        }
    }
    assert_eq!(coalescer.in_flight(), 0);
}

/// A million distinct keys through the cache: the store stays within its
/// capacity and no load is left in flight.
#[tokio::test(start_paused = true)]
async fn a_million_keys_through_the_cache_stay_within_its_capacity() {
    let store = MemoryStore::builder(10_000)
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut service = CacheLayer::new(store.clone(), |k: &u64| Some(*k)).layer(tower::service_fn(
        |k: u64| async move { Ok::<_, BoxError>(k) },
    ));
    for k in 0..1_000_000u64 {
        assert_eq!(service.ready().await.unwrap().call(k).await.unwrap(), k);
    }
    assert!(store.len() <= 10_000, "{} entries", store.len());
    assert!(!store.is_empty());
    assert_eq!(store.loads_in_flight(), 0);
}

/// Every builder's invalid values, as a table: each is a `ConfigError`
/// naming its field — never a panic, never a value silently accepted.
#[test]
fn invalid_settings_are_errors_that_name_their_field() {
    use dephase::breaker::Breaker;
    use dephase::measure::Spread;
    use dephase::offset::Offset;
    use dephase::pace::Pacer;
    use dephase::throttle::Throttler;
    use dephase::{ConfigError, ExponentialBackoff};

    fn field<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> &'static str {
        result.expect_err("an invalid value was accepted").field()
    }
    let ms = Duration::from_millis;
    let nan = f64::NAN;
    let cases: Vec<(&str, &'static str)> = vec![
        // backoff
        (
            field(ExponentialBackoff::builder().base(Duration::ZERO).build()),
            "backoff.base",
        ),
        (
            field(
                ExponentialBackoff::builder()
                    .base(ms(10))
                    .cap(ms(5))
                    .build(),
            ),
            "backoff.cap",
        ),
        (
            field(ExponentialBackoff::builder().multiplier(nan).build()),
            "backoff.multiplier",
        ),
        (
            field(ExponentialBackoff::builder().multiplier(0.5).build()),
            "backoff.multiplier",
        ),
        (
            field(
                ExponentialBackoff::builder()
                    .multiplier(f64::INFINITY)
                    .build(),
            ),
            "backoff.multiplier",
        ),
        // budgets
        (
            field(RatioBudget::builder().ratio(-0.1).build()),
            "budget.ratio",
        ),
        (
            field(RatioBudget::builder().ratio(nan).build()),
            "budget.ratio",
        ),
        (
            field(RatioBudget::builder().ratio(1001.0).build()),
            "budget.ratio",
        ),
        (
            field(RatioBudget::builder().ttl(ms(10)).build()),
            "budget.ttl",
        ),
        (
            field(RatioBudget::builder().ttl(Duration::from_secs(61)).build()),
            "budget.ttl",
        ),
        (
            field(TokenBucket::builder().capacity(0.0).build()),
            "budget.capacity",
        ),
        (
            field(TokenBucket::builder().capacity(-1.0).build()),
            "budget.capacity",
        ),
        (
            field(TokenBucket::builder().capacity(nan).build()),
            "budget.capacity",
        ),
        (
            field(TokenBucket::builder().retry_cost(-5.0).build()),
            "budget.retry_cost",
        ),
        (
            field(TokenBucket::builder().failure_cost(nan).build()),
            "budget.failure_cost",
        ),
        (
            field(TokenBucket::builder().success_reward(-1.0).build()),
            "budget.success_reward",
        ),
        (
            field(TokenBucket::builder().initial(1e9).build()),
            "budget.initial",
        ),
        (field(TokenBucket::grpc(0.0, 0.1)), "budget.max_tokens"),
        (field(TokenBucket::grpc(2000.0, 0.1)), "budget.max_tokens"),
        (field(TokenBucket::grpc(10.0, nan)), "budget.token_ratio"),
        // breaker
        (
            field(Breaker::builder().failure_rate(0.0).build()),
            "breaker.failure_rate",
        ),
        (
            field(Breaker::builder().failure_rate(1.5).build()),
            "breaker.failure_rate",
        ),
        (
            field(Breaker::builder().failure_rate(nan).build()),
            "breaker.failure_rate",
        ),
        (
            field(Breaker::builder().minimum_calls(0).build()),
            "breaker.minimum_calls",
        ),
        (
            field(Breaker::builder().window(Duration::ZERO).build()),
            "breaker.window",
        ),
        (
            field(Breaker::builder().buckets(0).build()),
            "breaker.buckets",
        ),
        (
            field(Breaker::builder().consecutive_failures(0).build()),
            "breaker.consecutive_failures",
        ),
        // pace
        (field(Pacer::builder().build()), "pace.rate"),
        (
            field(Pacer::builder().rate(0, Duration::from_secs(1)).build()),
            "pace.rate",
        ),
        (
            field(Pacer::builder().rate(10, Duration::ZERO).build()),
            "pace.period",
        ),
        (
            field(
                Pacer::builder()
                    .rate(10, Duration::from_secs(1))
                    .burst(0)
                    .build(),
            ),
            "pace.burst",
        ),
        // throttle
        (field(Throttler::builder().k(0.5).build()), "throttle.k"),
        (field(Throttler::builder().k(nan).build()), "throttle.k"),
        (
            field(Throttler::builder().window(Duration::ZERO).build()),
            "throttle.window",
        ),
        (
            field(Throttler::builder().buckets(0).build()),
            "throttle.buckets",
        ),
        // cache
        (
            field(MemoryStore::<u64, u64>::builder(0).build()),
            "cache.max_capacity",
        ),
        (
            field(
                MemoryStore::<u64, u64>::builder(10)
                    .ttl(Duration::ZERO)
                    .build(),
            ),
            "cache.ttl",
        ),
        (
            field(MemoryStore::<u64, u64>::builder(10).beta(0.0).build()),
            "cache.beta",
        ),
        (
            field(MemoryStore::<u64, u64>::builder(10).beta(-1.0).build()),
            "cache.beta",
        ),
        (
            field(MemoryStore::<u64, u64>::builder(10).beta(nan).build()),
            "cache.beta",
        ),
        (
            field(
                MemoryStore::<u64, u64>::builder(10)
                    .negative_ttl(Duration::ZERO)
                    .build(),
            ),
            "cache.negative_ttl",
        ),
        // Lives added to the clock: a TTL whose default jitter (a tenth)
        // overflowed panicked at the first load.
        (
            field(
                MemoryStore::<u64, u64>::builder(10)
                    .ttl(Duration::MAX)
                    .build(),
            ),
            "cache.ttl",
        ),
        (
            field(
                MemoryStore::<u64, u64>::builder(10)
                    .stale_if_error(Duration::MAX)
                    .build(),
            ),
            "cache.ttl",
        ),
        (
            field(
                MemoryStore::<u64, u64>::builder(10)
                    .negative_ttl(Duration::MAX)
                    .build(),
            ),
            "cache.negative_ttl",
        ),
        // offsets and measures
        (field(Offset::hash("job", Duration::ZERO)), "offset.window"),
        (
            field(Offset::index(5, 5, Duration::from_secs(1))),
            "offset.index",
        ),
        (
            field(Offset::index(0, 0, Duration::from_secs(1))),
            "offset.count",
        ),
        (
            field(Spread::by_width(&[ms(1)], Duration::ZERO)),
            "measure.width",
        ),
        (field(Spread::by_count(&[ms(1)], 0)), "measure.buckets"),
        (
            field(Spread::in_window(&[ms(1)], ms(5)..ms(5), 10)),
            "measure.window",
        ),
    ];
    for (i, (got, expected)) in cases.iter().enumerate() {
        assert_eq!(got, expected, "case {i}");
    }
}

mod cancellation {
    //! Random drop points across the stack — retry (with a budget), circuit
    //! breaker, pace, coalesce — and across the cache, under paused time.
    //! After each case: no flight or load left in a table, every budget
    //! withdrawal either spent on a real re-send or refunded, the breaker
    //! and the pacer still admit callers, and nothing left pending.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use dephase::breaker::Breaker;
    use dephase::pace::{PaceLayer, Pacer};
    use dephase::{CircuitBreakerLayer, Coalesce};
    use proptest::prelude::*;
    use tower::ServiceBuilder;

    use super::*;

    /// One request of a case.
    #[derive(Debug, Clone)]
    struct Req {
        id: usize,
        key: u8,
        fail: bool,
        delay_ms: u64,
    }

    fn request() -> impl Strategy<Value = (u8, bool, u64, Option<u64>)> {
        (
            0u8..3,
            any::<bool>(),
            0u64..80,
            proptest::option::of(0u64..400),
        )
    }

    async fn stack_case(requests: Vec<(u8, bool, u64, Option<u64>)>) {
        let budget = Counting::new(TokenBucket::builder().capacity(50.0).build().unwrap());
        let attempts: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
        let log = attempts.clone();
        let breaker = Breaker::builder()
            .consecutive_failures(3)
            .open_time(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(50))
                    .cap(Duration::from_millis(200))
                    .seed(3)
                    .build()
                    .unwrap(),
            )
            .half_open_probes(2)
            .build()
            .unwrap();
        let pacer = Pacer::builder()
            .rate(100, Duration::from_secs(1))
            .max_wait(Duration::from_secs(1))
            .seed(4)
            .build()
            .unwrap();
        let origin = tower::service_fn(|r: Req| async move {
            tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
            if r.fail {
                Err::<usize, BoxError>("scripted failure".into())
            } else {
                Ok(r.id)
            }
        });
        let coalesce: Coalesce<_, _, u8, usize> = Coalesce::new(origin, |r: &Req| Some(r.key));
        let coalescer = coalesce.coalescer().clone();
        let below_retry = ServiceBuilder::new()
            .map_request(move |r: Req| {
                *log.lock().unwrap().entry(r.id).or_default() += 1;
                r
            })
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .layer(PaceLayer::new(pacer.clone()))
            .service(coalesce);
        let policy = RetryPolicy::builder()
            .max_attempts(3)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(10))
                    .cap(Duration::from_millis(100))
                    .jitter(Jitter::Full)
                    .seed(5)
                    .build()
                    .unwrap(),
            )
            .budget(budget.clone())
            .build()
            .unwrap();
        let service = RetryLayer::new(policy).layer(below_retry);

        let mut tasks = Vec::new();
        for (id, (key, fail, delay_ms, drop_after)) in requests.into_iter().enumerate() {
            let call = service.clone().oneshot(Req {
                id,
                key,
                fail,
                delay_ms,
            });
            let task = tokio::spawn(call);
            let abort = task.abort_handle();
            if let Some(after) = drop_after {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    abort.abort();
                });
            }
            tasks.push(task);
        }
        let tasks_cancelled = AtomicU64::new(0);
        for task in tasks {
            // Done, failed, or cancelled — but never left pending.
            if bounded(task).await.is_err_and(|e| e.is_cancelled()) {
                tasks_cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;

        assert_eq!(coalescer.in_flight(), 0, "a flight was left in the table");
        let resends: u64 = attempts.lock().unwrap().values().map(|n| n - 1).sum();
        let (granted, refunded) = (
            budget.granted.load(Ordering::SeqCst),
            budget.refunded.load(Ordering::SeqCst),
        );
        assert_eq!(
            granted - refunded,
            resends,
            "every withdrawal is spent or refunded"
        );
        if std::env::var("STATS").is_ok() {
            let dropped = tasks_cancelled.load(Ordering::SeqCst);
            eprintln!(
                "granted {granted} refunded {refunded} resends {resends} cancelled {dropped}"
            );
        }
        // The breaker admits again (no half-open permit was lost), and the
        // pacer releases the next caller at once.
        drop(breaker.acquire().expect("the breaker admits a probe"));
        assert_eq!(bounded(pacer.wait()).await.unwrap(), Duration::ZERO);
        let ok = bounded(service.oneshot(Req {
            id: 999,
            key: 9,
            fail: false,
            delay_ms: 1,
        }))
        .await;
        assert_eq!(ok.unwrap(), 999, "the stack still serves");
    }

    async fn cache_case(requests: Vec<(u8, bool, u64, Option<u64>)>) {
        let store = MemoryStore::builder(100)
            .ttl(Duration::from_millis(100))
            .seed(6)
            .build()
            .unwrap();
        let service = CacheLayer::new(store.clone(), |r: &Req| Some(r.key)).layer(
            tower::service_fn(|r: Req| async move {
                tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
                if r.fail {
                    Err::<usize, BoxError>("scripted failure".into())
                } else {
                    Ok(r.id)
                }
            }),
        );
        let mut tasks = Vec::new();
        for (id, (key, fail, delay_ms, drop_after)) in requests.into_iter().enumerate() {
            let task = tokio::spawn(service.clone().oneshot(Req {
                id,
                key,
                fail,
                delay_ms,
            }));
            let abort = task.abort_handle();
            if let Some(after) = drop_after {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    abort.abort();
                });
            }
            tokio::time::sleep(Duration::from_millis(delay_ms / 4)).await; // arrivals spread a little
            tasks.push(task);
        }
        for task in tasks {
            let _ = bounded(task).await;
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(store.loads_in_flight(), 0, "a load was left in flight");
        let ok = bounded(service.oneshot(Req {
            id: 999,
            key: 9,
            fail: false,
            delay_ms: 1,
        }))
        .await;
        assert_eq!(ok.unwrap(), 999, "the cache still serves");
    }

    fn paused<F: std::future::Future<Output = ()>>(case: F) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(case);
    }

    proptest! {
        #![proptest_config(support::proptest_config(256))]

        #[test]
        fn drops_anywhere_in_the_stack_leave_nothing_behind(
            requests in proptest::collection::vec(request(), 1..25)
        ) {
            paused(stack_case(requests));
        }

        #[test]
        fn drops_anywhere_in_the_cache_leave_nothing_behind(
            requests in proptest::collection::vec(request(), 1..25)
        ) {
            paused(cache_case(requests));
        }
    }
}

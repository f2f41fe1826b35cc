//! The adaptive concurrency limit: each algorithm's update rule against
//! steps computed by hand from Netflix concurrency-limits' source
//! (`AIMDLimit`, `VegasLimit`, `Gradient2Limit`, `ExpAvgMeasurement`,
//! `Log10RootFunction`), and the layer under paused time — rejection with a
//! jittered `retry_after`, a queue that releases one caller per freed
//! slot, waits that run out, cancellation, partitions (Netflix's
//! `AbstractPartitionedLimiter`), and the limit following drops.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::limit::error::LimitExceeded;
use dephase::limit::{
    Aimd, ConcurrencyLimit, ConcurrencyLimitLayer, Fixed, Gradient2, LimitAlgorithm, Limiter,
    Sample, Vegas,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

mod support;

const MS: Duration = Duration::from_millis(1);

fn sample(rtt_ms: u64, in_flight: u32, dropped: bool) -> Sample {
    Sample {
        rtt: Duration::from_millis(rtt_ms),
        in_flight,
        dropped,
    }
}

#[test]
fn aimd_adds_one_when_in_use_and_multiplies_on_a_drop() {
    // AIMDLimit._update: drop or rtt > timeout → (int)(limit × backoff);
    // else inflight × 2 ≥ limit → limit + 1; within [min, max]. Netflix's
    // builder defaults: initial 20, min 20, max 200.
    assert_eq!(Aimd::new().initial(), 20.0);
    let mut aimd = Aimd::new().range(1, 1000).unwrap().initial_limit(10);
    assert_eq!(aimd.initial(), 10.0);
    assert_eq!(aimd.update(&sample(10, 5, false)), 11.0, "5 × 2 ≥ 10");
    assert_eq!(
        aimd.update(&sample(10, 5, false)),
        11.0,
        "5 × 2 < 11: no growth"
    );
    assert_eq!(aimd.update(&sample(10, 11, true)), 9.0, "min(10, ⌊9.9⌋)");
    let mut slow = Aimd::new()
        .range(1, 1000)
        .unwrap()
        .initial_limit(10)
        .timeout(Duration::from_millis(100));
    assert_eq!(
        slow.update(&sample(200, 10, false)),
        9.0,
        "slower than the timeout: a drop"
    );
    // min(limit − 1, ...) keeps a small limit moving down, never below 1.
    let mut small = Aimd::new().range(1, 1000).unwrap().initial_limit(2);
    assert_eq!(small.update(&sample(10, 2, true)), 1.0);
    assert_eq!(small.update(&sample(10, 1, true)), 1.0);
    assert!(Aimd::new().backoff(0.4).is_err());
    assert!(Aimd::new().backoff(1.0).is_err());
}

#[test]
fn vegas_keeps_the_implied_queue_between_alpha_and_beta() {
    // VegasLimit: queue = ⌈limit × (1 − rtt_noload / rtt)⌉; with
    // L = Log10RootFunction(limit) = max(1, ⌊log10 limit⌋):
    // α = 3L, β = 6L, threshold = L.
    let mut vegas = Vegas::seeded(7);
    assert_eq!(vegas.initial(), 20.0);
    // The first sample only sets the no-load round trip.
    assert_eq!(vegas.update(&sample(10, 20, false)), 20.0);
    assert_eq!(vegas.rtt_noload(), Some(Duration::from_millis(10)));
    // queue = ⌈20 × 0⌉ = 0 ≤ threshold 1: aggressive increase by β = 6.
    assert_eq!(vegas.update(&sample(10, 20, false)), 26.0);
    // queue = ⌈26 × (1 − 10/20)⌉ = 13 > β = 6: decrease by L = 1.
    assert_eq!(vegas.update(&sample(20, 26, false)), 25.0);
    // A drop: decrease by L.
    assert_eq!(vegas.update(&sample(10, 25, true)), 24.0);
    // App-limited (5 × 2 < 24): unchanged.
    assert_eq!(vegas.update(&sample(10, 5, false)), 24.0);
    // queue = ⌈24 × (1 − 10/12)⌉ = 4, between α = 3 and β = 6: unchanged.
    assert_eq!(vegas.update(&sample(12, 24, false)), 24.0);
    // queue = ⌈24 × (1 − 10/11)⌉ = 3: not below α = 3, not above β: unchanged.
    assert_eq!(vegas.update(&sample(11, 24, false)), 24.0);
    // A shorter round trip becomes the no-load one, limit unchanged.
    assert_eq!(vegas.update(&sample(5, 24, false)), 24.0);
    assert_eq!(vegas.rtt_noload(), Some(Duration::from_millis(5)));
}

#[test]
fn vegas_smoothing_takes_a_share_of_each_step() {
    // newLimit = (1 − smoothing) × limit + smoothing × newLimit.
    let mut vegas = Vegas::seeded(7).smoothing(0.5).unwrap();
    vegas.update(&sample(10, 20, false));
    assert_eq!(vegas.update(&sample(10, 20, false)), 23.0, "20 + 0.5 × 6");
}

#[test]
fn gradient2_follows_the_long_to_short_round_trip_ratio() {
    // Gradient2Limit._update with queueSize 4, smoothing 0.2, and
    // ExpAvgMeasurement(600, 10): the first 10 samples are averaged.
    let mut g = Gradient2::new().range(1, 200).unwrap();
    assert_eq!(g.initial(), 20.0);
    // long = 10, gradient 1: new = 20 + 4 = 24; 20 × 0.8 + 24 × 0.2 = 20.8.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(g.update(&sample(10, 20, false)), 20.8));
    // long = 10: new = 24.8; 20.8 × 0.8 + 24.8 × 0.2 = 21.6.
    assert!(close(g.update(&sample(10, 20, false)), 21.6));
    // long = (10 + 10 + 40) / 3 = 20, gradient = 1.5 × 20 / 40 = 0.75
    // (Netflix's rttTolerance 1.5): new = 21.6 × 0.75 + 4 = 20.2;
    // 21.6 × 0.8 + 20.2 × 0.2 = 21.32.
    assert!(close(g.update(&sample(40, 21, false)), 21.32));
    // App-limited (5 < 21.32 / 2): unchanged.
    assert!(close(g.update(&sample(20, 5, false)), 21.32));
    // Drops are not an input.
    assert!(close(
        g.update(&sample(15, 21, true)),
        g.update(&sample(15, 0, false))
    ));
}

#[test]
fn gradient2_recovers_its_long_average_after_an_overload() {
    // long / short > 2 → long × 0.95 (the gradient uses the value before).
    let mut g = Gradient2::new();
    for _ in 0..10 {
        g.update(&sample(100, 20, false));
    }
    let before = g.long_rtt();
    // long = 100 × (1 − 2/601) + 10 × 2/601, then × 0.95.
    g.update(&sample(10, 20, false));
    let f = 2.0 / 601.0;
    let expected = (0.1 * (1.0 - f) + 0.01 * f) * 0.95;
    assert!(
        (g.long_rtt().as_secs_f64() - expected).abs() < 1e-9,
        "{:?} {before:?}",
        g.long_rtt()
    );
    // And the minimum holds: 20 by default.
    for _ in 0..50 {
        g.update(&sample(1000, 200, false));
    }
    assert!(g.update(&sample(1000, 200, false)) >= 20.0);
}

/// A backend that takes `work` per call and counts calls in flight.
#[derive(Clone)]
struct Backend {
    work: Duration,
    in_flight: Arc<AtomicU32>,
    starts: Arc<Mutex<Vec<Instant>>>,
}

impl Backend {
    fn new(work: Duration) -> Backend {
        Backend {
            work,
            in_flight: Arc::default(),
            starts: Arc::default(),
        }
    }
}

impl Service<&'static str> for Backend {
    type Response = &'static str;
    type Error = &'static str;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<&'static str, &'static str>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: &'static str) -> Self::Future {
        self.starts.lock().unwrap().push(Instant::now());
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let (work, in_flight) = (self.work, self.in_flight.clone());
        Box::pin(async move {
            tokio::time::sleep(work).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(request)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_a_caller_is_turned_away_with_a_jittered_retry_after() {
    let limiter = Limiter::builder()
        .algorithm(Fixed(2))
        .seed(3)
        .build()
        .unwrap();
    let mut service = ConcurrencyLimit::new(Backend::new(10 * MS), limiter.clone());
    let a = service.ready().await.unwrap().call("a");
    let b = service.ready().await.unwrap().call("b");
    let mut afters = Vec::new();
    for _ in 0..5 {
        let error = service.ready().await.unwrap().call("c").await.unwrap_err();
        let exceeded = error
            .downcast_ref::<LimitExceeded>()
            .expect("LimitExceeded");
        assert_eq!((exceeded.limit(), exceeded.in_flight()), (2, 2));
        assert_eq!(exceeded.waited(), Duration::ZERO);
        afters.push(exceeded.retry_after());
    }
    // No window yet: between 1 and 2 ms, each drawn on its own.
    assert!(afters.iter().all(|a| *a >= MS && *a < 2 * MS), "{afters:?}");
    afters.dedup();
    assert!(afters.len() > 1, "jittered: {afters:?}");
    assert_eq!((a.await.unwrap(), b.await.unwrap()), ("a", "b"));
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.stats().rejected, 5);
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_are_released_one_per_freed_slot() {
    // Limit 1, 10 ms per call, five callers at once: they go at 0, 10,
    // 20, 30 and 40 ms — one each time a slot frees, never together.
    let limiter = Limiter::builder()
        .algorithm(Fixed(1))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let backend = Backend::new(10 * MS);
    let service = ConcurrencyLimitLayer::new(limiter.clone()).layer(backend.clone());
    let start = Instant::now();
    let calls: Vec<_> = (0..5).map(|_| service.clone().oneshot("x")).collect();
    let results = support::bounded(futures_util::future::join_all(calls)).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let starts: Vec<Duration> = backend
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|s| *s - start)
        .collect();
    assert_eq!(starts, (0..5).map(|k| 10 * MS * k).collect::<Vec<_>>());
    let stats = limiter.stats();
    assert_eq!(
        (stats.waited, stats.rejected, stats.in_flight, stats.queued),
        (4, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_runs_out_is_a_rejection() {
    let limiter = Limiter::builder()
        .algorithm(Fixed(1))
        .max_wait(15 * MS)
        .build()
        .unwrap();
    let service = ConcurrencyLimitLayer::new(limiter.clone()).layer(Backend::new(100 * MS));
    let busy = tokio::spawn(service.clone().oneshot("busy"));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let error = service.clone().oneshot("late").await.unwrap_err();
    let exceeded = error.downcast_ref::<LimitExceeded>().unwrap();
    assert_eq!(exceeded.waited(), 15 * MS);
    assert_eq!(start.elapsed(), 15 * MS);
    assert_eq!(limiter.stats().timed_out, 1);
    busy.await.unwrap().unwrap();
    assert_eq!((limiter.in_flight(), limiter.stats().queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_leaves_the_queue_and_passes_on_its_slot() {
    let limiter = Limiter::builder()
        .algorithm(Fixed(1))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let backend = Backend::new(10 * MS);
    let service = ConcurrencyLimitLayer::new(limiter.clone()).layer(backend.clone());
    let first = tokio::spawn(service.clone().oneshot("first"));
    tokio::task::yield_now().await;
    // Two waiters: the first is dropped while queued, the second waits.
    let gone = tokio::spawn(service.clone().oneshot("gone"));
    tokio::task::yield_now().await;
    let next = tokio::spawn(service.clone().oneshot("next"));
    tokio::task::yield_now().await;
    assert_eq!(limiter.stats().queued, 2);
    gone.abort();
    let _ = gone.await;
    assert_eq!(limiter.stats().queued, 1);
    first.await.unwrap().unwrap();
    assert_eq!(next.await.unwrap().unwrap(), "next");

    // A waiter given a slot and dropped before it used it passes it on.
    let hold = tokio::spawn(service.clone().oneshot("hold"));
    tokio::task::yield_now().await;
    let mut granted = Box::pin(service.clone().oneshot("granted-then-gone"));
    assert!(futures_util::poll!(&mut granted).is_pending());
    let after = tokio::spawn(service.clone().oneshot("after"));
    tokio::task::yield_now().await;
    hold.await.unwrap().unwrap(); // frees the slot: given to `granted`
    drop(granted); // ... which goes away before using it
    assert_eq!(support::bounded(after).await.unwrap().unwrap(), "after");
    assert_eq!((limiter.in_flight(), limiter.stats().queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_turns_callers_away_at_once() {
    let limiter = Limiter::builder()
        .algorithm(Fixed(1))
        .max_wait(Duration::from_secs(1))
        .max_queued(1)
        .build()
        .unwrap();
    let service = ConcurrencyLimitLayer::new(limiter.clone()).layer(Backend::new(10 * MS));
    let first = tokio::spawn(service.clone().oneshot("first"));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(service.clone().oneshot("queued"));
    tokio::task::yield_now().await;
    let error = service.clone().oneshot("third").await.unwrap_err();
    assert!(error.is::<LimitExceeded>());
    first.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn under_a_three_fold_overload_the_critical_partition_keeps_its_share() {
    // Netflix's partitioned limiter: once the limit is reached, a request
    // gets in only while its partition is under ⌈limit × share⌉. 30% of
    // the traffic is critical, offered at 3× what the limit serves — the
    // critical load alone is 0.9 of the limit. Callers wait up to 20 ms,
    // the critical ones served first: a critical call that arrives in the
    // tick a slot frees waits for it instead of being turned away.
    let limiter = Limiter::builder()
        .algorithm(Fixed(20))
        .partition("critical", 0.9)
        .unwrap()
        .partition("sheddable", 0.1)
        .unwrap()
        .max_wait(20 * MS)
        .max_queued(10_000)
        .build()
        .unwrap();
    let critical = limiter.partition_index("critical");
    let sheddable = limiter.partition_index("sheddable");
    let service = ConcurrencyLimitLayer::new(limiter.clone())
        .priority(move |r: &&'static str| {
            if *r == "critical" {
                critical
            } else {
                sheddable
            }
        })
        .layer(Backend::new(10 * MS));
    // 20 slots × 10 ms: 2 per ms served; 6 per ms offered, for 1 s.
    let mut calls = Vec::new();
    for ms in 0..1000u32 {
        for k in 0..6u32 {
            let kind: &'static str = if (ms * 6 + k) % 10 < 3 {
                "critical"
            } else {
                "sheddable"
            };
            let service = service.clone();
            calls.push(async move {
                tokio::time::sleep(MS * ms).await;
                (kind, service.oneshot(kind).await.is_ok())
            });
        }
    }
    let (mut ok, mut total) = ([0u32; 2], [0u32; 2]);
    for (kind, success) in futures_util::future::join_all(calls).await {
        let i = usize::from(kind == "sheddable");
        total[i] += 1;
        ok[i] += u32::from(success);
    }
    let critical_rate = f64::from(ok[0]) / f64::from(total[0]);
    let sheddable_rate = f64::from(ok[1]) / f64::from(total[1]);
    assert!(critical_rate >= 0.99, "critical: {critical_rate}");
    assert!(
        sheddable_rate < 0.5,
        "sheddable absorbs the rejections: {sheddable_rate}"
    );
}

#[tokio::test(start_paused = true)]
async fn drops_bring_an_aimd_limit_down_and_answers_bring_it_back() {
    // The backend refuses (a retryable error) whenever more than 5 calls
    // are in flight; callers keep 12 in flight. AIMD's limit settles
    // around what the backend takes.
    let limiter = Limiter::builder()
        .algorithm(Aimd::new().range(1, 100).unwrap().initial_limit(12))
        .window(100 * MS, 100 * MS)
        .min_samples(5)
        .build()
        .unwrap();
    let in_flight = Arc::new(AtomicU32::new(0));
    let counter = in_flight.clone();
    let backend = tower::service_fn(move |_: ()| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let counter = counter.clone();
        async move {
            tokio::time::sleep(10 * MS).await;
            counter.fetch_sub(1, Ordering::SeqCst);
            if n >= 5 { Err("overloaded") } else { Ok(()) }
        }
    });
    let service = ConcurrencyLimitLayer::new(limiter.clone()).layer(backend);
    let mut limits = Vec::new();
    for _ in 0..300 {
        let calls: Vec<_> = (0..12).map(|_| service.clone().oneshot(())).collect();
        let _ = futures_util::future::join_all(calls).await;
        limits.push(limiter.limit());
    }
    let settled = &limits[200..];
    assert!(
        settled.iter().all(|l| (4..=8).contains(l)),
        "{:?}",
        &limits[..]
    );
    assert!(limits[0] >= 11, "{limits:?}");
}

#[test]
fn bad_settings_are_refused() {
    let field = |r: Result<Limiter, dephase::ConfigError>| r.unwrap_err().field();
    assert_eq!(
        field(Limiter::builder().window(Duration::ZERO, MS).build()),
        "limit.window"
    );
    assert_eq!(
        field(Limiter::builder().window(10 * MS, MS).build()),
        "limit.window"
    );
    assert_eq!(
        field(Limiter::builder().min_samples(0).build()),
        "limit.min_samples"
    );
    let two = Limiter::builder()
        .partition("a", 0.7)
        .unwrap()
        .partition("b", 0.7)
        .unwrap();
    assert_eq!(field(two.build()), "limit.partition");
    let twice = Limiter::builder()
        .partition("a", 0.1)
        .unwrap()
        .partition("a", 0.1)
        .unwrap();
    assert_eq!(field(twice.build()), "limit.partition");
    assert!(Limiter::builder().partition("a", 1.5).is_err());
    assert!(Gradient2::new().range(0, 10).is_err());
    assert!(Gradient2::new().range(10, 5).is_err());
    assert!(Gradient2::new().smoothing(0.0).is_err());
    assert!(Vegas::new().smoothing(f64::NAN).is_err());
}

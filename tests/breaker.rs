//! The circuit breaker under paused time: every transition, minimum calls,
//! ageing of the window, slow calls, exactly K half-open probes however many
//! callers race, the spread of a hundred breakers' first probes, operator
//! controls, cancellation, the keyed variant, telemetry and bad settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::error::Rejected;
use dephase::breaker::{Breaker, CircuitBreakerLayer, KeyedBreaker, State};
use dephase::classify::Outcome;
use dephase::measure::Spread;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

mod support;

const S: Duration = Duration::from_secs(1);
const FAIL: Outcome = Outcome::failure("test");

/// Opens for exactly `open` (no jitter), doubling per re-opening.
fn fixed_open(open: Duration) -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .base(open)
        .cap(open * 8)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn record(breaker: &Breaker, outcome: Outcome) {
    breaker.acquire().expect("admitted").record(outcome);
}

fn rejected(breaker: &Breaker) -> Rejected {
    breaker.acquire().expect_err("rejected")
}

#[tokio::test(start_paused = true)]
async fn trips_on_the_failure_rate_once_the_minimum_calls_are_in() {
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .open_time(fixed_open(5 * S))
        .build()
        .unwrap();
    for _ in 0..19 {
        record(&breaker, FAIL);
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "19 calls: below the minimum"
    );
    record(&breaker, FAIL);
    assert_eq!(breaker.state(), State::Open);

    // Below the threshold it stays closed however many calls.
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .build()
        .unwrap();
    for i in 0..1000 {
        record(&breaker, if i % 5 < 2 { FAIL } else { Outcome::Success }); // 40%
    }
    assert_eq!(breaker.state(), State::Closed);
    // Now only failures: it opens on the one that takes the rate to 50%,
    // 400 + n failures of 1000 + n calls: n = 200.
    let mut failures = 0;
    while breaker.state() == State::Closed {
        record(&breaker, FAIL);
        failures += 1;
    }
    assert_eq!(failures, 200);
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_age_out_of_the_window() {
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .window(10 * S)
        .buckets(10)
        .build()
        .unwrap();
    for _ in 0..15 {
        record(&breaker, FAIL);
    }
    tokio::time::advance(11 * S).await;
    for _ in 0..15 {
        record(&breaker, FAIL);
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the first 15 failures expired"
    );
    for _ in 0..5 {
        record(&breaker, FAIL);
    }
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let breaker = Breaker::builder().consecutive_failures(3).build().unwrap();
    record(&breaker, FAIL);
    record(&breaker, FAIL);
    record(&breaker, Outcome::Success);
    record(&breaker, FAIL);
    record(&breaker, FAIL);
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, FAIL);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count_as_failures_when_configured() {
    let breaker = Breaker::builder()
        .consecutive_failures(2)
        .slow_call(S)
        .build()
        .unwrap();
    for _ in 0..2 {
        let permit = breaker.acquire().unwrap();
        tokio::time::sleep(2 * S).await;
        permit.record(Outcome::Success);
    }
    assert_eq!(
        breaker.state(),
        State::Open,
        "two successful but slow calls"
    );

    let breaker = Breaker::builder().consecutive_failures(2).build().unwrap();
    for _ in 0..2 {
        let permit = breaker.acquire().unwrap();
        tokio::time::sleep(2 * S).await;
        permit.record(Outcome::Success);
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "no slow-call limit: only outcomes count"
    );
}

/// closed → open → half-open → closed, and half-open → open for longer.
#[tokio::test(start_paused = true)]
async fn every_transition() {
    let breaker = Breaker::builder()
        .consecutive_failures(1)
        .open_time(fixed_open(5 * S))
        .half_open_probes(2)
        .build()
        .unwrap();
    record(&breaker, FAIL);
    assert_eq!(breaker.state(), State::Open);
    let r = rejected(&breaker);
    assert_eq!((r.state(), r.retry_after()), (State::Open, Some(5 * S)));
    tokio::time::advance(3 * S).await;
    assert_eq!(
        rejected(&breaker).retry_after(),
        Some(2 * S),
        "it says when to come back"
    );

    // After 5 s the first caller is a probe; two probes at most.
    tokio::time::advance(2 * S).await;
    let first = breaker.acquire().unwrap();
    assert!(first.is_probe());
    assert_eq!(breaker.state(), State::HalfOpen);
    let second = breaker.acquire().unwrap();
    let r = rejected(&breaker);
    assert_eq!(r.state(), State::HalfOpen);
    assert!(r.retry_after().is_some());

    // One probe fails: open again, for the next (doubled) open time.
    first.record(FAIL);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.retry_after(), Some(10 * S));
    second.record(Outcome::Success); // from the finished round: ignored
    assert_eq!(breaker.state(), State::Open);

    // Both probes succeed: closed, and the open time starts over.
    tokio::time::advance(10 * S).await;
    let probes = [breaker.acquire().unwrap(), breaker.acquire().unwrap()];
    for p in probes {
        p.record(Outcome::Success);
    }
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, FAIL);
    assert_eq!(
        breaker.retry_after(),
        Some(5 * S),
        "back to the base open time"
    );
}

/// 100 callers race for the half-open state: exactly K reach the inner
/// service, the rest are rejected at once.
#[tokio::test(start_paused = true)]
async fn exactly_k_probes_with_a_hundred_concurrent_callers() {
    let breaker = Breaker::builder()
        .consecutive_failures(1)
        .open_time(fixed_open(S))
        .half_open_probes(3)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let slow = tower::service_fn(move |_: ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, &str>(())
        }
    });
    let service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(slow);
    record(&breaker, FAIL);
    tokio::time::advance(S).await;

    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(service.clone().oneshot(())))
        .collect();
    tokio::task::yield_now().await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "exactly K calls reached the inner service"
    );
    let mut rejected = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert!(e.downcast_ref::<Rejected>().is_some());
            rejected += 1;
        }
    }
    assert_eq!(rejected, 97);
    assert_eq!(breaker.state(), State::Closed, "the three probes succeeded");
}

/// The same race on real threads, many rounds: never more than K admitted.
#[test]
fn exactly_k_probes_under_threads() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    for round in 0..200 {
        let k = 1 + round % 5;
        let breaker = Breaker::builder()
            .consecutive_failures(1)
            .open_time(fixed_open(Duration::from_nanos(1)))
            .half_open_probes(k)
            .build()
            .unwrap();
        record(&breaker, FAIL);
        std::thread::sleep(Duration::from_micros(10));
        let admitted = AtomicUsize::new(0);
        let permits = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        if let Ok(p) = breaker.acquire() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            permits.lock().unwrap().push(p);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), k as usize, "round {round}");
    }
}

/// A probe whose caller goes away gives its place back.
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_returns_its_permit() {
    let breaker = Breaker::builder()
        .consecutive_failures(1)
        .open_time(fixed_open(S))
        .half_open_probes(1)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(tower::service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, &str>(())
        }));
    record(&breaker, FAIL);
    tokio::time::advance(S).await;
    let probe = tokio::time::timeout(S, service.clone().oneshot(())).await;
    assert!(probe.is_err(), "the caller gave up on its probe");
    assert_eq!(breaker.state(), State::HalfOpen);
    let again = breaker.acquire().expect("the place is free again");
    again.record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
}

/// A hundred breakers open at the same instant. With a fixed open time their
/// first probes all come in one bucket; with the default jittered open time
/// they spread over it (for every one of 20 seeds: the spread is not luck).
#[tokio::test(start_paused = true)]
async fn a_hundred_breakers_opened_together_probe_apart() {
    for (jitter, seed) in [(Jitter::None, 0)]
        .into_iter()
        .chain((0..20).map(|seed| (Jitter::Equal, seed)))
    {
        let open = ExponentialBackoff::builder()
            .base(10 * S)
            .cap(60 * S)
            .jitter(jitter)
            .seed(seed)
            .build()
            .unwrap();
        let breakers: Vec<Breaker> = (0..100)
            .map(|_| {
                Breaker::builder()
                    .consecutive_failures(1)
                    .open_time(open.clone())
                    .build()
                    .unwrap()
            })
            .collect();
        let start = Instant::now();
        for b in &breakers {
            record(b, FAIL);
        }
        let recorder = dephase::measure::Recorder::starting_at(start);
        let tasks: Vec<_> = breakers
            .iter()
            .cloned()
            .map(|b| {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    // Each replica retries as soon as its breaker says so.
                    loop {
                        match b.acquire() {
                            Ok(probe) => {
                                recorder.mark();
                                probe.record(Outcome::Success);
                                return;
                            }
                            Err(r) => tokio::time::sleep(r.retry_after().unwrap()).await,
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let probes = recorder.times();
        let spread =
            Spread::in_window(&probes, 5 * S..10 * S + Duration::from_millis(1), 10).unwrap();
        assert_eq!(spread.count(), 100);
        match jitter {
            Jitter::None => assert_eq!(spread.peak(), 100, "a fixed open time: one bucket"),
            _ => assert!(
                spread.peak_to_mean() <= 1.5,
                "seed {seed}: {:?}",
                spread.buckets()
            ),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn operators_can_isolate_force_closed_and_reset() {
    let breaker = Breaker::builder().consecutive_failures(1).build().unwrap();
    breaker.isolate();
    let r = rejected(&breaker);
    assert_eq!((r.state(), r.retry_after()), (State::Isolated, None));
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(
        breaker.state(),
        State::Isolated,
        "isolation does not time out"
    );

    breaker.force_closed();
    for _ in 0..100 {
        record(&breaker, FAIL);
    }
    assert_eq!(
        breaker.state(),
        State::ForcedClosed,
        "forced closed never trips"
    );

    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, FAIL);
    assert_eq!(
        breaker.state(),
        State::Open,
        "after a reset it counts again"
    );
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
}

/// A rejection does not reach the inner service and is not counted.
#[tokio::test(start_paused = true)]
async fn rejections_do_not_call_the_inner_service_and_do_not_count() {
    let breaker = Breaker::builder()
        .consecutive_failures(2)
        .open_time(fixed_open(S))
        .half_open_probes(1)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let mut service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(tower::service_fn(move |fail: bool| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { if fail { Err("down") } else { Ok(()) } }
        }));
    for _ in 0..2 {
        service.ready().await.unwrap().call(true).await.unwrap_err();
    }
    assert_eq!(breaker.state(), State::Open);
    for _ in 0..50 {
        let e = service.ready().await.unwrap().call(true).await.unwrap_err();
        assert!(e.is::<Rejected>());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::advance(S).await;
    service.ready().await.unwrap().call(false).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}

/// The classifier decides: an answer that is the caller's business (here
/// `Err(404)`) is not a failure of the dependency.
#[tokio::test(start_paused = true)]
async fn the_classifier_decides_what_a_failure_is() {
    let breaker = Breaker::builder().consecutive_failures(1).build().unwrap();
    let classify = |r: Result<&(), &Status>| match r {
        Err(Status(500..)) => Outcome::retry("5xx"),
        _ => Outcome::Success,
    };
    let mut service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(classify))
        .service(tower::service_fn(|code: u16| async move {
            if code == 200 {
                Ok(())
            } else {
                Err(Status(code))
            }
        }));
    for _ in 0..10 {
        let _ = service.ready().await.unwrap().call(404).await;
    }
    assert_eq!(breaker.state(), State::Closed);
    let _ = service.ready().await.unwrap().call(503).await;
    assert_eq!(breaker.state(), State::Open);
}

#[derive(Debug)]
struct Status(u16);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {}", self.0)
    }
}

impl std::error::Error for Status {}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_separate_and_bounded() {
    let hosts = KeyedBreaker::new(Breaker::builder().consecutive_failures(1), 3).unwrap();
    let mut service = ServiceBuilder::new()
        .layer(hosts.layer(|host: &&str| Some(host.to_string())))
        .service(tower::service_fn(|host: &'static str| async move {
            if host == "down" { Err("down") } else { Ok(()) }
        }));
    service
        .ready()
        .await
        .unwrap()
        .call("down")
        .await
        .unwrap_err();
    assert_eq!(hosts.state(&"down".to_string()), Some(State::Open));
    service.ready().await.unwrap().call("up-1").await.unwrap();
    service.ready().await.unwrap().call("up-2").await.unwrap();
    assert_eq!(hosts.len(), 3);
    // A fourth key evicts the least recently used closed breaker, not the open one.
    service.ready().await.unwrap().call("up-3").await.unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts.state(&"down".to_string()), Some(State::Open));
    assert_eq!(hosts.state(&"up-1".to_string()), None);
    let e = service
        .ready()
        .await
        .unwrap()
        .call("down")
        .await
        .unwrap_err();
    assert!(e.is::<Rejected>());
    // A million keys never hold more than the capacity.
    for i in 0..10_000 {
        hosts.get(&format!("host-{i}"));
    }
    assert_eq!(hosts.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn transitions_and_rejections_are_recorded() {
    use tracing::Instrument;
    use tracing::field::Empty;
    let (captured, _guard) = support::capture();
    let breaker = Breaker::builder()
        .consecutive_failures(1)
        .open_time(fixed_open(2 * S))
        .build()
        .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(tower::service_fn(|_: ()| async { Err::<(), _>("down") }));
    let span = tracing::info_span!("first", dephase.breaker.state = Empty);
    let _ = service
        .ready()
        .await
        .unwrap()
        .call(())
        .instrument(span)
        .await;
    assert_eq!(
        captured.span("first")["dephase.breaker.state"].as_str(),
        "open"
    );
    let opened = captured.events_with("dephase::breaker", "opened");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["dephase.breaker.open_ms"].as_f64(), 2000.0);
    assert_eq!(opened[0]["from"].as_str(), "closed");

    let span = tracing::info_span!(
        "second",
        dephase.breaker.state = Empty,
        dephase.breaker.retry_after_ms = Empty
    );
    let _ = service
        .ready()
        .await
        .unwrap()
        .call(())
        .instrument(span)
        .await;
    let fields = captured.span("second");
    assert_eq!(fields["dephase.breaker.state"].as_str(), "open");
    assert_eq!(fields["dephase.breaker.retry_after_ms"].as_f64(), 2000.0);
    assert_eq!(
        captured.events_with("dephase::breaker", "rejected").len(),
        1
    );
}

#[test]
fn bad_settings_name_their_field() {
    let b = Breaker::builder;
    let cases = [
        (
            "breaker.failure_rate",
            b().failure_rate(0.0).build().unwrap_err(),
        ),
        (
            "breaker.failure_rate",
            b().failure_rate(1.01).build().unwrap_err(),
        ),
        (
            "breaker.failure_rate",
            b().failure_rate(f64::NAN).build().unwrap_err(),
        ),
        (
            "breaker.failure_rate",
            b().failure_rate(-0.5).build().unwrap_err(),
        ),
        (
            "breaker.minimum_calls",
            b().minimum_calls(0).build().unwrap_err(),
        ),
        (
            "breaker.window",
            b().window(Duration::ZERO).build().unwrap_err(),
        ),
        ("breaker.buckets", b().buckets(0).build().unwrap_err()),
        ("breaker.buckets", b().buckets(10_001).build().unwrap_err()),
        (
            "breaker.buckets",
            b().window(Duration::from_millis(5))
                .buckets(10)
                .build()
                .unwrap_err(),
        ),
        (
            "breaker.consecutive_failures",
            b().consecutive_failures(0).build().unwrap_err(),
        ),
        (
            "breaker.slow_call",
            b().slow_call(Duration::ZERO).build().unwrap_err(),
        ),
        (
            "breaker.half_open_probes",
            b().half_open_probes(0).build().unwrap_err(),
        ),
        (
            "breaker.half_open_probes",
            b().half_open_probes(1024).build().unwrap_err(),
        ),
        (
            "breaker.capacity",
            KeyedBreaker::<u8>::new(b(), 0).unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
    }
    assert!(b().failure_rate(1.0).build().is_ok());
}

/// The accuracy the closed path trades for never reading the clock on a
/// success (documented in `breaker`'s module docs): successes are placed in
/// the window sixteen at a time per thread, so up to fifteen made long ago
/// still count at the next failure — and no more than fifteen.
#[tokio::test(start_paused = true)]
async fn at_most_fifteen_successes_per_thread_outlive_the_window() {
    let breaker = |successes: usize| {
        let breaker = Breaker::builder()
            .failure_rate(0.05)
            .minimum_calls(16)
            .window(Duration::from_secs(10))
            .buckets(10)
            .build()
            .unwrap();
        for _ in 0..successes {
            record(&breaker, Outcome::Success);
        }
        breaker
    };
    let (fifteen, sixteen) = (breaker(15), breaker(16));
    tokio::time::advance(Duration::from_secs(60)).await; // far past the window
    // Fifteen unplaced successes are placed with the failure: 16 calls in
    // the window, 1 failure (6.25% ≥ 5%): open.
    record(&fifteen, FAIL);
    assert_eq!(fifteen.state(), State::Open);
    // The sixteenth placed all sixteen in their own bucket, long expired:
    // 1 call, under the minimum of 16: closed.
    record(&sixteen, FAIL);
    assert_eq!(sixteen.state(), State::Closed);
}

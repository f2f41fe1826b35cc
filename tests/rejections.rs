//! What an adversarial review of the breaker, the pacer, the axum
//! responses and the metrics found (each test failed before its fix, and
//! cites the rule it checks): another dephase layer's rejection is not the
//! service's failure; a rejection wrapped by a coalesced call is still a
//! 503; the `dephase.breaker.open` gauge counts only breakers that are
//! open; resilience4j's half-open state judges slow probes by the slow-call
//! rate. Paused time, no network.
//!
//! The OpenTelemetry instruments are made once per process, so every test
//! here installs the same in-memory meter first and runs under one lock
//! (the breaker tests move the process-wide `dephase.breaker.open` gauge).
#![cfg(all(feature = "otel", feature = "axum", feature = "reqwest-middleware"))]

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use dephase::BoxError;
use dephase::axum::RejectionLayer;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::{Breaker, CircuitBreakerLayer, KeyedBreaker, State};
use dephase::classify::Outcome;
use dephase::coalesce::CoalesceLayer;
use dephase::http::{DephaseMiddleware, HttpClassifier};
use dephase::pace::{PaceLayer, Pacer};
use dephase::telemetry::metrics;
use http::Extensions;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use reqwest_middleware::{ClientBuilder, Middleware, Next};
use tokio::sync::{Mutex, MutexGuard};
use tower::{ServiceBuilder, ServiceExt};

// ----- shared set-up ---------------------------------------------------------

struct Meter {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

/// Installs the in-memory meter (once) and serialises the tests.
async fn setup() -> (&'static Meter, MutexGuard<'static, ()>) {
    static LOCK: Mutex<()> = Mutex::const_new(());
    static METER: OnceLock<Meter> = OnceLock::new();
    let guard = LOCK.lock().await;
    let meter = METER.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        assert!(metrics::use_meter(&provider.meter("dephase")));
        Meter { provider, exporter }
    });
    (meter, guard)
}

/// The current value of the `dephase.breaker.open` up-down counter.
fn breakers_open(meter: &Meter) -> i64 {
    meter.provider.force_flush().unwrap();
    let exported = meter.exporter.get_finished_metrics().unwrap();
    let Some(last) = exported.last() else {
        return 0;
    };
    let mut total = 0;
    for scope in last.scope_metrics() {
        for metric in scope.metrics() {
            if metric.name() != metrics::BREAKERS_OPEN {
                continue;
            }
            if let AggregatedMetrics::I64(MetricData::Sum(sum)) = metric.data() {
                total += sum.data_points().map(|p| p.value()).sum::<i64>();
            }
        }
    }
    total
}

fn fixed(open: Duration) -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .base(open)
        .cap(open)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

// ----- the `dephase.breaker.open` gauge ---------------------------------------

/// `dephase.breaker.open` is documented as "Breakers not closed now (open or
/// half-open): up at each opening from closed, down at each closing", and the
/// critical `DephaseBreakerOpen` alert in `dashboards/alerts.yaml` fires when
/// it is above 0 for 10 minutes. An operator's `reset()` of a breaker that is
/// already closed, or a `force_closed()` (a closed state), opens nothing: the
/// gauge must not move. Today `metrics::breaker_transition` matches
/// `("closed", _)` first, so closed → closed (and closed → forced closed,
/// which reads as "closed") adds 1 each time, for ever.
#[tokio::test(start_paused = true)]
async fn resetting_a_closed_breaker_leaves_the_open_gauge_alone() {
    let (meter, _guard) = setup().await;
    let before = breakers_open(meter);
    let breaker = Breaker::builder().build().unwrap();
    breaker.reset(); // closed → closed
    breaker.force_closed(); // closed → forced closed
    breaker.reset(); // forced closed → closed
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        breakers_open(meter) - before,
        0,
        "no breaker was ever open, yet the gauge of open breakers went up"
    );
}

/// The same gauge must come back down when an open breaker stops existing.
/// `KeyedBreaker` evicts an open breaker when it has to ("the memory bound
/// wins over keeping an open breaker"): that breaker is gone, nothing is
/// open, yet its +1 stays in the gauge (there is no decrement on drop or
/// eviction), so the critical alert fires for ever after.
#[tokio::test(start_paused = true)]
async fn an_evicted_open_breaker_does_not_stay_in_the_open_gauge() {
    let (meter, _guard) = setup().await;
    let before = breakers_open(meter);
    let hosts = KeyedBreaker::new(
        Breaker::builder()
            .consecutive_failures(1)
            .open_time(fixed(Duration::from_secs(60))),
        1,
    )
    .unwrap();
    hosts
        .get(&"a")
        .acquire()
        .unwrap()
        .record(Outcome::failure("down"));
    assert_eq!(hosts.state(&"a"), Some(State::Open));
    assert_eq!(breakers_open(meter) - before, 1);
    // A new key: capacity 1, so "a" (open) is evicted.
    assert_eq!(hosts.get(&"b").state(), State::Closed);
    assert_eq!(hosts.state(&"a"), None, "evicted");
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        breakers_open(meter) - before,
        0,
        "no breaker of the set is open, yet the gauge still counts the evicted one"
    );
}

// ----- resilience4j: the half-open state and the slow-call rate ---------------

/// resilience4j (`CircuitBreakerConfig`, half-open state): once the permitted
/// calls are done, "if the failure rate *or slow call rate* is equal or
/// greater than the configured threshold, the state changes back to OPEN",
/// each rate against its own threshold (`checkIfThresholdsExceeded`); and
/// `slow_call_rate`'s own doc says slow calls "are counted on their own (not
/// as failures)". `half_open_by_failure_rate` claims to decide "as
/// resilience4j does", but counts a slow probe as a *failure* against the
/// failure-rate threshold: two successful probes, one slow (slow-call rate
/// 50% < 100%, failure rate 0% < 50%), re-open the breaker instead of
/// closing it.
#[tokio::test(start_paused = true)]
async fn half_open_judges_slow_probes_by_the_slow_call_rate() {
    let (_meter, _guard) = setup().await;
    let ms = Duration::from_millis;
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(2)
        .window(Duration::from_secs(60))
        .slow_call_rate(ms(100), 1.0)
        .half_open_probes(2)
        .half_open_by_failure_rate()
        .open_time(fixed(Duration::from_secs(1)))
        .build()
        .unwrap();
    for _ in 0..2 {
        breaker.acquire().unwrap().record(Outcome::failure("down"));
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::advance(Duration::from_secs(1)).await;

    // Probe 1: succeeds, slowly (200 ms > 100 ms).
    let slow = breaker.acquire().expect("first probe");
    assert!(slow.is_probe());
    tokio::time::advance(ms(200)).await;
    slow.record(Outcome::Success);
    // Probe 2: succeeds at once.
    let fast = breaker.acquire().expect("second probe");
    fast.record(Outcome::Success);

    assert_eq!(
        breaker.state(),
        State::Closed,
        "failure rate 0% < 50% and slow-call rate 50% < 100%: resilience4j closes"
    );
}

// ----- a pacer's local rejection counted as the dependency's failure ----------

/// The README's own axum set-up (`RejectionLayer`, then a breaker with
/// `HttpClassifier`, then a pacer). A burst larger than the pacer's maximum
/// wait gets `429`s from the pacer — the handler never fails. But
/// `HttpClassifier` classifies the pacer's `Overloaded` as
/// `Failure("error")`, so the breaker books every turned-away request as a
/// failure of the dependency and opens: afterwards even a lone request, with
/// the pacer idle and the handler healthy, gets the breaker's `503`. A
/// breaker's failure rate is about the protected call (resilience4j records
/// only the calls it let through, by their outcome); a local admission
/// rejection is not one.
#[tokio::test(start_paused = true)]
async fn a_pacer_turning_a_burst_away_does_not_open_the_breaker() {
    let (_meter, _guard) = setup().await;
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .build()
        .unwrap();
    let pacer = Pacer::builder()
        .rate(100, Duration::from_secs(1))
        .max_wait(Duration::from_millis(500))
        .seed(15)
        .build()
        .unwrap();
    let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(RejectionLayer::new())
            .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::new()))
            .layer(PaceLayer::new(pacer)),
    );
    let request = || Request::get("/").body(Body::empty()).unwrap();

    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let app = app.clone();
        let request = request();
        burst.spawn(async move { app.oneshot(request).await.unwrap().status() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = burst.join_next().await {
        statuses.push(status.unwrap());
    }
    let paced_away = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(paced_away > 0, "the burst is larger than the pacer takes");
    assert!(
        !statuses.contains(&StatusCode::INTERNAL_SERVER_ERROR),
        "the handler never fails"
    );

    // A second later the pacer is idle and the handler is as healthy as ever.
    tokio::time::advance(Duration::from_secs(1)).await;
    let status = app.clone().oneshot(request()).await.unwrap().status();
    assert_eq!(
        (status, breaker.state()),
        (StatusCode::OK, State::Closed),
        "the breaker opened on the pacer's own 429s ({paced_away} of them)"
    );
}

/// A stand-in for the network: answers 200 to every request.
struct Origin;

#[async_trait::async_trait]
impl Middleware for Origin {
    async fn handle(
        &self,
        _request: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new(
            "ok".to_string(),
        )))
    }
}

/// `DephaseMiddleware` fixes the order — breaker, then throttle, then pacer
/// — so a user cannot put the pacer outside the breaker. Its pacer's
/// `Overloaded` (a local "not now") reaches the breaker as a failed call and
/// opens it, though the origin answered every request it got with 200.
/// Afterwards, with the pacer's turn free again, the request is refused by
/// the breaker (`Rejected`) instead of reaching the healthy origin.
#[tokio::test(start_paused = true)]
async fn the_middlewares_pacer_does_not_open_its_breaker() {
    let (_meter, _guard) = setup().await;
    let breaker = Breaker::builder()
        .consecutive_failures(2)
        .open_time(fixed(Duration::from_secs(30)))
        .build()
        .unwrap();
    let pacer = Pacer::builder()
        .rate(1, Duration::from_secs(10))
        .max_wait(Duration::ZERO)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(
            DephaseMiddleware::new()
                .breaker(breaker.clone())
                .pace(pacer),
        )
        .with(Origin)
        .build();
    let url = "http://origin.invalid/";

    assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    // The next two come before the pacer's next turn: turned away locally.
    for _ in 0..2 {
        let error = client.get(url).send().await.unwrap_err();
        assert!(error.to_string().contains("paced"), "{error}");
    }
    // The pacer's next turn has come; the origin is as healthy as ever.
    tokio::time::advance(Duration::from_secs(10)).await;
    let answer = client.get(url).send().await;
    assert_eq!(
        breaker.state(),
        State::Closed,
        "two local pacer rejections opened the breaker"
    );
    assert_eq!(answer.unwrap().status(), 200);
}

// ----- axum: a rejection that went through a flight ---------------------------

/// The axum module promises that `RejectionLayer` "turns every dephase
/// rejection into the response it stands for" (an open or isolated breaker:
/// `503`). A breaker under a `CoalesceLayer` (or a `CacheLayer`) reaches the
/// rejection layer as a `SharedError` around the `Rejected` (its `source()`),
/// and `for_error` only downcasts the outer box: the answer is a `500`, with
/// an ERROR log, for what is a plain breaker rejection. (`HttpClassifier`,
/// by contrast, walks the source chain to find a `Rejected`.)
#[tokio::test(start_paused = true)]
async fn a_rejection_that_went_through_a_coalesce_is_still_a_503() {
    let (_meter, _guard) = setup().await;
    let breaker = Breaker::builder().build().unwrap();
    breaker.isolate();
    let service = ServiceBuilder::new()
        .layer(RejectionLayer::new())
        .layer(CoalesceLayer::new(|k: &u8| Some(*k)))
        .layer(CircuitBreakerLayer::new(breaker))
        .service(tower::service_fn(|k: u8| async move {
            Ok::<_, BoxError>(format!("value {k}"))
        }));
    let response = service.oneshot(1u8).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "an isolated breaker's rejection, coalesced, answered as a 500"
    );
}

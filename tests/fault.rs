#![cfg(feature = "http")]
//! The fault layer under paused time: shares of errors and delays drawn
//! from a seeded source (the same run twice gives the same faults), an
//! outage scheduled between two instants, a plan swapped while traffic
//! runs, failures as responses, and how the other layers see them (a
//! refused connection is retried; a breaker counts injected failures).

use std::time::Duration;

use dephase::classify::{Classify, Outcome};
use dephase::fault::error::Injected;
use dephase::fault::{Fault, FaultLayer, Faults, Latency, Outage, Plan};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

fn echo()
-> impl tower::Service<u32, Response = u32, Error = dephase::BoxError, Future = impl Send> + Clone {
    tower::service_fn(|x: u32| async move { Ok::<_, dephase::BoxError>(x) })
}

async fn run(faults: &Faults, n: u32) -> Vec<Result<u32, String>> {
    let service = Fault::new(echo(), faults.clone());
    let mut out = Vec::new();
    for i in 0..n {
        out.push(service.clone().oneshot(i).await.map_err(|e| e.to_string()));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_share_of_errors_is_drawn_from_the_seed() {
    let plan = || Plan::builder().errors(0.2).unwrap().build();
    let faults = Faults::seeded(plan(), 42);
    let first = run(&faults, 2000).await;
    let failed = first.iter().filter(|r| r.is_err()).count();
    assert!((340..=460).contains(&failed), "{failed} of 2000 at 20%");
    assert_eq!(faults.stats().failed, failed as u64);
    // The same seed, the same faults.
    let again = run(&Faults::seeded(plan(), 42), 2000).await;
    assert_eq!(first, again);
}

#[tokio::test(start_paused = true)]
async fn an_outage_fails_every_call_between_its_two_instants() {
    let faults = Faults::seeded(
        Plan::builder()
            .outage(100 * MS..300 * MS, Outage::Fail)
            .unwrap()
            .build(),
        1,
    );
    let service = Fault::new(echo(), faults.clone());
    let start = Instant::now();
    let mut failed_at = Vec::new();
    for _ in 0..40 {
        if service.clone().oneshot(0).await.is_err() {
            failed_at.push(start.elapsed());
        }
        tokio::time::sleep(10 * MS).await;
    }
    assert_eq!(failed_at.first(), Some(&(100 * MS)));
    assert_eq!(failed_at.last(), Some(&(290 * MS)));
    assert_eq!(failed_at.len(), 20);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_call_itself() {
    let faults = Faults::seeded(
        Plan::builder()
            .latency(Latency::Fixed(30 * MS), 1.0)
            .unwrap()
            .build(),
        1,
    );
    let arrived = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = arrived.clone();
    let inner = tower::service_fn(move |x: u32| {
        *seen.lock().unwrap() = Some(Instant::now());
        async move { Ok::<_, dephase::BoxError>(x) }
    });
    let start = Instant::now();
    FaultLayer::new(faults)
        .layer(inner)
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(
        arrived.lock().unwrap().unwrap() - start,
        30 * MS,
        "the service is called after the delay"
    );
}

#[tokio::test(start_paused = true)]
async fn the_plan_is_swapped_while_traffic_runs() {
    let faults = Faults::seeded(Plan::none(), 3);
    let service = Fault::new(echo(), faults.clone());
    assert!(service.clone().oneshot(1).await.is_ok());
    faults.set(Plan::builder().errors(1.0).unwrap().build());
    assert!(service.clone().oneshot(2).await.is_err());
    faults.clear();
    assert!(service.clone().oneshot(3).await.is_ok());
    assert_eq!(faults.stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_can_be_a_response_of_the_services_own_type() {
    let faults = Faults::seeded(Plan::builder().errors(1.0).unwrap().build(), 3);
    let server = FaultLayer::new(faults)
        .respond_with(|_: &Injected| http::Response::builder().status(503).body(()).unwrap())
        .layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, dephase::BoxError>(http::Response::new(()))
        }));
    let response = server.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_and_a_breaker_counts_injected_failures() {
    let down = Faults::seeded(
        Plan::builder()
            .outage(Duration::ZERO..Duration::from_secs(1), Outage::Refuse)
            .unwrap()
            .build(),
        3,
    );
    let refused = Fault::new(echo(), down).oneshot(1).await.unwrap_err();
    assert!(refused.downcast_ref::<Injected>().unwrap().is_refused());
    let outcome =
        dephase::http::HttpClassifier::new().classify(Err::<&http::Response<()>, _>(&refused));
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");

    let faults = Faults::seeded(Plan::builder().errors(1.0).unwrap().build(), 3);
    let breaker = dephase::Breaker::builder()
        .consecutive_failures(3)
        .build()
        .unwrap();
    let service =
        dephase::CircuitBreakerLayer::new(breaker.clone()).layer(Fault::new(echo(), faults));
    for _ in 0..3 {
        assert!(service.clone().oneshot(1).await.is_err());
    }
    assert_eq!(
        breaker.state(),
        dephase::breaker::State::Open,
        "injected failures are the service's"
    );
}

#[test]
fn bad_plans_are_refused() {
    assert_eq!(
        Plan::builder().errors(1.5).unwrap_err().field(),
        "fault.errors"
    );
    assert_eq!(
        Plan::builder()
            .latency(Latency::Fixed(MS), -0.1)
            .unwrap_err()
            .field(),
        "fault.latency"
    );
    assert!(
        Plan::builder()
            .latency(Latency::Uniform(2 * MS, MS), 0.5)
            .is_err()
    );
    assert_eq!(
        Plan::builder()
            .outage(2 * MS..MS, Outage::Fail)
            .unwrap_err()
            .field(),
        "fault.outage"
    );
}

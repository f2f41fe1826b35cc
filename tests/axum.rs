//! The `axum` feature: a `Router` with a breaker and a pacer, and only the
//! `RejectionLayer` above them — no `HandleErrorLayer` — answers 503 and
//! 429 with `Retry-After`. Paused time.
#![cfg(feature = "axum")]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use dephase::axum::RejectionLayer;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::{Breaker, CircuitBreakerLayer};
use dephase::http::HttpClassifier;
use dephase::pace::{PaceLayer, Pacer};
use tower::{ServiceBuilder, ServiceExt};

fn get_request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn retry_after(response: &axum::response::Response) -> Option<u64> {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// An open breaker answers 503 with the open time left, rounded up.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_answers_503_with_retry_after() {
    let breaker = Breaker::builder()
        .consecutive_failures(2)
        .open_time(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(2500))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app: Router = Router::new()
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(
            ServiceBuilder::new()
                .layer(RejectionLayer::new())
                .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::new())),
        );
    for _ in 0..2 {
        let response = app.clone().oneshot(get_request("/fail")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let response = app.clone().oneshot(get_request("/fail")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&response), Some(3), "2.5 s rounded up");
}

/// A pacer past its maximum wait answers 429 with when the turn would be
/// within the maximum wait, rounded up.
#[tokio::test(start_paused = true)]
async fn an_overloaded_pacer_answers_429_with_retry_after() {
    let pacer = Pacer::builder()
        .rate(1, Duration::from_secs(1))
        .max_wait(Duration::from_secs(2))
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(RejectionLayer::new())
            .layer(PaceLayer::new(pacer)),
    );
    // Turns at 0, 1 and 2 s; the fourth would wait 3 s, more than 2.
    let waiting: Vec<_> = (0..3)
        .map(|_| tokio::spawn(app.clone().oneshot(get_request("/"))))
        .collect();
    tokio::task::yield_now().await;
    let response = app.clone().oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&response), Some(1), "3 s away, 2 s allowed");
    for caller in waiting {
        assert_eq!(caller.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

/// Any other error behind the layer is a 500, not a dropped connection.
#[tokio::test(start_paused = true)]
async fn another_error_is_a_500() {
    let service = ServiceBuilder::new()
        .layer(RejectionLayer::new())
        .service(tower::service_fn(|_: Request<Body>| async {
            Err::<axum::response::Response, _>(std::io::Error::other("broken"))
        }));
    let response = service.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

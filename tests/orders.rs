//! Every order of retry, breaker, throttle, pace and cache compiles with
//! `HttpClassifier::new()` over hyper-util's client, `reqwest::Client` and
//! an axum handler (a breaker's error is a `BoxError`, a client's its own;
//! the classifier takes either). Compile tests: each builds the stack and
//! checks that it is a `Service` of the client's requests; nothing is sent.
#![cfg(feature = "http")]

use std::time::Duration;

use bytes::Bytes;
use dephase::breaker::{Breaker, CircuitBreakerLayer};
use dephase::budget::TokenBucket;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::http::{Collected, FanoutLayer, HttpClassifier, IdempotentRequests, RequestKey};
use dephase::pace::{PaceLayer, Pacer};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::throttle::{ThrottleLayer, Throttler};
use tower::Service;
use tower::layer::util::Stack;
use tower::{Layer, ServiceBuilder};

fn is_service<S: Service<R>, R>(_: &S) {}

fn retry() -> RetryLayer<HttpClassifier, IdempotentRequests, TokenBucket> {
    RetryLayer::new(
        RetryPolicy::builder()
            .budget(TokenBucket::aws_standard())
            .classify(HttpClassifier::new())
            .clone_requests(IdempotentRequests::new())
            .build()
            .unwrap(),
    )
}

fn breaker() -> CircuitBreakerLayer<HttpClassifier> {
    CircuitBreakerLayer::new(Breaker::builder().build().unwrap()).classify(HttpClassifier::new())
}

fn throttle() -> ThrottleLayer<HttpClassifier> {
    ThrottleLayer::new(Throttler::builder().build().unwrap()).classify(HttpClassifier::new())
}

fn pace() -> PaceLayer {
    PaceLayer::new(
        Pacer::builder()
            .rate(100, Duration::from_secs(1))
            .build()
            .unwrap(),
    )
}

/// Applies the five orders of retry, breaker, throttle and pace that users
/// write (retry outermost or innermost, guards in either order) to a client.
macro_rules! orders {
    ($client:expr, $request:ty) => {{
        let client = $client;
        is_service::<_, $request>(
            &ServiceBuilder::new()
                .layer(retry())
                .layer(breaker())
                .layer(throttle())
                .layer(pace())
                .service(client.clone()),
        );
        is_service::<_, $request>(
            &ServiceBuilder::new()
                .layer(retry())
                .layer(pace())
                .layer(throttle())
                .layer(breaker())
                .service(client.clone()),
        );
        is_service::<_, $request>(
            &ServiceBuilder::new()
                .layer(breaker())
                .layer(retry())
                .service(client.clone()),
        );
        is_service::<_, $request>(
            &ServiceBuilder::new()
                .layer(throttle())
                .layer(breaker())
                .layer(retry())
                .layer(pace())
                .service(client.clone()),
        );
        is_service::<_, $request>(
            &ServiceBuilder::new()
                .layer(pace())
                .layer(retry())
                .layer(throttle())
                .service(client),
        );
    }};
}

#[test]
fn every_order_compiles_over_hyper_util() {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    orders!(client.clone(), http::Request<http_body_util::Full<Bytes>>);
    // And with the cache (responses fanned out) under the retry.
    let store = MemoryStore::builder(100)
        .store_if(Collected::is_cacheable)
        .build()
        .unwrap();
    let cached = Stack::new(
        FanoutLayer::new(1024, CacheLayer::new(store, RequestKey::new().into_fn())),
        Stack::new(breaker(), retry()),
    );
    is_service::<_, http::Request<http_body_util::Full<Bytes>>>(&cached.layer(client));
}

#[cfg(feature = "reqwest")]
#[test]
fn every_order_compiles_over_reqwest() {
    orders!(reqwest::Client::new(), reqwest::Request);
}

#[test]
fn every_order_compiles_over_an_axum_handler() {
    let handler = tower::service_fn(|_: http::Request<http_body_util::Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
    });
    orders!(handler, http::Request<http_body_util::Full<Bytes>>);
}

//! dephase in a `reqwest-middleware` client: the client keeps
//! `client.get(url).send().await`, and the `DephaseMiddleware` retries
//! (with a retry budget shared by two clients), breaks and paces it.
//!
//! ```text
//! cargo run --example reqwest_middleware --features reqwest-middleware
//! ```
//!
//! A local axum origin on `127.0.0.1:0` answers `503` with `Retry-After: 1`
//! to the first two requests it gets, then `200`. A middleware added after
//! dephase's (as `reqwest-tracing` would be) sees each attempt and the
//! `Attempt` number in the chain's extensions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use dephase::BoxError;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::budget::RatioBudget;
use dephase::http::{DephaseMiddleware, HttpClassifier, IdempotentRequests};
use dephase::retry::{Attempt, RetryPolicy};
use http::Extensions;
use reqwest_middleware::{ClientBuilder, Middleware, Next};

/// What the demo saw.
#[derive(Debug)]
pub struct Summary {
    /// The first client's GET: its status.
    pub first_status: u16,
    /// What the middleware below dephase's saw, attempt by attempt.
    pub attempts_seen: Vec<u32>,
    /// The second client's GET (same budget): its status.
    pub second_status: u16,
    /// Requests the origin received.
    pub origin_requests: usize,
    /// Retries the shared budget could still grant afterwards.
    pub budget_left: f64,
}

#[derive(Default)]
struct Origin {
    requests: AtomicUsize,
    failures_left: AtomicUsize,
}

async fn flaky(State(origin): State<Arc<Origin>>) -> impl IntoResponse {
    origin.requests.fetch_add(1, Ordering::SeqCst);
    let failing = origin
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
        )
            .into_response()
    } else {
        "fine".into_response()
    }
}

/// Records the attempt numbers it sees (a stand-in for `reqwest-tracing`).
#[derive(Clone, Default)]
struct SeeAttempts(Arc<Mutex<Vec<u32>>>);

#[async_trait::async_trait]
impl Middleware for SeeAttempts {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let attempt = extensions.get::<Attempt>().map_or(1, |a| a.number());
        self.0.lock().unwrap().push(attempt);
        next.run(request, extensions).await
    }
}

/// Runs the origin and the two clients.
pub async fn run() -> Result<Summary, BoxError> {
    let origin = Arc::new(Origin::default());
    origin.failures_left.store(2, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/", axum::routing::get(flaky))
        .with_state(origin.clone());
    let server = tokio::spawn(axum::serve(listener, app).into_future());

    // One budget for both clients: 20% of their requests, and 2 retries a
    // second whatever the traffic.
    let budget = RatioBudget::builder().min_per_sec(2).ratio(0.2).build()?;
    let policy = || -> Result<_, BoxError> {
        Ok(RetryPolicy::builder()
            .max_attempts(4)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(100))
                    .cap(Duration::from_secs(3))
                    .jitter(Jitter::Full)
                    .build()?,
            )
            .budget(budget.clone())
            .classify(HttpClassifier::new())
            .clone_requests(IdempotentRequests::new())
            .build()?)
    };
    let seen = SeeAttempts::default();
    let first = ClientBuilder::new(reqwest::Client::new())
        .with(
            DephaseMiddleware::new()
                .retry(policy()?)
                .breaker(Breaker::builder().build()?),
        )
        .with(seen.clone())
        .build();
    let second = ClientBuilder::new(reqwest::Client::new())
        .with(DephaseMiddleware::new().retry(policy()?))
        .build();

    let url = format!("http://{address}/");
    let first_status = first.get(&url).send().await?.status().as_u16();
    origin.failures_left.store(1, Ordering::SeqCst);
    let second_status = second.get(&url).send().await?.status().as_u16();

    let summary = Summary {
        first_status,
        attempts_seen: seen.0.lock().unwrap().clone(),
        second_status,
        origin_requests: origin.requests.load(Ordering::SeqCst),
        budget_left: budget.balance(),
    };
    server.abort();
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    println!(
        "first client: {} after attempts {:?} (two 503s with Retry-After: 1); second client: {}; origin requests: {}; retries left in the shared budget: {:.1}",
        summary.first_status,
        summary.attempts_seen,
        summary.second_status,
        summary.origin_requests,
        summary.budget_left
    );
    Ok(())
}

//! `reqwest::Client` (a `tower::Service<reqwest::Request>`) wrapped with
//! dephase's retry: requests copied with `Request::try_clone`, only when
//! idempotent; `Retry-After` honoured as a floor with jitter on top; the
//! number of re-sends on the span as `http.request.resend_count` (which
//! reqwest-retry does not expose: reqwest-middleware#152).
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```
//!
//! A local axum origin on `127.0.0.1:0` answers `503` with `Retry-After: 1`
//! to the first two requests it gets, then `200`. One `GET` is retried
//! twice and succeeds; one `POST` without an `Idempotency-Key` is not
//! retried and gets the `503`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use dephase::BoxError;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::budget::TokenBucket;
use dephase::http::{HttpClassifier, IdempotentRequests};
use dephase::retry::{RetryLayer, RetryPolicy};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;
use tracing::field::Empty;

/// What the demo saw.
#[derive(Debug)]
pub struct Summary {
    /// The GET's final status.
    pub get_status: u16,
    /// How long the GET took, first attempt to last answer.
    pub get_took: Duration,
    /// The POST's status (not retried).
    pub post_status: u16,
    /// Requests the origin received.
    pub origin_requests: usize,
}

/// The origin: counts requests, fails while `failures_left` is positive.
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

/// Runs the origin and the two requests.
pub async fn run() -> Result<Summary, BoxError> {
    let origin = Arc::new(Origin::default());
    origin.failures_left.store(2, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/", axum::routing::get(flaky).post(flaky))
        .with_state(origin.clone());
    let server = tokio::spawn(axum::serve(listener, app).into_future());

    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .backoff(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(100))
                .cap(Duration::from_secs(3))
                .jitter(Jitter::Full)
                .build()?,
        )
        .budget(TokenBucket::aws_standard())
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()?;
    let http = reqwest::Client::new();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(http.clone());

    let span = tracing::info_span!(
        "GET /",
        http.request.resend_count = Empty,
        dephase.retry.delay_ms = Empty,
        dephase.retry.reason = Empty,
    );
    let started = Instant::now();
    let request = http.get(format!("http://{address}/")).build()?;
    let get = client.clone().oneshot(request).instrument(span).await?;
    let get_took = started.elapsed();
    let get_status = get.status().as_u16();

    origin.failures_left.store(2, Ordering::SeqCst); // flaky again
    let request = http
        .post(format!("http://{address}/"))
        .body("order #1")
        .build()?;
    let post = client.oneshot(request).await?;

    let summary = Summary {
        get_status,
        get_took,
        post_status: post.status().as_u16(),
        origin_requests: origin.requests.load(Ordering::SeqCst),
    };
    server.abort();
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_target(false)
        .init();
    let summary = run().await?;
    println!(
        "GET: {} after {:.2} s (two 503s with Retry-After: 1, each waited 1 s + jitter); POST without Idempotency-Key: {} (not retried)",
        summary.get_status,
        summary.get_took.as_secs_f64(),
        summary.post_status
    );
    Ok(())
}

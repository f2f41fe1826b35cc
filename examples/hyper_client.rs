//! hyper-util's client wrapped with dephase: streaming request bodies
//! recorded for replay, retries with full jitter under a shared budget that
//! honour `Retry-After`, and a circuit breaker — all classified the HTTP way.
//!
//! ```text
//! cargo run --example hyper_client
//! ```
//!
//! A local axum origin on `127.0.0.1:0` is overloaded at first: it reads the
//! body of each of its first 50 requests and answers `503` with
//! `Retry-After: 1`. Fifty clients each upload a
//! streaming body with `POST` and an `Idempotency-Key` (so it may be sent
//! again) at the same instant. Every upload succeeds; the origin checks that
//! each body it read was whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::budget::RatioBudget;
use dephase::http::{HttpClassifier, IdempotentRequests, ReplayBody, ReplayLayer};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::{BoxError, CircuitBreakerLayer};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

/// A streaming body.
type Upload = StreamBody<
    futures_util::stream::Iter<std::array::IntoIter<Result<Frame<Bytes>, std::io::Error>, 3>>,
>;

/// The body each client uploads, in three chunks.
const CHUNKS: [&str; 3] = ["a streaming ", "request ", "body"];

/// How many requests the origin turns away at first.
const OVERLOADED_FOR: usize = 50;

/// What the origin and the clients saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// Uploads that ended with 200.
    pub succeeded: usize,
    /// Requests the origin received (first attempts and retries).
    pub origin_requests: usize,
    /// Bodies the origin read that were not the whole upload.
    pub broken_bodies: usize,
}

struct Origin {
    requests: AtomicUsize,
    broken: AtomicUsize,
}

async fn upload(State(origin): State<Arc<Origin>>, body: Body) -> impl IntoResponse {
    let n = origin.requests.fetch_add(1, Ordering::SeqCst);
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if bytes != CHUNKS.concat().as_bytes() {
        origin.broken.fetch_add(1, Ordering::SeqCst);
    }
    if n < OVERLOADED_FOR {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
        )
            .into_response();
    }
    StatusCode::OK.into_response()
}

/// Runs the origin and the fifty clients.
pub async fn run() -> Result<Summary, BoxError> {
    let origin = Arc::new(Origin {
        requests: AtomicUsize::new(0),
        broken: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/uploads", axum::routing::post(upload))
        .with_state(origin.clone());
    let server = tokio::spawn(axum::serve(listener, app).into_future());

    // One budget and one breaker for the whole process, shared by every clone.
    let budget = RatioBudget::builder().ratio(0.5).min_per_sec(100).build()?;
    let breaker = Breaker::builder()
        .failure_rate(0.9)
        .minimum_calls(100)
        .build()?;
    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .backoff(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(50))
                .cap(Duration::from_secs(2))
                .jitter(Jitter::Full)
                .build()?,
        )
        .budget(budget)
        .deadline(Duration::from_secs(5))
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()?;
    let client = ServiceBuilder::new()
        .layer(ReplayLayer::new(64 * 1024))
        .layer(RetryLayer::new(policy))
        .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::new()))
        .service(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Upload>>());

    let clients: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let chunks = CHUNKS.map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from(c))));
                let body: Upload = StreamBody::new(futures_util::stream::iter(chunks));
                let request = http::Request::post(format!("http://{address}/uploads"))
                    .header("idempotency-key", format!("upload-{i}"))
                    .body(body)?;
                let response = client.oneshot(request).await?;
                Ok::<_, BoxError>(response.status())
            })
        })
        .collect();
    let mut summary = Summary::default();
    for client in clients {
        if client.await?? == StatusCode::OK {
            summary.succeeded += 1;
        }
    }
    summary.origin_requests = origin.requests.load(Ordering::SeqCst);
    summary.broken_bodies = origin.broken.load(Ordering::SeqCst);
    server.abort();
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    println!(
        "50 streaming uploads to an origin that turns away its first 50 requests: {} succeeded after {} origin requests ({} bodies not whole)",
        summary.succeeded, summary.origin_requests, summary.broken_bodies
    );
    Ok(())
}

//! An axum server whose handler reads a slow backend through dephase: a
//! cache (misses coalesced, early refresh, jittered TTLs) in front of a
//! circuit breaker in front of the backend call.
//!
//! ```text
//! cargo run --example axum_server
//! ```
//!
//! It starts the server on `127.0.0.1:0`, sends it two herds over real HTTP
//! with hyper-util's client, prints each request's span as it closes (with
//! the fields the layers recorded) and a summary:
//!
//! 1. 100 concurrent `GET /users/7`: one backend call, every caller served;
//! 2. 20 `GET /users/0` one after another, for which the backend fails: the
//!    breaker opens after 5 failures and the other 15 get `503` with a
//!    jittered `Retry-After` without reaching the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::breaker::error::Rejected;
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use dephase::{BoxError, CircuitBreakerLayer};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;
use tracing::field::Empty as Unset;

/// The backend behind the cache: user id → name.
type Backend = BoxCloneSyncService<u32, String, BoxError>;

/// What the demo saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// Calls that reached the backend for the herd on user 7.
    pub herd_backend_calls: usize,
    /// Responses with status 200 to the herd.
    pub herd_ok: usize,
    /// Calls that reached the backend for the failing user 0.
    pub failing_backend_calls: usize,
    /// Responses to user 0 that the breaker answered (503 + Retry-After).
    pub rejected: usize,
    /// The `Retry-After` values those rejections carried, in seconds.
    pub retry_after: Vec<u64>,
}

/// The backend: 50 ms per lookup; user 0 always fails.
fn backend(calls: Arc<AtomicUsize>) -> Backend {
    let store = MemoryStore::builder(10_000)
        .ttl(Duration::from_secs(30))
        .ttl_jitter(TtlJitter::Random(Duration::from_secs(3)))
        .build()
        .expect("valid cache settings");
    let breaker = Breaker::builder()
        .consecutive_failures(5)
        .open_time(
            ExponentialBackoff::builder()
                .base(Duration::from_secs(10))
                .jitter(Jitter::Equal) // 5–10 s: replicas do not re-probe together
                .build()
                .expect("valid open time"),
        )
        .build()
        .expect("valid breaker settings");
    let lookup = tower::service_fn(move |id: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if id == 0 {
                return Err::<String, BoxError>("the user database is down".into());
            }
            Ok(format!("user {id}"))
        }
    });
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |id: &u32| Some(*id)))
        .layer(CircuitBreakerLayer::new(breaker))
        .service(lookup);
    BoxCloneSyncService::new(service)
}

/// `GET /users/{id}`: the backend's answer, or 503 with the breaker's `Retry-After`.
async fn user(State(backend): State<Backend>, Path(id): Path<u32>) -> Response {
    let span = tracing::info_span!(
        "GET /users/{id}",
        user = id,
        dephase.cache.result = Unset,
        dephase.cache.expires_in_ms = Unset,
        dephase.cache.ttl_offset_ms = Unset,
        dephase.breaker.state = Unset,
        dephase.breaker.retry_after_ms = Unset,
    );
    match backend.oneshot(id).instrument(span).await {
        Ok(name) => name.into_response(),
        Err(error) => match rejection(&*error) {
            Some(rejected) => {
                let seconds = rejected
                    .retry_after()
                    .unwrap_or_default()
                    .as_secs_f64()
                    .ceil();
                let headers = [(header::RETRY_AFTER, (seconds as u64).to_string())];
                (StatusCode::SERVICE_UNAVAILABLE, headers, "circuit open").into_response()
            }
            None => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
        },
    }
}

/// The breaker's rejection, wherever it is in the error's chain (the cache
/// shares a load's error with every caller, wrapped).
fn rejection<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Rejected> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(rejected) = error.downcast_ref::<Rejected>() {
            return Some(rejected);
        }
        next = error.source();
    }
    None
}

/// The router, with its backend.
pub fn app(backend_calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/users/{id}", axum::routing::get(user))
        .with_state(backend(backend_calls))
}

/// Starts the server on a free loopback port, runs both herds, returns what
/// happened.
pub async fn run() -> Result<Summary, BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, app(calls.clone())).into_future());

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let uri: hyper::Uri = format!("http://{address}{path}").parse()?;
            let response = client.get(uri).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            response.into_body().collect().await?;
            Ok::<_, BoxError>((status, retry_after))
        }
    };

    let mut summary = Summary::default();
    let herd: Vec<_> = (0..100)
        .map(|_| tokio::spawn(get("/users/7".to_string())))
        .collect();
    for caller in herd {
        if caller.await??.0 == StatusCode::OK {
            summary.herd_ok += 1;
        }
    }
    summary.herd_backend_calls = calls.swap(0, Ordering::SeqCst);

    for _ in 0..20 {
        let (status, retry_after) = get("/users/0".to_string()).await?;
        if let (StatusCode::SERVICE_UNAVAILABLE, Some(seconds)) = (status, retry_after) {
            summary.rejected += 1;
            summary.retry_after.push(seconds);
        }
    }
    summary.failing_backend_calls = calls.load(Ordering::SeqCst);
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
    println!();
    println!(
        "herd of 100 on /users/7: {} served, {} backend call(s)",
        summary.herd_ok, summary.herd_backend_calls
    );
    println!(
        "20 requests on failing /users/0: {} backend calls, {} answered by the open breaker (Retry-After {:?} s)",
        summary.failing_backend_calls,
        summary.rejected,
        summary.retry_after.first()
    );
    Ok(())
}

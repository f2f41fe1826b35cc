//! The integration examples, run against their real loopback servers.
//!
//! Each example starts an axum origin on `127.0.0.1:0` and talks to it over
//! TCP with a real client, so these tests run on the real clock: the waits
//! are the examples' own (a `Retry-After: 1` or two), and every assertion is
//! about counts and statuses, never about how long something took.
#![cfg(feature = "http")]

#[allow(dead_code)]
#[path = "../examples/axum_server.rs"]
mod axum_server;

#[allow(dead_code)]
#[path = "../examples/hyper_client.rs"]
mod hyper_client;

#[allow(dead_code)]
#[path = "../examples/otel_stdout.rs"]
mod otel_stdout;

#[cfg(feature = "reqwest")]
#[allow(dead_code)]
#[path = "../examples/reqwest_client.rs"]
mod reqwest_client;

#[cfg(feature = "reqwest-middleware")]
#[allow(dead_code)]
#[path = "../examples/reqwest_middleware.rs"]
mod reqwest_middleware;

use opentelemetry::Value;
use opentelemetry_sdk::trace::InMemorySpanExporter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_coalesces_the_herd_and_the_breaker_answers_for_a_failing_backend() {
    let summary = axum_server::run().await.unwrap();
    assert_eq!(summary.herd_ok, 100, "{summary:?}");
    assert_eq!(summary.herd_backend_calls, 1, "{summary:?}");
    assert_eq!(summary.failing_backend_calls, 5, "{summary:?}");
    assert_eq!(summary.rejected, 15, "{summary:?}");
    // Open for 5–10 s (equal jitter on 10 s), rounded up to whole seconds.
    assert!(
        summary.retry_after.iter().all(|s| (5..=10).contains(s)),
        "{summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_replays_every_streaming_upload_whole() {
    let summary = hyper_client::run().await.unwrap();
    assert_eq!(summary.succeeded, 50, "{summary:?}");
    assert_eq!(summary.broken_bodies, 0, "{summary:?}");
    assert!(
        summary.origin_requests > 50,
        "some uploads were retried: {summary:?}"
    );
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_retries_the_get_and_not_the_post() {
    let summary = reqwest_client::run().await.unwrap();
    assert_eq!(summary.get_status, 200, "{summary:?}");
    assert_eq!(summary.post_status, 503, "{summary:?}");
    assert_eq!(
        summary.origin_requests, 4,
        "3 GET attempts + 1 POST: {summary:?}"
    );
    // Two Retry-After: 1 hints were honoured as floors.
    assert!(
        summary.get_took >= std::time::Duration::from_secs(2),
        "{summary:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn otel_stdout_exports_the_attributes() {
    let exporter = InMemorySpanExporter::default();
    let provider = otel_stdout::provider(exporter.clone());
    let statuses = otel_stdout::run(&provider).await.unwrap();
    assert_eq!(statuses, [200, 200, 200]);
    let spans = exporter.get_finished_spans().unwrap();
    let value = |name: &str, key: &str| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .flat_map(|s| s.attributes.iter().filter(|kv| kv.key.as_str() == key))
            .map(|kv| kv.value.clone())
            .collect()
    };
    assert_eq!(
        value("GET /report", "http.request.resend_count"),
        [Value::I64(1)]
    );
    assert_eq!(
        value("GET /report", "dephase.jitter"),
        [Value::from("full")]
    );
    let mut roles: Vec<String> = value("lookup /report", "dephase.coalesce.role")
        .iter()
        .map(|v| v.as_str().into_owned())
        .collect();
    roles.sort();
    assert_eq!(roles, ["follower", "leader"]);
}

/// The reqwest-middleware client retries a `503 + Retry-After` origin
/// through `DephaseMiddleware`, with a budget shared by two clients; a
/// middleware after dephase's sees every attempt and its number.
#[cfg(feature = "reqwest-middleware")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_middleware_retries_with_a_shared_budget() {
    let summary = reqwest_middleware::run().await.unwrap();
    assert_eq!(summary.first_status, 200, "{summary:?}");
    assert_eq!(summary.attempts_seen, [1, 2, 3], "{summary:?}");
    assert_eq!(summary.second_status, 200, "{summary:?}");
    assert_eq!(summary.origin_requests, 5, "{summary:?}");
    // 2 retries a second over 10 s, plus 20% of 2 requests, less 3 retries.
    assert!((summary.budget_left - 17.4).abs() < 1e-9, "{summary:?}");
}

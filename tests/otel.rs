//! The span fields, checked where users see them: exported through the real
//! OpenTelemetry pipeline (`tracing-subscriber` + `tracing-opentelemetry` +
//! `opentelemetry_sdk`'s in-memory span exporter).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::CoalesceLayer;
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::{BoxError, CircuitBreakerLayer};
use opentelemetry::Value;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt;

use support::bounded;

/// Runs `test` with spans exported to memory; returns the exported spans.
async fn exported<F: std::future::Future<Output = ()>>(test: F) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dephase-test")));
    let guard = tracing::subscriber::set_default(subscriber);
    test.await;
    drop(guard);
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// The one value of `key` on `span` (a key exported twice fails: the SDK
/// keeps every record, so a layer must record each field once).
fn attribute(span: &SpanData, key: &str) -> Value {
    let values: Vec<_> = span
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == key)
        .collect();
    assert!(
        values.len() <= 1,
        "{key} exported {} times: {values:?}",
        values.len()
    );
    values
        .first()
        .map(|kv| kv.value.clone())
        .unwrap_or_else(|| {
            panic!(
                "span {:?} has no attribute {key}: {:?}",
                span.name, span.attributes
            )
        })
}

#[tokio::test(start_paused = true)]
async fn a_request_retried_twice_exports_its_resends_and_the_sleeps_it_applied() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let spans = exported(async move {
        let origin = tower::service_fn(move |_: ()| {
            let n = {
                let mut log = log.lock().unwrap();
                log.push(Instant::now());
                log.len()
            };
            async move {
                if n <= 2 {
                    Err("unavailable")
                } else {
                    Ok("done")
                }
            }
        });
        let policy = RetryPolicy::builder()
            .max_attempts(3)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(100))
                    .jitter(Jitter::Full)
                    .seed(42)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .service(origin);
        let span = tracing::info_span!(
            "GET /users",
            http.request.resend_count = Empty,
            dephase.retry.delay_ms = Empty,
            dephase.jitter = Empty,
            dephase.retry.reason = Empty,
        );
        let reply = bounded(client.oneshot(()).instrument(span)).await;
        assert_eq!(reply, Ok("done"));
    })
    .await;

    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), 3);
    let slept = (sent[2] - sent[0]).as_secs_f64() * 1000.0;
    let exported = span(&spans, "GET /users");
    assert_eq!(
        attribute(exported, "http.request.resend_count"),
        Value::I64(2)
    );
    match attribute(exported, "dephase.retry.delay_ms") {
        Value::F64(ms) => assert!(
            (ms - slept).abs() < 1e-6,
            "{ms} ms exported, {slept} ms slept"
        ),
        other => panic!("{other:?}"),
    }
    assert!(slept > 0.0);
    assert_eq!(attribute(exported, "dephase.jitter"), Value::from("full"));
    assert_eq!(
        attribute(exported, "dephase.retry.reason"),
        Value::from("error")
    );
}

#[tokio::test(start_paused = true)]
async fn a_coalesced_follower_exports_its_role() {
    let spans = exported(async {
        let origin = tower::service_fn(|key: u32| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, BoxError>(key * 2)
        });
        let service = ServiceBuilder::new()
            .layer(CoalesceLayer::new(|key: &u32| Some(*key)))
            .service(origin);
        let caller = |name: &'static str| {
            let span = tracing::info_span!(
                "lookup",
                caller = name,
                dephase.coalesce.role = Empty,
                dephase.coalesce.waiters = Empty,
            );
            service.clone().oneshot(7).instrument(span)
        };
        let (leader, follower) = tokio::join!(caller("first"), caller("second"));
        assert_eq!((leader.unwrap(), follower.unwrap()), (14, 14));
    })
    .await;
    let by_caller = |name: &str| {
        spans
            .iter()
            .find(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "caller" && kv.value == Value::from(name.to_string())
                })
            })
            .unwrap()
    };
    assert_eq!(
        attribute(by_caller("first"), "dephase.coalesce.role"),
        Value::from("leader")
    );
    assert_eq!(
        attribute(by_caller("second"), "dephase.coalesce.role"),
        Value::from("follower")
    );
    assert_eq!(
        attribute(by_caller("second"), "dephase.coalesce.waiters"),
        Value::I64(2)
    );
}

#[tokio::test(start_paused = true)]
async fn an_early_refresh_exports_its_result() {
    let spans = exported(async {
        let store = MemoryStore::builder(10)
            .ttl(Duration::from_secs(10))
            .beta(1e6) // refresh as early as possible: deterministic here
            .seed(1)
            .build()
            .unwrap();
        let origin = tower::service_fn(|key: u32| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, BoxError>(key)
        });
        let service = ServiceBuilder::new()
            .layer(CacheLayer::new(store, |key: &u32| Some(*key)))
            .service(origin);
        let lookup = |name: &'static str| {
            let span = tracing::info_span!(
                "cache lookup",
                lookup = name,
                dephase.cache.result = Empty,
                dephase.cache.expires_in_ms = Empty,
                dephase.cache.ttl_offset_ms = Empty,
            );
            service.clone().oneshot(3).instrument(span)
        };
        assert_eq!(lookup("miss").await.unwrap(), 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(lookup("early").await.unwrap(), 3);
        tokio::time::sleep(Duration::from_secs(1)).await; // let the refresh finish
    })
    .await;
    let by_lookup = |name: &str| {
        spans
            .iter()
            .find(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "lookup" && kv.value == Value::from(name.to_string())
                })
            })
            .unwrap()
    };
    assert_eq!(
        attribute(by_lookup("miss"), "dephase.cache.result"),
        Value::from("miss")
    );
    assert!(matches!(
        attribute(by_lookup("miss"), "dephase.cache.ttl_offset_ms"),
        Value::F64(_)
    ));
    let early = by_lookup("early");
    assert_eq!(
        attribute(early, "dephase.cache.result"),
        Value::from("early_refresh")
    );
    match attribute(early, "dephase.cache.expires_in_ms") {
        Value::F64(ms) => assert!(ms > 8000.0 && ms < 10_000.0, "{ms}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_rejection_exports_the_state_and_retry_after() {
    let spans = exported(async {
        let breaker = Breaker::builder()
            .consecutive_failures(1)
            .open_time(
                ExponentialBackoff::builder()
                    .base(Duration::from_secs(5))
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let origin = tower::service_fn(|_: ()| async { Err::<(), _>("down") });
        let service = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(breaker))
            .service(origin);
        let call = |name: &'static str| {
            let span = tracing::info_span!(
                "downstream",
                call = name,
                dephase.breaker.state = Empty,
                dephase.breaker.retry_after_ms = Empty,
            );
            service.clone().oneshot(()).instrument(span)
        };
        assert!(call("fails").await.is_err());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rejected = call("rejected").await.unwrap_err();
        assert!(rejected.is::<dephase::breaker::error::Rejected>());
    })
    .await;
    let by_call = |name: &str| {
        spans
            .iter()
            .find(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "call" && kv.value == Value::from(name.to_string())
                })
            })
            .unwrap()
    };
    assert_eq!(
        attribute(by_call("fails"), "dephase.breaker.state"),
        Value::from("open")
    );
    let rejected = by_call("rejected");
    assert_eq!(
        attribute(rejected, "dephase.breaker.state"),
        Value::from("open")
    );
    assert_eq!(
        attribute(rejected, "dephase.breaker.retry_after_ms"),
        Value::F64(4000.0)
    );
}

#[cfg(feature = "redis")]
#[allow(dead_code)]
#[path = "../examples/fleet/server.rs"]
mod redis_server;

/// On the real clock (a real `redis-server`): a replica that found another
/// replica's lease on the key polls, then takes over when the lease
/// expires; its span exports the jittered wait it applied.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "current_thread")]
async fn a_replica_that_waited_on_a_lease_exports_the_wait_it_applied() {
    use dephase::redis::RedisStore;
    use tower::Layer;

    let Some(server) = redis_server::for_test() else {
        return;
    };
    // Another replica's lease, left for 100 ms.
    let reply = server.command("SET otel:{k}:l other PX 100").unwrap();
    assert_eq!(reply, "+OK");
    let store = RedisStore::builder(server.url())
        .prefix("otel:")
        .build()
        .unwrap();
    let service = CacheLayer::new(store.clone(), |k: &String| Some(k.clone())).layer(
        tower::service_fn(|k: String| async move { Ok::<_, BoxError>(format!("value of {k}")) }),
    );
    let spans = exported(async {
        let span = tracing::info_span!(
            "lookup",
            dephase.cache.result = Empty,
            dephase.redis.lease = Empty,
            dephase.redis.wait_ms = Empty,
        );
        let value = service.oneshot("k".to_string()).instrument(span).await;
        assert_eq!(value.unwrap(), "value of k");
    })
    .await;
    let lookup = span(&spans, "lookup");
    assert_eq!(
        attribute(lookup, "dephase.cache.result"),
        Value::from("miss")
    );
    assert_eq!(
        attribute(lookup, "dephase.redis.lease"),
        Value::from("acquired")
    );
    let Value::F64(waited) = attribute(lookup, "dephase.redis.wait_ms") else {
        panic!("dephase.redis.wait_ms is not a float");
    };
    assert!(waited > 0.0, "{waited}");
    assert_eq!(store.stats().waited, 1);
}

/// The OpenTelemetry HTTP semantic conventions: "`http.request.resend_count`
/// … SHOULD be recorded on each HTTP client span of a re-sent request" —
/// one client span per physical request. A tower-http `TraceLayer` inside
/// the retry makes that span from the request, and reads the re-send count
/// from the [`Attempt`] the retry layer put into the re-sends' extensions;
/// the retry layer records the totals on the logical request's span.
#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn each_attempt_has_its_own_span_with_its_resend_count() {
    use bytes::Bytes;
    use dephase::http::{HttpClassifier, IdempotentRequests};
    use dephase::retry::Attempt;
    use http_body_util::Full;
    use tower_http::trace::TraceLayer;

    let spans = exported(async {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let origin = tower::service_fn(move |_: http::Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let status = if n < 2 { 503 } else { 200 };
                Ok::<_, BoxError>(
                    http::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
            }
        });
        let policy = RetryPolicy::builder()
            .max_attempts(3)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(100))
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .classify(HttpClassifier::new())
            .clone_requests(IdempotentRequests::new())
            .build()
            .unwrap();
        // The span of each physical request: what a user writes for
        // tower-http's TraceLayer (reqwest-tracing's `on_request` the same).
        let per_attempt =
            TraceLayer::new_for_http().make_span_with(|request: &http::Request<Full<Bytes>>| {
                let attempt = request.extensions().get::<Attempt>().copied();
                let span = tracing::info_span!(
                    "GET",
                    attempt = i64::from(attempt.map_or(1, Attempt::number)),
                    http.request.resend_count = Empty,
                );
                if let Some(attempt) = attempt {
                    attempt.record(&span);
                }
                span
            });
        let client = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .layer(per_attempt)
            .service(origin);
        let logical = tracing::info_span!(
            "GET /report",
            http.request.resend_count = Empty,
            dephase.retry.delay_ms = Empty,
            dephase.retry.reason = Empty,
        );
        let request = http::Request::get("http://origin/report")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = bounded(client.oneshot(request).instrument(logical))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    })
    .await;

    let logical = span(&spans, "GET /report");
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "GET").collect();
    attempts.sort_by_key(|s| s.start_time);
    assert_eq!(attempts.len(), 3, "one span per physical request");
    for (i, attempt) in attempts.iter().enumerate() {
        // Children of the logical request's span.
        assert_eq!(attempt.parent_span_id, logical.span_context.span_id());
        assert_eq!(attribute(attempt, "attempt"), Value::I64(i as i64 + 1));
    }
    // The first attempt is not a re-send: no count on its span.
    assert!(
        attempts[0]
            .attributes
            .iter()
            .all(|kv| kv.key.as_str() != "http.request.resend_count")
    );
    assert_eq!(
        attribute(attempts[1], "http.request.resend_count"),
        Value::I64(1)
    );
    assert_eq!(
        attribute(attempts[2], "http.request.resend_count"),
        Value::I64(2)
    );
    // The totals, on the logical span: two re-sends, 100 + 200 ms slept.
    assert_eq!(
        attribute(logical, "http.request.resend_count"),
        Value::I64(2)
    );
    assert_eq!(
        attribute(logical, "dephase.retry.delay_ms"),
        Value::F64(300.0)
    );
    assert_eq!(
        attribute(logical, "dephase.retry.reason"),
        Value::from("unavailable")
    );
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn a_hedged_request_and_a_propagated_deadline_export_what_they_did() {
    use dephase::deadline::{Deadline, PropagateDeadlineLayer, ServerDeadlineLayer};
    use dephase::hedge::{HedgeLayer, HedgePolicy};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::Layer;

    let spans = exported(async {
        // Ten 10 ms calls, then one stuck for a second: its hedge answers.
        let calls = Arc::new(AtomicU32::new(0));
        let backend = tower::service_fn(move |_: ()| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let ms = if n == 11 { 1000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, BoxError>(())
            }
        });
        let hedge = HedgeLayer::new(
            HedgePolicy::builder()
                .window(Duration::from_millis(100))
                .min_samples(10)
                .jitter(0.0)
                .build()
                .unwrap(),
        )
        .layer(backend);
        for _ in 0..10 {
            hedge.clone().oneshot(()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        hedge.clone().oneshot(()).await.unwrap(); // rolls the window
        let span = tracing::info_span!(
            "GET /slow",
            dephase.hedge.delay_ms = Empty,
            dephase.hedge.sent = Empty,
            dephase.hedge.winner = Empty,
        );
        bounded(hedge.oneshot(()).instrument(span)).await.unwrap();

        // A server that received 250 ms and a client below it that sent
        // what was left.
        let client =
            PropagateDeadlineLayer::new().layer(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, BoxError>(http::Response::new(()))
            }));
        let server =
            ServerDeadlineLayer::new().layer(tower::service_fn(move |_: http::Request<()>| {
                let client = client.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let span = tracing::info_span!("client", dephase.deadline.remaining_ms = Empty);
                    let request = http::Request::get("/").body(()).unwrap();
                    client.oneshot(request).instrument(span).await?;
                    Ok::<_, BoxError>(http::Response::new(String::new()))
                }
            }));
        let span = tracing::info_span!("server", dephase.deadline.remaining_ms = Empty);
        let request = http::Request::get("/")
            .header("grpc-timeout", "250m")
            .body(())
            .unwrap();
        let response = server.oneshot(request).instrument(span).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(Deadline::current(), None);
    })
    .await;

    let hedged = span(&spans, "GET /slow");
    match attribute(hedged, "dephase.hedge.delay_ms") {
        Value::F64(ms) => assert!((10.0..=11.0).contains(&ms), "{ms}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(attribute(hedged, "dephase.hedge.sent"), Value::I64(1));
    assert_eq!(
        attribute(hedged, "dephase.hedge.winner"),
        Value::from("hedge")
    );
    assert_eq!(
        attribute(span(&spans, "server"), "dephase.deadline.remaining_ms"),
        Value::F64(250.0)
    );
    assert_eq!(
        attribute(span(&spans, "client"), "dephase.deadline.remaining_ms"),
        Value::F64(200.0)
    );
}

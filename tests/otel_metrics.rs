//! With the `otel` feature, the layers count what they did through the
//! `opentelemetry` metrics API — checked with the SDK's in-memory exporter.
//!
//! One test in its own binary: the instruments are made once per process.
#![cfg(feature = "otel")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::budget::TokenBucket;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::CoalesceLayer;
use dephase::offset::Offset;
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::telemetry::metrics;
use dephase::{BoxError, CircuitBreakerLayer};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::{ServiceBuilder, ServiceExt};

use support::bounded;

/// Counter values by (metric, attribute value or "").
fn counters(metrics: &ResourceMetrics) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                for point in sum.data_points() {
                    let attribute = point
                        .attributes()
                        .next()
                        .map(|kv| kv.value.as_str().into_owned())
                        .unwrap_or_default();
                    out.insert((metric.name().to_string(), attribute), point.value());
                }
            }
        }
    }
    out
}

/// Up-down counter values by metric.
fn gauges(metrics: &ResourceMetrics) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            if let AggregatedMetrics::I64(MetricData::Sum(sum)) = metric.data() {
                let total = sum.data_points().map(|p| p.value()).sum();
                out.insert(metric.name().to_string(), total);
            }
        }
    }
    out
}

/// Histogram (unit, count, sum) by metric, for the histograms without
/// attributes.
fn histograms(metrics: &ResourceMetrics) -> HashMap<String, (String, u64, f64)> {
    let mut out = HashMap::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let unit = metric.unit().to_string();
            let (count, sum) = match metric.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                    .data_points()
                    .fold((0, 0.0), |(c, s), p| (c + p.count(), s + p.sum())),
                AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                    .data_points()
                    .fold((0, 0.0), |(c, s), p| (c + p.count(), s + p.sum() as f64)),
                _ => continue,
            };
            out.insert(metric.name().to_string(), (unit, count, sum));
        }
    }
    out
}

/// Histogram (count, sum) of applied delays by layer, in seconds.
fn delays(metrics: &ResourceMetrics) -> HashMap<String, (u64, f64)> {
    let mut out = HashMap::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            if metric.name() != metrics::DELAYS {
                continue;
            }
            // OpenTelemetry's rule: durations in seconds.
            assert_eq!(metric.unit(), "s");
            if let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() {
                for point in histogram.data_points() {
                    let layer = point
                        .attributes()
                        .find(|kv| kv.key.as_str() == metrics::LAYER)
                        .map(|kv| kv.value.as_str().into_owned())
                        .unwrap();
                    out.insert(layer, (point.count(), point.sum()));
                }
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_layers_count_what_they_did() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    assert!(metrics::use_meter(&provider.meter("dephase")));
    assert!(!metrics::use_meter(&provider.meter("dephase")), "made once");

    // Retry: two retries, then a budget denial.
    let backoff = ExponentialBackoff::builder()
        .base(Duration::from_millis(100))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = calls.clone();
    let flaky = tower::service_fn(move |_: ()| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { if n < 2 { Err("busy") } else { Ok(()) } }
    });
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .backoff(backoff.clone())
        .build()
        .unwrap();
    bounded(RetryLayer::new(policy).layer_oneshot(flaky))
        .await
        .unwrap();
    let empty = TokenBucket::builder().initial(0.0).build().unwrap();
    let always_failing = tower::service_fn(|_: ()| async { Err::<(), _>("down") });
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .backoff(backoff.clone())
        .budget(empty)
        .build()
        .unwrap();
    assert!(
        bounded(RetryLayer::new(policy).layer_oneshot(always_failing))
            .await
            .is_err()
    );

    // Breaker: opens (5 s, no jitter), then rejects two calls; it stays
    // open, so one breaker is open.
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
    let down = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker))
        .service(tower::service_fn(|_: ()| async { Err::<(), _>("down") }));
    for _ in 0..3 {
        assert!(down.clone().oneshot(()).await.is_err());
    }

    // Coalesce: three callers, two followers.
    let coalesced = ServiceBuilder::new()
        .layer(CoalesceLayer::new(|k: &u8| Some(*k)))
        .service(tower::service_fn(|k: u8| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>(k)
        }));
    let (a, b, c) = tokio::join!(
        coalesced.clone().oneshot(1),
        coalesced.clone().oneshot(1),
        coalesced.clone().oneshot(1)
    );
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 1, 1));

    // Cache: a miss, then two hits; the load's TTL jitter is an offset.
    let store = MemoryStore::builder(10)
        .ttl(Duration::from_secs(60))
        .early_refresh(false)
        .build()
        .unwrap();
    let cached = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |k: &u8| Some(*k)))
        .service(tower::service_fn(
            |k: u8| async move { Ok::<_, BoxError>(k) },
        ));
    for _ in 0..3 {
        cached.clone().oneshot(9).await.unwrap();
    }

    // The Redis store with no Redis (port 1 refuses): served by the origin,
    // counted as `degraded` (and as one more cache miss).
    #[cfg(feature = "redis")]
    {
        use dephase::redis::RedisStore;
        use tower::Layer;
        let store = RedisStore::builder("redis://127.0.0.1:1/").build().unwrap();
        let answer = CacheLayer::new(store, |k: &String| Some(k.clone()))
            .layer(tower::service_fn(|k: String| async move {
                Ok::<_, BoxError>(k)
            }))
            .oneshot("k".to_string())
            .await;
        assert_eq!(answer.unwrap(), "k");
    }

    // Pace: one a second, no jitter, at most 1.5 s of wait: the first goes
    // at once, the second waits 1 s, the third (2 s away) is turned away.
    let pacer = dephase::Pacer::builder()
        .rate(1, Duration::from_secs(1))
        .jitter(Duration::ZERO)
        .max_wait(Duration::from_millis(1500))
        .build()
        .unwrap();
    let (a, b, c) = tokio::join!(pacer.wait(), pacer.wait(), pacer.wait());
    assert_eq!(a.unwrap(), Duration::ZERO);
    assert_eq!(b.unwrap(), Duration::from_secs(1));
    assert!(c.is_err());

    // Throttle: every call fails until the throttle sheds some of them.
    let throttler = dephase::Throttler::builder().seed(7).build().unwrap();
    let mut shed = 0;
    for _ in 0..50 {
        match throttler.call(|| Err::<(), _>("down")) {
            Ok(_) => {}
            Err(_) => shed += 1,
        }
    }
    assert!(shed > 0);
    assert_eq!(throttler.stats().rejections, shed);

    // A deterministic offset, recorded where it is applied.
    let offset = Offset::index(3, 10, Duration::from_secs(10)).unwrap();
    offset.record();

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("exported once");
    let counters = counters(last);
    let count = |name: &str, attribute: &str| {
        counters
            .get(&(name.to_string(), attribute.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count(metrics::RETRIES, "error"), 2, "{counters:?}");
    assert_eq!(count(metrics::BUDGET_DENIALS, ""), 1, "{counters:?}");
    assert_eq!(
        count(metrics::BREAKER_TRANSITIONS, "open"),
        1,
        "{counters:?}"
    );
    assert_eq!(
        count(metrics::BREAKER_REJECTIONS, "open"),
        2,
        "{counters:?}"
    );
    assert_eq!(count(metrics::COALESCE_FOLLOWERS, ""), 2, "{counters:?}");
    let redis = u64::from(cfg!(feature = "redis"));
    assert_eq!(
        count(metrics::REDIS_LEASES, "degraded"),
        redis,
        "{counters:?}"
    );
    assert_eq!(
        count(metrics::CACHE_RESULTS, "miss"),
        1 + redis,
        "{counters:?}"
    );
    assert_eq!(count(metrics::CACHE_RESULTS, "hit"), 2, "{counters:?}");
    // One value computed and stored in memory; with Redis down, one more
    // computed and nothing stored.
    assert_eq!(
        count(metrics::CACHE_RECOMPUTES, ""),
        1 + redis,
        "{counters:?}"
    );
    assert_eq!(count(metrics::CACHE_STORES, ""), 1, "{counters:?}");
    assert_eq!(count(metrics::PACE_WAITS, ""), 1, "{counters:?}");
    assert_eq!(count(metrics::PACE_OVERLOADED, ""), 1, "{counters:?}");
    assert_eq!(
        count(metrics::THROTTLE_REJECTIONS, ""),
        shed,
        "{counters:?}"
    );
    assert_eq!(gauges(last)[metrics::BREAKERS_OPEN], 1);

    // gRFC A96's per-call histograms: one retried call (the one the budget
    // stopped was never retried), two retries, 0.1 + 0.2 s of backoff.
    let histograms = histograms(last);
    assert_eq!(
        histograms[metrics::CALL_RETRIES],
        ("{retry}".to_string(), 1, 2.0)
    );
    let (unit, calls, slept) = &histograms[metrics::CALL_RETRY_DELAY];
    assert_eq!((unit.as_str(), *calls), ("s", 1));
    assert!((slept - 0.3).abs() < 1e-9, "{slept}");

    let delays = delays(last);
    let close =
        |(count, sum): (u64, f64), want: (u64, f64)| count == want.0 && (sum - want.1).abs() < 1e-9;
    assert!(close(delays["retry"], (2, 0.1 + 0.2)), "{delays:?}");
    assert!(close(delays["breaker"], (1, 5.0)), "{delays:?}");
    assert!(close(delays["offset"], (1, 3.0)), "{delays:?}");
    assert!(close(delays["pace"], (1, 1.0)), "{delays:?}");
    assert_eq!(delays["cache"].0, 1, "{delays:?}");
}

/// `layer.layer(service).oneshot(())`, for brevity.
trait LayerOneshot<S> {
    type Future;
    fn layer_oneshot(self, service: S) -> Self::Future;
}

impl<L, S> LayerOneshot<S> for L
where
    L: tower::Layer<S>,
    L::Service: tower::Service<()>,
{
    type Future = tower::util::Oneshot<L::Service, ()>;
    fn layer_oneshot(self, service: S) -> Self::Future {
        self.layer(service).oneshot(())
    }
}

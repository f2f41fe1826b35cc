//! The dashboard and the alert rules name metrics as the OpenTelemetry
//! Prometheus exporter exposes them. This test runs traffic through every
//! layer with the real exporter installed, scrapes its text exposition, and
//! checks that every metric (and label) the two files name is there — and
//! that the dashboard shows every metric dephase exports.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::budget::TokenBucket;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::CoalesceLayer;
use dephase::hedge::{HedgeLayer, HedgePolicy};
use dephase::limit::{ConcurrencyLimitLayer, Fixed, Limiter};
use dephase::offset::Offset;
use dephase::redis::{FleetGate, FleetPacer, RedisStore};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::telemetry::metrics;
use dephase::{BoxError, CircuitBreakerLayer, Pacer, Throttler};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use tower::{Layer, ServiceBuilder, ServiceExt};

const DASHBOARD: &str = include_str!("../dephase.json");
const ALERTS: &str = include_str!("../alerts.yaml");

/// Every metric dephase defines (with the `redis` feature).
const DEFINED: [&str; 24] = [
    metrics::RETRIES,
    metrics::BUDGET_DENIALS,
    metrics::CALL_RETRIES,
    metrics::CALL_RETRY_DELAY,
    metrics::BREAKER_TRANSITIONS,
    metrics::BREAKER_REJECTIONS,
    metrics::BREAKERS_OPEN,
    metrics::COALESCE_FOLLOWERS,
    metrics::CACHE_RESULTS,
    metrics::CACHE_RECOMPUTES,
    metrics::CACHE_STORES,
    metrics::REDIS_LEASES,
    metrics::FLEET_GATE,
    metrics::FLEET_PACE,
    metrics::PACE_WAITS,
    metrics::PACE_OVERLOADED,
    metrics::THROTTLE_REJECTIONS,
    metrics::HEDGES,
    metrics::HEDGE_REFUSALS,
    metrics::HEDGE_ANSWERS,
    metrics::LIMIT_REJECTIONS,
    metrics::LIMIT,
    metrics::DELAYS,
    metrics::LAYER,
];

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .unwrap();
    let provider = SdkMeterProvider::builder().with_reader(exporter).build();
    assert!(metrics::use_meter(&provider.meter("dephase")));

    traffic().await;

    let mut scraped = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut scraped)
        .unwrap();
    let scraped = String::from_utf8(scraped).unwrap();
    let exposed = Exposed::parse(&scraped);

    // Every name in the two files is a series or a label of the scrape.
    let named: BTreeSet<_> = names(DASHBOARD).chain(names(ALERTS)).collect();
    let unknown: Vec<_> = named
        .iter()
        .filter(|name| !exposed.series.contains(*name) && !exposed.labels.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in the scrape: {unknown:?}\n{scraped}"
    );

    // The dashboard shows every metric dephase exports (a metric's series
    // are its name with `_total`, `_bucket`, `_seconds_bucket`...).
    let in_dashboard: BTreeSet<_> = names(DASHBOARD).collect();
    for metric in DEFINED {
        let prefix = metric.replace('.', "_");
        assert!(
            in_dashboard.iter().any(|n| n.starts_with(&prefix)),
            "{metric} ({prefix}…) is on no panel"
        );
    }
    // And the scrape has a series for each (the traffic reached every layer).
    for metric in DEFINED.iter().filter(|m| **m != metrics::LAYER) {
        let prefix = metric.replace('.', "_");
        assert!(
            exposed.series.iter().any(|s| s.starts_with(&prefix)),
            "{metric} not exported\n{scraped}"
        );
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_on_a_prometheus_data_source() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(dashboard["title"].is_string());
    assert!(dashboard["uid"].is_string());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a data source variable of type prometheus"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "unique ids");
        assert!(panel["title"].is_string());
        let grid = &panel["gridPos"];
        for field in ["h", "w", "x", "y"] {
            assert!(grid[field].is_u64(), "{}: gridPos.{field}", panel["title"]);
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        for target in panel["targets"].as_array().unwrap() {
            promql(target["expr"].as_str().unwrap());
            queries += 1;
        }
    }
    assert!(queries >= 12, "{queries} queries");
}

#[test]
fn the_alert_rules_are_well_formed() {
    // Prometheus rule files: groups → rules, each with alert, expr, for,
    // labels.severity and annotations.summary (checked line by line: no
    // YAML parser is needed for this flat layout).
    assert!(ALERTS.lines().any(|l| l.trim() == "groups:"));
    let alerts: Vec<_> = ALERTS.split("- alert: ").skip(1).collect();
    let names: Vec<_> = alerts
        .iter()
        .map(|a| a.lines().next().unwrap().trim())
        .collect();
    for wanted in [
        "DephaseRetryBudgetExhausted",
        "DephaseBreakerFlapping",
        "DephaseCacheStampede",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    for alert in alerts {
        let field = |key: &str| {
            alert
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{key} in {alert}"))
        };
        promql(field("expr: "));
        assert!(field("for: ").ends_with('m'));
        assert!(["warning", "critical"].contains(&field("severity: ")));
        assert!(!field("summary: ").is_empty());
    }
}

/// Checks that `expr` parses as PromQL, once Grafana's variables are
/// replaced by what Grafana puts in their place.
fn promql(expr: &str) {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$job", ".*")
        .replace("$layer", ".*");
    if let Err(error) = promql_parser::parser::parse(&expr) {
        panic!("not PromQL: {expr}\n{error}");
    }
}

/// The `dephase_…` words of a file: metric and label names.
fn names(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("dephase_"))
        .map(str::to_string)
}

/// The series and label names of a text exposition.
struct Exposed {
    series: BTreeSet<String>,
    labels: BTreeSet<String>,
}

impl Exposed {
    fn parse(text: &str) -> Exposed {
        let mut series = BTreeSet::new();
        let mut labels = BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            series.insert(line[..name_end].to_string());
            if let Some(rest) = line[name_end..].strip_prefix('{') {
                let inside = &rest[..rest.find('}').unwrap()];
                for pair in inside.split("\",") {
                    labels.insert(pair.split('=').next().unwrap().to_string());
                }
            }
        }
        Exposed { series, labels }
    }
}

/// Traffic through every layer: each metric gets at least one point.
async fn traffic() {
    let backoff = ExponentialBackoff::builder()
        .base(Duration::from_millis(100))
        .jitter(Jitter::Full)
        .seed(1)
        .build()
        .unwrap();

    // Retry: a call retried twice; a retry the budget refuses.
    let calls = Arc::new(AtomicU32::new(0));
    let flaky = tower::service_fn(move |_: ()| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { if n < 2 { Err("busy") } else { Ok(()) } }
    });
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .backoff(backoff.clone())
        .build()
        .unwrap();
    RetryLayer::new(policy)
        .layer(flaky)
        .oneshot(())
        .await
        .unwrap();
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .backoff(backoff.clone())
        .budget(TokenBucket::builder().initial(0.0).build().unwrap())
        .build()
        .unwrap();
    let down = tower::service_fn(|_: ()| async { Err::<(), _>("down") });
    assert!(
        RetryLayer::new(policy)
            .layer(down)
            .oneshot(())
            .await
            .is_err()
    );

    // Breaker: opens, turns a call away.
    let breaker = Breaker::builder().consecutive_failures(1).build().unwrap();
    let guarded = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker))
        .service(tower::service_fn(|_: ()| async { Err::<(), _>("down") }));
    for _ in 0..2 {
        assert!(guarded.clone().oneshot(()).await.is_err());
    }

    // Coalesce: two callers, one call.
    let coalesced = ServiceBuilder::new()
        .layer(CoalesceLayer::new(|k: &u8| Some(*k)))
        .service(tower::service_fn(|k: u8| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>(k)
        }));
    let (a, b) = tokio::join!(coalesced.clone().oneshot(1), coalesced.clone().oneshot(1));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 1));

    // Cache: a miss (a value computed and stored, with TTL jitter), a hit.
    let store = MemoryStore::builder(10)
        .ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let cached =
        CacheLayer::new(store, |k: &u8| Some(*k)).layer(tower::service_fn(|k: u8| async move {
            Ok::<_, Infallible>(k)
        }));
    for _ in 0..2 {
        cached.clone().oneshot(9).await.unwrap();
    }

    // The Redis store with Redis unreachable (port 1 refuses): degraded.
    let store = RedisStore::builder("redis://127.0.0.1:1/").build().unwrap();
    let answer = CacheLayer::new(store, |k: &String| Some(k.clone()))
        .layer(tower::service_fn(|k: String| async move {
            Ok::<_, Infallible>(k)
        }))
        .oneshot("k".to_string())
        .await;
    assert_eq!(answer.unwrap(), "k");

    // The fleet gate and pacer with Redis unreachable: refused (failing
    // closed), admitted (failing open), paced by the local share.
    let closed = FleetGate::builder("redis://127.0.0.1:1/", "jobs")
        .build()
        .unwrap();
    assert!(closed.acquire().await.is_err());
    let open = FleetGate::builder("redis://127.0.0.1:1/", "jobs")
        .fail_open(true)
        .build()
        .unwrap();
    assert_eq!(open.acquire().await.unwrap().fence(), None);
    let pacer = FleetPacer::builder("redis://127.0.0.1:1/", "warmup")
        .rate(10, Duration::from_secs(1))
        .build()
        .unwrap();
    pacer.wait().await.unwrap();
    assert_eq!(pacer.stats().local_turns, 1);

    // Pace: one a second, at most 1.5 s of wait: one waits, one is turned away.
    let pacer = Pacer::builder()
        .rate(1, Duration::from_secs(1))
        .max_wait(Duration::from_millis(1500))
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let (a, b, c) = tokio::join!(pacer.wait(), pacer.wait(), pacer.wait());
    assert!(a.is_ok() && b.is_ok() && c.is_err());

    // Throttle: failures until it sheds.
    let throttler = Throttler::builder().seed(3).build().unwrap();
    for _ in 0..50 {
        let _ = throttler.call(|| Err::<(), _>("down"));
    }
    assert!(throttler.stats().rejections > 0);

    // Hedge: after a window of 10 ms latencies, a 1 s call is hedged (both
    // copies are slow: the original answers); with the one-token budget
    // spent, the next slow call's hedge is refused.
    let calls = Arc::new(AtomicU32::new(0));
    let backend = tower::service_fn(move |_: ()| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let slow = n >= 10;
            tokio::time::sleep(Duration::from_millis(if slow { 1000 } else { 10 })).await;
            Ok::<_, Infallible>(())
        }
    });
    let budget = TokenBucket::builder()
        .capacity(1.0)
        .retry_cost(1.0)
        .success_reward(0.0)
        .build()
        .unwrap();
    let hedge = HedgeLayer::new(
        HedgePolicy::builder()
            .window(Duration::from_millis(100))
            .min_samples(5)
            .budget(budget)
            .build()
            .unwrap(),
    )
    .layer(backend);
    for _ in 0..10 {
        hedge.clone().oneshot(()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (first, second) = tokio::join!(hedge.clone().oneshot(()), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        hedge.clone().oneshot(()).await
    });
    assert!(first.is_ok() && second.is_ok());

    // Concurrency limit: one slot; a caller waits for it, another is
    // turned away when its wait runs out.
    let limiter = Limiter::builder()
        .algorithm(Fixed(1))
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let slow = tower::service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<_, Infallible>(())
    });
    let limited = ConcurrencyLimitLayer::new(limiter).layer(slow);
    let (a, b, c) = tokio::join!(
        limited.clone().oneshot(()),
        limited.clone().oneshot(()),
        limited.clone().oneshot(())
    );
    assert!(a.is_ok() && b.is_ok() && c.is_err());

    // A deterministic offset.
    Offset::index(1, 4, Duration::from_secs(4))
        .unwrap()
        .record();
}

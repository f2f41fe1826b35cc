//! The cache-stampede model of `examples/cache_stampede`, under paused
//! time: Poisson arrivals at 1000/s on one key, a 50 ms recompute, a 2 s
//! TTL. Plain TTL recomputes about λΔ = 50 times per expiry; coalescing
//! recomputes once but makes about 50 requests wait; XFetch + coalescing
//! recomputes once per cycle and, after warm-up, makes nobody wait. Then
//! fifty keys written together, with and without TTL jitter.

#[path = "../examples/cache_stampede/model.rs"]
#[allow(dead_code)]
mod model;

use std::time::Duration;

use dephase::cache::TtlJitter;
use dephase::measure::Spread;
use model::{Scenario, Strategy};

const SCENARIO: Scenario = Scenario {
    rate: 1000.0,
    recompute: Duration::from_millis(50),
    ttl: Duration::from_secs(2),
    duration: Duration::from_secs(20),
    seed: 1,
};

#[tokio::test(start_paused = true)]
async fn plain_ttl_recomputes_lambda_delta_times_per_expiry() {
    let report = model::run(SCENARIO, Strategy::PlainTtl).await;
    let per_expiry = report.recomputes_per_expiry();
    assert!((40.0..=60.0).contains(&per_expiry), "{per_expiry}");
    assert!(report.waited_per_expiry() > 35.0);
}

#[tokio::test(start_paused = true)]
async fn coalescing_recomputes_once_but_makes_requests_wait() {
    let report = model::run(SCENARIO, Strategy::Coalesced).await;
    assert!(report.recomputes_per_expiry() <= 1.05, "{report:?}");
    assert_eq!(report.duplicates, 0);
    let waiting = report.waited_per_expiry();
    assert!(
        (35.0..=60.0).contains(&waiting),
        "{waiting} requests waited per expiry"
    );
}

#[tokio::test(start_paused = true)]
async fn xfetch_recomputes_once_per_cycle_and_nobody_waits() {
    let report = model::run(SCENARIO, Strategy::XFetch).await;
    assert_eq!(report.duplicates, 0, "{report:?}");
    assert_eq!(report.waited, 0, "after warm-up nobody waits: {report:?}");
    // With β = 1 a refresh starts about Δ·ln(λΔ) ≈ 200 ms early: about 10%
    // more recomputes than TTL periods; β = 0.5 halves that head start.
    assert!(report.recomputes_per_expiry() <= 1.15, "{report:?}");
    let half = model::run(SCENARIO, Strategy::XFetchHalfBeta).await;
    assert_eq!((half.duplicates, half.waited), (0, 0), "{half:?}");
    assert!(half.recomputes_per_expiry() <= 1.05, "{half:?}");
}

#[tokio::test(start_paused = true)]
async fn ttl_jitter_spreads_fifty_keys_written_together() {
    let ttl = Duration::from_secs(2);
    // Recomputes happen at the first read (every 10 ms) after expiry:
    // the jitter plus one read step.
    let window = ttl..ttl + Duration::from_millis(510);
    let together = model::hot_keys(50, ttl, TtlJitter::None, 1).await;
    let spread = Spread::in_window(&together, window.clone(), 5).unwrap();
    assert_eq!(spread.peak(), 50, "without jitter they all expire together");
    for jitter in [
        TtlJitter::Random(Duration::from_millis(500)),
        TtlJitter::PerKey(Duration::from_millis(500)),
    ] {
        let times = model::hot_keys(50, ttl, jitter, 1).await;
        let spread = Spread::in_window(&times, window.clone(), 5).unwrap();
        assert_eq!(spread.count(), 50);
        assert!(
            spread.peak_to_mean() < 2.0,
            "{jitter:?}: {:?}",
            spread.buckets()
        );
    }
}

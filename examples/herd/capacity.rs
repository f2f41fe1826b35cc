//! `capacity_drop`: the origin serves 64 at a time, then 16 for three
//! seconds, then 64 again; clients call at a steady 3× the low capacity
//! through a concurrency limit — fixed at 64, Gradient2 or Vegas — that
//! turns away what it does not admit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::BoxError;
use dephase::limit::{ConcurrencyLimitLayer, Fixed, Gradient2, LimitAlgorithm, Limiter, Vegas};
use hyper::Uri;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::origin::{
    self, CAPACITY_TIME, DROP_FROM, DROP_UNTIL, HIGH_CAPACITY, LOW_CAPACITY, Origin,
};
use crate::scenarios::{Run, Scenario, Settings};

/// One request every 1 ms (1000/s): about 3× what the low capacity serves
/// (16 per 50 ms: 320/s).
const INTERVAL: Duration = Duration::from_millis(1);
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(7);
/// The adaptive limits' sampling window (Netflix's smallest is 100 ms; at
/// 1000 requests a second a 50 ms window still holds about 50 samples).
const WINDOW: Duration = Duration::from_millis(50);

/// What a run saw beyond the common figures.
struct Seen {
    run: Run,
    /// (time since start, limit), every 10 ms.
    limits: Vec<(Duration, u32)>,
    /// (time sent, latency, success) of each request.
    requests: Vec<(Duration, Duration, bool)>,
}

async fn capacity_run(algorithm: impl LimitAlgorithm) -> Result<Seen, BoxError> {
    let start = Instant::now() + crate::scenarios::LEAD;
    let origin = Origin::start(start, Duration::ZERO)?;
    let uri = origin.uri("/capacity");
    let limiter = Limiter::builder()
        .algorithm(algorithm)
        .window(WINDOW, WINDOW)
        .build()?;
    let client = origin::client();
    let http = tower::service_fn(move |uri: Uri| {
        let client = client.clone();
        async move { Ok::<_, BoxError>(origin::get(&client, uri).await?.0) }
    });
    let service: tower::util::BoxCloneSyncService<Uri, hyper::StatusCode, BoxError> =
        tower::util::BoxCloneSyncService::new(
            ConcurrencyLimitLayer::new(limiter.clone()).layer(http),
        );

    // The limit, every 10 ms.
    let limits = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (limits, limiter) = (limits.clone(), limiter.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while start.elapsed() < LOAD {
                tick.tick().await;
                limits
                    .lock()
                    .unwrap()
                    .push((start.elapsed(), limiter.limit()));
            }
        })
    };
    let n = (LOAD.as_millis() / INTERVAL.as_millis()) as usize;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (service, uri) = (service.clone(), uri.clone());
            tokio::spawn(async move {
                let at = start + INTERVAL * i as u32;
                tokio::time::sleep_until(at).await;
                let sent = Instant::now();
                let ok = matches!(service.oneshot(uri).await, Ok(s) if s.is_success());
                (at - start, sent.elapsed(), ok)
            })
        })
        .collect();
    let mut requests = Vec::with_capacity(n);
    for task in tasks {
        requests.push(task.await?);
    }
    sampler.await?;
    let calls = origin.stop()?;
    let successes = requests.iter().filter(|r| r.2).count();
    let mut latencies: Vec<Duration> = requests.iter().filter(|r| r.2).map(|r| r.1).collect();
    latencies.sort_unstable();
    let limits = limits.lock().unwrap().clone();
    let stats = limiter.stats();
    let run = Run {
        requests: n,
        calls,
        successes,
        latencies,
        window: LOAD,
        extra: vec![("turned away by the limit", stats.rejected.to_string())],
    };
    Ok(Seen {
        run,
        limits,
        requests,
    })
}

/// The figures of the drop: goodput, p99, and how fast the limit got
/// within 20% of each new capacity.
fn during_drop(mut seen: Seen) -> Run {
    let in_drop = |t: Duration| (DROP_FROM..DROP_UNTIL).contains(&t);
    let drop_secs = (DROP_UNTIL - DROP_FROM).as_secs_f64();
    let good = seen.requests.iter().filter(|r| r.2 && in_drop(r.0)).count();
    let goodput = good as f64 / drop_secs;
    let capacity = LOW_CAPACITY as f64 / CAPACITY_TIME.as_secs_f64();
    let mut drop_latencies: Vec<Duration> = seen
        .requests
        .iter()
        .filter(|r| r.2 && in_drop(r.0))
        .map(|r| r.1)
        .collect();
    drop_latencies.sort_unstable();
    let p99 = drop_latencies
        .get((drop_latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    let converge = |from: Duration, target: usize| -> String {
        let (lo, hi) = (target as f64 * 0.8, target as f64 * 1.2);
        seen.limits
            .iter()
            .find(|(t, l)| *t >= from && (lo..=hi).contains(&f64::from(*l)))
            .map_or("never".into(), |(t, _)| {
                format!("{:.2} s", (*t - from).as_secs_f64())
            })
    };
    let down = converge(DROP_FROM, LOW_CAPACITY);
    let up = converge(DROP_UNTIL, HIGH_CAPACITY);
    seen.run.extra.extend([
        (
            "goodput during the drop (share of the origin's 320/s)",
            format!("{goodput:.0}/s ({:.0}%)", 100.0 * goodput / capacity),
        ),
        (
            "p99 latency during the drop (no-load: 50 ms)",
            format!("{:.0} ms", p99.as_secs_f64() * 1000.0),
        ),
        ("limit within 20% of 16 after the drop", down),
        ("limit within 20% of 64 after the recovery", up),
    ]);
    seen.run
}

/// `capacity_drop`.
pub async fn capacity_drop(_: Settings) -> Result<Scenario, BoxError> {
    let fixed = during_drop(capacity_run(Fixed(HIGH_CAPACITY as u32)).await?);
    let gradient = during_drop(
        capacity_run(
            Gradient2::new()
                .range(4, 200)?
                .initial_limit(HIGH_CAPACITY as u32)
                .queue(3)
                .smoothing(0.6)?,
        )
        .await?,
    );
    let vegas = during_drop(
        capacity_run(
            Vegas::seeded(1)
                .initial_limit(HIGH_CAPACITY as u32)
                .max_limit(200),
        )
        .await?,
    );
    Ok(Scenario {
        name: "capacity_drop",
        title: "A capacity drop: requests reaching the origin every 10 ms",
        description: format!(
            "The origin serves {HIGH_CAPACITY} at a time ({CAPACITY_TIME:?} each), {LOW_CAPACITY} from {DROP_FROM:?} to {DROP_UNTIL:?}, then {HIGH_CAPACITY} again; excess requests queue at the origin. Clients send one request every {INTERVAL:?} (3× the low capacity) through a concurrency limit that turns away what it does not admit. naive: a fixed limit of {HIGH_CAPACITY}. dephase: Gradient2 (Netflix's formula, rttTolerance 1.5; range 4..200, queue 3, smoothing 0.6), windows of {WINDOW:?}. Third column: Vegas (Netflix's defaults, max 200)."
        ),
        outage: Duration::ZERO,
        capacity: None,
        naive: fixed,
        dephase: gradient,
        variant: Some(("Vegas", "vegas", vegas)),
    })
}

//! `capacity_drop`: the origin serves 64 at a time, then 16 for three
//! seconds, then 64 again; clients call at a steady 3× the low capacity
//! through a concurrency limit — fixed at 64, Gradient2 or Vegas — that
//! turns away what it does not admit, and through tower-resilience's
//! adaptive limiter (its Gradient2), which makes every caller wait.

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
/// How long into the drop the second p99 starts.
const SETTLE: Duration = Duration::from_millis(500);

/// What a run saw beyond the common figures.
struct Seen {
    run: Run,
    /// (time since start, limit), every 10 ms.
    limits: Vec<(Duration, u32)>,
    /// (time sent, latency, success) of each request.
    requests: Vec<(Duration, Duration, bool)>,
}

/// The limit a run's clients go through.
enum Under {
    /// dephase's `ConcurrencyLimit`: over the limit, turned away at once.
    Dephase(Limiter),
    /// tower-resilience's `AdaptiveLimiterLayer`: over the limit, the caller
    /// waits in `poll_ready` until a slot frees.
    Resilience(tower_resilience_adaptive::Gradient2),
}

async fn capacity_run(under: Under) -> Result<Seen, BoxError> {
    let start = Instant::now() + crate::scenarios::LEAD;
    let origin = Origin::start(start, Duration::ZERO)?;
    let uri = origin.uri("/capacity");
    let client = origin::client();
    let http = tower::service_fn(move |uri: Uri| {
        let client = client.clone();
        async move { Ok::<_, BoxError>(origin::get(&client, uri).await?.0) }
    });
    type Http = tower::util::BoxCloneService<Uri, hyper::StatusCode, BoxError>;
    type Reading<T> = Box<dyn Fn() -> T + Send>;
    // The service, the limit as it stands, and what the limit turned away.
    let (service, limit, turned_away): (Http, Reading<u32>, Reading<u64>) = match under {
        Under::Dephase(limiter) => {
            let (now, stats) = (limiter.clone(), limiter.clone());
            (
                Http::new(ConcurrencyLimitLayer::new(limiter).layer(http)),
                Box::new(move || now.limit()),
                Box::new(move || stats.stats().rejected),
            )
        }
        Under::Resilience(algorithm) => {
            let limited =
                tower_resilience_adaptive::AdaptiveLimiterLayer::new(algorithm).layer(http);
            let sampled = limited.clone();
            (
                Http::new(limited.map_err(|e| BoxError::from(e.to_string()))),
                Box::new(move || u32::try_from(sampled.limit()).unwrap_or(u32::MAX)),
                Box::new(|| 0),
            )
        }
    };

    // The limit, every 10 ms.
    let limits = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let limits = limits.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while start.elapsed() < LOAD {
                tick.tick().await;
                limits.lock().unwrap().push((start.elapsed(), limit()));
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
    let run = Run {
        requests: n,
        calls,
        successes,
        latencies,
        window: LOAD,
        extra: vec![("turned away by the limit", turned_away().to_string())],
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
    // Successes *answered* during the drop: a limit that makes callers
    // wait answers some of them only after it.
    let good = seen
        .requests
        .iter()
        .filter(|r| r.2 && in_drop(r.0 + r.1))
        .count();
    let goodput = good as f64 / drop_secs;
    let capacity = LOW_CAPACITY as f64 / CAPACITY_TIME.as_secs_f64();
    let mut drop_latencies: Vec<Duration> = seen
        .requests
        .iter()
        .filter(|r| r.2 && in_drop(r.0))
        .map(|r| r.1)
        .collect();
    drop_latencies.sort_unstable();
    let p99 = |sorted: &[Duration]| {
        sorted
            .get((sorted.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    // The same once the limit had time to follow (the goal's second), to
    // tell the transient of the drop from where the limit settles.
    let settled_from = DROP_FROM + SETTLE;
    let mut settled: Vec<Duration> = seen
        .requests
        .iter()
        .filter(|r| r.2 && (settled_from..DROP_UNTIL).contains(&r.0))
        .map(|r| r.1)
        .collect();
    settled.sort_unstable();
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
            "goodput: answered during the drop (share of 320/s)",
            format!("{goodput:.0}/s ({:.0}%)", 100.0 * goodput / capacity),
        ),
        (
            "p99 latency during the drop (no-load: 50 ms)",
            format!("{:.0} ms", p99(&drop_latencies).as_secs_f64() * 1000.0),
        ),
        (
            "p99 latency, 0.5 s into the drop to its end",
            format!("{:.0} ms", p99(&settled).as_secs_f64() * 1000.0),
        ),
        ("limit within 20% of 16 after the drop", down),
        ("limit within 20% of 64 after the recovery", up),
    ]);
    seen.run
}

/// A dephase limit with `algorithm`, sampled in windows of [`WINDOW`].
fn dephase(algorithm: impl LimitAlgorithm) -> Result<Under, BoxError> {
    Ok(Under::Dephase(
        Limiter::builder()
            .algorithm(algorithm)
            .window(WINDOW, WINDOW)
            .build()?,
    ))
}

/// `capacity_drop`.
pub async fn capacity_drop(_: Settings) -> Result<Scenario, BoxError> {
    let fixed = during_drop(capacity_run(dephase(Fixed(HIGH_CAPACITY as u32))?).await?);
    let gradient = during_drop(
        capacity_run(dephase(
            Gradient2::new()
                .range(4, 200)?
                .initial_limit(HIGH_CAPACITY as u32)
                .queue(3)
                .smoothing(0.6)?,
        )?)
        .await?,
    );
    let vegas = during_drop(
        capacity_run(dephase(
            Vegas::seeded(1)
                .initial_limit(HIGH_CAPACITY as u32)
                .max_limit(200),
        )?)
        .await?,
    );
    // The same settings where tower-resilience has them (its queue
    // allowance is log10 of the limit, fixed; it updates on every sample).
    let resilience = during_drop(
        capacity_run(Under::Resilience(
            tower_resilience_adaptive::Gradient2::builder()
                .initial_limit(HIGH_CAPACITY)
                .min_limit(4)
                .max_limit(200)
                .smoothing(0.6)
                .build()
                .map_err(|e| BoxError::from(e.to_string()))?,
        ))
        .await?,
    );
    Ok(Scenario {
        name: "capacity_drop",
        title: "A capacity drop: requests reaching the origin every 10 ms",
        description: format!(
            "The origin serves {HIGH_CAPACITY} at a time ({CAPACITY_TIME:?} each), {LOW_CAPACITY} from {DROP_FROM:?} to {DROP_UNTIL:?}, then {HIGH_CAPACITY} again; excess requests queue at the origin. Clients send one request every {INTERVAL:?} (3× the low capacity) through a concurrency limit. naive: a fixed limit of {HIGH_CAPACITY}. dephase: Gradient2 (Netflix's formula, rttTolerance 1.5; range 4..200, queue 3, smoothing 0.6), windows of {WINDOW:?}. Third column: dephase's Vegas (Netflix's defaults, max 200). The dephase limits turn away what they do not admit. Fourth: tower-resilience-adaptive 0.14's Gradient2 (initial {HIGH_CAPACITY}, range 4..200, smoothing 0.6), whose callers wait for a slot instead."
        ),
        outage: Duration::ZERO,
        capacity: None,
        naive: fixed,
        dephase: gradient,
        variants: vec![
            ("Vegas", "vegas", vegas),
            ("tower-resilience", "tower_resilience", resilience),
        ],
    })
}

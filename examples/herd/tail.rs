//! `tail` and `tail_overload`: hedged requests against a long tail — no
//! hedging, tower's `Hedge` (no budget) and dephase's `Hedge` (a 5%
//! ratio budget), first while the origin is healthy, then when it turns
//! slow for everybody.

use std::time::Duration;

use dephase::BoxError;
use dephase::budget::RatioBudget;
use dephase::hedge::{HedgeLayer, HedgePolicy};
use hyper::Uri;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::origin::{self, Origin};
use crate::scenarios::{LEAD, Run, Scenario, Settings};

/// One request every 2 ms: 500 a second.
const INTERVAL: Duration = Duration::from_millis(2);
/// Requests on `/tail/warm` (not recorded) before the measured ones: a
/// little more than one window, so both hedges have an estimate.
const WARM: usize = 1100;
/// Measured requests, healthy.
const MEASURED: usize = 4000;
/// Measured requests while the origin is slow for everybody: one second,
/// less than a window, so the estimates have not caught up.
const MEASURED_OVERLOAD: usize = 500;
/// The latency window of both hedges (tower's `period`).
const WINDOW: Duration = Duration::from_secs(2);
/// The percentile after which both hedge.
const PERCENTILE: f64 = 0.9;
/// Latencies both need before they hedge.
const MIN_SAMPLES: u64 = 20;
/// dephase's budget: 5% of requests, plus this many hedges a second.
const RATIO: f64 = 0.05;
const MIN_PER_SEC: u32 = 10;
/// ... of the last second.
const BUDGET_WINDOW: Duration = Duration::from_secs(1);

/// Which client.
#[derive(Clone, Copy)]
enum Client {
    Plain,
    Tower,
    Dephase,
}

/// tower's hedge policy: every request may be copied and hedged.
#[derive(Clone)]
struct EveryRequest;

impl tower::hedge::Policy<Uri> for EveryRequest {
    fn clone_request(&self, uri: &Uri) -> Option<Uri> {
        Some(uri.clone())
    }

    fn can_retry(&self, _: &Uri) -> bool {
        true
    }
}

type Service = BoxCloneSyncService<Uri, hyper::StatusCode, BoxError>;

fn service(kind: Client, seed: u64) -> Result<(Service, Option<RatioBudget>), BoxError> {
    let client = origin::client();
    let http = tower::service_fn(move |uri: Uri| {
        let client = client.clone();
        async move { Ok::<_, BoxError>(origin::get(&client, uri).await?.0) }
    });
    Ok(match kind {
        Client::Plain => (BoxCloneSyncService::new(http), None),
        Client::Tower => {
            let hedge = tower::hedge::Hedge::new(
                http,
                EveryRequest,
                MIN_SAMPLES,
                PERCENTILE as f32,
                WINDOW,
            );
            // tower's `Hedge` is not `Clone`: shared through a buffer.
            let shared = tower::buffer::Buffer::new(hedge, 4096);
            (BoxCloneSyncService::new(shared), None)
        }
        Client::Dephase => {
            let budget = RatioBudget::builder()
                .ttl(BUDGET_WINDOW)
                .ratio(RATIO)
                .min_per_sec(MIN_PER_SEC)
                .build()?;
            let policy = HedgePolicy::builder()
                .percentile(PERCENTILE)
                .window(WINDOW)
                .min_samples(MIN_SAMPLES)
                .budget(budget.clone())
                .seed(seed)
                .build()?;
            let hedge = HedgeLayer::new(policy).layer(http);
            (BoxCloneSyncService::new(hedge), Some(budget))
        }
    })
}

/// What a paced run saw: when it started, successes, sorted latencies.
type Paced = (Instant, usize, Vec<Duration>);

/// Sends `n` requests to `uri`, one every [`INTERVAL`].
async fn paced(service: &Service, uri: &Uri, n: usize) -> Result<Paced, BoxError> {
    let start = Instant::now() + LEAD;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (service, uri) = (service.clone(), uri.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(start + INTERVAL * i as u32).await;
                let sent = Instant::now();
                let ok = matches!(service.oneshot(uri).await, Ok(s) if s.is_success());
                (ok, sent.elapsed())
            })
        })
        .collect();
    let mut successes = 0;
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        let (ok, latency) = task.await?;
        successes += usize::from(ok);
        latencies.push(latency);
    }
    latencies.sort_unstable();
    Ok((start, successes, latencies))
}

fn percentile_ms(sorted: &[Duration], p: f64) -> String {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let value = sorted[rank.clamp(1, sorted.len()) - 1];
    format!("{:.1} ms", value.as_secs_f64() * 1000.0)
}

async fn tail_run(kind: Client, path: &str, measured: usize, seed: u64) -> Result<Run, BoxError> {
    let zero = Instant::now();
    let origin = Origin::start(zero, Duration::ZERO)?;
    let (service, budget) = service(kind, seed)?;
    // Both hedges learn their estimate on the healthy origin first.
    paced(&service, &origin.uri("/tail/warm"), WARM).await?;
    let (begin, successes, latencies) = paced(&service, &origin.uri(path), measured).await?;
    // The origin counts from `zero`; the figures from the measured start.
    let since = begin - zero;
    let calls: Vec<Duration> = origin
        .stop()?
        .into_iter()
        .map(|at| at.saturating_sub(since))
        .collect();
    let mut extra = vec![("p99.9 latency", percentile_ms(&latencies, 99.9))];
    if let Some(budget) = budget {
        let stats = budget.stats();
        extra.push((
            "hedges granted / denied by the budget (warm-up included)",
            format!("{} / {}", stats.granted - stats.refunded, stats.denied),
        ));
    }
    let window = calls
        .last()
        .copied()
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    Ok(Run {
        requests: measured,
        calls,
        successes,
        latencies,
        window,
        extra,
    })
}

/// The three runs: no hedging, dephase, tower.
async fn scenario(
    settings: Settings,
    path: &str,
    measured: usize,
) -> Result<(Run, Run, Run), BoxError> {
    let plain = tail_run(Client::Plain, path, measured, settings.seed).await?;
    let dephase = tail_run(Client::Dephase, path, measured, settings.seed).await?;
    let tower = tail_run(Client::Tower, path, measured, settings.seed).await?;
    Ok((plain, dephase, tower))
}

/// `tail`: healthy origin, one request in twenty stuck for 500 ms.
pub async fn tail(settings: Settings) -> Result<Scenario, BoxError> {
    let (naive, dephase, tower) = scenario(settings, "/tail", MEASURED).await?;
    Ok(Scenario {
        name: "tail",
        title: "A long tail: requests reaching the origin every 10 ms",
        description: format!(
            "{MEASURED} requests, one every {INTERVAL:?}, after {WARM} unrecorded ones that teach the hedges their estimate. The origin answers in {:?}, except one request in twenty ({:?}). naive: no hedging. dephase: Hedge after the p{:.0} of a {WINDOW:?} window (+ up to 20% jitter), from a ratio budget of {:.0}% of the last second's requests + {MIN_PER_SEC}/s. tower Hedge: the same percentile and period, no budget.",
            origin::TAIL_FAST,
            origin::TAIL_SLOW,
            PERCENTILE * 100.0,
            RATIO * 100.0,
        ),
        outage: Duration::ZERO,
        capacity: None,
        naive,
        dephase,
        variants: vec![("tower Hedge", "tower_hedge", tower)],
    })
}

/// `tail_overload`: the origin turns slow for every request.
pub async fn tail_overload(settings: Settings) -> Result<Scenario, BoxError> {
    let (naive, dephase, tower) = scenario(settings, "/overloaded", MEASURED_OVERLOAD).await?;
    Ok(Scenario {
        name: "tail_overload",
        title: "Hedging into an overload: requests reaching the origin every 10 ms",
        description: format!(
            "The same clients; after the warm-up the origin takes {:?} for every request, for {MEASURED_OVERLOAD} requests (one second, less than the hedges' {WINDOW:?} window, so their estimates still say a few ms). Every request is past its hedge delay: tower hedges each one; dephase's budget allows {:.0}% + {MIN_PER_SEC}/s.",
            origin::OVERLOADED,
            RATIO * 100.0,
        ),
        outage: Duration::ZERO,
        capacity: None,
        naive,
        dephase,
        variants: vec![("tower Hedge", "tower_hedge", tower)],
    })
}

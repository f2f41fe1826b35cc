//! The scenarios: each runs the same herd twice against a fresh origin —
//! naive and with dephase — and returns what both runs saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use dephase::BoxError;
use dephase::CircuitBreakerLayer;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::Breaker;
use dephase::breaker::error::Rejected;
use dephase::budget::{RatioBudget, RetryBudget};
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use dephase::classify::{Classify, Outcome};
use dephase::offset::Offset;
use dephase::pace::Pacer;
use dephase::retry::{CloneRequests, RetryLayer, RetryPolicy};
use hyper::Uri;
use tokio::sync::Barrier;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

use crate::origin::{self, Origin};

/// What one run (naive or dephase) of a scenario saw.
#[derive(Debug, Default)]
pub struct Run {
    /// Client requests (not attempts).
    pub requests: usize,
    /// When each request reached the origin, from the run's start.
    pub calls: Vec<Duration>,
    /// Requests that ended with a 2xx.
    pub successes: usize,
    /// Each request's latency, sorted.
    pub latencies: Vec<Duration>,
    /// The window over which peak-to-mean is taken (10 buckets).
    pub window: Duration,
    /// Scenario-specific figures: (label, value).
    pub extra: Vec<(&'static str, String)>,
}

/// A scenario's runs: naive, dephase, and maybe more variants.
pub struct Scenario {
    pub name: &'static str,
    /// The plot's title: a sentence.
    pub title: &'static str,
    pub description: String,
    /// How long the origin is down at the start (zero: not at all).
    pub outage: Duration,
    /// Requests the origin serves at once, if it has a limit.
    pub capacity: Option<usize>,
    pub naive: Run,
    pub dephase: Run,
    /// Further runs, if the scenario has them (cron: index offsets; tail:
    /// tower's `Hedge`; capacity: Vegas, tower-resilience): each column's
    /// title, its key in `report.json`, the run.
    pub variants: Vec<(&'static str, &'static str, Run)>,
}

/// Settings shared by the scenarios.
#[derive(Clone, Copy)]
pub struct Settings {
    pub clients: usize,
    pub seed: u64,
    pub budget_per_sec: u32,
}

/// Runs `request` for each of `n` tasks that start together at `start`;
/// returns (successes, sorted latencies).
pub async fn herd<F, Fut>(
    n: usize,
    start: Instant,
    request: F,
) -> Result<(usize, Vec<Duration>), BoxError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let request = request(i);
            tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep_until(start).await;
                let sent = Instant::now();
                let ok = request.await;
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
    Ok((successes, latencies))
}

/// Time for the herd's tasks to be spawned before they start.
pub const LEAD: Duration = Duration::from_millis(200);

// ----- retry_storm --------------------------------------------------------

/// How long the origin is down at the start of `retry_storm`.
pub const OUTAGE: Duration = Duration::from_secs(1);
/// Attempts per request, the first included, for both clients.
const ATTEMPTS: u32 = 10;
/// The naive client's fixed retry interval.
const NAIVE_INTERVAL: Duration = Duration::from_millis(150);
/// The dephase client's backoff: full jitter from this, doubling ...
const DEPHASE_BASE: Duration = Duration::from_millis(150);
/// ... up to this.
const DEPHASE_CAP: Duration = Duration::from_secs(3);
/// No retry may start later than this after the first attempt.
const DEADLINE: Duration = Duration::from_secs(10);

/// Why an attempt got no HTTP answer (connection refused, reset, ...).
#[derive(Debug)]
pub struct CallError(String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

/// What a client sees of one attempt.
pub struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
}

/// Naive: every failure is retried at the fixed interval; hints are ignored.
fn naive_classify(result: Result<&Reply, &BoxError>) -> Outcome {
    match result {
        Ok(r) if r.status.is_success() => Outcome::Success,
        Ok(_) => Outcome::retry("unavailable"),
        Err(_) => Outcome::retry("connect"),
    }
}

/// Dephase: the same, but `Retry-After` is passed on as the server's hint,
/// and so is the time an open breaker asks callers to stay away.
fn dephase_classify(result: Result<&Reply, &BoxError>) -> Outcome {
    match result {
        Ok(r) if r.status.is_success() => Outcome::Success,
        Ok(r) => Outcome::Retry {
            after: r.retry_after,
            reason: "unavailable",
        },
        Err(e) => match e.downcast_ref::<Rejected>() {
            Some(rejected) => Outcome::Retry {
                after: rejected.retry_after(),
                reason: "breaker_open",
            },
            None => Outcome::retry("connect"),
        },
    }
}

/// What the breaker counts as a failure of the origin: no answer, or 5xx.
fn breaker_classify(result: Result<&Reply, &CallError>) -> Outcome {
    match result {
        Ok(r) if r.status.is_server_error() => Outcome::failure("unavailable"),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::failure("connect"),
    }
}

async fn storm_run<C, B>(
    clients: usize,
    policy: RetryPolicy<C, CloneRequests, B>,
    breaker: Breaker,
) -> Result<Run, BoxError>
where
    C: Classify<Reply, BoxError> + Send + Sync + 'static,
    B: RetryBudget + Clone + Send + Sync + 'static,
{
    let start = Instant::now() + LEAD;
    let origin = Origin::start(start, OUTAGE)?;
    let uri = origin.uri("/work");
    let client = origin::client();
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = attempts.clone();
    let http = tower::service_fn(move |uri: Uri| {
        let client = client.clone();
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let (status, retry_after) = origin::get(&client, uri)
                .await
                .map_err(|e| CallError(e.to_string()))?;
            Ok::<_, CallError>(Reply {
                status,
                retry_after,
            })
        }
    });
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(
            CircuitBreakerLayer::new(breaker)
                .classify(breaker_classify as fn(Result<&Reply, &CallError>) -> Outcome),
        )
        .service(http);
    let (successes, latencies) = herd(clients, start, |_| {
        let (service, uri) = (service.clone(), uri.clone());
        async move { matches!(service.oneshot(uri).await, Ok(r) if r.status.is_success()) }
    })
    .await?;
    let calls = origin.stop()?;
    let window = calls
        .last()
        .copied()
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    Ok(Run {
        requests: clients,
        calls,
        successes,
        latencies,
        window,
        extra: vec![(
            "attempts that reached the network",
            attempts.load(Ordering::Relaxed).to_string(),
        )],
    })
}

/// `retry_storm`: the herd calls at once while the origin is down for a
/// second; then it serves `CAPACITY` at a time and turns the rest away.
pub async fn retry_storm(settings: Settings) -> Result<Scenario, BoxError> {
    let naive_policy = RetryPolicy::builder()
        .max_attempts(ATTEMPTS)
        .backoff(
            ExponentialBackoff::builder()
                .base(NAIVE_INTERVAL)
                .cap(NAIVE_INTERVAL)
                .multiplier(1.0)
                .jitter(Jitter::None)
                .build()?,
        )
        .classify(naive_classify as fn(Result<&Reply, &BoxError>) -> Outcome)
        .build()?;
    let budget = RatioBudget::builder()
        .ttl(Duration::from_secs(10))
        .ratio(0.2)
        .min_per_sec(settings.budget_per_sec)
        .build()?;
    let dephase_policy = RetryPolicy::builder()
        .max_attempts(ATTEMPTS)
        .backoff(
            ExponentialBackoff::builder()
                .base(DEPHASE_BASE)
                .multiplier(2.0)
                .cap(DEPHASE_CAP)
                .jitter(Jitter::Full)
                .seed(settings.seed)
                .build()?,
        )
        .budget(budget.clone())
        .deadline(DEADLINE)
        .classify(dephase_classify as fn(Result<&Reply, &BoxError>) -> Outcome)
        .build()?;
    // The naive client has no breaker (one held closed, so that both go
    // through the same layers).
    let none = Breaker::builder().build()?;
    none.force_closed();
    let naive = storm_run(settings.clients, naive_policy, none).await?;
    // Opens when half the calls of the last second failed (at least 100);
    // stays open 250 ms and more each time, jittered, then lets 10 probes in.
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(100)
        .window(Duration::from_secs(1))
        .open_time(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(250))
                .cap(Duration::from_secs(2))
                .jitter(Jitter::Equal)
                .seed(settings.seed)
                .build()?,
        )
        .half_open_probes(10)
        .build()?;
    let mut dephase = storm_run(settings.clients, dephase_policy, breaker.clone()).await?;
    let stats = budget.stats();
    dephase.extra.push((
        "retries granted / denied by the budget",
        format!("{} / {}", stats.granted - stats.refunded, stats.denied),
    ));
    Ok(Scenario {
        name: "retry_storm",
        title: "A retry storm: requests reaching the origin every 10 ms",
        outage: OUTAGE,
        capacity: Some(origin::CAPACITY),
        description: format!(
            "{} clients call at the same instant; the origin is down for {OUTAGE:?} (dephase's FaultLayer answers 503 without Retry-After in front of it), then serves {} at a time ({:?} each) and answers 503 + Retry-After: 1 to the rest. naive: fixed {NAIVE_INTERVAL:?} retries. dephase: full jitter {DEPHASE_BASE:?}..{DEPHASE_CAP:?}, Retry-After as a floor, a ratio budget (20% + {}/s) shared by the herd, a {DEADLINE:?} deadline, a circuit breaker (opens at 50% failures of ≥ 100 calls in 1 s; jittered open time from 250 ms; 10 probes) whose retry-after is a floor too. {ATTEMPTS} attempts each.",
            settings.clients,
            origin::CAPACITY,
            origin::SERVICE_TIME,
            settings.budget_per_sec
        ),
        naive,
        dephase,
        variants: Vec::new(),
    })
}

// ----- cache_stampede -----------------------------------------------------

/// Requests per second on the hot key.
const RATE: u32 = 2000;
/// How long the load runs: not a multiple of the TTL, so that an early
/// refresh of the expiry after the run's end does not fall inside it.
const LOAD: Duration = Duration::from_secs(7);
/// The cached report's time to live.
const TTL: Duration = Duration::from_secs(2);

/// A plain TTL cache of one value: a miss calls the origin, every request
/// that misses while it is being recomputed calls it too.
#[derive(Clone)]
struct PlainCache {
    slot: Arc<std::sync::Mutex<Option<(Bytes, Instant)>>>,
}

/// Sends `RATE` requests a second for `LOAD` through `lookup` (made per
/// request); returns (requests, successes, sorted latencies).
async fn load<F, Fut>(lookup: F) -> Result<(usize, usize, Vec<Duration>), BoxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let per_tick = (RATE / 1000).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + LOAD;
    let mut tasks = Vec::with_capacity(RATE as usize * LOAD.as_secs() as usize);
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            let request = lookup();
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let ok = request.await;
                (ok, sent.elapsed())
            }));
        }
    }
    let requests = tasks.len();
    let mut successes = 0;
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        let (ok, latency) = task.await?;
        successes += usize::from(ok);
        latencies.push(latency);
    }
    latencies.sort_unstable();
    Ok((requests, successes, latencies))
}

/// `cache_stampede`: a hot key read `RATE` times a second, recomputed by
/// the origin in `RECOMPUTE`, cached for `TTL`.
pub async fn cache_stampede(settings: Settings) -> Result<Scenario, BoxError> {
    // naive
    let start = Instant::now();
    let origin = Origin::start(start, Duration::ZERO)?;
    let (uri, client) = (origin.uri("/report"), origin::client());
    let plain = PlainCache {
        slot: Arc::default(),
    };
    let (requests, successes, latencies) = load(|| {
        let (plain, uri, client) = (plain.clone(), uri.clone(), client.clone());
        async move {
            let fresh = plain
                .slot
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|(_, expires)| Instant::now() < *expires);
            if fresh {
                return true;
            }
            match origin::get(&client, uri).await {
                Ok((status, _)) if status.is_success() => {
                    *plain.slot.lock().unwrap() = Some((Bytes::new(), Instant::now() + TTL));
                    true
                }
                _ => false,
            }
        }
    })
    .await?;
    let calls = origin.stop()?;
    let naive = stampede_run(requests, calls, successes, latencies);

    // dephase
    let start = Instant::now();
    let origin = Origin::start(start, Duration::ZERO)?;
    let (uri, client) = (origin.uri("/report"), origin::client());
    let store = MemoryStore::builder(16)
        .ttl(TTL)
        .ttl_jitter(TtlJitter::Random(TTL / 10))
        .beta(0.5)
        .seed(settings.seed)
        .build()?;
    let cache = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |_: &()| Some(())))
        .service(tower::service_fn(move |()| {
            fetch_report(client.clone(), uri.clone())
        }));
    let (requests, successes, latencies) = load(|| {
        let cache = cache.clone();
        async move { cache.oneshot(()).await.is_ok() }
    })
    .await?;
    let calls = origin.stop()?;
    let dephase = stampede_run(requests, calls, successes, latencies);
    Ok(Scenario {
        name: "cache_stampede",
        title: "A cache stampede: recomputes reaching the origin every 10 ms",
        outage: Duration::ZERO,
        capacity: None,
        description: format!(
            "One hot key read {RATE} times a second for {LOAD:?}; the origin recomputes it in {:?}; cached for {TTL:?}. naive: a plain TTL cache (every request that misses calls the origin). dephase: the cache layer — coalesced misses, XFetch early refresh (β = 0.5), TTL jitter of up to {:?}.",
            origin::RECOMPUTE,
            TTL / 10
        ),
        naive,
        dephase,
        variants: Vec::new(),
    })
}

/// One recompute of the report by the origin.
async fn fetch_report(client: origin::HttpClient, uri: Uri) -> Result<StatusCode, BoxError> {
    let (status, _) = origin::get(&client, uri).await?;
    if status.is_success() {
        Ok(status)
    } else {
        Err(format!("origin answered {status}").into())
    }
}

fn stampede_run(
    requests: usize,
    calls: Vec<Duration>,
    successes: usize,
    latencies: Vec<Duration>,
) -> Run {
    // The value has to be computed at the cold start and after each expiry
    // within the run: 1 + ⌊LOAD / TTL⌋ fills.
    let fills = 1 + (LOAD.as_millis() / TTL.as_millis()) as usize;
    let per_fill = calls.len() as f64 / fills as f64;
    Run {
        requests,
        successes,
        latencies,
        window: LOAD,
        extra: vec![(
            "origin recomputes per fill (start + expiries)",
            format!("{per_fill:.2}"),
        )],
        calls,
    }
}

// ----- cron_herd ----------------------------------------------------------

/// Scheduled jobs in the fleet.
const JOBS: usize = 200;
/// Their period: they all run once per period.
const PERIOD: Duration = Duration::from_secs(1);

async fn cron_run(offset: impl Fn(usize) -> Duration) -> Result<Run, BoxError> {
    let start = Instant::now() + LEAD;
    let origin = Origin::start(start, Duration::ZERO)?;
    let (uri, client) = (origin.uri("/work"), origin::client());
    let (successes, latencies) = herd(JOBS, start, |i| {
        let (uri, client, offset) = (uri.clone(), client.clone(), offset(i));
        async move {
            tokio::time::sleep(offset).await;
            matches!(origin::get(&client, uri).await, Ok((s, _)) if s.is_success())
        }
    })
    .await?;
    Ok(Run {
        requests: JOBS,
        calls: origin.stop()?,
        successes,
        latencies,
        window: PERIOD,
        extra: Vec::new(),
    })
}

/// `cron_herd`: `JOBS` jobs fire at the same period boundary.
pub async fn cron_herd(_: Settings) -> Result<Scenario, BoxError> {
    let naive = cron_run(|_| Duration::ZERO).await?;
    let hashed = cron_run(|i| {
        Offset::hash(format!("job-{i}"), PERIOD)
            .expect("a valid window")
            .duration()
    })
    .await?;
    let indexed = cron_run(|i| {
        Offset::index(i as u64, JOBS as u64, PERIOD)
            .expect("a valid window")
            .duration()
    })
    .await?;
    Ok(Scenario {
        name: "cron_herd",
        title: "A cron herd: scheduled jobs reaching the origin every 10 ms",
        outage: Duration::ZERO,
        capacity: Some(origin::CAPACITY),
        description: format!(
            "{JOBS} scheduled jobs, period {PERIOD:?}, each calling the origin once at the period boundary. naive: no offset. dephase: SipHash-2-4 offsets of the job name within the period (and, as a variant, index offsets i · period / n)."
        ),
        naive,
        dephase: hashed,
        variants: vec![("dephase (index offsets)", "dephase_index", indexed)],
    })
}

// ----- warmup -------------------------------------------------------------

/// Instances starting together.
const INSTANCES: usize = 300;
/// The pace: instances released per second.
pub const WARMUP_RATE: u32 = 1000;

async fn warmup_run(pacer: Option<Pacer>) -> Result<Run, BoxError> {
    let start = Instant::now() + LEAD;
    let origin = Origin::start(start, Duration::ZERO)?;
    let (uri, client) = (origin.uri("/work"), origin::client());
    let (successes, latencies) = herd(INSTANCES, start, |_| {
        let (uri, client, pacer) = (uri.clone(), client.clone(), pacer.clone());
        async move {
            if let Some(pacer) = pacer {
                if pacer.wait().await.is_err() {
                    return false;
                }
            }
            matches!(origin::get(&client, uri).await, Ok((s, _)) if s.is_success())
        }
    })
    .await?;
    let calls = origin.stop()?;
    let window = calls
        .last()
        .copied()
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    Ok(Run {
        requests: INSTANCES,
        calls,
        successes,
        latencies,
        window,
        extra: Vec::new(),
    })
}

/// `warmup`: `INSTANCES` instances start together and warm the dependency.
pub async fn warmup(settings: Settings) -> Result<Scenario, BoxError> {
    let naive = warmup_run(None).await?;
    let pacer = Pacer::builder()
        .rate(WARMUP_RATE, Duration::from_secs(1))
        .jitter(Duration::ZERO)
        .seed(settings.seed)
        .build()?;
    let dephase = warmup_run(Some(pacer)).await?;
    Ok(Scenario {
        name: "warmup",
        title: "A warm-up: first calls reaching the origin every 10 ms",
        outage: Duration::ZERO,
        capacity: Some(origin::CAPACITY),
        description: format!(
            "{INSTANCES} instances start together and each makes its first call to the origin. naive: all at once. dephase: a pacer releases {WARMUP_RATE} per second, first come first served (no jitter: at a 1 ms spacing, tokio's 1 ms timer would put two jittered releases in one tick)."
        ),
        naive,
        dephase,
        variants: Vec::new(),
    })
}

/// Every scenario's name, in the order they run.
pub const NAMES: [&str; 8] = [
    "retry_storm",
    "cache_stampede",
    "cron_herd",
    "warmup",
    "tail",
    "tail_overload",
    "deadline_chain",
    "capacity_drop",
];

/// Runs the scenario called `name`.
pub async fn run(name: &str, settings: Settings) -> Result<Scenario, BoxError> {
    match name {
        "retry_storm" => retry_storm(settings).await,
        "cache_stampede" => cache_stampede(settings).await,
        "cron_herd" => cron_herd(settings).await,
        "warmup" => warmup(settings).await,
        "tail" => crate::tail::tail(settings).await,
        "tail_overload" => crate::tail::tail_overload(settings).await,
        "deadline_chain" => crate::chain::deadline_chain(settings).await,
        "capacity_drop" => crate::capacity::capacity_drop(settings).await,
        other => Err(format!("no scenario {other:?} (one of {NAMES:?})").into()),
    }
}

//! The herd: a real HTTP origin on loopback, 500 clients that call it at the
//! same instant, a one-second outage — with naive retries and with dephase.
//!
//! ```text
//! cargo run --release --example herd
//! cargo run --release --example herd -- --clients 1000 --seed 7 --quiet
//! ```
//!
//! The origin is an axum server on `127.0.0.1:0`. For the first second it is
//! down (its port refuses connections); after that it serves at most
//! `CAPACITY` requests at once, each taking `SERVICE_TIME`, and answers
//! `503 Service Unavailable` with `Retry-After: 1` to whatever it cannot take.
//! The clients are hyper-util clients over loopback. Each scenario runs the
//! same herd twice, with the same seed and the same attempt limit:
//!
//! - **naive**: retry at a fixed short interval;
//! - **dephase**: [`Retry`](dephase::Retry) with full jitter, a shared
//!   [`RatioBudget`](dephase::RatioBudget) and a deadline; the origin's
//!   `Retry-After` is honoured as a floor with the jitter on top.
//!
//! It prints, for each: origin calls per client request (amplification),
//! the peak of origin requests in any 10 ms, success rate and latency, and
//! writes `target/herd/report.json`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::budget::{RatioBudget, RetryBudget, Withdrawal};
use dephase::classify::{Classify, Outcome};
use dephase::measure::{Recorder, Spread};
use dephase::retry::{CloneRequests, RetryLayer, RetryPolicy};
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpSocket;
use tokio::sync::{Barrier, Semaphore};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the origin is down at the start.
const OUTAGE: Duration = Duration::from_secs(1);
/// Requests the origin serves at once; the rest get 503.
const CAPACITY: usize = 32;
/// How long the origin works on each request it accepts.
const SERVICE_TIME: Duration = Duration::from_millis(25);
/// Attempts per request, the first included, for both clients.
const ATTEMPTS: u32 = 10;
/// The naive client's fixed retry interval.
const NAIVE_INTERVAL: Duration = Duration::from_millis(150);
/// Width of the buckets in which the origin's peak is counted.
const BUCKET: Duration = Duration::from_millis(10);

struct Args {
    clients: usize,
    seed: u64,
    quiet: bool,
    budget_per_sec: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: 500,
        seed: 1,
        quiet: false,
        budget_per_sec: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--clients" => {
                args.clients = it
                    .next()
                    .ok_or("--clients needs a value")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?;
            }
            "--seed" => {
                args.seed = it
                    .next()
                    .ok_or("--seed needs a value")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            "--budget-per-sec" => {
                args.budget_per_sec = it
                    .next()
                    .ok_or("--budget-per-sec needs a value")?
                    .parse()
                    .map_err(|e| format!("--budget-per-sec: {e}"))?;
            }
            "--quiet" => args.quiet = true,
            "-h" | "--help" => {
                println!("usage: herd [--clients N] [--seed S] [--budget-per-sec N] [--quiet]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    Ok(args)
}

// ----- the origin --------------------------------------------------------

struct Origin {
    capacity: Semaphore,
    calls: Recorder,
}

async fn work(State(origin): State<Arc<Origin>>) -> Response {
    origin.calls.mark();
    match origin.capacity.try_acquire() {
        Ok(_permit) => {
            tokio::time::sleep(SERVICE_TIME).await;
            (StatusCode::OK, "done").into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy",
        )
            .into_response(),
    }
}

/// Binds a port that refuses connections until `start + OUTAGE`, then serves
/// on it until `stop` is notified. Runs on its own thread and runtime, as an
/// origin in another process would.
fn start_origin(
    start: Instant,
    stop: Arc<tokio::sync::Notify>,
) -> Result<(std::net::SocketAddr, Recorder, std::thread::JoinHandle<()>), BoxError> {
    let calls = Recorder::starting_at(start);
    let origin = Arc::new(Origin {
        capacity: Semaphore::new(CAPACITY),
        calls: calls.clone(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Bound but not listening: connections are refused, as when the origin is down.
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let addr = socket.local_addr()?;
    let app = axum::Router::new()
        .route("/work", axum::routing::get(work))
        .with_state(origin);
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            tokio::time::sleep_until(start + OUTAGE).await;
            let listener = socket
                .listen(4096)
                .expect("listen on the bound origin socket");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
                .expect("the origin serves");
        });
    });
    Ok((addr, calls, thread))
}

// ----- the clients -------------------------------------------------------

/// Why an attempt got no HTTP answer (connection refused, reset, ...).
#[derive(Debug)]
struct CallError(String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

/// What a client sees of one attempt.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
}

/// Naive: every failure is retried at the fixed interval; hints are ignored.
fn naive(result: Result<&Reply, &CallError>) -> Outcome {
    match result {
        Ok(r) if r.status.is_success() => Outcome::Success,
        Ok(_) => Outcome::retry("unavailable"),
        Err(_) => Outcome::retry("connect"),
    }
}

/// Dephase: the same, but `Retry-After` is passed on as the server's hint.
fn dephased(result: Result<&Reply, &CallError>) -> Outcome {
    match result {
        Ok(r) if r.status.is_success() => Outcome::Success,
        Ok(r) => Outcome::Retry {
            after: r.retry_after,
            reason: "unavailable",
        },
        Err(_) => Outcome::retry("connect"),
    }
}

/// A budget that counts what it grants and denies (and forwards to `inner`).
#[derive(Clone)]
struct Counted<B> {
    inner: B,
    granted: Arc<AtomicU64>,
    denied: Arc<AtomicU64>,
}

impl<B: RetryBudget> RetryBudget for Counted<B> {
    fn deposit(&self) {
        self.inner.deposit();
    }
    fn withdraw(&self) -> Option<Withdrawal> {
        let w = self.inner.withdraw();
        let counter = if w.is_some() {
            &self.granted
        } else {
            &self.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        w
    }
    fn refund(&self, withdrawal: Withdrawal) {
        self.granted.fetch_sub(1, Ordering::Relaxed);
        self.inner.refund(withdrawal);
    }
    fn on_success(&self, retry: Option<Withdrawal>) {
        self.inner.on_success(retry);
    }
    fn on_failure(&self) {
        self.inner.on_failure();
    }
    fn balance(&self) -> f64 {
        self.inner.balance()
    }
}

/// What one run of the herd produced.
struct Run {
    origin_calls: usize,
    attempts: u64,
    peak_per_10ms: usize,
    peak_to_mean: f64,
    successes: usize,
    latencies: Vec<Duration>,
    budget: Option<(u64, u64)>,
    elapsed: Duration,
}

async fn run<C, B>(
    clients: usize,
    policy: RetryPolicy<C, CloneRequests, B>,
    budget: Option<Counted<RatioBudget>>,
) -> Result<Run, BoxError>
where
    C: Classify<Reply, CallError> + Send + Sync + 'static,
    B: RetryBudget + Clone + Send + Sync + 'static,
{
    let stop = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now() + Duration::from_millis(200); // time to spawn the herd
    let (addr, calls, origin) = start_origin(start, stop.clone())?;
    let uri: Uri = format!("http://{addr}/work").parse()?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = attempts.clone();
    let http = tower::service_fn(move |uri: Uri| {
        let client = client.clone();
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let response = client
                .get(uri)
                .await
                .map_err(|e| CallError(e.to_string()))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            response
                .into_body()
                .collect()
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
        .service(http);

    let barrier = Arc::new(Barrier::new(clients));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (service, uri, barrier) = (service.clone(), uri.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep_until(start).await;
                let sent = Instant::now();
                let ok = matches!(service.oneshot(uri).await, Ok(r) if r.status.is_success());
                Ok::<_, Infallible>((ok, sent.elapsed()))
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(clients);
    let mut successes = 0;
    for task in tasks {
        let (ok, latency) = task.await?.unwrap_or_else(|never| match never {});
        successes += usize::from(ok);
        latencies.push(latency);
    }
    let elapsed = start.elapsed();
    stop.notify_one();
    origin.join().map_err(|_| "the origin thread panicked")?;

    let times = calls.times();
    let spread = Spread::by_width(&times, BUCKET)?;
    latencies.sort_unstable();
    Ok(Run {
        origin_calls: times.len(),
        attempts: attempts.load(Ordering::Relaxed),
        peak_per_10ms: spread.peak(),
        peak_to_mean: spread.peak_to_mean(),
        successes,
        latencies,
        budget: budget.map(|b| {
            (
                b.granted.load(Ordering::Relaxed),
                b.denied.load(Ordering::Relaxed),
            )
        }),
        elapsed,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(run: &Run, clients: usize) -> serde_json::Value {
    serde_json::json!({
        "origin_calls": run.origin_calls,
        "amplification": run.origin_calls as f64 / clients as f64,
        "peak_per_10ms": run.peak_per_10ms,
        "peak_to_mean": run.peak_to_mean,
        "success_rate": run.successes as f64 / clients as f64,
        "p50_ms": ms(percentile(&run.latencies, 50.0)),
        "p99_ms": ms(percentile(&run.latencies, 99.0)),
    })
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let clients = args.clients;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Naive: a fixed interval, no jitter, no budget.
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
        .classify(naive as fn(Result<&Reply, &CallError>) -> Outcome)
        .build()?;

    // Dephase: full jitter, one budget for the whole herd, a deadline.
    let budget = Counted {
        inner: RatioBudget::builder()
            .ttl(Duration::from_secs(10))
            .ratio(0.2)
            .min_per_sec(args.budget_per_sec)
            .build()?,
        granted: Arc::default(),
        denied: Arc::default(),
    };
    let dephase_policy = RetryPolicy::builder()
        .max_attempts(ATTEMPTS)
        .backoff(
            ExponentialBackoff::builder()
                .base(DEPHASE_BASE)
                .multiplier(2.0)
                .cap(DEPHASE_CAP)
                .jitter(Jitter::Full)
                .seed(args.seed)
                .build()?,
        )
        .budget(budget.clone())
        .deadline(DEADLINE)
        .classify(dephased as fn(Result<&Reply, &CallError>) -> Outcome)
        .build()?;

    if !args.quiet {
        println!(
            "retry_storm: {clients} clients call the origin at the same instant; it is down for {:?}, then serves {CAPACITY} requests at a time ({:?} each) and answers 503 + Retry-After: 1 to the rest. {ATTEMPTS} attempts per request for both.",
            OUTAGE, SERVICE_TIME
        );
        println!("running naive ...");
    }
    let naive = runtime.block_on(run(clients, naive_policy, None))?;
    if !args.quiet {
        println!("running dephase ...");
    }
    let dephase = runtime.block_on(run(clients, dephase_policy, Some(budget)))?;

    let rows: [(&str, String, String, String); 8] = [
        (
            "origin calls",
            naive.origin_calls.to_string(),
            dephase.origin_calls.to_string(),
            ratio(naive.origin_calls as f64, dephase.origin_calls as f64),
        ),
        (
            "amplification (origin calls per request)",
            format!("{:.2}", naive.origin_calls as f64 / clients as f64),
            format!("{:.2}", dephase.origin_calls as f64 / clients as f64),
            ratio(naive.origin_calls as f64, dephase.origin_calls as f64),
        ),
        (
            "peak origin requests per 10 ms",
            naive.peak_per_10ms.to_string(),
            dephase.peak_per_10ms.to_string(),
            ratio(naive.peak_per_10ms as f64, dephase.peak_per_10ms as f64),
        ),
        (
            "success rate",
            format!("{:.1}%", 100.0 * naive.successes as f64 / clients as f64),
            format!("{:.1}%", 100.0 * dephase.successes as f64 / clients as f64),
            String::new(),
        ),
        (
            "p50 latency",
            format!("{:.0} ms", ms(percentile(&naive.latencies, 50.0))),
            format!("{:.0} ms", ms(percentile(&dephase.latencies, 50.0))),
            String::new(),
        ),
        (
            "p99 latency",
            format!("{:.0} ms", ms(percentile(&naive.latencies, 99.0))),
            format!("{:.0} ms", ms(percentile(&dephase.latencies, 99.0))),
            String::new(),
        ),
        (
            "client attempts (refused ones included)",
            naive.attempts.to_string(),
            dephase.attempts.to_string(),
            ratio(naive.attempts as f64, dephase.attempts as f64),
        ),
        (
            "retries granted / denied by the budget",
            "no budget".to_string(),
            dephase
                .budget
                .map_or(String::new(), |(g, d)| format!("{g} / {d}")),
            String::new(),
        ),
    ];
    println!();
    println!(
        "{:<42} {:>12} {:>12} {:>14}",
        "retry_storm", "naive", "dephase", "naive/dephase"
    );
    for (name, a, b, r) in rows {
        println!("{name:<42} {a:>12} {b:>12} {r:>14}");
    }
    println!(
        "naive: fixed {:?} interval. dephase: full jitter from {:?} doubling to {:?}, a ratio budget (20% + {}/s over 10 s) shared by the herd, {:?} deadline. Runs took {:.1} s and {:.1} s.",
        NAIVE_INTERVAL,
        DEPHASE_BASE,
        DEPHASE_CAP,
        args.budget_per_sec,
        DEADLINE,
        naive.elapsed.as_secs_f64(),
        dephase.elapsed.as_secs_f64()
    );

    let report = serde_json::json!({
        "scenarios": [{
            "name": "retry_storm",
            "clients": clients,
            "seed": args.seed,
            "naive": summary(&naive, clients),
            "dephase": summary(&dephase, clients),
        }]
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("herd");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    if !args.quiet {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The dephase client's backoff: full jitter from this, doubling.
const DEPHASE_BASE: Duration = Duration::from_millis(150);
/// ... up to this.
const DEPHASE_CAP: Duration = Duration::from_secs(3);
/// No retry may start later than this after the first attempt.
const DEADLINE: Duration = Duration::from_secs(10);

fn ratio(naive: f64, dephase: f64) -> String {
    if dephase == 0.0 {
        "-".into()
    } else {
        format!("{:.1}x", naive / dephase)
    }
}

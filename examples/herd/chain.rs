//! `deadline_chain`: three axum services in a chain on loopback — an edge,
//! a middle and an origin — each hop retrying the next from a spawned
//! task. The edge's client gives up after a second. Without propagation
//! the hops go on retrying for nobody; with it, every hop knows the time
//! left.
//!
//! Why spawned: hyper drops a handler's future when its client's
//! connection closes, so in a chain whose handlers await their downstream
//! calls directly, an edge that gives up cancels the whole chain by
//! disconnecting (measured: no origin call starts after the edge's
//! deadline either way). Work that outlives its connection — a spawned
//! task, a queue, a proxy that keeps the upstream request — is what only
//! a deadline that travels can stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use dephase::BoxError;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::deadline::{Deadline, PropagateDeadlineLayer, ServerDeadlineLayer};
use dephase::http::HttpClassifier;
use dephase::retry::{RetryLayer, RetryPolicy};
use http_body_util::{BodyExt, Empty};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::origin;
use crate::scenarios::{LEAD, Run, Scenario, Settings};

/// Edge requests, one every 10 ms.
const REQUESTS: usize = 100;
const INTERVAL: Duration = Duration::from_millis(10);
/// When the edge's client gives up.
const EDGE_TIMEOUT: Duration = Duration::from_secs(1);
/// The origin's answer: 503 after this long, every time.
const ORIGIN_TIME: Duration = Duration::from_millis(300);
/// Attempts per call at each hop.
const ATTEMPTS: u32 = 3;
/// The least time a hop starts an attempt with (dephase).
const MIN_ATTEMPT: Duration = Duration::from_millis(10);

/// The request id, carried from hop to hop so the origin can tell which
/// edge request a call serves.
const ID: &str = "x-request-id";

type Client = BoxCloneSyncService<http::Request<()>, http::Response<()>, BoxError>;

/// One origin call: which edge request, when it started and ended.
#[derive(Clone, Copy)]
struct Work {
    id: usize,
    start: Instant,
    end: Instant,
}

/// The origin's log.
type Log = Arc<Mutex<Vec<Work>>>;

/// The origin: 503 after 300 ms, logged (also when cut short).
async fn origin_handler(State(log): State<Log>, headers: HeaderMap) -> StatusCode {
    struct Logged {
        log: Log,
        id: usize,
        start: Instant,
    }
    impl Drop for Logged {
        fn drop(&mut self) {
            let work = Work {
                id: self.id,
                start: self.start,
                end: Instant::now(),
            };
            self.log.lock().unwrap().push(work);
        }
    }
    let id = headers
        .get(ID)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(usize::MAX);
    let _logged = Logged {
        log,
        id,
        start: Instant::now(),
    };
    tokio::time::sleep(ORIGIN_TIME).await;
    StatusCode::SERVICE_UNAVAILABLE
}

/// A hop: calls the next service (with its retries), passing the id on.
async fn hop_handler(State(client): State<(Client, String)>, headers: HeaderMap) -> StatusCode {
    let (client, next) = client;
    let mut request = http::Request::get(next).body(()).expect("a valid URI");
    if let Some(id) = headers.get(ID) {
        request.headers_mut().insert(ID, id.clone());
    }
    // The downstream call runs in a task of its own, as handlers do to
    // finish (or share) work whatever happens to their connection: a
    // caller's disconnect does not cancel it. A task-local deadline does
    // not follow a spawn: the hop hands it over.
    let call = client.oneshot(request);
    let task = match Deadline::current() {
        Some(deadline) => tokio::spawn(deadline.scope(call)),
        None => tokio::spawn(call),
    };
    match task.await {
        Ok(Ok(response)) => response.status(),
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// One HTTP call over hyper-util, the body read and dropped.
fn http() -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<()>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let hyper = origin::client();
    tower::service_fn(move |request: http::Request<()>| {
        let hyper = hyper.clone();
        async move {
            let (parts, ()) = request.into_parts();
            let response = hyper
                .request(http::Request::from_parts(parts, Empty::<Bytes>::new()))
                .await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, BoxError>(http::Response::builder().status(status).body(())?)
        }
    })
}

/// A hop's client: retries (3 attempts, full jitter from 100 ms), and with
/// `propagate` the time left sent in `grpc-timeout`.
fn client(propagate: bool, seed: u64) -> Result<Client, BoxError> {
    let http = http();
    let copy = |request: &http::Request<()>| {
        let mut copy = http::Request::new(());
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    };
    let retry = RetryLayer::new(
        RetryPolicy::builder()
            .max_attempts(ATTEMPTS)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(100))
                    .jitter(Jitter::Full)
                    .seed(seed)
                    .build()?,
            )
            .classify(HttpClassifier::new())
            .clone_requests(copy)
            .min_attempt_time(MIN_ATTEMPT)
            .build()?,
    );
    Ok(if propagate {
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(retry)
                .layer(PropagateDeadlineLayer::new().min_time(MIN_ATTEMPT))
                .service(http),
        )
    } else {
        BoxCloneSyncService::new(ServiceBuilder::new().layer(retry).service(http))
    })
}

/// Serves `router` on a free loopback port (on this runtime); returns its
/// address and the task.
async fn serve(router: axum::Router) -> Result<(String, tokio::task::JoinHandle<()>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("a hop serves");
    });
    Ok((format!("http://{addr}"), task))
}

async fn chain_run(propagate: bool, seed: u64) -> Result<Run, BoxError> {
    let log: Log = Arc::default();
    let with_deadline = |router: axum::Router| {
        if propagate {
            router.layer(ServerDeadlineLayer::new())
        } else {
            router
        }
    };
    let (origin_uri, origin_task) = serve(with_deadline(
        axum::Router::new()
            .route("/", axum::routing::get(origin_handler))
            .with_state(log.clone()),
    ))
    .await?;
    let (middle_uri, middle_task) = serve(with_deadline(
        axum::Router::new()
            .route("/", axum::routing::get(hop_handler))
            .with_state((client(propagate, seed)?, format!("{origin_uri}/"))),
    ))
    .await?;
    let (edge_uri, edge_task) = serve(with_deadline(
        axum::Router::new()
            .route("/", axum::routing::get(hop_handler))
            .with_state((client(propagate, seed + 1)?, format!("{middle_uri}/"))),
    ))
    .await?;

    // The edge's client: one attempt, given up after a second; with
    // propagation it sends the second it has.
    let edge: Client = if propagate {
        BoxCloneSyncService::new(PropagateDeadlineLayer::new().layer(http()))
    } else {
        BoxCloneSyncService::new(http())
    };
    let start = Instant::now() + LEAD;
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (edge, uri) = (edge.clone(), format!("{edge_uri}/"));
            tokio::spawn(async move {
                tokio::time::sleep_until(start + INTERVAL * i as u32).await;
                let sent = Instant::now();
                let deadline = Deadline::after(EDGE_TIMEOUT);
                let mut request = http::Request::get(uri).body(()).expect("a valid URI");
                request.headers_mut().insert(ID, i.into());
                let call = deadline.scope(edge.oneshot(request));
                let ok = matches!(
                    tokio::time::timeout(EDGE_TIMEOUT, call).await,
                    Ok(Ok(response)) if response.status().is_success()
                );
                (ok, sent.elapsed(), deadline.instant())
            })
        })
        .collect();
    let mut successes = 0;
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut deadlines = vec![start; REQUESTS];
    for (i, task) in tasks.into_iter().enumerate() {
        let (ok, latency, deadline) = task.await?;
        successes += usize::from(ok);
        latencies.push(latency);
        deadlines[i] = deadline;
    }
    latencies.sort_unstable();
    // Let every hop finish what it is still doing for nobody.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for task in [edge_task, middle_task, origin_task] {
        task.abort();
    }

    let work = log.lock().unwrap().clone();
    let after = |w: &Work| w.start >= deadlines[w.id];
    let started_after = work.iter().filter(|w| w.id < REQUESTS && after(w)).count();
    let work_after: Duration = work
        .iter()
        .filter(|w| w.id < REQUESTS)
        .map(|w| {
            w.end
                .saturating_duration_since(w.start.max(deadlines[w.id]))
        })
        .sum();
    let mut calls: Vec<Duration> = work
        .iter()
        .map(|w| w.start.saturating_duration_since(start))
        .collect();
    calls.sort_unstable();
    let window = calls
        .last()
        .copied()
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    Ok(Run {
        requests: REQUESTS,
        calls,
        successes,
        latencies,
        window,
        extra: vec![
            (
                "origin calls started after the edge gave up",
                started_after.to_string(),
            ),
            (
                "origin work after the edge gave up",
                format!("{:.1} s", work_after.as_secs_f64()),
            ),
        ],
    })
}

/// `deadline_chain`: edge → middle → origin, each hop retrying, the edge's
/// client giving up after a second.
pub async fn deadline_chain(settings: Settings) -> Result<Scenario, BoxError> {
    let naive = chain_run(false, settings.seed).await?;
    let dephase = chain_run(true, settings.seed).await?;
    Ok(Scenario {
        name: "deadline_chain",
        title: "A chain of retrying services: origin calls every 10 ms",
        description: format!(
            "{REQUESTS} requests (one every {INTERVAL:?}) to an edge service that calls a middle one that calls the origin, each from a spawned task (a disconnect does not cancel it); each hop retries ({ATTEMPTS} attempts, full jitter from 100 ms); the origin answers 503 after {ORIGIN_TIME:?}. The edge's client gives up after {EDGE_TIMEOUT:?}. naive: no deadline travels. dephase: the client sends its second in grpc-timeout; each hop's ServerDeadline bounds its handler and its PropagateDeadline sends what is left; no attempt starts with less than {MIN_ATTEMPT:?} left."
        ),
        outage: Duration::ZERO,
        capacity: None,
        naive,
        dephase,
        variants: Vec::new(),
    })
}

//! The origin every scenario calls: an axum server on `127.0.0.1:0`, on its
//! own thread and runtime (as a server in another process would be), that
//! records when each request arrived. Its outages are rehearsed with
//! dephase's own [`FaultLayer`], as a user would rehearse one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dephase::BoxError;
use dephase::fault::error::Injected;
use dephase::fault::{FaultLayer, Faults, Outage, Plan};
use dephase::measure::Recorder;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// Requests `/work` serves at once; the rest get 503 + `Retry-After: 1`.
pub const CAPACITY: usize = 32;
/// How long `/work` takes for a request it accepts.
pub const SERVICE_TIME: Duration = Duration::from_millis(25);
/// How long `/report` takes to recompute (it has no capacity limit).
pub const RECOMPUTE: Duration = Duration::from_millis(50);

/// `/tail`: the share of requests (per mille) that take [`TAIL_SLOW`]; the
/// rest take [`TAIL_FAST`].
pub const TAIL_SLOW_PER_MILLE: u64 = 50;
/// A slow `/tail` request.
pub const TAIL_SLOW: Duration = Duration::from_millis(500);
/// A fast `/tail` request.
pub const TAIL_FAST: Duration = Duration::from_millis(5);
/// Every `/overloaded` request.
pub const OVERLOADED: Duration = Duration::from_millis(200);
/// `/capacity`: requests served at once, except ...
pub const HIGH_CAPACITY: usize = 64;
/// ... between [`DROP_FROM`] and [`DROP_UNTIL`] after the origin started.
pub const LOW_CAPACITY: usize = 16;
/// When `/capacity` drops to [`LOW_CAPACITY`].
pub const DROP_FROM: Duration = Duration::from_secs(2);
/// When it is back to [`HIGH_CAPACITY`].
pub const DROP_UNTIL: Duration = Duration::from_secs(5);
/// How long a `/capacity` request takes once it has a slot.
pub const CAPACITY_TIME: Duration = Duration::from_millis(50);

struct State_ {
    capacity: Semaphore,
    calls: Recorder,
    /// `/tail` requests so far: request `n` is slow by a fixed hash of `n`.
    tail: std::sync::atomic::AtomicU64,
    /// `/capacity`'s slots outside and inside the drop, and its start.
    high: Semaphore,
    low: Semaphore,
    start: Instant,
}

async fn work(State(origin): State<Arc<State_>>) -> Response {
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

async fn report(State(origin): State<Arc<State_>>) -> Response {
    origin.calls.mark();
    tokio::time::sleep(RECOMPUTE).await;
    (StatusCode::OK, "the daily report").into_response()
}

/// How long the `n`-th `/tail` request takes: slow for 5% of them, by a
/// fixed hash (SplitMix64) of `n`, so that every run sees the same tail.
fn tail_time(n: u64) -> Duration {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z % 1000 < TAIL_SLOW_PER_MILLE {
        TAIL_SLOW
    } else {
        TAIL_FAST
    }
}

/// `/tail`: 5 ms, or 500 ms for one request in twenty. Recorded.
async fn tail(State(origin): State<Arc<State_>>) -> Response {
    origin.calls.mark();
    let n = origin
        .tail
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(tail_time(n)).await;
    (StatusCode::OK, "done").into_response()
}

/// `/tail/warm`: the same, not recorded (the clients learn their latency
/// estimate on it before the measured run).
async fn tail_warm(State(origin): State<Arc<State_>>) -> Response {
    let n = origin
        .tail
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(tail_time(n)).await;
    (StatusCode::OK, "done").into_response()
}

/// `/capacity`: 64 at a time (16 between 2 s and 5 s after the origin
/// started), 50 ms each; the rest wait their turn (the latency grows, as a
/// saturated server's does). Recorded.
async fn capacity(State(origin): State<Arc<State_>>) -> Response {
    origin.calls.mark();
    let since = origin.start.elapsed();
    let slots = if (DROP_FROM..DROP_UNTIL).contains(&since) {
        &origin.low
    } else {
        &origin.high
    };
    let _slot = slots
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::time::sleep(CAPACITY_TIME).await;
    (StatusCode::OK, "done").into_response()
}

/// `/overloaded`: every request takes 200 ms. Recorded.
async fn overloaded(State(origin): State<Arc<State_>>) -> Response {
    origin.calls.mark();
    tokio::time::sleep(OVERLOADED).await;
    (StatusCode::OK, "done").into_response()
}

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    calls: Recorder,
    stop: Arc<Notify>,
    thread: std::thread::JoinHandle<()>,
}

impl Origin {
    /// Listens on a port now; until `start + outage` a [`FaultLayer`] in
    /// front of the routes answers every request `503` without
    /// `Retry-After` (the origin is down; its front door is not), then it
    /// serves. Arrival times at the routes are recorded from `start`.
    pub fn start(start: Instant, outage: Duration) -> Result<Origin, BoxError> {
        // The outage is timed from the handle's start, now: it begins at
        // `start` (a few microseconds early, never late).
        let faults = Faults::seeded(Plan::none(), 0);
        if !outage.is_zero() {
            let from = start.saturating_duration_since(Instant::now());
            faults.set(
                Plan::builder()
                    .outage(from..from + outage, Outage::Fail)?
                    .build(),
            );
        }
        let calls = Recorder::starting_at(start);
        let state = Arc::new(State_ {
            capacity: Semaphore::new(CAPACITY),
            calls: calls.clone(),
            tail: std::sync::atomic::AtomicU64::new(0),
            high: Semaphore::new(HIGH_CAPACITY),
            low: Semaphore::new(LOW_CAPACITY),
            start,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let app = axum::Router::new()
            .route("/work", axum::routing::get(work))
            .route("/report", axum::routing::get(report))
            .route("/tail", axum::routing::get(tail))
            .route("/tail/warm", axum::routing::get(tail_warm))
            .route("/overloaded", axum::routing::get(overloaded))
            .route("/capacity", axum::routing::get(capacity))
            .with_state(state)
            .layer(
                tower::ServiceBuilder::new()
                    // The routes never fail: only the fault layer's own
                    // errors could reach this, and it answers instead.
                    .layer(axum::error_handling::HandleErrorLayer::new(
                        |_: BoxError| async { StatusCode::INTERNAL_SERVER_ERROR },
                    ))
                    .layer(FaultLayer::new(faults).respond_with(|_: &Injected| {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    })),
            );
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        // The port listens before this returns, so that no client can race
        // the origin thread to it.
        let listener = {
            let _runtime = runtime.enter();
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind("127.0.0.1:0".parse()?)?;
            socket.listen(4096)?
        };
        let addr = listener.local_addr()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stopped.notified().await })
                    .await
                    .expect("the origin serves");
            });
        });
        Ok(Origin {
            addr,
            calls,
            stop,
            thread,
        })
    }

    /// `http://<addr><path>`.
    pub fn uri(&self, path: &str) -> Uri {
        format!("http://{}{path}", self.addr)
            .parse()
            .expect("a valid URI")
    }

    /// Stops the origin; returns the arrival times of the requests it got.
    pub fn stop(self) -> Result<Vec<Duration>, BoxError> {
        self.stop.notify_one();
        self.thread
            .join()
            .map_err(|_| "the origin thread panicked")?;
        Ok(self.calls.times())
    }
}

/// The clients' HTTP client.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A new hyper-util client.
pub fn client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// One GET: the status and `Retry-After` (seconds), the body read.
pub async fn get(
    client: &HttpClient,
    uri: Uri,
) -> Result<(StatusCode, Option<Duration>), BoxError> {
    let response = client.get(uri).await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(Duration::from_secs);
    response.into_body().collect().await?;
    Ok((status, retry_after))
}

//! Faults against a real loopback server: the origin is stopped mid-run
//! (its port refuses connections) and started again on the same port, while
//! twenty clients — each a hyper-util client behind its own retry (shared
//! budget, deadline) and circuit breaker, as twenty processes would be —
//! keep calling it.
//!
//! Real sockets run on the real clock, so this test takes about four
//! seconds; its assertions are on counts and on generous bounds (a request
//! must resolve within its deadline plus a second), never on exact timing.
#![cfg(feature = "http")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::{Breaker, State};
use dephase::budget::RatioBudget;
use dephase::http::{HttpClassifier, IdempotentRequests};
use dephase::measure::Spread;
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::{BoxError, CircuitBreakerLayer};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const CLIENTS: usize = 20;
/// Requests each client sends per second.
const RATE: u64 = 40;
const UP_FIRST: Duration = Duration::from_millis(1000);
const DOWN: Duration = Duration::from_millis(1500);
const UP_AGAIN: Duration = Duration::from_millis(1500);
const DEADLINE: Duration = Duration::from_secs(2);

/// Serves `/` on `addr` until `stop` is notified.
async fn serve(addr: SocketAddr, stop: Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the origin's port (again)");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.notified().await })
            .await
            .expect("serve");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_resolves_through_an_outage_and_breakers_probe_apart() {
    // The origin, on a port we keep.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = serve(addr, stop.clone()).await;

    let budget = RatioBudget::builder()
        .ratio(0.2)
        .min_per_sec(50)
        .build()
        .unwrap();
    let breakers: Vec<Breaker> = (0..CLIENTS)
        .map(|i| {
            Breaker::builder()
                .failure_rate(0.5)
                .minimum_calls(10)
                .window(Duration::from_millis(500))
                .open_time(
                    ExponentialBackoff::builder()
                        .base(Duration::from_millis(200))
                        .cap(Duration::from_secs(1))
                        .jitter(Jitter::Equal)
                        .seed(i as u64)
                        .build()
                        .unwrap(),
                )
                .half_open_probes(2)
                .build()
                .unwrap()
        })
        .collect();

    let started = Instant::now();
    let (sent, resolved, ok) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    // Successes after the restart, to measure the time to recover.
    let successes = Arc::new(Mutex::new(Vec::<Duration>::new()));

    // A monitor: when each breaker is first seen open, and when it will
    // admit its first probes. (The half-open state itself is entered at the
    // next call after that, and the clients' calls are evenly timed, so
    // observing it would measure the clients, not the breakers.)
    type Seen = Vec<(Option<Duration>, Option<Duration>)>;
    let seen: Arc<Mutex<Seen>> = Arc::new(Mutex::new(vec![(None, None); CLIENTS]));
    let monitor = {
        let (breakers, seen) = (breakers.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let now = started.elapsed();
                {
                    let mut seen = seen.lock().unwrap();
                    for (breaker, (opened, half_open)) in breakers.iter().zip(seen.iter_mut()) {
                        // When it opened, and when it will let its first
                        // probes in (its jittered open time).
                        if breaker.state() == State::Open && opened.is_none() {
                            *opened = Some(now);
                            *half_open = Some(now + breaker.retry_after().unwrap_or_default());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let total = UP_FIRST + DOWN + UP_AGAIN;
    let clients: Vec<_> = breakers
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, breaker)| {
            let policy = RetryPolicy::builder()
                .max_attempts(3)
                .backoff(
                    ExponentialBackoff::builder()
                        .base(Duration::from_millis(50))
                        .cap(Duration::from_millis(500))
                        .jitter(Jitter::Full)
                        .seed(100 + i as u64)
                        .build()
                        .unwrap(),
                )
                .budget(budget.clone())
                .deadline(DEADLINE)
                .classify(HttpClassifier::new())
                .clone_requests(IdempotentRequests::new())
                .build()
                .unwrap();
            let service = ServiceBuilder::new()
                .layer(RetryLayer::new(policy))
                .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::new()))
                .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
            let (sent, resolved, ok, slowest, successes) = (
                sent.clone(),
                resolved.clone(),
                ok.clone(),
                slowest.clone(),
                successes.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
                let mut requests = Vec::new();
                while started.elapsed() < total {
                    tick.tick().await;
                    let service = service.clone();
                    let (resolved, ok, slowest, successes) = (
                        resolved.clone(),
                        ok.clone(),
                        slowest.clone(),
                        successes.clone(),
                    );
                    sent.fetch_add(1, Ordering::SeqCst);
                    requests.push(tokio::spawn(async move {
                        let at = Instant::now();
                        let request = http::Request::get(format!("http://{addr}/"))
                            .body(Empty::new())
                            .unwrap();
                        let result: Result<_, BoxError> = service.oneshot(request).await;
                        let took = at.elapsed();
                        // A response or a typed error: either way, resolved.
                        resolved.fetch_add(1, Ordering::SeqCst);
                        if let Ok(response) = result {
                            if response.status().is_success() {
                                let _ = response.into_body().collect().await;
                                ok.fetch_add(1, Ordering::SeqCst);
                                successes.lock().unwrap().push(started.elapsed());
                            }
                        }
                        let mut slowest = slowest.lock().unwrap();
                        *slowest = (*slowest).max(took);
                    }));
                }
                for request in requests {
                    request.await.unwrap();
                }
            })
        })
        .collect();

    // The outage: stop the origin, then start it again on the same port.
    tokio::time::sleep(UP_FIRST).await;
    stop.notify_one();
    server.await.unwrap();
    let outage_began = started.elapsed();
    tokio::time::sleep(DOWN).await;
    let restarted_at = started.elapsed();
    let server = serve(addr, Arc::new(tokio::sync::Notify::new())).await;

    for client in clients {
        client.await.unwrap();
    }
    monitor.abort();
    server.abort();

    // Every request resolved, none later than its deadline plus a second.
    let (sent, resolved, ok) = (
        sent.load(Ordering::SeqCst),
        resolved.load(Ordering::SeqCst),
        ok.load(Ordering::SeqCst),
    );
    assert_eq!(sent, resolved, "every request resolves");
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest <= DEADLINE + Duration::from_secs(1),
        "slowest {slowest:?}"
    );

    // Every breaker opened during the outage, and their first probes after
    // opening did not all come at once.
    let seen = seen.lock().unwrap().clone();
    for (i, (opened, _)) in seen.iter().enumerate() {
        let opened = opened.unwrap_or_else(|| panic!("breaker {i} never opened"));
        assert!(
            opened >= outage_began && opened < restarted_at + Duration::from_millis(500),
            "breaker {i} opened at {opened:?}"
        );
    }
    let probes: Vec<Duration> = seen.iter().filter_map(|(_, h)| *h).collect();
    assert!(
        probes.len() >= CLIENTS / 2,
        "{} breakers probed",
        probes.len()
    );
    let spread = Spread::by_width(&probes, Duration::from_millis(10)).unwrap();
    assert!(
        spread.peak() <= probes.len() / 2,
        "probes: {:?}",
        spread.buckets()
    );

    // Time to recover: from the restart to the first 50 ms in which at
    // least 90% of the expected successes came back.
    let mut after: Vec<Duration> = successes
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t >= restarted_at)
        .collect();
    after.sort();
    let per_50ms = (CLIENTS as u64 * RATE / 20) as usize;
    let recovered = after
        .windows(per_50ms * 9 / 10)
        .find(|w| w[w.len() - 1] - w[0] <= Duration::from_millis(50))
        .map(|w| w[0] - restarted_at);
    eprintln!(
        "faults: {sent} requests, all resolved ({ok} ok), slowest {slowest:?}; breakers opened {:?}..{:?}; first probes of {} breakers spread over {:?} (peak {} per 10 ms); recovered {recovered:?} after the restart",
        seen.iter().filter_map(|s| s.0).min(),
        seen.iter().filter_map(|s| s.0).max(),
        probes.len(),
        probes
            .iter()
            .max()
            .zip(probes.iter().min())
            .map(|(a, b)| *a - *b),
        spread.peak(),
    );
    assert!(recovered.is_some(), "traffic came back after the restart");
}

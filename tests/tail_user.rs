#![cfg(all(feature = "http", feature = "axum"))]
//! A new user's two programs (a client stack, an axum server calling it), written from the README section "The tail:
//! hedged requests under a budget, deadlines that travel" and the rustdoc
//! of `dephase::hedge` and `dephase::deadline`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dephase::BoxError;
use dephase::budget::RatioBudget;
use dephase::deadline::{Deadline, PropagateDeadlineLayer, ServerDeadlineLayer, parse_timeout};
use dephase::hedge::{HedgeLayer, HedgePolicy};
use dephase::http::{HttpClassifier, IdempotentRequests};
use dephase::{Breaker, CircuitBreakerLayer, RetryLayer, RetryPolicy};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

type Req = http::Request<Full<Bytes>>;
type Res = http::Response<Full<Bytes>>;

/// What the fake backend saw: one entry per call.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    grpc_timeout: Option<Duration>,
    #[allow(dead_code)]
    at: Instant,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    fn calls_for(&self, prefix: &str) -> usize {
        self.all()
            .iter()
            .filter(|s| s.id.starts_with(prefix))
            .count()
    }
    /// Calls beyond the first per request id: the hedges (no retries are
    /// expected in these tests: every answer is a 200).
    fn extra_calls_for(&self, prefix: &str) -> usize {
        let mut per_id: HashMap<String, usize> = HashMap::new();
        for s in self.all().iter().filter(|s| s.id.starts_with(prefix)) {
            *per_id.entry(s.id.clone()).or_default() += 1;
        }
        per_id.values().map(|n| n - 1).sum()
    }
}

/// A backend that answers in 10 ms, except:
/// - `slow-*`: the first call with that id takes 2 s (a copy is fast);
/// - `all-*`: every call takes 500 ms (an overloaded backend);
/// - `work-*`: every call takes 300 ms.
fn backend(
    log: Log,
) -> impl Service<Req, Response = Res, Error = BoxError, Future: Send> + Clone + Send + Sync + 'static
{
    tower::service_fn(move |request: Req| {
        let log = log.clone();
        async move {
            let id = request
                .headers()
                .get("x-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let grpc_timeout = request
                .headers()
                .get("grpc-timeout")
                .and_then(parse_timeout);
            let first = {
                let mut seen = log.0.lock().unwrap();
                let first = !seen.iter().any(|s| s.id == id);
                seen.push(Seen {
                    id: id.clone(),
                    grpc_timeout,
                    at: Instant::now(),
                });
                first
            };
            let delay = if id.starts_with("slow") && first {
                Duration::from_secs(2)
            } else if id.starts_with("all") {
                Duration::from_millis(500)
            } else if id.starts_with("work") {
                Duration::from_millis(300)
            } else {
                Duration::from_millis(10)
            };
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from(id))))
        }
    })
}

fn get(id: &str) -> Req {
    http::Request::get("http://backend/item")
        .header("x-id", id)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

struct Client<S> {
    service: S,
    budget: RatioBudget,
    hedge: HedgeLayer<HttpClassifier, IdempotentRequests, RatioBudget, Breaker>,
    log: Log,
}

/// The README's stack, with a fake backend instead of hyper's client.
fn client(
    ratio: f64,
) -> Result<
    Client<
        impl Service<Req, Response = Res, Error = BoxError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static,
    >,
    BoxError,
> {
    client_with(RatioBudget::builder().ratio(ratio).min_per_sec(0).build()?)
}

fn client_with(
    budget: RatioBudget,
) -> Result<
    Client<
        impl Service<Req, Response = Res, Error = BoxError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static,
    >,
    BoxError,
> {
    let log = Log::default();
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .build()?;
    let retry = RetryPolicy::builder()
        .budget(budget.clone())
        .min_attempt_time(Duration::from_millis(20))
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()?;
    let hedge = HedgeLayer::new(
        HedgePolicy::builder()
            .percentile(0.9)
            .window(Duration::from_secs(1))
            .min_samples(20)
            .shared_budget(budget.clone())
            .gate(breaker.clone())
            .classify(HttpClassifier::new())
            .clone_requests(IdempotentRequests::new())
            .seed(7)
            .build()?,
    );
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(retry))
        .layer(hedge.clone())
        .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::new()))
        .layer(PropagateDeadlineLayer::new())
        .service(backend(log.clone()));
    Ok(Client {
        service,
        budget,
        hedge,
        log,
    })
}

/// Warms up the hedge's estimate: 30 fast calls, then a window passes,
/// then one more call (a window ends when a latency is recorded after it).
async fn warm_up<S>(client: &mut Client<S>) -> Result<(), BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    for i in 0..30 {
        client
            .service
            .ready()
            .await?
            .call(get(&format!("warm-{i}")))
            .await?;
    }
    assert_eq!(
        client.hedge.policy().estimate(),
        None,
        "no window has ended yet"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The window has passed in time, but it only "ends" when a latency is
    // recorded after it (`HedgePolicyBuilder::window`).
    assert_eq!(
        client.hedge.policy().estimate(),
        None,
        "still none: no latency recorded since"
    );
    client.service.ready().await?.call(get("warm-last")).await?;
    assert!(client.hedge.policy().estimate().is_some());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_client_hedges_a_slow_request_within_the_budget() -> Result<(), BoxError> {
    let mut client = client(0.1)?;
    warm_up(&mut client).await?;

    let estimate = client
        .hedge
        .policy()
        .estimate()
        .expect("an estimate after the warm-up");
    // 10 ms calls; the estimate errs late by at most a 6.25% bucket.
    assert!(
        estimate >= Duration::from_millis(10) && estimate <= Duration::from_millis(11),
        "{estimate:?}"
    );
    assert_eq!(
        client.log.extra_calls_for("warm"),
        0,
        "nothing hedged during the warm-up"
    );

    // A slow request: the original is stuck for 2 s, the hedge answers.
    let granted_before = client.budget.stats().granted;
    let start = Instant::now();
    let response = client.service.ready().await?.call(get("slow-1")).await?;
    let took = start.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(
        client.log.calls_for("slow-1"),
        2,
        "the original and one hedge"
    );
    // The hedge was due after the estimate plus up to 20% jitter, and took 10 ms.
    assert!(took >= estimate + Duration::from_millis(10), "{took:?}");
    assert!(
        took <= estimate.mul_f64(1.2) + Duration::from_millis(11),
        "{took:?}"
    );
    assert_eq!(
        client.budget.stats().granted,
        granted_before + 1,
        "the hedge was paid for"
    );

    // An overloaded backend: every call is slow, 40 requests at once. Every
    // one of them is due a hedge; the budget pays for at most 10% of the
    // requests it has seen (30 + 1 + 1 warm-up/slow, + 40 now = 72 → 7),
    // one of which the slow request above already spent.
    let deposits = 30 + 1 + 1 + 40;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let service = client.service.clone();
        tasks.spawn(async move { service.oneshot(get(&format!("all-{i}"))).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result??.status(), 200);
    }
    let hedges = client.log.extra_calls_for("all");
    let stats = client.budget.stats();
    let bound = (deposits as f64 * 0.1).floor() as u64;
    println!("overloaded: {hedges} hedges for 40 requests; budget {stats:?}");
    assert!(stats.granted <= bound, "{stats:?} > {bound}");
    assert_eq!(
        hedges as u64 + 1,
        stats.granted,
        "every hedge sent was granted, and only those"
    );
    assert!(hedges < 40 / 4, "the budget bounds the hedges: {hedges}");
    assert!(stats.denied > 0, "the rest were refused: {stats:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_client_honours_the_deadline_in_scope() -> Result<(), BoxError> {
    let mut client = client(0.5)?;
    warm_up(&mut client).await?;
    let estimate = client.hedge.policy().estimate().expect("an estimate");

    // A 15 ms deadline around `oneshot` (as the PropagateDeadlineLayer
    // example does): the 2 s original is cut short with DeadlineExceeded.
    let start = Instant::now();
    let result = Deadline::after(Duration::from_millis(15))
        .scope(client.service.clone().oneshot(get("slow-deadline")))
        .await;
    let error = result.expect_err("the deadline passes before the 2 s original");
    assert!(
        error
            .downcast_ref::<dephase::deadline::DeadlineExceeded>()
            .is_some(),
        "expected DeadlineExceeded, got {error:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(15));
    // The hedge was due at ~estimate..1.2×estimate (< 15 ms), with a few ms
    // left: the hedge layer's own min_attempt_time is zero by default (the
    // retry's 20 ms does not apply to it), so the hedge is sent anyway.
    let calls = client.log.calls_for("slow-deadline");
    println!("deadline 15 ms, estimate {estimate:?}: {calls} calls");
    assert_eq!(calls, 2, "a hedge with only a few ms left is still sent");

    // The same deadline around `ready().await?.call(..)`: the call is made
    // before the scope is entered (the pitfall `Deadline::scope` warns
    // of), so the original goes without the deadline; the hedge, sent from
    // inside the scope, carries it and fails at the deadline with a fatal
    // `DeadlineExceeded`, which answers at once (gRFC A6: a fatal status
    // cancels the other copies).
    let start = Instant::now();
    let result = Deadline::after(Duration::from_millis(15))
        .scope(client.service.ready().await?.call(get("slow-call")))
        .await;
    let took = start.elapsed();
    println!(
        "scope(call(..)): {:?} after {took:?}",
        result.as_ref().map(|r| r.status())
    );
    let error = result.expect_err("the hedge's DeadlineExceeded answers");
    assert!(
        error
            .downcast_ref::<dephase::deadline::DeadlineExceeded>()
            .is_some()
    );
    assert_eq!(took, Duration::from_millis(15));
    let calls: Vec<Seen> = client
        .log
        .all()
        .into_iter()
        .filter(|s| s.id == "slow-call")
        .collect();
    println!("scope(call(..)) calls: {calls:?}");
    // The original (made by `call`, outside the scope) carries no
    // grpc-timeout; the hedge (sent from inside the future, so inside the
    // scope) does.
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].grpc_timeout, None,
        "no grpc-timeout on the original"
    );
    assert!(calls[1].grpc_timeout.is_some(), "the hedge carries one");
    Ok(())
}

/// The README's budget (`ratio(0.05)`, "5% of requests, plus 10 a second")
/// on a quiet client: its reserve is `min_per_sec · ttl` = 100 withdrawals
/// available at once, so a burst of 40 slow requests is hedged in full.
#[tokio::test(start_paused = true)]
async fn a_readme_budget_hedges_a_whole_burst_on_a_quiet_client() -> Result<(), BoxError> {
    let mut client = client_with(RatioBudget::builder().ratio(0.05).build()?)?;
    warm_up(&mut client).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let service = client.service.clone();
        tasks.spawn(async move { service.oneshot(get(&format!("all-{i}"))).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result??.status(), 200);
    }
    let hedges = client.log.extra_calls_for("all");
    println!(
        "README budget, burst of 40 slow requests: {hedges} hedges; {:?}",
        client.budget.stats()
    );
    assert_eq!(hedges, 40);
    Ok(())
}

/// The full type of the README's stack can be named (over a boxed backend).
#[allow(dead_code)]
type NamedClient<S> = dephase::Retry<
    dephase::hedge::Hedge<
        dephase::breaker::CircuitBreaker<dephase::deadline::PropagateDeadline<S>, HttpClassifier>,
        HttpClassifier,
        IdempotentRequests,
        RatioBudget,
        Breaker,
    >,
    HttpClassifier,
    IdempotentRequests,
    RatioBudget,
>;

#[test]
fn the_stack_type_can_be_named() -> Result<(), BoxError> {
    fn assert_service<T: Service<Req, Response = Res, Error = BoxError> + Clone + Send + Sync>(
        _: &T,
    ) {
    }
    let budget = RatioBudget::builder().build()?;
    let breaker = Breaker::builder().build()?;
    let named: NamedClient<tower::util::BoxCloneSyncService<Req, Res, BoxError>> =
        ServiceBuilder::new()
            .layer(RetryLayer::new(
                RetryPolicy::builder()
                    .budget(budget.clone())
                    .classify(HttpClassifier::new())
                    .clone_requests(IdempotentRequests::new())
                    .build()?,
            ))
            .layer(HedgeLayer::new(
                HedgePolicy::builder()
                    .shared_budget(budget)
                    .gate(breaker.clone())
                    .classify(HttpClassifier::new())
                    .clone_requests(IdempotentRequests::new())
                    .build()?,
            ))
            .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::new()))
            .layer(PropagateDeadlineLayer::new())
            .service(tower::util::BoxCloneSyncService::new(backend(
                Log::default(),
            )));
    assert_service(&named);
    Ok(())
}

// ---------------------------------------------------------------------------
// (b) an axum server whose handler calls the client above.

type Handled = Arc<Mutex<Vec<(String, Option<Duration>)>>>;

/// The app: `/proxy/{id}` calls the client (a 502 for its errors when
/// `naive`, else `dephase::axum::error_response`); `/work` works 300 ms
/// without calling anybody.
fn app<S>(service: S, handled: Handled, naive: bool) -> Result<axum::Router, BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError, Future: Send> + Clone + Send + Sync + 'static,
{
    use axum::extract::Path;
    use axum::response::IntoResponse;
    use axum::routing::get as route_get;

    let seen = handled.clone();
    let proxy = move |Path(id): Path<String>| {
        let service = service.clone();
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((id.clone(), Deadline::current().map(Deadline::remaining)));
            // Some work of our own before the call.
            tokio::time::sleep(Duration::from_millis(5)).await;
            match service.oneshot(get(&id)).await {
                Ok(response) => (
                    http::StatusCode::OK,
                    collect_string(response.into_body()).await,
                )
                    .into_response(),
                Err(error) if naive => {
                    (http::StatusCode::BAD_GATEWAY, error.to_string()).into_response()
                }
                Err(error) => dephase::axum::error_response(error),
            }
        }
    };
    let seen = handled;
    let work = move || {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push((
                "work".to_owned(),
                Deadline::current().map(Deadline::remaining),
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }
    };
    Ok(axum::Router::new()
        .route("/proxy/{id}", route_get(proxy))
        .route("/work", route_get(work))
        .layer(ServerDeadlineLayer::new().max(Duration::from_secs(10))?))
}

fn handler_saw(handled: &Handled, id: &str) -> Option<Duration> {
    handled
        .lock()
        .unwrap()
        .iter()
        .find(|(i, _)| i == id)
        .expect("the handler ran")
        .1
}

async fn body_of(response: axum::response::Response) -> String {
    use http_body_util::BodyExt;
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(start_paused = true)]
async fn b_server_deadline_reaches_the_handler_and_the_backend() -> Result<(), BoxError> {
    use axum::body::Body;

    let mut client = client(0.1)?;
    warm_up(&mut client).await?;
    let handled = Handled::default();
    let app = app(client.service.clone(), handled.clone(), false)?;

    // 1. One second left: the handler sees it, the backend sees less.
    let request = http::Request::get("/proxy/fast-1")
        .header("grpc-timeout", "1S")
        .body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    assert_eq!(response.status(), 200);
    let in_handler = handler_saw(&handled, "fast-1").expect("Deadline::current() in the handler");
    assert_eq!(in_handler, Duration::from_secs(1));
    let sent = client
        .log
        .all()
        .into_iter()
        .find(|s| s.id == "fast-1")
        .unwrap();
    let sent = sent.grpc_timeout.expect("the backend got a grpc-timeout");
    println!("handler saw {in_handler:?}, backend got grpc-timeout {sent:?}");
    assert!(sent < Duration::from_secs(1), "{sent:?}");
    assert_eq!(
        sent,
        in_handler - Duration::from_millis(5),
        "the handler's own 5 ms are gone"
    );

    // 2. 100 ms left, and the handler's own work takes 300 ms: 504.
    let start = Instant::now();
    let request = http::Request::get("/work")
        .header("grpc-timeout", "100m")
        .body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    assert_eq!(response.status(), 504);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        handler_saw(&handled, "work"),
        Some(Duration::from_millis(100))
    );
    println!("/work: 504 with body {:?}", body_of(response).await);

    // 3. 100 ms left, and the backend takes 300 ms: 504 too, and the
    //    backend was told less than 100 ms.
    let start = Instant::now();
    let request = http::Request::get("/proxy/work-1")
        .header("grpc-timeout", "100m")
        .body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    assert_eq!(response.status(), 504);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    println!("/proxy/work-1: 504 with body {:?}", body_of(response).await);
    let sent = client
        .log
        .all()
        .into_iter()
        .find(|s| s.id == "work-1")
        .unwrap();
    let sent = sent.grpc_timeout.expect("the backend got a grpc-timeout");
    assert_eq!(sent, Duration::from_millis(95));

    // 4. No header: no deadline in the handler, none sent.
    let request = http::Request::get("/proxy/fast-2").body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(handler_saw(&handled, "fast-2"), None);
    let sent = client
        .log
        .all()
        .into_iter()
        .find(|s| s.id == "fast-2")
        .unwrap();
    assert_eq!(sent.grpc_timeout, None);

    // 5. A header above the server's maximum is capped at 10 s.
    let request = http::Request::get("/proxy/fast-3")
        .header("grpc-timeout", "1H")
        .body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        handler_saw(&handled, "fast-3"),
        Some(Duration::from_secs(10))
    );

    // 6. A malformed header is ignored: no deadline.
    let request = http::Request::get("/proxy/fast-4")
        .header("grpc-timeout", "-5m")
        .body(Body::empty())?;
    let response = app.oneshot(request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(handler_saw(&handled, "fast-4"), None);
    Ok(())
}

/// A handler that maps its client's errors itself (here to a 502): the
/// client's `PropagateDeadline` fails the call with `DeadlineExceeded` at
/// the very instant the server's deadline passes, and the server layer,
/// which looks at its deadline first, answers 504 all the same.
#[tokio::test(start_paused = true)]
async fn b_a_handler_answering_at_the_deadline_is_answered_504() -> Result<(), BoxError> {
    use axum::body::Body;

    let mut client = client(0.1)?;
    warm_up(&mut client).await?;
    let app = app(client.service.clone(), Handled::default(), true)?;
    let start = Instant::now();
    let request = http::Request::get("/proxy/work-2")
        .header("grpc-timeout", "100m")
        .body(Body::empty())?;
    let response = app.oneshot(request).await?;
    let status = response.status();
    println!(
        "naive handler: {status} after {:?}, body {:?}",
        start.elapsed(),
        body_of(response).await
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(status, 504);
    Ok(())
}

async fn collect_string(body: Full<Bytes>) -> String {
    use http_body_util::BodyExt;
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Does a caller's deadline count against the backend's health? The
/// `PropagateDeadlineLayer` is below the breaker (as in the README), and
/// `HttpClassifier` calls "any other error" a breaker failure.
#[tokio::test(start_paused = true)]
async fn a_refused_deadline_and_the_breaker() -> Result<(), BoxError> {
    let breaker = Breaker::builder().consecutive_failures(3).build()?;
    let service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::new()))
        .layer(PropagateDeadlineLayer::new().min_time(Duration::from_millis(50)))
        .service(backend(Log::default()));
    for i in 0..3 {
        // 10 ms left, 50 ms needed: refused before it is sent.
        let error = Deadline::after(Duration::from_millis(10))
            .scope(service.clone().oneshot(get(&format!("x-{i}"))))
            .await
            .expect_err("refused");
        let exceeded = error
            .downcast_ref::<dephase::deadline::DeadlineExceeded>()
            .expect("DeadlineExceeded");
        assert!(!exceeded.was_sent());
    }
    println!(
        "after 3 refusals by the caller's deadline: {:?}",
        breaker.stats()
    );
    assert_eq!(
        breaker.stats().openings,
        0,
        "refusals are not the backend's failures"
    );
    for i in 0..3 {
        // 100 ms left, the backend takes 300 ms: sent, then dropped.
        let error = Deadline::after(Duration::from_millis(100))
            .scope(service.clone().oneshot(get(&format!("work-b{i}"))))
            .await
            .expect_err("dropped");
        let exceeded = error
            .downcast_ref::<dephase::deadline::DeadlineExceeded>()
            .expect("DeadlineExceeded");
        assert!(exceeded.was_sent());
    }
    println!(
        "after 3 calls cut short by the caller's deadline: {:?}",
        breaker.stats()
    );
    let healthy = service.clone().oneshot(get("fast-after")).await;
    println!(
        "next call without deadline: {:?}",
        healthy
            .as_ref()
            .map(|r| r.status())
            .map_err(|e| e.to_string())
    );
    Ok(())
}

#[test]
fn how_http_classifier_sees_deadline_exceeded() {
    use dephase::classify::Classify;
    // A DeadlineExceeded as it comes out of the stack: a BoxError. I can
    // not construct one myself (no public constructor), so take one from a
    // paused runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let error: BoxError = rt.block_on(async {
        let service = ServiceBuilder::new()
            .layer(PropagateDeadlineLayer::new())
            .service(backend(Log::default()));
        Deadline::after(Duration::ZERO)
            .scope(service.oneshot(get("x")))
            .await
            .expect_err("refused")
    });
    let outcome = Classify::<Res, BoxError>::classify(&HttpClassifier::new(), Err(&error));
    println!("HttpClassifier on DeadlineExceeded: {outcome:?}");
}

/// The README's example, pasted as a user would (hyper-util's client).
#[tokio::test]
async fn the_readme_example_builds() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use dephase::hedge::{HedgeLayer, HedgePolicy};
    use dephase::{Breaker, CircuitBreakerLayer, RatioBudget, RetryLayer, RetryPolicy};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let budget = RatioBudget::builder().ratio(0.05).build()?;
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .build()?;
    let retry = RetryPolicy::builder()
        .budget(budget.clone())
        .min_attempt_time(Duration::from_millis(20))
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()?;
    let hedge = HedgePolicy::builder()
        .percentile(0.95)
        .shared_budget(budget)
        .gate(breaker.clone())
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()?;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(retry))
        .layer(HedgeLayer::new(hedge))
        .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::new()))
        .layer(PropagateDeadlineLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let app: axum::Router = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(ServerDeadlineLayer::new().max(Duration::from_secs(10))?);
    fn clone_send_sync<T: Clone + Send + Sync + 'static>(_: &T) {}
    clone_send_sync(&client);
    let _ = (client, app);
    Ok(())
}

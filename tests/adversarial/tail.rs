//! The hedge and deadline layers attacked: copies that never got sent,
//! fatal failures, gRFC A6's booking of every failed copy, expired and
//! zero deadlines, scopes built in one place and awaited in another,
//! overflow on huge settings. Each was found failing (or probed and held)
//! by an adversarial review; the names say what holds now.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dephase::budget::{RetryBudget, TokenBucket};
use dephase::classify::Outcome;
use dephase::deadline::{
    Deadline, DeadlineExceeded, PropagateDeadlineLayer, ServerDeadlineLayer, parse_timeout,
};
use dephase::hedge::{Hedge, HedgePolicy, HedgePolicyBuilder};
use dephase::pace::{PaceLayer, Pacer, Quota};
use http::HeaderValue;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::support;

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// A scripted backend (as in tests/hedge.rs).

type Script = Arc<dyn Fn(u32) -> (Duration, Result<u16, &'static str>) + Send + Sync>;

#[derive(Clone)]
struct Backend {
    script: Script,
    calls: Arc<AtomicU32>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Backend {
    fn new(
        script: impl Fn(u32) -> (Duration, Result<u16, &'static str>) + Send + Sync + 'static,
    ) -> Self {
        Backend {
            script: Arc::new(script),
            calls: Arc::default(),
            arrivals: Arc::default(),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u16;
    type Error = &'static str;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u16, &'static str>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.arrivals.lock().unwrap().push(Instant::now());
        let (after, result) = (self.script)(n);
        Box::pin(async move {
            tokio::time::sleep(after).await;
            result
        })
    }
}

/// The 90th percentile over 1 s windows of at least 10 latencies, no jitter.
fn policy() -> HedgePolicyBuilder {
    HedgePolicy::builder()
        .percentile(0.9)
        .window(Duration::from_secs(1))
        .min_samples(10)
        .jitter(0.0)
        .seed(7)
}

/// 10 fast calls, a window, and the call that rolls it: 11 calls (0..=10).
async fn warm<S: Service<u32, Response = u16>>(service: &mut S)
where
    S::Error: std::fmt::Debug,
{
    for i in 0..10 {
        service.ready().await.unwrap().call(i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.ready().await.unwrap().call(0).await.unwrap();
}

// ---------------------------------------------------------------------------
// Findings (fail on the current code).

/// A hedge copy that is *due* but was never *sent* (its clone of the
/// service is waiting for readiness, e.g. behind a concurrency limit) is
/// counted as "in flight": when the original then fails, the caller waits
/// for that copy to get a permit, be sent *after* the failure, and answer.
/// The module docs say "when every copy sent has answered otherwise, the
/// last answer does — a failure is for the retry layer to handle ... an
/// original that fails before its hedge is due is answered at once".
#[tokio::test(start_paused = true)]
async fn a_failed_original_does_not_wait_for_a_copy_never_sent() {
    let backend = Backend::new(|n| match n {
        11 => (50 * MS, Err("unavailable")), // the original: fails at 50 ms
        12 | 13 => (Duration::from_secs(1), Ok(200)), // two unrelated long calls
        _ => (10 * MS, Ok(200)),
    });
    let limited = tower::limit::ConcurrencyLimit::new(backend.clone(), 2);
    let mut hedge = Hedge::new(limited.clone(), policy().build().unwrap());
    warm(&mut hedge).await;
    assert_eq!(backend.calls(), 11);

    let start = Instant::now();
    // The original takes one permit.
    let original = hedge.ready().await.unwrap().call(0);
    // An unrelated long call takes the other.
    let a = tokio::spawn(limited.clone().oneshot(1));
    tokio::task::yield_now().await;
    // Another unrelated caller queues for a permit before the hedge is due.
    let d = tokio::spawn(limited.clone().oneshot(2));
    tokio::task::yield_now().await;
    assert_eq!(backend.calls(), 13, "original and the first unrelated call");

    let answer = support::bounded(original).await;
    let elapsed = start.elapsed();
    let _ = a.await;
    let _ = d.await;
    // The hedge was due at ~11 ms but could not be sent (no permit): only the
    // original was sent for this request, and it failed at 50 ms.
    assert_eq!(
        (answer, elapsed),
        (Err("unavailable"), 50 * MS),
        "the failed original should be answered at once: the hedge was never sent \
         (observed: the caller waited for the unsent copy to get a permit and be \
         sent after the failure)"
    );
}

/// gRFC A6 (and grpc.io's hedging guide): "If any of hedged requests fails
/// with a status code that is not present in [nonFatalStatusCodes], all
/// outstanding requests are canceled and the response is returned to the
/// application." Here a fatal failure (`Outcome::Failure`) of a copy is
/// stored and the caller waits for the slow original.
#[tokio::test(start_paused = true)]
async fn a_fatal_failure_answers_at_once_and_cancels_the_other_copies() {
    let backend = Backend::new(|n| match n {
        11 => (Duration::from_secs(1), Err("invalid argument")),
        12 => (MS, Err("invalid argument")),
        _ => (10 * MS, Ok(200)),
    });
    let mut hedge = Hedge::new(
        backend.clone(),
        policy()
            .classify(|r: Result<&u16, &&str>| match r {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure { reason: "invalid" },
            })
            .build()
            .unwrap(),
    );
    warm(&mut hedge).await;
    let start = Instant::now();
    let answer = support::bounded(hedge.ready().await.unwrap().call(0)).await;
    assert_eq!(answer, Err("invalid argument"));
    assert_eq!(backend.calls(), 13, "the original and one hedge");
    let elapsed = start.elapsed();
    assert!(
        elapsed <= 15 * MS,
        "a fatal failure of the hedge (at ~12 ms) should answer at once and cancel \
         the original; the caller waited {elapsed:?}"
    );
}

/// gRFC A6 throttling: "Every failed RPC will decrement the token_count by
/// 1" — every hedged attempt counts. The hedge layer books only the
/// answer's outcome (`on_answer`, once per request): a request whose
/// original and hedge both failed (retryably) costs one token, not two, so
/// the bucket drains half as fast under exactly the overload it guards.
#[tokio::test(start_paused = true)]
async fn every_failed_copy_is_booked_with_the_budget() {
    let backend = Backend::new(|n| match n {
        11 => (50 * MS, Err("unavailable")), // original
        12 => (MS, Err("unavailable")),      // its hedge
        _ => (10 * MS, Ok(200)),
    });
    let bucket = TokenBucket::grpc(10.0, 0.1).unwrap();
    let mut hedge = Hedge::new(
        backend.clone(),
        policy().budget(bucket.clone()).build().unwrap(),
    );
    warm(&mut hedge).await;
    assert_eq!(bucket.balance(), 10.0);
    let answer = support::bounded(hedge.ready().await.unwrap().call(0)).await;
    assert_eq!(answer, Err("unavailable"));
    assert_eq!(backend.calls(), 13, "the original and one hedge were sent");
    assert_eq!(
        bucket.balance(),
        8.0,
        "two failed attempts should cost two tokens (gRFC A6)"
    );
}

/// `ServerDeadline` with `grpc-timeout: 0n`: the caller has no time left,
/// the deadline has "passed first", yet the handler is invoked (its side
/// effects happen) and its answer, a 200, is returned. The client layer
/// refuses to send with zero time left; the server should answer the
/// configured status without running the handler.
#[tokio::test(start_paused = true)]
async fn a_zero_timeout_is_answered_without_calling_the_handler() {
    let invoked = Arc::new(AtomicU32::new(0));
    let counted = invoked.clone();
    let server = ServerDeadlineLayer::new().layer(tower::service_fn(move |_: http::Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
    }));
    let request = http::Request::get("/")
        .header("grpc-timeout", "0n")
        .body(())
        .unwrap();
    let response = server.oneshot(request).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), invoked.load(Ordering::SeqCst)),
        (504, 0),
        "no time left: 504 without running the handler"
    );
}

/// Same with an outer deadline that has already passed (no header).
#[tokio::test(start_paused = true)]
async fn an_expired_outer_deadline_is_answered_without_calling_the_handler() {
    let invoked = Arc::new(AtomicU32::new(0));
    let counted = invoked.clone();
    let server = ServerDeadlineLayer::new().layer(tower::service_fn(move |_: http::Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
    }));
    let response = Deadline::after(10 * MS)
        .scope(async {
            tokio::time::sleep(20 * MS).await;
            server
                .oneshot(http::Request::get("/").body(()).unwrap())
                .await
        })
        .await
        .unwrap();
    assert_eq!(
        (response.status().as_u16(), invoked.load(Ordering::SeqCst)),
        (504, 0),
        "the deadline passed 10 ms ago: 504 without running the handler"
    );
}

/// `Deadline::scope` keeps the earlier of its deadline and the one in
/// scope — but it decides when the `Scoped` future is *built*, not when it
/// is polled. A scoped future built outside its caller's scope and awaited
/// inside it extends the caller's deadline, which the docs say cannot
/// happen ("a callee cannot extend its caller's deadline").
#[tokio::test(start_paused = true)]
async fn a_scope_built_elsewhere_cannot_extend_its_callers_deadline() {
    let seen: Arc<Mutex<Vec<Option<Duration>>>> = Arc::default();
    let record = seen.clone();
    let origin = tower::service_fn(move |request: http::Request<()>| {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(parse_timeout);
        record.lock().unwrap().push(timeout);
        async { Ok::<_, dephase::BoxError>(http::Response::new(())) }
    });
    let client = PropagateDeadlineLayer::new().layer(origin);

    // A library helper bounds its call by 5 s...
    let call = Deadline::after(Duration::from_secs(5))
        .scope(client.oneshot(http::Request::get("/").body(()).unwrap()));
    // ...and the caller, who has 1 s, awaits it in its own scope.
    let outer = Deadline::after(Duration::from_secs(1));
    outer.scope(call).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[0],
        Some(Duration::from_secs(1)),
        "the callee's 5 s must not extend the caller's 1 s"
    );
}

/// The pacer's wait is bounded by the deadline's remaining time, but once
/// the deadline has passed (remaining = 0) a caller whose turn is free now
/// is still let through, spending a turn of the rate-limited dependency on a
/// request nobody waits for. The docs: "a pacer turns away (with
/// Overloaded) a caller whose turn would come after it".
#[tokio::test(start_paused = true)]
async fn a_pacer_turns_away_a_caller_past_its_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let pacer = Pacer::builder()
        .quota(Quota::per_second(std::num::NonZeroU32::new(1).unwrap()))
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut service = PaceLayer::new(pacer.clone()).layer(tower::service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(()) }
    }));
    let result = Deadline::after(10 * MS)
        .scope(async {
            tokio::time::sleep(20 * MS).await;
            service.ready().await.unwrap().call(()).await
        })
        .await;
    assert!(
        result.is_err() && calls.load(Ordering::SeqCst) == 0,
        "the deadline passed 10 ms ago: turned away, not sent (sent {} time(s), \
         the quota's only turn this second was spent)",
        calls.load(Ordering::SeqCst)
    );
}

/// `floor(Duration::MAX)` (with `cap(Duration::MAX)`) is accepted by
/// `build`, and then the first call after an estimate exists panics:
/// `started + base` overflows `Instant` (future.rs, `ResponseFuture::new`);
/// `base.mul_f64(jitter)` and `self.base + jitter` would overflow too.
#[tokio::test(start_paused = true)]
async fn a_huge_floor_and_cap_are_refused_not_a_panic() {
    // `started + base` would overflow an `Instant`: the builder refuses a
    // cap past a day, and the largest it accepts does not panic.
    let refused = policy().floor(Duration::MAX).cap(Duration::MAX).build();
    assert_eq!(refused.unwrap_err().field(), "hedge.cap");
    let day = Duration::from_secs(86_400);
    let backend = Backend::new(|_| (10 * MS, Ok(200)));
    let mut hedge = Hedge::new(
        backend.clone(),
        policy().floor(day).cap(day).jitter(1.0).build().unwrap(),
    );
    warm(&mut hedge).await;
    assert!(hedge.policy().estimate().is_some());
    hedge.ready().await.unwrap();
    assert_eq!(support::bounded(hedge.call(0)).await, Ok(200));
}

// ---------------------------------------------------------------------------
// Probes that held (regression tests).

/// The original fails while a copy is in flight and the timer then fires
/// for the next copy: no lost wakeup, the next copy goes and answers.
#[tokio::test(start_paused = true)]
async fn hedge_original_failure_then_timer_then_copy_success() {
    let backend = Backend::new(|n| match n {
        11 => (15 * MS, Err("unavailable")),   // original fails at 15 ms
        12 => (Duration::from_secs(1), Ok(1)), // first hedge, slow
        13 => (10 * MS, Ok(2)),                // second hedge, fast
        _ => (10 * MS, Ok(200)),
    });
    let mut hedge = Hedge::new(backend.clone(), policy().max_copies(3).build().unwrap());
    warm(&mut hedge).await;
    let start = Instant::now();
    let answer = support::bounded(hedge.ready().await.unwrap().call(0)).await;
    assert_eq!(answer, Ok(2));
    assert_eq!(backend.calls(), 14);
    assert!(start.elapsed() < 40 * MS, "{:?}", start.elapsed());
}

/// A hedge copy whose service fails to get ready: its withdrawal is
/// refunded, the copy is not sent, the original still answers.
#[tokio::test(start_paused = true)]
async fn hedge_copy_poll_ready_error_refunds_and_original_answers() {
    struct Svc {
        inner: Backend,
        broken: bool,
    }
    impl Clone for Svc {
        fn clone(&self) -> Self {
            // Clones (made for hedges) fail to get ready.
            Svc {
                inner: self.inner.clone(),
                broken: true,
            }
        }
    }
    impl Service<u32> for Svc {
        type Response = u16;
        type Error = &'static str;
        type Future = <Backend as Service<u32>>::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.broken {
                Poll::Ready(Err("closed"))
            } else {
                self.inner.poll_ready(cx)
            }
        }
        fn call(&mut self, n: u32) -> Self::Future {
            self.inner.call(n)
        }
    }
    let backend = Backend::new(|n| match n {
        11 => (100 * MS, Ok(7)),
        _ => (10 * MS, Ok(200)),
    });
    let budget = support::Counting::new(
        TokenBucket::builder()
            .capacity(10.0)
            .retry_cost(1.0)
            .build()
            .unwrap(),
    );
    let layer = dephase::hedge::HedgeLayer::new(policy().budget(budget.clone()).build().unwrap());
    let mut warmup = layer.layer(backend.clone());
    warm(&mut warmup).await;
    let mut hedge = layer.layer(Svc {
        inner: backend.clone(),
        broken: false,
    });
    let answer = support::bounded(hedge.ready().await.unwrap().call(0)).await;
    assert_eq!(answer, Ok(7));
    assert_eq!(backend.calls(), 12, "the copy was never sent");
    assert_eq!(
        budget.granted.load(Ordering::SeqCst),
        1,
        "the hedge was granted"
    );
    assert_eq!(budget.spent(), 0, "and refunded");
}

/// The client layer refuses a request whose own (extension) deadline has
/// passed even inside a later scope, and one with exactly zero left.
#[tokio::test(start_paused = true)]
async fn propagate_refuses_an_expired_own_deadline_inside_a_later_scope() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let client =
        PropagateDeadlineLayer::new().layer(tower::service_fn(move |_: http::Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, dephase::BoxError>(http::Response::new(())) }
        }));
    let mut request = http::Request::get("/").body(()).unwrap();
    request.extensions_mut().insert(Deadline::after(5 * MS));
    tokio::time::sleep(5 * MS).await; // exactly at the deadline
    let error = Deadline::after(Duration::from_secs(10))
        .scope(client.clone().oneshot(request))
        .await
        .unwrap_err();
    let exceeded = error.downcast_ref::<DeadlineExceeded>().unwrap();
    assert!(!exceeded.was_sent());
    assert_eq!(exceeded.remaining(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// The scope does not leak: not into a spawned task, not into a sibling
/// future of the same task, not after the scope ends.
#[tokio::test(start_paused = true)]
async fn the_scope_does_not_leak() {
    let deadline = Deadline::after(Duration::from_secs(1));
    let (inside, spawned, sibling) = tokio::join!(
        deadline.scope(async {
            tokio::task::yield_now().await;
            Deadline::current()
        }),
        deadline.scope(async { tokio::spawn(async { Deadline::current() }).await.unwrap() }),
        async {
            tokio::task::yield_now().await;
            Deadline::current()
        },
    );
    assert_eq!(inside, Some(deadline));
    assert_eq!(spawned, None);
    assert_eq!(sibling, None);
    assert_eq!(Deadline::current(), None);
}

/// A server hint (Retry-After) that ends past the caller's deadline stops
/// the retry at once: no sleep past the deadline.
#[tokio::test(start_paused = true)]
async fn retry_does_not_sleep_past_the_deadline_on_a_server_hint() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let service = tower::service_fn(move |_: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(10 * MS).await;
            Err::<u16, &'static str>("busy")
        }
    });
    let retry = dephase::retry::RetryLayer::new(
        dephase::retry::RetryPolicy::builder()
            .max_attempts(5)
            .classify(|r: Result<&u16, &&str>| match r {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Retry {
                    after: Some(Duration::from_millis(500)),
                    reason: "busy",
                },
            })
            .build()
            .unwrap(),
    )
    .layer(service);
    let start = Instant::now();
    let answer = Deadline::after(Duration::from_millis(300))
        .scope(retry.oneshot(0))
        .await;
    assert_eq!(answer, Err("busy"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), 10 * MS);
}

/// The pacer's jitter never pushes a turn past the caller's deadline.
#[tokio::test(start_paused = true)]
async fn pace_jitter_stays_within_the_deadline() {
    for seed in 0..20 {
        let pacer = Pacer::builder()
            .quota(Quota::per_second(std::num::NonZeroU32::new(1).unwrap()))
            .max_wait(Duration::from_secs(10))
            .jitter(Duration::from_secs(1))
            .seed(seed)
            .build()
            .unwrap();
        pacer.wait().await.unwrap(); // the free turn
        let start = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(1200));
        let waited = deadline.scope(pacer.wait()).await.unwrap();
        assert!(
            Instant::now() <= deadline.instant(),
            "seed {seed}: released {:?} after the start, deadline at 1.2 s",
            start.elapsed()
        );
        assert!(
            waited <= Duration::from_millis(1200),
            "seed {seed}: {waited:?}"
        );
    }
}

/// Header edge cases from the gRPC spec: eight digits max, units H M S m u n,
/// and a huge value is clamped to the server's maximum.
#[test]
fn header_parse_limits() {
    let parse = |s: &str| parse_timeout(&HeaderValue::from_str(s).unwrap());
    assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    assert_eq!(parse("100000000n"), None);
    assert_eq!(parse("1h"), None);
    assert_eq!(parse("1s"), None);
    assert_eq!(parse("1U"), None);
    assert_eq!(parse("1N"), None);
    assert_eq!(parse("1m"), Some(MS));
    assert_eq!(parse("1M"), Some(Duration::from_secs(60)));
}

/// A budget that says no stops a hedge, and the latency estimate survives a
/// huge latency without overflowing (clamped to the cap).
#[tokio::test(start_paused = true)]
async fn hedge_huge_latency_and_zero_budget() {
    let backend = Backend::new(|n| match n {
        0..=10 => (Duration::from_secs(86_400 * 30), Ok(200)), // a month each
        11 => (Duration::from_secs(86_400 * 60), Ok(1)),
        _ => (10 * MS, Ok(200)),
    });
    let bucket = TokenBucket::builder()
        .capacity(1.0)
        .retry_cost(1.0)
        .success_reward(0.0)
        .build()
        .unwrap();
    let _ = bucket.withdraw(); // empty
    let mut hedge = Hedge::new(
        backend.clone(),
        policy()
            .cap(Duration::from_secs(10))
            .budget(bucket.clone())
            .build()
            .unwrap(),
    );
    warm(&mut hedge).await;
    assert!(hedge.policy().estimate().is_some());
    assert_eq!(hedge.policy().base_delay(), Some(Duration::from_secs(10)));
    // Not `bounded`: this call legitimately takes 60 (paused) days.
    let answer = hedge.ready().await.unwrap().call(0).await;
    assert_eq!(answer, Ok(1));
    assert_eq!(backend.calls(), 12, "an empty budget sends no hedge");
}

//! The Retry layer, driven under paused time: attempts, the exact delays of
//! each request's own backoff sequence, server hints clamped, the deadline,
//! a budget shared across services, cancellation leaving the budget
//! balanced, requests that cannot be copied, backpressure, and the span
//! fields and events it records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::budget::{RatioBudget, RetryBudget, TokenBucket};
use dephase::classify::Outcome;
use dephase::measure::Spread;
use dephase::retry::{Retry, RetryLayer, RetryPolicy};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};

mod support;

const MS: Duration = Duration::from_millis(1);

/// A service that fails its first `failures` calls (per request id) and
/// records when each call arrived.
#[derive(Clone)]
struct Flaky {
    failures: u32,
    arrivals: Arc<Mutex<Vec<(u32, Instant)>>>,
}

impl Flaky {
    fn new(failures: u32) -> Self {
        Flaky {
            failures,
            arrivals: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// The gaps between consecutive calls of request `id`.
    fn gaps(&self, id: u32) -> Vec<Duration> {
        let times: Vec<Instant> = self
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| *r == id)
            .map(|(_, t)| *t)
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Service<u32> for Flaky {
    type Response = String;
    type Error = String;
    type Future = std::future::Ready<Result<String, String>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), String>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u32) -> Self::Future {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push((id, Instant::now()));
        let attempt = arrivals.iter().filter(|(r, _)| *r == id).count() as u32;
        std::future::ready(if attempt <= self.failures {
            Err(format!("request {id} failed attempt {attempt}"))
        } else {
            Ok(format!("request {id} succeeded on attempt {attempt}"))
        })
    }
}

/// Sends `n` requests at the same instant through `svc` (each fails its
/// first attempt on `flaky`) and returns when the retries arrived.
async fn retry_times_of_a_herd<S>(svc: &S, flaky: &Flaky, n: u32) -> Vec<Duration>
where
    S: Service<u32, Response = String, Error = String> + Clone + Send + 'static,
    S::Future: Send,
{
    let start = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|id| tokio::spawn(svc.clone().oneshot(id)))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let arrivals = flaky.arrivals.lock().unwrap();
    arrivals
        .iter()
        .map(|(_, t)| *t - start)
        .filter(|t| !t.is_zero())
        .collect()
}

fn backoff(jitter: Jitter, seed: u64) -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .base(100 * MS)
        .cap(Duration::from_secs(2))
        .jitter(jitter)
        .seed(seed)
        .build()
        .unwrap()
}

/// What tokio's millisecond timer actually sleeps for a requested delay.
fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64)
}

fn policy(attempts: u32, jitter: Jitter) -> dephase::retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .backoff(backoff(jitter, 7))
}

#[tokio::test(start_paused = true)]
async fn a_success_is_returned_at_once() {
    let flaky = Flaky::new(0);
    let start = Instant::now();
    let mut svc = Retry::new(flaky.clone(), policy(3, Jitter::Full).build().unwrap());
    let reply = svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(reply, "request 1 succeeded on attempt 1");
    assert_eq!(flaky.calls(), 1);
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn attempts_stop_at_the_maximum_with_the_last_error() {
    let flaky = Flaky::new(u32::MAX);
    let mut svc = Retry::new(flaky.clone(), policy(4, Jitter::Full).build().unwrap());
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err, "request 1 failed attempt 4");
    assert_eq!(flaky.calls(), 4);

    let flaky = Flaky::new(u32::MAX);
    let mut once = Retry::new(flaky.clone(), policy(1, Jitter::Full).build().unwrap());
    once.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(flaky.calls(), 1, "max_attempts 1 turns retries off");
}

/// The gaps between attempts are exactly the delays of the request's own
/// seeded sequence (and so inside each jitter kind's bounds).
#[tokio::test(start_paused = true)]
async fn delays_are_the_requests_own_backoff_sequence() {
    for jitter in Jitter::ALL {
        let flaky = Flaky::new(5);
        let mut svc = Retry::new(
            flaky.clone(),
            RetryPolicy::builder()
                .max_attempts(6)
                .backoff(backoff(jitter, 99))
                .build()
                .unwrap(),
        );
        svc.ready().await.unwrap().call(1).await.unwrap();
        // A backoff built the same way draws the same first sequence
        // (tokio's timer wakes on whole milliseconds, rounding up).
        let expected: Vec<Duration> = backoff(jitter, 99)
            .sequence()
            .take(5)
            .map(ceil_ms)
            .collect();
        assert_eq!(flaky.gaps(1), expected, "{jitter}");
        let mut d = 100 * MS;
        for gap in flaky.gaps(1) {
            match jitter {
                Jitter::None => assert_eq!(gap, d),
                Jitter::Full => assert!(gap <= d),
                Jitter::Equal => assert!(gap >= d / 2 && gap <= d),
                Jitter::Decorrelated => assert!(gap >= 100 * MS && gap <= Duration::from_secs(2)),
            }
            d = (d * 2).min(Duration::from_secs(2));
        }
    }
}

/// Two concurrent requests through one service draw different delays.
#[tokio::test(start_paused = true)]
async fn concurrent_requests_do_not_share_delays() {
    let flaky = Flaky::new(3);
    let svc = Retry::new(flaky.clone(), policy(4, Jitter::Full).build().unwrap());
    let (a, b) = tokio::join!(svc.clone().oneshot(1), svc.clone().oneshot(2));
    a.unwrap();
    b.unwrap();
    assert_eq!(flaky.gaps(1).len(), 3);
    assert_ne!(flaky.gaps(1), flaky.gaps(2));
}

/// 1000 callers that fail at the same instant retry spread over the first
/// backoff (full jitter); without jitter they all come back together.
#[tokio::test(start_paused = true)]
async fn a_thousand_simultaneous_failures_come_back_spread_out() {
    for (jitter, max_peak_to_mean) in [(Jitter::Full, 1.5), (Jitter::None, 20.0)] {
        let flaky = Flaky::new(1);
        let svc = Retry::new(
            flaky.clone(),
            RetryPolicy::builder()
                .max_attempts(2)
                .backoff(
                    ExponentialBackoff::builder()
                        .base(Duration::from_secs(1))
                        .jitter(jitter)
                        .seed(5)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        let retries = retry_times_of_a_herd(&svc, &flaky, 1000).await;
        assert_eq!(retries.len(), 1000);
        let spread =
            Spread::in_window(&retries, Duration::ZERO..Duration::from_secs(1) + MS, 20).unwrap();
        if jitter == Jitter::Full {
            assert!(
                spread.peak_to_mean() <= max_peak_to_mean,
                "{:?}",
                spread.buckets()
            );
        } else {
            assert!(
                retries.iter().all(|t| *t == Duration::from_secs(1)),
                "no jitter: all at 1 s"
            );
        }
    }
}

/// A classifier that retries every error, asking the server's `hint`.
fn hinted(hint: Duration) -> impl Fn(Result<&String, &String>) -> Outcome + Clone {
    move |r: Result<&String, &String>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::retry_after(hint, "busy"),
    }
}

/// A server hint is a floor with the backoff added on top: never below the
/// backoff, never past the cap.
#[tokio::test(start_paused = true)]
async fn server_hints_are_floors_clamped_to_the_cap() {
    let s = Duration::from_secs;
    // (hint, expected gap) with no jitter, base 100 ms, cap 2 s.
    for (hint, gap) in [
        (s(3600), s(2)),
        (Duration::MAX, s(2)),
        (Duration::ZERO, 100 * MS),
        (300 * MS, 400 * MS),
        (50 * MS, 150 * MS),
        (1950 * MS, s(2)),
    ] {
        let flaky = Flaky::new(1);
        let mut svc = Retry::new(
            flaky.clone(),
            policy(2, Jitter::None)
                .classify(hinted(hint))
                .build()
                .unwrap(),
        );
        svc.ready().await.unwrap().call(1).await.unwrap();
        assert_eq!(flaky.gaps(1), [gap], "hint {hint:?}");
    }
}

/// No retry whose backoff would end past the deadline, whatever the hint.
#[tokio::test(start_paused = true)]
async fn the_deadline_holds() {
    // No jitter: retries at 100 ms and 300 ms; the next would end at 700 ms.
    let flaky = Flaky::new(u32::MAX);
    let start = Instant::now();
    let mut svc = Retry::new(
        flaky.clone(),
        policy(10, Jitter::None).deadline(350 * MS).build().unwrap(),
    );
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(flaky.calls(), 3);
    assert_eq!(
        Instant::now() - start,
        300 * MS,
        "returned without sleeping again"
    );

    // A sleep ending exactly at the deadline is allowed.
    let flaky = Flaky::new(u32::MAX);
    let mut svc = Retry::new(
        flaky.clone(),
        policy(10, Jitter::None).deadline(300 * MS).build().unwrap(),
    );
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(flaky.calls(), 3);

    // A huge hint cannot push a retry past the deadline either.
    let flaky = Flaky::new(u32::MAX);
    let start = Instant::now();
    let mut svc = Retry::new(
        flaky.clone(),
        policy(10, Jitter::None)
            .deadline(Duration::from_secs(1))
            .classify(hinted(Duration::MAX))
            .build()
            .unwrap(),
    );
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(flaky.calls(), 1);
    assert_eq!(Instant::now(), start);
}

/// One budget held by two services: retries by the first drain it for the second.
#[tokio::test(start_paused = true)]
async fn one_budget_shared_by_two_services_stops_retries_across_both() {
    let budget = TokenBucket::builder()
        .capacity(2.0)
        .retry_cost(1.0)
        .success_reward(0.0)
        .build()
        .unwrap();
    let layer = RetryLayer::new(
        policy(5, Jitter::Full)
            .budget(budget.clone())
            .build()
            .unwrap(),
    );
    let (first, second) = (Flaky::new(2), Flaky::new(2));
    let mut a = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(first.clone());
    let mut b = tower::ServiceBuilder::new()
        .layer(layer)
        .service(second.clone());

    a.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(first.calls(), 3, "two retries, paid by the budget");
    assert_eq!(
        budget.balance(),
        1.0,
        "the retry that succeeded was refunded (AWS style), the failed one not"
    );

    let c = Flaky::new(u32::MAX);
    let mut drain = Retry::new(
        c.clone(),
        policy(5, Jitter::Full)
            .budget(budget.clone())
            .build()
            .unwrap(),
    );
    drain.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(c.calls(), 2, "a failing request spends the last token");
    assert_eq!(budget.balance(), 0.0);

    let err = b.ready().await.unwrap().call(7).await.unwrap_err();
    assert_eq!(second.calls(), 1, "the shared budget is empty: no retry");
    assert_eq!(
        err, "request 7 failed attempt 1",
        "the caller gets the last result unchanged"
    );
}

/// A ratio budget counts requests from every service that shares it.
#[tokio::test(start_paused = true)]
async fn a_ratio_budget_counts_requests_across_services() {
    let budget = RatioBudget::builder()
        .min_per_sec(0)
        .ratio(0.5)
        .build()
        .unwrap();
    let ok = Flaky::new(0);
    let failing = Flaky::new(u32::MAX);
    let mut healthy = Retry::new(
        ok.clone(),
        policy(3, Jitter::Full)
            .budget(budget.clone())
            .build()
            .unwrap(),
    );
    let mut broken = Retry::new(
        failing.clone(),
        policy(3, Jitter::Full)
            .budget(budget.clone())
            .build()
            .unwrap(),
    );
    for id in 0..4 {
        healthy.ready().await.unwrap().call(id).await.unwrap();
    }
    // 4 healthy + 1 failing request deposit 2.5 retries; the failing one may take 2.
    broken.ready().await.unwrap().call(9).await.unwrap_err();
    assert_eq!(failing.calls(), 3);
    assert_eq!(budget.balance(), 0.5);
}

/// Dropping the future while it sleeps gives the granted retry back.
#[tokio::test(start_paused = true)]
async fn a_future_dropped_mid_sleep_leaves_the_budget_balanced() {
    let ratio = RatioBudget::builder()
        .min_per_sec(1)
        .ratio(0.0)
        .build()
        .unwrap();
    let tokens = TokenBucket::aws_standard();
    type Reader = Box<dyn Fn() -> (f64, Arc<dyn RetryBudget>)>;
    let budgets: [Reader; 2] = [
        Box::new(move || (ratio.balance(), Arc::new(ratio.clone()))),
        Box::new(move || (tokens.balance(), Arc::new(tokens.clone()))),
    ];
    for budget in budgets {
        let (before, handle) = budget();
        let flaky = Flaky::new(u32::MAX);
        let policy = RetryPolicy::builder()
            .max_attempts(3)
            .backoff(backoff(Jitter::None, 1))
            .budget(handle)
            .build()
            .unwrap();
        let mut svc = Retry::new(flaky.clone(), policy);
        let call = svc.ready().await.unwrap().call(1);
        // The first attempt fails at once; the retry is granted and sleeps 100 ms.
        let dropped = tokio::time::timeout(50 * MS, call).await;
        assert!(dropped.is_err());
        assert_eq!(flaky.calls(), 1);
        let (after, _) = budget();
        assert_eq!(after, before, "the unsent retry was refunded");
    }
}

/// A request the layer cannot copy is sent once; no panic.
#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_copied_is_sent_once() {
    let flaky = Flaky::new(u32::MAX);
    let never = |_: &u32| -> Option<u32> { None };
    let mut svc = Retry::new(
        flaky.clone(),
        policy(5, Jitter::Full)
            .clone_requests(never)
            .build()
            .unwrap(),
    );
    assert_eq!(
        svc.ready().await.unwrap().call(1).await.unwrap_err(),
        "request 1 failed attempt 1"
    );
    assert_eq!(flaky.calls(), 1);

    // A copier that gives up after two copies stops the retries there.
    let copies = Arc::new(Mutex::new(0));
    let counter = copies.clone();
    let twice = move |r: &u32| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        (*n <= 2).then_some(*r)
    };
    let flaky = Flaky::new(u32::MAX);
    let mut svc = Retry::new(
        flaky.clone(),
        policy(5, Jitter::Full)
            .clone_requests(twice)
            .build()
            .unwrap(),
    );
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(flaky.calls(), 3);
}

/// Only `Outcome::Retry` is retried; a failure that will not heal is returned at once.
#[tokio::test(start_paused = true)]
async fn only_retryable_outcomes_are_retried() {
    let fatal = |r: Result<&String, &String>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::failure("fatal"),
    };
    let budget = TokenBucket::grpc(10.0, 0.1).unwrap();
    let flaky = Flaky::new(u32::MAX);
    let mut svc = Retry::new(
        flaky.clone(),
        policy(5, Jitter::Full)
            .classify(fatal)
            .budget(budget.clone())
            .build()
            .unwrap(),
    );
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(flaky.calls(), 1);
    // gRFC A6 counts only retryable failures against the throttle: a fatal
    // one leaves the gRPC bucket alone...
    assert_eq!(budget.balance(), 10.0, "A6: not a retryable failure");
    // ...while a bucket that counts every failure takes its cost.
    let every = TokenBucket::builder()
        .capacity(10.0)
        .retry_cost(0.0)
        .failure_cost(1.0)
        .build()
        .unwrap();
    let mut svc = Retry::new(
        flaky.clone(),
        policy(5, Jitter::Full)
            .classify(fatal)
            .budget(every.clone())
            .build()
            .unwrap(),
    );
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(every.balance(), 9.0, "but it counts as a failure");
}

/// `poll_ready` is forwarded, and a retry waits for the service to be ready.
#[tokio::test(start_paused = true)]
async fn backpressure_is_forwarded() {
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<u32, u32, _>(RetryLayer::new(
        policy(3, Jitter::None).build().unwrap(),
    ));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let call = tokio::spawn(svc.call(5));
    let (request, reply) = handle.next_request().await.unwrap();
    assert_eq!(request, 5);
    reply.send_error("unavailable");
    // The retry sleeps 100 ms, then waits for capacity that is not there.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!call.is_finished());
    handle.allow(1);
    let (request, reply) = handle.next_request().await.unwrap();
    assert_eq!(request, 5);
    reply.send_response(10);
    assert_eq!(call.await.unwrap().unwrap(), 10);
}

/// If the service fails while the retry waits for it, the caller gets that
/// error and the granted retry is refunded.
#[tokio::test(start_paused = true)]
async fn a_readiness_error_during_a_retry_refunds_the_budget() {
    let budget = TokenBucket::aws_standard();
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<u32, u32, _>(RetryLayer::new(
        policy(3, Jitter::None)
            .budget(budget.clone())
            .build()
            .unwrap(),
    ));
    assert_ready_ok!(svc.poll_ready());
    let call = tokio::spawn(svc.call(5));
    let (_, reply) = handle.next_request().await.unwrap();
    handle.allow(0);
    reply.send_error("unavailable");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        budget.balance(),
        495.0,
        "the retry is granted while it waits"
    );
    handle.send_error("service closed");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "service closed");
    assert_eq!(budget.balance(), 500.0);
}

/// The span the caller polls in gets `http.request.resend_count`, the total
/// delay, the jitter kind, the budget's answer and the reason; each retry
/// emits an event with its own delay.
#[tokio::test(start_paused = true)]
async fn retries_are_recorded_on_the_span_and_as_events() {
    use tracing::Instrument;
    use tracing::field::Empty;

    let (captured, _guard) = support::capture();
    let flaky = Flaky::new(2);
    let budget = TokenBucket::aws_standard();
    let mut svc = Retry::new(
        flaky.clone(),
        policy(5, Jitter::Full).budget(budget).build().unwrap(),
    );
    let span = tracing::info_span!(
        "request",
        http.request.resend_count = Empty,
        dephase.retry.delay_ms = Empty,
        dephase.jitter = Empty,
        dephase.budget = Empty,
        dephase.retry.reason = Empty,
    );
    svc.ready()
        .await
        .unwrap()
        .call(1)
        .instrument(span)
        .await
        .unwrap();

    let delays: Vec<Duration> = backoff(Jitter::Full, 7).sequence().take(2).collect();
    let expected: Vec<f64> = delays.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let fields = captured.span("request");
    assert_eq!(fields["http.request.resend_count"].as_u64(), 2);
    // What was slept: the plan, each sleep rounded up to tokio's 1 ms tick.
    let planned = (delays[0] + delays[1]).as_secs_f64() * 1000.0;
    let slept = fields["dephase.retry.delay_ms"].as_f64();
    assert!(
        slept >= planned && slept <= planned + 2.0,
        "slept {slept}, planned {planned}"
    );
    assert_eq!(fields["dephase.jitter"].as_str(), "full");
    assert_eq!(fields["dephase.budget"].as_str(), "granted");
    assert_eq!(fields["dephase.retry.reason"].as_str(), "error");

    let events = captured.events_with("dephase::retry", "retrying");
    assert_eq!(events.len(), 2);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["http.request.resend_count"].as_u64(), n as u64 + 1);
        assert_eq!(event["dephase.retry.delay_ms"].as_f64(), expected[n]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_denied_retry_is_recorded() {
    use tracing::Instrument;
    let (captured, _guard) = support::capture();
    let budget = TokenBucket::builder()
        .capacity(1.0)
        .retry_cost(1.0)
        .initial(0.0)
        .build()
        .unwrap();
    let mut svc = Retry::new(
        Flaky::new(1),
        policy(3, Jitter::Full).budget(budget).build().unwrap(),
    );
    let span = tracing::info_span!("request", dephase.budget = tracing::field::Empty);
    svc.ready()
        .await
        .unwrap()
        .call(1)
        .instrument(span)
        .await
        .unwrap_err();
    assert_eq!(
        captured.span("request")["dephase.budget"].as_str(),
        "denied"
    );
    assert_eq!(captured.events_with("dephase::retry", "budget").len(), 1);
}

#[test]
fn the_policy_builder_rejects_bad_values() {
    assert_eq!(
        RetryPolicy::builder()
            .max_attempts(0)
            .build()
            .unwrap_err()
            .field(),
        "retry.max_attempts"
    );
    assert_eq!(
        RetryPolicy::builder()
            .deadline(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "retry.deadline"
    );
}

/// 500 callers rejected at the same instant with the same `Retry-After: 1`
/// come back spread over the second after it, not all at once.
#[tokio::test(start_paused = true)]
async fn the_same_hint_to_many_callers_does_not_resynchronise_them() {
    let flaky = Flaky::new(1);
    let svc = Retry::new(
        flaky.clone(),
        RetryPolicy::builder()
            .max_attempts(2)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_secs(1))
                    .cap(Duration::from_secs(5))
                    .seed(3)
                    .build()
                    .unwrap(),
            )
            .classify(hinted(Duration::from_secs(1)))
            .build()
            .unwrap(),
    );
    let retries = retry_times_of_a_herd(&svc, &flaky, 500).await;
    assert!(
        retries.iter().all(|t| *t >= Duration::from_secs(1)),
        "the hint is honoured"
    );
    let spread = Spread::in_window(
        &retries,
        Duration::from_secs(1)..Duration::from_secs(2) + MS,
        10,
    )
    .unwrap();
    assert_eq!(spread.count(), 500);
    assert!(spread.peak_to_mean() <= 1.5, "{:?}", spread.buckets());
}

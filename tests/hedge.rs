//! The Hedge layer under paused time: no hedge before the first estimate,
//! the hedge delay (the percentile plus this request's jitter), the first
//! success answers and the losers are dropped, the budget bounds hedges to
//! its share of traffic when every request is slow (gRFC A6: hedges are
//! subject to retry throttling), the gate (a breaker not closed, a
//! throttle shedding), the caller's deadline, a retry above counting one
//! attempt, cancellation refunding, and the span fields.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::breaker::Breaker;
use dephase::budget::{RatioBudget, TokenBucket};
use dephase::classify::Outcome;
use dephase::deadline::Deadline;
use dephase::hedge::{Hedge, HedgePolicy, HedgePolicyBuilder};
use dephase::retry::{Retry, RetryPolicy};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tracing::Instrument;
use tracing::field::Empty;

mod support;

const MS: Duration = Duration::from_millis(1);

/// How the backend answers its `n`-th call (0-based): after how long, and what.
type Script = Arc<dyn Fn(u32) -> (Duration, Result<u16, &'static str>) + Send + Sync>;

/// A backend that answers by script and records each call's arrival and
/// whether its future was dropped before it answered.
#[derive(Clone)]
struct Backend {
    script: Script,
    calls: Arc<AtomicU32>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    dropped: Arc<AtomicU32>,
}

struct DropCount(Arc<AtomicU32>, bool);

impl Drop for DropCount {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Backend {
    fn new(
        script: impl Fn(u32) -> (Duration, Result<u16, &'static str>) + Send + Sync + 'static,
    ) -> Self {
        Backend {
            script: Arc::new(script),
            calls: Arc::default(),
            arrivals: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u16;
    type Error = &'static str;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u16, &'static str>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.arrivals.lock().unwrap().push(Instant::now());
        let (after, result) = (self.script)(n);
        let dropped = self.dropped.clone();
        Box::pin(async move {
            let mut guard = DropCount(dropped, false);
            tokio::time::sleep(after).await;
            guard.1 = true;
            result
        })
    }
}

/// 10 ms for every call but those `slow` says, which take 1 s.
fn mostly_fast(slow: impl Fn(u32) -> bool + Send + Sync + 'static) -> Backend {
    Backend::new(move |n| {
        let after = if slow(n) {
            Duration::from_secs(1)
        } else {
            10 * MS
        };
        (after, Ok(200))
    })
}

/// A policy whose estimate is the 90th percentile over 1 s windows of at
/// least 10 latencies, no jitter unless asked.
fn policy() -> HedgePolicyBuilder {
    HedgePolicy::builder()
        .percentile(0.9)
        .window(Duration::from_secs(1))
        .min_samples(10)
        .jitter(0.0)
        .seed(7)
}

/// Sends `n` requests one after the other (they take 10 ms each), then
/// lets the window end so that the next latency rolls it.
async fn warm<S: Service<u32, Response = u16>>(service: &mut S, n: u32)
where
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        service.ready().await.unwrap().call(i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The latency that ends the window.
    service.ready().await.unwrap().call(0).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_hedge_before_a_window_with_enough_latencies() {
    let backend = mostly_fast(|n| n == 5);
    let mut hedge = Hedge::new(backend.clone(), policy().min_samples(100).build().unwrap());
    for i in 0..20 {
        hedge.ready().await.unwrap().call(i).await.unwrap();
    }
    assert_eq!(
        backend.calls(),
        20,
        "no estimate: no hedge, even for the 1 s call"
    );
    assert_eq!(hedge.policy().estimate(), None);
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_is_hedged_at_the_estimate_and_the_hedge_answers() {
    let backend = mostly_fast(|n| n == 11);
    let mut hedge = Hedge::new(backend.clone(), policy().build().unwrap());
    warm(&mut hedge, 10).await;
    let estimate = hedge.policy().estimate().expect("a window of 11 latencies");
    // Every latency was 10 ms: the estimate is the upper end of its bucket.
    assert!(estimate >= 10 * MS && estimate <= 11 * MS, "{estimate:?}");

    let start = Instant::now();
    let answer = support::bounded(hedge.ready().await.unwrap().call(0)).await;
    assert_eq!(answer, Ok(200));
    assert_eq!(
        backend.calls(),
        13,
        "11 warm-up calls, the slow original, one hedge"
    );
    let hedged_at = backend.arrivals.lock().unwrap()[12] - start;
    // Sent when the estimate had passed (the timer wakes on whole ms).
    assert!(
        hedged_at >= estimate && hedged_at <= estimate + MS,
        "{hedged_at:?}"
    );
    // Answered by the hedge, 10 ms later; the original was dropped.
    assert!(start.elapsed() <= hedged_at + 11 * MS);
    assert_eq!(backend.dropped(), 1, "the losing original is cancelled");
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_hedges_of_requests_slowed_together() {
    // After warm-up, every request is slow: a dependency slowed down for
    // everybody. Without jitter, 50 hedges fire in the same millisecond.
    let backend = mostly_fast(|n| n >= 11);
    let mut hedge = Hedge::new(
        backend.clone(),
        policy()
            .jitter(1.0)
            .cap(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    warm(&mut hedge, 10).await;
    let base = hedge.policy().base_delay().unwrap();
    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..50 {
        calls.push(hedge.ready().await.unwrap().call(i));
    }
    let _ = support::bounded(futures_util::future::join_all(calls)).await;
    let arrivals = backend.arrivals.lock().unwrap();
    let hedges: Vec<Duration> = arrivals[61..].iter().map(|at| *at - start).collect();
    assert_eq!(hedges.len(), 50);
    let mut distinct: Vec<u128> = hedges.iter().map(Duration::as_millis).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= 8,
        "hedges spread over {} ms: {distinct:?}",
        distinct.len()
    );
    // Two timer waits (the delay, then the jitter), each woken on a whole
    // millisecond.
    for at in &hedges {
        assert!(
            *at >= base && *at <= base * 2 + 2 * MS,
            "{at:?} outside [{base:?}, 2×{base:?}]"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn under_overload_a_five_percent_budget_bounds_the_extra_load() {
    // Every request after warm-up is slow: tower's Hedge would send a
    // second copy of each. A 5% ratio budget without a per-second minimum
    // lets at most 5% of requests be hedged.
    let backend = mostly_fast(|n| n >= 11);
    let budget = RatioBudget::builder()
        .ratio(0.05)
        .min_per_sec(0)
        .build()
        .unwrap();
    let mut hedge = Hedge::new(
        backend.clone(),
        policy().budget(budget.clone()).build().unwrap(),
    );
    warm(&mut hedge, 10).await;
    let before = backend.calls();
    let requests = 400;
    let mut calls = Vec::new();
    for i in 0..requests {
        calls.push(hedge.ready().await.unwrap().call(i));
    }
    let _ = support::bounded(futures_util::future::join_all(calls)).await;
    let sent = backend.calls() - before;
    let amplification = f64::from(sent) / f64::from(requests);
    // 411 deposits in the window × 5% = 20 hedges at most.
    assert!(
        amplification <= 1.06,
        "{sent} calls for {requests} requests"
    );
    assert!(sent > requests, "the budget allowed some hedges");
    // The policy counted the same: every request was due, the hedges sent
    // are the extra calls, the rest were refused by the budget.
    let stats = hedge.policy().stats();
    assert_eq!(stats.due, u64::from(requests));
    assert_eq!(stats.sent, u64::from(sent - requests));
    assert_eq!(stats.denied_by_budget, u64::from(requests) - stats.sent);
    assert_eq!(stats.denied_by_gate + stats.denied_by_deadline, 0);
}

#[tokio::test(start_paused = true)]
async fn the_first_success_answers_and_a_failure_waits_for_the_copy_in_flight() {
    // The original is slow and then fails; its hedge succeeds.
    let backend = Backend::new(|n| match n {
        11 => (Duration::from_millis(30), Err("unavailable")),
        _ => (10 * MS, Ok(200)),
    });
    let mut hedge = Hedge::new(
        backend.clone(),
        policy()
            .classify(|r: Result<&u16, &&str>| match r {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::retry("unavailable"),
            })
            .build()
            .unwrap(),
    );
    warm(&mut hedge, 10).await;
    assert_eq!(hedge.ready().await.unwrap().call(0).await, Ok(200));

    // An original that fails before its hedge is due is answered at once.
    let backend = Backend::new(|n| match n {
        11 => (MS, Err("refused")),
        _ => (10 * MS, Ok(200)),
    });
    let mut hedge = Hedge::new(backend.clone(), policy().build().unwrap());
    warm(&mut hedge, 10).await;
    let start = Instant::now();
    assert_eq!(hedge.ready().await.unwrap().call(0).await, Err("refused"));
    assert_eq!(start.elapsed(), MS);
    assert_eq!(backend.calls(), 12, "no hedge for a failure");
}

#[tokio::test(start_paused = true)]
async fn every_copy_failing_answers_the_last_failure() {
    let backend = Backend::new(|n| match n {
        11 => (Duration::from_millis(50), Err("first")),
        12 => (Duration::from_millis(100), Err("second")),
        _ => (10 * MS, Ok(200)),
    });
    let mut hedge = Hedge::new(backend.clone(), policy().build().unwrap());
    warm(&mut hedge, 10).await;
    assert_eq!(hedge.ready().await.unwrap().call(0).await, Err("second"));
    assert_eq!(backend.calls(), 13);
}

#[tokio::test(start_paused = true)]
async fn up_to_max_copies_each_one_delay_after_the_last() {
    let backend = mostly_fast(|n| (11..14).contains(&n));
    let mut hedge = Hedge::new(backend.clone(), policy().max_copies(4).build().unwrap());
    warm(&mut hedge, 10).await;
    let base = hedge.policy().base_delay().unwrap();
    let start = Instant::now();
    assert_eq!(hedge.ready().await.unwrap().call(0).await, Ok(200));
    let arrivals: Vec<Duration> = backend.arrivals.lock().unwrap()[11..]
        .iter()
        .map(|at| *at - start)
        .collect();
    // The original and three hedges (the third copy answers fast).
    assert_eq!(arrivals.len(), 4, "{arrivals:?}");
    for (k, at) in arrivals.iter().enumerate() {
        let due = base * k as u32;
        assert!(
            *at >= due && *at <= due + (k as u32) * MS,
            "copy {k} at {at:?}, due {due:?}"
        );
    }
    assert_eq!(backend.dropped(), 3, "the three slow copies are cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_says_no_stops_hedges() {
    // A breaker that is not closed (here isolated by an operator) admits
    // no hedge: in half-open its probes are bounded, and a hedge would
    // take a probe's place.
    let breaker = Breaker::builder().build().unwrap();
    let backend = mostly_fast(|n| n == 11);
    let mut hedge = Hedge::new(
        backend.clone(),
        policy().gate(breaker.clone()).build().unwrap(),
    );
    warm(&mut hedge, 10).await;
    breaker.isolate();
    hedge.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(
        backend.calls(),
        12,
        "no hedge while the breaker is not closed"
    );

    breaker.reset();
    let backend = mostly_fast(|n| n == 11 || n == 12);
    let allowed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = allowed.clone();
    let mut hedge = Hedge::new(
        backend.clone(),
        policy()
            .max_copies(3)
            .gate((breaker, move || flag.load(Ordering::SeqCst)))
            .build()
            .unwrap(),
    );
    warm(&mut hedge, 10).await;
    let call = hedge.ready().await.unwrap().call(0);
    tokio::pin!(call);
    // The first hedge goes; then the closure says no.
    tokio::select! { _ = &mut call => panic!("answered early"), _ = tokio::time::sleep(15 * MS) => {} }
    allowed.store(false, Ordering::SeqCst);
    call.await.unwrap();
    assert_eq!(
        backend.calls(),
        13,
        "one hedge before the gate closed, none after"
    );
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_callers_deadline_leaves_too_little_time() {
    let backend = mostly_fast(|n| n == 11);
    let mut hedge = Hedge::new(
        backend.clone(),
        policy()
            .min_attempt_time(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    warm(&mut hedge, 10).await;
    let call = hedge.ready().await.unwrap().call(0);
    Deadline::after(Duration::from_millis(40))
        .scope(call)
        .await
        .unwrap();
    assert_eq!(
        backend.calls(),
        12,
        "30 ms left when the hedge was due: below 50 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_above_counts_the_hedged_attempt_as_one() {
    // Each attempt: the original is slow and fails, its hedge fails fast.
    let backend = Backend::new(|n| {
        if n < 11 {
            (10 * MS, Ok(200))
        } else if n % 2 == 1 {
            (Duration::from_millis(100), Err("slow failure"))
        } else {
            (MS, Err("fast failure"))
        }
    });
    let budget = TokenBucket::aws_standard();
    let hedge = Hedge::new(
        backend.clone(),
        policy().shared_budget(budget.clone()).build().unwrap(),
    );
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let counting = tower::service_fn(move |n: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        let mut hedge = hedge.clone();
        async move { hedge.ready().await?.call(n).await }
    });
    let mut warmup = counting.clone();
    warm(&mut warmup, 10).await;
    attempts.store(0, Ordering::SeqCst);
    let before = backend.calls();
    let mut retry = Retry::new(
        counting,
        RetryPolicy::builder()
            .max_attempts(2)
            .budget(budget)
            .build()
            .unwrap(),
    );
    let answer = retry.ready().await.unwrap().call(0).await;
    assert!(answer.is_err());
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "two attempts seen by the retry"
    );
    assert_eq!(backend.calls() - before, 4, "each attempt hedged once");
}

#[tokio::test(start_paused = true)]
async fn a_hedge_granted_but_never_sent_is_refunded() {
    // A backend whose clones are never ready: the hedge is granted, then
    // waits for readiness; the caller gives up.
    #[derive(Clone)]
    struct Stuck {
        inner: Backend,
        original: bool,
    }
    impl Service<u32> for Stuck {
        type Response = u16;
        type Error = &'static str;
        type Future = <Backend as Service<u32>>::Future;
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            if self.original {
                self.inner.poll_ready(cx)
            } else {
                std::task::Poll::Pending
            }
        }
        fn call(&mut self, n: u32) -> Self::Future {
            self.inner.call(n)
        }
    }
    impl Stuck {
        fn clone_for_hedges(&self) -> Self {
            Stuck {
                inner: self.inner.clone(),
                original: false,
            }
        }
    }
    let backend = mostly_fast(|n| n >= 11);
    let budget = TokenBucket::builder()
        .capacity(10.0)
        .retry_cost(1.0)
        .build()
        .unwrap();
    let hedge_policy = policy().budget(budget.clone()).build().unwrap();
    // Warm up with a ready service, then hand the same policy a stuck one.
    let layer = dephase::hedge::HedgeLayer::new(hedge_policy);
    let mut warmup = tower::Layer::layer(&layer, backend.clone());
    warm(&mut warmup, 10).await;
    let stuck = Stuck {
        inner: backend.clone(),
        original: true,
    };
    struct Original(Stuck);
    impl Clone for Original {
        fn clone(&self) -> Self {
            Original(self.0.clone_for_hedges())
        }
    }
    impl Service<u32> for Original {
        type Response = u16;
        type Error = &'static str;
        type Future = <Backend as Service<u32>>::Future;
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, n: u32) -> Self::Future {
            self.0.call(n)
        }
    }
    let mut hedge = tower::Layer::layer(&layer, Original(stuck));
    let balance = budget.balance();
    let call = hedge.ready().await.unwrap().call(0);
    let _ = tokio::time::timeout(Duration::from_millis(100), call).await;
    assert_eq!(
        budget.balance(),
        balance,
        "the unsent hedge's withdrawal came back"
    );
}

#[tokio::test(start_paused = true)]
async fn the_span_says_when_the_hedge_was_due_how_many_went_and_who_won() {
    let (captured, _guard) = support::capture();
    let backend = mostly_fast(|n| n == 11);
    let mut hedge = Hedge::new(backend.clone(), policy().build().unwrap());
    warm(&mut hedge, 10).await;
    let base = hedge.policy().base_delay().unwrap();
    let span = tracing::info_span!(
        "request",
        dephase.hedge.delay_ms = Empty,
        dephase.hedge.sent = Empty,
        dephase.hedge.winner = Empty,
    );
    hedge
        .ready()
        .await
        .unwrap()
        .call(0)
        .instrument(span)
        .await
        .unwrap();
    let fields = captured.span("request");
    assert_eq!(
        fields["dephase.hedge.delay_ms"].as_f64(),
        base.as_secs_f64() * 1000.0
    );
    assert_eq!(fields["dephase.hedge.sent"].as_u64(), 1);
    assert_eq!(fields["dephase.hedge.winner"].as_str(), "hedge");

    // A request answered before its hedge was due records nothing.
    let span = tracing::info_span!("fast", dephase.hedge.sent = Empty);
    hedge
        .ready()
        .await
        .unwrap()
        .call(0)
        .instrument(span)
        .await
        .unwrap();
    assert!(captured.span("fast").is_empty());
}

#[test]
fn bad_settings_are_refused() {
    let field = |b: HedgePolicyBuilder| b.build().unwrap_err().field();
    assert_eq!(
        field(HedgePolicy::builder().max_copies(0)),
        "hedge.max_copies"
    );
    assert_eq!(
        field(HedgePolicy::builder().percentile(0.0)),
        "hedge.percentile"
    );
    assert_eq!(
        field(HedgePolicy::builder().percentile(f64::NAN)),
        "hedge.percentile"
    );
    assert_eq!(
        field(HedgePolicy::builder().percentile(1.5)),
        "hedge.percentile"
    );
    assert_eq!(
        field(HedgePolicy::builder().window(Duration::ZERO)),
        "hedge.window"
    );
    assert_eq!(
        field(HedgePolicy::builder().min_samples(0)),
        "hedge.min_samples"
    );
    assert_eq!(
        field(
            HedgePolicy::builder()
                .floor(Duration::from_secs(2))
                .cap(Duration::from_secs(1))
        ),
        "hedge.cap"
    );
    assert_eq!(field(HedgePolicy::builder().jitter(-0.1)), "hedge.jitter");
}

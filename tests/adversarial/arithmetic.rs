//! Thresholds and budgets against the rules their references publish,
//! checked exactly: no float comparison at a threshold, no rounding that
//! accumulates, every documented range accepted.

use std::time::Duration;

use dephase::breaker::{Breaker, State};
use dephase::budget::{RatioBudget, RetryBudget, TokenBucket};
use dephase::classify::{Classify, Outcome};
use dephase::coalesce::CoalesceLayer;
use dephase::coalesce::error::Panicked;
use dephase::http::HttpClassifier;
use dephase::pace::Pacer;
use dephase::{BoxError, ExponentialBackoff, Jitter};
use tower::{Layer, ServiceExt};

use crate::support::bounded;

fn status(code: u16) -> http::Response<()> {
    http::Response::builder().status(code).body(()).unwrap()
}

fn classify(classifier: &HttpClassifier, code: u16) -> Outcome {
    Classify::<_, BoxError>::classify(classifier, Ok(&status(code)))
}

/// `never_retry` changes retrying, not the breaker's view (fault 9): a 404
/// stays a success, a 503 stays a failure (no longer retried), a 429 too.
#[test]
fn never_retry_does_not_turn_a_client_error_into_a_failure() {
    let classifier = HttpClassifier::new()
        .never_retry(http::StatusCode::NOT_FOUND)
        .never_retry(http::StatusCode::SERVICE_UNAVAILABLE)
        .never_retry(http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(classify(&classifier, 404), Outcome::Success);
    let unavailable = classify(&classifier, 503);
    assert!(
        unavailable.is_failure() && !unavailable.is_retryable(),
        "{unavailable:?}"
    );
    let busy = classify(&classifier, 429);
    assert!(busy.is_failure() && !busy.is_retryable(), "{busy:?}");
    // And the defaults are untouched.
    assert_eq!(classify(&classifier, 400), Outcome::Success);
    assert!(classify(&classifier, 502).is_retryable());
}

/// `next_release` tells the wait a caller arriving now would really have,
/// counting turns given back by callers that went away (fault 10).
#[tokio::test(start_paused = true)]
async fn next_release_counts_turns_given_back() {
    let pacer = Pacer::builder()
        .rate(25, Duration::from_secs(1)) // one every 40 ms
        .max_wait(Duration::from_secs(10))
        .jitter(Duration::ZERO)
        .seed(1)
        .build()
        .unwrap();
    let waiting: Vec<_> = (0..22)
        .map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move { pacer.wait().await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(pacer.next_release(), Duration::from_millis(880));
    // The callers with turns at 40..=800 ms go away, earliest first: their
    // turns cannot be undone from the end of the schedule; they are given back.
    for caller in &waiting[1..21] {
        caller.abort();
    }
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pacer.returned_turns(), 20);
    assert_eq!(
        pacer.next_release(),
        Duration::from_millis(40),
        "the next caller takes the first turn given back"
    );
    let start = tokio::time::Instant::now();
    pacer.wait().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(40));
}

/// gRPC A6 retry throttling: `maxTokens` is in (0, 1000] with up to three
/// decimals — every value of that range builds (fault 11), and the bucket
/// follows A6's rules: a failure costs 1 (floored at 0), a success adds
/// `tokenRatio`, retries only while tokens > maxTokens / 2.
#[test]
fn grpc_buckets_accept_the_whole_a6_range() {
    for max_tokens in [0.001, 0.1, 0.5, 0.999, 1.0, 2.5, 1000.0] {
        let bucket = TokenBucket::grpc(max_tokens, 0.1)
            .unwrap_or_else(|e| panic!("maxTokens {max_tokens}: {e}"));
        assert_eq!(bucket.balance(), max_tokens);
        assert!(bucket.withdraw().is_some(), "a full bucket allows a retry");
    }
    let bucket = TokenBucket::grpc(0.5, 0.1).unwrap();
    bucket.on_failure(); // 0.5 - 1 → 0
    assert_eq!(bucket.balance(), 0.0);
    assert!(bucket.withdraw().is_none());
    bucket.on_success(None);
    bucket.on_success(None);
    bucket.on_success(None); // 0.3 > 0.25
    assert!((bucket.balance() - 0.3).abs() < 1e-9);
    assert!(bucket.withdraw().is_some());
    for bad in [0.0, -1.0, 1000.001, f64::NAN, f64::INFINITY] {
        assert_eq!(
            TokenBucket::grpc(bad, 0.1).unwrap_err().field(),
            "budget.max_tokens",
            "{bad}"
        );
    }
}

/// resilience4j: the breaker opens when the failure rate is *at least* the
/// threshold — exactly, for every k in 1..=100 (fault 12: 0.07 · 100 =
/// 7.000000000000001 in floating point, so 7 failures in 100 did not open).
#[tokio::test(start_paused = true)]
async fn a_failure_rate_at_exactly_the_threshold_opens() {
    for k in 1..=100u32 {
        let breaker = Breaker::builder()
            .failure_rate(f64::from(k) / 100.0)
            .minimum_calls(100)
            .window(Duration::from_secs(60))
            .build()
            .unwrap();
        for _ in 0..100 - k {
            breaker.acquire().unwrap().record(Outcome::Success);
        }
        for failure in 1..=k {
            assert_eq!(breaker.state(), State::Closed, "k = {k}, failure {failure}");
            breaker.acquire().unwrap().record(Outcome::failure("down"));
        }
        assert_eq!(
            breaker.state(),
            State::Open,
            "{k} failures in 100 calls at {k}%"
        );
    }
}

/// The README and `Breaker::builder`'s docs: by default a breaker opens for
/// 2.5–5 s (equal jitter on 5 s) the first time, and twice that the next.
#[tokio::test(start_paused = true)]
async fn the_default_open_time_is_what_the_docs_say() {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let breaker = Breaker::builder().consecutive_failures(1).build().unwrap();
        breaker.acquire().unwrap().record(Outcome::failure("down"));
        first.push(breaker.retry_after().unwrap());
        tokio::time::advance(Duration::from_secs(5)).await;
        breaker
            .acquire()
            .unwrap()
            .record(Outcome::failure("still down")); // the probe
        second.push(breaker.retry_after().unwrap());
    }
    let within = |v: &[Duration], lo: u64, hi: u64| {
        v.iter()
            .all(|d| (Duration::from_millis(lo)..=Duration::from_millis(hi)).contains(d))
    };
    assert!(within(&first, 2500, 5000), "{first:?}");
    assert!(within(&second, 5000, 10_000), "{second:?}");
    assert!(
        first.iter().any(|d| *d < Duration::from_millis(3000)),
        "spread over the range"
    );
}

/// Exponential backoff is `base · multiplierⁿ` at every step (Brooker's
/// "Exponential Backoff And Jitter"): a product of truncated products lost
/// up to a nanosecond per step, and the multiplier made those losses grow
/// (180 µs short after 30 steps of 1.5 from 1 000 001 ns).
#[test]
fn backoff_delays_do_not_accumulate_rounding() {
    let backoff = ExponentialBackoff::builder()
        .base(Duration::from_nanos(1_000_001))
        .multiplier(1.5)
        .cap(Duration::from_secs(1_000_000))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    for (n, delay) in backoff.sequence().take(31).enumerate() {
        // 1 000 001 · 3ⁿ / 2ⁿ, exactly, rounded down.
        let exact = 1_000_001u128 * 3u128.pow(n as u32) / 2u128.pow(n as u32);
        assert_eq!(delay.as_nanos(), exact, "step {n}");
    }
}

fn granted(budget: &RatioBudget) -> usize {
    std::iter::from_fn(|| budget.withdraw()).count()
}

/// Finagle / tower `TpsBudget`: `floor(ratio · deposits + reserve)` retries,
/// exactly, for small ratios too (fault 13: each deposit was rounded to a
/// millionth, and the error added up).
#[tokio::test(start_paused = true)]
async fn a_ratio_budget_grants_exactly_its_share() {
    let cases: [(f64, u64, usize); 5] = [
        (4e-7, 2_500_000, 1),   // 0.99999... with rounded deposits: 0
        (1.5e-6, 1_000_000, 1), // 2 with rounded deposits
        (0.6, 5, 3),            // tower#857: TpsBudget's truncation allows 5
        (0.1, 99, 9),
        (1e-9, 2_000_000, 0),
    ];
    for (ratio, deposits, expected) in cases {
        let budget = RatioBudget::builder()
            .ratio(ratio)
            .min_per_sec(0)
            .build()
            .unwrap();
        for _ in 0..deposits {
            budget.deposit();
        }
        assert_eq!(
            granted(&budget),
            expected,
            "ratio {ratio}, {deposits} deposits"
        );
    }
}

/// Finagle and tower accept a ratio up to 1000 (10 retries per request is
/// not Finagle's limit); above it is a `ConfigError`.
#[tokio::test(start_paused = true)]
async fn a_ratio_budget_accepts_ratios_up_to_a_thousand() {
    let budget = RatioBudget::builder()
        .ratio(1000.0)
        .min_per_sec(0)
        .build()
        .unwrap();
    budget.deposit();
    assert_eq!(granted(&budget), 1000);
    let budget = RatioBudget::builder()
        .ratio(12.5)
        .min_per_sec(0)
        .build()
        .unwrap();
    budget.deposit();
    budget.deposit();
    assert_eq!(granted(&budget), 25);
    for bad in [1000.5, -0.1, f64::NAN] {
        let error = RatioBudget::builder().ratio(bad).build().unwrap_err();
        assert_eq!(error.field(), "budget.ratio");
    }
}

/// The coalesce docs say a panic reaches every waiter as `Panicked`: it can
/// be found with `downcast_ref::<Panicked>()` on the error itself.
#[tokio::test(start_paused = true)]
async fn a_panic_reaches_waiters_as_panicked() {
    let svc =
        CoalesceLayer::new(|_: &u32| Some(0u8)).layer(tower::service_fn(|n: u32| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if n < 100 {
                panic!("the origin panicked");
            }
            Ok::<u32, BoxError>(n)
        }));
    let herd: Vec<_> = (0..5)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for caller in herd {
        let error = bounded(caller).await.unwrap().unwrap_err();
        let panicked = error
            .downcast_ref::<Panicked>()
            .unwrap_or_else(|| panic!("not a Panicked: {error:?}"));
        assert!(panicked.message().contains("the origin panicked"));
    }
}

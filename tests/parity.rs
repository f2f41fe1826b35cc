//! The options that match what resilience4j, gRPC (gRFC A6) and the AWS
//! SDKs publish, each checked against the rule it cites. Paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::{Breaker, BreakerEvent, State};
use dephase::budget::{RetryBudget, TokenBucket};
use dephase::classify::Outcome;

fn fixed_open(open: Duration) -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .base(open)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// Runs one call through `breaker` that takes `took` and ends with `outcome`.
async fn call(breaker: &Breaker, took: Duration, outcome: Outcome) {
    let permit = breaker.acquire().expect("admitted");
    tokio::time::advance(took).await;
    permit.record(outcome);
}

/// resilience4j: `slowCallDurationThreshold` + `slowCallRateThreshold` —
/// "When the percentage of slow calls is equal or greater than the
/// threshold, the CircuitBreaker transitions to open"; slow calls are
/// counted apart from failures (a slow success is not a failure).
#[tokio::test(start_paused = true)]
async fn a_slow_call_rate_opens_at_its_own_threshold() {
    let ms = Duration::from_millis;
    let breaker = || {
        Breaker::builder()
            .minimum_calls(10)
            .window(Duration::from_secs(60))
            .slow_call_rate(ms(100), 0.5)
            .build()
            .unwrap()
    };
    // 4 slow in 10: closed, and no failure counted.
    let below = breaker();
    for i in 0..10 {
        call(
            &below,
            if i < 4 { ms(200) } else { ms(1) },
            Outcome::Success,
        )
        .await;
    }
    assert_eq!(below.state(), State::Closed);
    // 5 slow in 10 (all successes): open.
    let at = breaker();
    for i in 0..10 {
        call(&at, if i < 5 { ms(200) } else { ms(1) }, Outcome::Success).await;
    }
    assert_eq!(at.state(), State::Open, "50% slow calls at a 50% threshold");
    // Slow calls are not failures: 9 slow successes with a 60% slow-call
    // rate threshold stay closed below the minimum... and the failure rate
    // (0%) does not trip either.
    let failures = Breaker::builder()
        .minimum_calls(10)
        .window(Duration::from_secs(60))
        .slow_call_rate(ms(100), 1.0)
        .build()
        .unwrap();
    for _ in 0..10 {
        call(&failures, ms(200), Outcome::Success).await;
    }
    assert_eq!(failures.state(), State::Open, "100% slow at 100%");
    assert!(
        Breaker::builder()
            .consecutive_failures(3)
            .slow_call_rate(ms(100), 0.5)
            .build()
            .is_err(),
        "a slow-call rate needs the failure-rate trip"
    );
}

/// resilience4j: `permittedNumberOfCallsInHalfOpenState` — the half-open
/// state admits that many calls, and then "if the failure rate or slow call
/// rate is equal or greater than the configured threshold, the state
/// changes back to OPEN", else to CLOSED. The default decides at once.
#[tokio::test(start_paused = true)]
async fn half_open_decided_by_the_failure_rate_of_its_probes() {
    let open = Duration::from_secs(1);
    let tripped = |by_rate: bool| {
        let mut builder = Breaker::builder()
            .consecutive_failures(1)
            .failure_rate(0.5)
            .minimum_calls(1)
            .open_time(fixed_open(open))
            .half_open_probes(4);
        if by_rate {
            builder = builder.half_open_by_failure_rate();
        }
        let breaker = builder.build().unwrap();
        breaker.acquire().unwrap().record(Outcome::failure("down"));
        assert_eq!(breaker.state(), State::Open);
        breaker
    };
    // 1 failure in 4 probes: 25% < 50%, closed.
    let breaker = tripped(true);
    tokio::time::advance(open).await;
    let probes: Vec<_> = (0..4).map(|_| breaker.acquire().unwrap()).collect();
    assert!(breaker.acquire().is_err(), "exactly 4 probes");
    for (i, probe) in probes.into_iter().enumerate() {
        assert_eq!(
            breaker.state(),
            State::HalfOpen,
            "undecided before the last probe"
        );
        probe.record(if i == 0 {
            Outcome::failure("x")
        } else {
            Outcome::Success
        });
    }
    assert_eq!(breaker.state(), State::Closed);
    // 2 failures in 4: 50% ≥ 50%, open again.
    let breaker = tripped(true);
    tokio::time::advance(open).await;
    let probes: Vec<_> = (0..4).map(|_| breaker.acquire().unwrap()).collect();
    for (i, probe) in probes.into_iter().enumerate() {
        probe.record(if i < 2 {
            Outcome::failure("x")
        } else {
            Outcome::Success
        });
    }
    assert_eq!(breaker.state(), State::Open);
    // The default: the first failed probe opens it at once.
    let breaker = tripped(false);
    tokio::time::advance(open).await;
    let mut probes: Vec<_> = (0..4).map(|_| breaker.acquire().unwrap()).collect();
    probes.remove(0).record(Outcome::failure("x"));
    assert_eq!(breaker.state(), State::Open);
}

/// Every transition and rejection reaches the listener, and the stats
/// count them.
#[tokio::test(start_paused = true)]
async fn listeners_hear_every_transition_and_stats_count_them() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let breaker = Breaker::builder()
        .consecutive_failures(1)
        .open_time(fixed_open(Duration::from_secs(1)))
        .half_open_probes(1)
        .on_event(move |event| log.lock().unwrap().push(*event))
        .build()
        .unwrap();
    breaker.acquire().unwrap().record(Outcome::failure("down"));
    assert!(breaker.acquire().is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    breaker.acquire().unwrap().record(Outcome::Success);
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            BreakerEvent::Transition {
                from: State::Closed,
                to: State::Open,
                open_for: Some(Duration::from_secs(1))
            },
            BreakerEvent::Rejected {
                state: State::Open,
                retry_after: Some(Duration::from_secs(1))
            },
            BreakerEvent::Transition {
                from: State::Open,
                to: State::HalfOpen,
                open_for: None
            },
            BreakerEvent::Transition {
                from: State::HalfOpen,
                to: State::Closed,
                open_for: None
            },
        ]
    );
    let stats = breaker.stats();
    assert_eq!(
        (
            stats.state,
            stats.transitions,
            stats.openings,
            stats.rejections
        ),
        (State::Closed, 3, 1, 1)
    );
}

/// gRFC A6: only failures with a retryable status (or a pushback) count
/// against the retry throttle; the generic bucket counts every failure.
#[test]
fn a6_counts_only_retryable_failures() {
    let grpc = TokenBucket::grpc(10.0, 0.1).unwrap();
    grpc.on_attempt_failure(false);
    assert_eq!(grpc.balance(), 10.0, "not retryable: not counted");
    grpc.on_attempt_failure(true);
    assert_eq!(grpc.balance(), 9.0, "retryable: one token");
    let every = TokenBucket::builder().failure_cost(1.0).build().unwrap();
    every.on_attempt_failure(false);
    assert_eq!(every.balance(), 499.0);
}

/// AWS SDKs' standard retry mode: `RETRY_COST` 5, `RETRY_TIMEOUT_COST` 10
/// (a retry of an attempt that timed out), `NO_RETRY_INCREMENT` 1, 500
/// tokens; a successful retry gives its cost back.
#[test]
fn aws_charges_a_timeout_retry_twice_as_much() {
    let aws = TokenBucket::aws_standard();
    let timeout = aws.withdraw_for("timeout").unwrap();
    assert_eq!(aws.balance(), 490.0);
    let other = aws.withdraw_for("unavailable").unwrap();
    assert_eq!(aws.balance(), 485.0);
    aws.on_success(Some(timeout));
    assert_eq!(aws.balance(), 495.0, "the timeout retry's 10 back");
    aws.refund(other);
    assert_eq!(aws.balance(), 500.0);
    aws.on_success(None);
    assert_eq!(aws.balance(), 500.0, "never above the capacity");
    // With 500 tokens: 50 timeout retries, or 100 others.
    let aws = TokenBucket::aws_standard();
    assert_eq!(
        std::iter::from_fn(|| aws.withdraw_for("timeout")).count(),
        50
    );
}

/// resilience4j: "the failure rate … can only be calculated, if a minimum
/// number of calls were recorded"; once they are, every call is checked.
/// Five failures and then five successes, with a minimum of ten calls and
/// a 50% threshold, open on the tenth call — a success.
#[tokio::test(start_paused = true)]
async fn the_call_that_reaches_the_minimum_trips_even_if_it_succeeds() {
    let breaker = Breaker::builder()
        .failure_rate(0.5)
        .minimum_calls(10)
        .window(Duration::from_secs(60))
        .build()
        .unwrap();
    for _ in 0..5 {
        breaker.acquire().unwrap().record(Outcome::failure("down"));
    }
    for call in 0..5 {
        assert_eq!(breaker.state(), State::Closed, "call {}", 6 + call);
        breaker.acquire().unwrap().record(Outcome::Success);
    }
    assert_eq!(breaker.state(), State::Open);
    // With no failure in the window, successes stay on the fast path.
    let healthy = Breaker::builder().minimum_calls(10).build().unwrap();
    for _ in 0..1000 {
        healthy.acquire().unwrap().record(Outcome::Success);
    }
    assert_eq!(healthy.state(), State::Closed);
}

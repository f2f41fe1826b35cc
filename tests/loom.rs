//! Loom models of the lock-free state: every interleaving of a few threads
//! over a budget and over half-open admission.
//!
//! ```text
//! RUSTFLAGS="--cfg dephase_loom" cargo test --release --test loom
//! ```
//!
//! With that cfg the crate's budget, breaker and window atomics are loom's
//! (`src/sync.rs`), so loom explores their interleavings. Without it this
//! file is empty.
#![cfg(dephase_loom)]

use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::breaker::{Breaker, State};
use dephase::budget::{RatioBudget, RetryBudget, TokenBucket};
use loom::thread;

/// How many of `threads` threads, each withdrawing once, were granted.
fn granted_of<B: RetryBudget + Clone + Send + 'static>(threads: usize, budget: &B) -> usize {
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let budget = budget.clone();
            thread::spawn(move || budget.withdraw().is_some())
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|granted| *granted)
        .count()
}

/// Three threads withdraw from a token bucket that holds two retries:
/// exactly two are granted, whatever the interleaving, and nothing is
/// overdrawn.
#[test]
fn a_token_bucket_never_grants_more_than_it_holds() {
    loom::model(|| {
        let bucket = TokenBucket::builder()
            .capacity(10.0)
            .retry_cost(5.0)
            .build()
            .unwrap();
        let granted = granted_of(3, &bucket);
        assert_eq!(granted, 2);
        assert!(bucket.balance() >= 0.0, "{}", bucket.balance());
    });
}

/// Two threads withdraw from a ratio budget that one deposit of 100%
/// pays for exactly once: never both (no overdraw). Loom also finds the
/// interleaving the budget documents: each takes, sees the other's
/// withdrawal, gives back, and neither keeps it — a race may under-grant,
/// never over-grant.
#[test]
fn a_ratio_budget_never_grants_more_than_it_holds() {
    loom::model(|| {
        let budget = RatioBudget::builder()
            .ratio(1.0)
            .min_per_sec(0)
            .build()
            .unwrap();
        budget.deposit();
        let granted = granted_of(2, &budget);
        assert!(granted <= 1, "{granted} granted from one retry's worth");
        assert!(budget.balance() >= 0.0, "{}", budget.balance());
    });
}

/// A breaker that is due to half-open lets exactly `K` probes in when
/// `K + 1` threads race for them.
#[test]
fn half_open_admits_exactly_k_probes() {
    loom::model(|| {
        let breaker = Breaker::builder()
            .consecutive_failures(1)
            .open_time(
                ExponentialBackoff::builder()
                    .base(Duration::from_nanos(1))
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .half_open_probes(1)
            .build()
            .unwrap();
        let _ = breaker.call(|| Err::<(), _>("down"));
        assert_eq!(breaker.state(), State::Open);
        std::thread::sleep(Duration::from_micros(1)); // the open time passes (real time; loom does not model it)
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.acquire().ok())
            })
            .collect();
        let permits: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(permits.len(), 1, "exactly K = 1 probe admitted");
        drop(permits);
    });
}

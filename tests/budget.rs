//! Budgets: the published arithmetic of gRPC A6, the AWS standard quota and
//! Finagle's defaults; exactness where tower's `TpsBudget` rounds (tower#857);
//! the window under paused time; refunds; no overdraw from many threads; and
//! a property test against a simple model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dephase::budget::{RatioBudget, RetryBudget, TokenBucket, Withdrawal};
use proptest::prelude::*;

mod support;

fn withdraw_all(budget: &dyn RetryBudget) -> usize {
    std::iter::from_fn(|| budget.withdraw()).count()
}

/// gRFC A6, "Retry Throttling": maxTokens 10, tokenRatio 0.1. Every failure
/// costs one token, every success adds 0.1; retries are throttled while the
/// count is at or below maxTokens / 2.
#[test]
fn grpc_a6_retry_throttling() {
    let budget = TokenBucket::grpc(10.0, 0.1).unwrap();
    assert_eq!(budget.balance(), 10.0);
    for expected in [9.0, 8.0, 7.0, 6.0] {
        budget.on_failure();
        assert_eq!(budget.balance(), expected);
        assert!(
            budget.withdraw().is_some(),
            "retries allowed above 5 tokens"
        );
    }
    budget.on_failure();
    assert_eq!(budget.balance(), 5.0);
    assert!(budget.withdraw().is_none(), "no retries at exactly half");
    budget.on_success(None);
    assert_eq!(budget.balance(), 5.1);
    assert!(budget.withdraw().is_some());
    // Floors at zero and caps at maxTokens.
    for _ in 0..100 {
        budget.on_failure();
    }
    assert_eq!(budget.balance(), 0.0);
    for _ in 0..200 {
        budget.on_success(None);
    }
    assert_eq!(budget.balance(), 10.0);
    // Exactly 51 successes bring an empty bucket above the threshold (0.1 · 51 = 5.1).
    for _ in 0..100 {
        budget.on_failure();
    }
    for _ in 0..50 {
        budget.on_success(None);
    }
    assert!(budget.withdraw().is_none());
    budget.on_success(None);
    assert!(budget.withdraw().is_some());
}

/// AWS SDK standard retry mode: a 500-token quota, 5 tokens per retry, the
/// cost refunded when the retried request succeeds, 1 token per success
/// that needed no retry.
#[test]
fn aws_standard_quota() {
    let budget = TokenBucket::aws_standard();
    assert_eq!(budget.capacity(), 500.0);
    let mut spent: Vec<Withdrawal> = (0..100).map(|_| budget.withdraw().unwrap()).collect();
    assert!(budget.withdraw().is_none(), "100 retries drain 500 tokens");
    assert_eq!(budget.balance(), 0.0);
    budget.on_success(spent.pop());
    assert_eq!(budget.balance(), 5.0, "a retried success refunds its cost");
    budget.on_success(None);
    assert_eq!(budget.balance(), 6.0, "a first-try success adds one token");
    assert_eq!(withdraw_all(&budget), 1);
    budget.on_failure();
    assert_eq!(
        budget.balance(),
        1.0,
        "failures cost nothing in standard mode"
    );
    for _ in 0..1000 {
        budget.on_success(None);
    }
    assert_eq!(budget.balance(), 500.0, "never above capacity");
}

/// Finagle's `RetryBudget()` defaults: ttl 10 s, 10 retries/s, 20%.
#[tokio::test(start_paused = true)]
async fn finagle_defaults() {
    let budget = RatioBudget::builder().build().unwrap();
    assert_eq!(budget.balance(), 100.0, "reserve = 10/s · 10 s");
    for _ in 0..1000 {
        budget.deposit();
    }
    assert_eq!(budget.balance(), 300.0, "plus 20% of 1000 requests");
    assert_eq!(withdraw_all(&budget), 300);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(budget.balance(), 0.0, "still inside the window");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        budget.balance(),
        100.0,
        "deposits and withdrawals expired, the reserve stays"
    );
}

/// tower#857: tower's `TpsBudget` turns the cost of a retry into
/// `(1 / percent) as isize` deposits, so 60% costs 1 deposit and allows 100%.
#[tokio::test(start_paused = true)]
async fn ratio_budget_is_exact_where_tower_rounds() {
    use tower::retry::budget::{Budget as _, TpsBudget};
    for (ratio, requests, retries) in [
        (0.6, 5, 3),
        (0.6, 100, 60),
        (0.3, 10, 3),
        (0.15, 20, 3),
        (0.999, 1000, 999),
        (2.5, 4, 10),
    ] {
        let ours = RatioBudget::builder()
            .min_per_sec(0)
            .ratio(ratio)
            .build()
            .unwrap();
        let tower = TpsBudget::new(Duration::from_secs(10), 0, ratio as f32);
        for _ in 0..requests {
            ours.deposit();
            tower.deposit();
        }
        assert_eq!(
            withdraw_all(&ours),
            retries,
            "ratio {ratio}, {requests} requests"
        );
        if ratio == 0.6 {
            let tower_granted = std::iter::from_fn(|| tower.withdraw().then_some(())).count();
            assert_eq!(
                tower_granted, requests,
                "tower#857 is still there: 60% allows 100%"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn entries_expire_between_fifteen_sixteenths_of_the_ttl_and_the_ttl() {
    let budget = RatioBudget::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(0)
        .ratio(1.0)
        .build()
        .unwrap();
    budget.deposit();
    tokio::time::advance(Duration::from_millis(899)).await;
    assert_eq!(budget.balance(), 1.0);
    tokio::time::advance(Duration::from_millis(101)).await;
    assert_eq!(budget.balance(), 0.0);

    // A deposit late in a slot (16 slots of 62.5 ms) expires as that slot
    // is reused, 15/16 of the ttl later.
    tokio::time::advance(Duration::from_micros(1_124_000 - 1_000_000)).await; // 1.124 s: slot 17
    budget.deposit();
    tokio::time::advance(Duration::from_micros(2_124_000 - 1_124_000)).await; // 2.124 s: slot 33 starts at 2.0625
    assert_eq!(budget.balance(), 0.0, "expired after 0.9385 s");
    budget.deposit(); // 2.124 s, slot 33
    tokio::time::advance(Duration::from_micros(3_124_999 - 2_124_000)).await; // slot 49 starts at 3.0625
    assert_eq!(budget.balance(), 0.0);
    tokio::time::advance(Duration::from_secs(1)).await;
    budget.deposit(); // 4.124999 s, slot 65 (4.0625..4.125)
    tokio::time::advance(Duration::from_micros(5_062_499 - 4_124_999)).await; // still slot 80
    assert_eq!(budget.balance(), 1.0, "alive for 15 slots");
    tokio::time::advance(Duration::from_micros(1)).await; // 5.0625 s: slot 81 reuses it
    assert_eq!(budget.balance(), 0.0);

    // A long pause expires everything at once.
    budget.deposit();
    budget.deposit();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(budget.balance(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn refunds_restore_the_balance_only_while_the_withdrawal_counts() {
    let budget = RatioBudget::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(2)
        .ratio(0.0)
        .build()
        .unwrap();
    let w = budget.withdraw().unwrap();
    assert_eq!(budget.balance(), 1.0);
    budget.refund(w);
    assert_eq!(budget.balance(), 2.0);

    let w = budget.withdraw().unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(budget.balance(), 2.0, "the withdrawal expired");
    budget.refund(w);
    assert_eq!(budget.balance(), 2.0, "so its refund adds nothing");

    let tokens = TokenBucket::builder()
        .capacity(10.0)
        .retry_cost(4.0)
        .build()
        .unwrap();
    let w = tokens.withdraw().unwrap();
    assert_eq!(tokens.balance(), 6.0);
    tokens.refund(w);
    assert_eq!(tokens.balance(), 10.0);
}

/// Many threads withdraw from (and refund to) one budget at once: what is
/// granted, minus what is refunded, is exactly what the budget held.
#[test]
fn no_overdraw_under_concurrency() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let threads = 8;
    for round in 0..20u64 {
        let ratio = RatioBudget::builder()
            .min_per_sec(0)
            .ratio(1.0)
            .build()
            .unwrap();
        let tokens = TokenBucket::builder()
            .capacity(1000.0)
            .retry_cost(1.0)
            .build()
            .unwrap();
        let deposits = 1000 + round;
        for _ in 0..deposits {
            ratio.deposit();
        }
        let budgets: [Arc<dyn RetryBudget>; 2] = [Arc::new(ratio), Arc::new(tokens)];
        for (budget, held) in budgets.iter().zip([deposits, 1000]) {
            let granted = Arc::new(AtomicU64::new(0));
            let refunded = Arc::new(AtomicU64::new(0));
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (budget, granted, refunded) =
                        (budget.clone(), granted.clone(), refunded.clone());
                    s.spawn(move || {
                        for i in 0..held {
                            if let Some(w) = budget.withdraw() {
                                granted.fetch_add(1, Ordering::Relaxed);
                                if (i + t) % 3 == 0 {
                                    budget.refund(w);
                                    refunded.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    });
                }
            });
            let drained = withdraw_all(&**budget) as u64;
            let (granted, refunded) = (
                granted.load(Ordering::Relaxed),
                refunded.load(Ordering::Relaxed),
            );
            assert_eq!(
                granted + drained - refunded,
                held,
                "round {round}: granted {granted}, refunded {refunded}, drained {drained}"
            );
            assert_eq!(budget.balance(), 0.0);
        }
    }
}

#[test]
fn builders_reject_bad_values_naming_the_field() {
    let bucket = || TokenBucket::builder();
    let ratio = || RatioBudget::builder();
    let cases = [
        (
            "budget.capacity",
            bucket().capacity(0.0).build().unwrap_err(),
        ),
        (
            "budget.capacity",
            bucket().capacity(-1.0).build().unwrap_err(),
        ),
        (
            "budget.capacity",
            bucket().capacity(f64::NAN).build().unwrap_err(),
        ),
        (
            "budget.capacity",
            bucket().capacity(f64::INFINITY).build().unwrap_err(),
        ),
        (
            "budget.initial",
            bucket().initial(501.0).build().unwrap_err(),
        ),
        (
            "budget.retry_cost",
            bucket().retry_cost(-5.0).build().unwrap_err(),
        ),
        (
            "budget.retry_cost",
            bucket().retry_cost(501.0).build().unwrap_err(),
        ),
        (
            "budget.failure_cost",
            bucket().failure_cost(f64::NAN).build().unwrap_err(),
        ),
        (
            "budget.success_reward",
            bucket()
                .success_reward(f64::NEG_INFINITY)
                .build()
                .unwrap_err(),
        ),
        (
            "budget.retry_threshold",
            bucket().retry_threshold(500.0).build().unwrap_err(),
        ),
        (
            "budget.retry_threshold",
            bucket().retry_threshold(-0.5).build().unwrap_err(),
        ),
        (
            "budget.max_tokens",
            TokenBucket::grpc(0.0, 0.1).unwrap_err(),
        ),
        (
            "budget.max_tokens",
            TokenBucket::grpc(1000.5, 0.1).unwrap_err(),
        ),
        (
            "budget.max_tokens",
            TokenBucket::grpc(f64::NAN, 0.1).unwrap_err(),
        ),
        (
            "budget.token_ratio",
            TokenBucket::grpc(10.0, 0.0).unwrap_err(),
        ),
        (
            "budget.token_ratio",
            TokenBucket::grpc(10.0, f64::NAN).unwrap_err(),
        ),
        (
            "budget.ttl",
            ratio().ttl(Duration::from_millis(999)).build().unwrap_err(),
        ),
        (
            "budget.ttl",
            ratio().ttl(Duration::from_secs(61)).build().unwrap_err(),
        ),
        ("budget.ratio", ratio().ratio(-0.1).build().unwrap_err()),
        ("budget.ratio", ratio().ratio(1000.01).build().unwrap_err()),
        ("budget.ratio", ratio().ratio(f64::NAN).build().unwrap_err()),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Deposit,
    Withdraw,
    Refund,
    Success,
    Failure,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Deposit),
        3 => Just(Op::Withdraw),
        1 => Just(Op::Refund),
        2 => Just(Op::Success),
        2 => Just(Op::Failure),
        1 => (0u64..3000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(support::proptest_config(2_000))]

    /// The token bucket against a model written with plain integers.
    #[test]
    fn token_bucket_matches_its_model(ops in proptest::collection::vec(op(), 0..200), threshold in proptest::option::of(0u64..40)) {
        let mut builder = TokenBucket::builder().capacity(40.0).retry_cost(3.0).failure_cost(2.0).success_reward(1.0);
        if let Some(t) = threshold {
            builder = builder.retry_threshold(t as f64);
        }
        let budget = builder.build().unwrap();
        let mut model: i64 = 40;
        let mut held: Vec<Withdrawal> = Vec::new();
        for op in ops {
            match op {
                Op::Withdraw => {
                    let allowed = model >= 3 && threshold.is_none_or(|t| model > t as i64);
                    let got = budget.withdraw();
                    prop_assert_eq!(got.is_some(), allowed);
                    if let Some(w) = got { model -= 3; held.push(w); }
                }
                Op::Refund => if let Some(w) = held.pop() { budget.refund(w); model = (model + 3).min(40); },
                Op::Success => match held.pop() {
                    Some(w) => { budget.on_success(Some(w)); model = (model + 3).min(40); }
                    None => { budget.on_success(None); model = (model + 1).min(40); }
                },
                Op::Failure => { budget.on_failure(); model = (model - 2).max(0); }
                Op::Deposit | Op::Advance(_) => budget.deposit(),
            }
            prop_assert_eq!(budget.balance(), model as f64);
        }
    }

    /// The ratio budget against a model that keeps every entry with its time.
    #[test]
    fn ratio_budget_matches_its_model(ops in proptest::collection::vec(op(), 0..200)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            // ttl 1 s = 16 slots of 62.5 ms; reserve 2 retries; each request 0.25 of a retry.
            let budget = RatioBudget::builder().ttl(Duration::from_secs(1)).min_per_sec(2).ratio(0.25).build().unwrap();
            let start = tokio::time::Instant::now();
            let slot = |now: tokio::time::Instant| ((now - start).as_nanos() / 62_500_000) as i64;
            // Entries in quarter-retries, by slot.
            let mut entries: Vec<(i64, i64)> = Vec::new();
            let mut held: Vec<(Withdrawal, i64)> = Vec::new();
            let live = |entries: &Vec<(i64, i64)>, now: i64| -> i64 {
                8 + entries.iter().filter(|(s, _)| now - s < 16).map(|(_, v)| v).sum::<i64>()
            };
            for op in ops {
                let now = slot(tokio::time::Instant::now());
                match op {
                    Op::Deposit => { budget.deposit(); entries.push((now, 1)); }
                    Op::Withdraw => {
                        let allowed = live(&entries, now) >= 4;
                        let got = budget.withdraw();
                        prop_assert_eq!(got.is_some(), allowed);
                        if let Some(w) = got { entries.push((now, -4)); held.push((w, now)); }
                    }
                    Op::Refund => if let Some((w, taken)) = held.pop() {
                        budget.refund(w);
                        if now - taken < 16 { entries.push((taken, 4)); }
                    },
                    Op::Success => budget.on_success(held.pop().map(|(w, _)| w)),
                    Op::Failure => budget.on_failure(),
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                }
                let now = slot(tokio::time::Instant::now());
                prop_assert_eq!(budget.balance(), live(&entries, now) as f64 / 4.0);
            }
            Ok(())
        })?;
    }
}

/// A budget built before time is paused (in the same current-thread
/// runtime) follows the paused clock: deposits expire after the ttl.
#[tokio::test]
async fn a_budget_built_before_a_pause_follows_paused_time() {
    let budget = RatioBudget::builder()
        .min_per_sec(0)
        .ratio(1.0)
        .build()
        .unwrap();
    tokio::time::pause();
    for _ in 0..5 {
        budget.deposit();
    }
    assert_eq!(budget.balance(), 5.0);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        budget.balance(),
        0.0,
        "the deposits expired with the window"
    );
}

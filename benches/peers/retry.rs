//! Success-path cost of the Retry layer against tower's `Retry` with a
//! `TpsBudget` and tower-resilience's retry with its token-bucket budget,
//! and the cost of budget operations against tower's budget —
//! measured in the same run, reported as ratios.
//!
//! ```text
//! cargo bench --bench peers -- retry_success_path budget
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use dephase::budget::{RatioBudget, RetryBudget, TokenBucket};
use dephase::retry::{Retry, RetryPolicy};
use tower::Service;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::support::{self, one_call, ready};

/// tower's documented budget policy, completed with what our policy has:
/// a jittered exponential backoff and an attempt limit — the policy a tower
/// user writes to get the same behaviour.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
    backoff: tower::retry::backoff::ExponentialBackoff,
    attempts: u32,
}

impl TowerPolicy {
    fn new() -> Self {
        let mut maker = tower::retry::backoff::ExponentialBackoffMaker::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            1.0,
            tower::util::rng::HasherRng::default(),
        )
        .expect("valid backoff");
        TowerPolicy {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            backoff: tower::retry::backoff::MakeBackoff::make_backoff(&mut maker),
            attempts: 1,
        }
    }
}

impl<E> tower::retry::Policy<u64, u64, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => {
                if self.attempts >= 3 || !self.budget.withdraw() {
                    return None;
                }
                self.attempts += 1;
                Some(tower::retry::backoff::Backoff::next_backoff(
                    &mut self.backoff,
                ))
            }
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn inner()
-> impl Service<u64, Response = u64, Error = (), Future = std::future::Ready<Result<u64, ()>>> + Clone
{
    tower::service_fn(|x: u64| std::future::ready(Ok::<u64, ()>(x)))
}

/// Times one request through `service`: `poll_ready`, `call`, poll to completion.
fn bench_service<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut service: S,
) where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            ready(&mut service);
            black_box(support::now(service.call(black_box(i)))).unwrap()
        })
    });
}

fn success_path(c: &mut Criterion) {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let mut group = c.benchmark_group("retry_success_path");
    group.throughput(Throughput::Elements(1));

    let bare = inner();
    bench_service(&mut group, "bare", bare);

    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .budget(RatioBudget::builder().build().unwrap())
        .build()
        .unwrap();
    let ours = Retry::new(inner(), policy);
    bench_service(&mut group, "dephase", ours);

    let budget = tower_resilience_retry::RetryBudgetBuilder::new()
        .token_bucket()
        .tokens_per_second(10.0)
        .max_tokens(100)
        .build()
        .unwrap();
    let resilience = tower_resilience_retry::RetryLayer::<u64, u64, ()>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .budget(budget)
        .build();
    bench_service(
        &mut group,
        "tower_resilience",
        tower::Layer::layer(&resilience, inner()),
    );

    let tower = tower::retry::Retry::new(TowerPolicy::new(), inner());
    bench_service(&mut group, "tower", tower);
    let ours_nb = Retry::new(
        inner(),
        RetryPolicy::builder().max_attempts(3).build().unwrap(),
    );
    bench_service(&mut group, "dephase_no_budget", ours_nb);
    group.finish();
}

fn budgets(c: &mut Criterion) {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let mut group = c.benchmark_group("budget");
    group.throughput(Throughput::Elements(1));

    // The floor under both ratio budgets: each deposit and withdrawal reads the clock once.
    group.bench_function("clock_read", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });

    let ratio = RatioBudget::builder().build().unwrap();
    let tps = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    group.bench_function("ratio_deposit", |b| b.iter(|| black_box(&ratio).deposit()));
    group.bench_function("tower_deposit", |b| b.iter(|| black_box(&tps).deposit()));

    // Reserves so large that every withdrawal in the run is granted.
    let ratio = RatioBudget::builder()
        .min_per_sec(u32::MAX)
        .build()
        .unwrap();
    let tps = TpsBudget::new(Duration::from_secs(10), i32::MAX as u32 - 1, 0.2);
    group.bench_function("ratio_withdraw", |b| b.iter(|| black_box(ratio.withdraw())));
    group.bench_function("tower_withdraw", |b| b.iter(|| black_box(tps.withdraw())));

    let bucket = TokenBucket::builder()
        .capacity(1e12)
        .retry_cost(0.001)
        .build()
        .unwrap();
    group.bench_function("token_bucket_withdraw", |b| {
        b.iter(|| black_box(bucket.withdraw()))
    });
    group.bench_function("token_bucket_success", |b| {
        b.iter(|| black_box(&bucket).on_success(None))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = success_path, budgets
}

/// (group, ours, peer, peer's name) for the ratio report.
pub fn ratios() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        (
            "retry_success_path",
            "dephase",
            "tower",
            "tower Retry + TpsBudget",
        ),
        (
            "retry_success_path",
            "dephase",
            "tower_resilience",
            "tower-resilience retry + token bucket",
        ),
        ("retry_success_path", "dephase", "bare", "no retry layer"),
        (
            "retry_success_path",
            "tower",
            "bare",
            "(tower vs no retry layer)",
        ),
        (
            "retry_success_path",
            "dephase_no_budget",
            "bare",
            "no retry layer",
        ),
        (
            "budget",
            "ratio_deposit",
            "tower_deposit",
            "tower TpsBudget::deposit",
        ),
        (
            "budget",
            "ratio_withdraw",
            "tower_withdraw",
            "tower TpsBudget::withdraw",
        ),
    ]
}

/// The same comparisons in paired rounds (see `support::paired`).
pub fn paired() -> Vec<serde_json::Value> {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .budget(RatioBudget::builder().build().unwrap())
        .build()
        .unwrap();
    let (mut ours, mut tower) = (
        Retry::new(inner(), policy),
        tower::retry::Retry::new(TowerPolicy::new(), inner()),
    );
    let (mut i, mut j) = (0, 0);
    let mut lines = vec![support::paired(
        "retry_success_path/dephase",
        "tower Retry + TpsBudget",
        20_000,
        || one_call(&mut ours, &mut i),
        || one_call(&mut tower, &mut j),
    )];
    // The floor of a success path that shares its policy with the layer
    // (an `Arc` cloned into the future and dropped with it: two atomic
    // read-modify-writes) and deposits into a Finagle budget (a clock read
    // and one more): what is left of ours when everything else is gone.
    let (shared, budget) = (
        Arc::new(RetryPolicy::builder().build().unwrap()),
        RatioBudget::builder().build().unwrap(),
    );
    let mut tower = tower::retry::Retry::new(TowerPolicy::new(), inner());
    lines.push(support::paired(
        "retry_success_path/floor (Arc + deposit)",
        "tower Retry + TpsBudget",
        20_000,
        || {
            let policy = black_box(Arc::clone(&shared));
            black_box(&budget).deposit();
            drop(policy);
        },
        || one_call(&mut tower, &mut j),
    ));
    let ratio = RatioBudget::builder().build().unwrap();
    let tps = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    lines.push(support::paired(
        "budget/ratio_deposit",
        "tower TpsBudget::deposit",
        50_000,
        || black_box(&ratio).deposit(),
        || black_box(&tps).deposit(),
    ));
    // Reserves so large that every withdrawal in the run is granted.
    let ratio = RatioBudget::builder()
        .min_per_sec(u32::MAX)
        .build()
        .unwrap();
    let tps = TpsBudget::new(Duration::from_secs(10), i32::MAX as u32 - 1, 0.2);
    lines.push(support::paired(
        "budget/ratio_withdraw",
        "tower TpsBudget::withdraw",
        50_000,
        || {
            black_box(ratio.withdraw());
        },
        || {
            black_box(tps.withdraw());
        },
    ));
    lines
}

//! Success-path cost of the Hedge layer (the original answers before its
//! hedge is due: no hedge sent) against tower's `Hedge`, both with a
//! latency estimate so that both arm their hedge, in the same run.
//!
//! ```text
//! cargo bench --bench peers -- hedge_success_path
//! ```

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use dephase::budget::RatioBudget;
use dephase::hedge::{Hedge, HedgePolicy, HedgePolicyBuilder};
use tower::Service;

use crate::support;

type Never = std::convert::Infallible;

use support::{echo as inner, one_call};

/// tower's hedge policy: every request may be copied and hedged.
#[derive(Clone)]
struct EveryRequest;

impl tower::hedge::Policy<u64> for EveryRequest {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }

    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

/// tower's `Hedge` with a histogram already holding latencies of 1 to 100
/// ms (its estimate is their 90th percentile).
fn tower_hedge() -> impl Service<u64, Response = u64, Error = tower::BoxError> {
    let latencies: Vec<u64> = (1..=100).collect();
    tower::hedge::Hedge::new_with_mock_latencies(
        inner(),
        EveryRequest,
        10,
        0.9,
        Duration::from_secs(10),
        &latencies,
    )
}

/// Our `Hedge`, with an estimate learnt from one short window of calls.
fn ours(
    builder: HedgePolicyBuilder<
        dephase::classify::RetryErrors,
        dephase::retry::CloneRequests,
        impl dephase::budget::RetryBudget + Clone,
    >,
) -> impl Service<u64, Response = u64, Error = Never> {
    let policy = builder
        .window(Duration::from_millis(20))
        .min_samples(10)
        .floor(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut hedge = Hedge::new(inner(), policy);
    for i in 0..10 {
        one_call(&mut hedge, &mut { i });
    }
    std::thread::sleep(Duration::from_millis(25));
    one_call(&mut hedge, &mut 0);
    assert!(
        hedge.policy().estimate().is_some(),
        "an estimate, so the hedge is armed"
    );
    hedge
}

fn budget() -> RatioBudget {
    RatioBudget::builder().ratio(0.05).build().unwrap()
}

fn success_path(c: &mut Criterion) {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let mut group = c.benchmark_group("hedge_success_path");
    group.throughput(Throughput::Elements(1));
    let mut bench = |name: &str, mut service: Box<dyn FnMut(&mut u64)>| {
        group.bench_function(name, |b| {
            let mut i = 0u64;
            b.iter(|| service(&mut i))
        });
    };
    let mut bare = inner();
    bench("bare", Box::new(move |i| one_call(&mut bare, i)));
    let mut dephase = ours(HedgePolicy::builder().budget(budget()));
    bench("dephase", Box::new(move |i| one_call(&mut dephase, i)));
    let mut dephase_nb = ours(HedgePolicy::builder().budget(dephase::budget::NoBudget));
    bench(
        "dephase_no_budget",
        Box::new(move |i| one_call(&mut dephase_nb, i)),
    );
    let mut tower = tower_hedge();
    bench("tower", Box::new(move |i| one_call(&mut tower, i)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = success_path
}

/// (group, ours, peer, peer's name) for the ratio report.
pub fn ratios() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        (
            "hedge_success_path",
            "dephase",
            "tower",
            "tower Hedge (no budget)",
        ),
        (
            "hedge_success_path",
            "dephase_no_budget",
            "tower",
            "tower Hedge (no budget)",
        ),
        ("hedge_success_path", "dephase", "bare", "no hedge layer"),
    ]
}

/// The same comparison in paired rounds.
pub fn paired() -> Vec<serde_json::Value> {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let (mut ours, mut tower) = (ours(HedgePolicy::builder().budget(budget())), tower_hedge());
    let (mut i, mut j) = (0, 0);
    vec![support::paired(
        "hedge_success_path/dephase",
        "tower Hedge (no budget)",
        20_000,
        || one_call(&mut ours, &mut i),
        || one_call(&mut tower, &mut j),
    )]
}

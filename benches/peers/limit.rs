//! Success-path cost of the adaptive concurrency limit (a slot free: take
//! it, call, sample the round trip, release) against tower's
//! `ConcurrencyLimit` (a semaphore permit taken in `poll_ready`), in the
//! same run.
//!
//! ```text
//! cargo bench --bench peers -- limit_success_path
//! ```

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use dephase::limit::{ConcurrencyLimit, Gradient2, Limiter};
use tower::Service;

use crate::support;

type Never = std::convert::Infallible;

use support::{echo as inner, one_call};

fn ours() -> impl Service<u64, Response = u64, Error = dephase::BoxError> {
    let limiter = Limiter::builder()
        .algorithm(Gradient2::new())
        .build()
        .unwrap();
    ConcurrencyLimit::new(inner(), limiter)
}

fn tower_limit() -> impl Service<u64, Response = u64, Error = Never> {
    tower::limit::ConcurrencyLimit::new(inner(), 20)
}

fn success_path(c: &mut Criterion) {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let mut group = c.benchmark_group("limit_success_path");
    group.throughput(Throughput::Elements(1));
    let mut bare = inner();
    group.bench_function("bare", |b| {
        let mut i = 0;
        b.iter(|| one_call(&mut bare, &mut i))
    });
    let mut dephase = ours();
    group.bench_function("dephase", |b| {
        let mut i = 0;
        b.iter(|| one_call(&mut dephase, &mut i))
    });
    let mut tower = tower_limit();
    group.bench_function("tower", |b| {
        let mut i = 0;
        b.iter(|| one_call(&mut tower, &mut i))
    });
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
            "limit_success_path",
            "dephase",
            "tower",
            "tower ConcurrencyLimit (fixed)",
        ),
        ("limit_success_path", "dephase", "bare", "no limit layer"),
    ]
}

/// The same comparison in paired rounds.
pub fn paired() -> Vec<serde_json::Value> {
    let server = support::server_runtime();
    let _built_in = server.enter();
    let (mut ours, mut tower) = (ours(), tower_limit());
    let (mut i, mut j) = (0, 0);
    vec![support::paired(
        "limit_success_path/dephase",
        "tower ConcurrencyLimit (fixed)",
        50_000,
        || one_call(&mut ours, &mut i),
        || one_call(&mut tower, &mut j),
    )]
}

//! The closed-path cost of a circuit breaker — what every healthy call pays
//! — against tower-resilience's circuit breaker, failsafe and recloser, on
//! one thread and on two threads sharing one breaker. Measured in the same
//! run; ratios printed and written to `target/peers.json` (with the other peers).
//!
//! ```text
//! cargo bench --bench peers -- breaker
//! ```
//!
//! tower services (ours, tower-resilience) are timed as `poll_ready` +
//! `call` + polling the response to completion; recloser's
//! `AsyncRecloser` wraps a ready future the same way. failsafe and
//! recloser's `call` guard a closure, next to our `Breaker::call` (the same
//! work) and `Breaker::acquire` + `Permit::record` (an owned permit).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use dephase::breaker::{Breaker, CircuitBreakerLayer};
use dephase::classify::Outcome;
use failsafe::CircuitBreaker as _;
use tower::{Layer, Service};

/// Wakes a parked thread.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future on this thread, parking while it is pending (a contended
/// async mutex can make a future pending on two threads).
fn block_on<F: Future>(future: F, waker: &Waker) -> F::Output {
    let mut cx = Context::from_waker(waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn thread_waker() -> Waker {
    Waker::from(std::sync::Arc::new(Unpark(std::thread::current())))
}

fn call_once<S: Service<u64>>(service: &mut S, i: u64, waker: &Waker) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    block_on(std::future::poll_fn(|cx| service.poll_ready(cx)), waker).unwrap();
    block_on(service.call(i), waker).unwrap()
}

fn inner() -> impl Service<
    u64,
    Response = u64,
    Error = std::io::Error,
    Future = std::future::Ready<Result<u64, std::io::Error>>,
> + Clone {
    tower::service_fn(|x: u64| std::future::ready(Ok::<u64, std::io::Error>(x)))
}

/// The contenders, each a closure that makes one guarded call; `make` is
/// called once per thread (a tower service is cloned per thread, sharing
/// its breaker).
/// Makes, once per thread, a closure that makes one guarded call.
type Contender = Box<dyn Fn() -> Box<dyn FnMut(u64) + Send> + Sync>;

fn contenders() -> Vec<(&'static str, Contender)> {
    let ours = CircuitBreakerLayer::new(Breaker::builder().build().unwrap()).layer(inner());
    let breaker = Breaker::builder().build().unwrap();
    let resilience = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
        .layer(inner());
    let failsafe = failsafe::Config::new().build();
    let recloser = std::sync::Arc::new(recloser::Recloser::default());
    let recloser_async = recloser::AsyncRecloser::from(recloser::Recloser::default());
    let breaker_call = Breaker::builder().build().unwrap();
    vec![
        (
            "bare",
            Box::new(move || {
                let mut s = inner();
                let mut waker = None;
                Box::new(move |i| {
                    let waker = waker.get_or_insert_with(thread_waker);
                    black_box(call_once(&mut s, i, waker));
                })
            }),
        ),
        (
            "dephase",
            Box::new(move || {
                let mut s = ours.clone();
                let mut waker = None;
                Box::new(move |i| {
                    let waker = waker.get_or_insert_with(thread_waker);
                    black_box(call_once(&mut s, i, waker));
                })
            }),
        ),
        (
            "dephase_permit",
            Box::new(move || {
                let b = breaker.clone();
                Box::new(move |i| {
                    let permit = b.acquire().unwrap();
                    black_box(i);
                    permit.record(Outcome::Success);
                })
            }),
        ),
        (
            "dephase_call",
            Box::new(move || {
                let b = breaker_call.clone();
                Box::new(move |i| {
                    black_box(b.call(|| Ok::<u64, ()>(i)).unwrap().unwrap());
                })
            }),
        ),
        (
            "recloser_async",
            Box::new(move || {
                let r = recloser_async.clone();
                let mut waker = None;
                Box::new(move |i| {
                    let waker = waker.get_or_insert_with(thread_waker);
                    black_box(
                        block_on(r.call(std::future::ready(Ok::<u64, ()>(i))), waker).unwrap(),
                    );
                })
            }),
        ),
        (
            "tower_resilience",
            Box::new(move || {
                let mut s = resilience.clone();
                let mut waker = None;
                Box::new(move |i| {
                    let waker = waker.get_or_insert_with(thread_waker);
                    black_box(call_once(&mut s, i, waker));
                })
            }),
        ),
        (
            "failsafe",
            Box::new(move || {
                let f = failsafe.clone();
                Box::new(move |i| {
                    black_box(f.call(|| Ok::<u64, ()>(i)).unwrap());
                })
            }),
        ),
        (
            "recloser",
            Box::new(move || {
                let r = recloser.clone();
                Box::new(move |i| {
                    black_box(r.call(|| Ok::<u64, ()>(i)).unwrap());
                })
            }),
        ),
    ]
}

fn closed_path(c: &mut Criterion) {
    let contenders = contenders();
    for threads in [1usize, 2, 4] {
        let mut group = c.benchmark_group(format!("breaker_closed_path_{threads}_threads"));
        group.throughput(Throughput::Elements(1));
        for (name, make) in &contenders {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    // Wall time for every thread to make `iters` calls: the
                    // time per call as each thread sees it.
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let mut call = make();
                            s.spawn(move || {
                                for i in 0..iters {
                                    call(i);
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = closed_path
}

/// (group, ours, peer, peer's name) for the ratio report.
pub fn ratios() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    let mut pairs = Vec::new();
    for threads in ["1", "2", "4"] {
        let group: &'static str =
            Box::leak(format!("breaker_closed_path_{threads}_threads").into_boxed_str());
        pairs.push((
            group,
            "dephase",
            "tower_resilience",
            "tower-resilience (tower layer)",
        ));
        pairs.push((
            group,
            "dephase",
            "recloser_async",
            "recloser AsyncRecloser (future)",
        ));
        pairs.push((group, "dephase_call", "recloser", "recloser call (closure)"));
        pairs.push((group, "dephase_call", "failsafe", "failsafe call (closure)"));
        pairs.push((
            group,
            "dephase_permit",
            "recloser",
            "recloser call (closure)",
        ));
    }
    // How each path scales: its cost per call on 2 and 4 threads against 1
    // (an empty group: each name is a whole `group/function`).
    for (ours, one) in [
        (
            "breaker_closed_path_2_threads/dephase",
            "breaker_closed_path_1_threads/dephase",
        ),
        (
            "breaker_closed_path_4_threads/dephase",
            "breaker_closed_path_1_threads/dephase",
        ),
        (
            "breaker_closed_path_2_threads/dephase_permit",
            "breaker_closed_path_1_threads/dephase_permit",
        ),
        (
            "breaker_closed_path_2_threads/dephase_call",
            "breaker_closed_path_1_threads/dephase_call",
        ),
        (
            "breaker_closed_path_4_threads/bare",
            "breaker_closed_path_1_threads/bare",
        ),
    ] {
        pairs.push(("", ours, one, "the same on 1 thread"));
    }
    pairs
}

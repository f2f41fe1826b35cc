//! The other fleet stores, replicas in one process (each its own store and
//! connection, as separate processes would have): a gate, a pacer and a
//! retry budget shared through Redis, against what each replica does alone.
//! `tests/fleet_*.rs` run the same on real processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dephase::budget::{RatioBudget, RetryBudget};
use dephase::pace::Pacer;
use dephase::redis::{FleetBudget, FleetGate, FleetPacer};

/// 100 jobs over 10 replicas, at most 5 at once across them (each job holds
/// its slot 20 ms): the most holders seen at once, and the time for all.
pub async fn gate(url: &str) -> (usize, Duration) {
    let replicas: Vec<FleetGate> = (0..10)
        .map(|_| {
            FleetGate::builder(url, "remediation")
                .slots(5)
                .lease_ttl(Duration::from_secs(2))
                .restart_grace(false)
                .max_wait(Duration::from_secs(30))
                .build()
                .expect("valid settings")
        })
        .collect();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let jobs: Vec<_> = (0..100)
        .map(|i| {
            let (gate, now, peak) = (replicas[i % 10].clone(), now.clone(), peak.clone());
            tokio::spawn(async move {
                let slot = gate.acquire().await.expect("a slot within 30 s");
                peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                slot.release().await;
            })
        })
        .collect();
    for job in jobs {
        job.await.expect("the job ran");
    }
    (peak.load(Ordering::SeqCst), started.elapsed())
}

/// 10 replicas × 30 callers at once, a quota of 100 a second: the most
/// releases in any 100 ms, and when the last went — with one fleet pacer's
/// schedule, and with a pacer per replica.
pub async fn pacer(url: &str) -> [(usize, Duration); 2] {
    let fleet: Vec<FleetPacer> = (0..10)
        .map(|_| {
            FleetPacer::builder(url, "warmup")
                .rate(100, Duration::from_secs(1))
                .build()
                .expect("valid settings")
        })
        .collect();
    for pacer in &fleet {
        pacer.wait().await.expect("a turn"); // each replica connected
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shared = releases(10, 30, |r| {
        let pacer = fleet[r].clone();
        async move { pacer.wait().await.map(|_| ()) }
    })
    .await;
    let alone: Vec<Pacer> = (0..10)
        .map(|_| {
            Pacer::builder()
                .rate(100, Duration::from_secs(1))
                .build()
                .expect("valid settings")
        })
        .collect();
    let separate = releases(10, 30, |r| {
        let pacer = alone[r].clone();
        async move { pacer.wait().await.map(|_| ()) }
    })
    .await;
    [summary(shared), summary(separate)]
}

async fn releases<F, Fut>(replicas: usize, callers: usize, wait: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut:
        std::future::Future<Output = Result<(), dephase::pace::error::Overloaded>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..replicas * callers)
        .map(|i| {
            let turn = wait(i % replicas);
            tokio::spawn(async move {
                turn.await.expect("a turn within the maximum wait");
                started.elapsed()
            })
        })
        .collect();
    let mut times = Vec::with_capacity(tasks.len());
    for task in tasks {
        times.push(task.await.expect("the caller ran"));
    }
    times
}

/// The most releases within any 100 ms, and the last release.
fn summary(mut times: Vec<Duration>) -> (usize, Duration) {
    times.sort_unstable();
    let (mut best, mut start) = (0, 0);
    for end in 0..times.len() {
        while times[end] - times[start] >= Duration::from_millis(100) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    (best, times.last().copied().unwrap_or_default())
}

/// `replicas` replicas asking for a retry every millisecond for 2 s (the
/// origin is down): retries granted per second, with a fleet budget of 50
/// a second, and with a `RatioBudget` of 50 a second per replica.
pub async fn budget(url: &str, replicas: usize) -> [f64; 2] {
    let run = Duration::from_secs(2);
    let fleet: Vec<FleetBudget> = (0..replicas)
        .map(|_| {
            FleetBudget::builder(url, format!("payments-{replicas}"))
                .reserve_per_sec(50.0)
                .ratio(0.0)
                .batch(5)
                .cap(5.0)
                .sync_every(Duration::from_millis(50))
                .build()
                .expect("valid settings")
        })
        .collect();
    let alone: Vec<RatioBudget> = (0..replicas)
        .map(|_| {
            RatioBudget::builder()
                .ratio(0.0)
                .min_per_sec(50)
                .ttl(Duration::from_secs(1))
                .build()
                .expect("valid settings")
        })
        .collect();
    [
        flood(&fleet, run).await as f64 / run.as_secs_f64(),
        flood(&alone, run).await as f64 / run.as_secs_f64(),
    ]
}

/// Every replica asks for a retry (after a request's deposit) every
/// millisecond for `run`; the retries granted across them.
pub async fn flood<B: RetryBudget + Clone + 'static>(replicas: &[B], run: Duration) -> u64 {
    let granted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|budget| {
            let granted = granted.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                while started.elapsed() < run {
                    tick.tick().await;
                    budget.deposit();
                    if budget.withdraw().is_some() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("the replica ran");
    }
    granted.load(Ordering::Relaxed)
}

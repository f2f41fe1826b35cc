//! The fleet retry budget against a real `redis-server` on a loopback port:
//! one reserve for every replica, deposits that fund retries elsewhere,
//! the local share while Redis is away — with no round trip per request.
//!
//! Redis runs on the real clock, so these tests do too: the assertions are
//! about counts over windows of seconds, with the staleness bound the docs
//! state (`replicas × batch`) as the margin.
#![cfg(feature = "redis")]

#[allow(dead_code)]
#[path = "../examples/fleet/main.rs"]
mod fleet;
mod support;

use std::time::{Duration, Instant};

use dephase::budget::{RatioBudget, RetryBudget};
use dephase::redis::FleetBudget;
use fleet::server::RedisServer;

fn server() -> Option<RedisServer> {
    fleet::server::for_test()
}

/// A replica's budget: `reserve` retries a second for the fleet, no ratio,
/// a bucket of one batch (so that the reserve, not a stored burst, is
/// what the flood sees).
fn budget(server: &RedisServer, name: &str, reserve: f64) -> FleetBudget {
    FleetBudget::builder(server.url(), name)
        .reserve_per_sec(reserve)
        .ratio(0.0)
        .batch(5)
        .cap(5.0)
        .sync_every(Duration::from_millis(50))
        .op_timeout(Duration::from_millis(250))
        .build()
        .unwrap()
}

use fleet::rest::flood;

/// The issue's retry flood, in one process: whatever the number of
/// replicas, the fleet's retries follow the one reserve (50 a second);
/// per-replica reserves multiply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_retries_at_one_reserve_whatever_its_size() {
    let Some(server) = server() else { return };
    let run = Duration::from_secs(2);
    for n in [1usize, 5] {
        let name = format!("flood-{n}");
        let replicas: Vec<FleetBudget> = (0..n).map(|_| budget(&server, &name, 50.0)).collect();
        let granted = flood(&replicas, run).await;
        let failed: u64 = replicas.iter().map(|r| r.stats().failed_syncs).sum();
        assert_eq!(
            failed, 0,
            "every sync reached Redis (else the fallback decided)"
        );
        // 2 s of 50 a second, the bucket's 5, and up to a batch per
        // replica leased and spent ahead of the bucket.
        let most = 100 + 5 + 5 * n as u64;
        eprintln!("{n} replicas: {granted} retries in {run:?}");
        assert!(
            granted <= most,
            "{n} replicas: {granted} retries, at most {most}"
        );
        assert!(granted >= 80, "{n} replicas: only {granted} retries");
    }
    // Per-replica reserves: five times as many.
    let separate: Vec<RatioBudget> = (0..5)
        .map(|_| {
            RatioBudget::builder()
                .ratio(0.0)
                .min_per_sec(50)
                .build()
                .unwrap()
        })
        .collect();
    let granted = flood(&separate, run).await;
    assert!(granted >= 400, "per-replica reserves: {granted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replicas_requests_fund_anothers_retries() {
    let Some(server) = server() else { return };
    let build = || {
        FleetBudget::builder(server.url(), "ratio")
            .reserve_per_sec(0.0)
            .ratio(0.5)
            .cap(100.0)
            .batch(100)
            .sync_every(Duration::from_millis(20))
            .op_timeout(Duration::from_millis(250))
            .build()
            .unwrap()
    };
    let (sender, retrier) = (build(), build());
    // The bucket starts full (100): spend it first.
    for _ in 0..100 {
        retrier.withdraw();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drained = Instant::now();
    while retrier.withdraw().is_some() || drained.elapsed() < Duration::from_millis(200) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(retrier.withdraw().is_none(), "drained");
    // 100 requests on one replica: 50 retries for the other.
    for _ in 0..100 {
        sender.deposit();
    }
    let mut got = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        if retrier.withdraw().is_some() {
            got += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Every replica keeps at least one token leased: the sender's own.
    let held = sender.stats().pool;
    assert_eq!(
        got + held,
        50,
        "100 requests at a ratio of 0.5 ({held} held by the sender)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_goes_back_to_the_pool() {
    let Some(server) = server() else { return };
    let budget = budget(&server, "refund", 50.0);
    budget.deposit(); // starts the sync
    let start = Instant::now();
    let withdrawal = loop {
        if let Some(w) = budget.withdraw() {
            break w;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no token leased");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let before = budget.balance();
    budget.refund(withdrawal);
    assert_eq!(budget.balance(), before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_keeps_its_share() {
    let budget = FleetBudget::builder("redis://127.0.0.1:1/", "alone")
        .reserve_per_sec(100.0)
        .replicas(10) // 10 a second here
        .ratio(0.0)
        .sync_every(Duration::from_millis(20))
        .op_timeout(Duration::from_millis(10))
        .build()
        .unwrap();
    budget.deposit();
    let start = Instant::now();
    // Two failed syncs in a row hand the decision to the local share.
    while budget.stats().failed_syncs < 2 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let granted = (0..100).filter(|_| budget.withdraw().is_some()).count();
    // The local share's reserve: 10 a second over its 10 s window.
    assert_eq!(
        granted, 100,
        "the local RatioBudget's reserve (10/s × 10 s)"
    );
    assert!(budget.withdraw().is_none());
}

#[test]
fn bad_settings_are_errors() {
    let field = |b: dephase::redis::FleetBudgetBuilder| b.build().unwrap_err().field();
    let b = || FleetBudget::builder("redis://127.0.0.1:6379/", "b");
    assert_eq!(
        field(FleetBudget::builder("http://x", "b")),
        "fleet_budget.url"
    );
    assert_eq!(
        field(FleetBudget::builder("redis://127.0.0.1/", "")),
        "fleet_budget.name"
    );
    assert_eq!(
        field(b().reserve_per_sec(f64::NAN)),
        "fleet_budget.reserve_per_sec"
    );
    assert_eq!(
        field(b().reserve_per_sec(-1.0)),
        "fleet_budget.reserve_per_sec"
    );
    assert_eq!(field(b().ratio(f64::INFINITY)), "fleet_budget.ratio");
    assert_eq!(field(b().batch(0)), "fleet_budget.batch");
    assert_eq!(field(b().batch(10).cap(5.0)), "fleet_budget.cap");
    assert_eq!(
        field(b().sync_every(Duration::ZERO)),
        "fleet_budget.sync_every"
    );
    assert_eq!(field(b().replicas(0)), "fleet_budget.replicas");
    assert_eq!(
        field(b().op_timeout(Duration::ZERO)),
        "fleet_budget.op_timeout"
    );
    // The defaults build.
    assert!(b().build().is_ok());
}

/// What the worker processes of [`processes_retry_at_the_fleets_reserve`]
/// run: not a test of its own (ignored; the parent starts it with
/// `DEPHASE_BUDGET_WORKER=<redis url> <origin> <fleet|local> <name> <start, ms since the epoch>`).
#[test]
#[ignore = "the body of a worker process, started by the multi-process test"]
fn budget_worker_process() {
    let spec = std::env::var("DEPHASE_BUDGET_WORKER").expect("started by the parent test");
    let parts: Vec<String> = spec.split(' ').map(str::to_owned).collect();
    let start_ms: u64 = parts[4].parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let fleet = FleetBudget::builder(parts[0].clone(), parts[3].clone())
            .reserve_per_sec(50.0)
            .ratio(0.0)
            .batch(5)
            .cap(5.0)
            .sync_every(Duration::from_millis(50))
            .op_timeout(Duration::from_millis(250))
            .build()
            .unwrap();
        let local = RatioBudget::builder()
            .ratio(0.0)
            .min_per_sec(50)
            .ttl(Duration::from_secs(1))
            .build()
            .unwrap();
        let budget: Box<dyn RetryBudget> = if parts[2] == "fleet" {
            Box::new(fleet)
        } else {
            Box::new(local)
        };
        // One byte per retry on one connection to the origin.
        let mut origin = std::net::TcpStream::connect(&parts[1]).unwrap();
        let now_ms = support::epoch_ms();
        budget.deposit(); // starts the sync before the flood
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms))).await;
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while start.elapsed() < Duration::from_secs(3) {
            tick.tick().await;
            if budget.withdraw().is_some() {
                std::io::Write::write_all(&mut origin, b"r").unwrap();
            }
        }
    });
}

/// Retries that reached the origin from `processes` processes flooding
/// their budgets for 3 s.
async fn retries(server: &RedisServer, mode: &str, processes: usize) -> usize {
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = origin.local_addr().unwrap();
    let start_ms = support::epoch_ms() + 1500;
    let name = format!("processes-{mode}-{processes}");
    let spec = format!("{} {address} {mode} {name} {start_ms}", server.url());
    let mut children: Vec<_> = (0..processes)
        .map(|_| support::worker("budget_worker_process", "DEPHASE_BUDGET_WORKER", &spec))
        .collect();
    // Each worker's connection, read to its end: the bytes are retries.
    let mut readers = Vec::new();
    for _ in 0..processes {
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(30), origin.accept())
            .await
            .expect("every worker connects")
            .unwrap();
        readers.push(tokio::spawn(async move {
            let mut bytes = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes)
                .await
                .unwrap();
            bytes.len()
        }));
    }
    let mut count = 0;
    for reader in readers {
        count += reader.await.unwrap();
    }
    for child in &mut children {
        assert!(tokio::task::block_in_place(|| child.wait().unwrap()).success());
    }
    count
}

/// The issue's retry flood on real processes: a fleet budget of 50 retries
/// a second, the origin down (every request retried), 1, 5 and 10
/// processes: the origin sees about 50 retries a second whatever the
/// number; with a reserve per process, 50 per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_retry_at_the_fleets_reserve() {
    let Some(server) = server() else { return };
    for processes in [1usize, 5, 10] {
        let count = retries(&server, "fleet", processes).await;
        let per_sec = count as f64 / 3.0;
        eprintln!("{processes} processes, fleet budget: {count} retries in 3 s ({per_sec:.1}/s)");
        // 3 s at 50 a second, plus the bucket's 5 and a batch per process.
        assert!(count <= 150 + 5 + 5 * processes, "{count}");
        assert!(count >= 135, "{count}");
    }
    let count = retries(&server, "local", 10).await;
    eprintln!("10 processes, a reserve each: {count} retries in 3 s");
    assert!(count >= 1000, "{count}");
}

/// Redis killed mid-run and restarted: every retry is decided (by the local
/// share meanwhile), with one `WARN` when Redis is lost and one `INFO` when
/// it is back.
#[tokio::test]
async fn redis_down_and_back_decides_every_retry_and_says_so_once() {
    let Some(mut server) = server() else { return };
    let (captured, _guard) = support::capture();
    let budget = FleetBudget::builder(server.url(), "outage")
        .reserve_per_sec(100.0)
        .replicas(2)
        .sync_every(Duration::from_millis(20))
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let step = |budget: &FleetBudget| {
        budget.deposit();
        budget.withdraw()
    };
    while budget.stats().syncs < 3 {
        step(&budget);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop();
    let mut fallback_granted = 0;
    let started = Instant::now();
    while budget.stats().failed_syncs < 2 || fallback_granted == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            budget.stats()
        );
        if budget.stats().failed_syncs >= 2 && step(&budget).is_some() {
            fallback_granted += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.restart().unwrap();
    let started = Instant::now();
    while captured
        .events_with("dephase::redis", "reachable again")
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "Redis never came back: {:?}",
            budget.stats()
        );
        step(&budget);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        captured
            .events_with("dephase::redis", "Redis is unreachable")
            .len(),
        1
    );
    assert_eq!(
        captured
            .events_with("dephase::redis", "reachable again")
            .len(),
        1
    );
}

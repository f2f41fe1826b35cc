//! A first-time user's program for the fleet stores, written from the README
//! ("At most K at once across the fleet", "The fleet's quota", "One retry
//! budget for the fleet", "Redis Cluster and TLS") and the rustdoc of
//! `dephase::redis`. Redis runs on the real clock: assertions are about
//! counts and order (and lower bounds of waits), not about speed.
#![cfg(feature = "redis")]

#[allow(dead_code)]
#[path = "../examples/fleet/main.rs"]
mod fleet;
mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::budget::RetryBudget;
use dephase::redis::error::GateError;
use dephase::redis::{
    FleetBudget, FleetGate, FleetGateLayer, FleetPaceLayer, FleetPacer, Server, SlotGuard,
};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::{BoxError, Overloaded};
use fleet::server::RedisServer;
use support::Holders;
use tower::{ServiceBuilder, ServiceExt};

fn server() -> Option<RedisServer> {
    fleet::server::for_test()
}

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis://127.0.0.1:{port}/")
}

/// What a job does with its slot: works, unless the slot is lost first.
enum JobEnd {
    Done,
    Lost,
}

async fn run_job(slot: &SlotGuard, work: Duration) -> JobEnd {
    tokio::select! {
        _ = tokio::time::sleep(work) => JobEnd::Done,
        _ = slot.lost() => JobEnd::Lost,
    }
}

// (1) A job runner: 3 replicas, K = 2, fencing tokens passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runner_three_replicas_two_slots() {
    let Some(server) = server() else { return };
    // As each replica would build it, from its config: same URL, same name.
    // Defaults otherwise (restart grace on: the first use waits one TTL).
    let replicas: Vec<FleetGate> = (0..3)
        .map(|_| {
            FleetGate::builder(server.url(), "remediation")
                .slots(2)
                .lease_ttl(Duration::from_secs(1))
                .max_wait(Duration::from_secs(10))
                .build()
                .unwrap()
        })
        .collect();
    assert_eq!(replicas[0].slots(), 2);

    let holders = Arc::new(Holders::default());
    // The "resource" the gate protects: the largest fence whose holder has
    // finished. A later acquirer must present a larger one.
    let released_fence = Arc::new(AtomicU64::new(0));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = Vec::new();
    for job in 0..12 {
        let gate = replicas[job % 3].clone();
        let holders = holders.clone();
        let released_fence = released_fence.clone();
        let fences = fences.clone();
        jobs.push(tokio::spawn(async move {
            let finished_before = released_fence.load(Ordering::SeqCst);
            let slot = gate.acquire().await.expect("a slot within max_wait");
            let fence = slot.fence().expect("Redis is up: a fenced slot");
            assert!(
                fence > finished_before,
                "fence {fence} not above {finished_before}, released before this acquire began"
            );
            holders.enter();
            let end = run_job(&slot, Duration::from_millis(60)).await;
            holders.leave();
            assert!(
                matches!(end, JobEnd::Done),
                "no slot is lost while Redis is fine"
            );
            assert!(!slot.is_lost());
            released_fence.fetch_max(fence, Ordering::SeqCst);
            fences.lock().unwrap().push(fence);
            slot.release().await;
        }));
    }
    for job in jobs {
        job.await.unwrap();
    }
    assert!(
        holders.max.load(Ordering::SeqCst) <= 2,
        "K = 2 across the replicas"
    );
    let mut fences = fences.lock().unwrap().clone();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 12, "every holder a distinct fence");

    let acquired: u64 = replicas.iter().map(|g| g.stats().acquired).sum();
    assert_eq!(acquired, 12);
    let lost: u64 = replicas.iter().map(|g| g.stats().lost).sum();
    assert_eq!(lost, 0);
}

// (1b) A slot lost mid-job (Redis forgot its data): `lost()` wins the select,
// and the next holder's fence is still larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_stops_the_job_and_fences_keep_growing() {
    let Some(server) = server() else { return };
    let build = || {
        FleetGate::builder(server.url(), "compaction")
            .slots(1)
            .lease_ttl(Duration::from_millis(900))
            .max_wait(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let slot = a.acquire().await.unwrap();
    let first = slot.fence().unwrap();

    let flush = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.command("FLUSHALL").unwrap(), "+OK");
    };
    let (end, ()) = tokio::join!(run_job(&slot, Duration::from_secs(8)), flush);
    assert!(
        matches!(end, JobEnd::Lost),
        "the renewal finds the lease gone"
    );
    assert!(slot.is_lost());
    drop(slot);
    assert_eq!(a.stats().lost, 1);

    let next = b.acquire().await.unwrap();
    assert!(
        next.fence().unwrap() > first,
        "fences keep growing across the data loss"
    );
    assert_eq!(b.stats().waited, 1, "the restart grace made it wait");
}

// (2) A FleetPaceLayer in a tower stack, two replicas sharing one quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pace_layer_in_a_service_builder_stack() {
    let Some(server) = server() else { return };
    let calls = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let max_wait = Duration::from_millis(300);
    let period = Duration::from_millis(50); // 20 a second for the fleet
    let mut pacers = Vec::new();
    let mut stacks = Vec::new();
    for _ in 0..2 {
        let pacer = FleetPacer::builder(server.url(), "warmup")
            .rate(20, Duration::from_secs(1))
            .max_wait(max_wait)
            .replicas(2)
            .build()
            .unwrap();
        pacers.push(pacer.clone());
        let calls = calls.clone();
        let stack = ServiceBuilder::new()
            .layer(FleetPaceLayer::new(pacer))
            .service(tower::service_fn(move |key: String| {
                let calls = calls.clone();
                async move {
                    calls.lock().unwrap().push((Instant::now(), key.clone()));
                    Ok::<_, std::io::Error>(key)
                }
            }));
        stacks.push(stack);
    }
    assert_eq!(pacers[0].quota().replenish_interval(), period);

    let mut tasks = Vec::new();
    for i in 0..12 {
        let svc = stacks[i % 2].clone();
        tasks.push(tokio::spawn(svc.oneshot(format!("key{i}"))));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                let e: BoxError = e;
                let o = e
                    .downcast_ref::<Overloaded>()
                    .unwrap_or_else(|| panic!("not an Overloaded: {e}"));
                assert!(o.wait() > o.max_wait(), "{o}");
                assert_eq!(o.max_wait(), max_wait);
                overloaded += 1;
            }
        }
    }
    // Turns 50 ms apart, at most 300 ms away: about 7 of the 12 go.
    assert!((4..=8).contains(&ok), "{ok} admitted");
    assert_eq!(ok + overloaded, 12);
    assert_eq!(
        calls.lock().unwrap().len(),
        ok,
        "turned-away calls never reach the service"
    );
    let stats: Vec<_> = pacers.iter().map(|p| p.stats()).collect();
    assert_eq!(
        stats.iter().map(|s| s.overloaded).sum::<u64>(),
        overloaded as u64
    );
    assert_eq!(stats.iter().map(|s| s.local_turns).sum::<u64>(), 0);
    // One schedule for both replicas: the admitted calls are spread out.
    let mut at: Vec<Instant> = calls.lock().unwrap().iter().map(|c| c.0).collect();
    at.sort();
    let span = at[at.len() - 1] - at[0];
    assert!(
        span >= period * (ok as u32 - 2),
        "{ok} calls within {span:?}: not paced as one fleet"
    );
    eprintln!("pacer stats: {stats:?}");
}

// (3) FleetBudget in the retry layer: a service that always fails, two
// replicas, the retries bounded by the fleet's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_budget_bounds_retries_of_a_failing_service() {
    let Some(server) = server() else { return };
    let (reserve, cap, batch) = (2.0, 4.0, 2);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut budgets = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let budget = FleetBudget::builder(server.url(), "payments")
            .reserve_per_sec(reserve)
            .ratio(0.0)
            .cap(cap)
            .batch(batch)
            .replicas(2)
            .build()
            .unwrap();
        budgets.push(budget.clone());
        let policy = RetryPolicy::builder()
            .max_attempts(4)
            .backoff(
                ExponentialBackoff::builder()
                    .base(Duration::from_millis(2))
                    .cap(Duration::from_millis(10))
                    .jitter(Jitter::Full)
                    .build()
                    .unwrap(),
            )
            .budget(budget)
            .build()
            .unwrap();
        let calls = calls.clone();
        let client = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .service(tower::service_fn(move |_req: u32| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<u32, _>(std::io::Error::other("down")) }
            }));
        clients.push(client);
    }

    let start = Instant::now();
    let requests = 2 * 100;
    let mut replicas = Vec::new();
    for client in clients {
        replicas.push(tokio::spawn(async move {
            for i in 0..100 {
                let err = client.clone().oneshot(i).await.unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "down",
                    "the caller gets the last error unchanged"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for r in replicas {
        r.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();

    let retries = calls.load(Ordering::SeqCst) - requests;
    let stats: Vec<_> = budgets.iter().map(|b| b.stats()).collect();
    eprintln!("budget stats after {elapsed:.2}s, {retries} retries: {stats:?}");
    let granted: u64 = stats.iter().map(|s| s.granted).sum();
    let denied: u64 = stats.iter().map(|s| s.denied).sum();
    assert_eq!(granted as usize, retries, "every granted retry was sent");
    assert!(denied > 0, "an always-failing service runs out of budget");
    // The README's worst case: the bucket's grants (a full bucket at the
    // start, then the reserve) plus replicas × batch.
    let bound = cap + reserve * elapsed + 2.0 * batch as f64;
    assert!(
        (retries as f64) <= bound,
        "{retries} retries > bound {bound:.1}"
    );
    assert!(retries > 0, "the budget let some retries through");
    for b in &budgets {
        assert!(b.balance() >= 0.0);
        assert!(b.stats().syncs > 0);
    }
}

// (4) The errors a user matches on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_errors_a_user_matches_on() {
    let Some(server) = server() else { return };

    // Full gate: Timeout after max_wait.
    let build = || {
        FleetGate::builder(server.url(), "restarts")
            .slots(1)
            .restart_grace(false) // a test Redis: never restarts under the gate
            .max_wait(Duration::from_millis(300))
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let held = a.acquire().await.unwrap();
    match b.acquire().await {
        Err(GateError::Timeout { waited }) => {
            assert!(waited >= Duration::from_millis(300), "{waited:?}")
        }
        Err(other) => panic!("expected Timeout, got {other}"),
        Ok(slot) => panic!("K = 1 and the slot is held, yet {slot:?}"),
    }
    assert_eq!(b.stats().timed_out, 1);

    // Through the layer: a BoxError that downcasts to GateError.
    let gated = ServiceBuilder::new()
        .layer(FleetGateLayer::new(b.clone()))
        .service(tower::service_fn(|x: u32| async move {
            Ok::<_, std::io::Error>(x)
        }));
    let err = gated.clone().oneshot(1).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<GateError>(),
            Some(GateError::Timeout { .. })
        ),
        "{err}"
    );
    drop(held);
    // Once the holder is gone the layer's calls go through.
    assert_eq!(gated.oneshot(2).await.unwrap(), 2);

    // Redis unreachable: fails closed at once without max_wait...
    let closed = FleetGate::builder(dead_url(), "restarts")
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = closed.acquire().await.unwrap_err();
    assert!(matches!(err, GateError::Unavailable { .. }), "{err}");
    assert_eq!(closed.stats().unavailable, 1);

    // ...or admits without a fence if asked.
    let open = FleetGate::builder(dead_url(), "restarts")
        .op_timeout(Duration::from_millis(100))
        .fail_open(true)
        .build()
        .unwrap();
    let slot = open.acquire().await.unwrap();
    assert_eq!(slot.fence(), None);
    assert!(!slot.is_lost());
    assert_eq!(open.stats().admitted_open, 1);

    // Config errors name the field.
    let err = FleetGate::builder(server.url(), "x")
        .slots(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("gate.slots"), "{err}");
    let err = FleetGate::builder("http://nope/", "x").build().unwrap_err();
    assert!(err.to_string().contains("gate.url"), "{err}");

    // The README's Server forms build too (no connection at build time).
    let cluster = Server::cluster([server.url()]);
    FleetGate::builder(cluster, "restarts")
        .slots(3)
        .build()
        .unwrap();
    let err = FleetGate::builder(
        Server::new("rediss://127.0.0.1:6380/").root_certificate(b"not pem".to_vec()),
        "x",
    )
    .build()
    .unwrap_err();
    assert_eq!(err.field(), "gate.root_certificate", "{err}");
}

// (4b) The pacer's Overloaded from `wait()`, used directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacer_wait_overloaded() {
    let Some(server) = server() else { return };
    let pacer = FleetPacer::builder(server.url(), "direct")
        .rate(1, Duration::from_secs(10))
        .max_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    pacer.wait().await.expect("the first turn is now");
    let o: Overloaded = pacer.wait().await.unwrap_err();
    assert!(o.wait() > Duration::from_secs(5), "{o}");
    assert_eq!(o.max_wait(), Duration::from_millis(200));
    let s = pacer.stats();
    assert_eq!(s.overloaded, 1);
    eprintln!("direct pacer stats: {s:?}");
}

// (3b) What a fresh or quiet replica of a FleetBudget may spend at once.
// The builder says "a new bucket starts full" (`cap`), but the bucket is in
// Redis: a replica spends only what it leased, and it leases "twice what it
// asked for in the last interval (at least 1, at most batch)". So the first
// retry of a fresh budget is refused, and a quiet replica holds one token
// even though the fleet's bucket holds `cap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_budget_fresh_and_quiet_replicas_hold_little() {
    let Some(server) = server() else { return };
    let budget = FleetBudget::builder(server.url(), "fresh")
        .reserve_per_sec(10.0) // cap: 100, and "a new bucket starts full"
        .build()
        .unwrap();
    budget.deposit(); // a request (starts the background sync)
    assert!(budget.withdraw().is_none(), "nothing leased yet");
    tokio::time::sleep(Duration::from_millis(600)).await; // quiet: several syncs
    let mut burst = 0;
    while budget.withdraw().is_some() {
        burst += 1;
    }
    assert!(
        burst <= 2,
        "a quiet replica holds ~1 token, not the cap: {burst}"
    );
    assert!(budget.stats().syncs > 0);
}

// (1c) Cancelled acquires (mid-flight or not) do not leak slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquires_do_not_leak_slots() {
    let Some(server) = server() else { return };
    let build = || {
        FleetGate::builder(server.url(), "warmup")
            .slots(1)
            .restart_grace(false)
            .max_wait(Duration::from_secs(3)) // the default lease TTL is 10 s
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    for i in 0..30u64 {
        // Dropped before, during or after the script's round trip.
        let _ = tokio::time::timeout(Duration::from_micros(100 * i), a.acquire()).await;
    }
    let slot = b
        .acquire()
        .await
        .expect("no slot leaked by a cancelled acquire");
    assert!(slot.fence().is_some());
}

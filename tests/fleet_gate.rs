//! The fleet gate against a real `redis-server` on a loopback port: at most
//! `K` holders across replicas, fencing tokens, a dead holder's slot coming
//! back after the lease TTL, Redis losing its data, Redis unreachable.
//!
//! Redis runs on the real clock, so these tests do too (as `tests/redis.rs`
//! does): the assertions are about counts, order and lower bounds of
//! waits, never about how fast something happened.
#![cfg(feature = "redis")]

#[allow(dead_code)]
#[path = "../examples/fleet/main.rs"]
mod fleet;
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dephase::redis::error::GateError;
use dephase::redis::{FleetGate, FleetGateLayer};
use fleet::server::RedisServer;
use support::Holders;
use tower::{Layer, ServiceExt};

fn server() -> Option<RedisServer> {
    fleet::server::for_test()
}

/// A gate on `server` as one replica would build it (its own connection).
fn gate(server: &RedisServer, name: &str, slots: u32) -> FleetGate {
    FleetGate::builder(server.url(), name)
        .slots(slots)
        .lease_ttl(Duration::from_millis(600))
        .op_timeout(Duration::from_millis(150))
        .restart_grace(false)
        .max_wait(Duration::from_secs(10)) // a hang fails, not stalls
        .seed(3)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_k_holders_across_replicas_with_growing_fences() {
    let Some(server) = server() else { return };
    // 4 replicas, 48 jobs, K = 3.
    let replicas: Vec<FleetGate> = (0..4).map(|_| gate(&server, "jobs", 3)).collect();
    let holders = Arc::new(Holders::default());
    let fences = Arc::new(std::sync::Mutex::new(Vec::new()));
    let jobs: Vec<_> = (0..48)
        .map(|i| {
            let (gate, holders, fences) =
                (replicas[i % 4].clone(), holders.clone(), fences.clone());
            tokio::spawn(async move {
                let slot = gate.acquire().await.unwrap();
                holders.enter();
                fences.lock().unwrap().push(slot.fence().unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
                holders.leave();
                slot.release().await;
            })
        })
        .collect();
    for job in jobs {
        job.await.unwrap();
    }
    let max = holders.max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} holders at once with K = 3");
    assert!(max >= 2, "the gate let only {max} hold at once");
    let mut fences = fences.lock().unwrap().clone();
    let n = fences.len();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), n, "every holder has its own fencing token");
    let acquired: u64 = replicas.iter().map(|g| g.stats().acquired).sum();
    assert_eq!(acquired, 48);
    assert!(replicas.iter().map(|g| g.stats().waited).sum::<u64>() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slot_is_renewed_past_its_ttl() {
    let Some(server) = server() else { return };
    let first = gate(&server, "renewed", 1);
    let other = FleetGate::builder(server.url(), "renewed")
        .slots(1)
        .lease_ttl(Duration::from_millis(600))
        .op_timeout(Duration::from_millis(150))
        .restart_grace(false)
        .max_wait(Duration::from_millis(1500))
        .build()
        .unwrap();
    let slot = first.acquire().await.unwrap();
    // 1.5 s: two and a half TTLs, renewed every 200 ms meanwhile.
    let refused = other.acquire().await.unwrap_err();
    assert!(matches!(refused, GateError::Timeout { .. }), "{refused}");
    assert!(refused.waited() >= Duration::from_millis(1500));
    assert!(!slot.is_lost());
    slot.release().await;
    let next = other.acquire().await.unwrap();
    assert!(next.fence() > Some(0));
}

/// A holder whose process dies (here: its runtime is dropped with the slot
/// held, so it neither renews nor releases) frees the slot after the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_slot_comes_back_after_the_lease_ttl() {
    let Some(server) = server() else { return };
    let url = server.url();
    let died = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let gate = FleetGate::builder(url, "dies")
            .slots(1)
            .lease_ttl(Duration::from_millis(600))
            .op_timeout(Duration::from_millis(150))
            .restart_grace(false)
            .build()
            .unwrap();
        let slot = runtime.block_on(gate.acquire()).unwrap();
        std::mem::forget(slot);
        Instant::now()
        // The runtime, its renewal task and its connection die here.
    })
    .join()
    .unwrap();
    let survivor = gate(&server, "dies", 1);
    let slot = survivor.acquire().await.unwrap();
    let after = died.elapsed();
    assert!(
        after >= Duration::from_millis(500),
        "the slot came back {after:?} after its holder died (TTL 600 ms)"
    );
    assert!(slot.fence().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_tells_holders_and_waits_a_ttl() {
    let Some(mut server) = server() else { return };
    let build = |server: &RedisServer| {
        FleetGate::builder(server.url(), "restart")
            .slots(1)
            .lease_ttl(Duration::from_millis(600))
            .op_timeout(Duration::from_millis(150))
            .build()
            .unwrap()
    };
    let holder = build(&server);
    // The first use of a gate waits one TTL too (the grace).
    let started = Instant::now();
    let slot = holder.acquire().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    let before = slot.fence().unwrap();

    server.restart().unwrap(); // empty: no persistence
    // Within a renewal or two, the holder learns its slot is gone.
    tokio::time::timeout(Duration::from_secs(5), slot.lost())
        .await
        .expect("the holder was told");
    assert!(slot.is_lost());
    assert_eq!(holder.stats().lost, 1);

    // A new holder waits one TTL after Redis came back, and its fencing
    // token is above every token from before.
    let newcomer = build(&server);
    let started = Instant::now();
    let next = newcomer.acquire().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        next.fence().unwrap() > before,
        "fences grow across the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_when_redis_is_unreachable_or_open_if_asked() {
    let closed = FleetGate::builder("redis://127.0.0.1:1/", "down")
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let error = closed.acquire().await.unwrap_err();
    assert!(matches!(error, GateError::Unavailable { .. }), "{error}");
    assert_eq!(closed.stats().unavailable, 1);

    let open = FleetGate::builder("redis://127.0.0.1:1/", "down")
        .op_timeout(Duration::from_millis(100))
        .fail_open(true)
        .build()
        .unwrap();
    let slot = open.acquire().await.unwrap();
    assert_eq!(slot.fence(), None, "admitted without a slot");
    assert!(!slot.is_lost());
    assert_eq!(open.stats().admitted_open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_no_slot_taken() {
    let Some(server) = server() else { return };
    let gate = gate(&server, "cancelled", 1);
    // Acquires cancelled at every stage, a hundred times: none keeps the
    // slot (each gives back what it may have been granted).
    for i in 0..100u64 {
        let attempt = gate.acquire();
        let _ = tokio::time::timeout(Duration::from_micros(50 * (i % 20)), attempt).await;
    }
    let waiting = FleetGate::builder(server.url(), "cancelled")
        .slots(1)
        .lease_ttl(Duration::from_millis(600))
        .op_timeout(Duration::from_millis(150))
        .restart_grace(false)
        .max_wait(Duration::from_millis(400))
        .build()
        .unwrap();
    // Within 400 ms (under the 600 ms TTL): only a release frees it that fast.
    let slot = waiting.acquire().await;
    assert!(slot.is_ok(), "a cancelled acquire kept the slot: {slot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_holds_a_slot_per_call() {
    let Some(server) = server() else { return };
    let holders = Arc::new(Holders::default());
    let inner = {
        let holders = holders.clone();
        tower::service_fn(move |i: u32| {
            let holders = holders.clone();
            async move {
                holders.enter();
                tokio::time::sleep(Duration::from_millis(5)).await;
                holders.leave();
                Ok::<_, std::io::Error>(i)
            }
        })
    };
    let service = FleetGateLayer::new(gate(&server, "layer", 2)).layer(inner);
    let calls: Vec<_> = (0..20)
        .map(|i| tokio::spawn(service.clone().oneshot(i)))
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32);
    }
    assert!(holders.max.load(Ordering::SeqCst) <= 2);
}

#[test]
fn bad_settings_are_errors() {
    let field = |b: dephase::redis::FleetGateBuilder| b.build().unwrap_err().field();
    let b = || FleetGate::builder("redis://127.0.0.1:6379/", "g");
    assert_eq!(field(FleetGate::builder("http://x", "g")), "gate.url");
    assert_eq!(
        field(FleetGate::builder("redis://127.0.0.1/", "")),
        "gate.name"
    );
    assert_eq!(field(b().slots(0)), "gate.slots");
    assert_eq!(field(b().lease_ttl(Duration::ZERO)), "gate.lease_ttl");
    assert_eq!(
        field(
            b().lease_ttl(Duration::from_secs(1))
                .renew_every(Duration::from_secs(1))
        ),
        "gate.renew_every"
    );
    // A renewal that times out must leave time for another before the TTL.
    assert_eq!(
        field(b().lease_ttl(Duration::from_millis(300))),
        "gate.op_timeout"
    );
    assert!(b().build().is_ok(), "the defaults build");
    assert_eq!(field(b().max_wait(Duration::MAX)), "gate.max_wait");
}

/// What the worker processes of
/// [`ten_processes_never_hold_more_than_k_even_when_one_is_killed`] run:
/// not a test of its own (ignored; the parent starts it in a child process
/// with `DEPHASE_GATE_WORKER=<redis url> <origin address> <jobs>`).
#[test]
#[ignore = "the body of a worker process, started by the multi-process test"]
fn gate_worker_process() {
    use std::io::{BufRead, Write};
    let spec = std::env::var("DEPHASE_GATE_WORKER").expect("started by the parent test");
    let mut parts = spec.split(' ');
    let (url, origin, jobs) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<u32>().unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let gate = FleetGate::builder(url, "processes")
            .slots(5)
            .lease_ttl(Duration::from_millis(900))
            .renew_every(Duration::from_millis(300))
            .op_timeout(Duration::from_millis(200))
            .restart_grace(false)
            .build()
            .unwrap();
        for _ in 0..jobs {
            let slot = gate.acquire().await.unwrap();
            // Tell the origin, hold the slot for 20 ms of "work", then say done.
            let origin = origin.clone();
            let fence = slot.fence().unwrap();
            tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(&origin).unwrap();
                let mut replies = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut ack = String::new();
                writeln!(stream, "enter {} {fence}", std::process::id()).unwrap();
                replies.read_line(&mut ack).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                // Released only once the origin has counted the leave.
                writeln!(stream, "leave").unwrap();
                replies.read_line(&mut ack).unwrap();
            })
            .await
            .unwrap();
            slot.release().await;
        }
    });
}

/// The proof, on real processes: 100 jobs over 10 processes, K = 5,
/// the origin counting holders at every instant — and one process killed
/// with SIGKILL while it holds a slot: its slot is not handed out again
/// before its lease can have expired, and comes back after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_processes_never_hold_more_than_k_even_when_one_is_killed() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let Some(server) = server() else { return };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let spawn = |jobs: u32| {
        let spec = format!("{} {origin} {jobs}", server.url());
        support::worker("gate_worker_process", "DEPHASE_GATE_WORKER", &spec)
    };
    let victim = Arc::new(std::sync::Mutex::new(Some(spawn(10))));
    let victim_pid = victim.lock().unwrap().as_ref().unwrap().id();
    let mut others: Vec<_> = (0..9).map(|_| spawn(10)).collect();

    /// Holders as the origin sees them; a killed holder counts until its
    /// lease can have expired (its last renewal at most `renew_every`
    /// before it died, less a margin for the clocks).
    #[derive(Default)]
    struct Seen {
        holding: usize,
        max: usize,
        enters: usize,
        killed_until: Option<tokio::time::Instant>,
        fences: Vec<u64>,
    }
    impl Seen {
        fn now_holding(&mut self) -> usize {
            let dead = self
                .killed_until
                .is_some_and(|until| tokio::time::Instant::now() < until);
            self.holding + usize::from(dead)
        }
    }
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let accept = {
        let (seen, victim) = (seen.clone(), victim.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, victim) = (seen.clone(), victim.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(read).lines();
                    let Ok(Some(line)) = lines.next_line().await else {
                        return;
                    };
                    let mut words = line.split(' ').skip(1);
                    let pid: u32 = words.next().unwrap().parse().unwrap();
                    let fence: u64 = words.next().unwrap().parse().unwrap();
                    {
                        let mut s = seen.lock().unwrap();
                        s.holding += 1;
                        s.enters += 1;
                        s.fences.push(fence);
                        let now = s.now_holding();
                        s.max = s.max.max(now);
                    }
                    // The victim dies holding its second slot.
                    if pid == victim_pid && seen.lock().unwrap().enters > 5 {
                        if let Some(mut child) = victim.lock().unwrap().take() {
                            child.kill().unwrap(); // SIGKILL
                            child.wait().unwrap();
                            let mut s = seen.lock().unwrap();
                            s.holding -= 1;
                            s.killed_until = Some(
                                tokio::time::Instant::now()
                                    + Duration::from_millis(900 - 300 - 100),
                            );
                            return;
                        }
                    }
                    let _ = write.write_all(b"ok\n").await;
                    let _ = lines.next_line().await;
                    seen.lock().unwrap().holding -= 1;
                    let _ = write.write_all(b"bye\n").await;
                });
            }
        })
    };
    for child in &mut others {
        let status = tokio::task::block_in_place(|| child.wait().unwrap());
        assert!(status.success(), "a worker failed: {status}");
    }
    accept.abort();
    // The killed holder's slot came back: five holders at once now.
    let gate = FleetGate::builder(server.url(), "processes")
        .slots(5)
        .lease_ttl(Duration::from_millis(900))
        .renew_every(Duration::from_millis(300))
        .op_timeout(Duration::from_millis(200))
        .restart_grace(false)
        .max_wait(Duration::from_secs(3))
        .build()
        .unwrap();
    let (a, b, c, d, e) = tokio::join!(
        gate.acquire(),
        gate.acquire(),
        gate.acquire(),
        gate.acquire(),
        gate.acquire()
    );
    for slot in [a, b, c, d, e] {
        assert!(slot.is_ok(), "a slot never came back: {slot:?}");
    }
    let s = seen.lock().unwrap();
    eprintln!("holds {}, at most {} at once", s.enters, s.max);
    assert!(victim.lock().unwrap().is_none(), "the victim was killed");
    assert!(s.max <= 5, "{} holders at once with K = 5", s.max);
    assert!(s.max >= 4, "only {} held at once", s.max);
    // The nine survivors did all their jobs: the killed slot came back.
    assert!(s.enters > 90, "{} holds", s.enters);
    let mut fences = s.fences.clone();
    let n = fences.len();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), n, "fencing tokens are unique");
}

/// A refusal is one of dephase's local rejections: an HTTP classifier does
/// not retry it (the gate already waited), and axum answers 503.
#[cfg(all(feature = "http", feature = "axum"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_a_local_rejection() {
    let closed = FleetGate::builder("redis://127.0.0.1:1/", "down")
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let error: dephase::BoxError = Box::new(closed.acquire().await.unwrap_err());
    assert!(!dephase::http::classify_error(&*error).is_retryable());
    let response = dephase::axum::error_response(error);
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

/// A release Redis does not confirm in time (here: Redis pauses writes for
/// 400 ms, longer than the command deadline) is tried again until it goes
/// through — the slot frees long before its 5 s lease would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_redis_did_not_confirm_is_tried_again() {
    let Some(server) = server() else { return };
    let build = |max_wait: Duration| {
        FleetGate::builder(server.url(), "paused")
            .slots(1)
            .lease_ttl(Duration::from_secs(5))
            .op_timeout(Duration::from_millis(100))
            .restart_grace(false)
            .max_wait(max_wait)
            .build()
            .unwrap()
    };
    let holder = build(Duration::from_secs(1));
    let slot = holder.acquire().await.unwrap();
    let reply = server.command("CLIENT PAUSE 400 WRITE").unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    let released = Instant::now();
    slot.release().await; // not confirmed: Redis holds writes
    let next = build(Duration::from_secs(3)).acquire().await;
    assert!(next.is_ok(), "the slot was not freed: {next:?}");
    assert!(
        released.elapsed() < Duration::from_secs(4),
        "freed by the retried release, not by the lease's expiry"
    );
}

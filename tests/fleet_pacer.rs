//! The fleet pacer against a real `redis-server` on a loopback port: one
//! schedule for every replica (GCRA, as redis-cell), turns given back by
//! callers that leave, the local share while Redis is away.
//!
//! Redis runs on the real clock, so these tests do too: the assertions are
//! about counts and lower bounds of waits (a turn never comes early), and
//! about peaks over windows ten quota intervals wide.
#![cfg(feature = "redis")]

#[allow(dead_code)]
#[path = "../examples/fleet/main.rs"]
mod fleet;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dephase::pace::Pacer;
use dephase::pace::error::Overloaded;
use dephase::redis::{FleetPaceLayer, FleetPacer};
use fleet::server::RedisServer;
use tower::{Layer, ServiceExt};

fn server() -> Option<RedisServer> {
    fleet::server::for_test()
}

/// A replica's pacer: 100 a second for the fleet, no jitter (so that the
/// release times are the schedule's).
fn pacer(server: &RedisServer, name: &str) -> FleetPacer {
    FleetPacer::builder(server.url(), name)
        .rate(100, Duration::from_secs(1))
        .jitter(Duration::ZERO)
        .op_timeout(Duration::from_millis(150))
        .seed(5)
        .build()
        .unwrap()
}

/// The most release times within any `window` (a sliding window).
fn peak(mut times: Vec<Duration>, window: Duration) -> usize {
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Releases `callers` callers at once on each pacer; their release times.
async fn herd<F, Fut>(replicas: usize, callers: usize, wait: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Duration, Overloaded>> + Send + 'static,
{
    let start = Instant::now();
    let released = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..replicas * callers)
        .map(|i| {
            let (turn, released) = (wait(i % replicas), released.clone());
            tokio::spawn(async move {
                turn.await.unwrap();
                released.lock().unwrap().push(start.elapsed());
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(released).unwrap().into_inner().unwrap()
}

/// The warm-up, in one process: replicas that each build their own
/// pacer share the fleet's quota (GCRA on Redis); per-process pacers each
/// take the whole quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_quota() {
    let Some(server) = server() else { return };
    let replicas: Vec<FleetPacer> = (0..5).map(|_| pacer(&server, "warmup")).collect();
    let fleet = herd(5, 12, |r| {
        let pacer = replicas[r].clone();
        async move { pacer.wait().await }
    })
    .await;
    // 60 turns at 10 ms: the last is 590 ms after the first, never earlier.
    let last = *fleet.iter().max().unwrap();
    assert!(
        last >= Duration::from_millis(590),
        "the last went at {last:?}"
    );
    let fleet_peak = peak(fleet, Duration::from_millis(100));
    // 10 per 100 ms, and a few more where a stall of this process lets
    // due turns go together.
    assert!(
        fleet_peak <= 15,
        "{fleet_peak} in 100 ms with a quota of 10 per 100 ms"
    );

    let local: Vec<Pacer> = (0..5)
        .map(|_| {
            Pacer::builder()
                .rate(100, Duration::from_secs(1))
                .jitter(Duration::ZERO)
                .build()
                .unwrap()
        })
        .collect();
    let separate = herd(5, 12, |r| {
        let pacer = local[r].clone();
        async move { pacer.wait().await }
    })
    .await;
    let separate_peak = peak(separate, Duration::from_millis(100));
    assert!(
        separate_peak >= 40,
        "per-process pacers: {separate_peak} in 100 ms (5 × the quota expected)"
    );
    let stats = replicas.iter().map(FleetPacer::stats);
    // All but the first waited (a turn whose reply came late may be due
    // on arrival, and is not counted as a wait).
    assert!(stats.map(|s| s.waited).sum::<u64>() >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_too_far_away_is_turned_away_at_once() {
    let Some(server) = server() else { return };
    let pacer = FleetPacer::builder(server.url(), "far")
        .rate(10, Duration::from_secs(1))
        .max_wait(Duration::from_millis(150))
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let (a, b, c) = tokio::join!(pacer.wait(), pacer.wait(), pacer.wait());
    let mut results = [a, b, c];
    results.sort_by_key(|r| r.is_err());
    assert!(results[0].is_ok() && results[1].is_ok());
    let turned = results[2].as_ref().unwrap_err();
    assert!(turned.wait() > Duration::from_millis(150), "{turned}");
    assert_eq!(turned.max_wait(), Duration::from_millis(150));
    assert_eq!(pacer.stats().overloaded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_gives_its_turn_back() {
    let Some(server) = server() else { return };
    let pacer = FleetPacer::builder(server.url(), "leaves")
        .rate(5, Duration::from_secs(1)) // one every 200 ms
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    pacer.wait().await.unwrap(); // the free turn
    // The next turn (200 ms away) is booked, then its caller leaves.
    let left = tokio::time::timeout(Duration::from_millis(100), pacer.wait()).await;
    assert!(left.is_err(), "it was still waiting");
    for _ in 0..200 {
        if pacer.stats().given_back == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pacer.stats().given_back, 1);
    // The next caller gets that turn, not the one after it (400 ms away).
    let waited = pacer.wait().await.unwrap();
    assert!(waited < Duration::from_millis(300), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_paces_its_share() {
    let pacer = FleetPacer::builder("redis://127.0.0.1:1/", "alone")
        .rate(100, Duration::from_secs(1))
        .replicas(10) // 10 a second here
        .jitter(Duration::ZERO)
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let start = Instant::now();
    let (a, b, c) = tokio::join!(pacer.wait(), pacer.wait(), pacer.wait());
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    // Three turns of a 10-a-second share: the last 200 ms after the first.
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(pacer.stats().local_turns, 3);
}

/// Redis killed mid-run and restarted: every caller is answered, with one
/// `WARN` when Redis is lost and one `INFO` when it is back.
#[tokio::test]
async fn redis_down_and_back_answers_every_caller_and_says_so_once() {
    let Some(mut server) = server() else { return };
    let (captured, _guard) = support::capture();
    let pacer = FleetPacer::builder(server.url(), "outage")
        .rate(1000, Duration::from_secs(1))
        .replicas(2)
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..10 {
        pacer.wait().await.unwrap();
    }
    server.stop();
    for _ in 0..20 {
        pacer.wait().await.unwrap();
    }
    assert!(pacer.stats().local_turns > 0);
    server.restart().unwrap();
    let mut answered = 30;
    while captured
        .events_with("dephase::redis", "reachable again")
        .is_empty()
    {
        assert!(
            answered < 5000,
            "Redis never came back: {:?}",
            pacer.stats()
        );
        pacer.wait().await.unwrap();
        answered += 1;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_paces_every_call() {
    let Some(server) = server() else { return };
    let service = FleetPaceLayer::new(pacer(&server, "layer")).layer(tower::service_fn(
        |i: u32| async move { Ok::<_, std::io::Error>(i) },
    ));
    let start = Instant::now();
    let calls: Vec<_> = (0..11)
        .map(|i| tokio::spawn(service.clone().oneshot(i)))
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32);
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
fn bad_settings_are_errors() {
    let field = |b: dephase::redis::FleetPacerBuilder| b.build().unwrap_err().field();
    let b = || FleetPacer::builder("redis://127.0.0.1:6379/", "p");
    assert_eq!(field(b()), "pace.rate", "a rate or a quota is required");
    assert_eq!(field(b().rate(0, Duration::from_secs(1))), "pace.rate");
    assert_eq!(
        field(FleetPacer::builder("http://x", "p").rate(1, Duration::from_secs(1))),
        "fleet_pace.url"
    );
    assert_eq!(
        field(FleetPacer::builder("redis://127.0.0.1/", "").rate(1, Duration::from_secs(1))),
        "fleet_pace.name"
    );
    assert_eq!(
        field(b().rate(1, Duration::from_secs(1)).replicas(0)),
        "fleet_pace.replicas"
    );
    assert_eq!(
        field(b().rate(1_000_000, Duration::from_millis(100))),
        "fleet_pace.quota"
    );
}

/// What the worker processes of [`ten_processes_warm_up_at_the_fleets_rate`]
/// run: not a test of its own (ignored; the parent starts it with
/// `DEPHASE_PACE_WORKER=<redis url> <origin> <fleet|local> <instances> <start, ms since the epoch>`).
#[test]
#[ignore = "the body of a worker process, started by the multi-process test"]
fn pace_worker_process() {
    let spec = std::env::var("DEPHASE_PACE_WORKER").expect("started by the parent test");
    let parts: Vec<&str> = spec.split(' ').collect();
    let (url, origin, mode) = (parts[0].to_owned(), parts[1].to_owned(), parts[2]);
    let instances: usize = parts[3].parse().unwrap();
    let start_ms: u64 = parts[4].parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fleet = mode.starts_with("fleet");
    let jitter = if mode == "fleet-jitter" {
        Duration::from_millis(10)
    } else {
        Duration::ZERO
    };
    runtime.block_on(async move {
        let pacer = FleetPacer::builder(url, "processes")
            .rate(100, Duration::from_secs(1))
            .jitter(jitter)
            .replicas(10)
            .max_wait(Duration::from_secs(60))
            .build()
            .unwrap();
        let local = Pacer::builder()
            .rate(100, Duration::from_secs(1))
            .max_wait(Duration::from_secs(60))
            .build()
            .unwrap();
        // Connected before the herd (the first turn should not pay for
        // it): one turn of the fleet's schedule each, not sent.
        if fleet {
            pacer.wait().await.unwrap();
        }
        let socket = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let now_ms = support::epoch_ms();
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms))).await;
        let tasks: Vec<_> = (0..instances)
            .map(|_| {
                let (pacer, local, socket, origin) =
                    (pacer.clone(), local.clone(), socket.clone(), origin.clone());
                tokio::spawn(async move {
                    if fleet {
                        pacer.wait().await.unwrap();
                    } else {
                        local.wait().await.unwrap();
                    }
                    socket.send_to(b"hit", &origin).unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// Arrival times at the origin of `processes × instances` warm-up calls,
/// each process pacing with a fleet pacer (`fleet`) or its own.
async fn warm_up(
    server: &RedisServer,
    mode: &str,
    processes: usize,
    instances: usize,
) -> Vec<Duration> {
    let origin = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = origin.local_addr().unwrap();
    let start_ms = support::epoch_ms() + 1500;
    let spec = format!("{} {address} {mode} {instances} {start_ms}", server.url());
    let mut children: Vec<_> = (0..processes)
        .map(|_| support::worker("pace_worker_process", "DEPHASE_PACE_WORKER", &spec))
        .collect();
    let mut arrivals = Vec::new();
    let mut buffer = [0u8; 16];
    let epoch = std::time::UNIX_EPOCH + Duration::from_millis(start_ms);
    while arrivals.len() < processes * instances {
        tokio::time::timeout(Duration::from_secs(30), origin.recv_from(&mut buffer))
            .await
            .expect("every call arrives")
            .unwrap();
        arrivals.push(
            std::time::SystemTime::now()
                .duration_since(epoch)
                .unwrap_or_default(),
        );
    }
    for child in &mut children {
        assert!(tokio::task::block_in_place(|| child.wait().unwrap()).success());
    }
    arrivals
}

/// The most arrivals in one bucket of `width` (fixed buckets from the start).
fn bucket_peak(arrivals: &[Duration], width: Duration) -> usize {
    let mut counts = std::collections::HashMap::new();
    for t in arrivals {
        *counts.entry(t.as_nanos() / width.as_nanos()).or_insert(0) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// The warm-up proof on real processes: 10 processes × 30
/// instances, a fleet quota of 100 a second (one per 10 ms). With a fleet
/// pacer the origin sees the quota; with a pacer per process, ten times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_processes_warm_up_at_the_fleets_rate() {
    let Some(server) = server() else { return };
    let fleet = warm_up(&server, "fleet", 10, 30).await;
    let jittered = warm_up(&server, "fleet-jitter", 10, 30).await;
    eprintln!(
        "jittered by up to an interval: peak {} per 10 ms, {} per 100 ms",
        bucket_peak(&jittered, Duration::from_millis(10)),
        bucket_peak(&jittered, Duration::from_millis(100))
    );
    let separate = warm_up(&server, "local", 10, 30).await;
    let figures = |a: &[Duration]| {
        (
            bucket_peak(a, Duration::from_millis(10)),
            bucket_peak(a, Duration::from_millis(100)),
            a.iter().max().copied().unwrap_or_default(),
        )
    };
    let (f10, f100, f_last) = figures(&fleet);
    let (s10, s100, s_last) = figures(&separate);
    eprintln!(
        "fleet pacer: peak {f10} per 10 ms, {f100} per 100 ms, last at {f_last:?}; \
         a pacer per process: peak {s10} per 10 ms, {s100} per 100 ms, last at {s_last:?}"
    );
    // 300 turns at one per 10 ms take 3 s; ten pacers of the same quota,
    // a tenth of that.
    assert!(f_last >= Duration::from_millis(2900), "{f_last:?}");
    assert!(s100 >= 5 * f100, "{s100} against {f100} per 100 ms");
    assert!(f100 <= 20, "{f100} per 100 ms with a fleet quota of 10");
}

/// Huge settings are errors or plain waits, never an overflow: a maximum
/// wait and a jitter of `Duration::MAX` on a quota of one a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_waits_do_not_overflow() {
    let Some(server) = server() else { return };
    let pacer = FleetPacer::builder(server.url(), "huge")
        .rate(1, Duration::from_secs(86_400))
        .max_wait(Duration::MAX)
        .jitter(Duration::MAX)
        .build()
        .unwrap();
    pacer.wait().await.unwrap(); // the free turn
    // The next is a day away (plus jitter): it waits, and is dropped.
    let next = tokio::time::timeout(Duration::from_millis(200), pacer.wait()).await;
    assert!(next.is_err(), "still waiting");
    assert!(
        FleetPacer::builder(server.url(), "x")
            .rate(1, Duration::MAX)
            .build()
            .is_err()
    );
}

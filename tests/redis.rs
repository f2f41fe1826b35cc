//! The Redis store against a real `redis-server` on a loopback port.
//!
//! Each test starts its own server (the Debian package's binary, which
//! `.ci/run` installs); without the binary, each test prints that it was
//! skipped. Redis runs on the real clock, so these tests do too: every
//! assertion is about counts and values, never about how long something
//! took. The overlap of a herd is arranged with gates (the origin waits
//! until every replica is waiting on the lease), not with sleeps.
#![cfg(feature = "redis")]

/// The fleet example (its `main` is not used here), and its `server`,
/// which starts `redis-server`.
#[allow(dead_code)]
#[path = "../examples/fleet/main.rs"]
mod fleet;
mod support;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dephase::BoxError;
use dephase::cache::CacheLayer;
use dephase::redis::RedisStore;
use fleet::server::RedisServer;
use redis::AsyncCommands;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// The server, or `None` after saying that the test is skipped (a failure
/// in CI).
fn server() -> Option<RedisServer> {
    fleet::server::for_test()
}

async fn direct(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// An origin that counts its calls and answers `value:<key>:<call>` once
/// the gate lets it (one permit per call).
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Origin {
    fn new() -> Self {
        Origin {
            calls: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    /// An origin that never waits.
    fn open() -> Self {
        let origin = Origin::new();
        origin.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        origin
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The origin behind a Redis cache on `store`, keyed by the request.
    fn cached(
        &self,
        store: &RedisStore<String, String>,
    ) -> impl Service<String, Response = String, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        CacheLayer::new(store.clone(), |k: &String| Some(k.clone())).layer(self.service())
    }

    fn service(
        &self,
    ) -> impl Service<String, Response = String, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let origin = self.clone();
        tower::service_fn(move |key: String| {
            let origin = origin.clone();
            async move {
                let call = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
                origin.gate.acquire().await?.forget();
                if key.starts_with("fail") {
                    return Err::<String, BoxError>(io::Error::other("origin failed").into());
                }
                Ok(format!("value:{key}:{call}"))
            }
        })
    }
}

fn store(
    server: &RedisServer,
) -> dephase::cache::StoreBuilder<dephase::redis::Redis<String, String>> {
    RedisStore::builder(server.url())
        .prefix("test:")
        .ttl(Duration::from_secs(60))
        .early_refresh(false)
        .seed(7)
}

/// Asks `service` for `key` (a clone of it, readied) and unwraps the answer.
async fn ask<S>(service: &S, key: &str) -> String
where
    S: Service<String, Response = String, Error = BoxError> + Clone,
{
    service.clone().oneshot(key.to_string()).await.unwrap()
}

/// Waits (real time, bounded: 10 s) until `done()` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    until_async(what, || std::future::ready(done())).await;
}

/// Waits (real time, bounded: 10 s) until `done()` resolves to `true`.
async fn until_async<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    for _ in 0..2000 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_make_one_recompute_per_expiry_between_them() {
    let Some(server) = server() else { return };
    let origin = Origin::new();
    let replicas: Vec<_> = (0..8)
        .map(|_| {
            let store = store(&server).build().unwrap();
            let service = ServiceBuilder::new()
                .layer(CacheLayer::new(store.clone(), |k: &String| Some(k.clone())))
                .service(origin.service());
            (store, service)
        })
        .collect();
    for round in 1..=5 {
        // An expiry: the key is gone for every replica at once.
        replicas[0].0.invalidate(&"hot".to_string()).await.unwrap();
        let before = origin.calls();
        let mut herd = Vec::new();
        for (_, service) in &replicas {
            for _ in 0..10 {
                herd.push(tokio::spawn(service.clone().oneshot("hot".to_string())));
            }
        }
        // Let the one load finish only once the seven other replicas are
        // polling for its value.
        until("seven replicas wait", || {
            replicas.iter().map(|(s, _)| s.waiting()).sum::<usize>() == 7 && origin.calls() > before
        })
        .await;
        origin.gate.add_permits(1);
        let expected = format!("value:hot:{}", before + 1);
        for answer in herd {
            assert_eq!(answer.await.unwrap().unwrap(), expected);
        }
        assert_eq!(origin.calls() - before, 1, "round {round}");
    }
    let waited: u64 = replicas.iter().map(|(s, _)| s.stats().waited).sum();
    assert_eq!(waited, 5 * 7, "seven replicas waited in each round");
    assert!(replicas.iter().all(|(s, _)| s.stats().degraded == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_comes_from_redis_with_its_time_left() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let a = store(&server).build().unwrap();
    let b = store(&server).build().unwrap();
    let mut on_a = origin.cached(&a);
    let mut on_b = origin.cached(&b);
    assert_eq!(
        on_a.ready().await.unwrap().call("k".into()).await.unwrap(),
        "value:k:1"
    );
    assert_eq!(
        on_b.ready().await.unwrap().call("k".into()).await.unwrap(),
        "value:k:1"
    );
    assert_eq!(origin.calls(), 1);
    assert_eq!(b.stats().hits, 1);
    // Written with PX = TTL + jitter (at most a tenth): 60–66 s.
    let pttl: i64 = direct(&server).await.pttl("test:{k}:v").await.unwrap();
    assert!((59_000..=66_000).contains(&pttl), "{pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_requests_still_succeed() {
    let Some(mut server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server)
        .op_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let service = origin.cached(&store);
    assert_eq!(ask(&service, "k").await, "value:k:1");
    assert_eq!(ask(&service, "k").await, "value:k:1");
    assert_eq!(store.stats().hits, 1);

    server.stop();
    // A herd while Redis is gone: every request answered, by the origin,
    // coalesced within the replica.
    let origin_gate = origin.calls();
    let herd: Vec<_> = (0..20)
        .map(|_| tokio::spawn(service.clone().oneshot("k".to_string())))
        .collect();
    for answer in herd {
        assert!(answer.await.unwrap().unwrap().starts_with("value:k:"));
    }
    assert!(store.is_degraded());
    assert!(origin.calls() > origin_gate);
    for _ in 0..10 {
        assert!(service.clone().oneshot("k".to_string()).await.is_ok());
    }
    assert!(store.stats().degraded >= 2, "{:?}", store.stats());

    // Back: the store reconnects after its jittered delay and uses Redis again.
    server.restart().unwrap();
    let mut attempts = 0;
    while store.is_degraded() || store.stats().hits < 2 {
        attempts += 1;
        assert!(
            attempts < 400,
            "the store did not come back: {:?}",
            store.stats()
        );
        assert!(service.clone().oneshot("k".to_string()).await.is_ok());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Events and span fields are captured per thread: this test runs on one.
#[tokio::test(flavor = "current_thread")]
async fn losing_redis_and_getting_it_back_are_told_once_each_and_tagged_per_request() {
    use support::Value;
    use tracing::Instrument;
    use tracing::field::Empty;

    let Some(mut server) = server() else { return };
    let (captured, _guard) = support::capture();
    let origin = Origin::open();
    let store = store(&server).build().unwrap();
    let service = origin.cached(&store);
    let request = |name: &'static str| {
        let span = tracing::info_span!(
            "request",
            otel.name = name,
            dephase.cache.result = Empty,
            dephase.redis.lease = Empty,
            dephase.redis.wait_ms = Empty,
        );
        service.clone().oneshot("k".to_string()).instrument(span)
    };
    request("load").await.unwrap();
    let fields = captured.span("request");
    assert_eq!(fields["dephase.cache.result"], Value::Str("miss".into()));
    assert_eq!(fields["dephase.redis.lease"], Value::Str("acquired".into()));

    server.stop();
    for _ in 0..20 {
        request("down").await.unwrap();
    }
    let fields = captured.span("request");
    assert_eq!(fields["dephase.redis.lease"], Value::Str("degraded".into()));
    let lost = captured.events_with("dephase::redis", "Redis is unreachable");
    assert_eq!(lost.len(), 1, "one WARN per outage, not one per request");

    server.restart().unwrap();
    let mut attempts = 0;
    while store.is_degraded()
        || captured
            .events_with("dephase::redis", "reachable again")
            .is_empty()
    {
        attempts += 1;
        assert!(
            attempts < 400,
            "the store did not come back: {:?}",
            store.stats()
        );
        request("back").await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        captured
            .events_with("dephase::redis", "reachable again")
            .len(),
        1
    );
    assert_eq!(
        captured
            .events_with("dephase::redis", "Redis is unreachable")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_given_up_on_after_the_op_timeout() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server)
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let service = origin.cached(&store);
    assert!(service.clone().oneshot("k".into()).await.is_ok());
    // Redis stops answering every client for 3 s (it stays connected).
    server.command("CLIENT PAUSE 3000 ALL").unwrap();
    let answer = ask(&service, "k").await;
    assert_eq!(answer, "value:k:2");
    assert!(store.is_degraded());
    assert_eq!(store.stats().degraded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_of_the_current_lease_writes() {
    let Some(server) = server() else { return };
    let origin = Origin::new();
    let store = store(&server).build().unwrap();
    let service = origin.cached(&store);
    let load = tokio::spawn(service.clone().oneshot("k".to_string()));
    until("the load started", || origin.calls() == 1).await;
    // The lease expires and another filler takes it meanwhile.
    let mut redis = direct(&server).await;
    let _: () = redis.set("test:{k}:l", "somebody-else").await.unwrap();
    origin.gate.add_permits(1);
    assert_eq!(load.await.unwrap().unwrap(), "value:k:1"); // the caller still gets it
    let value: Option<Vec<u8>> = redis.get("test:{k}:v").await.unwrap();
    assert_eq!(value, None, "a holder whose lease was taken over wrote");
    let lease: String = redis.get("test:{k}:l").await.unwrap();
    assert_eq!(
        lease, "somebody-else",
        "and it must not free the new holder's lease"
    );
    assert_eq!(store.stats().leases_lost, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_expires_and_a_waiting_replica_fills_the_key() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server).build().unwrap();
    let service = origin.cached(&store);
    let mut redis = direct(&server).await;
    // A holder that died: its lease lives 300 ms more.
    let _: () = redis::cmd("SET")
        .arg("test:{k}:l")
        .arg("dead")
        .arg("PX")
        .arg(300)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(ask(&service, "k").await, "value:k:1");
    assert_eq!(origin.calls(), 1);
    assert_eq!(
        store.stats().waited,
        1,
        "it polled until the lease was free, then loaded"
    );
    let value: Option<Vec<u8>> = redis.get("test:{k}:v").await.unwrap();
    assert!(value.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waits_no_longer_than_lease_wait() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server)
        .lease_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let service = origin.cached(&store);
    let mut redis = direct(&server).await;
    let _: () = redis.set("test:{k}:l", "a-slow-holder").await.unwrap();
    assert_eq!(ask(&service, "k").await, "value:k:1");
    assert_eq!(store.stats().wait_deadlines, 1);
    let value: Option<Vec<u8>> = redis.get("test:{k}:v").await.unwrap();
    assert_eq!(
        value, None,
        "a replica that is not the holder does not write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_load_frees_the_lease_at_once() {
    let Some(server) = server() else { return };
    let origin = Origin::new();
    let store = store(&server)
        .lease_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let service = origin.cached(&store);
    let load = tokio::spawn(service.clone().oneshot("k".to_string()));
    until("the load started", || origin.calls() == 1).await;
    let mut redis = direct(&server).await;
    let held: bool = redis.exists("test:{k}:l").await.unwrap();
    assert!(held);
    load.abort();
    assert!(load.await.unwrap_err().is_cancelled());
    // Its lease is for 600 s: only the release can free it in time.
    until_async("the cancelled load's lease is freed", || {
        let mut redis = redis.clone();
        async move { !redis.exists::<_, bool>("test:{k}:l").await.unwrap() }
    })
    .await;
    assert_eq!(store.flights_in_progress(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_while_it_waits_on_a_lease_leaves_nothing_behind() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server).build().unwrap();
    let service = origin.cached(&store);
    assert_eq!(
        server.command("SET test:{k}:l other PX 600000").unwrap(),
        "+OK"
    );
    let waiter = tokio::spawn(service.clone().oneshot("k".to_string()));
    until("it polls", || store.waiting() == 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(store.waiting(), 0);
    assert_eq!(store.flights_in_progress(), 0);
    assert_eq!(origin.calls(), 0);
    // The other holder's lease is untouched.
    assert_eq!(server.command("EXISTS test:{k}:l").unwrap(), ":1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_is_not_cached_and_frees_the_lease() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server)
        .lease_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let service = origin.cached(&store);
    let error = service
        .clone()
        .oneshot("fail".to_string())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("origin failed"), "{error}");
    let error = service
        .clone()
        .oneshot("fail".to_string())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("origin failed"), "{error}");
    assert_eq!(origin.calls(), 2, "the error was not cached");
    assert_eq!(store.stats().wait_deadlines, 0, "the lease was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refresh_is_made_by_one_replica_of_the_fleet() {
    let Some(server) = server() else { return };
    let origin = Origin::new();
    // A load of at least 50 ms and a β so large that every hit refreshes
    // early: Δ·β ≥ 50 000 s against 10 s left (the draw U must be at most
    // e^(−10/50 000), and the seeded draws are).
    let stores: Vec<_> = (0..5)
        .map(|_| {
            store(&server)
                .ttl(Duration::from_secs(10))
                .early_refresh(true)
                .beta(1e6)
                .build()
                .unwrap()
        })
        .collect();
    let services: Vec<_> = stores.iter().map(|s| origin.cached(s)).collect();
    let first = tokio::spawn(services[0].clone().oneshot("k".to_string()));
    until("the first load started", || origin.calls() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    origin.gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), "value:k:1");
    // Every replica hits, and wants an early refresh; one takes the lease
    // and is held at the origin until the others have tried and given up.
    for service in &services {
        assert_eq!(ask(service, "k").await, "value:k:1");
    }
    until("one refresh holds the lease", || {
        origin.calls() == 2
            && stores
                .iter()
                .map(|s| s.refreshes_in_progress())
                .sum::<usize>()
                == 1
    })
    .await;
    origin.gate.add_permits(1);
    until("the refresh is written", || {
        stores.iter().all(|s| s.refreshes_in_progress() == 0)
    })
    .await;
    assert_eq!(origin.calls(), 2);
    let early: u64 = stores.iter().map(|s| s.stats().early_refreshes).sum();
    assert_eq!(early, 5, "every replica started one, in the background");
    // The refreshed value is what every replica now gets (and refreshes again).
    origin.gate.add_permits(100);
    assert_eq!(ask(&services[3], "k").await, "value:k:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_in_its_stale_window_is_served_while_one_replica_refreshes() {
    let Some(server) = server() else { return };
    let origin = Origin::new();
    origin.gate.add_permits(1);
    let stores: Vec<_> = (0..3)
        .map(|_| {
            store(&server)
                .stale_while_revalidate(Duration::from_secs(30))
                .build()
                .unwrap()
        })
        .collect();
    let services: Vec<_> = stores.iter().map(|s| origin.cached(s)).collect();
    assert_eq!(ask(&services[0], "k").await, "value:k:1");
    // Past its freshness: 10 s of its 30 s stale window left.
    let mut redis = direct(&server).await;
    let _: bool = redis.pexpire("test:{k}:v", 10_000).await.unwrap();
    for service in &services {
        assert_eq!(ask(service, "k").await, "value:k:1");
    }
    origin.gate.add_permits(100); // the refresh may end now
    until("the refreshes ended", || {
        stores.iter().all(|s| s.refreshes_in_progress() == 0)
    })
    .await;
    assert_eq!(origin.calls(), 2, "one refresh for the fleet");
    assert_eq!(stores.iter().map(|s| s.stats().stale).sum::<u64>(), 3);
    assert_eq!(ask(&services[1], "k").await, "value:k:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_ours_is_reloaded_and_never_an_error() {
    let Some(server) = server() else { return };
    let origin = Origin::open();
    let store = store(&server).build().unwrap();
    let service = origin.cached(&store);
    let mut redis = direct(&server).await;
    let _: () = redis
        .set("test:{k}:v", "written by another program")
        .await
        .unwrap();
    assert_eq!(ask(&service, "k").await, "value:k:1");
    let _: () = redis.set("test:{j}:v", 42).await.unwrap();
    let _: () = redis.set("test:{j}:l", 42).await.unwrap();
    assert_eq!(ask(&service, "j").await, "value:j:2");
    // A hash under the key: Redis answers WRONGTYPE, which is an answer —
    // that request goes to the origin, and Redis is not marked down.
    let _: () = redis.hset("test:{h}:v", "field", "value").await.unwrap();
    assert_eq!(ask(&service, "h").await, "value:h:3");
    assert!(!store.is_degraded());
    assert_eq!(ask(&service, "j2").await, "value:j2:4");
    assert_eq!(ask(&service, "j2").await, "value:j2:4");
    assert_eq!(store.stats().degraded, 3);
    // Not overwritten: it is not ours to replace.
    let foreign: String = redis.get("test:{k}:v").await.unwrap();
    assert_eq!(foreign, "written by another program");
}

#[test]
fn bad_settings_are_errors_not_panics() {
    let field = |b: dephase::cache::StoreBuilder<dephase::redis::Redis<String, String>>| {
        b.build().unwrap_err().field()
    };
    let builder = || RedisStore::<String, String>::builder("redis://127.0.0.1:1/");
    assert_eq!(
        field(RedisStore::builder("http://example.com/")),
        "redis.url"
    );
    assert_eq!(field(RedisStore::builder("")), "redis.url");
    // TLS is built in; a certificate authority that is not PEM is said at
    // build time, not at the first request.
    assert!(
        RedisStore::<String, String>::builder("rediss://127.0.0.1:6380/")
            .build()
            .is_ok()
    );
    assert_eq!(
        field(RedisStore::builder(
            dephase::redis::Server::new("rediss://127.0.0.1:6380/")
                .root_certificate(b"not a PEM".to_vec())
        )),
        "redis.root_certificate"
    );
    // A certificate authority is for TLS: with a redis:// URL it is a mistake.
    assert_eq!(
        field(RedisStore::builder(
            dephase::redis::Server::new("redis://127.0.0.1:6379/")
                .root_certificate(b"-----BEGIN CERTIFICATE-----\n".to_vec())
        )),
        "redis.root_certificate"
    );
    assert_eq!(field(builder().ttl(Duration::ZERO)), "redis.ttl");
    assert_eq!(
        field(builder().lease_ttl(Duration::ZERO)),
        "redis.lease_ttl"
    );
    assert_eq!(
        field(builder().op_timeout(Duration::ZERO)),
        "redis.op_timeout"
    );
    let forever = Duration::MAX;
    assert_eq!(field(builder().ttl(forever)), "redis.ttl");
    assert_eq!(
        field(builder().stale_while_revalidate(forever)),
        "redis.ttl"
    );
    assert_eq!(
        field(builder().ttl_jitter(dephase::cache::TtlJitter::PerKey(forever))),
        "redis.ttl"
    );
    assert_eq!(field(builder().lease_ttl(forever)), "redis.lease_ttl");
    assert_eq!(field(builder().lease_wait(forever)), "redis.lease_wait");
    assert_eq!(field(builder().op_timeout(forever)), "redis.op_timeout");
    assert!(
        builder()
            .ttl(Duration::from_secs(86_400 * 365))
            .build()
            .is_ok()
    );
    for beta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(field(builder().beta(beta)), "redis.beta");
    }
    assert!(builder().build().is_ok());
}

// ---------------------------------------------------------------------------
// Replicas in separate processes: this test binary, started again with
// `--ignored --exact replica_process`, is each replica.

const ROUNDS: usize = 3;
const PROCESSES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_in_separate_processes_make_one_recompute_per_expiry() {
    let Some(server) = server() else { return };
    let mut redis = direct(&server).await;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "replica_process", "--nocapture"])
                .env("DEPHASE_TEST_REDIS", server.url())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for round in 1..=ROUNDS {
        let _: () = redis.del("proc:{hot}:v").await.unwrap(); // the expiry
        // Every replica starts its herd at once.
        let _: () = redis
            .rpush(format!("go:{round}"), vec![1; PROCESSES])
            .await
            .unwrap();
        for _ in 0..PROCESSES {
            let done: Option<(String, String)> =
                redis.blpop(format!("done:{round}"), 60.0).await.unwrap();
            assert!(done.is_some(), "a replica did not finish round {round}");
        }
        let calls: usize = redis.get("origin_calls").await.unwrap();
        assert_eq!(calls, round, "origin calls after round {round}");
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "replica failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// One replica process of the test above (not run on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a replica process, started by replicas_in_separate_processes_make_one_recompute_per_expiry"]
async fn replica_process() {
    let url = std::env::var("DEPHASE_TEST_REDIS").expect("started by the multi-process test");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut control = client.get_multiplexed_async_connection().await.unwrap();
    let counter = control.clone();
    // The origin: counts its calls in Redis (shared by every process) and
    // takes 50 ms, so that the processes' herds overlap.
    let origin = tower::service_fn(move |key: String| {
        let mut counter = counter.clone();
        async move {
            let call: i64 = counter.incr("origin_calls", 1).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, BoxError>(format!("value:{key}:{call}"))
        }
    });
    let store = RedisStore::builder(url)
        .prefix("proc:")
        .early_refresh(false)
        .build()
        .unwrap();
    let service = CacheLayer::new(store.clone(), |k: &String| Some(k.clone())).layer(origin);
    for round in 1..=ROUNDS {
        let go: Option<(String, i64)> = control.blpop(format!("go:{round}"), 60.0).await.unwrap();
        assert!(go.is_some(), "no go for round {round}");
        let herd: Vec<_> = (0..10)
            .map(|_| tokio::spawn(service.clone().oneshot("hot".to_string())))
            .collect();
        for answer in herd {
            let answer = answer.await.unwrap().unwrap();
            assert_eq!(answer, format!("value:hot:{round}"));
        }
        let _: () = control.rpush(format!("done:{round}"), 1).await.unwrap();
    }
    assert_eq!(store.stats().degraded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_in_front_answers_hot_keys_without_redis() {
    use dephase::cache::MemoryStore;

    let Some(server) = server() else { return };
    let origin = Origin::open();
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let shared = store(&server).build().unwrap();
            let near = MemoryStore::builder(100)
                .ttl(Duration::from_secs(30))
                .early_refresh(false)
                .build()
                .unwrap();
            let service = ServiceBuilder::new()
                .layer(CacheLayer::new(near, |k: &String| Some(k.clone())))
                .layer(CacheLayer::new(shared.clone(), |k: &String| {
                    Some(k.clone())
                }))
                .service(origin.service());
            (shared, service)
        })
        .collect();
    for (_, service) in &replicas {
        for _ in 0..10 {
            assert_eq!(ask(service, "k").await, "value:k:1");
        }
    }
    assert_eq!(origin.calls(), 1, "one load for the fleet");
    // Each replica went to Redis once (its near-cache miss): one load, two hits.
    let hits: u64 = replicas.iter().map(|(s, _)| s.stats().hits).sum();
    assert_eq!(hits, 2);
}

/// HTTP responses through the fan-out layer, shared across replicas in
/// Redis: status, headers and body come back whole; an error status is
/// handed to the callers but not stored.
#[cfg(feature = "http")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_responses_are_shared_across_replicas_whole() {
    use bytes::Bytes;
    use dephase::http::{Collected, FanoutLayer, RequestKey};
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Empty, Full};

    let Some(server) = server() else { return };
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let origin = {
        let (calls, gate) = (calls.clone(), gate.clone());
        tower::service_fn(move |request: Request<Empty<Bytes>>| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await?.forget();
                let status = if request.uri().path() == "/broken" {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .header("x-origin", "one")
                    .body(Full::new(Bytes::from(format!(
                        "{{\"path\":\"{}\"}}",
                        request.uri().path()
                    ))))?;
                Ok::<_, BoxError>(response)
            }
        })
    };
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let store = RedisStore::builder(server.url())
                .prefix("http:")
                .early_refresh(false)
                .store_if(Collected::is_cacheable)
                .build()
                .unwrap();
            let service = FanoutLayer::new(
                4096,
                CacheLayer::new(store.clone(), RequestKey::new().into_fn()),
            )
            .layer(origin.clone());
            (store, service)
        })
        .collect();
    let get = |path: &str| {
        Request::get(format!("http://origin{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    let herd: Vec<_> = replicas
        .iter()
        .flat_map(|(_, service)| {
            (0..5).map(|_| tokio::spawn(service.clone().oneshot(get("/users/7"))))
        })
        .collect();
    until("two replicas wait for the third", || {
        replicas.iter().map(|(s, _)| s.waiting()).sum::<usize>() == 2
            && calls.load(Ordering::SeqCst) == 1
    })
    .await;
    gate.add_permits(1);
    for response in herd {
        let response = response.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["x-origin"], "one");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{\"path\":\"/users/7\"}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // An error status: answered, not stored; the next request loads again.
    gate.add_permits(10);
    for (_, service) in &replicas {
        let response = service.clone().oneshot(get("/broken")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let mut redis = direct(&server).await;
    let keys: Vec<String> = redis.keys("http:*").await.unwrap();
    assert_eq!(keys, vec!["http:{GET http://origin/users/7}:v".to_string()]);
}

/// The fleet example, shorter (2 s per run, 1 and 4 replicas): with the
/// lease a fleet makes the origin calls of a single replica; with
/// in-process caches, more. On the real clock; the claims are about counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_example_shows_one_recompute_per_expiry_with_the_lease() {
    let Some(server) = server() else { return };
    let runs = fleet::run(&server.url(), &[1, 4], Duration::from_secs(2)).await;
    let [(single_local, single_shared), (local, shared)] = runs[..] else {
        panic!("two sizes, two runs");
    };
    assert!(
        single_shared.origin_calls >= 2,
        "a cold load and an expiry: {single_shared:?}"
    );
    assert_eq!(
        shared.origin_calls, single_shared.origin_calls,
        "{shared:?}"
    );
    assert_eq!(shared.origin_peak, 1, "{shared:?}");
    assert!(
        local.origin_calls > single_local.origin_calls * 3,
        "{local:?}"
    );
    for run in [single_local, single_shared, local, shared] {
        assert_eq!(run.answered, run.requests, "{run:?}");
    }
    assert_eq!(shared.degraded, 0);
}

mod codec {
    use bytes::Bytes;
    use dephase::redis::RedisValue;
    use proptest::prelude::*;

    use super::support::proptest_config;

    proptest! {
        #![proptest_config(proptest_config(512))]

        /// Whatever bytes are under a key, reading them never panics.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = String::decode(&bytes);
            let _ = Vec::<u8>::decode(&bytes);
            let _ = Bytes::decode(&bytes);
            #[cfg(feature = "http")]
            let _ = dephase::http::Collected::<()>::decode(&bytes);
        }

        /// Strings and byte strings read back as written.
        #[test]
        fn values_read_back_as_written(text in ".{0,64}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            text.encode(&mut out);
            prop_assert_eq!(String::decode(&out), Some(text));
            let mut out = Vec::new();
            raw.encode(&mut out);
            prop_assert_eq!(Vec::<u8>::decode(&out), Some(raw));
        }
    }
}

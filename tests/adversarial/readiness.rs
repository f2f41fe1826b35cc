//! Readiness is a contract: a layer that calls its inner service later than
//! `call` (pace, retry re-sends, fan-out's own call, cache loads and
//! refreshes, coalesce) must send the instance that `poll_ready` readied.
//! Each layer here runs over tower's `ConcurrencyLimit(1)` and over a
//! `Buffer` of one slot — both reserve capacity in `poll_ready` — driven
//! the way tower users drive a service: `svc.ready().await?.call(req)`,
//! one request after another on the same instance, then a herd of clones.
//! A layer that keeps the readied instance and sends a clone deadlocks:
//! the clone waits for the permit its own caller holds.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dephase::BoxError;
use dephase::breaker::{Breaker, CircuitBreakerLayer, KeyedBreaker};
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use dephase::coalesce::CoalesceLayer;
use dephase::http::{FanoutLayer, IdempotentRequests, ReplayLayer, RequestKey};
use dephase::pace::{PaceLayer, Pacer};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::throttle::{ThrottleLayer, Throttler};
use dephase::{ExponentialBackoff, Jitter};
use http_body_util::{BodyExt, Empty, Full};
use tower::buffer::Buffer;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt};

use crate::support::bounded;

const MS: Duration = Duration::from_millis(1);

/// An origin that takes a millisecond and counts its calls; with
/// `fail_first`, the first call for each request fails.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    seen: Option<Arc<Mutex<HashSet<u32>>>>,
}

impl Origin {
    fn new(fail_first: bool) -> Self {
        Origin {
            calls: Arc::default(),
            seen: fail_first.then(Arc::default),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every request fails its first call again.
    fn forget(&self) {
        if let Some(seen) = &self.seen {
            seen.lock().unwrap().clear();
        }
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send + 'static>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |n: u32| {
            this.calls.fetch_add(1, Ordering::SeqCst);
            let fail = this
                .seen
                .as_ref()
                .is_some_and(|seen| seen.lock().unwrap().insert(n));
            async move {
                tokio::time::sleep(MS).await;
                if fail {
                    Err::<u32, BoxError>("scripted failure".into())
                } else {
                    Ok(n)
                }
            }
        })
    }
}

/// `requests` one after another on one instance, each readied with
/// `ready().await` and then called: the answers, or the errors as text.
async fn one_by_one<S, Req>(mut svc: S, requests: impl IntoIterator<Item = Req>) -> Vec<String>
where
    S: Service<Req>,
    S::Response: fmt::Debug,
    S::Error: fmt::Display,
{
    let mut answers = Vec::new();
    for request in requests {
        let answer = match svc.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(error) => Err(error),
        };
        answers.push(match answer {
            Ok(response) => format!("{response:?}"),
            Err(error) => format!("error: {error}"),
        });
    }
    answers
}

/// A herd: each request on its own clone, all at once.
async fn herd<S, Req>(svc: &S, requests: impl IntoIterator<Item = Req>) -> usize
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Send + 'static,
{
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| tokio::spawn(svc.clone().oneshot(r)))
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.unwrap().is_ok());
    }
    ok
}

/// Five calls one after another answer in order, then ten at once all
/// succeed: the check of a layer whose calls may wait before they send.
async fn five_in_order_then_a_herd<S>(svc: S)
where
    S: Service<u32> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: fmt::Debug + Send,
    S::Error: fmt::Display + Send,
{
    assert_eq!(
        one_by_one(svc.clone(), 0..5).await,
        ["0", "1", "2", "3", "4"]
    );
    assert_eq!(herd(&svc, 0..10).await, 10);
}

/// Runs `$check` with `$svc` bound to `$layer` over `ConcurrencyLimit(1)`
/// of `$origin`, then over a one-slot `Buffer` of it.
macro_rules! over_reserving_services {
    ($layer:expr, $origin:expr, |$svc:ident| $check:expr) => {{
        {
            let $svc = $layer.layer(ConcurrencyLimit::new($origin, 1));
            bounded($check).await;
        }
        {
            let $svc = $layer.layer(Buffer::new($origin, 1));
            bounded($check).await;
        }
    }};
}

/// A paced request whose turn is later sends the readied instance (fault 2
/// of the hardening issue: it kept the instance and its permit, and sent an
/// unready clone that waited for that permit for ever).
#[tokio::test(start_paused = true)]
async fn pace_sends_the_instance_it_readied() {
    let origin = Origin::new(false);
    let pacer = Pacer::builder()
        .rate(10, Duration::from_secs(1))
        .max_wait(Duration::from_secs(60))
        .seed(1)
        .build()
        .unwrap();
    over_reserving_services!(
        PaceLayer::new(pacer.clone()),
        origin.service(),
        |svc| async {
            let answers = one_by_one(svc.clone(), 0..5).await;
            assert_eq!(answers, ["0", "1", "2", "3", "4"]);
            assert_eq!(herd(&svc, 0..10).await, 10);
        }
    );
    assert_eq!(origin.calls(), 30);
}

/// A retried request re-sends through an instance it readied itself.
#[tokio::test(start_paused = true)]
async fn retry_resends_through_an_instance_it_readied() {
    let origin = Origin::new(true); // the first call of each request fails
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            ExponentialBackoff::builder()
                .base(MS)
                .jitter(Jitter::Full)
                .seed(2)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let layer = RetryLayer::new(policy);
    over_reserving_services!(layer.clone(), origin.service(), |svc| async {
        origin.forget();
        assert_eq!(
            one_by_one(svc.clone(), 0..5).await,
            ["0", "1", "2", "3", "4"]
        );
        origin.forget();
        assert_eq!(herd(&svc, 0..10).await, 10);
    });
    assert_eq!(
        origin.calls(),
        2 * (2 * 5 + 2 * 10),
        "every request retried once"
    );
}

/// The breaker, the keyed breaker and the throttle call at once (or not at
/// all): nothing to hold, nothing to deadlock, rejected or admitted.
#[tokio::test(start_paused = true)]
async fn guards_call_the_readied_instance_at_once() {
    let origin = Origin::new(false);
    let breaker = Breaker::builder().build().unwrap();
    over_reserving_services!(
        CircuitBreakerLayer::new(breaker.clone()),
        origin.service(),
        |svc| async {
            assert_eq!(one_by_one(svc.clone(), 0..3).await.len(), 3);
            assert_eq!(herd(&svc, 0..10).await, 10);
        }
    );
    let keyed = KeyedBreaker::new(Breaker::builder(), 16).unwrap();
    over_reserving_services!(
        keyed.layer(|n: &u32| Some(n % 4)),
        origin.service(),
        |svc| async {
            assert_eq!(one_by_one(svc.clone(), 0..3).await.len(), 3);
            assert_eq!(herd(&svc, 0..10).await, 10);
        }
    );
    let throttler = Throttler::builder().seed(3).build().unwrap();
    over_reserving_services!(
        ThrottleLayer::new(throttler.clone()),
        origin.service(),
        |svc| async {
            assert_eq!(one_by_one(svc.clone(), 0..3).await.len(), 3);
            assert_eq!(herd(&svc, 0..10).await, 10);
        }
    );
}

/// Coalesced callers, leaders and followers alike, go through.
#[tokio::test(start_paused = true)]
async fn coalesce_leads_and_follows_over_reserving_services() {
    let origin = Origin::new(false);
    let layer = CoalesceLayer::new(|n: &u32| Some(n % 3));
    over_reserving_services!(layer.clone(), origin.service(), |svc| async {
        assert_eq!(one_by_one(svc.clone(), 0..3).await, ["0", "1", "2"]);
        assert_eq!(herd(&svc, 0..30).await, 30);
    });
}

/// Cache misses, hits, early refreshes and stale refreshes all go through:
/// a refresh in the background is sent through the readied instance.
#[tokio::test(start_paused = true)]
async fn cache_loads_and_refreshes_over_reserving_services() {
    let origin = Origin::new(false);
    let store = MemoryStore::builder(100)
        .ttl(Duration::from_millis(20))
        .ttl_jitter(TtlJitter::None)
        .stale_while_revalidate(Duration::from_secs(1))
        .seed(4)
        .build()
        .unwrap();
    let layer = CacheLayer::new(store.clone(), |n: &u32| Some(n % 2));
    over_reserving_services!(layer.clone(), origin.service(), |svc| async {
        for round in 0..5 {
            // misses, then hits, then (the entries expired) stale answers
            // with a refresh in the background
            assert_eq!(
                one_by_one(svc.clone(), 0..4).await.len(),
                4,
                "round {round}"
            );
            assert_eq!(herd(&svc, 0..10).await, 10);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    assert!(origin.calls() > 4, "refreshes reached the origin");
}

fn http_origin() -> impl Service<
    http::Request<Empty<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = BoxError,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|request: http::Request<Empty<Bytes>>| async move {
        tokio::time::sleep(MS).await;
        // Bodies over the fan-out limit below for /big: each follower
        // makes its own call, through its own readied instance.
        let body = if request.uri().path() == "/big" {
            Bytes::from(vec![b'x'; 64])
        } else {
            Bytes::from_static(b"small")
        };
        Ok::<_, BoxError>(http::Response::new(Full::new(body)))
    })
}

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://origin{path}"))
        .body(Empty::new())
        .unwrap()
}

/// Fan-out over coalesce and over the cache: shared bodies, and bodies
/// over the limit for which each caller makes its own call.
#[tokio::test(start_paused = true)]
async fn fanout_makes_its_own_calls_over_reserving_services() {
    let coalesce = FanoutLayer::new(16, CoalesceLayer::new(RequestKey::new().into_fn()));
    over_reserving_services!(coalesce.clone(), http_origin(), |svc| async {
        let answers = one_by_one(svc.clone(), ["/a", "/big", "/a"].map(get)).await;
        assert!(
            answers.iter().all(|a| !a.starts_with("error")),
            "{answers:?}"
        );
        assert_eq!(herd(&svc, ["/a", "/big", "/big", "/a"].map(get)).await, 4);
    });
    let store = MemoryStore::builder(100).seed(5).build().unwrap();
    let cache = FanoutLayer::new(16, CacheLayer::new(store, RequestKey::new().into_fn()));
    over_reserving_services!(cache.clone(), http_origin(), |svc| async {
        let answers = one_by_one(svc.clone(), ["/a", "/big", "/a"].map(get)).await;
        assert!(
            answers.iter().all(|a| !a.starts_with("error")),
            "{answers:?}"
        );
        assert_eq!(herd(&svc, ["/a", "/big", "/big", "/a"].map(get)).await, 4);
    });
}

/// Replayed bodies re-sent by a retry over reserving services.
#[tokio::test(start_paused = true)]
async fn replay_and_retry_over_reserving_services() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let origin = tower::service_fn(move |request: http::Request<_>| {
        let first = counter.fetch_add(1, Ordering::SeqCst) % 2 == 0;
        async move {
            let body = BodyExt::collect(request.into_body()).await?.to_bytes();
            let status = if first { 503 } else { 200 };
            Ok::<_, BoxError>(http::Response::builder().status(status).body(body)?)
        }
    });
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            ExponentialBackoff::builder()
                .base(MS)
                .seed(6)
                .build()
                .unwrap(),
        )
        .classify(dephase::http::HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()
        .unwrap();
    let layers = tower::layer::util::Stack::new(RetryLayer::new(policy), ReplayLayer::new(1024));
    let put = |i: u32| {
        http::Request::put("http://origin/x")
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .unwrap()
    };
    over_reserving_services!(layers.clone(), origin.clone(), |svc| async {
        let answers = one_by_one(svc.clone(), (0..3).map(put)).await;
        assert!(answers.iter().all(|a| a.contains("200")), "{answers:?}");
        assert_eq!(herd(&svc, (0..6).map(put)).await, 6);
    });
}

/// The hedge sends its original through the readied instance and readies
/// a clone of its own for each copy (over a one-permit service a copy that
/// comes due waits for the original's permit): no call hangs, with or
/// without an estimate armed.
#[tokio::test(start_paused = true)]
async fn hedge_copies_ready_their_own_instances() {
    use dephase::hedge::{HedgeLayer, HedgePolicy};
    let origin = Origin::new(false);
    let layer = HedgeLayer::new(
        HedgePolicy::builder()
            .window(10 * MS)
            .min_samples(2)
            .floor(Duration::from_micros(100))
            .jitter(0.0)
            .build()
            .unwrap(),
    );
    over_reserving_services!(layer.clone(), origin.service(), |svc| async {
        assert_eq!(
            one_by_one(svc.clone(), 0..5).await,
            ["0", "1", "2", "3", "4"]
        );
        tokio::time::sleep(20 * MS).await;
        assert_eq!(
            one_by_one(svc.clone(), 5..10).await,
            ["5", "6", "7", "8", "9"]
        );
        assert_eq!(herd(&svc, 0..10).await, 10);
    });
    assert!(
        layer.policy().estimate().is_some(),
        "the later calls could hedge"
    );
}

/// A caller that waits for a concurrency slot keeps the instance it
/// readied and calls it when its turn comes.
#[tokio::test(start_paused = true)]
async fn a_waiting_limit_caller_sends_the_instance_it_readied() {
    use dephase::limit::{ConcurrencyLimitLayer, Fixed, Limiter};
    let origin = Origin::new(false);
    let limiter = Limiter::builder()
        .algorithm(Fixed(1))
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    over_reserving_services!(
        ConcurrencyLimitLayer::new(limiter.clone()),
        origin.service(),
        |svc| five_in_order_then_a_herd(svc)
    );
    assert_eq!((origin.calls(), limiter.in_flight()), (30, 0));
}

/// A call the fault layer delays is sent through the instance it readied.
#[tokio::test(start_paused = true)]
async fn a_delayed_fault_call_sends_the_instance_it_readied() {
    use dephase::fault::{FaultLayer, Faults, Latency, Plan};
    let origin = Origin::new(false);
    let faults = Faults::seeded(
        Plan::builder()
            .latency(Latency::Fixed(5 * MS), 1.0)
            .unwrap()
            .build(),
        1,
    );
    over_reserving_services!(FaultLayer::new(faults.clone()), origin.service(), |svc| {
        five_in_order_then_a_herd(svc)
    });
    assert_eq!(origin.calls(), 30);
}

/// A call that waits for a fleet gate's slot (here admitted without one:
/// Redis is unreachable and the gate fails open) is sent through the
/// instance it readied.
#[cfg(feature = "redis")]
#[tokio::test(start_paused = true)]
async fn a_fleet_gated_call_sends_the_instance_it_readied() {
    use dephase::redis::{FleetGate, FleetGateLayer};
    let origin = Origin::new(false);
    let gate = FleetGate::builder("redis://127.0.0.1:1/", "readiness")
        .fail_open(true)
        .op_timeout(10 * MS)
        .build()
        .unwrap();
    over_reserving_services!(FleetGateLayer::new(gate.clone()), origin.service(), |svc| {
        five_in_order_then_a_herd(svc)
    });
    assert_eq!(origin.calls(), 30);
    assert_eq!(gate.stats().admitted_open, 30);
}

/// A call that waits for its turn in a fleet pacer (here the local share:
/// Redis is unreachable) is sent through the instance it readied.
#[cfg(feature = "redis")]
#[tokio::test(start_paused = true)]
async fn a_fleet_paced_call_sends_the_instance_it_readied() {
    use dephase::redis::{FleetPaceLayer, FleetPacer};
    let origin = Origin::new(false);
    let pacer = FleetPacer::builder("redis://127.0.0.1:1/", "readiness")
        .rate(1000, Duration::from_secs(1))
        .op_timeout(10 * MS)
        .build()
        .unwrap();
    over_reserving_services!(
        FleetPaceLayer::new(pacer.clone()),
        origin.service(),
        |svc| five_in_order_then_a_herd(svc)
    );
    assert_eq!(origin.calls(), 30);
    assert_eq!(pacer.stats().local_turns, 30);
}

//! The cache layer under paused time: hits, misses and expiry; coalesced
//! misses; XFetch early refreshes in the background, once per key; stale
//! while revalidate; stale if error, never past its bound; errors not cached
//! (unless a negative TTL); TTL jitter; panics; bounded memory; bypass;
//! telemetry; bad settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dephase::BoxError;
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use tower::{Service, ServiceBuilder, ServiceExt};

mod support;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// An origin whose answers say which call made them; it can be told to fail.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    delay: Duration,
}

impl Origin {
    fn new(delay: Duration) -> Self {
        Origin {
            calls: Arc::default(),
            failing: Arc::default(),
            delay,
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
    fn service(
        &self,
    ) -> impl Service<u32, Response = String, Error = BoxError, Future: Send + 'static>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |key: u32| {
            let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let (delay, failing) = (this.delay, this.failing.load(Ordering::SeqCst));
            async move {
                tokio::time::sleep(delay).await;
                if key == 666 {
                    panic!("the origin panicked");
                }
                if failing {
                    Err::<String, BoxError>(format!("call {n} failed").into())
                } else {
                    Ok(format!("key {key}, call {n}"))
                }
            }
        })
    }
}

fn store() -> dephase::cache::StoreBuilder<dephase::cache::Memory<u32, String>> {
    MemoryStore::builder(1000)
        .ttl(10 * S)
        .ttl_jitter(TtlJitter::None)
        .early_refresh(false)
        .seed(1)
}

async fn get<S>(svc: &S, key: u32) -> Result<String, BoxError>
where
    S: Service<u32, Response = String, Error = BoxError> + Clone,
{
    svc.clone().oneshot(key).await
}

#[tokio::test(start_paused = true)]
async fn hits_misses_and_expiry() {
    let origin = Origin::new(10 * MS);
    let store = store().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone(), |k: &u32| Some(*k)))
        .service(origin.service());
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 1");
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 1");
    assert_eq!(get(&svc, 2).await.unwrap(), "key 2, call 2");
    tokio::time::advance(10 * S).await;
    assert_eq!(
        get(&svc, 1).await.unwrap(),
        "key 1, call 3",
        "expired: loaded again"
    );
    assert_eq!(origin.calls(), 3);
    store.invalidate(&1);
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 4");
    assert_eq!(store.loads_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn misses_are_coalesced() {
    let origin = Origin::new(100 * MS);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store().build().unwrap(), |k: &u32| {
            Some(*k)
        }))
        .service(origin.service());
    let herd: Vec<_> = (0..500)
        .map(|_| tokio::spawn(svc.clone().oneshot(7)))
        .collect();
    for caller in herd {
        assert_eq!(
            support::bounded(caller).await.unwrap().unwrap(),
            "key 7, call 1"
        );
    }
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn early_refreshes_run_once_in_the_background() {
    let origin = Origin::new(50 * MS);
    let store = MemoryStore::builder(1000)
        .ttl(2 * S)
        .ttl_jitter(TtlJitter::None)
        .beta(1.0)
        .seed(3)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone(), |k: &u32| Some(*k)))
        .service(origin.service());
    get(&svc, 1).await.unwrap();
    // Read every millisecond until just before expiry: at some point XFetch
    // refreshes, once, while every reader keeps getting an answer at once.
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..1990 {
        tokio::time::sleep(MS).await;
        let start = tokio::time::Instant::now();
        answers.insert(get(&svc, 1).await.unwrap());
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "nobody waits for the refresh"
        );
    }
    tokio::time::sleep(100 * MS).await;
    assert_eq!(origin.calls(), 2, "exactly one early refresh");
    assert!(
        answers.contains("key 1, call 2"),
        "the refreshed value was served before expiry: {answers:?}"
    );
    assert_eq!(store.loads_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_the_old_value_and_refreshes_once() {
    let origin = Origin::new(50 * MS);
    let store = store().stale_while_revalidate(5 * S).build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |k: &u32| Some(*k)))
        .service(origin.service());
    get(&svc, 1).await.unwrap();
    tokio::time::advance(11 * S).await;
    let answers: Vec<String> = futures_join((0..20).map(|_| get(&svc, 1)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        answers.iter().all(|a| a == "key 1, call 1"),
        "stale, at once: {answers:?}"
    );
    tokio::time::sleep(100 * MS).await;
    assert_eq!(origin.calls(), 2, "one background refresh");
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 2");
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_the_old_value_up_to_its_bound_never_beyond() {
    let origin = Origin::new(10 * MS);
    let store = store().stale_if_error(30 * S).build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |k: &u32| Some(*k)))
        .service(origin.service());
    get(&svc, 1).await.unwrap();
    origin.fail(true);
    tokio::time::advance(20 * S).await; // 10 s past expiry
    assert_eq!(
        get(&svc, 1).await.unwrap(),
        "key 1, call 1",
        "the load failed: the old value, within the bound"
    );
    tokio::time::advance(21 * S).await; // 31 s past expiry
    let err = get(&svc, 1).await.unwrap_err();
    assert!(
        err.to_string().contains("failed"),
        "past the bound: the error, {err}"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached_unless_a_negative_ttl_says_so() {
    let origin = Origin::new(MS);
    origin.fail(true);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store().build().unwrap(), |k: &u32| {
            Some(*k)
        }))
        .service(origin.service());
    get(&svc, 1).await.unwrap_err();
    get(&svc, 1).await.unwrap_err();
    assert_eq!(origin.calls(), 2, "each miss tried again");

    let origin = Origin::new(MS);
    origin.fail(true);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(
            store().negative_ttl(S).build().unwrap(),
            |k: &u32| Some(*k),
        ))
        .service(origin.service());
    let first = get(&svc, 1).await.unwrap_err().to_string();
    let second = get(&svc, 1).await.unwrap_err().to_string();
    assert_eq!(first, second, "the same (cached) error");
    assert_eq!(origin.calls(), 1);
    origin.fail(false);
    tokio::time::advance(S).await;
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 2");
}

#[tokio::test(start_paused = true)]
async fn ttl_jitter_stretches_each_entry_within_its_bound() {
    for jitter in [TtlJitter::Random(S), TtlJitter::PerKey(S)] {
        let origin = Origin::new(Duration::ZERO);
        let store = store().ttl(10 * S).ttl_jitter(jitter).build().unwrap();
        let svc = ServiceBuilder::new()
            .layer(CacheLayer::new(store, |k: &u32| Some(*k)))
            .service(origin.service());
        for k in 0..100 {
            get(&svc, k).await.unwrap();
        }
        // Before the TTL: everything cached. After TTL + max jitter: nothing.
        tokio::time::advance(10 * S - MS).await;
        for k in 0..100 {
            get(&svc, k).await.unwrap();
        }
        assert_eq!(origin.calls(), 100, "{jitter:?}");
        tokio::time::advance(500 * MS).await;
        for k in 0..100 {
            get(&svc, k).await.unwrap();
        }
        let expired_by_half = origin.calls() - 100;
        assert!(
            (20..=80).contains(&expired_by_half),
            "{jitter:?}: {expired_by_half} of 100 expired half-way through the jitter"
        );
    }
    // Per-key jitter is the same for the same key, every time.
    let (a, b) = (TtlJitter::PerKey(S), TtlJitter::PerKey(S));
    assert_eq!(a, b);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_origin_gives_every_waiter_an_error_and_frees_the_key() {
    let origin = Origin::new(10 * MS);
    let store = store().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone(), |k: &u32| Some(*k)))
        .service(origin.service());
    let herd: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(666)))
        .collect();
    for caller in herd {
        assert!(support::bounded(caller).await.unwrap().is_err());
    }
    assert_eq!(store.loads_in_flight(), 0);
    assert_eq!(
        get(&svc, 1).await.unwrap(),
        "key 1, call 2",
        "still working"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_by_the_capacity() {
    let origin = Origin::new(Duration::ZERO);
    let store = MemoryStore::builder(1000).ttl(3600 * S).build().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone(), |k: &u32| Some(*k)))
        .service(origin.service());
    for k in 1000..101_000u32 {
        svc.ready().await.unwrap().call(k).await.unwrap();
    }
    assert!(store.len() <= 1000, "{} entries", store.len());
    assert_eq!(store.loads_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_bypass_the_cache() {
    let origin = Origin::new(MS);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store().build().unwrap(), |k: &u32| {
            (*k != 0).then_some(*k)
        }))
        .service(origin.service());
    get(&svc, 0).await.unwrap();
    get(&svc, 0).await.unwrap();
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn results_are_recorded() {
    use tracing::Instrument;
    use tracing::field::Empty;
    let (captured, _guard) = support::capture();
    let origin = Origin::new(10 * MS);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(
            store().ttl_jitter(TtlJitter::Random(S)).build().unwrap(),
            |k: &u32| Some(*k),
        ))
        .service(origin.service());
    let span = |name: &'static str| {
        tracing::info_span!(
            "request",
            name,
            dephase.cache.result = Empty,
            dephase.cache.expires_in_ms = Empty,
            dephase.cache.ttl_offset_ms = Empty
        )
    };
    get(&svc, 1).instrument(span("first")).await.unwrap();
    let first = captured.span("request");
    assert_eq!(first["dephase.cache.result"].as_str(), "miss");
    let offset = first["dephase.cache.ttl_offset_ms"].as_f64();
    assert!((0.0..=1000.0).contains(&offset));
    tokio::time::advance(S).await;
    get(&svc, 1).instrument(span("second")).await.unwrap();
    let second = captured.span("request");
    assert_eq!(second["dephase.cache.result"].as_str(), "hit");
    let expires_in = second["dephase.cache.expires_in_ms"].as_f64();
    assert!(
        (expires_in - (9000.0 + offset)).abs() < 1.0,
        "{expires_in} vs {offset}"
    );
}

#[test]
fn bad_settings_name_their_field() {
    let b = || MemoryStore::<u32, String>::builder(10);
    let cases = [
        (
            "cache.max_capacity",
            MemoryStore::<u32, String>::builder(0).build().unwrap_err(),
        ),
        ("cache.ttl", b().ttl(Duration::ZERO).build().unwrap_err()),
        ("cache.beta", b().beta(0.0).build().unwrap_err()),
        ("cache.beta", b().beta(-1.0).build().unwrap_err()),
        ("cache.beta", b().beta(f64::NAN).build().unwrap_err()),
        (
            "cache.negative_ttl",
            b().negative_ttl(Duration::ZERO).build().unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
    }
}

/// Callers that go away while a miss loads leave nothing behind: when all
/// are gone the load is cancelled and the key freed.
#[tokio::test(start_paused = true)]
async fn callers_that_go_away_leave_nothing_behind() {
    let origin = Origin::new(100 * MS);
    let store = store().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone(), |k: &u32| Some(*k)))
        .service(origin.service());
    let callers: Vec<_> = (0..20)
        .map(|_| tokio::spawn(svc.clone().oneshot(1)))
        .collect();
    tokio::time::sleep(10 * MS).await;
    assert_eq!(store.loads_in_flight(), 1);
    callers.iter().for_each(|c| c.abort());
    for c in callers {
        assert!(support::bounded(c).await.unwrap_err().is_cancelled());
    }
    assert_eq!(store.loads_in_flight(), 0);
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 2");
    assert!(store.len() == 1);
}

/// A store built before time is paused (in the same current-thread
/// runtime) follows the paused clock: its clock is coarse only when made in
/// a multi-thread runtime, whose time cannot be paused.
#[tokio::test]
async fn a_store_built_before_a_pause_follows_paused_time() {
    let origin = Origin::new(Duration::ZERO);
    let store = MemoryStore::builder(10)
        .ttl(S)
        .ttl_jitter(TtlJitter::None)
        .early_refresh(false)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |k: &u32| Some(*k)))
        .service(origin.service());
    tokio::time::pause();
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 1");
    tokio::time::advance(5 * S).await;
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 2", "expired");
}

/// The accuracy a coarse clock trades, at its bound: a store made in a
/// multi-thread runtime (on Linux, reading the kernel's coarse clock when
/// its step is at most a tenth of the TTL) serves a value past its expiry
/// by at most about a step — here, checked at two tenths of the TTL past
/// it, plus a millisecond. Real time: the coarse clock is never used when
/// time can be paused.
#[test]
fn a_coarse_store_serves_a_value_at_most_about_a_step_past_its_expiry() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ttl = 100 * MS;
    let store = runtime.block_on(async {
        MemoryStore::builder(10)
            .ttl(ttl)
            .ttl_jitter(TtlJitter::None)
            .early_refresh(false)
            .build()
            .unwrap()
    });
    let origin = Origin::new(Duration::ZERO);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store, |k: &u32| Some(*k)))
        .service(origin.service());
    runtime.block_on(async {
        let loaded = std::time::Instant::now();
        assert_eq!(get(&svc, 1).await.unwrap(), "key 1, call 1");
        // Wait (without a timer: the point is the clock) until the bound.
        while loaded.elapsed() < ttl + ttl / 5 + MS {
            std::thread::yield_now();
        }
        assert_eq!(
            get(&svc, 1).await.unwrap(),
            "key 1, call 2",
            "served more than two tenths of its TTL past its expiry"
        );
    });
}

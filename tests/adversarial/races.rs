//! Writers racing invalidation and failure: a load that started before an
//! invalidation never stores its value, a new request after it never joins
//! the old load, and a failure never replaces a value that is still
//! servable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dephase::BoxError;
use dephase::cache::{CacheLayer, MemoryStore, TtlJitter};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

use crate::support::{bounded, proptest_config};

const MS: Duration = Duration::from_millis(1);

/// An origin that takes `delay`, says which call answered, and fails while
/// told to.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
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

    fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = String, Error = BoxError, Future: Send + 'static>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |key: u32| {
            let call = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let (delay, failing) = (this.delay, this.failing.load(Ordering::SeqCst));
            async move {
                tokio::time::sleep(delay).await;
                if failing {
                    Err::<String, BoxError>(format!("call {call} failed").into())
                } else {
                    Ok(format!("key {key} call {call}"))
                }
            }
        })
    }
}

async fn get<S>(svc: &S, key: u32) -> Result<String, String>
where
    S: Service<u32, Response = String, Error = BoxError> + Clone,
{
    svc.clone().oneshot(key).await.map_err(|e| e.to_string())
}

/// An invalidation wins over a load that started before it (fault 6): the
/// request after the invalidation does not join the old load, the old load
/// does not store its value, and the next hit serves the new one.
#[tokio::test(start_paused = true)]
async fn an_invalidation_fences_the_load_in_flight() {
    let origin = Origin::new(100 * MS);
    let store = MemoryStore::builder(100)
        .ttl(Duration::from_secs(60))
        .ttl_jitter(TtlJitter::None)
        .early_refresh(false)
        .seed(1)
        .build()
        .unwrap();
    let svc = CacheLayer::new(store.clone(), |k: &u32| Some(*k)).layer(origin.service());

    let before = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 1).await }
    });
    tokio::time::sleep(50 * MS).await;
    store.invalidate(&1); // the data changed while call 1 was reading it
    let after = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 1).await }
    });
    assert_eq!(bounded(before).await.unwrap().unwrap(), "key 1 call 1");
    assert_eq!(
        bounded(after).await.unwrap().unwrap(),
        "key 1 call 2",
        "a request after the invalidation joined the load that started before it"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get(&svc, 1).await.unwrap(),
        "key 1 call 2",
        "the fenced value was stored"
    );

    // And with nobody asking after the invalidation: nothing is stored.
    let before = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 2).await }
    });
    tokio::time::sleep(50 * MS).await;
    store.invalidate(&2);
    assert_eq!(bounded(before).await.unwrap().unwrap(), "key 2 call 3");
    assert_eq!(
        get(&svc, 2).await.unwrap(),
        "key 2 call 4",
        "the fenced value was served"
    );
}

/// Inside a stale window a failure never replaces a servable value, even
/// with a negative TTL (fault 8): stale-if-error, stale-while-revalidate
/// and a failed early refresh.
#[tokio::test(start_paused = true)]
async fn a_failure_never_replaces_a_servable_value() {
    let origin = Origin::new(10 * MS);
    let builder = || {
        MemoryStore::builder(100)
            .ttl(Duration::from_secs(1))
            .ttl_jitter(TtlJitter::None)
            .negative_ttl(Duration::from_secs(30))
            .early_refresh(false)
            .seed(2)
    };

    // stale-if-error
    let store = builder()
        .stale_if_error(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = CacheLayer::new(store, |k: &u32| Some(*k)).layer(origin.service());
    assert_eq!(get(&svc, 1).await.unwrap(), "key 1 call 1");
    origin.fail(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(&svc, 1).await.unwrap(),
        "key 1 call 1",
        "stale if error"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&svc, 1).await.unwrap(),
        "key 1 call 1",
        "the failed reload replaced the stale value with its error"
    );
    origin.fail(false);

    // stale-while-revalidate
    let store = builder()
        .stale_while_revalidate(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = CacheLayer::new(store, |k: &u32| Some(*k)).layer(origin.service());
    let first = get(&svc, 2).await.unwrap();
    origin.fail(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(&svc, 2).await.unwrap(),
        first,
        "stale while revalidating"
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // the refresh failed
    assert_eq!(
        get(&svc, 2).await.unwrap(),
        first,
        "the failed refresh replaced the stale value with its error"
    );
    origin.fail(false);

    // a failed early refresh, while the value is still fresh
    let store = builder()
        .early_refresh(true)
        .beta(1e6) // every hit refreshes early
        .build()
        .unwrap();
    let svc = CacheLayer::new(store, |k: &u32| Some(*k)).layer(origin.service());
    let first = get(&svc, 3).await.unwrap();
    origin.fail(true);
    assert_eq!(
        get(&svc, 3).await.unwrap(),
        first,
        "a hit (refreshing early)"
    );
    tokio::time::sleep(100 * MS).await; // the early refresh failed
    assert_eq!(
        get(&svc, 3).await.unwrap(),
        first,
        "a failed early refresh replaced a fresh value with its error"
    );
}

proptest! {
    #![proptest_config(proptest_config(64))]

    /// Any interleaving of loads, hits, invalidations and time: a value
    /// served after an invalidation was loaded by a call that started after
    /// it.
    #[test]
    fn what_is_served_after_an_invalidation_was_loaded_after_it(
        steps in proptest::collection::vec((0u8..4, 0u64..60), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(interleaving(steps));
    }
}

/// Each call answers the time it started, in ms since `started`.
fn stamping(
    started: tokio::time::Instant,
) -> impl Service<u32, Response = u64, Error = BoxError, Future: Send + 'static> + Clone + Send + 'static
{
    tower::service_fn(move |_: u32| {
        let at = started.elapsed().as_millis() as u64;
        async move {
            tokio::time::sleep(20 * MS).await;
            Ok::<_, BoxError>(at)
        }
    })
}

async fn interleaving(steps: Vec<(u8, u64)>) {
    let started = tokio::time::Instant::now();
    let origin = stamping(started);
    let store = MemoryStore::builder(10)
        .ttl(Duration::from_millis(50))
        .stale_while_revalidate(Duration::from_millis(30))
        .seed(3)
        .build()
        .unwrap();
    let svc = CacheLayer::new(store.clone(), |k: &u32| Some(*k)).layer(origin);
    let mut invalidated_at = None::<u64>;
    let mut pending = Vec::new();
    for (action, wait) in steps {
        match action {
            0 | 1 => {
                let asked_at = started.elapsed().as_millis() as u64;
                let fence = invalidated_at;
                let call = svc.clone().oneshot(1);
                pending.push(tokio::spawn(async move {
                    let loaded_at: u64 = call.await.unwrap();
                    (asked_at, fence, loaded_at)
                }));
            }
            2 => {
                store.invalidate(&1);
                invalidated_at = Some(started.elapsed().as_millis() as u64);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    for task in pending {
        let (asked_at, fence, loaded_at) = bounded(task).await.unwrap();
        if let Some(fence) = fence {
            assert!(
                loaded_at >= fence,
                "asked at {asked_at} ms, after an invalidation at {fence} ms, got a value loaded at {loaded_at} ms"
            );
        }
    }
}

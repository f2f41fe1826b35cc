//! Coalescing: the semantics of Go's `singleflight` tests (duplicate
//! suppression, errors to all, forget, panics to all waiters), no spinning
//! waiters, cancellation of the leader and of everyone, the table draining
//! to empty after any mix of outcomes, a million distinct keys, telemetry,
//! and a threaded stress run.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dephase::BoxError;
use dephase::coalesce::error::{Panicked, SharedError};
use dephase::coalesce::{Coalesce, CoalesceLayer};
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt};

mod support;

const MS: Duration = Duration::from_millis(1);

/// What the test origin does for a request: (key, behaviour).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Ok,
    Fail,
    Panic,
}

/// An origin that counts calls and drops, sleeps `delay`, then acts.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    delay: Duration,
}

struct CountDrop(Arc<AtomicUsize>, bool);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Origin {
    fn new(delay: Duration) -> Self {
        Origin {
            calls: Arc::default(),
            dropped: Arc::default(),
            delay,
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// Calls dropped before they finished (cancelled).
    fn cancelled(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Service<(u32, Act)> for Origin {
    type Response = String;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (key, act): (u32, Act)) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (delay, dropped) = (self.delay, self.dropped.clone());
        Box::pin(async move {
            let mut guard = CountDrop(dropped, false);
            tokio::time::sleep(delay).await;
            guard.1 = true;
            match act {
                Act::Ok => Ok(format!("value {key} (call {n})")),
                Act::Fail => Err(format!("failure {key} (call {n})").into()),
                Act::Panic => panic!("origin panicked for {key}"),
            }
        })
    }
}

type Svc = Coalesce<Origin, fn(&(u32, Act)) -> Option<u32>, u32, String>;

fn coalesced(origin: &Origin) -> Svc {
    Coalesce::new(origin.clone(), |r: &(u32, Act)| Some(r.0))
}

async fn herd<S>(svc: &S, n: usize, req: (u32, Act)) -> Vec<Result<String, BoxError>>
where
    S: Service<(u32, Act), Response = String, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let callers: Vec<_> = (0..n)
        .map(|_| tokio::spawn(svc.clone().oneshot(req)))
        .collect();
    let mut out = Vec::new();
    for c in callers {
        out.push(support::bounded(c).await.unwrap());
    }
    out
}

// ----- Go's singleflight tests -----------------------------------------

#[tokio::test(start_paused = true)]
async fn do_returns_the_value() {
    let origin = Origin::new(MS);
    let mut svc = coalesced(&origin);
    assert_eq!(
        svc.ready().await.unwrap().call((1, Act::Ok)).await.unwrap(),
        "value 1 (call 1)"
    );
    assert_eq!(svc.coalescer().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn errors_go_to_every_waiter_and_are_not_remembered() {
    let origin = Origin::new(10 * MS);
    let svc = coalesced(&origin);
    for result in herd(&svc, 50, (1, Act::Fail)).await {
        let err = result.unwrap_err();
        let shared = err.downcast_ref::<SharedError>().expect("a shared error");
        assert_eq!(shared.inner().to_string(), "failure 1 (call 1)");
        assert!(std::error::Error::source(shared).is_some());
    }
    assert_eq!(origin.calls(), 1);
    // The flight is over: the next call is a new call.
    let next = svc.clone().oneshot((1, Act::Ok)).await.unwrap();
    assert_eq!(next, "value 1 (call 2)");
}

#[tokio::test(start_paused = true)]
async fn duplicates_are_suppressed() {
    let origin = Origin::new(50 * MS);
    let svc = coalesced(&origin);
    let results = herd(&svc, 1000, (7, Act::Ok)).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap() == "value 7 (call 1)")
    );
    assert_eq!(origin.calls(), 1);
    // Different keys do not share.
    let (a, b) = tokio::join!(
        svc.clone().oneshot((1, Act::Ok)),
        svc.clone().oneshot((2, Act::Ok))
    );
    assert_ne!(a.unwrap(), b.unwrap());
    assert_eq!(origin.calls(), 3);
    assert_eq!(svc.coalescer().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn forget_starts_a_new_call_while_the_old_waiters_get_the_old_result() {
    let origin = Origin::new(100 * MS);
    let svc = coalesced(&origin);
    let first = tokio::spawn(svc.clone().oneshot((1, Act::Ok)));
    tokio::task::yield_now().await;
    assert!(svc.coalescer().is_in_flight(&1));
    svc.coalescer().forget(&1);
    assert!(!svc.coalescer().is_in_flight(&1));
    let second = tokio::spawn(svc.clone().oneshot((1, Act::Ok)));
    let third = tokio::spawn(svc.clone().oneshot((1, Act::Ok)));
    assert_eq!(
        support::bounded(first).await.unwrap().unwrap(),
        "value 1 (call 1)"
    );
    assert_eq!(
        support::bounded(second).await.unwrap().unwrap(),
        "value 1 (call 2)"
    );
    assert_eq!(
        support::bounded(third).await.unwrap().unwrap(),
        "value 1 (call 2)"
    );
    assert_eq!(origin.calls(), 2);
    assert_eq!(svc.coalescer().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panic_goes_to_every_waiter_and_frees_the_key() {
    let origin = Origin::new(10 * MS);
    let svc = coalesced(&origin);
    for result in herd(&svc, 20, (3, Act::Panic)).await {
        let err = result.unwrap_err();
        let panicked = err.downcast_ref::<Panicked>();
        assert!(
            panicked
                .expect("a panic error")
                .message()
                .contains("origin panicked for 3")
        );
    }
    assert_eq!(svc.coalescer().in_flight(), 0);
    assert_eq!(
        svc.clone().oneshot((3, Act::Ok)).await.unwrap(),
        "value 3 (call 2)",
        "the layer keeps working"
    );
}

// ----- waiting without spinning ---------------------------------------------

/// Counts how often a future is polled.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_do_not_spin() {
    let origin = Origin::new(200 * MS);
    let svc = coalesced(&origin);
    let counters: Vec<Arc<AtomicUsize>> = (0..100).map(|_| Arc::default()).collect();
    let callers: Vec<_> = counters
        .iter()
        .map(|polls| {
            tokio::spawn(Counted {
                inner: Box::pin(svc.clone().oneshot((1, Act::Ok))),
                polls: polls.clone(),
            })
        })
        .collect();
    for c in callers {
        support::bounded(c).await.unwrap().unwrap();
    }
    let most = counters
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .max()
        .unwrap();
    assert!(
        most <= 3,
        "a waiter was polled {most} times during a 200 ms call"
    );
}

// ----- cancellation ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_leader_going_away_does_not_cancel_the_call() {
    let origin = Origin::new(100 * MS);
    let svc = coalesced(&origin);
    let leader = tokio::spawn(svc.clone().oneshot((1, Act::Ok)));
    tokio::task::yield_now().await;
    let followers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot((1, Act::Ok))))
        .collect();
    tokio::task::yield_now().await;
    leader.abort();
    assert!(support::bounded(leader).await.unwrap_err().is_cancelled());
    for f in followers {
        assert_eq!(
            support::bounded(f).await.unwrap().unwrap(),
            "value 1 (call 1)"
        );
    }
    assert_eq!((origin.calls(), origin.cancelled()), (1, 0));
    assert_eq!(svc.coalescer().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn when_everyone_goes_away_the_call_is_cancelled_and_the_key_freed() {
    let origin = Origin::new(100 * MS);
    let svc = coalesced(&origin);
    let callers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot((1, Act::Ok))))
        .collect();
    tokio::time::sleep(10 * MS).await;
    for c in &callers {
        c.abort();
    }
    for c in callers {
        let _ = support::bounded(c).await;
    }
    assert_eq!(origin.cancelled(), 1, "the call's future was dropped");
    assert_eq!(svc.coalescer().in_flight(), 0);
    assert_eq!(
        svc.clone().oneshot((1, Act::Ok)).await.unwrap(),
        "value 1 (call 2)"
    );
}

/// A panic while making the call (not while it runs) reaches the caller that
/// made it; the followers get an error; the key is freed.
#[tokio::test(start_paused = true)]
async fn a_panic_in_call_itself_frees_the_key() {
    #[derive(Clone)]
    struct PanicsInCall;
    impl Service<u32> for PanicsInCall {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, n: u32) -> Self::Future {
            if n == 0 {
                panic!("bad request");
            }
            std::future::ready(Ok(n))
        }
    }
    let mut svc = Coalesce::new(PanicsInCall, |_: &u32| Some(()));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(0));
    }));
    assert!(caught.is_err());
    assert_eq!(svc.coalescer().in_flight(), 0);
    assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);

    // A key function that panics leaves nothing behind either.
    let mut svc = Coalesce::new(Origin::new(MS), |r: &(u32, Act)| {
        if r.0 == 0 {
            panic!("bad key")
        } else {
            Some(r.0)
        }
    });
    assert!(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(svc.call((0, Act::Ok)));
        }))
        .is_err()
    );
    assert_eq!(svc.coalescer().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_are_not_coalesced() {
    let origin = Origin::new(MS);
    let svc = Coalesce::new(origin.clone(), |r: &(u32, Act)| (r.0 != 0).then_some(r.0));
    let results = herd(&svc, 10, (0, Act::Ok)).await;
    assert_eq!(origin.calls(), 10);
    assert!(results.iter().all(|r| r.is_ok()));
}

// ----- the table drains ---------------------------------------------------

proptest! {
    #![proptest_config(support::proptest_config(300))]

    /// Any mix of keys, successes, errors, panics and cancellations leaves the
    /// in-flight table empty, and every caller that stayed got an answer.
    #[test]
    fn the_table_drains_to_empty(plan in proptest::collection::vec((0u32..4, 0u8..3, any::<bool>(), 0u64..30), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let origin = Origin::new(20 * MS);
            let svc = coalesced(&origin);
            let mut callers = Vec::new();
            for (key, act, cancel, after) in plan {
                let act = [Act::Ok, Act::Fail, Act::Panic][act as usize];
                let task = tokio::spawn(svc.clone().oneshot((key, act)));
                if cancel {
                    let abort = task.abort_handle();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(after)).await;
                        abort.abort();
                    });
                }
                callers.push(task);
                tokio::time::sleep(Duration::from_millis(after / 3)).await;
            }
            for c in callers {
                match support::bounded(c).await {
                    Ok(_) => {}
                    Err(e) => prop_assert!(e.is_cancelled()),
                }
            }
            prop_assert_eq!(svc.coalescer().in_flight(), 0);
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_million_distinct_keys_drain() {
    let svc = Coalesce::new(
        tower::service_fn(|k: u32| async move { Ok::<_, BoxError>(k) }),
        |k: &u32| Some(*k),
    );
    for k in 0..1_000_000u32 {
        assert_eq!(svc.clone().oneshot(k).await.unwrap(), k);
    }
    assert_eq!(svc.coalescer().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn roles_and_waiters_are_recorded() {
    use tracing::Instrument;
    use tracing::field::Empty;
    let (captured, _guard) = support::capture();
    let origin = Origin::new(10 * MS);
    let svc = coalesced(&origin);
    let leader = svc
        .clone()
        .oneshot((1, Act::Ok))
        .instrument(tracing::info_span!(
            "leader",
            dephase.coalesce.role = Empty,
            dephase.coalesce.waiters = Empty
        ));
    let follower = svc
        .clone()
        .oneshot((1, Act::Ok))
        .instrument(tracing::info_span!(
            "follower",
            dephase.coalesce.role = Empty,
            dephase.coalesce.waiters = Empty
        ));
    let (a, b) = tokio::join!(leader, follower);
    a.unwrap();
    b.unwrap();
    assert_eq!(
        captured.span("leader")["dephase.coalesce.role"].as_str(),
        "leader"
    );
    assert_eq!(
        captured.span("follower")["dephase.coalesce.role"].as_str(),
        "follower"
    );
    assert_eq!(
        captured.span("follower")["dephase.coalesce.waiters"].as_u64(),
        2
    );
}

/// Many threads, many keys, a real multi-threaded runtime.
#[test]
fn threads_share_flights_safely() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let origin = Origin::new(Duration::from_micros(200));
        let svc = ServiceBuilder::new()
            .layer(CoalesceLayer::new(|r: &(u32, Act)| Some(r.0)))
            .service(origin.clone());
        let callers: Vec<_> = (0..20_000u32)
            .map(|i| {
                let act = if i % 7 == 0 { Act::Fail } else { Act::Ok };
                tokio::spawn(svc.clone().oneshot((i % 16, act)))
            })
            .collect();
        let mut answered = 0;
        for c in callers {
            let _ = tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .expect("hung")
                .unwrap();
            answered += 1;
        }
        assert_eq!(answered, 20_000);
        assert!(
            origin.calls() < 20_000,
            "some calls were shared: {}",
            origin.calls()
        );
        assert_eq!(svc.coalescer().in_flight(), 0);
    });
}

/// Regression: when the driving caller and the caller it woke to take over
/// both go away before either is polled again (tasks aborted together are
/// dropped in any order), the turn to drive still reaches a caller that is
/// left. Before the fix the last caller waited for ever.
#[tokio::test(start_paused = true)]
async fn callers_that_leave_together_still_hand_the_call_over() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let origin = tower::service_fn(move |_: u8| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(7u8)
        }
    });
    let service = ServiceBuilder::new()
        .layer(CoalesceLayer::new(|k: &u8| Some(*k)))
        .service(origin);
    let mut callers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(service.clone().oneshot(1)))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let last = callers.pop().unwrap();
    callers.iter().for_each(|c| c.abort());
    assert_eq!(support::bounded(last).await.unwrap().unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A value that counts its clones.
#[derive(Debug)]
struct Cloned(Arc<AtomicUsize>);

impl Clone for Cloned {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Cloned(Arc::clone(&self.0))
    }
}

/// A caller alone in its flight gets the value itself; with followers,
/// each waiter gets a copy (Go's singleflight hands every caller the same
/// value; a Rust value has one owner, so the others get clones).
#[tokio::test(start_paused = true)]
async fn a_caller_alone_in_its_flight_gets_the_value_not_a_copy() {
    let clones = Arc::new(AtomicUsize::new(0));
    let origin = {
        let clones = Arc::clone(&clones);
        tower::service_fn(move |_: u32| {
            let clones = Arc::clone(&clones);
            async move {
                tokio::time::sleep(10 * MS).await;
                Ok::<_, BoxError>(Cloned(clones))
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(CoalesceLayer::new(|k: &u32| Some(*k)))
        .service(origin);
    service.clone().oneshot(1).await.unwrap();
    assert_eq!(clones.load(Ordering::SeqCst), 0, "alone: no copy");

    let (a, b, c) = tokio::join!(
        service.clone().oneshot(2),
        service.clone().oneshot(2),
        service.clone().oneshot(2)
    );
    let _ = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        clones.load(Ordering::SeqCst),
        3,
        "three waiters: a copy each"
    );
}

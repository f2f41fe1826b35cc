//! Waiters that must be woken, and callers that go away at any point while
//! other threads keep going.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dephase::breaker::Breaker;
use dephase::budget::TokenBucket;
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::Coalesce;
use dephase::http::{ReplayBody, ReplayableBody};
use dephase::pace::{PaceLayer, Pacer};
use dephase::retry::{RetryLayer, RetryPolicy};
use dephase::{BoxError, CircuitBreakerLayer, ExponentialBackoff, Jitter};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::support::{Counting, bounded};

/// A request body fed from a channel: pending until the test sends a chunk.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// Two copies of one replayed body waiting on the original at once are
/// both woken when it yields (fault 1: only the last poller's waker was
/// kept, so the other copy hung with its chunk already recorded).
#[tokio::test(start_paused = true)]
async fn two_copies_waiting_on_the_original_are_both_woken() {
    let (feed, chunks) = tokio::sync::mpsc::unbounded_channel();
    let original = ReplayBody::new(Fed(chunks), 1024);
    let mut copies = Vec::new();
    for _ in 0..3 {
        let mut copy = original.replay().expect("under the cap");
        copies.push(tokio::spawn(async move {
            let mut read = Vec::new();
            while let Some(frame) = copy.frame().await {
                read.extend_from_slice(&frame.unwrap().into_data().unwrap());
            }
            read
        }));
    }
    // Every copy polls the original and waits.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    feed.send(Bytes::from_static(b"hello, ")).unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    feed.send(Bytes::from_static(b"herd")).unwrap();
    drop(feed);
    for copy in copies {
        assert_eq!(bounded(copy).await.unwrap(), b"hello, herd");
    }
}

/// A copy that was dropped while it was the one polling the original does
/// not take the others' wake-up with it.
#[tokio::test(start_paused = true)]
async fn a_copy_dropped_while_waiting_does_not_strand_the_others() {
    let (feed, chunks) = tokio::sync::mpsc::unbounded_channel();
    let original = ReplayBody::new(Fed(chunks), 1024);
    let mut first = original.replay().unwrap();
    let waiting = tokio::spawn(async move { first.frame().await.map(|f| f.unwrap()) });
    tokio::task::yield_now().await;
    // The last poller registers its waker with the original, then goes away.
    let mut last = original.replay().unwrap();
    assert!(
        futures_util::poll!(Box::pin(last.frame())).is_pending(),
        "nothing sent yet"
    );
    drop(last);
    feed.send(Bytes::from_static(b"chunk")).unwrap();
    let frame = bounded(waiting).await.unwrap().expect("a frame");
    assert_eq!(frame.into_data().unwrap(), "chunk");
}

/// A future dropped after it has been polled `polls` times (a caller that
/// goes away at an arbitrary await point).
struct DropAfter<F> {
    future: Pin<Box<F>>,
    polls: u32,
}

impl<F: Future> Future for DropAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        self.future.as_mut().poll(cx).map(Some)
    }
}

/// xorshift64*: the tests' own seeded stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[derive(Debug, Clone)]
struct Req {
    id: u64,
    key: u64,
    yields: u64,
    fail: bool,
}

/// Random drop points on two worker threads, through retry (with a budget),
/// breaker, pace, coalesce and, beside them, the cache: every caller that
/// stays gets an answer within seconds, and nothing is left behind — no
/// flight, no load, no unbalanced withdrawal, no probe place, no turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_drop_points_on_threads_leave_nothing_behind() {
    let budget = Counting::new(TokenBucket::builder().capacity(100.0).build().unwrap());
    let attempts: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let log = attempts.clone();
    let breaker = Breaker::builder()
        .consecutive_failures(5)
        .open_time(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(2))
                .cap(Duration::from_millis(5))
                .seed(1)
                .build()
                .unwrap(),
        )
        .half_open_probes(2)
        .build()
        .unwrap();
    let pacer = Pacer::builder()
        .rate(20_000, Duration::from_secs(1))
        .burst(50)
        .max_wait(Duration::from_millis(50))
        .seed(2)
        .build()
        .unwrap();
    let origin = tower::service_fn(|r: Req| async move {
        for _ in 0..r.yields {
            tokio::task::yield_now().await;
        }
        if r.fail {
            Err::<u64, BoxError>("scripted failure".into())
        } else {
            Ok(r.id)
        }
    });
    let coalesce: Coalesce<_, _, u64, u64> = Coalesce::new(origin, |r: &Req| Some(r.key));
    let coalescer = coalesce.coalescer().clone();
    let store = MemoryStore::builder(64)
        .ttl(Duration::from_millis(2))
        .stale_while_revalidate(Duration::from_millis(2))
        .seed(3)
        .build()
        .unwrap();
    let cached = CacheLayer::new(store.clone(), |r: &Req| Some(r.key)).layer(coalesce);
    let below_retry = ServiceBuilder::new()
        .map_request(move |r: Req| {
            *log.lock().unwrap().entry(r.id).or_default() += 1;
            r
        })
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(PaceLayer::new(pacer.clone()))
        .service(cached);
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            ExponentialBackoff::builder()
                .base(Duration::from_micros(200))
                .cap(Duration::from_millis(2))
                .jitter(Jitter::Full)
                .seed(4)
                .build()
                .unwrap(),
        )
        .budget(budget.clone())
        .build()
        .unwrap();
    let service = RetryLayer::new(policy).layer(below_retry);

    let mut rng = Rng(0x5eed_cafe);
    let mut tasks = Vec::new();
    for id in 0..2_000 {
        let request = Req {
            id,
            key: rng.below(8),
            yields: rng.below(6),
            fail: rng.below(4) == 0,
        };
        let polls = if rng.below(3) == 0 {
            rng.below(8) as u32
        } else {
            u32::MAX
        };
        let call = DropAfter {
            future: Box::pin(service.clone().oneshot(request)),
            polls,
        };
        tasks.push(tokio::spawn(tokio::time::timeout(
            Duration::from_secs(10),
            call,
        )));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("hung: a caller was still waiting after 10 s");
    }
    // Background refreshes of the cache finish on their own.
    let settle = tokio::time::Instant::now();
    while (coalescer.in_flight() != 0 || store.loads_in_flight() != 0)
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(coalescer.in_flight(), 0, "a flight was left in the table");
    assert_eq!(store.loads_in_flight(), 0, "a load was left in the store");
    let resends: u64 = attempts.lock().unwrap().values().map(|n| n - 1).sum();
    assert_eq!(
        budget.spent(),
        resends,
        "every withdrawal spent or refunded"
    );
    // No probe place and no turn was lost: the breaker admits (after its
    // open time, if it is open) and the pacer releases a caller.
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(breaker.acquire().expect("the breaker admits again"));
    tokio::time::timeout(Duration::from_secs(10), pacer.wait())
        .await
        .expect("the pacer releases a caller")
        .expect("within its maximum wait");
}

//! Adaptive throttling (Google SRE book, "Handling Overload") under paused
//! time: convergence to `K × capacity` against an overloaded backend, a
//! trickle against a dead one, nothing shed against a healthy one, the
//! window forgetting, telemetry and bad settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dephase::throttle::error::Throttled;
use dephase::throttle::{ThrottleLayer, Throttler};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

mod support;

/// A backend that serves at most `capacity` requests per second and
/// refuses the rest; it counts what it received and served.
#[derive(Clone)]
struct Backend {
    capacity: u64,
    second: Arc<AtomicU64>,
    served_this_second: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    start: Instant,
}

impl Backend {
    fn new(capacity: u64) -> Self {
        Backend {
            capacity,
            second: Arc::default(),
            served_this_second: Arc::default(),
            received: Arc::default(),
            served: Arc::default(),
            start: Instant::now(),
        }
    }
}

impl Service<()> for Backend {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        self.received.fetch_add(1, Ordering::Relaxed);
        let second = (Instant::now() - self.start).as_secs();
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.served_this_second.store(0, Ordering::Relaxed);
        }
        if self.served_this_second.fetch_add(1, Ordering::Relaxed) < self.capacity {
            self.served.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(()))
        } else {
            std::future::ready(Err("overloaded"))
        }
    }
}

/// Offer `per_second` requests per second for `seconds`; return what the
/// backend received and served per second over the last `last` seconds.
async fn offer(
    throttler: &Throttler,
    backend: &Backend,
    per_second: u64,
    seconds: u64,
    last: u64,
) -> (f64, f64) {
    let mut service = ServiceBuilder::new()
        .layer(ThrottleLayer::new(throttler.clone()))
        .service(backend.clone());
    let gap = Duration::from_secs(1) / per_second as u32;
    let (mut received_before, mut served_before) = (0, 0);
    for second in 0..seconds {
        if second == seconds - last {
            received_before = backend.received.load(Ordering::Relaxed);
            served_before = backend.served.load(Ordering::Relaxed);
        }
        for _ in 0..per_second {
            let _ = service.ready().await.unwrap().call(()).await;
            tokio::time::sleep(gap).await;
        }
    }
    let received =
        (backend.received.load(Ordering::Relaxed) - received_before) as f64 / last as f64;
    let served = (backend.served.load(Ordering::Relaxed) - served_before) as f64 / last as f64;
    (received, served)
}

/// An overloaded backend (50/s of capacity, offered 500/s) ends up
/// receiving about K × 50/s: the client sheds the rest locally.
#[tokio::test(start_paused = true)]
async fn converges_to_k_times_what_the_backend_accepts() {
    for k in [2.0, 1.5] {
        let throttler = Throttler::builder().k(k).seed(3).build().unwrap();
        let backend = Backend::new(50);
        let (received, served) = offer(&throttler, &backend, 500, 200, 60).await;
        let expected = k * 50.0;
        assert!(
            (received - expected).abs() < 0.05 * expected,
            "K = {k}: the backend received {received}/s, expected about {expected}/s"
        );
        assert!(served > 47.5, "and still served its capacity: {served}/s");
        // The formula at the end: 1 − K · accepts / requests.
        let (requests, accepts) = throttler.counts();
        let formula = ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0);
        assert_eq!(throttler.probability(), formula);
        assert!(
            (formula - (1.0 - k * 50.0 / 500.0)).abs() < 0.02,
            "{formula}"
        );
    }
}

/// Against a backend that refuses everything, only a trickle gets through:
/// request `r` of the window passes with probability `1 / (r + 1)`, about
/// ln(n) of n requests.
#[tokio::test(start_paused = true)]
async fn a_dead_backend_gets_a_trickle() {
    let throttler = Throttler::builder().seed(5).build().unwrap();
    let backend = Backend::new(0);
    let mut service = ServiceBuilder::new()
        .layer(ThrottleLayer::new(throttler.clone()))
        .service(backend.clone());
    let mut throttled = 0;
    for _ in 0..10_000 {
        match service.ready().await.unwrap().call(()).await {
            Err(e) if e.is::<Throttled>() => throttled += 1,
            _ => {}
        }
    }
    let reached = backend.received.load(Ordering::Relaxed);
    assert_eq!(reached + throttled, 10_000);
    let harmonic: f64 = (1..=10_000).map(|r| 1.0 / r as f64).sum(); // 9.79
    assert!(
        (reached as f64) < 3.0 * harmonic && reached >= 1,
        "{reached} reached, expected about {harmonic:.1}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_healthy_backend_is_never_throttled() {
    let throttler = Throttler::builder().build().unwrap();
    let backend = Backend::new(u64::MAX);
    let (received, _) = offer(&throttler, &backend, 100, 30, 30).await;
    assert_eq!(received, 100.0);
    assert_eq!(throttler.probability(), 0.0);
}

/// Once the backend recovers, the old refusals age out of the window.
#[tokio::test(start_paused = true)]
async fn the_window_forgets() {
    let throttler = Throttler::builder()
        .window(Duration::from_secs(10))
        .buckets(10)
        .seed(1)
        .build()
        .unwrap();
    let dead = Backend::new(0);
    offer(&throttler, &dead, 100, 5, 5).await;
    assert!(throttler.probability() > 0.9);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(throttler.probability(), 0.0);
    assert_eq!(throttler.counts(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_recorded() {
    use tracing::Instrument;
    let (captured, _guard) = support::capture();
    let throttler = Throttler::builder().seed(2).build().unwrap();
    let mut service = ServiceBuilder::new()
        .layer(ThrottleLayer::new(throttler))
        .service(Backend::new(0));
    let mut shed = None;
    for i in 0..100 {
        let span = tracing::info_span!(
            "call",
            i,
            dephase.throttle.probability = tracing::field::Empty
        );
        if let Err(e) = service
            .ready()
            .await
            .unwrap()
            .call(())
            .instrument(span)
            .await
        {
            if let Some(t) = e.downcast_ref::<Throttled>() {
                shed = Some(t.probability());
            }
        }
    }
    let p = shed.expect("some calls were shed");
    assert!(p > 0.9);
    assert!(!captured.events_with("dephase::throttle", "shed").is_empty());
}

#[test]
fn bad_settings_name_their_field() {
    let b = Throttler::builder;
    let cases = [
        ("throttle.k", b().k(0.99).build().unwrap_err()),
        ("throttle.k", b().k(f64::NAN).build().unwrap_err()),
        ("throttle.k", b().k(f64::INFINITY).build().unwrap_err()),
        (
            "throttle.window",
            b().window(Duration::ZERO).build().unwrap_err(),
        ),
        ("throttle.buckets", b().buckets(0).build().unwrap_err()),
        (
            "throttle.buckets",
            b().window(Duration::from_millis(10))
                .buckets(100)
                .build()
                .unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
    }
}

#![cfg(feature = "http")]
//! Deadlines that travel: the `grpc-timeout` format (the gRPC over HTTP/2
//! protocol: `TimeoutValue` is at most 8 ASCII digits, `TimeoutUnit` one
//! of H M S m u n), the server layer (bounded handler, 504, clamped to its
//! maximum, bad headers ignored), the client layer (the remaining time
//! sent, an attempt that cannot start refused, one in flight cut short),
//! and retry and pace honouring the deadline in scope.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::deadline::{
    Deadline, DeadlineExceeded, PropagateDeadlineLayer, ServerDeadlineLayer, format_timeout,
    parse_timeout,
};
use dephase::pace::{PaceLayer, Pacer, Quota};
use dephase::retry::{RetryLayer, RetryPolicy};
use http::HeaderValue;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

mod support;

const MS: Duration = Duration::from_millis(1);

#[test]
fn the_header_parser_refuses_what_grpc_does_not_allow() {
    let bad: &[&[u8]] = &[
        b"",
        b"m",
        b"5",
        b"-5m",
        b"+5m",
        b" 5m",
        b"5m ",
        b"5 m",
        b"5.0S",
        b"5x",
        b"5s",
        b"0x5m",
        b"123456789m", // nine digits
        b"99999999999999999999n",
        b"\xef\xbc\x95m", // a full-width digit
        b"5mm",
    ];
    for value in bad {
        let header = HeaderValue::from_bytes(value).unwrap();
        assert_eq!(parse_timeout(&header), None, "{value:?}");
    }
    let good: &[(&str, Duration)] = &[
        ("0n", Duration::ZERO),
        ("1n", Duration::from_nanos(1)),
        ("5u", Duration::from_micros(5)),
        ("250m", Duration::from_millis(250)),
        ("00000007S", Duration::from_secs(7)),
        ("1M", Duration::from_secs(60)),
        ("2H", Duration::from_secs(7200)),
        ("99999999H", Duration::from_secs(99_999_999 * 3600)),
    ];
    for (value, expected) in good {
        assert_eq!(
            parse_timeout(&HeaderValue::from_static(value)),
            Some(*expected),
            "{value}"
        );
    }
}

#[test]
fn formatting_rounds_up_within_one_part_in_a_hundred_thousand() {
    for nanos in [
        0u64,
        1,
        999,
        1_000_001,
        99_999_999,
        100_000_000,
        1_234_567_891,
        3_600_000_000_001,
        u64::MAX,
    ] {
        let timeout = Duration::from_nanos(nanos);
        let header = format_timeout(timeout);
        assert!(header.len() <= 9, "{header:?}");
        let back = parse_timeout(&header).unwrap();
        assert!(back >= timeout, "{nanos}: {header:?} is less");
        assert!(
            back - timeout <= timeout / 100_000 + Duration::from_nanos(1),
            "{nanos}: {header:?}"
        );
    }
    assert_eq!(format_timeout(Duration::from_secs(u64::MAX)), "99999999H");
}

/// A handler that waits `work`, then says what deadline it saw.
fn handler(
    work: Duration,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |request: http::Request<()>| async move {
        let scope = Deadline::current().map(Deadline::remaining);
        let own = request
            .extensions()
            .get::<Deadline>()
            .map(|d| d.remaining());
        assert_eq!(scope, own, "the scope and the extension agree");
        tokio::time::sleep(work).await;
        Ok(http::Response::new(format!("{scope:?}")))
    })
}

fn get(header: Option<&'static [u8]>) -> http::Request<()> {
    let mut request = http::Request::get("/").body(()).unwrap();
    if let Some(value) = header {
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_bytes(value).unwrap());
    }
    request
}

#[tokio::test(start_paused = true)]
async fn the_server_bounds_the_handler_by_the_callers_time() {
    let layer = ServerDeadlineLayer::new()
        .max(Duration::from_secs(5))
        .unwrap();
    let server = layer.layer(handler(Duration::from_secs(1)));

    let start = Instant::now();
    let response = server.clone().oneshot(get(Some(b"300m"))).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    let response = server.clone().oneshot(get(Some(b"2S"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "Some(2s)");

    // No header: no deadline of its own.
    let response = server.clone().oneshot(get(None)).await.unwrap();
    assert_eq!(response.body(), "None");

    // A huge header is clamped to the server's maximum.
    let slow = ServerDeadlineLayer::new()
        .max(Duration::from_millis(500))
        .unwrap()
        .layer(handler(Duration::from_secs(1)));
    let start = Instant::now();
    let response = slow.oneshot(get(Some(b"99999999H"))).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(500),
        "never past the server's own maximum"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_header_is_ignored_with_a_debug_event() {
    let (captured, _guard) = support::capture();
    let server = ServerDeadlineLayer::new()
        .default_timeout(Duration::from_secs(3))
        .layer(handler(MS));
    for bad in [&b"-1S"[..], b"1.5S", b"123456789m", b"soon"] {
        let response = server.clone().oneshot(get(Some(bad))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), "Some(3s)", "{bad:?}: the default applies");
    }
    assert_eq!(
        captured
            .events_with("dephase::deadline", "header ignored")
            .len(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn a_nested_scope_cannot_extend_its_callers_deadline() {
    let outer = Deadline::after(Duration::from_secs(1));
    let server = ServerDeadlineLayer::new().layer(handler(MS));
    let response = outer
        .scope(server.oneshot(get(Some(b"10S"))))
        .await
        .unwrap();
    assert_eq!(response.body(), "Some(1s)");
}

/// Each request's arrival and the timeout it carried.
type Seen = Arc<Mutex<Vec<(Instant, Option<Duration>)>>>;

/// An origin that records each request's `grpc-timeout` and arrival.
#[derive(Clone, Default)]
struct Origin {
    seen: Seen,
    status: u16,
    work: Duration,
}

impl Service<http::Request<()>> for Origin {
    type Response = http::Response<()>;
    type Error = dephase::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(parse_timeout);
        self.seen.lock().unwrap().push((Instant::now(), timeout));
        let (status, work) = (self.status, self.work);
        Box::pin(async move {
            tokio::time::sleep(work).await;
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::from_u16(status)?;
            Ok(response)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_client_sends_the_time_left_and_refuses_what_cannot_start() {
    let origin = Origin {
        status: 200,
        work: 100 * MS,
        ..Origin::default()
    };
    let client = PropagateDeadlineLayer::new()
        .min_time(20 * MS)
        .layer(origin.clone());

    // No deadline: nothing sent.
    client.clone().oneshot(get(None)).await.unwrap();
    // A deadline in scope: its remaining time.
    let deadline = Deadline::after(Duration::from_millis(800));
    deadline
        .scope(client.clone().oneshot(get(None)))
        .await
        .unwrap();
    // A deadline in the request's extensions (the scope's if earlier).
    let mut request = get(None);
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(600)));
    client.clone().oneshot(request).await.unwrap();
    {
        let seen = origin.seen.lock().unwrap();
        assert_eq!(seen[0].1, None);
        assert_eq!(seen[1].1, Some(Duration::from_millis(800)));
        assert_eq!(seen[2].1, Some(Duration::from_millis(600)));
    }

    // 10 ms left, 20 needed: refused, not sent.
    let error = Deadline::after(10 * MS)
        .scope(client.clone().oneshot(get(None)))
        .await
        .unwrap_err();
    let exceeded = error
        .downcast_ref::<DeadlineExceeded>()
        .expect("DeadlineExceeded");
    assert!(!exceeded.was_sent());
    assert_eq!(origin.seen.lock().unwrap().len(), 3);

    // 50 ms left, the origin takes 100: cut short at the deadline.
    let start = Instant::now();
    let error = Deadline::after(50 * MS)
        .scope(client.clone().oneshot(get(None)))
        .await
        .unwrap_err();
    assert!(error.downcast_ref::<DeadlineExceeded>().unwrap().was_sent());
    assert_eq!(start.elapsed(), 50 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_retry_never_sleeps_past_the_callers_deadline() {
    // The origin always answers 503 in 10 ms; the retry would try 10 times
    // with 100 ms between attempts. The caller has 350 ms.
    let origin = Origin {
        status: 503,
        work: 10 * MS,
        ..Origin::default()
    };
    let retry = |min: Duration| {
        RetryLayer::new(
            RetryPolicy::builder()
                .max_attempts(10)
                .backoff(
                    ExponentialBackoff::builder()
                        .base(100 * MS)
                        .multiplier(1.0)
                        .jitter(Jitter::None)
                        .build()
                        .unwrap(),
                )
                .classify(dephase::http::HttpClassifier::new())
                .min_attempt_time(min)
                .build()
                .unwrap(),
        )
    };
    let client = ServiceBuilder::new()
        .layer(retry(Duration::ZERO))
        .layer(PropagateDeadlineLayer::new())
        .service(origin.clone());
    let start = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(350));
    let response = deadline.scope(client.oneshot(get(None))).await.unwrap();
    assert_eq!(response.status(), 503, "the last answer");
    let seen = origin.seen.lock().unwrap().clone();
    // Attempts at 0, 110, 220, 330 ms; the next would start at 440.
    assert_eq!(seen.len(), 4);
    for (at, sent) in &seen {
        assert!(
            *at < deadline.instant(),
            "an attempt started after the deadline"
        );
        assert_eq!(
            sent.unwrap(),
            deadline.instant() - *at,
            "each attempt carries the time left"
        );
    }
    assert!(start.elapsed() < Duration::from_millis(350));

    // Asking 30 ms per attempt drops the one that would start with 20 left.
    let origin = Origin {
        status: 503,
        work: 10 * MS,
        ..Origin::default()
    };
    let client = ServiceBuilder::new()
        .layer(retry(30 * MS))
        .layer(PropagateDeadlineLayer::new())
        .service(origin.clone());
    let deadline = Deadline::after(Duration::from_millis(350));
    deadline.scope(client.oneshot(get(None))).await.unwrap();
    assert_eq!(origin.seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_pacer_turns_away_a_caller_whose_turn_comes_after_its_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let pacer = Pacer::builder()
        .quota(Quota::per_second(std::num::NonZeroU32::new(1).unwrap()))
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut service =
        ServiceBuilder::new()
            .layer(PaceLayer::new(pacer))
            .service(tower::service_fn(move |_: ()| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, std::convert::Infallible>(()) }
            }));
    service.ready().await.unwrap().call(()).await.unwrap();
    // The next turn is a second away; this caller has half a second.
    let start = Instant::now();
    let error = Deadline::after(Duration::from_millis(500))
        .scope(async { service.ready().await.unwrap().call(()).await })
        .await
        .unwrap_err();
    assert!(
        error
            .downcast_ref::<dephase::pace::error::Overloaded>()
            .is_some(),
        "{error}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "turned away at once");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

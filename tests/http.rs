//! The HTTP adapters: classification, `Retry-After`, idempotency, replayed
//! bodies, keys and fanned-out responses — with mocks under paused time, and
//! against real loopback servers where the behaviour is the client's.
#![cfg(feature = "http")]
#![allow(clippy::type_complexity)]

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dephase::BoxError;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::classify::{Classify, Outcome};
use dephase::coalesce::CoalesceLayer;
use dephase::http::{
    Collected, FanoutLayer, HttpClassifier, IdempotentRequests, ReplayBody, ReplayLayer,
    ReplayableBody, RequestKey, classify_error, parse_retry_after,
};
use dephase::retry::{RetryLayer, RetryPolicy};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use support::bounded;

fn response(status: u16, retry_after: Option<&str>) -> Response<()> {
    let mut builder = Response::builder().status(status);
    if let Some(value) = retry_after {
        builder = builder.header("retry-after", value);
    }
    builder.body(()).unwrap()
}

fn classify(response: &Response<()>) -> Outcome {
    Classify::<_, BoxError>::classify(&HttpClassifier::new(), Ok(response))
}

#[test]
fn statuses_are_classified_as_the_table_says() {
    let table: &[(u16, bool, bool)] = &[
        // status, retryable, failure
        (200, false, false),
        (204, false, false),
        (304, false, false),
        (400, false, false),
        (401, false, false),
        (404, false, false),
        (408, true, true),
        (409, false, false),
        (429, true, true),
        (500, true, true),
        (501, false, true),
        (502, true, true),
        (503, true, true),
        (504, true, true),
        (505, false, true),
        (599, true, true),
    ];
    for &(status, retryable, failure) in table {
        let outcome = classify(&response(status, None));
        assert_eq!(outcome.is_retryable(), retryable, "{status}: {outcome:?}");
        assert_eq!(outcome.is_failure(), failure, "{status}: {outcome:?}");
    }
    let custom = HttpClassifier::new()
        .retry_on(StatusCode::CONFLICT)
        .never_retry(StatusCode::BAD_GATEWAY);
    let outcome = |s| Classify::<_, BoxError>::classify(&custom, Ok(&response(s, None)));
    assert!(outcome(409).is_retryable());
    assert!(!outcome(502).is_retryable());
    assert!(outcome(502).is_failure());
    assert!(outcome(503).is_retryable());
}

#[test]
fn retry_after_bad_input_is_ignored_or_clamped() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
    let value = |bytes: &[u8]| HeaderValue::from_bytes(bytes).unwrap();
    let secs = |s| Some(Duration::from_secs(s));
    let table: &[(&[u8], Option<Duration>)] = &[
        (b"", None),
        (b"   ", None),
        (b"0", secs(0)),
        (b"120", secs(120)),
        (b" 7\t", secs(7)),
        (b"-1", None),
        (b"+5", None),
        (b"1.5", None),
        (b"1e3", None),
        (b"0x10", None),
        (b"99999999999999999999999999", secs(u64::MAX)),
        (b"\x80\xff garbage", None),
        ("in 5 Minuten, München".as_bytes(), None),
        (b"soon", None),
        (b"Wed, 21 Oct 2015 07:28:00 GMT", secs(0)),
        (b"Wed, 21 Oct 2015 07:28:30 GMT", secs(30)),
        (b"Tue, 20 Oct 2015 07:28:00 GMT", secs(0)), // in the past
        (b"Wednesday, 21-Oct-15 07:29:00 GMT", secs(60)), // RFC 850
        (b"Wed Oct 21 07:30:00 2015", secs(120)),    // asctime
        (
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            secs(253_402_300_799 - 1_445_412_480),
        ),
        (b"Wed, 21 Oct 2015 07:28:00", None), // no zone
        (b"Wed, 32 Oct 2015 07:28:00 GMT", None),
    ];
    for (bytes, expected) in table {
        assert_eq!(
            parse_retry_after(&value(bytes), now),
            *expected,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn retry_after_becomes_the_hint_of_a_retryable_response() {
    assert_eq!(
        classify(&response(503, Some("3"))),
        Outcome::retry_after(Duration::from_secs(3), "unavailable")
    );
    assert_eq!(
        classify(&response(429, Some("garbage"))),
        Outcome::retry("too_many_requests")
    );
    // A Retry-After on a success is not a retry.
    assert_eq!(classify(&response(200, Some("3"))), Outcome::Success);
}

/// An origin answering a scripted status per call, with `Retry-After` if given.
fn scripted(
    script: Vec<(u16, Option<&'static str>)>,
) -> (
    impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone,
    Arc<std::sync::Mutex<Vec<Instant>>>,
) {
    let script = Arc::new(script);
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = sent.clone();
    let service = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let n = {
            let mut log = log.lock().unwrap();
            log.push(Instant::now());
            log.len() - 1
        };
        let (status, retry_after) = script.get(n).copied().unwrap_or((200, None));
        async move {
            let mut builder = Response::builder().status(status);
            if let Some(value) = retry_after {
                builder = builder.header("retry-after", value);
            }
            Ok::<_, BoxError>(builder.body(Full::new(Bytes::new()))?)
        }
    });
    (service, sent)
}

fn http_policy(cap: Duration) -> RetryPolicy<HttpClassifier, IdempotentRequests> {
    RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(100))
                .cap(cap)
                .jitter(Jitter::Full)
                .seed(7)
                .build()
                .unwrap(),
        )
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_clamped_to_the_cap_and_a_small_one_is_a_floor() {
    let (origin, sent) = scripted(vec![(503, Some("86400")), (429, Some("2"))]);
    let client = RetryLayer::new(http_policy(Duration::from_secs(5))).layer(origin);
    let request = Request::get("http://origin/")
        .body(Full::default())
        .unwrap();
    let response = bounded(client.oneshot(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[1] - sent[0],
        Duration::from_secs(5),
        "a day clamped to the cap"
    );
    let second = sent[2] - sent[1];
    assert!(
        second >= Duration::from_secs(2) && second <= Duration::from_secs(5),
        "{second:?}: the hint plus jitter, at most the cap"
    );
}

#[tokio::test(start_paused = true)]
async fn only_idempotent_requests_are_sent_again() {
    let cases = [
        (Request::get("http://o/"), true),
        (Request::put("http://o/"), true),
        (Request::delete("http://o/"), true),
        (Request::head("http://o/"), true),
        (Request::options("http://o/"), true),
        (Request::post("http://o/"), false),
        (Request::patch("http://o/"), false),
        (
            Request::post("http://o/").header("idempotency-key", "k1"),
            true,
        ),
    ];
    for (builder, retried) in cases {
        let (origin, sent) = scripted(vec![(503, None)]);
        let client = RetryLayer::new(http_policy(Duration::from_secs(1))).layer(origin);
        let request = builder.body(Full::new(Bytes::from("x"))).unwrap();
        let method = request.method().clone();
        let response = bounded(client.oneshot(request)).await.unwrap();
        let attempts = sent.lock().unwrap().len();
        assert_eq!(attempts, if retried { 2 } else { 1 }, "{method}");
        assert_eq!(response.status(), if retried { 200 } else { 503 });
    }
    // Opting in retries any method.
    let (origin, sent) = scripted(vec![(503, None)]);
    let policy = RetryPolicy::builder()
        .max_attempts(2)
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new().any_method())
        .build()
        .unwrap();
    let request = Request::post("http://o/").body(Full::default()).unwrap();
    let response = bounded(RetryLayer::new(policy).layer(origin).oneshot(request))
        .await
        .unwrap();
    assert_eq!(
        (response.status(), sent.lock().unwrap().len()),
        (StatusCode::OK, 2)
    );
}

type Chunks = Vec<Result<Frame<Bytes>, std::io::Error>>;
/// A streaming body of scripted frames.
type Stream = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
>;

fn stream_body(chunks: &[&'static str], fail_after: Option<usize>) -> Stream {
    let mut frames: Chunks = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    if let Some(at) = fail_after {
        frames.truncate(at);
        frames.push(Err(std::io::Error::other("the upload broke")));
    }
    StreamBody::new(futures_util::stream::iter(frames))
}

/// An origin that reads the whole request body, fails the first `failures`
/// attempts with 503 and then echoes the body; it records every body it read.
fn echo(
    failures: usize,
) -> (
    impl Service<
        Request<
            ReplayBody<
                StreamBody<
                    futures_util::stream::Iter<
                        std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>,
                    >,
                >,
            >,
        >,
        Response = Response<Bytes>,
        Error = BoxError,
        Future = impl Send,
    > + Clone,
    Arc<std::sync::Mutex<Vec<Result<Bytes, String>>>>,
) {
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = bodies.clone();
    let service = tower::service_fn(move |request: Request<ReplayBody<_>>| {
        let log = log.clone();
        async move {
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let n = {
                let mut log = log.lock().unwrap();
                log.push(body.as_ref().map(Bytes::clone).map_err(|e| e.to_string()));
                log.len()
            };
            let body = body?;
            let status = if n <= failures { 503 } else { 200 };
            Ok::<_, BoxError>(Response::builder().status(status).body(body)?)
        }
    });
    (service, bodies)
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_that_fails_the_first_attempt_is_replayed() {
    let (origin, bodies) = echo(2);
    let client = ServiceBuilder::new()
        .layer(ReplayLayer::new(1024))
        .layer(RetryLayer::new(http_policy(Duration::from_secs(1))))
        .service(origin);
    let request = Request::put("http://o/items/1")
        .body(stream_body(&["one ", "two ", "three"], None))
        .unwrap();
    let response = bounded(client.oneshot(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body(), Bytes::from("one two three"));
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies
            .iter()
            .all(|b| b.as_deref() == Ok(&b"one two three"[..]))
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_cap_is_sent_once_and_not_retried() {
    let (origin, bodies) = echo(1);
    let client = ServiceBuilder::new()
        .layer(ReplayLayer::new(5)) // "one two three" is 13 bytes
        .layer(RetryLayer::new(http_policy(Duration::from_secs(1))))
        .service(origin);
    let request = Request::put("http://o/items/1")
        .body(stream_body(&["one ", "two ", "three"], None))
        .unwrap();
    let response = bounded(client.oneshot(request)).await.unwrap();
    assert_eq!(response.status(), 503, "the caller gets the last result");
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_errors_mid_stream_is_not_retried() {
    let (origin, bodies) = echo(0);
    let client = ServiceBuilder::new()
        .layer(ReplayLayer::new(1024))
        .layer(RetryLayer::new(http_policy(Duration::from_secs(1))))
        .service(origin);
    let request = Request::put("http://o/items/1")
        .body(stream_body(&["one ", "two "], Some(1)))
        .unwrap();
    let error = bounded(client.oneshot(request)).await.unwrap_err();
    assert!(error.to_string().contains("the upload broke"), "{error}");
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn replay_copies_read_concurrently_see_the_same_bytes() {
    let original = ReplayBody::new(stream_body(&["a", "b", "c", "d"], None), 16);
    let copy = original.replay().unwrap();
    let mut original = Box::pin(original);
    let mut copy = Box::pin(copy);
    // Interleave: the original reads two chunks, the copy catches up and
    // reads on from the source, the original then gets those from the record.
    let mut got = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let f = original.frame().await.unwrap().unwrap();
        got.0.push(f.into_data().unwrap());
    }
    while let Some(frame) = copy.frame().await {
        got.1.push(frame.unwrap().into_data().unwrap());
    }
    while let Some(frame) = original.frame().await {
        got.0.push(frame.unwrap().into_data().unwrap());
    }
    assert_eq!(got.0.concat(), b"abcd");
    assert_eq!(got.1.concat(), b"abcd");
    assert!(original.can_replay());

    // Over the cap, a copy that fell behind fails instead of skipping bytes.
    let original = ReplayBody::new(stream_body(&["aaaa", "bbbb"], None), 6);
    let copy = original.replay().unwrap();
    let all = original.collect().await.unwrap().to_bytes();
    assert_eq!(all, Bytes::from("aaaabbbb"));
    let error = copy.collect().await.unwrap_err();
    assert!(error.is::<dephase::http::error::ReplayError>(), "{error}");

    // A body that failed cannot be replayed at all.
    let original = ReplayBody::new(stream_body(&["aaaa", "bbbb"], Some(1)), 64);
    let copy = original.replay().unwrap();
    assert!(original.collect().await.is_err());
    assert!(!copy.can_replay());
    assert!(copy.replay().is_none());
    assert!(
        copy.collect()
            .await
            .unwrap_err()
            .is::<dephase::http::error::ReplayError>()
    );
}

#[test]
fn cheap_bodies_are_cloned() {
    assert!(Full::new(Bytes::from("x")).replay().is_some());
    assert!(Empty::<Bytes>::new().replay().is_some());
    assert_eq!(String::from("x").replay(), Some(String::from("x")));
}

#[test]
fn request_keys() {
    let key = RequestKey::new()
        .header(http::header::ACCEPT_LANGUAGE)
        .into_fn();
    let get = |uri: &str, lang: Option<&str>| {
        let mut builder = Request::get(uri);
        if let Some(lang) = lang {
            builder = builder.header("accept-language", lang);
        }
        builder.body(Empty::<Bytes>::new()).unwrap()
    };
    assert_eq!(key(&get("http://o/a", None)), key(&get("http://o/a", None)));
    assert_ne!(key(&get("http://o/a", None)), key(&get("http://o/b", None)));
    assert_ne!(
        key(&get("http://o/a", Some("de"))),
        key(&get("http://o/a", Some("fr")))
    );
    assert_ne!(
        key(&get("http://o/a", None)),
        key(&get("http://o/a", Some("")))
    );
    assert_ne!(
        key(&get("http://o/a?x=1", None)),
        key(&get("http://o/a?x=2", None))
    );
    let post = Request::post("http://o/a")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(key(&post), None);
    let with_body = Request::get("http://o/a")
        .body(Full::new(Bytes::from("q")))
        .unwrap();
    assert_eq!(RequestKey::new().key(&with_body), None);
}

/// A slow origin answering `size` bytes per response, in chunks of 1 KiB,
/// optionally failing after the first chunk.
fn slow_origin(
    size: usize,
    fail_mid_body: bool,
) -> (
    impl Service<
        Request<Empty<Bytes>>,
        Response = Response<
            StreamBody<
                futures_util::stream::Iter<
                    std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>,
                >,
            >,
        >,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = tower::service_fn(move |_request: Request<Empty<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut frames: Chunks = (0..size.div_ceil(1024))
                .map(|i| {
                    Ok(Frame::data(Bytes::from(vec![
                        b'x';
                        (size - i * 1024).min(1024)
                    ])))
                })
                .collect();
            if fail_mid_body {
                frames.truncate(1);
                frames.push(Err(std::io::Error::other("the origin broke mid-body")));
            }
            Ok(Response::new(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
        }
    });
    (service, calls)
}

async fn herd<S>(service: S, callers: usize) -> Vec<Result<Bytes, String>>
where
    S: Service<Request<Empty<Bytes>>> + Clone + Send + 'static,
    S::Response: Into<
        Response<
            dephase::http::FanoutBody<
                StreamBody<
                    futures_util::stream::Iter<
                        std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>,
                    >,
                >,
            >,
        >,
    >,
    S::Error: std::fmt::Display,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let request = Request::get("http://origin/report")
                    .body(Empty::new())
                    .unwrap();
                let response: Response<_> = service
                    .oneshot(request)
                    .await
                    .map_err(|e| e.to_string())?
                    .into();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(body.to_bytes())
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// Coalescing keyed by method and URI, bodies shared up to `limit` bytes.
fn coalescing<B>(
    limit: usize,
) -> FanoutLayer<
    CoalesceLayer<
        impl Fn(&Request<Empty<Bytes>>) -> Option<dephase::http::HttpKey> + Clone,
        dephase::http::HttpKey,
        Collected<B>,
    >,
> {
    FanoutLayer::new(limit, CoalesceLayer::new(RequestKey::new().into_fn()))
}

#[tokio::test(start_paused = true)]
async fn coalesced_followers_get_a_copy_of_a_body_within_the_limit() {
    let (origin, calls) = slow_origin(3000, false);
    let service = coalescing(4096).layer(origin);
    let results = bounded(herd(service, 50)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().map(Bytes::len) == Ok(3000))
    );
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_each_follower_makes_its_own_call() {
    let (origin, calls) = slow_origin(10_000, false);
    let service = coalescing(4096).layer(origin);
    let results = bounded(herd(service, 20)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        20,
        "one shared call + 19 own calls"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().map(Bytes::len) == Ok(10_000)),
        "every caller gets the whole body"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_errors_mid_stream_fails_every_caller_and_frees_the_key() {
    let (origin, calls) = slow_origin(3000, true);
    let service = coalescing(4096).layer(origin);
    let results = bounded(herd(service.clone(), 10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.contains("mid-body"))),
        "{results:?}"
    );
    // The key is free again: the next caller makes a new call.
    let _ = bounded(herd(service, 1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_cache_stores_complete_responses_only() {
    for (size, stored) in [(1000, true), (10_000, false)] {
        let (origin, calls) = slow_origin(size, false);
        let store = MemoryStore::builder(100)
            .ttl(Duration::from_secs(60))
            .store_if(Collected::is_cacheable)
            .build()
            .unwrap();
        let service = ServiceBuilder::new()
            .layer(FanoutLayer::new(
                4096,
                CacheLayer::new(store.clone(), RequestKey::new().into_fn()),
            ))
            .service(origin);
        let first = bounded(herd(service.clone(), 5)).await;
        let second = bounded(herd(service, 5)).await;
        assert!(
            first
                .iter()
                .chain(&second)
                .all(|r| r.as_ref().map(Bytes::len) == Ok(size))
        );
        assert_eq!(store.len(), u64::from(stored), "{size} bytes");
        let expected = if stored { 1 } else { 10 };
        assert_eq!(calls.load(Ordering::SeqCst), expected, "{size} bytes");
    }
}

#[test]
fn connection_errors_are_retryable_and_others_are_not() {
    use std::io::{Error, ErrorKind};
    for kind in [
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionReset,
        ErrorKind::ConnectionAborted,
        ErrorKind::BrokenPipe,
        ErrorKind::UnexpectedEof,
        ErrorKind::TimedOut,
    ] {
        let error: BoxError = Box::new(Error::from(kind));
        assert!(classify_error(&*error).is_retryable(), "{kind:?}");
        // Wrapped in another error, the chain is walked.
        let wrapped: BoxError = Box::new(Wrapped(error));
        assert!(classify_error(&*wrapped).is_retryable(), "wrapped {kind:?}");
    }
    let other: BoxError = Box::new(Error::from(ErrorKind::InvalidData));
    assert_eq!(classify_error(&*other), Outcome::failure("error"));
}

/// An error with a cause, as client errors wrap their `io::Error`.
#[derive(Debug)]
struct Wrapped(BoxError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Callers of a fanned-out call that go away do not take the call with them
/// while one caller is left; when the last goes, the call is dropped and
/// the key is free again.
#[tokio::test(start_paused = true)]
async fn fanned_out_callers_that_go_away_leave_nothing_behind() {
    struct DropFlag(Arc<AtomicUsize>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (calls, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counter, drops) = (calls.clone(), dropped.clone());
    let origin = tower::service_fn(move |_request: Request<Empty<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let flag = DropFlag(drops.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(flag);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("report"))))
        }
    });
    let service = coalescing(1024).layer(origin);
    let get = || {
        Request::get("http://origin/report")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // Ten callers; nine go away after 10 ms; the last still gets the body.
    let mut callers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let last = callers.pop().unwrap();
    callers.iter().for_each(|c| c.abort());
    let response = bounded(last).await.unwrap().unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "report"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Everyone goes away: the call is dropped, and the next caller calls anew.
    let callers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    callers.iter().for_each(|c| c.abort());
    for caller in callers {
        assert!(caller.await.unwrap_err().is_cancelled());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "both calls' futures are gone"
    );
    let response = bounded(service.oneshot(get())).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "report"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A retried request dropped while its replayed body is half read leaves the
/// record usable by nobody else and panics nowhere.
#[tokio::test(start_paused = true)]
async fn a_request_dropped_mid_retry_with_a_replay_body_is_released() {
    let (origin, bodies) = echo(5);
    let client = ServiceBuilder::new()
        .layer(ReplayLayer::new(1024))
        .layer(RetryLayer::new(http_policy(Duration::from_secs(1))))
        .service(origin);
    let request = Request::put("http://o/items/1")
        .body(stream_body(&["one ", "two "], None))
        .unwrap();
    let call = tokio::spawn(client.oneshot(request));
    tokio::time::sleep(Duration::from_millis(150)).await; // during a backoff
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let sent = bodies.lock().unwrap().len();
    assert!((1..=3).contains(&sent), "{sent}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        bodies.lock().unwrap().len(),
        sent,
        "nothing is sent after the caller left"
    );
}

#[test]
fn request_keys_print_as_their_parts_and_different_keys_print_differently() {
    use http::header::{ACCEPT, AUTHORIZATION};
    let key = RequestKey::new().header(ACCEPT).header(AUTHORIZATION);
    let get = |accept: Option<&[u8]>, auth: &[u8]| {
        let mut request = Request::get("http://origin/users/7?x=1");
        if let Some(accept) = accept {
            request = request.header(ACCEPT, HeaderValue::from_bytes(accept).unwrap());
        }
        let request = request
            .header(AUTHORIZATION, HeaderValue::from_bytes(auth).unwrap())
            .body(Empty::<Bytes>::new())
            .unwrap();
        key.key(&request).unwrap().to_string()
    };
    assert_eq!(
        get(Some(b"text/html"), b"Bearer a|b%"),
        "GET http://origin/users/7?x=1 |=text/html |=Bearer a%7Cb%25"
    );
    assert_eq!(get(None, b""), "GET http://origin/users/7?x=1 |- |=");
    assert_eq!(
        get(Some(b""), b"\xff"),
        "GET http://origin/users/7?x=1 |= |=%FF"
    );
    // What the escaping is for: values that would otherwise print alike.
    assert_ne!(get(Some(b"a |=b"), b""), get(Some(b"a"), b"b"));
    assert_ne!(get(Some(b"%FF"), b""), get(Some(b"\xff"), b""));
}

/// Another dephase layer's rejection is a failure that is not retried,
/// whatever layer made it and however it is wrapped (a coalesced call's
/// shared error).
#[tokio::test(start_paused = true)]
async fn dephase_rejections_are_not_retried() {
    let classify = |error: BoxError| {
        Classify::<Response<()>, BoxError>::classify(&HttpClassifier::new(), Err(&error))
    };
    let pacer = dephase::Pacer::builder()
        .rate(1, Duration::from_secs(10))
        .max_wait(Duration::ZERO)
        .build()
        .unwrap();
    pacer.wait().await.unwrap();
    let overloaded = pacer.wait().await.unwrap_err();
    assert_eq!(
        classify(Box::new(overloaded)),
        Outcome::failure("pace_overloaded")
    );

    let breaker = dephase::Breaker::builder().build().unwrap();
    breaker.isolate();
    let service = ServiceBuilder::new()
        .layer(CoalesceLayer::new(|k: &u8| Some(*k)))
        .layer(dephase::CircuitBreakerLayer::new(breaker))
        .service(tower::service_fn(
            |k: u8| async move { Ok::<_, BoxError>(k) },
        ));
    let shared = service.oneshot(1).await.unwrap_err();
    assert_eq!(classify(shared), Outcome::failure("breaker_open"));
}

/// A collected response keeps no slice of the buffer its header values
/// were parsed from (hyper parses them as slices of the connection's read
/// buffer): a cached response would otherwise pin that whole buffer.
#[tokio::test(start_paused = true)]
async fn a_collected_response_does_not_pin_the_buffer_its_headers_came_from() {
    // One 64 KiB "read buffer"; the header values are slices of it.
    let buffer = Bytes::from(vec![b'a'; 64 * 1024]);
    let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
    let origin = {
        let buffer = buffer.clone();
        tower::service_fn(move |_: Request<Empty<Bytes>>| {
            let buffer = buffer.clone();
            async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"body")));
                let value =
                    |at: usize| HeaderValue::from_maybe_shared(buffer.slice(at..at + 8)).unwrap();
                response.headers_mut().insert("x-one", value(100));
                response.headers_mut().append("x-two", value(200));
                response.headers_mut().append("x-two", value(300));
                let mut secret = value(400);
                secret.set_sensitive(true);
                response.headers_mut().insert("authorization", secret);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut collect = dephase::http::Collect::new(origin, 1024);
    let collected: Collected<Full<Bytes>> = collect
        .ready()
        .await
        .unwrap()
        .call(Request::new(Empty::new()))
        .await
        .unwrap();
    let response = collected.as_complete().expect("complete");
    let headers = response.headers();
    assert_eq!(headers.len(), 4);
    for value in headers.values() {
        assert_eq!(value.as_bytes(), b"aaaaaaaa");
        assert!(
            !range.contains(&(value.as_bytes().as_ptr() as usize)),
            "a header value still points into the read buffer"
        );
    }
    assert_eq!(headers.get_all("x-two").iter().count(), 2);
    assert!(headers["authorization"].is_sensitive());
    assert!(!headers["x-one"].is_sensitive());
}

//! Pacing under paused time: a burst released in slices at the quota, the
//! overload error past the maximum wait, first come first served, bursts,
//! turns given back by callers that go away, jitter bounds, telemetry and
//! bad settings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dephase::measure::{Recorder, Spread};
use dephase::pace::error::Overloaded;
use dephase::pace::{PaceLayer, Pacer, Quota};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

mod support;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// A service that records when each call reached it.
fn recording(
    recorder: Recorder,
) -> impl Service<u32, Response = u32, Error = dephase::BoxError, Future: Send> + Clone + Send {
    tower::service_fn(move |i: u32| {
        recorder.mark();
        async move { Ok(i) }
    })
}

/// Sends `n` callers through `pacer` at once; returns when each was released.
async fn release_times(pacer: Pacer, n: u32) -> Vec<Duration> {
    let recorder = Recorder::new();
    let service = ServiceBuilder::new()
        .layer(PaceLayer::new(pacer))
        .service(recording(recorder.clone()));
    let callers: Vec<_> = (0..n)
        .map(|i| tokio::spawn(service.clone().oneshot(i)))
        .collect();
    for c in callers {
        support::bounded(c).await.unwrap().unwrap();
    }
    recorder.times()
}

/// 1000 callers at t = 0 with a quota of 100 per second are released over
/// about ten seconds, evenly.
#[tokio::test(start_paused = true)]
async fn a_burst_is_released_in_slices() {
    let pacer = Pacer::builder()
        .rate(100, S)
        .max_wait(60 * S)
        .seed(1)
        .build()
        .unwrap();
    let times = release_times(pacer, 1000).await;
    assert_eq!(times.len(), 1000);
    let last = *times.last().unwrap();
    assert!(
        last >= 9990 * MS && last <= 10_010 * MS,
        "released over {last:?}"
    );
    let spread = Spread::by_width(&times, 100 * MS).unwrap();
    assert!(spread.peak_to_mean() <= 1.3, "{:?}", spread.buckets());
    assert!(
        spread.peak() <= 12,
        "at most a slice per 100 ms: {:?}",
        spread.buckets()
    );
}

/// Callers whose turn is past the maximum wait are told at once.
#[tokio::test(start_paused = true)]
async fn callers_past_the_maximum_wait_are_overloaded_at_once() {
    let pacer = Pacer::builder()
        .rate(100, S)
        .max_wait(5 * S)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let recorder = Recorder::new();
    let service = ServiceBuilder::new()
        .layer(PaceLayer::new(pacer))
        .service(recording(recorder.clone()));
    let start = Instant::now();
    let mut overloaded = Vec::new();
    let callers: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(service.clone().oneshot(i)))
        .collect();
    for c in callers {
        if let Err(e) = c.await.unwrap() {
            let o = e.downcast_ref::<Overloaded>().expect("an overload error");
            assert!(o.wait() > 5 * S && o.max_wait() == 5 * S);
            overloaded.push(o.clone());
        }
    }
    assert_eq!(recorder.times().len(), 501, "turns at 0, 10 ms, ..., 5 s");
    assert_eq!(overloaded.len(), 499, "the rest never called the service");
    assert!(Instant::now() - start <= 5 * S + MS);
}

#[tokio::test(start_paused = true)]
async fn first_come_first_served() {
    let pacer = Pacer::builder()
        .rate(10, S)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let service = ServiceBuilder::new()
        .layer(PaceLayer::new(pacer))
        .service(tower::service_fn(move |i: u32| {
            seen.lock().unwrap().push((i, Instant::now()));
            async move { Ok::<_, dephase::BoxError>(i) }
        }));
    let start = Instant::now();
    let mut callers = Vec::new();
    for i in 0..20 {
        callers.push(tokio::spawn(service.clone().oneshot(i)));
        tokio::task::yield_now().await;
    }
    for c in callers {
        c.await.unwrap().unwrap();
    }
    let order = order.lock().unwrap();
    for (n, (i, at)) in order.iter().enumerate() {
        assert_eq!(*i as usize, n, "released in arrival order");
        assert_eq!(*at - start, 100 * MS * n as u32, "one every 100 ms");
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_allowance_goes_at_once() {
    let pacer = Pacer::builder()
        .rate(10, S)
        .burst(5)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let ms = Duration::from_millis;
    let times = release_times(pacer, 8).await;
    assert_eq!(
        times,
        [ms(0), ms(0), ms(0), ms(0), ms(0), ms(100), ms(200), ms(300)]
    );
    // A governor quota works the same way.
    let q = Quota::per_second(std::num::NonZeroU32::new(10).unwrap());
    let pacer = Pacer::builder().quota(q).build().unwrap();
    assert_eq!(
        pacer.quota().burst_size().get(),
        10,
        "a quota keeps its own burst"
    );
}

/// A caller that goes away before its turn gives the turn back; the next
/// caller takes it.
#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_gives_its_turn_back() {
    let pacer = Pacer::builder()
        .rate(10, S)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let recorder = Recorder::new();
    let service = ServiceBuilder::new()
        .layer(PaceLayer::new(pacer.clone()))
        .service(recording(recorder.clone()));
    let first = tokio::spawn(service.clone().oneshot(0)); // t = 0
    let second = tokio::spawn(service.clone().oneshot(1)); // 100 ms
    let third = tokio::spawn(service.clone().oneshot(2)); // 200 ms
    tokio::task::yield_now().await;
    second.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    assert_eq!(
        pacer.returned_turns(),
        1,
        "not the last reservation: kept for the next caller"
    );
    let fourth = tokio::spawn(service.clone().oneshot(3));
    for c in [first, third, fourth] {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        recorder.times(),
        [Duration::ZERO, 100 * MS, 200 * MS],
        "the fourth caller took the freed 100 ms turn"
    );
    assert_eq!(pacer.returned_turns(), 0);

    // The latest reservation is simply undone.
    tokio::time::advance(S).await;
    let start = Instant::now();
    let waiting = tokio::spawn(service.clone().oneshot(4)); // now
    let last = tokio::spawn(service.clone().oneshot(5)); // +100 ms
    tokio::task::yield_now().await;
    last.abort();
    let _ = last.await;
    waiting.await.unwrap().unwrap();
    assert_eq!(pacer.returned_turns(), 0);
    assert_eq!(
        pacer.next_release(),
        100 * MS - (Instant::now() - start),
        "the schedule is back where it was"
    );
}

/// The jitter is added only to callers that had to wait, and stays within bounds.
#[tokio::test(start_paused = true)]
async fn jitter_is_bounded_and_only_for_callers_that_wait() {
    let pacer = Pacer::builder()
        .rate(10, S)
        .jitter(50 * MS)
        .seed(9)
        .build()
        .unwrap();
    let times = release_times(pacer, 50).await;
    assert_eq!(
        times[0],
        Duration::ZERO,
        "the first caller did not wait: no jitter"
    );
    let mut slots: Vec<Duration> = (1..50u32).map(|k| 100 * MS * k).collect();
    slots.sort();
    for (t, slot) in times[1..].iter().zip(&slots) {
        assert!(
            *t >= *slot - 50 * MS && *t <= *slot + 50 * MS + MS,
            "{t:?} near {slot:?}"
        );
    }
    assert!(
        times.windows(2).any(|w| (w[1] - w[0]) != 100 * MS),
        "jittered"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_outside_a_service() {
    let pacer = Pacer::builder()
        .rate(2, S)
        .jitter(Duration::ZERO)
        .max_wait(S)
        .build()
        .unwrap();
    assert_eq!(pacer.wait().await.unwrap(), Duration::ZERO);
    let start = Instant::now();
    assert_eq!(pacer.wait().await.unwrap(), 500 * MS);
    assert_eq!(Instant::now() - start, 500 * MS);
    // Reserve three more turns at once: 500 ms, 1 s, then 1.5 s is past the maximum.
    let (a, b) = tokio::join!(pacer.wait(), pacer.wait());
    assert_eq!((a.unwrap(), b.unwrap()), (500 * MS, S));
    let p = pacer.clone();
    let first = tokio::spawn(async move { p.wait().await });
    tokio::task::yield_now().await;
    let err = pacer.wait().await;
    first.await.unwrap().unwrap();
    assert!(err.is_err() || err.unwrap() <= S);
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_recorded() {
    use tracing::Instrument;
    use tracing::field::Empty;
    let (captured, _guard) = support::capture();
    let pacer = Pacer::builder()
        .rate(10, S)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(PaceLayer::new(pacer))
        .service(recording(Recorder::new()));
    service.ready().await.unwrap().call(0).await.unwrap();
    let span = tracing::info_span!(
        "second",
        dephase.offset_ms = Empty,
        dephase.offset.strategy = Empty
    );
    service
        .ready()
        .await
        .unwrap()
        .call(1)
        .instrument(span)
        .await
        .unwrap();
    let fields = captured.span("second");
    assert_eq!(fields["dephase.offset_ms"].as_f64(), 100.0);
    assert_eq!(fields["dephase.offset.strategy"].as_str(), "pace");
    assert_eq!(captured.events_with("dephase::pace", "paced").len(), 1);
}

#[test]
fn bad_settings_name_their_field() {
    let cases = [
        ("pace.rate", Pacer::builder().build().unwrap_err()),
        (
            "pace.rate",
            Pacer::builder().rate(0, S).build().unwrap_err(),
        ),
        (
            "pace.period",
            Pacer::builder()
                .rate(10, Duration::ZERO)
                .build()
                .unwrap_err(),
        ),
        (
            "pace.period",
            Pacer::builder()
                .rate(u32::MAX, Duration::from_nanos(10))
                .build()
                .unwrap_err(),
        ),
        (
            "pace.burst",
            Pacer::builder().rate(10, S).burst(0).build().unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
    }
}

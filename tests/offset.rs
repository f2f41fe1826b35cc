//! Offsets: pinned offsets (they must never change), index and splay
//! arithmetic, the spread of hashed offsets, and the staggered ticker under
//! paused time (exact due times, no drift, missed-tick policies, telemetry).

use std::time::Duration;

use dephase::measure::Spread;
use dephase::offset::{MissedTicks, Offset, Strategy, Ticker};
use tokio::time::Instant;

mod support;

/// These offsets are a promise: a fleet that upgrades must keep its spread.
/// If this test fails, the change breaks every deployed schedule.
#[test]
fn pinned_offsets_never_change() {
    let minute = Duration::from_secs(60);
    let pinned: [(&str, u64); 4] = [
        ("host-1", PIN_HOST_1),
        ("host-2", PIN_HOST_2),
        ("backup@db-17", PIN_BACKUP),
        ("", PIN_EMPTY),
    ];
    for (key, nanos) in pinned {
        let offset = Offset::hash(key, minute).unwrap();
        assert_eq!(
            offset.duration(),
            Duration::from_nanos(nanos),
            "key {key:?}"
        );
        assert_eq!(offset.strategy(), Strategy::Hash);
    }
    // A key of your own moves everything, deterministically.
    let own = Offset::hash_with_key(&[7; 16], "host-1", minute).unwrap();
    assert_eq!(own.duration(), Duration::from_nanos(PIN_OWN_KEY));
}

// Computed by this crate and, independently, by a 25-line Python SipHash-2-4.
const PIN_HOST_1: u64 = 22_288_306_609;
const PIN_HOST_2: u64 = 9_574_674_098;
const PIN_BACKUP: u64 = 28_814_639_567;
const PIN_EMPTY: u64 = 30_836_338_502;
const PIN_OWN_KEY: u64 = 5_237_173_171;

#[test]
fn index_offsets_are_evenly_spaced() {
    let window = Duration::from_secs(10);
    let offsets: Vec<Duration> = (0..8)
        .map(|i| Offset::index(i, 8, window).unwrap().duration())
        .collect();
    let expected: Vec<Duration> = (0..8).map(|i| Duration::from_millis(1250 * i)).collect();
    assert_eq!(offsets, expected);
    // Rounded down to the nanosecond, never past the window.
    let third = Offset::index(2, 3, Duration::from_nanos(10)).unwrap();
    assert_eq!(third.duration(), Duration::from_nanos(6));
    assert_eq!(
        Offset::index(u64::MAX - 1, u64::MAX, window)
            .unwrap()
            .duration(),
        window - Duration::from_nanos(1)
    );
    assert_eq!(
        Offset::index(0, 1, window).unwrap().strategy(),
        Strategy::Index
    );
}

#[test]
fn splay_is_fixed_per_process_and_per_seed() {
    let window = Duration::from_secs(30);
    let a = Offset::splay(window).unwrap();
    assert_eq!(a, Offset::splay(window).unwrap());
    assert!(a.duration() < window);
    assert_eq!(a.strategy(), Strategy::Random);
    assert_eq!(
        Offset::splay_seeded(5, window).unwrap(),
        Offset::splay_seeded(5, window).unwrap()
    );
    assert_ne!(
        Offset::splay_seeded(5, window).unwrap(),
        Offset::splay_seeded(6, window).unwrap()
    );
    // Seeds spread evenly over the window.
    let times: Vec<Duration> = (0..10_000)
        .map(|s| Offset::splay_seeded(s, window).unwrap().duration())
        .collect();
    let spread = Spread::in_window(&times, Duration::ZERO..window, 10).unwrap();
    assert!(spread.peak_to_mean() < 1.1, "{spread:?}");
}

#[test]
fn bad_input_is_an_error_naming_the_field() {
    let w = Duration::from_secs(1);
    assert_eq!(
        Offset::hash("k", Duration::ZERO).unwrap_err().field(),
        "offset.window"
    );
    assert_eq!(Offset::index(0, 0, w).unwrap_err().field(), "offset.count");
    assert_eq!(Offset::index(3, 3, w).unwrap_err().field(), "offset.index");
    assert_eq!(
        Offset::splay(Duration::ZERO).unwrap_err().field(),
        "offset.window"
    );
    // Huge windows are fine.
    assert!(Offset::hash("k", Duration::MAX).is_ok());
    assert!(Offset::splay_seeded(1, Duration::MAX).unwrap().duration() < Duration::MAX);
    assert!(
        Offset::index(u64::MAX - 1, u64::MAX, Duration::MAX)
            .unwrap()
            .duration()
            < Duration::MAX
    );
}

proptest::proptest! {
    #![proptest_config(support::proptest_config(10_000))]

    /// Every strategy lands inside the window, for any window and input.
    #[test]
    fn every_offset_is_inside_its_window(
        secs in proptest::prelude::any::<u64>(),
        nanos in 0u32..1_000_000_000,
        seed in proptest::prelude::any::<u64>(),
        count in 1u64..=u64::MAX,
        key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
    ) {
        let window = Duration::new(secs, nanos);
        proptest::prop_assume!(!window.is_zero());
        let index = seed % count;
        proptest::prop_assert!(Offset::hash(&key, window).unwrap().duration() < window);
        proptest::prop_assert!(Offset::splay_seeded(seed, window).unwrap().duration() < window);
        let by_index = Offset::index(index, count, window).unwrap().duration();
        proptest::prop_assert!(by_index < window);
        // i · window / count, rounded down, computed independently for windows that fit.
        if let Some(product) = u128::from(index).checked_mul(window.as_nanos()) {
            proptest::prop_assert_eq!(by_index.as_nanos(), product / u128::from(count));
        }
    }
}

/// 200 hosts that run a job "every minute" spread over the minute when each
/// adds the hash of its name; index offsets spread them perfectly.
#[test]
fn hashed_offsets_spread_a_fleet() {
    let minute = Duration::from_secs(60);
    let hashed: Vec<Duration> = (0..200)
        .map(|i| {
            Offset::hash(format!("host-{i}.example"), minute)
                .unwrap()
                .duration()
        })
        .collect();
    let spread = Spread::in_window(&hashed, Duration::ZERO..minute, 10).unwrap();
    assert!(spread.peak_to_mean() <= 1.6, "hash: {:?}", spread.buckets());
    let indexed: Vec<Duration> = (0..200)
        .map(|i| Offset::index(i, 200, minute).unwrap().duration())
        .collect();
    let spread = Spread::in_window(&indexed, Duration::ZERO..minute, 10).unwrap();
    assert_eq!(spread.peak_to_mean(), 1.0);
}

#[tokio::test(start_paused = true)]
async fn ticker_fires_at_each_boundary_plus_offset_without_drift() {
    let period = Duration::from_secs(60);
    let offset = Offset::index(3, 4, period).unwrap(); // 45 s
    let start = Instant::now();
    let mut ticker = Ticker::starting_at(start, period, offset).unwrap();
    for k in 0..1000u32 {
        let tick = ticker.tick().await;
        let due = start + period * k + Duration::from_secs(45);
        assert_eq!(tick.scheduled(), due);
        assert_eq!(Instant::now(), due, "tick {k} fired late");
        assert_eq!(tick.missed(), 0);
        // The job takes a while; the schedule does not move.
        tokio::time::sleep(Duration::from_millis(1234)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn ticker_anchored_in_the_past_starts_at_the_next_due_time() {
    let period = Duration::from_secs(10);
    let offset = Offset::index(1, 2, period).unwrap(); // 5 s
    let start = Instant::now();
    tokio::time::advance(Duration::from_secs(27)).await;
    let mut ticker = Ticker::starting_at(start, period, offset).unwrap();
    assert_eq!(ticker.next_tick(), start + Duration::from_secs(35));
    assert_eq!(
        ticker.tick().await.scheduled(),
        start + Duration::from_secs(35)
    );
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_skipped_by_default() {
    let period = Duration::from_secs(10);
    let offset = Offset::index(1, 10, period).unwrap(); // 1 s
    let start = Instant::now();
    let mut ticker = Ticker::starting_at(start, period, offset).unwrap();
    assert_eq!(
        ticker.tick().await.scheduled(),
        start + Duration::from_secs(1)
    );
    // The job runs 35 s: the ticks at 11, 21 and 31 s are missed.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let tick = ticker.tick().await;
    assert_eq!(tick.scheduled(), start + Duration::from_secs(31));
    assert_eq!(tick.missed(), 2);
    assert_eq!(
        Instant::now(),
        start + Duration::from_secs(36),
        "the late tick fires at once"
    );
    // Then back on schedule, offset kept.
    assert_eq!(
        ticker.tick().await.scheduled(),
        start + Duration::from_secs(41)
    );
    assert_eq!(Instant::now(), start + Duration::from_secs(41));
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_can_burst() {
    let period = Duration::from_secs(10);
    let offset = Offset::index(1, 10, period).unwrap();
    let start = Instant::now();
    let mut ticker = Ticker::starting_at(start, period, offset)
        .unwrap()
        .missed_ticks(MissedTicks::Burst);
    ticker.tick().await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let now = Instant::now();
    for due in [11, 21, 31] {
        let tick = ticker.tick().await;
        assert_eq!(tick.scheduled(), start + Duration::from_secs(due));
        assert_eq!(Instant::now(), now, "catch-up ticks fire back to back");
    }
    assert_eq!(
        ticker.tick().await.scheduled(),
        start + Duration::from_secs(41)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_tick_future_loses_nothing() {
    let period = Duration::from_secs(10);
    let offset = Offset::index(0, 1, period).unwrap();
    let start = Instant::now();
    let mut ticker = Ticker::starting_at(start, period, offset).unwrap();
    ticker.tick().await; // t = 0
    let timed_out = tokio::time::timeout(Duration::from_secs(4), ticker.tick()).await;
    assert!(timed_out.is_err());
    assert_eq!(ticker.tick().await.scheduled(), start + period);
}

#[tokio::test(start_paused = true)]
async fn ticker_rejects_bad_settings() {
    let period = Duration::from_secs(10);
    let at = Instant::now();
    let too_long = Offset::index(0, 1, period).unwrap();
    let inside = Offset::index(1, 2, Duration::from_secs(30)).unwrap(); // 15 s
    assert_eq!(
        Ticker::starting_at(at, Duration::ZERO, too_long)
            .unwrap_err()
            .field(),
        "ticker.period"
    );
    assert_eq!(
        Ticker::starting_at(at, period, inside).unwrap_err().field(),
        "ticker.offset"
    );
    assert_eq!(
        Ticker::starting_at(
            at,
            dephase::offset::MAX_PERIOD + Duration::from_secs(1),
            too_long
        )
        .unwrap_err()
        .field(),
        "ticker.period"
    );
    assert!(
        Ticker::new(
            Duration::from_secs(3600),
            Offset::hash("job", Duration::from_secs(3600)).unwrap()
        )
        .is_ok()
    );
}

/// 200 cron jobs on one period boundary: without offsets they all fire in
/// the same instant; with hash or index offsets they spread over the period.
#[tokio::test(start_paused = true)]
async fn two_hundred_staggered_jobs_spread_over_the_period() {
    let period = Duration::from_secs(60);
    let start = Instant::now();
    let recorder = dephase::measure::Recorder::starting_at(start);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let offset = Offset::hash(format!("job-{i}"), period).unwrap();
        let mut ticker = Ticker::starting_at(start + period, period, offset).unwrap();
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            ticker.tick().await;
            recorder.mark();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let spread = Spread::in_window(&recorder.times(), period..period * 2, 10).unwrap();
    assert_eq!(spread.count(), 200);
    assert!(spread.peak_to_mean() <= 1.6, "{:?}", spread.buckets());
}

#[tokio::test(start_paused = true)]
async fn offsets_are_recorded_on_the_span_and_as_events() {
    use tracing::Instrument;
    let (captured, _guard) = support::capture();
    let offset = Offset::hash("report", Duration::from_secs(60)).unwrap();
    let span = tracing::info_span!(
        "job",
        dephase.offset_ms = tracing::field::Empty,
        dephase.offset.strategy = tracing::field::Empty
    );
    async {
        let mut ticker =
            Ticker::starting_at(Instant::now(), Duration::from_secs(60), offset).unwrap();
        ticker.tick().await;
    }
    .instrument(span)
    .await;
    let fields = captured.span("job");
    let millis = offset.duration().as_secs_f64() * 1000.0;
    assert_eq!(fields["dephase.offset_ms"].as_f64(), millis);
    assert_eq!(fields["dephase.offset.strategy"].as_str(), "hash");
    let events = captured.events_with("dephase::offset", "offset applied");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["dephase.offset_ms"].as_f64(), millis);
}

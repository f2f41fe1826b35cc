//! measure: the statistics on known inputs, edge cases, and bad input.

use std::time::Duration;

use dephase::measure::{Recorder, Spread, max_concurrency, std_dev};

const MS: Duration = Duration::from_millis(1);

#[test]
fn by_width_counts_per_bucket_from_the_first_event() {
    let times = [10 * MS, 12 * MS, 19 * MS, 20 * MS, 45 * MS];
    let s = Spread::by_width(&times, 10 * MS).unwrap();
    assert_eq!(s.start(), 10 * MS);
    assert_eq!(s.buckets(), [3, 1, 0, 1]);
    assert_eq!(s.peak(), 3);
    assert_eq!(s.mean(), 5.0 / 4.0);
    assert_eq!(s.peak_to_mean(), 3.0 / 1.25);
    assert_eq!(s.count(), 5);
}

#[test]
fn by_count_splits_first_to_last() {
    let times: Vec<Duration> = (0..=100).map(|i| i * MS).collect();
    let s = Spread::by_count(&times, 4).unwrap();
    assert_eq!(
        s.buckets(),
        [25, 25, 25, 26],
        "the last event is in the last bucket"
    );
    // Everything at one instant: one full bucket out of n.
    let herd = [5 * MS; 40];
    let s = Spread::by_count(&herd, 20).unwrap();
    assert_eq!(s.peak(), 40);
    assert_eq!(s.peak_to_mean(), 20.0);
}

#[test]
fn in_window_counts_what_falls_outside() {
    let times = [Duration::ZERO, 5 * MS, 10 * MS, 15 * MS, 20 * MS, 25 * MS];
    let s = Spread::in_window(&times, 5 * MS..20 * MS, 3).unwrap();
    assert_eq!(s.buckets(), [1, 1, 1]);
    assert_eq!(
        s.outside(),
        3,
        "before the start, at the (exclusive) end, after it"
    );
    assert_eq!(s.peak_to_mean(), 1.0);
}

#[test]
fn standard_deviation() {
    assert_eq!(std_dev(&[]), Duration::ZERO);
    assert_eq!(std_dev(&[7 * MS]), Duration::ZERO);
    // 2, 4, 4, 4, 5, 5, 7, 9 has a population standard deviation of exactly 2.
    let times: Vec<Duration> = [2, 4, 4, 4, 5, 5, 7, 9]
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect();
    let sd = std_dev(&times).as_secs_f64();
    assert!((sd - 2.0).abs() < 1e-9, "{sd}");
    assert_eq!(
        Spread::by_width(&times, Duration::from_secs(1))
            .unwrap()
            .std_dev(),
        std_dev(&times)
    );
}

#[test]
fn concurrency_of_intervals() {
    assert_eq!(max_concurrency(&[]), 0);
    let calls = [
        (Duration::ZERO, 10 * MS),
        (5 * MS, 15 * MS),
        (6 * MS, 7 * MS),
        (10 * MS, 20 * MS),
        (30 * MS, 20 * MS),
    ];
    assert_eq!(
        max_concurrency(&calls),
        3,
        "half-open: the one ending at 10 does not meet the one starting at 10; inverted ones ignored"
    );
    let herd: Vec<(Duration, Duration)> = (0..500).map(|_| (MS, 2 * MS)).collect();
    assert_eq!(max_concurrency(&herd), 500);
}

#[test]
fn empty_input_and_bad_settings() {
    let none: [Duration; 0] = [];
    let s = Spread::by_width(&none, MS).unwrap();
    assert_eq!(
        (s.count(), s.peak(), s.peak_to_mean(), s.buckets().len()),
        (0, 0, 0.0, 0)
    );
    assert_eq!(Spread::by_count(&none, 5).unwrap().peak_to_mean(), 0.0);
    assert_eq!(
        Spread::by_width(&[MS], Duration::ZERO).unwrap_err().field(),
        "measure.width"
    );
    assert_eq!(
        Spread::by_width(
            &[Duration::ZERO, Duration::from_secs(1_000_000)],
            Duration::from_nanos(1)
        )
        .unwrap_err()
        .field(),
        "measure.width"
    );
    assert_eq!(
        Spread::by_count(&[MS], 0).unwrap_err().field(),
        "measure.buckets"
    );
    assert_eq!(
        Spread::in_window(&[MS], MS..MS, 3).unwrap_err().field(),
        "measure.window"
    );
    assert_eq!(
        Spread::in_window(&[MS], 2 * MS..MS, 3).unwrap_err().field(),
        "measure.window"
    );
}

#[tokio::test(start_paused = true)]
async fn the_recorder_collects_from_many_tasks() {
    let recorder = Recorder::new();
    let tasks: Vec<_> = (0..10u64)
        .map(|i| {
            let r = recorder.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                r.mark();
                r.mark_interval(start);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let times = recorder.times();
    assert_eq!(
        times,
        (0..10)
            .map(|i| Duration::from_millis(10 * i))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        max_concurrency(&recorder.intervals()),
        9,
        "the zero-length one at t=0 overlaps none"
    );
}

//! Backoff: the bounds of every jitter kind, independence of sequences,
//! reproducibility with a seed, and builder validation.

use std::collections::HashSet;
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use proptest::prelude::*;

mod support;

fn backoff(jitter: Jitter, seed: u64) -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .base(Duration::from_millis(100))
        .cap(Duration::from_secs(10))
        .jitter(jitter)
        .seed(seed)
        .build()
        .unwrap()
}

/// The exponential delay `min(cap, base · multiplier^n)` in nanoseconds, as the
/// sequence computes it (multiplying step by step).
/// `base · multiplierⁿ`, capped: computed from the base each time, so that
/// truncation does not add up over the retries.
fn exponential(base: u64, cap: u64, multiplier: f64, n: usize) -> u64 {
    ((base as f64 * multiplier.powi(n as i32)) as u64).min(cap)
}

#[test]
fn no_jitter_is_exactly_exponential_and_capped() {
    let delays: Vec<_> = backoff(Jitter::None, 0).sequence().take(10).collect();
    let ms = Duration::from_millis;
    assert_eq!(
        delays,
        [
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(3200),
            ms(6400),
            ms(10_000),
            ms(10_000),
            ms(10_000)
        ]
    );
}

#[test]
fn a_multiplier_of_one_is_a_constant_delay() {
    let b = ExponentialBackoff::builder()
        .base(Duration::from_millis(250))
        .multiplier(1.0)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert!(
        b.sequence()
            .take(20)
            .all(|d| d == Duration::from_millis(250))
    );
}

proptest! {
    #![proptest_config(support::proptest_config(10_000))]

    /// Every jitter kind stays inside its documented range, and never above the cap.
    #[test]
    fn every_delay_is_inside_its_jitter_bounds(
        base_ms in 1u64..5_000,
        cap_factor in 1u64..200,
        multiplier in 1.0f64..8.0,
        kind in 0usize..4,
        seed in any::<u64>(),
    ) {
        let base = base_ms * 1_000_000;
        let cap = base * cap_factor;
        let jitter = Jitter::ALL[kind];
        let b = ExponentialBackoff::builder()
            .base(Duration::from_nanos(base))
            .cap(Duration::from_nanos(cap))
            .multiplier(multiplier)
            .jitter(jitter)
            .seed(seed)
            .build()
            .unwrap();
        let mut previous = base;
        for (n, delay) in b.sequence().take(40).enumerate() {
            let delay = delay.as_nanos() as u64;
            let d = exponential(base, cap, multiplier, n);
            prop_assert!(delay <= cap, "delay {delay} above cap {cap}");
            match jitter {
                Jitter::None => prop_assert_eq!(delay, d),
                Jitter::Full => prop_assert!(delay <= d),
                Jitter::Equal => prop_assert!(delay >= d / 2 && delay <= d),
                Jitter::Decorrelated => {
                    prop_assert!(delay >= base);
                    prop_assert!(delay <= (previous * 3).min(cap));
                }
            }
            previous = delay;
        }
    }
}

#[test]
fn a_thousand_sequences_started_together_do_not_share_delays() {
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        for b in [
            backoff(jitter, 1),
            ExponentialBackoff::builder()
                .jitter(jitter)
                .build()
                .unwrap(),
        ] {
            let firsts: Vec<Vec<Duration>> =
                (0..1000).map(|_| b.sequence().take(4).collect()).collect();
            let distinct: HashSet<_> = firsts.iter().collect();
            assert_eq!(
                distinct.len(),
                1000,
                "{jitter}: some sequences repeat each other"
            );
            let first_delays: HashSet<_> = firsts.iter().map(|s| s[0]).collect();
            assert!(
                first_delays.len() > 990,
                "{jitter}: first delays collide: {}",
                first_delays.len()
            );
        }
    }
}

#[test]
fn clones_keep_drawing_independent_sequences() {
    let b = backoff(Jitter::Full, 3);
    let c = b.clone();
    let from_b: Vec<_> = b.sequence().take(5).collect();
    let from_c: Vec<_> = c.sequence().take(5).collect();
    assert_ne!(from_b, from_c);
}

#[test]
fn a_seed_reproduces_a_run() {
    let run = |seed| -> Vec<Vec<Duration>> {
        let b = backoff(Jitter::Decorrelated, seed);
        (0..50).map(|_| b.sequence().take(6).collect()).collect()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn full_jitter_spreads_a_thousand_first_retries_evenly() {
    let b = backoff(Jitter::Full, 11);
    let firsts: Vec<Duration> = (0..1000).map(|_| b.sequence().next_delay()).collect();
    let spread = dephase::measure::Spread::in_window(
        &firsts,
        Duration::ZERO..Duration::from_millis(100) + Duration::from_nanos(1),
        20,
    )
    .unwrap();
    assert_eq!(spread.outside(), 0);
    assert!(
        spread.peak_to_mean() <= 1.5,
        "peak-to-mean {}",
        spread.peak_to_mean()
    );
}

#[test]
fn invalid_settings_name_their_field() {
    let ms = Duration::from_millis;
    let cases: Vec<(&str, dephase::ConfigError)> = vec![
        (
            "backoff.base",
            ExponentialBackoff::builder()
                .base(Duration::ZERO)
                .build()
                .unwrap_err(),
        ),
        (
            "backoff.cap",
            ExponentialBackoff::builder()
                .base(ms(10))
                .cap(ms(9))
                .build()
                .unwrap_err(),
        ),
        (
            "backoff.cap",
            ExponentialBackoff::builder()
                .cap(Duration::MAX)
                .build()
                .unwrap_err(),
        ),
        (
            "backoff.multiplier",
            ExponentialBackoff::builder()
                .multiplier(0.99)
                .build()
                .unwrap_err(),
        ),
        (
            "backoff.multiplier",
            ExponentialBackoff::builder()
                .multiplier(-2.0)
                .build()
                .unwrap_err(),
        ),
        (
            "backoff.multiplier",
            ExponentialBackoff::builder()
                .multiplier(f64::NAN)
                .build()
                .unwrap_err(),
        ),
        (
            "backoff.multiplier",
            ExponentialBackoff::builder()
                .multiplier(f64::INFINITY)
                .build()
                .unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn extreme_but_valid_settings_do_not_panic() {
    let b = ExponentialBackoff::builder()
        .base(Duration::from_nanos(1))
        .cap(dephase::backoff::MAX_CAP)
        .multiplier(f64::MAX)
        .jitter(Jitter::Decorrelated)
        .build()
        .unwrap();
    for jitter in Jitter::ALL {
        let b = ExponentialBackoff::builder()
            .base(Duration::from_nanos(1))
            .cap(dephase::backoff::MAX_CAP)
            .multiplier(f64::MAX)
            .jitter(jitter)
            .build()
            .unwrap();
        assert!(
            b.sequence()
                .take(100)
                .all(|d| d <= dephase::backoff::MAX_CAP)
        );
    }
    assert!(
        b.sequence()
            .take(1000)
            .all(|d| d <= dephase::backoff::MAX_CAP)
    );
}

#[test]
fn jitter_names_are_the_telemetry_values() {
    let names: Vec<_> = Jitter::ALL.iter().map(Jitter::as_str).collect();
    assert_eq!(names, ["none", "full", "equal", "decorrelated"]);
    assert_eq!(Jitter::default(), Jitter::Full);
}

/// Evenly spread first delays (the default) against independent ones:
/// 1000 sequences, 20 buckets, over many seeds.
#[test]
fn first_delays_are_evenly_spread_unless_asked_not_to() {
    let worst = |even: bool| {
        (0..50u64)
            .map(|seed| {
                let b = ExponentialBackoff::builder()
                    .jitter(Jitter::Full)
                    .evenly_spread(even)
                    .seed(seed)
                    .build()
                    .unwrap();
                let firsts: Vec<Duration> = (0..1000).map(|_| b.sequence().next_delay()).collect();
                dephase::measure::Spread::in_window(
                    &firsts,
                    Duration::ZERO..Duration::from_millis(100) + Duration::from_nanos(1),
                    20,
                )
                .unwrap()
                .peak_to_mean()
            })
            .fold(0.0, f64::max)
    };
    let (even, independent) = (worst(true), worst(false));
    assert!(even <= 1.05, "evenly spread: worst peak-to-mean {even}");
    assert!(
        independent > 1.2,
        "independent draws spread only as chance does: {independent}"
    );
    assert!(
        !ExponentialBackoff::builder()
            .evenly_spread(false)
            .build()
            .unwrap()
            .is_evenly_spread()
    );
}

//! The decorrelation figure: 1000 retry sequences started at the same
//! instant (one per failed request), and how their first retries spread:
//! peak-to-mean of the first-retry times in 20 equal buckets between the
//! earliest and the latest (1.0 is flat; 20 means all in one bucket).
//! Every jitter kind of dephase (first delays evenly spread, the default,
//! and independent), 1000 separate backoffs (as 1000 processes would have),
//! and tower 0.5's `ExponentialBackoff`, whose maker hands every backoff a
//! clone of one generator.
//!
//! ```text
//! cargo bench --bench decorrelation
//! ```
//!
//! Not a timing: the figure is computed, printed and written to
//! `target/decorrelation.json`. It runs on tokio's paused clock (tower's
//! backoff returns a `Sleep`, whose deadline gives the delay).

use std::io::Write;
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::measure::Spread;
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;

mod support;

const SEQUENCES: usize = 1000;
const BUCKETS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let base = Duration::from_millis(100);
    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();

    for even in [true, false] {
        for jitter in Jitter::ALL {
            if jitter == Jitter::None && !even {
                continue;
            }
            let backoff = ExponentialBackoff::builder()
                .base(base)
                .cap(Duration::from_secs(10))
                .jitter(jitter)
                .evenly_spread(even)
                .build()
                .expect("valid");
            let firsts = (0..SEQUENCES)
                .map(|_| backoff.sequence().next_delay())
                .collect();
            let how = if even { "" } else { ", independent draws" };
            rows.push((format!("dephase {jitter}{how}"), firsts));
        }
    }
    // 1000 processes, each with one failed request: every process has its
    // own random start (here, its own seed), so only chance spreads them.
    let firsts = (0..SEQUENCES as u64)
        .map(|process| {
            let own = ExponentialBackoff::builder()
                .base(base)
                .jitter(Jitter::Full)
                .seed(process)
                .build()
                .expect("valid");
            own.sequence().next_delay()
        })
        .collect();
    rows.push(("dephase full, 1000 processes".to_string(), firsts));

    // tower: min 100 ms, jitter 1.0 (up to +100%), as a client would configure it.
    let firsts = runtime.block_on(async {
        let mut maker =
            ExponentialBackoffMaker::new(base, Duration::from_secs(10), 1.0, HasherRng::default())
                .expect("valid");
        (0..SEQUENCES)
            .map(|_| {
                let sleep = maker.make_backoff().next_backoff();
                sleep.deadline() - tokio::time::Instant::now()
            })
            .collect()
    });
    rows.push(("tower ExponentialBackoff (jitter 1.0)".to_string(), firsts));

    let path = support::target_dir().join("decorrelation.json");
    let mut out = std::fs::File::create(&path).expect("create the output file");
    println!("{SEQUENCES} sequences started at once: their first retry times in {BUCKETS} buckets");
    println!(
        "{:<44} {:>13} {:>9} {:>14}",
        "backoff", "peak-to-mean", "distinct", "range"
    );
    for (name, firsts) in rows {
        let spread = Spread::by_count(&firsts, BUCKETS).expect("valid buckets");
        let mut distinct = firsts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let (lo, hi) = (
            firsts.iter().min().expect("some"),
            firsts.iter().max().expect("some"),
        );
        println!(
            "{name:<44} {:>13.2} {:>9} {:>6.0}-{:<6.0}ms",
            spread.peak_to_mean(),
            distinct.len(),
            lo.as_secs_f64() * 1000.0,
            hi.as_secs_f64() * 1000.0
        );
        writeln!(
            out,
            "{}",
            serde_json::json!({"backoff": name, "sequences": SEQUENCES, "buckets": BUCKETS, "peak_to_mean": spread.peak_to_mean(), "distinct_first_delays": distinct.len()})
        )
        .expect("write");
    }
    println!("wrote {}", path.display());
}

//! A hot key under Poisson traffic, expiring again and again: how many
//! recomputes each expiry causes, and how many requests wait for one, with
//! a plain TTL cache, with coalescing only, and with XFetch + coalescing.
//! Then fifty hot keys written at the same instant, with and without TTL
//! jitter.
//!
//! ```text
//! cargo run --release --example cache_stampede
//! cargo run --release --example cache_stampede -- --rate 1000 --recompute-ms 50 --ttl-ms 2000 --seconds 60 --seed 1
//! ```
//!
//! Runs on tokio's paused clock: the simulated minute takes a few seconds.
//! Writes `target/cache_stampede.json`. "Per expiry" is per TTL period
//! (duration / TTL); a duplicate is a recompute that started while another
//! was running.

mod model;

use std::io::Write;
use std::time::Duration;

use dephase::cache::TtlJitter;
use dephase::measure::Spread;
use model::{Scenario, Strategy};

fn arg(name: &str, default: f64) -> Result<f64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: cache_stampede [--rate R] [--recompute-ms D] [--ttl-ms T] [--seconds S] [--seed N]"
        );
        return Ok(());
    }
    let scenario = Scenario {
        rate: arg("--rate", 1000.0)?,
        recompute: Duration::from_secs_f64(arg("--recompute-ms", 50.0)? / 1000.0),
        ttl: Duration::from_secs_f64(arg("--ttl-ms", 2000.0)? / 1000.0),
        duration: Duration::from_secs_f64(arg("--seconds", 60.0)?),
        seed: arg("--seed", 1.0)? as u64,
    };
    if scenario.rate.is_nan()
        || scenario.rate <= 0.0
        || scenario.ttl.is_zero()
        || scenario.duration.is_zero()
    {
        return Err("--rate, --ttl-ms and --seconds must be positive".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;

    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join("cache_stampede.json");
    let mut json = std::fs::File::create(&path)?;

    println!(
        "one hot key: Poisson arrivals at {}/s, recompute {:?}, TTL {:?}, {:?} simulated (λΔ = {:.0})",
        scenario.rate,
        scenario.recompute,
        scenario.ttl,
        scenario.duration,
        scenario.rate * scenario.recompute.as_secs_f64()
    );
    println!(
        "{:<22} {:>9} {:>11} {:>11} {:>22} {:>26}",
        "",
        "requests",
        "recomputes",
        "duplicates",
        "recomputes per expiry",
        "waiting requests per expiry"
    );
    for strategy in Strategy::ALL {
        let report = runtime.block_on(model::run(scenario, strategy));
        println!(
            "{:<22} {:>9} {:>11} {:>11} {:>22.2} {:>26.1}",
            strategy.name(),
            report.requests,
            report.recomputes,
            report.duplicates,
            report.recomputes_per_expiry(),
            report.waited_per_expiry()
        );
        writeln!(
            json,
            "{}",
            serde_json::json!({
                "scenario": "one_hot_key",
                "strategy": strategy.name(),
                "requests": report.requests,
                "recomputes": report.recomputes,
                "duplicate_recomputes": report.duplicates,
                "recomputes_per_expiry": report.recomputes_per_expiry(),
                "waiting_per_expiry": report.waited_per_expiry(),
            })
        )?;
    }

    let ttl = Duration::from_secs(2);
    println!(
        "\nfifty hot keys written at the same instant (TTL {ttl:?}): when they are recomputed, in five 102 ms buckets"
    );
    for (name, jitter) in [
        ("no TTL jitter", TtlJitter::None),
        (
            "random jitter up to 500 ms",
            TtlJitter::Random(Duration::from_millis(500)),
        ),
        (
            "per-key jitter up to 500 ms",
            TtlJitter::PerKey(Duration::from_millis(500)),
        ),
    ] {
        let times = runtime.block_on(model::hot_keys(50, ttl, jitter, scenario.seed));
        // The jitter plus one 10 ms read step, in five buckets.
        let spread = Spread::in_window(&times, ttl..ttl + Duration::from_millis(510), 5)?;
        println!(
            "{name:<30} peak {:>3} per bucket, peak-to-mean {:.2}  {:?}",
            spread.peak(),
            spread.peak_to_mean(),
            spread.buckets()
        );
        writeln!(
            json,
            "{}",
            serde_json::json!({"scenario": "fifty_keys", "jitter": name, "peak_per_100ms": spread.peak(), "peak_to_mean": spread.peak_to_mean()})
        )?;
    }
    println!("wrote {}", path.display());
    Ok(())
}

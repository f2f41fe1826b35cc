//! The herd lab: a real HTTP origin on loopback and herds of clients that
//! act in lockstep — each scenario run twice, naive and with dephase.
//!
//! ```text
//! cargo run --release --example herd
//! cargo run --release --example herd -- --scenario retry_storm --clients 1000 --seed 7 --quiet
//! ```
//!
//! The origin is an axum server on `127.0.0.1:0` (its own thread and
//! runtime): `/work` serves `CAPACITY` requests at once (25 ms each) and
//! answers `503` + `Retry-After: 1` to the rest; `/report` recomputes a
//! report in 50 ms. Clients are hyper-util clients over loopback.
//!
//! - `retry_storm`: 500 clients at once, the origin down for a second;
//!   fixed-interval retries against full jitter + a shared budget + a
//!   deadline + a circuit breaker;
//! - `cache_stampede`: a hot key read 2000 times a second, cached for 2 s;
//!   a plain TTL cache against dephase's cache (coalesced, XFetch, TTL jitter);
//! - `cron_herd`: 200 jobs at the same period boundary; no offset against
//!   hash offsets (and index offsets);
//! - `warmup`: 300 instances starting together; all at once against a pacer.
//! - `tail`: a steady 500 requests a second (8 s) against an origin where one
//!   request in twenty takes 500 ms (the rest 5 ms): no hedging, tower's
//!   `Hedge` (no budget) and dephase's `Hedge` (a 5% budget);
//! - `tail_overload`: the same clients when the origin turns slow for
//!   every request (200 ms) faster than the latency estimates adapt:
//!   tower's hedges double the load, dephase's budget holds them;
//! - `deadline_chain`: three axum services in a chain, each retrying; the
//!   edge client gives up after 1 s; origin work started after that, with
//!   and without the deadline travelling (`grpc-timeout`);
//! - `capacity_drop`: the origin's capacity drops from 64 to 16 for three
//!   seconds; clients at 3× the low capacity through a fixed concurrency
//!   limit, Gradient2 and Vegas.
//!
//! For each it prints origin calls, amplification, the peak of origin
//! requests in any 10 ms, peak-to-mean, success rate and latency; writes
//! `target/herd/report.json` and `target/herd/<scenario>.svg` (origin
//! requests per 10 ms over time, naive and dephase on the same axes).

mod capacity;
mod chain;
mod origin;
mod report;
mod scenarios;
mod tail;

use std::io::IsTerminal;

use dephase::BoxError;

use scenarios::{NAMES, Settings};

struct Args {
    scenarios: Vec<String>,
    settings: Settings,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        scenarios: Vec::new(),
        settings: Settings {
            clients: 500,
            seed: 1,
            budget_per_sec: 300,
        },
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    let value = |flag: &str, it: &mut std::iter::Skip<std::env::Args>| {
        it.next().ok_or(format!("{flag} needs a value"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--scenario" => {
                let name = value("--scenario", &mut it)?;
                if !NAMES.contains(&name.as_str()) {
                    return Err(format!("--scenario: no {name:?}; one of {NAMES:?}"));
                }
                args.scenarios.push(name);
            }
            "--clients" => {
                args.settings.clients = value("--clients", &mut it)?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?;
            }
            "--seed" => {
                args.settings.seed = value("--seed", &mut it)?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            "--budget-per-sec" => {
                args.settings.budget_per_sec = value("--budget-per-sec", &mut it)?
                    .parse()
                    .map_err(|e| format!("--budget-per-sec: {e}"))?;
            }
            "--quiet" => args.quiet = true,
            "-h" | "--help" => {
                println!(
                    "usage: herd [--scenario NAME]... [--clients N] [--seed S] [--budget-per-sec N] [--quiet]\nscenarios: {}",
                    NAMES.join(", ")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if args.settings.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.scenarios.is_empty() {
        args.scenarios = NAMES.iter().map(|s| s.to_string()).collect();
    }
    Ok(args)
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("herd");
    std::fs::create_dir_all(&dir)?;

    let progress = if !args.quiet && std::io::stdout().is_terminal() {
        indicatif::ProgressBar::new(args.scenarios.len() as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}",
            )?,
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.enable_steady_tick(std::time::Duration::from_millis(100));

    let started = std::time::Instant::now();
    let mut entries = Vec::new();
    progress.suspend(|| {
        println!(
            "\"{}\": how many times better dephase did than naive (fewer origin calls, lower peaks, lower latency, more successes): above 1 is better, below 1 worse.",
            report::GAIN
        );
    });
    for name in &args.scenarios {
        progress.set_message(format!("{name} (naive, then dephase)"));
        let scenario = runtime.block_on(scenarios::run(name, args.settings))?;
        progress.inc(1);
        progress.suspend(|| report::table(&scenario))?;
        let svg = dir.join(format!("{name}.svg"));
        report::svg(&scenario, &svg)?;
        entries.push(report::json(
            &scenario,
            args.settings.clients,
            args.settings.seed,
        )?);
        if !args.quiet {
            progress.suspend(|| println!("wrote {}", svg.display()));
        }
    }
    progress.finish_and_clear();

    let path = dir.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({ "scenarios": entries }))?,
    )?;
    println!(
        "\nwrote {} ({} scenarios in {:.1} s)",
        path.display(),
        entries.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

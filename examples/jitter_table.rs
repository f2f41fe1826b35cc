//! Marc Brooker's backoff experiment ("Exponential Backoff And Jitter", AWS
//! Architecture Blog, 2015), re-run with dephase's `ExponentialBackoff`.
//!
//! N clients each read one row's version from a single server and try one
//! conditional write (optimistic concurrency). A client whose write loses
//! re-reads after a backoff. Every network hop takes |N(10 ms, 2 ms)|. For
//! each strategy it prints the mean number of write calls and the mean time
//! until the last client has written, over `--runs` runs, and writes JSON
//! lines to `target/jitter_table.json`.
//!
//! Mapping the original onto `ExponentialBackoff`: the original's k-th retry
//! (k ≥ 1) waits `min(cap, base · 2^k)`; ours waits `min(cap, base' · 2^n)`
//! with n = k − 1, so `base' = 2 · base` (10 ms for the original's 5 ms) for
//! exponential, equal and full jitter. The original's decorrelated jitter is
//! `sleep = min(cap, U(base, 3 · sleep))` starting from `sleep = base`, which
//! is exactly `Jitter::Decorrelated` with `base' = base`. "None" is no
//! backoff at all (an immediate re-read).
//!
//! The original draws every delay independently; so do the first five
//! strategies here (`evenly_spread(false)`). The `+even` rows are dephase's
//! default, where the clients' first delays are evenly spread.
//!
//! ```text
//! cargo run --release --example jitter_table -- --clients 10 50 100 150 190 --runs 100 --seed 1
//! ```

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Write;
use std::time::Duration;

use dephase::backoff::{ExponentialBackoff, Jitter, Sequence};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// The original's strategies, with independent draws as it makes them, then
/// dephase's default (first delays evenly spread across clients).
const STRATEGIES: [&str; 8] = [
    "none",
    "exponential",
    "equal",
    "full",
    "decorrelated",
    "equal+even",
    "full+even",
    "decorrelated+even",
];

/// The original simulator's output for 100 clients (seed 1, 100 runs):
/// (strategy, write calls, completion ms).
const REFERENCE_100: [(&str, f64, f64); 5] = [
    ("none", 2421.0, 2027.0),
    ("exponential", 1853.0, 62862.0),
    ("equal", 812.0, 6658.0),
    ("full", 797.0, 4879.0),
    ("decorrelated", 1002.0, 4530.0),
];

struct Args {
    clients: Vec<usize>,
    base_ms: f64,
    cap_ms: f64,
    runs: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: vec![10, 50, 100, 150, 190],
        base_ms: 5.0,
        cap_ms: 2000.0,
        runs: 100,
        seed: 1,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => {
                let mut clients = vec![value()?.parse().map_err(|e| format!("--clients: {e}"))?];
                while let Some(next) = it.peek().filter(|v| !v.starts_with("--")) {
                    clients.push(next.parse().map_err(|e| format!("--clients: {e}"))?);
                    it.next();
                }
                args.clients = clients;
            }
            "--base-ms" => {
                args.base_ms = value()?.parse().map_err(|e| format!("--base-ms: {e}"))?
            }
            "--cap-ms" => args.cap_ms = value()?.parse().map_err(|e| format!("--cap-ms: {e}"))?,
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "-h" | "--help" => {
                println!(
                    "usage: jitter_table [--clients N...] [--base-ms MS] [--cap-ms MS] [--runs R] [--seed S]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.runs == 0 || args.clients.contains(&0) {
        return Err("--runs and every --clients value must be at least 1".into());
    }
    Ok(args)
}

/// The backoff of one strategy, or `None` for "no backoff at all".
fn backoff(
    strategy: &str,
    args: &Args,
    seed: u64,
) -> Result<Option<ExponentialBackoff>, dephase::ConfigError> {
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    let (kind, even) = match strategy.split_once('+') {
        Some((kind, _)) => (kind, true),
        None => (strategy, false),
    };
    let (jitter, base) = match kind {
        "none" => return Ok(None),
        "exponential" => (Jitter::None, 2.0 * args.base_ms),
        "equal" => (Jitter::Equal, 2.0 * args.base_ms),
        "full" => (Jitter::Full, 2.0 * args.base_ms),
        _ => (Jitter::Decorrelated, args.base_ms),
    };
    ExponentialBackoff::builder()
        .base(ms(base))
        .cap(ms(args.cap_ms))
        .multiplier(2.0)
        .jitter(jitter)
        .evenly_spread(even)
        .seed(seed)
        .build()
        .map(Some)
}

#[derive(Clone, Copy)]
enum Kind {
    /// A read arrives at the server.
    Read,
    /// The read's answer (a version) arrives at the client.
    ReadReply(u64),
    /// A conditional write (for a version) arrives at the server.
    Write(u64),
    /// The write's answer arrives at the client.
    WriteReply(bool),
}

struct Event {
    at: f64,
    seq: u64,
    client: usize,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// |N(10, 2)| milliseconds, by Box–Muller.
fn hop(rng: &mut Xoshiro256PlusPlus) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (10.0 + 2.0 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()).abs()
}

/// One run: returns (write calls, completion time in ms).
fn run(
    clients: usize,
    backoff: Option<&ExponentialBackoff>,
    rng: &mut Xoshiro256PlusPlus,
) -> (u64, f64) {
    let mut sequences: Vec<Option<Sequence>> = (0..clients)
        .map(|_| backoff.map(|b| b.sequence()))
        .collect();
    let mut queue = BinaryHeap::new();
    let mut seq = 0;
    let mut push = |queue: &mut BinaryHeap<Event>, at: f64, client: usize, kind: Kind| {
        seq += 1;
        queue.push(Event {
            at,
            seq,
            client,
            kind,
        });
    };
    for client in 0..clients {
        let at = hop(rng);
        push(&mut queue, at, client, Kind::Read);
    }
    let (mut version, mut calls, mut now) = (0u64, 0u64, 0.0);
    while let Some(event) = queue.pop() {
        now = event.at;
        let c = event.client;
        match event.kind {
            Kind::Read => push(&mut queue, now + hop(rng), c, Kind::ReadReply(version)),
            Kind::ReadReply(v) => push(&mut queue, now + hop(rng), c, Kind::Write(v)),
            Kind::Write(v) => {
                calls += 1;
                let won = v == version;
                if won {
                    version += 1;
                }
                push(&mut queue, now + hop(rng), c, Kind::WriteReply(won));
            }
            Kind::WriteReply(true) => {}
            Kind::WriteReply(false) => {
                let wait = sequences[c]
                    .as_mut()
                    .map_or(0.0, |s| s.next_delay().as_secs_f64() * 1000.0);
                push(&mut queue, now + hop(rng) + wait, c, Kind::Read);
            }
        }
    }
    (calls, now)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join("jitter_table.json");
    let mut json = std::fs::File::create(&path)?;

    println!(
        "Brooker's OCC experiment: base {} ms, cap {} ms, {} runs, seed {}",
        args.base_ms, args.cap_ms, args.runs, args.seed
    );
    println!(
        "{:>8}  {:<13} {:>12} {:>16}",
        "clients", "strategy", "write calls", "completion (ms)"
    );
    for &clients in &args.clients {
        for (s, strategy) in STRATEGIES.iter().enumerate() {
            let seed = args.seed ^ ((clients as u64) << 32) ^ ((s as u64) << 48);
            let backoff = backoff(strategy, &args, seed)?;
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let (mut calls, mut time) = (0u64, 0.0);
            for _ in 0..args.runs {
                let (c, t) = run(clients, backoff.as_ref(), &mut rng);
                calls += c;
                time += t;
            }
            let calls = calls as f64 / args.runs as f64;
            let time = time / args.runs as f64;
            let reference = REFERENCE_100
                .iter()
                .find(|(name, ..)| name == strategy)
                .filter(|_| clients == 100 && args.base_ms == 5.0 && args.cap_ms == 2000.0);
            let note = reference.map_or(String::new(), |(_, rc, rt)| {
                format!(
                    "   original: {rc:.0} / {rt:.0} ({:+.1}% / {:+.1}%)",
                    (calls / rc - 1.0) * 100.0,
                    (time / rt - 1.0) * 100.0
                )
            });
            println!("{clients:>8}  {strategy:<18} {calls:>12.0} {time:>16.0}{note}");
            writeln!(
                json,
                "{}",
                serde_json::json!({"clients": clients, "strategy": strategy, "calls": calls, "completion_ms": time})
            )?;
        }
    }
    println!("wrote {}", path.display());
    Ok(())
}

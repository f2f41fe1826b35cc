//! Shared by the benches: ratios of our figures to a peer's, from
//! criterion's own estimates or from paired rounds, printed and written as
//! JSON lines.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// Where cargo puts build output (and criterion its estimates).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        })
}

/// The mean time (ns) criterion measured for `group/function` in this run.
pub fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Prints `ours / peer` for each (bench, ours, peer) and appends JSON lines
/// `{"bench","ours_ns","peer","peer_ns","ratio"}` to `target/<file>`. With
/// an empty group, `ours` and `peer` are whole `group/function` names.
pub fn report(file: &str, pairs: &[(&str, &str, &str, &str)]) {
    let path = target_dir().join(file);
    let mut out = std::fs::File::create(&path).expect("create the ratio file");
    println!(
        "\n{:<44} {:>10} {:>10}  {:<28} {:>7}",
        "bench (same run)", "ours ns", "peer ns", "peer", "ratio"
    );
    for (group, ours, peer, peer_name) in pairs {
        let (Some(a), Some(b)) = (mean_ns(group, ours), mean_ns(group, peer)) else {
            println!("{group}: no estimate (filtered out?)");
            continue;
        };
        let bench = match *group {
            "" => ours.to_string(),
            _ => format!("{group}/{ours}"),
        };
        println!(
            "{bench:<44} {a:>10.1} {b:>10.1}  {peer_name:<28} {:>7.2}",
            a / b
        );
        writeln!(
            out,
            "{}",
            serde_json::json!({"bench": bench, "ours_ns": a, "peer": peer_name, "peer_ns": b, "ratio": a / b})
        )
        .expect("write the ratio file");
    }
    println!("wrote {}", path.display());
}

/// Polls a future that is expected to be ready at once.
pub fn now<F: std::future::Future>(future: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the benchmarked future was not ready"),
    }
}

/// CPU time this thread has run, in nanoseconds: `CLOCK_THREAD_CPUTIME_ID`,
/// which Linux reads from the scheduler's running sum plus the time since
/// it was last updated (nanoseconds, not scheduler ticks).
pub fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is a constant.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The median, first and third quartiles, min and max of `v`.
pub fn spread(v: &mut [f64]) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({
        "median": at(0.5), "q1": at(0.25), "q3": at(0.75), "iqr": at(0.75) - at(0.25),
        "min": v[0], "max": v[v.len() - 1],
    })
}

/// One paired comparison: `ours` against `peer`, each called `per_round`
/// times in turn (the order alternating) for `rounds` rounds, each turn
/// timed in this thread's CPU time. Criterion measures one function after
/// the other, and this VM's speed drifts between them by more than some
/// of the differences measured; rounds a few milliseconds long that
/// alternate see the same machine. Returns the JSON line written by
/// [`write_paired`]: per-call medians and the ratio's median and quartiles.
pub fn paired(
    bench: &str,
    peer_name: &str,
    per_round: u64,
    mut ours: impl FnMut(),
    mut peer: impl FnMut(),
) -> serde_json::Value {
    const ROUNDS: usize = 31;
    let (mut ratios, mut ours_ns, mut peer_ns) = (Vec::new(), Vec::new(), Vec::new());
    let time = |f: &mut dyn FnMut()| {
        let started = thread_cpu_ns();
        for _ in 0..per_round {
            f();
        }
        (thread_cpu_ns() - started) as f64 / per_round as f64
    };
    // A warm-up round each, not counted.
    time(&mut ours);
    time(&mut peer);
    for round in 0..ROUNDS {
        let (a, b) = if round % 2 == 0 {
            let a = time(&mut ours);
            (a, time(&mut peer))
        } else {
            let b = time(&mut peer);
            (time(&mut ours), b)
        };
        ratios.push(a / b);
        ours_ns.push(a);
        peer_ns.push(b);
    }
    let ratio = spread(&mut ratios);
    serde_json::json!({
        "bench": bench,
        "ours_ns": spread(&mut ours_ns)["median"],
        "peer": peer_name,
        "peer_ns": spread(&mut peer_ns)["median"],
        "ratio": ratio["median"],
        "ratio_q1": ratio["q1"],
        "ratio_q3": ratio["q3"],
        "rounds": ROUNDS,
        "calls_per_round": per_round,
    })
}

/// Prints paired comparisons and writes them as JSON lines to `target/<file>`.
pub fn write_paired(file: &str, lines: &[serde_json::Value]) {
    let path = target_dir().join(file);
    let mut out = std::fs::File::create(&path).expect("create the paired file");
    println!(
        "\n{:<44} {:>9} {:>9}  {:<32} {:>6}  {:>15}",
        "paired rounds (median of 31)", "ours ns", "peer ns", "peer", "ratio", "[q1, q3]"
    );
    for line in lines {
        println!(
            "{:<44} {:>9.1} {:>9.1}  {:<32} {:>6.2}  [{:.2}, {:.2}]",
            line["bench"].as_str().unwrap_or(""),
            line["ours_ns"].as_f64().unwrap_or(f64::NAN),
            line["peer_ns"].as_f64().unwrap_or(f64::NAN),
            line["peer"].as_str().unwrap_or(""),
            line["ratio"].as_f64().unwrap_or(f64::NAN),
            line["ratio_q1"].as_f64().unwrap_or(f64::NAN),
            line["ratio_q3"].as_f64().unwrap_or(f64::NAN),
        );
        writeln!(out, "{line}").expect("write the paired file");
    }
    println!("wrote {}", path.display());
}

/// A multi-thread runtime to build the benchmarked layers in: their clocks
/// read the kernel's coarse clock only when made in one (a runtime whose
/// clock cannot be paused), as a server's are. Enter it while building.
pub fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

/// Asserts that `service` is ready at once.
pub fn ready<S: tower::Service<u64>>(service: &mut S) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(
        service.poll_ready(&mut cx),
        std::task::Poll::Ready(Ok(()))
    ));
}

/// One call through `service`, as the success-path benches time it:
/// `poll_ready`, `call` with the next number, poll to completion.
pub fn one_call<S>(service: &mut S, i: &mut u64)
where
    S: tower::Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    *i += 1;
    ready(service);
    std::hint::black_box(now(service.call(std::hint::black_box(*i)))).unwrap();
}

/// A service that answers at once with its request and never fails.
pub fn echo() -> impl tower::Service<
    u64,
    Response = u64,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<u64, std::convert::Infallible>>,
> + Clone {
    tower::service_fn(|x: u64| std::future::ready(Ok(x)))
}

//! Shared by the benches: ratios of our figures to a peer's, from
//! criterion's own estimates, printed and written as JSON lines.
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
/// `{"bench","ours_ns","peer","peer_ns","ratio"}` to `target/<file>`.
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
        let bench = format!("{group}/{ours}");
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

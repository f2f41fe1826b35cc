//! Every layer against its peers, measured in the same run and reported as
//! ratios (`target/peers.json`, one JSON object per line:
//! `{"bench","ours_ns","peer","peer_ns","ratio"}`); the single-thread ones
//! again in paired rounds that alternate ours and the peer
//! (`target/peers_paired.json`, with the ratio's quartiles).
//!
//! - `retry`: the success path against tower's `Retry` + `TpsBudget` and
//!   tower-resilience's retry; budget operations against tower's budget;
//! - `breaker`: the closed path against tower-resilience, recloser and
//!   failsafe, on 1, 2 and 4 threads (4 threads on a 2-core machine share
//!   the cores: compare with the bare call at 4 threads);
//! - `stampede`: 10 000 waiters on one key (time, and polls per waiter in
//!   `target/stampede_polls.json`) against tower-resilience-coalesce, moka's
//!   `get_with` and async_singleflight; the uncontended path; a cache hit
//!   against moka's `get`;
//! - `hedge`: the success path (no hedge sent) against tower's `Hedge`,
//!   both with a latency estimate;
//! - `limit`: the adaptive concurrency limit's success path against
//!   tower's `ConcurrencyLimit`.
//!
//! ```text
//! cargo bench --bench peers
//! cargo bench --bench peers -- breaker   # one family
//! ```
//!
//! `PEERS_NO_PAIRED=1` skips the paired rounds (for a profiler's run of
//! one function with `--profile-time`).

use criterion::Criterion;

mod breaker;
mod hedge;
mod limit;
mod retry;
mod stampede;
#[path = "../support/mod.rs"]
mod support;

fn main() {
    retry::benches();
    breaker::benches();
    stampede::benches();
    hedge::benches();
    limit::benches();
    Criterion::default().configure_from_args().final_summary();
    let mut pairs = retry::ratios();
    pairs.extend(breaker::ratios());
    pairs.extend(stampede::ratios());
    pairs.extend(hedge::ratios());
    pairs.extend(limit::ratios());
    support::report("peers.json", &pairs);
    if std::env::var_os("PEERS_NO_PAIRED").is_some() {
        return; // a profiler's run of one criterion function
    }
    // The single-thread comparisons again, in paired rounds: the figures
    // to read where criterion's runs, one function after the other, drift.
    let mut paired = retry::paired();
    paired.extend(stampede::paired());
    paired.extend(hedge::paired());
    paired.extend(limit::paired());
    support::write_paired("peers_paired.json", &paired);
}

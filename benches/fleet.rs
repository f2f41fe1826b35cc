//! The fleet stores' hot paths against their anchors, in the same run:
//!
//! - `fleet_budget`: a request's deposit and a retry's withdraw + refund
//!   on a [`FleetBudget`] (tokens leased from Redis in the background; no
//!   round trip on these paths) against an in-process [`RatioBudget`]
//!   (the target: ≤ 2×), in paired rounds of thread CPU time.
//! - `fleet_pacer`: one admission through a [`FleetPacer`] whose quota
//!   never makes anyone wait (the script, the reply's mapping onto this
//!   clock) against one `EVALSHA` (the target: ≤ 1.2×) — of the pacer's
//!   own script (what the client adds), and of a script that returns at
//!   once (what the script's work in Redis adds too) — in paired rounds of
//!   wall time (most of it is Redis's and the loopback's).
//!
//! A `redis-server` is started on a free loopback port (without the binary
//! the bench says it skipped). Writes `target/fleet.json`.
//!
//! ```text
//! cargo bench -p dephase-bench --bench fleet
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use dephase::budget::{RatioBudget, RetryBudget};
use dephase::redis::{FleetBudget, FleetPacer};

#[allow(dead_code)]
#[path = "../examples/fleet/server.rs"]
mod server;
mod support;

fn main() {
    let Some(server) = server::RedisServer::start().expect("redis-server failed to start") else {
        println!("fleet: {}", server::SKIPPED);
        return;
    };
    let mut lines = Vec::new();

    // The budget: its background sync on a runtime of its own.
    let background = support::server_runtime();
    let fleet = background.block_on(async {
        let fleet = FleetBudget::builder(server.url(), "bench")
            .reserve_per_sec(1e6)
            .cap(1e9)
            .batch(1000)
            .build()
            .unwrap();
        fleet.deposit(); // starts the sync
        let started = Instant::now();
        while fleet.stats().pool == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no tokens leased"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        fleet
    });
    let local = RatioBudget::builder()
        .min_per_sec(1_000_000)
        .build()
        .unwrap();
    lines.push(support::paired(
        "fleet_budget/deposit",
        "RatioBudget::deposit",
        100_000,
        || fleet.deposit(),
        || local.deposit(),
    ));
    lines.push(support::paired(
        "fleet_budget/withdraw_refund",
        "RatioBudget withdraw + refund",
        100_000,
        || {
            let w = black_box(fleet.withdraw()).expect("a leased token");
            fleet.refund(w);
        },
        || {
            let w = black_box(local.withdraw()).expect("the reserve");
            local.refund(w);
        },
    ));
    assert_eq!(fleet.stats().failed_syncs, 0, "Redis answered every sync");

    // The pacer: one admission (no wait) against one EVALSHA, wall time.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pacer, mut connection) = runtime.block_on(async {
        let pacer = FleetPacer::builder(server.url(), "bench")
            .rate(1_000_000, Duration::from_secs(1))
            .burst(1_000_000)
            .build()
            .unwrap();
        pacer.wait().await.unwrap();
        let connection = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (pacer, connection)
    });
    let own = redis::Script::new(dephase::redis::FLEET_PACE_SCRIPT);
    let trivial = redis::Script::new("return {1, 0, 0, 0}");
    for (script, name, key) in [
        (
            &own,
            "one EVALSHA of the pacer's script",
            "bench:{pace:other}:tat",
        ),
        (&trivial, "one EVALSHA (return at once)", "unused"),
    ] {
        let rounds = 31;
        let per_round = 500;
        let (mut ratios, mut ours, mut peer) = (Vec::new(), Vec::new(), Vec::new());
        runtime.block_on(async {
            for round in 0..=rounds {
                let (mut admitted, mut evalsha) = (0.0, 0.0);
                for side in [round % 2, 1 - round % 2] {
                    let started = Instant::now();
                    if side == 0 {
                        for _ in 0..per_round {
                            // The same arguments as the pacer's: 1 µs apart,
                            // a burst of a million, a 30 s maximum wait.
                            let reply: Vec<i64> = script
                                .key(key)
                                .arg(1)
                                .arg(999_999)
                                .arg(30_000_000)
                                .invoke_async(&mut connection)
                                .await
                                .unwrap();
                            black_box(reply);
                        }
                        evalsha = started.elapsed().as_secs_f64();
                    } else {
                        for _ in 0..per_round {
                            black_box(pacer.wait().await.unwrap());
                        }
                        admitted = started.elapsed().as_secs_f64();
                    }
                }
                if round > 0 {
                    // The first round warms both up.
                    ratios.push(admitted / evalsha);
                    ours.push(admitted * 1e9 / per_round as f64);
                    peer.push(evalsha * 1e9 / per_round as f64);
                }
            }
        });
        let ratio = support::spread(&mut ratios);
        lines.push(serde_json::json!({
            "bench": "fleet_pacer/admission",
            "ours_ns": support::spread(&mut ours)["median"],
            "peer": name,
            "peer_ns": support::spread(&mut peer)["median"],
            "ratio": ratio["median"],
            "ratio_q1": ratio["q1"],
            "ratio_q3": ratio["q3"],
            "rounds": rounds,
            "calls_per_round": per_round,
        }));
    }
    assert_eq!(pacer.stats().local_turns, 0, "every turn came from Redis");
    support::write_paired("fleet.json", &lines);
}

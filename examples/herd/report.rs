//! What a run's figures are, and how they are shown: a table, the JSON
//! report, an SVG per scenario.

use std::path::Path;
use std::time::Duration;

use dephase::BoxError;
use dephase::measure::Spread;
use plotters::prelude::*;

use crate::scenarios::{Run, Scenario};

/// Width of the buckets in which the origin's peak is counted.
pub const BUCKET: Duration = Duration::from_millis(10);

/// The figures of one run.
pub struct Figures {
    pub origin_calls: usize,
    pub amplification: f64,
    pub peak_per_10ms: usize,
    pub peak_to_mean: f64,
    pub success_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Figures {
    pub fn of(run: &Run) -> Result<Figures, BoxError> {
        let peak_per_10ms = if run.calls.is_empty() {
            0
        } else {
            Spread::by_width(&run.calls, BUCKET)?.peak()
        };
        // Peak-to-mean over ten buckets of the scenario's window (a burst
        // in one bucket is 10).
        let peak_to_mean = if run.calls.is_empty() {
            0.0
        } else {
            Spread::in_window(&run.calls, Duration::ZERO..run.window, 10)?.peak_to_mean()
        };
        Ok(Figures {
            origin_calls: run.calls.len(),
            amplification: run.calls.len() as f64 / run.requests.max(1) as f64,
            peak_per_10ms,
            peak_to_mean,
            success_rate: run.successes as f64 / run.requests.max(1) as f64,
            p50_ms: ms(percentile(&run.latencies, 50.0)),
            p99_ms: ms(percentile(&run.latencies, 99.0)),
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "origin_calls": self.origin_calls,
            "amplification": self.amplification,
            "peak_per_10ms": self.peak_per_10ms,
            "peak_to_mean": self.peak_to_mean,
            "success_rate": self.success_rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        })
    }
}

fn ratio(naive: f64, dephase: f64) -> String {
    if dephase == 0.0 {
        "-".into()
    } else {
        format!("{:.1}x", naive / dephase)
    }
}

/// Prints the scenario's table.
pub fn table(scenario: &Scenario) -> Result<(), BoxError> {
    let (n, d) = (
        Figures::of(&scenario.naive)?,
        Figures::of(&scenario.dephase)?,
    );
    let v = match &scenario.variant {
        Some((_, run)) => Some(Figures::of(run)?),
        None => None,
    };
    let third = |f: &dyn Fn(&Figures) -> String| v.as_ref().map(f).unwrap_or_default();
    let header_third = scenario.variant.as_ref().map_or("", |(name, _)| name);
    println!();
    println!("{}", scenario.description);
    println!(
        "{:<42} {:>12} {:>12} {:>14} {:>24}",
        scenario.name, "naive", "dephase", "naive/dephase", header_third
    );
    let rows: Vec<(&str, String, String, String, String)> = vec![
        (
            "origin calls",
            n.origin_calls.to_string(),
            d.origin_calls.to_string(),
            ratio(n.origin_calls as f64, d.origin_calls as f64),
            third(&|f| f.origin_calls.to_string()),
        ),
        (
            "amplification (origin calls per request)",
            format!("{:.2}", n.amplification),
            format!("{:.2}", d.amplification),
            ratio(n.amplification, d.amplification),
            third(&|f| format!("{:.2}", f.amplification)),
        ),
        (
            "peak origin requests per 10 ms",
            n.peak_per_10ms.to_string(),
            d.peak_per_10ms.to_string(),
            ratio(n.peak_per_10ms as f64, d.peak_per_10ms as f64),
            third(&|f| f.peak_per_10ms.to_string()),
        ),
        (
            "peak-to-mean (10 buckets of the window)",
            format!("{:.2}", n.peak_to_mean),
            format!("{:.2}", d.peak_to_mean),
            ratio(n.peak_to_mean, d.peak_to_mean),
            third(&|f| format!("{:.2}", f.peak_to_mean)),
        ),
        (
            "success rate",
            format!("{:.1}%", 100.0 * n.success_rate),
            format!("{:.1}%", 100.0 * d.success_rate),
            String::new(),
            third(&|f| format!("{:.1}%", 100.0 * f.success_rate)),
        ),
        (
            "p50 latency",
            format!("{:.1} ms", n.p50_ms),
            format!("{:.1} ms", d.p50_ms),
            String::new(),
            third(&|f| format!("{:.1} ms", f.p50_ms)),
        ),
        (
            "p99 latency",
            format!("{:.1} ms", n.p99_ms),
            format!("{:.1} ms", d.p99_ms),
            ratio(n.p99_ms, d.p99_ms),
            third(&|f| format!("{:.1} ms", f.p99_ms)),
        ),
    ];
    for (name, a, b, r, c) in rows {
        println!("{name:<42} {a:>12} {b:>12} {r:>14} {c:>24}");
    }
    for (i, (label, value)) in scenario.naive.extra.iter().enumerate() {
        let dephase = scenario
            .dephase
            .extra
            .get(i)
            .map_or("", |(_, v)| v.as_str());
        println!("{label:<42} {value:>12} {dephase:>12}");
    }
    for (label, value) in scenario
        .dephase
        .extra
        .iter()
        .skip(scenario.naive.extra.len())
    {
        println!("{label:<42} {:>12} {value:>12}", "-");
    }
    Ok(())
}

/// The scenario's entry in `report.json`.
pub fn json(scenario: &Scenario, clients: usize, seed: u64) -> Result<serde_json::Value, BoxError> {
    let mut entry = serde_json::json!({
        "name": scenario.name,
        "clients": clients,
        "seed": seed,
        "naive": Figures::of(&scenario.naive)?.json(),
        "dephase": Figures::of(&scenario.dephase)?.json(),
    });
    if let Some((_, run)) = &scenario.variant {
        entry["dephase_index"] = Figures::of(run)?.json();
    }
    let extra = |run: &Run| -> serde_json::Value {
        run.extra
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    entry["naive"]["extra"] = extra(&scenario.naive);
    entry["dephase"]["extra"] = extra(&scenario.dephase);
    Ok(entry)
}

/// Origin requests per 10 ms over time, naive and dephase on the same axes.
pub fn svg(scenario: &Scenario, path: &Path) -> Result<(), BoxError> {
    // Both series over the same buckets, zeros included, from 0 to one
    // bucket past the last call of either run.
    let last = |run: &Run| run.calls.last().copied().unwrap_or_default();
    let end = last(&scenario.naive).max(last(&scenario.dephase));
    let buckets = (end.as_millis() / BUCKET.as_millis()) as usize + 2;
    let series = |run: &Run| -> Vec<(f64, f64)> {
        let mut counts = vec![0usize; buckets];
        for t in &run.calls {
            counts[(t.as_millis() / BUCKET.as_millis()) as usize] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| ((i as f64) * ms(BUCKET), c as f64))
            .collect()
    };
    let naive = series(&scenario.naive);
    let dephase = series(&scenario.dephase);
    let x_max = buckets as f64 * ms(BUCKET);
    let y_max = naive
        .iter()
        .chain(&dephase)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;

    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: origin requests per 10 ms", scenario.name),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since the herd started (ms)")
        .y_desc("requests / 10 ms")
        .draw()?;
    chart
        .draw_series(LineSeries::new(naive, RED.stroke_width(2)))?
        .label("naive")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(dephase, BLUE.stroke_width(2)))?
        .label("dephase")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

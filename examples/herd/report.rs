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

/// Which way a figure is better.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// How many times better dephase did than naive (> 1: better, < 1:
/// worse), from the figures as printed (`resolution`: the smallest printed
/// step, so that a figure printed as 0 reads as "at most that").
fn gain(naive: f64, dephase: f64, better: Better, resolution: f64) -> String {
    let (top, bottom) = match better {
        Better::Lower => (naive, dephase),
        Better::Higher => (dephase, naive),
    };
    if top < resolution && bottom < resolution {
        return "1x".into();
    }
    if bottom < resolution {
        return format!("> {}x", factor(top / resolution));
    }
    format!("{}x", factor(top / bottom))
}

fn factor(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 0.1 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A figure as printed: more decimals for small ones.
fn number(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 {
        format!("{x:.4}")
    } else {
        format!("{x:.2}")
    }
}

/// The header of the gain column, explained once before the tables.
pub const GAIN: &str = "dephase vs naive";

/// Prints the scenario's table: one row per figure; the gain column says
/// how many times better dephase did (> 1 always means better).
pub fn table(scenario: &Scenario) -> Result<(), BoxError> {
    let (n, d) = (
        Figures::of(&scenario.naive)?,
        Figures::of(&scenario.dephase)?,
    );
    let others = scenario
        .variants
        .iter()
        .map(|(_, _, run)| Figures::of(run))
        .collect::<Result<Vec<_>, _>>()?;
    let percent = |x: f64| format!("{:.1}%", 100.0 * x);
    let millis = |x: f64| format!("{x:.1} ms");
    // label, naive, dephase, gain, then one cell per variant.
    type Row = Vec<String>;
    let row = |label: &str,
               value: &dyn Fn(&Figures) -> f64,
               show: &dyn Fn(f64) -> String,
               better: Better,
               resolution: f64|
     -> Row {
        let mut cells = vec![
            label.to_string(),
            show(value(&n)),
            show(value(&d)),
            gain(value(&n), value(&d), better, resolution),
        ];
        cells.extend(others.iter().map(|f| show(value(f))));
        cells
    };
    let mut header = vec![
        scenario.name.to_string(),
        "naive".into(),
        "dephase".into(),
        GAIN.into(),
    ];
    header.extend(
        scenario
            .variants
            .iter()
            .map(|(name, _, _)| name.to_string()),
    );
    let mut rows: Vec<Row> = vec![
        header,
        row(
            "origin calls",
            &|f| f.origin_calls as f64,
            &|x| format!("{x:.0}"),
            Better::Lower,
            1.0,
        ),
        row(
            "origin calls per request",
            &|f| f.amplification,
            &number,
            Better::Lower,
            0.0001,
        ),
        row(
            "peak origin requests in 10 ms",
            &|f| f.peak_per_10ms as f64,
            &|x| format!("{x:.0}"),
            Better::Lower,
            1.0,
        ),
        row(
            "peak-to-mean (10 buckets of the window)",
            &|f| f.peak_to_mean,
            &number,
            Better::Lower,
            0.01,
        ),
        row(
            "success rate",
            &|f| f.success_rate,
            &percent,
            Better::Higher,
            0.001,
        ),
        row("p50 latency", &|f| f.p50_ms, &millis, Better::Lower, 0.1),
        row("p99 latency", &|f| f.p99_ms, &millis, Better::Lower, 0.1),
    ];
    // The scenario's own figures: no gain (not all are numbers).
    let runs: Vec<&Run> = [&scenario.naive, &scenario.dephase]
        .into_iter()
        .chain(scenario.variants.iter().map(|(_, _, run)| run))
        .collect();
    let extras = runs.iter().map(|run| run.extra.len()).max().unwrap_or(0);
    for i in 0..extras {
        let label = runs
            .iter()
            .find_map(|run| run.extra.get(i))
            .map_or("", |(label, _)| label);
        let cell = |run: &Run| run.extra.get(i).map_or("-".into(), |(_, v)| v.clone());
        let mut cells = vec![
            label.to_string(),
            cell(&scenario.naive),
            cell(&scenario.dephase),
            String::new(),
        ];
        cells.extend(scenario.variants.iter().map(|(_, _, run)| cell(run)));
        rows.push(cells);
    }
    let columns = 4 + scenario.variants.len();
    let width = |column: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    println!();
    println!("{}", scenario.description);
    for r in &rows {
        let mut line = format!("{:<w$}", r[0], w = widths[0]);
        for (cell, w) in r.iter().zip(&widths).skip(1) {
            line.push_str(&format!("  {cell:>w$}"));
        }
        println!("{}", line.trim_end());
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
    for (_, key, run) in &scenario.variants {
        entry[*key] = Figures::of(run)?.json();
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
    for (_, key, run) in &scenario.variants {
        entry[*key]["extra"] = extra(run);
    }
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

    // The origin's capacity in requests per bucket: `capacity` at once,
    // each held for its service time.
    let capacity = scenario
        .capacity
        .map(|c| c as f64 * BUCKET.as_secs_f64() / crate::origin::SERVICE_TIME.as_secs_f64());
    let y_max = y_max.max(capacity.unwrap_or(0.0) * 1.1).ceil();

    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(scenario.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since the herd started (ms)")
        .y_desc("requests in 10 ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    if !scenario.outage.is_zero() {
        let grey = RGBColor(200, 200, 200);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (ms(scenario.outage).min(x_max), y_max)],
                grey.mix(0.5).filled(),
            )))?
            .label(format!("origin down ({} ms)", ms(scenario.outage)))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], grey.mix(0.5).filled())
            });
    }
    if let Some(capacity) = capacity {
        chart
            .draw_series(LineSeries::new(
                [(0.0, capacity), (x_max, capacity)],
                BLACK.stroke_width(1),
            ))?
            .label(format!("origin capacity ({capacity:.1} in 10 ms)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
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

//! `plot`: draws the JSON lines `loadgen --json` wrote (one suite run) as PNGs:
//!
//! - `latency_vs_load.png`: p50 and p99 latency against offered rate, from
//!   the open-loop scenarios (`open-NN`), one line per target;
//! - `throughput.png`: req/s per configuration in each closed-loop scenario;
//! - `ttft.png`: time to first token per configuration in each stream scenario.
//!
//! Text is drawn with a TrueType font read at run time (`--font`), through
//! plotters' bundled rasteriser: no fontconfig or freetype needed.

use clap::Parser;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Draw a suite run's results as PNGs.
#[derive(Parser)]
struct Args {
    /// JSON lines from `loadgen --json`.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the PNGs.
    #[arg(long, default_value = "load-tests/plots")]
    out_dir: PathBuf,
    /// A TrueType font for labels.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

/// The parts of a result line the plots use.
#[derive(Deserialize)]
struct Line {
    scenario: String,
    target: String,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    rps: f64,
    #[serde(default)]
    latency_ms: Option<Quantiles>,
    #[serde(default)]
    ttft_ms: Option<Quantiles>,
}

#[derive(Deserialize, Clone, Copy)]
struct Quantiles {
    p50: f64,
    p99: f64,
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// The suite's target order, for stable colours.
const TARGETS: [&str; 5] = [
    "direct",
    "bare",
    "sluice-off",
    "sluice-full",
    "sluice-redis",
];

fn colour(target: &str) -> RGBColor {
    match TARGETS.iter().position(|t| *t == target) {
        Some(0) => RGBColor(120, 120, 120),
        Some(1) => RGBColor(31, 119, 180),
        Some(2) => RGBColor(44, 160, 44),
        Some(3) => RGBColor(214, 39, 40),
        Some(4) => RGBColor(148, 103, 189),
        _ => RGBColor(255, 127, 14),
    }
}

fn main() -> PlotResult {
    let args = Args::parse();
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(std::fs::read(&args.font)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| format!("{}: not a usable TrueType font", args.font.display()))?;
    let lines: Vec<Line> = std::fs::read_to_string(&args.input)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&args.out_dir)?;
    latency_vs_load(&lines, &args.out_dir.join("latency_vs_load.png"))?;
    bars(
        &lines,
        &args.out_dir.join("throughput.png"),
        "Throughput per configuration (closed loop)",
        "req/s",
        |l| {
            let closed = !l.scenario.starts_with("open") && !l.scenario.starts_with("stream");
            (closed && l.latency_ms.is_some()).then_some(l.rps)
        },
    )?;
    bars(
        &lines,
        &args.out_dir.join("ttft.png"),
        "Time to first token, p50 (open-loop streams)",
        "ms",
        |l| {
            l.scenario
                .starts_with("stream")
                .then_some(l.ttft_ms.map(|q| q.p50))
                .flatten()
        },
    )?;
    Ok(())
}

/// p50 (left) and p99 (right) latency against offered rate, per target.
fn latency_vs_load(lines: &[Line], path: &Path) -> PlotResult {
    let mut series: BTreeMap<&str, Vec<(f64, Quantiles)>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.scenario.starts_with("open-")) {
        if let (Some(rate), Some(q)) = (l.rate, l.latency_ms) {
            series.entry(&l.target).or_default().push((rate, q));
        }
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Open-loop latency vs offered load (non-stream)",
        ("sans-serif", 24),
    )?;
    let panels = root.split_evenly((1, 2));
    let max_rate = series.values().flatten().map(|p| p.0).fold(1.0, f64::max);
    for (panel, (name, pick)) in panels.iter().zip([
        ("p50", (|q: &Quantiles| q.p50) as fn(&Quantiles) -> f64),
        ("p99", |q: &Quantiles| q.p99),
    ]) {
        let values = || series.values().flatten().map(|p| pick(&p.1));
        let max_ms = values().fold(0.1, f64::max);
        let min_ms = values().fold(max_ms, f64::min).max(0.001);
        // Log scale: a saturated target's seconds and an idle one's tenths of
        // a millisecond on one chart.
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{name} latency (log scale)"), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0.0..max_rate * 1.05,
                (min_ms * 0.8..max_ms * 1.25).log_scale(),
            )?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("offered rate, req/s")
            .y_desc("ms")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        for (target, points) in &series {
            let c = colour(target);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(r, q)| (*r, pick(q))),
                    c.stroke_width(2),
                ))?
                .label(*target)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(
                points
                    .iter()
                    .map(|(r, q)| Circle::new((*r, pick(q)), 4, c.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Grouped bars: one group per scenario that `value` accepts, one bar per target.
fn bars(
    lines: &[Line],
    path: &Path,
    title: &str,
    unit: &str,
    value: impl Fn(&Line) -> Option<f64>,
) -> PlotResult {
    let mut groups: Vec<(&str, Vec<(&str, f64)>)> = Vec::new();
    for l in lines {
        let Some(v) = value(l) else { continue };
        match groups.iter_mut().find(|(s, _)| *s == l.scenario) {
            Some((_, bars)) => bars.push((&l.target, v)),
            None => groups.push((&l.scenario, vec![(&l.target, v)])),
        }
    }
    let width = TARGETS.len() as f64 + 1.0;
    let max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|(_, v)| *v))
        .fold(1e-9, f64::max);
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(
            // One spare group's width on the right for the legend.
            0.0..((groups.len() + 1) as f64 * width),
            0.0..max * 1.15,
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(0)
        .y_desc(unit)
        .y_label_formatter(&|v| format_value(*v))
        .draw()?;
    let mut labelled = std::collections::BTreeSet::new();
    for (g, (scenario, bars)) in groups.iter().enumerate() {
        let base = g as f64 * width + 0.5;
        for (target, v) in bars {
            let slot = TARGETS
                .iter()
                .position(|t| t == target)
                .unwrap_or(TARGETS.len() - 1);
            let x = base + slot as f64;
            let c = colour(target);
            let drawn = chart.draw_series(std::iter::once(Rectangle::new(
                [(x, 0.0), (x + 0.85, *v)],
                c.filled(),
            )))?;
            if labelled.insert(*target) {
                drawn.label(*target).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled())
                });
            }
            chart.draw_series(std::iter::once(Text::new(
                format_value(*v),
                (x, *v + max * 0.02),
                ("sans-serif", 12),
            )))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            scenario.to_string(),
            (base + 0.5, max * 1.12),
            ("sans-serif", 16),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

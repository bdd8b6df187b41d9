//! `henn bench plot`: a bar chart (SVG) of per-image latencies from a JSON list of
//! measurements, henn beside the reference systems, on a logarithmic time axis.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde::Deserialize;

/// Arguments of `henn bench plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// JSON list of measurements: {model, system, threads, latency_s, henn (bool)}.
    pub data: PathBuf,
    /// Output SVG file.
    #[arg(long, default_value = "docs/inference-latency.svg")]
    pub out: PathBuf,
    /// Chart title.
    #[arg(
        long,
        default_value = "Encrypted inference latency per image (log scale, lower is better)"
    )]
    pub title: String,
}

/// One measurement.
#[derive(Debug, Clone, Deserialize)]
pub struct Point {
    /// Model name.
    pub model: String,
    /// System and configuration (e.g. "henn, channel packing").
    pub system: String,
    /// Threads used.
    pub threads: u32,
    /// Seconds per image.
    pub latency_s: f64,
    /// Whether the row is ours (drawn in the highlight colour).
    #[serde(default)]
    pub henn: bool,
}

/// Largest data file accepted.
const MAX_BYTES: u64 = 1 << 20;

/// Reads and checks the measurement list.
pub fn load(path: &Path) -> anyhow::Result<Vec<Point>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_BYTES {
        bail!(
            "{} is {len} bytes, more than the {MAX_BYTES} accepted",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)?;
    let pts: Vec<Point> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if pts.is_empty() {
        bail!("{}: no measurements", path.display());
    }
    if let Some(p) = pts
        .iter()
        .find(|p| !(p.latency_s.is_finite() && p.latency_s > 0.0))
    {
        bail!(
            "{}: latency {} of {} / {} is not a positive number",
            path.display(),
            p.latency_s,
            p.model,
            p.system
        );
    }
    Ok(pts)
}

/// Draws the chart.
pub fn draw(pts: &[Point], out: &Path, title: &str) -> anyhow::Result<()> {
    let rows = pts.len();
    let height = 120 + 34 * rows as u32;
    let root = SVGBackend::new(out, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lo = pts
        .iter()
        .map(|p| p.latency_s)
        .fold(f64::INFINITY, f64::min)
        / 3.0;
    let hi = pts.iter().map(|p| p.latency_s).fold(0.0, f64::max) * 3.0;
    let labels: Vec<String> = pts
        .iter()
        .map(|p| format!("{} | {} ({} thr)", p.model, p.system, p.threads))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(520)
        .build_cartesian_2d((lo..hi).log_scale(), 0..rows as i32)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows)
        .y_label_formatter(&|y| {
            labels
                .get(rows.wrapping_sub(1).wrapping_sub(*y as usize))
                .cloned()
                .unwrap_or_default()
        })
        .x_desc("seconds per image")
        .x_label_formatter(&|x| format!("{x:.3}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ours = RGBColor(31, 119, 180);
    let theirs = RGBColor(170, 170, 170);
    chart
        .draw_series(pts.iter().enumerate().map(|(i, p)| {
            let y = (rows - 1 - i) as i32;
            let c = if p.henn { ours } else { theirs };
            Rectangle::new([(lo, y), (p.latency_s, y + 1)], c.filled())
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(pts.iter().enumerate().map(|(i, p)| {
            let y = (rows - 1 - i) as i32;
            Text::new(
                format!(" {}", fmt_seconds(p.latency_s)),
                (p.latency_s, y),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn fmt_seconds(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} ms", s * 1000.0)
    }
}

/// Runs `henn bench plot`.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let pts = load(&args.data)?;
    draw(&pts, &args.out, &args.title)?;
    println!("wrote {} ({} bars)", args.out.display(), pts.len());
    Ok(())
}

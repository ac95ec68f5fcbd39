//! The report's plots, as SVG: demand vs capacity over time, hourly burn by cloud (stacked), and
//! the CDF of queue waits; for several runs side by side (`compare`), burn over time and the wait
//! CDF of each run in one chart.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::Report;

const W: u32 = 1000;
const H: u32 = 500;
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// Writes the three plots into `dir` (created if needed) and returns their paths.
pub fn write(r: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut paths = vec![dir.join("demand_vs_capacity.svg"), dir.join("burn_by_cloud.svg"), dir.join("wait_cdf.svg")];
    demand_vs_capacity(r, &paths[0], &r.scenario, |s| (s.demand, s.capacity))?;
    burn_by_cloud(r, &paths[1])?;
    wait_cdf(r, &paths[2])?;
    // Several demands: each app's own, beside the fleet's (app names are the spec's, checked
    // there to be safe in a file name).
    for (i, a) in r.apps.iter().enumerate() {
        let p = dir.join(format!("demand_vs_capacity_{}.svg", a.app));
        let pick = move |s: &crate::report::Sample| s.apps.get(i).map_or((0, 0), |x| (x.demand, x.capacity));
        demand_vs_capacity(r, &p, &format!("{} {}", r.scenario, a.app), pick)?;
        paths.push(p);
    }
    Ok(paths)
}

/// Writes `burn_by_policy.svg` and `wait_cdf_by_policy.svg` into `dir`: one line per report
/// (the spec's policies, the baselines, the oracle). Returns their paths.
pub fn compare(reports: &[&Report], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let paths = vec![dir.join("burn_by_policy.svg"), dir.join("wait_cdf_by_policy.svg")];
    let title = reports.first().map(|r| r.scenario.clone()).unwrap_or_default();
    let dollars = |m: fleet_core::Money| m.micros() as f64 / 1e6;
    // Burn over time.
    {
        let root = SVGBackend::new(&paths[0], (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = reports.iter().map(|r| hours(r.duration_s)).fold(1e-3, f64::max);
        let y_max = reports.iter().map(|r| dollars(r.max_burn_per_hour)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{title}: burn by policy ($/hour)"), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart.configure_mesh().x_desc("hours").y_desc("$ per hour").draw().map_err(err)?;
        for (k, r) in reports.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let pts = thin(&r.timeline, |s| u32::try_from(s.burn_per_hour.micros() / 1000).unwrap_or(u32::MAX));
            chart
                .draw_series(LineSeries::new(pts.iter().map(|s| (hours(s.t_s), dollars(s.burn_per_hour))), &colour))
                .map_err(err)?
                .label(format!("{} ({})", r.scenario, r.cost.cents()))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    wait_cdf_chart(&format!("{title}: queue wait CDF by policy"), reports, &paths[1])?;
    Ok(paths)
}

/// 201 points of the CDF of `waits_ms`, in seconds.
pub(crate) fn cdf(waits_ms: &[u32]) -> Vec<(f64, f64)> {
    let mut w = waits_ms.to_vec();
    w.sort_unstable();
    let n = w.len().max(1);
    (0..=200)
        .filter_map(|i| w.get(((i * (n - 1)) / 200).min(n - 1)).map(|x| (*x as f64 / 1000.0, i as f64 / 200.0)))
        .collect()
}

fn hours(t_s: u64) -> f64 {
    t_s as f64 / 3600.0
}

/// At most ~2,000 points per line: every n-th sample, keeping the peaks of demand.
fn thin<T: Clone>(v: &[T], key: impl Fn(&T) -> u32) -> Vec<T> {
    let step = v.len().div_ceil(2000).max(1);
    v.chunks(step).filter_map(|c| c.iter().max_by_key(|x| key(x)).cloned()).collect()
}

/// Demand and capacity over time, as `pick` reads them from each sample (the fleet's, or one
/// app's), titled `title`.
fn demand_vs_capacity(
    r: &Report,
    path: &Path,
    title: &str,
    pick: impl Fn(&crate::report::Sample) -> (u32, u32),
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let all: Vec<(u64, u32, u32)> = r
        .timeline
        .iter()
        .map(|s| {
            let (d, c) = pick(s);
            (s.t_s, d, c)
        })
        .collect();
    let pts = thin(&all, |&(_, d, c)| d.max(c));
    let x_max = hours(r.duration_s).max(1e-3);
    let y_max = pts.iter().map(|&(_, d, c)| d.max(c)).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: demand vs capacity"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart.configure_mesh().x_desc("hours").y_desc("concurrent requests").draw().map_err(err)?;
    chart
        .draw_series(LineSeries::new(pts.iter().map(|&(t, d, _)| (hours(t), f64::from(d))), &COLOURS[3]))
        .map_err(err)?
        .label("demand (queued + in flight)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], COLOURS[3]));
    chart
        .draw_series(LineSeries::new(pts.iter().map(|&(t, _, c)| (hours(t), f64::from(c))), &COLOURS[0]))
        .map_err(err)?
        .label("capacity (ready runners × multiplexing)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], COLOURS[0]));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

fn burn_by_cloud(r: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut clouds: Vec<String> = r.burn_by_cloud.iter().flat_map(|s| s.burn_per_hour.keys().cloned()).collect();
    clouds.sort();
    clouds.dedup();
    let dollars = |m: fleet_core::Money| m.micros() as f64 / 1e6;
    let totals: Vec<f64> =
        r.burn_by_cloud.iter().map(|s| s.burn_per_hour.values().map(|m| dollars(*m)).sum()).collect();
    let y_max = totals.iter().cloned().fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: burn by cloud ($/hour, stacked)", r.scenario), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..hours(r.duration_s).max(1e-3), 0f64..y_max)
        .map_err(err)?;
    chart.configure_mesh().x_desc("hours").y_desc("$ per hour").draw().map_err(err)?;
    // Draw the top of each stack first, so lower clouds paint over the upper ones' areas.
    for (k, cloud) in clouds.iter().enumerate().rev() {
        let upto = &clouds[..=k];
        let series = r.burn_by_cloud.iter().map(|s| {
            (hours(s.t_s), upto.iter().map(|c| s.burn_per_hour.get(c).map(|m| dollars(*m)).unwrap_or(0.0)).sum::<f64>())
        });
        let colour = COLOURS[k % COLOURS.len()];
        chart
            .draw_series(AreaSeries::new(series, 0.0, colour.mix(0.6)).border_style(colour))
            .map_err(err)?
            .label(cloud.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

fn wait_cdf(r: &Report, path: &Path) -> anyhow::Result<()> {
    wait_cdf_chart(&format!("{}: queue wait CDF", r.scenario), &[r], path)
}

/// Waits shorter than this are drawn at it: a log axis has no zero, and below 10 ms a wait is
/// nothing a person notices.
const WAIT_FLOOR_S: f64 = 0.01;

/// The wait CDF of each report on a log time axis (waits span milliseconds to many minutes),
/// with each run's p50 and p99 marked and labelled; the legend gives its max wait and SLO share.
fn wait_cdf_chart(title: &str, reports: &[&Report], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let floor = |s: f64| s.max(WAIT_FLOOR_S);
    let cdfs: Vec<Vec<(f64, f64)>> =
        reports.iter().map(|r| cdf(&r.waits_ms).into_iter().map(|(x, y)| (floor(x), y)).collect()).collect();
    let longest = reports.iter().map(|r| r.wait_max_s).fold(1.0, f64::max);
    // Whole decades, so the ticks fall on 0.01 s, 0.1 s, 1 s, 10 s …
    let x_max = 10f64.powf(longest.log10().floor() + 1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((WAIT_FLOOR_S..x_max).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(format!("wait (s, log scale; waits under {WAIT_FLOOR_S} s drawn at {WAIT_FLOOR_S} s)"))
        .y_desc("share of requests served within")
        .x_label_formatter(&|x| if *x >= 1.0 { format!("{x:.0}") } else { format!("{x}") })
        .draw()
        .map_err(err)?;
    for (k, (r, pts)) in reports.iter().zip(cdfs).enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts, &colour))
            .map_err(err)?
            .label(format!(
                "{} ({:.1}% ≤ {}s, max {:.1}s)",
                r.scenario,
                r.slo_attainment * 100.0,
                r.slo_wait_s,
                r.wait_max_s
            ))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
        // p50 and p99: a dot on the curve and the figure beside it.
        for (name, q, exact) in [("p50", 0.5, r.wait_p50_s), ("p99", 0.99, r.wait_p99_s)] {
            let at = floor(exact);
            chart.draw_series(std::iter::once(Circle::new((at, q), 4, colour.filled()))).map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{name} {}", seconds(exact)),
                    (at, q - 0.04 - 0.05 * k as f64),
                    ("sans-serif", 13).into_font().color(&colour),
                )))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// `0.004 s`, `1.2 s`, `95 s`.
fn seconds(s: f64) -> String {
    if s == 0.0 {
        "0 s".to_string()
    } else if s < 1.0 {
        format!("{s:.3} s")
    } else if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

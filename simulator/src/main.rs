//! fleetsim: what would this fleet spec cost, and how would it serve, on this demand?

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fleet_simulator::report::Report;
use fleet_simulator::scenario::Scenario;

#[derive(Parser)]
#[command(name = "fleetsim", version, about = "Replay demand against real prices with fleet's own policies.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario.
    #[command(
        after_help = "Examples:\n  fleetsim run simulator/examples/code-trace.toml --plots plots/\n  fleetsim run simulator/examples/poisson.toml --seed 7 -o json\n  fleetsim run simulator/examples/diurnal.toml --baselines --html report.html"
    )]
    Run {
        scenario: PathBuf,
        /// Use this Azure trace instead of the scenario's demand source (one demand only).
        #[arg(long)]
        trace: Option<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Write demand_vs_capacity.svg, burn_by_cloud.svg and wait_cdf.svg here.
        #[arg(long, value_name = "DIR")]
        plots: Option<PathBuf>,
        /// Write one self-contained page with the run's charts here (opens with no network).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Also run the baselines (static-peak, target-qps) and the hindsight oracle on the same
        /// demand, side by side in the table and the page.
        #[arg(long)]
        baselines: bool,
        /// For a scenario with a weights table: nodes without fleet's cache and peers (each fetches the
        /// model from the origin), to set beside the same run with them.
        #[arg(long)]
        no_cache: bool,
    },
    /// Run several scenarios on the same demand and seed, side by side.
    #[command(
        after_help = "Examples:\n  fleetsim compare simulator/examples/poisson.toml simulator/examples/poisson-on-demand.toml\n  fleetsim compare --baselines simulator/examples/diurnal.toml --plots plots/"
    )]
    Compare {
        #[arg(required = true, num_args = 1..)]
        scenarios: Vec<PathBuf>,
        /// Each scenario under its spec's policies, the baselines `static-peak` (a fixed fleet for
        /// the peak) and `target-qps` (replicas from the request rate, with a cooldown), and the
        /// hindsight `oracle` (knows every arrival; pays whole nodes, cold starts, billing).
        #[arg(long)]
        baselines: bool,
        #[arg(long)]
        seed: Option<u64>,
        /// Write burn_by_policy.svg and wait_cdf_by_policy.svg here (one folder per scenario,
        /// named after it, when several are compared with --baselines).
        #[arg(long, value_name = "DIR")]
        plots: Option<PathBuf>,
        /// Write one self-contained page with every run side by side here (the first run's
        /// charts, and each run's burn and waits).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

fn load(path: &Path, seed: Option<u64>, trace: Option<&PathBuf>) -> anyhow::Result<Scenario> {
    let mut sc = Scenario::load(path)?;
    if let Some(s) = seed {
        sc.seed = s;
    }
    if let Some(t) = trace {
        let [d] = sc.demands.as_mut_slice() else {
            anyhow::bail!(
                "--trace: {} has {} demands; give each its trace in the scenario file instead",
                path.display(),
                sc.demands.len()
            );
        };
        d.source = fleet_simulator::scenario::DemandSource::Trace { path: t.clone(), tile: false };
    }
    Ok(sc)
}

fn out(s: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_all(s.as_bytes())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = (|| {
        match cli.command {
            Command::Run { scenario, trace, seed, output, plots, html, baselines, no_cache } => {
                let mut sc = load(&scenario, seed, trace.as_ref())?;
                if no_cache {
                    match &mut sc.weights {
                        Some(w) => {
                            w.cache = false;
                            sc.name = format!("{} no-cache", sc.name);
                        }
                        None => anyhow::bail!(
                            "--no-cache: {} has no [weights] table, so nothing is fetched; add one (size_gb = …) to model where weights come from",
                            scenario.display()
                        ),
                    }
                }
                let reports = if baselines {
                    fleet_simulator::baselines(&sc)?
                } else {
                    vec![fleet_simulator::run_with_progress(&sc, &mut fleet_simulator::progress_bar(&sc.name))?]
                };
                let r = &reports[0];
                if let Some(dir) = plots {
                    for p in fleet_simulator::plots::write(r, &dir)? {
                        eprintln!("wrote {}", p.display());
                    }
                }
                if let Some(file) = html {
                    fleet_simulator::html::write(&reports.iter().collect::<Vec<_>>(), &file)?;
                    eprintln!("wrote {}", file.display());
                }
                match output {
                    Output::Json if baselines => out(&format!("{}\n", serde_json::to_string_pretty(&reports)?))?,
                    Output::Json => out(&format!("{}\n", r.to_json()))?,
                    Output::Table => out(&Report::table(&reports.iter().collect::<Vec<_>>()))?,
                }
            }
            Command::Compare { scenarios, seed, output, baselines: true, plots, html } => {
                let mut reports = Vec::new();
                for p in &scenarios {
                    let sc = load(p, seed, None)?;
                    reports.extend(fleet_simulator::baselines(&sc)?);
                }
                if let Some(dir) = &plots {
                    for four in reports.chunks(4) {
                        let d = if scenarios.len() > 1 { dir.join(&four[0].scenario) } else { dir.clone() };
                        for p in fleet_simulator::plots::compare(&four.iter().collect::<Vec<_>>(), &d)? {
                            eprintln!("wrote {}", p.display());
                        }
                    }
                }
                if let Some(file) = &html {
                    fleet_simulator::html::write(&reports.iter().collect::<Vec<_>>(), file)?;
                    eprintln!("wrote {}", file.display());
                }
                match output {
                    Output::Json => out(&format!("{}\n", serde_json::to_string_pretty(&reports)?))?,
                    Output::Table => {
                        out(&Report::table(&reports.iter().collect::<Vec<_>>()))?;
                        for four in reports.chunks(4) {
                            let ratio = |r: &Report| four[0].cost.micros() as f64 / r.cost.micros().max(1) as f64;
                            out(&format!(
                                "{}: its own policies cost {:.2}× the oracle's, {:.2}× static-peak's and {:.2}× target-qps's\n",
                                four[0].scenario,
                                ratio(&four[3]),
                                ratio(&four[1]),
                                ratio(&four[2])
                            ))?;
                        }
                    }
                }
            }
            Command::Compare { scenarios, seed, output, baselines: false, plots, html } => {
                let mut reports = Vec::new();
                let mut first_demand = None;
                for p in &scenarios {
                    let mut sc = load(p, seed, None)?;
                    // Same demand for all: the first scenario's.
                    let d = first_demand.get_or_insert_with(|| sc.demands.clone());
                    if let Some(missing) = d.iter().find(|d| sc.spec.app(&d.app).is_none()) {
                        anyhow::bail!(
                            "{}: its spec has no app '{}', which the first scenario's demand drives; compare specs that share the demand's apps",
                            p.display(),
                            missing.app
                        );
                    }
                    sc.demands = d.clone();
                    if let Some(s) = seed.or(reports.first().map(|r: &Report| r.seed)) {
                        sc.seed = s;
                    }
                    reports
                        .push(fleet_simulator::run_with_progress(&sc, &mut fleet_simulator::progress_bar(&sc.name))?);
                }
                if let Some(dir) = &plots {
                    for p in fleet_simulator::plots::compare(&reports.iter().collect::<Vec<_>>(), dir)? {
                        eprintln!("wrote {}", p.display());
                    }
                }
                if let Some(file) = &html {
                    fleet_simulator::html::write(&reports.iter().collect::<Vec<_>>(), file)?;
                    eprintln!("wrote {}", file.display());
                }
                match output {
                    Output::Json => out(&format!("{}\n", serde_json::to_string_pretty(&reports)?))?,
                    Output::Table => out(&Report::table(&reports.iter().collect::<Vec<_>>()))?,
                }
            }
        }
        Ok(())
    })();
    fleet_core::exit::finish(result)
}

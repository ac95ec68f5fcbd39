//! `fleetctl simulate`: the capacity simulator (`fleetsim run`) from the operator CLI.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fleet_simulator::report::Report;
use fleet_simulator::scenario::Scenario;

use crate::Output;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fleetctl simulate simulator/examples/code-trace.toml
  fleetctl simulate simulator/examples/poisson.toml --seed 7 -o json
  fleetctl simulate simulator/examples/code-trace.toml --plots plots/")]
pub struct SimulateArgs {
    /// The scenario (TOML; see simulator/examples/).
    scenario: PathBuf,
    #[arg(long)]
    seed: Option<u64>,
    /// Write the plots (SVG) into this folder.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
}

pub fn run(args: SimulateArgs, output: Output) -> Result<()> {
    let mut sc = Scenario::load(&args.scenario)?;
    if let Some(s) = args.seed {
        sc.seed = s;
    }
    let r = fleet_simulator::run_with_progress(&sc, &mut fleet_simulator::progress_bar(&sc.name))?;
    if let Some(dir) = &args.plots {
        for p in fleet_simulator::plots::write(&r, dir)? {
            eprintln!("wrote {}", p.display());
        }
    }
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", r.to_json())?,
        Output::Yaml => crate::output::print(&serde_json::from_str(&r.to_json())?, true),
        Output::Table => write!(out, "{}", Report::table(&[&r]))?,
        Output::Csv => anyhow::bail!("-o csv is for `fleetctl catalog`; use -o table or -o json with simulate"),
    }
    Ok(())
}

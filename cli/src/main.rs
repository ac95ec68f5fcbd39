//! fleetctl: the operator CLI for fleet.

mod catalog;
mod plan;
mod simulate;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about = "Operate a fleet of rented GPUs across clouds.")]
struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    /// fleet's catalog CSV format (catalog only).
    Csv,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List rentable GPU offerings with prices, cheapest $/GPU-hour first.
    Catalog(catalog::CatalogArgs),
    /// Show what fleet would rent for a spec and a demand: ranked offerings, runners, nodes, costs.
    Plan(plan::PlanArgs),
    /// Simulate a fleet spec on a demand trace: cost, waits, preemptions, lower bound.
    Simulate(simulate::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Catalog(args) => catalog::run(args, cli.output),
        Command::Plan(args) => plan::run(args, cli.output),
        Command::Simulate(args) => simulate::run(args, cli.output),
    };
    fleet_core::exit::finish(result)
}

//! fleetctl: the operator CLI for fleet.

mod catalog;
mod nodes;
mod plan;
mod server;
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
    /// List resources of a running fleetd.
    #[command(
        after_help = "Examples:\n  fleetctl get nodes\n  fleetctl get nodes -o json --server http://10.0.0.5:7070"
    )]
    Get {
        #[command(subcommand)]
        what: GetWhat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one resource of a running fleetd in detail.
    #[command(after_help = "Example:\n  fleetctl describe node 12")]
    Describe {
        #[command(subcommand)]
        what: DescribeWhat,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// fleetd's address.
    #[arg(long, env = "FLEET_SERVER", default_value = "http://127.0.0.1:7070", global = true)]
    server: String,
}

#[derive(Debug, Subcommand)]
enum GetWhat {
    /// Nodes with their state, offering and what their agents report.
    Nodes,
}

#[derive(Debug, Subcommand)]
enum DescribeWhat {
    /// A node: record, agent, GPUs, burn-in, runners, interruption notice.
    Node { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Catalog(args) => catalog::run(args, cli.output),
        Command::Plan(args) => plan::run(args, cli.output),
        Command::Simulate(args) => simulate::run(args, cli.output),
        Command::Get { what: GetWhat::Nodes, server } => nodes::get(&server::Server::new(&server.server), cli.output),
        Command::Describe { what: DescribeWhat::Node { id }, server } => {
            nodes::describe(&server::Server::new(&server.server), &id, cli.output)
        }
    };
    fleet_core::exit::finish(result)
}

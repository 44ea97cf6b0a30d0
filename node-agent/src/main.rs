//! `halyard-agent`: Halyard's node agent (a skeleton for now).

use clap::Parser;

/// Halyard's node agent: serves X509-SVIDs to Envoy over SDS and to workloads over the SPIFFE
/// Workload API. Not functional yet: only `--help` and `--version` work.
#[derive(Debug, Parser)]
#[command(name = "halyard-agent", version, about)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
    eprintln!("halyard-agent: the node agent is not implemented yet; see README.md");
    std::process::exit(2);
}

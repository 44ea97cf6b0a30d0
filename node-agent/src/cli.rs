//! The `halyard-agent` command line.

mod fetch;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Halyard's node agent: serves X509-SVIDs to Envoy over SDS and to workloads over the SPIFFE
/// Workload API.
#[derive(Debug, Parser)]
#[command(name = "halyard-agent", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent.
    Run(Box<run::RunArgs>),
    /// Workload API client commands.
    #[command(subcommand)]
    Api(fetch::ApiCommand),
    /// Check that the agent answers on its socket; exit 0 when it does.
    Healthcheck(fetch::HealthArgs),
}

impl Cli {
    /// Runs the command; errors go to stderr.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Run(args) => args.run(),
            Command::Api(command) => runtime().and_then(|rt| rt.block_on(command.run())),
            Command::Healthcheck(args) => runtime().and_then(|rt| rt.block_on(args.run())),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("halyard-agent: error: {message}");
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

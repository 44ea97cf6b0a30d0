//! The `halyard-ca` command line.

mod admin;
mod audit;
mod authority;
mod ceremony;
mod kubernetes;
mod serve;

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

/// Halyard's certificate authority.
#[derive(Debug, Parser)]
#[command(name = "halyard-ca", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The offline root: create it, sign intermediates with it.
    #[command(subcommand)]
    Root(ceremony::RootCommand),
    /// The intermediate: its key and CSR, and importing its certificate.
    #[command(subcommand)]
    Intermediate(ceremony::IntermediateCommand),
    /// Sign one workload CSR with the data dir's intermediate (offline, one-shot).
    Sign(ceremony::SignArgs),
    /// Run the CA server.
    Serve(Box<serve::ServeArgs>),
    /// Join tokens for node attestation (admin socket).
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Registration entries (admin socket).
    #[command(subcommand)]
    Entry(admin::EntryCommand),
    /// Attested nodes: list them, ban one (admin socket).
    #[command(subcommand)]
    Node(admin::NodeCommand),
    /// Revoke one certificate, or every unexpired certificate of an identity (admin socket).
    Revoke(admin::RevokeArgs),
    /// Signing authorities (intermediates): list, prepare, activate, taint (admin socket).
    #[command(subcommand)]
    Authority(authority::AuthorityCommand),
    /// The trust bundle: show it, add or remove a root (admin socket).
    #[command(subcommand)]
    Bundle(admin::BundleCommand),
    /// The issuance journal, read from the store itself (no running CA needed).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Ask the running CA whether it is ready (admin socket); exit 0 when it is.
    Healthcheck(admin::AdminTarget),
    /// Kubernetes: print the CRDs of Halyard's cert-manager issuers.
    #[command(subcommand)]
    Kube(kubernetes::KubeCommand),
}

impl Cli {
    /// Runs the command, printing what it did to stdout and any error to stderr.
    pub fn run(self) -> ExitCode {
        match self.execute() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("halyard-ca: error: {message}");
                ExitCode::FAILURE
            }
        }
    }

    fn execute(self) -> Result<(), String> {
        let now = SystemTime::now();
        match self.command {
            Command::Root(command) => command.run(now),
            Command::Intermediate(command) => command.run(now),
            Command::Sign(args) => args.run(now),
            Command::Serve(args) => args.run(),
            Command::Token(command) => runtime()?.block_on(command.run()),
            Command::Entry(command) => runtime()?.block_on(command.run()),
            Command::Bundle(command) => runtime()?.block_on(command.run()),
            Command::Authority(command) => runtime()?.block_on(command.run()),
            Command::Node(command) => runtime()?.block_on(command.run()),
            Command::Revoke(args) => runtime()?.block_on(args.run()),
            Command::Audit(command) => runtime()?.block_on(command.run()),
            Command::Healthcheck(target) => runtime()?.block_on(admin::healthcheck(target)),
            Command::Kube(command) => command.run(),
        }
    }
}

/// A small runtime for commands that talk to the CA or the store.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

//! `halyard-ca kube crds`: the CRDs, generated from the Rust types.

use clap::Subcommand;

/// Kubernetes commands.
#[derive(Debug, Subcommand)]
pub(super) enum KubeCommand {
    /// Print the CRDs of HalyardIssuer and HalyardClusterIssuer as YAML (what
    /// deploy/crds/halyard.dev.yaml holds): `halyard-ca kube crds | kubectl apply -f -`.
    Crds,
}

impl KubeCommand {
    pub(super) fn run(self) -> Result<(), String> {
        match self {
            KubeCommand::Crds => {
                print!("{}", crate::kube::issuer::crds_yaml()?);
                Ok(())
            }
        }
    }
}

//! Kubernetes: where Halyard meets the clusters it serves.
//!
//! - [`token_review`] authenticates service-account tokens (Istio's `authorization: Bearer`,
//!   node agents' projected tokens) through the TokenReview API, one call per token and audience
//!   until the token expires.
//! - [`issuer`] is the cert-manager external issuer: `HalyardIssuer` and `HalyardClusterIssuer`
//!   sign `CertificateRequest`s through [`crate::server::Ca::issue`].
//! - [`csr_signer`] is the Kubernetes CSR signer `halyard.dev/spiffe`: approved
//!   `CertificateSigningRequest`s (Istio's `ISTIOD_RA_KUBERNETES_API`) are signed through the same
//!   [`crate::server::Ca::issue`].
//! - [`leader`] elects one of the CA's replicas, by a Lease, to run the issuer and the signer.
//! - [`pods`] is the pod index: which service accounts run on which node, so that a node agent
//!   (or ztunnel impersonating a workload) obtains only the identities of its own node's pods.
//!
//! Everything here talks to the API server through one [`kube::Client`], the seam at which
//! tests put a mock API server. Every call Halyard makes to it is listed in [`API_CALLS`]
//! ([`api_calls`]), from which `deploy/`'s RBAC is checked.

pub mod api_calls;
pub mod csr_signer;
pub mod issuer;
pub mod leader;
pub mod pods;
pub mod token_review;

#[cfg(test)]
pub(crate) mod mock;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use api_calls::{API_CALLS, ApiCall, Component, Scope, When};
pub use pods::{PodIndex, PodIndexError};
pub use token_review::{ServiceAccount, TokenError, TokenPolicy, TokenReviewer};

/// A client for the API server: from `kubeconfig` when given, else in-cluster (the pod's service
/// account) or the usual kubeconfig, as `kubectl` finds them.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration (in-cluster or kubeconfig): {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

//! `halyard-ca serve --config FILE | --dev`: every config key is also a flag.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AwsPcaFile, ConfigFile, KubernetesFile};
use crate::upstream::{CaArn, SigningAlgorithm};

/// `serve`'s flags: a config file or `--dev`, and any key of the file as a flag.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// TOML configuration file (see deploy/halyard-ca.toml).
    #[arg(long, required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Development mode: needs no file; makes a root and intermediate in the data directory
    /// (the root key stays there: never for a real trust domain), listens on 127.0.0.1.
    #[arg(long)]
    dev: bool,
    /// Benchmarks only: hand certificates out without journaling them, to measure what the
    /// journal costs. Needs --dev; never for a CA anyone trusts.
    #[arg(long, hide = true, requires = "dev")]
    unjournaled_for_benchmarks: bool,
    /// Trust domain served.
    #[arg(long)]
    trust_domain: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://…
    #[arg(long)]
    store_url: Option<String>,
    /// gRPC over TLS listen address.
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// HTTP (metrics, health) listen address.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Admin socket path.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// DNS names for the server's own certificate (repeatable).
    #[arg(long = "server-dns-name")]
    server_dns_names: Vec<String>,
    /// IP addresses for the server's own certificate (repeatable).
    #[arg(long = "server-ip-address")]
    server_ip_addresses: Vec<IpAddr>,
    /// Default workload certificate lifetime.
    #[arg(long)]
    default_ttl: Option<String>,
    /// Maximum workload certificate lifetime.
    #[arg(long)]
    max_ttl: Option<String>,
    /// Default join token lifetime.
    #[arg(long)]
    join_token_ttl: Option<String>,
    /// Most CSRs per batch.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Most signatures in flight.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Certificates per second per node.
    #[arg(long)]
    node_rate_limit: Option<u32>,
    /// Certificates per MINUTE per SPIFFE ID, across every node and API (default 60).
    #[arg(long)]
    identity_rate_limit: Option<u32>,
    /// Certificates one SPIFFE ID may be issued at once (default 1000).
    #[arg(long)]
    identity_rate_burst: Option<u32>,
    /// Journal retention after expiry.
    #[arg(long)]
    journal_retention: Option<String>,
    /// Put a CRL distribution point `<URL>/<authority>.crl` in every leaf.
    #[arg(long)]
    crl_base_url: Option<String>,
    /// Where the intermediate comes from: offline (imported; the default) or aws-pca.
    #[arg(long)]
    upstream: Option<String>,
    /// [aws_pca] ca_arn: the AWS Private CA that signs the intermediate.
    #[arg(long = "aws-pca-ca-arn")]
    aws_pca_ca_arn: Option<CaArn>,
    /// [aws_pca] region (default: the CA ARN's).
    #[arg(long = "aws-pca-region")]
    aws_pca_region: Option<String>,
    /// [aws_pca] signing_algorithm, e.g. SHA256WITHECDSA (default: what fits the CA's key).
    #[arg(long = "aws-pca-signing-algorithm")]
    aws_pca_signing_algorithm: Option<SigningAlgorithm>,
    /// [aws_pca] template_arn (default: SubordinateCACertificate_PathLen0/V1).
    #[arg(long = "aws-pca-template-arn")]
    aws_pca_template_arn: Option<String>,
    /// [aws_pca] endpoint_url: a VPC endpoint, or an emulator.
    #[arg(long = "aws-pca-endpoint-url")]
    aws_pca_endpoint_url: Option<String>,
    /// [aws_pca] intermediate_ttl (default 7d).
    #[arg(long = "aws-pca-intermediate-ttl")]
    aws_pca_intermediate_ttl: Option<String>,
    /// [aws_pca] max_issue_rate: PCA calls per second at most (default 5).
    #[arg(long = "aws-pca-max-issue-rate")]
    aws_pca_max_issue_rate: Option<NonZeroU32>,
    /// [aws_pca] extra_roots: a PEM file of further roots to trust (repeatable).
    #[arg(long = "aws-pca-extra-root")]
    aws_pca_extra_roots: Vec<PathBuf>,
    /// [kubernetes] enabled: authenticate service-account tokens with TokenReview and run the
    /// cert-manager issuer.
    #[arg(long = "kubernetes")]
    kubernetes: bool,
    /// [kubernetes] istio_audience: audience of tokens on Istio's CSR API (default istio-ca).
    #[arg(long = "kubernetes-istio-audience")]
    kubernetes_istio_audience: Option<String>,
    /// [kubernetes] node_audience: audience of node agents' tokens (default halyard-ca).
    #[arg(long = "kubernetes-node-audience")]
    kubernetes_node_audience: Option<String>,
    /// [kubernetes] agent_service_accounts: NAMESPACE/NAME of the node agents' service account
    /// (repeatable; default halyard/halyard-agent).
    #[arg(long = "kubernetes-agent-service-account")]
    kubernetes_agent_service_accounts: Vec<String>,
    /// [kubernetes] ztunnel_service_accounts: NAMESPACE/NAME of ztunnel's service account, which
    /// may impersonate the pods of its node (repeatable; default istio-system/ztunnel).
    #[arg(long = "kubernetes-ztunnel-service-account")]
    kubernetes_ztunnel_service_accounts: Vec<String>,
    /// [kubernetes] kubeconfig: a kubeconfig file (default: in-cluster, else the usual one).
    #[arg(long = "kubeconfig")]
    kubeconfig: Option<PathBuf>,
    /// [kubernetes] cert_manager_issuer: run the cert-manager issuer (default true).
    #[arg(long = "kubernetes-cert-manager-issuer")]
    kubernetes_cert_manager_issuer: Option<bool>,
    /// [kubernetes] csr_signer: sign approved CertificateSigningRequests for the signer
    /// halyard.dev/spiffe (default true).
    #[arg(long = "kubernetes-csr-signer")]
    kubernetes_csr_signer: Option<bool>,
}

impl ServeArgs {
    fn flags(&self) -> ConfigFile {
        ConfigFile {
            trust_domain: self.trust_domain.clone(),
            data_dir: self.data_dir.clone(),
            store_url: self.store_url.clone(),
            grpc_listen: self.grpc_listen,
            http_listen: self.http_listen,
            admin_socket: self.admin_socket.clone(),
            server_dns_names: (!self.server_dns_names.is_empty())
                .then(|| self.server_dns_names.clone()),
            server_ip_addresses: (!self.server_ip_addresses.is_empty())
                .then(|| self.server_ip_addresses.clone()),
            default_ttl: self.default_ttl.clone(),
            max_ttl: self.max_ttl.clone(),
            join_token_ttl: self.join_token_ttl.clone(),
            max_batch: self.max_batch,
            max_in_flight: self.max_in_flight,
            node_rate_limit: self.node_rate_limit,
            identity_rate_limit: self.identity_rate_limit,
            identity_rate_burst: self.identity_rate_burst,
            journal_retention: self.journal_retention.clone(),
            crl_base_url: self.crl_base_url.clone(),
            upstream: self.upstream.clone(),
            aws_pca: Some(self.aws_pca_flags()).filter(|table| !table.is_empty()),
            kubernetes: Some(self.kubernetes_flags()).filter(|table| !table.is_empty()),
        }
    }

    fn kubernetes_flags(&self) -> KubernetesFile {
        KubernetesFile {
            enabled: self.kubernetes.then_some(true),
            istio_audience: self.kubernetes_istio_audience.clone(),
            node_audience: self.kubernetes_node_audience.clone(),
            agent_service_accounts: (!self.kubernetes_agent_service_accounts.is_empty())
                .then(|| self.kubernetes_agent_service_accounts.clone()),
            ztunnel_service_accounts: (!self.kubernetes_ztunnel_service_accounts.is_empty())
                .then(|| self.kubernetes_ztunnel_service_accounts.clone()),
            kubeconfig: self.kubeconfig.clone(),
            cert_manager_issuer: self.kubernetes_cert_manager_issuer,
            csr_signer: self.kubernetes_csr_signer,
        }
    }

    fn aws_pca_flags(&self) -> AwsPcaFile {
        AwsPcaFile {
            ca_arn: self.aws_pca_ca_arn.clone(),
            region: self.aws_pca_region.clone(),
            signing_algorithm: self.aws_pca_signing_algorithm,
            template_arn: self.aws_pca_template_arn.clone(),
            endpoint_url: self.aws_pca_endpoint_url.clone(),
            intermediate_ttl: self.aws_pca_intermediate_ttl.clone(),
            max_issue_rate: self.aws_pca_max_issue_rate,
            extra_roots: (!self.aws_pca_extra_roots.is_empty())
                .then(|| self.aws_pca_extra_roots.clone()),
        }
    }

    pub(super) fn run(self) -> Result<(), String> {
        let (file, source) = match &self.config {
            Some(path) => (
                ConfigFile::read(path).map_err(|e| e.to_string())?,
                path.display().to_string(),
            ),
            None => (ConfigFile::default(), "flags".to_owned()),
        };
        let mut config = file
            .overlay(self.flags())
            .resolve(&source, self.dev)
            .map_err(|e| e.to_string())?;
        if self.unjournaled_for_benchmarks {
            warn!("--unjournaled-for-benchmarks: certificates are NOT journaled (benchmarks only)");
            config.journal = false;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        runtime.block_on(async {
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                info!("shutting down");
                on_signal.cancel();
            });
            crate::server::run(config, shutdown)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

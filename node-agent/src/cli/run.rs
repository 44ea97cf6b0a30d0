//! `halyard-agent run --config FILE | flags`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use halyard_proto::Ttl;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::attest::{ApiServerPods, Attestor, KubernetesAttestor, UnixAttestor};
use crate::cache::{Cache, CacheOptions, TrustState};
use crate::caller::AgentState;
use crate::node::{CaEndpoint, NodeClient, NodeCredential, RemoteSigner, watch_trust};

/// Where Kubernetes mode looks for the projected service-account token when no
/// `--node-token-file` is given: a `serviceAccountToken` projection with path `halyard-ca`
/// (the audience) in a volume mounted at `/var/run/secrets/tokens`, as `deploy/` does.
const DEFAULT_NODE_TOKEN_FILE: &str = "/var/run/secrets/tokens/halyard-ca";

/// The agent's settings: a TOML file with these keys, each also a flag (flags win).
#[derive(Debug, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub(super) struct RunArgs {
    /// TOML file with any of the keys below.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The CA, e.g. https://127.0.0.1:8443.
    #[arg(long)]
    ca_address: Option<String>,
    /// PEM roots to trust for the CA's certificate (the CA's bundle.pem).
    #[arg(long)]
    trust_bundle: Option<PathBuf>,
    /// A join token from `halyard-ca token create` (needed only until the node SVID is stored).
    #[arg(
        long,
        env = "HALYARD_JOIN_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    join_token: Option<String>,
    /// The socket for SDS and the Workload API.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Where the node SVID and key are kept.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Lifetime to ask for workload certificates (default: the entry's or the CA's).
    #[arg(long)]
    ttl: Option<String>,
    /// Certificates signed by a tainted authority are replaced at random moments within this
    /// window, e.g. 30s (the default).
    #[arg(long)]
    taint_spread: Option<String>,
    /// Kubernetes mode: also attest callers by their pod (k8s:ns, k8s:sa, k8s:pod-label, …,
    /// from a watch on this node's pods), give each pod its service account's identity
    /// spiffe://TD/ns/NS/sa/SA without an entry, and attest the node with a projected token.
    #[arg(long)]
    #[serde(default)]
    kubernetes: bool,
    /// This node's Kubernetes name (default: the name in the node SVID).
    #[arg(long, env = "HALYARD_NODE_NAME")]
    node_name: Option<String>,
    /// A projected service-account token (audience halyard-ca) to attest the node with instead
    /// of a join token, read afresh at every attestation (default in Kubernetes mode:
    /// /var/run/secrets/tokens/halyard-ca).
    #[arg(long)]
    node_token_file: Option<PathBuf>,
}

impl RunArgs {
    fn merged(self) -> Result<RunArgs, String> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let file: RunArgs = toml::from_str(&text).map_err(|e| {
            format!(
                "config file {}: {}",
                path.display(),
                e.to_string().trim_end().replace('\n', " ")
            )
        })?;
        // Parsed again below; here so that a bad value names the file it came from.
        for (key, value) in [("ttl", &file.ttl), ("taint_spread", &file.taint_spread)] {
            if let Some(value) = value {
                value
                    .parse::<Ttl>()
                    .map_err(|e| format!("config file {}: {key}: {e}", path.display()))?;
            }
        }
        Ok(RunArgs {
            config: self.config,
            ca_address: self.ca_address.or(file.ca_address),
            trust_bundle: self.trust_bundle.or(file.trust_bundle),
            join_token: self.join_token.or(file.join_token),
            socket: self.socket.or(file.socket),
            data_dir: self.data_dir.or(file.data_dir),
            ttl: self.ttl.or(file.ttl),
            taint_spread: self.taint_spread.or(file.taint_spread),
            kubernetes: self.kubernetes || file.kubernetes,
            node_name: self.node_name.or(file.node_name),
            node_token_file: self.node_token_file.or(file.node_token_file),
        })
    }

    pub(super) fn run(self) -> Result<(), String> {
        let args = self.merged()?;
        let ca_address = args
            .ca_address
            .ok_or("--ca-address is required (e.g. https://127.0.0.1:8443)")?;
        let trust_bundle_path = args
            .trust_bundle
            .ok_or("--trust-bundle is required (the CA's bundle.pem)")?;
        let trust_bundle = std::fs::read_to_string(&trust_bundle_path)
            .map_err(|e| format!("--trust-bundle {}: {e}", trust_bundle_path.display()))?;
        crate::node::check_bundle(&trust_bundle)
            .map_err(|why| format!("--trust-bundle {}: {why}", trust_bundle_path.display()))?;
        let socket = args
            .socket
            .unwrap_or_else(|| PathBuf::from("/run/halyard/agent.sock"));
        let data_dir = args
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/halyard-agent"));
        let ttl = args
            .ttl
            .as_deref()
            .map(str::parse::<Ttl>)
            .transpose()
            .map_err(|e| format!("--ttl: {e}"))?;
        let taint_spread = args
            .taint_spread
            .as_deref()
            .map(str::parse::<Ttl>)
            .transpose()
            .map_err(|e| format!("--taint-spread: {e}"))?
            .map_or(CacheOptions::default().taint_spread, Ttl::as_duration);
        let credential = match (args.join_token, args.node_token_file) {
            (Some(_), Some(file)) => {
                return Err(format!(
                    "--join-token and --node-token-file {} both attest the node: give one",
                    file.display()
                ));
            }
            (Some(token), None) => Some(NodeCredential::JoinToken(token)),
            (None, Some(file)) => Some(NodeCredential::TokenFile(file)),
            (None, None) if args.kubernetes => Some(NodeCredential::TokenFile(PathBuf::from(
                DEFAULT_NODE_TOKEN_FILE,
            ))),
            (None, None) => None,
        };
        let kubernetes = args.kubernetes.then_some(args.node_name);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        runtime.block_on(async move {
            let endpoint = CaEndpoint {
                address: ca_address,
                trust_bundle,
                data_dir,
            };
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
            });
            let term = shutdown.clone();
            tokio::spawn(async move {
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                    term.cancel();
                }
            });
            let options = CacheOptions {
                ttl,
                taint_spread,
                ..CacheOptions::default()
            };
            run_agent(
                endpoint,
                credential.as_ref(),
                &socket,
                options,
                kubernetes,
                shutdown,
            )
            .await
        })
    }
}

/// Runs the agent; `kubernetes` is `Some(node name if given)` in Kubernetes mode.
async fn run_agent(
    endpoint: CaEndpoint,
    credential: Option<&NodeCredential>,
    socket: &Path,
    options: CacheOptions,
    kubernetes: Option<Option<String>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let client = NodeClient::join(endpoint, credential)
        .await
        .map_err(|e| e.to_string())?;
    info!(node = %client.svid().spiffe_id, "joined the CA");
    let attestor: Arc<dyn Attestor> = match kubernetes {
        None => Arc::new(UnixAttestor::default()),
        Some(node_name) => {
            let id = client.svid().spiffe_id.clone();
            let node = match node_name {
                Some(name) => name,
                None => id
                    .path()
                    .strip_prefix("/halyard/node/")
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        format!("--kubernetes: the node SVID {id} names no node: give --node-name")
                    })?,
            };
            let kube = kube::Client::try_default().await.map_err(|e| {
                format!(
                    "--kubernetes: no Kubernetes API configuration (in-cluster or KUBECONFIG): {e}"
                )
            })?;
            let pods = ApiServerPods::spawn(kube, &node, shutdown.clone());
            info!(node = %node, "attesting workloads by their pods too");
            Arc::new(KubernetesAttestor::new(
                Arc::new(pods),
                node,
                id.trust_domain().clone(),
            ))
        }
    };
    let (trust_tx, mut trust_rx) = watch::channel(Arc::new(TrustState::default()));
    tokio::spawn(client.clone().keep_renewed(
        trust_rx.clone(),
        options.taint_spread,
        shutdown.clone(),
    ));
    tokio::spawn(watch_trust(client.clone(), trust_tx, shutdown.clone()));
    // Judging callers needs this node's entries: serve only once the first snapshot is here.
    tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        first = trust_rx.wait_for(|state| state.version > 0) => {
            first.map_err(|_| "the trust watcher stopped before the first snapshot".to_owned())?;
        }
    }
    let cache = Cache::spawn(
        Arc::new(RemoteSigner::new(client)),
        trust_rx,
        options,
        shutdown.clone(),
    );
    let state = AgentState { cache, attestor };
    println!(
        "halyard-agent is serving SDS and the Workload API on {}",
        socket.display()
    );
    crate::server::serve(socket, state, shutdown)
        .await
        .map_err(|e| format!("--socket {}: {e}", socket.display()))
}

//! `halyard-ca serve`: the CA as a long-running server.
//!
//! [`Ca`] is the shared state: the active authority, the trust bundle, the store, limits and
//! metrics; [`Ca::issue`] is the one path by which a certificate leaves the CA (sign, then journal,
//! then hand out). [`run`] wires it to the listeners: gRPC over TLS ([`crate::api`]), the admin
//! socket, and HTTP for metrics and health.

mod admin_socket;
mod authorities;
mod dev;
mod http;
mod issue;
mod limits;
mod listen;
mod metrics;
mod node_cache;
mod revocation;
mod tls;
mod upstream;

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use halyard_proto::{SpiffeId, TrustDomain};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::authority::{Authority, Policy, certs_from_pem, verify_chain};
use crate::ceremony::{self, CeremonyError, DataDir};
use crate::config::{Config, Upstream};
use crate::files;
use crate::kube::{PodIndex, TokenPolicy, TokenReviewer};
use crate::store::{Store, StoreError, StoreOptions};

pub use authorities::{AuthoritySet, ChangeError, KnownAuthority, Prepared, RootRemoved};
pub use issue::IssueError;
pub use metrics::Metrics;
pub use revocation::{CRL_VALIDITY, RevocationState, RevokeTarget};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory's CA material is missing or unusable.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// The store could not be opened.
    #[error("store {url}: {source}")]
    Store {
        /// The store URL (without credentials).
        url: String,
        /// Why.
        source: StoreError,
    },
    /// A listener could not be bound or served.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Its address or path.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The authorities could not be loaded.
    #[error("cannot load the authorities: {0}")]
    Authorities(String),
    /// The server's own certificate could not be issued.
    #[error("cannot issue the server's own certificate: {0}")]
    ServingCert(String),
    /// The upstream CA could not be reached or did not deliver a usable intermediate.
    #[error("upstream = \"aws-pca\": {0}")]
    Upstream(String),
    /// Kubernetes is enabled but its API server cannot be configured.
    #[error("[kubernetes]: {0}")]
    Kubernetes(String),
}

/// The CA's shared state.
pub struct Ca {
    config: Config,
    store: Store,
    authorities: RwLock<Arc<AuthoritySet>>,
    /// The active authority's id, for tasks that follow it (the serving certificate).
    active_id: watch::Sender<String>,
    bundle: RwLock<Arc<Vec<Vec<u8>>>>,
    revocations: RwLock<Arc<RevocationState>>,
    trust_version: watch::Sender<u64>,
    metrics: Metrics,
    limits: limits::Limits,
    /// AWS Private CA, when it signs the intermediates.
    upstream: Option<Arc<upstream::PcaUpstream>>,
    /// Nodes' records and entries between signing requests.
    node_cache: node_cache::NodeCache,
}

impl Ca {
    /// Opens the store and loads the data directory's intermediate (creating a development root
    /// and intermediate first in `--dev` mode; with `upstream = "aws-pca"`, having AWS Private
    /// CA issue one when there is no valid intermediate).
    pub async fn open(config: Config) -> Result<Arc<Ca>, ServerError> {
        let data = DataDir::new(&config.data_dir);
        if config.dev {
            dev::bootstrap(&data, &config.trust_domain)?;
        }
        // Offline, the store opens once the data directory's material has been checked.
        let (authority, store, upstream) = match &config.upstream {
            Upstream::Offline => {
                let authority =
                    ceremony::load_authority(&data, policy(&config), SystemTime::now())?;
                (authority, None, None)
            }
            Upstream::AwsPca(pca) => {
                let upstream_error = |e: upstream::PcaError| ServerError::Upstream(e.to_string());
                data.create().map_err(CeremonyError::from)?;
                let store = open_store(&config).await?;
                let upstream =
                    upstream::PcaUpstream::connect(pca.clone(), &data, &config.trust_domain)
                        .await
                        .map_err(upstream_error)?;
                let authority = upstream
                    .starting_authority(&store, &policy(&config))
                    .await
                    .map_err(upstream_error)?;
                (authority, Some(store), Some(Arc::new(upstream)))
            }
        };
        let bundle =
            certs_from_pem(&files::read_public(&data.bundle()).map_err(CeremonyError::from)?)
                .map_err(|reason| CeremonyError::Pem {
                    path: data.bundle(),
                    reason,
                })?;
        let root_index =
            verify_chain(authority.chain(), &bundle, SystemTime::now()).map_err(|source| {
                CeremonyError::Chain {
                    path: data.intermediate_cert(),
                    root: data.bundle(),
                    source: Box::new(source),
                }
            })?;
        let active_root = bundle[root_index].clone();
        let store = match store {
            Some(store) => store,
            None => open_store(&config).await?,
        };
        let metrics = Metrics::new();
        metrics.set_intermediate_expiry(authority.not_after());
        Ok(Arc::new(Ca {
            node_cache: node_cache::NodeCache::new(&store),
            limits: limits::Limits::new(
                config.max_in_flight,
                limits::Rate::new(
                    f64::from(config.node_rate_limit),
                    config.node_rate_limit.saturating_mul(2),
                ),
                limits::Rate::new(
                    f64::from(config.identity_rate_limit) / 60.0,
                    config.identity_rate_burst,
                ),
                std::time::Instant::now(),
            ),
            config,
            store,
            active_id: watch::Sender::new(authority.id().to_owned()),
            authorities: RwLock::new(Arc::new(AuthoritySet {
                active: Arc::new(authority),
                active_root,
                known: Vec::new(),
            })),
            bundle: RwLock::new(Arc::new(bundle)),
            revocations: RwLock::new(Arc::new(RevocationState::default())),
            trust_version: watch::Sender::new(1),
            metrics,
            upstream,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The trust domain served.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A node's record (`None` if it never attested) and its registration entries, as a
    /// signing request needs them: cached until an entry, a ban or a node record changes
    /// (announced between replicas on PostgreSQL), and for at most 5 s.
    pub(crate) async fn node_authorization(
        &self,
        name: &str,
    ) -> Result<node_cache::NodeAuthorization, StoreError> {
        self.node_cache.get(&self.store, name).await
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The active authority.
    pub fn authority(&self) -> Arc<Authority> {
        self.authority_set().active.clone()
    }

    /// Every known authority, and the active one.
    pub fn authority_set(&self) -> Arc<AuthoritySet> {
        // A poisoned lock still holds a valid Arc: a panic cannot leave it half-written.
        self.authorities
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The active authority's id; changes when another authority is activated.
    pub fn watch_active(&self) -> watch::Receiver<String> {
        self.active_id.subscribe()
    }

    /// The issuance policy of every authority.
    pub fn policy(&self) -> Policy {
        policy(&self.config)
    }

    /// The trust bundle: every root, DER.
    pub fn bundle(&self) -> Arc<Vec<Vec<u8>>> {
        self.bundle
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The root the active intermediate chains to, DER.
    pub fn issuing_root(&self) -> Vec<u8> {
        self.authority_set().active_root.clone()
    }

    /// Changes whenever the bundle, the authorities or the revocations change.
    pub fn watch_trust(&self) -> watch::Receiver<u64> {
        self.trust_version.subscribe()
    }

    /// The SPIFFE ID of node `name`: `spiffe://<td>/halyard/node/<name>`.
    pub fn node_id(&self, name: &str) -> Result<SpiffeId, halyard_proto::SpiffeIdError> {
        SpiffeId::from_segments(self.trust_domain(), &["halyard", "node", name])
    }

    /// The node name in a node SVID's ID, if it is one of this trust domain's node IDs.
    pub fn node_name<'a>(&self, id: &'a SpiffeId) -> Option<&'a str> {
        if !id.is_member_of(self.trust_domain()) {
            return None;
        }
        let name = id.path().strip_prefix("/halyard/node/")?;
        (!name.contains('/')).then_some(name)
    }

    /// The CA's own SPIFFE ID: `spiffe://<td>/halyard/ca`.
    pub fn own_id(&self) -> Result<SpiffeId, halyard_proto::SpiffeIdError> {
        SpiffeId::from_segments(self.trust_domain(), &["halyard", "ca"])
    }

    /// Whether the CA can issue: an unexpired intermediate.
    pub fn is_ready(&self) -> bool {
        self.authority().not_after() > SystemTime::now()
    }
}

/// Runs the server until `shutdown` is cancelled or a listener fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    let ca = Ca::open(config).await?;
    let client = match &ca.config.kubernetes {
        Some(kubernetes) => Some(
            crate::kube::connect(kubernetes.kubeconfig.as_deref())
                .await
                .map_err(ServerError::Kubernetes)?,
        ),
        None => None,
    };
    serve(ca, client, shutdown).await
}

/// Serves `ca` until `shutdown` is cancelled or a listener fails, talking to Kubernetes (when
/// `[kubernetes]` is enabled) through `client`: the seam where tests put a mock API server.
pub(crate) async fn serve(
    ca: Arc<Ca>,
    client: Option<kube::Client>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    ca.reload_authorities()
        .await
        .map_err(|e| ServerError::Authorities(e.to_string()))?;
    if let Some(pca) = &ca.upstream {
        upstream::spawn_rotation(ca.clone(), pca.clone(), shutdown.clone());
    }
    let kubernetes = match (ca.config.kubernetes.clone(), client) {
        (Some(config), Some(client)) => Some(start_kubernetes(&ca, config, client, &shutdown)),
        (Some(_), None) => {
            return Err(ServerError::Kubernetes(
                "enabled, but no client for the API server".to_owned(),
            ));
        }
        (None, _) => None,
    };
    listen::serve(ca, kubernetes, shutdown).await
}

/// What the gRPC APIs use of Kubernetes.
#[derive(Clone)]
pub(crate) struct KubeAuth {
    /// Reviews service-account tokens.
    pub(crate) tokens: Arc<TokenReviewer>,
    /// Which service accounts run on which node.
    pub(crate) pods: Arc<PodIndex>,
    /// ztunnel's service accounts, `namespace/name`.
    pub(crate) ztunnel_service_accounts: Vec<String>,
}

/// Starts the pod index's watch and, when configured, the cert-manager issuer and the CSR
/// signer; returns what
/// the gRPC APIs need.
fn start_kubernetes(
    ca: &Arc<Ca>,
    config: crate::config::KubernetesConfig,
    client: kube::Client,
    shutdown: &CancellationToken,
) -> KubeAuth {
    if config.cert_manager_issuer || config.csr_signer {
        // One replica, the holder of the Lease, runs the controllers.
        let (issuer, signer) = (config.cert_manager_issuer, config.csr_signer);
        let (controllers_client, controllers_ca) = (client.clone(), ca.clone());
        tokio::spawn(crate::kube::leader::run_while_leader(
            client.clone(),
            client.default_namespace().to_owned(),
            crate::kube::leader::identity(),
            shutdown.clone(),
            move |stop| {
                let (client, ca) = (controllers_client.clone(), controllers_ca.clone());
                async move {
                    let issuer_stop = stop.clone();
                    tokio::join!(
                        async {
                            if issuer {
                                crate::kube::issuer::run(client.clone(), ca.clone(), issuer_stop)
                                    .await;
                            }
                        },
                        async {
                            if signer {
                                crate::kube::csr_signer::run(client.clone(), ca.clone(), stop)
                                    .await;
                            }
                        },
                    );
                }
            },
        ));
    }
    let pods = Arc::new(PodIndex::new());
    tokio::spawn(pods.clone().run(client.clone(), shutdown.clone()));
    KubeAuth {
        tokens: Arc::new(TokenReviewer::new(
            client,
            ca.trust_domain().clone(),
            TokenPolicy {
                istio_audience: config.istio_audience,
                node_audience: config.node_audience,
                agent_service_accounts: config.agent_service_accounts,
            },
        )),
        pods,
        ztunnel_service_accounts: config.ztunnel_service_accounts,
    }
}

async fn open_store(config: &Config) -> Result<Store, ServerError> {
    Store::open(&config.store_url, StoreOptions::default())
        .await
        .map_err(|source| ServerError::Store {
            url: redact_url(&config.store_url),
            source,
        })
}

/// The issuance policy the configuration sets.
fn policy(config: &Config) -> Policy {
    Policy {
        default_ttl: config.default_ttl,
        max_ttl: config.max_ttl,
        crl_base_url: config.crl_base_url.clone(),
        ..Policy::default()
    }
}

/// A store URL with any password replaced, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

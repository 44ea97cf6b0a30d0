//! The agent's link to the CA: node attestation, the node SVID (kept on disk so a restart needs
//! no new token, renewed over mTLS at half its life), trust snapshots, and the signer the cache
//! uses.

mod identity;
mod trust;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use halyard_proto::api::ca::attest_request::Credential;
use halyard_proto::api::ca::node_service_client::NodeServiceClient;
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::{AttestRequest, SignX509SvidsRequest, SvidRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, error, info, warn};

use crate::cache::timing::{backoff, draw, refresh_at, retry_delay};
use crate::cache::{SignRequest, SignedChain, SvidSigner, TrustState};
use halyard_proto::transport::error_chain;

pub use identity::{NodeSvid, Stored};
pub use trust::watch_trust;

/// Why the agent could not join or talk to the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] halyard_proto::files::FileError),
    /// The CA address is not a URL tonic accepts.
    #[error("--ca-address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// Why it is unusable.
        reason: String,
    },
    /// No usable stored node SVID and no join token.
    #[error(
        "{dir} holds no usable node SVID ({why}) and neither --join-token (create one with `halyard-ca token create --node NAME`) nor --node-token-file was given"
    )]
    NoCredential {
        /// The data directory.
        dir: PathBuf,
        /// Why what it holds is not usable.
        why: String,
    },
    /// The projected service-account token file could not be read.
    #[error("--node-token-file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// The CA could not be reached.
    #[error("cannot reach the CA at {address}: {reason}")]
    Connect {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The CA refused.
    #[error("the CA refused: {0}")]
    Refused(String),
    /// The node SVID the CA returned is not usable.
    #[error("the CA returned an unusable node SVID: {0}")]
    BadSvid(String),
    /// The bundle the CA last pushed, kept in the data directory, is damaged.
    #[error(
        "{path}: {why} (it holds the roots the CA last pushed; remove it to trust --trust-bundle again)"
    )]
    StoredBundle {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Why `pem` is not a trust bundle: the TLS library would skip a certificate it cannot read, and
/// the agent would then say only that the CA's certificate has an unknown issuer.
pub(crate) fn check_bundle(pem: &str) -> Result<(), String> {
    let blocks = pem::parse_many(pem).map_err(|e| format!("not PEM: {e}"))?;
    if pem.matches("-----BEGIN ").count() != blocks.len() {
        return Err("a PEM block is cut short".into());
    }
    let certs: Vec<_> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    for (i, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert.contents())
            .map_err(|e| format!("certificate {} is not a DER X.509 certificate: {e}", i + 1))?;
    }
    Ok(())
}

/// What a node attests with when it holds no usable node SVID.
#[derive(Clone)]
pub enum NodeCredential {
    /// A join token from `halyard-ca token create` (single use).
    JoinToken(String),
    /// A file holding a Kubernetes projected service-account token (audience `halyard-ca`),
    /// read afresh at every attestation because the kubelet rotates it.
    TokenFile(PathBuf),
}

impl fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeCredential::JoinToken(_) => f.write_str("JoinToken([elided])"),
            NodeCredential::TokenFile(path) => f.debug_tuple("TokenFile").field(path).finish(),
        }
    }
}

impl NodeCredential {
    /// The credential as the wire carries it: a token file is read now.
    fn read(&self) -> Result<Credential, NodeError> {
        match self {
            NodeCredential::JoinToken(token) => Ok(Credential::JoinToken(token.clone())),
            NodeCredential::TokenFile(path) => {
                let bad = |reason: String| NodeError::TokenFile {
                    path: path.clone(),
                    reason,
                };
                // Not `files::read_secret`: the kubelet writes projected tokens 0644 by default.
                let bytes = std::fs::read(path)
                    .map(zeroize::Zeroizing::new)
                    .map_err(|e| bad(e.to_string()))?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| bad("the token is not UTF-8 text".into()))?
                    .trim();
                if text.is_empty() {
                    return Err(bad("the file is empty".into()));
                }
                Ok(Credential::ServiceAccountToken(text.to_owned()))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            NodeCredential::JoinToken(_) => "a join token",
            NodeCredential::TokenFile(_) => "a service-account token",
        }
    }
}

/// How to reach the CA.
#[derive(Clone, Debug)]
pub struct CaEndpoint {
    /// `https://host:port`.
    pub address: String,
    /// PEM roots to trust for the CA's own certificate.
    pub trust_bundle: String,
    /// Where the node SVID is kept.
    pub data_dir: PathBuf,
}

/// A connection to the CA authenticated with the node SVID, replaced when the SVID is renewed
/// or the trust bundle changes.
#[derive(Clone)]
pub struct NodeClient {
    endpoint: CaEndpoint,
    /// The roots trusted for the CA's own certificate, PEM: the bootstrap bundle, then what the
    /// CA pushes (kept in the data directory's `bundle.pem`, so a restart after a root rotation
    /// still trusts the CA).
    bundle: Arc<RwLock<String>>,
    current: Arc<RwLock<(Arc<NodeSvid>, Channel)>>,
    /// A token file to attest afresh with if the node SVID expires unrenewed.
    token_file: Option<NodeCredential>,
}

impl NodeClient {
    /// Joins the CA: with the node SVID stored in the data directory if it is still valid, else
    /// by attesting with `credential`.
    pub async fn join(
        mut endpoint: CaEndpoint,
        credential: Option<&NodeCredential>,
    ) -> Result<NodeClient, NodeError> {
        let stored = endpoint.data_dir.join("bundle.pem");
        if stored.exists() {
            // A damaged bundle is refused, not skipped: after a root rotation the bootstrap
            // bundle may no longer name the CA's root, and the agent would then fail later with
            // only "unknown issuer" to say why.
            let pem = String::from_utf8(halyard_proto::files::read_public(&stored)?)
                .map_err(|_| "not UTF-8 text".to_owned())
                .and_then(|pem| check_bundle(&pem).map(|()| pem))
                .map_err(|why| NodeError::StoredBundle {
                    path: stored.clone(),
                    why,
                })?;
            debug!(path = %stored.display(), "trusting the bundle the CA last pushed");
            endpoint.trust_bundle = pem;
        }
        let stored = match NodeSvid::load(&endpoint.data_dir)? {
            Stored::Nothing => Err("no node.key and node.crt yet".to_owned()),
            Stored::Unusable(why) => Err(why),
            Stored::Svid(svid) if svid.not_after <= SystemTime::now() + Duration::from_secs(10) => {
                Err(format!(
                    "the node SVID {} has expired or expires within 10 s",
                    svid.spiffe_id
                ))
            }
            Stored::Svid(svid) => svid
                .issued_under(&endpoint.trust_bundle)
                .map(|()| svid)
                .map_err(|why| format!("{}: {why}", endpoint.data_dir.join("node.crt").display())),
        };
        let svid = match stored {
            Ok(svid) => {
                info!(id = %svid.spiffe_id, "using the stored node SVID");
                svid
            }
            Err(why) => {
                let credential = credential.ok_or_else(|| NodeError::NoCredential {
                    dir: endpoint.data_dir.clone(),
                    why: why.clone(),
                })?;
                info!(reason = %why, "no usable stored node SVID: attesting");
                let svid = attest(&endpoint, Some(credential.read()?), None).await?;
                svid.store(&endpoint.data_dir)?;
                info!(id = %svid.spiffe_id, "attested with {}", credential.kind());
                svid
            }
        };
        let channel = channel(&endpoint, Some(&svid)).await?;
        Ok(NodeClient {
            bundle: Arc::new(RwLock::new(endpoint.trust_bundle.clone())),
            endpoint,
            current: Arc::new(RwLock::new((Arc::new(svid), channel))),
            token_file: credential
                .filter(|c| matches!(c, NodeCredential::TokenFile(_)))
                .cloned(),
        })
    }

    /// The endpoint with the bundle trusted now.
    fn endpoint(&self) -> CaEndpoint {
        CaEndpoint {
            trust_bundle: self
                .bundle
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            ..self.endpoint.clone()
        }
    }

    /// Trusts `roots` (DER) for the CA from now on, if they differ from what is trusted: stores
    /// them and reconnects on first use.
    pub fn update_bundle(&self, roots: &[Vec<u8>]) -> Result<(), NodeError> {
        if roots.is_empty() {
            return Ok(());
        }
        let pem = crate::cache::pem_certs(roots);
        if *self.bundle.read().unwrap_or_else(|p| p.into_inner()) == pem {
            return Ok(());
        }
        halyard_proto::files::write_public(
            &self.endpoint.data_dir.join("bundle.pem"),
            pem.as_bytes(),
            halyard_proto::files::Overwrite::Allow,
        )?;
        *self.bundle.write().unwrap_or_else(|p| p.into_inner()) = pem;
        let svid = self.svid();
        let channel = lazy_channel(&self.endpoint(), Some(&svid))?;
        info!(
            roots = roots.len(),
            "the trust bundle changed; reconnecting to the CA with it"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (svid, channel);
        Ok(())
    }

    /// The channel to use now.
    pub fn channel(&self) -> Channel {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The node SVID in use.
    pub fn svid(&self) -> Arc<NodeSvid> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Renews the node SVID at half its life, over mTLS with the current one, until `shutdown`;
    /// sooner (within `taint_spread`) when the authority that signed it is tainted.
    pub async fn keep_renewed(
        self,
        mut trust: watch::Receiver<Arc<TrustState>>,
        taint_spread: Duration,
        shutdown: CancellationToken,
    ) {
        let mut failures = 0;
        let mut trust_open = true;
        let mut renew_at: Option<(String, SystemTime)> = None;
        loop {
            let svid = self.svid();
            let tainted = trust.borrow_and_update().tainted.contains(&svid.issuer);
            let renew = match &renew_at {
                Some((serial, at)) if *serial == svid.serial => *at,
                _ => {
                    let at = refresh_at(svid.not_before, svid.not_after, draw() * 2.0 - 1.0);
                    renew_at = Some((svid.serial.clone(), at));
                    at
                }
            };
            let renew = if tainted {
                let soon = SystemTime::now() + taint_spread.mul_f64(draw());
                if soon < renew {
                    info!(authority = %svid.issuer, "the node SVID was signed by a tainted authority; renewing it");
                    renew_at = Some((svid.serial.clone(), soon));
                }
                renew.min(soon)
            } else {
                renew
            };
            let now = SystemTime::now();
            let wait = if failures == 0 {
                renew.duration_since(now).unwrap_or(Duration::ZERO)
            } else {
                let delay = backoff(
                    failures,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                    draw(),
                );
                retry_delay(delay, Some(svid.not_after), now)
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                changed = trust.changed(), if trust_open => {
                    trust_open = changed.is_ok();
                    continue;
                }
            }
            match self.renew().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    let expired = svid.not_after <= SystemTime::now();
                    if expired {
                        error!(error = %e, "the node SVID has expired and cannot be renewed: the node must attest again with a new join token");
                    } else if failures == 1 {
                        warn!(error = %e, "cannot renew the node SVID; keeping the current one");
                    } else {
                        debug!(error = %e, failures, "still cannot renew the node SVID");
                    }
                }
            }
        }
    }

    async fn renew(&self) -> Result<(), NodeError> {
        let current = self.svid();
        let endpoint = self.endpoint();
        // An expired node SVID proves nothing; a service-account token can attest afresh.
        let svid = match &self.token_file {
            Some(file) if current.not_after <= SystemTime::now() => {
                let svid = attest(&endpoint, Some(file.read()?), None).await?;
                info!(id = %svid.spiffe_id, "the node SVID had expired: attested again with a service-account token");
                svid
            }
            _ => attest(&endpoint, None, Some(&current)).await?,
        };
        svid.store(&endpoint.data_dir)?;
        let channel = channel(&endpoint, Some(&svid)).await?;
        info!(serial = %svid.serial, "renewed the node SVID");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(svid), channel);
        Ok(())
    }
}

/// The TLS endpoint of the CA, presenting `svid` when given.
fn tls_endpoint(endpoint: &CaEndpoint, svid: Option<&NodeSvid>) -> Result<Endpoint, NodeError> {
    let address_err = |reason: String| NodeError::Address {
        address: endpoint.address.clone(),
        reason,
    };
    // Without it, tonic would speak plain HTTP/2 to the CA's TLS port and report only that the
    // call was cancelled.
    if !endpoint.address.starts_with("https://") {
        return Err(address_err(
            "the CA is reached over TLS: give an https:// address".into(),
        ));
    }
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&endpoint.trust_bundle));
    if let Some(svid) = svid {
        tls = tls.identity(Identity::from_pem(
            svid.chain_pem(),
            svid.key_pem().as_bytes(),
        ));
    }
    Ok(Endpoint::from_shared(endpoint.address.clone())
        .map_err(|e| address_err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| address_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(10)))
}

/// A channel that connects on first use.
fn lazy_channel(endpoint: &CaEndpoint, svid: Option<&NodeSvid>) -> Result<Channel, NodeError> {
    Ok(tls_endpoint(endpoint, svid)?.connect_lazy())
}

/// A TLS channel to the CA, presenting `svid` when given.
async fn channel(endpoint: &CaEndpoint, svid: Option<&NodeSvid>) -> Result<Channel, NodeError> {
    tls_endpoint(endpoint, svid)?
        .connect()
        .await
        .map_err(|e| NodeError::Connect {
            address: endpoint.address.clone(),
            reason: error_chain(&e),
        })
}

/// Attests with a credential, or renews over mTLS with `current`.
async fn attest(
    endpoint: &CaEndpoint,
    credential: Option<Credential>,
    current: Option<&NodeSvid>,
) -> Result<NodeSvid, NodeError> {
    let (key, csr) = NodeSvid::new_key_and_csr().map_err(NodeError::BadSvid)?;
    let channel = channel(endpoint, current).await?;
    let response = NodeServiceClient::new(channel)
        .attest(AttestRequest { credential, csr })
        .await
        .map_err(|s| NodeError::Refused(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let svid = response
        .svid
        .ok_or_else(|| NodeError::BadSvid("no SVID in the answer".into()))?;
    NodeSvid::from_parts(svid.cert_chain, key).map_err(NodeError::BadSvid)
}

/// The cache's signer: `SignX509Svids` over the node's channel.
pub struct RemoteSigner {
    client: NodeClient,
}

impl RemoteSigner {
    /// A signer over `client`.
    pub fn new(client: NodeClient) -> RemoteSigner {
        RemoteSigner { client }
    }
}

#[tonic::async_trait]
impl SvidSigner for RemoteSigner {
    async fn sign(
        &self,
        requests: Vec<SignRequest>,
    ) -> Result<Vec<Result<SignedChain, String>>, String> {
        let requests = requests
            .into_iter()
            .map(|r| SvidRequest {
                spiffe_id: r.spiffe_id.to_string(),
                csr: r.csr,
                ttl_seconds: r.ttl.map_or(0, halyard_proto::Ttl::as_secs),
            })
            .collect();
        let response = SvidServiceClient::new(self.client.channel())
            .sign_x509_svids(SignX509SvidsRequest { requests })
            .await
            .map_err(|s| format!("SignX509Svids: {:?}: {}", s.code(), s.message()))?;
        Ok(response
            .into_inner()
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(ItemResult::Svid(svid)) => Ok(SignedChain {
                    chain: svid.cert_chain,
                }),
                Some(ItemResult::Error(e)) => {
                    Err(format!("{:?}: {}", tonic::Code::from(e.code), e.message))
                }
                None => Err("the CA sent an empty result".to_owned()),
            })
            .collect())
    }
}

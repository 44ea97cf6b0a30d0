//! The SVID cache: one key pair per identity, generated on the node; CSRs batched to the CA;
//! renewal at half-life with jitter; the last good certificate kept through failures.
//!
//! [`Cache`] is a cloneable handle over one background worker. Each identity's state is
//! published on a `watch` channel, so every stream serving it (SDS, Workload API) sees a new
//! certificate the moment it arrives; the trust state (bundle, CRLs, this node's entries) is
//! published the same way.

mod signer;
pub mod timing;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use halyard_proto::api::ca::Entry;
use halyard_proto::{SpiffeId, TrustDomain, Ttl};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

pub use signer::{SignRequest, SignedChain, SvidSigner};

/// An X509-SVID with its private key.
pub struct Svid {
    /// The identity.
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The id of the authority that signed it (hex of the leaf's authority key identifier).
    pub issuer: String,
    key: Zeroizing<Vec<u8>>,
}

impl Svid {
    /// The private key, PKCS#8 DER.
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key
    }

    /// The private key, PKCS#8 PEM, in memory that is wiped when dropped.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.key.to_vec(),
        )))
    }

    /// The chain, PEM.
    pub fn chain_pem(&self) -> String {
        pem_certs(&self.chain)
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Lowercase hex of a certificate's authority key identifier: the id of the authority that
/// signed it (empty if it has none).
pub fn authority_key_id(der: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, cert)| {
            cert.extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(aki) => aki
                        .key_identifier
                        .as_ref()
                        .map(|id| id.0.iter().map(|b| format!("{b:02x}")).collect()),
                    _ => None,
                })
        })
        .unwrap_or_default()
}

/// PEM text of DER certificates.
pub fn pem_certs(certs: &[Vec<u8>]) -> String {
    certs
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect()
}

/// What a subscriber sees of one identity: its current certificate, if any, and the last error.
#[derive(Clone, Debug, Default)]
pub struct SvidSlot {
    /// The newest good certificate (kept through renewal failures while it is valid).
    pub svid: Option<Arc<Svid>>,
    /// The most recent failure to get or renew it.
    pub error: Option<String>,
}

/// What the CA says the node should trust and serve.
#[derive(Clone, Debug, Default)]
pub struct TrustState {
    /// Increases with every snapshot.
    pub version: u64,
    /// The trust domain.
    pub trust_domain: Option<TrustDomain>,
    /// DER roots.
    pub roots: Vec<Vec<u8>>,
    /// DER CRLs.
    pub crls: Vec<Vec<u8>>,
    /// Revoked serials (lowercase hex).
    pub revoked: Vec<String>,
    /// Ids of tainted authorities: every certificate they signed is replaced.
    pub tainted: Vec<String>,
    /// This node's registration entries.
    pub entries: Vec<Entry>,
}

/// Tuning of the cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Lifetime to ask for (None: the entry's or the CA's default).
    pub ttl: Option<Ttl>,
    /// Most CSRs outstanding at the CA at once.
    pub max_in_flight: usize,
    /// Most CSRs in one request.
    pub batch_size: usize,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// An identity nobody has watched for this long is dropped.
    pub idle_timeout: Duration,
    /// Certificates signed by a tainted authority are replaced at random times within this
    /// window (so a taint does not become a storm at the CA).
    pub taint_spread: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: None,
            max_in_flight: 64,
            batch_size: 16,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            taint_spread: Duration::from_secs(30),
        }
    }
}

/// The cache is gone (the agent is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SVID cache has stopped")]
pub struct CacheClosed;

enum Command {
    Subscribe(SpiffeId, oneshot::Sender<watch::Receiver<SvidSlot>>),
}

/// A handle on the cache's worker.
#[derive(Clone)]
pub struct Cache {
    commands: mpsc::Sender<Command>,
    trust: watch::Receiver<Arc<TrustState>>,
}

impl Cache {
    /// Starts the worker, signing through `signer`, until `shutdown`.
    pub fn spawn(
        signer: Arc<dyn SvidSigner>,
        trust: watch::Receiver<Arc<TrustState>>,
        options: CacheOptions,
        shutdown: CancellationToken,
    ) -> Cache {
        let (commands, rx) = mpsc::channel(256);
        tokio::spawn(worker::Worker::new(signer, options, rx, trust.clone(), shutdown).run());
        Cache { commands, trust }
    }

    /// Watches `id`'s certificate, asking the CA for one if the cache has none.
    pub async fn subscribe(&self, id: &SpiffeId) -> Result<watch::Receiver<SvidSlot>, CacheClosed> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Subscribe(id.clone(), reply))
            .await
            .map_err(|_| CacheClosed)?;
        answer.await.map_err(|_| CacheClosed)
    }

    /// Watches the trust state.
    pub fn trust(&self) -> watch::Receiver<Arc<TrustState>> {
        self.trust.clone()
    }
}

#[cfg(test)]
mod tests;

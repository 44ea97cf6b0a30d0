//! The server's TLS: its own SVID (`spiffe://<td>/halyard/ca` plus the DNS and IP names clients
//! dial), issued by itself and swapped in before it expires or when another authority becomes
//! active, and optional client certificates checked against the trust bundle as it is at each
//! handshake (agents attest before they have one).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Ca, ServerError};
use crate::authority::{Grant, KeyType, PrivateKey};

/// The server certificate in use; replaced whole on rotation.
#[derive(Debug)]
pub(super) struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

/// A fresh key and certificate for the server, issued (and journaled) by the CA itself.
async fn issue_serving_cert(ca: &Ca) -> Result<(Arc<CertifiedKey>, SystemTime), ServerError> {
    let fail = |e: String| ServerError::ServingCert(e);
    let key = PrivateKey::generate(KeyType::EcP256).map_err(|e| fail(e.to_string()))?;
    let id = ca.own_id().map_err(|e| fail(e.to_string()))?;
    let csr = own_csr(&id, &key).map_err(fail)?;
    let grant = Grant {
        dns_names: ca.config.server_dns_names.clone(),
        ip_addresses: ca.config.server_ip_addresses.clone(),
        ..Grant::new(id)
    };
    let svid = ca
        .issue(&csr, &grant, Some(ca.config.max_ttl), "self", None)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .chain()
        .map(|der| CertificateDer::from(der.to_vec()))
        .collect();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().to_vec()));
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| fail(e.to_string()))?;
    Ok((
        Arc::new(CertifiedKey::new(chain, signing_key)),
        svid.not_after,
    ))
}

fn own_csr(id: &halyard_proto::SpiffeId, key: &PrivateKey) -> Result<Vec<u8>, String> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        id.as_str()
            .try_into()
            .map_err(|e: rcgen::Error| e.to_string())?,
    )];
    params
        .serialize_request(key)
        .map(|csr| csr.der().to_vec())
        .map_err(|e| e.to_string())
}

/// Issues the first serving certificate and starts a task that replaces it at half its life.
pub(super) async fn serving_cert(
    ca: Arc<Ca>,
    shutdown: CancellationToken,
) -> Result<Arc<ServingCert>, ServerError> {
    let (first, mut not_after) = issue_serving_cert(&ca).await?;
    let serving = Arc::new(ServingCert {
        current: RwLock::new(first),
    });
    let rotating = serving.clone();
    let mut active = ca.watch_active();
    active.borrow_and_update();
    tokio::spawn(async move {
        loop {
            let wait = not_after
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                / 2;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
                // A new active authority: clients may soon trust only its root.
                changed = active.changed() => if changed.is_err() { return },
            }
            active.borrow_and_update();
            match issue_serving_cert(&ca).await {
                Ok((next, next_not_after)) => {
                    *rotating
                        .current
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
                    not_after = next_not_after;
                    info!("rotated the server's own certificate");
                }
                Err(e) => {
                    warn!(error = %e, "cannot rotate the server's own certificate; keeping the current one")
                }
            }
        }
    });
    Ok(serving)
}

/// Client certificates verified against the trust bundle as it is now: the verifier is rebuilt
/// whenever the bundle changes (a root added or removed).
/// A verifier and the bundle it was built from.
type BuiltFor = (Arc<Vec<Vec<u8>>>, Arc<dyn ClientCertVerifier>);

struct BundleVerifier {
    ca: Arc<Ca>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<BuiltFor>,
}

impl std::fmt::Debug for BundleVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleVerifier").finish_non_exhaustive()
    }
}

impl BundleVerifier {
    fn new(
        ca: Arc<Ca>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<BundleVerifier, ServerError> {
        let bundle = ca.bundle();
        let verifier = build_verifier(&bundle, &provider)?;
        Ok(BundleVerifier {
            ca,
            provider,
            current: RwLock::new((bundle, verifier)),
        })
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let bundle = self.ca.bundle();
        {
            let current = self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if Arc::ptr_eq(&current.0, &bundle) {
                return current.1.clone();
            }
        }
        match build_verifier(&bundle, &self.provider) {
            Ok(verifier) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = (bundle, verifier.clone());
                verifier
            }
            Err(e) => {
                warn!(error = %e, "cannot use the new bundle for client certificates; keeping the previous one");
                self.current
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .1
                    .clone()
            }
        }
    }
}

fn build_verifier(
    bundle: &[Vec<u8>],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, ServerError> {
    let fail = |e: String| ServerError::ServingCert(e);
    let mut roots = RootCertStore::empty();
    for root in bundle {
        roots
            .add(CertificateDer::from(root.clone()))
            .map_err(|e| fail(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| fail(e.to_string()))
}

impl ClientCertVerifier for BundleVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Agents attest before they have a certificate.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional, and would go stale as the bundle changes.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls configuration: our serving certificate, client certificates optional and, when
/// given, verified against the trust bundle as it is at each handshake; HTTP/2 only.
pub(super) fn server_config(
    ca: &Arc<Ca>,
    serving: Arc<ServingCert>,
) -> Result<Arc<ServerConfig>, ServerError> {
    let fail = |e: String| ServerError::ServingCert(e);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(BundleVerifier::new(ca.clone(), provider.clone())?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

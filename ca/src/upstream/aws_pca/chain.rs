//! What `GetCertificate` returns, turned into Halyard's chain and root and checked before use.
//!
//! PCA returns the issued certificate and a `CertificateChain` that leads up to, and ends with,
//! its root. Halyard's chain is the issued certificate followed by that chain without its last
//! certificate; the last certificate is the root that goes in the trust bundle. When the issuing
//! CA is itself the root, its chain is the root alone and Halyard's chain is the issued
//! certificate alone.

use std::time::{Duration, SystemTime};

use halyard_proto::{SvidError, TrustDomain, validate_signing_cert};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::authority::{self, ChainError, rfc3339};

/// How much later than asked the intermediate may expire (PCA rounds nothing, but clocks and
/// emulators differ by a little).
const NOT_AFTER_SLACK: Duration = Duration::from_secs(60);

/// Why what PCA returned cannot be used as Halyard's intermediate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcaChainError {
    /// The `Certificate` field is not one PEM certificate.
    #[error("its Certificate is not one PEM certificate: {0}")]
    Certificate(String),
    /// The `CertificateChain` field is missing, empty or not PEM.
    #[error(
        "its CertificateChain {0}; PCA always sends the chain up to the root, so the root cannot be known"
    )]
    NoChain(String),
    /// The issued certificate is not a CA.
    #[error(
        "the issued certificate is not a CA (no basicConstraints CA:true); template_arn must be a \
         SubordinateCACertificate template, such as \
         arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
    )]
    NotACa,
    /// The issued certificate may not sign certificates.
    #[error(
        "the issued certificate may not sign certificates (its keyUsage lacks keyCertSign); \
         template_arn must be a SubordinateCACertificate template"
    )]
    NoKeyCertSign,
    /// The issued certificate breaks another rule for signing certificates.
    #[error("the issued certificate cannot be Halyard's intermediate: {0}")]
    NotASigner(SvidError),
    /// The issued certificate is not for the key whose CSR was sent.
    #[error(
        "the issued certificate's public key is not the one in the CSR sent; refusing a certificate \
         for a key Halyard does not hold"
    )]
    KeyMismatch,
    /// The issued certificate names another trust domain, or none.
    #[error(
        "the issued certificate names {found} where spiffe://{expected} was asked for; the template \
         must pass the CSR's subjectAltName through"
    )]
    TrustDomain {
        /// What the CSR asked for.
        expected: TrustDomain,
        /// What the certificate says ("no spiffe:// URI" if nothing).
        found: String,
    },
    /// The issued certificate has expired already.
    #[error("the issued certificate expired at {0}")]
    Expired(String),
    /// The issued certificate outlives the certificate that issued it.
    #[error(
        "the issued certificate is valid until {not_after}, after its issuer expires ({issuer_not_after})"
    )]
    OutlivesIssuer {
        /// The issued certificate's notAfter.
        not_after: String,
        /// The issuer's notAfter.
        issuer_not_after: String,
    },
    /// The issued certificate lives longer than asked.
    #[error(
        "the issued certificate is valid until {not_after}, later than the {requested} asked for; \
         PCA did not apply the Validity sent"
    )]
    LongerThanAsked {
        /// Its notAfter.
        not_after: String,
        /// The notAfter asked for.
        requested: String,
    },
    /// The last certificate of the chain is not a self-signed CA.
    #[error("the last certificate of CertificateChain is not a root: {0}")]
    NotARoot(String),
    /// The chain does not verify to the root.
    #[error("the chain does not verify to the root PCA sent: {0}")]
    Chain(ChainError),
}

/// What the intermediate must be: for the CSR's key and trust domain, ending no later than asked.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The DER SubjectPublicKeyInfo of the CSR.
    pub spki: &'a [u8],
    /// The trust domain the CSR names.
    pub trust_domain: &'a TrustDomain,
    /// The notAfter asked for.
    pub not_after: SystemTime,
}

/// A checked intermediate from PCA: Halyard's chain (the intermediate first, then any PCA
/// intermediates, DER) and the root that ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcaChain {
    /// The issued intermediate, then the PCA intermediates above it, DER.
    pub chain: Vec<Vec<u8>>,
    /// The root the chain verifies to, DER.
    pub root: Vec<u8>,
    /// The intermediate's notBefore.
    pub not_before: SystemTime,
    /// The intermediate's notAfter.
    pub not_after: SystemTime,
}

impl PcaChain {
    /// Assembles and checks `GetCertificate`'s `Certificate` and `CertificateChain` (PEM) at `now`.
    pub fn from_pem(
        certificate: &str,
        certificate_chain: Option<&str>,
        expected: &Expected<'_>,
        now: SystemTime,
    ) -> Result<PcaChain, PcaChainError> {
        let issued = match authority::certs_from_pem(certificate.as_bytes()) {
            Ok(mut certs) if certs.len() == 1 => certs.swap_remove(0),
            Ok(certs) => {
                return Err(PcaChainError::Certificate(format!(
                    "it holds {} certificates",
                    certs.len()
                )));
            }
            Err(e) => return Err(PcaChainError::Certificate(e)),
        };
        let mut upper = match certificate_chain.map(str::trim) {
            None | Some("") => return Err(PcaChainError::NoChain("is missing or empty".into())),
            Some(pem) => authority::certs_from_pem(pem.as_bytes())
                .map_err(|e| PcaChainError::NoChain(format!("is not PEM: {e}")))?,
        };
        // certs_from_pem returns at least one certificate.
        let root = upper
            .pop()
            .ok_or_else(|| PcaChainError::NoChain("is empty".into()))?;
        let mut chain = vec![issued];
        chain.append(&mut upper);
        check(chain, root, expected, now)
    }
}

fn check(
    chain: Vec<Vec<u8>>,
    root: Vec<u8>,
    expected: &Expected<'_>,
    now: SystemTime,
) -> Result<PcaChain, PcaChainError> {
    let info = validate_signing_cert(&chain[0]).map_err(|e| match e {
        SvidError::NotCa => PcaChainError::NotACa,
        SvidError::NoKeyCertSign => PcaChainError::NoKeyCertSign,
        other => PcaChainError::NotASigner(other),
    })?;
    match info.trust_domain() {
        Some(td) if td == expected.trust_domain => {}
        found => {
            return Err(PcaChainError::TrustDomain {
                expected: expected.trust_domain.clone(),
                found: found
                    .map_or_else(|| "no spiffe:// URI".to_owned(), |td| td.id().to_string()),
            });
        }
    }
    let spki = X509Certificate::from_der(&chain[0]).map(|(_, c)| c.public_key().raw.to_vec());
    if spki.ok().as_deref() != Some(expected.spki) {
        return Err(PcaChainError::KeyMismatch);
    }
    let root_info =
        validate_signing_cert(&root).map_err(|e| PcaChainError::NotARoot(e.to_string()))?;
    if !root_info.is_self_issued() {
        return Err(PcaChainError::NotARoot(
            "its issuer is not its subject (is the chain cut short?)".into(),
        ));
    }

    let not_after = info.not_after();
    if not_after <= now {
        return Err(PcaChainError::Expired(rfc3339(not_after)));
    }
    let issuer_not_after = match chain.get(1) {
        Some(issuer) => validate_signing_cert(issuer)
            .map(|i| i.not_after())
            .map_err(|e| {
                PcaChainError::Chain(ChainError::NotASigner {
                    index: 1,
                    source: e,
                })
            })?,
        None => root_info.not_after(),
    };
    if not_after > issuer_not_after {
        return Err(PcaChainError::OutlivesIssuer {
            not_after: rfc3339(not_after),
            issuer_not_after: rfc3339(issuer_not_after),
        });
    }
    if not_after > expected.not_after + NOT_AFTER_SLACK {
        return Err(PcaChainError::LongerThanAsked {
            not_after: rfc3339(not_after),
            requested: rfc3339(expected.not_after),
        });
    }
    authority::verify_chain(&chain, std::slice::from_ref(&root), now)
        .map_err(PcaChainError::Chain)?;
    Ok(PcaChain {
        not_before: info.not_before(),
        not_after,
        chain,
        root,
    })
}

#[cfg(test)]
mod tests;

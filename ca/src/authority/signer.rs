//! A CA certificate with its key, checked to belong together: what roots and intermediates share.

use halyard_proto::{SigningCert, SvidError, TrustDomain, validate_signing_cert};
use rcgen::Issuer;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::key::PrivateKey;

/// Why a CA certificate and key cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaCertError {
    /// The certificate breaks a rule for signing certificates.
    #[error("is not a usable CA: {0}")]
    NotACa(SvidError),
    /// The certificate has no `spiffe://<td>` URI SAN.
    #[error("names no trust domain: it has no spiffe://<trust domain> URI SAN")]
    NoTrustDomain,
    /// The key does not belong to the certificate.
    #[error("does not match its key: their public keys differ")]
    KeyMismatch,
    /// The signer could not be set up.
    #[error("cannot be used to sign: {0}")]
    Signer(String),
}

/// A CA's signer over `cert`, after checking the certificate is a signing certificate naming its
/// trust domain and that `key` is its key.
pub(crate) fn ca_signer(
    key: PrivateKey,
    cert: &[u8],
) -> Result<(Issuer<'static, PrivateKey>, SigningCert, TrustDomain), CaCertError> {
    let info = validate_signing_cert(cert).map_err(CaCertError::NotACa)?;
    let trust_domain = info
        .trust_domain()
        .cloned()
        .ok_or(CaCertError::NoTrustDomain)?;
    let spki = X509Certificate::from_der(cert).map(|(_, c)| c.public_key().raw.to_vec());
    if spki.ok() != Some(key.public_key_spki()) {
        return Err(CaCertError::KeyMismatch);
    }
    let issuer = Issuer::from_ca_cert_der(&cert.into(), key)
        .map_err(|e| CaCertError::Signer(e.to_string()))?;
    Ok((issuer, info, trust_domain))
}

/// A CA's id: the lowercase hex of its certificate's subject key identifier (or, for a
/// certificate without one, of the first 20 bytes of the SHA-256 of its public key).
pub(crate) fn authority_id(cert: &[u8]) -> String {
    key_id(cert).iter().map(|b| format!("{b:02x}")).collect()
}

/// The certificate's subject key identifier (or, without one, the first 20 bytes of the SHA-256
/// of its public key).
pub(crate) fn key_id(cert: &[u8]) -> Vec<u8> {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let ski = parsed
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    ski.unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
        digest.as_ref()[..20].to_vec()
    })
}

//! Signing: roots, intermediates and X509-SVID leaves.
//!
//! Everything here works on bytes and types. It knows no network, no SQL and no files: callers
//! hand it a parsed [`Csr`], a [`Grant`] saying which identity the caller may hold, and the time.

mod chain;
mod crl;
mod csr;
mod intermediate;
mod key;
mod policy;
mod profile;
mod root;
mod serial;
mod signer;

pub use chain::{ChainError, verify_chain};
pub use crl::{RevocationReason, RevokedEntry};
pub use csr::{Csr, CsrError, MAX_CSR_BYTES, PublicKeyKind};
pub use intermediate::{Authority, AuthorityError, IssuedSvid, SignError, intermediate_csr};
pub use key::{KeyError, KeyType, PrivateKey};
pub use policy::{Grant, KeyPolicy, Policy};
pub use root::{RootCa, RootError, rfc3339};
pub use serial::{Serial, SerialError};
pub use signer::CaCertError;
/// An authority's id from its certificate (for the audit, which has no key to build one).
pub(crate) use signer::authority_id;

/// Certificates parsed from PEM text, in order, as DER.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".to_owned());
    }
    Ok(certs)
}

/// PEM text of DER certificates, in order.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> String {
    certs
        .into_iter()
        .map(|der| pem_block("CERTIFICATE", der))
        .collect()
}

/// One PEM block.
pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

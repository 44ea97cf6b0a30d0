//! The trust bundle of a trust domain, and its SPIFFE bundle form (a JWK set whose keys carry
//! `use: "x509-svid"` and the root certificate in `x5c`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::TrustDomain;

/// Every root a trust domain trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<Vec<u8>>,
}

/// Why a bundle cannot be expressed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A root that is not a certificate.
    #[error("root {index} is not a DER certificate: {reason}")]
    BadRoot {
        /// Its position in the bundle.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A root whose key cannot be a JWK here.
    #[error("root {index} has a {kind} key, which a SPIFFE bundle here cannot express")]
    UnsupportedKey {
        /// Its position in the bundle.
        index: usize,
        /// The kind of key.
        kind: String,
    },
}

impl TrustBundle {
    /// A bundle of DER roots.
    pub fn new(trust_domain: TrustDomain, roots: Vec<Vec<u8>>) -> TrustBundle {
        TrustBundle {
            trust_domain,
            roots,
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The DER roots.
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// The SPIFFE bundle: `{"keys": [{"use": "x509-svid", "kty": …, "x5c": [...]}, …]}`.
    pub fn to_spiffe_json(&self) -> Result<String, BundleError> {
        let keys = self
            .roots
            .iter()
            .enumerate()
            .map(|(index, der)| jwk(index, der))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(serde_json::json!({ "keys": keys }).to_string())
    }
}

fn jwk(index: usize, der: &[u8]) -> Result<serde_json::Value, BundleError> {
    let bad = |reason: String| BundleError::BadRoot { index, reason };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let spki = cert.public_key();
    let x5c = STANDARD.encode(der);
    match spki.parsed().map_err(|e| bad(e.to_string()))? {
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            let (crv, len) = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => ("P-256", 32),
                Some("1.3.132.0.34") => ("P-384", 48),
                other => {
                    return Err(BundleError::UnsupportedKey {
                        index,
                        kind: format!("EC {}", other.unwrap_or("unnamed curve")),
                    });
                }
            };
            let data = point.data();
            if data.len() != 1 + 2 * len || data[0] != 4 {
                return Err(bad("EC point is not uncompressed".to_owned()));
            }
            Ok(serde_json::json!({
                "use": "x509-svid",
                "kty": "EC",
                "crv": crv,
                "x": URL_SAFE_NO_PAD.encode(&data[1..=len]),
                "y": URL_SAFE_NO_PAD.encode(&data[1 + len..]),
                "x5c": [x5c],
            }))
        }
        PublicKey::RSA(rsa) => Ok(serde_json::json!({
            "use": "x509-svid",
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(strip_zeros(rsa.modulus)),
            "e": URL_SAFE_NO_PAD.encode(strip_zeros(rsa.exponent)),
            "x5c": [x5c],
        })),
        _ => Err(BundleError::UnsupportedKey {
            index,
            kind: spki.algorithm.algorithm.to_id_string(),
        }),
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests;

//! The trust bundle of a trust domain, and its SPIFFE bundle form (a JWK set whose keys carry
//! `use: "x509-svid"` and the root certificate in `x5c`), written and read.

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
    /// SPIFFE bundle text that is not JSON.
    #[error("SPIFFE bundle is not JSON: {0}")]
    Json(String),
    /// JSON that is not a JWK set.
    #[error("SPIFFE bundle is not a JWK set: {0}")]
    NotJwkSet(&'static str),
    /// A JWK that is not an X509-SVID authority this crate can read.
    #[error("SPIFFE bundle key {index}: {reason}")]
    BadKey {
        /// Its position in the `keys` array.
        index: usize,
        /// What is wrong with it.
        reason: String,
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

    /// Reads a SPIFFE bundle of `trust_domain` (the JWK set does not name it).
    ///
    /// Every key must be an X509-SVID authority: `use` is `"x509-svid"`, `x5c` holds exactly one
    /// standard-base64 DER certificate, and the JWK's own key members (`kty`, `crv`, `x`, `y`,
    /// `n`, `e`) describe that certificate's key, as [`TrustBundle::to_spiffe_json`] writes them.
    /// Anything else is refused (JWT-SVID keys too: this bundle holds roots only). Other
    /// members (`spiffe_sequence`, `spiffe_refresh_hint`, `kid`) are ignored.
    pub fn from_spiffe_json(
        trust_domain: TrustDomain,
        json: &[u8],
    ) -> Result<TrustBundle, BundleError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or(BundleError::NotJwkSet("the top level is not an object"))?;
        let keys = object
            .get("keys")
            .ok_or(BundleError::NotJwkSet("it has no \"keys\" member"))?
            .as_array()
            .ok_or(BundleError::NotJwkSet(
                "its \"keys\" member is not an array",
            ))?;
        let roots = keys
            .iter()
            .enumerate()
            .map(|(index, key)| root_of(index, key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustBundle::new(trust_domain, roots))
    }
}

/// The DER root of one JWK of a SPIFFE bundle, checked against the JWK's own members.
fn root_of(index: usize, key: &serde_json::Value) -> Result<Vec<u8>, BundleError> {
    let bad = |reason: String| BundleError::BadKey { index, reason };
    let key = key
        .as_object()
        .ok_or_else(|| bad("is not an object".to_owned()))?;
    match key.get("use").and_then(serde_json::Value::as_str) {
        Some("x509-svid") => {}
        Some(other) => {
            return Err(bad(format!(
                "\"use\" is {other:?}; only \"x509-svid\" keys are read"
            )));
        }
        None => return Err(bad("\"use\" is missing or not a string".to_owned())),
    }
    let x5c = key
        .get("x5c")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("\"x5c\" is missing or not an array".to_owned()))?;
    let [cert] = x5c.as_slice() else {
        return Err(bad(format!(
            "\"x5c\" holds {} certificates; an X509-SVID authority has exactly one",
            x5c.len()
        )));
    };
    let der = cert
        .as_str()
        .ok_or_else(|| bad("\"x5c\" entry is not a string".to_owned()))
        .and_then(|b64| {
            STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("\"x5c\" entry is not standard base64: {e}")))
        })?;
    let expected = jwk(index, &der)?;
    let members = expected
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| *name != "x5c");
    for (name, want) in members {
        match key.get(name) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(bad(format!(
                    "{name:?} is {got}, but its certificate's key has {want}"
                )));
            }
            None => return Err(bad(format!("{name:?} is missing"))),
        }
    }
    Ok(der)
}

fn jwk(index: usize, der: &[u8]) -> Result<serde_json::Value, BundleError> {
    let bad = |reason: String| BundleError::BadRoot { index, reason };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes follow the certificate", rest.len())));
    }
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

//! Certificate signing requests: decoded, bounded, key-checked and signature-verified.

use std::fmt;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::policy::KeyPolicy;

/// The largest CSR accepted, DER or PEM: a workload CSR is well under 2 KiB.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// The kind of public key a CSR carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKeyKind {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// ECDSA on another curve, named by its OID.
    EcOther(String),
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// Ed25519.
    Ed25519,
    /// Any other algorithm, named by its OID.
    Other(String),
}

impl fmt::Display for PublicKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKeyKind::EcP256 => f.write_str("EC P-256"),
            PublicKeyKind::EcP384 => f.write_str("EC P-384"),
            PublicKeyKind::EcOther(oid) => write!(f, "EC on curve {oid}"),
            PublicKeyKind::Rsa(bits) => write!(f, "RSA-{bits}"),
            PublicKeyKind::Ed25519 => f.write_str("Ed25519"),
            PublicKeyKind::Other(oid) => write!(f, "key algorithm {oid}"),
        }
    }
}

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Larger than [`MAX_CSR_BYTES`].
    #[error("CSR is {0} bytes; the limit is {MAX_CSR_BYTES}")]
    TooLarge(usize),
    /// Empty input.
    #[error("CSR is empty")]
    Empty,
    /// PEM that does not hold one CERTIFICATE REQUEST block.
    #[error("CSR PEM is malformed: {0}")]
    BadPem(String),
    /// DER that is not a PKCS#10 request.
    #[error("CSR is not a DER PKCS#10 certification request: {0}")]
    Malformed(String),
    /// DER that ends before its outer length says it should.
    #[error(
        "CSR is truncated: its DER header announces {announced} bytes but only {available} follow"
    )]
    Truncated {
        /// Content length the header announces.
        announced: usize,
        /// Bytes actually present after the header.
        available: usize,
    },
    /// Bytes after the request.
    #[error("{0} bytes follow the CSR")]
    TrailingData(usize),
    /// The public key is not readable.
    #[error("CSR public key is malformed: {0}")]
    BadPublicKey(String),
    /// A key the policy does not allow.
    #[error("CSR key {key} is not allowed: {why}")]
    KeyNotAllowed {
        /// The key found.
        key: PublicKeyKind,
        /// What the policy allows instead.
        why: String,
    },
    /// The self-signature does not verify.
    #[error("CSR signature does not verify with its own public key")]
    BadSignature,
    /// The extension request cannot be read.
    #[error("CSR extension request is malformed: {0}")]
    BadExtension(String),
}

/// A CSR that parsed, is within bounds, carries an allowed key, and is signed by that key.
///
/// What it asks for (names, CA status) is recorded but not yet judged: that depends on who asks,
/// and is the signer's business.
#[derive(Clone, Debug)]
pub struct Csr {
    spki: Vec<u8>,
    key: PublicKeyKind,
    uris: Vec<String>,
    dns_names: Vec<String>,
    other_names: usize,
    requests_ca: bool,
    subject_empty: bool,
    common_name: Option<String>,
}

impl Csr {
    /// Parses a CSR given as DER or PEM, checks its key against `keys` and verifies its signature.
    pub fn parse(bytes: &[u8], keys: &KeyPolicy) -> Result<Csr, CsrError> {
        if bytes.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge(bytes.len()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(CsrError::Empty);
        }
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let der = pem_to_der(bytes)?;
            Self::from_der(&der, keys)
        } else {
            Self::from_der(bytes, keys)
        }
    }

    fn from_der(der: &[u8], keys: &KeyPolicy) -> Result<Csr, CsrError> {
        check_not_truncated(der)?;
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::TrailingData(rest.len()));
        }
        let info = &csr.certification_request_info;
        let key = classify(&info.subject_pki)?;
        keys.check(&key)?;
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

        let mut out = Csr {
            spki: info.subject_pki.raw.to_vec(),
            key,
            uris: Vec::new(),
            dns_names: Vec::new(),
            other_names: 0,
            requests_ca: false,
            subject_empty: info.subject.iter().next().is_none(),
            common_name: info
                .subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
        };
        for ext in csr.requested_extensions().into_iter().flatten() {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(uri) => out.uris.push((*uri).to_owned()),
                            GeneralName::DNSName(dns) => out.dns_names.push((*dns).to_owned()),
                            _ => out.other_names += 1,
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) => out.requests_ca |= bc.ca,
                ParsedExtension::ParseError { error } => {
                    return Err(CsrError::BadExtension(error.to_string()));
                }
                // Key usages and anything else a CSR asks for are decided by the profile.
                _ => {}
            }
        }
        Ok(out)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The kind of public key.
    pub fn key(&self) -> &PublicKeyKind {
        &self.key
    }

    /// URI SANs asked for, in order.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// DNS SANs asked for, in order.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// How many SANs of other kinds (IP, email, …) were asked for.
    pub fn other_names(&self) -> usize {
        self.other_names
    }

    /// Whether the CSR asks for basic constraints cA=true.
    pub fn requests_ca(&self) -> bool {
        self.requests_ca
    }

    /// Whether the subject name is empty.
    pub fn subject_is_empty(&self) -> bool {
        self.subject_empty
    }

    /// The subject's common name, if it has one.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }
}

/// Tells a cut-off request from a malformed one by its outer header's length.
fn check_not_truncated(der: &[u8]) -> Result<(), CsrError> {
    use x509_parser::der_parser::ber::Length;
    if let Ok((rest, header)) = x509_parser::der_parser::der::der_read_element_header(der)
        && let Length::Definite(announced) = header.length()
        && announced > rest.len()
    {
        return Err(CsrError::Truncated {
            announced,
            available: rest.len(),
        });
    }
    Ok(())
}

fn pem_to_der(bytes: &[u8]) -> Result<Vec<u8>, CsrError> {
    let blocks = pem::parse_many(bytes).map_err(|e| CsrError::BadPem(e.to_string()))?;
    match blocks.as_slice() {
        [one] if matches!(one.tag(), "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST") => {
            Ok(one.contents().to_vec())
        }
        [one] => Err(CsrError::BadPem(format!(
            "block is {:?}, expected \"CERTIFICATE REQUEST\"",
            one.tag()
        ))),
        [] => Err(CsrError::BadPem("no PEM block found".to_owned())),
        many => Err(CsrError::BadPem(format!(
            "{} PEM blocks found, expected one",
            many.len()
        ))),
    }
}

fn classify(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<PublicKeyKind, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::BadPublicKey("EC key without a named curve".to_owned()))?;
        Ok(if curve == OID_EC_P256 {
            PublicKeyKind::EcP256
        } else if curve == OID_NIST_EC_P384 {
            PublicKeyKind::EcP384
        } else {
            PublicKeyKind::EcOther(curve.to_id_string())
        })
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Ok(PublicKeyKind::Rsa(rsa.key_size())),
            _ => Err(CsrError::BadPublicKey("RSA key does not parse".to_owned())),
        }
    } else if *alg == OID_SIG_ED25519 {
        Ok(PublicKeyKind::Ed25519)
    } else {
        Ok(PublicKeyKind::Other(alg.to_id_string()))
    }
}

//! X509-SVID validation: the rules of the SPIFFE X509-SVID specification, checked on DER.
//!
//! [`validate_leaf`] checks a workload (leaf) certificate, [`validate_signing_cert`] a CA
//! certificate that signs them. Both return precise [`SvidError`]s, so a caller can say exactly
//! which rule a certificate breaks. Chain building and signature checks are not done here: they
//! belong to a path validator (webpki), which runs after these checks.

use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::{SpiffeId, SpiffeIdError, TrustDomain};

/// What a valid X509-SVID leaf says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    serial: Vec<u8>,
    dns_names: Vec<String>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl X509Svid {
    /// The one SPIFFE ID the certificate carries.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The serial number, big-endian, without a leading zero byte.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// DNS names in the subject alternative name, in order.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// What a valid X509-SVID signing certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningCert {
    trust_domain: Option<TrustDomain>,
    path_len: Option<u32>,
    self_issued: bool,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl SigningCert {
    /// The trust domain of the certificate's `spiffe://<td>` URI SAN, if it has one.
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    /// The basic constraints path length, if constrained.
    pub fn path_len(&self) -> Option<u32> {
        self.path_len
    }

    /// Whether subject and issuer names are equal (a root, or a self-issued CA).
    pub fn is_self_issued(&self) -> bool {
        self.self_issued
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// Which X509-SVID rule a certificate breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
    /// Bytes follow the certificate.
    #[error("{0} bytes follow the certificate")]
    TrailingData(usize),
    /// The certificate is not version 3.
    #[error("certificate is X.509 version {0}; X509-SVIDs are version 3")]
    NotVersion3(u32),
    /// The subject alternative name extension could not be read.
    #[error("subject alternative name extension is malformed: {0}")]
    BadSubjectAltName(String),
    /// A leaf without a URI SAN.
    #[error("leaf has no URI subject alternative name: an X509-SVID has exactly one SPIFFE ID")]
    NoUriSan,
    /// More than one URI SAN.
    #[error("certificate has {0} URI subject alternative names; an X509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN {uri:?} is not a SPIFFE ID: {source}")]
    NotSpiffeId {
        /// The URI as found.
        uri: String,
        /// Why it is not a SPIFFE ID.
        source: SpiffeIdError,
    },
    /// A leaf whose SPIFFE ID has no path.
    #[error("leaf SPIFFE ID {0} names a trust domain, not a workload: it needs a path")]
    LeafIdWithoutPath(SpiffeId),
    /// A signing certificate whose SPIFFE ID has a path.
    #[error(
        "signing certificate SPIFFE ID {0} has a path; a CA's URI SAN is spiffe://<trust domain>"
    )]
    SigningIdWithPath(SpiffeId),
    /// The subject is empty and the SAN extension is not critical (RFC 5280 4.2.1.6).
    #[error("subject is empty but the subject alternative name extension is not critical")]
    SanNotCriticalWithEmptySubject,
    /// The basic constraints extension could not be read.
    #[error("basic constraints extension is malformed: {0}")]
    BadBasicConstraints(String),
    /// A leaf with cA set.
    #[error("leaf has basic constraints cA=true; leaf SVIDs must not be CAs")]
    LeafIsCa,
    /// A signing certificate without cA set.
    #[error("signing certificate lacks basic constraints cA=true")]
    NotCa,
    /// The key usage extension could not be read.
    #[error("key usage extension is malformed: {0}")]
    BadKeyUsage(String),
    /// No key usage extension.
    #[error("key usage extension is missing")]
    NoKeyUsage,
    /// The key usage extension is not critical.
    #[error("key usage extension is not critical")]
    KeyUsageNotCritical,
    /// A leaf without digitalSignature.
    #[error("leaf key usage lacks digitalSignature")]
    LeafWithoutDigitalSignature,
    /// A leaf that may sign certificates or CRLs.
    #[error("leaf key usage has {0}; leaf SVIDs must not sign certificates or CRLs")]
    LeafMaySign(&'static str),
    /// A signing certificate without keyCertSign.
    #[error("signing certificate key usage lacks keyCertSign")]
    NoKeyCertSign,
    /// The extended key usage extension could not be read.
    #[error("extended key usage extension is malformed: {0}")]
    BadExtendedKeyUsage(String),
    /// A validity period that ends before it starts, or lies before 1970.
    #[error("validity period is inverted or before 1970")]
    BadValidity,
}

/// Checks every X509-SVID rule for a leaf certificate given as DER and returns what it says.
///
/// The rules: version 3; exactly one URI SAN, a SPIFFE ID with a path; a critical SAN when the
/// subject is empty; basic constraints, if present, with cA false; a critical key usage with
/// digitalSignature and without keyCertSign or cRLSign.
pub fn validate_leaf(der: &[u8]) -> Result<X509Svid, SvidError> {
    let cert = parse(der)?;
    let sans = subject_alt_names(&cert)?;
    let spiffe_id = match sans.uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => parse_uri(one)?,
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    if spiffe_id.is_trust_domain_id() {
        return Err(SvidError::LeafIdWithoutPath(spiffe_id));
    }
    if is_ca(&cert)? == Some(true) {
        return Err(SvidError::LeafIsCa);
    }
    let usage = key_usage(&cert)?;
    if !usage.digital_signature() {
        return Err(SvidError::LeafWithoutDigitalSignature);
    }
    if usage.key_cert_sign() {
        return Err(SvidError::LeafMaySign("keyCertSign"));
    }
    if usage.crl_sign() {
        return Err(SvidError::LeafMaySign("cRLSign"));
    }
    cert.extended_key_usage()
        .map_err(|e| SvidError::BadExtendedKeyUsage(e.to_string()))?;
    let (not_before, not_after) = validity(&cert)?;
    Ok(X509Svid {
        spiffe_id,
        serial: cert.tbs_certificate.serial.to_bytes_be(),
        dns_names: sans.dns,
        not_before,
        not_after,
    })
}

/// Checks every X509-SVID rule for a signing (CA) certificate given as DER.
///
/// The rules: version 3; basic constraints cA true; a critical key usage with keyCertSign
/// (cRLSign and digitalSignature are allowed: upstream CAs such as AWS Private CA set the
/// latter); at most one URI SAN, which must be a trust-domain SPIFFE ID without a path.
pub fn validate_signing_cert(der: &[u8]) -> Result<SigningCert, SvidError> {
    let cert = parse(der)?;
    let sans = subject_alt_names(&cert)?;
    let trust_domain = match sans.uris.as_slice() {
        [] => None,
        [one] => {
            let id = parse_uri(one)?;
            if !id.is_trust_domain_id() {
                return Err(SvidError::SigningIdWithPath(id));
            }
            Some(id.trust_domain().clone())
        }
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    let path_len = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => bc.value.path_len_constraint,
        Ok(_) => return Err(SvidError::NotCa),
        Err(e) => return Err(SvidError::BadBasicConstraints(e.to_string())),
    };
    if !key_usage(&cert)?.key_cert_sign() {
        return Err(SvidError::NoKeyCertSign);
    }
    let (not_before, not_after) = validity(&cert)?;
    Ok(SigningCert {
        trust_domain,
        path_len,
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        not_before,
        not_after,
    })
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::TrailingData(rest.len()));
    }
    let version = cert.version().0;
    if version != 2 {
        return Err(SvidError::NotVersion3(version + 1));
    }
    Ok(cert)
}

struct Sans {
    uris: Vec<String>,
    dns: Vec<String>,
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Result<Sans, SvidError> {
    let mut sans = Sans {
        uris: Vec::new(),
        dns: Vec::new(),
    };
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::BadSubjectAltName(e.to_string()))?;
    let Some(ext) = ext else {
        return Ok(sans);
    };
    if cert.subject().iter().next().is_none() && !ext.critical {
        return Err(SvidError::SanNotCriticalWithEmptySubject);
    }
    for name in &ext.value.general_names {
        match name {
            GeneralName::URI(uri) => sans.uris.push((*uri).to_owned()),
            GeneralName::DNSName(dns) => sans.dns.push((*dns).to_owned()),
            _ => {}
        }
    }
    Ok(sans)
}

fn parse_uri(uri: &str) -> Result<SpiffeId, SvidError> {
    SpiffeId::new(uri).map_err(|source| SvidError::NotSpiffeId {
        uri: uri.to_owned(),
        source,
    })
}

fn is_ca(cert: &X509Certificate<'_>) -> Result<Option<bool>, SvidError> {
    cert.basic_constraints()
        .map(|bc| bc.map(|bc| bc.value.ca))
        .map_err(|e| SvidError::BadBasicConstraints(e.to_string()))
}

fn key_usage(cert: &X509Certificate<'_>) -> Result<x509_parser::extensions::KeyUsage, SvidError> {
    match cert.key_usage() {
        Ok(Some(ku)) if ku.critical => Ok(*ku.value),
        Ok(Some(_)) => Err(SvidError::KeyUsageNotCritical),
        Ok(None) => Err(SvidError::NoKeyUsage),
        Err(e) => Err(SvidError::BadKeyUsage(e.to_string())),
    }
}

fn validity(cert: &X509Certificate<'_>) -> Result<(SystemTime, SystemTime), SvidError> {
    let validity = cert.validity();
    let not_before = to_system_time(validity.not_before).ok_or(SvidError::BadValidity)?;
    let not_after = to_system_time(validity.not_after).ok_or(SvidError::BadValidity)?;
    if not_after < not_before {
        return Err(SvidError::BadValidity);
    }
    Ok((not_before, not_after))
}

fn to_system_time(time: ASN1Time) -> Option<SystemTime> {
    let secs = u64::try_from(time.timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;

//! Checking that CA certificates chain to a root, without trusting anything they say.

use std::time::{Duration, SystemTime};

use halyard_proto::{SvidError, validate_signing_cert};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Why a chain does not lead to a root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain is empty.
    #[error("the chain holds no certificate")]
    Empty,
    /// No root was given.
    #[error("no root certificate was given")]
    NoRoots,
    /// A certificate does not parse.
    #[error("certificate {index} of the chain does not parse: {reason}")]
    Malformed {
        /// Position in the chain, 0 first.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A root does not parse.
    #[error("root certificate {index} does not parse: {reason}")]
    MalformedRoot {
        /// Position among the roots.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A certificate that may not sign the one before it.
    #[error("certificate {index} of the chain cannot sign: {source}")]
    NotASigner {
        /// Position in the chain.
        index: usize,
        /// The rule it breaks.
        source: SvidError,
    },
    /// A root that may not sign.
    #[error("root certificate {index} cannot sign: {source}")]
    RootNotASigner {
        /// Position among the roots.
        index: usize,
        /// The rule it breaks.
        source: SvidError,
    },
    /// A certificate outside its validity period.
    #[error("certificate {index} of the chain is {state} (valid {not_before} to {not_after})")]
    NotValidNow {
        /// Position in the chain.
        index: usize,
        /// "expired" or "not yet valid".
        state: &'static str,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// The next certificate is not the issuer of this one.
    #[error(
        "certificate {index} of the chain was not issued by certificate {next}: issuer name or signature does not match"
    )]
    WrongIssuer {
        /// Position in the chain.
        index: usize,
        /// Position of the certificate that should have issued it.
        next: usize,
    },
    /// The last certificate was not issued by any root given.
    #[error("the chain does not lead to the root: no given root issued certificate {index}")]
    UntrustedRoot {
        /// Position of the last certificate.
        index: usize,
    },
}

/// Checks that `chain` (lowest first: an intermediate, then any upstream intermediates) is a
/// sequence of CA certificates, each valid at `now` and signed by the next, the last one signed
/// by one of `roots`. Returns the index of that root.
pub fn verify_chain(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: SystemTime,
) -> Result<usize, ChainError> {
    if chain.is_empty() {
        return Err(ChainError::Empty);
    }
    if roots.is_empty() {
        return Err(ChainError::NoRoots);
    }
    let certs = chain
        .iter()
        .enumerate()
        .map(|(index, der)| parse(der).map_err(|reason| ChainError::Malformed { index, reason }))
        .collect::<Result<Vec<_>, _>>()?;
    let root_certs = roots
        .iter()
        .enumerate()
        .map(|(index, der)| {
            validate_signing_cert(der)
                .map_err(|source| ChainError::RootNotASigner { index, source })?;
            parse(der).map_err(|reason| ChainError::MalformedRoot { index, reason })
        })
        .collect::<Result<Vec<_>, _>>()?;

    for (index, (cert, der)) in certs.iter().zip(chain).enumerate() {
        validate_signing_cert(der).map_err(|source| ChainError::NotASigner { index, source })?;
        check_time(index, cert, now)?;
        if let Some(next) = certs.get(index + 1)
            && !issued_by(cert, next)
        {
            return Err(ChainError::WrongIssuer {
                index,
                next: index + 1,
            });
        }
    }
    let last = certs.len() - 1;
    root_certs
        .iter()
        .position(|root| issued_by(&certs[last], root))
        .ok_or(ChainError::UntrustedRoot { index: last })
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(format!("{} trailing bytes", rest.len())),
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(e.to_string()),
    }
}

fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn check_time(index: usize, cert: &X509Certificate<'_>, now: SystemTime) -> Result<(), ChainError> {
    let validity = cert.validity();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let now_secs = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let state = if now_secs < validity.not_before.timestamp() {
        "not yet valid"
    } else if now_secs > validity.not_after.timestamp() {
        "expired"
    } else {
        return Ok(());
    };
    Err(ChainError::NotValidNow {
        index,
        state,
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
    })
}

//! The trust domain: the authority part of a SPIFFE ID, naming the system that issues it.

use std::fmt;
use std::str::FromStr;

use crate::spiffe_id::{SpiffeId, SpiffeIdError};

/// The SPIFFE-ID spec caps the trust domain at the RFC 3986 host limit.
pub(crate) const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A SPIFFE trust domain name such as `cluster.local`.
///
/// It can only exist valid: 1 to 255 bytes of lowercase ASCII letters, digits, `.`, `-` and `_`,
/// with no port and no userinfo. Upper-case input is rejected, not folded, so that a name means
/// the same thing everywhere it is compared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain from its bare name (`example.org`) or from its trust-domain SPIFFE ID
    /// (`spiffe://example.org`).
    ///
    /// Anything that looks like a URI (contains `:/`) is parsed as a SPIFFE ID, which must then
    /// have an empty path: `spiffe://example.org/web` names a workload, not a trust domain.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        if s.contains(":/") {
            let id = SpiffeId::new(s)?;
            if !id.is_trust_domain_id() {
                return Err(SpiffeIdError::TrustDomainHasPath);
            }
            return Ok(id.trust_domain().clone());
        }
        validate_name(s, 0)?;
        Ok(Self(s.to_owned()))
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>` with an empty path.
    pub fn id(&self) -> SpiffeId {
        SpiffeId::from_valid_parts(self.clone(), "")
    }

    /// Wraps a name that [`validate_name`] has already accepted.
    pub(crate) fn from_validated(name: &str) -> Self {
        Self(name.to_owned())
    }
}

/// Checks a bare trust domain name. `offset` is where `name` starts in the caller's input, so
/// that errors point at the right byte.
pub(crate) fn validate_name(name: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    // Userinfo and port are structural mistakes; say so rather than blame one character.
    if name.contains('@') {
        return Err(SpiffeIdError::Userinfo);
    }
    if name.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if let Some((at, character)) = name.char_indices().find(|&(_, c)| !is_trust_domain_char(c)) {
        return Err(SpiffeIdError::BadTrustDomainChar {
            character,
            offset: offset + at,
        });
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: name.len() });
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests;

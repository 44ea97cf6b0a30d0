//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), parsed exactly as the SPIFFE-ID spec says.

use std::fmt;
use std::str::FromStr;

use crate::trust_domain::{self, MAX_TRUST_DOMAIN_LEN, TrustDomain};

/// The only scheme a SPIFFE ID may have, with its separator; matched byte for byte.
pub(crate) const SCHEME: &str = "spiffe://";

/// The SPIFFE-ID spec's interoperability limit on a whole ID, scheme included.
pub(crate) const MAX_ID_LEN: usize = 2048;

/// Why a string is not a SPIFFE ID or trust domain.
///
/// Byte offsets count from the start of the string that was parsed: the whole input of
/// [`SpiffeId::new`] and [`TrustDomain::new`], the path given to [`SpiffeId::from_path`], and the
/// joined path (`/a/b`) of [`SpiffeId::from_segments`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input was the empty string.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input is longer than the spec's limit for a whole SPIFFE ID.
    #[error("SPIFFE ID is {len} bytes; the limit is {max}", max = MAX_ID_LEN)]
    TooLong {
        /// The input's length in bytes.
        len: usize,
    },
    /// The input does not start with exactly `spiffe://` (lowercase, two slashes).
    #[error("scheme must be 'spiffe://'")]
    WrongScheme,
    /// Nothing stands between `spiffe://` and the path.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain has a character other than `a-z`, `0-9`, `.`, `-` or `_`.
    #[error(
        "trust domain character {character:?} at byte {offset} is not allowed: \
         trust domains are lowercase letters, digits, '.', '-' and '_'"
    )]
    BadTrustDomainChar {
        /// The offending character.
        character: char,
        /// Its byte offset in the parsed string.
        offset: usize,
    },
    /// The trust domain is longer than the 255 bytes RFC 3986 allows a host.
    #[error("trust domain is {len} bytes; the limit is {max}", max = MAX_TRUST_DOMAIN_LEN)]
    TrustDomainTooLong {
        /// The trust domain's length in bytes.
        len: usize,
    },
    /// The authority has a `:`, which would introduce a port.
    #[error("SPIFFE IDs cannot have a port")]
    Port,
    /// The authority has an `@`, which would introduce userinfo.
    #[error("SPIFFE IDs cannot have userinfo")]
    Userinfo,
    /// The input has a `?` that starts a query.
    #[error("SPIFFE IDs cannot have a query")]
    Query,
    /// The input has a `#` that starts a fragment.
    #[error("SPIFFE IDs cannot have a fragment")]
    Fragment,
    /// A non-empty path does not begin with `/`.
    #[error("path must start with '/'")]
    MissingLeadingSlash,
    /// A path segment has a character other than `a-z`, `A-Z`, `0-9`, `.`, `-` or `_`.
    #[error(
        "path character {character:?} at byte {offset} is not allowed: \
         path segments are letters, digits, '.', '-' and '_'"
    )]
    BadPathChar {
        /// The offending character.
        character: char,
        /// Its byte offset in the parsed string.
        offset: usize,
    },
    /// The path has `//` somewhere, or an empty segment was given.
    #[error("path has an empty segment")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("path has a dot segment '{segment}'")]
    DotSegment {
        /// The segment, `.` or `..`.
        segment: &'static str,
    },
    /// The path ends with `/`.
    #[error("path has a trailing slash")]
    TrailingSlash,
    /// A trust domain was given as a SPIFFE ID whose path is not empty.
    #[error("a trust domain cannot have a path")]
    TrustDomainHasPath,
}

/// A SPIFFE ID such as `spiffe://cluster.local/ns/default/sa/web`.
///
/// It can only exist valid per the SPIFFE-ID spec: scheme exactly `spiffe://`, a valid
/// [`TrustDomain`], and a path that is empty or `/segment(/segment)*` with segments of ASCII
/// letters, digits, `.`, `-` and `_` (no empty, `.` or `..` segments, no trailing slash), no
/// query, fragment, port, userinfo or percent-encoding, and at most 2048 bytes in all.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    // Compared first, so ordering is that of the full string. The other fields derive from it.
    id: String,
    trust_domain: TrustDomain,
    path_start: usize,
}

impl SpiffeId {
    /// Parses a full SPIFFE ID.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        check_len(s.len())?;
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        // Wherever it stands, the first `?` or `#` ends the path and starts a query or fragment.
        if let Some(at) = rest.find(['?', '#']) {
            return Err(match rest.as_bytes()[at] {
                b'?' => SpiffeIdError::Query,
                _ => SpiffeIdError::Fragment,
            });
        }
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        trust_domain::validate_name(td, SCHEME.len())?;
        validate_path(path, SCHEME.len() + td.len())?;
        Ok(Self {
            id: s.to_owned(),
            trust_domain: TrustDomain::from_validated(td),
            path_start: SCHEME.len() + td.len(),
        })
    }

    /// Builds the ID `spiffe://<td><path>` from a path such as `/ns/default/sa/web`, or from `""`
    /// for the trust domain's own ID.
    pub fn from_path(td: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        validate_path(path, 0)?;
        check_len(SCHEME.len() + td.as_str().len() + path.len())?;
        Ok(Self::from_valid_parts(td.clone(), path))
    }

    /// Builds the ID whose path is `segments` joined by `/`; no segments gives the trust
    /// domain's own ID. Each segment must be one valid segment: `"a/b"` is rejected.
    pub fn from_segments(td: &TrustDomain, segments: &[&str]) -> Result<Self, SpiffeIdError> {
        let mut path = String::new();
        for segment in segments {
            validate_segment(segment, path.len() + 1)?;
            path.push('/');
            path.push_str(segment);
        }
        check_len(SCHEME.len() + td.as_str().len() + path.len())?;
        Ok(Self::from_valid_parts(td.clone(), &path))
    }

    /// The trust domain the ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, `""` or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// Whether this is a trust domain's own ID, with an empty path.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// Whether the ID belongs to trust domain `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain == *td
    }

    /// The whole ID, `spiffe://<td><path>`, exactly as parsed.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Joins a trust domain and a path that have both been validated.
    pub(crate) fn from_valid_parts(td: TrustDomain, path: &str) -> Self {
        let id = format!("{SCHEME}{td}{path}");
        let path_start = id.len() - path.len();
        Self {
            id,
            trust_domain: td,
            path_start,
        }
    }
}

fn check_len(len: usize) -> Result<(), SpiffeIdError> {
    if len > MAX_ID_LEN {
        return Err(SpiffeIdError::TooLong { len });
    }
    Ok(())
}

/// Checks a path that is empty or starts with `/`. `offset` is where it starts in the input.
fn validate_path(path: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let body = path
        .strip_prefix('/')
        .ok_or(SpiffeIdError::MissingLeadingSlash)?;
    let mut at = offset + 1;
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_none() {
            return Err(SpiffeIdError::TrailingSlash);
        }
        validate_segment(segment, at)?;
        at += segment.len() + 1;
    }
    Ok(())
}

/// Checks one path segment, which starts at byte `offset` of the input.
fn validate_segment(segment: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if segment.is_empty() {
        return Err(SpiffeIdError::EmptySegment);
    }
    if let Some((at, character)) = segment.char_indices().find(|&(_, c)| !is_path_char(c)) {
        return Err(SpiffeIdError::BadPathChar {
            character,
            offset: offset + at,
        });
    }
    match segment {
        "." => Err(SpiffeIdError::DotSegment { segment: "." }),
        ".." => Err(SpiffeIdError::DotSegment { segment: ".." }),
        _ => Ok(()),
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&self.id).finish()
    }
}

#[cfg(test)]
mod tests;

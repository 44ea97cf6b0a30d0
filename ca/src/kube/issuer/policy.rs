//! An issuer's policy, compiled from its spec: which SPIFFE IDs, DNS names, lifetimes and usages
//! it signs. Pure: no API calls, no signing.

use std::time::Duration;

use halyard_proto::{SpiffeId, TrustDomain, Ttl};

use super::crd::{IssuerPolicySpec, Usage};

/// The placeholder that stands for the CertificateRequest's namespace in a pattern.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Why an issuer's spec cannot be used (the issuer is not Ready).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// No SPIFFE ID pattern.
    #[error("spec.allowedSpiffeIds is empty: the issuer would sign nothing")]
    NoSpiffeIds,
    /// A SPIFFE ID pattern outside the trust domain, or with characters no SPIFFE ID has.
    #[error("spec.allowedSpiffeIds: {pattern:?} {why}")]
    BadSpiffeIdPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// A DNS name pattern with characters no DNS name has.
    #[error("spec.allowedDnsNames: {pattern:?} {why}")]
    BadDnsPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// `maxDuration` is not a positive Go duration.
    #[error("spec.maxDuration: {0}")]
    BadMaxDuration(String),
}

/// Why a CertificateRequest is refused by its issuer's policy (for good: the request fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `isCA: true`.
    #[error("a CA certificate was requested (isCA: true); Halyard issues X509-SVID leaves only")]
    CaRequested,
    /// The CSR names no SPIFFE ID, or several.
    #[error("the CSR must carry exactly one SPIFFE ID as URI SAN; it carries {0}")]
    UriSans(String),
    /// The CSR's URI SAN is not a SPIFFE ID.
    #[error("the CSR's URI SAN {uri:?} is not a SPIFFE ID: {why}")]
    NotSpiffeId {
        /// The URI.
        uri: String,
        /// Why.
        why: String,
    },
    /// A namespaced issuer asked for an ID of another namespace.
    #[error(
        "{id} is outside namespace {namespace}: a HalyardIssuer signs only spiffe://<trust domain>/ns/{namespace}/…"
    )]
    OutsideNamespace {
        /// The ID asked for.
        id: String,
        /// The issuer's namespace.
        namespace: String,
    },
    /// No SPIFFE ID pattern matches.
    #[error("{id} matches none of spec.allowedSpiffeIds {patterns:?}")]
    SpiffeIdNotAllowed {
        /// The ID asked for.
        id: String,
        /// The issuer's patterns.
        patterns: Vec<String>,
    },
    /// No DNS name pattern matches.
    #[error("DNS name {name:?} matches none of spec.allowedDnsNames {patterns:?}")]
    DnsNameNotAllowed {
        /// The name asked for.
        name: String,
        /// The issuer's patterns.
        patterns: Vec<String>,
    },
    /// A usage an X509-SVID cannot have.
    #[error(
        "usage {0:?} is not one an X509-SVID has: digital signature, key encipherment, server auth, client auth"
    )]
    UnsupportedUsage(String),
    /// A usage the issuer does not allow.
    #[error("usage {usage:?} is not in spec.allowedUsages {allowed:?}")]
    UsageNotAllowed {
        /// The usage asked for.
        usage: String,
        /// What the issuer allows.
        allowed: Vec<String>,
    },
    /// `spec.duration` unreadable or zero.
    #[error("spec.duration: {0}")]
    BadDuration(String),
}

/// A compiled issuer policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPolicy {
    spiffe_ids: Vec<String>,
    dns_names: Vec<String>,
    max_duration: Option<Duration>,
    usages: Vec<Usage>,
    /// A namespaced issuer's namespace.
    namespace: Option<String>,
}

/// What a CertificateRequest asks for, as far as policy is concerned.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// The CertificateRequest's namespace.
    pub namespace: &'a str,
    /// The CSR's URI SANs.
    pub uris: &'a [String],
    /// The CSR's DNS SANs.
    pub dns_names: &'a [String],
    /// `spec.usages`.
    pub usages: &'a [String],
    /// `spec.isCA`.
    pub is_ca: bool,
    /// `spec.duration`.
    pub duration: Option<&'a str>,
}

/// What the policy grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The lifetime, when the request names one or the issuer caps it (the CA clamps it further).
    pub ttl: Option<Ttl>,
}

impl IssuerPolicy {
    /// Compiles `spec` for an issuer in `trust_domain`, namespaced in `namespace` when it is a
    /// HalyardIssuer.
    pub fn compile(
        spec: &IssuerPolicySpec,
        trust_domain: &TrustDomain,
        namespace: Option<&str>,
    ) -> Result<IssuerPolicy, SpecError> {
        if spec.allowed_spiffe_ids.is_empty() {
            return Err(SpecError::NoSpiffeIds);
        }
        let prefix = format!("spiffe://{trust_domain}/");
        for pattern in &spec.allowed_spiffe_ids {
            let bad = |why: &str| SpecError::BadSpiffeIdPattern {
                pattern: pattern.clone(),
                why: why.to_owned(),
            };
            let Some(path) = pattern.strip_prefix(&prefix) else {
                return Err(bad(&format!("does not start with {prefix}")));
            };
            check_pattern(path, '/', |c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
            })
            .map_err(|why| bad(&why))?;
        }
        for pattern in &spec.allowed_dns_names {
            check_pattern(pattern, '.', |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            })
            .map_err(|why| SpecError::BadDnsPattern {
                pattern: pattern.clone(),
                why,
            })?;
        }
        let max_duration = match &spec.max_duration {
            None => None,
            Some(text) => match parse_go_duration(text) {
                Ok(d) if d >= Duration::from_secs(1) => Some(d),
                Ok(_) => {
                    return Err(SpecError::BadMaxDuration(format!(
                        "{text:?} is shorter than a second"
                    )));
                }
                Err(why) => return Err(SpecError::BadMaxDuration(why)),
            },
        };
        Ok(IssuerPolicy {
            spiffe_ids: spec.allowed_spiffe_ids.clone(),
            dns_names: spec.allowed_dns_names.clone(),
            max_duration,
            usages: spec
                .allowed_usages
                .clone()
                .unwrap_or_else(|| Usage::ALL.to_vec()),
            namespace: namespace.map(str::to_owned),
        })
    }

    /// Judges what a CertificateRequest asks for; `trust_domain` is the CA's.
    pub fn authorize(
        &self,
        asked: &Asked<'_>,
        trust_domain: &TrustDomain,
    ) -> Result<Granted, Refusal> {
        if asked.is_ca {
            return Err(Refusal::CaRequested);
        }
        let [uri] = asked.uris else {
            return Err(Refusal::UriSans(if asked.uris.is_empty() {
                "none".to_owned()
            } else {
                format!("{}", asked.uris.len())
            }));
        };
        let spiffe_id = SpiffeId::new(uri).map_err(|e| Refusal::NotSpiffeId {
            uri: uri.clone(),
            why: e.to_string(),
        })?;
        if let Some(namespace) = &self.namespace {
            let own = format!("spiffe://{trust_domain}/ns/{namespace}/");
            if !spiffe_id.as_str().starts_with(&own) {
                return Err(Refusal::OutsideNamespace {
                    id: spiffe_id.to_string(),
                    namespace: namespace.clone(),
                });
            }
        }
        let matches = |patterns: &[String], name: &str, separator: char| {
            patterns.iter().any(|pattern| {
                let pattern = pattern.replace(NAMESPACE_PLACEHOLDER, asked.namespace);
                glob_match(&pattern, name, separator)
            })
        };
        if !matches(&self.spiffe_ids, spiffe_id.as_str(), '/') {
            return Err(Refusal::SpiffeIdNotAllowed {
                id: spiffe_id.to_string(),
                patterns: self.spiffe_ids.clone(),
            });
        }
        for name in asked.dns_names {
            if !matches(&self.dns_names, &name.to_ascii_lowercase(), '.') {
                return Err(Refusal::DnsNameNotAllowed {
                    name: name.clone(),
                    patterns: self.dns_names.clone(),
                });
            }
        }
        self.check_usages(asked.usages)?;
        Ok(Granted {
            spiffe_id,
            ttl: self.ttl(asked.duration)?,
        })
    }

    fn check_usages(&self, asked: &[String]) -> Result<(), Refusal> {
        // cert-manager's default when a request names none.
        const DEFAULT: [Usage; 2] = [Usage::DigitalSignature, Usage::KeyEncipherment];
        let asked: Vec<Usage> = if asked.is_empty() {
            DEFAULT.to_vec()
        } else {
            asked
                .iter()
                .map(|name| {
                    Usage::ALL
                        .into_iter()
                        .find(|usage| usage.name() == name)
                        .ok_or_else(|| Refusal::UnsupportedUsage(name.clone()))
                })
                .collect::<Result<_, _>>()?
        };
        match asked.iter().find(|usage| !self.usages.contains(usage)) {
            Some(usage) => Err(Refusal::UsageNotAllowed {
                usage: usage.name().to_owned(),
                allowed: self.usages.iter().map(|u| u.name().to_owned()).collect(),
            }),
            None => Ok(()),
        }
    }

    /// The lifetime to ask the CA for: the request's, capped by `maxDuration`.
    fn ttl(&self, requested: Option<&str>) -> Result<Option<Ttl>, Refusal> {
        let requested = requested
            .map(|text| {
                parse_go_duration(text).and_then(|d| {
                    (d >= Duration::from_secs(1))
                        .then_some(d)
                        .ok_or_else(|| format!("{text:?} is shorter than a second"))
                })
            })
            .transpose()
            .map_err(Refusal::BadDuration)?;
        let ttl = match (requested, self.max_duration) {
            (Some(asked), Some(max)) => Some(asked.min(max)),
            (asked, max) => asked.or(max),
        };
        Ok(ttl.and_then(|d| Ttl::from_secs(d.as_secs())))
    }
}

/// Checks a pattern's characters: `allowed` ones, `*`, the separator and the namespace
/// placeholder; no empty segment.
fn check_pattern(
    pattern: &str,
    separator: char,
    allowed: impl Fn(char) -> bool,
) -> Result<(), String> {
    let plain = pattern.replace(NAMESPACE_PLACEHOLDER, "x");
    if let Some(c) = plain
        .chars()
        .find(|&c| c != '*' && c != separator && !allowed(c))
    {
        return Err(format!("has the character {c:?}"));
    }
    if plain.split(separator).any(str::is_empty) {
        return Err("has an empty segment".to_owned());
    }
    Ok(())
}

/// Whether `name` matches `pattern`, segment by segment (segments split at `separator`): a `*`
/// in a pattern segment stands for any run of characters within one name segment, so
/// `spiffe://td/ns/*/sa/*` matches `spiffe://td/ns/a/sa/b` but not `spiffe://td/ns/a/b/sa/c`,
/// and `*.example.com` matches `a.example.com` but not `a.b.example.com` nor `example.com`.
pub fn glob_match(pattern: &str, name: &str, separator: char) -> bool {
    let mut patterns = pattern.split(separator);
    let mut names = name.split(separator);
    loop {
        match (patterns.next(), names.next()) {
            (None, None) => return true,
            (Some(p), Some(n)) if segment_match(p.as_bytes(), n.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// One segment: `*` matches any run of bytes, everything else itself; an empty name segment
/// matches only an empty pattern segment.
fn segment_match(pattern: &[u8], name: &[u8]) -> bool {
    if name.is_empty() {
        return pattern.is_empty();
    }
    // Greedy matching with backtracking to the last star: linear for patterns with one star,
    // quadratic at worst.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Parses a Go duration (`time.ParseDuration`, as cert-manager writes `spec.duration`):
/// `2160h0m0s`, `90m`, `1.5h`, `300ms`. Negative durations are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not a duration such as 24h or 1h30m: {why}");
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest.starts_with('-') {
        return Err(bad("it is negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(bad("a number has no unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad(&format!("{number:?} is not a number")));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| bad(&format!("{number:?} is not a number")))?;
        let part = Duration::try_from_secs_f64(value * nanos_per_unit / 1e9)
            .map_err(|_| bad("it is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| bad("it is too long"))?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests;

//! The intermediate: the online CA that signs X509-SVIDs.

use std::time::{Duration, SystemTime};

use halyard_proto::{SpiffeId, SpiffeIdError, TrustDomain, Ttl};
use rcgen::Issuer;

use super::csr::{Csr, PublicKeyKind};
use super::key::PrivateKey;
use super::policy::{Grant, Policy};
use super::profile::{self, Validity};
use super::root::rfc3339;
use super::serial::Serial;
use super::signer::{CaCertError, authority_id, ca_signer, key_id};

/// Why an intermediate cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// No certificate was given.
    #[error("no intermediate certificate was given")]
    NoCertificate,
    /// The certificate and key cannot sign.
    #[error("intermediate certificate {0}")]
    Cert(#[from] CaCertError),
}

/// Why a workload certificate was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The CSR asks for a CA certificate.
    #[error(
        "CSR asks for a CA certificate (basic constraints cA=true); workload certificates are never CAs"
    )]
    CaRequested,
    /// The CSR carries no URI SAN.
    #[error("CSR has no URI SAN: it must carry the SPIFFE ID {0}")]
    NoUriSan(SpiffeId),
    /// The CSR carries several URI SANs.
    #[error("CSR has {0} URI SANs; an X509-SVID carries exactly one SPIFFE ID")]
    MultipleUriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("CSR URI SAN {uri:?} is not a SPIFFE ID: {source}")]
    NotSpiffeId {
        /// The URI.
        uri: String,
        /// Why it is not a SPIFFE ID.
        source: SpiffeIdError,
    },
    /// The SPIFFE ID belongs to another trust domain.
    #[error("SPIFFE ID {id} is not in trust domain {trust_domain}, which this CA serves")]
    WrongTrustDomain {
        /// The ID asked for.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// The SPIFFE ID names a trust domain, not a workload.
    #[error("SPIFFE ID {0} names a trust domain; a workload ID needs a path")]
    NoPath(SpiffeId),
    /// The caller may not hold the identity asked for.
    #[error("CSR asks for {requested} but the caller may hold only {authorized}")]
    NotAuthorized {
        /// What the CSR asked for.
        requested: SpiffeId,
        /// What the caller may hold.
        authorized: SpiffeId,
    },
    /// A DNS name the grant does not include.
    #[error("DNS name {name:?} is not allowed for {id}")]
    DnsNameNotAllowed {
        /// The name.
        name: String,
        /// The identity.
        id: SpiffeId,
    },
    /// More DNS names than the policy allows.
    #[error("{count} DNS names asked for; the limit is {max}")]
    TooManyDnsNames {
        /// How many.
        count: usize,
        /// The policy's limit.
        max: usize,
    },
    /// SANs other than URI and DNS.
    #[error(
        "CSR asks for {0} SANs that are neither URI nor DNS (IP, email, …); only URI and DNS SANs are issued"
    )]
    OtherSans(usize),
    /// The intermediate has expired.
    #[error("intermediate expired at {0}; it can sign nothing until a new one is imported")]
    IntermediateExpired(String),
    /// The intermediate is not yet valid.
    #[error("intermediate is not valid before {0}")]
    IntermediateNotYetValid(String),
    /// The signer failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A freshly issued X509-SVID.
#[derive(Clone, Debug)]
pub struct IssuedSvid {
    /// The identity it carries.
    pub spiffe_id: SpiffeId,
    /// Its serial number.
    pub serial: Serial,
    /// Start of validity (backdated).
    pub not_before: SystemTime,
    /// End of validity: the granted TTL, or the intermediate's end if sooner.
    pub not_after: SystemTime,
    /// The leaf, DER.
    pub leaf: Vec<u8>,
    /// The intermediates above it, DER, lowest first (the root is not included).
    pub intermediates: Vec<Vec<u8>>,
}

impl IssuedSvid {
    /// Leaf then intermediates, DER.
    pub fn chain(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.leaf.as_slice()).chain(self.intermediates.iter().map(Vec::as_slice))
    }

    /// Leaf then intermediates, PEM.
    pub fn chain_pem(&self) -> String {
        super::certs_to_pem(self.chain())
    }
}

/// An intermediate CA with its key, chain and policy: signs X509-SVIDs.
#[derive(Debug)]
pub struct Authority {
    issuer: Issuer<'static, PrivateKey>,
    id: String,
    chain: Vec<Vec<u8>>,
    trust_domain: TrustDomain,
    not_before: SystemTime,
    not_after: SystemTime,
    policy: Policy,
}

impl Authority {
    /// An authority from its key and chain (its own certificate first, then any upstream
    /// intermediates), after checking that the certificate is a signing certificate for a trust
    /// domain and matches the key. Whether the chain leads to a root is checked where roots are
    /// known ([`super::verify_chain`]).
    pub fn new(
        key: PrivateKey,
        chain: Vec<Vec<u8>>,
        policy: Policy,
    ) -> Result<Authority, AuthorityError> {
        let cert = chain.first().ok_or(AuthorityError::NoCertificate)?;
        let (issuer, info, trust_domain) = ca_signer(key, cert)?;
        Ok(Authority {
            issuer,
            id: authority_id(cert),
            trust_domain,
            not_before: info.not_before(),
            not_after: info.not_after(),
            chain,
            policy,
        })
    }

    /// Signs an X509-SVID for `grant` over the key in `csr`, for `ttl` (the policy's default when
    /// `None`, clamped to its maximum and to the intermediate's own end).
    ///
    /// The CSR must ask for exactly the granted SPIFFE ID and no DNS name outside the grant.
    pub fn sign_svid(
        &self,
        csr: &Csr,
        grant: &Grant,
        ttl: Option<Ttl>,
        now: SystemTime,
    ) -> Result<IssuedSvid, SignError> {
        self.check_request(csr, grant)?;
        if now >= self.not_after {
            return Err(SignError::IntermediateExpired(rfc3339(self.not_after)));
        }
        if now < self.not_before {
            return Err(SignError::IntermediateNotYetValid(rfc3339(self.not_before)));
        }
        // From the untruncated time: its milliseconds keep serials in issue order.
        let serial = Serial::leaf(now).map_err(|_| SignError::Sign("no randomness".into()))?;
        // Whole seconds, as the certificate will hold them.
        let now = truncate_to_secs(now);
        let ttl = self.policy.grant_ttl(ttl);
        // Backdated for clocks that run behind, but by at most a tenth of the lifetime, so that a
        // short-lived certificate is not mostly spent before it is issued; in whole seconds, or
        // the certificate (which drops the fraction) would say an earlier time than we return.
        let backdate = self.policy.backdate.min(ttl.as_duration() / 10).as_secs();
        // Never before the intermediate's own start: a leaf must lie within its issuer's
        // validity (an upstream such as AWS Private CA may not backdate the intermediate).
        let validity = Validity {
            not_before: (now - Duration::from_secs(backdate)).max(self.not_before),
            not_after: (now + ttl.as_duration()).min(self.not_after),
        };
        let rsa = matches!(csr.key(), PublicKeyKind::Rsa(_));
        let mut params = profile::leaf(grant, rsa, &serial, validity)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        if let Some(base) = &self.policy.crl_base_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![format!("{}/{}.crl", base.trim_end_matches('/'), self.id)],
            }];
        }
        let spki = rcgen::SubjectPublicKeyInfo::from_der(csr.spki())
            .map_err(|e| SignError::Sign(e.to_string()))?;
        let leaf = params
            .signed_by(&spki, &self.issuer)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(IssuedSvid {
            spiffe_id: grant.spiffe_id.clone(),
            serial,
            not_before: validity.not_before,
            not_after: validity.not_after,
            leaf: leaf.der().to_vec(),
            intermediates: self.chain.clone(),
        })
    }

    fn check_request(&self, csr: &Csr, grant: &Grant) -> Result<(), SignError> {
        let authorized = &grant.spiffe_id;
        if !authorized.is_member_of(&self.trust_domain) {
            return Err(SignError::WrongTrustDomain {
                id: authorized.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if authorized.is_trust_domain_id() {
            return Err(SignError::NoPath(authorized.clone()));
        }
        if csr.requests_ca() {
            return Err(SignError::CaRequested);
        }
        let requested = match csr.uris() {
            [] if !grant.id_in_csr => authorized.clone(),
            [] => return Err(SignError::NoUriSan(authorized.clone())),
            [one] => SpiffeId::new(one).map_err(|source| SignError::NotSpiffeId {
                uri: one.clone(),
                source,
            })?,
            many => return Err(SignError::MultipleUriSans(many.len())),
        };
        if !requested.is_member_of(&self.trust_domain) {
            return Err(SignError::WrongTrustDomain {
                id: requested,
                trust_domain: self.trust_domain.clone(),
            });
        }
        if requested != *authorized {
            return Err(SignError::NotAuthorized {
                requested,
                authorized: authorized.clone(),
            });
        }
        if csr.other_names() > 0 {
            return Err(SignError::OtherSans(csr.other_names()));
        }
        if let Some(name) = csr
            .dns_names()
            .iter()
            .find(|n| !grant.dns_names.contains(n))
        {
            return Err(SignError::DnsNameNotAllowed {
                name: name.clone(),
                id: authorized.clone(),
            });
        }
        if grant.dns_names.len() > self.policy.max_dns_names {
            return Err(SignError::TooManyDnsNames {
                count: grant.dns_names.len(),
                max: self.policy.max_dns_names,
            });
        }
        Ok(())
    }

    /// The authority's id: lowercase hex of its subject key identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The signer, for CRLs.
    pub(super) fn issuer(&self) -> &Issuer<'static, PrivateKey> {
        &self.issuer
    }

    /// The intermediate's subject key identifier, which its CRLs name as their authority key.
    pub(super) fn key_id(&self) -> Vec<u8> {
        self.chain
            .first()
            .map(|cert| key_id(cert))
            .unwrap_or_default()
    }

    /// The trust domain this authority signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The intermediate and any upstream intermediates, DER, lowest first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// When the intermediate's validity starts.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the intermediate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The issuance policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// A PEM CSR for a new intermediate of `trust_domain` over `key`.
pub fn intermediate_csr(
    trust_domain: &TrustDomain,
    key: &PrivateKey,
    now: SystemTime,
) -> Result<String, AuthorityError> {
    profile::intermediate_request(trust_domain, now)
        .and_then(|params| params.serialize_request(key))
        .and_then(|csr| csr.pem())
        .map_err(|e| AuthorityError::Cert(CaCertError::Signer(e.to_string())))
}

fn truncate_to_secs(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

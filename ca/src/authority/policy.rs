//! Issuance policy, as data: which keys, which lifetimes, which names.

use std::time::Duration;

use halyard_proto::{SpiffeId, Ttl};

use super::csr::{CsrError, PublicKeyKind};

/// Which public keys a CSR may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// ECDSA P-256.
    pub ec_p256: bool,
    /// ECDSA P-384.
    pub ec_p384: bool,
    /// Ed25519.
    pub ed25519: bool,
    /// Smallest RSA modulus, in bits; `None` refuses RSA.
    pub rsa_min_bits: Option<usize>,
    /// Largest RSA modulus, in bits (verification cost grows with it).
    pub rsa_max_bits: usize,
}

impl Default for KeyPolicy {
    /// EC P-256 and P-384, Ed25519, RSA from 2048 to 8192 bits.
    fn default() -> Self {
        KeyPolicy {
            ec_p256: true,
            ec_p384: true,
            ed25519: true,
            rsa_min_bits: Some(2048),
            rsa_max_bits: 8192,
        }
    }
}

impl KeyPolicy {
    /// The keys a CA certificate (intermediate) may have: EC P-256/P-384, RSA ≥ 2048.
    pub fn for_ca() -> Self {
        KeyPolicy {
            ed25519: false,
            ..KeyPolicy::default()
        }
    }

    /// Refuses a key the policy does not allow, saying what it allows.
    pub fn check(&self, key: &PublicKeyKind) -> Result<(), CsrError> {
        let allowed = match key {
            PublicKeyKind::EcP256 => self.ec_p256,
            PublicKeyKind::EcP384 => self.ec_p384,
            PublicKeyKind::Ed25519 => self.ed25519,
            PublicKeyKind::Rsa(bits) => self
                .rsa_min_bits
                .is_some_and(|min| (min..=self.rsa_max_bits).contains(bits)),
            PublicKeyKind::EcOther(_) | PublicKeyKind::Other(_) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(CsrError::KeyNotAllowed {
                key: key.clone(),
                why: format!("allowed keys are {}", self.describe()),
            })
        }
    }

    fn describe(&self) -> String {
        let mut kinds = Vec::new();
        if self.ec_p256 {
            kinds.push("EC P-256".to_owned());
        }
        if self.ec_p384 {
            kinds.push("EC P-384".to_owned());
        }
        if let Some(min) = self.rsa_min_bits {
            kinds.push(format!("RSA {min}-{} bits", self.rsa_max_bits));
        }
        if self.ed25519 {
            kinds.push("Ed25519".to_owned());
        }
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(", ")
        }
    }
}

/// How the authority issues workload certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Keys a workload CSR may carry.
    pub keys: KeyPolicy,
    /// Lifetime when the request names none.
    pub default_ttl: Ttl,
    /// Longest lifetime granted; longer requests are clamped to it.
    pub max_ttl: Ttl,
    /// How far notBefore is set in the past, for clocks that run behind (at most a tenth of the
    /// certificate's lifetime).
    pub backdate: Duration,
    /// Most DNS names one certificate may carry.
    pub max_dns_names: usize,
    /// When set, leaves carry a CRL distribution point `<this>/<authority id>.crl` (the CA's
    /// HTTP `/crl/` path as clients reach it, e.g. `http://halyard-ca.halyard.svc:9090/crl`).
    /// Unset by default: agents already push CRLs to Envoy.
    pub crl_base_url: Option<String>,
}

impl Default for Policy {
    /// EC/Ed25519/RSA ≥ 2048 keys, 1 h by default, 24 h at most, 1 min of backdating.
    fn default() -> Self {
        Policy {
            keys: KeyPolicy::default(),
            default_ttl: Ttl::ONE_HOUR,
            max_ttl: Ttl::from_secs(24 * 3600).unwrap_or(Ttl::ONE_HOUR),
            backdate: Duration::from_secs(60),
            max_dns_names: 32,
            crl_base_url: None,
        }
    }
}

impl Policy {
    /// The lifetime to grant for a request: the default when none is asked, clamped to the maximum.
    pub fn grant_ttl(&self, requested: Option<Ttl>) -> Ttl {
        requested.unwrap_or(self.default_ttl).min(self.max_ttl)
    }
}

/// What a caller may hold: decided by whoever authenticated it (an entry, a token, the operator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The one SPIFFE ID the certificate will carry.
    pub spiffe_id: SpiffeId,
    /// DNS names the certificate will carry; a CSR may ask for these and no others.
    pub dns_names: Vec<String>,
    /// IP addresses the certificate will carry (a server's own certificate, dialled by address).
    pub ip_addresses: Vec<std::net::IpAddr>,
    /// Whether the CSR must name the SPIFFE ID itself. Node attestation turns this off: the
    /// agent does not know its node's name, so its CSR may carry no URI SAN (or exactly the ID).
    pub id_in_csr: bool,
}

impl Grant {
    /// A grant of an identity with no DNS names.
    pub fn new(spiffe_id: SpiffeId) -> Grant {
        Grant {
            spiffe_id,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            id_in_csr: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_defaults_ttl() {
        let policy = Policy::default();
        assert_eq!(policy.grant_ttl(None), Ttl::ONE_HOUR);
        let year = "1y".parse().unwrap();
        assert_eq!(policy.grant_ttl(Some(year)), policy.max_ttl);
        let ten_min = "10m".parse().unwrap();
        assert_eq!(policy.grant_ttl(Some(ten_min)), ten_min);
    }

    #[test]
    fn key_policy_names_what_it_allows() {
        let policy = KeyPolicy::default();
        assert!(policy.check(&PublicKeyKind::EcP256).is_ok());
        assert!(policy.check(&PublicKeyKind::Rsa(2048)).is_ok());
        let err = policy.check(&PublicKeyKind::Rsa(1024)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSR key RSA-1024 is not allowed: allowed keys are EC P-256, EC P-384, RSA 2048-8192 bits, Ed25519"
        );
        assert!(policy.check(&PublicKeyKind::Rsa(16384)).is_err());
        assert!(
            policy
                .check(&PublicKeyKind::EcOther("1.3.132.0.10".into()))
                .is_err()
        );
        assert!(KeyPolicy::for_ca().check(&PublicKeyKind::Ed25519).is_err());
    }
}

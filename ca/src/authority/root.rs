//! The offline root: made once, kept off-line, used to sign intermediates.

use std::time::{Duration, SystemTime};

use halyard_proto::{SpiffeId, TrustDomain, Ttl};
use rcgen::Issuer;

use super::csr::Csr;
use super::key::{KeyError, KeyType, PrivateKey};
use super::profile::{self, Validity};
use super::serial::Serial;
use super::signer::{CaCertError, ca_signer};

/// How far an intermediate's notBefore is backdated, for clocks that run behind.
const CA_BACKDATE: Duration = Duration::from_secs(300);

/// Why the root could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The key could not be made or read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The root certificate and key cannot sign.
    #[error("root certificate {0}")]
    Cert(#[from] CaCertError),
    /// The root certificate is not self-signed.
    #[error("root certificate is not self-issued: its issuer differs from its subject")]
    NotSelfIssued,
    /// The root has expired.
    #[error("root certificate expired at {0}")]
    Expired(String),
    /// An intermediate CSR for another trust domain, or with a path.
    #[error("intermediate CSR asks for {got}; this root signs intermediates for {want} only")]
    WrongIdentity {
        /// What the CSR asked for.
        got: String,
        /// The root's trust domain ID.
        want: SpiffeId,
    },
    /// An intermediate CSR asking for names a CA does not carry.
    #[error("intermediate CSR asks for {0}; a CA certificate carries only spiffe://<trust domain>")]
    UnexpectedNames(String),
    /// The signer failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A root CA: its certificate and the key that signs with it.
#[derive(Debug)]
pub struct RootCa {
    issuer: Issuer<'static, PrivateKey>,
    cert: Vec<u8>,
    trust_domain: TrustDomain,
    not_after: SystemTime,
}

impl RootCa {
    /// Makes a new self-signed root for `trust_domain`, valid from `now` for `ttl`.
    pub fn generate(
        trust_domain: &TrustDomain,
        key_type: KeyType,
        ttl: Ttl,
        now: SystemTime,
    ) -> Result<RootCa, RootError> {
        let key = PrivateKey::generate(key_type)?;
        let serial = Serial::random().map_err(|_| RootError::Sign("no randomness".into()))?;
        let validity = Validity {
            not_before: now,
            not_after: now + ttl.as_duration(),
        };
        let params = profile::root(trust_domain, &serial, validity)
            .map_err(|e| RootError::Sign(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| RootError::Sign(e.to_string()))?
            .der()
            .to_vec();
        Self::load(key, cert)
    }

    /// A root from its key and certificate, after checking that they belong together and that the
    /// certificate is a self-issued CA naming its trust domain.
    pub fn load(key: PrivateKey, cert: Vec<u8>) -> Result<RootCa, RootError> {
        let (issuer, info, trust_domain) = ca_signer(key, &cert)?;
        if !info.is_self_issued() {
            return Err(RootError::NotSelfIssued);
        }
        Ok(RootCa {
            issuer,
            cert,
            trust_domain,
            not_after: info.not_after(),
        })
    }

    /// Signs an intermediate for this root's trust domain, valid for `ttl` or until the root
    /// expires, whichever is sooner.
    pub fn sign_intermediate(
        &self,
        csr: &Csr,
        ttl: Ttl,
        now: SystemTime,
    ) -> Result<Vec<u8>, RootError> {
        if now >= self.not_after {
            return Err(RootError::Expired(rfc3339(self.not_after)));
        }
        let want = self.trust_domain.id();
        match csr.uris() {
            [] => {}
            [uri] if *uri == want.as_str() => {}
            uris => {
                return Err(RootError::WrongIdentity {
                    got: uris.join(", "),
                    want,
                });
            }
        }
        if !csr.dns_names().is_empty() || csr.other_names() > 0 {
            let mut names = csr.dns_names().to_vec();
            if csr.other_names() > 0 {
                names.push(format!("{} other names", csr.other_names()));
            }
            return Err(RootError::UnexpectedNames(names.join(", ")));
        }
        let serial = Serial::random().map_err(|_| RootError::Sign("no randomness".into()))?;
        let validity = Validity {
            not_before: now - CA_BACKDATE,
            not_after: (now + ttl.as_duration()).min(self.not_after),
        };
        let name = csr.common_name().map_or_else(
            || format!("Halyard intermediate CA {}", self.trust_domain),
            str::to_owned,
        );
        let params = profile::intermediate(&self.trust_domain, &name, &serial, validity)
            .map_err(|e| RootError::Sign(e.to_string()))?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(csr.spki())
            .map_err(|e| RootError::Sign(e.to_string()))?;
        params
            .signed_by(&spki, &self.issuer)
            .map(|cert| cert.der().to_vec())
            .map_err(|e| RootError::Sign(e.to_string()))
    }

    /// The root certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// The root's key.
    pub fn key(&self) -> &PrivateKey {
        self.issuer.key()
    }

    /// The trust domain the root serves.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// When the root expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// A time as RFC 3339 (UTC), for messages.
pub fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{time:?}"))
}

//! The one path by which a certificate leaves the CA: check limits, sign, journal, hand out.

use std::time::{Instant, SystemTime};

use halyard_proto::Ttl;
use tracing::{debug, warn};

use super::Ca;
use super::limits::Spent;
use crate::authority::{Csr, CsrError, Grant, IssuedSvid, SignError};
use crate::store::{IssuedRecord, StoreError};

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The CSR is unacceptable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The request is not one the caller may make, or the CA cannot sign now.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Too many signatures in flight.
    #[error("the CA is at its limit of {0} signatures in flight; retry with backoff")]
    Busy(usize),
    /// The caller's rate budget is spent.
    #[error(
        "{caller} is over its rate limit of {rate} certificates per second; retry with backoff"
    )]
    RateLimited {
        /// The caller.
        caller: String,
        /// Its budget.
        rate: u32,
    },
    /// The SPIFFE ID's rate budget is spent, whoever asks for it.
    #[error(
        "{spiffe_id} is over its per-identity rate limit of {per_minute} certificates per minute \
         (burst {burst}); retry with backoff"
    )]
    IdentityRateLimited {
        /// The identity.
        spiffe_id: String,
        /// Its sustained budget.
        per_minute: u32,
        /// What it may take at once.
        burst: u32,
    },
    /// The journal could not record the certificate, so it was not handed out.
    #[error("not issued: the journal could not record it: {0}")]
    Journal(#[from] StoreError),
}

impl IssueError {
    /// Whether this is a refusal of the request itself (a wrong CSR, an identity the policy does
    /// not sign), which asking again will not change, rather than a passing state of the CA
    /// (busy, rate limited, the journal or the intermediate unavailable).
    pub fn is_refusal(&self) -> bool {
        match self {
            IssueError::Csr(_) => true,
            IssueError::Sign(sign) => !matches!(
                sign,
                SignError::IntermediateExpired(_)
                    | SignError::IntermediateNotYetValid(_)
                    | SignError::Sign(_)
            ),
            _ => false,
        }
    }
}

impl Ca {
    /// Signs `csr_der` for `grant` and returns the certificate only once its journal row is
    /// durable. `caller` names who asked (e.g. `node:worker-1`) for the journal; `rate_key`, when
    /// set, is charged against the per-node rate limit. Every identity but the CA's own (its
    /// serving certificate, which must never be refused) is charged against the per-identity
    /// rate limit, whichever API and caller ask for it.
    pub async fn issue(
        &self,
        csr_der: &[u8],
        grant: &Grant,
        ttl: Option<Ttl>,
        caller: &str,
        rate_key: Option<&str>,
    ) -> Result<IssuedSvid, IssueError> {
        let started = Instant::now();
        let identity = grant.spiffe_id.as_str();
        let own = self.own_id().is_ok_and(|own| own.as_str() == identity);
        match self
            .limits
            .take(rate_key, (!own).then_some(identity), started)
        {
            Ok(()) => {}
            Err(Spent::Node) => {
                return Err(IssueError::RateLimited {
                    caller: caller.to_owned(),
                    rate: self.config.node_rate_limit,
                });
            }
            Err(Spent::Identity) => {
                return Err(IssueError::IdentityRateLimited {
                    spiffe_id: identity.to_owned(),
                    per_minute: self.config.identity_rate_limit,
                    burst: self.config.identity_rate_burst,
                });
            }
        }
        let _slot = self
            .limits
            .slot()
            .ok_or(IssueError::Busy(self.config.max_in_flight))?;
        let authority = self.authority();
        let csr = Csr::parse(csr_der, &authority.policy().keys)?;
        let svid = authority.sign_svid(&csr, grant, ttl, SystemTime::now())?;
        let record = IssuedRecord {
            serial: svid.serial.to_string(),
            spiffe_id: svid.spiffe_id.to_string(),
            caller: caller.to_owned(),
            authority: authority.id().to_owned(),
            not_before: svid.not_before,
            not_after: svid.not_after,
            der_sha256: sha256(&svid.leaf),
        };
        if self.config.journal
            && let Err(e) = self.store.record_issued(record).await
        {
            warn!(serial = %svid.serial, error = %e, "journal refused a row; certificate withheld");
            return Err(e.into());
        }
        self.metrics.issued(started.elapsed());
        debug!(serial = %svid.serial, id = %svid.spiffe_id, caller, "issued");
        Ok(svid)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

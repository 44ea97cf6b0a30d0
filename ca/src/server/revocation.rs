//! Revocation state: the unexpired revocations and one CRL per authority this CA holds the key
//! of, rebuilt from the store on every revocation or authority change and re-signed on a timer
//! (the CRL's nextUpdate is short).
//!
//! Every authority that may have signed a certificate still in use (prepared, active, old,
//! tainted, unexpired) gets a CRL: Envoy, told to check the leaf against CRLs, refuses a leaf
//! whose issuer has none.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::Ca;
use crate::authority::{Authority, RevocationReason, RevokedEntry, Serial};
use crate::store::{Revocation, StoreError};

/// How long a CRL is valid; it is re-signed at half of this.
pub const CRL_VALIDITY: Duration = Duration::from_secs(600);

/// What is revoked now, as the CA publishes it.
#[derive(Clone, Debug, Default)]
pub struct RevocationState {
    /// Unexpired revocations.
    pub revoked: Vec<Revocation>,
    /// `(authority id, DER CRL)`, oldest authority first.
    pub crls: Vec<(String, Vec<u8>)>,
}

impl RevocationState {
    /// The CRL of authority `id`.
    pub fn crl(&self, id: &str) -> Option<&[u8]> {
        self.crls
            .iter()
            .find(|(authority, _)| authority == id)
            .map(|(_, crl)| crl.as_slice())
    }
}

impl Ca {
    /// Reloads the revocations from the store, re-signs the CRL and tells every watcher.
    pub async fn refresh_revocations(&self) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let revoked = self.store.revocations(now).await?;
        let set = self.authority_set();
        let previous = self.revocation_state();
        let mut signers: Vec<Arc<Authority>> = set
            .known
            .iter()
            .filter_map(|k| k.authority.clone())
            .collect();
        if !signers.iter().any(|a| a.id() == set.active.id()) {
            signers.push(set.active.clone());
        }
        let mut crls = Vec::with_capacity(signers.len());
        for authority in signers {
            let entries: Vec<RevokedEntry> = revoked
                .iter()
                .filter(|r| r.authority == authority.id())
                .filter_map(|r| {
                    Some(RevokedEntry {
                        serial: r.serial.parse::<Serial>().ok()?,
                        revoked_at: r.revoked_at,
                        reason: r.reason.parse().unwrap_or(RevocationReason::Unspecified),
                    })
                })
                .collect();
            match authority.sign_crl(&entries, now, CRL_VALIDITY) {
                Ok(crl) => crls.push((authority.id().to_owned(), crl)),
                Err(e) => {
                    warn!(authority = authority.id(), error = %e, "cannot sign the CRL; keeping the previous one");
                    if let Some(crl) = previous.crl(authority.id()) {
                        crls.push((authority.id().to_owned(), crl.to_vec()));
                    }
                }
            }
        }
        *self
            .revocations
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(RevocationState { revoked, crls });
        self.trust_version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The current revocation state.
    pub fn revocation_state(&self) -> Arc<RevocationState> {
        self.revocations
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Revokes `serial`, or every unexpired certificate of `spiffe_id`, and publishes the change.
    pub async fn revoke(
        &self,
        target: RevokeTarget<'_>,
        reason: RevocationReason,
    ) -> Result<Vec<Revocation>, StoreError> {
        let now = SystemTime::now();
        let reason_text = reason.to_string();
        let revoked = match target {
            RevokeTarget::Serial(serial) => {
                vec![self.store.revoke_serial(serial, &reason_text, now).await?]
            }
            RevokeTarget::SpiffeId(id) => {
                self.store.revoke_spiffe_id(id, &reason_text, now).await?
            }
        };
        for r in &revoked {
            info!(serial = %r.serial, spiffe_id = %r.spiffe_id, reason = %r.reason, "revoked");
        }
        self.refresh_revocations().await?;
        Ok(revoked)
    }
}

/// What to revoke.
#[derive(Clone, Copy, Debug)]
pub enum RevokeTarget<'a> {
    /// One certificate by serial (lowercase hex, no leading zeros).
    Serial(&'a str),
    /// Every unexpired certificate of a SPIFFE ID.
    SpiffeId(&'a str),
}

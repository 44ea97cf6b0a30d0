//! Revocation state: the unexpired revocations and the active intermediate's CRL, rebuilt from
//! the store on every revocation and re-signed on a timer (the CRL's nextUpdate is short).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::Ca;
use crate::authority::{RevocationReason, RevokedEntry, Serial};
use crate::store::{Revocation, StoreError};

/// How long a CRL is valid; it is re-signed at half of this.
pub const CRL_VALIDITY: Duration = Duration::from_secs(600);

/// What is revoked now, as the CA publishes it.
#[derive(Clone, Debug, Default)]
pub struct RevocationState {
    /// Unexpired revocations.
    pub revoked: Vec<Revocation>,
    /// The active intermediate's CRL, DER (empty until first signed).
    pub crl: Vec<u8>,
}

impl Ca {
    /// Reloads the revocations from the store, re-signs the CRL and tells every watcher.
    pub async fn refresh_revocations(&self) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let revoked = self.store.revocations(now).await?;
        let authority = self.authority();
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
        let crl = match authority.sign_crl(&entries, now, CRL_VALIDITY) {
            Ok(crl) => crl,
            Err(e) => {
                warn!(error = %e, "cannot sign the CRL; keeping the previous one");
                self.revocation_state().crl.clone()
            }
        };
        *self
            .revocations
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(RevocationState { revoked, crl });
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

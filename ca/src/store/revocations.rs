//! Revocations: which unexpired certificates must no longer be trusted, and why.

use std::time::SystemTime;

use super::codec::{self, column};
use super::error::is_unique_violation;
use super::journal::JournalQuery;
use super::{Store, StoreError};

/// A revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Its serial, lowercase hex.
    pub serial: String,
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// The authority that issued it.
    pub authority: String,
    /// The RFC 5280 reason, e.g. `keyCompromise`.
    pub reason: String,
    /// When it was revoked.
    pub revoked_at: SystemTime,
    /// Its notAfter: after that, the revocation need not be listed.
    pub not_after: SystemTime,
}

fn rfc3339(time: SystemTime) -> String {
    crate::authority::rfc3339(time)
}

impl Store {
    /// Revokes the journaled certificate `serial` for `reason` at `now`.
    ///
    /// Fails with [`StoreError::NotIssued`] for a serial this CA never journaled,
    /// [`StoreError::AlreadyExpired`] for an expired one and [`StoreError::AlreadyRevoked`] for one
    /// revoked before.
    pub async fn revoke_serial(
        &self,
        serial: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Revocation, StoreError> {
        let rows = self
            .journal(JournalQuery {
                serial: Some(serial.to_owned()),
                limit: Some(1),
                ..JournalQuery::default()
            })
            .await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotIssued {
                serial: serial.to_owned(),
            })?;
        if row.record.not_after <= now {
            return Err(StoreError::AlreadyExpired {
                serial: serial.to_owned(),
                not_after: rfc3339(row.record.not_after),
            });
        }
        let revocation = Revocation {
            serial: row.record.serial,
            spiffe_id: row.record.spiffe_id,
            authority: row.record.authority,
            reason: reason.to_owned(),
            revoked_at: now,
            not_after: row.record.not_after,
        };
        let inserted = sqlx::query(
            "INSERT INTO revocations (serial, spiffe_id, authority, reason, revoked_at, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(revocation.serial.clone())
        .bind(revocation.spiffe_id.clone())
        .bind(revocation.authority.clone())
        .bind(revocation.reason.clone())
        .bind(codec::to_unix(now, "now")?)
        .bind(codec::to_unix(revocation.not_after, "not_after")?)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => {
                self.revocations_changed();
                Ok(revocation)
            }
            Err(error) if is_unique_violation(&error) => {
                let existing = self
                    .revocations(SystemTime::UNIX_EPOCH)
                    .await?
                    .into_iter()
                    .find(|r| r.serial == serial);
                Err(StoreError::AlreadyRevoked {
                    serial: serial.to_owned(),
                    revoked_at: existing
                        .as_ref()
                        .map(|r| rfc3339(r.revoked_at))
                        .unwrap_or_default(),
                    reason: existing.map(|r| r.reason).unwrap_or_default(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Revokes every unexpired, not yet revoked certificate of `spiffe_id`; returns those it
    /// revoked (none when there are none).
    pub async fn revoke_spiffe_id(
        &self,
        spiffe_id: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = self
            .journal(JournalQuery {
                spiffe_id: Some(spiffe_id.to_owned()),
                ..JournalQuery::default()
            })
            .await?;
        let mut revoked = Vec::new();
        for row in rows.into_iter().filter(|r| r.record.not_after > now) {
            match self.revoke_serial(&row.record.serial, reason, now).await {
                Ok(revocation) => revoked.push(revocation),
                Err(StoreError::AlreadyRevoked { .. } | StoreError::AlreadyExpired { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(revoked)
    }

    /// Every revocation of a certificate still unexpired at `now`, oldest first.
    pub async fn revocations(&self, now: SystemTime) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, spiffe_id, authority, reason, revoked_at, not_after FROM revocations \
             WHERE not_after > $1 ORDER BY revoked_at, serial",
        )
        .bind(codec::to_unix(now, "now")?)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Revocation {
                    serial: column(row, "serial")?,
                    spiffe_id: column(row, "spiffe_id")?,
                    authority: column(row, "authority")?,
                    reason: column(row, "reason")?,
                    revoked_at: codec::from_unix(column(row, "revoked_at")?)?,
                    not_after: codec::from_unix(column(row, "not_after")?)?,
                })
            })
            .collect()
    }
}

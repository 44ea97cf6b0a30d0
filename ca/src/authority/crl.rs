//! Certificate revocation lists, signed by the intermediate that issued the certificates.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
use time::OffsetDateTime;

use super::intermediate::{Authority, SignError};
use super::serial::Serial;

/// Why a certificate was revoked (RFC 5280 5.3.1), by the names RFC 5280 gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// `unspecified`.
    Unspecified,
    /// `keyCompromise`.
    KeyCompromise,
    /// `cACompromise`.
    CaCompromise,
    /// `affiliationChanged`.
    AffiliationChanged,
    /// `superseded`.
    Superseded,
    /// `cessationOfOperation`.
    CessationOfOperation,
    /// `privilegeWithdrawn`.
    PrivilegeWithdrawn,
}

const REASONS: [(RevocationReason, &str); 7] = [
    (RevocationReason::Unspecified, "unspecified"),
    (RevocationReason::KeyCompromise, "keyCompromise"),
    (RevocationReason::CaCompromise, "cACompromise"),
    (RevocationReason::AffiliationChanged, "affiliationChanged"),
    (RevocationReason::Superseded, "superseded"),
    (
        RevocationReason::CessationOfOperation,
        "cessationOfOperation",
    ),
    (RevocationReason::PrivilegeWithdrawn, "privilegeWithdrawn"),
];

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = REASONS
            .iter()
            .find(|(r, _)| r == self)
            .map_or("unspecified", |(_, n)| n);
        f.write_str(name)
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        REASONS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(reason, _)| *reason)
            .ok_or_else(|| {
                let names: Vec<&str> = REASONS.iter().map(|(_, n)| *n).collect();
                format!(
                    "unknown revocation reason {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl RevocationReason {
    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// One entry of a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The revoked certificate's serial.
    pub serial: Serial,
    /// When it was revoked.
    pub revoked_at: SystemTime,
    /// Why.
    pub reason: RevocationReason,
}

impl Authority {
    /// A CRL listing `revoked`, valid from `now` until `now + validity`, numbered by `now` (so
    /// later CRLs have higher numbers, on any replica).
    ///
    /// Refused when a time in it lies outside the years 0 to 9999, which X.509 cannot write
    /// (a revocation time read from a corrupt row, say).
    pub fn sign_crl(
        &self,
        revoked: &[RevokedEntry],
        now: SystemTime,
        validity: Duration,
    ) -> Result<Vec<u8>, SignError> {
        let seconds = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let this_update = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
        let next_update = this_update.checked_add(validity.max(Duration::from_secs(1)));
        let out_of_range = |what: String| {
            SignError::Sign(format!(
                "{what} is outside the years 0 to 9999 that a CRL can hold"
            ))
        };
        let params = CertificateRevocationListParams {
            this_update: x509_time(this_update)
                .ok_or_else(|| out_of_range(format!("this update ({seconds} unix seconds)")))?,
            next_update: next_update.and_then(x509_time).ok_or_else(|| {
                out_of_range(format!(
                    "next update ({validity:?} after {seconds} unix seconds)"
                ))
            })?,
            crl_number: rcgen::SerialNumber::from_slice(&seconds.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|entry| {
                    Ok(RevokedCertParams {
                        serial_number: entry.serial.to_rcgen(),
                        revocation_time: x509_time(entry.revoked_at).ok_or_else(|| {
                            out_of_range(format!("the revocation time of serial {}", entry.serial))
                        })?,
                        reason_code: Some(entry.reason.to_rcgen()),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, SignError>>()?,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_id()),
        };
        params
            .signed_by(self.issuer())
            .map(|crl| crl.der().to_vec())
            .map_err(|e| SignError::Sign(e.to_string()))
    }
}

/// `time` to the second, if X.509 can write it (a GeneralizedTime has years 0 to 9999; beyond
/// them the encoder panics).
fn x509_time(time: SystemTime) -> Option<OffsetDateTime> {
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok()?,
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).ok()?;
            // Rounded down, as truncating the nanoseconds of a date before 1970 does.
            (-secs).checked_sub(i64::from(before.subsec_nanos() > 0))?
        }
    };
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
}

#[cfg(test)]
mod tests;

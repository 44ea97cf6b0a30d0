//! The lifetime a certificate request asks for.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A certificate lifetime: a whole number of seconds, at least one.
///
/// A `Ttl` is what a caller asks for; the CA grants at most its policy's maximum, and the granted
/// lifetime is whatever the issued certificate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

/// Why a TTL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// The lifetime was zero.
    #[error("TTL must be positive, got {0:?}")]
    Zero(String),
    /// The lifetime was below one second or not a whole number of seconds.
    #[error("TTL {0:?} is not a whole number of seconds")]
    Fractional(String),
    /// The text is not a duration such as `90s`, `45m`, `1h`, `30d` or `1y`.
    #[error("TTL {input:?} is not a duration such as 90s, 45m, 1h, 30d or 1y: {reason}")]
    Unparsable {
        /// The text given.
        input: String,
        /// What the duration parser said.
        reason: String,
    },
}

impl Ttl {
    /// One hour: the default lifetime of a workload certificate.
    pub const ONE_HOUR: Ttl = Ttl(Duration::from_secs(3600));

    /// A TTL of `secs` seconds; `None` for zero.
    pub const fn from_secs(secs: u64) -> Option<Ttl> {
        if secs == 0 {
            None
        } else {
            Some(Ttl(Duration::from_secs(secs)))
        }
    }

    /// A TTL from a duration, which must be a positive whole number of seconds.
    pub fn from_duration(duration: Duration) -> Result<Ttl, TtlError> {
        if duration.is_zero() {
            return Err(TtlError::Zero(format!("{duration:?}")));
        }
        if duration.subsec_nanos() != 0 {
            return Err(TtlError::Fractional(format!("{duration:?}")));
        }
        Ok(Ttl(duration))
    }

    /// The lifetime as a [`Duration`].
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// The lifetime in seconds.
    pub const fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl FromStr for Ttl {
    type Err = TtlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let duration = humantime::parse_duration(s.trim()).map_err(|e| TtlError::Unparsable {
            input: s.to_owned(),
            reason: e.to_string(),
        })?;
        if duration.is_zero() {
            return Err(TtlError::Zero(s.to_owned()));
        }
        if duration.subsec_nanos() != 0 {
            return Err(TtlError::Fractional(s.to_owned()));
        }
        Ok(Ttl(duration))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests;

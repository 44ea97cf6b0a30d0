//! Certificate serial numbers.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// A certificate serial number: a positive integer of at most 20 bytes, kept big-endian without
/// leading zero bytes, so that it compares equal to the serial parsed back from the certificate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

/// Why a serial number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerialError {
    /// Not hexadecimal.
    #[error("serial {0:?} is not hexadecimal")]
    NotHex(String),
    /// Zero, which RFC 5280 does not allow.
    #[error("serial must be positive")]
    Zero,
    /// Longer than RFC 5280's 20 bytes.
    #[error("serial is {0} bytes; RFC 5280 allows at most 20")]
    TooLong(usize),
}

impl Serial {
    /// A fresh serial of 128 random bits from the operating system's CSPRNG.
    pub fn random() -> Result<Serial, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        loop {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes)?;
            // Zero has probability 2^-128; it is not a valid serial, so draw again.
            if let Ok(serial) = Serial::from_be_bytes(&bytes) {
                return Ok(serial);
            }
        }
    }

    /// A leaf's serial: 128 random bits from the operating system's CSPRNG after a 4-byte prefix
    /// that counts milliseconds (`0x40000000` + the milliseconds since the Unix epoch modulo
    /// 2^30, so it wraps every 12.4 days). Always 20 bytes, the most RFC 5280 allows, and positive.
    ///
    /// The prefix keeps the serials a CA issues close together one after the other in the
    /// journal's index by serial: with fully random serials each journaled certificate wrote its
    /// own page of that index, which was most of what a commit wrote.
    pub fn leaf(issued_at: SystemTime) -> Result<Serial, ring::error::Unspecified> {
        const CYCLE_MS: u128 = 1 << 30;
        let millis = issued_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() % CYCLE_MS);
        let prefix = 0x4000_0000_u32 | u32::try_from(millis).unwrap_or(0);
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&prefix.to_be_bytes());
        SystemRandom::new().fill(&mut bytes[4..])?;
        Ok(Serial(bytes.to_vec()))
    }

    /// A serial from big-endian bytes of a positive integer (leading zeros are dropped).
    pub fn from_be_bytes(bytes: &[u8]) -> Result<Serial, SerialError> {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .ok_or(SerialError::Zero)?;
        let trimmed = &bytes[start..];
        // A DER INTEGER of 20 bytes may need a 21st, a leading zero, when its top bit is set.
        let encoded = trimmed.len() + usize::from(trimmed[0] & 0x80 != 0);
        if encoded > 20 {
            return Err(SerialError::TooLong(encoded));
        }
        Ok(Serial(trimmed.to_vec()))
    }

    /// Big-endian bytes, without leading zeros.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.0)
    }
}

impl fmt::Display for Serial {
    /// Lowercase hex without separators, as `halyard-ca revoke --serial` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = SerialError;

    /// Hex, with or without `:` separators (as `openssl x509 -serial` prints it with them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        let not_hex = || SerialError::NotHex(s.to_owned());
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(not_hex());
        }
        let padded = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex
        };
        let bytes = (0..padded.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|_| not_hex()))
            .collect::<Result<Vec<u8>, _>>()?;
        Serial::from_be_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_distinct_and_long() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        assert!(a.as_bytes().len() >= 8, "{a}");
        assert_ne!(a.as_bytes()[0], 0);
    }

    #[test]
    fn leaf_serials_are_20_bytes_and_follow_the_clock() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        let first = Serial::leaf(at).unwrap();
        let same_ms = Serial::leaf(at).unwrap();
        let later = Serial::leaf(at + std::time::Duration::from_millis(1)).unwrap();
        for serial in [&first, &same_ms, &later] {
            assert_eq!(serial.as_bytes().len(), 20, "{serial}");
            // Positive, and no leading zero byte to drop: its DER INTEGER is 20 bytes.
            assert!((0x40..0x80).contains(&serial.as_bytes()[0]), "{serial}");
            assert_eq!(serial.to_string().len(), 40);
        }
        assert_ne!(first, same_ms, "the random part");
        assert_eq!(first.as_bytes()[..4], same_ms.as_bytes()[..4]);
        assert!(later > first && later > same_ms);
        // As stored (lowercase hex), they sort the same way.
        assert!(later.to_string() > first.to_string());
        assert_eq!(Serial::from_str(&later.to_string()), Ok(later));
        // Before the epoch and at the wrap: still 20 bytes and positive.
        for at in [
            UNIX_EPOCH - std::time::Duration::from_secs(1),
            UNIX_EPOCH + std::time::Duration::from_millis((1 << 30) - 1),
        ] {
            let serial = Serial::leaf(at).unwrap();
            assert_eq!(serial.as_bytes().len(), 20);
            assert!((0x40..0x80).contains(&serial.as_bytes()[0]), "{serial}");
        }
    }

    #[test]
    fn hex_round_trips_and_accepts_colons() {
        let serial: Serial = "00:0a:ff".parse().unwrap();
        assert_eq!(serial.as_bytes(), [0x0a, 0xff]);
        assert_eq!(serial.to_string(), "0aff");
        assert_eq!("aff".parse::<Serial>().unwrap(), serial);
    }

    #[test]
    fn refuses_zero_garbage_and_overlong() {
        assert_eq!("00".parse::<Serial>(), Err(SerialError::Zero));
        assert!(matches!(
            "xyz".parse::<Serial>(),
            Err(SerialError::NotHex(_))
        ));
        assert!(matches!("".parse::<Serial>(), Err(SerialError::NotHex(_))));
        assert_eq!(
            Serial::from_be_bytes(&[0x80; 20]),
            Err(SerialError::TooLong(21))
        );
        assert!(Serial::from_be_bytes(&[0x7f; 20]).is_ok());
    }
}

//! How values are written to columns both engines agree on: times as unix seconds, hashes as
//! lowercase hex, and dynamic SQL with `$n` placeholders (the `Any` driver's query builder writes
//! `?`, which PostgreSQL refuses).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Row};

use super::StoreError;

#[cfg(test)]
mod tests;

/// `time` as whole unix seconds (sub-second parts dropped, towards the past).
pub(super) fn to_unix(time: SystemTime, field: &'static str) -> Result<i64, StoreError> {
    let out_of_range = || StoreError::invalid(field, "time out of the range of unix seconds");
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).map_err(|_| out_of_range()),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).map_err(|_| out_of_range())?;
            let round_down = i64::from(before.subsec_nanos() > 0);
            secs.checked_neg()
                .and_then(|s| s.checked_sub(round_down))
                .ok_or_else(out_of_range)
        }
    }
}

/// The time `secs` unix seconds after (or before) the epoch.
pub(super) fn from_unix(secs: i64) -> Result<SystemTime, StoreError> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.ok_or_else(|| StoreError::Corrupt(format!("stored time {secs} is out of range")))
}

/// Now, in unix seconds.
pub(super) fn now_unix() -> Result<i64, StoreError> {
    to_unix(SystemTime::now(), "system clock")
}

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The 32 bytes that `text` spells in lowercase hex.
pub(super) fn parse_hash(text: &str, column: &str) -> Result<[u8; 32], StoreError> {
    let corrupt = || StoreError::Corrupt(format!("{column} is not 64 lowercase hex digits"));
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return Err(corrupt());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or_else(corrupt)?;
        let low = hex_value(pair[1]).ok_or_else(corrupt)?;
        *byte = high << 4 | low;
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Whether `text` is non-empty lowercase hex.
pub(super) fn is_lower_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| hex_value(b).is_some())
}

/// A column read as `T`, with the column named in the error.
pub(super) fn column<'r, T>(row: &'r sqlx::any::AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    Ok(row.try_get(name)?)
}

/// A bound value of dynamic SQL.
pub(super) enum Bind {
    Int(i64),
    Text(String),
}

/// Dynamic SQL with `$1, $2, …` placeholders, valid on both engines.
#[derive(Default)]
pub(super) struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    /// Appends literal SQL.
    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub(super) fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        self.text.push('$');
        self.text.push_str(&self.binds.len().to_string());
        self
    }

    /// The query, ready to run. Not kept in the prepared-statement cache: its text varies.
    pub(super) fn build(self) -> Query<'static, Any, AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.text)).persistent(false);
        for bind in self.binds {
            query = match bind {
                Bind::Int(value) => query.bind(value),
                Bind::Text(value) => query.bind(value),
            };
        }
        query
    }
}

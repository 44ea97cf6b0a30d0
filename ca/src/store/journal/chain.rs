//! The journal's hash chain.
//!
//! ```text
//! row_hash = SHA-256( prev_hash                      32 bytes (zeros before the first row)
//!                  || seq                            i64, 8 bytes big-endian
//!                  || len(serial)      || serial     len: u64, 8 bytes big-endian; UTF-8 bytes
//!                  || len(spiffe_id)   || spiffe_id
//!                  || len(caller)      || caller
//!                  || len(authority)   || authority
//!                  || not_before                     i64 unix seconds, 8 bytes big-endian
//!                  || not_after                      i64 unix seconds, 8 bytes big-endian
//!                  || der_sha256                     32 bytes
//!                  || issued_at )                    i64 unix seconds, 8 bytes big-endian
//! ```
//!
//! Variable-length fields carry their length so no two rows encode alike; fixed-size fields do
//! not need one. Anyone can recompute this from an export with a few lines of any language.

use ring::digest;

/// The fields a row's hash covers, as stored.
pub(super) struct ChainInput<'a> {
    pub(super) seq: i64,
    pub(super) serial: &'a str,
    pub(super) spiffe_id: &'a str,
    pub(super) caller: &'a str,
    pub(super) authority: &'a str,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    pub(super) der_sha256: &'a [u8; 32],
    pub(super) issued_at: i64,
}

/// The hash a row with these fields must carry after `prev_hash`.
pub(super) fn row_hash(prev_hash: &[u8; 32], row: &ChainInput<'_>) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(prev_hash);
    context.update(&row.seq.to_be_bytes());
    for text in [row.serial, row.spiffe_id, row.caller, row.authority] {
        // usize → u64 is lossless on every platform Rust supports.
        context.update(&(text.len() as u64).to_be_bytes());
        context.update(text.as_bytes());
    }
    context.update(&row.not_before.to_be_bytes());
    context.update(&row.not_after.to_be_bytes());
    context.update(row.der_sha256);
    context.update(&row.issued_at.to_be_bytes());
    let mut out = [0u8; 32];
    // SHA-256 output is always 32 bytes, so the lengths match.
    out.copy_from_slice(context.finish().as_ref());
    out
}

//! The issuance journal: one row per certificate issued, hash-chained so that a changed, deleted
//! or forged row shows, and group-committed by one background writer.

mod audit;
mod chain;
mod head;
mod writer;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use sqlx::any::AnyRow;

use super::codec::{self, Bind, Sql, column};
use super::{Store, StoreError};

pub(super) use writer::WriterHandle;

/// A certificate the CA issued, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRecord {
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID in its URI SAN.
    pub spiffe_id: String,
    /// Who asked for it, e.g. `node:worker-1`, `istio:spiffe://…`, `cli`.
    pub caller: String,
    /// The issuing authority's id, e.g. its subject key identifier in hex.
    pub authority: String,
    /// The certificate's notBefore (kept to the whole second).
    pub not_before: SystemTime,
    /// The certificate's notAfter (kept to the whole second).
    pub not_after: SystemTime,
    /// SHA-256 of the certificate's DER.
    pub der_sha256: [u8; 32],
}

/// A committed journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// What was issued (times as stored: whole seconds).
    pub record: IssuedRecord,
    /// When the row was committed (whole seconds, the writer's clock).
    pub issued_at: SystemTime,
    /// The previous row's `row_hash` (32 zero bytes before the first row).
    pub prev_hash: [u8; 32],
    /// SHA-256 over `prev_hash` and this row's canonical encoding.
    pub row_hash: [u8; 32],
}

impl JournalRow {
    /// Recomputes the hash this row must carry from its fields and `prev_hash`, for verifiers
    /// outside the store (exports). The encoding is documented in `store/journal/chain.rs`.
    pub fn computed_hash(&self) -> Result<[u8; 32], StoreError> {
        let record = &self.record;
        Ok(chain::row_hash(
            &self.prev_hash,
            &chain::ChainInput {
                seq: self.seq,
                serial: &record.serial,
                spiffe_id: &record.spiffe_id,
                caller: &record.caller,
                authority: &record.authority,
                not_before: codec::to_unix(record.not_before, "not_before")?,
                not_after: codec::to_unix(record.not_after, "not_after")?,
                der_sha256: &record.der_sha256,
                issued_at: codec::to_unix(self.issued_at, "issued_at")?,
            },
        ))
    }
}

/// Which journal rows to read; every filter set must match. Rows come in `seq` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalQuery {
    /// Only rows for this SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Only rows with this serial (lowercase hex).
    pub serial: Option<String>,
    /// Only rows recorded for this caller.
    pub caller: Option<String>,
    /// Only rows after this seq (to page through the journal).
    pub after_seq: Option<i64>,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// The outcome of [`Store::verify_journal`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalReport {
    /// How many rows were walked.
    pub rows_checked: u64,
    /// Everything found wrong, in chain order.
    pub problems: Vec<JournalProblem>,
}

impl JournalReport {
    /// Whether the chain verified without a problem.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalProblem {
    /// The row concerned (for [`JournalProblemKind::Truncated`], the first missing one).
    pub seq: i64,
    /// What is wrong there.
    pub kind: JournalProblemKind,
}

/// What is wrong with a journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalProblemKind {
    /// The stored `row_hash` is not the hash of the row's contents: the row was changed.
    HashMismatch,
    /// The row's `prev_hash` is not the previous row's `row_hash` (or the prune anchor): the
    /// previous row was replaced, hash and all.
    BrokenLink,
    /// Rows are missing before this one: the chain expected `expected_seq` here.
    Gap {
        /// The seq the chain expected at this place.
        expected_seq: i64,
    },
    /// The chain ends before the head the store recorded: rows `seq..=head_seq` are missing.
    Truncated {
        /// The last seq the store appended.
        head_seq: i64,
    },
    /// The last row is not the head the store recorded (rows added, or the head rewritten,
    /// outside the store).
    HeadMismatch,
}

/// Counters of the group-commit writer, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Transactions committed.
    pub batches_committed: u64,
    /// Rows committed, over all batches.
    pub rows_committed: u64,
    /// Transactions that failed (every caller in them got the error).
    pub batches_failed: u64,
    /// Rows in the last committed batch.
    pub last_batch_size: u64,
    /// How long the last committed batch took, from `BEGIN` to `COMMIT`.
    pub last_commit_duration: Duration,
    /// How long every committed batch took, from `BEGIN` to `COMMIT`, summed.
    pub commit_time: Duration,
}

/// The columns of a journal row, in the order [`decode_row`] reads them.
const ROW_COLUMNS: &str = "seq, serial, spiffe_id, caller, authority, not_before, not_after, \
                           der_sha256, issued_at, prev_hash, row_hash";

impl Store {
    /// Appends one row to the issuance journal and returns it once the transaction holding it has
    /// COMMITTED (durably: SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit`).
    ///
    /// Concurrent callers are batched by one background writer into one transaction (up to
    /// [`StoreOptions::max_batch`](super::StoreOptions) rows; when
    /// [`queue_depth`](super::StoreOptions) rows already wait, this waits for room). If the
    /// transaction fails, every caller in it gets the error. A caller that stops waiting before
    /// its row is taken gets no row; once taken, the row may commit anyway.
    pub async fn record_issued(&self, record: IssuedRecord) -> Result<JournalRow, StoreError> {
        let record = writer::Validated::new(record)?;
        self.inner.writer.submit(record).await
    }

    /// Journal rows matching `query`, in `seq` order.
    pub async fn journal(&self, query: JournalQuery) -> Result<Vec<JournalRow>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM journal WHERE 1 = 1"));
        let filters = [
            ("spiffe_id", query.spiffe_id),
            ("serial", query.serial),
            ("caller", query.caller),
        ];
        for (name, value) in filters {
            if let Some(value) = value {
                sql.push(&format!(" AND {name} = ")).bind(Bind::Text(value));
            }
        }
        if let Some(after) = query.after_seq {
            sql.push(" AND seq > ").bind(Bind::Int(after));
        }
        sql.push(" ORDER BY seq");
        if let Some(limit) = query.limit {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            sql.push(" LIMIT ").bind(Bind::Int(limit));
        }
        let rows = sql.build().fetch_all(self.pool()).await?;
        rows.iter().map(decode_row).collect()
    }

    /// Walks the chain from its start (or from the prune anchor) in one consistent snapshot and
    /// reports every row whose stored hash does not match its contents, every broken link, every
    /// gap in `seq` (deleted rows) and a missing tail.
    ///
    /// The chain shows tampering by anyone who cannot recompute it; against someone who can
    /// rewrite the whole database, compare the head with one exported earlier.
    pub async fn verify_journal(&self) -> Result<JournalReport, StoreError> {
        audit::verify(self.pool(), self.backend()).await
    }

    /// Deletes the rows of certificates that expired before `before`, but only a prefix of the
    /// chain (rows in `seq` order up to the first unexpired one), so the rest still verifies:
    /// the last pruned row's seq and hash become the chain's anchor. Returns how many rows went.
    ///
    /// Pruned rows can no longer be verified: verify (or export) the journal before pruning.
    pub async fn prune_journal(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = codec::to_unix(before, "before")?;
        audit::prune(self.pool(), self.backend(), before).await
    }

    /// The group-commit writer's counters.
    pub fn journal_stats(&self) -> JournalStats {
        self.inner.writer.stats()
    }
}

/// A journal row read with [`ROW_COLUMNS`], decoded strictly.
fn decode_row(row: &AnyRow) -> Result<JournalRow, StoreError> {
    let hash = |name: &str| -> Result<[u8; 32], StoreError> {
        codec::parse_hash(&column::<String>(row, name)?, &format!("journal.{name}"))
    };
    let time = |name: &str| -> Result<SystemTime, StoreError> {
        codec::from_unix(column::<i64>(row, name)?)
    };
    Ok(JournalRow {
        seq: column(row, "seq")?,
        record: IssuedRecord {
            serial: column(row, "serial")?,
            spiffe_id: column(row, "spiffe_id")?,
            caller: column(row, "caller")?,
            authority: column(row, "authority")?,
            not_before: time("not_before")?,
            not_after: time("not_after")?,
            der_sha256: hash("der_sha256")?,
        },
        issued_at: time("issued_at")?,
        prev_hash: hash("prev_hash")?,
        row_hash: hash("row_hash")?,
    })
}

//! Verifying and pruning the chain.

use sqlx::AnyPool;
use sqlx::any::AnyRow;

use super::chain::{self, ChainInput};
use super::head::{self, Lock};
use super::{JournalProblem, JournalProblemKind, JournalReport, ROW_COLUMNS};
use crate::store::codec::{self, column};
use crate::store::{Backend, StoreError};

/// Rows read per query while verifying.
const VERIFY_PAGE: i64 = 1000;
/// Rows deleted per transaction while pruning, so appenders never wait long for the head lock.
const PRUNE_CHUNK: i64 = 10_000;

/// Walks the chain in one snapshot; see [`Store::verify_journal`](crate::store::Store).
pub(super) async fn verify(pool: &AnyPool, backend: Backend) -> Result<JournalReport, StoreError> {
    // One snapshot for the whole walk, so concurrent appends and prunes cannot look like gaps.
    // SQLite's deferred transaction takes its snapshot at the first read.
    let mut tx = match backend {
        Backend::Sqlite => pool.begin().await?,
        Backend::Postgres => {
            pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?
        }
    };
    let head = head::read(&mut tx, Lock::Snapshot).await?;
    let mut walk = Walk {
        report: JournalReport::default(),
        last_seq: head.anchor_seq,
        last_hash: head.anchor_hash,
    };
    loop {
        let page = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(walk.last_seq)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        for row in &page {
            walk.check(row)?;
        }
        if i64::try_from(page.len()).unwrap_or(i64::MAX) < VERIFY_PAGE {
            break;
        }
    }
    tx.rollback().await?;
    Ok(walk.finish(head.head_seq, &head.head_hash))
}

/// The state of a walk along the chain. Rows are checked as stored (hex text), so a row whose
/// hashes no longer even parse is reported like any other changed row.
struct Walk {
    report: JournalReport,
    last_seq: i64,
    last_hash: String,
}

impl Walk {
    fn check(&mut self, row: &AnyRow) -> Result<(), StoreError> {
        let seq: i64 = column(row, "seq")?;
        let prev_hash: String = column(row, "prev_hash")?;
        let row_hash: String = column(row, "row_hash")?;
        self.report.rows_checked += 1;

        let expected_seq = self.last_seq.saturating_add(1);
        if seq != expected_seq {
            // The link points at a missing row: the gap is the one problem to report.
            self.problem(seq, JournalProblemKind::Gap { expected_seq });
        } else if prev_hash != self.last_hash {
            self.problem(seq, JournalProblemKind::BrokenLink);
        }
        if recompute(row, seq, &prev_hash)?.as_deref() != Some(row_hash.as_str()) {
            self.problem(seq, JournalProblemKind::HashMismatch);
        }
        self.last_seq = seq;
        self.last_hash = row_hash;
        Ok(())
    }

    fn problem(&mut self, seq: i64, kind: JournalProblemKind) {
        self.report.problems.push(JournalProblem { seq, kind });
    }

    /// Compares where the walk ended with the head the store recorded.
    fn finish(mut self, head_seq: i64, head_hash: &str) -> JournalReport {
        if self.last_seq < head_seq {
            let seq = self.last_seq.saturating_add(1);
            self.problem(seq, JournalProblemKind::Truncated { head_seq });
        } else if self.last_seq > head_seq || self.last_hash != head_hash {
            let seq = self.last_seq;
            self.problem(seq, JournalProblemKind::HeadMismatch);
        }
        self.report
    }
}

/// The hash `row` should carry, in hex; `None` when its stored hashes are not even hex.
fn recompute(row: &AnyRow, seq: i64, prev_hash: &str) -> Result<Option<String>, StoreError> {
    let (Ok(prev), Ok(der_sha256)) = (
        codec::parse_hash(prev_hash, "journal.prev_hash"),
        codec::parse_hash(&column::<String>(row, "der_sha256")?, "journal.der_sha256"),
    ) else {
        return Ok(None);
    };
    let hash = chain::row_hash(
        &prev,
        &ChainInput {
            seq,
            serial: &column::<String>(row, "serial")?,
            spiffe_id: &column::<String>(row, "spiffe_id")?,
            caller: &column::<String>(row, "caller")?,
            authority: &column::<String>(row, "authority")?,
            not_before: column(row, "not_before")?,
            not_after: column(row, "not_after")?,
            der_sha256: &der_sha256,
            issued_at: column(row, "issued_at")?,
        },
    );
    Ok(Some(codec::hex(&hash)))
}

/// Deletes the expired prefix of the chain; see [`Store::prune_journal`](crate::store::Store).
pub(super) async fn prune(
    pool: &AnyPool,
    backend: Backend,
    before: i64,
) -> Result<u64, StoreError> {
    let mut pruned = 0;
    loop {
        let mut conn = pool.acquire().await?;
        let mut tx = head::begin_append(&mut conn, backend).await?;
        let head = head::read(&mut tx, Lock::ForAppend(backend)).await?;
        let first_live: Option<i64> = sqlx::query(
            "SELECT seq FROM journal WHERE seq > $1 AND not_after >= $2 ORDER BY seq LIMIT 1",
        )
        .bind(head.anchor_seq)
        .bind(before)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| column(&row, "seq"))
        .transpose()?;
        let expired_to = first_live.map_or(head.head_seq, |seq| seq.saturating_sub(1));
        let cutoff = expired_to.min(head.anchor_seq.saturating_add(PRUNE_CHUNK));
        // The last row that exists up to the cutoff becomes the anchor. (If rows are missing
        // right after it, verification still reports that gap.)
        let last = sqlx::query(
            "SELECT seq, row_hash FROM journal WHERE seq > $1 AND seq <= $2 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(head.anchor_seq)
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(last) = last else {
            tx.rollback().await?;
            return Ok(pruned);
        };
        let anchor_seq: i64 = column(&last, "seq")?;
        let anchor_hash: String = column(&last, "row_hash")?;
        let deleted = sqlx::query("DELETE FROM journal WHERE seq > $1 AND seq <= $2")
            .bind(head.anchor_seq)
            .bind(anchor_seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        head::set_anchor(&mut tx, anchor_seq, anchor_hash).await?;
        tx.commit().await?;
        pruned += deleted;
        tracing::debug!(deleted, anchor_seq, "pruned the journal");
    }
}

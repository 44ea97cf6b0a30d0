//! The chain's one-row state in `journal_head`: the last row appended and the prune anchor.

use sqlx::{Any, AnyConnection, Connection, Transaction};

use crate::store::codec::column;
use crate::store::{Backend, StoreError};

/// The row of `journal_head`, hashes as stored (hex text).
pub(super) struct Head {
    /// The last seq appended (0: none yet).
    pub(super) head_seq: i64,
    /// The last row's hash (zeros: none yet).
    pub(super) head_hash: String,
    /// The last seq pruned (0: none yet).
    pub(super) anchor_seq: i64,
    /// The last pruned row's hash (zeros: none yet).
    pub(super) anchor_hash: String,
}

/// How [`read`] holds the head.
pub(super) enum Lock {
    /// Read in the transaction's snapshot.
    Snapshot,
    /// Lock out other appenders (and prunes), on this and every other replica, until the
    /// transaction ends. On SQLite [`begin_append`] already holds the write lock.
    ForAppend(Backend),
}

/// A transaction that may append to (or prune) the chain. SQLite: `BEGIN IMMEDIATE` takes the
/// database's write lock up front, so two writers never both read the same head; PostgreSQL:
/// [`read`] with [`Lock::ForAppend`] locks the head row.
pub(super) async fn begin_append(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Transaction<'_, Any>, StoreError> {
    Ok(match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    })
}

/// Reads the head inside `tx`.
pub(super) async fn read(tx: &mut Transaction<'_, Any>, lock: Lock) -> Result<Head, StoreError> {
    let sql = match lock {
        Lock::Snapshot | Lock::ForAppend(Backend::Sqlite) => {
            "SELECT head_seq, head_hash, anchor_seq, anchor_hash FROM journal_head WHERE id = 1"
        }
        Lock::ForAppend(Backend::Postgres) => {
            "SELECT head_seq, head_hash, anchor_seq, anchor_hash FROM journal_head WHERE id = 1 \
             FOR UPDATE"
        }
    };
    let row = sqlx::query(sql)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the journal_head row is missing".into()))?;
    Ok(Head {
        head_seq: column(&row, "head_seq")?,
        head_hash: column(&row, "head_hash")?,
        anchor_seq: column(&row, "anchor_seq")?,
        anchor_hash: column(&row, "anchor_hash")?,
    })
}

/// Moves the head to `seq` / `hash` (after an append).
pub(super) async fn set_head(
    tx: &mut Transaction<'_, Any>,
    seq: i64,
    hash: String,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE journal_head SET head_seq = $1, head_hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves the prune anchor to `seq` / `hash`.
pub(super) async fn set_anchor(
    tx: &mut Transaction<'_, Any>,
    seq: i64,
    hash: String,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE journal_head SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

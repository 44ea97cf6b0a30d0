//! Which replica prepares the next intermediate: on PostgreSQL, a transaction-scoped advisory
//! lock held while one replica asks its upstream CA for the intermediate and records it, and
//! released when it is done or its connection dies. SQLite serves one CA process: the lock is
//! always free.

use std::fmt;

use sqlx::{Any, Transaction};

use super::codec::column;
use super::{Backend, Store, StoreError};

/// The advisory lock's key: "halyard" and 1, for "prepare the next authority".
const ROTATION_LOCK_KEY: i64 = 0x6861_6c79_6172_6401;

/// Held while this replica prepares the next intermediate; [`RotationLock::release`] it when
/// done (dropping it releases it too, a moment later).
pub struct RotationLock {
    /// The transaction the advisory lock lives in (none on SQLite).
    tx: Option<Transaction<'static, Any>>,
}

impl fmt::Debug for RotationLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotationLock")
            .field("advisory", &self.tx.is_some())
            .finish()
    }
}

impl RotationLock {
    /// Releases the lock now.
    pub async fn release(self) -> Result<(), StoreError> {
        match self.tx {
            Some(tx) => Ok(tx.rollback().await?),
            None => Ok(()),
        }
    }
}

impl Store {
    /// The lock that lets one replica at a time prepare the next intermediate, or `None` when
    /// another replica holds it. Never blocks.
    pub async fn try_rotation_lock(&self) -> Result<Option<RotationLock>, StoreError> {
        match self.backend() {
            Backend::Sqlite => Ok(Some(RotationLock { tx: None })),
            Backend::Postgres => {
                let mut tx = self.pool().begin().await?;
                let row = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS locked")
                    .bind(ROTATION_LOCK_KEY)
                    .fetch_one(&mut *tx)
                    .await?;
                let locked: bool = column(&row, "locked")?;
                if locked {
                    Ok(Some(RotationLock { tx: Some(tx) }))
                } else {
                    tx.rollback().await?;
                    Ok(None)
                }
            }
        }
    }
}

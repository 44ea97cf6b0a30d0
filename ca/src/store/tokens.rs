//! Join tokens: one use, expiring, stored only as the SHA-256 of the token.

use std::time::SystemTime;

use super::codec::{self, column};
use super::error::is_unique_violation;
use super::{Store, StoreError};

impl Store {
    /// Stores a join token for node `node`, by its hash; it may be used once, before
    /// `expires_at`. Fails with [`StoreError::TokenExists`] if that hash is already stored.
    pub async fn create_join_token(
        &self,
        token_sha256: [u8; 32],
        node: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        if node.is_empty() {
            return Err(StoreError::invalid("node", "empty"));
        }
        let expires_at = codec::to_unix(expires_at, "expires_at")?;
        let inserted = sqlx::query(
            "INSERT INTO join_tokens (token_sha256, node, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(codec::hex(&token_sha256))
        .bind(node.to_owned())
        .bind(codec::now_unix()?)
        .bind(expires_at)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(StoreError::TokenExists),
            Err(error) => Err(error.into()),
        }
    }

    /// Marks the token used, atomically, and returns the node it was made for: of several
    /// concurrent consumers of one token (on any replica) exactly one wins.
    ///
    /// Fails with [`StoreError::TokenUnknown`], [`StoreError::TokenUsed`] or
    /// [`StoreError::TokenExpired`] (a token expires at `expires_at` itself).
    pub async fn consume_join_token(
        &self,
        token_sha256: [u8; 32],
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let now = codec::to_unix(now, "now")?;
        let hash = codec::hex(&token_sha256);
        // One statement: the row lock (PostgreSQL) or the write lock (SQLite) makes the check
        // and the mark one step, so a second consumer finds `used_at` set.
        let won = sqlx::query(
            "UPDATE join_tokens SET used_at = $1 \
             WHERE token_sha256 = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING node",
        )
        .bind(now)
        .bind(hash.clone())
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = won {
            return column(&row, "node");
        }
        // Lost: say why.
        let found = sqlx::query("SELECT used_at FROM join_tokens WHERE token_sha256 = $1")
            .bind(hash)
            .fetch_optional(self.pool())
            .await?;
        match found {
            None => Err(StoreError::TokenUnknown),
            Some(row) if column::<Option<i64>>(&row, "used_at")?.is_some() => {
                Err(StoreError::TokenUsed)
            }
            Some(_) => Err(StoreError::TokenExpired),
        }
    }
}

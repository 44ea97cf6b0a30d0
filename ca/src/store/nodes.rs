//! Attested node agents, and bans.

use std::time::SystemTime;

use sqlx::any::AnyRow;

use super::codec::{self, column};
use super::{Store, StoreError};

/// A node agent as last attested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's name (unique).
    pub name: String,
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// The serial of its current SVID, lowercase hex.
    pub serial: String,
    /// When that SVID expires (kept to the whole second).
    pub not_after: SystemTime,
    /// When the node last attested (kept to the whole second).
    pub attested_at: SystemTime,
    /// How it attested: `join_token` or `k8s`.
    pub method: String,
    /// Whether the node is banned: it may not attest or renew.
    pub banned: bool,
}

const NODE_SELECT: &str =
    "SELECT name, spiffe_id, serial, not_after, attested_at, method, banned FROM nodes";

impl Store {
    /// Inserts the node or updates it by name. A ban is never lifted here: a banned node stays
    /// banned whatever `node.banned` says (and `banned: true` bans it).
    pub async fn record_node(&self, node: NodeRecord) -> Result<(), StoreError> {
        for (field, value) in [
            ("name", &node.name),
            ("spiffe_id", &node.spiffe_id),
            ("method", &node.method),
        ] {
            if value.is_empty() {
                return Err(StoreError::invalid(field, "empty"));
            }
        }
        if !codec::is_lower_hex(&node.serial) {
            return Err(StoreError::invalid(
                "serial",
                format!("{:?} is not lowercase hex", node.serial),
            ));
        }
        sqlx::query(
            "INSERT INTO nodes (name, spiffe_id, serial, not_after, attested_at, method, banned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (name) DO UPDATE SET \
               spiffe_id = excluded.spiffe_id, serial = excluded.serial, \
               not_after = excluded.not_after, attested_at = excluded.attested_at, \
               method = excluded.method, \
               banned = CASE WHEN nodes.banned = 1 THEN 1 ELSE excluded.banned END",
        )
        .bind(node.name)
        .bind(node.spiffe_id)
        .bind(node.serial)
        .bind(codec::to_unix(node.not_after, "not_after")?)
        .bind(codec::to_unix(node.attested_at, "attested_at")?)
        .bind(node.method)
        .bind(i64::from(node.banned))
        .execute(self.pool())
        .await?;
        self.node_written();
        Ok(())
    }

    /// The node named `name`, if it ever attested.
    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{NODE_SELECT} WHERE name = $1"
        )))
        .bind(name.to_owned())
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(decode)
        .transpose()
    }

    /// Every node, by name.
    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("{NODE_SELECT} ORDER BY name")))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Bans the node; `false` if no node has that name. Announced on the entries feed (here
    /// and to other replicas), so that streams the node holds open end at once.
    pub async fn ban_node(&self, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE nodes SET banned = 1 WHERE name = $1")
            .bind(name.to_owned())
            .execute(self.pool())
            .await?;
        let banned = result.rows_affected() > 0;
        if banned {
            self.node_written();
            self.entries_changed();
        }
        Ok(banned)
    }
}

fn decode(row: &AnyRow) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        name: column(row, "name")?,
        spiffe_id: column(row, "spiffe_id")?,
        serial: column(row, "serial")?,
        not_after: codec::from_unix(column(row, "not_after")?)?,
        attested_at: codec::from_unix(column(row, "attested_at")?)?,
        method: column(row, "method")?,
        banned: column::<i64>(row, "banned")? != 0,
    })
}

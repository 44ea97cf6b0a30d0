//! Registration entries: which SPIFFE ID a workload matching some selectors on some node gets.

use std::time::SystemTime;

use ring::rand::{SecureRandom, SystemRandom};
use sqlx::any::AnyRow;

use super::codec::{self, column};
use super::error::is_unique_violation;
use super::{Store, StoreError};

/// A registration entry to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The SPIFFE ID matching workloads get.
    pub spiffe_id: String,
    /// The node whose workloads it is for; `None`: any node.
    pub node: Option<String>,
    /// Selectors a workload must all match, `kind:key:value` (e.g. `unix:uid:1000`); stored
    /// sorted and without duplicates.
    pub selectors: Vec<String>,
    /// The SVID TTL for this entry, if not the default.
    pub ttl_seconds: Option<u64>,
    /// DNS SANs for the SVID, where policy allows.
    pub dns_names: Vec<String>,
}

/// A stored registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Random 128-bit id, lowercase hex.
    pub id: String,
    /// The SPIFFE ID matching workloads get.
    pub spiffe_id: String,
    /// The node whose workloads it is for; `None`: any node.
    pub node: Option<String>,
    /// Selectors, sorted, without duplicates.
    pub selectors: Vec<String>,
    /// The SVID TTL for this entry, if not the default.
    pub ttl_seconds: Option<u64>,
    /// DNS SANs for the SVID.
    pub dns_names: Vec<String>,
    /// When the entry was created (whole seconds).
    pub created_at: SystemTime,
}

/// Which entries to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryScope {
    /// Every entry.
    All,
    /// The entries for this node, plus the any-node entries.
    ForNode(String),
}

const ENTRY_SELECT: &str =
    "SELECT id, spiffe_id, node, selectors, ttl_seconds, dns_names, created_at FROM entries";

impl Store {
    /// Creates an entry with a fresh random id. Refuses an exact duplicate (same SPIFFE ID, node
    /// and selector set) with [`StoreError::EntryExists`], naming the existing entry.
    pub async fn create_entry(&self, entry: NewEntry) -> Result<Entry, StoreError> {
        let mut entry = entry;
        validate(&entry)?;
        entry.selectors.sort();
        entry.selectors.dedup();
        let selectors = to_json(&entry.selectors)?;
        let ttl = entry
            .ttl_seconds
            .map(|ttl| {
                i64::try_from(ttl).map_err(|_| StoreError::invalid("ttl_seconds", "too large"))
            })
            .transpose()?;
        let created_at = codec::now_unix()?;
        let id = random_id()?;
        let inserted = sqlx::query(
            "INSERT INTO entries (id, spiffe_id, node, selectors, ttl_seconds, dns_names, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.clone())
        .bind(entry.spiffe_id.clone())
        .bind(entry.node.clone())
        .bind(selectors.clone())
        .bind(ttl)
        .bind(to_json(&entry.dns_names)?)
        .bind(created_at)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::EntryExists {
                    id: self.existing_id(&entry, selectors).await?,
                });
            }
            Err(error) => return Err(error.into()),
        }
        self.entries_changed();
        Ok(Entry {
            id,
            spiffe_id: entry.spiffe_id,
            node: entry.node,
            selectors: entry.selectors,
            ttl_seconds: entry.ttl_seconds,
            dns_names: entry.dns_names,
            created_at: codec::from_unix(created_at)?,
        })
    }

    /// The entries in `scope`, by SPIFFE ID then id.
    pub async fn entries(&self, scope: EntryScope) -> Result<Vec<Entry>, StoreError> {
        let rows = match scope {
            EntryScope::All => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{ENTRY_SELECT} ORDER BY spiffe_id, id"
                )))
                .fetch_all(self.pool())
                .await?
            }
            EntryScope::ForNode(node) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{ENTRY_SELECT} WHERE node = $1 OR node IS NULL ORDER BY spiffe_id, id"
                )))
                .bind(node)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(decode).collect()
    }

    /// Deletes the entry; `false` if no entry has that id.
    pub async fn delete_entry(&self, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM entries WHERE id = $1")
            .bind(id.to_owned())
            .execute(self.pool())
            .await?;
        let deleted = result.rows_affected() > 0;
        if deleted {
            self.entries_changed();
        }
        Ok(deleted)
    }

    /// The id of the entry that `entry` duplicates.
    async fn existing_id(&self, entry: &NewEntry, selectors: String) -> Result<String, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM entries \
             WHERE spiffe_id = $1 AND COALESCE(node, '') = $2 AND selectors = $3",
        )
        .bind(entry.spiffe_id.clone())
        .bind(entry.node.clone().unwrap_or_default())
        .bind(selectors)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => column(&row, "id"),
            // Deleted since the insert failed: still a duplicate when it was refused.
            None => Ok(String::new()),
        }
    }
}

fn validate(entry: &NewEntry) -> Result<(), StoreError> {
    if entry.spiffe_id.is_empty() {
        return Err(StoreError::invalid("spiffe_id", "empty"));
    }
    if entry.node.as_deref() == Some("") {
        return Err(StoreError::invalid("node", "empty (use None for any node)"));
    }
    if entry.selectors.is_empty() {
        return Err(StoreError::invalid(
            "selectors",
            "an entry needs at least one selector",
        ));
    }
    for selector in &entry.selectors {
        let well_formed = selector
            .split_once(':')
            .is_some_and(|(kind, value)| !kind.is_empty() && !value.is_empty());
        if !well_formed {
            return Err(StoreError::invalid(
                "selectors",
                format!("{selector:?} is not of the form kind:value"),
            ));
        }
    }
    if entry.dns_names.iter().any(String::is_empty) {
        return Err(StoreError::invalid("dns_names", "an empty DNS name"));
    }
    Ok(())
}

/// A random 128-bit id in lowercase hex.
fn random_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Random)?;
    Ok(codec::hex(&bytes))
}

fn to_json(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn from_json(text: &str, column: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("entries.{column}: {error}")))
}

fn decode(row: &AnyRow) -> Result<Entry, StoreError> {
    let ttl: Option<i64> = column(row, "ttl_seconds")?;
    Ok(Entry {
        id: column(row, "id")?,
        spiffe_id: column(row, "spiffe_id")?,
        node: column(row, "node")?,
        selectors: from_json(&column::<String>(row, "selectors")?, "selectors")?,
        ttl_seconds: ttl
            .map(|ttl| {
                u64::try_from(ttl)
                    .map_err(|_| StoreError::Corrupt(format!("entries.ttl_seconds is {ttl}")))
            })
            .transpose()?,
        dns_names: from_json(&column::<String>(row, "dns_names")?, "dns_names")?,
        created_at: codec::from_unix(column(row, "created_at")?)?,
    })
}

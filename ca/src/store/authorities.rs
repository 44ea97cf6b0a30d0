//! Signing authorities (intermediates) and their life: prepared → active → old, or tainted.
//!
//! Only the public half lives here (the chain, the state, when it changed); keys stay in the
//! data directory. Every state change is one transaction, so there is never a moment with two
//! active authorities (a unique index forbids it) or, after a taint, none.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::codec::{self, column};
use super::error::is_unique_violation;
use super::{Backend, Store, StoreError};

/// Where an authority is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthorityState {
    /// Known and trusted by agents (its CRL is published), not yet signing.
    Prepared,
    /// Signing every new certificate. At most one at a time.
    Active,
    /// Replaced by another; its certificates run out on their own.
    Old,
    /// Marked compromised: agents replace every certificate it signed at once.
    Tainted,
}

impl AuthorityState {
    /// The name stored and shown: `prepared`, `active`, `old` or `tainted`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityState::Prepared => "prepared",
            AuthorityState::Active => "active",
            AuthorityState::Old => "old",
            AuthorityState::Tainted => "tainted",
        }
    }
}

impl fmt::Display for AuthorityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthorityState {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "prepared" => Ok(AuthorityState::Prepared),
            "active" => Ok(AuthorityState::Active),
            "old" => Ok(AuthorityState::Old),
            "tainted" => Ok(AuthorityState::Tainted),
            other => Err(StoreError::Corrupt(format!(
                "unknown authority state {other:?}"
            ))),
        }
    }
}

/// An authority as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityRecord {
    /// Lowercase hex of the intermediate's subject key identifier.
    pub id: String,
    /// Its state.
    pub state: AuthorityState,
    /// The intermediate followed by any upstream intermediates, PEM.
    pub chain_pem: String,
    /// The intermediate's notAfter (whole seconds).
    pub not_after: SystemTime,
    /// When it was recorded.
    pub created_at: SystemTime,
    /// When it was last activated, if ever.
    pub activated_at: Option<SystemTime>,
    /// When it was tainted, if it was.
    pub tainted_at: Option<SystemTime>,
}

/// What a taint changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// The tainted authority as it is now.
    pub tainted: AuthorityRecord,
    /// The authority activated in its place, when the tainted one was active.
    pub activated: Option<AuthorityRecord>,
}

const SELECT: &str = "SELECT id, state, chain_pem, not_after, created_at, activated_at, tainted_at \
                      FROM authorities";

impl Store {
    /// Every authority, oldest first.
    pub async fn authorities(&self) -> Result<Vec<AuthorityRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} ORDER BY created_at, id"
        )))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    /// Records a new authority in `state` (`Prepared`, or `Active` when the store has no active
    /// authority yet: the first intermediate of a data directory).
    ///
    /// Fails with [`StoreError::AuthorityExists`] for a known id and
    /// [`StoreError::AuthorityState`] when asked to add a second active authority or one already
    /// old or tainted.
    pub async fn add_authority(
        &self,
        id: &str,
        state: AuthorityState,
        chain_pem: &str,
        not_after: SystemTime,
        now: SystemTime,
    ) -> Result<AuthorityRecord, StoreError> {
        if !codec::is_lower_hex(id) {
            return Err(StoreError::invalid(
                "id",
                format!("{id:?} is not lowercase hex"),
            ));
        }
        if chain_pem.trim().is_empty() {
            return Err(StoreError::invalid("chain_pem", "empty"));
        }
        if matches!(state, AuthorityState::Old | AuthorityState::Tainted) {
            return Err(StoreError::AuthorityState {
                id: id.to_owned(),
                reason: format!("a new authority is prepared or active, not {state}"),
            });
        }
        let now_secs = codec::to_unix(now, "now")?;
        let inserted = sqlx::query(
            "INSERT INTO authorities (id, state, cert_der, not_after, created_at, chain_pem, \
             activated_at) VALUES ($1, $2, '', $3, $4, $5, $6)",
        )
        .bind(id.to_owned())
        .bind(state.as_str())
        .bind(codec::to_unix(not_after, "not_after")?)
        .bind(now_secs)
        .bind(chain_pem.to_owned())
        .bind((state == AuthorityState::Active).then_some(now_secs))
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                let known = self.authority(id).await?;
                return Err(match known {
                    Some(known) => StoreError::AuthorityExists {
                        id: id.to_owned(),
                        state: known.state,
                    },
                    None => StoreError::AuthorityState {
                        id: id.to_owned(),
                        reason: "another authority is already active".to_owned(),
                    },
                });
            }
            Err(error) => return Err(error.into()),
        }
        self.authorities_changed();
        self.authority(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("authority {id} vanished after insert")))
    }

    /// The authority `id`, if known.
    pub async fn authority(&self, id: &str) -> Result<Option<AuthorityRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }

    /// Makes `id` (prepared, or old: a roll-back) the active authority; the active one becomes
    /// old. Returns the new active authority.
    pub async fn activate_authority(
        &self,
        id: &str,
        now: SystemTime,
    ) -> Result<AuthorityRecord, StoreError> {
        let mut tx = self.begin_authorities().await?;
        let target = locked(&mut tx, self.backend(), id).await?;
        match target.state {
            AuthorityState::Prepared | AuthorityState::Old => {}
            AuthorityState::Active => {
                return Err(StoreError::AuthorityState {
                    id: id.to_owned(),
                    reason: "it is already active".to_owned(),
                });
            }
            AuthorityState::Tainted => {
                return Err(StoreError::AuthorityState {
                    id: id.to_owned(),
                    reason: "it is tainted: a tainted authority never signs again".to_owned(),
                });
            }
        }
        if target.not_after <= now {
            return Err(StoreError::AuthorityState {
                id: id.to_owned(),
                reason: format!(
                    "it expired at {}",
                    crate::authority::rfc3339(target.not_after)
                ),
            });
        }
        activate(&mut tx, id, now).await?;
        tx.commit().await?;
        self.authorities_changed();
        self.authority(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("authority {id} vanished")))
    }

    /// Marks `id` tainted. If it was the active authority, the newest unexpired prepared one
    /// is activated in the same transaction; with none, nothing changes and the answer is
    /// [`StoreError::NoSuccessor`] (a CA with no authority could not issue at all).
    pub async fn taint_authority(&self, id: &str, now: SystemTime) -> Result<Taint, StoreError> {
        let mut tx = self.begin_authorities().await?;
        let target = locked(&mut tx, self.backend(), id).await?;
        if target.state == AuthorityState::Tainted {
            return Err(StoreError::AuthorityState {
                id: id.to_owned(),
                reason: format!(
                    "it was already tainted at {}",
                    target
                        .tainted_at
                        .map(crate::authority::rfc3339)
                        .unwrap_or_default()
                ),
            });
        }
        let successor = if target.state == AuthorityState::Active {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE state = 'prepared' AND not_after > $1 \
                 ORDER BY created_at DESC, id DESC"
            )))
            .bind(codec::to_unix(now, "now")?)
            .fetch_all(&mut *tx)
            .await?;
            let next = rows
                .first()
                .map(decode)
                .transpose()?
                .ok_or_else(|| StoreError::NoSuccessor { id: id.to_owned() })?;
            Some(next.id)
        } else {
            None
        };
        sqlx::query("UPDATE authorities SET state = 'tainted', tainted_at = $1 WHERE id = $2")
            .bind(codec::to_unix(now, "now")?)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if let Some(next) = &successor {
            activate(&mut tx, next, now).await?;
        }
        tx.commit().await?;
        self.authorities_changed();
        let tainted = self
            .authority(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("authority {id} vanished")))?;
        let activated = match successor {
            Some(next) => self.authority(&next).await?,
            None => None,
        };
        Ok(Taint { tainted, activated })
    }

    /// A transaction that changes authorities; on SQLite it holds the write lock from the start.
    async fn begin_authorities(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend() {
            Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool().begin().await?,
        })
    }
}

/// Reads `id` inside `tx`, locking its row on PostgreSQL.
async fn locked(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    id: &str,
) -> Result<AuthorityRecord, StoreError> {
    let lock = match backend {
        Backend::Sqlite => "",
        // Every row: the active one changes too.
        Backend::Postgres => " FOR UPDATE",
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT}{lock}")))
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| StoreError::AuthorityUnknown { id: id.to_owned() })
}

/// Inside `tx`: the active authority becomes old and `id` active.
async fn activate(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE authorities SET state = 'old' WHERE state = 'active'")
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE authorities SET state = 'active', activated_at = $1 WHERE id = $2")
        .bind(codec::to_unix(now, "now")?)
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn decode(row: &AnyRow) -> Result<AuthorityRecord, StoreError> {
    let optional = |name: &str| -> Result<Option<SystemTime>, StoreError> {
        column::<Option<i64>>(row, name)?
            .map(codec::from_unix)
            .transpose()
    };
    Ok(AuthorityRecord {
        id: column(row, "id")?,
        state: column::<String>(row, "state")?.parse()?,
        chain_pem: column(row, "chain_pem")?,
        not_after: codec::from_unix(column(row, "not_after")?)?,
        created_at: codec::from_unix(column(row, "created_at")?)?,
        activated_at: optional("activated_at")?,
        tainted_at: optional("tainted_at")?,
    })
}

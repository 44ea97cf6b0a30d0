//! The CA's durable state over `sqlx`: one schema and one set of migrations (`ca/migrations/`)
//! for SQLite (the embedded default: one file, WAL) and PostgreSQL (several CA replicas).
//!
//! - [`journal`](Store::record_issued): the issuance journal, hash-chained so tampering shows,
//!   group-committed by one background writer so a certificate can wait for its durable row
//!   cheaply.
//! - [join tokens](Store::create_join_token), stored as SHA-256 hashes, single use.
//! - [nodes](Store::record_node): attested node agents, and bans.
//! - [registration entries](Store::create_entry), with a [change feed](Store::subscribe_entries).
//! - [authorities](Store::authorities): intermediates, prepared → active → old or tainted.
//! - [the rotation lock](Store::try_rotation_lock): one replica at a time prepares the next
//!   intermediate.
//!
//! The store knows SQL and nothing of SPIFFE or gRPC: identities arrive as plain strings that the
//! caller has already parsed. Every time is stored as whole unix seconds (BIGINT); every hash and
//! DER blob as lowercase hex TEXT, the one binary encoding both engines (and the `Any` driver)
//! agree on.

mod authorities;
mod codec;
mod entries;
mod error;
mod journal;
mod migrate;
mod nodes;
mod revocations;
mod rotation_lock;
mod tokens;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};
use tokio::sync::watch;

pub use authorities::{AuthorityRecord, AuthorityState, Taint};
pub use entries::{Entry, EntryScope, NewEntry};
pub use error::StoreError;
pub use journal::{
    IssuedRecord, JournalProblem, JournalProblemKind, JournalQuery, JournalReport, JournalRow,
    JournalStats,
};
pub use nodes::NodeRecord;
pub use revocations::Revocation;
pub use rotation_lock::RotationLock;

/// A handle on the CA's durable state. Cheap to clone (an `Arc` inside); the background journal
/// writer stops, and the connection pool closes, once the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    writer: journal::WriterHandle,
    entries_changed: Arc<watch::Sender<u64>>,
    revocations_changed: Arc<watch::Sender<u64>>,
    authorities_changed: Arc<watch::Sender<u64>>,
    /// Follows other replicas' changes (PostgreSQL only).
    listener: Option<tokio::task::JoinHandle<()>>,
    /// Tags this store's announcements, so that it does not count its own changes twice.
    origin: String,
    /// Node records written through this store (attestations, renewals, bans).
    node_writes: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// The PostgreSQL channel on which replicas announce changes: the payload is `entries:ORIGIN` or
/// `revocations:ORIGIN` or `authorities:ORIGIN`.
const CHANGES_CHANNEL: &str = "halyard_changes";

/// Tuning of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most journal rows the writer commits in one transaction (default 256).
    pub max_batch: usize,
    /// How many journal rows may wait for the writer; callers beyond it wait for room
    /// (default 4096).
    pub queue_depth: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            queue_depth: 4096,
        }
    }
}

/// The database engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file in WAL mode: a single CA process.
    Sqlite,
    /// A PostgreSQL database shared by several CA replicas.
    Postgres,
}

impl Backend {
    fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            // Only the scheme is echoed: a PostgreSQL URL may carry a password.
            _ => Err(StoreError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            }),
        }
    }
}

/// Connections per pool. SQLite has one writer at a time anyway; PostgreSQL replicas share the
/// server's `max_connections`.
const SQLITE_POOL_SIZE: u32 = 8;
const POSTGRES_POOL_SIZE: u32 = 10;

impl Store {
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// `url` is `sqlite:///path/halyard.db` (the file is created if missing; WAL,
    /// `synchronous=FULL`, foreign keys on) or `postgres://user:password@host:port/database`.
    /// Must be called inside a Tokio runtime: it starts the journal writer task.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        if options.max_batch == 0 || options.queue_depth == 0 {
            return Err(StoreError::InvalidOptions(format!(
                "max_batch ({}) and queue_depth ({}) must both be at least 1",
                options.max_batch, options.queue_depth
            )));
        }
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => open_sqlite(url).await?,
            Backend::Postgres => open_postgres(url).await?,
        };
        migrate::run(&pool).await?;
        let writer = journal::WriterHandle::start(pool.clone(), backend, options);
        let entries_changed = Arc::new(watch::Sender::new(0));
        let revocations_changed = Arc::new(watch::Sender::new(0));
        let authorities_changed = Arc::new(watch::Sender::new(0));
        let origin = codec::hex(&random_bytes::<8>()?);
        let listener = (backend == Backend::Postgres).then(|| {
            tokio::spawn(listen_for_changes(
                url.to_owned(),
                origin.clone(),
                entries_changed.clone(),
                revocations_changed.clone(),
                authorities_changed.clone(),
            ))
        });
        tracing::debug!(?backend, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                writer,
                entries_changed,
                revocations_changed,
                authorities_changed,
                listener,
                origin,
                node_writes: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The database engine behind this store.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// A counter bumped after every committed registration entry create or delete — this
    /// process's, and on PostgreSQL every replica's (`LISTEN`/`NOTIFY`) — for components that
    /// push entries to agents.
    pub fn subscribe_entries(&self) -> watch::Receiver<u64> {
        self.inner.entries_changed.subscribe()
    }

    /// A counter bumped after every revocation committed by ANOTHER replica on the same
    /// PostgreSQL (this process's own revocations are its caller's to publish).
    pub fn subscribe_revocations(&self) -> watch::Receiver<u64> {
        self.inner.revocations_changed.subscribe()
    }

    /// A counter bumped after every authority change committed by ANOTHER replica on the same
    /// PostgreSQL (this process's own changes are its caller's to publish).
    pub fn subscribe_authorities(&self) -> watch::Receiver<u64> {
        self.inner.authorities_changed.subscribe()
    }

    /// How many node records this store has written (attested, renewed or banned): a change
    /// tells caches of node records that theirs may be stale.
    pub fn node_writes(&self) -> u64 {
        self.inner
            .node_writes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn node_written(&self) {
        self.inner
            .node_writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    fn entries_changed(&self) {
        bump(&self.inner.entries_changed);
        self.announce("entries");
    }

    fn revocations_changed(&self) {
        self.announce("revocations");
    }

    fn authorities_changed(&self) {
        self.announce("authorities");
    }

    /// Tells the other replicas (PostgreSQL) that `what` changed. Best effort: a replica that
    /// misses it still re-reads revocations on its CRL timer.
    fn announce(&self, what: &'static str) {
        if self.inner.backend != Backend::Postgres {
            return;
        }
        let pool = self.inner.pool.clone();
        let payload = format!("{what}:{}", self.inner.origin);
        tokio::spawn(async move {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(payload)
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, what, "cannot tell other replicas of a change");
            }
        });
    }
}

async fn open_sqlite(url: &str) -> Result<AnyPool, StoreError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        // Each pooled connection would see its own database, gone when it closes.
        return Err(StoreError::InvalidOptions(
            "an in-memory SQLite database cannot hold the CA's state: give a file".into(),
        ));
    }
    // The `Any` driver only knows URLs, which carry no journal mode: a first, direct connection
    // creates the file and switches it to WAL, which then persists in the file itself. (Switching
    // needs an exclusive lock that a busy timeout cannot wait for, so it is done once, here.)
    let direct: SqliteConnectOptions = url.parse()?;
    let direct = direct
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true);
    direct.connect().await?.close().await?;

    let options: AnyConnectOptions = url.parse()?;
    let pool = AnyPoolOptions::new()
        .max_connections(SQLITE_POOL_SIZE)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // Per-connection settings; `synchronous=FULL` makes a commit durable once it
                // returns, which is what the journal promises.
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                // Wait up to 10 s for another writer's lock rather than failing at once.
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

async fn open_postgres(url: &str) -> Result<AnyPool, StoreError> {
    let options: AnyConnectOptions = url.parse()?;
    Ok(AnyPoolOptions::new()
        .max_connections(POSTGRES_POOL_SIZE)
        // While PostgreSQL is down, a request waits this long, then gets UNAVAILABLE (30 s
        // outlived most clients' deadlines). sqlx retries connecting with a backoff capped at a
        // fifth of this, so it also bounds how long the pool takes to notice the server is back:
        // after a restart, the first certificate came 0.2-1.0 s after PostgreSQL was ready (4
        // runs), against 2.1 s with 30 s (ca/tests/postgres_restart.rs).
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}

fn bump(counter: &watch::Sender<u64>) {
    counter.send_modify(|generation| *generation = generation.wrapping_add(1));
}

/// Follows other replicas' announcements on PostgreSQL, reconnecting after failures.
async fn listen_for_changes(
    url: String,
    origin: String,
    entries: Arc<watch::Sender<u64>>,
    revocations: Arc<watch::Sender<u64>>,
    authorities: Arc<watch::Sender<u64>>,
) {
    let mut reconnecting = false;
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(error) = listener.listen(CHANGES_CHANNEL).await {
                    tracing::warn!(%error, "cannot LISTEN for other replicas' changes");
                } else {
                    if reconnecting {
                        // Whatever happened while not listening: look again.
                        bump(&entries);
                        bump(&revocations);
                        bump(&authorities);
                    }
                    loop {
                        match listener.recv().await {
                            Ok(notification) => {
                                let (what, from) = notification
                                    .payload()
                                    .split_once(':')
                                    .unwrap_or((notification.payload(), ""));
                                match what {
                                    _ if from == origin => {}
                                    "entries" => bump(&entries),
                                    "revocations" => bump(&revocations),
                                    "authorities" => bump(&authorities),
                                    _ => {}
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot connect to LISTEN for other replicas' changes")
            }
        }
        reconnecting = true;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Random)?;
    Ok(bytes)
}

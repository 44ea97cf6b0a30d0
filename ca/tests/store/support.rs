//! A fresh database per test, and raw SQL access for tampering.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halyard_ca::store::{Backend, IssuedRecord, Store, StoreOptions};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

/// A database of its own for one test.
pub(super) struct TestDb {
    pub(super) url: String,
    pub(super) backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new SQLite file in a temporary directory.
    pub(super) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("halyard.db").display());
        Self {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
        }
    }

    /// A new database on the test PostgreSQL server. Fails (never skips) without one.
    pub(super) async fn postgres() -> Self {
        Self {
            url: halyard_ca::testing::fresh_postgres_database().await,
            backend: Backend::Postgres,
            _dir: None,
        }
    }

    /// The store on this database, default options.
    pub(super) async fn open(&self) -> Store {
        self.open_with(StoreOptions::default()).await
    }

    /// The store on this database.
    pub(super) async fn open_with(&self, options: StoreOptions) -> Store {
        let store = Store::open(&self.url, options).await.unwrap();
        assert_eq!(store.backend(), self.backend);
        store
    }

    /// Runs `sql` on a connection of its own, behind the store's back.
    pub(super) async fn tamper(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.url).await.unwrap();
        conn.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
        conn.close().await.unwrap();
    }
}

/// `url` pointing at database `name` instead.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `secs` unix seconds.
pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A base time for records: 2023-11-14.
pub(super) const T0: u64 = 1_700_000_000;

/// The `n`th test record: three SPIFFE IDs and two callers in rotation, valid for an hour.
pub(super) fn record(n: u64) -> IssuedRecord {
    IssuedRecord {
        serial: format!("{:032x}", 0xabc0_0000 + n),
        spiffe_id: format!("spiffe://cluster.local/ns/default/sa/w{}", n % 3),
        caller: format!("node:worker-{}", n % 2),
        authority: "5ca1ab1e".into(),
        not_before: at(T0 + n),
        not_after: at(T0 + n + 3600),
        der_sha256: [u8::try_from(n % 256).unwrap(); 32],
    }
}

/// Record `n`, expiring at `not_after` (unix seconds).
pub(super) fn record_expiring(n: u64, not_after: u64) -> IssuedRecord {
    IssuedRecord {
        not_before: at(not_after - 100),
        not_after: at(not_after),
        ..record(n)
    }
}

//! A fresh database per test, and raw SQL access for tampering.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halyard_ca::store::{Backend, IssuedRecord, Store, StoreOptions};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

/// Where the PostgreSQL tests find their server (set by sourcing `tests/postgres.sh`).
const POSTGRES_URL_VAR: &str = "HALYARD_TEST_POSTGRES_URL";

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
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
            panic!(
                "{POSTGRES_URL_VAR} is not set: these tests need a PostgreSQL server. \
                 Run them through the README test command, or `source tests/postgres.sh` first."
            );
        };
        sqlx::any::install_default_drivers();
        let mut admin = AnyConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
        let name = format!("halyard_test_{}", random_hex(8));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        admin.close().await.unwrap();
        Self {
            url: with_database(&admin_url, &name),
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
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map(|(_, q)| q)),
        None => (rest.split_once('?').map_or(rest, |(a, _)| a), None),
    };
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).unwrap();
    hex(&buf)
}

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

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://u:p@127.0.0.1:5432/halyard", "x"),
        "postgres://u:p@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
}

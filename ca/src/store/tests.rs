use sqlx::Row;

use super::*;

#[test]
fn backends_by_url_scheme() {
    assert_eq!(
        Backend::from_url("sqlite:///x/halyard.db").unwrap(),
        Backend::Sqlite
    );
    assert_eq!(
        Backend::from_url("postgres://u:p@h/db").unwrap(),
        Backend::Postgres
    );
    assert_eq!(
        Backend::from_url("postgresql://u:p@h/db").unwrap(),
        Backend::Postgres
    );
    let refused = Backend::from_url("mysql://root:secret@h/db").unwrap_err();
    assert!(matches!(&refused, StoreError::UnsupportedUrl { scheme } if scheme == "mysql"));
    assert!(!refused.to_string().contains("secret"), "{refused}");
    assert!(Backend::from_url("halyard.db").is_err());
}

#[tokio::test]
async fn in_memory_sqlite_is_refused() {
    for url in ["sqlite::memory:", "sqlite://halyard.db?mode=memory"] {
        let refused = Store::open(url, StoreOptions::default()).await.err();
        assert!(
            matches!(refused, Some(StoreError::InvalidOptions(_))),
            "{url}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_is_a_database_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("missing/halyard.db").display()
    );
    let refused = Store::open(&url, StoreOptions::default()).await.err();
    assert!(
        matches!(refused, Some(StoreError::Database(_))),
        "{refused:?}"
    );
}

/// What durability rests on: WAL, `synchronous=FULL` on every pooled connection, foreign keys.
#[tokio::test]
async fn sqlite_connections_are_wal_full_sync_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("halyard.db").display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool().acquire().await.unwrap();
        let pragma = |name: &'static str| sqlx::query(name);
        let mode: String = pragma("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        let sync: i32 = pragma("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        let foreign_keys: i32 = pragma("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!((mode.as_str(), sync, foreign_keys), ("wal", 2, 1));
        conns.push(conn);
    }
}

//! A fresh database per test on the PostgreSQL server the test script starts.

use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

/// Where the PostgreSQL tests find their server (set by sourcing `tests/postgres.sh`).
pub const POSTGRES_URL_VAR: &str = "HALYARD_TEST_POSTGRES_URL";

/// Creates a new, empty database on the test server and returns its URL. Fails (never skips)
/// when the server is not configured.
pub async fn fresh_postgres_database() -> String {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
        panic!(
            "{POSTGRES_URL_VAR} is not set: this test needs a PostgreSQL server. \
             Run it through the README test command, or `source tests/postgres.sh` first."
        );
    };
    sqlx::any::install_default_drivers();
    let mut admin = AnyConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
    let name = format!(
        "halyard_test_{}",
        crate::authority::Serial::random().unwrap()
    );
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    admin.close().await.unwrap();
    with_database(&admin_url, &name)
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

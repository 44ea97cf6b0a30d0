//! The schema: `ca/migrations/*.sql`, embedded at build time, one set for both engines.

use sqlx::AnyPool;
use sqlx::migrate::Migrator;

use super::StoreError;

/// Every migration, in order. (Cargo does not watch `migrations/` by itself: after adding a
/// migration, touch this file or the crate needs a `build.rs` with
/// `cargo:rerun-if-changed=migrations`.)
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies the migrations the database has not seen. Safe to run from several replicas at once:
/// sqlx takes an advisory lock on PostgreSQL, and SQLite serializes writers.
pub(super) async fn run(pool: &AnyPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

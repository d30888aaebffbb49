//! Embedded migrations, safe when several processes start at once.

use diesel::QueryableByName;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{Nullable, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::config::Config;
use super::connect;
use crate::model::error::{Error, Result};
use crate::store::report::MigrationReport;

/// The PostgreSQL migrations of `migrations/postgres`, embedded.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Key of the session advisory lock that serialises migration runs.
const MIGRATION_LOCK: i64 = 0x73796e636b6974; // "synckit"

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

fn embedded_versions() -> Result<Vec<String>> {
    let migrations = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| Error::database("migrate", e))?;
    Ok(migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// Versions recorded as applied; empty when the database was never
/// migrated. Reads only: no DDL, no lock.
async fn applied_versions(conn: &mut AsyncPgConnection) -> Result<Vec<String>> {
    let table: Vec<AppliedVersion> =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations')::text AS version")
            .load(conn)
            .await
            .map_err(|e| Error::database("migrate", e))?;
    if table.into_iter().all(|t| t.version.is_none()) {
        return Ok(Vec::new());
    }
    let rows: Vec<AppliedVersion> =
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
            .load(conn)
            .await
            .map_err(|e| Error::database("migrate", e))?;
    Ok(rows.into_iter().filter_map(|r| r.version).collect())
}

/// Runs the embedded migrations that the database lacks.
///
/// A database that is up to date is only read: no DDL runs and no lock is
/// taken. Otherwise the run holds a session advisory lock, so processes that
/// start together migrate one after the other and the later ones find
/// nothing to do. A database migrated by a newer synckit (versions this one
/// does not know) is refused with [`Error::IncompatibleVersion`].
pub async fn migrate(config: &Config) -> Result<MigrationReport> {
    config.check()?;
    if config.transaction_pooling && config.direct_connection_string.is_none() {
        return Err(Error::invalid(
            "config",
            "migrating behind a transaction pooler needs direct_connection_string \
             (the migrations hold a session-level lock)",
        ));
    }
    let conn = connect::connect(config, connect::Target::Session).await?;
    let (_, applied) = migrate_connection(conn).await?;
    Ok(MigrationReport { applied })
}

/// Migrates over `conn` and hands it back.
pub(crate) async fn migrate_connection(
    mut conn: AsyncPgConnection,
) -> Result<(AsyncPgConnection, Vec<String>)> {
    let embedded = embedded_versions()?;
    let applied = applied_versions(&mut conn).await?;
    if let Some(unknown) = applied.iter().find(|v| !embedded.contains(v)) {
        return Err(Error::IncompatibleVersion {
            input: unknown.clone(),
            reason: "the database schema was migrated by a newer synckit".to_owned(),
        });
    }
    if embedded.iter().all(|v| applied.contains(v)) {
        return Ok((conn, Vec::new()));
    }
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await
        .map_err(|e| Error::database("migrate", e))?;
    // diesel_migrations is synchronous: run it on a blocking thread over the
    // async connection. The harness skips what a concurrent process applied
    // while this one waited for the lock.
    let (mut conn, result) = tokio::task::spawn_blocking(move || {
        let mut wrapper: AsyncConnectionWrapper<AsyncPgConnection> = conn.into();
        let result = wrapper
            .run_pending_migrations(MIGRATIONS)
            .map(|done| done.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|e| e.to_string());
        (wrapper.into_inner(), result)
    })
    .await
    .map_err(|e| Error::database("migrate", e))?;
    let unlock = conn
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await;
    let applied = result.map_err(|e| Error::database("migrate", e))?;
    unlock.map_err(|e| Error::database("migrate", e))?;
    Ok((conn, applied))
}

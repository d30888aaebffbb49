//! Opening a file: the checks that refuse what is not synckit's, and the
//! embedded migrations.

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::result::Error as DieselError;
use diesel::sql_types::Text;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::Config;
use crate::model::error::{Error, Result};
use crate::store::report::MigrationReport;

/// The SQLite migrations of `migrations/sqlite`, embedded.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

pub(super) fn invalid_file(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidConnection {
        reason: format!("{}: {reason}", path.display()),
    }
}

/// The tables a synckit file holds (the migrations create them).
const SYNCKIT_TABLES: [&str; 6] = [
    "events",
    "synckit_checkpoints",
    "synckit_leases",
    "synckit_parked",
    "synckit_snapshots",
    "__diesel_schema_migrations",
];

/// The versions of the embedded migrations.
fn embedded_versions() -> Result<Vec<String>> {
    use diesel::migration::MigrationSource;
    let migrations = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&MIGRATIONS)
        .map_err(|e| Error::database("migrate", e.to_string()))?;
    Ok(migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// Opens the file and checks it before anything is written: a SQLite
/// database, writable, and either empty or synckit's.
pub(super) fn open_checked(config: &Config) -> Result<(SqliteConnection, Vec<String>)> {
    let path = &config.path;
    if path.is_dir() {
        return Err(invalid_file(path, "is a directory, not a database file"));
    }
    // Refused from the permission bits too, so that a privileged user (who
    // could write anyway) gets the same answer as everyone else.
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly()) {
        return Err(invalid_file(
            path,
            "cannot be written: the file is read-only",
        ));
    }
    let url = path
        .to_str()
        .ok_or_else(|| invalid_file(path, "the path is not valid UTF-8"))?;
    let mut conn = SqliteConnection::establish(url)
        .map_err(|e| invalid_file(path, format!("cannot open: {e}")))?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {};",
        config.busy_timeout.as_millis()
    ))
    .map_err(|e| invalid_file(path, e))?;
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .load(&mut conn)
    .map_err(|e| invalid_file(path, format!("not a SQLite database ({e})")))?;
    // synckit's file holds synckit's tables and migrations, and may hold
    // an application's own tables beside them (the read models its
    // projections write in the same transaction as their checkpoints). A
    // file another tool manages with diesel has the same migrations table,
    // but other migration versions and no synckit tables.
    let recorded = tables
        .iter()
        .any(|t| t.name == "__diesel_schema_migrations");
    let unknown: Vec<String> = if recorded {
        let known = embedded_versions()?;
        let applied: Vec<Name> =
            diesel::sql_query("SELECT version AS name FROM __diesel_schema_migrations")
                .load(&mut conn)
                .map_err(|e| invalid_file(path, e))?;
        applied
            .into_iter()
            .map(|v| v.name)
            .filter(|v| !known.iter().any(|k| k == v))
            .collect()
    } else {
        Vec::new()
    };
    let ours = recorded && unknown.is_empty() && tables.iter().any(|t| t.name == "events");
    let foreign: Vec<&str> = tables
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| !SYNCKIT_TABLES.contains(name))
        .collect();
    if !foreign.is_empty() && !ours {
        return Err(invalid_file(
            path,
            format!(
                "holds tables synckit did not create ({}); use another file",
                foreign.join(", ")
            ),
        ));
    }
    if !unknown.is_empty() {
        return Err(invalid_file(
            path,
            format!(
                "holds tables synckit did not create: its migration record lists versions synckit does not have ({}), from another tool or a newer synckit; use another file",
                unknown.join(", ")
            ),
        ));
    }
    if !recorded && !tables.is_empty() {
        return Err(invalid_file(
            path,
            format!(
                "holds tables synckit did not create ({}): synckit's migration record is missing; use another file",
                tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    // Writable? Taking the write lock and releasing it changes nothing.
    conn.batch_execute("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|e| invalid_file(path, format!("cannot be written: {e}")))?;
    // Statement journals (a multi-row INSERT keeps one, to undo just that
    // statement should a row be refused) stay in memory.
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;",
    )
    .map_err(|e| invalid_file(path, e))?;
    let pending = conn
        .pending_migrations(MIGRATIONS)
        .map_err(|e| Error::database("migrate", e.to_string()))?;
    let mut applied = Vec::new();
    if !pending.is_empty() {
        // Under the write lock, so that processes opening the file together
        // migrate one after the other.
        applied = conn
            .immediate_transaction::<_, DieselError, _>(|c| {
                c.run_pending_migrations(MIGRATIONS)
                    .map(|done| done.iter().map(ToString::to_string).collect())
                    .map_err(|e| DieselError::QueryBuilderError(e.to_string().into()))
            })
            .map_err(|e| Error::database("migrate", e))?;
    }
    Ok((conn, applied))
}

/// Creates or migrates the database file and reports the migrations it
/// applied (none when it was up to date); refuses the same files as
/// [`SqliteStore::connect`](super::SqliteStore::connect).
pub async fn migrate(config: &Config) -> Result<MigrationReport> {
    let config = config.clone();
    let (_, applied) = tokio::task::spawn_blocking(move || open_checked(&config))
        .await
        .map_err(|e| Error::database("migrate", e))??;
    Ok(MigrationReport { applied })
}

use std::path::Path;

use synckit::postgres::{Config, ImportReport, PgStore};
use synckit::sqlite::SqliteStore;

/// Copies the SQLite store in `sqlite_file` into the PostgreSQL database
/// `database_url` (empty, or holding an earlier run of this import).
pub async fn sqlite_to_postgres(
    sqlite_file: &Path,
    database_url: &str,
) -> synckit::Result<ImportReport> {
    let source = SqliteStore::open(sqlite_file).await?;
    let target = PgStore::connect(Config::new(database_url)).await?;
    let name = sqlite_file.display().to_string();
    let report = target
        .import_from(&source, &name, |p| eprintln!("{} copied", p.copied))
        .await?;
    assert_eq!(report.source_checksum, report.target_checksum);
    Ok(report)
}

//! The SQL of aggregate snapshots (`synckit_snapshots`), the same text on
//! both backends: a snapshot is a cache of one aggregate's state, its JSON
//! kept as text.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};

use super::{Dialect, Statement, int};
use crate::model::error::{Error, Result};
use crate::store::aggregate::StoredSnapshot;

/// One row of `synckit_snapshots`.
#[derive(QueryableByName)]
pub(crate) struct SnapshotRow {
    #[diesel(sql_type = BigInt)]
    stream_version: i64,
    #[diesel(sql_type = BigInt)]
    schema_version: i64,
    #[diesel(sql_type = Text)]
    state: String,
}

/// The snapshot of one aggregate, as [`SnapshotRow`]s.
pub(crate) fn load<DB: Dialect>(
    aggregate_type: String,
    aggregate_id: String,
) -> Statement<'static, DB> {
    let query = DB::bind_text(
        Statement::new(
            "SELECT stream_version, schema_version, state FROM synckit_snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        ),
        aggregate_type,
    );
    DB::bind_text(query, aggregate_id)
}

/// The snapshot [`load`] found. A row this code did not write (a version
/// out of range, text that is not JSON) is no snapshot: it is a cache, and
/// the load reads the stream instead.
pub(crate) fn found(
    aggregate_type: &str,
    aggregate_id: &str,
    rows: Vec<SnapshotRow>,
) -> Option<StoredSnapshot> {
    let row = rows.into_iter().next()?;
    Some(StoredSnapshot {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        stream_version: u64::try_from(row.stream_version).ok().filter(|v| *v > 0)?,
        schema_version: u32::try_from(row.schema_version).ok()?,
        state: serde_json::from_str(&row.state).ok()?,
    })
}

/// Stores a snapshot unless one of a later stream version at the same
/// schema version is there already (snapshots taken off the caller's path
/// may finish out of order).
pub(crate) fn save<DB: Dialect>(snapshot: &StoredSnapshot) -> Result<Statement<'static, DB>> {
    let state = serde_json::to_string(&snapshot.state).map_err(|source| Error::Serialization {
        event_type: format!("snapshot of {}", snapshot.aggregate_type),
        source,
    })?;
    let query = Statement::new(
        "INSERT INTO synckit_snapshots (aggregate_type, aggregate_id, stream_version, schema_version, state) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
         stream_version = excluded.stream_version, schema_version = excluded.schema_version, \
         state = excluded.state \
         WHERE excluded.stream_version >= synckit_snapshots.stream_version \
         OR excluded.schema_version <> synckit_snapshots.schema_version",
    );
    let query = DB::bind_text(query, snapshot.aggregate_type.clone());
    let query = DB::bind_text(query, snapshot.aggregate_id.clone());
    let query = DB::bind_int(query, int::to_sql(snapshot.stream_version));
    let query = DB::bind_int(query, i64::from(snapshot.schema_version));
    Ok(DB::bind_text(query, state))
}

/// Deletes every snapshot of one aggregate type.
pub(crate) fn delete<DB: Dialect>(aggregate_type: String) -> Statement<'static, DB> {
    DB::bind_text(
        Statement::new("DELETE FROM synckit_snapshots WHERE aggregate_type = $1"),
        aggregate_type,
    )
}

//! What aggregates read and keep: one stream by stream version, and
//! snapshots (`synckit_snapshots`).

use diesel::RunQueryDsl;
use diesel::sqlite::Sqlite;

use super::SqliteStore;
use super::rows::Row;
use super::store::Place;
use crate::model::error::Result;
use crate::model::recorded::Recorded;
use crate::model::validate;
use crate::sql::snapshot::{self, SnapshotRow};
use crate::sql::{int, query, rows};
use crate::store::aggregate::StoredSnapshot;

impl SqliteStore {
    pub(super) async fn read_aggregate_at(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>> {
        validate::check_aggregate_id(aggregate_id)?;
        let query = query::stream_after::<Sqlite>(aggregate_id.to_owned(), after, limit);
        let rows: Vec<Row> = self
            .run("read_aggregate", Place::Here, move |c| Ok(query.load(c)?))
            .await?;
        rows::recorded(rows)
    }

    pub(super) async fn load_snapshot_at(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<StoredSnapshot>> {
        let query = snapshot::load::<Sqlite>(aggregate_type.to_owned(), aggregate_id.to_owned());
        let rows: Vec<SnapshotRow> = self
            .run("load_snapshot", Place::Here, move |c| Ok(query.load(c)?))
            .await?;
        Ok(snapshot::found(aggregate_type, aggregate_id, rows))
    }

    pub(super) async fn save_snapshot_at(&self, stored: StoredSnapshot) -> Result<()> {
        let query = snapshot::save::<Sqlite>(&stored)?;
        self.run("save_snapshot", Place::Here, move |c| {
            query.execute(c)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn delete_snapshots_at(&self, aggregate_type: &str) -> Result<u64> {
        let query = snapshot::delete::<Sqlite>(aggregate_type.to_owned());
        self.run("delete_snapshots", Place::Here, move |c| {
            Ok(int::len(query.execute(c)?))
        })
        .await
    }
}

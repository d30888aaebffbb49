//! What aggregates read and keep: one stream by stream version, and
//! snapshots (`synckit_snapshots`).

use diesel::pg::Pg;
use diesel_async::RunQueryDsl;

use super::PgStore;
use super::rows::EventRow;
use crate::model::error::Result;
use crate::model::recorded::Recorded;
use crate::model::validate;
use crate::sql::snapshot::{self, SnapshotRow};
use crate::sql::{db, int, query, rows};
use crate::store::aggregate::StoredSnapshot;

impl PgStore {
    pub(super) async fn read_aggregate_at(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>> {
        validate::check_aggregate_id(aggregate_id)?;
        let aggregate_id = aggregate_id.to_owned();
        self.with_conn("read_aggregate", async |conn| {
            let rows: Vec<EventRow> = query::stream_after::<Pg>(aggregate_id.clone(), after, limit)
                .load(&mut *conn)
                .await
                .map_err(db("read_aggregate"))?;
            rows::recorded(rows)
        })
        .await
    }

    pub(super) async fn load_snapshot_at(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<StoredSnapshot>> {
        let (kind, id) = (aggregate_type.to_owned(), aggregate_id.to_owned());
        self.with_conn("load_snapshot", async |conn| {
            let rows: Vec<SnapshotRow> = snapshot::load::<Pg>(kind.clone(), id.clone())
                .load(&mut *conn)
                .await
                .map_err(db("load_snapshot"))?;
            Ok(snapshot::found(&kind, &id, rows))
        })
        .await
    }

    pub(super) async fn save_snapshot_at(&self, stored: StoredSnapshot) -> Result<()> {
        self.with_conn("save_snapshot", async |conn| {
            snapshot::save::<Pg>(&stored)?
                .execute(&mut *conn)
                .await
                .map_err(db("save_snapshot"))?;
            Ok(())
        })
        .await
    }

    pub(super) async fn delete_snapshots_at(&self, aggregate_type: &str) -> Result<u64> {
        let kind = aggregate_type.to_owned();
        self.with_conn("delete_snapshots", async |conn| {
            let deleted = snapshot::delete::<Pg>(kind.clone())
                .execute(&mut *conn)
                .await
                .map_err(db("delete_snapshots"))?;
            Ok(int::len(deleted))
        })
        .await
    }
}

//! What the store holds: counts of events, streams and types.

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};

use super::SqliteStore;
use super::store::Place;
use crate::model::error::Result;
use crate::sql::{Number, TxError, int};
use crate::store::report::Summary;

impl SqliteStore {
    /// Counts of events, streams and types.
    pub async fn summary(&self) -> Result<Summary> {
        #[derive(QueryableByName)]
        struct TypeCount {
            #[diesel(sql_type = Text)]
            event_type: String,
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        self.run("summary", Place::Here, |c| {
            let one = |c: &mut SqliteConnection, sql: &str| -> std::result::Result<u64, TxError> {
                let n: Vec<Number> = diesel::sql_query(sql).load(c)?;
                Ok(n.into_iter().next().and_then(|r| r.n).map_or(0, int::nonnegative))
            };
            let events = one(c, "SELECT count(*) AS n FROM events")?;
            let latest_version = one(c, "SELECT max(version) AS n FROM events")?;
            let streams = one(c, "SELECT count(DISTINCT aggregate_id) AS n FROM events")?;
            let per_type: Vec<TypeCount> = diesel::sql_query(
                "SELECT event_type, count(*) AS count FROM events GROUP BY event_type ORDER BY count DESC, event_type",
            )
            .load(c)?;
            Ok(Summary {
                events,
                latest_version,
                streams,
                per_type: per_type.into_iter().map(|t| (t.event_type, int::nonnegative(t.count))).collect(),
                notification_queue_usage: None,
            })
        })
        .await
    }
}

//! What the store holds: single events by id, counts of events, streams
//! and types.

use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};

use super::SqliteStore;
use super::rows::Row;
use super::store::Place;
use crate::model::error::Result;
use crate::model::recorded::Recorded;
use crate::sql::query;
use crate::sql::rows;
use crate::sql::{Number, TxError, int};
use crate::store::report::Summary;

impl SqliteStore {
    /// The event with this id, or [`Error::EventNotFound`](crate::Error::EventNotFound).
    pub async fn get(&self, id: &str) -> Result<Recorded> {
        let query = query::event_with_id::<Sqlite>(id.to_owned());
        let id = id.to_owned();
        let rows: Vec<Row> = self
            .run("get", Place::Here, move |c| Ok(query.load(c)?))
            .await?;
        rows::the_event(rows, id)
    }

    /// Number of events stored now.
    pub async fn count(&self) -> Result<u64> {
        self.run("count", Place::Here, |c| {
            let n: Vec<Number> = diesel::sql_query(query::COUNT_SQL).load(c)?;
            Ok(Number::first(n).map_or(0, int::nonnegative))
        })
        .await
    }

    /// Every durable subscription of the file (every checkpoint name): its
    /// checkpoint, its lag behind the head, and the consumer holding its
    /// lease, by name.
    pub async fn subscriptions(&self) -> Result<Vec<super::DurableSubscription>> {
        let head = crate::EventStore::latest_version(self).await?.version();
        self.run("subscriptions", Place::Here, move |c| {
            let rows: Vec<crate::sql::lease::Listed> =
                diesel::sql_query(crate::sql::lease::SQLITE_LIST_SQL).load(c)?;
            Ok(crate::sql::lease::listed(rows, head))
        })
        .await
    }

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
            let events = one(c, query::COUNT_SQL)?;
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

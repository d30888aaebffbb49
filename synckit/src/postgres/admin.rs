//! What the store holds and how its pool does: summaries, counts, single
//! events by id, pool figures, and the schema check at connect.

use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::PgStore;
use super::rows::EventRow;
use crate::model::error::{Error, Result};
use crate::model::recorded::Recorded;
use crate::sql::{Number, Statement, db, int, query, rows};
use crate::store::EventStore as _;
use crate::store::report::Summary;

/// Connection pool figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Most connections the pool opens.
    pub max_open: u32,
    /// Connections open now.
    pub open: u32,
    /// Connections handed out.
    pub in_use: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// Callers waiting for a connection.
    pub waiting: u64,
}

impl PgStore {
    /// Pool figures.
    pub fn stats(&self) -> Result<PoolStats> {
        let pool = self.pool()?;
        let state = pool.state();
        let stats = PoolStats {
            max_open: pool.config().max_size,
            open: state.connections,
            in_use: state.connections - state.idle_connections,
            idle: state.idle_connections,
            waiting: state.statistics.pending_gets(),
        };
        if self.inner.config.metrics {
            metrics::gauge!("synckit_pool_connections").set(stats.open);
            metrics::gauge!("synckit_pool_idle_connections").set(stats.idle);
        }
        Ok(stats)
    }

    /// Every durable subscription of the database (every checkpoint name,
    /// an import's progress included): its checkpoint, its lag behind the
    /// head, and the consumer holding its lease, by name.
    pub async fn subscriptions(&self) -> Result<Vec<super::DurableSubscription>> {
        let head = self.latest_version().await?.version();
        self.with_conn("subscriptions", async |conn| {
            let rows: Vec<crate::sql::lease::Listed> =
                Statement::new(crate::sql::lease::PG_LIST_SQL)
                    .load(&mut *conn)
                    .await
                    .map_err(db("subscriptions"))?;
            Ok(crate::sql::lease::listed(rows, head))
        })
        .await
    }

    /// Counts of events, streams and types, and the server's notification
    /// queue usage (0.0 to 1.0).
    pub async fn summary(&self) -> Result<Summary> {
        #[derive(diesel::QueryableByName)]
        struct Totals {
            #[diesel(sql_type = BigInt)]
            events: i64,
            #[diesel(sql_type = BigInt)]
            streams: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            queue_usage: f64,
        }
        #[derive(diesel::QueryableByName)]
        struct TypeCount {
            #[diesel(sql_type = Text)]
            event_type: String,
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        let latest_version = self.latest_version().await?.version();
        self.with_conn("summary", async |conn| {
            let totals: Vec<Totals> = Statement::new(
                "SELECT count(*) AS events, count(DISTINCT aggregate_id) AS streams, \
                 pg_notification_queue_usage() AS queue_usage FROM events",
            )
            .load(&mut *conn)
            .await
            .map_err(db("summary"))?;
            let per_type: Vec<TypeCount> = Statement::new(
                "SELECT event_type, count(*) AS count FROM events GROUP BY event_type \
                 ORDER BY count DESC, event_type",
            )
            .load(&mut *conn)
            .await
            .map_err(db("summary"))?;
            let totals = totals.into_iter().next();
            Ok(Summary {
                events: totals.as_ref().map_or(0, |t| int::nonnegative(t.events)),
                latest_version,
                streams: totals.as_ref().map_or(0, |t| int::nonnegative(t.streams)),
                per_type: per_type
                    .into_iter()
                    .map(|t| (t.event_type, int::nonnegative(t.count)))
                    .collect(),
                notification_queue_usage: Some(totals.map_or(0.0, |t| t.queue_usage)),
            })
        })
        .await
    }

    /// The event with this id, or [`Error::EventNotFound`].
    pub async fn get(&self, id: &str) -> Result<Recorded> {
        let id = id.to_owned();
        self.with_conn("get", async |conn| {
            let rows: Vec<EventRow> = query::event_with_id::<Pg>(id.clone())
                .load(&mut *conn)
                .await
                .map_err(db("get"))?;
            rows::the_event(rows, id)
        })
        .await
    }

    /// Number of events stored (committed) now.
    pub async fn count(&self) -> Result<u64> {
        self.with_conn("count", async |conn| {
            let rows: Vec<Number> = Statement::new(query::COUNT_SQL)
                .load(&mut *conn)
                .await
                .map_err(db("count"))?;
            Ok(Number::first(rows).map_or(0, int::nonnegative))
        })
        .await
    }

    /// Whether this connection caches prepared statements: the text of the
    /// statements prepared on one pooled connection after the same query
    /// ran twice on it. None of synckit's own when
    /// [`Config::prepared_statements`] is off.
    #[doc(hidden)]
    pub async fn prepared_statements(&self) -> Result<Vec<String>> {
        #[derive(diesel::QueryableByName)]
        struct Prepared {
            #[diesel(sql_type = Text)]
            statement: String,
        }
        #[derive(diesel::QueryableByName)]
        struct Probe {
            #[diesel(sql_type = BigInt)]
            #[allow(dead_code)]
            count: i64,
        }
        self.with_conn("stats", async |conn| {
            for _ in 0..2 {
                let _: Vec<Probe> = Statement::new("SELECT $1::bigint AS count")
                    .bind::<BigInt, _>(1)
                    .load(&mut *conn)
                    .await
                    .map_err(db("stats"))?;
            }
            let rows: Vec<Prepared> = Statement::new(
                "SELECT statement FROM pg_prepared_statements \
                 WHERE statement NOT LIKE '%pg_prepared_statements%' ORDER BY name",
            )
            .load(&mut *conn)
            .await
            .map_err(db("stats"))?;
            Ok(rows.into_iter().map(|r| r.statement).collect())
        })
        .await
    }
}

pub(super) async fn check_schema(conn: &mut AsyncPgConnection) -> Result<()> {
    let rows: Vec<Number> =
        Statement::new("SELECT count(*) AS n FROM pg_proc WHERE proname = 'synckit_fence'")
            .load(conn)
            .await
            .map_err(db("connect"))?;
    if Number::first(rows).unwrap_or(0) == 0 {
        return Err(Error::IncompatibleVersion {
            input: "no schema".to_owned(),
            reason: "the database has no synckit schema: run the migrations (`synckit::postgres::migrate`) or set run_migrations"
                .to_owned(),
        });
    }
    Ok(())
}

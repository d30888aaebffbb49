//! The PostgreSQL store (feature `postgres`).
//!
//! Storage goes through a diesel-async pool; no libpq. See the crate README
//! ("PostgreSQL") for the schema, the configuration and production notes.

mod config;
mod connect;
mod conninfo;
mod import;
mod listener;
mod migrate;
mod rows;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, TransactionManager};

use crate::sql::statement;
pub use config::Config;
pub use import::{ImportProgress, ImportReport};
pub use migrate::{MigrationReport, migrate};
use rows::{
    Count, EVENT_COLUMNS, EventRow, Fence, FenceText, Inserted, JsonMap, Position, StreamHead,
};

/// Cacheable raw SQL on PostgreSQL.
type Statement<'f> = statement::Statement<'f, diesel::pg::Pg>;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::recorded::{NewEvent, Recorded};
use crate::model::validate;
use crate::store::hub::Hub;
use crate::store::subscription::Payload;
use crate::store::{EventStore, SubscriptionSource, TypedPage, idempotent_replay};

/// How often an append is retried after losing a race on a unique index
/// (same id or same stream position appended concurrently). Each retry
/// re-runs the idempotency and expected-version checks, so the outcome is
/// the one a serial execution would give.
const APPEND_RETRIES: u32 = 8;

/// One chunk of an append in one round trip, all or nothing. A chunk holds
/// events of one stream ([`APPEND_ONE_SQL`], [`APPEND_ONE_STREAM_SQL`]:
/// these check the expectation) or of several ([`APPEND_SQL`]: such an
/// append expects nothing, see `validate::check_append`). Each event's
/// ordinal within its stream in this chunk (1, 2, ...) is added to the
/// stream's head, read in the statement's snapshot. An ordinal of 0 leaves
/// the position to the `events_assign_positions` trigger, which takes the
/// stream's lock first. The rows go in input order, so the trigger takes
/// the global versions in order. Only positions come back: the rest is
/// what was sent, so no JSON travels back.
///
/// The arrays sit in sub-selects so that the planner cannot see their
/// lengths: its estimate is then the same with or without the values, and
/// after five executions the server keeps one generic plan for the
/// connection instead of planning every append anew (a custom plan costs
/// more than executing a single-event append).
///
/// Events of several streams: the head of each event's stream by one index
/// probe per event.
const APPEND_SQL: &str = "\
INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
SELECT i.id, i.aggregate_id, i.event_type, i.data, i.metadata, \
       CASE WHEN i.n > 0 THEN coalesce(h.head, 0) + i.n END \
  FROM unnest((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::text[]), \
              (SELECT $4::jsonb[]), (SELECT $5::jsonb[]), (SELECT $6::bigint[])) \
       AS i(id, aggregate_id, event_type, data, metadata, n) \
  LEFT JOIN LATERAL (SELECT e.stream_version AS head FROM events e \
                      WHERE e.aggregate_id = i.aggregate_id \
                      ORDER BY e.stream_version DESC LIMIT 1) h ON true \
RETURNING id, version, stream_version, created_at";

/// Events of one stream (`$1`, and again `$7`): its head is read once and
/// serves both the expectation check (it must lie in `$8..=$9`) and every
/// position.
const APPEND_ONE_STREAM_SQL: &str = "\
INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
SELECT i.id, $1, i.event_type, i.data, i.metadata, \
       CASE WHEN i.n > 0 THEN h.head + i.n END \
  FROM unnest((SELECT $2::text[]), (SELECT $3::text[]), (SELECT $4::jsonb[]), \
              (SELECT $5::jsonb[]), (SELECT $6::bigint[])) \
       AS i(id, event_type, data, metadata, n), \
       (SELECT coalesce(max(e.stream_version), 0) AS head FROM events e \
         WHERE e.aggregate_id = $7) h \
 WHERE h.head BETWEEN $8 AND $9 \
RETURNING id, version, stream_version, created_at";

/// [`APPEND_ONE_STREAM_SQL`] for one event, its values bound as scalars:
/// no arrays to build, send and unnest. A single-event append is what a
/// command handler does most, and this form costs the server about a tenth
/// less than the array form (`pgbench -M prepared`, one client). `$6`
/// false leaves the position to the trigger, as an ordinal of 0 does. The
/// aggregate id is bound twice (`$2`, `$7`).
const APPEND_ONE_SQL: &str = "\
INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
SELECT $1, $2, $3, $4, $5, CASE WHEN $6 THEN h.head + 1 END \
  FROM (SELECT coalesce(max(e.stream_version), 0) AS head FROM events e \
         WHERE e.aggregate_id = $7) h \
 WHERE h.head BETWEEN $8 AND $9 \
RETURNING id, version, stream_version, created_at";

/// Waits before an append retries after losing a race: a random delay that
/// doubles with each attempt (up to ~13 ms), so that writers piling onto
/// one stream spread out instead of colliding again.
async fn race_backoff(attempt: u32) {
    let ceiling = 200u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=ceiling))).await;
}

/// What one attempt of an append did.
enum Appended {
    /// Each event's version, stream version and time, in input order.
    Written(Vec<(u64, u64, chrono::DateTime<chrono::Utc>)>),
    /// The append repeated stored events: those.
    Replayed(Vec<Recorded>),
}

/// The stream heads `expected` accepts, as an inclusive range.
fn head_range(expected: ExpectedVersion) -> (i64, i64) {
    match expected {
        ExpectedVersion::Any => (0, i64::MAX),
        ExpectedVersion::NoStream => (0, 0),
        ExpectedVersion::StreamExists => (1, i64::MAX),
        ExpectedVersion::Exact(n) => {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            (n, n)
        }
    }
}

/// Figures about what a PostgreSQL store holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Events stored.
    pub events: u64,
    /// Version of the last event readers can see.
    pub latest_version: u64,
    /// Distinct aggregates.
    pub streams: u64,
    /// Events per type, most frequent first.
    pub per_type: Vec<(String, u64)>,
    /// The server's notification queue usage, 0.0 to 1.0.
    pub notification_queue_usage: f64,
}

/// Connection pool figures (the seed's `Stats`).
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

/// The highest fence this store has seen. A writer reads the sequence and
/// then takes its pending mark, so others may commit above the head it read
/// before the mark shows: a fence read meanwhile is lower than one read
/// before (still a valid fence: everything below it has finished). Raising
/// every fence to the highest seen keeps `latest_version` and the reads'
/// fences monotonic: what has finished stays finished.
#[derive(Default)]
struct FenceFloor(std::sync::atomic::AtomicU64);

impl FenceFloor {
    /// `fence`, or the highest fence seen when that is higher.
    fn raise(&self, fence: u64) -> u64 {
        self.0.fetch_max(fence, Ordering::AcqRel).max(fence)
    }
}

/// A spawned task that is aborted when the future awaiting it is dropped,
/// so a caller that gives up on a read leaves no task (and no pooled
/// connection) behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inner {
    pool: RwLock<Option<connect::Pool>>,
    fence_floor: FenceFloor,
    config: Config,
    closed: AtomicBool,
    hub: Hub,
    listener: Arc<listener::ListenerState>,
    listener_task: std::sync::Mutex<ListenerTask>,
}

/// The listener's life: it starts with the first subscription (or
/// [`PgStore::listen`]), so a store that only writes holds no LISTEN
/// connection and is woken by no one's commits.
enum ListenerTask {
    NotStarted,
    Running(tokio::task::JoinHandle<()>),
    Stopped,
}

impl Inner {
    /// Starts the listener unless it runs or the store is closed.
    fn start_listener(&self) {
        let mut task = self.listener_task.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*task, ListenerTask::NotStarted)
            && !AtomicBool::load(&self.closed, Ordering::Acquire)
        {
            *task = ListenerTask::Running(tokio::spawn(tracing::Instrument::in_current_span(
                listener::run(self.config.clone(), self.hub.clone(), self.listener.clone()),
            )));
        }
    }

    fn stop_listener(&self) {
        let mut task = self.listener_task.lock().unwrap_or_else(|p| p.into_inner());
        if let ListenerTask::Running(running) = std::mem::replace(&mut *task, ListenerTask::Stopped)
        {
            // Dropping its connection ends every LISTEN of this store.
            running.abort();
            self.listener.stopped();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_listener();
    }
}

/// The PostgreSQL event store; clones share one pool.
///
/// ```no_run
/// use synckit::postgres::{Config, PgStore};
/// use synckit::{Cursor, EventStore, ExpectedVersion, NewEvent};
///
/// # async fn demo() -> synckit::Result<()> {
/// let store = PgStore::connect(Config::new("postgres://postgres@127.0.0.1/app")).await?;
/// let event = NewEvent::new("order-1", "order.placed", serde_json::json!({"total": 12}));
/// store.append(ExpectedVersion::NoStream, vec![event]).await?;
/// let events = store.load(Cursor::START).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.inner.config)
            .field(
                "closed",
                &AtomicBool::load(&self.inner.closed, Ordering::Acquire),
            )
            .finish()
    }
}

enum TxError {
    Db(DieselError),
    Store(Error),
    /// A concurrent append moved a stream between two statements: retry.
    Raced,
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        TxError::Db(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Store(e)
    }
}

fn db(operation: &'static str) -> impl FnOnce(DieselError) -> Error {
    move |e| Error::database(operation, e)
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects with the seed's defaults ([`Config::new`]).
    pub async fn new(connection_string: impl Into<String>) -> Result<Self> {
        PgStore::connect(Config::new(connection_string)).await
    }

    /// Connects, checks that the server answers within the connect timeout,
    /// and runs the embedded migrations unless the config turns them off.
    #[tracing::instrument(skip_all, fields(db = %config.redacted_connection_string()), err)]
    pub async fn connect(config: Config) -> Result<Self> {
        config.check()?;
        if config.run_migrations {
            let conn = connect::connect(&config, connect::Target::Session).await?;
            let (_, applied) = migrate::migrate_connection(conn).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied migrations");
            }
        }
        let check = !config.run_migrations || config.direct_connection_string.is_some();
        let pool = connect::pool(&config);
        let inner = Arc::new(Inner {
            pool: RwLock::new(Some(pool)),
            fence_floor: FenceFloor::default(),
            config,
            closed: AtomicBool::new(false),
            hub: Hub::new(),
            listener: Arc::new(listener::ListenerState::default()),
            listener_task: std::sync::Mutex::new(ListenerTask::NotStarted),
        });
        let store = PgStore { inner };
        if check {
            // Through the pool, the way the store's operations go (behind a
            // pooler: in a transaction).
            store.with_conn("connect", check_schema).await?;
        }
        Ok(store)
    }

    /// Whether the notification listener's connection is up now. The
    /// listener starts with the first subscription, or with
    /// [`PgStore::listen`]; until then this is `false`.
    pub fn is_listener_connected(&self) -> bool {
        self.inner.listener.is_connected()
    }

    /// Starts the notification listener now rather than at the first
    /// subscription (it connects in the background: see
    /// [`PgStore::is_listener_connected`]). Idempotent; nothing after
    /// [`EventStore::close`].
    ///
    /// A store only listens once something may need the wake-ups: a store
    /// that only writes holds no LISTEN connection, and its process is not
    /// woken by every commit of every writer.
    pub async fn listen(&self) {
        self.inner.start_listener();
    }

    /// The filters of the subscriptions open on this store, one entry each.
    pub fn active_subscriptions(&self) -> Vec<Filter> {
        self.inner.hub.filters()
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn pool(&self) -> Result<connect::Pool> {
        if AtomicBool::load(&self.inner.closed, Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        self.inner
            .pool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::StoreClosed)
    }

    /// Runs `f` on a pooled connection. Behind a transaction pooler
    /// ([`Config::transaction_pooling`]) it runs in one transaction, so
    /// that its statements, prepared and executed, stay on one server
    /// connection.
    async fn with_conn<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>,
    ) -> Result<T> {
        let pool = self.pool()?;
        let mut conn = pool
            .get()
            .await
            .map_err(|e| Error::database(operation, e))?;
        if !self.inner.config.transaction_pooling {
            return f(&mut conn).await;
        }
        // Begun and ended by hand: `f` decides the outcome, whatever its
        // type. A database error inside has aborted the transaction, and
        // PostgreSQL's COMMIT then rolls it back; a future dropped inside
        // leaves the connection in a transaction, which the pool discards.
        type Transactions = <AsyncPgConnection as AsyncConnection>::TransactionManager;
        Transactions::begin_transaction(&mut *conn)
            .await
            .map_err(db(operation))?;
        let outcome = f(&mut conn).await;
        if let Err(e) = Transactions::commit_transaction(&mut *conn).await {
            let _ = Transactions::rollback_transaction(&mut *conn).await;
            return Err(Error::database(operation, e));
        }
        outcome
    }

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
                events: totals.as_ref().map_or(0, |t| t.events.max(0) as u64),
                latest_version,
                streams: totals.as_ref().map_or(0, |t| t.streams.max(0) as u64),
                per_type: per_type
                    .into_iter()
                    .map(|t| (t.event_type, t.count.max(0) as u64))
                    .collect(),
                notification_queue_usage: totals.map_or(0.0, |t| t.queue_usage),
            })
        })
        .await
    }

    /// The event with this id, or [`Error::EventNotFound`].
    pub async fn get(&self, id: &str) -> Result<Recorded> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        let id = id.to_owned();
        self.with_conn("get", async |conn| {
            let rows: Vec<EventRow> = Statement::new(sql)
                .bind::<Text, _>(&id)
                .load(&mut *conn)
                .await
                .map_err(db("get"))?;
            match rows.into_iter().next() {
                Some(row) => row.into_recorded(),
                None => Err(Error::EventNotFound { id }),
            }
        })
        .await
    }

    /// Number of events stored (committed) now.
    pub async fn count(&self) -> Result<u64> {
        self.with_conn("count", async |conn| {
            let rows: Vec<Count> = Statement::new("SELECT count(*) AS count FROM events")
                .load(&mut *conn)
                .await
                .map_err(db("count"))?;
            Ok(rows.into_iter().next().map_or(0, |r| r.count.max(0) as u64))
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
        self.with_conn("stats", async |conn| {
            for _ in 0..2 {
                let _: Vec<Count> = Statement::new("SELECT $1::bigint AS count")
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

    /// The stored events with these ids, when the append repeats them all
    /// (an idempotent retry); [`Error::DuplicateEvent`] when it repeats some
    /// or with other content; `None` when none is stored.
    async fn replay_of(
        conn: &mut AsyncPgConnection,
        events: &[NewEvent],
    ) -> std::result::Result<Option<Vec<Recorded>>, TxError> {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let stored: Vec<Recorded> = Statement::new(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1)"
        ))
        .bind::<Array<Text>, _>(&ids)
        .load::<EventRow>(&mut *conn)
        .await?
        .into_iter()
        .map(EventRow::into_recorded)
        .collect::<Result<_>>()?;
        let by_id: HashMap<&str, &Recorded> = stored.iter().map(|r| (r.id.as_str(), r)).collect();
        Ok(idempotent_replay(events.iter(), |id| {
            by_id.get(id).copied()
        })?)
    }

    /// One attempt at an append. A batch that fits one chunk is a single
    /// INSERT statement, atomic without an explicit transaction; a larger
    /// one runs its chunks in one transaction. Races on a unique index (the
    /// same id, the same stream position) surface as unique violations, which
    /// the caller resolves by checking for a replay or retrying.
    async fn append_once(
        conn: &mut AsyncPgConnection,
        expected: ExpectedVersion,
        events: &[NewEvent],
        chunk_size: usize,
    ) -> std::result::Result<Appended, TxError> {
        let chunk_size = chunk_size.max(1);
        if events.len() <= chunk_size {
            Self::append_chunks(conn, expected, events, chunk_size).await
        } else {
            conn.transaction::<_, TxError, _>(async |conn| {
                Self::append_chunks(conn, expected, events, chunk_size).await
            })
            .await
        }
    }

    async fn append_chunks(
        conn: &mut AsyncPgConnection,
        expected: ExpectedVersion,
        events: &[NewEvent],
        chunk_size: usize,
    ) -> std::result::Result<Appended, TxError> {
        let mut positions = Vec::with_capacity(events.len());
        for (n, chunk) in events.chunks(chunk_size).enumerate() {
            // Only the first chunk checks the expectation: later chunks of
            // the same transaction see the earlier ones as the stream head.
            let (lowest, highest) = if n == 0 {
                head_range(expected)
            } else {
                head_range(ExpectedVersion::Any)
            };
            let mut in_stream: HashMap<&str, i64> = HashMap::new();
            let mut ordinals = Vec::with_capacity(chunk.len());
            for e in chunk {
                let n = in_stream.entry(e.aggregate_id.as_str()).or_insert(0);
                *n += 1;
                ordinals.push(*n);
            }
            // Without an expectation on one stream, the trigger assigns the
            // positions under the stream's lock (ordinal 0), so such writers
            // take turns instead of racing. Chunks over several streams stay
            // optimistic: taking several locks in input order could
            // deadlock against another writer's order.
            if n == 0 && expected == ExpectedVersion::Any && in_stream.len() == 1 {
                ordinals.fill(0);
            }
            let first = chunk[0].aggregate_id.as_str();
            let data = || chunk.iter().map(|e| &e.data).collect::<Vec<_>>();
            let metadata = || {
                chunk
                    .iter()
                    .map(|e| JsonMap(&e.metadata))
                    .collect::<Vec<_>>()
            };
            let column = |f: fn(&NewEvent) -> &str| chunk.iter().map(f).collect::<Vec<_>>();
            let statement = match chunk {
                [one] => Statement::new(APPEND_ONE_SQL)
                    .bind::<Text, _>(one.id.as_str())
                    .bind::<Text, _>(first)
                    .bind::<Text, _>(one.event_type.as_str())
                    .bind::<Jsonb, _>(&one.data)
                    .bind::<Jsonb, _>(JsonMap(&one.metadata))
                    .bind::<Bool, _>(ordinals[0] > 0),
                _ if in_stream.len() == 1 => Statement::new(APPEND_ONE_STREAM_SQL)
                    .bind::<Text, _>(first)
                    .bind::<Array<Text>, _>(column(|e| &e.id))
                    .bind::<Array<Text>, _>(column(|e| &e.event_type))
                    .bind::<Array<Jsonb>, _>(data())
                    .bind::<Array<Jsonb>, _>(metadata())
                    .bind::<Array<BigInt>, _>(ordinals),
                _ => Statement::new(APPEND_SQL)
                    .bind::<Array<Text>, _>(column(|e| &e.id))
                    .bind::<Array<Text>, _>(column(|e| &e.aggregate_id))
                    .bind::<Array<Text>, _>(column(|e| &e.event_type))
                    .bind::<Array<Jsonb>, _>(data())
                    .bind::<Array<Jsonb>, _>(metadata())
                    .bind::<Array<BigInt>, _>(ordinals),
            };
            let statement = if in_stream.len() == 1 {
                statement
                    .bind::<Text, _>(first)
                    .bind::<BigInt, _>(lowest)
                    .bind::<BigInt, _>(highest)
            } else {
                // Validation let this append through with no expectation.
                debug_assert_eq!((lowest, highest), (0, i64::MAX));
                statement
            };
            let rows: Vec<Inserted> = statement.load(&mut *conn).await?;
            if rows.is_empty() {
                // The expectation failed (the statement inserts all or
                // nothing). A retry of an append that succeeded meets its
                // own events; otherwise report what the stream holds.
                if let Some(replay) = Self::replay_of(conn, events).await? {
                    return Ok(Appended::Replayed(replay));
                }
                let actual = Self::stream_head(conn, first).await?;
                expected.check(first, actual)?;
                // The stream moved between the statement and this read.
                return Err(TxError::Raced);
            }
            let position = |r: &Inserted| {
                (
                    r.version.max(0) as u64,
                    r.stream_version.max(0) as u64,
                    r.created_at,
                )
            };
            // RETURNING gives the rows in the order they went in, the
            // input's; match them by id should that ever differ.
            if rows.len() == chunk.len() && rows.iter().zip(chunk).all(|(r, e)| r.id == e.id) {
                positions.extend(rows.iter().map(position));
            } else {
                let by_id: HashMap<&str, &Inserted> =
                    rows.iter().map(|r| (r.id.as_str(), r)).collect();
                for e in chunk {
                    let row = by_id.get(e.id.as_str()).ok_or_else(|| {
                        Error::database(
                            "append",
                            format!("no position returned for event {:?}", e.id),
                        )
                    })?;
                    positions.push(position(row));
                }
            }
        }
        Ok(Appended::Written(positions))
    }

    /// The `stream_version` of an aggregate's last event.
    async fn stream_head(
        conn: &mut AsyncPgConnection,
        aggregate_id: &str,
    ) -> std::result::Result<Option<u64>, TxError> {
        let rows: Vec<StreamHead> = Statement::new(
            "SELECT stream_version FROM events \
             WHERE aggregate_id = $1 ORDER BY stream_version DESC LIMIT 1",
        )
        .bind::<Text, _>(aggregate_id)
        .load(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|h| h.stream_version.max(0) as u64))
    }

    /// The rows of a read: up to `limit` events after `after` that pass
    /// `filter`, up to the fence.
    async fn read_rows(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> Result<(Vec<EventRow>, Option<Cursor>, bool)> {
        validate::check_filter(filter)?;
        let after = after.as_i64();
        let filter = filter.clone();
        let pooled = self.inner.config.transaction_pooling;
        let rows = self
            .with_conn("read", async |conn| {
                if limit == 0 {
                    return Ok((Vec::new(), upto, false));
                }
                // One round trip, two statements: the first stores the fence
                // in a session setting, the second reads up to it with a
                // snapshot taken after it (Read Committed: one snapshot per
                // statement). Should they ever run in the other order, the
                // read sees an older fence (still a valid one) or none
                // (reads nothing), never a wrong one. A fence an earlier
                // page took (`upto`) is still valid: reading up to it again
                // saves the first statement.
                let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE version > $1");
                sql.push_str(match upto {
                    Some(_) => " AND version <= $2",
                    None => {
                        " AND version <= coalesce(nullif(current_setting('synckit.fence', true), '')::bigint, 0)"
                    }
                });
                let first = if upto.is_some() { 3 } else { 2 };
                // One value is an equality, which the (column, version)
                // indexes return in order; a list is `= ANY`.
                let mut values = Vec::new();
                for (column, selected) in [
                    ("aggregate_id", filter.aggregate_ids()),
                    ("event_type", filter.event_types()),
                ] {
                    let Some(selected) = selected else { continue };
                    let n = values.len() + first;
                    if selected.len() == 1 {
                        sql.push_str(&format!(" AND {column} = ${n}"));
                    } else {
                        sql.push_str(&format!(" AND {column} = ANY(${n})"));
                    }
                    values.push(selected);
                }
                sql.push_str(&format!(" ORDER BY version LIMIT ${}", values.len() + first));
                let mut query = Statement::new(sql).bind::<BigInt, _>(after);
                if let Some(fence) = upto {
                    query = query.bind::<BigInt, _>(fence.as_i64());
                }
                for selected in values {
                    query = match selected.first() {
                        Some(one) if selected.len() == 1 => query.bind::<Text, _>(one.clone()),
                        _ => query.bind::<Array<Text>, _>(selected.iter().cloned().collect::<Vec<_>>()),
                    };
                }
                let query = query.bind::<BigInt, _>(to_i64(limit));
                // Session-wide, or (behind a transaction pooler, where the
                // read runs in a transaction of its own) local to it.
                let set_fence = Statement::new(if pooled {
                    "SELECT set_config('synckit.fence', synckit_fence()::text, true) AS fence, \
                     (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
                        FROM events_version_seq) AS head"
                } else {
                    "SELECT set_config('synckit.fence', synckit_fence()::text, false) AS fence, \
                     (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
                        FROM events_version_seq) AS head"
                });
                if upto.is_some() {
                    let rows = query.load::<EventRow>(conn).await.map_err(db("read"))?;
                    return Ok((rows, upto, false));
                }
                let conn: &AsyncPgConnection = conn;
                let (fence, rows): (Vec<FenceText>, Vec<EventRow>) = futures::try_join!(
                    set_fence.load::<FenceText>(&mut &*conn),
                    query.load::<EventRow>(&mut &*conn)
                )
                .map_err(db("read"))?;
                let (fence, head) = fence
                    .into_iter()
                    .next()
                    .map_or((None, None), |f| (f.fence.and_then(|t| t.parse::<u64>().ok()), f.head));
                // The fence is below a version a writer has taken: the read
                // may be short until that writer finishes.
                let held_back = matches!((fence, head), (Some(f), Some(h)) if (f as i64) < h);
                Ok((rows, fence.map(|f| Cursor::new(self.inner.fence_floor.raise(f))), held_back))
            })
            .await?;
        if self.inner.config.metrics {
            metrics::counter!("synckit_events_read_total").increment(rows.0.len() as u64);
        }
        Ok(rows)
    }

    /// Stores a durable subscription's position.
    async fn store_checkpoint(&self, name: &str, position: Cursor) -> Result<()> {
        let name = name.to_owned();
        self.with_conn("save_checkpoint", async |conn| {
            Statement::new(
                "INSERT INTO synckit_checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            )
            .bind::<Text, _>(&name)
            .bind::<BigInt, _>(position.as_i64())
            .execute(&mut *conn)
            .await
            .map_err(db("save_checkpoint"))?;
            Ok(())
        })
        .await
    }
}

/// The highest version below which no transaction is pending (see the
/// migration's comment on `synckit_fence`). Must run in its own statement,
/// before the read it bounds.
async fn fence(conn: &mut AsyncPgConnection, operation: &'static str) -> Result<i64> {
    let rows: Vec<Fence> = Statement::new("SELECT synckit_fence() AS fence")
        .load(&mut *conn)
        .await
        .map_err(db(operation))?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.fence)
        .unwrap_or(0)
        .max(0))
}

/// A page of rows read up to `fence`, decoded into `P` as it is taken.
fn typed_page<P: Payload>(
    rows: Vec<EventRow>,
    fence: Option<Cursor>,
    held_back: bool,
) -> TypedPage<P> {
    let page = TypedPage::from_rows(
        rows,
        EventRow::cursor,
        EventRow::held_bytes,
        EventRow::into_payload,
    );
    match fence {
        Some(fence) => page.with_fence(fence, held_back),
        None => page,
    }
}

async fn check_schema(conn: &mut AsyncPgConnection) -> Result<()> {
    let rows: Vec<Count> =
        Statement::new("SELECT count(*) AS count FROM pg_proc WHERE proname = 'synckit_fence'")
            .load(conn)
            .await
            .map_err(db("connect"))?;
    if rows.into_iter().next().map_or(0, |r| r.count) == 0 {
        return Err(Error::IncompatibleVersion {
            input: "no schema".to_owned(),
            reason: "the database has no synckit schema: run the migrations (`synckit::postgres::migrate`) or set run_migrations"
                .to_owned(),
        });
    }
    Ok(())
}

impl EventStore for PgStore {
    #[tracing::instrument(skip_all, fields(events = events.len(), %expected), err)]
    async fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        validate::check_append(expected, &events)?;
        if events.is_empty() {
            self.pool()?;
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let chunk = self.inner.config.batch_size;
        let mut attempt = 0;
        let appended = loop {
            attempt += 1;
            let outcome = self
                .with_conn("append", async |conn| {
                    Ok(Self::append_once(conn, expected, &events, chunk).await)
                })
                .await?;
            match outcome {
                Ok(appended) => break appended,
                Err(TxError::Store(e)) => {
                    if self.inner.config.metrics && matches!(e, Error::Conflict { .. }) {
                        metrics::counter!("synckit_append_conflicts_total").increment(1);
                    }
                    return Err(e);
                }
                Err(TxError::Db(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    info,
                ))) if attempt < APPEND_RETRIES => {
                    if info.constraint_name() == Some("events_id_key") {
                        // An id is stored already: a replay, or a duplicate.
                        let replay = self
                            .with_conn("append", async |conn| {
                                Ok(Self::replay_of(conn, &events).await)
                            })
                            .await?;
                        match replay {
                            Ok(Some(replay)) => return Ok(replay),
                            Ok(None) => {}
                            Err(TxError::Store(e)) => return Err(e),
                            Err(TxError::Db(e)) => return Err(Error::database("append", e)),
                            Err(TxError::Raced) => {}
                        }
                    }
                    tracing::debug!(constraint = ?info.constraint_name(), attempt, "append lost a race; retrying");
                    race_backoff(attempt).await;
                }
                Err(TxError::Raced) if attempt < APPEND_RETRIES => {
                    tracing::debug!(attempt, "a stream moved during the append; retrying");
                    race_backoff(attempt).await;
                }
                Err(TxError::Raced) => {
                    return Err(Error::retryable(
                        "append",
                        format!("streams kept moving: gave up after {APPEND_RETRIES} attempts"),
                    ));
                }
                Err(TxError::Db(e)) => return Err(Error::database("append", e)),
            }
        };
        let recorded = match appended {
            Appended::Written(positions) => {
                let mut recorded: Vec<Recorded> = events
                    .into_iter()
                    .zip(positions)
                    .map(|(e, (version, stream_version, created_at))| {
                        e.into_recorded(version, stream_version, created_at)
                    })
                    .collect();
                recorded.sort_by_key(|r| r.version);
                recorded
            }
            Appended::Replayed(replay) => replay,
        };
        // The listener's NOTIFY wakes the subscriptions of this process as
        // it wakes those of every other; waking them here as well would make
        // each read twice per event. Only while it is down does the writer
        // wake them itself (and the reconnect wakes everyone anyway).
        if !self.inner.listener.is_connected() {
            for event in &recorded {
                self.inner
                    .hub
                    .notify(&event.aggregate_id, &event.event_type);
            }
        }
        if self.inner.config.metrics {
            metrics::counter!("synckit_events_appended_total").increment(recorded.len() as u64);
            metrics::histogram!("synckit_append_seconds").record(started.elapsed().as_secs_f64());
        }
        Ok(recorded)
    }

    async fn read(&self, filter: &Filter, after: Cursor, limit: usize) -> Result<Vec<Recorded>> {
        let (rows, _, _) = self.read_rows(filter, after, limit, None).await?;
        rows.into_iter().map(EventRow::into_recorded).collect()
    }

    async fn read_page_as<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> Result<TypedPage<P>> {
        // A task of its own reads the page off the socket as fast as the
        // server sends it, whatever the caller is doing meanwhile (the
        // stream reads a page ahead while its consumer goes through the
        // last one; a subscription may not be polled at all), and gives
        // its connection back when done; polled only by the consumer, the
        // read made the server stall and wake up again many times per page.
        let store = self.clone();
        let filter = filter.clone();
        let read = async move { store.read_rows(&filter, after, limit, upto).await };
        let (rows, fence, held_back) =
            AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(read)))
                .await
                .map_err(|e| Error::database("read", e))??;
        Ok(typed_page(rows, fence, held_back))
    }

    async fn latest_version(&self) -> Result<Cursor> {
        let fence = self
            .with_conn("latest_version", async |conn| {
                fence(conn, "latest_version").await
            })
            .await?;
        Ok(Cursor::new(self.inner.fence_floor.raise(fence as u64)))
    }

    async fn stream_version(&self, aggregate_id: &str) -> Result<Option<u64>> {
        validate::check_aggregate_id(aggregate_id)?;
        let aggregate_id = aggregate_id.to_owned();
        self.with_conn("stream_version", async |conn| {
            let heads: Vec<StreamHead> = Statement::new(
                "SELECT stream_version FROM events \
                 WHERE aggregate_id = $1 ORDER BY stream_version DESC LIMIT 1",
            )
            .bind::<Text, _>(&aggregate_id)
            .load(&mut *conn)
            .await
            .map_err(db("stream_version"))?;
            Ok(heads.into_iter().next().map(|h| h.stream_version as u64))
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        // Dropping the pool closes its idle connections; connections in use
        // close when their operation ends.
        let pool = self
            .inner
            .pool
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(pool);
        self.inner.stop_listener();
        self.inner.hub.close();
        Ok(())
    }

    fn batch_size(&self) -> usize {
        self.inner.config.batch_size
    }
}

impl SubscriptionSource for PgStore {
    fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Starts the listener if this is the store's first subscription. A
    /// commit between the subscription's first read and the listener's
    /// LISTEN is not lost: the listener wakes every subscription once it
    /// listens.
    async fn subscribe(&self, filter: Filter, start: crate::Start) -> Result<crate::Subscription> {
        let config = &self.inner.config;
        if config.transaction_pooling && config.direct_connection_string.is_none() {
            // LISTEN through a transaction pooler would look connected and
            // hear nothing: refuse rather than poll silently.
            return Err(Error::invalid(
                "config",
                "subscriptions behind a transaction pooler need direct_connection_string \
                 (LISTEN needs a session of its own)",
            ));
        }
        self.inner.start_listener();
        crate::store::subscription::open(self.clone(), filter, start).await
    }

    /// The fence, and the versions above it that had committed: while a
    /// writer below them is pending, the fence lags behind them, and a
    /// subscription from now must not deliver what committed before it.
    async fn start_now(&self) -> Result<(Cursor, Vec<u64>)> {
        let (fence, committed) = self
            .with_conn("subscribe", async |conn| {
                let fence = fence(conn, "subscribe").await?;
                // A later statement: its snapshot sees every commit up to
                // now, above the fence read before it.
                let rows: Vec<Position> = Statement::new(
                    "SELECT version AS position FROM events WHERE version > $1 ORDER BY version",
                )
                .bind::<BigInt, _>(fence)
                .load(&mut *conn)
                .await
                .map_err(db("subscribe"))?;
                Ok((fence, rows))
            })
            .await?;
        let fence = self.inner.fence_floor.raise(fence as u64);
        let committed = committed
            .into_iter()
            .filter_map(|r| u64::try_from(r.position).ok())
            .filter(|v| *v > fence)
            .collect();
        Ok((Cursor::new(fence), committed))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Cursor>> {
        let name = name.to_owned();
        self.with_conn("load_checkpoint", async |conn| {
            let rows: Vec<Position> =
                Statement::new("SELECT position FROM synckit_checkpoints WHERE name = $1")
                    .bind::<Text, _>(&name)
                    .load(&mut *conn)
                    .await
                    .map_err(db("load_checkpoint"))?;
            Ok(rows
                .into_iter()
                .next()
                .map(|r| Cursor::new(r.position.max(0) as u64)))
        })
        .await
    }

    async fn save_checkpoint(&self, name: &str, position: Cursor) -> Result<()> {
        self.store_checkpoint(name, position).await
    }

    fn health(&self) -> Result<()> {
        self.inner.listener.health()
    }

    fn retry_delay(&self, attempt: u32) -> impl std::future::Future<Output = ()> + Send {
        let base = self
            .inner
            .config
            .reconnect_interval
            .min(Duration::from_secs(1));
        let delay = base
            .saturating_mul(1 << attempt.min(5))
            .min(Duration::from_secs(30));
        tokio::time::sleep(delay)
    }
}

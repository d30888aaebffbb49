//! The embedded store on SQLite (feature `sqlite`, bundled SQLite).
//!
//! One connection (its calls run on the caller's worker under
//! `block_in_place`, or on a blocking thread), in WAL mode with a busy
//! timeout. SQLite runs one write transaction at a time and assigns
//! `version` inside it, so versions become visible in commit order and
//! reads need no fence. Subscriptions are woken in process after each
//! commit, and by a second connection that polls `PRAGMA data_version` for
//! commits of other processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use serde_json::Value;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::recorded::{NewEvent, Recorded, stored_data, stored_metadata, stored_positions};
use crate::model::validate;
use crate::store::hub::Hub;
use crate::store::subscription::Payload;
use crate::store::{
    DEFAULT_BATCH_SIZE, EventStore, SubscriptionSource, TypedPage, idempotent_replay,
};

/// The SQLite migrations of `migrations/sqlite`, embedded.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Cacheable raw SQL on SQLite.
type Statement<'f> = crate::sql::statement::Statement<'f, diesel::sqlite::Sqlite>;

const EVENT_COLUMNS: &str =
    "version, stream_version, id, aggregate_id, event_type, data, metadata, created_at";

/// Configuration of a [`SqliteStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created when missing.
    pub path: PathBuf,
    /// How long a statement waits for another process's lock (default 5 s).
    pub busy_timeout: Duration,
    /// How often subscriptions check for commits of other processes
    /// (`PRAGMA data_version`; default 200 ms).
    pub poll_interval: Duration,
    /// Page size of catch-up reads and the first page of loads (the pages
    /// of a long load grow from it: see [`EventStore::read_stream`];
    /// default 1000).
    pub batch_size: usize,
}

impl SqliteConfig {
    /// Defaults for this file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

type Conn = Arc<std::sync::Mutex<SqliteConnection>>;

/// Where a call on the connection runs.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// On this worker under `block_in_place` (multi-threaded runtimes),
    /// which hands the worker's other tasks to another thread meanwhile: a
    /// SQLite call is short, and handing each to a blocking thread and back
    /// costs more than the call.
    Here,
    /// On a blocking thread, so that the caller's task goes on meanwhile
    /// (the next page of a stream is read while this one is consumed).
    Elsewhere,
}

/// Runs `task` on the connection without stalling the runtime: a wait on
/// another process's write lock blocks no other task.
async fn on_connection<R: Send + 'static>(
    conn: &Conn,
    place: Place,
    task: impl FnOnce(&mut SqliteConnection) -> R + Send + 'static,
) -> std::result::Result<R, tokio::task::JoinError> {
    let conn = conn.clone();
    let work = move || task(&mut conn.lock().unwrap_or_else(|p| p.into_inner()));
    if place == Place::Here
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
    {
        Ok(tokio::task::block_in_place(work))
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

struct Inner {
    /// The connection, taken out by `close`. Calls clone the handle and
    /// lock the connection itself on the thread that runs them, so that no
    /// lock is held across an await: a call whose future is dropped, or no
    /// longer polled (a subscription whose consumer went quiet), holds up
    /// no one once its blocking part is done.
    conn: std::sync::Mutex<Option<Conn>>,
    config: SqliteConfig,
    closed: AtomicBool,
    hub: Hub,
    poller: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// The embedded event store; clones share one connection.
///
/// ```no_run
/// use synckit::sqlite::SqliteStore;
/// use synckit::{Cursor, EventStore};
///
/// # async fn demo() -> synckit::Result<()> {
/// let store = SqliteStore::open("events.db").await?;
/// let events = store.load(Cursor::START).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.config.path)
            .finish()
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = BigInt)]
    stream_version: i64,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    aggregate_id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    data: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    metadata: Option<String>,
    #[diesel(sql_type = Text)]
    created_at: String,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::database("load", format!("bad created_at {text:?}: {e}")))
}

impl Row {
    fn into_recorded(self) -> Result<Recorded> {
        self.into_payload::<Value>()
    }

    /// The event's position.
    fn cursor(&self) -> Cursor {
        Cursor::new(self.version.max(0) as u64)
    }

    /// A page of rows, decoded into `P` as it is taken.
    fn page<P: Payload>(rows: Vec<Row>) -> TypedPage<P> {
        TypedPage::from_rows(rows, Row::cursor, Row::held_bytes, Row::into_payload)
    }

    /// What the row holds in memory, roughly.
    fn held_bytes(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.aggregate_id.len()
            + self.event_type.len()
            + text(&self.data)
            + text(&self.metadata)
            + self.created_at.len()
    }

    /// The event decoded into `P` straight from the stored JSON; a row
    /// that does not decode is an error naming its version and id, for
    /// this event alone (the same policy as PostgreSQL's rows).
    fn into_payload<P: Payload>(self) -> Result<Recorded<P>> {
        let (version, stream_version) =
            stored_positions(self.version, self.stream_version, &self.id)?;
        let metadata = stored_metadata(
            self.metadata.as_deref().map(str::as_bytes),
            version,
            &self.id,
        )?;
        let created_at = DateTime::parse_from_rfc3339(&self.created_at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                let reason = format!("its created_at {:?}: {e}", self.created_at);
                Error::unreadable(version, &self.id, reason)
            })?;
        let json = self.data.as_deref().map(str::as_bytes);
        let data = stored_data(json, &self.event_type, version, &self.id)?;
        Ok(Recorded {
            version,
            stream_version,
            created_at,
            id: self.id,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            data,
            metadata,
        })
    }
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Errors inside a blocking closure: the store's own, or the database's.
enum TxError {
    Db(DieselError),
    Store(Error),
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

fn invalid_file(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidConnection {
        reason: format!("{}: {reason}", path.display()),
    }
}

/// The tables a synckit file holds (the migrations create them).
const SYNCKIT_TABLES: [&str; 3] = [
    "events",
    "synckit_checkpoints",
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
fn open_checked(config: &SqliteConfig) -> Result<(SqliteConnection, Vec<String>)> {
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
    // synckit's file holds synckit's tables and migrations only: a file
    // another tool manages with diesel has the same migrations table, but
    // other tables or other migration versions.
    let foreign: Vec<&str> = tables
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| !SYNCKIT_TABLES.contains(name))
        .collect();
    if !foreign.is_empty() {
        return Err(invalid_file(
            path,
            format!(
                "holds tables synckit did not create ({}); use another file",
                foreign.join(", ")
            ),
        ));
    }
    if tables
        .iter()
        .any(|t| t.name == "__diesel_schema_migrations")
    {
        let known = embedded_versions()?;
        let applied: Vec<Name> =
            diesel::sql_query("SELECT version AS name FROM __diesel_schema_migrations")
                .load(&mut conn)
                .map_err(|e| invalid_file(path, e))?;
        let unknown: Vec<&str> = applied
            .iter()
            .map(|v| v.name.as_str())
            .filter(|v| !known.iter().any(|k| k == v))
            .collect();
        if !unknown.is_empty() {
            return Err(invalid_file(
                path,
                format!(
                    "holds tables synckit did not create: its migration record lists versions synckit does not have ({}), from another tool or a newer synckit; use another file",
                    unknown.join(", ")
                ),
            ));
        }
    } else if !tables.is_empty() {
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

/// Creates or migrates the database file and returns the migrations it
/// applied (none when it was up to date); refuses the same files as
/// [`SqliteStore::connect`].
pub async fn migrate(config: &SqliteConfig) -> Result<Vec<String>> {
    let config = config.clone();
    let (_, applied) = tokio::task::spawn_blocking(move || open_checked(&config))
        .await
        .map_err(|e| Error::database("migrate", e))??;
    Ok(applied)
}

/// Figures about what a store holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoreSummary {
    /// Events stored.
    pub events: u64,
    /// Version of the last event readers can see.
    pub latest_version: u64,
    /// Distinct aggregates.
    pub streams: u64,
    /// Events per type, most frequent first.
    pub per_type: Vec<(String, u64)>,
}

impl SqliteStore {
    /// Opens (or creates) the database file with default settings.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        SqliteStore::connect(SqliteConfig::new(path)).await
    }

    /// Opens (or creates) the database file, runs the embedded migrations,
    /// and starts watching for other processes' commits. A directory, a
    /// read-only file, a file that is not a SQLite database or a database
    /// with tables synckit did not create is refused, unmodified.
    pub async fn connect(config: SqliteConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::invalid("config", "batch_size must be at least 1"));
        }
        let opening = config.clone();
        let (conn, _) = tokio::task::spawn_blocking(move || open_checked(&opening))
            .await
            .map_err(|e| Error::database("open", e))??;
        let poll_config = config.clone();
        let hub = Hub::new();
        let inner = Arc::new(Inner {
            conn: std::sync::Mutex::new(Some(Arc::new(std::sync::Mutex::new(conn)))),
            config,
            closed: AtomicBool::new(false),
            hub: hub.clone(),
            poller: std::sync::Mutex::new(None),
        });
        let poller = tokio::spawn(watch_other_processes(poll_config, hub));
        *inner.poller.lock().unwrap_or_else(|p| p.into_inner()) = Some(poller);
        Ok(SqliteStore { inner })
    }

    /// Counts of events, streams and types.
    pub async fn summary(&self) -> Result<StoreSummary> {
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
                Ok(n.into_iter().next().and_then(|r| r.n).unwrap_or(0).max(0) as u64)
            };
            let events = one(c, "SELECT count(*) AS n FROM events")?;
            let latest_version = one(c, "SELECT max(version) AS n FROM events")?;
            let streams = one(c, "SELECT count(DISTINCT aggregate_id) AS n FROM events")?;
            let per_type: Vec<TypeCount> = diesel::sql_query(
                "SELECT event_type, count(*) AS count FROM events GROUP BY event_type ORDER BY count DESC, event_type",
            )
            .load(c)?;
            Ok(StoreSummary {
                events,
                latest_version,
                streams,
                per_type: per_type.into_iter().map(|t| (t.event_type, t.count.max(0) as u64)).collect(),
            })
        })
        .await
    }

    /// The rows of a read: up to `limit` events after `after` that pass
    /// `filter`.
    async fn read_rows(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        place: Place,
    ) -> Result<Vec<Row>> {
        validate::check_filter(filter)?;
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE version > $1");
        let mut binds = Vec::new();
        for (column, values) in [
            ("aggregate_id", filter.aggregate_ids()),
            ("event_type", filter.event_types()),
        ] {
            let Some(values) = values else { continue };
            let n = binds.len() + 2;
            // One value is an equality, which reads the (column, version)
            // index in order; a list takes the rows of each value and sorts.
            if let (1, Some(one)) = (values.len(), values.first()) {
                sql.push_str(&format!(" AND {column} = ${n}"));
                binds.push(one.clone());
            } else {
                sql.push_str(&format!(
                    " AND {column} IN (SELECT value FROM json_each(${n}))"
                ));
                binds.push(serde_json::to_string(values).map_err(|e| Error::database("read", e))?);
            }
        }
        sql.push_str(&format!(" ORDER BY version LIMIT ${}", binds.len() + 2));
        let after = after.as_i64();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("read", place, move |c| {
            let mut query = Statement::new(sql).bind::<BigInt, _>(after);
            for b in binds {
                query = query.bind::<Text, _>(b);
            }
            Ok(query.bind::<BigInt, _>(limit).load(c)?)
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// Runs `task` on the connection, on a blocking thread.
    async fn run<R: Send + 'static>(
        &self,
        operation: &'static str,
        place: Place,
        task: impl FnOnce(&mut SqliteConnection) -> std::result::Result<R, TxError> + Send + 'static,
    ) -> Result<R> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::StoreClosed)?;
        let outcome = on_connection(&conn, place, task)
            .await
            .map_err(|e| Error::database(operation, e))?;
        outcome.map_err(|e| match e {
            TxError::Store(e) => e,
            TxError::Db(e) => Error::database(operation, e),
        })
    }
}

/// Wakes every subscription when another connection commits.
async fn watch_other_processes(config: SqliteConfig, hub: Hub) {
    let path = config.path.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let url = path.to_str().unwrap_or_default().to_owned();
        SqliteConnection::establish(&url).ok()
    })
    .await;
    let Ok(Some(conn)) = opened else {
        return;
    };
    let conn: Conn = Arc::new(std::sync::Mutex::new(conn));
    let mut last = None;
    // Bounded both ways: a zero period is refused by tokio, a huge one
    // overflows the next deadline.
    let period = config
        .poll_interval
        .clamp(Duration::from_millis(5), Duration::from_secs(24 * 3600));
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let version = on_connection(&conn, Place::Elsewhere, |c| {
            diesel::sql_query("SELECT data_version AS n FROM pragma_data_version").load::<Number>(c)
        })
        .await
        .ok()
        .and_then(|rows| rows.ok())
        .and_then(|rows| rows.into_iter().next())
        .and_then(|r| r.n);
        if version.is_some() && last.is_some() && version != last {
            hub.notify_all();
        }
        if version.is_some() {
            last = version;
        }
    }
}

/// Runs an event query and decodes its rows.
fn load_rows(
    conn: &mut SqliteConnection,
    query: Statement<'_>,
) -> std::result::Result<Vec<Recorded>, TxError> {
    let rows: Vec<Row> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .map(Row::into_recorded)
        .collect::<Result<_>>()?)
}

/// Appends under the write lock (an immediate transaction), so no other
/// writer can move a stream between the checks and the commit; positions
/// are therefore known before the rows go in: one query for the heads, then
/// one cached INSERT per event. A repeated id or a failed expectation rolls
/// back and checks whether the append repeats stored events (an idempotent
/// retry).
fn append_blocking(
    conn: &mut SqliteConnection,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> std::result::Result<Vec<Recorded>, TxError> {
    let outcome = conn.immediate_transaction(|c| insert_events(c, expected, &events));
    match outcome {
        Ok((positions, created_at)) => Ok(events
            .into_iter()
            .zip(positions)
            .map(|(e, (version, stream_version))| {
                e.into_recorded(version, stream_version, created_at)
            })
            .collect()),
        Err(TxError::Store(Error::Conflict { .. }))
        | Err(TxError::Db(DieselError::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => {
            let replay = conn.immediate_transaction(|c| replay_of(c, &events))?;
            match replay {
                Some(replay) => Ok(replay),
                None => outcome.map(|_| Vec::new()),
            }
        }
        Err(e) => Err(e),
    }
}

/// The stored events with these ids, when the append repeats them all;
/// [`Error::DuplicateEvent`] when it repeats some or with other content.
fn replay_of(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> std::result::Result<Option<Vec<Recorded>>, TxError> {
    let ids = serde_json::to_string(&events.iter().map(|e| &e.id).collect::<Vec<_>>())
        .map_err(|e| Error::database("append", e))?;
    let stored = load_rows(
        conn,
        Statement::new(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id IN (SELECT value FROM json_each($1))"
        ))
        .bind::<Text, _>(ids),
    )?;
    let by_id: HashMap<&str, &Recorded> = stored.iter().map(|r| (r.id.as_str(), r)).collect();
    Ok(idempotent_replay(events.iter(), |id| {
        by_id.get(id).copied()
    })?)
}

/// Each event's `(version, stream_version)`, and the append's time.
type Positions = (Vec<(u64, u64)>, DateTime<Utc>);

/// Rows per multi-row INSERT of an append (8 values each, well under
/// SQLite's limit on bound parameters).
const INSERT_ROWS: usize = 64;

/// The INSERT of one row.
const INSERT_ONE_SQL: &str = "INSERT INTO events \
     (version, id, aggregate_id, event_type, data, metadata, stream_version, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The INSERT of [`INSERT_ROWS`] rows.
static INSERT_CHUNK_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows: Vec<String> = (0..INSERT_ROWS)
        .map(|r| {
            let n = r * 8;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7,
                n + 8
            )
        })
        .collect();
    format!(
        "INSERT INTO events \
         (version, id, aggregate_id, event_type, data, metadata, stream_version, created_at) \
         VALUES {}",
        rows.join(", ")
    )
});

/// Binds one event's row, in the column order of the INSERTs.
fn bind_row<'f>(
    insert: Statement<'f>,
    e: &'f NewEvent,
    version: i64,
    head: i64,
    data: &'f str,
    metadata: &'f str,
    created_at: &'f str,
) -> Statement<'f> {
    insert
        .bind::<BigInt, _>(version)
        .bind::<Text, _>(&e.id)
        .bind::<Text, _>(&e.aggregate_id)
        .bind::<Text, _>(&e.event_type)
        .bind::<Text, _>(data)
        .bind::<Text, _>(metadata)
        .bind::<BigInt, _>(head)
        .bind::<Text, _>(created_at)
}

/// Inserts the events; returns their positions.
fn insert_events(
    c: &mut SqliteConnection,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> std::result::Result<Positions, TxError> {
    #[derive(QueryableByName)]
    struct Head {
        #[diesel(sql_type = Text)]
        aggregate_id: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        n: Option<i64>,
    }
    // The last version ever taken (AUTOINCREMENT never reuses one) under the
    // empty name, which no aggregate has, then each stream's head.
    const LAST_VERSION: &str = "SELECT '' AS aggregate_id, \
         max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), \
             coalesce((SELECT max(version) FROM events), 0)) AS n \
         UNION ALL ";
    let first = events.first().map_or("", |e| e.aggregate_id.as_str());
    let heads = if events.iter().all(|e| e.aggregate_id == first) {
        // One stream (every append with an expectation, most others): its
        // head by one index probe, with no JSON list to build and walk.
        static ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{LAST_VERSION}SELECT $1 AS aggregate_id, \
                 (SELECT max(stream_version) FROM events WHERE aggregate_id = $2) AS n"
            )
        });
        Statement::new(&*ONE)
            .bind::<Text, _>(first)
            .bind::<Text, _>(first)
    } else {
        static SEVERAL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{LAST_VERSION}SELECT j.value AS aggregate_id, \
                 (SELECT max(stream_version) FROM events WHERE aggregate_id = j.value) AS n \
                 FROM json_each($1) j"
            )
        });
        let mut aggregates: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        aggregates.sort_unstable();
        aggregates.dedup();
        let aggregates =
            serde_json::to_string(&aggregates).map_err(|e| Error::database("append", e))?;
        Statement::new(&*SEVERAL).bind::<Text, _>(aggregates)
    };
    let rows: Vec<Head> = heads.load(c)?;
    let mut heads: HashMap<String, i64> = rows
        .into_iter()
        .map(|h| (h.aggregate_id, h.n.unwrap_or(0)))
        .collect();
    let mut version = heads.remove("").unwrap_or(0);
    if let Some(first) = events.first() {
        let actual = heads
            .get(&first.aggregate_id)
            .copied()
            .filter(|v| *v > 0)
            .map(|v| v as u64);
        expected.check(&first.aggregate_id, actual)?;
    }
    // One time for the whole append, at the column's precision.
    let created_at = Utc::now();
    let created_text = created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let created_at = parse_time(&created_text)?;
    let mut positions = Vec::with_capacity(events.len());
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        let serialization = |source| Error::Serialization {
            event_type: e.event_type.clone(),
            source,
        };
        let data = serde_json::to_string(&e.data).map_err(serialization)?;
        let metadata = serde_json::to_string(&e.metadata).map_err(serialization)?;
        version += 1;
        // Every stream of the batch has an entry: the heads query returns
        // one row per distinct aggregate.
        let head = match heads.get_mut(&e.aggregate_id) {
            Some(head) => head,
            None => heads.entry(e.aggregate_id.clone()).or_insert(0),
        };
        *head += 1;
        positions.push((version.max(0) as u64, (*head).max(0) as u64));
        rows.push((e, version, *head, data, metadata));
    }
    // Full chunks of INSERT_ROWS rows, one statement each, then the rest one
    // row at a time: two statement texts in all, both kept prepared.
    let mut chunks = rows.chunks_exact(INSERT_ROWS);
    for chunk in chunks.by_ref() {
        let mut insert = Statement::new(&*INSERT_CHUNK_SQL);
        for (e, version, head, data, metadata) in chunk {
            insert = bind_row(insert, e, *version, *head, data, metadata, &created_text);
        }
        insert.execute(c)?;
    }
    for (e, version, head, data, metadata) in chunks.remainder() {
        bind_row(
            Statement::new(INSERT_ONE_SQL),
            e,
            *version,
            *head,
            data,
            metadata,
            &created_text,
        )
        .execute(c)?;
    }
    Ok((positions, created_at))
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        validate::check_append(expected, &events)?;
        if events.is_empty() {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(Error::StoreClosed);
            }
            return Ok(Vec::new());
        }
        // The immediate transaction holds the write lock from the id and
        // stream checks to the commit, so no other writer can race them.
        let recorded = self
            .run("append", Place::Here, move |c| {
                append_blocking(c, expected, events)
            })
            .await?;
        for e in &recorded {
            self.inner.hub.notify(&e.aggregate_id, &e.event_type);
        }
        Ok(recorded)
    }

    async fn read(&self, filter: &Filter, after: Cursor, limit: usize) -> Result<Vec<Recorded>> {
        let rows = self.read_rows(filter, after, limit, Place::Here).await?;
        rows.into_iter().map(Row::into_recorded).collect()
    }

    async fn read_page_as<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        _upto: Option<Cursor>,
    ) -> Result<TypedPage<P>> {
        // Off this task: the stream reads its next page meanwhile.
        let rows = self
            .read_rows(filter, after, limit, Place::Elsewhere)
            .await?;
        Ok(Row::page(rows))
    }

    async fn read_page(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> Result<TypedPage<Value>> {
        let rows = self.read_rows(filter, after, limit, Place::Here).await?;
        Ok(Row::page(rows))
    }

    async fn latest_version(&self) -> Result<Cursor> {
        self.run("latest_version", Place::Here, |c| {
            let n: Vec<Number> = Statement::new("SELECT max(version) AS n FROM events").load(c)?;
            Ok(Cursor::new(
                n.into_iter().next().and_then(|r| r.n).unwrap_or(0).max(0) as u64,
            ))
        })
        .await
    }

    async fn stream_version(&self, aggregate_id: &str) -> Result<Option<u64>> {
        validate::check_aggregate_id(aggregate_id)?;
        let aggregate_id = aggregate_id.to_owned();
        self.run("stream_version", Place::Here, move |c| {
            let n: Vec<Number> = Statement::new(
                "SELECT max(stream_version) AS n FROM events WHERE aggregate_id = $1",
            )
            .bind::<Text, _>(&aggregate_id)
            .load(c)?;
            Ok(n.into_iter().next().and_then(|r| r.n).map(|v| v as u64))
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(task) = self
            .inner
            .poller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        // Dropping the connection closes the file (once calls in flight
        // are done with it).
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(conn);
        self.inner.hub.close();
        Ok(())
    }

    fn batch_size(&self) -> usize {
        self.inner.config.batch_size
    }
}

impl SubscriptionSource for SqliteStore {
    fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Cursor>> {
        let name = name.to_owned();
        self.run("load_checkpoint", Place::Here, move |c| {
            let n: Vec<Number> =
                Statement::new("SELECT position AS n FROM synckit_checkpoints WHERE name = $1")
                    .bind::<Text, _>(&name)
                    .load(c)?;
            Ok(n.into_iter()
                .next()
                .and_then(|r| r.n)
                .map(|v| Cursor::new(v.max(0) as u64)))
        })
        .await
    }

    async fn save_checkpoint(&self, name: &str, position: Cursor) -> Result<()> {
        let name = name.to_owned();
        self.run("save_checkpoint", Place::Here, move |c| {
            Statement::new(
                "INSERT INTO synckit_checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            )
            .bind::<Text, _>(&name)
            .bind::<BigInt, _>(position.as_i64())
            .execute(c)?;
            Ok(())
        })
        .await
    }

    fn retry_delay(&self, attempt: u32) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(Duration::from_millis(20u64 << attempt.min(8)))
    }
}

//! What the SQL backends share: the statements, the column list, the row
//! decoder, the read query, the checkpoint SQL, the replay lookup and the
//! integer conversions. Both backends build their SQL from here, so the
//! same stored row reads the same on either.

/// Milliseconds since the Unix epoch by the database's clock: every
/// consumer judges expiry by the same clock.
#[cfg(feature = "postgres")]
macro_rules! pg_now {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

#[cfg(feature = "sqlite")]
macro_rules! sqlite_now {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    };
}

pub(crate) mod checkpoint;
pub(crate) mod int;
pub(crate) mod lease;
pub(crate) mod parked;
pub(crate) mod query;
pub(crate) mod replay;
pub(crate) mod rows;
pub(crate) mod snapshot;
pub(crate) mod statement;

use diesel::QueryableByName;
use diesel::backend::Backend;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Nullable, Text};

use crate::model::error::Error;

pub(crate) use statement::Statement;

/// Columns every event query returns, in this order (each backend's row
/// type reads them by name).
pub(crate) const EVENT_COLUMNS: &str =
    "version, stream_version, id, aggregate_id, event_type, data, metadata, created_at";

/// The head of one stream (`$1`): its last event's `stream_version`, or no
/// row. The `(aggregate_id, stream_version)` index answers it with one
/// probe on both backends.
pub(crate) const STREAM_HEAD_SQL: &str = "SELECT stream_version AS n FROM events \
     WHERE aggregate_id = $1 ORDER BY stream_version DESC LIMIT 1";

/// The spelling of what the backends write differently.
pub(crate) trait Dialect: Backend + Sized {
    /// The condition "`column` is one of the list bound at `$n`".
    fn in_list(column: &str, n: usize) -> String;

    /// Binds a list of texts for [`Dialect::in_list`].
    fn bind_list(statement: Statement<'_, Self>, values: Vec<String>) -> Statement<'_, Self>;

    /// Binds a `bigint`.
    fn bind_int(statement: Statement<'_, Self>, value: i64) -> Statement<'_, Self>;

    /// Binds a text.
    fn bind_text(statement: Statement<'_, Self>, value: String) -> Statement<'_, Self>;

    /// Upserts a checkpoint (`$1` name, `$2` position), stamping the time
    /// the way the backend's column stores it.
    const SAVE_CHECKPOINT_SQL: &'static str;

    /// Upserts a checkpoint (`$5` name, `$6` position) only while the
    /// lease (`$1` name, `$2` part) is held by `$3` with token `$4`;
    /// returns a row when it saved. PostgreSQL locks the lease row for the
    /// statement, so a takeover commits before or after the save, never
    /// during; SQLite writes one statement at a time.
    const SAVE_LEASED_CHECKPOINT_SQL: &'static str;
}

/// The checkpoint upsert with `$now` as the time of the update.
macro_rules! save_checkpoint_sql {
    ($now:literal) => {
        concat!(
            "INSERT INTO synckit_checkpoints (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = ",
            $now
        )
    };
}

/// The checkpoint upsert under a lease, with `$lock` as the lease row's
/// lock and `$now` as the time of the update (`WHERE true` keeps the
/// upsert after a `SELECT` unambiguous to SQLite).
macro_rules! save_leased_checkpoint_sql {
    ($lock:literal, $now:literal) => {
        concat!(
            "WITH lease AS (SELECT 1 FROM synckit_leases \
               WHERE name = $1 AND part = $2 AND owner = $3 AND token = $4",
            $lock,
            ") INSERT INTO synckit_checkpoints (name, position) \
             SELECT $5, $6 FROM lease WHERE true \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = ",
            $now,
            " RETURNING position AS n"
        )
    };
}

#[cfg(feature = "postgres")]
impl Dialect for diesel::pg::Pg {
    fn in_list(column: &str, n: usize) -> String {
        format!("{column} = ANY(${n})")
    }

    fn bind_list(statement: Statement<'_, Self>, values: Vec<String>) -> Statement<'_, Self> {
        statement.bind::<diesel::sql_types::Array<Text>, _>(values)
    }

    fn bind_int(statement: Statement<'_, Self>, value: i64) -> Statement<'_, Self> {
        statement.bind::<BigInt, _>(value)
    }

    fn bind_text(statement: Statement<'_, Self>, value: String) -> Statement<'_, Self> {
        statement.bind::<Text, _>(value)
    }

    const SAVE_CHECKPOINT_SQL: &'static str = save_checkpoint_sql!("now()");

    const SAVE_LEASED_CHECKPOINT_SQL: &'static str =
        save_leased_checkpoint_sql!(" FOR SHARE", "now()");
}

#[cfg(feature = "sqlite")]
impl Dialect for diesel::sqlite::Sqlite {
    fn in_list(column: &str, n: usize) -> String {
        format!("{column} IN (SELECT value FROM json_each(${n}))")
    }

    fn bind_list(statement: Statement<'_, Self>, values: Vec<String>) -> Statement<'_, Self> {
        // A JSON array of strings: serializing strings cannot fail.
        let list = serde_json::Value::from(values).to_string();
        statement.bind::<Text, _>(list)
    }

    fn bind_int(statement: Statement<'_, Self>, value: i64) -> Statement<'_, Self> {
        statement.bind::<BigInt, _>(value)
    }

    fn bind_text(statement: Statement<'_, Self>, value: String) -> Statement<'_, Self> {
        statement.bind::<Text, _>(value)
    }

    const SAVE_CHECKPOINT_SQL: &'static str =
        save_checkpoint_sql!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");

    const SAVE_LEASED_CHECKPOINT_SQL: &'static str =
        save_leased_checkpoint_sql!("", "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");
}

/// One integer column `n`, possibly `NULL` (a `max`, a count, a position).
#[derive(QueryableByName)]
pub(crate) struct Number {
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) n: Option<i64>,
}

impl Number {
    /// The first row's value, if there is a row and it is not `NULL`.
    pub(crate) fn first(rows: Vec<Number>) -> Option<i64> {
        rows.into_iter().next().and_then(|r| r.n)
    }
}

/// Errors inside a database transaction: the store's own, the database's,
/// or a race the caller resolves by trying again.
pub(crate) enum TxError {
    Db(DieselError),
    Store(Error),
    /// A concurrent append moved a stream between two statements: retry.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
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

impl TxError {
    /// The error a caller sees from `operation`.
    pub(crate) fn into_error(self, operation: &'static str) -> Error {
        match self {
            TxError::Store(e) => e,
            TxError::Db(e) => Error::database(operation, e),
            TxError::Raced => Error::retryable(operation, "a stream moved during the operation"),
        }
    }
}

/// Wraps a database error of `operation`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn db(operation: &'static str) -> impl FnOnce(DieselError) -> Error {
    move |e| Error::database(operation, e)
}

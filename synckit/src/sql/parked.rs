//! The SQL of parked events (the `synckit_parked` table of the parked
//! events migration).

use diesel::sql_types::{BigInt, Text};

use super::{Dialect, Number, Statement, int};
use crate::store::parked::{ParkedEvent, ParkedStatus};

/// Parks an event (`$1` subscription … `$7` attempts) unless it is parked
/// already; `$now` stamps the time.
macro_rules! park_sql {
    ($now:expr) => {
        concat!(
            "INSERT INTO synckit_parked \
               (subscription, version, event_id, aggregate_id, status, error, attempts, parked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, ",
            $now,
            ") ON CONFLICT (subscription, version) DO NOTHING"
        )
    };
}

#[cfg(feature = "postgres")]
pub(crate) const PG_PARK_SQL: &str = park_sql!(pg_now!());

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_PARK_SQL: &str = park_sql!(sqlite_now!());

/// The numbers cast: a SQLite column holds whatever a hand-written row put
/// in it (text becomes 0), and a listing must not fail on it.
const COLUMNS: &str = "SELECT subscription, CAST(version AS BIGINT) AS version, event_id, \
     aggregate_id, status, error, CAST(attempts AS BIGINT) AS attempts, \
     CAST(parked_at AS BIGINT) AS parked_at FROM synckit_parked";

/// One parked row.
#[derive(diesel::QueryableByName)]
pub(crate) struct ParkedRow {
    #[diesel(sql_type = Text)]
    subscription: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    aggregate_id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    error: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    parked_at: i64,
}

/// Parks `event` (see [`park_sql`]).
pub(crate) fn park<DB: Dialect>(sql: &'static str, event: &ParkedEvent) -> Statement<'static, DB> {
    let statement = DB::bind_text(Statement::new(sql), event.subscription.clone());
    let statement = DB::bind_int(statement, int::to_sql(event.version));
    let statement = DB::bind_text(statement, event.id.clone());
    let statement = DB::bind_text(statement, event.aggregate_id.clone());
    let statement = DB::bind_text(statement, event.status.as_str().to_owned());
    let statement = DB::bind_text(statement, event.error.clone());
    DB::bind_int(statement, i64::from(event.attempts))
}

/// The parked events of `subscription` (every one when `None`), by
/// subscription and version.
pub(crate) fn list<DB: Dialect>(subscription: Option<&str>) -> Statement<'static, DB> {
    match subscription {
        Some(name) => DB::bind_text(
            Statement::new(format!(
                "{COLUMNS} WHERE subscription = $1 ORDER BY subscription, version"
            )),
            name.to_owned(),
        ),
        None => Statement::new(format!("{COLUMNS} ORDER BY subscription, version")),
    }
}

/// The rows of [`list`].
pub(crate) fn rows(rows: Vec<ParkedRow>) -> Vec<ParkedEvent> {
    rows.into_iter()
        .map(|row| ParkedEvent {
            subscription: row.subscription,
            version: int::nonnegative(row.version),
            id: row.event_id,
            aggregate_id: row.aggregate_id,
            status: ParkedStatus::parse(&row.status),
            error: row.error,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            parked_at: chrono::DateTime::from_timestamp_millis(row.parked_at).unwrap_or_default(),
        })
        .collect()
}

/// Sets a parked event's status, error and attempts; a [`Number`] row when
/// it is parked, none when not. With `only_from`, only when its status is
/// that one now.
pub(crate) fn set<DB: Dialect>(
    subscription: &str,
    version: u64,
    status: ParkedStatus,
    error: Option<(&str, u32)>,
    only_from: Option<ParkedStatus>,
) -> Statement<'static, DB> {
    let mut sql = String::from("UPDATE synckit_parked SET status = $1");
    let mut statement = DB::bind_text(Statement::new(String::new()), status.as_str().to_owned());
    let mut n = 1;
    if let Some((message, attempts)) = error {
        sql.push_str(", error = $2, attempts = $3");
        statement = DB::bind_text(statement, message.to_owned());
        statement = DB::bind_int(statement, i64::from(attempts));
        n = 3;
    }
    sql.push_str(&format!(
        " WHERE subscription = ${} AND version = ${}",
        n + 1,
        n + 2
    ));
    statement = DB::bind_text(statement, subscription.to_owned());
    statement = DB::bind_int(statement, int::to_sql(version));
    if let Some(from) = only_from {
        sql.push_str(&format!(" AND status = ${}", n + 3));
        statement = DB::bind_text(statement, from.as_str().to_owned());
    }
    sql.push_str(" RETURNING version AS n");
    statement.with_sql(sql)
}

/// Deletes a parked event: a [`Number`] row when it was parked.
pub(crate) fn remove<DB: Dialect>(subscription: &str, version: u64) -> Statement<'static, DB> {
    let statement = DB::bind_text(
        Statement::new(
            "DELETE FROM synckit_parked WHERE subscription = $1 AND version = $2 \
             RETURNING version AS n",
        ),
        subscription.to_owned(),
    );
    DB::bind_int(statement, int::to_sql(version))
}

/// Whether [`set`] or [`remove`] found the event.
pub(crate) fn found(rows: Vec<Number>) -> bool {
    !rows.is_empty()
}

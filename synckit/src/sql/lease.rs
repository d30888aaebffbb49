//! The SQL of leases: which consumer of a durable subscription may advance
//! its checkpoint (the `synckit_leases` table of the leases migration).

use std::time::Duration;

use diesel::sql_types::{BigInt, Nullable, Text};

use super::{Dialect, Number, Statement, int};
use crate::store::lease::{LeaseKey, LiveLease};
use crate::store::report::{DurableSubscription, LeaseHolder};

/// Takes the lease (`$1` name, `$2` part) for `$3` for `$4` milliseconds
/// when it is free, expired or `$3`'s already; returns its token (as a
/// [`Number`]), one higher than before when it changes hands; no row when
/// another consumer holds it.
macro_rules! acquire_sql {
    ($now:expr) => {
        concat!(
            "INSERT INTO synckit_leases AS l (name, part, owner, token, expires_at) \
             VALUES ($1, $2, $3, 1, ",
            $now,
            " + $4) \
             ON CONFLICT (name, part) DO UPDATE SET \
               token = CASE WHEN l.owner = excluded.owner AND l.expires_at > 0 \
                 THEN l.token ELSE l.token + 1 END, \
               owner = excluded.owner, \
               expires_at = excluded.expires_at \
             WHERE l.owner = excluded.owner OR l.expires_at < ",
            $now,
            " RETURNING token AS n"
        )
    };
}

/// Every durable subscription by name (a checkpoint, a lease or both): its
/// position, and the holder of its lease while it lasts, as [`Listed`]
/// rows.
macro_rules! list_sql {
    ($now:expr) => {
        concat!(
            "SELECT n.name AS name, c.position AS position, l.owner AS owner, \
               l.token AS token, l.expires_at - ",
            $now,
            " AS remaining \
             FROM (SELECT name FROM synckit_checkpoints UNION SELECT name FROM synckit_leases) n \
             LEFT JOIN synckit_checkpoints c ON c.name = n.name \
             LEFT JOIN synckit_leases l ON l.name = n.name AND l.part = 0 AND l.expires_at > ",
            $now,
            " ORDER BY n.name"
        )
    };
}

#[cfg(feature = "postgres")]
pub(crate) const PG_ACQUIRE_SQL: &str = acquire_sql!(pg_now!());

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_ACQUIRE_SQL: &str = acquire_sql!(sqlite_now!());

#[cfg(feature = "postgres")]
pub(crate) const PG_LIST_SQL: &str = list_sql!(pg_now!());

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_LIST_SQL: &str = list_sql!(sqlite_now!());

/// One row of the list of durable subscriptions.
#[derive(diesel::QueryableByName)]
pub(crate) struct Listed {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    position: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    token: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    remaining: Option<i64>,
}

/// The rows as reports, lagging behind `head`.
pub(crate) fn listed(rows: Vec<Listed>, head: u64) -> Vec<DurableSubscription> {
    rows.into_iter()
        // Consumer groups' leases and checkpoints are listed as groups.
        .filter(|row| !row.name.starts_with(crate::store::group::NAMESPACE))
        .map(|row| {
            let position = row.position.map(int::nonnegative);
            DurableSubscription {
                name: row.name,
                position,
                lag: head.saturating_sub(position.unwrap_or(0)),
                holder: match (row.owner, row.token, row.remaining) {
                    (Some(owner), Some(token), Some(remaining)) => Some(LeaseHolder {
                        owner,
                        token: int::nonnegative(token),
                        expires_in: Duration::from_millis(int::nonnegative(remaining)),
                    }),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Acquires or renews `key` for `ttl` (see [`acquire_sql`]).
pub(crate) fn acquire<DB: Dialect>(
    sql: &'static str,
    key: &LeaseKey,
    ttl: Duration,
) -> Statement<'static, DB> {
    let statement = DB::bind_text(Statement::new(sql), key.name.clone());
    let statement = DB::bind_int(statement, i64::from(key.part));
    let statement = DB::bind_text(statement, key.owner.clone());
    DB::bind_int(
        statement,
        i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
    )
}

/// The token [`acquire`] returned: `None` when another consumer holds the
/// lease.
pub(crate) fn token(rows: Vec<Number>) -> Option<u64> {
    Number::first(rows).map(int::nonnegative)
}

/// Gives the lease back at once (it expires now), if `key`'s owner still
/// holds it with `token`. The row stays, so the next token is higher.
pub(crate) fn release<DB: Dialect>(key: &LeaseKey, token: u64) -> Statement<'static, DB> {
    let statement = Statement::new(
        "UPDATE synckit_leases SET expires_at = 0 \
         WHERE name = $1 AND part = $2 AND owner = $3 AND token = $4",
    );
    let statement = DB::bind_text(statement, key.name.clone());
    let statement = DB::bind_int(statement, i64::from(key.part));
    let statement = DB::bind_text(statement, key.owner.clone());
    DB::bind_int(statement, int::to_sql(token))
}

/// Saves checkpoint `key.name` at `position` only while `key`'s owner
/// holds the lease with `token`, in one statement: a row (a [`Number`])
/// when saved, none when the lease has passed to another consumer.
pub(crate) fn save_checkpoint<DB: Dialect>(
    key: &LeaseKey,
    token: u64,
    position: crate::Cursor,
) -> Statement<'static, DB> {
    let statement = DB::bind_text(
        Statement::new(DB::SAVE_LEASED_CHECKPOINT_SQL),
        key.name.clone(),
    );
    let statement = DB::bind_int(statement, i64::from(key.part));
    let statement = DB::bind_text(statement, key.owner.clone());
    let statement = DB::bind_int(statement, int::to_sql(token));
    let statement = DB::bind_text(statement, key.name.clone());
    DB::bind_int(statement, position.as_i64())
}

/// The live leases whose names start with `$1`, as [`LiveRow`]s;
/// `$prefix` is the dialect's "position of `$1` in `name`" function.
macro_rules! live_sql {
    ($now:expr, $position:literal) => {
        concat!(
            "SELECT name, CAST(part AS BIGINT) AS part, owner, token, expires_at - ",
            $now,
            " AS remaining FROM synckit_leases WHERE ",
            $position,
            "(name, $1) = 1 AND expires_at > ",
            $now,
            " ORDER BY name, part"
        )
    };
}

/// The checkpoints whose names start with `$1`, as [`CheckpointRow`]s.
macro_rules! checkpoints_sql {
    ($position:literal) => {
        concat!(
            "SELECT name, position FROM synckit_checkpoints WHERE ",
            $position,
            "(name, $1) = 1 ORDER BY name"
        )
    };
}

#[cfg(feature = "postgres")]
pub(crate) const PG_LIVE_SQL: &str = live_sql!(pg_now!(), "strpos");

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_LIVE_SQL: &str = live_sql!(sqlite_now!(), "instr");

#[cfg(feature = "postgres")]
pub(crate) const PG_CHECKPOINTS_SQL: &str = checkpoints_sql!("strpos");

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_CHECKPOINTS_SQL: &str = checkpoints_sql!("instr");

/// One live lease.
#[derive(diesel::QueryableByName)]
pub(crate) struct LiveRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    part: i64,
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = BigInt)]
    token: i64,
    #[diesel(sql_type = BigInt)]
    remaining: i64,
}

/// One stored checkpoint.
#[derive(diesel::QueryableByName)]
pub(crate) struct CheckpointRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    position: i64,
}

/// The live leases named `prefix…` ([`live_sql`]).
pub(crate) fn live<DB: Dialect>(sql: &'static str, prefix: &str) -> Statement<'static, DB> {
    DB::bind_text(Statement::new(sql), prefix.to_owned())
}

/// The rows of [`live`] as the stores' answer.
pub(crate) fn live_leases(rows: Vec<LiveRow>) -> Vec<LiveLease> {
    rows.into_iter()
        .map(|row| LiveLease {
            name: row.name,
            part: u32::try_from(row.part).unwrap_or(0),
            owner: row.owner,
            token: int::nonnegative(row.token),
            expires_in: Duration::from_millis(int::nonnegative(row.remaining)),
        })
        .collect()
}

/// The rows of a [`checkpoints_sql`] statement as names and positions.
pub(crate) fn checkpoints(rows: Vec<CheckpointRow>) -> Vec<(String, crate::Cursor)> {
    rows.into_iter()
        .map(|row| (row.name, crate::Cursor::new(int::nonnegative(row.position))))
        .collect()
}

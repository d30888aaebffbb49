//! Appends: under the write lock, positions known before the rows go in.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};

use super::rows::{Row, parse_time};
use crate::model::cursor::ExpectedVersion;
use crate::model::error::Error;
use crate::model::recorded::{NewEvent, Recorded};
use crate::sql::{TxError, int, replay, rows};

/// Cacheable raw SQL on SQLite.
type Statement<'f> = crate::sql::Statement<'f, Sqlite>;

/// Appends under the write lock (an immediate transaction), so no other
/// writer can move a stream between the checks and the commit; positions
/// are therefore known before the rows go in: one query for the heads, then
/// one cached INSERT per event. A repeated id or a failed expectation rolls
/// back and checks whether the append repeats stored events (an idempotent
/// retry).
pub(super) fn append_blocking(
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
    let rows: Vec<Row> = replay::lookup::<Sqlite>(events).load(conn)?;
    let stored = rows::recorded(rows)?;
    Ok(replay::outcome(events, &stored)?)
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
            .map(int::nonnegative)
            .filter(|v| *v > 0);
        expected.check(&first.aggregate_id, actual)?;
    }
    // One time for the whole append, at the column's precision.
    let created_at = Utc::now();
    let created_text = created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let created_at = parse_time(&created_text)
        .map_err(|e| Error::database("append", format!("bad created_at {created_text:?}: {e}")))?;
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
        positions.push((int::nonnegative(version), int::nonnegative(*head)));
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

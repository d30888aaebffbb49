//! Appends: one round trip per chunk, expectations checked in the
//! statement, races on a unique index resolved by a replay check or a
//! retry, notifications sent after the commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::pg::Pg;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::PgStore;
use super::rows::{EventRow, Inserted, JsonMap};
use crate::model::cursor::ExpectedVersion;
use crate::model::error::{Error, Result};
use crate::model::recorded::{NewEvent, Recorded};
use crate::model::validate;
use crate::sql::rows;
use crate::sql::{Number, STREAM_HEAD_SQL, Statement, TxError, int, replay};

/// How often an append is retried after losing a race on a unique index
/// (same id or same stream position appended concurrently). Each retry
/// re-runs the idempotency and expected-version checks, so the outcome is
/// the one a serial execution would give.
const APPEND_RETRIES: u32 = 8;

/// The FROM item that makes an append's transaction quiet: the trigger
/// sends no notification for its rows, which [`NOTIFY_APPENDED_SQL`] (or [`NOTIFY_SQL`]) sends after
/// the commit instead (see the `notify_after_commit` migration). The
/// setting is local to the transaction, so a pooled connection's next
/// transaction, whoever runs it, notifies as before.
macro_rules! quiet {
    () => {
        "(SELECT set_config('synckit.notify', 'off', true)) quiet"
    };
}

/// Wraps an INSERT so that, when the bool parameter `$p` is true, the
/// statement also records the events it wrote in the session setting
/// `synckit.appended`, which [`NOTIFY_APPENDED_SQL`] sends and clears (a
/// rollback un-records them; the `notify_after_commit` migration says the
/// format). The aggregate is one row, so it is computed once, and only
/// over rows that were written.
macro_rules! recorded {
    ($insert:expr, $p:literal) => {
        concat!(
            "WITH appended AS (",
            $insert,
            " RETURNING id, version, stream_version, created_at, aggregate_id, event_type), \
             noted AS (SELECT CASE WHEN ",
            $p,
            "::bool AND count(*) > 0 THEN \
               set_config('synckit.appended', \
                          coalesce(current_setting('synckit.appended', true), '') \
                          || string_agg(json_build_object('v', version, 'i', id, 'a', aggregate_id, \
                                                          't', event_type, 'c', created_at)::text, \
                                        ',' ORDER BY version) || ',', false) \
               END FROM appended) \
             SELECT a.id, a.version, a.stream_version, a.created_at FROM appended a, noted"
        )
    };
}

/// One chunk of an append, or one round of a group commit, in one
/// statement: all or nothing. A chunk holds events of one stream
/// ([`APPEND_ONE_SQL`], [`APPEND_ONE_STREAM_SQL`]: these check the
/// expectation) or of several ([`APPEND_SQL`]). Each event's ordinal within
/// its stream in its append (1, 2, ...) is added to the stream's head, read
/// in the statement's snapshot. An ordinal of 0 leaves the position to the
/// `events_assign_positions` trigger, which takes the stream's lock first.
/// The rows go in input order, so the trigger takes the global versions in
/// order. Only positions come back: the rest is what was sent, so no JSON
/// travels back.
///
/// The arrays sit in sub-selects so that the planner cannot see their
/// lengths: its estimate is then the same with or without the values, and
/// after five executions the server keeps one generic plan for the
/// connection instead of planning every append anew (a custom plan costs
/// more than executing a single-event append).
///
/// Events of several streams, or of several appends of a group (one stream
/// appears once per round: see `group`): the head of each event's stream
/// by one index probe per event, and each row carries the range its
/// append's expectation accepts (`$7..=$8`). The rows of one append share
/// one stream's head, so they pass or fail together. The last parameter of
/// each statement says whether it records its events for
/// [`NOTIFY_APPENDED_SQL`] (see `recorded!`).
pub(super) const APPEND_SQL: &str = recorded!(
    concat!(
        "\
INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
SELECT i.id, i.aggregate_id, i.event_type, i.data, i.metadata, h.head + i.n \
  FROM ",
        quiet!(),
        ", \
       unnest((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::text[]), \
              (SELECT $4::jsonb[]), (SELECT $5::jsonb[]), (SELECT $6::bigint[]), \
              (SELECT $7::bigint[]), (SELECT $8::bigint[])) \
       AS i(id, aggregate_id, event_type, data, metadata, n, lowest, highest) \
  CROSS JOIN LATERAL (SELECT coalesce(max(e.stream_version), 0) AS head FROM events e \
                       WHERE e.aggregate_id = i.aggregate_id) h \
 WHERE h.head BETWEEN i.lowest AND i.highest"
    ),
    "$9"
);

/// Events of one stream (`$1`, and again `$7`): its head is read once and
/// serves both the expectation check (it must lie in `$8..=$9`) and every
/// position.
const APPEND_ONE_STREAM_SQL: &str = recorded!(
    concat!(
        "\
INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
SELECT i.id, $1, i.event_type, i.data, i.metadata, \
       CASE WHEN i.n > 0 THEN h.head + i.n END \
  FROM unnest((SELECT $2::text[]), (SELECT $3::text[]), (SELECT $4::jsonb[]), \
              (SELECT $5::jsonb[]), (SELECT $6::bigint[])) \
       AS i(id, event_type, data, metadata, n), \
       (SELECT coalesce(max(e.stream_version), 0) AS head FROM events e \
         WHERE e.aggregate_id = $7) h, ",
        quiet!(),
        " \
 WHERE h.head BETWEEN $8 AND $9"
    ),
    "$10"
);

/// [`APPEND_ONE_STREAM_SQL`] for one event, its values bound as scalars:
/// no arrays to build, send and unnest. A single-event append is what a
/// command handler does most, and this form costs the server about a tenth
/// less than the array form (`pgbench -M prepared`, one client). `$6`
/// false leaves the position to the trigger, as an ordinal of 0 does. The
/// aggregate id is bound twice (`$2`, `$7`).
const APPEND_ONE_SQL: &str = recorded!(
    concat!(
        "\
INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
SELECT $1, $2, $3, $4, $5, CASE WHEN $6 THEN h.head + 1 END \
  FROM (SELECT coalesce(max(e.stream_version), 0) AS head FROM events e \
         WHERE e.aggregate_id = $7) h, ",
        quiet!(),
        " \
 WHERE h.head BETWEEN $8 AND $9"
    ),
    "$10"
);

/// The notifications of what this session's appends recorded (see
/// `recorded!`), pipelined behind the append's statement.
pub(super) const NOTIFY_APPENDED_SQL: &str = "SELECT synckit_notify_appended()";

/// The notifications of committed events (versions, ids, aggregate ids,
/// types, times; in version order), the ones the trigger sends for plain
/// SQL inserts, from a transaction of their own that does not wait for a
/// WAL flush: the path behind a transaction pooler, where the session
/// setting of [`NOTIFY_APPENDED_SQL`] would not be this client's.
const NOTIFY_SQL: &str = "SELECT synckit_notify_committed((SELECT $1::bigint[]), \
(SELECT $2::text[]), (SELECT $3::text[]), (SELECT $4::text[]), (SELECT $5::timestamptz[]))";

/// Waits before an append retries after losing a race: a random delay that
/// doubles with each attempt (up to ~13 ms), so that writers piling onto
/// one stream spread out instead of colliding again.
async fn race_backoff(attempt: u32) {
    let ceiling = 200u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=ceiling))).await;
}

/// Where one event went: its version, stream version and time.
pub(super) type Position = (u64, u64, chrono::DateTime<chrono::Utc>);

/// What one attempt of an append did.
pub(super) enum Appended {
    /// Each event's position, in input order.
    Written(Vec<Position>),
    /// Nothing: the expectation failed when the statement ran. Whether the
    /// append is a replay, a conflict or a lost race is decided after.
    NotWritten,
}

/// The stream heads `expected` accepts, as an inclusive range.
pub(super) fn head_range(expected: ExpectedVersion) -> (i64, i64) {
    match expected {
        ExpectedVersion::Any => (0, i64::MAX),
        ExpectedVersion::NoStream => (0, 0),
        ExpectedVersion::StreamExists => (1, i64::MAX),
        ExpectedVersion::Exact(n) => {
            let n = int::to_sql(n);
            (n, n)
        }
    }
}

/// Each event's ordinal within its stream in `events` (1, 2, ...), and how
/// many streams they touch.
pub(super) fn ordinals(events: &[NewEvent]) -> (Vec<i64>, usize) {
    let mut in_stream: HashMap<&str, i64> = HashMap::new();
    let ordinals = events
        .iter()
        .map(|e| {
            let n = in_stream.entry(e.aggregate_id.as_str()).or_insert(0);
            *n += 1;
            *n
        })
        .collect();
    (ordinals, in_stream.len())
}

/// The positions `rows` give the events of `chunk`, in its order; `None`
/// when the rows are not exactly those events.
fn positions_of(rows: &[Inserted], chunk: &[NewEvent]) -> Option<Vec<Position>> {
    // RETURNING gives the rows in the order they went in, the input's;
    // match them by id should that ever differ.
    if rows.len() == chunk.len() && rows.iter().zip(chunk).all(|(r, e)| r.id == e.id) {
        return Some(rows.iter().map(position).collect());
    }
    let by_id: HashMap<&str, &Inserted> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    if by_id.len() != chunk.len() {
        return None;
    }
    chunk
        .iter()
        .map(|e| by_id.get(e.id.as_str()).map(|r| position(r)))
        .collect()
}

/// Where an inserted row went.
pub(super) fn position(r: &Inserted) -> Position {
    (
        int::nonnegative(r.version),
        int::nonnegative(r.stream_version),
        r.created_at,
    )
}

/// A connection the append statements run on: a pooled connection, or a
/// shared reference to one, whose statements pipeline.
pub(super) trait Connection: diesel_async::AsyncConnectionCore<Backend = Pg> + Send {}

impl<C: diesel_async::AsyncConnectionCore<Backend = Pg> + Send> Connection for C {}

/// [`APPEND_SQL`] for `events`, each row with its ordinal and the range of
/// heads its append accepts.
pub(super) fn append_statement<'a>(
    events: impl Iterator<Item = &'a NewEvent> + Clone,
    ordinals: Vec<i64>,
    ranges: Vec<(i64, i64)>,
) -> Statement<'a, Pg> {
    let column = |f: fn(&'a NewEvent) -> &'a str| events.clone().map(f).collect::<Vec<_>>();
    let (lowest, highest): (Vec<i64>, Vec<i64>) = ranges.into_iter().unzip();
    Statement::new(APPEND_SQL)
        .bind::<Array<Text>, _>(column(|e| &e.id))
        .bind::<Array<Text>, _>(column(|e| &e.aggregate_id))
        .bind::<Array<Text>, _>(column(|e| &e.event_type))
        .bind::<Array<Jsonb>, _>(events.clone().map(|e| &e.data).collect::<Vec<_>>())
        .bind::<Array<Jsonb>, _>(
            events
                .clone()
                .map(|e| JsonMap(&e.metadata))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<BigInt>, _>(ordinals)
        .bind::<Array<BigInt>, _>(lowest)
        .bind::<Array<BigInt>, _>(highest)
}

impl PgStore {
    /// Appends `events`, retrying lost races (see [`APPEND_RETRIES`]). The
    /// append goes through the store's writer queue (see `group`), which
    /// commits appends that arrive together in one transaction.
    pub(super) async fn append_with_retries(
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
        let mut events = events;
        let mut attempt = 0;
        let positions = loop {
            attempt += 1;
            let (back, outcome) = self.submit(expected, events).await?;
            events = back;
            let outcome = match outcome {
                Ok(Appended::Written(positions)) => Ok(positions),
                Ok(Appended::NotWritten) => {
                    // A retry of an append that succeeded meets its own
                    // events; otherwise the stream's head says whether the
                    // expectation failed or the stream moved meanwhile.
                    let replay = self
                        .with_conn("append", async |conn| {
                            Ok(Self::not_written(conn, expected, &events).await)
                        })
                        .await?;
                    match replay {
                        Ok(replay) => return Ok(replay),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(positions) => break positions,
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
        let mut recorded: Vec<Recorded> = events
            .into_iter()
            .zip(positions)
            .map(|(e, (version, stream_version, created_at))| {
                e.into_recorded(version, stream_version, created_at)
            })
            .collect();
        recorded.sort_by_key(|r| r.version);
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
            metrics::counter!("synckit_events_appended_total").increment(int::len(recorded.len()));
            metrics::histogram!("synckit_append_seconds").record(started.elapsed().as_secs_f64());
        }
        Ok(recorded)
    }

    /// What an append that wrote nothing met: its own stored events (an
    /// idempotent retry), a failed expectation ([`Error::Conflict`]), or a
    /// stream that moved after the statement ([`TxError::Raced`]).
    async fn not_written(
        conn: &mut AsyncPgConnection,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> std::result::Result<Vec<Recorded>, TxError> {
        if let Some(replay) = Self::replay_of(conn, events).await? {
            return Ok(replay);
        }
        let first = events[0].aggregate_id.as_str();
        let actual = Self::stream_head(conn, first).await?;
        expected.check(first, actual)?;
        Err(TxError::Raced)
    }

    /// The stored events with these ids, when the append repeats them all
    /// (an idempotent retry); [`Error::DuplicateEvent`] when it repeats some
    /// or with other content; `None` when none is stored.
    async fn replay_of(
        conn: &mut AsyncPgConnection,
        events: &[NewEvent],
    ) -> std::result::Result<Option<Vec<Recorded>>, TxError> {
        let rows: Vec<EventRow> = replay::lookup::<Pg>(events).load(&mut *conn).await?;
        let stored = rows::recorded(rows)?;
        Ok(replay::outcome(events, &stored)?)
    }

    /// One append on its own. A batch that fits one chunk is a single
    /// INSERT statement, atomic without an explicit transaction; a larger
    /// one runs its chunks in one transaction. Races on a unique index (the
    /// same id, the same stream position) surface as unique violations, which
    /// the caller resolves by checking for a replay or retrying.
    ///
    /// `record`: the statements record the versions they write for
    /// [`NOTIFY_APPENDED_SQL`] (see `recorded!`); otherwise the caller
    /// notifies with [`PgStore::notify_committed`].
    pub(super) async fn append_alone(
        conn: &mut AsyncPgConnection,
        expected: ExpectedVersion,
        events: &[NewEvent],
        chunk_size: usize,
        record: bool,
    ) -> std::result::Result<Appended, TxError> {
        let chunk_size = chunk_size.max(1);
        if events.len() <= chunk_size {
            Self::append_chunks(conn, expected, events, chunk_size, record).await
        } else {
            conn.transaction::<_, TxError, _>(async |conn| {
                Self::append_chunks(conn, expected, events, chunk_size, record).await
            })
            .await
        }
    }

    pub(super) async fn append_chunks<C: Connection>(
        conn: &mut C,
        expected: ExpectedVersion,
        events: &[NewEvent],
        chunk_size: usize,
        record: bool,
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
            let (mut ordinals, streams) = ordinals(chunk);
            // Without an expectation on one stream, the trigger assigns the
            // positions under the stream's lock (ordinal 0), so such writers
            // take turns instead of racing. Chunks over several streams stay
            // optimistic: taking several locks in input order could
            // deadlock against another writer's order.
            if n == 0 && expected == ExpectedVersion::Any && streams == 1 {
                ordinals.fill(0);
            }
            let first = chunk[0].aggregate_id.as_str();
            let column = |f: fn(&NewEvent) -> &str| chunk.iter().map(f).collect::<Vec<_>>();
            let statement = match chunk {
                [one] => Statement::new(APPEND_ONE_SQL)
                    .bind::<Text, _>(one.id.as_str())
                    .bind::<Text, _>(first)
                    .bind::<Text, _>(one.event_type.as_str())
                    .bind::<Jsonb, _>(&one.data)
                    .bind::<Jsonb, _>(JsonMap(&one.metadata))
                    .bind::<Bool, _>(ordinals[0] > 0),
                _ if streams == 1 => Statement::new(APPEND_ONE_STREAM_SQL)
                    .bind::<Text, _>(first)
                    .bind::<Array<Text>, _>(column(|e| &e.id))
                    .bind::<Array<Text>, _>(column(|e| &e.event_type))
                    .bind::<Array<Jsonb>, _>(chunk.iter().map(|e| &e.data).collect::<Vec<_>>())
                    .bind::<Array<Jsonb>, _>(
                        chunk
                            .iter()
                            .map(|e| JsonMap(&e.metadata))
                            .collect::<Vec<_>>(),
                    )
                    .bind::<Array<BigInt>, _>(ordinals),
                _ => {
                    // Validation let this append through with no expectation.
                    debug_assert_eq!((lowest, highest), (0, i64::MAX));
                    let ranges = vec![(lowest, highest); chunk.len()];
                    append_statement(chunk.iter(), ordinals, ranges)
                }
            };
            let statement = if streams == 1 {
                statement
                    .bind::<Text, _>(first)
                    .bind::<BigInt, _>(lowest)
                    .bind::<BigInt, _>(highest)
            } else {
                statement
            }
            .bind::<Bool, _>(record);
            let rows: Vec<Inserted> = statement.load(&mut *conn).await?;
            if rows.is_empty() {
                // The expectation failed (the statement inserts all or
                // nothing; later chunks expect nothing).
                return Ok(Appended::NotWritten);
            }
            let Some(chunk_positions) = positions_of(&rows, chunk) else {
                return Err(TxError::Store(Error::database(
                    "append",
                    "the rows returned are not the events sent",
                )));
            };
            positions.extend(chunk_positions);
        }
        Ok(Appended::Written(positions))
    }

    /// Sends the notifications of committed events (in version order) in a
    /// transaction of their own. Plain SQL inserts notify from the trigger;
    /// synckit's appends keep their transactions quiet and notify here.
    pub(super) async fn notify_committed(
        conn: &mut AsyncPgConnection,
        events: &[Committed],
    ) -> std::result::Result<(), DieselError> {
        let column = |f: fn(&Committed) -> &str| events.iter().map(f).collect::<Vec<_>>();
        Statement::new(NOTIFY_SQL)
            .bind::<Array<BigInt>, _>(
                events
                    .iter()
                    .map(|e| int::to_sql(e.version))
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(column(|e| &e.id))
            .bind::<Array<Text>, _>(column(|e| &e.aggregate_id))
            .bind::<Array<Text>, _>(column(|e| &e.event_type))
            .bind::<Array<Timestamptz>, _>(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map(drop)
    }

    /// The `stream_version` of an aggregate's last event.
    pub(super) async fn stream_head(
        conn: &mut AsyncPgConnection,
        aggregate_id: &str,
    ) -> std::result::Result<Option<u64>, DieselError> {
        let rows: Vec<Number> = Statement::new(STREAM_HEAD_SQL)
            .bind::<Text, _>(aggregate_id)
            .load(&mut *conn)
            .await?;
        Ok(Number::first(rows).map(int::nonnegative))
    }
}

/// What a notification says of a committed event.
pub(super) struct Committed {
    pub(super) version: u64,
    pub(super) id: String,
    pub(super) aggregate_id: String,
    pub(super) event_type: String,
    pub(super) created_at: chrono::DateTime<chrono::Utc>,
}

impl Committed {
    /// The notifications of `events`, written at `positions`.
    pub(super) fn of(
        events: &[NewEvent],
        positions: &[Position],
    ) -> impl Iterator<Item = Committed> {
        events
            .iter()
            .zip(positions)
            .map(|(e, &(version, _, created_at))| Committed {
                version,
                id: e.id.clone(),
                aggregate_id: e.aggregate_id.clone(),
                event_type: e.event_type.clone(),
                created_at,
            })
    }
}

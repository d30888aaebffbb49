//! The read query: events after a cursor, up to an upper bound, that pass
//! a filter, in global order.

use super::{Dialect, EVENT_COLUMNS, Statement, int};
use crate::model::cursor::Cursor;
use crate::model::filter::Filter;

/// How far a read may go.
#[derive(Clone, Copy)]
pub(crate) enum Upto {
    /// To the last stored event (SQLite: versions become visible in
    /// commit order, so there is nothing to hold back).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Head,
    /// To this version, inclusive.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Version(Cursor),
    /// To a bound the SQL computes itself (PostgreSQL: the fence an
    /// earlier statement of the same round trip stored).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Sql(&'static str),
}

/// Up to `limit` events after `after` and within `upto` that pass
/// `filter`, oldest first.
///
/// A filter on one value is an equality, which the `(column, version)`
/// indexes return in version order; a list is the backend's "in list".
pub(crate) fn events_after<DB: Dialect>(
    filter: &Filter,
    after: Cursor,
    upto: Upto,
    limit: usize,
) -> Statement<'static, DB> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE version > $1");
    let mut next = 2;
    match upto {
        Upto::Head => {}
        Upto::Version(_) => {
            sql.push_str(" AND version <= $2");
            next = 3;
        }
        Upto::Sql(bound) => {
            sql.push_str(" AND version <= ");
            sql.push_str(bound);
        }
    }
    let mut values = Vec::new();
    for (column, selected) in [
        ("aggregate_id", filter.aggregate_ids()),
        ("event_type", filter.event_types()),
    ] {
        let Some(selected) = selected else { continue };
        let n = next + values.len();
        if selected.len() == 1 {
            sql.push_str(&format!(" AND {column} = ${n}"));
        } else {
            sql.push_str(" AND ");
            sql.push_str(&DB::in_list(column, n));
        }
        values.push(selected);
    }
    sql.push_str(&format!(" ORDER BY version LIMIT ${}", next + values.len()));
    let mut query = DB::bind_int(Statement::new(sql), after.as_i64());
    if let Upto::Version(fence) = upto {
        query = DB::bind_int(query, fence.as_i64());
    }
    for selected in values {
        query = match selected.first() {
            Some(one) if selected.len() == 1 => DB::bind_text(query, one.clone()),
            _ => DB::bind_list(query, selected.iter().cloned().collect()),
        };
    }
    DB::bind_int(query, int::to_sql(limit))
}

/// The stored event with this id, if any.
pub(crate) fn event_with_id<DB: Dialect>(id: String) -> Statement<'static, DB> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    DB::bind_text(Statement::new(sql), id)
}

/// The number of stored events, as a [`super::Number`].
pub(crate) const COUNT_SQL: &str = "SELECT count(*) AS n FROM events";

/// The stored events with these ids (the replay lookup of an append).
pub(crate) fn events_with_ids<DB: Dialect>(ids: Vec<String>) -> Statement<'static, DB> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE {}",
        DB::in_list("id", 1)
    );
    DB::bind_list(Statement::new(sql), ids)
}

/// Up to `limit` events of one aggregate after its stream version `after`,
/// in stream order: the `(aggregate_id, stream_version)` index. No fence is
/// needed: one stream's appends commit in stream order (each one's expected
/// head and the unique index serialize them), so a stream read never steps
/// over an event that commits later.
pub(crate) fn stream_after<DB: Dialect>(
    aggregate_id: String,
    after: u64,
    limit: usize,
) -> Statement<'static, DB> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = $1 AND stream_version > $2 \
         ORDER BY stream_version LIMIT $3"
    );
    let query = DB::bind_text(Statement::new(sql), aggregate_id);
    let query = DB::bind_int(query, int::to_sql(after));
    DB::bind_int(query, int::to_sql(limit))
}

//! Reads: SQLite assigns versions under its write lock, so they become
//! visible in commit order and a read needs no fence.

use diesel::RunQueryDsl;
use diesel::sqlite::Sqlite;

use super::SqliteStore;
use super::rows::Row;
use super::store::Place;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::model::filter::Filter;
use crate::model::validate;
use crate::sql::query::{self, Upto};
use crate::sql::{Number, Statement, int};

/// The highest stored version (none: NULL), as a [`Number`].
pub(super) const HEAD_SQL: &str = "SELECT max(version) AS n FROM events";

impl SqliteStore {
    /// The rows of a read: up to `limit` events after `after` that pass
    /// `filter`.
    pub(super) async fn read_rows(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        place: Place,
    ) -> Result<Vec<Row>> {
        validate::check_filter(filter)?;
        let query = query::events_after::<Sqlite>(filter, after, Upto::Head, limit);
        self.run("read", place, move |c| Ok(query.load(c)?)).await
    }

    /// The rows of a subscription's read and the version it read over:
    /// the head as of just before the read, which sees at least as much
    /// (see [`TypedPage::with_scanned`](crate::store::TypedPage)). Only a
    /// filtered read needs it; a read of everything ends at the head.
    pub(super) async fn read_rows_scanned(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> Result<(Vec<Row>, Option<Cursor>)> {
        validate::check_filter(filter)?;
        let query = query::events_after::<Sqlite>(filter, after, Upto::Head, limit);
        let filtered = !filter.is_all();
        self.run("read", Place::Here, move |c| {
            // Before the read: versions become visible in commit order, so
            // the read sees every version up to this one.
            let scanned = if filtered {
                let head: Vec<Number> = Statement::new(HEAD_SQL).load(c)?;
                Some(Cursor::new(Number::first(head).map_or(0, int::nonnegative)))
            } else {
                None
            };
            Ok((query.load(c)?, scanned))
        })
        .await
    }
}
